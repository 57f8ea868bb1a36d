# The C face of _kernel/io_pgtable.pxi: IOMMU page tables (drivers/iommu/generic_pt, io-pgtable-arm.c): IoPgtable.


cdef enum:                                      # errnos types.pxi does not have (yet)
    PT_ENXIO = 6
    PT_EOVERFLOW = 75

cdef enum:                                      # enum iommu_resv_type (include/linux/iommu.h)
    PT_IOMMU_RESV_RESERVED = 2
    PT_IOMMU_RESV_MSI = 3
    PT_IOMMU_RESV_SW_MSI = 4

cdef enum:
    IOMMU_DIRTY_NO_CLEAR = 1 << 0               # include/linux/iommu.h (read_and_clear_dirty flags)

cdef enum:
    PT_FAM_VTDSS = 0
    PT_FAM_X86 = 1
    PT_FAM_ARM = 2
    PT_FAM_AMDV1 = 3
    PT_FAM_RISCV = 4

cdef enum:
    PT_EMPTY = 0
    PT_TABLE = 1
    PT_OA = 2
    PT_INVALID = 3

# A GIL-free batch run's view of the page table (IoPgtable.run_begin / run_map / run_leaf_ptep /
# run_end; dma_iommu.pxi's iommu_dma_map_phys_run / iommu_dma_unmap_phys_run). No kernel
# counterpart: the kernel walks from the top every time. See run_leaf_ptep() for why a leaf-table
# frame validated once may be used for the rest of the run.
cdef enum:
    PT_RUN_FRAMES = 16                         # (simulator) leaf-table frames a run trusts at once

cdef struct pt_run:
    u64 key                                    # (simulator) iova >> lc_shift of the frame used last; U64_MAX: none
    u64 *leaf                                  # (simulator) that frame's host pointer
    int nframes                                # (simulator) trusted frames (fkey / fleaf / fup) in use
    int fnext                                  # (simulator) the slot the next frame to trust replaces when full
    u64 fkey[PT_RUN_FRAMES]                    # (simulator) the trusted frames' keys
    u64 *fleaf[PT_RUN_FRAMES]                  # (simulator) their host pointers
    u64 *fup[PT_RUN_FRAMES * 8]                # (simulator) [slot * 8 + L]: the upper entry its walk read at level L
    u64 iova_max                               # (simulator) highest IOVA whose granule passes the range check
    u64 bits                                   # (simulator) a map's leaf bits besides the output address
    u64 writes                                 # (simulator) leaf stores of the run (run_end adds them)
    bint trust                                 # (simulator) nothing in the run writes memory but leaf stores

