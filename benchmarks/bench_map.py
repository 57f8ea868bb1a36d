"""Streaming-mapping speed: ns per dma_map_phys + dma_unmap_phys pair, core vs reference.

    PYTHONPATH=. python benchmarks/bench_map.py [--quick]

Rows (all 4 KiB, DMA_BIDIRECTIONAL, through the per-call Python API):
  direct          64-bit coherent device: dma-direct, no bounce, no cache maintenance;
  direct-nc       the same on a non-coherent device (arch_sync_dma_for_device / _for_cpu);
  swiotlb         32-bit device mapping RAM above 4 GiB: every pair takes a swiotlb slot,
                  copies 4 KiB in at map and 4 KiB back at unmap, and frees the slot;
  swiotlb-skip    the same with DMA_ATTR_SKIP_CPU_SYNC (map still copies in, unmap does not).
Columns: the pair on the compiled core, on the reference model, and their ratio. dma-debug
is off (its bookkeeping is measured by its own benchmark). Best of three runs.
"""

from __future__ import annotations

import argparse
import time

import dmaphys
import dmaphys.reference as reference

GiB = 1 << 30
SIZE = 4096
CASES = {
    # name: (device kwargs, phys, attrs)
    "direct": (dict(), 0x10_0000, 0),
    "direct-nc": (dict(coherent=False), 0x10_0000, 0),
    "swiotlb": (dict(dma_mask=(1 << 32) - 1), 4 * GiB + 0x10_0000, 0),
    "swiotlb-skip": (dict(dma_mask=(1 << 32) - 1), 4 * GiB + 0x10_0000, dmaphys.DMA_ATTR_SKIP_CPU_SYNC),
}


def setup(impl, kw, phys):
    m = impl.Machine(ram=[(0, GiB), (4 * GiB, GiB)], swiotlb=64 << 20, dma_debug=False)
    dev = m.add_device("bench", **kw)
    m.mem_write(phys, bytes(range(256)) * (SIZE // 256))      # real data to bounce
    return dev


def pairs(impl, dev, phys, attrs, n):
    map_phys, unmap_phys = impl.dma_map_phys, impl.dma_unmap_phys
    bidi = dmaphys.DMA_BIDIRECTIONAL
    best = None
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            unmap_phys(dev, map_phys(dev, phys, SIZE, bidi, attrs), SIZE, bidi, attrs)
        dt = (time.perf_counter_ns() - t0) / n
        best = dt if best is None else min(best, dt)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args(argv)
    n_core, n_ref = (20_000, 1_000) if args.quick else (200_000, 10_000)
    print(f"{'path':>13} {'core ns/pair':>13} {'ref ns/pair':>12} {'ref/core':>9}")
    for name, (kw, phys, attrs) in CASES.items():
        cdev, rdev = setup(dmaphys, kw, phys), setup(reference, kw, phys)
        # sanity: both backends bounce (or not) the same way
        a_c = dmaphys.dma_map_phys(cdev, phys, SIZE, dmaphys.DMA_BIDIRECTIONAL, attrs)
        a_r = reference.dma_map_phys(rdev, phys, SIZE, dmaphys.DMA_BIDIRECTIONAL, attrs)
        assert a_c == a_r != dmaphys.DMA_MAPPING_ERROR, (name, a_c, a_r)
        dmaphys.dma_unmap_phys(cdev, a_c, SIZE, dmaphys.DMA_BIDIRECTIONAL, attrs)
        reference.dma_unmap_phys(rdev, a_r, SIZE, dmaphys.DMA_BIDIRECTIONAL, attrs)
        t_core = pairs(dmaphys, cdev, phys, attrs, n_core)
        t_ref = pairs(reference, rdev, phys, attrs, n_ref)
        print(f"{name:>13} {t_core:13.0f} {t_ref:12.0f} {t_ref / t_core:9.1f}")


if __name__ == "__main__":
    main()
