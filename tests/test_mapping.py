"""kernel/dma/mapping.c: the kernel-named entry points, their dispatch, errors and return conventions.

Every test runs on the compiled core and on the reference (``impl``). Machines are built with
dma-debug off unless a test is about CONFIG_DMA_API_DEBUG behaviour, so that dma-debug's own
reports do not interfere with what is tested here.
"""

import errno
import warnings

import pytest

import dmaphys as dma

TO, FROM, BIDI = dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL
ERR = dma.DMA_MAPPING_ERROR
SKIP = dma.DMA_ATTR_SKIP_CPU_SYNC
MMIO = dma.DMA_ATTR_MMIO
BAR = 0xE000_0000
GiB = 1 << 30


def machine(impl, debug=False, swiotlb=False, ram=None):
    m = impl.Machine(ram=ram or [(0, GiB), (4 * GiB, GiB)], swiotlb=swiotlb, dma_debug=debug)
    m.add_mmio(BAR, 1 << 20, "bar0")
    return m


def texts(m):
    return [t for _, t in m.warnings_log]


# ---- dma_map_phys / dma_unmap_phys ----------------------------------------------------------------

def test_map_phys_is_identity_and_the_device_sees_the_buffer(impl):
    m = machine(impl)
    d = m.add_device("d")
    m.mem_write(0x12345, b"hello")
    a = impl.dma_map_phys(d, 0x12345, 5, TO, 0)
    assert a == 0x12345 and impl.dma_mapping_error(d, a) == 0
    assert d.dma_read(a, 5) == b"hello"
    impl.dma_unmap_phys(d, a, 5, TO, 0)
    assert texts(m) == []


def test_dma_mapping_error_is_enomem(impl):
    m = machine(impl)
    d = m.add_device("d")
    assert impl.dma_mapping_error(d, ERR) == -errno.ENOMEM
    assert impl.dma_mapping_error(d, 0) == 0
    with pytest.raises(dma.DMAError) as ei:
        dma.check(ERR)
    assert ei.value.errno == errno.ENOMEM


def test_range_map_offset_is_applied_to_ram(impl):
    m = machine(impl)
    d = m.add_device("d", dma_range_map=[(0, 0x8000_0000, GiB), (4 * GiB, 0x1_0000_0000, GiB)])
    m.mem_write(0x2000, b"\xaa" * 8)
    a = impl.dma_map_phys(d, 0x2000, 8, TO, 0)
    assert a == 0x8000_2000
    assert d.dma_read(a, 8) == b"\xaa" * 8
    assert impl.dma_map_phys(d, 4 * GiB + 0x10, 8, BIDI, 0) == 0x1_0000_0010
    impl.dma_unmap_phys(d, a, 8, TO, 0)


def test_ram_beyond_the_mask_without_swiotlb_overflows_once(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    with pytest.warns(dma.KernelWarning, match=r"DMA addr 0x0000000100000000\+4096 overflow "
                                               r"\(mask ffffffff, bus limit 0\)\."):
        assert impl.dma_map_phys(d, 4 * GiB, 4096, TO, 0) == ERR
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert impl.dma_map_phys(d, 4 * GiB, 4096, TO, 0) == ERR      # WARN_ONCE: silent now
    assert texts(m) == ["d: DMA addr 0x0000000100000000+4096 overflow (mask ffffffff, bus limit 0)."]


def test_capability_is_inclusive_of_the_last_byte_and_honours_bus_dma_limit(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), bus_dma_limit=0x3FFF_FFFF)
    assert impl.dma_map_phys(d, 0x3FFF_F000, 0x1000, TO, 0) == 0x3FFF_F000     # last byte == limit
    with pytest.warns(dma.KernelWarning, match="bus limit 3fffffff"):
        assert impl.dma_map_phys(d, 0x3FFF_F000, 0x1001, TO, 0) == ERR


