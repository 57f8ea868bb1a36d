"""IOMMU invalidation notifiers: an embedder's translation cache filled from dev.translate() and
emptied by iommu.register_notifier() callbacks stays exact, strict and lazy (core and reference)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys as dma
import dmaphys.reference as ref
from dmaphys.errors import IommuFault

ALL = 2**64 - 1
PAGE = 4096


class EmbedderCache:
    """What a simulator keeps: translations by (domain id, 4 KiB page), dropped on notification."""

    def __init__(self, iommu):
        self.entries = {}
        self.log = []
        self.hits = 0
        iommu.register_notifier(self.notify)

    def notify(self, domain, iova, size):
        self.log.append((None if domain is None else domain.id, iova, size))
        last = iova + size - 1 if size != ALL else ALL
        for key in [k for k in self.entries
                    if (domain is None or k[0] == domain.id) and iova >> 12 <= k[1] <= last >> 12]:
            del self.entries[key]

    def translate(self, dev, addr, write=False):
        key = (dev.domain.id, addr >> 12)
        e = self.entries.get(key)
        if e is not None and e.perm & (2 if write else 1):
            self.hits += 1
            return e
        e = dev.translate(addr, write)                 # IommuFault propagates: nothing cached
        self.entries[key] = e
        return e


def setup(impl, strict, **kw):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, dma_debug=False)
    iommu = m.add_iommu(fmt="x86-64", strict=strict, iotlb={"entries": 8, "ways": 2}, **kw)
    nic = m.add_device("nic", iommu=iommu)
    return m, iommu, nic


def dmap(impl, dev, phys, size, dir):
    a = impl.dma_map_phys(dev, phys, size, dir, 0)
    assert not impl.dma_mapping_error(dev, a)
    return a


OPS = st.lists(st.tuples(st.sampled_from(["map", "map", "unmap", "access", "access", "access", "advance"]),
                         st.integers(0, 2**16)), max_size=50)


@pytest.mark.parametrize("backend", ["core", "reference"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lazy"])
@given(ops=OPS)
def test_cache_never_serves_a_dead_translation(backend, strict, ops):
    impl = dma if backend == "core" else ref
    m, iommu, nic = setup(impl, strict)
    cache = EmbedderCache(iommu)
    live = []                                          # (iova, phys, npages)
    pending = set()                                    # pages unmapped, not yet notified (lazy)
    n_log = 0
    for op, x in ops:
        if op == "map":
            npages = 1 + x % 3
            phys = m.alloc_pages(npages)
            m.mem_write(phys, x.to_bytes(4, "little") * (npages * PAGE // 4))
            iova = dmap(impl, nic, phys, npages * PAGE, dma.DMA_BIDIRECTIONAL)
            assert not any(p in pending for p in range(iova >> 12, (iova >> 12) + npages))
            live.append((iova, phys, npages))
        elif op == "unmap" and live:
            iova, phys, npages = live.pop(x % len(live))
            impl.dma_unmap_phys(nic, iova, npages * PAGE, dma.DMA_BIDIRECTIONAL, 0)
            m.free_pages(phys, npages)
            if strict:
                assert any(d == nic.domain.id and i <= iova and iova + npages * PAGE - 1 <= i + s - 1
                           for d, i, s in cache.log[n_log:]), "a strict unmap notifies its range"
            else:
                pending.update(range(iova >> 12, (iova >> 12) + npages))
        elif op == "advance":
            m.advance(10_000_000)                      # the flush queue's timeout: flush + notify
        if cache.log[n_log:]:
            for _d, i, s in cache.log[n_log:]:
                pending -= {p for p in pending if i >> 12 <= p <= ((i + s - 1) if s != ALL else ALL) >> 12}
            n_log = len(cache.log)
        if op == "access" and live:
            iova, phys, npages = live[x % len(live)]
            off = (x * 8) % (npages * PAGE)
            e = cache.translate(nic, iova + off, write=bool(x & 1))
            assert e.translated_addr + ((iova + off) & e.addr_mask) == phys + off
            seen = m.mem_read(e.translated_addr + ((iova + off) & e.addr_mask), 4)
            assert nic.dma_read(iova + off, 4) == seen             # what the device really reads
        # every cached translation is live, or (lazy only) in the window before its notification
        for (_domid, page), e in cache.entries.items():
            cur = impl.iommu_iova_to_phys(nic.domain, page << 12)
            assert cur == e.translated_addr + ((page << 12) & e.addr_mask) or page in pending
            assert strict is False or page not in pending
    if not strict:
        m.advance(10_000_000)
        assert not pending or all(p not in {k[1] for k in cache.entries} for p in pending)
        for (_domid, page), e in cache.entries.items():
            assert impl.iommu_iova_to_phys(nic.domain, page << 12) == e.translated_addr + (
                (page << 12) & e.addr_mask)


def test_lazy_notification_comes_with_the_flush(impl):
    m, iommu, nic = setup(impl, strict=False)
    cache = EmbedderCache(iommu)
    buf = m.alloc_pages(1)
    iova = dmap(impl, nic, buf, PAGE, dma.DMA_TO_DEVICE)
    assert cache.translate(nic, iova).translated_addr == buf
    impl.dma_unmap_phys(nic, iova, PAGE, dma.DMA_TO_DEVICE, 0)
    assert cache.log == []                             # the stale window: nothing said yet
    assert cache.translate(nic, iova).translated_addr == buf and cache.hits == 1
    m.advance(10_000_000)
    assert cache.log == [(nic.domain.id, 0, ALL)]      # flush_iotlb_all: the whole domain
    assert cache.entries == {}
    with pytest.raises(IommuFault):
        cache.translate(nic, iova)


def test_what_is_notified(impl):
    m, iommu, nic = setup(impl, strict=True)
    log = []
    cb = lambda d, i, s: log.append((d.id if d is not None else None, i, s))  # noqa: E731
    iommu.register_notifier(cb)
    dom = nic.domain
    iova = dmap(impl, nic, m.alloc_pages(2), 2 * PAGE, dma.DMA_FROM_DEVICE)
    assert log == []                                   # maps need no invalidation
    impl.dma_unmap_phys(nic, iova, 2 * PAGE, dma.DMA_FROM_DEVICE, 0)
    assert log == [(dom.id, iova, 2 * PAGE)]
    un = iommu.domain_alloc()
    impl.iommu_map(un, 0x20_0000, 0x20_0000, 0x20_0000, dma.IOMMU_READ)
    assert impl.iommu_unmap(un, 0x20_0000, PAGE) == 0x20_0000   # a 2 MiB leaf goes whole
    assert log[-1] == (un.id, 0x20_0000, 0x20_0000)
    impl.iommu_unmap_fast(un, 0x40_0000, PAGE)
    n = len(log)
    impl.iommu_iotlb_sync(un, 0x40_0000, PAGE)
    assert log[n:] == [(un.id, 0x40_0000, PAGE)]
    iommu.iotlb.invalidate_range(un, 0x1000, PAGE)
    iommu.iotlb.invalidate_domain(un)
    iommu.iotlb.invalidate_all()
    assert log[-3:] == [(un.id, 0x1000, PAGE), (un.id, 0, ALL), (None, 0, ALL)]
    assert impl.iommu_attach_device(un, nic) == 0      # nic leaves its default domain
    assert log[-1] == (dom.id, 0, ALL)
    impl.iommu_detach_device(un, nic)
    assert log[-1] == (un.id, 0, ALL)
    impl.iommu_domain_free(un)
    assert log[-1] == (un.id, 0, ALL)
    m.remove_device(nic)                               # the default domain goes with its device
    assert log[-2:] == [(dom.id, 0, ALL), (dom.id, 0, ALL)]
    iommu.unregister_notifier(cb)
    with pytest.raises(ValueError, match="not registered"):
        iommu.unregister_notifier(cb)
    with pytest.raises(TypeError, match="callable"):
        iommu.register_notifier(42)


def test_caching_mode_notifies_on_map(impl):
    m, iommu, nic = setup(impl, strict=True, caching_mode=True)
    log = []
    iommu.register_notifier(lambda d, i, s: log.append((d.id, i, s)))
    iova = dmap(impl, nic, m.alloc_pages(1), PAGE, dma.DMA_TO_DEVICE)
    assert log == [(nic.domain.id, iova, PAGE)]


def test_a_raising_callback_lets_the_call_finish(impl):
    m, iommu, nic = setup(impl, strict=True)
    seen = []

    def bad(d, i, s):
        seen.append("bad")
        raise RuntimeError("embedder bug")

    iommu.register_notifier(bad)
    iommu.register_notifier(lambda d, i, s: seen.append("good"))
    buf = m.alloc_pages(1)
    iova = dmap(impl, nic, buf, PAGE, dma.DMA_TO_DEVICE)
    with pytest.raises(RuntimeError, match="embedder bug"):
        impl.dma_unmap_phys(nic, iova, PAGE, dma.DMA_TO_DEVICE, 0)
    assert seen == ["bad", "good"]                     # every callback ran
    assert impl.iommu_iova_to_phys(nic.domain, iova) == 0   # the unmap completed
    assert dmap(impl, nic, buf, PAGE, dma.DMA_TO_DEVICE) == iova   # and freed its IOVA
    m.advance(1)                                       # nothing left pending


def test_notifications_agree_core_and_reference():
    logs = []
    for impl in (dma, ref):
        out = []
        for strict in (True, False):
            m, iommu, nic = setup(impl, strict)
            log = []
            iommu.register_notifier(lambda d, i, s, log=log: log.append((d and d.id, i, s)))
            live = []
            for k in range(300):
                if k % 3 != 2:
                    n = PAGE * (1 + k % 2)
                    live.append((dmap(impl, nic, 0x1000 * (k + 1), n, dma.DMA_TO_DEVICE), n))
                if k % 3 == 2 or len(live) > 40:
                    a, n = live.pop(k % len(live))
                    impl.dma_unmap_phys(nic, a, n, dma.DMA_TO_DEVICE, 0)
                if k % 50 == 0:
                    m.advance(3_000_000)
            out.append((log, iommu.get_state()))
        logs.append(out)
    assert logs[0] == logs[1]


def test_c_notifier_hook():
    """The C-level hook (register_c_notifier) sees what Python callbacks see."""
    from dmaphys import _core
    m, iommu, nic = setup(dma, strict=False)
    py = []
    iommu.register_notifier(lambda d, i, s: py.append((0 if d is None else d.id, i, s)))
    probe = _core._c_notifier_probe(iommu)
    iova = dmap(dma, nic, m.alloc_pages(1), PAGE, dma.DMA_TO_DEVICE)
    dma.dma_unmap_phys(nic, iova, PAGE, dma.DMA_TO_DEVICE, 0)
    m.advance(10_000_000)
    iommu.iotlb.invalidate_all()
    assert probe.records() == py == [(nic.domain.id, 0, ALL), (0, 0, ALL)]
    probe.unregister()
    probe.unregister()                                 # twice: -ENOENT, no crash
    assert probe.last_ret == -dma.ENOENT
    iommu.iotlb.invalidate_all()
    assert len(probe.records()) == 2


@pytest.mark.parametrize("iotlb", [False, "qemu"])
def test_notified_without_a_set_assoc_iotlb(impl, iotlb):
    """No modelled IOTLB (or QEMU's): the invalidations are still issued and notified, and
    translate() walks (qemu mode: tagged with the requester id)."""
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, dma_debug=False)
    iommu = m.add_iommu(fmt="vtd-ss", strict=False, iotlb=iotlb)
    nic = m.add_device("nic", iommu=iommu)
    cache = EmbedderCache(iommu)
    buf = m.alloc_pages(1)
    iova = dmap(impl, nic, buf, PAGE, dma.DMA_FROM_DEVICE)
    assert cache.translate(nic, iova + 8, write=True).translated_addr == buf
    impl.dma_unmap_phys(nic, iova, PAGE, dma.DMA_FROM_DEVICE, 0)
    if iotlb is False:
        with pytest.raises(IommuFault):                # no IOTLB: the walk sees the unmap at once
            nic.translate(iova)
    else:
        assert nic.translate(iova, write=True).translated_addr == buf   # the stale window
        assert iommu.iotlb.stale_hits == 1
    assert cache.log == [] and len(cache.entries) == 1
    m.advance(10_000_000)
    assert cache.log == [(nic.domain.id, 0, ALL)] and cache.entries == {}
