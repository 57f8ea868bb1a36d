"""Reference model of drivers/iommu/io-pgtable-arm.c (ARM_64_LPAE_S1; v6.18 plus the December
2025 unmap fix) on a reference IoPgtable (io_pgtable.py). Mirrors dmaphys/_kernel/io_pgtable_arm.pxi.
"""

from ._util import U64_MAX
from .io_pgtable import (
    EEXIST,
    EINVAL,
    EMPTY,
    ENOMEM,
    ERANGE,
    INVALID,
    IOMMU_CACHE,
    IOMMU_DIRTY_NO_CLEAR,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    OA,
    TABLE,
    _int32,
)

__all__: list[str] = []

ARM_TYPE_MASK, ARM_TYPE_BLOCK, ARM_TYPE_TABLE, ARM_TYPE_PAGE = 3, 1, 3, 3
ARM_ADDR_MASK = ((1 << 48) - 1) & ~0xFFF              # GENMASK_ULL(47, 12)
ARM_AP_UNPRIV, ARM_AP_RDONLY = 1 << 6, 1 << 7
ARM_ATTRINDX_SHIFT = 2
ARM_ATTR_IDX_CACHE, ARM_ATTR_IDX_DEV = 1, 2
ARM_SH_OS, ARM_SH_IS = 2 << 8, 3 << 8
ARM_AF, ARM_NG = 1 << 10, 1 << 11
# stage 2
ARM_HAP_READ, ARM_HAP_WRITE = 1 << 6, 2 << 6
ARM_MEMATTR_OIWB, ARM_MEMATTR_NC, ARM_MEMATTR_DEV = 0xF << 2, 0x5 << 2, 0x1 << 2
ARM_LPAE_S2_MAX_CONCAT_PAGES = 16


def arm_lpae_concat_mandatory(pg_shift, start_level, oas):
    """Arm DDI0487 R_DXBSH / R_SRKBC: when a stage-2 table must start one level lower, concatenated."""
    if pg_shift == 14 and (start_level == 0 or (start_level == 1 and oas == 40)):
        return True
    return pg_shift == 12 and start_level == 0 and oas in (40, 42)
ARM_XN = 3 << 53
ARM_DBM = 1 << 51                                     # ARM_LPAE_PTE_DBM
ARM_SW_SYNC = 1 << 55                                 # ARM_LPAE_PTE_SW_SYNC (software bit)


def arm_etype(e, L):
    """iopte_leaf() + iopte_table()."""
    if not e:
        return EMPTY
    t = e & ARM_TYPE_MASK
    if L == 0:
        return OA if t == ARM_TYPE_PAGE else INVALID
    return OA if t == ARM_TYPE_BLOCK else TABLE if t == ARM_TYPE_TABLE else INVALID


def arm_decode_prot(s2, e):
    if s2:
        p = (IOMMU_READ if e & ARM_HAP_READ else 0) | (IOMMU_WRITE if e & ARM_HAP_WRITE else 0)
        p |= IOMMU_NOEXEC if e & ARM_XN else 0
        attr = e & (0xF << 2)
        return p | (IOMMU_CACHE if attr == ARM_MEMATTR_OIWB else IOMMU_MMIO if attr == ARM_MEMATTR_DEV else 0)
    p = IOMMU_READ | (IOMMU_WRITE if not e & ARM_AP_RDONLY or e & ARM_DBM else 0)   # DBM: writable-clean
    p |= 0 if e & ARM_AP_UNPRIV else IOMMU_PRIV
    p |= IOMMU_NOEXEC if e & ARM_XN else 0
    idx = (e >> ARM_ATTRINDX_SHIFT) & 7
    p |= IOMMU_CACHE if idx == ARM_ATTR_IDX_CACHE else IOMMU_MMIO if idx == ARM_ATTR_IDX_DEV else 0
    return p


def arm_paddr_to_iopte(pt, pa):
    return (pa | (pa >> 36)) & ARM_ADDR_MASK


def arm_to_paddr(pt, e):
    p = e & ARM_ADDR_MASK
    if pt.granule < 1 << 16:
        return p
    return (p | (p << 36)) & (ARM_ADDR_MASK << 4)


