"""`dmaphys replay`: the trace text reader (both event generations, both text formats, sg events,
attrs, device names; the compiled and the pure-Python parser agree), the replay's calls (checked
through the replay machine's own trace), dma-debug findings with line numbers, bad input, the
round trip of a trace dmaphys writes, and the command line. Both backends."""

import json
import random

import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    DmaDebugWarning,
    KernelWarning,
)
from dmaphys.cli import main
from dmaphys.trace_replay import ReplayError, load_spec

ALL_ATTRS = ("WEAK_ORDERING|WRITE_COMBINE|NO_KERNEL_MAPPING|SKIP_CPU_SYNC|FORCE_CONTIGUOUS|"
             "ALLOC_SINGLE_PAGES|NO_WARN|PRIVILEGED|MMIO|CACHELINES_OVERLAP|REQUIRE_COHERENT|"
             "CC_SHARED|ALLOC_CC_SHARED")
ALL_ATTRS_VALUE = sum(1 << b for b in (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14))


def tracefs(cpu, ts, event, info, task="kworker/u16:3-412"):
    """A /sys/kernel/tracing/trace line: task-pid, [cpu], the irq/preempt flags, sec.usec."""
    return f"{task:>22} [{cpu:03d}] d..1. {ts}: {event}: {info}"


def tracecmd(cpu, ts, event, info, task="irq/45-nvme0q1-1234"):
    """A `trace-cmd report` line: the event name padded to 20."""
    return f"{task:>22} [{cpu:03d}] {ts}: {event + ':':<21}{info}"


def parse(impl, text, chunk=None):
    p = impl.TraceParser()
    data = text.encode() if isinstance(text, str) else text
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out += p.feed(data[i:i + step])
    return out + p.finish(), p


# ---- the parser -----------------------------------------------------------------------------

V612 = "\n".join([
    "# tracer: nop",
    "#",
    "# entries-in-buffer/entries-written: 9/9   #P:8",
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    tracefs(3, "1234.000001", "dma_map_page", "0000:03:00.0 dir=TO_DEVICE dma_addr=fffff000 size=4096 "
            "phys_addr=12345000 attrs=SKIP_CPU_SYNC|NO_WARN"),
    tracefs(3, "1234.000002", "dma_unmap_page", "0000:03:00.0 dir=TO_DEVICE dma_addr=fffff000 size=4096 "
            "attrs=SKIP_CPU_SYNC|NO_WARN"),
    tracefs(1, "1234.000003", "dma_map_resource", "fe300000.mmc dir=BIDIRECTIONAL dma_addr=fe000000 "
            "size=256 phys_addr=fe000000 attrs="),
    tracefs(1, "1234.000004", "dma_unmap_resource", "fe300000.mmc dir=BIDIRECTIONAL dma_addr=fe000000 "
            "size=256 attrs="),
    tracefs(0, "1234.000005", "sched_switch", "prev_comm=swapper/0 prev_pid=0 ==> next_comm=x next_pid=7"),
    tracefs(2, "1234.000006", "dma_map_sg", "0000:03:00.0 dir=FROM_DEVICE dma_addrs={0x22000,0x31000} "
            "sizes={0x1000,0x800} phys_addrs={0x22000,0x31000} attrs="),
    tracefs(2, "1234.000007", "dma_sync_sg_for_cpu", "0000:03:00.0 dir=FROM_DEVICE "
            "dma_addrs={0x22000,0x31000} sizes={0x1000,0x800}"),
    tracefs(2, "1234.000008", "dma_unmap_sg", "0000:03:00.0 dir=FROM_DEVICE phys_addrs={0x22000,0x31000} "
            "attrs="),
    tracefs(2, "1234.000009", "dma_alloc", "0000:03:00.0 dir=BIDIRECTIONAL dma_addr=7f000000 size=8192 "
            "virt_addr=000000004f8c2a11 flags=GFP_KERNEL attrs="),
    tracefs(2, "1234.000010", "dma_free", "0000:03:00.0 dir=BIDIRECTIONAL dma_addr=7f000000 size=8192 "
            "virt_addr=000000004f8c2a11 attrs="),
    tracefs(2, "1234.000011", "swiotlb_bounced", "dev_name: 0000:00:1f.2 dma_mask=ffffffff "
            "dev_addr=412345000 size=512 FORCE"),
])


