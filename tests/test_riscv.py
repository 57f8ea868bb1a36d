"""generic_pt RISC-V (drivers/iommu/generic_pt/fmt/riscv.h, torvalds @637315cb) on both backends.

"riscv-sv39" / "riscv-sv48" / "riscv-sv57": the 64-bit format with top level 2 / 3 / 4
(riscvpt_iommu_fmt_init() accepts only those VA sizes), sign extended, a leaf possible at every
level (the top included), PPN in bits 53:10, V/R/W/X/U/G/A/D in bits 0..7, tables V | PPN only.
Svnapot 64K pages as the riscv IOMMU driver configures them (PT_FEAT_RISCV_SVNAPOT_64K): 16
identical level-0 entries with N (bit 63) and PPN bit 3 set; Svpbmt is not modelled. Cases
follow the kunit suites
(kunit_generic_pt.h entry round trips, kunit_iommu_pt.h test_map_simple / test_map_table_to_oa);
PTEs are decoded here by an independent walker (RISC-V privileged spec 12.3.2). The generic
page-table tests of tests/test_io_pgtable.py and the page-table state machine of
tests/test_differential.py run on the three formats too.
"""

import pytest

import dmaphys
import dmaphys.reference as reference

R, W, C, NX = 1, 2, 4, 8
ERANGE, EADDRINUSE = 34, 98
U64 = (1 << 64) - 1
V, PR, PW, PX, PU, PG, PA, PD = (1 << b for b in range(8))
N, NAPOT_64K = 1 << 63, 1 << 13
FMTS = {"riscv-sv39": 39, "riscv-sv48": 48, "riscv-sv57": 57}


def machine(impl):
    return impl.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)


def rd(m, addr):
    return int.from_bytes(m.mem_read(addr, 8), "little")


def walk(m, pt, iova):
    """An independent Sv39/48/57 walker over simulated RAM: the PTEs read, top first."""
    table, out = pt.pgtable_root, []
    for L in range(pt.levels - 1, -1, -1):
        e = rd(m, table + 8 * ((iova >> (12 + 9 * L)) & 511))
        out.append(e)
        if not e & V or e & (PR | PW | PX) or L == 0:
            return out
        table = ((e >> 10) & ((1 << 44) - 1)) << 12
    return out


def ppn(pa):
    return (pa >> 12) << 10


@pytest.mark.parametrize("fmt", FMTS)
def test_geometry(impl, fmt):
    m = machine(impl)
    ias = FMTS[fmt]
    pt = impl.IoPgtable(m, fmt)
    top = (ias - 12) // 9 - 1
    assert (pt.ias, pt.oas, pt.levels) == (ias, 56, top + 1)
    # riscvpt_can_have_leaf(): every level's item size, up to and including the top; Svnapot 64K
    assert pt.pgsize_bitmap == sum(1 << (12 + 9 * L) for L in range(top + 1)) | (1 << 16)
    d = impl.IOPGTABLE_FORMATS[fmt]
    assert d.sign_extend and d.aperture_end == (1 << (ias - 1)) - 1 and d.reserved_regions == ()
    assert (d.family, d.map_exists_errno, d.partial_unmap) == ("generic_pt", EADDRINUSE, "whole-leaf")
    for bad in (ias - 1, ias + 1, 64):          # riscvpt_iommu_fmt_init(): -EINVAL
        with pytest.raises(ValueError):
            impl.IoPgtable(m, fmt, ias=bad)
    with pytest.raises(ValueError):
        impl.IoPgtable(m, fmt, oas=57)          # PT_MAX_OUTPUT_ADDRESS_LG2 = 56
    small = (1 << 12) | (1 << 16) | (1 << 21) | (1 << 30)
    assert impl.IoPgtable(m, "riscv-sv48", oas=39).pgsize_bitmap == small


def test_pte_bits(impl):
    """riscvpt_iommu_set_prot(): A|U always, W brings R and D, X unless IOMMU_NOEXEC."""
    m = machine(impl)
    pt = impl.IoPgtable(m, "riscv-sv39")
    cases = [(R, V | PR | PX | PA | PU, R),
             (R | W, V | PR | PW | PX | PA | PU | PD, R | W),
             (W, V | PR | PW | PX | PA | PU | PD, R | W),
             (R | NX, V | PR | PA | PU, R | NX),
             (R | W | C | NX, V | PR | PW | PA | PU | PD, R | W | NX)]
    for k, (prot, bits, seen) in enumerate(cases):
        va, pa = 0x10000 + k * 0x1000, 0x123456000 + k * 0x1000
        assert pt.map(va, pa, 0x1000, prot) == 0
        es = walk(m, pt, va)
        assert len(es) == 3 and es[-1] == bits | ppn(pa)
        assert all(e & 0x3FF == V for e in es[:-1])               # tables: V | PPN only
        assert pt.walk(va)["levels"][-1]["pte"] == es[-1]
        assert pt.translate(va + 0x123) == (pa + 0x123, seen, 0x1000)
        assert pt.iova_to_phys(va + 0x123) == pa + 0x123
    assert not any(e & PG for e in walk(m, pt, 0x10000))


