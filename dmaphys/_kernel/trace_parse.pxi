# Reads the text of include/trace/events/dma.h's events (and swiotlb:swiotlb_bounced) as
# /sys/kernel/tracing/trace and `trace-cmd report` print them: the compiled twin of
# dmaphys/reference/trace_parse.py. The grammar, and the kernel versions followed (v6.12-v6.17
# dma_map_page/dma_map_resource, v6.18+ dma_map_phys, mainline's sg "nents=" form and attrs), are
# described in dmaphys/_trace_text.py.
#
# Fast path: a well-formed line of the frequent events (dma_map_phys / dma_map_page /
# dma_map_resource, their unmaps, dma_sync_single_*, swiotlb_bounced) or of any non-DMA event is
# taken apart in C, without building a str; every other line (headers, sg and coherent events,
# anything unusual or malformed) goes to _trace_text.line_body, so both backends give the same
# records, counters and error messages for it.

from libc.string cimport memchr, memcmp, strlen
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII

cdef inline bint tp_lit(tp_cur *c, const char *s, Py_ssize_t n) noexcept:
    """Consume the literal s[0:n]."""
    if c.end - c.p < n or memcmp(c.p, s, n) != 0:
        return False
    c.p += n
    return True


cdef inline bint tp_hex(tp_cur *c, u64 *out) noexcept:
    """1..16 hex digits (the value always fits); stops at the first other byte."""
    cdef u64 v = 0
    cdef int n = 0
    cdef char ch
    while c.p < c.end:
        ch = c.p[0]
        if b'0' <= ch <= b'9':
            v = (v << 4) | <u64>(ch - 48)
        elif b'a' <= ch <= b'f':
            v = (v << 4) | <u64>(ch - 97 + 10)
        elif b'A' <= ch <= b'F':
            v = (v << 4) | <u64>(ch - 65 + 10)
        else:
            break
        n += 1
        if n > 16:
            return False
        c.p += 1
    out[0] = v
    return n > 0


cdef inline bint tp_dec(tp_cur *c, u64 *out, int maxdigits) noexcept:
    cdef u64 v = 0
    cdef int n = 0
    while c.p < c.end and b'0' <= c.p[0] <= b'9':
        v = v * 10 + <u64>(c.p[0] - 48)
        n += 1
        if n > maxdigits:
            return False
        c.p += 1
    out[0] = v
    return n > 0


cdef inline Py_ssize_t tp_word(tp_cur *c) noexcept:
    """Length of the run up to the next space (or the end)."""
    cdef const char *q = c.p
    while q < c.end and q[0] != b' ':
        q += 1
    return q - c.p


