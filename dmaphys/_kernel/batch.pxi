# numpy batch entry points: dma_map_phys_batch / dma_mapping_error_batch / dma_unmap_phys_batch
# (kernel/dma/mapping.c per element), Device.dma_read_batch / dma_write_batch (device_access per
# element; also module-level dma_read_batch / dma_write_batch) and IommuDomain.iova_to_phys_batch
# / iommu_iova_to_phys_batch (iommu_iova_to_phys per element). Not a kernel file: the kernel has
# no batch API; these loop the per-call C entry points in compiled code over typed memoryviews.
#
# Contract (tests/test_batch.py checks it against the per-call API on both backends): a batch
# call has exactly the semantics of the per-call API applied to each element in order -- same
# return values, addresses, state, memory bytes, dma-debug records, trace events, statistics and
# warnings -- with three documented differences:
#   1. arguments are validated for the whole batch before any element runs (array types, shapes,
#      dtypes, negative values, dir/attrs, a phys+size that wraps): bad input raises
#      TypeError/ValueError/KernelBug with no state changed, where a per-call loop would have
#      done the elements before the bad one;
#   2. queued kernel warnings are emitted once, after the last element (Machine.flush_warnings),
#      so a warning filter that turns warnings into errors -- or dma-debug's raise_errors, which
#      flush_warnings raises -- stops the batch after it is complete, not at the element that
#      warned;
#   3. an exception raised by element i (DmaFault, IommuFault, a KernelBug from deep inside)
#      stops the batch there, exactly where the per-call loop would stop; elements before i are
#      done and stay done. The exception gets ``batch_index`` (= i) and ``batch_result`` (the
#      results of elements 0..i-1, None for functions returning nothing) attributes.
#
# Threads and the GIL: a batch call owns its machine for the whole call (machine_enter /
# machine_exit, machine.pxi: a second thread's batch waits for it, a second thread's per-call
# entry point waits in machine_guard()). The map / unmap loops run without the GIL for as long
# as the elements take the C fast paths (mapping.pxi: dma_map_phys_fast_run / dma_unmap_phys_fast_run:
# dma-direct without bouncing, dma-iommu rcache hits and strict unmaps, no dma-debug or tracing);
# an element the fast path declines (it changed nothing) runs the full per-call C function with
# the GIL, and the loop goes back to running without it. The sync batches do the same with
# dma_sync_single_fast (mapping.pxi). dma_mapping_error_batch (from _NOGIL_TRIVIAL_MIN elements
# on), the device read / write batches (fixed-size and ragged) and the CPU load / store batches
# run without the GIL when dma-debug is off (device_access takes it for a fault, a stale-IOTLB
# report or P2P routing; a PhysAddrError is raised after the loop); the iova_to_phys batch walks
# page tables without it. What a call does with the GIL held -- converting its arguments,
# allocating its result, taking the machine -- is kept to a few microseconds (see "argument
# conversion"), since that part of two threads' calls cannot overlap.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, batch.pxd.

import numpy as _np


# ---- argument conversion (whole batch, before any state change) --------------------------------
# Each batch call converts its arguments with the GIL held; while two threads drive two machines,
# that is the part of a call that cannot run in parallel, so the common cases are kept short: an
# array that already is what the loop reads (a C-contiguous 1-D uint64 ndarray) is used as it is,
# a scalar size needs no array at all, and the loops read the arrays through plain pointers
# (_u64_data: no memoryview objects to make and validate per call).
# The common-case checks, lengths, data pointers and result arrays use numpy's C API (macros
# reading the array struct; PyArray_EMPTY): a few instructions each, where the Python-level
# attribute lookups (arr.dtype, arr.flags, arr.shape), np.empty() and the buffer protocol cost
# several thousand a call between them.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
cimport numpy as cnp

cnp.import_array()

cdef object _U64 = _np.dtype(_np.uint64)
# a loop doing ~1 ns of work per element releases the GIL only from this many elements on: for
# fewer, the hand-off (and waiting to take the GIL back from a busy thread) costs more than it frees
cdef enum:
    _NOGIL_TRIVIAL_MIN = 1024
cdef object _NDARRAY = _np.ndarray


# ---- taking the GIL back without sleeping on it (two threads, two machines) ----------------------
# CPython (3.11-3.13) gives a thread that finds the GIL taken no spinning: it sleeps on a condition
# variable until the holder drops it, and on a virtual machine that costs both threads: the
# holder's drop_gil() signals the sleeper (a futex wake and an IPI to the idle vCPU, measured
# ≈ 30 µs on this 2-vCPU KVM guest before the holder's loop could start), and the sleeper wakes
# tens of microseconds after that (≈ 60-90 µs from its take_gil() to having the GIL) -- as long
# as a whole 4096-pair dma-direct call. The holder is usually another batch thread between two
# GIL-free loops (its return, its Python loop, its next call's argument checks: well under a
# microsecond). So the batch threads pass a token around: a thread whose loop is done claims it
# (compare-and-swap of 0 to a time stamp) before it asks CPython for the GIL, and gives it back
# as the first thing once it has dropped the GIL again, so the token covers its whole GIL-held
# gap, including its own take_gil(); a thread that finds the token claimed spins (CPU relax hint)
# until it is given back, then claims it and takes the GIL, by then free -- nobody sleeps in
# take_gil() and nobody's drop_gil() has a sleeper to wake. Claiming with a compare-and-swap
# matters: with a mark set only once a thread had the GIL (the previous scheme), two threads
# ending their loops within the ≈ 0.3 µs of the first one's take_gil() both went to CPython, and
# one slept (1-2 % of the hand-overs, ≈ 80 µs each: the most of the two-thread loss measured at
# 4096 pairs). A token older than _GIL_GAP_SPIN_NS (the holder went on to other work with the GIL;
# it is refreshed when its holder has the GIL) stops counting: the next thread takes it over. It
# changes no machine's state and no result: only when a thread asks CPython for the GIL.
cdef extern from *:
    """
    #include <atomic>
    #include <time.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <immintrin.h>
    #define DMAPHYS_CPU_RELAX() _mm_pause()
    #elif defined(__aarch64__)
    #define DMAPHYS_CPU_RELAX() __asm__ __volatile__("yield")
    #else
    #define DMAPHYS_CPU_RELAX() ((void)0)
    #endif
    static std::atomic<long long> dmaphys_gil_token{0};   /* claim stamp of its holder, 0: free */
    static long long dmaphys_gil_spin_ns = 5000;          /* the bound; 0: never spin */
    static thread_local long long dmaphys_my_token = 0;   /* the stamp this thread holds, 0: none */
    static inline long long dmaphys_mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + 1;   /* never 0 */
    }
    /* the loop is done, the GIL not asked for yet: claim the token, spinning while it is held */
    static inline void dmaphys_gil_token_claim(long long limit_ns) {
        if (limit_ns <= 0)
            return;
        long long t = dmaphys_gil_token.load(std::memory_order_relaxed);
        for (;;) {
            if (t == 0 || dmaphys_mono_ns() - t >= limit_ns) {      /* free, or stale: take it */
                long long now = dmaphys_mono_ns();
                if (dmaphys_gil_token.compare_exchange_weak(t, now, std::memory_order_relaxed)) {
                    dmaphys_my_token = now;
                    return;
                }
                continue;                                          /* t is the new value */
            }
            for (int k = 0; k < 8; k++)
                DMAPHYS_CPU_RELAX();
            t = dmaphys_gil_token.load(std::memory_order_relaxed);
        }
    }
    /* this thread has the GIL again: its gap's time starts now (if it still holds the token) */
    static inline void dmaphys_gil_token_refresh(void) {
        long long mine = dmaphys_my_token;
        if (mine) {
            long long now = dmaphys_mono_ns();
            dmaphys_my_token = dmaphys_gil_token.compare_exchange_strong(mine, now,
                                   std::memory_order_relaxed) ? now : 0;
        }
    }
    /* the GIL is dropped: give the token back (unless another thread has taken it over) */
    static inline void dmaphys_gil_token_give(void) {
        long long mine = dmaphys_my_token;
        if (mine) {
            dmaphys_my_token = 0;
            dmaphys_gil_token.compare_exchange_strong(mine, 0, std::memory_order_relaxed);
        }
    }
    """
    void _gil_token_claim "dmaphys_gil_token_claim"(long long limit_ns) noexcept nogil
    void _gil_token_refresh "dmaphys_gil_token_refresh"() noexcept nogil
    void _gil_token_give "dmaphys_gil_token_give"() noexcept nogil
    long long _GIL_GAP_SPIN_NS "dmaphys_gil_spin_ns"


