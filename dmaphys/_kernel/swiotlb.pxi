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


# ---- TEMPORARY (branch "direct"): the swiotlb interface direct.pxi calls, so the direct
# branch compiles before the swiotlb branch lands. Dropped in favour of the real file on merge.
cdef bint is_swiotlb_buffer(Device dev, u64 paddr) noexcept:
    cdef object mem = dev.dma_io_tlb_mem
    return mem is not None and (<IoTlbMem>mem).start <= paddr < (<IoTlbMem>mem).end


cdef bint is_swiotlb_active(Device dev) noexcept:
    cdef object mem = dev.dma_io_tlb_mem
    return mem is not None and (<IoTlbMem>mem).nslabs != 0


cdef bint is_swiotlb_force_bounce(Device dev) noexcept:
    return dev.force_bounce


cdef u64 swiotlb_max_mapping_size(Device dev) noexcept:
    return 2048 * 128


cdef u64 swiotlb_map(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    raise NotImplementedError("swiotlb is not built yet")


cdef int swiotlb_tbl_unmap_single(Device dev, u64 tlb_addr, u64 mapping_size, int dir,
                                  unsigned long attrs) except -1:
    return 0


cdef int swiotlb_sync_single_for_device(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    return 0


cdef int swiotlb_sync_single_for_cpu(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    return 0
