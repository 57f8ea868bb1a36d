"""drivers/iommu/dma-iommu.c through the public DMA API: IOVA policy, offsets, protections,
strict vs lazy (flush queue) unmaps, swiotlb bouncing for untrusted devices, scatter-gather
merging, coherent allocations, and core vs reference on the same operation streams."""

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmaphys as dma
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_MMIO,
    DMA_ATTR_PRIVILEGED,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuFault,
    KernelWarning,
)

GiB = 1 << 30
PAGE = 4096
MSI = [(0xFEE00000, 0x100000, "msi")]          # the x86 IOAPIC/MSI window (IOMMU_RESV_MSI)
RAM = 4 * GiB + 0x1000000                       # a page-aligned RAM address above 4 GiB


def setup(impl, *, lazy=False, cpus=1, fmt="vtd-ss", iommu_kw=None, dma_debug=False, **dev_kw):
    m = impl.Machine(cpus=cpus, dma_debug=dma_debug)
    kw = {"reserved_regions": MSI}
    kw.update(iommu_kw or {})
    iommu = m.add_iommu(fmt, strict=not lazy, **kw)
    dev = m.add_device("nvme0", iommu=iommu, domain_type="dma-fq" if lazy else "dma", **dev_kw)
    return m, dev


def cookie(dev):
    return dev.domain.iova_cookie


def map1(impl, dev, phys=RAM, size=PAGE, dir=DMA_BIDIRECTIONAL, attrs=0):
    return impl.dma_map_phys(dev, phys, size, dir, attrs)


def unmap1(impl, dev, addr, size=PAGE, dir=DMA_BIDIRECTIONAL, attrs=0):
    impl.dma_unmap_phys(dev, addr, size, dir, attrs)


# ---- IOVA placement -------------------------------------------------------------------------------
def test_worked_sequence_32bit_first_top_down_msi_skipped_rcache_reuse(impl):
    """kernel-dma-notes Part B §6, step by step."""
    m, dev = setup(impl)
    assert cookie(dev).pci_32bit_workaround(dev)
    assert map1(impl, dev, RAM + 0x123, PAGE - 0x123) == 0xFFFFF123   # keeps the sub-page offset
    addrs = [map1(impl, dev) for _ in range(0xFFFFE - 0xFEF00 + 1)]
    assert addrs[0] == 0xFFFFE000 and addrs[-1] == 0xFEF00000
    assert addrs == [a << 12 for a in range(0xFFFFE, 0xFEEFF, -1)]
    assert map1(impl, dev) == 0xFEDFF000                       # the MSI window is never handed out
    assert map1(impl, dev, size=3 * PAGE) == 0xFEDF8000        # 3 pages → 4, 4-aligned
    unmap1(impl, dev, 0xFFFFF123, PAGE - 0x123)
    assert map1(impl, dev) == 0xFFFFF000                       # strict: straight back through the rcache


def test_size_rounding_and_alignment(impl):
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(32))
    a = map1(impl, dev)
    assert a == 0xFFFFF000
    b = map1(impl, dev, size=5 * PAGE)                          # 5 → 8 pages, 8-aligned
    assert b == 0xFFFF0000 and b % (8 * PAGE) == 0
    c = map1(impl, dev, size=33 * PAGE)                         # ≥ 32 pages: not rounded, 64-aligned
    assert c % (64 * PAGE) == 0 and c + 33 * PAGE <= b
    assert impl.iommu_iova_to_phys(dev.domain, c + 32 * PAGE) == RAM + 32 * PAGE


def test_platform_device_allocates_from_the_top_of_its_mask(impl):
    m, dev = setup(impl, pci=False)
    assert not cookie(dev).pci_32bit_workaround(dev)
    top = dev.domain.aperture_end
    assert map1(impl, dev) == (top & ~0xFFF)                    # vtd-ss 48-bit: 0xFFFFFFFFF000
    m2, dev2 = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(39))
    assert map1(impl, dev2) == (1 << 39) - PAGE


