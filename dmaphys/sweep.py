"""``dmaphys sweep SPEC.toml``: parameter studies over a grid of deterministic runs, on Dask.

A spec names a base configuration and axes (TOML, read with tomllib)::

    [base]
    kind = "stress"            # or "dmabuf"
    scenarios = ["nic"]
    ops = 200000

    [axes]
    iotlb_capacity = [64, 256, 1024]
    iommu = ["strict", "lazy"]
    seed = [1, 2, 3]

The grid is the product of the axes in the order they are written (the last axis varies
fastest); point ``i`` is the i-th combination, its parameters the kind's defaults, updated by
``[base]``, then by the axis values. A point is one deterministic run:

- ``kind = "stress"``: ``dmaphys.stress.run`` on the default machine, varied by the
  parameters (see STRESS_PARAMS);
- ``kind = "dmabuf"``: a dma-buf of ``ranges`` physically scattered ranges of ``range_size``
  bytes mapped ``rounds`` times for one device behind the IOMMU, either with the two-step API
  (``method = "two-step"``: dma_iova_try_alloc, dma_iova_link per range, one dma_iova_sync,
  dma_iova_destroy) or per range (``method = "per-range"``: dma_map_phys / dma_unmap_phys per
  range), every byte the device reads and writes checked.

**Per page.** ``pages_mapped`` counts the 4 KiB pages (PAGE_SIZE) covered by every successful
DMA mapping the point made: a mapping of ``size`` bytes at physical address ``phys`` counts
``(phys % 4096 + size + 4095) // 4096`` pages (``stress.pages_spanned``), whatever the path
(dma-direct, swiotlb, IOMMU, P2P) and whether or not an IOMMU is on. A two-step dma-buf counts
each linked range like a mapping. ``X_per_page`` is the IOTLB counter X summed over the
machine's IOMMUs divided by ``pages_mapped``: ``iotlb_lookups`` = IOTLB hits + misses (one per
device request translated), ``iotlb_misses`` (page-table walks), ``iotlb_invalidations``
(invalidation commands: per-range syncs of strict unmaps, the flush queue's flush-alls, ...).
With the IOMMU off these are 0.

A row carries ``point``, one column per parameter (axes first, named as the axis), the figures
of METRICS and ``status``: ``ok``, ``integrity: N errors``, ``error: Type: message`` (the run
raised: a bad combination of values), or ``lost: ...`` (the cluster lost the point: a
``--resume`` recomputes it). Rows hold no timings, so a spec gives the same rows whatever the
cluster and the order in which points finish; the output is sorted by ``point``.

Dask (``pip install "dmaphys[sweep]"``) is imported only when a sweep runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import os
import sys
import tomllib
from dataclasses import dataclass

KINDS = ("stress", "dmabuf")
IOMMU_MODES = ("off", "strict", "lazy")
IOTLB_POLICIES = ("lru", "fifo", "random")
METHODS = ("two-step", "per-range")
SCENARIOS = ("swiotlb", "direct", "nic", "nvme", "p2p")   # = stress.SCENARIOS (checked by a test)
DEFAULT_SWEEP_OPS = 200_000

# the IOMMU parameters both kinds share: name -> default
_IOMMU_PARAMS = {
    "iommu": "lazy", "fmt": "x86-64", "iotlb_capacity": 512, "iotlb_ways": 8, "iotlb_policy": "lru",
    "fq_size": None, "fq_timeout": None,
}
STRESS_PARAMS = {"seed": 1, "scenarios": "nic", "ops": DEFAULT_SWEEP_OPS, **_IOMMU_PARAMS,
                 "swiotlb_size": None, "map_size": None}
DMABUF_PARAMS = {"seed": 1, "method": "two-step", "ranges": 16, "range_size": 16384, "rounds": 100,
                 **_IOMMU_PARAMS}
PARAMS = {"stress": STRESS_PARAMS, "dmabuf": DMABUF_PARAMS}

METRICS = ("operations", "pages_mapped", "iotlb_lookups", "iotlb_misses", "iotlb_invalidations",
           "iotlb_lookups_per_page", "iotlb_misses_per_page", "iotlb_invalidations_per_page",
           "iotlb_stale_hits", "iotlb_syncs", "iotlb_flushes", "iova_high_water_pages",
           "swiotlb_used_hiwater", "map_failures", "device_faults", "integrity_errors")

# labels with units, for tables and plots
LABELS = {
    "seed": "seed", "scenarios": "scenarios", "ops": "operations (count)", "iommu": "IOMMU mode",
    "fmt": "page-table format", "iotlb_capacity": "IOTLB capacity (entries)",
    "iotlb_ways": "IOTLB ways", "iotlb_policy": "IOTLB replacement policy",
    "fq_size": "flush-queue size (entries)", "fq_timeout": "flush-queue timeout (ms)",
    "swiotlb_size": "swiotlb size (bytes)", "map_size": "mapping size (bytes)",
    "method": "dma-buf mapping method", "ranges": "dma-buf ranges (count)",
    "range_size": "range size (bytes)", "rounds": "dma-buf map rounds (count)",
    "operations": "operations (count)", "pages_mapped": "pages mapped (4 KiB pages)",
    "iotlb_lookups": "IOTLB lookups (count)", "iotlb_misses": "IOTLB misses (count)",
    "iotlb_invalidations": "IOTLB invalidations (count)",
    "iotlb_lookups_per_page": "IOTLB lookups per 4 KiB page mapped",
    "iotlb_misses_per_page": "IOTLB misses per 4 KiB page mapped",
    "iotlb_invalidations_per_page": "IOTLB invalidations per 4 KiB page mapped",
    "iotlb_stale_hits": "stale IOTLB hits (count)", "iotlb_syncs": "IOTLB range syncs (count)",
    "iotlb_flushes": "IOTLB flush-alls (count)", "iova_high_water_pages": "IOVA high-water (pages)",
    "swiotlb_used_hiwater": "swiotlb high-water (slots)", "map_failures": "map failures (count)",
    "device_faults": "device faults (count)", "integrity_errors": "integrity errors (count)",
}


class SpecError(ValueError):
    """The spec is invalid: nothing has run.

    Simulator-only (a ValueError of the sweep tool).
    """


# ---- the spec ---------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30}


def _size(v, what: str, allow_zero: bool = False) -> int:
    """A size in bytes: an int or a string such as "64MiB", "4k"."""
    if isinstance(v, str):
        t = v.strip().lower().replace("_", "").replace(" ", "")
        num = t.rstrip("kmgib")
        unit = t[len(num):]
        if unit not in _SIZE_UNITS or not num.isdigit():
            raise SpecError(f"{what}: {v!r} is not a size (an integer of bytes, or like '64MiB')")
        v = int(num) * _SIZE_UNITS[unit]
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{what}: {v!r} is not a size (an integer of bytes, or like '64MiB')")
    if v < 0 or (v == 0 and not allow_zero):
        raise SpecError(f"{what}: {v} must be {'>= 0' if allow_zero else 'positive'}")
    return v


def _int(v, what: str, lo: int, hi: int | None = None) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{what}: {v!r} is not an integer")
    if v < lo or (hi is not None and v > hi):
        raise SpecError(f"{what}: {v} is out of range ({lo}..{hi if hi is not None else ''})")
    return v


def _choice(v, what: str, choices) -> str:
    if v not in choices:
        raise SpecError(f"{what}: {v!r} is not one of {', '.join(choices)}")
    return v


def _formats() -> tuple[str, ...]:
    from .reference.io_pgtable import IOPGTABLE_FORMATS
    return tuple(IOPGTABLE_FORMATS)


def check_value(name: str, v):
    """The normalised value of parameter ``name`` (SpecError when it is not valid).

    Simulator-only (the parameter-study tool). Returns the normalised value. Raises SpecError for a
    missing, mistyped or out-of-range value or an unknown parameter.
    """
    what = f"{name} = {v!r}"
    if v is None:
        raise SpecError(f"{name}: a value is needed")
    if name == "seed":
        return _int(v, what, 0, 2**63 - 1)
    if name in ("ops", "rounds"):
        return _int(v, what, 1)
    if name == "ranges":
        return _int(v, what, 1, 4096)
    if name == "scenarios":
        names = [v] if isinstance(v, str) else v
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{what}: give a scenario name or a list of them ({', '.join(SCENARIOS)})")
        names = [n.strip() for s in names for n in s.split(",") if n.strip()]
        if names == ["all"]:
            names = list(SCENARIOS)
        bad = [n for n in names if n not in SCENARIOS]
        if bad or not names or len(set(names)) != len(names):
            raise SpecError(f"{what}: unknown or repeated scenario {', '.join(bad) or names!r}; "
                            f"choose from {', '.join(SCENARIOS)} or 'all'")
        return ",".join(names)
    if name == "iommu":
        return _choice(v, what, IOMMU_MODES)
    if name == "fmt":
        return _choice(v, what, _formats())
    if name == "iotlb_capacity":
        return _int(v, what, 1, 1 << 24)
    if name == "iotlb_ways":
        return _int(v, what, 1, 1 << 24)
    if name == "iotlb_policy":
        return _choice(v, what, IOTLB_POLICIES)
    if name == "fq_size":
        v = _int(v, what, 2, 1 << 20)
        if v & (v - 1):
            raise SpecError(f"{what}: the flush-queue size must be a power of two")
        return v
    if name == "fq_timeout":
        return _int(v, what, 1, 3_600_000)
    if name == "swiotlb_size":
        return _size(v, what, allow_zero=True)
    if name == "map_size":
        return _size(v, what)
    if name == "range_size":
        v = _size(v, what)
        if v % 4096:
            raise SpecError(f"{what}: dma-buf ranges are whole 4 KiB pages (a multiple of 4096)")
        return v
    if name == "method":
        return _choice(v, what, METHODS)
    raise SpecError(f"unknown parameter {name!r}")                 # pragma: no cover


@dataclass
class Spec:
    """A validated sweep spec: the point ``kind``, the resolved ``base`` parameters and the
    ``axes`` (name -> values); ``len(spec)`` is the number of points.

    Simulator-only. A dataclass: constructing one checks nothing (parse_spec() does) and raises
    TypeError for missing fields.
    """

    kind: str
    base: dict                 # the resolved base parameters (defaults + [base])
    axes: dict                 # axis name -> list of normalised values, in spec order
    source: str = "<spec>"

    @property
    def columns(self) -> list[str]:
        """The result columns: point, kind, the parameters (axes first), the metrics, status."""
        params = list(self.axes) + [p for p in PARAMS[self.kind] if p not in self.axes]
        return ["point", "kind", *params, *METRICS, "status"]

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def points(self) -> list[dict]:
        """Every point's full parameter dict, in point order.

        Simulator-only (the parameter-study tool). Returns the list. Raises nothing.
        """
        out = []
        names = list(self.axes)
        for combo in itertools.product(*(self.axes[n] for n in names)):
            p = dict(self.base)
            p.update(zip(names, combo, strict=True))
            out.append(p)
        return out


def _unknown(name: str, kind: str) -> SpecError:
    import difflib
    known = list(PARAMS[kind])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(f"unknown parameter {name!r} for kind {kind!r}{hint}; known: {', '.join(known)}")


def parse_spec(data: dict, source: str = "<spec>") -> Spec:
    """Validate a parsed TOML document; SpecError says what is wrong.

    Simulator-only (the parameter-study tool). Returns the Spec. Raises SpecError for unknown tables
    or parameters, a bad kind, missing or empty axes, repeated values or invalid values.
    """
    extra = set(data) - {"base", "axes"}
    if extra:
        raise SpecError(f"unknown table(s) {', '.join(sorted(extra))}: a spec has [base] and [axes]")
    base = data.get("base", {})
    axes = data.get("axes")
    if not isinstance(base, dict):
        raise SpecError("[base] must be a table")
    if not isinstance(axes, dict) or not axes:
        raise SpecError("[axes] is missing or empty: give at least one axis (e.g. seed = [1, 2])")
    kind = base.get("kind", "stress")
    if kind not in KINDS:
        raise SpecError(f"kind = {kind!r} is not one of {', '.join(KINDS)}")
    if "kind" in axes:
        raise SpecError("kind cannot be an axis: write one spec per kind")
    resolved = dict(PARAMS[kind])
    for name, v in base.items():
        if name == "kind":
            continue
        if name not in resolved:
            raise _unknown(name, kind)
        resolved[name] = check_value(name, v)
    norm_axes: dict = {}
    for name, values in axes.items():
        if name not in resolved:
            raise _unknown(name, kind)
        if not isinstance(values, list):
            raise SpecError(f"axis {name}: give a list of values, not {values!r}")
        if not values:
            raise SpecError(f"axis {name} is empty: the grid has no point")
        vals = [check_value(name, v) for v in values]
        if len(set(map(repr, vals))) != len(vals):
            raise SpecError(f"axis {name}: repeated value in {values!r}")
        norm_axes[name] = vals
    return Spec(kind, resolved, norm_axes, source)


def load_spec(path: str) -> Spec:
    """The Spec of the TOML file ``path``.

    Simulator-only. Returns the Spec. Raises SpecError for a missing file, invalid TOML or an
    invalid spec (see parse_spec()); OSError for other read errors.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(data, path)


