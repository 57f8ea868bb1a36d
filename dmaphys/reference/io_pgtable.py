"""Reference model of IOMMU radix page tables, the common part (io_pgtable.pxi): the IoPgtable
object, format registry and dispatch, iommu.c's page-size splitting. The formats live in
generic_pt.py (drivers/iommu/generic_pt) and io_pgtable_arm.py (io-pgtable-arm.c).

Mirrors dmaphys/_kernel/io_pgtable.pxi: the same table-page addresses, the same PTE bytes in
simulated memory, the same return values and warnings. Written for clarity, not speed.
"""

from __future__ import annotations

from collections import namedtuple

from ..errors import KernelBug, KernelWarning
from ._util import U64_MAX, typed, u64

__all__ = ["IoPgtable", "IoPgtableFormat", "IommuResvRegion", "IOPGTABLE_FORMATS"]

# include/linux/iommu.h
IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV = 1, 2, 4, 8, 16, 32
IOMMU_RESV_RESERVED, IOMMU_RESV_MSI, IOMMU_RESV_SW_MSI = 2, 3, 4       # enum iommu_resv_type
ENXIO, ENOMEM, EEXIST, EINVAL, ERANGE, EOVERFLOW, EOPNOTSUPP, EADDRINUSE = 6, 12, 17, 22, 34, 75, 95, 98
IOMMU_DIRTY_NO_CLEAR = 1 << 0                         # include/linux/iommu.h

PAGE_SHIFT = 12
DMA_TO_DEVICE = 1                                         # enum dma_data_direction
PAGE_SIZE = 1 << PAGE_SHIFT


FAM_VTDSS, FAM_X86, FAM_ARM, FAM_AMDV1, FAM_RISCV = 0, 1, 2, 3, 4
EMPTY, TABLE, OA, INVALID = 0, 1, 2, 3

IommuResvRegion = namedtuple("IommuResvRegion", "start length prot type")
IommuResvRegion.__doc__ = ("struct iommu_resv_region: (start, length, prot, type); "
                           "type: enum iommu_resv_type.\n\n"
                           "Reference twin of dmaphys._core.IommuResvRegion: same returns and raises.")

IoPgtableFormat = namedtuple(
    "IoPgtableFormat",
    "name kernel family granule pgsize_bitmap ias oas levels sign_extend aperture_start aperture_end "
    "reserved_regions map_exists_errno partial_unmap")
IoPgtableFormat.__doc__ = (
    "A page-table format with its defaults: pgsize_bitmap, ias/oas, levels, domain aperture, the "
    "reserved regions the IOMMU driver reports, the errno of mapping over a live entry and what "
    "unmapping part of a large leaf does ('whole-leaf' for generic_pt, 'refuse' for io-pgtable-arm).\n\n"
    "Reference twin of dmaphys._core.IoPgtableFormat: same returns and raises.")

# intel_iommu_get_resv_regions(): IOAPIC_RANGE_START..END as IOMMU_RESV_MSI, prot 0
_VTD_RESV = (IommuResvRegion(0xFEE00000, 0x100000, 0, IOMMU_RESV_MSI),)
# arm_smmu_get_resv_regions(): MSI_IOVA_BASE/MSI_IOVA_LENGTH as IOMMU_RESV_SW_MSI
_ARM_RESV = (IommuResvRegion(0x8000000, 0x100000, IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO,
                             IOMMU_RESV_SW_MSI),)

