# The simulated machine: physical memory, CPUs, a virtual clock with timers, the default
# swiotlb pool, devices, IOMMUs, dma-debug and tracing. Stands in for the platform code that
# the kernel's DMA layer runs on (setup_arch, swiotlb_init, the device model).
#
# Kernel WARNs and dev_warns are queued by the core with Machine.kwarn() and emitted as
# Python warnings by Machine.flush_warnings() when the entry point returns, so a warning that
# a test turns into an exception never interrupts a half-done operation.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, machine.pxd.

from cpython.pythread cimport (PyThread_allocate_lock, PyThread_free_lock, PyThread_acquire_lock,
                               PyThread_release_lock, PyThread_get_thread_ident, WAIT_LOCK, NOWAIT_LOCK)

import heapq as _heapq
from dmaphys._embed import ram_buffer_nbytes as _ram_buffer_nbytes, check_ram_removable as _check_ram_removable
import logging as _logging
import warnings as _warnings

_log = _logging.getLogger("dmaphys")

DEFAULT_RAM = [(0, 3 << 30), (4 << 30, 13 << 30)]
# m.warnings_log and m.dma_debug.errors keep the first this many records and count the rest
# (warnings_dropped, errors_dropped): a long run that warns per call stays in bounded memory
LOG_RECORDS_MAX = 10000


