# drivers/iommu/generic_pt: the formats (fmt/vtdss.h "vtd-ss"/"vtd-ss-5level", fmt/x86_64.h
# "x86-64"/"x86-64-5level" with PT_FEAT_SIGN_EXTEND) and the algorithms of iommu_pt.h
# (__map_range, clear_contig, __unmap_range, __collect_tables) on an IoPgtable (io_pgtable.pxi).
# Followed: iommu_pt.h torvalds @152c862c, vtdss.h @cc4adab1, x86_64.h @e2692c4e (v6.19-era).
#
# Declarations (format bits) live in the C face, generic_pt.pxd.


# ---- entry encoding / decoding (pt_load_entry_raw, *_pt_install_*, *_pt_iommu_set_prot) ------
cdef inline int gpt_etype(int fam, u64 e, int L) noexcept nogil:
    """pt_load_entry_raw(): vtdss has no present bit (R|W tell), x86_64 has P; PS marks a leaf above level 0."""
    if fam == PT_FAM_VTDSS:
        if e == 0:
            return PT_EMPTY
        return PT_OA if (L == 0 or (L <= 2 and (e & VTDSS_PS))) else PT_TABLE
    if not (e & X86_P):
        return PT_EMPTY
    return PT_OA if (L == 0 or (L <= 2 and (e & X86_PS))) else PT_TABLE


cdef inline int gpt_decode_prot(int fam, u64 e, int acc) noexcept nogil:
    """IOMMU_* permissions a device gets through leaf e (acc: what the tables above allow)."""
    cdef int p = 0
    if fam == PT_FAM_VTDSS:
        if e & VTDSS_R:
            p |= IOMMU_READ
        if e & VTDSS_W:
            p |= IOMMU_WRITE
        p &= acc
        if e & VTDSS_SNP:
            p |= IOMMU_CACHE
        return p
    p = IOMMU_READ
    if e & X86_RW:
        p |= IOMMU_WRITE
    p &= acc
    if e & X86_XD:
        p |= IOMMU_NOEXEC
    return p


cdef inline int gpt_table_acc(int fam, u64 e) noexcept nogil:
    """IOMMU_READ/WRITE a table entry lets through (the kernel's tables grant both)."""
    cdef int p = 0
    if fam == PT_FAM_VTDSS:
        if e & VTDSS_R:
            p |= IOMMU_READ
        if e & VTDSS_W:
            p |= IOMMU_WRITE
        return p
    return IOMMU_READ | (IOMMU_WRITE if (e & X86_RW) else 0)


# ---- iommu_pt.h ----------------------------------------------------------------------------------
cdef inline u64 gpt_prot(int fam, bint force_coherence, int prot) noexcept nogil:
    """vtdss_pt_iommu_set_prot() / x86_64_pt_iommu_set_prot()."""
    cdef u64 bits = 0
    if fam == PT_FAM_VTDSS:
        if prot & IOMMU_READ:
            bits |= VTDSS_R
        if prot & IOMMU_WRITE:
            bits |= VTDSS_W
        if force_coherence:
            bits |= VTDSS_SNP
        return bits
    bits = X86_U | X86_A
    if prot & IOMMU_WRITE:
        bits |= X86_RW | X86_D
    return bits


cdef inline u64 gpt_leaf(int fam, u64 oa, int L, u64 bits) noexcept nogil:
    """vtdss_pt_install_leaf_entry() / x86_64_pt_install_leaf_entry()."""
    cdef u64 e = (oa & PT_OA_MASK) | bits
    if L:
        e |= VTDSS_PS                        # == X86_PS (bit 7)
    if fam == PT_FAM_X86:
        e |= X86_P
    return e


cdef inline u64 gpt_table(int fam, u64 pa) noexcept nogil:
    """vtdss_pt_install_table() / x86_64_pt_install_table()."""
    if fam == PT_FAM_VTDSS:
        return VTDSS_R | VTDSS_W | (pa & PT_OA_MASK)
    return X86_P | X86_RW | X86_U | X86_A | (pa & PT_OA_MASK)


cdef int gpt_collect(IoPgtable pt, u64 table, int L) except? -9999:
    """__collect_tables() with check_mapped: queue a subtree's tables, or -EADDRINUSE."""
    cdef u64 i, e, child
    cdef int t, r
    for i in range((<u64>1) << pt.idx_bits(L)):
        e = _pt_rd(pt.l1, table + 8 * i)
        t = pt.etype(e, L)
        if t == PT_TABLE:
            child = pt.table_pa(e)
            pt.freelist.push_back(child)
            r = gpt_collect(pt, child, L - 1)
            if r:
                return r
        elif t == PT_OA:
            return -EADDRINUSE
    return 0


cdef int gpt_clear_contig(IoPgtable pt, u64 table, u64 i, int L) except? -9999:
    """clear_contig(): a leaf may only replace an empty table subtree (freed via the gather)."""
    cdef u64 e = _pt_rd(pt.l1, table + 8 * i)
    cdef int t = pt.etype(e, L), r
    cdef size_t mark
    cdef u64 child
    if t == PT_TABLE:
        child = pt.table_pa(e)
        mark = pt.freelist.size()
        r = gpt_collect(pt, child, L - 1)
        if r:
            pt.freelist.resize(mark)
            return r
        _pt_wr(pt.mem, table + 8 * i, 0)
        pt.freelist.push_back(child)
        return 0
    if t != PT_EMPTY:
        return -EADDRINUSE
    return 0


