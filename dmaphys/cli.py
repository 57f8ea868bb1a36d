"""The ``dmaphys`` command: ``--version``, ``info``, ``stress`` (the main job), ``bench`` and ``replay``."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__


def _fmt_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def cmd_info(args: argparse.Namespace) -> int:
    import dmaphys as dma

    m = dma.Machine(cpus=args.cpus)
    print(f"dmaphys {__version__} ({dma.BACKEND} backend)")
    print(f"machine: {m.cpus} CPUs, {_fmt_size(m.mem.ram_bytes)} RAM")
    for start, size, kind, name in m.regions:
        print(f"  {start:#014x}-{start + size - 1:#014x} {kind:4s} {_fmt_size(size):>8s}  {name}")
    if m.swiotlb is not None:
        t = m.swiotlb
        print(f"swiotlb: {t.start:#x}-{t.end - 1:#x} ({_fmt_size(t.end - t.start)}), "
              f"nslabs={t.nslabs}, nareas={t.nareas}")
    else:
        print("swiotlb: not set up")
    return 0


def _backend(name: str):
    if name == "reference":
        import dmaphys.reference as dma
    else:
        import dmaphys as dma
    return dma


def _positive_int(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _scenarios(text: str) -> tuple[str, ...]:
    from .stress import SCENARIOS

    if text == "all":
        return SCENARIOS
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(bad) or text!r}; choose from {', '.join(SCENARIOS)} or 'all'")
    return names


def cmd_stress(args: argparse.Namespace) -> int:
    from . import stress

    report = stress.run(ops=args.ops, seed=args.seed, scenarios=args.scenario, duration=args.duration,
                        dma=_backend(args.backend), progress=not args.no_progress and not args.json,
                        strict=args.strict)
    if args.json:
        print(stress.to_json(report))
    else:
        print(stress.format_report(report))
    if args.plot:
        try:
            stress.plot_report(report, args.plot)
        except ImportError:
            print("dmaphys stress: --plot needs matplotlib (pip install 'dmaphys[plot]')", file=sys.stderr)
            return 2
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0 if report["integrity_errors"] == 0 else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from . import map_benchmark as mb

    msg = mb.check_tool_args(args.threads, args.seconds, args.xdelay, args.bits, args.dir, args.granule)
    if msg:
        print(msg, file=sys.stderr)
        return 1
    dma = _backend(args.backend)
    m = dma.Machine(cpus=args.cpus)
    kwargs = {}
    if args.iommu != "off":
        kwargs["iommu"] = m.add_iommu(fmt=args.fmt, strict=args.iommu == "strict")
    dev = m.add_device("dma_map_benchmark", dma_mask=dma.DMA_BIT_MASK(32), coherent=not args.noncoherent,
                       **kwargs)
    b = mb.MapBenchmark(threads=args.threads, seconds=args.seconds, node=args.node, dma_bits=args.bits,
                        dma_dir=args.dir, dma_trans_ns=args.xdelay, granule=args.granule)
    try:
        mb.map_benchmark(dev, b, dma=dma, max_loops=args.loops)
    except mb.MapBenchmarkError as e:
        print(f"ioctl: {e} ({os.strerror(e.errno)})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(b.as_dict(), indent=2))
    else:
        print(mb.format_report(b))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmaphys", description=__doc__)
    p.add_argument("--version", action="version", version=f"dmaphys {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print the default simulated machine")
    info.add_argument("--cpus", type=int, default=4)
    info.set_defaults(func=cmd_info)

    st = sub.add_parser("stress", help="the main job: a seeded mixed DMA workload, every byte checked",
                        description="Run a seeded, mixed workload over dma-direct, swiotlb, the IOMMU "
                                    "(lazy, two-step IOVA API, per-packet rings) and P2P on the default "
                                    "machine, checking every device read and write; exit 0 only when "
                                    "there are no integrity errors.")
    st.add_argument("--seed", type=int, default=1, help="RNG seed (default 1); the run is deterministic")
    st.add_argument("--ops", type=_positive_int, default=2_000_000,
                    help="operations to run (default 2,000,000)")
    st.add_argument("--duration", type=float, default=None, help="run for this many seconds instead of --ops")
    st.add_argument("--scenario", type=_scenarios, default="all",
                    help="comma-separated subset of swiotlb,direct,nic,nvme,p2p (default all)")
    st.add_argument("--strict", action="store_true", help="IOMMU in strict mode (default lazy)")
    st.add_argument("--json", action="store_true", help="print the report as JSON")
    st.add_argument("--plot", metavar="FILE.png", help="write latency histograms and occupancy plots")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    st.add_argument("--backend", choices=("core", "reference"), default="core")
    st.set_defaults(func=cmd_stress)

    be = sub.add_parser("bench", help="a twin of the kernel's dma_map_benchmark",
                        description="The kernel's tools/testing/selftests/dma/dma_map_benchmark on a "
                                    "simulated machine: same options, checks and output.")
    be.add_argument("-t", dest="threads", type=int, default=1, help="threads (1-1024)")
    be.add_argument("-s", dest="seconds", type=int, default=20, help="seconds (1-300)")
    be.add_argument("-n", dest="node", type=int, default=-1, help="NUMA node (-1 = none)")
    be.add_argument("-b", dest="bits", type=int, default=32, help="DMA mask bits (20-64)")
    be.add_argument("-d", dest="dir", type=int, default=0, help="0 BIDIRECTIONAL, 1 TO_DEVICE, 2 FROM_DEVICE")
    be.add_argument("-x", dest="xdelay", type=int, default=0, help="transmit delay in ns (0-10000000)")
    be.add_argument("-g", dest="granule", type=int, default=1, help="granule in pages (1-1024)")
    be.add_argument("--iommu", choices=("off", "strict", "lazy"), default="off",
                    help="put the device behind an IOMMU (default off: dma-direct/swiotlb)")
    be.add_argument("--fmt", default="x86-64", help="IOMMU page-table format (default x86-64)")
    be.add_argument("--noncoherent", action="store_true", help="a non-coherent device")
    be.add_argument("--cpus", type=int, default=4, help="simulated CPUs")
    be.add_argument("--loops", type=_positive_int, default=None, help="stop after this many iterations")
    be.add_argument("--json", action="store_true", help="print the results as JSON")
    be.add_argument("--backend", choices=("core", "reference"), default="core")
    be.set_defaults(func=cmd_bench)

    from .trace_replay import build_parser_args as _replay_args
    _replay_args(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