def arm_prot(pt, prot):
    """arm_lpae_prot_to_pte() for ARM_64_LPAE_S1 (no quirks)."""
    if pt.arm_s2:                                     # stage 2: HAP and MemAttr
        pte = (ARM_HAP_READ if prot & IOMMU_READ else 0) | (ARM_HAP_WRITE if prot & IOMMU_WRITE else 0)
        if prot & IOMMU_MMIO:
            pte |= ARM_MEMATTR_DEV
        else:
            pte |= ARM_MEMATTR_OIWB if prot & IOMMU_CACHE else ARM_MEMATTR_NC
        pte |= ARM_SH_IS if prot & IOMMU_CACHE else ARM_SH_OS
        return pte | (ARM_XN if prot & IOMMU_NOEXEC else 0) | ARM_AF
    pte = ARM_NG
    if not prot & IOMMU_WRITE and prot & IOMMU_READ:
        pte |= ARM_AP_RDONLY
    elif pt.arm_hd:                                   # IO_PGTABLE_QUIRK_ARM_HD: born writable-dirty
        pte |= ARM_DBM
    if not prot & IOMMU_PRIV:
        pte |= ARM_AP_UNPRIV
    if prot & IOMMU_MMIO:
        pte |= ARM_ATTR_IDX_DEV << ARM_ATTRINDX_SHIFT
    elif prot & IOMMU_CACHE:
        pte |= ARM_ATTR_IDX_CACHE << ARM_ATTRINDX_SHIFT
    pte |= ARM_SH_IS if prot & IOMMU_CACHE else ARM_SH_OS
    if prot & IOMMU_NOEXEC:
        pte |= ARM_XN
    return pte | ARM_AF


def arm_max_entries(pt, i):
    per = pt.granule >> 3
    return per - (i & (per - 1))


def arm_free_pgtable(pt, table, L):
    """__arm_lpae_free_pgtable(): the subtree below ``table`` and the table itself."""
    if L > 0:
        for i in range(1 << pt._idx_bits(L)):
            e = pt._get_pte(table + 8 * i)
            if not e or pt._etype(e, L) == OA:
                continue
            child = arm_to_paddr(pt, e)
            if child in pt._tables:
                arm_free_pgtable(pt, child, L - 1)
    pt._release_table(table)


def arm_unmap(pt, iova, size, pgcount, L, table):
    """__arm_lpae_unmap()."""
    if L < 0:
        pt._warn("WARNING: __arm_lpae_unmap(): WARN_ON(lvl == ARM_LPAE_MAX_LEVELS)")
        return 0
    i0 = pt._index(iova, L)
    e = pt._get_pte(table + 8 * i0)
    if not e:
        if not pt.no_warn:
            pt._warn(f"WARNING: __arm_lpae_unmap(): no IOPTE for iova {iova:#x} at level {3 - L}")
        return 0                                      # the Dec 2025 fix (6.18.y); was -ENOENT
    if size == 1 << pt._shift(L):
        num = max(0, min(_int32(pgcount), arm_max_entries(pt, i0)))   # min_t(int, ...)
        i = 0
        while i < num:
            e = pt._get_pte(table + 8 * (i0 + i))
            if not e:
                if not pt.no_warn:
                    pt._warn(f"WARNING: __arm_lpae_unmap(): no IOPTE for iova "
                               f"{iova + i * size:#x} at level {3 - L}")
                break
            if pt._etype(e, L) != OA:
                arm_clear_pte(pt, table + 8 * (i0 + i), 1)
                child = arm_to_paddr(pt, e)
                if child in pt._tables:
                    arm_free_pgtable(pt, child, L - 1)
            else:
                pt.leaf_writes += 1
            i += 1
        arm_clear_pte(pt, table + 8 * i0, i)              # the remaining entries, one sync
        return i * size
    if pt._etype(e, L) == OA:
        pt._warn("Unmap of a partial large IOPTE is not allowed", "io-pgtable-arm:partial-unmap")
        return 0
    return arm_unmap(pt, iova, size, pgcount, L - 1, arm_to_paddr(pt, e))


