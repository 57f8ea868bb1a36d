# The IOTLB model: the per-IOMMU translation cache that sits in front of the page-table walk
# (VT-d "IOTLB", SMMU "TLB"). Not a kernel file: the kernel only sees it through the
# invalidation commands its drivers issue (iotlb_sync / flush_iotlb_all). Two organisations:
#
#  mode "set-assoc" (default): ``entries`` = sets x ``ways``; an entry is tagged by
#      (domain id, IOVA page number at the leaf size, leaf size) and holds the leaf's output
#      address and IOMMU_* permissions. A lookup probes every leaf size the domain's
#      pgsize_bitmap allows (smallest first), in set (page number mod sets). Replacement
#      within a set: "lru" (default), "fifo", or "random" (splitmix64, seeded). An invalid way
#      is always used before a valid one is evicted (lowest index first).
#  mode "qemu": QEMU's intel-iommu IOTLB (hw/i386/intel_iommu.c): a hash keyed by
#      (gfn at the level, source-id, level); vtd_lookup_iotlb() probes the levels smallest
#      first; vtd_update_iotlb() empties the whole table when it already holds
#      VTD_IOTLB_MAX_SIZE (1024) entries, then inserts. No per-set eviction.
#
# Defaults (512 entries, 8 ways, LRU): vendors do not publish IOTLB geometry; published
# reverse-engineering of IOMMU IOTLBs finds tens to a few hundred entries per IOMMU, so 512
# is a generous upper-end default that keeps hit/miss behaviour realistic for multi-MiB
# working sets while staying cheap to simulate, and 8-way LRU is the common set-associative
# design of CPU second-level TLBs. Everything is configurable; nothing here is a claim about
# a particular chip. Negative entries (faults) are never cached, as on VT-d with CM=0.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, iotlb.pxd.


_IOTLB_POLICIES = {"lru": IOTLB_LRU, "fifo": IOTLB_FIFO, "random": IOTLB_RANDOM}


cdef inline u64 _splitmix64(u64 *state) noexcept nogil:
    cdef u64 z
    state[0] += <u64>0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <u64>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <u64>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline iotlb_qkey _iotlb_qkey(u64 page, u32 domid, u32 sid, int shift) noexcept nogil:
    cdef iotlb_qkey k
    k.first = page
    k.second = ((<u64>sid) << 40) | ((<u64>domid) << 8) | <u64>shift
    return k


cdef inline iotlb_entry *_iotlb_probe_set(Iotlb tlb, u32 domid, u32 sid, u64 page, int s) noexcept nogil:
    """Set-assoc mode: the valid entry for page at leaf size lg2 s, or NULL. Touches nothing."""
    cdef u64 w, base
    cdef iotlb_entry *e
    if tlb.nvalid[s] == 0:
        return NULL
    # (a mask for the usual power-of-two set count: a 64-bit division is ~30 cycles)
    base = ((page & (tlb.sets - 1)) if (tlb.sets & (tlb.sets - 1)) == 0 else (page % tlb.sets)) * tlb.ways
    for w in range(tlb.ways):
        e = &tlb.ents[base + w]
        if e.valid and e.page == page and e.shift == s and e.domid == domid and e.sid == sid:
            return e
    return NULL


cdef inline iotlb_entry *iotlb_peek(Iotlb tlb, u32 domid, u64 iova, const int *shifts, int nshifts) noexcept nogil:
    """The entry Iotlb.find() would return (set-assoc mode, sid 0), without counting the hit or
    the miss nor touching the LRU stamp: callers that may still decline (iommu_access_fast)
    probe with it and count with iotlb_count_hit() once they use the entry. NULL in qemu mode."""
    cdef int k
    cdef iotlb_entry *e
    if tlb.qemu:
        return NULL
    for k in range(nshifts):
        e = _iotlb_probe_set(tlb, domid, 0, iova >> shifts[k], shifts[k])
        if e != NULL:
            return e
    return NULL


cdef inline void iotlb_count_hit(Iotlb tlb, iotlb_entry *e) noexcept nogil:
    """What a lookup served by e does to the IOTLB: the hit counter and the LRU clock."""
    tlb.hits += 1
    if tlb.pol == IOTLB_LRU:
        tlb.tick += 1
        e.stamp = tlb.tick


