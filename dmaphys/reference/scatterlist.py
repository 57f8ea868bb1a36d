"""Reference model of struct scatterlist / sg_table (mirrors _kernel/scatterlist.pxi)."""

from __future__ import annotations

from ._util import u64

__all__ = ["ScatterList", "ScatterlistEntry", "sg_dma_is_bus_address", "sg_dma_is_swiotlb"]

PAGE_SIZE = 4096
SG_DMA_BUS_ADDRESS = 1 << 0
SG_DMA_SWIOTLB = 1 << 1


class ScatterlistEntry:
    """One struct scatterlist.

    Reference twin of dmaphys._core.ScatterlistEntry: same returns and raises.
    """

    def __init__(self, phys: int, length: int, index: int) -> None:
        self.page_phys = phys & ~(PAGE_SIZE - 1)
        self.offset = phys & (PAGE_SIZE - 1)
        self.length = length
        self.dma_address = 0
        self.dma_length = 0
        self.dma_flags = 0
        self.index = index

    @property
    def phys(self) -> int:
        """Reference twin of dmaphys._core.ScatterlistEntry.phys."""
        return self.page_phys + self.offset

    def __repr__(self) -> str:
        return (f"<sg {self.index}: phys={self.phys:#x} len={self.length:#x} "
                f"dma={self.dma_address:#x}/{self.dma_length:#x}>")


class ScatterList:
    """Reference twin of dmaphys._core.ScatterList."""

    def __init__(self, entries) -> None:
        self.sg: list[ScatterlistEntry] = []
        for phys, length in entries:
            phys = u64(phys, "phys")
            length = u64(length, "length")
            if length == 0 or length > 0xFFFFFFFF:
                raise ValueError("scatterlist entry length must be 1..2^32-1 (unsigned int)")
            if phys + length - 1 > (1 << 64) - 1:
                raise ValueError("scatterlist entry wraps the address space")
            self.sg.append(ScatterlistEntry(phys, length, len(self.sg)))
        if not self.sg:
            raise ValueError("a scatterlist needs at least one entry")
        self.orig_nents = len(self.sg)
        self.nents = self.orig_nents

    def __len__(self) -> int:
        return len(self.sg)

    def __getitem__(self, i: int) -> ScatterlistEntry:
        return self.sg[i]

    def __iter__(self):
        return iter(self.sg)

    def dma_segments(self) -> list[tuple[int, int]]:
        """Reference twin of dmaphys._core.ScatterList.dma_segments: same returns and raises."""
        return [(s.dma_address, s.dma_length) for s in self.sg[:self.nents]]

    def __repr__(self) -> str:
        return f"<dmaphys.reference.ScatterList orig_nents={self.orig_nents} nents={self.nents}>"


def _entry_arg(sg) -> ScatterlistEntry:
    if not isinstance(sg, ScatterlistEntry):
        raise TypeError(f"sg must be a ScatterlistEntry, not {type(sg).__name__}")
    return sg


def sg_dma_is_bus_address(sg: ScatterlistEntry) -> bool:
    """sg_dma_is_bus_address(): the entry holds a PCI bus address (P2PDMA), not an IOVA/DMA address.

    Reference twin of dmaphys._core.sg_dma_is_bus_address; same returns and raises.
    """
    _entry_arg(sg)
    return bool(sg.dma_flags & SG_DMA_BUS_ADDRESS)


def sg_dma_is_swiotlb(sg: ScatterlistEntry) -> bool:
    """sg_dma_is_swiotlb(): dma-iommu mapped this list entry by entry through swiotlb.

    Reference twin of dmaphys._core.sg_dma_is_swiotlb; same returns and raises.
    """
    _entry_arg(sg)
    return bool(sg.dma_flags & SG_DMA_SWIOTLB)
