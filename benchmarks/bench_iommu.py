"""dma-iommu speed: ns per 4 KiB dma_map_phys + dma_unmap_phys pair (strict and lazy domains),
per two-step link+sync+destroy of 16 pages, and per iommu_iova_to_phys lookup, for the
compiled core and the reference model, with the ratio.

    PYTHONPATH=$PWD python benchmarks/bench_iommu.py [--pairs N] [--ref-pairs N]

Each figure is the best of ``--repeat`` timed runs after a warm-up run (the allocator's
rcache and the page-table levels exist by then, as on a running system). The calls go through
the public per-call API, so Python call overhead is part of every number.
"""

from __future__ import annotations

import argparse
import time

import dmaphys as core
import dmaphys.reference as reference

PAGE = 4096
RAM = 4 << 30
DMA_TO_DEVICE = 1


def _setup(impl, strict: bool):
    m = impl.Machine(cpus=1, dma_debug=False)          # measure dma-iommu, not dma-debug
    iommu = m.add_iommu("vtd-ss", strict=strict)
    dev = m.add_device("nvme0", iommu=iommu, domain_type="dma" if strict else "dma-fq")
    return m, dev


def _best(fn, n: int, repeat: int) -> float:
    fn(max(1, n // 10))                              # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def bench_map_unmap(impl, strict: bool, n: int, repeat: int) -> float:
    m, dev = _setup(impl, strict)
    map_phys, unmap_phys = impl.dma_map_phys, impl.dma_unmap_phys

    def run(count: int) -> None:
        for i in range(count):
            a = map_phys(dev, RAM + ((i & 255) << 12), PAGE, DMA_TO_DEVICE, 0)
            unmap_phys(dev, a, PAGE, DMA_TO_DEVICE, 0)

    return _best(run, n, repeat)


def bench_iova_link(impl, strict: bool, n: int, repeat: int) -> float:
    m, dev = _setup(impl, strict)
    state = impl.DmaIovaState()
    try_alloc, link, sync, destroy = (impl.dma_iova_try_alloc, impl.dma_iova_link, impl.dma_iova_sync,
                                      impl.dma_iova_destroy)

    def run(count: int) -> None:
        for _ in range(count):
            try_alloc(dev, state, 0, 16 * PAGE)
            for j in range(16):
                link(dev, state, RAM + (j << 13), j << 12, PAGE, DMA_TO_DEVICE, 0)
            sync(dev, state, 0, 16 * PAGE)
            destroy(dev, state, 16 * PAGE, DMA_TO_DEVICE, 0)

    return _best(run, n, repeat)


def bench_iova_to_phys(impl, n: int, repeat: int) -> float:
    m, dev = _setup(impl, True)
    addrs = [impl.dma_map_phys(dev, RAM + (i << 12), PAGE, DMA_TO_DEVICE, 0) for i in range(256)]
    to_phys, domain = impl.iommu_iova_to_phys, dev.domain

    def run(count: int) -> None:
        for i in range(count):
            to_phys(domain, addrs[i & 255])

    return _best(run, n, repeat)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200_000, help="operations timed on the core")
    ap.add_argument("--ref-pairs", type=int, default=5_000, help="operations timed on the reference")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rows = [
        ("map+unmap 4 KiB, strict", lambda i, n: bench_map_unmap(i, True, n, args.repeat), 1),
        ("map+unmap 4 KiB, lazy (flush queue)", lambda i, n: bench_map_unmap(i, False, n, args.repeat), 1),
        ("iova link x16+sync+destroy, strict", lambda i, n: bench_iova_link(i, True, n, args.repeat), 16),
        ("iova link x16+sync+destroy, lazy", lambda i, n: bench_iova_link(i, False, n, args.repeat), 16),
        ("iommu_iova_to_phys", lambda i, n: bench_iova_to_phys(i, n, args.repeat), 1),
    ]
    print(f"{'operation':44s} {'core ns/op':>12s} {'reference ns/op':>16s} {'ratio':>8s}")
    for name, fn, per in rows:
        c = fn(core, max(1, args.pairs // per))
        r = fn(reference, max(1, args.ref_pairs // per))
        print(f"{name:44s} {c:12.0f} {r:16.0f} {r / c:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
