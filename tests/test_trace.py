"""include/trace/events/dma.h: every event's fields and trace-cmd report line, the
__print_symbolic / __print_flags / __print_array rules, to_numpy, the ring buffer. Both backends.

Tracepoints are fired directly (``_test_trace_hooks``), the way mapping.c fires them.
"""

import numpy as np
import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_MMIO,
    DMA_ATTR_NO_WARN,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_ATTR_WEAK_ORDERING,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)

HEAD = "         dmaphys-1     [002]     1.234568: "


class Env:
    def __init__(self, impl):
        self.impl = impl
        self.m = impl.Machine()
        self.dev = self.m.add_device("nvme0")
        self.tr = self.m.trace
        if impl is dmaphys:
            from dmaphys import _core
            self._hook, self._set_dma = _core._test_trace_hooks, _core._test_sg_set_dma
        else:
            self._hook = reference.trace._test_trace_hooks
            self._set_dma = _ref_set_dma

    def __call__(self, op, *args):
        self._hook(op, self.dev, *args)

    def sg(self, segs, mapped):
        sg = self.impl.ScatterList(segs)
        for i, (a, n) in enumerate(mapped):
            self._set_dma(sg, i, a, n)
        return sg


def _ref_set_dma(sg, i, addr, length, flags=0):
    sg[i].dma_address, sg[i].dma_length, sg[i].dma_flags = addr, length, flags


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
    e("map_phys", 0x1000, 0x1000, 4096, DMA_TO_DEVICE, 0)
    assert len(e.tr) == 0 and e.tr.to_ftrace() == []


def test_map_and_unmap_phys_lines(env):
    env("map_phys", 0x12345000, 0x80001000, 4096, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)
    env("map_phys", 0x12345000, DMA_MAPPING_ERROR, 8192, DMA_FROM_DEVICE, 0)
    env("unmap_phys", 0x80001000, 4096, DMA_BIDIRECTIONAL, DMA_ATTR_NO_WARN)
    assert env.tr.to_ftrace() == [
        HEAD + "dma_map_phys:         nvme0 dir=TO_DEVICE dma_addr=80001000 size=4096 "
               "phys_addr=12345000 attrs=SKIP_CPU_SYNC|MMIO",
        HEAD + "dma_map_phys:         nvme0 dir=FROM_DEVICE dma_addr=ffffffffffffffff size=8192 "
               "phys_addr=12345000 attrs=",
        HEAD + "dma_unmap_phys:       nvme0 dir=BIDIRECTIONAL dma_addr=80001000 size=4096 attrs=NO_WARN"]
    ev = env.tr.events()[0]
    assert (ev.name, ev.system, ev.time_ns, ev.cpu, ev.device) == (
        "dma_map_phys", "dma", 1_234_567_890, 2, "nvme0")
    assert ev.fields == {"phys_addr": 0x12345000, "dma_addr": 0x80001000, "size": 4096,
                         "dir": DMA_TO_DEVICE, "attrs": DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO}


def test_sg_event_lines(env):
    sg = env.sg([(0x10000, 0x1000), (0x20800, 0x800), (0x30000, 0x2000)],
                [(0xF0000000, 0x1800), (0xF0002000, 0x2000)])
    env("map_sg", sg, 3, 2, DMA_FROM_DEVICE, 0)
    env("map_sg_err", sg, 3, -22, DMA_FROM_DEVICE, DMA_ATTR_WEAK_ORDERING)
    env("unmap_sg", sg, 3, DMA_FROM_DEVICE, 0)
    env("sync_sg_for_cpu", sg, 2, DMA_FROM_DEVICE)
    env("sync_sg_for_device", sg, 2, DMA_FROM_DEVICE)
    assert env.tr.to_ftrace() == [
        HEAD + "dma_map_sg:           nvme0 dir=FROM_DEVICE dma_addrs={0xf0000000,0xf0002000} "
               "sizes={0x1800,0x2000} phys_addrs={0x10000,0x20800,0x30000} attrs=",
        HEAD + "dma_map_sg_err:       nvme0 dir=FROM_DEVICE dma_addrs={0x10000,0x20800,0x30000} err=-22 "
               "attrs=WEAK_ORDERING",
        HEAD + "dma_unmap_sg:         nvme0 dir=FROM_DEVICE phys_addrs={0x10000,0x20800,0x30000} attrs=",
        HEAD + "dma_sync_sg_for_cpu:  nvme0 dir=FROM_DEVICE dma_addrs={0xf0000000,0xf0002000} "
               "sizes={0x1800,0x2000}",
        HEAD + "dma_sync_sg_for_device: nvme0 dir=FROM_DEVICE dma_addrs={0xf0000000,0xf0002000} "
               "sizes={0x1800,0x2000}"]
    f = env.tr.events()[0].fields
    assert f["phys_addrs"] == (0x10000, 0x20800, 0x30000) and f["lengths"] == (0x1800, 0x2000)