def test_forcedac_skips_the_32bit_attempt(impl):
    m, dev = setup(impl, iommu_kw={"forcedac": True})
    assert not cookie(dev).pci_32bit_workaround(dev)
    assert map1(impl, dev) == (dev.domain.aperture_end & ~0xFFF)


def test_bus_dma_limit_and_mask_limit_the_iova(impl):
    m, dev = setup(impl, pci=False, bus_dma_limit=0x3FFFFFFF)
    assert map1(impl, dev) == 0x3FFFF000


def test_pci_32bit_workaround_falls_back_for_good(impl, caplog):
    # everything below 4 GiB but pfn 0xFFFFF is reserved
    resv = [(0x1000, 0xFFFFE000, "reserved")]
    m, dev = setup(impl, iommu_kw={"reserved_regions": resv})
    first = map1(impl, dev)
    assert first == 0xFFFFF000
    with caplog.at_level(logging.INFO, logger="dmaphys"):
        second = map1(impl, dev)
    top = dev.domain.aperture_end & ~0xFFF
    assert second == top
    assert "nvme0: Using 48-bit DMA addresses" in caplog.text
    assert not cookie(dev).pci_32bit_workaround(dev)
    unmap1(impl, dev, first)
    # no 32-bit attempt any more, but the rcache (keyed by size only) hands back the freed pfn
    assert map1(impl, dev) == 0xFFFFF000
    assert map1(impl, dev) == top - PAGE


def test_reserved_regions_sw_msi_is_not_reserved_msi_is_identity_listed(impl):
    resv = [(0xFEE00000, 0x2000, "msi"), (0xFFF0000, 0x1000, "sw_msi"), (0xFFE0000, 0x1000, "direct")]
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(28), iommu_kw={"reserved_regions": resv})
    assert cookie(dev).msi_page_list == [(0xFEE01000, 0xFEE01000), (0xFEE00000, 0xFEE00000)]
    addrs = [map1(impl, dev) for _ in range(32)]
    assert addrs[0] == 0xFFFF000 and 0xFFF0000 in addrs         # SW_MSI left to the allocator
    assert 0xFFE0000 not in addrs and addrs[-1] == 0xFFDF000    # DIRECT reserved


def test_dma_range_map_holes_are_reserved_for_pci_devices(impl):
    # bridge dma-ranges: bus [0x80000000, +1 GiB) only; the hole below and the rest above are reserved
    m, dev = setup(impl, dma_range_map=[(0x80000000, 0x80000000, GiB)], iommu_kw={"reserved_regions": []})
    # 32-bit attempt: [0xC0000000, ~0] is reserved → highest free pfn is 0xBFFFF
    assert map1(impl, dev) == 0xBFFFF000


def test_dma_range_outside_aperture_refuses_the_dma_domain(impl):
    m = impl.Machine(cpus=1)
    iommu = m.add_iommu("vtd-ss", strict=True)
    with pytest.warns(KernelWarning) as rec:
        dev = m.add_device("d", iommu=iommu, dma_range_map=[(0, 1 << 60, GiB)])
    assert [str(w.message) for w in rec] == [
        "specified DMA range outside IOMMU capability",
        "Failed to set up IOMMU for device d; retaining platform DMA ops"]
    assert not dev.dma_iommu


# ---- offsets, protections, device accesses -------------------------------------------------------
def test_sub_granule_offset_and_two_granules(impl):
    m, dev = setup(impl, pci=False)
    a = map1(impl, dev, RAM + 0xF80, 0x100, DMA_TO_DEVICE)
    assert a & 0xFFF == 0xF80
    assert impl.iommu_iova_to_phys(dev.domain, a) == RAM + 0xF80
    assert impl.iommu_iova_to_phys(dev.domain, a + 0x80) == RAM + 0x1000   # second granule mapped
    m.mem_write(RAM + 0xF80, bytes(range(256)))
    assert dev.dma_read(a, 0x100) == bytes(range(256))
    unmap1(impl, dev, a, 0x100, DMA_TO_DEVICE)
    assert impl.iommu_iova_to_phys(dev.domain, a) == 0


