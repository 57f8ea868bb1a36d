"""The grammar of the text the kernel's tracing produces for the
dma:* events (include/trace/events/dma.h) and swiotlb:swiotlb_bounced
(include/trace/events/swiotlb.h), shared by both backends' TraceParser (the core's fast path
handles well-formed lines of the common events in C and hands every other line here; the
reference's TraceParser uses it for every line).

Kernel versions followed (TP_printk formats read from torvalds/linux):
  - v6.12-v6.17: dma_map_page / dma_unmap_page / dma_map_resource / dma_unmap_resource (the
    dma_map / dma_unmap classes: "%s dir=%s dma_addr=%llx size=%zu phys_addr=%llx attrs=%s" and
    "%s dir=%s dma_addr=%llx size=%zu attrs=%s"), dma_alloc / dma_free, dma_map_sg
    ("%s dir=%s dma_addrs=%s sizes=%s phys_addrs=%s attrs=%s"), dma_map_sg_err, dma_unmap_sg,
    dma_sync_single_* and dma_sync_sg_*;
  - v6.18+: dma_map_phys / dma_unmap_phys (the same classes), DMA_ATTR_MMIO;
  - current mainline: dma_map_sg with "nents=%d/%d ents=%d/%d%s" (" [TRUNCATED]" past
    DMA_TRACE_MAX_ENTRIES = 128 entries), dma_alloc_pages / dma_free_pages, dma_alloc_sgt /
    dma_alloc_sgt_err / dma_free_sgt, and the attrs CACHELINES_OVERLAP (bit 11),
    REQUIRE_COHERENT (12), CC_SHARED (13), ALLOC_CC_SHARED (14).
decode_dma_data_direction() is __print_symbolic (an unknown value prints as 0x%lx);
decode_dma_attrs() is __print_flags with "|" (leftover bits print as 0x%lx); arrays are
__print_array ("{0x..,0x..}"). swiotlb_bounced: "dev_name: %s dma_mask=%llx dev_addr=%llx
size=%zu %s" with NORMAL / FORCE.

Two text formats: /sys/kernel/tracing/trace (and trace_pipe): "TASK-PID [CPU] FLAGS
SEC.USEC: EVENT: INFO" with "# ..." header lines, and `trace-cmd report`: "TASK-PID [CPU]
[FLAGS] TIMESTAMP: EVENT:<padding> INFO" with "version = N", "cpus=N", "CPU N is empty"
header lines; the timestamp is "SEC.USEC", "SEC.NSEC" (-t) or, under one second,
libtraceevent's bare integer (µs, or ns with bare_unit_ns=1).

TraceParser(bare_unit_ns=1000).feed(bytes) returns one tuple per dma/swiotlb event line:
    (lineno, ev, ts_ns, cpu, device, a, b, size, dir, attrs, extra)
(see EV_* and the field use below) and, for a malformed one, (lineno, -1, message). Lines of
other events are counted in ``skipped``, header lines in ``headers``; a binary file raises
TraceBinaryError at once.
"""

from __future__ import annotations

__all__ = ["TraceBinaryError", "TRACE_PARSE_EVENTS", "line_body", "parse_info"]

U64_MAX = 0xFFFFFFFFFFFFFFFF

