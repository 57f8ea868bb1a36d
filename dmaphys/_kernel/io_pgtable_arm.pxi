# drivers/iommu/io-pgtable-arm.c: ARM_64_LPAE_S1 and ARM_64_LPAE_S2 (stage 2: HAP/MEMATTR
# attributes, concatenated start tables) with 4K/16K/64K granules (v6.18 plus the
# December 2025 unmap fix) on an IoPgtable (io_pgtable.pxi): PTE encoding, __arm_lpae_map,
# __arm_lpae_unmap, arm_lpae_map_pages / unmap_pages; the non-coherent walker (cfg->coherent_walk
# false: __arm_lpae_sync_pte() after the stores, arm_lpae_install_table() with
# ARM_LPAE_PTE_SW_SYNC). Every CPU access to a table goes through IoPgtable.get_pte / set_pte
# (io_pgtable.pxi), the one place that knows the CPU's cache.
#
# Declarations (format bits) live in the C face, io_pgtable_arm.pxd.


# ---- entry encoding / decoding -----------------------------------------------------------------
cdef inline int arm_etype(u64 e, int L) noexcept nogil:
    """iopte_leaf() + iopte_table(): TYPE_PAGE at the last level, TYPE_BLOCK / TYPE_TABLE above."""
    cdef u64 t
    if e == 0:
        return PT_EMPTY
    t = e & ARM_TYPE_MASK
    if L == 0:
        return PT_OA if t == ARM_TYPE_PAGE else PT_INVALID
    if t == ARM_TYPE_BLOCK:
        return PT_OA
    return PT_TABLE if t == ARM_TYPE_TABLE else PT_INVALID


cdef inline bint arm_lpae_concat_mandatory(int pg_shift, int start_level, int oas) noexcept nogil:
    """arm_lpae_concat_mandatory() (Arm DDI0487 R_DXBSH, R_SRKBC): 16K starting at level 0, or at
    level 1 with a 40-bit PA; 4K starting at level 0 with a 40- or 42-bit PA."""
    if pg_shift == 14 and (start_level == 0 or (start_level == 1 and oas == 40)):
        return True
    return pg_shift == 12 and start_level == 0 and (oas == 40 or oas == 42)


cdef inline int arm_decode_prot(bint s2, u64 e) noexcept nogil:
    """IOMMU_* permissions a leaf grants: stage 1 AP, XN, AttrIndx; stage 2 HAP, XN, MemAttr."""
    cdef int p = IOMMU_READ, idx
    if s2:
        p = (IOMMU_READ if e & ARM_HAP_READ else 0) | (IOMMU_WRITE if e & ARM_HAP_WRITE else 0)
        if e & ARM_XN:
            p |= IOMMU_NOEXEC
        if (e & (0xF << 2)) == ARM_MEMATTR_OIWB:
            p |= IOMMU_CACHE
        elif (e & (0xF << 2)) == ARM_MEMATTR_DEV:
            p |= IOMMU_MMIO
        return p
    if not (e & ARM_AP_RDONLY) or (e & ARM_DBM):   # DBM: writable-clean is writable (HD)
        p |= IOMMU_WRITE
    if not (e & ARM_AP_UNPRIV):
        p |= IOMMU_PRIV
    if e & ARM_XN:
        p |= IOMMU_NOEXEC
    idx = (e >> ARM_ATTRINDX_SHIFT) & 7
    if idx == ARM_ATTR_IDX_CACHE:
        p |= IOMMU_CACHE
    elif idx == ARM_ATTR_IDX_DEV:
        p |= IOMMU_MMIO
    return p


# ---- io-pgtable-arm.c ------------------------------------------------------------------------------
cdef inline u64 arm_to_paddr(u64 granule, u64 e) noexcept nogil:
    """iopte_to_paddr(): 64K granule packs PA bits 51:48 into PTE bits 15:12."""
    cdef u64 p = e & ARM_ADDR_MASK
    if granule < 65536:
        return p
    return (p | (p << 36)) & (ARM_ADDR_MASK << 4)


