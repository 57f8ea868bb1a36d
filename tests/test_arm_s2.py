"""io-pgtable-arm stage 2 (ARM_64_LPAE_S2; drivers/iommu/io-pgtable-arm.c v6.18) on both backends.

Stage 2 differs from stage 1 in its leaf attributes (HAP read/write permissions and a MemAttr
field instead of AP and AttrIndx; no nG) and in its start level: where Arm DDI0487 (R_DXBSH,
R_SRKBC) makes it mandatory, arm_64_lpae_alloc_pgtable_s2() starts one level lower with up to 16
concatenated tables (arm_lpae_concat_mandatory()). The selftest (arm_lpae_run_tests) runs on the
stage-2 formats through tests/test_io_pgtable.py.
"""

import pytest

R, W, C, NX, MMIO, PRIV = 1, 2, 4, 8, 16, 32
HAP_R, HAP_W, AF, SH_IS, SH_OS, XN = 1 << 6, 2 << 6, 1 << 10, 3 << 8, 2 << 8, 3 << 53
OIWB, NC, DEV = 0xF << 2, 0x5 << 2, 0x1 << 2


def machine(impl):
    return impl.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)


@pytest.mark.parametrize("fmt,ias,oas,levels,top_pages", [
    ("arm-lpae-s2-4k", 48, 48, 4, 1),      # start level 0, no concatenation for a 48-bit PA
    ("arm-lpae-s2-4k", 40, 40, 3, 2),      # R_SRKBC: level 1 with 2 concatenated tables
    ("arm-lpae-s2-4k", 42, 42, 3, 8),      # level 1 with 8 tables
    ("arm-lpae-s2-4k", 40, 48, 4, 1),      # the PA size decides: no concatenation
    ("arm-lpae-s2-16k", 48, 48, 3, 8),     # R_DXBSH: 16K never starts at level 0
    ("arm-lpae-s2-16k", 40, 40, 2, 64),    # 16K, level 1, 40-bit PA: 16 tables at level 2
    ("arm-lpae-s2-64k", 48, 48, 3, 1),     # 64K: never
    ("arm-lpae-s1-4k", 40, 40, 4, 1),      # stage 1 never concatenates
])
def test_concatenated_start_tables(impl, fmt, ias, oas, levels, top_pages):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt, ias=ias, oas=oas)
    assert (pt.levels, pt.table_pages) == (levels, top_pages)
    assert pt.pgtable_root % (top_pages << 12) == 0
    # the top of the input range indexes the last concatenated table
    g = pt.granule
    assert pt.map((1 << ias) - g, 0x100000, g, R | W) == 0
    walk = pt.walk((1 << ias) - g)
    assert walk["levels"][0]["pte_addr"] >= pt.pgtable_root + (top_pages << 12) - 8 * (1 << 11)
    assert walk["phys"] == 0x100000 and pt.iova_to_phys((1 << ias) - 1) == 0x100000 + g - 1
    assert pt.unmap((1 << ias) - g, g) == g


@pytest.mark.parametrize("prot,bits,decoded", [
    (R | W | C, HAP_R | HAP_W | OIWB | SH_IS, R | W | C),
    (R, HAP_R | NC | SH_OS, R),
    (W, HAP_W | NC | SH_OS, W),
    (R | MMIO, HAP_R | DEV | SH_OS, R | MMIO),
    (R | NX, HAP_R | NC | SH_OS | XN, R | NX),
    (R | PRIV, HAP_R | NC | SH_OS, R),                  # stage 2 has no privilege bit
])
def test_stage2_attributes(impl, prot, bits, decoded):
    # arm_lpae_prot_to_pte() for ARM_64_LPAE_S2: HAP, MemAttr, no nG / AP / AttrIndx
    m = machine(impl)
    pt = impl.IoPgtable(m, "arm-lpae-s2-4k")
    assert pt.map(0x200000, 0x5000, 0x1000, prot) == 0
    e = pt.walk(0x200000)["levels"][-1]["pte"]
    assert e == bits | AF | 3 | 0x5000
    assert pt.translate(0x200123) == (0x5123, decoded, 0x1000)


def test_stage2_through_an_iommu_domain(impl):
    m = machine(impl)
    d = m.add_iommu(fmt="arm-lpae-s2-4k", ias=40, oas=40).domain_alloc()
    assert impl.iommu_map(d, 0x80000000, 0x200000, 0x200000, R | W) == 0
    assert impl.iommu_iova_to_phys(d, 0x80001234) == 0x201234
    assert d.pgtable.descriptor.kernel == "io-pgtable-arm ARM_64_LPAE_S2"
    assert impl.iommu_unmap(d, 0x80000000, 0x200000) == 0x200000