# replay event ids: the first twelve are trace.pxi's EV_* numbering
EV_MAP = 0                 # dma_map_phys / dma_map_page:  a=dma_addr b=phys_addr
EV_UNMAP = 1               # dma_unmap_phys / dma_unmap_page: a=dma_addr
EV_ALLOC = 2               # dma_alloc:   a=dma_addr b=virt_addr (-1 = (nil)/hashed) extra=flags
EV_FREE = 3                # dma_free:    a=dma_addr b=virt_addr
EV_MAP_SG = 4              # extra=(dma_addrs, sizes, phys_addrs, full_nents, full_ents, truncated)
EV_MAP_SG_ERR = 5          # a=err extra=(phys_addrs,)
EV_UNMAP_SG = 6            # extra=(phys_addrs,)
EV_SYNC_SINGLE_FOR_CPU = 7        # a=dma_addr
EV_SYNC_SINGLE_FOR_DEVICE = 8
EV_SYNC_SG_FOR_CPU = 9            # extra=(dma_addrs, sizes)
EV_SYNC_SG_FOR_DEVICE = 10
EV_SWIOTLB_BOUNCED = 11    # a=dev_addr b=dma_mask attrs=1 for FORCE
EV_MAP_RESOURCE = 12       # v6.12-v6.17: a=dma_addr b=phys_addr
EV_UNMAP_RESOURCE = 13
EV_ALLOC_PAGES = 14        # as EV_ALLOC
EV_FREE_PAGES = 15         # as EV_FREE
EV_ALLOC_SGT = 16          # a=dma_addr extra=(phys_addrs, flags)
EV_ALLOC_SGT_ERR = 17      # as EV_ALLOC
EV_FREE_SGT = 18           # a=dma_addr extra=(phys_addrs,)

TRACE_PARSE_EVENTS = {
    "dma_map_phys": EV_MAP, "dma_map_page": EV_MAP, "dma_unmap_phys": EV_UNMAP,
    "dma_unmap_page": EV_UNMAP, "dma_map_resource": EV_MAP_RESOURCE,
    "dma_unmap_resource": EV_UNMAP_RESOURCE, "dma_alloc": EV_ALLOC, "dma_free": EV_FREE,
    "dma_alloc_pages": EV_ALLOC_PAGES, "dma_free_pages": EV_FREE_PAGES,
    "dma_alloc_sgt": EV_ALLOC_SGT, "dma_alloc_sgt_err": EV_ALLOC_SGT_ERR,
    "dma_free_sgt": EV_FREE_SGT, "dma_map_sg": EV_MAP_SG, "dma_map_sg_err": EV_MAP_SG_ERR,
    "dma_unmap_sg": EV_UNMAP_SG, "dma_sync_single_for_cpu": EV_SYNC_SINGLE_FOR_CPU,
    "dma_sync_single_for_device": EV_SYNC_SINGLE_FOR_DEVICE,
    "dma_sync_sg_for_cpu": EV_SYNC_SG_FOR_CPU, "dma_sync_sg_for_device": EV_SYNC_SG_FOR_DEVICE,
    "swiotlb_bounced": EV_SWIOTLB_BOUNCED,
}

DIRS = {"BIDIRECTIONAL": 0, "TO_DEVICE": 1, "FROM_DEVICE": 2, "NONE": 3}
ATTRS = {"WEAK_ORDERING": 1 << 1, "WRITE_COMBINE": 1 << 2, "NO_KERNEL_MAPPING": 1 << 4,
         "SKIP_CPU_SYNC": 1 << 5, "FORCE_CONTIGUOUS": 1 << 6, "ALLOC_SINGLE_PAGES": 1 << 7,
         "NO_WARN": 1 << 8, "PRIVILEGED": 1 << 9, "MMIO": 1 << 10, "CACHELINES_OVERLAP": 1 << 11,
         "REQUIRE_COHERENT": 1 << 12, "CC_SHARED": 1 << 13, "ALLOC_CC_SHARED": 1 << 14}

TRACE_DAT_MAGIC = b"\x17\x08Dtracing"

