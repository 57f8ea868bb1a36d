"""Per-call vs numpy-batch speed of the mapping paths, with live-set size, targets and peak RSS.

    PYTHONPATH=. python benchmarks/run_all.py [--big] [--json] [--quick] [--dma-debug]

Rows: a path and the number of live mappings held while it is measured (10^3, 10^5; 10^7
with --big). Each row runs in its own child process per backend, so the RSS column
(getrusage(RUSAGE_SELF).ru_maxrss of the core's child) is that row's alone.
The live set is built with batch calls.
  direct        dma_map_phys + dma_unmap_phys pair, 4 KiB, 64-bit coherent device (dma-direct)
  swiotlb       the same on a 32-bit device mapping RAM above 4 GiB, DMA_BIDIRECTIONAL: each
                pair takes a slot, copies 4 KiB in at map and 4 KiB back at unmap
  iommu-strict  4 KiB pair through dma-iommu, strict invalidation (IOVA alloc, PTE install,
  iommu-lazy    unmap + IOTLB flush / flush-queue entry)
  link64        two-step API: dma_iova_try_alloc, 64 x dma_iova_link 4 KiB, one dma_iova_sync,
                dma_iova_destroy (when dma-iommu's two-step API is on this branch)
  iova2phys     iommu_iova_to_phys of a live IOVA (batch: iommu_iova_to_phys_batch)
Columns: ns per operation (pair / translation) through the per-call Python API and through the
batch API (chunks of 4096), the reference model's figures (10^3 live only: it is ~1000x
slower), ref/core = the faster of the two reference figures / core batch, the targets, and
the row's peak RSS. Best of three runs.

dma-debug is OFF in every row unless --dma-debug is given (then only for rows up to 10^5):
with it on, every map also inserts into and every unmap searches dma-debug's hash, which
the targets do not include, and 10^7 live entries would be another ~1.3 GiB.
A row whose path is not on this branch yet (IOMMU, two-step API) prints "n/a".

The C floor (issue 10): the same run builds cfloor.c with ``cc -O2`` (``$CC`` if set) and runs
it -- a plain C loop doing the minimum work of each operation (IOVA from a per-CPU magazine
and a 4-level radix install + clear; an offset add and a mask check; two 4 KiB memcpys) --
and prints its ns per pair beside the batch figures, with batch/C per path. It looks for
``<repo>/../shared/cfloor.c`` (the team-shared original) and falls back to the copy vendored
as ``benchmarks/cfloor.c``; without either file or a C compiler it prints a note instead.
Then two extra figures: two threads each driving their own Machine through batch calls
against one thread (the throughput ratio, IOMMU strict, lazy and dma-direct; >= 1.7x needs
batch loops that release the GIL), beside the same ratio for a plain C loop in the same run
(cthreads.c: what the machine gives two threads at that moment -- cfloor's IOMMU loop, and
for dma-direct a plain C batch loop of the same shape; ``--chunk`` sets the pairs per
batch call, default 4096; ``--threads-only`` prints just this figure),
and ``dmaphys stress``'s ops/s (default 2,000,000 operations; 100,000 with --quick).
Nothing here fails on timing: misses print as MISS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GiB = 1 << 30
MiB = 1 << 20
SIZE = 4096
CHUNK = 4096                         # batch size of the timed batch calls
BIDI = 0                             # DMA_BIDIRECTIONAL
# path -> (per-call target ns, batch target ns); None: no target given
TARGETS = {
    "direct": (500, 10),
    "swiotlb": (None, 600),
    "iommu-strict": (1000, 40),
    "iommu-lazy": (1000, 40),
    "link64": (None, None),
    "iova2phys": (None, 15),
}
RATIO_TARGET = 100                   # ref-batch / core-batch on batch paths
RSS_TARGET_MIB = 1536                # 10^7 live 4 KiB IOMMU mappings
# issue 10: batch pair / C loop (path -> (cfloor line, target ratio or None)); per-call pair ns;
# two-thread scaling; dmaphys stress ops/s
C_LOOP = {"direct": ("direct", None), "swiotlb": ("bounce", None),
          "iommu-strict": ("iommu", 3.0), "iommu-lazy": ("iommu", 3.0)}
CALL_TARGETS_10 = {"direct": 150, "iommu-strict": 200, "iommu-lazy": 200}
THREADS_TARGET = 1.7
STRESS_TARGET = 850_000
REPO = Path(__file__).resolve().parent.parent


class NotOnBranch(Exception):
    pass


# ---- one row (runs in a child process) --------------------------------------------------------
def machine(impl, path, live, dma_debug):
    pool = 64 * MiB
    if path == "swiotlb":             # room for the live set + one chunk, 2 slots per 4 KiB
        pool = max(pool, 1 << (2 * (live + CHUNK) * 2048 - 1).bit_length())
    m = impl.Machine(ram=[(0, 3 * GiB), (4 * GiB, 13 * GiB)], swiotlb=pool, dma_debug=dma_debug)
    if path == "direct":
        dev = m.add_device("bench")
    elif path == "swiotlb":
        dev = m.add_device("bench", dma_mask=(1 << 32) - 1)
    else:
        iommu = m.add_iommu(strict=(path != "iommu-lazy"))
        dev = m.add_device("bench", iommu=iommu)
    return m, dev


def phys_for(n, base, span_pages):
    """n page-aligned physical addresses cycling through span_pages pages from base."""
    pages = np.arange(n, dtype=np.uint64) % np.uint64(span_pages)
    return (np.uint64(base) + pages * np.uint64(SIZE)).astype(np.uint64)


def build_live(impl, dev, phys):
    """The live set, built with batch calls (in chunks, to bound the temporary arrays)."""
    out = []
    for i in range(0, phys.shape[0], 1 << 20):
        a = impl.dma_map_phys_batch(dev, phys[i:i + (1 << 20)], SIZE, BIDI, 0)
        if (a == np.uint64((1 << 64) - 1)).any():
            raise MemoryError("a live-set mapping failed")
        out.append(a)
    return np.concatenate(out) if out else np.empty(0, dtype=np.uint64)


def best_of(fn, reps=3):
    return min(fn() for _ in range(reps))


def time_pairs_per_call(impl, dev, phys, n):
    map_phys, unmap_phys = impl.dma_map_phys, impl.dma_unmap_phys
    ps = [int(p) for p in phys[:n]]

    def run():
        t0 = time.perf_counter_ns()
        for p in ps:
            unmap_phys(dev, map_phys(dev, p, SIZE, BIDI, 0), SIZE, BIDI, 0)
        return (time.perf_counter_ns() - t0) / len(ps)
    return best_of(run)


def time_pairs_batch(impl, dev, phys, rounds):
    chunk = phys[:CHUNK].copy()

    def run():
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            a = impl.dma_map_phys_batch(dev, chunk, SIZE, BIDI, 0)
            impl.dma_unmap_phys_batch(dev, a, SIZE, BIDI, 0)
        return (time.perf_counter_ns() - t0) / (rounds * chunk.shape[0])
    return best_of(run)


def per_call_iova_to_phys(impl, domain):
    fn = getattr(domain, "iova_to_phys", None)
    if fn is not None:
        return fn
    fn = getattr(impl, "iommu_iova_to_phys", None)
    if fn is None:
        raise NotOnBranch("iommu_iova_to_phys")
    return lambda iova: fn(domain, iova)


def batch_iova_to_phys(impl, domain):
    fn = getattr(domain, "iova_to_phys_batch", None)
    if fn is not None:
        return fn
    return lambda iovas: impl.iommu_iova_to_phys_batch(domain, iovas)


def measure_impl(impl, path, live, quick, dma_debug):
    """{"call": ns, "batch": ns} for one backend."""
    is_ref = impl.__name__.endswith("reference")
    m, dev = machine(impl, path, live, dma_debug)
    base = 4 * GiB + 16 * MiB if path == "swiotlb" else 16 * MiB
    live_phys = phys_for(live, base, 1 << 18)
    if path == "iova2phys" and not hasattr(dev, "domain"):
        # no dma-iommu yet: an unmanaged domain, the live set made with iommu_map (per call)
        domain = dev.domain_alloc()
        live_addrs = np.uint64(1 << 20) + np.arange(live, dtype=np.uint64) * np.uint64(SIZE)
        iommu_map = impl.iommu_map
        for c in range(0, live, 1 << 16):            # chunks: no 10^7-element Python lists
            for iova, p in zip(live_addrs[c:c + (1 << 16)].tolist(), live_phys[c:c + (1 << 16)].tolist(),
                               strict=True):
                if iommu_map(domain, iova, p, SIZE, 3):
                    raise MemoryError("iommu_map failed")
    else:
        live_addrs = build_live(impl, dev, live_phys)
        domain = getattr(dev, "domain", None)
    work = phys_for(max(CHUNK, 50_000), base + GiB, CHUNK)        # the timed maps: 16 MiB
    if path == "swiotlb":
        m.mem_write(base + GiB, bytes(range(256)) * (CHUNK * SIZE // 256))   # real data to bounce
    n_call = (500 if quick else 2_000) if is_ref else (5_000 if quick else 50_000)
    rounds = 1 if is_ref else (3 if quick else 20)
    if path == "swiotlb":
        rounds = max(1, rounds // 4)
    res = {}
    if path in ("direct", "swiotlb", "iommu-strict", "iommu-lazy"):
        res["call"] = time_pairs_per_call(impl, dev, work, n_call)
        res["batch"] = time_pairs_batch(impl, dev, work, rounds)
    elif path == "iova2phys":
        one, many = per_call_iova_to_phys(impl, domain), batch_iova_to_phys(impl, domain)
        idx = np.random.default_rng(1).integers(0, live, size=min(live, 1 << 16))
        probe = live_addrs[idx]
        if not (many(probe) == live_phys[idx]).all():
            raise AssertionError("iova_to_phys_batch disagrees with the live set")
        ints = [int(x) for x in probe[: (2_000 if is_ref else 50_000)]]

        def call():
            t0 = time.perf_counter_ns()
            for x in ints:
                one(x)
            return (time.perf_counter_ns() - t0) / len(ints)

        def bat():
            reps = 1 if is_ref else 20
            t0 = time.perf_counter_ns()
            for _ in range(reps):
                many(probe)
            return (time.perf_counter_ns() - t0) / (reps * probe.shape[0])
        res["call"], res["batch"] = best_of(call), best_of(bat)
    elif path == "link64":
        res.update(time_link64(impl, dev, work, 200 if is_ref else (300 if quick else 3000)))
    return res


def time_link64(impl, dev, phys, n):
    """ns per 64-range transaction: dma_iova_try_alloc, 64 x dma_iova_link (4 KiB each), one
    dma_iova_sync, dma_iova_destroy. Batch: the 64 links as one dma_iova_link_batch call."""
    if not hasattr(impl, "dma_iova_link"):
        raise NotOnBranch("two-step dma_iova_* API")
    try_alloc, link, sync, destroy = impl.dma_iova_try_alloc, impl.dma_iova_link, impl.dma_iova_sync, \
        impl.dma_iova_destroy
    ps = [int(p) for p in phys[:64]]
    offs = [k * SIZE for k in range(64)]
    total = 64 * SIZE

    def call():
        t0 = time.perf_counter_ns()
        for _ in range(n):
            st = impl.DmaIovaState()
            if not try_alloc(dev, st, ps[0], total):
                raise MemoryError("dma_iova_try_alloc failed")
            for p, off in zip(ps, offs, strict=True):
                if link(dev, st, p, off, SIZE, BIDI, 0):
                    raise MemoryError("dma_iova_link failed")
            sync(dev, st, 0, total)
            destroy(dev, st, total, BIDI, 0)
        return (time.perf_counter_ns() - t0) / n

    res = {"call": best_of(call)}
    link_batch = getattr(impl, "dma_iova_link_batch", None)
    if link_batch is not None:
        parr, oarr = phys[:64].copy(), np.array(offs, dtype=np.uint64)

        def bat():
            t0 = time.perf_counter_ns()
            for _ in range(n):
                st = impl.DmaIovaState()
                try_alloc(dev, st, ps[0], total)
                if (link_batch(dev, st, parr, oarr, SIZE, BIDI, 0) != 0).any():
                    raise MemoryError("dma_iova_link_batch failed")
                sync(dev, st, 0, total)
                destroy(dev, st, total, BIDI, 0)
            return (time.perf_counter_ns() - t0) / n
        res["batch"] = best_of(bat)
    return res


def run_row(backend, path, live, quick, dma_debug):
    """One backend's figures for one row, and this process's peak RSS."""
    if backend == "core":
        import dmaphys as impl
    else:
        import dmaphys.reference as impl
    row = {}
    try:
        row["ns"] = measure_impl(impl, path, live, quick, dma_debug)
    except NotOnBranch as e:
        row["na"] = f"{e} not on this branch"
    row["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def child(backend, path, live, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--row", backend, path, str(live)]
    cmd += ["--quick"] * args.quick + ["--dma-debug"] * args.dma_debug
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---- issue 10: the C floor, two-thread scaling, the stress job ---------------------------------------
def find_cfloor():
    """(path, note): the team-shared cfloor.c, else the vendored copy, else (None, why)."""
    for p in (REPO.parent / "shared" / "cfloor.c", REPO / "benchmarks" / "cfloor.c"):
        if p.is_file():
            return p, str(p)
    return None, "cfloor.c not found (looked for ../shared/cfloor.c and benchmarks/cfloor.c)"


def run_cfloor(quick):
    """{"iommu": ns, "direct": ns, "bounce": ns} from cfloor.c built with cc -O2, or {"note": why}."""
    src, note = find_cfloor()
    if src is None:
        return {"note": note}
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return {"note": "no C compiler (cc) on PATH: C-loop ratios not measured"}
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "cfloor")
        try:
            subprocess.run([cc, "-O2", "-o", exe, str(src)], check=True, capture_output=True, text=True,
                           timeout=120)
            out = subprocess.run([exe, str(10**6 if quick else 10**7)], check=True, capture_output=True,
                                 text=True, timeout=300).stdout
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", "") or e
            return {"note": f"cfloor.c did not build or run with {cc} -O2: {str(detail).strip()[:200]}"}
    res = {"note": f"C loop: {src} built with {os.path.basename(cc)} -O2"}
    for line in out.splitlines():        # "iommu  map+unmap 4KiB: 7.1 ns/pair (live=64)"
        name, _, rest = line.partition(" ")
        try:
            res[name] = float(rest.split(":")[1].split()[0])
        except (IndexError, ValueError):
            continue
    return res


def _thread_pairs(impl, m, dev, chunk, rounds, out, i):
    # chunk is this thread's own array (the two threads share no Python object they write:
    # passing one array to both would make them write its reference count by turns), and so
    # is the result array the maps reuse (out=, as a driver refilling its ring would)
    mp, up = impl.dma_map_phys_batch, impl.dma_unmap_phys_batch
    res = np.empty(chunk.shape[0], dtype=np.uint64)
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        a = mp(dev, chunk, SIZE, BIDI, 0, out=res)
        up(dev, a, SIZE, BIDI, 0)
    out[i] = (rounds * chunk.shape[0], time.perf_counter() - t0, time.thread_time() - c0)


def _pairs_rate(impl, rigs, chunks, rounds):
    """(pairs/s, CPU share) of len(rigs) threads, each driving its own rig with its own phys
    array for ``rounds`` batch pairs; CPU share is the threads' mean thread_time / wall time
    (below 1: a thread waited -- for the GIL, or for a core other work had)."""
    out = [None] * len(rigs)
    if len(rigs) == 1:
        _thread_pairs(impl, *rigs[0], chunks[0], rounds, out, 0)
        return out[0][0] / out[0][1], out[0][2] / out[0][1]
    ts = [threading.Thread(target=_thread_pairs, args=(impl, *rig, chunks[i], rounds, out, i))
          for i, rig in enumerate(rigs)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return sum(o[0] for o in out) / wall, sum(o[2] for o in out) / len(out) / wall


# rounds a lazy domain needs before its IOVA order has settled (see _warm_up)
LAZY_SETTLE_ROUNDS = 3000


def _warm_up(impl, m, dev, chunk, max_rounds=2000, settle=0):
    """Run batch pairs until the machine is in its steady state: 32 rounds in a row whose
    every element took the GIL-free fast path, and at least ``settle`` rounds. (A lazy domain
    needs both. Its flush queue holds up to fq_size - 1 freed IOVAs between full-queue
    flushes, so until the IOVA working set covers the live chunk plus a full queue, some maps
    miss the rcache and allocate from the IOVA tree with the GIL -- 16 a call for ~16 calls at
    4096 pairs and fq_size 256, more calls for chunk sizes closer to a multiple of 255. And
    the flush queue hands IOVAs back to the rcache in another order than the unmaps freed them,
    so the order a 4096-pair map call gets them in scrambles round by round: measured at 4096
    pairs, consecutive maps switched leaf table 695 times a call after the first calm rounds,
    ~2,100 from ~3,000 rounds on, and a run's pairs/s fell from ~50M to ~22-34M with it (each
    switch costs the run a validated walk). Both are start-up transients, not the steady state
    two long-running threads see; measuring one thread in the first and two in the second
    skewed the quick runs' lazy ratio to ~1.4x.) Returns the rounds run."""
    hook = getattr(impl._core, "_test_batch_fast_elements", None)
    n, calm = chunk.shape[0], 0
    max_rounds = max(max_rounds, settle + 32)
    for k in range(1, max_rounds + 1):
        before = hook(m) if hook else 0
        _thread_pairs(impl, m, dev, chunk, 1, [None], 0)
        calm = calm + 1 if hook is None or hook(m) - before == 2 * n else 0
        if calm >= 32 and k >= settle:  # (a lazy domain still misses now and then after 8)
            return k
    return max_rounds


