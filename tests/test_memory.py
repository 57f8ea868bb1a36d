"""The simulated machine's physical memory: sparse, byte-accurate, holes fault (both backends)."""

import numpy as np
import pytest

import dmaphys as dma


def test_never_written_ram_reads_zero(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    assert m.mem_read(0x1234, 16) == bytes(16)


def test_write_read_across_pages(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    data = bytes(range(256)) * 40                 # 10240 bytes, three frames
    m.mem_write(0x1F00, data)
    assert m.mem_read(0x1F00, len(data)) == data
    assert m.mem_read(0x1EFF, 2) == b"\x00\x00"
    m.mem_write(0x5000, np.arange(8, dtype=np.uint8))
    assert m.mem_read(0x5000, 8) == bytes(range(8))


def test_hole_raises_phys_addr_error(impl):
    m = impl.Machine(ram=[(0, 3 << 30), (4 << 30, 1 << 30)], swiotlb=0)
    with pytest.raises(dma.PhysAddrError) as ei:
        m.mem_read(3 << 30, 4)
    assert ei.value.phys == 3 << 30
    with pytest.raises(dma.PhysAddrError):
        m.mem_write((3 << 30) - 2, b"abcd")        # straddles RAM end
    with pytest.raises(dma.PhysAddrError):
        m.mem_write(5 << 30, b"x")


def test_mmio_region_has_its_own_store(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    m.add_mmio(0xF000_0000, 1 << 20, "bar0")
    m.mem_write(0xF000_0010, b"mmio")
    assert m.mem_read(0xF000_0010, 4) == b"mmio"
    assert ("mmio" in [r[2] for r in m.regions])
    with pytest.raises(ValueError):
        m.add_mmio(0x1000, 0x1000, "overlaps RAM")


def test_sparse_memory_bound():
    """64 GiB of RAM with 100 MiB touched costs ~100 MiB of frames, not 64 GiB."""
    m = dma.Machine(ram=[(0, 64 << 30)], swiotlb=0)
    chunk = bytes(range(256)) * 4096              # 1 MiB
    for i in range(100):
        m.mem_write((i * 600) << 20, chunk)
    assert m.mem.resident_frames == 100 * 256
    assert m.mem_read((99 * 600) << 20, 256) == bytes(range(256))


def test_alloc_pages_top_down_zeroed_and_freed(impl):
    m = impl.Machine(ram=[(0, 3 << 30), (4 << 30, 1 << 30)], swiotlb=0)
    p = m.alloc_pages(4)
    assert p == (5 << 30) - 4 * 4096               # memblock-style: from the top
    q = m.alloc_pages(1, limit=1 << 32)
    assert q == (3 << 30) - 4096
    m.mem_write(p, b"dirty")
    m.free_pages(p, 4)
    assert m.alloc_pages(4) == p
    assert m.mem_read(p, 5) == bytes(5)           # zeroed on reuse
    with pytest.raises(ValueError):
        m.free_pages(q + 4096, 1)                  # not an allocation
    r = m.alloc_pages(16, align=16)
    assert r % (16 * 4096) == 0


def test_bad_input_is_rejected(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    with pytest.raises(ValueError):
        m.mem_read(-1, 4)
    with pytest.raises(TypeError):
        m.mem_write(0, "text")
    with pytest.raises(TypeError):
        m.mem_read(1.5, 4)
    with pytest.raises(ValueError):
        m.cpu = 99
    with pytest.raises(ValueError):
        impl.Machine(ram=[(0x123, 1 << 20)])


def test_device_bus_access_direct(impl):
    m = impl.Machine(ram=[(0, 3 << 30), (4 << 30, 4 << 30)], swiotlb=0)
    dev = m.add_device("d32", dma_mask=dma.DMA_BIT_MASK(32))
    m.mem_write(0x10000, b"payload")
    assert dev.dma_read(0x10000, 7) == b"payload"
    dev.dma_write(0x20000, b"from device")
    assert m.mem_read(0x20000, 11) == b"from device"
    with pytest.raises(dma.DmaFault) as ei:
        dev.dma_read(5 << 30, 4)                   # RAM, but beyond the 32-bit mask
    assert "limit" in ei.value.reason
    with pytest.raises(dma.DmaFault):
        dev.dma_read(0xC000_0000, 4)               # a hole
    off = m.add_device("offset", dma_range_map=[(4 << 30, 0, 1 << 30)])
    m.mem_write(4 << 30, b"hi")
    assert off.dma_read(0, 2) == b"hi"
    with pytest.raises(dma.DmaFault):
        off.dma_read(2 << 30, 2)                   # no region translates it


def test_virtual_clock_timers(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    fired = []
    m.add_timer(10, lambda: fired.append(m.clock_ns))
    m.add_timer(5, lambda: fired.append(m.clock_ns))
    m.advance(7)
    assert fired == [5]
    m.advance(100)
    assert fired == [5, 10] and m.clock_ns == 107


def test_reference_memory_mirrors_the_core_beyond_the_physical_space():
    """A store past MAX_PHYS_BITS raises like the core's page_ptr_alloc (found by the page-table
    differential test following a corrupted PTE); zero fills and zero copies create no frames."""
    from dmaphys.reference.memory import PhysMem
    mem = PhysMem()
    with pytest.raises(dma.PhysAddrError, match="beyond the physical address space"):
        mem.write(1 << 48, b"\x01")
    assert mem.read(1 << 48, 2) == b"\0\0"
    mem.fill(0x1000, 0, 4096)
    mem.copy(0x3000, 0x5000, 4096)
    assert mem.resident_frames == 0
    mem.fill(0x1000, 7, 1)
    assert mem.resident_frames == 1
