"""The flattened single-page device access (iommu.pxi device_access_fast) against the reference.

device_access_fast() serves a device access that stays in one 4 KiB page and hits the IOTLB
with the needed permission on plain RAM, and declines everything else to the full path. Random
streams of device reads and writes - IOTLB hits and misses, permission faults (record mode),
unmapped and stale (unmapped without a sync) IOVAs, accesses across page boundaries, MMIO
targets, dirty tracking, a non-coherent ARM table, LRU / FIFO IOTLBs small enough to evict -
run on the compiled core and on the reference model (which has no fast path); bytes, faults,
and every IOTLB / domain / device counter and the IOTLB's entries (LRU stamps included) must
agree after each step.
"""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference

R, W = dmaphys.IOMMU_READ, dmaphys.IOMMU_WRITE
IOVA = 0x100000
NPAGES = 12
MMIO = 0x3000_0000

pytestmark = pytest.mark.skipif(dmaphys.BACKEND != "core", reason="the compiled core's fast path")

CONFIGS = [
    dict(fmt="vtd-ss"),
    dict(fmt="vtd-ss", iotlb=dict(entries=4, ways=2, policy="fifo")),
    dict(fmt="vtd-ss", iotlb=dict(entries=8, ways=4, policy="lru"), dirty=True),
    dict(fmt="amdv1", dirty=True),
    dict(fmt="arm-lpae-s1-4k", coherent_walk=False),
    dict(fmt="arm-lpae-s1-4k", dirty=True, iotlb=dict(entries=4, ways=4, policy="random", seed=3)),
]


def rig(impl, cfg):
    m = impl.Machine(ram=[(0, 1 << 28)], swiotlb=0, dma_debug=False)
    m.add_mmio(MMIO, 0x10000, "bar")
    kw = dict(fault_mode="record")
    if cfg.get("dirty"):
        kw["dirty_tracking"] = True
    if "coherent_walk" in cfg:
        kw["coherent_walk"] = cfg["coherent_walk"]
        kw["iommu_dev"] = m.add_device("smmu", coherent=False, pci=False)
    iotlb = impl.Iotlb(**cfg["iotlb"]) if "iotlb" in cfg else None
    mmu = m.add_iommu(fmt=cfg["fmt"], iotlb=iotlb, **kw)
    dev = m.add_device("nic", iommu=mmu)
    d = mmu.domain_alloc()
    impl.iommu_attach_device(d, dev)
    if cfg.get("dirty"):
        assert d.set_dirty_tracking(True) == 0
    frames = [m.alloc_pages(1) for _ in range(NPAGES)]
    for i, f in enumerate(frames):
        m.mem_write(f, bytes((i * 7 + j) & 0xFF for j in range(4096)))
    return m, mmu, dev, d, frames


def observe(m, mmu, dev, d):
    dirty = d.read_and_clear_dirty(IOVA, NPAGES * 4096, dmaphys.IOMMU_DIRTY_NO_CLEAR) \
        if d.dirty_tracking else None
    return (mmu.iotlb.get_state(), dev.stats, d.stale_hits, d.faults,
            [(f["iova"], f["size"], f["access"], f["reason"]) for f in mmu.faults], dirty)


def step(impl, st_, op):
    m, mmu, dev, d, frames = st_
    kind = op[0]
    if kind == "map":
        _, page, prot, target = op
        phys = MMIO + (page % 4) * 4096 if target == "mmio" else frames[page]
        return impl.iommu_map(d, IOVA + page * 4096, phys, 4096, prot)
    if kind == "unmap":
        _, page, sync = op
        if sync:
            return impl.iommu_unmap(d, IOVA + page * 4096, 4096)
        return impl.iommu_unmap_fast(d, IOVA + page * 4096, 4096)
    if kind == "clear_dirty":
        return d.read_and_clear_dirty(IOVA, NPAGES * 4096) if d.dirty_tracking else None
    _, off, n, seed = op
    a = IOVA + off
    if kind == "read":
        return dev.dma_read(a, n)
    data = random.Random(seed).randbytes(n)
    dev.dma_write(a, data)
    return impl.iommu_iova_to_phys(d, a)


def ops():
    page = st.integers(0, NPAGES - 1)
    off = st.integers(0, NPAGES * 4096 + 4096)
    n = st.sampled_from([1, 8, 64, 64, 64, 100, 4096, 5000])
    return st.lists(st.one_of(
        st.tuples(st.just("map"), page, st.sampled_from([R, W, R | W, R | W]),
                  st.sampled_from(["ram", "ram", "ram", "mmio"])),
        st.tuples(st.just("unmap"), page, st.booleans()),
        st.tuples(st.just("clear_dirty")),
        st.tuples(st.sampled_from(["read", "read", "write"]), off, n, st.integers(0, 1 << 30)),
        st.tuples(st.sampled_from(["read", "write"]), page.map(lambda p: p * 4096 + 64), st.just(64),
                  st.integers(0, 1 << 30)),
    ), min_size=1, max_size=60)


def _run(impl, st_, op):
    try:
        return ("ok", step(impl, st_, op))
    except Exception as e:          # noqa: BLE001  (compared: type and text)
        return ("raise", type(e).__name__, str(e))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
@given(stream=ops())
def test_fast_access_matches_reference(cfg, stream):
    core, ref = rig(dmaphys, cfg), rig(reference, cfg)
    for p in range(0, NPAGES, 2):                     # half the pages mapped to start with
        assert step(dmaphys, core, ("map", p, R | W, "ram")) == step(reference, ref, ("map", p, R | W, "ram"))
    for op in stream:
        assert _run(dmaphys, core, op) == _run(reference, ref, op), op
        assert observe(*core[:4]) == observe(*ref[:4]), op
    for f in core[4]:
        assert core[0].mem_read(f, 4096) == ref[0].mem_read(ref[4][core[4].index(f)], 4096)


def test_fast_access_hit_counts():
    """The fast path counts one IOTLB hit per 64-byte read after the miss that fills the entry."""
    m, mmu, dev, d, frames = rig(dmaphys, dict(fmt="vtd-ss"))
    assert dmaphys.iommu_map(d, IOVA, frames[0], 4096, R) == 0
    for _ in range(5):
        assert dev.dma_read(IOVA + 128, 64) == m.mem_read(frames[0] + 128, 64)
    s = mmu.iotlb.stats
    assert (s["misses"], s["hits"], s["fills"]) == (1, 4, 1)
    dev.dma_write(IOVA + 128, b"x" * 64)                  # read-only: a recorded fault, nothing written
    assert [f["reason"] for f in mmu.faults] == ["write-denied"]
    assert m.mem_read(frames[0] + 128, 64) != b"x" * 64