cdef int gpt_map_level(IoPgtable pt, int L, u64 table, u64 va, u64 last) except? -9999:
    """__map_range() above the leaf level, __map_range_leaf() at it."""
    cdef u64 isz = (<u64>1) << pt.shift(L)
    cdef u64 i = pt.index(va, L), first = i
    cdef u64 end = pt.index(last, L) + 1
    cdef u64 e, child, item, item_last
    cdef int t, r
    if L == pt.st_leaf_L:
        while True:
            if pt.etype(_pt_rd(pt.l1, table + 8 * i), L) != PT_EMPTY:
                r = gpt_clear_contig(pt, table, i, L)
                if r:
                    return r
            _pt_wr(pt.mem, table + 8 * i, gpt_leaf(pt.family, pt.st_oa, L, pt.st_attrs))
            pt.leaf_writes += 1
            pt.st_oa += isz
            i += 1
            if i >= end:
                return 0
    while True:
        e = _pt_rd(pt.l1, table + 8 * i)
        t = pt.etype(e, L)
        if t != PT_TABLE:
            if t != PT_EMPTY:
                return -EADDRINUSE
            child = pt.alloc_table(L - 1)          # pt_iommu_new_table()
            if child == U64_MAX:
                return -ENOMEM
            _pt_wr(pt.mem, table + 8 * i, gpt_table(pt.family, child))
        else:
            child = pt.table_pa(e)
        item_last = pt.item_start(va, L, i) + isz - 1
        item = va if i == first else pt.item_start(va, L, i)
        r = gpt_map_level(pt, L - 1, child, item, last if last < item_last else item_last)
        if r:
            return r
        i += 1
        if i >= end:
            return 0


cdef int gpt_map_pages(IoPgtable pt, u64 iova, u64 paddr, u64 pgsize, u64 pgcount, int prot,
                       u64 *mapped) except? -9999:
    """pt_iommu_<fmt>_map_pages()."""
    cdef u64 length, last
    cdef int lg2, ret
    if not (prot & (IOMMU_READ | IOMMU_WRITE)):
        pt.warn("WARNING: generic_pt map_pages(): WARN_ON(!(prot & (IOMMU_READ | IOMMU_WRITE)))")
        return -EINVAL
    if pt.oas < 64 and (paddr >> pt.oas):
        return -ERANGE
    length = pgsize * pgcount
    if length == 0:
        return -EINVAL
    last = iova + length - 1
    if last < iova:
        return -PT_EOVERFLOW
    lg2 = pt_compute_best_pgsize(pt.pgsize_bitmap, iova, last, paddr)
    if lg2 == 0:
        return -PT_ENXIO
    if not pt.in_range(iova, last):
        return -ERANGE
    pt.warn_alias(iova)
    pt.st_oa = paddr
    pt.st_attrs = gpt_prot(pt.family, pt.force_coherence, prot)
    pt.st_leaf_L = (lg2 - 12) // 9
    pt.freelist.clear()
    ret = gpt_map_level(pt, pt.top, pt.pgtable_root, iova, last)
    # tables replaced by leaves went to the gather: map_pages syncs the IOTLB, then frees
    pt.release_freelist()
    mapped[0] += pt.st_oa - paddr
    return ret


cdef int gpt_unmap_level(IoPgtable pt, int L, u64 table, u64 va, u64 last) except? -9999:
    """__unmap_range(): clear leaves, free tables the range fully covers, stop at a hole."""
    cdef u64 isz = (<u64>1) << pt.shift(L)
    cdef u64 i = pt.index(va, L), first = i
    cdef u64 end = pt.index(last, L) + 1
    cdef u64 e = _pt_rd(pt.l1, table + 8 * i), num_oas = 0, item, item_last, child
    cdef int t = pt.etype(e, L), ret = 0
    cdef bint fully
    if t == PT_OA and (va & (isz - 1)):
        return -EINVAL                       # starts inside a large leaf
    while True:
        if t != PT_OA:
            if t != PT_TABLE:
                ret = -EINVAL
                break
            item_last = pt.item_start(va, L, i) + isz - 1
            item = va if i == first else pt.item_start(va, L, i)
            fully = (item & (isz - 1)) == 0 and last >= item_last
            child = pt.table_pa(e)
            ret = gpt_unmap_level(pt, L - 1, child, item, last if last < item_last else item_last)
            if ret:
                break
            if fully:
                pt.freelist.push_back(child)
                _pt_wr(pt.mem, table + 8 * i, 0)
        else:
            _pt_wr(pt.mem, table + 8 * i, 0)
            pt.leaf_writes += 1
            num_oas += 1
        i += 1
        if i >= end:
            break
        e = _pt_rd(pt.l1, table + 8 * i)
        t = pt.etype(e, L)
    pt.st_unmapped += num_oas * isz
    return ret


cdef u64 gpt_unmap_pages(IoPgtable pt, u64 iova, u64 pgsize, u64 pgcount) except? 0xFFFFFFFFFFFFFFFF:
    """pt_iommu_<fmt>_unmap_pages(): bytes unmapped (a large leaf goes whole)."""
    cdef u64 length = pgsize * pgcount
    if length == 0 or iova + length - 1 < iova or not pt.in_range(iova, iova + length - 1):
        return 0
    pt.warn_alias(iova)
    pt.st_unmapped = 0
    pt.freelist.clear()
    gpt_unmap_level(pt, pt.top, pt.pgtable_root, iova, iova + length - 1)
    pt.release_freelist()
    return pt.st_unmapped
