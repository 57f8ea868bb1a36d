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


# ---- invalidation notifiers (QEMU's IOMMU notifiers, for embedders' translation caches) ------------
# Python: iommu.register_notifier(callback) -> callback(domain, iova, size). C: the hook below.
# Called after every IOTLB invalidation the IOMMU driver issues, whether or not an IOTLB is
# modelled: iommu_iotlb_sync of a gather (strict unmap, iommu_unmap, dma_iova_unlink/destroy:
# the gathered range), iommu_flush_iotlb_all (the flush queue's flush in lazy mode: iova 0,
# size U64_MAX = the whole domain), a caching-mode map (the mapped range), a device leaving a
# domain (detach, domain switch: the old domain, 0, U64_MAX), a domain freed (0, U64_MAX), and
# the IOTLB's own invalidate_range/invalidate_domain/invalidate_all commands (the last with
# domain None / domain id 0: every domain).
# (iommu_notifier_fn and struct iommu_c_notifier are declared in iommu.pxd.)

cdef int iommu_notify(Iommu mmu, IommuDomain d, u64 iova, u64 size) except -1:
    """Tell the registered notifiers that [iova, iova + size) of domain d (None: every domain)
    was invalidated; size U64_MAX means everything from iova on. C hooks first, then Python
    callbacks in registration order. A callback that raises does not stop the others nor the
    operation: the first exception is raised when the entry point returns (Machine.defer_exception)."""
    cdef size_t i
    cdef u32 domid = d.id if d is not None else 0
    for i in range(mmu.c_notifiers.size()):
        mmu.c_notifiers[i].fn(mmu.c_notifiers[i].opaque, domid, iova, size)
    if mmu.notifiers:
        for cb in list(mmu.notifiers):          # a callback may unregister itself
            try:
                cb(d, iova, size)
            except Exception as exc:
                mmu.machine.defer_exception(exc)
    return 0

def _check_fq_options(fq_size, fq_timeout):
    """Validate the flush-queue overrides of Iommu (ValueError/TypeError)."""
    for v, what in ((fq_size, "fq_size"), (fq_timeout, "fq_timeout")):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise TypeError(f"{what} must be None or an int, not {v!r}")
    if fq_size is not None and (fq_size < 2 or fq_size > (1 << 20) or fq_size & (fq_size - 1)):
        raise ValueError(f"fq_size must be a power of two in 2..{1 << 20}, not {fq_size}")
    if fq_timeout is not None and not 1 <= fq_timeout <= 3_600_000:
        raise ValueError(f"fq_timeout must be in 1..3600000 ms, not {fq_timeout}")


cdef class IommuDomain:
    """struct iommu_domain: made by ``Iommu.domain_alloc()`` (unmanaged) or by device attach.

    ``type``: "dma", "dma-fq", "identity", "blocked" or "unmanaged"; ``type_value`` is the
    kernel's IOMMU_DOMAIN_* number. Paging domains own an IoPgtable (``pgtable``) of their
    IOMMU's format; identity and blocked domains are the IOMMU's static singletons.

    Mirrors struct iommu_domain (include/linux/iommu.h). Raises TypeError when constructed from
    Python (only the core makes domains).
    """

    def __cinit__(self, *args):
        _internal_only(args, "IommuDomain objects come from Iommu.domain_alloc() or device attach")

    @property
    def pgtable_root(self):
        """Physical address of the top-level page table (0 when none / freed).

        Read-only.
        """
        return self.pgtable.pgtable_root if self.pgtable is not None else 0

    @property
    def type_value(self):
        """The kernel's IOMMU_DOMAIN_* value of ``type``.

        Read-only.
        """
        return self.ktype

    @property
    def stats(self):
        """Simulator counters: a dict of stale_hits, faults, iotlb_syncs, iotlb_flushes (read-only)."""
        return {"stale_hits": self.stale_hits, "faults": self.faults,
                "iotlb_syncs": self.iotlb_syncs, "iotlb_flushes": self.iotlb_flushes}

    def iova_to_phys_batch(self, iovas):
        """iommu_iova_to_phys(self, iovas[i]) for each i -> ndarray[uint64]; see batch.pxi.

        Models drivers/iommu/iommu.c:iommu_iova_to_phys() per element; same as
        iommu_iova_to_phys_batch(self, iovas). Returns the physical addresses (0 when unmapped).
        Raises ValueError for a freed domain, TypeError / ValueError for a bad array.
        """
        return _iommu_iova_to_phys_batch(self, iovas)

    # ---- dirty tracking (struct iommu_dirty_ops) -------------------------------------------
    def set_dirty_tracking(self, enable):
        """dirty_ops->set_dirty_tracking(domain, enable): 0, or -EOPNOTSUPP when the domain has
        no dirty ops. VT-d (SSADE in the PASID entry) and AMD (HAD in the DTE) turn the IOMMU's
        dirty updates on or off; arm-smmu-v3 keeps them always on (returns 0). Unlike iommufd's
        iopt_set_dirty_tracking() it does not clear the dirty bits first: call
        read_and_clear_dirty() for a clean start.

        Models struct iommu_dirty_ops set_dirty_tracking (intel_iommu_set_dirty_tracking(),
        amd_iommu_set_dirty_tracking(), arm-smmu-v3). Returns 0 or -EOPNOTSUPP. Raises ValueError
        for a freed domain.
        """
        if self.freed:
            raise ValueError(f"IOMMU domain {self.id} was freed")
        if not self.dirty_ops:
            return -EOPNOTSUPP
        if not self.iommu.fmt.startswith("arm-lpae"):
            self.dirty_tracking = bool(enable)
        return 0

    def read_and_clear_dirty(self, iova, size, flags=0):
        """dirty_ops->read_and_clear_dirty(domain, iova, size, flags, dirty) as iommufd drives it
        (iommu_read_and_clear_dirty(): a gather, then iommu_iotlb_sync() unless
        IOMMU_DIRTY_NO_CLEAR). Returns ``(ret, records)``: ret 0 or -errno (-EOPNOTSUPP without
        dirty ops or for unknown flags), records the list of ``(iova, length)`` the driver passed
        to iommu_dirty_bitmap_record() / iova_bitmap_set(), in walk order (one per dirty leaf:
        its size, or for a contiguous amdv1 leaf what record_dirty() computes). Dirty leaves are
        made clean unless ``flags`` has IOMMU_DIRTY_NO_CLEAR; the IOTLB flush of what was
        cleared makes the next device write through them set the bit again.

        Models drivers/iommu/iommufd/io_pagetable.c's iommu_read_and_clear_dirty() over struct
        iommu_dirty_ops read_and_clear_dirty. Raises ValueError for a freed domain or an argument
        beyond 64 bits, TypeError for a non-int. Warns KernelWarning for the format's WARNs.
        """
        cdef u64 va = _u64(iova, "iova"), sz = _u64(size, "size"), fl = _u64(flags, "flags")
        cdef list rec = []
        if self.freed:
            raise ValueError(f"IOMMU domain {self.id} was freed")
        cdef int ret = iommu_read_and_clear_dirty_c(self, va, sz, fl, rec)
        self.iommu.machine.flush_warnings()
        return ret, rec

    def __repr__(self):
        return (f"<dmaphys.IommuDomain id={self.id} {self.type} devices={len(self.devices)}"
                f"{' freed' if self.freed else ''}>")