cdef inline u64 arm_prot(bint s2, int prot) noexcept nogil:
    """arm_lpae_prot_to_pte() for ARM_64_LPAE_S1 / ARM_64_LPAE_S2 without quirks."""
    cdef u64 pte = ARM_NG
    if s2:
        pte = 0                              # ARM_LPAE_PTE_HAP_FAULT
        if prot & IOMMU_READ:
            pte |= ARM_HAP_READ
        if prot & IOMMU_WRITE:
            pte |= ARM_HAP_WRITE
        if prot & IOMMU_MMIO:
            pte |= ARM_MEMATTR_DEV
        elif prot & IOMMU_CACHE:
            pte |= ARM_MEMATTR_OIWB
        else:
            pte |= ARM_MEMATTR_NC
        pte |= ARM_SH_IS if (prot & IOMMU_CACHE) else ARM_SH_OS
        if prot & IOMMU_NOEXEC:
            pte |= ARM_XN
        return pte | ARM_AF
    if not (prot & IOMMU_WRITE) and (prot & IOMMU_READ):
        pte |= ARM_AP_RDONLY
    if not (prot & IOMMU_PRIV):
        pte |= ARM_AP_UNPRIV
    if prot & IOMMU_MMIO:
        pte |= ARM_ATTR_IDX_DEV << ARM_ATTRINDX_SHIFT
    elif prot & IOMMU_CACHE:
        pte |= ARM_ATTR_IDX_CACHE << ARM_ATTRINDX_SHIFT
    pte |= ARM_SH_IS if (prot & IOMMU_CACHE) else ARM_SH_OS
    if prot & IOMMU_NOEXEC:
        pte |= ARM_XN
    return pte | ARM_AF


cdef inline u64 arm_paddr_to_iopte(u64 pa) noexcept nogil:
    return (pa | (pa >> 36)) & ARM_ADDR_MASK


cdef inline u64 arm_max_entries(u64 granule, u64 i) noexcept nogil:
    cdef u64 per = granule >> 3
    return per - (i & (per - 1))


cdef int arm_free_pgtable(IoPgtable pt, u64 table, int L) except -1:
    """__arm_lpae_free_pgtable(): the subtree below table, then table."""
    cdef u64 i, e, child
    if L > 0:
        for i in range((<u64>1) << pt.idx_bits(L)):
            e = pt.get_pte(table + 8 * i)
            if e == 0 or pt.etype(e, L) == PT_OA:
                continue
            child = arm_to_paddr(pt.granule, e)
            if pt.owns(child):
                arm_free_pgtable(pt, child, L - 1)
    pt.release_table(table)
    return 0


cdef u64 arm_unmap(IoPgtable pt, u64 iova, u64 size, u64 pgcount, int L, u64 table) except? 0xFFFFFFFFFFFFFFFF:
    """__arm_lpae_unmap()."""
    cdef u64 i0, e, num, i, j, child
    cdef int num_entries
    if L < 0:
        pt.warn("WARNING: __arm_lpae_unmap(): WARN_ON(lvl == ARM_LPAE_MAX_LEVELS)")
        return 0
    i0 = pt.index(iova, L)
    e = pt.get_pte(table + 8 * i0)
    if e == 0:
        if not pt.no_warn:
            pt.warn(f"WARNING: __arm_lpae_unmap(): no IOPTE for iova {iova:#x} at level {3 - L}")
        # v6.18 returned -ENOENT from this size_t function and __iommu_unmap() went on with
        # it; the December 2025 fix (sent to stable, so in 6.18.y) returns 0
        return 0
    if size == (<u64>1) << pt.shift(L):
        num_entries = <int>pgcount             # min_t(int, pgcount, max_entries)
        if num_entries > <int>arm_max_entries(pt.granule, i0):
            num_entries = <int>arm_max_entries(pt.granule, i0)
        num = <u64>num_entries if num_entries > 0 else 0
        i = 0
        while i < num:
            e = pt.get_pte(table + 8 * (i0 + i))
            if e == 0:
                if not pt.no_warn:
                    pt.warn(f"WARNING: __arm_lpae_unmap(): no IOPTE for iova "
                              f"{iova + i * size:#x} at level {3 - L}")
                break
            if pt.etype(e, L) != PT_OA:
                arm_clear_pte(pt, table + 8 * (i0 + i), 1)
                child = arm_to_paddr(pt.granule, e)
                if pt.owns(child):
                    arm_free_pgtable(pt, child, L - 1)
            else:
                pt.leaf_writes += 1
            i += 1
        arm_clear_pte(pt, table + 8 * i0, i)     # the remaining entries, one sync
        return i * size
    if pt.etype(e, L) == PT_OA:
        pt.warn("Unmap of a partial large IOPTE is not allowed", "io-pgtable-arm:partial-unmap")
        return 0
    return arm_unmap(pt, iova, size, pgcount, L - 1, arm_to_paddr(pt.granule, e))


