"""Reference model of include/trace/events/dma.h (+ swiotlb:swiotlb_bounced): mirrors trace.pxi.

Events are kept in a deque of ``capacity`` TraceEvent tuples; when full the oldest is
dropped and ``overrun`` counts it (ftrace's overwrite mode). to_ftrace() renders the lines
`trace-cmd report` prints; to_numpy() one structured row per event.
"""

from __future__ import annotations

import collections

from ._util import U64_MAX, u64

__all__ = ["DmaTrace", "TraceEvent", "TRACE_EVENT_NAMES", "TRACE_NUMPY_FIELDS"]

TraceEvent = collections.namedtuple("TraceEvent", "name system time_ns cpu device fields")
TraceEvent.__doc__ = ("One recorded tracepoint: name, system, time_ns, cpu, device, fields.\n\n"
                      "Reference twin of dmaphys._core.TraceEvent: same returns and raises.")

TRACE_EVENT_NAMES = ("dma_map_phys", "dma_unmap_phys", "dma_alloc", "dma_free", "dma_map_sg",
                     "dma_map_sg_err", "dma_unmap_sg", "dma_sync_single_for_cpu",
                     "dma_sync_single_for_device", "dma_sync_sg_for_cpu", "dma_sync_sg_for_device",
                     "swiotlb_bounced")
TRACE_DEFAULT_CAPACITY = 1 << 16
GFP_KERNEL_FLAGS = 0xcc0

_TRACE_DIR = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE", "NONE")
_TRACE_ATTRS = ((1 << 1, "WEAK_ORDERING"), (1 << 2, "WRITE_COMBINE"), (1 << 4, "NO_KERNEL_MAPPING"),
                (1 << 5, "SKIP_CPU_SYNC"), (1 << 6, "FORCE_CONTIGUOUS"), (1 << 7, "ALLOC_SINGLE_PAGES"),
                (1 << 8, "NO_WARN"), (1 << 9, "PRIVILEGED"), (1 << 10, "MMIO"))

TRACE_NUMPY_FIELDS = [("event", "U26"), ("event_id", "u1"), ("system", "U7"), ("time_ns", "u8"),
                      ("cpu", "i4"), ("device", "U64"), ("dma_addr", "u8"), ("phys_addr", "u8"),
                      ("size", "u8"), ("dir", "i1"), ("attrs", "u8"), ("nents", "i4"), ("ents", "i4"),
                      ("err", "i4"), ("dma_mask", "u8"), ("force", "?")]


def print_symbolic_dir(d: int) -> str:
    return _TRACE_DIR[d] if 0 <= d < 4 else f"0x{d:x}"


def print_flags_attrs(attrs: int) -> str:
    out = []
    for mask, name in _TRACE_ATTRS:
        if attrs & mask == mask:
            out.append(name)
            attrs &= ~mask
    if attrs:
        out.append(f"0x{attrs:x}")
    return "|".join(out)


def print_array(values) -> str:
    return "{" + ",".join(f"0x{v:x}" for v in values) + "}"


def trace_cmd_time(ns: int) -> str:
    us = (ns + 500) // 1000
    if 1000000 < us:
        return f"{us // 1000000:5d}.{us % 1000000:06d}"
    return f"{us:12d}"


def _virt(phys: int) -> str:
    return "(nil)" if phys == U64_MAX else f"0x{0xffff888000000000 + phys:x}"


def ftrace_info(ev: TraceEvent) -> str:
    f, n, dev = ev.fields, ev.name, ev.device
    if n == "swiotlb_bounced":
        return (f"dev_name: {dev} dma_mask={f['dma_mask']:x} dev_addr={f['dev_addr']:x} "
                f"size={f['size']} {'FORCE' if f['force'] else 'NORMAL'}")
    d = print_symbolic_dir(f["dir"])
    a = print_flags_attrs(f["attrs"]) if "attrs" in f else ""
    if n == "dma_map_phys":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} "
                f"phys_addr={f['phys_addr']:x} attrs={a}")
    if n == "dma_unmap_phys":
        return f"{dev} dir={d} dma_addr={f['addr']:x} size={f['size']} attrs={a}"
    if n == "dma_alloc":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} "
                f"virt_addr={_virt(f['virt_addr'])} flags=GFP_KERNEL attrs={a}")
    if n == "dma_free":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} "
                f"virt_addr={_virt(f['virt_addr'])} attrs={a}")
    if n == "dma_map_sg":
        return (f"{dev} dir={d} dma_addrs={print_array(f['dma_addrs'])} sizes={print_array(f['lengths'])} "
                f"phys_addrs={print_array(f['phys_addrs'])} attrs={a}")
    if n == "dma_map_sg_err":
        return f"{dev} dir={d} dma_addrs={print_array(f['phys_addrs'])} err={f['err']} attrs={a}"
    if n == "dma_unmap_sg":
        return f"{dev} dir={d} phys_addrs={print_array(f['addrs'])} attrs={a}"
    if n.startswith("dma_sync_single"):
        return f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']}"
    return f"{dev} dir={d} dma_addrs={print_array(f['dma_addrs'])} sizes={print_array(f['lengths'])}"


