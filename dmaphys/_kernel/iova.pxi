# Models drivers/iommu/iova.c and include/linux/iova.h: the IOVA allocator (rbtree of ranges,
# cached nodes, max32_alloc_size), reserve_iova, and the per-CPU rcache (magazines, depot).
# PLACEHOLDER (foundation skeleton): the IOVA work replaces the bodies; the interface (class
# fields and cdef method signatures) is what dma_iommu.pxi builds on.

cdef class IovaDomain:
    """struct iova_domain: ``IovaDomain(granule, start_pfn, ncpus=1)`` (init_iova_domain + rcaches)."""
    cdef readonly u64 granule
    cdef readonly u64 start_pfn
    cdef readonly u64 dma_32bit_pfn
    cdef readonly u64 max32_alloc_size
    cdef readonly int ncpus

    def __init__(self, granule, start_pfn, ncpus=1):
        raise NotImplementedError("the IOVA allocator is not built yet")

    cdef u64 alloc_iova_fast(self, u64 size, u64 limit_pfn, bint flush_rcache, int cpu) except? 0xFFFFFFFFFFFFFFFF:
        """alloc_iova_fast(): start pfn, or 0 on failure (limit_pfn inclusive)."""
        raise NotImplementedError

    cdef int free_iova_fast(self, u64 pfn, u64 size, int cpu) except -1:
        raise NotImplementedError

    cdef int reserve_iova_c(self, u64 pfn_lo, u64 pfn_hi) except -1:
        raise NotImplementedError

    cdef u64 iova_shift(self) noexcept:
        return __ffs64(self.granule)
