"""include/trace/events/dma.h and swiotlb:swiotlb_bounced, fired by the kernel-named DMA API:
each event's fields and trace-cmd report line as real calls produce them, the emission rules
(failed maps traced, MMIO through dma_map_phys, no event for the refused wrappers, sg_err only
for unexpected codes, syncs skipped when dma_dev_need_sync() is false), the __print_symbolic /
__print_flags / __print_array rules, to_numpy, the ring buffer. Both backends.
"""

import numpy as np
import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_ALL,
    DMA_ATTR_MMIO,
    DMA_ATTR_NO_WARN,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_ATTR_WEAK_ORDERING,
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    EIO,
    KernelWarning,
)

HEAD = "         dmaphys-1     [002]     1.234568: "
P = 0x12345000                     # RAM below 4 GiB
HIGH = 0x4_1234_5000               # RAM above 4 GiB (a 32-bit device bounces it)
MMIO = 0xFE00_0000                 # a BAR in the 3-4 GiB hole


class Env:
    def __init__(self, impl, **machine_kw):
        self.impl = impl
        self.m = impl.Machine(**machine_kw)
        self.m.add_mmio(MMIO, 1 << 20, "bar0")
        self.dev = self.m.add_device("nvme0")
        self.tr = self.m.trace

    def lines(self):
        return self.tr.to_ftrace()


@pytest.fixture
def env(impl):
    e = Env(impl)
    e.tr.enabled = True
    e.m.advance(1_234_567_890)
    e.m.cpu = 2
    return e


def test_off_by_default(impl):
    e = Env(impl)
    assert not e.tr.enabled
    addr = impl.dma_map_phys(e.dev, P, 4096, DMA_TO_DEVICE)
    assert impl.dma_mapping_error(e.dev, addr) == 0
    impl.dma_unmap_phys(e.dev, addr, 4096, DMA_TO_DEVICE)
    assert len(e.tr) == 0 and e.tr.to_ftrace() == [] and e.tr.events() == []


