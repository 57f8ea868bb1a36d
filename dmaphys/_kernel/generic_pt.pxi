# drivers/iommu/generic_pt: the formats (fmt/vtdss.h "vtd-ss"/"vtd-ss-5level", fmt/x86_64.h
# "x86-64"/"x86-64-5level" with PT_FEAT_SIGN_EXTEND, fmt/amdv1.h "amdv1" with PT_FEAT_DYNAMIC_TOP,
# fmt/riscv.h "riscv-sv39"/"riscv-sv48"/"riscv-sv57", 64-bit, sign extended, Svnapot 64K)
# and the algorithms of iommu_pt.h (__map_range, __map_range_leaf, clear_contig, increase_top,
# __unmap_range, __collect_tables, __iova_to_phys) on an IoPgtable (io_pgtable.pxi).
# Followed: iommu_pt.h torvalds @152c862c, vtdss.h @cc4adab1, x86_64.h @e2692c4e, amdv1.h @0eaed89c,
# riscv.h @637315cb (Linux v6.19 era).
#
# riscv (RISC-V privileged spec Sv39/Sv48/Sv57, as fmt/riscv.h encodes it): V bit 0, R 1, W 2, X 3,
# U 4, G 5, A 6, D 7, PPN bits 53:10 (4 KiB units, so the OA is PPN << 12). A valid entry with any
# of R/W/X is a leaf at every level (the top included); at level 0 every valid entry is a leaf;
# otherwise it points at the next table. Table entries carry V only. The top level is 2/3/4 for
# a 39/48/57-bit VA; the VA is sign extended from its top bit (PT_FEAT_SIGN_EXTEND). The riscv
# IOMMU driver also asks for PT_FEAT_RISCV_SVNAPOT_64K (the IOMMU spec mandates Svnapot), and so
# does dmaphys: a 64K page is 16 identical level-0 entries with N (bit 63) and PPN bit 3 (bit 13)
# set, the PPN's low 4 bits otherwise zero. Svpbmt (PBMT bits 62:61) is not modelled.
#
# amdv1 (AMD IOMMU spec 2.2.3): PR bit 0, NextLevel bits 11:9 (0: a leaf of the level's item size,
# 7: a "contiguous" leaf whose size is encoded by the run of ones at the bottom of the address
# field, 2^(first zero bit + 13) bytes, replicated into every item it covers; else a table of
# that level), address 51:12, FC 60, IR 61, IW 62. Levels 0..5; the top grows while mapping.
#
# Declarations (format bits) live in the C face, generic_pt.pxd.


# ---- entry encoding / decoding (pt_load_entry_raw, *_pt_install_*, *_pt_iommu_set_prot) ------
cdef inline int gpt_etype(int fam, u64 e, int L) noexcept nogil:
    """pt_load_entry_raw(): vtdss has no present bit (R|W tell), x86_64 has P; PS marks a leaf above level 0."""
    cdef u64 nl
    if fam == PT_FAM_RISCV:                  # riscvpt_load_entry_raw()
        if not (e & RISCV_V):
            return PT_EMPTY
        return PT_OA if (L == 0 or (e & (RISCV_R | RISCV_W | RISCV_X))) else PT_TABLE
    if fam == PT_FAM_AMDV1:                  # amdv1pt_load_entry_raw()
        if not (e & AMDV1_PR):
            return PT_EMPTY
        nl = (e >> AMDV1_NL_SHIFT) & 7
        return PT_OA if (L == 0 or nl == 0 or nl == AMDV1_NL_SIZE) else PT_TABLE
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
    if fam == PT_FAM_RISCV:                  # R/W/X of the leaf (tables carry no permissions)
        if e & RISCV_R:
            p |= IOMMU_READ
        if e & RISCV_W:
            p |= IOMMU_WRITE
        p &= acc
        if not (e & RISCV_X):
            p |= IOMMU_NOEXEC
        return p
    if fam == PT_FAM_AMDV1:                  # IR/IW are ANDed down the walk; FC forces coherency
        if e & AMDV1_IR:
            p |= IOMMU_READ
        if e & AMDV1_IW:
            p |= IOMMU_WRITE
        p &= acc
        if e & AMDV1_FC:
            p |= IOMMU_CACHE
        return p
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
    if fam == PT_FAM_RISCV:
        return IOMMU_READ | IOMMU_WRITE
    if fam == PT_FAM_AMDV1:
        if e & AMDV1_IR:
            p |= IOMMU_READ
        if e & AMDV1_IW:
            p |= IOMMU_WRITE
        return p
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
    if fam == PT_FAM_RISCV:                  # riscvpt_iommu_set_prot() without Svpbmt
        bits = RISCV_A | RISCV_U
        if prot & IOMMU_WRITE:
            bits |= RISCV_W | RISCV_R | RISCV_D
        if prot & IOMMU_READ:
            bits |= RISCV_R
        if not (prot & IOMMU_NOEXEC):
            bits |= RISCV_X
        return bits
    if fam == PT_FAM_AMDV1:                  # amdv1pt_iommu_set_prot()
        if force_coherence:
            bits |= AMDV1_FC
        if prot & IOMMU_READ:
            bits |= AMDV1_IR
        if prot & IOMMU_WRITE:
            bits |= AMDV1_IW
        return bits
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
    cdef u64 e
    if fam == PT_FAM_RISCV:                  # riscvpt_install_leaf_entry(): V | PPN | attributes
        return RISCV_V | ((oa >> 2) & RISCV_PPN_MASK) | bits
    e = (oa & PT_OA_MASK) | bits
    if L:
        e |= VTDSS_PS                        # == X86_PS (bit 7)
    if fam == PT_FAM_X86:
        e |= X86_P
    return e


