# Models kernel/dma/direct.c and kernel/dma/direct.h (v6.18, after "dma-mapping: migrate to
# physical address-based API"): dma_direct_map_phys / unmap / single and sg syncs, the sg
# mapping loop with its P2PDMA classification and unwind, dma_direct_supported,
# dma_direct_get_required_mask, dma_direct_max_mapping_size, dma_direct_all_ram_mapped,
# dma_direct_need_sync and the coherent allocator (dma_direct_alloc / dma_direct_free).
#
# Not modelled: memory encryption (phys_to_dma_unencrypted == phys_to_dma), KMSAN, the
# arch_dma_map_*_direct powerpc bypass, CMA / dma_alloc_from_dev_coherent pools, remapped
# uncached coherent buffers, and dma_kmalloc_needs_bounce(): it is false because
# CONFIG_DMA_BOUNCE_UNALIGNED_KMALLOC is off (x86), and the simulator has no kmalloc objects.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, direct.pxd.


cdef inline u64 zone_dma_limit_c() noexcept nogil:
    return DMA_BIT_MASK_c(ZONE_DMA_BITS)


cdef inline u64 machine_max_pfn(Machine m) noexcept:
    """max_pfn: one past the highest RAM page frame."""
    cdef size_t i
    cdef u64 end = 0
    for i in range(m.mem.regions.size()):
        if m.mem.regions[i].kind == REGION_RAM and m.mem.regions[i].end > end:
            end = m.mem.regions[i].end
    return end >> PAGE_SHIFT


cdef int dma_direct_overflow(Device dev, u64 dma_addr, u64 size, int copy) except -1:
    """The err_overflow label of dma_direct_map_phys(): dev_WARN_ONCE "DMA addr ... overflow"."""
    dev.machine.kwarn(KernelWarning,
                      f"{dev.name}: DMA addr 0x{dma_addr:016x}+{size} overflow "
                      f"(mask {dev._dma_mask:x}, bus limit {dev.bus_dma_limit:x}).",
                      "direct.h:dma_direct_map_phys:overflow@mapping.c" if copy == DIRECT_H_IN_MAPPING_C
                      else "direct.h:dma_direct_map_phys:overflow@direct.c")
    return 0


# ---- direct.h: dma_direct_map_phys() --------------------------------------------------------------
cdef inline u64 dma_direct_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs,
                                    int copy=DIRECT_H_IN_MAPPING_C) except? 0xFFFFFFFFFFFFFFFF:
    """dma_direct_map_phys(): bus address, a swiotlb bounce slot's bus address, or DMA_MAPPING_ERROR.

    Inline fast path for the common case (no forced bounce, not MMIO, the bus address is
    dma_capable); everything else goes through _dma_direct_map_phys, the whole function. The
    fast path only evaluates the same pure tests the full function starts with, so it returns
    exactly what that would.
    """
    cdef u64 dma_addr
    if not (attrs & DMA_ATTR_MMIO) and not is_swiotlb_force_bounce(dev):
        dma_addr = phys_to_dma(dev, phys)
        if dma_capable(dev, dma_addr, size, True):
            if not dev.coherent and not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
                arch_sync_dma_for_device(dev, phys, size, dir)
            return dma_addr
    return _dma_direct_map_phys(dev, phys, size, dir, attrs, copy)


cdef u64 _dma_direct_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs,
                              int copy) except? 0xFFFFFFFFFFFFFFFF:
    """dma_direct_map_phys() in full (see dma_direct_map_phys for the inline fast path)."""
    cdef u64 dma_addr = 0                  # uninitialised in the kernel on the force-bounce MMIO path
    if is_swiotlb_force_bounce(dev):
        if attrs & DMA_ATTR_MMIO:
            dma_direct_overflow(dev, dma_addr, size, copy)
            return DMA_MAPPING_ERROR
        return swiotlb_map(dev, phys, size, dir, attrs)
    if attrs & DMA_ATTR_MMIO:
        # MMIO is already a bus address: no phys_to_dma(), never bounced, never cache-synced
        dma_addr = phys
        if not dma_capable(dev, dma_addr, size, False):
            dma_direct_overflow(dev, dma_addr, size, copy)
            return DMA_MAPPING_ERROR
    else:
        dma_addr = phys_to_dma(dev, phys)
        if not dma_capable(dev, dma_addr, size, True):    # || dma_kmalloc_needs_bounce(): false
            if is_swiotlb_active(dev):
                return swiotlb_map(dev, phys, size, dir, attrs)
            dma_direct_overflow(dev, dma_addr, size, copy)
            return DMA_MAPPING_ERROR
    if not dev.coherent and not (attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)):
        arch_sync_dma_for_device(dev, phys, size, dir)
    return dma_addr


