"""``dmaphys replay``: real kernel DMA traces in, what-if studies and bug reports out.

A trace of the dma:* tracepoints (include/trace/events/dma.h, v6.12+) and
swiotlb:swiotlb_bounced, as /sys/kernel/tracing/trace or `trace-cmd report` print it, is read
line by line (streamed: a file is never read whole; see TraceParser in the backend for the
grammar and the kernel versions followed) and every DMA API call in it is made again, in
timestamp order, on a simulated machine:

  - devices are created from the names in the trace (PCI "0000:03:00.0" names as PCI devices,
    others as platform devices), with masks and IOMMU attachment from the options or a
    machine spec (a small TOML or JSON file, see load_spec());
  - RAM covers every physical address the trace touches (sparse: regions are added as
    addresses appear), MMIO regions appear where MMIO / dma_map_resource maps point;
  - the virtual clock follows the trace's timestamps (flush-queue timeouts fire when they
    would have) and each CPU's calls run on that simulated CPU;
  - every unmap / sync is matched to the replayed mapping of the traced one: the replay's
    addresses may differ from the traced machine's and are translated;
  - dma_mapping_error() is called after each map (a trace cannot show those calls, so their
    absence is never reported).

The report (a dict; --json prints it) has per-device and per-path counters, IOVA space in use,
its high-water mark and fragmentation, IOTLB figures, swiotlb occupancy and bounces (traced
and replayed), the dma-debug findings with trace line numbers, and ``address_agreement``: the
share of replayed maps whose address equals the traced one (1.0 = the model allocated exactly
as the traced machine did).

Backend-generic: ``replay(source, machine=..., dma=dmaphys.reference)`` runs on the
reference model; the compiled core parses with its TraceParser.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import re
import sys
import time
import warnings
from bisect import bisect_right

from .constants import DMA_BIT_MASK
from .stress import iova_pages_in_use  # one definition of "IOVA pages in use" for every report

__all__ = ["replay", "ReplayError", "load_spec", "format_report", "to_json", "plot_report",
           "build_parser_args", "run_cli"]

U64_MAX = 0xFFFFFFFFFFFFFFFF
PAGE_SIZE = 4096
DMA_ATTR_MMIO = 1 << 10
SIM_ATTRS = 0x7F6                          # DMA_ATTR_ALL: the attrs the simulator takes
CHUNK = 1 << 20                            # bytes read per feed()
MAX_FINDINGS = 10_000                      # findings kept in the report (all are counted)
MAX_FREED = 1 << 20                        # recently unmapped traced addresses remembered per device
PCI_NAME = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

# event ids (reference/trace_parse.py and trace_parse.pxi)
(EV_MAP, EV_UNMAP, EV_ALLOC, EV_FREE, EV_MAP_SG, EV_MAP_SG_ERR, EV_UNMAP_SG, EV_SYNC_CPU, EV_SYNC_DEV,
 EV_SYNC_SG_CPU, EV_SYNC_SG_DEV, EV_BOUNCED, EV_MAP_RES, EV_UNMAP_RES, EV_ALLOC_PAGES, EV_FREE_PAGES,
 EV_ALLOC_SGT, EV_ALLOC_SGT_ERR, EV_FREE_SGT) = range(19)
PATHS = ("direct", "swiotlb", "iommu")


class ReplayError(ValueError):
    """Bad input: ``line`` (1-based, 0 = not tied to a line) and a message; never a traceback.

    Simulator-only (the replay's input errors; a ValueError).
    """

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


# ---- the machine spec ---------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(0x[0-9a-fA-F]+|\d+)\s*([KMGT]?)i?B?\s*$")


def _size(v, what: str) -> int:
    if isinstance(v, bool):
        raise ReplayError(0, f"{what}: {v!r} is not a size")
    if isinstance(v, int):
        return v
    m = _SIZE.match(str(v))
    if not m:
        raise ReplayError(0, f"{what}: {v!r} is not a size (e.g. 4096, 0x1000, 64M, 4G)")
    return int(m.group(1), 0) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


SPEC_KEYS = {"cpus", "ram", "swiotlb", "iommu", "devices", "default_device"}
DEVICE_KEYS = {"dma_mask", "coherent", "iommu", "force_bounce", "min_align_mask", "max_segment_size",
               "seg_boundary_mask", "untrusted", "pci"}
IOMMU_KEYS = {"mode", "fmt", "iotlb", "forcedac", "shadow_on_flush", "caching_mode"}


def load_spec(spec) -> dict:
    """A machine spec: None, a dict, or a path to a TOML (.toml) or JSON file.

    Keys: ``cpus``; ``ram`` ([[base, size], ...], sizes as ints or "4G"); ``swiotlb`` ("auto",
    "off", "force" or a size); ``iommu`` ({mode = "off"|"strict"|"lazy", fmt = "x86-64",
    iotlb = "qemu"|"off"|{entries, ways, policy}}); ``default_device`` and ``devices.NAME``
    ({dma_mask = bits, coherent, iommu = true|false, force_bounce, min_align_mask,
    max_segment_size, seg_boundary_mask, untrusted, pci}).

    Simulator-only. Returns the spec as a dict ({} for None). Raises ReplayError for an unreadable
    or unparsable file, a spec that is not a table, or unknown keys.
    """
    if spec is None:
        return {}
    if isinstance(spec, dict):
        d = dict(spec)
    else:
        path = os.fspath(spec)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ReplayError(0, f"machine spec {path}: {e.strerror}") from None
        try:
            if path.endswith(".toml"):
                import tomllib
                d = tomllib.loads(data.decode())
            else:
                d = json.loads(data)
        except Exception as e:                              # noqa: BLE001 (any parse error)
            raise ReplayError(0, f"machine spec {path}: {e}") from None
        if not isinstance(d, dict):
            raise ReplayError(0, f"machine spec {path}: not a table/object")
    bad = set(d) - SPEC_KEYS
    if bad:
        raise ReplayError(0, f"machine spec: unknown key(s) {', '.join(sorted(bad))}; known: "
                             f"{', '.join(sorted(SPEC_KEYS))}")
    for name, dv in list(d.get("devices", {}).items()) + [("default_device", d.get("default_device", {}))]:
        if not isinstance(dv, dict) or set(dv) - DEVICE_KEYS:
            what = ", ".join(sorted(set(dv) - DEVICE_KEYS)) if isinstance(dv, dict) else repr(dv)
            raise ReplayError(0, f"machine spec: device {name}: unknown key(s) {what}; "
                                 f"known: {', '.join(sorted(DEVICE_KEYS))}")
    io_ = d.get("iommu", {})
    if isinstance(io_, str):
        d["iommu"] = io_ = {"mode": io_}
    if not isinstance(io_, dict) or set(io_) - IOMMU_KEYS:
        raise ReplayError(0, f"machine spec: iommu: known keys are {', '.join(sorted(IOMMU_KEYS))}")
    return d


def _iotlb_option(v):
    """--iotlb: "default", "off", "qemu", or "entries=N,ways=N,policy=P"."""
    if v is None or isinstance(v, dict) or v is False:
        return v
    if v in ("default", ""):
        return None
    if v == "off":
        return False
    if v == "qemu":
        return "qemu"
    out = {}
    for part in str(v).split(","):
        k, eq, val = part.partition("=")
        if not eq or k not in ("entries", "ways", "policy", "seed", "max_size", "mode"):
            raise ReplayError(0, f"--iotlb {v!r}: expected off, qemu or entries=N,ways=N,policy=lru")
        out[k] = val if k in ("policy", "mode") else int(val, 0)
    return out


# ---- per-device replay state --------------------------------------------------------------------

class _Dev:
    __slots__ = ("name", "dev", "live", "dup", "freed", "sg_live", "sg_by_dma", "coh", "starts",
                 "iommu", "maps", "unmaps", "bytes", "syncs", "agree", "compared", "sg_maps",
                 "sg_unmaps", "allocs", "frees", "traced_map_failures", "replay_map_failures",
                 "traced_bounces", "replay_bounces", "paths")

    def __init__(self, name, dev):
        self.name = name
        self.dev = dev
        self.live = {}            # traced dma addr -> [replayed addr, size, line, dir, is_resource]
        self.dup = {}             # traced dma addr -> older live entries with the same address
        self.freed = {}           # traced dma addr -> replayed addr of its last unmap
        self.sg_live = {}         # traced phys tuple -> [ScatterList, nents, line, first traced dma]
        self.sg_by_dma = {}       # first traced sg dma addr -> phys tuple
        self.coh = {}             # traced dma handle -> [cpu addr, handle, size, line]
        self.starts = None        # sorted live traced addresses (containing lookups), None = stale
        self.iommu = dev.domain is not None and dev.dma_iommu
        self.maps = self.unmaps = self.bytes = self.syncs = 0
        self.agree = self.compared = 0
        self.sg_maps = self.sg_unmaps = self.allocs = self.frees = 0
        self.traced_map_failures = self.replay_map_failures = 0
        self.traced_bounces = self.replay_bounces = 0
        self.paths = {p: [0, 0] for p in PATHS}          # path -> [maps, bytes]

    def as_dict(self) -> dict:
        return {"maps": self.maps, "unmaps": self.unmaps, "bytes": self.bytes, "syncs": self.syncs,
                "sg_maps": self.sg_maps, "sg_unmaps": self.sg_unmaps, "allocs": self.allocs,
                "frees": self.frees, "live_at_end": len(self.live) + sum(len(v) for v in self.dup.values()),
                "traced_map_failures": self.traced_map_failures,
                "replay_map_failures": self.replay_map_failures,
                "traced_bounces": self.traced_bounces, "replay_bounces": self.replay_bounces,
                "address_agreement": round(self.agree / self.compared, 6) if self.compared else None,
                "iommu": bool(self.iommu),
                "paths": {p: {"maps": v[0], "bytes": v[1]} for p, v in self.paths.items() if v[0]}}


# ---- the replayer -------------------------------------------------------------------------------

class Replayer:
    """State of one replay; ``run(source)`` then ``report()``.

    Simulator-only (see replay()). Constructing one raises ReplayError for a bad machine spec or an
    IOMMU mode other than off / strict / lazy.
    """

    def __init__(self, dma, machine=None, *, iommu=None, fmt=None, iotlb=None, swiotlb=None, cpus=None,
                 lenient=False, touch=None, sample_every=65536):
        self.dma = dma
        self.lenient = lenient
        self.touch = touch
        self.sample_every = sample_every
        self.m = None
        self.ready = False
        self.fast = None
        if machine is not None and not isinstance(machine, (dict, str, os.PathLike)):
            self.m = machine                                 # a Machine of the backend
            self.spec = {}
        else:
            self.spec = load_spec(machine)
        io_ = dict(self.spec.get("iommu", {}))
        if iommu is not None:
            io_["mode"] = iommu
        if fmt is not None:
            io_["fmt"] = fmt
        if iotlb is not None:
            io_["iotlb"] = iotlb
        if io_.get("mode", "off") not in ("off", "strict", "lazy"):
            raise ReplayError(0, f"iommu mode must be off, strict or lazy, not {io_['mode']!r}")
        self.iommu_cfg = io_
        self.swiotlb = swiotlb if swiotlb is not None else self.spec.get("swiotlb", "auto")
        self.cpus = cpus if cpus is not None else self.spec.get("cpus")
        self.devs: dict = {}
        self.findings: list = []
        self.nfindings = 0
        self.kinds: dict = {}
        self.unmatched: list = []
        self.nunmatched = 0
        self.errors: list = []                 # malformed lines skipped under --lenient
        self.nerrors = 0
        self.replay_errors: list = []          # exceptions the simulator raised for a call
        self.nreplay_errors = 0
        self.kernel_warnings: dict = {}
        self.events = 0
        self.not_modelled = 0
        self.last_ts = 0
        self.first_ts = None
        self.next_sample = sample_every
        self.ram_cache = (0, 0)
        self.backwards = 0
        self.ram: list = []                    # sorted [(lo, hi)] of RAM (exclusive hi)
        self.mmio: list = []
        self.iommu_obj = None
        self.occupancy: list = []              # (events, iova pages, swiotlb slots)
        self.hiwater_iova = 0
        self.parser = None
        self.seconds = 0.0

    # ---- machine ----------------------------------------------------------------------------
    def _build_machine(self, header_cpus: int) -> None:
        dma = self.dma
        if self.m is None:
            cpus = self.cpus or header_cpus or 4
            ram = self.spec.get("ram")
            ram = [(_size(b, "ram base"), _size(s, "ram size")) for b, s in ram] if ram else None
            sw = self.swiotlb
            kw = {}
            if sw in ("auto", None):
                pass
            elif sw == "off":
                kw["swiotlb"] = 0
            elif sw == "force":
                kw["swiotlb_force"] = True
            else:
                kw["swiotlb"] = _size(sw, "swiotlb")
            try:
                self.m = dma.Machine(ram=ram, cpus=cpus, **kw)
            except ValueError as e:
                raise ReplayError(0, f"machine: {e}") from None
        m = self.m
        for start, size, kind, _ in m.regions:
            (self.ram if kind == "ram" else self.mmio).append((start, start + size))
        mode = self.iommu_cfg.get("mode", "off")
        if m.iommus:
            self.iommu_obj = m.iommus[0]
        elif mode != "off" or any(d.get("iommu") for d in self.spec.get("devices", {}).values()):
            kw = {k: self.iommu_cfg[k] for k in ("forcedac", "shadow_on_flush", "caching_mode")
                  if k in self.iommu_cfg}
            try:
                self.iommu_obj = m.add_iommu(fmt=self.iommu_cfg.get("fmt", "x86-64"),
                                             strict=mode == "strict",
                                             iotlb=_iotlb_option(self.iommu_cfg.get("iotlb")), **kw)
            except (ValueError, TypeError) as e:
                raise ReplayError(0, f"iommu: {e}") from None
        core = getattr(self.dma, "_core", None)
        self.fast = getattr(core, "_trace_replay_fast", None) if isinstance(m, getattr(core, "Machine", ())) \
            else None
        self.sw_lo = m.swiotlb.start if m.swiotlb is not None else 0
        self.sw_hi = m.swiotlb.end if m.swiotlb is not None else 0
        if self.touch is None:
            self.touch = self.iommu_obj is not None
        self.ready = True
        for name in self.spec.get("devices", {}):       # the spec's devices first, in its order
            if name not in self.devs:
                self._new_device(name)

    def _new_device(self, name: str) -> _Dev:
        m = self.m
        dev = m.devices.get(name)
        if dev is None:
            dv = dict(self.spec.get("default_device", {}))
            dv.update(self.spec.get("devices", {}).get(name, {}))
            bits = dv.get("dma_mask", 64)
            attach = dv.get("iommu", self.iommu_cfg.get("mode", "off") != "off")
            kw = {k: dv[k] for k in ("coherent", "force_bounce", "min_align_mask", "max_segment_size",
                                      "seg_boundary_mask", "untrusted") if k in dv}
            try:
                dev = m.add_device(name, dma_mask=DMA_BIT_MASK(int(bits)),
                                   pci=dv.get("pci", bool(PCI_NAME.match(name))),
                                   iommu=self.iommu_obj if attach else None, **kw)
            except (ValueError, TypeError) as e:
                raise ReplayError(0, f"device {name}: {e}") from None
        st = _Dev(name, dev)
        self.devs[name] = st
        return st

    def _cover(self, phys: int, size: int, mmio: bool) -> bool:
        """Make [phys, phys+size) RAM (or MMIO); False when it lies in a region of the other kind."""
        lst = self.mmio if mmio else self.ram
        end = phys + max(size, 1)
        i = bisect_right(lst, (phys, U64_MAX)) - 1
        if i >= 0 and lst[i][0] <= phys and end <= lst[i][1]:
            return True
        # a new region: the enclosing 2 MiB chunk(s), clipped to what no region holds yet
        lo = phys & ~((2 << 20) - 1)
        hi = (end + (2 << 20) - 1) & ~((2 << 20) - 1)
        regions = sorted(self.ram + self.mmio)
        for s, e in regions:
            if s < end and phys < e:
                return False                    # overlaps a region of the other kind (or a partial one)
            if e <= phys:
                lo = max(lo, e)
            elif s >= end:
                hi = min(hi, s)
        lo &= ~(PAGE_SIZE - 1)
        hi = (hi + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if hi > 1 << 52:
            return False
        if mmio:
            self.m.add_mmio(lo, hi - lo, f"replay MMIO {lo:#x}")
        else:
            self.m.add_ram_range(lo, hi - lo, f"replay RAM {lo:#x}")
        lst.append((lo, hi))
        lst.sort()
        return True

    # ---- reports of the run ----------------------------------------------------------------------
    def _finding(self, line: int, kind: str, device: str, text: str) -> None:
        self.nfindings += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append({"line": line, "kind": kind, "device": device, "text": text})

    def _harvest(self, line: int) -> None:
        """dma-debug records and kernel warnings the last call produced, tied to ``line``."""
        m = self.m
        errs = m.dma_debug.errors
        if errs:
            for r in errs:
                if r.kind != "map_error_not_checked":
                    self._finding(line, r.kind, r.device, r.text)
            del errs[:]
        wl = m.warnings_log
        if wl:
            for cat, text in wl:
                if cat == "DmaDebugWarning":
                    continue
                k = self.kernel_warnings.setdefault(cat, {"count": 0, "first_line": line, "first": text})
                k["count"] += 1
            del wl[:]

    def _unmatched(self, line: int, text: str) -> None:
        self.nunmatched += 1
        if len(self.unmatched) < 1000:
            self.unmatched.append({"line": line, "text": text})

    def _replay_error(self, line: int, e: Exception) -> None:
        self.nreplay_errors += 1
        if len(self.replay_errors) < 1000:
            self.replay_errors.append({"line": line, "text": f"{type(e).__name__}: {e}"})

    def _bad_line(self, rec) -> None:
        if not self.lenient:
            raise ReplayError(rec[0], rec[2])
        self.nerrors += 1
        if len(self.errors) < 1000:
            self.errors.append({"line": rec[0], "text": rec[2]})

    # ---- the replay ---------------------------------------------------------------------------
    def run(self, source) -> None:
        """Replay ``source`` (see replay()) on the machine, building it at the first record.

        Simulator-only. Returns None. Raises ReplayError as replay() describes.
        """
        t0 = time.perf_counter()
        self.parser = parser = self.dma.TraceParser()
        logger = logging.getLogger("dmaphys")
        level = logger.level
        logger.setLevel(logging.ERROR)
        gc_was = gc.isenabled()
        gc.disable()                    # records are short-lived tuples: no cycles to find
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for chunk in _chunks(source):
                    try:
                        recs = parser.feed(chunk)
                    except ValueError as e:
                        raise ReplayError(getattr(e, "line", 0), str(e).split(": ", 1)[-1]) from None
                    if recs:
                        self._replay(recs)
                try:
                    recs = parser.finish()
                except ValueError as e:
                    raise ReplayError(getattr(e, "line", 0), str(e).split(": ", 1)[-1]) from None
                if recs:
                    self._replay(recs)
                if not self.ready:
                    self._build_machine(parser.cpus)
                self._finish()
        finally:
            logger.setLevel(level)
            if gc_was:
                gc.enable()
        self.seconds = time.perf_counter() - t0

    def _replay(self, recs) -> None:
        if not self.ready:
            self._build_machine(self.parser.cpus)
        if self.first_ts is None:
            self.first_ts = next((rec[2] for rec in recs if rec[1] >= 0), None)
        if self.fast is None:
            self._replay_py(recs, 0, len(recs))
            return
        # the compiled core replays runs of frequent records (dmaphys/_kernel/trace_parse.pxi,
        # _trace_replay_fast: the same steps); this loop takes every other record
        i, n = 0, len(recs)
        while i < n:
            i = self.fast(self, recs, i)
            if i < n:
                self._replay_py(recs, i, i + 1)
                i += 1

    def _replay_py(self, recs, start: int, stop: int) -> None:
        m = self.m
        dma = self.dma
        devs = self.devs
        ncpus = m.cpus
        dbg_errors = m.dma_debug.errors
        wlog = m.warnings_log
        map_phys = dma.dma_map_phys
        unmap_phys = dma.dma_unmap_phys
        mapping_error = dma.dma_mapping_error
        ram_lo, ram_hi = self.ram_cache
        sw_lo, sw_hi = self.sw_lo, self.sw_hi
        touch = self.touch
        last_ts = self.last_ts
        clock = m.clock_ns
        cur_cpu = m.cpu
        events = self.events
        next_sample = self.next_sample
        lenient = self.lenient
        for k in range(start, stop):
            rec = recs[k]
            ev = rec[1]
            line = rec[0]
            if ev < 0:
                self._bad_line(rec)
                continue
            ts = rec[2]
            if ts < last_ts:
                if not lenient:
                    raise ReplayError(line, f"timestamp {ts / 1e9:.9f} s goes back in time (the line "
                                            f"before was at {last_ts / 1e9:.9f} s); a trace is in "
                                            f"timestamp order: was it concatenated or edited?")
                self.backwards += 1
                ts = last_ts
            if ts > clock:
                m.advance(ts - clock)
                clock = ts
            last_ts = ts
            cpu = rec[3]
            if cpu != cur_cpu:
                if cpu >= ncpus:
                    if not lenient:
                        raise ReplayError(line, f"CPU {cpu}, but the simulated machine has {ncpus} CPUs "
                                                f"(give --cpus or cpus in the machine spec)")
                    cpu %= ncpus
                m.cpu = cur_cpu = cpu
            st = devs.get(rec[4])
            if st is None:
                st = self._new_device(rec[4])
            events += 1
            try:
                if ev == EV_MAP or ev == EV_MAP_RES:
                    traced, phys, size, d, attrs = rec[5], rec[6], rec[7], rec[8], rec[9]
                    mmio = ev == EV_MAP_RES or attrs & DMA_ATTR_MMIO
                    if not (ram_lo <= phys and phys + size <= ram_hi) or mmio:
                        if not self._cover(phys, size, bool(mmio)):
                            self._unmatched(line, f"{'MMIO' if mmio else 'RAM'} address {phys:#x} cannot be "
                                                  f"{'MMIO' if mmio else 'RAM'} on the simulated machine "
                                                  f"(it is the other kind there; give ram in --machine)")
                            continue
                        if not mmio:
                            i = bisect_right(self.ram, (phys, U64_MAX)) - 1
                            ram_lo, ram_hi = self.ram[i]
                    if ev == EV_MAP:
                        r = map_phys(st.dev, phys, size, d, attrs & SIM_ATTRS)
                    else:
                        r = dma.dma_map_resource(st.dev, phys, size, d, attrs & SIM_ATTRS)
                    failed = mapping_error(st.dev, r)
                    if traced == U64_MAX:
                        st.traced_map_failures += 1
                        if not failed:             # the driver saw a failure: it unmaps nothing
                            (unmap_phys if ev == EV_MAP else dma.dma_unmap_resource)(
                                st.dev, r, size, d, attrs & SIM_ATTRS)
                    else:
                        if failed:
                            st.replay_map_failures += 1
                        st.maps += 1
                        st.bytes += size
                        st.compared += 1
                        if r == traced:
                            st.agree += 1
                        if st.iommu:
                            p = st.paths["iommu"]
                        elif sw_lo <= r < sw_hi:
                            p = st.paths["swiotlb"]
                            st.replay_bounces += 1
                        else:
                            p = st.paths["direct"]
                        p[0] += 1
                        p[1] += size
                        old = st.live.get(traced)
                        if old is not None:
                            st.dup.setdefault(traced, []).append(old)
                        st.live[traced] = [r, size, line, d, ev == EV_MAP_RES]
                        st.starts = None
                elif ev == EV_UNMAP or ev == EV_UNMAP_RES:
                    traced, size, d, attrs = rec[5], rec[7], rec[8], rec[9]
                    e = st.live.pop(traced, None)
                    if e is None:
                        self._unmap_unknown(st, line, traced, size, "free")
                        continue
                    dl = st.dup.get(traced)
                    if dl:
                        st.live[traced] = dl.pop()
                        if not dl:
                            del st.dup[traced]
                    st.starts = None
                    st.unmaps += 1
                    fr = st.freed
                    fr[traced] = e[0]
                    if len(fr) > MAX_FREED:
                        del fr[next(iter(fr))]
                    if e[0] == U64_MAX:
                        continue                   # the replay's map failed: nothing to unmap
                    if touch and st.iommu:
                        self._touch(st, e[0], e[1], e[3])
                    if ev == EV_UNMAP:
                        unmap_phys(st.dev, e[0], size, d, attrs & SIM_ATTRS)
                    else:
                        dma.dma_unmap_resource(st.dev, e[0], size, d, attrs & SIM_ATTRS)
                elif ev == EV_SYNC_CPU or ev == EV_SYNC_DEV:
                    traced, size, d = rec[5], rec[7], rec[8]
                    e = st.live.get(traced)
                    off = 0
                    if e is None:
                        e, off = self._containing(st, traced)
                        if e is None:
                            self._unmap_unknown(st, line, traced, size, "sync")
                            continue
                    st.syncs += 1
                    if e[0] == U64_MAX:
                        continue
                    if ev == EV_SYNC_CPU:
                        dma.dma_sync_single_for_cpu(st.dev, e[0] + off, size, d)
                    else:
                        dma.dma_sync_single_for_device(st.dev, e[0] + off, size, d)
                elif ev == EV_BOUNCED:
                    st.traced_bounces += 1
                    events -= 1                    # a consequence, not a call
                else:
                    self._rare(st, rec)
            except ReplayError:
                raise
            except Exception as exc:               # noqa: BLE001 (the simulator's verdict on a call)
                self._replay_error(line, exc)
            if dbg_errors or wlog:
                self._harvest(line)
            if events >= next_sample:
                self.events = events
                self._sample()
                next_sample = events + self.sample_every
        self.events = events
        self.last_ts = last_ts
        self.next_sample = next_sample
        self.ram_cache = (ram_lo, ram_hi)

    def _touch(self, st: _Dev, addr: int, size: int, d: int) -> None:
        """The device's DMA between map and unmap: one access per page (at most 16) so the IOTLB
        sees the traffic (reads for TO_DEVICE/BIDIRECTIONAL, a zero byte written for FROM_DEVICE)."""
        dev = st.dev
        first = addr & ~(PAGE_SIZE - 1)
        n = min(((addr + size - 1) >> 12) - (addr >> 12) + 1, 16)
        for i in range(n):
            a = max(addr, first + i * PAGE_SIZE)
            if d == 2:
                dev.dma_write(a, b"\0")
            else:
                dev.dma_read(a, 1)

    def _containing(self, st: _Dev, traced: int):
        """The live mapping containing ``traced`` (a sync at an offset) → (entry, offset)."""
        if st.starts is None:
            st.starts = sorted(st.live)
        i = bisect_right(st.starts, traced) - 1
        if i >= 0:
            e = st.live[st.starts[i]]
            off = traced - st.starts[i]
            if off < e[1]:
                return e, off
        return None, 0

    def _unmap_unknown(self, st: _Dev, line: int, traced: int, size: int, what: str) -> None:
        """An unmap / sync / free of a traced address with no live replayed mapping."""
        dev = st.name
        if traced == U64_MAX and what == "free":
            self._finding(line, "invalid_address", dev,
                          f"DMA-API: {dev} {dev}: device driver tries to free an invalid DMA memory address")
        elif traced in st.freed:
            a = st.freed[traced]
            if what == "sync":
                self._finding(line, "sync_not_allocated", dev,
                              f"DMA-API: {dev} {dev}: device driver tries to sync DMA memory it has not "
                              f"allocated [device address=0x{a:016x}] [size={size} bytes]")
            else:
                self._finding(line, "not_allocated", dev,
                              f"DMA-API: {dev} {dev}: device driver tries to free DMA memory it has not "
                              f"allocated [device address=0x{a:016x}] [size={size} bytes]")
        else:
            self._unmatched(line, f"{what} of dma_addr {traced:#x} on {dev}, which the trace never mapped "
                                  f"(mapped before the trace started?): not replayed")

    def _rare(self, st: _Dev, rec) -> None:
        """sg, coherent and the other events."""
        dma = self.dma
        line, ev = rec[0], rec[1]
        d, attrs = rec[8], rec[9] & SIM_ATTRS
        if ev == EV_MAP_SG or ev == EV_MAP_SG_ERR:
            if ev == EV_MAP_SG:
                dmas, sizes, phys, full_nents, full_ents, truncated = rec[10]
                if truncated or full_nents != len(phys):
                    self.not_modelled += 1
                    self._unmatched(line, f"dma_map_sg of {full_nents} entries, of which the trace shows "
                                          f"{len(phys)} ([TRUNCATED]): not replayed")
                    return
                lengths = _sg_lengths(phys, sizes, len(dmas))
            else:
                phys = rec[10][0]
                if not phys:
                    return
                lengths = [PAGE_SIZE - (p & (PAGE_SIZE - 1)) for p in phys]
            for p, n in zip(phys, lengths, strict=False):
                if not self._cover(p, n, False):
                    self._unmatched(line, f"RAM address {p:#x} cannot be RAM on the simulated machine")
                    return
            sg = dma.ScatterList(list(zip(phys, lengths, strict=False)))
            n = dma.dma_map_sg_attrs(st.dev, sg, len(phys), d, attrs)
            if ev == EV_MAP_SG_ERR:
                st.traced_map_failures += 1
                if n:
                    dma.dma_unmap_sg_attrs(st.dev, sg, len(phys), d, attrs)
                return
            st.sg_maps += 1
            st.maps += 1
            st.bytes += sum(sizes)
            st.paths["iommu" if st.iommu else "direct"][0] += 1
            st.paths["iommu" if st.iommu else "direct"][1] += sum(sizes)
            st.compared += 1
            if not n:
                st.replay_map_failures += 1
            elif n == len(dmas) and all(sg[i].dma_address == dmas[i]
                                         and sg[i].dma_length & 0xFFFFFFFF == sizes[i] for i in range(n)):
                st.agree += 1
            st.sg_live[phys] = [sg if n else None, len(phys), line, dmas[0] if dmas else None, d]
            if dmas:
                st.sg_by_dma[dmas[0]] = phys
        elif ev == EV_UNMAP_SG:
            phys = rec[10][0]
            e = st.sg_live.pop(phys, None)
            if e is None:
                self._unmap_unknown(st, line, phys[0] if phys else 0, 0, "sg unmap")
                return
            if e[3] is not None:
                st.sg_by_dma.pop(e[3], None)
            st.sg_unmaps += 1
            st.unmaps += 1
            if e[0] is not None:
                dma.dma_unmap_sg_attrs(st.dev, e[0], len(phys), d, attrs)
        elif ev == EV_SYNC_SG_CPU or ev == EV_SYNC_SG_DEV:
            dmas = rec[10][0]
            key = st.sg_by_dma.get(dmas[0]) if dmas else None
            e = st.sg_live.get(key) if key is not None else None
            if e is None:
                self._unmatched(line, f"sg sync on {st.name} of a list the trace never mapped: not replayed")
                return
            st.syncs += 1
            if e[0] is not None:
                n = min(len(dmas), e[1])
                (dma.dma_sync_sg_for_cpu if ev == EV_SYNC_SG_CPU else dma.dma_sync_sg_for_device)(
                    st.dev, e[0], n, d)
        elif ev in (EV_ALLOC, EV_ALLOC_PAGES):
            traced, size = rec[5], rec[7]
            r = dma.dma_alloc_attrs(st.dev, size, attrs)
            if rec[6] == 0:                        # the traced allocation failed (virt_addr (nil))
                st.traced_map_failures += 1
                if r is not None:
                    dma.dma_free_attrs(st.dev, size, r[0], r[1], attrs)
                return
            st.allocs += 1
            st.bytes += size
            st.compared += 1
            if r is None:
                st.replay_map_failures += 1
            elif r[1] == traced:
                st.agree += 1
            st.coh[traced] = [r, size, line]
        elif ev in (EV_FREE, EV_FREE_PAGES):
            traced, size = rec[5], rec[7]
            e = st.coh.pop(traced, None)
            if e is None:
                self._unmap_unknown(st, line, traced, size, "free")
                return
            st.frees += 1
            st.freed[traced] = e[0][1] if e[0] is not None else U64_MAX
            if e[0] is None:
                return
            if size != e[1]:
                dev = st.name
                self._finding(line, "size_mismatch", dev,
                              f"DMA-API: {dev} {dev}: device driver frees DMA memory with different size "
                              f"[device address=0x{e[0][1]:016x}] [map size={e[1]} bytes] "
                              f"[unmap size={size} bytes]")
                size = e[1]
            dma.dma_free_attrs(st.dev, size, e[0][0], e[0][1], attrs)
        else:                                      # dma_alloc_sgt & co: counted, not modelled
            self.not_modelled += 1

    def _sample(self) -> None:
        pages = iova_pages_in_use(self.m)
        self.hiwater_iova = max(self.hiwater_iova, pages)
        sw = self.m.swiotlb.total_used if self.m.swiotlb is not None else 0
        self.occupancy.append((self.events, pages, sw))

    def _finish(self) -> None:
        self._sample()
        self._harvest(self.last_line())
        # every mapping still live at the end of the trace is a leak of the line that made it
        for st in self.devs.values():
            dev = st.name
            entries = list(st.live.items()) + [(a, e) for a, lst in st.dup.items() for e in lst]
            for traced, e in sorted(entries, key=lambda x: x[1][2]):
                self._finding(e[2], "leak", dev,
                              f"DMA-API: {dev} {dev}: mapping still live at the end of the trace "
                              f"[device address=0x{traced:016x}] [size={e[1]} bytes] "
                              f"[mapped with {_DIRNAME[e[3]]}] [mapped as single]")
            for _phys, e in sorted(st.sg_live.items(), key=lambda x: x[1][2]):
                self._finding(e[2], "leak", dev,
                              f"DMA-API: {dev} {dev}: sg list still mapped at the end of the trace "
                              f"[{e[1]} entries] [mapped with {_DIRNAME[e[4]]}] [mapped as scatter-gather]")
            for traced, e in sorted(st.coh.items(), key=lambda x: x[1][2]):
                self._finding(e[2], "leak", dev,
                              f"DMA-API: {dev} {dev}: coherent buffer still allocated at the end of the "
                              f"trace [device address=0x{traced:016x}] [size={e[1]} bytes] "
                              f"[mapped as coherent]")
        self.findings.sort(key=lambda f: f["line"])

    def last_line(self) -> int:
        """Simulator-only: the number of the last trace line read. Returns it (0 before run()). Raises
        nothing."""
        return self.parser.lineno if self.parser is not None else 0

    # ---- the report ---------------------------------------------------------------------------
    def report(self) -> dict:
        """The report of a finished run() (see replay()).

        Simulator-only. Returns the dict. Raises AttributeError when run() never built a machine.
        """
        m = self.m
        p = self.parser
        maps = sum(st.compared for st in self.devs.values())
        agree = sum(st.agree for st in self.devs.values())
        iommus = []
        for iommu in m.iommus:
            tlb = iommu.iotlb
            doms = []
            for d in iommu.domains:
                cookie = d.iova_cookie
                if cookie is None or cookie.iovad is None or not d.devices:
                    continue
                doms.append({"devices": [x.name for x in d.devices], **_iova_figures(cookie.iovad.ranges())})
            iommus.append({
                "fmt": iommu.fmt, "strict": bool(iommu.strict),
                "iotlb": ({"hits": tlb.hits, "misses": tlb.misses, "stale_hits": tlb.stale_hits,
                           "invalidations": tlb.invalidations, "evictions": tlb.evictions}
                          if tlb is not None else None),
                "page_table_pages": sum(d.pgtable.table_pages for d in iommu.domains
                                        if d.pgtable is not None),
                "faults": len(iommu.faults), "domains": doms})
        paths = {q: {"maps": 0, "bytes": 0} for q in PATHS}
        for st in self.devs.values():
            for q, v in st.paths.items():
                paths[q]["maps"] += v[0]
                paths[q]["bytes"] += v[1]
        span = (self.last_ts - self.first_ts) if self.first_ts is not None else 0
        return {
            "events": self.events,
            "lines": p.lineno if p else 0,
            "skipped": p.skipped if p else 0,
            "headers": p.headers if p else 0,
            "unrecognised_lines": p.unrecognised if p else 0,
            "lost_events": p.lost_events if p else 0,
            "event_counts": dict(p.counts) if p else {},
            "malformed": self.nerrors, "malformed_samples": self.errors[:20],
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events / self.seconds) if self.seconds else 0,
            "trace_span_s": round(span / 1e9, 6),
            "timestamps_clamped": self.backwards,
            "machine": {"cpus": m.cpus, "ram_bytes": m.mem.ram_bytes,
                        "iommu": self.iommu_cfg.get("mode", "off") if self.iommu_obj is not None else "off",
                        "swiotlb_slots": m.swiotlb.nslabs if m.swiotlb is not None else 0},
            "devices": {n: st.as_dict() for n, st in self.devs.items()},
            "paths": {q: v for q, v in paths.items() if v["maps"]},
            "address_agreement": round(agree / maps, 6) if maps else None,
            "iova": {"pages_in_use": iova_pages_in_use(m), "high_water_pages": self.hiwater_iova},
            "swiotlb": ({"nslabs": m.swiotlb.nslabs, "used": m.swiotlb.total_used,
                         "used_hiwater": m.swiotlb.used_hiwater,
                         "traced_bounces": sum(st.traced_bounces for st in self.devs.values()),
                         "replay_bounces": sum(st.replay_bounces for st in self.devs.values())}
                        if m.swiotlb is not None else None),
            "iommus": iommus,
            "findings": self.findings,
            "findings_total": self.nfindings,
            "finding_kinds": dict(sorted(self.kinds.items())),
            "unmatched": self.nunmatched, "unmatched_samples": self.unmatched[:20],
            "not_modelled": self.not_modelled,
            "replay_errors": self.nreplay_errors, "replay_error_samples": self.replay_errors[:20],
            "kernel_warnings": self.kernel_warnings,
            "occupancy": self.occupancy,
        }


_DIRNAME = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")


def _sg_lengths(phys, sizes, ents):
    """The segment lengths of a traced dma_map_sg: the event prints only the mapped (DMA) lengths.
    When nothing was merged (ents == nents) they are the segments'; otherwise each segment is
    taken to run to the end of its page and the last one takes the rest of the total."""
    if ents == len(phys):
        return list(sizes)
    total = sum(sizes)
    out = []
    for p in phys[:-1]:
        n = min(PAGE_SIZE - (p & (PAGE_SIZE - 1)), max(total - (len(phys) - 1 - len(out)), 1))
        out.append(n)
        total -= n
    out.append(max(total, 1))
    return out


def _iova_figures(ranges) -> dict:
    """IOVA pages in use, allocated ranges, free holes between them and fragmentation
    (1 - largest hole / all hole pages, between the lowest and the highest allocation)."""
    used = sum(hi - lo + 1 for lo, hi in ranges)
    holes = [b[0] - a[1] - 1 for a, b in zip(ranges, ranges[1:], strict=False) if b[0] > a[1] + 1]
    free = sum(holes)
    return {"pages_in_use": used, "ranges": len(ranges), "holes": len(holes),
            "fragmentation": round(1 - max(holes) / free, 6) if free else 0.0}


def _chunks(source):
    """bytes chunks of a path, a binary/text file, bytes/str, or an iterable of lines."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and (
            ": " not in source or os.path.exists(source))):
        path = os.fspath(source)
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ReplayError(0, f"{path}: {e.strerror}") from None
        with f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    return
                yield b
        return
    if isinstance(source, str):
        yield source.encode()
        return
    if isinstance(source, (bytes, bytearray)):
        yield bytes(source)
        return
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        while True:
            b = source.read(CHUNK)
            if not b:
                return
            yield b.encode() if isinstance(b, str) else b
    buf = []
    size = 0
    for line in source:
        b = line.encode() if isinstance(line, str) else bytes(line)
        buf.append(b if b.endswith(b"\n") else b + b"\n")
        size += len(b)
        if size >= CHUNK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def replay(source, machine=None, *, dma=None, iommu=None, fmt=None, iotlb=None, swiotlb=None, cpus=None,
           lenient=False, touch=None) -> dict:
    """Replay a kernel DMA trace on a simulated machine and return the report (a dict).

    ``source``: a path, an open file, bytes/str of trace text, or an iterable of lines.
    ``machine``: None, a machine spec (dict or TOML/JSON path; see load_spec) or a Machine of
    the backend. ``dma``: the backend module (default dmaphys). ``iommu`` ("off", "strict",
    "lazy"), ``fmt``, ``iotlb``, ``swiotlb`` ("auto", "off", "force", a size) and ``cpus``
    override the spec. ``lenient``: malformed lines, CPUs beyond the machine and timestamps
    that go back are counted and skipped instead of raising ReplayError. ``touch``: the device
    accesses each IOMMU mapping's pages before its unmap (default: on when an IOMMU is used).

    Simulator-only: replays the events of include/trace/events/dma.h with the kernel-named calls
    they record (dma_map_phys(), dma_unmap_phys(), ...). Returns the report dict (counts, findings,
    machine, timing; see format_report()). Raises ReplayError (a ValueError, with the line number)
    for a bad machine spec or option, an unreadable file, a malformed line, a CPU beyond the machine
    or a timestamp going back (the last three only without
    ``lenient``) and for binary input (a trace.dat, a NUL byte). An exception a replayed call
    raises (KernelBug, PhysAddrError, ...) does not propagate: it is counted in the report
    (``replay_errors``).
    """
    if dma is None:
        import dmaphys as dma
    r = Replayer(dma, machine, iommu=iommu, fmt=fmt, iotlb=iotlb, swiotlb=swiotlb, cpus=cpus,
                 lenient=lenient, touch=touch)
    r.run(source)
    return r.report()


