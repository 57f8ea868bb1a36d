/*
 * dmaring: a descriptor-ring DMA engine modelled in C, driving dmaphys only through the C ABI
 * (dmaphys.h + the "dmaphys._core._C_API" capsule). Built as a tiny Python extension so a
 * Python script can set the machine up (examples/embed/run.py); a C simulator embedding
 * Python would call ring_run() the same way.
 *
 * The engine, per descriptor i of a ring at bus address `ring`:
 *   1. fetch the 32-byte descriptor {src, dst, len, flags, cookie} (a device read);
 *   2. stop at a descriptor without DESC_VALID;
 *   3. read `len` bytes at bus address src, XOR them with the low byte of `flags >> 8`
 *      (0 = plain copy), write them at dst;
 *   4. write the 16-byte completion {cookie, status, bytes} at cpl + 16 * i.
 * A faulting access ends the run: the completion gets CPL_FAULT (if that write works) and
 * the fault record comes back to the caller.
 *
 * Build: cc -shared -fPIC $(python3-config --includes) -I$(python -c "import dmaphys;
 * print(dmaphys.get_include())") dmaring.c -o dmaring$(python3-config --extension-suffix)
 * (examples/embed/build.py does this with setuptools).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dmaphys.h>

#define DESC_SIZE 32
#define CPL_SIZE 16
#define DESC_VALID 1u
#define CPL_OK 1u
#define CPL_FAULT 2u

static const dmaphys_api *api;        /* the table, from dmaphys_import() at module init */

struct ring_desc {                    /* little endian, as the guest writes it */
    uint64_t src, dst;
    uint32_t len, flags;
    uint64_t cookie;
};

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static int write_cpl(PyObject *dev, uint64_t cpl, uint64_t cookie, uint32_t status, uint32_t bytes,
                     dmaphys_error *err)
{
    unsigned char c[CPL_SIZE];
    put_le64(c, cookie);
    put_le32(c + 8, status);
    put_le32(c + 12, bytes);
    return api->dma_write(dev, cpl, c, CPL_SIZE, err);
}

/* The device model: process up to n descriptors. Returns how many completed; *err holds the
 * fault (err->kind != DMAPHYS_ERR_NONE) when one stopped the run. */
static long ring_process(PyObject *dev, uint64_t ring, long n, uint64_t cpl, dmaphys_error *err)
{
    unsigned char raw[DESC_SIZE];
    unsigned char *buf = NULL;
    size_t bufsize = 0;
    long i;
    err->kind = DMAPHYS_ERR_NONE;
    for (i = 0; i < n; i++) {
        struct ring_desc d;
        dmaphys_error cerr;
        if (api->dma_read(dev, ring + (uint64_t)i * DESC_SIZE, raw, DESC_SIZE, err) != 0)
            break;                                            /* the ring itself faulted */
        d.src = get_le64(raw);
        d.dst = get_le64(raw + 8);
        d.len = get_le32(raw + 16);
        d.flags = get_le32(raw + 20);
        d.cookie = get_le64(raw + 24);
        if (!(d.flags & DESC_VALID))
            break;
        if (d.len > bufsize) {
            unsigned char *nb = realloc(buf, d.len);
            if (nb == NULL)
                break;
            buf = nb;
            bufsize = d.len;
        }
        if (api->dma_read(dev, d.src, buf, d.len, err) == 0) {
            unsigned char x = (unsigned char)(d.flags >> 8);
            for (uint32_t k = 0; x && k < d.len; k++)
                buf[k] ^= x;
            api->dma_write(dev, d.dst, buf, d.len, err);
        }
        if (err->kind != DMAPHYS_ERR_NONE) {                  /* the buffer access faulted */
            write_cpl(dev, cpl + (uint64_t)i * CPL_SIZE, d.cookie, CPL_FAULT, 0, &cerr);
            break;
        }
        if (write_cpl(dev, cpl + (uint64_t)i * CPL_SIZE, d.cookie, CPL_OK, d.len, err) != 0)
            break;
    }
    free(buf);
    return i;
}

static PyObject *fault_dict(const dmaphys_error *e)
{
    if (e->kind == DMAPHYS_ERR_NONE)
        Py_RETURN_NONE;
    return Py_BuildValue("{s:i,s:s,s:K,s:K,s:s,s:s,s:s}", "kind", e->kind, "type", e->type,
                         "addr", (unsigned long long)e->addr, "size", (unsigned long long)e->size,
                         "access", e->access ? "write" : "read", "reason", e->reason, "device", e->device);
}