# name -> (family, granule, default ias, (ias min, ias max), default oas, (oas min, oas max), kernel).
# generic_pt (iommu_pt.h pt_iommu_init(), torvalds @152c862c; vtdss.h @cc4adab1): any oas up to 52
# (below 13 the domain has no page size: refused); vtd-ss takes any VA size its top level holds.
# io-pgtable-arm's limits are computed in _sizes().
_FMT = {
    "vtd-ss": (FAM_VTDSS, 1 << 12, 48, (13, 48), 52, (13, 52), "generic_pt vtdss"),
    "vtd-ss-5level": (FAM_VTDSS, 1 << 12, 57, (49, 57), 52, (13, 52), "generic_pt vtdss"),
    "x86-64": (FAM_X86, 1 << 12, 48, (40, 48), 52, (13, 52), "generic_pt x86_64 (SIGN_EXTEND)"),
    "x86-64-5level": (FAM_X86, 1 << 12, 57, (49, 57), 52, (13, 52), "generic_pt x86_64 (SIGN_EXTEND)"),
    "arm-lpae-s1-4k": (FAM_ARM, 1 << 12, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s1-16k": (FAM_ARM, 1 << 14, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s1-64k": (FAM_ARM, 1 << 16, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S1"),
    "arm-lpae-s2-4k": (FAM_ARM, 1 << 12, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    "arm-lpae-s2-16k": (FAM_ARM, 1 << 14, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    "arm-lpae-s2-64k": (FAM_ARM, 1 << 16, 48, None, 48, None, "io-pgtable-arm ARM_64_LPAE_S2"),
    # the AMD driver's v1 domain: starting_level 2, PT_FEAT_DYNAMIC_TOP, up to 6 levels
    "amdv1": (FAM_AMDV1, 1 << 12, 48, (32, 64), 52, (13, 52), "generic_pt amdv1 (DYNAMIC_TOP)"),
    # fmt/riscv.h (riscvpt_iommu_fmt_init(): hw_max_vasz_lg2 39/48/57 only, oas up to 56)
    "riscv-sv39": (FAM_RISCV, 1 << 12, 39, (39, 39), 56, (13, 56), "generic_pt riscv_64 Sv39 (SIGN_EXTEND)"),
    "riscv-sv48": (FAM_RISCV, 1 << 12, 48, (48, 48), 56, (13, 56), "generic_pt riscv_64 Sv48 (SIGN_EXTEND)"),
    "riscv-sv57": (FAM_RISCV, 1 << 12, 57, (57, 57), 56, (13, 56), "generic_pt riscv_64 Sv57 (SIGN_EXTEND)"),
}
# amd_iommu_get_resv_regions(): the MSI window and the HyperTransport range
_AMD_RESV = (IommuResvRegion(0xFEE00000, 0x100000, IOMMU_WRITE, IOMMU_RESV_MSI),
             IommuResvRegion(0xFD00000000, 0x300000000, 0, IOMMU_RESV_RESERVED))


def _resv(fam):
    if fam == FAM_RISCV:                                   # riscv_iommu_ops has no get_resv_regions
        return ()
    return _ARM_RESV if fam == FAM_ARM else _AMD_RESV if fam == FAM_AMDV1 else _VTD_RESV

ARM_TCR_PS = (32, 36, 40, 42, 44, 48, 52)                  # ARM_LPAE_TCR_PS_*_BIT


def _sizes(name, ias, oas):
    """(ias, oas) as the kernel's init adjusts them; ValueError where it refuses them."""
    fam, gran, dias, irange, doas, orange, _ = _FMT[name]
    ias = dias if ias is None else ias
    oas = doas if oas is None else oas
    if fam == FAM_ARM:
        # arm_lpae_restrict_pgsizes() (v6.18): clamped to 48 bits (52 for the 64K granule)
        pg_shift = gran.bit_length() - 1
        max_bits = 52 if pg_shift == 16 else 48
        ias, oas = min(ias, max_bits), min(oas, max_bits)
        if ias <= pg_shift:
            raise ValueError(f"{name}: ias {ias} leaves no level to translate (ias must exceed {pg_shift})")
        if oas not in ARM_TCR_PS:                           # arm_64_lpae_alloc_pgtable_s1()
            raise ValueError(f"{name}: oas {oas} has no TCR.IPS encoding ({', '.join(map(str, ARM_TCR_PS))})")
        return ias, oas
    if not irange[0] <= ias <= irange[1]:
        raise ValueError(f"{name}: ias {ias} outside {irange[0]}..{irange[1]}")
    if not orange[0] <= oas <= orange[1]:
        raise ValueError(f"{name}: oas {oas} outside {orange[0]}..{orange[1]}")
    return ias, oas


def _geometry(fam, granule, ias, oas, s2=False):
    """(pg_shift, bits_per_level, levels, top_bits, pgsize_bitmap) of a configuration."""
    pg_shift = granule.bit_length() - 1
    if fam == FAM_AMDV1:
        # amdv1 get_info() with DYNAMIC_TOP: levels whose items are below the VA size, every power
        # of two of each (amdv1pt_possible_sizes(); none at level 5) but 512G, below 2^max_oasz
        bitmap = 0
        for L in range(6):
            isz = 12 + 9 * L
            if isz >= ias:
                break
            if L < 5:
                bitmap |= ((1 << (min(51, isz + 8) + 1)) - 1) & ~((1 << isz) - 1)
        bitmap &= ~(1 << 39) & ((1 << oas) - 1)
        return 12, 9, 3, 9, bitmap
    if fam == FAM_RISCV:
        # riscvpt_iommu_fmt_init: top level 2/3/4; a leaf at every level up to the top, each
        # item size and the Svnapot 64K offered below 2^max_oasz
        top = (ias - 12) // 9 - 1
        bitmap = sum(1 << b for b in [12 + 9 * L for L in range(top + 1)] + [16] if b < oas)
        return 12, 9, top + 1, 9, bitmap
    if fam != FAM_ARM:
        # vtdss_pt_iommu_fmt_init / x86_64_pt_iommu_fmt_init: top level from the VA size
        if fam == FAM_VTDSS:
            top = 4 if ias > 48 else 3 if ias > 39 else 2
        else:
            top = (ias - 31) // 9 + 2
        bpl = 9
        levels = top + 1
        # pt_iommu get_info: possible sizes of levels 0..2, hidden when >= 2^max_oasz
        bitmap = ((1 << 12) | (1 << 21) | (1 << 30)) & ((1 << oas) - 1)
    else:
        # arm_lpae_alloc_pgtable / arm_lpae_restrict_pgsizes
        bpl = pg_shift - 3
        va_bits = ias - pg_shift
        levels = -(-va_bits // bpl)
        bitmap = {12: (1 << 12) | (1 << 21) | (1 << 30), 14: (1 << 14) | (1 << 25),
                  16: (1 << 16) | (1 << 29) | ((1 << 42) if oas > 48 else 0)}[pg_shift]
        if s2 and _arm.arm_lpae_concat_mandatory(pg_shift, 4 - levels, oas):
            # arm_64_lpae_alloc_pgtable_s2(): one level lower, concatenated start tables
            entries = 1 << (ias - (pg_shift + bpl * (levels - 1)))
            if entries > _arm.ARM_LPAE_S2_MAX_CONCAT_PAGES:
                raise ValueError(f"stage 2: the {entries}-entry start table would need more than 16 "
                                 f"concatenated tables")
            levels -= 1
    top_bits = ias - (pg_shift + bpl * (levels - 1))
    return pg_shift, bpl, levels, top_bits, bitmap


def _describe(name, ias=None, oas=None):
    fam, gran, _, _, _, _, kernel = _FMT[name]
    ias, oas = _sizes(name, ias, oas)
    _, _, levels, _, bitmap = _geometry(fam, gran, ias, oas, "-s2-" in name)
    sign = fam in (FAM_X86, FAM_RISCV)
    ap_end = (1 << (ias - 1)) - 1 if sign else (1 << ias) - 1
    return IoPgtableFormat(
        name, kernel, "generic_pt" if fam != FAM_ARM else "io-pgtable-arm", gran, bitmap, ias, oas,
        levels, sign, 0, ap_end, _resv(fam),
        EEXIST if fam == FAM_ARM else EADDRINUSE, "refuse" if fam == FAM_ARM else "whole-leaf")




def _int32(x):
    """The C conversion of an integer to int (two's complement, low 32 bits)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _ffs(x):
    return (x & -x).bit_length() - 1


def iommu_pgsize(pgsize_bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """drivers/iommu/iommu.c iommu_pgsize(): (pgsize, count); (0, 0) where the kernel BUG()s."""
    addr_merge = paddr | iova
    pgsizes = pgsize_bitmap & ((1 << size.bit_length()) - 1)       # sizes <= size
    if addr_merge:
        pgsizes &= (1 << (_ffs(addr_merge) + 1)) - 1                # sizes the alignment allows
    if not pgsizes:
        return 0, 0
    idx = pgsizes.bit_length() - 1
    bigger = pgsize_bitmap & ~((1 << (idx + 1)) - 1)
    if bigger:
        nxt = bigger & -bigger
        if not (iova ^ paddr) & (nxt - 1):
            offset = nxt - (addr_merge & (nxt - 1))
            if offset + nxt <= size:
                size = offset
    return 1 << idx, size >> idx


def pt_compute_best_pgsize(pgsz_bitmap: int, va: int, last_va: int, oa: int) -> int:
    """generic_pt pt_compute_best_pgsize(): lg2 of the largest usable page size, 0 if none."""
    if va >= last_va:
        return 0
    length = (last_va - va + 1) & U64_MAX
    mask = va | oa | (1 << (length.bit_length() - 1))
    best = _ffs(mask)
    if best < 63:
        pgsz_bitmap &= (1 << (best + 1)) - 1
    if not pgsz_bitmap:
        return 0
    return pgsz_bitmap.bit_length() - 1


class IoPgtable:
    """One IOMMU page table in simulated RAM: ``IoPgtable(machine, fmt, ias=None, oas=None)``.

    ``force_coherence`` models PT_FEAT_VTDSS_FORCE_COHERENCE (SNP in every vtd-ss leaf);
    ``no_warn`` models IO_PGTABLE_QUIRK_NO_WARN (io-pgtable-arm's selftest configuration);
    ``coherent_walk=False`` + ``iommu_dev``: the non-coherent walker (see the core's docstring).

    Reference twin of dmaphys._core.IoPgtable: same returns and raises.
    """

    def __init__(self, machine, fmt, ias=None, oas=None, *, force_coherence=False, no_warn=False,
                 coherent_walk=True, iommu_dev=None, arm_hd=False):
        if not isinstance(fmt, str):
            raise TypeError(f"fmt must be a str, not {type(fmt).__name__}")
        if fmt not in _FMT:
            raise ValueError(f"unknown page-table format {fmt!r}; known: {', '.join(_FMT)}")
        fam, gran, _, _, _, _, _ = _FMT[fmt]
        ias, oas = _sizes(fmt, None if ias is None else u64(ias, "ias"),
                          None if oas is None else u64(oas, "oas"))
        if force_coherence and fam not in (FAM_VTDSS, FAM_AMDV1):
            raise ValueError("force_coherence is a vtd-ss / amdv1 feature")
        if arm_hd and (fam != FAM_ARM or "-s2-" in fmt):
            raise ValueError("arm_hd (IO_PGTABLE_QUIRK_ARM_HD) is an ARM_64_LPAE_S1 quirk")
        if iommu_dev is not None:
            from .machine import Device
            typed(iommu_dev, Device, "iommu_dev")
        if not coherent_walk:
            if fam != FAM_ARM:
                raise ValueError("coherent_walk=False is an io-pgtable-arm option")
            if iommu_dev is None or iommu_dev.machine is not machine:
                raise ValueError("a non-coherent walker needs iommu_dev, the IOMMU's own Device "
                                 "of this machine (the tables are DMA-mapped to it)")
        self.coherent_walk = bool(coherent_walk)
        self.iommu_dev = None if self.coherent_walk else iommu_dev
        self.table_syncs = 0
        self.table_sync_bytes = 0
        self.machine = machine
        self.mem = machine.mem
        self.fmt = fmt
        self.family = fam
        self.granule = gran
        self.ias, self.oas = ias, oas
        geo = _geometry(fam, gran, ias, oas, "-s2-" in fmt)
        self.arm_s2 = "-s2-" in fmt
        self.pg_shift, self.bpl, self.levels, self.top_bits, self.pgsize_bitmap = geo
        self.top = self.levels - 1
        self.sign_extend = fam in (FAM_X86, FAM_RISCV)
        self.aperture_start = 0
        self.aperture_end = (1 << (ias - 1)) - 1 if self.sign_extend else (1 << ias) - 1
        self.reserved_regions = _resv(fam)
        self.force_coherence = bool(force_coherence)
        self.no_warn = bool(no_warn)
        self.arm_hd = bool(arm_hd)
        self.leaf_writes = 0
        self.table_pages = 0
        self.walk_reads = 0
        self.defer_free = False
        self.pending_free: list[int] = []
        self._tables: dict[int, int] = {}                 # live table phys -> level
        self._npages: dict[int, int] = {}                 # allocated (live + pending) -> pages
        self.gran_pages = max(1, gran >> PAGE_SHIFT)
        if fam == FAM_ARM:
            # __arm_lpae_alloc_pages(max(ARM_LPAE_PGD_SIZE, 64)) -> an order-n page allocation
            pgd = max(8 << self.top_bits, 64)
            n = -(-pgd // PAGE_SIZE)
            self.top_pages = 1 << (n - 1).bit_length()
        else:
            self.top_pages = 1                            # pt_top_memsize_lg2(): 4 KiB
        self.pgtable_root = 0
        root = self._alloc_table(self.top)
        if root == U64_MAX:
            machine.flush_warnings()
            raise MemoryError("no RAM for the top-level page table" if self.coherent_walk else
                              "no RAM for the top-level page table, or its DMA mapping failed")
        self.pgtable_root = root

    # ---- geometry ------------------------------------------------------------------------
    def _shift(self, L):
        return self.pg_shift + self.bpl * L

    def _idx_bits(self, L):
        if self.family == FAM_AMDV1:                      # 512 items per table, 128 at level 5
            return 7 if L == 5 else 9
        return self.top_bits if L == self.top else self.bpl

    def _index(self, va, L):
        return (va >> self._shift(L)) & ((1 << self._idx_bits(L)) - 1)

    def _item_start(self, va, L, i):
        span = self._shift(L) + self._idx_bits(L)
        return (va & ~((1 << span) - 1) & U64_MAX) | (i << self._shift(L))

    def _in_range(self, va, last):
        """pt_check_range() (generic_pt) / the TTBR0 input-size check: both ends in the table.

        Sign-extending formats: the kernel takes the all-ones prefix when any bit from ias-1 up
        is set (not only the sign bit), so a non-canonical va aliases the lower half."""
        if self.family == FAM_AMDV1:
            return _gpt.amdv1_range_ok(self.ias, self.top, va, last)
        if self.sign_extend:
            prefix = U64_MAX if va >> (self.ias - 1) else 0
            hi = prefix >> self.ias
            return va >> self.ias == hi and last >> self.ias == hi
        return va >> self.ias == 0 and last >> self.ias == 0

    def _canonical(self, va, last):
        """The hardware's input-address check (sign-extended from bit ias-1 where the format is)."""
        if self.family == FAM_AMDV1:
            return _gpt.amdv1_range_ok(self.ias, self.top, va, last)
        if self.sign_extend:
            hi = (U64_MAX if (va >> (self.ias - 1)) & 1 else 0) >> self.ias
            return va >> self.ias == hi and last >> self.ias == hi
        return va >> self.ias == 0 and last >> self.ias == 0

    def _warn_alias(self, va):
        if self.sign_extend and self._in_range(va, va) and not self._canonical(va, va):
            self._warn(f"dmaphys: generic_pt {self.fmt}: IOVA {va:#x} is not canonical for a {self.ias}-bit "
                       f"table; the kernel's pt_check_range() accepts it and it aliases "
                       f"{va & ((1 << (self.ias - 1)) - 1):#x} (a kernel bug)", "generic_pt:sign-alias")

    def _level_name(self, L):
        return 3 - L if self.family == FAM_ARM else L

    # ---- memory --------------------------------------------------------------------------
    def _rd(self, table, i):
        """The entry as memory holds it (what the hardware walker reads)."""
        return self.mem.read64(table + 8 * i)

    def _wr(self, table, i, val):
        self.mem.write64(table + 8 * i, val)

    # the CPU's accesses to table memory (the one place that knows the cache model)
    def _get_pte(self, addr):
        """A CPU load of the entry at addr: through the CPU's cache."""
        return self.mem.read64(addr) if self.coherent_walk else self.mem.wb_read64(addr)

    def _set_pte(self, addr, val):
        """A CPU store: a non-coherent walker sees it only after _sync_ptes()."""
        if self.coherent_walk:
            self.mem.write64(addr, val)
        else:
            self.mem.wb_write64(addr, val)

    def _sync_ptes(self, addr, num_entries):
        """__arm_lpae_sync_pte(): dma_sync_single_for_device(iommu_dev, addr, 8 * n, DMA_TO_DEVICE)."""
        from . import mapping as _mapping
        self.table_syncs += 1
        self.table_sync_bytes += 8 * num_entries
        _mapping.c_dma_sync_single_for_device(self.iommu_dev, addr, 8 * num_entries, DMA_TO_DEVICE)

    def _alloc_table(self, L):
        """iommu_alloc_pages_node_sz() / __arm_lpae_alloc_pages(): zeroed, naturally aligned."""
        n = self.top_pages if L == self.top else self.gran_pages
        phys = self.mem.alloc_pages(n, U64_MAX, n)
        if phys == U64_MAX:
            return U64_MAX
        self.mem.fill(phys, 0, n * PAGE_SIZE)
        if not self.coherent_walk:
            # __arm_lpae_alloc_pages(): dma_map_single(iommu_dev, ..., DMA_TO_DEVICE), which must
            # give the physical address itself
            from . import mapping as _mapping
            dev = self.iommu_dev
            dma = _mapping.c_dma_map_single_attrs(dev, phys, n * PAGE_SIZE, DMA_TO_DEVICE, 0)
            if _mapping.c_dma_mapping_error(dev, dma):
                self.mem.free_pages(phys, n)
                return U64_MAX
            if dma != phys:
                self._warn(f"{dev.name}: Cannot accommodate DMA translation for IOMMU page tables")
                _mapping.c_dma_unmap_page_attrs(dev, dma, n * PAGE_SIZE, DMA_TO_DEVICE, 0)
                self.mem.free_pages(phys, n)
                return U64_MAX
        self._tables[phys] = L
        self._npages[phys] = n
        self.table_pages += n
        return phys

    def _release_table(self, phys):
        """Unlinked table page: freed now, or held for the IOTLB flush when defer_free is set."""
        if self._tables.pop(phys, None) is None:
            return
        if self.defer_free:
            self.pending_free.append(phys)
        else:
            self._free_now(phys)

    def _free_now(self, phys):
        n = self._npages.pop(phys)
        if not self.coherent_walk:
            # __arm_lpae_free_pages(): dma_unmap_single(); dirty lines of the page are evicted now
            from . import mapping as _mapping
            _mapping.c_dma_unmap_page_attrs(self.iommu_dev, phys, n * PAGE_SIZE, DMA_TO_DEVICE, 0)
            self.mem.wb_clean(phys, n * PAGE_SIZE)
        self.mem.free_pages(phys, n)
        self.table_pages -= n

    def _check_live(self):
        if self.pgtable_root == 0:
            raise ValueError(f"{self.fmt} page table was freed (free_tables())")

    def _warn(self, text, once_key=None):
        self.machine.kwarn(KernelWarning, text, once_key)

    # ---- entry encoding / decoding: the format modules' decoders --------------------------
    def _etype(self, e, L):
        """pt_load_entry_raw() (generic_pt.py) / iopte_leaf() + iopte_table() (io_pgtable_arm.py)."""
        if self.family == FAM_ARM:
            return _arm.arm_etype(e, L)
        return _gpt.gpt_etype(self.family, e, L)

    def _table_pa(self, e):
        if self.family == FAM_ARM:
            return _arm.arm_to_paddr(self, e)
        if self.family == FAM_RISCV:
            return _gpt.riscv_oa(e)
        return e & _gpt.GPT_OA_MASK

    def _leaf_oa(self, e):
        return self._table_pa(e)

    def _leaf_size(self, e, L):
        """Bytes a leaf at level L maps (amdv1: a contiguous leaf encodes a larger size)."""
        if self.family == FAM_AMDV1:
            return 1 << _gpt.amdv1_leaf_lg2(e, L)
        if self.family == FAM_RISCV and L == 0 and e & _gpt.RISCV_N:
            return 1 << 16                                # a Svnapot page: 16 items
        return 1 << self._shift(L)

    def _decode_prot(self, e, acc):
        """IOMMU_* permissions a device gets from leaf ``e`` (``acc``: R/W allowed by the tables)."""
        if self.family == FAM_ARM:
            return _arm.arm_decode_prot(self.arm_s2, e)
        return _gpt.gpt_decode_prot(self.family, e, acc)

    def _table_acc(self, e):
        """R/W a table entry lets through (tables written by the kernel always grant both)."""
        if self.family == FAM_ARM:
            return IOMMU_READ | IOMMU_WRITE
        return _gpt.gpt_table_acc(self.family, e)



    # ==== io_pgtable_ops ==================================================================
    def map_pages(self, iova, paddr, pgsize, pgcount, prot):
        """io_pgtable_ops->map_pages: (0 or -errno, bytes mapped).

        Models struct io_pgtable_ops map_pages (io-pgtable-arm.c:arm_lpae_map_pages(),
        generic_pt map_pages). Returns ``(0 or -errno, bytes mapped)``. Raises ValueError for a
        table free_tables() freed.
        """
        self._check_live()
        if self.family == FAM_ARM:
            return _arm.arm_map_pages(self, iova, paddr, pgsize, pgcount, prot)
        return _gpt.gpt_map_pages(self, iova, paddr, pgsize, pgcount, prot)

    def unmap_pages(self, iova, pgsize, pgcount):
        """io_pgtable_ops->unmap_pages: bytes unmapped.

        Models struct io_pgtable_ops unmap_pages. Returns the bytes unmapped. Raises ValueError
        for a table free_tables() freed.
        """
        self._check_live()
        if self.family == FAM_ARM:
            return _arm.arm_unmap_pages(self, iova, pgsize, pgcount)
        return _gpt.gpt_unmap_pages(self, iova, pgsize, pgcount)

    def c_iova_to_phys(self, iova):
        """io_pgtable_ops->iova_to_phys: 0 when unmapped.

        Models struct io_pgtable_ops iova_to_phys (no warning, no validation). Returns the
        physical address, 0 when unmapped or freed. Raises nothing.
        """
        if self.pgtable_root == 0:
            return 0
        if self.family == FAM_ARM:
            return _arm.arm_iova_to_phys(self, iova)          # through the CPU's cache
        return _gpt.gpt_iova_to_phys(self, iova)

    def lookup(self, iova):
        """The hardware walk: (phys, IOMMU_* prot, leaf size) or None (translation fault).

        Simulator-only: the IOMMU hardware's table walk (counts walk_reads). Returns ``(phys,
        prot, leaf_size)`` or None. Raises nothing.
        """
        if self.pgtable_root == 0 or not self._canonical(iova, iova):
            return None
        table = self.pgtable_root
        acc = IOMMU_READ | IOMMU_WRITE
        for L in range(self.top, -1, -1):
            e = self._rd(table, self._index(iova, L))
            self.walk_reads += 1
            t = self._etype(e, L)
            if t == OA:
                size = self._leaf_size(e, L)
                return (self._leaf_oa(e) & ~(size - 1)) | (iova & (size - 1)), self._decode_prot(e, acc), size
            if t != TABLE:
                return None
            acc &= self._table_acc(e)
            table = self._table_pa(e)
        return None

    # ---- dirty tracking (iommu_dirty_ops) ---------------------------------------------------
    def has_dirty(self):
        """Simulator-only: whether the format has dirty ops (vtd-ss, amdv1; io-pgtable-arm
        stage 1 with IO_PGTABLE_QUIRK_ARM_HD). Returns a bool. Raises nothing."""
        if self.family == FAM_ARM:
            return self.arm_hd
        return _gpt.gpt_has_dirty(self.family)

    def hw_set_dirty(self, iova):
        """Simulator-only: the IOMMU hardware's atomic dirty update of iova's leaf for a write
        request (no counters; VT-d SSADE, AMD HAD, SMMUv3 HD). Returns None. Raises nothing."""
        table = self.pgtable_root
        if table == 0:
            return
        for L in range(self.top, -1, -1):
            i = self._index(iova, L)
            e = self._rd(table, i)
            t = self._etype(e, L)
            if t == OA:
                if self.family == FAM_ARM:
                    self._wr(table, i, _arm.arm_make_write_dirty(e))
                else:
                    self._wr(table, i, _gpt.gpt_make_write_dirty(self.family, e))
                return
            if t != TABLE:
                return
            table = self._table_pa(e)

    def read_and_clear_dirty(self, iova, size, flags, rec, gather):
        """Mirrors io_pgtable_ops->read_and_clear_dirty() / pt_iommu_<fmt>_read_and_clear_dirty():
        appends (iova, length) records to ``rec`` and widens ``gather``. Returns 0 or -errno.
        Raises nothing (WARN_ONs are queued warnings)."""
        if self.pgtable_root == 0:
            return -EINVAL
        if self.family == FAM_ARM:
            return _arm.arm_read_and_clear_dirty(self, iova, size, flags, rec, gather)
        return _gpt.gpt_read_and_clear_dirty(self, iova, size, flags, rec, gather)

    def release_pending(self):
        """Free the table pages held while defer_free was set (after the IOTLB flush).

        Reference twin of dmaphys._core.IoPgtable.release_pending: same returns and raises.
        """
        pend, self.pending_free = self.pending_free, []
        for phys in pend:
            self._free_now(phys)
        return 0

    def free_tables(self):
        """Free every table page (domain teardown: pt_iommu_deinit / arm_lpae_free_pgtable).

        Reference twin of dmaphys._core.IoPgtable.free_tables: same returns and raises.
        """
        for phys in sorted(self._tables):
            del self._tables[phys]
            self._free_now(phys)
        self.release_pending()
        self.pgtable_root = 0
        return 0

    # ---- Python API ----------------------------------------------------------------------
    def map(self, iova, paddr, size, prot):
        """iommu_map() on this table alone: 0 or -errno (a failed map is unwound).

        Reference twin of dmaphys._core.IoPgtable.map: same returns and raises.
        """
        args = (u64(iova, "iova"), u64(paddr, "paddr"), u64(size, "size"), u64(prot, "prot"))
        self._check_live()
        try:
            return pgtable_map(self, *args)
        finally:
            self.machine.flush_warnings()

    def unmap(self, iova, size):
        """iommu_unmap() on this table alone: bytes unmapped (the kernel's size_t).

        Reference twin of dmaphys._core.IoPgtable.unmap: same returns and raises.
        """
        args = (u64(iova, "iova"), u64(size, "size"))
        self._check_live()
        try:
            return pgtable_unmap(self, *args)
        finally:
            self.machine.flush_warnings()

    def ops_map_pages(self, iova, paddr, pgsize, pgcount, prot):
        """io_pgtable_ops->map_pages called directly: (0 or -errno, bytes mapped).

        Reference twin of dmaphys._core.IoPgtable.ops_map_pages: same returns and raises.
        """
        args = (u64(iova, "iova"), u64(paddr, "paddr"), u64(pgsize, "pgsize"), u64(pgcount, "pgcount"),
                u64(prot, "prot"))
        self._check_live()
        try:
            return self.map_pages(*args)
        finally:
            self.machine.flush_warnings()

    def ops_unmap_pages(self, iova, pgsize, pgcount):
        """io_pgtable_ops->unmap_pages called directly: bytes unmapped.

        Reference twin of dmaphys._core.IoPgtable.ops_unmap_pages: same returns and raises.
        """
        args = (u64(iova, "iova"), u64(pgsize, "pgsize"), u64(pgcount, "pgcount"))
        self._check_live()
        try:
            return self.unmap_pages(*args)
        finally:
            self.machine.flush_warnings()

    def iova_to_phys(self, iova):
        """io_pgtable_ops->iova_to_phys: the physical address, 0 when unmapped.

        Reference twin of dmaphys._core.IoPgtable.iova_to_phys: same returns and raises.
        """
        iova = u64(iova, "iova")
        if self.pgtable_root:
            self._warn_alias(iova)
            self.machine.flush_warnings()
        return self.c_iova_to_phys(iova)

    def iommu_pgsize(self, iova, paddr, size):
        """iommu_pgsize() with this table's bitmap: (pgsize, count).

        Reference twin of dmaphys._core.IoPgtable.iommu_pgsize: same returns and raises.
        """
        iova, paddr, size = u64(iova, "iova"), u64(paddr, "paddr"), u64(size, "size")
        if size == 0:
            raise ValueError("size must be > 0")
        pgsize, count = iommu_pgsize(self.pgsize_bitmap, iova, paddr, size)
        if not pgsize:
            raise KernelBug(f"iommu_pgsize(): no page size fits iova {iova:#x} paddr {paddr:#x} "
                            f"size {size:#x}")
        return pgsize, count

    def translate(self, iova):
        """The hardware walk (lookup): (phys, prot, leaf_size) or None on a translation fault.

        Reference twin of dmaphys._core.IoPgtable.translate: same returns and raises.
        """
        return self.lookup(u64(iova, "iova"))

    def walk(self, iova):
        """The levels a hardware walk of ``iova`` visits, decoded (does not count walk_reads).

        Reference twin of dmaphys._core.IoPgtable.walk: same returns and raises.
        """
        iova = u64(iova, "iova")
        out = {"iova": iova, "levels": [], "phys": None, "leaf_size": 0, "prot": 0, "fault": None}
        if self.pgtable_root == 0:
            out["fault"] = "freed"
            return out
        if not self._canonical(iova, iova):
            out["fault"] = "address size"
            return out
        table = self.pgtable_root
        acc = IOMMU_READ | IOMMU_WRITE
        for L in range(self.top, -1, -1):
            i = self._index(iova, L)
            e = self._rd(table, i)
            t = self._etype(e, L)
            out["levels"].append({"level": self._level_name(L), "table": table, "index": i,
                                  "pte_addr": table + 8 * i, "pte": e,
                                  "type": ("empty", "table", "leaf", "invalid")[t]})
            if t == OA:
                size = self._leaf_size(e, L)
                out["phys"] = (self._leaf_oa(e) & ~(size - 1)) | (iova & (size - 1))
                out["leaf_size"] = size
                out["prot"] = self._decode_prot(e, acc)
                return out
            if t != TABLE:
                out["fault"] = "translation"
                return out
            acc &= self._table_acc(e)
            table = self._table_pa(e)
        out["fault"] = "translation"
        return out

    def _leaves(self, table, L, base, acc, out):
        data = self.mem.read(table, 8 << self._idx_bits(L))
        i, n = 0, 1 << self._idx_bits(L)
        while i < n:
            # the kernel's view (through the CPU's cache)
            e = (int.from_bytes(data[8 * i:8 * i + 8], "little") if self.coherent_walk
                 else self.mem.wb_read64(table + 8 * i))
            t = self._etype(e, L)
            va = base | (i << self._shift(L))
            step = 1
            if t == OA:
                size = self._leaf_size(e, L)
                step = max(1, size >> self._shift(L))            # a contiguous leaf: reported once
                if self.sign_extend and va >> (self.ias - 1) & 1:
                    va |= U64_MAX & ~((1 << self.ias) - 1)
                out[va] = ((self._leaf_oa(e) & ~(size - 1)), size, self._decode_prot(e, acc))
            elif t == TABLE and L > 0:
                child = self._table_pa(e)
                if child in self._tables:
                    self._leaves(child, L - 1, va, acc & self._table_acc(e), out)
            i += step

    def get_state(self):
        """Snapshot: {leaf iova: (phys, size, prot)}, tables, pending frees and counters.

        Reference twin of dmaphys._core.IoPgtable.get_state: same returns and raises.
        """
        mappings: dict[int, tuple[int, int, int]] = {}
        if self.pgtable_root:
            self._leaves(self.pgtable_root, self.top, 0, IOMMU_READ | IOMMU_WRITE, mappings)
        return {"fmt": self.fmt, "pgtable_root": self.pgtable_root, "mappings": mappings,
                "tables": sorted((p, self._level_name(L)) for p, L in self._tables.items()),
                "pending_free": sorted(self.pending_free), "leaf_writes": self.leaf_writes,
                "table_pages": self.table_pages, "walk_reads": self.walk_reads}

    # ---- test hooks (not public API) --------------------------------------------------------
    def _store_pte(self, pte_addr, val):
        """A bare CPU store to an entry of this table (no sync)."""
        a, v = u64(pte_addr, "pte_addr"), u64(val, "val")
        self._check_live()
        if a & 7 or not any(p <= a < p + n * PAGE_SIZE for p, n in self._npages.items()):
            raise ValueError(f"{a:#x} is not an entry of this table")
        self._set_pte(a, v)

    def _sync_pte(self, pte_addr, num_entries=1):
        """__arm_lpae_sync_pte() of num_entries entries at pte_addr (non-coherent walkers)."""
        a, n = u64(pte_addr, "pte_addr"), u64(num_entries, "num_entries")
        self._check_live()
        if self.coherent_walk:
            raise ValueError("the walk is coherent: there is nothing to sync")
        try:
            self._sync_ptes(a, n)
        finally:
            self.machine.flush_warnings()

    @staticmethod
    def formats():
        """The format descriptors (IoPgtableFormat), by name.

        Reference twin of dmaphys._core.IoPgtable.formats: same returns and raises.
        """
        return list(IOPGTABLE_FORMATS.values())

    @property
    def arm_lpae_cfg(self):
        """io-pgtable-arm: the io_pgtable_cfg register values (see the core); None otherwise."""
        return _arm.arm_lpae_cfg(self) if self.family == FAM_ARM else None

    @property
    def descriptor(self):
        """This table's IoPgtableFormat (with its own ias/oas)."""
        return _describe(self.fmt, self.ias, self.oas)

    def __repr__(self):
        return (f"<dmaphys.reference.IoPgtable {self.fmt} ias={self.ias} levels={self.levels} "
                f"root={self.pgtable_root:#x} table_pages={self.table_pages}>")


def iommu_map_pages_loop(pt: IoPgtable, pgsize_bitmap: int, iova: int, paddr: int, size: int,
                         prot: int) -> tuple[int, int]:
    """The loop of __iommu_map(): (0 or the first -errno, bytes mapped); callers unwind."""
    orig_size = size
    ret = 0
    while size:
        pgsize, count = iommu_pgsize(pgsize_bitmap, iova, paddr, size)
        if not pgsize:
            raise KernelBug(f"iommu_pgsize(): BUG_ON(!pgsizes) iova {iova:#x} paddr {paddr:#x} "
                            f"size {size:#x}")
        ret, mapped = pt.map_pages(iova, paddr, pgsize, count, prot)
        size -= mapped
        if ret:
            break
        if not mapped:
            raise KernelBug("map_pages() mapped nothing and reported success: iommu_map would spin")
        iova = (iova + mapped) & U64_MAX
        paddr = (paddr + mapped) & U64_MAX
    return ret, orig_size - size


def pgtable_map(pt: IoPgtable, iova: int, paddr: int, size: int, prot: int) -> int:
    """iommu_map_nosync()'s loop over iommu_pgsize(): 0 or -errno, unwinding a partial map."""
    min_pagesz = 1 << _ffs(pt.pgsize_bitmap)
    if (iova | paddr | size) & (min_pagesz - 1):
        return -EINVAL                                    # pr_err("unaligned: ...")
    ret, done = iommu_map_pages_loop(pt, pt.pgsize_bitmap, iova, paddr, size, prot)
    if ret:
        pgtable_unmap(pt, iova, done)
    return ret


def pgtable_unmap(pt: IoPgtable, iova: int, size: int) -> int:
    """__iommu_unmap()'s loop: bytes unmapped (size_t arithmetic, as the kernel adds them up)."""
    min_pagesz = 1 << _ffs(pt.pgsize_bitmap)
    if (iova | size) & (min_pagesz - 1):
        return 0                                          # pr_err("unaligned: ...")
    unmapped = 0
    while unmapped < size:
        pgsize, count = iommu_pgsize(pt.pgsize_bitmap, iova, iova, size - unmapped)
        if not pgsize:
            raise KernelBug(f"iommu_pgsize(): BUG_ON(!pgsizes) in __iommu_unmap at iova {iova:#x}")
        n = pt.unmap_pages(iova, pgsize, count)
        if not n:
            break
        iova = (iova + n) & U64_MAX
        unmapped = (unmapped + n) & U64_MAX
    return unmapped


# the formats' code (they import this module's constants, so they come last)
from . import generic_pt as _gpt  # noqa: E402
from . import io_pgtable_arm as _arm  # noqa: E402

IOPGTABLE_FORMATS = {name: _describe(name) for name in _FMT}
