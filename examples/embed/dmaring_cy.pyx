# distutils: language = c++
# dmaring_cy: the dmaring descriptor-ring DMA engine of dmaring.c, written in Cython against
# dmaphys's Cython C API: `cimport dmaphys` gives the cdef classes (Device, ...) with their C
# fields and the cdef entry points (device_access, c_dma_map_phys, ...), called directly - no
# capsule, no table. Faults arrive as the Python exceptions the core raises (DmaFault /
# IommuFault); the engine catches them and reports the same fault dict as the C version.
#
# Build: examples/embed/build.py (cythonize with the directory above the imported dmaphys
# package on the include path; dmaphys/__init__.pxd re-exports dmaphys/_core.pxd).

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, realloc

cimport dmaphys
from dmaphys cimport Device, device_access, machine_enter, machine_exit

from dmaphys import DmaFault, IommuFault

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_MONOTONIC

TAKES_DEVICE = True                    # ring_run takes the Device itself (the C version: dev.capsule)
abi_version = 1

cdef enum:
    DESC_SIZE = 32
    CPL_SIZE = 16
    DESC_VALID = 1
    CPL_OK = 1
    CPL_FAULT = 2


cdef packed struct ring_desc:          # little endian on the wire; x86-64 hosts only here
    uint64_t src
    uint64_t dst
    uint32_t len
    uint32_t flags
    uint64_t cookie


cdef packed struct ring_cpl:
    uint64_t cookie
    uint32_t status
    uint32_t bytes


cdef int write_cpl(Device dev, uint64_t cpl, uint64_t cookie, uint32_t status, uint32_t nbytes) except -1:
    cdef ring_cpl c
    c.cookie = cookie
    c.status = status
    c.bytes = nbytes
    return device_access(dev, cpl, <dmaphys.u8 *>&c, CPL_SIZE, True)


cdef object fault_dict(object e):
    return {"kind": 4 if isinstance(e, IommuFault) else 3, "type": type(e).__name__, "addr": e.addr,
            "size": e.size, "access": e.access, "reason": e.reason, "device": e.device}


def ring_run(Device dev not None, uint64_t ring, long n, uint64_t cpl):
    """ring_run(dev, ring, n, cpl) -> (completed, fault dict or None); see dmaring.c."""
    cdef ring_desc d
    cdef unsigned char *buf = NULL
    cdef unsigned char *nb
    cdef size_t bufsize = 0
    cdef unsigned char x
    cdef uint32_t k
    cdef long i = 0
    fault = None
    try:
        while i < n:
            try:
                device_access(dev, ring + <uint64_t>i * DESC_SIZE, <dmaphys.u8 *>&d, DESC_SIZE, False)
            except DmaFault as e:                          # the ring itself faulted
                fault = fault_dict(e)
                break
            if not (d.flags & DESC_VALID):
                break
            if d.len > bufsize:
                nb = <unsigned char *>realloc(buf, d.len)
                if nb == NULL:
                    raise MemoryError()
                buf = nb
                bufsize = d.len
            try:
                if d.len:
                    device_access(dev, d.src, buf, d.len, False)
                    x = <unsigned char>(d.flags >> 8)
                    if x:
                        for k in range(d.len):
                            buf[k] ^= x
                    device_access(dev, d.dst, buf, d.len, True)
            except DmaFault as e:
                fault = fault_dict(e)
                try:
                    write_cpl(dev, cpl + <uint64_t>i * CPL_SIZE, d.cookie, CPL_FAULT, 0)
                except DmaFault:
                    pass
                break
            try:
                write_cpl(dev, cpl + <uint64_t>i * CPL_SIZE, d.cookie, CPL_OK, d.len)
            except DmaFault as e:
                fault = fault_dict(e)
                break
            i += 1
    finally:
        free(buf)
        dev.machine.flush_warnings()   # what a def entry point does before returning
    return i, fault


def bench_read(Device dev not None, uint64_t addr, uint64_t size, long iters, bint owned=False):
    """bench_read(dev, addr, size, iters, owned=False) -> ns per device_access() called from
    Cython: with the GIL held, or (owned) owning the machine with the GIL released, the way a
    batch call runs its loop (machine_enter / machine_exit, machine.pxd)."""
    cdef unsigned char buf[4096]
    cdef timespec t0, t1
    cdef long i
    if size > 4096:
        raise ValueError("size > 4096")
    if owned:
        machine_enter(dev.machine)
        try:
            with nogil:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for i in range(iters):
                    device_access(dev, addr, buf, size, False)
                clock_gettime(CLOCK_MONOTONIC, &t1)
        finally:
            machine_exit(dev.machine)
    else:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for i in range(iters):
            device_access(dev, addr, buf, size, False)
        clock_gettime(CLOCK_MONOTONIC, &t1)
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / iters
