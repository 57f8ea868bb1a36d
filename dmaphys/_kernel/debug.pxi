# Models kernel/dma/debug.c (CONFIG_DMA_API_DEBUG, v6.18 after the dma_map_phys series):
# live-mapping tracking in a 16384-bucket hash keyed on the DMA address, best-fit and
# containing lookups, the unmap / sync / sg checks with the kernel's message texts, the
# active-cacheline overlap tracking, err_printk's counting and printing rules, the entry pool
# counters, the debugfs dump and the leak report on driver unbind.
#
# Beyond the kernel (documented, off the kernel's counters): CPU reads of a bounced
# FROM_DEVICE/BIDIRECTIONAL buffer that the device has written but nobody synced yet, and
# device accesses through a stale IOTLB entry.
#
# Hot path: entries live in a C++ vector used as a pool, linked into the buckets by index
# (like the kernel's list_heads); no Python object is built unless something is reported.
#
# How "print only the first error" maps to Python (err_printk):
#   - every error increments error_count and appends a DmaDebugRecord to dma_debug.errors;
#   - a DmaDebugWarning is emitted only when the kernel would print: the driver filter
#     passes and (all_errors or num_errors > 0); num_errors is then decremented unless
#     all_errors is set (the kernel decrements even when the filter suppressed the print).
#     Default num_errors = 1, all_errors = 0, so only the first error is a warning;
#     ``m.dma_debug.all_errors = True`` warns on every error;
#   - raise_errors = True makes the entry point raise DmaDebugError for the first error it
#     reported, after its state changes are complete (Machine.flush_warnings calls
#     DmaDebug.raise_pending()).
# The driver string is the device name ("DMA-API: <dev> <dev>: ..."): simulated devices
# have no separate driver object, so dev_driver_string() is taken to be the device name and
# driver_filter matches device names.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, debug.pxd.

import collections as _collections

DmaDebugRecord = _collections.namedtuple("DmaDebugRecord", "kind device text address size")
DmaDebugRecord.__doc__ = """One dma-debug report: ``kind`` (e.g. "size_mismatch"), ``device`` (name),
``text`` (the full printed message), ``address`` (the DMA address reported on), ``size``.

Simulator-only: what kernel/dma/debug.c's err_printk() prints, kept as a record. A namedtuple:
raises TypeError for a wrong number of fields."""


_TYPE2NAME = ("single", "scatter-gather", "coherent", "noncoherent", "phy")
_DIR2NAME = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")
_MAPERR2STR = ("dma map error check not applicable", "dma map error not checked",
               "dma map error checked")
PAGE_OFFSET_X86_64 = 0xffff888000000000        # x86-64 direct-map base: what %p shows for phys_to_virt()


cdef inline str _dir2name(int d):
    return _DIR2NAME[d] if 0 <= d <= 3 else "DMA_NONE"


