"""``dmaphys stress``: the main job. A seeded, mixed DMA workload on a default machine, every
device read and write checked byte for byte against what the CPU side expects.

The default machine (``build_default_machine``):
  - RAM in two ranges (0-3 GiB, 4-17 GiB), 4 CPUs, the default 64 MiB swiotlb below 4 GiB;
  - an x86-64 first-stage IOMMU in lazy mode (flush queue, IOTLB);
  - ``legacy32``: a 32-bit-mask PCI device on dma-direct whose buffers above 4 GiB bounce;
  - ``nvme0``: an NVMe-like device behind the IOMMU mapping each request with the two-step
    IOVA API (dma_iova_try_alloc, dma_iova_link per page, one dma_iova_sync, dma_iova_destroy);
  - ``nic0``: a NIC-like device behind the IOMMU with RX/TX rings mapping a buffer per packet;
  - a P2P pair under one PCIe switch: ``gpu0`` publishes BAR memory, ``rdma0`` writes into it
    by bus address (PCI_P2PDMA_MAP_BUS_ADDR), plus ``acc0`` behind an allow-listed host bridge
    reaching it through the IOMMU with DMA_ATTR_MMIO (PCI_P2PDMA_MAP_THRU_HOST_BRIDGE).

Each scenario is a generator of "rounds"; the driver interleaves them by weight with a seeded
RNG, advances the virtual clock as DMA would take time, and counts operations (DMA API calls
and device accesses). The run is deterministic for a seed: the same addresses, counters and
report apart from timings.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .constants import (
    DMA_ATTR_MMIO,
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    PAGE_SIZE,
    PCI_P2PDMA_MAP_BUS_ADDR,
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
)

SCENARIOS = ("swiotlb", "direct", "nic", "nvme", "p2p")
DEFAULT_OPS = 2_000_000
IOMMU_MODES = ("off", "strict", "lazy")


def pages_spanned(phys: int, size: int) -> int:
    """The 4 KiB pages that a mapping of ``size`` bytes at ``phys`` covers (the "per page" unit).

    Simulator-only (the stress workload). Returns the int. Raises nothing for ints.
    """
    return ((phys & (PAGE_SIZE - 1)) + size + PAGE_SIZE - 1) // PAGE_SIZE


_PAGE = np.uint64(PAGE_SIZE)
_PAGE_MASK = np.uint64(PAGE_SIZE - 1)
_PAGE_SHIFT = np.uint64(PAGE_SIZE.bit_length() - 1)


def pages_spanned_sum(phys, sizes) -> int:
    """pages_spanned() summed over arrays of mappings.

    Simulator-only (the stress workload). Returns the int. Raises ValueError when the arrays do
    not broadcast, OverflowError for negative values.
    """
    phys = np.asarray(phys, dtype=np.uint64)
    sizes = np.asarray(sizes, dtype=np.uint64)
    return int((((phys & _PAGE_MASK) + sizes + _PAGE_MASK) >> _PAGE_SHIFT).sum())   # a shift: no division


class IntegrityError(AssertionError):
    """A byte a device or the CPU saw differs from what it must be.

    Simulator-only (the stress workload's verdict; an AssertionError).
    """


@dataclass
class PathStats:
    """Per-path counters and a latency reservoir (ns per round).

    Simulator-only (the stress workload). A dataclass: constructing one raises TypeError without
    ``name``.
    """

    name: str
    ops: int = 0
    rounds: int = 0
    bytes: int = 0
    seconds: float = 0.0
    map_failures: int = 0
    pages: int = 0                          # 4 KiB pages of the successful mappings (pages_spanned)
    latencies: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """The counters, rates and latency percentiles (p50 / p99 ns) for the report.

        Simulator-only. Returns the dict. Raises nothing.
        """
        lat = np.array(self.latencies, dtype=np.float64) if self.latencies else np.zeros(1)
        return {
            "ops": self.ops, "rounds": self.rounds, "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "ops_per_s": round(self.ops / self.seconds) if self.seconds else 0,
            "map_failures": self.map_failures, "pages_mapped": self.pages,
            "round_ns_p50": float(np.percentile(lat, 50)), "round_ns_p99": float(np.percentile(lat, 99)),
        }


# A round maps, drives and retires a whole ring of RING buffers (requests for nvme) with one
# batch call per step, the way drivers refill rings; every step is the per-call API applied
# element by element (batch.pxi). An operation is still one DMA API call or one device access
# per element.
RING = 64
_HDR = np.uint64(64)             # the NIC's header read (scenario_nic)
PATTERN_POOL = 16 << 20          # random bytes drawn from the seeded RNG (see Workload.pattern)
PATTERN_SPAN = 8 << 20           # the patterns are cut from pool[:PATTERN_SPAN] (see Workload.pattern)


def gather(src: np.ndarray, starts, sizes) -> np.ndarray:
    """src[starts[i]:starts[i] + sizes[i]] back to back (one slice per element: numpy's fancy
    indexing would cost a gathered index per byte).

    Simulator-only (the stress workload). Returns the 1-D array. Raises ValueError when ``starts``
    and ``sizes`` differ in length.
    """
    starts, sizes = np.asarray(starts).tolist(), np.asarray(sizes).tolist()
    parts = [src[a:a + n] for a, n in zip(starts, sizes, strict=True)]
    return np.concatenate(parts) if parts else src[:0].copy()


SAME_BYTES_MEMCMP = 1 << 14     # up to this many bytes tobytes() + memcmp is quicker than numpy


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two 1-D uint8 arrays of one shape hold the same bytes: small ones as bytes (one
    memcmp), large ones with numpy (copying a megabyte twice into fresh bytes objects costs ~10x
    numpy's element-wise compare), eight bytes per element where both are contiguous (a
    megabyte: ~30 us against ~85 us byte by byte). Simulator-only (the stress job's byte check).
    Returns a bool. Raises nothing."""
    n = a.shape[0]
    if n <= SAME_BYTES_MEMCMP:
        return a.tobytes() == b.tobytes()
    if a.flags.c_contiguous and b.flags.c_contiguous:
        body = n & ~7
        return bool(np.array_equal(a[:body].view(np.uint64), b[:body].view(np.uint64))
                    and a[body:].tobytes() == b[body:].tobytes())
    return bool(np.array_equal(a, b))


def merge_heads(heads: np.ndarray, hsizes, data: np.ndarray, sizes) -> np.ndarray:
    """``data`` (elements of ``sizes`` back to back) with each element's first hsizes[i] bytes
    replaced by the next hsizes[i] bytes of ``heads``: what a buffer holds after the device
    wrote its first part.

    Simulator-only (the stress workload). Returns the new array. Raises ValueError when the sizes do
    not fit the arrays.
    """
    out = bytearray(np.ascontiguousarray(data))       # slice stores into a bytearray: ~4x numpy's
    hv = memoryview(np.ascontiguousarray(heads)).cast("B")
    hs = (np.cumsum(hsizes) - hsizes).tolist()
    ds = (np.cumsum(sizes) - sizes).tolist()
    for h, n, d in zip(hs, np.asarray(hsizes).tolist(), ds, strict=True):
        if n > len(hv) - h or n > len(out) - d:
            raise ValueError("the sizes do not fit the arrays")
        out[d:d + n] = hv[h:h + n]
    return np.frombuffer(out, dtype=np.uint8)


def interleave(a, b) -> np.ndarray:
    """a[0], b[0], a[1], b[1], ...: two per-element arrays as one (2-D stack, no Python loop).

    Simulator-only (the stress workload). Returns the 1-D array. Raises ValueError for arrays of
    different lengths.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"interleave needs two 1-D arrays of one length, not {a.shape} and {b.shape}")
    out = np.empty(2 * a.shape[0], dtype=np.result_type(a, b))
    out[0::2] = a
    out[1::2] = b
    return out


_SIZES = object()       # check_device / check_mem: name elements by the access sizes


class Workload:
    """State shared by the scenarios: the machine, the API module, the RNGs and the checks.

    Simulator-only (the stress workload). Constructing one builds the default machine: raises
    ValueError for a bad IOMMU mode or option (see build_default_machine()).
    """

    def __init__(self, dma, seed: int, scenarios, strict: bool = False, map_size: int | None = None,
                 **machine_opts):
        self.dma = dma
        self.map_size = map_size
        self.rng = random.Random(seed)                 # picks the scenario of each round
        self.nprng = np.random.default_rng(seed)       # everything inside a round
        self.pool = np.frombuffer(self.nprng.bytes(PATTERN_POOL), dtype=np.uint8)   # read-only
        self.integrity_errors: list[str] = []
        self.checked_bytes = 0
        self.m = build_default_machine(dma, strict=strict, **machine_opts)
        self.devs = self.m.devices
        self.stats = {name: PathStats(name) for name in scenarios}
        self.occupancy: list[tuple[int, int, int]] = []   # (ops, iova pages, swiotlb slots)

    # ---- checks ------------------------------------------------------------------------
    def check(self, what: str, got, want, sizes=None) -> None:
        """Compare every byte of ``got`` with ``want`` (1-D uint8; elements of ``sizes`` back to
        back); a difference is an integrity error naming the first differing element and byte.

        Simulator-only (the stress workload). Returns None; a difference is recorded in
        ``integrity_errors``, not raised. Raises nothing.
        """
        got = np.frombuffer(got, dtype=np.uint8) if isinstance(got, (bytes, bytearray)) else got
        want = np.frombuffer(want, dtype=np.uint8) if isinstance(want, (bytes, bytearray)) else want
        if got.shape != want.shape:
            self.checked_bytes += int(want.shape[0])
            self.integrity_errors.append(f"{what}: {got.shape[0]} bytes where {want.shape[0]} expected")
            return
        if same_bytes(got, want):
            self._verdict(what, int(want.shape[0]), 0, -1, sizes)
            return
        diff = np.flatnonzero(got != want)
        self._verdict(what, int(want.shape[0]), int(diff.shape[0]), int(diff[0]), sizes)

    def _verdict(self, what: str, total: int, ndiff: int, first: int, sizes) -> None:
        """Record the outcome of a comparison made by the backend (``ndiff`` bytes differ, the
        first at offset ``first``) as check() would: the message names the element (of
        ``sizes``: an array, or one int for all) and the byte."""
        self.checked_bytes += total
        if not ndiff:
            return
        where = f"byte {first}"
        if isinstance(sizes, int):
            where = f"element {first // sizes}, byte {first % sizes}"
        elif sizes is not None:
            ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
            el = int(np.searchsorted(ends, first, side="right"))
            where = f"element {el}, byte {first - (int(ends[el]) - int(sizes[el]))}"
        self.integrity_errors.append(f"{what}: {ndiff} bytes differ (first at {where})")

    def check_device(self, what: str, dev, addrs, sizes, want: np.ndarray, elems=_SIZES) -> None:
        """The device reads ``sizes[i]`` bytes at ``addrs[i]`` for each i (one access each,
        dma_read_compare_ragged_batch): every byte is compared with ``want`` (the elements back
        to back) where it was read, without a result array. A difference is an integrity error
        naming the first differing element of ``elems`` (default: ``sizes``; None: the byte only).

        Simulator-only (the stress workload). Returns None. Raises what the device's reads raise
        (none in a correct run).
        """
        ndiff, first = self.dma.dma_read_compare_ragged_batch(dev, addrs, sizes, want)
        self._verdict(what, int(want.shape[0]), ndiff, first, sizes if elems is _SIZES else elems)

    def check_mem(self, what: str, phys, sizes, want: np.ndarray, elems=_SIZES) -> None:
        """The CPU loads ``sizes[i]`` bytes at ``phys[i]`` for each i (mem_read_compare_batch):
        every byte is compared with ``want`` in simulated memory. Differences as check_device().

        Simulator-only (the stress workload). Returns None. Raises what the CPU's loads raise
        (none in a correct run).
        """
        ndiff, first = self.dma.mem_read_compare_batch(self.m, phys, sizes, want)
        self._verdict(what, int(want.shape[0]), ndiff, first, sizes if elems is _SIZES else elems)

    def expect(self, what: str, got: bytes, want: bytes) -> None:
        """check() for two bytes objects. Simulator-only. Returns None. Raises nothing."""
        self.check(what, got, want)

    def pattern(self, n: int) -> np.ndarray:
        """``n`` pseudo-random bytes: a slice of the seeded pool at a seeded random offset.

        The offset is drawn over the whole 16 MiB pool, as it always was (so the RNG stream, and
        with it every counter of a seed, stays the same), and folded into the pool's first
        PATTERN_SPAN bytes: the bytes the CPU and the devices write, and the comparisons read,
        come from 8 MiB that stay in the last-level cache instead of 16 MiB that do not (a run
        reads ~2.5 GB of patterns). An ``n`` above PATTERN_SPAN keeps the unfolded offset.

        Simulator-only (the stress workload). Returns a view of the pool (do not write to it).
        Raises ValueError for ``n`` larger than the pool.
        """
        n = int(n)
        off = int(self.nprng.integers(0, PATTERN_POOL - n + 1))
        if n <= PATTERN_SPAN:
            off %= PATTERN_SPAN - n + 1
        return self.pool[off:off + n]


def build_default_machine(dma, strict: bool = False, *, iommu_mode: str | None = None, fmt: str = "x86-64",
                          iotlb_capacity: int = 512, iotlb_ways: int = 8, iotlb_policy: str = "lru",
                          fq_size: int | None = None, fq_timeout: int | None = None,
                          swiotlb_size: int | None = None):
    """The default machine described in the module docstring.

    The keywords vary it for parameter studies (``dmaphys sweep``): ``iommu_mode`` "off" (the
    IOMMU devices on dma-direct), "strict" or "lazy" (default: lazy, or strict if ``strict``),
    the page-table ``fmt``, the IOTLB's entries/ways/replacement policy, the flush queues'
    size/timeout (None: the kernel's), and the swiotlb size in bytes (None: the default 64 MiB).

    Simulator-only (the stress workload). Returns the Machine. Raises ValueError for an unknown
    ``iommu_mode`` and what Machine / add_iommu raise for bad options.
    """
    if iommu_mode is None:
        iommu_mode = "strict" if strict else "lazy"
    if iommu_mode not in IOMMU_MODES:
        raise ValueError(f"iommu mode must be one of {', '.join(IOMMU_MODES)}, not {iommu_mode!r}")
    m = dma.Machine(ram=[(0, 3 << 30), (4 << 30, 13 << 30)], cpus=4,
                    **({} if swiotlb_size is None else {"swiotlb": swiotlb_size}))
    iommu = None
    if iommu_mode != "off":
        iommu = m.add_iommu(fmt=fmt, strict=iommu_mode == "strict",
                            iotlb={"entries": iotlb_capacity, "ways": iotlb_ways, "policy": iotlb_policy},
                            fq_size=fq_size, fq_timeout=fq_timeout)
    m.add_device("legacy32", dma_mask=DMA_BIT_MASK(32))
    m.add_device("dma64", dma_mask=DMA_BIT_MASK(64), coherent=False)
    m.add_device("nvme0", dma_mask=DMA_BIT_MASK(64), iommu=iommu, min_align_mask=PAGE_SIZE - 1)
    m.add_device("nic0", dma_mask=DMA_BIT_MASK(64), iommu=iommu)
    hb = m.add_host_bridge("hb1", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb, acs_redirect=False)
    gpu = m.add_device("gpu0", dma_mask=DMA_BIT_MASK(64), parent=sw)
    m.add_device("rdma0", dma_mask=DMA_BIT_MASK(64), parent=sw)
    sw2 = m.add_switch("sw1", parent=hb, acs_redirect=False)
    m.add_device("acc0", dma_mask=DMA_BIT_MASK(64), iommu=iommu, parent=sw2)
    m.add_p2pmem(gpu, 0x38_0000_0000, 64 << 20, bus_addr=0x9_0000_0000)
    return m


DIRS = (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE)
MAPERR = np.uint64((1 << 64) - 1)                       # DMA_MAPPING_ERROR


def _map(w: Workload, dev, phys, sizes, direction, attrs=0):
    """dma_map_phys per element plus dma_mapping_error per element: (addrs, ok mask)."""
    addrs = w.dma.dma_map_phys_batch(dev, phys, sizes, direction, attrs)
    ok = np.logical_not(w.dma.dma_mapping_error_batch(dev, addrs))     # error == 0; a third of == 0's cost
    return addrs, ok


# ---- scenarios ------------------------------------------------------------------------------
# Each yields once per round after doing its work; it counts ops and bytes in its PathStats.

def scenario_swiotlb(w: Workload):
    """A 32-bit device on dma-direct with buffers above 4 GiB: every mapping bounces.

    4 * RING buffer slots of 8 KiB. A round maps a ring of RING new buffers (random slots, sizes and
    offsets in the slot; one direction per ring, chosen at random); the device reads a
    TO_DEVICE/BIDIRECTIONAL ring and fills the first part of each buffer of a
    FROM_DEVICE/BIDIRECTIONAL one. Then the oldest rings retire (always when the next ring
    would not fit, and each further one with probability 1/2): a ring the device may have
    written is synced for the CPU and checked first with probability 1/2; all are unmapped and
    checked (the bytes after the device's part must come back unchanged).

    Simulator-only (a stress scenario driving the kernel-named DMA API: dma_map_phys(),
    dma_unmap_phys(), dma_sync_single_for_cpu() through swiotlb). Returns a generator that runs one
    round per next(). Raises what those calls raise (none in a correct run); integrity errors are
    recorded on ``w``, not raised.
    """
    dma, m, dev, rng = w.dma, w.m, w.devs["legacy32"], w.nprng
    st = w.stats["swiotlb"]
    nslots, slot_bytes, k = 4 * RING, 2 * PAGE_SIZE, RING
    base = m.alloc_pages(nslots * slot_bytes // PAGE_SIZE)   # top-down: above 4 GiB
    free = np.ones(nslots, dtype=bool)
    rings: list = []                                          # (addr, phys, size, dir, slots, expected)
    size_choices = np.array([64, 512, 1500, 2048, 4096, 8192])
    while True:
        slots = rng.choice(free.nonzero()[0], k, replace=False)
        free[slots] = False
        size = size_choices[rng.integers(0, len(size_choices), k)]
        off = slots * slot_bytes + rng.integers(0, slot_bytes - size + 1)
        phys = np.uint64(base) + off.astype(np.uint64)
        d = DIRS[int(rng.integers(0, 3))]
        data = w.pattern(size.sum())
        usize = size.astype(np.uint64)                       # what the batch calls take as is
        dma.mem_write_batch(m, phys, usize, data)
        addr, ok = _map(w, dev, phys, usize, d)
        st.ops += k
        if not ok.all():                                      # keep the mapped ones only
            st.map_failures += int(k - ok.sum())
            free[slots[~ok]] = True
            data = gather(data, (np.cumsum(size) - size)[ok], size[ok])
            addr, phys, size, usize, slots = addr[ok], phys[ok], size[ok], usize[ok], slots[ok]
        n = addr.shape[0]
        expected = data
        if n and d != DMA_FROM_DEVICE:
            w.check_device("swiotlb TX", dev, addr, usize, data)
            st.ops += n
        if n and d != DMA_TO_DEVICE:
            # the device fills the first part only: the rest must come back unchanged
            part = rng.integers(1, size + 1)
            rx = w.pattern(part.sum())
            dma.dma_write_ragged_batch(dev, addr, part.astype(np.uint64), rx)
            st.ops += n
            expected = merge_heads(rx, part, data, size)
        st.bytes += int(size.sum())
        st.pages += pages_spanned_sum(phys, usize)
        rings.append((addr, phys, usize, d, slots, expected))
        while rings and (int(free.sum()) < k or rng.random() < 0.5):
            addr, phys, size, d, slots, expected = rings.pop(0)
            if d != DMA_TO_DEVICE and rng.random() < 0.5:
                dma.dma_sync_single_for_cpu_batch(dev, addr, size, d)
                st.ops += addr.shape[0]
                w.check_mem("swiotlb RX sync", phys, size, expected)
            dma.dma_unmap_phys_batch(dev, addr, size, d, 0)
            st.ops += addr.shape[0]
            w.check_mem("swiotlb unmap", phys, size, expected)
            free[slots] = True
        yield


def scenario_direct(w: Workload):
    """A 64-bit non-coherent device on dma-direct: no bounce, cache maintenance counted.

    A round maps RING buffers in distinct 8 KiB slots of a 2 * RING-page area (no two share a cache
    line), checks dma address == phys, lets the device read them and write new contents,
    unmaps them and checks what the CPU sees.

    Simulator-only (a stress scenario driving the kernel-named DMA API: dma_map_phys() /
    dma_unmap_phys() on dma-direct). Returns a generator that runs one round per next(). Raises what
    those calls raise (none in a correct run); integrity errors are recorded on ``w``, not raised.
    """
    dma, m, dev, rng = w.dma, w.m, w.devs["dma64"], w.nprng
    st = w.stats["direct"]
    buf = m.alloc_pages(2 * RING)
    slot_bytes, k = 2 * PAGE_SIZE, RING
    size_choices = np.array([64, 256, 4096])
    while True:
        slots = rng.choice(RING, k, replace=False)
        size = size_choices[rng.integers(0, 3, k)]
        off = slots * slot_bytes + rng.integers(0, slot_bytes - size + 1)
        phys = np.uint64(buf) + off.astype(np.uint64)
        data = w.pattern(size.sum())
        size = size.astype(np.uint64)                        # what the batch calls take as is
        dma.mem_write_batch(m, phys, size, data)
        addr, ok = _map(w, dev, phys, size, DMA_BIDIRECTIONAL)
        bad = ~ok | (addr != phys)
        for i in np.flatnonzero(bad):
            w.integrity_errors.append(f"direct: dma addr {int(addr[i]):#x} != phys {int(phys[i]):#x}")
        st.pages += pages_spanned_sum(phys, size)
        w.check_device("direct read", dev, addr, size, data)
        rx = w.pattern(size.sum())
        dma.dma_write_ragged_batch(dev, addr, size, rx)
        dma.dma_unmap_phys_batch(dev, addr, size, DMA_BIDIRECTIONAL, 0)
        w.check_mem("direct write", phys, size, rx)
        st.ops += 4 * k
        st.bytes += int(size.sum())
        yield


def scenario_nic(w: Workload):
    """RX/TX rings behind the IOMMU: a buffer mapped per packet, refilled RING at a time.

    RX: the driver maps RING empty 2 KiB buffers FROM_DEVICE; while more than 192 are posted,
    the NIC receives a packet into each buffer of the oldest refill, the driver unmaps them and
    checks. TX: RING packets written by the CPU and mapped TO_DEVICE; while more than 64 are
    queued, the NIC fetches each packet of the oldest batch (headers, then payload: two reads)
    and the driver unmaps them.

    With ``w.map_size`` set, every RX buffer and TX packet is a mapping of that many bytes
    (RX packets fill their buffer); otherwise 2 KiB RX buffers and 60-1514-byte packets.

    Simulator-only (a stress scenario driving the kernel-named DMA API: dma_map_phys() /
    dma_unmap_phys() through dma-iommu). Returns a generator that runs one round per next(). Raises
    what those calls raise (none in a correct run); integrity errors are recorded on ``w``, not
    raised.
    """
    dma, m, dev, rng = w.dma, w.m, w.devs["nic0"], w.nprng
    st = w.stats["nic"]
    fixed = w.map_size
    rx_size = fixed or 2048
    buf_pages = pages_spanned(0, fixed) if fixed else 1

    def lengths(c):                      # uint64: what the batch calls take as is
        return np.full(c, fixed, dtype=np.uint64) if fixed else rng.integers(60, 1515, c).astype(np.uint64)
    pages = np.array([m.alloc_pages(buf_pages) for _ in range(512)], dtype=np.uint64)
    rx_rings: list = []                  # (addrs, pages)
    tx_rings: list = []                  # (addrs, lengths, packets)
    rx_posted = tx_queued = 0
    slot = 0
    k = RING
    steps = 2 * np.arange(k, dtype=np.int64)
    while True:
        # refill RX: map empty buffers FROM_DEVICE (even slots)
        pg = pages[(slot + steps) % 512]
        addr, ok = _map(w, dev, pg, rx_size, DMA_FROM_DEVICE)
        st.ops += k
        if not ok.all():
            st.map_failures += int(k - ok.sum())
            addr, pg = addr[ok], pg[ok]
        st.pages += buf_pages * addr.shape[0]
        rx_rings.append((addr, pg))
        rx_posted += addr.shape[0]
        # the NIC receives a packet into each buffer of the oldest refills
        while rx_posted > 192:
            a, pg = rx_rings.pop(0)
            rx_posted -= a.shape[0]
            c = a.shape[0]
            n = lengths(c)
            pkt = w.pattern(n.sum())
            dma.dma_write_ragged_batch(dev, a, n, pkt)
            dma.dma_unmap_phys_batch(dev, a, rx_size, DMA_FROM_DEVICE, 0)
            w.check_mem("nic RX", pg, n, pkt)
            st.ops += 3 * c
            st.bytes += int(n.sum())
        # transmit packets (odd slots)
        pg = pages[(slot + 1 + steps) % 512]
        slot += 2 * k
        n = lengths(k)
        pkt = w.pattern(n.sum())
        dma.mem_write_batch(m, pg, n, pkt)
        addr, ok = _map(w, dev, pg, n, DMA_TO_DEVICE)
        st.ops += k
        if not ok.all():
            st.map_failures += int(k - ok.sum())
            pkt = gather(pkt, (np.cumsum(n) - n)[ok], n[ok])
            addr, n = addr[ok], n[ok]
        st.pages += buf_pages * addr.shape[0]
        tx_rings.append((addr, n, pkt))
        tx_queued += addr.shape[0]
        while tx_queued > 64:
            a, n, pkt = tx_rings.pop(0)
            tx_queued -= a.shape[0]
            # the NIC fetches each packet's headers first, then its payload: two reads per
            # packet (none for an empty payload), in one batch, back to back = the packets
            hdr = np.minimum(n, _HDR)
            addrs, sizes = interleave(a, a + hdr), interleave(hdr, n - hdr)
            if (n <= hdr).any():
                keep = sizes > 0
                addrs, sizes = addrs[keep], sizes[keep]
            w.check_device("nic TX", dev, addrs, sizes, pkt, n)
            dma.dma_unmap_phys_batch(dev, a, n, DMA_TO_DEVICE, 0)
            st.ops += 3 * a.shape[0]
            st.bytes += int(n.sum())
        m.advance(1_000 * k)                               # a microsecond of wire time per packet
        yield


def _nvme_direct(w: Workload, dev, phys, npages, first, write_req, fallback, data) -> None:
    """The requests dma_iova_try_alloc() refused (no IOMMU: dma-direct): the block layer's
    fallback, a dma_map_phys per segment (blk_dma_map_direct), the device's access per page,
    a dma_unmap_phys per segment -- one batch call per step and direction."""
    dma, st = w.dma, w.stats["nvme"]
    for is_write, direction in ((True, DMA_TO_DEVICE), (False, DMA_FROM_DEVICE)):
        req = fallback & (write_req == is_write)
        if not req.any():
            continue
        pmask = np.repeat(req, npages)
        p = phys[pmask]
        want = gather(data, first[req] * PAGE_SIZE, npages[req] * PAGE_SIZE)
        addr, ok = _map(w, dev, p, NVME_SIZES[:1].repeat(p.shape[0]), direction)
        st.ops += p.shape[0]
        starts = np.cumsum(npages[req]) - npages[req]
        req_ok = np.minimum.reduceat(ok, starts) if ok.shape[0] else ok
        st.map_failures += int((~req_ok).sum())
        good = np.repeat(req_ok, npages[req])                 # the pages of whole mapped requests
        if not req_ok.all():
            want = want.reshape(-1, PAGE_SIZE)[good].reshape(-1)
        if good.any():
            if is_write:
                w.check_device("nvme write", dev, addr[good], PAGE_SIZE, want, None)
            else:
                dma.dma_write_ragged_batch(dev, addr[good], PAGE_SIZE, want)
            st.ops += int(good.sum())
        dma.dma_unmap_phys_batch(dev, addr[ok], PAGE_SIZE, direction, 0)
        st.ops += int(ok.sum())
        if good.any():
            if not is_write:
                w.check_mem("nvme read", p[good], PAGE_SIZE, want, None)
            st.bytes += int(good.sum()) * PAGE_SIZE
            st.pages += int(good.sum())


NVME_OFFSETS = np.arange(32, dtype=np.uint64) * PAGE_SIZE
NVME_SIZES = np.full(32, PAGE_SIZE, dtype=np.uint64)
NVME_ACCEPT = np.array([float(np.prod(1 - np.arange(n) / 1024)) for n in range(33)])


def scenario_nvme(w: Workload):
    """NVMe-like requests: scattered pages linked into one IOVA range, one IOTLB sync each.

    A round is a submission queue of up to RING requests over distinct pages (write requests
    first): the CPU fills the pages of the write requests; the driver maps each request with
    dma_iova_try_alloc, one dma_iova_link per page (one batch call) and one dma_iova_sync; the
    device then reads every write request's IOVA range and writes every read request's (one
    access per request, one batch call each); the driver completes each request with
    dma_iova_destroy; the device's reads and the read requests' pages are checked.

    Simulator-only (a stress scenario driving the kernel-named DMA API: dma_iova_try_alloc(),
    dma_iova_link(), dma_iova_sync(), dma_iova_destroy()). Returns a generator that runs one round
    per next(). Raises what those calls raise (none in a correct run); integrity errors are recorded
    on ``w``, not raised.
    """
    dma, m, dev, rng = w.dma, w.m, w.devs["nvme0"], w.nprng
    st = w.stats["nvme"]
    npool = 1024
    pages = np.array([m.alloc_pages(1) for _ in range(npool)], dtype=np.uint64)
    npages_choices = np.array([1, 2, 4, 8, 16, 32])
    slot_states = [dma.DmaIovaState() for _ in range(RING)]
    while True:
        # request sizes: uniform over the choices, each kept with the probability that that
        # many random picks from the pool are distinct (the per-request workload redrew a
        # request that picked a page twice, which favoured small requests: the same law)
        cand = npages_choices[rng.integers(0, 6, 2 * RING)]
        npages = cand[rng.random(2 * RING) < NVME_ACCEPT[cand]][:RING]
        npages = npages[:int(np.cumsum(npages).searchsorted(npool, side="right"))]
        nreq = npages.shape[0]
        nwrite = int((rng.random(nreq) < 0.5).sum())        # device reads host memory
        first = np.cumsum(npages) - npages
        total_pages = int(npages.sum())
        wpages = int(npages[:nwrite].sum())
        phys = pages[rng.choice(npool, total_pages, replace=False)]
        data = w.pattern(total_pages * PAGE_SIZE)
        if wpages:
            dma.mem_write_batch(m, phys[:wpages], PAGE_SIZE, data[:wpages * PAGE_SIZE])
        # one DmaIovaState per queue slot, reused request after request (drivers embed it in
        # their request structure; dma_iova_try_alloc() reinitialises it). The queue is mapped
        # with one batch call per direction (write requests first, then reads: the requests'
        # order): per request dma_iova_try_alloc, a dma_iova_link per page, one dma_iova_sync
        states = slot_states[:nreq]
        unpages = npages.astype(np.uint64)                   # what the batch calls take as is
        status = np.empty(nreq, dtype=np.int32)
        mapped = np.empty(nreq, dtype=np.uint64)
        for lo, hi, plo, phi, direction in ((0, nwrite, 0, wpages, DMA_TO_DEVICE),
                                            (nwrite, nreq, wpages, total_pages, DMA_FROM_DEVICE)):
            if hi > lo:
                status[lo:hi], mapped[lo:hi] = dma.dma_iova_alloc_link_sync_batch(
                    dev, states[lo:hi], phys[plo:phi], PAGE_SIZE, unpages[lo:hi], direction)
        if status.any():
            _nvme_complete_mixed(w, dev, states, status, mapped, phys, npages, first, nwrite, wpages, data)
        else:
            # the common case, every request mapped in full: the steps below with every mask true
            iova = np.array([s.addr for s in states], dtype=np.uint64)
            size = unpages * _PAGE
            st.ops += total_pages + 2 * nreq                # links, syncs, device accesses
            if nwrite:
                w.check_device("nvme write", dev, iova[:nwrite], size[:nwrite], data[:wpages * PAGE_SIZE])
            if nreq > nwrite:
                dma.dma_write_ragged_batch(dev, iova[nwrite:], size[nwrite:], data[wpages * PAGE_SIZE:])
            if nwrite:
                dma.dma_iova_destroy_batch(dev, states[:nwrite], mapped[:nwrite], DMA_TO_DEVICE)
            if nreq > nwrite:
                dma.dma_iova_destroy_batch(dev, states[nwrite:], mapped[nwrite:], DMA_FROM_DEVICE)
            st.ops += 2 * nreq
            st.bytes += total_pages * PAGE_SIZE
            st.pages += total_pages
            if nreq > nwrite:
                w.check_mem("nvme read", phys[wpages:], PAGE_SIZE, data[wpages * PAGE_SIZE:], PAGE_SIZE)
        m.advance(2_000 * nreq)
        yield


def _nvme_complete_mixed(w: Workload, dev, states, status, mapped, phys, npages, first, nwrite, wpages,
                         data) -> None:
    """The rest of an NVMe round whose queue did not map in full (status: 0 mapped, 1 use the
    regular DMA API, -errno failed): count, execute, complete and check as the requests went."""
    dma, st = w.dma, w.stats["nvme"]
    nreq = npages.shape[0]
    write_req = np.arange(nreq) < nwrite
    fallback = status == 1                            # no IOVA space (no IOMMU): see below
    used = ~fallback
    done = status == 0
    # operations: a refused dma_iova_try_alloc; each dma_iova_link tried (up to the first
    # failure); a successful dma_iova_sync; a dma_iova_destroy counts two (with the alloc)
    linked = mapped // PAGE_SIZE
    st.ops += int(fallback.sum()) + int(linked[used].sum()) + int((used & (linked < npages)).sum()) \
        + int(done.sum())
    st.map_failures += int((status < 0).sum())
    iova = np.array([s.addr for s in states], dtype=np.uint64)
    size = npages * PAGE_SIZE
    rd, wr = done & write_req, done & ~write_req
    if rd.any():                                        # the device executes the queue
        want = data[:wpages * PAGE_SIZE] if rd.sum() == nwrite else \
            gather(data, first[rd] * PAGE_SIZE, size[rd])
        w.check_device("nvme write", dev, iova[rd], size[rd], want)
    if wr.any():
        dma.dma_write_ragged_batch(dev, iova[wr], size[wr], gather(data, first[wr] * PAGE_SIZE, size[wr])
                                   if wr.sum() < nreq - nwrite else data[wpages * PAGE_SIZE:])
    st.ops += int(done.sum())
    for lo, hi, direction in ((0, nwrite, DMA_TO_DEVICE), (nwrite, nreq, DMA_FROM_DEVICE)):  # completions
        u = np.flatnonzero(used[lo:hi]) + lo
        if u.shape[0]:
            dma.dma_iova_destroy_batch(dev, [states[r] for r in u.tolist()], mapped[u], direction)
            st.ops += 2 * u.shape[0]
    st.bytes += int(size[used].sum())
    st.pages += int(mapped[used].sum()) // PAGE_SIZE
    if fallback.any():
        _nvme_direct(w, dev, phys, npages, first, write_req, fallback, data)
    if wr.any():
        rp = np.repeat(wr, npages)
        want = data[wpages * PAGE_SIZE:] if wr.sum() == nreq - nwrite else \
            gather(data, first[wr] * PAGE_SIZE, size[wr])
        w.check_mem("nvme read", phys[rp], PAGE_SIZE, want, PAGE_SIZE)


def scenario_p2p(w: Workload):
    """Peer-to-peer: bus addresses through the switch, MMIO mappings through the host bridge.

    A round stores 2 * RING buffers into the gpu's 64 MiB BAR (one random 8 KiB slot in each
    1 MiB stripe), about half by rdma0 at bus addresses (PCI_P2PDMA_MAP_BUS_ADDR), the rest by
    acc0 through the IOMMU with DMA_ATTR_MMIO (PCI_P2PDMA_MAP_THRU_HOST_BRIDGE), with one
    pci_p2pdma_state() per client and round (it caches the map type by pgmap, and every
    buffer is in the one pgmap); then the CPU checks the BAR.

    Simulator-only (a stress scenario driving the kernel-named DMA API: pci_p2pdma_state(),
    pci_p2pdma_bus_addr_map(), dma_map_phys() with DMA_ATTR_MMIO). Returns a generator that runs one
    round per next(). Raises what those calls raise (none in a correct run); integrity errors are
    recorded on ``w``, not raised.
    """
    dma, rng = w.dma, w.nprng
    st = w.stats["p2p"]
    rdma, acc = w.devs["rdma0"], w.devs["acc0"]
    bar = 0x38_0000_0000
    slot_bytes = 8192
    stripe = (64 << 20) // (2 * RING) // slot_bytes      # slots per stripe
    size_choices = np.array([64, 512, 4096])
    # one map state per client: pci_p2pdma_state() caches the map type by pgmap only
    rdma_state, acc_state = dma.PciP2PdmaMapState(), dma.PciP2PdmaMapState()
    while True:
        k = 2 * RING            # ~2 ops per buffer (3.5 per buffer when each one was a request)
        n = size_choices[rng.integers(0, 3, k)]
        slots = np.arange(k) * stripe + rng.integers(0, stripe, k)
        off = slots * slot_bytes + (rng.integers(0, slot_bytes - n + 1) & ~63)
        phys = np.uint64(bar) + off.astype(np.uint64)
        n = n.astype(np.uint64)                              # what the batch calls take as is
        to_rdma = rng.random(k) < 0.5
        if to_rdma.any():
            p, sz = phys[to_rdma], n[to_rdma]
            data = w.pattern(sz.sum())
            t = dma.pci_p2pdma_state(rdma_state, rdma, int(p[0]))
            if t != PCI_P2PDMA_MAP_BUS_ADDR:
                w.integrity_errors.append(f"p2p: map type {t} for rdma0, expected BUS_ADDR")
            # pci_p2pdma_bus_addr_map() per element: paddr + the provider's bus offset
            dma.dma_write_ragged_batch(rdma, p + np.uint64(rdma_state.bus_off), sz, data)
            st.ops += 1 + p.shape[0]
            w.check_mem("p2p BAR store", p, sz, data)
            st.bytes += int(sz.sum())
            st.pages += pages_spanned_sum(p, sz)
        if not to_rdma.all():
            p, sz = phys[~to_rdma], n[~to_rdma]
            data = w.pattern(sz.sum())
            t = dma.pci_p2pdma_state(acc_state, acc, int(p[0]))
            if t != PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
                w.integrity_errors.append(f"p2p: map type {t} for acc0, expected THRU_HOST_BRIDGE")
            addr, ok = _map(w, acc, p, sz, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)
            st.ops += 1 + p.shape[0]
            if not ok.all():
                st.map_failures += int((~ok).sum())
                data = gather(data, (np.cumsum(sz) - sz)[ok], sz[ok])
                addr, p, sz = addr[ok], p[ok], sz[ok]
            if addr.shape[0]:
                dma.dma_write_ragged_batch(acc, addr, sz, data)
                dma.dma_unmap_phys_batch(acc, addr, sz, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)
                st.ops += 2 * addr.shape[0]
                w.check_mem("p2p BAR store", p, sz, data)
                st.bytes += int(sz.sum())
                st.pages += pages_spanned_sum(p, sz)
        yield


SCENARIO_FUNCS = {"swiotlb": scenario_swiotlb, "direct": scenario_direct, "nic": scenario_nic,
                  "nvme": scenario_nvme, "p2p": scenario_p2p}
WEIGHTS = {"swiotlb": 2, "direct": 1, "nic": 4, "nvme": 2, "p2p": 1}


def run(ops: int = DEFAULT_OPS, seed: int = 0, scenarios=SCENARIOS, duration: float | None = None,
        dma=None, progress: bool = True, strict: bool = False, *, iommu: str | None = None,
        fmt: str = "x86-64", iotlb_capacity: int = 512, iotlb_ways: int = 8, iotlb_policy: str = "lru",
        fq_size: int | None = None, fq_timeout: int | None = None, swiotlb_size: int | None = None,
        map_size: int | None = None) -> dict:
    """Run the workload until ``ops`` operations (or ``duration`` seconds); returns the report dict.

    ``iommu`` ("off" | "strict" | "lazy"; default lazy, or strict with ``strict=True``) and the
    keywords after it vary the default machine (see build_default_machine); ``map_size`` fixes
    the size in bytes of every NIC mapping (default: 2 KiB RX buffers, 60-1514-byte packets).

    Simulator-only (the main job). Ctrl-C stops the run: the report so far comes back with
    ``interrupted`` set. Raises ValueError for a ``map_size`` <= 0, a bad IOMMU mode or option;
    ImportError with ``progress`` and no tqdm; what the DMA API raises (none in a correct run).
    """
    if dma is None:
        import dmaphys as dma
    scenarios = tuple(scenarios)
    if map_size is not None and map_size <= 0:
        raise ValueError(f"map_size must be positive, not {map_size}")
    w = Workload(dma, seed, scenarios, strict=strict, map_size=map_size, iommu_mode=iommu, fmt=fmt,
                 iotlb_capacity=iotlb_capacity, iotlb_ways=iotlb_ways, iotlb_policy=iotlb_policy,
                 fq_size=fq_size, fq_timeout=fq_timeout, swiotlb_size=swiotlb_size)
    gens = {name: SCENARIO_FUNCS[name](w) for name in scenarios}
    names = list(scenarios)
    weights = [WEIGHTS[n] for n in names]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=ops if duration is None else None, unit="op", unit_scale=True,
                   desc="dmaphys stress", file=sys.stderr, dynamic_ncols=True)
    total = 0
    start = time.perf_counter()
    deadline = None if duration is None else start + duration
    clock = time.perf_counter_ns
    sample_every = max(ops // 200, 1000)
    next_sample = 0
    interrupted = False
    try:
        while True:
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    break
            elif total >= ops:
                break
            name = w.rng.choices(names, weights)[0]
            st = w.stats[name]
            before = st.ops
            t0 = clock()
            next(gens[name])
            dt = clock() - t0
            st.seconds += dt / 1e9
            st.rounds += 1
            if len(st.latencies) < 20000:
                st.latencies.append(dt)
            elif w.rng.random() < 0.01:
                st.latencies[w.rng.randrange(20000)] = dt
            done = st.ops - before
            total += done
            if bar is not None:
                bar.update(done)
            if total >= next_sample:
                w.occupancy.append((total, iova_pages_in_use(w.m), swiotlb_used(w.m)))
                next_sample = total + sample_every
    except KeyboardInterrupt:                      # Ctrl-C: stop and report what ran so far
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    w.occupancy.append((total, iova_pages_in_use(w.m), swiotlb_used(w.m)))     # the end state too
    report = build_report(w, total, elapsed, seed)
    report["interrupted"] = interrupted
    return report


# ---- report ---------------------------------------------------------------------------------

def iova_pages_in_use(m) -> int:
    """IOVA pages in the allocator trees (allocated, rcache-cached, reserved) of every DMA domain of ``m``.

    Simulator-only (the report's figure). Returns the int. Raises nothing.
    """
    total = 0
    for iommu in m.iommus:
        for d in iommu.domains:
            cookie = d.iova_cookie
            if cookie is not None and cookie.iovad is not None:
                total += cookie.iovad.range_pages()  # sum(hi - lo + 1 for ranges()), in C
    return total


def swiotlb_used(m) -> int:
    """swiotlb slots in use (io_tlb_mem total_used, mem_used() in kernel/dma/swiotlb.c).

    Returns the int, 0 without a pool. Raises nothing.
    """
    return m.swiotlb.total_used if m.swiotlb is not None else 0


def build_report(w: Workload, total_ops: int, elapsed: float, seed: int) -> dict:
    """The report dict of a run: per-path figures, IOVA / swiotlb occupancy, IOMMU and IOTLB
    counters, faults, dma-debug findings, integrity errors.

    Simulator-only. Returns the dict. Raises nothing.
    """
    m = w.m
    iommus = []
    for iommu in m.iommus:
        tlb = iommu.iotlb
        iommus.append({
            "fmt": iommu.fmt, "strict": bool(iommu.strict),
            "iotlb": {"hits": tlb.hits, "misses": tlb.misses, "stale_hits": tlb.stale_hits,
                      "invalidations": tlb.invalidations, "entries": tlb.entries, "ways": tlb.ways,
                      "policy": tlb.policy},
            "page_table_pages": sum(d.pgtable.table_pages for d in iommu.domains if d.pgtable is not None),
            "iotlb_syncs": sum(d.iotlb_syncs for d in iommu.domains),
            "iotlb_flushes": sum(d.iotlb_flushes for d in iommu.domains),
            "faults": len(iommu.faults),
        })
    occ = w.occupancy
    report = {
        "seed": seed,
        "operations": total_ops,
        "pages_mapped": sum(st.pages for st in w.stats.values()),
        "seconds": round(elapsed, 3),
        "ops_per_s": round(total_ops / elapsed) if elapsed else 0,
        "paths": {name: st.as_dict() for name, st in w.stats.items()},
        "iova": {"pages_in_use": iova_pages_in_use(m),
                 "high_water_pages": max((o[1] for o in occ), default=0)},
        "swiotlb": ({"nslabs": m.swiotlb.nslabs, "used": m.swiotlb.total_used,
                     "used_hiwater": m.swiotlb.used_hiwater} if m.swiotlb is not None else None),
        "iommus": iommus,
        "device_faults": {name: d.faults for name, d in m.devices.items() if d.faults},
        "dma_debug": {"enabled": bool(m.dma_debug.enabled), "error_count": m.dma_debug.error_count,
                      "findings": [str(e) for e in m.dma_debug.errors[:20]]},
        "integrity_errors": len(w.integrity_errors),
        "checked_bytes": w.checked_bytes,
        "integrity_samples": w.integrity_errors[:20],
        "occupancy": occ,
        "latencies": {name: st.latencies for name, st in w.stats.items()},
    }
    return report


def format_report(r: dict) -> str:
    """The human-readable report (the table in README.md).

    Simulator-only. Returns the lines as one str. Raises KeyError for a dict that is not a report.
    """
    stop = " -- interrupted, the report so far" if r.get("interrupted") else ""
    lines = [f"dmaphys stress: seed {r['seed']}, {r['operations']:,} operations in {r['seconds']:.2f} s "
             f"({r['ops_per_s']:,} ops/s){stop}", "",
             f"{'path':<10}{'ops':>12}{'ops/s':>12}{'rounds':>10}{'MiB moved':>11}{'map fails':>11}"
             f"{'p50 ns':>10}{'p99 ns':>10}"]
    for name, p in r["paths"].items():
        lines.append(f"{name:<10}{p['ops']:>12,}{p['ops_per_s']:>12,}{p['rounds']:>10,}"
                     f"{p['bytes'] / 2**20:>11.1f}{p['map_failures']:>11,}"
                     f"{p['round_ns_p50']:>10.0f}{p['round_ns_p99']:>10.0f}")
    lines.append("")
    lines.append(f"IOVA space: {r['iova']['pages_in_use']:,} pages in use, "
                 f"high-water {r['iova']['high_water_pages']:,} pages")
    if r["swiotlb"]:
        s = r["swiotlb"]
        lines.append(f"swiotlb: {s['used']:,}/{s['nslabs']:,} slots in use, high-water {s['used_hiwater']:,}")
    for i in r["iommus"]:
        t = i["iotlb"]
        lines.append(f"IOMMU {i['fmt']} ({'strict' if i['strict'] else 'lazy'}): IOTLB hits {t['hits']:,} "
                     f"misses {t['misses']:,} stale hits {t['stale_hits']:,} invalidations "
                     f"{t['invalidations']:,}; page-table pages {i['page_table_pages']:,}; "
                     f"faults {i['faults']:,}")
    lines.append(f"device faults: {r['device_faults'] or 'none'}")
    d = r["dma_debug"]
    lines.append(f"dma-debug: {'on' if d['enabled'] else 'off'}, {d['error_count']} findings")
    for f in d["findings"]:
        lines.append(f"  {f}")
    lines.append(f"integrity errors: {r['integrity_errors']} "
                 f"({r.get('checked_bytes', 0) / 2**20:,.1f} MiB compared byte for byte)")
    for s in r["integrity_samples"]:
        lines.append(f"  {s}")
    return "\n".join(lines)


def plot_report(r: dict, path: str) -> None:
    """Latency histograms per path and IOVA/swiotlb occupancy over time (matplotlib).

    Simulator-only. Returns None. Raises ImportError without matplotlib, OSError when ``path``
    cannot be written.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    lats = [np.array(lat, dtype=np.float64) / 1000.0 for lat in r["latencies"].values() if lat]
    lo = max(min((a.min() for a in lats), default=0.1), 0.01)
    hi = max(max((a.max() for a in lats), default=1.0), lo * 10)
    bins = np.geomspace(lo, hi, 60)                  # latencies span decades: log-spaced bins, log axes
    for name, lat in r["latencies"].items():
        if lat:
            ax1.hist(np.array(lat) / 1000.0, bins=bins, histtype="step", label=name, log=True)
    ax1.set_xscale("log")
    ax1.set_xlabel("round latency (µs, log)")
    ax1.set_ylabel("rounds (log)")
    ax1.set_title("latency per path")
    ax1.legend()
    occ = np.array(r["occupancy"] or [(0, 0, 0)], dtype=np.float64)
    ax2.plot(occ[:, 0], occ[:, 1], color="tab:blue", label="IOVA pages in use")
    ax2.set_xlabel("operations")
    ax2.set_ylabel("IOVA pages in use", color="tab:blue")
    ax3 = ax2.twinx()                                # slots and pages differ by orders of magnitude
    ax3.plot(occ[:, 0], occ[:, 2], color="tab:orange", label="swiotlb slots in use")
    ax3.set_ylabel("swiotlb slots in use", color="tab:orange")
    ax2.set_title("occupancy over time")
    ax2.legend(handles=ax2.get_lines() + ax3.get_lines(), loc="upper left")
    fig.suptitle(f"dmaphys stress, seed {r['seed']}: {r['operations']:,} ops")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")            # exactly ``path`` (no ".png" appended)
    plt.close(fig)


def to_json(r: dict) -> str:
    """The report as indented JSON, without the raw latencies and occupancy samples.

    Simulator-only. Returns the str. Raises TypeError for values JSON cannot hold.
    """
    out = {k: v for k, v in r.items() if k not in ("latencies", "occupancy")}
    return json.dumps(out, indent=2, sort_keys=False)