cdef int iommu_read_and_clear_dirty_c(IommuDomain d, u64 iova, u64 size, u64 flags, list rec) except? -9999:
    """iommu_read_and_clear_dirty() (drivers/iommu/iommufd/io_pagetable.c) over one range of a live
    domain, without flushing warnings (the caller's entry point does): -EOPNOTSUPP without dirty
    ops or for unknown flags, else the format's read_and_clear_dirty() over [iova, iova + size)
    with ``(iova, length)`` appended to ``rec`` per recorded leaf, then (unless
    IOMMU_DIRTY_NO_CLEAR) one iommu_iotlb_sync() over the gathered range."""
    cdef u64 g[2]
    cdef int ret
    if not d.dirty_ops or (flags & ~(<u64>IOMMU_DIRTY_NO_CLEAR)):
        return -EOPNOTSUPP
    g[0] = U64_MAX
    g[1] = 0
    ret = d.pgtable.read_and_clear_dirty(iova, size, flags, rec, g)
    if not (flags & IOMMU_DIRTY_NO_CLEAR):
        iommu_iotlb_sync_range(d, g[0], g[1] - g[0] + 1 if g[1] >= g[0] else 0)
    return ret


cdef IoPgtable _domain_pgtable(Iommu mmu, IommuDomain d):
    """The domain's page table. On an IOMMU with dirty_tracking every paging domain is allocated
    as with IOMMU_HWPT_ALLOC_DIRTY_TRACKING: formats with dirty ops get domain->dirty_ops (vtd-ss,
    amdv1: updates off until set_dirty_tracking(True); arm-lpae stage 1: the table gets
    IO_PGTABLE_QUIRK_ARM_HD and the SMMU updates from the start, as arm-smmu-v3 sets CD.HD).
    arm-smmu-v3 offers HD only with a coherent walker (arm_smmu_dbm_capable(): FEAT_HD and
    FEAT_COHERENCY): a coherent_walk=False IOMMU's domains get no dirty ops."""
    cdef bint arm_s1 = mmu.fmt.startswith("arm-lpae-s1")
    cdef bint dirty = mmu.dirty_tracking and mmu.coherent_walk
    cdef IoPgtable pt = IoPgtable(mmu.machine, mmu.fmt, mmu.ias, mmu.oas, coherent_walk=mmu.coherent_walk,
                                  iommu_dev=mmu.iommu_dev, arm_hd=dirty and arm_s1)
    if dirty and pt.has_dirty():
        d.dirty_ops = True
        d.dirty_tracking = arm_s1
    return pt