cdef class DmaDebug:
    """kernel/dma/debug.c: ``m.dma_debug`` (on by default; ``Machine(dma_debug=False)`` or
    ``m.dma_debug.enabled = False`` switches it off — calls made while off are not seen).

    Counters as the kernel's debugfs "dma-api" directory has them: ``error_count``,
    ``all_errors`` (rw), ``num_errors`` (rw, default 1), ``num_free_entries``,
    ``min_free_entries``, ``nr_total_entries``, ``driver_filter`` (rw). ``dump()`` returns the
    debugfs dump lines. Reports: ``errors`` (list of DmaDebugRecord, every error),
    a DmaDebugWarning when the kernel would print (see num_errors / all_errors), and
    DmaDebugError when ``raise_errors`` is set.

    Mirrors kernel/dma/debug.c (its global state: the dma_entry hash, the free-entry pool and the
    debugfs knobs). Made by the Machine; constructing one raises TypeError without a Machine,
    MemoryError when the hash cannot be allocated.
    """

    def __cinit__(self, Machine machine not None, enabled=True):
        self.bucket_head = <int *>malloc(HASH_SIZE * sizeof(int))
        self.bucket_tail = <int *>malloc(HASH_SIZE * sizeof(int))
        if self.bucket_head == NULL or self.bucket_tail == NULL:
            raise MemoryError()
        memset(self.bucket_head, 0xff, HASH_SIZE * sizeof(int))
        memset(self.bucket_tail, 0xff, HASH_SIZE * sizeof(int))
        self.free_head = -1
        self.machine = machine
        self.enabled = bool(enabled)
        self.raise_errors = False
        self.error_count = 0
        self.all_errors = 0
        self.num_errors = 1
        self._driver_name = ""
        self.errors = []
        self._pending = []
        self._set_prealloc(PREALLOC_DMA_DEBUG_ENTRIES)

    def __dealloc__(self):
        cdef size_t i
        for i in range(self.pool.size()):
            if self.pool[i].dev != NULL:
                Py_DECREF(<object>self.pool[i].dev)
                self.pool[i].dev = NULL
        for i in range(self.pending_bounces.size()):
            Py_DECREF(<object>self.pending_bounces[i].dev)
        self.pending_bounces.clear()
        free(self.bucket_head)
        free(self.bucket_tail)

    cdef void _set_prealloc(self, unsigned int n):
        # dma_debug_init(): whole pages of DMA_DEBUG_DYNAMIC_ENTRIES entries
        cdef unsigned int pages = (n + DMA_DEBUG_DYNAMIC_ENTRIES - 1) // DMA_DEBUG_DYNAMIC_ENTRIES
        self._nr_prealloc = n
        self.nr_total_entries = pages * DMA_DEBUG_DYNAMIC_ENTRIES
        self.num_free_entries = self.nr_total_entries - self.nr_live
        self.min_free_entries = self.num_free_entries

    @property
    def nr_prealloc_entries(self):
        """The boot parameter dma_debug_entries= (default 65536); settable while no entry is live.

        Setting raises ValueError outside 1..2**32-1 or while entries are live, TypeError for a
        non-int.
        """
        return self._nr_prealloc

    @nr_prealloc_entries.setter
    def nr_prealloc_entries(self, value):
        n = _u64(value, "nr_prealloc_entries")
        if n == 0 or n > 0xFFFFFFFF:
            raise ValueError("nr_prealloc_entries must be in 1..2^32-1")
        if self.nr_live:
            raise ValueError("nr_prealloc_entries can only be set while no entry is live")
        self._set_prealloc(<unsigned int>n)

    @property
    def disabled(self):
        """debugfs "disabled" (global_disable): True when dma-debug is off.

        Read-only.
        """
        return not self.enabled

    @property
    def driver_filter(self):
        """debugfs driver_filter: the driver name errors are printed for ("" = all).

        Writing follows filter_write(): a value whose first character is not alphanumeric
        switches the filter off; otherwise its first whitespace-separated token (at most 63
        characters) becomes the filter. Counting and records are never filtered.

        Setting converts the value with str() and raises nothing.
        """
        return self._driver_name

    @driver_filter.setter
    def driver_filter(self, value):
        cdef str s = str(value)[:NAME_MAX_LEN - 1]
        if not s or not (s[0].isascii() and s[0].isalnum()):
            if self._driver_name:
                _log.info("DMA-API: switching off dma-debug driver filter")
            self._driver_name = ""
            return
        self._driver_name = s.split()[0]
        _log.info("DMA-API: enable driver filter for driver [%s]", self._driver_name)

    def __len__(self):
        return self.nr_live

    # ---- err_printk ----------------------------------------------------------------------
    cdef inline bint _filter_passes(self, Device dev):
        # driver_filter(): the device's driver string must equal the filter name
        return not self._driver_name or dev.name == self._driver_name

    cdef void err_printk(self, Device dev, str kind, str msg, u64 addr, u64 size):
        """err_printk(): count, record, print when the kernel would, queue a raise."""
        cdef str text = f"DMA-API: {dev.name} {dev.name}: {msg}"
        rec = DmaDebugRecord(kind, dev.name, text, addr, size)
        self.error_count += 1
        if len(self.errors) < LOG_RECORDS_MAX:
            self.errors.append(rec)
        else:
            self.errors_dropped += 1
        if self._filter_passes(dev) and (self.all_errors or self.num_errors > 0):
            self.machine.kwarn(DmaDebugWarning, text)
        if not self.all_errors and self.num_errors > 0:
            self.num_errors -= 1
        if self.raise_errors:
            self._pending.append(rec)

    cdef void report_extra(self, Device dev, str kind, str msg, u64 addr, u64 size):
        """A report beyond the kernel: recorded and warned every time, never counted in
        error_count nor subject to num_errors (the kernel's counters stay the kernel's).
        ``dev`` None: a report with no device (an IOVA domain no device uses), named "iova"."""
        cdef str name = dev.name if dev is not None else "iova"
        cdef str text = f"DMA-API: {name} {name}: {msg}"
        rec = DmaDebugRecord(kind, name, text, addr, size)
        if len(self.errors) < LOG_RECORDS_MAX:
            self.errors.append(rec)
        else:
            self.errors_dropped += 1
        self.machine.kwarn(DmaDebugWarning, text)
        if self.raise_errors:
            self._pending.append(rec)

    def raise_pending(self):
        """Raise DmaDebugError for the first report queued while ``raise_errors`` was set.

        Called by Machine.flush_warnings() at the end of every entry point, after the
        warnings are emitted, so the operation's state changes are complete.

        Simulator-only (the kernel only prints). Returns None when nothing is queued (the queue is
        emptied either way). Raises DmaDebugError with the first queued report's text.
        """
        if self._pending:
            rec = self._pending[0]
            self._pending = []
            raise DmaDebugError(rec.text)

    # ---- entry pool (dma_entry_alloc / dma_entry_free) -----------------------------------
    cdef int entry_alloc(self, Device dev) except -1:
        cdef int idx
        cdef dma_debug_entry e
        cdef unsigned int nr
        if self.num_free_entries == 0:
            # dma_entry_alloc(): grow by one page of entries, say so at multiples of the pool
            self.num_free_entries += DMA_DEBUG_DYNAMIC_ENTRIES
            self.nr_total_entries += DMA_DEBUG_DYNAMIC_ENTRIES
            nr = self.nr_total_entries
            if nr % self._nr_prealloc < DMA_DEBUG_DYNAMIC_ENTRIES:
                _log.info("DMA-API: dma_debug_entry pool grown to %u (%u00%%)",
                          nr, nr // self._nr_prealloc)
        self.num_free_entries -= 1
        if self.num_free_entries < self.min_free_entries:
            self.min_free_entries = self.num_free_entries
        memset(&e, 0, sizeof(e))
        e.next = -1
        e.prev = -1
        e.bucket = -1
        e.tlb_addr = U64_MAX
        Py_INCREF(dev)
        e.dev = <PyObject *>dev
        if self.free_head >= 0:
            idx = self.free_head
            self.free_head = self.pool[idx].next
            self.pool[idx] = e
        else:
            idx = <int>self.pool.size()
            self.pool.push_back(e)
        self.nr_live += 1
        return idx

    cdef void entry_free(self, int idx):
        # dma_entry_free(): drop the cacheline, return the entry to the pool
        cdef dma_debug_entry *e = &self.pool[idx]
        cdef object dev
        cdef cppmap[u64, int].iterator bit
        self.active_cacheline_remove(e)
        if e.tlb_addr != U64_MAX:
            bit = self.bounced.find(e.tlb_addr)
            if bit != self.bounced.end() and deref(bit).second == idx:
                self.bounced.erase(bit)
            self._dirty_erase(idx)
        dev = <object>e.dev
        e.dev = NULL
        Py_DECREF(dev)
        e.next = self.free_head
        self.free_head = idx
        self.num_free_entries += 1
        self.nr_live -= 1

    # ---- the hash (hash_fn, hash_bucket_add/del, __hash_bucket_find) ----------------------
    cdef inline void bucket_add(self, int idx):
        cdef dma_debug_entry *e = &self.pool[idx]
        cdef int b = <int>((e.dev_addr >> HASH_FN_SHIFT) & HASH_FN_MASK)
        e.bucket = b
        e.next = -1
        e.prev = self.bucket_tail[b]
        if e.prev >= 0:
            self.pool[e.prev].next = idx
        else:
            self.bucket_head[b] = idx
        self.bucket_tail[b] = idx

    cdef inline void bucket_del(self, int idx):
        cdef dma_debug_entry *e = &self.pool[idx]
        if e.prev >= 0:
            self.pool[e.prev].next = e.next
        else:
            self.bucket_head[e.bucket] = e.next
        if e.next >= 0:
            self.pool[e.next].prev = e.prev
        else:
            self.bucket_tail[e.bucket] = e.prev
        e.next = -1
        e.prev = -1

    cdef int hash_bucket_find(self, int b, dma_debug_entry *ref, bint containing) noexcept:
        """__hash_bucket_find(): best fit over size/type/direction/sg_call_ents; with two or
        more matches and no perfect one, nothing (-1)."""
        cdef int idx = self.bucket_head[b]
        cdef int ret = -1, matches = 0, lvl, last_lvl = -1
        cdef dma_debug_entry *e
        while idx >= 0:
            e = &self.pool[idx]
            if e.dev == ref.dev and (
                    (not containing and e.dev_addr == ref.dev_addr) or
                    (containing and e.dev_addr <= ref.dev_addr and
                     e.dev_addr + e.size >= ref.dev_addr + ref.size)):
                matches += 1
                lvl = ((e.size == ref.size) + (e.type == ref.type) +
                       (e.direction == ref.direction) + (e.sg_call_ents == ref.sg_call_ents))
                if lvl == 4:
                    return idx
                if lvl > last_lvl:
                    last_lvl = lvl
                    ret = idx
            idx = e.next
        return ret if matches == 1 else -1

    cdef inline int bucket_find_exact(self, dma_debug_entry *ref) noexcept:
        return self.hash_bucket_find(<int>((ref.dev_addr >> HASH_FN_SHIFT) & HASH_FN_MASK), ref, False)

    cdef int bucket_find_contain(self, dma_debug_entry *ref) noexcept:
        """bucket_find_contain(): step back one bucket (8 KiB of DMA address) at a time."""
        cdef u64 addr = ref.dev_addr
        cdef u64 limit = (ref.dev_addr >> HASH_FN_SHIFT) + 1
        cdef u64 i
        cdef int idx
        if limit > HASH_SIZE:
            limit = HASH_SIZE
        for i in range(limit):
            idx = self.hash_bucket_find(<int>((addr >> HASH_FN_SHIFT) & HASH_FN_MASK), ref, True)
            if idx >= 0:
                return idx
            addr -= (1 << HASH_FN_SHIFT)
        return -1

    # ---- active cacheline tracking ----------------------------------------------------------
    cdef inline u64 to_cacheline_number(self, u64 paddr) noexcept:
        return ((paddr >> PAGE_SHIFT) << CACHELINE_PER_PAGE_SHIFT) + ((paddr & (PAGE_SIZE - 1)) >> L1_CACHE_SHIFT)

    cdef int active_cacheline_insert(self, dma_debug_entry *e):
        """active_cacheline_insert(): 0, or -EEXIST when the first byte's line is tracked."""
        cdef u64 cln
        cdef int overlap
        cdef unordered_map[u64, int].iterator it
        if e.direction == DMA_TO_DEVICE:
            return 0
        cln = self.to_cacheline_number(e.paddr)
        it = self.cachelines.find(cln)
        if it == self.cachelines.end():
            self.cachelines[cln] = 0
            return 0
        # active_cacheline_inc_overlap(): the radix tags hold at most 7
        overlap = deref(it).second + 1
        if overlap > ACTIVE_CACHELINE_MAX_OVERLAP:
            self.machine.kwarn(
                DmaDebugWarning,
                f"DMA-API: exceeded {ACTIVE_CACHELINE_MAX_OVERLAP} overlapping mappings of cacheline {cln:#018x}",
                "dma-debug: exceeded overlapping mappings")
        else:
            self.cachelines[cln] = overlap
        return -EEXIST

    cdef void active_cacheline_remove(self, dma_debug_entry *e) noexcept:
        # active_cacheline_remove(): the key goes when the overlap count would drop below 0
        cdef u64 cln
        cdef unordered_map[u64, int].iterator it
        if e.direction == DMA_TO_DEVICE:
            return
        cln = self.to_cacheline_number(e.paddr)
        it = self.cachelines.find(cln)
        if it == self.cachelines.end():
            return
        if deref(it).second - 1 < 0:
            self.cachelines.erase(it)
        else:
            self.cachelines[cln] = deref(it).second - 1

    cdef void add_dma_entry(self, int idx, unsigned long attrs):
        """add_dma_entry(): hash insert, then cacheline tracking (EEXIST unless SKIP_CPU_SYNC)."""
        cdef int rc
        cdef dma_debug_entry *e
        self.bucket_add(idx)
        e = &self.pool[idx]
        rc = self.active_cacheline_insert(e)
        if rc == -EEXIST and not (attrs & DMA_ATTR_SKIP_CPU_SYNC):
            # x86-64: dma_get_cache_alignment() == L1_CACHE_BYTES, no DMA_BOUNCE_UNALIGNED_KMALLOC
            e = &self.pool[idx]
            self.err_printk(<Device>e.dev, "cacheline_overlap",
                            "cacheline tracking EEXIST, overlapping mappings aren't supported",
                            e.dev_addr, e.size)

    # ---- bounce tracking (beyond the kernel) -----------------------------------------------
    cdef void note_bounce(self, Device dev, u64 orig_phys, u64 tlb_addr):
        cdef pending_bounce pb
        Py_INCREF(dev)
        pb.dev = <PyObject *>dev
        pb.orig_phys = orig_phys
        pb.tlb_addr = tlb_addr
        self.pending_bounces.push_back(pb)

    cdef void detect_bounce(self, int idx, Device dev):
        """Is the entry's bus address a swiotlb slot? Direct devices: dma_to_phys() of the
        address lies in the device's io_tlb_mem and differs from the buffer. IOMMU devices:
        a debug_dma_note_bounce() for (dev, paddr) made by the bounce path."""
        cdef dma_debug_entry *e = &self.pool[idx]
        cdef u64 tlb = U64_MAX
        cdef size_t i
        cdef IoTlbMem mem
        if not self.pending_bounces.empty():
            i = 0
            while i < self.pending_bounces.size():
                if self.pending_bounces[i].dev == <PyObject *>dev:
                    if tlb == U64_MAX and self.pending_bounces[i].orig_phys == e.paddr:
                        tlb = self.pending_bounces[i].tlb_addr
                    Py_DECREF(<object>self.pending_bounces[i].dev)
                    self.pending_bounces.erase(self.pending_bounces.begin() + i)
                else:
                    i += 1
        if tlb == U64_MAX and not (dev.domain is not None and (<IommuDomain>dev.domain).translates):
            if dev.dma_io_tlb_mem is not None:
                mem = <IoTlbMem>dev.dma_io_tlb_mem
                tlb = dma_to_phys(dev, e.dev_addr)
                if tlb == e.paddr or not (mem.start <= tlb < mem.end):
                    tlb = U64_MAX
        if tlb != U64_MAX:
            e.tlb_addr = tlb
            self.bounced[tlb] = idx

    cdef inline void _dirty_insert(self, int idx) noexcept:
        cdef dma_debug_entry *e = &self.pool[idx]
        self.dirty.insert(idx)
        self.dirty_addr.insert(pair[u64, int](e.paddr, idx))
        if e.dirty_hi > self.dirty_span:
            self.dirty_span = e.dirty_hi

    cdef inline void _dirty_erase(self, int idx) noexcept:
        if self.dirty.erase(idx):
            self.dirty_addr.erase(pair[u64, int](self.pool[idx].paddr, idx))
            if self.dirty.empty():
                self.dirty_span = 0

    cdef void cpu_access(self, u64 phys, u64 n, bint write):
        """Machine.mem_read/mem_write: report a CPU read of device-written, unsynced bounce data."""
        cdef dma_debug_entry *e
        cdef u64 lo, hi
        cdef int idx
        cdef vector[int] cand
        cdef cppset[pair[u64, int]].iterator it
        if write or self.dirty.empty() or not self.enabled:
            return
        # an entry can overlap [phys, phys + n) only if phys - dirty_span < paddr < phys + n:
        # look those up by paddr, then check them in index order (the order of ``dirty``)
        it = self.dirty_addr.lower_bound(pair[u64, int](phys - self.dirty_span if phys > self.dirty_span
                                                        else 0, -1))
        while it != self.dirty_addr.end() and deref(it).first < phys + n:
            cand.push_back(deref(it).second)
            inc(it)
        if cand.empty():
            return
        if cand.size() > 1:
            sort(cand.begin(), cand.end())
        for idx in cand:
            e = &self.pool[idx]
            if e.reported or (e.direction != DMA_FROM_DEVICE and e.direction != DMA_BIDIRECTIONAL):
                continue
            lo = e.paddr + e.dirty_lo
            hi = e.paddr + e.dirty_hi
            if phys < hi and phys + n > lo:
                e.reported = True
                self.report_extra(
                    <Device>e.dev, "bounced_cpu_read",
                    f"cpu reads bounced DMA memory the device wrote before it was synced for cpu "
                    f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
                    f"[cpu address=0x{phys:016x}] [bounce address=0x{e.tlb_addr:016x}] "
                    f"[mapped with {_dir2name(e.direction)}]",
                    e.dev_addr, e.size)

    cdef void device_wrote(self, Device dev, u64 phys, u64 n):
        """The bus: the device stored n bytes at phys; mark bounce slots it dirtied."""
        cdef dma_debug_entry *e
        cdef u64 lo, hi
        cdef int idx
        cdef cppmap[u64, int].iterator it
        if self.bounced.empty() or not self.enabled:
            return
        # bounce slots of live entries are disjoint: walk down from the last one starting
        # at or below the written range's end until one ends before it
        it = self.bounced.upper_bound(phys + n - 1)
        while it != self.bounced.begin():
            dec(it)
            idx = deref(it).second
            e = &self.pool[idx]
            if e.tlb_addr + e.size <= phys:
                break
            lo = (phys - e.tlb_addr) if phys > e.tlb_addr else 0
            hi = phys + n - e.tlb_addr
            if hi > e.size:
                hi = e.size
            if e.dirty_lo == e.dirty_hi:
                e.dirty_lo = lo
                e.dirty_hi = hi
                e.reported = False
                self._dirty_insert(idx)
            else:
                if lo < e.dirty_lo:
                    e.dirty_lo = lo
                if hi > e.dirty_hi:
                    e.dirty_hi = hi
                    if hi > self.dirty_span:
                        self.dirty_span = hi

    cdef void synced_for_cpu(self, int idx, u64 dev_addr, u64 size, int dir):
        # swiotlb_sync_single_for_cpu() copies bounce -> buffer for FROM_DEVICE/BIDIRECTIONAL
        cdef dma_debug_entry *e = &self.pool[idx]
        cdef u64 lo, hi
        if e.dirty_lo == e.dirty_hi or (dir != DMA_FROM_DEVICE and dir != DMA_BIDIRECTIONAL):
            return
        lo = dev_addr - e.dev_addr
        hi = lo + size
        if lo <= e.dirty_lo and hi >= e.dirty_hi:
            e.dirty_lo = e.dirty_hi = 0
            self._dirty_erase(idx)
        elif lo <= e.dirty_lo < hi:
            e.dirty_lo = hi
        elif lo < e.dirty_hi <= hi:
            e.dirty_hi = lo

    # ---- check_unmap / check_sync -----------------------------------------------------------
    cdef void mapping_error(self, Device dev, u64 dma_addr):
        """debug_dma_mapping_error(): the first unchecked exact match becomes checked."""
        cdef int idx = self.bucket_head[(dma_addr >> HASH_FN_SHIFT) & HASH_FN_MASK]
        cdef dma_debug_entry *e
        while idx >= 0:
            e = &self.pool[idx]
            if e.dev == <PyObject *>dev and e.dev_addr == dma_addr and e.map_err_type == MAP_ERR_NOT_CHECKED:
                e.map_err_type = MAP_ERR_CHECKED
                return
            idx = e.next

    cdef void check_unmap(self, Device dev, dma_debug_entry *ref):
        """check_unmap(): every mismatch is an error; the best-fit entry is then removed."""
        cdef int idx = self.bucket_find_exact(ref)
        cdef dma_debug_entry *e
        cdef u64 a = ref.dev_addr
        if idx < 0:
            # dma_mapping_error() runs debug_dma_mapping_error() as a side effect
            self.mapping_error(dev, a)
            if a == DMA_MAPPING_ERROR:
                self.err_printk(dev, "invalid_address",
                                "device driver tries to free an invalid DMA memory address", a, ref.size)
            else:
                self.err_printk(dev, "not_allocated",
                                f"device driver tries to free DMA memory it has not allocated "
                                f"[device address=0x{a:016x}] [size={ref.size} bytes]", a, ref.size)
            return
        e = &self.pool[idx]
        if ref.size != e.size:
            self.err_printk(dev, "size_mismatch",
                            f"device driver frees DMA memory with different size "
                            f"[device address=0x{a:016x}] [map size={e.size} bytes] "
                            f"[unmap size={ref.size} bytes]", a, ref.size)
            e = &self.pool[idx]
        if ref.type != e.type:
            self.err_printk(dev, "wrong_function",
                            f"device driver frees DMA memory with wrong function "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped as {_TYPE2NAME[e.type]}] [unmapped as {_TYPE2NAME[ref.type]}]",
                            a, ref.size)
        elif (e.type == dma_debug_coherent or e.type == dma_debug_noncoherent) and ref.paddr != e.paddr:
            # "0x%pa" prints the 0x twice, as the kernel does
            self.err_printk(dev, "cpu_address_mismatch",
                            f"device driver frees DMA memory with different CPU address "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[cpu alloc address=0x{e.paddr:016x}] [cpu free address=0x{ref.paddr:016x}]",
                            a, ref.size)
        e = &self.pool[idx]
        if ref.sg_call_ents and ref.type == dma_debug_sg and ref.sg_call_ents != e.sg_call_ents:
            self.err_printk(dev, "sg_count_mismatch",
                            f"device driver frees DMA sg list with different entry count "
                            f"[map count={e.sg_call_ents}] [unmap count={ref.sg_call_ents}]", a, ref.size)
        e = &self.pool[idx]
        if ref.direction != e.direction:
            self.err_printk(dev, "direction_mismatch",
                            f"device driver frees DMA memory with different direction "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped with {_dir2name(e.direction)}] [unmapped with {_dir2name(ref.direction)}]",
                            a, ref.size)
        e = &self.pool[idx]
        if e.map_err_type == MAP_ERR_NOT_CHECKED:
            self.err_printk(dev, "map_error_not_checked",
                            f"device driver failed to check map error"
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped as {_TYPE2NAME[e.type]}]", a, ref.size)
        self.bucket_del(idx)
        self.entry_free(idx)

    cdef void check_sync(self, Device dev, dma_debug_entry *ref, bint to_cpu):
        """check_sync(): containing lookup, range / direction / sg-count checks."""
        cdef int idx = self.bucket_find_contain(ref)
        cdef dma_debug_entry *e
        cdef u64 a = ref.dev_addr
        cdef int edir
        cdef u64 esize
        if idx < 0:
            self.err_printk(dev, "sync_not_allocated",
                            f"device driver tries to sync DMA memory it has not allocated "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes]", a, ref.size)
            return
        e = &self.pool[idx]
        edir = e.direction
        esize = e.size
        if to_cpu and e.tlb_addr != U64_MAX:
            self.synced_for_cpu(idx, a, ref.size, ref.direction)
        if ref.size > esize:
            self.err_printk(dev, "sync_out_of_range",
                            f"device driver syncs DMA memory outside allocated range "
                            f"[device address=0x{e.dev_addr:016x}] [allocation size={esize} bytes] "
                            f"[sync offset+size={ref.size}]", a, ref.size)
        if edir == DMA_BIDIRECTIONAL:
            return
        if ref.direction != edir:
            self.err_printk(dev, "sync_direction_mismatch",
                            f"device driver syncs DMA memory with different direction "
                            f"[device address=0x{a:016x}] [size={esize} bytes] "
                            f"[mapped with {_dir2name(edir)}] [synced with {_dir2name(ref.direction)}]",
                            a, ref.size)
        if to_cpu and edir != DMA_FROM_DEVICE and ref.direction != DMA_TO_DEVICE:
            self.err_printk(dev, "sync_read_only_for_cpu",
                            f"device driver syncs device read-only DMA memory for cpu "
                            f"[device address=0x{a:016x}] [size={esize} bytes] "
                            f"[mapped with {_dir2name(edir)}] [synced with {_dir2name(ref.direction)}]",
                            a, ref.size)
        if not to_cpu and edir != DMA_TO_DEVICE and ref.direction != DMA_FROM_DEVICE:
            self.err_printk(dev, "sync_write_only_to_device",
                            f"device driver syncs device write-only DMA memory to device "
                            f"[device address=0x{a:016x}] [size={esize} bytes] "
                            f"[mapped with {_dir2name(edir)}] [synced with {_dir2name(ref.direction)}]",
                            a, ref.size)
        e = &self.pool[idx]
        if ref.sg_call_ents and ref.type == dma_debug_sg and ref.sg_call_ents != e.sg_call_ents:
            self.err_printk(dev, "sync_sg_count_mismatch",
                            f"device driver syncs DMA sg list with different entry count "
                            f"[map count={e.sg_call_ents}] [sync count={ref.sg_call_ents}]", a, ref.size)

    cdef void check_sg_segment(self, Device dev, scatterlist *s):
        """check_sg_segment(): segment length vs max_segment_size, boundary crossing."""
        cdef u64 max_seg = dev.max_segment_size if dev.max_segment_size else 65536
        cdef u64 boundary = dev.seg_boundary_mask if dev.seg_boundary_mask else U64_MAX
        cdef u64 start, end
        max_seg &= 0xFFFFFFFF                     # unsigned int dma_get_max_seg_size()
        if s.length > max_seg:
            self.err_printk(dev, "sg_segment_too_long",
                            f"mapping sg segment longer than device claims to support "
                            f"[len={s.length}] [max={max_seg}]", s.dma_address, s.length)
        start = s.dma_address
        end = start + s.dma_length - 1
        if (start ^ end) & ~boundary:
            self.err_printk(dev, "sg_segment_boundary",
                            f"mapping sg segment across boundary [start=0x{start:016x}] "
                            f"[end=0x{end:016x}] [boundary=0x{boundary:016x}]", start, s.dma_length)

    cdef int get_nr_mapped_entries(self, dma_debug_entry *ref) noexcept:
        cdef int idx = self.bucket_find_exact(ref)
        return self.pool[idx].sg_mapped_ents if idx >= 0 else 0

    # ---- the leak report (dma_debug_device_change, BUS_NOTIFY_UNBOUND_DRIVER) ---------------
    def device_removed(self, Device dev not None):
        """Driver unbind: report the device's live entries (they are not freed).

        Models kernel/dma/debug.c:dma_debug_device_change() for BUS_NOTIFY_UNBOUND_DRIVER (the
        "device driver has pending DMA allocations" leak report). Returns None. Raises TypeError for
        a non-Device. The report's DmaDebugWarning is queued and emitted by the next
        Machine.flush_warnings() (Machine.remove_device() calls this and flushes).
        """
        cdef int b, idx, count = 0, last = -1
        cdef dma_debug_entry *e
        if not self.enabled or self.nr_live == 0:
            return
        for b in range(HASH_SIZE):
            idx = self.bucket_head[b]
            while idx >= 0:
                if self.pool[idx].dev == <PyObject *>dev:
                    count += 1
                    last = idx
                idx = self.pool[idx].next
        if count == 0:
            return
        e = &self.pool[last]
        self.err_printk(dev, "leak",
                        f"device driver has pending DMA allocations while released from device "
                        f"[count={count}]\nOne of leaked entries details: "
                        f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
                        f"[mapped with {_dir2name(e.direction)}] [mapped as {_TYPE2NAME[e.type]}]",
                        e.dev_addr, e.size)

    # ---- inspection ----------------------------------------------------------------------
    cdef list _live(self, object dev):
        cdef int b, idx
        out = []
        for b in range(HASH_SIZE):
            idx = self.bucket_head[b]
            while idx >= 0:
                if dev is None or self.pool[idx].dev == <PyObject *>dev:
                    out.append((b, idx))
                idx = self.pool[idx].next
        return out

    def dump(self, dev=None):
        """The debugfs "dump" lines (dump_show); with ``dev``, debug_dma_dump_mappings(dev)'s
        dev_info lines for that device only.

        Models kernel/dma/debug.c:dump_show() and debug_dma_dump_mappings(). Returns a list of str
        (empty when nothing is live for ``dev``). Raises nothing.
        """
        cdef dma_debug_entry *e
        lines = []
        for b, idx in self._live(dev):
            e = &self.pool[<int>idx]
            name = (<Device>e.dev).name
            body = (f"{_TYPE2NAME[e.type]} idx {b} P=0x{e.paddr:016x} D={e.dev_addr:x} L={e.size:x} "
                    f"cln=0x{self.to_cacheline_number(e.paddr):016x} {_dir2name(e.direction)} "
                    f"{_MAPERR2STR[e.map_err_type]}")
            lines.append(f"{name} {name} {body}" if dev is None else f"{name} {name}: {body}")
        return lines

    def entries(self, dev=None):
        """Live entries in bucket order as dicts of the struct dma_debug_entry fields.

        Mirrors struct dma_debug_entry (kernel/dma/debug.c); simulator-only accessor. Returns a list
        of dicts (only ``dev``'s entries when given). Raises nothing.
        """
        cdef dma_debug_entry *e
        out = []
        for b, idx in self._live(dev):
            e = &self.pool[<int>idx]
            out.append({"device": (<Device>e.dev).name, "type": _TYPE2NAME[e.type],
                        "dev_addr": e.dev_addr, "size": e.size, "direction": e.direction,
                        "paddr": e.paddr, "map_err_type": _MAPERR2STR[e.map_err_type],
                        "sg_call_ents": e.sg_call_ents, "sg_mapped_ents": e.sg_mapped_ents,
                        "attrs": e.attrs, "bucket": b,
                        "bounce": None if e.tlb_addr == U64_MAX else e.tlb_addr})
        return out

    def get_state(self):
        """Counters, live entries and tracked cachelines, for differential tests.

        Simulator-only. Returns the dict. Raises nothing.
        """
        return {"error_count": self.error_count, "num_errors": self.num_errors,
                "all_errors": self.all_errors, "num_free_entries": self.num_free_entries,
                "min_free_entries": self.min_free_entries, "nr_total_entries": self.nr_total_entries,
                "entries": self.entries(), "cachelines": self._cachelines()}

    cdef list _cachelines(self):
        out = []
        for kv in self.cachelines:
            out.append((kv.first, kv.second))
        out.sort()
        return out

    def __repr__(self):
        return (f"<dmaphys.DmaDebug {'on' if self.enabled else 'off'} entries={self.nr_live} "
                f"error_count={self.error_count}>")

    def _test_stale_iotlb(self, Device dev, iova, stale_phys, current_phys):
        """Test hook: what the IOMMU core reports for a stale IOTLB hit."""
        debug_dma_stale_iotlb(dev, _u64(iova, "iova"), _u64(stale_phys, "stale_phys"),
                              _u64(current_phys, "current_phys"))
        self.machine.flush_warnings()


