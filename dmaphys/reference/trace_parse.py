"""Reference model of trace_parse.pxi: the trace text reader, the straightforward pure-Python
way (every line through dmaphys._trace_text, whose docstring gives the grammar and the kernel
versions followed)."""

from __future__ import annotations

from .._trace_text import TRACE_DAT_MAGIC, TraceBinaryError, line_body

__all__ = ["TraceParser"]


class TraceParser:
    """Incremental reader of trace text: ``feed(bytes)`` → records of the complete lines,
    ``finish()`` → the record of a last line without a newline. See the module docstring.

    Reference twin of dmaphys._core.TraceParser: same returns and raises.
    """

    def __init__(self, bare_unit_ns: int = 1000):
        if bare_unit_ns not in (1, 1000):
            raise ValueError("bare_unit_ns must be 1 (trace-cmd -t) or 1000")
        self.bare_unit_ns = bare_unit_ns
        self.lineno = 0
        self.skipped = 0           # lines of other events
        self.headers = 0           # comment / header lines
        self.unrecognised = 0      # lines that are neither (counted, not parsed)
        self.cpus = 0              # from "cpus=N" or "#P:N" (0: not given)
        self.lost_events = 0       # trace-cmd "CPU:N [LOST M EVENTS]"
        self.counts: dict[str, int] = {}
        self._tail = b""

    def feed(self, data: bytes) -> list:
        """Reference twin of dmaphys._core.TraceParser.feed: same returns and raises."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("feed() takes bytes")
        if self.lineno == 0 and not self._tail and data.startswith(TRACE_DAT_MAGIC[:3]):
            raise TraceBinaryError(1, "this is a binary trace-cmd trace.dat file; turn it into text "
                                      "with `trace-cmd report -i FILE > FILE.txt` first")
        buf = self._tail + bytes(data)
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        out: list = []
        for raw in lines:
            self._line(raw, out)
        return out

    def finish(self) -> list:
        """Reference twin of dmaphys._core.TraceParser.finish: same returns and raises."""
        out: list = []
        if self._tail:
            raw, self._tail = self._tail, b""
            self._line(raw, out)
        return out

    def count_event(self, name: str) -> None:
        """Reference twin of dmaphys._core.TraceParser.count_event: same returns and raises."""
        self.counts[name] = self.counts.get(name, 0) + 1

    def _line(self, raw: bytes, out: list) -> None:
        self.lineno += 1
        line_body(self, self.lineno, raw, out)
