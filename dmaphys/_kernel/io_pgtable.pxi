# Models IOMMU radix page tables in hardware formats: drivers/iommu/generic_pt (VT-d second
# stage "vtd-ss"/"vtd-ss-5level", x86-64 first stage "x86-64"/"x86-64-5level") and
# drivers/iommu/io-pgtable-arm.c (ARM LPAE stage 1, 4K/16K/64K granules), plus the
# iommu_map()/iommu_unmap() page-size splitting of drivers/iommu/iommu.c.
# PLACEHOLDER (foundation skeleton): the page-table work replaces the bodies; the interface
# (class fields and cdef method signatures) is what iommu.pxi / dma_iommu.pxi build on.

cdef class IoPgtable:
    """One IOMMU page table in simulated RAM: ``IoPgtable(machine, fmt, ias=None, oas=None)``."""
    cdef readonly Machine machine
    cdef readonly str fmt
    cdef readonly u64 pgsize_bitmap            # domain->pgsize_bitmap
    cdef readonly int ias                      # input (IOVA) address bits
    cdef readonly int oas                      # output address bits
    cdef readonly u64 pgtable_root             # physical address of the top-level table
    cdef readonly u64 leaf_writes              # counters
    cdef readonly u64 table_pages
    cdef readonly u64 walk_reads
    cdef public bint defer_free                # collect freed table pages instead of freeing
    cdef vector[u64] pending_free              # table pages waiting for an IOTLB flush

    def __init__(self, Machine machine, str fmt, ias=None, oas=None):
        raise NotImplementedError("page tables are not built yet")

    cdef int map_pages(self, u64 iova, u64 paddr, u64 pgsize, u64 pgcount, int prot,
                       u64 *mapped) except? -9999:
        """io_pgtable_ops->map_pages: 0 or -errno; *mapped += bytes mapped."""
        raise NotImplementedError

    cdef u64 unmap_pages(self, u64 iova, u64 pgsize, u64 pgcount) except? 0xFFFFFFFFFFFFFFFF:
        """io_pgtable_ops->unmap_pages: bytes unmapped (0 on refusal)."""
        raise NotImplementedError

    cdef u64 iova_to_phys(self, u64 iova) noexcept:
        """io_pgtable_ops->iova_to_phys: 0 when unmapped."""
        return 0

    cdef int lookup(self, u64 iova, u64 *phys, int *prot, u64 *leaf_size) noexcept:
        """The hardware walk: 0 and the translation, permissions (IOMMU_*) and leaf size, or -1."""
        return -1

    cdef int release_pending(self) except -1:
        """Free the table pages collected while defer_free was set (after the IOTLB flush)."""
        return 0

    cdef int free_tables(self) except -1:
        """Free every table page (domain teardown)."""
        return 0


cdef u64 iommu_pgsize(u64 pgsize_bitmap, u64 iova, u64 paddr, u64 size, u64 *count) noexcept:
    """drivers/iommu/iommu.c iommu_pgsize()."""
    return 0


cdef int pgtable_map(IoPgtable pt, u64 iova, u64 paddr, u64 size, int prot) except? -9999:
    """iommu_map_nosync()'s loop over iommu_pgsize(): 0 or -errno (unwinds on failure)."""
    raise NotImplementedError


cdef u64 pgtable_unmap(IoPgtable pt, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF:
    """__iommu_unmap()'s loop: bytes unmapped."""
    raise NotImplementedError