cdef IommuDomain _domain_new(Iommu mmu, str type, bint is_default):
    """iommu_paging_domain_alloc() / the static identity and blocked domains."""
    cdef IommuDomain d = IommuDomain.__new__(IommuDomain, _INTERNAL)
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
        d.pgtable = _domain_pgtable(mmu, d)
        d.pgtable.defer_free = True            # table pages wait for the IOTLB sync (the gather)
        d.pgsize_bitmap = d.pgtable.pgsize_bitmap
        d.aperture_start = d.pgtable.aperture_start
        d.aperture_end = d.pgtable.aperture_end
        d.translates = True
        bm = d.pgsize_bitmap
        while bm and d.nshifts < 64:
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
    ``dirty_tracking`` (IOMMU_CAP_DIRTY_TRACKING: VT-d SSADS / AMD HDSup / SMMUv3 HTTU HD; every
    paging domain is then allocated as with IOMMU_HWPT_ALLOC_DIRTY_TRACKING where the format has
    dirty bits: vtd-ss, amdv1, arm-lpae-s1-*; see IommuDomain.read_and_clear_dirty),
    ``name``, ``fq_size`` / ``fq_timeout`` (a simulator knob for parameter studies: the DMA-FQ
    flush queues' entries, a power of two >= 2, and timeout in ms >= 1, instead of the kernel's
    fixed iommu_dma_options values; None = the kernel's), ``coherent_walk`` (io-pgtable-arm
    formats: False models an IOMMU whose table walker does not snoop the CPU caches -- the SMMU
    without ARM_SMMU_FEAT_COHERENCY: its page tables are DMA-mapped to the IOMMU's own device and
    every PTE store is followed by a cache clean, see IoPgtable), ``iommu_dev`` (that device; None:
    a platform device named like the IOMMU, non-coherent, DMA mask of ``oas`` bits, is added).

    Mirrors struct iommu_device with its driver's domain ops (drivers/iommu/iommu.c, the VT-d / AMD
    / SMMU drivers). Raises ValueError for an unknown ``fmt`` or ``fault_mode``, unsupported
    ``ias``/``oas``, bad ``fq_size``/``fq_timeout`` or ``reserved_regions``, an Iotlb owned by
    another IOMMU, ``coherent_walk=False`` on a format other than io-pgtable-arm, or an
    ``iommu_dev`` with a coherent walk or of another machine; TypeError for arguments of the wrong
    type; MemoryError when no RAM is left for a page table.
    """

    def __cinit__(self, Machine machine not None, fmt="vtd-ss", strict=True, iotlb=None, *,
                 fault_mode="raise", shadow_on_flush=False, forcedac=False, caching_mode=False,
                 reserved_regions=None, ias=None, oas=None, name=None, fq_size=None, fq_timeout=None,
                 coherent_walk=True, Device iommu_dev=None, dirty_tracking=False):
        cdef Iotlb tlb
        _check_fq_options(fq_size, fq_timeout)
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
        if not coherent_walk and IOPGTABLE_FORMATS[fmt].family != "io-pgtable-arm":
            raise ValueError("coherent_walk=False is an io-pgtable-arm option")
        if iommu_dev is not None and (coherent_walk or iommu_dev.machine is not machine):
            raise ValueError("iommu_dev is the own device of a non-coherent walker of this machine")
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
        self.dirty_tracking = bool(dirty_tracking)
        self.reserved_regions = regions
        self.name = f"iommu{len(machine.iommus)}" if name is None else str(name)
        self.fq_size = fq_size
        self.fq_timeout = fq_timeout
        self.coherent_walk = bool(coherent_walk)
        if not self.coherent_walk:
            if iommu_dev is None:
                # the SMMU's platform device: dma_set_mask_and_coherent(smmu->dev, DMA_BIT_MASK(oas)),
                # not dma-coherent (the walker's coherency and the device's come from one firmware flag)
                iommu_dev = machine.add_device(self.name, DMA_BIT_MASK_c(_pt_sizes(fmt, ias, oas)[1]),
                                               False, pci=False)
            self.iommu_dev = iommu_dev
        self.sids = {}
        self.default_domains = {}
        self.notifiers = []
        self.next_domid = 0
        self.next_sid = 0
        self.identity_domain = _domain_new(self, "identity", False)
        self.blocked_domain = _domain_new(self, "blocked", False)
        self.domains = [self.identity_domain, self.blocked_domain]

    @property
    def fault_mode(self):
        """"raise" or "record" (see the class docstring); setting another value raises ValueError."""
        return self._fault_mode

    @fault_mode.setter
    def fault_mode(self, value):
        if value not in IOMMU_FAULT_MODES:
            raise ValueError(f"fault_mode must be 'raise' or 'record', not {value!r}")
        self._fault_mode = value
        self.record_faults = value == "record"

    def clear_faults(self):
        """Forget the recorded faults (the fault log registers after software read them).

        Simulator-only (the kernel's drivers clear their fault registers). Returns None. Raises
        nothing.
        """
        self.faults = []

    # ---- invalidation notifiers ------------------------------------------------------------
    def register_notifier(self, callback):
        """Call ``callback(domain, iova, size)`` on every IOTLB invalidation (see iommu_notify:
        strict unmaps give their range, the lazy flush queue's flush gives (domain, 0, 2**64-1),
        a global invalidation gives domain None). Exceptions it raises are re-raised when the
        invalidating call returns, after the call (and every other callback) completed.

        Simulator-only (like QEMU's IOMMU notifiers; the kernel has mmu_notifier for SVA). Returns
        None. Raises TypeError for a non-callable ``callback``.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self.notifiers.append(callback)
        self.has_notifiers = True

    def unregister_notifier(self, callback):
        """Remove a callback given to register_notifier (ValueError if it is not registered).

        Simulator-only. Returns None. Raises ValueError when ``callback`` is not registered.
        """
        for i, cb in enumerate(self.notifiers):
            if cb is callback or cb == callback:
                del self.notifiers[i]
                self.has_notifiers = bool(self.notifiers) or not self.c_notifiers.empty()
                return
        raise ValueError("callback is not registered")

    cdef int register_c_notifier(self, iommu_notifier_fn fn, void *opaque) except -1:
        """C hook: fn(opaque, domain_id, iova, size) on every invalidation iommu_notify reports
        (domain_id 0: every domain; size U64_MAX: to the end of the address space). Called with
        the GIL held, from inside the invalidating call: it must not call into dmaphys.
        0, or -EINVAL for a NULL fn. The same (fn, opaque) may be registered more than once."""
        cdef iommu_c_notifier n
        if fn == NULL:
            return -EINVAL
        n.fn = fn
        n.opaque = opaque
        self.c_notifiers.push_back(n)
        self.has_notifiers = True
        return 0

    cdef int unregister_c_notifier(self, iommu_notifier_fn fn, void *opaque) noexcept:
        """Remove one registration of (fn, opaque): 0, or -ENOENT when there is none."""
        cdef size_t i
        for i in range(self.c_notifiers.size()):
            if self.c_notifiers[i].fn == fn and self.c_notifiers[i].opaque == opaque:
                self.c_notifiers.erase(self.c_notifiers.begin() + i)
                self.has_notifiers = bool(self.notifiers) or not self.c_notifiers.empty()
                return 0
        return -ENOENT

    # ---- domains ---------------------------------------------------------------------------
    def domain_alloc(self):
        """iommu_paging_domain_alloc(): a new UNMANAGED paging domain (empty page table).

        Models drivers/iommu/iommu.c:iommu_paging_domain_alloc() (the kernel returns an ERR_PTR on
        failure). Returns the new IommuDomain. Raises MemoryError when no RAM is left for the
        top-level table.
        """
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
        if self.has_notifiers:
            iommu_notify(self, d, 0, U64_MAX)
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

        Models drivers/iommu/iommu.c:iommu_probe_device() / iommu_setup_default_domain() and
        iommu_setup_dma_ops(). Returns the IommuDomain the device joined. Raises ValueError for a
        device already attached or of another machine, a ``domain`` of another IOMMU or freed, an
        untrusted device joining a non-strict domain, or an unknown ``domain_type``; TypeError for a
        non-Device or non-domain; KernelBug where iommu_dma_init_domain() BUGs (a smallest page size
        above PAGE_SIZE); MemoryError when no RAM is left for the page table. Warns KernelWarning
        when dma-iommu cannot be set up (the device keeps dma-direct).
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
        whose last device left is freed. The device's IOTLB entries are flushed.

        Models drivers/iommu/iommu.c:iommu_release_device() (and iommu_deinit_device()). Returns
        None. Raises ValueError when ``dev`` is not attached to this IOMMU, TypeError for a
        non-Device.
        """
        cdef IommuDomain d = dev.domain
        if d is None or d.iommu is not self:
            raise ValueError(f"{dev.name} is not attached to {self.name}")
        self._detach_device(dev)
        self.machine.flush_warnings()

    cdef int _detach_device(self, Device dev) except -1:
        # detach_device() after its check, warnings left queued (Machine.remove_device flushes
        # them once the removal is complete)
        cdef IommuDomain d = dev.domain
        if dev in self.default_domains:
            self._switch(dev, d, self.default_domains.pop(dev))
            d = dev.domain
        d.devices.remove(dev)
        dev.domain = None
        dev.dma_iommu = False
        self.sids.pop(dev, None)
        if d.translates and self.iotlb is not None:
            self.iotlb.inv_domain(d.id)                   # domain_context_clear_one()
        if self.has_notifiers:
            iommu_notify(self, d, 0, U64_MAX)             # the device left d
        if d.is_default and not d.devices:
            self._free_domain(d)
        return 0

    cdef int _switch(self, Device dev, IommuDomain old, IommuDomain new) except -1:
        old.devices.remove(dev)
        new.devices.append(dev)
        dev.domain = new
        if old.translates and self.iotlb is not None:
            self.iotlb.inv_domain(old.id)
        if self.has_notifiers:
            iommu_notify(self, old, 0, U64_MAX)           # the device left old
        return 0

    def device_domain(self, Device dev not None):
        """The domain dev's requests are translated in (None when not behind this IOMMU).

        Models drivers/iommu/iommu.c:iommu_get_domain_for_dev(). Returns the IommuDomain or None.
        Raises TypeError for a non-Device.
        """
        d = dev.domain
        return d if d is not None and (<IommuDomain>d).iommu is self else None

    cdef u32 sid_of(self, Device dev):
        return self.sids.get(dev, 0)

    # ---- reports ---------------------------------------------------------------------------
    def get_state(self):
        """Snapshot for differential tests: domains, faults, IOTLB.

        Simulator-only. Returns a dict (``domains``, ``faults``, ``iotlb``). Raises nothing.
        """
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
    if d.iommu.caching_mode and size:
        if d.iommu.iotlb is not None:
            d.iommu.iotlb.inv_range(d.id, iova, size, d.leaf_shifts, d.nshifts)
        if d.iommu.has_notifiers:
            iommu_notify(d.iommu, d, iova, size)
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
    if size and d.iommu.has_notifiers:
        iommu_notify(d.iommu, d, iova, size)
    if d.pgtable is not None:
        d.pgtable.release_pending()
    return 0


cdef int iommu_flush_iotlb_all(IommuDomain d) except -1:
    """iommu_flush_iotlb_all(): domain-selective invalidation, then free collected table pages."""
    d.iotlb_flushes += 1
    if d.iommu.iotlb is not None:
        d.iommu.iotlb.inv_domain(d.id)
    if d.iommu.has_notifiers:
        iommu_notify(d.iommu, d, 0, U64_MAX)
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


cdef enum:                                      # iommu_translate_one() results
    XLATE_OK = 0
    XLATE_BLOCKED = 1                           # no page table (blocked domain)
    XLATE_NOT_PRESENT = 2
    XLATE_ADDRESS_SIZE = 3                      # beyond the table's input address width
    XLATE_DENIED = 4                            # present, but not with the access's permission

_XLATE_REASONS = (None, "blocked", "not-present", "address-size")


cdef inline str _xlate_reason(int r, bint write):
    if r == XLATE_DENIED:
        return "write-denied" if write else "read-denied"
    return _XLATE_REASONS[r]


cdef inline int iommu_translate_one(Device dev, IommuDomain d, Iotlb tlb, IoPgtable pt, u32 sid, u64 a,
                                    int need, u64 *phys, int *prot, int *shift) except -1 nogil:
    """Translate one request address the way the hardware does: the IOTLB, else a page-table
    walk whose result fills the IOTLB. Returns XLATE_OK with phys/prot/shift (the leaf size)
    set, or an XLATE_* fault code. An IOTLB hit is used even when the page table has changed
    since (the lazy unmap window): that is detected by comparing with the live table and
    reported as a stale hit (counters + debug_dma_stale_iotlb)."""
    cdef u64 mask, saved, leaf = 0, cur_phys = 0, cur_leaf = 0
    cdef int cur_prot = 0, ok
    cdef iotlb_entry *e
    if pt is None:
        return XLATE_BLOCKED
    e = tlb.find(d.id, sid, a, d.leaf_shifts, d.nshifts) if tlb is not None else NULL
    if e != NULL:
        shift[0] = e.shift
        mask = ((<u64>1) << e.shift) - 1
        phys[0] = e.phys | (a & mask)
        prot[0] = e.prot
        if e.gen != pt.leaf_writes:
            # the table changed since this entry was filled: is it still what the table says?
            saved = pt.walk_reads
            ok = pt.lookup(a, &cur_phys, &cur_prot, &cur_leaf)
            pt.walk_reads = saved               # an oracle check, not a hardware walk
            if ok != 0 or cur_phys != phys[0] or cur_prot != prot[0] or cur_leaf != mask + 1:
                with gil:                       # a report Python sees
                    tlb.stale_hits += 1
                    d.stale_hits += 1
                    debug_dma_stale_iotlb(dev, a, phys[0], U64_MAX if ok != 0 else cur_phys)
            else:
                e.gen = pt.leaf_writes
    elif pt.lookup(a, phys, prot, &leaf) != 0:
        return XLATE_NOT_PRESENT if pt.canonical(a, a) else XLATE_ADDRESS_SIZE
    else:
        shift[0] = __ffs64(leaf)
        if tlb is not None:
            e = tlb.fill(d.id, sid, a, shift[0], phys[0], prot[0], pt.leaf_writes)
    if not (prot[0] & need):
        return XLATE_DENIED
    if d.dirty_tracking and need == IOMMU_WRITE and (e == NULL or not e.dirty):
        # the IOMMU sets the leaf's dirty bit for a write through an entry it holds clean (a
        # miss, or an IOTLB entry filled before the write); one held dirty writes nothing
        pt.hw_set_dirty(a)
        if e != NULL:
            e.dirty = True
    return XLATE_OK


# ---- the common case, flattened (simulator; no kernel counterpart) -------------------------------
cdef inline bint device_access_fast(Device dev, u64 addr, u8 *buf, u64 n, bint write) noexcept nogil:
    """device_access() of the common case in one inlined step: a device behind a translating
    domain, the access inside one 4 KiB page (one request), an IOTLB hit (set-assoc mode)
    whose entry the page table still holds and that grants the access, plain RAM behind it
    with its frame present, nothing for dma-debug, P2P routing or dirty tracking to do.
    Returns True with the bytes moved and the IOTLB's hit counter / LRU clock updated exactly
    as iommu_translate_one() updates them; otherwise False having touched nothing, and the
    caller runs the full path (device_access -> iommu_device_access), which faults, walks,
    fills, reports stale hits and sets dirty bits as usual."""
    if buf == NULL or n == 0 or dev.removed or n > PAGE_SIZE - (addr & (PAGE_SIZE - 1)):
        return False
    if dev.domain is None or not (<IommuDomain>dev.domain).translates or dev.machine.dma_debug.enabled:
        return False
    if not dev.machine.p2pdma._windows.empty() and dev.p2p_node is not None:
        return False
    if addr + n - 1 > min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit):
        return False
    return _iommu_access_fast_d(dev, <IommuDomain>dev.domain, addr, buf, n, write)


cdef inline bint _iommu_access_fast_d(Device dev, IommuDomain d, u64 iova, u8 *buf, u64 n,
                                      bint write) noexcept nogil:
    # (nogil code passes borrowed typed references as arguments; it cannot assign them)
    if d.iommu.iotlb is None or d.pgtable is None:
        return False
    return _iommu_access_fast(d, d.iommu.iotlb, d.pgtable, dev.machine.mem, iova, buf, n, write)


cdef inline bint _iommu_access_fast(IommuDomain d, Iotlb tlb, IoPgtable pt, PhysMem mem, u64 iova,
                                    u8 *buf, u64 n, bint write) noexcept nogil:
    cdef iotlb_entry *e = iotlb_peek(tlb, d.id, iova, d.leaf_shifts, d.nshifts)
    cdef u64 phys
    cdef int r
    cdef u8 *p
    if e == NULL or e.gen != pt.leaf_writes:   # a miss, or a possibly stale hit: the full path
        return False
    if not (e.prot & (IOMMU_WRITE if write else IOMMU_READ)):
        return False                           # a permission fault
    if write and d.dirty_tracking and not e.dirty:
        return False                           # the IOMMU sets the leaf's dirty bit
    phys = e.phys | (iova & (((<u64>1) << e.shift) - 1))
    r = mem.find_region(phys, n)
    if r < 0 or mem.regions[r].kind != REGION_RAM:
        return False
    p = mem.page_ptr(phys >> PAGE_SHIFT)
    if write:
        if p == NULL:                          # the frame gets its storage on the full path
            return False
        iotlb_count_hit(tlb, e)
        memcpy(p + (phys & (PAGE_SIZE - 1)), buf, n)
    else:
        iotlb_count_hit(tlb, e)
        if p == NULL:
            memset(buf, 0, n)
        else:
            memcpy(buf, p + (phys & (PAGE_SIZE - 1)), n)
    return True


cdef int iommu_device_access(Device dev, u64 iova, u8 *buf, u64 n, bint write) except -1 nogil:
    """A device's DMA of n bytes at IOVA iova through its domain.

    Split into requests that never cross a 4 KiB boundary; each is translated
    (iommu_translate_one: IOTLB hit, or a page-table walk whose result fills the IOTLB),
    permission-checked and sent to memory with bus_access_phys. Faults: see
    Iommu(fault_mode=...); in record mode a faulting read request returns 0xff bytes (PCIe
    Unsupported Request) and a write is dropped. Requests before a fault have reached memory,
    as on hardware.

    Runs without the GIL: it takes it itself for a fault, a stale-hit report, the qemu-mode
    requester id lookup and dma-debug's view of device writes.
    """
    return _iommu_access_d(dev, <IommuDomain>dev.domain, iova, buf, n, write)


cdef inline int _iommu_access_d(Device dev, IommuDomain d, u64 iova, u8 *buf, u64 n, bint write) except -1 nogil:
    # (nogil code passes borrowed typed references as arguments; it cannot assign them)
    return _iommu_access(dev, d, d.iommu, d.iommu.iotlb, d.pgtable, iova, buf, n, write)


cdef int _iommu_access(Device dev, IommuDomain d, Iommu mmu, Iotlb tlb, IoPgtable pt, u64 iova, u8 *buf,
                       u64 n, bint write) except -1 nogil:
    cdef u64 done = 0, a, chunk, phys = 0, limit
    cdef int prot = 0, shift = 0, need = IOMMU_WRITE if write else IOMMU_READ, r
    cdef u32 sid = 0
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
        r = iommu_translate_one(dev, d, tlb, pt, sid, a, need, &phys, &prot, &shift)
        if r != XLATE_OK:
            with gil:
                _iommu_fault(mmu, d, dev, a, chunk, write, _xlate_reason(r, write))
            if not write and buf != NULL:
                memset(buf + done, 0xff, chunk)
        else:                                    # (buf NULL: a read whose bytes nobody keeps)
            bus_access_phys(dev, phys, buf + done if buf != NULL else NULL, chunk, write)
        done += chunk
    return 0


# ---- QEMU-style translation for embedders (dev.translate) ---------------------------------------
# struct iommu_tlb_entry (QEMU's IOMMUTLBEntry) is declared in iommu.pxd.
cdef int device_translate(Device dev, u64 addr, bint write, iommu_tlb_entry *out) except -1 nogil:
    """C entry point of dev.translate(): the translation of the page holding bus address addr,
    found the way a device request for addr is (p2p routing, IOTLB, page-table walk that
    fills the IOTLB; dma-direct: the bus-to-phys translation). 0 with *out filled; where a
    device access would fault it faults the same way (IommuFault recorded in iommu.faults, with
    size 1; DmaFault for dma-direct and beyond-the-mask addresses); in fault_mode="record" the
    IOMMU fault is only recorded and *out gets perm IOMMU_NONE (translated_addr 0). Runs
    without the GIL like device_access: it takes it itself for a fault, a stale-IOTLB report,
    P2P routing and the qemu-mode requester id (the C ABI's translate relies on that)."""
    cdef u64 phys
    out.iova = addr & ~(<u64>PAGE_SIZE - 1)
    out.addr_mask = PAGE_SIZE - 1
    out.translated_addr = 0
    out.perm = IOMMU_NONE
    if dev.domain is not None and (<IommuDomain>dev.domain).translates:
        phys = _p2p_route(dev, addr, 1)        # a switch routes peer requests before the IOMMU
        if phys == U64_MAX:
            return _iommu_translate_d(dev, <IommuDomain>dev.domain, addr, write, out)
    else:
        phys = direct_bus_to_phys(dev, addr, 1, write)
    bus_check_phys(dev, phys, 1, write)
    out.translated_addr = phys - (addr & (PAGE_SIZE - 1))
    out.perm = IOMMU_RW
    return 0


cdef inline int _iommu_translate_d(Device dev, IommuDomain d, u64 addr, bint write,
                                   iommu_tlb_entry *out) except -1 nogil:
    return _iommu_translate(dev, d, d.iommu, d.iommu.iotlb, d.pgtable, addr, write, out)


cdef int _iommu_translate(Device dev, IommuDomain d, Iommu mmu, Iotlb tlb, IoPgtable pt, u64 addr,
                          bint write, iommu_tlb_entry *out) except -1 nogil:
    """device_translate() through domain d: the one request a device access of addr would make."""
    cdef u64 phys = 0, mask
    cdef u64 limit = min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit)
    cdef int prot = 0, shift = 0, r
    cdef u32 sid = 0
    if addr > limit:
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, addr, 1, "write" if write else "read",
                           f"beyond the device's addressing limit {limit:#x}")
    if tlb is not None and tlb.qemu:
        with gil:
            sid = mmu.sid_of(dev)
    r = iommu_translate_one(dev, d, tlb, pt, sid, addr, IOMMU_WRITE if write else IOMMU_READ,
                            &phys, &prot, &shift)
    if r != XLATE_OK:
        with gil:
            _iommu_fault(mmu, d, dev, addr, 1, write, _xlate_reason(r, write))
        return 0
    mask = ((<u64>1) << shift) - 1
    out.iova = addr & ~mask
    out.translated_addr = phys & ~mask
    out.addr_mask = mask
    out.perm = prot & IOMMU_RW
    return 0


cdef class IOMMUTLBEntry:
    """IOMMUTLBEntry(iova, translated_addr, addr_mask, perm)

    QEMU's IOMMUTLBEntry, as dev.translate() returns it: ``iova`` (page start),
    ``translated_addr`` (its physical address), ``addr_mask`` (page size - 1: the real leaf
    size, e.g. 0x1fffff for a 2 MiB page, as QEMU's vtd_iommu_translate reports it) and
    ``perm`` (IOMMU_NONE / IOMMU_RO / IOMMU_WO / IOMMU_RW).

    Mirrors QEMU's IOMMUTLBEntry (include/exec/memory.h in QEMU; no kernel counterpart). Raises
    TypeError / ValueError for non-int or out-of-range fields.
    """
    cdef readonly u64 iova                      # C fields: no Python ints made until read
    cdef readonly u64 translated_addr
    cdef readonly u64 addr_mask
    cdef readonly int perm

    def __init__(self, iova, translated_addr, addr_mask, perm):
        self.iova = _u64(iova, "iova")
        self.translated_addr = _u64(translated_addr, "translated_addr")
        self.addr_mask = _u64(addr_mask, "addr_mask")
        self.perm = <int>_u64(perm, "perm")

    def __eq__(self, other):
        if not isinstance(other, IOMMUTLBEntry):
            return NotImplemented
        return self._key() == (<IOMMUTLBEntry>other)._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return (self.iova, self.translated_addr, self.addr_mask, self.perm)

    def __repr__(self):
        return (f"IOMMUTLBEntry(iova={self.iova:#x}, translated_addr={self.translated_addr:#x}, "
                f"addr_mask={self.addr_mask:#x}, perm={_IOMMU_PERM_NAMES[self.perm]})")


_IOMMU_PERM_NAMES = ("IOMMU_NONE", "IOMMU_RO", "IOMMU_WO", "IOMMU_RW")


cdef IOMMUTLBEntry _tlb_entry_obj(iommu_tlb_entry *e):
    cdef IOMMUTLBEntry o = IOMMUTLBEntry.__new__(IOMMUTLBEntry)
    o.iova = e.iova
    o.translated_addr = e.translated_addr
    o.addr_mask = e.addr_mask
    o.perm = e.perm
    return o


# ---- a C-level notifier for tests (and a pattern for C ABI users) -----------------------------------
cdef struct _notify_rec:
    u32 domain_id
    u64 iova
    u64 size

cdef void _probe_notifier(void *opaque, u32 domain_id, u64 iova, u64 size) noexcept nogil:
    cdef _notify_rec r
    r.domain_id = domain_id
    r.iova = iova
    r.size = size
    (<vector[_notify_rec] *>opaque).push_back(r)


cdef class _CNotifierProbe:
    """Registers _probe_notifier with the IOMMU (opaque = its own record vector) and unregisters
    itself when dropped, so the IOMMU never holds a dangling opaque pointer."""
    cdef Iommu mmu
    cdef vector[_notify_rec] recs
    cdef bint registered
    cdef readonly int last_ret

    def records(self):
        return [(r.domain_id, r.iova, r.size) for r in self.recs]

    def unregister(self):
        self.last_ret = self.mmu.unregister_c_notifier(_probe_notifier, &self.recs)
        self.registered = False

    def __dealloc__(self):
        if self.registered and self.mmu is not None:
            self.mmu.unregister_c_notifier(_probe_notifier, &self.recs)


def _c_notifier_probe(Iommu iommu not None):
    """Test hook: a C-level notifier recording (domain_id, iova, size) (see register_c_notifier)."""
    cdef _CNotifierProbe p = _CNotifierProbe.__new__(_CNotifierProbe)
    p.mmu = iommu
    p.last_ret = iommu.register_c_notifier(_probe_notifier, &p.recs)
    p.registered = p.last_ret == 0
    return p


# ---- module-level kernel API ---------------------------------------------------------------------
cdef IommuDomain _domain_arg(object domain):
    if not isinstance(domain, IommuDomain):
        raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
    return <IommuDomain>domain


def iommu_map(domain, iova, paddr, size, prot):
    """iommu_map(domain, iova, paddr, size, prot): 0 or -errno.

    Models drivers/iommu/iommu.c:iommu_map(); returns 0 or -errno: -EINVAL (misaligned or no paging
    domain), -ENOMEM, an already-mapped error (-EADDRINUSE with vtd-ss). Raises TypeError for a
    non-domain or non-int argument, ValueError for a value beyond 64 bits or a domain
    iommu_domain_free() freed; KernelBug where the kernel BUGs (iommu_pgsize() finding no page
    size). Warns KernelWarning for the kernel's WARNs.
    """
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), p = _u64(paddr, "paddr"), s = _u64(size, "size")
    cdef u64 pr = _u64(prot, "prot")
    try:
        return iommu_map_c(d, a, p, s, <int>pr)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap(domain, iova, size):
    """iommu_unmap(domain, iova, size): bytes unmapped; the IOTLB is synced for the range.

    Models drivers/iommu/iommu.c:iommu_unmap(); returns the number of bytes unmapped (0 on a WARN:
    misaligned or no paging domain). Raises TypeError for a non-domain or non-int argument,
    ValueError for a value beyond 64 bits or a domain iommu_domain_free() freed; KernelBug where the
    kernel BUGs. Warns KernelWarning for the kernel's WARNs.
    """
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size")
    try:
        return iommu_unmap_c(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_unmap_fast(domain, iova, size):
    """iommu_unmap_fast(): bytes unmapped, the IOTLB is NOT invalidated (caller syncs or flushes).

    Models drivers/iommu/iommu.c:iommu_unmap_fast(); returns the number of bytes unmapped. Raises
    TypeError for a non-domain or non-int argument, ValueError for a value beyond 64 bits or a
    domain iommu_domain_free() freed; KernelBug where the kernel BUGs. Warns KernelWarning for the
    kernel's WARNs.
    """
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size")
    try:
        return iommu_unmap_fast_c(d, a, s)
    finally:
        d.iommu.machine.flush_warnings()


def iommu_iotlb_sync(domain, iova, size):
    """iommu_iotlb_sync() of a gather covering [iova, iova + size).

    Mirrors include/linux/iommu.h:iommu_iotlb_sync(); returns None. Raises TypeError for a
    non-domain or non-int argument, ValueError for a value beyond 64 bits (a freed domain is a
    no-op).
    """
    cdef IommuDomain d = _domain_arg(domain)
    try:
        iommu_iotlb_sync_range(d, _u64(iova, "iova"), _u64(size, "size"))
    finally:
        d.iommu.machine.flush_warnings()


def iommu_iova_to_phys(domain, iova):
    """iommu_iova_to_phys(domain, iova) -> int: the physical address, 0 when unmapped.

    Models drivers/iommu/iommu.c:iommu_iova_to_phys(); returns the physical address (identity
    domains: the IOVA; blocked ones and unmapped IOVAs: 0). Raises TypeError for a non-domain or
    non-int, ValueError for an IOVA beyond 64 bits and for a domain iommu_domain_free() freed (as
    iommu_map/iommu_unmap do: 0 would read as an address). Warns KernelWarning for a non-canonical
    x86-64 IOVA the kernel aliases.
    """
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)
    cdef u64 a = _u64(iova, "iova")
    if d.freed:
        raise ValueError(f"IOMMU domain {d.id} was freed")
    if d.pgtable is not None and d.ktype != IOMMU_DOMAIN_IDENTITY:
        d.pgtable.warn_alias(a)                # a non-canonical x86-64 IOVA the kernel aliases
        d.pgtable.machine.flush_warnings()
    return iommu_iova_to_phys_c(d, a)


