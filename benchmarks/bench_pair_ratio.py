"""The IOMMU batch pair against the C loop, interleaved (issue 10 item 1).

run_all.py times cfloor.c once and the batch rows later; on a shared machine a busy moment
during either moves the ratio. This script alternates them K times (default 9): cfloor's
IOMMU loop (3*10^6 pairs) and each row -- dma_map_phys_batch + dma_unmap_phys_batch of 4096
4 KiB pages, 20 calls, strict and lazy, 10^3 and 10^5 live mappings, dma-debug off (the rigs
of run_all.py) -- and prints the best of each and batch / C.

    python benchmarks/bench_pair_ratio.py [K]
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_all as ra  # noqa: E402

import dmaphys as dma  # noqa: E402


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    src, note = ra.find_cfloor()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if src is None or not cc:
        sys.exit(note if src is None else "no C compiler (cc) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "cfloor")
        subprocess.run([cc, "-O2", "-o", exe, str(src)], check=True)

        def c_loop():
            out = subprocess.run([exe, str(3 * 10**6)], check=True, capture_output=True, text=True).stdout
            return float(out.splitlines()[0].split(":")[1].split()[0])

        rigs = {}
        for path in ("iommu-strict", "iommu-lazy"):
            for live in (1000, 100000):
                m, dev = ra.machine(dma, path, live, False)
                ra.build_live(dma, dev, ra.phys_for(live, 1 << 30, 1 << 18))
                work = ra.phys_for(ra.CHUNK, (1 << 30) + (live << 12) % (1 << 30), 1 << 18)
                rigs[(path, live)] = (m, dev, work)
        best = dict.fromkeys(rigs, float("inf"))
        c_best = float("inf")
        for _ in range(k):
            c_best = min(c_best, c_loop())
            for key, (_m, dev, work) in rigs.items():
                best[key] = min(best[key], ra.time_pairs_batch(dma, dev, work, 20))
    print(f"load average {os.getloadavg()[0]:.2f}; C loop ({src}) best of {k}: {c_best:.2f} ns per pair")
    for (path, live), ns in best.items():
        print(f"{path:13s} {live:>7,d} live: {ns:6.2f} ns per pair = {ns / c_best:.2f}x the C loop"
              " (target <= 3x)")


if __name__ == "__main__":
    main()