def test_sync_single_alloc_free_bounce_lines(env):
    env("sync_single_for_cpu", 0x80001000, 512, DMA_FROM_DEVICE)
    env("sync_single_for_device", 0x80001000, 512, DMA_TO_DEVICE)
    env("alloc", 0x40000000, 0x40000000, 8192, DMA_BIDIRECTIONAL, 0)
    env("free", 0x40000000, 0x40000000, 8192, DMA_BIDIRECTIONAL, 0)
    env.dev.force_bounce = True
    env("swiotlb_bounced", 0x12345000, 4096)
    env.dev.dma_mask = None
    env.dev.force_bounce = False
    env("swiotlb_bounced", 0x12345000, 16)
    assert env.tr.to_ftrace() == [
        HEAD + "dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE dma_addr=80001000 size=512",
        HEAD + "dma_sync_single_for_device: nvme0 dir=TO_DEVICE dma_addr=80001000 size=512",
        HEAD + "dma_alloc:            nvme0 dir=BIDIRECTIONAL dma_addr=40000000 size=8192 "
               "virt_addr=0xffff888040000000 flags=GFP_KERNEL attrs=",
        HEAD + "dma_free:             nvme0 dir=BIDIRECTIONAL dma_addr=40000000 size=8192 "
               "virt_addr=0xffff888040000000 attrs=",
        HEAD + "swiotlb_bounced:      dev_name: nvme0 dma_mask=ffffffffffffffff dev_addr=12345000 "
               "size=4096 FORCE",
        HEAD + "swiotlb_bounced:      dev_name: nvme0 dma_mask=0 dev_addr=12345000 size=16 NORMAL"]
    assert [e.system for e in env.tr.events()][-2:] == ["swiotlb", "swiotlb"]


def test_flags_and_symbols(env):
    env("map_phys", 0, 0, 1, DMA_TO_DEVICE, 0x7F6)                    # DMA_ATTR_ALL
    env("map_phys", 0, 0, 1, DMA_TO_DEVICE, DMA_ATTR_WEAK_ORDERING | 0x1 | (1 << 20))
    lines = [ln.split("attrs=")[1] for ln in env.tr.to_ftrace()]
    assert lines == ["WEAK_ORDERING|WRITE_COMBINE|NO_KERNEL_MAPPING|SKIP_CPU_SYNC|FORCE_CONTIGUOUS|"
                     "ALLOC_SINGLE_PAGES|NO_WARN|PRIVILEGED|MMIO",
                     "WEAK_ORDERING|0x100001"]


def test_timestamp_and_task_columns(impl):
    e = Env(impl)
    e.tr.enabled = True
    e.tr.comm, e.tr.pid = "kworker/u16:3", 4321
    e.m.advance(999_499)                                               # < 1 s: usecs, "%12llu"
    e("sync_single_for_cpu", 0x1000, 8, DMA_FROM_DEVICE)
    e.m.advance(3_000_000_000)
    e.m.cpu = 1
    e("sync_single_for_cpu", 0x1000, 8, DMA_FROM_DEVICE)
    assert e.tr.to_ftrace() == [
        "   kworker/u16:3-4321  [000]          999: dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE "
        "dma_addr=1000 size=8",
        "   kworker/u16:3-4321  [001]     3.000999: dma_sync_single_for_cpu: nvme0 dir=FROM_DEVICE "
        "dma_addr=1000 size=8"]


