"""Embedding paths from Python: ns per dev.translate() (IOTLB hit, behind an IOMMU; and a
dma-direct device), next to a 64-byte dev.dma_read() of the same mapped address, and a 64-byte
dma_read of embedder-owned RAM (Machine.add_ram) against machine-owned RAM, for the compiled
core and the reference model. A strict notifier that does nothing costs one call per unmap:
map+unmap pairs with and without one registered.

    PYTHONPATH=$PWD python benchmarks/bench_embed.py [--n N] [--ref-n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import dmaphys as core
import dmaphys.reference as reference

PAGE = 4096
BASE = 0x10_0000_0000


def _best(fn, n: int, repeat: int) -> float:
    fn(max(1, n // 10))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def _setup(impl, embedder_ram: bool):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, cpus=1, dma_debug=False)
    ram = np.zeros(64 * PAGE, dtype=np.uint8)
    m.add_ram(BASE, ram)
    iommu = m.add_iommu("x86-64", strict=True)
    dev = m.add_device("dev", iommu=iommu)
    direct = m.add_device("direct")
    phys = BASE if embedder_ram else m.alloc_pages(1)
    iova = impl.dma_map_phys(dev, phys, PAGE, 0, 0)
    return m, iommu, dev, direct, iova, phys, ram


def bench(impl, n: int, repeat: int) -> dict[str, float]:
    out = {}
    for label, emb in (("machine RAM", False), ("embedder RAM", True)):
        m, iommu, dev, direct, iova, phys, ram = _setup(impl, emb)
        dev.translate(iova)

        def tr(count, dev=dev, iova=iova):
            t = dev.translate
            for _ in range(count):
                t(iova)

        def rd(count, dev=dev, iova=iova):
            r = dev.dma_read
            for _ in range(count):
                r(iova, 64)

        if not emb:
            out["translate, IOMMU, IOTLB hit"] = _best(tr, n, repeat)

            def trd(count, direct=direct, phys=phys):
                t = direct.translate
                for _ in range(count):
                    t(phys)
            out["translate, dma-direct"] = _best(trd, n, repeat)
        out[f"dma_read 64 B, IOMMU, IOTLB hit, {label}"] = _best(rd, n, repeat)

    for label, with_cb in (("no notifier", False), ("one notifier", True)):
        m, iommu, dev, direct, iova, phys, ram = _setup(impl, False)
        if with_cb:
            iommu.register_notifier(lambda d, i, s: None)

        def mu(count, dev=dev, phys=phys):
            for _ in range(count):
                a = impl.dma_map_phys(dev, phys, PAGE, 1, 0)
                impl.dma_unmap_phys(dev, a, PAGE, 1, 0)
        out[f"map+unmap strict, {label}"] = _best(mu, max(1, n // 4), repeat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--ref-n", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    c = bench(core, args.n, args.repeat)
    r = bench(reference, args.ref_n, args.repeat)
    print(f"{'path':52} {'core ns':>10} {'ref ns':>10} {'ref/core':>9}")
    for k in c:
        print(f"{k:52} {c[k]:10.0f} {r[k]:10.0f} {r[k] / c[k]:8.0f}x")


if __name__ == "__main__":
    main()
