"""Reference model of drivers/iommu/generic_pt: the vtdss, x86_64, amdv1 and riscv formats and the
iommu_pt.h algorithms, on a reference IoPgtable (io_pgtable.py). Mirrors dmaphys/_kernel/generic_pt.pxi.

Followed: iommu_pt.h torvalds @152c862c, vtdss.h @cc4adab1, x86_64.h @e2692c4e, amdv1.h @0eaed89c,
riscv.h @637315cb (64-bit Sv39/Sv48/Sv57, sign extended, Svnapot 64K pages; no Svpbmt).
"""

from ._util import U64_MAX
from .io_pgtable import (
    EADDRINUSE,
    EINVAL,
    EMPTY,
    ENOMEM,
    ENXIO,
    EOPNOTSUPP,
    EOVERFLOW,
    ERANGE,
    FAM_AMDV1,
    FAM_RISCV,
    FAM_VTDSS,
    FAM_X86,
    IOMMU_CACHE,
    IOMMU_DIRTY_NO_CLEAR,
    IOMMU_NOEXEC,
    IOMMU_READ,
    IOMMU_WRITE,
    OA,
    TABLE,
    pt_compute_best_pgsize,
)

__all__: list[str] = []

# fmt/vtdss.h
VTDSS_R, VTDSS_W, VTDSS_PS, VTDSS_SNP = 1 << 0, 1 << 1, 1 << 7, 1 << 11
VTDSS_D = 1 << 9                                      # set by the IOMMU with SSADE
# fmt/x86_64.h
X86_P, X86_RW, X86_U, X86_A, X86_D, X86_PS, X86_XD = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 63
GPT_OA_MASK = ((1 << 52) - 1) & ~0xFFF                # GENMASK_ULL(51, 12)
# fmt/amdv1.h
AMDV1_PR, AMDV1_D, AMDV1_FC, AMDV1_IR, AMDV1_IW = 1 << 0, 1 << 6, 1 << 60, 1 << 61, 1 << 62
AMDV1_NL_SHIFT, AMDV1_NL_SIZE, AMDV1_MAX_TOP = 9, 7, 5
# fmt/riscv.h: V R W X U G A D in bits 0..7, PPN (4 KiB units) in bits 53:10
RISCV_V, RISCV_R, RISCV_W, RISCV_X, RISCV_U, RISCV_G, RISCV_A, RISCV_D = (1 << b for b in range(8))
RISCV_PPN_SHIFT = 10
RISCV_PPN_MASK = ((1 << 54) - 1) & ~((1 << 10) - 1)   # GENMASK_ULL(53, 10)
RISCV_N, RISCV_NAPOT_64K = 1 << 63, 1 << 13            # Svnapot: N and ppn[3:0] = 0b1000


def riscv_oa(e):
    """riscvpt_entry_oa() / riscvpt_table_pa(): PPN << 12 (a Svnapot leaf drops ppn[3:0])."""
    oa = ((e & RISCV_PPN_MASK) >> RISCV_PPN_SHIFT) << 12
    return oa & ~0xFFFF if e & RISCV_N else oa


def riscv_leaf(oa, L, lg2, bits):
    """riscvpt_install_leaf_entry(): N and the 64K size bit for a Svnapot page (16 copies)."""
    e = RISCV_V | (((oa >> 12) << RISCV_PPN_SHIFT) & RISCV_PPN_MASK) | bits
    return e | RISCV_N | RISCV_NAPOT_64K if L == 0 and lg2 != 12 else e


def gpt_etype(fam, e, L):
    """pt_load_entry_raw(): vtdss has no present bit, x86_64 has P; PS marks a leaf above level 0."""
    if fam == FAM_RISCV:                                 # riscvpt_load_entry_raw()
        if not e & RISCV_V:
            return EMPTY
        return OA if L == 0 or e & (RISCV_R | RISCV_W | RISCV_X) else TABLE
    if fam == FAM_AMDV1:                                 # amdv1pt_load_entry_raw()
        if not e & AMDV1_PR:
            return EMPTY
        nl = (e >> AMDV1_NL_SHIFT) & 7
        return OA if L == 0 or nl in (0, AMDV1_NL_SIZE) else TABLE
    if fam == FAM_VTDSS:
        if not e:
            return EMPTY
        return OA if L == 0 or (L <= 2 and e & VTDSS_PS) else TABLE
    if not e & X86_P:
        return EMPTY
    return OA if L == 0 or (L <= 2 and e & X86_PS) else TABLE