# ---- one point ------------------------------------------------------------------------------

def _iotlb_figures(m) -> dict:
    hits = misses = inval = stale = syncs = flushes = 0
    for iommu in m.iommus:
        t = iommu.iotlb
        if t is not None:
            hits += t.hits
            misses += t.misses
            inval += t.invalidations
            stale += t.stale_hits
        for d in iommu.domains:
            syncs += d.iotlb_syncs
            flushes += d.iotlb_flushes
    return {"iotlb_lookups": hits + misses, "iotlb_misses": misses, "iotlb_invalidations": inval,
            "iotlb_stale_hits": stale, "iotlb_syncs": syncs, "iotlb_flushes": flushes}


def _per_page(row: dict) -> None:
    pages = row["pages_mapped"]
    for k in ("iotlb_lookups", "iotlb_misses", "iotlb_invalidations"):
        row[f"{k}_per_page"] = round(row[k] / pages, 6) if pages else 0.0


def _machine_opts(p: dict) -> dict:
    return {"iommu": p["iommu"], "fmt": p["fmt"], "iotlb_capacity": p["iotlb_capacity"],
            "iotlb_ways": p["iotlb_ways"], "iotlb_policy": p["iotlb_policy"], "fq_size": p["fq_size"],
            "fq_timeout": p["fq_timeout"]}