@pytest.mark.parametrize("fmt", ["arm-lpae-s1-4k", "vtd-ss"])
@pytest.mark.parametrize("dir,attrs,coherent,want", [
    (DMA_BIDIRECTIONAL, 0, True, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE),
    (DMA_TO_DEVICE, 0, True, IOMMU_READ | IOMMU_CACHE),
    (DMA_FROM_DEVICE, 0, True, IOMMU_WRITE | IOMMU_CACHE),
    (DMA_TO_DEVICE, 0, False, IOMMU_READ),
    (DMA_TO_DEVICE, DMA_ATTR_PRIVILEGED, True, IOMMU_READ | IOMMU_CACHE | IOMMU_PRIV),
    (DMA_BIDIRECTIONAL, DMA_ATTR_MMIO, True, IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO),
])
def test_prot_bits(impl, fmt, dir, attrs, coherent, want):
    """dma_info_to_prot(): LPAE encodes every bit (AP, MAIR index); VT-d second stage only R/W."""
    m, dev = setup(impl, pci=False, coherent=coherent, fmt=fmt)
    phys = RAM
    if attrs & DMA_ATTR_MMIO:
        phys = 0xE0000000
        m.add_mmio(phys, 0x100000, "bar0")
    a = map1(impl, dev, phys, PAGE, dir, attrs)
    got_phys, prot, leaf = dev.domain.pgtable.translate(a)
    assert (got_phys, leaf) == (phys, PAGE)
    if fmt == "vtd-ss":
        want &= IOMMU_READ | IOMMU_WRITE
    elif want & IOMMU_WRITE:
        want |= IOMMU_READ              # stage-1 AP bits cannot say write-only: RW
    assert prot == want


def test_direction_is_enforced_by_the_iommu(impl):
    m, dev = setup(impl, pci=False)
    a = map1(impl, dev, RAM, PAGE, DMA_TO_DEVICE)
    dev.dma_read(a, 16)
    with pytest.raises(IommuFault):
        dev.dma_write(a, b"x")
    b = map1(impl, dev, RAM + PAGE, PAGE, DMA_FROM_DEVICE)
    dev.dma_write(b, b"hello")
    assert m.mem_read(RAM + PAGE, 5) == b"hello"
    with pytest.raises(IommuFault):
        dev.dma_read(b, 1)


def test_unsupported_alignment_constraint(impl):
    m, dev = setup(impl, pci=False, min_align_mask=0x1FFF)
    with pytest.warns(KernelWarning, match="Unsupported alignment constraint"):
        assert map1(impl, dev) == DMA_MAPPING_ERROR


def test_unmap_of_an_unmapped_handle_warns_and_does_nothing(impl):
    m, dev = setup(impl, pci=False)
    a = map1(impl, dev)
    with pytest.warns(KernelWarning, match=r"WARN_ON\(!phys\)"):
        unmap1(impl, dev, a - 0x10000000)
    assert impl.iommu_iova_to_phys(dev.domain, a) == RAM