def gpt_decode_prot(fam, e, acc):
    if fam == FAM_RISCV:
        p = (IOMMU_READ if e & RISCV_R else 0) | (IOMMU_WRITE if e & RISCV_W else 0)
        return (p & acc) | (0 if e & RISCV_X else IOMMU_NOEXEC)
    if fam == FAM_AMDV1:
        p = (IOMMU_READ if e & AMDV1_IR else 0) | (IOMMU_WRITE if e & AMDV1_IW else 0)
        return (p & acc) | (IOMMU_CACHE if e & AMDV1_FC else 0)
    if fam == FAM_VTDSS:
        p = (IOMMU_READ if e & VTDSS_R else 0) | (IOMMU_WRITE if e & VTDSS_W else 0)
        return (p & acc) | (IOMMU_CACHE if e & VTDSS_SNP else 0)
    p = IOMMU_READ | (IOMMU_WRITE if e & X86_RW else 0)
    return (p & acc) | (IOMMU_NOEXEC if e & X86_XD else 0)


def gpt_table_acc(fam, e):
    if fam == FAM_RISCV:                                 # table entries carry V and the PPN only
        return IOMMU_READ | IOMMU_WRITE
    if fam == FAM_AMDV1:
        return (IOMMU_READ if e & AMDV1_IR else 0) | (IOMMU_WRITE if e & AMDV1_IW else 0)
    if fam == FAM_VTDSS:
        return (IOMMU_READ if e & VTDSS_R else 0) | (IOMMU_WRITE if e & VTDSS_W else 0)
    return IOMMU_READ | (IOMMU_WRITE if e & X86_RW else 0)


def gpt_prot(pt, prot):
    """vtdss/x86_64/amdv1/riscvpt_iommu_set_prot(): descriptor bits."""
    if pt.family == FAM_RISCV:                           # without Svpbmt
        bits = RISCV_A | RISCV_U
        if prot & IOMMU_WRITE:
            bits |= RISCV_W | RISCV_R | RISCV_D
        if prot & IOMMU_READ:
            bits |= RISCV_R
        return bits | (0 if prot & IOMMU_NOEXEC else RISCV_X)
    if pt.family == FAM_AMDV1:
        return ((AMDV1_FC if pt.force_coherence else 0) | (AMDV1_IR if prot & IOMMU_READ else 0)
                | (AMDV1_IW if prot & IOMMU_WRITE else 0))
    if pt.family == FAM_VTDSS:
        bits = (VTDSS_R if prot & IOMMU_READ else 0) | (VTDSS_W if prot & IOMMU_WRITE else 0)
        return bits | (VTDSS_SNP if pt.force_coherence else 0)
    return X86_U | X86_A | (X86_RW | X86_D if prot & IOMMU_WRITE else 0)


def gpt_leaf(pt, oa, L, bits):
    """vtdss/x86_64/riscvpt_install_leaf_entry()."""
    if pt.family == FAM_RISCV:
        return RISCV_V | (((oa >> 12) << RISCV_PPN_SHIFT) & RISCV_PPN_MASK) | bits
    e = (oa & GPT_OA_MASK) | bits | (VTDSS_PS if L else 0)
    return e | X86_P if pt.family == FAM_X86 else e


def gpt_table(pt, pa, L):
    """vtdss/x86_64/amdv1/riscvpt_install_table() for an entry at level L."""
    if pt.family == FAM_RISCV:
        return RISCV_V | (((pa >> 12) << RISCV_PPN_SHIFT) & RISCV_PPN_MASK)
    if pt.family == FAM_AMDV1:
        return AMDV1_PR | (L << AMDV1_NL_SHIFT) | (pa & GPT_OA_MASK) | AMDV1_IR | AMDV1_IW
    if pt.family == FAM_VTDSS:
        return VTDSS_R | VTDSS_W | (pa & GPT_OA_MASK)
    return X86_P | X86_RW | X86_U | X86_A | (pa & GPT_OA_MASK)


