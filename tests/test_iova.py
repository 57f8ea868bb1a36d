"""drivers/iommu/iova.c behaviour on both backends: the range tree, cached nodes,
max32_alloc_size, reserve_iova, the per-CPU rcache (magazines, depot, timed trim) and the
flush-and-retry path, plus a differential test core vs reference."""

import random
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import IOVA_MAG_SIZE, KernelBug, KernelWarning

LIM32 = 0xFFFFF                 # DMA_BIT_MASK(32) >> 12: the inclusive 32-bit limit pfn
D32 = 0x100000                  # dma_32bit_pfn for a 4 KiB granule
ANCHOR = (1 << 64) - 1
MS = 1_000_000


def dom(impl, start_pfn=1, granule=4096, **kw):
    return impl.IovaDomain(granule, start_pfn, **kw)


def mach(impl, cpus=1):
    return impl.Machine(cpus=cpus, swiotlb=0, dma_debug=False)


# ---- init_iova_domain ----------------------------------------------------------------------
def test_init(impl):
    d = dom(impl)
    assert (d.granule, d.start_pfn, d.dma_32bit_pfn, d.max32_alloc_size) == (4096, 1, D32, D32)
    assert d.ranges() == [] and len(d) == 0 and d.range_pages() == 0
    s = d.get_state()
    assert s["cached_node"] == s["cached32_node"] == ANCHOR
    assert len(s["rcaches"]) == 6 and s["rcaches"][0]["cpus"] == [{"loaded": [], "prev": []}]
    assert d.depot_size == (0,) * 6
    assert d.iova_shift() == 12 and d.iova_mask() == 0xFFF
    assert d.iova_offset(0x12345) == 0x345 and d.iova_align(0x1001) == 0x2000
    assert d.iova_align_down(0x1FFF) == 0x1000 and d.iova_pfn(0x5000) == 5 and d.iova_dma_addr(5) == 0x5000
    d512 = dom(impl, granule=512)
    assert d512.iova_shift() == 9 and d512.dma_32bit_pfn == 1 << 23 and d512.max32_alloc_size == 1 << 23
    assert impl.iova_rcache_range() == 128 << 10


@pytest.mark.parametrize("granule", [8192, 3, 0, 4095])
def test_init_bug_on_bad_granule(impl, granule):
    with pytest.raises(KernelBug, match="BUG_ON"):
        dom(impl, granule=granule)


def test_init_bad_python_input(impl):
    with pytest.raises(TypeError):
        impl.IovaDomain("4096", 1)
    with pytest.raises(ValueError):
        impl.IovaDomain(4096, -1)
    with pytest.raises(ValueError):
        impl.IovaDomain(4096, 1, ncpus=0)
    m = mach(impl, cpus=2)
    assert impl.IovaDomain(4096, 1, machine=m).ncpus == 2
    with pytest.raises(ValueError, match="differs"):
        impl.IovaDomain(4096, 1, ncpus=3, machine=m)


# ---- __alloc_and_insert_iova_range ---------------------------------------------------------
def test_top_down_below_the_limit(impl):
    d = dom(impl)
    assert [d.alloc_iova(1, LIM32) for _ in range(4)] == [0xFFFFF, 0xFFFFE, 0xFFFFD, 0xFFFFC]
    assert d.get_state()["cached32_node"] == 0xFFFFC
    assert d.get_state()["cached_node"] == ANCHOR
    # a limit above 4 GiB walks from cached_node (the anchor), from the top of the limit
    lim48 = (1 << 36) - 1
    assert d.alloc_iova(1, lim48) == lim48
    assert d.alloc_iova(2, lim48) == lim48 - 3       # 2-aligned: (lim48 - 2) & ~1
    s = d.get_state()
    assert (s["cached_node"], s["cached32_node"]) == (lim48 - 3, 0xFFFFC)
    assert d.find_iova(lim48 - 2) == (lim48 - 3, lim48 - 2)


def test_dma_32bit_pfn_boundaries(impl):
    d = dom(impl)
    assert d.alloc_iova(1, D32) == D32                      # limit_pfn + 1 > dma_32bit_pfn
    s = d.get_state()                                       # pfn_hi == dma_32bit_pfn: 64-bit cache
    assert (s["cached_node"], s["cached32_node"]) == (D32, ANCHOR)
    assert d.alloc_iova(1, D32) == D32 - 1                  # walks from cached_node
    s = d.get_state()                                       # pfn_hi < dma_32bit_pfn: 32-bit cache
    assert (s["cached_node"], s["cached32_node"]) == (D32, D32 - 1)
    assert d.alloc_iova(1, LIM32) == D32 - 2                # limit_pfn + 1 == dma_32bit_pfn


