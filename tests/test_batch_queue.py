"""The two-step IOVA API across a queue of requests (batch.pxi / reference/batch.py):
dma_iova_alloc_link_sync_batch and dma_iova_destroy_batch, which ``dmaphys stress`` maps and
completes its NVMe submission queues with.

Same contract as the other batch calls: the per-call API (dma_iova_try_alloc, dma_iova_link per
segment up to the first failure, dma_iova_sync; dma_iova_destroy) request by request in order.
Each test runs one random stream of queues twice on identical machines -- per call, then
batched -- and compares results, exceptions (and where they stopped), warnings and every piece
of state (tests/test_batch_ring.py's Rig snapshot: IOMMU, IOVA cookie, dma-debug, trace,
memory); and the core's batches against the reference's.
"""

import pathlib
import random
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, KernelBug

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_batch_ring as tr  # noqa: E402  (the rig, its snapshot and the outcome recorder)

PAGE = 4096
NSTATES = 6


def gen_queue(rng, rig):
    """A queue of requests over the rig's buffer: (device, counts, phys, sizes, dir).

    Mostly page-sized segments of random pages; sometimes a mid-granule segment after the first
    (dma_iova_link: -EIO and a WARN), a request of no segments (dma_iova_try_alloc: WARN, false),
    the page a request already linked linked again (-EEXIST), the bouncing dma-direct device
    (dma_iova_try_alloc false for every request) or an invalid direction (KernelBug up front)."""
    which = "bounce" if rng.random() < 0.1 else "iommu"
    nreq = rng.randrange(0, NSTATES + 1)
    counts = [rng.choice([0, 1, 1, 2, 3, 5]) if rng.random() < 0.1 else rng.choice([1, 2, 3, 5])
              for _ in range(nreq)]
    phys, sizes = [], []
    for c in counts:
        seg = [rng.randrange(tr.NPAGES) for _ in range(c)]
        p = [rig.buf + k * PAGE for k in seg]
        s = [PAGE] * c
        if c > 1 and rng.random() < 0.1:
            p[rng.randrange(1, c)] += 512                    # mid-granule at offset > 0: -EIO
        if c > 1 and rng.random() < 0.1:
            s[-1] = 100                                      # a short last segment
        phys += p
        sizes += s
    d = rng.choice([DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
    if rng.random() < 0.03:
        d = 7
    sizes_arg = np.array(sizes, dtype=np.uint64)
    if all(x == PAGE for x in sizes) and rng.random() < 0.5:
        sizes_arg = PAGE                                     # the scalar form
    return which, np.array(counts, dtype=np.uint64), np.array(phys, dtype=np.uint64), sizes_arg, d


def per_call_map(impl, rig, states, op):
    which, counts, phys, sizes, d = op
    dev = rig.devs[which]
    n = phys.shape[0]
    s = [sizes] * n if np.ndim(sizes) == 0 else [int(x) for x in sizes]

    def run(done):
        if d not in (0, 1, 2):
            raise KernelBug(f"kernel BUG in dma_iova_link(): invalid DMA direction {d}")
        ret, mapped = [], []
        k0 = 0
        for j, c in enumerate(counts.tolist()):
            kend = k0 + c
            total = sum(s[k0:kend])
            if not impl.dma_iova_try_alloc(dev, states[j], int(phys[k0]) if kend > k0 else 0, total):
                ret.append(1)
                mapped.append(0)
            else:
                off = e = 0
                for k in range(k0, kend):
                    e = impl.dma_iova_link(dev, states[j], int(phys[k]), off, s[k], d, 0)
                    if e:
                        break
                    off += s[k]
                mapped.append(off)
                ret.append(e if e else impl.dma_iova_sync(dev, states[j], 0, off))
            k0 = kend
            done.append(j)
        return np.array(ret, dtype=np.int32), np.array(mapped, dtype=np.uint64)

    res, exc, warns, done = tr._outcome(run)
    return res, (None if exc is None else (type(exc), str(exc), len(done))), warns


def batch_map(impl, rig, states, op):
    which, counts, phys, sizes, d = op

    def run(done):
        return impl.dma_iova_alloc_link_sync_batch(rig.devs[which], states, phys, sizes, counts, d)

    res, exc, warns, _ = tr._outcome(run)
    if exc is not None:                              # validation errors stop it before request 0
        exc = (type(exc), str(exc), getattr(exc, "batch_index", 0))
    return res, exc, warns


def per_call_destroy(impl, rig, states, which, mapped, d):
    def run(done):
        for i, (s, ml) in enumerate(zip(states, mapped.tolist(), strict=True)):
            impl.dma_iova_destroy(rig.devs[which], s, ml, d, 0)
            done.append(i)

    res, exc, warns, done = tr._outcome(run)
    return res, (None if exc is None else (type(exc), str(exc), len(done))), warns


def batch_destroy(impl, rig, states, which, mapped, d):
    def run(done):
        return impl.dma_iova_destroy_batch(rig.devs[which], states, mapped, d)

    res, exc, warns, _ = tr._outcome(run)
    if exc is not None:
        exc = (type(exc), str(exc), getattr(exc, "batch_index", 0))
    return res, exc, warns


def run_queues(impl_a, map_a, destroy_a, impl_b, map_b, destroy_b, seed, queues=12):
    """The same random queues on two rigs; each queue is mapped, the device reads it (through the
    IOVA of every request that was synced), then completed; the clock moves now and then."""
    rng = random.Random(seed)
    a, b = tr.Rig(impl_a), tr.Rig(impl_b)
    sa = [impl_a.DmaIovaState() for _ in range(NSTATES)]
    sb = [impl_b.DmaIovaState() for _ in range(NSTATES)]
    for _ in range(queues):
        op = gen_queue(rng, a)
        nreq = op[1].shape[0]
        ra, ea, wa = map_a(impl_a, a, sa[:nreq], op)
        rb, eb, wb = map_b(impl_b, b, sb[:nreq], op)
        assert ea == eb, op
        assert wa == wb, op
        if ea is not None:
            continue
        assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1]), op
        assert ra[0].dtype == rb[0].dtype == np.int32 and ra[1].dtype == rb[1].dtype == np.uint64
        assert [s.addr for s in sa[:nreq]] == [s.addr for s in sb[:nreq]]
        status, mapped = ra
        for rig, states in ((a, sa), (b, sb)):
            ok = [states[j].addr for j in range(nreq) if status[j] == 0 and mapped[j]]
            if ok and op[4] == DMA_FROM_DEVICE:
                rig.devs[op[0]].dma_write(ok[0], b"written!")
            elif ok:
                rig.devs[op[0]].dma_read(ok[0], 8)
        used = [j for j in range(nreq) if status[j] != 1]
        if used and op[4] in (0, 1, 2):
            ml = mapped[used]
            if rng.random() < 0.1:
                ml = ml + np.uint64(PAGE)                    # past the allocation: refused, reported
            ra2 = destroy_a(impl_a, a, [sa[j] for j in used], op[0], ml, op[4])
            rb2 = destroy_b(impl_b, b, [sb[j] for j in used], op[0], ml, op[4])
            assert ra2 == rb2, op
        if rng.random() < 0.3:
            a.m.advance(10**7)
            b.m.advance(10**7)
    return a, b


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(seed=st.integers(0, 2**32 - 1))
def test_queue_batches_equal_per_call(impl, seed):
    a, b = run_queues(impl, per_call_map, per_call_destroy, impl, batch_map, batch_destroy, seed)
    assert a.snapshot() == b.snapshot()


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1))
def test_core_queue_batches_equal_reference(seed):
    a, b = run_queues(dmaphys, batch_map, batch_destroy, reference, batch_map, batch_destroy, seed)
    assert a.snapshot() == b.snapshot()