cdef int arm_map(IoPgtable pt, u64 iova, u64 paddr, u64 size, u64 pgcount, u64 prot, int L,
                 u64 table) except? -9999:
    """__arm_lpae_map() + arm_lpae_init_pte()."""
    cdef u64 i0 = pt.index(iova, L), num, i, e, child, typ
    cdef int num_entries
    if size == (<u64>1) << pt.shift(L):
        # num_entries = min_t(int, pgcount, max_entries): pgcount is truncated to int first
        # (a pgcount of 2^32 + 1 maps one entry; 2^31..2^32-1 are negative and map none,
        # and *mapped then grows by the sign-extended product, as the kernel's does)
        num_entries = <int>pgcount
        if num_entries > <int>arm_max_entries(pt.granule, i0):
            num_entries = <int>arm_max_entries(pt.granule, i0)
        if num_entries <= 0:
            pt.st_mapped += <u64>(<long long>num_entries) * size
            return 0
        num = <u64>num_entries
        for i in range(num):
            e = pt.get_pte(table + 8 * (i0 + i))
            if pt.etype(e, L) == PT_OA:
                if not pt.no_warn:
                    pt.warn(f"WARNING: arm_lpae_init_pte(): iova {iova + i * size:#x} is already "
                              "mapped (an unmap is required first)")
                return -EEXIST
            if (e & ARM_TYPE_MASK) == ARM_TYPE_TABLE:
                # a block replaces a table: __arm_lpae_unmap() of the table frees it whole
                if arm_unmap(pt, iova + i * size, size, 1, L, table) != size:
                    pt.warn("WARNING: arm_lpae_init_pte(): WARN_ON(1)")
                    return -EINVAL
        typ = ARM_TYPE_PAGE if L == 0 else ARM_TYPE_BLOCK
        for i in range(num):                     # __arm_lpae_init_pte()
            pt.set_pte(table + 8 * (i0 + i), prot | typ | arm_paddr_to_iopte(paddr + i * size))
        if not pt.coherent_walk:
            pt.sync_pte(table + 8 * i0, num)
        pt.leaf_writes += num
        pt.st_mapped += num * size
        return 0
    if L == 0:
        pt.warn("WARNING: __arm_lpae_map(): WARN_ON(lvl >= ARM_LPAE_MAX_LEVELS - 1)")
        return -EINVAL
    e = pt.get_pte(table + 8 * i0)
    if e == 0:
        child = pt.alloc_table(L - 1)
        if child == U64_MAX:
            return -ENOMEM
        arm_lpae_install_table(pt, child, table + 8 * i0)
    else:
        if not pt.coherent_walk and not (e & ARM_SW_SYNC):
            # an entry another map installed, its sync maybe still in flight: kick it (the
            # kernel does this before looking at what the entry is)
            pt.sync_pte(table + 8 * i0, 1)
        if pt.etype(e, L) == PT_OA:
            if not pt.no_warn:
                pt.warn(f"WARNING: __arm_lpae_map(): iova {iova:#x} is inside a mapped block "
                          "(an unmap is required first)")
            return -EEXIST
        child = arm_to_paddr(pt.granule, e)
    return arm_map(pt, iova, paddr, size, pgcount, prot, L - 1, child)


cdef inline int arm_clear_pte(IoPgtable pt, u64 ptep, u64 num_entries) except -1:
    """__arm_lpae_clear_pte(): zero num_entries entries, one sync when the walk is not coherent."""
    cdef u64 j
    for j in range(num_entries):
        pt.set_pte(ptep + 8 * j, 0)
    if not pt.coherent_walk and num_entries:
        pt.sync_pte(ptep, num_entries)
    return 0


cdef int arm_lpae_install_table(IoPgtable pt, u64 table, u64 ptep) except -1:
    """arm_lpae_install_table(table, ptep, curr = 0): the cmpxchg of an empty entry to the table
    entry; when the walk is not coherent, the sync, then the same entry with ARM_LPAE_PTE_SW_SYNC
    stored after it (not synced: that line stays dirty until a later sync cleans it)."""
    cdef u64 new = arm_paddr_to_iopte(table) | ARM_TYPE_TABLE
    pt.set_pte(ptep, new)                        # cmpxchg64_relaxed(ptep, 0, new): one thread, so old == 0
    if pt.coherent_walk:
        return 0
    pt.sync_pte(ptep, 1)
    pt.set_pte(ptep, new | ARM_SW_SYNC)          # WRITE_ONCE(*ptep, new | ARM_LPAE_PTE_SW_SYNC)
    return 0


