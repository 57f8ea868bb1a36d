# Models include/trace/events/dma.h (TRACE_SYSTEM "dma") and the swiotlb_bounced event of
# include/trace/events/swiotlb.h: the tracepoints the DMA API fires, recorded into a ring
# buffer when m.trace.enabled (off by default, like a disabled tracepoint: one flag test).
#
# Each event keeps the TP_STRUCT__entry fields (device, addresses, size, dir, attrs; the sg
# events their dynamic arrays), the virtual clock (machine.clock_ns) and the current CPU.
# to_ftrace() renders `trace-cmd report` lines (print_event(): "%16s-%-5d [%03d]", the
# " %6.1000d:" timestamp, the event name padded to 20, then TP_printk with __print_symbolic,
# __print_flags("|") and __print_array rules); to_numpy() gives one structured row per event.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, trace.pxd.

import collections as _collections

TraceEvent = _collections.namedtuple("TraceEvent", "name system time_ns cpu device fields")
TraceEvent.__doc__ = """One recorded tracepoint: ``name`` ("dma_map_phys"), ``system`` ("dma" or
"swiotlb"), ``time_ns``, ``cpu``, ``device`` (name) and ``fields`` (the TP_STRUCT__entry fields).

Mirrors one ftrace record of the events in include/trace/events/dma.h and
include/trace/events/swiotlb.h. A namedtuple: raises TypeError for a wrong number of fields."""


TRACE_EVENT_NAMES = ("dma_map_phys", "dma_unmap_phys", "dma_alloc", "dma_free", "dma_map_sg",
                     "dma_map_sg_err", "dma_unmap_sg", "dma_sync_single_for_cpu",
                     "dma_sync_single_for_device", "dma_sync_sg_for_cpu", "dma_sync_sg_for_device",
                     "swiotlb_bounced")

# decode_dma_data_direction() / decode_dma_attrs() of include/trace/events/dma.h
_TRACE_DIR = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE", "NONE")
_TRACE_ATTRS = ((1 << 1, "WEAK_ORDERING"), (1 << 2, "WRITE_COMBINE"), (1 << 4, "NO_KERNEL_MAPPING"),
                (1 << 5, "SKIP_CPU_SYNC"), (1 << 6, "FORCE_CONTIGUOUS"), (1 << 7, "ALLOC_SINGLE_PAGES"),
                (1 << 8, "NO_WARN"), (1 << 9, "PRIVILEGED"), (1 << 10, "MMIO"))


def _print_symbolic_dir(d):
    """__print_symbolic(dir, ...): the name, or the value in hex when unknown."""
    return _TRACE_DIR[d] if 0 <= d < 4 else f"0x{d:x}"


def _print_flags_attrs(attrs):
    """__print_flags(attrs, "|", ...): names in table order, leftover bits as 0x%lx."""
    out = []
    for mask, name in _TRACE_ATTRS:
        if attrs & mask == mask:
            out.append(name)
            attrs &= ~mask
    if attrs:
        out.append(f"0x{attrs:x}")
    return "|".join(out)


def _print_array(values):
    """__print_array(): "{0x..,0x..}" (every element size prints as 0x%x / 0x%llx)."""
    return "{" + ",".join(f"0x{v:x}" for v in values) + "}"


