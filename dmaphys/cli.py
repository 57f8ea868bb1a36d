"""The ``dmaphys`` command: ``--version``, ``info``, ``stress`` (the main job), ``bench``, ``sweep``,
``plot`` and ``replay``."""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__


def _fmt_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def cmd_info(args: argparse.Namespace) -> int:
    """``dmaphys info``: print the default machine's memory map and swiotlb pool.

    Simulator-only (the CLI; like /proc/iomem and the kernel's swiotlb boot line). Returns 0.
    Raises ValueError for ``args.cpus`` outside 1..1024 (argparse checks it first).
    """
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


def _cpus(text: str) -> int:
    v = _positive_int(text)
    if v > 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 1024 CPUs")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r}: the seed is an integer in 0..2^64-1")
    return v


def _duration(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be a finite number of seconds > 0")
    return v


def _dma_api_formats() -> list[str]:
    """Page-table formats a DMA-API device can use: granule <= PAGE_SIZE (init_iova_domain BUG_ONs)."""
    from .reference.io_pgtable import IOPGTABLE_FORMATS

    return [name for name, f in IOPGTABLE_FORMATS.items() if f.granule <= 4096]


def _check_plot_path(path: str) -> str | None:
    """Why ``--plot path`` cannot be written (checked before the run), or None."""
    if os.path.isdir(path):
        return f"--plot {path}: is a directory; give a file name such as {os.path.join(path, 'stress.png')}"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"--plot {path}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"--plot {path}: not writable"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib (pip install 'dmaphys[plot]')"
    return None


def comma_list(text: str, known, what: str, choose: str) -> tuple[str, ...]:
    """Parse a comma-separated argument of names from ``known`` (argparse type helper).

    Simulator-only (the CLI). Returns the names as a tuple, in the given order. Raises
    argparse.ArgumentTypeError for an unknown name or an empty list (``choose`` ends the message).
    """
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or text!r}; {choose}")
    return names


def _scenarios(text: str) -> tuple[str, ...]:
    from .stress import SCENARIOS

    if text == "all":
        return SCENARIOS
    return comma_list(text, SCENARIOS, "scenario", f"choose from {', '.join(SCENARIOS)} or 'all'")


def cmd_stress(args: argparse.Namespace) -> int:
    """``dmaphys stress``: run the main job and print its report (or JSON), maybe a plot.

    Simulator-only (the CLI). Returns the exit code: 0 no integrity errors, 1 integrity errors,
    130 interrupted (the report so far is printed). Raises SystemExit(2) through
    ``args.parser.error()`` for --ops with --duration or an unusable --plot path.
    """
    from . import stress

    if args.ops is not None and args.duration is not None:
        args.parser.error("give --ops or --duration, not both")
    if args.plot:
        why = _check_plot_path(args.plot)
        if why:
            args.parser.error(why)
    ops = stress.DEFAULT_OPS if args.ops is None else args.ops
    # the progress bar only on a terminal: redraws into a file or pipe are noise
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    report = stress.run(ops=ops, seed=args.seed, scenarios=args.scenario, duration=args.duration,
                        dma=_backend(args.backend), progress=progress, strict=args.strict)
    if args.json:
        print(stress.to_json(report))
    else:
        print(stress.format_report(report))
    if args.plot:
        stress.plot_report(report, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    if report.get("interrupted"):
        return 130                                     # the shell's code for SIGINT
    return 0 if report["integrity_errors"] == 0 else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """``dmaphys bench``: the twin of tools/testing/selftests/dma/dma_map_benchmark.c.

    Models the tool's main() over kernel/dma/map_benchmark.c (see map_benchmark()). Returns the
    exit code: 0, or 1 for the tool's own range checks and an ioctl error (with its message).
    Raises SystemExit(2) through ``args.parser.error()`` for a --fmt a DMA-API device cannot use.
    """
    import json

    from . import map_benchmark as mb

    msg = mb.check_tool_args(args.threads, args.seconds, args.xdelay, args.bits, args.dir, args.granule)
    if msg:
        print(msg, file=sys.stderr)
        return 1
    if args.iommu != "off" and args.fmt not in _dma_api_formats():
        args.parser.error(f"--fmt {args.fmt}: a DMA-API device needs a page-table format with a 4 KiB "
                          f"granule (the IOVA allocator's granule must not exceed PAGE_SIZE); choose from "
                          f"{', '.join(_dma_api_formats())}")
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
    """The ``dmaphys`` argument parser with every subcommand.

    Simulator-only (the CLI). Returns the parser. Raises nothing.
    """
    p = argparse.ArgumentParser(prog="dmaphys", description=__doc__)
    p.add_argument("--version", action="version", version=f"dmaphys {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print the default simulated machine")
    info.add_argument("--cpus", type=_cpus, default=4)
    info.set_defaults(func=cmd_info)

    st = sub.add_parser("stress", help="the main job: a seeded mixed DMA workload, every byte checked",
                        description="Run a seeded, mixed workload over dma-direct, swiotlb, the IOMMU "
                                    "(lazy, two-step IOVA API, per-packet rings) and P2P on the default "
                                    "machine, checking every device read and write; exit 0 only when "
                                    "there are no integrity errors.")
    st.add_argument("--seed", type=_seed, default=1, help="RNG seed (default 1); the run is deterministic")
    st.add_argument("--ops", type=_positive_int, default=None,
                    help="operations to run (default 2,000,000)")
    st.add_argument("--duration", type=_duration, default=None,
                    help="run for this many seconds instead of --ops")
    st.add_argument("--scenario", type=_scenarios, default="all",
                    help="comma-separated subset of swiotlb,direct,nic,nvme,p2p (default all)")
    st.add_argument("--strict", action="store_true", help="IOMMU in strict mode (default lazy)")
    st.add_argument("--json", action="store_true", help="print the report as JSON")
    st.add_argument("--plot", metavar="FILE.png", help="write latency histograms and occupancy plots")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    st.add_argument("--backend", choices=("core", "reference"), default="core")
    st.set_defaults(func=cmd_stress, parser=st)

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
    be.add_argument("--cpus", type=_cpus, default=4, help="simulated CPUs (1-1024)")
    be.add_argument("--loops", type=_positive_int, default=None, help="stop after this many iterations")
    be.add_argument("--json", action="store_true", help="print the results as JSON")
    be.add_argument("--backend", choices=("core", "reference"), default="core")
    be.set_defaults(func=cmd_bench, parser=be)

    from . import sweep  # `sweep` and `plot` live there (Dask imported lazily)
    sweep.add_parsers(sub)

    from .trace_replay import build_parser_args as _replay_args
    _replay_args(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``dmaphys`` command: parse ``argv`` (default sys.argv[1:]) and run the subcommand.

    Simulator-only (the CLI). Returns the exit code (2 without a subcommand, 130 on Ctrl-C, 0
    when the reader of stdout went away). Raises SystemExit for --help, --version and usage
    errors (argparse's exit codes 0 / 2).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:                          # Ctrl-C outside a run's loop: no traceback
        print("dmaphys: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                            # `dmaphys ... | head`: the reader left
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())      # so the interpreter's final flush is quiet too
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