def ftrace_line(ev: TraceEvent, comm: str, pid: int) -> str:
    pad = " " * max(0, 20 - len(ev.name))
    return (f"{comm:>16}-{pid:<5} [{ev.cpu:03d}] {trace_cmd_time(ev.time_ns)}: {ev.name}: "
            f"{pad}{ftrace_info(ev)}")


def trace_to_numpy(events):
    import numpy as np
    arr = np.zeros(len(events), dtype=np.dtype(TRACE_NUMPY_FIELDS))
    for i, ev in enumerate(events):
        f = ev.fields
        row = arr[i]
        row["event"] = ev.name
        row["event_id"] = TRACE_EVENT_NAMES.index(ev.name)
        row["system"] = ev.system
        row["time_ns"] = ev.time_ns
        row["cpu"] = ev.cpu
        row["device"] = ev.device
        row["dir"] = f.get("dir", -1)
        row["attrs"] = f.get("attrs", 0)
        if "phys_addrs" in f or "addrs" in f or "dma_addrs" in f:
            phys = f.get("phys_addrs", f.get("addrs", ()))
            dmas = f.get("dma_addrs", ())
            row["phys_addr"] = phys[0] if phys else 0
            row["dma_addr"] = dmas[0] if dmas else 0
            row["size"] = sum(f.get("lengths", ()))
            row["nents"] = len(phys) if phys else len(dmas)
            row["ents"] = len(dmas)
        else:
            row["dma_addr"] = f.get("dma_addr", f.get("addr", f.get("dev_addr", 0)))
            row["phys_addr"] = f.get("phys_addr", f.get("virt_addr", 0)) & U64_MAX
            row["size"] = f["size"]
        row["err"] = f.get("err", 0)
        row["dma_mask"] = f.get("dma_mask", 0)
        row["force"] = f.get("force", False)
    return arr


