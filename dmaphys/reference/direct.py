"""Reference model of kernel/dma/direct.c and kernel/dma/direct.h (mirrors _kernel/direct.pxi).

dma_direct_map_phys / unmap / single and sg syncs, the sg loop with its P2PDMA
classification and unwind, dma_direct_supported, dma_direct_get_required_mask,
dma_direct_max_mapping_size, dma_direct_all_ram_mapped, dma_direct_need_sync and the
coherent allocator. Not modelled (as in the core): memory encryption, KMSAN, the powerpc
arch_dma_map_*_direct bypass, CMA / per-device coherent pools, remapped uncached buffers,
and dma_kmalloc_needs_bounce() (false: CONFIG_DMA_BOUNCE_UNALIGNED_KMALLOC is off, x86).
"""

from __future__ import annotations

from ..constants import (
    DMA_ATTR_MMIO,
    DMA_ATTR_NO_KERNEL_MAPPING,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_MAPPING_ERROR,
    EIO,
    EREMOTEIO,
    PCI_P2PDMA_MAP_BUS_ADDR,
    PCI_P2PDMA_MAP_NONE,
    PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
)
from ..errors import KernelWarning
from . import swiotlb as _swiotlb
from ._util import DMA_BIT_MASK, U64_MAX, min_not_zero
from .machine import (
    arch_sync_dma_for_cpu,
    arch_sync_dma_for_device,
    dma_capable,
    dma_to_phys,
    phys_to_dma,
)
from .p2pdma import p2pdma_state
from .scatterlist import SG_DMA_BUS_ADDRESS

__all__: list[str] = []

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ZONE_DMA_BITS = 24                   # x86: zone_dma_limit = DMA_BIT_MASK(24)

# which copy of the static inline dma_direct_map_phys() runs (each has its own WARN_ONCE flag)
DIRECT_H_IN_MAPPING_C = 0
DIRECT_H_IN_DIRECT_C = 1


def zone_dma_limit() -> int:
    return DMA_BIT_MASK(ZONE_DMA_BITS)


def machine_max_pfn(m) -> int:
    """max_pfn: one past the highest RAM page frame."""
    return m.max_phys_ram() >> PAGE_SHIFT


def _fls64(x: int) -> int:
    return x.bit_length()


def dma_direct_overflow(dev, dma_addr: int, size: int, copy: int) -> None:
    """The err_overflow label of dma_direct_map_phys()."""
    where = "mapping.c" if copy == DIRECT_H_IN_MAPPING_C else "direct.c"
    dev.machine.kwarn(KernelWarning,
                      f"{dev.name}: DMA addr 0x{dma_addr:016x}+{size} overflow "
                      f"(mask {dev._dma_mask:x}, bus limit {dev.bus_dma_limit:x}).",
                      f"direct.h:dma_direct_map_phys:overflow@{where}")


# ---- direct.h: dma_direct_map_phys() -------------------------------------------------------------
def dma_direct_map_phys(dev, phys: int, size: int, dir: int, attrs: int,
                        copy: int = DIRECT_H_IN_MAPPING_C) -> int:
    """Bus address, a bounce slot's bus address, or DMA_MAPPING_ERROR."""
    if _swiotlb.c_is_swiotlb_force_bounce(dev):
        if attrs & DMA_ATTR_MMIO:
            dma_direct_overflow(dev, 0, size, copy)       # dma_addr is still unset there
            return DMA_MAPPING_ERROR
        return _swiotlb.c_swiotlb_map(dev, phys, size, dir, attrs)
    if attrs & DMA_ATTR_MMIO:
        dma_addr = phys                                    # MMIO is already a bus address
        if not dma_capable(dev, dma_addr, size, False):
            dma_direct_overflow(dev, dma_addr, size, copy)
            return DMA_MAPPING_ERROR
    else:
        dma_addr = phys_to_dma(dev, phys)
        if not dma_capable(dev, dma_addr, size, True):
            if _swiotlb.c_is_swiotlb_active(dev):
                return _swiotlb.c_swiotlb_map(dev, phys, size, dir, attrs)
            dma_direct_overflow(dev, dma_addr, size, copy)
            return DMA_MAPPING_ERROR
    if not dev.coherent and not attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO):
        arch_sync_dma_for_device(dev, phys, size, dir)
    return dma_addr


