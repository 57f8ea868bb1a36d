"""kernel/dma/debug.c driven through the kernel-named DMA API (dma_map_phys and its wrappers,
dma_map_sg, the syncs, dma_alloc_coherent, m.remove_device): every report class with a
positive and a negative case, counters, dump, leak report, the kernel's quirks, and the
beyond-the-kernel bounced-read report. Both backends.

Hook-level tests (``_test_debug_hooks``) remain only where the real API cannot reach a case
yet, each saying why: sg lists whose segments an IOMMU merged (dma-direct never merges), a
bounce announced by the dma-iommu bounce path, debug_dma_map_single()'s invalid-area report
(the entry point refuses a pointer without a struct page as bad Python input), and the
stale-IOTLB report (raised by the IOMMU core).
"""

import warnings

import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_MMIO,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    ENOMEM,
    DmaDebugError,
    DmaDebugWarning,
    KernelWarning,
)

P = 0x12345000                        # RAM; on a plain dma-direct device its DMA address is P
HIGH = 0x4_1234_5000                  # RAM above 4 GiB: a 32-bit device bounces it (swiotlb)
MMIO = 0xFE00_0000                    # a BAR in the 3-4 GiB hole (dma_map_resource)
P_CLN = 0x48D140                      # P's cache line number (L1_CACHE_SHIFT 6)
PFX = "DMA-API: nvme0 nvme0: "


class Env:
    """A machine with dma-debug on (the default), an MMIO BAR and a coherent 64-bit device."""

    def __init__(self, impl, **machine_kw):
        self.impl = impl
        self.m = impl.Machine(**machine_kw)
        self.m.add_mmio(MMIO, 1 << 20, "bar0")
        self.dev = self.m.add_device("nvme0")
        self.dbg = self.m.dma_debug

    def map(self, phys, size, dir, attrs=0, checked=True, dev=None):
        """dma_map_phys(), then (like a correct driver) dma_mapping_error()."""
        dev = dev or self.dev
        addr = self.impl.dma_map_phys(dev, phys, size, dir, attrs)
        if checked:
            assert self.impl.dma_mapping_error(dev, addr) == 0
        return addr

    def unmap(self, addr, size, dir, attrs=0, dev=None):
        self.impl.dma_unmap_phys(dev or self.dev, addr, size, dir, attrs)

    def map_sg(self, segs, dir, nents=None, attrs=0, dev=None):
        sg = self.impl.ScatterList(segs)
        n = self.impl.dma_map_sg_attrs(dev or self.dev, sg, len(segs) if nents is None else nents, dir, attrs)
        assert n == (len(segs) if nents is None else nents)       # dma-direct never merges
        return sg

    def kinds(self):
        return [r.kind for r in self.dbg.errors]


@pytest.fixture
def env(impl):
    return Env(impl)


def _dev32(env, name="nic0"):
    """A 32-bit device: HIGH is beyond its mask, so dma-direct bounces it through swiotlb."""
    return env.m.add_device(name, dma_mask=DMA_BIT_MASK(32))


# ---- clean use ------------------------------------------------------------------------------------
def test_map_unmap_clean(env):
    addr = env.map(P, 4096, DMA_FROM_DEVICE)
    assert addr == P and len(env.dbg) == 1
    assert env.dbg.entries() == [{
        "device": "nvme0", "type": "phy", "dev_addr": P, "size": 4096, "direction": DMA_FROM_DEVICE,
        "paddr": P, "map_err_type": "dma map error checked", "sg_call_ents": 0, "sg_mapped_ents": 0,
        "attrs": 0, "bucket": 4514, "bounce": None}]
    assert (env.dbg.num_free_entries, env.dbg.nr_total_entries) == (65535, 65536)
    assert env.dbg.get_state()["cachelines"] == [(P_CLN, 0)]
    env.unmap(addr, 4096, DMA_FROM_DEVICE)
    assert env.dbg.errors == [] and env.dbg.error_count == 0 and len(env.dbg) == 0
    assert env.dbg.num_free_entries == 65536 and env.dbg.min_free_entries == 65535
    assert env.dbg.get_state()["cachelines"] == []


def test_every_streaming_entry_point_records_a_phy_entry(env):
    dma = env.impl
    d = env.dev
    a_single = dma.dma_map_single(d, P, 64, DMA_TO_DEVICE)
    a_page = dma.dma_map_page(d, (P + 0x1000) >> 12, 0x80, 64, DMA_FROM_DEVICE)
    a_phys = dma.dma_map_phys(d, P + 0x2000, 64, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC)
    a_res = dma.dma_map_resource(d, MMIO, 64, DMA_BIDIRECTIONAL, 0)
    for a in (a_single, a_page, a_phys, a_res):
        assert dma.dma_mapping_error(d, a) == 0
    got = sorted((e["dev_addr"], e["type"], e["paddr"], e["direction"], e["attrs"])
                 for e in env.dbg.entries())
    assert got == [(P, "phy", P, DMA_TO_DEVICE, 0),
                   (P + 0x1080, "phy", P + 0x1080, DMA_FROM_DEVICE, 0),
                   (P + 0x2000, "phy", P + 0x2000, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC),
                   (MMIO, "phy", MMIO, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)]      # resource = phy + MMIO
    dma.dma_unmap_single(d, a_single, 64, DMA_TO_DEVICE)
    dma.dma_unmap_page(d, a_page, 64, DMA_FROM_DEVICE)
    dma.dma_unmap_phys(d, a_phys, 64, DMA_BIDIRECTIONAL, DMA_ATTR_SKIP_CPU_SYNC)
    dma.dma_unmap_resource(d, a_res, 64, DMA_BIDIRECTIONAL)
    assert env.dbg.errors == [] and len(env.dbg) == 0