def _trace_cmd_time(ns):
    """libtraceevent print_event_time() for trace-cmd's " %6.1000d" (usecs, rounded)."""
    us = (ns + 500) // 1000
    if 1000000 < us:
        return "%5d.%06d" % (us // 1000000, us % 1000000)
    return "%12d" % us


cdef class DmaTrace:
    """The dma:* (and swiotlb:swiotlb_bounced) tracepoints: ``m.trace`` (off by default).

    ``m.trace.enabled = True`` starts recording. The buffer is a ring of ``capacity`` events
    (default 65536): when full the oldest event is overwritten and ``overrun`` counts it, as
    ftrace's ring buffer does. ``len(m.trace)``, ``clear()``, ``events()`` (TraceEvent
    tuples), ``to_ftrace()`` (trace-cmd report lines, task ``comm``-``pid``) and
    ``to_numpy()`` (structured array, one row per event).

    Mirrors the TRACE_EVENTs of include/trace/events/dma.h (and swiotlb.h's swiotlb_bounced) with an
    ftrace ring buffer. Made by the Machine; constructing one raises TypeError without a Machine.
    """

    def __cinit__(self, Machine machine not None):
        self.machine = machine
        self.enabled = False
        self.comm = "dmaphys"
        self.pid = 1
        self._capacity = TRACE_DEFAULT_CAPACITY
        self.head = 0
        self.count = 0
        self.overrun = 0

    def __dealloc__(self):
        self._release_all()

    cdef void _release_all(self):
        cdef size_t i
        for i in range(self.buf.size()):
            Py_XDECREF(self.buf[i].dev)
            Py_XDECREF(self.buf[i].arrays)
        self.buf.clear()
        self.head = 0
        self.count = 0

    @property
    def capacity(self):
        """Ring size in events; setting it clears the buffer (like resizing buffer_size_kb).

        Setting raises ValueError outside 1..2**32, TypeError for a non-int.
        """
        return self._capacity

    @capacity.setter
    def capacity(self, value):
        n = _u64(value, "capacity")
        if n == 0 or n > (1 << 32):
            raise ValueError("capacity must be in 1..2^32")
        self._release_all()
        self._capacity = <size_t>n

    def clear(self):
        """Empty the buffer (echo > trace); overrun is reset too.

        Models clearing the ftrace buffer (tracing_open() with O_TRUNC). Returns None. Raises
        nothing.
        """
        self._release_all()
        self.overrun = 0

    def __len__(self):
        return self.count

    cdef trace_entry *record(self, int id, Device dev):
        """Reserve the next slot (overwriting the oldest when full) and fill the common part."""
        cdef trace_entry *t
        cdef trace_entry blank
        cdef size_t pos
        if self.buf.size() < self._capacity:
            memset(&blank, 0, sizeof(blank))
            self.buf.push_back(blank)
            pos = self.buf.size() - 1
            self.count += 1
        else:
            # full: overwrite the oldest event (ring_buffer overwrite mode)
            pos = self.head
            self.head = (self.head + 1) % self._capacity
            self.overrun += 1
            Py_XDECREF(self.buf[pos].dev)
            Py_XDECREF(self.buf[pos].arrays)
            memset(&self.buf[pos], 0, sizeof(trace_entry))
        t = &self.buf[pos]
        t.id = id
        t.ts = self.machine.clock_ns
        t.cpu = self.machine._cpu
        Py_INCREF(dev)
        t.dev = <PyObject *>dev
        return t

    cdef void set_arrays(self, trace_entry *t, tuple arrays):
        Py_INCREF(arrays)
        t.arrays = <PyObject *>arrays

    cdef list _ordered(self):
        cdef size_t i
        return [(self.head + i) % self._capacity for i in range(self.count)]

    def events(self):
        """The buffer, oldest first, as TraceEvent tuples (fields as the TP_STRUCT__entry has them).

        Simulator-only view of the TP_STRUCT__entry records of include/trace/events/dma.h. Returns a
        list of TraceEvent. Raises nothing.
        """
        cdef trace_entry *t
        out = []
        for pos in self._ordered():
            t = &self.buf[<size_t>pos]
            out.append(_trace_event(t.id, t.ts, t.cpu, (<Device>t.dev).name, t.dma_addr, t.phys_addr,
                                    t.size, t.dir, t.attrs, t.nents, t.ents, t.err, t.dma_mask,
                                    t.force, None if t.arrays == NULL else <object>t.arrays))
        return out

    def to_ftrace(self):
        """`trace-cmd report` lines for the buffer, oldest first.

        Formats each event as the TP_printk() of include/trace/events/dma.h prints it
        (simulator-only helper). Returns a list of str. Raises nothing.
        """
        return [_ftrace_line(ev, self.comm, self.pid) for ev in self.events()]

    def to_numpy(self):
        """One row per event; see TRACE_NUMPY_DTYPE. sg events: dma_addr / phys_addr are the
        first segment's, size the sum of the mapped lengths, nents / ents the array counts.

        Simulator-only. Returns a numpy structured array of dtype TRACE_NUMPY_DTYPE. Raises nothing.
        """
        return _trace_to_numpy(self.events())

    def __repr__(self):
        return (f"<dmaphys.DmaTrace {'on' if self.enabled else 'off'} events={self.count} "
                f"capacity={self._capacity} overrun={self.overrun}>")


def _trace_event(id, ts, cpu, device, dma_addr, phys_addr, size, dir, attrs, nents, ents, err,
                 dma_mask, force, arrays):
    """Build the TraceEvent of one ring entry (shared field naming with the reference)."""
    name = TRACE_EVENT_NAMES[id]
    if id == EV_DMA_MAP_PHYS:
        f = {"phys_addr": phys_addr, "dma_addr": dma_addr, "size": size, "dir": dir, "attrs": attrs}
    elif id == EV_DMA_UNMAP_PHYS:
        f = {"addr": dma_addr, "size": size, "dir": dir, "attrs": attrs}
    elif id == EV_DMA_ALLOC:
        f = {"virt_addr": phys_addr, "dma_addr": dma_addr, "size": size, "flags": GFP_KERNEL_FLAGS,
             "dir": dir, "attrs": attrs}
    elif id == EV_DMA_FREE:
        f = {"virt_addr": phys_addr, "dma_addr": dma_addr, "size": size, "dir": dir, "attrs": attrs}
    elif id == EV_DMA_MAP_SG:
        f = {"phys_addrs": arrays[0], "dma_addrs": arrays[1], "lengths": arrays[2], "dir": dir,
             "attrs": attrs}
    elif id == EV_DMA_MAP_SG_ERR:
        f = {"phys_addrs": arrays[0], "err": err, "dir": dir, "attrs": attrs}
    elif id == EV_DMA_UNMAP_SG:
        f = {"addrs": arrays[0], "dir": dir, "attrs": attrs}
    elif id == EV_DMA_SYNC_SINGLE_FOR_CPU or id == EV_DMA_SYNC_SINGLE_FOR_DEVICE:
        f = {"dma_addr": dma_addr, "size": size, "dir": dir}
    elif id == EV_DMA_SYNC_SG_FOR_CPU or id == EV_DMA_SYNC_SG_FOR_DEVICE:
        f = {"dma_addrs": arrays[1], "lengths": arrays[2], "dir": dir}
    else:
        f = {"dma_mask": dma_mask, "dev_addr": dma_addr, "size": size, "force": bool(force)}
    return TraceEvent(name, "swiotlb" if id == EV_SWIOTLB_BOUNCED else "dma", ts, cpu, device, f)


def _virt(phys):
    # what %p shows for the CPU address: phys_to_virt() in the x86-64 direct map
    return "(nil)" if phys == 0xFFFFFFFFFFFFFFFF else f"0x{0xffff888000000000 + phys:x}"


def _ftrace_info(ev):
    """TP_printk of the event."""
    f = ev.fields
    n = ev.name
    dev = ev.device
    if n == "swiotlb_bounced":
        return (f"dev_name: {dev} dma_mask={f['dma_mask']:x} dev_addr={f['dev_addr']:x} "
                f"size={f['size']} {'FORCE' if f['force'] else 'NORMAL'}")
    d = _print_symbolic_dir(f["dir"])
    if n == "dma_map_phys":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} "
                f"phys_addr={f['phys_addr']:x} attrs={_print_flags_attrs(f['attrs'])}")
    if n == "dma_unmap_phys":
        return f"{dev} dir={d} dma_addr={f['addr']:x} size={f['size']} attrs={_print_flags_attrs(f['attrs'])}"
    if n == "dma_alloc":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} virt_addr={_virt(f['virt_addr'])} "
                f"flags=GFP_KERNEL attrs={_print_flags_attrs(f['attrs'])}")
    if n == "dma_free":
        return (f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']} virt_addr={_virt(f['virt_addr'])} "
                f"attrs={_print_flags_attrs(f['attrs'])}")
    if n == "dma_map_sg":
        return (f"{dev} dir={d} dma_addrs={_print_array(f['dma_addrs'])} sizes={_print_array(f['lengths'])} "
                f"phys_addrs={_print_array(f['phys_addrs'])} attrs={_print_flags_attrs(f['attrs'])}")
    if n == "dma_map_sg_err":
        # the array printed as dma_addrs holds the physical addresses (the header's naming)
        return (f"{dev} dir={d} dma_addrs={_print_array(f['phys_addrs'])} err={f['err']} "
                f"attrs={_print_flags_attrs(f['attrs'])}")
    if n == "dma_unmap_sg":
        return f"{dev} dir={d} phys_addrs={_print_array(f['addrs'])} attrs={_print_flags_attrs(f['attrs'])}"
    if n.startswith("dma_sync_single"):
        return f"{dev} dir={d} dma_addr={f['dma_addr']:x} size={f['size']}"
    return f"{dev} dir={d} dma_addrs={_print_array(f['dma_addrs'])} sizes={_print_array(f['lengths'])}"


