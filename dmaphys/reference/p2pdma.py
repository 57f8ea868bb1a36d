"""Reference model of drivers/pci/p2pdma.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

U64_MAX = (1 << 64) - 1
__all__: list[str] = []


class P2PTopology:
    def __init__(self, machine) -> None:
        self.machine = machine

    def add_device(self, dev, parent) -> None:
        if parent is not None:
            raise NotImplementedError("PCI topology (parent=) is not built yet")


def p2p_bus_to_phys(dev, bus_addr: int, n: int) -> int:
    return U64_MAX