def test_failed_maps_are_not_recorded(impl):
    env = Env(impl, swiotlb=0)
    d32 = _dev32(env)
    with pytest.warns(KernelWarning, match="overflow"):
        addr = impl.dma_map_phys(d32, HIGH, 4096, DMA_TO_DEVICE)       # no swiotlb to bounce it
    assert addr == DMA_MAPPING_ERROR and impl.dma_mapping_error(d32, addr) == -ENOMEM
    # dma_map_page_attrs() refuses MMIO before dma_map_phys(): nothing reaches dma-debug
    assert impl.dma_map_page_attrs(env.dev, P >> 12, 0, 64, DMA_TO_DEVICE, DMA_ATTR_MMIO) == DMA_MAPPING_ERROR
    env.dev.dma_mask = None                                             # WARN_ON_ONCE(!dev->dma_mask)
    with pytest.warns(KernelWarning, match="dma_mask"):
        assert impl.dma_map_phys(env.dev, P, 64, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    assert len(env.dbg) == 0 and env.dbg.errors == []


# ---- check_unmap ----------------------------------------------------------------------------------
def test_unmap_never_mapped(env):
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(0x1000, 4096, DMA_TO_DEVICE)
    text = (PFX + "device driver tries to free DMA memory it has not allocated "
            "[device address=0x0000000000001000] [size=4096 bytes]")
    assert [str(x.message) for x in w] == [text]
    assert env.dbg.errors == [env.impl.DmaDebugRecord("not_allocated", "nvme0", text, 0x1000, 4096)]
    assert env.dbg.error_count == 1


def test_unmap_of_a_failed_mapping_is_an_invalid_address(impl):
    env = Env(impl, swiotlb=0)
    d32 = _dev32(env, "nvme1")
    with pytest.warns(KernelWarning, match="overflow"):
        addr = impl.dma_map_phys(d32, HIGH, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        impl.dma_unmap_phys(d32, addr, 4096, DMA_TO_DEVICE)              # the driver skipped the check
    assert [str(x.message) for x in w] == [
        "DMA-API: nvme1 nvme1: device driver tries to free an invalid DMA memory address"]
    assert [r.kind for r in env.dbg.errors] == ["invalid_address"]


def test_size_mismatch(env):
    addr = env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(addr, 2048, DMA_TO_DEVICE)
    assert [str(x.message) for x in w] == [PFX + "device driver frees DMA memory with different size "
                                           "[device address=0x0000000012345000] [map size=4096 bytes] "
                                           "[unmap size=2048 bytes]"]
    assert env.kinds() == ["size_mismatch"] and len(env.dbg) == 0      # removed anyway


def test_direction_mismatch(env):
    addr = env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(addr, 4096, DMA_FROM_DEVICE)
    assert str(w[0].message) == (PFX + "device driver frees DMA memory with different direction "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped with DMA_TO_DEVICE] [unmapped with DMA_FROM_DEVICE]")
    assert env.kinds() == ["direction_mismatch"]


def test_wrong_function_sg_unmapped_as_phy(env):
    sg = env.map_sg([(P, 4096)], DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(sg[0].dma_address, 4096, DMA_TO_DEVICE)
    assert str(w[0].message) == (PFX + "device driver frees DMA memory with wrong function "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped as scatter-gather] [unmapped as phy]")
    assert env.kinds() == ["wrong_function"] and len(env.dbg) == 0


def test_wrong_function_phy_unmapped_as_sg(env):
    sg = env.map_sg([(P, 4096)], DMA_TO_DEVICE)
    env.impl.dma_unmap_sg(env.dev, sg, 1, DMA_TO_DEVICE)               # clean; sg keeps its dma_address
    assert env.dbg.errors == []
    env.map(P, 4096, DMA_TO_DEVICE)
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_unmap_sg(env.dev, sg, 1, DMA_TO_DEVICE)           # a stale list for a phy mapping
    assert str(w[0].message).endswith("[mapped as phy] [unmapped as scatter-gather]")
    # the phy entry's sg_call_ents is 0, so the count check fires too (as in the kernel)
    assert env.kinds() == ["wrong_function", "sg_count_mismatch"] and len(env.dbg) == 0
    assert str(w[1].message) == (PFX + "device driver frees DMA sg list with different entry count "
                                 "[map count=0] [unmap count=1]")


def test_wrong_function_coherent_vs_phy(env):
    env.dbg.all_errors = True
    cpu, handle = env.impl.dma_alloc_coherent(env.dev, 4096)
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(handle, 4096, DMA_BIDIRECTIONAL)                     # coherent freed as phy
    assert [str(x.message) for x in w] == [
        PFX + f"device driver frees DMA memory with wrong function [device address=0x{handle:016x}] "
        "[size=4096 bytes] [mapped as coherent] [unmapped as phy]"]
    buf = env.m.alloc_pages(1)
    addr = env.map(buf, 4096, DMA_BIDIRECTIONAL)
    with pytest.warns(DmaDebugWarning, match=r"\[mapped as phy\] \[unmapped as coherent\]$"):
        env.impl.dma_free_coherent(env.dev, 4096, buf, addr)           # phy freed as coherent
    assert env.kinds() == ["wrong_function", "wrong_function"] and len(env.dbg) == 0


def test_coherent_alloc_free_and_cpu_address_mismatch(env):
    dma = env.impl
    c1, h1 = dma.dma_alloc_coherent(env.dev, 8192)
    c2, h2 = dma.dma_alloc_coherent(env.dev, 8192)
    assert [(e["type"], e["direction"], e["map_err_type"]) for e in env.dbg.entries()] == [
        ("coherent", DMA_BIDIRECTIONAL, "dma map error check not applicable")] * 2
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        dma.dma_free_coherent(env.dev, 8192, c2, h1)                   # the buffers' CPU addresses swapped
        dma.dma_free_coherent(env.dev, 8192, c1, h2)
    # "0x%pa" prints the prefix twice, as in the kernel
    assert str(w[0].message) == (PFX + "device driver frees DMA memory with different CPU address "
                                 f"[device address=0x{h1:016x}] [size=8192 bytes] "
                                 f"[cpu alloc address=0x{c1:016x}] [cpu free address=0x{c2:016x}]")
    assert env.kinds() == ["cpu_address_mismatch"] * 2 and len(env.dbg) == 0
    c3, h3 = dma.dma_alloc_coherent(env.dev, 8192)
    dma.dma_free_coherent(env.dev, 8192, c3, h3)
    assert env.dbg.error_count == 2


def test_sg_map_unmap_clean_and_count_mismatch(env):
    dma = env.impl
    sg = env.map_sg([(P, 4096), (P + 0x10000, 4096)], DMA_FROM_DEVICE)
    assert [(e["type"], e["sg_call_ents"], e["sg_mapped_ents"]) for e in env.dbg.entries()] == [
        ("scatter-gather", 2, 2)] * 2
    dma.dma_unmap_sg(env.dev, sg, 2, DMA_FROM_DEVICE)
    assert env.dbg.errors == [] and len(env.dbg) == 0
    assert dma.dma_map_sg(env.dev, sg, 2, DMA_FROM_DEVICE) == 2
    with pytest.warns(DmaDebugWarning) as w:
        dma.dma_unmap_sg(env.dev, sg, 1, DMA_FROM_DEVICE)              # not the nents it was mapped with
    assert [str(x.message) for x in w] == [PFX + "device driver frees DMA sg list with different entry "
                                           "count [map count=2] [unmap count=1]"]
    assert env.kinds() == ["sg_count_mismatch"] and len(env.dbg) == 1


def test_sgtable_map_unmap_clean(env):
    sgt = env.impl.ScatterList([(P, 4096), (P + 0x2000, 512)])
    assert env.impl.dma_map_sgtable(env.dev, sgt, DMA_BIDIRECTIONAL) == 0
    env.impl.dma_sync_sgtable_for_cpu(env.dev, sgt, DMA_BIDIRECTIONAL)
    env.impl.dma_sync_sgtable_for_device(env.dev, sgt, DMA_BIDIRECTIONAL)
    env.impl.dma_unmap_sgtable(env.dev, sgt, DMA_BIDIRECTIONAL)
    assert env.dbg.errors == [] and len(env.dbg) == 0


def test_unchecked_map_error(env):
    addr = env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    assert env.dbg.entries()[0]["map_err_type"] == "dma map error not checked"
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(addr, 4096, DMA_TO_DEVICE)
    assert [str(x.message) for x in w] == [PFX + "device driver failed to check map error[device address="
                                           "0x0000000012345000] [size=4096 bytes] [mapped as phy]"]
    assert env.kinds() == ["map_error_not_checked"]


def test_unchecked_resource_map_error(env):
    addr = env.impl.dma_map_resource(env.dev, MMIO, 4096, DMA_BIDIRECTIONAL)
    with pytest.warns(DmaDebugWarning, match=r"failed to check map error.*\[mapped as phy\]$"):
        env.impl.dma_unmap_resource(env.dev, addr, 4096, DMA_BIDIRECTIONAL)


def test_checked_map_error_and_sg_coherent_not_applicable(env):
    addr = env.map(P, 4096, DMA_TO_DEVICE)
    assert env.dbg.entries()[0]["map_err_type"] == "dma map error checked"
    env.unmap(addr, 4096, DMA_TO_DEVICE)
    sg = env.map_sg([(P, 4096)], DMA_TO_DEVICE)                         # nobody calls dma_mapping_error
    cpu, handle = env.impl.dma_alloc_coherent(env.dev, 4096)
    assert [e["map_err_type"] for e in env.dbg.entries()] == ["dma map error check not applicable"] * 2
    env.impl.dma_unmap_sg(env.dev, sg, 1, DMA_TO_DEVICE)
    env.impl.dma_free_coherent(env.dev, 4096, cpu, handle)
    assert env.dbg.errors == []


def test_mapping_the_same_address_twice_marks_the_first_checked(env):
    # debug_dma_map_phys() calls dma_mapping_error() on the new address: the older entry
    # with that address is marked checked as a side effect
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    assert [e["map_err_type"] for e in env.dbg.entries()] == ["dma map error checked",
                                                              "dma map error not checked"]


# ---- best fit -------------------------------------------------------------------------------------
def test_best_fit_ambiguity_returns_nothing(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(P, 8192, DMA_TO_DEVICE)                                     # same DMA address
    with pytest.warns(DmaDebugWarning, match="has not allocated"):
        env.unmap(P, 2048, DMA_TO_DEVICE)                               # two imperfect matches
    assert env.kinds() == ["not_allocated"] and len(env.dbg) == 2
    env.unmap(P, 8192, DMA_TO_DEVICE)                                   # perfect fit wins
    env.unmap(P, 4096, DMA_TO_DEVICE)
    assert env.kinds() == ["not_allocated"] and len(env.dbg) == 0


def test_best_fit_single_imperfect_match_is_used(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning):
        env.unmap(P, 2048, DMA_FROM_DEVICE)
    assert env.kinds() == ["size_mismatch", "direction_mismatch"] and len(env.dbg) == 0


def test_hash_key_is_the_dma_address_only(env):
    other = env.m.add_device("nic0")
    env.map(P, 4096, DMA_TO_DEVICE, dev=other)
    with pytest.warns(DmaDebugWarning, match="has not allocated"):
        env.unmap(P, 4096, DMA_TO_DEVICE)                               # same bucket, other device
    assert [e["device"] for e in env.dbg.entries()] == ["nic0"]


# ---- check_sync -----------------------------------------------------------------------------------
def test_sync_clean_inside_mapping(env):
    env.map(P, 16384, DMA_FROM_DEVICE)
    env.impl.dma_sync_single_for_cpu(env.dev, P + 0x3000, 0x1000, DMA_FROM_DEVICE)   # steps back a bucket
    env.impl.dma_sync_single_range_for_device(env.dev, P, 0x100, 0x100, DMA_FROM_DEVICE)
    assert env.dbg.errors == []


def test_sync_unmapped_on_a_coherent_device(env):
    # dma-debug makes dma_dev_need_sync() true: the sync reaches __dma_sync_single_for_cpu()
    assert env.dev.dma_skip_sync
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_sync_single_for_cpu(env.dev, P, 4096, DMA_FROM_DEVICE)
    assert [str(x.message) for x in w] == [PFX + "device driver tries to sync DMA memory it has not "
                                           "allocated [device address=0x0000000012345000] [size=4096 bytes]"]
    assert env.kinds() == ["sync_not_allocated"]


def test_sync_after_unmap(env):
    addr = env.map(P, 4096, DMA_FROM_DEVICE)
    env.unmap(addr, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning, match="sync DMA memory it has not allocated"):
        env.impl.dma_sync_single_for_device(env.dev, addr, 4096, DMA_FROM_DEVICE)


def test_sync_beyond_the_mapping_is_not_allocated(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning):
        env.impl.dma_sync_single_for_cpu(env.dev, P, 8192, DMA_FROM_DEVICE)
    # containing_match() already rejects it, so the kernel says "not allocated"
    assert env.kinds() == ["sync_not_allocated"]


def test_sync_out_of_range_needs_a_wrapping_range(env):
    # only a range that wraps the 64-bit DMA space passes containing_match() with a larger size:
    # a dma_range_map puts the buffer at the top of the device's address space
    top = 0xFFFFFFFFFFFF0000
    gpu = env.m.add_device("gpu0", dma_range_map=[(P, top, 0x10000)])
    addr = env.map(P, 0x8000, DMA_FROM_DEVICE, dev=gpu)
    assert addr == top
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_sync_single_for_cpu(gpu, top, 0x20000, DMA_FROM_DEVICE)
    assert [str(x.message) for x in w] == [
        "DMA-API: gpu0 gpu0: device driver syncs DMA memory outside allocated range "
        "[device address=0xffffffffffff0000] [allocation size=32768 bytes] [sync offset+size=131072]"]
    assert env.kinds() == ["sync_out_of_range"]


def test_sync_wrong_direction(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.impl.dma_sync_single_for_device(env.dev, P, 4096, DMA_TO_DEVICE)
    assert env.dbg.errors == []
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_sync_single_for_device(env.dev, P, 4096, DMA_FROM_DEVICE)
    assert [str(x.message) for x in w] == [PFX + "device driver syncs DMA memory with different direction "
                                           "[device address=0x0000000012345000] [size=4096 bytes] "
                                           "[mapped with DMA_TO_DEVICE] [synced with DMA_FROM_DEVICE]"]
    assert env.kinds() == ["sync_direction_mismatch"]


def test_sync_read_only_for_cpu(env):
    env.dbg.all_errors = True
    env.map(P, 4096, DMA_TO_DEVICE)
    env.impl.dma_sync_single_for_cpu(env.dev, P, 4096, DMA_TO_DEVICE)   # allowed: a no-op sync
    assert env.dbg.errors == []
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_sync_single_for_cpu(env.dev, P, 4096, DMA_BIDIRECTIONAL)
    assert env.kinds() == ["sync_direction_mismatch", "sync_read_only_for_cpu"]
    assert str(w[1].message) == (PFX + "device driver syncs device read-only DMA memory for cpu "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped with DMA_TO_DEVICE] [synced with DMA_BIDIRECTIONAL]")


def test_sync_write_only_to_device(env):
    env.dbg.all_errors = True
    env.map(P, 4096, DMA_FROM_DEVICE)
    env.impl.dma_sync_single_for_device(env.dev, P, 4096, DMA_FROM_DEVICE)
    assert env.dbg.errors == []
    with pytest.warns(DmaDebugWarning) as w:
        env.impl.dma_sync_single_for_device(env.dev, P, 4096, DMA_BIDIRECTIONAL)
    assert env.kinds() == ["sync_direction_mismatch", "sync_write_only_to_device"]
    assert str(w[1].message) == (PFX + "device driver syncs device write-only DMA memory to device "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped with DMA_FROM_DEVICE] [synced with DMA_BIDIRECTIONAL]")


def test_sync_bidirectional_mapping_accepts_any_direction(env):
    env.map(P, 4096, DMA_BIDIRECTIONAL)
    for sync in (env.impl.dma_sync_single_for_cpu, env.impl.dma_sync_single_for_device):
        for d in (DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
            sync(env.dev, P, 4096, d)
    assert env.dbg.errors == []


def test_sync_sg(env):
    dma = env.impl
    sg = dma.ScatterList([(P, 4096), (P + 0x10000, 4096), (P + 0x20000, 4096)])
    assert dma.dma_map_sg(env.dev, sg, 2, DMA_FROM_DEVICE) == 2          # the first two entries
    dma.dma_sync_sg_for_cpu(env.dev, sg, 2, DMA_FROM_DEVICE)
    dma.dma_sync_sg_for_device(env.dev, sg, 2, DMA_FROM_DEVICE)
    assert env.dbg.errors == []
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        dma.dma_sync_sg_for_cpu(env.dev, sg, 3, DMA_FROM_DEVICE)
    # checked up to the first entry's mapped count: two reports, the third entry is not looked at
    assert env.kinds() == ["sync_sg_count_mismatch"] * 2
    assert str(w[0].message) == (PFX + "device driver syncs DMA sg list with different entry count "
                                 "[map count=2] [sync count=3]")
    with pytest.warns(DmaDebugWarning, match=r"\[mapped with DMA_FROM_DEVICE\] \[synced with DMA_TO"):
        dma.dma_sync_sg_for_device(env.dev, sg, 2, DMA_TO_DEVICE)
    # per segment: the direction differs, and FROM_DEVICE memory synced "to device" as TO_DEVICE
    assert env.kinds()[2:] == ["sync_direction_mismatch", "sync_write_only_to_device"] * 2


def test_sync_sg_of_unmapped_list_checks_nothing(env):
    # debug_dma_sync_sg_*: the first segment's entry gives the count; none -> no checks at all
    sg = env.impl.ScatterList([(P, 4096)])
    env.impl.dma_sync_sg_for_cpu(env.dev, sg, 1, DMA_FROM_DEVICE)
    assert env.dbg.errors == []


# ---- sg segment checks ----------------------------------------------------------------------------
def test_sg_segment_too_long(env):
    with pytest.warns(DmaDebugWarning) as w:
        env.map_sg([(P, 0x20000)], DMA_TO_DEVICE)                       # default max_segment_size 64 KiB
    assert [str(x.message) for x in w] == [
        PFX + "mapping sg segment longer than device claims to support [len=131072] [max=65536]"]
    assert env.kinds() == ["sg_segment_too_long"] and len(env.dbg) == 1  # recorded anyway


def test_sg_segment_across_boundary(env):
    gpu = env.m.add_device("gpu0", seg_boundary_mask=0xFFFF)
    with pytest.warns(DmaDebugWarning) as w:
        env.map_sg([(P + 0x1A000, 0x2000)], DMA_TO_DEVICE, dev=gpu)     # crosses a 64 KiB boundary
    assert [str(x.message) for x in w] == [
        "DMA-API: gpu0 gpu0: mapping sg segment across boundary [start=0x000000001235f000] "
        "[end=0x0000000012360fff] [boundary=0x000000000000ffff]"]
    assert env.kinds() == ["sg_segment_boundary"]


def test_sg_segment_within_limits(env):
    gpu = env.m.add_device("gpu0", seg_boundary_mask=0xFFFF)
    env.map_sg([(P, 0x10000)], DMA_TO_DEVICE)
    env.map_sg([(P + 0x19000, 0x2000)], DMA_TO_DEVICE, dev=gpu)         # ends right at the boundary
    assert env.dbg.errors == []


# ---- cacheline tracking ---------------------------------------------------------------------------
def test_cacheline_overlap(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env.map(P + 8, 64, DMA_FROM_DEVICE)                             # same first-byte line
    assert [str(x.message) for x in w] == [
        PFX + "cacheline tracking EEXIST, overlapping mappings aren't supported"]
    assert env.kinds() == ["cacheline_overlap"] and len(env.dbg) == 2
    assert env.dbg.get_state()["cachelines"] == [(P_CLN, 1)]
    env.unmap(P + 8, 64, DMA_FROM_DEVICE)
    env.unmap(P, 4096, DMA_FROM_DEVICE)
    assert env.dbg.get_state()["cachelines"] == []
    env.map(P + 8, 64, DMA_FROM_DEVICE)                                 # free again: no report
    assert env.kinds() == ["cacheline_overlap"]


def test_cacheline_overlap_through_sg(env):
    env.map(P, 4096, DMA_BIDIRECTIONAL)
    with pytest.warns(DmaDebugWarning, match="EEXIST"):
        env.map_sg([(P + 0x20, 0x100)], DMA_FROM_DEVICE)


def test_cacheline_only_first_byte_counts(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    env.map(P + 64, 64, DMA_FROM_DEVICE)                                # inside the first mapping, next line
    assert env.dbg.errors == []


def test_cacheline_exemptions(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(P, 4096, DMA_TO_DEVICE)                                     # TO_DEVICE is never tracked
    env.map(P + 0x1000, 4096, DMA_FROM_DEVICE)
    env.map(P + 0x1000, 4096, DMA_FROM_DEVICE, attrs=DMA_ATTR_SKIP_CPU_SYNC)
    assert env.dbg.errors == []
    env.impl.dma_map_resource(env.dev, MMIO, 4096, DMA_BIDIRECTIONAL)
    with pytest.warns(DmaDebugWarning, match="EEXIST"):                 # MMIO does not suppress it
        env.impl.dma_map_resource(env.dev, MMIO, 4096, DMA_FROM_DEVICE)


def test_cacheline_overlap_limit_warns_once(env):
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        for _ in range(10):
            env.map(P, 4096, DMA_FROM_DEVICE)
    texts = [str(x.message) for x in w]
    assert texts.count(PFX + "cacheline tracking EEXIST, overlapping mappings aren't supported") == 9
    assert texts.count("DMA-API: exceeded 7 overlapping mappings of cacheline 0x000000000048d140") == 1
    assert env.dbg.error_count == 9                                     # the WARN_ONCE is not an err_printk
    assert env.dbg.get_state()["cachelines"] == [(P_CLN, 7)]


# ---- error counting / printing --------------------------------------------------------------------
def test_only_the_first_error_is_printed_by_default(env):
    assert (env.dbg.num_errors, env.dbg.all_errors) == (1, 0)
    with pytest.warns(DmaDebugWarning) as w:
        env.unmap(0x1000, 4096, DMA_TO_DEVICE)
        env.unmap(0x2000, 4096, DMA_TO_DEVICE)
        env.unmap(0x3000, 4096, DMA_TO_DEVICE)
    assert len(w) == 1 and "0x0000000000001000" in str(w[0].message)
    assert env.dbg.error_count == 3 and len(env.dbg.errors) == 3 and env.dbg.num_errors == 0
    env.unmap(0x4000, 4096, DMA_TO_DEVICE)                              # silent now: no warning raised
    assert env.dbg.error_count == 4


def test_num_errors_and_all_errors(env):
    env.dbg.num_errors = 2
    with pytest.warns(DmaDebugWarning) as w:
        for a in range(1, 5):
            env.unmap(a << 12, 4096, DMA_TO_DEVICE)
    assert len(w) == 2 and env.dbg.num_errors == 0
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        for a in range(5, 8):
            env.unmap(a << 12, 4096, DMA_TO_DEVICE)
    assert len(w) == 3 and env.dbg.error_count == 7


def test_driver_filter(env):
    other = env.m.add_device("nic0")
    env.dbg.num_errors = 2
    env.dbg.driver_filter = "nic0 trailing words"
    assert env.dbg.driver_filter == "nic0"
    env.unmap(0x1000, 4096, DMA_TO_DEVICE)                              # filtered: counted, quota consumed
    assert env.dbg.error_count == 1 and env.dbg.num_errors == 1
    with pytest.warns(DmaDebugWarning, match="nic0 nic0"):
        env.unmap(0x2000, 4096, DMA_TO_DEVICE, dev=other)
    env.dbg.driver_filter = "-"                                         # not alphanumeric: off
    assert env.dbg.driver_filter == ""


def test_raise_errors_after_state_changes(env):
    d32 = _dev32(env)
    env.dbg.raise_errors = True
    addr = env.map(HIGH, 4096, DMA_FROM_DEVICE, dev=d32)                # bounced through swiotlb
    assert env.m.swiotlb.total_used == 2
    d32.dma_write(addr, b"\x5a" * 2048)
    with pytest.warns(DmaDebugWarning), pytest.raises(DmaDebugError, match="different size"):
        env.unmap(addr, 2048, DMA_FROM_DEVICE, dev=d32)
    # the unmap completed before the raise: data copied back, slots released, entry gone
    assert env.m.mem_read(HIGH, 2048) == b"\x5a" * 2048
    assert env.m.swiotlb.total_used == 0 and len(env.dbg) == 0
    with pytest.raises(DmaDebugError, match="has not allocated"):
        env.unmap(addr, 4096, DMA_FROM_DEVICE, dev=d32)                 # quota used up: raises, no warning
    env.dbg.raise_errors = False
    env.unmap(addr, 4096, DMA_FROM_DEVICE, dev=d32)
    assert env.dbg.error_count == 3


def test_disabled(impl):
    assert not impl.Machine(dma_debug=False).dma_debug.enabled
    env = Env(impl)
    env.dbg.enabled = False
    assert env.dbg.disabled
    env.unmap(0x1000, 4096, DMA_TO_DEVICE)
    addr = env.map(P, 4096, DMA_FROM_DEVICE, checked=False)
    env.impl.dma_sync_single_for_cpu(env.dev, P, 4096, DMA_TO_DEVICE)
    env.dbg._test_stale_iotlb(env.dev, 0x1000, P, P)
    assert env.dbg.errors == [] and len(env.dbg) == 0 and env.dbg.error_count == 0
    env.dbg.enabled = True                                              # calls made while off were not seen
    with pytest.warns(DmaDebugWarning, match="has not allocated"):
        env.unmap(addr, 4096, DMA_FROM_DEVICE)


# ---- leak report, dump, pool ----------------------------------------------------------------------
def test_leak_report_on_device_removal(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(0x7000000, 8192, DMA_FROM_DEVICE)                           # bucket 14336 > 4514: reported
    with pytest.warns(DmaDebugWarning) as w:
        env.m.remove_device(env.dev)
    assert [str(x.message) for x in w] == [
        PFX + "device driver has pending DMA allocations while released from device [count=2]\n"
        "One of leaked entries details: [device address=0x0000000007000000] [size=8192 bytes] "
        "[mapped with DMA_FROM_DEVICE] [mapped as phy]"]
    assert env.kinds() == ["leak"] and len(env.dbg) == 2                # not freed


def test_leak_report_counts_sg_and_coherent_entries(env):
    env.map_sg([(P, 4096), (P + 0x10000, 4096)], DMA_TO_DEVICE)
    env.impl.dma_alloc_coherent(env.dev, 4096)
    with pytest.warns(DmaDebugWarning, match=r"\[count=3\]"):
        env.m.remove_device(env.dev)


def test_no_leak_report_for_a_clean_device(env):
    nic = env.m.add_device("nic0")
    env.map(P, 4096, DMA_TO_DEVICE, dev=nic)
    addr = env.map(P + 0x1000, 4096, DMA_TO_DEVICE)
    env.unmap(addr, 4096, DMA_TO_DEVICE)
    env.m.remove_device(env.dev)
    assert env.dbg.errors == []


def test_dump(env):
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    env.map(0x1040, 0x100, DMA_FROM_DEVICE, dev=env.m.add_device("nic0"))
    assert env.dbg.dump() == [
        "nic0 nic0 phy idx 0 P=0x0000000000001040 D=1040 L=100 cln=0x0000000000000041 "
        "DMA_FROM_DEVICE dma map error checked",
        "nvme0 nvme0 phy idx 4514 P=0x0000000012345000 D=12345000 L=1000 cln=0x000000000048d140 "
        "DMA_TO_DEVICE dma map error not checked"]
    assert env.dbg.dump(env.dev) == [
        "nvme0 nvme0: phy idx 4514 P=0x0000000012345000 D=12345000 L=1000 cln=0x000000000048d140 "
        "DMA_TO_DEVICE dma map error not checked"]


def test_entry_pool_growth(env):
    env.dbg.nr_prealloc_entries = 40                                    # dma_debug_entries=40: 2 pages of 32
    assert (env.dbg.nr_total_entries, env.dbg.num_free_entries) == (64, 64)
    for i in range(65):
        env.map(0x100000 + i * 0x1000, 4096, DMA_TO_DEVICE)
    assert env.dbg.nr_total_entries == 96 and env.dbg.num_free_entries == 31
    assert env.dbg.min_free_entries == 0                                # it ran dry before growing
    with pytest.raises(ValueError):
        env.dbg.nr_prealloc_entries = 10


# ---- dma_map_single / dma_map_page checks ---------------------------------------------------------
def test_map_of_a_p2pdma_page_is_refused_by_the_zone_device_check(env):
    # a P2PDMA page is a ZONE_DEVICE page in the linear map: debug_dma_map_single() accepts it,
    # then dma_map_page_attrs() WARNs (CONFIG_DMA_API_DEBUG) and refuses it
    env.m.add_p2pmem(env.m.add_device("nvme1"), 0xE000_0000, 1 << 20)
    with pytest.warns(KernelWarning, match=r"is_zone_device_page") as w:
        addr = env.impl.dma_map_single(env.dev, 0xE000_0000, 64, DMA_TO_DEVICE)
    assert addr == DMA_MAPPING_ERROR and len(w) == 1
    assert env.dbg.errors == [] and len(env.dbg) == 0


def test_map_single_of_ram_is_fine(env):
    addr = env.impl.dma_map_single(env.dev, P, 4096, DMA_TO_DEVICE)
    assert env.impl.dma_mapping_error(env.dev, addr) == 0
    env.impl.dma_unmap_single(env.dev, addr, 4096, DMA_TO_DEVICE)
    assert env.dbg.errors == []


# ---- beyond the kernel: CPU reads of bounced, device-written, unsynced data ------------------------
def test_bounced_cpu_read_before_sync_is_reported(env):
    d32 = _dev32(env)
    addr = env.map(HIGH, 4096, DMA_FROM_DEVICE, dev=d32)
    tlb = env.m.swiotlb.start                                           # first slot of the pool (cpu 0)
    assert addr == tlb and env.dbg.entries()[0]["bounce"] == tlb
    env.m.mem_read(HIGH, 16)                                            # device has not written yet
    d32.dma_write(addr + 0x100, b"\xaa" * 32)
    env.m.mem_read(HIGH + 0x200, 16)                                    # outside what the device wrote
    with pytest.warns(DmaDebugWarning) as w:
        assert env.m.mem_read(HIGH + 0x110, 4) == b"\x00" * 4           # stale: the data is in the slot
    assert [str(x.message) for x in w] == [
        "DMA-API: nic0 nic0: cpu reads bounced DMA memory the device wrote before it was synced for "
        f"cpu [device address=0x{addr:016x}] [size=4096 bytes] [cpu address=0x0000000412345110] "
        f"[bounce address=0x{tlb:016x}] [mapped with DMA_FROM_DEVICE]"]
    env.m.mem_read(HIGH + 0x110, 4)                                     # once per dirty episode
    assert env.kinds() == ["bounced_cpu_read"] and env.dbg.error_count == 0
    env.impl.dma_sync_single_for_cpu(d32, addr, 4096, DMA_FROM_DEVICE)
    assert env.m.mem_read(HIGH + 0x100, 32) == b"\xaa" * 32             # synced: no report
    env.unmap(addr, 4096, DMA_FROM_DEVICE, dev=d32)
    assert env.kinds() == ["bounced_cpu_read"]


def test_bounced_read_after_partial_and_to_device_syncs(env):
    d32 = _dev32(env)
    addr = env.map(HIGH, 4096, DMA_BIDIRECTIONAL, dev=d32)
    d32.dma_write(addr, b"\x55" * 64)
    d32.dma_write(addr + 0x800, b"\x66" * 64)
    env.impl.dma_sync_single_range_for_cpu(d32, addr, 0, 0x400, DMA_BIDIRECTIONAL)  # first part only
    env.m.mem_read(HIGH, 64)
    with pytest.warns(DmaDebugWarning, match="cpu reads bounced DMA memory"):
        env.m.mem_read(HIGH + 0x800, 64)
    env.impl.dma_sync_single_for_cpu(d32, addr, 4096, DMA_BIDIRECTIONAL)
    env.m.mem_read(HIGH + 0x800, 64)
    d32.dma_write(addr, b"\x77" * 64)                                   # device owns it again ...
    env.impl.dma_sync_single_for_cpu(d32, addr, 4096, DMA_TO_DEVICE)    # ... a TO_DEVICE sync copies nothing
    with pytest.warns(DmaDebugWarning, match="cpu reads bounced DMA memory"):
        env.m.mem_read(HIGH, 64)
    env.unmap(addr, 4096, DMA_BIDIRECTIONAL, dev=d32)                   # the unmap copies back
    d32.dma_write(addr, b"\x55" * 64)
    assert env.m.mem_read(HIGH, 64) == b"\x77" * 64                     # unmapped: nothing tracked
    assert env.kinds() == ["bounced_cpu_read"] * 2


def test_bounced_sg_segment_is_tracked(env):
    d32 = _dev32(env)
    sg = env.map_sg([(P, 512), (HIGH, 512)], DMA_FROM_DEVICE, dev=d32)
    by_paddr = sorted(env.dbg.entries(), key=lambda e: e["paddr"])
    assert [e["bounce"] is not None for e in by_paddr] == [False, True]
    d32.dma_write(sg[1].dma_address, b"\x01" * 8)
    with pytest.warns(DmaDebugWarning, match="cpu reads bounced DMA memory"):
        env.m.mem_read(HIGH, 8)
    env.impl.dma_sync_sg_for_cpu(d32, sg, 2, DMA_FROM_DEVICE)
    assert env.m.mem_read(HIGH, 8) == b"\x01" * 8
    env.impl.dma_unmap_sg(d32, sg, 2, DMA_FROM_DEVICE)
    assert env.kinds() == ["bounced_cpu_read"]


def test_unbounced_and_to_device_mappings_are_not_tracked(env):
    d32 = _dev32(env)
    env.map(P, 4096, DMA_FROM_DEVICE, dev=d32)                          # below 4 GiB: direct, not bounced
    d32.dma_write(P, b"\x01" * 16)
    env.m.mem_read(P, 16)
    addr = env.map(HIGH, 4096, DMA_TO_DEVICE, dev=d32)                  # bounced, but the device only reads
    assert env.dbg.entries()[-1]["bounce"] is not None
    d32.dma_write(addr, b"\x01" * 16)
    env.m.mem_read(HIGH, 16)
    assert env.dbg.errors == []


# ---- hook level: what the real API cannot reach yet ---------------------------------------------
def _hooks(env):
    if env.impl is dmaphys:
        from dmaphys import _core
        return _core._test_debug_hooks, _core._test_sg_set_dma
    return reference.debug._test_debug_hooks, _ref_set_dma


def _ref_set_dma(sg, i, addr, length, flags=0):
    sg[i].dma_address, sg[i].dma_length, sg[i].dma_flags = addr, length, flags


def test_hook_merged_sg_unmap_and_sync_stop_at_mapped_count(env):
    # an IOMMU merges 3 entries into 1 DMA segment (dma-direct never merges): debug_dma_unmap_sg
    # and debug_dma_sync_sg_* look only at the first entry's mapped count
    hook, set_dma = _hooks(env)
    sg = env.impl.ScatterList([(P, 4096), (P + 4096, 4096), (P + 8192, 4096)])
    set_dma(sg, 0, 0x80000000, 12288)
    hook("map_sg", env.dev, sg, 3, 1, DMA_TO_DEVICE, 0)
    assert len(env.dbg) == 1 and env.dbg.entries()[0]["sg_mapped_ents"] == 1
    hook("sync_sg_for_device", env.dev, sg, 3, DMA_TO_DEVICE)
    hook("unmap_sg", env.dev, sg, 3, DMA_TO_DEVICE)
    assert env.dbg.errors == [] and len(env.dbg) == 0


def test_hook_map_single_invalid_area(env):
    # dma_map_single() refuses a pointer with no struct page as bad input (ValueError) before
    # any kernel code runs; the check itself is exercised at the hook
    hook, _ = _hooks(env)
    with pytest.raises(ValueError):
        env.impl.dma_map_single(env.dev, 0xD000_0000, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        hook("map_single", env.dev, 0xD000_0000, 4096)                  # the 3-4 GiB hole
    assert [str(x.message) for x in w] == [PFX + "device driver maps memory from invalid area "
                                           "[addr=ffff8880d0000000] [len=4096]"]
    hook("map_single", env.dev, P, 4096)
    assert env.kinds() == ["map_invalid_area"]


def test_hook_bounce_noted_by_the_bounce_path(env):
    # dma-iommu's bounce path announces the slot (an IOVA does not translate to it by
    # dma_to_phys()); the next map of that buffer by that device picks it up
    hook, _ = _hooks(env)
    tlb = env.m.swiotlb.start + 0x800
    hook("note_bounce", env.dev, P, tlb)
    env.map(P, 4096, DMA_FROM_DEVICE)
    assert env.dbg.entries()[0]["bounce"] == tlb
    env.map(P + 0x1000, 4096, DMA_FROM_DEVICE)                          # consumed: not reused
    assert [e["bounce"] for e in env.dbg.entries()] == [tlb, None]


def test_stale_iotlb_report(env):
    with pytest.warns(DmaDebugWarning) as w:
        env.dbg._test_stale_iotlb(env.dev, 0xFFFF0000, P, DMA_MAPPING_ERROR)
    assert [str(x.message) for x in w] == [
        PFX + "device accessed DMA memory through a stale IOTLB entry after unmap "
        "[device address=0x00000000ffff0000] [stale phys=0x0000000012345000] [current phys=none]"]
    rec = env.dbg.errors[0]
    assert (rec.kind, rec.address) == ("stale_iotlb", 0xFFFF0000) and env.dbg.error_count == 0


# ---- both backends agree --------------------------------------------------------------------------
def test_core_and_reference_states_match():
    states = []
    for impl in (dmaphys, reference):
        env = Env(impl)
        env.dbg.all_errors = True
        d32 = _dev32(env)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = env.map(P, 4096, DMA_FROM_DEVICE, checked=False)
            env.map(P + 8, 64, DMA_FROM_DEVICE)
            env.map(P, 8192, DMA_TO_DEVICE)
            env.unmap(a, 100, DMA_TO_DEVICE)
            sg = env.map_sg([(0x200000, 4096), (0x300000, 4096)], DMA_BIDIRECTIONAL)
            impl.dma_sync_sg_for_device(env.dev, sg, 1, DMA_TO_DEVICE)
            env.unmap(0x200000, 4096, DMA_BIDIRECTIONAL)
            c, h = impl.dma_alloc_coherent(env.dev, 4096)
            b = env.map(HIGH, 4096, DMA_FROM_DEVICE, dev=d32)
            d32.dma_write(b, b"\x11" * 8)
            env.m.mem_read(HIGH, 8)
            impl.dma_sync_single_for_cpu(d32, b + 0x100, 0x100, DMA_FROM_DEVICE)
            env.m.remove_device(env.dev)
        states.append((env.dbg.get_state(), list(env.dbg.errors), env.dbg.dump()))
    assert states[0] == states[1]