def _gil_spin_ns(ns=None):
    """Benchmark hook (not exported): the bound on the spin before taking the GIL back, in ns
    (default 5,000; 0 turns the spin off). Sets it when ``ns`` is given; returns the old value."""
    global _GIL_GAP_SPIN_NS
    old = _GIL_GAP_SPIN_NS
    if ns is not None:
        _GIL_GAP_SPIN_NS = _u64(ns, "ns")
    return old


cdef inline void _gil_release_mark() noexcept nogil:
    """First statement of a batch loop's ``with nogil`` block: this thread's gap is over."""
    _gil_token_give()


cdef inline void _gil_retake_prepare() noexcept nogil:
    """Last statement of the block: claim the token (spinning, bounded, while another thread
    holds it)."""
    _gil_token_claim(_GIL_GAP_SPIN_NS)


cdef inline void _gil_retaken_mark() noexcept nogil:
    """First statement after the block: this thread's gap begins."""
    _gil_token_refresh()


cdef inline bint _is_u64_vector(object arr) noexcept:
    """``arr`` is an ndarray (not a subclass) of native uint64, 1-D and C-contiguous."""
    return (type(arr) is _NDARRAY and <object>cnp.PyArray_DESCR(<cnp.ndarray>arr) is _U64
            and cnp.PyArray_NDIM(<cnp.ndarray>arr) == 1 and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>arr))


cdef inline Py_ssize_t _vec_len(object a) noexcept:
    """len() of a 1-D ndarray that _batch_u64_array() returned (or this file made)."""
    return cnp.PyArray_DIM(<cnp.ndarray>a, 0)


cdef inline object _u64_empty(Py_ssize_t n):
    """np.empty(n, dtype=np.uint64) through the C API (the same dtype object: numpy's uint64)."""
    cdef cnp.npy_intp dims = n
    return cnp.PyArray_EMPTY(1, &dims, cnp.NPY_UINT64, 0)


cdef inline bint _batch_out_fits(object out, Py_ssize_t n) noexcept:
    """``out`` is an array _batch_out_u64(out, n, ...) accepts as it is (no exception)."""
    return (_is_u64_vector(out) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and cnp.PyArray_DIM(<cnp.ndarray>out, 0) == n)


cdef object _batch_out_u64(object out, Py_ssize_t n, str what):
    """An ``out=`` array to write n uint64 results into: an ndarray (not a subclass) of uint64,
    1-D, C-contiguous, writable, n entries (else TypeError / ValueError). Returns it."""
    if not _is_u64_vector(out):
        if type(out) is not _NDARRAY:
            raise TypeError(f"{what} must be a numpy.ndarray, not {type(out).__name__}")
        if out.dtype != _U64 or out.ndim != 1 or not out.flags.c_contiguous:
            raise TypeError(f"{what} must be a C-contiguous 1-D uint64 array, not {out.dtype} "
                            f"of shape {out.shape}")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        raise ValueError(f"{what} is read-only")
    if cnp.PyArray_DIM(<cnp.ndarray>out, 0) != n:
        raise ValueError(f"{what} has {cnp.PyArray_DIM(<cnp.ndarray>out, 0)} entries for {n} addresses")
    return out


cdef object _batch_u64_array(object arr, str what):
    """A 1-D array of unsigned values as a C-contiguous uint64 ndarray.

    Accepts any integer dtype (signed ones must hold no negative value) and sequences of ints;
    bool, float, complex, object and string arrays are TypeError; other shapes ValueError.
    """
    cdef object a
    if _is_u64_vector(arr):
        return arr                               # the common case: nothing to convert or check
    if isinstance(arr, (str, bytes)):
        raise TypeError(f"{what} must be a 1-D integer array, not {type(arr).__name__}")
    try:
        a = _np.asarray(arr)
    except (ValueError, OverflowError) as e:
        raise TypeError(f"{what} must be a 1-D integer array ({e})") from None
    if a.size == 0 and not isinstance(arr, _np.ndarray):
        a = a.astype(_np.uint64)                 # an empty sequence (numpy makes it float64)
    if a.dtype.kind not in "ui":
        raise TypeError(f"{what} must be a 1-D integer array, not dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, not shape {a.shape}")
    if a.dtype.kind == "i" and a.shape[0] and a.min() < 0:
        raise ValueError(f"{what}[{int(_np.argmax(a < 0))}] is negative")
    return _np.ascontiguousarray(a, dtype=_np.uint64)