def test_null_dma_mask_warns_once_and_fails(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=None)
    with pytest.warns(dma.KernelWarning, match=r"WARN_ON_ONCE\(!dev->dma_mask\)"):
        assert impl.dma_map_phys(d, 0x1000, 64, TO, 0) == ERR
    assert impl.dma_map_phys(d, 0x1000, 64, TO, 0) == ERR
    assert len(m.warnings_log) == 1
    sg = impl.ScatterList([(0x1000, 64)])
    with pytest.warns(dma.KernelWarning, match=r"__dma_map_sg_attrs\(\): WARN_ON_ONCE\(!dev->dma_mask\)"):
        assert impl.dma_map_sg(d, sg, 1, TO) == 0
    assert impl.dma_map_sgtable(d, sg, TO, 0) == 0 and sg.nents == 0       # the kernel's quirk


# ---- direction, attrs and argument errors -----------------------------------------------------------

@pytest.mark.parametrize("bad", [dma.DMA_NONE, 4, -1, 1 << 40])
def test_invalid_direction_is_a_bug_before_any_state_change(impl, bad):
    m = machine(impl)
    d = m.add_device("d", coherent=False)
    sg = impl.ScatterList([(0x1000, 64)])
    calls = [
        lambda: impl.dma_map_phys(d, 0x1000, 64, bad, 0),
        lambda: impl.dma_unmap_phys(d, 0x1000, 64, bad, 0),
        lambda: impl.dma_map_page(d, 1, 0, 64, bad),
        lambda: impl.dma_map_single(d, 0x1000, 64, bad),
        lambda: impl.dma_map_resource(d, BAR, 64, bad, 0),
        lambda: impl.dma_map_sg(d, sg, 1, bad),
        lambda: impl.dma_unmap_sg(d, sg, 1, bad),
        lambda: impl.dma_map_sgtable(d, sg, bad, 0),
        lambda: impl.dma_sync_single_for_cpu(d, 0x1000, 64, bad),
        lambda: impl.dma_sync_single_for_device(d, 0x1000, 64, bad),
        lambda: impl.dma_sync_sg_for_cpu(d, sg, 1, bad),
        lambda: impl.dma_sync_sg_for_device(d, sg, 1, bad),
    ]
    for call in calls:
        with pytest.raises(dma.KernelBug, match="BUG_ON"):
            call()
    assert d.stats["arch_sync_for_device"] == d.stats["arch_sync_for_cpu"] == 0
    assert sg[0].dma_address == 0 and sg.nents == 1 and texts(m) == []


def test_sync_skipped_without_need_sync_does_not_reach_the_bug_on(impl):
    # dma_sync_single_for_cpu() is an inline that calls the out-of-line function (with its
    # BUG_ON) only when dma_dev_need_sync(): coherent device, no CONFIG_DMA_API_DEBUG.
    m = machine(impl, debug=False)
    d = m.add_device("d", coherent=True)
    impl.dma_sync_single_for_cpu(d, 0x1000, 64, dma.DMA_NONE)
    m2 = machine(impl, debug=True)
    d2 = m2.add_device("d", coherent=True)
    with pytest.raises(dma.KernelBug):
        impl.dma_sync_single_for_cpu(d2, 0x1000, 64, dma.DMA_NONE)


@pytest.mark.parametrize("args, exc", [
    ((-1, 64, TO, 0), ValueError),
    ((1 << 64, 64, TO, 0), ValueError),
    ((0x1000, -5, TO, 0), ValueError),
    (("0x1000", 64, TO, 0), TypeError),
    ((4096.0, 64, TO, 0), TypeError),
    ((0x1000, 64, "to", 0), TypeError),
    ((0x1000, 64, True, 0), TypeError),
    ((0x1000, 64, TO, 1), ValueError),                  # bit 0: no DMA_ATTR_* there
    ((0x1000, 64, TO, 1 << 11), ValueError),
    ((0x1000, 64, TO, -1), ValueError),
    (((1 << 64) - 16, 64, TO, 0), ValueError),          # wraps
])
def test_bad_python_arguments_raise_and_change_nothing(impl, args, exc):
    m = machine(impl)
    d = m.add_device("d", coherent=False)
    with pytest.raises(exc):
        impl.dma_map_phys(d, *args)
    assert d.stats["arch_sync_for_device"] == 0 and texts(m) == []


