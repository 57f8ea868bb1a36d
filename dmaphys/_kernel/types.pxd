# The C face of _kernel/types.pxi: include/linux/types.h, dma-direction.h, dma-mapping.h constants: typedefs, enums, DMA_MAPPING_ERROR.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t
from libc.string cimport memcpy, memset, memmove, memcmp
from libc.stdlib cimport malloc, calloc, free, realloc
from libcpp.vector cimport vector
from libcpp.map cimport map as cppmap
from libcpp.unordered_map cimport unordered_map
from libcpp.utility cimport pair
cimport cython

ctypedef uint64_t u64
ctypedef uint32_t u32
ctypedef uint16_t u16
ctypedef uint8_t u8
ctypedef uint64_t dma_addr_t
ctypedef uint64_t phys_addr_t

cdef extern from *:
    """
    #define DMAPHYS_U64_MAX (~(uint64_t)0)
    #define DMAPHYS_DMA_MAPPING_ERROR (~(uint64_t)0)
    #define DMAPHYS_DMA_IOVA_USE_SWIOTLB (1ULL << 63)
    static inline int dmaphys_fls64(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }
    static inline int dmaphys_ffs64(uint64_t x) { return x ? __builtin_ctzll(x) : 64; }
    """
    const u64 U64_MAX "DMAPHYS_U64_MAX"
    const u64 DMA_MAPPING_ERROR "DMAPHYS_DMA_MAPPING_ERROR"
    const u64 DMA_IOVA_USE_SWIOTLB "DMAPHYS_DMA_IOVA_USE_SWIOTLB"
    int fls64 "dmaphys_fls64"(u64 x) noexcept nogil      # fls64(): 1-based index of top bit
    int __ffs64 "dmaphys_ffs64"(u64 x) noexcept nogil    # __ffs(): index of lowest set bit

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096

cdef enum dma_data_direction:                 # include/linux/dma-direction.h
    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3

cdef enum:                                     # include/linux/dma-mapping.h
    DMA_ATTR_WEAK_ORDERING = 1 << 1
    DMA_ATTR_WRITE_COMBINE = 1 << 2
    DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4
    DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
    DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6
    DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7
    DMA_ATTR_NO_WARN = 1 << 8
    DMA_ATTR_PRIVILEGED = 1 << 9
    DMA_ATTR_MMIO = 1 << 10
    DMA_ATTR_ALL = 0x7f6

cdef enum:                                     # include/linux/iommu.h
    IOMMU_READ = 1 << 0
    IOMMU_WRITE = 1 << 1
    IOMMU_CACHE = 1 << 2
    IOMMU_NOEXEC = 1 << 3
    IOMMU_MMIO = 1 << 4
    IOMMU_PRIV = 1 << 5

cdef enum iommu_resv_type:                     # include/linux/iommu.h
    IOMMU_RESV_DIRECT = 0
    IOMMU_RESV_DIRECT_RELAXABLE = 1
    IOMMU_RESV_RESERVED = 2
    IOMMU_RESV_MSI = 3
    IOMMU_RESV_SW_MSI = 4

cdef enum:                                     # include/linux/pci-p2pdma.h enum pci_p2pdma_map_type
    PCI_P2PDMA_MAP_UNKNOWN = 0
    PCI_P2PDMA_MAP_NONE = 1
    PCI_P2PDMA_MAP_NOT_SUPPORTED = 2
    PCI_P2PDMA_MAP_BUS_ADDR = 3
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 4

cdef enum:                                     # Linux errno values (returned negated)
    ENOENT = 2
    EIO = 5
    ENXIO = 6
    ENOMEM = 12
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    EINVAL = 22
    ERANGE = 34
    EOPNOTSUPP = 95
    EADDRINUSE = 98
    EOVERFLOW = 75
    EREMOTEIO = 121

cdef enum:                                    # QEMU's IOMMUAccessFlags (include/exec/memory.h)
    IOMMU_NONE = 0                            # for dev.translate() / IOMMUTLBEntry.perm
    IOMMU_RO = 1
    IOMMU_WO = 2
    IOMMU_RW = 3