def test_size_alignment(impl):
    d = dom(impl)
    assert d.alloc_iova(3, LIM32) == 0xFFFFC               # aligned to roundup_pow_of_two(3) = 4
    assert d.find_iova(0xFFFFE) == (0xFFFFC, 0xFFFFE)       # 3 pages: 0xFFFFF stays free
    assert d.alloc_iova(1, LIM32) == 0xFFFFB                # next-fit below the cached node
    assert d.alloc_iova(3, LIM32, size_aligned=False) == 0xFFFF8
    assert d.alloc_iova(5, LIM32) == 0xFFFF0                # aligned to 8: (0xFFFF8 - 5) & ~7
    assert d.alloc_iova(33, LIM32) == 0xFFFC0               # aligned to 64: (0xFFFF0 - 33) & ~63
    # alloc_iova_fast rounds sizes below 32 up to a power of two, 33 is left alone
    assert d.alloc_iova_fast(3, LIM32) == 0xFFFBC
    assert d.find_iova(0xFFFBC) == (0xFFFBC, 0xFFFBF)
    assert d.alloc_iova_fast(33, LIM32) == 0xFFF80
    assert d.find_iova(0xFFF80) == (0xFFF80, 0xFFFA0)


def test_next_fit_below_the_cached_node(impl):
    # a low-limit allocation moves cached32_node down; the next 32-bit request starts there
    d = dom(impl)
    assert d.alloc_iova(1, 0xFFF) == 0xFFF
    assert d.alloc_iova(1, LIM32) == 0xFFE
    assert d.get_state()["cached32_node"] == 0xFFE


def test_retry_pass_above_the_cached_node(impl):
    d = dom(impl, start_pfn=0xFF0)
    assert d.alloc_iova(1, 0xFF0) == 0xFF0                  # cached32_node = [0xFF0]
    # first pass from [0xFF0] finds nothing above start_pfn; the retry covers (0xFF0, limit]
    assert d.alloc_iova(1, LIM32) == 0xFFFFF
    assert d.max32_alloc_size == D32
    # a retry that fails too sets max32_alloc_size
    d2 = dom(impl, start_pfn=0xFF0)
    assert d2.alloc_iova(1, 0xFF0) == 0xFF0
    assert d2.alloc_iova(2, 0xFF1) == 0
    assert d2.max32_alloc_size == 2


def test_retry_from_a_node_straddling_the_limit(impl):
    d = dom(impl, start_pfn=0x100)
    d.reserve_iova(0x1F0, 0x20F)                            # straddles the limit 0x1FF
    assert d.alloc_iova(1, 0x100) == 0x100                  # cached32_node at the bottom
    assert d.alloc_iova(4, 0x1FF) == 0x1EC                  # retry: highest fit below [0x1F0..]
    assert d.alloc_iova(1, 0x1FF) == 0x1EB


def test_max32_alloc_size_fast_fail_and_reset(impl):
    d = dom(impl, start_pfn=0xFFFF0)                        # 16 pfns below 4 GiB
    pfns = [d.alloc_iova(1, LIM32) for _ in range(16)]
    assert pfns == list(range(0xFFFFF, 0xFFFEF, -1))
    assert d.alloc_iova(1, LIM32) == 0 and d.max32_alloc_size == 1
    before = d.get_state()
    assert d.alloc_iova(2, LIM32) == 0                      # size >= max32_alloc_size: no walk
    assert d.get_state() == before
    assert d.alloc_iova(1, (1 << 36) - 1) == (1 << 36) - 1  # a 64-bit limit is not fast-failed
    assert d.max32_alloc_size == 1
    d.free_iova((1 << 36) - 1)                              # pfn_lo above 4 GiB: no reset
    assert d.max32_alloc_size == 1
    d.free_iova(0xFFFF8)                                    # pfn_lo below 4 GiB: reset
    assert d.max32_alloc_size == D32
    assert d.alloc_iova(1, LIM32) == 0xFFFF8
    # any final failure sets max32_alloc_size, a 64-bit one too
    assert d.alloc_iova(1 << 40, (1 << 36) - 1) == 0
    assert d.max32_alloc_size == 1 << 40


