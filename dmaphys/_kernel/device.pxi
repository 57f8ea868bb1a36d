# struct device, its DMA-relevant fields, and what the device does on its bus.
# Mirrors include/linux/device.h (dma_mask, coherent_dma_mask, bus_dma_limit, dma_range_map,
# dma_io_tlb_mem, dma_skip_sync, dma_iommu), include/linux/dma-direct.h (phys_to_dma /
# dma_to_phys through the bus_dma_region list) and the device's side of the bus:
# dma_read/dma_write reach RAM, MMIO or a peer BAR the way hardware would, or fault.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, device.pxd.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


cdef class Device:
    """A DMA master: ``m.add_device(name, dma_mask=..., coherent=..., ...)``.

    Kernel field names: ``dma_mask`` (None models a NULL dev->dma_mask), ``coherent_dma_mask``,
    ``bus_dma_limit``, ``dma_range_map`` ([(cpu_start, dma_start, size)]), ``min_align_mask``
    (dma_parms), ``max_segment_size``, ``seg_boundary_mask``, ``dma_skip_sync``,
    ``dma_uses_io_tlb``; ``coherent`` is dev_is_dma_coherent(); ``force_bounce`` is
    is_swiotlb_force_bounce() for this device.

    Mirrors the DMA fields of struct device (include/linux/device.h: dma_mask, coherent_dma_mask,
    bus_dma_limit, dma_range_map, dma_parms, dma_io_tlb_mem, ...) plus the bus side of a DMA master
    (dma_read / dma_write: what the hardware does). Made by Machine.add_device(); constructing one
    directly takes every field positionally and raises TypeError for missing or mistyped ones,
    ValueError for an untrusted non-PCI device or a dma_range_map entry of size 0.
    """

    def __cinit__(self, Machine machine not None, str name not None, dma_mask, coherent, dma_range_map, bus_dma_limit,
                 force_bounce, min_align_mask, pci, untrusted, max_segment_size, seg_boundary_mask,
                 coherent_dma_mask):
        cdef bus_dma_region r
        self.machine = machine
        self.name = name
        self.has_dma_mask = dma_mask is not None
        self._dma_mask = _u64(dma_mask, "dma_mask") if dma_mask is not None else 0
        self.coherent_dma_mask = (self._dma_mask if coherent_dma_mask is None
                                  else _u64(coherent_dma_mask, "coherent_dma_mask"))
        if coherent_dma_mask is None and not self.has_dma_mask:
            self.coherent_dma_mask = DMA_BIT_MASK_c(32)
        self.bus_dma_limit = _u64(bus_dma_limit, "bus_dma_limit")
        self.coherent = bool(coherent)
        self.force_bounce = bool(force_bounce)
        self.min_align_mask = _u64(min_align_mask, "min_align_mask")
        self.max_segment_size = _u64(max_segment_size, "max_segment_size")
        self.seg_boundary_mask = _u64(seg_boundary_mask, "seg_boundary_mask")
        self.pci = bool(pci)
        self.untrusted = bool(untrusted)
        if self.untrusted and not self.pci:
            raise ValueError("only PCI devices can be untrusted (pdev->untrusted)")
        if dma_range_map:
            for item in dma_range_map:
                cpu_start, dma_start, size = item
                r.cpu_start = _u64(cpu_start, "cpu_start")
                r.dma_start = _u64(dma_start, "dma_start")
                r.size = _u64(size, "size")
                if r.size == 0:
                    raise ValueError("dma_range_map entries must have a non-zero size")
                self.range_map.push_back(r)
        # dma_setup_need_sync(): direct/iommu → skip when coherent
        self.dma_skip_sync = self.coherent
        self.dma_io_tlb_mem = machine.swiotlb
        self.domain = None
        self.dma_iommu = False

    @property
    def dma_mask(self):
        """*dev->dma_mask, or None when the device has no mask pointer.

        Setting None models a NULL pointer; setting an int raises TypeError / ValueError for a
        non-int or one beyond 64 bits (dma_set_mask() is the checked way).
        """
        return self._dma_mask if self.has_dma_mask else None

    @dma_mask.setter
    def dma_mask(self, value):
        if value is None:
            self.has_dma_mask = False
            self._dma_mask = 0
        else:
            self._dma_mask = _u64(value, "dma_mask")
            self.has_dma_mask = True

    @property
    def dma_range_map(self):
        """The bus_dma_region list as [(cpu_start, dma_start, size)], or None.

        Read-only (struct bus_dma_region, dev->dma_range_map).
        """
        if self.range_map.empty():
            return None
        return [(r.cpu_start, r.dma_start, r.size) for r in self.range_map]

    @property
    def stats(self):
        """Simulator counters as a dict: arch_sync_for_device / arch_sync_for_cpu (cache
        maintenance calls), dma_reads, dma_writes, faults (read-only)."""
        return {"arch_sync_for_device": self.arch_sync_for_device,
                "arch_sync_for_cpu": self.arch_sync_for_cpu,
                "dma_reads": self.dma_reads, "dma_writes": self.dma_writes, "faults": self.faults}

    @property
    def capsule(self):
        """A new "dmaphys.device" capsule for the C ABI (include/dmaphys.h); it keeps the device alive.

        Read-only; each read makes a new capsule.
        """
        return _device_capsule(self)

    def __repr__(self):
        return f"<dmaphys.Device {self.name!r} mask={self._dma_mask:#x} coherent={bool(self.coherent)}>"

    # ---- the device on its bus -------------------------------------------------------------
    def dma_read(self, dma_addr, n):
        """What the device reads at bus address ``dma_addr`` (``n`` bytes).

        Simulator-only: a bus master read (the device side; the kernel has no call for it).
        Returns ``n`` bytes. Raises DmaFault where real hardware would reject the access (beyond the
        mask, no target, a removed device), IommuFault for an IOMMU translation or permission fault,
        TypeError / ValueError for bad arguments; for any ``n`` (2**63 included) the access faults
        where it would, and MemoryError only if it would complete with more bytes than the host
        can hold.
        """
        machine_guard(self.machine)
        cdef u64 a = _u64(dma_addr, "dma_addr")
        cdef u64 cnt = _u64(n, "n")
        cdef bytes out = None
        # not zero-filled: host memory is committed only as the device reads, so a huge read
        # that faults early costs what it read, not n bytes
        if cnt <= <u64>PY_SSIZE_T_MAX:
            try:
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>cnt)
            except (MemoryError, OverflowError):          # (OverflowError: just below 2**63)
                out = None
        if out is None:
            # no host buffer holds n bytes: the device's requests still go out and fault where
            # they would (the reference builds its result as it reads), their bytes dropped; a
            # read that would complete cannot be returned
            try:
                device_access(self, a, NULL, cnt, False)
            finally:
                self.machine.flush_warnings()
            raise MemoryError(f"a read of {cnt:#x} bytes does not fit in host memory")
        if cnt:
            try:
                device_access(self, a, <u8 *>PyBytes_AS_STRING(out), cnt, False)
            finally:
                self.machine.flush_warnings()
        self.dma_reads += 1
        return out

    def dma_write(self, dma_addr, data):
        """The device stores ``data`` at bus address ``dma_addr``.

        Simulator-only: a bus master write. Returns None. Raises DmaFault / IommuFault as
        dma_read() does, TypeError / ValueError for bad arguments.
        """
        machine_guard(self.machine)
        cdef u64 a = _u64(dma_addr, "dma_addr")
        cdef const u8[::1] view = _as_bytes_view(data)
        if view.shape[0]:
            try:
                device_access(self, a, <u8 *>&view[0], view.shape[0], True)
            finally:
                self.machine.flush_warnings()
        self.dma_writes += 1

    def translate(self, dma_addr, write=False):
        """The translation of the page holding bus address ``dma_addr``, as QEMU's
        IOMMUTLBEntry (iova, translated_addr, addr_mask, perm), found the way a device read
        (``write=True``: write) of that address is: IOTLB (hits and misses counted, a miss fills
        it), page-table walk; dma-direct devices get the bus-to-phys translation (perm IOMMU_RW).
        ``addr_mask`` is the leaf's size - 1 (a 2 MiB page gives 0x1fffff).

        Simulator-only (QEMU's IOMMUMemoryRegionClass translate(), for embedders). Returns the
        IOMMUTLBEntry. Raises IommuFault where that access would fault (recorded in
        ``iommu.faults``; in fault_mode="record" only recorded, and the returned entry has perm
        IOMMU_NONE), DmaFault where a dma-direct access would fault, TypeError / ValueError for bad
        arguments.
        """
        cdef iommu_tlb_entry e
        cdef u64 a = _u64(dma_addr, "dma_addr")
        try:
            device_translate(self, a, bool(write), &e)
        finally:
            self.machine.flush_warnings()
        return _tlb_entry_obj(&e)

    # batch forms (batch.pxi): the same device_access() per element, in a C loop
    def dma_read_batch(self, addrs, size):
        """dma_read(addrs[i], size) for each i -> ndarray[uint8] (n x size); see batch.pxi.

        Simulator-only. Returns the rows; raises as dma_read_batch() does (DmaFault / IommuFault with
        ``exc.batch_index``, TypeError / ValueError for bad arrays).
        """
        return _dma_read_batch(self, addrs, size)

    def dma_write_batch(self, addrs, data):
        """dma_write(addrs[i], data[i]) for each row of a 2-D uint8 array; see batch.pxi.

        Simulator-only. Returns None; raises as dma_write_batch() does (DmaFault / IommuFault with
        ``exc.batch_index``, TypeError / ValueError for bad arrays).
        """
        _dma_write_batch(self, addrs, data)


