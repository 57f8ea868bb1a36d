# Models kernel/dma/mapping.c and include/linux/dma-mapping.h: the kernel-named entry points
# (dma_map_phys, dma_map_page_attrs, dma_map_resource, dma_map_sg_attrs, syncs, masks, ...)
# and the dispatch between dma-direct and dma-iommu.
# PLACEHOLDER (foundation skeleton).
