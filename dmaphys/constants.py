"""Kernel constants with their kernel values, shared by the compiled core and the reference.

Pure Python so that :mod:`dmaphys.reference` can import it without the extension.
Every name is the kernel's spelling; the enum classes only group them.
"""

from __future__ import annotations

import enum
import errno as _errno

__all__ = [
    "DmaDataDirection", "DmaAttr", "IommuProt", "PciP2PdmaMapType",
    "DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE",
    "DMA_ATTR_WEAK_ORDERING", "DMA_ATTR_WRITE_COMBINE", "DMA_ATTR_NO_KERNEL_MAPPING",
    "DMA_ATTR_SKIP_CPU_SYNC", "DMA_ATTR_FORCE_CONTIGUOUS", "DMA_ATTR_ALLOC_SINGLE_PAGES",
    "DMA_ATTR_NO_WARN", "DMA_ATTR_PRIVILEGED", "DMA_ATTR_MMIO", "DMA_ATTR_ALL",
    "DMA_MAPPING_ERROR", "DMA_BIT_MASK", "ULONG_MAX", "SIZE_MAX", "U64_MAX",
    "PAGE_SHIFT", "PAGE_SIZE", "PAGE_MASK",
    "IO_TLB_SHIFT", "IO_TLB_SIZE", "IO_TLB_SEGSIZE", "IO_TLB_DEFAULT_SIZE", "IO_TLB_MIN_SLABS",
    "INVALID_PHYS_ADDR",
    "IOMMU_READ", "IOMMU_WRITE", "IOMMU_CACHE", "IOMMU_NOEXEC", "IOMMU_MMIO", "IOMMU_PRIV",
    "IOVA_RANGE_CACHE_MAX_SIZE", "IOVA_MAG_SIZE", "IOVA_DEFAULT_FQ_SIZE", "IOVA_SINGLE_FQ_SIZE",
    "IOVA_DEFAULT_FQ_TIMEOUT", "IOVA_SINGLE_FQ_TIMEOUT", "DMA_IOVA_USE_SWIOTLB",
    "PCI_P2PDMA_MAP_UNKNOWN", "PCI_P2PDMA_MAP_NONE", "PCI_P2PDMA_MAP_NOT_SUPPORTED",
    "PCI_P2PDMA_MAP_BUS_ADDR", "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
    "ENOMEM", "EINVAL", "EIO", "EREMOTEIO", "EEXIST", "EADDRINUSE", "EOPNOTSUPP", "EFAULT",
    "ENOENT", "ERANGE", "EBUSY", "ENXIO", "EOVERFLOW",
    "IOMMU_RESV_DIRECT", "IOMMU_RESV_DIRECT_RELAXABLE", "IOMMU_RESV_RESERVED", "IOMMU_RESV_MSI",
    "IOMMU_RESV_SW_MSI",
    "IOMMUAccessFlags", "IOMMU_NONE", "IOMMU_RO", "IOMMU_WO", "IOMMU_RW",
    "IOMMU_DIRTY_NO_CLEAR",
    "valid_dma_direction", "dma_direction_name",
]

U64_MAX = (1 << 64) - 1
ULONG_MAX = U64_MAX          # 64-bit kernel
SIZE_MAX = U64_MAX

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & U64_MAX


class DmaDataDirection(enum.IntEnum):
    """Mirrors enum dma_data_direction (include/linux/dma-direction.h)."""

    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3


DMA_BIDIRECTIONAL = DmaDataDirection.DMA_BIDIRECTIONAL
DMA_TO_DEVICE = DmaDataDirection.DMA_TO_DEVICE
DMA_FROM_DEVICE = DmaDataDirection.DMA_FROM_DEVICE
DMA_NONE = DmaDataDirection.DMA_NONE


def valid_dma_direction(dir: int) -> bool:
    """valid_dma_direction() (include/linux/dma-direction.h): only 0, 1 and 2 are valid.

    Models include/linux/dma-direction.h:valid_dma_direction(). Returns True or False. Raises
    nothing.
    """
    return dir in (0, 1, 2)