def test_non_coherent_device_gets_arch_syncs(impl):
    m, dev = setup(impl, pci=False, coherent=False)
    a = map1(impl, dev, RAM, PAGE, DMA_TO_DEVICE)
    assert dev.arch_sync_for_device == 1
    impl.dma_sync_single_for_cpu(dev, a, PAGE, DMA_TO_DEVICE)
    impl.dma_sync_single_for_device(dev, a, PAGE, DMA_TO_DEVICE)
    assert (dev.arch_sync_for_cpu, dev.arch_sync_for_device) == (1, 2)
    unmap1(impl, dev, a, PAGE, DMA_TO_DEVICE)
    assert dev.arch_sync_for_cpu == 2
    b = map1(impl, dev, RAM, PAGE, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    unmap1(impl, dev, b, PAGE, DMA_TO_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    assert (dev.arch_sync_for_cpu, dev.arch_sync_for_device) == (2, 2)


# ---- strict vs lazy --------------------------------------------------------------------------------
def test_strict_unmap_faults_at_once(impl):
    m, dev = setup(impl, pci=False)
    a = map1(impl, dev)
    m.mem_write(RAM, b"secret")
    assert dev.dma_read(a, 6) == b"secret"                      # the IOTLB now caches a
    unmap1(impl, dev, a)
    with pytest.raises(IommuFault):
        dev.dma_read(a, 6)
    assert map1(impl, dev) == a                                 # reused at once


def test_lazy_unmap_keeps_a_stale_iotlb_entry_until_the_timeout(impl):
    m, dev = setup(impl, pci=False, lazy=True)
    c = cookie(dev)
    assert dev.domain.type == "dma-fq" and c.fq_domain is dev.domain
    a = map1(impl, dev)
    m.mem_write(RAM, b"secret")
    assert dev.dma_read(a, 6) == b"secret"
    unmap1(impl, dev, a)
    assert impl.iommu_iova_to_phys(dev.domain, a) == 0          # the PTE is gone...
    assert dev.dma_read(a, 6) == b"secret"                      # ...but the IOTLB still translates
    assert c.fq_timer_on and c.fq_flush_start_cnt == 0
    assert map1(impl, dev) != a                                 # parked IOVA is not reused
    m.advance(9_999_999)
    assert c.fq_flush_finish_cnt == 0
    m.advance(1)                                                # 10 ms: fq_flush_timeout
    assert (c.fq_flush_start_cnt, c.fq_flush_finish_cnt, c.fq_timer_on) == (1, 1, False)
    with pytest.raises(IommuFault):
        dev.dma_read(a, 6)
    assert map1(impl, dev) == a                                 # released to the rcache


def test_fq_timer_is_armed_once_and_not_pushed_back(impl):
    m, dev = setup(impl, pci=False, lazy=True)
    c = cookie(dev)
    a, b = map1(impl, dev), map1(impl, dev)
    unmap1(impl, dev, a)
    m.advance(6_000_000)
    unmap1(impl, dev, b)
    assert [len(q) for q in c.flush_queues()] == [2]
    m.advance(4_000_000)                                        # 10 ms after the first unmap
    assert c.fq_flush_finish_cnt == 1
    assert [len(q) for q in c.flush_queues()] == [0]            # both released by the one timeout


def test_full_per_cpu_queue_flushes_synchronously(impl):
    m, dev = setup(impl, pci=False, lazy=True)
    c = cookie(dev)
    assert (c.fq_size, c.fq_timeout) == (256, 10)
    addrs = [map1(impl, dev) for _ in range(256)]
    m.mem_write(RAM, b"old")
    assert dev.dma_read(addrs[0], 3) == b"old"
    for a in addrs[:255]:
        unmap1(impl, dev, a)
    assert c.fq_flush_start_cnt == 0 and len(c.flush_queues()[0]) == 255   # fq_size - 1 usable
    assert dev.dma_read(addrs[0], 3) == b"old"                  # still a stale IOTLB hit
    unmap1(impl, dev, addrs[255])
    with pytest.raises(IommuFault):                             # the synchronous flush_iotlb_all
        dev.dma_read(addrs[0], 3)
    assert (c.fq_flush_start_cnt, c.fq_flush_finish_cnt) == (1, 1)
    q = c.flush_queues()[0]
    assert len(q) == 1 and q.entries_list()[0][2] == 1          # the new entry carries counter 1
    assert map1(impl, dev) == addrs[254]                        # released ones are in the rcache


def test_per_cpu_queues_and_the_timer_frees_all_of_them(impl):
    m, dev = setup(impl, pci=False, lazy=True, cpus=2)
    c = cookie(dev)
    a = map1(impl, dev)
    m.cpu = 1
    b = map1(impl, dev)
    unmap1(impl, dev, b)
    m.cpu = 0
    unmap1(impl, dev, a)
    assert [len(q) for q in c.flush_queues()] == [1, 1]
    m.advance(10_000_000)
    assert [len(q) for q in c.flush_queues()] == [0, 0]


def test_a_full_queue_flush_does_not_reclaim_other_cpus_queues(impl):
    m, dev = setup(impl, pci=False, lazy=True, cpus=2)
    c = cookie(dev)
    m.cpu = 1
    other = map1(impl, dev)
    unmap1(impl, dev, other)
    m.cpu = 0
    addrs = [map1(impl, dev) for _ in range(256)]
    for a in addrs:
        unmap1(impl, dev, a)                                    # the 256th flushes
    assert c.fq_flush_finish_cnt == 1
    assert [len(q) for q in c.flush_queues()] == [1, 1]         # CPU 1's entry is covered but parked
    m.cpu = 1
    unmap1(impl, dev, map1(impl, dev))                          # its next queue_iova reclaims it
    assert [q.entries_list()[0][0] for q in c.flush_queues()][1] != other >> 12
    assert len(c.flush_queues()[1]) == 1


def test_shadow_on_flush_uses_one_big_queue(impl):
    m, dev = setup(impl, pci=False, lazy=True, cpus=4, iommu_kw={"shadow_on_flush": True})
    c = cookie(dev)
    assert (c.fq_size, c.fq_timeout, len(c.flush_queues())) == (32768, 1000, 1)
    unmap1(impl, dev, map1(impl, dev))
    m.advance(999_999_999)
    assert c.fq_flush_finish_cnt == 0
    m.advance(1)
    assert c.fq_flush_finish_cnt == 1


def test_lazy_table_pages_are_freed_only_after_the_flush(impl):
    m, dev = setup(impl, pci=False, lazy=True)
    pt = dev.domain.pgtable
    # 2 MiB of 4 KiB PTEs (phys not 2 MiB-aligned) at a 2 MiB-aligned IOVA: unmapping it empties
    # a whole leaf table
    a = map1(impl, dev, RAM + PAGE, 512 * PAGE)
    assert a % (512 * PAGE) == 0
    grown = pt.table_pages
    unmap1(impl, dev, a, 512 * PAGE)
    held = cookie(dev).flush_queues()[0].entries_list()[0][3]
    assert held >= 1
    assert pt.table_pages == grown                             # emptied tables wait in the queue
    m.advance(10_000_000)
    assert pt.table_pages == grown - held


# ---- untrusted devices: swiotlb bouncing --------------------------------------------------------
def test_untrusted_unaligned_buffer_is_bounced_with_zeroed_padding(impl):
    # min_align_mask covering the granule (as NVMe sets it): the bounce slot keeps the offset
    m, dev = setup(impl, untrusted=True, min_align_mask=0xFFF)
    m.mem_write(RAM, b"\xAA" * PAGE)
    m.mem_write(RAM + 0x100, b"payload!")
    a = map1(impl, dev, RAM + 0x100, 8, DMA_BIDIRECTIONAL)
    assert a & 0xFFF == 0x100
    bounce = impl.iommu_iova_to_phys(dev.domain, a)
    assert bounce != RAM + 0x100 and bounce & 0xFFF == 0x100
    assert dev.dma_read(a, 8) == b"payload!"
    assert dev.dma_read(a - 0x100, 0x100) == bytes(0x100)       # pre-padding zeroed
    assert dev.dma_read(a + 8, PAGE - 0x108) == bytes(PAGE - 0x108)   # post-padding zeroed
    dev.dma_write(a, b"results!")
    assert m.mem_read(RAM + 0x100, 8) == b"payload!"            # not yet copied back
    unmap1(impl, dev, a, 8, DMA_BIDIRECTIONAL)
    assert m.mem_read(RAM + 0x100, 8) == b"results!"
    assert m.mem_read(RAM + 0x108, 8) == b"\xAA" * 8


def test_untrusted_bounce_without_min_align_mask_starts_the_granule(impl):
    m, dev = setup(impl, untrusted=True)
    m.mem_write(RAM + 0x100, b"payload!")
    a = map1(impl, dev, RAM + 0x100, 8, DMA_TO_DEVICE)
    assert a & 0xFFF == 0
    assert dev.dma_read(a, 16) == b"payload!" + bytes(8)


def test_untrusted_aligned_buffer_is_mapped_in_place(impl):
    m, dev = setup(impl, untrusted=True)
    a = map1(impl, dev, RAM, 2 * PAGE)
    assert impl.iommu_iova_to_phys(dev.domain, a) == RAM


def test_untrusted_mmio_is_never_bounced(impl):
    m, dev = setup(impl, untrusted=True)
    m.add_mmio(0xE0000000, 0x100000, "bar0")
    assert map1(impl, dev, 0xE0000010, 16, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO) == DMA_MAPPING_ERROR
    a = map1(impl, dev, 0xE0000000, PAGE, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO)
    assert impl.iommu_iova_to_phys(dev.domain, a) == 0xE0000000


def test_untrusted_max_mapping_size_is_swiotlbs(impl):
    m, dev = setup(impl, untrusted=True)
    m2, dev2 = setup(impl)
    assert impl.dma_max_mapping_size(dev) == 256 * 1024
    assert impl.dma_max_mapping_size(dev2) == dma.SIZE_MAX


# ---- scatter-gather --------------------------------------------------------------------------------
def test_sg_granule_contiguous_entries_merge(impl):
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(32))
    sgl = impl.ScatterList([(RAM + 0x200, PAGE - 0x200), (RAM + 5 * PAGE, 2 * PAGE), (RAM + 9 * PAGE, 100)])
    n = impl.dma_map_sg_attrs(dev, sgl, 3, DMA_BIDIRECTIONAL, 0)
    assert n == 1
    iova = sgl[0].dma_address
    assert iova & 0xFFF == 0x200 and sgl[0].dma_length == PAGE - 0x200 + 2 * PAGE + 100
    assert [(s.dma_address, s.dma_length) for s in sgl][1:] == [(DMA_MAPPING_ERROR, 0)] * 2
    assert [(s.phys, s.length) for s in sgl] == [(RAM + 0x200, PAGE - 0x200), (RAM + 5 * PAGE, 2 * PAGE),
                                                 (RAM + 9 * PAGE, 100)]
    assert impl.iommu_iova_to_phys(dev.domain, iova + PAGE - 0x200) == RAM + 5 * PAGE
    assert impl.iommu_iova_to_phys(dev.domain, iova + 3 * PAGE - 0x200) == RAM + 9 * PAGE
    impl.dma_unmap_sg_attrs(dev, sgl, 3, DMA_BIDIRECTIONAL, 0)
    assert impl.iommu_iova_to_phys(dev.domain, iova) == 0


def test_sg_offset_or_short_entry_starts_a_new_segment(impl):
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(32))
    # entry 1 ends mid-granule → entry 2 cannot merge; entry 3 starts at an offset → new segment
    sgl = impl.ScatterList([(RAM, 0x800), (RAM + 2 * PAGE, PAGE), (RAM + 4 * PAGE + 0x10, 0x20)])
    assert impl.dma_map_sg_attrs(dev, sgl, 3, DMA_TO_DEVICE, 0) == 3
    base = sgl[0].dma_address
    assert [(s.dma_address, s.dma_length) for s in sgl] == [
        (base, 0x800), (base + PAGE, PAGE), (base + 2 * PAGE + 0x10, 0x20)]


