"""Reference model of drivers/iommu/iova.c and include/linux/iova.h (twin of _kernel/iova.pxi).

The kernel's rbtree of ``struct iova`` is a sorted list of pfn_lo keys plus a dict
pfn_lo -> pfn_hi. Ranges never overlap, so list order is the rbtree's in-order walk: rb_prev /
rb_next of the node at index i are the nodes at i - 1 / i + 1. A node is named by its pfn_lo,
so ``cached_node`` / ``cached32_node`` hold keys. The one place the kernel changes a node's
pfn_lo in place (reserve_iova extending a node downwards) re-keys it here, and a cached key
naming that node follows it: the kernel's cached pointer still points at the same node.

The rcache keeps, per size order 0..5, a ``loaded`` and a ``prev`` magazine (Python lists of
at most IOVA_MAG_SIZE pfns) per CPU and a depot (a list of full magazines whose last element
is the head of the kernel's LIFO).
"""

from __future__ import annotations

import functools
import warnings
from bisect import bisect_left, bisect_right, insort
from typing import Any

from ..constants import IOVA_MAG_SIZE, IOVA_RANGE_CACHE_MAX_SIZE, PAGE_SIZE
from ..errors import KernelBug, KernelWarning
from ._util import U64_MAX, u64

__all__ = ["IovaDomain", "iova_rcache_range"]

IOVA_ANCHOR = U64_MAX                  # the anchor node's pfn_lo == pfn_hi
IOVA_DEPOT_DELAY_NS = 100_000_000      # IOVA_DEPOT_DELAY = msecs_to_jiffies(100)
_INT_MAX = (1 << 31) - 1


def _iovad_device(iovad):
    """The (first) device whose DMA domain allocates from iovad, for a report; None if none."""
    for d in iovad.machine.devices.values():
        dom = d.domain
        if dom is not None and dom.iova_cookie is not None and dom.iova_cookie.iovad is iovad:
            return d
    return None


def iova_rcache_range() -> int:
    """iova_rcache_range(): the largest size in bytes the rcache serves (PAGE_SIZE << 5).

    Reference twin of dmaphys._core.iova_rcache_range: same returns and raises.
    """
    return PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)


def _fls(x: int) -> int:
    """fls_long(): 1-based index of the highest set bit, 0 for 0."""
    return x.bit_length()


def _roundup_pow_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _order_base_2(n: int) -> int:
    return 0 if n <= 1 else (n - 1).bit_length()


def _from_float(v: Any) -> Any:
    """Cython converts a float argument of a C integer parameter with int() (truncation, ValueError
    for NaN, OverflowError for infinities): the reference does the same."""
    return int(v) if isinstance(v, float) else v


def _c_u64(v: Any) -> int:
    """The compiled core converts these arguments as a C uint64_t: mirror its errors."""
    v = _from_float(v)
    if not hasattr(v, "__index__"):
        raise TypeError(f"an integer is required, not {type(v).__name__}")
    v = v.__index__()
    if v < 0:
        raise OverflowError("can't convert negative value to u64")
    if v > U64_MAX:
        raise OverflowError("value too large to convert to u64")
    return v


def _c_int(v: Any) -> int:
    v = _from_float(v)
    if not hasattr(v, "__index__"):
        raise TypeError(f"an integer is required, not {type(v).__name__}")
    v = v.__index__()
    if not -_INT_MAX - 1 <= v <= _INT_MAX:
        raise OverflowError("value too large to convert to int")
    return v


