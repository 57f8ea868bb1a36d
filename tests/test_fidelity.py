"""Divergences from the compiled kernel fixed in issue 13, each pinned to the kernel's numbers.

Every case runs on both backends (the ``impl`` fixture). The kernel versions followed are named
at each test; docs/kernel-notes-errata.md records the ones that correct the shared notes.
"""

import pytest

import dmaphys as dma

R, W = 1, 2
SZ_1G = 1 << 30


def machine(impl, ram=None, **kw):
    kw.setdefault("swiotlb", 0)
    kw.setdefault("dma_debug", False)
    return impl.Machine(ram=ram or [(0, 1 << 32)], **kw)


# ---- 1. io-pgtable-arm: num_entries = min_t(int, pgcount, max_entries) --------------------
def test_arm_map_pages_truncates_pgcount_to_int(impl):
    # v6.18 __arm_lpae_map(): a pgcount of 2^32 + 1 is the int 1 -> one 1 GiB block
    pt = impl.IoPgtable(machine(impl), "arm-lpae-s1-4k", ias=40, oas=48)
    assert pt.ops_map_pages(0xa700000000, 0x83d40000000, SZ_1G, 0x100000001, R | W) == (0, SZ_1G)
    assert pt.iova_to_phys(0xa700000000) == 0x83d40000000
    assert pt.iova_to_phys(0xa700000000 + SZ_1G) == 0
    # 2^32 is the int 0: nothing mapped and success (iommu_map would spin on it)
    assert pt.ops_map_pages(0xa800000000, 0, SZ_1G, 1 << 32, R) == (0, 0)
    # 2^32 - 1 is the int -1: nothing written, *mapped += (size_t)-1 * size
    assert pt.ops_map_pages(0xa800000000, 0, SZ_1G, (1 << 32) - 1, R) == (0, (-SZ_1G) & ((1 << 64) - 1))
    assert pt.iova_to_phys(0xa800000000) == 0


def test_arm_unmap_pages_truncates_pgcount_to_int(impl):
    pt = impl.IoPgtable(machine(impl), "arm-lpae-s1-4k", ias=40, oas=48)
    assert pt.ops_map_pages(0, 0, SZ_1G, 3, R) == (0, 3 * SZ_1G)
    assert pt.ops_unmap_pages(0, SZ_1G, (1 << 32) + 2) == 2 * SZ_1G
    assert pt.ops_unmap_pages(2 * SZ_1G, SZ_1G, 1 << 32) == 0          # the int 0
    assert pt.iova_to_phys(2 * SZ_1G) == 2 * SZ_1G


# ---- 2. io-pgtable-arm: __arm_lpae_unmap() at an empty PTE returns 0 (Dec 2025 fix) --------
def test_arm_unmap_of_a_hole_returns_zero(impl):
    m = machine(impl)
    mmu = m.add_iommu(fmt="arm-lpae-s1-4k")
    d = mmu.domain_alloc()
    assert impl.iommu_map(d, 0x10000, 0x200000, 0x1000, R | W) == 0
    with pytest.warns(dma.KernelWarning, match="no IOPTE"):
        assert impl.iommu_unmap(d, 0x20000, 0x1000) == 0
    # mapped page, then a hole: __iommu_unmap() stops there (v6.18 went on and BUG()ed)
    with pytest.warns(dma.KernelWarning, match="no IOPTE"):
        assert impl.iommu_unmap(d, 0x10000, 0x3000) == 0x1000
    assert impl.iommu_iova_to_phys(d, 0x10000) == 0
