"""The main job: a short stress run in the suite, deterministic for a seed; CLI argument errors."""

import json

import numpy as np
import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import stress
from dmaphys.cli import main


def _stable(r):
    return {k: v for k, v in r.items()
            if k not in ("seconds", "ops_per_s", "latencies", "paths")} | {
        "paths": {n: {k: v for k, v in p.items() if k in ("ops", "rounds", "bytes", "map_failures")}
                  for n, p in r["paths"].items()}}


def test_short_stress_run_is_clean_and_deterministic():
    r1 = stress.run(ops=20_000, seed=7, progress=False)
    assert r1["integrity_errors"] == 0, r1["integrity_samples"]
    assert r1["operations"] >= 20_000
    assert all(p["ops"] > 0 for p in r1["paths"].values())
    r2 = stress.run(ops=20_000, seed=7, progress=False)
    assert _stable(r1) == _stable(r2)
    r3 = stress.run(ops=20_000, seed=8, progress=False)
    assert _stable(r3) != _stable(r1)


def test_counters_for_seed_1():
    """The deterministic counters of a short seed-1 run, pinned: a change here is a change of the
    workload (document it in the README's stress section), not noise."""
    r = stress.run(ops=40_000, seed=1, progress=False)
    got = {n: (p["ops"], p["rounds"], p["bytes"]) for n, p in r["paths"].items()}
    assert got == PINNED_SEED1, got
    assert r["integrity_errors"] == 0 and r["dma_debug"]["error_count"] == 0


def test_every_moved_byte_is_compared():
    r = stress.run(ops=20_000, seed=2, progress=False)
    assert r["checked_bytes"] >= sum(p["bytes"] for p in r["paths"].values()) > 0


@pytest.mark.parametrize("scenario", stress.SCENARIOS)
def test_core_and_reference_run_the_same_workload(scenario):
    """The workload through the reference model's batch twins: the same counters, IOVAs,
    IOTLB statistics, swiotlb and dma-debug state as through the compiled core."""
    ops = 600
    r1 = stress.run(ops=ops, seed=5, scenarios=(scenario,), progress=False)
    r2 = stress.run(ops=ops, seed=5, scenarios=(scenario,), progress=False, dma=reference)
    assert r1["integrity_errors"] == 0 and r2["integrity_errors"] == 0
    assert _stable(r1) == _stable(r2)


class _Dma:
    """The dmaphys API with some functions replaced (attribute lookup falls through)."""

    def __init__(self, **over):
        self.__dict__.update(over)

    def __getattr__(self, name):
        return getattr(dmaphys, name)


def _corrupt_before_cpu_reads():
    """mem_read_batch / mem_read_compare_batch (the CPU's checked loads) that first flip a byte of
    simulated memory under their first element: memory corrupted mid-run, after the device's
    access and before the CPU's check."""
    def flip(m, phys):
        p = int(np.asarray(phys)[0])
        b = m.mem_read(p, 1)
        m.mem_write(p, bytes([b[0] ^ 0x5A]))

    def mem_read_batch(m, phys, sizes):
        flip(m, phys)
        return dmaphys.mem_read_batch(m, phys, sizes)

    def mem_read_compare_batch(m, phys, sizes, expected):
        flip(m, phys)
        return dmaphys.mem_read_compare_batch(m, phys, sizes, expected)
    return _Dma(mem_read_batch=mem_read_batch, mem_read_compare_batch=mem_read_compare_batch)


@pytest.mark.parametrize("scenario", stress.SCENARIOS)
def test_corrupted_memory_is_an_integrity_error(scenario):
    r = stress.run(ops=3000, seed=1, scenarios=(scenario,), progress=False, dma=_corrupt_before_cpu_reads())
    assert r["integrity_errors"] > 0
    assert "1 bytes differ (first at element 0, byte 0)" in r["integrity_samples"][0]


def test_corrupted_tx_buffer_is_seen_by_the_device_read_check():
    """A TX buffer corrupted between dma_map and the NIC's fetch: the device read differs."""
    def dma_map_phys_batch(dev, phys, sizes, dir, attrs=0):
        out = dmaphys.dma_map_phys_batch(dev, phys, sizes, dir, attrs)
        if dir == dmaphys.DMA_TO_DEVICE:
            m, p = dev.machine, int(np.asarray(phys)[-1])
            m.mem_write(p + 7, bytes([m.mem_read(p + 7, 1)[0] ^ 1]))
        return out
    r = stress.run(ops=3000, seed=1, scenarios=("nic",), progress=False,
                   dma=_Dma(dma_map_phys_batch=dma_map_phys_batch))
    assert r["integrity_errors"] > 0
    assert all(s.startswith("nic TX") and "byte 7" in s for s in r["integrity_samples"])


def test_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "stress.png"
    assert main(["stress", "--ops", "5000", "--seed", "3", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["integrity_errors"] == 0 and out["seed"] == 3
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("argv", [["--ops", "0"], ["--ops", "many"], ["--scenario", "bogus"],
                                  ["--seed", "x"]])
def test_cli_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["stress", *argv])
    assert ei.value.code == 2
    assert "dmaphys stress: error:" in capsys.readouterr().err


def test_scenario_subset(capsys):
    assert main(["stress", "--ops", "3000", "--scenario", "swiotlb,direct", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "swiotlb" in out and "integrity errors: 0" in out


@pytest.mark.slow
def test_default_stress_run():
    r = stress.run(progress=False)
    assert r["integrity_errors"] == 0


PINNED_SEED1 = {"swiotlb": (3648, 15, 2644944), "direct": (2560, 10, 930496), "nic": (16128, 33, 3149472),
                "nvme": (16084, 19, 45957120), "p2p": (1752, 7, 1359680)}


def test_same_bytes_finds_any_differing_byte():
    """stress.same_bytes: a flipped byte anywhere (the 8-byte body or the tail), in small and large
    arrays, contiguous or not, at any alignment, is a difference."""
    from dmaphys.stress import SAME_BYTES_MEMCMP, same_bytes
    rng = np.random.default_rng(0)
    for n in (0, 7, SAME_BYTES_MEMCMP, SAME_BYTES_MEMCMP + 1, 70_001, 1 << 20):
        pool = rng.integers(0, 256, n + 16, dtype=np.uint8)
        a = pool[3:3 + n]
        b = a.copy()
        assert same_bytes(a, b) and same_bytes(np.repeat(a, 2)[::2], b)
        for pos in {0, n // 2, max(n - 1, 0), max((n & ~7) - 1, 0)} if n else ():
            c = b.copy()
            c[pos] ^= 0x80
            assert not same_bytes(a, c) and not same_bytes(c, a) and not same_bytes(np.repeat(c, 2)[::2], a)
