"""The IOTLB model (iotlb.pxi / reference/iotlb.py): geometry, hits and misses, replacement
per policy, QEMU's capped hash, invalidation by range / domain / all, stale hits. Both backends."""

import pytest

from dmaphys import IommuFault

RW = 3                                           # IOMMU_READ | IOMMU_WRITE
PAGE = 4096
PHYS = 0x4000_0000                               # RAM


def setup(impl, iotlb=None, fmt="vtd-ss", **kw):
    m = impl.Machine(cpus=1, swiotlb=0)
    mm = m.add_iommu(fmt, iotlb=iotlb, **kw)
    dev = m.add_device("dev0", iommu=mm, domain_type="blocked")
    d = mm.domain_alloc()
    assert impl.iommu_attach_device(d, dev) == 0
    return m, mm, dev, d


def map_pages(impl, d, iova, phys, n, prot=RW):
    assert impl.iommu_map(d, iova, phys, n * PAGE, prot) == 0


def test_defaults_and_validation(impl):
    t = impl.Iotlb()
    assert (t.entries, t.ways, t.sets, t.policy, t.mode, t.max_size) == (512, 8, 64, "lru", "set-assoc", 1024)
    assert len(t) == 0 and t.stats["hits"] == 0
    for bad in ({"entries": 10, "ways": 4}, {"entries": 0}, {"ways": 0}, {"policy": "mru"}, {"mode": "x"},
                {"max_size": 0}):
        with pytest.raises(ValueError):
            impl.Iotlb(**bad)
    with pytest.raises(TypeError):
        impl.Iotlb(entries="8")
    m = impl.Machine(cpus=1, swiotlb=0)
    assert isinstance(m.add_iommu().iotlb, impl.Iotlb)
    assert m.add_iommu(iotlb=False).iotlb is None
    assert m.add_iommu(iotlb="qemu").iotlb.mode == "qemu"
    t = impl.Iotlb(entries=16, ways=4)
    m.add_iommu(iotlb=t)
    with pytest.raises(ValueError):
        m.add_iommu(iotlb=t)                                     # one IOTLB per IOMMU


def test_hit_after_miss_and_walks_only_on_misses(impl):
    m, mm, dev, d = setup(impl)
    map_pages(impl, d, 0x10000, PHYS, 2)
    m.mem_write(PHYS + 0x1008, b"abcd")
    walks = d.pgtable.walk_reads
    assert dev.dma_read(0x11008, 4) == b"abcd"
    assert mm.iotlb.stats["misses"] == 1 and mm.iotlb.stats["hits"] == 0
    assert d.pgtable.walk_reads == walks + 4                     # a 4-level walk
    assert dev.dma_read(0x11000, 16)[8:12] == b"abcd"
    assert (mm.iotlb.hits, mm.iotlb.misses, d.pgtable.walk_reads) == (1, 1, walks + 4)
    assert mm.iotlb.probe(d, 0x11abc) == (PHYS + 0x1abc, PAGE, RW)
    assert mm.iotlb.probe(d, 0x10000) is None
    # a request never crosses 4 KiB: 3 lookups for a 2-page-spanning read of 8 KiB + 16
    mm.iotlb.reset_stats()
    dev.dma_read(0x10ff8, 16)
    assert (mm.iotlb.hits, mm.iotlb.misses) == (1, 1)


def test_no_iotlb_walks_every_request(impl):
    m, mm, dev, d = setup(impl, iotlb=False)
    map_pages(impl, d, 0x10000, PHYS, 1)
    w = d.pgtable.walk_reads
    dev.dma_read(0x10000, 8)
    dev.dma_read(0x10000, 8)
    assert d.pgtable.walk_reads == w + 8


def test_large_leaf_is_one_entry(impl):
    m, mm, dev, d = setup(impl)
    assert impl.iommu_map(d, 0x20_0000, 0x4020_0000, 0x20_0000, RW) == 0      # one 2 MiB leaf
    m.mem_write(0x4020_0000 + 0x1F_F000, b"end")
    dev.dma_read(0x20_0010, 4)
    assert dev.dma_read(0x3F_F000, 3) == b"end"
    assert (mm.iotlb.misses, mm.iotlb.hits) == (1, 1)
    assert mm.iotlb.get_state()["entries"] == [(d.id, 0, 0x20_0000, 0x20_0000, 0x4020_0000, RW)]


def _lru_fifo_trace(impl, policy):
    m, mm, dev, d = setup(impl, iotlb={"entries": 2, "ways": 2, "policy": policy})
    map_pages(impl, d, 0x10000, PHYS, 3)
    A, B, C = 0x10000, 0x11000, 0x12000
    for a in (A, B, A, C):
        dev.dma_read(a, 1)
    return mm, d, A, B, C


def test_lru_evicts_least_recently_used(impl):
    mm, d, A, B, C = _lru_fifo_trace(impl, "lru")
    assert mm.iotlb.evictions == 1
    assert mm.iotlb.probe(d, A) is not None and mm.iotlb.probe(d, B) is None


def test_fifo_evicts_oldest_fill(impl):
    mm, d, A, B, C = _lru_fifo_trace(impl, "fifo")
    assert mm.iotlb.probe(d, A) is None and mm.iotlb.probe(d, B) is not None


def test_set_index_conflicts(impl):
    m, mm, dev, d = setup(impl, iotlb={"entries": 4, "ways": 1})          # 4 direct-mapped sets
    map_pages(impl, d, 0, PHYS, 8)
    dev.dma_read(0x0000, 1)
    dev.dma_read(0x4000, 1)                                               # same set as page 0
    dev.dma_read(0x1000, 1)
    assert mm.iotlb.evictions == 1 and len(mm.iotlb) == 2
    assert mm.iotlb.probe(d, 0x0000) is None and mm.iotlb.probe(d, 0x4000) is not None


