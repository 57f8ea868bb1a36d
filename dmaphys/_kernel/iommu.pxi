# Models drivers/iommu/iommu.c: IOMMU instances, domains (DMA, DMA_FQ, identity, blocked,
# unmanaged), iommu_map / iommu_unmap / iommu_iova_to_phys, device attach, and the device's
# translated accesses (iommu_device_access) with IOTLB lookups and faults.
#
# The IOMMU driver layer (intel/iommu.c, arm-smmu-v3.c) is folded in where the core calls it:
# iotlb_sync / flush_iotlb_all become IOTLB invalidations (iotlb.pxi) followed by freeing the
# page-table pages the unmap collected; a domain switch of a device flushes the old domain's
# entries (domain_context_clear_one's domain-selective flush). The hardware side -- the
# requests a device puts on the bus -- is iommu_device_access: one translation per request
# that never crosses a 4 KiB boundary (PCIe), IOTLB first, then a page-table walk.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, iommu.pxd.


IOMMU_DOMAIN_TYPES = {"blocked": IOMMU_DOMAIN_BLOCKED, "identity": IOMMU_DOMAIN_IDENTITY,
                      "unmanaged": IOMMU_DOMAIN_UNMANAGED, "dma": IOMMU_DOMAIN_DMA,
                      "dma-fq": IOMMU_DOMAIN_DMA_FQ}
_RESV_TYPE_NAMES = ("direct", "direct_relaxable", "reserved", "msi", "sw_msi")   # enum iommu_resv_type
IOMMU_FAULT_MODES = ("raise", "record")

# intel/dmar.c dmar_fault_reason strings (legacy mode) for the vtd-ss log line
_VTD_FAULT = {"blocked": (0x02, "Present bit in context entry is clear"),
              "address-size": (0x04, "Access beyond MGAW"),
              "write": (0x05, "PTE Write access is not set"),
              "read": (0x06, "PTE Read access is not set")}


cdef class IommuDomain:
    """struct iommu_domain: made by ``Iommu.domain_alloc()`` (unmanaged) or by device attach.

    ``type``: "dma", "dma-fq", "identity", "blocked" or "unmanaged"; ``type_value`` is the
    kernel's IOMMU_DOMAIN_* number. Paging domains own an IoPgtable (``pgtable``) of their
    IOMMU's format; identity and blocked domains are the IOMMU's static singletons.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("IommuDomain objects come from Iommu.domain_alloc() or device attach")

    @property
    def pgtable_root(self):
        """Physical address of the top-level page table (0 when none / freed)."""
        return self.pgtable.pgtable_root if self.pgtable is not None else 0

    @property
    def type_value(self):
        """The kernel's IOMMU_DOMAIN_* value of ``type``."""
        return self.ktype

    @property
    def stats(self):
        return {"stale_hits": self.stale_hits, "faults": self.faults,
                "iotlb_syncs": self.iotlb_syncs, "iotlb_flushes": self.iotlb_flushes}

    def iova_to_phys_batch(self, iovas):
        """iommu_iova_to_phys(self, iovas[i]) for each i -> ndarray[uint64]; see batch.pxi."""
        return _iommu_iova_to_phys_batch(self, iovas)

    def __repr__(self):
        return (f"<dmaphys.IommuDomain id={self.id} {self.type} devices={len(self.devices)}"
                f"{' freed' if self.freed else ''}>")


cdef IommuDomain _domain_new(Iommu mmu, str type, bint is_default):
    """iommu_paging_domain_alloc() / the static identity and blocked domains."""
    cdef IommuDomain d = IommuDomain.__new__(IommuDomain)
    cdef u64 bm
    d.iommu = mmu
    d.type = type
    d.ktype = IOMMU_DOMAIN_TYPES[type]
    d.devices = []
    d.iova_cookie = None
    d.is_default = is_default
    mmu.next_domid += 1
    d.id = mmu.next_domid
    if d.ktype & __IOMMU_DOMAIN_PAGING:
        d.pgtable = IoPgtable(mmu.machine, mmu.fmt, mmu.ias, mmu.oas)
        d.pgtable.defer_free = True            # table pages wait for the IOTLB sync (the gather)
        d.pgsize_bitmap = d.pgtable.pgsize_bitmap
        d.aperture_start = d.pgtable.aperture_start
        d.aperture_end = d.pgtable.aperture_end
        d.translates = True
        bm = d.pgsize_bitmap
        while bm and d.nshifts < 8:
            d.leaf_shifts[d.nshifts] = __ffs64(bm)
            d.nshifts += 1
            bm &= bm - 1
    else:
        d.pgtable = None
        d.translates = d.ktype == IOMMU_DOMAIN_BLOCKED
    return d


