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
    """Base class of dmaphys exceptions.

    Simulator-only: the kernel reports errors through return values, BUG() and WARN().
    """


class KernelBug(DmaphysError, RuntimeError):
    """Raised where the kernel would BUG(): the call is rejected and no state has changed.

    Mirrors BUG() / BUG_ON() (include/asm-generic/bug.h).
    """


class KernelWarning(UserWarning):
    """A kernel WARN()/dev_warn() report (the message text is the kernel's).

    Mirrors WARN() / WARN_ONCE() (include/asm-generic/bug.h) and dev_warn(); queued by
    machine.kwarn() and emitted when the entry point returns.
    """


class SwiotlbFullWarning(KernelWarning):
    """The rate-limited "swiotlb buffer is full" dev_warn of swiotlb_tbl_map_single()."""


class DmaDebugWarning(KernelWarning):
    """A dma-debug (kernel/dma/debug.c) err_printk() report."""


class DmaDebugError(DmaphysError):
    """A dma-debug report turned into an exception (``m.dma_debug.raise_errors = True``).

    Simulator-only: kernel/dma/debug.c's err_printk() only prints; raised by
    DmaDebug.raise_pending() after the operation completed.
    """


class PhysAddrError(DmaphysError, ValueError):
    """A CPU load/store to a physical address that is neither RAM nor MMIO.

    Simulator-only: where the kernel's memcpy() would fault (an oops), e.g. swiotlb_bounce()
    on a buffer outside RAM. Attributes ``phys``, ``size``, ``reason``; also a ValueError.
    """

    def __init__(self, phys: int, size: int, reason: str = "not RAM or MMIO"):
        self.phys = phys
        self.size = size
        self.reason = reason
        super().__init__(f"CPU access to phys {phys:#x}+{size:#x}: {reason}")


class DmaFault(DmaphysError):
    """A device bus access real hardware would reject (beyond its mask, no target).

    Simulator-only: hardware behaviour (a master abort / unsupported request), no kernel
    call. Attributes ``device``, ``addr``, ``size``, ``access``, ``reason``.
    """

    def __init__(self, device: str, addr: int, size: int, access: str, reason: str):
        self.device = device
        self.addr = addr
        self.size = size
        self.access = access
        self.reason = reason
        super().__init__(f"{device}: DMA {access} at {addr:#x}+{size:#x}: {reason}")


class IommuFault(DmaFault):
    """A translation fault reported by a simulated IOMMU (unmapped IOVA or permission).

    Mirrors what the IOMMU drivers' fault handlers report (e.g. VT-d dmar_fault(),
    report_iommu_fault()). Attribute ``iova`` besides DmaFault's.
    """

    def __init__(self, device: str, iova: int, size: int, access: str, reason: str):
        self.iova = iova
        super().__init__(device, iova, size, access, reason)


class DMAError(DmaphysError, OSError):
    """Pythonic error for a kernel return value (see :func:`check`).

    Simulator-only: an OSError whose errno is the kernel's (-ret).
    """


def check(ret: int) -> int:
    """Turn a kernel return value into an exception: DMA_MAPPING_ERROR → -ENOMEM, -errno → DMAError.

    Simulator-only helper (the kernel has no exceptions). Returns ``ret`` unchanged when it is
    not an error. Raises DMAError with errno ENOMEM for DMA_MAPPING_ERROR and with errno
    ``-ret`` for a negative ``ret``.
    """
    if ret == (1 << 64) - 1:
        raise DMAError(_errno.ENOMEM, "DMA_MAPPING_ERROR")
    if isinstance(ret, int) and ret < 0:
        raise DMAError(-ret, os.strerror(-ret))
    return ret
