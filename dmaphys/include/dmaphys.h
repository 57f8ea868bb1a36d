/*
 * dmaphys.h - the C ABI of dmaphys, for simulators written in C or C++.
 *
 * dmaphys publishes one named capsule, "dmaphys._core._C_API", holding a pointer to a
 * `dmaphys_api` table of function pointers. The table starts with its ABI version and its
 * size in bytes; entries are only ever appended, so a client built against an older header
 * keeps working with a newer dmaphys (check DMAPHYS_API_HAS() before using an entry that
 * appeared after the version you require).
 *
 *     #include <dmaphys.h>          // compile with -I$(python -c "import dmaphys; print(dmaphys.get_include())")
 *     const dmaphys_api *api = dmaphys_import();       // NULL + Python exception on failure
 *     PyObject *dev = PyObject_GetAttrString(pydev, "capsule");   // a "dmaphys.device" capsule
 *     dmaphys_error err;
 *     int rc = api->dma_read(dev, iova, buf, 64, &err);  // 0, or DMAPHYS_E_FAULT + err filled
 *
 * Conventions (docs/EMBEDDING.md is the full reference):
 *   - Kernel-named entries return what the kernel returns (a dma_addr_t or
 *     DMAPHYS_DMA_MAPPING_ERROR, 0 / -errno, a mapped count). Failures of the ABI itself
 *     (bad argument, removed device, device fault, what the kernel would BUG() on, a Python
 *     exception such as a warning filter set to "error") return the DMAPHYS_E_* codes below,
 *     which lie below -MAX_ERRNO and so never collide with a kernel -errno; address-returning
 *     entries return DMAPHYS_DMA_MAPPING_ERROR (or 0 for iova_to_phys) instead, and
 *     err->kind says why.
 *   - Every entry takes a last `dmaphys_error *err` (may be NULL). On return err->kind is
 *     DMAPHYS_ERR_NONE, or says what failed and the record holds the details.
 *   - No entry ever leaves a Python exception set: dmaphys converts it into the error record
 *     and clears it. api->raise_error(err) turns a record back into a Python exception
 *     (for a C extension that wants to propagate it).
 *   - GIL: every entry may be called from any thread, holding the GIL or not (a foreign
 *     thread Python never saw included). Entries marked [GIL-free] below run their common
 *     path in C without taking the GIL when the calling thread owns the machine
 *     (api->machine_enter) or holds the GIL while no other thread owns it; otherwise, and
 *     whenever Python must see something (a fault, a bad argument, dma-debug on, a warning,
 *     an rcache miss, ...), they take the GIL themselves (PyGILState_Ensure) and run the full
 *     path. All other entries always take the GIL themselves. docs/EMBEDDING.md section 6
 *     has the per-entry table.
 *   - Objects cross as capsules: a device is the capsule `dev.capsule` returns ("dmaphys.device",
 *     it holds a reference to the Device). Every entry checks it (NULL, not a capsule, a
 *     capsule of another name, a device removed with Machine.remove_device()) and fails with
 *     DMAPHYS_E_BADARG / DMAPHYS_E_NODEV, never crashes.
 */
#ifndef DMAPHYS_H
#define DMAPHYS_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DMAPHYS_CAPI_NAME "dmaphys._core._C_API"      /* PyCapsule_Import() name of the table */
#define DMAPHYS_DEVICE_CAPSULE_NAME "dmaphys.device"  /* name of dev.capsule */
#define DMAPHYS_ABI_VERSION 1                          /* the version this header describes */
/* Minor versions only append entries (abi_version stays 1; struct_size grows): check them with
 * DMAPHYS_API_HAS(api, member). 0: the first table; 1: machine_enter, machine_exit;
 * 2: set_dirty_tracking, read_and_clear_dirty. */
#define DMAPHYS_ABI_MINOR 2

/* ---- kernel types and constants (include/linux/types.h, dma-mapping.h, dma-direction.h) ---- */
typedef uint64_t dmaphys_dma_addr_t;
typedef uint64_t dmaphys_phys_addr_t;

