"""The numpy batch entry points (batch.pxi / reference/batch.py) on both backends.

The contract: a batch call is the per-call API applied to each element in order. The
equivalence tests build the same machine twice, apply one random operation stream once per
element through the per-call API and once through the batch API, and compare everything
observable: return values (addresses, failures), exceptions and where they stopped the batch,
warnings, swiotlb / IOMMU / dma-debug state, trace events, device statistics and memory bytes.
The documented differences (whole-batch validation up front; warnings emitted once at the end)
have their own tests.
"""

import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    DmaFault,
    KernelBug,
    KernelWarning,
)

MiB = 1 << 20
GiB = 1 << 30
U64_MAX = (1 << 64) - 1
BUF_PAGES = 512                      # each CPU buffer region: 2 MiB
KINDS = ["direct", "noncoherent", "dev32-bounce", "force-bounce", "nomask",
         "iommu-strict", "iommu-lazy"]


# ---- the machine, built identically for both runs ---------------------------------------------
class Rig:
    """A machine with one device under test, a probe device for reading memory, two CPU buffer
    regions (below and above 4 GiB) and a 1 MiB swiotlb pool."""

    def __init__(self, impl, kind, dma_debug=True):
        self.impl = impl
        self.kind = kind
        m = self.m = impl.Machine(ram=[(0, 64 * MiB), (4 * GiB, 64 * MiB)], cpus=2,
                                  swiotlb=1 * MiB, dma_debug=dma_debug)
        m.trace.enabled = True
        self.domain = None
        if kind == "direct":
            self.dev = m.add_device("dev")
        elif kind == "noncoherent":
            self.dev = m.add_device("dev", coherent=False)
        elif kind == "dev32-bounce":     # buffers above 4 GiB bounce through swiotlb
            self.dev = m.add_device("dev", dma_mask=(1 << 32) - 1, coherent=False)
        elif kind == "force-bounce":
            self.dev = m.add_device("dev", force_bounce=True, coherent=False, min_align_mask=0xFFF)
        elif kind == "nomask":           # dev->dma_mask == NULL: WARN_ON_ONCE + DMA_MAPPING_ERROR
            self.dev = m.add_device("dev", dma_mask=None)
        elif kind.startswith("iommu"):
            iommu = m.add_iommu(strict=(kind == "iommu-strict"))
            self.dev = m.add_device("dev", iommu=iommu)
            self.iommu, self.domain = iommu, self.dev.domain
        else:
            raise AssertionError(kind)
        self.probe = m.add_device("probe")
        self.bufs = [m.alloc_pages(BUF_PAGES, limit=4 * GiB), m.alloc_pages(BUF_PAGES)]
        m.flush_warnings()

    def snapshot(self, memory=True):
        m = self.m
        s = {
            "dev": self.dev.stats,
            "swiotlb": m.swiotlb.get_state(),
            "debug": m.dma_debug.get_state(),
            "debug_errors": [tuple(r) for r in m.dma_debug.errors],
            "trace": [tuple(e) for e in m.trace.events()],
            "warnings_log": list(m.warnings_log),
            "clock": m.clock_ns,
            "allocated_pages": m.mem.allocated_pages,
        }
        if self.domain is not None:
            s["iommu"] = self.iommu.get_state()
            s["iova_cookie"] = self.domain.iova_cookie.get_state()
        if memory:                       # the bytes of the swiotlb pool and both buffers
            pool = m.swiotlb
            s["mem"] = [self.probe.dma_read(pool.start, pool.end - pool.start)]
            s["mem"] += [self.probe.dma_read(b, BUF_PAGES * 4096) for b in self.bufs]
        return s


