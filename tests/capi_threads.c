/* A C thread driving dmaphys through the C ABI without the GIL (tests/test_capi_threads.py).
 *
 * run(cap, addr, n, phys, bad, own, hold_gil, others) starts one pthread - a thread Python has
 * never seen - that, on the device capsule `cap`:
 *   1. machine_enter (when `own`), then, in its "GIL-free phase":
 *      dma_read n bytes at addr, dma_write them back XOR 0xA5, dma_read again, translate addr,
 *      dma_map_phys(phys, 4096) + dma_mapping_error + dma_read through it + dma_unmap_phys;
 *      while the thread runs this phase the calling (Python) thread holds the GIL without
 *      ever releasing it when `hold_gil`: an entry that took the GIL there would never return
 *      (the caller gives up after 60 s and reports it: a liveness check, not a timing one);
 *   2. after that the caller releases the GIL, and the thread reads at `bad` (an unmapped
 *      address: a fault record, recorded in Python-visible state by dmaphys with the GIL),
 *      tries bad input (NULL, each object of the tuple `others`: not device capsules or a
 *      removed device's), and machine_exit (when `own`).
 * Returns a dict of every return code, the bytes read, the translation and the fault record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dmaphys.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static const dmaphys_api *api;

#define MAX_OTHERS 8

typedef struct job {
    PyObject *cap;
    PyObject *others[MAX_OTHERS];
    int nothers;
    uint64_t addr, n, phys, bad;
    int own;
    atomic_int phase;              /* 1: entered, 2: GIL-free phase done, 3: GIL released, 4: done */
    int gil_at_start;              /* PyGILState_Check() in the thread before anything */
    int rc_enter, rc_read, rc_write, rc_read2, rc_xlate, rc_me, rc_read3, rc_unmap, rc_fault, rc_exit;
    int rc_null, rc_others[MAX_OTHERS], kind_others[MAX_OTHERS], rc_exit_again;
    uint64_t mapped;
    unsigned char rbuf[4096], wbuf[4096], rbuf2[4096], rbuf3[64];
    dmaphys_iotlb_entry e;
    dmaphys_error err, ferr, nerr;
} job;

static void wait_phase(job *j, int p)
{
    while (atomic_load(&j->phase) < p)
        sched_yield();
}

