# Models kernel/dma/debug.c (CONFIG_DMA_API_DEBUG): live-mapping tracking, the unmap and
# sync checks, cacheline overlap tracking, error counting and the leak report.
# PLACEHOLDER (foundation skeleton): the dma-debug issue replaces the bodies. The debug_dma_*
# hook signatures below are the interface mapping.pxi calls; keep them.

cdef class DmaDebug:
    cdef readonly Machine machine
    cdef public bint enabled

    def __init__(self, Machine machine, enabled):
        self.machine = machine
        self.enabled = bool(enabled)

    cdef void cpu_access(self, u64 phys, u64 n, bint write):
        pass

    cdef void device_wrote(self, Device dev, u64 phys, u64 n):
        pass

    def device_removed(self, dev):
        pass


# Hooks called by mapping.pxi after the backend call (kernel/dma/mapping.c order).
cdef inline void debug_dma_map_phys(Device dev, u64 phys, u64 size, int dir, u64 dma_addr,
                                    unsigned long attrs):
    pass

cdef inline void debug_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir):
    pass

cdef inline void debug_dma_map_single(Device dev, u64 phys, u64 size):
    pass

cdef inline void debug_dma_mapping_error(Device dev, u64 dma_addr):
    pass

cdef inline void debug_dma_map_sg(Device dev, ScatterList sg, int nents, int mapped_ents, int dir,
                                  unsigned long attrs):
    pass

cdef inline void debug_dma_unmap_sg(Device dev, ScatterList sg, int nelems, int dir):
    pass

cdef inline void debug_dma_sync_single_for_cpu(Device dev, u64 dma_handle, u64 size, int dir):
    pass

cdef inline void debug_dma_sync_single_for_device(Device dev, u64 dma_handle, u64 size, int dir):
    pass

cdef inline void debug_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nelems, int dir):
    pass

cdef inline void debug_dma_sync_sg_for_device(Device dev, ScatterList sg, int nelems, int dir):
    pass

cdef inline void debug_dma_alloc_coherent(Device dev, u64 size, u64 dma_addr, u64 phys,
                                          unsigned long attrs):
    pass

cdef inline void debug_dma_free_coherent(Device dev, u64 size, u64 phys, u64 dma_addr):
    pass

cdef inline void debug_dma_stale_iotlb(Device dev, u64 iova, u64 stale_phys, u64 current_phys):
    """Beyond the kernel: a device access used an IOTLB entry whose mapping was already unmapped."""
    pass