# ---- hooks called by mapping.pxi after the backend call (kernel/dma/mapping.c order) -----------
cdef inline void debug_dma_map_phys(Device dev, u64 phys, u64 size, int dir, u64 dma_addr,
                                    unsigned long attrs):
    """debug_dma_map_phys(): record a "phy" entry (not for DMA_MAPPING_ERROR)."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef int idx
    cdef dma_debug_entry *e
    if not dbg.enabled or dma_addr == DMA_MAPPING_ERROR:
        return
    dbg.mapping_error(dev, dma_addr)           # its internal dma_mapping_error() call
    idx = dbg.entry_alloc(dev)
    e = &dbg.pool[idx]
    e.type = dma_debug_phy
    e.paddr = phys
    e.dev_addr = dma_addr
    e.size = size
    e.direction = dir
    e.map_err_type = MAP_ERR_NOT_CHECKED
    e.attrs = attrs
    # check_for_stack / check_for_illegal_area: the simulation has no kernel stack or text
    if not (attrs & DMA_ATTR_MMIO):
        dbg.detect_bounce(idx, dev)
    dbg.add_dma_entry(idx, attrs)


cdef inline void debug_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir):
    """debug_dma_unmap_phys(): check_unmap with a "phy" reference."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef dma_debug_entry ref
    if not dbg.enabled:
        return
    memset(&ref, 0, sizeof(ref))
    ref.type = dma_debug_phy
    ref.dev = <PyObject *>dev
    ref.dev_addr = addr
    ref.size = size
    ref.direction = dir
    dbg.check_unmap(dev, &ref)


