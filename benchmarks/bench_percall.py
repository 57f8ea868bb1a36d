"""The per-call pair (issue 10 item 2): ns and instructions per dma_map_phys + dma_unmap_phys.

    PYTHONPATH=. python benchmarks/bench_percall.py [--paths direct,iommu-strict,iommu-lazy]
                                                    [--runs 7] [--callgrind]

Each pair is two Python calls, driven the way benchmarks/run_all.py's time_pairs_per_call
drives them (4 KiB, DMA_BIDIRECTIONAL, attrs 0, dma-debug off, 10^3 other mappings live):

    for p in ps:
        unmap_phys(dev, map_phys(dev, p, 4096, 0, 0), 4096, 0, 0)

Wall clock: the best of --runs runs of 20 x 4096 pairs, and the best CPU time (process_time) of
the same runs (this shared 2-core VM moves 20-50 % from run to run: compare builds side by
side, alternating; under load the CPU-time figure is the steadier one). --callgrind: instructions per pair
instead, load-independent: valgrind's callgrind runs this script twice (after the same setup,
0 and 20,000 pairs) and the difference is divided by 20,000; it includes the Python loop
itself (~630 instructions on CPython 3.11), the same for every build.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

GiB = 1 << 30
SIZE = 4096
PATHS = ("direct", "iommu-strict", "iommu-lazy")
TARGETS = {"direct": 150, "iommu-strict": 200, "iommu-lazy": 200}
CG_PAIRS = 20_000


def setup(path):
    import dmaphys as impl
    m = impl.Machine(ram=[(0, 3 * GiB), (4 * GiB, 13 * GiB)], swiotlb=64 << 20, dma_debug=False)
    if path == "direct":
        dev = m.add_device("bench")
    else:
        dev = m.add_device("bench", iommu=m.add_iommu(strict=(path != "iommu-lazy")))
    live = np.uint64(GiB) + np.arange(1000, dtype=np.uint64) * np.uint64(SIZE)
    impl.dma_map_phys_batch(dev, live, SIZE, 0, 0)
    pages = np.arange(CG_PAIRS, dtype=np.uint64) % np.uint64(4096)
    ps = [int(p) for p in np.uint64(8 * GiB) + pages * np.uint64(SIZE)]
    return impl, dev, ps


def pairs(impl, dev, ps):
    map_phys, unmap_phys = impl.dma_map_phys, impl.dma_unmap_phys
    for p in ps:
        unmap_phys(dev, map_phys(dev, p, SIZE, 0, 0), SIZE, 0, 0)


def wall(path, runs):
    """(wall-clock ns, CPU-time ns) per pair, each the best of the runs."""
    impl, dev, ps = setup(path)
    ps = ps[:4096]
    pairs(impl, dev, ps)
    best = cpu = float("inf")
    for _ in range(runs):
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(20):
            pairs(impl, dev, ps)
        best = min(best, (time.perf_counter_ns() - t0) / (20 * len(ps)))
        cpu = min(cpu, (time.process_time_ns() - c0) / (20 * len(ps)))
    return best, cpu


def child(path, n):
    impl, dev, ps = setup(path)
    pairs(impl, dev, ps[:4096])                  # warm: rcache magazines, leaf-table cache
    pairs(impl, dev, ps[:n])


def instructions(path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0")
    got = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (0, CG_PAIRS):
            out = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                 sys.executable, __file__, "--child", path, str(n)],
                env=env, capture_output=True, text=True, check=True).stderr
            got.append(int(re.search(r"Collected : (\d+)", out).group(1)))
    return (got[1] - got[0]) / CG_PAIRS


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--callgrind", action="store_true", help="instructions per pair (valgrind)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(f"load average {os.getloadavg()[0]:.2f}")
    for path in args.paths.split(","):
        if args.callgrind:
            print(f"{path:13s} {instructions(path):7.0f} instructions per pair")
        else:
            ns, cpu = wall(path, args.runs)
            met = "met" if ns <= TARGETS[path] else "MISS"
            print(f"{path:13s} {ns:7.1f} ns per pair (target {TARGETS[path]} ns: {met}); "
                  f"CPU time {cpu:.1f} ns")


if __name__ == "__main__":
    main()