cdef class Iommu:
    """An IOMMU: ``m.add_iommu(fmt="vtd-ss", strict=True, iotlb=None, **kwargs)``.

    ``fmt``: a page-table format of IOPGTABLE_FORMATS (``ias``/``oas`` override its sizes).
    ``strict``: default DMA domains are "dma" (strict unmap) rather than "dma-fq" (lazy).
    ``iotlb``: None → Iotlb() (512 entries, 8-way LRU); a dict → Iotlb(**dict); "qemu" →
    Iotlb(mode="qemu"); an Iotlb; False → no IOTLB (every request walks the page table).
    Keyword options: ``fault_mode`` ("raise": a translation fault raises IommuFault;
    "record": the fault is only recorded, reads return 0xff bytes, writes are dropped),
    ``shadow_on_flush`` (dev->iommu->shadow_on_flush: dma-iommu uses one big flush queue),
    ``forcedac`` (iommu.forcedac=1: PCI devices skip the 32-bit IOVA attempt),
    ``caching_mode`` (VT-d CM=1, a virtual IOMMU: maps are followed by an IOTLB invalidation),
    ``reserved_regions`` ([(start, length, type)] replacing the format's defaults; type is a
    name of enum iommu_resv_type such as "msi", "sw_msi", "direct", "reserved", or its value),
    ``name``.
    """

    def __init__(self, Machine machine not None, fmt="vtd-ss", strict=True, iotlb=None, *,
                 fault_mode="raise", shadow_on_flush=False, forcedac=False, caching_mode=False,
                 reserved_regions=None, ias=None, oas=None, name=None):
        cdef Iotlb tlb
        if not isinstance(fmt, str):
            raise TypeError(f"fmt must be a str, not {type(fmt).__name__}")
        if fmt not in IOPGTABLE_FORMATS:
            raise ValueError(f"unknown IOMMU page-table format {fmt!r}; known: {', '.join(IOPGTABLE_FORMATS)}")
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
        regions = _iommu_resv_regions(_pt_describe(fmt, ias, oas).reserved_regions
                                      if reserved_regions is None else reserved_regions)
        self.machine = machine
        self.fmt = fmt
        self.ias = ias
        self.oas = oas
        # a throw-away table checks ias/oas now (ValueError) rather than at the first attach
        IoPgtable(machine, fmt, ias, oas).free_tables()
        self.strict = bool(strict)
        self.iotlb = tlb
        if tlb is not None:
            tlb.owner = self
        self.faults = []
        self._fault_mode = fault_mode
        self.record_faults = fault_mode == "record"
        self.shadow_on_flush = bool(shadow_on_flush)
        self.forcedac = bool(forcedac)
        self.caching_mode = bool(caching_mode)
        self.reserved_regions = regions
        self.name = f"iommu{len(machine.iommus)}" if name is None else str(name)
        self.sids = {}
        self.default_domains = {}
        self.next_domid = 0
        self.next_sid = 0
        self.identity_domain = _domain_new(self, "identity", False)
        self.blocked_domain = _domain_new(self, "blocked", False)
        self.domains = [self.identity_domain, self.blocked_domain]

    @property
    def fault_mode(self):
        return self._fault_mode

    @fault_mode.setter
    def fault_mode(self, value):
        if value not in IOMMU_FAULT_MODES:
            raise ValueError(f"fault_mode must be 'raise' or 'record', not {value!r}")
        self._fault_mode = value
        self.record_faults = value == "record"

    def clear_faults(self):
        """Forget the recorded faults (the fault log registers after software read them)."""
        self.faults = []

    # ---- domains ---------------------------------------------------------------------------
    def domain_alloc(self):
        """iommu_paging_domain_alloc(): a new UNMANAGED paging domain (empty page table)."""
        d = _domain_new(self, "unmanaged", False)
        self.domains.append(d)
        self.machine.flush_warnings()
        return d

    cdef int _free_domain(self, IommuDomain d) except -1:
        """iommu_domain_free(): tear down the DMA cookie, flush, free the page table."""
        if d.iova_cookie is not None:
            iommu_put_dma_cookie(d)
        if self.iotlb is not None:
            self.iotlb.inv_domain(d.id)
        if d.pgtable is not None:
            d.pgtable.free_tables()
        d.freed = True
        self.domains.remove(d)
        return 0

    # ---- attach / detach -------------------------------------------------------------------
    def attach_device(self, Device dev not None, domain, domain_type):
        """Probe-time attach: ``domain`` given → join its group; else a fresh default domain of
        ``domain_type`` ("dma": strict or lazy per the IOMMU, "dma-fq", "identity", "blocked").

        Untrusted PCI devices always get a strict DMA domain (iommu_get_default_domain_type).
        DMA domains run iommu_dma_init_domain(); if that fails the device keeps dma-direct
        (iommu_setup_dma_ops: "Failed to set up IOMMU for device; retaining platform DMA ops").
        """
        cdef IommuDomain d
        cdef bint fresh = False
        if dev.domain is not None:
            raise ValueError(f"{dev.name} is already attached to IOMMU domain {dev.domain.id}")
        if dev.machine is not self.machine:
            raise ValueError(f"{dev.name} belongs to another machine")
        if domain is not None:
            if not isinstance(domain, IommuDomain):
                raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
            d = <IommuDomain>domain
            if d.iommu is not self:
                raise ValueError("domain belongs to another IOMMU")
            if d.freed:
                raise ValueError(f"IOMMU domain {d.id} was freed")
            if dev.untrusted and d.ktype != IOMMU_DOMAIN_DMA:
                raise ValueError(f"{dev.name} is untrusted and may only join a strict DMA domain, not {d.type!r}")
        else:
            t = "dma" if domain_type is None else domain_type
            if t not in ("dma", "dma-fq", "identity", "blocked"):
                raise ValueError(f"domain_type must be 'dma', 'dma-fq', 'identity' or 'blocked', not {t!r}")
            if dev.untrusted and dev.pci:
                t = "dma"                                 # forced IOMMU_DOMAIN_DMA
            elif t == "dma" and not self.strict:
                t = "dma-fq"
            if t == "identity":
                d = self.identity_domain
            elif t == "blocked":
                d = self.blocked_domain
            else:
                d = _domain_new(self, t, True)
                fresh = True
        try:
            self._attach(dev, d)
        except BaseException:
            if fresh:
                d.pgtable.free_tables()
            raise
        if fresh:
            self.domains.append(d)
        self.sids[dev] = self.next_sid
        self.next_sid += 1
        self.machine.flush_warnings()
        return d

    cdef int _attach(self, Device dev, IommuDomain d) except -1:
        """Point the device at d; for DMA domains iommu_setup_dma_ops()."""
        cdef int ret = 0
        if d.ktype & __IOMMU_DOMAIN_DMA_API:
            ret = iommu_dma_init_domain(d, dev)           # may raise: nothing changed yet
        d.devices.append(dev)
        dev.domain = d
        dev.dma_iommu = bool(d.ktype & __IOMMU_DOMAIN_DMA_API) and ret == 0
        if ret:
            self.machine.kwarn(KernelWarning, f"Failed to set up IOMMU for device {dev.name}; "
                               "retaining platform DMA ops")
        return 0

    def detach_device(self, Device dev not None):
        """Release the device (driver unbind + removal): its domain loses it; a default domain
        whose last device left is freed. The device's IOTLB entries are flushed."""
        cdef IommuDomain d = dev.domain
        if d is None or d.iommu is not self:
            raise ValueError(f"{dev.name} is not attached to {self.name}")
        if dev in self.default_domains:
            self._switch(dev, d, self.default_domains.pop(dev))
            d = dev.domain
        d.devices.remove(dev)
        dev.domain = None
        dev.dma_iommu = False
        self.sids.pop(dev, None)
        if d.translates and self.iotlb is not None:
            self.iotlb.inv_domain(d.id)                   # domain_context_clear_one()
        if d.is_default and not d.devices:
            self._free_domain(d)
        self.machine.flush_warnings()

    cdef int _switch(self, Device dev, IommuDomain old, IommuDomain new) except -1:
        old.devices.remove(dev)
        new.devices.append(dev)
        dev.domain = new
        if old.translates and self.iotlb is not None:
            self.iotlb.inv_domain(old.id)
        return 0

    def device_domain(self, Device dev not None):
        """The domain dev's requests are translated in (None when not behind this IOMMU)."""
        d = dev.domain
        return d if d is not None and (<IommuDomain>d).iommu is self else None

    cdef u32 sid_of(self, Device dev):
        return self.sids.get(dev, 0)

    # ---- reports ---------------------------------------------------------------------------
    def get_state(self):
        """Snapshot for differential tests: domains, faults, IOTLB."""
        doms = []
        for d in self.domains:
            dd = <IommuDomain>d
            doms.append({"id": dd.id, "type": dd.type, "devices": [x.name for x in dd.devices],
                         "pgtable_root": dd.pgtable_root, "stats": dd.stats,
                         "mappings": dd.pgtable.get_state()["mappings"] if dd.pgtable is not None else None})
        return {"domains": doms, "faults": list(self.faults),
                "iotlb": self.iotlb.get_state() if self.iotlb is not None else None}

    def __repr__(self):
        return (f"<dmaphys.Iommu {self.name} {self.fmt} {'strict' if self.strict else 'lazy'} "
                f"domains={len(self.domains)} faults={len(self.faults)}>")