def amdv1_leaf(oa, L, lg2, bits):
    """amdv1pt_install_leaf_entry(): NextLevel 0, or 7 with the size's ones in the address field."""
    e = AMDV1_PR | (oa & GPT_OA_MASK) | bits
    if lg2 != 12 + 9 * L:
        e |= (AMDV1_NL_SIZE << AMDV1_NL_SHIFT) | (((1 << (lg2 - 13)) - 1) << 12)
    return e


def amdv1_leaf_lg2(e, L):
    """lg2 of a leaf's bytes: the item size, or for NextLevel 7 the address field's first zero bit + 13."""
    if (e >> AMDV1_NL_SHIFT) & 7 != AMDV1_NL_SIZE:
        return 12 + 9 * L
    field = (e & GPT_OA_MASK) >> 12
    return ((~field & (field + 1)).bit_length() - 1) + 13


def amdv1_range_ok(ias, top, va, last):
    """pt_check_range() for the current top (12 + 9 * (top + 1) bits, 64 at level 5, capped by ias)."""
    vasz = min(ias, 64 if top >= AMDV1_MAX_TOP else 12 + 9 * (top + 1))
    return vasz >= 64 or (va >> vasz == 0 and last >> vasz == 0)


def amdv1_increase_top(pt, va, last, leaf_L):
    """increase_top(): new top tables linking the old top at index 0; -ERANGE / -ENOMEM."""
    new_top, root, made = pt.top, pt.pgtable_root, []
    while not (amdv1_range_ok(pt.ias, new_top, va, last) and leaf_L <= new_top):
        new_top += 1
        fits = new_top <= AMDV1_MAX_TOP and 12 + 9 * new_top < pt.ias
        t = pt._alloc_table(new_top) if fits else U64_MAX
        if t == U64_MAX:
            for m in made:
                del pt._tables[m]
                pt._free_now(m)
            return -ENOMEM if fits else -ERANGE
        made.append(t)
        pt._wr(t, 0, gpt_table(pt, root, new_top))
        root = t
    if new_top != pt.top:                                # the driver's change_top()
        pt.pgtable_root, pt.top, pt.levels = root, new_top, new_top + 1
        pt.top_bits = 7 if new_top == AMDV1_MAX_TOP else 9
    return 0


def gpt_collect(pt, table, L, out):
    """__collect_tables() with check_mapped: tables of a subtree, or -EADDRINUSE."""
    for i in range(1 << pt._idx_bits(L)):
        e = pt._rd(table, i)
        t = pt._etype(e, L)
        if t == TABLE:
            child = pt._table_pa(e)
            out.append(child)
            r = gpt_collect(pt, child, L - 1, out)
            if r:
                return r
        elif t == OA:
            return -EADDRINUSE
    return 0


def gpt_clear_contig(pt, table, i, L, n, freelist):
    """clear_contig() over the n items a leaf covers: each empty or an empty table subtree."""
    for j in range(i, i + n):
        e = pt._rd(table, j)
        t = pt._etype(e, L)
        if t == TABLE:
            child = pt._table_pa(e)
            found = []
            r = gpt_collect(pt, child, L - 1, found)
            if r:
                return r
            pt._wr(table, j, 0)
            freelist.extend(found)
            freelist.append(child)
        elif t != EMPTY:
            return -EADDRINUSE
    return 0


def gpt_map_level(pt, L, table, va, last, st):
    """__map_range() above the leaf level, __map_range_leaf() at it."""
    isz = 1 << pt._shift(L)
    i = pt._index(va, L)
    end = pt._index(last, L) + 1
    first = i
    if L == st["leaf_L"]:                                # __map_range_leaf()
        step = 1 << (st["leaf_lg2"] - pt._shift(L))
        while True:
            if step > 1 or pt._etype(pt._rd(table, i), L) != EMPTY:
                r = gpt_clear_contig(pt, table, i, L, step, st["freelist"])
                if r:
                    return r
            if pt.family == FAM_AMDV1:
                leaf = amdv1_leaf(st["oa"], L, st["leaf_lg2"], st["attrs"])
            elif pt.family == FAM_RISCV:
                leaf = riscv_leaf(st["oa"], L, st["leaf_lg2"], st["attrs"])
            else:
                leaf = gpt_leaf(pt, st["oa"], L, st["attrs"])
            for j in range(i, i + step):
                pt._wr(table, j, leaf)
            pt.leaf_writes += step
            st["oa"] += isz * step
            i += step
            if i >= end:
                return 0
    while True:
        e = pt._rd(table, i)
        t = pt._etype(e, L)
        if t != TABLE:
            if t != EMPTY:
                return -EADDRINUSE
            child = pt._alloc_table(L - 1)              # pt_iommu_new_table()
            if child == U64_MAX:
                return -ENOMEM
            pt._wr(table, i, gpt_table(pt, child, L))
        else:
            child = pt._table_pa(e)
        item = va if i == first else pt._item_start(va, L, i)
        r = gpt_map_level(pt, L - 1, child, item, min(last, pt._item_start(va, L, i) + isz - 1), st)
        if r:
            return r
        i += 1
        if i >= end:
            return 0