@cython.final
cdef class IoPgtable:
    cdef readonly Machine machine              # (simulator) the Machine whose RAM holds the tables
    cdef readonly str fmt                      # io_pgtable_fmt / generic_pt format name
    cdef readonly u64 pgsize_bitmap            # domain->pgsize_bitmap
    cdef readonly int ias                      # input (IOVA) address bits
    cdef readonly int oas                      # output address bits
    cdef readonly u64 pgtable_root             # physical address of the top-level table (0: freed)
    cdef readonly u64 leaf_writes              # leaf PTE stores (installs + clears)
    cdef readonly u64 table_pages              # 4 KiB pages of tables allocated (live + pending)
    cdef readonly u64 walk_reads               # PTE loads made by hardware walks (lookup)
    cdef public bint defer_free                # collect freed table pages instead of freeing
    cdef vector[u64] pending_free              # table pages waiting for an IOTLB flush
    # geometry
    cdef readonly int family                   # 0 vtdss, 1 x86_64, 2 arm-lpae, 3 amdv1, 4 riscv
    cdef readonly int levels                   # number of levels (pt_common max_vasz_lg2 / ARM data->levels)
    cdef readonly u64 granule                  # smallest page size (ARM_LPAE_GRANULE)
    cdef readonly bint sign_extend             # PT_FEAT_SIGN_EXTEND
    cdef readonly u64 aperture_start           # domain->geometry.aperture_start
    cdef readonly u64 aperture_end             # domain->geometry.aperture_end
    cdef readonly tuple reserved_regions       # the format's reserved IOVA ranges
    cdef readonly bint force_coherence         # PT_FEAT_DMA_INCOHERENT cleared (enforce_cache_coherency)
    cdef readonly bint arm_s2                  # io_pgtable_fmt ARM_64_LPAE_S2 (stage 2)
    cdef readonly bint no_warn                 # (simulator) silence WARNs
    cdef readonly bint arm_hd                  # IO_PGTABLE_QUIRK_ARM_HD (stage 1: DBM in writable leaves)
    # non-coherent walker (io-pgtable-arm): CPU stores to the tables go to the CPU's write-back
    # cache (PhysMem.wb) and reach memory, which the walker reads, only through the syncs
    cdef readonly bint coherent_walk           # cfg->coherent_walk
    cdef readonly Device iommu_dev             # cfg->iommu_dev: the tables are DMA-mapped to it (None: coherent)
    cdef readonly u64 table_syncs              # (simulator) __arm_lpae_sync_pte() calls (dma_sync_single_for_device)
    cdef readonly u64 table_sync_bytes         # (simulator) bytes of PTEs those syncs covered
    cdef int top, pg_shift, bpl, top_bits      # IOVA bits resolved by the top level
    cdef u64 gran_pages, top_pages             # pages of the top-level table
    cdef PhysMem mem                           # (simulator) machine.mem
    cdef u8 ***l1                              # mem.l1: the frame table the walks read
    cdef int shifts[8]                         # item size lg2 per level
    cdef u64 imask[8]                          # index mask per level
    cdef cppmap[u64, int] tables               # live table phys -> L
    cdef cppmap[u64, u64] npages               # allocated table phys (live + pending) -> pages
    cdef vector[u64] freelist                  # the gather's freelist during one operation
    # per-operation scratch (kernel: the map/unmap args structs)
    cdef u64 st_oa, st_attrs, st_mapped, st_unmapped # unmap args: unmapped
    cdef int st_leaf_L                         # map args: leaf level
    cdef int st_leaf_lg2                       # map args: leaf_pgsize_lg2
    # leaf-PTE hint: dma-iommu's unmap looks the handle up (c_iova_to_phys) and unmaps it right
    # after with nothing in between; hint_arm asks the lookup to leave the host pointer of the
    # smallest-page entry it read (hint_ptep, for IOVA page hint_page = iova >> shifts[0]), and
    # the next unmap_pages takes it instead of walking again (always clearing it).
    cdef bint hint_arm                         # (simulator) see above
    cdef u64 *hint_ptep                        # (simulator) see above
    cdef u64 hint_page                         # (simulator) see above
    # leaf-table cache (simulator; no kernel counterpart: the kernel walks from the top every
    # time): the last software walk that reached a smallest-page table through table entries
    # (walk_to_leaf_ptep) leaves the key iova >> lc_shift of the 4 KiB frame of that table it
    # reached, the frame's host pointer, and the host pointer and value of each table entry it
    # read at levels top..1. A later walk whose IOVA has the same key starts from that frame when
    # pgtable_root and PhysMem.frames_gen are unchanged and every cached entry still holds the
    # value the walk read: the full walk would then read exactly those entries and reach the same
    # frame. So any write to table memory (the table code, a large-page map replacing a table, an
    # unmap freeing one, a stray CPU or device write) is seen, and a discarded frame never read.
    # A GIL-free batch run (pt_run above) validates a frame once and then trusts it for the rest
    # of the run: run_leaf_ptep() in io_pgtable.pxi gives the argument.
    cdef u64 lc_key                            # (simulator) see above; U64_MAX: empty
    cdef u64 *lc_leaf                          # (simulator) see above
    cdef u64 lc_root                           # (simulator) pgtable_root when filled
    cdef u64 lc_gen                            # (simulator) mem.frames_gen when filled
    cdef int lc_shift                          # (simulator) shifts[0] + 9 (512 entries per frame)
    cdef u64 *lc_ptep[8]                       # (simulator) host pointer of the entry read at level L
    cdef u64 lc_val[8]                         # (simulator) its value then
    cdef u64 run_iova_max                      # (simulator) pt_run.iova_max of every run; 0: no runs (run_begin)
    cdef inline int shift(self, int L) noexcept nogil
    cdef inline int idx_bits(self, int L) noexcept nogil
    cdef inline u64 index(self, u64 va, int L) noexcept nogil
    cdef inline u64 item_start(self, u64 va, int L, u64 i) noexcept nogil
    cdef inline bint in_range(self, u64 va, u64 last) noexcept nogil
    cdef inline bint canonical(self, u64 va, u64 last) noexcept nogil
    cdef inline u64 leaf_size(self, u64 e, int L) noexcept nogil
    cdef int warn_alias(self, u64 va) except -1
    cdef inline int level_name(self, int L) noexcept nogil
    cdef u64 alloc_table(self, int L) except? 0
    cdef int release_table(self, u64 phys) except -1
    cdef int free_now(self, u64 phys) except -1
    cdef int release_freelist(self) except -1
    cdef inline bint owns(self, u64 phys) noexcept
    cdef int check_live(self) except -1
    cdef inline u64 get_pte(self, u64 addr) noexcept nogil
    cdef inline int set_pte(self, u64 addr, u64 val) except -1
    cdef int sync_pte(self, u64 addr, u64 num_entries) except -1
    cdef void warn(self, str text, object once_key=*)
    cdef inline int etype(self, u64 e, int L) noexcept nogil
    cdef inline u64 table_pa(self, u64 e) noexcept nogil
    cdef inline u64 leaf_oa(self, u64 e) noexcept nogil
    cdef inline int decode_prot(self, u64 e, int acc) noexcept nogil
    cdef inline int table_acc(self, u64 e) noexcept nogil
    cdef inline u64 *leaf_cache(self, u64 iova) noexcept nogil
    cdef u64 *walk_fill(self, u64 iova) noexcept nogil
    cdef inline u64 *walk_to_leaf_ptep(self, u64 iova) noexcept nogil
    cdef inline u64 leaf0_phys(self, u64 e, u64 iova) noexcept nogil
    cdef inline int map_one_fast(self, u64 iova, u64 paddr, int prot) noexcept nogil
    cdef inline u64 *unmap_one_check(self, u64 iova, u64 *hint) noexcept nogil
    cdef inline u64 unmap_one_fast(self, u64 iova, u64 *hint) noexcept nogil
    cdef inline bint run_begin(self, pt_run *r, int prot, bint trust) noexcept nogil
    cdef inline u64 *run_leaf_ptep(self, pt_run *r, u64 iova) noexcept nogil
    cdef inline void run_drop(self, pt_run *r) noexcept nogil
    cdef inline u64 *run_trust(self, pt_run *r, u64 iova) noexcept nogil
    cdef inline int run_map(self, pt_run *r, u64 iova, u64 paddr) noexcept nogil
    cdef inline void run_end(self, pt_run *r) noexcept nogil
    cdef int map_pages(self, u64 iova, u64 paddr, u64 pgsize, u64 pgcount, int prot,
                       u64 *mapped) except? -9999
    cdef u64 unmap_pages(self, u64 iova, u64 pgsize, u64 pgcount) except? 0xFFFFFFFFFFFFFFFF
    cdef u64 c_iova_to_phys(self, u64 iova) noexcept nogil
    cdef u64 _iova_to_phys_hint(self, u64 iova) noexcept nogil
    cdef int lookup(self, u64 iova, u64 *phys, int *prot, u64 *leaf_size) noexcept nogil
    cpdef int release_pending(self) except -1
    cpdef int free_tables(self) except -1
    cdef bint has_dirty(self) noexcept nogil
    cdef void hw_set_dirty(self, u64 iova) noexcept nogil
    cdef int read_and_clear_dirty(self, u64 iova, u64 size, u64 flags, list rec, u64 *gather) except? -9999
    cdef int collect_leaves(self, u64 table, int L, u64 base, int acc, dict out) except -1