def test_dev_must_be_a_device(impl):
    with pytest.raises(TypeError):
        impl.dma_map_phys(None, 0x1000, 64, TO, 0)
    with pytest.raises(TypeError):
        impl.dma_mapping_error("d", 0)


def test_attrs_accept_intflag_and_directions_accept_numpy_ints(impl):
    np = pytest.importorskip("numpy")
    m = machine(impl)
    d = m.add_device("d")
    attrs = dma.DmaAttr.DMA_ATTR_WEAK_ORDERING | dma.DmaAttr.DMA_ATTR_NO_WARN
    assert impl.dma_map_phys(d, np.uint64(0x1000), np.int64(64), np.int32(1), attrs) == 0x1000


# ---- page / single / resource wrappers ----------------------------------------------------------------

def test_wrappers_and_aliases_agree_with_map_phys(impl):
    m = machine(impl)
    d = m.add_device("d", dma_range_map=[(0, 0x4000_0000, GiB), (4 * GiB, 0x8000_0000, GiB)])
    want = impl.dma_map_phys(d, 0x5123, 100, TO, 0)
    assert impl.dma_map_page_attrs(d, 5, 0x123, 100, TO, 0) == want
    assert impl.dma_map_page(d, 5, 0x123, 100, TO) == want
    assert impl.dma_map_page(d, 4, 0x1123, 100, TO) == want              # offset may exceed a page
    assert impl.dma_map_single_attrs(d, 0x5123, 100, TO, 0) == want
    assert impl.dma_map_single(d, 0x5123, 100, TO) == want
    for unmap in (impl.dma_unmap_page, impl.dma_unmap_single):
        unmap(d, want, 100, TO)
    impl.dma_unmap_page_attrs(d, want, 100, TO, 0)
    impl.dma_unmap_single_attrs(d, want, 100, TO, 0)
    impl.dma_unmap_phys(d, want, 100, TO, 0)


def test_map_page_with_mmio_fails_silently_and_unmap_page_with_mmio_does_nothing(impl):
    m = machine(impl)
    d = m.add_device("d", coherent=False)
    assert impl.dma_map_page_attrs(d, 5, 0, 64, TO, MMIO) == ERR
    assert impl.dma_map_single_attrs(d, 0x5000, 64, TO, MMIO) == ERR
    impl.dma_unmap_page_attrs(d, 0x5000, 64, FROM, MMIO)
    assert d.stats["arch_sync_for_cpu"] == 0 and texts(m) == []


def test_map_page_needs_a_struct_page(impl):
    m = machine(impl)
    d = m.add_device("d")
    with pytest.raises(ValueError, match="no struct page"):
        impl.dma_map_page(d, BAR >> 12, 0, 64, TO)            # MMIO has no struct page
    with pytest.raises(ValueError):
        impl.dma_map_single(d, 2 * GiB, 64, TO)               # a hole


def test_map_resource_uses_the_phys_address_unchanged(impl):
    m = machine(impl)
    d = m.add_device("d", coherent=False, dma_range_map=[(0, 0x8000_0000, 2 * GiB), (4 * GiB, 4 * GiB, GiB)])
    a = impl.dma_map_resource(d, BAR + 0x40, 64, BIDI, 0)
    assert a == BAR + 0x40                                     # no dma_range_map offset
    m.mem_write(BAR + 0x40, b"doorbell")
    impl.dma_unmap_resource(d, a, 64, BIDI, 0)
    assert d.stats["arch_sync_for_device"] == d.stats["arch_sync_for_cpu"] == 0   # never cache-synced
    # dma_map_phys with DMA_ATTR_MMIO is the same path
    assert impl.dma_map_phys(d, BAR, 64, TO, MMIO) == BAR
    impl.dma_unmap_phys(d, BAR, 64, TO, MMIO)