/* ring_run(dev_capsule, ring, n, cpl) -> (completed, fault dict or None) */
static PyObject *ring_run(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long ring, cpl;
    long n, done;
    dmaphys_error err;
    if (!PyArg_ParseTuple(args, "OKlK", &dev, &ring, &n, &cpl))
        return NULL;
    /* Own the machine and drop the GIL for the run, as a simulator's device thread would: the
     * accesses then take dmaphys's GIL-free path (a fault takes the GIL to record itself).
     * machine_enter fails on a bad capsule; ring_process then reports it from its first call. */
    int owned = DMAPHYS_API_HAS(api, machine_exit) && api->machine_enter(dev, NULL) == 0;
    Py_BEGIN_ALLOW_THREADS
    done = ring_process(dev, ring, n, cpl, &err);
    Py_END_ALLOW_THREADS
    if (owned)
        api->machine_exit(dev, NULL);
    if (err.kind == DMAPHYS_ERR_BADARG || err.kind == DMAPHYS_ERR_NODEV)
        return api->raise_error(&err);               /* a caller bug: make it a Python exception */
    PyObject *f = fault_dict(&err);
    if (f == NULL)
        return NULL;
    return Py_BuildValue("(lN)", done, f);
}

/* call(name, dev_capsule, *ints) -> the entry's return value and the error record: direct
 * access to a few table entries for tests of the ABI's argument checking. */
static PyObject *raw_read(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long addr, n;
    int nullbuf = 0, rc;
    dmaphys_error err;
    if (!PyArg_ParseTuple(args, "OKK|p", &dev, &addr, &n, &nullbuf))
        return NULL;
    if (dev == Py_None)
        dev = NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, nullbuf ? 0 : (Py_ssize_t)n);
    if (out == NULL)
        return NULL;
    rc = api->dma_read(dev, addr, nullbuf ? NULL : PyBytes_AS_STRING(out), n, &err);
    if (PyErr_Occurred()) {                            /* the ABI promises this never happens */
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(iNN)", rc, out, fault_dict(&err));
}

/* map(dev, phys, size, dir) / unmap(dev, addr, size, dir) through the table */
static PyObject *raw_map(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long phys, size;
    int dir;
    dmaphys_error err;
    if (!PyArg_ParseTuple(args, "OKKi", &dev, &phys, &size, &dir))
        return NULL;
    uint64_t a = api->dma_map_phys(dev == Py_None ? NULL : dev, phys, size, dir, 0, &err);
    int me = api->dma_mapping_error(dev == Py_None ? NULL : dev, a, NULL);
    return Py_BuildValue("(KiN)", (unsigned long long)a, me, fault_dict(&err));
}

static PyObject *raw_unmap(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long addr, size;
    int dir;
    dmaphys_error err;
    if (!PyArg_ParseTuple(args, "OKKi", &dev, &addr, &size, &dir))
        return NULL;
    int rc = api->dma_unmap_phys(dev == Py_None ? NULL : dev, addr, size, dir, 0, &err);
    return Py_BuildValue("(iN)", rc, fault_dict(&err));
}

/* dirty_log(dev_capsule, iova, length, page_size, clear=True) -> (rc, [page indices], fault):
 * what a VMM's migration loop asks the IOMMU each round (ABI 1.2; iommufd's
 * IOMMU_HWPT_GET_DIRTY_BITMAP): the pages of [iova, iova + length) the device wrote since the
 * last clearing call. It turns the domain's dirty tracking on first (idempotent): the first
 * call gives the clean start. */
