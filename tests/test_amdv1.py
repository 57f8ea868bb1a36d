"""generic_pt AMD v1 (drivers/iommu/generic_pt/fmt/amdv1.h, torvalds @0eaed89c) on both backends.

The AMD driver's v1 domain: starting level 2 with PT_FEAT_DYNAMIC_TOP (the top grows while
mapping, up to 6 levels), every power-of-two page size but 512G, sizes between the level item
sizes made of "contiguous" leaves (NextLevel 7, the size encoded by the run of ones at the bottom
of the address field, the entry replicated into every item it covers). Cases follow the kernel's
kunit suites (kunit_iommu_pt.h test_increase_level, test_map_simple; kunit_generic_pt.h's entry
round trips); the generic cases of tests/test_io_pgtable.py run on "amdv1" too.
"""

import pytest

import dmaphys
import dmaphys.reference as reference

R, W = 1, 2
EINVAL, ERANGE, EADDRINUSE = 22, 34, 98
PR, IR, IW, FC = 1, 1 << 61, 1 << 62, 1 << 60


def machine(impl):
    return impl.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)


def pte(m, pt, iova):
    return pt.walk(iova)["levels"][-1]["pte"]


def genmask(hi, lo):
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


def test_page_sizes_every_power_of_two_but_512g(impl):
    # amdv1pt_possible_sizes(): GENMASK(min(51, isz + 8), isz) & ~SZ_512G per level, levels whose
    # items are below max_vasz_lg2 (DYNAMIC_TOP get_info()), hidden at and above 2^max_oasz
    m = machine(impl)
    assert impl.IoPgtable(m, "amdv1").pgsize_bitmap == genmask(47, 12) & ~(1 << 39)
    assert impl.IoPgtable(m, "amdv1", ias=64).pgsize_bitmap == genmask(51, 12) & ~(1 << 39)
    assert impl.IoPgtable(m, "amdv1", ias=64, oas=40).pgsize_bitmap == genmask(39, 12) & ~(1 << 39)
    assert impl.IoPgtable(m, "amdv1", ias=32).pgsize_bitmap == genmask(38, 12)     # level 2 whole
    d = impl.IOPGTABLE_FORMATS["amdv1"]
    assert (d.levels, d.family, d.map_exists_errno) == (3, "generic_pt", EADDRINUSE)
    assert d.partial_unmap == "whole-leaf"


def test_pte_bits(impl):
    m = machine(impl)
    pt = impl.IoPgtable(m, "amdv1")
    assert pt.map(0x1000, 0x5000, 0x1000, R) == 0                 # a level-0 leaf, NextLevel 0
    assert pte(m, pt, 0x1000) == PR | IR | 0x5000
    lv = pt.walk(0x1000)["levels"]
    assert [e["pte"] & 0xE00 for e in lv[:-1]] == [2 << 9, 1 << 9]      # tables: NextLevel = level
    assert all(e["pte"] & (PR | IR | IW) == PR | IR | IW for e in lv[:-1])
    # a 64K contiguous leaf: NextLevel 7, three ones at bit 12 (2^(3 + 13)), 16 copies
    assert pt.map(0x20000, 0x80000, 0x10000, R | W) == 0
    e = PR | IR | IW | (7 << 9) | 0x80000 | 0x7000
    assert {pte(m, pt, 0x20000 + i * 0x1000) for i in range(16)} == {e}
    assert pt.translate(0x2F123) == (0x8F123, R | W, 0x10000)
    # an 8K leaf has no ones: the first zero bit is bit 12 itself
    assert pt.map(0x40000, 0x2000, 0x2000, W) == 0
    assert pte(m, pt, 0x41000) == PR | IW | (7 << 9) | 0x2000
    assert pt.iova_to_phys(0x41FFF) == 0x3FFF
    # a 2M leaf at level 1 is NextLevel 0; 4M is a contiguous pair of level-1 items
    assert pt.map(0x400000, 0x800000, 0x400000, R) == 0
    assert pte(m, pt, 0x600000) == PR | IR | (7 << 9) | 0x800000 | (((1 << (22 - 13)) - 1) << 12)
    assert pt.get_state()["mappings"][0x400000] == (0x800000, 0x400000, R)
    fc = impl.IoPgtable(m, "amdv1", force_coherence=True)
    assert fc.map(0, 0, 0x1000, R) == 0 and pte(m, fc, 0) == PR | IR | FC | 0


