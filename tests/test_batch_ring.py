"""The ring batch entry points added for ``dmaphys stress`` (batch.pxi / reference/batch.py):
dma_read_ragged_batch, dma_write_ragged_batch, mem_read_batch, mem_write_batch,
dma_sync_single_for_cpu_batch / _for_device_batch and dma_iova_link_batch.

Same contract as the other batch calls: the per-call API element by element in order. Each
test runs one random stream twice on identical machines -- per call, then batched -- and
compares results, exceptions (and where they stopped), warnings and every piece of state; and
the core's batches against the reference's.
"""

import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, KernelBug

MiB = 1 << 20
GiB = 1 << 30
NPAGES = 64


class Rig:
    """A 32-bit device whose buffers above 4 GiB bounce, a lazy-IOMMU device, dma-debug and
    tracing on, a CPU buffer of NPAGES pages above 4 GiB.

    ``fast``: dma-debug and tracing off (the core's batches then run their GIL-free loops and
    fast paths) and a third device, a 64-bit non-coherent one on dma-direct that never bounces."""

    def __init__(self, impl, fast=False):
        self.impl = impl
        m = self.m = impl.Machine(ram=[(0, 64 * MiB), (4 * GiB, 64 * MiB)], cpus=2, swiotlb=1 * MiB,
                                  dma_debug=not fast)
        m.trace.enabled = not fast
        self.iommu = m.add_iommu(strict=False)
        self.devs = {"bounce": m.add_device("b32", dma_mask=(1 << 32) - 1, coherent=False),
                     "iommu": m.add_device("io", iommu=self.iommu)}
        if fast:
            self.devs["direct"] = m.add_device("d64", coherent=False)
        self.probe = m.add_device("probe")          # reads memory for the snapshots
        self.buf = m.alloc_pages(NPAGES)
        self.live = {name: [] for name in self.devs}     # (addr, phys, size, dir)

    def snapshot(self):
        m = self.m
        d = self.devs["iommu"].domain
        return {
            "stats": [dev.stats for dev in self.devs.values()],
            "swiotlb": m.swiotlb.get_state(), "debug": m.dma_debug.get_state(),
            "debug_errors": [tuple(r) for r in m.dma_debug.errors],
            "trace": [tuple(e) for e in m.trace.events()], "warnings_log": list(m.warnings_log),
            "iommu": self.iommu.get_state(), "iova_cookie": d.iova_cookie.get_state(),
            "mem": self.probe.dma_read(self.buf, NPAGES * 4096),
            "pool": self.probe.dma_read(m.swiotlb.start, m.swiotlb.end - m.swiotlb.start),
        }