def _ftrace_line(ev, comm, pid):
    """trace-cmd's print_event(): task-pid, [cpu], timestamp, name padded to 20, the info."""
    pad = " " * max(0, 20 - len(ev.name))
    return (f"{comm:>16}-{pid:<5} [{ev.cpu:03d}] {_trace_cmd_time(ev.time_ns)}: {ev.name}: {pad}"
            f"{_ftrace_info(ev)}")


TRACE_NUMPY_FIELDS = [("event", "U26"), ("event_id", "u1"), ("system", "U7"), ("time_ns", "u8"),
                      ("cpu", "i4"), ("device", "U64"), ("dma_addr", "u8"), ("phys_addr", "u8"),
                      ("size", "u8"), ("dir", "i1"), ("attrs", "u8"), ("nents", "i4"), ("ents", "i4"),
                      ("err", "i4"), ("dma_mask", "u8"), ("force", "?")]


def _trace_to_numpy(events):
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
            lens = f.get("lengths", ())
            row["phys_addr"] = phys[0] if phys else 0
            row["dma_addr"] = dmas[0] if dmas else 0
            row["size"] = sum(lens)
            row["nents"] = len(phys) if phys else len(dmas)
            row["ents"] = len(dmas)
        else:
            row["dma_addr"] = f.get("dma_addr", f.get("addr", f.get("dev_addr", 0)))
            row["phys_addr"] = f.get("phys_addr", f.get("virt_addr", 0)) & 0xFFFFFFFFFFFFFFFF
            row["size"] = f["size"]
        row["err"] = f.get("err", 0)
        row["dma_mask"] = f.get("dma_mask", 0)
        row["force"] = f.get("force", False)
    return arr


