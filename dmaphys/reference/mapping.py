"""Reference model of kernel/dma/mapping.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