cdef inline u64 riscv_leaf(u64 oa, int L, int lg2, u64 bits) noexcept nogil:
    """riscvpt_install_leaf_entry(): V | PPN | attributes, plus N and the 64K size bit for a
    Svnapot page (the caller writes it into all 16 items)."""
    cdef u64 e = RISCV_V | ((oa >> 2) & RISCV_PPN_MASK) | bits
    if L == 0 and lg2 != 12:
        e |= RISCV_N | RISCV_NAPOT_64K
    return e


cdef inline u64 gpt_table(int fam, u64 pa, int L) noexcept nogil:
    """vtdss/x86_64/amdv1pt_install_table() for an entry at level L."""
    if fam == PT_FAM_RISCV:                  # riscvpt_install_table(): V | PPN
        return RISCV_V | ((pa >> 2) & RISCV_PPN_MASK)
    if fam == PT_FAM_AMDV1:                  # NextLevel = the entry's level; IR|IW always
        return AMDV1_PR | ((<u64>L) << AMDV1_NL_SHIFT) | (pa & PT_OA_MASK) | AMDV1_IR | AMDV1_IW
    if fam == PT_FAM_VTDSS:
        return VTDSS_R | VTDSS_W | (pa & PT_OA_MASK)
    return X86_P | X86_RW | X86_U | X86_A | (pa & PT_OA_MASK)


cdef inline u64 amdv1_leaf(u64 oa, int L, int lg2, u64 bits) noexcept nogil:
    """amdv1pt_install_leaf_entry(): NextLevel 0, or 7 with the size's ones in the address field."""
    cdef u64 e = AMDV1_PR | (oa & PT_OA_MASK) | bits
    if lg2 != 12 + 9 * L:
        e |= ((<u64>AMDV1_NL_SIZE) << AMDV1_NL_SHIFT) | ((((<u64>1) << (lg2 - 13)) - 1) << 12)
    return e


cdef inline int amdv1_leaf_lg2(u64 e, int L) noexcept nogil:
    """lg2 of the bytes a leaf maps: the level's item size, or for NextLevel 7 the first zero
    bit of the address field + 13 (amdv1pt_entry_oa() / amdv1pt_entry_num_contig_lg2())."""
    if ((e >> AMDV1_NL_SHIFT) & 7) != AMDV1_NL_SIZE:
        return 12 + 9 * L
    return __ffs64(~((e & PT_OA_MASK) >> 12)) + 13


cdef inline bint amdv1_range_ok(int ias, int top, u64 va, u64 last) noexcept nogil:
    """pt_check_range() for the current top: the top covers 12 + 9 * (top + 1) bits (64 at
    level 5), capped by max_vasz_lg2; no sign extension."""
    cdef int vasz = 64 if top >= AMDV1_MAX_TOP else 12 + 9 * (top + 1)
    if ias < vasz:
        vasz = ias
    if vasz >= 64:
        return True
    return (va >> vasz) == 0 and (last >> vasz) == 0


cdef int amdv1_increase_top(IoPgtable pt, u64 va, u64 last) except? -9999:
    """increase_top() (PT_FEAT_DYNAMIC_TOP): add top levels, each linking the old top at index 0,
    until the range fits and the leaf level is at or below the top; -ERANGE past max_vasz_lg2
    (the new tables are freed), -ENOMEM."""
    cdef int new_top = pt.top
    cdef u64 root = pt.pgtable_root, t
    cdef vector[u64] made
    cdef size_t k
    while not (amdv1_range_ok(pt.ias, new_top, va, last) and pt.st_leaf_L <= new_top):
        new_top += 1
        t = U64_MAX
        if new_top <= AMDV1_MAX_TOP and 12 + 9 * new_top < pt.ias:
            t = pt.alloc_table(new_top)
        if t == U64_MAX:
            for k in range(made.size()):
                pt.tables.erase(made[k])
                pt.free_now(made[k])
            return -ENOMEM if (new_top <= AMDV1_MAX_TOP and 12 + 9 * new_top < pt.ias) else -ERANGE
        made.push_back(t)
        _pt_wr(pt.mem, t, gpt_table(PT_FAM_AMDV1, root, new_top))
        root = t
    if new_top != pt.top:                    # the driver's change_top(): the DTE now points here
        pt.pgtable_root = root
        pt.top = new_top
        pt.levels = new_top + 1
        pt.top_bits = 7 if new_top == AMDV1_MAX_TOP else 9
    return 0


