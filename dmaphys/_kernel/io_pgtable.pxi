# Models IOMMU radix page tables in hardware formats: drivers/iommu/generic_pt (VT-d second
# stage, x86-64 first stage) and drivers/iommu/io-pgtable-arm.c (ARM LPAE stage 1).
# PLACEHOLDER (foundation skeleton).