def iommu_domain_free(domain):
    """iommu_domain_free(): an unmanaged domain with no devices attached; its tables are freed.

    Mirrors drivers/iommu/iommu.c:iommu_domain_free(); returns None. Raises TypeError for a
    non-domain, ValueError for a domain already freed, a static (identity or blocked) domain, or one
    that still has devices attached (the kernel would free tables in use).
    """
    cdef IommuDomain d = _domain_arg(domain)
    machine_guard(d.iommu.machine)               # a batch walking its tables in another thread
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

    Mirrors drivers/iommu/iommu.c:iommu_attach_device(). Returns 0, -ENODEV (not behind an IOMMU),
    -EINVAL (other IOMMU, or a multi-device group), -EBUSY (already attached to a non-default
    domain). While attached, the device does not use the DMA API (dev.dma_iommu is cleared: the
    driver owns DMA, as with VFIO). Raises TypeError for a non-domain or non-Device, ValueError for
    a freed domain or a removed device.
    """
    _dev_live(dev)
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
    dev.dma_iommu = False
    try:
        (<Iommu>mmu)._switch(dev, cur, d)
    finally:
        (<Iommu>mmu).machine.flush_warnings()
    return 0


def iommu_detach_device(domain, Device dev not None):
    """iommu_detach_device(): back to the default domain (WARN if dev is not in ``domain``).

    Mirrors drivers/iommu/iommu.c:iommu_detach_device(); returns None. Raises TypeError for a
    non-domain or non-Device, ValueError for a removed device. Warns KernelWarning when ``dev`` is
    not attached to ``domain`` (nothing changes).
    """
    _dev_live(dev)
    cdef IommuDomain d = _domain_arg(domain)
    cdef Iommu mmu = d.iommu
    cdef IommuDomain dflt
    if dev.domain is not d or dev not in mmu.default_domains:
        mmu.machine.kwarn(KernelWarning, "WARNING: iommu_detach_device(): WARN_ON(domain != group->domain)")
        mmu.machine.flush_warnings()
        return
    dflt = mmu.default_domains.pop(dev)
    dev.dma_iommu = bool(dflt.ktype & __IOMMU_DOMAIN_DMA_API) and dflt.iova_cookie is not None
    try:
        mmu._switch(dev, d, dflt)
    finally:
        mmu.machine.flush_warnings()


__all__ += ["Iommu", "IommuDomain", "iommu_map", "iommu_unmap", "iommu_unmap_fast",
            "iommu_iotlb_sync", "iommu_iova_to_phys", "iommu_domain_free",
            "iommu_attach_device", "iommu_detach_device", "IOMMU_DOMAIN_TYPES", "IOMMUTLBEntry"]
