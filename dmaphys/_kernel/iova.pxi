# Models drivers/iommu/iova.c and include/linux/iova.h: the IOVA allocator (the range tree
# with its anchor, cached_node / cached32_node, max32_alloc_size), reserve_iova, and the
# per-CPU range cache (magazines of IOVA_MAG_SIZE pfns, loaded/prev per CPU, the depot and
# its delayed trim work).
#
# Representation: the kernel's rbtree of struct iova becomes a C++ std::map<pfn_lo, pfn_hi>.
# Ranges never overlap, so the map's in-order iteration is the rbtree's, std::next/std::prev
# are rb_next/rb_prev, and a cached node is a map iterator. Iterators stay valid until their
# element is erased, and the kernel always moves both cached nodes off a node before erasing
# it (__cached_rbnode_delete_update), so they never dangle. The one place the kernel changes
# a node's pfn_lo in place (reserve_iova extending a node downwards) re-keys the map element
# and re-points any cached iterator that referred to it, keeping the kernel's pointer identity.
#
# Conventions: the cdef/cpdef C interface follows the kernel for every u64 argument (what the
# kernel would corrupt memory on raises KernelBug; size 0, undefined behaviour in the kernel,
# raises ValueError). The Python-only methods additionally reject input no kernel caller can
# produce (limit below start_pfn, pfn_lo > pfn_hi, ...). WARNs are queued with
# machine.kwarn(); without a machine they are queued on the domain and emitted with
# warnings.warn when the Python-level call returns.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, iova.pxd.

import functools as _functools
import time as _time


cdef u64 IOVA_ANCHOR = 0xFFFFFFFFFFFFFFFF        # the anchor node's pfn_lo == pfn_hi
cdef u64 IOVA_DEPOT_DELAY_NS = 100000000        # IOVA_DEPOT_DELAY = msecs_to_jiffies(100)


def iova_rcache_range():
    """iova_rcache_range(): the largest size in bytes the rcache serves (PAGE_SIZE << 5).

    Models drivers/iommu/iova.c:iova_rcache_range(). Returns an int (bytes). Raises nothing.
    """
    return PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)


cdef inline iova_magazine *iova_magazine_alloc() except NULL:
    # iova_magazine_alloc(): host memory; the kernel's GFP_ATOMIC failure is not modelled
    cdef iova_magazine *mag = <iova_magazine *>malloc(sizeof(iova_magazine))
    if mag == NULL:
        raise MemoryError("iova_magazine_alloc")
    mag.size = 0
    return mag


cdef inline u64 iova_magazine_pop(iova_magazine *mag, u64 limit_pfn) noexcept nogil:
    # iova_magazine_pop(): scan from the top for a pfn <= limit_pfn, swap-remove it
    cdef u64 i = mag.size - 1
    cdef u64 pfn
    while mag.pfns[i] > limit_pfn:
        if i == 0:
            return 0
        i -= 1
    pfn = mag.pfns[i]
    mag.size -= 1
    mag.pfns[i] = mag.pfns[mag.size]
    return pfn


cdef inline bint _magazine_holds(iova_magazine *mag, u64 pfn) noexcept:
    cdef u64 i
    for i in range(mag.size):
        if mag.pfns[i] == pfn:
            return True
    return False


cdef object _iovad_device(IovaDomain iovad):
    """The (first) device whose DMA domain allocates from iovad, for a report; None if none."""
    for d in iovad.machine.devices.values():
        dom = d.domain
        if dom is not None and dom.iova_cookie is not None and dom.iova_cookie.iovad is iovad:
            return d
    return None


cdef list _magazine_list(iova_magazine *mag):
    return [mag.pfns[i] for i in range(mag.size)]