# ---- direct.h: single syncs ----------------------------------------------------------------------
cdef int dma_direct_sync_single_for_device(Device dev, u64 addr, u64 size, int dir) except -1:
    """dma_direct_sync_single_for_device(): bounce original → slot first, then clean the cache."""
    cdef u64 paddr = dma_to_phys(dev, addr)
    swiotlb_sync_single_for_device(dev, paddr, size, dir)
    if not dev.coherent:
        arch_sync_dma_for_device(dev, paddr, size, dir)
    return 0


cdef int dma_direct_sync_single_for_cpu(Device dev, u64 addr, u64 size, int dir) except -1:
    """dma_direct_sync_single_for_cpu(): invalidate the cache first, then bounce slot → original."""
    cdef u64 paddr = dma_to_phys(dev, addr)
    if not dev.coherent:
        arch_sync_dma_for_cpu(dev, paddr, size, dir)
        # arch_sync_dma_for_cpu_all(): nothing to count
    swiotlb_sync_single_for_cpu(dev, paddr, size, dir)
    # dir == DMA_FROM_DEVICE: arch_dma_mark_clean() (ia64 only)
    return 0


# ---- direct.h: dma_direct_unmap_phys() --------------------------------------------------------------
cdef inline int dma_direct_unmap_phys(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1:
    """dma_direct_unmap_phys(): MMIO nothing; else sync for the CPU (unless SKIP_CPU_SYNC), free the slot."""
    cdef u64 phys
    if attrs & DMA_ATTR_MMIO:
        return 0                           # uncached and never bounced
    phys = dma_to_phys(dev, addr)
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
        # dma_direct_sync_single_for_cpu(dev, addr, size, dir), with dma_to_phys() done once
        if not dev.coherent:
            arch_sync_dma_for_cpu(dev, phys, size, dir)
        swiotlb_sync_single_for_cpu(dev, phys, size, dir)
    # swiotlb_tbl_unmap_single() looks the pool up itself: a no-op for non-bounce addresses
    swiotlb_tbl_unmap_single(dev, phys, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
    return 0


# ---- GIL-free fast paths (mapping.pxi: dma_map_phys_fast / dma_unmap_phys_fast) -------------------
cdef inline int dma_direct_map_phys_fast(Device dev, u64 phys, u64 size, int dir, unsigned long attrs,
                                         u64 *out) noexcept nogil:
    """dma_direct_map_phys()'s inline fast path without the GIL: 1 (*out = the bus address), or 0
    having changed nothing (the caller runs the full function with the GIL)."""
    cdef u64 dma_addr
    if (attrs & DMA_ATTR_MMIO) or is_swiotlb_force_bounce(dev):
        return 0
    dma_addr = phys_to_dma(dev, phys)
    if not dma_capable(dev, dma_addr, size, True):
        return 0
    if not dev.coherent and not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
        arch_sync_dma_for_device(dev, phys, size, dir)
    out[0] = dma_addr
    return 1


cdef inline int dma_direct_unmap_phys_fast(Device dev, u64 addr, u64 size, int dir,
                                           unsigned long attrs) noexcept nogil:
    """dma_direct_unmap_phys() of an address that is not a bounce slot: 1 done, or 0 unchanged."""
    cdef u64 phys
    if attrs & DMA_ATTR_MMIO:
        return 1
    phys = dma_to_phys(dev, addr)
    if is_swiotlb_buffer(dev, phys):
        return 0
    if not (attrs & DMA_ATTR_SKIP_CPU_SYNC) and not dev.coherent:
        arch_sync_dma_for_cpu(dev, phys, size, dir)
    return 1


# ---- direct.c: scatter-gather ---------------------------------------------------------------------
cdef int dma_direct_unmap_sg(Device dev, ScatterList sgl, int nents, int dir, unsigned long attrs) except -1:
    """dma_direct_unmap_sg(): bus-address entries are only unmarked, the others unmapped."""
    cdef int i
    cdef scatterlist *sg
    for i in range(nents):
        sg = &sgl.sg[i]
        if sg.dma_flags & SG_DMA_BUS_ADDRESS:
            sg.dma_flags &= ~SG_DMA_BUS_ADDRESS          # sg_dma_unmark_bus_address()
        else:
            dma_direct_unmap_phys(dev, sg.dma_address, sg.dma_length, dir, attrs)
    return 0


cdef int dma_direct_map_sg(Device dev, ScatterList sgl, int nents, int dir, unsigned long attrs) except? -9999:
    """dma_direct_map_sg(): nents (never merges), -EIO for a failed segment, -EREMOTEIO for P2P it cannot reach.

    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE is mapped like ordinary memory (CPU physical address):
    v6.16..v7.0 had `break` there, which left dma_address unset; the kernel fixed it with a
    fallthrough ("dma-direct: fix mapping of P2P segments through the host bridge", 2026,
    also in stable), and the fixed behaviour is modelled.
    """
    cdef int i, ret, map_type
    cdef scatterlist *sg
    cdef u64 phys, bus_addr
    for i in range(nents):
        sg = &sgl.sg[i]
        phys = sg.page_phys + sg.offset                  # sg_phys(sg)
        bus_addr = 0
        map_type = p2pdma_state_c(dev, phys, sg.length, &bus_addr)     # pci_p2pdma_state()
        sg = &sgl.sg[i]                                  # (the hook may run Python code)
        if map_type == PCI_P2PDMA_MAP_THRU_HOST_BRIDGE or map_type == PCI_P2PDMA_MAP_NONE:
            try:
                sg.dma_address = dma_direct_map_phys(dev, phys, sg.length, dir, attrs, DIRECT_H_IN_DIRECT_C)
            except BaseException:
                # not the kernel (it cannot fail this way): a call that raises leaves no trace,
                # so the entries mapped so far are unmapped as on the -EIO path
                dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
                raise
            if sg.dma_address == DMA_MAPPING_ERROR:
                ret = -EIO
                dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
                return ret
        elif map_type == PCI_P2PDMA_MAP_BUS_ADDR:
            sg.dma_address = bus_addr                    # pci_p2pdma_bus_addr_map()
            sg.dma_length = sg.length                    # d0d08f4bd7f6 (v6.18-rc8, stable 6.17)
            sg.dma_flags |= SG_DMA_BUS_ADDRESS           # sg_dma_mark_bus_address()
            continue
        else:
            ret = -EREMOTEIO
            dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            return ret
        sg.dma_length = sg.length                        # sg_dma_len(sg) = sg->length
    return nents


cdef int dma_direct_sync_sg_for_device(Device dev, ScatterList sgl, int nents, int dir) except -1:
    """dma_direct_sync_sg_for_device(): per entry, bounce then clean (length = sg->length)."""
    cdef int i
    cdef u64 paddr, length
    for i in range(nents):
        paddr = dma_to_phys(dev, sgl.sg[i].dma_address)
        length = sgl.sg[i].length
        swiotlb_sync_single_for_device(dev, paddr, length, dir)
        if not dev.coherent:
            arch_sync_dma_for_device(dev, paddr, length, dir)
    return 0


cdef int dma_direct_sync_sg_for_cpu(Device dev, ScatterList sgl, int nents, int dir) except -1:
    """dma_direct_sync_sg_for_cpu(): per entry, invalidate then bounce (length = sg->length)."""
    cdef int i
    cdef u64 paddr, length
    for i in range(nents):
        paddr = dma_to_phys(dev, sgl.sg[i].dma_address)
        length = sgl.sg[i].length
        if not dev.coherent:
            arch_sync_dma_for_cpu(dev, paddr, length, dir)
        swiotlb_sync_single_for_cpu(dev, paddr, length, dir)
    # non-coherent: one arch_sync_dma_for_cpu_all() after the loop (not counted)
    return 0


# ---- direct.c: masks and sizes ----------------------------------------------------------------------
cdef u64 dma_direct_get_required_mask(Device dev) noexcept:
    """dma_direct_get_required_mask(): the all-ones mask covering the bus address of the last RAM page."""
    cdef u64 phys = (machine_max_pfn(dev.machine) - 1) << PAGE_SHIFT
    cdef u64 max_dma = phys_to_dma(dev, phys)          # phys_to_dma_direct()
    # (1ULL << (fls64(max_dma) - 1)) * 2 - 1; x86 masks the shift count (max_dma == 0 edge)
    return ((<u64>1) << ((fls64(max_dma) - 1) & 63)) * 2 - 1


cdef bint dma_direct_supported(Device dev, u64 mask) noexcept:
    """dma_direct_supported(): 32-bit masks always; smaller ones must reach ZONE_DMA / all of RAM."""
    cdef u64 min_mask = (machine_max_pfn(dev.machine) - 1) << PAGE_SHIFT
    if mask >= DMA_BIT_MASK_c(32):
        return True
    if zone_dma_limit_c() < min_mask:                  # CONFIG_ZONE_DMA: min_t(u64, min_mask, zone_dma_limit)
        min_mask = zone_dma_limit_c()
    return mask >= phys_to_dma(dev, min_mask)          # phys_to_dma_unencrypted()


cdef bint dma_direct_all_ram_mapped(Device dev) noexcept:
    """dma_direct_all_ram_mapped(): every System RAM page lies in some dma_range_map region."""
    cdef size_t r, k
    cdef u64 start_pfn, end_pfn, cpu_start_pfn
    cdef bint found
    cdef PhysMem mem = dev.machine.mem
    if dev.range_map.empty():
        return True
    for r in range(mem.regions.size()):                # walk_system_ram_range(check_ram_in_range_map)
        if mem.regions[r].kind != REGION_RAM:
            continue
        start_pfn = mem.regions[r].start >> PAGE_SHIFT
        end_pfn = mem.regions[r].end >> PAGE_SHIFT
        while start_pfn < end_pfn:
            found = False
            for k in range(dev.range_map.size()):
                if (dev.range_map[k].size >> PAGE_SHIFT) == 0:
                    break                              # the walk stops at a zero-page-sized entry
                cpu_start_pfn = dev.range_map[k].cpu_start >> PAGE_SHIFT
                if start_pfn >= cpu_start_pfn and start_pfn - cpu_start_pfn < (dev.range_map[k].size >> PAGE_SHIFT):
                    found = True
                    start_pfn = cpu_start_pfn + (dev.range_map[k].size >> PAGE_SHIFT)
                    break
            if not found:
                return False
    return True


cdef bint dma_direct_need_sync(Device dev, u64 dma_addr) noexcept:
    """dma_direct_need_sync(): non-coherent, or the address is a swiotlb bounce buffer."""
    return not dev.coherent or is_swiotlb_buffer(dev, dma_to_phys(dev, dma_addr))


cdef u64 dma_direct_max_mapping_size(Device dev) except? 0:
    """dma_direct_max_mapping_size(): swiotlb's limit when the device may bounce, else SIZE_MAX."""
    if is_swiotlb_active(dev) and (dma_addressing_limited_c(dev) or is_swiotlb_force_bounce(dev)):
        return swiotlb_max_mapping_size(dev)
    return U64_MAX


# ---- direct.c: the coherent allocator ---------------------------------------------------------------
cdef inline bint dma_coherent_ok(Device dev, u64 phys, u64 size) noexcept:
    """dma_coherent_ok(): the buffer's last byte is within the coherent mask / bus limit."""
    cdef u64 dma_addr = phys_to_dma(dev, phys)         # phys_to_dma_direct()
    if dma_addr == DMA_MAPPING_ERROR:
        return False
    return dma_addr + size - 1 <= min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit)


cdef u64 __dma_direct_alloc_pages(Device dev, u64 size) noexcept:
    """__dma_direct_alloc_pages(): pages the device can reach, or U64_MAX.

    The page allocator stand-in allocates top-down below a limit: first below what the
    coherent mask / bus limit reach through the range map (dma_direct_optimal_gfp_mask's
    phys_limit), then, like the kernel's retries, below 4 GiB (GFP_DMA32) and 16 MiB (GFP_DMA).
    """
    cdef PhysMem mem = dev.machine.mem
    cdef u64 npages = size >> PAGE_SHIFT
    cdef u64 dma_limit = min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit)
    cdef u64 phys_limit = dma_to_phys(dev, dma_limit)
    cdef u64 limits[3]
    cdef u64 phys
    cdef int k
    limits[0] = U64_MAX if phys_limit == U64_MAX else phys_limit + 1
    limits[1] = (<u64>1) << 32
    limits[2] = zone_dma_limit_c() + 1
    for k in range(3):
        if k > 0 and limits[k] >= limits[0]:
            continue
        phys = mem.alloc_pages_c(npages, limits[k], 1)
        if phys == U64_MAX:
            continue
        if dma_coherent_ok(dev, phys, size):
            return phys
        mem.free_pages_c(phys, npages)
    return U64_MAX


cdef u64 dma_direct_alloc(Device dev, u64 size, u64 *dma_handle, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_direct_alloc(): zeroed pages; returns the CPU physical address (U64_MAX = NULL)."""
    cdef u64 phys
    size = (size + PAGE_SIZE - 1) & ~(<u64>PAGE_SIZE - 1)      # PAGE_ALIGN()
    phys = __dma_direct_alloc_pages(dev, size)
    if phys == U64_MAX:
        return U64_MAX
    if not (attrs & DMA_ATTR_NO_KERNEL_MAPPING):               # the no-mapping path does not memset
        dev.machine.mem.fill(phys, 0, size)
    dma_handle[0] = phys_to_dma(dev, phys)                     # phys_to_dma_direct()
    return phys


cdef int dma_direct_free(Device dev, u64 size, u64 phys, u64 dma_handle, unsigned long attrs) except -1:
    """dma_direct_free(): give the pages back."""
    size = (size + PAGE_SIZE - 1) & ~(<u64>PAGE_SIZE - 1)
    dev.machine.mem.free_pages_c(phys, size >> PAGE_SHIFT)
    return 0
