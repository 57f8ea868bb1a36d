"""IOVA allocator speed: ns per alloc_iova_fast + free_iova_fast pair, core vs reference.

    PYTHONPATH=. python benchmarks/bench_iova.py [--quick]

Rows: the number of live ranges kept in the tree (10^3, 10^5) and the path taken:
  hit   1-granule ranges: after the first pair every alloc is served by the CPU's rcache
        and every free goes back into it (the tree is not touched);
  miss  64-granule ranges (order 6, above the rcache's largest size): every pair walks the
        tree from cached_node, inserts a node and erases it again.
Columns: the pair called from Python on the compiled core and on the reference, their ratio,
and the same pair in a C loop inside the core (IovaDomain._bench_fast_pairs) which leaves out
the Python call overhead. Best of three runs.
"""

from __future__ import annotations

import argparse
import time

import dmaphys
import dmaphys.reference as reference

LIMIT = (1 << 36) - 1          # a 48-bit aperture with a 4 KiB granule (inclusive limit pfn)
PATHS = {"hit": 1, "miss": 64}


def filled(impl, live):
    d = impl.IovaDomain(4096, 1)
    for _ in range(live):
        if d.alloc_iova_fast(1, LIMIT) == 0:
            raise MemoryError("IOVA space exhausted while filling")
    return d


def python_pairs(d, n, size):
    alloc, free = d.alloc_iova_fast, d.free_iova_fast
    best = None
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            free(alloc(size, LIMIT), size)
        dt = (time.perf_counter_ns() - t0) / n
        best = dt if best is None else min(best, dt)
    return best


def c_pairs(d, n, size):
    return min(d._bench_fast_pairs(n, size, LIMIT) / n for _ in range(3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args(argv)
    n_core, n_ref, n_c = (20_000, 2_000, 200_000) if args.quick else (200_000, 20_000, 2_000_000)
    print(f"{'live':>8} {'path':>5} {'core ns/pair':>13} {'ref ns/pair':>12} {'ref/core':>9} "
          f"{'core C-loop ns/pair':>20}")
    for live in (10**3, 10**5):
        core_d = filled(dmaphys, live)
        ref_d = filled(reference, live)
        for path, size in PATHS.items():
            c = python_pairs(core_d, n_core, size)
            r = python_pairs(ref_d, n_ref, size)
            cl = c_pairs(core_d, n_c, size)
            assert len(core_d) == len(ref_d)
            print(f"{live:>8} {path:>5} {c:>13.0f} {r:>12.0f} {r / c:>9.1f} {cl:>20.1f}")


if __name__ == "__main__":
    main()
