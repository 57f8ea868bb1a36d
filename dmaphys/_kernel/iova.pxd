# The C face of _kernel/iova.pxi: drivers/iommu/iova.c + include/linux/iova.h: struct iova_domain, the rcaches.


from libcpp.unordered_set cimport unordered_set


cdef enum:
    IOVA_RANGE_CACHE_MAX_SIZE = 6      # log2 of the largest cached range size, in granules
    IOVA_MAG_SIZE = 127                # pfns per magazine (struct iova_magazine is 1 KiB)

cdef struct iova_magazine:                       # struct iova_magazine
    u64 size                                   # size
    u64 pfns[IOVA_MAG_SIZE]                     # pfns

cdef struct iova_cpu_rcache:                     # struct iova_cpu_rcache (lock not modelled)
    iova_magazine *loaded                        # loaded
    iova_magazine *prev                          # prev

ctypedef cppmap[u64, u64] iova_rbtree            # pfn_lo -> pfn_hi

ctypedef cppmap[u64, u64].iterator iova_node     # struct iova * (a node of the tree)

cdef extern from *:
    """
    #include <map>
    /* insert [lo, hi] just before `hint` (amortised O(1), like iova_insert_rbtree from prev) */
    static inline std::map<uint64_t, uint64_t>::iterator
    dmaphys_iova_insert_hint(std::map<uint64_t, uint64_t> &tree,
                             std::map<uint64_t, uint64_t>::iterator hint, uint64_t lo, uint64_t hi)
    {
        return tree.emplace_hint(hint, lo, hi);
    }
    """
    iova_node iova_insert_hint "dmaphys_iova_insert_hint"(iova_rbtree &tree, iova_node hint, u64 lo, u64 hi) except +


@cython.final
cdef class IovaDomain:
    cdef iova_rbtree rbroot                    # rbroot (struct rb_root)
    cdef iova_node cached_node          # for searches whose limit lies above 4 GiB
    cdef iova_node cached32_node        # for searches whose limit lies at/below 4 GiB
    cdef readonly u64 granule                  # granule
    cdef readonly u64 start_pfn                # start_pfn
    cdef readonly u64 dma_32bit_pfn            # dma_32bit_pfn
    cdef readonly u64 max32_alloc_size         # max32_alloc_size
    cdef readonly int ncpus                    # num_possible_cpus()
    cdef readonly Machine machine              # (simulator) the Machine (timers, current CPU)
    cdef int shift                             # iova_shift(iovad)
    cdef iova_cpu_rcache *cpu_rcaches   # [IOVA_RANGE_CACHE_MAX_SIZE][ncpus]; NULL = no rcaches
    cdef vector[vector[iova_magazine *]] depot     # per order; back() is the LIFO's head
    cdef bint work_pending[IOVA_RANGE_CACHE_MAX_SIZE] # rcaches[order].work pending (delayed work armed)
    cdef u64 work_seq[IOVA_RANGE_CACHE_MAX_SIZE]   # identifies the armed timer of each work
    cdef u64 work_gen                   # never reset, so a stale timer can't match after re-init
    cdef bint dead                      # put_iova_domain() has run
    cdef list _warn_queue               # WARNs raised without a machine
    cdef unordered_set[u64] dbg_cached  # (simulator, dma-debug) pfns freed into the rcache while
                                        # dma-debug was on: a hint, confirmed against the magazines
    cdef int _init_rcaches(self) except -1
    cdef void _free_iova_rcaches(self) noexcept
    cdef bint _rcache_holds(self, u64 pfn) noexcept
    cdef int _debug_free_ok(self, u64 pfn, u64 size) except -1
    cpdef u64 iova_shift(self) noexcept
    cpdef u64 iova_mask(self) noexcept
    cpdef u64 iova_offset(self, u64 iova) noexcept
    cpdef u64 iova_align(self, u64 size) noexcept
    cpdef u64 iova_align_down(self, u64 size) noexcept
    cpdef u64 iova_pfn(self, u64 iova) noexcept
    cpdef u64 iova_dma_addr(self, u64 pfn) noexcept
    cdef inline int _check_alive(self) except -1
    cdef inline int _cpu_arg(self, int cpu) except -2
    cdef void _warn(self, str text)
    cdef int _flush_local(self) except -1
    cdef int _flush(self) except -1
    cdef inline iova_node _anchor(self) noexcept nogil
    cdef inline iova_node _get_cached_rbnode(self, u64 limit_pfn) noexcept
    cdef inline void _cached_rbnode_insert_update(self, iova_node new) noexcept
    cdef inline void _cached_rbnode_delete_update(self, iova_node free_node) noexcept
    cdef inline iova_node _find_limit(self, u64 limit_pfn) noexcept
    cdef inline iova_node _private_find_iova(self, u64 pfn) noexcept
    cdef int _remove_iova(self, iova_node node) except -1
    cdef int _alloc_and_insert_iova_range(self, u64 size, u64 limit_pfn, bint size_aligned,
                                          u64 *pfn_lo) except -1
    cdef int alloc_iova_c(self, u64 size, u64 limit_pfn, bint size_aligned, u64 *pfn_lo) except -1
    cdef bint find_iova_c(self, u64 pfn, u64 *pfn_lo, u64 *pfn_hi) noexcept
    cdef int free_iova_c(self, u64 pfn) except -1
    cdef int _reserve_iova(self, u64 pfn_lo, u64 pfn_hi, u64 *out_lo, u64 *out_hi) except -1
    cdef int reserve_iova_c(self, u64 pfn_lo, u64 pfn_hi) except -1
    cdef inline iova_cpu_rcache *_cpu_rcache(self, int order, int cpu) noexcept nogil
    cdef inline iova_magazine *_depot_pop(self, int order) noexcept nogil
    cdef int _schedule_depot_work(self, int order) except -1
    cdef int _iova_depot_work_func(self, int order) except -1
    cdef int _iova_magazine_free_pfns(self, iova_magazine *mag) except -1
    cdef int _iova_rcache_insert(self, u64 pfn, u64 size, int cpu) except -1
    cdef inline u64 _iova_rcache_get(self, u64 size, u64 limit_pfn, int cpu) noexcept
    cdef int _free_cpu_cached_iovas(self, int cpu) except -1
    cdef int _free_global_cached_iovas(self) except -1
    cpdef u64 alloc_iova_fast(self, u64 size, u64 limit_pfn, bint flush_rcache=*,
                              int cpu=*) except? 0xFFFFFFFFFFFFFFFF
    cpdef int free_iova_fast(self, u64 pfn, u64 size, int cpu=*) except -1
    cdef int put_iova_domain_c(self) except -1
