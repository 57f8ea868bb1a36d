# Models drivers/iommu/dma-iommu.c (the DMA-API to IOMMU-API glue) and the two-step IOVA API of
# include/linux/dma-mapping.h: the IOVA cookie with its flush queue(s), iommu_dma_init_domain,
# the IOVA allocation policy, iommu_dma_map_phys / unmap_phys / syncs / sg / alloc, and
# dma_iova_try_alloc / link / sync / unlink / destroy.
#
# Target: the v6.18 state (after "dma-mapping: migrate to physical address-based API") with the
# later upstream fix 6ec91df8aff7 ("iommu/dma: Do not try to iommu_map a 0 length region in
# swiotlb") applied. Later-than-v6.18 additions (DMA_ATTR_REQUIRE_COHERENT,
# arch_sync_dma_flush()) are not modelled.
#
# Simulator choices (see docs): dev_use_swiotlb() is "the device is untrusted" (x86/arm64
# servers: CONFIG_DMA_BOUNCE_UNALIGNED_KMALLOC off or coherent devices); every domain has
# geometry.force_aperture set and supports deferred flush; the flush-queue timer runs its
# frees on the CPU that armed it.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, dma_iommu.pxd.


cdef u64 IOVA_RCACHE_RANGE = (<u64>PAGE_SIZE) << 5      # iova_rcache_range(): 128 KiB


# ---- include/linux/iova.h helpers on the cookie's granule ----------------------------------------
cdef inline u64 _iova_offset(u64 granule, u64 addr) noexcept nogil:
    return addr & (granule - 1)

cdef inline u64 _iova_align(u64 granule, u64 size) noexcept nogil:
    return (size + granule - 1) & ~(granule - 1)


