# Models drivers/iommu/dma-iommu.c: the IOVA cookie, iommu_dma_map_phys / unmap, sg, syncs,
# the flush queue, and the two-step IOVA API (dma_iova_try_alloc, dma_iova_link, ...).
# PLACEHOLDER (foundation skeleton): the IOMMU issue replaces the bodies. These signatures are
# what mapping.pxi dispatches to when dev.dma_iommu is set (use_dma_iommu()).

cdef u64 iommu_dma_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_unmap_phys(Device dev, u64 dma_handle, u64 size, int dir, unsigned long attrs) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_sync_single_for_cpu(Device dev, u64 dma_handle, u64 size, int dir) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_sync_single_for_device(Device dev, u64 dma_handle, u64 size, int dir) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_map_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except? -9999:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_unmap_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nents, int dir) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_sync_sg_for_device(Device dev, ScatterList sg, int nents, int dir) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef u64 iommu_dma_max_mapping_size(Device dev) except? 0:
    raise NotImplementedError("dma-iommu is not built yet")

cdef u64 iommu_dma_alloc(Device dev, u64 size, u64 *phys_out, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_alloc_coherent through the IOMMU: allocate pages, map them; returns the IOVA."""
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_free(Device dev, u64 size, u64 phys, u64 dma_handle, unsigned long attrs) except -1:
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_dma_init_domain(IommuDomain domain, Device dev) except -1:
    """iommu_dma_init_domain() (+ iommu_get_dma_cookie): called by attach for DMA/DMA_FQ domains;
    creates domain.iova_cookie and reserves the IOMMU's reserved regions."""
    raise NotImplementedError("dma-iommu is not built yet")

cdef int iommu_put_dma_cookie(IommuDomain domain) except -1:
    """iommu_put_dma_cookie(): tear down the cookie when the domain is freed (iommu.pxi calls it)."""
    domain.iova_cookie = None
    return 0
