"""Argument validation shared by the reference modules (same messages as the core's _u64)."""

from __future__ import annotations

U64_MAX = (1 << 64) - 1


# m.warnings_log and m.dma_debug.errors keep the first this many records and count the rest
LOG_RECORDS_MAX = 10000


def u64(v: object, what: str) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    v = v.__index__()  # type: ignore[attr-defined]
    if v < 0 or v > U64_MAX:
        raise ValueError(f"{what} {v:#x} is not a 64-bit unsigned value")
    return v


def typed(v, cls, what: str):
    """``v`` if it is a ``cls`` (None included: TypeError, as the core's ``T x not None`` arguments)."""
    if not isinstance(v, cls):
        raise TypeError(f"{what} must be a {cls.__name__}, not {type(v).__name__}")
    return v


def as_bytes(data: object) -> bytes:
    if isinstance(data, str):
        raise TypeError("data must be bytes-like, not str")
    mv = memoryview(data)  # type: ignore[arg-type]
    if not mv.c_contiguous:
        raise ValueError("data must be C-contiguous")
    return mv.cast("B").tobytes()


def min_not_zero(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


def DMA_BIT_MASK(n: int) -> int:
    return U64_MAX if n >= 64 else (1 << n) - 1