def test_map_resource_of_ram_warns_only_with_dma_debug(impl):
    m = machine(impl, debug=True)
    d = m.add_device("d")
    with pytest.warns(dma.KernelWarning, match=r"dma_map_resource\(\): WARN_ON_ONCE\(pfn_valid"):
        assert impl.dma_map_resource(d, 0x1000, 64, TO, 0) == ERR
    m2 = machine(impl, debug=False)
    d2 = m2.add_device("d", dma_range_map=[(0, 0x8000_0000, 2 * GiB), (4 * GiB, 4 * GiB, GiB)])
    assert impl.dma_map_resource(d2, 0x1000, 64, TO, 0) == 0x1000      # mapped as MMIO: phys as is
    assert texts(m2) == []


def test_mmio_beyond_the_mask_is_never_bounced(impl):
    m = impl.Machine(ram=[(0, GiB), (4 * GiB, GiB)], swiotlb=1 << 20, dma_debug=False)
    m.add_mmio(0x10_0000_0000, 1 << 20, "highbar")
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    with pytest.warns(dma.KernelWarning, match=r"DMA addr 0x0000001000000000\+64 overflow \(mask ffffffff"):
        assert impl.dma_map_resource(d, 0x10_0000_0000, 64, TO, 0) == ERR
    assert m.swiotlb.total_used == 0


def test_mmio_on_a_force_bounce_device_overflows(impl):
    m = impl.Machine(ram=[(0, GiB)], swiotlb=1 << 20, dma_debug=False)
    m.add_mmio(BAR, 1 << 20, "bar0")
    d = m.add_device("d", force_bounce=True)
    with pytest.warns(dma.KernelWarning, match=r"DMA addr 0x0000000000000000\+64 overflow"):
        assert impl.dma_map_resource(d, BAR, 64, TO, 0) == ERR
    assert m.swiotlb.total_used == 0


# ---- cache maintenance ----------------------------------------------------------------------------------

def test_non_coherent_map_cleans_and_unmap_invalidates(impl):
    m = machine(impl)
    d = m.add_device("d", coherent=False)
    a = impl.dma_map_phys(d, 0x3000, 256, FROM, 0)
    assert d.stats["arch_sync_for_device"] == 1
    impl.dma_sync_single_for_cpu(d, a, 256, FROM)
    impl.dma_sync_single_for_device(d, a, 256, FROM)
    impl.dma_sync_single_range_for_cpu(d, a, 16, 32, FROM)
    impl.dma_sync_single_range_for_device(d, a, 16, 32, FROM)
    assert (d.stats["arch_sync_for_cpu"], d.stats["arch_sync_for_device"]) == (2, 3)
    impl.dma_unmap_phys(d, a, 256, FROM, 0)
    assert d.stats["arch_sync_for_cpu"] == 3
    # SKIP_CPU_SYNC: neither map nor unmap touches the cache
    a = impl.dma_map_phys(d, 0x3000, 256, FROM, SKIP)
    impl.dma_unmap_phys(d, a, 256, FROM, SKIP)
    assert (d.stats["arch_sync_for_cpu"], d.stats["arch_sync_for_device"]) == (3, 3)


def test_coherent_device_never_syncs(impl):
    m = machine(impl, debug=True)
    d = m.add_device("d", coherent=True)
    a = impl.dma_map_phys(d, 0x3000, 256, BIDI, 0)
    assert impl.dma_mapping_error(d, a) == 0
    impl.dma_sync_single_for_cpu(d, a, 256, BIDI)
    impl.dma_unmap_phys(d, a, 256, BIDI, 0)
    assert d.stats["arch_sync_for_cpu"] == d.stats["arch_sync_for_device"] == 0


# ---- masks and sizes --------------------------------------------------------------------------------------

