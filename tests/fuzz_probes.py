"""Bad-input probes over the whole public API (tests/test_fuzz.py runs this file in child processes).

    python tests/fuzz_probes.py BACKEND SEED START COUNT

builds one probe machine with the BACKEND ("core" or "reference") and runs probes START..START+COUNT-1
of the stream SEED on it, in order, printing one JSON line per probe as soon as it returns:
``[index, outcome, state_kept]`` where outcome is "ok" or the exception type's name and state_kept
says whether the state snapshot after a raised exception equals the one before. A probe that
kills the process (segfault, abort, SIGFPE) is the first index with no line.

A probe is one call: a public function of ``__all__`` or a public method of one of the machine's
objects, with 0..6 arguments drawn from a pool of good objects and bad values. The stream depends
only on SEED and the index (not on the backend), so both backends run the same calls on machines
built the same way and must end each probe the same way.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import random
import sys
import warnings

# class constructors whose cost grows with an argument (pool sizes, IOTLB geometry) or that build
# whole machines: probed by tests/test_harden.py with chosen arguments, not drawn at random
SKIP_CALLABLES = {"Machine", "Iotlb", "IovaDomain", "IoPgtable", "Iommu", "DmaDebug", "DmaTrace",
                  "P2PTopology", "Device", "IoTlbMem", "PhysMem",
                  # made only by the machine (the core refuses T(...) / T.__new__(T), see test_harden.py)
                  "PciHostBridge", "PciSwitch", "PciDev", "PciP2Pdma", "P2PdmaProvider", "PciP2PdmaPagemap",
                  "IommuDomain", "IommuDmaCookie", "IovaFq", "ScatterlistEntry"}
# methods that print or take time proportional to an argument rather than validate it, and
# put_iova_domain(), which tears down the allocator of a live DMA domain: every later call on
# that domain is a KernelBug by design (the kernel's use-after-free)
SKIP_METHODS = {"dump", "to_numpy", "to_ftrace", "events", "walk", "formats", "put_iova_domain"}
HOLE = 80 << 30


def _mod(backend: str):
    return importlib.import_module("dmaphys" if backend == "core" else "dmaphys.reference")


def build_pool(dma) -> dict:
    """The probe machine: dma-direct, bouncing, IOMMU (lazy) and P2P devices, and their objects."""
    m = dma.Machine(swiotlb=1 << 20)
    iommu = m.add_iommu(fmt="x86-64", strict=False)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb)
    gpu = m.add_device("gpu", parent=sw)
    nic = m.add_device("nic", parent=sw, iommu=iommu)
    d64 = m.add_device("d64")
    d32 = m.add_device("d32", dma_mask=0xFFFFFFFF)
    gone = m.add_device("gone")
    m.remove_device(gone)
    cmb = m.add_p2pmem(gpu, 0x38_0000_0000, 1 << 20, bus_addr=0x8_0000_0000)
    hi = m.alloc_pages(2)
    lo = m.alloc_pages(1, limit=1 << 32)
    m.mem_write(hi, b"probe data")
    sg = dma.ScatterList([(hi, 4096), (lo + 8, 100)])
    state = dma.DmaIovaState()
    udom = iommu.domain_alloc()
    # an io-pgtable-arm table with a non-coherent walker (table syncs, the CPU's cache model)
    ncdom = m.add_iommu(fmt="arm-lpae-s1-4k", coherent_walk=False).domain_alloc()
    dma.iommu_map(ncdom, 0x100000, hi, 4096, 3)
    mapped = dma.dma_map_phys(d32, hi, 4096, 0, 0)                # DMA_BIDIRECTIONAL, bounced
    return {"m": m, "iommu": iommu, "hb": hb, "sw": sw, "gpu": gpu, "nic": nic, "d64": d64, "d32": d32,
            "gone": gone, "cmb": cmb, "hi": hi, "lo": lo, "sg": sg, "sge": sg[1], "state": state,
            "udom": udom,
            "dom": nic.domain, "cookie": nic.domain.iova_cookie, "iovad": nic.domain.iova_cookie.iovad,
            "pgtable": nic.domain.pgtable, "iotlb": iommu.iotlb, "swiotlb": m.swiotlb, "debug": m.dma_debug,
            "trace": m.trace, "p2p": m.p2pdma, "mem": m.mem, "prov": cmb.mem, "mapped": mapped,
            "pstate": dma.PciP2PdmaMapState(), "ncpt": ncdom.pgtable}


# argument values: names of pool objects, or literal bad values
POOL_ARGS = ["m", "iommu", "gpu", "nic", "d64", "d32", "gone", "cmb", "hi", "lo", "sg", "sge", "state",
             "udom", "dom", "mapped", "pstate", "hb", "prov", "iovad", "pgtable"]
LITERALS = [0, 1, 2, 4096, 4097, 0x1000, HOLE, -1, -4096, 1 << 63, (1 << 64) - 1, 1 << 64, 1 << 70,
            0xFFFFFFFF, 0x1_0000_0000 - 4096, None, True, 1.5, math.nan, math.inf, "x", "", b"abcd",
            [], [0], [(0, 4096)], (1, 2), {}, object(), [1 << 64], [-1], "dma", 12, 64, 3, 1 << 20]
N_VALUES = len(POOL_ARGS) + len(LITERALS)

# objects whose public methods are probed
METHOD_OWNERS = ["m", "iommu", "gpu", "nic", "d32", "gone", "cmb", "sg", "sge", "state", "udom", "dom",
                 "cookie", "iovad", "pgtable", "iotlb", "swiotlb", "debug", "trace", "p2p", "mem", "prov",
                 "pstate", "hb", "sw", "ncpt"]


def _public(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("_"))


def callables(core, ref, pools: tuple[dict, dict] | None = None) -> list[tuple]:
    """The probe targets, the same list for both backends (names both have)."""
    out: list[tuple] = []
    for name in sorted(set(core.__all__) & set(ref.__all__)):
        if name in SKIP_CALLABLES or not callable(getattr(core, name)):
            continue
        out.append(("fn", name))
    for owner in METHOD_OWNERS:
        # the classes of the pool objects, by name in each backend
        cname = OWNER_CLASSES[owner]
        if cname is None:
            continue
        cc, rc = getattr(core, cname, None), getattr(ref, cname, None)
        if cc is None or rc is None:
            continue
        names = set(_public(dir(cc))) & set(_public(dir(rc)))
        for meth in sorted(names - SKIP_METHODS):
            if callable(getattr(cc, meth, None)) and callable(getattr(rc, meth, None)) \
                    and not isinstance(getattr(cc, meth), type):
                out.append(("meth", owner, meth))
    return out


OWNER_CLASSES = {"m": "Machine", "iommu": "Iommu", "gpu": "Device", "nic": "Device", "d32": "Device",
                 "gone": "Device", "cmb": "PciP2PdmaPagemap", "sg": "ScatterList", "sge": "ScatterlistEntry",
                 "state": "DmaIovaState", "udom": "IommuDomain", "dom": "IommuDomain",
                 "cookie": "IommuDmaCookie", "iovad": "IovaDomain", "pgtable": "IoPgtable", "iotlb": "Iotlb",
                 "swiotlb": "IoTlbMem", "debug": "DmaDebug", "trace": "DmaTrace", "p2p": "P2PTopology",
                 "mem": "PhysMem", "prov": "P2PdmaProvider", "pstate": "PciP2PdmaMapState",
                 "hb": "PciHostBridge", "sw": "PciSwitch", "ncpt": "IoPgtable"}


GOOD_INTS = [POOL_ARGS.index("hi"), POOL_ARGS.index("lo"), POOL_ARGS.index("mapped")] + \
    [len(POOL_ARGS) + LITERALS.index(v) for v in (0, 1, 4096, 2, 0x1000)]
OBJECTS = [i for i, n in enumerate(POOL_ARGS) if n not in ("hi", "lo", "mapped")]


def _arity(ref, target) -> tuple[int, int]:
    fn = getattr(ref, target[1], None) if target[0] == "fn" else \
        getattr(getattr(ref, OWNER_CLASSES[target[1]]), target[2], None)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 0, 6
    if target[0] == "meth" and params and params[0].name == "self":
        params = params[1:]
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in pos), len(pos)


def probe(seed: int, index: int, targets: list[tuple], ref) -> tuple[tuple, list[int]]:
    """Probe ``index`` of stream ``seed``: a target and the value indices of its arguments.

    Mostly the target's own arity and plausible values with one bad one, so calls get past
    their first check; sometimes any number of arbitrary values."""
    rng = random.Random(seed * 1_000_003 + index)
    target = targets[rng.randrange(len(targets))]
    lo, hi = _arity(ref, target)
    if rng.random() < 0.15:
        return target, [rng.randrange(N_VALUES) for _ in range(rng.randrange(7))]
    nargs = rng.randint(lo, hi)
    args = [rng.choice(GOOD_INTS) if rng.random() < 0.6 else rng.choice(OBJECTS) for _ in range(nargs)]
    for _ in range(rng.choice((0, 1, 1, 2))):
        if args:
            args[rng.randrange(nargs)] = rng.randrange(N_VALUES)
    return target, args


def value(pool: dict, i: int):
    if i < len(POOL_ARGS):
        return pool[POOL_ARGS[i]]
    return LITERALS[i - len(POOL_ARGS)]


def _pt_state(pt) -> dict:
    s = pt.get_state()
    for counter in ("walk_reads", "leaf_writes"):          # statistics, not state
        s.pop(counter, None)
    return s


def snapshot(pool: dict):
    """What a call that raised must leave as it found: resources and mappings, not statistics."""
    m = pool["m"]
    out: list = [m.mem.allocated_pages, sorted(m.devices), len(m.dma_debug)]
    if m.swiotlb is not None:
        s = m.swiotlb.get_state()
        out.append((s["total_used"], sorted(s["slots"].items()), [u for u, _ in s["areas"]]))
    for iommu in m.iommus:
        for dom in iommu.domains:
            cookie = dom.iova_cookie
            pt = dom.pgtable
            out.append((dom.id, dom.freed, sorted(d.name for d in dom.devices),
                        _pt_state(pt) if pt is not None and not dom.freed else None,
                        cookie.iovad.get_state()["ranges"] if cookie is not None and cookie.iovad is not None
                        else None))
    st = pool["state"]
    out.append((st.addr, st.size))
    return out


def run(backend: str, seed: int, start: int, count: int) -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("dmaphys").setLevel(logging.CRITICAL + 1)
    import dmaphys
    import dmaphys.reference

    dma = _mod(backend)
    targets = callables(dmaphys, dmaphys.reference)
    pool = build_pool(dma)
    for index in range(start, start + count):
        target, args = probe(seed, index, targets, dmaphys.reference)
        fn = getattr(dma, target[1]) if target[0] == "fn" else getattr(pool[target[1]], target[2])
        argv = [value(pool, a) for a in args]
        before = snapshot(pool)
        try:
            fn(*argv)
            outcome, kept = "ok", True
        except Exception as e:  # noqa: BLE001 - the probe records every exception type
            outcome = type(e).__name__
            try:
                kept = snapshot(pool) == before
            except Exception as e2:  # noqa: BLE001
                outcome, kept = f"{outcome}/snapshot:{type(e2).__name__}", False
        sys.stdout.write(json.dumps([index, outcome, kept]) + "\n")
        sys.stdout.flush()


def describe(seed: int, index: int) -> str:
    import dmaphys
    import dmaphys.reference

    targets = callables(dmaphys, dmaphys.reference)
    target, args = probe(seed, index, targets, dmaphys.reference)
    argv = [POOL_ARGS[a] if a < len(POOL_ARGS) else repr(LITERALS[a - len(POOL_ARGS)]) for a in args]
    call = target[1] if target[0] == "fn" else f"{target[1]}.{target[2]}"
    return f"{call}({', '.join(argv)})"


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
