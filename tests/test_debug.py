"""kernel/dma/debug.c: every report class (positive and negative), counters, dump, leak report,
quirks, and the beyond-the-kernel bounced-read and stale-IOTLB reports. Both backends.

The hooks are driven directly (``_test_debug_hooks``: the calls mapping.c makes, in its
order, followed by the entry point's flush_warnings()) so each check is exercised exactly.
"""

import warnings

import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_MMIO,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    DmaDebugError,
    DmaDebugWarning,
)

P = 0x12345000                        # a RAM buffer (its DMA address on a plain device is the same)
PFX = "DMA-API: nvme0 nvme0: "


class Env:
    def __init__(self, impl):
        self.impl = impl
        self.m = impl.Machine()
        self.dev = self.m.add_device("nvme0")
        self.dbg = self.m.dma_debug
        if impl is dmaphys:
            from dmaphys import _core
            self._hook = _core._test_debug_hooks
            self._set_dma = _core._test_sg_set_dma
        else:
            self._hook = reference.debug._test_debug_hooks
            self._set_dma = _ref_set_dma

    def __call__(self, op, *args, dev=None):
        self._hook(op, dev or self.dev, *args)

    def map(self, phys, size, dir, addr=None, attrs=0, checked=True, dev=None):
        """dma_map_phys + (driver) dma_mapping_error."""
        addr = phys if addr is None else addr
        self("map_phys", phys, size, dir, addr, attrs, dev=dev)
        if checked:
            self("mapping_error", addr, dev=dev)
        return addr

    def sg(self, segs, mapped):
        """A ScatterList of (phys, len) whose first len(mapped) entries got (dma, dma_len)."""
        sg = self.impl.ScatterList(segs)
        for i, (a, n) in enumerate(mapped):
            self._set_dma(sg, i, a, n)
        return sg

    def kinds(self):
        return [r.kind for r in self.dbg.errors]


def _ref_set_dma(sg, i, addr, length, flags=0):
    sg[i].dma_address, sg[i].dma_length, sg[i].dma_flags = addr, length, flags


@pytest.fixture
def env(impl):
    return Env(impl)


