# The C ABI for simulators written in C/C++ (dmaphys/include/dmaphys.h, docs/EMBEDDING.md).
#
# One named capsule, dmaphys._core._C_API ("dmaphys._core._C_API"), points to a static
# dmaphys_api table: ABI version and struct size first, then function pointers that are
# only ever appended. Each entry
#   - validates its device capsule (NULL, not a capsule, another capsule name, a removed
#     device) and its pointers / sizes before touching state;
#   - calls the same cdef functions the def entry points call (mapping.pxi c_dma_*,
#     dma_iommu.pxi c_dma_iova_*, device.pxi device_access) and flushes queued warnings
#     afterwards like a def entry point;
#   - turns every Python exception into a dmaphys_error record and a DMAPHYS_E_* return
#     value, and clears it: nothing leaves a Python exception set.
#
# The GIL ("GIL-free entries" below): dma_read / dma_write / translate / dma_map_phys /
# dma_unmap_phys / dma_mapping_error run their common path in C without the GIL when the
# calling thread may touch the machine without it: it owns the machine (machine_enter, the
# lock batch calls hold: machine.pxi "Threads"), or it holds the GIL while no other thread
# owns the machine (then no per-call entry point can be half-way through: they hold the GIL
# from start to end). Everything else, and every case where Python must see something (a
# fault, dma-debug, tracing, a warning, a bad argument), runs with the GIL (``with gil``:
# PyGILState_Ensure), after machine_guard() so it waits while another thread owns the machine.
from cpython.pycapsule cimport (PyCapsule_New, PyCapsule_GetPointer, PyCapsule_CheckExact,
                                PyCapsule_GetName, PyCapsule_Destructor,
                                PyCapsule_GetContext, PyCapsule_SetContext)
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.exc cimport PyErr_SetObject, PyErr_SetString
from dmaphys.capi cimport (dmaphys_api, dmaphys_error, dmaphys_scatterlist, dmaphys_iova_state,
                           dmaphys_iotlb_entry, dmaphys_notifier_fn, DMAPHYS_ABI_VERSION,
                           DMAPHYS_E_BADARG, DMAPHYS_E_NODEV, DMAPHYS_E_FAULT, DMAPHYS_E_BUG,
                           DMAPHYS_E_PYTHON, DMAPHYS_E_NOTSUPP, DMAPHYS_ERR_NONE, DMAPHYS_ERR_BADARG,
                           DMAPHYS_ERR_NODEV, DMAPHYS_ERR_DMA_FAULT, DMAPHYS_ERR_IOMMU_FAULT,
                           DMAPHYS_ERR_PHYS, DMAPHYS_ERR_BUG, DMAPHYS_ERR_PYTHON, DMAPHYS_ERR_NOTSUPP)

from cpython.exc cimport PyErr_Occurred, PyErr_Fetch, PyErr_NormalizeException
from cpython.ref cimport Py_XDECREF

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from "Python.h" nogil:
    ctypedef struct PyThreadState:
        pass
    ctypedef int _capi_gilstate "PyGILState_STATE"
    int _capi_gil_held "PyGILState_Check"()
    _capi_gilstate _capi_gil_ensure "PyGILState_Ensure"()
    void _capi_gil_release "PyGILState_Release"(_capi_gilstate)
    PyThreadState *PyGILState_GetThisThreadState()
    PyThreadState *PyEval_SaveThread()
    _capi_gilstate _CAPI_GIL_LOCKED "PyGILState_LOCKED"
    _capi_gilstate _CAPI_GIL_UNLOCKED "PyGILState_UNLOCKED"

cdef extern from *:
    """
    /* machine_enter made this thread's Python thread state (a thread Python never saw) and
       keeps it until the thread's last machine_exit; machines the thread owns through the ABI */
    static thread_local int dmaphys_capi_tstate_made = 0;
    static thread_local int dmaphys_capi_owned = 0;

    /* The GIL-free entries' capsule check reads the capsule's fields directly when the running
       CPython's PyCapsule has the layout it has had since 3.1 (checked once at import on a
       capsule made for the purpose, size included); else through PyCapsule_GetName/Context. */
    typedef struct {
        PyObject_HEAD
        void *pointer;
        const char *name;
        void *context;
        PyCapsule_Destructor destructor;
    } dmaphys_capsule_mirror;
    static int dmaphys_capi_mirror_ok = 0;

    static int dmaphys_capi_mirror_check(void)
    {
        static const char nm[] = "dmaphys.layout-check";
        static int x, y;
        PyObject *c = PyCapsule_New(&x, nm, NULL);
        dmaphys_capsule_mirror *m = (dmaphys_capsule_mirror *)c;
        if (c == NULL || PyCapsule_SetContext(c, &y) < 0) {
            PyErr_Clear();
            Py_XDECREF(c);
            return 0;
        }
        dmaphys_capi_mirror_ok = Py_TYPE(c)->tp_basicsize == (Py_ssize_t)sizeof(dmaphys_capsule_mirror)
            && m->pointer == (void *)&x && m->name == nm && m->context == (void *)&y;
        Py_DECREF(c);
        return dmaphys_capi_mirror_ok;
    }

    /* the context (the Device) of a capsule named exactly `name` (that pointer), else NULL */
    static inline void *dmaphys_capi_dev_of(PyObject *cap, const char *name)
    {
        if (cap == NULL || !PyCapsule_CheckExact(cap))
            return NULL;
        if (dmaphys_capi_mirror_ok) {
            dmaphys_capsule_mirror *m = (dmaphys_capsule_mirror *)cap;
            return m->name == name ? m->context : NULL;
        }
        return PyCapsule_GetName(cap) == name ? PyCapsule_GetContext(cap) : NULL;
    }

    /* PyThread_get_thread_ident() without the call: it is pthread_self() on POSIX */
    #if defined(__linux__) || defined(__APPLE__)
    #include <pthread.h>
    static inline unsigned long dmaphys_capi_tid(void) { return (unsigned long)pthread_self(); }
    #else
    static inline unsigned long dmaphys_capi_tid(void) { return PyThread_get_thread_ident(); }
    #endif
    """
    int _capi_tstate_made "dmaphys_capi_tstate_made"
    int _capi_owned "dmaphys_capi_owned"
    int _capi_mirror_check "dmaphys_capi_mirror_check"()
    void *_capi_dev_of "dmaphys_capi_dev_of"(PyObject *cap, const char *name) nogil
    unsigned long _capi_tid "dmaphys_capi_tid"() nogil