cdef class IovaFq:
    """struct iova_fq: one flush-queue ring of ``fq_size`` entries (``fq_size - 1`` usable).

    Mirrors struct iova_fq (drivers/iommu/dma-iommu.c); ``len()`` is fq_full()'s occupancy. Raises
    TypeError when constructed from Python (only the flush queue makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "IovaFq objects are made by the DMA domain's flush queue")

    def __len__(self):
        return (self.tail - self.head) & self.mod_mask

    def entries_list(self):
        """The queued entries, oldest first: [(iova_pfn, pages, counter, n_table_pages)].

        Mirrors struct iova_fq_entry (drivers/iommu/dma-iommu.c), walked like fq_ring_for_each().
        Returns the list (n_table_pages: page-table pages on the entry's freelist). Raises nothing.
        """
        cdef unsigned int i = self.head
        out = []
        while i != self.tail:
            out.append((self.entries[i].iova_pfn, self.entries[i].pages, self.entries[i].counter,
                        self.entries[i].freelist.size()))
            i = (i + 1) & self.mod_mask
        return out

    def __repr__(self):
        return f"<dmaphys.IovaFq {len(self)}/{self.mod_mask} queued>"


cdef IovaFq iommu_dma_init_one_fq(u64 fq_size):
    """iommu_dma_init_one_fq(): an empty ring (head == tail == 0, mod_mask = fq_size - 1)."""
    cdef IovaFq fq = IovaFq.__new__(IovaFq, _INTERNAL)
    fq.entries.resize(fq_size)
    fq.head = 0
    fq.tail = 0
    fq.mod_mask = <unsigned int>(fq_size - 1)
    return fq


cdef class _FqTimer:
    """The fq_timer callback bound to one incarnation of a cookie's flush queue."""

    def __cinit__(self, *args):
        _internal_only(args, "made by queue_iova()")

    def __call__(self):
        if self.cookie.fq_gen == self.gen and self.cookie.fq_on:
            fq_flush_timeout(self.cookie)


# ---- struct iommu_dma_cookie ----------------------------------------------------------------------
cdef class IommuDmaCookie:
    """struct iommu_dma_cookie of a DMA / DMA-FQ domain (``domain.iova_cookie``).

    ``iovad`` is the domain's IovaDomain; ``qt``/``fq_size``/``fq_timeout`` are the
    iommu_dma_options; ``fq_flush_start_cnt``/``fq_flush_finish_cnt``/``fq_timer_on`` the
    flush-queue state; ``fq_domain`` is the domain while the flush queue is in use (lazy
    unmaps), else None.

    Mirrors struct iommu_dma_cookie (drivers/iommu/dma-iommu.c). Raises TypeError when constructed
    from Python (iommu_dma_init_domain() makes it at device attach).
    """

    def __cinit__(self, *args):
        _internal_only(args, "IommuDmaCookie objects come from iommu_dma_init_domain() (device attach)")
        self.msi_page_list = []
        self.percpu_fq = []
        self.pci_32bit = {}

    @property
    def fq_domain(self):
        """cookie->fq_domain: the domain while its flush queue is in use (lazy mode), else None."""
        return self.domain if self.fq_on else None

    @property
    def granule(self):
        """cookie->iovad.granule: the IOVA granule in bytes (0 without an IOVA domain)."""
        return self.iovad.granule if self.iovad is not None else 0

    def pci_32bit_workaround(self, Device dev not None):
        """dev->iommu->pci_32bit_workaround for a device attached to this domain.

        Mirrors struct dev_iommu's pci_32bit_workaround flag
        (drivers/iommu/dma-iommu.c:iommu_dma_alloc_iova() clears it once a 32-bit attempt failed).
        Returns True or False (False for a device not attached). Raises TypeError for a non-Device.
        """
        return bool(self.pci_32bit.get(dev, False))

    def flush_queues(self):
        """The IovaFq rings: one per possible CPU, or the single queue.

        Mirrors cookie->percpu_fq / cookie->single_fq (drivers/iommu/dma-iommu.c). Returns a list of
        IovaFq (empty in strict mode). Raises nothing.
        """
        if not self.fq_on:
            return []
        if self.qt == IOMMU_DMA_OPTS_SINGLE_QUEUE:
            return [self.single_fq]
        return list(self.percpu_fq)

    def get_state(self):
        """A snapshot for differential tests (same schema as the reference model).

        Simulator-only. Returns the dict. Raises nothing.
        """
        return {
            "granule": self.granule,
            "start_pfn": self.iovad.start_pfn if self.iovad is not None else 0,
            "lazy": bool(self.fq_on),
            "qt": "single" if self.qt == IOMMU_DMA_OPTS_SINGLE_QUEUE else "per-cpu",
            "fq_size": self.fq_size, "fq_timeout": self.fq_timeout,
            "fq_flush_start_cnt": self.fq_flush_start_cnt,
            "fq_flush_finish_cnt": self.fq_flush_finish_cnt,
            "fq_timer_on": bool(self.fq_timer_on),
            "fq": [fq.entries_list() for fq in self.flush_queues()],
            "msi_page_list": list(self.msi_page_list),
            "pci_32bit_workaround": {d.name: bool(v) for d, v in self.pci_32bit.items()},
        }

    def __repr__(self):
        mode = "lazy" if self.fq_on else "strict"
        return f"<dmaphys.IommuDmaCookie granule={self.granule:#x} {mode}>"


cdef inline bint _pci_32bit_get(IommuDmaCookie cookie, Device dev) except -1:
    """cookie.pci_32bit.get(dev, False), with the last looked-up device cached."""
    if <void *>dev == cookie.pci32_dev:
        return cookie.pci32_val
    v = cookie.pci_32bit.get(dev)
    # a device with no entry is cached as False too (every write goes through _pci_32bit_set,
    # which refreshes the cache), so the GIL-free map path knows the answer for it
    cookie.pci32_dev = <void *>dev
    cookie.pci32_val = False if v is None else bool(v)
    return cookie.pci32_val


cdef inline int _pci_32bit_set(IommuDmaCookie cookie, Device dev, bint val) except -1:
    cookie.pci_32bit[dev] = val
    cookie.pci32_dev = <void *>dev
    cookie.pci32_val = val
    return 0


cdef inline IommuDmaCookie _cookie_of(Device dev):
    # iommu_get_dma_domain(dev)->iova_cookie; callers have checked use_dma_iommu(dev)
    return <IommuDmaCookie>(<IommuDomain>dev.domain).iova_cookie


cdef void _warn_on(Machine m, str func, str cond, object once_key=None):
    """A WARN_ON()/WARN_ON_ONCE() in dma-iommu.c (no format string: name the condition)."""
    m.kwarn(KernelWarning, f"WARNING: CPU: {m._cpu} at drivers/iommu/dma-iommu.c {func}(): {cond}",
            once_key)


# ---- flush queue operations -------------------------------------------------------------------------
cdef int iommu_put_pages_list(IommuDomain domain, vector[u64]& freelist) except -1:
    """iommu_put_pages_list(): free page-table pages whose IOTLB/walk-cache users were flushed."""
    cdef IoPgtable pt
    cdef size_t i
    if freelist.empty():
        return 0
    pt = domain.pgtable
    for i in range(freelist.size()):
        pt.pending_free.push_back(freelist[i])
    freelist.clear()
    pt.release_pending()
    return 0


cdef int fq_ring_free_locked(IommuDmaCookie cookie, IovaFq fq, int cpu) except -1:
    """fq_ring_free_locked(): release, oldest first, every entry a finished flush covers."""
    cdef u64 counter = cookie.fq_flush_finish_cnt
    cdef iova_fq_entry *e
    while fq.head != fq.tail:
        e = &fq.entries[fq.head]
        if e.counter >= counter:
            break
        iommu_put_pages_list(cookie.domain, e.freelist)
        cookie.iovad.free_iova_fast(e.iova_pfn, e.pages, cpu)
        fq.head = (fq.head + 1) & fq.mod_mask
    return 0


cdef int fq_flush_iotlb(IommuDmaCookie cookie) except -1:
    """fq_flush_iotlb(): start count, the driver's flush_iotlb_all(), finish count."""
    cookie.fq_flush_start_cnt += 1
    iommu_flush_iotlb_all(cookie.domain)
    cookie.fq_flush_finish_cnt += 1
    return 0


cdef int fq_flush_timeout(IommuDmaCookie cookie) except -1:
    """fq_flush_timeout(): timer off, one flush, then release every queue (CPU order)."""
    cdef int cpu = cookie.fq_timer_cpu
    cookie.fq_timer_on = False
    fq_flush_iotlb(cookie)
    if cookie.qt == IOMMU_DMA_OPTS_SINGLE_QUEUE:
        fq_ring_free_locked(cookie, cookie.single_fq, cpu)
    else:
        for fq in cookie.percpu_fq:
            fq_ring_free_locked(cookie, <IovaFq>fq, cpu)
    return 0


cdef int queue_iova(IommuDmaCookie cookie, u64 pfn, u64 pages, vector[u64]& freelist) except -1:
    """queue_iova(): park a freed IOVA (and its table pages) until a flush covers it."""
    cdef int cpu = cookie.machine._cpu
    cdef IovaFq fq
    cdef unsigned int idx
    cdef iova_fq_entry *e
    cdef _FqTimer t
    if cookie.qt == IOMMU_DMA_OPTS_SINGLE_QUEUE:
        fq = cookie.single_fq
    else:
        fq = <IovaFq>cookie.percpu_fq[cpu]
    # first reclaim what flushes (from any CPU) have already covered
    fq_ring_free_locked(cookie, fq, cpu)
    if ((fq.tail + 1) & fq.mod_mask) == fq.head:          # fq_full()
        fq_flush_iotlb(cookie)
        fq_ring_free_locked(cookie, fq, cpu)
    idx = fq.tail                                         # fq_ring_add()
    fq.tail = (idx + 1) & fq.mod_mask
    e = &fq.entries[idx]
    e.iova_pfn = pfn
    e.pages = pages
    e.counter = cookie.fq_flush_start_cnt
    e.freelist.swap(freelist)
    if not cookie.fq_timer_on:                            # armed once, never pushed back
        cookie.fq_timer_on = True
        cookie.fq_timer_cpu = cpu
        t = _FqTimer.__new__(_FqTimer, _INTERNAL)
        t.cookie = cookie
        t.gen = cookie.fq_gen
        cookie.machine.add_timer(cookie.fq_timeout * 1000000, t)
    return 0


cdef int iommu_dma_init_fq(IommuDomain domain) except -1:
    """iommu_dma_init_fq(): allocate the queue(s) and switch the cookie to lazy unmaps (idempotent)."""
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef int cpu
    if cookie.fq_on:
        return 0
    cookie.fq_flush_start_cnt = 0
    cookie.fq_flush_finish_cnt = 0
    if cookie.qt == IOMMU_DMA_OPTS_SINGLE_QUEUE:
        cookie.single_fq = iommu_dma_init_one_fq(cookie.fq_size)
        cookie.fq_ptrs.assign(cookie.machine.cpus, <void *>cookie.single_fq)
    else:
        cookie.percpu_fq = [iommu_dma_init_one_fq(cookie.fq_size) for cpu in range(cookie.machine.cpus)]
        cookie.fq_ptrs.clear()
        for cpu in range(cookie.machine.cpus):
            cookie.fq_ptrs.push_back(<void *>cookie.percpu_fq[cpu])
    cookie.fq_timer_on = False
    cookie.fq_on = True                                    # publishes cookie->fq_domain
    return 0


cdef int iommu_dma_free_fq(IommuDmaCookie cookie) except -1:
    """iommu_dma_free_fq(): stop the timer, free queued table pages (the IOVAs die with the domain)."""
    cdef IovaFq fq
    cdef unsigned int i
    if not cookie.fq_on:
        return 0
    cookie.fq_gen += 1                                     # timer_delete_sync()
    for q in cookie.flush_queues():
        fq = <IovaFq>q
        i = fq.head
        while i != fq.tail:
            iommu_put_pages_list(cookie.domain, fq.entries[i].freelist)
            i = (i + 1) & fq.mod_mask
    cookie.fq_on = False
    cookie.fq_timer_on = False
    cookie.fq_ptrs.clear()
    cookie.single_fq = None
    cookie.percpu_fq = []
    return 0


cdef int iommu_put_dma_cookie(IommuDomain domain) except -1:
    """iommu_put_dma_cookie(): tear down the cookie when the domain is freed."""
    cdef IommuDmaCookie cookie
    if domain.iova_cookie is None:
        return 0
    cookie = <IommuDmaCookie>domain.iova_cookie
    if cookie.iovad is not None:
        iommu_dma_free_fq(cookie)
        cookie.iovad.put_iova_domain_c()               # also cancels the rcache depot work
    cookie.msi_page_list = []
    domain.iova_cookie = None
    return 0


# ---- domain initialisation --------------------------------------------------------------------------
cdef int iommu_dma_init_options(IommuDmaCookie cookie, object iommu) except -1:
    """iommu_dma_init_options(): one big queue for shadowing IOTLB flushes, else per-CPU queues."""
    if getattr(iommu, "shadow_on_flush", False):
        cookie.qt = IOMMU_DMA_OPTS_SINGLE_QUEUE
        cookie.fq_timeout = IOVA_SINGLE_FQ_TIMEOUT
        cookie.fq_size = IOVA_SINGLE_FQ_SIZE
    else:
        cookie.qt = IOMMU_DMA_OPTS_PER_CPU_QUEUE
        cookie.fq_size = IOVA_DEFAULT_FQ_SIZE
        cookie.fq_timeout = IOVA_DEFAULT_FQ_TIMEOUT
    # simulator knobs (Iommu(fq_size=, fq_timeout=)): not in the kernel, which fixes these
    if iommu.fq_size is not None:
        cookie.fq_size = iommu.fq_size
    if iommu.fq_timeout is not None:
        cookie.fq_timeout = iommu.fq_timeout
    return 0


cdef int _resv_type(object type_name) except -1:
    """enum iommu_resv_type from an int (the kernel value) or a name ("msi", "IOMMU_RESV_SW_MSI", ...)."""
    cdef str t
    if isinstance(type_name, int) and not isinstance(type_name, bool):
        if 0 <= type_name <= IOMMU_RESV_SW_MSI:
            return type_name
        raise ValueError(f"unknown IOMMU reserved-region type {type_name!r}")
    t = str(type_name).lower().replace("-", "_")
    if t.startswith("iommu_resv_"):
        t = t[len("iommu_resv_"):]
    if t == "direct":
        return IOMMU_RESV_DIRECT
    if t == "direct_relaxable":
        return IOMMU_RESV_DIRECT_RELAXABLE
    if t == "reserved":
        return IOMMU_RESV_RESERVED
    if t == "msi":
        return IOMMU_RESV_MSI
    if t == "sw_msi":
        return IOMMU_RESV_SW_MSI
    raise ValueError(f"unknown IOMMU reserved-region type {type_name!r}")


cdef int cookie_init_hw_msi_region(IommuDmaCookie cookie, u64 start, u64 end) except -1:
    """cookie_init_hw_msi_region(): identity (iova == phys) MSI pages, one per granule."""
    cdef u64 granule = cookie.iovad.granule
    cdef u64 i, num_pages
    start -= _iova_offset(granule, start)
    num_pages = _iova_align(granule, end - start) >> cookie.iovad.iova_shift()
    for i in range(num_pages):
        cookie.msi_page_list.insert(0, (start, start))    # list_add(): newest first
        start += granule
    return 0


cdef int iova_reserve_pci_windows(Device dev, IovaDomain iovad) except -1:
    """iova_reserve_pci_windows(): reserve the holes between the host bridge's dma-ranges.

    The device's dma_range_map stands for the bridge's dma_ranges. A hole reservation runs to
    the pfn of the next range's first address (inclusive, as the kernel does). Host-bridge
    MMIO windows are not modelled (the platform reports them through reserved_regions).
    """
    cdef u64 shift = iovad.iova_shift()
    cdef u64 start = 0, end
    cdef size_t i, n = dev.range_map.size()
    ranges = sorted([(dev.range_map[i].dma_start, dev.range_map[i].dma_start + dev.range_map[i].size - 1)
                     for i in range(n)], key=lambda r: r[0])
    for i in range(n):
        lo, hi = ranges[i]
        end = lo
        while True:
            if end > start:
                iovad.reserve_iova_c(start >> shift, end >> shift)
            elif end < start:
                dev.machine.kwarn(KernelWarning,
                                  f"{dev.name}: Failed to reserve IOVA [{start:#018x}-{end:#018x}]")
                return -EINVAL
            start = <u64>(hi + 1)
            if i == n - 1 and end != U64_MAX:
                end = U64_MAX
                continue
            break
    return 0


cdef int iova_reserve_iommu_regions(Device dev, IommuDomain domain) except -1:
    """iova_reserve_iommu_regions(): PCI dma-range holes, then every reserved region but SW_MSI."""
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef IovaDomain iovad = cookie.iovad
    cdef u64 shift = iovad.iova_shift()
    cdef u64 start, length
    cdef int ret = 0, t
    if dev.pci:
        ret = iova_reserve_pci_windows(dev, iovad)
        if ret:
            return ret
    for region in getattr(domain.iommu, "reserved_regions", None) or ():
        # struct iommu_resv_region (start, length, prot, type) or (start, length, type_name)
        if hasattr(region, "type"):
            start, length, t = _u64(region.start, "start"), _u64(region.length, "length"), _resv_type(region.type)
        else:
            start, length, t = _u64(region[0], "start"), _u64(region[1], "length"), _resv_type(region[2])
        if t == IOMMU_RESV_SW_MSI:                     # dma-iommu allocates those itself
            continue
        if length == 0:
            continue
        iovad.reserve_iova_c(start >> shift, (start + length - 1) >> shift)
        if t == IOMMU_RESV_MSI:
            ret = cookie_init_hw_msi_region(cookie, start, start + length)
        if ret:
            break
    return ret


cdef int iommu_dma_init_domain(IommuDomain domain, Device dev) except -1:
    """iommu_dma_init_domain() (+ iommu_get_dma_cookie, iommu_setup_dma_ops' 32-bit workaround).

    Called by attach for DMA/DMA_FQ domains. Returns 0 or -errno (-EFAULT: dma_range_map
    outside the aperture, or an incompatible re-initialisation); on failure the caller
    clears dev.dma_iommu ("retaining platform DMA ops").
    """
    cdef IommuDmaCookie cookie
    cdef Machine m = dev.machine
    cdef u64 order, base_pfn, lo, hi
    cdef size_t i
    if domain.iova_cookie is None:                     # iommu_get_dma_cookie()
        cookie = IommuDmaCookie.__new__(IommuDmaCookie, _INTERNAL)
        cookie.domain = domain
        cookie.machine = m
        domain.iova_cookie = cookie
    cookie = <IommuDmaCookie>domain.iova_cookie
    # iommu_setup_dma_ops(): PCI devices try 32-bit IOVAs first unless iommu.forcedac
    _pci_32bit_set(cookie, dev, bool(dev.pci) and not bool(getattr(domain.iommu, "forcedac", False)))
    if domain.pgsize_bitmap == 0:
        return -EINVAL
    order = __ffs64(domain.pgsize_bitmap)
    base_pfn = 1
    if not dev.range_map.empty():
        lo = U64_MAX
        hi = 0
        for i in range(dev.range_map.size()):
            lo = min(lo, dev.range_map[i].dma_start)
            hi = max(hi, dev.range_map[i].dma_start + dev.range_map[i].size - 1)
        if lo > domain.aperture_end or hi < domain.aperture_start:
            m.kwarn(KernelWarning, "specified DMA range outside IOMMU capability")
            return -EFAULT
    base_pfn = max(base_pfn, domain.aperture_start >> order)
    if cookie.iovad is not None:                       # start_pfn != 0: already initialised
        if ((<u64>1) << order) != cookie.iovad.granule or base_pfn != cookie.iovad.start_pfn:
            m.kwarn(KernelWarning, "Incompatible range for DMA domain")
            return -EFAULT
        return 0
    cookie.iovad = IovaDomain((<u64>1) << order, base_pfn, ncpus=m.cpus, machine=m)
    iommu_dma_init_options(cookie, domain.iommu)
    if domain.pgtable is not None:
        domain.pgtable.defer_free = True               # table pages go back after the IOTLB flush
    if domain.type == "dma-fq":
        iommu_dma_init_fq(domain)                      # cannot fail here: no downgrade to "dma"
    return iova_reserve_iommu_regions(dev, domain)


# ---- protection bits and IOVA policy ----------------------------------------------------------------
cdef inline int dma_info_to_prot(int dir, bint coherent, unsigned long attrs) noexcept nogil:
    """dma_info_to_prot(): IOMMU_* flags for a direction and DMA attributes."""
    cdef int prot
    if attrs & DMA_ATTR_MMIO:
        prot = IOMMU_MMIO
    else:
        prot = IOMMU_CACHE if coherent else 0
    if attrs & DMA_ATTR_PRIVILEGED:
        prot |= IOMMU_PRIV
    if dir == DMA_BIDIRECTIONAL:
        return prot | IOMMU_READ | IOMMU_WRITE
    if dir == DMA_TO_DEVICE:
        return prot | IOMMU_READ
    if dir == DMA_FROM_DEVICE:
        return prot | IOMMU_WRITE
    return 0


cdef u64 iommu_dma_alloc_iova(IommuDomain domain, u64 size, u64 dma_limit, Device dev) except? 0xFFFFFFFFFFFFFFFF:
    """iommu_dma_alloc_iova(): IOVA for ``size`` (granule-aligned) bytes below dma_limit, 0 on failure."""
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef IovaDomain iovad = cookie.iovad
    cdef u64 shift = iovad.iova_shift()
    cdef u64 iova_len = size >> shift
    cdef u64 iova
    cdef int cpu = dev.machine._cpu
    dma_limit = min_not_zero(dma_limit, dev.bus_dma_limit)
    if dma_limit > domain.aperture_end:                # geometry.force_aperture
        dma_limit = domain.aperture_end
    # Try the 32-bit PCI space first; a failure moves the device to full-width IOVAs for good.
    if dma_limit > (<u64>0xFFFFFFFF) and _pci_32bit_get(cookie, dev):
        iova = iovad.alloc_iova_fast(iova_len, (<u64>0xFFFFFFFF) >> shift, False, cpu)
        if iova:
            return iova << shift
        _pci_32bit_set(cookie, dev, False)
        _log.info("%s: Using %d-bit DMA addresses", dev.name, fls64(dma_limit))
    iova = iovad.alloc_iova_fast(iova_len, dma_limit >> shift, True, cpu)
    return iova << shift


cdef int iommu_dma_free_iova(IommuDmaCookie cookie, u64 iova, u64 size, vector[u64] *queued_freelist) except -1:
    """iommu_dma_free_iova(): queue_iova() for a queued gather (lazy), else free_iova_fast() now."""
    cdef u64 shift = cookie.iovad.iova_shift()
    if queued_freelist != NULL:
        return queue_iova(cookie, iova >> shift, size >> shift, deref(queued_freelist))
    return cookie.iovad.free_iova_fast(iova >> shift, size >> shift, cookie.machine._cpu)


cdef int __iommu_dma_unmap(Device dev, u64 dma_addr, u64 size) except -1:
    """__iommu_dma_unmap(): unmap the granules a handle covers; strict syncs now, lazy queues."""
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef u64 granule = cookie.iovad.granule
    cdef u64 iova_off = _iova_offset(granule, dma_addr)
    cdef u64 unmapped
    cdef vector[u64] freelist
    dma_addr -= iova_off
    size = _iova_align(granule, size + iova_off)
    if size == 0:
        # Not the kernel: a zero-size unmap unmaps nothing, and the kernel would then hand
        # free_iova_fast() a zero-size range (cached as one granule while the rbtree node and the
        # PTEs stay: the next 1-granule allocation collides). The mapping stays (leaked), in strict
        # and lazy mode alike; dma-debug reports the size mismatch.
        return 0
    unmapped = iommu_unmap_fast_c(domain, dma_addr, size)
    if unmapped != size:
        _warn_on(dev.machine, "__iommu_dma_unmap", f"WARN_ON(unmapped != size) ({unmapped:#x} != {size:#x})")
    if not cookie.fq_on:
        iommu_iotlb_sync_range(domain, dma_addr, size)
        return iommu_dma_free_iova(cookie, dma_addr, size, NULL)
    freelist.swap(domain.pgtable.pending_free)          # the gather's freelist
    return iommu_dma_free_iova(cookie, dma_addr, size, &freelist)


cdef inline int _dma_pgtable_live(Device dev) except -1:
    """(simulator) A DMA domain whose page table was freed through the unmanaged API
    (IoPgtable.free_tables()) cannot map: ValueError before anything (IOVA, pages, a bounce slot)
    is allocated, so the call leaves no trace."""
    cdef IoPgtable pt = (<IommuDomain>dev.domain).pgtable
    if pt is not None and pt.pgtable_root == 0:
        pt.check_live()
    return 0


cdef u64 __iommu_dma_map(Device dev, u64 phys, u64 size, int prot, u64 dma_mask) except? 0xFFFFFFFFFFFFFFFF:
    """__iommu_dma_map(): allocate IOVA, iommu_map() the covering granules, keep the offset."""
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef u64 granule = cookie.iovad.granule
    cdef u64 iova_off = _iova_offset(granule, phys)
    cdef u64 iova
    if dev.min_align_mask > granule - 1:
        dev.machine.kwarn(KernelWarning, f"{dev.name}: Unsupported alignment constraint",
                          "dma-iommu:__iommu_dma_map:min_align_mask")
        return DMA_MAPPING_ERROR
    size = _iova_align(granule, size + iova_off)
    iova = iommu_dma_alloc_iova(domain, size, dma_mask, dev)
    if iova == 0:
        return DMA_MAPPING_ERROR
    if iommu_map_c(domain, iova, phys - iova_off, size, prot):
        iommu_dma_free_iova(cookie, iova, size, NULL)
        return DMA_MAPPING_ERROR
    return iova + iova_off


# ---- swiotlb bouncing ----------------------------------------------------------------------------
cdef inline bint dev_use_swiotlb(Device dev, u64 size, int dir) noexcept nogil:
    """dev_use_swiotlb(): untrusted devices (dma_kmalloc_needs_bounce() is false on the modelled platforms)."""
    return dev.untrusted


cdef inline int _swiotlb_unmap_if_bounced(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except -1:
    # the swiotlb_tbl_unmap_single() wrapper: only a bounce slot is released
    if is_swiotlb_buffer(dev, phys):
        return swiotlb_tbl_unmap_single(dev, phys, size, dir, attrs)
    return 0


cdef u64 iommu_dma_map_swiotlb(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """iommu_dma_map_swiotlb(): bounce into a granule-aligned slot; zero the padding for untrusted devices."""
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 start
    if not is_swiotlb_active(dev):
        dev.machine.kwarn(KernelWarning,
                          f"{dev.name}: DMA bounce buffers are inactive, unable to map unaligned transaction.",
                          "dma-iommu:iommu_dma_map_swiotlb:inactive")
        return DMA_MAPPING_ERROR
    trace_swiotlb_bounced(dev, phys, size)
    phys = swiotlb_tbl_map_single(dev, phys, size, granule - 1, dir, attrs)
    if phys != DMA_MAPPING_ERROR and dev.untrusted:
        start = phys & ~(granule - 1)                      # pre-padding
        if phys > start:
            dev.machine.mem.fill(start, 0, phys - start)
        start = phys + size                                # post-padding
        if _iova_align(granule, start) > start:
            dev.machine.mem.fill(start, 0, _iova_align(granule, start) - start)
    return phys


# ---- streaming map / unmap / sync ---------------------------------------------------------------
cdef u64 iommu_dma_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """iommu_dma_map_phys(): IOVA + sub-granule offset, or DMA_MAPPING_ERROR."""
    _dma_pgtable_live(dev)
    cdef bint coherent = dev.coherent
    cdef int prot = dma_info_to_prot(dir, coherent, attrs)
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 iova
    cdef u64 dma_mask = dma_get_mask_c(dev)
    # Buffers whose start and size are granule multiples share no granule: never bounced.
    if dev_use_swiotlb(dev, size, dir) and _iova_offset(granule, phys | size):
        if attrs & DMA_ATTR_MMIO:
            return DMA_MAPPING_ERROR
        phys = iommu_dma_map_swiotlb(dev, phys, size, dir, attrs)
        if phys == DMA_MAPPING_ERROR:
            return DMA_MAPPING_ERROR
    if not coherent and not (attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)):
        arch_sync_dma_for_device(dev, phys, size, dir)
    iova = __iommu_dma_map(dev, phys, size, prot, dma_mask)
    if iova == DMA_MAPPING_ERROR and not (attrs & DMA_ATTR_MMIO):
        _swiotlb_unmap_if_bounced(dev, phys, size, dir, attrs)
    return iova


cdef int iommu_dma_unmap_phys(Device dev, u64 dma_handle, u64 size, int dir, unsigned long attrs) except -1:
    """iommu_dma_unmap_phys(): CPU sync, unmap (strict or queued), copy back a bounce slot."""
    cdef u64 phys
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef IoPgtable pt = domain.pgtable
    if attrs & DMA_ATTR_MMIO:
        return __iommu_dma_unmap(dev, dma_handle, size)
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC) and not dev.coherent:
        phys = iommu_iova_to_phys_c(domain, dma_handle)
        if phys == 0:
            _warn_on(dev.machine, "iommu_dma_unmap_phys", f"WARN_ON(!phys) (dma_handle {dma_handle:#x})")
            return 0
        arch_sync_dma_for_cpu(dev, phys, size, dir)
        __iommu_dma_unmap(dev, dma_handle, size)
    else:
        # Nothing runs between the lookup and the unmap: let the unmap reuse the lookup's walk
        # (IoPgtable.hint_arm; the hint never outlives this call).
        if pt is not None:
            pt.hint_arm = True
        try:
            phys = iommu_iova_to_phys_c(domain, dma_handle)
            if phys == 0:
                _warn_on(dev.machine, "iommu_dma_unmap_phys", f"WARN_ON(!phys) (dma_handle {dma_handle:#x})")
                return 0
            __iommu_dma_unmap(dev, dma_handle, size)
        finally:
            if pt is not None:
                pt.hint_arm = False
                pt.hint_ptep = NULL
    return _swiotlb_unmap_if_bounced(dev, phys, size, dir, attrs)


# ---- GIL-free fast paths (mapping.pxi: dma_map_phys_fast_run / dma_unmap_phys_fast_run) -----------
# The common case of iommu_dma_map_phys / iommu_dma_unmap_phys: a trusted device, a buffer within
# one granule, its IOVA an rcache hit (map) or staying in the CPU's magazines (unmap, strict
# domains) or going onto the flush queue while its timer is armed (lazy), its leaf slot in tables
# that exist (map) and a smallest-size leaf (unmap), no caching-mode IOTLB flush on map, no
# invalidation notifier on unmap. Each does what the full functions do, in C, or stops having
# changed nothing for that element, and the caller runs the full path with the GIL.
#
# They run a whole batch (elements i..n-1 of the arrays; one element for the per-call API):
# what cannot change while they run -- the device, its domain, cookie, IOVA domain and page
# table objects, the DMA limit, the protection bits, the current CPU -- is checked once per run
# (no Python code and no other thread runs in between: the caller owns the machine), and per
# element only what the element changes: its geometry, the magazines, the leaf slot (through the
# page table's leaf-table cache, whose validated frame the run then trusts: IoPgtable.run_leaf_ptep
# says why that is exact), the flush queue. The common case of each step is inlined in the loop
# (the loaded magazine's last pfn, a push into a non-full loaded magazine, a flush-queue append
# with nothing to release, an empty IOTLB's invalidation); anything else runs the general helpers
# (iova_rcache_peek / _commit / _insert_*, map_one_fast, unmap_one_check, _fq_queue_*).
# Counters the run bumps per element (leaf stores, IOTLB syncs) are summed in locals and added
# when the run ends, however it ends. Return: the index of the first element not done (n when
# all were). (The helpers take the objects as arguments: nogil code may use
# borrowed typed references, not assign them.)
cdef inline bint _iommu_fast_domain(IommuDomain d) noexcept nogil:
    return (d.iova_cookie is not None and d.pgtable is not None and not d.freed
            and (d.ktype & __IOMMU_DOMAIN_PAGING) and d.pgsize_bitmap != 0)


cdef inline bint _iommu_fast_table(IovaDomain iovad, IommuDomain d, IoPgtable pt) noexcept nogil:
    # the IOVA granule is the smallest page size of the domain and of its (live) table
    cdef u64 granule = iovad.granule
    return (pt.granule == granule and ((<u64>1) << __ffs64(d.pgsize_bitmap)) == granule
            and pt.pgtable_root != 0)


cdef inline bint _iommu_fast_one_granule(u64 granule, u64 addr, u64 size) noexcept nogil:
    # the mapping covers exactly one granule
    cdef u64 end = size + (addr & (granule - 1))
    return size != 0 and end <= granule and end >= size


cdef Py_ssize_t iommu_dma_map_phys_run(Device dev, const u64 *phys, const u64 *sizes, Py_ssize_t ss,
                                       Py_ssize_t i, Py_ssize_t n, int dir, unsigned long attrs,
                                       u64 *out) noexcept nogil:
    """iommu_dma_map_phys() without the GIL for elements i.. < n (out[k] = the DMA address of
    element k): the index of the first element not done."""
    if dev.domain is None or (attrs & DMA_ATTR_MMIO) or dev.untrusted:
        return i
    return _iommu_map_run_d(dev, <IommuDomain>dev.domain, phys, sizes, ss, i, n, dir, attrs, out)


cdef inline Py_ssize_t _iommu_map_run_d(Device dev, IommuDomain d, const u64 *phys, const u64 *sizes,
                                        Py_ssize_t ss, Py_ssize_t i, Py_ssize_t n, int dir,
                                        unsigned long attrs, u64 *out) noexcept nogil:
    if not _iommu_fast_domain(d) or d.iommu.caching_mode:
        return i
    return _iommu_map_run_c(dev, d, <IommuDmaCookie>d.iova_cookie, phys, sizes, ss, i, n, dir, attrs, out)


cdef inline Py_ssize_t _iommu_map_run_c(Device dev, IommuDomain d, IommuDmaCookie cookie, const u64 *phys,
                                        const u64 *sizes, Py_ssize_t ss, Py_ssize_t i, Py_ssize_t n,
                                        int dir, unsigned long attrs, u64 *out) noexcept nogil:
    if cookie.iovad is None:
        return i
    return _iommu_map_run_i(dev, d, cookie, cookie.iovad, d.pgtable, phys, sizes, ss, i, n, dir, attrs, out)


cdef inline Py_ssize_t _iommu_map_run_i(Device dev, IommuDomain d, IommuDmaCookie cookie, IovaDomain iovad,
                                        IoPgtable pt, const u64 *phys, const u64 *sizes, Py_ssize_t ss,
                                        Py_ssize_t i, Py_ssize_t n, int dir, unsigned long attrs,
                                        u64 *out) noexcept nogil:
    cdef u64 granule = iovad.granule
    cdef u64 limit, limit_pfn, fast_pfn, iova, idx, p, size, off, k
    cdef int cpu = dev.machine._cpu
    cdef int shift = iovad.shift
    cdef int prot = dma_info_to_prot(dir, dev.coherent, attrs)
    cdef bint sync = not dev.coherent and not (attrs & DMA_ATTR_SKIP_CPU_SYNC)
    cdef iova_magazine *mag
    cdef iova_cpu_rcache *cr
    cdef pt_run r
    if dev.min_align_mask > granule - 1 or not _iommu_fast_table(iovad, d, pt):
        return i
    # iommu_dma_alloc_iova(): the limit, the PCI 32-bit first try (known only when cached)
    limit = min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit)
    if limit > d.aperture_end:
        limit = d.aperture_end
    if limit > (<u64>0xFFFFFFFF):
        if cookie.pci32_dev != <void *>dev:
            return i
        if cookie.pci32_val:
            limit = 0xFFFFFFFF
    limit_pfn = limit >> shift
    # map_one_fast() declines every element without IOMMU_READ / IOMMU_WRITE or a fast family
    if (not iova_rcache_fast_ok(iovad, cpu) or not (prot & (IOMMU_READ | IOMMU_WRITE))
            or not pt.run_begin(&r, prot, not sync and n - i > 1)):    # (one element: nothing to trust for)
        return i
    cr = iovad._cpu_rcache(0, cpu)
    fast_pfn = min(limit_pfn, r.iova_max >> shift)   # pfns the loaded magazine may hand run_map
    while i < n:
        p = phys[i]
        size = sizes[i * ss]
        if not _iommu_fast_one_granule(granule, p, size):
            break
        off = p & (granule - 1)
        mag = cr.loaded
        k = mag.size
        if k != 0 and mag.pfns[k - 1] <= fast_pfn:
            # the common case of iova_rcache_peek() / _commit(): the loaded magazine's last pfn
            iova = mag.pfns[k - 1] << shift
            if pt.run_map(&r, iova, p - off) != 0:
                break
            mag.size = k - 1                      # iova_magazine_pop() of the last entry
        else:
            mag = iova_rcache_peek(iovad, limit_pfn, cpu, &idx)
            if mag == NULL:
                break
            iova = mag.pfns[idx] << shift
            # iommu_map(): the leaf store map_pages() makes (map_one_fast changes nothing when it declines)
            if pt.map_one_fast(iova, p - off, prot) != 0:
                break
            pt.run_drop(&r)                       # a store outside the run's trusted frames
            iova_rcache_commit(iovad, mag, idx, cpu)
        if sync:
            arch_sync_dma_for_device(dev, p, size, dir)
        out[i] = iova + off
        i += 1
    pt.run_end(&r)
    return i


