"""P2PDMA cost: the map-type hook in dma_map_sg and the switch routing of device accesses.

    PYTHONPATH=. python benchmarks/bench_p2pdma.py [--quick]

Rows (dma-direct device below a switch, dma-debug off, best of three runs):
  sg-ram          dma_map_sg + dma_unmap_sg of 8 RAM entries on a machine without P2P memory;
  sg-ram+p2p      the same 8 RAM entries once four P2P pagemaps exist (each entry is looked up);
  sg-bus-addr     8 entries of a peer's P2P memory below the same switch (cached BUS_ADDR);
  write-ram       an 8-byte device write to RAM, no BAR windows on the machine;
  write-ram+p2p   the same with four BAR windows to check first;
  write-peer      an 8-byte device write to a peer's bus address (routed by the switch).
Columns: ns per operation on the compiled core, on the reference model, and their ratio.
"""

from __future__ import annotations

import argparse
import time

import dmaphys
import dmaphys.reference as reference

BAR = 0xE000_0000
BUS = 0x8_0000_0000
N_SG = 8


def setup(impl, p2p):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, dma_debug=False)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"))
    gpu, nic = m.add_device("gpu", parent=sw), m.add_device("nic", parent=sw)
    if p2p:
        for i in range(4):
            m.add_p2pmem(gpu, BAR + i * (1 << 24), 1 << 20, bus_addr=BUS + i * (1 << 24))
    return m, nic


def best_of_three(fn, n):
    best = None
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = (time.perf_counter_ns() - t0) / n
        best = dt if best is None else min(best, dt)
    return best


def case(impl, name, n):
    p2p = name.endswith("+p2p") or name in ("sg-bus-addr", "write-peer")
    m, nic = setup(impl, p2p)
    if name.startswith("sg"):
        base = BAR + 3 * (1 << 24) if name == "sg-bus-addr" else 0x10_0000
        sg = impl.ScatterList([(base + i * 0x1000, 0x1000) for i in range(N_SG)])
        bidi = dmaphys.DMA_BIDIRECTIONAL

        def op():
            impl.dma_map_sg(nic, sg, N_SG, bidi)
            impl.dma_unmap_sg(nic, sg, N_SG, bidi)
    else:
        addr = BUS + 3 * (1 << 24) + 0x40 if name == "write-peer" else 0x10_0040
        data = b"12345678"

        def op():
            nic.dma_write(addr, data)
    op()                                               # fill the map-type cache
    return best_of_three(op, n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args(argv)
    n_core, n_ref = (5_000, 500) if args.quick else (100_000, 5_000)
    print(f"{'case':>14} {'core ns/op':>11} {'ref ns/op':>10} {'ref/core':>9}")
    for name in ("sg-ram", "sg-ram+p2p", "sg-bus-addr", "write-ram", "write-ram+p2p", "write-peer"):
        core = case(dmaphys, name, n_core)
        ref = case(reference, name, n_ref)
        print(f"{name:>14} {core:11.0f} {ref:10.0f} {ref / core:9.1f}")


if __name__ == "__main__":
    main()
