"""Reference model of drivers/iommu/iommu.c (mirrors dmaphys/_kernel/iommu.pxi).

IOMMU instances, domains (DMA, DMA_FQ, identity, blocked, unmanaged), iommu_map / iommu_unmap /
iommu_iova_to_phys, device attach, and a device's translated requests (iommu_device_access):
one translation per request that never crosses a 4 KiB boundary, IOTLB first, then a walk.
"""

from __future__ import annotations

import logging

from ..errors import DmaFault, IommuFault, KernelWarning
from . import debug as _debug
from ._util import U64_MAX, min_not_zero, typed, u64
from .io_pgtable import (
    EOPNOTSUPP,
    IOMMU_DIRTY_NO_CLEAR,
    IOPGTABLE_FORMATS,
    IoPgtable,
    _describe,
    _ffs,
    _sizes,
    iommu_map_pages_loop,
    pgtable_unmap,
)
from .iotlb import Iotlb

__all__ = ["Iommu", "IommuDomain", "iommu_map", "iommu_unmap", "iommu_unmap_fast",
           "iommu_iotlb_sync", "iommu_iova_to_phys", "iommu_domain_free",
           "iommu_attach_device", "iommu_detach_device", "IOMMU_DOMAIN_TYPES", "IOMMUTLBEntry"]

_log = logging.getLogger("dmaphys")

IOMMU_READ, IOMMU_WRITE = 1 << 0, 1 << 1
EINVAL, EBUSY, ENODEV = 22, 16, 19
PAGE_SIZE = 4096
# include/linux/iommu.h domain type bits
_PAGING, _DMA_API, _PT, _DMA_FQ = 1 << 0, 1 << 1, 1 << 2, 1 << 3
IOMMU_DOMAIN_TYPES = {"blocked": 0, "identity": _PT, "unmanaged": _PAGING, "dma": _PAGING | _DMA_API,
                      "dma-fq": _PAGING | _DMA_API | _DMA_FQ}
_RESV_TYPE_NAMES = ("direct", "direct_relaxable", "reserved", "msi", "sw_msi")
IOMMU_FAULT_MODES = ("raise", "record")
_VTD_FAULT = {"blocked": (0x02, "Present bit in context entry is clear"),
              "address-size": (0x04, "Access beyond MGAW"),
              "write": (0x05, "PTE Write access is not set"),
              "read": (0x06, "PTE Read access is not set")}


def iommu_notify(mmu, d, iova: int, size: int) -> None:
    """Mirrors iommu.pxi iommu_notify() (no C hooks here): callbacks in order; an exception is
    deferred to the entry point's flush_warnings()."""
    for cb in list(mmu.notifiers):
        try:
            cb(d, iova, size)
        except Exception as exc:
            mmu.machine.defer_exception(exc)


def _dma_iommu():
    from . import dma_iommu  # imports this module: resolved at call time
    return dma_iommu