def _run_stress(p: dict, dma) -> dict:
    from . import stress

    r = stress.run(ops=p["ops"], seed=p["seed"], scenarios=p["scenarios"].split(","), dma=dma,
                   progress=False, swiotlb_size=p["swiotlb_size"], map_size=p["map_size"],
                   **_machine_opts(p))
    row = {"operations": r["operations"], "pages_mapped": r["pages_mapped"]}
    t = [i["iotlb"] for i in r["iommus"]]
    row.update({"iotlb_lookups": sum(x["hits"] + x["misses"] for x in t),
                "iotlb_misses": sum(x["misses"] for x in t),
                "iotlb_invalidations": sum(x["invalidations"] for x in t),
                "iotlb_stale_hits": sum(x["stale_hits"] for x in t),
                "iotlb_syncs": sum(i["iotlb_syncs"] for i in r["iommus"]),
                "iotlb_flushes": sum(i["iotlb_flushes"] for i in r["iommus"])})
    row["iova_high_water_pages"] = r["iova"]["high_water_pages"]
    row["swiotlb_used_hiwater"] = r["swiotlb"]["used_hiwater"] if r["swiotlb"] else 0
    row["map_failures"] = sum(path["map_failures"] for path in r["paths"].values())
    row["device_faults"] = sum(r["device_faults"].values())
    row["integrity_errors"] = r["integrity_errors"]
    return row


