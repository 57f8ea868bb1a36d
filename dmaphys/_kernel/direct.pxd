# The C face of _kernel/direct.pxi: kernel/dma/direct.c + direct.h (no public entry points: reached through mapping).

cdef enum:
    # x86's ZONE_DMA: zone_dma_limit = DMA_BIT_MASK(24) (CONFIG_ZONE_DMA=y)
    ZONE_DMA_BITS = 24

# dma_direct_map_phys() is a static inline of direct.h: mapping.c and direct.c each get their
# own copy, so its dev_WARN_ONCE fires once per copy. The caller says which copy runs.
cdef enum:
    DIRECT_H_IN_MAPPING_C = 0
    DIRECT_H_IN_DIRECT_C = 1
