"""Drive the dmaring device model (C: dmaring.c, Cython: dmaring_cy.pyx) against dmaphys.

    python examples/embed/run.py           # builds both examples in a temp dir and runs them

The "driver" side (what a kernel driver does) is Python here: it allocates the ring, the
completion area and the buffers, maps them with dma_map_phys, writes descriptors holding the
bus addresses, and hands the device capsule to the engine. The engine (the device) then does
every access itself through dmaphys's C ABI: descriptor fetch, buffer read, buffer write,
completion write, each through the IOMMU (IOTLB, page tables, faults) or dma-direct.
"""

from __future__ import annotations

import struct
import sys
import tempfile

import dmaphys as dma

DESC = struct.Struct("<QQIIQ")        # src, dst, len, flags, cookie (32 bytes)
CPL = struct.Struct("<QII")           # cookie, status, bytes (16 bytes)
DESC_VALID, CPL_OK, CPL_FAULT = 1, 1, 2
PAGE = 4096


GUEST_BASE = 0x4000_0000              # the embedder's RAM, right above the machine's 1 GiB
GUEST_SIZE = 4 << 20
HOLE = 0x8000_0000                    # nothing there: a dma-direct access faults


class Guest:
    """The host simulator's own guest RAM (a bytearray), lent to dmaphys with Machine.add_ram:
    zero copy, so the device model's DMA lands in these bytes and CPU stores made here are
    what the device reads. A bump allocator hands out page runs."""

    def __init__(self, m):
        self.ram = bytearray(GUEST_SIZE)
        self.next = 0
        m.add_ram(GUEST_BASE, self.ram)

    def alloc(self, nbytes):
        phys = GUEST_BASE + self.next
        self.next += (nbytes + PAGE - 1) // PAGE * PAGE
        assert self.next <= GUEST_SIZE
        return phys

    def store(self, phys, data):                      # a CPU store of the simulated machine
        self.ram[phys - GUEST_BASE:phys - GUEST_BASE + len(data)] = data

    def load(self, phys, n):
        return bytes(self.ram[phys - GUEST_BASE:phys - GUEST_BASE + n])


def make_machine(behind_iommu: bool):
    """A machine with RAM [0, 1 GiB), the embedder's RAM at 1 GiB (Guest), and one DMA engine,
    behind an IOMMU (VT-d with dirty tracking, as a VMM migrating the device needs) or
    dma-direct. Returns (machine, device, guest)."""
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0, cpus=1)
    guest = Guest(m)
    if behind_iommu:
        iommu = m.add_iommu("vtd-ss", strict=True, dirty_tracking=True)
        dev = m.add_device("dmaring0", dma_mask=dma.DMA_BIT_MASK(64), iommu=iommu)
    else:
        dev = m.add_device("dmaring0", dma_mask=dma.DMA_BIT_MASK(32))
    return m, dev, guest