def test_sg_max_segment_size_splits(impl):
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(32), max_segment_size=2 * PAGE)
    sgl = impl.ScatterList([(RAM + i * 2 * PAGE, PAGE) for i in range(5)])
    assert impl.dma_map_sg_attrs(dev, sgl, 5, DMA_TO_DEVICE, 0) == 3
    base = sgl[0].dma_address
    assert sgl.dma_segments()[:3] == [(base, 2 * PAGE), (base + 2 * PAGE, 2 * PAGE), (base + 4 * PAGE, PAGE)]


def test_sg_segment_boundary_padding(impl):
    # 16 KiB boundary: a 12 KiB entry after 8 KiB is pushed to the next boundary
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(32), seg_boundary_mask=0x3FFF,
                   max_segment_size=1 << 20)
    sgl = impl.ScatterList([(RAM, 2 * PAGE), (RAM + 8 * PAGE, 3 * PAGE)])
    assert impl.dma_map_sg_attrs(dev, sgl, 2, DMA_TO_DEVICE, 0) == 2
    base = sgl[0].dma_address
    assert base % 0x4000 == 0
    assert sgl.dma_segments() == [(base, 2 * PAGE), (base + 0x4000, 3 * PAGE)]
    # the padding maps the pages following the first entry (iommu_map_sg maps prev->length)
    assert impl.iommu_iova_to_phys(dev.domain, base + 2 * PAGE) == RAM + 2 * PAGE


