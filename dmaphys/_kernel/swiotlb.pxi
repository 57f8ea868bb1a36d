# Models kernel/dma/swiotlb.c and include/linux/swiotlb.h: the bounce pool and its areas, the slot
# search (swiotlb_find_slots / swiotlb_search_pool_area), per-slot original addresses, the copy
# rules (swiotlb_bounce), release (swiotlb_release_slots), syncs and swiotlb_map().
#
# Kernel configuration modelled (fixed, documented choices):
#   !CONFIG_SWIOTLB_DYNAMIC   one default pool per io_tlb_mem (mem->defpool), never grows, no
#                             transient pools; swiotlb_find_pool() is the defpool range test.
#   CONFIG_DEBUG_FS           total_used / used_hiwater are the exact atomics, mem_used() reads them.
#   no memory encryption      phys_to_dma_unencrypted() == phys_to_dma(); no set_memory_decrypted.
#   no highmem                swiotlb_bounce() copies in one piece.
#   no restricted-dma-pool    (swiotlb_alloc/swiotlb_free are not modelled).
# dev->dma_uses_io_tlb is set on every successful slot allocation as the dynamic build does;
# nothing here reads it (the non-dynamic swiotlb_find_pool() does not).
#
# Messages: dev_warn()/dev_WARN_ONCE() texts are the kernel's format strings filled in, prefixed
# "<dev_name>: " (the simulated device has no separate driver name); pr_*() texts carry the
# file's pr_fmt "software IO TLB: ". dev_warn_ratelimited() follows lib/ratelimit.c with the
# default 10 messages per 5 s window on the machine's virtual clock (jiffies at HZ=1000).
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, swiotlb.pxd.


cdef u64 INVALID_PHYS_ADDR = U64_MAX            # (phys_addr_t)~0: a free slot's orig_addr
cdef u64 SWIOTLB_LOW_LIMIT = (<u64>1) << 32     # memblock_alloc_low(): below ARCH_LOW_ADDRESS_LIMIT + 1


# ---- lib/ratelimit.c: ___ratelimit() for dev_warn_ratelimited() call sites ------------------------
cdef class RatelimitState:
    """struct ratelimit_state of one DEFINE_RATELIMIT_STATE() call site (per machine)."""

    def __cinit__(self, u64 interval=DEFAULT_RATELIMIT_INTERVAL, int burst=DEFAULT_RATELIMIT_BURST):
        self.interval = interval
        self.burst = burst


cdef int __ratelimit(Machine m, str site, str func) except -1:
    """__ratelimit() / ___ratelimit(rs, func) for call site ``site``: 1 to print, 0 to suppress.

    Opening a new window reports the messages suppressed in the old one as the kernel's
    "<func>: <n> callbacks suppressed" printk.
    """
    cdef RatelimitState rs = m.ratelimit_states.get(site)
    cdef u64 j = m.clock_ns // (1000000000 // SWIOTLB_HZ)
    if rs is None:
        rs = RatelimitState()
        m.ratelimit_states[site] = rs
    if not rs.initialized:
        rs.begin = j
        rs.initialized = True
        rs.n_left = rs.burst
    if j > rs.begin + rs.interval:              # time_is_before_jiffies(rs->begin + interval)
        rs.n_left = rs.burst
        rs.begin = j
        if rs.missed:
            m.kwarn(KernelWarning, f"{func}: {rs.missed} callbacks suppressed")
            rs.missed = 0
    if rs.burst:
        rs.n_left -= 1
        if rs.n_left >= 0:
            return 1
    rs.missed += 1
    return 0


# ---- small helpers (kernel/dma/swiotlb.c statics, include/linux/iommu-helper.h) ---------------------
cdef inline u64 io_tlb_offset(u64 val) noexcept nogil:
    return val & (IO_TLB_SEGSIZE - 1)


cdef inline u64 nr_slots(u64 val) noexcept nogil:
    return (val + IO_TLB_SIZE - 1) >> IO_TLB_SHIFT          # DIV_ROUND_UP(val, IO_TLB_SIZE), u64 wrap


cdef inline u64 slot_addr(u64 start, u64 idx) noexcept nogil:
    return start + (idx << IO_TLB_SHIFT)


cdef inline u64 get_max_slots(u64 boundary_mask) noexcept nogil:
    return (boundary_mask >> IO_TLB_SHIFT) + 1


cdef inline u32 _swiotlb_min_align_mask(Device dev) noexcept:
    # dma_get_min_align_mask(): dma_parms->min_align_mask is an unsigned int
    return <u32>dev.min_align_mask


cdef inline u64 _swiotlb_seg_boundary(Device dev) noexcept:
    # dma_get_seg_boundary(): segment_boundary_mask, or ULONG_MAX when unset
    return dev.seg_boundary_mask if dev.seg_boundary_mask else U64_MAX


cdef inline u32 swiotlb_align_offset(Device dev, u32 align_mask, u64 addr) noexcept:
    """swiotlb_align_offset(): the bits of addr under min_align_mask that lie inside the first slot."""
    return <u32>(addr & _swiotlb_min_align_mask(dev) & (align_mask | (IO_TLB_SIZE - 1)))


cdef inline bint _swiotlb_is_span_boundary(u32 index, u32 nr, u64 shift, u64 boundary_size) noexcept:
    # iommu_is_span_boundary() (include/linux/iommu-helper.h); the caller BUGs on a non-power-of-2
    shift = (shift + index) & (boundary_size - 1)
    return shift + nr > boundary_size


cdef inline str _swiotlb_pad(u64 addr):
    return f"0x{addr:016x}"                                 # printk's %pad / %pa


cdef inline str _swiotlb_dev_prefix(Device dev):
    return f"{dev.name}: "                                  # dev_warn()'s device prefix


