"""io-pgtable-arm with a non-coherent table walker (cfg->coherent_walk false; io-pgtable-arm.c v6.18).

The CPU's stores to the tables stay in its write-back cache (``machine.mem.cache_dirty_lines()``)
until __arm_lpae_sync_pte()'s dma_sync_single_for_device() to the IOMMU's own device cleans
them; the hardware walk (translate / walk / device accesses) reads memory, iova_to_phys reads
through the cache. Table entries get ARM_LPAE_PTE_SW_SYNC (bit 55) after their sync
(arm_lpae_install_table()), a store that is itself not synced. The kernel's selftest
(io-pgtable-arm-selftests.c) runs with coherent_walk = true; it is ported here for the
non-coherent configuration and compared PTE for PTE with the coherent one.
"""

import pathlib
import sys

import pytest

import dmaphys
from dmaphys import IommuFault, KernelWarning

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_io_pgtable import arm_lpae_selftest as selftest  # noqa: E402  (the kernel selftest, ported once)

R, W, C, NX = 1, 2, 4, 8
SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30
SW_SYNC = 1 << 55
ARM = [f for f in sorted(dmaphys.IOPGTABLE_FORMATS) if f.startswith("arm")]


def machine(impl):
    return impl.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)


def table(impl, fmt, coherent, **kw):
    """A table of fmt on a fresh machine, coherent or not (its iommu_dev: a non-coherent device)."""
    m = machine(impl)
    if coherent:
        return m, impl.IoPgtable(m, fmt, **kw)
    dev = m.add_device("smmu", coherent=False, pci=False)
    return m, impl.IoPgtable(m, fmt, coherent_walk=False, iommu_dev=dev, **kw)


def cpu_pte(m, addr):
    """The entry as the CPU sees it: its dirty cache line, else memory."""
    line = m.mem.cache_dirty_lines().get(addr & ~63)
    raw = line[addr & 63:(addr & 63) + 8] if line is not None else m.mem_read(addr, 8)
    return int.from_bytes(raw, "little")


def sizes(bitmap):
    return [1 << b for b in range(64) if bitmap >> b & 1]


@pytest.mark.parametrize("fmt", ARM)
@pytest.mark.parametrize("ias,oas", [(32, 32), (48, 48)])
def test_selftest_noncoherent_same_ptes_plus_sw_sync(impl, fmt, ias, oas):
    mc, co = table(impl, fmt, True, ias=ias, oas=oas, no_warn=True)
    mn, nc = table(impl, fmt, False, ias=ias, oas=oas, no_warn=True)
    touched = selftest(co, ias)
    assert selftest(nc, ias) == touched
    assert co.table_syncs == 0 and nc.table_syncs > 0
    assert nc.get_state()["mappings"] == co.get_state()["mappings"]
    assert nc.get_state()["tables"] == co.get_state()["tables"]
    for iova in touched:
        assert nc.iova_to_phys(iova + 42) == co.iova_to_phys(iova + 42) == iova + 42
        assert nc.translate(iova + 42) == co.translate(iova + 42)
        for lc, ln in zip(co.walk(iova)["levels"], nc.walk(iova)["levels"], strict=True):
            assert ln["pte_addr"] == lc["pte_addr"] and ln["type"] == lc["type"]
            # memory (the walker's view): the coherent entry, SW_SYNC only once its line was cleaned
            assert ln["pte"] & ~SW_SYNC == lc["pte"]
            # the CPU's view: table entries carry SW_SYNC, leaves never
            want = lc["pte"] | SW_SYNC if lc["type"] == "table" else lc["pte"]
            assert cpu_pte(mn, ln["pte_addr"]) == want
    # every dirty line left is an SW_SYNC store, nothing else differs from memory
    for line, data in mn.mem.cache_dirty_lines().items():
        mem = mn.mem_read(line, 64)
        for i in range(0, 64, 8):
            a, b = int.from_bytes(data[i:i + 8], "little"), int.from_bytes(mem[i:i + 8], "little")
            assert a == b or a == b | SW_SYNC


@pytest.mark.parametrize("fmt", ["arm-lpae-s1-4k", "arm-lpae-s2-16k"])
def test_unsynced_pte_is_invisible_to_the_walker(impl, fmt):
    m, pt = table(impl, fmt, False)
    g = pt.granule
    assert pt.map(0, 0x200000, g, R | W) == 0
    leaf = pt.walk(0)["levels"][-1]
    assert leaf["type"] == "leaf" and m.mem.cache_dirty_lines().get(leaf["pte_addr"] & ~63) is None
    # the CPU clears the leaf and forgets the sync: the kernel sees it gone, the walker does not
    pt._store_pte(leaf["pte_addr"], 0)
    assert pt.iova_to_phys(5) == 0
    assert pt.translate(5) == (0x200005, R | W, g)
    assert pt.get_state()["mappings"] == {}
    pt._sync_pte(leaf["pte_addr"])
    assert pt.translate(5) is None and pt.walk(5)["fault"] == "translation"
    assert m.mem.cache_dirty_lines().get(leaf["pte_addr"] & ~63) is None
    # a new leaf stored without a sync: iova_to_phys has it, the walker faults until the clean
    pt._store_pte(leaf["pte_addr"], leaf["pte"])
    assert pt.iova_to_phys(7) == 0x200007 and pt.translate(7) is None
    syncs = pt.table_syncs
    pt._sync_pte(leaf["pte_addr"], 1)
    assert pt.table_syncs == syncs + 1 and pt.table_sync_bytes >= 8
    assert pt.translate(7) == (0x200007, R | W, g)