cdef inline bint _fq_queue_ok(IommuDmaCookie cookie, IovaFq fq, IovaDomain iovad, int cpu,
                              u64 anchor_lo) noexcept nogil:
    """queue_iova() on fq will run in C only: every entry it releases (those a finished flush
    covers; all of them when the ring is full and it flushes) is one granule with no table pages,
    and the rcache takes them without arming the depot work. (anchor_lo: iova_rcache_insert_ok();
    iova_rcache_fast_ok() holds.)"""
    cdef u64 finish = cookie.fq_flush_finish_cnt
    cdef unsigned int i = fq.head, k
    cdef iova_cpu_rcache *cr
    if ((i == fq.tail or fq.entries[i].counter >= finish)
            and ((fq.tail + 1) & fq.mod_mask) != i):
        return True                               # the common case: nothing released, not full
    while i != fq.tail and fq.entries[i].counter < finish:
        i = (i + 1) & fq.mod_mask
    if ((fq.tail + 1) & fq.mod_mask) == i:        # full after the release: flush, release all
        i = fq.tail
    k = (i - fq.head) & fq.mod_mask               # entries released
    i = fq.head
    while i != ((fq.head + k) & fq.mod_mask):
        if fq.entries[i].pages != 1 or not fq.entries[i].freelist.empty():
            return False
        if fq.entries[i].iova_pfn >= anchor_lo:
            return False
        i = (i + 1) & fq.mod_mask
    if iovad.work_pending[0]:
        return True
    cr = iovad._cpu_rcache(0, cpu)
    return k <= (IOVA_MAG_SIZE - cr.loaded.size) + (IOVA_MAG_SIZE - cr.prev.size)


