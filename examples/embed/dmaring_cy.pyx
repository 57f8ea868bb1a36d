# dmaring_cy: the dmaring descriptor-ring DMA engine of dmaring.c, written in Cython.
#
# Same device model, same Python interface (ring_run, bench_read); it reaches dmaphys through
# `cimport` of dmaphys/capi.pxd (the Cython face of include/dmaphys.h) and the table in the
# "dmaphys._core._C_API" capsule. Build: examples/embed/build.py (cythonize with the installed
# dmaphys on the include path, include_dirs=[dmaphys.get_include()]).

from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, realloc

from dmaphys.capi cimport (DMAPHYS_ERR_BADARG, DMAPHYS_ERR_NODEV, DMAPHYS_ERR_NONE, dmaphys_api,
                           dmaphys_error, dmaphys_import)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_MONOTONIC

cdef enum:
    DESC_SIZE = 32
    CPL_SIZE = 16
    DESC_VALID = 1
    CPL_OK = 1
    CPL_FAULT = 2

cdef const dmaphys_api *api = dmaphys_import()
abi_version = api.abi_version


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


cdef int write_cpl(PyObject *dev, uint64_t cpl, uint64_t cookie, uint32_t status, uint32_t nbytes,
                   dmaphys_error *err) noexcept nogil:
    cdef ring_cpl c
    c.cookie = cookie
    c.status = status
    c.bytes = nbytes
    return api.dma_write(dev, cpl, &c, CPL_SIZE, err)


cdef long ring_process(PyObject *dev, uint64_t ring, long n, uint64_t cpl, dmaphys_error *err) noexcept nogil:
    """The device model: see dmaring.c (the ABI entries take the GIL themselves)."""
    cdef ring_desc d
    cdef dmaphys_error cerr
    cdef unsigned char *buf = NULL
    cdef unsigned char *nb
    cdef size_t bufsize = 0
    cdef unsigned char x
    cdef uint32_t k
    cdef long i = 0
    err.kind = DMAPHYS_ERR_NONE
    while i < n:
        if api.dma_read(dev, ring + <uint64_t>i * DESC_SIZE, &d, DESC_SIZE, err) != 0:
            break
        if not (d.flags & DESC_VALID):
            break
        if d.len > bufsize:
            nb = <unsigned char *>realloc(buf, d.len)
            if nb == NULL:
                break
            buf = nb
            bufsize = d.len
        if api.dma_read(dev, d.src, buf, d.len, err) == 0:
            x = <unsigned char>(d.flags >> 8)
            if x:
                for k in range(d.len):
                    buf[k] ^= x
            api.dma_write(dev, d.dst, buf, d.len, err)
        if err.kind != DMAPHYS_ERR_NONE:
            write_cpl(dev, cpl + <uint64_t>i * CPL_SIZE, d.cookie, CPL_FAULT, 0, &cerr)
            break
        if write_cpl(dev, cpl + <uint64_t>i * CPL_SIZE, d.cookie, CPL_OK, d.len, err) != 0:
            break
        i += 1
    free(buf)
    return i


cdef int reraise(dmaphys_error *e) except -1:
    """The record as a Python exception (raise_error sets it; except -1 propagates it)."""
    api.raise_error(e)
    return -1


cdef object fault_dict(dmaphys_error *e):
    if e.kind == DMAPHYS_ERR_NONE:
        return None
    return {"kind": e.kind, "type": e.type.decode(), "addr": e.addr, "size": e.size,
            "access": "write" if e.access else "read", "reason": e.reason.decode(),
            "device": e.device.decode()}


def ring_run(dev, uint64_t ring, long n, uint64_t cpl):
    """ring_run(dev_capsule, ring, n, cpl) -> (completed, fault dict or None)."""
    cdef dmaphys_error err
    cdef long done
    cdef PyObject *d = <PyObject *>dev
    with nogil:                        # the engine runs without the GIL; dmaphys takes it per access
        done = ring_process(d, ring, n, cpl, &err)
    if err.kind == DMAPHYS_ERR_BADARG or err.kind == DMAPHYS_ERR_NODEV:
        reraise(&err)
    return done, fault_dict(&err)


def bench_read(dev, uint64_t addr, uint64_t size, long iters):
    """bench_read(dev_capsule, addr, size, iters) -> ns per dma_read through the table."""
    cdef unsigned char buf[4096]
    cdef dmaphys_error err
    cdef timespec t0, t1
    cdef long i
    cdef PyObject *d = <PyObject *>dev
    if size > 4096:
        raise ValueError("size > 4096")
    clock_gettime(CLOCK_MONOTONIC, &t0)
    for i in range(iters):
        if api.dma_read(d, addr, buf, size, &err) != 0:
            reraise(&err)
    clock_gettime(CLOCK_MONOTONIC, &t1)
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / iters
