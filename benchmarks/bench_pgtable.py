"""IOMMU page tables: ns per granule (4 KiB) map+unmap and per iova_to_phys, core vs reference.

    python benchmarks/bench_pgtable.py [--formats vtd-ss,arm-lpae-s1-4k] [--quick]

For each format and each population of live 4 KiB mappings (10^3 and 10^5, scattered over a
64 GiB IOVA window so the walks touch many tables) it reports:
  map+unmap   one extra 4 KiB iommu_map + iommu_unmap (pgtable_map/pgtable_unmap) at an IOVA
              whose tables exist (steady state; "cold" first-touch cost printed separately)
  iova_to_phys  io_pgtable_ops->iova_to_phys of a random live IOVA
  lookup      the hardware walk (decoded permissions, walk_reads counted)
for the compiled core through a C loop (the cost other Cython code pays), the core through
its Python methods (pt.map/pt.unmap/pt.iova_to_phys), and the pure-Python reference, with the
ratio reference / core-C.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

import dmaphys
import dmaphys.reference as reference

R, W = 1, 2
WINDOW = 1 << 36


def _ns(fn, n):
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / n


def populate(impl, fmt, live, seed=1):
    m = impl.Machine(ram=[(0, 8 << 30)], swiotlb=0, dma_debug=False)
    pt = impl.IoPgtable(m, fmt)
    rng = random.Random(seed)
    sh = pt.granule.bit_length() - 1
    pages = rng.sample(range(WINDOW >> sh), live + 20000)
    iovas = [p << sh for p in pages[:live]]
    spare = [p << sh for p in pages[live:]]
    if impl is dmaphys:
        pt._bench_map(np.array(iovas, dtype=np.uint64), np.array(iovas, dtype=np.uint64), R | W)
    else:
        for va in iovas:
            pt.map(va, va, pt.granule, R | W)
    return m, pt, iovas, spare


def bench(fmt, live, quick):
    out = {}
    m, pt, iovas, spare = populate(dmaphys, fmt, live)
    rng = random.Random(2)
    g = pt.granule
    probe = np.array([rng.choice(iovas) + rng.randrange(g) for _ in range(10000)], dtype=np.uint64)
    extra = np.array(spare[:10000], dtype=np.uint64)
    reps = 20 if quick else 100
    out["map+unmap cold core-C"] = _ns(lambda: pt._bench_map_unmap(extra, 1 << 32, R | W), len(extra))
    out["map+unmap core-C"] = _ns(lambda: pt._bench_map_unmap(extra, 1 << 32, R | W), len(extra))
    few = [int(x) for x in extra[:3000]]
    out["map+unmap core-py"] = _ns(lambda: [(pt.map(v, 1 << 32, g, R), pt.unmap(v, g)) for v in few],
                                   len(few))
    out["iova_to_phys core-C"] = _ns(lambda: pt._bench_iova_to_phys(probe, reps), len(probe) * reps)
    out["lookup core-C"] = _ns(lambda: pt._bench_lookup(probe, reps), len(probe) * reps)
    pl = [int(x) for x in probe]
    out["iova_to_phys core-py"] = _ns(lambda: [pt.iova_to_phys(v) for v in pl], len(pl))
    assert all(pt.iova_to_phys(v) == v for v in pl)

    if not (quick and live > 1000):
        rm, rpt, riovas, rspare = populate(reference, fmt, live)
        assert rpt.pgtable_root == pt.pgtable_root                      # same allocator, same tables
        rfew = rspare[:300]
        for v in rfew:                                                  # warm: tables exist
            rpt.map(v, 1 << 32, g, R)
            rpt.unmap(v, g)
        out["map+unmap ref"] = _ns(lambda: [(rpt.map(v, 1 << 32, g, R), rpt.unmap(v, g)) for v in rfew],
                                   len(rfew))
        rprobe = pl[:2000]
        out["iova_to_phys ref"] = _ns(lambda: [rpt.iova_to_phys(v) for v in rprobe], len(rprobe))
        out["lookup ref"] = _ns(lambda: [rpt.lookup(v) for v in rprobe], len(rprobe))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="vtd-ss,x86-64-5level,arm-lpae-s1-4k,arm-lpae-s1-64k")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; no reference at 10^5")
    args = ap.parse_args(argv)
    print(f"{'format':16} {'live':>7} {'operation':14} {'core-C ns':>10} {'core-py ns':>10} "
          f"{'ref ns':>10} {'ref/core-C':>10}")
    for fmt in args.formats.split(","):
        for live in (1000, 100000):
            r = bench(fmt, live, args.quick)
            print(f"{fmt:16} {live:>7} {'map+unmap cold':14} {r['map+unmap cold core-C']:10.1f}")
            for opname in ("map+unmap", "iova_to_phys", "lookup"):
                c = r[f"{opname} core-C"]
                py = r.get(f"{opname} core-py")
                ref = r.get(f"{opname} ref")
                print(f"{fmt:16} {live:>7} {opname:14} {c:10.1f} "
                      f"{(f'{py:10.1f}' if py else '         -')} "
                      f"{(f'{ref:10.0f}' if ref else '         -')} "
                      f"{(f'{ref / c:10.0f}' if ref else '         -')}")


if __name__ == "__main__":
    main()