# ---- direct.h: single syncs -----------------------------------------------------------------------
def dma_direct_sync_single_for_device(dev, addr: int, size: int, dir: int) -> None:
    paddr = dma_to_phys(dev, addr)
    _swiotlb.c_swiotlb_sync_single_for_device(dev, paddr, size, dir)     # bounce first
    if not dev.coherent:
        arch_sync_dma_for_device(dev, paddr, size, dir)                   # then clean


def dma_direct_sync_single_for_cpu(dev, addr: int, size: int, dir: int) -> None:
    paddr = dma_to_phys(dev, addr)
    if not dev.coherent:
        arch_sync_dma_for_cpu(dev, paddr, size, dir)                      # invalidate first
    _swiotlb.c_swiotlb_sync_single_for_cpu(dev, paddr, size, dir)        # then bounce


# ---- direct.h: dma_direct_unmap_phys() --------------------------------------------------------------
def dma_direct_unmap_phys(dev, addr: int, size: int, dir: int, attrs: int) -> None:
    if attrs & DMA_ATTR_MMIO:
        return                                            # uncached and never bounced
    phys = dma_to_phys(dev, addr)
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC:
        dma_direct_sync_single_for_cpu(dev, addr, size, dir)
    _swiotlb.c_swiotlb_tbl_unmap_single(dev, phys, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)


# ---- direct.c: scatter-gather ---------------------------------------------------------------------
def dma_direct_unmap_sg(dev, sgl, nents: int, dir: int, attrs: int) -> None:
    for sg in sgl.sg[:nents]:
        if sg.dma_flags & SG_DMA_BUS_ADDRESS:
            sg.dma_flags &= ~SG_DMA_BUS_ADDRESS          # sg_dma_unmark_bus_address()
        else:
            dma_direct_unmap_phys(dev, sg.dma_address, sg.dma_length, dir, attrs)


def dma_direct_map_sg(dev, sgl, nents: int, dir: int, attrs: int) -> int:
    """nents, -EIO for a failed segment, -EREMOTEIO for P2P memory the device cannot reach.

    THRU_HOST_BRIDGE maps like ordinary memory (the kernel's 2026 fallthrough fix).
    """
    for i in range(nents):
        sg = sgl.sg[i]
        phys = sg.page_phys + sg.offset
        map_type, bus_addr = p2pdma_state(dev, phys, sg.length)
        if map_type in (PCI_P2PDMA_MAP_THRU_HOST_BRIDGE, PCI_P2PDMA_MAP_NONE):
            try:
                sg.dma_address = dma_direct_map_phys(dev, phys, sg.length, dir, attrs, DIRECT_H_IN_DIRECT_C)
            except BaseException:                         # a call that raises leaves no trace
                dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
                raise
            if sg.dma_address == DMA_MAPPING_ERROR:
                dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
                return -EIO
        elif map_type == PCI_P2PDMA_MAP_BUS_ADDR:
            sg.dma_address = bus_addr
            sg.dma_length = sg.length                     # d0d08f4bd7f6 (v6.18-rc8)
            sg.dma_flags |= SG_DMA_BUS_ADDRESS
            continue
        else:
            dma_direct_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            return -EREMOTEIO
        sg.dma_length = sg.length
    return nents


def dma_direct_sync_sg_for_device(dev, sgl, nents: int, dir: int) -> None:
    for sg in sgl.sg[:nents]:
        paddr = dma_to_phys(dev, sg.dma_address)
        _swiotlb.c_swiotlb_sync_single_for_device(dev, paddr, sg.length, dir)
        if not dev.coherent:
            arch_sync_dma_for_device(dev, paddr, sg.length, dir)


def dma_direct_sync_sg_for_cpu(dev, sgl, nents: int, dir: int) -> None:
    for sg in sgl.sg[:nents]:
        paddr = dma_to_phys(dev, sg.dma_address)
        if not dev.coherent:
            arch_sync_dma_for_cpu(dev, paddr, sg.length, dir)
        _swiotlb.c_swiotlb_sync_single_for_cpu(dev, paddr, sg.length, dir)