# ---- cached-node updates on free -----------------------------------------------------------
def test_cached32_node_after_frees(impl):
    d = dom(impl)
    for _ in range(6):
        d.alloc_iova(1, LIM32)                              # 0xFFFFF .. 0xFFFFA
    assert d.get_state()["cached32_node"] == 0xFFFFA
    d.free_iova(0xFFFFA)                                    # the cached node: rb_next
    assert d.get_state()["cached32_node"] == 0xFFFFB
    d.free_iova(0xFFFFD)                                    # above it: rb_next of the freed one
    assert d.get_state()["cached32_node"] == 0xFFFFE
    d.free_iova(0xFFFFB)                                    # below it: unchanged
    assert d.get_state()["cached32_node"] == 0xFFFFE
    assert d.alloc_iova(1, LIM32) == 0xFFFFD                # the first hole below the cache
    assert d.get_state()["cached32_node"] == 0xFFFFD
    d.free_iova(0xFFFFF)                                    # above the cache: rb_next = anchor
    assert d.get_state()["cached32_node"] == ANCHOR


def test_cached32_moves_to_anchor(impl):
    d = dom(impl)
    d.alloc_iova(1, LIM32)
    d.alloc_iova(1, LIM32)                                  # cached32 = 0xFFFFE
    d.free_iova(0xFFFFF)                                    # above the cache -> rb_next = anchor
    assert d.get_state()["cached32_node"] == ANCHOR
    assert d.alloc_iova(1, LIM32) == 0xFFFFF


def test_freeing_a_straddling_node_moves_cached_node(impl):
    d = dom(impl)
    assert d.alloc_iova(4, D32 + 1, size_aligned=False) == D32 - 2     # [0xFFFFE, 0x100001]
    s = d.get_state()
    assert s["cached_node"] == D32 - 2 and s["cached32_node"] == ANCHOR
    d.alloc_iova(1, LIM32)                                  # below it: cached32 = 0xFFFFD
    d.alloc_iova(1, LIM32)
    d.free_iova(D32)
    s = d.get_state()
    assert s["cached_node"] == ANCHOR and s["cached32_node"] == 0xFFFFC


# ---- reserve_iova --------------------------------------------------------------------------
def test_reserve_merges_and_extends(impl):
    d = dom(impl)
    assert d.reserve_iova(10, 20) == (10, 20)
    assert d.reserve_iova(5, 15) == (5, 20)                 # the node is extended down
    assert d.reserve_iova(12, 18) == (5, 20)                # inside: the existing node
    assert d.reserve_iova(15, 30) == (21, 30)               # the uncovered rest is new
    assert d.reserve_iova(40, 50) == (40, 50)
    assert d.reserve_iova(0, 60) == (51, 60)
    assert d.ranges() == [(0, 20), (21, 30), (31, 50), (51, 60)]
    assert d.range_pages() == 61
    assert d.max32_alloc_size == D32
    s = d.get_state()
    assert s["cached_node"] == s["cached32_node"] == ANCHOR


def test_reserve_extending_the_cached_node_keeps_it_cached(impl):
    d = dom(impl)
    d.alloc_iova(1, LIM32)
    assert d.get_state()["cached32_node"] == 0xFFFFF
    assert d.reserve_iova(0xFFFF0, 0xFFFFF) == (0xFFFF0, 0xFFFFF)
    assert d.ranges() == [(0xFFFF0, 0xFFFFF)]
    assert d.get_state()["cached32_node"] == 0xFFFF0
    assert d.alloc_iova(1, LIM32) == 0xFFFEF


def test_reserve_too_large_warns(impl):
    d = dom(impl)
    before = d.get_state()
    with pytest.warns(KernelWarning, match="reserve_iova"):
        assert d.reserve_iova(1, 1 << 52) is None
    assert d.get_state() == before
    with pytest.raises(ValueError):
        d.reserve_iova(5, 4)
    assert d.get_state() == before


def test_reserved_regions_are_skipped(impl):
    d = dom(impl)
    d.reserve_iova(0xFFFFC, 0xFFFFD)
    assert [d.alloc_iova(1, LIM32) for _ in range(3)] == [0xFFFFF, 0xFFFFE, 0xFFFFB]
    assert d.alloc_iova(4, LIM32) == 0xFFFF4


# ---- find / free ---------------------------------------------------------------------------
def test_find_and_free(impl):
    d = dom(impl)
    lo = d.alloc_iova(8, LIM32)
    assert lo == 0xFFFF8
    assert d.find_iova(0xFFFFB) == (0xFFFF8, 0xFFFFF)
    assert d.find_iova(0xFFFF7) is None
    d.free_iova(0xFFFF7)                                    # no node: nothing
    assert len(d) == 1
    d.free_iova(0xFFFFD)                                    # any pfn inside frees the node
    assert len(d) == 0 and d.find_iova(0xFFFF8) is None
    assert d.find_iova(ANCHOR) == (ANCHOR, ANCHOR)          # the anchor is a tree node
    with pytest.raises(KernelBug, match="anchor"):
        d.free_iova(ANCHOR)


