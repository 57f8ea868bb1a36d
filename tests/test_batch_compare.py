"""The checking ring batches (batch.pxi / reference/batch.py): dma_read_compare_ragged_batch and
mem_read_compare_batch, which `dmaphys stress` uses to check device reads and CPU loads.

Each must be exactly the read batch it replaces (dma_read_ragged_batch / mem_read_batch: the
same accesses, faults and where they stop, warnings and state) followed by a byte comparison
with the expected bytes: (bytes that differ, offset of the first or -1). The tests run the ring
stream of test_batch_ring.py on two identical machines -- reads, then the checking batches
with expected bytes that are right, or wrong at random bytes -- on both backends, with dma-debug
and tracing on and (core) off, and compare results, exceptions and every snapshot.
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
from dmaphys import DMA_BIDIRECTIONAL

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_batch_ring as tr  # noqa: E402  (the rig, the op stream, its appliers and snapshot)


def _want(got, rng):
    """``got`` (the bytes the read batch returned), with a few random bytes flipped at times."""
    want = np.array(got, dtype=np.uint8, copy=True)
    if want.shape[0] and rng.random() < 0.5:
        for _ in range(rng.choice([1, 1, 3])):
            want[rng.randrange(want.shape[0])] ^= rng.choice([1, 0x80, 0xFF])
    return want


def _diff(got, want):
    d = np.flatnonzero(np.asarray(got) != want)
    return int(d.shape[0]), (int(d[0]) if d.shape[0] else -1)


def _run(fn):
    """fn()'s (result, (type, message, batch_index, batch_result) or None, warnings)."""
    res, exc, warns, _ = tr._outcome(lambda done: fn())
    if exc is not None:
        assert hasattr(exc, "batch_index"), exc
        exc = (type(exc), str(exc), exc.batch_index, exc.batch_result)
    return res, exc, warns


def read_op(impl, rig, op):
    if op[0] == "mem_read":
        return _run(lambda: impl.mem_read_batch(rig.m, op[1], op[2]))
    return _run(lambda: impl.dma_read_ragged_batch(rig.devs[op[1]], op[2], op[3]))


def compare_op(impl, rig, op, want):
    """The checking twin of a "read" / "mem_read" op of the stream."""
    if op[0] == "mem_read":
        return _run(lambda: impl.mem_read_compare_batch(rig.m, op[1], op[2], want))
    return _run(lambda: impl.dma_read_compare_ragged_batch(rig.devs[op[1]], op[2], op[3], want))


def run_stream(impl_a, impl_b, seed, steps=30, fast=False):
    """Rig a runs the stream with the read batches, rig b with the checking batches in their
    place (expected bytes: what a's read returned, sometimes with bytes flipped); everything
    else on both. Returns how many reads were compared in full and how many stopped early."""
    rng = random.Random(seed)
    a, b = tr.Rig(impl_a, fast), tr.Rig(impl_b, fast)
    for rig, impl in ((a, impl_a), (b, impl_b)):
        rig.state = impl.DmaIovaState()
        assert impl.dma_iova_try_alloc(rig.devs["iommu"], rig.state, rig.buf, 64 * 4096)
    seen = {"full": 0, "stopped": 0}
    for _ in range(steps):
        op = tr.gen_op(rng, a)
        if op[0] in ("read", "mem_read"):
            ra, ea, wa = read_op(impl_a, a, op)
            total = int(np.asarray(op[-1], dtype=np.uint64).sum())
            got = ra if ea is None else np.concatenate(
                [ea[3], np.zeros(total - ea[3].shape[0], dtype=np.uint8)])
            want = _want(got, rng)
            rb, eb, wb = compare_op(impl_b, b, op, want)
            assert wa == wb, op
            if ea is None:
                assert eb is None, (op, eb)
                assert rb == _diff(ra, want), op
                seen["full"] += 1
            else:
                assert eb is not None and eb[:3] == ea[:3], (op, ea, eb)
                assert eb[3] == _diff(ea[3], want[:ea[3].shape[0]]), op
                seen["stopped"] += 1
        else:
            ra, ea, wa = tr.batch(impl_a, a, op)
            rb, eb, wb = tr.batch(impl_b, b, op)
            assert (ea, wa) == (eb, wb), op
            if op[0] == "map" and ea is None:
                for rig in (a, b):
                    rig.live[op[1]] += [(int(x), int(p), op[3], op[4]) for x, p in zip(ra, op[2], strict=True)
                                        if x != dmaphys.DMA_MAPPING_ERROR]
        assert a.snapshot() == b.snapshot(), op
    return seen


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_compare_batches_equal_read_batches(impl, seed):
    run_stream(impl, impl, seed)


@pytest.mark.skipif(dmaphys.BACKEND != "core", reason="the compiled core's GIL-free loops")
@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_fast_compare_batches_equal_read_batches(seed):
    """dma-debug and tracing off: the core's checking batches run without the GIL."""
    run_stream(dmaphys, dmaphys, seed, steps=40, fast=True)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_core_compare_batches_equal_reference(seed):
    run_stream(dmaphys, reference, seed)


def test_streams_reach_differences_and_faults():
    """The streams above compare reads with and without wrong bytes, and reads that fault."""
    seen = {"full": 0, "stopped": 0}
    for seed in range(12):
        for k, v in run_stream(dmaphys, dmaphys, seed).items():
            seen[k] += v
    assert seen["full"] > 20 and seen["stopped"] > 0, seen


def test_compare_forms(impl):
    """bytes-like expected data, a scalar size, empty batches, zero-size elements, the first
    differing byte's offset across elements, and the counters a read batch would leave."""
    rig = tr.Rig(impl)
    m, dev = rig.m, rig.devs["iommu"]
    impl.mem_write_batch(m, [rig.buf, rig.buf + 100], 3, b"abcdef")
    assert impl.mem_read_compare_batch(m, [rig.buf + 100, rig.buf], 3, b"defabc") == (0, -1)
    assert impl.mem_read_compare_batch(m, [rig.buf + 100, rig.buf], [3, 3], b"defabd") == (1, 5)
    assert impl.mem_read_compare_batch(m, [], 3, b"") == (0, -1)
    a = impl.dma_map_phys_batch(dev, [rig.buf], 4096, DMA_BIDIRECTIONAL)
    assert impl.dma_read_compare_ragged_batch(dev, [a[0], a[0]], [0, 4], bytearray(b"abc\0")) == (0, -1)
    assert impl.dma_read_compare_ragged_batch(dev, [a[0] + 1, a[0]], 2, b"bXaY") == (2, 1)
    assert dev.stats["dma_reads"] == 4
    with pytest.raises(ValueError):
        impl.mem_read_compare_batch(m, [rig.buf], 3, b"ab")
    with pytest.raises(TypeError):
        impl.dma_read_compare_ragged_batch(dev, [a[0]], 2, "ab")


def test_compare_of_unbacked_memory_is_against_zeros(impl):
    """A frame never written reads as zeros: the comparison is against zeros there too."""
    rig = tr.Rig(impl)
    p = rig.buf + 5 * 4096 - 2                           # straddles two frames never written
    assert impl.mem_read_compare_batch(rig.m, [p], 4, bytes(4)) == (0, -1)
    assert impl.mem_read_compare_batch(rig.m, [p], 4, b"\0\0\0\1") == (1, 3)
