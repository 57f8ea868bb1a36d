"""Reference model of kernel/dma/swiotlb.c and include/linux/swiotlb.h (mirrors _kernel/swiotlb.pxi).

Same configuration as the core: no CONFIG_SWIOTLB_DYNAMIC (one default pool per io_tlb_mem),
CONFIG_DEBUG_FS counters, no memory encryption, no highmem, no restricted pools.
Slots are a plain list of :class:`IoTlbSlot`, areas a list of :class:`IoTlbArea`. Where the
kernel's C types wrap (u32 masks, size_t sizes, an int offset) the arithmetic is masked the
same way, so every address, size and counter matches the core bit for bit.

Functions named like the kernel's are the Python entry points (they validate their arguments
and flush queued warnings). Their ``c_`` twins (``c_swiotlb_tbl_map_single`` ...) are what other
reference modules call, as the core's dma-direct and dma-iommu call the cdef functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..constants import (
    DMA_ATTR_ALL,
    DMA_ATTR_NO_WARN,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from ..errors import KernelBug, KernelWarning, PhysAddrError, SwiotlbFullWarning
from ._util import U64_MAX, u64

__all__ = [
    "IoTlbMem", "swiotlb_tbl_map_single", "swiotlb_tbl_unmap_single", "swiotlb_sync_single_for_cpu",
    "swiotlb_sync_single_for_device", "swiotlb_map", "swiotlb_max_mapping_size", "is_swiotlb_active",
    "is_swiotlb_buffer", "is_swiotlb_force_bounce",
]

_log = logging.getLogger("dmaphys")

IO_TLB_SHIFT = 11
IO_TLB_SIZE = 1 << IO_TLB_SHIFT
IO_TLB_SEGSIZE = 128
IO_TLB_MIN_SLABS = (1 << 20) >> IO_TLB_SHIFT
INVALID_PHYS_ADDR = U64_MAX
SWIOTLB_LOW_LIMIT = 1 << 32
HZ = 1000
DEFAULT_RATELIMIT_INTERVAL = 5 * HZ
DEFAULT_RATELIMIT_BURST = 10
U32_MAX = (1 << 32) - 1
U16_MAX = (1 << 16) - 1


# ---- lib/ratelimit.c ---------------------------------------------------------------------------
class RatelimitState:
    """struct ratelimit_state of one dev_warn_ratelimited() call site (per machine)."""

    def __init__(self, interval: int = DEFAULT_RATELIMIT_INTERVAL, burst: int = DEFAULT_RATELIMIT_BURST):
        self.interval = interval
        self.burst = burst
        self.initialized = False
        self.begin = 0
        self.n_left = 0
        self.missed = 0


def _ratelimit(m, site: str, func: str) -> bool:
    """___ratelimit(): may this call site print now? Reports suppressed calls on a new window."""
    rs = m.ratelimit_states.get(site)
    if rs is None:
        rs = m.ratelimit_states[site] = RatelimitState()
    j = m.clock_ns // (1_000_000_000 // HZ)
    if not rs.initialized:
        rs.begin, rs.initialized, rs.n_left = j, True, rs.burst
    if j > rs.begin + rs.interval:
        rs.n_left, rs.begin = rs.burst, j
        if rs.missed:
            m.kwarn(KernelWarning, f"{func}: {rs.missed} callbacks suppressed")
            rs.missed = 0
    if rs.burst:
        rs.n_left -= 1
        if rs.n_left >= 0:
            return True
    rs.missed += 1
    return False


# ---- helpers --------------------------------------------------------------------------------------
def io_tlb_offset(val: int) -> int:
    return val & (IO_TLB_SEGSIZE - 1)


def nr_slots(val: int) -> int:
    return ((val + IO_TLB_SIZE - 1) & U64_MAX) >> IO_TLB_SHIFT


def get_max_slots(boundary_mask: int) -> int:
    return (boundary_mask >> IO_TLB_SHIFT) + 1


def dma_get_min_align_mask(dev) -> int:
    return dev.min_align_mask & U32_MAX


def dma_get_seg_boundary(dev) -> int:
    return dev.seg_boundary_mask or U64_MAX


def swiotlb_align_offset(dev, align_mask: int, addr: int) -> int:
    return addr & dma_get_min_align_mask(dev) & (align_mask | (IO_TLB_SIZE - 1))


def _is_power_of_2(n: int) -> bool:
    return n != 0 and n & (n - 1) == 0


def _roundup_pow_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _pad(addr: int) -> str:
    return f"0x{addr:016x}"


def _machine():
    # machine imports this module, so resolve it at call time
    from . import machine
    return machine


# ---- struct io_tlb_mem / io_tlb_pool ---------------------------------------------------------------
@dataclass
class IoTlbSlot:
    """struct io_tlb_slot."""

    orig_addr: int = INVALID_PHYS_ADDR
    alloc_size: int = 0
    list: int = 0
    pad_slots: int = 0


@dataclass
class IoTlbArea:
    """struct io_tlb_area."""

    used: int = 0
    index: int = 0


class IoTlbMem:
    """struct io_tlb_mem with its default pool; reference twin of dmaphys._core.IoTlbMem.

    Reference twin of dmaphys._core.IoTlbMem: same returns and raises, except that constructor
    arguments raise TypeError here (the core ignores them).
    """

    def __init__(self) -> None:
        self.machine = None
        self.start = 0
        self.end = 0
        self.nslabs = 0
        self.nareas = 0
        self.area_nslabs = 0
        self.slots: list[IoTlbSlot] = []
        self.areas: list[IoTlbArea] = []
        self.force_bounce = False
        self.total_used = 0
        self._used_hiwater = 0

    @property
    def used_hiwater(self) -> int:
        """Reference twin of dmaphys._core.IoTlbMem.used_hiwater."""
        return self._used_hiwater

    @used_hiwater.setter
    def used_hiwater(self, value) -> None:
        if u64(value, "used_hiwater") != 0:
            raise ValueError("io_tlb_used_hiwater: only 0 may be written (-EINVAL)")
        self._used_hiwater = 0

    def reset_used_hiwater(self) -> None:
        """Reference twin of dmaphys._core.IoTlbMem.reset_used_hiwater: same returns and raises."""
        self._used_hiwater = 0

    def mem_used(self) -> int:
        """Reference twin of dmaphys._core.IoTlbMem.mem_used: same returns and raises."""
        return self.total_used

    def slot(self, index) -> dict:
        """Reference twin of dmaphys._core.IoTlbMem.slot: same returns and raises."""
        i = u64(index, "index")
        if i >= self.nslabs:
            raise IndexError(f"slot {i} is beyond nslabs {self.nslabs}")
        s = self.slots[i]
        return {"orig_addr": s.orig_addr, "alloc_size": s.alloc_size, "list": s.list,
                "pad_slots": s.pad_slots}

    def get_state(self) -> dict:
        """Reference twin of dmaphys._core.IoTlbMem.get_state: same returns and raises."""
        slots = {}
        for i, s in enumerate(self.slots):
            fresh = min(IO_TLB_SEGSIZE - io_tlb_offset(i), self.nslabs - i)
            if s != IoTlbSlot(list=fresh):
                slots[i] = (s.orig_addr, s.alloc_size, s.list, s.pad_slots)
        return {
            "start": self.start, "end": self.end, "nslabs": self.nslabs, "nareas": self.nareas,
            "area_nslabs": self.area_nslabs, "force_bounce": bool(self.force_bounce),
            "total_used": self.total_used, "used_hiwater": self._used_hiwater,
            "areas": [(a.used, a.index) for a in self.areas],
            "slots": slots,
        }

    def __repr__(self) -> str:
        if self.nslabs == 0:
            return "<dmaphys.reference.IoTlbMem empty>"
        return (f"<dmaphys.reference.IoTlbMem [{self.start:#x}-{self.end - 1:#x}] nslabs={self.nslabs} "
                f"nareas={self.nareas} used={self.total_used}{' force' if self.force_bounce else ''}>")


# ---- set-up -------------------------------------------------------------------------------------------
def swiotlb_adjust_nareas(nareas: int) -> int:
    if nareas == 0:
        nareas = 1
    elif not _is_power_of_2(nareas):
        nareas = _roundup_pow_of_two(nareas)
    _log.info("software IO TLB: area num %d.", nareas)
    return nareas


def round_up_default_nslabs(nslabs: int, nareas: int) -> int:
    if nslabs < IO_TLB_SEGSIZE * nareas:
        nslabs = IO_TLB_SEGSIZE * nareas
    elif _is_power_of_2(nslabs):
        return nslabs
    nslabs = _roundup_pow_of_two(nslabs)
    _log.info("software IO TLB: SWIOTLB bounce buffer size roundup to %dMB", (nslabs << IO_TLB_SHIFT) >> 20)
    return nslabs


def limit_nareas(nareas: int, nslots: int) -> int:
    if nslots < nareas * IO_TLB_SEGSIZE:
        return nslots // IO_TLB_SEGSIZE
    return nareas


def swiotlb_init_io_tlb_pool(mem: IoTlbMem, start: int, nslabs: int, nareas: int) -> None:
    mem.nslabs = nslabs
    mem.start = start
    mem.end = start + (nslabs << IO_TLB_SHIFT)
    mem.nareas = nareas
    mem.area_nslabs = nslabs // nareas
    mem.areas = [IoTlbArea() for _ in range(nareas)]
    mem.slots = [IoTlbSlot(list=min(IO_TLB_SEGSIZE - io_tlb_offset(i), nslabs - i)) for i in range(nslabs)]
    mem.machine.mem.fill(start, 0, nslabs << IO_TLB_SHIFT)


def swiotlb_init(machine, size: int, nareas: int, force: bool) -> IoTlbMem:
    """swiotlb_init_remap() for a pool of ``size`` bytes (see the core's swiotlb_init)."""
    if nareas < 0:
        raise ValueError(f"swiotlb nareas must be >= 0, not {nareas}")
    default_nslabs = ((size >> IO_TLB_SHIFT) + IO_TLB_SEGSIZE - 1) & ~(IO_TLB_SEGSIZE - 1)
    n = swiotlb_adjust_nareas(nareas if nareas else machine.cpus)
    default_nslabs = round_up_default_nslabs(default_nslabs, n)
    nslabs = default_nslabs
    n = limit_nareas(n, nslabs)
    while True:
        nbytes = ((nslabs << IO_TLB_SHIFT) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        start = machine.mem.alloc_pages(nbytes >> PAGE_SHIFT, SWIOTLB_LOW_LIMIT, 1)
        if start != U64_MAX:
            break
        machine.kwarn(KernelWarning, f"software IO TLB: swiotlb_memblock_alloc: Failed to allocate "
                                     f"{nbytes} bytes tlb structure")
        if nslabs <= IO_TLB_MIN_SLABS:
            # swiotlb_init_remap() returns: io_tlb_default_mem stays empty and the machine boots
            mem = IoTlbMem()
            mem.machine = machine
            mem.force_bounce = bool(force)
            return mem
        nslabs = ((nslabs >> 1) + IO_TLB_SEGSIZE - 1) & ~(IO_TLB_SEGSIZE - 1)
        n = limit_nareas(n, nslabs)
    if default_nslabs != nslabs:
        _log.info("software IO TLB: SWIOTLB bounce buffer size adjusted %d -> %d slabs",
                  default_nslabs, nslabs)
    mem = IoTlbMem()
    mem.machine = machine
    mem.force_bounce = bool(force)
    swiotlb_init_io_tlb_pool(mem, start, nslabs, n)
    _log.info("software IO TLB: mapped [mem %s-%s] (%dMB)", _pad(mem.start), _pad(mem.end),
              (nslabs << IO_TLB_SHIFT) >> 20)
    return mem


# ---- predicates (include/linux/swiotlb.h) --------------------------------------------------------------
def swiotlb_find_pool(dev, paddr: int) -> IoTlbMem | None:
    mem = dev.dma_io_tlb_mem
    if mem is not None and mem.start <= paddr < mem.end:
        return mem
    return None


def c_is_swiotlb_buffer(dev, paddr: int) -> bool:
    return swiotlb_find_pool(dev, paddr) is not None


def c_is_swiotlb_active(dev) -> bool:
    return dev.dma_io_tlb_mem is not None and dev.dma_io_tlb_mem.nslabs != 0


def c_is_swiotlb_force_bounce(dev) -> bool:
    mem = dev.dma_io_tlb_mem
    return bool(dev.force_bounce) or (mem is not None and bool(mem.force_bounce))


def _to_int32(v: int) -> int:
    v &= U32_MAX
    return v - (1 << 32) if v & (1 << 31) else v


def c_swiotlb_max_mapping_size(dev) -> int:
    min_align_mask = _to_int32(dma_get_min_align_mask(dev))       # the kernel's int local
    min_align = 0
    if min_align_mask:
        q = _to_int32(min_align_mask + IO_TLB_SIZE - 1)             # the int sum wraps first
        q = abs(q) // IO_TLB_SIZE * (1 if q >= 0 else -1)          # C division truncates
        min_align = _to_int32(q * IO_TLB_SIZE)
    return (IO_TLB_SIZE * IO_TLB_SEGSIZE - min_align) & U64_MAX


# ---- counters ------------------------------------------------------------------------------------------
def inc_used_and_hiwater(mem: IoTlbMem, nslots: int) -> None:
    mem.total_used = (mem.total_used + nslots) & U64_MAX
    if mem.total_used > mem._used_hiwater:
        mem._used_hiwater = mem.total_used


def dec_used(mem: IoTlbMem, nslots: int) -> None:
    mem.total_used = (mem.total_used - nslots) & U64_MAX


# ---- slot search ---------------------------------------------------------------------------------------
def wrap_area_index(pool: IoTlbMem, index: int) -> int:
    return 0 if index >= pool.area_nslabs else index


def swiotlb_search_pool_area(dev, pool: IoTlbMem, area_index: int, orig_addr: int, alloc_size: int,
                             alloc_align_mask: int) -> tuple[int, int]:
    """The search half of swiotlb_search_pool_area(): (slot_index, cursor index) or (-1, 0)."""
    area = pool.areas[area_index]
    boundary_mask = dma_get_seg_boundary(dev)
    tbl_dma_addr = _machine().phys_to_dma(dev, pool.start) & boundary_mask
    max_slots = get_max_slots(boundary_mask)
    iotlb_align_mask = dma_get_min_align_mask(dev)
    nslots = nr_slots(alloc_size) & U32_MAX
    if nslots == 0:
        raise KernelBug(f"kernel BUG in swiotlb_search_pool_area(): BUG_ON(!nslots) "
                        f"(alloc_size {alloc_size:#x})")
    if not alloc_align_mask and not iotlb_align_mask and alloc_size >= PAGE_SIZE:
        alloc_align_mask = PAGE_SIZE - 1
    alloc_align_mask |= IO_TLB_SIZE - 1
    iotlb_align_mask &= ~alloc_align_mask
    stride = get_max_slots(max(alloc_align_mask, iotlb_align_mask))

    if nslots > (pool.area_nslabs - area.used) & U64_MAX:        # unsigned long arithmetic
        return -1, 0
    slot_base = area_index * pool.area_nslabs
    index = area.index
    slots_checked = 0
    while slots_checked < pool.area_nslabs:
        slot_index = slot_base + index
        tlb_addr = (tbl_dma_addr + (slot_index << IO_TLB_SHIFT)) & U64_MAX
        if (tlb_addr & alloc_align_mask) or (
                orig_addr and (tlb_addr & iotlb_align_mask) != (orig_addr & iotlb_align_mask)):
            index = wrap_area_index(pool, index + 1)
            slots_checked += 1
            continue
        if not _is_power_of_2(max_slots):
            raise KernelBug(f"kernel BUG in iommu_is_span_boundary(): boundary size {max_slots:#x} "
                            f"(seg_boundary_mask {boundary_mask:#x}) is not a power of 2")
        # iommu_is_span_boundary(slot_index, nslots, nr_slots(tbl_dma_addr), max_slots)
        shift = (nr_slots(tbl_dma_addr) + slot_index) & (max_slots - 1)
        if shift + nslots <= max_slots and pool.slots[slot_index].list >= nslots:
            return slot_index, index
        index = wrap_area_index(pool, index + stride)
        slots_checked += stride
    return -1, 0


def swiotlb_commit_slots(pool: IoTlbMem, area_index: int, slot_index: int, index: int,
                         alloc_size: int, offset: int) -> None:
    """The "found:" half: take the slots, shorten the free run before them, move the cursor."""
    nslots = nr_slots(alloc_size) & U32_MAX
    for i in range(slot_index, slot_index + nslots):
        pool.slots[i].list = 0
        pool.slots[i].alloc_size = (alloc_size - (offset + ((i - slot_index) << IO_TLB_SHIFT))) & U64_MAX
    count = 0
    i = slot_index - 1
    while i >= 0 and io_tlb_offset(i) != IO_TLB_SEGSIZE - 1 and pool.slots[i].list:
        count += 1
        pool.slots[i].list = count
        i -= 1
    area = pool.areas[area_index]
    area.index = wrap_area_index(pool, index + nslots)
    area.used = (area.used + nslots) & U64_MAX
    inc_used_and_hiwater(pool, nslots)


def swiotlb_find_slots(dev, pool: IoTlbMem, orig_addr: int, alloc_size: int,
                       alloc_align_mask: int) -> tuple[int, int, int]:
    """swiotlb_find_slots() (non-dynamic): (slot_index, area, cursor index) or (-1, 0, 0)."""
    start = pool.machine.cpu & (pool.nareas - 1)
    i = start
    while True:
        index, cursor = swiotlb_search_pool_area(dev, pool, i, orig_addr, alloc_size, alloc_align_mask)
        if index >= 0:
            return index, i, cursor
        i = 0 if i + 1 >= pool.nareas else i + 1
        if i == start:
            return -1, 0, 0


# ---- swiotlb_bounce -------------------------------------------------------------------------------------
def swiotlb_bounce(dev, tlb_addr: int, size: int, dir: int, mem: IoTlbMem) -> None:
    index = (tlb_addr - mem.start) >> IO_TLB_SHIFT
    orig_addr = mem.slots[index].orig_addr
    alloc_size = mem.slots[index].alloc_size
    if orig_addr == INVALID_PHYS_ADDR:
        return
    # an int in the kernel: may be negative (a sync starting in a later slot's leading offset)
    tlb_offset = _to_int32((tlb_addr & (IO_TLB_SIZE - 1)) - swiotlb_align_offset(dev, 0, orig_addr))
    orig_addr = (orig_addr + tlb_offset) & U64_MAX
    alloc_size = (alloc_size - tlb_offset) & U64_MAX
    if size > alloc_size:
        dev.machine.kwarn(KernelWarning, f"{dev.name}: Buffer overflow detected. Allocation size: "
                                         f"{alloc_size}. Mapping size: {size}.", "swiotlb_bounce:overflow")
        size = alloc_size
    if size == 0:
        return
    pm = dev.machine.mem
    if pm.find_region(orig_addr, size) < 0:
        raise PhysAddrError(orig_addr, size, "swiotlb_bounce(): original buffer is not RAM or MMIO")
    if pm.find_region(tlb_addr, size) < 0:
        raise PhysAddrError(tlb_addr, size, "swiotlb_bounce(): bounce range leaves RAM")
    if dir == DMA_TO_DEVICE:
        pm.copy(tlb_addr, orig_addr, size)
    else:
        pm.copy(orig_addr, tlb_addr, size)


# ---- map ------------------------------------------------------------------------------------------------
def c_swiotlb_tbl_map_single(dev, orig_addr: int, mapping_size: int, alloc_align_mask: int,
                             dir: int, attrs: int) -> int:
    """swiotlb_tbl_map_single() without argument checks or a warning flush (for other modules)."""
    mem = dev.dma_io_tlb_mem
    m = dev.machine
    alloc_align_mask &= U32_MAX                                  # unsigned int parameter
    if mem is None or mem.nslabs == 0:
        if _ratelimit(m, "swiotlb_tbl_map_single:nomem", "swiotlb_tbl_map_single"):
            m.kwarn(KernelWarning, f"{dev.name}: Can not allocate SWIOTLB buffer earlier and can't now "
                                   f"provide you with the DMA bounce buffer")
        return DMA_MAPPING_ERROR

    offset = swiotlb_align_offset(dev, alloc_align_mask, orig_addr)
    mask = (((alloc_align_mask + 1) & U32_MAX) - 1) & U64_MAX     # ALIGN(x, alloc_align_mask + 1)
    size = (mapping_size + offset + mask) & ~mask & U64_MAX
    if nr_slots(size) & U32_MAX == 0:
        raise KernelBug(f"kernel BUG in swiotlb_search_pool_area(): BUG_ON(!nslots) "
                        f"(mapping_size {mapping_size:#x}, alloc_align_mask {alloc_align_mask:#x})")
    if alloc_align_mask > PAGE_SIZE - 1:
        m.kwarn(KernelWarning, f"{dev.name}: Alloc alignment may prevent fulfilling requests with "
                               f"max mapping_size", "swiotlb_tbl_map_single:alloc_align")

    index, area_index, cursor = swiotlb_find_slots(dev, mem, orig_addr, size, alloc_align_mask)
    if index == -1:
        if not attrs & DMA_ATTR_NO_WARN and _ratelimit(m, "swiotlb_tbl_map_single:full",
                                                        "swiotlb_tbl_map_single"):
            ssize = size - (1 << 64) if size >> 63 else size          # %zd
            m.kwarn(SwiotlbFullWarning, f"{dev.name}: swiotlb buffer is full (sz: {ssize} bytes), "
                                        f"total {mem.nslabs} (slots), used {mem.total_used} (slots)")
        return DMA_MAPPING_ERROR
    if mapping_size and m.mem.find_region(orig_addr, mapping_size) < 0:
        raise PhysAddrError(orig_addr, mapping_size,
                            "swiotlb_tbl_map_single(): original buffer is not RAM or MMIO")
    swiotlb_commit_slots(mem, area_index, index, cursor, size, swiotlb_align_offset(dev, 0, orig_addr))
    dev.dma_uses_io_tlb = True
    if dev.dma_skip_sync:                                        # dma_reset_need_sync()
        dev.dma_skip_sync = False

    pad_slots = (offset >> IO_TLB_SHIFT) & U16_MAX
    offset &= IO_TLB_SIZE - 1
    index += pad_slots
    mem.slots[index].pad_slots = pad_slots
    for i in range(nr_slots(size) - pad_slots):
        mem.slots[index + i].orig_addr = (orig_addr + (i << IO_TLB_SHIFT)) & U64_MAX
    tlb_addr = mem.start + (index << IO_TLB_SHIFT) + offset
    swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_TO_DEVICE, mem)   # for every direction
    return tlb_addr


# ---- unmap -----------------------------------------------------------------------------------------------
def swiotlb_release_slots(dev, tlb_addr: int, mem: IoTlbMem) -> None:
    offset = swiotlb_align_offset(dev, 0, tlb_addr)
    index = (tlb_addr - offset - mem.start) >> IO_TLB_SHIFT
    index -= mem.slots[index].pad_slots
    if index < 0:
        raise KernelBug(f"kernel BUG in swiotlb_release_slots(): BUG_ON(aindex >= nareas) "
                        f"(tlb_addr {tlb_addr:#x})")
    nslots = _to_int32(nr_slots((mem.slots[index].alloc_size + offset) & U64_MAX))
    aindex = index // mem.area_nslabs
    if aindex >= mem.nareas:
        raise KernelBug(f"kernel BUG in swiotlb_release_slots(): BUG_ON(aindex >= nareas) "
                        f"(tlb_addr {tlb_addr:#x})")
    if nslots < 0 or index + nslots > mem.nslabs:
        raise KernelBug(f"swiotlb_release_slots(): {tlb_addr:#x} is not the start of a bounce buffer "
                        f"(its slots {index}+{nslots} run past the pool's {mem.nslabs})")
    segment_end = (index + IO_TLB_SEGSIZE) & ~(IO_TLB_SEGSIZE - 1)     # ALIGN(index + 1, IO_TLB_SEGSIZE)
    count = mem.slots[index + nslots].list if index + nslots < segment_end else 0
    for i in range(index + nslots - 1, index - 1, -1):
        count += 1
        mem.slots[i] = IoTlbSlot(list=count)
    i = index - 1
    while i >= 0 and io_tlb_offset(i) != IO_TLB_SEGSIZE - 1 and mem.slots[i].list:
        count += 1
        mem.slots[i].list = count
        i -= 1
    area = mem.areas[aindex]
    area.used = (area.used - nslots) & U64_MAX
    dec_used(mem, nslots)


def __swiotlb_tbl_unmap_single(dev, tlb_addr: int, mapping_size: int, dir: int, attrs: int,
                               pool: IoTlbMem) -> None:
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC and dir in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_FROM_DEVICE, pool)
    swiotlb_release_slots(dev, tlb_addr, pool)


