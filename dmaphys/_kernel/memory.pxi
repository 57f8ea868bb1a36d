# The simulated machine's physical address space: RAM ranges, MMIO regions (BARs), sparse
# byte-accurate storage and a page allocator. Stands in for mm/ (memblock + the buddy
# allocator) and for the bus: everything else reads and writes physical memory through here.
#
# Storage is allocated per 4 KiB frame on first write: a never-written byte reads as 0.
# Frames are found through a two-level table indexed by pfn (like a sparse mem_map), so a
# lookup is two array loads. Physical addresses are limited to MAX_PHYS_BITS.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, memory.pxd.

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS


cdef u64 mem_cmp_bytes(const u8 *got, const u8 *want, u64 n, u64 base, long long *first) noexcept nogil:
    """The bytes of got[:n] that differ from want[:n] (``got`` NULL: n zeros, an absent frame);
    the first one's offset (``base`` + its index) goes to *first if that is still -1."""
    cdef u64 j, diff = 0
    if got != NULL and memcmp(got, want, n) == 0:
        return 0
    for j in range(n):
        if (got[j] if got != NULL else 0) != want[j]:
            if first[0] < 0:
                first[0] = <long long>(base + j)
            diff += 1
    return diff


cdef class RamBacking:
    """Holds one buffer export (Py_buffer) of an embedder's RAM buffer for as long as dmaphys
    uses the memory: while held, the exporter refuses to resize or release it (bytearray and
    numpy resize, mmap.close() and memoryview.release() raise BufferError / ValueError)."""
    cdef Py_buffer view
    cdef bint held

    cdef int acquire(self, object buffer) except -1:
        PyObject_GetBuffer(buffer, &self.view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        self.held = True
        return 0

    cdef void release(self) noexcept:
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        self.release()


cdef class PhysMem:
    """Sparse physical memory of a simulated machine (RAM + MMIO stores) and its page allocator.

    C-level API used by every other _kernel file:
      find_region(addr, size) -> index into regions or -1 (the whole range must lie in one region)
      page_ptr(pfn) -> frame storage or NULL (never written: reads as zeros)
      page_ptr_alloc(pfn) -> frame storage, allocated (zeroed) on demand
      read / write / copy / fill / read64 / write64 on physical addresses (caller validated)
      alloc_pages(npages, limit, align) -> phys or U64_MAX; free_pages(phys, npages) -> 0/-1

    Simulator-only stand-in for mm/ (memblock, the page allocator, struct page storage): the kernel
    has no such object. Made by the Machine (``m.mem``); ``PhysMem()`` is an empty memory; it
    raises MemoryError when the host cannot allocate its page directory.
    """

    def __cinit__(self):
        self.l1 = <u8 ***>calloc(PFN_L1_SIZE, sizeof(u8 **))
        if self.l1 == NULL:
            raise MemoryError()
        self.region_names = []
        self.backings = []

    def __dealloc__(self):
        cdef size_t i, j
        cdef u64 pfn
        if self.l1 == NULL:
            return
        for i in range(self.ext.size()):               # embedder frames are not ours to free
            for pfn in range(self.ext[i].spfn, self.ext[i].epfn):
                self.l1[pfn >> PFN_L2_SHIFT][pfn & (PFN_L2_SIZE - 1)] = NULL
        for i in range(PFN_L1_SIZE):
            if self.l1[i] != NULL:
                for j in range(PFN_L2_SIZE):
                    if self.l1[i][j] != NULL:
                        free(self.l1[i][j])
                free(self.l1[i])
        free(self.l1)

    # ---- regions -------------------------------------------------------------------------
    cdef int check_region(self, u64 start, u64 size, str name) except -1:
        """ValueError unless [start, start+size) is page aligned, non-empty, in the physical
        address space and overlaps no region."""
        cdef size_t i
        if size == 0 or start & (PAGE_SIZE - 1) or size & (PAGE_SIZE - 1):
            raise ValueError(f"{name}: region {start:#x}+{size:#x} must be page aligned and non-empty")
        if start + size > ((<u64>1) << MAX_PHYS_BITS) or start + size < start:
            raise ValueError(f"{name}: region {start:#x}+{size:#x} is beyond the "
                             f"{MAX_PHYS_BITS}-bit physical address space")
        for i in range(self.regions.size()):
            if start < self.regions[i].end and self.regions[i].start < start + size:
                raise ValueError(f"{name}: region {start:#x}+{size:#x} overlaps "
                                 f"{self.region_names[self.regions[i].index]!r}")
        return 0

    cdef int add_region(self, u64 start, u64 size, int kind, str name, bint allocatable=True) except -1:
        """Add a region; RAM joins the page allocator unless ``allocatable`` is false."""
        cdef phys_region r
        cdef size_t i
        self.check_region(start, size, name)
        r.start = start
        r.end = start + size
        r.kind = kind
        r.index = len(self.region_names)
        self.region_names.append(name)
        i = 0
        while i < self.regions.size() and self.regions[i].start < start:
            i += 1
        self.regions.insert(self.regions.begin() + i, r)
        if kind == REGION_RAM:
            self.ram_bytes += size
            if allocatable:
                self.free_range(start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT)
        return 0

    # ---- embedder-owned RAM (Machine.add_ram / remove_ram) ----------------------------------
    cdef int add_ext_ram(self, u64 start, object buffer, str name, bint allocatable) except -1:
        """Back [start, start + len(buffer)) with the buffer itself: each pfn's frame pointer
        is the address of its 4 KiB in the buffer (zero copy both ways). Nothing changes when
        this raises."""
        cdef RamBacking bk = RamBacking.__new__(RamBacking)
        cdef u64 size, spfn, epfn, pfn, i
        cdef u8 **l2
        cdef ext_ram x
        bk.acquire(buffer)
        size = <u64>bk.view.len
        self.check_region(start, size, name)
        spfn = start >> PAGE_SHIFT
        epfn = (start + size) >> PAGE_SHIFT
        for i in range(spfn >> PFN_L2_SHIFT, ((epfn - 1) >> PFN_L2_SHIFT) + 1):
            if self.l1[i] == NULL:
                l2 = <u8 **>calloc(PFN_L2_SIZE, sizeof(u8 *))
                if l2 == NULL:
                    raise MemoryError()
                self.l1[i] = l2
        self.add_region(start, size, REGION_RAM, name, allocatable)
        x.spfn = spfn
        x.epfn = epfn
        x.base = <u8 *>bk.view.buf
        x.allocatable = allocatable
        self.ext.push_back(x)
        self.backings.append(bk)
        for pfn in range(spfn, epfn):
            l2 = self.l1[pfn >> PFN_L2_SHIFT]
            if l2[pfn & (PFN_L2_SIZE - 1)] != NULL:      # never: no region was there
                free(l2[pfn & (PFN_L2_SIZE - 1)])
                self.resident_frames -= 1
            l2[pfn & (PFN_L2_SIZE - 1)] = x.base + ((pfn - spfn) << PAGE_SHIFT)
        self.frames_gen += 1
        return 0

    cdef int ext_index(self, u64 pfn) noexcept nogil:
        """Index in ext of the embedder range holding pfn, or -1."""
        cdef size_t i
        for i in range(self.ext.size()):
            if self.ext[i].spfn <= pfn < self.ext[i].epfn:
                return <int>i
        return -1

    cdef int remove_ext_ram(self, u64 start) except -1:
        """Forget the embedder range starting at ``start`` and release its buffer. The caller
        has checked that nothing uses it (no allocation, mapping or bounce slot)."""
        cdef int k = -1
        cdef size_t i
        cdef u64 spfn = start >> PAGE_SHIFT, epfn, pfn, s, e
        cdef cppmap[u64, u64].iterator it
        if start & (PAGE_SIZE - 1) == 0:
            for i in range(self.ext.size()):
                if self.ext[i].spfn == spfn:
                    k = <int>i
        if k < 0:
            raise ValueError(f"no embedder RAM (Machine.add_ram) starts at {start:#x}")
        epfn = self.ext[k].epfn
        if self.ext[k].allocatable:
            # the whole range is free: it lies in one (maximal) free extent; carve it out
            it = self.free_extents.upper_bound(spfn)
            if it == self.free_extents.begin():
                raise RuntimeError("remove_ext_ram: the range is not free")
            dec(it)
            s = deref(it).first
            e = deref(it).second
            if not (s <= spfn and epfn <= e):
                raise RuntimeError("remove_ext_ram: the range is not free")
            self.free_extents.erase(it)
            if s < spfn:
                self.free_extents[s] = spfn
            if epfn < e:
                self.free_extents[epfn] = e
        for pfn in range(spfn, epfn):
            self.l1[pfn >> PFN_L2_SHIFT][pfn & (PFN_L2_SIZE - 1)] = NULL
        self.frames_gen += 1
        for i in range(self.regions.size()):
            if self.regions[i].start == start:
                self.regions.erase(self.regions.begin() + i)
                break
        self.ram_bytes -= (epfn - spfn) << PAGE_SHIFT
        self.ext.erase(self.ext.begin() + k)
        bk = self.backings.pop(k)
        (<RamBacking>bk).release()
        return 0

    def ext_ram_list(self):
        """[(start, size, name, allocatable)] of the embedder-owned RAM ranges, in address order.

        Simulator-only. Returns the list. Raises nothing.
        """
        cdef size_t i, j
        out = []
        for i in range(self.ext.size()):
            for j in range(self.regions.size()):
                if self.regions[j].start == self.ext[i].spfn << PAGE_SHIFT:
                    out.append((self.regions[j].start, self.regions[j].end - self.regions[j].start,
                                self.region_names[self.regions[j].index], bool(self.ext[i].allocatable)))
        return sorted(out)

    cdef inline int find_region(self, u64 addr, u64 size) noexcept nogil:
        """Index of the region wholly containing [addr, addr+size), or -1."""
        cdef size_t i
        cdef u64 last
        if size == 0:
            size = 1
        last = addr + size - 1
        if last < addr:
            return -1
        for i in range(self.regions.size()):
            if addr >= self.regions[i].start and last < self.regions[i].end:
                return <int>i
        return -1

    cdef inline int region_kind(self, u64 addr, u64 size) noexcept nogil:
        cdef int i = self.find_region(addr, size)
        return 0 if i < 0 else self.regions[i].kind

    cdef inline bint pfn_valid(self, u64 pfn) noexcept nogil:
        """pfn_valid(): the frame is RAM (has a struct page)."""
        return self.region_kind(pfn << PAGE_SHIFT, PAGE_SIZE) == REGION_RAM

    # ---- frames --------------------------------------------------------------------------
    cdef inline u8 *page_ptr(self, u64 pfn) noexcept nogil:
        cdef u8 **l2
        if (pfn >> PFN_L2_SHIFT) >= PFN_L1_SIZE:
            return NULL
        l2 = self.l1[pfn >> PFN_L2_SHIFT]
        if l2 == NULL:
            return NULL
        return l2[pfn & (PFN_L2_SIZE - 1)]

    cdef u8 *page_ptr_alloc(self, u64 pfn) except NULL nogil:
        cdef u8 **l2
        cdef u8 *p
        if (pfn >> PFN_L2_SHIFT) >= PFN_L1_SIZE:
            with gil:
                raise PhysAddrError(pfn << PAGE_SHIFT, PAGE_SIZE, "beyond the physical address space")
        l2 = self.l1[pfn >> PFN_L2_SHIFT]
        if l2 == NULL:
            l2 = <u8 **>calloc(PFN_L2_SIZE, sizeof(u8 *))
            if l2 == NULL:
                with gil:
                    raise MemoryError()
            self.l1[pfn >> PFN_L2_SHIFT] = l2
        p = l2[pfn & (PFN_L2_SIZE - 1)]
        if p == NULL:
            p = <u8 *>calloc(1, PAGE_SIZE)
            if p == NULL:
                with gil:
                    raise MemoryError()
            l2[pfn & (PFN_L2_SIZE - 1)] = p
            self.resident_frames += 1
        return p

    cdef void discard(self, u64 pfn, u64 npages) noexcept nogil:
        """Drop the storage of frames (they read as zeros again). Embedder-owned frames are
        zeroed instead (the embedder's buffer stays where it is)."""
        cdef u64 i
        cdef u8 **l2
        for i in range(pfn, pfn + npages):
            if (i >> PFN_L2_SHIFT) >= PFN_L1_SIZE:
                return
            l2 = self.l1[i >> PFN_L2_SHIFT]
            if not self.ext.empty() and self.ext_index(i) >= 0:
                memset(l2[i & (PFN_L2_SIZE - 1)], 0, PAGE_SIZE)
                continue
            if l2 != NULL and l2[i & (PFN_L2_SIZE - 1)] != NULL:
                free(l2[i & (PFN_L2_SIZE - 1)])
                l2[i & (PFN_L2_SIZE - 1)] = NULL
                self.resident_frames -= 1
                self.frames_gen += 1

    # ---- byte access (callers have validated the range) ------------------------------------
    cdef void read(self, u64 addr, u8 *buf, u64 n) noexcept nogil:
        cdef u64 off, chunk
        cdef u8 *p
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = PAGE_SIZE - off
            if chunk > n:
                chunk = n
            p = self.page_ptr(addr >> PAGE_SHIFT)
            if p == NULL:
                memset(buf, 0, chunk)
            else:
                memcpy(buf, p + off, chunk)
            buf += chunk
            addr += chunk
            n -= chunk

    cdef u64 compare(self, u64 addr, const u8 *want, u64 n, u64 base, long long *first) noexcept nogil:
        """read(addr, n) compared with want[:n] where the bytes lie (a missing frame reads as
        zeros): the number of bytes that differ; the first one's offset (``base`` + its index)
        goes to *first if that is still -1 (the stress job's CPU-load checks)."""
        cdef u64 off, chunk, diff = 0
        cdef const u8 *p
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = PAGE_SIZE - off
            if chunk > n:
                chunk = n
            p = self.page_ptr(addr >> PAGE_SHIFT)
            diff += mem_cmp_bytes(p + off if p != NULL else NULL, want, chunk, base, first)
            want += chunk
            base += chunk
            addr += chunk
            n -= chunk
        return diff

    cdef int write(self, u64 addr, const u8 *buf, u64 n) except -1 nogil:
        cdef u64 off, chunk
        cdef u8 *p
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = PAGE_SIZE - off
            if chunk > n:
                chunk = n
            p = self.page_ptr_alloc(addr >> PAGE_SHIFT)
            memcpy(p + off, buf, chunk)
            buf += chunk
            addr += chunk
            n -= chunk
        return 0

    cdef int fill(self, u64 addr, u8 val, u64 n) except -1 nogil:
        cdef u64 off, chunk
        cdef u8 *p
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = PAGE_SIZE - off
            if chunk > n:
                chunk = n
            if val == 0:
                p = self.page_ptr(addr >> PAGE_SHIFT)
            else:
                p = self.page_ptr_alloc(addr >> PAGE_SHIFT)
            if p != NULL:
                memset(p + off, val, chunk)
            addr += chunk
            n -= chunk
        return 0

    cdef int copy(self, u64 dst, u64 src, u64 n) except -1 nogil:
        """memcpy between two physical ranges (swiotlb_bounce); never-written source reads 0."""
        cdef u8 tmp[PAGE_SIZE]
        cdef u64 chunk
        while n:
            chunk = PAGE_SIZE - (src & (PAGE_SIZE - 1))
            if chunk > PAGE_SIZE - (dst & (PAGE_SIZE - 1)):
                chunk = PAGE_SIZE - (dst & (PAGE_SIZE - 1))
            if chunk > n:
                chunk = n
            if self.page_ptr(src >> PAGE_SHIFT) == NULL and self.page_ptr(dst >> PAGE_SHIFT) == NULL:
                pass                                    # zeros onto zeros
            else:
                self.read(src, tmp, chunk)
                self.write(dst, tmp, chunk)
            src += chunk
            dst += chunk
            n -= chunk
        return 0

    cdef inline u64 read64(self, u64 addr) noexcept nogil:
        """Aligned little-endian 64-bit load (page-table entries)."""
        cdef u8 *p = self.page_ptr(addr >> PAGE_SHIFT)
        if p == NULL:
            return 0
        return (<u64 *>(p + (addr & (PAGE_SIZE - 1))))[0]

    cdef inline int write64(self, u64 addr, u64 val) except -1 nogil:
        cdef u8 *p = self.page_ptr_alloc(addr >> PAGE_SHIFT)
        (<u64 *>(p + (addr & (PAGE_SIZE - 1))))[0] = val
        return 0

    # ---- the CPU's write-back cache of non-coherently walked page tables ----------------
    cdef inline u64 wb_read64(self, u64 addr) noexcept nogil:
        """A CPU load of an aligned quadword: the dirty cache line if there is one, else memory."""
        cdef cppmap[u64, wb_line].iterator it
        if self.wb.empty():
            return self.read64(addr)
        it = self.wb.find(addr & ~(<u64>CACHE_LINE_SIZE - 1))
        if it == self.wb.end():
            return self.read64(addr)
        return deref(it).second.q[(addr >> 3) & 7]

    cdef int wb_write64(self, u64 addr, u64 val) except -1 nogil:
        """A CPU store of an aligned quadword into the cache: the line becomes (or stays) dirty;
        memory -- what a non-coherent device reads -- keeps its old bytes until wb_clean()."""
        cdef u64 line = addr & ~(<u64>CACHE_LINE_SIZE - 1)
        cdef wb_line l
        cdef int i
        if self.wb.find(line) == self.wb.end():
            for i in range(8):                   # line fill from memory
                l.q[i] = self.read64(line + 8 * i)
            self.wb[line] = l
        self.wb[line].q[(addr >> 3) & 7] = val
        return 0

    cdef u64 wb_clean(self, u64 addr, u64 size) except? 0xFFFFFFFFFFFFFFFF nogil:
        """Clean (write back) the dirty lines overlapping [addr, addr + size) to memory and drop
        them (dcache_clean_poc of arch_sync_dma_for_device); the number of lines written back."""
        cdef u64 first = addr & ~(<u64>CACHE_LINE_SIZE - 1), last, n = 0
        cdef int i
        cdef cppmap[u64, wb_line].iterator it
        if size == 0 or self.wb.empty():
            return 0
        last = addr + size - 1
        if last < addr:
            last = U64_MAX
        it = self.wb.lower_bound(first)
        while it != self.wb.end() and deref(it).first <= last:
            for i in range(8):
                self.write64(deref(it).first + 8 * i, deref(it).second.q[i])
            it = self.wb.erase(it)
            n += 1
        self.wb_lines_cleaned += n
        return n

    # ---- page allocator ------------------------------------------------------------------
    cdef void free_range(self, u64 spfn, u64 epfn) noexcept:
        """Give [spfn, epfn) back to the free extents, merging neighbours."""
        cdef cppmap[u64, u64].iterator it, prev
        if spfn >= epfn:
            return
        it = self.free_extents.lower_bound(spfn)
        if it != self.free_extents.end() and deref(it).first == epfn:
            epfn = deref(it).second
            it = self.free_extents.erase(it)
        if it != self.free_extents.begin():
            prev = it
            dec(prev)
            if deref(prev).second == spfn:
                spfn = deref(prev).first
                self.free_extents.erase(prev)
        self.free_extents[spfn] = epfn

    cdef u64 alloc_pages_c(self, u64 npages, u64 limit, u64 align) noexcept:
        """Top-down first fit below ``limit`` (exclusive, bytes), like memblock's default.

        ``align`` is in pages (power of two). Returns the physical address or U64_MAX.
        """
        cdef u64 limit_pfn = limit >> PAGE_SHIFT
        cdef u64 s, e, cand
        cdef cppmap[u64, u64].iterator it
        if npages == 0 or self.free_extents.empty():
            return U64_MAX
        it = self.free_extents.lower_bound(limit_pfn)
        while it != self.free_extents.begin():
            dec(it)
            s = deref(it).first
            e = deref(it).second
            if e > limit_pfn:
                e = limit_pfn
            if e < npages:
                continue
            cand = (e - npages) & ~(align - 1)
            if cand < s or cand + npages > e:
                continue
            # carve [cand, cand + npages) out of [s, old_e)
            e = deref(it).second
            self.free_extents.erase(it)
            if s < cand:
                self.free_extents[s] = cand
            if cand + npages < e:
                self.free_extents[cand + npages] = e
            self.allocated[cand] = npages
            self.allocated_pages += npages
            return cand << PAGE_SHIFT
        return U64_MAX

    cdef int free_pages_c(self, u64 phys, u64 npages) noexcept:
        """Free an allocation made by alloc_pages_c (exactly). 0, or -1 when it is not one."""
        cdef u64 pfn = phys >> PAGE_SHIFT
        cdef cppmap[u64, u64].iterator it
        if phys & (PAGE_SIZE - 1):
            return -1
        it = self.allocated.find(pfn)
        if it == self.allocated.end() or deref(it).second != npages:
            return -1
        self.allocated.erase(it)
        self.allocated_pages -= npages
        self.discard(pfn, npages)
        self.free_range(pfn, pfn + npages)
        return 0

    # ---- Python-level helpers ------------------------------------------------------------
    def cache_dirty_lines(self):
        """Simulator-only (the CPU's dirty write-back lines of non-coherently walked page tables,
        not yet cleaned to memory). Returns {line address: its 64 bytes as the CPU sees them}.
        Raises nothing.
        """
        cdef cppmap[u64, wb_line].iterator it = self.wb.begin()
        out = {}
        while it != self.wb.end():
            out[deref(it).first] = b"".join(deref(it).second.q[i].to_bytes(8, "little") for i in range(8))
            inc(it)
        return out

    def regions_list(self):
        """[(start, size, "ram"|"mmio", name)] in address order.

        Simulator-only (like /proc/iomem). Returns the list. Raises nothing.
        """
        cdef size_t i
        return [(self.regions[i].start, self.regions[i].end - self.regions[i].start,
                 "ram" if self.regions[i].kind == REGION_RAM else "mmio",
                 self.region_names[self.regions[i].index]) for i in range(self.regions.size())]

    def free_extents_list(self):
        """[(phys, size)] of the page allocator's free extents, in address order.

        Simulator-only. Returns the list. Raises nothing.
        """
        cdef list out = []
        cdef cppmap[u64, u64].iterator it = self.free_extents.begin()
        while it != self.free_extents.end():
            out.append((deref(it).first << PAGE_SHIFT, (deref(it).second - deref(it).first) << PAGE_SHIFT))
            inc(it)
        return out
