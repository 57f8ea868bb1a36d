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
from collections import deque
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
    """The 4 KiB pages that a mapping of ``size`` bytes at ``phys`` covers (the "per page" unit)."""
    return ((phys & (PAGE_SIZE - 1)) + size + PAGE_SIZE - 1) // PAGE_SIZE


class IntegrityError(AssertionError):
    pass


@dataclass
class PathStats:
    """Per-path counters and a latency reservoir (ns per round)."""

    name: str
    ops: int = 0
    rounds: int = 0
    bytes: int = 0
    seconds: float = 0.0
    map_failures: int = 0
    pages: int = 0                          # 4 KiB pages of the successful mappings (pages_spanned)
    latencies: list = field(default_factory=list)

    def as_dict(self) -> dict:
        lat = np.array(self.latencies, dtype=np.float64) if self.latencies else np.zeros(1)
        return {
            "ops": self.ops, "rounds": self.rounds, "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "ops_per_s": round(self.ops / self.seconds) if self.seconds else 0,
            "map_failures": self.map_failures, "pages_mapped": self.pages,
            "round_ns_p50": float(np.percentile(lat, 50)), "round_ns_p99": float(np.percentile(lat, 99)),
        }


class Workload:
    """State shared by the scenarios: the machine, the API module, the RNG and the checks."""

    def __init__(self, dma, seed: int, scenarios, strict: bool = False, map_size: int | None = None,
                 **machine_opts):
        self.dma = dma
        self.map_size = map_size
        self.rng = random.Random(seed)
        self.nprng = np.random.default_rng(seed)
        self.integrity_errors: list[str] = []
        self.m = build_default_machine(dma, strict=strict, **machine_opts)
        self.devs = self.m.devices
        self.stats = {name: PathStats(name) for name in scenarios}
        self.occupancy: list[tuple[int, int, int]] = []   # (ops, iova pages, swiotlb slots)

    # ---- checks ------------------------------------------------------------------------
    def expect(self, what: str, got: bytes, want: bytes) -> None:
        if got != want:
            first = next(i for i in range(min(len(got), len(want))) if got[i] != want[i]) \
                if len(got) == len(want) else -1
            self.integrity_errors.append(f"{what}: {len(got)} bytes differ (first at {first})")

    def pattern(self, n: int) -> bytes:
        return self.nprng.bytes(n)