def test_queue_stream_exercises_every_outcome():
    """The stream above reaches every status (synced, refused, link error), warnings, a KernelBug
    and dma-debug's refusal of a destroy past the allocation (seeds 0..39)."""
    seen = set()

    def rec(impl, rig, states, op):
        res, exc, warns = batch_map(impl, rig, states, op)
        if exc is not None:
            seen.add(exc[0].__name__)
        if warns:
            seen.add("warning")
        if res is not None:
            seen.update({0: "synced", 1: "refused"}.get(int(x), "error") for x in res[0])
        return res, exc, warns

    for seed in range(40):
        a, _ = run_queues(dmaphys, rec, batch_destroy, dmaphys, batch_map, batch_destroy, seed)
        if a.m.dma_debug.errors:
            seen.add("debug-report")
    assert {"synced", "refused", "error", "warning", "KernelBug", "debug-report"} <= seen, seen


@pytest.mark.parametrize("call", [
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s, [r.buf], PAGE, [2], 0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s[:1], [r.buf], PAGE, [1, 0], 0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], [s[0], 3], [r.buf, r.buf], PAGE, [1, 1],
                                                     0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], "ab", [r.buf, r.buf], PAGE, [1, 1], 0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], 5, [r.buf], PAGE, [1], 0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s[:1], [r.buf], [PAGE, 1], [1], 0),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s[:1], [r.buf], PAGE, [1], 9),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s[:1], [r.buf], PAGE, [1], 0, 1 << 40),
    lambda i, r, s: i.dma_iova_alloc_link_sync_batch(r.devs["iommu"], s[:2], [r.buf, r.buf], [2**63, 2**63],
                                                     [1, 1], 0),
    lambda i, r, s: i.dma_iova_destroy_batch(r.devs["iommu"], s[:1], [PAGE, PAGE], 0),
    lambda i, r, s: i.dma_iova_destroy_batch(r.devs["iommu"], [None], [PAGE], 0),
    lambda i, r, s: i.dma_iova_destroy_batch(r.devs["iommu"], s[:1], [PAGE], 4),
    lambda i, r, s: i.dma_iova_destroy_batch(r.devs["bounce"], s[:1], [PAGE], 0),
    lambda i, r, s: i.dma_iova_destroy_batch(r.devs["iommu"], s[:1], [-1], 0),
])
def test_queue_batch_bad_input_changes_nothing(impl, call):
    rig = tr.Rig(impl)
    states = [impl.DmaIovaState() for _ in range(2)]
    assert impl.dma_iova_try_alloc(rig.devs["iommu"], states[0], rig.buf, PAGE)
    before = rig.snapshot()
    with pytest.raises((TypeError, ValueError, KernelBug)):
        call(impl, rig, states)
    assert rig.snapshot() == before


