# The C face of _kernel/memory.pxi: mm/ stand-in: PhysMem (sparse RAM/MMIO storage + page allocator).

cdef enum:
    MAX_PHYS_BITS = 48
    PFN_L2_SHIFT = 18                                  # 2^18 frames (1 GiB) per second-level table
    PFN_L2_SIZE = 1 << 18
    PFN_L1_SIZE = 1 << (48 - 12 - 18)

cdef enum:
    REGION_RAM = 1
    REGION_MMIO = 2

cdef struct phys_region:
    u64 start                                  # first byte
    u64 end                                            # exclusive
    int kind                                           # REGION_RAM / REGION_MMIO
    int index                                          # position in PhysMem.region_names


cdef enum:
    CACHE_LINE_SIZE = 64                       # (simulator) cache_line_size() of the CPU's write-back cache


cdef struct wb_line:                           # (simulator) one dirty line of the CPU's write-back cache
    u64 q[8]                                   # its 64 bytes as 8 little-endian quadwords


cdef struct ext_ram:                           # (simulator) embedder-owned RAM (Machine.add_ram)
    u64 spfn                                   # first pfn
    u64 epfn                                   # end pfn (exclusive)
    u8 *base                                   # the buffer's first byte (the frame of spfn)
    bint allocatable                           # its pages joined the page allocator


# the differing bytes of got[:n] against want[:n] (got NULL: zeros); the first's offset, base + index,
# into *first while that is -1 (PhysMem.compare; the checking batches, batch.pxi)
cdef u64 mem_cmp_bytes(const u8 *got, const u8 *want, u64 n, u64 base, long long *first) noexcept nogil


cdef class PhysMem:
    cdef u8 ***l1                                      # l1[pfn >> 18][pfn & (2^18-1)] -> frame
    cdef vector[phys_region] regions                   # sorted by start, non-overlapping
    cdef readonly list region_names            # (simulator) region names, by phys_region.index
    cdef readonly u64 resident_frames                  # frames holding storage
    cdef readonly u64 ram_bytes                # total RAM (totalram_pages * PAGE_SIZE)
    # page allocator (memblock/buddy stand-in): free extents [start_pfn, end_pfn) and allocations
    cdef cppmap[u64, u64] free_extents                 # start_pfn -> end_pfn
    cdef cppmap[u64, u64] allocated                    # start_pfn -> npages
    cdef readonly u64 allocated_pages          # pages handed out by alloc_pages_c
    cdef vector[ext_ram] ext                   # (simulator) embedder-owned ranges, in the order added
    cdef list backings                         # (simulator) RamBacking (held buffer export) per ext entry
    # the CPU's write-back cache, only for memory a non-coherent IOMMU walker reads (page tables
    # of coherent_walk=False): lines the CPU stored to that memory (wb_write64) and that no
    # cache clean (arch_sync_dma_for_device -> wb_clean) has written back yet, by line address.
    # CPU page-table reads (wb_read64) see them, device-side reads (read/read64) do not.
    cdef cppmap[u64, wb_line] wb               # (simulator) dirty lines (empty: memory is the CPU view)
    cdef readonly u64 wb_lines_cleaned         # (simulator) dirty lines written back by cleans
    cdef u64 frames_gen                        # (simulator) bumped when a frame's storage pointer goes away or
                                               # changes (discard, ext RAM): host pointers kept across
                                               # operations (IoPgtable's leaf-table cache) check it
    cdef int check_region(self, u64 start, u64 size, str name) except -1
    cdef int add_region(self, u64 start, u64 size, int kind, str name, bint allocatable=*) except -1
    cdef int add_ext_ram(self, u64 start, object buffer, str name, bint allocatable) except -1
    cdef int ext_index(self, u64 pfn) noexcept nogil
    cdef int remove_ext_ram(self, u64 start) except -1
    cdef inline int find_region(self, u64 addr, u64 size) noexcept nogil
    cdef inline int region_kind(self, u64 addr, u64 size) noexcept nogil
    cdef inline bint pfn_valid(self, u64 pfn) noexcept nogil
    cdef inline u8 *page_ptr(self, u64 pfn) noexcept nogil
    cdef u8 *page_ptr_alloc(self, u64 pfn) except NULL nogil
    cdef void discard(self, u64 pfn, u64 npages) noexcept nogil
    cdef void read(self, u64 addr, u8 *buf, u64 n) noexcept nogil
    cdef u64 compare(self, u64 addr, const u8 *want, u64 n, u64 base, long long *first) noexcept nogil
    cdef int write(self, u64 addr, const u8 *buf, u64 n) except -1 nogil
    cdef int fill(self, u64 addr, u8 val, u64 n) except -1 nogil
    cdef int copy(self, u64 dst, u64 src, u64 n) except -1 nogil
    cdef inline u64 read64(self, u64 addr) noexcept nogil
    cdef inline int write64(self, u64 addr, u64 val) except -1 nogil
    cdef inline u64 wb_read64(self, u64 addr) noexcept nogil
    cdef int wb_write64(self, u64 addr, u64 val) except -1 nogil
    cdef u64 wb_clean(self, u64 addr, u64 size) except? 0xFFFFFFFFFFFFFFFF nogil
    cdef void free_range(self, u64 spfn, u64 epfn) noexcept
    cdef u64 alloc_pages_c(self, u64 npages, u64 limit, u64 align) noexcept
    cdef int free_pages_c(self, u64 phys, u64 npages) noexcept