cdef u64 arm_iova_to_phys_cpu(IoPgtable pt, u64 iova) noexcept nogil:
    """arm_lpae_iova_to_phys() reading the tables through the CPU's cache (IoPgtable.get_pte):
    what c_iova_to_phys runs for a non-coherent walker, whose newest stores may not be in memory."""
    cdef u64 table = pt.pgtable_root, e
    cdef int L = pt.top
    while True:
        e = pt.get_pte(table + pt.index(iova, L) * 8)
        if L == 0:
            if (e & ARM_TYPE_MASK) != ARM_TYPE_PAGE:
                return 0
        elif (e & ARM_TYPE_MASK) == ARM_TYPE_TABLE:
            table = arm_to_paddr(pt.granule, e)
            L -= 1
            continue
        elif (e & ARM_TYPE_MASK) != ARM_TYPE_BLOCK:
            return 0
        return arm_to_paddr(pt.granule, e) | (iova & (((<u64>1) << pt.shifts[L]) - 1))


cdef int arm_map_pages(IoPgtable pt, u64 iova, u64 paddr, u64 pgsize, u64 pgcount, int prot,
                       u64 *mapped) except? -9999:
    """arm_lpae_map_pages()."""
    cdef int ret
    if pgsize == 0 or (pgsize & pt.pgsize_bitmap) != pgsize:
        pt.warn(f"WARNING: arm_lpae_map_pages(): pgsize {pgsize:#x} not in the pgsize_bitmap")
        return -EINVAL
    if (iova >> pt.ias) or (paddr >> pt.oas):
        pt.warn(f"WARNING: arm_lpae_map_pages(): iova {iova:#x} / paddr {paddr:#x} out of range")
        return -ERANGE
    if not (prot & (IOMMU_READ | IOMMU_WRITE)):
        return -EINVAL
    pt.st_mapped = 0
    ret = arm_map(pt, iova, paddr, pgsize, pgcount, arm_prot_hd(pt.arm_s2, pt.arm_hd, prot), pt.top, pt.pgtable_root)
    mapped[0] += pt.st_mapped
    return ret


cdef u64 arm_unmap_pages(IoPgtable pt, u64 iova, u64 pgsize, u64 pgcount) except? 0xFFFFFFFFFFFFFFFF:
    """arm_lpae_unmap_pages(): bytes; 0 on refusal or at a hole (after a WARN)."""
    if pgsize == 0 or (pgsize & pt.pgsize_bitmap) != pgsize or pgcount == 0:
        pt.warn(f"WARNING: arm_lpae_unmap_pages(): bad pgsize {pgsize:#x} / pgcount {pgcount}")
        return 0
    if iova >> pt.ias:
        pt.warn(f"WARNING: arm_lpae_unmap_pages(): iova {iova:#x} beyond the input size")
        return 0
    return arm_unmap(pt, iova, pgsize, pgcount, pt.top, pt.pgtable_root)


# ---- arm_64_lpae_alloc_pgtable_s1() / _s2(): the register values the driver programs ------------
_ARM_TCR_IPS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}   # ARM_LPAE_TCR_PS_*_BIT
_ARM_TCR_TG0 = {12: 0, 16: 1, 14: 2}                             # ARM_LPAE_TCR_TG0_4K / 64K / 16K


def _arm_lpae_cfg(IoPgtable pt):
    """cfg->arm_lpae_s1_cfg {tcr, mair, ttbr} or cfg->arm_lpae_s2_cfg {vtcr, vttbr} as the kernel
    fills them (no quirks): the walk attributes are inner-shareable write-back (SH IS, IRGN/ORGN
    WBWA) for a coherent walker, outer-shareable non-cacheable (SH OS, IRGN/ORGN NC) otherwise."""
    walk = ({"sh": 3, "irgn": 1, "orgn": 1} if pt.coherent_walk else {"sh": 2, "irgn": 0, "orgn": 0})
    regs = dict(walk, tg=_ARM_TCR_TG0[pt.pg_shift], tsz=64 - pt.ias)
    if not pt.arm_s2:
        regs["ips"] = _ARM_TCR_IPS[pt.oas]
        # MAIR: NC 0x44 (index 0), WBRWA 0xff (1), DEVICE 0x04 (2), INC_OWBRWA 0xf4 (3)
        return {"tcr": regs, "mair": 0xF404FF44, "ttbr": pt.pgtable_root}
    sl = 4 - pt.levels + (1 if pt.pg_shift == 12 else 0)          # SL0's encoding differs for 4K
    regs["ps"] = _ARM_TCR_IPS[pt.oas]
    regs["sl"] = ~sl & 3
    return {"vtcr": regs, "vttbr": pt.pgtable_root}

