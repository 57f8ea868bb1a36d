"""Reference model of generic_pt / io-pgtable-arm.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []
