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
