# Models kernel/dma/mapping.c and include/linux/dma-mapping.h (v6.18): the kernel-named entry
# points (dma_map_phys, dma_map_page_attrs, dma_map_single_attrs, dma_map_resource,
# dma_map_sg_attrs / dma_map_sgtable, the syncs, masks and sizes, dma_alloc_attrs) and the
# dispatch between dma-direct and dma-iommu (dma_go_direct / use_dma_iommu). No legacy
# dma_map_ops are modelled: a device is either dma-direct or dma-iommu.
#
# Layers: c_* functions are the C API (kernel semantics: BUG_ON → KernelBug, WARN → queued
# warning, kernel return values); the def functions validate Python arguments, call them and
# emit the queued warnings (Machine.flush_warnings) when the call is complete.
#
# CONFIG_DMA_API_DEBUG is modelled as ``dev.machine.dma_debug.enabled``: it turns on the
# debug-only checks of dma_map_page_attrs / dma_map_resource and makes dma_dev_need_sync()
# true (so syncs always reach the out-of-line __dma_sync_* functions and their BUG_ON).
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, mapping.pxd.

# ---- argument validation (Python tier) -----------------------------------------------------------
cdef extern from *:
    """
    /* An exact Python int that fits a uint64_t: 1 and *out = its value; 0 for anything else (a
       subclass, a negative or too large value), leaving no exception set. No try/except frame:
       the per-call entry points run this for every argument. */
    static inline int dmaphys_exact_u64(PyObject *v, uint64_t *out) {
        if (!PyLong_CheckExact(v))
            return 0;
    #if PY_VERSION_HEX < 0x030C0000
        {   /* 3.11: ob_size is the signed digit count; up to two digits need no call */
            Py_ssize_t n = Py_SIZE(v);
            const digit *dg = ((PyLongObject *)v)->ob_digit;
            if (n == 0) { *out = 0; return 1; }
            if (n == 1) { *out = dg[0]; return 1; }
            if (n == 2) { *out = (uint64_t)dg[0] | ((uint64_t)dg[1] << PyLong_SHIFT); return 1; }
            if (n < 0) return 0;
        }
    #else
        if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
            Py_ssize_t c = PyUnstable_Long_CompactValue((PyLongObject *)v);
            if (c < 0) return 0;
            *out = (uint64_t)c;
            return 1;
        }
    #endif
        {
            unsigned long long r = PyLong_AsUnsignedLongLong(v);
            if (r == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            *out = (uint64_t)r;
            return 1;
        }
    }
    """
    bint _exact_u64 "dmaphys_exact_u64"(object v, u64 *out) noexcept


cdef inline u64 _arg_u64(object v, str what) except? 0xFFFFFFFFFFFFFFFF:
    """A u64 argument: exact ints converted directly, anything else through _u64()."""
    cdef u64 r
    if _exact_u64(v, &r):
        return r
    return _u64(v, what)


cdef inline int _arg_dir(object dir) except? -9:
    """enum dma_data_direction argument; a value no int can hold becomes -1 (an invalid direction)."""
    cdef long long v
    cdef u64 r
    if _exact_u64(dir, &r) and r <= 0x7FFFFFFF:       # the common case: a plain int
        return <int>r
    if isinstance(dir, bool):
        raise TypeError("dir must be an int (enum dma_data_direction), not bool")
    if not isinstance(dir, int):
        if not hasattr(dir, "__index__"):
            raise TypeError(f"dir must be an int (enum dma_data_direction), not {type(dir).__name__}")
        dir = dir.__index__()
    try:
        v = dir
    except OverflowError:
        return -1
    if v < -0x80000000 or v > 0x7FFFFFFF:
        return -1
    return <int>v


cdef inline unsigned long _arg_attrs(object attrs) except? 0xFFFFFFFFFFFFFFFF:
    cdef u64 a = _arg_u64(attrs, "attrs")
    if a & ~(<u64>DMA_ATTR_ALL):
        raise ValueError(f"attrs {a:#x} has bits no DMA_ATTR_* defines (DMA_ATTR_ALL is {DMA_ATTR_ALL:#x})")
    return a


cdef inline int _check_span(u64 addr, u64 size, str what) except -1:
    if size and addr + size - 1 < addr:
        raise ValueError(f"{what} {addr:#x} + size {size:#x} wraps the 64-bit address space")
    return 0


cdef inline int _arg_nents(ScatterList sg, object nents, str what) except? -9:
    cdef u64 n = _arg_u64(nents, what)
    if n > sg.sg.size():
        raise ValueError(f"{what} {n} is more than the scatterlist's {sg.sg.size()} entries")
    return <int>n


cdef inline int bug_on_dir(int dir, str func) except -1:
    """BUG_ON(!valid_dma_direction(dir))."""
    if not valid_dma_direction(dir):
        raise KernelBug(f"kernel BUG at kernel/dma/mapping.c: {func}(): "
                        f"BUG_ON(!valid_dma_direction(dir)) (dir {dir})")
    return 0


# ---- dispatch --------------------------------------------------------------------------------------
cdef inline bint dma_map_direct(Device dev) noexcept nogil:
    """dma_map_direct() = dma_go_direct(dev, *dev->dma_mask, ops): no ops modelled → !use_dma_iommu()."""
    return not dev.dma_iommu


cdef inline bint dma_alloc_direct(Device dev) noexcept:
    """dma_alloc_direct() = dma_go_direct(dev, coherent_dma_mask, ops)."""
    return not dev.dma_iommu


cdef inline bint dma_dev_need_sync(Device dev) noexcept:
    """dma_dev_need_sync(): !dev->dma_skip_sync || IS_ENABLED(CONFIG_DMA_API_DEBUG)."""
    return not dev.dma_skip_sync or dev.machine.dma_debug.enabled


