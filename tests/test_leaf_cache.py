"""The page tables' leaf-table cache (io_pgtable.pxd lc_*, issue 10) never serves a stale walk.

The compiled core remembers the last smallest-page table its single-granule fast paths reached
(map_one_fast, unmap_one_fast, dma-iommu's unmap lookup) and starts the next walk there when the
IOVA falls in the same table frame and the entries above still hold what that walk read. The
reference model walks from the top every time, so any stale use shows as a difference between
the two backends. Each case fills the cache through a fast path, then changes the tables above
the cached leaf table in a way the cache must notice -- an unmap that frees the table (freed
now, or held on the pending list so its memory stays), a block mapping replacing it, a stray
CPU write into a table entry, the IOMMU API writing a DMA domain's tables behind dma-iommu's
back, a domain freed and its memory reused by the next domain -- and uses the same slot again.
"""

import warnings

import numpy as np
import pytest

import dmaphys

R, W = 1, 2
BASE = 1 << 30                                   # aligned to every block size used below
P, Q = 0x10000000, 0x40000000                    # output addresses (block-aligned for 512M)
FMTS = ["vtd-ss", "x86-64", "arm-lpae-s1-4k", "arm-lpae-s1-16k", "arm-lpae-s1-64k", "arm-lpae-s2-4k"]