# device_access / device_translate / dma_unmap_phys_fast called without Cython's exception
# check: a GIL-free entry looks at the -1 itself and converts the exception with the GIL
ctypedef int (*_capi_access_fn)(Device dev, u64 addr, u8 *buf, u64 n, bint write) noexcept nogil
ctypedef int (*_capi_translate_fn)(Device dev, u64 addr, bint write, iommu_tlb_entry *out) noexcept nogil
ctypedef int (*_capi_unmap_fn)(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) noexcept nogil

import builtins as _builtins
import dmaphys.errors as _errors_mod

# One name pointer for every device capsule dmaphys makes: a capsule is accepted only when its
# name is this very pointer, so a foreign capsule that happens to share the text is refused too.
cdef const char *_capi_dev_name = "dmaphys.device"
cdef const char *_capi_table_name = "dmaphys._core._C_API"


cdef void _capi_dev_capsule_free(object cap) noexcept:
    cdef void *p = PyCapsule_GetPointer(cap, _capi_dev_name)
    if p != NULL:
        Py_DECREF(<object>p)


cdef object _device_capsule(Device dev):
    """dev.capsule: a new capsule holding a reference to dev (released with the capsule).

    The device is both the pointer and the context: _capi_device() reads the context, which
    skips PyCapsule_GetPointer's name strcmp (the name pointer itself is compared instead).
    """
    cap = PyCapsule_New(<void *>dev, _capi_dev_name, <PyCapsule_Destructor>_capi_dev_capsule_free)
    Py_INCREF(dev)
    PyCapsule_SetContext(cap, <void *>dev)
    return cap


# ---- the error record ------------------------------------------------------------------------
cdef void _capi_str(char *dst, size_t cap, object text) noexcept:
    cdef bytes b
    cdef size_t n
    try:
        b = str(text).encode("utf-8", "replace")
    except BaseException:
        b = b"<unprintable>"
    n = len(b)
    if n > cap - 1:
        n = cap - 1
    memcpy(dst, <const char *>b, n)
    dst[n] = 0


cdef void _capi_reset(dmaphys_error *err, int kind) noexcept:
    err.kind = kind
    err.access = 0
    err.addr = 0
    err.size = 0
    err.completed = 0
    err.result = 0
    err.type[0] = 0
    err.device[0] = 0
    err.reason[0] = 0


cdef int _capi_fail(dmaphys_error *err, int code, int kind, str reason) noexcept:
    """An ABI-level failure found before any state was touched (no Python exception involved)."""
    if err != NULL:
        _capi_reset(err, kind)
        _capi_str(err.reason, sizeof(err.reason), reason)
    return code


cdef int _capi_exc(dmaphys_error *err, object e) noexcept:
    """Record the Python exception e (being handled; the caller's except clause clears it)."""
    cdef int kind, code
    if isinstance(e, IommuFault):
        kind, code = DMAPHYS_ERR_IOMMU_FAULT, DMAPHYS_E_FAULT
    elif isinstance(e, DmaFault):
        kind, code = DMAPHYS_ERR_DMA_FAULT, DMAPHYS_E_FAULT
    elif isinstance(e, PhysAddrError):
        kind, code = DMAPHYS_ERR_PHYS, DMAPHYS_E_FAULT
    elif isinstance(e, KernelBug):
        kind, code = DMAPHYS_ERR_BUG, DMAPHYS_E_BUG
    else:
        kind, code = DMAPHYS_ERR_PYTHON, DMAPHYS_E_PYTHON
    if err == NULL:
        return code
    _capi_reset(err, kind)
    _capi_str(err.type, sizeof(err.type), type(e).__name__)
    try:
        if kind == DMAPHYS_ERR_DMA_FAULT or kind == DMAPHYS_ERR_IOMMU_FAULT:
            err.addr = e.addr
            err.size = e.size
            err.access = 1 if e.access == "write" else 0
            _capi_str(err.device, sizeof(err.device), e.device)
            _capi_str(err.reason, sizeof(err.reason), e.reason)
        elif kind == DMAPHYS_ERR_PHYS:
            err.addr = e.phys
            err.size = e.size
            _capi_str(err.reason, sizeof(err.reason), e.reason)
        else:
            _capi_str(err.reason, sizeof(err.reason), e)
    except BaseException:
        _capi_str(err.reason, sizeof(err.reason), "<exception without the usual fields>")
    return code


cdef inline int _capi_flush(Machine m, dmaphys_error *err, u64 result) noexcept:
    """flush_warnings() of a def entry point; 0, or a DMAPHYS_E_* code when it raised (recorded)."""
    if not m._warn_queue and not m.dma_debug._pending:
        return 0
    return _capi_flush_slow(m, err, result)


cdef int _capi_flush_slow(Machine m, dmaphys_error *err, u64 result) noexcept:
    cdef int code
    try:
        m.flush_warnings()
    except BaseException as e:
        code = _capi_exc(err, e)
        if err != NULL:
            err.completed = 1
            err.result = result
        return code
    return 0