cdef inline int _fq_release(IommuDmaCookie cookie, IovaFq fq, IovaDomain iovad, int cpu) noexcept nogil:
    """fq_ring_free_locked() where _fq_queue_ok() holds: -1 when a magazine allocation failed."""
    cdef u64 finish = cookie.fq_flush_finish_cnt
    cdef iova_fq_entry *e
    cdef iova_magazine *spare
    cdef iova_magazine *mag
    cdef iova_cpu_rcache *cr = iovad._cpu_rcache(0, cpu)
    cdef unsigned int head = fq.head, tail = fq.tail, mask = fq.mod_mask
    while head != tail:
        e = &fq.entries[head]
        if e.counter >= finish:
            break
        mag = cr.loaded
        if mag.size != IOVA_MAG_SIZE:             # iova_rcache_insert_fast() into the loaded magazine
            mag.pfns[mag.size] = e.iova_pfn
            mag.size += 1
        else:
            spare = NULL
            if iova_rcache_needs_magazine(iovad, cpu):
                spare = <iova_magazine *>malloc(sizeof(iova_magazine))
                if spare == NULL:
                    fq.head = head
                    return -1
                spare.size = 0
            iova_rcache_insert_fast(iovad, e.iova_pfn, cpu, spare)
        head = (head + 1) & mask
    fq.head = head
    return 0


cdef inline int _fq_queue_fast(IommuDmaCookie cookie, IommuDomain d, IovaFq fq, IovaDomain iovad, u64 pfn,
                               int cpu) noexcept nogil:
    """queue_iova(cookie, pfn, 1, <no table pages>) where _fq_queue_ok() holds (the timer is on)."""
    cdef unsigned int idx
    cdef iova_fq_entry *e
    if _fq_release(cookie, fq, iovad, cpu) < 0:
        return -1
    if ((fq.tail + 1) & fq.mod_mask) == fq.head:           # fq_full(): fq_flush_iotlb()
        cookie.fq_flush_start_cnt += 1
        d.iotlb_flushes += 1                                # iommu_flush_iotlb_all()
        if d.iommu.iotlb is not None:
            d.iommu.iotlb.inv_domain(d.id)
        cookie.fq_flush_finish_cnt += 1
        if _fq_release(cookie, fq, iovad, cpu) < 0:
            return -1
    idx = fq.tail                                           # fq_ring_add()
    fq.tail = (idx + 1) & fq.mod_mask
    e = &fq.entries[idx]
    e.iova_pfn = pfn
    e.pages = 1
    e.counter = cookie.fq_flush_start_cnt
    e.freelist.clear()
    return 0


cdef int iommu_dma_unmap_phys_run(Device dev, const u64 *handles, const u64 *sizes, Py_ssize_t ss,
                                  Py_ssize_t *pi, Py_ssize_t n, int dir, unsigned long attrs) except -1 nogil:
    """iommu_dma_unmap_phys() without the GIL for elements pi[0].. < n; pi[0] becomes the index
    of the first element not done (or of the one that raised: -1, MemoryError)."""
    if dev.domain is None or (attrs & DMA_ATTR_MMIO) or dev.untrusted:
        return 0
    return _iommu_unmap_run_d(dev, <IommuDomain>dev.domain, handles, sizes, ss, pi, n, dir, attrs)


cdef inline int _iommu_unmap_run_d(Device dev, IommuDomain d, const u64 *handles, const u64 *sizes,
                                   Py_ssize_t ss, Py_ssize_t *pi, Py_ssize_t n, int dir,
                                   unsigned long attrs) except -1 nogil:
    if not _iommu_fast_domain(d) or d.iommu.has_notifiers:     # notifiers are Python callbacks
        return 0
    return _iommu_unmap_run_c(dev, d, <IommuDmaCookie>d.iova_cookie, handles, sizes, ss, pi, n, dir, attrs)


