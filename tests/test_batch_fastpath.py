"""The GIL-free batch fast paths (issue 8 / issue 10) against the per-call API, and threads.

test_batch.py runs its streams with dma-debug and tracing on, where every element takes the full
path. Here the same rigs run with both off, on streams of page-sized and smaller buffers, so the
batch loops run their C fast paths (dma_map_phys_fast / dma_unmap_phys_fast, without the GIL)
for most elements and the full path for the rest (bounces, rcache misses, table allocation,
lazy unmaps, faults). Everything observable must match the per-call API exactly: addresses,
failures, exceptions and where they stopped, warnings, IOVA / page-table / IOTLB / flush-queue
/ swiotlb state, statistics and memory bytes.

Threads: two threads on two machines give what running them one after the other gives; two
threads on one machine are serialised by the machine lock (never interleaved inside an
operation), so the machine's state stays consistent.
"""

import pathlib
import random
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmaphys
from dmaphys import (
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_batch as tb  # noqa: E402  (the rigs and the per-call / batch appliers)

pytestmark = pytest.mark.skipif(dmaphys.BACKEND != "core", reason="the compiled core's fast paths")

FAST_SIZES = [1, 64, 512, 4000, 4096, 4096, 4096, 8192]


def fast_rig(kind):
    rig = tb.Rig(dmaphys, kind, dma_debug=False)
    rig.m.trace.enabled = False
    return rig


def gen_op(rng, rig, live):
    """Like test_batch.gen_op, with mostly page-aligned buffers of at most one page."""
    r = rng.random()
    n = rng.choice([1, 4, 16, 64])
    if r < 0.45 or not live:
        base = rng.choice(rig.bufs)
        span = tb.BUF_PAGES * 4096 - 8192
        phys = [base + (rng.randrange(0, span) & ~0xFFF if rng.random() < 0.8 else rng.randrange(0, span))
                for _ in range(n)]
        sizes = rng.choice(FAST_SIZES) if rng.random() < 0.5 else \
            np.array([rng.choice(FAST_SIZES) for _ in range(n)], dtype=np.uint64)
        d = rng.choice([DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE])
        attrs = rng.choice([0, 0, DMA_ATTR_SKIP_CPU_SYNC])
        return ("map", np.array(phys, dtype=np.uint64), sizes, d, attrs)
    picks = rng.sample(range(len(live)), min(n, len(live)))
    if r < 0.75:
        d, attrs = live[picks[0]][3], live[picks[0]][4]
        picks = [i for i in picks if live[i][3] == d and live[i][4] == attrs]
        ents = [live[i] for i in picks]
        for i in sorted(picks, reverse=True):
            live.pop(i)
        return ("unmap", np.array([e[0] for e in ents], dtype=np.uint64),
                np.array([e[2] for e in ents], dtype=np.uint64), d, attrs)
    size = rng.choice([1, 8, 64])
    addrs = [live[i][0] + rng.randrange(0, max(1, live[i][2] - size)) for i in picks if live[i][2] >= size]
    if rng.random() < 0.1:
        addrs.insert(rng.randrange(len(addrs) + 1), 3 * tb.GiB + 0x1000)
    addrs = np.array(addrs, dtype=np.uint64)
    if rig.domain is not None and r > 0.95:
        return ("iova2phys", addrs)
    if r < 0.9:
        data = np.frombuffer(rng.randbytes(len(addrs) * size), dtype=np.uint8).reshape(len(addrs), size)
        return ("write", addrs, data)
    return ("read", addrs, size)


def run(rig_a, apply_a, rig_b, apply_b, seed, steps=40):
    rng = random.Random(seed)
    live = []
    for _ in range(steps):
        tb.cpu_step(rng, rig_a, rig_b)
        op = gen_op(rng, rig_a, live)
        res_a, exc_a, w_a = apply_a(rig_a, op)
        res_b, exc_b, w_b = apply_b(rig_b, op)
        assert exc_a == exc_b, op
        if exc_a is None:
            assert tb.same(res_a, res_b), op
        assert w_a == w_b, op
        if op[0] == "map" and exc_a is None:
            sizes = np.broadcast_to(op[2], op[1].shape)
            live += [(int(a), int(p), int(s), op[3], op[4])
                     for a, p, s in zip(res_a, op[1], sizes, strict=True) if a != DMA_MAPPING_ERROR]
    # unmap everything left, both ways: the flush queues, rcaches and tables end identical too
    for d in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE):
        for attrs in (0, DMA_ATTR_SKIP_CPU_SYNC):
            ents = [e for e in live if e[3] == d and e[4] == attrs]
            if ents:
                op = ("unmap", np.array([e[0] for e in ents], dtype=np.uint64),
                      np.array([e[2] for e in ents], dtype=np.uint64), d, attrs)
                assert apply_a(rig_a, op)[1:] == apply_b(rig_b, op)[1:]