def test_queue_batch_forms(impl):
    """Empty queues, a scalar size, a list of states, and what the stress job relies on: the
    IOVA of every synced request reaches its pages in order."""
    rig = tr.Rig(impl)
    dev = rig.devs["iommu"]
    status, mapped = impl.dma_iova_alloc_link_sync_batch(dev, [], [], PAGE, [], DMA_TO_DEVICE)
    assert status.shape == mapped.shape == (0,)
    impl.dma_iova_destroy_batch(dev, (), [], DMA_TO_DEVICE)
    states = [impl.DmaIovaState(), impl.DmaIovaState()]
    pages = [rig.buf + 5 * PAGE, rig.buf + 2 * PAGE, rig.buf + 9 * PAGE]
    for k, p in enumerate(pages):
        rig.m.mem_write(p, bytes([k + 1]) * PAGE)
    status, mapped = impl.dma_iova_alloc_link_sync_batch(dev, states, pages, PAGE, [2, 1], DMA_TO_DEVICE)
    assert status.tolist() == [0, 0] and mapped.tolist() == [2 * PAGE, PAGE]
    got = dev.dma_read(states[0].addr, 2 * PAGE) + dev.dma_read(states[1].addr, PAGE)
    assert got == b"".join(bytes([k + 1]) * PAGE for k in range(3))
    impl.dma_iova_destroy_batch(dev, states, mapped, DMA_TO_DEVICE)
    assert not rig.m.dma_debug.errors
    status, mapped = impl.dma_iova_alloc_link_sync_batch(rig.devs["bounce"], states[:1], pages[:1], PAGE, [1],
                                                         DMA_TO_DEVICE)
    assert status.tolist() == [1] and mapped.tolist() == [0]


def _first_bad_argument_cases(impl, rig, states):
    """(call, good args, bad value per argument) for the batch two-step entries; every bad value
    fails its own argument's conversion."""
    dev = rig.devs["iommu"]
    return [
        (impl.dma_iova_link_batch, [dev, states[0], [rig.buf], [0], [PAGE], DMA_TO_DEVICE, 0],
         {2: object(), 3: object(), 4: object(), 5: object(), 6: object()}),
        (impl.dma_iova_alloc_link_sync_batch, [dev, states[1:], [rig.buf], PAGE, [1], DMA_TO_DEVICE, 0],
         {1: 5, 2: object(), 3: object(), 4: object(), 5: object(), 6: object()}),
        (impl.dma_iova_destroy_batch, [dev, states[:1], [PAGE], DMA_TO_DEVICE, 0],
         {1: 5, 2: object(), 3: object(), 4: object()}),
    ]


def _outcome(call, args):
    try:
        call(*args)
    except (TypeError, ValueError, KernelBug) as e:
        return type(e).__name__, str(e)
    return None


def test_batch_arguments_are_converted_in_signature_order():
    """With two bad arguments the first one in the signature's (the kernel's) order is the one
    reported, and core and reference report the same: each argument is converted in order
    before the arguments are checked against each other (the per-call rule, ARCHITECTURE)."""
    seen = {}
    for impl in (dmaphys, reference):
        rig = tr.Rig(impl)
        states = [impl.DmaIovaState() for _ in range(2)]
        assert impl.dma_iova_try_alloc(rig.devs["iommu"], states[0], rig.buf, PAGE)
        before = rig.snapshot()
        got = []
        for call, good, bad in _first_bad_argument_cases(impl, rig, states):
            alone = {}
            for i, v in bad.items():
                args = list(good)
                args[i] = v
                alone[i] = _outcome(call, args)
                assert alone[i] is not None, (call.__name__, i)
            for i in bad:
                for j in bad:
                    if i < j:
                        args = list(good)
                        args[i], args[j] = bad[i], bad[j]
                        assert _outcome(call, args) == alone[i], (call.__name__, i, j)
            got.append(sorted(alone.items()))
        assert rig.snapshot() == before
        seen[impl.__name__] = got
    assert seen["dmaphys"] == seen["dmaphys.reference"]