def test_neighbouring_sync_cleans_the_whole_line(impl):
    """Cache lines are 64 bytes: syncing one PTE writes back the 7 others of its line as well
    (this is how a table entry's SW_SYNC store reaches memory later)."""
    m, pt = table(impl, "arm-lpae-s1-4k", False)
    assert pt.map(0, 0x300000, SZ_4K, R) == 0
    base = pt.walk(0)["levels"][-1]["pte_addr"]
    pt._store_pte(base + 8, pt.walk(0)["levels"][-1]["pte"] + SZ_4K)      # iova 4K -> 0x301000, unsynced
    assert pt.translate(SZ_4K) is None
    assert pt.map(2 * SZ_4K, 0x302000, SZ_4K, R) == 0                       # synced: same line
    assert pt.translate(SZ_4K + 1) == (0x301001, R, SZ_4K)
    # the table entries above had SW_SYNC stored after their sync: in the cache only, until cleaned
    top = pt.walk(0)["levels"][0]
    assert not top["pte"] & SW_SYNC and cpu_pte(m, top["pte_addr"]) & SW_SYNC
    pt._sync_pte(top["pte_addr"])
    assert pt.walk(0)["levels"][0]["pte"] & SW_SYNC


def test_device_traffic_same_iovas_and_bytes(impl):
    """dma_map_phys through a non-coherent ARM IOMMU: the IOVAs and bytes of the coherent one."""
    results = []
    for coherent in (True, False):
        m = impl.Machine(ram=[(0, 1 << 32)], cpus=2)
        mmu = m.add_iommu(fmt="arm-lpae-s1-4k", strict=True, coherent_walk=coherent)
        dev = m.add_device("nic0", iommu=mmu)
        bufs = [m.alloc_pages(4) for _ in range(6)]
        out = []
        for i, b in enumerate(bufs):
            m.mem_write(b, bytes([i + 1]) * 64)
            a = impl.dma_map_phys(dev, b + 64 * i, 4096 * (1 + i % 3), dmaphys.DMA_BIDIRECTIONAL, 0)
            assert not impl.dma_mapping_error(dev, a)
            dev.dma_write(a + 8, b"xyz")
            out.append((a, dev.dma_read(a - 64 * i, 64), m.mem_read(b + 64 * i + 8, 3)))
        for (a, _, _), i in zip(out, range(6), strict=True):
            impl.dma_unmap_phys(dev, a, 4096 * (1 + i % 3), dmaphys.DMA_BIDIRECTIONAL, 0)
        with pytest.raises(IommuFault):
            dev.dma_read(out[0][0], 4)
        pt = dev.domain.pgtable
        results.append((out, pt.get_state()["mappings"]))
        if coherent:
            assert mmu.iommu_dev is None and pt.table_syncs == 0
        else:
            assert mmu.iommu_dev.name == mmu.name and not mmu.iommu_dev.coherent
            assert pt.table_syncs > 0 and mmu.iommu_dev.arch_sync_for_device >= pt.table_syncs
    assert results[0] == results[1]


def test_table_dma_mapping_must_be_the_physical_address(impl):
    """__arm_lpae_alloc_pages(): a DMA address differing from the physical one is refused."""
    m = machine(impl)
    dev = m.add_device("smmu", coherent=False, pci=False, dma_range_map=[(0, 1 << 40, 1 << 32)])
    with pytest.warns(KernelWarning, match="Cannot accommodate DMA translation for IOMMU page tables"):
        with pytest.raises(MemoryError):
            impl.IoPgtable(m, "arm-lpae-s1-4k", coherent_walk=False, iommu_dev=dev)
    assert m.mem.allocated_pages == 0


