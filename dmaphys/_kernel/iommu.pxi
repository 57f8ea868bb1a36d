# Models drivers/iommu/iommu.c: IOMMU instances, domains (DMA, DMA_FQ, identity, blocked,
# unmanaged), iommu_map / iommu_unmap / iommu_iova_to_phys, device attach, and the device's
# translated accesses (iommu_device_access) with IOTLB lookups and faults.
# PLACEHOLDER (foundation skeleton): the IOMMU issue replaces this file.

cdef class Iommu:
    def __init__(self, Machine machine, fmt, strict, iotlb, **kwargs):
        raise NotImplementedError("the IOMMU path is not built yet")

    def attach_device(self, dev, domain, domain_type):
        raise NotImplementedError("the IOMMU path is not built yet")

    def detach_device(self, dev):
        raise NotImplementedError("the IOMMU path is not built yet")


cdef int iommu_device_access(Device dev, u64 iova, u8 *buf, u64 n, bint write) except -1:
    raise NotImplementedError("the IOMMU path is not built yet")