# ---- output -------------------------------------------------------------------------------------

def format_report(r: dict) -> str:
    """The human-readable report of replay()'s dict.

    Simulator-only. Returns the lines as one str. Raises KeyError for a dict that is not a report.
    """
    out = [f"dmaphys replay: {r['events']:,} calls replayed from {r['lines']:,} lines in "
           f"{r['seconds']:.2f} s "
           f"({r['events_per_s']:,} events/s); {r['skipped']:,} lines of other events skipped"
           + (f", {r['malformed']:,} malformed lines skipped" if r["malformed"] else "")]
    mc = r["machine"]
    out.append(f"machine: {mc['cpus']} CPUs, IOMMU {mc['iommu']}, swiotlb {mc['swiotlb_slots']:,} slots; "
               f"trace span {r['trace_span_s']:.6f} s")
    if r["lost_events"]:
        out.append(f"WARNING: the trace lost {r['lost_events']:,} events (ring buffer overrun): "
                   f"expect unmatched unmaps")
    agree = r["address_agreement"]
    out.append(f"address agreement: {'n/a' if agree is None else f'{agree:.2%}'} of replayed maps got the "
               f"traced address")
    out.append("")
    out.append(f"{'device':<20}{'maps':>10}{'unmaps':>10}{'syncs':>9}{'MiB':>10}{'live':>8}"
               f"{'agree':>9}{'bounce t/r':>14}  paths")
    for name, d in r["devices"].items():
        ag = "-" if d["address_agreement"] is None else f"{d['address_agreement']:.1%}"
        out.append(f"{name:<20}{d['maps']:>10,}{d['unmaps']:>10,}{d['syncs']:>9,}{d['bytes'] / 2**20:>10.1f}"
                   f"{d['live_at_end']:>8,}{ag:>9}{d['traced_bounces']:>7,}/{d['replay_bounces']:<6,}  "
                   + ", ".join(f"{p} {v['maps']:,}" for p, v in d["paths"].items()))
    out.append("")
    out.append(f"IOVA space: {r['iova']['pages_in_use']:,} pages in use, high-water "
               f"{r['iova']['high_water_pages']:,} pages")
    for i in r["iommus"]:
        t = i["iotlb"]
        tl = (f"IOTLB hits {t['hits']:,} misses {t['misses']:,} invalidations {t['invalidations']:,}"
              if t else "no IOTLB")
        out.append(f"IOMMU {i['fmt']} ({'strict' if i['strict'] else 'lazy'}): {tl}; page-table pages "
                   f"{i['page_table_pages']:,}; faults {i['faults']:,}")
        for d in i["domains"]:
            out.append(f"  domain of {', '.join(d['devices'])}: {d['pages_in_use']:,} IOVA pages in "
                       f"{d['ranges']:,} ranges, {d['holes']:,} holes, "
                       f"fragmentation {d['fragmentation']:.3f}")
    if r["swiotlb"]:
        s = r["swiotlb"]
        out.append(f"swiotlb: {s['used']:,}/{s['nslabs']:,} slots in use, high-water {s['used_hiwater']:,}; "
                   f"bounces traced {s['traced_bounces']:,}, replayed {s['replay_bounces']:,}")
    out.append("")
    out.append(f"dma-debug findings: {r['findings_total']:,}"
               + (" (" + ", ".join(f"{k} {v:,}" for k, v in r["finding_kinds"].items()) + ")"
                  if r["finding_kinds"] else ""))
    for f in r["findings"][:30]:
        out.append(f"  line {f['line']}: [{f['kind']}] {f['text']}")
    if len(r["findings"]) > 30:
        out.append(f"  ... {r['findings_total'] - 30:,} more (--json lists up to {MAX_FINDINGS:,})")
    if r["unmatched"]:
        out.append(f"unmatched calls (not replayed): {r['unmatched']:,}")
        for u in r["unmatched_samples"][:10]:
            out.append(f"  line {u['line']}: {u['text']}")
    if r["replay_errors"]:
        out.append(f"calls the simulator refused: {r['replay_errors']:,}")
        for u in r["replay_error_samples"][:10]:
            out.append(f"  line {u['line']}: {u['text']}")
    for cat, k in r["kernel_warnings"].items():
        out.append(f"kernel warnings {cat}: {k['count']:,} (first at line {k['first_line']}: {k['first']})")
    if r["malformed"]:
        for u in r["malformed_samples"][:10]:
            out.append(f"  malformed line {u['line']}: {u['text']}")
    if r["not_modelled"]:
        out.append(f"events not modelled (counted only): {r['not_modelled']:,}")
    return "\n".join(out)