def _iommu_resv_regions(regions):
    """Normalise reserved regions to [(start, length, type_name)]."""
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
        out.append((_u64(start, "start"), _u64(length, "length"), t))
    return out


# ---- drivers/iommu/iommu.c: map / unmap / sync ------------------------------------------------
cdef int iommu_map_nosync_c(IommuDomain d, u64 iova, u64 paddr, u64 size, int prot) except? -9999:
    """iommu_map_nosync(): 0 or -errno; a failure unmaps (with IOTLB sync) what was mapped."""
    cdef IoPgtable pt = d.pgtable
    cdef u64 min_pagesz, done = 0
    cdef int ret = 0
    if not (d.ktype & __IOMMU_DOMAIN_PAGING):
        return -EINVAL
    if pt is None or d.pgsize_bitmap == 0:
        d.iommu.machine.kwarn(KernelWarning, "WARNING: iommu_map_nosync(): WARN_ON(!ops->map_pages || "
                              "domain->pgsize_bitmap == 0UL)")
        return -IOMMU_ENODEV
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    min_pagesz = (<u64>1) << __ffs64(d.pgsize_bitmap)
    if (iova | paddr | size) & (min_pagesz - 1):
        _log.error("unaligned: iova 0x%x pa 0x%x size 0x%x min_pagesz 0x%x", iova, paddr, size, min_pagesz)
        return -EINVAL
    ret = iommu_map_pages_loop(pt, d.pgsize_bitmap, iova, paddr, size, prot, &done)
    if ret:
        iommu_unmap_c(d, iova, done)             # __iommu_map's rollback syncs the IOTLB
    return ret