cdef u64 gpt_iova_to_phys(IoPgtable pt, u64 iova) noexcept nogil:
    """pt_iommu_<fmt>_iova_to_phys() (__iova_to_phys + pt_entry_oa_exact()) for any format."""
    cdef u64 table = pt.pgtable_root, e, size
    cdef int L = pt.top, t
    if not pt.in_range(iova, iova):
        return <u64>(-ERANGE)
    while True:
        e = _pt_rd(pt.l1, table + pt.index(iova, L) * 8)
        t = pt.etype(e, L)
        if t == PT_EMPTY:
            return 0
        if t == PT_OA:
            size = pt.leaf_size(e, L)
            return (pt.leaf_oa(e) & ~(size - 1)) | (iova & (size - 1))
        table = pt.table_pa(e)
        L -= 1


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


cdef int gpt_clear_contig(IoPgtable pt, u64 table, u64 i, int L, u64 n) except? -9999:
    """clear_contig() over the n items a leaf will cover: each may only be empty or an empty
    table subtree (freed via the gather)."""
    cdef u64 e, child, j
    cdef int t, r
    cdef size_t mark
    for j in range(i, i + n):
        e = _pt_rd(pt.l1, table + 8 * j)
        t = pt.etype(e, L)
        if t == PT_TABLE:
            child = pt.table_pa(e)
            mark = pt.freelist.size()
            r = gpt_collect(pt, child, L - 1)
            if r:
                pt.freelist.resize(mark)
                return r
            _pt_wr(pt.mem, table + 8 * j, 0)
            pt.freelist.push_back(child)
        elif t != PT_EMPTY:
            return -EADDRINUSE
    return 0


cdef int gpt_map_level(IoPgtable pt, int L, u64 table, u64 va, u64 last) except? -9999:
    """__map_range() above the leaf level, __map_range_leaf() at it."""
    cdef u64 isz = (<u64>1) << pt.shift(L)
    cdef u64 i = pt.index(va, L), first = i
    cdef u64 end = pt.index(last, L) + 1
    cdef u64 e, child, item, item_last, step, leaf, j
    cdef int t, r
    if L == pt.st_leaf_L:                    # __map_range_leaf()
        step = (<u64>1) << (pt.st_leaf_lg2 - pt.shift(L))
        while True:
            if step > 1 or pt.etype(_pt_rd(pt.l1, table + 8 * i), L) != PT_EMPTY:
                r = gpt_clear_contig(pt, table, i, L, step)
                if r:
                    return r
            if pt.family == PT_FAM_AMDV1:
                leaf = amdv1_leaf(pt.st_oa, L, pt.st_leaf_lg2, pt.st_attrs)
            elif pt.family == PT_FAM_RISCV:
                leaf = riscv_leaf(pt.st_oa, L, pt.st_leaf_lg2, pt.st_attrs)
            else:
                leaf = gpt_leaf(pt.family, pt.st_oa, L, pt.st_attrs)
            for j in range(i, i + step):
                _pt_wr(pt.mem, table + 8 * j, leaf)
            pt.leaf_writes += step
            pt.st_oa += isz * step
            i += step
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
            _pt_wr(pt.mem, table + 8 * i, gpt_table(pt.family, child, L))
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
    pt.st_leaf_L = (lg2 - 12) // 9
    pt.st_leaf_lg2 = lg2
    if pt.family == PT_FAM_AMDV1:            # check_map_range(): grow the top if needed
        ret = amdv1_increase_top(pt, iova, last)
        if ret:
            return ret
    elif not pt.in_range(iova, last):
        return -ERANGE
    pt.warn_alias(iova)
    pt.st_oa = paddr
    pt.st_attrs = gpt_prot(pt.family, pt.force_coherence, prot)
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
    cdef u64 e = _pt_rd(pt.l1, table + 8 * i), num_oas = 0, item, item_last, child, n, j
    cdef int t = pt.etype(e, L), ret = 0
    cdef bint fully
    if t == PT_OA and (va & (pt.leaf_size(e, L) - 1)):
        return -EINVAL                       # starts inside a large (or contiguous) leaf
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
            i += 1
        else:                                # the whole (contiguous) leaf
            n = pt.leaf_size(e, L) >> pt.shift(L)
            for j in range(i, i + n):
                _pt_wr(pt.mem, table + 8 * j, 0)
            pt.leaf_writes += n
            num_oas += n
            i += n
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