# ---- dma_map_phys / dma_unmap_phys -----------------------------------------------------------------
cdef u64 c_dma_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_map_phys(): bus address or DMA_MAPPING_ERROR."""
    cdef u64 addr
    bug_on_dir(dir, "dma_map_phys")
    if not dev.has_dma_mask:
        # WARN_ON_ONCE(!dev->dma_mask): returns before any trace or debug record
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_phys(): "
                          "WARN_ON_ONCE(!dev->dma_mask)", "mapping.c:dma_map_phys:!dma_mask")
        return DMA_MAPPING_ERROR
    if dma_map_direct(dev):
        addr = dma_direct_map_phys(dev, phys, size, dir, attrs, DIRECT_H_IN_MAPPING_C)
    else:
        addr = iommu_dma_map_phys(dev, phys, size, dir, attrs)
    # kmsan_handle_dma() (non-MMIO): not modelled
    # (the hooks test the same flags; testing them here first skips the calls and their
    # exception checks when tracing / dma-debug are off)
    if dev.machine.trace.enabled:
        trace_dma_map_phys(dev, phys, addr, size, dir, attrs)
    if dev.machine.dma_debug.enabled:
        debug_dma_map_phys(dev, phys, size, dir, addr, attrs)
    return addr


cdef int c_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1:
    """dma_unmap_phys()."""
    bug_on_dir(dir, "dma_unmap_phys")
    if dma_map_direct(dev):
        dma_direct_unmap_phys(dev, addr, size, dir, attrs)
    else:
        iommu_dma_unmap_phys(dev, addr, size, dir, attrs)
    if dev.machine.trace.enabled:
        trace_dma_unmap_phys(dev, addr, size, dir, attrs)
    if dev.machine.dma_debug.enabled:
        debug_dma_unmap_phys(dev, addr, size, dir)
    return 0


# ---- GIL-free paths ---------------------------------------------------------------------------------
# dma_map_phys_fast_run / dma_unmap_phys_fast_run run c_dma_map_phys / c_dma_unmap_phys's common
# paths (dma-direct without bouncing; dma-iommu with an rcache hit, strict unmaps, lazy unmaps
# onto an armed flush queue) in C without the GIL, when nothing Python must see can happen: no
# dma-debug, no tracing, a valid direction, a DMA mask. They do elements i, i+1, ... of arrays
# (a batch; one element for dma_map_phys_fast / dma_unmap_phys_fast) and return the index of the
# first element they did not do, having changed nothing for it: the caller runs the full function
# for it with the GIL (c_dma_map_phys_nogil / c_dma_unmap_phys_nogil do that themselves). Checks
# that hold for the whole run (the device, its domain, dma-debug, tracing) are made once per run.
cdef inline bint _nogil_ok(Device dev) noexcept nogil:
    return dev.has_dma_mask and not dev.machine.trace.enabled and not dev.machine.dma_debug.enabled


cdef inline Py_ssize_t dma_map_phys_fast_run(Device dev, const u64 *phys, const u64 *sizes, Py_ssize_t ss,
                                             Py_ssize_t i, Py_ssize_t n, int dir, unsigned long attrs,
                                             u64 *out) noexcept nogil:
    if not valid_dma_direction(dir) or not _nogil_ok(dev):
        return i
    if dma_map_direct(dev):
        while i < n and dma_direct_map_phys_fast(dev, phys[i], sizes[i * ss], dir, attrs, &out[i]):
            i += 1
        return i
    return iommu_dma_map_phys_run(dev, phys, sizes, ss, i, n, dir, attrs, out)


cdef inline int dma_unmap_phys_fast_run(Device dev, const u64 *addrs, const u64 *sizes, Py_ssize_t ss,
                                        Py_ssize_t *pi, Py_ssize_t n, int dir,
                                        unsigned long attrs) except -1 nogil:
    # (the index in and out through pi: an exception leaves it at the element that raised)
    if not valid_dma_direction(dir) or not _nogil_ok(dev):
        return 0
    if dma_map_direct(dev):
        while pi[0] < n and dma_direct_unmap_phys_fast(dev, addrs[pi[0]], sizes[pi[0] * ss], dir, attrs):
            pi[0] += 1
        return 0
    return iommu_dma_unmap_phys_run(dev, addrs, sizes, ss, pi, n, dir, attrs)


cdef inline int dma_map_phys_fast(Device dev, u64 phys, u64 size, int dir, unsigned long attrs,
                                  u64 *out) noexcept nogil:
    """One element: 1 done (*out = the DMA address), 0 not (nothing changed)."""
    return <int>dma_map_phys_fast_run(dev, &phys, &size, 0, 0, 1, dir, attrs, out)


cdef inline int dma_unmap_phys_fast(Device dev, u64 addr, u64 size, int dir,
                                    unsigned long attrs) except -1 nogil:
    """One element: 1 done, 0 not (nothing changed), -1 MemoryError."""
    cdef Py_ssize_t i = 0
    dma_unmap_phys_fast_run(dev, &addr, &size, 0, &i, 1, dir, attrs)
    return <int>i


cdef inline int dma_sync_single_fast(Device dev, u64 addr, u64 size, int dir, bint for_cpu) noexcept nogil:
    """c_dma_sync_single_for_cpu / _for_device without the GIL: 1 done, or 0 having changed nothing
    (a bounce slot to copy, an IOMMU device whose sync needs its phys, dma-debug or tracing on, an
    invalid direction): the caller then runs the full function with the GIL."""
    cdef u64 paddr
    if not valid_dma_direction(dir) or not _nogil_ok(dev):
        return 0
    if dev.dma_skip_sync:                        # !dma_dev_need_sync(dev) (dma-debug is off)
        return 1
    if dma_map_direct(dev):                      # dma_direct_sync_single_for_cpu / _for_device
        paddr = dma_to_phys(dev, addr)
        if is_swiotlb_buffer(dev, paddr):
            return 0
        if not dev.coherent:
            if for_cpu:
                arch_sync_dma_for_cpu(dev, paddr, size, dir)
            else:
                arch_sync_dma_for_device(dev, paddr, size, dir)
        return 1
    if dev.coherent and not dev_use_swiotlb(dev, size, dir):
        return 1                                 # iommu_dma_sync_single_*: nothing to do
    return 0


cdef u64 c_dma_map_phys_nogil(Device dev, u64 phys, u64 size, int dir,
                              unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF nogil:
    """c_dma_map_phys() for callers without the GIL: the C fast path, else the full path with the GIL."""
    cdef u64 addr
    if dma_map_phys_fast(dev, phys, size, dir, attrs, &addr):
        return addr
    with gil:
        machine_guard(dev.machine)
        return c_dma_map_phys(dev, phys, size, dir, attrs)


cdef int c_dma_unmap_phys_nogil(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1 nogil:
    """c_dma_unmap_phys() for callers without the GIL (see c_dma_map_phys_nogil)."""
    if dma_unmap_phys_fast(dev, addr, size, dir, attrs):
        return 0
    with gil:
        machine_guard(dev.machine)
        return c_dma_unmap_phys(dev, addr, size, dir, attrs)


# ---- wrappers: page, single, resource --------------------------------------------------------------
cdef u64 c_dma_map_page_attrs(Device dev, u64 pfn, u64 offset, u64 size, int dir,
                              unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_map_page_attrs(): MMIO is refused silently; a ZONE_DEVICE page WARNs under dma-debug."""
    cdef u64 phys = (pfn << PAGE_SHIFT) + offset           # page_to_phys(page) + offset
    if attrs & DMA_ATTR_MMIO:
        return DMA_MAPPING_ERROR
    if dev.machine.dma_debug.enabled and dev.machine.p2pdma.find_pgmap(pfn << PAGE_SHIFT) >= 0:
        # is_zone_device_page(page): P2PDMA pages are ZONE_DEVICE pages
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_page_attrs(): "
                          "WARN_ON_ONCE(is_zone_device_page(page))", "mapping.c:dma_map_page_attrs:zone_device")
        return DMA_MAPPING_ERROR
    return c_dma_map_phys(dev, phys, size, dir, attrs)