class IommuDomain:
    """Reference twin of dmaphys._core.IommuDomain (made by the Iommu, never directly)."""

    def __init__(self, iommu, type: str, is_default: bool, _token=None):
        if _token is not _TOKEN:
            raise TypeError("IommuDomain objects come from Iommu.domain_alloc() or device attach")
        self.iommu = iommu
        self.type = type
        self.type_value = IOMMU_DOMAIN_TYPES[type]
        self.devices: list = []
        self.iova_cookie = None
        self.is_default = is_default
        self.freed = False
        iommu._next_domid += 1
        self.id = iommu._next_domid
        self.stale_hits = self.faults = self.iotlb_syncs = self.iotlb_flushes = 0
        self.dirty_ops = self.dirty_tracking = False
        if self.type_value & _PAGING:
            # dirty_tracking IOMMU: allocated as with IOMMU_HWPT_ALLOC_DIRTY_TRACKING (see core;
            # arm-smmu-v3 offers HD only with a coherent walker)
            arm_s1 = iommu.fmt.startswith("arm-lpae-s1")
            dirty = iommu.dirty_tracking and iommu.coherent_walk
            self.pgtable = IoPgtable(iommu.machine, iommu.fmt, iommu.ias, iommu.oas,
                                     coherent_walk=iommu.coherent_walk, iommu_dev=iommu.iommu_dev,
                                     arm_hd=dirty and arm_s1)
            if dirty and self.pgtable.has_dirty():
                self.dirty_ops, self.dirty_tracking = True, arm_s1
            self.pgtable.defer_free = True
            self.pgsize_bitmap = self.pgtable.pgsize_bitmap
            self.aperture_start = self.pgtable.aperture_start
            self.aperture_end = self.pgtable.aperture_end
            self.translates = True
            bm, self.leaf_shifts = self.pgsize_bitmap, []
            while bm and len(self.leaf_shifts) < 64:
                self.leaf_shifts.append(_ffs(bm))
                bm &= bm - 1
        else:
            self.pgtable = None
            self.pgsize_bitmap = self.aperture_start = self.aperture_end = 0
            self.translates = self.type_value == 0
            self.leaf_shifts = []

    @property
    def pgtable_root(self) -> int:
        """Reference twin of dmaphys._core.IommuDomain.pgtable_root."""
        return self.pgtable.pgtable_root if self.pgtable is not None else 0

    @property
    def stats(self):
        """Reference twin of dmaphys._core.IommuDomain.stats."""
        return {"stale_hits": self.stale_hits, "faults": self.faults,
                "iotlb_syncs": self.iotlb_syncs, "iotlb_flushes": self.iotlb_flushes}

    def iova_to_phys_batch(self, iovas):
        """Reference twin of dmaphys._core.IommuDomain.iova_to_phys_batch: same returns and raises."""
        from .batch import iommu_iova_to_phys_batch
        return iommu_iova_to_phys_batch(self, iovas)

    # ---- dirty tracking (struct iommu_dirty_ops) -------------------------------------------
    def set_dirty_tracking(self, enable):
        """Reference twin of dmaphys._core.IommuDomain.set_dirty_tracking: same returns and raises."""
        if self.freed:
            raise ValueError(f"IOMMU domain {self.id} was freed")
        if not self.dirty_ops:
            return -EOPNOTSUPP
        if not self.iommu.fmt.startswith("arm-lpae"):
            self.dirty_tracking = bool(enable)
        return 0

    def read_and_clear_dirty(self, iova, size, flags=0):
        """Reference twin of dmaphys._core.IommuDomain.read_and_clear_dirty: same returns and raises."""
        va, sz, fl = u64(iova, "iova"), u64(size, "size"), u64(flags, "flags")
        rec: list = []
        if self.freed:
            raise ValueError(f"IOMMU domain {self.id} was freed")
        if not self.dirty_ops or fl & ~IOMMU_DIRTY_NO_CLEAR:
            return -EOPNOTSUPP, rec
        g = [U64_MAX, 0]
        ret = self.pgtable.read_and_clear_dirty(va, sz, fl, rec, g)
        if not fl & IOMMU_DIRTY_NO_CLEAR:
            iommu_iotlb_sync_range(self, g[0], g[1] - g[0] + 1 if g[1] >= g[0] else 0)
        self.iommu.machine.flush_warnings()
        return ret, rec

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.IommuDomain id={self.id} {self.type} devices={len(self.devices)}"
                f"{' freed' if self.freed else ''}>")


_TOKEN = object()


def _resv_regions(regions):
    out = []
    for r in regions:
        if hasattr(r, "type") and hasattr(r, "start"):
            start, length, t = r.start, r.length, r.type
        else:
            start, length, t = r
        if isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < len(_RESV_TYPE_NAMES):
                raise ValueError(f"unknown IOMMU reserved-region type {t!r}")
            t = _RESV_TYPE_NAMES[t]
        else:
            t = str(t).lower().replace("-", "_")
            if t.startswith("iommu_resv_"):
                t = t[len("iommu_resv_"):]
            if t not in _RESV_TYPE_NAMES:
                raise ValueError(f"unknown IOMMU reserved-region type {r!r}")
        out.append((u64(start, "start"), u64(length, "length"), t))
    return out


def _check_fq_options(fq_size, fq_timeout) -> None:
    """Validate the flush-queue overrides of Iommu (ValueError/TypeError)."""
    for v, what in ((fq_size, "fq_size"), (fq_timeout, "fq_timeout")):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise TypeError(f"{what} must be None or an int, not {v!r}")
    if fq_size is not None and (fq_size < 2 or fq_size > (1 << 20) or fq_size & (fq_size - 1)):
        raise ValueError(f"fq_size must be a power of two in 2..{1 << 20}, not {fq_size}")
    if fq_timeout is not None and not 1 <= fq_timeout <= 3_600_000:
        raise ValueError(f"fq_timeout must be in 1..3600000 ms, not {fq_timeout}")