# ---- dirty tracking: pt_entry_is_write_dirty / make_write_clean / make_write_dirty, iommu_pt.h
# read_and_clear_dirty() (iommu_pt.h @152c862c; vtdss.h @cc4adab1; amdv1.h @0eaed89c). Only vtdss
# (D, bit 9) and amdv1 (D, bit 6) define the dirty ops; x86_64.h and riscv.h do not (their
# read_and_clear_dirty returns -EOPNOTSUPP), although both preset D in writable leaves.
cdef inline bint gpt_has_dirty(int fam) noexcept nogil:
    return fam == PT_FAM_VTDSS or fam == PT_FAM_AMDV1


cdef inline u64 gpt_dirty_bit(int fam) noexcept nogil:
    return VTDSS_D if fam == PT_FAM_VTDSS else (AMDV1_D if fam == PT_FAM_AMDV1 else 0)


cdef inline u64 gpt_make_write_dirty(int fam, u64 e) noexcept nogil:
    """What the IOMMU writes for a write request through leaf e (the accessed item only)."""
    return e | gpt_dirty_bit(fam)


cdef int gpt_rcd_level(IoPgtable pt, int L, u64 table, u64 va, u64 last, u64 flags, list rec,
                       u64 *g) except -1:
    """__read_and_clear_dirty() + record_dirty() over the items of one table: va is the walk's
    range->va (the caller's iova for the first entry, each later entry's start), last the
    range's last_va."""
    cdef u64 isz = (<u64>1) << pt.shift(L), dbit = gpt_dirty_bit(pt.family)
    cdef int span = pt.shift(L) + pt.idx_bits(L), ncl
    cdef u64 i = pt.index(va, L), end, e, n, j, b, e_i, dlen, cur = va, nxt
    cdef int t
    cdef bint dirty
    if span >= 64 or (va >> span) == (last >> span):   # _pt_iter_first(): last_va in this table
        end = pt.index(last, L) + 1
    else:
        end = (<u64>1) << pt.idx_bits(L)
    while i < end:
        e = _pt_rd(pt.l1, table + 8 * i)
        t = pt.etype(e, L)
        ncl = 0
        if t == PT_TABLE:
            gpt_rcd_level(pt, L - 1, pt.table_pa(e), cur, last, flags, rec, g)
        elif t == PT_OA:
            ncl = __ffs64(pt.leaf_size(e, L)) - pt.shift(L)      # pt_entry_num_contig_lg2()
            n = (<u64>1) << ncl
            b = i & ~(n - 1)
            dirty = False
            for j in range(b, b + n):                             # *_pt_entry_is_write_dirty()
                if _pt_rd(pt.l1, table + 8 * j) & dbit:
                    dirty = True
                    break
            if dirty:
                if ncl:                                           # record_dirty(): as the kernel
                    e_i = i | (n - 1)                             # computes it, one item short
                    if e_i > end:                                 # when the block ends in range
                        e_i = end
                    dlen = (e_i - i) * isz
                else:
                    dlen = isz
                rec.append((cur, dlen))                           # iova_bitmap_set()
                if not (flags & IOMMU_DIRTY_NO_CLEAR):
                    for j in range(b, b + n):                     # *_pt_entry_make_write_clean()
                        _pt_wr(pt.mem, table + 8 * j, _pt_rd(pt.l1, table + 8 * j) & ~dbit)
                    arm_gather_add(g, cur, dlen)                  # iommu_iotlb_gather_add_range()
        # pt_next_entry(): a contiguous leaf advances to the next block
        nxt = ((i + ((<u64>1) << ncl)) & ~(((<u64>1) << ncl) - 1)) if t == PT_OA else i + 1
        i = nxt
        if i < end:
            cur = pt.item_start(va, L, i)                         # pt_index_to_va()
    return 0


cdef int gpt_read_and_clear_dirty(IoPgtable pt, u64 iova, u64 size, u64 flags, list rec,
                                  u64 *g) except? -9999:
    """pt_iommu_<fmt>_read_and_clear_dirty(): -EOPNOTSUPP without the format's dirty ops, the
    make_range() errors, else 0."""
    cdef u64 last
    if not gpt_has_dirty(pt.family):
        return -EOPNOTSUPP
    if size == 0:
        return -EINVAL
    last = iova + size - 1
    if last < iova:
        return -PT_EOVERFLOW
    if not pt.in_range(iova, last):
        return -ERANGE
    gpt_rcd_level(pt, pt.top, pt.pgtable_root, iova, last, flags, rec, g)
    return 0
