# Models include/trace/events/dma.h: the dma:* tracepoints, recorded when m.trace.enabled.
# PLACEHOLDER (foundation skeleton): the tracepoint issue replaces the bodies. The trace_dma_*
# hook signatures below are the interface mapping.pxi calls; keep them.

cdef class DmaTrace:
    cdef readonly Machine machine
    cdef public bint enabled

    def __init__(self, Machine machine):
        self.machine = machine
        self.enabled = False


cdef inline void trace_dma_map_phys(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                    unsigned long attrs):
    pass

cdef inline void trace_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir, unsigned long attrs):
    pass

cdef inline void trace_dma_map_sg(Device dev, ScatterList sg, int nents, int ents, int dir,
                                  unsigned long attrs):
    pass

cdef inline void trace_dma_map_sg_err(Device dev, ScatterList sg, int nents, int err, int dir,
                                      unsigned long attrs):
    pass

cdef inline void trace_dma_unmap_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs):
    pass

cdef inline void trace_dma_sync_single_for_cpu(Device dev, u64 dma_addr, u64 size, int dir):
    pass

cdef inline void trace_dma_sync_single_for_device(Device dev, u64 dma_addr, u64 size, int dir):
    pass

cdef inline void trace_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nents, int dir):
    pass

cdef inline void trace_dma_sync_sg_for_device(Device dev, ScatterList sg, int nents, int dir):
    pass

cdef inline void trace_dma_alloc(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                 unsigned long attrs):
    pass

cdef inline void trace_dma_free(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                unsigned long attrs):
    pass

cdef inline void trace_swiotlb_bounced(Device dev, u64 dma_addr, u64 size):
    pass