# ---- include/linux/dma-direct.h: address translation -----------------------------------------
cdef inline u64 translate_phys_to_dma(Device dev, u64 paddr) noexcept nogil:
    cdef size_t i
    for i in range(dev.range_map.size()):
        if paddr >= dev.range_map[i].cpu_start and paddr - dev.range_map[i].cpu_start < dev.range_map[i].size:
            return paddr - dev.range_map[i].cpu_start + dev.range_map[i].dma_start
    return DMA_MAPPING_ERROR


cdef inline u64 translate_dma_to_phys(Device dev, u64 dma_addr) noexcept nogil:
    cdef size_t i
    for i in range(dev.range_map.size()):
        if dma_addr >= dev.range_map[i].dma_start and dma_addr - dev.range_map[i].dma_start < dev.range_map[i].size:
            return dma_addr - dev.range_map[i].dma_start + dev.range_map[i].cpu_start
    return U64_MAX                                   # (phys_addr_t)-1


cdef inline u64 phys_to_dma(Device dev, u64 paddr) noexcept nogil:
    """phys_to_dma() = phys_to_dma_unencrypted() (no memory encryption is modelled)."""
    if dev.range_map.empty():
        return paddr
    return translate_phys_to_dma(dev, paddr)


cdef inline u64 dma_to_phys(Device dev, u64 dma_addr) noexcept nogil:
    if dev.range_map.empty():
        return dma_addr
    return translate_dma_to_phys(dev, dma_addr)