cdef class Iotlb:
    """An IOTLB: ``Iotlb(entries=512, ways=8, policy="lru", seed=0, mode="set-assoc")``.

    ``mode="qemu"`` models QEMU's intel-iommu cache instead (``max_size`` entries, default
    VTD_IOTLB_MAX_SIZE = 1024, emptied completely when full; entries keyed per requester).
    Counters: ``hits``, ``misses``, ``fills``, ``evictions``, ``invalidations`` (invalidation
    commands), ``invalidated`` (entries they dropped), ``stale_hits`` (hits whose translation
    the live page table no longer has), ``cap_resets`` (qemu mode: whole-table resets).

    Simulator-only: the IOMMU hardware's translation cache (the kernel only issues its
    invalidations: qi_flush_iotlb(), the drivers' iotlb_sync / flush_iotlb_all ops). Raises
    ValueError for an unknown ``mode`` or ``policy``, ``entries`` not a positive multiple of
    ``ways``, or ``max_size`` 0; TypeError / ValueError for non-int or out-of-range numbers.
    """
                                               # lets find/inv_range skip sizes nothing caches

    def __cinit__(self, entries=512, ways=8, policy="lru", seed=0, mode="set-assoc",
                 max_size=VTD_IOTLB_MAX_SIZE):
        if mode not in ("set-assoc", "qemu"):
            raise ValueError(f"IOTLB mode must be 'set-assoc' or 'qemu', not {mode!r}")
        if policy not in _IOTLB_POLICIES:
            raise ValueError(f"IOTLB policy must be one of {', '.join(_IOTLB_POLICIES)}, not {policy!r}")
        cdef u64 e = _u64(entries, "entries"), w = _u64(ways, "ways")
        if e == 0 or w == 0 or e % w:
            raise ValueError(f"IOTLB entries ({e}) must be a positive multiple of ways ({w})")
        self.max_size = _u64(max_size, "max_size")
        if self.max_size == 0:
            raise ValueError("max_size must be > 0")
        self.mode = mode
        self.qemu = mode == "qemu"
        self.policy = policy
        self.pol = _IOTLB_POLICIES[policy]
        self.entries = e
        self.ways = w
        self.sets = e // w
        self.seed = _u64(seed, "seed")
        self.rng = self.seed
        self.owner = None
        memset(self.nvalid, 0, sizeof(self.nvalid))
        self.nvalid_all = 0
        if not self.qemu:
            self.ents.resize(e)
            memset(self.ents.data(), 0, e * sizeof(iotlb_entry))

    # ---- the hardware side -----------------------------------------------------------------
    cdef iotlb_entry *find(self, u32 domid, u32 sid, u64 iova, const int *shifts, int nshifts) noexcept nogil:
        """Look iova up at every leaf size (smallest first); counts a hit or a miss."""
        cdef int k, s
        cdef u64 page
        cdef iotlb_entry *e
        cdef cppmap[iotlb_qkey, iotlb_entry].iterator it
        for k in range(nshifts):
            s = shifts[k]
            page = iova >> s
            if self.qemu:
                it = self.qmap.find(_iotlb_qkey(page, domid, sid, s))
                if it != self.qmap.end():
                    self.hits += 1
                    return &deref(it).second
                continue
            e = _iotlb_probe_set(self, domid, sid, page, s)
            if e != NULL:
                iotlb_count_hit(self, e)
                return e
        self.misses += 1
        return NULL

    cdef iotlb_entry *fill(self, u32 domid, u32 sid, u64 iova, int shift, u64 phys, int prot,
                           u64 gen) noexcept nogil:
        """Insert the translation a walk produced (evicting per the policy when the set is full)."""
        cdef u64 page = iova >> shift, base, w, victim, oldest
        cdef iotlb_entry *e
        cdef iotlb_entry ne
        self.fills += 1
        self.tick += 1
        ne.page = page
        ne.phys = phys & ~(((<u64>1) << shift) - 1)
        ne.stamp = self.tick
        ne.gen = gen
        ne.domid = domid
        ne.sid = sid
        ne.shift = shift
        ne.prot = prot
        ne.valid = True
        ne.dirty = False
        if self.qemu:
            if self.qmap.size() >= self.max_size:         # vtd_update_iotlb(): reset when full
                self.evictions += self.qmap.size()
                self.cap_resets += 1
                self.qmap.clear()
            self.qmap[_iotlb_qkey(page, domid, sid, shift)] = ne
            return &self.qmap[_iotlb_qkey(page, domid, sid, shift)]
        base = (page % self.sets) * self.ways
        victim = self.ways
        for w in range(self.ways):
            if not self.ents[base + w].valid:
                victim = w
                break
        if victim == self.ways:
            self.evictions += 1
            if self.pol == IOTLB_RANDOM:
                victim = _splitmix64(&self.rng) % self.ways
            else:
                victim = 0
                oldest = self.ents[base].stamp
                for w in range(1, self.ways):
                    if self.ents[base + w].stamp < oldest:
                        oldest = self.ents[base + w].stamp
                        victim = w
        e = &self.ents[base + victim]
        if e.valid:
            self.nvalid[e.shift] -= 1
            self.nvalid_all -= 1
        e[0] = ne
        self.nvalid[shift] += 1
        self.nvalid_all += 1
        return e

    cdef inline u64 inv_range(self, u32 domid, u64 iova, u64 size, const int *shifts,
                              int nshifts) noexcept nogil:
        """Page-selective invalidation: drop the domain's entries overlapping [iova, iova+size).

        An empty set-assoc IOTLB (the common case of a strict unmap run) is counted here, inline
        in the caller; anything else goes to _inv_range_sets."""
        if size == 0 or (self.nvalid_all == 0 and not self.qemu):
            self.invalidations += 1              # an empty set-assoc IOTLB: nothing to drop
            return 0
        return self._inv_range_sets(domid, iova, size, shifts, nshifts)

    cdef u64 _inv_range_sets(self, u32 domid, u64 iova, u64 size, const int *shifts,
                             int nshifts) noexcept nogil:
        """inv_range of a non-empty range: small ranges probe the sets the range's pages map to
        at each leaf size; large ones (more pages than sets at some size) and the qemu hash scan
        everything."""
        cdef u64 last, n = 0, p, last_p, base, w
        cdef int k, s
        cdef iotlb_entry *e
        last = iova + size - 1
        if last < iova:
            last = U64_MAX
        if self.qemu:
            return self._scan_range(domid, iova, last)
        for k in range(nshifts):
            if (last >> shifts[k]) - (iova >> shifts[k]) >= self.sets:
                return self._scan_range(domid, iova, last)
        self.invalidations += 1
        for k in range(nshifts):
            s = shifts[k]
            if self.nvalid[s] == 0:              # nothing cached at this size: no set to probe
                continue
            p = iova >> s
            last_p = last >> s
            while True:
                base = (p % self.sets) * self.ways
                for w in range(self.ways):
                    e = &self.ents[base + w]
                    if e.valid and e.page == p and e.shift == s and e.domid == domid:
                        e.valid = False
                        self.nvalid[s] -= 1
                        self.nvalid_all -= 1
                        n += 1
                if p == last_p:
                    break
                p += 1
        self.invalidated += n
        return n

    cdef u64 _scan_range(self, u32 domid, u64 iova, u64 last) noexcept nogil:
        """inv_range by scanning every entry (last is inclusive)."""
        cdef u64 n = 0, i
        cdef iotlb_entry *e
        cdef cppmap[iotlb_qkey, iotlb_entry].iterator it
        self.invalidations += 1
        if self.qemu:
            it = self.qmap.begin()
            while it != self.qmap.end():
                e = &deref(it).second
                if e.domid == domid and _iotlb_overlaps(e, iova, last):
                    it = self.qmap.erase(it)
                    n += 1
                else:
                    inc(it)
        else:
            for i in range(self.entries):
                e = &self.ents[i]
                if e.valid and e.domid == domid and _iotlb_overlaps(e, iova, last):
                    e.valid = False
                    self.nvalid[e.shift] -= 1
                    self.nvalid_all -= 1
                    n += 1
        self.invalidated += n
        return n

    cdef u64 inv_domain(self, u32 domid) noexcept nogil:
        """Domain-selective invalidation."""
        cdef u64 n = 0, i
        cdef cppmap[iotlb_qkey, iotlb_entry].iterator it
        self.invalidations += 1
        if self.nvalid_all == 0 and not self.qemu:
            return 0
        if self.qemu:
            it = self.qmap.begin()
            while it != self.qmap.end():
                if deref(it).second.domid == domid:
                    it = self.qmap.erase(it)
                    n += 1
                else:
                    inc(it)
        else:
            for i in range(self.entries):
                if self.ents[i].valid and self.ents[i].domid == domid:
                    self.ents[i].valid = False
                    self.nvalid[self.ents[i].shift] -= 1
                    self.nvalid_all -= 1
                    n += 1
        self.invalidated += n
        return n

    cdef u64 inv_all(self) noexcept:
        """Global invalidation."""
        cdef u64 n = 0, i
        self.invalidations += 1
        if self.qemu:
            n = self.qmap.size()
            self.qmap.clear()
        else:
            for i in range(self.entries):
                if self.ents[i].valid:
                    self.ents[i].valid = False
                    n += 1
            memset(self.nvalid, 0, sizeof(self.nvalid))
            self.nvalid_all = 0
        self.invalidated += n
        return n

    # ---- Python API ------------------------------------------------------------------------
    cdef int _notify(self, object domain, u32 domid, bint all_domains, u64 iova, u64 size) except -1:
        """Report a command to the owning IOMMU's notifiers (iommu_notify), then flush warnings."""
        cdef Iommu mmu
        if self.owner is None:
            return 0
        mmu = <Iommu>self.owner
        if mmu.has_notifiers:
            if not all_domains and not isinstance(domain, IommuDomain):
                domain = next((x for x in mmu.domains if (<IommuDomain>x).id == domid), None)
                if domain is None:
                    return 0                     # no such domain: nothing a notifier could hold
            iommu_notify(mmu, domain, iova, size)
        mmu.machine.flush_warnings()
        return 0

    def invalidate_range(self, domain, iova, size):
        """Issue a page-selective invalidation for ``domain`` (IommuDomain or domain id).

        Models the hardware side of a page-selective IOTLB invalidation (VT-d qi_flush_iotlb() with
        a PSI, the drivers' iotlb_sync). Returns the number of entries dropped. Raises TypeError /
        ValueError for a non-int or out-of-range argument; an exception a registered notifier
        callback raised is re-raised after the invalidation completed.
        """
        cdef IommuDomain d
        cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size"), last, n
        cdef u32 domid
        if isinstance(domain, IommuDomain):
            d = <IommuDomain>domain
            n = self.inv_range(d.id, a, s, d.leaf_shifts, d.nshifts)
            domid = d.id
        else:
            domid = <u32>_u64(domain, "domain id")
            if s == 0:
                self.invalidations += 1
                return 0
            last = a + s - 1
            n = self._scan_range(domid, a, last if last >= a else U64_MAX)
        if s:
            self._notify(domain, domid, False, a, s)
        return n

    def invalidate_domain(self, domain):
        """Issue a domain-selective invalidation (IommuDomain or domain id).

        Models a domain-selective IOTLB invalidation (VT-d DSI, the drivers' flush_iotlb_all).
        Returns the number of entries dropped. Raises TypeError / ValueError for a non-int or
        out-of-range argument; an exception a registered notifier callback raised is re-raised after
        the invalidation completed.
        """
        cdef u32 domid = <u32>(domain.id if isinstance(domain, IommuDomain) else _u64(domain, "domain id"))
        cdef u64 n = self.inv_domain(domid)
        self._notify(domain, domid, False, 0, U64_MAX)
        return n

    def invalidate_all(self):
        """Issue a global invalidation.

        Models a global IOTLB invalidation (VT-d GLOBAL). Returns the number of entries dropped.
        Raises only what a registered notifier callback raised (re-raised after the invalidation
        completed).
        """
        cdef u64 n = self.inv_all()
        self._notify(None, 0, True, 0, U64_MAX)
        return n

    def probe(self, domain, iova, sid=0):
        """Peek: the cached (phys, size, prot) for iova, or None. Touches no counter or LRU state.

        Simulator-only. Returns the tuple or None. Raises TypeError for a non-IommuDomain ``domain``
        or a non-int, ValueError for an out-of-range ``iova`` / ``sid``.
        """
        if not isinstance(domain, IommuDomain):
            raise TypeError(f"domain must be an IommuDomain, not {type(domain).__name__}")
        cdef IommuDomain d = <IommuDomain>domain
        cdef u64 a = _u64(iova, "iova"), page, base, w
        cdef int k, s
        cdef u32 sd = <u32>_u64(sid, "sid") if self.qemu else 0
        cdef cppmap[iotlb_qkey, iotlb_entry].iterator it
        cdef iotlb_entry *e
        for k in range(d.nshifts):
            s = d.leaf_shifts[k]
            page = a >> s
            if self.qemu:
                it = self.qmap.find(_iotlb_qkey(page, d.id, sd, s))
                if it != self.qmap.end():
                    e = &deref(it).second
                    return (e.phys | (a & (((<u64>1) << s) - 1)), (<u64>1) << s, e.prot)
                continue
            base = (page % self.sets) * self.ways
            for w in range(self.ways):
                e = &self.ents[base + w]
                if e.valid and e.page == page and e.shift == s and e.domid == d.id and e.sid == sd:
                    return (e.phys | (a & (((<u64>1) << s) - 1)), (<u64>1) << s, e.prot)
        return None

    def __len__(self):
        cdef u64 n = 0, i
        if self.qemu:
            return self.qmap.size()
        for i in range(self.entries):
            n += self.ents[i].valid
        return n

    @property
    def stats(self):
        """The counters (hits, misses, fills, evictions, invalidations, invalidated, stale_hits,
        cap_resets) and ``valid`` (entries held), as a dict; read-only."""
        return {"hits": self.hits, "misses": self.misses, "fills": self.fills,
                "evictions": self.evictions, "invalidations": self.invalidations,
                "invalidated": self.invalidated, "stale_hits": self.stale_hits,
                "cap_resets": self.cap_resets, "valid": len(self)}

    def reset_stats(self):
        """Zero every counter (the cached entries stay).

        Simulator-only. Returns None. Raises nothing.
        """
        self.hits = self.misses = self.fills = self.evictions = 0
        self.invalidations = self.invalidated = self.stale_hits = self.cap_resets = 0

    def get_state(self):
        """Valid entries, sorted: (domid, sid, iova, size, phys, prot), plus the counters.

        Simulator-only (differential tests). Returns ``{"entries": [...], "stats": {...}}``. Raises
        nothing.
        """
        cdef u64 i
        cdef iotlb_entry *e
        cdef cppmap[iotlb_qkey, iotlb_entry].iterator it
        out = []
        if self.qemu:
            it = self.qmap.begin()
            while it != self.qmap.end():
                e = &deref(it).second
                out.append((e.domid, e.sid, e.page << e.shift, (<u64>1) << e.shift, e.phys, e.prot))
                inc(it)
        else:
            for i in range(self.entries):
                e = &self.ents[i]
                if e.valid:
                    out.append((e.domid, e.sid, e.page << e.shift, (<u64>1) << e.shift, e.phys, e.prot))
        return {"entries": sorted(out), "stats": self.stats}

    def __repr__(self):
        if self.qemu:
            return f"<dmaphys.Iotlb qemu max_size={self.max_size} valid={len(self)}>"
        return (f"<dmaphys.Iotlb {self.entries} entries {self.ways}-way {self.policy} "
                f"valid={len(self)}>")


cdef inline bint _iotlb_overlaps(iotlb_entry *e, u64 first, u64 last) noexcept nogil:
    cdef u64 start = e.page << e.shift
    cdef u64 end = start + ((((<u64>1) << e.shift) - 1))
    return start <= last and first <= end


__all__ += ["Iotlb"]
