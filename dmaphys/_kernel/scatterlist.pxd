# The C face of _kernel/scatterlist.pxi: include/linux/scatterlist.h: struct scatterlist, sg_table.

cdef enum:
    SG_DMA_BUS_ADDRESS = 1 << 0                # sg_dma_mark_bus_address()
    SG_DMA_SWIOTLB = 1 << 1                    # sg_dma_mark_swiotlb()

cdef struct scatterlist:
    u64 page_phys                              # page_to_phys(sg_page(sg))
    u64 offset                                 # offset
    u64 length                                 # length
    u64 dma_address                            # dma_address
    u64 dma_length                             # dma_length
    u32 dma_flags                              # dma_flags (SG_DMA_*)


cdef class ScatterList:
    cdef vector[scatterlist] sg                # sg_table.sgl (the entries, orig_nents of them)
    cdef public int nents                      # sg_table.nents (set by dma_map_sgtable)
    cdef readonly int orig_nents               # sg_table.orig_nents

cdef class ScatterlistEntry:
    cdef readonly ScatterList table            # (simulator) the ScatterList it views
    cdef readonly Py_ssize_t index             # (simulator) its index there