cdef inline void *_array_data(object a, bint writable) except? NULL:
    """The data pointer of a C-contiguous ndarray this file made or checked; the caller keeps
    ``a`` alive while it uses the pointer (an ndarray's data does not move)."""
    cdef Py_buffer view
    cdef void *p
    if (type(a) is _NDARRAY and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and (not writable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a))):
        return cnp.PyArray_DATA(<cnp.ndarray>a)
    PyObject_GetBuffer(a, &view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    p = view.buf
    PyBuffer_Release(&view)
    return p


cdef inline const u64 *_u64_data(object a) except? NULL:
    return <const u64 *>_array_data(a, False)


cdef object _batch_sizes(object sizes, Py_ssize_t n, str what, BatchSizes *bs):
    """``sizes``: a scalar (applies to every element) or a 1-D array of n entries.

    Fills ``bs``: ``bs.p[i * bs.stride]`` is element i's size (a scalar is stored in ``bs.one``
    and read with stride 0). Returns the array that backs ``bs.p`` (None for a scalar): the
    caller keeps it alive while it reads the sizes."""
    cdef object a
    if type(sizes) is int:
        bs.one = _arg_u64(sizes, what)           # an exact int: no __index__ lookup
        bs.p = &bs.one
        bs.stride = 0
        return None
    if not isinstance(sizes, (str, bytes)) and _np.ndim(sizes) == 0:
        bs.one = _u64(sizes, what)
        bs.p = &bs.one
        bs.stride = 0
        return None
    a = _batch_u64_array(sizes, what)
    if _vec_len(a) != n:
        raise ValueError(f"{what} has {a.shape[0]} entries for {n} addresses")
    bs.p = _u64_data(a)
    bs.stride = 1
    return a


cdef Py_ssize_t _span_wraps(const u64 *p, const u64 *s, Py_ssize_t ss, Py_ssize_t n) noexcept nogil:
    """The first element whose phys + size - 1 wraps the 64-bit address space, or -1 (the per-call
    entry points' _check_span(); a branch-free pass first, so the common all-clear is cheap)."""
    cdef Py_ssize_t i
    cdef bint bad = False
    cdef u64 top = 0
    if ss == 0:                                  # one size: phys + size - 1 wraps iff phys > 2^64 - size
        if s[0] == 0:
            return -1
        for i in range(n):
            top = p[i] if p[i] > top else top
        bad = top > U64_MAX - (s[0] - 1)
    else:
        for i in range(n):
            bad |= (s[i * ss] != 0) & (p[i] + s[i * ss] - 1 < p[i])
    if bad:
        for i in range(n):
            if s[i * ss] and p[i] + s[i * ss] - 1 < p[i]:
                return i
    return -1


cdef int _span_error(const u64 *p, const u64 *s, Py_ssize_t ss, Py_ssize_t i) except -1:
    raise ValueError(f"phys[{i}] {p[i]:#x} + size {s[i * ss]:#x} wraps the 64-bit address space")


cdef inline int _batch_fail(object exc, Py_ssize_t i, object done) except -1:
    """Record where a batch stopped on the exception about to propagate."""
    try:
        exc.batch_index = int(i)
        exc.batch_result = done
    except AttributeError:                       # exception types without a __dict__
        pass
    return 0


# ---- kernel/dma/mapping.c: dma_map_phys / dma_unmap_phys over arrays ----------------------------
# The GIL-free runs: elements i.. for as long as they take the C fast path (a plain function each,
# so the compiler inlines the fast path into a small loop); they return the first element the
# fast path declined (it changed nothing), which the caller runs on the full path with the GIL.
cdef object _dma_map_phys_batch(Device dev, object phys, object sizes, object dir, object attrs,
                                object out_arg=None):
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = _vec_len(pa), i = 0, j
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef int d = _arg_dir(dir)
    cdef unsigned long at = _arg_attrs(attrs)
    cdef const u64 *p = _u64_data(pa)
    cdef Machine m = dev.machine
    bug_on_dir(d, "dma_map_phys")                # per call: the first thing c_dma_map_phys does
    # the span check (per call: _check_span() in the def wrapper) reads every element, ≈ 0.6 ns
    # each (2.4 µs at 4096: most of a dma-direct map call's GIL-held part); when the loop will run
    # without the GIL and nothing else can fail before it, it runs there, before the first element
    cdef bint late = (_nogil_ok(dev) and m._busy_thread == 0
                      and (out_arg is None or _batch_out_fits(out_arg, n)))
    if not late:
        i = _span_wraps(p, s, ss, n)
        if i >= 0:
            _span_error(p, s, ss, i)
    cdef object out = _u64_empty(n) if out_arg is None else _batch_out_u64(out_arg, n, "out")
    cdef u64 *o = <u64 *>_array_data(out, True)
    i = 0
    machine_enter(m)
    if late:
        with nogil:
            _gil_release_mark()
            j = _span_wraps(p, s, ss, n)
            if j < 0:
                i = dma_map_phys_fast_run(dev, p, s, ss, 0, n, d, at, o)
            _gil_retake_prepare()
        _gil_retaken_mark()
        if j >= 0:                               # nothing done: as if raised before machine_enter
            machine_exit(m)
            _span_error(p, s, ss, j)
        m._batch_fast += i
    try:
        while i < n:
            if late:                             # element i was declined by the run just made
                late = False
            elif _nogil_ok(dev):
                j = i
                with nogil:                      # runs of fast-path elements without the GIL
                    _gil_release_mark()
                    i = dma_map_phys_fast_run(dev, p, s, ss, i, n, d, at, o)
                    _gil_retake_prepare()
                _gil_retaken_mark()
                m._batch_fast += i - j
                if i == n:
                    break
            o[i] = c_dma_map_phys(dev, p[i], s[i * ss], d, at)     # the full path, with the GIL
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:i].copy())
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)
    return out


cdef object _dma_unmap_phys_batch(Device dev, object addrs, object sizes, object dir, object attrs):
    cdef object aa = _batch_u64_array(addrs, "addr")
    cdef Py_ssize_t n = _vec_len(aa), i = 0, j
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef int d = _arg_dir(dir)
    cdef unsigned long at = _arg_attrs(attrs)
    cdef const u64 *a = _u64_data(aa)
    bug_on_dir(d, "dma_unmap_phys")
    cdef Machine m = dev.machine
    machine_enter(m)
    try:
        while i < n:
            if _nogil_ok(dev):
                j = i
                with nogil:
                    _gil_release_mark()
                    dma_unmap_phys_fast_run(dev, a, s, ss, &i, n, d, at)
                    _gil_retake_prepare()
                _gil_retaken_mark()
                m._batch_fast += i - j
                if i == n:
                    break
            c_dma_unmap_phys(dev, a[i], s[i * ss], d, at)
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)


cdef inline void _mapping_error_run(const u64 *a, int *o, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = -ENOMEM if a[i] == DMA_MAPPING_ERROR else 0


cdef object _dma_mapping_error_batch(Device dev, object addrs):
    cdef object aa = _batch_u64_array(addrs, "dma_addr")
    cdef const u64 *a = _u64_data(aa)
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef object out = _np.empty(n, dtype=_np.int32)
    cdef int *o = <int *>_array_data(out, True)
    machine_guard(dev.machine)
    try:
        if not dev.machine.dma_debug.enabled:    # debug_dma_mapping_error() does nothing
            if n >= _NOGIL_TRIVIAL_MIN:          # ~1 ns an element: short loops keep the GIL
                with nogil:
                    _gil_release_mark()
                    _mapping_error_run(a, o, n)
                    _gil_retake_prepare()
                _gil_retaken_mark()
            else:
                _mapping_error_run(a, o, n)
            i = n
        while i < n:
            o[i] = c_dma_mapping_error(dev, a[i])
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:i].copy())
        raise
    finally:
        _iova_flush(dev.machine)
    return out


def dma_map_phys_batch(Device dev not None, phys, sizes, dir, attrs=0, out=None):
    """dma_map_phys_batch(dev, phys, sizes, dir, attrs=0, out=None) -> ndarray[uint64]

    Simulator-only batch of kernel/dma/mapping.c:dma_map_phys() calls:
    ``dma_map_phys(dev, phys[i], sizes[i], dir, attrs)`` for each i, in order, in a C loop over the
    same C function the per-call entry point wraps (c_dma_map_phys: dma-direct / swiotlb /
    dma-iommu, trace event, dma-debug record). ``phys``: 1-D integer array; ``sizes``: a scalar for
    every element or a 1-D array of the same length. Returns the bus addresses; a failed element is
    DMA_MAPPING_ERROR and the rest proceed, as separate calls would.

    Validated for the whole batch before any element is mapped: array types and shapes (TypeError /
    ValueError), ``dir`` (an invalid direction raises KernelBug, as dma_map_phys's BUG_ON would),
    ``attrs``, and a ``phys + size`` that wraps (ValueError). Kernel warnings (KernelWarning,
    DmaDebugWarning) are emitted once, after the last element. An exception from element i stops the
    batch there (``exc.batch_index``, ``exc.batch_result``: the addresses of elements 0..i-1, which
    stay mapped). Runs without the GIL while the elements take the C fast path (see the top of
    batch.pxi).

    ``out``: None (a new array is returned), or a writable C-contiguous 1-D uint64 ndarray of the
    same length as ``phys``, into which the addresses are written and which is returned (a
    driver thread mapping ring after ring reuses one array; it may be ``phys`` itself: each
    element is read before its address is written). A bad ``out`` raises TypeError (not such an
    array) or ValueError (read-only, wrong length) before any element is mapped.
    """
    _dev_live(dev)
    return _dma_map_phys_batch(dev, phys, sizes, dir, attrs, out)