def test_random_policy_is_seeded(impl):
    def run(seed):
        m, mm, dev, d = setup(impl, iotlb={"entries": 4, "ways": 4, "policy": "random", "seed": seed})
        map_pages(impl, d, 0, PHYS, 16)
        for i in (0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 9, 12):
            dev.dma_read(i * PAGE, 1)
        return mm.iotlb.get_state()
    assert run(7) == run(7)
    st = run(7)["stats"]
    assert st["evictions"] == st["misses"] - 4 and st["evictions"] >= 6
    assert any(run(s)["entries"] != run(7)["entries"] for s in range(1, 6))


def test_qemu_mode_empties_the_table_at_the_cap(impl):
    m, mm, dev, d = setup(impl, iotlb={"mode": "qemu", "max_size": 4})
    map_pages(impl, d, 0, PHYS, 8)
    for i in range(4):
        dev.dma_read(i * PAGE, 1)
    assert len(mm.iotlb) == 4 and mm.iotlb.cap_resets == 0
    dev.dma_read(4 * PAGE, 1)                                             # vtd_update_iotlb(): reset
    assert len(mm.iotlb) == 1 and mm.iotlb.cap_resets == 1 and mm.iotlb.evictions == 4
    dev.dma_read(0, 1)
    assert mm.iotlb.misses == 6


def test_qemu_mode_keys_per_requester_hw_mode_per_domain(impl):
    for mode, expect_hit in (("set-assoc", True), ("qemu", False)):
        m, mm, dev, d = setup(impl, iotlb={"mode": mode})
        dev1 = m.add_device("dev1", iommu=mm, domain=d)                   # same domain (group)
        assert dev1.domain is d and not dev1.dma_iommu
        map_pages(impl, d, 0, PHYS, 1)
        dev.dma_read(0, 1)
        dev1.dma_read(0, 1)
        assert (mm.iotlb.hits == 1) is expect_hit


def test_invalidation_range_domain_all(impl):
    m, mm, dev, d = setup(impl)
    dev2 = m.add_device("dev2", iommu=mm, domain_type="blocked")
    d2 = mm.domain_alloc()
    m.remove_device(dev)                 # leaves the blocked group with one device for dev2
    dev = m.add_device("dev0b", iommu=mm, domain=d)
    assert impl.iommu_attach_device(d2, dev2) == 0
    map_pages(impl, d, 0, PHYS, 4)
    map_pages(impl, d2, 0, PHYS, 4)
    for i in range(4):
        dev.dma_read(i * PAGE, 1)
        dev2.dma_read(i * PAGE, 1)
    t = mm.iotlb
    n0 = t.invalidations
    assert t.invalidate_range(d, PAGE, 2 * PAGE) == 2
    assert t.probe(d, 0) and not t.probe(d, PAGE) and not t.probe(d, 2 * PAGE) and t.probe(d, 3 * PAGE)
    assert all(t.probe(d2, i * PAGE) for i in range(4))
    assert t.invalidate_range(d.id, 0, 1) == 1                            # bare domain id
    assert t.invalidate_domain(d2) == 4 and len(t) == 1
    assert t.invalidate_all() == 1 and len(t) == 0
    assert t.invalidations == n0 + 4 and t.invalidated >= 8


def test_stale_hit_after_unmap_without_invalidation(impl):
    m, mm, dev, d = setup(impl)
    m.dma_debug.enabled = False
    map_pages(impl, d, 0x10000, PHYS, 1)
    m.mem_write(PHYS, b"secret")
    assert dev.dma_read(0x10000, 6) == b"secret"
    assert impl.iommu_unmap_fast(d, 0x10000, PAGE) == PAGE
    assert impl.iommu_iova_to_phys(d, 0x10000) == 0
    assert dev.dma_read(0x10000, 6) == b"secret"                          # the IOTLB still translates
    assert mm.iotlb.stale_hits == 1 and d.stale_hits == 1
    impl.iommu_iotlb_sync(d, 0x10000, PAGE)
    with pytest.raises(IommuFault):
        dev.dma_read(0x10000, 6)
    assert mm.iotlb.stale_hits == 1


def test_stale_hit_sees_a_remap_to_other_memory(impl):
    m, mm, dev, d = setup(impl)
    m.dma_debug.enabled = False
    map_pages(impl, d, 0x10000, PHYS, 1)
    m.mem_write(PHYS, b"old")
    m.mem_write(PHYS + 0x5000, b"new")
    dev.dma_read(0x10000, 3)
    impl.iommu_unmap_fast(d, 0x10000, PAGE)
    map_pages(impl, d, 0x10000, PHYS + 0x5000, 1)
    assert dev.dma_read(0x10000, 3) == b"old"                             # stale translation wins
    assert mm.iotlb.stale_hits == 1
    impl.iommu_iotlb_sync(d, 0x10000, PAGE)
    assert dev.dma_read(0x10000, 3) == b"new"


def test_caching_mode_invalidates_on_map(impl):
    m, mm, dev, d = setup(impl, caching_mode=True)
    map_pages(impl, d, 0x10000, PHYS, 1)
    dev.dma_read(0x10000, 1)
    impl.iommu_unmap_fast(d, 0x10000, PAGE)
    n = mm.iotlb.invalidations
    map_pages(impl, d, 0x10000, PHYS + PAGE, 1)                           # iotlb_sync_map flushes
    assert mm.iotlb.invalidations == n + 1 and mm.iotlb.probe(d, 0x10000) is None
