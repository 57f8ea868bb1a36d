# Models kernel/dma/swiotlb.c and include/linux/swiotlb.h: bounce pools, areas, slot search,
# per-slot original addresses and the copy rules (swiotlb_tbl_map_single, swiotlb_bounce,
# swiotlb_release_slots, swiotlb_sync_single_for_*).
# PLACEHOLDER (foundation skeleton): the full implementation replaces this file.

cdef class IoTlbMem:
    """struct io_tlb_mem with its default pool (struct io_tlb_pool)."""
    cdef readonly Machine machine
    cdef readonly u64 start
    cdef readonly u64 end
    cdef readonly u64 nslabs
    cdef readonly int nareas
    cdef readonly u64 total_used
    cdef readonly u64 used_hiwater


cdef IoTlbMem swiotlb_init(Machine m, u64 size, int nareas, bint force):
    cdef IoTlbMem mem = IoTlbMem()
    mem.machine = m
    mem.nslabs = size >> 11
    mem.start = m.mem.alloc_pages_c(size >> PAGE_SHIFT, (<u64>1) << 32, 1)
    mem.end = mem.start + size
    mem.nareas = 1
    return mem