def dma_mapping_error_batch(Device dev not None, dma_addrs):
    """dma_mapping_error_batch(dev, dma_addrs) -> ndarray[int32]

    Simulator-only batch of include/linux/dma-mapping.h:dma_mapping_error() calls:
    ``dma_mapping_error(dev, dma_addrs[i])`` for each i: returns -ENOMEM where the address is
    DMA_MAPPING_ERROR, else 0. Like the per-call function it tells dma-debug that the driver checked
    each address (without it dma-debug reports "device driver failed to check map error" at unmap,
    exactly as for per-call mappings nobody checked). Raises TypeError / ValueError for a bad array
    or a removed device. Runs without the GIL when dma-debug is off.
    """
    _dev_live(dev)
    return _dma_mapping_error_batch(dev, dma_addrs)


def dma_unmap_phys_batch(Device dev not None, dma_addrs, sizes, dir, attrs=0):
    """dma_unmap_phys_batch(dev, dma_addrs, sizes, dir, attrs=0)

    Simulator-only batch of kernel/dma/mapping.c:dma_unmap_phys() calls:
    ``dma_unmap_phys(dev, dma_addrs[i], sizes[i], dir, attrs)`` for each i, in order
    (c_dma_unmap_phys in a C loop). Returns None. Raises as dma_map_phys_batch does (KernelBug for
    an invalid ``dir``, TypeError / ValueError for bad arrays, validated before any element); same
    warning and GIL rules.
    """
    _dev_live(dev)
    _dma_unmap_phys_batch(dev, dma_addrs, sizes, dir, attrs)


# ---- the device on its bus: Device.dma_read_batch / dma_write_batch ------------------------------
cdef object _dma_read_batch(Device dev, object addrs, object size):
    """Device.dma_read_batch(): dev.dma_read(addrs[i], size) for each i, into an (n, size) array."""
    cdef object aa = _batch_u64_array(addrs, "addrs")
    cdef u64 sz = _u64(size, "size")
    cdef const u64 *a = _u64_data(aa)
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef object out = _np.empty((n, sz), dtype=_np.uint8)
    cdef u8 *o = <u8 *>_array_data(out, True)
    cdef Machine m = dev.machine
    machine_enter(m)
    try:
        if not m.dma_debug.enabled:              # nothing Python must see but faults: no GIL
            with nogil:
                _gil_release_mark()
                while i < n:
                    if sz:
                        device_access(dev, a[i], &o[i * sz], sz, False)
                    dev.dma_reads += 1
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if sz:
                device_access(dev, a[i], &o[i * sz], sz, False)
            dev.dma_reads += 1
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:i].copy())
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)
    return out


cdef object _dma_write_batch(Device dev, object addrs, object data):
    """Device.dma_write_batch(): dev.dma_write(addrs[i], data[i]) for each i."""
    cdef object aa = _batch_u64_array(addrs, "addrs")
    cdef object d
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"data must be a 2-D uint8 array (n x size), not {type(data).__name__}")
    d = _np.asarray(data)
    if d.dtype != _np.uint8:
        raise TypeError(f"data must be a 2-D uint8 array (n x size), not dtype {d.dtype}")
    if d.ndim != 2:
        raise ValueError(f"data must be a 2-D uint8 array (n x size), not shape {d.shape}")
    if d.shape[0] != aa.shape[0]:
        raise ValueError(f"data has {d.shape[0]} rows for {aa.shape[0]} addresses")
    d = _np.ascontiguousarray(d)
    cdef const u64 *a = _u64_data(aa)
    cdef const u8 *v = <const u8 *>_array_data(d, False)
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef u64 sz = <u64>d.shape[1]
    cdef Machine m = dev.machine
    machine_enter(m)
    try:
        if not m.dma_debug.enabled:
            with nogil:
                _gil_release_mark()
                while i < n:
                    if sz:
                        device_access(dev, a[i], <u8 *>&v[i * sz], sz, True)
                    dev.dma_writes += 1
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if sz:
                device_access(dev, a[i], <u8 *>&v[i * sz], sz, True)
            dev.dma_writes += 1
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)


def dma_read_batch(Device dev not None, addrs, size):
    """dma_read_batch(dev, addrs, size) -> ndarray[uint8] of shape (len(addrs), size)

    Simulator-only (device-side reads; no kernel call). Same as
    ``dev.dma_read_batch(addrs, size)``: returns rows, row i being what
    ``dev.dma_read(addrs[i], size)`` returns, element by element in order through device_access()
    (IOMMU translation, IOTLB, P2P routing, faults and statistics exactly as per call). Raises
    TypeError / ValueError for bad arguments; a DmaFault (IommuFault for a translation fault) at
    element i stops the batch there (``exc.batch_index``, ``exc.batch_result`` = the rows read).
    Runs without the GIL when dma-debug is off (device_access takes it for a fault).
    """
    return _dma_read_batch(dev, addrs, size)


def dma_write_batch(Device dev not None, addrs, data):
    """dma_write_batch(dev, addrs, data): ``dev.dma_write(addrs[i], data[i])`` for each row i.

    Simulator-only (device-side writes; no kernel call). Same as
    ``dev.dma_write_batch(addrs, data)``; ``data`` is a 2-D uint8 array with one row per
    address. Returns None. Raises TypeError / ValueError for bad arguments; a DmaFault (IommuFault
    for a translation fault) stops the batch at the faulting element (``exc.batch_index``). Runs
    without the GIL when dma-debug is off.
    """
    _dma_write_batch(dev, addrs, data)


# ---- drivers/iommu/iommu.c: iommu_iova_to_phys over an array ------------------------------------
cdef object _iommu_iova_to_phys_batch(IommuDomain d, object iovas):
    """iommu_iova_to_phys_c() per element, its domain checks hoisted: the loop runs no Python
    code, so the domain cannot change type or be freed between two elements."""
    cdef object ia = _batch_u64_array(iovas, "iovas")
    cdef const u64 *a = _u64_data(ia)
    cdef Py_ssize_t n = ia.shape[0], i
    cdef object out = _np.empty(n, dtype=_U64)
    cdef u64 *o = <u64 *>_array_data(out, True)
    cdef IoPgtable pt
    if n == 0:
        return out
    if d.freed:                                  # as iommu_iova_to_phys() at the first element
        raise ValueError(f"IOMMU domain {d.id} was freed")
    if d.ktype == IOMMU_DOMAIN_IDENTITY:
        memcpy(o, a, n * sizeof(u64))
    elif d.pgtable is None:
        memset(o, 0, n * sizeof(u64))
    else:
        pt = d.pgtable                           # domain->ops->iova_to_phys
        machine_enter(pt.machine)                # no other thread maps, unmaps or frees meanwhile
        try:
            if d.freed:                          # freed while this thread waited for the machine
                raise ValueError(f"IOMMU domain {d.id} was freed")
            with nogil:
                _gil_release_mark()
                for i in range(n):
                    o[i] = pt.c_iova_to_phys(a[i])
                _gil_retake_prepare()
            _gil_retaken_mark()
        finally:
            machine_exit(pt.machine)
    return out