cdef class Machine:
    """A simulated machine: ``Machine(ram=[(base, size), ...], cpus=4, swiotlb="auto")``.

    ``swiotlb``: "auto" sets up the default bounce pool (64 MiB below 4 GiB, like
    swiotlb_init on x86) when RAM extends above 4 GiB or ``swiotlb_force`` is set; an int
    gives the pool size in bytes; 0/False/None disables it. ``swiotlb_nareas`` overrides the
    area count (default: ``cpus``, rounded as swiotlb_adjust_nareas does).

    Simulator-only: one kernel instance (its RAM, CPUs, clock, devices, IOMMUs, io_tlb_default_mem,
    dma-debug and tracing state); swiotlb is set up like swiotlb_init() (kernel/dma/swiotlb.c).
    Raises ValueError for ``cpus`` outside 1..1024, RAM ranges that overlap or are misaligned, or a
    bad swiotlb size / ``swiotlb_nareas``; TypeError / ValueError for non-int sizes; MemoryError
    when the host cannot allocate the machine.
    """

    def __cinit__(self, ram=None, cpus=4, swiotlb="auto", swiotlb_nareas=None,
                 swiotlb_force=False, dma_debug=True):
        self._lock = PyThread_allocate_lock()     # the machine lock (see "Threads")
        if self._lock == NULL:
            raise MemoryError()
        self._busy_thread = 0
        cdef u64 size
        if ram is None:
            ram = DEFAULT_RAM
        if not isinstance(cpus, int) or not 1 <= cpus <= 1024:
            raise ValueError(f"cpus must be an int in 1..1024, not {cpus!r}")
        self.mem = PhysMem()
        self.cpus = cpus
        self._cpu = 0
        self.clock_ns = 0
        self.devices = {}
        self.iommus = []
        self.warnings_log = []
        self.ratelimit_states = {}
        self._warn_queue = []
        self._warned_once = set()
        self._timers = []
        self._timer_seq = 0
        self._user_pages = {}
        for i, r in enumerate(ram):
            base, rsize = r
            self.mem.add_region(_u64(base, "RAM base"), _u64(rsize, "RAM size"), REGION_RAM, f"System RAM {i}")
        self.dma_debug = DmaDebug(self, dma_debug)
        self.trace = DmaTrace(self)
        self.p2pdma = P2PTopology(self)
        if swiotlb == "auto":
            size = IO_TLB_DEFAULT_SIZE_C if (self.max_phys_ram() > (<u64>1 << 32) or swiotlb_force) else 0
        elif not swiotlb:
            size = 0
        else:
            size = _u64(swiotlb, "swiotlb size")
        self.swiotlb = swiotlb_init(self, size, 0 if swiotlb_nareas is None else swiotlb_nareas,
                                    bool(swiotlb_force)) if size else None
        self.flush_warnings()

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    # ---- CPUs and time -------------------------------------------------------------------
    @property
    def cpu(self):
        """The CPU the next calls run on (selects per-CPU state: swiotlb areas, IOVA rcaches, flush queues).

        Models smp_processor_id(). Setting raises ValueError outside 0..cpus-1.
        """
        return self._cpu

    @cpu.setter
    def cpu(self, value):
        if not isinstance(value, int) or not 0 <= value < self.cpus:
            raise ValueError(f"cpu must be in 0..{self.cpus - 1}, not {value!r}")
        self._cpu = value

    def advance(self, ns):
        """Advance the virtual clock by ``ns`` nanoseconds, firing due timers in deadline order.

        Simulator-only (the passing of jiffies: the timers and delayed work added with
        add_timer() run). Returns None. Raises TypeError / ValueError for a bad ``ns`` or one that
        overflows the 64-bit clock; an exception from a timer callback propagates.
        """
        machine_guard(self)
        cdef u64 target = self.clock_ns + _u64(ns, "ns")
        if target < self.clock_ns:
            raise ValueError(f"advancing the clock by {ns:#x} ns overflows its 64 bits")
        while self._timers and self._timers[0][0] <= target:
            deadline, _, cb = _heapq.heappop(self._timers)
            if deadline > self.clock_ns:
                self.clock_ns = deadline
            cb()
        self.clock_ns = target
        self.flush_warnings()

    def add_timer(self, delay_ns, callback):
        """Arm a one-shot timer ``delay_ns`` from now (mod_timer/schedule_delayed_work stand-in).

        Simulator-only. Returns None. Raises TypeError / ValueError for a bad ``delay_ns``.
        """
        cdef u64 d = _u64(delay_ns, "delay_ns")
        self._timer_seq += 1
        _heapq.heappush(self._timers, (self.clock_ns + d, self._timer_seq, callback))

    # ---- CPU access to physical memory ---------------------------------------------------
    def mem_write(self, phys, data):
        """CPU stores ``data`` (bytes-like or numpy) at ``phys``; RAM or MMIO only.

        Simulator-only (a driver's CPU stores through the direct map: memcpy() / writel()).
        Returns None. Raises PhysAddrError where [phys, phys + len(data)) is not all RAM or MMIO,
        TypeError / ValueError for bad arguments.
        """
        machine_guard(self)
        cdef const u8[::1] view = _as_bytes_view(data)
        cdef u64 p = _u64(phys, "phys")
        cdef u64 n = view.shape[0]
        if n == 0:
            return
        if self.mem.find_region(p, n) < 0:
            raise PhysAddrError(p, n)
        self.dma_debug.cpu_access(p, n, True)
        self.mem.write(p, &view[0], n)

    def mem_read(self, phys, n):
        """CPU loads ``n`` bytes at ``phys`` (never-written RAM reads as zeros).

        Simulator-only (a driver's CPU loads: memcpy() / readl()). Returns the bytes. Raises
        PhysAddrError where [phys, phys + n) is not all RAM or MMIO
        (checked before anything is allocated), TypeError / ValueError for bad arguments.
        """
        machine_guard(self)
        cdef u64 p = _u64(phys, "phys")
        cdef u64 cnt = _u64(n, "n")
        cdef bytearray out
        if cnt == 0:
            return b""
        if self.mem.find_region(p, cnt) < 0:           # checked before the buffer is allocated
            raise PhysAddrError(p, cnt)
        out = bytearray(cnt)
        self.dma_debug.cpu_access(p, cnt, False)
        self.flush_warnings()
        self.mem.read(p, <u8 *><char *>out, cnt)
        return bytes(out)

    def alloc_pages(self, npages, limit=None, align=1):
        """Allocate ``npages`` zeroed, page-aligned RAM pages below ``limit`` (bytes, exclusive).

        Models alloc_pages() / memblock_alloc() (top-down like memblock). Returns the physical
        address. Raises MemoryError when no suitably placed free run exists, ValueError for
        ``npages`` 0 or an ``align`` that is not a power of two, TypeError / ValueError for
        non-int or out-of-range arguments.
        """
        machine_guard(self)
        cdef u64 n = _u64(npages, "npages")
        cdef u64 lim = U64_MAX if limit is None else _u64(limit, "limit")
        cdef u64 al = _u64(align, "align")
        cdef u64 phys
        if n == 0 or al == 0 or al & (al - 1):
            raise ValueError("npages must be > 0 and align a power of two")
        phys = self.mem.alloc_pages_c(n, lim, al)
        if phys == U64_MAX:
            raise MemoryError(f"no {n} free pages below {lim:#x}")
        self._user_pages[phys] = n
        return phys

    def free_pages(self, phys, npages):
        """Free a run alloc_pages() returned (the exact run). Their contents are discarded.

        Models free_pages() (mm/page_alloc.c). Returns None. Raises ValueError for anything else
        -- pages the machine allocated for itself (page tables, swiotlb, coherent buffers)
        included -- and leaves all state unchanged.
        """
        machine_guard(self)
        cdef u64 p = _u64(phys, "phys"), n = _u64(npages, "npages")
        if self._user_pages.get(p) != n or self.mem.free_pages_c(p, n) < 0:
            raise ValueError(f"free_pages({p:#x}, {n}): not a run alloc_pages() handed out")
        del self._user_pages[p]

    def add_mmio(self, base, size, name):
        """Add a non-RAM region (a BAR); CPU and device accesses hit its own store.

        Simulator-only (a device's BAR resource, as request_mem_region() would see it). Returns
        None. Raises TypeError / ValueError for bad arguments or a range that overlaps a region.
        """
        self.mem.add_region(_u64(base, "base"), _u64(size, "size"), REGION_MMIO, str(name))

    # ---- embedder-owned RAM ------------------------------------------------------------------
    def add_ram(self, base, buffer, *, name=None, allocatable=False):
        """Back RAM at ``base`` with the embedder's writable buffer (bytearray, numpy array,
        mmap, memoryview of a simulator's memory), zero copy both ways.

        ``base`` and ``len(buffer)`` (in bytes) must be page aligned; the range must not overlap a
        region: raises ValueError otherwise, TypeError for a read-only or non-buffer object. Returns
        None. The buffer's export is held until ``remove_ram(base)`` or the machine's end, so the
        embedder cannot resize or release it meanwhile (BufferError in the embedder's code).
        ``allocatable=True`` gives its pages to the page allocator (alloc_pages, page tables,
        coherent buffers may then land there); by default they are the embedder's alone.

        Simulator-only (embedding; like memory hotplug's add_memory()).
        """
        cdef u64 b = _u64(base, "base")
        _ram_buffer_nbytes(buffer, b)
        self.mem.add_ext_ram(b, buffer, f"Embedder RAM {b:#x}" if name is None else str(name),
                             bool(allocatable))

    def remove_ram(self, base):
        """Remove embedder RAM added at ``base`` and release its buffer.

        Simulator-only (like remove_memory()). Returns None. Raises BufferError while anything
        uses it (an allocation, an IOMMU mapping, a
        swiotlb bounce, a dma-debug entry), ValueError when no embedder RAM starts at ``base``.
        """
        cdef u64 b = _u64(base, "base")
        _check_ram_removable(self, b)
        self.mem.remove_ext_ram(b)

    def add_ram_range(self, base, size, name):
        """Add simulated (sparse) RAM after construction: page aligned, overlapping nothing; its
        pages join the page allocator. The trace replay covers the addresses a trace touches.

        Simulator-only (like memory hotplug's add_memory()). Returns None. Raises TypeError /
        ValueError for bad arguments, a misaligned or overlapping range.
        """
        self.mem.add_region(_u64(base, "base"), _u64(size, "size"), REGION_RAM, str(name))

    def max_phys_ram(self):
        """End (exclusive) of the highest RAM range (max_pfn << PAGE_SHIFT).

        Mirrors max_pfn (mm/memblock.c). Returns that int. Raises nothing.
        """
        end = 0
        for start, size, kind, _ in self.mem.regions_list():
            if kind == "ram":
                end = max(end, start + size)
        return end

    @property
    def regions(self):
        """[(start, size, "ram"|"mmio", name)] in address order.

        Read-only (m.mem.regions_list()).
        """
        return self.mem.regions_list()

    # ---- devices and IOMMUs --------------------------------------------------------------
    def add_device(self, name, dma_mask=U64_MAX, coherent=True, dma_range_map=None,
                   bus_dma_limit=0, force_bounce=False, min_align_mask=0, *, iommu=None,
                   domain=None, domain_type="dma", pci=True, untrusted=False, parent=None,
                   max_segment_size=65536, seg_boundary_mask=U64_MAX, coherent_dma_mask=None):
        """Add a device; see Device for the fields. ``dma_mask=None`` models a NULL dev->dma_mask.

        Returns the new Device (bound to ``iommu``'s default domain, or ``domain``, when given).
        Raises ValueError for a duplicate name, a domain of another IOMMU or inconsistent fields,
        TypeError for arguments of the wrong type; KernelBug where the kernel would BUG setting it
        up (a DMA-API device on an IOMMU whose smallest page exceeds PAGE_SIZE: init_iova_domain's
        BUG_ON).
        """
        name = str(name)
        if name in self.devices:
            raise ValueError(f"a device named {name!r} exists already")
        self.p2pdma.check_parent(parent, bool(pci))
        dev = Device(self, name, dma_mask, coherent, dma_range_map, bus_dma_limit, force_bounce,
                     min_align_mask, pci, untrusted, max_segment_size, seg_boundary_mask,
                     coherent_dma_mask)
        if domain is not None:
            if iommu is not None and domain.iommu is not iommu:
                raise ValueError("domain belongs to another IOMMU")
            domain.iommu.attach_device(dev, domain, None)
        elif iommu is not None:
            iommu.attach_device(dev, None, domain_type)
        self.p2pdma.add_device(dev, parent)
        self.devices[name] = dev
        self.flush_warnings()
        return dev

    def remove_device(self, Device dev not None):
        """Unbind and remove a device (dma-debug reports its leaked mappings).

        Models device_del() with the bus notifiers (dma-debug's BUS_NOTIFY_UNBOUND_DRIVER,
        iommu_release_device(), pci_p2pdma_release()). Returns None. Afterwards the DMA API
        raises ValueError for the device and its bus accesses
        fault (DmaFault). Raises ValueError when ``dev`` is not a device of this machine or is still
        the parent of a non-PCI device (nothing changed), TypeError for a non-Device. Warns
        DmaDebugWarning for each leaked mapping (DmaDebugError with ``raise_errors``).
        """
        if self.devices.get(dev.name) is not dev:
            raise ValueError(f"{dev.name!r} is not a device of this machine")
        # p2pdma refuses (ValueError) before it changes anything; the rest cannot fail, and its
        # reports (dma-debug's leaks, the detach's) are flushed once the removal is complete, so
        # a report turned into an exception never leaves a half-removed (untranslated) device
        self.p2pdma.remove_device(dev)
        self.dma_debug.device_removed(dev)
        if dev.domain is not None:
            (<Iommu>(<IommuDomain>dev.domain).iommu)._detach_device(dev)
        del self.devices[dev.name]
        dev.removed = True              # faults like a blocked domain; the C ABI refuses its capsules
        self.flush_warnings()

    # ---- PCI topology and P2P memory (drivers/pci/p2pdma.c; see P2PTopology) ---------------
    def add_host_bridge(self, name, p2p_allowlisted=False, *, req_same_host_bridge=False):
        """A host bridge (its own PCI domain); ``p2p_allowlisted``: in pci_p2pdma_whitelist[].

        Simulator-only (the kernel enumerates host bridges). Returns the PciHostBridge. Raises
        ValueError for a duplicate name or no free PCI domain, TypeError for a name that is not a
        non-empty str.
        """
        return self.p2pdma.add_host_bridge(name, p2p_allowlisted, req_same_host_bridge=req_same_host_bridge)

    def add_switch(self, name, parent=None, acs_redirect=False):
        """A PCIe switch below a host bridge or switch; ``acs_redirect`` on its downstream ports.

        Simulator-only (the kernel enumerates switches). Returns the PciSwitch. Raises ValueError
        for a duplicate name, an unknown ``parent`` or no free port, TypeError for a bad name or
        parent type.
        """
        return self.p2pdma.add_switch(name, parent, acs_redirect)

    def add_p2pmem(self, provider, cpu_phys, size, bus_addr=None, *, pages=True):
        """Publish part of a BAR of ``provider`` as P2P memory (pci_p2pdma_add_resource).

        Models drivers/pci/p2pdma.c:pci_p2pdma_add_resource(). Returns the PciP2PdmaPagemap
        (``pages=False``: the P2PdmaProvider); see
        P2PTopology.add_p2pmem. Raises TypeError / ValueError for bad arguments or a range that is
        not one BAR of ``provider``.
        """
        return self.p2pdma.add_p2pmem(provider, cpu_phys, size, bus_addr, pages=pages)

    def add_iommu(self, fmt="vtd-ss", strict=True, iotlb=None, **kwargs):
        """Add an IOMMU with page tables of format ``fmt`` (see Iommu).

        Simulator-only (the kernel registers IOMMUs with iommu_device_register()). Returns the
        Iommu. Raises ValueError for an unknown format or a bad option value, TypeError for an
        unknown keyword or ``iotlb`` key, MemoryError when no RAM is left for a page table.
        """
        iommu = Iommu(self, fmt, strict, iotlb, **kwargs)
        self.iommus.append(iommu)
        return iommu

    # ---- kernel warnings -----------------------------------------------------------------
    cdef void kwarn(self, object category, str text, object once_key=None):
        """Queue a kernel warning (WARN_ONCE when once_key is given: once per machine)."""
        if once_key is not None:
            if once_key in self._warned_once:
                return
            self._warned_once.add(once_key)
        self._warn_queue.append((category, text))

    def flush_warnings(self):
        """Emit queued kernel warnings through ``warnings`` and ``logging`` (called by entry points).

        Simulator-only (the kernel prints WARN()s at once). Returns None. Raises whatever the
        warnings filter makes of them (an exception under
        ``filterwarnings("error")``) and DmaDebugError for a pending dma-debug error when
        ``dma_debug.raise_errors`` is set.

        An exception an IOMMU notifier callback raised during the operation is raised here too.
        """
        cdef list q
        if self._warn_queue:
            q = self._warn_queue
            self._warn_queue = []
            for category, text in q:
                if len(self.warnings_log) < LOG_RECORDS_MAX:
                    self.warnings_log.append((category.__name__, text))
                else:
                    self.warnings_dropped += 1
                _log.debug("%s", text)                  # printed once: as the warning below
            for category, text in q:
                # compiled entry points push no Python frame: level 1 is the caller's line
                _warnings.warn(text, category, stacklevel=1)
        if self.dma_debug._pending:
            self.dma_debug.raise_pending()              # DmaDebugError when raise_errors is set
        if self._deferred_exc is not None:
            exc = self._deferred_exc
            self._deferred_exc = None
            raise exc

    cdef int defer_exception(self, object exc) except -1:
        """An embedder callback (IOMMU notifier) raised inside an operation: keep the first
        exception for flush_warnings() to raise once the entry point has finished; log others."""
        if self._deferred_exc is None:
            self._deferred_exc = exc
        else:
            _log.error("another embedder callback raised as well: %r", exc)
        return 0

    def __repr__(self):
        return (f"<dmaphys.Machine cpus={self.cpus} ram={self.mem.ram_bytes >> 20} MiB "
                f"devices={len(self.devices)} iommus={len(self.iommus)}>")