# ---- the tracepoints (trace_*() calls in kernel/dma/mapping.c and swiotlb.c) -------------------
cdef inline void trace_dma_map_phys(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                    unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(EV_DMA_MAP_PHYS, dev)
    t.phys_addr = phys
    t.dma_addr = dma_addr
    t.size = size
    t.dir = dir
    t.attrs = attrs


cdef inline void trace_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir, unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(EV_DMA_UNMAP_PHYS, dev)
    t.dma_addr = addr
    t.size = size
    t.dir = dir
    t.attrs = attrs


cdef tuple _sg_arrays(ScatterList sg, int nphys, int ndma):
    """The dynamic arrays: sg_phys() of nphys entries; sg_dma_address / sg_dma_len (unsigned
    int) of ndma entries."""
    cdef int i
    cdef int n = <int>sg.sg.size()
    nphys = min(max(nphys, 0), n)
    ndma = min(max(ndma, 0), n)
    phys = tuple([sg.sg[i].page_phys + sg.sg[i].offset for i in range(nphys)])
    dmas = tuple([sg.sg[i].dma_address for i in range(ndma)])
    lens = tuple([sg.sg[i].dma_length & 0xFFFFFFFF for i in range(ndma)])
    return (phys, dmas, lens)


cdef inline void trace_dma_map_sg(Device dev, ScatterList sg, int nents, int ents, int dir,
                                  unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    arrays = _sg_arrays(sg, nents, ents)
    t = tr.record(EV_DMA_MAP_SG, dev)
    tr.set_arrays(t, arrays)
    t.nents = nents
    t.ents = ents
    t.dir = dir
    t.attrs = attrs


cdef inline void trace_dma_map_sg_err(Device dev, ScatterList sg, int nents, int err, int dir,
                                      unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    arrays = _sg_arrays(sg, nents, 0)
    t = tr.record(EV_DMA_MAP_SG_ERR, dev)
    tr.set_arrays(t, arrays)
    t.nents = nents
    t.err = err
    t.dir = dir
    t.attrs = attrs


cdef inline void trace_dma_unmap_sg(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    arrays = _sg_arrays(sg, nents, 0)
    t = tr.record(EV_DMA_UNMAP_SG, dev)
    tr.set_arrays(t, arrays)
    t.nents = nents
    t.dir = dir
    t.attrs = attrs


cdef inline void _trace_sync_single(int id, Device dev, u64 dma_addr, u64 size, int dir):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(id, dev)
    t.dma_addr = dma_addr
    t.size = size
    t.dir = dir


cdef inline void trace_dma_sync_single_for_cpu(Device dev, u64 dma_addr, u64 size, int dir):
    _trace_sync_single(EV_DMA_SYNC_SINGLE_FOR_CPU, dev, dma_addr, size, dir)


cdef inline void trace_dma_sync_single_for_device(Device dev, u64 dma_addr, u64 size, int dir):
    _trace_sync_single(EV_DMA_SYNC_SINGLE_FOR_DEVICE, dev, dma_addr, size, dir)


cdef inline void _trace_sync_sg(int id, Device dev, ScatterList sg, int nents, int dir):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    arrays = _sg_arrays(sg, 0, nents)
    t = tr.record(id, dev)
    tr.set_arrays(t, arrays)
    t.nents = nents
    t.dir = dir


cdef inline void trace_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nents, int dir):
    _trace_sync_sg(EV_DMA_SYNC_SG_FOR_CPU, dev, sg, nents, dir)


cdef inline void trace_dma_sync_sg_for_device(Device dev, ScatterList sg, int nents, int dir):
    _trace_sync_sg(EV_DMA_SYNC_SG_FOR_DEVICE, dev, sg, nents, dir)


cdef inline void trace_dma_alloc(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                 unsigned long attrs):
    """dma_alloc (dma_alloc_class): virt_addr is the CPU address (stored as its phys; phys
    U64_MAX = NULL), flags the gfp mask (GFP_KERNEL: the simulator has no gfp argument)."""
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(EV_DMA_ALLOC, dev)
    t.phys_addr = phys
    t.dma_addr = dma_addr
    t.size = size
    t.dir = dir
    t.attrs = attrs


cdef inline void trace_dma_free(Device dev, u64 phys, u64 dma_addr, u64 size, int dir,
                                unsigned long attrs):
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(EV_DMA_FREE, dev)
    t.phys_addr = phys
    t.dma_addr = dma_addr
    t.size = size
    t.dir = dir
    t.attrs = attrs


cdef inline void trace_swiotlb_bounced(Device dev, u64 dma_addr, u64 size):
    """swiotlb:swiotlb_bounced: dma_mask (0 for a NULL mask pointer) and force
    (is_swiotlb_force_bounce(dev): the device's flag or its pool's, e.g. swiotlb=force) are sampled now."""
    cdef DmaTrace tr = dev.machine.trace
    cdef trace_entry *t
    if not tr.enabled:
        return
    t = tr.record(EV_SWIOTLB_BOUNCED, dev)
    t.dma_addr = dma_addr
    t.size = size
    t.dma_mask = dev._dma_mask if dev.has_dma_mask else 0
    t.force = is_swiotlb_force_bounce(dev)


__all__ += ["DmaTrace", "TraceEvent", "TRACE_EVENT_NAMES", "TRACE_NUMPY_FIELDS"]