def iommu_iova_to_phys_batch(domain, iovas):
    """iommu_iova_to_phys_batch(domain, iovas) -> ndarray[uint64]

    Simulator-only batch of drivers/iommu/iommu.c:iommu_iova_to_phys() calls. Same as
    ``domain.iova_to_phys_batch(iovas)``: returns ``iommu_iova_to_phys(domain, iovas[i])``
    for each i (identity domains return the IOVA, blocked ones 0, paging domains walk the page
    table: 0 when unmapped, -ERANGE as u64 beyond a generic_pt table). Raises ValueError for a freed
    domain, TypeError / ValueError for a bad array. A software walk: no IOTLB, no statistics, no
    warnings.

    The walk runs without the GIL (IoPgtable.c_iova_to_phys is nogil), so other Python threads run
    meanwhile; it owns the machine for the call, so another thread's map, unmap or free in this
    machine waits for it.
    """
    return _iommu_iova_to_phys_batch(_domain_arg(domain), iovas)



def _test_batch_fast_elements(Machine m not None):
    """Test hook (not exported): batch elements m's GIL-free fast paths have done."""
    return m._batch_fast

__all__ += ["dma_map_phys_batch", "dma_mapping_error_batch", "dma_unmap_phys_batch",
             "dma_read_batch", "dma_write_batch", "iommu_iova_to_phys_batch"]


# ==== ring batches: variable sizes per element, CPU-side loads/stores, syncs, two-step links ======
# Added for `dmaphys stress` (drivers refilling whole rings per call). Same contract as above:
# the per-call API element by element in order, whole-batch validation first, warnings once at
# the end, an exception at element i stops the batch (batch_index / batch_result). "Ragged" data
# is one flat 1-D uint8 array: element i's bytes at [off[i], off[i] + sizes[i]) with off the
# running sum of sizes. All own their machine for the whole call (machine_enter / machine_exit),
# like the batches above. With dma-debug off, the device accesses, the CPU loads and stores and
# the syncs run without the GIL (a fault, a PhysAddrError, a bounce or an IOMMU sync that needs
# the full path takes it back for that element); with dma-debug on (its records are Python
# objects) and for dma_iova_link they hold it.

cdef object _ragged_data(object data, u64 total):
    """``data`` as a C-contiguous 1-D uint8 array of exactly ``total`` bytes (bytes-like ok)."""
    cdef object d
    if isinstance(data, str):
        raise TypeError("data must be a 1-D uint8 array or bytes-like, not str")
    if isinstance(data, (bytes, bytearray, memoryview)):
        d = _np.frombuffer(data, dtype=_np.uint8)
    else:
        d = _np.asarray(data)
    if d.dtype != _np.uint8:
        raise TypeError(f"data must be a 1-D uint8 array, not dtype {d.dtype}")
    if d.ndim != 1:
        raise ValueError(f"data must be a 1-D uint8 array (the elements back to back), not shape {d.shape}")
    if <u64>d.shape[0] != total:
        raise ValueError(f"data has {d.shape[0]} bytes for sizes totalling {total}")
    return _np.ascontiguousarray(d)


cdef u64 _ragged_total(const u64 *s, Py_ssize_t ss, Py_ssize_t n) except? 0xFFFFFFFFFFFFFFFF:
    cdef Py_ssize_t i
    cdef u64 total = 0
    for i in range(n):
        if total + s[i * ss] < total:
            raise ValueError("sizes overflow 64 bits")
        total += s[i * ss]
    return total


cdef object _dma_read_ragged_batch(Device dev, object addrs, object sizes):
    cdef Machine mach = dev.machine
    cdef object aa = _batch_u64_array(addrs, "addrs")
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *a = _u64_data(aa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0
    cdef object out = _np.empty(total, dtype=_np.uint8)
    cdef u8 *o = <u8 *>_array_data(out, True)
    machine_enter(mach)
    try:
        if not mach.dma_debug.enabled:           # device_access takes the GIL for a fault
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        device_access(dev, a[i], &o[off], s[i * ss], False)
                    off += s[i * ss]
                    dev.dma_reads += 1
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                device_access(dev, a[i], &o[off], s[i * ss], False)
            off += s[i * ss]
            dev.dma_reads += 1
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:off].copy())
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)
    return out


cdef object _dma_write_ragged_batch(Device dev, object addrs, object sizes, object data):
    cdef Machine mach = dev.machine
    cdef object aa = _batch_u64_array(addrs, "addrs")
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *a = _u64_data(aa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0
    cdef object d = _ragged_data(data, total)
    cdef const u8 *v = <const u8 *>_array_data(d, False)
    machine_enter(mach)
    try:
        if not mach.dma_debug.enabled:
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        device_access(dev, a[i], <u8 *>&v[off], s[i * ss], True)
                    off += s[i * ss]
                    dev.dma_writes += 1
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                device_access(dev, a[i], <u8 *>&v[off], s[i * ss], True)
            off += s[i * ss]
            dev.dma_writes += 1
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)


def dma_read_ragged_batch(Device dev not None, addrs, sizes):
    """dma_read_ragged_batch(dev, addrs, sizes) -> 1-D ndarray[uint8] of sum(sizes) bytes

    ``dev.dma_read(addrs[i], sizes[i])`` for each i, in order, the results back to back
    (element i at the running sum of sizes[:i]). ``sizes``: a scalar or a 1-D array. A DmaFault
    at element i stops the batch (``exc.batch_index``; ``exc.batch_result`` = the bytes read).

    Simulator-only (device-side reads; no kernel call). Returns the 1-D uint8 array. Raises DmaFault
    / IommuFault as dma_read() does (a removed device faults), TypeError / ValueError for bad arrays
    (sizes of another length, sizes overflowing 64 bits); an exception at element i stops the batch
    as above.
    """
    return _dma_read_ragged_batch(dev, addrs, sizes)


def dma_write_ragged_batch(Device dev not None, addrs, sizes, data):
    """dma_write_ragged_batch(dev, addrs, sizes, data)

    ``dev.dma_write(addrs[i], <sizes[i] bytes of data>)`` for each i, in order; ``data`` is a
    1-D uint8 array (or bytes-like) holding the elements back to back, sum(sizes) bytes.

    Simulator-only (device-side writes; no kernel call). Returns None. Raises DmaFault / IommuFault
    as dma_write() does (a removed device faults), TypeError / ValueError for bad arrays or ``data``
    whose length is not sum(sizes); an exception at element i stops the batch there
    (``exc.batch_index``).
    """
    _dma_write_ragged_batch(dev, addrs, sizes, data)


