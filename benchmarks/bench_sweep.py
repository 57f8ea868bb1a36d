"""Scaling of ``dmaphys sweep``: wall time of a 16-point sweep on a LocalCluster of 1 and 2 workers.

    PYTHONPATH=. python benchmarks/bench_sweep.py [--ops N] [--workers 1,2] [--repeat R] [--quick]

The spec: kind "stress", the NIC workload, 16 points (iotlb_capacity x iommu x seed), ``--ops``
operations per point (default 60,000: about a second per point on the -O2 core). Each worker
count runs the whole sweep through ``sweep.run_sweep`` (worker processes, one thread each) and
prints the wall time from the call to the last row on disk, the part spent starting the
cluster, the rest (the points), the speed-up of the points against 1 worker, the workers'
busy time (compute time of the points, from Dask's task stream: it grows when other processes
take the CPU) and the overlap, busy / points time (how many points ran at once); the worker
counts take turns ``--repeat`` times and each keeps its best run. The rows must be identical
for every worker count and run (checked). Timings are of a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from dmaphys import sweep

SPEC = {"base": {"kind": "stress", "scenarios": ["nic"]},
        "axes": {"iotlb_capacity": [16, 64, 256, 1024], "iommu": ["strict", "lazy"], "seed": [1, 2]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=60_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2, help="runs per worker count (best kept)")
    ap.add_argument("--quick", action="store_true", help="2,000 ops per point, one run (a smoke run)")
    args = ap.parse_args()
    ops = 2_000 if args.quick else args.ops
    spec = sweep.parse_spec({"base": {**SPEC["base"], "ops": ops}, "axes": SPEC["axes"]})
    assert len(spec) == 16
    results = {}
    rows_seen = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(1 if args.quick else args.repeat):
            for n in [int(x) for x in args.workers.split(",")]:
                out = os.path.join(tmp, f"w{n}.csv")
                timings: dict = {}
                t0 = time.perf_counter()
                rows = sweep.run_sweep(spec, out, workers=n, timings=timings)
                wall = time.perf_counter() - t0
                assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
                if rows_seen is not None:
                    assert rows == rows_seen, "rows differ between runs"
                rows_seen = rows
                run = (wall, timings["cluster_start_s"], timings["points_s"], timings.get("busy_s", 0.0))
                if n not in results or run[2] < results[n][2]:
                    results[n] = run
    base = results[min(results)][2]
    print(f"16-point sweep, {ops:,} ops per point, LocalCluster on {os.cpu_count()} CPUs, "
          f"best of {1 if args.quick else args.repeat} (load average {os.getloadavg()[0]:.1f}: "
          f"a shared machine is noisy)")
    print(f"{'workers':>8}{'wall s':>9}{'cluster start s':>17}{'points s':>10}{'speed-up':>10}"
          f"{'busy s':>9}{'overlap':>9}")
    for n, (wall, start, pts, busy) in results.items():
        print(f"{n:>8}{wall:>9.2f}{start:>17.2f}{pts:>10.2f}{base / pts:>9.2f}x"
              f"{busy:>9.2f}{busy / pts:>8.2f}x")


if __name__ == "__main__":
    main()
