"""Reference model of the numpy batch entry points. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