def test_sg_untrusted_maps_each_entry_through_map_phys(impl):
    m, dev = setup(impl, untrusted=True)
    sgl = impl.ScatterList([(RAM + 0x10, 0x100), (RAM + PAGE, PAGE)])
    assert impl.dma_map_sg_attrs(dev, sgl, 2, DMA_BIDIRECTIONAL, 0) == 2
    assert impl.sg_dma_is_swiotlb(sgl[0])
    assert impl.iommu_iova_to_phys(dev.domain, sgl[1].dma_address) == RAM + PAGE   # aligned: in place
    assert impl.iommu_iova_to_phys(dev.domain, sgl[0].dma_address) != RAM + 0x10   # bounced
    impl.dma_unmap_sg_attrs(dev, sgl, 2, DMA_BIDIRECTIONAL, 0)
    assert impl.iommu_iova_to_phys(dev.domain, sgl[1].dma_address) == 0


def _p2p_machine(impl, acs_redirect=False):
    m = impl.Machine(cpus=1, dma_debug=False)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"), acs_redirect=acs_redirect)
    iommu = m.add_iommu("vtd-ss", strict=True, reserved_regions=MSI)
    gpu = m.add_device("gpu0", parent=sw)
    nvme = m.add_device("nvme0", parent=sw, iommu=iommu, dma_mask=dma.DMA_BIT_MASK(32))
    m.add_p2pmem(gpu, 0xE0000000, 1 << 20, bus_addr=0x8_0000_0000)
    return m, nvme