def test_dma_set_mask_rules(impl):
    m = machine(impl)                                          # RAM up to 5 GiB
    d = m.add_device("d")
    assert impl.dma_set_mask(d, dma.DMA_BIT_MASK(32)) == 0 and d.dma_mask == 0xFFFF_FFFF
    assert impl.dma_set_mask(d, dma.DMA_BIT_MASK(24)) == 0     # ZONE_DMA (16 MiB) covers it
    assert impl.dma_set_mask(d, dma.DMA_BIT_MASK(23)) == -errno.EIO
    assert d.dma_mask == dma.DMA_BIT_MASK(24)
    assert impl.dma_supported(d, dma.DMA_BIT_MASK(20)) is False
    assert impl.dma_set_coherent_mask(d, dma.DMA_BIT_MASK(20)) == -errno.EIO
    assert impl.dma_set_mask_and_coherent(d, dma.DMA_BIT_MASK(40)) == 0
    assert (d.dma_mask, d.coherent_dma_mask) == (dma.DMA_BIT_MASK(40),) * 2
    nomask = m.add_device("nomask", dma_mask=None)
    assert impl.dma_set_mask(nomask, dma.DMA_BIT_MASK(64)) == -errno.EIO
    assert impl.dma_set_mask_and_coherent(nomask, dma.DMA_BIT_MASK(64)) == -errno.EIO
    assert nomask.coherent_dma_mask == dma.DMA_BIT_MASK(32)   # untouched: set_mask failed first
    assert impl.dma_set_coherent_mask(nomask, dma.DMA_BIT_MASK(64)) == 0
    assert impl.dma_get_mask(nomask) == dma.DMA_BIT_MASK(32)
    with pytest.raises(ValueError):
        impl.dma_set_mask(d, -1)


def test_dma_set_mask_resets_dma_skip_sync(impl):
    m = machine(impl)
    d = m.add_device("d", coherent=True)
    d.dma_skip_sync = False
    assert impl.dma_set_mask(d, dma.DMA_BIT_MASK(64)) == 0
    assert d.dma_skip_sync                                     # dma_setup_need_sync(): coherent


def test_required_mask_and_addressing_limited(impl):
    m = machine(impl)                                          # last RAM page at 5 GiB - 4 KiB
    d64 = m.add_device("d64")
    d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
    assert impl.dma_get_required_mask(d64) == dma.DMA_BIT_MASK(33)
    assert not impl.dma_addressing_limited(d64)
    assert impl.dma_addressing_limited(d32)
    lim = m.add_device("lim", bus_dma_limit=0xFFFF_FFFF)
    assert impl.dma_addressing_limited(lim)
    # a range map that leaves RAM uncovered limits the device even with a wide mask
    part = m.add_device("part", dma_range_map=[(0, 0, GiB)])
    assert impl.dma_addressing_limited(part)
    full = m.add_device("full", dma_range_map=[(0, 0, GiB), (4 * GiB, GiB, GiB)])
    assert impl.dma_get_required_mask(full) == dma.DMA_BIT_MASK(31)
    assert not impl.dma_addressing_limited(full)


def test_sizes_and_segment_limits(impl):
    m = machine(impl, swiotlb=1 << 20)
    d64 = m.add_device("d64", max_segment_size=0, seg_boundary_mask=0)
    assert impl.dma_max_mapping_size(d64) == dma.SIZE_MAX
    assert impl.dma_opt_mapping_size(d64) == dma.SIZE_MAX
    assert impl.dma_get_max_seg_size(d64) == 65536 and impl.dma_get_seg_boundary(d64) == dma.ULONG_MAX
    d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32), max_segment_size=1 << 20,
                       seg_boundary_mask=0xFFFF)
    assert impl.dma_max_mapping_size(d32) == 128 * 2048            # swiotlb_max_mapping_size()
    assert impl.dma_opt_mapping_size(d32) == 128 * 2048
    assert impl.dma_get_max_seg_size(d32) == 1 << 20 and impl.dma_get_seg_boundary(d32) == 0xFFFF
    fb = m.add_device("fb", force_bounce=True)
    assert impl.dma_max_mapping_size(fb) == 128 * 2048
    m2 = machine(impl, swiotlb=False)
    assert impl.dma_max_mapping_size(m2.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))) == dma.SIZE_MAX