_DIR_NAMES = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")


def dma_direction_name(dir: int) -> str:
    """dir2name[] of kernel/dma/debug.c.

    Mirrors kernel/dma/debug.c's dir2name[] table. Returns the name ("DMA_TO_DEVICE", ...), or
    "DMA_DIR_<n>" outside 0..3. Raises TypeError for a ``dir`` that does not compare with ints.
    """
    return _DIR_NAMES[dir] if 0 <= dir < 4 else f"DMA_DIR_{dir}"


class DmaAttr(enum.IntFlag):
    """Mirrors the DMA_ATTR_* flags (include/linux/dma-mapping.h).

    Bits 0 and 3 are unused since their removal.
    """

    DMA_ATTR_WEAK_ORDERING = 1 << 1
    DMA_ATTR_WRITE_COMBINE = 1 << 2
    DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4
    DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
    DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6
    DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7
    DMA_ATTR_NO_WARN = 1 << 8
    DMA_ATTR_PRIVILEGED = 1 << 9
    DMA_ATTR_MMIO = 1 << 10


DMA_ATTR_WEAK_ORDERING = DmaAttr.DMA_ATTR_WEAK_ORDERING
DMA_ATTR_WRITE_COMBINE = DmaAttr.DMA_ATTR_WRITE_COMBINE
DMA_ATTR_NO_KERNEL_MAPPING = DmaAttr.DMA_ATTR_NO_KERNEL_MAPPING
DMA_ATTR_SKIP_CPU_SYNC = DmaAttr.DMA_ATTR_SKIP_CPU_SYNC
DMA_ATTR_FORCE_CONTIGUOUS = DmaAttr.DMA_ATTR_FORCE_CONTIGUOUS
DMA_ATTR_ALLOC_SINGLE_PAGES = DmaAttr.DMA_ATTR_ALLOC_SINGLE_PAGES
DMA_ATTR_NO_WARN = DmaAttr.DMA_ATTR_NO_WARN
DMA_ATTR_PRIVILEGED = DmaAttr.DMA_ATTR_PRIVILEGED
DMA_ATTR_MMIO = DmaAttr.DMA_ATTR_MMIO
#: Every attribute bit the modelled kernel defines; any other bit is rejected as bad input.
DMA_ATTR_ALL = int(
    DMA_ATTR_WEAK_ORDERING | DMA_ATTR_WRITE_COMBINE | DMA_ATTR_NO_KERNEL_MAPPING
    | DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_FORCE_CONTIGUOUS | DMA_ATTR_ALLOC_SINGLE_PAGES
    | DMA_ATTR_NO_WARN | DMA_ATTR_PRIVILEGED | DMA_ATTR_MMIO
)

#: ~(dma_addr_t)0 with a 64-bit dma_addr_t.
DMA_MAPPING_ERROR = U64_MAX


def DMA_BIT_MASK(n: int) -> int:
    """DMA_BIT_MASK(n): all ones for n == 64, else (1 << n) - 1.

    Mirrors the DMA_BIT_MASK() macro (include/linux/dma-mapping.h). Returns the mask (int).
    Raises ValueError for ``n`` outside 0..64, TypeError for a non-number.
    """
    if not 0 <= n <= 64:
        raise ValueError(f"DMA_BIT_MASK({n}): n must be 0..64")
    return U64_MAX if n == 64 else (1 << n) - 1


# swiotlb (include/linux/swiotlb.h)
IO_TLB_SHIFT = 11
IO_TLB_SIZE = 1 << IO_TLB_SHIFT
IO_TLB_SEGSIZE = 128
IO_TLB_DEFAULT_SIZE = 64 << 20
IO_TLB_MIN_SLABS = (1 << 20) >> IO_TLB_SHIFT
INVALID_PHYS_ADDR = U64_MAX


class IommuProt(enum.IntFlag):
    """Mirrors the IOMMU_* protection flags (include/linux/iommu.h)."""

    IOMMU_READ = 1 << 0
    IOMMU_WRITE = 1 << 1
    IOMMU_CACHE = 1 << 2
    IOMMU_NOEXEC = 1 << 3
    IOMMU_MMIO = 1 << 4
    IOMMU_PRIV = 1 << 5