def test_sg_p2p_bus_address_entries_take_no_iova(impl):
    m, dev = _p2p_machine(impl)
    sgl = impl.ScatterList([(RAM, PAGE), (0xE0001000, 2 * PAGE), (RAM + 2 * PAGE, PAGE)])
    assert impl.dma_map_sg_attrs(dev, sgl, 3, DMA_BIDIRECTIONAL, 0) == 3
    iova = sgl[0].dma_address
    assert iova == 0xFFFFE000                                   # two granules of IOVA, not four
    assert impl.sg_dma_is_bus_address(sgl[1]) and not impl.sg_dma_is_bus_address(sgl[0])
    # the bus address is the BAR's; its length is copied from the list's FIRST entry (sg->length)
    assert sgl.dma_segments() == [(iova, PAGE), (0x8_0000_1000, PAGE), (iova + PAGE, PAGE)]
    assert impl.iommu_iova_to_phys(dev.domain, iova + PAGE) == RAM + 2 * PAGE
    impl.dma_unmap_sg_attrs(dev, sgl, 3, DMA_BIDIRECTIONAL, 0)
    assert not impl.sg_dma_is_bus_address(sgl[1])
    assert impl.iommu_iova_to_phys(dev.domain, iova) == 0
    assert impl.iommu_iova_to_phys(dev.domain, iova + PAGE) == 0


def test_sg_p2p_not_supported_is_eremoteio_and_restores_the_list(impl):
    m, dev = _p2p_machine(impl, acs_redirect=True)
    sgl = impl.ScatterList([(RAM + 0x10, PAGE), (0xE0001000, PAGE)])
    with pytest.warns(KernelWarning):                           # p2pdma reports the ACS redirect
        assert impl.dma_map_sgtable(dev, sgl, DMA_TO_DEVICE, 0) == -dma.EREMOTEIO
    assert [(s.phys, s.length, s.dma_address, s.dma_length) for s in sgl] == [
        (RAM + 0x10, PAGE, DMA_MAPPING_ERROR, 0), (0xE0001000, PAGE, DMA_MAPPING_ERROR, 0)]
    assert map1(impl, dev) == 0xFFFFF000                        # the IOVA space was untouched