def test_to_numpy(env):
    env("map_phys", 0x12345000, 0x80001000, 4096, DMA_TO_DEVICE, DMA_ATTR_MMIO)
    sg = env.sg([(0x10000, 0x1000), (0x20000, 0x1000)], [(0xF0000000, 0x2000)])
    env("map_sg", sg, 2, 1, DMA_FROM_DEVICE, 0)
    env("swiotlb_bounced", 0x12345000, 4096)
    a = env.tr.to_numpy()
    assert a.dtype.names == ("event", "event_id", "system", "time_ns", "cpu", "device", "dma_addr",
                             "phys_addr", "size", "dir", "attrs", "nents", "ents", "err", "dma_mask",
                             "force")
    assert a.dtype["time_ns"] == np.uint64 and a.dtype["dma_addr"] == np.uint64
    assert list(a["event"]) == ["dma_map_phys", "dma_map_sg", "swiotlb_bounced"]
    assert list(a["event_id"]) == [0, 4, 11]
    assert list(a["system"]) == ["dma", "dma", "swiotlb"]
    assert list(a["dma_addr"]) == [0x80001000, 0xF0000000, 0x12345000]
    assert list(a["phys_addr"]) == [0x12345000, 0x10000, 0]
    assert list(a["size"]) == [4096, 0x2000, 4096]
    assert list(a["dir"]) == [DMA_TO_DEVICE, DMA_FROM_DEVICE, -1]
    assert list(a["attrs"]) == [DMA_ATTR_MMIO, 0, 0]
    assert list(a["nents"]) == [0, 2, 0] and list(a["ents"]) == [0, 1, 0]
    assert list(a["dma_mask"]) == [0, 0, 2**64 - 1]
    assert set(a["time_ns"]) == {1_234_567_890} and set(a["cpu"]) == {2} and set(a["device"]) == {"nvme0"}


def test_ring_overwrites_oldest(env):
    env.tr.capacity = 3
    for i in range(5):
        env("sync_single_for_device", 0x1000 * (i + 1), 8, DMA_TO_DEVICE)
    assert len(env.tr) == 3 and env.tr.overrun == 2
    assert [e.fields["dma_addr"] for e in env.tr.events()] == [0x3000, 0x4000, 0x5000]
    env("sync_single_for_device", 0x6000, 8, DMA_TO_DEVICE)
    assert [e.fields["dma_addr"] for e in env.tr.events()] == [0x4000, 0x5000, 0x6000]
    assert len(env.tr.to_numpy()) == 3
    env.tr.clear()
    assert len(env.tr) == 0 and env.tr.overrun == 0 and env.tr.to_numpy().shape == (0,)
    env("sync_single_for_device", 0x7000, 8, DMA_TO_DEVICE)
    assert [e.fields["dma_addr"] for e in env.tr.events()] == [0x7000]
    with pytest.raises(ValueError):
        env.tr.capacity = 0


def test_core_and_reference_agree():
    out = []
    for impl in (dmaphys, reference):
        e = Env(impl)
        e.tr.enabled = True
        e.tr.capacity = 4
        sg = e.sg([(0x10000, 0x1000), (0x20000, 0x1000)], [(0xF0000000, 0x2000)])
        for i in range(3):
            e.m.advance(700_000_000)
            e("map_phys", 0x1000 * i, 0x9000 * i, 64, i % 3, i << 5)
            e("map_sg", sg, 2, 1, DMA_BIDIRECTIONAL, 0)
        out.append((e.tr.to_ftrace(), e.tr.events(), e.tr.to_numpy().tolist(), e.tr.overrun))
    assert out[0] == out[1]
