"""Machine.add_ram / remove_ram: embedder-owned RAM, zero copy both ways (core and reference)."""

import gc
import mmap

import numpy as np
import pytest

import dmaphys as dma
from dmaphys.errors import DmaFault, PhysAddrError

BASE = 0x1_0000_0000          # 4 GiB: above the machine's own RAM
NPAGES = 16


def machine(impl, **kw):
    kw.setdefault("ram", [(0, 1 << 30)])
    kw.setdefault("swiotlb", 0)
    return impl.Machine(**kw)


def make_buffer(kind):
    n = NPAGES * dma.PAGE_SIZE
    if kind == "bytearray":
        return bytearray(n)
    if kind == "numpy":
        return np.zeros((NPAGES, dma.PAGE_SIZE // 4), dtype=np.uint32)
    if kind == "mmap":
        return mmap.mmap(-1, n)
    if kind == "memoryview":
        return memoryview(bytearray(n))
    raise AssertionError(kind)


def dmap(impl, dev, phys, size, dir):
    """dma_map_phys, checked with dma_mapping_error() as a driver must."""
    a = impl.dma_map_phys(dev, phys, size, dir, 0)
    assert not impl.dma_mapping_error(dev, a)
    return a


def raw(buf):
    """The buffer's bytes as a writable flat byte view (the embedder's own access)."""
    return memoryview(buf).cast("B")


@pytest.mark.parametrize("kind", ["bytearray", "numpy", "mmap", "memoryview"])
def test_zero_copy_both_ways(impl, kind):
    m = machine(impl)
    buf = make_buffer(kind)
    m.add_ram(BASE, buf)
    dev = m.add_device("dev0")
    dev.dma_write(BASE + 100, b"device wrote this")             # device -> embedder memory
    with raw(buf) as v:
        assert bytes(v[100:117]) == b"device wrote this"
        v[0x2ff0:0x3010] = bytes(range(0x20))                    # embedder store across a page
    assert dev.dma_read(BASE + 0x2ff0, 0x20) == bytes(range(0x20))
    assert m.mem_read(BASE + 0x2ff0, 0x20) == bytes(range(0x20))
    m.mem_write(BASE + 0x5000, b"cpu")
    with raw(buf) as v:
        assert bytes(v[0x5000:0x5003]) == b"cpu"
    assert (BASE, NPAGES * dma.PAGE_SIZE, "ram", f"Embedder RAM {BASE:#x}") in m.regions
    assert m.mem.resident_frames == 0                            # the embedder's, not dmaphys'
    if kind == "mmap":
        m.remove_ram(BASE)
        buf.close()


def test_iommu_and_swiotlb_see_the_same_bytes(impl):
    m = machine(impl, swiotlb=1 << 20)
    buf = bytearray(NPAGES * dma.PAGE_SIZE)
    m.add_ram(BASE, buf, name="guest RAM")
    iommu = m.add_iommu(fmt="x86-64", strict=True)
    nic = m.add_device("nic0", iommu=iommu)
    buf[0:5] = b"hello"
    iova = dmap(impl, nic, BASE, 4096, dma.DMA_BIDIRECTIONAL)
    assert nic.dma_read(iova, 5) == b"hello"
    nic.dma_write(iova + 8, b"world")
    assert buf[8:13] == b"world"
    impl.dma_unmap_phys(nic, iova, 4096, dma.DMA_BIDIRECTIONAL, 0)
    # a 32-bit device bounces: the bounce copies from and to the embedder's buffer
    d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
    buf[0x1000:0x1004] = b"out!"
    a = dmap(impl, d32, BASE + 0x1000, 64, dma.DMA_BIDIRECTIONAL)
    assert a < 1 << 32 and d32.dma_read(a, 4) == b"out!"
    d32.dma_write(a + 4, b"back")
    assert buf[0x1004:0x1008] == b"\0\0\0\0"                     # not synced yet
    impl.dma_unmap_phys(d32, a, 64, dma.DMA_BIDIRECTIONAL, 0)
    assert buf[0x1004:0x1008] == b"back"


def test_allocatable_ram_holds_page_tables(impl):
    m = machine(impl)
    buf = np.zeros(NPAGES * dma.PAGE_SIZE, dtype=np.uint8)
    m.add_ram(BASE, buf, allocatable=True)
    assert (BASE, NPAGES * dma.PAGE_SIZE) in m.mem.free_extents_list()
    iommu = m.add_iommu(fmt="x86-64")
    dom = iommu.domain_alloc()
    assert impl.iommu_map(dom, 0x10000, 0x2000, 4096, dma.IOMMU_READ | dma.IOMMU_WRITE) == 0
    root = dom.pgtable_root
    assert BASE <= root < BASE + NPAGES * dma.PAGE_SIZE          # top-down: the highest RAM
    assert buf[root - BASE:root - BASE + 4096].any()             # the PTEs, in the embedder's array
    p = m.alloc_pages(1)
    assert BASE <= p < BASE + NPAGES * dma.PAGE_SIZE
    buf[p - BASE] = 0xAA
    m.free_pages(p, 1)                                           # freed pages are zeroed, not dropped
    assert buf[p - BASE] == 0 and m.mem_read(p, 1) == b"\0"
    with pytest.raises(BufferError, match="allocated from it"):
        m.remove_ram(BASE)
    impl.iommu_domain_free(dom)
    m.remove_ram(BASE)
    assert m.mem.free_extents_list() == [(0, 1 << 30)]


def test_not_allocatable_by_default(impl):
    m = machine(impl, ram=[(0, 64 << 20)])
    m.add_ram(BASE, bytearray(NPAGES * dma.PAGE_SIZE))
    assert m.mem.free_extents_list() == [(0, 64 << 20)]
    assert m.alloc_pages(1) < 64 << 20
    assert m.mem.ext_ram_list() == [(BASE, NPAGES * dma.PAGE_SIZE, f"Embedder RAM {BASE:#x}", False)]


@pytest.mark.parametrize("base, buf, exc, match", [
    (BASE + 1, 4096, ValueError, "page aligned"),
    (BASE, 4097, ValueError, "multiple of PAGE_SIZE"),
    (BASE, 0, ValueError, "multiple of PAGE_SIZE"),
    (BASE, b"\0" * 4096, TypeError, "read-only"),
    (BASE, "x" * 4096, TypeError, "buffer-protocol"),
    (BASE, None, TypeError, "buffer-protocol"),
    (0x1000, 4096, ValueError, "overlaps 'System RAM 0'"),
    (1 << 48, 4096, ValueError, "beyond the 48-bit"),
    (-1, 4096, ValueError, "64-bit unsigned"),
])
def test_add_ram_validation(impl, base, buf, exc, match):
    if isinstance(buf, int):
        buf = bytearray(buf)
    m = machine(impl)
    before = (m.regions, m.mem.ram_bytes)
    with pytest.raises(exc, match=match):
        m.add_ram(base, buf)
    assert (m.regions, m.mem.ram_bytes) == before
    if isinstance(buf, bytearray):
        buf.extend(b"x")                                         # no export left behind


def test_add_ram_readonly_and_noncontiguous_numpy(impl):
    m = machine(impl)
    ro = np.zeros(4096, dtype=np.uint8)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        m.add_ram(BASE, ro)
    with pytest.raises(ValueError, match="C-contiguous"):
        m.add_ram(BASE, np.zeros((2, 8192), dtype=np.uint8)[:, ::2])
    m.add_ram(BASE, bytearray(4096))
    with pytest.raises(ValueError, match="overlaps 'Embedder RAM"):
        m.add_ram(BASE, bytearray(4096))


def test_buffer_lifetime(impl):
    m = machine(impl)
    ba = bytearray(2 * 4096)
    mm = mmap.mmap(-1, 4096)
    arr = np.zeros(4096, dtype=np.uint8)
    mvsrc = bytearray(4096)
    mv = memoryview(mvsrc)
    m.add_ram(BASE, ba)
    m.add_ram(BASE + 0x10000, mm)
    m.add_ram(BASE + 0x20000, arr)
    m.add_ram(BASE + 0x30000, mv)
    with pytest.raises(BufferError):
        ba.extend(b"x")                                          # resize: refused while held
    with pytest.raises(BufferError):
        del ba[0:4096]
    with pytest.raises(BufferError):
        mm.close()
    with pytest.raises(BufferError):
        mm.resize(8192)
    with pytest.raises(ValueError):
        arr.resize(8192)
    with pytest.raises(BufferError):
        mv.release()
    with pytest.raises(BufferError):
        mvsrc.extend(b"x")
    for off in (0, 0x10000, 0x20000, 0x30000):
        m.remove_ram(BASE + off)
    ba.extend(b"x")                                              # released: the embedder may again
    mm.close()
    arr.resize(8192, refcheck=False)
    mv.release()
    mvsrc.extend(b"x")
    with pytest.raises(PhysAddrError):
        m.mem_read(BASE, 1)
    with pytest.raises(ValueError, match="no embedder RAM"):
        m.remove_ram(BASE)
    with pytest.raises(ValueError, match="no embedder RAM"):
        m.remove_ram(0)                                          # the machine's own RAM


def test_machine_end_releases_the_buffer(impl):
    m = machine(impl)
    ba = bytearray(4096)
    m.add_ram(BASE, ba)
    m.add_device("dev0").dma_write(BASE, b"x")
    del m
    gc.collect()
    ba.extend(b"x")
    assert ba[0:1] == b"x"


def test_remove_while_mapped(impl):
    m = machine(impl, swiotlb=1 << 20)
    buf = bytearray(NPAGES * dma.PAGE_SIZE)
    m.add_ram(BASE, buf)
    dev = m.add_device("dev0")
    a = dmap(impl, dev, BASE + 0x1000, 256, dma.DMA_TO_DEVICE)
    with pytest.raises(BufferError, match=r"dev0 has a (single|phy)\w* mapping .*dma-debug"):
        m.remove_ram(BASE)
    impl.dma_unmap_phys(dev, a, 256, dma.DMA_TO_DEVICE, 0)
    m.dma_debug.enabled = False
    d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
    a = dmap(impl, d32, BASE + 0x2000, 256, dma.DMA_FROM_DEVICE)
    with pytest.raises(BufferError, match="swiotlb slot"):
        m.remove_ram(BASE)
    impl.dma_unmap_phys(d32, a, 256, dma.DMA_FROM_DEVICE, 0)
    iommu = m.add_iommu(fmt="vtd-ss", strict=False)
    nic = m.add_device("nic", iommu=iommu)
    a = dmap(impl, nic, BASE + 0x3000, 4096, dma.DMA_TO_DEVICE)
    with pytest.raises(BufferError, match="IOMMU domain .* maps IOVA"):
        m.remove_ram(BASE)
    assert m.mem_read(BASE, 1) == b"\0"                          # the refusal changed nothing
    assert nic.dma_read(a, 4) == b"\0" * 4                       # fills the IOTLB
    impl.dma_unmap_phys(nic, a, 4096, dma.DMA_TO_DEVICE, 0)
    m.remove_ram(BASE)                                           # lazy: the IOTLB may still hold it
    with pytest.raises(DmaFault, match="no RAM or MMIO"):
        nic.dma_read(a, 4)                                       # stale entry -> a hole, not freed memory
    with pytest.raises(DmaFault):
        dev.dma_write(BASE, b"x")
    buf.extend(b"x")


def test_core_and_reference_agree():
    """The same stream on both backends leaves the same bytes in the embedders' buffers."""
    import dmaphys.reference as ref
    out = []
    for impl in (dma, ref):
        m = impl.Machine(ram=[(0, 64 << 20)], swiotlb=1 << 20)
        buf = np.zeros(NPAGES * dma.PAGE_SIZE, dtype=np.uint8)
        m.add_ram(BASE, buf, allocatable=True)
        iommu = m.add_iommu(fmt="arm-lpae-s1-4k", strict=False)
        nic = m.add_device("nic", iommu=iommu)
        d32 = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
        rng = np.random.default_rng(7)
        for i in range(40):
            off = int(rng.integers(0, NPAGES * dma.PAGE_SIZE - 512))
            dev = nic if i % 2 else d32
            a = dmap(impl, dev, BASE + off, 512, dma.DMA_BIDIRECTIONAL)
            dev.dma_write(a + 3, bytes([i]) * 100)
            impl.dma_unmap_phys(dev, a, 512, dma.DMA_BIDIRECTIONAL, 0)
            p = m.alloc_pages(1)
            m.mem_write(p + i, b"alloc")
            m.free_pages(p, 1)
        out.append((buf.tobytes(), m.regions, m.mem.free_extents_list(), m.mem.ext_ram_list(),
                    iommu.get_state(), m.mem.resident_frames))
    assert out[0] == out[1]