cdef inline void debug_dma_map_single(Device dev, u64 phys, u64 size):
    """debug_dma_map_single(): virt_addr_valid() — the buffer must be in the linear map: RAM, or
    P2PDMA pages (ZONE_DEVICE memory that memremap_pages() mapped); no vmalloc exists here."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    if (not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT)
            and dbg.machine.p2pdma.find_pgmap(phys & ~(<u64>PAGE_SIZE - 1)) < 0):
        dbg.err_printk(dev, "map_invalid_area",
                       f"device driver maps memory from invalid area "
                       f"[addr={(PAGE_OFFSET_X86_64 + phys) & 0xFFFFFFFFFFFFFFFF:016x}] [len={size}]",
                       phys, size)


cdef inline void debug_dma_mapping_error(Device dev, u64 dma_addr):
    """debug_dma_mapping_error(), from dma_mapping_error()."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.mapping_error(dev, dma_addr)


cdef inline void debug_dma_map_sg(Device dev, ScatterList sg, int nents, int mapped_ents, int dir,
                                  unsigned long attrs):
    """debug_dma_map_sg(): one "scatter-gather" entry per mapped segment."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef int i, idx
    cdef dma_debug_entry *e
    cdef scatterlist *s
    if not dbg.enabled:
        return
    for i in range(min(mapped_ents, <int>sg.sg.size())):
        s = &sg.sg[i]
        idx = dbg.entry_alloc(dev)
        e = &dbg.pool[idx]
        e.type = dma_debug_sg
        e.paddr = s.page_phys + s.offset
        e.size = s.dma_length
        e.dev_addr = s.dma_address
        e.direction = dir
        e.sg_call_ents = nents
        e.sg_mapped_ents = mapped_ents
        e.attrs = attrs
        if not (s.dma_flags & SG_DMA_BUS_ADDRESS):
            dbg.detect_bounce(idx, dev)
        dbg.check_sg_segment(dev, s)
        dbg.add_dma_entry(idx, attrs)


cdef inline void _sg_ref(dma_debug_entry *ref, Device dev, scatterlist *s, int nelems, int dir) noexcept:
    memset(ref, 0, sizeof(dma_debug_entry))
    ref.type = dma_debug_sg
    ref.dev = <PyObject *>dev
    ref.paddr = s.page_phys + s.offset
    ref.dev_addr = s.dma_address
    ref.size = s.dma_length
    ref.direction = dir
    ref.sg_call_ents = nelems


cdef inline void debug_dma_unmap_sg(Device dev, ScatterList sg, int nelems, int dir):
    """debug_dma_unmap_sg(): check_unmap per segment, up to the mapped count of the first."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef int i, mapped_ents = 0
    cdef dma_debug_entry ref
    if not dbg.enabled:
        return
    for i in range(min(nelems, <int>sg.sg.size())):
        _sg_ref(&ref, dev, &sg.sg[i], nelems, dir)
        if mapped_ents and i >= mapped_ents:
            break
        if i == 0:
            mapped_ents = dbg.get_nr_mapped_entries(&ref)
        dbg.check_unmap(dev, &ref)


