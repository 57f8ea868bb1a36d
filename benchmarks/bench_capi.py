"""Per-access cost through dmaphys's C ABI (include/dmaphys.h) against the Python API.

    PYTHONPATH=$PWD python benchmarks/bench_capi.py [--n N] [--repeat R] [--quick]

Builds examples/embed (dmaring.c, and dmaring_cy.pyx: the Cython cimport path) at -O2 in a
temporary directory against the dmaphys that is imported, then times, behind an IOMMU with an
IOTLB hit (vtd-ss, strict, dma-debug off):
  - a 64-byte dma_read from a C loop through the table (api->dma_read), from Cython calling
    device_access() directly (cimport dmaphys), and dev.dma_read(iova, 64) from Python;
    the C and Cython loops run twice: holding the GIL (a C extension called from Python), and
    ("owner") in a thread that owns the machine (api->machine_enter / machine_enter) with the
    GIL released - the GIL-free path a simulator's device thread takes;
  - a translate of the same IOVA through the table (api->translate) and dev.translate() from
    Python (when this dmaphys has them);
  - the same 64-byte read on a dma-direct device.
Prints ns per call (best of R runs) and the Python/C ratios (target: C >= 10x cheaper).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import dmaphys as dma

HERE = Path(__file__).resolve().parent


def _build_module():
    path = HERE.parent / "examples" / "embed" / "build.py"
    spec = importlib.util.spec_from_file_location("_embed_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _best(fn, n, repeat):
    fn(max(1, n // 10))
    return min(fn(n) for _ in range(repeat))


def _py_loop(call, *args):
    def run(n):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            call(*args)
        return (time.perf_counter_ns() - t0) / n
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    a = ap.parse_args(argv)
    n, repeat = (2000, 1) if a.quick else (a.n, a.repeat)
    build = _build_module()
    with tempfile.TemporaryDirectory() as tmp:
        c = build.build("dmaring", Path(tmp) / "c", opt="-O2")
        cy = build.build("dmaring_cy", Path(tmp) / "cy", opt="-O2")
        m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0, cpus=1, dma_debug=False)
        dev = m.add_device("dev", iommu=m.add_iommu("vtd-ss", strict=True))
        direct = m.add_device("direct")
        phys = m.alloc_pages(1)
        iova = dma.dma_map_phys(dev, phys, 4096, dma.DMA_BIDIRECTIONAL, 0)
        assert not dma.dma_mapping_error(dev, iova)
        dev.dma_read(iova, 64)                           # fill the IOTLB
        cap, dcap = dev.capsule, direct.capsule
        rows = []

        def row(what, py, cfn):
            t_py = _best(py, n, repeat)
            t_c = _best(cfn, n, repeat)
            rows.append((what, t_py, t_c))

        row("dma_read 64 B, IOMMU, IOTLB hit", _py_loop(dev.dma_read, iova, 64),
            lambda k: c.bench_read(cap, iova, 64, k))
        py_read = rows[-1][1]
        rows.append(("  ... C, owner thread, GIL released", py_read,
                     _best(lambda k: c.bench_read(cap, iova, 64, k, True), n, repeat)))
        rows.append(("  ... Cython cimport device_access()", py_read,
                     _best(lambda k: cy.bench_read(dev, iova, 64, k), n, repeat)))
        rows.append(("  ... Cython, owner, GIL released", py_read,
                     _best(lambda k: cy.bench_read(dev, iova, 64, k, True), n, repeat)))
        if c.bench_translate(cap, iova, 1) is not None and hasattr(dev, "translate"):
            row("translate, IOMMU, IOTLB hit", _py_loop(dev.translate, iova),
                lambda k: c.bench_translate(cap, iova, k))
            rows.append(("  ... C, owner thread, GIL released", rows[-1][1],
                         _best(lambda k: c.bench_translate(cap, iova, k, True), n, repeat)))
        else:
            rows.append(("translate, IOMMU, IOTLB hit", float("nan"), float("nan")))
        row("dma_read 64 B, dma-direct", _py_loop(direct.dma_read, phys, 64),
            lambda k: c.bench_read(dcap, phys, 64, k))
        rows.append(("  ... C, owner thread, GIL released", rows[-1][1],
                     _best(lambda k: c.bench_read(dcap, phys, 64, k, True), n, repeat)))
        dma.dma_unmap_phys(dev, iova, 4096, dma.DMA_BIDIRECTIONAL, 0)
    print(f"{'path':40s} {'Python ns':>10s} {'C ABI ns':>10s} {'ratio':>7s}")
    for what, t_py, t_c in rows:
        print(f"{what:40s} {t_py:10.1f} {t_c:10.1f} {t_py / t_c:6.1f}x")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