def test_parse_v612_tracefs(impl):
    recs, p = parse(impl, V612)
    assert p.cpus == 8 and p.skipped == 1 and p.headers == 4
    assert [r[1] for r in recs] == [0, 1, 12, 13, 4, 9, 6, 2, 3, 11]
    assert recs[0] == (5, 0, 1234000001000, 3, "0000:03:00.0", 0xfffff000, 0x12345000, 4096, DMA_TO_DEVICE,
                       (1 << 5) | (1 << 8), None)
    assert recs[2][4] == "fe300000.mmc" and recs[2][6] == 0xfe000000
    assert recs[4][10] == ((0x22000, 0x31000), (0x1000, 0x800), (0x22000, 0x31000), 2, 2, False)
    assert recs[5][10] == ((0x22000, 0x31000), (0x1000, 0x800))
    assert recs[6][10] == ((0x22000, 0x31000),)
    assert recs[7][5:8] == (0x7f000000, -1, 8192) and recs[7][10] == "GFP_KERNEL"   # hashed %p
    assert recs[9][4:10] == ("0000:00:1f.2", 0x412345000, 0xffffffff, 512, -1, 1)
    assert p.counts == {"dma_map_page": 1, "dma_unmap_page": 1, "dma_map_resource": 1,
                        "dma_unmap_resource": 1, "dma_map_sg": 1, "dma_sync_sg_for_cpu": 1,
                        "dma_unmap_sg": 1, "dma_alloc": 1, "dma_free": 1, "swiotlb_bounced": 1}


V618 = "\n".join([
    "version = 6",
    "CPU 0 is empty",
    "cpus=4",
    tracecmd(1, "5.123456789", "dma_map_phys", "nvme0 dir=FROM_DEVICE dma_addr=ffffffffffffffff size=8192 "
             f"phys_addr=412345000 attrs={ALL_ATTRS}"),
    tracecmd(1, "5.123456790", "dma_map_sg", "0000:03:00.0 dir=TO_DEVICE nents=3/3 ents=1/1 "
             "dma_addrs={0xfffe0000} sizes={0x2400} phys_addrs={0x1000,0x2000,0x3000} attrs=MMIO"),
    tracecmd(1, "5.123456791", "dma_map_sg", "0000:03:00.0 dir=TO_DEVICE nents=128/200 ents=0/0 [TRUNCATED] "
             "dma_addrs={} sizes={} phys_addrs={" + ",".join(f"0x{i:x}000" for i in range(128)) + "} attrs="),
    tracecmd(1, "5.123456792", "dma_map_sg_err", "0000:03:00.0 dir=TO_DEVICE dma_addrs={0x1000} err=-12 "
             "attrs=0x80000|NO_WARN"),
    tracecmd(2, "5.123456793", "dma_sync_single_for_device", "nvme0 dir=NONE dma_addr=10 size=0"),
    "CPU:3 [LOST 42 EVENTS]",
    tracecmd(3, "999", "dma_map_phys", "nvme0 dir=TO_DEVICE dma_addr=1 size=1 phys_addr=1 attrs="),
])


def test_parse_v618_tracecmd_ns(impl):
    recs, p = parse(impl, V618)
    assert p.cpus == 4 and p.lost_events == 42 and p.headers == 4
    assert recs[0][2] == 5_123_456_789 and recs[0][5] == 2**64 - 1 and recs[0][9] == ALL_ATTRS_VALUE
    assert recs[1][10] == ((0xfffe0000,), (0x2400,), (0x1000, 0x2000, 0x3000), 3, 1, False)
    assert recs[1][9] == 1 << 10
    assert recs[2][10][3:] == (200, 0, True) and len(recs[2][10][2]) == 128
    assert recs[3][5] == -12 and recs[3][9] == 0x80000 | (1 << 8)
    assert recs[4][8] == 3 and recs[4][9] == 0
    assert recs[5][2] == 999_000                              # a bare integer: libtraceevent's µs
    recs, p = parse(impl, V618.replace("\nCPU:3", "\nCPU:3"), chunk=7)  # any chunking
    assert len(recs) == 6


