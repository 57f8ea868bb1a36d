"""`dmaphys replay` speed: events per second of trace, parse + replay, for a synthetic trace of
``--events`` DMA calls (default 1,000,000) in `trace-cmd report` text, with a sched_switch line
every eighth line (skipped), four CPUs and three devices: a 64-bit PCI NIC on dma-direct mapping
and unmapping packets, a 32-bit platform device whose buffers bounce through swiotlb (with a
sync per mapping), and an NVMe-like device.

Rows: the compiled core (its C TraceParser feeding the replay, whose frequent records run in
the compiled loop), the same replay with the straightforward pure-Python parser
(dmaphys.reference.TraceParser), and the parse alone for both; wall-clock and CPU time
(process_time: on a shared, loaded machine the CPU figure is the one to compare).
``--iommu lazy`` puts the devices behind an IOMMU.

    PYTHONPATH=$PWD python benchmarks/bench_replay.py [--events N] [--iommu off|lazy|strict]

The trace is written to a temporary file and streamed (1 MiB reads) like `dmaphys replay FILE`.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import dmaphys as core
import dmaphys.reference as reference
from dmaphys.trace_replay import Replayer

DIRS = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE")


def write_trace(path: str, events: int, seed: int = 1) -> int:
    """A trace-cmd report text of ``events`` DMA calls; returns the line count."""
    rng = random.Random(seed)
    ts = 1_000_000_000
    live = {"0000:03:00.0": [], "fe300000.mmc": [], "0000:04:00.0": []}
    pool = 0xbc000000
    lines = ["cpus=4"]
    n = 0
    slot = 0
    with open(path, "w") as f:
        while n < events:
            ts += rng.randrange(200, 2000)
            cpu = rng.randrange(4)
            sec, usec = ts // 1_000_000_000, ts % 1_000_000_000 // 1000
            head = f"        irq/45-x-{1000 + cpu:<5} [{cpu:03d}] {sec:5d}.{usec:06d}: "
            if rng.random() < 0.125:
                lines.append(head + "sched_switch:         prev_comm=a prev_pid=1 prev_prio=120 prev_state=S "
                                    "==> next_comm=b next_pid=2 next_prio=120")
                continue
            dev = rng.choice(("0000:03:00.0", "0000:03:00.0", "fe300000.mmc", "0000:04:00.0"))
            lv = live[dev]
            if lv and (len(lv) > 64 or rng.random() < 0.5):
                dma, size, d = lv.pop(rng.randrange(len(lv)))
                if dev == "fe300000.mmc" and d != 1:
                    lines.append(head + f"dma_sync_single_for_cpu: {dev} dir={DIRS[d]} dma_addr={dma:x} "
                                        f"size={size}")
                    n += 1
                lines.append(head + f"dma_unmap_phys:       {dev} dir={DIRS[d]} dma_addr={dma:x} "
                                    f"size={size} attrs=")
            else:
                size = rng.choice((64, 1500, 2048, 4096, 8192))
                d = rng.randrange(3)
                phys = 0x1_0000_0000 + rng.randrange(1 << 20) * 4096 + rng.randrange(0, 4096 - 64, 64)
                if dev == "fe300000.mmc":                  # a 32-bit device: the buffer bounces
                    dma = pool + (slot % 4096) * 0x4000
                    slot += 1
                    lines.append(head + f"swiotlb_bounced:      dev_name: {dev} dma_mask=ffffffff "
                                        f"dev_addr={phys:x} size={size} NORMAL")
                else:
                    dma = phys
                lines.append(head + f"dma_map_phys:         {dev} dir={DIRS[d]} dma_addr={dma:x} size={size} "
                                    f"phys_addr={phys:x} attrs=")
                lv.append((dma, size, d))
            n += 1
            if len(lines) > 50_000:
                f.write("\n".join(lines) + "\n")
                lines = []
        f.write("\n".join(lines) + "\n")
    with open(path, "rb") as f:
        return sum(1 for _ in f)


SPEC = {"devices": {"fe300000.mmc": {"dma_mask": 32}}}


def run(path: str, parser_cls, iommu: str) -> tuple[float, float, dict]:
    r = Replayer(core, SPEC, iommu=iommu, touch=False)
    if parser_cls is not None:
        core_parser = core.TraceParser
        core.TraceParser = parser_cls                  # the same replay, another parser
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        r.run(path)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if parser_cls is not None:
            core.TraceParser = core_parser
    return dt, cpu, r.report()


def parse_only(path: str, parser_cls) -> tuple[float, float, int]:
    p = parser_cls()
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += len(p.feed(b))
    n += len(p.finish())
    return time.perf_counter() - t0, time.process_time() - c0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--iommu", choices=("off", "strict", "lazy"), default="off")
    ap.add_argument("--skip-python", action="store_true", help="only the compiled parser")
    args = ap.parse_args()
    fd, path = tempfile.mkstemp(suffix=".txt", prefix="dmaphys-replay-")
    os.close(fd)
    try:
        nlines = write_trace(path, args.events)
        print(f"trace: {args.events:,} DMA calls, {nlines:,} lines, {os.path.getsize(path) / 2**20:.0f} MiB; "
              f"IOMMU {args.iommu}")
        print(f"{'':21}{'wall s':>8}{'events/s (wall)':>17}{'CPU s':>8}{'events/s (CPU)':>16}")

        def row(what, wall, cpu, n):
            print(f"{what:<21}{wall:8.2f}{n / wall:>17,.0f}{cpu:8.2f}{n / cpu:>16,.0f}")

        dt, cpu, rep = run(path, None, args.iommu)
        ev = rep["events"]
        row("core parse+replay", dt, cpu, ev)
        pdt, pcpu, pn = parse_only(path, core.TraceParser)
        row("core parse only", pdt, pcpu, pn)
        if not args.skip_python:
            dt2, cpu2, rep2 = run(path, reference.TraceParser, args.iommu)
            row("python parse+replay", dt2, cpu2, rep2["events"])
            pdt2, pcpu2, pn2 = parse_only(path, reference.TraceParser)
            row("python parse only", pdt2, pcpu2, pn2)
            print(f"core vs pure-Python parse: parse+replay {cpu2 / cpu:.2f}x, parse {pcpu2 / pcpu:.1f}x "
                  f"(CPU time)")
            assert rep2["events"] == ev and pn2 == pn
        print(f"address agreement {rep['address_agreement']}, findings {rep['findings_total']} "
              f"({rep['finding_kinds']})")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