def c_swiotlb_tbl_unmap_single(dev, tlb_addr: int, mapping_size: int, dir: int, attrs: int) -> None:
    pool = swiotlb_find_pool(dev, tlb_addr)
    if pool is not None:
        __swiotlb_tbl_unmap_single(dev, tlb_addr, mapping_size, dir, attrs, pool)


# ---- sync ------------------------------------------------------------------------------------------------
def c_swiotlb_sync_single_for_device(dev, tlb_addr: int, size: int, dir: int) -> None:
    pool = swiotlb_find_pool(dev, tlb_addr)
    if pool is None:
        return
    if dir in (DMA_TO_DEVICE, DMA_BIDIRECTIONAL):
        swiotlb_bounce(dev, tlb_addr, size, DMA_TO_DEVICE, pool)
    elif dir != DMA_FROM_DEVICE:
        raise KernelBug(f"kernel BUG in __swiotlb_sync_single_for_device(): BUG_ON(dir != DMA_FROM_DEVICE) "
                        f"(dir {dir})")


def c_swiotlb_sync_single_for_cpu(dev, tlb_addr: int, size: int, dir: int) -> None:
    pool = swiotlb_find_pool(dev, tlb_addr)
    if pool is None:
        return
    if dir in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        swiotlb_bounce(dev, tlb_addr, size, DMA_FROM_DEVICE, pool)
    elif dir != DMA_TO_DEVICE:
        raise KernelBug(f"kernel BUG in __swiotlb_sync_single_for_cpu(): BUG_ON(dir != DMA_TO_DEVICE) "
                        f"(dir {dir})")