cdef int c_dma_unmap_page_attrs(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1:
    """dma_unmap_page_attrs(): a no-op with DMA_ATTR_MMIO."""
    if attrs & DMA_ATTR_MMIO:
        return 0
    return c_dma_unmap_phys(dev, addr, size, dir, attrs)


cdef u64 c_dma_map_single_attrs(Device dev, u64 ptr, u64 size, int dir,
                                unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_map_single_attrs(): ``ptr`` is the buffer's physical address (never vmalloc memory here)."""
    debug_dma_map_single(dev, ptr, size)
    return c_dma_map_page_attrs(dev, ptr >> PAGE_SHIFT, ptr & (PAGE_SIZE - 1), size, dir, attrs)


cdef u64 c_dma_map_resource(Device dev, u64 phys_addr, u64 size, int dir,
                            unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_map_resource() = dma_map_phys(... | DMA_ATTR_MMIO); RAM is refused under dma-debug."""
    if dev.machine.dma_debug.enabled and dev.machine.mem.pfn_valid(phys_addr >> PAGE_SHIFT):
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_resource(): "
                          "WARN_ON_ONCE(pfn_valid(PHYS_PFN(phys_addr)))", "mapping.c:dma_map_resource:pfn_valid")
        return DMA_MAPPING_ERROR
    return c_dma_map_phys(dev, phys_addr, size, dir, attrs | DMA_ATTR_MMIO)


cdef int c_dma_unmap_resource(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1:
    """dma_unmap_resource() = dma_unmap_phys(... | DMA_ATTR_MMIO)."""
    return c_dma_unmap_phys(dev, addr, size, dir, attrs | DMA_ATTR_MMIO)


cdef int c_dma_mapping_error(Device dev, u64 dma_addr) except? -9999:
    """dma_mapping_error(): -ENOMEM for DMA_MAPPING_ERROR, else 0 (and tells dma-debug it was checked)."""
    debug_dma_mapping_error(dev, dma_addr)
    if dma_addr == DMA_MAPPING_ERROR:
        return -ENOMEM
    return 0


# ---- scatter-gather -----------------------------------------------------------------------------------
cdef int c_dma_map_sg_attrs(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except? -9999:
    """__dma_map_sg_attrs(): mapped count or -EINVAL / -ENOMEM / -EIO / -EREMOTEIO."""
    cdef int ents
    bug_on_dir(dir, "__dma_map_sg_attrs")
    if not dev.has_dma_mask:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: __dma_map_sg_attrs(): "
                          "WARN_ON_ONCE(!dev->dma_mask)", "mapping.c:__dma_map_sg_attrs:!dma_mask")
        return 0
    if dma_map_direct(dev):
        ents = dma_direct_map_sg(dev, sg, nents, dir, attrs)
    else:
        ents = iommu_dma_map_sg(dev, sg, nents, dir, attrs)
    if ents > 0:
        trace_dma_map_sg(dev, sg, nents, ents, dir, attrs)
        debug_dma_map_sg(dev, sg, nents, ents, dir, attrs)
    elif ents != -EINVAL and ents != -ENOMEM and ents != -EIO and ents != -EREMOTEIO:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: __dma_map_sg_attrs(): "
                          "WARN_ON_ONCE(ents != -EINVAL && ents != -ENOMEM && ents != -EIO && "
                          f"ents != -EREMOTEIO) (ents {ents})", "mapping.c:__dma_map_sg_attrs:ents")
        trace_dma_map_sg_err(dev, sg, nents, ents, dir, attrs)
        return -EIO
    return ents


cdef int c_dma_unmap_sg_attrs(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except -1:
    """dma_unmap_sg_attrs(): trace and dma-debug see the list before it is unmapped."""
    bug_on_dir(dir, "dma_unmap_sg_attrs")
    trace_dma_unmap_sg(dev, sg, nents, dir, attrs)
    debug_dma_unmap_sg(dev, sg, nents, dir)
    if dma_map_direct(dev):
        dma_direct_unmap_sg(dev, sg, nents, dir, attrs)
    else:
        iommu_dma_unmap_sg(dev, sg, nents, dir, attrs)
    return 0


cdef int c_dma_map_sgtable(Device dev, ScatterList sgt, int dir, unsigned long attrs) except? -9999:
    """dma_map_sgtable(): 0 (sgt->nents set) or a negative errno."""
    cdef int nents = c_dma_map_sg_attrs(dev, sgt, sgt.orig_nents, dir, attrs)
    if nents < 0:
        return nents
    sgt.nents = nents
    return 0


# ---- syncs ---------------------------------------------------------------------------------------------
cdef int __dma_sync_single_for_cpu(Device dev, u64 addr, u64 size, int dir) except -1:
    bug_on_dir(dir, "__dma_sync_single_for_cpu")
    if dma_map_direct(dev):
        dma_direct_sync_single_for_cpu(dev, addr, size, dir)
    else:
        iommu_dma_sync_single_for_cpu(dev, addr, size, dir)
    trace_dma_sync_single_for_cpu(dev, addr, size, dir)
    debug_dma_sync_single_for_cpu(dev, addr, size, dir)
    return 0


cdef int __dma_sync_single_for_device(Device dev, u64 addr, u64 size, int dir) except -1:
    bug_on_dir(dir, "__dma_sync_single_for_device")
    if dma_map_direct(dev):
        dma_direct_sync_single_for_device(dev, addr, size, dir)
    else:
        iommu_dma_sync_single_for_device(dev, addr, size, dir)
    trace_dma_sync_single_for_device(dev, addr, size, dir)
    debug_dma_sync_single_for_device(dev, addr, size, dir)
    return 0


cdef int c_dma_sync_single_for_cpu(Device dev, u64 addr, u64 size, int dir) except -1:
    """dma_sync_single_for_cpu(): skipped entirely when !dma_dev_need_sync(dev)."""
    if dma_dev_need_sync(dev):
        __dma_sync_single_for_cpu(dev, addr, size, dir)
    return 0


cdef int c_dma_sync_single_for_device(Device dev, u64 addr, u64 size, int dir) except -1:
    """dma_sync_single_for_device(): skipped entirely when !dma_dev_need_sync(dev)."""
    if dma_dev_need_sync(dev):
        __dma_sync_single_for_device(dev, addr, size, dir)
    return 0


cdef int c_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nelems, int dir) except -1:
    """dma_sync_sg_for_cpu() → __dma_sync_sg_for_cpu() when dma_dev_need_sync()."""
    if not dma_dev_need_sync(dev):
        return 0
    bug_on_dir(dir, "__dma_sync_sg_for_cpu")
    if dma_map_direct(dev):
        dma_direct_sync_sg_for_cpu(dev, sg, nelems, dir)
    else:
        iommu_dma_sync_sg_for_cpu(dev, sg, nelems, dir)
    trace_dma_sync_sg_for_cpu(dev, sg, nelems, dir)
    debug_dma_sync_sg_for_cpu(dev, sg, nelems, dir)
    return 0


cdef int c_dma_sync_sg_for_device(Device dev, ScatterList sg, int nelems, int dir) except -1:
    """dma_sync_sg_for_device() → __dma_sync_sg_for_device() when dma_dev_need_sync()."""
    if not dma_dev_need_sync(dev):
        return 0
    bug_on_dir(dir, "__dma_sync_sg_for_device")
    if dma_map_direct(dev):
        dma_direct_sync_sg_for_device(dev, sg, nelems, dir)
    else:
        iommu_dma_sync_sg_for_device(dev, sg, nelems, dir)
    trace_dma_sync_sg_for_device(dev, sg, nelems, dir)
    debug_dma_sync_sg_for_device(dev, sg, nelems, dir)
    return 0


# ---- masks and sizes -------------------------------------------------------------------------------------
cdef bint c_dma_supported(Device dev, u64 mask) noexcept:
    """dma_supported(): dma-iommu devices support any mask; dma-direct asks dma_direct_supported()."""
    if dev.dma_iommu:
        return True
    return dma_direct_supported(dev, mask)


cdef void dma_setup_need_sync(Device dev) noexcept:
    """dma_setup_need_sync(): direct or iommu → skip syncs iff coherent (swiotlb clears it on first bounce)."""
    dev.dma_skip_sync = dev.coherent


cdef int c_dma_set_mask(Device dev, u64 mask) noexcept:
    """dma_set_mask(): 0, or -EIO with no mask pointer or an unsupported mask."""
    if not dev.has_dma_mask or not c_dma_supported(dev, mask):
        return -EIO
    dev._dma_mask = mask                               # (arch_dma_set_mask: nothing)
    dma_setup_need_sync(dev)
    return 0


cdef int c_dma_set_coherent_mask(Device dev, u64 mask) noexcept:
    """dma_set_coherent_mask(): 0 or -EIO (no mask-pointer check)."""
    if not c_dma_supported(dev, mask):
        return -EIO
    dev.coherent_dma_mask = mask
    return 0


cdef u64 c_dma_get_required_mask(Device dev) noexcept:
    """dma_get_required_mask()."""
    if dma_alloc_direct(dev):
        return dma_direct_get_required_mask(dev)
    return DMA_BIT_MASK_c(32)                          # use_dma_iommu()


cdef bint dma_addressing_limited_c(Device dev) noexcept:
    """dma_addressing_limited()."""
    if min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit) < c_dma_get_required_mask(dev):
        return True                                    # (+ dev_dbg "device is DMA addressing limited")
    if dev.dma_iommu:
        return False
    return not dma_direct_all_ram_mapped(dev)


cdef u64 c_dma_max_mapping_size(Device dev) except? 0:
    """dma_max_mapping_size()."""
    if dma_map_direct(dev):
        return dma_direct_max_mapping_size(dev)
    return iommu_dma_max_mapping_size(dev)


cdef u64 c_dma_opt_mapping_size(Device dev) except? 0:
    """dma_opt_mapping_size(): min(dma_max_mapping_size, iommu_dma_opt_mapping_size() for dma-iommu)."""
    cdef u64 size = U64_MAX
    cdef u64 max_size
    if dev.dma_iommu:
        size = PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)   # iova_rcache_range()
    max_size = c_dma_max_mapping_size(dev)
    return max_size if max_size < size else size


cdef bint c_dma_need_sync(Device dev, u64 dma_addr) noexcept:
    """dma_need_sync(): false when !dma_dev_need_sync(); else __dma_need_sync()."""
    if not dma_dev_need_sync(dev):
        return False
    if dma_map_direct(dev):
        return dma_direct_need_sync(dev, dma_addr)
    return True


cdef bint c_dma_need_unmap(Device dev) noexcept:
    """dma_need_unmap()."""
    if not dma_map_direct(dev):
        return True
    if not dev.dma_skip_sync:
        return True
    return dev.machine.dma_debug.enabled


# ---- coherent allocations ----------------------------------------------------------------------------------
cdef u64 c_dma_alloc_attrs(Device dev, u64 size, u64 *dma_handle, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF:
    """dma_alloc_attrs(): CPU physical address of the buffer, U64_MAX for NULL (*dma_handle set on success)."""
    cdef u64 phys
    if dev.coherent_dma_mask == 0:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_alloc_attrs(): "
                          "WARN_ON_ONCE(!dev->coherent_dma_mask)", "mapping.c:dma_alloc_attrs:!coherent_dma_mask")
    dma_handle[0] = DMA_MAPPING_ERROR
    if dma_alloc_direct(dev):
        phys = dma_direct_alloc(dev, size, dma_handle, attrs)
    else:
        phys = U64_MAX
        dma_handle[0] = iommu_dma_alloc(dev, size, &phys, attrs)
        if dma_handle[0] == DMA_MAPPING_ERROR:
            phys = U64_MAX
    trace_dma_alloc(dev, phys, dma_handle[0], size, DMA_BIDIRECTIONAL, attrs)
    debug_dma_alloc_coherent(dev, size, dma_handle[0], phys, attrs)    # ignores NULL (U64_MAX)
    return phys


cdef int c_dma_free_attrs(Device dev, u64 size, u64 phys, u64 dma_handle, unsigned long attrs) except -1:
    """dma_free_attrs(): ``phys`` U64_MAX is a NULL cpu_addr (traced, nothing freed)."""
    trace_dma_free(dev, phys, dma_handle, size, DMA_BIDIRECTIONAL, attrs)
    if phys == U64_MAX:
        return 0
    debug_dma_free_coherent(dev, size, phys, dma_handle)
    if dma_alloc_direct(dev):
        dma_direct_free(dev, size, phys, dma_handle, attrs)
    else:
        iommu_dma_free(dev, size, phys, dma_handle, attrs)
    return 0


# =====================================================================================================
# Python entry points (kernel names, kernel argument order, kernel return values)
# =====================================================================================================

def dma_map_phys(Device dev not None, phys, size, dir, attrs=0):
    """dma_map_phys(dev, phys, size, dir, attrs) -> dma_addr_t

    Models kernel/dma/mapping.c:dma_map_phys(). Map ``size`` bytes at CPU physical address ``phys``
    for streaming DMA in direction ``dir``. Returns the bus address, or DMA_MAPPING_ERROR (check
    with dma_mapping_error()). Raises KernelBug for an invalid ``dir``
    (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument or a removed
    device (or a ``phys + size`` that wraps). Warns KernelWarning for the kernel's WARNs and
    DmaDebugWarning for dma-debug reports (DmaDebugError instead when ``m.dma_debug.raise_errors``
    is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 p = _arg_u64(phys, "phys")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    _check_span(p, s, "phys")
    cdef u64 addr
    if dma_map_phys_fast(dev, p, s, d, a, &addr):     # the C fast path: nothing to flush
        return addr
    try:
        return c_dma_map_phys(dev, p, s, d, a)
    finally:
        _iova_flush(dev.machine)                       # flush_warnings() when anything is queued


def dma_unmap_phys(Device dev not None, addr, size, dir, attrs=0):
    """dma_unmap_phys(dev, addr, size, dir, attrs)

    Models kernel/dma/mapping.c:dma_unmap_phys(): undo dma_map_phys() (same size, dir, attrs).
    Returns None. Raises KernelBug for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))) or for
    an address in the swiotlb pool that does not start a bounce buffer (swiotlb_release_slots),
    TypeError / ValueError for a bad argument or a removed device. Warns DmaDebugWarning for
    dma-debug reports (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    if dma_unmap_phys_fast(dev, ad, s, d, a):
        return
    try:
        c_dma_unmap_phys(dev, ad, s, d, a)
    finally:
        _iova_flush(dev.machine)


# ---- the per-call pair's C entry (issue 10 item 2) ----------------------------------------------
# A driver's per-buffer dma_map_phys / dma_unmap_phys is two Python calls; what they cost besides
# the mapping is the call itself: Cython's argument parsing, the conversions, the guard. So the
# two functions get a C entry in front of their def: the vectorcall slot of the function objects
# above (tp_vectorcall_offset, the slot every CPython call goes through) points to
# _dma_map_phys_vc / _dma_unmap_phys_vc, which take the common case -- positional arguments, an
# exact Device, plain ints, a live device and a machine no other thread owns, a valid direction and
# known attrs, then the single-element fast paths the batch loops use (dma_map_phys_fast /
# dma_unmap_phys_fast: no bounce, no warning, trace event or dma-debug record) -- in C, and
# hand every other call, unchanged, to the def through the slot's previous value. The fast paths
# change nothing when they decline, so the def then does exactly what it did alone: the same
# checks in the same order, the same exceptions, warnings, records and trace events.
cdef extern from *:
    """
    typedef PyObject *(*dmaphys_vcfunc)(PyObject *, PyObject *const *, size_t, PyObject *);
    /* Put vc in the vectorcall slot of f (a Cython function object); *orig = the previous one.
       0 (nothing changed) when f has no vectorcall slot. */
    static int dmaphys_vc_swap(PyObject *f, void *vc, void **orig) {
        PyTypeObject *t = Py_TYPE(f);
        dmaphys_vcfunc *slot;
        if (!PyType_HasFeature(t, Py_TPFLAGS_HAVE_VECTORCALL) || t->tp_vectorcall_offset <= 0)
            return 0;
        slot = (dmaphys_vcfunc *)((char *)f + t->tp_vectorcall_offset);
        if (*slot == NULL)
            return 0;
        *orig = (void *)*slot;
        *slot = (dmaphys_vcfunc)vc;
        return 1;
    }
    static inline PyObject *dmaphys_vc_call(void *vc, PyObject *f, PyObject **args, size_t nargsf,
                                            PyObject *kwnames) {
        return ((dmaphys_vcfunc)vc)(f, (PyObject *const *)args, nargsf, kwnames);
    }
    static inline PyObject *dmaphys_newref(PyObject *o) { Py_INCREF(o); return o; }
    """
    int _vc_swap "dmaphys_vc_swap"(object f, void *vc, void **orig) noexcept
    PyObject *_vc_call "dmaphys_vc_call"(void *vc, PyObject *f, PyObject **args, size_t nargsf,
                                         PyObject *kwnames) noexcept
    PyObject *_newref "dmaphys_newref"(PyObject *o) noexcept
    bint _exact_u64p "dmaphys_exact_u64"(PyObject *v, u64 *out) noexcept
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf) noexcept
    PyObject *PyLong_FromUnsignedLongLong_p "PyLong_FromUnsignedLongLong"(unsigned long long v) noexcept
    PyObject *Py_None_p "Py_None"
    ctypedef struct PyTypeObject
    PyTypeObject *Py_TYPE_p "Py_TYPE"(PyObject *o) noexcept


cdef void *_dma_map_phys_def = NULL       # the vectorcall entries the two defs had
cdef void *_dma_unmap_phys_def = NULL


cdef inline bint _pair_args_fast(PyObject **args, Py_ssize_t nargs, PyObject *kwnames, u64 *a1,
                                 u64 *size, int *dir, unsigned long *attrs) noexcept:
    """The arguments of a pair call the C entry takes: (dev, a1, size, dir[, attrs]) by
    position, an exact Device that is live on a machine no other thread owns (machine_guard and
    _dev_live have nothing to do), plain ints, a direction that fits an int, known attrs."""
    cdef u64 d, a = 0
    cdef Device dev
    if kwnames != NULL or (nargs != 5 and nargs != 4):
        return False
    if Py_TYPE_p(args[0]) != <PyTypeObject *>Device:
        return False
    dev = <Device>args[0]
    if dev.machine._busy_thread != 0 or dev.removed:
        return False
    if not (_exact_u64p(args[1], a1) and _exact_u64p(args[2], size) and _exact_u64p(args[3], &d)):
        return False
    if nargs == 5 and not _exact_u64p(args[4], &a):
        return False
    if d > DMA_NONE or (a & ~(<u64>DMA_ATTR_ALL)):
        return False
    dir[0] = <int>d
    attrs[0] = <unsigned long>a
    return True


cdef PyObject *_dma_map_phys_vc(PyObject *func, PyObject **args, size_t nargsf, PyObject *kwnames) noexcept:
    cdef Py_ssize_t nargs = PyVectorcall_NARGS(nargsf)
    cdef u64 p, s, addr
    cdef int d
    cdef unsigned long a
    if (_pair_args_fast(args, nargs, kwnames, &p, &s, &d, &a) and not (s and p + s - 1 < p)
            and dma_map_phys_fast(<Device>args[0], p, s, d, a, &addr)):
        if addr == p:
            return _newref(args[1])              # dma-direct's identity map: the caller's int
        return PyLong_FromUnsignedLongLong_p(addr)
    return _vc_call(_dma_map_phys_def, func, args, nargsf, kwnames)


cdef PyObject *_dma_unmap_phys_vc(PyObject *func, PyObject **args, size_t nargsf,
                                  PyObject *kwnames) except NULL:
    # (except NULL: the fast path's MemoryError -- a magazine for the rcache -- propagates)
    cdef Py_ssize_t nargs = PyVectorcall_NARGS(nargsf)
    cdef u64 ad, s
    cdef int d
    cdef unsigned long a
    if (_pair_args_fast(args, nargs, kwnames, &ad, &s, &d, &a)
            and dma_unmap_phys_fast(<Device>args[0], ad, s, d, a)):
        return _newref(Py_None_p)
    return _vc_call(_dma_unmap_phys_def, func, args, nargsf, kwnames)


# (False on an interpreter whose function objects have no vectorcall slot: the defs alone, slower)
_PERCALL_C_ENTRY = bool(_vc_swap(dma_map_phys, <void *>_dma_map_phys_vc, &_dma_map_phys_def)
                        and _vc_swap(dma_unmap_phys, <void *>_dma_unmap_phys_vc, &_dma_unmap_phys_def))


def dma_map_page_attrs(Device dev not None, pfn, offset, size, dir, attrs=0):
    """dma_map_page_attrs(dev, pfn, offset, size, dir, attrs) -> dma_addr_t

    Models kernel/dma/mapping.c:dma_map_page_attrs(); the struct page is given by its page frame
    number. Returns the bus address or DMA_MAPPING_ERROR (always, silently, with DMA_ATTR_MMIO).
    Raises KernelBug for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError /
    ValueError for a bad argument or a removed device (also a ``pfn`` with no struct page). Warns
    KernelWarning for the kernel's WARNs and DmaDebugWarning for dma-debug reports (DmaDebugError
    instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 pf = _arg_u64(pfn, "pfn")
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    if pf >> (64 - PAGE_SHIFT):
        raise ValueError(f"pfn {pf:#x} is beyond the physical address space")
    if not dev.machine.mem.pfn_valid(pf) and dev.machine.p2pdma.find_pgmap(pf << PAGE_SHIFT) < 0:
        raise ValueError(f"pfn {pf:#x} has no struct page (neither RAM nor P2PDMA memory)")
    _check_span(pf << PAGE_SHIFT, off, "page")
    _check_span((pf << PAGE_SHIFT) + off, s, "phys")
    try:
        return c_dma_map_page_attrs(dev, pf, off, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_page_attrs(Device dev not None, addr, size, dir, attrs=0):
    """dma_unmap_page_attrs(dev, addr, size, dir, attrs)

    Models kernel/dma/mapping.c:dma_unmap_page_attrs() (nothing at all with DMA_ATTR_MMIO). Returns
    None. Raises KernelBug for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError /
    ValueError for a bad argument or a removed device. Warns DmaDebugWarning for dma-debug reports
    (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_unmap_page_attrs(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_single_attrs(Device dev not None, ptr, size, dir, attrs=0):
    """dma_map_single_attrs(dev, ptr, size, dir, attrs) -> dma_addr_t

    Models include/linux/dma-mapping.h:dma_map_single_attrs(); the "CPU address" ``ptr`` is the
    buffer's physical address (a linear-map address in the kernel). Returns the bus address or
    DMA_MAPPING_ERROR. Raises KernelBug for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))),
    TypeError / ValueError for a bad argument or a removed device (also a ``ptr`` outside the linear
    map). Warns KernelWarning for the kernel's WARNs and DmaDebugWarning for dma-debug reports
    (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 p = _arg_u64(ptr, "ptr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    _check_span(p, s, "ptr")
    if not dev.machine.mem.pfn_valid(p >> PAGE_SHIFT) and dev.machine.p2pdma.find_pgmap(p & ~(<u64>PAGE_SIZE - 1)) < 0:
        raise ValueError(f"ptr {p:#x} is not in the linear map (no struct page)")
    try:
        return c_dma_map_single_attrs(dev, p, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_single_attrs(Device dev not None, addr, size, dir, attrs=0):
    """dma_unmap_single_attrs(dev, addr, size, dir, attrs) = dma_unmap_page_attrs().

    Mirrors include/linux/dma-mapping.h:dma_unmap_single_attrs(). Returns None. Raises KernelBug for
    an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad
    argument or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead
    when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_unmap_page_attrs(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_page(Device dev not None, pfn, offset, size, dir):
    """dma_map_page(dev, pfn, offset, size, dir) = dma_map_page_attrs(..., 0).

    Mirrors the kernel's dma_map_page() macro. Returns and raises as dma_map_page_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_map_page_attrs(dev, pfn, offset, size, dir, 0)


def dma_unmap_page(Device dev not None, addr, size, dir):
    """dma_unmap_page(dev, addr, size, dir) = dma_unmap_page_attrs(..., 0).

    Mirrors the kernel's dma_unmap_page() macro. Returns None; raises as dma_unmap_page_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    dma_unmap_page_attrs(dev, addr, size, dir, 0)


def dma_map_single(Device dev not None, ptr, size, dir):
    """dma_map_single(dev, ptr, size, dir) = dma_map_single_attrs(..., 0).

    Mirrors the kernel's dma_map_single() macro. Returns and raises as dma_map_single_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_map_single_attrs(dev, ptr, size, dir, 0)


def dma_unmap_single(Device dev not None, addr, size, dir):
    """dma_unmap_single(dev, addr, size, dir) = dma_unmap_single_attrs(..., 0).

    Mirrors the kernel's dma_unmap_single() macro. Returns None; raises as dma_unmap_single_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    dma_unmap_single_attrs(dev, addr, size, dir, 0)


def dma_map_resource(Device dev not None, phys_addr, size, dir, attrs=0):
    """dma_map_resource(dev, phys_addr, size, dir, attrs) -> dma_addr_t

    Models kernel/dma/mapping.c:dma_map_resource() = dma_map_phys(... | DMA_ATTR_MMIO) for MMIO
    (e.g. another device's BAR). With dma-debug on, a RAM address is refused (WARN_ON_ONCE). Returns
    the bus address or DMA_MAPPING_ERROR. Raises KernelBug for an invalid ``dir``
    (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument or a removed
    device. Warns KernelWarning for the kernel's WARNs and DmaDebugWarning for dma-debug reports
    (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 p = _arg_u64(phys_addr, "phys_addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    _check_span(p, s, "phys_addr")
    try:
        return c_dma_map_resource(dev, p, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_resource(Device dev not None, addr, size, dir, attrs=0):
    """dma_unmap_resource(dev, addr, size, dir, attrs) = dma_unmap_phys(... | DMA_ATTR_MMIO).

    Mirrors kernel/dma/mapping.c:dma_unmap_resource(). Returns None. Raises KernelBug for an invalid
    ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument or a
    removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead when
    ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_unmap_resource(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_mapping_error(Device dev not None, dma_addr):
    """dma_mapping_error(dev, dma_addr) -> int: -ENOMEM if dma_addr is DMA_MAPPING_ERROR, else 0.

    Mirrors include/linux/dma-mapping.h:dma_mapping_error() (and tells dma-debug the address was
    checked); returns that int. Raises TypeError or ValueError for a bad argument or a removed
    device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(dma_addr, "dma_addr")
    try:
        return c_dma_mapping_error(dev, ad)
    finally:
        dev.machine.flush_warnings()


def dma_map_sg_attrs(Device dev not None, ScatterList sg not None, nents, dir, attrs=0):
    """dma_map_sg_attrs(dev, sg, nents, dir, attrs) -> unsigned int

    Models kernel/dma/mapping.c:dma_map_sg_attrs(): returns the number of DMA segments (dma-direct:
    ``nents``), 0 on any failure. Fills each entry's dma_address / dma_length. Raises KernelBug for
    an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad
    argument or a removed device (also ``nents`` beyond the list). Warns KernelWarning for the
    kernel's WARNs and DmaDebugWarning for dma-debug reports (DmaDebugError instead when
    ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int n = _arg_nents(sg, nents, "nents")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    cdef int ret
    try:
        ret = c_dma_map_sg_attrs(dev, sg, n, d, a)
        return ret if ret > 0 else 0
    finally:
        dev.machine.flush_warnings()


def dma_unmap_sg_attrs(Device dev not None, ScatterList sg not None, nents, dir, attrs=0):
    """dma_unmap_sg_attrs(dev, sg, nents, dir, attrs): nents is the count passed to dma_map_sg.

    Mirrors kernel/dma/mapping.c:dma_unmap_sg_attrs(). Returns None. Raises KernelBug for an invalid
    ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument or a
    removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead when
    ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int n = _arg_nents(sg, nents, "nents")
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_unmap_sg_attrs(dev, sg, n, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_sg(Device dev not None, ScatterList sg not None, nents, dir):
    """dma_map_sg(dev, sg, nents, dir) = dma_map_sg_attrs(..., 0).

    Mirrors the kernel's dma_map_sg() macro. Returns and raises as dma_map_sg_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_map_sg_attrs(dev, sg, nents, dir, 0)


def dma_unmap_sg(Device dev not None, ScatterList sg not None, nents, dir):
    """dma_unmap_sg(dev, sg, nents, dir) = dma_unmap_sg_attrs(..., 0).

    Mirrors the kernel's dma_unmap_sg() macro. Returns None; raises as dma_unmap_sg_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    dma_unmap_sg_attrs(dev, sg, nents, dir, 0)


def dma_map_sgtable(Device dev not None, ScatterList sgt not None, dir, attrs=0):
    """dma_map_sgtable(dev, sgt, dir, attrs) -> int

    Models kernel/dma/mapping.c:dma_map_sgtable(): maps sgt.orig_nents entries; returns 0 with
    sgt.nents set, or -EINVAL / -ENOMEM / -EIO / -EREMOTEIO. Raises KernelBug for an invalid ``dir``
    (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument or a removed
    device. Warns KernelWarning for the kernel's WARNs and DmaDebugWarning for dma-debug reports
    (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        return c_dma_map_sgtable(dev, sgt, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_sgtable(Device dev not None, ScatterList sgt not None, dir, attrs=0):
    """dma_unmap_sgtable(dev, sgt, dir, attrs) = dma_unmap_sg_attrs(dev, sgt, sgt.orig_nents, ...).

    Mirrors include/linux/dma-mapping.h:dma_unmap_sgtable(). Returns None. Raises KernelBug for an
    invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument
    or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead when
    ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int d = _arg_dir(dir)
    cdef unsigned long a = _arg_attrs(attrs)
    try:
        c_dma_unmap_sg_attrs(dev, sgt, sgt.orig_nents, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_for_cpu(Device dev not None, addr, size, dir):
    """dma_sync_single_for_cpu(dev, addr, size, dir): give the buffer to the CPU (bounce slot → memory).

    Mirrors include/linux/dma-mapping.h:dma_sync_single_for_cpu(). Returns None. Raises KernelBug
    for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad
    argument or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead
    when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_single_for_cpu(dev, ad, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_for_device(Device dev not None, addr, size, dir):
    """dma_sync_single_for_device(dev, addr, size, dir): give the buffer back to the device.

    Mirrors include/linux/dma-mapping.h:dma_sync_single_for_device(). Returns None. Raises KernelBug
    for an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad
    argument or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead
    when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_single_for_device(dev, ad, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_range_for_cpu(Device dev not None, addr, offset, size, dir):
    """dma_sync_single_range_for_cpu(dev, addr, offset, size, dir) = sync of (addr + offset, size).

    Mirrors the kernel's dma_sync_single_range_for_cpu(). Returns None; raises as
    dma_sync_single_for_cpu().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_single_for_cpu(dev, ad + off, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_range_for_device(Device dev not None, addr, offset, size, dir):
    """dma_sync_single_range_for_device(dev, addr, offset, size, dir) = sync of (addr + offset, size).

    Mirrors the kernel's dma_sync_single_range_for_device(). Returns None; raises as
    dma_sync_single_for_device().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 ad = _arg_u64(addr, "addr")
    cdef u64 off = _arg_u64(offset, "offset")
    cdef u64 s = _arg_u64(size, "size")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_single_for_device(dev, ad + off, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sg_for_cpu(Device dev not None, ScatterList sg not None, nelems, dir):
    """dma_sync_sg_for_cpu(dev, sg, nelems, dir): nelems is the count passed to dma_map_sg.

    Mirrors include/linux/dma-mapping.h:dma_sync_sg_for_cpu(). Returns None. Raises KernelBug for an
    invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad argument
    or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead when
    ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int n = _arg_nents(sg, nelems, "nelems")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_sg_for_cpu(dev, sg, n, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sg_for_device(Device dev not None, ScatterList sg not None, nelems, dir):
    """dma_sync_sg_for_device(dev, sg, nelems, dir): nelems is the count passed to dma_map_sg.

    Mirrors include/linux/dma-mapping.h:dma_sync_sg_for_device(). Returns None. Raises KernelBug for
    an invalid ``dir`` (BUG_ON(!valid_dma_direction(dir))), TypeError / ValueError for a bad
    argument or a removed device. Warns DmaDebugWarning for dma-debug reports (DmaDebugError instead
    when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int n = _arg_nents(sg, nelems, "nelems")
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_sg_for_device(dev, sg, n, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sgtable_for_cpu(Device dev not None, ScatterList sgt not None, dir):
    """dma_sync_sgtable_for_cpu(dev, sgt, dir) = dma_sync_sg_for_cpu(dev, sgt, sgt.orig_nents, dir).

    Mirrors the kernel's dma_sync_sgtable_for_cpu(). Returns None; raises as dma_sync_sg_for_cpu().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_sg_for_cpu(dev, sgt, sgt.orig_nents, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sgtable_for_device(Device dev not None, ScatterList sgt not None, dir):
    """dma_sync_sgtable_for_device(dev, sgt, dir) = dma_sync_sg_for_device(dev, sgt, sgt.orig_nents, dir).

    Mirrors the kernel's dma_sync_sgtable_for_device(). Returns None; raises as
    dma_sync_sg_for_device().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef int d = _arg_dir(dir)
    try:
        c_dma_sync_sg_for_device(dev, sgt, sgt.orig_nents, d)
    finally:
        dev.machine.flush_warnings()


def dma_set_mask(Device dev not None, mask):
    """dma_set_mask(dev, mask) -> int: 0, or -EIO (no dev->dma_mask, or the mask is not supported).

    Mirrors kernel/dma/mapping.c:dma_set_mask(); returns 0 or -EIO. Raises TypeError or ValueError
    for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_set_mask(dev, _arg_u64(mask, "mask"))


def dma_set_coherent_mask(Device dev not None, mask):
    """dma_set_coherent_mask(dev, mask) -> int: 0 or -EIO.

    Mirrors kernel/dma/mapping.c:dma_set_coherent_mask(); returns 0 or -EIO. Raises TypeError or
    ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_set_coherent_mask(dev, _arg_u64(mask, "mask"))


def dma_set_mask_and_coherent(Device dev not None, mask):
    """dma_set_mask_and_coherent(dev, mask) -> int: dma_set_mask(), then the coherent mask if that worked.

    Mirrors include/linux/dma-mapping.h:dma_set_mask_and_coherent(); returns 0 or -EIO. Raises
    TypeError or ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 m = _arg_u64(mask, "mask")
    cdef int rc = c_dma_set_mask(dev, m)
    if rc == 0:
        c_dma_set_coherent_mask(dev, m)
    return rc


def dma_get_mask(Device dev not None):
    """dma_get_mask(dev): *dev->dma_mask if set and non-zero, else DMA_BIT_MASK(32).

    Mirrors include/linux/dma-mapping.h:dma_get_mask(); returns that int. Raises TypeError or
    ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_get_mask_c(dev)


def dma_supported(Device dev not None, mask):
    """dma_supported(dev, mask) -> bool (kernel/dma/mapping.c, static there).

    Models kernel/dma/mapping.c:dma_supported(). Returns whether the device can use ``mask``. Raises TypeError or ValueError for a bad argument
    or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_supported(dev, _arg_u64(mask, "mask"))


def dma_get_required_mask(Device dev not None):
    """dma_get_required_mask(dev): the mask needed to reach all of RAM without bouncing.

    Mirrors kernel/dma/mapping.c:dma_get_required_mask(); returns that int. Raises TypeError or
    ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_get_required_mask(dev)


def dma_max_mapping_size(Device dev not None):
    """dma_max_mapping_size(dev): the largest single mapping (swiotlb's limit when it may bounce).

    Mirrors kernel/dma/mapping.c:dma_max_mapping_size(); returns that size in bytes. Raises
    TypeError or ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_max_mapping_size(dev)


def dma_opt_mapping_size(Device dev not None):
    """dma_opt_mapping_size(dev): the largest mapping size without a performance penalty.

    Mirrors kernel/dma/mapping.c:dma_opt_mapping_size(); returns that size in bytes. Raises
    TypeError or ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_opt_mapping_size(dev)


def dma_need_sync(Device dev not None, dma_addr):
    """dma_need_sync(dev, dma_addr) -> bool: must the driver call the dma_sync_* functions?

    Mirrors include/linux/dma-mapping.h:dma_need_sync(); returns that bool. Raises TypeError or
    ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_need_sync(dev, _arg_u64(dma_addr, "dma_addr"))


def dma_need_unmap(Device dev not None):
    """dma_need_unmap(dev) -> bool: must the driver keep the DMA address to unmap it?

    Mirrors kernel/dma/mapping.c:dma_need_unmap(); returns that bool. Raises TypeError or ValueError
    for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return c_dma_need_unmap(dev)


def dma_addressing_limited(Device dev not None):
    """dma_addressing_limited(dev) -> bool: can the device not reach all of RAM directly?

    Mirrors kernel/dma/mapping.c:dma_addressing_limited(); returns that bool. Raises TypeError or
    ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_addressing_limited_c(dev)


def dma_get_max_seg_size(Device dev not None):
    """dma_get_max_seg_size(dev): dma_parms->max_segment_size, else SZ_64K.

    Mirrors include/linux/dma-mapping.h:dma_get_max_seg_size(); returns that int. Raises TypeError
    or ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dev.max_segment_size if dev.max_segment_size else 65536


def dma_get_seg_boundary(Device dev not None):
    """dma_get_seg_boundary(dev): dma_parms->segment_boundary_mask, else ULONG_MAX.

    Mirrors include/linux/dma-mapping.h:dma_get_seg_boundary(); returns that int. Raises TypeError
    or ValueError for a bad argument or a removed device; nothing else.
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dev.seg_boundary_mask if dev.seg_boundary_mask else U64_MAX


def dma_alloc_attrs(Device dev not None, size, attrs=0):
    """dma_alloc_attrs(dev, size, attrs) -> (cpu_addr, dma_handle) or None

    Models kernel/dma/mapping.c:dma_alloc_attrs() (dma-direct: zeroed pages the device can reach
    through its coherent mask, bus limit and dma_range_map). Returns ``(cpu_addr, dma_handle)`` with
    ``cpu_addr`` the buffer's physical address, or None (the kernel's NULL). GFP flags are not
    modelled. Raises TypeError / ValueError for a bad argument or a removed device (also a zero or
    implausibly large ``size``). Warns KernelWarning for the kernel's WARNs and DmaDebugWarning for
    dma-debug reports (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 s = _arg_u64(size, "size")
    cdef unsigned long a = _arg_attrs(attrs)
    cdef u64 handle = DMA_MAPPING_ERROR
    cdef u64 phys
    if s == 0 or s > ((<u64>1) << 48):
        raise ValueError(f"size {s:#x} is not a plausible allocation size")
    try:
        phys = c_dma_alloc_attrs(dev, s, &handle, a)
        if phys == U64_MAX:
            return None
        return (phys, handle)
    finally:
        dev.machine.flush_warnings()


def dma_free_attrs(Device dev not None, size, cpu_addr, dma_handle, attrs=0):
    """dma_free_attrs(dev, size, cpu_addr, dma_handle, attrs): free a dma_alloc_attrs() buffer.

    Mirrors kernel/dma/mapping.c:dma_free_attrs(); returns None. ``cpu_addr`` None is the kernel's
    NULL (only traced). Raises TypeError / ValueError for a bad argument or a removed device,
    including freeing something that is not a buffer of this size (the kernel would corrupt its page
    allocator). Warns KernelWarning for the kernel's WARNs and DmaDebugWarning for dma-debug reports
    (DmaDebugError instead when ``m.dma_debug.raise_errors`` is set).
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    cdef u64 s = _arg_u64(size, "size")
    cdef u64 phys = U64_MAX if cpu_addr is None else _arg_u64(cpu_addr, "cpu_addr")
    cdef u64 h = _arg_u64(dma_handle, "dma_handle")
    cdef unsigned long a = _arg_attrs(attrs)
    cdef u64 npages = ((s + PAGE_SIZE - 1) >> PAGE_SHIFT)
    cdef cppmap[u64, u64].iterator it
    if phys != U64_MAX and dma_alloc_direct(dev):
        it = dev.machine.mem.allocated.find(phys >> PAGE_SHIFT)
        if (phys & (PAGE_SIZE - 1) or it == dev.machine.mem.allocated.end()
                or deref(it).second != npages):
            raise ValueError(f"dma_free_attrs: {phys:#x} is not a coherent buffer of {s:#x} bytes")
    try:
        c_dma_free_attrs(dev, s, phys, h, a)
    finally:
        dev.machine.flush_warnings()


def dma_alloc_coherent(Device dev not None, size):
    """dma_alloc_coherent(dev, size) -> (cpu_addr, dma_handle) or None = dma_alloc_attrs(dev, size, 0).

    Mirrors include/linux/dma-mapping.h:dma_alloc_coherent(). Returns and raises as
    dma_alloc_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    return dma_alloc_attrs(dev, size, 0)


def dma_free_coherent(Device dev not None, size, cpu_addr, dma_handle):
    """dma_free_coherent(dev, size, cpu_addr, dma_handle) = dma_free_attrs(..., 0).

    Mirrors include/linux/dma-mapping.h:dma_free_coherent(). Returns None; raises as
    dma_free_attrs().
    """
    machine_guard(dev.machine)
    _dev_live(dev)
    dma_free_attrs(dev, size, cpu_addr, dma_handle, 0)


__all__ += [
    "dma_map_phys", "dma_unmap_phys", "dma_map_page_attrs", "dma_unmap_page_attrs",
    "dma_map_single_attrs", "dma_unmap_single_attrs", "dma_map_page", "dma_unmap_page",
    "dma_map_single", "dma_unmap_single", "dma_map_resource", "dma_unmap_resource",
    "dma_mapping_error", "dma_map_sg_attrs", "dma_unmap_sg_attrs", "dma_map_sg", "dma_unmap_sg",
    "dma_map_sgtable", "dma_unmap_sgtable", "dma_sync_single_for_cpu", "dma_sync_single_for_device",
    "dma_sync_single_range_for_cpu", "dma_sync_single_range_for_device", "dma_sync_sg_for_cpu",
    "dma_sync_sg_for_device", "dma_sync_sgtable_for_cpu", "dma_sync_sgtable_for_device",
    "dma_set_mask", "dma_set_coherent_mask", "dma_set_mask_and_coherent", "dma_get_mask",
    "dma_supported", "dma_get_required_mask", "dma_max_mapping_size", "dma_opt_mapping_size",
    "dma_need_sync", "dma_need_unmap", "dma_addressing_limited", "dma_get_max_seg_size",
    "dma_get_seg_boundary", "dma_alloc_attrs", "dma_free_attrs", "dma_alloc_coherent",
    "dma_free_coherent",
]
