# The C face of _kernel/dma_iommu.pxi: drivers/iommu/dma-iommu.c: struct iommu_dma_cookie, the flush queue, struct dma_iova_state.

from cpython.object cimport PyObject_GenericSetAttr

cdef enum:
    IOVA_DEFAULT_FQ_SIZE = 256                 # entries per per-CPU flush queue
    IOVA_SINGLE_FQ_SIZE = 32768                # entries of the single (shadow_on_flush) queue
    IOVA_DEFAULT_FQ_TIMEOUT = 10               # ms
    IOVA_SINGLE_FQ_TIMEOUT = 1000              # ms
    IOMMU_DMA_OPTS_PER_CPU_QUEUE = 0           # enum iommu_dma_queue_type
    IOMMU_DMA_OPTS_SINGLE_QUEUE = 1
    DMA_IOMMU_EPERM = 1                        # EPERM (not in types.pxi's errno list)

# ---- flush queue: struct iova_fq / iova_fq_entry --------------------------------------------------
cdef struct iova_fq_entry:
    u64 iova_pfn                               # iova_pfn
    u64 pages                                  # pages
    u64 counter                                 # fq_flush_start_cnt when queued
    vector[u64] freelist                        # page-table pages the unmap emptied (iommu_pages_list)


cdef class IovaFq:
    cdef vector[iova_fq_entry] entries         # entries[] (struct iova_fq)
    cdef readonly unsigned int head            # head
    cdef readonly unsigned int tail            # tail
    cdef readonly unsigned int mod_mask        # mod_mask

cdef class _FqTimer:
    cdef IommuDmaCookie cookie                 # the cookie whose fq_timer this is
    cdef u64 gen                               # cookie->fq_gen when armed (stale timers do nothing)

cdef class IommuDmaCookie:
    cdef readonly IommuDomain domain           # fq_domain / the domain this cookie belongs to
    cdef readonly Machine machine              # (simulator) the Machine
    cdef readonly IovaDomain iovad             # None until iommu_dma_init_domain()
    cdef readonly list msi_page_list           # [(phys, iova)] struct iommu_dma_msi_page, newest first
    cdef readonly int qt                       # options.qt
    cdef readonly u64 fq_size                  # options.fq_size
    cdef readonly u64 fq_timeout               # options.fq_timeout (ms)
    cdef IovaFq single_fq                      # single_fq (IOMMU_DMA_OPTS_SINGLE_QUEUE)
    cdef list percpu_fq                        # percpu_fq (one IovaFq per CPU)
    cdef vector[void *] fq_ptrs                # (simulator) each CPU's IovaFq (or the single one), borrowed
    cdef readonly u64 fq_flush_start_cnt       # fq_flush_start_cnt
    cdef readonly u64 fq_flush_finish_cnt      # fq_flush_finish_cnt
    cdef readonly bint fq_timer_on             # fq_timer_on
    cdef int fq_timer_cpu                      # CPU whose timer base runs fq_timer
    cdef bint fq_on                            # fq_domain != NULL
    cdef u64 fq_gen                            # bumped by iommu_dma_free_fq (timer_delete_sync)
    cdef dict pci_32bit                        # Device -> dev->iommu->pci_32bit_workaround
    cdef void *pci32_dev                       # (simulator) last device looked up in pci_32bit and
    cdef bint pci32_val                        # its value (False: no entry); every write refreshes it

cdef class DmaIovaState:
    cdef public u64 addr                       # struct dma_iova_state.addr
    cdef u64 _size                             # struct dma_iova_state.__size (bit 63: DMA_IOVA_USE_SWIOTLB)
    cdef object _owner                         # (simulator) the Device dma_iova_try_alloc() allocated for, or None
    cdef u64 _addr0                            # (simulator) addr as dma_iova_try_alloc() set it
    cdef u64 _size0                            # (simulator) dma_iova_size() as allocated

# the two-step IOVA API (include/linux/dma-mapping.h, v6.17+): kernel semantics, no warning flush
cdef bint c_dma_iova_try_alloc(Device dev, DmaIovaState state, u64 phys, u64 size) except? True
cdef int c_dma_iova_free(Device dev, DmaIovaState state) except -1
cdef int c_dma_iova_link(Device dev, DmaIovaState state, u64 phys, u64 offset, u64 size, int dir,
                         unsigned long attrs) except? -9999
cdef int c_dma_iova_sync(Device dev, DmaIovaState state, u64 offset, u64 size) except? -9999
cdef int c_dma_iova_unlink(Device dev, DmaIovaState state, u64 offset, u64 size, int dir,
                           unsigned long attrs) except -1
cdef int c_dma_iova_destroy(Device dev, DmaIovaState state, u64 mapped_len, int dir,
                            unsigned long attrs) except -1