cdef inline int _iommu_unmap_run_c(Device dev, IommuDomain d, IommuDmaCookie cookie, const u64 *handles,
                                   const u64 *sizes, Py_ssize_t ss, Py_ssize_t *pi, Py_ssize_t n,
                                   int dir, unsigned long attrs) except -1 nogil:
    if cookie.iovad is None:
        return 0
    if cookie.fq_on and (not cookie.fq_timer_on or <size_t>cookie.machine._cpu >= cookie.fq_ptrs.size()):
        return 0                                  # queue_iova() would arm the timer (Python)
    return _iommu_unmap_run_i(dev, d, cookie, cookie.iovad, d.pgtable, handles, sizes, ss, pi, n, dir, attrs)


cdef inline int _iommu_unmap_run_i(Device dev, IommuDomain d, IommuDmaCookie cookie, IovaDomain iovad,
                                   IoPgtable pt, const u64 *handles, const u64 *sizes, Py_ssize_t ss,
                                   Py_ssize_t *pi, Py_ssize_t n, int dir, unsigned long attrs) except -1 nogil:
    cdef int cpu = cookie.machine._cpu
    cdef bint sync = not (attrs & DMA_ATTR_SKIP_CPU_SYNC) and not dev.coherent
    cdef pt_run r
    cdef int rc
    cdef u64 anchor_lo, sw_lo = 1, sw_hi = 0
    if (not _iommu_fast_table(iovad, d, pt) or not pt.pending_free.empty()
            or not iova_rcache_fast_ok(iovad, cpu)):
        return 0
    # unmap_one_check() declines every element; a run of one element has nothing to trust a frame for
    if not pt.run_begin(&r, 0, not sync and n - pi[0] > 1):
        return 0
    anchor_lo = deref(iovad._anchor()).first      # the run changes no IOVA tree node
    if dev.dma_io_tlb_mem is not None:            # is_swiotlb_buffer(): [sw_lo, sw_hi)
        sw_lo = dev.dma_io_tlb_mem.start
        sw_hi = dev.dma_io_tlb_mem.end
    if cookie.fq_on:
        rc = _iommu_unmap_run_lazy(dev, d, cookie, iovad, pt, <IovaFq>cookie.fq_ptrs[cpu], &r, handles,
                                   sizes, ss, pi, n, dir, sync, cpu, anchor_lo, sw_lo, sw_hi)
    else:
        rc = _iommu_unmap_run_strict(dev, d, iovad, pt, d.iommu.iotlb, &r, handles, sizes, ss, pi, n, dir,
                                     sync, cpu, anchor_lo, sw_lo, sw_hi)
    pt.run_end(&r)
    if rc < 0:
        with gil:
            raise MemoryError("iova_magazine_alloc")
    return 0


cdef inline int _iommu_unmap_run_strict(Device dev, IommuDomain d, IovaDomain iovad, IoPgtable pt, Iotlb tlb,
                                        pt_run *r, const u64 *handles, const u64 *sizes, Py_ssize_t ss,
                                        Py_ssize_t *pi, Py_ssize_t n, int dir, bint sync, int cpu,
                                        u64 anchor_lo, u64 sw_lo, u64 sw_hi) noexcept nogil:
    """The strict unmap run: per element the leaf clear, iommu_iotlb_sync_range() (nothing
    collected to release), free_iova_fast(). The IOTLB's sync count is added at the end."""
    cdef u64 granule = iovad.granule
    cdef int shift = iovad.shift
    cdef u64 handle, size, addr, pfn, phys, syncs = 0
    cdef u64 *ptep
    cdef iova_cpu_rcache *cr = iovad._cpu_rcache(0, cpu)
    cdef iova_magazine *mag
    cdef iova_magazine *spare
    cdef Py_ssize_t i = pi[0]
    while i < n:
        handle = handles[i]
        size = sizes[i * ss]
        if not _iommu_fast_one_granule(granule, handle, size):
            break
        addr = handle - (handle & (granule - 1))
        pfn = addr >> shift
        mag = cr.loaded
        if pfn < anchor_lo and mag.size != IOVA_MAG_SIZE and addr <= r.iova_max:
            # the common case: the pfn goes into the loaded magazine (iova_rcache_insert_fast)
            ptep = pt.run_leaf_ptep(r, addr)
            phys = pt.leaf0_phys(ptep[0], handle) if ptep != NULL else 0
            if phys == 0 or sw_lo <= phys < sw_hi:
                break
            ptep[0] = 0
            r.writes += 1
            syncs += 1                            # iommu_iotlb_sync_range()
            if tlb is not None:
                tlb.inv_range(d.id, addr, granule, d.leaf_shifts, d.nshifts)
            mag.pfns[mag.size] = pfn              # iova_magazine_push()
            mag.size += 1
        else:
            if not iova_rcache_insert_ok(iovad, pfn, cpu, anchor_lo):
                break
            spare = NULL
            if iova_rcache_needs_magazine(iovad, cpu):
                spare = <iova_magazine *>malloc(sizeof(iova_magazine))     # iova_magazine_alloc()
                if spare == NULL:
                    break
                spare.size = 0
            # iommu_iova_to_phys() and the leaf clear unmap_pages() makes (__iommu_dma_unmap()), one
            # walk for both (the leaf-table cache); NULL: declined, nothing changed
            ptep = pt.unmap_one_check(addr, NULL)
            phys = pt.leaf0_phys(ptep[0], handle) if ptep != NULL else 0
            if phys == 0 or sw_lo <= phys < sw_hi:
                free(spare)
                break
            ptep[0] = 0
            pt.leaf_writes += 1
            pt.run_drop(r)                        # a store outside the run's trusted frames
            syncs += 1
            if tlb is not None:
                tlb.inv_range(d.id, addr, granule, d.leaf_shifts, d.nshifts)
            iova_rcache_insert_fast(iovad, pfn, cpu, spare)
        if sync:
            arch_sync_dma_for_cpu(dev, phys, size, dir)
        i += 1
    d.iotlb_syncs += syncs
    pi[0] = i
    return 0


cdef inline int _iommu_unmap_run_lazy(Device dev, IommuDomain d, IommuDmaCookie cookie, IovaDomain iovad,
                                      IoPgtable pt, IovaFq fq, pt_run *r, const u64 *handles, const u64 *sizes,
                                      Py_ssize_t ss, Py_ssize_t *pi, Py_ssize_t n, int dir, bint sync, int cpu,
                                      u64 anchor_lo, u64 sw_lo, u64 sw_hi) noexcept nogil:
    """The lazy unmap run: per element the leaf clear and queue_iova() (nothing collected).
    -1 (pi[0] at the element): a magazine allocation failed."""
    cdef u64 granule = iovad.granule
    cdef int shift = iovad.shift
    cdef u64 handle, size, addr, pfn, phys
    cdef u64 *ptep
    cdef unsigned int t
    cdef iova_fq_entry *e
    cdef Py_ssize_t i = pi[0]
    while i < n:
        handle = handles[i]
        size = sizes[i * ss]
        if not _iommu_fast_one_granule(granule, handle, size):
            break
        addr = handle - (handle & (granule - 1))
        pfn = addr >> shift
        t = fq.tail
        if ((fq.head == t or fq.entries[fq.head].counter >= cookie.fq_flush_finish_cnt)
                and ((t + 1) & fq.mod_mask) != fq.head and addr <= r.iova_max):
            # the common case of queue_iova(): no finished flush to release, the ring not full
            ptep = pt.run_leaf_ptep(r, addr)
            phys = pt.leaf0_phys(ptep[0], handle) if ptep != NULL else 0
            if phys == 0 or sw_lo <= phys < sw_hi:
                break
            ptep[0] = 0
            r.writes += 1
            fq.tail = (t + 1) & fq.mod_mask       # fq_ring_add()
            e = &fq.entries[t]
            e.iova_pfn = pfn
            e.pages = 1
            e.counter = cookie.fq_flush_start_cnt
            e.freelist.clear()
        else:
            if not _fq_queue_ok(cookie, fq, iovad, cpu, anchor_lo):
                break
            ptep = pt.unmap_one_check(addr, NULL)
            phys = pt.leaf0_phys(ptep[0], handle) if ptep != NULL else 0
            if phys == 0 or sw_lo <= phys < sw_hi:
                break
            ptep[0] = 0
            pt.leaf_writes += 1
            pt.run_drop(r)                        # a store outside the run's trusted frames
            if _fq_queue_fast(cookie, d, fq, iovad, pfn, cpu) < 0:
                pi[0] = i
                return -1
        if sync:
            arch_sync_dma_for_cpu(dev, phys, size, dir)
        i += 1
    pi[0] = i
    return 0


cdef int iommu_dma_sync_single_for_cpu(Device dev, u64 dma_handle, u64 size, int dir) except -1:
    """iommu_dma_sync_single_for_cpu(): nothing for coherent trusted devices."""
    cdef u64 phys
    if dev.coherent and not dev_use_swiotlb(dev, size, dir):
        return 0
    phys = iommu_iova_to_phys_c(<IommuDomain>dev.domain, dma_handle)
    if not dev.coherent:
        arch_sync_dma_for_cpu(dev, phys, size, dir)
    if is_swiotlb_buffer(dev, phys):
        swiotlb_sync_single_for_cpu(dev, phys, size, dir)
    return 0


cdef int iommu_dma_sync_single_for_device(Device dev, u64 dma_handle, u64 size, int dir) except -1:
    """iommu_dma_sync_single_for_device(): bounce copy first, then the arch cache clean."""
    cdef u64 phys
    if dev.coherent and not dev_use_swiotlb(dev, size, dir):
        return 0
    phys = iommu_iova_to_phys_c(<IommuDomain>dev.domain, dma_handle)
    if is_swiotlb_buffer(dev, phys):
        swiotlb_sync_single_for_device(dev, phys, size, dir)
    if not dev.coherent:
        arch_sync_dma_for_device(dev, phys, size, dir)
    return 0


# ---- scatter-gather ------------------------------------------------------------------------------
cdef int iommu_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nents, int dir) except -1:
    """iommu_dma_sync_sg_for_cpu(): per entry through swiotlb, or arch sync on sg_phys()."""
    cdef int i
    cdef scatterlist *s
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        for i in range(nents):
            iommu_dma_sync_single_for_cpu(dev, sg.sg[i].dma_address, sg.sg[i].length, dir)
    elif not dev.coherent:
        for i in range(nents):
            s = &sg.sg[i]
            arch_sync_dma_for_cpu(dev, s.page_phys + s.offset, s.length, dir)
    return 0


cdef int iommu_dma_sync_sg_for_device(Device dev, ScatterList sg, int nents, int dir) except -1:
    """iommu_dma_sync_sg_for_device()."""
    cdef int i
    cdef scatterlist *s
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        for i in range(nents):
            iommu_dma_sync_single_for_device(dev, sg.sg[i].dma_address, sg.sg[i].length, dir)
    elif not dev.coherent:
        for i in range(nents):
            s = &sg.sg[i]
            arch_sync_dma_for_device(dev, s.page_phys + s.offset, s.length, dir)
    return 0


