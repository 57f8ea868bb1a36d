"""Reference model of the IOTLB (mirrors dmaphys/_kernel/iotlb.pxi; see its header for the model).

Set-associative mode: a list of sets, each a list of ``ways`` slots (None = invalid); a slot
holds an _Entry tagged (domid, sid, page, shift). QEMU mode: a dict keyed like QEMU's
vtd_iotlb_key, emptied when it already holds ``max_size`` entries before an insert.
"""

from __future__ import annotations

from ._util import U64_MAX, typed, u64

__all__ = ["Iotlb"]

VTD_IOTLB_MAX_SIZE = 1024
_POLICIES = ("lru", "fifo", "random")
_M64 = U64_MAX


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


class _Entry:
    __slots__ = ("page", "phys", "stamp", "gen", "domid", "sid", "shift", "prot", "dirty")

    def __init__(self, page, phys, stamp, gen, domid, sid, shift, prot):
        self.page, self.phys, self.stamp, self.gen = page, phys, stamp, gen
        self.domid, self.sid, self.shift, self.prot = domid, sid, shift, prot
        self.dirty = False          # the leaf's write-dirty state as cached (dirty tracking)

    def overlaps(self, first: int, last: int) -> bool:
        start = self.page << self.shift
        return start <= last and first <= start + (1 << self.shift) - 1

    def as_tuple(self):
        return (self.domid, self.sid, self.page << self.shift, 1 << self.shift, self.phys, self.prot)