IOMMU_READ = IommuProt.IOMMU_READ
IOMMU_WRITE = IommuProt.IOMMU_WRITE
IOMMU_CACHE = IommuProt.IOMMU_CACHE
IOMMU_NOEXEC = IommuProt.IOMMU_NOEXEC
IOMMU_MMIO = IommuProt.IOMMU_MMIO
IOMMU_PRIV = IommuProt.IOMMU_PRIV

class IOMMUAccessFlags(enum.IntFlag):
    """Mirrors QEMU's IOMMUAccessFlags (include/exec/memory.h): IOMMUTLBEntry.perm of dev.translate()."""

    IOMMU_NONE = 0
    IOMMU_RO = 1
    IOMMU_WO = 2
    IOMMU_RW = 3


IOMMU_NONE = IOMMUAccessFlags.IOMMU_NONE
IOMMU_RO = IOMMUAccessFlags.IOMMU_RO
IOMMU_WO = IOMMUAccessFlags.IOMMU_WO
IOMMU_RW = IOMMUAccessFlags.IOMMU_RW

# IommuDomain.read_and_clear_dirty() flag (include/linux/iommu.h)
IOMMU_DIRTY_NO_CLEAR = 1 << 0

# enum iommu_resv_type (include/linux/iommu.h)
IOMMU_RESV_DIRECT = 0
IOMMU_RESV_DIRECT_RELAXABLE = 1
IOMMU_RESV_RESERVED = 2
IOMMU_RESV_MSI = 3
IOMMU_RESV_SW_MSI = 4

# drivers/iommu/iova.c, dma-iommu.c
IOVA_RANGE_CACHE_MAX_SIZE = 6
IOVA_MAG_SIZE = 127
IOVA_DEFAULT_FQ_SIZE = 256
IOVA_SINGLE_FQ_SIZE = 32768
IOVA_DEFAULT_FQ_TIMEOUT = 10      # ms
IOVA_SINGLE_FQ_TIMEOUT = 1000     # ms
DMA_IOVA_USE_SWIOTLB = 1 << 63


class PciP2PdmaMapType(enum.IntEnum):
    """Mirrors enum pci_p2pdma_map_type (include/linux/pci-p2pdma.h)."""

    PCI_P2PDMA_MAP_UNKNOWN = 0
    PCI_P2PDMA_MAP_NONE = 1
    PCI_P2PDMA_MAP_NOT_SUPPORTED = 2
    PCI_P2PDMA_MAP_BUS_ADDR = 3
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 4


PCI_P2PDMA_MAP_UNKNOWN = PciP2PdmaMapType.PCI_P2PDMA_MAP_UNKNOWN
PCI_P2PDMA_MAP_NONE = PciP2PdmaMapType.PCI_P2PDMA_MAP_NONE
PCI_P2PDMA_MAP_NOT_SUPPORTED = PciP2PdmaMapType.PCI_P2PDMA_MAP_NOT_SUPPORTED
PCI_P2PDMA_MAP_BUS_ADDR = PciP2PdmaMapType.PCI_P2PDMA_MAP_BUS_ADDR
PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = PciP2PdmaMapType.PCI_P2PDMA_MAP_THRU_HOST_BRIDGE

# errnos: the kernel returns them negated; the values are Linux's (the errno module's here).
ENOMEM = _errno.ENOMEM
EINVAL = _errno.EINVAL
EIO = _errno.EIO
EREMOTEIO = _errno.EREMOTEIO
EEXIST = _errno.EEXIST
EADDRINUSE = _errno.EADDRINUSE
EOPNOTSUPP = _errno.EOPNOTSUPP
EFAULT = _errno.EFAULT
ENOENT = _errno.ENOENT
ERANGE = _errno.ERANGE
EBUSY = _errno.EBUSY
ENXIO = _errno.ENXIO
EOVERFLOW = _errno.EOVERFLOW