def to_json(r: dict) -> str:
    """The report as indented JSON, without the occupancy samples.

    Simulator-only. Returns the str. Raises TypeError for values JSON cannot hold.
    """
    return json.dumps({k: v for k, v in r.items() if k != "occupancy"}, indent=2)


def plot_report(r: dict, path: str) -> None:
    """IOVA pages and swiotlb slots in use over the replay (matplotlib).

    Simulator-only. Returns None. Raises ImportError without matplotlib, OSError when ``path``
    cannot be written, KeyError for a dict that is not a report.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    occ = r["occupancy"] or [(0, 0, 0)]
    ax.plot([o[0] for o in occ], [o[1] for o in occ], label="IOVA pages in use")
    ax.plot([o[0] for o in occ], [o[2] for o in occ], label="swiotlb slots in use")
    ax.set_xlabel("events replayed")
    ax.set_title(f"dmaphys replay: {r['events']:,} events, {r['findings_total']:,} findings")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the command ----------------------------------------------------------------------------

def build_parser_args(sub) -> None:
    """Add the ``replay`` subcommand to the ``dmaphys`` argparse subparsers.

    Simulator-only (the CLI). Returns None. Raises argparse.ArgumentError when ``replay`` exists
    already.
    """
    rp = sub.add_parser("replay", help="replay a kernel DMA trace (dma:* tracepoints) on a simulated machine",
                        description="Replay the dma:* and swiotlb:swiotlb_bounced events of a kernel trace "
                                    "(/sys/kernel/tracing/trace or `trace-cmd report` text) on a simulated "
                                    "machine: what-if IOMMU/IOTLB/swiotlb studies and dma-debug findings "
                                    "with trace line numbers. Exit 0: no findings; 1: findings; "
                                    "2: bad input.")
    rp.add_argument("trace", help="trace text file ('-' = standard input)")
    rp.add_argument("--iommu", choices=("off", "strict", "lazy"), default=None,
                    help="put the devices behind an IOMMU (default: the spec's, else off)")
    rp.add_argument("--fmt", default=None, help="IOMMU page-table format (default x86-64)")
    rp.add_argument("--iotlb", default=None,
                    help="IOTLB: off, qemu, or entries=N,ways=N,policy=lru|fifo|random")
    rp.add_argument("--swiotlb", default=None, help="swiotlb: auto (default), off, force, or a size (64M)")
    rp.add_argument("--machine", metavar="SPEC", default=None, help="machine spec file (.toml or .json)")
    rp.add_argument("--cpus", type=int, default=None,
                    help="simulated CPUs (default: the trace header's, else 4)")
    rp.add_argument("--no-touch", action="store_true", help="no device accesses (IOTLB figures stay 0)")
    rp.add_argument("--lenient", action="store_true",
                    help="skip and count malformed lines instead of stopping")
    rp.add_argument("--json", action="store_true", help="print the report as JSON")
    rp.add_argument("--plot", metavar="FILE.png", help="write IOVA / swiotlb occupancy over the replay")
    rp.add_argument("--backend", choices=("core", "reference"), default="core")
    rp.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """``dmaphys replay``: replay ``args.trace`` and print the report (or JSON), maybe a plot.

    Simulator-only (the CLI). Returns the exit code: 0 no findings, 1 findings, 2 bad input or
    no matplotlib for --plot. Raises OSError when the plot cannot be written; errors of the
    input are printed, not raised.
    """
    if args.backend == "reference":
        import dmaphys.reference as dma
    else:
        import dmaphys as dma
    src = sys.stdin.buffer if args.trace == "-" else args.trace
    try:
        rep = replay(src, args.machine, dma=dma, iommu=args.iommu, fmt=args.fmt, iotlb=args.iotlb,
                     swiotlb=args.swiotlb, cpus=args.cpus, lenient=args.lenient,
                     touch=False if args.no_touch else None)
    except ReplayError as e:
        print(f"dmaphys replay: {args.trace}: {e}", file=sys.stderr)
        return 2
    print(to_json(rep) if args.json else format_report(rep))
    if args.plot:
        try:
            plot_report(rep, args.plot)
        except ImportError:
            print("dmaphys replay: --plot needs matplotlib (pip install 'dmaphys[plot]')", file=sys.stderr)
            return 2
        if not args.json:
            print(f"plot written to {args.plot}")
    return 1 if rep["findings_total"] else 0
