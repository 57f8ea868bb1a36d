# The common page-table object of drivers/iommu/io-pgtable.c + generic_pt's pt_iommu: IoPgtable
# holds a table in simulated RAM and dispatches io_pgtable_ops (map_pages, unmap_pages,
# iova_to_phys) to its format's code, split the way the kernel splits it: generic_pt.pxi
# (drivers/iommu/generic_pt: vtd-ss, x86-64) and io_pgtable_arm.pxi (io-pgtable-arm.c). Also the
# iommu_map()/iommu_unmap() page-size splitting of drivers/iommu/iommu.c (iommu_pgsize) and the
# single-granule fast paths of the DMA API.
#
# The tables live in simulated RAM (machine.mem), one naturally aligned allocation per table,
# entries little-endian in the real bit layout: a walker reading memory from pgtable_root sees
# exactly what iova_to_phys() sees. Host-side state is only a registry of the table pages this
# object owns (to free them and to refuse following corrupted pointers into foreign memory).
#
# Internal level numbering is generic_pt's: L = 0 is the table of smallest pages, the top table
# is L = levels - 1 (io-pgtable-arm's lvl is 3 - L). Item size at L = 1 << (pg_shift + bpl * L).
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, io_pgtable.pxd.

from collections import namedtuple as _namedtuple


IommuResvRegion = _namedtuple("IommuResvRegion", "start length prot type")
IommuResvRegion.__doc__ = (
    "struct iommu_resv_region: (start, length, prot, type) with type an enum iommu_resv_type.\n\n"
    "Mirrors struct iommu_resv_region (include/linux/iommu.h), as the IOMMU drivers' "
    "get_resv_regions() report them. A namedtuple: raises TypeError for a wrong number of fields.")

IoPgtableFormat = _namedtuple(
    "IoPgtableFormat",
    "name kernel family granule pgsize_bitmap ias oas levels sign_extend aperture_start aperture_end "
    "reserved_regions map_exists_errno partial_unmap")
IoPgtableFormat.__doc__ = (
    "A page-table format with its defaults: pgsize_bitmap, ias/oas, levels, domain aperture, the "
    "reserved regions the IOMMU driver reports, the errno of mapping over a live entry and what "
    "unmapping part of a large leaf does ('whole-leaf' for generic_pt, 'refuse' for io-pgtable-arm).\n\n"
    "Simulator-only: collects what the kernel spreads over struct io_pgtable_cfg, the generic_pt "
    "format headers and struct iommu_domain_geometry. A namedtuple: raises TypeError for a wrong "
    "number of fields.")

# intel_iommu_get_resv_regions(): IOAPIC_RANGE_START..END, prot 0, IOMMU_RESV_MSI
_VTD_RESV = (IommuResvRegion(0xFEE00000, 0x100000, 0, PT_IOMMU_RESV_MSI),)
# arm_smmu_get_resv_regions(): MSI_IOVA_BASE + MSI_IOVA_LENGTH, IOMMU_RESV_SW_MSI
_ARM_RESV = (IommuResvRegion(0x8000000, 0x100000, IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO, PT_IOMMU_RESV_SW_MSI),)

# amd_iommu_get_resv_regions(): the MSI window and the HyperTransport range
_AMD_RESV = (IommuResvRegion(0xFEE00000, 0x100000, IOMMU_WRITE, PT_IOMMU_RESV_MSI),
             IommuResvRegion(0xFD00000000, 0x300000000, 0, PT_IOMMU_RESV_RESERVED))


def _pt_resv(int fam):
    if fam == PT_FAM_RISCV:                  # riscv_iommu_ops has no get_resv_regions
        return ()
    return _ARM_RESV if fam == PT_FAM_ARM else _AMD_RESV if fam == PT_FAM_AMDV1 else _VTD_RESV