cdef void _capi_flush_quiet(Machine m) noexcept:
    """After a failed operation: emit what it queued; a second exception from that is dropped."""
    try:
        if m._warn_queue or m.dma_debug._pending:
            m.flush_warnings()
    except BaseException:
        pass


cdef Device _capi_device(PyObject *cap, dmaphys_error *err, int *code):
    """The live Device a "dmaphys.device" capsule holds, or None with *code / err set."""
    try:
        return _capi_device_checked(cap, err, code)
    except BaseException as e:                     # (only MemoryError building a message)
        code[0] = _capi_exc(err, e)
        return None


cdef inline Device _capi_device_checked(PyObject *cap, dmaphys_error *err, int *code):
    cdef object o
    cdef Device dev
    if cap == NULL:
        code[0] = _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "dev is NULL")
        return None
    o = <object>cap
    if not PyCapsule_CheckExact(o) or PyCapsule_GetName(o) != _capi_dev_name:
        code[0] = _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG,
                             f"dev is a {type(o).__name__}, not a dmaphys.device capsule (dev.capsule)")
        return None
    dev = <Device>PyCapsule_GetContext(o)
    if dev.removed:
        code[0] = _capi_fail(err, DMAPHYS_E_NODEV, DMAPHYS_ERR_NODEV,
                             f"device {dev.name!r} was removed from its machine")
        return None
    machine_guard(dev.machine)                     # wait while another thread owns the machine
    if err != NULL:
        err.kind = DMAPHYS_ERR_NONE
    return dev


# ---- the GIL-free common paths --------------------------------------------------------------
cdef inline PyObject *_capi_fast_dev(PyObject *cap) noexcept nogil:
    """The Device of cap when the calling thread may run a common path on it without the GIL,
    else NULL (the entry then runs its slow path with the GIL, which also reports bad input).

    cap must be a live "dmaphys.device" capsule (checked without the GIL: the caller keeps it
    alive), dma-debug off (nothing Python must see on a fault-free access), and the thread
    owns the machine (machine_enter) or holds the GIL while no other thread owns it: per-call
    entry points hold the GIL from start to end and batch calls and owners set _busy_thread
    while holding it, so neither can be half-way through an operation on this machine."""
    cdef PyObject *d = <PyObject *>_capi_dev_of(cap, _capi_dev_name)
    if d == NULL or not _capi_fast_ok(<Device>d):
        return NULL
    return d


cdef inline bint _capi_fast_ok(Device dev) noexcept nogil:
    cdef unsigned long busy = dev.machine._busy_thread
    if dev.removed or dev.machine.dma_debug.enabled:
        return False
    if busy != 0:
        return busy == _capi_tid()
    return _capi_gil_held() != 0


cdef int _capi_pending(Device dev, dmaphys_error *err) noexcept with gil:
    """With the GIL: the exception a GIL-free call left set (a fault) into err; cleared."""
    cdef PyObject *t = NULL
    cdef PyObject *v = NULL
    cdef PyObject *tb = NULL
    cdef object e
    if PyErr_Occurred() == NULL:                   # (cannot happen: the thread has a thread state)
        return _capi_fail(err, DMAPHYS_E_PYTHON, DMAPHYS_ERR_PYTHON,
                          "dmaphys: a GIL-free call failed without an exception")
    PyErr_Fetch(&t, &v, &tb)
    PyErr_NormalizeException(&t, &v, &tb)
    e = <object>v if v != NULL else <object>t
    Py_XDECREF(t)
    Py_XDECREF(v)
    Py_XDECREF(tb)
    _capi_flush_quiet(dev.machine)
    return _capi_exc(err, e)


cdef inline int _capi_ok(dmaphys_error *err) noexcept nogil:
    if err != NULL:
        err.kind = DMAPHYS_ERR_NONE
    return 0


# ---- kernel/dma/mapping.c: single mappings ------------------------------------------------
cdef u64 _capi_map(PyObject *cap, u64 phys, u64 size, int dir, unsigned long attrs,
                   dmaphys_error *err, bint resource) noexcept with gil:
    cdef int code = 0
    cdef u64 addr
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return DMA_MAPPING_ERROR
    try:
        if resource:
            addr = c_dma_map_resource(dev, phys, size, dir, attrs)
        else:
            addr = c_dma_map_phys(dev, phys, size, dir, attrs)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        _capi_exc(err, e)
        return DMA_MAPPING_ERROR
    if _capi_flush(dev.machine, err, addr):
        return DMA_MAPPING_ERROR
    return addr


cdef int _capi_unmap(PyObject *cap, u64 addr, u64 size, int dir, unsigned long attrs,
                     dmaphys_error *err, bint resource) noexcept with gil:
    cdef int code = 0
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    try:
        if resource:
            c_dma_unmap_resource(dev, addr, size, dir, attrs)
        else:
            c_dma_unmap_phys(dev, addr, size, dir, attrs)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    return _capi_flush(dev.machine, err, 0)


cdef u64 capi_dma_map_phys(PyObject *dev, u64 phys, u64 size, int dir, unsigned long attrs,
                           dmaphys_error *err) noexcept nogil:
    # GIL-free: mapping.pxi dma_map_phys_fast (dma-direct without bouncing, dma-iommu rcache hit);
    # it changes nothing where it declines, and the full path runs with the GIL
    cdef u64 addr
    cdef PyObject *d = _capi_fast_dev(dev)
    if d != NULL and dma_map_phys_fast(<Device>d, phys, size, dir, attrs, &addr):
        _capi_ok(err)
        return addr
    return _capi_map(dev, phys, size, dir, attrs, err, False)