static PyObject *dirty_log(PyObject *self, PyObject *args)
{
    PyObject *dev, *pages;
    unsigned long long iova, length, page_size;
    int clear = 1, rc;
    dmaphys_error err;
    if (!PyArg_ParseTuple(args, "OKKK|p", &dev, &iova, &length, &page_size, &clear))
        return NULL;
    if (!DMAPHYS_API_HAS(api, read_and_clear_dirty))
        return PyErr_Format(PyExc_NotImplementedError, "dmaphys C ABI older than 1.2");
    if (page_size == 0 || length / page_size > ((uint64_t)1 << 32))
        return PyErr_Format(PyExc_ValueError, "page_size 0, or a bitmap of more than 2^32 bits");
    uint64_t nbits = (length + page_size - 1) / page_size, nwords = (nbits + 63) / 64;
    uint64_t *bitmap = calloc(nwords ? nwords : 1, sizeof(uint64_t));     /* zeroed: bits are only set */
    if (bitmap == NULL)
        return PyErr_NoMemory();
    rc = api->set_dirty_tracking(dev, 1, &err);
    if (rc == 0)
        rc = api->read_and_clear_dirty(dev, clear ? 0 : DMAPHYS_IOMMU_DIRTY_NO_CLEAR, iova, length,
                                       page_size, bitmap, &err);
    pages = PyList_New(0);
    for (uint64_t i = 0; pages != NULL && rc == 0 && i < nbits; i++) {
        if (bitmap[i / 64] >> (i % 64) & 1) {
            PyObject *v = PyLong_FromUnsignedLongLong(i);
            if (v == NULL || PyList_Append(pages, v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(pages);
                break;
            }
            Py_DECREF(v);
        }
    }
    free(bitmap);
    if (pages == NULL)
        return NULL;
    if (err.kind == DMAPHYS_ERR_BADARG || err.kind == DMAPHYS_ERR_NODEV) {
        Py_DECREF(pages);
        return api->raise_error(&err);
    }
    return Py_BuildValue("(iNN)", rc, pages, fault_dict(&err));
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The timed loops: with the GIL held (a C extension called from Python), or ("owned") in a
 * thread that owns the machine (machine_enter) and has released the GIL. */
static int bench_enter(PyObject *dev, int owned, dmaphys_error *err)
{
    if (!owned)
        return 0;
    if (!DMAPHYS_API_HAS(api, machine_enter)) {
        PyErr_SetString(PyExc_NotImplementedError, "this dmaphys has no machine_enter");
        return -1;
    }
    if (api->machine_enter(dev, err) != 0) {
        api->raise_error(err);
        return -1;
    }
    return 0;
}

/* Time `iters` calls of CALL (an expression giving an int, 0 = success) into t0 / t1, stopping at
 * the first failure (rc). Owned (bench_enter took the machine): without the GIL, then the machine
 * is given back; otherwise with the GIL held, as a caller that owns nothing would. */
#define BENCH_LOOP(CALL)                                            \
    do {                                                            \
        if (owned) {                                                \
            Py_BEGIN_ALLOW_THREADS                                  \
            t0 = now_ns();                                          \
            for (i = 0; i < iters && rc == 0; i++)                  \
                rc = (CALL);                                        \
            t1 = now_ns();                                          \
            Py_END_ALLOW_THREADS                                    \
            api->machine_exit(dev, NULL);                           \
        } else {                                                    \
            t0 = now_ns();                                          \
            for (i = 0; i < iters && rc == 0; i++)                  \
                rc = (CALL);                                        \
            t1 = now_ns();                                          \
        }                                                           \
    } while (0)

/* bench_read(dev, addr, size, iters, owned=False) -> ns per dma_read through the table */
static PyObject *bench_read(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long addr, size;
    long iters, i;
    int owned = 0, rc = 0;
    unsigned char buf[4096];
    dmaphys_error err;
    double t0, t1;
    if (!PyArg_ParseTuple(args, "OKKl|p", &dev, &addr, &size, &iters, &owned) || size > sizeof(buf))
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "size > 4096");
    if (bench_enter(dev, owned, &err))
        return NULL;
    BENCH_LOOP(api->dma_read(dev, addr, buf, size, &err));
    if (rc != 0)
        return api->raise_error(&err);
    return PyFloat_FromDouble((t1 - t0) / (double)iters);
}

/* bench_translate(dev, addr, iters, owned=False) -> ns per translate through the table
 * (None: not provided) */
static PyObject *bench_translate(PyObject *self, PyObject *args)
{
    PyObject *dev;
    unsigned long long addr;
    long iters, i;
    int owned = 0, rc = 0;
    dmaphys_iotlb_entry e;
    dmaphys_error err;
    double t0, t1;
    if (!PyArg_ParseTuple(args, "OKl|p", &dev, &addr, &iters, &owned))
        return NULL;
    if (!DMAPHYS_API_HAS(api, translate) || api->translate(dev, addr, 0, &e, &err) == DMAPHYS_E_NOTSUPP)
        Py_RETURN_NONE;
    if (bench_enter(dev, owned, &err))
        return NULL;
    BENCH_LOOP(api->translate(dev, addr, 0, &e, &err));
    if (rc != 0)
        return api->raise_error(&err);
    return PyFloat_FromDouble((t1 - t0) / (double)iters);
}

static PyMethodDef methods[] = {
    {"ring_run", ring_run, METH_VARARGS, "ring_run(dev_capsule, ring, n, cpl) -> (completed, fault)"},
    {"raw_read", raw_read, METH_VARARGS, "raw_read(dev_capsule, addr, n, nullbuf=False) -> (rc, bytes, fault)"},
    {"raw_map", raw_map, METH_VARARGS, "raw_map(dev_capsule, phys, size, dir) -> (addr, mapping_error, fault)"},
    {"raw_unmap", raw_unmap, METH_VARARGS, "raw_unmap(dev_capsule, addr, size, dir) -> (rc, fault)"},
    {"dirty_log", dirty_log, METH_VARARGS, "dirty_log(dev_capsule, iova, length, page_size, clear=True) -> (rc, pages, fault)"},
    {"bench_read", bench_read, METH_VARARGS, "bench_read(dev_capsule, addr, size, iters, owned=False) -> ns/op"},
    {"bench_translate", bench_translate, METH_VARARGS, "bench_translate(dev_capsule, addr, iters, owned=False) -> ns/op"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "dmaring", NULL, -1, methods};

PyMODINIT_FUNC PyInit_dmaring(void)
{
    api = dmaphys_import();
    if (api == NULL)
        return NULL;
    if (!DMAPHYS_API_HAS(api, device_check))
        return PyErr_Format(PyExc_ImportError, "dmaring needs dmaphys C ABI v1");
    PyObject *m = PyModule_Create(&moddef);
    if (m != NULL)
        PyModule_AddIntConstant(m, "abi_version", (long)api->abi_version);
    return m;
}