static void *body(void *arg)
{
    job *j = (job *)arg;
    uint64_t i;
    int k;
    j->gil_at_start = PyGILState_Check();
    j->rc_enter = j->own ? api->machine_enter(j->cap, &j->err) : 0;
    atomic_store(&j->phase, 1);
    /* the GIL-free phase */
    j->rc_read = api->dma_read(j->cap, j->addr, j->rbuf, j->n, &j->err);
    for (i = 0; i < j->n; i++)
        j->wbuf[i] = j->rbuf[i] ^ 0xA5;
    j->rc_write = api->dma_write(j->cap, j->addr, j->wbuf, j->n, &j->err);
    j->rc_read2 = api->dma_read(j->cap, j->addr, j->rbuf2, j->n, &j->err);
    j->rc_xlate = api->translate(j->cap, j->addr, 0, &j->e, &j->err);
    j->mapped = api->dma_map_phys(j->cap, j->phys, 4096, DMAPHYS_DMA_BIDIRECTIONAL, 0, &j->err);
    j->rc_me = api->dma_mapping_error(j->cap, j->mapped, &j->err);
    j->rc_read3 = api->dma_read(j->cap, j->mapped, j->rbuf3, 64, &j->err);
    j->rc_unmap = api->dma_unmap_phys(j->cap, j->mapped, 4096, DMAPHYS_DMA_BIDIRECTIONAL, 0, &j->err);
    atomic_store(&j->phase, 2);
    wait_phase(j, 3);
    /* the GIL is free for dmaphys to take now */
    j->rc_fault = api->dma_read(j->cap, j->bad, j->rbuf3, 64, &j->ferr);
    j->rc_null = api->dma_read(NULL, j->addr, j->rbuf3, 64, &j->nerr);
    for (k = 0; k < j->nothers; k++) {
        dmaphys_error e;
        j->rc_others[k] = api->dma_read(j->others[k], j->addr, j->rbuf3, 64, &e);
        j->kind_others[k] = e.kind;
    }
    j->rc_exit = j->own ? api->machine_exit(j->cap, &j->err) : 0;
    j->rc_exit_again = api->machine_exit(j->cap, NULL);         /* not the owner (any more) */
    atomic_store(&j->phase, 4);
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static PyObject *rec(const dmaphys_error *e)
{
    return Py_BuildValue("{s:i,s:i,s:K,s:K,s:s,s:s,s:s}", "kind", e->kind, "access", e->access,
                         "addr", (unsigned long long)e->addr, "size", (unsigned long long)e->size,
                         "type", e->type, "device", e->device, "reason", e->reason);
}

static PyObject *run(PyObject *self, PyObject *args)
{
    PyObject *cap, *others, *out = NULL, *rcs;
    unsigned long long addr, n, phys, bad;
    int own, hold, k, gave_up = 0;
    pthread_t t;
    job *j;
    double deadline;
    if (!PyArg_ParseTuple(args, "OKKKKppO!", &cap, &addr, &n, &phys, &bad, &own, &hold,
                          &PyTuple_Type, &others))
        return NULL;
    if (n > 4096 || PyTuple_GET_SIZE(others) > MAX_OTHERS)
        return PyErr_Format(PyExc_ValueError, "n > 4096 or too many others");
    if (hold && !own)
        return PyErr_Format(PyExc_ValueError, "hold_gil needs own (the entries would wait for the GIL)");
    j = (job *)PyMem_Calloc(1, sizeof(job));
    if (j == NULL)
        return PyErr_NoMemory();
    j->cap = cap;
    j->addr = addr; j->n = n; j->phys = phys; j->bad = bad; j->own = own;
    j->nothers = (int)PyTuple_GET_SIZE(others);
    for (k = 0; k < j->nothers; k++)
        j->others[k] = PyTuple_GET_ITEM(others, k);
    if (pthread_create(&t, NULL, body, j) != 0) {
        PyMem_Free(j);
        return PyErr_Format(PyExc_OSError, "pthread_create failed");
    }
    Py_BEGIN_ALLOW_THREADS
    wait_phase(j, 1);                  /* machine_enter takes the GIL briefly */
    Py_END_ALLOW_THREADS
    if (hold) {                        /* keep the GIL for the whole GIL-free phase */
        deadline = now() + 60.0;
        while (atomic_load(&j->phase) < 2 && !(gave_up = now() > deadline))
            sched_yield();
    }
    Py_BEGIN_ALLOW_THREADS
    wait_phase(j, 2);
    atomic_store(&j->phase, 3);
    pthread_join(t, NULL);
    Py_END_ALLOW_THREADS
    rcs = Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
                        "enter", j->rc_enter, "read", j->rc_read, "write", j->rc_write,
                        "read2", j->rc_read2, "translate", j->rc_xlate, "mapping_error", j->rc_me,
                        "read3", j->rc_read3, "unmap", j->rc_unmap, "fault", j->rc_fault,
                        "null", j->rc_null, "exit", j->rc_exit, "exit_again", j->rc_exit_again);
    if (rcs == NULL)
        goto done;
    out = Py_BuildValue("{s:N,s:y#,s:y#,s:y#,s:(KKKi),s:K,s:N,s:N,s:i,s:i}",
                        "rc", rcs, "read", j->rbuf, (Py_ssize_t)n, "read2", j->rbuf2, (Py_ssize_t)n,
                        "read3", j->rbuf3, (Py_ssize_t)64,
                        "translate", (unsigned long long)j->e.iova,
                        (unsigned long long)j->e.translated_addr, (unsigned long long)j->e.addr_mask,
                        j->e.perm, "mapped", (unsigned long long)j->mapped, "fault", rec(&j->ferr),
                        "null_err", rec(&j->nerr), "gil_at_start", j->gil_at_start, "gave_up", gave_up);
    if (out != NULL) {
        PyObject *lst = PyList_New(j->nothers);
        for (k = 0; lst != NULL && k < j->nothers; k++)
            PyList_SET_ITEM(lst, k, Py_BuildValue("(ii)", j->rc_others[k], j->kind_others[k]));
        if (lst == NULL || PyDict_SetItemString(out, "others", lst) < 0)
            Py_CLEAR(out);
        Py_XDECREF(lst);
    }
done:
    PyMem_Free(j);
    return out;
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS,
     "run(cap, addr, n, phys, bad, own, hold_gil, others) -> dict (see the file's comment)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "capi_threads", NULL, -1, methods};

PyMODINIT_FUNC PyInit_capi_threads(void)
{
    api = dmaphys_import();
    if (api == NULL)
        return NULL;
    if (!DMAPHYS_API_HAS(api, machine_exit))
        return PyErr_Format(PyExc_ImportError, "dmaphys without machine_enter/machine_exit");
    return PyModule_Create(&moddef);
}