cdef int __finalise_sg(Device dev, ScatterList sg, int nents, u64 dma_addr) except -1:
    """__finalise_sg(): restore each entry and merge granule-contiguous runs into output segments."""
    cdef scatterlist *s
    cdef scatterlist *cur = &sg.sg[0]
    cdef u64 seg_mask = dev.seg_boundary_mask
    cdef u32 cur_len = 0
    cdef u32 max_len = <u32>dev.max_segment_size
    cdef int i, count = 0, cur_i = 0
    cdef u64 s_dma_addr
    cdef u32 s_iova_off, s_length, s_iova_len
    for i in range(nents):
        s = &sg.sg[i]
        s_dma_addr = s.dma_address
        s_iova_off = <u32>s.dma_address
        s_length = <u32>s.dma_length
        s_iova_len = <u32>s.length
        s.dma_address = DMA_MAPPING_ERROR
        s.dma_length = 0
        if s.dma_flags & SG_DMA_BUS_ADDRESS:
            if i > 0:
                cur_i += 1
                cur = &sg.sg[cur_i]
            s.dma_flags &= ~SG_DMA_BUS_ADDRESS
            cur.dma_address = s_dma_addr
            cur.dma_length = s_length
            cur.dma_flags |= SG_DMA_BUS_ADDRESS
            count += 1
            cur_len = 0
            continue
        s.offset += s_iova_off
        s.length = s_length
        # Append when there is a run to extend, this entry starts on a granule, the address is
        # not on a segment boundary and the run stays within the maximum segment size.
        if cur_len and not s_iova_off and (dma_addr & seg_mask) and <u32>(max_len - cur_len) >= s_length:
            cur_len += s_length
        else:
            if i > 0:
                cur_i += 1
                cur = &sg.sg[cur_i]
            cur_len = s_length
            count += 1
            cur.dma_address = dma_addr + s_iova_off
        cur.dma_length = cur_len
        dma_addr += s_iova_len
        if <u32>(s_length + s_iova_off) < s_iova_len:        # unsigned int sum, as the kernel
            cur_len = 0
    return count


cdef void __invalidate_sg(ScatterList sg, int nents) noexcept:
    """__invalidate_sg(): undo the layout pass and poison the DMA fields."""
    cdef int i
    cdef scatterlist *s
    for i in range(nents):
        s = &sg.sg[i]
        if s.dma_flags & SG_DMA_BUS_ADDRESS:
            s.dma_flags &= ~SG_DMA_BUS_ADDRESS
        else:
            if s.dma_address != DMA_MAPPING_ERROR:
                s.offset += s.dma_address
            if s.dma_length:
                s.length = s.dma_length
        s.dma_address = DMA_MAPPING_ERROR
        s.dma_length = 0