@pytest.mark.parametrize("kind", tb.KINDS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fast_batch_equals_per_call(kind, seed):
    a, b = fast_rig(kind), fast_rig(kind)
    run(a, lambda rig, op: tb.per_call(dmaphys, rig, op), b, lambda rig, op: tb.batch(dmaphys, rig, op), seed)
    assert a.snapshot() == b.snapshot()


def test_fast_paths_are_taken():
    """The streams above do exercise the fast paths (and, for bounces, the full path)."""
    taken = {}
    for kind in ("direct", "noncoherent", "iommu-strict", "iommu-lazy", "dev32-bounce"):
        a, b = fast_rig(kind), fast_rig(kind)
        run(a, lambda rig, op: tb.per_call(dmaphys, rig, op),
            b, lambda rig, op: tb.batch(dmaphys, rig, op), 7)
        assert a.snapshot() == b.snapshot()
        taken[kind] = dmaphys._core._test_batch_fast_elements(b.m)
        assert dmaphys._core._test_batch_fast_elements(a.m) == 0        # per call: never
    assert all(taken[k] > 50 for k in ("direct", "noncoherent", "iommu-strict")), taken
    assert taken["iommu-lazy"] > 0, taken


@pytest.mark.parametrize("kind", ["iommu-strict", "iommu-lazy"])
def test_big_rings_through_the_depot(kind):
    """Batches larger than two magazines: the rcache pops from and pushes to the depot."""
    a, b = fast_rig(kind), fast_rig(kind)
    rng = random.Random(3)
    for rnd in range(6):
        n = rng.choice([300, 700])
        phys = np.array([a.bufs[rnd % 2] + (rng.randrange(0, tb.BUF_PAGES) << 12) for _ in range(n)],
                        dtype=np.uint64)
        for d in (DMA_TO_DEVICE, DMA_BIDIRECTIONAL):
            op = ("map", phys, 4096, d, 0)
            ra, rb = tb.per_call(dmaphys, a, op), tb.batch(dmaphys, b, op)
            assert ra[1:] == rb[1:] and tb.same(ra[0], rb[0])
            op = ("unmap", ra[0][::-1].copy() if rnd % 2 else ra[0], np.uint64(4096), d, 0)
            assert tb.per_call(dmaphys, a, op)[1:] == tb.batch(dmaphys, b, op)[1:]
        if rnd == 3:
            a.m.advance(10**9)
            b.m.advance(10**9)
    assert a.snapshot() == b.snapshot()
    assert dmaphys._core._test_batch_fast_elements(b.m) > 1000


def test_fast_paths_off_with_debug_or_trace():
    for debug, trace in ((True, False), (False, True)):
        rig = tb.Rig(dmaphys, "iommu-strict", dma_debug=debug)
        rig.m.trace.enabled = trace
        addrs = dmaphys.dma_map_phys_batch(rig.dev, np.arange(8, dtype=np.uint64) * 4096 + rig.bufs[0], 4096,
                                           DMA_TO_DEVICE)
        assert not dmaphys.dma_mapping_error_batch(rig.dev, addrs).any()
        dmaphys.dma_unmap_phys_batch(rig.dev, addrs, 4096, DMA_TO_DEVICE)
        assert dmaphys._core._test_batch_fast_elements(rig.m) == 0


# ---- threads -------------------------------------------------------------------------------------
def workload(rig, seed, rounds=30):
    """A driver's ring refills: map a ring, the device writes and reads it, unmap; per-call
    checks between. Returns what it saw."""
    rng = random.Random(seed)
    seen = []
    for _ in range(rounds):
        n = rng.choice([16, 64])
        phys = np.array([rig.bufs[rng.randrange(2)] + (rng.randrange(0, tb.BUF_PAGES - 1) << 12)
                         for _ in range(n)], dtype=np.uint64)
        addrs = dmaphys.dma_map_phys_batch(rig.dev, phys, 4096, DMA_BIDIRECTIONAL)
        ok = addrs[addrs != DMA_MAPPING_ERROR]
        data = np.frombuffer(rng.randbytes(len(ok) * 64), dtype=np.uint8).reshape(len(ok), 64)
        rig.dev.dma_write_batch(ok, data)
        back = rig.dev.dma_read_batch(ok, 64)
        assert np.array_equal(back, data) or len(set(phys.tolist())) < len(phys)
        if len(ok):
            seen.append(dmaphys.dma_mapping_error(rig.dev, int(ok[0])))
        dmaphys.dma_unmap_phys_batch(rig.dev, ok, 4096, DMA_BIDIRECTIONAL)
        seen.append(addrs.tolist())
    return seen


def in_threads(fn, n=2):
    """fn(0) ... fn(n - 1), each on its own thread started together; their results, in order.
    An exception on any thread fails the test (after every thread has been joined)."""
    got, errors = [None] * n, []

    def go(i):
        try:
            got[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got


@pytest.mark.parametrize("kind", ["direct", "iommu-strict", "iommu-lazy"])
def test_two_threads_two_machines_equal_sequential(kind):
    seq = [fast_rig(kind), fast_rig(kind)]
    want = [workload(seq[0], 1), workload(seq[1], 2)]
    par = [fast_rig(kind), fast_rig(kind)]
    assert in_threads(lambda i: workload(par[i], i + 1)) == want
    for a, b in zip(seq, par, strict=True):
        assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("kind", ["direct", "iommu-strict", "iommu-lazy"])
def test_two_threads_one_machine_never_corrupt_it(kind):
    rig = fast_rig(kind)
    live_addrs = []

    def go(seed):
        rng = random.Random(seed)
        for _ in range(40):
            n = rng.choice([8, 32])
            phys = np.array([rig.bufs[seed % 2] + (rng.randrange(0, tb.BUF_PAGES - 1) << 12)
                             for _ in range(n)], dtype=np.uint64)
            addrs = dmaphys.dma_map_phys_batch(rig.dev, phys, 4096, DMA_TO_DEVICE)
            live_addrs.append(addrs.copy())
            single = dmaphys.dma_map_phys(rig.dev, int(phys[0]), 4096, DMA_TO_DEVICE)
            # each mapping reads back the bytes of its own buffer
            want = np.stack([np.frombuffer(rig.m.mem_read(int(p), 16), dtype=np.uint8) for p in phys])
            got = rig.dev.dma_read_batch(addrs, 16)
            assert np.array_equal(got, want)
            assert rig.dev.dma_read(single, 16) == rig.m.mem_read(int(phys[0]), 16)
            dmaphys.dma_unmap_phys(rig.dev, single, 4096, DMA_TO_DEVICE)
            dmaphys.dma_unmap_phys_batch(rig.dev, addrs, 4096, DMA_TO_DEVICE)

    for p in range(2):                                # distinct bytes in every page of both buffers
        for i in range(tb.BUF_PAGES):
            rig.m.mem_write(rig.bufs[p] + (i << 12), (p * tb.BUF_PAGES + i).to_bytes(4, "little") * 4)
    in_threads(lambda i: go(10 + i))
    if rig.domain is not None:
        rig.m.advance(10**9)                          # the lazy flush queue's timer
        assert not any(rig.domain.iova_to_phys_batch(np.concatenate(live_addrs)))


# ---- lazy: batches across many full flush queues (issue 10 item 3) ---------------------------------
def test_lazy_batches_cross_full_queues_without_the_gil():
    """Lazy unmap batches whose flush queue fills many times: the full-queue handling (release
    what finished flushes cover, flush the whole IOTLB, release the rest; the releases
    overflowing the CPU's magazines into the depot) runs in the GIL-free run, and everything --
    addresses, IOTLB contents and counters, flush-queue entries and counters, rcaches, depot,
    IOVA tree, page tables -- matches the per-call path and the pure-Python reference."""
    rigs = {"call": fast_rig("iommu-lazy"), "batch": fast_rig("iommu-lazy"),
            "ref": tb.Rig(dmaphys.reference, "iommu-lazy", dma_debug=False)}
    rigs["ref"].m.trace.enabled = False
    fq_size = rigs["batch"].domain.iova_cookie.fq_size
    rng = random.Random(5)
    slow = []                                         # unmap elements that took the full path
    for rnd in range(8):
        n = rng.choice([fq_size + 44, 2 * fq_size + 3, 700])
        base = rigs["call"].bufs[rnd % 2]
        phys = np.array([base + (rng.randrange(0, tb.BUF_PAGES) << 12) for _ in range(n)], dtype=np.uint64)
        op = ("map", phys, 4096, DMA_BIDIRECTIONAL, 0)
        res = {k: (tb.batch if k != "call" else tb.per_call)(rig.impl, rig, op) for k, rig in rigs.items()}
        assert res["call"][1:] == res["batch"][1:] == res["ref"][1:]
        assert tb.same(res["call"][0], res["batch"][0]) and tb.same(res["call"][0], res["ref"][0])
        addrs = res["call"][0]
        for rig in rigs.values():                     # fill IOTLB entries the flushes must drop
            rig.dev.dma_read_batch(addrs[::3], 8)
        if rnd % 2:
            addrs = addrs[::-1].copy()
        op = ("unmap", addrs, np.uint64(4096), DMA_BIDIRECTIONAL, 0)
        before = dmaphys._core._test_batch_fast_elements(rigs["batch"].m)
        res = {k: (tb.batch if k != "call" else tb.per_call)(rig.impl, rig, op) for k, rig in rigs.items()}
        assert res["call"][1:] == res["batch"][1:] == res["ref"][1:]
        slow.append(n - (dmaphys._core._test_batch_fast_elements(rigs["batch"].m) - before))
        if rnd == 5:                                  # the timers fire; the next batch re-arms them
            for rig in rigs.values():
                rig.m.advance(10**9)
        snaps = {k: rig.snapshot() for k, rig in rigs.items()}
        assert snaps["call"] == snaps["batch"] == snaps["ref"], rnd
    cookie = rigs["batch"].domain.iova_cookie
    assert cookie.fq_flush_start_cnt >= 15            # full-queue flushes (plus the timer's one)
    assert rigs["batch"].iommu.get_state() == rigs["call"].iommu.get_state()
    # Every unmap ran GIL-free, full queues included, except where a timer had to be armed (a
    # Python object on the machine's timer list): the flush queue's timer at the very first lazy
    # unmap and at the first after advance() fired it, and the depot work at the first
    # full-queue release that pushes a magazine to the depot while no depot work is pending.
    assert slow == [2, 0, 0, 0, 0, 0, 2, 0], slow


@pytest.mark.parametrize("kind", ["direct", "iommu-lazy"])
def test_two_threads_two_machines_reusing_out_equal_sequential(kind):
    """Threads mapping ring after ring into one reused ``out`` array each (per thread) give what
    one thread after the other gives, and what fresh result arrays give."""
    def ring_work(rig, seed, out):
        rng = random.Random(seed)
        seen = []
        for _ in range(40):
            phys = np.array([rig.bufs[rng.randrange(2)] + (rng.randrange(0, tb.BUF_PAGES - 1) << 12)
                             for _ in range(64)], dtype=np.uint64)
            addrs = dmaphys.dma_map_phys_batch(rig.dev, phys, 4096, DMA_TO_DEVICE, 0, out=out)
            assert out is None or addrs is out
            seen.append(addrs.tolist())
            dmaphys.dma_unmap_phys_batch(rig.dev, addrs, 4096, DMA_TO_DEVICE)
        return seen

    fresh = [fast_rig(kind), fast_rig(kind)]
    want = [ring_work(fresh[i], i, None) for i in range(2)]
    par = [fast_rig(kind), fast_rig(kind)]
    assert in_threads(lambda i: ring_work(par[i], i, np.empty(64, dtype=np.uint64))) == want
    for a, b in zip(fresh, par, strict=True):
        assert a.snapshot() == b.snapshot()


def test_gil_gap_spin_changes_no_result():
    """The bounded spin before a batch thread takes the GIL back (batch.pxi) only decides when a
    thread asks CPython for the GIL: off, on, or with a gap the main thread leaves open (it
    goes on holding the GIL after its own batch), threads give what one after the other gives."""
    hook = dmaphys._core._gil_spin_ns
    old = hook()
    assert old == 5000
    try:
        for ns in (0, 5000, 10**6):
            assert hook(ns) in (0, 5000, 10**6)
            seq = [fast_rig("direct"), fast_rig("direct")]
            want = [workload(seq[0], 1, rounds=8), workload(seq[1], 2, rounds=8)]
            par = [fast_rig("direct"), fast_rig("direct")]
            workload(fast_rig("direct"), 3, rounds=1)       # the main thread's gap is open now
            assert in_threads(lambda i, par=par: workload(par[i], i + 1, rounds=8)) == want
    finally:
        hook(old)
    with pytest.raises(ValueError):
        hook(-1)
    assert hook() == old