def table_and_block(impl, fmt, defer_free=False):
    m = impl.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)
    pt = impl.IoPgtable(m, fmt)
    pt.defer_free = defer_free
    g = pt.granule
    blk = g * (g // 8)                           # the item size one level up: a block leaf
    assert pt.pgsize_bitmap & blk
    return m, pt, g, blk


def recorded(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(x.message) for x in w]


def both(case, *args):
    core, ref = (recorded(lambda impl=impl: case(impl, *args)) for impl in (dmaphys, dmaphys.reference))
    assert core == ref
    return core


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
@pytest.mark.parametrize("defer_free", [False, True])
@pytest.mark.parametrize("fmt", FMTS)
def test_unmap_frees_the_table_then_a_block_replaces_it(fmt, defer_free):
    def case(impl):
        m, pt, g, blk = table_and_block(impl, fmt, defer_free)
        out = [pt.map(BASE, P, g, R | W),        # the general path makes the tables
               pt.map(BASE + g, P + g, g, R | W),  # the fast path: the cache holds the leaf table
               pt.unmap(BASE + 4 * g, g),        # the fast path's unmap (a hole: declines)
               pt.unmap(BASE, blk),              # the leaf table goes (freed or pending)
               pt.map(BASE + 2 * g, P, g, R | W),  # a new leaf table, elsewhere or reused
               pt.map(BASE + 3 * g, P, g, R | W),
               pt.unmap(BASE, blk),
               pt.map(BASE, Q, blk, R | W),      # a block where the table was
               pt.map(BASE + 2 * g, P, g, R | W),  # must see the block
               pt.unmap(BASE + 2 * g, g),
               pt.iova_to_phys(BASE + 3 * g), pt.walk(BASE + 2 * g)]
        if defer_free:
            pt.release_pending()
        out += [pt.map(BASE + blk + g, P, g, R | W), pt.map(BASE + blk + 2 * g, P, g, R | W)]
        return out, pt.get_state(), m.mem_read(pt.pgtable_root, 4096)
    both(case)


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("stray", ["clear", "other-table"])
def test_a_stray_write_into_a_table_entry_above_the_cached_table(fmt, stray):
    def case(impl):
        m, pt, g, blk = table_and_block(impl, fmt)
        out = [pt.map(BASE, P, g, R | W), pt.map(BASE + g, P + g, g, R | W),
               pt.map(BASE + blk, P, g, R | W), pt.map(BASE + g, P, g, R | W)]
        lv = pt.walk(BASE)["levels"]
        other = pt.walk(BASE + blk)["levels"][-2]["pte"]
        # the CPU writes the entry that points at BASE's leaf table (level above the leaf)
        val = 0 if stray == "clear" else other
        m.mem_write(lv[-2]["pte_addr"], val.to_bytes(8, "little"))
        out += [pt.map(BASE + 2 * g, P + 2 * g, g, R | W),    # a fresh table / the other one
                pt.unmap(BASE + 2 * g, g), pt.map(BASE + 3 * g, P, g, R | W),
                pt.walk(BASE + 2 * g), pt.walk(BASE + 3 * g), pt.iova_to_phys(BASE + 3 * g)]
        return out, pt.get_state()
    both(case)


def _dma_rig(impl, strict):
    m = impl.Machine(ram=[(0, 1 << 32)], swiotlb=1 << 20, dma_debug=False)
    m.trace.enabled = False
    iommu = m.add_iommu(strict=strict)
    dev = m.add_device("nic", iommu=iommu)
    return m, iommu, dev


def _pages(n, base=0x20000000):
    return np.uint64(base) + np.arange(n, dtype=np.uint64) * np.uint64(4096)


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
@pytest.mark.parametrize("strict", [True, False])
def test_the_iommu_api_rewrites_a_dma_domains_tables_behind_the_batch_path(strict):
    def case(impl):
        m, iommu, dev = _dma_rig(impl, strict)
        ph = _pages(512)                         # top-down IOVAs: one whole leaf table
        out = []
        a = impl.dma_map_phys_batch(dev, ph, 4096, 0)           # rcache misses: the full path
        impl.dma_unmap_phys_batch(dev, a, 4096, 0)
        m.advance(20_000_000)                                   # lazy: the flush queue's timeout
        a = impl.dma_map_phys_batch(dev, ph, 4096, 0)           # rcache hits: the fast path
        out.append(a.tolist())
        d = dev.domain
        region = int(a.min()) & ~((1 << 21) - 1)
        assert int(a.max()) - region < 1 << 21
        out.append(impl.iommu_unmap(d, region, 1 << 21))        # the leaf table goes
        out.append(impl.iommu_map(d, region, Q, 1 << 21, R | W))  # a 2M leaf in its place
        impl.dma_unmap_phys_batch(dev, a, 4096, 0)              # each finds the 2M leaf
        out.append(impl.iommu_unmap(d, region, 1 << 21))
        b = impl.dma_map_phys_batch(dev, ph, 4096, 0)
        out.append(b.tolist())
        impl.dma_unmap_phys_batch(dev, b, 4096, 0)
        out.append(d.pgtable.get_state())
        out.append(d.iova_cookie.get_state())
        return out
    both(case)


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
def test_a_domain_freed_and_its_memory_reused():
    def case(impl):
        m, iommu, dev = _dma_rig(impl, True)
        out = []
        for _ in range(3):
            d = iommu.domain_alloc()
            out.append(impl.iommu_attach_device(d, dev))
            for k in range(4):                                  # fast-path maps and unmaps
                out.append(impl.iommu_map(d, BASE + k * 4096, P + k * 4096, 4096, R | W))
            out.append(impl.iommu_unmap(d, BASE + 4096, 4096))
            out.append(impl.iommu_unmap(d, BASE, 1 << 30))
            out.append(impl.iommu_map(d, BASE + 8192, Q, 4096, R | W))
            out.append(d.pgtable.get_state())
            impl.iommu_detach_device(d, dev)
            impl.iommu_domain_free(d)                           # its table pages go back
        ph = _pages(16)
        for _ in range(2):
            a = impl.dma_map_phys_batch(dev, ph, 4096, 0)
            impl.dma_unmap_phys_batch(dev, a, 4096, 0)
            out.append(a.tolist())
        out.append(dev.domain.pgtable.get_state())
        return out
    both(case)


STRAY_B = 0x40000000 + 5 * (1 << 21)            # L1 index 5 within the first 1 GiB


def _stray_l1_self_pointer(impl, strict, maps):
    """A DMA rig whose L1 table T1 gets the stray write T1[5] -> T1 after ``maps`` (iova, phys)
    pages under L1 index 6 are mapped (the first makes T1[6] a table entry); a lazy domain's
    flush-queue timer is armed first. Returns (machine, device, page table, T1's frame,
    the iommu_map results)."""
    m, iommu, dev = _dma_rig(impl, strict)
    a = impl.dma_map_phys_batch(dev, _pages(2), 4096, 0)   # lazy: arms the flush queue's timer
    impl.dma_unmap_phys_batch(dev, a, 4096, 0)
    d = dev.domain
    pt = d.pgtable
    done = [impl.iommu_map(d, iova, phys, 4096, R | W) for iova, phys in maps]
    lv = pt.walk(maps[0][0])["levels"]
    t1 = lv[-2]["pte_addr"] & ~0xFFF             # the L1 table's frame
    bits = lv[-2]["pte"] & 0xFFF
    m.mem_write(t1 + 5 * 8, (t1 | bits).to_bytes(8, "little"))   # T1[5] -> T1
    return m, dev, pt, t1, done


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
@pytest.mark.parametrize("strict", [True, False])
def test_a_batch_run_never_trusts_a_leaf_table_that_is_also_the_table_above_it(strict):
    # A GIL-free batch run trusts a leaf-table frame, once validated, for the rest of the run
    # (io_pgtable.pxi run_leaf_ptep): only its own leaf stores write memory, and they cannot
    # change the entries above -- unless the leaf frame is itself one of those tables. A stray
    # write makes an L1 entry point at its own table: that table is then the leaf table of the
    # IOVAs under the entry, the entry is a "present leaf" of one of them (vtd-ss: nonzero),
    # and unmapping that IOVA clears the entry. The next IOVA of the run must see it gone.
    B = STRAY_B
    h1, h2 = B + 5 * 4096, B + 6 * 4096           # h1's leaf slot is the L1 entry itself
    other = B + (1 << 21)                        # L1 index 6: T1[6] is a table entry

    def case(impl):
        m, dev, pt, t1, out = _stray_l1_self_pointer(impl, strict, [(other, Q)])
        fast = dmaphys._core._test_batch_fast_elements(m) if impl is dmaphys else 0
        impl.dma_unmap_phys_batch(dev, np.array([h1, h2], dtype=np.uint64), 4096, 0)
        if impl is dmaphys:
            # h1 in the run; h2 declined (its walk fails) and took the full path
            assert dmaphys._core._test_batch_fast_elements(m) - fast == 1
        out += [pt.walk(other), pt.iova_to_phys(other), pt.get_state(), m.mem_read(t1, 4096)]
        return out
    both(case)


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="compares the core with the reference")
@pytest.mark.parametrize("strict", [True, False])
def test_a_store_through_an_untrusted_walk_ends_the_runs_trust(strict):
    # A run trusts several leaf-table frames (io_pgtable.pxi run_leaf_ptep). A walk to a frame it
    # may not trust still hands the run the entry to store to; if that entry is an upper entry of
    # a frame the run trusts, the trust must end there. A stray write makes T1[5] point at T1:
    # the IOVA h under L1 index 5 at slot 6 then has T1[6] -- the table entry above the leaf
    # table of L1 index 6 -- as its "leaf" entry, and unmapping h clears it. The run unmaps o1
    # (trusting index 6's leaf table), then h, then o2 in index 6's leaf table: o2 must find
    # its table gone, as a full walk (and the reference) does.
    B = STRAY_B
    o1 = B + (1 << 21)                           # L1 index 6
    o2 = o1 + 4096
    h = B + 6 * 4096                             # index 5, slot 6: T1[6] once T1[5] -> T1

    def case(impl):
        m, dev, pt, t1, out = _stray_l1_self_pointer(impl, strict, [(o1, Q), (o2, Q + 4096)])
        fast = dmaphys._core._test_batch_fast_elements(m) if impl is dmaphys else 0
        impl.dma_unmap_phys_batch(dev, np.array([o1, h, o2], dtype=np.uint64), 4096, 0)
        if impl is dmaphys:
            # o1 and h in the run; o2 declined (its walk fails) and took the full path
            assert dmaphys._core._test_batch_fast_elements(m) - fast == 2
        out += [pt.walk(o2), pt.iova_to_phys(o2), pt.get_state(), m.mem_read(t1, 4096)]
        return out
    both(case)
