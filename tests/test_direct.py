"""kernel/dma/direct.c + direct.h: direct vs bounce per direction at map/unmap/sync, the sg loop
(filling, P2PDMA classes, unwind), min_align_mask, once-per-copy overflow warnings.

Runs on both backends. The device's view is checked through Device.dma_read / dma_write: a
bounced mapping hands the device the swiotlb slot, so a driver that skips
dma_sync_single_for_cpu reads stale data from its own buffer.
"""

import pytest

import dmaphys as dma

TO, FROM, BIDI = dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL
ERR = dma.DMA_MAPPING_ERROR
SKIP = dma.DMA_ATTR_SKIP_CPU_SYNC
GiB = 1 << 30
HIGH = 4 * GiB + 0x1230          # RAM above 4 GiB: a 32-bit device cannot reach it
BAR = 0xE000_0000
BUS = 0x8_0000_0000


def machine(impl, swiotlb=1 << 20, **kw):
    return impl.Machine(ram=[(0, GiB), (4 * GiB, GiB)], swiotlb=swiotlb, dma_debug=False, **kw)


def in_pool(m, addr):
    return m.swiotlb.start <= addr < m.swiotlb.end


def texts(m):
    return [t for _, t in m.warnings_log]


# ---- single mappings: direct vs bounced -----------------------------------------------------------