class Iommu:
    """Reference twin of dmaphys._core.Iommu (see its docstring for the options)."""

    def __init__(self, machine, fmt="vtd-ss", strict=True, iotlb=None, *, fault_mode="raise",
                 shadow_on_flush=False, forcedac=False, caching_mode=False, reserved_regions=None,
                 ias=None, oas=None, name=None, fq_size=None, fq_timeout=None, coherent_walk=True,
                 iommu_dev=None, dirty_tracking=False):
        _check_fq_options(fq_size, fq_timeout)
        if iommu_dev is not None:
            from .machine import Device
            typed(iommu_dev, Device, "iommu_dev")
        if not isinstance(fmt, str):
            raise TypeError(f"fmt must be a str, not {type(fmt).__name__}")
        if fmt not in IOPGTABLE_FORMATS:
            raise ValueError(f"unknown IOMMU page-table format {fmt!r}; "
                             f"known: {', '.join(IOPGTABLE_FORMATS)}")
        if fault_mode not in IOMMU_FAULT_MODES:
            raise ValueError(f"fault_mode must be 'raise' or 'record', not {fault_mode!r}")
        if iotlb is None:
            tlb = Iotlb()
        elif iotlb is False:
            tlb = None
        elif isinstance(iotlb, Iotlb):
            tlb = iotlb
        elif iotlb == "qemu":
            tlb = Iotlb(mode="qemu")
        elif isinstance(iotlb, dict):
            tlb = Iotlb(**iotlb)
        else:
            raise TypeError(f"iotlb must be None, False, 'qemu', a dict or an Iotlb, not {iotlb!r}")
        if tlb is not None and tlb.owner is not None:
            raise ValueError("this Iotlb already belongs to another IOMMU")
        regions = _resv_regions(_describe(fmt, ias, oas).reserved_regions
                                if reserved_regions is None else reserved_regions)
        if not coherent_walk and IOPGTABLE_FORMATS[fmt].family != "io-pgtable-arm":
            raise ValueError("coherent_walk=False is an io-pgtable-arm option")
        if iommu_dev is not None and (coherent_walk or iommu_dev.machine is not machine):
            raise ValueError("iommu_dev is the own device of a non-coherent walker of this machine")
        self.machine = machine
        self.fmt = fmt
        self.ias, self.oas = ias, oas
        IoPgtable(machine, fmt, ias, oas).free_tables()     # validates ias/oas now
        self.strict = bool(strict)
        self.iotlb = tlb
        if tlb is not None:
            tlb.owner = self
        self.faults: list[dict] = []
        self._fault_mode = fault_mode
        self.shadow_on_flush = bool(shadow_on_flush)
        self.forcedac = bool(forcedac)
        self.caching_mode = bool(caching_mode)
        self.dirty_tracking = bool(dirty_tracking)
        self.reserved_regions = regions
        self.name = f"iommu{len(machine.iommus)}" if name is None else str(name)
        self.fq_size = fq_size
        self.fq_timeout = fq_timeout
        self.coherent_walk = bool(coherent_walk)
        self.iommu_dev = None
        if not self.coherent_walk:
            if iommu_dev is None:
                # the SMMU's platform device: DMA mask of oas bits, not dma-coherent
                mask = (1 << _sizes(fmt, ias, oas)[1]) - 1
                iommu_dev = machine.add_device(self.name, mask, False, pci=False)
            self.iommu_dev = iommu_dev
        self._sids: dict = {}
        self._default_domains: dict = {}
        self.notifiers: list = []
        self._next_domid = 0
        self._next_sid = 0
        self.identity_domain = IommuDomain(self, "identity", False, _TOKEN)
        self.blocked_domain = IommuDomain(self, "blocked", False, _TOKEN)
        self.domains = [self.identity_domain, self.blocked_domain]

    @property
    def fault_mode(self) -> str:
        """Reference twin of dmaphys._core.Iommu.fault_mode."""
        return self._fault_mode

    @fault_mode.setter
    def fault_mode(self, value) -> None:
        if value not in IOMMU_FAULT_MODES:
            raise ValueError(f"fault_mode must be 'raise' or 'record', not {value!r}")
        self._fault_mode = value

    def clear_faults(self) -> None:
        """Reference twin of dmaphys._core.Iommu.clear_faults: same returns and raises."""
        self.faults = []

    def register_notifier(self, callback) -> None:
        """Mirrors iommu.pxi Iommu.register_notifier: callback(domain, iova, size) per invalidation.

        Reference twin of dmaphys._core.Iommu.register_notifier: same returns and raises.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self.notifiers.append(callback)

    def unregister_notifier(self, callback) -> None:
        """Reference twin of dmaphys._core.Iommu.unregister_notifier: same returns and raises."""
        for i, cb in enumerate(self.notifiers):
            if cb is callback or cb == callback:
                del self.notifiers[i]
                return
        raise ValueError("callback is not registered")

    def domain_alloc(self):
        """Reference twin of dmaphys._core.Iommu.domain_alloc: same returns and raises."""
        d = IommuDomain(self, "unmanaged", False, _TOKEN)
        self.domains.append(d)
        self.machine.flush_warnings()
        return d

    def _free_domain(self, d) -> None:
        if d.iova_cookie is not None:
            put = getattr(_dma_iommu(), "iommu_put_dma_cookie", None)
            if put is not None:
                put(d)
            d.iova_cookie = None
        if self.iotlb is not None:
            self.iotlb.inv_domain(d.id)
        if self.notifiers:
            iommu_notify(self, d, 0, U64_MAX)
        if d.pgtable is not None:
            d.pgtable.free_tables()
        d.freed = True
        self.domains.remove(d)

    def attach_device(self, dev, domain, domain_type):
        """Reference twin of dmaphys._core.Iommu.attach_device: same returns and raises."""
        _dev_type(dev)
        if dev.domain is not None:
            raise ValueError(f"{dev.name} is already attached to IOMMU domain {dev.domain.id}")
        if dev.machine is not self.machine:
            raise ValueError(f"{dev.name} belongs to another machine")
        fresh = False
        if domain is not None:
            if not isinstance(domain, IommuDomain):
                raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
            d = domain
            if d.iommu is not self:
                raise ValueError("domain belongs to another IOMMU")
            if d.freed:
                raise ValueError(f"IOMMU domain {d.id} was freed")
            if dev.untrusted and d.type_value != IOMMU_DOMAIN_TYPES["dma"]:
                raise ValueError(f"{dev.name} is untrusted and may only join a strict DMA domain, "
                                 f"not {d.type!r}")
        else:
            t = "dma" if domain_type is None else domain_type
            if t not in ("dma", "dma-fq", "identity", "blocked"):
                raise ValueError(f"domain_type must be 'dma', 'dma-fq', 'identity' or 'blocked', not {t!r}")
            if dev.untrusted and dev.pci:
                t = "dma"
            elif t == "dma" and not self.strict:
                t = "dma-fq"
            if t == "identity":
                d = self.identity_domain
            elif t == "blocked":
                d = self.blocked_domain
            else:
                d = IommuDomain(self, t, True, _TOKEN)
                fresh = True
        try:
            self._attach(dev, d)
        except BaseException:
            if fresh:
                d.pgtable.free_tables()
            raise
        if fresh:
            self.domains.append(d)
        self._sids[dev] = self._next_sid
        self._next_sid += 1
        self.machine.flush_warnings()
        return d

    def _attach(self, dev, d) -> None:
        ret = 0
        dma_api = bool(d.type_value & _DMA_API)
        if dma_api:
            ret = _dma_iommu().iommu_dma_init_domain(d, dev)
        d.devices.append(dev)
        dev.domain = d
        dev.dma_iommu = dma_api and ret == 0
        if ret:
            self.machine.kwarn(KernelWarning, f"Failed to set up IOMMU for device {dev.name}; "
                               "retaining platform DMA ops")

    def detach_device(self, dev) -> None:
        """Reference twin of dmaphys._core.Iommu.detach_device: same returns and raises."""
        _dev_type(dev)
        d = dev.domain
        if d is None or d.iommu is not self:
            raise ValueError(f"{dev.name} is not attached to {self.name}")
        self._detach_device(dev)
        self.machine.flush_warnings()

    def _detach_device(self, dev) -> None:
        # mirrors iommu.pxi _detach_device(): detach_device() after its check, warnings left queued
        d = dev.domain
        if dev in self._default_domains:
            self._switch(dev, d, self._default_domains.pop(dev))
            d = dev.domain
        d.devices.remove(dev)
        dev.domain = None
        dev.dma_iommu = False
        self._sids.pop(dev, None)
        if d.translates and self.iotlb is not None:
            self.iotlb.inv_domain(d.id)
        if self.notifiers:
            iommu_notify(self, d, 0, U64_MAX)
        if d.is_default and not d.devices:
            self._free_domain(d)

    def _switch(self, dev, old, new) -> None:
        old.devices.remove(dev)
        new.devices.append(dev)
        dev.domain = new
        if old.translates and self.iotlb is not None:
            self.iotlb.inv_domain(old.id)
        if self.notifiers:
            iommu_notify(self, old, 0, U64_MAX)

    def device_domain(self, dev):
        """Reference twin of dmaphys._core.Iommu.device_domain: same returns and raises."""
        _dev_type(dev)
        d = dev.domain
        return d if d is not None and d.iommu is self else None

    def sid_of(self, dev) -> int:
        """Simulator-only: the requester (stream) id the IOMMU gave the device at attach. Returns
        it, 0 for a device not attached. Raises nothing.
        """
        return self._sids.get(dev, 0)

    def get_state(self):
        """Reference twin of dmaphys._core.Iommu.get_state: same returns and raises."""
        doms = [{"id": d.id, "type": d.type, "devices": [x.name for x in d.devices],
                 "pgtable_root": d.pgtable_root, "stats": d.stats,
                 "mappings": d.pgtable.get_state()["mappings"] if d.pgtable is not None else None}
                for d in self.domains]
        return {"domains": doms, "faults": list(self.faults),
                "iotlb": self.iotlb.get_state() if self.iotlb is not None else None}

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.Iommu {self.name} {self.fmt} {'strict' if self.strict else 'lazy'} "
                f"domains={len(self.domains)} faults={len(self.faults)}>")


# ---- drivers/iommu/iommu.c: map / unmap / sync ------------------------------------------------
def iommu_map_nosync(domain, iova: int, paddr: int, size: int, prot: int) -> int:
    """iommu_map_nosync(): 0 or -errno; a failure unmaps (with IOTLB sync) what was mapped."""
    d = domain
    if not d.type_value & _PAGING:
        return -EINVAL
    pt = d.pgtable
    if pt is None or d.pgsize_bitmap == 0:
        d.iommu.machine.kwarn(KernelWarning, "WARNING: iommu_map_nosync(): WARN_ON(!ops->map_pages || "
                              "domain->pgsize_bitmap == 0UL)")
        return -ENODEV
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    min_pagesz = 1 << _ffs(d.pgsize_bitmap)
    if (iova | paddr | size) & (min_pagesz - 1):
        _log.error("unaligned: iova 0x%x pa 0x%x size 0x%x min_pagesz 0x%x", iova, paddr, size, min_pagesz)
        return -EINVAL
    ret, done = iommu_map_pages_loop(pt, d.pgsize_bitmap, iova, paddr, size, prot)
    if ret:
        _unmap(d, iova, done)                             # __iommu_map's rollback syncs the IOTLB
    return ret


def iommu_sync_map(domain, iova: int, size: int) -> int:
    """iommu_sync_map(): only a caching-mode (virtual) VT-d invalidates on map."""
    if domain.iommu.caching_mode and size:
        if domain.iommu.iotlb is not None:
            domain.iommu.iotlb.inv_range(domain.id, iova, size, domain.leaf_shifts)
        if domain.iommu.notifiers:
            iommu_notify(domain.iommu, domain, iova, size)
    return 0


def _map(domain, iova, paddr, size, prot) -> int:
    ret = iommu_map_nosync(domain, iova, paddr, size, prot)
    if ret:
        return ret
    ret = iommu_sync_map(domain, iova, size)
    if ret:
        _unmap(domain, iova, size)
    return ret


def _unmap_fast(d, iova: int, size: int) -> int:
    if not d.type_value & _PAGING or d.pgtable is None:
        return 0
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    return pgtable_unmap(d.pgtable, iova, size)


def _gather_len(size: int, unmapped: int) -> int:
    if unmapped == 0:
        return 0
    if size < unmapped < (1 << 63):
        return unmapped
    return size


def _unmap(d, iova: int, size: int) -> int:
    n = _unmap_fast(d, iova, size)
    iommu_iotlb_sync_range(d, iova, _gather_len(size, n))
    return n


def iommu_iotlb_sync_range(domain, iova: int, size: int) -> int:
    """iommu_iotlb_sync() of a gather covering [iova, iova + size)."""
    domain.iotlb_syncs += 1
    if size and domain.iommu.iotlb is not None:
        domain.iommu.iotlb.inv_range(domain.id, iova, size, domain.leaf_shifts)
    if size and domain.iommu.notifiers:
        iommu_notify(domain.iommu, domain, iova, size)
    if domain.pgtable is not None:
        domain.pgtable.release_pending()
    return 0


def iommu_flush_iotlb_all(domain) -> int:
    """iommu_flush_iotlb_all(): domain-selective invalidation, then free collected table pages."""
    domain.iotlb_flushes += 1
    if domain.iommu.iotlb is not None:
        domain.iommu.iotlb.inv_domain(domain.id)
    if domain.iommu.notifiers:
        iommu_notify(domain.iommu, domain, 0, U64_MAX)
    if domain.pgtable is not None:
        domain.pgtable.release_pending()
    return 0


def _iova_to_phys(d, iova: int) -> int:
    if d.type_value == _PT:
        return iova
    if d.pgtable is None or d.freed:
        return 0
    return d.pgtable.c_iova_to_phys(iova)


# ---- the hardware: a device's requests through the IOMMU ------------------------------------------
def _fault(mmu, d, dev, iova: int, size: int, write: bool, reason: str) -> None:
    access = "write" if write else "read"
    dev.faults += 1
    d.faults += 1
    mmu.faults.append({"device": dev.name, "iova": iova, "size": size, "access": access,
                       "reason": reason, "domain": d.id, "time": mmu.machine.clock_ns})
    if mmu.fmt.startswith("vtd"):
        code, text = _VTD_FAULT.get(reason, _VTD_FAULT[access])
        _log.error("DMAR: [DMA %s NO_PASID] Request device [%s] fault addr 0x%x [fault reason 0x%02x] %s",
                   "Write" if write else "Read", dev.name, iova, code, text)
    else:
        _log.error("%s: %s translation fault (%s) for %s at IOVA 0x%x", mmu.name, access, reason,
                   dev.name, iova)
    if mmu.fault_mode != "record":
        raise IommuFault(dev.name, iova, size, access, reason)


def _translate_one(dev, d, tlb, pt, sid: int, a: int, need: int):
    """Mirrors iommu.pxi iommu_translate_one(): (reason or None, phys, prot, shift)."""
    if pt is None:
        return "blocked", 0, 0, 0
    e = tlb.find(d.id, sid, a, d.leaf_shifts) if tlb is not None else None
    if e is not None:
        mask = (1 << e.shift) - 1
        phys, prot, shift = e.phys | (a & mask), e.prot, e.shift
        if e.gen != pt.leaf_writes:
            saved = pt.walk_reads
            cur = pt.lookup(a)
            pt.walk_reads = saved
            if cur is None or cur != (phys, prot, mask + 1):
                tlb.stale_hits += 1
                d.stale_hits += 1
                hook = getattr(_debug, "debug_dma_stale_iotlb", None)
                if hook is not None:
                    hook(dev, a, phys, U64_MAX if cur is None else cur[0])
            else:
                e.gen = pt.leaf_writes
    else:
        w = pt.lookup(a)
        if w is None:
            return ("not-present" if pt._canonical(a, a) else "address-size"), 0, 0, 0
        phys, prot, leaf = w
        shift = _ffs(leaf)
        if tlb is not None:
            e = tlb.fill(d.id, sid, a, shift, phys, prot, pt.leaf_writes)
    if not prot & need:
        return ("write-denied" if need == IOMMU_WRITE else "read-denied"), phys, prot, shift
    if d.dirty_tracking and need == IOMMU_WRITE and (e is None or not e.dirty):
        pt.hw_set_dirty(a)          # the IOMMU's dirty update through an entry it holds clean
        if e is not None:
            e.dirty = True
    return None, phys, prot, shift


def iommu_device_access(dev, iova: int, n: int, write: bool, data: bytes | None):
    """Mirrors iommu.pxi iommu_device_access(); returns the bytes read (reads) or None."""
    from .machine import bus_access_phys, dma_get_mask  # machine imports this module

    d = dev.domain
    mmu = d.iommu
    tlb = mmu.iotlb
    pt = d.pgtable
    need = IOMMU_WRITE if write else IOMMU_READ
    limit = min_not_zero(dma_get_mask(dev), dev.bus_dma_limit)
    if iova + n - 1 > limit:
        dev.faults += 1
        raise DmaFault(dev.name, iova, n, "write" if write else "read",
                       f"beyond the device's addressing limit {limit:#x}")
    sid = mmu.sid_of(dev) if tlb is not None and tlb.qemu else 0
    out = bytearray()
    done = 0
    while done < n:
        a = iova + done
        chunk = min(PAGE_SIZE - (a & (PAGE_SIZE - 1)), n - done)
        reason, phys, _prot, _shift = _translate_one(dev, d, tlb, pt, sid, a, need)
        if reason is not None:
            _fault(mmu, d, dev, a, chunk, write, reason)
            if not write:
                out += b"\xff" * chunk
        elif write:
            bus_access_phys(dev, phys, chunk, True, data[done:done + chunk])
        else:
            out += bus_access_phys(dev, phys, chunk, False, None)
        done += chunk
    return None if write else bytes(out)


# ---- QEMU-style translation for embedders (dev.translate) ---------------------------------------
IOMMU_NONE, IOMMU_RW = 0, 3
_IOMMU_PERM_NAMES = ("IOMMU_NONE", "IOMMU_RO", "IOMMU_WO", "IOMMU_RW")


class IOMMUTLBEntry:
    """Reference twin of dmaphys._core.IOMMUTLBEntry (QEMU's IOMMUTLBEntry)."""

    __slots__ = ("iova", "translated_addr", "addr_mask", "perm")

    def __init__(self, iova, translated_addr, addr_mask, perm) -> None:
        self.iova = u64(iova, "iova")
        self.translated_addr = u64(translated_addr, "translated_addr")
        self.addr_mask = u64(addr_mask, "addr_mask")
        self.perm = u64(perm, "perm")

    def _key(self):
        return (self.iova, self.translated_addr, self.addr_mask, self.perm)

    def __eq__(self, other):
        if not isinstance(other, IOMMUTLBEntry):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"IOMMUTLBEntry(iova={self.iova:#x}, translated_addr={self.translated_addr:#x}, "
                f"addr_mask={self.addr_mask:#x}, perm={_IOMMU_PERM_NAMES[self.perm]})")