cdef object _mem_read_batch(Machine m, object phys, object sizes):
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = pa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "n", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *p = _u64_data(pa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0
    cdef object out = _np.empty(total, dtype=_np.uint8)
    cdef u8 *o = <u8 *>_array_data(out, True)
    cdef PhysMem mem = m.mem
    machine_enter(m)
    try:
        if not m.dma_debug.enabled:              # cpu_access() does nothing: no GIL
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        if mem.find_region(p[i], s[i * ss]) < 0:
                            break                # raised below, with the GIL
                        mem.read(p[i], &o[off], s[i * ss])
                    off += s[i * ss]
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                if mem.find_region(p[i], s[i * ss]) < 0:
                    raise PhysAddrError(p[i], s[i * ss])
                m.dma_debug.cpu_access(p[i], s[i * ss], False)
                mem.read(p[i], &o[off], s[i * ss])
            off += s[i * ss]
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:off].copy())
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)
    return out


cdef object _mem_write_batch(Machine m, object phys, object sizes, object data):
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = pa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "n", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *p = _u64_data(pa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0
    cdef object d = _ragged_data(data, total)
    cdef const u8 *v = <const u8 *>_array_data(d, False)
    cdef PhysMem mem = m.mem
    machine_enter(m)
    try:
        if not m.dma_debug.enabled:
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        if mem.find_region(p[i], s[i * ss]) < 0:
                            break
                        mem.write(p[i], &v[off], s[i * ss])
                    off += s[i * ss]
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                if mem.find_region(p[i], s[i * ss]) < 0:
                    raise PhysAddrError(p[i], s[i * ss])
                m.dma_debug.cpu_access(p[i], s[i * ss], True)
                mem.write(p[i], &v[off], s[i * ss])
            off += s[i * ss]
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)


def mem_read_batch(Machine machine not None, phys, sizes):
    """mem_read_batch(machine, phys, sizes) -> 1-D ndarray[uint8] of sum(sizes) bytes

    ``machine.mem_read(phys[i], sizes[i])`` for each i (CPU loads, dma-debug's check of unsynced
    bounce data included), the results back to back. A PhysAddrError at element i stops the
    batch there (``exc.batch_index``, ``exc.batch_result`` = the bytes read).

    Simulator-only (CPU loads). Returns the 1-D uint8 array. Raises PhysAddrError as above,
    TypeError / ValueError for bad arrays; DmaDebugError with ``raise_errors`` set.
    """
    return _mem_read_batch(machine, phys, sizes)


def mem_write_batch(Machine machine not None, phys, sizes, data):
    """mem_write_batch(machine, phys, sizes, data): ``machine.mem_write(phys[i], <sizes[i] bytes>)``
    for each i; ``data`` holds the elements back to back (1-D uint8 array or bytes-like).

    Simulator-only (CPU stores). Returns None. Raises PhysAddrError at the first element that is not
    all RAM or MMIO (stopping the batch there: ``exc.batch_index``; earlier elements are written),
    TypeError / ValueError for bad arrays or ``data`` whose length is not sum(sizes).
    """
    _mem_write_batch(machine, phys, sizes, data)


cdef object _dma_sync_single_batch(Device dev, object addrs, object sizes, object dir, bint for_cpu):
    cdef Machine mach = dev.machine
    cdef object aa = _batch_u64_array(addrs, "addr")
    cdef Py_ssize_t n = _vec_len(aa), i = 0, j
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef int d = _arg_dir(dir)
    cdef const u64 *a = _u64_data(aa)
    machine_enter(mach)
    try:
        while i < n:
            if _nogil_ok(dev):
                j = i
                with nogil:                      # runs of fast-path elements without the GIL
                    _gil_release_mark()
                    while i < n and dma_sync_single_fast(dev, a[i], s[i * ss], d, for_cpu):
                        i += 1
                    _gil_retake_prepare()
                _gil_retaken_mark()
                mach._batch_fast += i - j
                if i == n:
                    break
            if for_cpu:
                c_dma_sync_single_for_cpu(dev, a[i], s[i * ss], d)
            else:
                c_dma_sync_single_for_device(dev, a[i], s[i * ss], d)
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)


def dma_sync_single_for_cpu_batch(Device dev not None, dma_addrs, sizes, dir):
    """dma_sync_single_for_cpu_batch(dev, dma_addrs, sizes, dir):
    ``dma_sync_single_for_cpu(dev, dma_addrs[i], sizes[i], dir)`` for each i, in order.

    Simulator-only batch of include/linux/dma-mapping.h:dma_sync_single_for_cpu() calls. Returns
    None. Raises what dma_sync_single_for_cpu() raises (KernelBug for an invalid ``dir``, at the
    first element, before anything changed), TypeError / ValueError for bad arrays or a removed device; an exception at
    element i stops the batch there (``exc.batch_index``). Warnings are emitted once, at the end.
    """
    _dev_live(dev)
    _dma_sync_single_batch(dev, dma_addrs, sizes, dir, True)


def dma_sync_single_for_device_batch(Device dev not None, dma_addrs, sizes, dir):
    """dma_sync_single_for_device_batch(dev, dma_addrs, sizes, dir):
    ``dma_sync_single_for_device(dev, dma_addrs[i], sizes[i], dir)`` for each i, in order.

    Simulator-only batch of include/linux/dma-mapping.h:dma_sync_single_for_device() calls. Returns
    None. Raises what dma_sync_single_for_device() raises (KernelBug for an invalid ``dir``, at the
    first element, before anything changed), TypeError / ValueError for bad arrays or a removed device; an exception at
    element i stops the batch there (``exc.batch_index``). Warnings are emitted once, at the end.
    """
    _dev_live(dev)
    _dma_sync_single_batch(dev, dma_addrs, sizes, dir, False)


cdef object _dma_iova_link_batch(Device dev, DmaIovaState state, object phys, object offsets,
                                 object sizes, object dir, object attrs):
    cdef Machine mach = dev.machine
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = pa.shape[0], i = 0
    cdef object oa = _batch_u64_array(offsets, "offset")
    if oa.shape[0] != n:
        raise ValueError(f"offset has {oa.shape[0]} entries for {n} addresses")
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef int d = _arg_dir(dir)
    cdef unsigned long at = _arg_attrs(attrs)
    cdef const u64 *p = _u64_data(pa)
    cdef const u64 *o = _u64_data(oa)
    _iova_check(dev, d, "dma_iova_link", True)
    cdef object out = _np.empty(n, dtype=_np.int32)
    cdef int *r = <int *>_array_data(out, True)
    machine_enter(mach)
    try:
        while i < n:
            r[i] = c_dma_iova_link(dev, state, p[i], o[i], s[i * ss], d, at)
            i += 1
    except BaseException as e:
        _batch_fail(e, i, out[:i].copy())
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)
    return out