class IovaDomain:
    """Reference twin of dmaphys._core.IovaDomain (struct iova_domain)."""

    def __init__(self, granule, start_pfn, ncpus=None, machine=None):
        g = u64(granule, "granule")
        s = u64(start_pfn, "start_pfn")
        if getattr(self, "_los", None):
            raise RuntimeError("IovaDomain is already initialised")
        if machine is not None and not hasattr(machine, "kwarn"):
            raise TypeError(f"machine must be a dmaphys Machine, not {type(machine).__name__}")
        if ncpus is None:
            n = 1 if machine is None else machine.cpus
        elif isinstance(ncpus, bool) or not isinstance(ncpus, int) or not 1 <= ncpus <= 1024:
            raise ValueError(f"ncpus must be an int in 1..1024, not {ncpus!r}")
        else:
            n = ncpus
        if machine is not None and n != machine.cpus:
            raise ValueError(f"ncpus {n} differs from the machine's {machine.cpus} CPUs")
        # init_iova_domain()
        if g > PAGE_SIZE or g == 0 or g & (g - 1):
            raise KernelBug(f"init_iova_domain: BUG_ON(granule {g:#x} > PAGE_SIZE || "
                            "!is_power_of_2(granule))")
        self.machine = machine
        self.ncpus = n
        self.granule = g
        self.start_pfn = s
        self._shift = g.bit_length() - 1
        self.dma_32bit_pfn = 1 << (32 - self._shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self._los: list[int] = [IOVA_ANCHOR]          # sorted pfn_lo of every node
        self._his: dict[int, int] = {IOVA_ANCHOR: IOVA_ANCHOR}
        self.cached_node: int | None = IOVA_ANCHOR
        self.cached32_node: int | None = IOVA_ANCHOR
        self._dead = False
        self._warn_queue: list[str] = []
        # (simulator, dma-debug) pfns freed into the rcache while dma-debug was on: a hint,
        # confirmed against the magazines (iova.pxd dbg_cached)
        self._dbg_cached: set[int] = set()
        # never reset, so a timer armed before put_iova_domain() can't match after re-init
        self._work_gen: int = getattr(self, "_work_gen", 0)
        # iova_domain_init_rcaches(): rcaches[order] with per-CPU loaded/prev magazines
        self._rcaches: list[dict] = [
            {"cpus": [{"loaded": [], "prev": []} for _ in range(n)], "depot": [],
             "work_pending": False, "work_seq": 0}
            for _ in range(IOVA_RANGE_CACHE_MAX_SIZE)
        ]

    # ---- include/linux/iova.h helpers ----------------------------------------------------
    def iova_shift(self) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_shift: same returns and raises."""
        return self._shift

    def iova_mask(self) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_mask: same returns and raises."""
        return self.granule - 1

    def iova_offset(self, iova) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_offset: same returns and raises."""
        return _c_u64(iova) & (self.granule - 1)

    def iova_align(self, size) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_align: same returns and raises."""
        return (_c_u64(size) + self.granule - 1) & ~(self.granule - 1) & U64_MAX

    def iova_align_down(self, size) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_align_down: same returns and raises."""
        return _c_u64(size) & ~(self.granule - 1) & U64_MAX

    def iova_pfn(self, iova) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_pfn: same returns and raises."""
        return _c_u64(iova) >> self._shift

    def iova_dma_addr(self, pfn) -> int:
        """Reference twin of dmaphys._core.IovaDomain.iova_dma_addr: same returns and raises."""
        return (_c_u64(pfn) << self._shift) & U64_MAX

    # ---- plumbing --------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self._dead:
            raise KernelBug("IovaDomain used before init_iova_domain() or after put_iova_domain()")

    def _cpu_arg(self, cpu: int) -> int:
        if cpu == -1:
            return 0 if self.machine is None else self.machine.cpu
        if cpu < 0 or cpu >= self.ncpus:
            raise ValueError(f"cpu must be in 0..{self.ncpus - 1} (or -1 for the current CPU), not {cpu}")
        return cpu

    def _warn(self, text: str) -> None:
        if self.machine is not None:
            self.machine.kwarn(KernelWarning, text)
        else:
            self._warn_queue.append(text)

    def _flush_local(self) -> None:
        q, self._warn_queue = self._warn_queue, []
        for text in q:
            warnings.warn(text, KernelWarning, stacklevel=3)

    def _flush(self) -> None:
        if self.machine is not None:
            self.machine.flush_warnings()
        self._flush_local()

    # ---- the range tree --------------------------------------------------------------------
    def _index(self, lo: int) -> int:
        """Position of node ``lo`` in the in-order walk."""
        i = bisect_left(self._los, lo)
        assert self._los[i] == lo
        return i

    def _rb_next(self, lo: int) -> int | None:
        i = self._index(lo) + 1
        return self._los[i] if i < len(self._los) else None

    def _insert(self, lo: int, hi: int) -> None:
        insort(self._los, lo)
        self._his[lo] = hi

    def _erase(self, lo: int) -> None:
        del self._los[self._index(lo)]
        del self._his[lo]

    def _anchor(self) -> int:
        return self._los[-1]

    def _get_cached_rbnode(self, limit_pfn: int) -> int:
        # __get_cached_rbnode(): limit_pfn exclusive
        if limit_pfn <= self.dma_32bit_pfn:
            return self.cached32_node
        return self.cached_node

    def _cached_rbnode_insert_update(self, lo: int) -> None:
        # __cached_rbnode_insert_update()
        if self._his[lo] < self.dma_32bit_pfn:
            self.cached32_node = lo
        else:
            self.cached_node = lo

    def _cached_rbnode_delete_update(self, lo: int) -> None:
        # __cached_rbnode_delete_update(): before the node leaves the tree
        hi = self._his[lo]
        if lo == self.cached32_node or (hi < self.dma_32bit_pfn and lo >= self.cached32_node):
            self.cached32_node = self._rb_next(lo)
        if lo < self.dma_32bit_pfn:
            self.max32_alloc_size = self.dma_32bit_pfn
        if lo >= self.cached_node:
            self.cached_node = self._rb_next(lo)

    def _find_limit(self, limit_pfn: int) -> int:
        # iova_find_limit(): the lowest node whose pfn_hi >= limit_pfn (the kernel's descent
        # may stop at the node just above a straddling one; the retry walk is the same)
        if limit_pfn > self.dma_32bit_pfn:
            return self._anchor()
        i = bisect_right(self._los, limit_pfn)            # the first node with pfn_lo > limit
        if i > 0 and self._his[self._los[i - 1]] >= limit_pfn:
            return self._los[i - 1]                       # a node straddling the limit
        return self._los[i]

    def _private_find_iova(self, pfn: int) -> int | None:
        # private_find_iova(): pfn_lo of the node containing pfn
        i = bisect_right(self._los, pfn) - 1
        if i < 0 or self._his[self._los[i]] < pfn:
            return None
        return self._los[i]

    def _remove_iova(self, lo: int) -> None:
        # remove_iova()
        if self._his[lo] == IOVA_ANCHOR:
            raise KernelBug(f"freeing the anchor node [{lo:#x}, {IOVA_ANCHOR:#x}] "
                            "would corrupt the IOVA domain")
        self._cached_rbnode_delete_update(lo)
        self._erase(lo)

    def _alloc_and_insert_iova_range(self, size: int, limit_pfn: int, size_aligned: bool) -> int | None:
        # __alloc_and_insert_iova_range(): limit_pfn exclusive; the new pfn_lo or None (-ENOMEM)
        align_mask = U64_MAX
        if size_aligned:
            # fls_long(size - 1) is 64 only above 2^63; x86 masks the shift count
            align_mask = (align_mask << (_fls(size - 1) & 63)) & U64_MAX
        high_pfn = limit_pfn
        low_pfn = self.start_pfn
        if limit_pfn <= self.dma_32bit_pfn and size >= self.max32_alloc_size:
            return None                                   # iova32_full
        curr: int | None = self._get_cached_rbnode(limit_pfn)
        retry_pfn = self._his[curr]
        while True:
            i = self._index(curr)
            while True:
                high_pfn = min(high_pfn, self._los[i])
                new_pfn = (high_pfn - size) & align_mask  # unsigned: wraps below zero
                i -= 1                                    # rb_prev()
                if i < 0:
                    break
                if not (new_pfn <= self._his[self._los[i]] and new_pfn >= low_pfn):
                    break
            if high_pfn < size or new_pfn < low_pfn:
                if low_pfn == self.start_pfn and retry_pfn < limit_pfn:
                    high_pfn = limit_pfn
                    low_pfn = retry_pfn + 1
                    curr = self._find_limit(limit_pfn)
                    continue
                self.max32_alloc_size = size
                return None
            break
        self._insert(new_pfn, new_pfn + size - 1)
        self._cached_rbnode_insert_update(new_pfn)
        return new_pfn

    def _reserve_iova(self, pfn_lo: int, pfn_hi: int) -> tuple[int, int] | None:
        # reserve_iova()
        if pfn_lo > pfn_hi:
            raise ValueError(f"reserve_iova: pfn_lo {pfn_lo:#x} is above pfn_hi {pfn_hi:#x}")
        if (pfn_hi | pfn_lo) > (U64_MAX >> self._shift):
            self._warn(f"WARNING: drivers/iommu/iova.c: reserve_iova: WARN_ON((pfn_hi | pfn_lo) > "
                       f"(ULLONG_MAX >> iova_shift(iovad))): pfn_lo {pfn_lo:#x} pfn_hi {pfn_hi:#x}")
            return None
        overlap = False
        i = 0
        while i < len(self._los):                         # rb_first() .. rb_next()
            lo = self._los[i]
            hi = self._his[lo]
            if pfn_lo <= hi and pfn_hi >= lo:
                # __adjust_overlap_range()
                if pfn_lo < lo:
                    self._erase(lo)
                    self._insert(pfn_lo, hi)
                    if self.cached_node == lo:
                        self.cached_node = pfn_lo
                    if self.cached32_node == lo:
                        self.cached32_node = pfn_lo
                    lo = pfn_lo
                if pfn_hi > hi:
                    pfn_lo = hi + 1
                if pfn_lo >= lo and pfn_hi <= hi:
                    return (lo, hi)
                overlap = True
            elif overlap:
                break
            i += 1
        self._insert(pfn_lo, pfn_hi)                      # __insert_new_range()
        return (pfn_lo, pfn_hi)

    # ---- the rcache ------------------------------------------------------------------------
    def _depot_pop(self, order: int) -> list[int]:
        # iova_depot_pop(): the head of the LIFO
        return self._rcaches[order]["depot"].pop()

    def _schedule_depot_work(self, order: int) -> None:
        # schedule_delayed_work(): nothing if the work is already pending
        rc = self._rcaches[order]
        if rc["work_pending"]:
            return
        rc["work_pending"] = True
        self._work_gen += 1
        rc["work_seq"] = self._work_gen
        if self.machine is not None:
            self.machine.add_timer(IOVA_DEPOT_DELAY_NS,
                                   functools.partial(self._depot_timer, order, rc["work_seq"]))

    def _depot_timer(self, order: int, seq: int) -> None:
        if self._dead:
            return
        rc = self._rcaches[order]
        if not rc["work_pending"] or seq != rc["work_seq"]:
            return
        self._iova_depot_work_func(order)

    def _iova_depot_work_func(self, order: int) -> None:
        # iova_depot_work_func(): trim one magazine while depot_size > num_online_cpus()
        rc = self._rcaches[order]
        rc["work_pending"] = False
        if len(rc["depot"]) > self.ncpus:
            mag = self._depot_pop(order)
            self._iova_magazine_free_pfns(mag)
            self._schedule_depot_work(order)

    def _iova_magazine_free_pfns(self, mag: list[int]) -> None:
        # iova_magazine_free_pfns(): index order, WARN for pfns no longer in the tree
        for pfn in mag:
            lo = self._private_find_iova(pfn)
            if lo is None:
                self._warn(f"WARNING: drivers/iommu/iova.c: iova_magazine_free_pfns: WARN_ON(!iova): "
                           f"cached pfn {pfn:#x} is not in the IOVA tree")
                continue
            self._remove_iova(lo)
        self._dbg_cached.difference_update(mag)
        mag.clear()

    def _iova_rcache_insert(self, pfn: int, size: int, cpu: int) -> bool:
        # iova_rcache_insert() + __iova_rcache_insert()
        order = _order_base_2(size)
        if order >= IOVA_RANGE_CACHE_MAX_SIZE:
            return False
        cr = self._rcaches[order]["cpus"][cpu]
        if len(cr["loaded"]) == IOVA_MAG_SIZE:
            if len(cr["prev"]) != IOVA_MAG_SIZE:
                cr["loaded"], cr["prev"] = cr["prev"], cr["loaded"]
            else:
                self._rcaches[order]["depot"].append(cr["loaded"])   # iova_depot_push()
                cr["loaded"] = []
                self._schedule_depot_work(order)
        cr["loaded"].append(pfn)                                     # iova_magazine_push()
        return True

    def _iova_rcache_get(self, size: int, limit_pfn: int, cpu: int) -> int:
        # iova_rcache_get() + __iova_rcache_get(): limit_pfn exclusive; 0 on a miss
        order = _order_base_2(size)
        if order >= IOVA_RANGE_CACHE_MAX_SIZE:
            return 0
        rc = self._rcaches[order]
        cr = rc["cpus"][cpu]
        if not cr["loaded"]:
            if cr["prev"]:
                cr["loaded"], cr["prev"] = cr["prev"], cr["loaded"]
            elif rc["depot"]:
                cr["loaded"] = self._depot_pop(order)
            else:
                return 0
        pfn = self._iova_magazine_pop(cr["loaded"], (limit_pfn - size) & U64_MAX)
        self._dbg_cached.discard(pfn)
        return pfn

    @staticmethod
    def _iova_magazine_pop(mag: list[int], limit_pfn: int) -> int:
        # iova_magazine_pop(): the highest index whose pfn fits, swap-removed with the last
        i = len(mag) - 1
        while mag[i] > limit_pfn:
            if i == 0:
                return 0
            i -= 1
        pfn = mag[i]
        mag[i] = mag[-1]
        mag.pop()
        return pfn

    def _free_cpu_cached_iovas(self, cpu: int) -> None:
        # free_cpu_cached_iovas()
        for rc in self._rcaches:
            self._iova_magazine_free_pfns(rc["cpus"][cpu]["loaded"])
            self._iova_magazine_free_pfns(rc["cpus"][cpu]["prev"])

    def _free_global_cached_iovas(self) -> None:
        # free_global_cached_iovas(): every depot, head first
        for order, rc in enumerate(self._rcaches):
            while rc["depot"]:
                self._iova_magazine_free_pfns(self._depot_pop(order))

    # ---- the kernel API --------------------------------------------------------------------
    def alloc_iova_fast(self, size, limit_pfn, flush_rcache=True, cpu=-1) -> int:
        """alloc_iova_fast(size, limit_pfn, flush_rcache=True, cpu=-1) -> pfn, or 0 on failure.

        Reference twin of dmaphys._core.IovaDomain.alloc_iova_fast: same returns and raises.
        """
        size = _c_u64(size)
        limit_pfn = _c_u64(limit_pfn)
        flush_rcache = bool(flush_rcache)
        cpu = _c_int(cpu)
        self._check_alive()
        cpu = self._cpu_arg(cpu)
        if size == 0:
            raise ValueError("alloc_iova_fast: size must be at least 1 granule")
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = _roundup_pow_of_two(size)
        limit_excl = (limit_pfn + 1) & U64_MAX
        pfn = self._iova_rcache_get(size, limit_excl, cpu)
        if pfn:
            return pfn
        while True:
            new = self._alloc_and_insert_iova_range(size, limit_excl, True)
            if new is not None:
                pfn = new
                break
            pfn = 0
            if not flush_rcache:
                break
            flush_rcache = False                   # replenish by flushing the rcaches, once
            for c in range(self.ncpus):
                self._free_cpu_cached_iovas(c)
            self._free_global_cached_iovas()
        if self.machine is None:
            self._flush_local()
        return pfn

    def free_iova_fast(self, pfn, size, cpu=-1) -> int:
        """free_iova_fast(pfn, size, cpu=-1) -> 0: cache the range in ``cpu``'s rcache, else free it.

        Reference twin of dmaphys._core.IovaDomain.free_iova_fast: same returns and raises.
        """
        pfn = _c_u64(pfn)
        size = _c_u64(size)
        cpu = _c_int(cpu)
        self._check_alive()
        cpu = self._cpu_arg(cpu)
        if size == 0:
            raise ValueError("free_iova_fast: size must be at least 1 granule")
        if pfn >= self._anchor():
            raise KernelBug(f"free_iova_fast: pfn {pfn:#x} lies in the anchor node")
        if self.machine is not None and self.machine.dma_debug.enabled:
            if not self._debug_free_ok(pfn, size):
                return 0
            if self._iova_rcache_insert(pfn, size, cpu):
                self._dbg_cached.add(pfn)
                return 0
        elif self._iova_rcache_insert(pfn, size, cpu):
            return 0
        self._free_iova(pfn)
        return 0

    def _rcache_holds(self, pfn: int) -> bool:
        # (simulator) pfn sits in a magazine: any order, any CPU's loaded/prev, or the depot
        return any(pfn in cr["loaded"] or pfn in cr["prev"] for rc in self._rcaches for cr in rc["cpus"]) \
            or any(pfn in mag for rc in self._rcaches for mag in rc["depot"])

    def _debug_free_ok(self, pfn: int, size: int) -> bool:
        # Not the kernel (dma-debug's part): mirrors iova.pxi _debug_free_ok() (reported, refused)
        lo = self._private_find_iova(pfn)
        if lo is None or lo != pfn:
            why = "does not start an allocated IOVA range"
        elif pfn in self._dbg_cached and self._rcache_holds(pfn):
            why = "is in the IOVA rcache already (freed twice)"
        else:
            return True
        self.machine.dma_debug.report_extra(
            _iovad_device(self), "iova_free",
            f"free_iova_fast: IOVA pfn {pfn:#x} ({size} granules) {why}; not freed",
            (pfn << self._shift) & U64_MAX, (size << self._shift) & U64_MAX)
        return False

    def alloc_iova(self, size, limit_pfn, size_aligned=True) -> int:
        """alloc_iova(size, limit_pfn, size_aligned=True) -> pfn_lo, or 0 when no space is left.

        Reference twin of dmaphys._core.IovaDomain.alloc_iova: same returns and raises.
        """
        s = u64(size, "size")
        lim = u64(limit_pfn, "limit_pfn")
        self._check_alive()
        if s == 0:
            raise ValueError("alloc_iova: size must be at least 1 granule")
        # a limit below start_pfn (or all ones: limit_pfn + 1 wraps to 0) fails the search and
        # sets max32_alloc_size, as in the kernel
        pfn = self._alloc_and_insert_iova_range(s, (lim + 1) & U64_MAX, bool(size_aligned))
        self._flush()
        return 0 if pfn is None else pfn

    def _free_iova(self, pfn: int) -> None:
        # free_iova()
        self._check_alive()
        lo = self._private_find_iova(pfn)
        if lo is not None:
            self._remove_iova(lo)

    def free_iova(self, pfn) -> None:
        """free_iova(pfn): free the range containing ``pfn`` (nothing if none).

        Reference twin of dmaphys._core.IovaDomain.free_iova: same returns and raises.
        """
        self._free_iova(u64(pfn, "pfn"))
        self._flush()

    def find_iova(self, pfn) -> tuple[int, int] | None:
        """find_iova(pfn) -> (pfn_lo, pfn_hi) of the range containing ``pfn``, or None.

        Reference twin of dmaphys._core.IovaDomain.find_iova: same returns and raises.
        """
        p = u64(pfn, "pfn")
        self._check_alive()
        lo = self._private_find_iova(p)
        return None if lo is None else (lo, self._his[lo])

    def reserve_iova(self, pfn_lo, pfn_hi) -> tuple[int, int] | None:
        """reserve_iova(pfn_lo, pfn_hi) -> (pfn_lo, pfn_hi) of the resulting node, or None.

        Reference twin of dmaphys._core.IovaDomain.reserve_iova: same returns and raises.
        """
        lo = u64(pfn_lo, "pfn_lo")
        hi = u64(pfn_hi, "pfn_hi")
        self._check_alive()
        ret = self._reserve_iova(lo, hi)
        self._flush()
        return ret

    def free_cpu_cached_iovas(self, cpu) -> None:
        """free_cpu_cached_iovas(cpu): return ``cpu``'s loaded and prev magazines' pfns to the tree.

        Reference twin of dmaphys._core.IovaDomain.free_cpu_cached_iovas: same returns and raises.
        """
        self._check_alive()
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.ncpus:
            raise ValueError(f"cpu must be in 0..{self.ncpus - 1}, not {cpu!r}")
        self._free_cpu_cached_iovas(cpu)
        self._flush()

    def free_global_cached_iovas(self) -> None:
        """free_global_cached_iovas(): return every depot magazine's pfns to the tree.

        Reference twin of dmaphys._core.IovaDomain.free_global_cached_iovas: same returns and raises.
        """
        self._check_alive()
        self._free_global_cached_iovas()
        self._flush()

    def iova_depot_work_func(self, order) -> None:
        """iova_depot_work_func(order): run the depot trim work of rcache ``order`` now.

        Reference twin of dmaphys._core.IovaDomain.iova_depot_work_func: same returns and raises.
        """
        self._check_alive()
        if (isinstance(order, bool) or not isinstance(order, int)
                or not 0 <= order < IOVA_RANGE_CACHE_MAX_SIZE):
            raise ValueError(f"order must be in 0..{IOVA_RANGE_CACHE_MAX_SIZE - 1}, not {order!r}")
        self._iova_depot_work_func(order)
        self._flush()

    def put_iova_domain(self) -> None:
        """put_iova_domain(): free the rcaches (cancelling the depot work) and every range.

        Reference twin of dmaphys._core.IovaDomain.put_iova_domain: same returns and raises.
        """
        self._put_iova_domain()
        self._flush()

    def _put_iova_domain(self) -> None:
        # mirrors iova.pxi put_iova_domain_c(): warnings left queued for the caller's entry point
        self._check_alive()
        for rc in self._rcaches:
            rc["work_pending"] = False             # cancel_delayed_work_sync()
        self._rcaches = []
        self._dbg_cached = set()
        self._los = []
        self._his = {}
        self.cached_node = self.cached32_node = None
        self._dead = True

    # ---- introspection ---------------------------------------------------------------------
    @property
    def depot_size(self) -> tuple[int, ...]:
        """Reference twin of dmaphys._core.IovaDomain.depot_size."""
        return tuple(len(rc["depot"]) for rc in self._rcaches)

    def __len__(self) -> int:
        return sum(1 for lo in self._los if lo != IOVA_ANCHOR)

    def ranges(self) -> list[tuple[int, int]]:
        """Reference twin of dmaphys._core.IovaDomain.ranges: same returns and raises."""
        return [(lo, self._his[lo]) for lo in self._los if lo != IOVA_ANCHOR]

    def range_pages(self) -> int:
        """Reference twin of dmaphys._core.IovaDomain.range_pages: same returns and raises."""
        return sum(self._his[lo] - lo + 1 for lo in self._los if lo != IOVA_ANCHOR)

    def get_state(self) -> dict:
        """Reference twin of dmaphys._core.IovaDomain.get_state: same returns and raises."""
        if self._dead:
            return {"ranges": [], "cached_node": None, "cached32_node": None,
                    "max32_alloc_size": self.max32_alloc_size, "rcaches": []}
        return {
            "ranges": self.ranges(),
            "cached_node": self.cached_node,
            "cached32_node": self.cached32_node,
            "max32_alloc_size": self.max32_alloc_size,
            "rcaches": [
                {"cpus": [{"loaded": list(c["loaded"]), "prev": list(c["prev"])} for c in rc["cpus"]],
                 "depot": [list(m) for m in reversed(rc["depot"])],
                 "depot_size": len(rc["depot"]),
                 "work_pending": rc["work_pending"]}
                for rc in self._rcaches
            ],
        }

    def _bench_fast_pairs(self, n, size, limit_pfn, live=0) -> int:
        """Benchmark hook (same contract as the core's)."""
        import time
        held = []
        for _ in range(live):
            pfn = self.alloc_iova_fast(size, limit_pfn, True, 0)
            if pfn == 0:
                raise MemoryError("IOVA space exhausted while filling")
            held.append(pfn)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            pfn = self.alloc_iova_fast(size, limit_pfn, True, 0)
            if pfn == 0:
                raise MemoryError("IOVA space exhausted")
            self.free_iova_fast(pfn, size, 0)
        t1 = time.perf_counter_ns()
        for pfn in held:
            self.free_iova_fast(pfn, size, 0)
        self._flush()
        return t1 - t0

    def __repr__(self) -> str:
        if self._dead:
            return "<dmaphys.reference.IovaDomain (put)>"
        return (f"<dmaphys.reference.IovaDomain granule={self.granule:#x} start_pfn={self.start_pfn:#x} "
                f"ranges={len(self)} ncpus={self.ncpus}>")