def gpt_map_pages(pt, iova, paddr, pgsize, pgcount, prot):
    """pt_iommu_<fmt>_map_pages(): (0 or -errno, bytes mapped)."""
    if not prot & (IOMMU_READ | IOMMU_WRITE):
        pt._warn("WARNING: generic_pt map_pages(): WARN_ON(!(prot & (IOMMU_READ | IOMMU_WRITE)))")
        return -EINVAL, 0
    if paddr >> pt.oas:
        return -ERANGE, 0
    length = (pgsize * pgcount) & U64_MAX
    if length == 0:
        return -EINVAL, 0
    last = iova + length - 1
    if last > U64_MAX:
        return -EOVERFLOW, 0
    lg2 = pt_compute_best_pgsize(pt.pgsize_bitmap, iova, last, paddr)
    if not lg2:
        return -ENXIO, 0
    leaf_L = (lg2 - 12) // 9
    if pt.family == FAM_AMDV1:                           # check_map_range(): grow the top
        ret = amdv1_increase_top(pt, iova, last, leaf_L)
        if ret:
            return ret, 0
    elif not pt._in_range(iova, last):
        return -ERANGE, 0
    pt._warn_alias(iova)
    st = {"oa": paddr, "attrs": gpt_prot(pt, prot), "leaf_L": leaf_L, "leaf_lg2": lg2, "freelist": []}
    ret = gpt_map_level(pt, pt.top, pt.pgtable_root, iova, last, st)
    # tables replaced by leaves go through the gather; map_pages syncs the IOTLB, then frees
    for t in st["freelist"]:
        pt._release_table(t)
    return ret, (st["oa"] - paddr) & U64_MAX


def gpt_unmap_level(pt, L, table, va, last, st):
    """__unmap_range(): clears leaves, frees tables the range fully covers, stops at a hole."""
    isz = 1 << pt._shift(L)
    i = first = pt._index(va, L)
    end = pt._index(last, L) + 1
    e = pt._rd(table, i)
    t = pt._etype(e, L)
    num_oas = 0
    ret = 0
    if t == OA and va & (pt._leaf_size(e, L) - 1):
        return -EINVAL                                # starts inside a large (or contiguous) leaf
    while True:
        if t != OA:
            if t != TABLE:
                ret = -EINVAL
                break
            item = va if i == first else pt._item_start(va, L, i)
            item_last = pt._item_start(va, L, i) + isz - 1
            fully = not item & (isz - 1) and last >= item_last
            child = pt._table_pa(e)
            ret = gpt_unmap_level(pt, L - 1, child, item, min(last, item_last), st)
            if ret:
                break
            if fully:
                st["freelist"].append(child)
                pt._wr(table, i, 0)
            i += 1
        else:                                         # the whole (contiguous) leaf
            n = pt._leaf_size(e, L) >> pt._shift(L)
            for j in range(i, i + n):
                pt._wr(table, j, 0)
            pt.leaf_writes += n
            num_oas += n
            i += n
        if i >= end:
            break
        e = pt._rd(table, i)
        t = pt._etype(e, L)
    st["unmapped"] += num_oas * isz
    return ret


def gpt_unmap_pages(pt, iova, pgsize, pgcount):
    """pt_iommu_<fmt>_unmap_pages(): bytes unmapped (a large leaf is removed whole)."""
    length = (pgsize * pgcount) & U64_MAX
    if length == 0 or iova + length - 1 > U64_MAX or not pt._in_range(iova, iova + length - 1):
        return 0
    pt._warn_alias(iova)
    st = {"unmapped": 0, "freelist": []}
    gpt_unmap_level(pt, pt.top, pt.pgtable_root, iova, iova + length - 1, st)
    for t in st["freelist"]:
        pt._release_table(t)
    return st["unmapped"] & U64_MAX


