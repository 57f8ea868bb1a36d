"""Reference model of kernel/dma/direct.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