# ---- struct io_tlb_mem + its default struct io_tlb_pool -------------------------------------------
@cython.final
cdef class IoTlbMem:
    """struct io_tlb_mem with its default pool (struct io_tlb_pool), non-dynamic swiotlb.

    ``m.swiotlb`` is the machine's io_tlb_default_mem; every device's ``dma_io_tlb_mem`` points
    at it. Kernel fields: ``start``, ``end`` (exclusive), ``nslabs``, ``nareas``,
    ``area_nslabs``, ``force_bounce``, ``total_used``, ``used_hiwater`` (debugfs: write only 0).
    ``IoTlbMem()`` from Python is an empty io_tlb_mem (nslabs 0: is_swiotlb_active() is false).

    Mirrors struct io_tlb_mem / struct io_tlb_pool (include/linux/swiotlb.h), set up like
    swiotlb_init_remap() (kernel/dma/swiotlb.c); the machine builds its pool from
    ``Machine(swiotlb=...)``. Constructing an empty one raises nothing.
    """

    @property
    def used_hiwater(self):
        """High-water mark of used slots (debugfs io_tlb_used_hiwater; only 0 may be written).

        Setting any other value raises ValueError (io_tlb_hiwater_set()'s -EINVAL), a non-int
        TypeError.
        """
        return self._used_hiwater

    @used_hiwater.setter
    def used_hiwater(self, value):
        # io_tlb_hiwater_set(): any value but 0 is -EINVAL
        if _u64(value, "used_hiwater") != 0:
            raise ValueError("io_tlb_used_hiwater: only 0 may be written (-EINVAL)")
        self._used_hiwater = 0

    def reset_used_hiwater(self):
        """Write 0 to debugfs io_tlb_used_hiwater.

        Models kernel/dma/swiotlb.c:io_tlb_hiwater_set() with 0. Returns None. Raises nothing.
        """
        self._used_hiwater = 0

    def mem_used(self):
        """mem_used(): slots in use (the total_used atomic with CONFIG_DEBUG_FS).

        Models kernel/dma/swiotlb.c:mem_used(). Returns the number of slots in use (int).
        Raises nothing.
        """
        return self.total_used

    def slot(self, index):
        """struct io_tlb_slot ``index`` as a dict of its kernel fields.

        Mirrors struct io_tlb_slot (kernel/dma/swiotlb.c): returns ``{"orig_addr", "alloc_size",
        "list", "pad_slots"}``. Raises IndexError for ``index >= nslabs``, TypeError /
        ValueError for a non-int or negative ``index``.
        """
        cdef u64 i = _u64(index, "index")
        if i >= self.nslabs:
            raise IndexError(f"slot {i} is beyond nslabs {self.nslabs}")
        return {"orig_addr": self.slots[i].orig_addr, "alloc_size": self.slots[i].alloc_size,
                "list": self.slots[i].list, "pad_slots": self.slots[i].pad_slots}

    def get_state(self):
        """A plain-dict snapshot (same schema in the reference model).

        ``slots`` holds only the slots that differ from a freshly initialised pool, as
        ``{index: (orig_addr, alloc_size, list, pad_slots)}``; ``areas`` is
        ``[(used, index), ...]``.

        Simulator-only (differential tests). Returns the dict. Raises nothing.
        """
        cdef dict slots = {}
        cdef u64 i
        cdef u16 fresh
        for i in range(self.nslabs):
            fresh = <u16>min(IO_TLB_SEGSIZE - io_tlb_offset(i), self.nslabs - i)
            if (self.slots[i].list != fresh or self.slots[i].orig_addr != INVALID_PHYS_ADDR
                    or self.slots[i].alloc_size != 0 or self.slots[i].pad_slots != 0):
                slots[i] = (self.slots[i].orig_addr, self.slots[i].alloc_size,
                            self.slots[i].list, self.slots[i].pad_slots)
        return {
            "start": self.start, "end": self.end, "nslabs": self.nslabs, "nareas": self.nareas,
            "area_nslabs": self.area_nslabs, "force_bounce": bool(self.force_bounce),
            "total_used": self.total_used, "used_hiwater": self._used_hiwater,
            "areas": [(self.areas[i].used, self.areas[i].index) for i in range(self.nareas)],
            "slots": slots,
        }

    def __repr__(self):
        if self.nslabs == 0:
            return "<dmaphys.IoTlbMem empty>"
        return (f"<dmaphys.IoTlbMem [{self.start:#x}-{self.end - 1:#x}] nslabs={self.nslabs} "
                f"nareas={self.nareas} used={self.total_used}{' force' if self.force_bounce else ''}>")


# ---- pool set-up: swiotlb_adjust_nareas, round_up_default_nslabs, limit_nareas, swiotlb_init_remap --
cdef inline bint _swiotlb_is_power_of_2(u64 n) noexcept nogil:
    return n != 0 and (n & (n - 1)) == 0


cdef u32 swiotlb_adjust_nareas(u64 nareas):
    """swiotlb_adjust_nareas(): 0 → 1, else rounded up to a power of two."""
    if nareas == 0:
        nareas = 1
    elif not _swiotlb_is_power_of_2(nareas):
        nareas = roundup_pow_of_two(nareas)
    _log.info("software IO TLB: area num %d.", nareas)
    return <u32>nareas


cdef u64 round_up_default_nslabs(u64 nslabs, u32 nareas):
    """round_up_default_nslabs(): at least one segment per area, and a power of two."""
    if nslabs < <u64>IO_TLB_SEGSIZE * nareas:
        nslabs = <u64>IO_TLB_SEGSIZE * nareas
    elif _swiotlb_is_power_of_2(nslabs):
        return nslabs
    nslabs = roundup_pow_of_two(nslabs)
    _log.info("software IO TLB: SWIOTLB bounce buffer size roundup to %dMB", (nslabs << IO_TLB_SHIFT) >> 20)
    return nslabs