def test_reachable_memory_is_not_bounced(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    a = impl.dma_map_phys(d, 0x8000, 64, BIDI, 0)
    assert a == 0x8000 and m.swiotlb.total_used == 0 and d.dma_skip_sync
    assert not impl.dma_need_sync(d, a)
    impl.dma_unmap_phys(d, a, 64, BIDI, 0)


def test_to_device_bounce_copies_at_map_and_never_back(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    m.mem_write(HIGH, b"payload!")
    a = impl.dma_map_phys(d, HIGH, 8, TO, 0)
    assert a != ERR and in_pool(m, a) and a < 1 << 32
    assert d.dma_read(a, 8) == b"payload!"                    # the device sees the slot
    assert m.swiotlb.total_used == 1 and not d.dma_skip_sync and d.dma_uses_io_tlb
    assert impl.dma_need_sync(d, a) and impl.dma_need_unmap(d)
    d.dma_write(a, b"scribble")                               # a buggy device writes a TO_DEVICE buffer
    impl.dma_sync_single_for_cpu(d, a, 8, TO)                 # TO_DEVICE: nothing comes back
    impl.dma_unmap_phys(d, a, 8, TO, 0)
    assert m.mem_read(HIGH, 8) == b"payload!"
    assert m.swiotlb.total_used == 0


def test_from_device_bounce_needs_sync_for_cpu(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    m.mem_write(HIGH, b"old data")
    a = impl.dma_map_phys(d, HIGH, 8, FROM, 0)
    assert d.dma_read(a, 8) == b"old data"                    # swiotlb copies at map for every dir
    d.dma_write(a, b"new data")
    assert m.mem_read(HIGH, 8) == b"old data"                 # forgot dma_sync_single_for_cpu: stale
    impl.dma_sync_single_for_cpu(d, a, 8, FROM)
    assert m.mem_read(HIGH, 8) == b"new data"
    d.dma_write(a, b"newer!!!")
    impl.dma_sync_single_for_device(d, a, 8, FROM)            # FROM_DEVICE: no copy to the slot
    assert d.dma_read(a, 8) == b"newer!!!"
    impl.dma_unmap_phys(d, a, 8, FROM, 0)                     # copies back once more
    assert m.mem_read(HIGH, 8) == b"newer!!!"


def test_from_device_unmap_with_skip_cpu_sync_does_not_copy_back(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    m.mem_write(HIGH, b"original")
    a = impl.dma_map_phys(d, HIGH, 8, FROM, SKIP)
    assert d.dma_read(a, 8) == b"original"                    # copied even with SKIP_CPU_SYNC
    d.dma_write(a, b"dropped!")
    impl.dma_unmap_phys(d, a, 8, FROM, SKIP)
    assert m.mem_read(HIGH, 8) == b"original" and m.swiotlb.total_used == 0


def test_bidirectional_sync_for_device_refreshes_the_slot(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    m.mem_write(HIGH, b"AAAAAAAA")
    a = impl.dma_map_phys(d, HIGH, 8, BIDI, 0)
    m.mem_write(HIGH, b"BBBBBBBB")
    assert d.dma_read(a, 8) == b"AAAAAAAA"                    # not yet synced for the device
    impl.dma_sync_single_for_device(d, a, 8, BIDI)
    assert d.dma_read(a, 8) == b"BBBBBBBB"
    d.dma_write(a + 4, b"CCCC")
    impl.dma_sync_single_range_for_cpu(d, a, 4, 4, BIDI)      # partial sync through the slot
    assert m.mem_read(HIGH, 8) == b"BBBBCCCC"
    impl.dma_unmap_phys(d, a, 8, BIDI, 0)


def test_force_bounce_bounces_reachable_memory(impl):
    m = machine(impl)
    d = m.add_device("d", force_bounce=True)
    m.mem_write(0x5000, b"xyz")
    a = impl.dma_map_single(d, 0x5000, 3, TO)
    assert in_pool(m, a) and d.dma_read(a, 3) == b"xyz"
    impl.dma_unmap_single(d, a, 3, TO)
    assert m.swiotlb.total_used == 0


def test_bounce_keeps_the_low_bits_under_min_align_mask(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), min_align_mask=0xFFF)
    a = impl.dma_map_phys(d, HIGH, 100, TO, 0)
    assert in_pool(m, a) and a & 0xFFF == HIGH & 0xFFF
    assert impl.dma_max_mapping_size(d) == 128 * 2048 - 4096
    impl.dma_unmap_phys(d, a, 100, TO, 0)


def test_bounce_through_a_range_map_offset(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32),
                     dma_range_map=[(0, 0x4000_0000, GiB), (4 * GiB, 0x1_0000_0000, GiB)])
    m.mem_write(HIGH, b"ofs")
    a = impl.dma_map_phys(d, HIGH, 3, TO, 0)
    assert a != ERR and a - 0x4000_0000 >= m.swiotlb.start     # slot's bus address: phys + offset
    assert d.dma_read(a, 3) == b"ofs"
    impl.dma_unmap_phys(d, a, 3, TO, 0)
    assert m.swiotlb.total_used == 0


def test_non_coherent_bounce_cleans_the_slot_and_invalidates_on_unmap(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), coherent=False)
    a = impl.dma_map_phys(d, HIGH, 64, FROM, 0)
    assert d.stats["arch_sync_for_device"] == 1                # swiotlb_map's clean of the slot
    impl.dma_unmap_phys(d, a, 64, FROM, 0)
    assert d.stats["arch_sync_for_cpu"] == 1


def test_swiotlb_full_fails_the_mapping(impl):
    m = machine(impl, swiotlb=1 << 20)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    addrs = []
    for i in range(4):
        a = impl.dma_map_phys(d, 4 * GiB + i * (256 << 10), 256 << 10, TO, 0)
        assert a != ERR
        addrs.append(a)
    with pytest.warns(dma.SwiotlbFullWarning):
        assert impl.dma_map_phys(d, 4 * GiB + (1 << 20), 4096, TO, 0) == ERR
    assert impl.dma_mapping_error(d, ERR) == -12
    for a in addrs:
        impl.dma_unmap_phys(d, a, 256 << 10, TO, 0)
    assert m.swiotlb.total_used == 0


def test_without_swiotlb_an_unreachable_page_overflows(impl):
    m = machine(impl, swiotlb=False)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    with pytest.warns(dma.KernelWarning, match="overflow"):
        assert impl.dma_map_phys(d, HIGH, 8, TO, 0) == ERR
    assert impl.dma_max_mapping_size(d) == dma.SIZE_MAX


# ---- scatter-gather ---------------------------------------------------------------------------------

def test_map_sg_fills_every_entry_and_never_merges(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), coherent=False)
    sg = impl.ScatterList([(0x1000, 0x1000), (0x2000, 0x1000), (HIGH, 0x100)])
    m.mem_write(HIGH, b"hi")
    assert impl.dma_map_sg(d, sg, 3, TO) == 3
    segs = sg.dma_segments()
    assert segs[:2] == [(0x1000, 0x1000), (0x2000, 0x1000)]    # contiguous, still two segments
    assert in_pool(m, segs[2][0]) and segs[2][1] == 0x100
    assert d.dma_read(segs[2][0], 2) == b"hi"
    assert d.stats["arch_sync_for_device"] == 3
    impl.dma_sync_sg_for_cpu(d, sg, 3, TO)
    impl.dma_sync_sg_for_device(d, sg, 3, TO)
    assert (d.stats["arch_sync_for_cpu"], d.stats["arch_sync_for_device"]) == (3, 6)
    impl.dma_unmap_sg(d, sg, 3, TO)
    assert m.swiotlb.total_used == 0 and d.stats["arch_sync_for_cpu"] == 6


def test_sgtable_sets_nents_and_sync_sgtable_bounces(impl):
    m = machine(impl)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    sg = impl.ScatterList([(HIGH, 16), (0x3000, 16)])
    assert impl.dma_map_sgtable(d, sg, FROM, 0) == 0 and sg.nents == 2
    d.dma_write(sg[0].dma_address, b"0123456789abcdef")
    impl.dma_sync_sgtable_for_cpu(d, sg, FROM)
    assert m.mem_read(HIGH, 16) == b"0123456789abcdef"
    impl.dma_sync_sgtable_for_device(d, sg, FROM)
    impl.dma_unmap_sgtable(d, sg, FROM, 0)
    assert m.swiotlb.total_used == 0


def test_sg_failure_unwinds_with_skip_cpu_sync_and_returns_eio(impl):
    m = machine(impl, swiotlb=False)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32), coherent=False)
    sg = impl.ScatterList([(0x1000, 64), (0x2000, 64), (HIGH, 64)])
    with pytest.warns(dma.KernelWarning, match="DMA addr 0x0000000100001230\\+64 overflow"):
        assert impl.dma_map_sgtable(d, sg, FROM, 0) == -dma.EIO
    assert sg.nents == 3                                      # untouched on failure
    assert d.stats["arch_sync_for_device"] == 2               # two segments mapped ...
    assert d.stats["arch_sync_for_cpu"] == 0                  # ... and unmapped without a CPU sync
    assert impl.dma_map_sg(d, sg, 3, FROM) == 0               # dma_map_sg_attrs: 0 on any failure