def test_options_are_checked(impl):
    m = machine(impl)
    with pytest.raises(ValueError, match="io-pgtable-arm"):
        m.add_iommu(fmt="vtd-ss", coherent_walk=False)
    with pytest.raises(ValueError, match="iommu_dev"):
        impl.IoPgtable(m, "arm-lpae-s1-4k", coherent_walk=False)
    with pytest.raises(ValueError, match="io-pgtable-arm"):
        impl.IoPgtable(m, "x86-64", coherent_walk=False, iommu_dev=m.add_device("d", pci=False))
    with pytest.raises(TypeError):
        impl.IoPgtable(m, "arm-lpae-s1-4k", coherent_walk=False, iommu_dev="smmu")
    _, pt = table(impl, "arm-lpae-s1-4k", True)
    with pytest.raises(ValueError, match="coherent"):
        pt._sync_pte(pt.pgtable_root)
    with pytest.raises(ValueError, match="not an entry"):
        pt._store_pte(0x1000, 0)


def test_freed_tables_are_unmapped_and_their_lines_written_back(impl):
    m, pt = table(impl, "arm-lpae-s2-4k", False)
    dev = pt.iommu_dev
    assert pt.map(SZ_1G, 0x40000000, SZ_4K, R) == 0
    assert m.mem.cache_dirty_lines()
    pt.free_tables()
    assert m.mem.cache_dirty_lines() == {} and m.mem.allocated_pages == 0
    assert dev.arch_sync_for_device > 0


@pytest.mark.parametrize("fmt,ias,oas,regs", [
    ("arm-lpae-s1-4k", 48, 48, {"tg": 0, "tsz": 16, "ips": 5}),
    ("arm-lpae-s1-16k", 40, 44, {"tg": 2, "tsz": 24, "ips": 4}),
    ("arm-lpae-s1-64k", 52, 52, {"tg": 1, "tsz": 12, "ips": 6}),
    ("arm-lpae-s2-4k", 48, 48, {"tg": 0, "tsz": 16, "ps": 5, "sl": 2}),     # start level 0
    ("arm-lpae-s2-4k", 40, 40, {"tg": 0, "tsz": 24, "ps": 2, "sl": 1}),     # concatenated: level 1
    ("arm-lpae-s2-64k", 48, 48, {"tg": 1, "tsz": 16, "ps": 5, "sl": 2}),    # start level 1
])
def test_walk_attributes_in_tcr(impl, fmt, ias, oas, regs):
    """arm_64_lpae_alloc_pgtable_s1/_s2(): TCR/VTCR SH IS + IRGN/ORGN WBWA for a coherent
    walker, SH OS + IRGN/ORGN NC for a non-coherent one; the other fields either way."""
    for coherent, walk in ((True, {"sh": 3, "irgn": 1, "orgn": 1}), (False, {"sh": 2, "irgn": 0, "orgn": 0})):
        _, pt = table(impl, fmt, coherent, ias=ias, oas=oas)
        cfg = pt.arm_lpae_cfg
        if "-s2-" in fmt:
            assert cfg == {"vtcr": dict(walk, **regs), "vttbr": pt.pgtable_root}
        else:
            assert cfg == {"tcr": dict(walk, **regs), "mair": 0xF404FF44, "ttbr": pt.pgtable_root}
    assert table(impl, "vtd-ss", True)[1].arm_lpae_cfg is None


@pytest.mark.parametrize("strict", [True, False])
def test_batch_fast_paths_decline_for_a_non_coherent_walker(impl, strict):
    """The GIL-free batch fast paths store PTEs through host pointers: for a non-coherent walker
    they decline, so the batch gives what per-call mapping gives (syncs, IOVAs, memory)."""
    import numpy as np
    runs = []
    for batch in (False, True):
        m = impl.Machine(ram=[(0, 1 << 32)], cpus=1, dma_debug=False)
        mmu = m.add_iommu(fmt="arm-lpae-s1-4k", strict=strict, coherent_walk=False)
        dev = m.add_device("nic0", iommu=mmu)
        bufs = [m.alloc_pages(1) for _ in range(40)]
        rounds = []
        for _ in range(3):                        # later rounds hit the IOVA rcache (the fast path)
            if batch:
                iovas = [int(a) for a in impl.dma_map_phys_batch(dev, np.array(bufs, dtype=np.uint64),
                                                                 np.full(40, 4096, dtype=np.uint64), 0)]
            else:
                iovas = [impl.dma_map_phys(dev, b, 4096, 0, 0) for b in bufs]
            seen = [(dev.dma_read(a, 8), dev.domain.pgtable.translate(a)) for a in iovas]
            if batch:
                impl.dma_unmap_phys_batch(dev, np.array(iovas, dtype=np.uint64),
                                          np.full(40, 4096, dtype=np.uint64), 0)
            else:
                for a in iovas:
                    impl.dma_unmap_phys(dev, a, 4096, 0, 0)
            rounds.append((iovas, seen))
        m.advance(20_000_000)
        pt = dev.domain.pgtable
        runs.append((rounds, pt.table_syncs, pt.table_sync_bytes, pt.get_state()["mappings"],
                     m.mem.cache_dirty_lines()))
    assert runs[0] == runs[1]
    assert runs[0][1] >= 2 * 3 * 40              # at least a sync per map and per unmap