# ---- dirty tracking (IO_PGTABLE_QUIRK_ARM_HD, SMMUv3 HTTU HD) ------------------------------------
# v6.18: a stage-1 leaf with DBM (bit 51) is writable; AP[2] (RDONLY) clear means writable-dirty,
# set means writable-clean. arm_lpae_prot_to_pte() sets DBM (without RDONLY: born dirty) in every
# leaf that is not read-only when the quirk is on; the SMMU (CD.TCR HA|HD) clears RDONLY on a
# write; arm_lpae_read_and_clear_dirty() sets it again.
cdef inline u64 arm_prot_hd(bint s2, bint hd, int prot) noexcept nogil:
    """arm_lpae_prot_to_pte() with the HD quirk: DBM unless the leaf is read-only (stage 1)."""
    cdef u64 pte = arm_prot(s2, prot)
    if hd and not s2 and not (not (prot & IOMMU_WRITE) and (prot & IOMMU_READ)):
        pte |= ARM_DBM
    return pte


cdef inline u64 arm_make_write_dirty(u64 e) noexcept nogil:
    """The SMMU's HD update for a write through a DBM leaf: clear AP[2]."""
    if e & ARM_DBM:
        return e & ~(<u64>ARM_AP_RDONLY)
    return e


cdef inline void arm_gather_add(u64 *g, u64 iova, u64 size) noexcept nogil:
    """iommu_iotlb_gather_add_range()."""
    cdef u64 end = iova + size - 1
    if g[0] > iova:
        g[0] = iova
    if g[1] < end:
        g[1] = end


cdef int arm_rcd_walk(IoPgtable pt, int L, u64 table, u64 *addr, u64 end, u64 flags, list rec,
                      u64 *g) except? -9999:
    """__arm_lpae_iopte_walk() + io_pgtable_visit() with visit_dirty(): every entry from addr's
    index while addr < end; a leaf is recorded at the walk's running addr (which keeps the
    caller's offset into the first leaf) and steps it by the leaf size; an entry that is neither
    a leaf nor a table (an empty one included) ends the walk with -EINVAL."""
    cdef u64 idx = pt.index(addr[0], L), maxe = (<u64>1) << pt.idx_bits(L)
    cdef u64 size = (<u64>1) << pt.shift(L), e
    cdef int t, r
    while idx < maxe and addr[0] < end:
        e = pt.get_pte(table + 8 * idx)
        t = arm_etype(e, L)
        if t == PT_OA:
            if (e & (ARM_AP_RDONLY | ARM_DBM)) == ARM_DBM:     # iopte_writeable_dirty()
                rec.append((addr[0], size))                     # iommu_dirty_bitmap_record()
                arm_gather_add(g, addr[0], size)
                if not (flags & IOMMU_DIRTY_NO_CLEAR):
                    pt.set_pte(table + 8 * idx, e | ARM_AP_RDONLY)   # iopte_set_writeable_clean()
            addr[0] += size
        elif t == PT_TABLE:
            r = arm_rcd_walk(pt, L - 1, pt.table_pa(e), addr, end, flags, rec, g)
            if r:
                return r
        else:
            return -EINVAL
        idx += 1
    return 0


cdef int arm_read_and_clear_dirty(IoPgtable pt, u64 iova, u64 size, u64 flags, list rec,
                                  u64 *g) except? -9999:
    """arm_lpae_read_and_clear_dirty()."""
    cdef u64 addr = iova
    if size == 0:
        pt.warn("WARNING: arm_lpae_read_and_clear_dirty(): WARN_ON(!size)")
        return -EINVAL
    if (iova + size - 1) & ~(((<u64>1) << pt.ias) - 1):
        pt.warn(f"WARNING: arm_lpae_read_and_clear_dirty(): WARN_ON((iova + size - 1) & "
                f"~(BIT(cfg->ias) - 1)) (iova {iova:#x} size {size:#x})")
        return -EINVAL
    if pt.arm_s2:
        return -EINVAL
    return arm_rcd_walk(pt, pt.top, pt.pgtable_root, &addr, iova + size, flags, rec, g)
