"""Reference model of kernel/dma/debug.c (CONFIG_DMA_API_DEBUG, v6.18): mirrors debug.pxi.

Entries sit in 16384 buckets keyed on the DMA address only ((addr >> 13) & 16383), appended
at the bucket tail. Unmap lookups are best fit (size, type, direction, sg_call_ents) and give
nothing when two or more imperfect matches exist; sync lookups find a containing entry,
stepping back one bucket at a time. Reports follow err_printk(): every error is counted in
``error_count`` and recorded in ``errors``; a DmaDebugWarning is emitted only when the kernel
would print (driver filter passes and ``all_errors`` or ``num_errors`` > 0, default
num_errors = 1: only the first error); ``raise_errors`` turns the first report of an entry
point into DmaDebugError once its state changes are done (Machine.flush_warnings calls
``raise_pending``). The driver string is the device name.

Beyond the kernel, reported (recorded + warned every time, not counted in error_count):
a CPU read of bounced FROM_DEVICE/BIDIRECTIONAL data that the device wrote and nobody synced
yet, and a device access through a stale IOTLB entry.
"""

from __future__ import annotations

import collections
import logging

from ..errors import DmaDebugError, DmaDebugWarning
from ._util import LOG_RECORDS_MAX, U64_MAX, typed, u64

__all__ = ["DmaDebug", "DmaDebugRecord"]

_log = logging.getLogger("dmaphys")

DmaDebugRecord = collections.namedtuple("DmaDebugRecord", "kind device text address size")
DmaDebugRecord.__doc__ = ("One dma-debug report: kind, device, text, address, size.\n\n"
                          "Reference twin of dmaphys._core.DmaDebugRecord: same returns and raises.")

HASH_SIZE = 16384
HASH_FN_SHIFT = 13
HASH_FN_MASK = HASH_SIZE - 1
PREALLOC_DMA_DEBUG_ENTRIES = 1 << 16
DMA_DEBUG_DYNAMIC_ENTRIES = 32            # PAGE_SIZE / sizeof(struct dma_debug_entry) on x86-64
L1_CACHE_SHIFT = 6
PAGE_SHIFT = 12
ACTIVE_CACHELINE_MAX_OVERLAP = 7          # (1 << RADIX_TREE_MAX_TAGS) - 1
NAME_MAX_LEN = 64
PAGE_OFFSET_X86_64 = 0xffff888000000000

DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE = 0, 1, 2, 3
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
DMA_ATTR_MMIO = 1 << 10

dma_debug_single, dma_debug_sg, dma_debug_coherent, dma_debug_noncoherent, dma_debug_phy = range(5)
MAP_ERR_CHECK_NOT_APPLICABLE, MAP_ERR_NOT_CHECKED, MAP_ERR_CHECKED = range(3)
TYPE2NAME = ("single", "scatter-gather", "coherent", "noncoherent", "phy")
DIR2NAME = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")
MAPERR2STR = ("dma map error check not applicable", "dma map error not checked",
              "dma map error checked")


def dir2name(d: int) -> str:
    return DIR2NAME[d] if 0 <= d <= 3 else "DMA_NONE"


class Entry:
    """struct dma_debug_entry (+ the simulator's bounce tracking)."""

    __slots__ = ("dev", "dev_addr", "size", "type", "direction", "sg_call_ents", "sg_mapped_ents",
                 "paddr", "map_err_type", "attrs", "tlb_addr", "dirty_lo", "dirty_hi", "reported")

    def __init__(self, dev, type, dev_addr=0, size=0, direction=0, paddr=0, sg_call_ents=0,
                 sg_mapped_ents=0, map_err_type=MAP_ERR_CHECK_NOT_APPLICABLE, attrs=0):
        self.dev = dev
        self.type = type
        self.dev_addr = dev_addr
        self.size = size
        self.direction = direction
        self.paddr = paddr
        self.sg_call_ents = sg_call_ents
        self.sg_mapped_ents = sg_mapped_ents
        self.map_err_type = map_err_type
        self.attrs = attrs
        self.tlb_addr = U64_MAX
        self.dirty_lo = self.dirty_hi = 0
        self.reported = False


def hash_fn(dev_addr: int) -> int:
    return (dev_addr >> HASH_FN_SHIFT) & HASH_FN_MASK


def to_cacheline_number(paddr: int) -> int:
    return paddr >> L1_CACHE_SHIFT