def test_map_and_unmap_phys_lines(env):
    dma = env.impl
    addr = dma.dma_map_phys(env.dev, P, 4096, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    assert dma.dma_mapping_error(env.dev, addr) == 0                             # (not traced)
    dma.dma_unmap_phys(env.dev, addr, 4096, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    addr = dma.dma_map_single(env.dev, P + 0x80, 64, DMA_BIDIRECTIONAL)          # a wrapper: same event
    assert dma.dma_mapping_error(env.dev, addr) == 0
    dma.dma_unmap_single(env.dev, addr, 64, DMA_BIDIRECTIONAL)
    addr = dma.dma_map_page_attrs(env.dev, P >> 12, 0x10, 32, DMA_FROM_DEVICE, DMA_ATTR_NO_WARN)
    assert dma.dma_mapping_error(env.dev, addr) == 0
    dma.dma_unmap_page_attrs(env.dev, addr, 32, DMA_FROM_DEVICE, DMA_ATTR_NO_WARN)
    assert env.lines() == [
        HEAD + "dma_map_phys:         nvme0 dir=TO_DEVICE dma_addr=12345000 size=4096 "
               "phys_addr=12345000 attrs=SKIP_CPU_SYNC",
        HEAD + "dma_unmap_phys:       nvme0 dir=TO_DEVICE dma_addr=12345000 size=4096 attrs=SKIP_CPU_SYNC",
        HEAD + "dma_map_phys:         nvme0 dir=BIDIRECTIONAL dma_addr=12345080 size=64 "
               "phys_addr=12345080 attrs=",
        HEAD + "dma_unmap_phys:       nvme0 dir=BIDIRECTIONAL dma_addr=12345080 size=64 attrs=",
        HEAD + "dma_map_phys:         nvme0 dir=FROM_DEVICE dma_addr=12345010 size=32 "
               "phys_addr=12345010 attrs=NO_WARN",
        HEAD + "dma_unmap_phys:       nvme0 dir=FROM_DEVICE dma_addr=12345010 size=32 attrs=NO_WARN"]
    ev = env.tr.events()[0]
    assert (ev.name, ev.system, ev.time_ns, ev.cpu, ev.device) == (
        "dma_map_phys", "dma", 1_234_567_890, 2, "nvme0")
    assert ev.fields == {"phys_addr": P, "dma_addr": P, "size": 4096, "dir": DMA_TO_DEVICE,
                         "attrs": DMA_ATTR_SKIP_CPU_SYNC}
    assert env.tr.events()[1].fields == {"addr": P, "size": 4096, "dir": DMA_TO_DEVICE,
                                         "attrs": DMA_ATTR_SKIP_CPU_SYNC}


def test_failed_map_is_traced_with_the_error_address(impl):
    e = Env(impl, swiotlb=0)
    e.tr.enabled = True
    d32 = e.m.add_device("nvme1", dma_mask=DMA_BIT_MASK(32))
    with pytest.warns(KernelWarning, match="overflow"):
        assert impl.dma_map_phys(d32, HIGH, 8192, DMA_FROM_DEVICE) == DMA_MAPPING_ERROR
    assert e.lines() == [
        "         dmaphys-1     [000]            0: dma_map_phys:         nvme1 dir=FROM_DEVICE "
        "dma_addr=ffffffffffffffff size=8192 phys_addr=412345000 attrs="]


def test_maps_refused_before_dma_map_phys_are_not_traced(env):
    dma = env.impl
    # dma_map_page_attrs() with MMIO, and a NULL dma_mask, return before any tracepoint;
    # dma_unmap_page_attrs() with MMIO does nothing at all
    assert dma.dma_map_page_attrs(env.dev, P >> 12, 0, 64, DMA_TO_DEVICE, DMA_ATTR_MMIO) == DMA_MAPPING_ERROR
    dma.dma_unmap_page_attrs(env.dev, P, 64, DMA_TO_DEVICE, DMA_ATTR_MMIO)
    nomask = env.m.add_device("nomask", dma_mask=None)
    with pytest.warns(KernelWarning, match="dma_mask"):
        assert dma.dma_map_phys(nomask, P, 64, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    assert env.lines() == []


def test_resource_is_traced_as_dma_map_phys_with_mmio(env):
    dma = env.impl
    addr = dma.dma_map_resource(env.dev, MMIO + 0x40, 256, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC)
    assert dma.dma_mapping_error(env.dev, addr) == 0
    dma.dma_unmap_resource(env.dev, addr, 256, DMA_BIDIRECTIONAL)
    assert env.lines() == [
        HEAD + "dma_map_phys:         nvme0 dir=BIDIRECTIONAL dma_addr=fe000040 size=256 "
               "phys_addr=fe000040 attrs=SKIP_CPU_SYNC|MMIO",
        HEAD + "dma_unmap_phys:       nvme0 dir=BIDIRECTIONAL dma_addr=fe000040 size=256 attrs=MMIO"]


def test_sg_event_lines(env):
    dma = env.impl
    sg = dma.ScatterList([(0x10000, 0x1000), (0x20800, 0x800), (0x30000, 0x2000)])
    assert dma.dma_map_sg_attrs(env.dev, sg, 3, DMA_FROM_DEVICE, DMA_ATTR_WEAK_ORDERING) == 3
    dma.dma_sync_sg_for_cpu(env.dev, sg, 3, DMA_FROM_DEVICE)
    dma.dma_sync_sg_for_device(env.dev, sg, 3, DMA_FROM_DEVICE)
    dma.dma_unmap_sg_attrs(env.dev, sg, 3, DMA_FROM_DEVICE, DMA_ATTR_WEAK_ORDERING)
    assert env.lines() == [
        HEAD + "dma_map_sg:           nvme0 dir=FROM_DEVICE dma_addrs={0x10000,0x20800,0x30000} "
               "sizes={0x1000,0x800,0x2000} phys_addrs={0x10000,0x20800,0x30000} attrs=WEAK_ORDERING",
        HEAD + "dma_sync_sg_for_cpu:  nvme0 dir=FROM_DEVICE dma_addrs={0x10000,0x20800,0x30000} "
               "sizes={0x1000,0x800,0x2000}",
        HEAD + "dma_sync_sg_for_device: nvme0 dir=FROM_DEVICE dma_addrs={0x10000,0x20800,0x30000} "
               "sizes={0x1000,0x800,0x2000}",
        HEAD + "dma_unmap_sg:         nvme0 dir=FROM_DEVICE phys_addrs={0x10000,0x20800,0x30000} "
               "attrs=WEAK_ORDERING"]
    f = env.tr.events()[0].fields
    assert f["phys_addrs"] == (0x10000, 0x20800, 0x30000) and f["lengths"] == (0x1000, 0x800, 0x2000)


def test_sg_err_only_for_unexpected_codes(env):
    dma = env.impl
    sg = dma.ScatterList([(0x10000, 0x1000), (HIGH, 0x1000)])
    # dma-direct returns 0 for nents == 0: not one of the four allowed codes -> WARN, sg_err, -EIO
    with pytest.warns(KernelWarning, match=r"ents != -EREMOTEIO\) \(ents 0\)"):
        assert dma.dma_map_sg_attrs(env.dev, sg, 0, DMA_TO_DEVICE, 0) == 0      # (-EIO inside)
    assert env.lines() == [
        HEAD + "dma_map_sg_err:       nvme0 dir=TO_DEVICE dma_addrs={} err=0 attrs="]
    # a segment dma-direct cannot map: -EIO, an allowed code -> no event at all
    nobounce = Env(env.impl, swiotlb=0)
    nobounce.tr.enabled = True
    d32 = nobounce.m.add_device("nvme1", dma_mask=DMA_BIT_MASK(32))
    with pytest.warns(KernelWarning, match="overflow"):
        assert dma.dma_map_sgtable(d32, sg, DMA_TO_DEVICE, DMA_ATTR_NO_WARN) == -EIO
    assert nobounce.lines() == []


def test_sync_single_lines_and_emission_rule(env):
    dma = env.impl
    addr = dma.dma_map_phys(env.dev, P, 4096, DMA_BIDIRECTIONAL)
    dma.dma_sync_single_for_cpu(env.dev, addr, 512, DMA_FROM_DEVICE)
    dma.dma_sync_single_range_for_device(env.dev, addr, 0x200, 512, DMA_TO_DEVICE)
    assert env.lines()[1:] == [
        HEAD + "dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE dma_addr=12345000 size=512",
        HEAD + "dma_sync_single_for_device: nvme0 dir=TO_DEVICE dma_addr=12345200 size=512"]
    # without dma-debug a coherent, never-bounced device skips the syncs (dma_dev_need_sync false);
    # a non-coherent one does not
    e = Env(env.impl, dma_debug=False)
    nc = e.m.add_device("nc0", coherent=False)
    for d in (e.dev, nc):
        a = dma.dma_map_phys(d, P, 4096, DMA_FROM_DEVICE)
        sg = dma.ScatterList([(P + 0x2000, 64)])
        dma.dma_map_sg(d, sg, 1, DMA_FROM_DEVICE)
        e.tr.enabled = True
        dma.dma_sync_single_for_cpu(d, a, 4096, DMA_FROM_DEVICE)
        dma.dma_sync_sg_for_cpu(d, sg, 1, DMA_FROM_DEVICE)
        e.tr.enabled = False
    assert [(ev.name, ev.device) for ev in e.tr.events()] == [
        ("dma_sync_single_for_cpu", "nc0"), ("dma_sync_sg_for_cpu", "nc0")]


def test_alloc_free_lines(env):
    dma = env.impl
    cpu, handle = dma.dma_alloc_coherent(env.dev, 8192)
    dma.dma_free_coherent(env.dev, 8192, cpu, handle)
    assert dma.dma_alloc_attrs(env.dev, 1 << 40, DMA_ATTR_NO_WARN) is None          # more than the RAM
    dma.dma_free_coherent(env.dev, 4096, None, 0)                                    # NULL: traced only
    assert env.lines() == [
        HEAD + f"dma_alloc:            nvme0 dir=BIDIRECTIONAL dma_addr={handle:x} size=8192 "
               f"virt_addr=0x{0xffff888000000000 + cpu:x} flags=GFP_KERNEL attrs=",
        HEAD + f"dma_free:             nvme0 dir=BIDIRECTIONAL dma_addr={handle:x} size=8192 "
               f"virt_addr=0x{0xffff888000000000 + cpu:x} attrs=",
        HEAD + "dma_alloc:            nvme0 dir=BIDIRECTIONAL dma_addr=ffffffffffffffff "
               "size=1099511627776 virt_addr=(nil) flags=GFP_KERNEL attrs=NO_WARN",
        HEAD + "dma_free:             nvme0 dir=BIDIRECTIONAL dma_addr=0 size=4096 virt_addr=(nil) attrs="]


def test_swiotlb_bounced_precedes_dma_map_phys(env):
    dma = env.impl
    d32 = env.m.add_device("nvme1", dma_mask=DMA_BIT_MASK(32))
    addr = dma.dma_map_phys(d32, HIGH, 4096, DMA_TO_DEVICE)
    forced = env.m.add_device("nvme2", force_bounce=True)
    faddr = dma.dma_map_phys(forced, P, 16, DMA_TO_DEVICE)
    assert env.lines() == [
        HEAD + "swiotlb_bounced:      dev_name: nvme1 dma_mask=ffffffff dev_addr=412345000 size=4096 NORMAL",
        HEAD + f"dma_map_phys:         nvme1 dir=TO_DEVICE dma_addr={addr:x} size=4096 "
               "phys_addr=412345000 attrs=",
        HEAD + "swiotlb_bounced:      dev_name: nvme2 dma_mask=ffffffffffffffff dev_addr=12345000 "
               "size=16 FORCE",
        HEAD + f"dma_map_phys:         nvme2 dir=TO_DEVICE dma_addr={faddr:x} size=16 "
               "phys_addr=12345000 attrs="]
    assert [e.system for e in env.tr.events()] == ["swiotlb", "dma", "swiotlb", "dma"]
    assert env.tr.events()[0].fields == {"dma_mask": 0xFFFFFFFF, "dev_addr": HIGH, "size": 4096,
                                         "force": False}


def test_swiotlb_bounced_force_comes_from_the_pool_too(impl):
    # is_swiotlb_force_bounce(dev): swiotlb=force sets the pool's force_bounce, not the device's
    e = Env(impl, swiotlb_force=True)
    e.tr.enabled = True
    assert not e.dev.force_bounce
    impl.dma_map_phys(e.dev, P, 64, DMA_FROM_DEVICE)
    assert e.lines()[0].endswith("swiotlb_bounced:      dev_name: nvme0 dma_mask=ffffffffffffffff "
                                 "dev_addr=12345000 size=64 FORCE")


def test_flags_and_symbols(env):
    dma = env.impl
    dma.dma_map_phys(env.dev, P, 1, DMA_TO_DEVICE, DMA_ATTR_ALL)
    attrs = [ln.split("attrs=")[1] for ln in env.lines()]
    assert attrs == ["WEAK_ORDERING|WRITE_COMBINE|NO_KERNEL_MAPPING|SKIP_CPU_SYNC|FORCE_CONTIGUOUS|"
                     "ALLOC_SINGLE_PAGES|NO_WARN|PRIVILEGED|MMIO"]
    bidi = dma.dma_map_phys(env.dev, P + 0x1000, 64, DMA_BIDIRECTIONAL)     # any sync direction is fine
    for d, name in ((DMA_BIDIRECTIONAL, "BIDIRECTIONAL"), (DMA_TO_DEVICE, "TO_DEVICE"),
                    (DMA_FROM_DEVICE, "FROM_DEVICE")):
        dma.dma_sync_single_for_device(env.dev, bidi, 1, d)
        assert f" dir={name} " in env.lines()[-1]
    # what the API cannot produce (it BUGs on DMA_NONE and rejects unknown attrs): the
    # decoders' own rules — DMA_NONE, an unknown value in hex, leftover flag bits appended
    fmt = dmaphys._core if env.impl is dmaphys else reference.trace
    sym = getattr(fmt, "_print_symbolic_dir", None) or fmt.print_symbolic_dir
    flags = getattr(fmt, "_print_flags_attrs", None) or fmt.print_flags_attrs
    assert [sym(3), sym(7)] == ["NONE", "0x7"]
    assert flags(DMA_ATTR_WEAK_ORDERING | 0x1 | (1 << 20)) == "WEAK_ORDERING|0x100001" and flags(0) == ""


def test_timestamp_and_task_columns(impl):
    e = Env(impl)
    impl.dma_map_phys(e.dev, 0x1000, 64, DMA_FROM_DEVICE)
    e.tr.enabled = True
    e.tr.comm, e.tr.pid = "kworker/u16:3", 4321
    e.m.advance(999_499)                                                # < 1 s: usecs, "%12llu"
    impl.dma_sync_single_for_cpu(e.dev, 0x1000, 8, DMA_FROM_DEVICE)
    e.m.advance(3_000_000_000)
    e.m.cpu = 1
    impl.dma_sync_single_for_cpu(e.dev, 0x1000, 8, DMA_FROM_DEVICE)
    assert e.lines() == [
        "   kworker/u16:3-4321  [000]          999: dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE "
        "dma_addr=1000 size=8",
        "   kworker/u16:3-4321  [001]     3.000999: dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE "
        "dma_addr=1000 size=8"]


def test_to_numpy(env):
    dma = env.impl
    dma.dma_map_resource(env.dev, MMIO, 4096, DMA_TO_DEVICE)
    sg = dma.ScatterList([(0x10000, 0x1000), (0x20000, 0x1000)])
    dma.dma_map_sg(env.dev, sg, 2, DMA_FROM_DEVICE)
    d32 = env.m.add_device("nvme1", dma_mask=DMA_BIT_MASK(32))
    b = dma.dma_map_phys(d32, HIGH, 4096, DMA_TO_DEVICE)
    a = env.tr.to_numpy()
    assert a.dtype.names == ("event", "event_id", "system", "time_ns", "cpu", "device", "dma_addr",
                             "phys_addr", "size", "dir", "attrs", "nents", "ents", "err", "dma_mask",
                             "force")
    assert a.dtype["time_ns"] == np.uint64 and a.dtype["dma_addr"] == np.uint64
    assert list(a["event"]) == ["dma_map_phys", "dma_map_sg", "swiotlb_bounced", "dma_map_phys"]
    assert list(a["event_id"]) == [0, 4, 11, 0]
    assert list(a["system"]) == ["dma", "dma", "swiotlb", "dma"]
    assert list(a["device"]) == ["nvme0", "nvme0", "nvme1", "nvme1"]
    assert list(a["dma_addr"]) == [MMIO, 0x10000, HIGH, b]
    assert list(a["phys_addr"]) == [MMIO, 0x10000, 0, HIGH]
    assert list(a["size"]) == [4096, 0x2000, 4096, 4096]
    assert list(a["dir"]) == [DMA_TO_DEVICE, DMA_FROM_DEVICE, -1, DMA_TO_DEVICE]
    assert list(a["attrs"]) == [DMA_ATTR_MMIO, 0, 0, 0]
    assert list(a["nents"]) == [0, 2, 0, 0] and list(a["ents"]) == [0, 2, 0, 0]
    assert list(a["dma_mask"]) == [0, 0, 0xFFFFFFFF, 0]
    assert set(a["time_ns"]) == {1_234_567_890} and set(a["cpu"]) == {2}


def test_ring_overwrites_oldest(env):
    dma = env.impl
    env.tr.capacity = 3
    addr = dma.dma_map_phys(env.dev, P, 0x10000, DMA_TO_DEVICE)         # event 1
    assert dma.dma_mapping_error(env.dev, addr) == 0
    for i in range(4):                                                  # events 2..5
        dma.dma_sync_single_for_device(env.dev, addr + 0x1000 * (i + 1), 8, DMA_TO_DEVICE)
    assert len(env.tr) == 3 and env.tr.overrun == 2
    assert [e.fields["dma_addr"] for e in env.tr.events()] == [P + 0x2000, P + 0x3000, P + 0x4000]
    dma.dma_unmap_phys(env.dev, addr, 0x10000, DMA_TO_DEVICE)
    assert [e.name for e in env.tr.events()] == ["dma_sync_single_for_device"] * 2 + ["dma_unmap_phys"]
    assert len(env.tr.to_numpy()) == 3 and env.tr.overrun == 3
    env.tr.clear()
    assert len(env.tr) == 0 and env.tr.overrun == 0 and env.tr.to_numpy().shape == (0,)
    dma.dma_map_phys(env.dev, P, 8, DMA_TO_DEVICE)
    assert [e.name for e in env.tr.events()] == ["dma_map_phys"]
    with pytest.raises(ValueError):
        env.tr.capacity = 0


def test_core_and_reference_agree():
    out = []
    for impl in (dmaphys, reference):
        e = Env(impl)
        e.tr.enabled = True
        e.tr.capacity = 6
        d32 = e.m.add_device("nvme1", dma_mask=DMA_BIT_MASK(32))
        for i in range(3):
            e.m.advance(700_000_000)
            a = impl.dma_map_phys(d32, HIGH + 0x1000 * i, 64, i % 3, i << 5)
            assert impl.dma_mapping_error(d32, a) == 0
            sg = impl.ScatterList([(0x10000 + i * 0x1000, 0x100), (HIGH + 0x10000, 0x80)])
            impl.dma_map_sg(d32, sg, 2, DMA_BIDIRECTIONAL)
            impl.dma_sync_sg_for_cpu(d32, sg, 2, DMA_BIDIRECTIONAL)
            impl.dma_unmap_sg(d32, sg, 2, DMA_BIDIRECTIONAL)
            impl.dma_unmap_phys(d32, a, 64, i % 3, i << 5)
        out.append((e.tr.to_ftrace(), e.tr.events(), e.tr.to_numpy().tolist(), e.tr.overrun))
    assert out[0] == out[1]
