# Types, constants and small helpers shared by every _kernel/*.pxi file.
# Mirrors include/linux/types.h, dma-direction.h, dma-mapping.h (constants) and the
# DMA_ATTR_* / IOMMU_* / PCI_P2PDMA_* values of dmaphys/constants.py (tests/test_constants.py
# keeps the two in sync). The declarations are in types.pxd (the C face).
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, types.pxd.

# (cimports of the cython pseudo-module do not carry over from a .pxd: they stay here)
cimport cython
from cython.operator cimport dereference as deref, preincrement as inc, predecrement as dec


cdef inline bint valid_dma_direction(int dir) noexcept nogil:
    return dir == DMA_BIDIRECTIONAL or dir == DMA_TO_DEVICE or dir == DMA_FROM_DEVICE

cdef inline u64 DMA_BIT_MASK_c(int n) noexcept nogil:
    return U64_MAX if n >= 64 else ((<u64>1) << n) - 1
cdef inline u64 min_not_zero(u64 a, u64 b) noexcept nogil:
    if a == 0:
        return b
    if b == 0:
        return a
    return a if a < b else b

cdef inline u64 roundup_pow_of_two(u64 n) noexcept nogil:
    if n <= 1:
        return 1
    return (<u64>1) << fls64(n - 1)

cdef inline int order_base_2(u64 n) noexcept nogil:
    # ilog2 rounded up; order_base_2(0) = order_base_2(1) = 0 as in include/linux/log2.h
    if n <= 1:
        return 0
    return fls64(n - 1)


def _c_constants():
    """The C-level constants, for tests/test_constants.py to compare with dmaphys.constants."""
    return {
        "PAGE_SHIFT": PAGE_SHIFT, "PAGE_SIZE": PAGE_SIZE,
        "DMA_BIDIRECTIONAL": DMA_BIDIRECTIONAL, "DMA_TO_DEVICE": DMA_TO_DEVICE,
        "DMA_FROM_DEVICE": DMA_FROM_DEVICE, "DMA_NONE": DMA_NONE,
        "DMA_ATTR_WEAK_ORDERING": DMA_ATTR_WEAK_ORDERING, "DMA_ATTR_WRITE_COMBINE": DMA_ATTR_WRITE_COMBINE,
        "DMA_ATTR_NO_KERNEL_MAPPING": DMA_ATTR_NO_KERNEL_MAPPING,
        "DMA_ATTR_SKIP_CPU_SYNC": DMA_ATTR_SKIP_CPU_SYNC,
        "DMA_ATTR_FORCE_CONTIGUOUS": DMA_ATTR_FORCE_CONTIGUOUS,
        "DMA_ATTR_ALLOC_SINGLE_PAGES": DMA_ATTR_ALLOC_SINGLE_PAGES, "DMA_ATTR_NO_WARN": DMA_ATTR_NO_WARN,
        "DMA_ATTR_PRIVILEGED": DMA_ATTR_PRIVILEGED, "DMA_ATTR_MMIO": DMA_ATTR_MMIO,
        "DMA_ATTR_ALL": DMA_ATTR_ALL,
        "DMA_MAPPING_ERROR": DMA_MAPPING_ERROR, "DMA_IOVA_USE_SWIOTLB": DMA_IOVA_USE_SWIOTLB,
        "IOMMU_READ": IOMMU_READ, "IOMMU_WRITE": IOMMU_WRITE, "IOMMU_CACHE": IOMMU_CACHE,
        "IOMMU_NOEXEC": IOMMU_NOEXEC, "IOMMU_MMIO": IOMMU_MMIO, "IOMMU_PRIV": IOMMU_PRIV,
        "PCI_P2PDMA_MAP_UNKNOWN": PCI_P2PDMA_MAP_UNKNOWN, "PCI_P2PDMA_MAP_NONE": PCI_P2PDMA_MAP_NONE,
        "PCI_P2PDMA_MAP_NOT_SUPPORTED": PCI_P2PDMA_MAP_NOT_SUPPORTED,
        "PCI_P2PDMA_MAP_BUS_ADDR": PCI_P2PDMA_MAP_BUS_ADDR,
        "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE": PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
        "EIO": EIO, "ENOMEM": ENOMEM, "EFAULT": EFAULT, "EBUSY": EBUSY, "EEXIST": EEXIST,
        "EINVAL": EINVAL, "ERANGE": ERANGE, "EOPNOTSUPP": EOPNOTSUPP, "EADDRINUSE": EADDRINUSE,
        "EREMOTEIO": EREMOTEIO, "ENOENT": ENOENT, "ENXIO": ENXIO, "EOVERFLOW": EOVERFLOW,
        "IOMMU_RESV_DIRECT": IOMMU_RESV_DIRECT, "IOMMU_RESV_DIRECT_RELAXABLE": IOMMU_RESV_DIRECT_RELAXABLE,
        "IOMMU_RESV_RESERVED": IOMMU_RESV_RESERVED, "IOMMU_RESV_MSI": IOMMU_RESV_MSI,
        "IOMMU_RESV_SW_MSI": IOMMU_RESV_SW_MSI,
        "IOMMU_NONE": IOMMU_NONE, "IOMMU_RO": IOMMU_RO, "IOMMU_WO": IOMMU_WO, "IOMMU_RW": IOMMU_RW,
    }


# ---- objects only the core makes -------------------------------------------------------------
# Types whose fields the core fills after creation (domains, cookies, PCI nodes, pagemaps) take
# this token in __cinit__: ``T.__new__(T)`` from Python raises TypeError instead of handing out
# an object whose None/zero fields would crash the first call that uses it.
cdef object _INTERNAL = object()


cdef inline int _internal_only(tuple args, str how) except -1:
    if len(args) != 1 or args[0] is not _INTERNAL:
        raise TypeError(how)
    return 0