# ---- the rcache ----------------------------------------------------------------------------
def rc(d, order=0, cpu=0):
    return d.get_state()["rcaches"][order]["cpus"][cpu]


def test_rcache_lifo_and_swap_removal(impl):
    d = dom(impl)
    a, b, c = (d.alloc_iova_fast(1, LIM32) for _ in range(3))
    assert (a, b, c) == (0xFFFFF, 0xFFFFE, 0xFFFFD)
    for p in (c, b, a):
        d.free_iova_fast(p, 1)
    assert rc(d)["loaded"] == [c, b, a] and len(d) == 3     # cached pfns stay in the tree
    assert d.alloc_iova_fast(1, LIM32) == a                 # LIFO
    d.free_iova_fast(a, 1)
    # the last-pushed pfn is above the limit: scan down, swap the last entry into the hole
    assert d.alloc_iova_fast(1, 0xFFFFE) == b
    assert rc(d)["loaded"] == [c, a]
    # nothing fits: the magazine is untouched and the tree serves the request
    assert d.alloc_iova_fast(1, 0xFFFFC) == 0xFFFFC
    assert rc(d)["loaded"] == [c, a]
    # the rcache is keyed by order only: freeing 3 pages lands in order 2
    p = d.alloc_iova_fast(3, LIM32)
    d.free_iova_fast(p, 3)
    assert d.get_state()["rcaches"][2]["cpus"][0]["loaded"] == [p]
    assert d.alloc_iova_fast(4, LIM32) == p
    # sizes of order >= 6 bypass the rcache
    p = d.alloc_iova_fast(33, LIM32)
    d.free_iova_fast(p, 33)
    assert d.find_iova(p) is None


def test_magazines_swap_and_depot(impl):
    d = dom(impl)
    n = 2 * IOVA_MAG_SIZE + 1
    pfns = [d.alloc_iova_fast(1, LIM32) for _ in range(n)]
    for p in pfns[:IOVA_MAG_SIZE]:
        d.free_iova_fast(p, 1)
    assert len(rc(d)["loaded"]) == IOVA_MAG_SIZE and rc(d)["prev"] == []
    d.free_iova_fast(pfns[IOVA_MAG_SIZE], 1)                # loaded full: swap with empty prev
    assert rc(d)["loaded"] == [pfns[IOVA_MAG_SIZE]] and rc(d)["prev"] == pfns[:IOVA_MAG_SIZE]
    for p in pfns[IOVA_MAG_SIZE + 1:-1]:
        d.free_iova_fast(p, 1)
    assert d.depot_size[0] == 0
    d.free_iova_fast(pfns[-1], 1)                           # both full: loaded goes to the depot
    st_ = d.get_state()["rcaches"][0]
    assert st_["depot_size"] == 1 and st_["depot"] == [pfns[IOVA_MAG_SIZE:-1]]
    assert st_["cpus"][0]["loaded"] == [pfns[-1]] and st_["work_pending"]
    assert d.depot_size == (1, 0, 0, 0, 0, 0)
    assert len(d) == n
    # get: loaded, then prev (swapped in), then the depot's head
    got = [d.alloc_iova_fast(1, LIM32) for _ in range(n)]
    assert got == [pfns[-1]] + pfns[:IOVA_MAG_SIZE][::-1] + pfns[IOVA_MAG_SIZE:-1][::-1]
    assert d.depot_size[0] == 0 and len(d) == n


def test_per_cpu_rcaches(impl):
    m = mach(impl, cpus=2)
    d = dom(impl, machine=m)
    a = d.alloc_iova_fast(1, LIM32)
    m.cpu = 1
    d.free_iova_fast(a, 1)                                  # cpu defaults to machine.cpu
    assert rc(d, cpu=1)["loaded"] == [a] and rc(d, cpu=0)["loaded"] == []
    m.cpu = 0
    assert d.alloc_iova_fast(1, LIM32) == a - 1             # CPU 0 misses
    assert d.alloc_iova_fast(1, LIM32, cpu=1) == a          # explicit CPU
    with pytest.raises(ValueError):
        d.alloc_iova_fast(1, LIM32, cpu=2)
    d.free_iova_fast(a, 1, cpu=1)
    d.free_cpu_cached_iovas(1)
    assert d.find_iova(a) is None and rc(d, cpu=1)["loaded"] == []


