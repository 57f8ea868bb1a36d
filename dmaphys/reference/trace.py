"""Reference model of include/trace/events/dma.h. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []


class DmaTrace:
    def __init__(self, machine) -> None:
        self.machine = machine
        self.enabled = False
