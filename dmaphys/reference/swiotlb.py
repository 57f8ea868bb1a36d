"""Reference model of kernel/dma/swiotlb.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []


class IoTlbMem:
    def __init__(self, machine, size: int) -> None:
        self.machine = machine
        self.nslabs = size >> 11
        self.start = machine.mem.alloc_pages(size >> 12, 1 << 32, 1)
        self.end = self.start + size
        self.nareas = 1
        self.total_used = 0
        self.used_hiwater = 0


def swiotlb_init(machine, size: int, nareas: int, force: bool) -> IoTlbMem:
    return IoTlbMem(machine, size)


# ---- TEMPORARY (branch "direct"): the swiotlb interface reference/direct.py calls, until the
# swiotlb branch lands with the real model (same names). Dropped on merge.
def c_is_swiotlb_buffer(dev, paddr: int) -> bool:
    mem = dev.dma_io_tlb_mem
    return mem is not None and mem.start <= paddr < mem.end


def c_is_swiotlb_active(dev) -> bool:
    return dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.nslabs != 0


def c_is_swiotlb_force_bounce(dev) -> bool:
    return bool(dev.force_bounce)


def c_swiotlb_max_mapping_size(dev) -> int:
    return 2048 * 128


def c_swiotlb_map(dev, phys: int, size: int, dir: int, attrs: int) -> int:
    raise NotImplementedError("swiotlb is not built yet")


def c_swiotlb_tbl_unmap_single(dev, tlb_addr: int, mapping_size: int, dir: int, attrs: int) -> None:
    pass


def c_swiotlb_sync_single_for_device(dev, tlb_addr: int, size: int, dir: int) -> None:
    pass


def c_swiotlb_sync_single_for_cpu(dev, tlb_addr: int, size: int, dir: int) -> None:
    pass