cdef inline u64 dma_get_mask_c(Device dev) noexcept nogil:
    """dma_get_mask(): *dev->dma_mask if set and non-zero, else DMA_BIT_MASK(32)."""
    if dev.has_dma_mask and dev._dma_mask:
        return dev._dma_mask
    return DMA_BIT_MASK_c(32)


# ---- the bus -----------------------------------------------------------------------------------
cdef inline Device _as_device(object dev):
    """``dev`` as a Device (None and other types: TypeError, as a ``Device dev not None`` argument)."""
    if not isinstance(dev, Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")
    return <Device>dev


cdef inline int _dev_live(Device dev) except -1:
    """DMA-API entry points refuse a device Machine.remove_device() removed (ValueError)."""
    if dev.removed:
        raise ValueError(f"device {dev.name!r} was removed from its machine")
    return 0


cdef int device_access(Device dev, u64 addr, u8 *buf, u64 n, bint write) except -1 nogil:
    """One device-initiated access of n bytes at bus address addr.

    IOMMU-translated devices go through their domain (iommu_device_access in iommu.pxi);
    others put the address on the bus directly: it must be within what the device can drive
    (its mask and bus_dma_limit), may hit a peer BAR's bus window (P2P), and otherwise goes
    through dma_range_map to RAM or MMIO. Anything else is a DmaFault.

    Runs without the GIL; takes it itself for a fault (DmaFault / IommuFault), the P2P
    routing walk when the machine has P2P windows, and dma-debug's view of device writes.
    The common single-page IOTLB-hit access to RAM is done by device_access_fast()
    (iommu.pxi) first; device_access_full() is everything.
    """
    if device_access_fast(dev, addr, buf, n, write):
        return 0
    return device_access_full(dev, addr, buf, n, write)


cdef int device_access_full(Device dev, u64 addr, u8 *buf, u64 n, bint write) except -1 nogil:
    """device_access() without trying device_access_fast() first (the C ABI, having tried it)."""
    cdef u64 last = addr + n - 1
    cdef u64 phys
    if dev.removed:                            # unbound and gone: blocked like IOMMU_DOMAIN_BLOCKED
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, addr, n, "write" if write else "read", "blocked (the device was removed)")
    if last < addr:
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, addr, n, "write" if write else "read", "address wraps")
    if dev.domain is not None and (<IommuDomain>dev.domain).translates:
        phys = _p2p_route(dev, addr, n)        # a switch routes peer requests before the IOMMU
        if phys != U64_MAX:
            return bus_access_phys(dev, phys, buf, n, write)
        return iommu_device_access(dev, addr, buf, n, write)
    return bus_access_phys(dev, direct_bus_to_phys(dev, addr, n, write), buf, n, write)