def _run_dmabuf(p: dict, dma) -> dict:
    """A dma-buf of ``ranges`` scattered ranges mapped ``rounds`` times, two-step or per range."""
    import random

    from .constants import DMA_BIDIRECTIONAL, DMA_BIT_MASK
    from .stress import build_default_machine, pages_spanned

    rng = random.Random(p["seed"])
    m = build_default_machine(dma, iommu_mode=p["iommu"], fmt=p["fmt"], iotlb_capacity=p["iotlb_capacity"],
                              iotlb_ways=p["iotlb_ways"], iotlb_policy=p["iotlb_policy"],
                              fq_size=p["fq_size"], fq_timeout=p["fq_timeout"])
    iommu = m.iommus[0] if m.iommus else None
    dev = m.add_device("importer0", dma_mask=DMA_BIT_MASK(64),
                       **({"iommu": iommu} if iommu is not None else {}))
    n, size = p["ranges"], p["range_size"]
    npages = pages_spanned(0, size)
    # the exporter's ranges: physically scattered (a hole after each), in a shuffled order
    chunks = [m.alloc_pages(npages + 1) for _ in range(n)]
    rng.shuffle(chunks)
    ranges = [c for c in chunks]
    total = n * size
    two_step = p["method"] == "two-step"
    d = DMA_BIDIRECTIONAL
    row = {"operations": 0, "pages_mapped": 0, "map_failures": 0}
    errors = 0
    for _ in range(p["rounds"]):
        data = [rng.randbytes(size) for _ in range(n)]
        for phys, b in zip(ranges, data, strict=True):
            m.mem_write(phys, b)
        if two_step:
            state = dma.DmaIovaState()
            row["operations"] += 1
            if not dma.dma_iova_try_alloc(dev, state, ranges[0], total):
                raise RuntimeError("dma_iova_try_alloc failed: the two-step API needs an IOMMU "
                                   "(iommu = 'off' maps through dma-direct)")
            for i, phys in enumerate(ranges):
                ret = dma.dma_iova_link(dev, state, phys, i * size, size, d, 0)
                row["operations"] += 1
                if ret:
                    raise RuntimeError(f"dma_iova_link failed ({ret})")
                row["pages_mapped"] += pages_spanned(phys, size)
            ret = dma.dma_iova_sync(dev, state, 0, total)
            row["operations"] += 1
            if ret:
                raise RuntimeError(f"dma_iova_sync failed ({ret})")
            addrs = [state.addr + i * size for i in range(n)]
        else:
            addrs = []
            for phys in ranges:
                a = dma.dma_map_phys(dev, phys, size, d, 0)
                row["operations"] += 1
                if dma.dma_mapping_error(dev, a):
                    row["map_failures"] += 1
                    raise RuntimeError("dma_map_phys failed")
                row["pages_mapped"] += pages_spanned(phys, size)
                addrs.append(a)
        # the importer reads each range, then writes it back changed
        new = []
        for a, b in zip(addrs, data, strict=True):
            if dev.dma_read(a, size) != b:
                errors += 1
            nb = rng.randbytes(size)
            dev.dma_write(a, nb)
            new.append(nb)
            row["operations"] += 2
        if two_step:
            dma.dma_iova_destroy(dev, state, total, d, 0)
            row["operations"] += 1
        else:
            for a in addrs:
                dma.dma_unmap_phys(dev, a, size, d, 0)
                row["operations"] += 1
        for phys, b in zip(ranges, new, strict=True):
            if m.mem_read(phys, size) != b:
                errors += 1
        m.advance(10_000)
    row.update(_iotlb_figures(m))
    from .stress import iova_pages_in_use
    row["iova_high_water_pages"] = iova_pages_in_use(m)
    row["swiotlb_used_hiwater"] = m.swiotlb.used_hiwater if m.swiotlb is not None else 0
    row["device_faults"] = sum(dv.faults for dv in m.devices.values())
    row["integrity_errors"] = errors
    return row