cdef int iommu_dma_unmap_sg_swiotlb(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except -1:
    cdef int i
    for i in range(nents):
        iommu_dma_unmap_phys(dev, sg.sg[i].dma_address, sg.sg[i].dma_length, dir, attrs)
    return 0


cdef int iommu_dma_map_sg_swiotlb(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except? -9999:
    """iommu_dma_map_sg_swiotlb(): one iommu_dma_map_phys() per entry, no merging."""
    cdef int i
    cdef scatterlist *s
    sg.sg[0].dma_flags |= SG_DMA_SWIOTLB                  # sg_dma_mark_swiotlb(sg)
    for i in range(nents):
        s = &sg.sg[i]
        try:
            s.dma_address = iommu_dma_map_phys(dev, s.page_phys + s.offset, s.length, dir, attrs)
        except BaseException:
            iommu_dma_unmap_sg_swiotlb(dev, sg, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)   # leave no trace
            raise
        if s.dma_address == DMA_MAPPING_ERROR:
            iommu_dma_unmap_sg_swiotlb(dev, sg, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            return -EIO
        s.dma_length = s.length
    return nents


cdef int64_t iommu_map_sg_c(IommuDomain domain, u64 iova, ScatterList sg, int nents, int prot) except? -9999:
    """iommu_map_sg() (drivers/iommu/iommu.c): map physically contiguous runs, one sync, unwind on error."""
    cdef u64 length = 0, mapped = 0, start = 0, s_phys
    cdef int i = 0, ret
    cdef scatterlist *s = &sg.sg[0]
    while i <= nents:
        s_phys = s.page_phys + s.offset
        if length and s_phys != start + length:
            ret = iommu_map_nosync_c(domain, iova + mapped, start, length, prot)
            if ret:
                iommu_unmap_c(domain, iova, mapped)
                return ret
            mapped += length
            length = 0
        if not (s.dma_flags & SG_DMA_BUS_ADDRESS):
            if length:
                length += s.length
            else:
                length = s.length
                start = s_phys
        i += 1
        if i < nents:
            s = &sg.sg[i]
    ret = iommu_sync_map_c(domain, iova, mapped)
    if ret:
        iommu_unmap_c(domain, iova, mapped)
        return ret
    return <int64_t>mapped


cdef int iommu_dma_map_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except? -9999:
    """iommu_dma_map_sg(): one IOVA allocation for the whole list; count of DMA segments or -errno."""
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef u64 granule = cookie.iovad.granule
    cdef int prot = dma_info_to_prot(dir, dev.coherent, attrs)
    cdef scatterlist *s
    cdef scatterlist *prev = NULL
    cdef u64 iova, iova_len = 0, mask = dev.seg_boundary_mask
    cdef u64 s_iova_off, s_length, pad_len, bus_addr
    cdef int64_t ret = 0
    cdef int i, p2p
    _dma_pgtable_live(dev)
    if dev_use_swiotlb(dev, 0, dir):                       # dev_use_sg_swiotlb()
        return iommu_dma_map_sg_swiotlb(dev, sg, nents, dir, attrs)
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
        iommu_dma_sync_sg_for_device(dev, sg, nents, dir)
    # Layout pass: align every entry to granules in place (reversibly, the unaligned parts are
    # stashed in the DMA fields) and pad so no entry straddles a segment boundary.
    for i in range(nents):
        s = &sg.sg[i]
        s_iova_off = _iova_offset(granule, s.offset)
        s_length = s.length
        pad_len = (mask - iova_len + 1) & mask
        p2p = p2pdma_state_c(dev, s.page_phys + s.offset, s.length, &bus_addr)
        if p2p == PCI_P2PDMA_MAP_BUS_ADDR:
            s.dma_address = bus_addr
            s.dma_length = sg.sg[0].length                 # sg->length (the list head), as the kernel
            s.dma_flags |= SG_DMA_BUS_ADDRESS
            continue
        elif p2p != PCI_P2PDMA_MAP_NONE and p2p != PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
            ret = -EREMOTEIO
            __invalidate_sg(sg, nents)
            return <int>ret
        s.dma_address = s_iova_off
        s.dma_length = s_length
        s.offset -= s_iova_off
        s_length = _iova_align(granule, s_length + s_iova_off)
        s.length = s_length
        if pad_len and pad_len < s_length - 1:
            prev.length += pad_len
            iova_len += pad_len
        iova_len += s_length
        prev = s
    if iova_len == 0:
        return __finalise_sg(dev, sg, nents, 0)
    iova = iommu_dma_alloc_iova(domain, iova_len, dma_get_mask_c(dev), dev)
    if iova == 0:
        __invalidate_sg(sg, nents)
        return -ENOMEM
    ret = iommu_map_sg_c(domain, iova, sg, nents, prot)
    if ret < 0 or <u64>ret < iova_len:
        iommu_dma_free_iova(cookie, iova, iova_len, NULL)
        __invalidate_sg(sg, nents)
        if ret != -ENOMEM and ret != -EREMOTEIO:
            return -EINVAL
        return <int>ret
    return __finalise_sg(dev, sg, nents, iova)


cdef int iommu_dma_unmap_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except -1:
    """iommu_dma_unmap_sg(): the list's single IOVA range is unmapped and freed as one unit."""
    cdef u64 start = 0, end = 0
    cdef int i = 0, j
    cdef scatterlist *t
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        return iommu_dma_unmap_sg_swiotlb(dev, sg, nents, dir, attrs)
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
        iommu_dma_sync_sg_for_cpu(dev, sg, nents, dir)
    while i < nents:                                       # the first DMA segment
        t = &sg.sg[i]
        if t.dma_flags & SG_DMA_BUS_ADDRESS:
            t.dma_flags &= ~SG_DMA_BUS_ADDRESS
            i += 1
            continue
        if t.dma_length == 0:
            break
        start = t.dma_address
        break
    for j in range(i, nents):                              # ... up to the last one
        t = &sg.sg[j]
        if t.dma_flags & SG_DMA_BUS_ADDRESS:
            t.dma_flags &= ~SG_DMA_BUS_ADDRESS
            continue
        if t.dma_length == 0:
            break
        end = t.dma_address + t.dma_length
    if end:
        __iommu_dma_unmap(dev, start, end - start)
    return 0


# ---- sizes and coherent allocations ----------------------------------------------------------------
cdef u64 iommu_dma_max_mapping_size(Device dev) except? 0:
    """iommu_dma_max_mapping_size(): the swiotlb limit for untrusted devices, else SIZE_MAX."""
    if dev.untrusted:
        return swiotlb_max_mapping_size(dev)
    return U64_MAX


cdef inline u64 iommu_dma_opt_mapping_size() noexcept:
    """iommu_dma_opt_mapping_size() = iova_rcache_range()."""
    return IOVA_RCACHE_RANGE


cdef inline u64 iommu_dma_get_merge_boundary(Device dev) noexcept:
    """iommu_dma_get_merge_boundary(): the IOMMU granule minus one."""
    return ((<u64>1) << __ffs64((<IommuDomain>dev.domain).pgsize_bitmap)) - 1


cdef inline int _get_order(u64 size) noexcept:
    # get_order(): smallest order whose 2^order pages hold size bytes
    if size <= PAGE_SIZE:
        return 0
    return fls64((size - 1) >> PAGE_SHIFT)


cdef u64 iommu_dma_alloc(Device dev, u64 size, u64 *phys_out, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """iommu_dma_alloc(), contiguous path (iommu_dma_alloc_pages + __iommu_dma_map): the IOVA.

    Zeroed pages of order get_order(size) from machine RAM, mapped BIDIRECTIONAL against
    the coherent DMA mask. DMA_MAPPING_ERROR (NULL) on failure.
    """
    cdef int ioprot = dma_info_to_prot(DMA_BIDIRECTIONAL, dev.coherent, attrs)
    cdef u64 alloc_size = (size + PAGE_SIZE - 1) & ~(<u64>PAGE_SIZE - 1)
    cdef u64 npages, phys, handle
    cdef PhysMem mem = dev.machine.mem
    _dma_pgtable_live(dev)
    if alloc_size == 0:
        return DMA_MAPPING_ERROR
    npages = (<u64>1) << _get_order(alloc_size)
    phys = mem.alloc_pages_c(npages, U64_MAX, npages)
    if phys == U64_MAX:
        return DMA_MAPPING_ERROR
    mem.fill(phys, 0, alloc_size)
    handle = __iommu_dma_map(dev, phys, size, ioprot, dev.coherent_dma_mask)
    if handle == DMA_MAPPING_ERROR:
        mem.free_pages_c(phys, npages)
        return DMA_MAPPING_ERROR
    phys_out[0] = phys
    return handle


cdef int iommu_dma_free(Device dev, u64 size, u64 phys, u64 dma_handle, unsigned long attrs) except -1:
    """iommu_dma_free(): unmap (strict or queued) and free the pages."""
    cdef u64 alloc_size = (size + PAGE_SIZE - 1) & ~(<u64>PAGE_SIZE - 1)
    __iommu_dma_unmap(dev, dma_handle, size)
    dev.machine.mem.free_pages_c(phys, (<u64>1) << _get_order(alloc_size))
    return 0


# ---- the two-step IOVA API (include/linux/dma-mapping.h + dma-iommu.c) -----------------------------
cdef class DmaIovaState:
    """struct dma_iova_state: ``addr`` (IOVA incl. the sub-granule offset) and ``__size``.

    Bit 63 of ``__size`` is DMA_IOVA_USE_SWIOTLB; ``size`` is dma_iova_size(state).

    Mirrors struct dma_iova_state (include/linux/dma-mapping.h). ``DmaIovaState()`` is
    zero-initialised like the kernel's on-stack state. Raises TypeError / ValueError for a non-int
    or out-of-range ``addr`` / ``size`` (also when setting ``addr`` or ``__size``).
    """

    def __cinit__(self, addr=0, size=0):
        self.addr = _u64(addr, "addr")
        self._size = _u64(size, "__size")

    @property
    def size(self):
        """dma_iova_size(): __size without DMA_IOVA_USE_SWIOTLB.

        Read-only.
        """
        return self._size & ~DMA_IOVA_USE_SWIOTLB

    def __getattr__(self, name):
        if name == "__size":
            return self._size
        raise AttributeError(f"'DmaIovaState' object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name == "__size":
            self._size = _u64(value, "__size")
        elif name == "addr":
            self.addr = _u64(value, "addr")
        else:
            PyObject_GenericSetAttr(self, name, value)

    def __repr__(self):
        swiotlb = " USE_SWIOTLB" if self._size & DMA_IOVA_USE_SWIOTLB else ""
        return f"<dmaphys.DmaIovaState addr={self.addr:#x} size={self.size:#x}{swiotlb}>"


cdef inline int _iova_flush(Machine m) except -1:
    # the entry points' flush_warnings(), skipped when nothing is queued (the common case)
    if m._warn_queue or m.dma_debug._pending or m._deferred_exc is not None:
        m.flush_warnings()
    return 0


cdef inline int _iova_check(Device dev, int dir, str func, bint check_dir) except -1:
    # invalid direction → BUG first; then a device without a DMA domain dereferences NULL
    if check_dir and not valid_dma_direction(dir):
        raise KernelBug(f"kernel BUG in {func}(): invalid DMA direction {dir}")
    if not dev.dma_iommu:
        raise KernelBug(f"BUG: kernel NULL pointer dereference in {func}(): {dev.name} has no DMA "
                        "IOMMU domain (dma_iova_try_alloc() returned false: use the regular DMA API)")
    return 0


cdef int _iova_state_ok(Device dev, DmaIovaState state, u64 offset, u64 size, str func) except -1:
    """Not the kernel: 1 when ``state`` holds IOVA space dma_iova_try_alloc() allocated for ``dev``
    and [offset, offset + size) lies in it; else a dma-debug report and 0 (the caller refuses).

    The kernel trusts the state: an unfilled or freed one, another device's, or a range past the
    allocation maps or frees IOVA space the allocator never handed out (silent corruption).
    """
    cdef str why
    if state._owner is None:
        why = "holds no IOVA space (never allocated by dma_iova_try_alloc(), or already freed)"
    elif state._owner is not dev:
        why = f"holds IOVA space allocated for {(<Device>state._owner).name}"
    elif state.addr != state._addr0 or (state._size & ~DMA_IOVA_USE_SWIOTLB) != state._size0:
        why = "was changed after dma_iova_try_alloc()"
    elif offset > state._size0 or size > state._size0 - offset:
        why = f"holds {state._size0:#x} bytes: [{offset:#x}, +{size:#x}) lies beyond them"
    else:
        return 1
    if dev.machine.dma_debug.enabled:
        dev.machine.dma_debug.report_extra(dev, "iova_state", f"{func}: DMA IOVA state [addr={state.addr:#x}] "
                                           f"{why}; refused", state.addr, size)
    return 0


cdef void _iova_state_adopt(Device dev, DmaIovaState state) noexcept:
    """A state rebuilt from a C-owned struct dma_iova_state (the C ABI), which has no room for the
    simulator's owner fields: a non-empty one is taken as allocated for ``dev`` as it stands, so
    only the range check of _iova_state_ok() applies to it."""
    if state._size & ~DMA_IOVA_USE_SWIOTLB:
        state._owner = dev
        state._addr0 = state.addr
        state._size0 = state._size & ~DMA_IOVA_USE_SWIOTLB


cdef bint _dma_iova_try_alloc(Device dev, DmaIovaState state, u64 phys, u64 size) except? True:
    cdef IommuDmaCookie cookie
    cdef u64 granule, iova_off, addr
    state.addr = 0                                         # memset(state, 0, ...)
    state._size = 0
    state._owner = None
    if not dev.dma_iommu:
        return False
    cookie = _cookie_of(dev)
    granule = cookie.iovad.granule
    iova_off = _iova_offset(granule, phys)
    if size == 0:
        _warn_on(dev.machine, "dma_iova_try_alloc", "WARN_ON_ONCE(!size)", "dma_iova_try_alloc:!size")
        return False
    if size & DMA_IOVA_USE_SWIOTLB:
        _warn_on(dev.machine, "dma_iova_try_alloc", "WARN_ON_ONCE(size & DMA_IOVA_USE_SWIOTLB)",
                 "dma_iova_try_alloc:USE_SWIOTLB")
        return False
    addr = iommu_dma_alloc_iova(<IommuDomain>dev.domain, _iova_align(granule, size + iova_off),
                                dma_get_mask_c(dev), dev)
    if addr == 0:
        return False
    state.addr = addr + iova_off
    state._size = size
    state._owner = dev
    state._addr0 = state.addr
    state._size0 = size
    return True


cdef int _dma_iova_free(Device dev, DmaIovaState state) except -1:
    cdef IommuDmaCookie cookie = _cookie_of(dev)
    cdef u64 granule = cookie.iovad.granule
    cdef u64 pad = _iova_offset(granule, state.addr)
    cdef u64 size = state._size & ~DMA_IOVA_USE_SWIOTLB
    state._owner = None                                    # freed: the state holds nothing now
    return iommu_dma_free_iova(cookie, state.addr - pad, _iova_align(granule, size + pad), NULL)


cdef int __dma_iova_link(Device dev, u64 addr, u64 phys, u64 size, int dir, unsigned long attrs) except? -9999:
    """__dma_iova_link(): cache clean, then iommu_map_nosync() (no IOTLB sync)."""
    cdef bint coherent = dev.coherent
    if not coherent and not (attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)):
        arch_sync_dma_for_device(dev, phys, size, dir)
    return iommu_map_nosync_c(<IommuDomain>dev.domain, addr, phys, size,
                              dma_info_to_prot(dir, coherent, attrs))


cdef int iommu_dma_iova_bounce_and_link(Device dev, u64 addr, u64 phys, u64 bounce_len, int dir,
                                        unsigned long attrs, u64 iova_start_pad) except? -9999:
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 bounce_phys
    cdef int error
    bounce_phys = iommu_dma_map_swiotlb(dev, phys, bounce_len, dir, attrs)
    if bounce_phys == DMA_MAPPING_ERROR:
        return -ENOMEM
    error = __dma_iova_link(dev, addr - iova_start_pad, bounce_phys - iova_start_pad,
                            _iova_align(granule, bounce_len), dir, attrs)
    if error:
        swiotlb_tbl_unmap_single(dev, bounce_phys, bounce_len, dir, attrs)
    return error


cdef int iommu_dma_iova_link_swiotlb(Device dev, DmaIovaState state, u64 phys, u64 offset, u64 size,
                                     int dir, unsigned long attrs) except? -9999:
    """iommu_dma_iova_link_swiotlb(): bounce the partial head and tail granules, link the middle in place."""
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 iova_start_pad = _iova_offset(granule, phys)
    cdef u64 iova_end_pad = _iova_offset(granule, phys + size)
    cdef u64 addr = state.addr + offset
    cdef u64 mapped = 0, bounce_len
    cdef int error
    if iova_start_pad:
        bounce_len = min(size, granule - iova_start_pad)
        error = iommu_dma_iova_bounce_and_link(dev, addr, phys, bounce_len, dir, attrs, iova_start_pad)
        if error:
            return error
        state._size |= DMA_IOVA_USE_SWIOTLB
        mapped += bounce_len
        size -= bounce_len
        if not size:
            return 0
    # After the partial head and tail there may be no aligned middle (fix 6ec91df8aff7).
    size -= iova_end_pad
    if size:
        error = __dma_iova_link(dev, addr + mapped, phys + mapped, size, dir, attrs)
        if error:
            return _link_swiotlb_unwind(dev, state, offset, mapped, dir, attrs, error)
        mapped += size
    if iova_end_pad:
        error = iommu_dma_iova_bounce_and_link(dev, addr + mapped, phys + mapped, iova_end_pad, dir, attrs, 0)
        if error:
            return _link_swiotlb_unwind(dev, state, offset, mapped, dir, attrs, error)
        state._size |= DMA_IOVA_USE_SWIOTLB
    return 0


cdef int _link_swiotlb_unwind(Device dev, DmaIovaState state, u64 offset, u64 mapped, int dir,
                              unsigned long attrs, int error) except? -9999:
    # out_unmap: undo what this link mapped, from its own offset (fix 6ec91df8aff7)
    if mapped:
        __iommu_dma_iova_unlink(dev, state, offset, mapped, dir, attrs, False)
    return error


cdef int _dma_iova_link(Device dev, DmaIovaState state, u64 phys, u64 offset, u64 size, int dir,
                        unsigned long attrs) except? -9999:
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 iova_start_pad = _iova_offset(granule, phys)
    if iova_start_pad and offset > 0:
        _warn_on(dev.machine, "dma_iova_link", "WARN_ON_ONCE(iova_start_pad && offset > 0)",
                 "dma_iova_link:start_pad")
        return -EIO
    if dev_use_swiotlb(dev, size, dir) and _iova_offset(granule, phys | size):
        if attrs & DMA_ATTR_MMIO:
            return -DMA_IOMMU_EPERM
        return iommu_dma_iova_link_swiotlb(dev, state, phys, offset, size, dir, attrs)
    return __dma_iova_link(dev, state.addr + offset - iova_start_pad, phys - iova_start_pad,
                           _iova_align(granule, size + iova_start_pad), dir, attrs)


cdef int _dma_iova_sync(Device dev, DmaIovaState state, u64 offset, u64 size) except? -9999:
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 addr = state.addr + offset
    cdef u64 iova_start_pad = _iova_offset(granule, addr)
    return iommu_sync_map_c(<IommuDomain>dev.domain, addr - iova_start_pad,
                            _iova_align(granule, size + iova_start_pad))


cdef int iommu_dma_iova_unlink_range_slow(Device dev, u64 addr, u64 size, int dir,
                                          unsigned long attrs) except -1:
    """iommu_dma_iova_unlink_range_slow(): per granule, CPU sync and release any bounce slot."""
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef u64 granule = _cookie_of(dev).iovad.granule
    cdef u64 iova_start_pad = _iova_offset(granule, addr)
    cdef u64 end = addr + size
    cdef u64 phys, length
    while True:
        phys = iommu_iova_to_phys_c(domain, addr)
        if phys == 0:
            _warn_on(dev.machine, "iommu_dma_iova_unlink_range_slow", f"WARN_ON(!phys) (iova {addr:#x})")
            return 0
        length = min(end - addr, granule - iova_start_pad)
        if not dev.coherent and not (attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)):
            arch_sync_dma_for_cpu(dev, phys, length, dir)
        _swiotlb_unmap_if_bounced(dev, phys, length, dir, attrs)
        addr += length
        iova_start_pad = 0
        if not addr < end:
            break
    return 0


cdef int __iommu_dma_iova_unlink(Device dev, DmaIovaState state, u64 offset, u64 size, int dir,
                                 unsigned long attrs, bint free_iova) except -1:
    """__iommu_dma_iova_unlink(): unmap a linked range; unlink syncs now, destroy may queue."""
    cdef IommuDomain domain = <IommuDomain>dev.domain
    cdef IommuDmaCookie cookie = <IommuDmaCookie>domain.iova_cookie
    cdef u64 granule = cookie.iovad.granule
    cdef u64 addr = state.addr + offset
    cdef u64 iova_start_pad = _iova_offset(granule, addr)
    cdef u64 unmapped
    cdef bint queued
    cdef vector[u64] freelist
    if (state._size & DMA_IOVA_USE_SWIOTLB) or (
            not dev.coherent and not (attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO))):
        iommu_dma_iova_unlink_range_slow(dev, addr, size, dir, attrs)
    queued = free_iova and cookie.fq_on
    size = _iova_align(granule, size + iova_start_pad)
    addr -= iova_start_pad
    unmapped = iommu_unmap_fast_c(domain, addr, size)
    if unmapped != size:
        _warn_on(dev.machine, "__iommu_dma_iova_unlink",
                 f"WARN_ON(unmapped != size) ({unmapped:#x} != {size:#x})")
    if not queued:
        iommu_iotlb_sync_range(domain, addr, size)
        if free_iova:
            iommu_dma_free_iova(cookie, addr, size, NULL)
    else:
        freelist.swap(domain.pgtable.pending_free)
        iommu_dma_free_iova(cookie, addr, size, &freelist)
    return 0


# ---- the C API of the two-step IOVA calls: kernel semantics, no argument conversion, no warning
# flush (the caller flushes: Machine.flush_warnings()); the def entry points below wrap them.
cdef bint c_dma_iova_try_alloc(Device dev, DmaIovaState state, u64 phys, u64 size) except? True:
    """dma_iova_try_alloc(): true when IOVA space was allocated into state."""
    return _dma_iova_try_alloc(dev, state, phys, size)


cdef int c_dma_iova_free(Device dev, DmaIovaState state) except -1:
    """dma_iova_free(): give the IOVA space back at once."""
    _iova_check(dev, 0, "dma_iova_free", False)
    if not _iova_state_ok(dev, state, 0, 0, "dma_iova_free"):
        return 0
    return _dma_iova_free(dev, state)


cdef int c_dma_iova_link(Device dev, DmaIovaState state, u64 phys, u64 offset, u64 size, int dir,
                         unsigned long attrs) except? -9999:
    """dma_iova_link(): 0 or -errno; no IOTLB sync."""
    _iova_check(dev, dir, "dma_iova_link", True)
    if not _iova_state_ok(dev, state, offset, size, "dma_iova_link"):
        return -EINVAL
    return _dma_iova_link(dev, state, phys, offset, size, dir, attrs)


cdef int c_dma_iova_sync(Device dev, DmaIovaState state, u64 offset, u64 size) except? -9999:
    """dma_iova_sync(): 0 or -errno."""
    _iova_check(dev, 0, "dma_iova_sync", False)
    if not _iova_state_ok(dev, state, offset, size, "dma_iova_sync"):
        return -EINVAL
    return _dma_iova_sync(dev, state, offset, size)


cdef int c_dma_iova_unlink(Device dev, DmaIovaState state, u64 offset, u64 size, int dir,
                           unsigned long attrs) except -1:
    """dma_iova_unlink(): unmap and sync the IOTLB now; the IOVA space stays allocated."""
    _iova_check(dev, dir, "dma_iova_unlink", True)
    if not _iova_state_ok(dev, state, offset, size, "dma_iova_unlink"):
        return 0
    return __iommu_dma_iova_unlink(dev, state, offset, size, dir, attrs, False)


cdef int c_dma_iova_destroy(Device dev, DmaIovaState state, u64 mapped_len, int dir,
                            unsigned long attrs) except -1:
    """dma_iova_destroy(): unlink [0, mapped_len) and free the IOVA (lazy domains queue it)."""
    _iova_check(dev, dir, "dma_iova_destroy", True)
    if not _iova_state_ok(dev, state, 0, mapped_len, "dma_iova_destroy"):
        return 0
    if mapped_len:
        state._owner = None                                # the unlink frees the IOVA space
        return __iommu_dma_iova_unlink(dev, state, 0, mapped_len, dir, attrs, True)
    return _dma_iova_free(dev, state)


def dma_iova_try_alloc(Device dev not None, DmaIovaState state not None, phys, size):
    """dma_iova_try_alloc(dev, state, phys, size) -> bool.

    Models drivers/iommu/dma-iommu.c:dma_iova_try_alloc(). Returns true if IOVA space was allocated
    (state.addr keeps phys's offset in the granule), false if the regular DMA API should be used
    (dma-direct or identity devices, size 0, allocation failure). Raises TypeError / ValueError for
    bad arguments or a removed device.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 p = _arg_u64(phys, "phys")
    cdef u64 sz = _arg_u64(size, "size")
    try:
        return c_dma_iova_try_alloc(dev, state, p, sz)
    finally:
        _iova_flush(dev.machine)


def dma_iova_free(Device dev not None, DmaIovaState state not None):
    """dma_iova_free(dev, state): give the IOVA space back at once (no flush queue, no IOTLB work).

    Models drivers/iommu/dma-iommu.c:dma_iova_free(); returns None. Every linked range must have
    been unlinked first. Raises KernelBug for a device without a DMA IOMMU domain (the kernel's NULL
    dereference), TypeError / ValueError for bad arguments or a removed device. A ``state`` not
    filled by dma_iova_try_alloc() for this device (or already freed), or a range beyond its
    allocation, is refused with a dma-debug report (DmaDebugWarning; the kernel would corrupt the
    IOVA space).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    try:
        c_dma_iova_free(dev, state)
    finally:
        _iova_flush(dev.machine)


def dma_iova_link(Device dev not None, DmaIovaState state not None, phys, offset, size, dir, attrs):
    """dma_iova_link(dev, state, phys, offset, size, dir, attrs) -> 0 or -errno.

    Models drivers/iommu/dma-iommu.c:dma_iova_link(): maps phys..phys+size at state.addr + offset
    without an IOTLB sync (call dma_iova_sync()). Returns 0, -EIO: a mid-granule phys at offset > 0;
    -EPERM: MMIO that would need bouncing; -ENOMEM: no bounce slot; iommu_map errors otherwise.
    Raises KernelBug for an invalid ``dir`` or a device without a DMA IOMMU domain (the kernel's BUG
    / NULL dereference), TypeError / ValueError for bad arguments or a removed device. A ``state``
    not filled by dma_iova_try_alloc() for this device (or already freed), or a range beyond its
    allocation, is refused with a dma-debug report (DmaDebugWarning; the kernel would corrupt the
    IOVA space).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 p = _arg_u64(phys, "phys")
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 sz = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        return c_dma_iova_link(dev, state, p, off, sz, d, a)
    finally:
        _iova_flush(dev.machine)


def dma_iova_sync(Device dev not None, DmaIovaState state not None, offset, size):
    """dma_iova_sync(dev, state, offset, size) -> 0 or -errno: one IOTLB sync for the linked range.

    Models drivers/iommu/dma-iommu.c:dma_iova_sync(); returns 0 or the iommu_sync_map() error.
    Raises KernelBug for a device without a DMA IOMMU domain (the kernel's NULL dereference),
    TypeError / ValueError for bad arguments or a removed device. A ``state`` not filled by
    dma_iova_try_alloc() for this device (or already freed), or a range beyond its allocation, is
    refused with a dma-debug report (DmaDebugWarning; the kernel would corrupt the IOVA space).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 sz = _arg_u64(size, "size")
    try:
        return c_dma_iova_sync(dev, state, off, sz)
    finally:
        _iova_flush(dev.machine)


def dma_iova_unlink(Device dev not None, DmaIovaState state not None, offset, size, dir, attrs):
    """dma_iova_unlink(dev, state, offset, size, dir, attrs): unmap a range and sync the IOTLB now.

    Models drivers/iommu/dma-iommu.c:dma_iova_unlink(); returns None. The IOVA space stays allocated
    in the state. Raises KernelBug for an invalid ``dir`` or a device without a DMA IOMMU domain
    (the kernel's BUG / NULL dereference), TypeError / ValueError for bad arguments or a removed
    device. A ``state`` not filled by dma_iova_try_alloc() for this device (or already freed), or a
    range beyond its allocation, is refused with a dma-debug report (DmaDebugWarning; the kernel
    would corrupt the IOVA space).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 sz = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_iova_unlink(dev, state, off, sz, d, a)
    finally:
        _iova_flush(dev.machine)


def dma_iova_destroy(Device dev not None, DmaIovaState state not None, mapped_len, dir, attrs):
    """dma_iova_destroy(dev, state, mapped_len, dir, attrs): unlink [0, mapped_len) and free the IOVA.

    Models drivers/iommu/dma-iommu.c:dma_iova_destroy(); returns None. Lazy domains queue the IOVA
    on the flush queue; mapped_len == 0 is dma_iova_free(). Raises KernelBug for an invalid ``dir``
    or a device without a DMA IOMMU domain (the kernel's BUG / NULL dereference), TypeError /
    ValueError for bad arguments or a removed device. A ``state`` not filled by dma_iova_try_alloc()
    for this device (or already freed), or a range beyond its allocation, is refused with a
    dma-debug report (DmaDebugWarning; the kernel would corrupt the IOVA space).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ml = _arg_u64(mapped_len, "mapped_len")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_iova_destroy(dev, state, ml, d, a)
    finally:
        _iova_flush(dev.machine)


def dma_use_iova(DmaIovaState state not None):
    """dma_use_iova(state): true once dma_iova_try_alloc() succeeded on it.

    Mirrors include/linux/dma-mapping.h:dma_use_iova(); returns a bool and raises only TypeError
    (``state`` not a DmaIovaState).
    """
    return state._size != 0


def dma_iova_size(DmaIovaState state not None):
    """dma_iova_size(state): the allocated size (without DMA_IOVA_USE_SWIOTLB).

    Mirrors include/linux/dma-mapping.h:dma_iova_size(); returns an int and raises only TypeError
    (``state`` not a DmaIovaState).
    """
    return state._size & ~DMA_IOVA_USE_SWIOTLB


__all__ += ["IommuDmaCookie", "IovaFq", "DmaIovaState", "dma_iova_try_alloc", "dma_iova_free",
            "dma_iova_link", "dma_iova_sync", "dma_iova_unlink", "dma_iova_destroy", "dma_use_iova",
            "dma_iova_size"]