def fill_depot(d, nmags, cpu=0, size=1):
    """Free enough ranges on ``cpu`` to push ``nmags`` magazines to the depot."""
    n = (nmags + 2) * IOVA_MAG_SIZE
    pfns = [d.alloc_iova_fast(size, LIM32, cpu=cpu) for _ in range(n)]
    assert 0 not in pfns
    for p in pfns:
        d.free_iova_fast(p, size, cpu=cpu)
    return pfns


def test_depot_trim_on_the_virtual_clock(impl):
    m = mach(impl, cpus=1)
    d = dom(impl, machine=m)
    pfns = fill_depot(d, 1)
    assert d.depot_size[0] == 1 and d.get_state()["rcaches"][0]["work_pending"]
    m.advance(50 * MS)
    more = [d.alloc_iova(1, LIM32) for _ in range(IOVA_MAG_SIZE)]
    for p in more:
        d.free_iova_fast(p, 1)                              # second push: work already pending
    assert d.depot_size[0] == 2
    head, tail = d.get_state()["rcaches"][0]["depot"]
    assert head == pfns[-IOVA_MAG_SIZE:] and tail == pfns[IOVA_MAG_SIZE:2 * IOVA_MAG_SIZE]
    live = len(d)
    m.advance(49 * MS)                                      # t = 99 ms: nothing yet
    assert d.depot_size[0] == 2
    m.advance(1 * MS)                                       # t = 100 ms after the first push
    assert d.depot_size[0] == 1 and len(d) == live - IOVA_MAG_SIZE
    assert all(d.find_iova(p) is None for p in head)        # the head (LIFO) was trimmed
    assert d.get_state()["rcaches"][0]["depot"] == [tail]
    assert d.get_state()["rcaches"][0]["work_pending"]      # re-armed
    m.advance(100 * MS)                                     # depot_size 1 == online CPUs: stop
    assert d.depot_size[0] == 1 and not d.get_state()["rcaches"][0]["work_pending"]
    m.advance(1000 * MS)
    assert d.depot_size[0] == 1 and len(d) == live - IOVA_MAG_SIZE


def test_depot_work_without_machine(impl):
    d = dom(impl)
    fill_depot(d, 2)
    assert d.depot_size[0] == 2
    head = d.get_state()["rcaches"][0]["depot"][0]
    d.iova_depot_work_func(0)
    assert d.depot_size[0] == 1 and all(d.find_iova(p) is None for p in head)
    d.iova_depot_work_func(0)                               # 1 <= ncpus: nothing
    assert d.depot_size[0] == 1
    d.free_global_cached_iovas()
    assert d.depot_size == (0,) * 6


def test_flush_and_retry_on_exhaustion(impl):
    m = mach(impl, cpus=2)
    d = dom(impl, start_pfn=0xFFFF0, machine=m)             # 16 pfns below 4 GiB
    pfns = [d.alloc_iova_fast(1, LIM32) for _ in range(16)]
    for i, p in enumerate(pfns):
        d.free_iova_fast(p, 1, cpu=i % 2)
    assert len(d) == 16
    before = d.get_state()
    assert d.alloc_iova_fast(2, LIM32, False) == 0          # no flush: the tree is full
    assert d.max32_alloc_size == 2
    after = d.get_state()
    assert after["rcaches"] == before["rcaches"] and after["ranges"] == before["ranges"]
    assert d.alloc_iova_fast(2, LIM32, True) == 0xFFFFE     # flush both CPUs, then retry
    assert d.ranges() == [(0xFFFFE, 0xFFFFF)]
    assert all(not c["loaded"] for c in d.get_state()["rcaches"][0]["cpus"])
    assert d.max32_alloc_size == D32


def test_flush_retry_frees_cpus_then_depot(impl):
    d = dom(impl, start_pfn=D32 - 2048)
    fill_depot(d, 6)
    assert d.depot_size[0] == 6 and len(d) == 8 * IOVA_MAG_SIZE
    assert d.alloc_iova_fast(2048, LIM32, False) == 0
    assert d.alloc_iova_fast(2048, LIM32) == D32 - 2048     # after the flush: the whole space
    assert d.depot_size[0] == 0 and d.ranges() == [(D32 - 2048, D32 - 1)]