# ---- swiotlb_map -------------------------------------------------------------------------------------------
def c_swiotlb_map(dev, phys: int, size: int, dir: int, attrs: int) -> int:
    from . import trace as _trace  # the swiotlb_bounced tracepoint, once it exists

    mach = _machine()
    hook = getattr(_trace, "trace_swiotlb_bounced", None)
    if hook is not None:
        hook(dev, mach.phys_to_dma(dev, phys), size)
    swiotlb_addr = c_swiotlb_tbl_map_single(dev, phys, size, 0, dir, attrs)
    if swiotlb_addr == DMA_MAPPING_ERROR:
        return DMA_MAPPING_ERROR
    dma_addr = mach.phys_to_dma(dev, swiotlb_addr)
    if not mach.dma_capable(dev, dma_addr, size, True):
        __swiotlb_tbl_unmap_single(dev, swiotlb_addr, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC,
                                   swiotlb_find_pool(dev, swiotlb_addr))
        dev.machine.kwarn(KernelWarning, f"{dev.name}: swiotlb addr {_pad(dma_addr)}+{size} overflow "
                                         f"(mask {dev._dma_mask:x}, bus limit {dev.bus_dma_limit:x}).",
                          "swiotlb_map:overflow")
        return DMA_MAPPING_ERROR
    if not dev.coherent and not attrs & DMA_ATTR_SKIP_CPU_SYNC:
        mach.arch_sync_dma_for_device(dev, swiotlb_addr, size, dir)
    return dma_addr