class DmaDebug:
    """Reference twin of dmaphys._core.DmaDebug (``m.dma_debug``)."""

    def __init__(self, machine, enabled) -> None:
        self.machine = machine
        self.enabled = bool(enabled)
        self.raise_errors = False
        self.error_count = 0
        self.all_errors = 0
        self.num_errors = 1
        self._driver_name = ""
        self.errors: list = []
        self.errors_dropped = 0
        self._pending: list = []
        self.buckets: dict[int, list[Entry]] = collections.defaultdict(list)
        self.nr_live = 0
        self.cachelines: dict[int, int] = {}       # dma_active_cacheline: cln -> overlap
        self.pending_bounces: list[tuple] = []     # (dev, orig_phys, tlb_addr)
        self._set_prealloc(PREALLOC_DMA_DEBUG_ENTRIES)

    def _set_prealloc(self, n: int) -> None:
        self._nr_prealloc = n
        pages = -(-n // DMA_DEBUG_DYNAMIC_ENTRIES)
        self.nr_total_entries = pages * DMA_DEBUG_DYNAMIC_ENTRIES
        self.num_free_entries = self.nr_total_entries - self.nr_live
        self.min_free_entries = self.num_free_entries

    @property
    def nr_prealloc_entries(self) -> int:
        """Reference twin of dmaphys._core.DmaDebug.nr_prealloc_entries."""
        return self._nr_prealloc

    @nr_prealloc_entries.setter
    def nr_prealloc_entries(self, value) -> None:
        n = u64(value, "nr_prealloc_entries")
        if n == 0 or n > 0xFFFFFFFF:
            raise ValueError("nr_prealloc_entries must be in 1..2^32-1")
        if self.nr_live:
            raise ValueError("nr_prealloc_entries can only be set while no entry is live")
        self._set_prealloc(n)

    @property
    def disabled(self) -> bool:
        """Reference twin of dmaphys._core.DmaDebug.disabled."""
        return not self.enabled

    @property
    def driver_filter(self) -> str:
        """Reference twin of dmaphys._core.DmaDebug.driver_filter."""
        return self._driver_name

    @driver_filter.setter
    def driver_filter(self, value) -> None:
        s = str(value)[:NAME_MAX_LEN - 1]
        if not s or not (s[0].isascii() and s[0].isalnum()):      # filter_write()
            if self._driver_name:
                _log.info("DMA-API: switching off dma-debug driver filter")
            self._driver_name = ""
            return
        self._driver_name = s.split()[0]
        _log.info("DMA-API: enable driver filter for driver [%s]", self._driver_name)

    def __len__(self) -> int:
        return self.nr_live

    # ---- err_printk --------------------------------------------------------------------
    def err_printk(self, dev, kind: str, msg: str, addr: int, size: int) -> None:
        """Models kernel/dma/debug.c:err_printk(): count the error in error_count, record it in
        ``errors`` (bounded), queue a DmaDebugWarning when the kernel would print (num_errors /
        all_errors / driver_filter) and, with ``raise_errors``, queue the record for
        raise_pending(). Returns None. Raises nothing (the warning is emitted by the caller's
        flush_warnings()).
        """
        text = f"DMA-API: {dev.name} {dev.name}: {msg}"
        rec = DmaDebugRecord(kind, dev.name, text, addr, size)
        self.error_count += 1
        if len(self.errors) < LOG_RECORDS_MAX:
            self.errors.append(rec)
        else:
            self.errors_dropped += 1
        passes = not self._driver_name or dev.name == self._driver_name
        if passes and (self.all_errors or self.num_errors > 0):
            self.machine.kwarn(DmaDebugWarning, text)
        if not self.all_errors and self.num_errors > 0:
            self.num_errors -= 1
        if self.raise_errors:
            self._pending.append(rec)

    def report_extra(self, dev, kind: str, msg: str, addr: int, size: int) -> None:
        """Simulator-only report beyond the kernel (a misuse the kernel would not see): recorded
        and warned every time, never counted in error_count nor limited by num_errors. Returns
        None. Raises nothing (the warning is emitted by the caller's flush_warnings()). ``dev``
        None: a report with no device (an IOVA domain no device uses), named "iova".
        """
        name = dev.name if dev is not None else "iova"
        text = f"DMA-API: {name} {name}: {msg}"
        rec = DmaDebugRecord(kind, name, text, addr, size)
        if len(self.errors) < LOG_RECORDS_MAX:
            self.errors.append(rec)
        else:
            self.errors_dropped += 1
        self.machine.kwarn(DmaDebugWarning, text)
        if self.raise_errors:
            self._pending.append(rec)

    def raise_pending(self) -> None:
        """Reference twin of dmaphys._core.DmaDebug.raise_pending: same returns and raises."""
        if self._pending:
            rec = self._pending[0]
            self._pending = []
            raise DmaDebugError(rec.text)

    # ---- entry pool -----------------------------------------------------------------------
    def entry_alloc(self, entry: Entry) -> Entry:
        """Models kernel/dma/debug.c:dma_entry_alloc(): take an entry from the pool, growing it by
        a page of entries when empty (logged as the kernel does). Returns ``entry``. Raises
        nothing.
        """
        if self.num_free_entries == 0:                         # dma_entry_alloc() growth
            self.num_free_entries += DMA_DEBUG_DYNAMIC_ENTRIES
            self.nr_total_entries += DMA_DEBUG_DYNAMIC_ENTRIES
            nr = self.nr_total_entries
            if nr % self._nr_prealloc < DMA_DEBUG_DYNAMIC_ENTRIES:
                _log.info("DMA-API: dma_debug_entry pool grown to %u (%u00%%)", nr, nr // self._nr_prealloc)
        self.num_free_entries -= 1
        self.min_free_entries = min(self.min_free_entries, self.num_free_entries)
        self.nr_live += 1
        return entry

    def entry_free(self, e: Entry) -> None:
        """Models kernel/dma/debug.c:dma_entry_free(): drop the entry's cacheline tracking and
        return it to the pool. Returns None. Raises nothing.
        """
        self.active_cacheline_remove(e)
        self.num_free_entries += 1
        self.nr_live -= 1

    # ---- lookups --------------------------------------------------------------------------
    def hash_bucket_find(self, b: int, ref: Entry, containing: bool):
        """__hash_bucket_find(): best fit; two or more matches without a perfect one → None.

        Models kernel/dma/debug.c:__hash_bucket_find(). Returns the matching entry or None.
        Raises nothing.
        """
        ret, matches, last_lvl = None, 0, -1
        for e in self.buckets.get(b, ()):
            if e.dev is not ref.dev:
                continue
            if containing:
                # containing_match(): u64 arithmetic (a wrapping sync can match; see check_sync)
                if not (e.dev_addr <= ref.dev_addr
                        and (e.dev_addr + e.size) & U64_MAX >= (ref.dev_addr + ref.size) & U64_MAX):
                    continue
            elif e.dev_addr != ref.dev_addr:
                continue
            matches += 1
            lvl = ((e.size == ref.size) + (e.type == ref.type) + (e.direction == ref.direction)
                   + (e.sg_call_ents == ref.sg_call_ents))
            if lvl == 4:
                return e
            if lvl > last_lvl:
                last_lvl, ret = lvl, e
        return ret if matches == 1 else None

    def bucket_find_exact(self, ref: Entry):
        """Models kernel/dma/debug.c:bucket_find_exact(). Returns the entry for ``ref.dev_addr`` or
        None. Raises nothing.
        """
        return self.hash_bucket_find(hash_fn(ref.dev_addr), ref, False)

    def bucket_find_contain(self, ref: Entry):
        """Models kernel/dma/debug.c:bucket_find_contain(): the entry whose range contains ``ref``,
        searching lower buckets as the kernel does. Returns the entry or None. Raises nothing.
        """
        addr = ref.dev_addr
        for _ in range(min(HASH_SIZE, (ref.dev_addr >> HASH_FN_SHIFT) + 1)):
            e = self.hash_bucket_find(hash_fn(addr), ref, True)
            if e is not None:
                return e
            addr = (addr - (1 << HASH_FN_SHIFT)) & U64_MAX
        return None

    # ---- cachelines -----------------------------------------------------------------------
    def active_cacheline_insert(self, e: Entry) -> int:
        """Models kernel/dma/debug.c:active_cacheline_insert(): DMA_TO_DEVICE mappings are not
        tracked. Returns 0, or -EEXIST (-17) when the cacheline is already mapped. Raises
        nothing; queues a DmaDebugWarning once the overlap count would exceed
        ACTIVE_CACHELINE_MAX_OVERLAP.
        """
        if e.direction == DMA_TO_DEVICE:
            return 0
        cln = to_cacheline_number(e.paddr)
        if cln not in self.cachelines:
            self.cachelines[cln] = 0
            return 0
        overlap = self.cachelines[cln] + 1
        if overlap > ACTIVE_CACHELINE_MAX_OVERLAP:
            self.machine.kwarn(
                DmaDebugWarning,
                f"DMA-API: exceeded {ACTIVE_CACHELINE_MAX_OVERLAP} overlapping mappings "
                f"of cacheline {cln:#018x}",
                "dma-debug: exceeded overlapping mappings")
        else:
            self.cachelines[cln] = overlap
        return -17                                  # -EEXIST

    def active_cacheline_remove(self, e: Entry) -> None:
        """Models kernel/dma/debug.c:active_cacheline_remove(). Returns None. Raises nothing."""
        if e.direction == DMA_TO_DEVICE:
            return
        cln = to_cacheline_number(e.paddr)
        if cln not in self.cachelines:
            return
        if self.cachelines[cln] - 1 < 0:
            del self.cachelines[cln]
        else:
            self.cachelines[cln] -= 1

    def add_dma_entry(self, e: Entry, attrs: int) -> None:
        """Models kernel/dma/debug.c:add_dma_entry(): hash the entry and track its cacheline; an
        overlap without DMA_ATTR_SKIP_CPU_SYNC is reported ("cacheline tracking EEXIST").
        Returns None. Raises nothing.
        """
        self.buckets[hash_fn(e.dev_addr)].append(e)
        rc = self.active_cacheline_insert(e)
        if rc == -17 and not attrs & DMA_ATTR_SKIP_CPU_SYNC:
            self.err_printk(e.dev, "cacheline_overlap",
                            "cacheline tracking EEXIST, overlapping mappings aren't supported",
                            e.dev_addr, e.size)

    # ---- bounce tracking (beyond the kernel) -----------------------------------------------
    def _bounced_entries(self):
        for lst in self.buckets.values():
            for e in lst:
                if e.tlb_addr != U64_MAX:
                    yield e

    def detect_bounce(self, e: Entry, dev) -> None:
        """Simulator-only (beyond kernel/dma/debug.c): note the swiotlb slot a new entry bounces
        through (``e.tlb_addr``), so CPU reads of unsynced bounced data can be reported. Returns
        None. Raises nothing.
        """
        from .machine import dma_to_phys
        tlb = U64_MAX
        keep = []
        for pdev, orig, t in self.pending_bounces:
            if pdev is dev:
                if tlb == U64_MAX and orig == e.paddr:
                    tlb = t
            else:
                keep.append((pdev, orig, t))
        self.pending_bounces = keep
        translating = dev.domain is not None and dev.domain.translates
        if tlb == U64_MAX and not translating and dev.dma_io_tlb_mem is not None:
            mem = dev.dma_io_tlb_mem
            t = dma_to_phys(dev, e.dev_addr)
            if t != e.paddr and mem.start <= t < mem.end:
                tlb = t
        e.tlb_addr = tlb

    def cpu_access(self, phys: int, n: int, write: bool) -> None:
        """Simulator-only (beyond kernel/dma/debug.c): a CPU read overlapping data a device wrote
        to a bounce slot that was not yet synced for the CPU is reported once per entry
        (report_extra()). Returns None. Raises nothing.
        """
        if write or not self.enabled:
            return
        for e in self._bounced_entries():
            if e.dirty_lo == e.dirty_hi or e.reported:
                continue
            if e.direction not in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
                continue
            if phys < e.paddr + e.dirty_hi and phys + n > e.paddr + e.dirty_lo:
                e.reported = True
                self.report_extra(
                    e.dev, "bounced_cpu_read",
                    f"cpu reads bounced DMA memory the device wrote before it was synced for cpu "
                    f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
                    f"[cpu address=0x{phys:016x}] [bounce address=0x{e.tlb_addr:016x}] "
                    f"[mapped with {dir2name(e.direction)}]", e.dev_addr, e.size)

    def device_wrote(self, dev, phys: int, n: int) -> None:
        """Simulator-only (beyond kernel/dma/debug.c): record the part of each bounced entry's slot
        a device write touched. Returns None. Raises nothing.
        """
        if not self.enabled:
            return
        for e in self._bounced_entries():
            if phys < e.tlb_addr + e.size and phys + n > e.tlb_addr:
                lo = max(phys - e.tlb_addr, 0)
                hi = min(phys + n - e.tlb_addr, e.size)
                if e.dirty_lo == e.dirty_hi:
                    e.dirty_lo, e.dirty_hi, e.reported = lo, hi, False
                else:
                    e.dirty_lo, e.dirty_hi = min(e.dirty_lo, lo), max(e.dirty_hi, hi)

    @staticmethod
    def synced_for_cpu(e: Entry, dev_addr: int, size: int, dir: int) -> None:
        """Simulator-only (beyond kernel/dma/debug.c): a sync for the CPU of [dev_addr, dev_addr +
        size) clears that part of the entry's unsynced range (FROM_DEVICE / BIDIRECTIONAL only).
        Returns None. Raises nothing.
        """
        if e.dirty_lo == e.dirty_hi or dir not in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
            return
        lo = dev_addr - e.dev_addr
        hi = lo + size
        if lo <= e.dirty_lo and hi >= e.dirty_hi:
            e.dirty_lo = e.dirty_hi = 0
        elif lo <= e.dirty_lo < hi:
            e.dirty_lo = hi
        elif lo < e.dirty_hi <= hi:
            e.dirty_hi = lo

    # ---- checks ---------------------------------------------------------------------------
    def mapping_error(self, dev, dma_addr: int) -> None:
        """Models kernel/dma/debug.c:debug_dma_mapping_error(): mark the device's unchecked entry
        at ``dma_addr`` as checked. Returns None. Raises nothing.
        """
        for e in self.buckets.get(hash_fn(dma_addr), ()):
            if e.dev is dev and e.dev_addr == dma_addr and e.map_err_type == MAP_ERR_NOT_CHECKED:
                e.map_err_type = MAP_ERR_CHECKED
                return

    def check_unmap(self, ref: Entry) -> None:
        """Models kernel/dma/debug.c:check_unmap(): report an unmap of memory not mapped, or with
        another size, type, direction, sg count or an unchecked map error, then free the entry.
        Returns None. Raises nothing (reports are queued DmaDebugWarnings).
        """
        dev, a = ref.dev, ref.dev_addr
        e = self.bucket_find_exact(ref)
        if e is None:
            self.mapping_error(dev, a)              # dma_mapping_error()'s debug hook
            if a == U64_MAX:
                self.err_printk(dev, "invalid_address",
                                "device driver tries to free an invalid DMA memory address", a, ref.size)
            else:
                self.err_printk(dev, "not_allocated",
                                f"device driver tries to free DMA memory it has not allocated "
                                f"[device address=0x{a:016x}] [size={ref.size} bytes]", a, ref.size)
            return
        if ref.size != e.size:
            self.err_printk(dev, "size_mismatch",
                            f"device driver frees DMA memory with different size "
                            f"[device address=0x{a:016x}] [map size={e.size} bytes] "
                            f"[unmap size={ref.size} bytes]", a, ref.size)
        if ref.type != e.type:
            self.err_printk(dev, "wrong_function",
                            f"device driver frees DMA memory with wrong function "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped as {TYPE2NAME[e.type]}] [unmapped as {TYPE2NAME[ref.type]}]",
                            a, ref.size)
        elif e.type in (dma_debug_coherent, dma_debug_noncoherent) and ref.paddr != e.paddr:
            self.err_printk(dev, "cpu_address_mismatch",
                            f"device driver frees DMA memory with different CPU address "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[cpu alloc address=0x{e.paddr:016x}] [cpu free address=0x{ref.paddr:016x}]",
                            a, ref.size)
        if ref.sg_call_ents and ref.type == dma_debug_sg and ref.sg_call_ents != e.sg_call_ents:
            self.err_printk(dev, "sg_count_mismatch",
                            f"device driver frees DMA sg list with different entry count "
                            f"[map count={e.sg_call_ents}] [unmap count={ref.sg_call_ents}]", a, ref.size)
        if ref.direction != e.direction:
            self.err_printk(dev, "direction_mismatch",
                            f"device driver frees DMA memory with different direction "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped with {dir2name(e.direction)}] "
                            f"[unmapped with {dir2name(ref.direction)}]", a, ref.size)
        if e.map_err_type == MAP_ERR_NOT_CHECKED:
            self.err_printk(dev, "map_error_not_checked",
                            f"device driver failed to check map error"
                            f"[device address=0x{a:016x}] [size={ref.size} bytes] "
                            f"[mapped as {TYPE2NAME[e.type]}]", a, ref.size)
        self.buckets[hash_fn(e.dev_addr)].remove(e)
        self.entry_free(e)

    def check_sync(self, ref: Entry, to_cpu: bool) -> None:
        """Models kernel/dma/debug.c:check_sync(): report a sync of memory not mapped, beyond the
        mapping or with another direction. Returns None. Raises nothing (reports are queued
        DmaDebugWarnings).
        """
        dev, a = ref.dev, ref.dev_addr
        e = self.bucket_find_contain(ref)
        if e is None:
            self.err_printk(dev, "sync_not_allocated",
                            f"device driver tries to sync DMA memory it has not allocated "
                            f"[device address=0x{a:016x}] [size={ref.size} bytes]", a, ref.size)
            return
        if to_cpu and e.tlb_addr != U64_MAX:
            self.synced_for_cpu(e, a, ref.size, ref.direction)
        if ref.size > e.size:
            self.err_printk(dev, "sync_out_of_range",
                            f"device driver syncs DMA memory outside allocated range "
                            f"[device address=0x{e.dev_addr:016x}] [allocation size={e.size} bytes] "
                            f"[sync offset+size={ref.size}]", a, ref.size)
        if e.direction == DMA_BIDIRECTIONAL:
            return
        tail = (f"[device address=0x{a:016x}] [size={e.size} bytes] "
                f"[mapped with {dir2name(e.direction)}] [synced with {dir2name(ref.direction)}]")
        if ref.direction != e.direction:
            self.err_printk(dev, "sync_direction_mismatch",
                            f"device driver syncs DMA memory with different direction {tail}", a, ref.size)
        if to_cpu and e.direction != DMA_FROM_DEVICE and ref.direction != DMA_TO_DEVICE:
            self.err_printk(dev, "sync_read_only_for_cpu",
                            f"device driver syncs device read-only DMA memory for cpu {tail}", a, ref.size)
        if not to_cpu and e.direction != DMA_TO_DEVICE and ref.direction != DMA_FROM_DEVICE:
            self.err_printk(dev, "sync_write_only_to_device",
                            f"device driver syncs device write-only DMA memory to device {tail}", a, ref.size)
        if ref.sg_call_ents and ref.type == dma_debug_sg and ref.sg_call_ents != e.sg_call_ents:
            self.err_printk(dev, "sync_sg_count_mismatch",
                            f"device driver syncs DMA sg list with different entry count "
                            f"[map count={e.sg_call_ents}] [sync count={ref.sg_call_ents}]", a, ref.size)

    def check_sg_segment(self, dev, s) -> None:
        """Models kernel/dma/debug.c:check_sg_segment(): report a segment longer than the device's
        max_segment_size or crossing its segment boundary. Returns None. Raises nothing.
        """
        max_seg = (dev.max_segment_size or 65536) & 0xFFFFFFFF
        boundary = dev.seg_boundary_mask or U64_MAX
        if s.length > max_seg:
            self.err_printk(dev, "sg_segment_too_long",
                            f"mapping sg segment longer than device claims to support "
                            f"[len={s.length}] [max={max_seg}]", s.dma_address, s.length)
        start = s.dma_address
        end = (start + s.dma_length - 1) & U64_MAX
        if (start ^ end) & ~boundary & U64_MAX:
            self.err_printk(dev, "sg_segment_boundary",
                            f"mapping sg segment across boundary [start=0x{start:016x}] "
                            f"[end=0x{end:016x}] [boundary=0x{boundary:016x}]", start, s.dma_length)

    def get_nr_mapped_entries(self, ref: Entry) -> int:
        """Models kernel/dma/debug.c:get_nr_mapped_entries(). Returns the entry's sg_mapped_ents,
        or 0 when there is none. Raises nothing.
        """
        e = self.bucket_find_exact(ref)
        return e.sg_mapped_ents if e is not None else 0

    # ---- leak report ----------------------------------------------------------------------
    def device_removed(self, dev) -> None:
        """Reference twin of dmaphys._core.DmaDebug.device_removed: same returns and raises."""
        from . import machine
        typed(dev, machine.Device, "dev")
        if not self.enabled or not self.nr_live:
            return
        mine = [e for e in self._live() if e.dev is dev]
        if not mine:
            return
        e = mine[-1]
        self.err_printk(dev, "leak",
                        f"device driver has pending DMA allocations while released from device "
                        f"[count={len(mine)}]\nOne of leaked entries details: "
                        f"[device address=0x{e.dev_addr:016x}] [size={e.size} bytes] "
                        f"[mapped with {dir2name(e.direction)}] [mapped as {TYPE2NAME[e.type]}]",
                        e.dev_addr, e.size)

    # ---- inspection ----------------------------------------------------------------------
    def _live(self, dev=None):
        for b in sorted(self.buckets):
            for e in self.buckets[b]:
                if dev is None or e.dev is dev:
                    yield e

    def dump(self, dev=None) -> list[str]:
        """Reference twin of dmaphys._core.DmaDebug.dump: same returns and raises."""
        lines = []
        for e in self._live(dev):
            name = e.dev.name
            body = (f"{TYPE2NAME[e.type]} idx {hash_fn(e.dev_addr)} P=0x{e.paddr:016x} D={e.dev_addr:x} "
                    f"L={e.size:x} cln=0x{to_cacheline_number(e.paddr):016x} {dir2name(e.direction)} "
                    f"{MAPERR2STR[e.map_err_type]}")
            lines.append(f"{name} {name} {body}" if dev is None else f"{name} {name}: {body}")
        return lines

    def entries(self, dev=None) -> list[dict]:
        """Reference twin of dmaphys._core.DmaDebug.entries: same returns and raises."""
        return [{"device": e.dev.name, "type": TYPE2NAME[e.type], "dev_addr": e.dev_addr,
                 "size": e.size, "direction": e.direction, "paddr": e.paddr,
                 "map_err_type": MAPERR2STR[e.map_err_type], "sg_call_ents": e.sg_call_ents,
                 "sg_mapped_ents": e.sg_mapped_ents, "attrs": e.attrs, "bucket": hash_fn(e.dev_addr),
                 "bounce": None if e.tlb_addr == U64_MAX else e.tlb_addr}
                for e in self._live(dev)]

    def get_state(self) -> dict:
        """Reference twin of dmaphys._core.DmaDebug.get_state: same returns and raises."""
        return {"error_count": self.error_count, "num_errors": self.num_errors,
                "all_errors": self.all_errors, "num_free_entries": self.num_free_entries,
                "min_free_entries": self.min_free_entries, "nr_total_entries": self.nr_total_entries,
                "entries": self.entries(), "cachelines": sorted(self.cachelines.items())}

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.DmaDebug {'on' if self.enabled else 'off'} entries={self.nr_live} "
                f"error_count={self.error_count}>")

    def _test_stale_iotlb(self, dev, iova, stale_phys, current_phys) -> None:
        debug_dma_stale_iotlb(dev, u64(iova, "iova"), u64(stale_phys, "stale_phys"),
                              u64(current_phys, "current_phys"))
        self.machine.flush_warnings()