#define DMAPHYS_DMA_MAPPING_ERROR (~(uint64_t)0)
enum dmaphys_dma_data_direction {
    DMAPHYS_DMA_BIDIRECTIONAL = 0,
    DMAPHYS_DMA_TO_DEVICE = 1,
    DMAPHYS_DMA_FROM_DEVICE = 2,
    DMAPHYS_DMA_NONE = 3,
};
#define DMAPHYS_DMA_ATTR_WEAK_ORDERING (1UL << 1)
#define DMAPHYS_DMA_ATTR_WRITE_COMBINE (1UL << 2)
#define DMAPHYS_DMA_ATTR_NO_KERNEL_MAPPING (1UL << 4)
#define DMAPHYS_DMA_ATTR_SKIP_CPU_SYNC (1UL << 5)
#define DMAPHYS_DMA_ATTR_FORCE_CONTIGUOUS (1UL << 6)
#define DMAPHYS_DMA_ATTR_ALLOC_SINGLE_PAGES (1UL << 7)
#define DMAPHYS_DMA_ATTR_NO_WARN (1UL << 8)
#define DMAPHYS_DMA_ATTR_PRIVILEGED (1UL << 9)
#define DMAPHYS_DMA_ATTR_MMIO (1UL << 10)
#define DMAPHYS_DMA_IOVA_USE_SWIOTLB (1ULL << 63)

/* IOMMU permission bits (include/linux/iommu.h IOMMU_READ/IOMMU_WRITE; QEMU IOMMU_RO/IOMMU_WO) */
#define DMAPHYS_IOMMU_READ 1
#define DMAPHYS_IOMMU_WRITE 2
/* read_and_clear_dirty() flag (include/uapi/linux/iommufd.h IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
 * include/linux/iommu.h IOMMU_DIRTY_NO_CLEAR): report the dirty bits without clearing them */
#define DMAPHYS_IOMMU_DIRTY_NO_CLEAR 1

/* ---- ABI-level failures: below -MAX_ERRNO (4095), never a kernel -errno ------------------- */
#define DMAPHYS_E_BADARG (-4097)   /* NULL / wrong capsule / out-of-range argument */
#define DMAPHYS_E_NODEV (-4098)    /* the device was removed from its machine */
#define DMAPHYS_E_FAULT (-4099)    /* the device access faulted (DMA, IOMMU or physical) */
#define DMAPHYS_E_BUG (-4100)      /* what the kernel BUG()s on (KernelBug) */
#define DMAPHYS_E_PYTHON (-4101)   /* another Python exception (warning filter "error", DmaDebugError, ...) */
#define DMAPHYS_E_NOTSUPP (-4102)  /* an entry this dmaphys build does not provide */

/* err->kind */
enum dmaphys_error_kind {
    DMAPHYS_ERR_NONE = 0,
    DMAPHYS_ERR_BADARG = 1,        /* reason says which argument */
    DMAPHYS_ERR_NODEV = 2,
    DMAPHYS_ERR_DMA_FAULT = 3,     /* DmaFault: no IOMMU; addr = bus address */
    DMAPHYS_ERR_IOMMU_FAULT = 4,   /* IommuFault: addr = IOVA; reason = "not-present", "write-denied", ... */
    DMAPHYS_ERR_PHYS = 5,          /* PhysAddrError: addr = physical address */
    DMAPHYS_ERR_BUG = 6,           /* KernelBug: reason = the BUG text */
    DMAPHYS_ERR_PYTHON = 7,        /* any other Python exception: type + reason */
    DMAPHYS_ERR_NOTSUPP = 8,
};

enum dmaphys_access { DMAPHYS_ACCESS_READ = 0, DMAPHYS_ACCESS_WRITE = 1 };

/* The error / fault record every entry fills when it fails. */
typedef struct dmaphys_error {
    int32_t kind;          /* enum dmaphys_error_kind */
    int32_t access;        /* faults: enum dmaphys_access */
    uint64_t addr;         /* faults: the faulting (bus / IO virtual / physical) address */
    uint64_t size;         /* faults: the size of the faulting request */
    int32_t completed;     /* 1: the operation finished and then a Python exception came from
                              the warning flush (e.g. warnings as errors); result = its value */
    int32_t _pad;
    uint64_t result;       /* see completed */
    char type[48];         /* the Python exception class name ("IommuFault", ...), or "" */
    char device[64];       /* faults: the device's name */
    char reason[192];      /* fault reason or exception text, NUL-terminated (may be cut) */
} dmaphys_error;

