"""Reference model of the simulated machine and its devices (mirrors machine.pxi, device.pxi)."""

from __future__ import annotations

import heapq
import logging
import warnings
from typing import Any

from .._embed import check_ram_removable, ram_buffer_nbytes
from ..errors import DmaFault, PhysAddrError
from ._util import DMA_BIT_MASK, LOG_RECORDS_MAX, U64_MAX, as_bytes, min_not_zero, typed, u64
from .debug import DmaDebug
from .iommu import Iommu, device_translate, iommu_device_access
from .memory import REGION_MMIO, REGION_RAM, PhysMem
from .p2pdma import P2PTopology, p2p_bus_to_phys
from .swiotlb import swiotlb_init
from .trace import DmaTrace

__all__ = ["Machine", "Device", "PhysMem"]

_log = logging.getLogger("dmaphys")
DEFAULT_RAM = [(0, 3 << 30), (4 << 30, 13 << 30)]
IO_TLB_DEFAULT_SIZE = 64 << 20


class Machine:
    """Reference twin of dmaphys._core.Machine."""

    def __init__(self, ram=None, cpus=4, swiotlb="auto", swiotlb_nareas=None,
                 swiotlb_force=False, dma_debug=True):
        if ram is None:
            ram = DEFAULT_RAM
        if not isinstance(cpus, int) or not 1 <= cpus <= 1024:
            raise ValueError(f"cpus must be an int in 1..1024, not {cpus!r}")
        self.mem = PhysMem()
        self.cpus = cpus
        self._cpu = 0
        self.clock_ns = 0
        self.devices: dict[str, Device] = {}
        self.iommus: list[Any] = []
        self.warnings_log: list[tuple[str, str]] = []
        self.warnings_dropped = 0
        self.ratelimit_states: dict[str, Any] = {}    # call site -> RatelimitState (swiotlb.py)
        self._warn_queue: list[tuple[type, str]] = []
        self._deferred_exc: BaseException | None = None
        self._warned_once: set = set()
        self._timers: list = []
        self._user_pages: dict[int, int] = {}       # phys -> npages handed out by alloc_pages()
        self._timer_seq = 0
        for i, (base, size) in enumerate(ram):
            self.mem.add_region(u64(base, "RAM base"), u64(size, "RAM size"), REGION_RAM, f"System RAM {i}")
        self.dma_debug = DmaDebug(self, dma_debug)
        self.trace = DmaTrace(self)
        self.p2pdma = P2PTopology(self)
        if swiotlb == "auto":
            size = IO_TLB_DEFAULT_SIZE if (self.max_phys_ram() > (1 << 32) or swiotlb_force) else 0
        elif not swiotlb:
            size = 0
        else:
            size = u64(swiotlb, "swiotlb size")
        self.swiotlb = (swiotlb_init(self, size, 0 if swiotlb_nareas is None else swiotlb_nareas,
                                     bool(swiotlb_force)) if size else None)
        self.flush_warnings()

    @property
    def cpu(self) -> int:
        """Reference twin of dmaphys._core.Machine.cpu."""
        return self._cpu

    @cpu.setter
    def cpu(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value < self.cpus:
            raise ValueError(f"cpu must be in 0..{self.cpus - 1}, not {value!r}")
        self._cpu = value

    def advance(self, ns: int) -> None:
        """Advance the virtual clock by ``ns`` nanoseconds, firing due timers in deadline order.

        Reference twin of dmaphys._core.Machine.advance; same returns and raises.
        """
        target = self.clock_ns + u64(ns, "ns")
        if target > U64_MAX:
            raise ValueError(f"advancing the clock by {ns:#x} ns overflows its 64 bits")
        while self._timers and self._timers[0][0] <= target:
            deadline, _, cb = heapq.heappop(self._timers)
            if deadline > self.clock_ns:
                self.clock_ns = deadline
            cb()
        self.clock_ns = target
        self.flush_warnings()

    def add_timer(self, delay_ns: int, callback) -> None:
        """Arm a one-shot timer ``delay_ns`` from now (mod_timer/schedule_delayed_work stand-in).

        Reference twin of dmaphys._core.Machine.add_timer; same returns and raises.
        """
        delay_ns = u64(delay_ns, "delay_ns")
        self._timer_seq += 1
        heapq.heappush(self._timers, (self.clock_ns + delay_ns, self._timer_seq, callback))

    def mem_write(self, phys, data) -> None:
        """CPU stores ``data`` (bytes-like or numpy) at ``phys``; RAM or MMIO only.

        Reference twin of dmaphys._core.Machine.mem_write; same returns and raises.
        """
        b = as_bytes(data)
        p = u64(phys, "phys")
        if not b:
            return
        if self.mem.find_region(p, len(b)) < 0:
            raise PhysAddrError(p, len(b))
        self.dma_debug.cpu_access(p, len(b), True)
        self.mem.write(p, b)

    def mem_read(self, phys, n) -> bytes:
        """CPU loads ``n`` bytes at ``phys`` (never-written RAM reads as zeros).

        Reference twin of dmaphys._core.Machine.mem_read; same returns and raises.
        """
        p = u64(phys, "phys")
        cnt = u64(n, "n")
        if cnt == 0:
            return b""
        if self.mem.find_region(p, cnt) < 0:
            raise PhysAddrError(p, cnt)
        self.dma_debug.cpu_access(p, cnt, False)
        self.flush_warnings()
        return self.mem.read(p, cnt)

    def alloc_pages(self, npages, limit=None, align=1) -> int:
        """Reference twin of dmaphys._core.Machine.alloc_pages: same returns and raises."""
        n = u64(npages, "npages")
        lim = U64_MAX if limit is None else u64(limit, "limit")
        al = u64(align, "align")
        if n == 0 or al == 0 or al & (al - 1):
            raise ValueError("npages must be > 0 and align a power of two")
        phys = self.mem.alloc_pages(n, lim, al)
        if phys == U64_MAX:
            raise MemoryError(f"no {n} free pages below {lim:#x}")
        self._user_pages[phys] = n
        return phys

    def free_pages(self, phys, npages) -> None:
        """Reference twin of dmaphys._core.Machine.free_pages: same returns and raises."""
        p, n = u64(phys, "phys"), u64(npages, "npages")
        if self._user_pages.get(p) != n or self.mem.free_pages(p, n) < 0:
            raise ValueError(f"free_pages({p:#x}, {n}): not a run alloc_pages() handed out")
        del self._user_pages[p]

    def add_mmio(self, base, size, name) -> None:
        """Add a non-RAM region (a BAR); CPU and device accesses hit its own store.

        Reference twin of dmaphys._core.Machine.add_mmio; same returns and raises.
        """
        self.mem.add_region(u64(base, "base"), u64(size, "size"), REGION_MMIO, str(name))

    def add_ram(self, base, buffer, *, name=None, allocatable=False) -> None:
        """Mirrors machine.pxi Machine.add_ram (embedder-owned RAM, zero copy).

        Reference twin of dmaphys._core.Machine.add_ram; same returns and raises.
        """
        b = u64(base, "base")
        ram_buffer_nbytes(buffer, b)
        self.mem.add_ext_ram(b, buffer, f"Embedder RAM {b:#x}" if name is None else str(name),
                             bool(allocatable))

    def remove_ram(self, base) -> None:
        """Remove embedder RAM added at ``base`` and release its buffer.

        Reference twin of dmaphys._core.Machine.remove_ram; same returns and raises.
        """
        b = u64(base, "base")
        check_ram_removable(self, b)
        self.mem.remove_ext_ram(b)

    def add_ram_range(self, base, size, name) -> None:
        """Add simulated (sparse) RAM after construction: page aligned, overlapping nothing; its

        Reference twin of dmaphys._core.Machine.add_ram_range; same returns and raises.
        """
        self.mem.add_region(u64(base, "base"), u64(size, "size"), REGION_RAM, str(name))

    def max_phys_ram(self) -> int:
        """End (exclusive) of the highest RAM range (max_pfn << PAGE_SHIFT).

        Reference twin of dmaphys._core.Machine.max_phys_ram; same returns and raises.
        """
        return max((s + z for s, z, k, _ in self.mem.regions_list() if k == "ram"), default=0)

    @property
    def regions(self):
        """Reference twin of dmaphys._core.Machine.regions."""
        return self.mem.regions_list()

    def add_device(self, name, dma_mask=U64_MAX, coherent=True, dma_range_map=None,
                   bus_dma_limit=0, force_bounce=False, min_align_mask=0, *, iommu=None,
                   domain=None, domain_type="dma", pci=True, untrusted=False, parent=None,
                   max_segment_size=65536, seg_boundary_mask=U64_MAX, coherent_dma_mask=None):
        """Add a device; see Device for the fields. ``dma_mask=None`` models a NULL dev->dma_mask.

        Reference twin of dmaphys._core.Machine.add_device; same returns and raises.
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

    def remove_device(self, dev) -> None:
        """Unbind and remove a device (dma-debug reports its leaked mappings).

        Reference twin of dmaphys._core.Machine.remove_device; same returns and raises.
        """
        typed(dev, Device, "dev")
        if self.devices.get(dev.name) is not dev:
            raise ValueError(f"{dev.name!r} is not a device of this machine")
        # mirrors machine.pxi: p2pdma refuses before any change; reports flushed once complete
        self.p2pdma.remove_device(dev)
        self.dma_debug.device_removed(dev)
        if dev.domain is not None:
            dev.domain.iommu._detach_device(dev)
        del self.devices[dev.name]
        dev.removed = True                        # faults from now on, like a blocked domain
        self.flush_warnings()

    def add_host_bridge(self, name, p2p_allowlisted=False, *, req_same_host_bridge=False):
        """A host bridge (its own PCI domain); ``p2p_allowlisted``: in pci_p2pdma_whitelist[].

        Reference twin of dmaphys._core.Machine.add_host_bridge; same returns and raises.
        """
        return self.p2pdma.add_host_bridge(name, p2p_allowlisted, req_same_host_bridge=req_same_host_bridge)

    def add_switch(self, name, parent=None, acs_redirect=False):
        """A PCIe switch below a host bridge or switch; ``acs_redirect`` on its downstream ports.

        Reference twin of dmaphys._core.Machine.add_switch; same returns and raises.
        """
        return self.p2pdma.add_switch(name, parent, acs_redirect)

    def add_p2pmem(self, provider, cpu_phys, size, bus_addr=None, *, pages=True):
        """Publish part of a BAR of ``provider`` as P2P memory (pci_p2pdma_add_resource).

        Reference twin of dmaphys._core.Machine.add_p2pmem; same returns and raises.
        """
        return self.p2pdma.add_p2pmem(provider, cpu_phys, size, bus_addr, pages=pages)

    def add_iommu(self, fmt="vtd-ss", strict=True, iotlb=None, **kwargs):
        """Add an IOMMU with page tables of format ``fmt`` (see Iommu).

        Reference twin of dmaphys._core.Machine.add_iommu; same returns and raises.
        """
        iommu = Iommu(self, fmt, strict, iotlb, **kwargs)
        self.iommus.append(iommu)
        return iommu

    def kwarn(self, category: type, text: str, once_key=None) -> None:
        """Simulator-only: queue a kernel WARN()/dev_warn() (WARN_ONCE when ``once_key`` is given:
        once per machine) for the entry point's flush_warnings(). Returns None. Raises nothing.
        """
        if once_key is not None:
            if once_key in self._warned_once:
                return
            self._warned_once.add(once_key)
        self._warn_queue.append((category, text))

    def flush_warnings(self) -> None:
        """Emit queued kernel warnings through ``warnings`` and ``logging`` (called by entry points).

        Reference twin of dmaphys._core.Machine.flush_warnings; same returns and raises.
        """
        if self._warn_queue:
            q, self._warn_queue = self._warn_queue, []
            for category, text in q:
                if len(self.warnings_log) < LOG_RECORDS_MAX:
                    self.warnings_log.append((category.__name__, text))
                else:
                    self.warnings_dropped += 1
                _log.debug("%s", text)                  # printed once: as the warning below
            for category, text in q:
                warnings.warn(text, category, stacklevel=3)
        if self.dma_debug._pending:
            self.dma_debug.raise_pending()
        if self._deferred_exc is not None:
            exc, self._deferred_exc = self._deferred_exc, None
            raise exc

    def defer_exception(self, exc) -> None:
        """Mirrors machine.pxi Machine.defer_exception (an embedder callback raised).

        Returns None. Raises nothing: the first exception is kept for flush_warnings() to raise,
        later ones are logged.
        """
        if self._deferred_exc is None:
            self._deferred_exc = exc
        else:
            _log.error("another embedder callback raised as well: %r", exc)

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.Machine cpus={self.cpus} ram={self.mem.ram_bytes >> 20} MiB "
                f"devices={len(self.devices)} iommus={len(self.iommus)}>")


class Device:
    """Reference twin of dmaphys._core.Device (struct device's DMA fields + its bus side)."""

    def __init__(self, machine, name, dma_mask, coherent, dma_range_map, bus_dma_limit,
                 force_bounce, min_align_mask, pci, untrusted, max_segment_size,
                 seg_boundary_mask, coherent_dma_mask):
        self.machine = machine
        self.name = name
        self.has_dma_mask = dma_mask is not None
        self._dma_mask = u64(dma_mask, "dma_mask") if dma_mask is not None else 0
        if coherent_dma_mask is not None:
            self.coherent_dma_mask = u64(coherent_dma_mask, "coherent_dma_mask")
        else:
            self.coherent_dma_mask = self._dma_mask if self.has_dma_mask else DMA_BIT_MASK(32)
        self.bus_dma_limit = u64(bus_dma_limit, "bus_dma_limit")
        self.coherent = bool(coherent)
        self.force_bounce = bool(force_bounce)
        self.min_align_mask = u64(min_align_mask, "min_align_mask")
        self.max_segment_size = u64(max_segment_size, "max_segment_size")
        self.seg_boundary_mask = u64(seg_boundary_mask, "seg_boundary_mask")
        self.pci = bool(pci)
        self.untrusted = bool(untrusted)
        self.removed = False                      # Machine.remove_device() ran: every access faults
        if self.untrusted and not self.pci:
            raise ValueError("only PCI devices can be untrusted (pdev->untrusted)")
        self.range_map: list[tuple[int, int, int]] = []
        for cpu_start, dma_start, size in dma_range_map or ():
            r = (u64(cpu_start, "cpu_start"), u64(dma_start, "dma_start"), u64(size, "size"))
            if r[2] == 0:
                raise ValueError("dma_range_map entries must have a non-zero size")
            self.range_map.append(r)
        self.dma_skip_sync = self.coherent
        self.dma_uses_io_tlb = False
        self.dma_io_tlb_mem = machine.swiotlb
        self.domain = None
        self.dma_iommu = False
        self.p2p_node = None
        self.arch_sync_for_device = 0
        self.arch_sync_for_cpu = 0
        self.dma_reads = 0
        self.dma_writes = 0
        self.faults = 0

    @property
    def dma_mask(self):
        """Reference twin of dmaphys._core.Device.dma_mask."""
        return self._dma_mask if self.has_dma_mask else None

    @dma_mask.setter
    def dma_mask(self, value):
        if value is None:
            self.has_dma_mask = False
            self._dma_mask = 0
        else:
            self._dma_mask = u64(value, "dma_mask")
            self.has_dma_mask = True

    @property
    def dma_range_map(self):
        """Reference twin of dmaphys._core.Device.dma_range_map."""
        return list(self.range_map) or None

    @property
    def stats(self):
        """Reference twin of dmaphys._core.Device.stats."""
        return {"arch_sync_for_device": self.arch_sync_for_device,
                "arch_sync_for_cpu": self.arch_sync_for_cpu,
                "dma_reads": self.dma_reads, "dma_writes": self.dma_writes, "faults": self.faults}

    @property
    def capsule(self):
        """The core's "dmaphys.device" capsule for the C ABI; the reference has no C ABI."""
        raise TypeError("dev.capsule (the C ABI, include/dmaphys.h) needs the compiled core, "
                        "not dmaphys.reference")

    def __repr__(self) -> str:
        return f"<dmaphys.reference.Device {self.name!r} mask={self._dma_mask:#x} coherent={self.coherent}>"

    def dma_read(self, dma_addr, n) -> bytes:
        """What the device reads at bus address ``dma_addr`` (``n`` bytes).

        Reference twin of dmaphys._core.Device.dma_read; same returns and raises.
        """
        a = u64(dma_addr, "dma_addr")
        cnt = u64(n, "n")
        out = b""
        if cnt:
            try:
                out = device_access(self, a, cnt, False, None)
            finally:
                self.machine.flush_warnings()
        self.dma_reads += 1
        return out

    def translate(self, dma_addr, write=False):
        """Mirrors device.pxi Device.translate (QEMU-style IOMMUTLBEntry of the page).

        Reference twin of dmaphys._core.Device.translate; same returns and raises.
        """
        a = u64(dma_addr, "dma_addr")
        try:
            return device_translate(self, a, bool(write))
        finally:
            self.machine.flush_warnings()

    def dma_write(self, dma_addr, data) -> None:
        """The device stores ``data`` at bus address ``dma_addr``.

        Reference twin of dmaphys._core.Device.dma_write; same returns and raises.
        """
        a = u64(dma_addr, "dma_addr")
        b = as_bytes(data)
        if b:
            try:
                device_access(self, a, len(b), True, b)
            finally:
                self.machine.flush_warnings()
        self.dma_writes += 1

    # batch forms (batch.py): the per-call methods above, per element
    def dma_read_batch(self, addrs, size):
        """dma_read(addrs[i], size) for each i -> ndarray[uint8] (n x size); see batch.pxi.

        Reference twin of dmaphys._core.Device.dma_read_batch; same returns and raises.
        """
        from .batch import dma_read_batch
        return dma_read_batch(self, addrs, size)

    def dma_write_batch(self, addrs, data) -> None:
        """dma_write(addrs[i], data[i]) for each row of a 2-D uint8 array; see batch.pxi.

        Reference twin of dmaphys._core.Device.dma_write_batch; same returns and raises.
        """
        from .batch import dma_write_batch
        dma_write_batch(self, addrs, data)


def phys_to_dma(dev, paddr: int) -> int:
    if not dev.range_map:
        return paddr
    for cpu_start, dma_start, size in dev.range_map:
        if paddr >= cpu_start and paddr - cpu_start < size:
            return paddr - cpu_start + dma_start
    return U64_MAX


def dma_to_phys(dev, dma_addr: int) -> int:
    if not dev.range_map:
        return dma_addr
    for cpu_start, dma_start, size in dev.range_map:
        if dma_addr >= dma_start and dma_addr - dma_start < size:
            return dma_addr - dma_start + cpu_start
    return U64_MAX


def dma_get_mask(dev) -> int:
    if dev.has_dma_mask and dev._dma_mask:
        return dev._dma_mask
    return DMA_BIT_MASK(32)


def dev_live(dev) -> None:
    """DMA-API entry points refuse a device Machine.remove_device() removed (ValueError)."""
    if dev.removed:
        raise ValueError(f"device {dev.name!r} was removed from its machine")


def device_access(dev, addr: int, n: int, write: bool, data: bytes | None):
    """Mirrors device.pxi device_access(); returns the bytes read (reads) or None."""
    last = addr + n - 1
    access = "write" if write else "read"
    if dev.removed:                              # unbound and gone: blocked like IOMMU_DOMAIN_BLOCKED
        dev.faults += 1
        raise DmaFault(dev.name, addr, n, access, "blocked (the device was removed)")
    if last > U64_MAX:
        dev.faults += 1
        raise DmaFault(dev.name, addr, n, access, "address wraps")
    if dev.domain is not None and dev.domain.translates:
        phys = p2p_bus_to_phys(dev, addr, n)     # a switch routes peer requests before the IOMMU
        if phys != U64_MAX:
            return bus_access_phys(dev, phys, n, write, data)
        return iommu_device_access(dev, addr, n, write, data)
    return bus_access_phys(dev, direct_bus_to_phys(dev, addr, n, write), n, write, data)


def direct_bus_to_phys(dev, addr: int, n: int, write: bool) -> int:
    """Mirrors device.pxi direct_bus_to_phys()."""
    last = addr + n - 1
    access = "write" if write else "read"
    limit = min_not_zero(dma_get_mask(dev), dev.bus_dma_limit)
    if last > limit:
        dev.faults += 1
        raise DmaFault(dev.name, addr, n, access, f"beyond the device's addressing limit {limit:#x}")
    phys = p2p_bus_to_phys(dev, addr, n)
    if phys == U64_MAX:
        phys = dma_to_phys(dev, addr)
        if phys == U64_MAX or (n > 1 and dma_to_phys(dev, last) != phys + n - 1):
            dev.faults += 1
            raise DmaFault(dev.name, addr, n, access, "no dma_range_map region translates this bus address")
    return phys


def bus_check_phys(dev, phys: int, n: int, write: bool) -> None:
    if dev.machine.mem.find_region(phys, n) < 0:
        dev.faults += 1
        raise DmaFault(dev.name, phys, n, "write" if write else "read",
                       f"no RAM or MMIO at physical address {phys:#x}")


def bus_access_phys(dev, phys: int, n: int, write: bool, data: bytes | None):
    mem = dev.machine.mem
    bus_check_phys(dev, phys, n, write)
    if write:
        mem.write(phys, data)
        dev.machine.dma_debug.device_wrote(dev, phys, n)
        return None
    return mem.read(phys, n)


def dma_capable(dev, addr: int, size: int, is_ram: bool) -> bool:
    """include/linux/dma-direct.h dma_capable()."""
    if addr == U64_MAX:
        return False
    end = (addr + size - 1) & U64_MAX
    return end <= min_not_zero(dev._dma_mask, dev.bus_dma_limit)


def arch_sync_dma_for_device(dev, paddr: int, size: int, dir: int) -> None:
    dev.arch_sync_for_device += 1
    if dev.machine.mem.wb:                       # arm64: dcache_clean_poc() whatever the direction
        dev.machine.mem.wb_clean(paddr, size)


def arch_sync_dma_for_cpu(dev, paddr: int, size: int, dir: int) -> None:
    dev.arch_sync_for_cpu += 1