# ---- hooks (kernel/dma/debug.c entry points; same names as debug.pxi) ----------------------------
def debug_dma_map_phys(dev, phys: int, size: int, dir: int, dma_addr: int, attrs: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled or dma_addr == U64_MAX:
        return
    dbg.mapping_error(dev, dma_addr)
    e = dbg.entry_alloc(Entry(dev, dma_debug_phy, dma_addr, size, dir, phys,
                              map_err_type=MAP_ERR_NOT_CHECKED, attrs=attrs))
    if not attrs & DMA_ATTR_MMIO:
        dbg.detect_bounce(e, dev)
    dbg.add_dma_entry(e, attrs)


def debug_dma_unmap_phys(dev, addr: int, size: int, dir: int) -> None:
    dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.check_unmap(Entry(dev, dma_debug_phy, addr, size, dir))


def debug_dma_map_single(dev, phys: int, size: int) -> None:
    dbg = dev.machine.dma_debug
    # virt_addr_valid(): RAM, or P2PDMA (ZONE_DEVICE) pages, which memremap_pages() maps
    if (dbg.enabled and not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT)
            and dbg.machine.p2pdma.find_pgmap(phys & ~((1 << PAGE_SHIFT) - 1)) is None):
        dbg.err_printk(dev, "map_invalid_area",
                       f"device driver maps memory from invalid area "
                       f"[addr={(PAGE_OFFSET_X86_64 + phys) & U64_MAX:016x}] [len={size}]", phys, size)


