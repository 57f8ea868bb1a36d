"""IOMMU page tables (generic_pt vtdss/x86_64, io-pgtable-arm S1) and iommu_pgsize splitting.

The cases follow the kernel's own page-table tests: generic_pt's kunit suites
(kunit_iommu_pt.h: test_map_simple, test_mixed, test_unmap_split, test_pgsize_boundary,
test_random_map) and io-pgtable-arm's selftest (arm_lpae_run_tests). An independent
hardware walker written here from the architecture bit layouts reads simulated memory and
must agree with iova_to_phys.
"""

import random
import warnings
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import KernelBug, KernelWarning

R, W, C, NX, MMIO, PRIV = 1, 2, 4, 8, 16, 32
EINVAL, ENOMEM, EEXIST, ERANGE, EADDRINUSE = 22, 12, 17, 34, 98
U64 = (1 << 64) - 1
SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30

FORMATS = ["vtd-ss", "vtd-ss-5level", "x86-64", "x86-64-5level",
           "arm-lpae-s1-4k", "arm-lpae-s1-16k", "arm-lpae-s1-64k",
           "arm-lpae-s2-4k", "arm-lpae-s2-16k", "arm-lpae-s2-64k", "amdv1",
           "riscv-sv39", "riscv-sv48", "riscv-sv57"]
GPT = [f for f in FORMATS if not f.startswith("arm")]
ARM = [f for f in FORMATS if f.startswith("arm")]


def machine(impl, ram=None):
    return impl.Machine(ram=ram or [(0, 1 << 32)], swiotlb=0, dma_debug=False)


def sizes(bitmap):
    return [1 << b for b in range(64) if bitmap >> b & 1]


# ---- an independent hardware walker (Intel VT-d spec 9.7/9.8, ARM ARM VMSAv8-64) -------------
def hw_walk(m, pt, iova):
    """Walk pt's tables in simulated memory: (phys, writable, leaf size) or None (fault)."""
    fmt, ias, gran = pt.fmt, pt.ias, pt.granule
    pg_shift = gran.bit_length() - 1
    bpl = pg_shift - 3
    levels = pt.levels
    if fmt.startswith(("x86", "riscv")):
        canon = iova >> (ias - 1)
        if canon not in (0, (1 << (65 - ias)) - 1):
            return None
    elif iova >> ias:
        return None
    table = pt.pgtable_root
    writable = True
    if fmt == "amdv1":
        return amd_hw_walk(m, pt, iova)
    if fmt.startswith("riscv"):
        return riscv_hw_walk(m, pt, iova)
    for depth in range(levels):
        L = levels - 1 - depth                     # items of 2^(pg_shift + bpl*L) bytes
        shift = pg_shift + bpl * L
        bits = ias - shift if depth == 0 else bpl
        idx = (iova >> shift) & ((1 << bits) - 1)
        e = int.from_bytes(m.mem_read(table + 8 * idx, 8), "little")
        size = 1 << shift
        if fmt.startswith("vtd"):
            if not e & 3:                          # neither R nor W: not present
                return None
            writable &= bool(e & 2)
            leaf = L == 0 or e >> 7 & 1
            nxt = e & 0x000FFFFFFFFFF000
        elif fmt.startswith("x86"):
            if not e & 1:
                return None
            writable &= bool(e & 2)
            leaf = L == 0 or e >> 7 & 1
            nxt = e & 0x000FFFFFFFFFF000
        else:
            typ = e & 3
            if not typ & 1 or (L == 0 and typ != 3):
                return None
            leaf = L == 0 or typ == 1
            nxt = e & 0x0000FFFFFFFFF000
            if gran == 1 << 16:
                nxt = (nxt & ~0xF000) | ((e >> 12 & 0xF) << 48)
            if leaf:                               # stage 1 AP[2] read-only / stage 2 HAP[1] write
                writable = bool(e >> 7 & 1) if "-s2-" in fmt else not e >> 7 & 1
        if leaf:
            return (nxt & ~(size - 1)) | (iova & (size - 1)), writable, size
        table = nxt
    return None


def riscv_hw_walk(m, pt, iova):
    """RISC-V privileged spec 12.3.2 (virtual address translation) for Sv39/48/57: V bit 0, a
    leaf when any of R/W/X (bits 1..3) is set, PPN in bits 53:10; a misaligned superpage faults;
    Svnapot (chapter 13): N (bit 63) at level 0 with ppn[3:0] = 0b1000 is a 64 KiB page."""
    table = pt.pgtable_root
    for L in range(pt.levels - 1, -1, -1):
        shift = 12 + 9 * L
        e = int.from_bytes(m.mem_read(table + 8 * ((iova >> shift) & 511), 8), "little")
        if not e & 1 or (e & 6) == 4:              # invalid, or W without R (reserved)
            return None
        nxt = ((e >> 10) & ((1 << 44) - 1)) << 12
        if e & 0xE:
            size = 1 << shift
            if e >> 63:
                if L or (e >> 10) & 0xF != 0b1000:
                    return None
                size, nxt = 1 << 16, nxt & ~0xFFFF
            if nxt & (size - 1):
                return None
            return nxt | (iova & (size - 1)), bool(e & 4), size
        if L == 0:
            return None
        table = nxt
    return None


