"""kernel/dma/swiotlb.c: pool geometry, slot search, copy rules, warnings, stats (both backends).

Expected values are worked out by hand from the kernel's algorithm (kernel/dma/swiotlb.c,
swiotlb_search_pool_area / swiotlb_tbl_map_single / swiotlb_bounce / swiotlb_release_slots),
not read back from either implementation.
"""

import random
import warnings

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import dmaphys as dma
import dmaphys.reference as reference

TO, FROM, BIDI = dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL
SKIP, NO_WARN = dma.DMA_ATTR_SKIP_CPU_SYNC, dma.DMA_ATTR_NO_WARN
ERR = dma.DMA_MAPPING_ERROR
SLOT = 2048
RAM = [(0, 1 << 30), (4 << 30, 1 << 30)]          # pool lands at the top of the low GiB
POOL = (1 << 30) - (1 << 20)                      # where a 1 MiB pool starts with RAM above


def machine(impl, pool=1 << 20, cpus=4, nareas=None, force=False, ram=RAM):
    return impl.Machine(ram=ram, cpus=cpus, swiotlb=pool, swiotlb_nareas=nareas, swiotlb_force=force,
                        dma_debug=False)


def buffer(m, npages=8, fill=None):
    """npages of RAM above 4 GiB holding a recognisable pattern."""
    phys = m.alloc_pages(npages, None)
    data = bytes((i * 7 + 3) & 0xFF for i in range(npages * 4096)) if fill is None else fill * (npages * 4096)
    m.mem_write(phys, data)
    return phys, data


def tmap(impl, dev, orig, size, dir=TO, attrs=0, align=0):
    return impl.swiotlb_tbl_map_single(dev, orig, size, align, dir, attrs)


def slots(m):
    return m.swiotlb.get_state()["slots"]


# ---- pool geometry ----------------------------------------------------------------------------------
def test_default_pool_is_64mib_below_4g(impl):
    m = impl.Machine(dma_debug=False)             # 3 GiB low + RAM above 4 GiB: swiotlb is set up
    t = m.swiotlb
    assert (t.nslabs, t.nareas, t.area_nslabs) == (32768, 4, 8192)
    assert t.end - t.start == 64 << 20 and t.end <= 3 << 30 and t.start % 4096 == 0
    assert t.start == (3 << 30) - (64 << 20)      # top-down, like memblock_alloc_low
    assert (t.total_used, t.used_hiwater, t.force_bounce) == (0, 0, False)
    dev = m.add_device("d")
    assert dev.dma_io_tlb_mem is t and impl.is_swiotlb_active(dev)


def test_small_machine_has_no_pool(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], dma_debug=False)
    assert m.swiotlb is None
    dev = m.add_device("d")
    assert not impl.is_swiotlb_active(dev) and not impl.is_swiotlb_buffer(dev, 0)