cdef class TraceParser:
    """Incremental reader of trace text (compiled; see dmaphys/_trace_text.py for the grammar):
    ``feed(bytes)`` returns one record per dma/swiotlb event line of the complete lines,
    ``finish()`` that of a last line without a newline. Records: ``(lineno, ev, ts_ns, cpu,
    device, a, b, size, dir, attrs, extra)``, or ``(lineno, -1, message)`` for a malformed
    line. Counters: ``lineno``, ``skipped`` (other events), ``headers``, ``unrecognised``,
    ``cpus`` (from the header, 0 = not given), ``lost_events``, ``counts`` (per event name).
    ``bare_unit_ns``: the unit of a timestamp printed without a point (1000: trace-cmd's µs; 1
    for trace-cmd -t ns).

    Simulator-only: reads the text the TP_printk() formats of include/trace/events/dma.h print
    (trace-cmd report, /sys/kernel/tracing/trace). Raises ValueError for a ``bare_unit_ns`` other
    than 1 or 1000.
    """
    def __init__(self, bare_unit_ns=1000):
        from dmaphys._trace_text import line_body, TraceBinaryError
        if bare_unit_ns not in (1, 1000):
            raise ValueError("bare_unit_ns must be 1 (trace-cmd -t) or 1000")
        self.bare_unit_ns = bare_unit_ns
        self.lineno = 0
        self.skipped = 0
        self.headers = 0
        self.unrecognised = 0
        self.cpus = 0
        self.lost_events = 0
        self._slow_counts = {}
        memset(self._fast_counts, 0, sizeof(self._fast_counts))
        self._tail = b""
        self._line_body = line_body
        self._binary_error = TraceBinaryError
        self._count_keys = [(<bytes>tp_names[i]).decode() for i in range(TP_NNAMES)]
        self._devs = []

    @property
    def counts(self):
        """Lines per event name (dict).

        Read-only.
        """
        out = dict(self._slow_counts)
        for i in range(TP_NNAMES):
            if self._fast_counts[i]:
                out[self._count_keys[i]] = out.get(self._count_keys[i], 0) + self._fast_counts[i]
        return out

    def count_event(self, name):
        """Count one line of event ``name`` in ``counts`` (used by the shared grammar in _trace_text.py).

        Simulator-only. Returns None. Raises TypeError for an unhashable ``name``.
        """
        self._slow_counts[name] = self._slow_counts.get(name, 0) + 1

    def feed(self, data):
        """Records of the complete lines in ``data`` (bytes); a partial last line is kept.

        Simulator-only. Returns a list of records (a malformed line gives ``(lineno, -1, message)``,
        not an exception). Raises TypeError for data that is not bytes / bytearray, TraceBinaryError
        (a ValueError) for a binary trace.dat or a NUL byte.
        """
        cdef const char *base
        cdef Py_ssize_t n, start, i
        cdef const char *nl
        cdef list out = []
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("feed() takes bytes")
        data = bytes(data)
        if self.lineno == 0 and not self._tail and data.startswith(b"\x17\x08D"):
            raise self._binary_error(1, "this is a binary trace-cmd trace.dat file; turn it into text "
                                        "with `trace-cmd report -i FILE > FILE.txt` first")
        base = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        start = 0
        if self._tail:
            nl = <const char *>memchr(base, b'\n', n)
            if nl == NULL:
                self._tail = self._tail + data
                return out
            i = nl - base
            line0 = self._tail + data[:i]
            self._tail = b""
            self._line(PyBytes_AS_STRING(line0), PyBytes_GET_SIZE(line0), out)
            start = i + 1
        while start < n:
            nl = <const char *>memchr(base + start, b'\n', n - start)
            if nl == NULL:
                self._tail = data[start:]
                break
            i = nl - base
            self._line(base + start, i - start, out)
            start = i + 1
        return out

    def finish(self):
        """The record of a last line that had no newline.

        Simulator-only. Returns a list of zero or one record. Raises TraceBinaryError (a ValueError)
        for a NUL byte in that line.
        """
        cdef list out = []
        cdef bytes t
        if self._tail:
            t = self._tail
            self._tail = b""
            self._line(PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t), out)
        return out

    cdef int _line(self, const char *s, Py_ssize_t n, list out) except -1:
        self.lineno += 1
        if memchr(s, 0, n) != NULL:
            raise self._binary_error(self.lineno, "binary data (a NUL byte): this is not trace text")
        if not self._fast(s, n, out):
            self._line_body(self, self.lineno, PyBytes_FromStringAndSize(s, n), out)
        return 0

    cdef bint _fast(self, const char *s, Py_ssize_t n, list out) except -1:
        """Parse a well-formed line in C; False hands the line to the shared slow path."""
        cdef tp_cur c, tc, tsc
        cdef const char *lb
        cdef const char *q
        cdef const char *name
        cdef Py_ssize_t nlen, w
        cdef u64 cpu = 0, ts = 0, frac = 0, a = 0, b = 0, size = 0, attrs = 0, v
        cdef int ev = -1, k, nd, idx = -1, d = -1, ntok
        if n and s[n - 1] == b'\r':
            n -= 1
        c.p = s
        c.end = s + n
        while c.p < c.end and (c.p[0] == b' ' or c.p[0] == b'\t'):
            c.p += 1
        if c.p == c.end or c.p[0] == b'#' or c.p[0] == b'C' or c.p[0] == b'c' or c.p[0] == b'v' \
                or <unsigned char>c.p[0] < 0x20:
            return False                           # headers and empties: the slow path
        # the first "[digits]"
        lb = <const char *>memchr(s, b'[', n)
        while lb != NULL:
            q = lb + 1
            while q < c.end and b'0' <= q[0] <= b'9':
                q += 1
            if q < c.end and q[0] == b']' and q > lb + 1:
                break
            lb = <const char *>memchr(lb + 1, b'[', c.end - lb - 1)
        if lb == NULL or q - lb - 1 > 9:
            return False
        c.p = lb + 1
        tp_dec(&c, &cpu, 9)
        c.p += 1                                   # ']'
        while c.p < c.end and c.p[0] == b' ':
            c.p += 1
        # [FLAGS] TIMESTAMP ": "
        q = c.p
        while q + 1 < c.end and not (q[0] == b':' and q[1] == b' '):
            q += 1
        if q + 1 >= c.end:
            return False
        ntok = 0
        tc = c
        tc.end = q
        while tc.p < tc.end:
            if tc.p[0] == b' ':
                tc.p += 1
                continue
            if <unsigned char>tc.p[0] < 0x21 or <unsigned char>tc.p[0] >= 0x80:
                return False
            ntok += 1
            while tc.p < tc.end and tc.p[0] != b' ':
                if <unsigned char>tc.p[0] < 0x21 or <unsigned char>tc.p[0] >= 0x80:
                    return False
                tc.p += 1
        if ntok < 1 or ntok > 2:
            return False
        tc.p = q - 1                               # the last token: the timestamp
        while tc.p > c.p and tc.p[-1] != b' ':
            tc.p -= 1
        tsc = tc
        c.p = q + 2
        while c.p < c.end and c.p[0] == b' ':
            c.p += 1
        q = <const char *>memchr(c.p, b':', c.end - c.p)
        if q == NULL:
            return False
        name = c.p
        nlen = q - c.p
        for k in range(TP_NNAMES):
            if tp_lens[k] == nlen and memcmp(tp_names[k], name, nlen) == 0:
                idx = k
                break
        if idx < 0:
            self.skipped += 1
            return True
        if idx >= TP_NFAST:
            return False
        ev = tp_ids[idx]
        # the timestamp
        if not tp_dec(&tsc, &ts, 12):
            return False
        if tsc.p < tsc.end and tsc.p[0] == b'.':
            if ts > 99999999999ULL:
                return False
            tsc.p += 1
            w = tsc.end - tsc.p
            if w < 1 or w > 9 or not tp_dec(&tsc, &frac, 9):
                return False
            for k in range(9 - <int>w):
                frac *= 10
            ts = ts * 1000000000ULL + frac
        else:
            ts *= <u64>self.bare_unit_ns
        if tsc.p != tsc.end:
            return False
        # the info: strip spaces on both sides
        c.p = q + 1
        while c.p < c.end and c.p[0] == b' ':
            c.p += 1
        while c.end > c.p and c.end[-1] == b' ':
            c.end -= 1
        if ev == TP_EV_BOUNCED:
            if not tp_lit(&c, "dev_name: ", 10):
                return False
        w = tp_word(&c)
        if w == 0:
            return False
        for k in range(<int>w):
            if c.p[k] == b'=' or <unsigned char>c.p[k] >= 0x80 or <unsigned char>c.p[k] < 0x21:
                return False
        dev = None
        for k in range(len(self._devs)):
            pair_ = <tuple>self._devs[k]
            db = <bytes>pair_[0]
            if PyBytes_GET_SIZE(db) == w and memcmp(c.p, PyBytes_AS_STRING(db), w) == 0:
                dev = pair_[1]
                if k:
                    del self._devs[k]
                    self._devs.insert(0, pair_)
                break
        if dev is None:
            dev = PyUnicode_DecodeASCII(c.p, w, NULL)
            self._devs.insert(0, (PyBytes_FromStringAndSize(c.p, w), dev))
            if len(self._devs) > TP_NDEVCACHE:
                self._devs.pop()
        c.p += w
        if ev == TP_EV_BOUNCED:
            if not (tp_lit(&c, " dma_mask=", 10) and tp_hex(&c, &b) and tp_lit(&c, " dev_addr=", 10)
                    and tp_hex(&c, &a) and tp_lit(&c, " size=", 6) and tp_dec(&c, &size, 19)):
                return False
            if tp_lit(&c, " NORMAL", 7):
                attrs = 0
            elif tp_lit(&c, " FORCE", 6):
                attrs = 1
            else:
                return False
        else:
            if not tp_lit(&c, " dir=", 5):
                return False
            w = tp_word(&c)
            for k in range(4):
                if w == tp_dir_lens[k] and memcmp(c.p, tp_dirs[k], w) == 0:
                    d = k
                    break
            if d < 0:
                return False
            c.p += w
            if not (tp_lit(&c, " dma_addr=", 10) and tp_hex(&c, &a) and tp_lit(&c, " size=", 6)
                    and tp_dec(&c, &size, 19)):
                return False
            if ev == TP_EV_MAP or ev == TP_EV_MAP_RES:
                if not (tp_lit(&c, " phys_addr=", 11) and tp_hex(&c, &b)):
                    return False
            if ev != TP_EV_SYNC_CPU and ev != TP_EV_SYNC_DEV:
                if not tp_lit(&c, " attrs=", 7):
                    return False
                while c.p < c.end:
                    w = 0
                    while c.p + w < c.end and c.p[w] != b'|' and c.p[w] != b' ':
                        w += 1
                    v = 0
                    for k in range(TP_NATTRS):
                        if w == <Py_ssize_t>strlen(tp_attrs[k]) and memcmp(c.p, tp_attrs[k], w) == 0:
                            v = (<u64>1) << tp_attr_bits[k]
                            break
                    if v == 0:
                        return False
                    attrs |= v
                    c.p += w
                    if c.p < c.end:
                        if c.p[0] != b'|' or c.p + 1 == c.end:
                            return False
                        c.p += 1
        if c.p != c.end:
            return False
        self._fast_counts[idx] += 1
        out.append((self.lineno, ev, ts, <long long>cpu, dev, a, b, size, d, attrs, None))
        return True