def test_magazine_pfn_missing_from_the_tree_warns(impl):
    m = mach(impl)
    d = dom(impl, machine=m)
    p = d.alloc_iova_fast(1, LIM32)
    d.free_iova_fast(p, 1)
    d.free_iova(p)                                          # a double free the kernel can't see
    with pytest.warns(KernelWarning, match="iova_magazine_free_pfns"):
        d.free_cpu_cached_iovas(0)
    assert m.warnings_log[-1][0] == "KernelWarning"
    d2 = dom(impl)                                          # without a machine
    p = d2.alloc_iova_fast(1, LIM32)
    d2.free_iova_fast(p, 1)
    d2.free_iova(p)
    with pytest.warns(KernelWarning, match=f"{p:#x}"):
        d2.free_cpu_cached_iovas(0)


def test_free_iova_fast_does_not_check_the_pfn(impl):
    d = dom(impl)
    d.free_iova_fast(0x1234, 1)                             # never allocated: cached anyway
    assert d.alloc_iova_fast(1, LIM32) == 0x1234
    with pytest.raises(KernelBug):
        d.free_iova_fast(ANCHOR, 1)


# ---- the worked sequence (kernel-dma-notes Part B §6) --------------------------------------
def test_worked_sequence(impl):
    d = dom(impl, start_pfn=1)
    assert d.reserve_iova(0xFEE00, 0xFEEFF) == (0xFEE00, 0xFEEFF)      # the x86 MSI window
    got = [d.alloc_iova_fast(1, LIM32, False) for _ in range(0xFFFFF - 0xFEF00 + 1)]
    assert got == list(range(0xFFFFF, 0xFEEFF, -1))
    assert d.get_state()["cached32_node"] == 0xFEF00
    assert d.alloc_iova_fast(1, LIM32, False) == 0xFEDFF               # skips the reserved node
    assert d.alloc_iova_fast(3, LIM32, False) == 0xFEDF8               # 4 pages, 4-aligned
    assert d.find_iova(0xFEDFB) == (0xFEDF8, 0xFEDFB)
    assert d.find_iova(0xFEDFC) is None                                # the hole
    d.free_iova_fast(0xFFFFF, 1)
    assert d.find_iova(0xFFFFF) == (0xFFFFF, 0xFFFFF)                  # still in the tree
    assert rc(d)["loaded"] == [0xFFFFF]
    assert d.alloc_iova_fast(1, LIM32, False) == 0xFFFFF               # rcache hit
    # a 48-bit limit allocates from the top through cached_node
    assert d.alloc_iova_fast(1, (1 << 36) - 1, True) == (1 << 36) - 1


# ---- errors and teardown -------------------------------------------------------------------
def test_bad_input_leaves_state_intact(impl):
    d = dom(impl, start_pfn=0x10)
    d.alloc_iova_fast(1, LIM32)
    before = d.get_state()
    for call, exc in [
        (lambda: d.alloc_iova(0, LIM32), ValueError),
        (lambda: d.alloc_iova(-1, LIM32), ValueError),
        (lambda: d.alloc_iova(1.0, LIM32), TypeError),
        (lambda: d.alloc_iova_fast(0, LIM32), ValueError),
        (lambda: d.alloc_iova_fast(-1, LIM32), OverflowError),
        (lambda: d.alloc_iova_fast(1, "x"), TypeError),
        (lambda: d.free_iova_fast(0x20, 0), ValueError),
        (lambda: d.free_iova_fast(0x20, 1, cpu=1), ValueError),
        (lambda: d.free_iova(-5), ValueError),
        (lambda: d.find_iova(None), TypeError),
        (lambda: d.reserve_iova(9, 8), ValueError),
        (lambda: d.free_cpu_cached_iovas(1), ValueError),
        (lambda: d.iova_depot_work_func(6), ValueError),
    ]:
        with pytest.raises(exc):
            call()
        assert d.get_state() == before


def test_put_iova_domain(impl):
    m = mach(impl)
    d = dom(impl, machine=m)
    fill_depot(d, 1)
    assert d.get_state()["rcaches"][0]["work_pending"]
    d.put_iova_domain()
    assert d.get_state()["ranges"] == [] and d.get_state()["rcaches"] == []
    assert d.depot_size == () and len(d) == 0
    m.advance(200 * MS)                                     # the cancelled work never runs
    for call in (lambda: d.alloc_iova_fast(1, LIM32), lambda: d.free_iova(1), d.put_iova_domain,
                 lambda: d.reserve_iova(1, 2)):
        with pytest.raises(KernelBug):
            call()


