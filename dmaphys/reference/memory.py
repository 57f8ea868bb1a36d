"""Reference model of the simulated physical memory (mirrors dmaphys/_kernel/memory.pxi)."""

from __future__ import annotations

import bisect
import pickle

from ..errors import PhysAddrError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PHYS_BITS = 48
REGION_RAM = 1
REGION_MMIO = 2
U64_MAX = (1 << 64) - 1
CACHE_LINE_SIZE = 64                                      # cache_line_size() of the CPU's cache


class PhysMem:
    """Sparse memory: a dict of 4 KiB frames (bytearray) created on first write.

    Reference twin of dmaphys._core.PhysMem: same returns and raises, except that constructor
    arguments raise TypeError here (the core ignores them).
    """

    def __init__(self) -> None:
        self.frames: dict[int, bytearray] = {}
        self.regions: list[tuple[int, int, int, str]] = []   # (start, end, kind, name), sorted
        self.ram_bytes = 0
        self.free_extents: dict[int, int] = {}                # start_pfn -> end_pfn
        self.allocated: dict[int, int] = {}                   # start_pfn -> npages
        self.allocated_pages = 0
        # embedder-owned RAM: (spfn, epfn, allocatable, export holder, byte view), added order
        self.ext: list[tuple[int, int, bool, pickle.PickleBuffer, memoryview]] = []
        # the CPU's write-back cache of non-coherently walked page tables: dirty line address ->
        # its 8 quadwords (CPU stores not yet cleaned to memory; see memory.pxi)
        self.wb: dict[int, list[int]] = {}
        self.wb_lines_cleaned = 0

    @property
    def resident_frames(self) -> int:
        """Simulator-only: the number of 4 KiB frames holding storage (embedder RAM excluded)."""
        return len(self.frames) - sum(e - s for s, e, *_ in self.ext)

    # regions
    def check_region(self, start: int, size: int, name: str) -> None:
        """Simulator-only. Returns None. Raises ValueError for an empty or misaligned range, one
        beyond the physical address space or one overlapping a region.
        """
        if size == 0 or start % PAGE_SIZE or size % PAGE_SIZE:
            raise ValueError(f"{name}: region {start:#x}+{size:#x} must be page aligned and non-empty")
        if start + size > (1 << MAX_PHYS_BITS):
            raise ValueError(f"{name}: region {start:#x}+{size:#x} is beyond the "
                             f"{MAX_PHYS_BITS}-bit physical address space")
        for s, e, _, n in self.regions:
            if start < e and s < start + size:
                raise ValueError(f"{name}: region {start:#x}+{size:#x} overlaps {n!r}")

    def add_region(self, start: int, size: int, kind: int, name: str, allocatable: bool = True) -> None:
        """Simulator-only (a memblock / iomem region). Returns None. Raises ValueError as
        check_region() does.
        """
        self.check_region(start, size, name)
        bisect.insort(self.regions, (start, start + size, kind, name))
        if kind == REGION_RAM:
            self.ram_bytes += size
            if allocatable:
                self._free_range(start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT)

    # embedder-owned RAM (memory.pxi add_ext_ram / remove_ext_ram)
    def add_ext_ram(self, start: int, buffer, name: str, allocatable: bool) -> None:
        """Frames of [start, start+len) are 4 KiB memoryview slices of the buffer (zero copy).
        A pickle.PickleBuffer holds a buffer export (PyObject_GetBuffer, like the core's
        Py_buffer; a memoryview of a memoryview would not), so the embedder cannot resize or
        release the buffer meanwhile.

        Simulator-only (Machine.add_ram()). Returns None. Raises ValueError as check_region()
        does, TypeError for an object that exports no buffer.
        """
        holder = pickle.PickleBuffer(buffer)
        view = memoryview(buffer).cast("B")
        size = view.nbytes
        self.check_region(start, size, name)
        self.add_region(start, size, REGION_RAM, name, allocatable)
        spfn = start >> PAGE_SHIFT
        self.ext.append((spfn, spfn + size // PAGE_SIZE, bool(allocatable), holder, view))
        for i in range(size // PAGE_SIZE):
            self.frames[spfn + i] = view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]

    def _ext_of(self, pfn: int) -> bool:
        return any(s <= pfn < e for s, e, *_ in self.ext)

    def remove_ext_ram(self, start: int) -> None:
        """Simulator-only (Machine.remove_ram() after its checks). Returns None. Raises ValueError
        when no embedder RAM starts at ``start``.
        """
        spfn = start >> PAGE_SHIFT
        k = next((i for i, x in enumerate(self.ext) if x[0] == spfn and start % PAGE_SIZE == 0), None)
        if k is None:
            raise ValueError(f"no embedder RAM (Machine.add_ram) starts at {start:#x}")
        spfn, epfn, allocatable, holder, view = self.ext.pop(k)
        if allocatable:
            s = max(x for x in self.free_extents if x <= spfn)
            e = self.free_extents.pop(s)
            if s < spfn:
                self.free_extents[s] = spfn
            if epfn < e:
                self.free_extents[epfn] = e
        for pfn in range(spfn, epfn):
            self.frames.pop(pfn).release()
        self.regions = [r for r in self.regions if r[0] != start]
        self.ram_bytes -= (epfn - spfn) * PAGE_SIZE
        view.release()
        holder.release()

    def ext_ram_list(self) -> list[tuple[int, int, str, bool]]:
        """Reference twin of dmaphys._core.PhysMem.ext_ram_list: same returns and raises."""
        out = []
        for s, e, allocatable, *_ in self.ext:
            name = next(r[3] for r in self.regions if r[0] == s << PAGE_SHIFT)
            out.append((s << PAGE_SHIFT, (e - s) << PAGE_SHIFT, name, allocatable))
        return sorted(out)

    def find_region(self, addr: int, size: int) -> int:
        """Simulator-only. Returns the index of the region holding all of [addr, addr + size), or
        -1. Raises nothing.
        """
        last = addr + max(size, 1) - 1
        for i, (s, e, _, _) in enumerate(self.regions):
            if s <= addr and last < e:
                return i
        return -1

    def region_kind(self, addr: int, size: int) -> int:
        """Simulator-only. Returns REGION_RAM, REGION_MMIO or 0 (no single region). Raises nothing."""
        i = self.find_region(addr, size)
        return 0 if i < 0 else self.regions[i][2]

    def pfn_valid(self, pfn: int) -> bool:
        """Models pfn_valid() for RAM. Returns True when the page lies in RAM. Raises nothing."""
        return self.region_kind(pfn << PAGE_SHIFT, PAGE_SIZE) == REGION_RAM

    # bytes
    def read(self, addr: int, n: int) -> bytes:
        """Simulator-only (a CPU copy; callers validate). Returns ``n`` bytes (zeros for frames
        never written). Raises nothing.
        """
        out = bytearray()
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = min(PAGE_SIZE - off, n)
            f = self.frames.get(addr >> PAGE_SHIFT)
            out += bytes(chunk) if f is None else f[off:off + chunk]
            addr += chunk
            n -= chunk
        return bytes(out)

    def _frame_alloc(self, pfn: int) -> bytearray:
        """page_ptr_alloc(): the frame's storage, created zeroed on first use."""
        if pfn >= 1 << (MAX_PHYS_BITS - PAGE_SHIFT):
            raise PhysAddrError(pfn << PAGE_SHIFT, PAGE_SIZE, "beyond the physical address space")
        f = self.frames.get(pfn)
        if f is None:
            f = self.frames[pfn] = bytearray(PAGE_SIZE)
        return f

    def write(self, addr: int, data: bytes) -> None:
        """Simulator-only (a CPU copy; callers validate). Returns None. Raises PhysAddrError for a
        frame beyond the physical address space.
        """
        pos = 0
        n = len(data)
        while pos < n:
            off = addr & (PAGE_SIZE - 1)
            chunk = min(PAGE_SIZE - off, n - pos)
            f = self._frame_alloc(addr >> PAGE_SHIFT)
            f[off:off + chunk] = data[pos:pos + chunk]
            addr += chunk
            pos += chunk

    def fill(self, addr: int, val: int, n: int) -> None:
        """Like the core: a zero fill never creates frames (absent frames read as zero).

        Simulator-only (memset()). Returns None. Raises PhysAddrError for a frame beyond the
        physical address space.
        """
        while n:
            off = addr & (PAGE_SIZE - 1)
            chunk = min(PAGE_SIZE - off, n)
            f = self.frames.get(addr >> PAGE_SHIFT) if val == 0 else self._frame_alloc(addr >> PAGE_SHIFT)
            if f is not None:
                f[off:off + chunk] = bytes([val]) * chunk
            addr += chunk
            n -= chunk

    def copy(self, dst: int, src: int, n: int) -> None:
        """Like the core: zeros copied onto an absent frame leave it absent.

        Simulator-only (memmove()). Returns None. Raises PhysAddrError for a frame beyond the
        physical address space.
        """
        while n:
            chunk = min(PAGE_SIZE - (src & (PAGE_SIZE - 1)), PAGE_SIZE - (dst & (PAGE_SIZE - 1)), n)
            if (src >> PAGE_SHIFT) in self.frames or (dst >> PAGE_SHIFT) in self.frames:
                self.write(dst, self.read(src, chunk))
            src += chunk
            dst += chunk
            n -= chunk

    def read64(self, addr: int) -> int:
        """Simulator-only (a little-endian 64-bit load, as a page-table walk reads a PTE). Returns
        the int. Raises nothing.
        """
        return int.from_bytes(self.read(addr, 8), "little")

    def write64(self, addr: int, val: int) -> None:
        """Simulator-only (a little-endian 64-bit store). Returns None. Raises PhysAddrError for a
        frame beyond the physical address space, OverflowError for a value beyond 64 bits.
        """
        self.write(addr, val.to_bytes(8, "little"))

    # the CPU's write-back cache of non-coherently walked page tables
    def wb_read64(self, addr: int) -> int:
        """Simulator-only (a CPU load of a PTE of a non-coherently walked table: the dirty cache
        line if there is one, else memory). Returns the int. Raises nothing.
        """
        line = self.wb.get(addr & ~(CACHE_LINE_SIZE - 1))
        return self.read64(addr) if line is None else line[(addr >> 3) & 7]

    def wb_write64(self, addr: int, val: int) -> None:
        """Simulator-only (a CPU store into the write-back cache: memory keeps its old bytes until
        wb_clean()). Returns None. Raises nothing.
        """
        base = addr & ~(CACHE_LINE_SIZE - 1)
        line = self.wb.get(base)
        if line is None:                                  # line fill from memory
            line = self.wb[base] = [self.read64(base + 8 * i) for i in range(8)]
        line[(addr >> 3) & 7] = val

    def wb_clean(self, addr: int, size: int) -> int:
        """Simulator-only (the cache clean of arch_sync_dma_for_device(), dcache_clean_poc():
        write back and drop the dirty lines overlapping [addr, addr + size)). Returns the number
        of lines cleaned. Raises nothing.
        """
        if not size or not self.wb:
            return 0
        first, last = addr & ~(CACHE_LINE_SIZE - 1), min(addr + size - 1, U64_MAX)
        hit = sorted(k for k in self.wb if first <= k <= last)
        for base in hit:
            for i, q in enumerate(self.wb.pop(base)):
                self.write64(base + 8 * i, q)
        self.wb_lines_cleaned += len(hit)
        return len(hit)

    def discard(self, pfn: int, npages: int) -> None:
        """Simulator-only: drop the frames' storage (embedder RAM is zeroed instead). Returns None.
        Raises nothing.
        """
        for p in range(pfn, pfn + npages):
            if self.ext and self._ext_of(p):
                self.frames[p][:] = bytes(PAGE_SIZE)      # the embedder's memory stays; zero it
            else:
                self.frames.pop(p, None)

    # page allocator: top-down first fit, like memory.pxi
    def _free_range(self, spfn: int, epfn: int) -> None:
        if spfn >= epfn:
            return
        if epfn in self.free_extents:
            epfn = self.free_extents.pop(epfn)
        for s, e in list(self.free_extents.items()):
            if e == spfn:
                del self.free_extents[s]
                spfn = s
                break
        self.free_extents[spfn] = epfn

    def alloc_pages(self, npages: int, limit: int, align: int) -> int:
        """Models the page allocator (top-down first fit, like memory.pxi's alloc_pages_c()).
        Returns the physical address, or U64_MAX when no suitable free run exists. Raises
        nothing.
        """
        limit_pfn = limit >> PAGE_SHIFT
        if npages == 0:
            return U64_MAX
        for s in sorted((s for s in self.free_extents if s < limit_pfn), reverse=True):
            e = min(self.free_extents[s], limit_pfn)
            if e < npages:
                continue
            cand = (e - npages) & ~(align - 1)
            if cand < s or cand + npages > e:
                continue
            old_e = self.free_extents.pop(s)
            if s < cand:
                self.free_extents[s] = cand
            if cand + npages < old_e:
                self.free_extents[cand + npages] = old_e
            self.allocated[cand] = npages
            self.allocated_pages += npages
            return cand << PAGE_SHIFT
        return U64_MAX

    def free_pages(self, phys: int, npages: int) -> int:
        """Models free_pages() of a run alloc_pages() handed out (the exact run). Returns 0, or -1
        for anything else (nothing changed). Raises nothing.
        """
        pfn = phys >> PAGE_SHIFT
        if phys % PAGE_SIZE or self.allocated.get(pfn) != npages:
            return -1
        del self.allocated[pfn]
        self.allocated_pages -= npages
        self.discard(pfn, npages)
        self._free_range(pfn, pfn + npages)
        return 0

    def cache_dirty_lines(self) -> dict[int, bytes]:
        """Simulator-only (the CPU's dirty write-back lines of non-coherently walked page tables,
        not yet cleaned to memory). Returns {line address: its 64 bytes as the CPU sees them}.
        Raises nothing.
        """
        return {k: b"".join(q.to_bytes(8, "little") for q in v) for k, v in sorted(self.wb.items())}

    def regions_list(self) -> list[tuple[int, int, str, str]]:
        """Reference twin of dmaphys._core.PhysMem.regions_list: same returns and raises."""
        return [(s, e - s, "ram" if k == REGION_RAM else "mmio", n) for s, e, k, n in self.regions]

    def free_extents_list(self) -> list[tuple[int, int]]:
        """Reference twin of dmaphys._core.PhysMem.free_extents_list: same returns and raises."""
        return [(s << PAGE_SHIFT, (e - s) << PAGE_SHIFT) for s, e in sorted(self.free_extents.items())]

    def check_access(self, addr: int, n: int) -> None:
        """Simulator-only. Returns None. Raises PhysAddrError when [addr, addr + n) is not all in
        one RAM or MMIO region.
        """
        if self.find_region(addr, n) < 0:
            raise PhysAddrError(addr, n)
