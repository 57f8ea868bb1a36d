"""The two-step IOVA API (dma_iova_try_alloc / link / sync / unlink / destroy / free), the way the
VFIO dma-buf and NVMe/RDMA users drive it: allocate once, link many ranges, one IOTLB sync,
unlink or destroy; its failure and fallback paths; core vs reference on random streams."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys as dma
import dmaphys.reference as reference
from dmaphys import (
    DMA_ATTR_MMIO,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_IOVA_USE_SWIOTLB,
    DMA_MAPPING_ERROR,
    DMA_NONE,
    DMA_TO_DEVICE,
    EINVAL,
    EIO,
    IommuFault,
    KernelBug,
    KernelWarning,
)

PAGE = 4096
RAM = (4 << 30) + 0x1000000
MSI = [(0xFEE00000, 0x100000, "msi")]


def setup(impl, *, lazy=False, cpus=1, iommu_kw=None, dma_debug=False, **dev_kw):
    m = impl.Machine(cpus=cpus, dma_debug=dma_debug)
    kw = {"reserved_regions": MSI}
    kw.update(iommu_kw or {})
    iommu = m.add_iommu("vtd-ss", strict=not lazy, **kw)
    dev = m.add_device("nic0", iommu=iommu, domain_type="dma-fq" if lazy else "dma", **dev_kw)
    return m, dev


def to_phys(impl, dev, iova):
    return impl.iommu_iova_to_phys(dev.domain, iova)


# ---- dma_iova_try_alloc -----------------------------------------------------------------------
def test_try_alloc_is_false_for_dma_direct_and_identity_devices(impl):
    m = impl.Machine(cpus=1)
    direct = m.add_device("direct0")
    iommu = m.add_iommu("vtd-ss", strict=True)
    ident = m.add_device("ident0", iommu=iommu, domain_type="identity")
    for dev in (direct, ident):
        state = impl.DmaIovaState(0x1234, 99)
        assert impl.dma_iova_try_alloc(dev, state, RAM, PAGE) is False
        assert (state.addr, state.size, impl.dma_use_iova(state)) == (0, 0, False)   # zeroed first
        # the caller falls back to the streaming API
        a = impl.dma_map_phys(dev, RAM, PAGE, DMA_TO_DEVICE, 0)
        assert impl.dma_mapping_error(dev, a) == 0 and a == RAM
        impl.dma_unmap_phys(dev, a, PAGE, DMA_TO_DEVICE, 0)


def test_try_alloc_keeps_the_offset_and_uses_the_map_allocator(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, RAM + 0x200, 3 * PAGE)
    # iova_align(3 pages + 0x200) = 4 pages → 4-aligned, 32-bit first like a single map
    assert state.addr == 0xFFFFC200
    assert impl.dma_iova_size(state) == 3 * PAGE == state.size
    assert impl.dma_use_iova(state) and state.__size == 3 * PAGE
    # nothing is mapped yet
    assert to_phys(impl, dev, 0xFFFFC000) == 0
    assert impl.dma_map_phys(dev, RAM, PAGE, DMA_TO_DEVICE, 0) == 0xFFFFB000


def test_try_alloc_warns_on_zero_and_on_the_swiotlb_bit(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    with pytest.warns(KernelWarning, match=r"WARN_ON_ONCE\(!size\)"):
        assert impl.dma_iova_try_alloc(dev, state, 0, 0) is False
    with pytest.warns(KernelWarning, match="DMA_IOVA_USE_SWIOTLB"):
        assert impl.dma_iova_try_alloc(dev, state, 0, DMA_IOVA_USE_SWIOTLB | PAGE) is False
    assert not impl.dma_use_iova(state)


def test_try_alloc_fails_when_the_iova_space_is_exhausted(impl):
    m, dev = setup(impl, pci=False, dma_mask=dma.DMA_BIT_MASK(20), iommu_kw={"reserved_regions": []})
    # pfns 1..0xFF: two 64-page ranges fit ([0xC0, 0xFF], [0x80, 0xBF]); a 128-aligned 128 does not
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 64 * PAGE) and state.addr == 0xC0000
    assert impl.dma_iova_try_alloc(dev, impl.DmaIovaState(), 0, 64 * PAGE)
    assert impl.dma_iova_try_alloc(dev, state, 0, 128 * PAGE) is False
    assert state.addr == 0 and not impl.dma_use_iova(state)


# ---- link many, sync once ------------------------------------------------------------------------
def test_link_many_ranges_one_sync_then_destroy(impl):
    """The VFIO dma-buf loop: link every phys range at growing offsets, then one dma_iova_sync."""
    m, dev = setup(impl)
    ranges = [(RAM, 2 * PAGE), (RAM + 10 * PAGE, PAGE), (RAM + 20 * PAGE, 3 * PAGE)]
    total = sum(n for _, n in ranges)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, total)
    mapped = 0
    for i, (phys, n) in enumerate(ranges):
        m.mem_write(phys, bytes([i + 1]) * n)
        assert impl.dma_iova_link(dev, state, phys, mapped, n, DMA_BIDIRECTIONAL, 0) == 0
        mapped += n
    assert impl.dma_iova_sync(dev, state, 0, mapped) == 0
    assert dev.dma_read(state.addr, total) == b"\x01" * 2 * PAGE + b"\x02" * PAGE + b"\x03" * 3 * PAGE
    assert to_phys(impl, dev, state.addr + 3 * PAGE + 5) == RAM + 20 * PAGE + 5
    impl.dma_iova_destroy(dev, state, mapped, DMA_BIDIRECTIONAL, 0)
    with pytest.raises(IommuFault):
        dev.dma_read(state.addr, 1)
    # strict: the whole IOVA space went straight back through the rcache
    again = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, again, 0, total) and again.addr == state.addr


def test_links_need_no_iotlb_work_and_dma_iova_sync_is_one_range_sync(impl):
    """On a caching-mode (virtual) VT-d every iommu_sync_map() invalidates the range it maps:
    dma_map_phys pays that per buffer, the two-step API once for the whole state."""
    m, dev = setup(impl, iommu_kw={"caching_mode": True})
    tlb = dev.domain.iommu.iotlb
    before = tlb.invalidations
    for i in range(4):
        impl.dma_map_phys(dev, RAM + i * PAGE, PAGE, DMA_TO_DEVICE, 0)
    assert tlb.invalidations == before + 4
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 8 * PAGE)
    for i in range(8):
        assert impl.dma_iova_link(dev, state, RAM + 16 * i * PAGE, i * PAGE, PAGE, DMA_TO_DEVICE, 0) == 0
    assert tlb.invalidations == before + 4
    assert impl.dma_iova_sync(dev, state, 0, 8 * PAGE) == 0
    assert tlb.invalidations == before + 5


def test_link_unaligned_phys_only_at_offset_zero(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, RAM + 0x80, 2 * PAGE)
    with pytest.warns(KernelWarning, match=r"iova_start_pad && offset > 0"):
        assert impl.dma_iova_link(dev, state, RAM + 0x80, PAGE, PAGE, DMA_TO_DEVICE, 0) == -EIO
    assert impl.dma_iova_link(dev, state, RAM + 0x80, 0, 2 * PAGE, DMA_TO_DEVICE, 0) == 0
    assert to_phys(impl, dev, state.addr) == RAM + 0x80
    assert to_phys(impl, dev, state.addr + 2 * PAGE - 1) == RAM + 0x80 + 2 * PAGE - 1


def test_link_with_an_offset_that_differs_from_try_alloc_fails_in_iommu_map(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 2 * PAGE)
    # a page-aligned phys linked at a non-granule offset: iova unaligned → iommu_map -EINVAL
    assert impl.dma_iova_link(dev, state, RAM, 0x10, PAGE, DMA_TO_DEVICE, 0) == -EINVAL


def test_unlink_keeps_the_iova_space_and_allows_relinking(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 3 * PAGE)
    for i in range(3):
        assert impl.dma_iova_link(dev, state, RAM + i * 8 * PAGE, i * PAGE, PAGE, DMA_TO_DEVICE, 0) == 0
    impl.dma_iova_sync(dev, state, 0, 3 * PAGE)
    dev.dma_read(state.addr + PAGE, 8)
    impl.dma_iova_unlink(dev, state, PAGE, PAGE, DMA_TO_DEVICE, 0)
    with pytest.raises(IommuFault):                             # unlink always syncs the IOTLB
        dev.dma_read(state.addr + PAGE, 8)
    assert to_phys(impl, dev, state.addr) == RAM
    assert to_phys(impl, dev, state.addr + 2 * PAGE) == RAM + 16 * PAGE
    assert impl.dma_iova_link(dev, state, RAM + 40 * PAGE, PAGE, PAGE, DMA_TO_DEVICE, 0) == 0
    assert to_phys(impl, dev, state.addr + PAGE) == RAM + 40 * PAGE
    # unlink everything, then dma_iova_free: immediate reuse, no flush queue
    impl.dma_iova_unlink(dev, state, 0, 3 * PAGE, DMA_TO_DEVICE, 0)
    impl.dma_iova_free(dev, state)
    again = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, again, 0, 3 * PAGE) and again.addr == state.addr


def test_destroy_in_lazy_mode_goes_through_the_flush_queue(impl):
    m, dev = setup(impl, lazy=True)
    c = dev.domain.iova_cookie
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 2 * PAGE)
    impl.dma_iova_link(dev, state, RAM, 0, 2 * PAGE, DMA_TO_DEVICE, 0)
    impl.dma_iova_sync(dev, state, 0, 2 * PAGE)
    m.mem_write(RAM, b"stale?")
    assert dev.dma_read(state.addr, 6) == b"stale?"
    impl.dma_iova_destroy(dev, state, 2 * PAGE, DMA_TO_DEVICE, 0)
    assert [q.entries_list()[0][:2] for q in c.flush_queues()] == [(state.addr >> 12, 2)]
    assert dev.dma_read(state.addr, 6) == b"stale?"             # stale IOTLB entry until the flush
    other = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, other, 0, 2 * PAGE) and other.addr != state.addr
    m.advance(10_000_000)
    with pytest.raises(IommuFault):
        dev.dma_read(state.addr, 6)
    third = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, third, 0, 2 * PAGE) and third.addr == state.addr


def test_destroy_with_nothing_mapped_is_dma_iova_free(impl):
    m, dev = setup(impl, lazy=True)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    impl.dma_iova_destroy(dev, state, 0, DMA_TO_DEVICE, 0)
    assert [len(q) for q in dev.domain.iova_cookie.flush_queues()] == [0]
    again = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, again, 0, PAGE) and again.addr == state.addr


def test_dma_iova_free_never_uses_the_flush_queue(impl):
    m, dev = setup(impl, lazy=True)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    impl.dma_iova_free(dev, state)
    assert dev.domain.iova_cookie.fq_timer_on is False


# ---- untrusted devices -------------------------------------------------------------------------
def test_untrusted_link_bounces_head_and_tail_and_links_the_middle(impl):
    m, dev = setup(impl, untrusted=True, min_align_mask=0xFFF)
    phys, size = RAM + 0x100, 2 * PAGE              # head 0xF00, middle 0x1000, tail 0x100
    data = bytes(range(256)) * (size // 256)
    m.mem_write(phys, data)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, phys, size)
    assert impl.dma_iova_link(dev, state, phys, 0, size, DMA_BIDIRECTIONAL, 0) == 0
    assert state.__size == size | DMA_IOVA_USE_SWIOTLB and impl.dma_iova_size(state) == size
    impl.dma_iova_sync(dev, state, 0, size)
    base = state.addr - 0x100
    assert to_phys(impl, dev, state.addr) != phys                          # head bounced
    assert to_phys(impl, dev, base + PAGE) == RAM + PAGE                    # middle in place
    assert to_phys(impl, dev, base + 2 * PAGE) not in (0, RAM + 2 * PAGE)   # tail bounced
    assert dev.dma_read(state.addr, size) == data
    assert dev.dma_read(base, 0x100) == bytes(0x100)                        # padding zeroed
    dev.dma_write(state.addr, b"\xEE" * size)
    impl.dma_iova_destroy(dev, state, size, DMA_BIDIRECTIONAL, 0)           # copies the bounces back
    assert m.mem_read(phys, size) == b"\xEE" * size


def test_untrusted_head_bounce_needs_min_align_mask(impl):
    # without min_align_mask the bounce slot starts its granule: bounce_phys - start_pad is not
    # granule-aligned and iommu_map refuses it
    m, dev = setup(impl, untrusted=True)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, RAM + 0x100, PAGE)
    assert impl.dma_iova_link(dev, state, RAM + 0x100, 0, PAGE, DMA_TO_DEVICE, 0) == -EINVAL
    assert not state.__size & DMA_IOVA_USE_SWIOTLB


def test_untrusted_mmio_link_is_refused_with_eperm(impl):
    m, dev = setup(impl, untrusted=True)
    m.add_mmio(0xE0000000, 0x100000, "bar0")
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0xE0000010, 16)
    assert impl.dma_iova_link(dev, state, 0xE0000010, 0, 16, DMA_TO_DEVICE, DMA_ATTR_MMIO) == -1
    aligned = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, aligned, 0, PAGE)
    assert impl.dma_iova_link(dev, aligned, 0xE0000000, 0, PAGE, DMA_TO_DEVICE, DMA_ATTR_MMIO) == 0
    assert to_phys(impl, dev, aligned.addr) == 0xE0000000


# ---- non-coherent devices ------------------------------------------------------------------------
def test_non_coherent_link_syncs_per_link_and_unlink_walks_granules(impl):
    m, dev = setup(impl, coherent=False)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, 3 * PAGE)
    impl.dma_iova_link(dev, state, RAM, 0, 3 * PAGE, DMA_FROM_DEVICE, 0)
    assert dev.arch_sync_for_device == 1
    impl.dma_iova_unlink(dev, state, 0, 3 * PAGE, DMA_FROM_DEVICE, 0)
    assert dev.arch_sync_for_cpu == 3                                       # one per granule
    impl.dma_iova_link(dev, state, RAM, 0, 3 * PAGE, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    impl.dma_iova_destroy(dev, state, 3 * PAGE, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
    assert (dev.arch_sync_for_device, dev.arch_sync_for_cpu) == (1, 3)


# ---- misuse -------------------------------------------------------------------------------------
def test_invalid_direction_is_a_bug_before_anything_else(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    for call in (lambda: impl.dma_iova_link(dev, state, RAM, 0, PAGE, DMA_NONE, 0),
                 lambda: impl.dma_iova_unlink(dev, state, 0, PAGE, 7, 0),
                 lambda: impl.dma_iova_destroy(dev, state, PAGE, DMA_NONE, 0)):
        with pytest.raises(KernelBug, match="invalid DMA direction"):
            call()
    assert to_phys(impl, dev, state.addr) == 0


def test_arguments_are_converted_in_the_kernel_argument_order(impl):
    """With two bad arguments the first one in the kernel's argument order is the one reported,
    on both backends (the slow fuzz run, seed 5, found destroy reporting attrs before dir)."""
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    bad_attrs = 1 << 40
    for call in (lambda: impl.dma_iova_link(dev, state, RAM, 0, PAGE, object(), bad_attrs),
                 lambda: impl.dma_iova_unlink(dev, state, 0, PAGE, object(), bad_attrs),
                 lambda: impl.dma_iova_destroy(dev, state, PAGE, object(), bad_attrs)):
        with pytest.raises(TypeError, match="dir"):
            call()
    for call in (lambda: impl.dma_iova_link(dev, state, -1, 0, PAGE, object(), 0),
                 lambda: impl.dma_iova_unlink(dev, state, -1, PAGE, object(), 0),
                 lambda: impl.dma_iova_destroy(dev, state, -1, object(), 0)):
        with pytest.raises(ValueError):
            call()
    assert to_phys(impl, dev, state.addr) == 0


def test_calls_on_a_device_without_a_dma_domain_are_bugs(impl):
    m = impl.Machine(cpus=1)
    dev = m.add_device("direct0")
    state = impl.DmaIovaState()
    assert not impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    with pytest.raises(KernelBug):
        impl.dma_iova_link(dev, state, RAM, 0, PAGE, DMA_TO_DEVICE, 0)
    with pytest.raises(KernelBug):
        impl.dma_iova_free(dev, state)


def test_bad_python_input(impl):
    m, dev = setup(impl)
    state = impl.DmaIovaState()
    with pytest.raises(TypeError):
        impl.dma_iova_try_alloc(dev, object(), 0, PAGE)
    with pytest.raises(ValueError):
        impl.dma_iova_try_alloc(dev, state, -1, PAGE)
    assert impl.dma_iova_try_alloc(dev, state, 0, PAGE)
    with pytest.raises(ValueError):
        impl.dma_iova_link(dev, state, RAM, 0, PAGE, DMA_TO_DEVICE, 1 << 11)
    with pytest.raises(AttributeError):
        state.size = 5
    with pytest.raises(ValueError):
        state.addr = -1


def test_state_repr_and_raw_size(impl):
    state = impl.DmaIovaState(0xFFFFC200, PAGE | DMA_IOVA_USE_SWIOTLB)
    assert state.size == PAGE and "USE_SWIOTLB" in repr(state)
    state.__size = 0
    assert not impl.dma_use_iova(state)
    assert DMA_MAPPING_ERROR != state.addr


# ---- core vs reference ---------------------------------------------------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["alloc", "link", "sync", "unlink", "destroy", "free", "advance"]),
                         st.integers(0, 7), st.integers(0, 0x3FFF), st.integers(0, 2)),
               min_size=1, max_size=40)


def _run_stream(impl, ops, lazy, untrusted, coherent):
    m, dev = setup(impl, lazy=lazy, untrusted=untrusted, coherent=coherent, min_align_mask=0xFFF)
    states, log = [], []          # [state, phys offset given to try_alloc, bytes linked from offset 0]
    for op, k, x, d in ops:
        if op == "alloc":
            s = impl.DmaIovaState()
            ok = impl.dma_iova_try_alloc(dev, s, RAM + x, (k + 1) * PAGE)
            log.append((ok, s.addr))
            if ok:
                states.append([s, x & 0xFFF, 0])
        elif not states:
            continue
        elif op == "link":
            entry = states[k % len(states)]
            s, off, linked = entry
            room = s.size - linked
            if room <= 0 or (s.addr + linked) % PAGE:
                continue                                  # only a granule-aligned offset can take more
            phys = RAM + 0x100000 + k * 3 * PAGE + (off if linked == 0 else 0)
            n = min(room, (x % (2 * PAGE)) + 1)
            ret = impl.dma_iova_link(dev, s, phys, linked, n, d, 0)
            log.append(ret)
            if ret == 0:
                entry[2] += n
        elif op == "sync":
            s, _off, linked = states[k % len(states)]
            log.append(impl.dma_iova_sync(dev, s, 0, max(linked, 1)))
        elif op == "unlink":
            entry = states[k % len(states)]
            if entry[2]:
                impl.dma_iova_unlink(dev, entry[0], 0, entry[2], d, 0)
                entry[2] = 0
        elif op in ("destroy", "free"):
            s, _off, linked = states.pop(k % len(states))
            if op == "destroy":
                impl.dma_iova_destroy(dev, s, linked, d, 0)
            else:
                if linked:
                    impl.dma_iova_unlink(dev, s, 0, linked, d, 0)
                impl.dma_iova_free(dev, s)
        elif op == "advance":
            m.advance(k * 2_000_000)
        log.append([(e[0].addr, e[0].__size, e[2]) for e in states])
    return log, dev.domain.iova_cookie.get_state(), dev.domain.pgtable.get_state()["mappings"]


@given(ops=OPS, lazy=st.booleans(), untrusted=st.booleans(), coherent=st.booleans())
def test_core_matches_reference(ops, lazy, untrusted, coherent):
    assert (_run_stream(dma, ops, lazy, untrusted, coherent)
            == _run_stream(reference, ops, lazy, untrusted, coherent))