def test_reinit_after_put_ignores_stale_timers(impl):
    m = mach(impl)
    d = dom(impl, machine=m)
    fill_depot(d, 2)                                        # work armed for t = 100 ms
    d.put_iova_domain()
    m.advance(60 * MS)
    d.__init__(4096, 1, machine=m)
    fill_depot(d, 2)                                        # armed for t = 160 ms
    m.advance(40 * MS)                                      # t = 100: the stale timer is ignored
    assert d.depot_size[0] == 2
    m.advance(60 * MS)                                      # t = 160: trims one
    assert d.depot_size[0] == 1
    with pytest.raises(RuntimeError, match="already initialised"):
        d.__init__(4096, 1, machine=m)


def test_machine_warnings_from_alloc_iova_fast_wait_for_the_entry_point(impl):
    # alloc_iova_fast is also the C-level call dma-iommu makes mid-operation, so with a machine
    # attached it only queues its WARNs; the next entry point (here flush_warnings) emits them
    m = mach(impl)
    d = dom(impl, start_pfn=0xFFFFF, machine=m)             # a single pfn below 4 GiB
    p = d.alloc_iova_fast(1, LIM32)
    d.free_iova_fast(p, 1)
    d.free_iova(p)
    assert d.alloc_iova_fast(2, LIM32) == 0                 # flush-and-retry: WARN queued
    with pytest.warns(KernelWarning, match="iova_magazine_free_pfns"):
        m.flush_warnings()
    d2 = dom(impl, start_pfn=0xFFFFF)                       # no machine: emitted on return
    p = d2.alloc_iova_fast(1, LIM32)
    d2.free_iova_fast(p, 1)
    d2.free_iova(p)
    with pytest.warns(KernelWarning, match="iova_magazine_free_pfns"):
        assert d2.alloc_iova_fast(2, LIM32) == 0


def test_granule_1_reserve_extends_the_anchor(impl):
    d = dom(impl, granule=1)
    assert d.dma_32bit_pfn == 1 << 32
    assert d.reserve_iova(1 << 40, ANCHOR) == (1 << 40, ANCHOR)
    assert d.ranges() == [(1 << 40, ANCHOR)] and len(d) == 1
    assert d.get_state()["cached_node"] == 1 << 40           # the anchor node, re-keyed
    assert d.alloc_iova(1, 1 << 41) == (1 << 40) - 1
    with pytest.raises(KernelBug, match="anchor"):
        d.free_iova(1 << 41)


def test_core_and_reference_method_signatures_match():
    import inspect
    core_names = {n for n in dir(dmaphys.IovaDomain) if not n.startswith("_")}
    ref_dom = reference.IovaDomain(4096, 1)
    for name in sorted(core_names):
        assert hasattr(ref_dom, name), name
        c = getattr(dmaphys.IovaDomain, name)
        if callable(c):
            r = getattr(reference.IovaDomain, name)
            assert list(inspect.signature(c).parameters) == list(inspect.signature(r).parameters), name


def test_both_backends_export_iova_names():
    for name in ("IovaDomain", "iova_rcache_range"):
        assert name in dmaphys._core.__all__ and name in reference.__all__


# ---- differential: core vs reference -------------------------------------------------------
START = D32 - 0x400                       # 1024 pfns below 4 GiB, the 64-bit space above
LIMITS = [D32 - 0x201, LIM32, D32, D32 + 0x3F, D32 + 0x3FF]
PFNS = (START - 8, D32 + 0x400)
SIZES = [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 33, 40]
sizes = st.one_of(st.integers(1, 8), st.sampled_from([16, 31, 32, 33, 40]))
op = st.one_of(
    st.tuples(st.just("alloc_fast"), sizes, st.sampled_from(LIMITS), st.booleans()),
    st.tuples(st.just("alloc"), sizes, st.sampled_from(LIMITS), st.booleans()),
    st.tuples(st.just("free_fast"), st.integers(0, 10_000)),
    st.tuples(st.just("free"), st.integers(0, 10_000)),
    st.tuples(st.just("free_pfn"), st.integers(*PFNS)),
    st.tuples(st.just("reserve"), st.integers(*PFNS), st.integers(0, 24)),
    st.tuples(st.just("cpu"), st.integers(0, 1)),
    st.tuples(st.just("flush_cpu"), st.integers(0, 1)),
    st.tuples(st.just("flush_global")),
    st.tuples(st.just("advance"), st.sampled_from([10, 100, 250])),
    st.tuples(st.just("cycle"), st.integers(1, 700), st.sampled_from([1, 2])),
)