def test_need_sync_and_need_unmap(impl):
    m = machine(impl, debug=False)
    coh = m.add_device("coh")
    nc = m.add_device("nc", coherent=False)
    assert not impl.dma_need_sync(coh, 0x1000) and not impl.dma_need_unmap(coh)
    assert impl.dma_need_sync(nc, 0x1000) and impl.dma_need_unmap(nc)
    dbg = machine(impl, debug=True)
    coh2 = dbg.add_device("coh")
    assert not impl.dma_need_sync(coh2, 0x1000)                # __dma_need_sync(): coherent, no bounce
    assert impl.dma_need_unmap(coh2)                           # CONFIG_DMA_API_DEBUG


def test_dma_iommu_devices_do_not_ask_dma_direct(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(20))
    d.dma_iommu = True                                         # use_dma_iommu()
    assert impl.dma_supported(d, dma.DMA_BIT_MASK(16))
    assert impl.dma_set_mask(d, dma.DMA_BIT_MASK(16)) == 0
    assert impl.dma_get_required_mask(d) == dma.DMA_BIT_MASK(32)
    assert impl.dma_need_unmap(d)
    assert impl.dma_addressing_limited(d)                      # 16 bits < the 32 it requires


# ---- coherent allocations -------------------------------------------------------------------------------

def test_alloc_coherent_is_zeroed_reachable_and_freed(impl):
    m = machine(impl)
    # RAM above 4 GiB is outside the range map: the first try (no zone limit, as
    # dma_to_phys(coherent mask) does not translate) lands there and fails dma_coherent_ok(),
    # the GFP_DMA32 retry allocates below 4 GiB.
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(64), coherent_dma_mask=dma.DMA_BIT_MASK(32),
                     dma_range_map=[(0, 0x1000_0000, GiB)])
    # dirty free memory first: dma_alloc_coherent must hand out zeroes
    top = m.alloc_pages(2, limit=GiB)
    m.mem_write(top, b"\xff" * 8192)
    m.free_pages(top, 2)
    m.mem_write(top, b"\xee" * 16)                            # a stray CPU store into free RAM
    phys, handle = impl.dma_alloc_coherent(d, 5000)
    assert (phys, handle) == (top, top + 0x1000_0000)
    assert m.mem_read(phys, 8192) == bytes(8192)
    d.dma_write(handle, b"status")
    assert m.mem_read(phys, 6) == b"status"
    impl.dma_free_coherent(d, 5000, phys, handle)
    with pytest.raises(ValueError, match="not a coherent buffer"):
        impl.dma_free_coherent(d, 5000, phys, handle)          # double free
    impl.dma_free_coherent(d, 5000, None, 0)                  # NULL: nothing
    # with a range map that reaches high RAM the buffer may sit there
    hi = m.add_device("hi", coherent_dma_mask=dma.DMA_BIT_MASK(32),
                      dma_range_map=[(0, 0x1000_0000, GiB), (4 * GiB, 0x5000_0000, GiB)])
    phys, handle = impl.dma_alloc_coherent(hi, 4096)
    assert phys == 5 * GiB - 4096 and handle == 0x8FFF_F000


def test_alloc_coherent_below_a_small_coherent_mask(impl):
    m = machine(impl)
    d = m.add_device("d", coherent_dma_mask=dma.DMA_BIT_MASK(24))
    phys, handle = impl.dma_alloc_attrs(d, 4096, 0)
    assert phys == handle and phys < 1 << 24
    impl.dma_free_attrs(d, 4096, phys, handle, 0)


def test_alloc_coherent_failure_is_none(impl):
    m = machine(impl)
    d = m.add_device("d", coherent_dma_mask=0x7FF)             # no page fits below 2 KiB
    assert impl.dma_alloc_coherent(d, 4096) is None
    z = m.add_device("z", coherent_dma_mask=0)
    with pytest.warns(dma.KernelWarning, match=r"WARN_ON_ONCE\(!dev->coherent_dma_mask\)"):
        assert impl.dma_alloc_coherent(z, 4096) is None     # nothing is below a zero mask
    with pytest.raises(ValueError):
        impl.dma_alloc_coherent(d, 0)