@pytest.mark.parametrize("size, cpus, nareas, exp_nslabs, exp_nareas", [
    (1 << 20, 4, None, 512, 4),                   # power of two already
    (100 * SLOT, 4, None, 512, 4),                # ALIGN(100, 128) = 128 < 128 * 4 areas
    (600 * SLOT, 1, None, 1024, 1),               # ALIGN(600, 128) = 640 → next power of two
    (1 << 20, 3, None, 512, 4),                   # 3 CPUs → 4 areas
    (1 << 20, 4, 5, 1024, 8),                     # swiotlb=,5 → 8 areas → at least 8 segments
    (1 << 20, 2, 1, 512, 1),
])
def test_nslabs_and_nareas_rounding(impl, size, cpus, nareas, exp_nslabs, exp_nareas):
    t = machine(impl, pool=size, cpus=cpus, nareas=nareas).swiotlb
    assert (t.nslabs, t.nareas, t.area_nslabs) == (exp_nslabs, exp_nareas, exp_nslabs // exp_nareas)
    assert t.end - t.start == exp_nslabs * SLOT and t.end <= 1 << 32


def test_allocation_retry_halves_and_limit_nareas_caps(impl):
    # 4 MiB asked with 16 areas, only 2 MiB of RAM below 4 GiB: one retry at 1024 slabs,
    # limit_nareas() caps the areas at 1024 / 128 = 8
    with pytest.warns(dma.KernelWarning, match="swiotlb_memblock_alloc: Failed to allocate 4194304 bytes"):
        m = machine(impl, pool=4 << 20, cpus=16, ram=[(0, 2 << 20), (4 << 30, 1 << 30)])
    t = m.swiotlb
    assert (t.nslabs, t.nareas, t.area_nslabs, t.start) == (1024, 8, 128, 0)


def test_no_low_memory_boots_without_a_pool(impl):
    with pytest.warns(dma.KernelWarning, match="Failed to allocate"):
        m = machine(impl, pool=1 << 20, ram=[(0, 512 << 10), (4 << 30, 1 << 30)])
    assert m.swiotlb.nslabs == 0


def test_pool_memory_is_zeroed_and_force_flag(impl):
    m = machine(impl, force=True)
    assert m.swiotlb.force_bounce
    assert m.mem_read(m.swiotlb.start, 4096) == bytes(4096)
    dev = m.add_device("d")
    assert impl.is_swiotlb_force_bounce(dev)
    m2 = machine(impl)
    assert not impl.is_swiotlb_force_bounce(m2.add_device("d"))
    assert impl.is_swiotlb_force_bounce(m2.add_device("e", force_bounce=True))


# ---- slot search --------------------------------------------------------------------------------------
def test_first_fit_and_slot_records(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    assert tmap(impl, dev, p, 100) == POOL
    assert tmap(impl, dev, p + 8192, 3000) == POOL + SLOT
    assert tmap(impl, dev, p + 3 * 4096, 100) == POOL + 3 * SLOT
    assert slots(m) == {0: (p, 100, 0, 0), 1: (p + 8192, 3000, 0, 0),
                        2: (p + 8192 + SLOT, 3000 - SLOT, 0, 0), 3: (p + 3 * 4096, 100, 0, 0)}
    st_ = m.swiotlb.get_state()
    assert st_["areas"] == [(4, 4), (0, 0), (0, 0), (0, 0)]
    assert (st_["total_used"], st_["used_hiwater"]) == (4, 4)
    assert impl.is_swiotlb_buffer(dev, POOL + 3 * SLOT + 99)
    assert not impl.is_swiotlb_buffer(dev, m.swiotlb.end) and not impl.is_swiotlb_buffer(dev, p)


def test_cursor_advances_and_is_not_reset_by_free(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    a = tmap(impl, dev, p, 100)
    impl.swiotlb_tbl_unmap_single(dev, a, 100, TO, 0)
    assert m.swiotlb.get_state()["areas"][0] == (0, 1)
    assert slots(m) == {}                         # free lists merged back to 128, 127, ...
    assert tmap(impl, dev, p, 100) == POOL + SLOT


def test_free_merges_with_neighbours(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    a, b, c = (tmap(impl, dev, p, 100) for _ in range(3))
    impl.swiotlb_tbl_unmap_single(dev, b, 100, TO, 0)
    # slot 1 free up to slot 2 (in use): list 1
    assert slots(m)[1] == (dma.INVALID_PHYS_ADDR, 0, 1, 0)
    impl.swiotlb_tbl_unmap_single(dev, c, 100, TO, 0)
    assert set(slots(m)) == {0}                   # slots 1.. are a fresh run again
    impl.swiotlb_tbl_unmap_single(dev, a, 100, TO, 0)
    assert slots(m) == {} and m.swiotlb.total_used == 0 and m.swiotlb.used_hiwater == 3


def test_allocation_shortens_the_free_run_before_it(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    tmap(impl, dev, p, 100)                       # slot 0, cursor 1
    a = tmap(impl, dev, p, 4096)                  # page aligned: slot 2; slot 1 stays free
    assert a == POOL + 2 * SLOT
    assert slots(m)[1] == (dma.INVALID_PHYS_ADDR, 0, 1, 0)


def test_wrap_to_area_start(impl):
    m = machine(impl)
    m.cpu = 1                                     # area 1: slots 128..255
    dev = m.add_device("d")
    p, _ = buffer(m, 64)
    big = tmap(impl, dev, p, 120 * SLOT)
    assert big == POOL + 128 * SLOT
    impl.swiotlb_tbl_unmap_single(dev, big, 120 * SLOT, TO, 0)
    assert m.swiotlb.get_state()["areas"][1] == (0, 120)
    # 16 slots: 120..127 hold only 8 → the cursor wraps to the area's first slot
    assert tmap(impl, dev, p, 16 * SLOT) == POOL + 128 * SLOT
    assert m.swiotlb.get_state()["areas"][1] == (16, 16)


def test_page_sized_requests_are_page_aligned_without_min_align_mask(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    tmap(impl, dev, p, 100)
    assert tmap(impl, dev, p, 4096) == POOL + 2 * SLOT          # slot 1 is not page aligned
    assert tmap(impl, dev, p, 100) == POOL + 4 * SLOT
    assert tmap(impl, dev, p, 4095) == POOL + 5 * SLOT          # < PAGE_SIZE: any slot
    m2 = machine(impl)
    dev2 = m2.add_device("d", min_align_mask=0x7FF)              # a min_align_mask drops the rule
    p2, _ = buffer(m2)
    tmap(impl, dev2, p2, 100)
    assert tmap(impl, dev2, p2, 4096) == POOL + SLOT


def test_alloc_align_mask(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    tmap(impl, dev, p, 100)
    with pytest.warns(dma.KernelWarning, match="d: Alloc alignment may prevent fulfilling requests"):
        a = tmap(impl, dev, p, 100, align=0x3FFF)
    assert a == POOL + 8 * SLOT                                  # 16 KiB aligned
    st_ = m.swiotlb.get_state()
    assert st_["total_used"] == 1 + 8                            # ALIGN(100, 16 KiB) = 8 slots
    assert st_["slots"][8] == (p, 0x4000, 0, 0) and st_["slots"][15][1] == 0x4000 - 7 * SLOT
    tmap(impl, dev, p, 100, align=0x3FFF)                        # WARN_ONCE: silent now
    impl.swiotlb_tbl_unmap_single(dev, a, 100, TO, 0)
    assert m.swiotlb.get_state()["areas"][0][0] == 9


def test_min_align_mask_preserves_low_bits(impl):
    m = machine(impl)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, data = buffer(m)
    orig = p + 0xA34                                              # bit 11 set → odd slot
    a = tmap(impl, dev, orig, 300)
    assert a == POOL + SLOT + 0x234 and a & 0xFFF == 0xA34
    assert slots(m)[1] == (orig, 300, 0, 0)
    assert dev.dma_read(a, 300) == data[0xA34:0xA34 + 300]
    b = tmap(impl, dev, p + 0x100, 100)                           # bit 11 clear → even slot 2
    assert b == POOL + 2 * SLOT + 0x100
    impl.swiotlb_tbl_unmap_single(dev, a, 300, TO, 0)
    impl.swiotlb_tbl_unmap_single(dev, b, 100, TO, 0)
    assert slots(m) == {}


def test_min_align_with_alloc_align_uses_pad_slots(impl):
    m = machine(impl)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, data = buffer(m)
    orig = p + 0xA34
    a = tmap(impl, dev, orig, 3000, align=0xFFF)                  # what dma-iommu passes (granule - 1)
    # offset 0xA34 = one pad slot + 0x234; size ALIGN(3000 + 0xA34, 4 KiB) = 8 KiB = 4 slots
    assert a == POOL + SLOT + 0x234 and a & 0xFFF == orig & 0xFFF
    s = slots(m)
    assert s[0] == (dma.INVALID_PHYS_ADDR, 8192 - 0x234, 0, 0)     # the pad slot
    assert s[1] == (orig, 8192 - 0x234 - SLOT, 0, 1)              # pad_slots recorded here
    assert s[2] == (orig + SLOT, 8192 - 0x234 - 2 * SLOT, 0, 0)
    assert s[3][0] == orig + 2 * SLOT and m.swiotlb.total_used == 4
    assert dev.dma_read(a, 3000) == data[0xA34:0xA34 + 3000]
    impl.swiotlb_tbl_unmap_single(dev, a, 3000, TO, 0)
    assert slots(m) == {} and m.swiotlb.total_used == 0


def test_segment_boundary(impl):
    m = machine(impl)
    plain = m.add_device("plain")
    bounded = m.add_device("bounded", seg_boundary_mask=0xFFFF)   # 32 slots
    p, _ = buffer(m, 16)
    tmap(impl, plain, p, 30 * SLOT)                               # slots 0..29, cursor 30
    assert tmap(impl, bounded, p, 4 * SLOT) == POOL + 32 * SLOT   # 30..33 would cross 32
    assert tmap(impl, plain, p, 4 * SLOT) == POOL + 36 * SLOT
    assert tmap(impl, plain, p, 2 * SLOT) == POOL + 40 * SLOT


def test_segment_boundary_not_power_of_two_is_a_bug(impl):
    m = machine(impl)
    dev = m.add_device("d", seg_boundary_mask=0x2FFF)
    p, _ = buffer(m)
    before = m.swiotlb.get_state()
    with pytest.raises(dma.KernelBug, match="iommu_is_span_boundary"):
        tmap(impl, dev, p, 100)
    assert m.swiotlb.get_state() == before


def test_128_slot_maximum(impl):
    m = machine(impl, cpus=1)                                     # one 512-slot area
    dev = m.add_device("d")
    p, _ = buffer(m, 128)
    assert tmap(impl, dev, p, 100) == POOL
    assert tmap(impl, dev, p, 128 * SLOT) == POOL + 128 * SLOT    # next whole segment
    with pytest.warns(dma.SwiotlbFullWarning, match=r"sz: 262145 bytes"):
        assert tmap(impl, dev, p, 128 * SLOT + 1) == ERR
    assert impl.swiotlb_max_mapping_size(dev) == 262144
    assert impl.swiotlb_max_mapping_size(m.add_device("n", min_align_mask=0xFFF)) == 258048
    assert impl.swiotlb_max_mapping_size(m.add_device("s", min_align_mask=0x7FF)) == 260096
    assert impl.swiotlb_max_mapping_size(m.add_device("z", min_align_mask=0x3)) == 260096


def test_area_selection_by_cpu(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m, 128)
    m.cpu = 2
    assert tmap(impl, dev, p, 100) == POOL + 2 * 128 * SLOT
    m.cpu = 3
    assert tmap(impl, dev, p, 128 * SLOT) == POOL + 3 * 128 * SLOT   # area 3 now full
    assert tmap(impl, dev, p, 100) == POOL                            # → wraps to area 0
    assert m.swiotlb.get_state()["areas"] == [(1, 1), (0, 0), (1, 1), (128, 0)]


# ---- copy rules -----------------------------------------------------------------------------------------
def test_to_device_copies_at_map_and_not_back(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    a = tmap(impl, dev, p, 5000, TO)
    assert dev.dma_read(a, 5000) == data[:5000]
    dev.dma_write(a, b"Z" * 100)
    impl.swiotlb_tbl_unmap_single(dev, a, 5000, TO, 0)
    assert m.mem_read(p, 5000) == data[:5000]


@pytest.mark.parametrize("dir", [FROM, BIDI])
def test_from_device_initial_copy_hides_stale_slot_data(impl, dir):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    m.mem_write(POOL, b"\xEE" * 8192)             # stale bytes of an earlier user of the slot
    a = tmap(impl, dev, p, 6000, dir, SKIP)       # the initial copy ignores SKIP_CPU_SYNC
    assert a == POOL and dev.dma_read(a, 6000) == data[:6000]
    dev.dma_write(a + 10, b"new!")                # the device writes 4 bytes only
    impl.swiotlb_tbl_unmap_single(dev, a, 6000, dir, 0)
    assert m.mem_read(p, 6000) == data[:10] + b"new!" + data[14:6000]


@pytest.mark.parametrize("dir", [FROM, BIDI])
def test_unmap_with_skip_cpu_sync_does_not_copy_back(impl, dir):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    a = tmap(impl, dev, p, 300, dir)
    dev.dma_write(a, b"x" * 300)
    impl.swiotlb_tbl_unmap_single(dev, a, 300, dir, SKIP)
    assert m.mem_read(p, 300) == data[:300] and slots(m) == {}


@pytest.mark.parametrize("dir, to_cpu, to_dev", [(TO, False, True), (FROM, True, False), (BIDI, True, True)])
def test_sync_directions(impl, dir, to_cpu, to_dev):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    a = tmap(impl, dev, p, 1000, dir)
    dev.dma_write(a, b"D" * 1000)                 # device → bounce
    impl.swiotlb_sync_single_for_cpu(dev, a, 1000, dir)
    assert m.mem_read(p, 1000) == (b"D" * 1000 if to_cpu else data[:1000])
    m.mem_write(p, b"C" * 1000)                   # CPU → original
    impl.swiotlb_sync_single_for_device(dev, a, 1000, dir)
    assert dev.dma_read(a, 1000) == (b"C" * 1000 if to_dev else b"D" * 1000)


def test_partial_syncs_resolve_through_slot_records(impl):
    m = machine(impl)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, data = buffer(m)
    orig = p + 0x234
    a = tmap(impl, dev, orig, 6000, FROM)
    assert a == POOL + 0x234
    dev.dma_write(a, bytes(range(256)) * 24)      # 6144 bytes, but only ranges get synced
    impl.swiotlb_sync_single_for_cpu(dev, a + 4900, 200, FROM)
    got = m.mem_read(orig, 6000)
    assert got[4900:5100] == (bytes(range(256)) * 24)[4900:5100]
    assert got[:4900] == data[0x234:0x234 + 4900] and got[5100:] == data[0x234 + 5100:0x234 + 6000]
    # starts 0x10 bytes into the second slot, i.e. inside its leading 0x234-byte offset:
    # the kernel's tlb_offset is negative there, yet bounce + x still maps to orig + x
    x = SLOT + 0x10 - 0x234
    m.mem_write(orig + x, b"Q" * 64)
    m2 = dev.dma_read(a + x, 64)
    impl.swiotlb_sync_single_for_device(dev, a + x, 64, FROM)     # FROM_DEVICE: nothing
    assert dev.dma_read(a + x, 64) == m2
    impl.swiotlb_sync_single_for_cpu(dev, a + x, 64, FROM)
    assert m.mem_read(orig + x, 64) == (bytes(range(256)) * 24)[x:x + 64]


def test_sync_overflow_warns_once_and_clamps(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    a = tmap(impl, dev, p, 1000, FROM)
    dev.dma_write(a, b"W" * 2048)
    with pytest.warns(dma.KernelWarning, match=r"^d: Buffer overflow detected\. Allocation size: 900\. "
                                               r"Mapping size: 1000\.$"):
        impl.swiotlb_sync_single_for_cpu(dev, a + 100, 1000, FROM)
    assert m.mem_read(p, 1200) == data[:100] + b"W" * 900 + data[1000:1200]
    impl.swiotlb_sync_single_for_cpu(dev, a + 100, 1000, FROM)       # once only


def test_sync_of_other_addresses_is_a_no_op_even_with_bad_dir(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    impl.swiotlb_sync_single_for_cpu(dev, p, 100, dma.DMA_NONE)
    impl.swiotlb_sync_single_for_device(dev, p, 100, 7)
    impl.swiotlb_tbl_unmap_single(dev, p, 100, FROM, 0)
    assert m.mem_read(p, 100) == data[:100]
    a = tmap(impl, dev, p, 100, BIDI)
    before = m.swiotlb.get_state()
    with pytest.raises(dma.KernelBug, match="__swiotlb_sync_single_for_cpu"):
        impl.swiotlb_sync_single_for_cpu(dev, a, 100, dma.DMA_NONE)
    with pytest.raises(dma.KernelBug, match="__swiotlb_sync_single_for_device"):
        impl.swiotlb_sync_single_for_device(dev, a, 100, dma.DMA_NONE)
    assert m.swiotlb.get_state() == before


# ---- failure reports ---------------------------------------------------------------------------------------
def fill_pool(impl, m, dev, p):
    for _ in range(m.swiotlb.nslabs // 128):
        assert tmap(impl, dev, p, 128 * SLOT) != ERR


def test_full_pool_warning_text(impl):
    m = machine(impl, cpus=1)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, _ = buffer(m, 128)
    fill_pool(impl, m, dev, p)
    with pytest.warns(dma.SwiotlbFullWarning) as rec:
        assert tmap(impl, dev, p + 0xA34, 100) == ERR
    # sz counts the min_align offset (0xA34 & 0x7FF = 0x234): 100 + 564
    assert [str(w.message) for w in rec] == [
        "nvme: swiotlb buffer is full (sz: 664 bytes), total 512 (slots), used 512 (slots)"]
    assert tmap(impl, dev, p, 100, attrs=NO_WARN) == ERR         # no warning (filterwarnings=error)


def test_full_warning_is_rate_limited(impl):
    m = machine(impl, cpus=1)
    dev = m.add_device("d")
    p, _ = buffer(m, 128)
    fill_pool(impl, m, dev, p)
    for _ in range(30):                                          # NO_WARN costs no budget
        tmap(impl, dev, p, 100, attrs=NO_WARN)

    def fail(n):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for _ in range(n):
                assert tmap(impl, dev, p, 100) == ERR
        return [str(w.message) for w in rec]

    assert len(fail(12)) == 10                                   # burst 10 per 5 s window
    m.advance(5_000_000_000)                                     # jiffies == begin + interval: same window
    assert fail(1) == []
    m.advance(1_000_000)
    got = fail(2)
    assert got[0] == "swiotlb_tbl_map_single: 3 callbacks suppressed"
    assert got[1].startswith("d: swiotlb buffer is full (sz: 100 bytes)") and len(got) == 3


def test_no_pool_warns_and_fails(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], dma_debug=False)
    dev = m.add_device("d")
    with pytest.warns(dma.KernelWarning, match="^d: Can not allocate SWIOTLB buffer earlier and can't now "
                                               "provide you with the DMA bounce buffer$"):
        assert tmap(impl, dev, 0x1000, 100) == ERR
    dev.dma_io_tlb_mem = impl.IoTlbMem()                         # an io_tlb_mem with nslabs 0
    assert not impl.is_swiotlb_active(dev)
    with pytest.warns(dma.KernelWarning, match="Can not allocate"):
        assert tmap(impl, dev, 0x1000, 100) == ERR


# ---- statistics and flags ----------------------------------------------------------------------------------
def test_hiwater_and_debugfs_reset(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, _ = buffer(m)
    addrs = [tmap(impl, dev, p, 3000) for _ in range(3)]         # 2 slots each
    for a in addrs[:2]:
        impl.swiotlb_tbl_unmap_single(dev, a, 3000, TO, 0)
    t = m.swiotlb
    assert (t.total_used, t.mem_used(), t.used_hiwater) == (2, 2, 6)
    with pytest.raises(ValueError, match="only 0"):
        t.used_hiwater = 5
    assert t.used_hiwater == 6
    t.used_hiwater = 0
    assert t.used_hiwater == 0
    tmap(impl, dev, p, 100)
    assert t.used_hiwater == 3
    t.reset_used_hiwater()
    assert t.used_hiwater == 0


def test_map_clears_skip_sync_and_marks_io_tlb_use(impl):
    m = machine(impl)
    dev = m.add_device("d", coherent=True)
    p, _ = buffer(m)
    assert dev.dma_skip_sync and not dev.dma_uses_io_tlb
    tmap(impl, dev, p, 100)
    assert not dev.dma_skip_sync and dev.dma_uses_io_tlb


def test_bad_input_leaves_state_intact(impl):
    m = machine(impl)
    dev = m.add_device("d")
    p, data = buffer(m)
    tmap(impl, dev, p, 100)
    before = m.swiotlb.get_state()
    with pytest.raises(TypeError):
        tmap(impl, dev, p, 100, dir="to")
    with pytest.raises(TypeError):
        tmap(impl, dev, float(p), 100)
    with pytest.raises(TypeError):
        impl.swiotlb_tbl_map_single(None, p, 100, 0, TO, 0)
    with pytest.raises(ValueError):
        tmap(impl, dev, -1, 100)
    with pytest.raises(ValueError, match="DMA_ATTR"):
        tmap(impl, dev, p, 100, attrs=1 << 3)
    with pytest.raises(ValueError, match="unsigned int"):
        tmap(impl, dev, p, 100, align=1 << 32)
    with pytest.raises(dma.KernelBug, match="nslots"):
        tmap(impl, dev, p, 0)                                    # no bytes, no offset: BUG_ON(!nslots)
    with pytest.raises(dma.PhysAddrError):
        tmap(impl, dev, 3 << 30, 100)                            # a hole
    with pytest.raises(ValueError):
        impl.swiotlb_tbl_unmap_single(dev, POOL, 100, TO, 1 << 0)
    assert m.swiotlb.get_state() == before and m.mem_read(p, 4096) == data[:4096]


def test_double_unmap_behaves_like_the_kernel():
    # A driver bug: the kernel recomputes the slot run from the freed slot (alloc_size 0), so
    # without a sub-slot offset nothing changes, with one it frees one slot again and the
    # unsigned counters wrap. Both backends must do exactly that.
    states = []
    for mod in (dma, reference):
        m = machine(mod)
        plain, nvme = m.add_device("plain"), m.add_device("nvme", min_align_mask=0xFFF)
        p, _ = buffer(m)
        a = tmap(mod, plain, p, 100)
        for _ in range(2):
            mod.swiotlb_tbl_unmap_single(plain, a, 100, TO, 0)
        assert slots(m) == {} and m.swiotlb.total_used == 0
        b = tmap(mod, nvme, p + 0x234, 100)
        for _ in range(2):
            mod.swiotlb_tbl_unmap_single(nvme, b, 100, TO, 0)
        assert m.swiotlb.total_used == dma.U64_MAX == m.swiotlb.get_state()["areas"][0][0]
        assert b == POOL + 2 * SLOT + 0x234 and tmap(mod, plain, p, 100) == POOL + 3 * SLOT
        states.append(m.swiotlb.get_state())
    assert states[0] == states[1]


def test_min_align_zero_size_map_is_allowed(impl):
    m = machine(impl)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, _ = buffer(m)
    a = tmap(impl, dev, p + 0x10, 0)                             # nslots = nr_slots(0x10) = 1
    assert a == POOL + 0x10 and m.swiotlb.total_used == 1


# ---- swiotlb_map (dma-direct's path) ---------------------------------------------------------------------
def test_swiotlb_map_returns_bus_address_and_syncs_noncoherent(impl):
    m = machine(impl)
    dev = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), coherent=False)
    p, data = buffer(m)
    a = impl.swiotlb_map(dev, p, 500, TO, 0)
    assert a == POOL and dev.dma_read(a, 500) == data[:500]
    assert dev.arch_sync_for_device == 1
    impl.swiotlb_map(dev, p, 500, TO, SKIP)
    assert dev.arch_sync_for_device == 1
    coh = m.add_device("c", dma_mask=dma.DMA_BIT_MASK(32))
    impl.swiotlb_map(coh, p, 500, TO, 0)
    assert coh.arch_sync_for_device == 0


def test_swiotlb_map_through_dma_range_map(impl):
    m = machine(impl)
    dev = m.add_device("d", dma_range_map=[(0, 0x80000000, 1 << 30), (4 << 30, 0xC0000000, 1 << 30)])
    p, data = buffer(m)
    a = impl.swiotlb_map(dev, p, 200, TO, 0)
    assert a == POOL + 0x80000000 and dev.dma_read(a, 200) == data[:200]


def test_swiotlb_map_overflow_releases_and_warns_once(impl):
    m = machine(impl)
    dev = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(29), bus_dma_limit=0)
    p, _ = buffer(m)
    with pytest.warns(dma.KernelWarning) as rec:
        assert impl.swiotlb_map(dev, p, 100, TO, 0) == ERR
    assert [str(w.message) for w in rec] == [
        "d: swiotlb addr 0x000000003ff00000+100 overflow (mask 1fffffff, bus limit 0)."]
    st_ = m.swiotlb.get_state()
    assert st_["slots"] == {} and st_["total_used"] == 0 and st_["areas"][0] == (0, 1)
    assert impl.swiotlb_map(dev, p, 100, TO, 0) == ERR           # WARN_ONCE


# ---- core vs reference ------------------------------------------------------------------------------
def _pair(geometry, min_align, boundary, coherent):
    cpus, pool = geometry
    out = []
    for mod in (dma, reference):
        m = mod.Machine(ram=RAM, cpus=cpus, swiotlb=pool, dma_debug=False)
        dev = m.add_device("d", min_align_mask=min_align, seg_boundary_mask=boundary, coherent=coherent,
                           dma_mask=dma.DMA_BIT_MASK(64))
        p = m.alloc_pages(64, None)
        m.mem_write(p, random.Random(1).randbytes(64 * 4096))
        out.append((mod, m, dev, p))
    return out


_map_op = (
    st.tuples(st.just("map"), st.integers(0, 63 * 4096), st.sampled_from([1, 100, 2048, 3000, 4096, 9000,
                                                                           40000, 200000, 262144]),
              st.sampled_from([TO, FROM, BIDI]), st.sampled_from([0, SKIP, NO_WARN]),
              st.sampled_from([0, 0, 0xFFF, 0x3FFF]), st.integers(0, 3)))
_op = st.one_of(
    _map_op, _map_op,
    st.tuples(st.just("unmap"), st.integers(0, 1 << 30), st.sampled_from([0, SKIP])),
    st.tuples(st.just("sync"), st.integers(0, 1 << 30), st.booleans(), st.integers(0, 1 << 30),
              st.integers(0, 1 << 30)),
    st.tuples(st.just("dev_write"), st.integers(0, 1 << 30), st.integers(0, 1 << 30),
              st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("advance"), st.integers(0, 3_000_000_000)),
)


@settings(max_examples=25)
@given(geometry=st.sampled_from([(4, 1 << 20), (2, 1 << 19), (1, 1 << 18)]),
       min_align=st.sampled_from([0, 0x7FF, 0xFFF, 0x3FFF]),
       boundary=st.sampled_from([dma.U64_MAX, 0xFFFF, 0x3FFFF]),
       coherent=st.booleans(), ops=st.lists(_op, min_size=5, max_size=40))
def test_core_matches_reference(geometry, min_align, boundary, coherent, ops):
    """The same random map/unmap/sync/device-write stream on both backends: same everything."""
    pair = _pair(geometry, min_align, boundary, coherent)
    live = []                                    # (tlb_addr, size, dir) in mapping order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in ops:
            results = []
            for mod, m, dev, p in pair:
                if op[0] == "map":
                    _, off, size, dir, attrs, align, cpu = op
                    m.cpu = cpu % m.cpus
                    size = min(size, 64 * 4096 - off) or 1
                    results.append(mod.swiotlb_tbl_map_single(dev, p + off, size, align, dir, attrs))
                elif not live:
                    results.append(None)
                elif op[0] == "unmap":
                    a, size, dir = live[op[1] % len(live)]
                    results.append(mod.swiotlb_tbl_unmap_single(dev, a, size, dir, op[2]))
                elif op[0] == "sync":
                    a, size, dir = live[op[1] % len(live)]
                    start = op[3] % size
                    n = op[4] % (size - start + 1)
                    f = mod.swiotlb_sync_single_for_cpu if op[2] else mod.swiotlb_sync_single_for_device
                    results.append(f(dev, a + start, n, dir))
                elif op[0] == "dev_write":
                    a, size, _ = live[op[1] % len(live)]
                    start = op[2] % size
                    results.append(dev.dma_write(a + start, op[3][:size - start]))
                else:
                    results.append(m.advance(op[1]))
            assert results[0] == results[1], op
            if op[0] == "map" and results[0] != ERR:
                live.append((results[0], min(op[2], 64 * 4096 - op[1]) or 1, op[3]))
            elif op[0] == "unmap" and live:
                live.pop(op[1] % len(live))
            (_, m0, _, p0), (_, m1, _, p1) = pair
            assert m0.swiotlb.get_state() == m1.swiotlb.get_state(), op
            assert m0.warnings_log == m1.warnings_log
        (_, m0, d0, p0), (_, m1, d1, p1) = pair
        event(f"slots in use at the end: {'0' if not m0.swiotlb.total_used else '>0'}")
        event(f"pool full reached: {any('is full' in t for _, t in m0.warnings_log)}")
        assert m0.mem_read(p0, 64 * 4096) == m1.mem_read(p1, 64 * 4096)
        assert m0.mem_read(m0.swiotlb.start, geometry[1]) == m1.mem_read(m1.swiotlb.start, geometry[1])
        assert (d0.dma_skip_sync, d0.dma_uses_io_tlb) == (d1.dma_skip_sync, d1.dma_uses_io_tlb)


def test_state_returns_to_pristine_after_everything_is_unmapped(impl):
    m = machine(impl)
    dev = m.add_device("nvme", min_align_mask=0xFFF)
    p, _ = buffer(m, 64)
    rng = random.Random(7)
    live = []
    for _ in range(200):
        if live and rng.random() < 0.4:
            a, n = live.pop(rng.randrange(len(live)))
            impl.swiotlb_tbl_unmap_single(dev, a, n, FROM, 0)
        else:
            m.cpu = rng.randrange(4)
            n = rng.choice([1, 700, 2048, 5000, 70000])
            a = tmap(impl, dev, p + rng.randrange(0, 4096 * 40), n, FROM, NO_WARN, rng.choice([0, 0xFFF]))
            if a != ERR:
                live.append((a, n))
    for a, n in live:
        impl.swiotlb_tbl_unmap_single(dev, a, n, FROM, 0)
    st_ = m.swiotlb.get_state()
    assert st_["slots"] == {} and st_["total_used"] == 0 and all(used == 0 for used, _ in st_["areas"])
