"""Reference model of drivers/iommu/dma-iommu.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