cdef int iommu_sync_map_c(IommuDomain d, u64 iova, u64 size) except? -9999:
    """iommu_sync_map(): the driver's iotlb_sync_map. Only a caching-mode (virtual) VT-d
    flushes on map (non-present entries may be cached there); real hardware needs nothing."""
    if d.iommu.caching_mode and d.iommu.iotlb is not None and size:
        d.iommu.iotlb.inv_range(d.id, iova, size, d.leaf_shifts, d.nshifts)
    return 0


cdef int iommu_map_c(IommuDomain d, u64 iova, u64 paddr, u64 size, int prot) except? -9999:
    """iommu_map(): iommu_map_nosync() then iommu_sync_map(); 0 or -errno."""
    cdef int ret = iommu_map_nosync_c(d, iova, paddr, size, prot)
    if ret:
        return ret
    ret = iommu_sync_map_c(d, iova, size)
    if ret:
        iommu_unmap_c(d, iova, size)
    return ret


cdef u64 iommu_unmap_fast_c(IommuDomain d, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF:
    """__iommu_unmap() (iommu_unmap_fast): bytes unmapped, no IOTLB flush. Freed table pages
    wait in pgtable.pending_free (defer_free) until the caller's sync or flush."""
    if not (d.ktype & __IOMMU_DOMAIN_PAGING) or d.pgtable is None:
        return 0
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    return pgtable_unmap(d.pgtable, iova, size)


cdef inline u64 _gather_len(u64 size, u64 unmapped) noexcept:
    """What the gather covers: the request, widened when a larger leaf went whole."""
    if unmapped == 0:
        return 0
    if unmapped > size and unmapped < ((<u64>1) << 63):
        return unmapped
    return size


cdef u64 iommu_unmap_c(IommuDomain d, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF:
    """iommu_unmap(): __iommu_unmap() then iommu_iotlb_sync() of the gathered range."""
    cdef u64 n = iommu_unmap_fast_c(d, iova, size)
    iommu_iotlb_sync_range(d, iova, _gather_len(size, n))
    return n


cdef int iommu_iotlb_sync_range(IommuDomain d, u64 iova, u64 size) except -1:
    """iommu_iotlb_sync() of a gather covering [iova, iova + size): invalidate the domain's
    IOTLB entries there, then free the table pages the unmap collected."""
    d.iotlb_syncs += 1
    if size and d.iommu.iotlb is not None:
        d.iommu.iotlb.inv_range(d.id, iova, size, d.leaf_shifts, d.nshifts)
    if d.pgtable is not None:
        d.pgtable.release_pending()
    return 0


cdef int iommu_flush_iotlb_all(IommuDomain d) except -1:
    """iommu_flush_iotlb_all(): domain-selective invalidation, then free collected table pages."""
    d.iotlb_flushes += 1
    if d.iommu.iotlb is not None:
        d.iommu.iotlb.inv_domain(d.id)
    if d.pgtable is not None:
        d.pgtable.release_pending()
    return 0


cdef u64 iommu_iova_to_phys_c(IommuDomain d, u64 iova) noexcept:
    """iommu_iova_to_phys(): identity → iova, blocked → 0, else the table's translation (0: unmapped)."""
    if d.ktype == IOMMU_DOMAIN_IDENTITY:
        return iova
    if d.pgtable is None or d.freed:
        return 0
    return d.pgtable.c_iova_to_phys(iova)


# ---- the hardware: a device's requests through the IOMMU ------------------------------------------
cdef int _iommu_fault(Iommu mmu, IommuDomain d, Device dev, u64 iova, u64 size, bint write,
                      str reason) except -1:
    """Record a translation fault (the fault recording registers) and raise it unless recording only."""
    cdef str access = "write" if write else "read"
    dev.faults += 1
    d.faults += 1
    mmu.faults.append({"device": dev.name, "iova": iova, "size": size, "access": access,
                       "reason": reason, "domain": d.id, "time": mmu.machine.clock_ns})
    if mmu.fmt.startswith("vtd"):
        code, text = _VTD_FAULT.get(reason, _VTD_FAULT[access])
        _log.error("DMAR: [DMA %s NO_PASID] Request device [%s] fault addr 0x%x [fault reason 0x%02x] %s",
                   "Write" if write else "Read", dev.name, iova, code, text)
    else:
        _log.error("%s: %s translation fault (%s) for %s at IOVA 0x%x", mmu.name, access, reason, dev.name, iova)
    if not mmu.record_faults:
        raise IommuFault(dev.name, iova, size, access, reason)
    return 0


cdef enum:                                      # translation fault reasons (_REASON_NAMES)
    R_NONE = 0
    R_BLOCKED = 1
    R_NOT_PRESENT = 2
    R_ADDRESS_SIZE = 3
    R_WRITE_DENIED = 4
    R_READ_DENIED = 5

_REASON_NAMES = (None, "blocked", "not-present", "address-size", "write-denied", "read-denied")


cdef int iommu_device_access(Device dev, u64 iova, u8 *buf, u64 n, bint write) except -1 nogil:
    """A device's DMA of n bytes at IOVA iova through its domain.

    Split into requests that never cross a 4 KiB boundary; each is translated (IOTLB hit, or a
    page-table walk whose result fills the IOTLB), permission-checked and sent to memory with
    bus_access_phys. An IOTLB hit is used even when the page table has changed since (the lazy
    unmap window): that is detected by comparing with the live table and reported as a stale
    hit (counters + debug_dma_stale_iotlb). Faults: see Iommu(fault_mode=...); in record mode a
    faulting read request returns 0xff bytes (PCIe Unsupported Request) and a write is dropped.
    Requests before a fault have reached memory, as on hardware.

    Runs without the GIL: it takes it itself for a fault, a stale-hit report, the qemu-mode
    requester id lookup and dma-debug's view of device writes.
    """
    return _iommu_access_d(dev, <IommuDomain>dev.domain, iova, buf, n, write)


cdef inline int _iommu_access_d(Device dev, IommuDomain d, u64 iova, u8 *buf, u64 n, bint write) except -1 nogil:
    return _iommu_access(dev, d, d.iommu, d.iommu.iotlb, d.pgtable, iova, buf, n, write)


cdef int _iommu_access(Device dev, IommuDomain d, Iommu mmu, Iotlb tlb, IoPgtable pt, u64 iova, u8 *buf,
                       u64 n, bint write) except -1 nogil:
    cdef u64 done = 0, a, chunk, phys = 0, leaf = 0, cur_phys = 0, cur_leaf = 0, saved, limit, mask
    cdef int prot = 0, cur_prot = 0, need = IOMMU_WRITE if write else IOMMU_READ, ok, reason
    cdef u32 sid = 0
    cdef iotlb_entry *e
    limit = min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit)
    if iova + n - 1 > limit:
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, iova, n, "write" if write else "read",
                           f"beyond the device's addressing limit {limit:#x}")
    if tlb is not None and tlb.qemu:
        with gil:
            sid = mmu.sid_of(dev)
    while done < n:
        a = iova + done
        chunk = PAGE_SIZE - (a & (PAGE_SIZE - 1))
        if chunk > n - done:
            chunk = n - done
        reason = R_NONE
        if pt is None:
            reason = R_BLOCKED
        else:
            e = tlb.find(d.id, sid, a, d.leaf_shifts, d.nshifts) if tlb is not None else NULL
            if e != NULL:
                mask = ((<u64>1) << e.shift) - 1
                phys = e.phys | (a & mask)
                prot = e.prot
                if e.gen != pt.leaf_writes:
                    # the table changed since this entry was filled: is it still what the table says?
                    saved = pt.walk_reads
                    ok = pt.lookup(a, &cur_phys, &cur_prot, &cur_leaf)
                    pt.walk_reads = saved               # an oracle check, not a hardware walk
                    if ok != 0 or cur_phys != phys or cur_prot != prot or cur_leaf != mask + 1:
                        with gil:
                            tlb.stale_hits += 1
                            d.stale_hits += 1
                            debug_dma_stale_iotlb(dev, a, phys, U64_MAX if ok != 0 else cur_phys)
                    else:
                        e.gen = pt.leaf_writes
            elif pt.lookup(a, &phys, &prot, &leaf) != 0:
                reason = R_NOT_PRESENT if pt.in_range(a, a) else R_ADDRESS_SIZE
            elif tlb is not None:
                tlb.fill(d.id, sid, a, __ffs64(leaf), phys, prot, pt.leaf_writes)
            if reason == R_NONE and not (prot & need):
                reason = R_WRITE_DENIED if write else R_READ_DENIED
        if reason != R_NONE:
            with gil:
                _iommu_fault(mmu, d, dev, a, chunk, write, _REASON_NAMES[reason])
            if not write:
                memset(buf + done, 0xff, chunk)
        else:
            bus_access_phys(dev, phys, buf + done, chunk, write)
        done += chunk
    return 0