@pytest.mark.parametrize("fmt", FMTS)
def test_map_table_to_oa(impl, fmt):
    """kunit test_map_table_to_oa / test_map_simple: a leaf of every level's size, the top
    level's included, each decoded by the walker at the level it belongs to."""
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    placed = []
    for L in range(pt.levels):
        size = 1 << (12 + 9 * L)
        va = size * (3 if L < pt.levels - 1 else 1)
        pa = (size << 2) if L else 0x7000
        assert pt.map(va, pa, size, R | W) == 0, L
        es = walk(m, pt, va + size - 8)
        assert len(es) == pt.levels - L
        assert es[-1] == V | PR | PW | PX | PA | PU | PD | ppn(pa)
        assert pt.translate(va + size - 8) == (pa + size - 8, R | W, size)
        placed.append((va, size))
    assert sorted((v, s) for v, (_, s, _) in pt.get_state()["mappings"].items()) == sorted(placed)
    assert pt.map(placed[0][0], 0, 0x1000, R) == -EADDRINUSE
    for va, size in placed:
        assert pt.unmap(va, size) == size and pt.iova_to_phys(va) == 0
    assert pt.get_state()["mappings"] == {}


@pytest.mark.parametrize("fmt", FMTS)
def test_sign_extension(impl, fmt):
    m = machine(impl)
    ias = FMTS[fmt]
    pt = impl.IoPgtable(m, fmt)
    upper = U64 & ~((1 << (ias - 1)) - 1)
    assert pt.map(upper, 0x5000, 0x1000, R) == 0
    assert (pt.walk(upper)["levels"][0]["index"], len(walk(m, pt, upper))) == (256, pt.levels)
    assert pt.get_state()["mappings"] == {upper: (0x5000, 0x1000, R)}
    assert pt.iova_to_phys(upper + 0x10) == 0x5010
    assert pt.map(1 << (ias - 1), 0, 0x1000, R) == -ERANGE        # non-canonical
    assert pt.map(0, 1 << 56, 0x1000, R) == -ERANGE                # beyond the 56-bit OA
    assert pt.unmap(upper, 0x1000) == 0x1000


def test_svnapot_64k(impl):
    """riscvpt_install_leaf_entry() with PT_FEAT_RISCV_SVNAPOT_64K: a 64K page is 16 copies of
    V | PPN | N | PPN bit 3 at level 0; unmap takes it whole, or refuses from inside."""
    m = machine(impl)
    pt = impl.IoPgtable(m, "riscv-sv39")
    assert pt.map(0x30000, 0x120000, 0x30000, R | W) == 0       # three 64K pages
    e0 = V | PR | PW | PX | PA | PU | PD | N | NAPOT_64K | ppn(0x120000)
    assert {walk(m, pt, 0x30000 + i * 0x1000)[-1] for i in range(16)} == {e0}
    assert walk(m, pt, 0x40000)[-1] == e0 - ppn(0x120000) + ppn(0x130000)
    st = pt.get_state()["mappings"]
    assert st == {0x30000 + k * 0x10000: (0x120000 + k * 0x10000, 0x10000, R | W) for k in range(3)}
    assert pt.translate(0x4ABCD) == (0x13ABCD, R | W, 0x10000) and pt.iova_to_phys(0x5FFFF) == 0x14FFFF
    assert pt.map(0x60000, 0x128000, 0x10000, R) == 0            # misaligned PA: 16 4K pages
    assert walk(m, pt, 0x61000)[-1] == V | PR | PX | PA | PU | ppn(0x129000)
    assert pt.ops_unmap_pages(0x34000, 0x1000, 1) == 0            # starts inside: refused
    assert pt.ops_unmap_pages(0x30000, 0x1000, 1) == 0x10000      # the whole 64K page
    assert {walk(m, pt, 0x30000 + i * 0x1000)[-1] for i in range(16)} == {0}
    assert pt.map(0x70000, 0, 0x1000, R) == 0
    assert pt.map(0x70000, 0, 0x10000, R) == -EADDRINUSE          # clear_contig over a live page


def test_large_leaf_over_tables(impl):
    m = machine(impl)
    pt = impl.IoPgtable(m, "riscv-sv48")
    assert pt.map(1 << 30, 1 << 30, 0x1000, R) == 0
    assert pt.unmap(1 << 30, 0x1000) == 0x1000
    assert pt.map(1 << 30, 1 << 31, 1 << 30, R) == 0               # clear_contig frees the empty tables
    assert walk(m, pt, 1 << 30)[-1] == V | PR | PX | PA | PU | ppn(1 << 31)
    assert pt.unmap((1 << 30) + 0x1000, 0x1000) == 0               # from inside a leaf: refused
    assert pt.unmap(1 << 30, 0x1000) == 1 << 30                     # the whole leaf


def test_unmanaged_domain_and_dma_api(impl):
    m = impl.Machine(ram=[(0, 3 << 30), (4 << 30, 1 << 30)], swiotlb=0, dma_debug=False)
    mmu = m.add_iommu(fmt="riscv-sv39")
    dom = mmu.domain_alloc()
    assert impl.iommu_map(dom, 0x40000000, 0x80000000, 0x200000, R | W) == 0
    assert impl.iommu_iova_to_phys(dom, 0x40012345) == 0x80012345
    assert walk(m, dom.pgtable, 0x40000000)[-1] & 0x3FF == V | PR | PW | PX | PA | PU | PD
    assert impl.iommu_unmap(dom, 0x40000000, 0x200000) == 0x200000
    dev = m.add_device("nvme0", dma_mask=dmaphys.DMA_BIT_MASK(64), iommu=mmu)
    buf = m.alloc_pages(16)
    m.mem_write(buf, b"risc-v")
    a = impl.dma_map_single(dev, buf, 0x10000, dmaphys.DMA_TO_DEVICE)
    assert not impl.dma_mapping_error(dev, a) and dev.dma_read(a, 6) == b"risc-v"
    impl.dma_unmap_single(dev, a, 0x10000, dmaphys.DMA_TO_DEVICE)


def test_formats_agree():
    for f in FMTS:
        assert dmaphys.IOPGTABLE_FORMATS[f] == reference.IOPGTABLE_FORMATS[f]