# ---- one operation, per call or as a batch -----------------------------------------------------
def _outcome(fn):
    """Run fn() recording warnings; (result, exception summary, warnings)."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            res, exc = fn(), None
        except Exception as e:                          # noqa: BLE001 - compared below
            res, exc = None, e
    return res, exc, [(x.category, str(x.message)) for x in w]


def per_call(impl, rig, op):
    """The per-call API applied element by element; stops at the first exception like a loop."""
    dev, kind = rig.dev, op[0]
    out = []

    def run():
        if kind == "map":
            _, phys, sizes, d, attrs = op
            for i, p in enumerate(phys):
                s = sizes if np.ndim(sizes) == 0 else sizes[i]
                out.append(impl.dma_map_phys(dev, int(p), int(s), d, attrs))
            return np.array(out, dtype=np.uint64)
        if kind == "iova2phys":
            for a in op[1]:
                out.append(impl.iommu_iova_to_phys(rig.domain, int(a)))
            return np.array(out, dtype=np.uint64)
        if kind == "check":
            for a in op[1]:
                out.append(impl.dma_mapping_error(dev, int(a)))
            return np.array(out, dtype=np.int32)
        if kind == "unmap":
            _, addrs, sizes, d, attrs = op
            for i, a in enumerate(addrs):
                s = sizes if np.ndim(sizes) == 0 else sizes[i]
                impl.dma_unmap_phys(dev, int(a), int(s), d, attrs)
                out.append(None)
            return None
        if kind == "read":
            _, addrs, size = op
            for a in addrs:
                out.append(np.frombuffer(dev.dma_read(int(a), size), dtype=np.uint8))
            return np.array(out, dtype=np.uint8).reshape(len(addrs), size)
        if kind == "write":
            _, addrs, data = op
            for a, row in zip(addrs, data, strict=True):
                dev.dma_write(int(a), row.tobytes())
                out.append(None)
            return None
        raise AssertionError(kind)

    res, exc, warns = _outcome(run)
    return res, (None if exc is None else (type(exc), str(exc), len(out))), warns


def batch(impl, rig, op):
    dev, kind = rig.dev, op[0]

    def run():
        if kind == "map":
            _, phys, sizes, d, attrs = op
            return impl.dma_map_phys_batch(dev, phys, sizes, d, attrs)
        if kind == "iova2phys":
            return rig.domain.iova_to_phys_batch(op[1])
        if kind == "check":
            return impl.dma_mapping_error_batch(dev, op[1])
        if kind == "unmap":
            _, addrs, sizes, d, attrs = op
            return impl.dma_unmap_phys_batch(dev, addrs, sizes, d, attrs)
        if kind == "read":
            _, addrs, size = op
            return dev.dma_read_batch(addrs, size)
        if kind == "write":
            _, addrs, data = op
            return dev.dma_write_batch(addrs, data)
        raise AssertionError(kind)

    res, exc, warns = _outcome(run)
    if exc is not None:
        assert hasattr(exc, "batch_index"), exc
        exc = (type(exc), str(exc), exc.batch_index)
    return res, exc, warns


def same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    return a == b


# ---- the random operation stream ---------------------------------------------------------------
SIZES = [1, 63, 64, 4096, 4097, 8192, 65536, 200 * 1024, 300 * 1024]


def gen_op(rng, rig, live):
    """One operation, chosen from the state the per-call machine has reached (``live``: the
    mappings made and not yet unmapped, [(addr, phys, size, dir, attrs)])."""
    r = rng.random()
    n = rng.choice([0, 1, 2, 5, 9, 17])
    if r < 0.4 or not live:
        base = rng.choice(rig.bufs)
        phys = np.array([base + rng.randrange(0, BUF_PAGES * 4096 - 300 * 1024) for _ in range(n)],
                        dtype=np.uint64)
        if rng.random() < 0.5:
            sizes = rng.choice(SIZES)
        else:
            sizes = np.array([rng.choice(SIZES) for _ in range(n)], dtype=np.uint64)
        d = rng.choice([DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE])
        attrs = rng.choice([0, 0, DMA_ATTR_SKIP_CPU_SYNC])
        return ("map", phys, sizes, d, attrs)
    picks = rng.sample(range(len(live)), min(n, len(live)))
    if r < 0.65:
        # unmap a group made with one (dir, attrs) so one batch call covers it; sometimes
        # with the wrong direction (a dma-debug error) -- the per-call path sees the same
        d, attrs = (live[picks[0]][3], live[picks[0]][4]) if picks else (DMA_TO_DEVICE, 0)
        picks = [i for i in picks if live[i][3] == d and live[i][4] == attrs]
        if rng.random() < 0.1:
            d = (d + 1) % 3
        ents = [live[i] for i in picks]
        for i in sorted(picks, reverse=True):
            live.pop(i)
        return ("unmap", np.array([e[0] for e in ents], dtype=np.uint64),
                np.array([e[2] for e in ents], dtype=np.uint64), d, attrs)
    size = rng.choice([1, 8, 64, 512])
    addrs = [live[i][0] + rng.randrange(0, max(1, live[i][2] - size)) for i in picks
             if live[i][2] >= size]
    if rng.random() < 0.15:                          # an address nothing maps: faults mid-batch
        addrs.insert(rng.randrange(len(addrs) + 1), 3 * GiB + 0x1000)
    addrs = np.array(addrs, dtype=np.uint64)
    if rig.domain is not None and r > 0.9:          # mapped, unmapped and out-of-aperture IOVAs
        iovas = addrs.tolist() + [rng.choice([0, 0x1000, 1 << 47, U64_MAX]) for _ in range(2)]
        return ("iova2phys", np.array(iovas, dtype=np.uint64))
    if r < 0.85:
        data = np.frombuffer(rng.randbytes(len(addrs) * size), dtype=np.uint8).reshape(len(addrs), size)
        return ("write", addrs, data)
    return ("read", addrs, size)


def cpu_step(rng, rig_a, rig_b):
    """Things neither path batches, done identically on both machines: CPU stores into the
    buffers (so bounce copies carry data) and the clock (swiotlb's warning ratelimit)."""
    if rng.random() < 0.3:
        p = rng.choice(rig_a.bufs) + rng.randrange(0, BUF_PAGES * 4096 - 4096)
        data = rng.randbytes(rng.choice([1, 100, 4096]))
        rig_a.m.mem_write(p, data)
        rig_b.m.mem_write(p, data)
    if rng.random() < 0.2:
        ns = rng.choice([1000, 10**9, 6 * 10**9])
        rig_a.m.advance(ns)
        rig_b.m.advance(ns)


def run_stream(rig_a, apply_a, rig_b, apply_b, seed, steps=20, tally=None):
    """Apply one random stream to both rigs, comparing each operation's outcome. ``tally``
    (a dict) counts what the stream exercised, for test_stream_exercises_every_path."""
    rng = random.Random(seed)
    live = []
    pending = []
    tally = {} if tally is None else tally
    for _ in range(steps):
        cpu_step(rng, rig_a, rig_b)
        if pending:                                  # the driver checks what it just mapped
            op, pending = ("check", pending[0]), []
        else:
            op = gen_op(rng, rig_a, live)
        res_a, exc_a, w_a = apply_a(rig_a, op)
        res_b, exc_b, w_b = apply_b(rig_b, op)
        assert exc_a == exc_b, op
        if exc_a is None:
            assert same(res_a, res_b), op
        assert w_a == w_b, op
        tally[op[0]] = tally.get(op[0], 0) + 1
        tally["elements"] = tally.get("elements", 0) + len(op[1])
        tally["warnings"] = tally.get("warnings", 0) + len(w_a)
        if exc_a is not None:
            tally[exc_a[0].__name__] = tally.get(exc_a[0].__name__, 0) + 1
        if op[0] == "map" and exc_a is None:
            sizes = np.broadcast_to(op[2], op[1].shape)
            live += [(int(a), int(p), int(s), op[3], op[4])
                     for a, p, s in zip(res_a, op[1], sizes, strict=True) if a != DMA_MAPPING_ERROR]
            tally["map_errors"] = tally.get("map_errors", 0) + int((res_a == DMA_MAPPING_ERROR).sum())
            if rng.random() < 0.8:
                pending = [res_a]
        tally["swiotlb_used"] = max(tally.get("swiotlb_used", 0), rig_a.m.swiotlb.total_used)
    return live


# ---- equivalence: batch == per call, on each backend ----------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])   # impl is a module, not state
@given(seed=st.integers(0, 2**32 - 1))
def test_batch_equals_per_call(impl, kind, seed):
    a, b = Rig(impl, kind), Rig(impl, kind)
    run_stream(a, lambda rig, op: per_call(impl, rig, op), b, lambda rig, op: batch(impl, rig, op), seed)
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("kind", KINDS)
@given(seed=st.integers(0, 2**32 - 1))
def test_core_batch_equals_reference_batch(kind, seed):
    a, b = Rig(dmaphys, kind), Rig(reference, kind)
    run_stream(a, lambda rig, op: batch(dmaphys, rig, op), b, lambda rig, op: batch(reference, rig, op), seed)
    assert a.snapshot() == b.snapshot()


# ---- whole-batch validation: bad input raises before any state change ---------------------------
def _bad_inputs(rig):
    """(operation, arguments, exception). Each batch has a valid first element, so validating
    element by element would have done something before raising."""
    p = rig.bufs[1]
    good = np.array([p, p + 4096], dtype=np.uint64)
    TO = DMA_TO_DEVICE
    zeros = np.zeros((2, 8), dtype=np.uint8)
    return [
        ("map", (good.astype(np.float64), 4096, TO, 0), TypeError),
        ("map", (good.astype(bool), 4096, TO, 0), TypeError),
        ("map", (good.astype(object), 4096, TO, 0), TypeError),
        ("map", ("0x1000", 4096, TO, 0), TypeError),
        ("map", (good.reshape(1, 2), 4096, TO, 0), ValueError),
        ("map", (good, np.array([4096] * 3), TO, 0), ValueError),
        ("map", (good, np.array([[4096, 4096]]), TO, 0), ValueError),
        ("map", (good, np.array([4096.0, 1.0]), TO, 0), TypeError),
        ("map", (np.array([p, -1]), 4096, TO, 0), ValueError),
        ("map", (good, np.array([4096, -4096]), TO, 0), ValueError),
        ("map", (good, -1, TO, 0), ValueError),
        ("map", (good, 4096.0, TO, 0), TypeError),
        ("map", (good, 4096, 7, 0), KernelBug),
        ("map", (good, 4096, -1, 0), KernelBug),
        ("map", (good, 4096, 1 << 40, 0), KernelBug),
        ("map", (good, 4096, "to", 0), TypeError),
        ("map", (good, 4096, TO, 1 << 30), ValueError),
        ("map", (good, 4096, TO, -1), ValueError),
        ("map", (np.array([p, U64_MAX - 10], dtype=np.uint64), 4096, TO, 0), ValueError),
        ("map-nodev", (good, 4096, TO, 0), TypeError),
        ("unmap", (good, 4096, 3, 0), KernelBug),
        ("unmap", (good, np.array([4096]), TO, 0), ValueError),
        ("unmap", (np.array([p, -5]), 4096, TO, 0), ValueError),
        ("unmap", (good.astype(np.float32), 4096, TO, 0), TypeError),
        ("unmap", (good, 4096, TO, 1 << 12), ValueError),
        ("read", (good.astype(np.float64), 8), TypeError),
        ("read", (np.array([p, -8]), 8), ValueError),
        ("read", (good, -8), ValueError),
        ("read", (good, "8"), TypeError),
        ("write", (good, zeros.astype(np.int64)), TypeError),
        ("write", (good, np.zeros(16, dtype=np.uint8)), ValueError),
        ("write", (good, np.zeros((3, 8), dtype=np.uint8)), ValueError),
        ("write", (good, b"\0" * 16), TypeError),
        ("write", (np.array([p, -8]), zeros), ValueError),
    ]


def _call_bad(impl, rig, what, args):
    if what == "map":
        return impl.dma_map_phys_batch(rig.dev, *args)
    if what == "map-nodev":
        return impl.dma_map_phys_batch(None, *args)
    if what == "unmap":
        return impl.dma_unmap_phys_batch(rig.dev, *args)
    if what == "read":
        return rig.dev.dma_read_batch(*args)
    return rig.dev.dma_write_batch(*args)


@pytest.mark.parametrize("kind", ["direct", "force-bounce"])
@pytest.mark.parametrize("case", range(34))
def test_bad_input_raises_before_any_state_change(impl, kind, case):
    rig = Rig(impl, kind)
    what, args, exc = _bad_inputs(rig)[case]
    before = rig.snapshot()
    with pytest.raises(exc):
        _call_bad(impl, rig, what, args)
    assert rig.snapshot() == before
    assert len(rig.m.trace) == 0 and len(rig.m.dma_debug) == 0


def test_bad_input_cases_counted():
    rig = Rig(dmaphys, "direct")
    assert len(_bad_inputs(rig)) == 34


def test_accepted_input_forms(impl):
    """Any integer dtype without negative values, sequences of ints, scalar or array sizes,
    non-contiguous arrays; the result is a fresh uint64 / uint8 array."""
    rig = Rig(impl, "direct")
    p = rig.bufs[0]
    forms = [np.array([p, p + 64], dtype=np.uint64), np.array([p, p + 64], dtype=np.int64),
             [p, p + 64], (p, p + 64), np.array([p, 0, p + 64, 0], dtype=np.uint64)[::2]]
    for phys in forms:
        out = impl.dma_map_phys_batch(rig.dev, phys, np.array([16, 16], dtype=np.uint32), DMA_TO_DEVICE)
        assert out.dtype == np.uint64 and out.shape == (2,) and list(out) == [p, p + 64]
        assert impl.dma_mapping_error_batch(rig.dev, out).tolist() == [0, 0]
        impl.dma_unmap_phys_batch(rig.dev, out, 16, DMA_TO_DEVICE)
    assert impl.dma_map_phys_batch(rig.dev, [], 16, DMA_TO_DEVICE).shape == (0,)
    assert rig.dev.dma_read_batch([], 8).shape == (0, 8)
    assert rig.dev.dma_read_batch([p, p], 0).shape == (2, 0)
    assert rig.dev.stats["dma_reads"] == 2
    rig.dev.dma_write_batch([p], np.ones((1, 4), dtype=np.uint8))
    rig.dev.dma_write_batch([p, p], np.ones((2, 8), dtype=np.uint8)[:, ::2])
    assert impl.dma_read_batch(rig.dev, [p], 8).tolist() == [[1] * 4 + [0] * 4]


@pytest.mark.parametrize("kind", ["direct", "dev32-bounce", "iommu-strict", "iommu-lazy"])
def test_map_batch_out(impl, kind):
    """``out=``: the addresses go into the given array, which is returned; results, state and
    memory as without it. ``out`` may be ``phys`` itself."""
    a, b = Rig(impl, kind), Rig(impl, kind)
    phys = np.array([a.bufs[1] + 4096 * i for i in range(6)] + [a.bufs[0] + 64], dtype=np.uint64)
    out = np.full(7, 7, dtype=np.uint64)
    got = impl.dma_map_phys_batch(a.dev, phys, 4096, DMA_TO_DEVICE, 0, out=out)
    want = impl.dma_map_phys_batch(b.dev, phys, 4096, DMA_TO_DEVICE)
    assert got is out and same(got, want)
    sizes = np.full(7, 512, dtype=np.uint32)
    inplace = phys + np.uint64(8 * 4096)
    got2 = impl.dma_map_phys_batch(a.dev, inplace, sizes, DMA_FROM_DEVICE, out=inplace)
    want2 = impl.dma_map_phys_batch(b.dev, phys + np.uint64(8 * 4096), sizes, DMA_FROM_DEVICE)
    assert got2 is inplace and same(got2, want2)
    empty = np.empty(0, dtype=np.uint64)
    assert impl.dma_map_phys_batch(a.dev, [], 16, DMA_TO_DEVICE, out=empty) is empty
    assert a.snapshot() == b.snapshot()
    for rig, arrs in ((a, (got, got2)), (b, (want, want2))):
        for x in arrs:
            impl.dma_mapping_error_batch(rig.dev, x)        # dma-debug: the driver checked them
    impl.dma_unmap_phys_batch(a.dev, got, 4096, DMA_TO_DEVICE)
    impl.dma_unmap_phys_batch(b.dev, want, 4096, DMA_TO_DEVICE)
    impl.dma_unmap_phys_batch(a.dev, got2, sizes, DMA_FROM_DEVICE)
    impl.dma_unmap_phys_batch(b.dev, want2, sizes, DMA_FROM_DEVICE)
    assert a.snapshot() == b.snapshot()


class _SubArray(np.ndarray):
    pass


def _bad_outs():
    ro = np.zeros(2, dtype=np.uint64)
    ro.flags.writeable = False
    return [
        ([0, 0], TypeError),
        (np.zeros(2, dtype=np.int64), TypeError),
        (np.zeros(2, dtype=">u8"), TypeError),
        (np.zeros((2, 1), dtype=np.uint64), TypeError),
        (np.zeros(4, dtype=np.uint64)[::2], TypeError),
        (np.zeros(2, dtype=np.uint64).view(_SubArray), TypeError),
        (ro, ValueError),
        (np.zeros(3, dtype=np.uint64), ValueError),
        (np.zeros(0, dtype=np.uint64), ValueError),
    ]


@pytest.mark.parametrize("case", range(9))
def test_map_batch_bad_out_raises_before_any_state_change(case):
    """A bad ``out`` raises the same exception, with the same message, on both backends, with
    nothing mapped."""
    seen = []
    for impl in (dmaphys, reference):
        rig = Rig(impl, "iommu-strict")
        bad, exc = _bad_outs()[case]
        good = np.array([rig.bufs[1], rig.bufs[1] + 4096], dtype=np.uint64)
        before = rig.snapshot()
        with pytest.raises(exc) as ei:
            impl.dma_map_phys_batch(rig.dev, good, 4096, DMA_TO_DEVICE, 0, out=bad)
        assert rig.snapshot() == before
        seen.append(str(ei.value))
    assert seen[0] == seen[1]


@pytest.mark.parametrize("kind", ["direct", "iommu-strict", "iommu-lazy"])
@pytest.mark.parametrize("form", ["fast", "fast-out", "bad-out", "dma-debug"])
def test_map_batch_span_error_comes_first_and_leaves_no_trace(impl, kind, form):
    """A wrapping phys + size raises the same ValueError before anything is mapped whether the
    batch checks it with the GIL up front (dma-debug on, a bad ``out``) or, on the core's fast
    path, at the start of its GIL-free run: ahead of a bad ``out``'s error, no ``batch_index``,
    nothing changed, the machine free for the next call."""
    rig = Rig(impl, kind, dma_debug=(form == "dma-debug"))
    rig.m.trace.enabled = False
    top = (1 << 64) - 4096
    phys = np.array([rig.bufs[1] + 4096 * i for i in range(3)] + [top + 1, rig.bufs[1]], dtype=np.uint64)
    out = {"fast-out": np.zeros(5, np.uint64), "bad-out": np.zeros(4, np.uint64)}.get(form)
    before = rig.snapshot()
    with pytest.raises(ValueError, match=r"phys\[3\] 0xfffffffffffff001 \+ size 0x1000 wraps") as ei:
        impl.dma_map_phys_batch(rig.dev, phys, 4096, DMA_TO_DEVICE, 0, out=out)
    assert not hasattr(ei.value, "batch_index")
    assert rig.snapshot() == before
    assert out is None or not out.any()
    got = impl.dma_map_phys_batch(rig.dev, phys[:3], 4096, DMA_TO_DEVICE)
    impl.dma_mapping_error_batch(rig.dev, got)
    impl.dma_unmap_phys_batch(rig.dev, got, 4096, DMA_TO_DEVICE)


# ---- where a failing element stops the batch -----------------------------------------------------
def test_fault_stops_the_batch_where_the_loop_would(impl):
    rig = Rig(impl, "direct")
    p = rig.bufs[0]
    hole = 3 * GiB                               # no RAM: the device access faults
    rig.dev.dma_write_batch([p], np.arange(8, dtype=np.uint8).reshape(1, 8))
    with pytest.raises(DmaFault) as ei:
        rig.dev.dma_read_batch([p, p, hole, p], 8)
    assert ei.value.batch_index == 2
    assert ei.value.batch_result.tolist() == [list(range(8))] * 2
    assert rig.dev.stats["dma_reads"] == 2 and rig.dev.stats["faults"] == 1
    with pytest.raises(DmaFault) as ei:
        rig.dev.dma_write_batch([p + 8, hole, p + 16], np.full((3, 8), 9, dtype=np.uint8))
    assert ei.value.batch_index == 1
    assert rig.dev.stats["dma_writes"] == 2 and rig.dev.stats["faults"] == 2
    assert rig.probe.dma_read(p, 24) == bytes(range(8)) + b"\x09" * 8 + b"\0" * 8


def test_failed_mappings_do_not_stop_the_batch(impl):
    """DMA_MAPPING_ERROR is a return value: the rest of the batch proceeds (swiotlb cannot
    bounce more than 256 KiB, so the middle element fails)."""
    rig = Rig(impl, "force-bounce")
    p = rig.bufs[1]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = impl.dma_map_phys_batch(rig.dev, [p, p + 4096, p + 8192], np.array([4096, 1 << 20, 4096]),
                                      DMA_TO_DEVICE)
    assert out[1] == DMA_MAPPING_ERROR and out[0] != DMA_MAPPING_ERROR and out[2] != DMA_MAPPING_ERROR
    assert rig.m.swiotlb.total_used == 4


def test_warnings_are_emitted_once_after_the_batch(impl):
    """A warning filter that raises stops the per-call loop at the element that warned; the
    batch completes every element first and then raises (documented in batch.pxi)."""
    a, b = Rig(impl, "nomask"), Rig(impl, "nomask")
    p = a.bufs[0]
    phys = [p, p + 4096, p + 8192]
    with pytest.raises(KernelWarning):
        impl.dma_map_phys(a.dev, p, 4096, DMA_TO_DEVICE)
    with pytest.raises(KernelWarning, match="dma_mask"):
        out = impl.dma_map_phys_batch(b.dev, phys, 4096, DMA_TO_DEVICE)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = impl.dma_map_phys_batch(b.dev, phys, 4096, DMA_TO_DEVICE)
    assert list(out) == [DMA_MAPPING_ERROR] * 3 and w == []      # WARN_ON_ONCE: once per machine
    assert a.m.warnings_log == b.m.warnings_log


def test_stream_exercises_every_path():
    """The random streams above reach every outcome they are meant to compare (so the
    equivalence tests cannot pass vacuously): maps that fail, bounces, faults stopping a
    batch, warnings and dma-debug errors, on a few fixed seeds of each kind."""
    tallies = {}
    for kind in ["direct", "dev32-bounce", "force-bounce", "nomask"]:
        t = tallies[kind] = {}
        for seed in range(6):
            a, b = Rig(dmaphys, kind), Rig(dmaphys, kind)
            run_stream(a, lambda rig, op: per_call(dmaphys, rig, op), b,
                       lambda rig, op: batch(dmaphys, rig, op), seed, tally=t)
            t["debug_errors"] = t.get("debug_errors", 0) + a.m.dma_debug.error_count
    for kind, t in tallies.items():
        want = ("map", "check") if kind == "nomask" else ("map", "check", "unmap", "read", "write",
                                                         "DmaFault", "debug_errors")
        assert all(t.get(k, 0) > 0 for k in want), (kind, t)
    assert tallies["direct"]["swiotlb_used"] == 0
    assert tallies["dev32-bounce"]["swiotlb_used"] > 0 and tallies["force-bounce"]["swiotlb_used"] > 0
    assert tallies["force-bounce"]["map_errors"] > 0 and tallies["nomask"]["map_errors"] > 0
    assert tallies["nomask"]["warnings"] > 0 and tallies["force-bounce"]["warnings"] > 0


@pytest.mark.parametrize("domain_type", ["unmanaged", "freed", "identity", "blocked"])
def test_iova_to_phys_batch(impl, domain_type):
    """iova_to_phys_batch == iommu_iova_to_phys per element, for each domain type, including
    offsets inside pages, unmapped IOVAs and IOVAs beyond the table."""
    m = impl.Machine(ram=[(0, 64 * MiB), (4 * GiB, 64 * MiB)], swiotlb=1 * MiB)
    iommu = m.add_iommu()
    phys = m.alloc_pages(64) + np.arange(0, 64 * 4096, 4096, dtype=np.uint64)
    iovas = np.arange(0x100000, 0x100000 + 64 * 4096, 4096, dtype=np.uint64)
    if domain_type in ("unmanaged", "freed"):
        domain = iommu.domain_alloc()
        for iova, p in zip(iovas.tolist(), phys.tolist(), strict=True):
            assert impl.iommu_map(domain, iova, p, 4096, 3) == 0
        if domain_type == "freed":
            impl.iommu_domain_free(domain)
    else:
        domain = m.add_device("dev", iommu=iommu, domain_type=domain_type).domain
    probe = np.concatenate([iovas, iovas + np.uint64(123), iovas[:8] + np.uint64(1 << 30),
                            np.array([0, 1 << 47, 1 << 63, U64_MAX], dtype=np.uint64)])
    if domain_type == "freed":                                 # raises like iommu_map / iommu_unmap
        for call in (lambda: impl.iommu_iova_to_phys(domain, 0), lambda: domain.iova_to_phys_batch(probe),
                     lambda: impl.iommu_iova_to_phys_batch(domain, probe)):
            with pytest.raises(ValueError, match="freed"):
                call()
        return
    want = [impl.iommu_iova_to_phys(domain, int(x)) for x in probe]
    got = domain.iova_to_phys_batch(probe)
    assert got.dtype == np.uint64 and got.tolist() == want
    assert impl.iommu_iova_to_phys_batch(domain, probe).tolist() == want
    if domain_type == "unmanaged":
        assert got[:64].tolist() == phys.tolist() and got[64:128].tolist() == (phys + np.uint64(123)).tolist()
    assert domain.iova_to_phys_batch([]).shape == (0,)
    with pytest.raises(TypeError):
        domain.iova_to_phys_batch(probe.astype(np.float64))
    with pytest.raises(ValueError):
        domain.iova_to_phys_batch(np.array([1, -1]))
    with pytest.raises(TypeError):
        impl.iommu_iova_to_phys_batch(None, probe)


@pytest.mark.parametrize("scalar", [True, False])
def test_map_batch_refuses_a_span_that_wraps_before_mapping_anything(impl, scalar):
    # the batch's up-front check (the per-call _check_span()): the first wrapping element is
    # named, for one size for all (a max over phys) and for per-element sizes alike
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, dma_debug=False)
    dev = m.add_device("nic")
    top = (1 << 64) - 4096
    phys = np.array([0x1000, top, top + 1, (1 << 64) - 1], dtype=np.uint64)
    sizes = 4096 if scalar else np.array([4096, 4096, 4096, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"phys\[2\] 0xfffffffffffff001 \+ size 0x1000 wraps"):
        impl.dma_map_phys_batch(dev, phys, sizes, DMA_TO_DEVICE)
    assert impl.dma_map_phys_batch(dev, phys[:1], 4096, DMA_TO_DEVICE).tolist() == [0x1000]
    with pytest.raises(ValueError, match=r"phys\[0\] 0xffffffffffffffff \+ size 0x2 wraps"):
        impl.dma_map_phys_batch(dev, phys[3:], 2 if scalar else np.full(1, 2, np.uint64), DMA_TO_DEVICE)