/* struct scatterlist (include/linux/scatterlist.h), C-owned. The caller sets page_phys, offset
 * and length; map_sg fills dma_address, dma_length and dma_flags, which unmap_sg / sync_sg
 * read back. Keep the array unchanged between map and unmap, as in the kernel. */
typedef struct dmaphys_scatterlist {
    uint64_t page_phys;    /* page_to_phys(sg_page(sg)) */
    uint32_t offset;
    uint32_t length;       /* 1 .. 2^32-1 */
    uint64_t dma_address;  /* sg_dma_address() */
    uint32_t dma_length;   /* sg_dma_len() */
    uint32_t dma_flags;    /* SG_DMA_BUS_ADDRESS (1), SG_DMA_SWIOTLB (2) */
} dmaphys_scatterlist;

static inline void dmaphys_sg_set(dmaphys_scatterlist *sg, uint64_t phys, uint32_t length)
{
    sg->page_phys = phys & ~(uint64_t)4095;
    sg->offset = (uint32_t)(phys & 4095);
    sg->length = length;
    sg->dma_address = 0;
    sg->dma_length = 0;
    sg->dma_flags = 0;
}

/* struct dma_iova_state (include/linux/dma-mapping.h), C-owned; zero-initialise it. */
typedef struct dmaphys_iova_state {
    uint64_t addr;         /* IOVA, including phys's offset in the IOVA granule */
    uint64_t size;         /* the kernel's __size; bit 63 = DMAPHYS_DMA_IOVA_USE_SWIOTLB */
} dmaphys_iova_state;

static inline int dmaphys_use_iova(const dmaphys_iova_state *s) { return s->size != 0; }
static inline uint64_t dmaphys_iova_size(const dmaphys_iova_state *s)
{
    return s->size & ~DMAPHYS_DMA_IOVA_USE_SWIOTLB;
}

/* QEMU's IOMMUTLBEntry: the translation of the page containing an address. */
typedef struct dmaphys_iotlb_entry {
    uint64_t iova;             /* page-aligned start of the translated range */
    uint64_t translated_addr;  /* physical address of iova */
    uint64_t addr_mask;        /* range size - 1 (0xfff for a 4 KiB page) */
    int32_t perm;              /* DMAPHYS_IOMMU_READ | DMAPHYS_IOMMU_WRITE */
    int32_t _pad;
} dmaphys_iotlb_entry;

/* An IOTLB invalidation notifier: fn(opaque, domain_id, iova, size) after every invalidation the
 * IOMMU driver issues for [iova, iova + size) of domain `domain_id` (size UINT64_MAX: from iova
 * to the end; domain_id 0: every domain). Strict unmaps report their range; a lazy (flush
 * queue) domain reports (id, 0, UINT64_MAX) when the queue flushes - until then its stale
 * IOTLB entries still translate, as on hardware. Called with the GIL held, from inside the
 * invalidating dmaphys call: it must not call back into dmaphys (drop your cached
 * translations and return). */
typedef void (*dmaphys_notifier_fn)(void *opaque, uint32_t domain_id, uint64_t iova, uint64_t size);