def _outcome(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        done = []
        try:
            res, exc = fn(done), None
        except Exception as e:                          # noqa: BLE001 - compared below
            res, exc = None, e
    return res, exc, [(x.category, str(x.message)) for x in w], done


def gen_op(rng, rig):
    """One batch operation with its arguments, chosen from the state (rig.live) both share."""
    which = rng.choice(sorted(rig.devs))
    live = rig.live[which]
    n = rng.choice([0, 1, 3, 8])
    r = rng.random()
    if r < 0.2:
        phys = [rig.buf + rng.randrange(0, NPAGES * 4096 - 5000) for _ in range(n)]
        sizes = [rng.choice([0, 1, 64, 4096]) for _ in range(n)]
        if rng.random() < 0.1 and n:
            phys[rng.randrange(n)] = 3 * GiB + 0x1000        # a hole: PhysAddrError mid-batch
        if rng.random() < 0.5:
            return ("mem_write", np.array(phys, dtype=np.uint64), np.array(sizes, dtype=np.uint64),
                    np.frombuffer(rng.randbytes(sum(sizes)), dtype=np.uint8))
        return ("mem_read", np.array(phys, dtype=np.uint64), np.array(sizes, dtype=np.uint64))
    if r < 0.35 and which == "iommu":
        offs = [k * 4096 for k in range(n)]
        if rng.random() < 0.2 and n > 1:
            offs[-1] = offs[0]                               # linked twice: -EEXIST
        phys = [rig.buf + rng.randrange(NPAGES) * 4096 for _ in range(n)]
        return ("link", np.array(phys, dtype=np.uint64), np.array(offs, dtype=np.uint64),
                rng.choice([DMA_TO_DEVICE, DMA_FROM_DEVICE]))
    if r < 0.5 or not live:
        d = rng.choice([DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
        phys = [rig.buf + rng.randrange(0, NPAGES * 4096 - 5000) for _ in range(n)]
        return ("map", which, np.array(phys, dtype=np.uint64), rng.choice([64, 1500, 4096]), d)
    picks = [live[rng.randrange(len(live))] for _ in range(n)]
    if r < 0.65:
        d = rng.choice([DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
        kind = rng.choice(["sync_cpu", "sync_dev"])
        return (kind, which, np.array([p[0] for p in picks], dtype=np.uint64),
                np.array([p[2] for p in picks], dtype=np.uint64), d)
    addrs = [p[0] + rng.randrange(0, 32) for p in picks]
    sizes = [rng.randrange(0, 32) for _ in picks]
    if rng.random() < 0.15:
        addrs.insert(rng.randrange(len(addrs) + 1), 0x7000_0000)   # nothing maps it: a fault
        sizes.append(8)
    a, s = np.array(addrs, dtype=np.uint64), np.array(sizes, dtype=np.uint64)
    if rng.random() < 0.5:
        return ("write", which, a, s, np.frombuffer(rng.randbytes(int(s.sum())), dtype=np.uint8))
    return ("read", which, a, s)


def _reads(done, addrs, sizes, read):
    out = []
    for i, (a, n) in enumerate(zip(addrs, sizes, strict=True)):
        out.append(read(int(a), int(n)))
        done.append(i)
    return np.frombuffer(b"".join(out), dtype=np.uint8)


def per_call(impl, rig, op):
    m, kind = rig.m, op[0]

    def run(done):
        if kind == "mem_write":
            _, p, s, data = op
            off = 0
            for i in range(len(p)):
                m.mem_write(int(p[i]), data[off:off + int(s[i])].tobytes())
                off += int(s[i])
                done.append(i)
            return None
        if kind == "mem_read":
            return _reads(done, op[1], op[2], m.mem_read)
        if kind == "link":
            _, p, o, d = op
            out = [impl.dma_iova_link(rig.devs["iommu"], rig.state, int(p[i]), int(o[i]), 4096, d, 0)
                   for i in range(len(p))]
            return np.array(out, dtype=np.int32)
        if kind == "map":
            return np.array([impl.dma_map_phys(rig.devs[op[1]], int(p), op[3], op[4], 0) for p in op[2]],
                            dtype=np.uint64)
        dev = rig.devs[op[1]]
        if kind in ("sync_cpu", "sync_dev"):
            fn = impl.dma_sync_single_for_cpu if kind == "sync_cpu" else impl.dma_sync_single_for_device
            for i, (a, s) in enumerate(zip(op[2], op[3], strict=True)):
                fn(dev, int(a), int(s), op[4])
                done.append(i)
            return None
        if kind == "write":
            _, _, a, s, data = op
            off = 0
            for i in range(len(a)):
                dev.dma_write(int(a[i]), data[off:off + int(s[i])].tobytes())
                off += int(s[i])
                done.append(i)
            return None
        return _reads(done, op[2], op[3], dev.dma_read)

    res, exc, warns, done = _outcome(run)
    return res, (None if exc is None else (type(exc), str(exc), len(done))), warns


def batch(impl, rig, op):
    m, kind = rig.m, op[0]

    def run(done):
        if kind == "mem_write":
            return impl.mem_write_batch(m, op[1], op[2], op[3])
        if kind == "mem_read":
            return impl.mem_read_batch(m, op[1], op[2])
        if kind == "link":
            return impl.dma_iova_link_batch(rig.devs["iommu"], rig.state, op[1], op[2], 4096, op[3])
        if kind == "map":
            return impl.dma_map_phys_batch(rig.devs[op[1]], op[2], op[3], op[4], 0)
        dev = rig.devs[op[1]]
        if kind == "sync_cpu":
            return impl.dma_sync_single_for_cpu_batch(dev, op[2], op[3], op[4])
        if kind == "sync_dev":
            return impl.dma_sync_single_for_device_batch(dev, op[2], op[3], op[4])
        if kind == "write":
            return impl.dma_write_ragged_batch(dev, op[2], op[3], op[4])
        return impl.dma_read_ragged_batch(dev, op[2], op[3])

    res, exc, warns, _ = _outcome(run)
    if exc is not None:
        assert hasattr(exc, "batch_index"), exc
        exc = (type(exc), str(exc), exc.batch_index)
    return res, exc, warns


def run_stream(impl_a, apply_a, impl_b, apply_b, seed, steps=25, fast=False):
    rng = random.Random(seed)
    a, b = Rig(impl_a, fast), Rig(impl_b, fast)
    for rig, impl in ((a, impl_a), (b, impl_b)):     # one two-step IOVA range for the links
        rig.state = impl.DmaIovaState()
        assert impl.dma_iova_try_alloc(rig.devs["iommu"], rig.state, rig.buf, 64 * 4096)
    for _ in range(steps):
        op = gen_op(rng, a)
        ra, ea, wa = apply_a(a, op)
        rb, eb, wb = apply_b(b, op)
        assert ea == eb, op
        assert wa == wb, op
        if ea is None:
            assert (ra is None and rb is None) or (ra.dtype == rb.dtype and np.array_equal(ra, rb)), op
        if op[0] == "map" and ea is None:
            for rig in (a, b):
                rig.live[op[1]] += [(int(x), int(p), op[3], op[4]) for x, p in zip(ra, op[2], strict=True)
                                    if x != dmaphys.DMA_MAPPING_ERROR]
        if op[0] == "mem_read" and ea is None and rng.random() < 0.3:
            for rig in (a, b):                       # advance the clock: the flush queue's timer
                rig.m.advance(10**7)
    return a, b


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_ring_batches_equal_per_call(impl, seed):
    a, b = run_stream(impl, lambda rig, op: per_call(impl, rig, op),
                      impl, lambda rig, op: batch(impl, rig, op), seed)
    assert a.snapshot() == b.snapshot()


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="the compiled core's GIL-free loops")
@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_fast_ring_batches_equal_per_call(seed):
    """dma-debug and tracing off: the core's ring batches run their loops without the GIL
    (device accesses, CPU loads / stores, syncs through dma_sync_single_fast) and must still
    be the per-call API element by element."""
    a, b = run_stream(dmaphys, lambda rig, op: per_call(dmaphys, rig, op),
                      dmaphys, lambda rig, op: batch(dmaphys, rig, op), seed, steps=40, fast=True)
    assert a.snapshot() == b.snapshot()


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="the compiled core's GIL-free loops")
def test_fast_ring_syncs_take_the_fast_path():
    """Syncs of dma-direct (non-coherent: arch sync counted) and coherent IOMMU mappings take the
    fast path; bounce slots take the full path (the copy), with the same result per call."""
    for kind, fast in (("direct", True), ("iommu", True), ("bounce", False)):
        a, b = Rig(dmaphys, True), Rig(dmaphys, True)
        for rig in (a, b):
            phys = np.arange(8, dtype=np.uint64) * 4096 + np.uint64(rig.buf)
            rig.addrs = dmaphys.dma_map_phys_batch(rig.devs[kind], phys, 4096, DMA_BIDIRECTIONAL)
        before = dmaphys._core._test_batch_fast_elements(b.m)
        sizes = np.full(8, 4096, dtype=np.uint64)
        for op in ("sync_cpu", "sync_dev"):
            ra = per_call(dmaphys, a, (op, kind, a.addrs, sizes, DMA_BIDIRECTIONAL))
            rb = batch(dmaphys, b, (op, kind, b.addrs, sizes, DMA_BIDIRECTIONAL))
            assert ra[1:] == rb[1:]
        taken = dmaphys._core._test_batch_fast_elements(b.m) - before
        assert taken == (16 if fast else 0), kind
        assert a.snapshot() == b.snapshot()


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_core_ring_batches_equal_reference(seed):
    a, b = run_stream(dmaphys, lambda rig, op: batch(dmaphys, rig, op), reference,
                      lambda rig, op: batch(reference, rig, op), seed)
    assert a.snapshot() == b.snapshot()


def test_ring_stream_exercises_errors():
    """The stream above reaches faults, PhysAddrError, failed links and warnings (seeds 0..39)."""
    seen = set()
    for seed in range(40):
        def rec(rig, op):
            res, exc, warns = batch(dmaphys, rig, op)
            if exc is not None:
                seen.add(exc[0].__name__)
            if warns:
                seen.add("warning")
            if op[0] == "link" and res is not None and (res != 0).any():
                seen.add("link-error")
            seen.add(op[0])
            return res, exc, warns
        run_stream(dmaphys, rec, dmaphys, lambda rig, op: batch(dmaphys, rig, op), seed)
    assert {"DmaFault", "IommuFault", "PhysAddrError", "link-error", "mem_write", "mem_read", "read",
            "write", "sync_cpu", "sync_dev", "link", "map"} <= seen, seen


@pytest.mark.parametrize("call", [
    lambda i, r: i.dma_read_ragged_batch(r.devs["bounce"], [r.buf], [1, 2]),
    lambda i, r: i.dma_write_ragged_batch(r.devs["bounce"], [r.buf], 4, np.zeros(3, dtype=np.uint8)),
    lambda i, r: i.dma_write_ragged_batch(r.devs["bounce"], [r.buf], 4, np.zeros((1, 4), dtype=np.uint8)),
    lambda i, r: i.mem_write_batch(r.m, [r.buf], 4, np.zeros(4, dtype=np.int16)),
    lambda i, r: i.mem_write_batch(r.m, [r.buf], 4, "abcd"),
    lambda i, r: i.mem_read_batch(r.m, [r.buf, -1], 4),
    lambda i, r: i.mem_read_batch(r.devs["bounce"], [r.buf], 4),
    lambda i, r: i.dma_sync_single_for_cpu_batch(r.devs["bounce"], [r.buf], 4, 9),
    lambda i, r: i.dma_iova_link_batch(r.devs["iommu"], r.state, [r.buf], [0, 1], 4096, 0),
    lambda i, r: i.dma_iova_link_batch(r.devs["iommu"], r.state, [r.buf], [0], 4096, 7),
    lambda i, r: i.dma_iova_link_batch(r.devs["bounce"], r.state, [r.buf], [0], 4096, 0),
])
def test_ring_batch_bad_input_changes_nothing(impl, call):
    rig = Rig(impl)
    rig.state = impl.DmaIovaState()
    impl.dma_iova_try_alloc(rig.devs["iommu"], rig.state, rig.buf, 4096)
    before = rig.snapshot()
    with pytest.raises((TypeError, ValueError, KernelBug)):
        call(impl, rig)
    assert rig.snapshot() == before


def test_ring_batch_forms(impl):
    rig = Rig(impl)
    m = rig.m
    impl.mem_write_batch(m, [rig.buf, rig.buf + 100], 3, b"abcdef")
    assert impl.mem_read_batch(m, [rig.buf + 100, rig.buf], 3).tobytes() == b"defabc"
    assert impl.mem_read_batch(m, [], 3).shape == (0,)
    dev = rig.devs["iommu"]
    a = impl.dma_map_phys_batch(dev, [rig.buf], 4096, DMA_BIDIRECTIONAL)
    impl.dma_write_ragged_batch(dev, [a[0], a[0] + 10], [2, 0], bytearray(b"zz"))
    assert impl.dma_read_ragged_batch(dev, [a[0], a[0]], [0, 4]).tobytes() == b"zzc\0"
    assert dev.stats["dma_reads"] == 2 and dev.stats["dma_writes"] == 2


def test_removed_device_like_per_call(impl):
    """After Machine.remove_device(): the DMA-API batches refuse the device (ValueError, as the
    per-call functions do), device accesses fault at their first element (DmaFault)."""
    rig = Rig(impl)
    rig.state = impl.DmaIovaState()
    dev = rig.devs["iommu"]
    assert impl.dma_iova_try_alloc(dev, rig.state, rig.buf, 4096)
    a = impl.dma_map_phys_batch(dev, [rig.buf], 64, DMA_TO_DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rig.m.remove_device(dev)
    for call in (lambda: impl.dma_sync_single_for_cpu_batch(dev, a, 64, DMA_TO_DEVICE),
                 lambda: impl.dma_sync_single_for_device_batch(dev, a, 64, DMA_TO_DEVICE),
                 lambda: impl.dma_iova_link_batch(dev, rig.state, [rig.buf], [0], 4096, DMA_TO_DEVICE)):
        with pytest.raises(ValueError, match="was removed"):
            call()
    for call in (lambda: impl.dma_read_ragged_batch(dev, a, 8),
                 lambda: impl.dma_write_ragged_batch(dev, a, 8, bytes(8))):
        with pytest.raises(dmaphys.DmaFault) as ei:
            call()
        assert ei.value.batch_index == 0