def device_translate(dev, addr: int, write: bool) -> IOMMUTLBEntry:
    """Mirrors iommu.pxi device_translate()."""
    from .machine import bus_check_phys, direct_bus_to_phys, dma_get_mask
    from .p2pdma import p2p_bus_to_phys

    page = addr & ~(PAGE_SIZE - 1)
    if dev.domain is not None and dev.domain.translates:
        phys = p2p_bus_to_phys(dev, addr, 1)
        if phys == U64_MAX:
            d = dev.domain
            mmu = d.iommu
            limit = min_not_zero(dma_get_mask(dev), dev.bus_dma_limit)
            if addr > limit:
                dev.faults += 1
                raise DmaFault(dev.name, addr, 1, "write" if write else "read",
                               f"beyond the device's addressing limit {limit:#x}")
            sid = mmu.sid_of(dev) if mmu.iotlb is not None and mmu.iotlb.qemu else 0
            reason, phys, prot, shift = _translate_one(dev, d, mmu.iotlb, d.pgtable, sid, addr,
                                                       IOMMU_WRITE if write else IOMMU_READ)
            if reason is not None:
                _fault(mmu, d, dev, addr, 1, write, reason)
                return IOMMUTLBEntry(page, 0, PAGE_SIZE - 1, IOMMU_NONE)
            mask = (1 << shift) - 1
            return IOMMUTLBEntry(addr & ~mask, phys & ~mask, mask, prot & IOMMU_RW)
    else:
        phys = direct_bus_to_phys(dev, addr, 1, write)
    bus_check_phys(dev, phys, 1, write)
    return IOMMUTLBEntry(page, (phys - (addr & (PAGE_SIZE - 1))) & U64_MAX, PAGE_SIZE - 1, IOMMU_RW)