def dma_iova_link_batch(Device dev not None, DmaIovaState state not None, phys, offsets, sizes, dir,
                        attrs=0):
    """dma_iova_link_batch(dev, state, phys, offsets, sizes, dir, attrs=0) -> ndarray[int32]

    ``dma_iova_link(dev, state, phys[i], offsets[i], sizes[i], dir, attrs)`` for each i, in
    order: 0 or -errno per element (a failed element does not stop the batch, as separate
    calls would not; a driver unlinks what it linked). One dma_iova_sync() afterwards syncs
    the IOTLB for all of them.

    Simulator-only batch of drivers/iommu/dma-iommu.c:dma_iova_link() calls. Returns the int32 array
    of results. Raises KernelBug for an invalid ``dir`` or a device without a DMA IOMMU domain
    (before any element), TypeError / ValueError for bad arrays (``offsets`` of another length) or a
    removed device; an exception at element i stops the batch (``exc.batch_index``,
    ``exc.batch_result`` = the results of elements 0..i-1).
    """
    _dev_live(dev)
    return _dma_iova_link_batch(dev, state, phys, offsets, sizes, dir, attrs)


# ---- the two-step IOVA API across a queue of requests (a driver's submission queue) ------------
cdef list _iova_states(object states, str what):
    """``states`` as a list of DmaIovaState (TypeError for another item type); its length is
    checked against the other arguments' by _iova_states_count once they are converted."""
    cdef list out
    cdef object s
    if isinstance(states, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of DmaIovaState, not {type(states).__name__}")
    try:
        out = list(states)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of DmaIovaState, not {type(states).__name__}") from None
    for s in out:
        if type(s) is not DmaIovaState:
            raise TypeError(f"{what} must hold DmaIovaState objects, not {type(s).__name__}")
    return out


cdef inline void _iova_states_count(list sts, Py_ssize_t n, str what) except *:
    """ValueError unless there are n states (one per request)."""
    if len(sts) != n:
        raise ValueError(f"{what} has {len(sts)} entries for {n} requests")


cdef object _dma_iova_alloc_link_sync_batch(Device dev, object states, object phys, object sizes,
                                            object counts, object dir, object attrs):
    cdef Machine mach = dev.machine
    # each argument converted in the signature's order, then checked against the others
    cdef list sts = _iova_states(states, "states")
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = pa.shape[0]
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef object ca = _batch_u64_array(counts, "counts")
    cdef Py_ssize_t nreq = ca.shape[0], j = 0, k, k0 = 0, kend
    cdef int d = _arg_dir(dir)
    cdef unsigned long at = _arg_attrs(attrs)
    _iova_states_count(sts, nreq, "states")
    cdef const u64 *c = _u64_data(ca)
    cdef u64 nseg = 0
    for k in range(nreq):
        nseg += c[k]
    if nseg != <u64>n:
        raise ValueError(f"counts total {nseg} segments for {n} phys entries")
    _ragged_total(s, ss, n)                      # no request's running offset can wrap
    if not valid_dma_direction(d):
        raise KernelBug(f"kernel BUG in dma_iova_link(): invalid DMA direction {d}")
    cdef const u64 *p = _u64_data(pa)
    cdef object ret = _np.zeros(nreq, dtype=_np.int32)
    cdef object mapped = _np.zeros(nreq, dtype=_np.uint64)
    cdef int *r = <int *>_array_data(ret, True)
    cdef u64 *ml = <u64 *>_array_data(mapped, True)
    cdef DmaIovaState st
    cdef u64 total, off
    cdef int e
    machine_enter(mach)
    try:
        while j < nreq:
            st = <DmaIovaState>sts[j]
            kend = k0 + <Py_ssize_t>c[j]
            total = 0
            for k in range(k0, kend):
                total += s[k * ss]
            if not c_dma_iova_try_alloc(dev, st, p[k0] if kend > k0 else 0, total):
                r[j] = 1
            else:
                off = 0
                e = 0
                for k in range(k0, kend):
                    e = c_dma_iova_link(dev, st, p[k], off, s[k * ss], d, at)
                    if e:
                        break
                    off += s[k * ss]
                ml[j] = off
                if e == 0:
                    e = c_dma_iova_sync(dev, st, 0, off)
                r[j] = e
            k0 = kend
            j += 1
    except BaseException as exc:
        _batch_fail(exc, j, (ret[:j].copy(), mapped[:j].copy()))
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)
    return ret, mapped


def dma_iova_alloc_link_sync_batch(Device dev not None, states, phys, sizes, counts, dir, attrs=0):
    """dma_iova_alloc_link_sync_batch(dev, states, phys, sizes, counts, dir, attrs=0) -> (status, mapped)

    Maps a queue of requests with the two-step IOVA API, the way the block layer maps a request
    (block/blk-mq-dma.c: blk_rq_dma_map_iter_start() and blk_dma_map_iova()). Request j owns the
    next counts[j] segments of ``phys`` / ``sizes`` (a scalar or a 1-D array, one size per
    segment) and ``states[j]``; for each request, in order: ``dma_iova_try_alloc(dev,
    states[j], <its first phys>, <its total size>)``; if that succeeds, ``dma_iova_link(dev,
    states[j], phys[k], <running offset>, sizes[k], dir, attrs)`` per segment until the first
    one that fails; if every link succeeded, ``dma_iova_sync(dev, states[j], 0, <total>)``.

    Simulator-only batch of drivers/iommu/dma-iommu.c:dma_iova_try_alloc(), dma_iova_link() and
    dma_iova_sync() calls. Returns a tuple of two arrays with one entry per request: ``status``
    (int32: 0 = allocated, linked and synced; 1 = dma_iova_try_alloc() returned false, nothing
    was allocated, use the regular DMA API; -errno = the first failing dma_iova_link(), no later
    segment linked and no sync, or dma_iova_sync()'s error) and ``mapped`` (uint64: the bytes
    linked, what dma_iova_destroy() must be given). Raises KernelBug for an invalid ``dir``
    (before any request), TypeError / ValueError for bad arrays, ``states`` that are not
    DmaIovaState objects or not one per request, ``counts`` that do not add up to the segments,
    sizes overflowing 64 bits, or a removed device; an exception inside request i stops the batch
    there (``exc.batch_index`` = i, ``exc.batch_result`` = the two arrays for requests 0..i-1;
    request i's state keeps what it allocated and linked). Warnings are emitted once, at the end.
    """
    _dev_live(dev)
    return _dma_iova_alloc_link_sync_batch(dev, states, phys, sizes, counts, dir, attrs)


cdef object _dma_iova_destroy_batch(Device dev, object states, object mapped_lens, object dir,
                                    object attrs):
    cdef Machine mach = dev.machine
    cdef list sts = _iova_states(states, "states")
    cdef object la = _batch_u64_array(mapped_lens, "mapped_lens")
    cdef Py_ssize_t n = la.shape[0], i = 0
    cdef int d = _arg_dir(dir)
    cdef unsigned long at = _arg_attrs(attrs)
    _iova_states_count(sts, n, "states")
    _iova_check(dev, d, "dma_iova_destroy", True)
    cdef const u64 *ml = _u64_data(la)
    machine_enter(mach)
    try:
        while i < n:
            c_dma_iova_destroy(dev, <DmaIovaState>sts[i], ml[i], d, at)
            i += 1
    except BaseException as e:
        _batch_fail(e, i, None)
        raise
    finally:
        machine_exit(mach)
        _iova_flush(mach)