def run_ring(engine, m, dev, guest, lengths, xor=0, fault_at=None):
    """Post one descriptor per length, run the engine, check every byte and completion.

    Ring, completions and buffers live in the embedder's RAM (guest); the bytes are checked
    there. fault_at=i gives descriptor i a source the device cannot reach (an unmapped IOVA
    behind the IOMMU, a hole in the physical map for dma-direct): the engine must stop there
    with a fault record and a CPL_FAULT completion. Returns (completed, fault).
    """
    n = len(lengths)
    ring_phys = guest.alloc(PAGE)
    cpl_phys = guest.alloc(PAGE)
    maps = []                                          # (addr, size, dir) to unmap at the end

    def map_(phys, size, dir):
        addr = dma.dma_map_phys(dev, phys, size, dir, 0)
        assert dma.dma_mapping_error(dev, addr) == 0
        maps.append((addr, size, dir))
        return addr

    ring = map_(ring_phys, PAGE, dma.DMA_TO_DEVICE)
    cpl = map_(cpl_phys, PAGE, dma.DMA_FROM_DEVICE)
    bufs = []
    for i, length in enumerate(lengths):
        src_phys = guest.alloc(length + PAGE) + 123     # odd offsets: sub-page mappings
        dst_phys = guest.alloc(length + PAGE) + 7
        data = bytes((i * 31 + k * 7 + 1) & 0xFF for k in range(length))
        guest.store(src_phys, data)
        src = map_(src_phys, length, dma.DMA_TO_DEVICE)
        dst = map_(dst_phys, length, dma.DMA_FROM_DEVICE)
        if i == fault_at:
            # behind an IOMMU: an IOVA nobody mapped; dma-direct: a bus address with no RAM
            src = (0xDEAD0000 + 0x40) if dev.domain is not None else (HOLE + 0x40)
        bufs.append((data, src_phys, dst_phys))
        guest.store(ring_phys + i * DESC.size,
                    DESC.pack(src, dst, length, DESC_VALID | (xor << 8), 0xC0DE0000 + i))
    guest.store(ring_phys + n * DESC.size, DESC.pack(0, 0, 0, 0, 0))   # end of ring

    # a migrating VMM's dirty log over every IOVA the run can touch (the C engine: ABI 1.2)
    log = getattr(engine, "dirty_log", None) if dev.domain is not None else None
    lo = min(a for a, _, _ in maps) & ~(PAGE - 1)
    span = -(-max(a + s for a, s, _ in maps) // PAGE) * PAGE - lo
    if log:
        assert log(dev.capsule, lo, span, PAGE)[0] == 0    # tracking on, a clean start

    # the C engine takes the C ABI's device capsule; the Cython one (cimport dmaphys) the Device
    handle = dev if getattr(engine, "TAKES_DEVICE", False) else dev.capsule
    completed, fault = engine.ring_run(handle, ring, n + 1, cpl)

    expect = n if fault_at is None else fault_at
    if log:
        # exactly the pages the device wrote: its destination buffers and its completions
        rc, pages, _ = log(dev.capsule, lo, span, PAGE)
        wrote = [(maps[3 + 2 * i][0], lengths[i]) for i in range(expect)]
        wrote.append((cpl, CPL.size * (expect + (fault_at is not None))))
        want = {p for a, s in wrote for p in range((a - lo) // PAGE, (a + s - 1 - lo) // PAGE + 1)}
        assert rc == 0 and set(pages) == want, (rc, sorted(pages), sorted(want))
        assert log(dev.capsule, lo, span, PAGE) == (0, [], None)     # cleared
    assert completed == expect, (completed, fault)
    for i, (data, _, dst_phys) in enumerate(bufs[:expect]):
        got = guest.load(dst_phys, len(data))
        assert got == bytes(b ^ xor for b in data), f"descriptor {i}: bytes differ"
        cpl_rec = CPL.unpack(guest.load(cpl_phys + i * CPL.size, CPL.size))
        assert cpl_rec == (0xC0DE0000 + i, CPL_OK, len(data)), f"descriptor {i}: completion {cpl_rec}"
    if fault_at is None:
        assert fault is None, fault
    else:
        assert fault is not None and fault["access"] == "read", fault
        cookie, status, nbytes = CPL.unpack(guest.load(cpl_phys + fault_at * CPL.size, CPL.size))
        assert (cookie, status, nbytes) == (0xC0DE0000 + fault_at, CPL_FAULT, 0)
        assert guest.load(bufs[fault_at][2], len(bufs[fault_at][0])) == bytes(len(bufs[fault_at][0]))
    for addr, size, dir in maps:
        dma.dma_unmap_phys(dev, addr, size, dir, 0)
    return completed, fault


def main():
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from build import build

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("dmaring", "dmaring_cy"):
            engine = build(name, tmp)
            for behind_iommu in (True, False):
                m, dev, guest = make_machine(behind_iommu)
                done, _ = run_ring(engine, m, dev, guest, [64, 4096, 10000, 1], xor=0x5A)
                _, fault = run_ring(engine, m, dev, guest, [256, 512, 128], fault_at=1)
                kind = "IOMMU" if behind_iommu else "dma-direct"
                print(f"{name:10s} {kind:10s}: {done} descriptors copied; fault: {fault['type']} "
                      f"at {fault['addr']:#x} ({fault['reason']})")


if __name__ == "__main__":
    main()