# ---- descriptors -----------------------------------------------------------------------------
def test_format_descriptors(impl):
    f = impl.IOPGTABLE_FORMATS
    assert list(f) == FORMATS
    bm = {k: v.pgsize_bitmap for k, v in f.items()}
    assert bm["vtd-ss"] == bm["x86-64"] == bm["arm-lpae-s1-4k"] == 0x40201000
    assert bm["arm-lpae-s1-16k"] == 0x2004000 and bm["arm-lpae-s1-64k"] == 0x20010000
    # s2-16k concatenates
    assert [f[k].levels for k in FORMATS] == [4, 5, 4, 5, 4, 4, 3, 4, 3, 3, 3, 3, 4, 5]
    assert f["x86-64"].aperture_end == (1 << 47) - 1 and f["x86-64"].sign_extend
    assert f["vtd-ss"].aperture_end == (1 << 48) - 1 and f["vtd-ss-5level"].aperture_end == (1 << 57) - 1
    assert f["vtd-ss"].reserved_regions == ((0xFEE00000, 0x100000, 0, 3),)          # IOMMU_RESV_MSI
    assert f["arm-lpae-s1-4k"].reserved_regions == ((0x8000000, 0x100000, W | NX | MMIO, 4),)
    assert f["vtd-ss"].map_exists_errno == EADDRINUSE and f["arm-lpae-s1-16k"].map_exists_errno == EEXIST
    assert impl.IoPgtable.formats() == list(f.values())
    assert dict(dmaphys.IOPGTABLE_FORMATS) == dict(reference.IOPGTABLE_FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_instance_geometry_and_bad_input(impl, fmt):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    assert pt.pgsize_bitmap == impl.IOPGTABLE_FORMATS[fmt].pgsize_bitmap
    assert pt.descriptor == impl.IOPGTABLE_FORMATS[fmt]
    assert pt.table_pages >= 1 and pt.pgtable_root % 4096 == 0
    with pytest.raises(ValueError):
        impl.IoPgtable(m, "no-such-format")
    with pytest.raises(TypeError):
        impl.IoPgtable(m, 3)
    if fmt.startswith("arm"):                   # arm_lpae_restrict_pgsizes() clamps a large ias
        assert impl.IoPgtable(m, fmt, ias=60).ias == (52 if fmt.endswith("64k") else 48)
        with pytest.raises(ValueError):
            impl.IoPgtable(m, fmt, ias=12)
    else:
        with pytest.raises(ValueError):
            impl.IoPgtable(m, fmt, ias=65 if fmt == "amdv1" else 60)
    with pytest.raises(TypeError):
        pt.map("0", 0, 4096, R)
    with pytest.raises(ValueError):
        pt.map(-4096, 0, 4096, R)
    with pytest.raises(TypeError):
        pt.iova_to_phys(1.5)
    assert pt.get_state()["mappings"] == {}


def test_arm_ias_and_vtd_levels(impl):
    m = machine(impl)
    assert impl.IoPgtable(m, "arm-lpae-s1-4k", ias=32).levels == 3      # 20 = 2 + 9 + 9
    assert impl.IoPgtable(m, "arm-lpae-s1-4k", ias=39).levels == 3
    assert impl.IoPgtable(m, "arm-lpae-s1-16k", ias=48).levels == 4     # top table: 2 entries
    assert impl.IoPgtable(m, "vtd-ss", ias=39).levels == 3              # vtdss fmt_init: <= 39 -> 3
    assert impl.IoPgtable(m, "arm-lpae-s1-64k", ias=52, oas=52).pgsize_bitmap == 0x20010000 | 1 << 42


# ---- iommu_pgsize ----------------------------------------------------------------------------
def test_iommu_pgsize_worked_example(impl):
    pt = impl.IoPgtable(machine(impl), "vtd-ss")
    assert pt.iommu_pgsize(0x1FF000, 0x3FF000, 0x401000) == (SZ_4K, 1)
    # 1G excluded: iova ^ paddr is not 1G-congruent
    assert pt.iommu_pgsize(0x200000, 0x400000, 0x400000) == (SZ_2M, 2)
    assert pt.iommu_pgsize(0, 0, 3 * SZ_1G + SZ_2M) == (SZ_1G, 3)
    assert pt.iommu_pgsize(SZ_4K, SZ_4K, SZ_1G) == (SZ_4K, 511)       # up to the 2M boundary
    with pytest.raises(KernelBug):
        pt.iommu_pgsize(0x800, 0, 4096)


def amd_hw_walk(m, pt, iova):
    """AMD IOMMU spec 2.2.3: PR (bit 0), NextLevel (11:9) of the table below, 0 or 7 a leaf; 7's
    size is 2^(n + 13) with n the lowest zero bit of the address field (bits 51:12)."""
    if iova >> min(pt.ias, 12 + 9 * pt.levels):
        return None
    table, level, writable = pt.pgtable_root, pt.levels - 1, True
    while True:
        idx = (iova >> (12 + 9 * level)) & 511
        e = int.from_bytes(m.mem_read(table + 8 * idx, 8), "little")
        if not e & 1:
            return None
        writable &= bool(e >> 62 & 1)
        nl = e >> 9 & 7
        addr = e & 0x000FFFFFFFFFF000
        if level == 0 or nl in (0, 7):
            size = 1 << (12 + 9 * level)
            if nl == 7:
                field = addr >> 12
                size = 1 << ((~field & (field + 1)).bit_length() - 1 + 13)
            return (addr & ~(size - 1)) | (iova & (size - 1)), writable, size
        assert nl == level, "the kernel links each table at the next level down"
        table, level = addr, level - 1


# ---- kunit_iommu_pt.h ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [f for f in GPT if f != "amdv1"] + ["arm-lpae-s1-4k"])
def test_mixed(impl, fmt):
    """test_mixed: 0x3fe400000..0x4c0600000 maps with exactly 14 x 2M, 3 x 1G, 3 x 2M."""
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    start, end = 0x3FE400000, 0x4C0600000
    assert pt.map(start, start, end - start, R | W) == 0
    leaves = sorted(pt.get_state()["mappings"].items())
    assert [s for _, (_, s, _) in leaves] == [SZ_2M] * 14 + [SZ_1G] * 3 + [SZ_2M] * 3
    assert all(va == pa for va, (pa, _, _) in leaves)
    for va in (start, 0x400000000 + 12345, end - 1):
        assert pt.iova_to_phys(va) == va
    assert pt.unmap(start, end - start) == end - start
    assert pt.get_state()["mappings"] == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_map_simple(impl, fmt):
    """test_map_simple: one page of every size, each a single leaf, translate, unmap all."""
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    smallest = pt.pgsize_bitmap & -pt.pgsize_bitmap
    va = 256 * smallest
    placed = []
    for size in sizes(pt.pgsize_bitmap):
        if size > SZ_1G:
            continue
        va = (va + size - 1) & ~(size - 1)
        pa = va + (1 << 33)
        assert pt.map(va, pa, size, R | W) == 0
        walk = pt.walk(va + size - 8)
        assert walk["leaf_size"] == size and walk["phys"] == pa + size - 8
        assert pt.iova_to_phys(va + 42) == pa + 42
        placed.append((va, size))
        va += size
    assert Counter(s for _, s, _ in pt.get_state()["mappings"].values()) == Counter(s for _, s in placed)
    for va, size in placed:
        assert pt.unmap(va, size) == size
        assert pt.iova_to_phys(va + 42) == 0
    assert pt.get_state()["mappings"] == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_leaked_table_pages(impl, fmt):
    m = machine(impl)
    before = m.mem.allocated_pages
    pt = impl.IoPgtable(m, fmt)
    big = max(s for s in sizes(pt.pgsize_bitmap) if s <= SZ_1G)
    for k in range(4):
        assert pt.map(k * big + pt.granule, k * big + pt.granule, 3 * pt.granule, R) == 0
    assert pt.map(8 * big, 8 * big, big, R | W) == 0
    assert pt.unmap(8 * big, big) == big
    for k in range(4):
        assert pt.unmap(k * big + pt.granule, 3 * pt.granule) == 3 * pt.granule
    assert pt.get_state()["mappings"] == {}
    assert pt.table_pages > 0 and m.mem.allocated_pages == before + pt.table_pages
    pt.free_tables()
    assert pt.table_pages == 0 and pt.pgtable_root == 0
    assert m.mem.allocated_pages == before
    with pytest.raises(ValueError):
        pt.map(0, 0, pt.granule, R)
    assert pt.iova_to_phys(0) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_freeing(impl, fmt):
    """Tables freed on unmap only when the unmap covers their whole span (both families)."""
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    g = pt.granule
    # span of one last-level table (amdv1 and riscv offer sizes between 4K and 2M)
    block = g << 9 if fmt == "amdv1" or fmt.startswith("riscv") else sizes(pt.pgsize_bitmap)[1]
    base = 4 * block
    t0 = pt.table_pages
    assert pt.map(base, base, g, R | W) == 0
    with_tables = pt.table_pages
    assert with_tables > t0
    assert pt.unmap(base, g) == g                 # the last-level table is left, empty
    assert pt.table_pages == with_tables
    assert pt.map(base, base, 2 * g, R | W) == 0
    assert pt.map(base + 4 * g, base, g, R | W) == 0
    pt.defer_free = True
    got = pt.unmap(base, block)
    if fmt.startswith("arm"):
        assert got == block                       # __arm_lpae_unmap at the block level frees the table
    else:
        assert got == 2 * g                       # generic_pt stops at the first hole
        assert pt.table_pages == with_tables and not pt.get_state()["pending_free"]
        assert pt.unmap(base + 4 * g, g) == g
        assert pt.map(base, base, block, R) == 0  # clear_contig: an empty table makes way for a leaf
        assert pt.unmap(base, block) == block
    st = pt.get_state()
    assert len(st["pending_free"]) == 1 and pt.table_pages == with_tables
    pt.release_pending()
    assert pt.table_pages == with_tables - (g >> 12) and pt.get_state()["pending_free"] == []


# ---- overlapping maps and split unmaps -------------------------------------------------------
@pytest.mark.parametrize("fmt", GPT)
def test_generic_pt_overlap_and_split(impl, fmt):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    assert pt.map(SZ_2M, SZ_2M, SZ_4K, R) == 0
    assert pt.map(SZ_2M, 0, SZ_4K, R) == -EADDRINUSE                       # no WARN
    assert pt.map(0, 0, SZ_2M * 2, R | W) == -EADDRINUSE                   # 2M leaf over a live table
    assert pt.iova_to_phys(SZ_2M) == SZ_2M and pt.iova_to_phys(0) == 0     # unwound
    assert pt.map(4 * SZ_2M, 0, SZ_2M, R | W) == 0
    assert pt.map(4 * SZ_2M + SZ_4K, 0, SZ_4K, R) == -EADDRINUSE
    # test_unmap_split: unmapping the start of a large leaf removes the whole leaf
    assert pt.map(5 * SZ_2M, SZ_2M, SZ_2M, R | W) == 0
    assert pt.unmap(4 * SZ_2M + SZ_4K, SZ_4K) == 0                         # from inside: refused
    assert pt.unmap(4 * SZ_2M, SZ_4K) == SZ_2M
    assert pt.iova_to_phys(4 * SZ_2M + 8) == 0 and pt.iova_to_phys(5 * SZ_2M + 8) == SZ_2M + 8
    assert pt.unmap(5 * SZ_2M, SZ_4K) == SZ_2M
    assert pt.unmap(9 * SZ_2M, SZ_4K) == 0                                 # nothing there


@pytest.mark.parametrize("fmt", ARM)
def test_arm_overlap_and_split(impl, fmt):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    g, block = sizes(pt.pgsize_bitmap)[:2]
    with pytest.warns(KernelWarning, match="unmap is required"):
        assert pt.map(block, block, g, R) == 0 and pt.map(block, 0, g, R) == -EEXIST
    with pytest.warns(KernelWarning, match="unmap is required"):
        assert pt.map(block + g, 3 * g, g, R) == 0 and pt.map(block, 0, 2 * g, R) == -EEXIST
    assert pt.iova_to_phys(block + g) == 3 * g and pt.iova_to_phys(block) == block
    # a block replaces a table with live pages: arm_lpae_init_pte frees the table silently
    assert pt.map(block, 5 * block, block, R | W) == 0
    assert pt.walk(block)["leaf_size"] == block and pt.iova_to_phys(block) == 5 * block
    # partial unmap of a large leaf: refused since 6.13 (WARN_ONCE, returns 0)
    with pytest.warns(KernelWarning, match="Unmap of a partial large IOPTE is not allowed"):
        assert pt.unmap(block, g) == 0
    assert pt.unmap(block + g, g) == 0            # WARN_ONCE: silent the second time
    assert pt.iova_to_phys(block + 8) == 5 * block + 8
    assert pt.unmap(block, block) == block
    # an unmapped IOVA: WARN_ON and 0 (the December 2025 fix; v6.18 returned (size_t)-ENOENT)
    with pytest.warns(KernelWarning, match="no IOPTE"):
        assert pt.unmap(0, g) == 0
    # a hole after some mapped pages: __iommu_unmap stops at the hole
    assert pt.map(0, 0, g, R) == 0
    with pytest.warns(KernelWarning, match="no IOPTE"):
        assert pt.unmap(0, 2 * g) == g


@pytest.mark.parametrize("fmt", FORMATS)
def test_misaligned_is_einval(impl, fmt):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    g = pt.granule
    assert pt.map(g // 2, 0, g, R) == -EINVAL
    assert pt.map(0, g // 2, g, R) == -EINVAL
    assert pt.map(0, 0, g + 512, R) == -EINVAL
    assert pt.map(0, 0, 0, R) == 0
    assert pt.unmap(512, g) == 0
    assert pt.get_state()["mappings"] == {} and pt.get_state()["leaf_writes"] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_access_prot(impl, fmt):
    pt = impl.IoPgtable(machine(impl), fmt)
    if fmt.startswith("arm"):
        assert pt.map(0, 0, pt.granule, 0) == -EINVAL
    else:
        with pytest.warns(KernelWarning, match="IOMMU_READ"):
            assert pt.map(0, 0, pt.granule, C) == -EINVAL


@pytest.mark.parametrize("fmt", FORMATS)
def test_out_of_range(impl, fmt):
    pt = impl.IoPgtable(machine(impl), fmt)
    g = pt.granule
    top = 1 << pt.ias
    if fmt.startswith("arm"):
        with pytest.warns(KernelWarning, match="out of range"):
            assert pt.map(top, 0, g, R) == -ERANGE
        with pytest.warns(KernelWarning, match="out of range"):
            assert pt.map(0, 1 << pt.oas, g, R) == -ERANGE
        assert pt.iova_to_phys(top + 5) == 0
    else:
        bad = 1 << (pt.ias - 1) if pt.descriptor.sign_extend else top  # non-canonical / beyond
        assert pt.map(bad, 0, g, R) == -ERANGE
        assert pt.iova_to_phys(bad) == (-ERANGE) & U64                 # generic_pt returns its errno
    assert pt.translate(top) is None
    # the last largest page of the input range (arm selftest step 4)
    big = max(s for s in sizes(pt.pgsize_bitmap) if s <= SZ_1G)
    last = (top >> 1 if pt.descriptor.sign_extend and not fmt.startswith("arm") else top) - big
    assert pt.map(last, 0, big, R | W) == 0 and pt.unmap(last, big) == big


def test_x86_sign_extension(impl):
    pt = impl.IoPgtable(machine(impl), "x86-64")
    upper = U64 & ~((1 << 47) - 1)                                       # 0xffff800000000000
    assert pt.map(upper, 0x5000, SZ_4K, R | W) == 0
    assert pt.iova_to_phys(upper + 0x10) == 0x5010
    assert pt.walk(upper)["levels"][0]["index"] == 256
    assert pt.get_state()["mappings"] == {upper: (0x5000, SZ_4K, R | W)}
    assert pt.map(1 << 47, 0, SZ_4K, R) == -ERANGE                       # non-canonical
    # pt_check_range() takes the prefix from va and compares last_va above bit 47 only: a range
    # running from the top of the lower half into 0x800000000000 passes and lands in top-level
    # slot 256, the upper half's first slot (here occupied, so -EADDRINUSE)
    assert pt.map((1 << 47) - SZ_4K, 0, 2 * SZ_4K, R) == -EADDRINUSE
    assert pt.unmap(upper, SZ_4K) == SZ_4K
    assert pt.map((1 << 47) - SZ_4K, 0, 2 * SZ_4K, R) == 0
    assert pt.translate(upper) == (SZ_4K, R, SZ_4K)


def test_enomem_unwinds(impl):
    m = machine(impl, ram=[(0, 16 * 4096)])
    pt = impl.IoPgtable(m, "vtd-ss")
    while True:
        try:
            m.alloc_pages(1)
        except MemoryError:
            break
    assert pt.map(0, 0, SZ_4K, R) == -ENOMEM
    assert pt.iova_to_phys(0) == 0 and pt.get_state()["mappings"] == {}


# ---- io-pgtable-arm selftest (arm_lpae_run_tests) ---------------------------------------------
def arm_lpae_selftest(pt, ias):
    """arm_lpae_run_tests() for one configuration, up to its last map; the IOVAs it touches
    (also run with a non-coherent walker by test_noncoherent.py)."""
    touched = []
    for va in (42, SZ_1G + 42, 2 * SZ_1G + 42):
        assert pt.iova_to_phys(va) == 0
    szs = sizes(pt.pgsize_bitmap)
    for k, size in enumerate(szs):
        iova = k * SZ_1G
        assert pt.ops_map_pages(iova, iova, size, 1, R | W | NX | C) == (0, size)
        ret, _ = pt.ops_map_pages(iova, iova + size, size, 1, R | NX)
        assert ret != 0
        assert pt.iova_to_phys(iova + 42) == iova + 42
        touched.append(iova)
    for k, size in enumerate(szs):
        iova = k * SZ_1G
        assert pt.ops_unmap_pages(iova, size, 1) == size
        assert pt.iova_to_phys(iova + 42) == 0
        assert pt.ops_map_pages(iova, iova, size, 1, W) == (0, size)
        assert pt.iova_to_phys(iova + 42) == iova + 42
    size = szs[-1]
    iova = (1 << ias) - size
    assert pt.ops_map_pages(iova, iova, size, 1, R | W | NX | C) == (0, size)
    touched.append(iova)
    return touched


@pytest.mark.parametrize("fmt", ARM)
@pytest.mark.parametrize("ias,oas", [(32, 32), (36, 48), (48, 48)])
def test_arm_lpae_selftest(impl, fmt, ias, oas):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt, ias=ias, oas=oas, no_warn=True)
    iova = arm_lpae_selftest(pt, ias)[-1]
    assert pt.ops_unmap_pages(iova, sizes(pt.pgsize_bitmap)[-1], 1) == sizes(pt.pgsize_bitmap)[-1]


# ---- PTE bits ----------------------------------------------------------------------------------
def pte(pt, iova):
    return pt.walk(iova)["levels"][-1]["pte"]


def test_vtdss_pte_bits(impl):
    m = machine(impl)
    pt = impl.IoPgtable(m, "vtd-ss")
    assert pt.map(0, 0x12345000, SZ_4K, R | C | NX) == 0
    assert pt.map(SZ_2M, 0x40000000, SZ_2M, R | W) == 0
    assert pte(pt, 0) == 0x12345000 | 1                                   # R; no PS at level 0
    assert pte(pt, SZ_2M) == 0x40000000 | 1 | 2 | 1 << 7                  # R|W|PS
    top = pt.walk(0)["levels"][0]
    assert top["pte"] & 0xFFF == 3 and top["type"] == "table"             # tables: R|W
    assert pt.translate(SZ_2M + 5) == (0x40000005, R | W, SZ_2M)
    snp = impl.IoPgtable(m, "vtd-ss", force_coherence=True)
    assert snp.map(0, 0, SZ_4K, W) == 0 and pte(snp, 0) == 2 | 1 << 11
    assert snp.translate(0) == (0, W | C, SZ_4K)


def test_x86_pte_bits(impl):
    pt = impl.IoPgtable(machine(impl), "x86-64")
    assert pt.map(0, 0x7000, SZ_4K, R) == 0
    assert pt.map(SZ_1G, 1 << 32, SZ_1G, R | W | NX) == 0
    assert pte(pt, 0) == 0x7000 | 1 | 4 | 32                              # P|U|A, no RW
    assert pte(pt, SZ_1G) == (1 << 32) | 1 | 2 | 4 | 32 | 64 | 128        # P|RW|U|A|D|PS
    assert pt.walk(0)["levels"][0]["pte"] & 0xFFF == 1 | 2 | 4 | 32       # P|RW|U|A
    assert pt.translate(0) == (0x7000, R, SZ_4K)
    assert pt.translate(SZ_1G + 3) == ((1 << 32) + 3, R | W, SZ_1G)


@pytest.mark.parametrize("prot,bits", [
    (R, 1 << 11 | 1 << 7 | 1 << 6 | 2 << 8 | 1 << 10),                       # nG|RDONLY|UNPRIV|OS|AF
    (R | W | C, 1 << 11 | 1 << 6 | 1 << 2 | 3 << 8 | 1 << 10),                # AttrIndx 1, IS
    (W | MMIO | NX, 1 << 11 | 1 << 6 | 2 << 2 | 2 << 8 | 3 << 53 | 1 << 10),  # AttrIndx 2, XN
    (R | W | PRIV, 1 << 11 | 2 << 8 | 1 << 10),                               # privileged: no AP[1]
])
def test_arm_pte_bits(impl, prot, bits):
    pt = impl.IoPgtable(machine(impl), "arm-lpae-s1-4k")
    assert pt.map(0, 0x9000, SZ_4K, prot) == 0
    assert pt.map(SZ_2M, 0x600000, SZ_2M, prot) == 0
    assert pte(pt, 0) == 0x9000 | bits | 3                                # page descriptor
    assert pte(pt, SZ_2M) == 0x600000 | bits | 1                          # block descriptor
    assert pt.walk(0)["levels"][0]["pte"] & 0xFFF == 3                    # table descriptor
    want = R | (0 if prot & R and not prot & W else W) | (prot & (C | NX | MMIO | PRIV))
    assert pt.translate(5) == (0x9005, want, SZ_4K)
    assert [lv["level"] for lv in pt.walk(0)["levels"]] == [0, 1, 2, 3]


def test_arm_64k_pa_packing(impl):
    pt = impl.IoPgtable(machine(impl), "arm-lpae-s1-64k", ias=52, oas=52)
    pa = (0xA << 48) | 0x123450000
    assert pt.map(1 << 16, pa, 1 << 16, R | W) == 0
    assert pte(pt, 1 << 16) & 0x0000FFFFFFFFF000 == 0x123450000 | 0xA << 12
    assert pt.iova_to_phys((1 << 16) + 7) == pa + 7


# ---- random maps against the independent walker ------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_map_hw_walker(impl, fmt):
    """test_random_map-style: random ranges (retry after -EADDRINUSE/-EEXIST), hw walk agrees."""
    rng = random.Random(FORMATS.index(fmt))
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt, no_warn=fmt.startswith("arm"))
    g = pt.granule
    window = 1 << 31
    live = []
    for _ in range(40):
        n = rng.choice([1, 2, 3, 17, 512, 513, 2048])
        iova = rng.randrange(0, window // g - n) * g
        pa = (iova + rng.choice([0, 0, 1 << 33, 7 * g])) & ((1 << 40) - 1)
        prot = rng.choice([R, W, R | W, R | W | C])
        ret = pt.map(iova, pa, n * g, prot)
        overlaps = [x for x in live if x[0] < iova + n * g and iova < x[0] + x[2]]
        if fmt.startswith("arm"):
            # arm_lpae_init_pte() lets a block replace a table of live pages: forget overlaps
            live = [x for x in live if x not in overlaps]
        if ret:
            assert -ret == impl.IOPGTABLE_FORMATS[fmt].map_exists_errno
            assert overlaps or fmt.startswith("arm")    # arm: may hit a forgotten leftover
            continue
        assert fmt.startswith("arm") or not overlaps
        live.append((iova, pa, n * g, prot))
    assert live
    for iova, pa, size, _ in live:
        for off in (0, size // 2 & ~7, size - 8):
            got = hw_walk(m, pt, iova + off)
            assert got is not None and got[0] == pa + off == pt.iova_to_phys(iova + off)
            tr = pt.translate(iova + off)
            assert tr[0] == pa + off and tr[2] == got[2] and bool(tr[1] & W) == got[1]
    for _ in range(100):
        va = rng.randrange(0, window) & ~7
        hw = hw_walk(m, pt, va)
        assert (hw[0] if hw else 0) == pt.iova_to_phys(va)
    for iova, _, size, _ in live:
        assert pt.unmap(iova, size) == size
    for iova, (_, size, _) in pt.get_state()["mappings"].items():
        assert pt.unmap(iova, size) == size       # arm leftovers of replaced ranges
    assert pt.get_state()["mappings"] == {}


# ---- differential: core vs reference -----------------------------------------------------------
def table_bytes(m, pt):
    return {p: m.mem_read(p, 4096 if p == pt.pgtable_root else pt.granule)
            for p, _ in pt.get_state()["tables"]}


op = st.one_of(
    st.tuples(st.just("map"), st.integers(0, 63), st.sampled_from([1, 2, 3, 512, 1024]),
              st.integers(0, 7), st.sampled_from([R, W, R | W, R | C, W | NX | MMIO, R | PRIV, 0])),
    st.tuples(st.just("unmap"), st.integers(0, 63), st.sampled_from([1, 2, 512, 1024])),
    st.tuples(st.just("map_pages"), st.integers(0, 63), st.integers(0, 1), st.integers(1, 3)),
    st.tuples(st.just("unmap_pages"), st.integers(0, 63), st.integers(0, 1), st.integers(1, 3)),
    st.tuples(st.just("translate"), st.integers(0, 1 << 22)),
    st.tuples(st.just("defer"), st.booleans()),
)


def run_ops(impl, fmt, ops):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    g = pt.granule
    blk = sizes(pt.pgsize_bitmap)[1]
    out = []
    for o in ops:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                if o[0] == "map":
                    _, slot, n, pslot, prot = o
                    r = pt.map(slot * 64 * g, pslot * blk, n * g, prot)
                elif o[0] == "unmap":
                    r = pt.unmap(o[1] * 64 * g, o[2] * g)
                elif o[0] == "map_pages":
                    pg = (g, blk)[o[2]]
                    r = pt.ops_map_pages(o[1] * 64 * g & ~(pg - 1), blk, pg, o[3], R | W)
                elif o[0] == "unmap_pages":
                    pg = (g, blk)[o[2]]
                    r = pt.ops_unmap_pages(o[1] * 64 * g & ~(pg - 1), pg, o[3])
                elif o[0] == "translate":
                    r = (pt.translate(o[1] * 8 * (g // 4096)), pt.iova_to_phys(o[1] * 8))
                else:
                    if not o[1]:
                        pt.release_pending()
                    pt.defer_free = o[1]
                    r = None
            except KernelBug as e:
                r = ("KernelBug", str(e))
        out.append((r, [str(x.message) for x in w]))
    return out, pt.get_state(), table_bytes(m, pt), m.mem.allocated_pages


@pytest.mark.parametrize("fmt", FORMATS)
@given(ops=st.lists(op, max_size=25))
def test_differential_core_vs_reference(fmt, ops):
    a = run_ops(dmaphys, fmt, ops)
    b = run_ops(reference, fmt, ops)
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2] == b[2]
    assert a[3] == b[3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_counters(impl, fmt):
    pt = impl.IoPgtable(machine(impl), fmt)
    g, blk = sizes(pt.pgsize_bitmap)[:2]
    if fmt == "amdv1" or fmt.startswith("riscv"):
        blk = SZ_2M                                         # the level-1 item, not a contiguous size
    assert pt.map(blk, 0, blk + g, R) == 0                  # one block leaf + one granule leaf
    assert pt.leaf_writes == 2
    assert pt.translate(blk + 5)[2] == blk and pt.walk_reads == pt.levels - 1
    assert pt.translate(2 * blk)[2] == g and pt.walk_reads == 2 * pt.levels - 1
    assert pt.translate(3 * blk) is None                    # stops at the empty entry
    assert pt.unmap(blk, blk + g) == blk + g and pt.leaf_writes == 4


# ---- differential: the single-granule fast paths and everything they must decline ---------------
one_op = st.one_of(
    # one granule at a slot inside a few 2 MiB-ish regions (tables mostly present after warm-up)
    st.tuples(st.just("map1"), st.integers(0, 2), st.integers(0, 7), st.integers(0, 3),
              st.sampled_from([R, W, R | W, R | C, W | NX | MMIO, R | PRIV, 0])),
    st.tuples(st.just("unmap1"), st.integers(0, 2), st.integers(0, 7)),
    # ops_map_pages / ops_unmap_pages of one granule, possibly misaligned
    st.tuples(st.just("ops1"), st.integers(0, 2), st.integers(0, 7), st.sampled_from([0, 8, 0x800])),
    st.tuples(st.just("big"), st.integers(0, 2)),                          # a block / large leaf
    st.tuples(st.just("unbig"), st.integers(0, 2)),
    # a user (or a device) scribbling on a table page, or freeing it under the table
    st.tuples(st.just("poke"), st.integers(0, 5), st.integers(0, 511),
              st.sampled_from([0, 1, 2, 3, 0x83, 0x1003, U64])),
    st.tuples(st.just("free"), st.integers(0, 5)),
    st.tuples(st.just("far"), st.sampled_from([1 << 47, (1 << 48) - SZ_4K, U64 - SZ_4K + 1, 1 << 57])),
    st.tuples(st.just("i2p"), st.integers(0, 2), st.integers(0, 7)),
)


def run_one_ops(impl, fmt, ops):
    m = machine(impl)
    pt = impl.IoPgtable(m, fmt)
    g = pt.granule
    blk = sizes(pt.pgsize_bitmap)[1]
    base = [0, 3 * blk, 77 * blk + 40 * g]
    for b in base:                                 # tables present for every region
        pt.map(b + 9 * g, 1 << 30, g, R)
    out = []
    for o in ops:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                tables = [p for p, _ in pt.get_state()["tables"]]
                if o[0] == "map1":
                    r = pt.map(base[o[1]] + o[2] * g, (1 << 30) + o[3] * g, g, o[4])
                elif o[0] == "unmap1":
                    r = pt.unmap(base[o[1]] + o[2] * g, g)
                elif o[0] == "ops1":
                    va = base[o[1]] + o[2] * g + o[3]
                    r = (pt.ops_map_pages(va, (1 << 30) + o[3], g, 1, R | W), pt.ops_unmap_pages(va, g, 1))
                elif o[0] == "big":
                    r = pt.map(base[o[1]] & ~(blk - 1), 1 << 31, blk, R | W)
                elif o[0] == "unbig":
                    r = pt.unmap(base[o[1]] & ~(blk - 1), blk)
                elif o[0] == "poke":
                    t = tables[o[1] % len(tables)]
                    r = m.mem_write(t + 8 * o[2], o[3].to_bytes(8, "little"))
                elif o[0] == "free":
                    t = tables[o[1] % len(tables)]
                    r = (t, m.free_pages(t, 1) if t != pt.pgtable_root or pt.granule == SZ_4K else None)
                elif o[0] == "far":
                    r = (pt.map(o[1], 0, g, R), pt.unmap(o[1], g), pt.iova_to_phys(o[1]))
                else:
                    va = base[o[1]] + o[2] * g + 5
                    r = (pt.iova_to_phys(va), pt.translate(va))
            except (KernelBug, ValueError) as e:
                r = (type(e).__name__, str(e))
        out.append((r, [str(x.message) for x in w]))
    return out, pt.leaf_writes, pt.table_pages, pt.walk_reads, m.mem.allocated_pages, \
        m.mem_read(pt.pgtable_root, 4096) if pt.pgtable_root else None


@pytest.mark.parametrize("fmt", FORMATS)
@given(ops=st.lists(one_op, max_size=30))
def test_differential_single_granule(fmt, ops):
    assert run_one_ops(dmaphys, fmt, ops) == run_one_ops(reference, fmt, ops)