# ---- coherent allocations --------------------------------------------------------------------------
def test_dma_alloc_coherent_through_the_iommu(impl):
    m, dev = setup(impl, pci=False, coherent_dma_mask=dma.DMA_BIT_MASK(32))
    cpu_addr, handle = impl.dma_alloc_coherent(dev, 3 * PAGE)
    assert handle == 0xFFFFC000                                 # 3 pages → a 4-page IOVA
    dev.dma_write(handle + 2 * PAGE, b"ok")
    assert m.mem_read(cpu_addr + 2 * PAGE, 2) == b"ok"
    _p, prot, _ = dev.domain.pgtable.translate(handle)
    assert prot & (IOMMU_READ | IOMMU_WRITE) == IOMMU_READ | IOMMU_WRITE
    impl.dma_free_coherent(dev, 3 * PAGE, cpu_addr, handle)
    assert impl.iommu_iova_to_phys(dev.domain, handle) == 0


def test_a_careful_driver_passes_dma_debug(impl):
    """With dma-debug on, checked maps, syncs and unmaps through the IOMMU report nothing."""
    m, dev = setup(impl, dma_debug=True, lazy=True)
    addrs = []
    for i in range(8):
        a = map1(impl, dev, RAM + i * PAGE, PAGE, DMA_FROM_DEVICE)
        assert impl.dma_mapping_error(dev, a) == 0
        addrs.append(a)
    for i, a in enumerate(addrs):
        dev.dma_write(a, bytes([i]) * 16)
        impl.dma_sync_single_for_cpu(dev, a, PAGE, DMA_FROM_DEVICE)
        assert m.mem_read(RAM + i * PAGE, 16) == bytes([i]) * 16
        unmap1(impl, dev, a, PAGE, DMA_FROM_DEVICE)
    m.advance(10_000_000)
    assert m.warnings_log == []


# ---- core vs reference ----------------------------------------------------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["map", "unmap", "advance", "cpu", "read"]),
                         st.integers(0, 63), st.integers(1, 3 * PAGE), st.integers(0, 2)),
               min_size=1, max_size=60)


def _run_stream(impl, ops, lazy, untrusted):
    m, dev = setup(impl, lazy=lazy, cpus=2, untrusted=untrusted)
    live, log = [], []
    for op, k, size, d in ops:
        if op == "map":
            phys = RAM + k * 0x1234
            a = map1(impl, dev, phys, size, d)
            log.append(a)
            if a != DMA_MAPPING_ERROR:
                live.append((a, size, d))
        elif op == "unmap" and live:
            a, size, d = live.pop(k % len(live))
            unmap1(impl, dev, a, size, d)
        elif op == "advance":
            m.advance(k * 400_000)
        elif op == "cpu":
            m.cpu = k % 2
        elif op == "read" and live:
            a, size, d = live[k % len(live)]
            if d != DMA_FROM_DEVICE:
                log.append(dev.dma_read(a, min(size, 64)))
    return log, cookie(dev).get_state(), dev.domain.pgtable.get_state()["mappings"]


@settings(max_examples=30)
@given(ops=OPS, lazy=st.booleans(), untrusted=st.booleans())
def test_core_matches_reference(ops, lazy, untrusted):
    assert _run_stream(dma, ops, lazy, untrusted) == _run_stream(reference, ops, lazy, untrusted)


def test_api_surface_matches_the_reference():
    import inspect

    names = ["DmaIovaState", "dma_iova_try_alloc", "dma_iova_free", "dma_iova_link", "dma_iova_sync",
             "dma_iova_unlink", "dma_iova_destroy", "dma_use_iova", "dma_iova_size"]
    for n in names + ["IommuDmaCookie", "IovaFq"]:
        assert n in dma.__all__ and n in reference.__all__
    for n in names[1:]:                                         # functions (the class has no signature)
        core_params = list(inspect.signature(getattr(dma, n)).parameters)
        ref_params = list(inspect.signature(getattr(reference, n)).parameters)
        assert core_params == ref_params, n