def random_ops(rng, n):
    """A long random stream in the same format as the hypothesis strategy."""
    ops = []
    for _ in range(n):
        k = rng.choices(["alloc_fast", "alloc", "free_fast", "free", "free_pfn", "reserve", "cpu",
                         "flush_cpu", "flush_global", "advance", "cycle"],
                        [30, 6, 25, 4, 2, 3, 6, 1, 1, 6, 4])[0]
        if k in ("alloc_fast", "alloc"):
            ops.append((k, rng.choice(SIZES), rng.choice(LIMITS), rng.random() < 0.7))
        elif k in ("free_fast", "free"):
            ops.append((k, rng.randrange(10_000)))
        elif k == "free_pfn":
            ops.append((k, rng.randint(*PFNS)))
        elif k == "reserve":
            ops.append((k, rng.randint(*PFNS), rng.randrange(25)))
        elif k in ("cpu", "flush_cpu"):
            ops.append((k, rng.randrange(2)))
        elif k == "flush_global":
            ops.append((k,))
        elif k == "advance":
            ops.append((k, rng.choice([10, 100, 250])))
        else:
            ops.append((k, rng.randint(1, 700), rng.choice([1, 2])))
    return ops


def run(impl, ops):
    """Apply ``ops`` to a fresh domain; returns the results and state after every step."""
    m = mach(impl, cpus=2)
    d = dom(impl, start_pfn=START, machine=m)
    live = []                                      # (pfn, size) handed out by alloc_iova_fast
    trace = []
    for o in ops:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                res = step(d, m, live, o)
            except (KernelBug, ValueError) as e:
                res = ("exc", type(e).__name__)
        trace.append((o, res, [str(x.message) for x in w], d.get_state()))
    return trace


def step(d, m, live, o):
    kind = o[0]
    if kind == "alloc_fast":
        pfn = d.alloc_iova_fast(o[1], o[2], o[3])
        if pfn:
            live.append((pfn, o[1]))
        return pfn
    if kind == "alloc":
        return d.alloc_iova(o[1], o[2], o[3])
    if kind in ("free_fast", "free"):
        if not live:
            return None
        pfn, size = live.pop(o[1] % len(live))
        return d.free_iova_fast(pfn, size) if kind == "free_fast" else d.free_iova(pfn)
    if kind == "free_pfn":
        return d.free_iova(o[1])
    if kind == "reserve":
        return d.reserve_iova(o[1], o[1] + o[2])
    if kind == "cpu":
        m.cpu = o[1]
        return None
    if kind == "flush_cpu":
        return d.free_cpu_cached_iovas(o[1])
    if kind == "flush_global":
        return d.free_global_cached_iovas()
    if kind == "advance":
        return m.advance(o[1] * MS)
    if kind == "cycle":                            # many allocs then frees: magazines, depot
        got = [d.alloc_iova_fast(o[2], LIM32, True) for _ in range(o[1])]
        for p in got:
            if p:
                d.free_iova_fast(p, o[2])
        return got
    raise AssertionError(kind)


def compare(ops):
    core = run(dmaphys, ops)
    ref = run(reference, ops)
    for i, (c, r) in enumerate(zip(core, ref, strict=True)):
        assert c == r, f"step {i}: {c[0]}"


@given(st.lists(op, max_size=40))
def test_differential_core_vs_reference(ops):
    compare(ops)


@pytest.mark.parametrize("seed", range(4))
def test_differential_long_streams(seed):
    compare(random_ops(random.Random(seed), 250))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 60))
def test_differential_long_streams_slow(seed):
    compare(random_ops(random.Random(seed), 1000))


def test_range_pages_sums_ranges(impl):
    """range_pages() is sum(hi - lo + 1 for ranges()) through allocations, rcache frees and reserves."""
    import random
    rng = random.Random(5)
    d = dom(impl, machine=mach(impl))
    live = []
    for _ in range(300):
        if live and rng.random() < 0.4:
            pfn, size = live.pop(rng.randrange(len(live)))
            d.free_iova_fast(pfn, size)
        elif rng.random() < 0.05:
            lo = rng.randrange(0x1000, 0x8000)
            d.reserve_iova(lo, lo + rng.randrange(8))
        else:
            size = rng.choice([1, 2, 3, 8, 40, 300])
            pfn = d.alloc_iova_fast(size, LIM32)
            if pfn:
                live.append((pfn, size))
        assert d.range_pages() == sum(hi - lo + 1 for lo, hi in d.ranges())
    d.put_iova_domain()
    assert d.range_pages() == 0 == len(d.ranges())