# ---- Python entry points -----------------------------------------------------------------------------------
def _dev_arg(dev):
    if not isinstance(dev, _machine().Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")
    _machine().dev_live(dev)
    return dev


def _dir_arg(dir) -> int:
    if isinstance(dir, bool) or not hasattr(dir, "__index__"):
        raise TypeError(f"dir must be an int (enum dma_data_direction), not {type(dir).__name__}")
    v = dir.__index__()
    if not -0x80000000 <= v <= 0x7FFFFFFF:
        raise ValueError(f"dir {v} is not an enum dma_data_direction value")
    return v


def _attrs_arg(attrs) -> int:
    a = u64(attrs, "attrs")
    if a & ~DMA_ATTR_ALL:
        raise ValueError(f"attrs {a:#x} has bits no DMA_ATTR_* defines")
    return a


def swiotlb_tbl_map_single(dev, orig_addr, mapping_size, alloc_align_mask, dir, attrs) -> int:
    """swiotlb_tbl_map_single(): bounce address or DMA_MAPPING_ERROR (see the core's docstring).

    Reference twin of dmaphys._core.swiotlb_tbl_map_single: same returns and raises.
    """
    _dev_arg(dev)
    o = u64(orig_addr, "orig_addr")
    sz = u64(mapping_size, "mapping_size")
    am = u64(alloc_align_mask, "alloc_align_mask")
    d = _dir_arg(dir)
    a = _attrs_arg(attrs)
    if am > U32_MAX:
        raise ValueError(f"alloc_align_mask {am:#x} does not fit the kernel's unsigned int")
    ret = c_swiotlb_tbl_map_single(dev, o, sz, am, d, a)
    dev.machine.flush_warnings()
    return ret


def swiotlb_tbl_unmap_single(dev, tlb_addr, mapping_size, dir, attrs) -> None:
    """swiotlb_tbl_unmap_single(): copy back if asked, release the slots; nothing for other addresses.

    Reference twin of dmaphys._core.swiotlb_tbl_unmap_single: same returns and raises.
    """
    _dev_arg(dev)
    t = u64(tlb_addr, "tlb_addr")
    sz = u64(mapping_size, "mapping_size")
    d = _dir_arg(dir)
    a = _attrs_arg(attrs)
    c_swiotlb_tbl_unmap_single(dev, t, sz, d, a)
    dev.machine.flush_warnings()


def swiotlb_sync_single_for_cpu(dev, tlb_addr, size, dir) -> None:
    """swiotlb_sync_single_for_cpu(): slot → original for FROM_DEVICE/BIDIRECTIONAL.

    Reference twin of dmaphys._core.swiotlb_sync_single_for_cpu: same returns and raises.
    """
    _dev_arg(dev)
    t = u64(tlb_addr, "tlb_addr")
    sz = u64(size, "size")
    d = _dir_arg(dir)
    c_swiotlb_sync_single_for_cpu(dev, t, sz, d)
    dev.machine.flush_warnings()


def swiotlb_sync_single_for_device(dev, tlb_addr, size, dir) -> None:
    """swiotlb_sync_single_for_device(): original → slot for TO_DEVICE/BIDIRECTIONAL.

    Reference twin of dmaphys._core.swiotlb_sync_single_for_device: same returns and raises.
    """
    _dev_arg(dev)
    t = u64(tlb_addr, "tlb_addr")
    sz = u64(size, "size")
    d = _dir_arg(dir)
    c_swiotlb_sync_single_for_device(dev, t, sz, d)
    dev.machine.flush_warnings()


def swiotlb_map(dev, phys, size, dir, attrs) -> int:
    """swiotlb_map(): dma-direct's bounce path; bus address or DMA_MAPPING_ERROR.

    Reference twin of dmaphys._core.swiotlb_map: same returns and raises.
    """
    _dev_arg(dev)
    p = u64(phys, "phys")
    sz = u64(size, "size")
    d = _dir_arg(dir)
    a = _attrs_arg(attrs)
    ret = c_swiotlb_map(dev, p, sz, d, a)
    dev.machine.flush_warnings()
    return ret


def swiotlb_max_mapping_size(dev) -> int:
    """swiotlb_max_mapping_size(): 256 KiB minus the min_align_mask roundup.

    Reference twin of dmaphys._core.swiotlb_max_mapping_size: same returns and raises.
    """
    return c_swiotlb_max_mapping_size(_dev_arg(dev))


def is_swiotlb_active(dev) -> bool:
    """is_swiotlb_active(): the device has a pool with slabs.

    Reference twin of dmaphys._core.is_swiotlb_active: same returns and raises.
    """
    return c_is_swiotlb_active(_dev_arg(dev))


def is_swiotlb_buffer(dev, paddr) -> bool:
    """is_swiotlb_buffer(): ``paddr`` lies in the device's pool.

    Reference twin of dmaphys._core.is_swiotlb_buffer: same returns and raises.
    """
    return c_is_swiotlb_buffer(_dev_arg(dev), u64(paddr, "paddr"))


def is_swiotlb_force_bounce(dev) -> bool:
    """is_swiotlb_force_bounce(): the device's flag or its pool's force_bounce.

    Reference twin of dmaphys._core.is_swiotlb_force_bounce: same returns and raises.
    """
    return c_is_swiotlb_force_bounce(_dev_arg(dev))
