# Cython declarations of the C ABI header dmaphys/include/dmaphys.h (docs/EMBEDDING.md).
#
#     from dmaphys.capi cimport dmaphys_api, dmaphys_error, dmaphys_import
#     cdef const dmaphys_api *api = dmaphys_import()
#
# Build with include_dirs=[dmaphys.get_include()]. The header is the source of truth; this
# file only declares it (field comments there).

from libc.stdint cimport uint32_t, uint64_t, int32_t
from cpython.ref cimport PyObject


cdef extern from "dmaphys.h" nogil:
    const char *DMAPHYS_CAPI_NAME
    const char *DMAPHYS_DEVICE_CAPSULE_NAME
    enum: DMAPHYS_ABI_VERSION
    enum: DMAPHYS_ABI_MINOR

    ctypedef uint64_t dmaphys_dma_addr_t
    ctypedef uint64_t dmaphys_phys_addr_t
    const uint64_t DMAPHYS_DMA_MAPPING_ERROR
    const uint64_t DMAPHYS_DMA_IOVA_USE_SWIOTLB

    enum:
        DMAPHYS_DMA_BIDIRECTIONAL
        DMAPHYS_DMA_TO_DEVICE
        DMAPHYS_DMA_FROM_DEVICE
        DMAPHYS_DMA_NONE
        DMAPHYS_IOMMU_READ
        DMAPHYS_IOMMU_WRITE
        DMAPHYS_IOMMU_DIRTY_NO_CLEAR
        DMAPHYS_E_BADARG
        DMAPHYS_E_NODEV
        DMAPHYS_E_FAULT
        DMAPHYS_E_BUG
        DMAPHYS_E_PYTHON
        DMAPHYS_E_NOTSUPP
        DMAPHYS_ERR_NONE
        DMAPHYS_ERR_BADARG
        DMAPHYS_ERR_NODEV
        DMAPHYS_ERR_DMA_FAULT
        DMAPHYS_ERR_IOMMU_FAULT
        DMAPHYS_ERR_PHYS
        DMAPHYS_ERR_BUG
        DMAPHYS_ERR_PYTHON
        DMAPHYS_ERR_NOTSUPP
        DMAPHYS_ACCESS_READ
        DMAPHYS_ACCESS_WRITE
    const unsigned long DMAPHYS_DMA_ATTR_SKIP_CPU_SYNC
    const unsigned long DMAPHYS_DMA_ATTR_MMIO

    ctypedef struct dmaphys_error:
        int32_t kind
        int32_t access
        uint64_t addr
        uint64_t size
        int32_t completed
        uint64_t result
        char type[48]
        char device[64]
        char reason[192]

    ctypedef struct dmaphys_scatterlist:
        uint64_t page_phys
        uint32_t offset
        uint32_t length
        uint64_t dma_address
        uint32_t dma_length
        uint32_t dma_flags

    void dmaphys_sg_set(dmaphys_scatterlist *sg, uint64_t phys, uint32_t length)

    ctypedef struct dmaphys_iova_state:
        uint64_t addr
        uint64_t size

    ctypedef struct dmaphys_iotlb_entry:
        uint64_t iova
        uint64_t translated_addr
        uint64_t addr_mask
        int32_t perm

    ctypedef void (*dmaphys_notifier_fn)(void *opaque, uint32_t domain_id, uint64_t iova,
                                         uint64_t size) noexcept nogil

    ctypedef struct dmaphys_api:
        uint32_t abi_version
        uint32_t struct_size
        uint64_t (*dma_map_phys)(PyObject *dev, uint64_t phys, uint64_t size, int dir, unsigned long attrs,
                                 dmaphys_error *err) noexcept nogil
        int (*dma_unmap_phys)(PyObject *dev, uint64_t addr, uint64_t size, int dir, unsigned long attrs,
                              dmaphys_error *err) noexcept nogil
        uint64_t (*dma_map_resource)(PyObject *dev, uint64_t phys_addr, uint64_t size, int dir,
                                     unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_unmap_resource)(PyObject *dev, uint64_t addr, uint64_t size, int dir, unsigned long attrs,
                                  dmaphys_error *err) noexcept nogil
        int (*dma_mapping_error)(PyObject *dev, uint64_t dma_addr, dmaphys_error *err) noexcept nogil
        int (*dma_map_sg_attrs)(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                                unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_unmap_sg_attrs)(PyObject *dev, dmaphys_scatterlist *sg, int nents, int dir,
                                  unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_sync_single_for_cpu)(PyObject *dev, uint64_t addr, uint64_t size, int dir,
                                       dmaphys_error *err) noexcept nogil
        int (*dma_sync_single_for_device)(PyObject *dev, uint64_t addr, uint64_t size, int dir,
                                          dmaphys_error *err) noexcept nogil
        int (*dma_sync_sg_for_cpu)(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                                   dmaphys_error *err) noexcept nogil
        int (*dma_sync_sg_for_device)(PyObject *dev, dmaphys_scatterlist *sg, int nelems, int dir,
                                      dmaphys_error *err) noexcept nogil
        int (*dma_iova_try_alloc)(PyObject *dev, dmaphys_iova_state *state, uint64_t phys, uint64_t size,
                                  dmaphys_error *err) noexcept nogil
        int (*dma_iova_link)(PyObject *dev, dmaphys_iova_state *state, uint64_t phys, uint64_t offset,
                             uint64_t size, int dir, unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_iova_sync)(PyObject *dev, dmaphys_iova_state *state, uint64_t offset, uint64_t size,
                             dmaphys_error *err) noexcept nogil
        int (*dma_iova_unlink)(PyObject *dev, dmaphys_iova_state *state, uint64_t offset, uint64_t size,
                               int dir, unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_iova_destroy)(PyObject *dev, dmaphys_iova_state *state, uint64_t mapped_len, int dir,
                                unsigned long attrs, dmaphys_error *err) noexcept nogil
        int (*dma_iova_free)(PyObject *dev, dmaphys_iova_state *state, dmaphys_error *err) noexcept nogil
        int (*dma_read)(PyObject *dev, uint64_t addr, void *buf, uint64_t n, dmaphys_error *err) noexcept nogil
        int (*dma_write)(PyObject *dev, uint64_t addr, const void *buf, uint64_t n,
                         dmaphys_error *err) noexcept nogil
        uint64_t (*iova_to_phys)(PyObject *dev, uint64_t iova, dmaphys_error *err) noexcept nogil
        int (*translate)(PyObject *dev, uint64_t addr, int write, dmaphys_iotlb_entry *entry,
                         dmaphys_error *err) noexcept nogil
        int (*register_notifier)(PyObject *dev, dmaphys_notifier_fn fn, void *opaque,
                                 dmaphys_error *err) noexcept nogil
        int (*unregister_notifier)(PyObject *dev, dmaphys_notifier_fn fn, void *opaque,
                                   dmaphys_error *err) noexcept nogil
        int (*domain_id)(PyObject *dev, uint32_t *id, dmaphys_error *err) noexcept nogil
        PyObject *(*raise_error)(const dmaphys_error *err) noexcept nogil
        int (*device_check)(PyObject *dev, dmaphys_error *err) noexcept nogil
        # ABI 1.1
        int (*machine_enter)(PyObject *dev, dmaphys_error *err) noexcept nogil
        int (*machine_exit)(PyObject *dev, dmaphys_error *err) noexcept nogil
        # ABI 1.2
        int (*set_dirty_tracking)(PyObject *dev, int enable, dmaphys_error *err) noexcept nogil
        int (*read_and_clear_dirty)(PyObject *dev, uint32_t flags, uint64_t iova, uint64_t length,
                                    uint64_t page_size, uint64_t *bitmap, dmaphys_error *err) noexcept nogil


cdef extern from "dmaphys.h":
    # needs the GIL; NULL with a Python exception set on failure
    const dmaphys_api *dmaphys_import() except NULL
    const dmaphys_api *dmaphys_api_from_capsule(object capsule) except NULL