# ---- module-level kernel API ---------------------------------------------------------------------
def _domain_arg(domain):
    if not isinstance(domain, IommuDomain):
        raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
    return domain


def iommu_map(domain, iova, paddr, size, prot) -> int:
    """iommu_map(domain, iova, paddr, size, prot): 0 or -errno.

    Reference twin of dmaphys._core.iommu_map; same returns and raises.
    """
    d = _domain_arg(domain)
    args = (u64(iova, "iova"), u64(paddr, "paddr"), u64(size, "size"), u64(prot, "prot"))
    try:
        return _map(d, *args)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap(domain, iova, size) -> int:
    """iommu_unmap(domain, iova, size): bytes unmapped; the IOTLB is synced for the range.

    Reference twin of dmaphys._core.iommu_unmap; same returns and raises.
    """
    d = _domain_arg(domain)
    a, s = u64(iova, "iova"), u64(size, "size")
    try:
        return _unmap(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap_fast(domain, iova, size) -> int:
    """iommu_unmap_fast(): bytes unmapped, the IOTLB is NOT invalidated.

    Reference twin of dmaphys._core.iommu_unmap_fast; same returns and raises.
    """
    d = _domain_arg(domain)
    a, s = u64(iova, "iova"), u64(size, "size")
    try:
        return _unmap_fast(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_iotlb_sync(domain, iova, size) -> None:
    """iommu_iotlb_sync() of a gather covering [iova, iova + size).

    Reference twin of dmaphys._core.iommu_iotlb_sync; same returns and raises.
    """
    d = _domain_arg(domain)
    try:
        iommu_iotlb_sync_range(d, u64(iova, "iova"), u64(size, "size"))
    finally:
        d.iommu.machine.flush_warnings()


def iommu_iova_to_phys(domain, iova) -> int:
    """iommu_iova_to_phys(domain, iova): the physical address, 0 when unmapped (see the core's docstring).

    Reference twin of dmaphys._core.iommu_iova_to_phys; same returns and raises.
    """
    d = _domain_arg(domain)
    a = u64(iova, "iova")
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    if d.pgtable is not None and d.type_value != _PT:
        d.pgtable._warn_alias(a)                          # a non-canonical x86-64 IOVA the kernel aliases
        d.pgtable.machine.flush_warnings()
    return _iova_to_phys(d, a)


def iommu_domain_free(domain) -> None:
    """iommu_domain_free(): an unmanaged domain with no devices attached; its tables are freed.

    Reference twin of dmaphys._core.iommu_domain_free; same returns and raises.
    """
    d = _domain_arg(domain)
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was already freed")
    if d.type in ("identity", "blocked"):
        raise ValueError(f"the {d.type} domain is static and is never freed")
    if d.devices:
        raise ValueError(f"IOMMU domain {d.id} still has devices attached: "
                         f"{', '.join(x.name for x in d.devices)}")
    d.iommu._free_domain(d)
    d.iommu.machine.flush_warnings()


def _dev_type(dev):
    from . import machine
    return typed(dev, machine.Device, "dev")


def _machine_dev_arg(dev) -> None:
    from . import machine
    machine.dev_live(_dev_type(dev))


def iommu_attach_device(domain, dev) -> int:
    """iommu_attach_device(): move a single-device group from its default domain to ``domain``.

    Reference twin of dmaphys._core.iommu_attach_device; same returns and raises.
    """
    _machine_dev_arg(dev)
    d = _domain_arg(domain)
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    if dev.domain is None:
        return -ENODEV
    cur = dev.domain
    if cur.iommu is not d.iommu:
        return -EINVAL
    mmu = d.iommu
    if dev in mmu._default_domains:
        return -EBUSY
    if len(cur.devices) != 1:
        return -EINVAL
    if cur is d:
        return 0
    mmu._default_domains[dev] = cur
    dev.dma_iommu = False
    try:
        mmu._switch(dev, cur, d)
    finally:
        mmu.machine.flush_warnings()
    return 0


def iommu_detach_device(domain, dev) -> None:
    """iommu_detach_device(): back to the default domain (WARN if dev is not in ``domain``).

    Reference twin of dmaphys._core.iommu_detach_device; same returns and raises.
    """
    _machine_dev_arg(dev)
    d = _domain_arg(domain)
    mmu = d.iommu
    if dev.domain is not d or dev not in mmu._default_domains:
        mmu.machine.kwarn(KernelWarning, "WARNING: iommu_detach_device(): WARN_ON(domain != group->domain)")
        mmu.machine.flush_warnings()
        return
    dflt = mmu._default_domains.pop(dev)
    dev.dma_iommu = bool(dflt.type_value & _DMA_API) and dflt.iova_cookie is not None
    try:
        mmu._switch(dev, d, dflt)
    finally:
        mmu.machine.flush_warnings()


# names dma_iommu.py calls (the C-level functions of the core)
iommu_map_c = _map
iommu_unmap_c = _unmap
iommu_unmap_fast_c = _unmap_fast
iommu_iova_to_phys_c = _iova_to_phys