# name -> (family, granule, default ias, (ias min, max), default oas, (oas min, max), kernel).
# generic_pt (iommu_pt.h pt_iommu_init(), torvalds @152c862c; vtdss.h @cc4adab1 where the driver
# passes top_level): any oas up to pt_max_oa_lg2() = 52 (below 13 the domain would have no page
# size, which dmaphys refuses); vtd-ss takes any VA size its top level holds. io-pgtable-arm's
# limits are computed in _pt_sizes() (the ranges here are unused).
_PT_FMT = {
    "vtd-ss": (PT_FAM_VTDSS, 1 << 12, 48, (13, 48), 52, (13, 52), "generic_pt vtdss"),
    "vtd-ss-5level": (PT_FAM_VTDSS, 1 << 12, 57, (49, 57), 52, (13, 52), "generic_pt vtdss"),
    "x86-64": (PT_FAM_X86, 1 << 12, 48, (40, 48), 52, (13, 52), "generic_pt x86_64 (SIGN_EXTEND)"),
    "x86-64-5level": (PT_FAM_X86, 1 << 12, 57, (49, 57), 52, (13, 52), "generic_pt x86_64 (SIGN_EXTEND)"),
    "arm-lpae-s1-4k": (PT_FAM_ARM, 1 << 12, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s1-16k": (PT_FAM_ARM, 1 << 14, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s1-64k": (PT_FAM_ARM, 1 << 16, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s2-4k": (PT_FAM_ARM, 1 << 12, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    "arm-lpae-s2-16k": (PT_FAM_ARM, 1 << 14, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    "arm-lpae-s2-64k": (PT_FAM_ARM, 1 << 16, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    # the AMD driver's v1 domain (amd/iommu.c): starting_level 2, PT_FEAT_DYNAMIC_TOP, up to 6 levels
    "amdv1": (PT_FAM_AMDV1, 1 << 12, 48, (32, 64), 52, (13, 52), "generic_pt amdv1 (DYNAMIC_TOP)"),
    # fmt/riscv.h (riscvpt_iommu_fmt_init(): hw_max_vasz_lg2 39/48/57 only, oas up to 56)
    "riscv-sv39": (PT_FAM_RISCV, 1 << 12, 39, (39, 39), 56, (13, 56), "generic_pt riscv_64 Sv39 (SIGN_EXTEND)"),
    "riscv-sv48": (PT_FAM_RISCV, 1 << 12, 48, (48, 48), 56, (13, 56), "generic_pt riscv_64 Sv48 (SIGN_EXTEND)"),
    "riscv-sv57": (PT_FAM_RISCV, 1 << 12, 57, (57, 57), 56, (13, 56), "generic_pt riscv_64 Sv57 (SIGN_EXTEND)"),
}

# ARM_LPAE_TCR_PS_*_BIT: the output sizes TCR.IPS (stage 1) / VTCR.PS (stage 2) can encode
_ARM_TCR_PS = (32, 36, 40, 42, 44, 48, 52)


def _pt_sizes(str name, ias, oas):
    """The (ias, oas) a table of format ``name`` ends up with, adjusted as the kernel's init
    adjusts them; ValueError where the kernel refuses the configuration."""
    fam, gran, dias, irange, doas, orange, _ = _PT_FMT[name]
    ias = dias if ias is None else ias
    oas = doas if oas is None else oas
    if fam == PT_FAM_ARM:
        # arm_lpae_restrict_pgsizes() (v6.18): both clamped to 48 bits (52 for the 64K granule)
        pg_shift = gran.bit_length() - 1
        max_bits = 52 if pg_shift == 16 else 48
        ias = min(ias, max_bits)
        oas = min(oas, max_bits)
        if ias <= pg_shift:
            raise ValueError(f"{name}: ias {ias} leaves no level to translate (ias must exceed {pg_shift})")
        # arm_64_lpae_alloc_pgtable_s1(): oas must have a TCR.IPS encoding
        if oas not in _ARM_TCR_PS:
            raise ValueError(f"{name}: oas {oas} has no TCR.IPS encoding ({', '.join(map(str, _ARM_TCR_PS))})")
        return ias, oas
    if not irange[0] <= ias <= irange[1]:
        raise ValueError(f"{name}: ias {ias} outside {irange[0]}..{irange[1]}")
    if not orange[0] <= oas <= orange[1]:
        raise ValueError(f"{name}: oas {oas} outside {orange[0]}..{orange[1]}")
    return ias, oas


def _pt_geometry(int fam, u64 granule, int ias, int oas, bint s2=False):
    """(pg_shift, bits_per_level, levels, top_bits, pgsize_bitmap) of a configuration."""
    cdef int pg_shift = __ffs64(granule), bpl, levels, top, va_bits, L, isz
    cdef u64 bitmap
    if fam == PT_FAM_AMDV1:
        # amdv1pt_iommu_fmt_init(): starting_level 2 (3 levels; the top grows while mapping);
        # get_info() with DYNAMIC_TOP: every level whose items are below the VA size, each
        # amdv1pt_possible_sizes() (every power of two of the level but 512G; none at level 5),
        # hiding sizes >= 2^max_oasz
        bitmap = 0
        for L in range(AMDV1_MAX_TOP + 1):
            isz = 12 + 9 * L
            if isz >= ias:
                break
            if L < AMDV1_MAX_TOP:
                bitmap |= (U64_MAX >> (63 - min(51, isz + 8))) & ~((<u64>1 << isz) - 1)
        bitmap &= ~(<u64>1 << 39)
        if oas < 64:
            bitmap &= (<u64>1 << oas) - 1
        return 12, 9, 3, 9, bitmap
    if fam == PT_FAM_RISCV:
        # riscvpt_iommu_fmt_init(): top level 2/3/4; riscvpt_can_have_leaf() at every level, so
        # get_info() offers every level's item size up to the top, and the Svnapot 64K at level 0
        # (riscvpt_contig_count_lg2()), hiding sizes >= 2^max_oasz
        top = (ias - 12) // 9 - 1
        bitmap = (<u64>1 << 16) if oas > 16 else 0
        for L in range(top + 1):
            if 12 + 9 * L < oas:
                bitmap |= <u64>1 << (12 + 9 * L)
        return 12, 9, top + 1, 9, bitmap
    if fam != PT_FAM_ARM:
        # vtdss_pt_iommu_fmt_init() / x86_64_pt_iommu_fmt_init(): top level from the VA size
        if fam == PT_FAM_VTDSS:
            top = 4 if ias > 48 else (3 if ias > 39 else 2)
        else:
            top = (ias - 31) // 9 + 2
        bpl = 9
        levels = top + 1
        # pt_iommu get_info(): possible sizes of levels 0..2, hiding sizes >= 2^max_oasz
        bitmap = ((<u64>1 << 12) | (<u64>1 << 21) | (<u64>1 << 30)) & ((<u64>1 << oas) - 1)
    else:
        # arm_lpae_restrict_pgsizes() + arm_lpae_alloc_pgtable()
        bpl = pg_shift - 3
        va_bits = ias - pg_shift
        levels = (va_bits + bpl - 1) // bpl
        if pg_shift == 12:
            bitmap = (<u64>1 << 12) | (<u64>1 << 21) | (<u64>1 << 30)
        elif pg_shift == 14:
            bitmap = (<u64>1 << 14) | (<u64>1 << 25)
        else:
            bitmap = (<u64>1 << 16) | (<u64>1 << 29) | ((<u64>1 << 42) if oas > 48 else 0)
        if s2 and arm_lpae_concat_mandatory(pg_shift, 4 - levels, oas):
            # arm_64_lpae_alloc_pgtable_s2(): start one level lower with concatenated tables
            if (<u64>1) << (ias - (pg_shift + bpl * (levels - 1))) > ARM_LPAE_S2_MAX_CONCAT_PAGES:
                raise ValueError(f"stage 2: the {1 << (ias - (pg_shift + bpl * (levels - 1)))}-entry "
                                 f"start table would need more than 16 concatenated tables")
            levels -= 1
    return pg_shift, bpl, levels, ias - (pg_shift + bpl * (levels - 1)), bitmap


def _pt_describe(name, ias=None, oas=None):
    fam, gran, _, _, _, _, kernel = _PT_FMT[name]
    ias, oas = _pt_sizes(name, ias, oas)
    _, _, levels, _, bitmap = _pt_geometry(fam, gran, ias, oas, "-s2-" in name)
    sign = fam == PT_FAM_X86 or fam == PT_FAM_RISCV
    ap_end = (1 << (ias - 1)) - 1 if sign else (1 << ias) - 1
    return IoPgtableFormat(
        name, kernel, "generic_pt" if fam != PT_FAM_ARM else "io-pgtable-arm", gran, bitmap, ias, oas,
        levels, sign, 0, ap_end, _pt_resv(fam),
        EEXIST if fam == PT_FAM_ARM else EADDRINUSE, "refuse" if fam == PT_FAM_ARM else "whole-leaf")


IOPGTABLE_FORMATS = {_n: _pt_describe(_n) for _n in _PT_FMT}


# ---- memory access: direct frame lookups (PhysMem's two-level pfn table) ---------------------
cdef inline u64 _pt_rd(u8 ***l1, u64 addr) noexcept nogil:
    """Aligned little-endian 64-bit load from simulated memory (never-written reads as 0).

    l1 is PhysMem.l1, allocated once for the PhysMem's lifetime (IoPgtable holds the PhysMem)."""
    cdef u64 pfn = addr >> PAGE_SHIFT
    cdef u8 **l2
    cdef u8 *p
    if (pfn >> PFN_L2_SHIFT) >= PFN_L1_SIZE:
        return 0
    l2 = l1[pfn >> PFN_L2_SHIFT]
    if l2 == NULL:
        return 0
    p = l2[pfn & (PFN_L2_SIZE - 1)]
    if p == NULL:
        return 0
    return (<u64 *>(p + (addr & (PAGE_SIZE - 1))))[0]


cdef inline u64 *_pt_ptep(u8 ***l1, u64 addr) noexcept nogil:
    """Host pointer to the (aligned) 64-bit entry at addr, or NULL where the frame has no storage.

    Valid until the frame's storage is discarded: callers use it within one operation, after
    reading the entry through it (the same frame lookup _pt_rd makes)."""
    cdef u64 pfn = addr >> PAGE_SHIFT
    cdef u8 **l2
    if (pfn >> PFN_L2_SHIFT) >= PFN_L1_SIZE:
        return NULL
    l2 = l1[pfn >> PFN_L2_SHIFT]
    if l2 == NULL:
        return NULL
    if l2[pfn & (PFN_L2_SIZE - 1)] == NULL:
        return NULL
    return <u64 *>(l2[pfn & (PFN_L2_SIZE - 1)] + (addr & (PAGE_SIZE - 1)))


cdef inline int _pt_wr(PhysMem mem, u64 addr, u64 val) except -1:
    cdef u64 pfn = addr >> PAGE_SHIFT
    cdef u8 **l2
    cdef u8 *p = NULL
    if (pfn >> PFN_L2_SHIFT) < PFN_L1_SIZE:
        l2 = mem.l1[pfn >> PFN_L2_SHIFT]
        if l2 != NULL:
            p = l2[pfn & (PFN_L2_SIZE - 1)]
    if p == NULL:
        p = mem.page_ptr_alloc(pfn)
    (<u64 *>(p + (addr & (PAGE_SIZE - 1))))[0] = val
    return 0


cdef u64 _pt_run_iova_max(IoPgtable pt) noexcept:
    """IoPgtable.run_iova_max: the highest IOVA whose granule passes the range check of
    map_one_fast / unmap_one_check for sure (arm_lpae's iova >> ias; canonical() of the lower
    half, below bit ias - 1 where the format sign-extends), or 0 where they decline every IOVA
    (amdv1, riscv, a non-coherent walker). Fixed for the table's life."""
    cdef int b
    cdef u64 top
    if pt.family == PT_FAM_AMDV1 or pt.family == PT_FAM_RISCV or not pt.coherent_walk:
        return 0
    b = pt.ias - 1 if (pt.family != PT_FAM_ARM and pt.sign_extend) else pt.ias
    top = U64_MAX if b >= 64 else ((<u64>1) << b) - 1
    if top < pt.granule - 1 or top - (pt.granule - 1) == 0:
        return 0
    return top - (pt.granule - 1)


cdef inline u64 iommu_pgsize(u64 pgsize_bitmap, u64 iova, u64 paddr, u64 size, u64 *count) noexcept:
    """drivers/iommu/iommu.c iommu_pgsize(); 0 where the kernel BUG()s (no size fits)."""
    cdef u64 addr_merge = paddr | iova
    cdef u64 pgsizes, pgsize, nxt, offset
    cdef int idx
    if size == 0:
        return 0
    # sizes not larger than size, then not larger than the common alignment
    pgsizes = pgsize_bitmap & (U64_MAX >> (63 - (fls64(size) - 1)))
    if addr_merge:
        pgsizes &= U64_MAX >> (63 - __ffs64(addr_merge))
    if pgsizes == 0:
        return 0
    idx = fls64(pgsizes) - 1
    pgsize = (<u64>1) << idx
    if count != NULL:
        # a bigger page later? then stop at its alignment boundary
        pgsizes = pgsize_bitmap & ~(U64_MAX >> (63 - idx))
        if pgsizes:
            nxt = (<u64>1) << __ffs64(pgsizes)
            if ((iova ^ paddr) & (nxt - 1)) == 0:
                offset = nxt - (addr_merge & (nxt - 1))
                if offset + nxt <= size:
                    size = offset
        count[0] = size >> idx
    return pgsize


cdef inline int pt_compute_best_pgsize(u64 pgsz_bitmap, u64 va, u64 last_va, u64 oa) noexcept nogil:
    """generic_pt pt_compute_best_pgsize(): lg2 of the largest usable page size, 0 if none."""
    cdef u64 length, mask
    cdef int best
    if va >= last_va:
        return 0
    length = last_va - va + 1
    mask = va | oa | ((<u64>1) << (fls64(length) - 1))
    best = __ffs64(mask)
    if best < 63:
        pgsz_bitmap &= ((<u64>1) << (best + 1)) - 1
    if pgsz_bitmap == 0:
        return 0
    return fls64(pgsz_bitmap) - 1


@cython.final
cdef class IoPgtable:
    """One IOMMU page table in simulated RAM: ``IoPgtable(machine, fmt, ias=None, oas=None)``.

    ``fmt``: one of IOPGTABLE_FORMATS. ``force_coherence`` models PT_FEAT_VTDSS_FORCE_COHERENCE
    (SNP in every vtd-ss leaf); ``no_warn`` models IO_PGTABLE_QUIRK_NO_WARN (io-pgtable-arm).
    ``coherent_walk=False`` (io-pgtable-arm only) models cfg->coherent_walk false: every table is
    DMA-mapped to ``iommu_dev`` (the IOMMU's own Device, required then), the CPU's stores to the
    tables stay in its write-back cache (``machine.mem``'s dirty lines, which iova_to_phys sees)
    until __arm_lpae_sync_pte()'s dma_sync_single_for_device() cleans them to memory, which the
    hardware walk (translate, walk, device accesses) reads; table entries get ARM_LPAE_PTE_SW_SYNC.

    C API (iommu.pxi / dma_iommu.pxi): map_pages, unmap_pages, c_iova_to_phys, lookup,
    release_pending, free_tables; module level iommu_pgsize, pgtable_map, pgtable_unmap.
    Python API: map, unmap, ops_map_pages, ops_unmap_pages, iova_to_phys, translate, walk,
    get_state, iommu_pgsize, formats().

    Mirrors struct io_pgtable / struct pt_iommu (drivers/iommu/io-pgtable-arm.c,
    drivers/iommu/generic_pt), allocated like alloc_io_pgtable_ops() / pt_iommu_init(). Raises
    ValueError for an unknown ``fmt``, an ``ias``/``oas`` the format does not support,
    ``force_coherence`` on a format without it, or ``coherent_walk=False`` on a format other than
    io-pgtable-arm or without an ``iommu_dev`` of this machine; TypeError for a non-Machine,
    non-str or non-Device; MemoryError when no RAM is left for the top-level table.
    """

    def __cinit__(self, Machine machine not None, str fmt not None, ias=None, oas=None, *,
                 force_coherence=False, no_warn=False, coherent_walk=True, Device iommu_dev=None,
                 arm_hd=False):
        cdef u64 root
        if fmt not in _PT_FMT:
            raise ValueError(f"unknown page-table format {fmt!r}; known: {', '.join(_PT_FMT)}")
        fam, gran, _, _, _, _, _ = _PT_FMT[fmt]
        vias, voas = _pt_sizes(fmt, None if ias is None else _u64(ias, "ias"),
                               None if oas is None else _u64(oas, "oas"))
        if force_coherence and fam != PT_FAM_VTDSS and fam != PT_FAM_AMDV1:
            raise ValueError("force_coherence is a vtd-ss / amdv1 feature")
        if arm_hd and (fam != PT_FAM_ARM or "-s2-" in fmt):
            raise ValueError("arm_hd (IO_PGTABLE_QUIRK_ARM_HD) is an ARM_64_LPAE_S1 quirk")
        if not coherent_walk:
            if fam != PT_FAM_ARM:
                raise ValueError("coherent_walk=False is an io-pgtable-arm option")
            if iommu_dev is None or iommu_dev.machine is not machine:
                raise ValueError("a non-coherent walker needs iommu_dev, the IOMMU's own Device "
                                 "of this machine (the tables are DMA-mapped to it)")
        self.coherent_walk = bool(coherent_walk)
        self.iommu_dev = None if self.coherent_walk else iommu_dev
        self.machine = machine
        self.mem = machine.mem
        self.fmt = fmt
        self.family = fam
        self.granule = gran
        self.ias = vias
        self.oas = voas
        self.pg_shift, self.bpl, self.levels, self.top_bits, self.pgsize_bitmap = _pt_geometry(
            fam, gran, vias, voas, "-s2-" in fmt)
        self.arm_s2 = "-s2-" in fmt
        self.top = self.levels - 1
        self.l1 = self.mem.l1
        for L in range(self.levels):
            self.shifts[L] = self.pg_shift + self.bpl * L
            self.imask[L] = ((<u64>1) << (self.top_bits if L == self.top else self.bpl)) - 1
        if fam == PT_FAM_AMDV1:                  # every level the top may grow to: 512 items, 128 at 5
            for L in range(AMDV1_MAX_TOP + 1):
                self.shifts[L] = 12 + 9 * L
                self.imask[L] = 127 if L == AMDV1_MAX_TOP else 511
        self.sign_extend = fam == PT_FAM_X86 or fam == PT_FAM_RISCV
        self.aperture_start = 0
        self.aperture_end = (1 << (vias - 1)) - 1 if self.sign_extend else (1 << vias) - 1
        self.reserved_regions = _pt_resv(fam)
        self.force_coherence = bool(force_coherence)
        self.no_warn = bool(no_warn)
        self.arm_hd = bool(arm_hd)
        self.gran_pages = gran >> PAGE_SHIFT if gran >= PAGE_SIZE else 1
        if fam == PT_FAM_ARM:
            # __arm_lpae_alloc_pages(max(ARM_LPAE_PGD_SIZE, 64)): an order-n page allocation
            self.top_pages = roundup_pow_of_two((max(<u64>8 << self.top_bits, 64) + PAGE_SIZE - 1) >> PAGE_SHIFT)
        else:
            self.top_pages = 1                   # pt_top_memsize_lg2(): 4 KiB
        self.pgtable_root = 0
        self.lc_key = U64_MAX                    # the leaf-table cache starts empty
        self.lc_shift = self.shifts[0] + 9
        self.run_iova_max = _pt_run_iova_max(self)
        root = self.alloc_table(self.top)
        if root == U64_MAX:
            machine.flush_warnings()
            raise MemoryError("no RAM for the top-level page table" if self.coherent_walk else
                              "no RAM for the top-level page table, or its DMA mapping failed")
        self.pgtable_root = root

    # ---- geometry ------------------------------------------------------------------------
    cdef inline int shift(self, int L) noexcept nogil:
        return self.shifts[L]

    cdef inline int idx_bits(self, int L) noexcept nogil:
        if self.family == PT_FAM_AMDV1:          # every amdv1 table has 512 items (128 at level 5)
            return 7 if L == AMDV1_MAX_TOP else 9
        return self.top_bits if L == self.top else self.bpl

    cdef inline u64 index(self, u64 va, int L) noexcept nogil:
        return (va >> self.shifts[L]) & self.imask[L]

    cdef inline u64 item_start(self, u64 va, int L, u64 i) noexcept nogil:
        cdef int span = self.shift(L) + self.idx_bits(L)
        cdef u64 hi = 0 if span >= 64 else (va & ~((<u64>1 << span) - 1))
        return hi | (i << self.shift(L))

    cdef inline bint in_range(self, u64 va, u64 last) noexcept nogil:
        """pt_check_range() / the input-size check: both ends inside the table's VA space.

        With PT_FEAT_SIGN_EXTEND the kernel (iommu_pt.h/pt_iter.h, torvalds @152c862c) picks the
        all-ones prefix when *any* bit of va from ias-1 up is set, not only the sign bit: a va
        whose high bits are ones but whose bit ias-1 is clear passes and indexes the lower half
        (it aliases va mod 2^(ias-1)). dmaphys follows it; canonical() is the hardware's check."""
        cdef u64 hi = 0
        if self.family == PT_FAM_AMDV1:
            return amdv1_range_ok(self.ias, self.top, va, last)
        if self.sign_extend and (va >> (self.ias - 1)) != 0:
            hi = U64_MAX >> self.ias
        return (va >> self.ias) == hi and (last >> self.ias) == hi

    cdef inline bint canonical(self, u64 va, u64 last) noexcept nogil:
        """The hardware's input-address check: both ends in the table's VA space, sign-extended
        from bit ias-1 where the format sign-extends."""
        cdef u64 hi = 0
        if self.family == PT_FAM_AMDV1:          # the DTE mode's levels: upper bits must be 0
            return amdv1_range_ok(self.ias, self.top, va, last)
        if self.sign_extend and (va >> (self.ias - 1)) & 1:
            hi = U64_MAX >> self.ias
        return (va >> self.ias) == hi and (last >> self.ias) == hi

    cdef inline u64 leaf_size(self, u64 e, int L) noexcept nogil:
        """Bytes a leaf entry at level L maps (amdv1: a contiguous leaf encodes a larger size)."""
        if self.family == PT_FAM_AMDV1:
            return (<u64>1) << amdv1_leaf_lg2(e, L)
        if self.family == PT_FAM_RISCV and L == 0 and (e & RISCV_N):
            return 1 << 16                       # riscvpt_entry_num_contig_lg2(): 16 items
        return (<u64>1) << self.shifts[L]

    cdef int warn_alias(self, u64 va) except -1:
        """dmaphys's own warning where the kernel's pt_check_range() lets a non-canonical va alias."""
        if self.sign_extend and self.in_range(va, va) and not self.canonical(va, va):
            self.warn(f"dmaphys: generic_pt {self.fmt}: IOVA {va:#x} is not canonical for a {self.ias}-bit "
                      f"table; the kernel's pt_check_range() accepts it and it aliases "
                      f"{va & ((<u64>1 << (self.ias - 1)) - 1):#x} (a kernel bug)", "generic_pt:sign-alias")
        return 0

    cdef inline int level_name(self, int L) noexcept nogil:
        return 3 - L if self.family == PT_FAM_ARM else L

    # ---- table pages ---------------------------------------------------------------------
    cdef u64 alloc_table(self, int L) except? 0:
        """iommu_alloc_pages_node_sz() / __arm_lpae_alloc_pages(): zeroed, naturally aligned; U64_MAX = -ENOMEM."""
        cdef u64 n = self.top_pages if L == self.top else self.gran_pages
        cdef u64 phys = self.mem.alloc_pages_c(n, U64_MAX, n), dma
        if phys == U64_MAX:
            return U64_MAX
        self.mem.fill(phys, 0, n << PAGE_SHIFT)
        if not self.coherent_walk:
            # __arm_lpae_alloc_pages(): dma_map_single(cfg->iommu_dev, ..., DMA_TO_DEVICE) (its
            # cache clean makes the zeroed table visible to the walker); the IOMMU must see the
            # physical address itself
            dma = c_dma_map_single_attrs(self.iommu_dev, phys, n << PAGE_SHIFT, DMA_TO_DEVICE, 0)
            if c_dma_mapping_error(self.iommu_dev, dma):
                self.mem.free_pages_c(phys, n)
                return U64_MAX
            if dma != phys:
                self.warn(f"{self.iommu_dev.name}: Cannot accommodate DMA translation for IOMMU page tables")
                c_dma_unmap_page_attrs(self.iommu_dev, dma, n << PAGE_SHIFT, DMA_TO_DEVICE, 0)
                self.mem.free_pages_c(phys, n)
                return U64_MAX
        self.tables[phys] = L
        self.npages[phys] = n
        self.table_pages += n
        return phys

    cdef int release_table(self, u64 phys) except -1:
        """An unlinked table: freed now, or held for the IOTLB flush when defer_free is set."""
        cdef cppmap[u64, int].iterator it = self.tables.find(phys)
        if it == self.tables.end():
            return 0
        self.tables.erase(it)
        if self.defer_free:
            self.pending_free.push_back(phys)
        else:
            self.free_now(phys)
        return 0

    cdef int free_now(self, u64 phys) except -1:
        cdef cppmap[u64, u64].iterator it = self.npages.find(phys)
        cdef u64 n
        if it == self.npages.end():
            return 0
        n = deref(it).second
        self.npages.erase(it)
        if not self.coherent_walk:
            # __arm_lpae_free_pages(): dma_unmap_single(DMA_TO_DEVICE) (no cache maintenance on
            # arm64); the page's dirty lines, if any, are evicted now -- memory outside the tables
            # has no cache model
            c_dma_unmap_page_attrs(self.iommu_dev, phys, n << PAGE_SHIFT, DMA_TO_DEVICE, 0)
            self.mem.wb_clean(phys, n << PAGE_SHIFT)
        self.mem.free_pages_c(phys, n)
        self.table_pages -= n
        return 0

    cdef int release_freelist(self) except -1:
        cdef size_t i
        for i in range(self.freelist.size()):
            self.release_table(self.freelist[i])
        self.freelist.clear()
        return 0

    cdef inline bint owns(self, u64 phys) noexcept:
        return self.tables.find(phys) != self.tables.end()

    cdef int check_live(self) except -1:
        if self.pgtable_root == 0:
            raise ValueError(f"{self.fmt} page table was freed (free_tables())")
        return 0

    cdef void warn(self, str text, object once_key=None):
        self.machine.kwarn(KernelWarning, text, once_key)

    # ---- the CPU's accesses to table memory (the one place that knows the cache model) ------
    cdef inline u64 get_pte(self, u64 addr) noexcept nogil:
        """A CPU load of the entry at addr (READ_ONCE(*ptep)): through the CPU's cache."""
        if self.coherent_walk:
            return _pt_rd(self.l1, addr)
        return self.mem.wb_read64(addr)

    cdef inline int set_pte(self, u64 addr, u64 val) except -1:
        """A CPU store of the entry at addr: a non-coherent walker sees it only after sync_pte()."""
        if self.coherent_walk:
            return _pt_wr(self.mem, addr, val)
        return self.mem.wb_write64(addr, val)

    cdef int sync_pte(self, u64 addr, u64 num_entries) except -1:
        """__arm_lpae_sync_pte(): dma_sync_single_for_device(cfg->iommu_dev, the entries' DMA
        address (= phys), 8 * num_entries, DMA_TO_DEVICE), which cleans their cache lines."""
        self.table_syncs += 1
        self.table_sync_bytes += 8 * num_entries
        c_dma_sync_single_for_device(self.iommu_dev, addr, 8 * num_entries, DMA_TO_DEVICE)
        return 0

    # ---- entry encoding / decoding -------------------------------------------------------
    cdef inline int etype(self, u64 e, int L) noexcept nogil:
        """The entry type at level L: the format's decoder (generic_pt.pxi / io_pgtable_arm.pxi)."""
        if self.family == PT_FAM_ARM:
            return arm_etype(e, L)
        return gpt_etype(self.family, e, L)

    cdef inline u64 table_pa(self, u64 e) noexcept nogil:
        if self.family == PT_FAM_ARM:
            return arm_to_paddr(self.granule, e)
        if self.family == PT_FAM_RISCV:          # riscvpt_table_pa(): PPN << 12
            return (e & RISCV_PPN_MASK) << 2
        return e & PT_OA_MASK

    cdef inline u64 leaf_oa(self, u64 e) noexcept nogil:
        if self.family == PT_FAM_ARM:
            return arm_to_paddr(self.granule, e)
        if self.family == PT_FAM_RISCV:          # riscvpt_entry_oa(): a Svnapot PPN drops its low 4 bits
            return ((e & RISCV_PPN_MASK) << 2) & (~(<u64>0xFFFF) if (e & RISCV_N) else U64_MAX)
        return e & PT_OA_MASK

    cdef inline int decode_prot(self, u64 e, int acc) noexcept nogil:
        """IOMMU_* permissions a device gets through leaf e (acc: what the tables above allow)."""
        if self.family == PT_FAM_ARM:
            return arm_decode_prot(self.arm_s2, e)
        return gpt_decode_prot(self.family, e, acc)

    cdef inline int table_acc(self, u64 e) noexcept nogil:
        """IOMMU_READ/WRITE a table entry lets through."""
        if self.family == PT_FAM_ARM:
            return IOMMU_READ | IOMMU_WRITE
        return gpt_table_acc(self.family, e)

    # ==== single-granule fast paths ========================================================
    # One smallest-size page with every table of the walk present: the common case of the
    # DMA API (a 4 KiB dma_map_page / iommu_map). They read and write exactly what the general
    # paths above read and write in that case (same PTE bytes, same counters) and decline
    # (return NULL / 1 / 0 with nothing touched) in every other case -- a missing table, a
    # live entry, a large leaf, an argument the general path warns about or refuses -- so the
    # general path then runs from the start and produces the kernel's result.
    cdef inline u64 *leaf_cache(self, u64 iova) noexcept nogil:
        """The leaf-table cache (see io_pgtable.pxd): host pointer to iova's entry in the cached
        smallest-page table frame if the walk from the top would reach that frame, else NULL."""
        cdef int L
        if ((iova >> self.lc_shift) != self.lc_key or self.lc_root != self.pgtable_root
                or self.lc_gen != self.mem.frames_gen):
            return NULL
        L = self.top
        while L > 0:
            if self.lc_ptep[L][0] != self.lc_val[L]:
                return NULL
            L -= 1
        return self.lc_leaf + ((iova >> self.shifts[0]) & 511)

    cdef u64 *walk_fill(self, u64 iova) noexcept nogil:
        """walk_to_leaf_ptep()'s walk from the top; a walk that reaches the smallest-page table
        (levels >= 2, for the families with single-granule fast paths) fills the leaf-table cache."""
        cdef u64 table = self.pgtable_root, e
        cdef u64 *ptep
        cdef int L = self.top
        cdef u8 ***l1 = self.l1
        self.lc_key = U64_MAX                    # refilled below only by a complete walk
        while True:
            ptep = _pt_ptep(l1, table + ((iova >> self.shifts[L]) & self.imask[L]) * 8)
            if ptep == NULL:
                return NULL
            if L == 0:
                if self.top > 0:
                    self.lc_leaf = ptep - ((iova >> self.shifts[0]) & 511)
                    self.lc_root = self.pgtable_root
                    self.lc_gen = self.mem.frames_gen
                    self.lc_key = iova >> self.lc_shift
                return ptep
            e = ptep[0]
            if self.family == PT_FAM_ARM:
                if (e & ARM_TYPE_MASK) != ARM_TYPE_TABLE:
                    return NULL
                table = arm_to_paddr(self.granule, e)
            else:
                if self.family == PT_FAM_X86:
                    if not (e & X86_P):
                        return NULL
                elif e == 0:
                    return NULL
                if L <= 2 and (e & VTDSS_PS):
                    return NULL
                table = e & PT_OA_MASK
            self.lc_ptep[L] = ptep
            self.lc_val[L] = e
            L -= 1

    cdef inline u64 *walk_to_leaf_ptep(self, u64 iova) noexcept nogil:
        """Host pointer to iova's entry in its smallest-page table, NULL unless every table
        above is present (a table entry; for arm exactly TYPE_TABLE) and has storage. Served by
        the leaf-table cache when it holds iova's table frame (vtd-ss, x86-64, arm: the
        families of the single-granule fast paths; amdv1 and riscv never come here)."""
        cdef u64 *ptep = self.leaf_cache(iova)
        if ptep != NULL:
            return ptep
        return self.walk_fill(iova)

    cdef inline u64 leaf0_phys(self, u64 e, u64 iova) noexcept nogil:
        """iova_to_phys of entry e read from iova's slot in its smallest-page table (vtd-ss,
        x86-64, arm): 0 when it holds no leaf."""
        cdef u64 m = ((<u64>1) << self.shifts[0]) - 1
        if self.family == PT_FAM_ARM:
            if (e & ARM_TYPE_MASK) != ARM_TYPE_PAGE:
                return 0
            return arm_to_paddr(self.granule, e) | (iova & m)
        if self.family == PT_FAM_X86:
            if not (e & X86_P):
                return 0
        elif e == 0:
            return 0
        return (e & PT_OA_MASK & ~m) | (iova & m)

    cdef inline int map_one_fast(self, u64 iova, u64 paddr, int prot) noexcept nogil:
        """map_pages(iova, paddr, granule, 1, prot) when tables exist and the slot is empty:
        0 done, 1 declined (nothing touched)."""
        cdef u64 *ptep
        cdef u64 last = iova + self.granule - 1
        if self.family == PT_FAM_AMDV1 or self.family == PT_FAM_RISCV:   # always the general path
            return 1
        if ((iova | paddr) & (self.granule - 1) or not (prot & (IOMMU_READ | IOMMU_WRITE))
                or (paddr >> self.oas) or last < iova):
            return 1
        if self.family == PT_FAM_ARM:
            # arm_lpae_map_pages() range check; a non-coherent walker needs set_pte + the sync
            if iova >> self.ias or not self.coherent_walk:
                return 1
        elif not self.canonical(iova, last):      # an alias takes the general path (it warns)
            return 1
        ptep = self.walk_to_leaf_ptep(iova)
        if ptep == NULL or ptep[0] != 0:
            return 1
        if self.family == PT_FAM_ARM:            # arm_lpae_init_pte()
            ptep[0] = arm_prot_hd(self.arm_s2, self.arm_hd, prot) | ARM_TYPE_PAGE | arm_paddr_to_iopte(paddr)
        else:                                    # __map_range_leaf() at level 0
            ptep[0] = gpt_leaf(self.family, paddr, 0, gpt_prot(self.family, self.force_coherence, prot))
        self.leaf_writes += 1
        return 0

    cdef inline u64 *unmap_one_check(self, u64 iova, u64 *hint) noexcept nogil:
        """unmap_one_fast() without the store: host pointer of iova's present smallest-size
        leaf, or NULL (declined). ``hint``: see unmap_one_fast()."""
        cdef u64 *ptep
        cdef u64 e, last = iova + self.granule - 1
        if ((iova & (self.granule - 1)) or last < iova or self.family == PT_FAM_AMDV1
                or self.family == PT_FAM_RISCV or not self.coherent_walk):
            return NULL
        if self.family == PT_FAM_ARM:
            if iova >> self.ias:
                return NULL
        elif not self.canonical(iova, last):      # an alias takes the general path (it warns)
            return NULL
        if hint != NULL and (iova >> self.shifts[0]) == self.hint_page:
            ptep = hint                          # the same walk c_iova_to_phys just made
        else:
            ptep = self.walk_to_leaf_ptep(iova)
        if ptep == NULL:
            return NULL
        e = ptep[0]
        if self.family == PT_FAM_ARM:
            if (e & ARM_TYPE_MASK) != ARM_TYPE_PAGE:
                return NULL
        elif self.family == PT_FAM_X86:
            if not (e & X86_P):
                return NULL
        elif e == 0:
            return NULL
        return ptep

    cdef inline u64 unmap_one_fast(self, u64 iova, u64 *hint) noexcept nogil:
        """unmap_pages(iova, granule, 1) of a present smallest-size leaf: granule, or 0 declined.

        ``hint``: the host pointer of iova's leaf entry if the caller's walk just found it
        (c_iova_to_phys with hint_arm), else NULL."""
        cdef u64 *ptep = self.unmap_one_check(iova, hint)
        if ptep == NULL:
            return 0
        ptep[0] = 0
        self.leaf_writes += 1
        return self.granule

    # ==== GIL-free batch runs (dma_iommu.pxi: iommu_dma_map_phys_run / iommu_dma_unmap_phys_run) ====
    # What map_one_fast / unmap_one_check check per call and a run cannot change -- the family, the
    # walker's coherence, the protection bits, the input-range check of IOVAs below a bound -- is
    # checked once by run_begin(); run_map() and run_leaf_ptep() then read and write exactly what
    # map_one_fast() and unmap_one_check(iova, NULL) would for IOVAs <= r.iova_max (the caller
    # uses those functions themselves for any other IOVA), and run_end() adds the leaf stores.
    cdef inline bint run_begin(self, pt_run *r, int prot, bint trust) noexcept nogil:
        """Start a run: False where map_one_fast and unmap_one_check decline every IOVA (amdv1,
        riscv, a non-coherent walker, a freed table). ``prot``: the run's map protection (0
        for an unmap run); ``trust``: no memory write in the run but the run's own leaf stores
        (no CPU cache maintenance between them: see run_leaf_ptep)."""
        r.key = U64_MAX
        r.leaf = NULL
        r.nframes = 0
        r.fnext = 0
        r.writes = 0
        r.bits = 0
        r.trust = trust
        r.iova_max = self.run_iova_max
        if r.iova_max == 0 or self.pgtable_root == 0:
            return False
        if prot == 0:                            # an unmap run
            pass
        elif self.family == PT_FAM_ARM:          # arm_lpae_init_pte() without the address
            r.bits = arm_prot_hd(self.arm_s2, self.arm_hd, prot) | ARM_TYPE_PAGE
        else:                                    # __map_range_leaf() at level 0 without the address
            r.bits = gpt_leaf(self.family, 0, 0, gpt_prot(self.family, self.force_coherence, prot))
        return True

    cdef inline u64 *run_leaf_ptep(self, pt_run *r, u64 iova) noexcept nogil:
        """walk_to_leaf_ptep(iova) within a run. The first walk that reaches a leaf-table frame
        through the validated leaf-table cache (or fills it) makes that frame one of the run's
        trusted frames (up to PT_RUN_FRAMES: a lazy domain's IOVAs come back from the flush
        queue in an order that switches between leaf tables), used for the run's later IOVAs
        in it without checking root, frames_gen and the cached upper entries again. Why that
        gives what walk_to_leaf_ptep would:
        - the run holds the machine (machine_enter, or the GIL with no owner): no other thread
          runs this machine's code, and no Python code runs inside the run;
        - the only memory writes a trusted run makes are its own leaf stores into trusted
          frames (run_map's install, the unmap run's clear): rcache, flush-queue and IOTLB
          updates are host memory, and the run declines before anything that frees or allocates
          a table frame (frames_gen, pgtable_root) or cleans CPU cache lines into memory
          (r.trust is False for a device that needs arch_sync_dma_*);
        - a leaf store cannot change an upper entry any trusted frame's walk read: a frame is
          trusted only if none of the upper entries its own walk read lies in it or in another
          trusted frame, and none that the other trusted frames' walks read lies in it (a leaf
          frame that is also an upper table is possible only after stray writes; then every
          element validates as before);
        - after a store through any other path in the run (the caller's fallback to
          map_one_fast / unmap_one_check) the caller drops every trusted frame (run_drop), and
          so does run_trust when its walk reaches a frame it may not trust, since the caller
          stores through that walk's entry too (before this rule a stray table alias could
          clear a trusted frame's upper entry that way);
        - a new frame is trusted only after its own walk, made after every earlier store.
        Host writes into embedder-owned RAM (Machine.add_ram) from another thread while the
        run holds the machine would race with any check, per element or per run."""
        cdef u64 key = iova >> self.lc_shift
        cdef int j
        if key == r.key:
            return r.leaf + ((iova >> self.shifts[0]) & 511)
        for j in range(r.nframes):
            if r.fkey[j] == key:
                r.key = key
                r.leaf = r.fleaf[j]
                return r.leaf + ((iova >> self.shifts[0]) & 511)
        return self.run_trust(r, iova)

    cdef inline void run_drop(self, pt_run *r) noexcept nogil:
        """After a store through another path than the run's own: trust no frame any more."""
        r.key = U64_MAX
        r.nframes = 0
        r.fnext = 0

    cdef inline u64 *run_trust(self, pt_run *r, u64 iova) noexcept nogil:
        """run_leaf_ptep's walk for an IOVA in no trusted frame; trusts the frame it reaches when
        the rules in run_leaf_ptep allow (else the run walks again next time)."""
        cdef u64 key = iova >> self.lc_shift
        cdef u64 *ptep = self.walk_to_leaf_ptep(iova)
        cdef u64 *lo
        cdef u64 *up
        cdef int L, j, s
        if ptep == NULL:
            return ptep                          # (nothing will be stored)
        if not r.trust or self.lc_key != key:
            self.run_drop(r)                     # the caller may store through ptep: trust nothing
            return ptep
        lo = self.lc_leaf
        for L in range(1, self.top + 1):
            up = self.lc_ptep[L]
            if lo <= up < lo + 512:
                self.run_drop(r)
                return ptep
            for j in range(r.nframes):
                if r.fleaf[j] <= up < r.fleaf[j] + 512:
                    self.run_drop(r)
                    return ptep
        for j in range(r.nframes):
            for L in range(1, self.top + 1):
                if lo <= r.fup[j * 8 + L] < lo + 512:
                    self.run_drop(r)
                    return ptep
        if r.nframes < PT_RUN_FRAMES:
            s = r.nframes
            r.nframes += 1
        else:                                    # replace one: dropping trust in a frame is always safe
            s = r.fnext
            r.fnext = (s + 1) % PT_RUN_FRAMES
        r.fkey[s] = key
        r.fleaf[s] = lo
        for L in range(1, self.top + 1):
            r.fup[s * 8 + L] = self.lc_ptep[L]
        r.key = key
        r.leaf = lo
        return ptep

    cdef inline int run_map(self, pt_run *r, u64 iova, u64 paddr) noexcept nogil:
        """map_one_fast(iova, paddr, prot) of the run's prot (which has IOMMU_READ or
        IOMMU_WRITE) for a granule-aligned iova <= r.iova_max and a granule-aligned paddr:
        0 done, 1 declined (nothing touched)."""
        cdef u64 *ptep
        if paddr >> self.oas:
            return 1
        ptep = self.run_leaf_ptep(r, iova)
        if ptep == NULL or ptep[0] != 0:
            return 1
        if self.family == PT_FAM_ARM:
            ptep[0] = r.bits | arm_paddr_to_iopte(paddr)
        else:
            ptep[0] = r.bits | (paddr & PT_OA_MASK)
        r.writes += 1
        return 0

    cdef inline void run_end(self, pt_run *r) noexcept nogil:
        """End a run: its leaf stores join leaf_writes."""
        self.leaf_writes += r.writes
        r.writes = 0

    # ==== io_pgtable_ops (the C API) ======================================================
    cdef int map_pages(self, u64 iova, u64 paddr, u64 pgsize, u64 pgcount, int prot,
                       u64 *mapped) except? -9999:
        """io_pgtable_ops->map_pages: 0 or -errno; *mapped += bytes mapped."""
        if pgcount == 1 and pgsize == self.granule and self.pgtable_root != 0:
            if self.map_one_fast(iova, paddr, prot) == 0:
                mapped[0] += pgsize
                return 0
        self.check_live()
        if self.family == PT_FAM_ARM:
            return arm_map_pages(self, iova, paddr, pgsize, pgcount, prot, mapped)
        return gpt_map_pages(self, iova, paddr, pgsize, pgcount, prot, mapped)

    cdef u64 unmap_pages(self, u64 iova, u64 pgsize, u64 pgcount) except? 0xFFFFFFFFFFFFFFFF:
        """io_pgtable_ops->unmap_pages: bytes unmapped (0 on refusal or at a hole)."""
        cdef u64 n
        cdef u64 *hint = self.hint_ptep
        self.hint_ptep = NULL
        if pgcount == 1 and pgsize == self.granule and self.pgtable_root != 0:
            n = self.unmap_one_fast(iova, hint)
            if n:
                return n
        self.check_live()
        if self.family == PT_FAM_ARM:
            return arm_unmap_pages(self, iova, pgsize, pgcount)
        return gpt_unmap_pages(self, iova, pgsize, pgcount)

    cdef u64 c_iova_to_phys(self, u64 iova) noexcept nogil:
        """io_pgtable_ops->iova_to_phys: 0 when unmapped.

        generic_pt returns its range error as the (negative) errno cast to phys_addr_t, exactly
        as pt_iommu_<fmt>_iova_to_phys() does; arm_lpae_iova_to_phys() ignores IOVA bits above
        the table (it only indexes). One loop per family: the hot path of every translation."""
        cdef u64 table = self.pgtable_root, e, m
        cdef int L = self.top
        cdef u8 ***l1 = self.l1
        cdef bint arm = self.hint_arm
        self.hint_arm = False
        self.hint_ptep = NULL
        if table == 0:
            return 0
        if self.family == PT_FAM_AMDV1 or self.family == PT_FAM_RISCV:
            return gpt_iova_to_phys(self, iova)
        if not self.coherent_walk:               # the kernel reads the tables through the cache
            return arm_iova_to_phys_cpu(self, iova)
        if arm:
            return self._iova_to_phys_hint(iova)
        if self.family == PT_FAM_ARM:
            while True:                          # arm_lpae_iova_to_phys()
                e = _pt_rd(l1, table + ((iova >> self.shifts[L]) & self.imask[L]) * 8)
                if L == 0:
                    if (e & ARM_TYPE_MASK) != ARM_TYPE_PAGE:
                        return 0
                elif (e & ARM_TYPE_MASK) == ARM_TYPE_TABLE:
                    table = arm_to_paddr(self.granule, e)
                    L -= 1
                    continue
                elif (e & ARM_TYPE_MASK) != ARM_TYPE_BLOCK:
                    return 0
                return arm_to_paddr(self.granule, e) | (iova & (((<u64>1) << self.shifts[L]) - 1))
        if not self.in_range(iova, iova):
            return <u64>(-ERANGE)
        while True:                              # pt_iommu_<fmt>_iova_to_phys(): __iova_to_phys
            e = _pt_rd(l1, table + ((iova >> self.shifts[L]) & self.imask[L]) * 8)
            if self.family == PT_FAM_X86:
                if not (e & X86_P):
                    return 0
            elif e == 0:
                return 0
            if L == 0 or (L <= 2 and (e & VTDSS_PS)):
                m = ((<u64>1) << self.shifts[L]) - 1
                return (e & PT_OA_MASK & ~m) | (iova & m)
            table = e & PT_OA_MASK
            L -= 1

    cdef u64 _iova_to_phys_hint(self, u64 iova) noexcept nogil:
        """c_iova_to_phys() (pgtable_root != 0; vtd-ss, x86-64, arm) that also leaves the
        smallest-page entry's host pointer in hint_ptep: walk_to_leaf_ptep() (the leaf-table
        cache or the walk; the same entries, so the same result), or the plain walk where it
        stops above the smallest pages (a large leaf, a hole, a frame without storage)."""
        cdef u64 *ptep
        if self.family != PT_FAM_ARM and not self.in_range(iova, iova):
            return <u64>(-ERANGE)
        ptep = self.walk_to_leaf_ptep(iova)
        if ptep == NULL:
            return self.c_iova_to_phys(iova)     # hint_arm is off now: the plain walk
        self.hint_ptep = ptep
        self.hint_page = iova >> self.shifts[0]
        return self.leaf0_phys(ptep[0], iova)

    cdef int lookup(self, u64 iova, u64 *phys, int *prot, u64 *leaf_size) noexcept nogil:
        """The hardware walk: 0 and the translation, IOMMU_* permissions and leaf size, or -1."""
        cdef u64 table = self.pgtable_root, e, size
        cdef int L, t, acc = IOMMU_READ | IOMMU_WRITE
        if table == 0 or not self.canonical(iova, iova):
            return -1
        L = self.top
        while L >= 0:
            e = _pt_rd(self.l1, table + 8 * self.index(iova, L))
            self.walk_reads += 1
            t = self.etype(e, L)
            if t == PT_OA:
                size = self.leaf_size(e, L)
                phys[0] = (self.leaf_oa(e) & ~(size - 1)) | (iova & (size - 1))
                prot[0] = self.decode_prot(e, acc)
                leaf_size[0] = size
                return 0
            if t != PT_TABLE:
                return -1
            acc &= self.table_acc(e)
            table = self.table_pa(e)
            L -= 1
        return -1

    # ---- dirty tracking (iommu_dirty_ops) ---------------------------------------------------
    cdef bint has_dirty(self) noexcept nogil:
        """The format has write-dirty state the kernel reads (pt_entry_is_write_dirty defined:
        vtd-ss, amdv1; io-pgtable-arm stage 1 with IO_PGTABLE_QUIRK_ARM_HD)."""
        if self.family == PT_FAM_ARM:
            return self.arm_hd
        return gpt_has_dirty(self.family)

    cdef void hw_set_dirty(self, u64 iova) noexcept nogil:
        """The IOMMU's atomic dirty update of iova's leaf entry for a write request (VT-d SSADE
        and AMD HAD set D in the entry of the accessed item; SMMUv3 HD clears AP[2] of a DBM
        leaf). Not a counted walk: walk_reads and leaf_writes are unchanged."""
        cdef u64 table = self.pgtable_root, e
        cdef u64 *ptep
        cdef int L = self.top, t
        if table == 0:
            return
        while L >= 0:
            ptep = _pt_ptep(self.l1, table + 8 * self.index(iova, L))
            if ptep == NULL:
                return
            e = ptep[0]
            t = self.etype(e, L)
            if t == PT_OA:
                ptep[0] = arm_make_write_dirty(e) if self.family == PT_FAM_ARM else gpt_make_write_dirty(self.family, e)
                return
            if t != PT_TABLE:
                return
            table = self.table_pa(e)
            L -= 1

    cdef int read_and_clear_dirty(self, u64 iova, u64 size, u64 flags, list rec, u64 *gather) except? -9999:
        """io_pgtable_ops->read_and_clear_dirty / pt_iommu_<fmt>_read_and_clear_dirty(): append
        each iommu_dirty_bitmap_record() as (iova, length) to rec, widen gather[0..1] (the
        iommu_iotlb_gather's start / end) by what it clears; 0 or -errno."""
        if self.pgtable_root == 0:
            return -EINVAL
        if self.family == PT_FAM_ARM:
            return arm_read_and_clear_dirty(self, iova, size, flags, rec, gather)
        return gpt_read_and_clear_dirty(self, iova, size, flags, rec, gather)

    cpdef int release_pending(self) except -1:
        """Free the table pages collected while defer_free was set (after the IOTLB flush).

        Models the freelist release of iommu_put_pages_list() after iommu_iotlb_sync()
        (drivers/iommu/iommu-pages.c). Returns 0. Raises nothing.
        """
        cdef vector[u64] pend
        cdef size_t i
        pend.swap(self.pending_free)
        for i in range(pend.size()):
            self.free_now(pend[i])
        return 0

    cpdef int free_tables(self) except -1:
        """Free every table page (domain teardown: pt_iommu_deinit() / arm_lpae_free_pgtable()).

        Models drivers/iommu/generic_pt pt_iommu_deinit() and
        io-pgtable-arm.c:arm_lpae_free_pgtable(). Returns 0; afterwards map / unmap / ops_* raise
        ValueError. Raises nothing.
        """
        cdef vector[u64] live
        cdef cppmap[u64, int].iterator it = self.tables.begin()
        cdef size_t i
        while it != self.tables.end():
            live.push_back(deref(it).first)
            inc(it)
        self.tables.clear()
        for i in range(live.size()):
            self.free_now(live[i])
        self.release_pending()
        self.pgtable_root = 0
        return 0

    # ---- Python API ----------------------------------------------------------------------
    def map(self, iova, paddr, size, prot):
        """iommu_map() on this table alone: 0 or -errno (a failed map is unwound).

        Models drivers/iommu/iommu.c:iommu_map() (its iommu_pgsize() loop over map_pages) without a
        domain. Returns 0 or -errno (-EINVAL unaligned, -ENOMEM no table page, the format's error
        for an occupied entry). Raises ValueError for a table free_tables() freed or an argument
        beyond 64 bits, TypeError for a non-int, KernelBug where the kernel BUGs (no page size
        fits). Warns KernelWarning for the format's WARNs.
        """
        cdef u64 a = _u64(iova, "iova"), p = _u64(paddr, "paddr"), s = _u64(size, "size")
        cdef u64 pr = _u64(prot, "prot")
        self.check_live()
        try:
            return pgtable_map(self, a, p, s, <int>pr)
        finally:
            self.machine.flush_warnings()

    def unmap(self, iova, size):
        """iommu_unmap() on this table alone: bytes unmapped (the kernel's size_t).

        Models drivers/iommu/iommu.c:__iommu_unmap() without a domain. Returns the bytes unmapped (0
        for an unaligned range or nothing mapped). Raises ValueError for a table free_tables() freed
        or an argument beyond 64 bits, TypeError for a non-int, KernelBug where the kernel BUGs (no
        page size fits). Warns KernelWarning for the format's WARNs.
        """
        cdef u64 a = _u64(iova, "iova"), s = _u64(size, "size")
        self.check_live()
        try:
            return pgtable_unmap(self, a, s)
        finally:
            self.machine.flush_warnings()

    def ops_map_pages(self, iova, paddr, pgsize, pgcount, prot):
        """io_pgtable_ops->map_pages called directly: (0 or -errno, bytes mapped).

        Models struct io_pgtable_ops map_pages (arm_lpae_map_pages(), generic_pt map_pages). Returns
        the tuple ``(ret, mapped)``. Raises ValueError for a table free_tables() freed or an
        argument beyond 64 bits, TypeError for a non-int. Warns KernelWarning for the format's
        WARNs.
        """
        cdef u64 a = _u64(iova, "iova"), p = _u64(paddr, "paddr"), s = _u64(pgsize, "pgsize")
        cdef u64 c = _u64(pgcount, "pgcount"), pr = _u64(prot, "prot"), mapped = 0
        cdef int ret
        self.check_live()
        try:
            ret = self.map_pages(a, p, s, c, <int>pr, &mapped)
            return ret, mapped
        finally:
            self.machine.flush_warnings()

    def ops_unmap_pages(self, iova, pgsize, pgcount):
        """io_pgtable_ops->unmap_pages called directly: bytes unmapped.

        Models struct io_pgtable_ops unmap_pages (arm_lpae_unmap_pages(), generic_pt unmap_pages).
        Returns the bytes unmapped (int). Raises ValueError for a table free_tables() freed or an
        argument beyond 64 bits, TypeError for a non-int. Warns KernelWarning for the format's
        WARNs.
        """
        cdef u64 a = _u64(iova, "iova"), s = _u64(pgsize, "pgsize"), c = _u64(pgcount, "pgcount")
        self.check_live()
        try:
            return self.unmap_pages(a, s, c)
        finally:
            self.machine.flush_warnings()

    def iova_to_phys(self, iova):
        """io_pgtable_ops->iova_to_phys: the physical address, 0 when unmapped.

        Models struct io_pgtable_ops iova_to_phys (arm_lpae_iova_to_phys(), generic_pt
        iova_to_phys). Returns the physical address (int), 0 when unmapped or freed
        (generic_pt formats: -ERANGE cast to u64 for an IOVA beyond the table). Raises
        TypeError / ValueError for a non-int or out-of-range ``iova``. Warns KernelWarning when a
        non-canonical IOVA aliases a canonical one.
        """
        cdef u64 a = _u64(iova, "iova")
        if self.pgtable_root:
            self.warn_alias(a)
            self.machine.flush_warnings()
        return self.c_iova_to_phys(a)

    def translate(self, iova):
        """The hardware walk (lookup): (phys, prot, leaf_size) or None on a translation fault.

        Simulator-only: what the IOMMU hardware's table walk finds (no walk in the kernel). Returns
        the tuple or None. Raises TypeError / ValueError for a non-int or out-of-range ``iova``.
        """
        cdef u64 phys = 0, size = 0
        cdef int prot = 0
        if self.lookup(_u64(iova, "iova"), &phys, &prot, &size) < 0:
            return None
        return phys, prot, size

    def iommu_pgsize(self, iova, paddr, size):
        """iommu_pgsize() with this table's bitmap: (pgsize, count).

        Models drivers/iommu/iommu.c:iommu_pgsize(). Returns the tuple ``(pgsize, count)``. Raises
        ValueError for ``size`` 0 or an argument beyond 64 bits, TypeError for a non-int, KernelBug
        when no page size fits (the kernel's BUG_ON(!pgsizes)).
        """
        cdef u64 a = _u64(iova, "iova"), p = _u64(paddr, "paddr"), s = _u64(size, "size"), count = 0
        cdef u64 pgsize
        if s == 0:
            raise ValueError("size must be > 0")
        pgsize = iommu_pgsize(self.pgsize_bitmap, a, p, s, &count)
        if pgsize == 0:
            raise KernelBug(f"iommu_pgsize(): no page size fits iova {a:#x} paddr {p:#x} size {s:#x}")
        return pgsize, count

    def walk(self, iova):
        """The levels a hardware walk of ``iova`` visits, decoded (does not count walk_reads).

        Simulator-only (debugging aid). Returns a dict: ``iova``, ``levels`` (per level: level,
        table, index, pte_addr, pte, type), ``phys``, ``leaf_size``, ``prot`` and ``fault`` (None,
        "translation", "address size" or "freed"). Raises TypeError / ValueError for a non-int or
        out-of-range ``iova``.
        """
        cdef u64 va = _u64(iova, "iova"), table, e, i, size
        cdef int L, t, acc = IOMMU_READ | IOMMU_WRITE
        out = {"iova": va, "levels": [], "phys": None, "leaf_size": 0, "prot": 0, "fault": None}
        if self.pgtable_root == 0:
            out["fault"] = "freed"
            return out
        if not self.canonical(va, va):
            out["fault"] = "address size"
            return out
        table = self.pgtable_root
        L = self.top
        while L >= 0:
            i = self.index(va, L)
            e = _pt_rd(self.l1, table + 8 * i)
            t = self.etype(e, L)
            out["levels"].append({"level": self.level_name(L), "table": table, "index": i,
                                  "pte_addr": table + 8 * i, "pte": e,
                                  "type": ("empty", "table", "leaf", "invalid")[t]})
            if t == PT_OA:
                size = self.leaf_size(e, L)
                out["phys"] = (self.leaf_oa(e) & ~(size - 1)) | (va & (size - 1))
                out["leaf_size"] = size
                out["prot"] = self.decode_prot(e, acc)
                return out
            if t != PT_TABLE:
                out["fault"] = "translation"
                return out
            acc &= self.table_acc(e)
            table = self.table_pa(e)
            L -= 1
        out["fault"] = "translation"
        return out

    cdef int collect_leaves(self, u64 table, int L, u64 base, int acc, dict out) except -1:
        cdef u64 i = 0, n = (<u64>1) << self.idx_bits(L), e, va, size, child, step
        cdef int t
        while i < n:
            e = self.get_pte(table + 8 * i)      # the kernel's view (through the CPU's cache)
            t = self.etype(e, L)
            va = base | (i << self.shift(L))
            step = 1
            if t == PT_OA:
                size = self.leaf_size(e, L)
                if size > ((<u64>1) << self.shift(L)):       # one contiguous leaf, reported once
                    step = size >> self.shift(L)
                if self.sign_extend and (va >> (self.ias - 1)) & 1:
                    va |= ~((<u64>1 << self.ias) - 1)
                out[va] = (self.leaf_oa(e) & ~(size - 1), size, self.decode_prot(e, acc))
            elif t == PT_TABLE and L > 0:
                child = self.table_pa(e)
                if self.owns(child):
                    self.collect_leaves(child, L - 1, va, acc & self.table_acc(e), out)
            i += step
        return 0

    def get_state(self):
        """Snapshot: {leaf iova: (phys, size, prot)}, tables, pending frees and counters.

        Simulator-only (differential tests). Returns the dict. Raises nothing.
        """
        cdef dict mappings = {}
        cdef cppmap[u64, int].iterator it = self.tables.begin()
        tables = []
        if self.pgtable_root:
            self.collect_leaves(self.pgtable_root, self.top, 0, IOMMU_READ | IOMMU_WRITE, mappings)
        while it != self.tables.end():
            tables.append((deref(it).first, self.level_name(deref(it).second)))
            inc(it)
        return {"fmt": self.fmt, "pgtable_root": self.pgtable_root, "mappings": mappings,
                "tables": tables, "pending_free": sorted(self.pending_free),
                "leaf_writes": self.leaf_writes, "table_pages": self.table_pages,
                "walk_reads": self.walk_reads}

    # ---- test/benchmark hooks (C loops without Python call overhead; not public API) ------
    def _store_pte(self, pte_addr, val):
        """A bare CPU store to an entry of this table (set_pte, no sync): what a driver that
        forgets __arm_lpae_sync_pte() would leave for a non-coherent walker."""
        cdef u64 a = _u64(pte_addr, "pte_addr"), v = _u64(val, "val")
        cdef cppmap[u64, u64].iterator it
        self.check_live()
        it = self.npages.upper_bound(a)
        if a & 7 or it == self.npages.begin() or a >= deref(dec(it)).first + (deref(it).second << PAGE_SHIFT):
            raise ValueError(f"{a:#x} is not an entry of this table")
        self.set_pte(a, v)

    def _sync_pte(self, pte_addr, num_entries=1):
        """__arm_lpae_sync_pte() of num_entries entries at pte_addr (non-coherent walkers)."""
        cdef u64 a = _u64(pte_addr, "pte_addr"), n = _u64(num_entries, "num_entries")
        self.check_live()
        if self.coherent_walk:
            raise ValueError("the walk is coherent: there is nothing to sync")
        try:
            self.sync_pte(a, n)
        finally:
            self.machine.flush_warnings()

    def _bench_map_unmap(self, const u64[::1] iovas, u64 paddr, int prot):
        """pgtable_map + pgtable_unmap of one granule at each iova (C loop); returns failures."""
        cdef size_t i
        cdef u64 fails = 0, g = self.pgsize_bitmap & (~self.pgsize_bitmap + 1)
        self.check_live()
        for i in range(<size_t>iovas.shape[0]):
            if pgtable_map(self, iovas[i], paddr, g, prot) != 0:
                fails += 1
            elif pgtable_unmap(self, iovas[i], g) != g:
                fails += 1
        self.machine.flush_warnings()
        return fails

    def _bench_map(self, const u64[::1] iovas, const u64[::1] paddrs, int prot):
        """pgtable_map of one granule per (iova, paddr) (C loop); returns failures."""
        cdef size_t i
        cdef u64 fails = 0, g = self.pgsize_bitmap & (~self.pgsize_bitmap + 1)
        self.check_live()
        for i in range(<size_t>iovas.shape[0]):
            if pgtable_map(self, iovas[i], paddrs[i], g, prot) != 0:
                fails += 1
        self.machine.flush_warnings()
        return fails

    def _bench_iova_to_phys(self, const u64[::1] iovas, u64 reps):
        """c_iova_to_phys over iovas, reps times (C loop); returns the xor of the results."""
        cdef size_t i, n = <size_t>iovas.shape[0]
        cdef u64 r, acc = 0
        for r in range(reps):
            for i in range(n):
                acc ^= self.c_iova_to_phys(iovas[i])
        return acc

    def _bench_lookup(self, const u64[::1] iovas, u64 reps):
        """lookup (hardware walk) over iovas, reps times (C loop); returns the xor of the results."""
        cdef size_t i, n = <size_t>iovas.shape[0]
        cdef u64 r, acc = 0, phys = 0, size = 0
        cdef int prot = 0
        for r in range(reps):
            for i in range(n):
                if self.lookup(iovas[i], &phys, &prot, &size) == 0:
                    acc ^= phys
        return acc

    @staticmethod
    def formats():
        """The format descriptors (IoPgtableFormat), by name.

        Simulator-only (the kernel's formats are compile-time). Returns a list of IoPgtableFormat,
        in IOPGTABLE_FORMATS order. Raises nothing.
        """
        return list(IOPGTABLE_FORMATS.values())

    @property
    def arm_lpae_cfg(self):
        """io-pgtable-arm formats: the io_pgtable_cfg register values (stage 1 {tcr, mair, ttbr},
        stage 2 {vtcr, vttbr}); the walk attributes follow coherent_walk. None for other formats."""
        return _arm_lpae_cfg(self) if self.family == PT_FAM_ARM else None

    @property
    def descriptor(self):
        """This table's IoPgtableFormat (with its own ias/oas).

        Read-only.
        """
        return _pt_describe(self.fmt, self.ias, self.oas)

    def __repr__(self):
        return (f"<dmaphys.IoPgtable {self.fmt} ias={self.ias} levels={self.levels} "
                f"root={self.pgtable_root:#x} table_pages={self.table_pages}>")


cdef int iommu_map_pages_loop(IoPgtable pt, u64 pgsize_bitmap, u64 iova, u64 paddr, u64 size,
                              int prot, u64 *done) except? -9999:
    """The loop of __iommu_map(): split the range with iommu_pgsize() and map_pages() each run.

    0 or the first -errno; *done = bytes mapped. Callers check alignment first and unwind
    their own way (pgtable_map directly, iommu_map_nosync through iommu_unmap + IOTLB sync).
    """
    cdef u64 min_pagesz = (<u64>1) << __ffs64(pgsize_bitmap)
    cdef u64 orig_size = size, pgsize, count, mapped
    cdef int ret = 0
    while size:
        if size == min_pagesz:                   # iommu_pgsize() -> (min_pagesz, 1)
            pgsize = min_pagesz
            count = 1
        else:
            pgsize = iommu_pgsize(pgsize_bitmap, iova, paddr, size, &count)
        if pgsize == 0:
            raise KernelBug(f"iommu_pgsize(): BUG_ON(!pgsizes) iova {iova:#x} paddr {paddr:#x} size {size:#x}")
        mapped = 0
        ret = pt.map_pages(iova, paddr, pgsize, count, prot, &mapped)
        size -= mapped
        if ret:
            break
        if mapped == 0:
            raise KernelBug("map_pages() mapped nothing and reported success: iommu_map would spin")
        iova += mapped
        paddr += mapped
    done[0] = orig_size - size
    return ret


cdef int pgtable_map(IoPgtable pt, u64 iova, u64 paddr, u64 size, int prot) except? -9999:
    """iommu_map_nosync()'s loop over iommu_pgsize(): 0 or -errno, unwinding a partial map."""
    cdef u64 min_pagesz = (<u64>1) << __ffs64(pt.pgsize_bitmap)
    cdef u64 mapped = 0, done = 0
    cdef int ret
    if (iova | paddr | size) & (min_pagesz - 1):
        return -EINVAL                           # pr_err("unaligned: ...")
    if size == min_pagesz:
        # a failed single-page map_pages has mapped nothing: there is nothing to unwind
        return pt.map_pages(iova, paddr, min_pagesz, 1, prot, &mapped)
    ret = iommu_map_pages_loop(pt, pt.pgsize_bitmap, iova, paddr, size, prot, &done)
    if ret:
        pgtable_unmap(pt, iova, done)
    return ret


cdef u64 pgtable_unmap(IoPgtable pt, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF:
    """__iommu_unmap()'s loop: bytes unmapped (summed in size_t, as the kernel does)."""
    cdef u64 min_pagesz = (<u64>1) << __ffs64(pt.pgsize_bitmap)
    cdef u64 unmapped = 0, pgsize, count, n
    if (iova | size) & (min_pagesz - 1):
        return 0                                 # pr_err("unaligned: ...")
    if size == min_pagesz:                       # iommu_pgsize() -> (min_pagesz, 1)
        return pt.unmap_pages(iova, min_pagesz, 1)
    while unmapped < size:
        pgsize = iommu_pgsize(pt.pgsize_bitmap, iova, iova, size - unmapped, &count)
        if pgsize == 0:
            raise KernelBug(f"iommu_pgsize(): BUG_ON(!pgsizes) in __iommu_unmap at iova {iova:#x}")
        n = pt.unmap_pages(iova, pgsize, count)
        if n == 0:
            break
        iova += n
        unmapped += n
    return unmapped


__all__ += ["IoPgtable", "IoPgtableFormat", "IommuResvRegion", "IOPGTABLE_FORMATS"]