cdef int capi_dma_unmap_phys(PyObject *dev, u64 addr, u64 size, int dir, unsigned long attrs,
                             dmaphys_error *err) noexcept nogil:
    # GIL-free: mapping.pxi dma_unmap_phys_fast (declines, changing nothing, as map's does)
    cdef _capi_unmap_fn fast = <_capi_unmap_fn>dma_unmap_phys_fast
    cdef PyObject *d = _capi_fast_dev(dev)
    cdef int r
    if d != NULL:
        r = fast(<Device>d, addr, size, dir, attrs)
        if r > 0:
            return _capi_ok(err)
        if r < 0:
            return _capi_pending(<Device>d, err)
    return _capi_unmap(dev, addr, size, dir, attrs, err, False)


cdef u64 capi_dma_map_resource(PyObject *dev, u64 phys_addr, u64 size, int dir, unsigned long attrs,
                               dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_map(dev, phys_addr, size, dir, attrs, err, True)


cdef int capi_dma_unmap_resource(PyObject *dev, u64 addr, u64 size, int dir, unsigned long attrs,
                                 dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_unmap(dev, addr, size, dir, attrs, err, True)


cdef int _capi_mapping_error(PyObject *cap, u64 dma_addr, dmaphys_error *err) noexcept with gil:
    cdef int code = 0, ret
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    try:
        ret = c_dma_mapping_error(dev, dma_addr)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    code = _capi_flush(dev.machine, err, <u64>ret)
    return code if code else ret


cdef int capi_dma_mapping_error(PyObject *dev, u64 dma_addr, dmaphys_error *err) noexcept nogil:
    # GIL-free with dma-debug off: debug_dma_mapping_error() does nothing then
    if _capi_fast_dev(dev) != NULL:
        _capi_ok(err)
        return -ENOMEM if dma_addr == DMA_MAPPING_ERROR else 0
    return _capi_mapping_error(dev, dma_addr, err)


# ---- scatter-gather -----------------------------------------------------------------------
cdef ScatterList _capi_sg_in(dmaphys_scatterlist *sg, int nents, dmaphys_error *err, int *code):
    """A ScatterList copy of the caller's array (with the dma_* fields map_sg filled)."""
    cdef ScatterList sl
    cdef scatterlist *s
    cdef u64 phys
    cdef int i
    if sg == NULL:
        code[0] = _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "sg is NULL")
        return None
    if nents <= 0:
        code[0] = _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, f"nents {nents} must be > 0")
        return None
    for i in range(nents):
        phys = sg[i].page_phys + sg[i].offset
        if sg[i].length == 0 or phys < sg[i].page_phys or phys + sg[i].length - 1 < phys:
            code[0] = _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG,
                                 f"sg[{i}]: length must be 1..2^32-1 and the entry must not wrap")
            return None
    sl = ScatterList([(sg[i].page_phys + sg[i].offset, sg[i].length) for i in range(nents)])
    for i in range(nents):                         # what map_sg wrote (unmap / sync read it)
        s = &sl.sg[i]
        s.dma_address = sg[i].dma_address
        s.dma_length = sg[i].dma_length
        s.dma_flags = sg[i].dma_flags
    return sl


cdef void _capi_sg_out(ScatterList sl, dmaphys_scatterlist *sg, int nents) noexcept:
    cdef int i
    for i in range(nents):
        sg[i].dma_address = sl.sg[i].dma_address
        sg[i].dma_length = <u32>sl.sg[i].dma_length
        sg[i].dma_flags = sl.sg[i].dma_flags


cdef enum:
    _CAPI_SG_MAP = 0
    _CAPI_SG_UNMAP = 1
    _CAPI_SG_SYNC_CPU = 2
    _CAPI_SG_SYNC_DEV = 3


cdef int _capi_sg(PyObject *cap, dmaphys_scatterlist *sg, int nents, int dir, unsigned long attrs,
                  dmaphys_error *err, int op) noexcept:
    cdef int code = 0, ret = 0, i
    cdef Device dev = _capi_device(cap, err, &code)
    cdef ScatterList sl
    if dev is None:
        return code
    try:
        sl = _capi_sg_in(sg, nents, err, &code)
    except BaseException as e:
        return _capi_exc(err, e)
    if sl is None:
        return code
    try:
        if op == _CAPI_SG_MAP:
            for i in range(nents):                       # a fresh list: map_sg fills these
                sl.sg[i].dma_address = 0
                sl.sg[i].dma_length = 0
                sl.sg[i].dma_flags = 0
            ret = c_dma_map_sg_attrs(dev, sl, nents, dir, attrs)
        elif op == _CAPI_SG_UNMAP:
            c_dma_unmap_sg_attrs(dev, sl, nents, dir, attrs)
        elif op == _CAPI_SG_SYNC_CPU:
            c_dma_sync_sg_for_cpu(dev, sl, nents, dir)
        else:
            c_dma_sync_sg_for_device(dev, sl, nents, dir)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    _capi_sg_out(sl, sg, nents)
    code = _capi_flush(dev.machine, err, <u64>ret)
    return code if code else ret