def run_point(index: int, kind: str, params: dict, backend: str = "core") -> dict:
    """Run one point; never raises: a failure is the row's ``status``.

    Simulator-only (the parameter-study tool). Returns the row dict (parameters, metrics, status).
    Raises nothing: an exception becomes ``status`` "error: ...".
    """
    import warnings

    if backend == "reference":
        import dmaphys.reference as dma
    else:
        import dmaphys as dma
    row = {"point": index, "kind": kind, **params}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # kernel warnings: counted, not raised
            fig = (_run_stress if kind == "stress" else _run_dmabuf)(params, dma)
        row.update(fig)
        _per_page(row)
        row["status"] = ("ok" if not row["integrity_errors"]
                         else f"integrity: {row['integrity_errors']} errors")
    except Exception as e:             # noqa: BLE001 - the row reports it, the sweep goes on
        msg = " ".join(str(e).split())[:200]
        row["status"] = f"error: {type(e).__name__}: {msg}"
    return row


# ---- rows on disk ---------------------------------------------------------------------------

def cell(v) -> str:
    """The CSV text of a value (None -> empty).

    Simulator-only (the parameter-study tool). Returns the str. Raises nothing.
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


def _journal_path(out: str) -> str:
    return out if out.endswith(".csv") else out + ".partial.csv"


def read_rows(path: str) -> list[dict]:
    """Rows (string cells) of a results file (.csv or .parquet).

    Simulator-only (the parameter-study tool). Returns a list of dicts. Raises OSError for an
    unreadable file, ImportError for .parquet without pandas / pyarrow.
    """
    if path.endswith(".parquet"):
        import pandas as pd
        df = pd.read_parquet(path)
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return list(csv.DictReader(io.StringIO(buf.getvalue())))
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RowSink:
    """Streams rows to ``out`` as they come (CSV; for .parquet a .partial.csv journal), then
    writes the whole file sorted by point.

    Simulator-only (the parameter-study tool). Constructing one opens the journal for appending:
    raises OSError when it cannot.
    """

    def __init__(self, out: str, columns: list[str], existing: dict[int, dict]):
        self.out = out
        self.columns = columns
        self.rows: dict[int, dict] = dict(existing)
        self.journal = _journal_path(out)
        self.f = open(self.journal, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=columns, extrasaction="ignore")

    def add(self, row: dict) -> None:
        """Append ``row`` to the journal (flushed at once) and keep it.

        Simulator-only. Returns None. Raises OSError when the write fails, KeyError / ValueError
        for a row without an integer ``point``.
        """
        cells = {c: cell(row.get(c)) for c in self.columns}
        self.rows[int(row["point"])] = cells
        self.w.writerow(cells)
        self.f.flush()

    def finish(self) -> list[dict]:
        """Close the journal and write ``out`` with every row, sorted by point (atomically).

        Simulator-only. Returns the rows. Raises OSError when the file cannot be written,
        ImportError for .parquet without pandas / pyarrow.
        """
        self.f.close()
        rows = [self.rows[k] for k in sorted(self.rows)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
        tmp = self.out + ".tmp"
        if self.out.endswith(".parquet"):
            import pandas as pd
            pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""]).to_parquet(tmp, index=False)
            os.replace(tmp, self.out)
            os.remove(self.journal)
        else:
            with open(tmp, "w", newline="") as f:
                f.write(text)
            os.replace(tmp, self.out)
        return rows


def _resumable(spec: Spec, out: str) -> dict[int, dict]:
    """The rows already in ``out`` (and its journal) that a resume keeps, checked against the spec."""
    rows: dict[int, dict] = {}
    for path in dict.fromkeys((out, _journal_path(out))):
        if os.path.exists(path):
            try:
                got = read_rows(path) if os.path.getsize(path) else []
            except Exception as e:                              # noqa: BLE001
                raise SpecError(f"{path}: cannot read it to resume ({e})") from None
            for r in got:
                try:
                    rows[int(r["point"])] = r                     # later (journal) rows win
                except (KeyError, TypeError, ValueError):
                    raise SpecError(f"{path}: not a dmaphys sweep results file") from None
    points = spec.points()
    keep = {}
    for i, r in rows.items():
        if not 0 <= i < len(points):
            raise SpecError(f"{out}: has point {i}, the spec has {len(points)} points: a different spec?")
        for k, v in points[i].items():
            if k in r and (r[k] or "") != cell(v):
                raise SpecError(f"{out}: point {i} has {k} = {r[k]!r} where the spec gives {cell(v)!r}: "
                                f"written by a different spec")
        status = r.get("status", "")
        if status and not status.startswith("lost"):
            keep[i] = {c: r.get(c, "") or "" for c in spec.columns}
    return keep


# ---- running on Dask ---------------------------------------------------------------------------

def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="point", desc="dmaphys sweep", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


class ClusterError(RuntimeError):
    """The scheduler could not be reached (nothing has run).

    Simulator-only (a RuntimeError of the sweep tool).
    """


def run_sweep(spec: Spec, out: str, *, scheduler: str | None = None, workers: int | None = None,
              resume: bool = False, progress: bool = False, backend: str = "core",
              timings: dict | None = None) -> list[dict]:
    """Run every point not already done; returns the rows (string cells) sorted by point.

    ``timings`` (a dict) receives ``cluster_start_s`` (connecting / starting the LocalCluster),
    ``points_s`` (from the first submit to the last row streamed to disk) and ``busy_s`` (the
    workers' compute time of the points, from Dask's task stream).

    Simulator-only (the parameter-study tool). Returns the rows. Raises ClusterError when
    ``scheduler`` cannot be reached, SpecError when ``resume`` finds a results file of another spec,
    OSError when ``out`` cannot be written, ImportError without Dask. A point that fails is a row
    whose status says so, not an exception.
    """
    import contextlib
    import time
    import uuid

    from dask.distributed import Client, LocalCluster, as_completed

    t0 = time.perf_counter()
    t1 = t2 = t0
    existing = _resumable(spec, out) if resume else {}
    points = spec.points()
    todo = [i for i in range(len(points)) if i not in existing]
    cluster = client = None
    try:
        if todo:
            if scheduler:
                try:
                    client = Client(scheduler, timeout="30s")
                except (OSError, TimeoutError) as e:
                    raise ClusterError(f"cannot reach the scheduler {scheduler}: {e}") from None
            else:
                n = workers or os.cpu_count() or 1
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
                client = Client(cluster)
                client.wait_for_workers(n)
        t1 = time.perf_counter()
        if not resume and os.path.exists(out):
            os.remove(out)
        # the journal starts with the rows kept (a resume drops the lost ones), then grows
        with open(_journal_path(out), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=spec.columns)
            w.writeheader()
            w.writerows(existing[k] for k in sorted(existing))
        sink = RowSink(out, spec.columns, existing)
        if client is not None:
            tag = uuid.uuid4().hex[:12]
            stream = contextlib.nullcontext()
            if timings is not None:
                from dask.distributed import get_task_stream
                stream = get_task_stream(client)
            with stream as ts:
                futures = {client.submit(run_point, i, spec.kind, points[i], backend, pure=False,
                                         key=f"dmaphys-point-{i}-{tag}"): i for i in todo}
                with _progress_bar(len(todo), progress) as bar:
                    for fut in as_completed(futures):
                        i = futures[fut]
                        try:
                            row = fut.result()
                        except Exception as e:                   # noqa: BLE001 - a lost point
                            why = " ".join(str(e).split())[:160]
                            row = {"point": i, "kind": spec.kind, **points[i],
                                   "status": f"lost: {type(e).__name__}: {why}"}
                        sink.add(row)
                        bar.update(1)
                        fut.release()
                t2 = time.perf_counter()
            if ts is not None:
                timings["busy_s"] = sum(ss["stop"] - ss["start"] for t in ts.data
                                        for ss in t.get("startstops", ()) if ss.get("action") == "compute")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    rows = sink.finish()
    if timings is not None:
        timings["cluster_start_s"] = t1 - t0
        timings["points_s"] = t2 - t1
    return rows


# ---- tables ------------------------------------------------------------------------------------

TABLE_METRICS = ("pages_mapped", "iotlb_lookups_per_page", "iotlb_misses_per_page",
                 "iotlb_invalidations_per_page", "iotlb_stale_hits", "integrity_errors")


def format_table(rows: list[dict], spec_axes: list[str], metrics=TABLE_METRICS) -> str:
    """A Markdown table: point, the axes, the main figures, status.

    Simulator-only (the parameter-study tool). Returns the table as one str. Raises nothing for rows
    of string cells.
    """
    cols = ["point", *spec_axes, *metrics, "status"]
    rule = "|" + "|".join("---:" if c != "status" else "---" for c in cols) + "|"
    out = ["| " + " | ".join(cols) + " |", rule]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


# ---- plots -------------------------------------------------------------------------------------

PLOT_METRICS = ("iotlb_lookups_per_page", "iotlb_misses_per_page", "iotlb_invalidations_per_page",
                "iotlb_stale_hits", "integrity_errors")


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _axes_of(rows: list[dict]) -> list[str]:
    """The parameter columns that vary across the rows (in column order)."""
    if not rows:
        return []
    cols = [c for c in rows[0] if c not in ("point", "kind", "status") and c not in METRICS]
    return [c for c in cols if len({r.get(c, "") for r in rows}) > 1]


def plot_rows(rows: list[dict], outdir: str, metrics=PLOT_METRICS) -> list[str]:
    """One PNG per metric (a line per combination of the non-x axes, the mean over seeds with
    min-max bars) and overview.png with the metrics side by side; returns the paths.

    Simulator-only (the parameter-study tool). Returns the list of PNG paths. Raises ImportError
    without matplotlib, OSError when ``outdir`` cannot be written.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    ok = [r for r in rows if r.get("status") == "ok"]
    varying = _axes_of(ok)
    series_axes = [a for a in varying if a != "seed"]
    numeric = [a for a in series_axes if all(_num(r[a]) is not None for r in ok)]
    x = numeric[0] if numeric else (series_axes[0] if series_axes else None)
    others = [a for a in series_axes if a != x]
    nseeds = len({r.get("seed") for r in ok})
    paths = []

    def draw(ax, metric):
        groups: dict = {}
        for r in ok:
            key = tuple(r[a] for a in others)
            xv = r[x] if x else ""
            groups.setdefault(key, {}).setdefault(xv, []).append(_num(r.get(metric)) or 0.0)
        numeric_x = x in numeric
        xs_all = sorted({xv for g in groups.values() for xv in g},
                        key=lambda v: (_num(v) is None, _num(v), v))
        for k, (key, g) in enumerate(sorted(groups.items())):
            xs = [xv for xv in xs_all if xv in g]
            mean = [sum(g[xv]) / len(g[xv]) for xv in xs]
            lo = [max(0.0, m - min(g[xv])) for m, xv in zip(mean, xs, strict=True)]
            hi = [max(0.0, max(g[xv]) - m) for m, xv in zip(mean, xs, strict=True)]
            pos = [float(xv) for xv in xs] if numeric_x else [xs_all.index(xv) for xv in xs]
            label = ", ".join(f"{a}={v}" for a, v in zip(others, key, strict=True)) or None
            # equal series stay visible: each its own marker, line style and size
            ax.errorbar(pos, mean, yerr=[lo, hi] if nseeds > 1 else None, marker="os^Dvx"[k % 6],
                        linestyle=("-", "--", ":", "-.")[k % 4], markersize=8 - 1.5 * (k % 3), capsize=3,
                        alpha=0.85, label=label)
        if numeric_x:
            vals = [float(v) for v in xs_all]
            if vals and min(vals) > 0 and max(vals) / min(vals) >= 8:
                ax.set_xscale("log", base=2)
                ax.set_xticks(vals)
                ax.set_xticklabels([str(int(v)) if v == int(v) else str(v) for v in vals])
        else:
            ax.set_xticks(range(len(xs_all)))
            ax.set_xticklabels(xs_all)
        ax.set_xlabel(LABELS.get(x, x) if x else "")
        ax.set_ylabel(LABELS.get(metric, metric))
        vals = [_num(r.get(metric)) or 0.0 for r in ok]
        top = max(vals, default=0.0)
        if vals and min(vals) > 0 and top / min(vals) >= 50:
            ax.set_yscale("log")                  # e.g. strict vs lazy invalidations: 250x apart
            ax.set_ylabel(LABELS.get(metric, metric) + " (log scale)")
        else:
            ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=8)

    sub = f" (mean of {nseeds} seeds, bars: min-max)" if nseeds > 1 else ""
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        draw(ax, metric)
        ax.set_title(LABELS.get(metric, metric) + sub, fontsize=10)
        fig.tight_layout()
        path = os.path.join(outdir, f"{metric}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, metric in itertools.zip_longest(axs.flat, metrics):
        if metric is None:
            ax.set_visible(False)
        else:
            draw(ax, metric)
    fig.suptitle(f"dmaphys sweep: {len(ok)} points{sub}", fontsize=11)
    fig.tight_layout()
    path = os.path.join(outdir, "overview.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths


# ---- the commands --------------------------------------------------------------------------------

def _fail(msg: str) -> int:
    print(f"dmaphys sweep: {msg}", file=sys.stderr)
    return 2


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _metric_list(text: str) -> tuple[str, ...]:
    from .cli import comma_list

    return comma_list(text, METRICS, "metric", f"known: {', '.join(METRICS)}")


def cmd_sweep(args: argparse.Namespace) -> int:
    """``dmaphys sweep``: check everything, run the points, print the table, maybe plot.

    Simulator-only (the CLI). Returns the exit code: 0 every point ok, 1 some failed, 2 a bad
    spec, option, missing extra or unreachable scheduler (with a message). Raises OSError when
    results or plots cannot be written.
    """
    try:
        spec = load_spec(args.spec)
    except SpecError as e:
        return _fail(str(e))
    out = args.out or os.path.splitext(os.path.basename(args.spec))[0] + ".csv"
    if not out.endswith((".csv", ".parquet")):
        return _fail(f"--out {out}: give a .csv or .parquet file")
    if not args.resume and not args.overwrite and (os.path.exists(out) or os.path.exists(_journal_path(out))):
        return _fail(f"{out} exists: --resume to complete it, --overwrite to start again")
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return _fail("needs Dask: pip install 'dmaphys[sweep]'")
    if out.endswith(".parquet"):
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            return _fail("--out .parquet needs pandas and pyarrow (pip install 'dmaphys[sweep]')")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib (pip install 'dmaphys[plot]')")
    try:
        if args.resume:
            _resumable(spec, out)                     # a mismatching file is an error before anything runs
    except SpecError as e:
        return _fail(str(e))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    print(f"dmaphys sweep: {len(spec)} points of kind {spec.kind} "
          f"({' x '.join(f'{a}[{len(v)}]' for a, v in spec.axes.items())}) -> {out}", file=sys.stderr)
    try:
        rows = run_sweep(spec, out, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                         progress=progress, backend=args.backend)
    except ClusterError as e:
        return _fail(str(e))
    if not args.quiet:
        print(format_table(rows, list(spec.axes)))
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"dmaphys sweep: {len(rows) - len(bad)}/{len(rows)} points ok; rows in {out}", file=sys.stderr)
    if args.plot:
        for p in plot_rows(rows, args.plot, args.metrics):
            print(f"plot written to {p}", file=sys.stderr)
    return 0 if not bad else 1


def cmd_plot(args: argparse.Namespace) -> int:
    """``dmaphys plot``: plot the rows of a results file.

    Simulator-only (the CLI). Returns the exit code: 0, or 2 for an unreadable file, no rows or
    no matplotlib. Raises OSError when the plots cannot be written.
    """
    try:
        rows = read_rows(args.results)
    except (OSError, ValueError, ImportError) as e:
        print(f"dmaphys plot: {args.results}: {e}", file=sys.stderr)
        return 2
    if not rows or "status" not in rows[0]:
        print(f"dmaphys plot: {args.results}: no sweep rows", file=sys.stderr)
        return 2
    try:
        paths = plot_rows(rows, args.outdir, args.metrics)
    except ImportError:
        print("dmaphys plot: needs matplotlib (pip install 'dmaphys[plot]')", file=sys.stderr)
        return 2
    for p in paths:
        print(f"plot written to {p}")
    return 0


def add_parsers(sub) -> None:
    """The ``sweep`` and ``plot`` subcommands (called by cli.build_parser).

    Simulator-only (the CLI). Returns None. Raises argparse.ArgumentError when the names exist
    already.
    """
    sw = sub.add_parser("sweep", help="a parameter study: every point of a TOML grid, on Dask",
                        description="Run every point of the grid of SPEC.toml ([base] + [axes]) as one "
                                    "deterministic run each, on a Dask LocalCluster (default) or an "
                                    "existing cluster; rows stream to --out as points finish. Exit 0 "
                                    "when every point is ok, 1 when some failed, 2 on a bad spec.")
    sw.add_argument("spec", metavar="SPEC.toml")
    sw.add_argument("--out", metavar="FILE", help="results .csv or .parquet (default SPEC's name .csv)")
    sw.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    sw.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="an existing Dask scheduler")
    sw.add_argument("--workers", type=_positive, default=None,
                    help="LocalCluster worker processes (default: one per CPU)")
    sw.add_argument("--plot", metavar="DIR", help="write a PNG per metric and overview.png")
    sw.add_argument("--metrics", type=_metric_list, default=PLOT_METRICS,
                    help=f"metrics to plot (default {','.join(PLOT_METRICS)})")
    pg = sw.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None,
                    help="progress bar (default: when stderr is a terminal)")
    pg.add_argument("--no-progress", dest="progress", action="store_false")
    sw.add_argument("--quiet", action="store_true", help="do not print the table")
    sw.add_argument("--backend", choices=("core", "reference"), default="core")
    sw.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", help="plot the rows of a sweep (.csv or .parquet)")
    pl.add_argument("results", metavar="RESULTS")
    pl.add_argument("outdir", metavar="DIR")
    pl.add_argument("--metrics", type=_metric_list, default=PLOT_METRICS)
    pl.set_defaults(func=cmd_plot)