cdef inline u32 limit_nareas(u32 nareas, u64 nslots) noexcept:
    """limit_nareas(): no more areas than whole segments."""
    if nslots < <u64>nareas * IO_TLB_SEGSIZE:
        return <u32>(nslots // IO_TLB_SEGSIZE)
    return nareas


cdef int swiotlb_init_io_tlb_pool(IoTlbMem mem, u64 start, u64 nslabs, u32 nareas) except -1:
    """swiotlb_init_io_tlb_pool(): every area empty, every slot free, the bounce memory zeroed."""
    cdef u64 i
    mem.nslabs = nslabs
    mem.start = start
    mem.end = start + (nslabs << IO_TLB_SHIFT)
    mem.nareas = nareas
    mem.area_nslabs = <u32>(nslabs // nareas)
    mem.areas.assign(nareas, io_tlb_area(0, 0))
    mem.slots.resize(nslabs)
    for i in range(nslabs):
        mem.slots[i].list = <u16>min(IO_TLB_SEGSIZE - io_tlb_offset(i), nslabs - i)
        mem.slots[i].orig_addr = INVALID_PHYS_ADDR
        mem.slots[i].alloc_size = 0
        mem.slots[i].pad_slots = 0
    mem.machine.mem.fill(start, 0, nslabs << IO_TLB_SHIFT)
    mem.pool_in_ram = nslabs != 0 and mem.machine.mem.find_region(start, nslabs << IO_TLB_SHIFT) >= 0
    return 0


cdef IoTlbMem swiotlb_init(Machine m, u64 size, int nareas, bint force):
    """swiotlb_init_remap() for a pool of ``size`` bytes (the swiotlb=<nslabs>[,<nareas>] path).

    nslabs = ALIGN(size >> IO_TLB_SHIFT, IO_TLB_SEGSIZE); nareas 0 means num_possible_cpus()
    (m.cpus); swiotlb_adjust_nareas() then round_up_default_nslabs(); the memory comes from
    RAM below 4 GiB (memblock_alloc_low), retrying at half the size down to IO_TLB_MIN_SLABS.
    When even that fails the kernel returns from swiotlb_init_remap() with io_tlb_default_mem
    empty (nslabs 0, force_bounce already set) and boots: maps that need a bounce buffer then fail.
    """
    cdef IoTlbMem mem
    cdef u64 nslabs, default_nslabs, nbytes, start
    cdef u32 n
    if nareas < 0:
        raise ValueError(f"swiotlb nareas must be >= 0, not {nareas}")
    default_nslabs = ((size >> IO_TLB_SHIFT) + IO_TLB_SEGSIZE - 1) & ~(<u64>IO_TLB_SEGSIZE - 1)
    n = swiotlb_adjust_nareas(<u64>nareas if nareas else <u64>m.cpus)
    default_nslabs = round_up_default_nslabs(default_nslabs, n)
    nslabs = default_nslabs
    n = limit_nareas(n, nslabs)
    while True:
        # swiotlb_memblock_alloc(): PAGE_ALIGN(nslabs << IO_TLB_SHIFT) bytes, page aligned, low
        nbytes = ((nslabs << IO_TLB_SHIFT) + PAGE_SIZE - 1) & ~(<u64>PAGE_SIZE - 1)
        start = m.mem.alloc_pages_c(nbytes >> PAGE_SHIFT, SWIOTLB_LOW_LIMIT, 1)
        if start != U64_MAX:
            break
        m.kwarn(KernelWarning, f"software IO TLB: swiotlb_memblock_alloc: Failed to allocate "
                               f"{nbytes} bytes tlb structure")
        if nslabs <= IO_TLB_MIN_SLABS:
            mem = IoTlbMem.__new__(IoTlbMem)     # no pool: the empty io_tlb_default_mem
            mem.machine = m
            mem.force_bounce = force
            return mem
        nslabs = ((nslabs >> 1) + IO_TLB_SEGSIZE - 1) & ~(<u64>IO_TLB_SEGSIZE - 1)
        n = limit_nareas(n, nslabs)
    if default_nslabs != nslabs:
        _log.info("software IO TLB: SWIOTLB bounce buffer size adjusted %d -> %d slabs", default_nslabs, nslabs)
    mem = IoTlbMem.__new__(IoTlbMem)
    mem.machine = m
    mem.force_bounce = force
    swiotlb_init_io_tlb_pool(mem, start, nslabs, n)
    _log.info("software IO TLB: mapped [mem %s-%s] (%dMB)", _swiotlb_pad(mem.start), _swiotlb_pad(mem.end),
              (nslabs << IO_TLB_SHIFT) >> 20)
    return mem


# ---- include/linux/swiotlb.h predicates ---------------------------------------------------------
cdef inline IoTlbMem swiotlb_find_pool(Device dev, u64 paddr):
    """swiotlb_find_pool() (non-dynamic): the default pool if paddr lies in it, else None."""
    if dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.start <= paddr < dev.dma_io_tlb_mem.end:
        return dev.dma_io_tlb_mem
    return None


cdef inline bint is_swiotlb_buffer(Device dev, u64 paddr) noexcept nogil:
    """is_swiotlb_buffer(): swiotlb_find_pool(dev, paddr) != NULL."""
    return dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.start <= paddr < dev.dma_io_tlb_mem.end


cdef inline bint is_swiotlb_active(Device dev) noexcept:
    """is_swiotlb_active(): the device has an io_tlb_mem with slabs."""
    return dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.nslabs != 0


cdef inline bint is_swiotlb_force_bounce(Device dev) noexcept nogil:
    """is_swiotlb_force_bounce(): the device's own flag, or its io_tlb_mem's force_bounce."""
    return dev.force_bounce or (dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.force_bounce)


cdef u64 swiotlb_max_mapping_size(Device dev) noexcept:
    """swiotlb_max_mapping_size(): one segment minus the min_align_mask slots it may skip."""
    cdef int min_align_mask = <int>_swiotlb_min_align_mask(dev)     # the kernel's int local
    cdef int min_align = 0, q
    if min_align_mask:
        # roundup(min_align_mask, IO_TLB_SIZE) in int arithmetic: the sum wraps before the
        # division (-fno-strict-overflow), which truncates toward zero (v6.18)
        q = <int>(<unsigned int>min_align_mask + <unsigned int>(IO_TLB_SIZE - 1))
        min_align = <int>((q // <int>IO_TLB_SIZE) * <int>IO_TLB_SIZE)
    return <u64>IO_TLB_SIZE * IO_TLB_SEGSIZE - <u64>(<long long>min_align)


# ---- the debugfs counters: inc_used_and_hiwater / dec_used --------------------------------------
cdef inline void inc_used_and_hiwater(IoTlbMem mem, u32 nslots) noexcept:
    mem.total_used += nslots
    if mem.total_used > mem._used_hiwater:
        mem._used_hiwater = mem.total_used


cdef inline void dec_used(IoTlbMem mem, u32 nslots) noexcept:
    mem.total_used -= nslots


# ---- slot search: swiotlb_search_pool_area / swiotlb_find_slots ----------------------------------
cdef inline u32 wrap_area_index(IoTlbMem pool, u32 index) noexcept:
    return 0 if index >= pool.area_nslabs else index


cdef long long swiotlb_search_pool_area(Device dev, IoTlbMem pool, u32 area_index, u64 orig_addr,
                                        u64 alloc_size, u32 alloc_align_mask, u32 *found_index) except -2:
    """The search half of swiotlb_search_pool_area(): first slot index that fits, or -1.

    Changes nothing; swiotlb_commit_slots() is its "found:" half. ``*found_index`` receives
    the area-relative index the cursor update starts from.
    """
    cdef io_tlb_area *area = &pool.areas[area_index]
    cdef u64 boundary_mask = _swiotlb_seg_boundary(dev)
    cdef u64 tbl_dma_addr = phys_to_dma(dev, pool.start) & boundary_mask
    cdef u64 max_slots = get_max_slots(boundary_mask)
    cdef u32 iotlb_align_mask = _swiotlb_min_align_mask(dev)
    cdef u32 nslots = <u32>nr_slots(alloc_size)
    cdef u32 stride, index, slots_checked, slot_base, slot_index
    cdef u64 tlb_addr
    if nslots == 0:
        raise KernelBug(f"kernel BUG in swiotlb_search_pool_area(): BUG_ON(!nslots) "
                        f"(alloc_size {alloc_size:#x})")
    # Streaming maps with no alignment wish keep the historical page alignment for >= PAGE_SIZE.
    if alloc_align_mask == 0 and iotlb_align_mask == 0 and alloc_size >= PAGE_SIZE:
        alloc_align_mask = PAGE_SIZE - 1
    alloc_align_mask |= IO_TLB_SIZE - 1
    iotlb_align_mask &= ~alloc_align_mask
    stride = <u32>get_max_slots(max(alloc_align_mask, iotlb_align_mask))

    if <u64>nslots > <u64>pool.area_nslabs - area.used:
        return -1
    slot_base = area_index * pool.area_nslabs
    index = area.index
    slots_checked = 0
    while slots_checked < pool.area_nslabs:
        slot_index = slot_base + index
        tlb_addr = slot_addr(tbl_dma_addr, slot_index)
        if (tlb_addr & alloc_align_mask) or (orig_addr and (tlb_addr & iotlb_align_mask) !=
                                             (orig_addr & iotlb_align_mask)):
            index = wrap_area_index(pool, index + 1)
            slots_checked += 1
            continue
        if not _swiotlb_is_power_of_2(max_slots):
            raise KernelBug(f"kernel BUG in iommu_is_span_boundary(): boundary size {max_slots:#x} "
                            f"(seg_boundary_mask {boundary_mask:#x}) is not a power of 2")
        if not _swiotlb_is_span_boundary(slot_index, nslots, nr_slots(tbl_dma_addr), max_slots):
            if pool.slots[slot_index].list >= nslots:
                found_index[0] = index
                return slot_index
        index = wrap_area_index(pool, index + stride)
        slots_checked += stride
    return -1


cdef void swiotlb_commit_slots(Device dev, IoTlbMem pool, u32 area_index, u32 slot_index, u32 index,
                               u64 alloc_size, u32 offset) noexcept:
    """The "found:" half of swiotlb_search_pool_area(): take the slots, move the cursor, count."""
    cdef io_tlb_area *area = &pool.areas[area_index]
    cdef u32 nslots = <u32>nr_slots(alloc_size)
    cdef u32 i
    cdef u16 count = 0
    cdef io_tlb_slot *slots = pool.slots.data()
    cdef io_tlb_slot *sp
    cdef io_tlb_slot *seg_start
    cdef u64 sz = alloc_size - <u64>offset
    for i in range(slot_index, slot_index + nslots):
        slots[i].list = 0
        slots[i].alloc_size = sz
        sz -= IO_TLB_SIZE
    # free slots just before the allocation now only reach up to it (within the segment):
    # i = slot_index - 1 down while io_tlb_offset(i) != IO_TLB_SEGSIZE - 1, i.e. down to the
    # first slot of slot_index's segment
    sp = slots + slot_index
    seg_start = slots + (slot_index & ~(<u32>IO_TLB_SEGSIZE - 1))
    while sp > seg_start:
        sp -= 1
        if not sp.list:
            break
        count += 1
        sp.list = count
    area.index = wrap_area_index(pool, index + nslots)
    area.used += nslots
    inc_used_and_hiwater(pool, nslots)


cdef long long swiotlb_find_slots(Device dev, IoTlbMem pool, u64 orig_addr, u64 alloc_size,
                                  u32 alloc_align_mask, u32 *area_out, u32 *index_out) except -2:
    """swiotlb_find_slots() (non-dynamic): areas from raw_smp_processor_id() & (nareas - 1) on."""
    cdef u32 start = (<u32>pool.machine._cpu) & (pool.nareas - 1)
    cdef u32 i = start
    cdef long long index
    while True:
        index = swiotlb_search_pool_area(dev, pool, i, orig_addr, alloc_size, alloc_align_mask, index_out)
        if index >= 0:
            area_out[0] = i
            return index
        i += 1
        if i >= pool.nareas:
            i = 0
        if i == start:
            return -1


# ---- swiotlb_bounce ---------------------------------------------------------------------------------
cdef int swiotlb_bounce(Device dev, u64 tlb_addr, u64 size, int dir, IoTlbMem mem) except -1:
    """swiotlb_bounce(): copy between the bounce slot and the original, resolving sub-range offsets.

    The slot's orig_addr/alloc_size describe its own start; the in-slot offset of tlb_addr
    minus the min_align offset of the original (possibly negative) moves both.
    """
    cdef u64 index = (tlb_addr - mem.start) >> IO_TLB_SHIFT
    cdef u64 orig_addr = mem.slots[index].orig_addr
    cdef u64 alloc_size = mem.slots[index].alloc_size
    cdef int tlb_offset
    cdef PhysMem pm = dev.machine.mem
    if orig_addr == INVALID_PHYS_ADDR:
        return 0
    tlb_offset = <int>((tlb_addr & (IO_TLB_SIZE - 1)) - swiotlb_align_offset(dev, 0, orig_addr))
    orig_addr += <u64>(<long long>tlb_offset)
    alloc_size -= <u64>(<long long>tlb_offset)
    if size > alloc_size:
        dev.machine.kwarn(KernelWarning, f"{_swiotlb_dev_prefix(dev)}Buffer overflow detected. Allocation size: "
                                         f"{alloc_size}. Mapping size: {size}.", "swiotlb_bounce:overflow")
        size = alloc_size
    if size == 0:
        return 0
    # a CPU memcpy: both ends must be memory the CPU can address
    if pm.find_region(orig_addr, size) < 0:
        raise PhysAddrError(orig_addr, size, "swiotlb_bounce(): original buffer is not RAM or MMIO")
    if not (mem.pool_in_ram and mem.start <= tlb_addr < mem.end and size <= mem.end - tlb_addr) \
            and pm.find_region(tlb_addr, size) < 0:
        # (a range inside a pool that lies in one RAM region needs no region lookup)
        raise PhysAddrError(tlb_addr, size, "swiotlb_bounce(): bounce range leaves RAM")
    if dir == DMA_TO_DEVICE:
        _swiotlb_copy(pm, tlb_addr, orig_addr, size)
    else:
        _swiotlb_copy(pm, orig_addr, tlb_addr, size)
    return 0


cdef int _swiotlb_copy(PhysMem pm, u64 dst, u64 src, u64 n) except -1:
    """PhysMem.copy(dst, src, n) with the same result (bytes, frames allocated, resident_frames),
    copying frame to frame instead of through a bounce buffer."""
    cdef u64 chunk
    cdef u8 *ps
    cdef u8 *pd
    while n:
        chunk = PAGE_SIZE - (src & (PAGE_SIZE - 1))
        if chunk > PAGE_SIZE - (dst & (PAGE_SIZE - 1)):
            chunk = PAGE_SIZE - (dst & (PAGE_SIZE - 1))
        if chunk > n:
            chunk = n
        ps = pm.page_ptr(src >> PAGE_SHIFT)
        if ps == NULL:
            pd = pm.page_ptr(dst >> PAGE_SHIFT)
            if pd != NULL:                              # zeros onto data; zeros onto zeros: nothing
                memset(pd + (dst & (PAGE_SIZE - 1)), 0, chunk)
        else:
            pd = pm.page_ptr_alloc(dst >> PAGE_SHIFT)
            memmove(pd + (dst & (PAGE_SIZE - 1)), ps + (src & (PAGE_SIZE - 1)), chunk)
        src += chunk
        dst += chunk
        n -= chunk
    return 0


# ---- swiotlb_tbl_map_single ------------------------------------------------------------------------
cdef u64 swiotlb_tbl_map_single(Device dev, u64 orig_addr, u64 mapping_size, u64 alloc_align_mask_arg,
                                int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """swiotlb_tbl_map_single(): bounce slot address (keeping the min_align_mask bits) or DMA_MAPPING_ERROR.

    The original is copied into the slot for every direction (a partial device write must
    not expose stale slot data). Raises only where the kernel BUGs (KernelBug) or the copy
    would touch no memory (PhysAddrError), both before any state changes.
    """
    cdef IoTlbMem mem = dev.dma_io_tlb_mem
    cdef Machine m = dev.machine
    cdef u32 alloc_align_mask = <u32>alloc_align_mask_arg       # unsigned int parameter
    cdef u32 offset, area_index = 0, found_index = 0
    cdef u64 size, mask, tlb_addr, i, n
    cdef long long index
    cdef u16 pad_slots
    if mem is None or mem.nslabs == 0:
        if __ratelimit(m, "swiotlb_tbl_map_single:nomem", "swiotlb_tbl_map_single"):
            m.kwarn(KernelWarning, f"{_swiotlb_dev_prefix(dev)}Can not allocate SWIOTLB buffer earlier and can't "
                                   f"now provide you with the DMA bounce buffer")
        return DMA_MAPPING_ERROR

    offset = swiotlb_align_offset(dev, alloc_align_mask, orig_addr)
    mask = <u64>(<u32>(alloc_align_mask + 1)) - 1                 # ALIGN(x, alloc_align_mask + 1)
    size = (mapping_size + offset + mask) & ~mask
    if <u32>nr_slots(size) == 0:                                  # checked first: no state yet
        raise KernelBug(f"kernel BUG in swiotlb_search_pool_area(): BUG_ON(!nslots) "
                        f"(mapping_size {mapping_size:#x}, alloc_align_mask {alloc_align_mask:#x})")
    if alloc_align_mask > PAGE_SIZE - 1:
        m.kwarn(KernelWarning, f"{_swiotlb_dev_prefix(dev)}Alloc alignment may prevent fulfilling requests with "
                               f"max mapping_size", "swiotlb_tbl_map_single:alloc_align")

    index = swiotlb_find_slots(dev, mem, orig_addr, size, alloc_align_mask, &area_index, &found_index)
    if index == -1:
        if not (attrs & DMA_ATTR_NO_WARN) and __ratelimit(m, "swiotlb_tbl_map_single:full",
                                                          "swiotlb_tbl_map_single"):
            m.kwarn(SwiotlbFullWarning,
                    f"{_swiotlb_dev_prefix(dev)}swiotlb buffer is full (sz: {<long long>size} bytes), "
                    f"total {mem.nslabs} (slots), used {mem.total_used} (slots)")
        return DMA_MAPPING_ERROR
    if mapping_size and m.mem.find_region(orig_addr, mapping_size) < 0:
        raise PhysAddrError(orig_addr, mapping_size,
                            "swiotlb_tbl_map_single(): original buffer is not RAM or MMIO")
    swiotlb_commit_slots(dev, mem, area_index, <u32>index, found_index, size,
                         swiotlb_align_offset(dev, 0, orig_addr))
    dev.dma_uses_io_tlb = True

    # dma_reset_need_sync(): bounced buffers always need syncs
    if dev.dma_skip_sync:
        dev.dma_skip_sync = False

    # remember each slot's original address; the returned address keeps the in-slot offset
    pad_slots = <u16>(offset >> IO_TLB_SHIFT)
    offset &= IO_TLB_SIZE - 1
    index += pad_slots
    mem.slots[index].pad_slots = pad_slots
    n = nr_slots(size) - pad_slots
    for i in range(n):
        mem.slots[index + i].orig_addr = slot_addr(orig_addr, i)
    tlb_addr = slot_addr(mem.start, index) + offset
    # unconditional initial copy, whatever dir and attrs say
    swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_TO_DEVICE, mem)
    return tlb_addr


# ---- unmap: __swiotlb_tbl_unmap_single / swiotlb_release_slots --------------------------------------
cdef int swiotlb_release_slots(Device dev, u64 tlb_addr, IoTlbMem mem) except -1:
    """swiotlb_release_slots(): give the allocation's slots back, merging with free neighbours.

    The area cursor is not moved.
    """
    cdef u32 offset = swiotlb_align_offset(dev, 0, tlb_addr)
    cdef long long index, nslots, i
    cdef u64 aindex
    cdef io_tlb_area *area
    cdef u16 count
    cdef io_tlb_slot *slots
    cdef io_tlb_slot *sp
    cdef io_tlb_slot *seg_start
    index = <long long>((tlb_addr - offset - mem.start) >> IO_TLB_SHIFT)
    index -= mem.slots[index].pad_slots
    if index < 0:                               # (host safety: a corrupted pad_slots)
        raise KernelBug(f"kernel BUG in swiotlb_release_slots(): BUG_ON(aindex >= nareas) "
                        f"(tlb_addr {tlb_addr:#x})")
    nslots = <int>nr_slots(mem.slots[index].alloc_size + offset)
    aindex = <u64>index // mem.area_nslabs
    if aindex >= mem.nareas:
        raise KernelBug(f"kernel BUG in swiotlb_release_slots(): BUG_ON(aindex >= nareas) "
                        f"(tlb_addr {tlb_addr:#x})")
    if nslots < 0 or <u64>(index + nslots) > mem.nslabs:
        # the kernel would scribble over memory past the slot array; refuse before changing state
        raise KernelBug(f"swiotlb_release_slots(): {tlb_addr:#x} is not the start of a bounce buffer "
                        f"(its slots {index}+{nslots} run past the pool's {mem.nslabs})")
    area = &mem.areas[aindex]
    slots = mem.slots.data()
    if index + nslots < ((index + 1 + IO_TLB_SEGSIZE - 1) & ~(<long long>IO_TLB_SEGSIZE - 1)):
        count = slots[index + nslots].list
    else:
        count = 0
    # return the slots, merging with the free run after them
    sp = slots + index + nslots
    seg_start = slots + index
    while sp > seg_start:
        sp -= 1
        count += 1
        sp.list = count
        sp.orig_addr = INVALID_PHYS_ADDR
        sp.alloc_size = 0
        sp.pad_slots = 0
    # and with the free run before them, up to the segment start (i = index - 1 down while
    # io_tlb_offset(i) != IO_TLB_SEGSIZE - 1, i.e. down to the first slot of index's segment)
    seg_start = slots + (index & ~(<long long>IO_TLB_SEGSIZE - 1))
    while sp > seg_start:
        sp -= 1
        if not sp.list:
            break
        count += 1
        sp.list = count
    area.used -= <u64>nslots
    dec_used(mem, <u32>nslots)
    return 0


cdef int __swiotlb_tbl_unmap_single(Device dev, u64 tlb_addr, u64 mapping_size, int dir,
                                    unsigned long attrs, IoTlbMem pool) except -1:
    """__swiotlb_tbl_unmap_single(): copy back (FROM_DEVICE/BIDIRECTIONAL, no SKIP_CPU_SYNC), release."""
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC) and (dir == DMA_FROM_DEVICE or dir == DMA_BIDIRECTIONAL):
        swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_FROM_DEVICE, pool)
    return swiotlb_release_slots(dev, tlb_addr, pool)


cdef inline int swiotlb_tbl_unmap_single(Device dev, u64 tlb_addr, u64 mapping_size, int dir,
                                         unsigned long attrs) except -1:
    """swiotlb_tbl_unmap_single() (swiotlb.h): nothing unless tlb_addr is a bounce address."""
    if not is_swiotlb_buffer(dev, tlb_addr):             # swiotlb_find_pool() == NULL
        return 0
    return __swiotlb_tbl_unmap_single(dev, tlb_addr, mapping_size, dir, attrs, dev.dma_io_tlb_mem)


# ---- syncs: swiotlb_sync_single_for_device / _for_cpu ---------------------------------------------
cdef inline int swiotlb_sync_single_for_device(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    if not is_swiotlb_buffer(dev, tlb_addr):             # swiotlb_find_pool() == NULL
        return 0
    return _swiotlb_sync_single_for_device(dev, tlb_addr, size, dir)


cdef int _swiotlb_sync_single_for_device(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    """swiotlb_sync_single_for_device(): TO_DEVICE/BIDIRECTIONAL copy original → slot; FROM_DEVICE nothing."""
    cdef IoTlbMem pool = swiotlb_find_pool(dev, tlb_addr)
    if pool is None:
        return 0
    if dir == DMA_TO_DEVICE or dir == DMA_BIDIRECTIONAL:
        return swiotlb_bounce(dev, tlb_addr, size, DMA_TO_DEVICE, pool)
    if dir != DMA_FROM_DEVICE:
        raise KernelBug(f"kernel BUG in __swiotlb_sync_single_for_device(): BUG_ON(dir != DMA_FROM_DEVICE) "
                        f"(dir {dir})")
    return 0


cdef inline int swiotlb_sync_single_for_cpu(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    if not is_swiotlb_buffer(dev, tlb_addr):             # swiotlb_find_pool() == NULL
        return 0
    return _swiotlb_sync_single_for_cpu(dev, tlb_addr, size, dir)


cdef int _swiotlb_sync_single_for_cpu(Device dev, u64 tlb_addr, u64 size, int dir) except -1:
    """swiotlb_sync_single_for_cpu(): FROM_DEVICE/BIDIRECTIONAL copy slot → original; TO_DEVICE nothing."""
    cdef IoTlbMem pool = swiotlb_find_pool(dev, tlb_addr)
    if pool is None:
        return 0
    if dir == DMA_FROM_DEVICE or dir == DMA_BIDIRECTIONAL:
        return swiotlb_bounce(dev, tlb_addr, size, DMA_FROM_DEVICE, pool)
    if dir != DMA_TO_DEVICE:
        raise KernelBug(f"kernel BUG in __swiotlb_sync_single_for_cpu(): BUG_ON(dir != DMA_TO_DEVICE) "
                        f"(dir {dir})")
    return 0


# ---- swiotlb_map: the dma-direct bounce path ---------------------------------------------------------
cdef u64 swiotlb_map(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """swiotlb_map(): bounce, check the slot is reachable, clean the cache; bus address or DMA_MAPPING_ERROR."""
    cdef u64 swiotlb_addr, dma_addr
    if dev.machine.trace.enabled:
        trace_swiotlb_bounced(dev, phys_to_dma(dev, phys), size)
    swiotlb_addr = swiotlb_tbl_map_single(dev, phys, size, 0, dir, attrs)
    if swiotlb_addr == DMA_MAPPING_ERROR:
        return DMA_MAPPING_ERROR
    dma_addr = phys_to_dma(dev, swiotlb_addr)                 # phys_to_dma_unencrypted()
    if not dma_capable(dev, dma_addr, size, True):
        __swiotlb_tbl_unmap_single(dev, swiotlb_addr, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC,
                                   swiotlb_find_pool(dev, swiotlb_addr))
        dev.machine.kwarn(KernelWarning, f"{_swiotlb_dev_prefix(dev)}swiotlb addr {_swiotlb_pad(dma_addr)}+{size} overflow "
                                         f"(mask {dev._dma_mask:x}, bus limit {dev.bus_dma_limit:x}).",
                          "swiotlb_map:overflow")
        return DMA_MAPPING_ERROR
    if not dev.coherent and not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
        arch_sync_dma_for_device(dev, swiotlb_addr, size, dir)
    return dma_addr


# ---- Python entry points (the kernel's exported swiotlb symbols) -------------------------------------
# A def cannot share its name with the cdef above in one module, so each is written under a
# private name and published under the kernel's (see the end of the file).

cdef inline int _swiotlb_dir_arg(object dir) except? -1:
    if isinstance(dir, bool) or not hasattr(dir, "__index__"):
        raise TypeError(f"dir must be an int (enum dma_data_direction), not {type(dir).__name__}")
    v = dir.__index__()
    if not -0x80000000 <= v <= 0x7FFFFFFF:
        raise ValueError(f"dir {v} is not an enum dma_data_direction value")
    return <int>v


cdef inline unsigned long _swiotlb_attrs_arg(object attrs) except? 0xFFFFFFFFFFFFFFFF:
    cdef u64 a = _u64(attrs, "attrs")
    if a & ~(<u64>DMA_ATTR_ALL):
        raise ValueError(f"attrs {a:#x} has bits no DMA_ATTR_* defines")
    return a


@cython.embedsignature(False)
def _def_swiotlb_tbl_map_single(Device dev not None, orig_addr, mapping_size, alloc_align_mask, dir, attrs):
    """swiotlb_tbl_map_single(dev, orig_addr, mapping_size, alloc_align_mask, dir, attrs)

    Models kernel/dma/swiotlb.c:swiotlb_tbl_map_single(). Bounce ``mapping_size`` bytes at
    physical ``orig_addr`` through the device's swiotlb pool.

    Returns the bounce buffer's physical address, or DMA_MAPPING_ERROR (pool full: rate-limited
    SwiotlbFullWarning unless DMA_ATTR_NO_WARN; no pool: KernelWarning). Raises KernelBug where
    the kernel BUGs (a size that needs no slot, a seg_boundary_mask whose span is not a power
    of two), PhysAddrError when the original buffer is not RAM or MMIO (nothing is allocated),
    TypeError / ValueError for bad arguments (a ``dir`` or ``attrs`` outside the kernel enums, an
    ``alloc_align_mask`` beyond 32 bits) or a removed device. Warns KernelWarning for an
    ``alloc_align_mask`` above PAGE_SIZE - 1 and a buffer overflow in the copy.
    """
    _dev_live(dev)
    cdef u64 o = _u64(orig_addr, "orig_addr")
    cdef u64 sz = _u64(mapping_size, "mapping_size")
    cdef u64 am = _u64(alloc_align_mask, "alloc_align_mask")
    cdef int d = _swiotlb_dir_arg(dir)
    cdef unsigned long a = _swiotlb_attrs_arg(attrs)
    cdef u64 ret
    if am > 0xFFFFFFFF:
        raise ValueError(f"alloc_align_mask {am:#x} does not fit the kernel's unsigned int")
    ret = swiotlb_tbl_map_single(dev, o, sz, am, d, a)
    dev.machine.flush_warnings()
    return ret


@cython.embedsignature(False)
def _def_swiotlb_tbl_unmap_single(Device dev not None, tlb_addr, mapping_size, dir, attrs):
    """swiotlb_tbl_unmap_single(dev, tlb_addr, mapping_size, dir, attrs)

    Models include/linux/swiotlb.h:swiotlb_tbl_unmap_single(): nothing unless ``tlb_addr`` is
    in the device's pool; else copy back (DMA_FROM_DEVICE/DMA_BIDIRECTIONAL without
    DMA_ATTR_SKIP_CPU_SYNC) and release the slots. Returns None. Raises KernelBug for a
    ``tlb_addr`` whose slot bookkeeping would make swiotlb_release_slots() BUG (an area beyond
    nareas) or run past the pool (no live bounce buffer starts there), PhysAddrError when the copy-back leaves RAM / MMIO,
    TypeError / ValueError for bad arguments or a removed device. Warns KernelWarning for a
    ``mapping_size`` larger than the allocation ("Buffer overflow detected").
    """
    _dev_live(dev)
    cdef u64 t = _u64(tlb_addr, "tlb_addr")
    cdef u64 sz = _u64(mapping_size, "mapping_size")
    cdef int d = _swiotlb_dir_arg(dir)
    cdef unsigned long a = _swiotlb_attrs_arg(attrs)
    swiotlb_tbl_unmap_single(dev, t, sz, d, a)
    dev.machine.flush_warnings()


@cython.embedsignature(False)
def _def_swiotlb_sync_single_for_cpu(Device dev not None, tlb_addr, size, dir):
    """swiotlb_sync_single_for_cpu(dev, tlb_addr, size, dir)

    Models include/linux/swiotlb.h:swiotlb_sync_single_for_cpu(): for a bounce address, copy
    slot → original for DMA_FROM_DEVICE/DMA_BIDIRECTIONAL; nothing for another address.
    Returns None. Raises KernelBug for a bounce address with a ``dir`` that is none of the
    three (the kernel's BUG_ON), PhysAddrError when the copy leaves RAM / MMIO, TypeError /
    ValueError for bad arguments or a removed device. Warns KernelWarning for a ``size`` larger
    than the allocation.
    """
    _dev_live(dev)
    cdef u64 t = _u64(tlb_addr, "tlb_addr")
    cdef u64 sz = _u64(size, "size")
    cdef int d = _swiotlb_dir_arg(dir)
    swiotlb_sync_single_for_cpu(dev, t, sz, d)
    dev.machine.flush_warnings()


@cython.embedsignature(False)
def _def_swiotlb_sync_single_for_device(Device dev not None, tlb_addr, size, dir):
    """swiotlb_sync_single_for_device(dev, tlb_addr, size, dir)

    Models include/linux/swiotlb.h:swiotlb_sync_single_for_device(): for a bounce address,
    copy original → slot for DMA_TO_DEVICE/DMA_BIDIRECTIONAL; nothing for another address.
    Returns None. Raises KernelBug for a bounce address with a ``dir`` that is none of the
    three (the kernel's BUG_ON), PhysAddrError when the copy leaves RAM / MMIO, TypeError /
    ValueError for bad arguments or a removed device. Warns KernelWarning for a ``size`` larger
    than the allocation.
    """
    _dev_live(dev)
    cdef u64 t = _u64(tlb_addr, "tlb_addr")
    cdef u64 sz = _u64(size, "size")
    cdef int d = _swiotlb_dir_arg(dir)
    swiotlb_sync_single_for_device(dev, t, sz, d)
    dev.machine.flush_warnings()


@cython.embedsignature(False)
def _def_swiotlb_map(Device dev not None, phys, size, dir, attrs):
    """swiotlb_map(dev, phys, size, dir, attrs)

    Models kernel/dma/swiotlb.c:swiotlb_map(), dma-direct's bounce path. Returns the bus
    address of the bounce buffer, or DMA_MAPPING_ERROR (pool full or missing, or a slot the
    device cannot reach: KernelWarning "swiotlb addr ... overflow"). Raises what
    swiotlb_tbl_map_single() raises: KernelBug, PhysAddrError, TypeError / ValueError for bad
    arguments or a removed device.
    """
    _dev_live(dev)
    cdef u64 p = _u64(phys, "phys")
    cdef u64 sz = _u64(size, "size")
    cdef int d = _swiotlb_dir_arg(dir)
    cdef unsigned long a = _swiotlb_attrs_arg(attrs)
    cdef u64 ret = swiotlb_map(dev, p, sz, d, a)
    dev.machine.flush_warnings()
    return ret


@cython.embedsignature(False)
def _def_swiotlb_max_mapping_size(Device dev not None):
    """swiotlb_max_mapping_size(dev)

    Models kernel/dma/swiotlb.c:swiotlb_max_mapping_size(). Returns the largest size in
    bytes one mapping may bounce (IO_TLB_SIZE * IO_TLB_SEGSIZE = 256 KiB, minus the
    min_align_mask roundup). Raises TypeError for a non-Device, ValueError for a removed device.
    """
    _dev_live(dev)
    return swiotlb_max_mapping_size(dev)


@cython.embedsignature(False)
def _def_is_swiotlb_active(Device dev not None):
    """is_swiotlb_active(dev)

    Models kernel/dma/swiotlb.c:is_swiotlb_active(). Returns True when the device has a
    pool with slabs, else False. Raises TypeError for a non-Device, ValueError for a removed
    device.
    """
    _dev_live(dev)
    return is_swiotlb_active(dev)


@cython.embedsignature(False)
def _def_is_swiotlb_buffer(Device dev not None, paddr):
    """is_swiotlb_buffer(dev, paddr)

    Models include/linux/swiotlb.h:is_swiotlb_buffer(). Returns True when ``paddr`` lies in
    the device's pool, else False. Raises TypeError / ValueError for a non-Device, a bad
    ``paddr`` or a removed device.
    """
    _dev_live(dev)
    return is_swiotlb_buffer(dev, _u64(paddr, "paddr"))


@cython.embedsignature(False)
def _def_is_swiotlb_force_bounce(Device dev not None):
    """is_swiotlb_force_bounce(dev)

    Models include/linux/swiotlb.h:is_swiotlb_force_bounce(). Returns True when the device's
    pool bounces every mapping (``swiotlb=force``), else False. Raises TypeError for a
    non-Device, ValueError for a removed device.
    """
    _dev_live(dev)
    return is_swiotlb_force_bounce(dev)


cdef dict _swiotlb_defs = {
    "swiotlb_tbl_map_single": _def_swiotlb_tbl_map_single,
    "swiotlb_tbl_unmap_single": _def_swiotlb_tbl_unmap_single,
    "swiotlb_sync_single_for_cpu": _def_swiotlb_sync_single_for_cpu,
    "swiotlb_sync_single_for_device": _def_swiotlb_sync_single_for_device,
    "swiotlb_map": _def_swiotlb_map,
    "swiotlb_max_mapping_size": _def_swiotlb_max_mapping_size,
    "is_swiotlb_active": _def_is_swiotlb_active,
    "is_swiotlb_buffer": _def_is_swiotlb_buffer,
    "is_swiotlb_force_bounce": _def_is_swiotlb_force_bounce,
}


def _publish_swiotlb_defs():
    g = globals()
    for name, func in _swiotlb_defs.items():
        func.__name__ = name
        func.__qualname__ = name
        g[name] = func
        g.pop("_def_" + name, None)


_publish_swiotlb_defs()
del _publish_swiotlb_defs

__all__ += ["IoTlbMem"] + list(_swiotlb_defs)