BAD = [
    ("dma_map_phys: nvme0 dir=SIDEWAYS dma_addr=1 size=1 phys_addr=1 attrs=", "unknown direction"),
    ("dma_map_phys: nvme0 dir=0x7 dma_addr=1 size=1 phys_addr=1 attrs=", "unknown direction"),
    ("dma_map_phys: nvme0 dir=TO_DEVICE dma_addr=1 size=1 phys_a", "truncated or malformed line"),
    ("dma_map_phys: nvme0 dir=TO_DEVICE dma_addr=1 size=1", "truncated or malformed line: no phys_addr="),
    ("dma_map_phys: nvme0 dir=TO_DEVICE dma_addr=1 size=1 phys_addr=1 attrs=SKIP_CP", "unknown attribute"),
    ("dma_unmap_phys: nvme0 dir=TO_DEVICE dma_addr=zz size=1 attrs=", "not a hex number"),
    ("dma_map_sg: d dir=TO_DEVICE dma_addrs={0x1} sizes={} phys_addrs={0x1} attrs=", "entries"),
]


@pytest.mark.parametrize("info,msg", BAD)
def test_malformed_dma_lines_are_errors_with_their_line(impl, info, msg):
    text = "cpus=1\n" + tracecmd(0, "1.000001", *info.split(": ", 1))
    recs, _ = parse(impl, text)
    assert len(recs) == 1 and recs[0][:2] == (2, -1) and msg in recs[0][2]


def test_truncated_line_and_binary_input(impl):
    recs, p = parse(impl, "  x-1 [001] 1.000001\n  x-1 [001] 1.0000")
    assert recs == [(1, -1, "truncated line: no 'TIMESTAMP: EVENT:' after the CPU field"),
                    (2, -1, "truncated line: no 'TIMESTAMP: EVENT:' after the CPU field")]
    with pytest.raises(ValueError, match="line 1: this is a binary trace-cmd trace.dat"):
        parse(impl, b"\x17\x08Dtracing6\0\0\0")
    with pytest.raises(ValueError, match="line 2: binary data"):
        parse(impl, b"cpus=1\n\x00\x01\x02\n")


def test_core_and_reference_parsers_agree_on_mangled_lines():
    base = (V612 + "\n" + V618).encode().splitlines()
    rng = random.Random(5)
    lines = list(base)
    for _ in range(1500):
        line = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(line) + 1)
            op = rng.random()
            if op < 0.3:
                del line[j:j + rng.randint(1, 4)]
            elif op < 0.6:
                line[j:j] = bytes([rng.choice(b" :=[]|.0x9aGTz\t\r\xc3\xa9")])
            else:
                line = line[:j]
        lines.append(bytes(line))
    data = b"\n".join(lines)
    a, pa = parse(dmaphys, data, chunk=997)
    b, pb = parse(reference, data, chunk=4096)
    assert a == b
    assert (pa.lineno, pa.skipped, pa.headers, pa.unrecognised, pa.cpus, pa.lost_events, pa.counts) == \
           (pb.lineno, pb.skipped, pb.headers, pb.unrecognised, pb.cpus, pb.lost_events, pb.counts)


# ---- the replay: the calls it makes ----------------------------------------------------------

def replayed_events(impl, text, spec=None, **kw):
    """Replay on a machine whose own tracing records the calls the replay makes."""
    m = impl.Machine()
    m.trace.enabled = True
    rep = impl.replay(text, machine=m, **kw) if spec is None else None
    return rep, m.trace.events()


def test_replay_makes_the_traced_calls(impl):
    rep, evs = replayed_events(impl, V612)
    assert [e.name for e in evs] == ["dma_map_phys", "dma_unmap_phys", "dma_map_phys", "dma_unmap_phys",
                                     "dma_map_sg", "dma_sync_sg_for_cpu", "dma_unmap_sg", "dma_alloc",
                                     "dma_free"]
    assert evs[0].fields == {"phys_addr": 0x12345000, "dma_addr": 0x12345000, "size": 4096,
                             "dir": DMA_TO_DEVICE, "attrs": (1 << 5) | (1 << 8)}
    assert evs[0].cpu == 3 and evs[0].time_ns == 1234000001000 and evs[0].device == "0000:03:00.0"
    assert evs[2].fields["attrs"] & dmaphys.DMA_ATTR_MMIO and evs[2].fields["phys_addr"] == 0xfe000000
    assert evs[4].fields["phys_addrs"] == (0x22000, 0x31000) and evs[4].fields["lengths"] == (0x1000, 0x800)
    assert evs[7].fields["size"] == 8192
    assert rep["events"] == 9 and rep["skipped"] == 1
    nic = rep["devices"]["0000:03:00.0"]
    assert nic["maps"] == 2 and nic["allocs"] == 1 and rep["devices"]["fe300000.mmc"]["unmaps"] == 1
    assert rep["swiotlb"]["traced_bounces"] == 1
    assert rep["findings"] == []
    assert not any(f["kind"] == "map_error_not_checked" for f in rep["findings"])