cdef inline void _debug_sync_single(Device dev, u64 dma_handle, u64 size, int dir, bint to_cpu):
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef dma_debug_entry ref
    if not dbg.enabled:
        return
    memset(&ref, 0, sizeof(ref))
    ref.type = dma_debug_single
    ref.dev = <PyObject *>dev
    ref.dev_addr = dma_handle
    ref.size = size
    ref.direction = dir
    dbg.check_sync(dev, &ref, to_cpu)


cdef inline void debug_dma_sync_single_for_cpu(Device dev, u64 dma_handle, u64 size, int dir):
    """debug_dma_sync_single_for_cpu(): check_sync(to_cpu=true)."""
    _debug_sync_single(dev, dma_handle, size, dir, True)


cdef inline void debug_dma_sync_single_for_device(Device dev, u64 dma_handle, u64 size, int dir):
    """debug_dma_sync_single_for_device(): check_sync(to_cpu=false)."""
    _debug_sync_single(dev, dma_handle, size, dir, False)


cdef inline void _debug_sync_sg(Device dev, ScatterList sg, int nelems, int dir, bint to_cpu):
    # debug_dma_sync_sg_for_*(): nothing is checked when the first segment has no entry
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef int i, mapped_ents = 0
    cdef dma_debug_entry ref
    if not dbg.enabled:
        return
    for i in range(min(nelems, <int>sg.sg.size())):
        _sg_ref(&ref, dev, &sg.sg[i], nelems, dir)
        if i == 0:
            mapped_ents = dbg.get_nr_mapped_entries(&ref)
        if i >= mapped_ents:
            break
        dbg.check_sync(dev, &ref, to_cpu)