class Iotlb:
    """Reference twin of dmaphys._core.Iotlb."""

    def __init__(self, entries=512, ways=8, policy="lru", seed=0, mode="set-assoc",
                 max_size=VTD_IOTLB_MAX_SIZE):
        if mode not in ("set-assoc", "qemu"):
            raise ValueError(f"IOTLB mode must be 'set-assoc' or 'qemu', not {mode!r}")
        if policy not in _POLICIES:
            raise ValueError(f"IOTLB policy must be one of {', '.join(_POLICIES)}, not {policy!r}")
        e, w = u64(entries, "entries"), u64(ways, "ways")
        if e == 0 or w == 0 or e % w:
            raise ValueError(f"IOTLB entries ({e}) must be a positive multiple of ways ({w})")
        self.max_size = u64(max_size, "max_size")
        if self.max_size == 0:
            raise ValueError("max_size must be > 0")
        self.mode = mode
        self.qemu = mode == "qemu"
        self.policy = policy
        self.entries, self.ways, self.sets = e, w, e // w
        self.seed = u64(seed, "seed")
        self._rng = self.seed
        self.owner = None
        self._tick = 0
        self.hits = self.misses = self.fills = self.evictions = 0
        self.invalidations = self.invalidated = self.stale_hits = self.cap_resets = 0
        self._sets: list[list[_Entry | None]] = [] if self.qemu else [[None] * w for _ in range(self.sets)]
        self._q: dict[tuple, _Entry] = {}

    # ---- the hardware side -----------------------------------------------------------------
    def find(self, domid: int, sid: int, iova: int, shifts) -> _Entry | None:
        """Simulator-only (IOTLB hardware): look ``iova`` up at each leaf shift, smallest first,
        counting a hit or a miss (LRU stamps updated). Returns the entry or None. Raises
        nothing.
        """
        for s in shifts:
            page = iova >> s
            if self.qemu:
                e = self._q.get((page, domid, sid, s))
                if e is not None:
                    self.hits += 1
                    return e
                continue
            for e in self._sets[page % self.sets]:
                if e is not None and e.page == page and e.shift == s and e.domid == domid and e.sid == sid:
                    self.hits += 1
                    if self.policy == "lru":
                        self._tick += 1
                        e.stamp = self._tick
                    return e
        self.misses += 1
        return None

    def fill(self, domid, sid, iova, shift, phys, prot, gen) -> _Entry:
        """Simulator-only (IOTLB hardware): insert the translation a walk produced, evicting per
        the policy (qemu mode: emptying the cache when full). Returns the new entry. Raises
        nothing.
        """
        self.fills += 1
        self._tick += 1
        page = iova >> shift
        ne = _Entry(page, phys & ~((1 << shift) - 1), self._tick, gen, domid, sid, shift, prot)
        if self.qemu:
            if len(self._q) >= self.max_size:             # vtd_update_iotlb(): reset when full
                self.evictions += len(self._q)
                self.cap_resets += 1
                self._q.clear()
            self._q[(page, domid, sid, shift)] = ne
            return ne
        ways = self._sets[page % self.sets]
        victim = next((i for i, e in enumerate(ways) if e is None), None)
        if victim is None:
            self.evictions += 1
            if self.policy == "random":
                self._rng, r = _splitmix64(self._rng)
                victim = r % self.ways
            else:
                victim = min(range(self.ways), key=lambda i: ways[i].stamp)
        ways[victim] = ne
        return ne

    def _scan_range(self, domid: int, iova: int, last: int) -> int:
        self.invalidations += 1
        n = 0
        if self.qemu:
            for k in [k for k, e in self._q.items() if e.domid == domid and e.overlaps(iova, last)]:
                del self._q[k]
                n += 1
        else:
            for ways in self._sets:
                for i, e in enumerate(ways):
                    if e is not None and e.domid == domid and e.overlaps(iova, last):
                        ways[i] = None
                        n += 1
        self.invalidated += n
        return n

    def inv_range(self, domid: int, iova: int, size: int, shifts) -> int:
        """Simulator-only (IOTLB hardware) side of a page-selective invalidation, no notifiers.
        Returns the number of entries dropped. Raises nothing.
        """
        if size == 0:
            self.invalidations += 1
            return 0
        last = min(iova + size - 1, U64_MAX)
        if self.qemu or any((last >> s) - (iova >> s) >= self.sets for s in shifts):
            return self._scan_range(domid, iova, last)
        self.invalidations += 1
        n = 0
        for s in shifts:
            for p in range(iova >> s, (last >> s) + 1):
                ways = self._sets[p % self.sets]
                for i, e in enumerate(ways):
                    if e is not None and e.page == p and e.shift == s and e.domid == domid:
                        ways[i] = None
                        n += 1
        self.invalidated += n
        return n

    def inv_domain(self, domid: int) -> int:
        """Simulator-only (IOTLB hardware) side of a domain-selective invalidation, no notifiers.
        Returns the number of entries dropped. Raises nothing.
        """
        self.invalidations += 1
        n = 0
        if self.qemu:
            for k in [k for k, e in self._q.items() if e.domid == domid]:
                del self._q[k]
                n += 1
        else:
            for ways in self._sets:
                for i, e in enumerate(ways):
                    if e is not None and e.domid == domid:
                        ways[i] = None
                        n += 1
        self.invalidated += n
        return n

    def inv_all(self) -> int:
        """Simulator-only (IOTLB hardware) side of a global invalidation, no notifiers. Returns the
        number of entries dropped. Raises nothing.
        """
        self.invalidations += 1
        n = len(self)
        if self.qemu:
            self._q.clear()
        else:
            self._sets = [[None] * self.ways for _ in range(self.sets)]
        self.invalidated += n
        return n

    def _entries(self):
        if self.qemu:
            return list(self._q.values())
        return [e for ways in self._sets for e in ways if e is not None]

    # ---- Python API ------------------------------------------------------------------------
    def _notify(self, domain, domid: int, all_domains: bool, iova: int, size: int) -> None:
        """Mirrors iotlb.pxi Iotlb._notify: the owning IOMMU's notifiers, then flush warnings."""
        from .iommu import iommu_notify
        mmu = self.owner
        if mmu is None:
            return
        if mmu.notifiers:
            if not all_domains and not hasattr(domain, "leaf_shifts"):
                domain = next((x for x in mmu.domains if x.id == domid), None)
                if domain is None:
                    return
            iommu_notify(mmu, domain, iova, size)
        mmu.machine.flush_warnings()

    def invalidate_range(self, domain, iova, size):
        """Reference twin of dmaphys._core.Iotlb.invalidate_range: same returns and raises."""
        a, s = u64(iova, "iova"), u64(size, "size")
        if hasattr(domain, "leaf_shifts"):
            domid = domain.id
            n = self.inv_range(domid, a, s, domain.leaf_shifts)
        else:
            domid = u64(domain, "domain id") & 0xFFFFFFFF
            if s == 0:
                self.invalidations += 1
                return 0
            n = self._scan_range(domid, a, min(a + s - 1, U64_MAX))
        if s:
            self._notify(domain, domid, False, a, s)
        return n

    def invalidate_domain(self, domain):
        """Reference twin of dmaphys._core.Iotlb.invalidate_domain: same returns and raises."""
        domid = domain.id if hasattr(domain, "leaf_shifts") else u64(domain, "domain id") & 0xFFFFFFFF
        n = self.inv_domain(domid)
        self._notify(domain, domid, False, 0, U64_MAX)
        return n

    def invalidate_all(self):
        """Reference twin of dmaphys._core.Iotlb.invalidate_all: same returns and raises."""
        n = self.inv_all()
        self._notify(None, 0, True, 0, U64_MAX)
        return n

    def probe(self, domain, iova, sid=0):
        """Reference twin of dmaphys._core.Iotlb.probe: same returns and raises."""
        from . import iommu
        typed(domain, iommu.IommuDomain, "domain")
        a = u64(iova, "iova")
        sd = u64(sid, "sid") if self.qemu else 0
        for s in domain.leaf_shifts:
            page = a >> s
            if self.qemu:
                e = self._q.get((page, domain.id, sd, s))
                if e is not None:
                    return (e.phys | (a & ((1 << s) - 1)), 1 << s, e.prot)
                continue
            for e in self._sets[page % self.sets]:
                if e is not None and e.page == page and e.shift == s and e.domid == domain.id and e.sid == sd:
                    return (e.phys | (a & ((1 << s) - 1)), 1 << s, e.prot)
        return None

    def __len__(self) -> int:
        return len(self._entries())

    @property
    def stats(self):
        """Reference twin of dmaphys._core.Iotlb.stats."""
        return {"hits": self.hits, "misses": self.misses, "fills": self.fills,
                "evictions": self.evictions, "invalidations": self.invalidations,
                "invalidated": self.invalidated, "stale_hits": self.stale_hits,
                "cap_resets": self.cap_resets, "valid": len(self)}

    def reset_stats(self):
        """Reference twin of dmaphys._core.Iotlb.reset_stats: same returns and raises."""
        self.hits = self.misses = self.fills = self.evictions = 0
        self.invalidations = self.invalidated = self.stale_hits = self.cap_resets = 0

    def get_state(self):
        """Reference twin of dmaphys._core.Iotlb.get_state: same returns and raises."""
        return {"entries": sorted(e.as_tuple() for e in self._entries()), "stats": self.stats}

    def __repr__(self) -> str:
        if self.qemu:
            return f"<dmaphys.reference.Iotlb qemu max_size={self.max_size} valid={len(self)}>"
        return (f"<dmaphys.reference.Iotlb {self.entries} entries {self.ways}-way {self.policy} "
                f"valid={len(self)}>")