# ---- clean use --------------------------------------------------------------------------------
def test_map_unmap_clean(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    assert len(env.dbg) == 1 and env.dbg.num_free_entries == 65535 and env.dbg.nr_total_entries == 65536
    env("unmap_phys", P, 4096, DMA_FROM_DEVICE)
    assert env.dbg.errors == [] and env.dbg.error_count == 0 and len(env.dbg) == 0
    assert env.dbg.num_free_entries == 65536 and env.dbg.min_free_entries == 65535
    assert env.dbg.get_state()["cachelines"] == []


def test_failed_map_is_not_recorded(env):
    env("map_phys", P, 4096, DMA_TO_DEVICE, DMA_MAPPING_ERROR, 0)
    assert len(env.dbg) == 0


# ---- check_unmap ----------------------------------------------------------------------------
def test_unmap_never_mapped(env):
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_phys", 0x1000, 4096, DMA_TO_DEVICE)
    text = (PFX + "device driver tries to free DMA memory it has not allocated "
            "[device address=0x0000000000001000] [size=4096 bytes]")
    assert [str(x.message) for x in w] == [text]
    assert env.dbg.errors == [env.impl.DmaDebugRecord("not_allocated", "nvme0", text, 0x1000, 4096)]
    assert env.dbg.error_count == 1


def test_unmap_invalid_address(env):
    with pytest.warns(DmaDebugWarning, match="tries to free an invalid DMA memory address$"):
        env("unmap_phys", DMA_MAPPING_ERROR, 4096, DMA_TO_DEVICE)
    assert env.kinds() == ["invalid_address"]


def test_size_mismatch(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_phys", P, 2048, DMA_TO_DEVICE)
    assert str(w[0].message) == (PFX + "device driver frees DMA memory with different size "
                                 "[device address=0x0000000012345000] [map size=4096 bytes] "
                                 "[unmap size=2048 bytes]")
    assert env.kinds() == ["size_mismatch"] and len(env.dbg) == 0     # removed anyway


def test_direction_mismatch(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_phys", P, 4096, DMA_FROM_DEVICE)
    assert str(w[0].message).endswith("frees DMA memory with different direction [device address="
                                      "0x0000000012345000] [size=4096 bytes] [mapped with DMA_TO_DEVICE] "
                                      "[unmapped with DMA_FROM_DEVICE]")
    assert env.kinds() == ["direction_mismatch"]


def test_wrong_function_sg_unmapped_as_phy(env):
    sg = env.sg([(P, 4096)], [(P, 4096)])
    env("map_sg", sg, 1, 1, DMA_TO_DEVICE, 0)
    with pytest.warns(DmaDebugWarning, match=r"\[mapped as scatter-gather\] \[unmapped as phy\]$"):
        env("unmap_phys", P, 4096, DMA_TO_DEVICE)
    assert env.kinds() == ["wrong_function"]


def test_wrong_function_phy_unmapped_as_sg(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    sg = env.sg([(P, 4096)], [(P, 4096)])
    with pytest.warns(DmaDebugWarning, match=r"\[mapped as phy\] \[unmapped as scatter-gather\]$"):
        env("unmap_sg", sg, 1, DMA_TO_DEVICE)
    # the phy entry's sg_call_ents is 0, so the count check fires too (as in the kernel)
    assert env.kinds() == ["wrong_function", "sg_count_mismatch"] and len(env.dbg) == 0


def test_sg_map_unmap_clean_and_count_mismatch(env):
    segs = [(P, 4096), (P + 0x10000, 4096)]
    sg = env.sg(segs, [(P, 4096), (P + 0x10000, 4096)])
    env("map_sg", sg, 2, 2, DMA_FROM_DEVICE, 0)
    assert [e["sg_call_ents"] for e in env.dbg.entries()] == [2, 2]
    env("unmap_sg", sg, 2, DMA_FROM_DEVICE)
    assert env.dbg.errors == [] and len(env.dbg) == 0
    env("map_sg", sg, 2, 2, DMA_FROM_DEVICE, 0)
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_sg", sg, 1, DMA_FROM_DEVICE)
    assert str(w[0].message) == (PFX + "device driver frees DMA sg list with different entry count "
                                 "[map count=2] [unmap count=1]")
    assert env.kinds() == ["sg_count_mismatch"] and len(env.dbg) == 1


def test_sg_unmap_stops_at_mapped_count(env):
    # an IOMMU merged 3 entries into 1 segment: only that one is checked and removed
    sg = env.sg([(P, 4096), (P + 4096, 4096), (P + 8192, 4096)], [(0x80000000, 12288)])
    env("map_sg", sg, 3, 1, DMA_TO_DEVICE, 0)
    assert len(env.dbg) == 1
    env("unmap_sg", sg, 3, DMA_TO_DEVICE)
    assert env.dbg.errors == [] and len(env.dbg) == 0


def test_unchecked_map_error(env):
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    assert env.dbg.entries()[0]["map_err_type"] == "dma map error not checked"
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_phys", P, 4096, DMA_TO_DEVICE)
    assert str(w[0].message) == (PFX + "device driver failed to check map error[device address="
                                 "0x0000000012345000] [size=4096 bytes] [mapped as phy]")
    assert env.kinds() == ["map_error_not_checked"]


def test_checked_map_error_and_sg_not_applicable(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    assert env.dbg.entries()[0]["map_err_type"] == "dma map error checked"
    env("unmap_phys", P, 4096, DMA_TO_DEVICE)
    sg = env.sg([(P, 4096)], [(P, 4096)])
    env("map_sg", sg, 1, 1, DMA_TO_DEVICE, 0)
    assert env.dbg.entries()[0]["map_err_type"] == "dma map error check not applicable"
    env("unmap_sg", sg, 1, DMA_TO_DEVICE)
    assert env.dbg.errors == []


def test_mapping_the_same_address_twice_marks_the_first_checked(env):
    # debug_dma_map_phys() calls dma_mapping_error() on the new address: the older entry
    # with that address is marked checked as a side effect
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    env.map(P, 4096, DMA_TO_DEVICE, checked=False)
    assert [e["map_err_type"] for e in env.dbg.entries()] == ["dma map error checked",
                                                              "dma map error not checked"]


def test_coherent_alloc_free_and_cpu_address(env):
    env("alloc_coherent", 8192, 0x40000000, P, 0)
    e = env.dbg.entries()[0]
    assert (e["type"], e["direction"], e["map_err_type"]) == (
        "coherent", DMA_BIDIRECTIONAL, "dma map error check not applicable")
    env("free_coherent", 8192, P, 0x40000000)
    assert env.dbg.errors == []
    env("alloc_coherent", 8192, 0x40000000, P, 0)
    with pytest.warns(DmaDebugWarning) as w:
        env("free_coherent", 8192, P + 0x2000, 0x40000000)
    # "0x%pa" prints the prefix twice, as in the kernel
    assert str(w[0].message) == (PFX + "device driver frees DMA memory with different CPU address "
                                 "[device address=0x0000000040000000] [size=8192 bytes] "
                                 "[cpu alloc address=0x0x0000000012345000] "
                                 "[cpu free address=0x0x0000000012347000]")
    assert env.kinds() == ["cpu_address_mismatch"]


def test_coherent_freed_as_phy(env):
    env("alloc_coherent", 4096, 0x40000000, P, 0)
    with pytest.warns(DmaDebugWarning, match=r"\[mapped as coherent\] \[unmapped as phy\]"):
        env("unmap_phys", 0x40000000, 4096, DMA_BIDIRECTIONAL)


# ---- best fit -----------------------------------------------------------------------------
def test_best_fit_ambiguity_returns_nothing(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(P, 8192, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning, match="has not allocated"):
        env("unmap_phys", P, 2048, DMA_TO_DEVICE)          # two imperfect matches
    assert env.kinds() == ["not_allocated"] and len(env.dbg) == 2
    env("unmap_phys", P, 8192, DMA_TO_DEVICE)              # perfect fit wins
    env("unmap_phys", P, 4096, DMA_TO_DEVICE)
    assert env.kinds() == ["not_allocated"] and len(env.dbg) == 0


def test_best_fit_single_imperfect_match_is_used(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning):
        env("unmap_phys", P, 2048, DMA_FROM_DEVICE)
    assert env.kinds() == ["size_mismatch", "direction_mismatch"] and len(env.dbg) == 0


def test_hash_key_is_the_dma_address_only(env):
    other = env.m.add_device("nic0")
    env.map(P, 4096, DMA_TO_DEVICE, dev=other)
    with pytest.warns(DmaDebugWarning, match="has not allocated"):
        env("unmap_phys", P, 4096, DMA_TO_DEVICE)          # same bucket, other device
    assert env.dbg.entries()[0]["device"] == "nic0"


# ---- check_sync ---------------------------------------------------------------------------
def test_sync_clean_inside_mapping(env):
    env.map(P, 16384, DMA_FROM_DEVICE)
    env("sync_single_for_cpu", P + 0x3000, 0x1000, DMA_FROM_DEVICE)   # steps back one bucket
    env("sync_single_for_device", P + 0x100, 0x100, DMA_FROM_DEVICE)
    assert env.dbg.errors == []


def test_sync_unmapped(env):
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_single_for_cpu", P, 4096, DMA_FROM_DEVICE)
    assert str(w[0].message) == (PFX + "device driver tries to sync DMA memory it has not allocated "
                                 "[device address=0x0000000012345000] [size=4096 bytes]")


def test_sync_beyond_the_mapping_is_not_allocated(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning):
        env("sync_single_for_cpu", P, 8192, DMA_FROM_DEVICE)
    # containing_match() already rejects it, so the kernel says "not allocated"
    assert env.kinds() == ["sync_not_allocated"]


def test_sync_out_of_range_needs_a_wrapping_range(env):
    top = 0xFFFFFFFFFFFF0000
    env.map(P, 0x8000, DMA_FROM_DEVICE, addr=top)
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_single_for_cpu", top, 0x20000, DMA_FROM_DEVICE)
    assert str(w[0].message) == (PFX + "device driver syncs DMA memory outside allocated range "
                                 "[device address=0xffffffffffff0000] [allocation size=32768 bytes] "
                                 "[sync offset+size=131072]")
    assert env.kinds() == ["sync_out_of_range"]


def test_sync_wrong_direction(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_single_for_device", P, 4096, DMA_FROM_DEVICE)
    assert str(w[0].message) == (PFX + "device driver syncs DMA memory with different direction "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped with DMA_TO_DEVICE] [synced with DMA_FROM_DEVICE]")
    assert env.kinds() == ["sync_direction_mismatch"]


def test_sync_read_only_for_cpu(env):
    env.dbg.all_errors = True
    env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_single_for_cpu", P, 4096, DMA_BIDIRECTIONAL)
    assert env.kinds() == ["sync_direction_mismatch", "sync_read_only_for_cpu"]
    assert str(w[1].message) == (PFX + "device driver syncs device read-only DMA memory for cpu "
                                 "[device address=0x0000000012345000] [size=4096 bytes] "
                                 "[mapped with DMA_TO_DEVICE] [synced with DMA_BIDIRECTIONAL]")


def test_sync_write_only_to_device(env):
    env.dbg.all_errors = True
    env.map(P, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_single_for_device", P, 4096, DMA_BIDIRECTIONAL)
    assert env.kinds() == ["sync_direction_mismatch", "sync_write_only_to_device"]
    assert "syncs device write-only DMA memory to device" in str(w[1].message)


def test_sync_bidirectional_mapping_accepts_any_direction(env):
    env.map(P, 4096, DMA_BIDIRECTIONAL)
    for op in ("sync_single_for_cpu", "sync_single_for_device"):
        for d in (DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
            env(op, P, 4096, d)
    assert env.dbg.errors == []


def test_sync_sg(env):
    sg = env.sg([(P, 4096), (P + 0x10000, 4096)], [(P, 4096), (P + 0x10000, 4096)])
    env("map_sg", sg, 2, 2, DMA_FROM_DEVICE, 0)
    env("sync_sg_for_cpu", sg, 2, DMA_FROM_DEVICE)
    env("sync_sg_for_device", sg, 2, DMA_FROM_DEVICE)
    assert env.dbg.errors == []
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        env("sync_sg_for_cpu", sg, 3, DMA_FROM_DEVICE)
    assert env.kinds() == ["sync_sg_count_mismatch"] * 2
    assert str(w[0].message) == (PFX + "device driver syncs DMA sg list with different entry count "
                                 "[map count=2] [sync count=3]")


def test_sync_sg_of_unmapped_list_checks_nothing(env):
    # debug_dma_sync_sg_*: the first segment's entry gives the count; none → no checks at all
    sg = env.sg([(P, 4096)], [(P, 4096)])
    env("sync_sg_for_cpu", sg, 1, DMA_FROM_DEVICE)
    assert env.dbg.errors == []


# ---- sg segment checks ------------------------------------------------------------------------
def test_sg_segment_too_long_and_boundary(env):
    env.dbg.all_errors = True
    sg = env.sg([(P, 0x20000)], [(0xFFFF8000, 0x10000)])
    with pytest.warns(DmaDebugWarning) as w:
        env("map_sg", sg, 1, 1, DMA_TO_DEVICE, 0)
    assert [str(x.message) for x in w] == [
        PFX + "mapping sg segment longer than device claims to support [len=131072] [max=65536]"]
    assert env.kinds() == ["sg_segment_too_long"]          # default boundary: none
    dev = env.m.add_device("gpu0", seg_boundary_mask=0xFFFFFFFF, max_segment_size=1 << 20)
    with pytest.warns(DmaDebugWarning) as w:
        env("map_sg", sg, 1, 1, DMA_TO_DEVICE, 0, dev=dev)
    assert str(w[0].message) == ("DMA-API: gpu0 gpu0: mapping sg segment across boundary "
                                 "[start=0x00000000ffff8000] [end=0x0000000100007fff] "
                                 "[boundary=0x00000000ffffffff]")
    assert env.kinds()[-1] == "sg_segment_boundary"


def test_sg_segment_within_limits(env):
    sg = env.sg([(P, 0x10000)], [(P, 0x10000)])
    env("map_sg", sg, 1, 1, DMA_TO_DEVICE, 0)
    assert env.dbg.errors == []


# ---- cacheline tracking -----------------------------------------------------------------------
def test_cacheline_overlap(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    with pytest.warns(DmaDebugWarning) as w:
        env.map(P + 8, 64, DMA_FROM_DEVICE)                # same first-byte line
    assert str(w[0].message) == PFX + "cacheline tracking EEXIST, overlapping mappings aren't supported"
    assert env.kinds() == ["cacheline_overlap"] and len(env.dbg) == 2
    env("unmap_phys", P + 8, 64, DMA_FROM_DEVICE)
    env("unmap_phys", P, 4096, DMA_FROM_DEVICE)
    assert env.dbg.get_state()["cachelines"] == []
    env.map(P + 8, 64, DMA_FROM_DEVICE)                    # free again: no report
    assert env.kinds() == ["cacheline_overlap"]


def test_cacheline_only_first_byte_counts(env):
    env.map(P, 4096, DMA_FROM_DEVICE)
    env.map(P + 64, 64, DMA_FROM_DEVICE)                    # inside the first mapping, next line
    assert env.dbg.errors == []


def test_cacheline_exemptions(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(P, 4096, DMA_TO_DEVICE)                         # TO_DEVICE is never tracked
    env.map(P + 0x1000, 4096, DMA_FROM_DEVICE)
    env.map(P + 0x1000, 4096, DMA_FROM_DEVICE, attrs=DMA_ATTR_SKIP_CPU_SYNC)
    assert env.dbg.errors == []
    with pytest.warns(DmaDebugWarning, match="EEXIST"):    # MMIO does not suppress it
        env.map(P + 0x1000, 4096, DMA_BIDIRECTIONAL, attrs=DMA_ATTR_MMIO)


def test_cacheline_overlap_limit_warns_once(env):
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        for _ in range(10):
            env.map(P, 4096, DMA_FROM_DEVICE)
    texts = [str(x.message) for x in w]
    assert texts.count(PFX + "cacheline tracking EEXIST, overlapping mappings aren't supported") == 9
    assert texts.count("DMA-API: exceeded 7 overlapping mappings of cacheline 0x000000000048d140") == 1
    assert env.dbg.error_count == 9                          # the WARN_ONCE is not an err_printk
    assert env.dbg.get_state()["cachelines"] == [(0x48D140, 7)]


# ---- error counting / printing ------------------------------------------------------------------
def test_only_the_first_error_is_printed_by_default(env):
    assert (env.dbg.num_errors, env.dbg.all_errors) == (1, 0)
    with pytest.warns(DmaDebugWarning) as w:
        env("unmap_phys", 0x1000, 4096, DMA_TO_DEVICE)
        env("unmap_phys", 0x2000, 4096, DMA_TO_DEVICE)
        env("unmap_phys", 0x3000, 4096, DMA_TO_DEVICE)
    assert len(w) == 1 and "0x0000000000001000" in str(w[0].message)
    assert env.dbg.error_count == 3 and len(env.dbg.errors) == 3 and env.dbg.num_errors == 0
    env("unmap_phys", 0x4000, 4096, DMA_TO_DEVICE)          # silent now: no warning raised
    assert env.dbg.error_count == 4


def test_num_errors_and_all_errors(env):
    env.dbg.num_errors = 2
    with pytest.warns(DmaDebugWarning) as w:
        for a in range(1, 5):
            env("unmap_phys", a << 12, 4096, DMA_TO_DEVICE)
    assert len(w) == 2 and env.dbg.num_errors == 0
    env.dbg.all_errors = True
    with pytest.warns(DmaDebugWarning) as w:
        for a in range(5, 8):
            env("unmap_phys", a << 12, 4096, DMA_TO_DEVICE)
    assert len(w) == 3 and env.dbg.error_count == 7


def test_driver_filter(env):
    other = env.m.add_device("nic0")
    env.dbg.num_errors = 2
    env.dbg.driver_filter = "nic0 trailing words"
    assert env.dbg.driver_filter == "nic0"
    env("unmap_phys", 0x1000, 4096, DMA_TO_DEVICE)           # filtered: counted, quota consumed
    assert env.dbg.error_count == 1 and env.dbg.num_errors == 1
    with pytest.warns(DmaDebugWarning, match="nic0 nic0"):
        env("unmap_phys", 0x2000, 4096, DMA_TO_DEVICE, dev=other)
    env.dbg.driver_filter = "-"                               # not alphanumeric: off
    assert env.dbg.driver_filter == ""


def test_raise_errors_after_state_changes(env):
    env.dbg.raise_errors = True
    env.map(P, 4096, DMA_TO_DEVICE)
    with pytest.warns(DmaDebugWarning), pytest.raises(DmaDebugError, match="different size"):
        env("unmap_phys", P, 2048, DMA_TO_DEVICE)
    assert len(env.dbg) == 0                                 # the unmap completed
    with pytest.raises(DmaDebugError, match="has not allocated"):
        env("unmap_phys", P, 4096, DMA_TO_DEVICE)            # quota used up: raises, no warning
    env.dbg.raise_errors = False
    env("unmap_phys", P, 4096, DMA_TO_DEVICE)
    assert env.dbg.error_count == 3


def test_disabled(impl):
    assert not impl.Machine(dma_debug=False).dma_debug.enabled
    e = Env(impl)
    e.dbg.enabled = False
    assert e.dbg.disabled
    e("unmap_phys", 0x1000, 4096, DMA_TO_DEVICE)
    e.map(P, 4096, DMA_FROM_DEVICE)
    e("sync_single_for_cpu", P, 4096, DMA_TO_DEVICE)
    e("stale_iotlb", 0x1000, P, P)
    assert e.dbg.errors == [] and len(e.dbg) == 0 and e.dbg.error_count == 0


# ---- leak report, dump, pool ---------------------------------------------------------------
def test_leak_report_on_device_removal(env):
    env.map(P, 4096, DMA_TO_DEVICE)
    env.map(0x7000000, 8192, DMA_FROM_DEVICE)                # bucket 14336 > 4514: reported
    with pytest.warns(DmaDebugWarning) as w:
        env.m.remove_device(env.dev)
    assert str(w[0].message) == (PFX + "device driver has pending DMA allocations while released from "
                                 "device [count=2]\nOne of leaked entries details: [device address="
                                 "0x0000000007000000] [size=8192 bytes] [mapped with DMA_FROM_DEVICE] "
                                 "[mapped as phy]")
    assert env.kinds() == ["leak"] and len(env.dbg) == 2     # not freed


def test_no_leak_report_for_a_clean_device(env):
    env.map(P, 4096, DMA_TO_DEVICE, dev=env.m.add_device("nic0"))
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
    env.dbg.nr_prealloc_entries = 40                          # dma_debug_entries=40 → 2 pages of 32
    assert (env.dbg.nr_total_entries, env.dbg.num_free_entries) == (64, 64)
    for i in range(65):
        env.map(0x100000 + i * 0x1000, 4096, DMA_TO_DEVICE)
    assert env.dbg.nr_total_entries == 96 and env.dbg.num_free_entries == 31
    assert env.dbg.min_free_entries == 0                      # it ran dry before growing
    with pytest.raises(ValueError):
        env.dbg.nr_prealloc_entries = 10


def test_map_single_invalid_area(env):
    with pytest.warns(DmaDebugWarning) as w:
        env("map_single", 0xD0000000, 4096)                   # the 3-4 GiB hole: no struct page
    assert str(w[0].message) == (PFX + "device driver maps memory from invalid area "
                                 "[addr=ffff8880d0000000] [len=4096]")
    env("map_single", P, 4096)
    assert env.kinds() == ["map_invalid_area"]


# ---- beyond the kernel ---------------------------------------------------------------------------
def _bounce_slot(env):
    return env.m.swiotlb.start + 0x800


def test_bounced_cpu_read_before_sync_is_reported(env):
    tlb = _bounce_slot(env)
    env.map(P, 4096, DMA_FROM_DEVICE, addr=tlb)
    assert env.dbg.entries()[0]["bounce"] == tlb
    env.m.mem_read(P, 16)                                     # device has not written yet
    env.dev.dma_write(tlb + 0x100, b"\xaa" * 32)
    env.m.mem_read(P + 0x200, 16)                             # outside what the device wrote
    with pytest.warns(DmaDebugWarning) as w:
        env.m.mem_read(P + 0x110, 4)
    assert str(w[0].message) == (PFX + "cpu reads bounced DMA memory the device wrote before it was "
                                 f"synced for cpu [device address=0x{tlb:016x}] [size=4096 bytes] "
                                 f"[cpu address=0x0000000012345110] [bounce address=0x{tlb:016x}] "
                                 "[mapped with DMA_FROM_DEVICE]")
    env.m.mem_read(P + 0x110, 4)                              # once per dirty episode
    assert env.kinds() == ["bounced_cpu_read"] and env.dbg.error_count == 0


def test_bounced_read_after_sync_is_fine(env):
    tlb = _bounce_slot(env)
    env.map(P, 4096, DMA_BIDIRECTIONAL, addr=tlb)
    env.dev.dma_write(tlb, b"\x55" * 64)
    env("sync_single_for_cpu", tlb, 4096, DMA_BIDIRECTIONAL)
    env.m.mem_read(P, 64)
    env.dev.dma_write(tlb, b"\x55" * 64)                      # device owns it again ...
    env("sync_single_for_cpu", tlb, 4096, DMA_TO_DEVICE)      # ... a TO_DEVICE sync copies nothing
    with pytest.warns(DmaDebugWarning, match="cpu reads bounced DMA memory"):
        env.m.mem_read(P, 64)
    env("unmap_phys", tlb, 4096, DMA_BIDIRECTIONAL)
    env.dev.dma_write(tlb, b"\x55" * 64)
    env.m.mem_read(P, 64)                                     # unmapped: nothing tracked
    assert env.kinds() == ["bounced_cpu_read"]


def test_unbounced_and_to_device_mappings_are_not_tracked(env):
    env.map(P, 4096, DMA_FROM_DEVICE)                         # direct, not bounced
    env.dev.dma_write(P, b"\x01" * 16)
    env.m.mem_read(P, 16)
    tlb = _bounce_slot(env)
    env.map(P + 0x10000, 4096, DMA_TO_DEVICE, addr=tlb)
    env.dev.dma_write(tlb, b"\x01" * 16)
    env.m.mem_read(P + 0x10000, 16)
    assert env.dbg.errors == []


def test_bounce_noted_by_the_bounce_path(env):
    # an IOVA does not translate to the slot: the bounce path tells dma-debug
    tlb = _bounce_slot(env)
    env("note_bounce", P, tlb)
    env.map(P, 4096, DMA_FROM_DEVICE, addr=0x7F000000)
    assert env.dbg.entries()[0]["bounce"] == tlb


def test_stale_iotlb_report(env):
    with pytest.warns(DmaDebugWarning) as w:
        env("stale_iotlb", 0xFFFF0000, P, DMA_MAPPING_ERROR)
    assert str(w[0].message) == (PFX + "device accessed DMA memory through a stale IOTLB entry after "
                                 "unmap [device address=0x00000000ffff0000] [stale phys=0x0000000012345000] "
                                 "[current phys=none]")
    rec = env.dbg.errors[0]
    assert (rec.kind, rec.address) == ("stale_iotlb", 0xFFFF0000) and env.dbg.error_count == 0


# ---- both backends agree -------------------------------------------------------------------------
def test_core_and_reference_states_match():
    states = []
    for impl in (dmaphys, reference):
        e = Env(impl)
        e.dbg.all_errors = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e.map(P, 4096, DMA_FROM_DEVICE, checked=False)
            e.map(P + 8, 64, DMA_FROM_DEVICE)
            e.map(P, 8192, DMA_TO_DEVICE)
            e("unmap_phys", P, 100, DMA_TO_DEVICE)
            sg = e.sg([(0x200000, 4096), (0x300000, 4096)], [(0x200000, 4096), (0x300000, 4096)])
            e("map_sg", sg, 2, 2, DMA_BIDIRECTIONAL, 0)
            e("sync_sg_for_device", sg, 1, DMA_TO_DEVICE)
            e("unmap_phys", 0x200000, 4096, DMA_BIDIRECTIONAL)
            e("alloc_coherent", 4096, 0x90000000, 0x400000, 0)
            e("free_coherent", 4096, 0x401000, 0x90000000)
        states.append((e.dbg.get_state(), list(e.dbg.errors), e.dbg.dump()))
    assert states[0] == states[1]