# the keys each event's TP_printk prints, in order (the sg "nents"/"ents" pair is optional)
_KEYS = {
    EV_MAP: ("dir", "dma_addr", "size", "phys_addr", "attrs"),
    EV_MAP_RESOURCE: ("dir", "dma_addr", "size", "phys_addr", "attrs"),
    EV_UNMAP: ("dir", "dma_addr", "size", "attrs"),
    EV_UNMAP_RESOURCE: ("dir", "dma_addr", "size", "attrs"),
    EV_ALLOC: ("dir", "dma_addr", "size", "virt_addr", "flags", "attrs"),
    EV_ALLOC_PAGES: ("dir", "dma_addr", "size", "virt_addr", "flags", "attrs"),
    EV_ALLOC_SGT_ERR: ("dir", "dma_addr", "size", "virt_addr", "flags", "attrs"),
    EV_ALLOC_SGT: ("dir", "dma_addr", "size", "phys_addrs", "flags", "attrs"),
    EV_FREE: ("dir", "dma_addr", "size", "virt_addr", "attrs"),
    EV_FREE_PAGES: ("dir", "dma_addr", "size", "virt_addr", "attrs"),
    EV_FREE_SGT: ("dir", "dma_addr", "size", "phys_addrs"),
    EV_MAP_SG: ("dir", "dma_addrs", "sizes", "phys_addrs", "attrs"),
    EV_MAP_SG_ERR: ("dir", "dma_addrs", "err", "attrs"),
    EV_UNMAP_SG: ("dir", "phys_addrs", "attrs"),
    EV_SYNC_SINGLE_FOR_CPU: ("dir", "dma_addr", "size"),
    EV_SYNC_SINGLE_FOR_DEVICE: ("dir", "dma_addr", "size"),
    EV_SYNC_SG_FOR_CPU: ("dir", "dma_addrs", "sizes"),
    EV_SYNC_SG_FOR_DEVICE: ("dir", "dma_addrs", "sizes"),
    EV_SWIOTLB_BOUNCED: ("dma_mask", "dev_addr", "size"),
}


