"""A VFIO-style dma-buf exporter of GPU BAR memory and its importers, with PCI P2PDMA.

This is the use case the kernel moved the DMA API to physical addresses for: the exported
memory is a slice of a peer's BAR, it has no struct page, and an importer below the same PCIe
switch must be programmed with the PCI *bus* address (PCI_P2PDMA_MAP_BUS_ADDR), something
neither dma_map_page() nor dma_map_resource() could give.

``dma_buf_phys_vec_to_sgt()`` / ``dma_buf_free_sgt()`` below follow the kernel helpers of
drivers/dma-buf/dma-buf-mapping.c (v6.19) step by step, written against dmaphys's public API:

- BUS_ADDR:          no mapping at all, every range is pci_p2pdma_bus_addr_map()'d;
- THRU_HOST_BRIDGE:  dma_iova_try_alloc() one IOVA range for the whole buffer, dma_iova_link()
                     each range with DMA_ATTR_MMIO and one dma_iova_sync(); without an IOMMU
                     (dma-direct) dma_map_phys(..., DMA_ATTR_MMIO) per range;
- anything else:     -EINVAL.

Topology (bus address = CPU address - 0x30_0000_0000, as on some arm64 host bridges):

    hb0 (allow-listed) -+- sw0 -+- gpu   exporter, BAR at 0x38_0000_0000 (bus 0x8_0000_0000)
                        |       +- nic   importer below the same switch        -> BUS_ADDR
                        +- RP  ---- nvme  importer, dma-direct                  -> THRU_HOST_BRIDGE
                        +- RP  ---- rdma  importer behind an IOMMU              -> THRU_HOST_BRIDGE
    hb1 (not listed)   ---- RP  ---- fpga  importer on another host bridge       -> NOT_SUPPORTED

Run: ``python examples/p2p_dmabuf.py``
"""

from __future__ import annotations

import warnings

import dmaphys as dma

UINT_MAX = 0xFFFF_FFFF
BAR_CPU = 0x38_0000_0000
BAR_BUS = 0x8_0000_0000
BAR_SIZE = 64 << 20


class DmaBufDma:
    """struct dma_buf_dma: the DMA-only table (sgt.orig_nents = 0) and the IOVA state."""

    def __init__(self, map_type, state, size):
        self.map_type = map_type
        self.state = state                   # DmaIovaState or None (BUS_ADDR)
        self.size = size
        self.segments: list[tuple[int, int]] = []     # (sg_dma_address, sg_dma_len)


def fill_sg_entry(dma_buf, length, addr):
    """fill_sg_entry(): one DMA range as entries of at most UINT_MAX bytes each."""
    i = 0
    while length:
        n = min(length, UINT_MAX)
        dma_buf.segments.append((addr + i * UINT_MAX, n))
        length -= n
        i += 1


def dma_buf_phys_vec_to_sgt(dev, provider, phys_vec, size, dir):
    """dma_buf_phys_vec_to_sgt(): a DmaBufDma, or -errno (the kernel's ERR_PTR).

    Like the kernel's (v6.19 and the 2026 revisions read), every range is linked at IOVA
    offset 0: with more than one range behind an IOMMU the second link lands on the first
    and fails (-EADDRINUSE here); tests/test_p2pdma.py shows it. With one range, VFIO's usual
    case, all is well.
    """
    map_type = dma.pci_p2pdma_map_type(provider, dev)
    if map_type == dma.PCI_P2PDMA_MAP_BUS_ADDR:
        state = None                                        # no IOVA for this flow
    elif map_type == dma.PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
        state = dma.DmaIovaState()
        dma.dma_iova_try_alloc(dev, state, 0, size)
    else:
        return -dma.EINVAL
    out = DmaBufDma(map_type, state, size)
    use_iova = state is not None and dma.dma_use_iova(state)
    mapped_len = 0
    for i, (paddr, length) in enumerate(phys_vec):
        if state is None:
            addr = dma.pci_p2pdma_bus_addr_map(provider, paddr)
        elif use_iova:
            ret = dma.dma_iova_link(dev, state, paddr, 0, length, dir, dma.DMA_ATTR_MMIO)
            if ret:
                _err_unmap(dev, out, i, mapped_len, dir)
                return ret
            mapped_len += length
        else:
            addr = dma.dma_map_phys(dev, paddr, length, dir, dma.DMA_ATTR_MMIO)
            if dma.dma_mapping_error(dev, addr):
                _err_unmap(dev, out, i, mapped_len, dir)
                return -dma.ENOMEM
        if not use_iova:
            fill_sg_entry(out, length, addr)
    if use_iova:
        ret = dma.dma_iova_sync(dev, state, 0, mapped_len)
        if ret:
            _err_unmap(dev, out, len(phys_vec), mapped_len, dir)
            return ret
        fill_sg_entry(out, mapped_len, state.addr)
    return out