cdef inline void debug_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nelems, int dir):
    _debug_sync_sg(dev, sg, nelems, dir, True)


cdef inline void debug_dma_sync_sg_for_device(Device dev, ScatterList sg, int nelems, int dir):
    _debug_sync_sg(dev, sg, nelems, dir, False)


cdef inline void debug_dma_alloc_coherent(Device dev, u64 size, u64 dma_addr, u64 phys,
                                          unsigned long attrs):
    """debug_dma_alloc_coherent(): a "coherent" BIDIRECTIONAL entry. phys U64_MAX = NULL cpu_addr."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef int idx
    cdef dma_debug_entry *e
    if not dbg.enabled or phys == U64_MAX:
        return
    if not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT):   # !is_vmalloc_addr && !virt_addr_valid
        return
    idx = dbg.entry_alloc(dev)
    e = &dbg.pool[idx]
    e.type = dma_debug_coherent
    e.paddr = phys
    e.size = size
    e.dev_addr = dma_addr
    e.direction = DMA_BIDIRECTIONAL
    e.attrs = attrs
    dbg.add_dma_entry(idx, attrs)


cdef inline void debug_dma_free_coherent(Device dev, u64 size, u64 phys, u64 dma_addr):
    """debug_dma_free_coherent(): check_unmap with a "coherent" reference (CPU address compared)."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    cdef dma_debug_entry ref
    if not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT):
        return
    if not dbg.enabled:
        return
    memset(&ref, 0, sizeof(ref))
    ref.type = dma_debug_coherent
    ref.dev = <PyObject *>dev
    ref.dev_addr = dma_addr
    ref.size = size
    ref.direction = DMA_BIDIRECTIONAL
    ref.paddr = phys
    dbg.check_unmap(dev, &ref)