class TraceBinaryError(ValueError):
    """The input is not text (a trace.dat, or a NUL byte on ``line``)."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


class _Bad(Exception):
    pass


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _hex(s: str, what: str) -> int:
    if not s:
        raise _Bad(f"{what}= has no value")
    try:
        v = int(s, 16)
    except ValueError:
        raise _Bad(f"{what}={s!r} is not a hex number") from None
    if v > U64_MAX:
        raise _Bad(f"{what}={s} does not fit 64 bits")
    return v


def _dec(s: str, what: str, signed: bool = False) -> int:
    if not (_digits(s) or (signed and s[:1] == "-" and _digits(s[1:]))):
        raise _Bad(f"{what}={s!r} is not a decimal number")
    v = int(s)
    if v > U64_MAX:
        raise _Bad(f"{what}={s} does not fit 64 bits")
    return v


def _dir(s: str) -> int:
    d = DIRS.get(s)
    if d is None:
        raise _Bad(f"unknown direction dir={s!r} (the kernel prints BIDIRECTIONAL, TO_DEVICE, "
                   f"FROM_DEVICE or NONE)")
    return d


def _attrs(s: str) -> int:
    v = 0
    if not s:
        return 0
    for name in s.split("|"):
        bit = ATTRS.get(name)
        if bit is None:
            if name.startswith("0x"):
                bit = _hex(name[2:], "attrs")
            else:
                raise _Bad(f"unknown attribute {name!r} in attrs={s}")
        v |= bit
    return v


def _array(s: str, what: str) -> tuple:
    if len(s) < 2 or s[0] != "{" or s[-1] != "}":
        raise _Bad(f"{what}={s!r} is not an array {{0x..,0x..}}")
    body = s[1:-1]
    if not body:
        return ()
    out = []
    for x in body.split(","):
        if not x.startswith("0x"):
            raise _Bad(f"{what}: element {x!r} is not 0x-hex")
        out.append(_hex(x[2:], what))
    return tuple(out)


def _ptr(s: str) -> int:
    """%p: "(nil)" → 0; "0x..." (no_hash_pointers) → the value; a hashed pointer → -1."""
    if s == "(nil)":
        return 0
    if s.startswith("0x"):
        return _hex(s[2:], "virt_addr")
    if s and all(c in "0123456789abcdef" for c in s):
        return -1
    raise _Bad(f"virt_addr={s!r} is not a pointer")


def _timestamp(tok: str, bare_unit: int) -> int:
    if "." in tok:
        sec, frac = tok.split(".", 1)
        if not _digits(sec) or not _digits(frac) or len(frac) > 9:
            raise _Bad(f"bad timestamp {tok!r}")
        return int(sec) * 1_000_000_000 + int(frac) * 10 ** (9 - len(frac))
    if not _digits(tok):
        raise _Bad(f"bad timestamp {tok!r}")
    return int(tok) * bare_unit


def parse_info(ev: int, info: str):
    """Fields of one event's TP_printk text → (device, a, b, size, dir, attrs, extra)."""
    toks = info.split(" ")
    if ev == EV_SWIOTLB_BOUNCED:
        if len(toks) < 2 or toks[0] != "dev_name:":
            raise _Bad("swiotlb_bounced: expected 'dev_name: DEVICE ...'")
        toks = toks[1:]
    dev = toks[0]
    if not dev or "=" in dev:
        raise _Bad("no device name")
    kv = {}
    flag = None
    truncated = False
    for t in toks[1:]:
        k, eq, v = t.partition("=")
        if eq:
            kv[k] = v
        elif t == "[TRUNCATED]":
            truncated = True
        elif ev == EV_SWIOTLB_BOUNCED and t in ("NORMAL", "FORCE"):
            flag = t
        elif t:
            raise _Bad(f"truncated or malformed line: unexpected {t!r}")
    for k in _KEYS[ev]:
        if k not in kv:
            raise _Bad(f"truncated or malformed line: no {k}=")
    if ev == EV_SWIOTLB_BOUNCED:
        if flag is None:
            raise _Bad("truncated or malformed line: no NORMAL/FORCE")
        return (dev, _hex(kv["dev_addr"], "dev_addr"), _hex(kv["dma_mask"], "dma_mask"),
                _dec(kv["size"], "size"), -1, 1 if flag == "FORCE" else 0, None)
    d = _dir(kv["dir"])
    attrs = _attrs(kv["attrs"]) if "attrs" in kv else 0
    if ev in (EV_MAP, EV_MAP_RESOURCE):
        return (dev, _hex(kv["dma_addr"], "dma_addr"), _hex(kv["phys_addr"], "phys_addr"),
                _dec(kv["size"], "size"), d, attrs, None)
    if ev in (EV_UNMAP, EV_UNMAP_RESOURCE, EV_SYNC_SINGLE_FOR_CPU, EV_SYNC_SINGLE_FOR_DEVICE):
        return (dev, _hex(kv["dma_addr"], "dma_addr"), 0, _dec(kv["size"], "size"), d, attrs, None)
    if ev in (EV_ALLOC, EV_ALLOC_PAGES, EV_ALLOC_SGT_ERR):
        return (dev, _hex(kv["dma_addr"], "dma_addr"), _ptr(kv["virt_addr"]), _dec(kv["size"], "size"),
                d, attrs, kv["flags"])
    if ev in (EV_FREE, EV_FREE_PAGES):
        return (dev, _hex(kv["dma_addr"], "dma_addr"), _ptr(kv["virt_addr"]), _dec(kv["size"], "size"),
                d, attrs, None)
    if ev == EV_ALLOC_SGT:
        return (dev, _hex(kv["dma_addr"], "dma_addr"), 0, _dec(kv["size"], "size"), d, attrs,
                (_array(kv["phys_addrs"], "phys_addrs"), kv["flags"]))
    if ev == EV_FREE_SGT:
        return (dev, _hex(kv["dma_addr"], "dma_addr"), 0, _dec(kv["size"], "size"), d, 0,
                (_array(kv["phys_addrs"], "phys_addrs"),))
    if ev == EV_MAP_SG:
        dmas = _array(kv["dma_addrs"], "dma_addrs")
        sizes = _array(kv["sizes"], "sizes")
        phys = _array(kv["phys_addrs"], "phys_addrs")
        if len(dmas) != len(sizes):
            raise _Bad(f"dma_addrs has {len(dmas)} entries, sizes {len(sizes)}")
        full_nents, full_ents = len(phys), len(dmas)
        for key in ("nents", "ents"):
            if key in kv:
                shown, slash, full = kv[key].partition("/")
                if not slash:
                    raise _Bad(f"{key}={kv[key]!r} is not N/M")
                shown_n, full_n = _dec(shown, key), _dec(full, key)
                if shown_n != (len(phys) if key == "nents" else len(dmas)):
                    raise _Bad(f"{key}={kv[key]} does not match the array length")
                if key == "nents":
                    full_nents = full_n
                else:
                    full_ents = full_n
        return (dev, 0, 0, sum(sizes), d, attrs, (dmas, sizes, phys, full_nents, full_ents, truncated))
    if ev == EV_MAP_SG_ERR:
        return (dev, _dec(kv["err"], "err", True), 0, 0, d, attrs, (_array(kv["dma_addrs"], "dma_addrs"),))
    if ev == EV_UNMAP_SG:
        return (dev, 0, 0, 0, d, attrs, (_array(kv["phys_addrs"], "phys_addrs"),))
    # sync sg
    dmas = _array(kv["dma_addrs"], "dma_addrs")
    sizes = _array(kv["sizes"], "sizes")
    if len(dmas) != len(sizes):
        raise _Bad(f"dma_addrs has {len(dmas)} entries, sizes {len(sizes)}")
    return (dev, 0, 0, sum(sizes), d, 0, (dmas, sizes))