def test_overflow_warns_once_per_copy_of_the_inline(impl):
    # dma_direct_map_phys() is a static inline: mapping.c (dma_map_phys) and direct.c
    # (dma_direct_map_sg) each have their own dev_WARN_ONCE flag.
    m = machine(impl, swiotlb=False)
    d = m.add_device("d", dma_mask=dma.DMA_BIT_MASK(32))
    with pytest.warns(dma.KernelWarning):
        impl.dma_map_phys(d, HIGH, 8, TO, 0)
    with pytest.warns(dma.KernelWarning):
        impl.dma_map_sg(d, impl.ScatterList([(HIGH, 8)]), 1, TO)
    impl.dma_map_phys(d, HIGH, 8, TO, 0)
    impl.dma_map_sg(d, impl.ScatterList([(HIGH, 8)]), 1, TO)
    assert len(m.warnings_log) == 2


def test_map_sg_of_zero_entries_is_an_unexpected_return(impl):
    m = machine(impl)
    d = m.add_device("d")
    sg = impl.ScatterList([(0x1000, 64)])
    with pytest.warns(dma.KernelWarning, match=r"ents != -EREMOTEIO\) \(ents 0\)"):
        assert impl.dma_map_sg(d, sg, 0, TO) == 0
    with pytest.raises(ValueError):
        impl.dma_map_sg(d, sg, 2, TO)                         # more than the list holds


def p2p_machine(impl, **switch):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=switch.pop("allow", False)),
                      **switch)
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    m.add_p2pmem(a, BAR, 1 << 20, bus_addr=BUS)
    return m, a, b


def test_p2p_bus_address_segments_are_marked_not_mapped(impl):
    m, a, b = p2p_machine(impl)
    sg = impl.ScatterList([(0x1000, 64), (BAR + 0x40, 64)])
    assert impl.dma_map_sg(b, sg, 2, BIDI) == 2
    assert (sg[0].dma_address, sg[0].dma_length) == (0x1000, 64)
    assert sg[1].dma_address == BUS + 0x40                    # pci_p2pdma_bus_addr_map()
    assert sg[1].dma_length == 64                             # "Fix missing sg_dma_len assignment" (v6.18)
    assert impl.sg_dma_is_bus_address(sg[1]) and not impl.sg_dma_is_bus_address(sg[0])
    m.mem_write(BAR + 0x40, b"peer")
    assert b.dma_read(BUS + 0x40, 4) == b"peer"               # routed by the switch to a's BAR
    impl.dma_unmap_sg(b, sg, 2, BIDI)
    assert not impl.sg_dma_is_bus_address(sg[1])


def test_p2p_through_the_host_bridge_maps_the_cpu_address(impl):
    m, a, b = p2p_machine(impl, allow=True, acs_redirect=True)
    sg = impl.ScatterList([(BAR, 64)])
    with pytest.warns(dma.KernelWarning, match="ACS redirect"):
        assert impl.dma_map_sg(b, sg, 1, TO) == 1
    assert (sg[0].dma_address, sg[0].dma_length) == (BAR, 64)
    assert not impl.sg_dma_is_bus_address(sg[0])
    impl.dma_unmap_sg(b, sg, 1, TO)


def test_p2p_not_supported_is_eremoteio_and_unwinds(impl):
    m, a, b = p2p_machine(impl, acs_redirect=True)
    b.dma_mask = dma.DMA_BIT_MASK(32)
    sg = impl.ScatterList([(HIGH, 64), (BAR, 64)])
    with pytest.warns(dma.KernelWarning):
        assert impl.dma_map_sgtable(b, sg, TO, 0) == -dma.EREMOTEIO
    assert m.swiotlb.total_used == 0                          # the bounced first entry was released
    assert impl.dma_map_sg(b, sg, 2, TO) == 0
