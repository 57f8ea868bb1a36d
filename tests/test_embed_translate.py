"""dev.translate(): QEMU-style IOMMUTLBEntry of the page holding a bus address (core and reference)."""

import pytest

import dmaphys as dma
import dmaphys.reference as ref
from dmaphys.errors import DmaDebugWarning, DmaFault, IommuFault

RW = dma.IOMMU_READ | dma.IOMMU_WRITE


def entry(e):
    return (e.iova, e.translated_addr, e.addr_mask, e.perm)


def dmap(impl, dev, phys, size, dir):
    a = impl.dma_map_phys(dev, phys, size, dir, 0)
    assert not impl.dma_mapping_error(dev, a)
    return a


def test_qemu_access_flags():
    assert (dma.IOMMU_NONE, dma.IOMMU_RO, dma.IOMMU_WO, dma.IOMMU_RW) == (0, 1, 2, 3)
    assert dma.IOMMU_RO == dma.IOMMU_READ and dma.IOMMU_WO == dma.IOMMU_WRITE


def test_dma_direct(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dev = m.add_device("dev0")
    e = dev.translate(0x12345)
    assert entry(e) == (0x12000, 0x12000, 0xFFF, dma.IOMMU_RW)
    assert repr(e) == ("IOMMUTLBEntry(iova=0x12000, translated_addr=0x12000, addr_mask=0xfff, "
                       "perm=IOMMU_RW)")
    assert e == impl.IOMMUTLBEntry(0x12000, 0x12000, 0xFFF, 3) and hash(e) == hash(impl.IOMMUTLBEntry(
        0x12000, 0x12000, 0xFFF, 3))
    off = m.add_device("off", dma_range_map=[(0, 0x8000_0000, 1 << 30)])
    assert entry(off.translate(0x8000_1234, write=True)) == (0x8000_1000, 0x1000, 0xFFF, dma.IOMMU_RW)
    with pytest.raises(DmaFault, match="no dma_range_map region"):
        off.translate(0x1000)
    d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
    with pytest.raises(DmaFault, match="addressing limit"):
        d32.translate(1 << 32)
    with pytest.raises(DmaFault, match="no RAM or MMIO"):
        dev.translate(1 << 31)
    assert (d32.faults, off.faults, dev.faults) == (1, 1, 1)


def test_iommu_translate_counts_like_a_device_access(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    iommu = m.add_iommu(fmt="x86-64", strict=True)
    nic = m.add_device("nic", iommu=iommu)
    buf = m.alloc_pages(1)
    iova = dmap(impl, nic, buf + 0x10, 256, dma.DMA_TO_DEVICE)
    tlb = iommu.iotlb
    e = nic.translate(iova + 5)
    assert entry(e) == (iova & ~0xFFF, buf, 0xFFF, dma.IOMMU_RO)
    assert (tlb.hits, tlb.misses, tlb.fills) == (0, 1, 1)
    assert nic.translate(iova) == e
    assert (tlb.hits, tlb.misses, tlb.fills) == (1, 1, 1)
    nic.dma_read(iova, 4)
    assert tlb.hits == 2
    with pytest.raises(IommuFault, match="write-denied") as ei:
        nic.translate(iova, write=True)
    assert ei.value.size == 1 and ei.value.iova == iova
    assert iommu.faults[-1]["reason"] == "write-denied" and iommu.faults[-1]["size"] == 1
    with pytest.raises(IommuFault, match="not-present"):
        nic.translate(iova + 0x1000)
    assert nic.faults == 2 and nic.domain.faults == 2
    iommu.fault_mode = "record"
    e = nic.translate(iova + 0x1000)
    assert entry(e) == ((iova + 0x1000) & ~0xFFF, 0, 0xFFF, dma.IOMMU_NONE)
    assert len(iommu.faults) == 3


def test_blocked_and_identity(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    iommu = m.add_iommu(fmt="vtd-ss")
    blk = m.add_device("blk", iommu=iommu, domain_type="blocked")
    with pytest.raises(IommuFault, match="blocked"):
        blk.translate(0x1000)
    ident = m.add_device("ident", iommu=iommu, domain_type="identity")
    assert entry(ident.translate(0x4321)) == (0x4000, 0x4000, 0xFFF, dma.IOMMU_RW)


@pytest.mark.parametrize("fmt", ["x86-64", "arm-lpae-s1-4k"])
def test_large_leaf_reports_its_size(impl, fmt):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    iommu = m.add_iommu(fmt=fmt)
    dom = iommu.domain_alloc()
    dev = m.add_device("dev", iommu=iommu)
    assert impl.iommu_attach_device(dom, dev) == 0
    assert impl.iommu_map(dom, 0x4000_0000, 0x20_0000, 0x20_0000, RW) == 0
    e = dev.translate(0x4012_3456, write=True)
    assert entry(e) == (0x4000_0000, 0x20_0000, 0x1F_FFFF, dma.IOMMU_RW)
    assert iommu.iotlb.probe(dom, 0x4012_3456) == (0x32_3456, 0x20_0000, RW)


def test_lazy_stale_translation(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    iommu = m.add_iommu(fmt="x86-64", strict=False)
    nic = m.add_device("nic", iommu=iommu)
    buf = m.alloc_pages(1)
    iova = dmap(impl, nic, buf, 4096, dma.DMA_FROM_DEVICE)
    e = nic.translate(iova, write=True)
    impl.dma_unmap_phys(nic, iova, 4096, dma.DMA_FROM_DEVICE, 0)
    with pytest.warns(DmaDebugWarning, match="stale"):
        assert nic.translate(iova, write=True) == e             # the IOTLB still holds it
    assert iommu.iotlb.stale_hits == 1
    m.advance(10_000_000)                                         # the flush queue's timeout
    with pytest.raises(IommuFault, match="not-present"):
        nic.translate(iova, write=True)


def test_bad_arguments(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dev = m.add_device("dev")
    with pytest.raises(TypeError):
        dev.translate("0x1000")
    with pytest.raises(ValueError):
        dev.translate(-1)


def test_core_and_reference_agree():
    out = []
    for impl in (dma, ref):
        m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0, dma_debug=False)
        iommu = m.add_iommu(fmt="vtd-ss", strict=False, iotlb={"entries": 16, "ways": 2},
                            fault_mode="record")
        nic = m.add_device("nic", iommu=iommu)
        res = []
        live = []
        for i in range(200):
            if i % 3 == 0 and len(live) < 20:
                d = (dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL)[i % 4 % 3]
                live.append((dmap(impl, nic, m.alloc_pages(1), 4096, d), d))
            elif i % 7 == 0 and live:
                a, d = live.pop(i % len(live))
                impl.dma_unmap_phys(nic, a, 4096, d, 0)
            if live:
                a, _ = live[(i * 5) % len(live)]
                res.append(entry(nic.translate(a + i, write=bool(i & 1))))
            res.append(entry(nic.translate(0xFFFF_0000 - i * 0x1000)))
        out.append((res, iommu.get_state(), nic.faults))
    assert out[0] == out[1]