def line_body(p, n: int, raw: bytes, out: list) -> None:
    """One line (``n``, without its newline) into ``out``; ``p`` is the parser whose counters
    (skipped, headers, unrecognised, cpus, lost_events, bare_unit_ns) and count_event() it uses."""
    if b"\0" in raw:
        raise TraceBinaryError(n, "binary data (a NUL byte): this is not trace text")
    line = raw.decode("utf-8", "replace").rstrip("\r")
    s = line.strip()
    if not s:
        return
    if s[0] == "#":
        p.headers += 1
        i = s.find("#P:")
        if i >= 0 and s[i + 3:].split() and _digits(s[i + 3:].split()[0]):
            p.cpus = int(s[i + 3:].split()[0])
        return
    if s.startswith("cpus="):
        p.headers += 1
        if _digits(s[5:]):
            p.cpus = int(s[5:])
        return
    if s.startswith("CPU:") and "LOST" in s:
        p.headers += 1
        parts = s[s.index("LOST") + 4:].split()
        if parts and _digits(parts[0]):
            p.lost_events += int(parts[0])
        return
    if (s.startswith("CPU ") and s.endswith(" is empty")) or s.startswith("version ="):
        p.headers += 1
        return
    # TASK-PID [CPU] [FLAGS] TIMESTAMP: EVENT: INFO
    lb = line.find("[")
    while lb >= 0:
        rb = line.find("]", lb)
        if rb > lb + 1 and _digits(line[lb + 1:rb]):
            break
        lb = line.find("[", lb + 1)
    if lb < 0:
        p.unrecognised += 1
        return
    cpu = int(line[lb + 1:rb])
    rest = line[rb + 1:].lstrip(" ")
    c1 = rest.find(": ")
    if c1 < 0:
        out.append((n, -1, "truncated line: no 'TIMESTAMP: EVENT:' after the CPU field"))
        return
    head = rest[:c1].split()
    if not head or len(head) > 2:
        out.append((n, -1, "malformed line: expected '[CPU] FLAGS TIMESTAMP: EVENT:'"))
        return
    rest = rest[c1 + 2:].lstrip(" ")
    c2 = rest.find(":")
    if c2 < 0:
        out.append((n, -1, "truncated line: no event name"))
        return
    name = rest[:c2]
    ev = TRACE_PARSE_EVENTS.get(name)
    if ev is None:
        p.skipped += 1
        return
    try:
        ts = _timestamp(head[-1], p.bare_unit_ns)
        rec = parse_info(ev, rest[c2 + 1:].strip(" "))
    except _Bad as e:
        out.append((n, -1, f"{name}: {e}"))
        return
    p.count_event(name)
    out.append((n, ev, ts, cpu) + rec)