cdef int capi_dma_map_sg_attrs(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                               unsigned long attrs, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sg(dev, sg, nents, dir, attrs, err, _CAPI_SG_MAP)


cdef int capi_dma_unmap_sg_attrs(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                                 unsigned long attrs, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sg(dev, sg, nents, dir, attrs, err, _CAPI_SG_UNMAP)


cdef int capi_dma_sync_sg_for_cpu(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                                  dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sg(dev, sg, nelems, dir, 0, err, _CAPI_SG_SYNC_CPU)


cdef int capi_dma_sync_sg_for_device(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                                     dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sg(dev, sg, nelems, dir, 0, err, _CAPI_SG_SYNC_DEV)


# ---- single syncs -------------------------------------------------------------------------
cdef int _capi_sync_single(PyObject *cap, u64 addr, u64 size, int dir, dmaphys_error *err,
                           bint for_cpu) noexcept:
    cdef int code = 0
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    try:
        if for_cpu:
            c_dma_sync_single_for_cpu(dev, addr, size, dir)
        else:
            c_dma_sync_single_for_device(dev, addr, size, dir)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    return _capi_flush(dev.machine, err, 0)


cdef int capi_dma_sync_single_for_cpu(PyObject *dev, u64 addr, u64 size, int dir,
                                      dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sync_single(dev, addr, size, dir, err, True)


cdef int capi_dma_sync_single_for_device(PyObject *dev, u64 addr, u64 size, int dir,
                                         dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_sync_single(dev, addr, size, dir, err, False)


# ---- drivers/iommu/dma-iommu.c: the two-step IOVA API ----------------------------------------
cdef enum:
    _CAPI_IOVA_TRY_ALLOC = 0
    _CAPI_IOVA_LINK = 1
    _CAPI_IOVA_SYNC = 2
    _CAPI_IOVA_UNLINK = 3
    _CAPI_IOVA_DESTROY = 4
    _CAPI_IOVA_FREE = 5


# The DmaIovaState behind each C struct dma_iova_state, keyed by the struct's address: it carries
# what dma_iova_try_alloc() recorded (owner device, allocated addr/size) so the misuse checks
# of the two-step API (dma-debug reports, refusals) see a C caller exactly as a Python one. The
# C struct stays authoritative for addr/__size (copied in before, out after every call), so a C
# caller that changes it is caught like a Python caller changing state.addr.
cdef dict _capi_iova_states = {}


cdef DmaIovaState _capi_iova_state(dmaphys_iova_state *state, bint fresh):
    cdef object key = <size_t>state
    cdef DmaIovaState st = None if fresh else _capi_iova_states.get(key)
    if st is None:                                 # try_alloc, or a state dmaphys never saw
        st = DmaIovaState(state.addr, state.size)
        _capi_iova_states[key] = st
    else:
        st.addr = state.addr
        st._size = state.size
    return st


cdef int _capi_iova(PyObject *cap, dmaphys_iova_state *state, u64 phys, u64 offset, u64 size,
                    int dir, unsigned long attrs, dmaphys_error *err, int op) noexcept:
    """The c_dma_iova_* entry points of dma_iommu.pxi on a C-owned struct dma_iova_state."""
    cdef int code = 0, ret = 0
    cdef Device dev = _capi_device(cap, err, &code)
    cdef DmaIovaState st
    if dev is None:
        return code
    if state == NULL:
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "state is NULL")
    try:
        st = _capi_iova_state(state, op == _CAPI_IOVA_TRY_ALLOC)
        if op == _CAPI_IOVA_TRY_ALLOC:
            ret = 1 if c_dma_iova_try_alloc(dev, st, phys, size) else 0
        elif op == _CAPI_IOVA_LINK:
            ret = c_dma_iova_link(dev, st, phys, offset, size, dir, attrs)
        elif op == _CAPI_IOVA_SYNC:
            ret = c_dma_iova_sync(dev, st, offset, size)
        elif op == _CAPI_IOVA_UNLINK:
            c_dma_iova_unlink(dev, st, offset, size, dir, attrs)
        elif op == _CAPI_IOVA_DESTROY:
            c_dma_iova_destroy(dev, st, size, dir, attrs)
        else:
            c_dma_iova_free(dev, st)
    except BaseException as e:
        if st is not None:
            state.addr = st.addr
            state.size = st._size
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    state.addr = st.addr
    state.size = st._size
    if (op == _CAPI_IOVA_TRY_ALLOC and not ret) or op == _CAPI_IOVA_DESTROY or op == _CAPI_IOVA_FREE:
        _capi_iova_states.pop(<size_t>state, None)   # nothing allocated (any more): forget it
    code = _capi_flush(dev.machine, err, <u64>ret)
    return code if code else ret


cdef int capi_dma_iova_try_alloc(PyObject *dev, dmaphys_iova_state *state, u64 phys, u64 size,
                                 dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, phys, 0, size, 0, 0, err, _CAPI_IOVA_TRY_ALLOC)


cdef int capi_dma_iova_link(PyObject *dev, dmaphys_iova_state *state, u64 phys, u64 offset, u64 size,
                            int dir, unsigned long attrs, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, phys, offset, size, dir, attrs, err, _CAPI_IOVA_LINK)


cdef int capi_dma_iova_sync(PyObject *dev, dmaphys_iova_state *state, u64 offset, u64 size,
                            dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, 0, offset, size, 0, 0, err, _CAPI_IOVA_SYNC)


cdef int capi_dma_iova_unlink(PyObject *dev, dmaphys_iova_state *state, u64 offset, u64 size,
                              int dir, unsigned long attrs, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, 0, offset, size, dir, attrs, err, _CAPI_IOVA_UNLINK)


cdef int capi_dma_iova_destroy(PyObject *dev, dmaphys_iova_state *state, u64 mapped_len, int dir,
                               unsigned long attrs, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, 0, 0, mapped_len, dir, attrs, err, _CAPI_IOVA_DESTROY)


cdef int capi_dma_iova_free(PyObject *dev, dmaphys_iova_state *state, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova(dev, state, 0, 0, 0, 0, 0, err, _CAPI_IOVA_FREE)


# ---- the device on its bus ----------------------------------------------------------------
cdef int _capi_access(PyObject *cap, u64 addr, u8 *buf, u64 n, bint write, dmaphys_error *err) noexcept with gil:
    """Device.dma_read / dma_write without the Python objects: device_access() into buf."""
    cdef int code = 0
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if n:
        if buf == NULL:
            return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "buf is NULL")
        try:
            device_access(dev, addr, buf, n, write)
        except BaseException as e:
            _capi_flush_quiet(dev.machine)
            return _capi_exc(err, e)
    if write:
        dev.dma_writes += 1
    else:
        dev.dma_reads += 1
    return _capi_flush(dev.machine, err, 0)


cdef inline int _capi_access_nogil(Device dev, u64 addr, u8 *buf, u64 n, bint write,
                                   dmaphys_error *err) noexcept nogil:
    """_capi_access() on the GIL-free path: device_access() takes the GIL itself for a fault
    (recorded in iommu.faults / dev.faults there), which is then converted with the GIL."""
    cdef _capi_access_fn access = <_capi_access_fn>device_access_full
    if n and not device_access_fast(dev, addr, buf, n, write) and access(dev, addr, buf, n, write) < 0:
        return _capi_pending(dev, err)
    if write:
        dev.dma_writes += 1
    else:
        dev.dma_reads += 1
    return _capi_ok(err)


cdef int capi_dma_read(PyObject *dev, u64 addr, void *buf, u64 n, dmaphys_error *err) noexcept nogil:
    cdef PyObject *d = _capi_fast_dev(dev)
    if d != NULL and buf != NULL:
        return _capi_access_nogil(<Device>d, addr, <u8 *>buf, n, False, err)
    return _capi_access(dev, addr, <u8 *>buf, n, False, err)


cdef int capi_dma_write(PyObject *dev, u64 addr, const void *buf, u64 n, dmaphys_error *err) noexcept nogil:
    cdef PyObject *d = _capi_fast_dev(dev)
    if d != NULL and buf != NULL:
        return _capi_access_nogil(<Device>d, addr, <u8 *>buf, n, True, err)
    return _capi_access(dev, addr, <u8 *>buf, n, True, err)


# ---- translations -------------------------------------------------------------------------
cdef u64 _capi_iova_to_phys(PyObject *cap, u64 iova, dmaphys_error *err) noexcept:
    cdef int code = 0
    cdef u64 phys
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return 0
    if dev.domain is not None:
        return iommu_iova_to_phys_c(<IommuDomain>dev.domain, iova)
    phys = dma_to_phys(dev, iova)
    return 0 if phys == U64_MAX else phys


cdef u64 capi_iova_to_phys(PyObject *dev, u64 iova, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_iova_to_phys(dev, iova, err)


cdef int _capi_translate(PyObject *cap, u64 addr, int write, dmaphys_iotlb_entry *entry,
                         dmaphys_error *err) noexcept with gil:
    """dev.translate() (iommu.pxi device_translate) into a C-owned IOMMUTLBEntry."""
    cdef int code = 0
    cdef iommu_tlb_entry e
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if entry == NULL:
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "entry is NULL")
    try:
        device_translate(dev, addr, write != 0, &e)
    except BaseException as exc:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, exc)
    entry.iova = e.iova
    entry.translated_addr = e.translated_addr
    entry.addr_mask = e.addr_mask
    entry.perm = e.perm
    return _capi_flush(dev.machine, err, 0)


cdef int capi_translate(PyObject *dev, u64 addr, int write, dmaphys_iotlb_entry *entry,
                        dmaphys_error *err) noexcept nogil:
    # GIL-free: device_translate() takes the GIL itself for a fault, as device_access does
    cdef _capi_translate_fn xlate = <_capi_translate_fn>device_translate
    cdef iommu_tlb_entry e
    cdef PyObject *d = _capi_fast_dev(dev)
    if d != NULL and entry != NULL:
        if xlate(<Device>d, addr, write != 0, &e) < 0:
            return _capi_pending(<Device>d, err)
        entry.iova = e.iova
        entry.translated_addr = e.translated_addr
        entry.addr_mask = e.addr_mask
        entry.perm = e.perm
        return _capi_ok(err)
    return _capi_translate(dev, addr, write, entry, err)


cdef int _capi_no_domain(Device dev, dmaphys_error *err) noexcept:
    """The failure of an entry that needs an IOMMU domain on a device without one."""
    return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG,
                      f"device {dev.name!r} is not behind an IOMMU (no domain)")


cdef int _capi_notifier(PyObject *cap, dmaphys_notifier_fn fn, void *opaque, dmaphys_error *err,
                        bint register) noexcept:
    """Iommu.register_c_notifier / unregister_c_notifier of the IOMMU the device sits behind."""
    cdef int code = 0
    cdef Iommu mmu
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if fn == NULL:
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "fn is NULL")
    if dev.domain is None:
        return _capi_no_domain(dev, err)
    mmu = (<IommuDomain>dev.domain).iommu
    try:
        if register:
            return mmu.register_c_notifier(<iommu_notifier_fn>fn, opaque)
        return mmu.unregister_c_notifier(<iommu_notifier_fn>fn, opaque)
    except BaseException as exc:
        return _capi_exc(err, exc)


cdef int capi_register_notifier(PyObject *dev, dmaphys_notifier_fn fn, void *opaque,
                                dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_notifier(dev, fn, opaque, err, True)


cdef int capi_unregister_notifier(PyObject *dev, dmaphys_notifier_fn fn, void *opaque,
                                  dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_notifier(dev, fn, opaque, err, False)


cdef int _capi_domain_id(PyObject *cap, u32 *id, dmaphys_error *err) noexcept:
    cdef int code = 0
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if id == NULL:
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "id is NULL")
    if dev.domain is None:
        return _capi_no_domain(dev, err)
    id[0] = (<IommuDomain>dev.domain).id
    return 0


cdef int capi_domain_id(PyObject *dev, u32 *id, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_domain_id(dev, id, err)


# ---- IOMMU dirty tracking, as iommufd drives it (ABI 1.2) ------------------------------------
cdef int _capi_set_dirty_tracking(PyObject *cap, int enable, dmaphys_error *err) noexcept:
    cdef int code = 0, ret
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if dev.domain is None:
        return _capi_no_domain(dev, err)
    try:
        ret = (<IommuDomain>dev.domain).set_dirty_tracking(enable != 0)
    except BaseException as e:
        return _capi_exc(err, e)
    return ret


cdef int capi_set_dirty_tracking(PyObject *dev, int enable, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_set_dirty_tracking(dev, enable, err)


cdef int _capi_dirty_range_check(IommuDomain d, u64 iova, u64 length, u64 page_size) noexcept:
    """iommufd_check_iova_range() for an IOAS holding this one domain (iopt->iova_alignment: the
    domain's smallest page size, iopt_table_add_domain()): 0, -EOVERFLOW or -EINVAL."""
    cdef u64 align = d.pgsize_bitmap & (~d.pgsize_bitmap + 1) if d.pgsize_bitmap else 1
    cdef u64 last
    if length - 1 > U64_MAX - iova:             # check_add_overflow(iova, length - 1)
        return -EOVERFLOW
    last = iova + (length - 1)
    if (iova & (align - 1)) or ((last + 1) & (align - 1)):
        return -EINVAL
    if page_size == 0:
        return -EINVAL
    if (iova & (page_size - 1)) or ((last + 1) & (page_size - 1)):
        return -EINVAL
    return 0


cdef void _capi_bitmap_set(u64 *bitmap, u64 base, u64 nbits, int pgshift, u64 iova, u64 length) noexcept:
    """iova_bitmap_set(): the bits of the pages [iova, iova + length) touches, kept to the
    bitmap's own nbits bits (a record may run past the requested range: a block leaf)."""
    cdef u64 first, last, end = iova + length - 1 if length else iova
    if length == 0 or end < base:
        return
    first = (iova - base) >> pgshift if iova > base else 0
    last = (end - base) >> pgshift
    if last >= nbits:
        last = nbits - 1
    while first <= last:
        bitmap[first >> 6] |= (<u64>1) << (first & 63)
        first += 1


cdef int _capi_read_and_clear_dirty(PyObject *cap, u32 flags, u64 iova, u64 length, u64 page_size,
                                    u64 *bitmap, dmaphys_error *err) noexcept:
    cdef int code = 0, ret
    cdef Device dev = _capi_device(cap, err, &code)
    cdef IommuDomain d
    cdef list rec = []
    cdef int pgshift = 0
    cdef u64 nbits
    if dev is None:
        return code
    if dev.domain is None:
        return _capi_no_domain(dev, err)
    d = <IommuDomain>dev.domain
    if flags & ~(<u32>IOMMU_DIRTY_NO_CLEAR):   # iommufd_hwpt_get_dirty_bitmap()
        return -EOPNOTSUPP
    ret = _capi_dirty_range_check(d, iova, length, page_size)
    if ret:
        return ret
    if length == 0:                            # (iova 0: nothing to walk, nothing to record)
        return 0
    if bitmap == NULL:
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG, "bitmap is NULL")
    while not ((page_size >> pgshift) & 1):   # iova_bitmap_alloc(): pgshift = __ffs(page_size)
        pgshift += 1
    nbits = ((length - 1) >> pgshift) + 1
    try:
        ret = iommu_read_and_clear_dirty_c(d, iova, length, flags, rec)
        for r_iova, r_len in rec:
            _capi_bitmap_set(bitmap, iova, nbits, pgshift, r_iova, r_len)
    except BaseException as e:
        _capi_flush_quiet(dev.machine)
        return _capi_exc(err, e)
    code = _capi_flush(dev.machine, err, <u64>ret)
    return code if code else ret


cdef int capi_read_and_clear_dirty(PyObject *dev, u32 flags, u64 iova, u64 length, u64 page_size,
                                   u64 *bitmap, dmaphys_error *err) noexcept nogil:
    with gil:
        return _capi_read_and_clear_dirty(dev, flags, iova, length, page_size, bitmap, err)


# ---- helpers ------------------------------------------------------------------------------
cdef object _capi_exception_of(const dmaphys_error *err):
    cdef int kind = err.kind
    cdef str reason = (<bytes>err.reason[:strnlen(err.reason, sizeof(err.reason))]).decode("utf-8", "replace")
    cdef str tname = (<bytes>err.type[:strnlen(err.type, sizeof(err.type))]).decode("utf-8", "replace")
    cdef str device = (<bytes>err.device[:strnlen(err.device, sizeof(err.device))]).decode("utf-8", "replace")
    cdef str access = "write" if err.access else "read"
    if kind == DMAPHYS_ERR_IOMMU_FAULT:
        return IommuFault(device, err.addr, err.size, access, reason)
    if kind == DMAPHYS_ERR_DMA_FAULT:
        return DmaFault(device, err.addr, err.size, access, reason)
    if kind == DMAPHYS_ERR_PHYS:
        return PhysAddrError(err.addr, err.size, reason)
    if kind == DMAPHYS_ERR_BUG:
        return KernelBug(reason)
    if kind == DMAPHYS_ERR_BADARG or kind == DMAPHYS_ERR_NODEV:
        return ValueError(reason)
    if kind == DMAPHYS_ERR_NOTSUPP:
        return NotImplementedError(reason)
    if kind == DMAPHYS_ERR_PYTHON:
        cls = getattr(_errors_mod, tname, None) or getattr(_builtins, tname, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                return cls(reason)
            except BaseException:
                pass
        return RuntimeError(f"{tname}: {reason}")
    return SystemError(f"dmaphys: raise_error() on a record without an error (kind {kind})")


cdef PyObject *capi_raise_error(const dmaphys_error *err) noexcept nogil:
    with gil:
        if err == NULL:
            PyErr_SetString(SystemError, "dmaphys: raise_error(NULL)")
            return NULL
        try:
            e = _capi_exception_of(err)
            PyErr_SetObject(type(e), e)
        except BaseException as exc:
            PyErr_SetObject(type(exc), exc)
        return NULL


cdef int capi_device_check(PyObject *dev, dmaphys_error *err) noexcept nogil:
    cdef int code = 0
    with gil:
        if _capi_device(dev, err, &code) is None:
            return code
        return 0


# ---- owning the machine from a thread (machine.pxi "Threads") ----------------------------------
cdef int _capi_machine_enter(PyObject *cap, dmaphys_error *err) noexcept:
    cdef int code = 0
    cdef Device dev = _capi_device(cap, err, &code)
    if dev is None:
        return code
    if dev.machine._busy_thread == PyThread_get_thread_ident():
        return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG,
                          "this thread already owns the machine (machine_enter twice)")
    try:
        machine_enter(dev.machine)                 # waits (without the GIL) for another owner
    except BaseException as e:
        return _capi_exc(err, e)
    return 0


cdef int _capi_machine_exit(PyObject *cap, dmaphys_error *err) noexcept:
    cdef int code = 0
    cdef Device dev
    if cap != NULL and PyCapsule_CheckExact(<object>cap) and PyCapsule_GetName(<object>cap) == _capi_dev_name:
        dev = <Device>PyCapsule_GetContext(<object>cap)   # (also for a removed device)
        if dev.machine._busy_thread != PyThread_get_thread_ident():
            return _capi_fail(err, DMAPHYS_E_BADARG, DMAPHYS_ERR_BADARG,
                              "this thread does not own the machine (no machine_enter)")
        machine_exit(dev.machine)
        _capi_flush_quiet(dev.machine)             # (nothing is queued: slow paths flushed)
        return _capi_ok(err)
    _capi_device(cap, err, &code)                  # the error record of a bad capsule
    return code if code else DMAPHYS_E_BADARG


cdef int capi_machine_enter(PyObject *dev, dmaphys_error *err) noexcept nogil:
    """Own dev's machine: the calling thread's GIL-free entries then never take the GIL on their
    common paths. A thread Python never saw gets a Python thread state, kept until its last
    machine_exit (a fault converted on the GIL-free path needs it to carry the exception)."""
    global _capi_owned, _capi_tstate_made
    cdef bint had = PyGILState_GetThisThreadState() != NULL
    cdef _capi_gilstate st = _capi_gil_ensure()
    cdef int rc
    with gil:
        rc = _capi_machine_enter(dev, err)
    if rc == 0:
        _capi_owned += 1
        if not had:
            _capi_tstate_made = 1                  # keep it (gilstate counter 1), drop the GIL
            PyEval_SaveThread()
            return 0
    _capi_gil_release(st)
    return rc


cdef int capi_machine_exit(PyObject *dev, dmaphys_error *err) noexcept nogil:
    """Give dev's machine back (same thread as machine_enter); deletes a thread state
    machine_enter made once the thread owns no machine any more."""
    global _capi_owned, _capi_tstate_made
    cdef int rc
    with gil:
        rc = _capi_machine_exit(dev, err)
    if rc == 0:
        _capi_owned -= 1
        if _capi_owned == 0 and _capi_tstate_made:
            _capi_tstate_made = 0
            _capi_gil_ensure()                     # counter 2, GIL taken
            _capi_gil_release(_CAPI_GIL_LOCKED)    # counter 1, GIL kept
            _capi_gil_release(_CAPI_GIL_UNLOCKED)  # counter 0: thread state deleted, GIL dropped
    return rc


# ---- the table and its capsule --------------------------------------------------------------
cdef dmaphys_api _capi_table
_capi_table.abi_version = DMAPHYS_ABI_VERSION
_capi_table.struct_size = sizeof(dmaphys_api)
_capi_table.dma_map_phys = capi_dma_map_phys
_capi_table.dma_unmap_phys = capi_dma_unmap_phys
_capi_table.dma_map_resource = capi_dma_map_resource
_capi_table.dma_unmap_resource = capi_dma_unmap_resource
_capi_table.dma_mapping_error = capi_dma_mapping_error
_capi_table.dma_map_sg_attrs = capi_dma_map_sg_attrs
_capi_table.dma_unmap_sg_attrs = capi_dma_unmap_sg_attrs
_capi_table.dma_sync_single_for_cpu = capi_dma_sync_single_for_cpu
_capi_table.dma_sync_single_for_device = capi_dma_sync_single_for_device
_capi_table.dma_sync_sg_for_cpu = capi_dma_sync_sg_for_cpu
_capi_table.dma_sync_sg_for_device = capi_dma_sync_sg_for_device
_capi_table.dma_iova_try_alloc = capi_dma_iova_try_alloc
_capi_table.dma_iova_link = capi_dma_iova_link
_capi_table.dma_iova_sync = capi_dma_iova_sync
_capi_table.dma_iova_unlink = capi_dma_iova_unlink
_capi_table.dma_iova_destroy = capi_dma_iova_destroy
_capi_table.dma_iova_free = capi_dma_iova_free
_capi_table.dma_read = capi_dma_read
_capi_table.dma_write = capi_dma_write
_capi_table.iova_to_phys = capi_iova_to_phys
_capi_table.translate = capi_translate
_capi_table.register_notifier = capi_register_notifier
_capi_table.unregister_notifier = capi_unregister_notifier
_capi_table.domain_id = capi_domain_id
_capi_table.raise_error = capi_raise_error
_capi_table.device_check = capi_device_check
# ABI 1.1 (DMAPHYS_ABI_MINOR 1): appended
_capi_table.machine_enter = capi_machine_enter
_capi_table.machine_exit = capi_machine_exit
# ABI 1.2 (DMAPHYS_ABI_MINOR 2): appended
_capi_table.set_dirty_tracking = capi_set_dirty_tracking
_capi_table.read_and_clear_dirty = capi_read_and_clear_dirty

_capi_mirror_check()
# PyCapsule_Import("dmaphys._core._C_API") finds this (not in __all__: a C-level export)
_C_API = PyCapsule_New(<void *>&_capi_table, _capi_table_name, NULL)
