# numpy batch entry points (dma_map_phys_batch, ...): loops in compiled code.
# PLACEHOLDER (foundation skeleton).