def gpt_iova_to_phys(pt, iova):
    """pt_iommu_<fmt>_iova_to_phys(); a range error comes back as the (negative) errno."""
    if not pt._in_range(iova, iova):
        return -ERANGE & U64_MAX
    table = pt.pgtable_root
    for L in range(pt.top, -1, -1):
        e = pt._rd(table, pt._index(iova, L))
        t = pt._etype(e, L)
        if t == EMPTY:
            return 0
        if t == OA:
            size = pt._leaf_size(e, L)
            return (pt._leaf_oa(e) & ~(size - 1)) | (iova & (size - 1))
        table = pt._table_pa(e)
    return 0


# ---- dirty tracking: pt_entry_is_write_dirty / make_write_clean / make_write_dirty, iommu_pt.h
# read_and_clear_dirty() (iommu_pt.h @152c862c; vtdss.h @cc4adab1; amdv1.h @0eaed89c). Only vtdss
# (D, bit 9) and amdv1 (D, bit 6) define the dirty ops; x86_64.h and riscv.h do not.
def gpt_has_dirty(fam):
    return fam in (FAM_VTDSS, FAM_AMDV1)


def gpt_dirty_bit(fam):
    return VTDSS_D if fam == FAM_VTDSS else AMDV1_D if fam == FAM_AMDV1 else 0


def gpt_make_write_dirty(fam, e):
    """What the IOMMU writes for a write request through leaf e (the accessed item only)."""
    return e | gpt_dirty_bit(fam)


def gather_add(g, iova, size):
    """iommu_iotlb_gather_add_range() on g = [start, end]."""
    end = (iova + size - 1) & U64_MAX
    if g[0] > iova:
        g[0] = iova
    if g[1] < end:
        g[1] = end


def gpt_rcd_level(pt, L, table, va, last, flags, rec, g):
    """__read_and_clear_dirty() + record_dirty() over one table (va: the walk's range->va)."""
    isz, dbit = 1 << pt._shift(L), gpt_dirty_bit(pt.family)
    span = pt._shift(L) + pt._idx_bits(L)
    i = pt._index(va, L)
    if span >= 64 or va >> span == last >> span:          # _pt_iter_first(): last_va in this table
        end = pt._index(last, L) + 1
    else:
        end = 1 << pt._idx_bits(L)
    cur = va
    while i < end:
        e = pt._rd(table, i)
        t = pt._etype(e, L)
        ncl = 0
        if t == TABLE:
            gpt_rcd_level(pt, L - 1, pt._table_pa(e), cur, last, flags, rec, g)
        elif t == OA:
            ncl = (pt._leaf_size(e, L).bit_length() - 1) - pt._shift(L)   # pt_entry_num_contig_lg2()
            n = 1 << ncl
            b = i & ~(n - 1)
            if any(pt._rd(table, j) & dbit for j in range(b, b + n)):
                if ncl:                                   # record_dirty(): one item short when
                    dlen = (min(i | (n - 1), end) - i) * isz      # the block ends in the range
                else:
                    dlen = isz
                rec.append((cur, dlen))
                if not flags & IOMMU_DIRTY_NO_CLEAR:
                    for j in range(b, b + n):             # *_pt_entry_make_write_clean()
                        pt._wr(table, j, pt._rd(table, j) & ~dbit)
                    gather_add(g, cur, dlen)
        i = ((i + (1 << ncl)) & ~((1 << ncl) - 1)) if t == OA else i + 1      # pt_next_entry()
        if i < end:
            cur = pt._item_start(va, L, i)                # pt_index_to_va()


def gpt_read_and_clear_dirty(pt, iova, size, flags, rec, g):
    """pt_iommu_<fmt>_read_and_clear_dirty(): -EOPNOTSUPP without dirty ops, make_range() errors, 0."""
    if not gpt_has_dirty(pt.family):
        return -EOPNOTSUPP
    if size == 0:
        return -EINVAL
    last = iova + size - 1
    if last > U64_MAX:
        return -EOVERFLOW
    if not pt._in_range(iova, last):
        return -ERANGE
    gpt_rcd_level(pt, pt.top, pt.pgtable_root, iova, last, flags, rec, g)
    return 0