@cython.final
cdef class IovaDomain:
    """struct iova_domain: ``IovaDomain(granule, start_pfn, ncpus=None, machine=None)``.

    Models init_iova_domain() followed by iova_domain_init_rcaches(). ``granule`` is in bytes
    (a power of two <= PAGE_SIZE, else KernelBug as the kernel's BUG_ON); all other
    quantities are in granule-sized pfns. ``ncpus`` is the number of possible/online CPUs
    (default: ``machine.cpus``, or 1 without a machine). With a ``machine`` the depot trim
    work runs on its virtual clock, per-CPU calls default to ``machine.cpu`` and WARNs go
    to its warnings queue.

    Mirrors struct iova_domain (include/linux/iova.h). Raises KernelBug for a bad ``granule``,
    ValueError for a bad ``ncpus`` (or one differing from the machine's), TypeError for a
    non-Machine ``machine`` or non-int arguments, RuntimeError when ``__init__`` runs again on a
    live domain.
    """

    def __cinit__(self):
        self.cpu_rcaches = NULL
        self.dead = True
        self._warn_queue = []

    def __dealloc__(self):
        self._free_iova_rcaches()

    def __init__(self, granule, start_pfn, ncpus=None, machine=None):
        cdef u64 g = _u64(granule, "granule")
        cdef u64 s = _u64(start_pfn, "start_pfn")
        cdef int n
        if self.cpu_rcaches != NULL or not self.rbroot.empty():
            raise RuntimeError("IovaDomain is already initialised")
        if machine is not None and not isinstance(machine, Machine):
            raise TypeError(f"machine must be a dmaphys Machine, not {type(machine).__name__}")
        if ncpus is None:
            n = 1 if machine is None else (<Machine>machine).cpus
        elif isinstance(ncpus, bool) or not isinstance(ncpus, int) or not 1 <= ncpus <= 1024:
            raise ValueError(f"ncpus must be an int in 1..1024, not {ncpus!r}")
        else:
            n = ncpus
        if machine is not None and n != (<Machine>machine).cpus:
            raise ValueError(f"ncpus {n} differs from the machine's {(<Machine>machine).cpus} CPUs")
        # init_iova_domain()
        if g > PAGE_SIZE or g == 0 or (g & (g - 1)) != 0:
            raise KernelBug(f"init_iova_domain: BUG_ON(granule {g:#x} > PAGE_SIZE || "
                            "!is_power_of_2(granule))")
        self.machine = machine
        self.ncpus = n
        self.granule = g
        self.start_pfn = s
        self.shift = __ffs64(g)
        self.dma_32bit_pfn = (<u64>1) << (32 - self.shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self.rbroot.insert(pair[u64, u64](IOVA_ANCHOR, IOVA_ANCHOR))
        self.cached_node = self.rbroot.begin()
        self.cached32_node = self.rbroot.begin()
        self.dead = False
        self._init_rcaches()

    cdef int _init_rcaches(self) except -1:
        # iova_domain_init_rcaches(): an empty loaded and prev magazine per CPU and order
        cdef int i
        self.cpu_rcaches = <iova_cpu_rcache *>calloc(IOVA_RANGE_CACHE_MAX_SIZE * self.ncpus,
                                                     sizeof(iova_cpu_rcache))
        if self.cpu_rcaches == NULL:
            raise MemoryError("iova_domain_init_rcaches")
        for i in range(IOVA_RANGE_CACHE_MAX_SIZE * self.ncpus):
            self.cpu_rcaches[i].loaded = iova_magazine_alloc()
            self.cpu_rcaches[i].prev = iova_magazine_alloc()
        self.depot.resize(IOVA_RANGE_CACHE_MAX_SIZE)
        for i in range(IOVA_RANGE_CACHE_MAX_SIZE):
            self.work_pending[i] = False
        return 0

    cdef void _free_iova_rcaches(self) noexcept:
        # free_iova_rcaches(): magazines only; their pfns are not returned to the tree
        cdef int i
        cdef size_t j
        if self.cpu_rcaches != NULL:
            for i in range(IOVA_RANGE_CACHE_MAX_SIZE * self.ncpus):
                free(self.cpu_rcaches[i].loaded)
                free(self.cpu_rcaches[i].prev)
            free(self.cpu_rcaches)
            self.cpu_rcaches = NULL
        for i in range(<int>self.depot.size()):
            for j in range(self.depot[i].size()):
                free(self.depot[i][j])
            self.depot[i].clear()
            self.work_pending[i] = False         # cancel_delayed_work_sync()
        self.dbg_cached.clear()

    cdef bint _rcache_holds(self, u64 pfn) noexcept:
        # (simulator) pfn sits in a magazine: any order, any CPU's loaded/prev, or the depot
        cdef int order, c
        cdef size_t j
        cdef iova_cpu_rcache *cr
        if self.cpu_rcaches == NULL:
            return False
        for order in range(IOVA_RANGE_CACHE_MAX_SIZE):
            for c in range(self.ncpus):
                cr = self._cpu_rcache(order, c)
                if _magazine_holds(cr.loaded, pfn) or _magazine_holds(cr.prev, pfn):
                    return True
            for j in range(self.depot[order].size()):
                if _magazine_holds(self.depot[order][j], pfn):
                    return True
        return False

    cdef int _debug_free_ok(self, u64 pfn, u64 size) except -1:
        # Not the kernel (dma-debug's part): free_iova_fast() of a pfn that does not start an
        # allocated range, or that sits in the rcache already (freed twice), would hand the
        # range out twice (the kernel caches it silently). Reported and refused: 0; else 1.
        cdef iova_node it = self._private_find_iova(pfn)
        cdef str why
        if it == self.rbroot.end() or deref(it).first != pfn:
            why = "does not start an allocated IOVA range"
        elif self.dbg_cached.count(pfn) and self._rcache_holds(pfn):
            why = "is in the IOVA rcache already (freed twice)"
        else:
            return 1
        self.machine.dma_debug.report_extra(
            _iovad_device(self), "iova_free",
            f"free_iova_fast: IOVA pfn {pfn:#x} ({size} granules) {why}; not freed",
            pfn << self.shift, size << self.shift)
        return 0

    # ---- small helpers (include/linux/iova.h) --------------------------------------------
    cpdef u64 iova_shift(self) noexcept:
        """iova_shift(): log2 of the granule.

        Models include/linux/iova.h:iova_shift(). Returns the shift (int). Raises nothing.
        """
        return self.shift

    cpdef u64 iova_mask(self) noexcept:
        """iova_mask(): granule - 1.

        Models include/linux/iova.h:iova_mask(). Returns the mask (int). Raises nothing.
        """
        return self.granule - 1

    cpdef u64 iova_offset(self, u64 iova) noexcept:
        """iova_offset(): the offset of ``iova`` within its granule.

        Models include/linux/iova.h:iova_offset(). Returns the offset (int). Raises TypeError for a
        non-int argument, OverflowError for one outside 0..2**64-1.
        """
        return iova & (self.granule - 1)

    cpdef u64 iova_align(self, u64 size) noexcept:
        """iova_align(): ``size`` rounded up to a granule multiple.

        Models include/linux/iova.h:iova_align(). Returns the size (int, wrapping modulo 2**64 like
        the kernel's u64). Raises TypeError for a non-int argument, OverflowError for one outside
        0..2**64-1.
        """
        return (size + self.granule - 1) & ~(self.granule - 1)

    cpdef u64 iova_align_down(self, u64 size) noexcept:
        """iova_align_down(): ``size`` rounded down to a granule multiple.

        Models include/linux/iova.h:iova_align_down(). Returns the size (int). Raises TypeError for
        a non-int argument, OverflowError for one outside 0..2**64-1.
        """
        return size & ~(self.granule - 1)

    cpdef u64 iova_pfn(self, u64 iova) noexcept:
        """iova_pfn(): the pfn of byte address ``iova``.

        Models include/linux/iova.h:iova_pfn(). Returns the pfn (int). Raises TypeError for a
        non-int argument, OverflowError for one outside 0..2**64-1.
        """
        return iova >> self.shift

    cpdef u64 iova_dma_addr(self, u64 pfn) noexcept:
        """iova_dma_addr() for a range starting at ``pfn``: its byte address.

        Models include/linux/iova.h:iova_dma_addr(). Returns the address (int, modulo 2**64). Raises
        TypeError for a non-int argument, OverflowError for one outside 0..2**64-1.
        """
        return pfn << self.shift

    cdef inline int _check_alive(self) except -1:
        if self.dead:
            raise KernelBug("IovaDomain used before init_iova_domain() or after put_iova_domain()")
        return 0

    cdef inline int _cpu_arg(self, int cpu) except -2:
        # -1 selects the current CPU: machine.cpu, or CPU 0 without a machine
        if cpu == -1:
            return 0 if self.machine is None else self.machine._cpu
        if cpu < 0 or cpu >= self.ncpus:
            raise ValueError(f"cpu must be in 0..{self.ncpus - 1} (or -1 for the current CPU), not {cpu}")
        return cpu

    cdef void _warn(self, str text):
        if self.machine is not None:
            self.machine.kwarn(KernelWarning, text)
        else:
            self._warn_queue.append(text)

    cdef int _flush_local(self) except -1:
        cdef list q
        if self._warn_queue:
            q = self._warn_queue
            self._warn_queue = []
            for text in q:
                _warnings.warn(text, KernelWarning, stacklevel=3)
        return 0

    cdef int _flush(self) except -1:
        # every def entry point ends here: emit the WARNs of the finished operation
        if self.machine is not None:
            self.machine.flush_warnings()
        return self._flush_local()

    # ---- the range tree ------------------------------------------------------------------
    cdef inline iova_node _anchor(self) noexcept nogil:
        cdef iova_node it = self.rbroot.end()
        dec(it)
        return it

    cdef inline iova_node _get_cached_rbnode(self, u64 limit_pfn) noexcept:
        # __get_cached_rbnode(): limit_pfn is exclusive here
        if limit_pfn <= self.dma_32bit_pfn:
            return self.cached32_node
        return self.cached_node

    cdef inline void _cached_rbnode_insert_update(self, iova_node new) noexcept:
        # __cached_rbnode_insert_update()
        if deref(new).second < self.dma_32bit_pfn:
            self.cached32_node = new
        else:
            self.cached_node = new

    cdef inline void _cached_rbnode_delete_update(self, iova_node free_node) noexcept:
        # __cached_rbnode_delete_update(): runs before the node leaves the tree
        cdef iova_node nxt = free_node
        cdef u64 lo = deref(free_node).first
        cdef u64 hi = deref(free_node).second
        inc(nxt)
        if free_node == self.cached32_node or (hi < self.dma_32bit_pfn and lo >= deref(self.cached32_node).first):
            self.cached32_node = nxt
        if lo < self.dma_32bit_pfn:
            self.max32_alloc_size = self.dma_32bit_pfn
        if lo >= deref(self.cached_node).first:
            self.cached_node = nxt

    cdef inline iova_node _find_limit(self, u64 limit_pfn) noexcept:
        # iova_find_limit(): a start node for the retry pass. The kernel descends the rbtree to
        # the straddling node or the lowest node wholly above limit_pfn; both give the same
        # walk (every node at/above the limit clamps high_pfn to limit_pfn), so this takes the
        # lowest node whose pfn_hi >= limit_pfn.
        cdef iova_node it, p
        if limit_pfn > self.dma_32bit_pfn:
            return self._anchor()
        it = self.rbroot.upper_bound(limit_pfn)
        if it != self.rbroot.begin():
            p = it
            dec(p)
            if deref(p).second >= limit_pfn:
                return p
        return it

    cdef inline iova_node _private_find_iova(self, u64 pfn) noexcept:
        # private_find_iova(): the node containing pfn, or end()
        cdef iova_node it = self.rbroot.upper_bound(pfn)
        if it == self.rbroot.begin():
            return self.rbroot.end()
        dec(it)
        if deref(it).second < pfn:
            return self.rbroot.end()
        return it

    cdef int _remove_iova(self, iova_node node) except -1:
        # remove_iova(): cached-node update, then erase
        if deref(node).second == IOVA_ANCHOR:
            raise KernelBug(f"freeing the anchor node [{deref(node).first:#x}, {IOVA_ANCHOR:#x}] "
                            "would corrupt the IOVA domain")
        self._cached_rbnode_delete_update(node)
        self.rbroot.erase(node)
        return 0

    cdef int _alloc_and_insert_iova_range(self, u64 size, u64 limit_pfn, bint size_aligned,
                                          u64 *pfn_lo) except -1:
        # __alloc_and_insert_iova_range(): limit_pfn exclusive; 0 or -ENOMEM
        cdef u64 align_mask = U64_MAX
        cdef u64 high_pfn = limit_pfn
        cdef u64 low_pfn = self.start_pfn
        cdef u64 new_pfn = 0
        cdef u64 retry_pfn
        cdef iova_node curr, prev, begin = self.rbroot.begin()
        if size_aligned:
            # fls_long(size - 1) is 64 only for sizes above 2^63; x86 masks the shift count
            align_mask <<= (fls64(size - 1) & 63)
        if limit_pfn <= self.dma_32bit_pfn and size >= self.max32_alloc_size:
            return -ENOMEM                       # iova32_full: the fast fail
        curr = self._get_cached_rbnode(limit_pfn)
        retry_pfn = deref(curr).second
        while True:
            # walk down from curr: the highest aligned slot in the first gap that fits
            while True:
                if deref(curr).first < high_pfn:
                    high_pfn = deref(curr).first
                new_pfn = (high_pfn - size) & align_mask
                prev = curr
                if curr == begin:
                    break                        # rb_prev() is NULL
                dec(curr)
                if not (new_pfn <= deref(curr).second and new_pfn >= low_pfn):
                    break
            if high_pfn < size or new_pfn < low_pfn:
                if low_pfn == self.start_pfn and retry_pfn < limit_pfn:
                    # the retry pass: the space between the cached node and the limit
                    high_pfn = limit_pfn
                    low_pfn = retry_pfn + 1
                    curr = self._find_limit(limit_pfn)
                    continue
                self.max32_alloc_size = size
                return -ENOMEM
            break
        # insertion starts at prev in the kernel; the new node sits just below it
        prev = iova_insert_hint(self.rbroot, prev, new_pfn, new_pfn + size - 1)
        self._cached_rbnode_insert_update(prev)
        pfn_lo[0] = new_pfn
        return 0

    cdef int alloc_iova_c(self, u64 size, u64 limit_pfn, bint size_aligned, u64 *pfn_lo) except -1:
        """alloc_iova(): limit_pfn inclusive; 0 and *pfn_lo set, or -ENOMEM (NULL in the kernel)."""
        self._check_alive()
        if size == 0:
            raise ValueError("alloc_iova: size must be at least 1 granule")
        return self._alloc_and_insert_iova_range(size, limit_pfn + 1, size_aligned, pfn_lo)

    cdef bint find_iova_c(self, u64 pfn, u64 *pfn_lo, u64 *pfn_hi) noexcept:
        """find_iova(): true and the node's bounds if a node contains pfn."""
        cdef iova_node it
        if self.dead:
            return False
        it = self._private_find_iova(pfn)
        if it == self.rbroot.end():
            return False
        pfn_lo[0] = deref(it).first
        pfn_hi[0] = deref(it).second
        return True

    cdef int free_iova_c(self, u64 pfn) except -1:
        """free_iova(): free the node containing pfn; nothing if there is none."""
        cdef iova_node it
        self._check_alive()
        it = self._private_find_iova(pfn)
        if it != self.rbroot.end():
            self._remove_iova(it)
        return 0

    cdef int _reserve_iova(self, u64 pfn_lo, u64 pfn_hi, u64 *out_lo, u64 *out_hi) except -1:
        # reserve_iova(): 0 with the resulting node's bounds, or -EINVAL where the kernel
        # WARNs and returns NULL
        cdef iova_node it, nxt
        cdef bint overlap = False, was_cached, was_cached32
        cdef u64 node_hi
        self._check_alive()
        if pfn_lo > pfn_hi:
            raise ValueError(f"reserve_iova: pfn_lo {pfn_lo:#x} is above pfn_hi {pfn_hi:#x}")
        if (pfn_hi | pfn_lo) > (U64_MAX >> self.shift):
            self._warn(f"WARNING: drivers/iommu/iova.c: reserve_iova: WARN_ON((pfn_hi | pfn_lo) > "
                       f"(ULLONG_MAX >> iova_shift(iovad))): pfn_lo {pfn_lo:#x} pfn_hi {pfn_hi:#x}")
            return -EINVAL
        # the kernel walks from rb_first(); nodes wholly below pfn_lo never overlap, so start
        # at the first node whose pfn_hi >= pfn_lo
        it = self.rbroot.upper_bound(pfn_lo)
        if it != self.rbroot.begin():
            nxt = it
            dec(nxt)
            if deref(nxt).second >= pfn_lo:
                it = nxt
        while it != self.rbroot.end():
            if pfn_lo <= deref(it).second and pfn_hi >= deref(it).first:
                # __adjust_overlap_range(): extend the existing node down, skip past it
                if pfn_lo < deref(it).first:
                    node_hi = deref(it).second
                    was_cached = it == self.cached_node
                    was_cached32 = it == self.cached32_node
                    nxt = it
                    inc(nxt)
                    self.rbroot.erase(it)
                    it = iova_insert_hint(self.rbroot, nxt, pfn_lo, node_hi)
                    if was_cached:
                        self.cached_node = it
                    if was_cached32:
                        self.cached32_node = it
                if pfn_hi > deref(it).second:
                    pfn_lo = deref(it).second + 1
                if pfn_lo >= deref(it).first and pfn_hi <= deref(it).second:
                    out_lo[0] = deref(it).first
                    out_hi[0] = deref(it).second
                    return 0
                overlap = True
            elif overlap or deref(it).first > pfn_hi:
                break                            # no later node can overlap
            inc(it)
        # __insert_new_range()
        self.rbroot.insert(pair[u64, u64](pfn_lo, pfn_hi))
        out_lo[0] = pfn_lo
        out_hi[0] = pfn_hi
        return 0

    cdef int reserve_iova_c(self, u64 pfn_lo, u64 pfn_hi) except -1:
        """reserve_iova(): 0, or -EINVAL where the kernel WARNs and returns NULL."""
        cdef u64 lo, hi
        return self._reserve_iova(pfn_lo, pfn_hi, &lo, &hi)

    # ---- the rcache ----------------------------------------------------------------------
    cdef inline iova_cpu_rcache *_cpu_rcache(self, int order, int cpu) noexcept nogil:
        return &self.cpu_rcaches[order * self.ncpus + cpu]

    cdef inline iova_magazine *_depot_pop(self, int order) noexcept nogil:
        # iova_depot_pop(): the head; its size field is restored to IOVA_MAG_SIZE
        cdef iova_magazine *mag = self.depot[order].back()
        self.depot[order].pop_back()
        mag.size = IOVA_MAG_SIZE
        return mag

    cdef int _schedule_depot_work(self, int order) except -1:
        # schedule_delayed_work(&rcache->work, IOVA_DEPOT_DELAY): nothing if already pending
        if self.work_pending[order]:
            return 0
        self.work_pending[order] = True
        self.work_gen += 1
        self.work_seq[order] = self.work_gen
        if self.machine is not None:
            self.machine.add_timer(IOVA_DEPOT_DELAY_NS,
                                   _functools.partial(self._depot_timer, order, self.work_seq[order]))
        return 0

    def _depot_timer(self, int order, u64 seq):
        # timer callback: a cancelled or superseded work item does nothing
        if self.dead or not self.work_pending[order] or seq != self.work_seq[order]:
            return
        self._iova_depot_work_func(order)

    cdef int _iova_depot_work_func(self, int order) except -1:
        # iova_depot_work_func(): trim one magazine while the depot exceeds the online CPUs
        cdef iova_magazine *mag
        self.work_pending[order] = False
        if self.depot[order].size() > <size_t>self.ncpus:
            mag = self._depot_pop(order)
            try:
                self._iova_magazine_free_pfns(mag)
            finally:
                free(mag)
            self._schedule_depot_work(order)
        return 0

    cdef int _iova_magazine_free_pfns(self, iova_magazine *mag) except -1:
        # iova_magazine_free_pfns(): return every pfn to the tree, in index order
        cdef u64 i
        cdef iova_node it
        for i in range(mag.size):
            it = self._private_find_iova(mag.pfns[i])
            if it == self.rbroot.end():
                self._warn(f"WARNING: drivers/iommu/iova.c: iova_magazine_free_pfns: WARN_ON(!iova): "
                           f"cached pfn {mag.pfns[i]:#x} is not in the IOVA tree")
                continue
            self._remove_iova(it)
        if not self.dbg_cached.empty():
            for i in range(mag.size):
                self.dbg_cached.erase(mag.pfns[i])
        mag.size = 0
        return 0

    cdef int _iova_rcache_insert(self, u64 pfn, u64 size, int cpu) except -1:
        # iova_rcache_insert() + __iova_rcache_insert(): 1 if cached, 0 if not cacheable
        cdef int order = order_base_2(size)
        cdef iova_cpu_rcache *cr
        cdef iova_magazine *mag
        if order >= IOVA_RANGE_CACHE_MAX_SIZE:
            return 0
        cr = self._cpu_rcache(order, cpu)
        if cr.loaded.size == IOVA_MAG_SIZE:
            if cr.prev.size != IOVA_MAG_SIZE:
                mag = cr.loaded
                cr.loaded = cr.prev
                cr.prev = mag
            else:
                mag = iova_magazine_alloc()
                self.depot[order].push_back(cr.loaded)       # iova_depot_push()
                cr.loaded = mag
                self._schedule_depot_work(order)
        cr.loaded.pfns[cr.loaded.size] = pfn                 # iova_magazine_push()
        cr.loaded.size += 1
        return 1

    cdef inline u64 _iova_rcache_get(self, u64 size, u64 limit_pfn, int cpu) noexcept:
        # iova_rcache_get() + __iova_rcache_get(): limit_pfn exclusive; 0 on a miss
        cdef int order = order_base_2(size)
        cdef iova_cpu_rcache *cr
        cdef iova_magazine *mag
        cdef u64 pfn
        if order >= IOVA_RANGE_CACHE_MAX_SIZE:
            return 0
        cr = self._cpu_rcache(order, cpu)
        if cr.loaded.size == 0:
            if cr.prev.size != 0:
                mag = cr.loaded
                cr.loaded = cr.prev
                cr.prev = mag
            elif not self.depot[order].empty():
                free(cr.loaded)
                cr.loaded = self._depot_pop(order)
            else:
                return 0
        pfn = iova_magazine_pop(cr.loaded, limit_pfn - size)
        if not self.dbg_cached.empty():
            self.dbg_cached.erase(pfn)
        return pfn

    cdef int _free_cpu_cached_iovas(self, int cpu) except -1:
        # free_cpu_cached_iovas()
        cdef int order
        cdef iova_cpu_rcache *cr
        for order in range(IOVA_RANGE_CACHE_MAX_SIZE):
            cr = self._cpu_rcache(order, cpu)
            self._iova_magazine_free_pfns(cr.loaded)
            self._iova_magazine_free_pfns(cr.prev)
        return 0

    cdef int _free_global_cached_iovas(self) except -1:
        # free_global_cached_iovas(): empty every depot, head first
        cdef int order
        cdef iova_magazine *mag
        for order in range(IOVA_RANGE_CACHE_MAX_SIZE):
            while not self.depot[order].empty():
                mag = self._depot_pop(order)
                try:
                    self._iova_magazine_free_pfns(mag)
                finally:
                    free(mag)
        return 0

    # ---- the kernel API ------------------------------------------------------------------
    cpdef u64 alloc_iova_fast(self, u64 size, u64 limit_pfn, bint flush_rcache=True,
                              int cpu=-1) except? 0xFFFFFFFFFFFFFFFF:
        """alloc_iova_fast(size, limit_pfn, flush_rcache=True, cpu=-1) -> pfn, or 0 on failure.

        Models iova.c:alloc_iova_fast(). ``limit_pfn`` is inclusive. Sizes below 32 granules
        are rounded up to a power of two; the start is aligned to the (rounded) size. The
        rcache of ``cpu`` (-1: the machine's current CPU) is tried first; on a tree failure
        with ``flush_rcache`` every CPU's cached ranges and the depots are freed and the tree
        is tried once more. Follows the kernel for any u64 input except size 0 (ValueError).
        With a machine attached, WARNs are left queued for the caller's entry point.

        Returns the first pfn of the range, or 0 when no space is left. Raises ValueError for
        ``size`` 0 or a ``cpu`` out of range, TypeError / OverflowError for arguments that are no
        u64 / int, KernelBug for a domain used after put_iova_domain().
        """
        cdef u64 pfn = 0
        cdef int c
        self._check_alive()
        cpu = self._cpu_arg(cpu)
        if size == 0:
            raise ValueError("alloc_iova_fast: size must be at least 1 granule")
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = roundup_pow_of_two(size)
        pfn = self._iova_rcache_get(size, limit_pfn + 1, cpu)
        if pfn:
            return pfn
        while self._alloc_and_insert_iova_range(size, limit_pfn + 1, True, &pfn) != 0:
            pfn = 0
            if not flush_rcache:
                break
            flush_rcache = False                 # replenish by flushing the rcaches, once
            for c in range(self.ncpus):
                self._free_cpu_cached_iovas(c)
            self._free_global_cached_iovas()
        if self.machine is None and self._warn_queue:
            self._flush_local()
        return pfn

    cpdef int free_iova_fast(self, u64 pfn, u64 size, int cpu=-1) except -1:
        """free_iova_fast(pfn, size, cpu=-1) -> 0: cache the range in ``cpu``'s rcache, else free it.

        Models iova.c:free_iova_fast(). The kernel does not check the pfn: caching one that is
        not allocated, or twice, hands the range out twice. Here, with a machine whose dma-debug
        is on, such a free is reported (``m.dma_debug.errors``, kind "iova_free", and a
        DmaDebugWarning queued for the caller's entry point) and not done; without dma-debug it
        is the kernel's. Freeing into the anchor raises KernelBug.

        Returns 0. Raises KernelBug for a pfn in the anchor node or a domain used after
        put_iova_domain(), ValueError for ``size`` 0 or a ``cpu`` out of range, TypeError /
        OverflowError for arguments that are no u64 / int.
        """
        self._check_alive()
        cpu = self._cpu_arg(cpu)
        if size == 0:
            raise ValueError("free_iova_fast: size must be at least 1 granule")
        if pfn >= deref(self._anchor()).first:
            raise KernelBug(f"free_iova_fast: pfn {pfn:#x} lies in the anchor node")
        if self.machine is not None and self.machine.dma_debug.enabled:
            if not self._debug_free_ok(pfn, size):
                return 0
            if self._iova_rcache_insert(pfn, size, cpu):
                self.dbg_cached.insert(pfn)
                return 0
        elif self._iova_rcache_insert(pfn, size, cpu):
            return 0
        self.free_iova_c(pfn)
        return 0

    def alloc_iova(self, size, limit_pfn, size_aligned=True):
        """alloc_iova(size, limit_pfn, size_aligned=True) -> pfn_lo, or 0 when no space is left.

        Models iova.c:alloc_iova() (no rcache). ``limit_pfn`` is the highest usable pfn
        (inclusive). The kernel returns the new struct iova or NULL; this returns its pfn_lo
        or 0 (0 is ambiguous only for a domain with start_pfn 0: use find_iova(0) there).

        Returns that pfn_lo or 0. Raises ValueError for ``size`` 0, TypeError / ValueError for
        non-int or out-of-range arguments, KernelBug for a domain used after put_iova_domain().
        """
        cdef u64 s = _u64(size, "size")
        cdef u64 lim = _u64(limit_pfn, "limit_pfn")
        cdef u64 pfn = 0
        self._check_alive()
        if s == 0:
            raise ValueError("alloc_iova: size must be at least 1 granule")
        # like the kernel, a limit below start_pfn (or the all-ones limit, whose + 1 wraps to 0)
        # is no error: the search fails and sets max32_alloc_size, failing later 32-bit calls
        if self.alloc_iova_c(s, lim, bool(size_aligned), &pfn) != 0:
            pfn = 0
        self._flush()
        return pfn

    def free_iova(self, pfn):
        """free_iova(pfn): free the range containing ``pfn`` (nothing if none).

        Models drivers/iommu/iova.c:free_iova(). Returns None. Raises KernelBug for a domain
        used after put_iova_domain(), TypeError / ValueError for a non-int or out-of-range
        ``pfn``.
        """
        cdef u64 p = _u64(pfn, "pfn")
        self.free_iova_c(p)
        self._flush()

    def find_iova(self, pfn):
        """find_iova(pfn) -> (pfn_lo, pfn_hi) of the range containing ``pfn``, or None.

        Models drivers/iommu/iova.c:find_iova() (the kernel returns the struct iova or NULL).
        Returns the tuple or None. Raises KernelBug for a domain used after put_iova_domain(),
        TypeError / ValueError for a non-int or out-of-range ``pfn``.
        """
        cdef u64 p = _u64(pfn, "pfn")
        cdef u64 lo, hi
        self._check_alive()
        if not self.find_iova_c(p, &lo, &hi):
            return None
        return (lo, hi)

    def reserve_iova(self, pfn_lo, pfn_hi):
        """reserve_iova(pfn_lo, pfn_hi) -> (pfn_lo, pfn_hi) of the resulting node, or None.

        Models iova.c:reserve_iova() (bounds inclusive): overlapped nodes are extended down
        and the uncovered rest is inserted as a new node. Returns None (after a KernelWarning)
        where the kernel WARNs and returns NULL.

        Raises ValueError for ``pfn_lo > pfn_hi`` or out-of-range values, TypeError for non-ints,
        KernelBug for a domain used after put_iova_domain().
        """
        cdef u64 lo = _u64(pfn_lo, "pfn_lo")
        cdef u64 hi = _u64(pfn_hi, "pfn_hi")
        cdef u64 rlo, rhi
        cdef int ret = self._reserve_iova(lo, hi, &rlo, &rhi)
        self._flush()
        return None if ret else (rlo, rhi)

    def free_cpu_cached_iovas(self, cpu):
        """free_cpu_cached_iovas(cpu): return ``cpu``'s loaded and prev magazines' pfns to the tree.

        Models drivers/iommu/iova.c:free_cpu_cached_iovas(). Returns None. Raises ValueError for a
        ``cpu`` that is not an int in 0..ncpus-1, KernelBug for a domain used after
        put_iova_domain().
        """
        cdef int c
        self._check_alive()
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.ncpus:
            raise ValueError(f"cpu must be in 0..{self.ncpus - 1}, not {cpu!r}")
        c = cpu
        self._free_cpu_cached_iovas(c)
        self._flush()

    def free_global_cached_iovas(self):
        """free_global_cached_iovas(): return every depot magazine's pfns to the tree.

        Models drivers/iommu/iova.c:free_global_cached_iovas(). Returns None. Raises KernelBug for a
        domain used after put_iova_domain().
        """
        self._check_alive()
        self._free_global_cached_iovas()
        self._flush()

    def iova_depot_work_func(self, order):
        """iova_depot_work_func(order): run the depot trim work of rcache ``order`` now.

        The machine's timer runs it 100 ms after a full magazine is pushed to the depot;
        without a machine call this to stand in for the workqueue.

        Models drivers/iommu/iova.c:iova_depot_work_func(). Returns None. Raises ValueError for an
        ``order`` that is not an int in 0..5, KernelBug for a domain used after put_iova_domain().
        """
        self._check_alive()
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order < IOVA_RANGE_CACHE_MAX_SIZE:
            raise ValueError(f"order must be in 0..{IOVA_RANGE_CACHE_MAX_SIZE - 1}, not {order!r}")
        self._iova_depot_work_func(order)
        self._flush()

    cdef int put_iova_domain_c(self) except -1:
        """put_iova_domain(): free the rcaches (cancelling the depot work) and every range."""
        self._check_alive()
        self._free_iova_rcaches()
        self.rbroot.clear()
        self.dead = True
        return 0

    def put_iova_domain(self):
        """put_iova_domain(): free the rcaches (cancelling the depot work) and every range.

        The domain can be set up again with ``__init__`` (as the kernel may re-run
        init_iova_domain on the struct); any other use raises KernelBug (use after free).

        Models drivers/iommu/iova.c:put_iova_domain(). Returns None. Raises KernelBug when the
        domain was already put (or never initialised).
        """
        self.put_iova_domain_c()
        self._flush()

    # ---- introspection -------------------------------------------------------------------
    @property
    def depot_size(self):
        """rcaches[order].depot_size for order 0..5 (a tuple).

        Empty after put_iova_domain().
        """
        if self.cpu_rcaches == NULL:
            return ()
        return tuple(self.depot[i].size() for i in range(IOVA_RANGE_CACHE_MAX_SIZE))

    def __len__(self):
        """The number of ranges in the tree (allocated, cached and reserved), anchor excluded."""
        cdef size_t n = self.rbroot.size()
        if n and deref(self._anchor()).first == IOVA_ANCHOR:
            n -= 1
        return n

    def ranges(self):
        """Sorted [(pfn_lo, pfn_hi)] of every node except the anchor (reserved, cached included).

        Simulator-only introspection (walks the rbtree). Returns a list of int pairs. Raises
        nothing.
        """
        cdef list out = []
        cdef iova_node it = self.rbroot.begin()
        while it != self.rbroot.end():
            if deref(it).first != IOVA_ANCHOR:
                out.append((deref(it).first, deref(it).second))
            inc(it)
        return out

    def range_pages(self):
        """range_pages() -> the granules the ranges of ranges() cover, summed.

        Simulator-only introspection (walks the rbtree like ranges(), without building the list:
        what ``dmaphys stress`` samples as IOVA pages in use). Returns the int. Raises nothing.
        """
        cdef u64 total = 0
        cdef iova_node it = self.rbroot.begin()
        while it != self.rbroot.end():
            if deref(it).first != IOVA_ANCHOR:
                total += deref(it).second - deref(it).first + 1
            inc(it)
        return total

    def get_state(self):
        """A plain-dict snapshot, with the same schema as the reference model's.

        Simulator-only (differential tests). Returns the dict (empty lists after put_iova_domain()).
        Raises nothing.
        """
        cdef int order, c
        cdef iova_cpu_rcache *cr
        cdef list rcaches = []
        if self.dead:
            return {"ranges": [], "cached_node": None, "cached32_node": None,
                    "max32_alloc_size": self.max32_alloc_size, "rcaches": []}
        for order in range(IOVA_RANGE_CACHE_MAX_SIZE):
            cpus = []
            for c in range(self.ncpus):
                cr = self._cpu_rcache(order, c)
                cpus.append({"loaded": _magazine_list(cr.loaded), "prev": _magazine_list(cr.prev)})
            rcaches.append({
                "cpus": cpus,
                "depot": [_magazine_list(self.depot[order][i])
                          for i in range(<int>self.depot[order].size() - 1, -1, -1)],
                "depot_size": self.depot[order].size(),
                "work_pending": bool(self.work_pending[order]),
            })
        return {"ranges": self.ranges(), "cached_node": deref(self.cached_node).first,
                "cached32_node": deref(self.cached32_node).first,
                "max32_alloc_size": self.max32_alloc_size, "rcaches": rcaches}

    def _bench_fast_pairs(self, n, size, limit_pfn, live=0):
        """Benchmark hook: ``live`` allocations kept, then ``n`` alloc_iova_fast + free_iova_fast
        pairs in a C loop (CPU 0); returns the pairs' total time in ns. The live ranges are freed."""
        cdef u64 cnt = _u64(n, "n"), sz = _u64(size, "size"), lim = _u64(limit_pfn, "limit_pfn")
        cdef u64 nlive = _u64(live, "live"), i, pfn
        cdef vector[u64] held
        self._check_alive()
        if sz == 0:
            raise ValueError("size must be at least 1")
        for i in range(nlive):
            pfn = self.alloc_iova_fast(sz, lim, True, 0)
            if pfn == 0:
                raise MemoryError("IOVA space exhausted while filling")
            held.push_back(pfn)
        t0 = _time.perf_counter_ns()
        for i in range(cnt):
            pfn = self.alloc_iova_fast(sz, lim, True, 0)
            if pfn == 0:
                raise MemoryError("IOVA space exhausted")
            self.free_iova_fast(pfn, sz, 0)
        t1 = _time.perf_counter_ns()
        for i in range(held.size()):
            self.free_iova_fast(held[i], sz, 0)
        self._flush()
        return t1 - t0

    def __repr__(self):
        if self.dead:
            return "<dmaphys.IovaDomain (put)>"
        return (f"<dmaphys.IovaDomain granule={self.granule:#x} start_pfn={self.start_pfn:#x} "
                f"ranges={len(self)} ncpus={self.ncpus}>")



# ---- GIL-free rcache paths (dma_iommu.pxi's nogil fast map/unmap) ------------------------------
# One-granule ranges (order 0) only. Each either does exactly what the full function would do, or
# reports that it cannot (a push that would arm the depot work: that schedules a timer on the
# machine) having changed nothing, and the caller runs the full function with the GIL.
cdef inline bint iova_rcache_fast_ok(IovaDomain iovad, int cpu) noexcept nogil:
    """The rcache paths below may run for ``cpu`` (checked once per run of them: nothing they
    do changes it): a live domain with rcaches, a CPU it has."""
    return not iovad.dead and iovad.cpu_rcaches != NULL and 0 <= cpu < iovad.ncpus


cdef inline iova_magazine *iova_rcache_peek(IovaDomain iovad, u64 limit_pfn, int cpu, u64 *idx) noexcept nogil:
    """What alloc_iova_fast(iovad, 1, limit_pfn, ..., cpu) would pop from the rcache, found
    without changing anything: the magazine (loaded; or prev, which __iova_rcache_get swaps in
    first; or the depot's head, which replaces an empty loaded one) and the index
    iova_magazine_pop() takes; NULL where the rcache would miss. (iova_rcache_fast_ok() holds.)"""
    cdef iova_cpu_rcache *cr
    cdef iova_magazine *mag
    cdef u64 i, size
    cr = iovad._cpu_rcache(0, cpu)
    if cr.loaded.size != 0:
        mag = cr.loaded
        size = mag.size
    elif cr.prev.size != 0:
        mag = cr.prev
        size = mag.size
    elif not iovad.depot[0].empty():
        mag = iovad.depot[0].back()
        size = IOVA_MAG_SIZE                      # iova_depot_pop() restores it
    else:
        return NULL
    i = size - 1
    while mag.pfns[i] > limit_pfn:
        if i == 0:
            return NULL
        i -= 1
    idx[0] = i
    return mag


cdef inline u64 iova_rcache_commit(IovaDomain iovad, iova_magazine *mag, u64 i, int cpu) noexcept nogil:
    """The pop iova_rcache_peek() found: swap prev in, or take the depot's head in place of the
    empty loaded magazine (freeing it), then iova_magazine_pop()."""
    cdef iova_cpu_rcache *cr = iovad._cpu_rcache(0, cpu)
    cdef u64 pfn
    if mag == cr.prev:
        cr.prev = cr.loaded
        cr.loaded = mag
    elif mag != cr.loaded:
        free(cr.loaded)
        cr.loaded = iovad._depot_pop(0)
    pfn = mag.pfns[i]
    mag.size -= 1
    mag.pfns[i] = mag.pfns[mag.size]
    return pfn


cdef inline bint iova_rcache_insert_ok(IovaDomain iovad, u64 pfn, int cpu, u64 anchor_lo) noexcept nogil:
    """free_iova_fast(iovad, pfn, 1, cpu) raises nothing and schedules nothing: it stays in the
    CPU's magazines, or pushes a full one to the depot whose work is already pending.
    ``anchor_lo``: deref(iovad._anchor()).first (the caller's, for a run of calls that do not
    change the tree; iova_rcache_fast_ok() holds)."""
    cdef iova_cpu_rcache *cr
    if pfn >= anchor_lo:
        return False
    cr = iovad._cpu_rcache(0, cpu)
    return cr.loaded.size != IOVA_MAG_SIZE or cr.prev.size != IOVA_MAG_SIZE or iovad.work_pending[0]


cdef inline int iova_rcache_insert_fast(IovaDomain iovad, u64 pfn, int cpu, iova_magazine *spare) noexcept nogil:
    """free_iova_fast(iovad, pfn, 1, cpu) where iova_rcache_insert_ok() said so. ``spare``: a
    fresh magazine (iova_magazine_alloc) for a depot push, freed when not needed; returns 1."""
    cdef iova_cpu_rcache *cr = iovad._cpu_rcache(0, cpu)
    cdef iova_magazine *mag
    if cr.loaded.size == IOVA_MAG_SIZE:
        if cr.prev.size != IOVA_MAG_SIZE:
            mag = cr.loaded
            cr.loaded = cr.prev
            cr.prev = mag
        else:                                     # iova_depot_push(); the work is pending already
            iovad.depot[0].push_back(cr.loaded)
            cr.loaded = spare
            spare = NULL
    cr.loaded.pfns[cr.loaded.size] = pfn
    cr.loaded.size += 1
    if spare != NULL:
        free(spare)
    return 1


cdef inline bint iova_rcache_needs_magazine(IovaDomain iovad, int cpu) noexcept nogil:
    """The insert will push to the depot and needs a fresh magazine."""
    cdef iova_cpu_rcache *cr = iovad._cpu_rcache(0, cpu)
    return cr.loaded.size == IOVA_MAG_SIZE and cr.prev.size == IOVA_MAG_SIZE

__all__ += ["IovaDomain", "iova_rcache_range"]
