"""The ``dmaphys`` command: ``--version``, ``info``, ``stress`` (the main job) and ``bench``."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmaphys", description=__doc__)
    p.add_argument("--version", action="version", version=f"dmaphys {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print the default simulated machine")
    info.add_argument("--cpus", type=int, default=4)
    info.set_defaults(func=cmd_info)
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
