# The C face of _kernel/swiotlb.pxi: kernel/dma/swiotlb.c: struct io_tlb_mem / io_tlb_pool / io_tlb_slot / io_tlb_area.


cdef enum:
    IO_TLB_SHIFT = 11
    IO_TLB_SIZE = 1 << 11
    IO_TLB_SEGSIZE = 128
    IO_TLB_MIN_SLABS = (1 << 20) >> 11
    SWIOTLB_HZ = 1000                           # jiffies per second of the virtual clock
    DEFAULT_RATELIMIT_INTERVAL = 5 * 1000       # 5 * HZ (include/linux/ratelimit_types.h)
    DEFAULT_RATELIMIT_BURST = 10

cdef struct io_tlb_slot:                        # struct io_tlb_slot (kernel/dma/swiotlb.c)
    u64 orig_addr                               # phys_addr_t this slot shadows, or INVALID_PHYS_ADDR
    u64 alloc_size                              # size_t: bytes from here to the end of the allocation
    u16 list                                    # free slots from here to the end of the segment (0: used)
    u16 pad_slots                               # alignment padding slots before this (first real slot)

cdef struct io_tlb_area:                        # struct io_tlb_area
    u64 used                                    # unsigned long: slots in use in this area
    u32 index                                   # unsigned int: where the next search starts (area-relative)


cdef class RatelimitState:
    cdef readonly u64 interval                  # jiffies
    cdef readonly int burst                    # burst
    cdef readonly bint initialized             # flags & RATELIMIT_INITIALIZED
    cdef readonly u64 begin                     # jiffies
    cdef readonly long n_left                  # rs->missed's twin: printed budget left
    cdef readonly long missed                  # missed

@cython.final
cdef class IoTlbMem:
    cdef readonly Machine machine              # (simulator) the Machine
    # struct io_tlb_pool (mem->defpool)
    cdef readonly u64 start                    # pool->start
    cdef readonly u64 end                      # pool->end
    cdef readonly u64 nslabs                    # pool->nslabs == mem->nslabs (add_mem_pool)
    cdef readonly u32 nareas                   # pool->nareas
    cdef readonly u32 area_nslabs              # pool->area_nslabs
    cdef vector[io_tlb_slot] slots             # pool->slots
    cdef vector[io_tlb_area] areas             # pool->areas
    # struct io_tlb_mem
    cdef readonly bint force_bounce            # mem->force_bounce
    cdef bint pool_in_ram                       # [start, end) lies in one RAM region (regions are never removed)
    cdef readonly u64 total_used                # atomic_long_t total_used (CONFIG_DEBUG_FS)
    cdef u64 _used_hiwater                      # atomic_long_t used_hiwater