# ---- module-level kernel API ---------------------------------------------------------------------
cdef IommuDomain _domain_arg(object domain):
    if not isinstance(domain, IommuDomain):
        raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
    return <IommuDomain>domain


def iommu_map(domain, iova, paddr, size, prot):
    """iommu_map(domain, iova, paddr, size, prot): 0 or -errno."""
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), p = _u64(paddr, "paddr"), s = _u64(size, "size")
    cdef u64 pr = _u64(prot, "prot")
    try:
        return iommu_map_c(d, a, p, s, <int>pr)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap(domain, iova, size):
    """iommu_unmap(domain, iova, size): bytes unmapped; the IOTLB is synced for the range."""
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size")
    try:
        return iommu_unmap_c(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap_fast(domain, iova, size):
    """iommu_unmap_fast(): bytes unmapped, the IOTLB is NOT invalidated (caller syncs or flushes)."""
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size")
    try:
        return iommu_unmap_fast_c(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_iotlb_sync(domain, iova, size):
    """iommu_iotlb_sync() of a gather covering [iova, iova + size)."""
    cdef IommuDomain d = _domain_arg(domain)
    iommu_iotlb_sync_range(d, _u64(iova, "iova"), _u64(size, "size"))


def iommu_iova_to_phys(domain, iova):
    """iommu_iova_to_phys(domain, iova): the physical address, 0 when unmapped."""
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    return iommu_iova_to_phys_c(d, _u64(iova, "iova"))


def iommu_domain_free(domain):
    """iommu_domain_free(): an unmanaged domain with no devices attached; its tables are freed."""
    cdef IommuDomain d = _domain_arg(domain)
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was already freed")
    if d.ktype == IOMMU_DOMAIN_IDENTITY or d.ktype == IOMMU_DOMAIN_BLOCKED:
        raise ValueError(f"the {d.type} domain is static and is never freed")
    if d.devices:
        raise ValueError(f"IOMMU domain {d.id} still has devices attached: "
                         f"{', '.join(x.name for x in d.devices)}")
    d.iommu._free_domain(d)
    d.iommu.machine.flush_warnings()


def iommu_attach_device(domain, Device dev not None):
    """iommu_attach_device(): move a single-device group from its default domain to ``domain``.

    0, -ENODEV (not behind an IOMMU), -EINVAL (other IOMMU, or a multi-device group), -EBUSY
    (already attached to a non-default domain). While attached, the device does not use the
    DMA API (dev.dma_iommu is cleared: the driver owns DMA, as with VFIO)."""
    cdef IommuDomain d = _domain_arg(domain)
    cdef IommuDomain cur
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    if dev.domain is None:
        return -IOMMU_ENODEV
    cur = <IommuDomain>dev.domain
    if cur.iommu is not d.iommu:
        return -EINVAL
    mmu = d.iommu
    if dev in (<Iommu>mmu).default_domains:
        return -EBUSY
    if len(cur.devices) != 1:
        return -EINVAL
    if cur is d:
        return 0
    (<Iommu>mmu).default_domains[dev] = cur
    (<Iommu>mmu)._switch(dev, cur, d)
    dev.dma_iommu = False
    return 0


def iommu_detach_device(domain, Device dev not None):
    """iommu_detach_device(): back to the default domain (WARN if dev is not in ``domain``)."""
    cdef IommuDomain d = _domain_arg(domain)
    cdef Iommu mmu = d.iommu
    cdef IommuDomain dflt
    if dev.domain is not d or dev not in mmu.default_domains:
        mmu.machine.kwarn(KernelWarning, "WARNING: iommu_detach_device(): WARN_ON(domain != group->domain)")
        mmu.machine.flush_warnings()
        return
    dflt = mmu.default_domains.pop(dev)
    mmu._switch(dev, d, dflt)
    dev.dma_iommu = bool(dflt.ktype & __IOMMU_DOMAIN_DMA_API) and dflt.iova_cookie is not None


__all__ += ["Iommu", "IommuDomain", "iommu_map", "iommu_unmap", "iommu_unmap_fast",
            "iommu_iotlb_sync", "iommu_iova_to_phys", "iommu_domain_free",
            "iommu_attach_device", "iommu_detach_device", "IOMMU_DOMAIN_TYPES"]
