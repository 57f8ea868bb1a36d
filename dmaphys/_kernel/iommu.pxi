# Models drivers/iommu/iommu.c: IOMMU instances, domains (DMA, DMA_FQ, identity, blocked,
# unmanaged), iommu_map / iommu_unmap / iommu_iova_to_phys, device attach, and the device's
# translated accesses (iommu_device_access) with IOTLB lookups and faults.
# PLACEHOLDER (foundation skeleton): the IOMMU issue replaces this file.

cdef class IommuDomain:
    """struct iommu_domain. Interface fields (see docs/ARCHITECTURE.md)."""
    cdef readonly Iommu iommu
    cdef readonly str type                     # "dma", "dma-fq", "identity", "blocked", "unmanaged"
    cdef readonly IoPgtable pgtable            # None for identity / blocked
    cdef readonly bint translates              # device accesses go through iommu_device_access
    cdef readonly u64 pgsize_bitmap
    cdef readonly u64 aperture_start
    cdef readonly u64 aperture_end
    cdef public object iova_cookie             # IommuDmaCookie (dma_iommu.pxi) for DMA domains
    cdef readonly list devices


cdef class Iommu:
    cdef readonly Machine machine
    cdef readonly str fmt
    cdef readonly bint strict

    def __init__(self, Machine machine, fmt, strict, iotlb, **kwargs):
        raise NotImplementedError("the IOMMU path is not built yet")

    def attach_device(self, dev, domain, domain_type):
        raise NotImplementedError("the IOMMU path is not built yet")

    def detach_device(self, dev):
        raise NotImplementedError("the IOMMU path is not built yet")


cdef int iommu_device_access(Device dev, u64 iova, u8 *buf, u64 n, bint write) except -1:
    raise NotImplementedError("the IOMMU path is not built yet")
