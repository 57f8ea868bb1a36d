"""Reference model of the IOTLB model. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
