"""IOMMU page tables: ns per granule map+unmap and per iova_to_phys, core vs reference, by live size.

    python benchmarks/bench_pgtable.py [--formats vtd-ss,arm-lpae-s1-4k] [--quick] [--big]

For each format and each population of live smallest-page mappings (10^3, 10^5, and with --big
10^7; scattered over a 64 GiB IOVA window) it reports, in ns per operation:
  map+unmap hot   one iommu_map + iommu_unmap of one page (pgtable_map/pgtable_unmap) cycling
                  over 64 IOVAs whose tables exist: the rcache-recycled IOVA of the DMA API
  map+unmap scat  the same over 10^4 scattered IOVAs (each walk misses the host caches)
  map+unmap cold  first touch of those 10^4 IOVAs (allocates tables)
  i2p hot / scat  io_pgtable_ops->iova_to_phys of 64 recently used / 10^4 random live IOVAs
  lookup scat     the hardware walk (decoded permissions, walk_reads counted)
for the compiled core through a C loop (the cost other Cython code pays; best of 5) and the
pure-Python reference (10^3 only; 10^5 too without --quick), with the ratio ref / core.
"rss" is the process's peak RSS after the population (MiB; ru_maxrss, so monotonic over the
run), "pt MiB" the page-table side: table pages x 4 KiB of simulated RAM storage.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np

import dmaphys
import dmaphys.reference as reference

R, W = 1, 2


def _best(fn, n, reps=5):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pages(live, extra, window_pages, seed):
    """live + extra distinct random page numbers below window_pages."""
    rng = np.random.default_rng(seed)
    if live + extra < 2_000_000:
        return np.array(random.Random(seed).sample(range(window_pages), live + extra), dtype=np.uint64)
    return rng.choice(window_pages, live + extra, replace=False).astype(np.uint64)


def populate(impl, fmt, live, window, seed=1):
    m = impl.Machine(ram=[(0, 8 << 30)], swiotlb=0, dma_debug=False)
    pt = impl.IoPgtable(m, fmt)
    sh = pt.granule.bit_length() - 1
    pages = _pages(live, 20000, window >> sh, seed)
    iovas = pages[:live] << np.uint64(sh)
    spare = pages[live:] << np.uint64(sh)
    if impl is dmaphys:
        assert pt._bench_map(iovas, iovas, R | W) == 0
    else:
        for va in iovas.tolist():
            pt.map(va, va, pt.granule, R | W)
    return m, pt, iovas, spare


def bench(fmt, live, quick, with_ref):
    out = {}
    window = 1 << 36
    m, pt, iovas, spare = populate(dmaphys, fmt, live, window)
    out["rss"] = _rss_mib()
    out["pt MiB"] = pt.table_pages * 4096 / 2**20
    rng = np.random.default_rng(2)
    g = pt.granule
    n = 100_000 if quick else 400_000
    hot = np.resize(spare[:64], n)
    scat = spare[64:10064].copy()
    out["map+unmap cold"] = _best(lambda: pt._bench_map_unmap(scat, 1 << 32, R | W), len(scat), 1)
    out["map+unmap scat"] = _best(lambda: pt._bench_map_unmap(scat, 1 << 32, R | W), len(scat))
    pt._bench_map_unmap(hot[:64], 1 << 32, R | W)
    out["map+unmap hot"] = _best(lambda: pt._bench_map_unmap(hot, 1 << 32, R | W), n)
    probe = iovas[rng.integers(0, live, 10000)] + rng.integers(0, g, 10000).astype(np.uint64)
    hprobe = np.resize(probe[:64], n)
    reps = 5 if quick else 20
    out["i2p hot"] = _best(lambda: pt._bench_iova_to_phys(hprobe, 1), n)
    out["i2p scat"] = _best(lambda: pt._bench_iova_to_phys(probe, reps), len(probe) * reps)
    out["lookup scat"] = _best(lambda: pt._bench_lookup(probe, reps), len(probe) * reps)
    pl = probe.tolist()
    assert all(pt.iova_to_phys(v) == v for v in pl[:1000])
    assert pt._bench_map_unmap(hot[:64], 1 << 32, R | W) == 0
    if with_ref:
        rm, rpt, riovas, rspare = populate(reference, fmt, live, window)
        rfew = rspare[:300].tolist()
        for v in rfew:                                                  # warm: tables exist
            rpt.map(v, 1 << 32, g, R)
            rpt.unmap(v, g)
        t = _best(lambda: [(rpt.map(v, 1 << 32, g, R), rpt.unmap(v, g)) for v in rfew], len(rfew), 2)
        out["map+unmap hot ref"] = out["map+unmap scat ref"] = t
        rprobe = pl[:2000]
        t = _best(lambda: [rpt.iova_to_phys(v) for v in rprobe], len(rprobe), 2)
        out["i2p hot ref"] = out["i2p scat ref"] = t
        out["lookup scat ref"] = _best(lambda: [rpt.lookup(v) for v in rprobe], len(rprobe), 2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="vtd-ss,x86-64-5level,arm-lpae-s1-4k,arm-lpae-s1-64k")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; reference at 10^3 only")
    ap.add_argument("--big", action="store_true", help="also 10^7 live mappings (~1 min per format)")
    args = ap.parse_args(argv)
    sizes = (1000, 100_000) + ((10_000_000,) if args.big else ())
    print(f"{'format':16} {'live':>9} {'operation':15} {'core-C ns':>10} {'ref ns':>10} {'ref/core':>9}"
          f" {'pt MiB':>8} {'rss MiB':>8}")
    for fmt in args.formats.split(","):
        base = {}
        for live in sizes:
            r = bench(fmt, live, args.quick, live == 1000 or (live == 100_000 and not args.quick))
            for op in ("map+unmap hot", "map+unmap scat", "map+unmap cold", "i2p hot", "i2p scat",
                       "lookup scat"):
                c = r[op]
                base.setdefault(op, c)
                ref = r.get(f"{op} ref")
                print(f"{fmt:16} {live:>9} {op:15} {c:10.1f} "
                      f"{(f'{ref:10.0f}' if ref else '         -')} "
                      f"{(f'{ref / c:9.0f}' if ref else '        -')} "
                      f"{r['pt MiB']:8.1f} {r['rss']:8.0f}"
                      + (f"   x{c / base[op]:.2f} vs 10^3" if live > 1000 else ""))


if __name__ == "__main__":
    main()