# ---- direct.c: masks and sizes ------------------------------------------------------------------------
def dma_direct_get_required_mask(dev) -> int:
    phys = ((machine_max_pfn(dev.machine) - 1) << PAGE_SHIFT) & U64_MAX
    max_dma = phys_to_dma(dev, phys)
    return (((1 << ((_fls64(max_dma) - 1) & 63)) * 2) - 1) & U64_MAX


def dma_direct_supported(dev, mask: int) -> bool:
    min_mask = ((machine_max_pfn(dev.machine) - 1) << PAGE_SHIFT) & U64_MAX
    if mask >= DMA_BIT_MASK(32):
        return True
    min_mask = min(min_mask, zone_dma_limit())
    return mask >= phys_to_dma(dev, min_mask)


def dma_direct_all_ram_mapped(dev) -> bool:
    """Every System RAM page lies in some dma_range_map region (check_ram_in_range_map)."""
    if not dev.range_map:
        return True
    for start, size, kind, _ in dev.machine.mem.regions_list():
        if kind != "ram":
            continue
        start_pfn, end_pfn = start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT
        while start_pfn < end_pfn:
            for cpu_start, _dma_start, rsize in dev.range_map:
                if rsize >> PAGE_SHIFT == 0:
                    return False                          # the walk stops at such an entry
                cpu_start_pfn = cpu_start >> PAGE_SHIFT
                if start_pfn >= cpu_start_pfn and start_pfn - cpu_start_pfn < rsize >> PAGE_SHIFT:
                    start_pfn = cpu_start_pfn + (rsize >> PAGE_SHIFT)
                    break
            else:
                return False
    return True


def dma_direct_need_sync(dev, dma_addr: int) -> bool:
    return not dev.coherent or _swiotlb.c_is_swiotlb_buffer(dev, dma_to_phys(dev, dma_addr))


def dma_direct_max_mapping_size(dev) -> int:
    from .mapping import dma_addressing_limited_c
    if _swiotlb.c_is_swiotlb_active(dev) and (dma_addressing_limited_c(dev)
                                             or _swiotlb.c_is_swiotlb_force_bounce(dev)):
        return _swiotlb.c_swiotlb_max_mapping_size(dev)
    return U64_MAX


# ---- direct.c: the coherent allocator -------------------------------------------------------------------
def dma_coherent_ok(dev, phys: int, size: int) -> bool:
    dma_addr = phys_to_dma(dev, phys)
    if dma_addr == DMA_MAPPING_ERROR:
        return False
    return ((dma_addr + size - 1) & U64_MAX) <= min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit)


def __dma_direct_alloc_pages(dev, size: int) -> int:
    """Pages the device can reach, or U64_MAX: below the reach limit, then 4 GiB, then 16 MiB."""
    mem = dev.machine.mem
    npages = size >> PAGE_SHIFT
    phys_limit = dma_to_phys(dev, min_not_zero(dev.coherent_dma_mask, dev.bus_dma_limit))
    first = U64_MAX if phys_limit == U64_MAX else phys_limit + 1
    for k, limit in enumerate((first, 1 << 32, zone_dma_limit() + 1)):
        if k > 0 and limit >= first:
            continue
        phys = mem.alloc_pages(npages, limit, 1)
        if phys == U64_MAX:
            continue
        if dma_coherent_ok(dev, phys, size):
            return phys
        mem.free_pages(phys, npages)
    return U64_MAX


def dma_direct_alloc(dev, size: int, attrs: int) -> tuple[int, int]:
    """(phys or U64_MAX for NULL, dma_handle)."""
    size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    phys = __dma_direct_alloc_pages(dev, size)
    if phys == U64_MAX:
        return U64_MAX, DMA_MAPPING_ERROR
    if not attrs & DMA_ATTR_NO_KERNEL_MAPPING:
        dev.machine.mem.fill(phys, 0, size)
    return phys, phys_to_dma(dev, phys)


def dma_direct_free(dev, size: int, phys: int, dma_handle: int, attrs: int) -> None:
    size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    dev.machine.mem.free_pages(phys, size >> PAGE_SHIFT)