/* ---- the table --------------------------------------------------------------------------- */
typedef struct dmaphys_api {
    uint32_t abi_version;      /* DMAPHYS_ABI_VERSION of the dmaphys that filled it */
    uint32_t struct_size;      /* sizeof(dmaphys_api) there: entries past it do not exist */

    /* kernel/dma/mapping.c: single mappings. dma_map_phys, dma_unmap_phys, dma_mapping_error:
     * [GIL-free] (dma-direct without bouncing; dma-iommu with an IOVA rcache hit and tables in
     * place; dma-debug and tracing off) */
    dmaphys_dma_addr_t (*dma_map_phys)(PyObject *dev, dmaphys_phys_addr_t phys, uint64_t size,
                                       int dir, unsigned long attrs, dmaphys_error *err);
    int (*dma_unmap_phys)(PyObject *dev, dmaphys_dma_addr_t addr, uint64_t size, int dir,
                          unsigned long attrs, dmaphys_error *err);
    dmaphys_dma_addr_t (*dma_map_resource)(PyObject *dev, dmaphys_phys_addr_t phys_addr, uint64_t size,
                                           int dir, unsigned long attrs, dmaphys_error *err);
    int (*dma_unmap_resource)(PyObject *dev, dmaphys_dma_addr_t addr, uint64_t size, int dir,
                              unsigned long attrs, dmaphys_error *err);
    int (*dma_mapping_error)(PyObject *dev, dmaphys_dma_addr_t dma_addr, dmaphys_error *err);

    /* scatter-gather */
    int (*dma_map_sg_attrs)(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                            unsigned long attrs, dmaphys_error *err);
    int (*dma_unmap_sg_attrs)(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                              unsigned long attrs, dmaphys_error *err);

    /* syncs */
    int (*dma_sync_single_for_cpu)(PyObject *dev, dmaphys_dma_addr_t addr, uint64_t size, int dir,
                                   dmaphys_error *err);
    int (*dma_sync_single_for_device)(PyObject *dev, dmaphys_dma_addr_t addr, uint64_t size, int dir,
                                      dmaphys_error *err);
    int (*dma_sync_sg_for_cpu)(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                               dmaphys_error *err);
    int (*dma_sync_sg_for_device)(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                                  dmaphys_error *err);

    /* drivers/iommu/dma-iommu.c: the two-step IOVA API */
    int (*dma_iova_try_alloc)(PyObject *dev, dmaphys_iova_state *state, dmaphys_phys_addr_t phys,
                              uint64_t size, dmaphys_error *err);
    int (*dma_iova_link)(PyObject *dev, dmaphys_iova_state *state, dmaphys_phys_addr_t phys,
                         uint64_t offset, uint64_t size, int dir, unsigned long attrs, dmaphys_error *err);
    int (*dma_iova_sync)(PyObject *dev, dmaphys_iova_state *state, uint64_t offset, uint64_t size,
                         dmaphys_error *err);
    int (*dma_iova_unlink)(PyObject *dev, dmaphys_iova_state *state, uint64_t offset, uint64_t size,
                           int dir, unsigned long attrs, dmaphys_error *err);
    int (*dma_iova_destroy)(PyObject *dev, dmaphys_iova_state *state, uint64_t mapped_len, int dir,
                            unsigned long attrs, dmaphys_error *err);
    int (*dma_iova_free)(PyObject *dev, dmaphys_iova_state *state, dmaphys_error *err);

    /* the device on its bus (IOMMU, P2P, dma_range_map, faults), like dev.dma_read/dma_write:
     * [GIL-free] with dma-debug off (a fault takes the GIL to record and report itself) */
    int (*dma_read)(PyObject *dev, dmaphys_dma_addr_t addr, void *buf, uint64_t n, dmaphys_error *err);
    int (*dma_write)(PyObject *dev, dmaphys_dma_addr_t addr, const void *buf, uint64_t n,
                     dmaphys_error *err);

    /* translations: translate is [GIL-free] like dma_read; iova_to_phys takes the GIL */
    dmaphys_phys_addr_t (*iova_to_phys)(PyObject *dev, dmaphys_dma_addr_t iova, dmaphys_error *err);
    int (*translate)(PyObject *dev, dmaphys_dma_addr_t addr, int write, dmaphys_iotlb_entry *entry,
                     dmaphys_error *err);

    /* IOTLB invalidation notifiers of the IOMMU the device sits behind */
    int (*register_notifier)(PyObject *dev, dmaphys_notifier_fn fn, void *opaque, dmaphys_error *err);
    int (*unregister_notifier)(PyObject *dev, dmaphys_notifier_fn fn, void *opaque, dmaphys_error *err);
    int (*domain_id)(PyObject *dev, uint32_t *id, dmaphys_error *err);   /* the device's domain id */

    /* helpers */
    PyObject *(*raise_error)(const dmaphys_error *err);   /* sets a Python exception, returns NULL */
    int (*device_check)(PyObject *dev, dmaphys_error *err); /* 0 if dev is a live device capsule */

    /* ---- ABI 1.1 (DMAPHYS_ABI_MINOR 1) ---- */
    /* Own the device's machine from the calling thread (what a batch call does, machine.pxi
     * "Threads"): until machine_exit, the thread's [GIL-free] entries never take the GIL on
     * their common paths, and other threads' dmaphys calls on that machine (Python or C) wait.
     * Waits (without the GIL) while another thread owns it. A thread Python never saw gets a
     * Python thread state, kept until its last machine_exit. 0; DMAPHYS_E_BADARG when this
     * thread already owns it. Takes the GIL briefly; may be called with or without it, but a
     * thread that holds the GIL while it owns the machine must release it before another
     * thread's dmaphys call on that machine can proceed. Keep the capsule until machine_exit. */
    int (*machine_enter)(PyObject *dev, dmaphys_error *err);
    /* Give it back (the thread that entered; also for a since-removed device); 0, or
     * DMAPHYS_E_BADARG when this thread does not own it. Takes the GIL briefly. */
    int (*machine_exit)(PyObject *dev, dmaphys_error *err);

    /* ---- ABI 1.2 (DMAPHYS_ABI_MINOR 2): IOMMU dirty tracking, as iommufd drives it ---- */
    /* dirty_ops->set_dirty_tracking() on the device's IOMMU domain (IOMMU_HWPT_SET_DIRTY_TRACKING;
     * IommuDomain.set_dirty_tracking): 0, or -EOPNOTSUPP when the domain has no dirty ops (the
     * IOMMU was made without dirty_tracking, or its format has no dirty bit). Unlike iommufd it
     * does not clear the dirty bits first: call read_and_clear_dirty() for a clean start.
     * DMAPHYS_E_BADARG for a device without an IOMMU domain. Takes the GIL. */
    int (*set_dirty_tracking)(PyObject *dev, int enable, dmaphys_error *err);
    /* IOMMU_HWPT_GET_DIRTY_BITMAP on the device's IOMMU domain (struct iommu_hwpt_get_dirty_bitmap's
     * fields in its order): sets bit i of `bitmap` (uint64_t words, bit i of word i / 64 = bit
     * i % 64) for every page of `page_size` bytes at iova + i * page_size that a dirty leaf
     * covers, and clears those leaves' dirty bits (then one IOTLB sync) unless flags has
     * DMAPHYS_IOMMU_DIRTY_NO_CLEAR. Bits are only ever set, never cleared (zero the bitmap
     * first); at most ceil(length / page_size) bits are written. Returns 0; -EOPNOTSUPP for
     * unknown flags or a domain without dirty ops; what iommufd_check_iova_range() returns
     * (-EOVERFLOW when iova + length - 1 wraps; -EINVAL when iova or iova + length is not
     * aligned to the domain's smallest page size or to page_size, or page_size is 0); or the
     * format's read_and_clear_dirty() error. The range is walked as ONE ops->read_and_clear_dirty()
     * call: iommufd calls it once per mapped area, so give mapped ranges (an arm-lpae walk
     * stops at a hole with -EINVAL, as the kernel's would). length 0 at iova 0: 0, nothing
     * walked. DMAPHYS_E_BADARG for a device without an IOMMU domain or a NULL bitmap. Takes the GIL. */
    int (*read_and_clear_dirty)(PyObject *dev, uint32_t flags, uint64_t iova, uint64_t length,
                                uint64_t page_size, uint64_t *bitmap, dmaphys_error *err);
} dmaphys_api;

/* 1 if the table `api` has entry `member` (it was filled by a dmaphys at least that new). */
#define DMAPHYS_API_HAS(api, member) \
    ((api)->struct_size >= offsetof(dmaphys_api, member) + sizeof((api)->member))

/* The table, or NULL with a Python exception set (needs the GIL; call it once at start-up). */
static inline const dmaphys_api *dmaphys_import(void)
{
    const dmaphys_api *api = (const dmaphys_api *)PyCapsule_Import(DMAPHYS_CAPI_NAME, 0);
    if (api != NULL && api->abi_version < 1) {
        PyErr_SetString(PyExc_ImportError, "dmaphys: C ABI version too old");
        return NULL;
    }
    return api;
}

/* The table from a capsule object passed in (e.g. dmaphys._core._C_API), or NULL + exception. */
static inline const dmaphys_api *dmaphys_api_from_capsule(PyObject *capsule)
{
    return (const dmaphys_api *)PyCapsule_GetPointer(capsule, DMAPHYS_CAPI_NAME);
}

#ifdef __cplusplus
}
#endif
#endif /* DMAPHYS_H */