def arm_map(pt, iova, paddr, size, pgcount, prot, L, table, st):
    """__arm_lpae_map() + arm_lpae_init_pte()."""
    i0 = pt._index(iova, L)
    block = 1 << pt._shift(L)
    if size == block:
        # num_entries = min_t(int, pgcount, max_entries): pgcount truncated to int first;
        # <= 0 maps nothing and *mapped grows by the sign-extended product
        num = min(_int32(pgcount), arm_max_entries(pt, i0))
        if num <= 0:
            st["mapped"] = (st["mapped"] + num * size) & U64_MAX
            return 0
        for i in range(num):
            e = pt._get_pte(table + 8 * (i0 + i))
            if pt._etype(e, L) == OA:
                if not pt.no_warn:
                    pt._warn(f"WARNING: arm_lpae_init_pte(): iova {iova + i * size:#x} is already "
                               "mapped (an unmap is required first)")
                return -EEXIST
            if e & ARM_TYPE_MASK == ARM_TYPE_TABLE:
                # a block replaces a table: __arm_lpae_unmap() of the table frees it whole
                if arm_unmap(pt, iova + i * size, size, 1, L, table) != size:
                    pt._warn("WARNING: arm_lpae_init_pte(): WARN_ON(1)")
                    return -EINVAL
        typ = ARM_TYPE_PAGE if L == 0 else ARM_TYPE_BLOCK
        for i in range(num):                              # __arm_lpae_init_pte()
            pt._set_pte(table + 8 * (i0 + i), prot | typ | arm_paddr_to_iopte(pt, paddr + i * size))
        if not pt.coherent_walk:
            pt._sync_ptes(table + 8 * i0, num)
        pt.leaf_writes += num
        st["mapped"] += num * size
        return 0
    if L == 0:
        pt._warn("WARNING: __arm_lpae_map(): WARN_ON(lvl >= ARM_LPAE_MAX_LEVELS - 1)")
        return -EINVAL
    e = pt._get_pte(table + 8 * i0)
    if not e:
        child = pt._alloc_table(L - 1)
        if child == U64_MAX:
            return -ENOMEM
        arm_lpae_install_table(pt, child, table + 8 * i0)
    else:
        if not pt.coherent_walk and not e & ARM_SW_SYNC:
            pt._sync_ptes(table + 8 * i0, 1)               # another map's entry: kick its sync
        if pt._etype(e, L) == OA:
            if not pt.no_warn:
                pt._warn(f"WARNING: __arm_lpae_map(): iova {iova:#x} is inside a mapped block "
                           "(an unmap is required first)")
            return -EEXIST
        child = arm_to_paddr(pt, e)
    return arm_map(pt, iova, paddr, size, pgcount, prot, L - 1, child, st)


def arm_clear_pte(pt, ptep, num_entries):
    """__arm_lpae_clear_pte(): zero the entries, one sync when the walk is not coherent."""
    for j in range(num_entries):
        pt._set_pte(ptep + 8 * j, 0)
    if not pt.coherent_walk and num_entries:
        pt._sync_ptes(ptep, num_entries)


def arm_lpae_install_table(pt, table, ptep):
    """arm_lpae_install_table(curr = 0): the table entry; when the walk is not coherent, the
    sync and then the entry with ARM_LPAE_PTE_SW_SYNC (that store is not synced)."""
    new = arm_paddr_to_iopte(pt, table) | ARM_TYPE_TABLE
    pt._set_pte(ptep, new)                                # cmpxchg64_relaxed(ptep, 0, new)
    if pt.coherent_walk:
        return
    pt._sync_ptes(ptep, 1)
    pt._set_pte(ptep, new | ARM_SW_SYNC)


def arm_map_pages(pt, iova, paddr, pgsize, pgcount, prot):
    """arm_lpae_map_pages(): (0 or -errno, bytes mapped)."""
    if not pgsize or pgsize & pt.pgsize_bitmap != pgsize:
        pt._warn(f"WARNING: arm_lpae_map_pages(): pgsize {pgsize:#x} not in the pgsize_bitmap")
        return -EINVAL, 0
    iaext = iova >> pt.ias
    if iaext or paddr >> pt.oas:
        pt._warn(f"WARNING: arm_lpae_map_pages(): iova {iova:#x} / paddr {paddr:#x} out of range")
        return -ERANGE, 0
    if not prot & (IOMMU_READ | IOMMU_WRITE):
        return -EINVAL, 0
    st = {"mapped": 0}
    ret = arm_map(pt, iova, paddr, pgsize, pgcount, arm_prot(pt, prot), pt.top,
                        pt.pgtable_root, st)
    return ret, st["mapped"]


def arm_unmap_pages(pt, iova, pgsize, pgcount):
    """arm_lpae_unmap_pages(): bytes unmapped; 0 on refusal or at a hole (after a WARN)."""
    if not pgsize or pgsize & pt.pgsize_bitmap != pgsize or not pgcount:
        pt._warn(f"WARNING: arm_lpae_unmap_pages(): bad pgsize {pgsize:#x} / pgcount {pgcount}")
        return 0
    if iova >> pt.ias:
        pt._warn(f"WARNING: arm_lpae_unmap_pages(): iova {iova:#x} beyond the input size")
        return 0
    return arm_unmap(pt, iova, pgsize, pgcount, pt.top, pt.pgtable_root)