cdef inline void debug_dma_note_bounce(Device dev, u64 orig_phys, u64 tlb_addr):
    """Beyond the kernel: the bounce path (swiotlb_tbl_map_single's caller) tells dma-debug
    that the mapping of orig_phys about to be recorded for dev is bounced through tlb_addr.
    Needed only where the bus address does not translate to the slot by dma_to_phys()
    (dma-iommu); direct mappings are detected without it."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.note_bounce(dev, orig_phys, tlb_addr)


cdef inline void debug_dma_stale_iotlb(Device dev, u64 iova, u64 stale_phys, u64 current_phys):
    """Beyond the kernel: a device access used an IOTLB entry whose mapping was already unmapped."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    cur = "none" if current_phys == U64_MAX else f"0x{current_phys:016x}"
    dbg.report_extra(dev, "stale_iotlb",
                     f"device accessed DMA memory through a stale IOTLB entry after unmap "
                     f"[device address=0x{iova:016x}] [stale phys=0x{stale_phys:016x}] "
                     f"[current phys={cur}]", iova, 0)


def _test_debug_hooks(str op, Device dev, *args):
    """Test hook: call a debug_dma_* hook directly, for what the mapping API cannot reach yet:
    sg lists an IOMMU merged (map_sg / unmap_sg / sync_sg_for_device with mapped_ents < nents),
    debug_dma_map_single() on a pointer without a struct page (dma_map_single() refuses it as
    bad input first), and the dma-iommu bounce path's note_bounce."""
    cdef DmaDebug dbg = dev.machine.dma_debug
    if op == "map_sg":
        debug_dma_map_sg(dev, args[0], args[1], args[2], args[3], args[4])
    elif op == "unmap_sg":
        debug_dma_unmap_sg(dev, args[0], args[1], args[2])
    elif op == "sync_sg_for_device":
        debug_dma_sync_sg_for_device(dev, args[0], args[1], args[2])
    elif op == "map_single":
        debug_dma_map_single(dev, args[0], args[1])
    elif op == "note_bounce":
        debug_dma_note_bounce(dev, args[0], args[1])
    else:
        raise ValueError(op)
    dbg.machine.flush_warnings()
    dbg.raise_pending()


def _test_sg_set_dma(ScatterList sg, Py_ssize_t i, dma_address, dma_length, dma_flags=0):
    """Test hook: fill an entry's DMA fields the way a map_sg backend does."""
    if not 0 <= i < <Py_ssize_t>sg.sg.size():
        raise IndexError(i)
    sg.sg[i].dma_address = _u64(dma_address, "dma_address")
    sg.sg[i].dma_length = _u64(dma_length, "dma_length")
    sg.sg[i].dma_flags = <u32>dma_flags


__all__ += ["DmaDebug", "DmaDebugRecord"]