def _err_unmap(dev, dma_buf, i, mapped_len, dir):
    """The err_unmap_dma path. As in the kernel, a failure on the first range undoes nothing
    (an IOVA range from dma_iova_try_alloc() is then not given back); the kernel also walks
    the zero-filled tail of its table, which is left out here."""
    if i == 0 or dma_buf.state is None:
        return
    if dma.dma_use_iova(dma_buf.state):
        dma.dma_iova_destroy(dev, dma_buf.state, mapped_len, dir, dma.DMA_ATTR_MMIO)
        return
    for addr, length in dma_buf.segments:
        dma.dma_unmap_phys(dev, addr, length, dir, dma.DMA_ATTR_MMIO)


def dma_buf_free_sgt(dev, dma_buf, dir):
    """dma_buf_free_sgt(): nothing for bus addresses, one dma_iova_destroy(), or per-entry unmaps."""
    if dma_buf.state is None:
        return
    if dma.dma_use_iova(dma_buf.state):
        dma.dma_iova_destroy(dev, dma_buf.state, dma_buf.size, dir, dma.DMA_ATTR_MMIO)
        return
    for addr, length in dma_buf.segments:
        dma.dma_unmap_phys(dev, addr, length, dir, dma.DMA_ATTR_MMIO)


def build_machine():
    m = dma.Machine(ram=[(0, 2 << 30)], swiotlb=0)
    hb0 = m.add_host_bridge("hb0", p2p_allowlisted=True)
    hb1 = m.add_host_bridge("hb1")
    sw0 = m.add_switch("sw0", parent=hb0)
    iommu = m.add_iommu("vtd-ss")
    devs = {
        "gpu": m.add_device("gpu", parent=sw0),
        "nic": m.add_device("nic", parent=sw0),
        "nvme": m.add_device("nvme", parent=hb0),
        "rdma": m.add_device("rdma", parent=hb0, iommu=iommu),
        "fpga": m.add_device("fpga", parent=hb1),
    }
    # The exporter's BAR: VFIO's pcim_p2pdma_provider() path, a provider without struct pages.
    provider = m.add_p2pmem(devs["gpu"], BAR_CPU, BAR_SIZE, bus_addr=BAR_BUS, pages=False)
    return m, devs, provider


def main(verbose=True, phys_vec=None):
    """Attach every importer to the buffer, let it write through its mapping, check the BAR."""
    m, devs, provider = build_machine()
    say = print if verbose else (lambda *a: None)
    if phys_vec is None:                       # VFIO's phys_vec[]: one chunk of the BAR
        phys_vec = [(BAR_CPU + 0x10_0000, 0x6000)]
    size = sum(n for _, n in phys_vec)
    say(f"exporter gpu {devs['gpu'].p2p_node.pci_name}: BAR {BAR_CPU:#x}, bus address {BAR_BUS:#x} "
        f"(bus_offset {provider.bus_offset:#x})")
    results = {}
    for name in ("nic", "nvme", "rdma", "fpga"):
        dev = devs[name]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", dma.KernelWarning)
            sgt = dma_buf_phys_vec_to_sgt(dev, provider, phys_vec, size, dma.DMA_BIDIRECTIONAL)
        kind = dma.PciP2PdmaMapType(dma.pci_p2pdma_map_type(provider, dev)).name
        results[name] = sgt
        if isinstance(sgt, int):
            say(f"  {name:5s} {dev.p2p_node.pci_name}: {kind}: attach fails with {sgt}")
            for w in caught:
                say(f"        kernel: {w.message}")
            continue
        segs = ", ".join(f"{a:#x}+{n:#x}" for a, n in sgt.segments)
        say(f"  {name:5s} {dev.p2p_node.pci_name}: {kind}: {segs}")
        # The importer writes its name at the start of every page of the buffer, through its
        # own DMA addresses; the bytes must land in the exporter's BAR.
        payload = name.encode().ljust(16, b".")
        dma_pos = [(a + off, n - off) for a, n in sgt.segments for off in range(0, n, 0x1000)]
        cpu_pos = [p + off for p, n in phys_vec for off in range(0, n, 0x1000)]
        for addr, _ in dma_pos:
            dev.dma_write(addr, payload)
        assert all(m.mem_read(p, 16) == payload for p in cpu_pos), name
        dma_buf_free_sgt(dev, sgt, dma.DMA_BIDIRECTIONAL)
    return m, results


if __name__ == "__main__":
    main()