def build_default_machine(dma, strict: bool = False, *, iommu_mode: str | None = None, fmt: str = "x86-64",
                          iotlb_capacity: int = 512, iotlb_ways: int = 8, iotlb_policy: str = "lru",
                          fq_size: int | None = None, fq_timeout: int | None = None,
                          swiotlb_size: int | None = None):
    """The default machine described in the module docstring.

    The keywords vary it for parameter studies (``dmaphys sweep``): ``iommu_mode`` "off" (the
    IOMMU devices on dma-direct), "strict" or "lazy" (default: lazy, or strict if ``strict``),
    the page-table ``fmt``, the IOTLB's entries/ways/replacement policy, the flush queues'
    size/timeout (None: the kernel's), and the swiotlb size in bytes (None: the default 64 MiB).
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


# ---- scenarios ------------------------------------------------------------------------------
# Each yields once per round after doing its work; it returns (ops, bytes) through the stats.

def scenario_swiotlb(w: Workload):
    """A 32-bit device on dma-direct with buffers above 4 GiB: every mapping bounces."""
    dma, m, dev = w.dma, w.m, w.devs["legacy32"]
    st = w.stats["swiotlb"]
    slot_pages = 4                                          # a buffer slot: 16 KiB
    base = m.alloc_pages(64 * slot_pages)                   # top-down: above 4 GiB
    free_slots = list(range(64))
    live: deque = deque()
    while True:
        slot = free_slots.pop(w.rng.randrange(len(free_slots)))
        size = w.rng.choice((64, 512, 1500, 2048, 4096, 8192))
        buf = base + slot * slot_pages * PAGE_SIZE + w.rng.randrange(0, slot_pages * PAGE_SIZE - size + 1)
        direction = w.rng.choice((DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL))
        data = w.pattern(size)
        m.mem_write(buf, data)
        addr = dma.dma_map_single(dev, buf, size, direction)
        st.ops += 1
        if dma.dma_mapping_error(dev, addr):
            st.map_failures += 1
            free_slots.append(slot)
        else:
            if direction != DMA_FROM_DEVICE:
                w.expect("swiotlb TX", dev.dma_read(addr, size), data)
                st.ops += 1
            if direction != DMA_TO_DEVICE:
                # the device fills the first part only: the rest must come back unchanged
                part = w.rng.randrange(1, size + 1)
                rx = w.pattern(part)
                dev.dma_write(addr, rx)
                st.ops += 1
                data = rx + data[part:]
            live.append((addr, buf, size, direction, data, slot))
            st.bytes += size
            st.pages += pages_spanned(buf, size)
        while len(live) > 48 or (live and w.rng.random() < 0.5):
            addr, buf, size, direction, data, slot = live.popleft()
            if direction != DMA_TO_DEVICE and w.rng.random() < 0.5:
                dma.dma_sync_single_for_cpu(dev, addr, size, direction)
                st.ops += 1
                w.expect("swiotlb RX sync", m.mem_read(buf, size), data)
            dma.dma_unmap_single(dev, addr, size, direction)
            st.ops += 1
            w.expect("swiotlb unmap", m.mem_read(buf, size), data)
            free_slots.append(slot)
        yield


def scenario_direct(w: Workload):
    """A 64-bit non-coherent device on dma-direct: no bounce, cache maintenance counted."""
    dma, m, dev = w.dma, w.m, w.devs["dma64"]
    st = w.stats["direct"]
    buf = m.alloc_pages(64)
    while True:
        off = w.rng.randrange(0, 63 * PAGE_SIZE)
        size = w.rng.choice((64, 256, 4096))
        data = w.pattern(size)
        m.mem_write(buf + off, data)
        addr = dma.dma_map_single(dev, buf + off, size, DMA_BIDIRECTIONAL)
        if dma.dma_mapping_error(dev, addr) or addr != buf + off:
            w.integrity_errors.append(f"direct: dma addr {addr:#x} != phys {buf + off:#x}")
        st.pages += pages_spanned(buf + off, size)
        w.expect("direct read", dev.dma_read(addr, size), data)
        rx = w.pattern(size)
        dev.dma_write(addr, rx)
        dma.dma_unmap_single(dev, addr, size, DMA_BIDIRECTIONAL)
        w.expect("direct write", m.mem_read(buf + off, size), rx)
        st.ops += 4
        st.bytes += size
        yield


def scenario_nic(w: Workload):
    """RX/TX rings behind the IOMMU: a buffer mapped per packet, ring depth 256.

    With ``w.map_size`` set, every RX buffer and TX packet is a mapping of that many bytes
    (RX packets fill their buffer); otherwise 2 KiB RX buffers and 60-1514-byte packets.
    """
    dma, m, dev = w.dma, w.m, w.devs["nic0"]
    st = w.stats["nic"]
    fixed = w.map_size
    rx_size = fixed or 2048
    buf_pages = pages_spanned(0, fixed) if fixed else 1
    pages = [m.alloc_pages(buf_pages) for _ in range(512)]
    rx_ring: deque = deque()
    tx_ring: deque = deque()
    slot = 0
    while True:
        # refill RX: map an empty buffer FROM_DEVICE
        page = pages[slot % 512]
        slot += 1
        addr = dma.dma_map_single(dev, page, rx_size, DMA_FROM_DEVICE)
        st.ops += 1
        if dma.dma_mapping_error(dev, addr):
            st.map_failures += 1
        else:
            rx_ring.append((addr, page))
            st.pages += buf_pages
        # the NIC receives a packet into the oldest RX buffer
        if len(rx_ring) > 192:
            addr, page = rx_ring.popleft()
            n = fixed or w.rng.randrange(60, 1515)
            pkt = w.pattern(n)
            dev.dma_write(addr, pkt)
            dma.dma_unmap_single(dev, addr, rx_size, DMA_FROM_DEVICE)
            w.expect("nic RX", m.mem_read(page, n), pkt)
            st.ops += 3
            st.bytes += n
        # transmit a packet
        page = pages[slot % 512]
        slot += 1
        n = fixed or w.rng.randrange(60, 1515)
        pkt = w.pattern(n)
        m.mem_write(page, pkt)
        addr = dma.dma_map_single(dev, page, n, DMA_TO_DEVICE)
        st.ops += 1
        if dma.dma_mapping_error(dev, addr):
            st.map_failures += 1
        else:
            tx_ring.append((addr, n, pkt))
            st.pages += buf_pages
        if len(tx_ring) > 64:
            addr, n, pkt = tx_ring.popleft()
            # the NIC fetches the headers first, then the payload (two reads, one translation)
            hdr = min(n, 64)
            got = dev.dma_read(addr, hdr) + (dev.dma_read(addr + hdr, n - hdr) if n > hdr else b"")
            w.expect("nic TX", got, pkt)
            dma.dma_unmap_single(dev, addr, n, DMA_TO_DEVICE)
            st.ops += 3
            st.bytes += n
        m.advance(1_000)                                     # a microsecond of wire time
        yield


def scenario_nvme(w: Workload):
    """NVMe-like requests: scattered pages linked into one IOVA range, one IOTLB sync each."""
    dma, m, dev = w.dma, w.m, w.devs["nvme0"]
    st = w.stats["nvme"]
    pages = [m.alloc_pages(1) for _ in range(1024)]
    while True:
        npages = w.rng.choice((1, 2, 4, 8, 16, 32))
        chosen = [pages[w.rng.randrange(len(pages))] for _ in range(npages)]
        if len(set(chosen)) != npages:
            continue
        total = npages * PAGE_SIZE
        write_req = w.rng.random() < 0.5                    # device reads host memory
        direction = DMA_TO_DEVICE if write_req else DMA_FROM_DEVICE
        data = w.pattern(total)
        if write_req:
            for i, p in enumerate(chosen):
                m.mem_write(p, data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
        state = dma.DmaIovaState()
        if dma.dma_iova_try_alloc(dev, state, chosen[0], total):
            mapped = 0
            ok = True
            for p in chosen:
                ret = dma.dma_iova_link(dev, state, p, mapped, PAGE_SIZE, direction, 0)
                st.ops += 1
                if ret:
                    ok = False
                    break
                mapped += PAGE_SIZE
            if ok and dma.dma_iova_sync(dev, state, 0, mapped) == 0:
                st.ops += 1
                if write_req:
                    w.expect("nvme write", dev.dma_read(state.addr, total), data)
                else:
                    dev.dma_write(state.addr, data)
                st.ops += 1
            else:
                st.map_failures += 1
            dma.dma_iova_destroy(dev, state, mapped, direction, 0)
            st.ops += 2
            if ok and not write_req:
                got = b"".join(m.mem_read(p, PAGE_SIZE) for p in chosen)
                w.expect("nvme read", got, data)
            st.bytes += total
            st.pages += mapped // PAGE_SIZE
        else:
            # no IOVA space to link into (no IOMMU: dma-direct): the block layer's fallback,
            # a dma_map_phys per segment (blk_dma_map_direct)
            st.ops += 1
            addrs = []
            for p in chosen:
                a = dma.dma_map_phys(dev, p, PAGE_SIZE, direction, 0)
                st.ops += 1
                if dma.dma_mapping_error(dev, a):
                    st.map_failures += 1
                    break
                addrs.append(a)
            if len(addrs) == npages:
                for i, a in enumerate(addrs):
                    chunk = data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
                    if write_req:
                        w.expect("nvme write", dev.dma_read(a, PAGE_SIZE), chunk)
                    else:
                        dev.dma_write(a, chunk)
                st.ops += npages
            for a in addrs:
                dma.dma_unmap_phys(dev, a, PAGE_SIZE, direction, 0)
                st.ops += 1
            if len(addrs) == npages:
                if not write_req:
                    got = b"".join(m.mem_read(p, PAGE_SIZE) for p in chosen)
                    w.expect("nvme read", got, data)
                st.bytes += total
                st.pages += npages
        m.advance(2_000)
        yield


def scenario_p2p(w: Workload):
    """Peer-to-peer: bus addresses through the switch, MMIO mappings through the host bridge."""
    dma, m = w.dma, w.m
    st = w.stats["p2p"]
    gpu, rdma, acc = w.devs["gpu0"], w.devs["rdma0"], w.devs["acc0"]
    bar = 0x38_0000_0000
    # one map state per client: pci_p2pdma_state() caches the map type by pgmap only
    rdma_state, acc_state = dma.PciP2PdmaMapState(), dma.PciP2PdmaMapState()
    while True:
        off = w.rng.randrange(0, (64 << 20) - 8192) & ~63
        n = w.rng.choice((64, 512, 4096))
        phys = bar + off
        data = w.pattern(n)
        if w.rng.random() < 0.5:
            t = dma.pci_p2pdma_state(rdma_state, rdma, phys)
            if t != PCI_P2PDMA_MAP_BUS_ADDR:
                w.integrity_errors.append(f"p2p: map type {t} for rdma0, expected BUS_ADDR")
            bus = dma.pci_p2pdma_bus_addr_map(rdma_state, phys)
            rdma.dma_write(bus, data)
            st.ops += 3
            st.pages += pages_spanned(phys, n)
        else:
            t = dma.pci_p2pdma_state(acc_state, acc, phys)
            if t != PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
                w.integrity_errors.append(f"p2p: map type {t} for acc0, expected THRU_HOST_BRIDGE")
            addr = dma.dma_map_phys(acc, phys, n, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)
            st.ops += 2
            if dma.dma_mapping_error(acc, addr):
                st.map_failures += 1
                yield
                continue
            st.pages += pages_spanned(phys, n)
            acc.dma_write(addr, data)
            dma.dma_unmap_phys(acc, addr, n, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)
            st.ops += 2
        w.expect("p2p BAR store", m.mem_read(phys, n), data)
        _ = gpu
        st.bytes += n
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
    total = 0
    for iommu in m.iommus:
        for d in iommu.domains:
            cookie = d.iova_cookie
            if cookie is not None:
                total += sum(hi - lo + 1 for lo, hi in cookie.iovad.ranges())
    return total


def swiotlb_used(m) -> int:
    return m.swiotlb.total_used if m.swiotlb is not None else 0


def build_report(w: Workload, total_ops: int, elapsed: float, seed: int) -> dict:
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
        "integrity_samples": w.integrity_errors[:20],
        "occupancy": occ,
        "latencies": {name: st.latencies for name, st in w.stats.items()},
    }
    return report


def format_report(r: dict) -> str:
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
    lines.append(f"integrity errors: {r['integrity_errors']}")
    for s in r["integrity_samples"]:
        lines.append(f"  {s}")
    return "\n".join(lines)


def plot_report(r: dict, path: str) -> None:
    """Latency histograms per path and IOVA/swiotlb occupancy over time (matplotlib)."""
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
    out = {k: v for k, v in r.items() if k not in ("latencies", "occupancy")}
    return json.dumps(out, indent=2, sort_keys=False)
