# Models drivers/iommu/iova.c and include/linux/iova.h.
# PLACEHOLDER (foundation skeleton).