class DmaTrace:
    """Reference twin of dmaphys._core.DmaTrace (``m.trace``, off by default)."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.enabled = False
        self.comm = "dmaphys"
        self.pid = 1
        self._capacity = TRACE_DEFAULT_CAPACITY
        self._buf: collections.deque = collections.deque()
        self.overrun = 0

    @property
    def capacity(self) -> int:
        """Reference twin of dmaphys._core.DmaTrace.capacity."""
        return self._capacity

    @capacity.setter
    def capacity(self, value) -> None:
        n = u64(value, "capacity")
        if n == 0 or n > (1 << 32):
            raise ValueError("capacity must be in 1..2^32")
        self._buf.clear()
        self._capacity = n

    def clear(self) -> None:
        """Reference twin of dmaphys._core.DmaTrace.clear: same returns and raises."""
        self._buf.clear()
        self.overrun = 0

    def __len__(self) -> int:
        return len(self._buf)

    def record(self, name: str, dev, fields: dict) -> None:
        """Simulator-only ring-buffer write behind the trace_dma_*() tracepoints
        (include/trace/events/dma.h): append one TraceEvent, overwriting the oldest (and
        counting ``overrun``) when full. Returns None. Raises nothing.
        """
        if len(self._buf) == self._capacity:
            self._buf.popleft()
            self.overrun += 1
        system = "swiotlb" if name == "swiotlb_bounced" else "dma"
        self._buf.append(TraceEvent(name, system, self.machine.clock_ns, self.machine._cpu, dev.name, fields))

    def events(self) -> list:
        """Reference twin of dmaphys._core.DmaTrace.events: same returns and raises."""
        return list(self._buf)

    def to_ftrace(self) -> list[str]:
        """Reference twin of dmaphys._core.DmaTrace.to_ftrace: same returns and raises."""
        return [ftrace_line(ev, self.comm, self.pid) for ev in self._buf]

    def to_numpy(self):
        """Reference twin of dmaphys._core.DmaTrace.to_numpy: same returns and raises."""
        return trace_to_numpy(list(self._buf))

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.DmaTrace {'on' if self.enabled else 'off'} events={len(self._buf)} "
                f"capacity={self._capacity} overrun={self.overrun}>")


# ---- the tracepoints (same names as trace.pxi) --------------------------------------------------
def _on(dev) -> DmaTrace | None:
    tr = dev.machine.trace
    return tr if tr.enabled else None


def _sg_arrays(sg, nphys: int, ndma: int):
    n = len(sg)
    nphys, ndma = min(max(nphys, 0), n), min(max(ndma, 0), n)
    return (tuple(sg[i].phys for i in range(nphys)), tuple(sg[i].dma_address for i in range(ndma)),
            tuple(sg[i].dma_length & 0xFFFFFFFF for i in range(ndma)))


def trace_dma_map_phys(dev, phys: int, dma_addr: int, size: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_map_phys", dev, {"phys_addr": phys, "dma_addr": dma_addr, "size": size,
                                        "dir": dir, "attrs": attrs})


def trace_dma_unmap_phys(dev, addr: int, size: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_unmap_phys", dev, {"addr": addr, "size": size, "dir": dir, "attrs": attrs})


def trace_dma_map_sg(dev, sg, nents: int, ents: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        phys, dmas, lens = _sg_arrays(sg, nents, ents)
        tr.record("dma_map_sg", dev, {"phys_addrs": phys, "dma_addrs": dmas, "lengths": lens,
                                      "dir": dir, "attrs": attrs})


def trace_dma_map_sg_err(dev, sg, nents: int, err: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_map_sg_err", dev, {"phys_addrs": _sg_arrays(sg, nents, 0)[0], "err": err,
                                          "dir": dir, "attrs": attrs})


def trace_dma_unmap_sg(dev, sg, nents: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_unmap_sg", dev, {"addrs": _sg_arrays(sg, nents, 0)[0], "dir": dir, "attrs": attrs})


def trace_dma_sync_single_for_cpu(dev, dma_addr: int, size: int, dir: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_sync_single_for_cpu", dev, {"dma_addr": dma_addr, "size": size, "dir": dir})


def trace_dma_sync_single_for_device(dev, dma_addr: int, size: int, dir: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_sync_single_for_device", dev, {"dma_addr": dma_addr, "size": size, "dir": dir})


def trace_dma_sync_sg_for_cpu(dev, sg, nents: int, dir: int) -> None:
    if (tr := _on(dev)) is not None:
        _, dmas, lens = _sg_arrays(sg, 0, nents)
        tr.record("dma_sync_sg_for_cpu", dev, {"dma_addrs": dmas, "lengths": lens, "dir": dir})


def trace_dma_sync_sg_for_device(dev, sg, nents: int, dir: int) -> None:
    if (tr := _on(dev)) is not None:
        _, dmas, lens = _sg_arrays(sg, 0, nents)
        tr.record("dma_sync_sg_for_device", dev, {"dma_addrs": dmas, "lengths": lens, "dir": dir})


def trace_dma_alloc(dev, phys: int, dma_addr: int, size: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_alloc", dev, {"virt_addr": phys, "dma_addr": dma_addr, "size": size,
                                     "flags": GFP_KERNEL_FLAGS, "dir": dir, "attrs": attrs})


def trace_dma_free(dev, phys: int, dma_addr: int, size: int, dir: int, attrs: int) -> None:
    if (tr := _on(dev)) is not None:
        tr.record("dma_free", dev, {"virt_addr": phys, "dma_addr": dma_addr, "size": size,
                                    "dir": dir, "attrs": attrs})


def trace_swiotlb_bounced(dev, dma_addr: int, size: int) -> None:
    if (tr := _on(dev)) is not None:
        from .swiotlb import c_is_swiotlb_force_bounce  # (swiotlb.py imports this module)
        tr.record("swiotlb_bounced", dev, {"dma_mask": dev._dma_mask if dev.has_dma_mask else 0,
                                           "dev_addr": dma_addr, "size": size,
                                           "force": c_is_swiotlb_force_bounce(dev)})