def test_platform_and_pci_devices(impl):
    m = impl.Machine()
    impl.replay(V612, machine=m)
    assert m.devices["0000:03:00.0"].pci and not m.devices["fe300000.mmc"].pci


def test_failed_traced_map_is_not_a_live_mapping(impl):
    text = "cpus=4\n" + tracecmd(1, "5.000001", "dma_map_phys", "nvme0 dir=FROM_DEVICE "
                                 "dma_addr=ffffffffffffffff size=8192 phys_addr=412345000 attrs=")
    rep = impl.replay(text)
    d = rep["devices"]["nvme0"]
    assert d["traced_map_failures"] == 1 and d["maps"] == 0 and rep["findings"] == []


def test_flush_queue_follows_the_trace_clock(impl):
    """Lazy IOMMU: the flush-queue timeout (10 ms) fires between two traced calls 20 ms apart."""
    lines = ["cpus=1"]
    lines.append(tracecmd(0, "1.000000", "dma_map_phys", "nvme0 dir=TO_DEVICE dma_addr=ffff0000 size=4096 "
                          "phys_addr=12345000 attrs="))
    lines.append(tracecmd(0, "1.000010", "dma_unmap_phys", "nvme0 dir=TO_DEVICE dma_addr=ffff0000 size=4096 "
                          "attrs="))
    lines.append(tracecmd(0, "1.020000", "dma_map_phys", "nvme0 dir=TO_DEVICE dma_addr=ffff0000 size=4096 "
                          "phys_addr=12346000 attrs="))
    rep = impl.replay("\n".join(lines), iommu="lazy")
    assert rep["iommus"][0]["iotlb"]["invalidations"] >= 1       # the flush-queue timer flushed
    assert rep["machine"]["iommu"] == "lazy"


# ---- findings -------------------------------------------------------------------------------

def buggy_trace():
    mk = "dir=TO_DEVICE dma_addr={a:x} size={s} phys_addr={a:x} attrs="
    un = "dir=TO_DEVICE dma_addr={a:x} size={s} attrs="
    D = "0000:03:00.0 "
    return "\n".join([
        "cpus=2",
        tracecmd(0, "10.000001", "dma_map_phys", D + mk.format(a=0x1000000, s=4096)),    # 2: leaks
        tracecmd(0, "10.000002", "dma_map_phys", D + mk.format(a=0x2000000, s=4096)),    # 3
        tracecmd(1, "10.000003", "dma_unmap_phys", D + un.format(a=0x2000000, s=2048)),  # 4: wrong size
        tracecmd(1, "10.000004", "dma_map_phys", D + mk.format(a=0x3000000, s=512)),     # 5
        tracecmd(1, "10.000005", "dma_unmap_phys", D + un.format(a=0x3000000, s=512)),   # 6
        tracecmd(0, "10.000006", "dma_unmap_phys", D + un.format(a=0x3000000, s=512)),   # 7: double unmap
        tracecmd(0, "10.000007", "dma_unmap_phys", D + un.format(a=0x7000000, s=64)),    # 8: never mapped
    ]) + "\n"


def test_leak_wrong_size_and_double_unmap_findings(impl):
    rep = impl.replay(buggy_trace())
    got = [(f["line"], f["kind"], f["device"]) for f in rep["findings"]]
    assert got == [(2, "leak", "0000:03:00.0"), (4, "size_mismatch", "0000:03:00.0"),
                   (7, "not_allocated", "0000:03:00.0")]
    assert "[map size=4096 bytes] [unmap size=2048 bytes]" in rep["findings"][1]["text"]
    assert rep["finding_kinds"] == {"leak": 1, "not_allocated": 1, "size_mismatch": 1}
    assert rep["unmatched"] == 1 and rep["unmatched_samples"][0]["line"] == 8
    assert "never mapped" in rep["unmatched_samples"][0]["text"]


# ---- bad input -----------------------------------------------------------------------------

