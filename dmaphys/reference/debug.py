"""Reference model of kernel/dma/debug.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []


class DmaDebug:
    def __init__(self, machine, enabled) -> None:
        self.machine = machine
        self.enabled = bool(enabled)

    def cpu_access(self, phys: int, n: int, write: bool) -> None:
        pass

    def device_wrote(self, dev, phys: int, n: int) -> None:
        pass

    def device_removed(self, dev) -> None:
        pass