cdef inline u64 _p2p_route(Device dev, u64 addr, u64 n) noexcept nogil:
    """p2p_bus_to_phys(), with the GIL only when the machine has P2P bus windows at all."""
    cdef u64 phys
    if dev.machine.p2pdma._windows.empty() or dev.p2p_node is None:
        return U64_MAX
    with gil:
        phys = p2p_bus_to_phys(dev, addr, n)
    return phys


cdef u64 direct_bus_to_phys(Device dev, u64 addr, u64 n, bint write) except? 0xFFFFFFFFFFFFFFFF nogil:
    """Where an untranslated request of n bytes at bus address addr goes: it must be within
    what the device can drive (mask, bus_dma_limit), may hit a peer BAR's bus window (P2P),
    else goes through dma_range_map. DmaFault otherwise."""
    cdef u64 last = addr + n - 1
    cdef u64 limit = min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit)
    cdef u64 phys
    if last > limit:
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, addr, n, "write" if write else "read",
                           f"beyond the device's addressing limit {limit:#x}")
    phys = _p2p_route(dev, addr, n)
    if phys == U64_MAX:
        phys = dma_to_phys(dev, addr)
        if phys == U64_MAX or (n > 1 and dma_to_phys(dev, last) != phys + n - 1):
            with gil:
                dev.faults += 1
                raise DmaFault(dev.name, addr, n, "write" if write else "read",
                               "no dma_range_map region translates this bus address")
    return phys


cdef inline int bus_check_phys(Device dev, u64 phys, u64 n, bint write) except -1 nogil:
    """The access reaches the memory system at a CPU physical address: RAM or MMIO, else fault."""
    if dev.machine.mem.find_region(phys, n) < 0:
        with gil:
            dev.faults += 1
            raise DmaFault(dev.name, phys, n, "write" if write else "read",
                           f"no RAM or MMIO at physical address {phys:#x}")
    return 0


cdef int bus_access_phys(Device dev, u64 phys, u8 *buf, u64 n, bint write) except -1 nogil:
    """The access reaches the memory system at a CPU physical address: RAM or MMIO, else fault."""
    bus_check_phys(dev, phys, n, write)
    if write:
        dev.machine.mem.write(phys, buf, n)
        if dev.machine.dma_debug.enabled and not dev.machine.dma_debug.bounced.empty():
            with gil:                          # (device_wrote() returns at once otherwise)
                dev.machine.dma_debug.device_wrote(dev, phys, n)
    elif buf != NULL:                          # NULL: a read whose bytes nobody keeps (Device.dma_read)
        dev.machine.mem.read(phys, buf, n)
    return 0


# ---- include/linux/dma-direct.h: dma_capable() ---------------------------------------------------
cdef inline bint dma_capable(Device dev, u64 addr, u64 size, bint is_ram) noexcept nogil:
    """dma_capable(): the last byte must be <= min_not_zero(*dev->dma_mask, bus_dma_limit)."""
    cdef u64 end = addr + size - 1
    if addr == DMA_MAPPING_ERROR:
        return False
    return end <= min_not_zero(dev._dma_mask, dev.bus_dma_limit)


# ---- arch cache maintenance (arch_sync_dma_for_device / _for_cpu): counted; the clean only acts ---
# on the CPU's dirty lines of non-coherently walked page tables (PhysMem.wb), the one place the
# simulated CPU keeps a write-back cache (everything else is modelled as already clean)
cdef inline void arch_sync_dma_for_device(Device dev, u64 paddr, u64 size, int dir) noexcept nogil:
    dev.arch_sync_for_device += 1
    if not dev.machine.mem.wb.empty():           # arm64: dcache_clean_poc() whatever the direction
        dev.machine.mem.wb_clean(paddr, size)


cdef inline void arch_sync_dma_for_cpu(Device dev, u64 paddr, u64 size, int dir) noexcept nogil:
    dev.arch_sync_for_cpu += 1