def _median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def build_cthreads(tmp):
    """benchmarks/cthreads.c built with cc -O2 -pthread: (path, None) or (None, why not)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler (cc) on PATH: no C control for the two-thread figure"
    exe = os.path.join(tmp, "cthreads")
    try:
        subprocess.run([cc, "-O2", "-pthread", "-o", exe, str(REPO / "benchmarks" / "cthreads.c")],
                       check=True, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"cthreads.c did not build: {str(getattr(e, 'stderr', '') or e).strip()[:200]}"
    return exe, None


def _c_rate(exe, nthreads, secs, loop="iommu"):
    out = subprocess.run([exe, str(nthreads), str(secs), loop], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return float(out.split(":")[1].split()[0])


def measure_threads(quick, chunk_n=CHUNK, secs=None, reps=None):
    """Pairs/s of one thread driving its Machine through batch calls (``chunk_n`` pairs a call),
    and of two threads each driving their own (4 KiB, dma-debug off), for the IOMMU strict,
    lazy and dma-direct paths; beside them the same for a plain C loop (cthreads.c: cfloor's
    IOMMU loop in one thread, then in two), which tells what this machine gives two threads
    at that moment (other work on the 2 cores takes its share from both figures alike), and,
    in the dma-direct paths' rounds, cthreads.c's dma-direct loop (``c_control_direct``: the
    span check, offset add, mask check and store of a 4096-element batch map, the offset
    subtract and pool check of its unmap), the like-for-like control for dma-direct.

    Each machine is first run to its steady state (_warm_up). Each figure is measured in REPS
    interleaved rounds of about SECS seconds a run (one thread, two threads, C one, C two,
    again ...); ``ratio`` is best-two / best-one, ``median`` the median of the per-round
    ratios (one and two measured back to back, so each ratio saw one state of the machine),
    ``runs`` every round's ratio, ``cpu_share`` the two threads' mean CPU time / wall time in
    the best two-thread run (1.0: neither thread ever slept; a thread spinning for the GIL
    counts as running). "direct, no spin" is dma-direct again with batch.pxi's bounded spin
    before taking the GIL back turned off (``_gil_spin_ns(0)``): what the spin is worth."""
    import dmaphys as impl
    if reps is None:
        reps = 2 if quick else 5
    if secs is None:
        secs = 0.15 if quick else 0.6
    res = {"chunk": chunk_n, "reps": reps, "seconds_per_run": secs, "load_avg": os.getloadavg()[0],
           "paths": []}
    with tempfile.TemporaryDirectory() as tmp:
        exe, why = build_cthreads(tmp)
        if why:
            res["c_note"] = why
        c1, c2, d1, d2 = [], [], [], []
        spin = getattr(impl._core, "_gil_spin_ns", None)
        for p in ("iommu-strict", "iommu-lazy", "direct") + (("direct, no spin",) if spin else ()):
            rigs = [machine(impl, p.split(",")[0], 0, False) for _ in range(2)]
            chunks = [phys_for(chunk_n, 16 * MiB, chunk_n) for _ in range(2)]   # one per thread
            settle = LAZY_SETTLE_ROUNDS if p == "iommu-lazy" else 0
            warm = [_warm_up(impl, *rig, chunk, settle=settle)
                    for rig, chunk in zip(rigs, chunks, strict=True)]
            t0 = time.perf_counter()
            _thread_pairs(impl, *rigs[0], chunks[0], 3, [None], 0)
            rounds = max(1, round(secs / ((time.perf_counter() - t0) / 3)))
            one, two = [], []
            for _ in range(reps):
                # "no spin": the same, taking the GIL back without batch.pxi's bounded spin (its effect)
                old_spin = spin(0) if p.endswith("no spin") else None
                try:
                    one.append(_pairs_rate(impl, rigs[:1], chunks, rounds))
                    two.append(_pairs_rate(impl, rigs, chunks, rounds))
                finally:
                    if old_spin is not None:
                        spin(old_spin)
                if exe:
                    c1.append(_c_rate(exe, 1, secs))
                    c2.append(_c_rate(exe, 2, secs))
                    if p.startswith("direct"):
                        d1.append(_c_rate(exe, 1, secs, "direct"))
                        d2.append(_c_rate(exe, 2, secs, "direct"))
            best1, best2 = max(r for r, _ in one), max(two)
            ratios = [b[0] / a[0] for a, b in zip(one, two, strict=True)]
            res["paths"].append({"path": p, "one_thread_pairs_per_s": best1,
                                 "two_threads_pairs_per_s": best2[0], "ratio": best2[0] / best1,
                                 "median": _median(ratios), "cpu_share": round(best2[1], 3),
                                 "warm_up_rounds": warm, "runs": [round(x, 3) for x in ratios]})
        for key, one, two in (("c_control", c1, c2), ("c_control_direct", d1, d2)):
            if one:
                ratios = [b / a for a, b in zip(one, two, strict=True)]
                res[key] = {"one_thread_pairs_per_s": max(one), "two_threads_pairs_per_s": max(two),
                            "ratio": max(two) / max(one), "median": _median(ratios),
                            "runs": [round(x, 3) for x in ratios]}
    res["load_avg_after"] = os.getloadavg()[0]
    return res


def measure_stress(quick):
    import dmaphys.stress as stress
    r = stress.run(ops=100_000 if quick else stress.DEFAULT_OPS, seed=1, progress=False)
    return {"ops": r["operations"], "ops_per_s": r["ops_per_s"], "integrity_errors": r["integrity_errors"],
            "dma_debug_findings": r["dma_debug"]["error_count"]}


def print_issue10(rows, cfloor, threads, stress):
    """The per-path C-loop comparison and the issue-10 targets, each with its verdict."""
    print()
    print(cfloor.get("note", ""))
    print(f"{'path':>12} {'live':>9} {'call ns':>9} {'batch ns':>9} {'C loop ns':>10} {'batch/C':>8} "
          f"{'tgt':>6} {'ref/core':>9} {'call tgt':>9} {'met':>9}")
    for r in rows:
        if "na" in r or r["path"] not in C_LOOP:
            continue
        c, b = r["core"].get("call"), r["core"].get("batch")
        cname, ctarget = C_LOOP[r["path"]]
        cl = cfloor.get(cname)
        ratio = b / cl if b and cl else None
        rc, rb = r.get("ref", {}).get("call"), r.get("ref", {}).get("batch")
        refr = min(rb, rc) / b if rb and rc and b else None
        tc = CALL_TARGETS_10.get(r["path"])
        met = [verdict(c, tc)]
        if ctarget is not None and ratio is not None:
            met.append("ok" if ratio <= ctarget else "MISS")
        live = f"10^{len(str(r['live'])) - 1}"
        print(f"{r['path']:>12} {live:>9} {fmt(c, 9, 1)} {fmt(b, 9, 1)} {fmt(cl, 10, 1)} {fmt(ratio, 8, 1)} "
              f"{fmt(ctarget, 6, 1)} {fmt(refr, 9)} {fmt(tc, 9)} {'/'.join(x for x in met if x):>9}")
    if threads is not None:
        print_threads(threads)
    if stress is not None:
        print(f"dmaphys stress: {stress['ops']:,} operations at {stress['ops_per_s']:,} ops/s, "
              f"{stress['integrity_errors']} integrity errors, {stress['dma_debug_findings']} dma-debug "
              f"findings (target >= {STRESS_TARGET:,} ops/s: "
              f"{'ok' if stress['ops_per_s'] >= STRESS_TARGET else 'MISS'})")
    print("targets (issue 10): IOMMU batch pair <= 3x the C loop (strict and lazy); per-call pair <= 150 ns "
          "(dma-direct) / 200 ns (IOMMU); two threads >= 1.7x one; stress >= 850,000 ops/s.")


def print_threads(t):
    print(f"two threads, two machines, batch calls of {t['chunk']} pairs (best of {t['reps']} interleaved "
          f"runs of ~{t['seconds_per_run']} s after a steady-state warm-up; load average "
          f"{t['load_avg']:.1f} before, {t['load_avg_after']:.1f} after):")
    for p in t["paths"]:
        print(f"  {p['path']:>15}: {p['two_threads_pairs_per_s']:>13,.0f} pairs/s vs one thread "
              f"{p['one_thread_pairs_per_s']:>13,.0f} = {p['ratio']:.2f}x (median {p['median']:.2f}x, "
              f"runs {min(p['runs']):.2f}-{max(p['runs']):.2f}x; CPU share {p['cpu_share']:.2f}; "
              f"target >= {THREADS_TARGET}x: {'ok' if p['ratio'] >= THREADS_TARGET else 'MISS'})")
    for key, name, what in (("c_control", "C control", "cfloor's IOMMU loop in plain C, in the same run "
                             "-- what this machine gave two threads meanwhile"),
                            ("c_control_direct", "C direct", "its dma-direct batch loop (4096-element "
                             "arrays), in the direct rounds -- the like-for-like control for direct")):
        c = t.get(key)
        if c:
            print(f"  {name:>15}: {c['two_threads_pairs_per_s']:>13,.0f} pairs/s vs one thread "
                  f"{c['one_thread_pairs_per_s']:>13,.0f} = {c['ratio']:.2f}x (median {c['median']:.2f}x, "
                  f"runs {min(c['runs']):.2f}-{max(c['runs']):.2f}x): cthreads.c, {what}")
    if not t.get("c_control") and t.get("c_note"):
        print(f"  ({t['c_note']})")


def extra_child(what, quick, chunk=CHUNK, secs=None, reps=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--extra", what, "--chunk", str(chunk)]
    cmd += ["--threads-secs", str(secs)] * (secs is not None)
    cmd += ["--threads-reps", str(reps)] * (reps is not None)
    cmd += ["--quick"] * quick
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as e:
        print(f"  {what} benchmark failed: {e.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1])


# ---- the table ----------------------------------------------------------------------------------
def verdict(value, target):
    if value is None or target is None:
        return ""
    return "ok" if value <= target else "MISS"


def fmt(v, width, prec=0):
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{prec}f}"


def print_table(rows):
    print(f"{'path':>12} {'live':>9} {'call ns':>9} {'batch ns':>9} {'ref call':>9} {'ref batch':>10} "
          f"{'ref/core':>9} {'tgt call':>9} {'tgt batch':>10} {'met':>9} {'RSS MiB':>8}")
    for r in rows:
        live = f"10^{len(str(r['live'])) - 1}"
        tc, tb = TARGETS[r["path"]]
        if "na" in r:
            print(f"{r['path']:>12} {live:>9}   n/a: {r['na']}")
            continue
        c, b = r["core"].get("call"), r["core"].get("batch")
        rc = r.get("ref", {}).get("call")
        rb = r.get("ref", {}).get("batch")
        ratio = min(rb, rc) / b if rb and rc and b else None      # vs the faster reference figure
        met = [verdict(c, tc), verdict(b, tb)]
        if ratio is not None:
            met.append("ok" if ratio >= RATIO_TARGET else "MISS")
        if r["path"].startswith("iommu") and r["live"] >= 10**7:
            met.append("ok" if r["rss_mib"] <= RSS_TARGET_MIB else "MISS")
        print(f"{r['path']:>12} {live:>9} {fmt(c, 9, 1)} {fmt(b, 9, 1)} {fmt(rc, 9)} {fmt(rb, 10)} "
              f"{fmt(ratio, 9)} {fmt(tc, 9)} {fmt(tb, 10)} {'/'.join(x for x in met if x):>9} "
              f"{r['rss_mib']:8.0f}")
    print(f"targets: batch ref/core >= {RATIO_TARGET}x; 10^7 live 4 KiB IOMMU mappings <= "
          f"{RSS_TARGET_MIB} MiB RSS. met: per-call / batch / ratio / RSS verdicts where a target exists.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also 10^7 live mappings (direct, IOMMU)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ap.add_argument("--dma-debug", action="store_true", help="dma-debug on (rows up to 10^5)")
    ap.add_argument("--paths", default=",".join(TARGETS), help="comma-separated subset of the paths")
    ap.add_argument("--row", nargs=3, metavar=("BACKEND", "PATH", "LIVE"), help=argparse.SUPPRESS)
    ap.add_argument("--extra", choices=("threads", "stress"), help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=CHUNK,
                    help=f"pairs per batch call in the two-thread figure (default {CHUNK})")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip the C loop, the two-thread and the stress figures")
    ap.add_argument("--threads-only", action="store_true",
                    help="only the two-thread figure (with its C control), nothing else")
    ap.add_argument("--threads-secs", type=float, default=None,
                    help="seconds per timed run in the two-thread figure (default 0.6; 0.15 with --quick)")
    ap.add_argument("--threads-reps", type=int, default=None,
                    help="interleaved rounds in the two-thread figure (default 5; 2 with --quick)")
    args = ap.parse_args(argv)
    if args.extra:
        if args.extra == "threads":
            print(json.dumps(measure_threads(args.quick, args.chunk, args.threads_secs, args.threads_reps)))
        else:
            print(json.dumps(measure_stress(args.quick)))
        return
    if args.threads_only:
        t = measure_threads(args.quick, args.chunk, args.threads_secs, args.threads_reps)
        if args.json:
            print(json.dumps(t))
        else:
            print_threads(t)
        return
    if args.row:
        live = int(args.row[2])
        print(json.dumps(run_row(args.row[0], args.row[1], live, args.quick,
                                 args.dma_debug and live <= 10**5)))
        return
    rows = []
    for path in args.paths.split(","):
        sizes = [10**3, 10**5]
        if args.big and path not in ("swiotlb",):    # a 4 KiB bounce holds 2 slots: 10^7 = 40 GiB of pool
            sizes.append(10**7)
        for live in sizes:
            row = {"path": path, "live": live, "dma_debug": args.dma_debug and live <= 10**5}
            core = child("core", path, live, args)
            if "na" in core:
                row["na"] = core["na"]
            else:
                row["core"] = core["ns"]
            row["rss_mib"] = core["rss_mib"]
            if live <= 1000 and "na" not in core:
                ref = child("reference", path, live, args)
                row["ref"] = ref["ns"]
                row["ref_rss_mib"] = ref["rss_mib"]
            rows.append(row)
            if not args.json:
                print(f"  measured {path} at {live} live", file=sys.stderr)
    cfloor = threads = stress = None
    if not args.no_extras:
        cfloor = run_cfloor(args.quick)
        threads = extra_child("threads", args.quick, args.chunk, args.threads_secs, args.threads_reps)
        stress = extra_child("stress", args.quick)
    if args.json:
        print(json.dumps({"rows": rows, "targets": {k: {"call_ns": v[0], "batch_ns": v[1]}
                                                     for k, v in TARGETS.items()},
                          "ratio_target": RATIO_TARGET, "rss_target_mib": RSS_TARGET_MIB,
                          "c_loop": cfloor, "threads": threads, "stress": stress,
                          "issue10_targets": {"batch_over_c": {k: v[1] for k, v in C_LOOP.items()},
                                              "call_ns": CALL_TARGETS_10, "threads": THREADS_TARGET,
                                              "stress_ops_per_s": STRESS_TARGET}}, indent=1))
    else:
        print_table(rows)
        if not args.no_extras:
            print_issue10(rows, cfloor, threads, stress)


if __name__ == "__main__":
    main()