def test_bad_input_raises_replay_error_with_line(impl, tmp_path):
    info = "d dir=TO_DEVICE dma_addr={0} size=4 phys_addr={0} attrs="
    good = tracecmd(0, "2.000000", "dma_map_phys", info.format(1000))
    back = tracecmd(0, "1.000000", "dma_map_phys", info.format(2000))
    with pytest.raises(ReplayError, match=r"^line 2: timestamp 1.000000000 s goes back"):
        impl.replay(good + "\n" + back)
    rep = impl.replay(good + "\n" + back, lenient=True)
    assert rep["timestamps_clamped"] == 1 and rep["events"] == 2
    with pytest.raises(ReplayError, match=r"^line 2: dma_map_phys: unknown direction dir='UP'"):
        impl.replay(good + "\n" + good.replace("TO_DEVICE", "UP"))
    rep = impl.replay(good + "\n" + good.replace("TO_DEVICE", "UP") + "\n" + good[:40], lenient=True)
    assert rep["malformed"] == 2 and [e["line"] for e in rep["malformed_samples"]] == [2, 3]
    with pytest.raises(ReplayError, match=r"^line 1: CPU 9, but the simulated machine has 4 CPUs"):
        impl.replay(good.replace("[000]", "[009]"))
    f = tmp_path / "trace.dat"
    f.write_bytes(b"\x17\x08Dtracing6\0\0\0\x08\0\0\0")
    with pytest.raises(ReplayError, match="line 1: this is a binary trace-cmd trace.dat"):
        impl.replay(str(f))
    with pytest.raises(ReplayError, match="No such file"):
        impl.replay(str(tmp_path / "missing.txt"))
    with pytest.raises(ReplayError, match="unknown key"):
        impl.replay(good, machine={"cpu": 4})


