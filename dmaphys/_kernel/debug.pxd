# The C face of _kernel/debug.pxi: kernel/dma/debug.c: struct dma_debug_entry, the hash buckets.

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from libcpp.set cimport set as cppset
from libcpp.algorithm cimport sort

cdef enum:
    HASH_SIZE = 16384                          # kernel/dma/debug.c
    HASH_FN_SHIFT = 13
    HASH_FN_MASK = HASH_SIZE - 1
    PREALLOC_DMA_DEBUG_ENTRIES = 1 << 16
    DMA_DEBUG_DYNAMIC_ENTRIES = 32             # PAGE_SIZE / sizeof(struct dma_debug_entry) (128 B on x86-64)
    L1_CACHE_SHIFT = 6
    CACHELINE_PER_PAGE_SHIFT = PAGE_SHIFT - L1_CACHE_SHIFT
    RADIX_TREE_MAX_TAGS = 3
    ACTIVE_CACHELINE_MAX_OVERLAP = (1 << RADIX_TREE_MAX_TAGS) - 1
    NAME_MAX_LEN = 64

cdef enum:                                     # entry types (v6.18 numbering)
    dma_debug_single = 0
    dma_debug_sg = 1
    dma_debug_coherent = 2
    dma_debug_noncoherent = 3
    dma_debug_phy = 4

cdef enum map_err_types:
    MAP_ERR_CHECK_NOT_APPLICABLE = 0
    MAP_ERR_NOT_CHECKED = 1
    MAP_ERR_CHECKED = 2

cdef struct dma_debug_entry:                   # struct dma_debug_entry
    PyObject *dev                              # the Device (a reference is held while live)
    u64 dev_addr                               # dev_addr
    u64 size                                   # size
    int type                                   # type (dma_debug_single/sg/coherent/noncoherent/phy)
    int direction                              # direction
    int sg_call_ents                           # sg_call_ents
    int sg_mapped_ents                         # sg_mapped_ents
    u64 paddr                                  # paddr
    int map_err_type                           # map_err_type (enum map_err_types)
    unsigned long attrs                        # attrs
    # bucket list (list_head) by pool index; -1 ends the list. next also chains the free list.
    int next                                   # list (hash bucket list_head): next
    int prev                                   # list: prev
    int bucket                                 # the hash_bucket it is on (-1: none)
    # beyond the kernel: bounce tracking
    u64 tlb_addr                               # swiotlb slot address, U64_MAX when not bounced
    u64 dirty_lo                               # device-written, unsynced part of the bounce
    u64 dirty_hi                               #   (offsets into the mapping; lo == hi: clean)
    bint reported                              # bounced read reported for this dirty episode

cdef struct pending_bounce:                    # debug_dma_note_bounce() awaiting its map hook
    PyObject *dev                              # the Device mapping it (a reference is held)
    u64 orig_phys                              # the original buffer's phys
    u64 tlb_addr                               # the swiotlb slot's phys


cdef class DmaDebug:
    cdef readonly Machine machine              # (simulator) the owning Machine
    cdef public bint enabled                   # !global_disable (CONFIG_DMA_API_DEBUG on)
    cdef public bint raise_errors              # (simulator) raise DmaDebugError at the end of the entry point
    cdef readonly unsigned int error_count     # error_count
    cdef public unsigned int all_errors        # show_all_errors
    cdef public unsigned int num_errors        # show_num_errors
    cdef readonly unsigned int num_free_entries # num_free_entries
    cdef readonly unsigned int min_free_entries # min_free_entries
    cdef readonly unsigned int nr_total_entries # nr_total_entries
    cdef unsigned int _nr_prealloc             # nr_prealloc_entries
    cdef str _driver_name                      # current_driver_name ("" = filter off)
    cdef readonly list errors                  # DmaDebugRecord: the first LOG_RECORDS_MAX reports
    cdef readonly u64 errors_dropped           # (simulator) reports past that, counted only
    cdef list _pending                         # records to raise at the end of the entry point
    cdef vector[dma_debug_entry] pool          # the dma_entry_pool / free_entries storage
    cdef int free_head                         # free_entries list head (-1: empty)
    cdef readonly unsigned int nr_live         # live entries (len(m.dma_debug))
    cdef int *bucket_head                      # dma_entry_hash[HASH_SIZE].list heads
    cdef int *bucket_tail                      # dma_entry_hash[HASH_SIZE].list tails
    cdef unordered_map[u64, int] cachelines    # dma_active_cacheline: cln -> overlap count
    cdef cppmap[u64, int] bounced              # tlb_addr -> entry index (bounced entries)
    cdef cppset[int] dirty                     # entries with device-written, unsynced bounce data
    cdef cppset[pair[u64, int]] dirty_addr     # (simulator) the same entries as (paddr, index): a CPU
                                               # access looks up the few it may overlap
    cdef u64 dirty_span                        # (simulator) >= every dirty entry's dirty_hi (0: none)
    cdef vector[pending_bounce] pending_bounces # (simulator) bounces awaiting their map hook
    cdef void _set_prealloc(self, unsigned int n)
    cdef inline bint _filter_passes(self, Device dev)
    cdef void err_printk(self, Device dev, str kind, str msg, u64 addr, u64 size)
    cdef void report_extra(self, Device dev, str kind, str msg, u64 addr, u64 size)
    cdef int entry_alloc(self, Device dev) except -1
    cdef void entry_free(self, int idx)
    cdef inline void bucket_add(self, int idx)
    cdef inline void bucket_del(self, int idx)
    cdef int hash_bucket_find(self, int b, dma_debug_entry *ref, bint containing) noexcept
    cdef inline int bucket_find_exact(self, dma_debug_entry *ref) noexcept
    cdef int bucket_find_contain(self, dma_debug_entry *ref) noexcept
    cdef inline u64 to_cacheline_number(self, u64 paddr) noexcept
    cdef int active_cacheline_insert(self, dma_debug_entry *e)
    cdef void active_cacheline_remove(self, dma_debug_entry *e) noexcept
    cdef void add_dma_entry(self, int idx, unsigned long attrs)
    cdef void note_bounce(self, Device dev, u64 orig_phys, u64 tlb_addr)
    cdef void detect_bounce(self, int idx, Device dev)
    cdef inline void _dirty_insert(self, int idx) noexcept
    cdef inline void _dirty_erase(self, int idx) noexcept
    cdef void cpu_access(self, u64 phys, u64 n, bint write)
    cdef void device_wrote(self, Device dev, u64 phys, u64 n)
    cdef void synced_for_cpu(self, int idx, u64 dev_addr, u64 size, int dir)
    cdef void mapping_error(self, Device dev, u64 dma_addr)
    cdef void check_unmap(self, Device dev, dma_debug_entry *ref)
    cdef void check_sync(self, Device dev, dma_debug_entry *ref, bint to_cpu)
    cdef void check_sg_segment(self, Device dev, scatterlist *s)
    cdef int get_nr_mapped_entries(self, dma_debug_entry *ref) noexcept
    cdef list _live(self, object dev)
    cdef list _cachelines(self)
