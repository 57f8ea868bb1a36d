# The IOTLB model: a per-IOMMU translation cache (capacity, associativity, replacement).
# PLACEHOLDER (foundation skeleton).