cdef inline u64 _u64(object v, str what) except? 0xFFFFFFFFFFFFFFFF:
    """Validate a Python int as a u64 (bad input → TypeError/ValueError, never wraps)."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    v = v.__index__()
    if v < 0 or v > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{what} {v:#x} is not a 64-bit unsigned value")
    return <u64>v


cdef const u8[::1] _as_bytes_view(object data):
    if isinstance(data, str):
        raise TypeError("data must be bytes-like, not str")
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("data must be C-contiguous")
    return mv.cast("B")


# ---- Threads ------------------------------------------------------------------------------------
# A machine is one kernel: its state is not safe for two host threads at once. Per-call entry
# points hold the GIL from start to end (they never release it), so they are serialised by the
# GIL. Batch calls release the GIL for their loops (batch.pxi); for their whole call they own
# the machine: machine_enter() takes Machine._lock (waiting for it without the GIL when another
# thread's batch holds it) and records the owner in _busy_thread; machine_exit() gives it back.
# Per-call entry points run machine_guard() first, which waits (without the GIL) while
# another thread owns the machine. So two threads on one machine are serialised, never
# interleaved inside an operation; two threads on two machines run in parallel.
cdef int machine_enter(Machine m) except -1:
    cdef unsigned long me = PyThread_get_thread_ident()
    cdef int got
    if m._busy_thread == me:
        raise RuntimeError("dmaphys: a batch call on this machine was entered again from inside "
                           "a batch call of the same thread (a callback?)")
    if not PyThread_acquire_lock(m._lock, NOWAIT_LOCK):
        with nogil:
            got = PyThread_acquire_lock(m._lock, WAIT_LOCK)
    m._busy_thread = me
    return 0


cdef void machine_exit(Machine m) noexcept:
    m._busy_thread = 0
    PyThread_release_lock(m._lock)


cdef int machine_wait(Machine m) except -1:
    """Wait until no other thread owns m (its owner may be running a batch without the GIL)."""
    cdef unsigned long me = PyThread_get_thread_ident()
    cdef int got
    while m._busy_thread != 0 and m._busy_thread != me:
        with nogil:
            got = PyThread_acquire_lock(m._lock, WAIT_LOCK)
            PyThread_release_lock(m._lock)
    return 0
