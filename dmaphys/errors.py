"""Exceptions and warnings of dmaphys, shared by the compiled core and the reference.

Conventions (the kernel's):
- kernel-mirroring calls *return* what the kernel returns (DMA_MAPPING_ERROR, -errno, False);
- what the kernel BUG()s on raises :class:`KernelBug` before any state changes;
- what it WARNs / dev_warn()s about is emitted as :class:`KernelWarning` after the call's
  state changes are complete, so a warning turned into an exception never leaves a half-done
  operation behind;
- hardware-level failures of simulated devices raise :class:`DmaFault` / :class:`IommuFault`;
- CPU loads and stores to a physical address that is neither RAM nor MMIO raise
  :class:`PhysAddrError`.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "DmaphysError", "KernelBug", "KernelWarning", "SwiotlbFullWarning", "DmaDebugWarning",
    "DmaDebugError", "PhysAddrError", "DmaFault", "IommuFault", "DMAError", "check",
]


class DmaphysError(Exception):
    """Base class of dmaphys exceptions."""


class KernelBug(DmaphysError, RuntimeError):
    """Raised where the kernel would BUG(): the call is rejected and no state has changed."""


class KernelWarning(UserWarning):
    """A kernel WARN()/dev_warn() report (the message text is the kernel's)."""


class SwiotlbFullWarning(KernelWarning):
    """The rate-limited "swiotlb buffer is full" dev_warn of swiotlb_tbl_map_single()."""


class DmaDebugWarning(KernelWarning):
    """A dma-debug (kernel/dma/debug.c) err_printk report."""


class DmaDebugError(DmaphysError):
    """A dma-debug report turned into an exception (``m.dma_debug.raise_errors = True``)."""


class PhysAddrError(DmaphysError, ValueError):
    """A CPU load/store to a physical address that is neither RAM nor MMIO."""

    def __init__(self, phys: int, size: int, reason: str = "not RAM or MMIO"):
        self.phys = phys
        self.size = size
        self.reason = reason
        super().__init__(f"CPU access to phys {phys:#x}+{size:#x}: {reason}")


class DmaFault(DmaphysError):
    """A device bus access real hardware would reject (beyond its mask, no target)."""

    def __init__(self, device: str, addr: int, size: int, access: str, reason: str):
        self.device = device
        self.addr = addr
        self.size = size
        self.access = access
        self.reason = reason
        super().__init__(f"{device}: DMA {access} at {addr:#x}+{size:#x}: {reason}")


class IommuFault(DmaFault):
    """A translation fault reported by a simulated IOMMU (unmapped IOVA or permission)."""

    def __init__(self, device: str, iova: int, size: int, access: str, reason: str):
        self.iova = iova
        super().__init__(device, iova, size, access, reason)


class DMAError(DmaphysError, OSError):
    """Pythonic error for a kernel return value (see :func:`check`)."""


def check(ret: int) -> int:
    """Turn a kernel return value into an exception: DMA_MAPPING_ERROR → -ENOMEM, -errno → DMAError.

    Returns ``ret`` unchanged when it is not an error.
    """
    if ret == (1 << 64) - 1:
        raise DMAError(_errno.ENOMEM, "DMA_MAPPING_ERROR")
    if isinstance(ret, int) and ret < 0:
        raise DMAError(-ret, os.strerror(-ret))
    return ret