def debug_dma_mapping_error(dev, dma_addr: int) -> None:
    dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.mapping_error(dev, dma_addr)


def debug_dma_map_sg(dev, sg, nents: int, mapped_ents: int, dir: int, attrs: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    for i in range(min(mapped_ents, len(sg))):
        s = sg[i]
        e = dbg.entry_alloc(Entry(dev, dma_debug_sg, s.dma_address, s.dma_length, dir, s.phys,
                                  sg_call_ents=nents, sg_mapped_ents=mapped_ents, attrs=attrs))
        if not s.dma_flags & 1:                     # not SG_DMA_BUS_ADDRESS
            dbg.detect_bounce(e, dev)
        dbg.check_sg_segment(dev, s)
        dbg.add_dma_entry(e, attrs)


def _sg_ref(dev, s, nelems: int, dir: int) -> Entry:
    return Entry(dev, dma_debug_sg, s.dma_address, s.dma_length, dir, s.phys, sg_call_ents=nelems)


def debug_dma_unmap_sg(dev, sg, nelems: int, dir: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    mapped_ents = 0
    for i in range(min(nelems, len(sg))):
        ref = _sg_ref(dev, sg[i], nelems, dir)
        if mapped_ents and i >= mapped_ents:
            break
        if i == 0:
            mapped_ents = dbg.get_nr_mapped_entries(ref)
        dbg.check_unmap(ref)


def _sync_single(dev, dma_handle: int, size: int, dir: int, to_cpu: bool) -> None:
    dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.check_sync(Entry(dev, dma_debug_single, dma_handle, size, dir), to_cpu)


def debug_dma_sync_single_for_cpu(dev, dma_handle: int, size: int, dir: int) -> None:
    _sync_single(dev, dma_handle, size, dir, True)


def debug_dma_sync_single_for_device(dev, dma_handle: int, size: int, dir: int) -> None:
    _sync_single(dev, dma_handle, size, dir, False)


def _sync_sg(dev, sg, nelems: int, dir: int, to_cpu: bool) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    mapped_ents = 0
    for i in range(min(nelems, len(sg))):
        ref = _sg_ref(dev, sg[i], nelems, dir)
        if i == 0:
            mapped_ents = dbg.get_nr_mapped_entries(ref)
        if i >= mapped_ents:
            break
        dbg.check_sync(ref, to_cpu)


def debug_dma_sync_sg_for_cpu(dev, sg, nelems: int, dir: int) -> None:
    _sync_sg(dev, sg, nelems, dir, True)


def debug_dma_sync_sg_for_device(dev, sg, nelems: int, dir: int) -> None:
    _sync_sg(dev, sg, nelems, dir, False)


def debug_dma_alloc_coherent(dev, size: int, dma_addr: int, phys: int, attrs: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled or phys == U64_MAX or not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT):
        return
    e = dbg.entry_alloc(Entry(dev, dma_debug_coherent, dma_addr, size, DMA_BIDIRECTIONAL, phys, attrs=attrs))
    dbg.add_dma_entry(e, attrs)


def debug_dma_free_coherent(dev, size: int, phys: int, dma_addr: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.machine.mem.pfn_valid(phys >> PAGE_SHIFT) or not dbg.enabled:
        return
    dbg.check_unmap(Entry(dev, dma_debug_coherent, dma_addr, size, DMA_BIDIRECTIONAL, phys))


def debug_dma_note_bounce(dev, orig_phys: int, tlb_addr: int) -> None:
    dbg = dev.machine.dma_debug
    if dbg.enabled:
        dbg.pending_bounces.append((dev, orig_phys, tlb_addr))


def debug_dma_stale_iotlb(dev, iova: int, stale_phys: int, current_phys: int) -> None:
    dbg = dev.machine.dma_debug
    if not dbg.enabled:
        return
    cur = "none" if current_phys == U64_MAX else f"0x{current_phys:016x}"
    dbg.report_extra(dev, "stale_iotlb",
                     f"device accessed DMA memory through a stale IOTLB entry after unmap "
                     f"[device address=0x{iova:016x}] [stale phys=0x{stale_phys:016x}] "
                     f"[current phys={cur}]", iova, 0)


_HOOKS = {   # what the mapping API cannot reach yet (see the core's _test_debug_hooks)
    "map_sg": debug_dma_map_sg, "unmap_sg": debug_dma_unmap_sg,
    "sync_sg_for_device": debug_dma_sync_sg_for_device, "map_single": debug_dma_map_single,
    "note_bounce": debug_dma_note_bounce,
}


def _test_debug_hooks(op: str, dev, *args) -> None:
    """Test hook twin of the core's: call a debug_dma_* hook directly."""
    if op not in _HOOKS:
        raise ValueError(op)
    _HOOKS[op](dev, *args)
    dev.machine.flush_warnings()
    dev.machine.dma_debug.raise_pending()