def dma_iova_destroy_batch(Device dev not None, states, mapped_lens, dir, attrs=0):
    """dma_iova_destroy_batch(dev, states, mapped_lens, dir, attrs=0)

    ``dma_iova_destroy(dev, states[i], mapped_lens[i], dir, attrs)`` for each i, in order: the
    completions of a queue of requests mapped with the two-step IOVA API.

    Simulator-only batch of drivers/iommu/dma-iommu.c:dma_iova_destroy() calls. Returns None. Raises
    KernelBug for an invalid ``dir`` or a device without a DMA IOMMU domain (before any element),
    TypeError / ValueError for bad arrays, ``states`` that are not DmaIovaState objects or not one
    per length, or a removed device; an exception at element i stops the batch there
    (``exc.batch_index``). A state dma_iova_destroy() refuses (dma-debug report) is refused the
    same way. Warnings are emitted once, at the end.
    """
    _dev_live(dev)
    _dma_iova_destroy_batch(dev, states, mapped_lens, dir, attrs)


__all__ += ["dma_read_ragged_batch", "dma_write_ragged_batch", "mem_read_batch", "mem_write_batch",
             "dma_sync_single_for_cpu_batch", "dma_sync_single_for_device_batch", "dma_iova_link_batch",
             "dma_iova_alloc_link_sync_batch", "dma_iova_destroy_batch"]


# ---- ring batches that check bytes where they are (dmaphys stress, issue 10 item 4) ----------------
# dma_read_ragged_batch / mem_read_batch followed by a comparison with what the bytes must be,
# without the result array: the device's reads go element by element into one scratch buffer that
# stays in the CPU's cache (the same device_access per element, so the same translations, IOTLB
# work, faults and counters), the CPU's loads are compared in the frames themselves
# (PhysMem.compare: the bytes PhysMem.read would copy; mem_cmp_bytes, memory.pxi, for both).
# Each returns (bytes that differ, offset of the first in ``expected`` or -1).


cdef object _dma_read_compare_ragged_batch(Device dev, object addrs, object sizes, object expected):
    cdef Machine mach = dev.machine
    cdef object aa = _batch_u64_array(addrs, "addrs")
    cdef Py_ssize_t n = aa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "size", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *a = _u64_data(aa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0, biggest = 1, diff = 0
    cdef object e = _ragged_data(expected, total)
    cdef const u8 *v = <const u8 *>_array_data(e, False)
    cdef long long first = -1
    cdef u8 *buf
    for i in range(n):
        if s[i * ss] > biggest:
            biggest = s[i * ss]
    buf = <u8 *>malloc(biggest)
    if buf == NULL:
        raise MemoryError()
    i = 0
    machine_enter(mach)
    try:
        if not mach.dma_debug.enabled:           # device_access takes the GIL for a fault
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        device_access(dev, a[i], buf, s[i * ss], False)
                        diff += mem_cmp_bytes(buf, &v[off], s[i * ss], off, &first)
                    off += s[i * ss]
                    dev.dma_reads += 1
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                device_access(dev, a[i], buf, s[i * ss], False)
                diff += mem_cmp_bytes(buf, &v[off], s[i * ss], off, &first)
            off += s[i * ss]
            dev.dma_reads += 1
            i += 1
    except BaseException as exc:
        _batch_fail(exc, i, (diff, first))
        raise
    finally:
        free(buf)
        machine_exit(mach)
        _iova_flush(mach)
    return (diff, first)


cdef object _mem_read_compare_batch(Machine m, object phys, object sizes, object expected):
    cdef object pa = _batch_u64_array(phys, "phys")
    cdef Py_ssize_t n = pa.shape[0], i = 0
    cdef BatchSizes bs
    cdef object sa = _batch_sizes(sizes, n, "n", &bs)
    cdef const u64 *s = bs.p
    cdef Py_ssize_t ss = bs.stride
    cdef const u64 *p = _u64_data(pa)
    cdef u64 total = _ragged_total(s, ss, n), off = 0, diff = 0
    cdef object e = _ragged_data(expected, total)
    cdef const u8 *v = <const u8 *>_array_data(e, False)
    cdef long long first = -1
    cdef PhysMem mem = m.mem
    machine_enter(m)
    try:
        if not m.dma_debug.enabled:              # cpu_access() does nothing: no GIL
            with nogil:
                _gil_release_mark()
                while i < n:
                    if s[i * ss]:
                        if mem.find_region(p[i], s[i * ss]) < 0:
                            break                # raised below, with the GIL
                        diff += mem.compare(p[i], &v[off], s[i * ss], off, &first)
                    off += s[i * ss]
                    i += 1
                _gil_retake_prepare()
            _gil_retaken_mark()
        while i < n:
            if s[i * ss]:
                if mem.find_region(p[i], s[i * ss]) < 0:
                    raise PhysAddrError(p[i], s[i * ss])
                m.dma_debug.cpu_access(p[i], s[i * ss], False)
                diff += mem.compare(p[i], &v[off], s[i * ss], off, &first)
            off += s[i * ss]
            i += 1
    except BaseException as exc:
        _batch_fail(exc, i, (diff, first))
        raise
    finally:
        machine_exit(m)
        _iova_flush(m)
    return (diff, first)


def dma_read_compare_ragged_batch(Device dev not None, addrs, sizes, expected):
    """dma_read_compare_ragged_batch(dev, addrs, sizes, expected) -> (int, int)

    ``dma_read_ragged_batch(dev, addrs, sizes)`` compared with ``expected`` (1-D uint8 array or
    bytes-like, the elements back to back, sum(sizes) bytes), without making the result array:
    each element is one ``dev.dma_read(addrs[i], sizes[i])``, in order, read into a scratch
    buffer and compared where it lies (the same accesses, translations, IOTLB work, faults and
    counters as the read batch). A DmaFault at element i stops the batch (``exc.batch_index``;
    ``exc.batch_result`` = the comparison of elements 0..i-1).

    Simulator-only (device-side reads checked by the stress job; no kernel call). Returns the
    tuple (number of bytes that differ, offset in ``expected`` of the first one, or -1). Raises
    DmaFault / IommuFault as dma_read() does (a removed device faults), MemoryError when the
    scratch buffer (the largest element) cannot be had, TypeError / ValueError for bad arrays or
    ``expected`` whose length is not sum(sizes); an exception at element i stops the batch as above.
    """
    return _dma_read_compare_ragged_batch(dev, addrs, sizes, expected)


def mem_read_compare_batch(Machine machine not None, phys, sizes, expected):
    """mem_read_compare_batch(machine, phys, sizes, expected) -> (int, int)

    ``mem_read_batch(machine, phys, sizes)`` compared with ``expected`` (1-D uint8 array or
    bytes-like, the elements back to back, sum(sizes) bytes), without making the result array:
    each element is one CPU load ``machine.mem_read(phys[i], sizes[i])`` (dma-debug's check of
    unsynced bounce data included), compared in simulated memory itself. A PhysAddrError at
    element i stops the batch there (``exc.batch_index``; ``exc.batch_result`` = the comparison
    of elements 0..i-1).

    Simulator-only (CPU loads checked by the stress job). Returns the tuple (number of bytes that
    differ, offset in ``expected`` of the first one, or -1). Raises PhysAddrError as above,
    TypeError / ValueError for bad arrays or ``expected`` whose length is not sum(sizes);
    DmaDebugError with ``raise_errors`` set.
    """
    return _mem_read_compare_batch(machine, phys, sizes, expected)


__all__ += ["dma_read_compare_ragged_batch", "mem_read_compare_batch"]