def test_cli_bad_input_is_a_message_not_a_traceback(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text(tracecmd(0, "1.000000", "dma_map_phys", "d dir=UP dma_addr=1 size=1 phys_addr=1 attrs=")
                 + "\n")
    assert main(["replay", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dmaphys replay: {f}: line 1: dma_map_phys: unknown direction")
    assert "Traceback" not in err
    (tmp_path / "b.dat").write_bytes(bytes(range(256)))
    assert main(["replay", str(tmp_path / "b.dat")]) == 2
    assert "line 1: binary data" in capsys.readouterr().err


def test_cli_json_report(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text(buggy_trace())
    spec = tmp_path / "m.toml"
    spec.write_text('cpus = 2\n[devices."0000:03:00.0"]\ndma_mask = 64\n')
    assert main(["replay", str(f), "--machine", str(spec), "--json", "--iommu", "strict"]) == 1
    rep = json.loads(capsys.readouterr().out)
    for key in ("events", "skipped", "findings", "devices", "address_agreement"):
        assert key in rep
    assert rep["events"] == 7 and rep["machine"]["cpus"] == 2 and rep["machine"]["iommu"] == "strict"
    assert rep["devices"]["0000:03:00.0"]["maps"] == 3 and rep["devices"]["0000:03:00.0"]["unmaps"] == 2
    assert {f["kind"] for f in rep["findings"]} == {"leak", "size_mismatch", "not_allocated"}
    assert rep["address_agreement"] == 0.0                       # IOVAs, not the traced dma-direct addresses
    assert main(["replay", str(f), "--plot", str(tmp_path / "occ.png")]) == 1
    out = capsys.readouterr().out
    assert "line 4: [size_mismatch]" in out and "address agreement" in out
    assert (tmp_path / "occ.png").stat().st_size > 0


def test_load_spec_json(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"ram": [[0, "3G"], ["4G", "60G"]], "iommu": "lazy"}))
    assert load_spec(str(p))["iommu"] == {"mode": "lazy"}
    rep = dmaphys.replay(V612, machine=str(p))
    assert rep["machine"]["ram_bytes"] >= (63 << 30) and rep["machine"]["iommu"] == "lazy"


# ---- the round trip ---------------------------------------------------------------------------

def traced_workload(impl):
    """A mixed workload on a machine with tracing on: dma-direct, swiotlb bounces, a lazy IOMMU
    (flush-queue timeouts included), sg lists, coherent buffers, a leak and a wrong-size unmap."""
    m = impl.Machine(cpus=4)
    m.trace.capacity = 1 << 20
    m.trace.enabled = True
    io = m.add_iommu(fmt="x86-64", strict=False)
    nic = m.add_device("0000:03:00.0", dma_mask=DMA_BIT_MASK(64), iommu=io)
    old = m.add_device("0000:00:1f.2", dma_mask=DMA_BIT_MASK(32))
    mmc = m.add_device("fe300000.mmc", pci=False)
    rng = random.Random(3)
    live = []
    for i in range(300):
        m.advance(rng.choice((1_000, 20_000, 3_000_000)))
        m.cpu = rng.randrange(4)
        dev = rng.choice((nic, old, mmc))
        phys = 0x4_0000_0000 + rng.randrange(4096) * 4096 + rng.randrange(0, 2048, 64)
        size = rng.choice((64, 1500, 4096))
        d = rng.choice((DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL))
        a = impl.dma_map_phys(dev, phys, size, d)
        if impl.dma_mapping_error(dev, a) == 0:
            live.append((dev, a, size, d))
        if i % 50 == 7:
            sg = impl.ScatterList([(0x1000_0000 + i * 0x10000, 4096), (0x1000_8000 + i * 0x10000, 2048)])
            n = impl.dma_map_sg(nic, sg, 2, DMA_TO_DEVICE)
            impl.dma_sync_sg_for_cpu(nic, sg, 2, DMA_TO_DEVICE)
            impl.dma_unmap_sg(nic, sg, 2, DMA_TO_DEVICE)
            assert n
        if i % 100 == 3:
            cpu, h = impl.dma_alloc_coherent(mmc, 8192)
            impl.dma_free_coherent(mmc, 8192, cpu, h)
        while live and (len(live) > 20 or rng.random() < 0.4):
            dev, a, size, d = live.pop(rng.randrange(len(live)))
            if d != DMA_TO_DEVICE and rng.random() < 0.5:
                impl.dma_sync_single_for_cpu(dev, a, size, d)
            if i == 150 and dev is not nic:
                impl.dma_unmap_phys(dev, a, size // 2 or 1, d)            # a wrong-size unmap
            else:
                impl.dma_unmap_phys(dev, a, size, d)
    return m, live


SPEC = {"cpus": 4, "iommu": {"mode": "lazy", "fmt": "x86-64"},
        "devices": {"0000:03:00.0": {"iommu": True}, "0000:00:1f.2": {"dma_mask": 32, "iommu": False},
                    "fe300000.mmc": {"iommu": False}}}


def test_round_trip_same_addresses_counters_and_findings(impl):
    with pytest.warns(KernelWarning):
        m, live = traced_workload(impl)
    lines = m.trace.to_ftrace()
    assert m.trace.overrun == 0 and len(lines) > 500
    original_kinds = sorted({r.kind for r in m.dma_debug.errors})
    rep = impl.replay(lines, machine=SPEC)
    assert rep["address_agreement"] == 1.0
    assert rep["events"] == sum(1 for line in lines if "swiotlb_bounced" not in line)
    for name, dev in m.devices.items():
        d = rep["devices"][name]
        assert d["address_agreement"] == 1.0
        assert d["live_at_end"] == sum(1 for x in live if x[0] is dev)
    traced_bounces = sum(1 for line in lines if "swiotlb_bounced" in line)
    assert rep["swiotlb"]["traced_bounces"] == rep["swiotlb"]["replay_bounces"] == traced_bounces > 0
    kinds = sorted({f["kind"] for f in rep["findings"]} - {"leak"})
    assert kinds == original_kinds == ["size_mismatch"]
    assert sum(1 for f in rep["findings"] if f["kind"] == "leak") == len(live)
    # the same trace through the file reader, and through the other backend
    other = reference if impl is dmaphys else dmaphys
    rep2 = other.replay(iter(lines), machine=SPEC)
    for key in ("events", "devices", "findings", "address_agreement", "iova", "swiotlb", "iommus"):
        assert rep2[key] == rep[key], key


def test_dma_debug_warning_category_is_not_raised_into_the_caller(impl):
    # pytest turns warnings into errors: the replay keeps the simulator's warnings to itself
    rep = impl.replay(buggy_trace())
    assert rep["findings_total"] == 3
    with pytest.warns(DmaDebugWarning):
        m = impl.Machine()
        dev = m.add_device("x")
        impl.dma_unmap_phys(dev, 0x1000, 16, DMA_TO_DEVICE)
