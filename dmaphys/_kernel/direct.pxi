# Models kernel/dma/direct.c and kernel/dma/direct.h: dma_direct_map_phys / unmap / sync / sg,
# dma_capable(), dma_direct_supported(), dma_direct_max_mapping_size().
# PLACEHOLDER (foundation skeleton).