def test_map_simple_every_size(impl):
    """kunit test_map_simple on amdv1: one leaf of every size up to 1T, each translated and unmapped."""
    m = machine(impl)
    pt = impl.IoPgtable(m, "amdv1")
    va, placed = 1 << 20, []
    for b in range(12, 41):
        if b == 39:
            continue
        size = 1 << b
        va = (va + size - 1) & ~(size - 1)
        pa = (va + (1 << 43)) & ((1 << 52) - 1)
        assert pt.map(va, pa, size, R | W) == 0, b
        assert pt.translate(va + size - 8) == (pa + size - 8, R | W, size)
        assert pt.iova_to_phys(va + 42) == pa + 42
        placed.append((va, size))
        va += size
    st = pt.get_state()["mappings"]
    assert sorted((v, s) for v, (_, s, _) in st.items()) == placed
    for va, size in placed:
        assert pt.unmap(va, size) == size
    assert pt.get_state()["mappings"] == {}


@pytest.mark.parametrize("ias,tops", [(64, [3, 4, 5]), (48, [3]), (57, [3, 4])])
def test_increase_level(impl, ias, tops):
    """kunit test_increase_level: a map just past the top's range adds exactly one level, the old
    top linked at index 0 of the new one, until max_vasz_lg2; then -ERANGE and nothing leaks."""
    m = machine(impl)
    pt = impl.IoPgtable(m, "amdv1", ias=ias)
    assert pt.map(0x3000, 0x7000, 0x1000, R) == 0
    for top in tops:
        old_root, covered = pt.pgtable_root, 12 + 9 * pt.levels
        assert pt.map(1 << covered, 0, 0x1000, R) == 0
        assert pt.levels == top + 1 and pt.pgtable_root != old_root
        e0 = int.from_bytes(m.mem_read(pt.pgtable_root, 8), "little")
        assert e0 & 0x000FFFFFFFFFF000 == old_root                       # index 0 -> the old top
        assert e0 & 0xE00 == top << 9 and e0 & (PR | IR | IW) == PR | IR | IW
        assert pt.iova_to_phys(0x3000) == 0x7000 and pt.iova_to_phys(1 << covered) == 0
    pages, root = pt.table_pages, pt.pgtable_root
    if ias < 64:
        assert pt.map(1 << ias, 0, 0x1000, R) == -ERANGE
        assert (pt.table_pages, pt.pgtable_root) == (pages, root)
        assert pt.iova_to_phys(1 << ias) == (-ERANGE) & ((1 << 64) - 1)


def test_large_leaf_grows_the_top(impl):
    # a 1T leaf lives at level 3: the top (2) grows first, then the leaf goes in
    pt = impl.IoPgtable(machine(impl), "amdv1")
    assert pt.map(1 << 40, 1 << 41, 1 << 40, R) == 0
    assert pt.levels == 4 and pt.translate((1 << 40) + 5) == ((1 << 41) + 5, R, 1 << 40)


def test_contiguous_unmap_is_whole_or_nothing(impl):
    pt = impl.IoPgtable(machine(impl), "amdv1")
    assert pt.map(0x100000, 0x300000, 0x10000, R) == 0
    assert pt.ops_unmap_pages(0x104000, 0x1000, 1) == 0          # starts inside: -EINVAL, nothing
    assert pt.iova_to_phys(0x104000) == 0x304000
    assert pt.ops_unmap_pages(0x100000, 0x1000, 1) == 0x10000    # the whole contiguous leaf
    assert pt.iova_to_phys(0x10F000) == 0
    # a contiguous leaf over a live 4K leaf: clear_contig refuses
    assert pt.map(0x200000, 0, 0x1000, R) == 0
    assert pt.map(0x200000, 0, 0x8000, R) == -EADDRINUSE


def test_dma_api_through_an_amdv1_iommu(impl):
    m = impl.Machine(ram=[(0, 3 << 30), (4 << 30, 1 << 30)], swiotlb=0, dma_debug=False)
    mmu = m.add_iommu(fmt="amdv1")
    dev = m.add_device("nvme0", dma_mask=dmaphys.DMA_BIT_MASK(64), iommu=mmu)
    buf = m.alloc_pages(16)
    m.mem_write(buf, b"amd v1")
    a = impl.dma_map_single(dev, buf, 0x10000, dmaphys.DMA_TO_DEVICE)
    assert not impl.dma_mapping_error(dev, a) and dev.dma_read(a, 6) == b"amd v1"
    impl.dma_unmap_single(dev, a, 0x10000, dmaphys.DMA_TO_DEVICE)
    assert mmu.domain_alloc().pgtable.reserved_regions == (
        (0xFEE00000, 0x100000, W, 3), (0xFD00000000, 0x300000000, 0, 2))


def test_formats_agree():
    assert dmaphys.IOPGTABLE_FORMATS["amdv1"] == reference.IOPGTABLE_FORMATS["amdv1"]