# ---- the replay's hot loop (dmaphys/trace_replay.py: Replayer._replay_py) ----------------------
# The same steps as the Python loop for the frequent records (dma_map_phys / dma_unmap_phys /
# dma_sync_single_* of a known device, swiotlb_bounced), calling the c_* entry points directly;
# it stops at the first record it would need the Python loop for (and the Python loop takes that
# one), so both backends update the same state in the same order.

cdef inline int _tp_flush(Machine m) except -1:
    if m._warn_queue or m.dma_debug._pending:
        m.flush_warnings()
    return 0


def _trace_replay_fast(r, list recs, Py_ssize_t i):
    """Replay recs[i:] while they are simple; return the index of the first record not replayed."""
    cdef Machine m = r.m
    cdef Device dev
    cdef Py_ssize_t n = len(recs)
    cdef tuple rec
    cdef int ev, d, ncpus = m.cpus
    cdef long long cpu, cur_cpu = m._cpu
    cdef u64 ts, last_ts = r.last_ts, clock = m.clock_ns
    cdef u64 traced, phys, size, rr
    cdef unsigned long attrs
    cdef long long events = r.events, next_sample = r.next_sample
    cdef u64 ram_lo, ram_hi, sw_lo = r.sw_lo, sw_hi = r.sw_hi
    cdef bint touch = r.touch, failed
    cdef dict devs = r.devs
    cdef dict live
    cdef list dbg_errors = m.dma_debug.errors
    cdef list wlog = m.warnings_log
    cdef list e
    ram_lo, ram_hi = r.ram_cache
    try:
        while i < n:
            rec = <tuple>recs[i]
            ev = rec[1]
            if ev < 0 or ev > TP_EV_BOUNCED or (ev > TP_EV_UNMAP and ev < TP_EV_SYNC_CPU) \
                    or ev == 9 or ev == 10:
                break
            ts = rec[2]
            cpu = rec[3]
            if ts < last_ts or cpu >= ncpus:
                break
            st = devs.get(rec[4])
            if st is None:
                break
            line = rec[0]
            live = <dict>st.live
            if ev == TP_EV_MAP:
                phys = rec[6]
                size = rec[7]
                attrs = rec[9]
                if attrs & DMA_ATTR_MMIO_C or not (ram_lo <= phys and phys + size <= ram_hi):
                    break
                traced = rec[5]
                if traced == U64_MAX:
                    break
            elif ev == TP_EV_UNMAP:
                traced = rec[5]
                if traced not in live or traced in <dict>st.dup or (touch and st.iommu):
                    break
            elif ev != TP_EV_BOUNCED:
                traced = rec[5]
                if traced not in live:
                    break
            # the common part of every record
            if ts > clock:
                m.advance(ts - clock)
                clock = ts
            last_ts = ts
            if cpu != cur_cpu:
                m._cpu = <int>cpu
                cur_cpu = cpu
            events += 1
            dev = <Device>st.dev
            d = rec[8]
            try:
                if ev == TP_EV_MAP:
                    attrs &= SIM_ATTRS_C
                    _check_span(phys, size, "phys")
                    try:
                        rr = c_dma_map_phys(dev, phys, size, d, attrs)
                    finally:
                        _tp_flush(m)
                    try:
                        failed = c_dma_mapping_error(dev, rr) != 0
                    finally:
                        _tp_flush(m)
                    if failed:
                        st.replay_map_failures += 1
                    st.maps += 1
                    st.bytes += size
                    st.compared += 1
                    if rr == traced:
                        st.agree += 1
                    if st.iommu:
                        p = st.paths["iommu"]
                    elif sw_lo <= rr < sw_hi:
                        p = st.paths["swiotlb"]
                        st.replay_bounces += 1
                    else:
                        p = st.paths["direct"]
                    p[0] += 1
                    p[1] += size
                    old = live.get(traced)
                    if old is not None:
                        (<dict>st.dup).setdefault(traced, []).append(old)
                    live[traced] = [rr, size, line, d, False]
                    st.starts = None
                elif ev == TP_EV_UNMAP:
                    e = <list>live.pop(traced)
                    st.starts = None
                    st.unmaps += 1
                    fr = <dict>st.freed
                    fr[traced] = e[0]
                    if len(fr) > 1048576:
                        del fr[next(iter(fr))]
                    if <u64>e[0] != U64_MAX:
                        try:
                            c_dma_unmap_phys(dev, <u64>e[0], <u64>rec[7], d, (<unsigned long>rec[9]) & SIM_ATTRS_C)
                        finally:
                            _tp_flush(m)
                elif ev == TP_EV_BOUNCED:
                    st.traced_bounces += 1
                    events -= 1
                else:
                    e = <list>live[traced]
                    st.syncs += 1
                    if <u64>e[0] != U64_MAX:
                        try:
                            if ev == TP_EV_SYNC_CPU:
                                c_dma_sync_single_for_cpu(dev, <u64>e[0], <u64>rec[7], d)
                            else:
                                c_dma_sync_single_for_device(dev, <u64>e[0], <u64>rec[7], d)
                        finally:
                            _tp_flush(m)
            except Exception as exc:
                r._replay_error(line, exc)
            if dbg_errors or wlog:
                r._harvest(line)
            i += 1
            if events >= next_sample:
                r.events = events
                r._sample()
                next_sample = events + r.sample_every
    finally:
        r.events = events
        r.last_ts = last_ts
        r.next_sample = next_sample
    return i


__all__ += ["TraceParser"]