def arm_iova_to_phys(pt, iova):
    """arm_lpae_iova_to_phys(): index bits only (high IOVA bits are not checked)."""
    table = pt.pgtable_root
    for L in range(pt.top, -1, -1):
        e = pt._get_pte(table + 8 * pt._index(iova, L))
        t = pt._etype(e, L)
        if t == OA:
            return arm_to_paddr(pt, e) | (iova & ((1 << pt._shift(L)) - 1))
        if t != TABLE:
            return 0
        table = arm_to_paddr(pt, e)
    return 0


# ---- arm_64_lpae_alloc_pgtable_s1() / _s2(): the register values the driver programs ------------
_ARM_TCR_IPS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}   # ARM_LPAE_TCR_PS_*_BIT
_ARM_TCR_TG0 = {12: 0, 16: 1, 14: 2}                             # ARM_LPAE_TCR_TG0_4K / 64K / 16K


def arm_lpae_cfg(pt):
    """cfg->arm_lpae_s1_cfg / arm_lpae_s2_cfg (see the core): walk attributes from coherent_walk."""
    walk = {"sh": 3, "irgn": 1, "orgn": 1} if pt.coherent_walk else {"sh": 2, "irgn": 0, "orgn": 0}
    regs = dict(walk, tg=_ARM_TCR_TG0[pt.pg_shift], tsz=64 - pt.ias)
    if not pt.arm_s2:
        regs["ips"] = _ARM_TCR_IPS[pt.oas]
        return {"tcr": regs, "mair": 0xF404FF44, "ttbr": pt.pgtable_root}
    sl = 4 - pt.levels + (1 if pt.pg_shift == 12 else 0)
    regs["ps"] = _ARM_TCR_IPS[pt.oas]
    regs["sl"] = ~sl & 3
    return {"vtcr": regs, "vttbr": pt.pgtable_root}

# ---- dirty tracking (IO_PGTABLE_QUIRK_ARM_HD, SMMUv3 HTTU HD), v6.18 ---------------------------
def arm_make_write_dirty(e):
    """The SMMU's HD update for a write through a DBM leaf: clear AP[2]."""
    return e & ~ARM_AP_RDONLY if e & ARM_DBM else e


def _rcd_walk(pt, L, table, st, end, flags, rec, g):
    """__arm_lpae_iopte_walk() + io_pgtable_visit() + visit_dirty(); st["addr"] is walk_data->addr."""
    from .generic_pt import gather_add
    idx, maxe, size = pt._index(st["addr"], L), 1 << pt._idx_bits(L), 1 << pt._shift(L)
    while idx < maxe and st["addr"] < end:
        e = pt._get_pte(table + 8 * idx)
        t = arm_etype(e, L)
        if t == OA:
            if e & (ARM_AP_RDONLY | ARM_DBM) == ARM_DBM:          # iopte_writeable_dirty()
                rec.append((st["addr"], size))                    # iommu_dirty_bitmap_record()
                gather_add(g, st["addr"], size)
                if not flags & IOMMU_DIRTY_NO_CLEAR:
                    pt._set_pte(table + 8 * idx, e | ARM_AP_RDONLY)   # iopte_set_writeable_clean()
            st["addr"] += size
        elif t == TABLE:
            r = _rcd_walk(pt, L - 1, pt._table_pa(e), st, end, flags, rec, g)
            if r:
                return r
        else:
            return -EINVAL
        idx += 1
    return 0


def arm_read_and_clear_dirty(pt, iova, size, flags, rec, g):
    """arm_lpae_read_and_clear_dirty()."""
    if size == 0:
        pt._warn("WARNING: arm_lpae_read_and_clear_dirty(): WARN_ON(!size)")
        return -EINVAL
    if ((iova + size - 1) & U64_MAX) & ~((1 << pt.ias) - 1):
        pt._warn(f"WARNING: arm_lpae_read_and_clear_dirty(): WARN_ON((iova + size - 1) & "
                 f"~(BIT(cfg->ias) - 1)) (iova {iova:#x} size {size:#x})")
        return -EINVAL
    if pt.arm_s2:
        return -EINVAL
    return _rcd_walk(pt, pt.top, pt.pgtable_root, {"addr": iova}, (iova + size) & U64_MAX, flags, rec, g)
