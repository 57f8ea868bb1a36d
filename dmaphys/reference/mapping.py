"""Reference model of kernel/dma/mapping.c and include/linux/dma-mapping.h (mirrors _kernel/mapping.pxi).

The kernel-named entry points and the dispatch between dma-direct and dma-iommu
(dma_go_direct / use_dma_iommu; no legacy dma_map_ops). ``dev.machine.dma_debug.enabled``
plays CONFIG_DMA_API_DEBUG. Every entry point validates its Python arguments first, then
runs the kernel function, then emits the queued kernel warnings (Machine.flush_warnings).
"""

from __future__ import annotations

from ..constants import (
    DMA_ATTR_ALL,
    DMA_ATTR_MMIO,
    DMA_BIDIRECTIONAL,
    DMA_MAPPING_ERROR,
    EINVAL,
    EIO,
    ENOMEM,
    EREMOTEIO,
    IOVA_RANGE_CACHE_MAX_SIZE,
)
from ..errors import KernelBug, KernelWarning
from . import debug as _debug
from . import dma_iommu as _dma_iommu
from . import machine as _machine_mod
from . import trace as _trace
from ._util import DMA_BIT_MASK, U64_MAX, min_not_zero, u64
from .direct import (
    DIRECT_H_IN_MAPPING_C,
    dma_direct_all_ram_mapped,
    dma_direct_alloc,
    dma_direct_free,
    dma_direct_get_required_mask,
    dma_direct_map_phys,
    dma_direct_map_sg,
    dma_direct_max_mapping_size,
    dma_direct_need_sync,
    dma_direct_supported,
    dma_direct_sync_sg_for_cpu,
    dma_direct_sync_sg_for_device,
    dma_direct_sync_single_for_cpu,
    dma_direct_sync_single_for_device,
    dma_direct_unmap_phys,
    dma_direct_unmap_sg,
)
from .machine import Device
from .scatterlist import ScatterList

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

__all__ = [
    "dma_map_phys", "dma_unmap_phys", "dma_map_page_attrs", "dma_unmap_page_attrs",
    "dma_map_single_attrs", "dma_unmap_single_attrs", "dma_map_page", "dma_unmap_page",
    "dma_map_single", "dma_unmap_single", "dma_map_resource", "dma_unmap_resource",
    "dma_mapping_error", "dma_map_sg_attrs", "dma_unmap_sg_attrs", "dma_map_sg", "dma_unmap_sg",
    "dma_map_sgtable", "dma_unmap_sgtable", "dma_sync_single_for_cpu", "dma_sync_single_for_device",
    "dma_sync_single_range_for_cpu", "dma_sync_single_range_for_device", "dma_sync_sg_for_cpu",
    "dma_sync_sg_for_device", "dma_sync_sgtable_for_cpu", "dma_sync_sgtable_for_device",
    "dma_set_mask", "dma_set_coherent_mask", "dma_set_mask_and_coherent", "dma_get_mask",
    "dma_supported", "dma_get_required_mask", "dma_max_mapping_size", "dma_opt_mapping_size",
    "dma_need_sync", "dma_need_unmap", "dma_addressing_limited", "dma_get_max_seg_size",
    "dma_get_seg_boundary", "dma_alloc_attrs", "dma_free_attrs", "dma_alloc_coherent",
    "dma_free_coherent",
]


# ---- hooks: dma-debug (debug.py) and tracepoints (trace.py) -------------------------------------
# Forwarders to the debug_dma_* / trace_dma_* functions of the dma-debug and trace modules,
# called in the kernel's order; a hook those modules do not define (yet) does nothing.
def _hook(module, name: str):
    fn = getattr(module, name, None)
    return fn if callable(fn) else (lambda *args: None)


debug_dma_map_phys = _hook(_debug, "debug_dma_map_phys")
debug_dma_unmap_phys = _hook(_debug, "debug_dma_unmap_phys")
debug_dma_map_single = _hook(_debug, "debug_dma_map_single")
debug_dma_mapping_error = _hook(_debug, "debug_dma_mapping_error")
debug_dma_map_sg = _hook(_debug, "debug_dma_map_sg")
debug_dma_unmap_sg = _hook(_debug, "debug_dma_unmap_sg")
debug_dma_sync_single_for_cpu = _hook(_debug, "debug_dma_sync_single_for_cpu")
debug_dma_sync_single_for_device = _hook(_debug, "debug_dma_sync_single_for_device")
debug_dma_sync_sg_for_cpu = _hook(_debug, "debug_dma_sync_sg_for_cpu")
debug_dma_sync_sg_for_device = _hook(_debug, "debug_dma_sync_sg_for_device")
debug_dma_alloc_coherent = _hook(_debug, "debug_dma_alloc_coherent")
debug_dma_free_coherent = _hook(_debug, "debug_dma_free_coherent")
trace_dma_map_phys = _hook(_trace, "trace_dma_map_phys")
trace_dma_unmap_phys = _hook(_trace, "trace_dma_unmap_phys")
trace_dma_map_sg = _hook(_trace, "trace_dma_map_sg")
trace_dma_map_sg_err = _hook(_trace, "trace_dma_map_sg_err")
trace_dma_unmap_sg = _hook(_trace, "trace_dma_unmap_sg")
trace_dma_sync_single_for_cpu = _hook(_trace, "trace_dma_sync_single_for_cpu")
trace_dma_sync_single_for_device = _hook(_trace, "trace_dma_sync_single_for_device")
trace_dma_sync_sg_for_cpu = _hook(_trace, "trace_dma_sync_sg_for_cpu")
trace_dma_sync_sg_for_device = _hook(_trace, "trace_dma_sync_sg_for_device")
trace_dma_alloc = _hook(_trace, "trace_dma_alloc")
trace_dma_free = _hook(_trace, "trace_dma_free")


def _iommu(name: str):
    """The dma-iommu backend function of dma_iommu.py (looked up late: the modules import each other)."""
    return getattr(_dma_iommu, name)


# ---- argument validation ---------------------------------------------------------------------------
def _dev(dev) -> Device:
    if not isinstance(dev, Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")
    _machine_mod.dev_live(dev)
    return dev


def _dev_sg(dev, sg) -> tuple[Device, ScatterList]:
    """Both types first, then the device's liveness (the core's order: typed arguments, then the body)."""
    if not isinstance(dev, Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")
    _sg(sg)
    _machine_mod.dev_live(dev)
    return dev, sg


def _sg(sg) -> ScatterList:
    if not isinstance(sg, ScatterList):
        raise TypeError(f"sg must be a ScatterList, not {type(sg).__name__}")
    return sg


def _dir(dir) -> int:
    """enum dma_data_direction; a value no C int holds becomes -1 (an invalid direction)."""
    if isinstance(dir, bool):
        raise TypeError("dir must be an int (enum dma_data_direction), not bool")
    if not hasattr(dir, "__index__"):
        raise TypeError(f"dir must be an int (enum dma_data_direction), not {type(dir).__name__}")
    v = dir.__index__()
    return v if -0x80000000 <= v <= 0x7FFFFFFF else -1


def _attrs(attrs) -> int:
    a = u64(attrs, "attrs")
    if a & ~DMA_ATTR_ALL:
        raise ValueError(f"attrs {a:#x} has bits no DMA_ATTR_* defines (DMA_ATTR_ALL is {DMA_ATTR_ALL:#x})")
    return a


def _check_span(addr: int, size: int, what: str) -> None:
    if size and addr + size - 1 > U64_MAX:
        raise ValueError(f"{what} {addr:#x} + size {size:#x} wraps the 64-bit address space")


def _nents(sg: ScatterList, nents, what: str) -> int:
    n = u64(nents, what)
    if n > len(sg.sg):
        raise ValueError(f"{what} {n} is more than the scatterlist's {len(sg.sg)} entries")
    return n


def bug_on_dir(dir: int, func: str) -> None:
    """BUG_ON(!valid_dma_direction(dir))."""
    if dir not in (0, 1, 2):
        raise KernelBug(f"kernel BUG at kernel/dma/mapping.c: {func}(): "
                        f"BUG_ON(!valid_dma_direction(dir)) (dir {dir})")


# ---- dispatch ----------------------------------------------------------------------------------------
def dma_map_direct(dev) -> bool:
    """dma_go_direct(dev, *dev->dma_mask, NULL ops) = !use_dma_iommu(dev)."""
    return not dev.dma_iommu


dma_alloc_direct = dma_map_direct


def dma_dev_need_sync(dev) -> bool:
    return not dev.dma_skip_sync or dev.machine.dma_debug.enabled


def dma_get_mask_c(dev) -> int:
    if dev.has_dma_mask and dev._dma_mask:
        return dev._dma_mask
    return DMA_BIT_MASK(32)


# ---- kernel functions (kernel semantics, no argument checks) -----------------------------------------
def c_dma_map_phys(dev, phys: int, size: int, dir: int, attrs: int) -> int:
    bug_on_dir(dir, "dma_map_phys")
    if not dev.has_dma_mask:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_phys(): "
                          "WARN_ON_ONCE(!dev->dma_mask)", "mapping.c:dma_map_phys:!dma_mask")
        return DMA_MAPPING_ERROR
    if dma_map_direct(dev):
        addr = dma_direct_map_phys(dev, phys, size, dir, attrs, DIRECT_H_IN_MAPPING_C)
    else:
        addr = _iommu("iommu_dma_map_phys")(dev, phys, size, dir, attrs)
    trace_dma_map_phys(dev, phys, addr, size, dir, attrs)
    debug_dma_map_phys(dev, phys, size, dir, addr, attrs)
    return addr


def c_dma_unmap_phys(dev, addr: int, size: int, dir: int, attrs: int) -> None:
    bug_on_dir(dir, "dma_unmap_phys")
    if dma_map_direct(dev):
        dma_direct_unmap_phys(dev, addr, size, dir, attrs)
    else:
        _iommu("iommu_dma_unmap_phys")(dev, addr, size, dir, attrs)
    trace_dma_unmap_phys(dev, addr, size, dir, attrs)
    debug_dma_unmap_phys(dev, addr, size, dir)


def c_dma_map_page_attrs(dev, pfn: int, offset: int, size: int, dir: int, attrs: int) -> int:
    phys = (pfn << PAGE_SHIFT) + offset
    if attrs & DMA_ATTR_MMIO:
        return DMA_MAPPING_ERROR
    if dev.machine.dma_debug.enabled and dev.machine.p2pdma.find_pgmap(pfn << PAGE_SHIFT) is not None:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_page_attrs(): "
                          "WARN_ON_ONCE(is_zone_device_page(page))",
                          "mapping.c:dma_map_page_attrs:zone_device")
        return DMA_MAPPING_ERROR
    return c_dma_map_phys(dev, phys, size, dir, attrs)


def c_dma_unmap_page_attrs(dev, addr: int, size: int, dir: int, attrs: int) -> None:
    if attrs & DMA_ATTR_MMIO:
        return
    c_dma_unmap_phys(dev, addr, size, dir, attrs)


def c_dma_map_single_attrs(dev, ptr: int, size: int, dir: int, attrs: int) -> int:
    debug_dma_map_single(dev, ptr, size)
    return c_dma_map_page_attrs(dev, ptr >> PAGE_SHIFT, ptr & (PAGE_SIZE - 1), size, dir, attrs)


def c_dma_map_resource(dev, phys_addr: int, size: int, dir: int, attrs: int) -> int:
    if dev.machine.dma_debug.enabled and dev.machine.mem.pfn_valid(phys_addr >> PAGE_SHIFT):
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_map_resource(): "
                          "WARN_ON_ONCE(pfn_valid(PHYS_PFN(phys_addr)))",
                          "mapping.c:dma_map_resource:pfn_valid")
        return DMA_MAPPING_ERROR
    return c_dma_map_phys(dev, phys_addr, size, dir, attrs | DMA_ATTR_MMIO)


def c_dma_mapping_error(dev, dma_addr: int) -> int:
    debug_dma_mapping_error(dev, dma_addr)
    return -ENOMEM if dma_addr == DMA_MAPPING_ERROR else 0


def c_dma_map_sg_attrs(dev, sg, nents: int, dir: int, attrs: int) -> int:
    """__dma_map_sg_attrs()."""
    bug_on_dir(dir, "__dma_map_sg_attrs")
    if not dev.has_dma_mask:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: __dma_map_sg_attrs(): "
                          "WARN_ON_ONCE(!dev->dma_mask)", "mapping.c:__dma_map_sg_attrs:!dma_mask")
        return 0
    if dma_map_direct(dev):
        ents = dma_direct_map_sg(dev, sg, nents, dir, attrs)
    else:
        ents = _iommu("iommu_dma_map_sg")(dev, sg, nents, dir, attrs)
    if ents > 0:
        trace_dma_map_sg(dev, sg, nents, ents, dir, attrs)
        debug_dma_map_sg(dev, sg, nents, ents, dir, attrs)
    elif ents not in (-EINVAL, -ENOMEM, -EIO, -EREMOTEIO):
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: __dma_map_sg_attrs(): "
                          "WARN_ON_ONCE(ents != -EINVAL && ents != -ENOMEM && ents != -EIO && "
                          f"ents != -EREMOTEIO) (ents {ents})", "mapping.c:__dma_map_sg_attrs:ents")
        trace_dma_map_sg_err(dev, sg, nents, ents, dir, attrs)
        return -EIO
    return ents


def c_dma_unmap_sg_attrs(dev, sg, nents: int, dir: int, attrs: int) -> None:
    bug_on_dir(dir, "dma_unmap_sg_attrs")
    trace_dma_unmap_sg(dev, sg, nents, dir, attrs)
    debug_dma_unmap_sg(dev, sg, nents, dir)
    if dma_map_direct(dev):
        dma_direct_unmap_sg(dev, sg, nents, dir, attrs)
    else:
        _iommu("iommu_dma_unmap_sg")(dev, sg, nents, dir, attrs)


def c_dma_map_sgtable(dev, sgt, dir: int, attrs: int) -> int:
    nents = c_dma_map_sg_attrs(dev, sgt, sgt.orig_nents, dir, attrs)
    if nents < 0:
        return nents
    sgt.nents = nents
    return 0


def c_dma_sync_single_for_cpu(dev, addr: int, size: int, dir: int) -> None:
    if not dma_dev_need_sync(dev):
        return
    bug_on_dir(dir, "__dma_sync_single_for_cpu")
    if dma_map_direct(dev):
        dma_direct_sync_single_for_cpu(dev, addr, size, dir)
    else:
        _iommu("iommu_dma_sync_single_for_cpu")(dev, addr, size, dir)
    trace_dma_sync_single_for_cpu(dev, addr, size, dir)
    debug_dma_sync_single_for_cpu(dev, addr, size, dir)


def c_dma_sync_single_for_device(dev, addr: int, size: int, dir: int) -> None:
    if not dma_dev_need_sync(dev):
        return
    bug_on_dir(dir, "__dma_sync_single_for_device")
    if dma_map_direct(dev):
        dma_direct_sync_single_for_device(dev, addr, size, dir)
    else:
        _iommu("iommu_dma_sync_single_for_device")(dev, addr, size, dir)
    trace_dma_sync_single_for_device(dev, addr, size, dir)
    debug_dma_sync_single_for_device(dev, addr, size, dir)


def c_dma_sync_sg_for_cpu(dev, sg, nelems: int, dir: int) -> None:
    if not dma_dev_need_sync(dev):
        return
    bug_on_dir(dir, "__dma_sync_sg_for_cpu")
    if dma_map_direct(dev):
        dma_direct_sync_sg_for_cpu(dev, sg, nelems, dir)
    else:
        _iommu("iommu_dma_sync_sg_for_cpu")(dev, sg, nelems, dir)
    trace_dma_sync_sg_for_cpu(dev, sg, nelems, dir)
    debug_dma_sync_sg_for_cpu(dev, sg, nelems, dir)


def c_dma_sync_sg_for_device(dev, sg, nelems: int, dir: int) -> None:
    if not dma_dev_need_sync(dev):
        return
    bug_on_dir(dir, "__dma_sync_sg_for_device")
    if dma_map_direct(dev):
        dma_direct_sync_sg_for_device(dev, sg, nelems, dir)
    else:
        _iommu("iommu_dma_sync_sg_for_device")(dev, sg, nelems, dir)
    trace_dma_sync_sg_for_device(dev, sg, nelems, dir)
    debug_dma_sync_sg_for_device(dev, sg, nelems, dir)


def c_dma_supported(dev, mask: int) -> bool:
    if dev.dma_iommu:
        return True
    return dma_direct_supported(dev, mask)


def c_dma_set_mask(dev, mask: int) -> int:
    if not dev.has_dma_mask or not c_dma_supported(dev, mask):
        return -EIO
    dev._dma_mask = mask
    dev.dma_skip_sync = dev.coherent                   # dma_setup_need_sync()
    return 0


def c_dma_set_coherent_mask(dev, mask: int) -> int:
    if not c_dma_supported(dev, mask):
        return -EIO
    dev.coherent_dma_mask = mask
    return 0


def c_dma_get_required_mask(dev) -> int:
    if dma_alloc_direct(dev):
        return dma_direct_get_required_mask(dev)
    return DMA_BIT_MASK(32)


def dma_addressing_limited_c(dev) -> bool:
    if min_not_zero(dma_get_mask_c(dev), dev.bus_dma_limit) < c_dma_get_required_mask(dev):
        return True
    if dev.dma_iommu:
        return False
    return not dma_direct_all_ram_mapped(dev)


def c_dma_max_mapping_size(dev) -> int:
    if dma_map_direct(dev):
        return dma_direct_max_mapping_size(dev)
    return _iommu("iommu_dma_max_mapping_size")(dev)


def c_dma_opt_mapping_size(dev) -> int:
    size = U64_MAX
    if dev.dma_iommu:
        size = PAGE_SIZE << (IOVA_RANGE_CACHE_MAX_SIZE - 1)     # iova_rcache_range()
    return min(c_dma_max_mapping_size(dev), size)


def c_dma_need_sync(dev, dma_addr: int) -> bool:
    if not dma_dev_need_sync(dev):
        return False
    if dma_map_direct(dev):
        return dma_direct_need_sync(dev, dma_addr)
    return True


def c_dma_need_unmap(dev) -> bool:
    if not dma_map_direct(dev):
        return True
    if not dev.dma_skip_sync:
        return True
    return bool(dev.machine.dma_debug.enabled)


def c_dma_alloc_attrs(dev, size: int, attrs: int) -> tuple[int, int]:
    """(phys or U64_MAX for NULL, dma_handle)."""
    if dev.coherent_dma_mask == 0:
        dev.machine.kwarn(KernelWarning, "WARNING: kernel/dma/mapping.c: dma_alloc_attrs(): "
                          "WARN_ON_ONCE(!dev->coherent_dma_mask)",
                          "mapping.c:dma_alloc_attrs:!coherent_dma_mask")
    if dma_alloc_direct(dev):
        phys, handle = dma_direct_alloc(dev, size, attrs)
    else:
        phys, handle = _iommu("iommu_dma_alloc")(dev, size, attrs)
        if handle == DMA_MAPPING_ERROR:
            phys = U64_MAX
    trace_dma_alloc(dev, phys, handle, size, DMA_BIDIRECTIONAL, attrs)
    debug_dma_alloc_coherent(dev, size, handle, phys, attrs)
    return phys, handle


def c_dma_free_attrs(dev, size: int, phys: int, dma_handle: int, attrs: int) -> None:
    trace_dma_free(dev, phys, dma_handle, size, DMA_BIDIRECTIONAL, attrs)
    if phys == U64_MAX:
        return
    debug_dma_free_coherent(dev, size, phys, dma_handle)
    if dma_alloc_direct(dev):
        dma_direct_free(dev, size, phys, dma_handle, attrs)
    else:
        _iommu("iommu_dma_free")(dev, size, phys, dma_handle, attrs)


# ---- Python entry points ------------------------------------------------------------------------------
def dma_map_phys(dev, phys, size, dir, attrs=0) -> int:
    """dma_map_phys(dev, phys, size, dir, attrs) -> bus address or DMA_MAPPING_ERROR.

    Reference twin of dmaphys._core.dma_map_phys; same returns and raises.
    """
    dev = _dev(dev)
    p, s, d, a = u64(phys, "phys"), u64(size, "size"), _dir(dir), _attrs(attrs)
    _check_span(p, s, "phys")
    try:
        return c_dma_map_phys(dev, p, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_phys(dev, addr, size, dir, attrs=0) -> None:
    """dma_unmap_phys(dev, addr, size, dir, attrs)

    Reference twin of dmaphys._core.dma_unmap_phys; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d, a = u64(addr, "addr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_phys(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_page_attrs(dev, pfn, offset, size, dir, attrs=0) -> int:
    """dma_map_page_attrs(dev, pfn, offset, size, dir, attrs) -> dma_addr_t

    Reference twin of dmaphys._core.dma_map_page_attrs; same returns and raises.
    """
    dev = _dev(dev)
    pf, off, s = u64(pfn, "pfn"), u64(offset, "offset"), u64(size, "size")
    d, a = _dir(dir), _attrs(attrs)
    if pf >> (64 - PAGE_SHIFT):
        raise ValueError(f"pfn {pf:#x} is beyond the physical address space")
    if not dev.machine.mem.pfn_valid(pf) and dev.machine.p2pdma.find_pgmap(pf << PAGE_SHIFT) is None:
        raise ValueError(f"pfn {pf:#x} has no struct page (neither RAM nor P2PDMA memory)")
    _check_span(pf << PAGE_SHIFT, off, "page")
    _check_span((pf << PAGE_SHIFT) + off, s, "phys")
    try:
        return c_dma_map_page_attrs(dev, pf, off, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_page_attrs(dev, addr, size, dir, attrs=0) -> None:
    """dma_unmap_page_attrs(dev, addr, size, dir, attrs)

    Reference twin of dmaphys._core.dma_unmap_page_attrs; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d, a = u64(addr, "addr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_page_attrs(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_single_attrs(dev, ptr, size, dir, attrs=0) -> int:
    """dma_map_single_attrs(dev, ptr, size, dir, attrs) -> dma_addr_t

    Reference twin of dmaphys._core.dma_map_single_attrs; same returns and raises.
    """
    dev = _dev(dev)
    p, s, d, a = u64(ptr, "ptr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    _check_span(p, s, "ptr")
    if (not dev.machine.mem.pfn_valid(p >> PAGE_SHIFT)
            and dev.machine.p2pdma.find_pgmap(p & ~(PAGE_SIZE - 1)) is None):
        raise ValueError(f"ptr {p:#x} is not in the linear map (no struct page)")
    try:
        return c_dma_map_single_attrs(dev, p, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_single_attrs(dev, addr, size, dir, attrs=0) -> None:
    """dma_unmap_single_attrs(dev, addr, size, dir, attrs) = dma_unmap_page_attrs().

    Reference twin of dmaphys._core.dma_unmap_single_attrs; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d, a = u64(addr, "addr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_page_attrs(dev, ad, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_page(dev, pfn, offset, size, dir) -> int:
    """dma_map_page(dev, pfn, offset, size, dir) = dma_map_page_attrs(..., 0).

    Reference twin of dmaphys._core.dma_map_page; same returns and raises.
    """
    return dma_map_page_attrs(dev, pfn, offset, size, dir, 0)


def dma_unmap_page(dev, addr, size, dir) -> None:
    """dma_unmap_page(dev, addr, size, dir) = dma_unmap_page_attrs(..., 0).

    Reference twin of dmaphys._core.dma_unmap_page; same returns and raises.
    """
    dma_unmap_page_attrs(dev, addr, size, dir, 0)


def dma_map_single(dev, ptr, size, dir) -> int:
    """dma_map_single(dev, ptr, size, dir) = dma_map_single_attrs(..., 0).

    Reference twin of dmaphys._core.dma_map_single; same returns and raises.
    """
    return dma_map_single_attrs(dev, ptr, size, dir, 0)


def dma_unmap_single(dev, addr, size, dir) -> None:
    """dma_unmap_single(dev, addr, size, dir) = dma_unmap_single_attrs(..., 0).

    Reference twin of dmaphys._core.dma_unmap_single; same returns and raises.
    """
    dma_unmap_single_attrs(dev, addr, size, dir, 0)


def dma_map_resource(dev, phys_addr, size, dir, attrs=0) -> int:
    """dma_map_resource(dev, phys_addr, size, dir, attrs) -> dma_addr_t

    Reference twin of dmaphys._core.dma_map_resource; same returns and raises.
    """
    dev = _dev(dev)
    p, s, d, a = u64(phys_addr, "phys_addr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    _check_span(p, s, "phys_addr")
    try:
        return c_dma_map_resource(dev, p, s, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_resource(dev, addr, size, dir, attrs=0) -> None:
    """dma_unmap_resource(dev, addr, size, dir, attrs) = dma_unmap_phys(... | DMA_ATTR_MMIO).

    Reference twin of dmaphys._core.dma_unmap_resource; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d, a = u64(addr, "addr"), u64(size, "size"), _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_phys(dev, ad, s, d, a | DMA_ATTR_MMIO)
    finally:
        dev.machine.flush_warnings()


def dma_mapping_error(dev, dma_addr) -> int:
    """dma_mapping_error(dev, dma_addr) -> int: -ENOMEM if dma_addr is DMA_MAPPING_ERROR, else 0.

    Reference twin of dmaphys._core.dma_mapping_error; same returns and raises.
    """
    dev = _dev(dev)
    ad = u64(dma_addr, "dma_addr")
    try:
        return c_dma_mapping_error(dev, ad)
    finally:
        dev.machine.flush_warnings()


def dma_map_sg_attrs(dev, sg, nents, dir, attrs=0) -> int:
    """dma_map_sg_attrs(dev, sg, nents, dir, attrs) -> unsigned int

    Reference twin of dmaphys._core.dma_map_sg_attrs; same returns and raises.
    """
    dev, sg = _dev_sg(dev, sg)
    n, d, a = _nents(sg, nents, "nents"), _dir(dir), _attrs(attrs)
    try:
        return max(c_dma_map_sg_attrs(dev, sg, n, d, a), 0)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_sg_attrs(dev, sg, nents, dir, attrs=0) -> None:
    """dma_unmap_sg_attrs(dev, sg, nents, dir, attrs): nents is the count passed to dma_map_sg.

    Reference twin of dmaphys._core.dma_unmap_sg_attrs; same returns and raises.
    """
    dev, sg = _dev_sg(dev, sg)
    n, d, a = _nents(sg, nents, "nents"), _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_sg_attrs(dev, sg, n, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_map_sg(dev, sg, nents, dir) -> int:
    """dma_map_sg(dev, sg, nents, dir) = dma_map_sg_attrs(..., 0).

    Reference twin of dmaphys._core.dma_map_sg; same returns and raises.
    """
    return dma_map_sg_attrs(dev, sg, nents, dir, 0)


def dma_unmap_sg(dev, sg, nents, dir) -> None:
    """dma_unmap_sg(dev, sg, nents, dir) = dma_unmap_sg_attrs(..., 0).

    Reference twin of dmaphys._core.dma_unmap_sg; same returns and raises.
    """
    dma_unmap_sg_attrs(dev, sg, nents, dir, 0)


def dma_map_sgtable(dev, sgt, dir, attrs=0) -> int:
    """dma_map_sgtable(dev, sgt, dir, attrs) -> int

    Reference twin of dmaphys._core.dma_map_sgtable; same returns and raises.
    """
    dev, sgt = _dev_sg(dev, sgt)
    d, a = _dir(dir), _attrs(attrs)
    try:
        return c_dma_map_sgtable(dev, sgt, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_unmap_sgtable(dev, sgt, dir, attrs=0) -> None:
    """dma_unmap_sgtable(dev, sgt, dir, attrs) = dma_unmap_sg_attrs(dev, sgt, sgt.orig_nents, ...).

    Reference twin of dmaphys._core.dma_unmap_sgtable; same returns and raises.
    """
    dev, sgt = _dev_sg(dev, sgt)
    d, a = _dir(dir), _attrs(attrs)
    try:
        c_dma_unmap_sg_attrs(dev, sgt, sgt.orig_nents, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_for_cpu(dev, addr, size, dir) -> None:
    """dma_sync_single_for_cpu(dev, addr, size, dir): give the buffer to the CPU (bounce slot → memory).

    Reference twin of dmaphys._core.dma_sync_single_for_cpu; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d = u64(addr, "addr"), u64(size, "size"), _dir(dir)
    try:
        c_dma_sync_single_for_cpu(dev, ad, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_for_device(dev, addr, size, dir) -> None:
    """dma_sync_single_for_device(dev, addr, size, dir): give the buffer back to the device.

    Reference twin of dmaphys._core.dma_sync_single_for_device; same returns and raises.
    """
    dev = _dev(dev)
    ad, s, d = u64(addr, "addr"), u64(size, "size"), _dir(dir)
    try:
        c_dma_sync_single_for_device(dev, ad, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_range_for_cpu(dev, addr, offset, size, dir) -> None:
    """dma_sync_single_range_for_cpu(dev, addr, offset, size, dir) = sync of (addr + offset, size).

    Reference twin of dmaphys._core.dma_sync_single_range_for_cpu; same returns and raises.
    """
    dev = _dev(dev)
    ad, off, s, d = u64(addr, "addr"), u64(offset, "offset"), u64(size, "size"), _dir(dir)
    try:
        c_dma_sync_single_for_cpu(dev, (ad + off) & U64_MAX, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_single_range_for_device(dev, addr, offset, size, dir) -> None:
    """dma_sync_single_range_for_device(dev, addr, offset, size, dir) = sync of (addr + offset, size).

    Reference twin of dmaphys._core.dma_sync_single_range_for_device; same returns and raises.
    """
    dev = _dev(dev)
    ad, off, s, d = u64(addr, "addr"), u64(offset, "offset"), u64(size, "size"), _dir(dir)
    try:
        c_dma_sync_single_for_device(dev, (ad + off) & U64_MAX, s, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sg_for_cpu(dev, sg, nelems, dir) -> None:
    """dma_sync_sg_for_cpu(dev, sg, nelems, dir): nelems is the count passed to dma_map_sg.

    Reference twin of dmaphys._core.dma_sync_sg_for_cpu; same returns and raises.
    """
    dev, sg = _dev_sg(dev, sg)
    n, d = _nents(sg, nelems, "nelems"), _dir(dir)
    try:
        c_dma_sync_sg_for_cpu(dev, sg, n, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sg_for_device(dev, sg, nelems, dir) -> None:
    """dma_sync_sg_for_device(dev, sg, nelems, dir): nelems is the count passed to dma_map_sg.

    Reference twin of dmaphys._core.dma_sync_sg_for_device; same returns and raises.
    """
    dev, sg = _dev_sg(dev, sg)
    n, d = _nents(sg, nelems, "nelems"), _dir(dir)
    try:
        c_dma_sync_sg_for_device(dev, sg, n, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sgtable_for_cpu(dev, sgt, dir) -> None:
    """dma_sync_sgtable_for_cpu(dev, sgt, dir) = dma_sync_sg_for_cpu(dev, sgt, sgt.orig_nents, dir).

    Reference twin of dmaphys._core.dma_sync_sgtable_for_cpu; same returns and raises.
    """
    dev, sgt = _dev_sg(dev, sgt)
    d = _dir(dir)
    try:
        c_dma_sync_sg_for_cpu(dev, sgt, sgt.orig_nents, d)
    finally:
        dev.machine.flush_warnings()


def dma_sync_sgtable_for_device(dev, sgt, dir) -> None:
    """dma_sync_sgtable_for_device(dev, sgt, dir) = dma_sync_sg_for_device(dev, sgt, sgt.orig_nents, dir).

    Reference twin of dmaphys._core.dma_sync_sgtable_for_device; same returns and raises.
    """
    dev, sgt = _dev_sg(dev, sgt)
    d = _dir(dir)
    try:
        c_dma_sync_sg_for_device(dev, sgt, sgt.orig_nents, d)
    finally:
        dev.machine.flush_warnings()


def dma_set_mask(dev, mask) -> int:
    """dma_set_mask(dev, mask) -> int: 0, or -EIO (no dev->dma_mask, or the mask is not supported).

    Reference twin of dmaphys._core.dma_set_mask; same returns and raises.
    """
    return c_dma_set_mask(_dev(dev), u64(mask, "mask"))


def dma_set_coherent_mask(dev, mask) -> int:
    """dma_set_coherent_mask(dev, mask) -> int: 0 or -EIO.

    Reference twin of dmaphys._core.dma_set_coherent_mask; same returns and raises.
    """
    return c_dma_set_coherent_mask(_dev(dev), u64(mask, "mask"))


def dma_set_mask_and_coherent(dev, mask) -> int:
    """dma_set_mask_and_coherent(dev, mask) -> int: dma_set_mask(), then the coherent mask if that worked.

    Reference twin of dmaphys._core.dma_set_mask_and_coherent; same returns and raises.
    """
    dev, m = _dev(dev), u64(mask, "mask")
    rc = c_dma_set_mask(dev, m)
    if rc == 0:
        c_dma_set_coherent_mask(dev, m)
    return rc


def dma_get_mask(dev) -> int:
    """dma_get_mask(dev): *dev->dma_mask if set and non-zero, else DMA_BIT_MASK(32).

    Reference twin of dmaphys._core.dma_get_mask; same returns and raises.
    """
    return dma_get_mask_c(_dev(dev))


def dma_supported(dev, mask) -> bool:
    """dma_supported(dev, mask) -> bool (kernel/dma/mapping.c, static there).

    Reference twin of dmaphys._core.dma_supported; same returns and raises.
    """
    return c_dma_supported(_dev(dev), u64(mask, "mask"))


def dma_get_required_mask(dev) -> int:
    """dma_get_required_mask(dev): the mask needed to reach all of RAM without bouncing.

    Reference twin of dmaphys._core.dma_get_required_mask; same returns and raises.
    """
    return c_dma_get_required_mask(_dev(dev))


def dma_max_mapping_size(dev) -> int:
    """dma_max_mapping_size(dev): the largest single mapping (swiotlb's limit when it may bounce).

    Reference twin of dmaphys._core.dma_max_mapping_size; same returns and raises.
    """
    return c_dma_max_mapping_size(_dev(dev))


def dma_opt_mapping_size(dev) -> int:
    """dma_opt_mapping_size(dev): the largest mapping size without a performance penalty.

    Reference twin of dmaphys._core.dma_opt_mapping_size; same returns and raises.
    """
    return c_dma_opt_mapping_size(_dev(dev))


def dma_need_sync(dev, dma_addr) -> bool:
    """dma_need_sync(dev, dma_addr) -> bool: must the driver call the dma_sync_* functions?

    Reference twin of dmaphys._core.dma_need_sync; same returns and raises.
    """
    return c_dma_need_sync(_dev(dev), u64(dma_addr, "dma_addr"))


def dma_need_unmap(dev) -> bool:
    """dma_need_unmap(dev) -> bool: must the driver keep the DMA address to unmap it?

    Reference twin of dmaphys._core.dma_need_unmap; same returns and raises.
    """
    return c_dma_need_unmap(_dev(dev))


def dma_addressing_limited(dev) -> bool:
    """dma_addressing_limited(dev) -> bool: can the device not reach all of RAM directly?

    Reference twin of dmaphys._core.dma_addressing_limited; same returns and raises.
    """
    return dma_addressing_limited_c(_dev(dev))


def dma_get_max_seg_size(dev) -> int:
    """dma_get_max_seg_size(dev): dma_parms->max_segment_size, else SZ_64K.

    Reference twin of dmaphys._core.dma_get_max_seg_size; same returns and raises.
    """
    dev = _dev(dev)
    return dev.max_segment_size or 65536


def dma_get_seg_boundary(dev) -> int:
    """dma_get_seg_boundary(dev): dma_parms->segment_boundary_mask, else ULONG_MAX.

    Reference twin of dmaphys._core.dma_get_seg_boundary; same returns and raises.
    """
    dev = _dev(dev)
    return dev.seg_boundary_mask or U64_MAX


def dma_alloc_attrs(dev, size, attrs=0):
    """(cpu_addr, dma_handle) or None (the kernel's NULL).

    Reference twin of dmaphys._core.dma_alloc_attrs; same returns and raises.
    """
    dev = _dev(dev)
    s, a = u64(size, "size"), _attrs(attrs)
    if s == 0 or s > 1 << 48:
        raise ValueError(f"size {s:#x} is not a plausible allocation size")
    try:
        phys, handle = c_dma_alloc_attrs(dev, s, a)
        return None if phys == U64_MAX else (phys, handle)
    finally:
        dev.machine.flush_warnings()


def dma_free_attrs(dev, size, cpu_addr, dma_handle, attrs=0) -> None:
    """dma_free_attrs(dev, size, cpu_addr, dma_handle, attrs): free a dma_alloc_attrs() buffer.

    Reference twin of dmaphys._core.dma_free_attrs; same returns and raises.
    """
    dev = _dev(dev)
    s = u64(size, "size")
    phys = U64_MAX if cpu_addr is None else u64(cpu_addr, "cpu_addr")
    h, a = u64(dma_handle, "dma_handle"), _attrs(attrs)
    npages = (s + PAGE_SIZE - 1) >> PAGE_SHIFT
    if phys != U64_MAX and dma_alloc_direct(dev):
        if phys % PAGE_SIZE or dev.machine.mem.allocated.get(phys >> PAGE_SHIFT) != npages:
            raise ValueError(f"dma_free_attrs: {phys:#x} is not a coherent buffer of {s:#x} bytes")
    try:
        c_dma_free_attrs(dev, s, phys, h, a)
    finally:
        dev.machine.flush_warnings()


def dma_alloc_coherent(dev, size):
    """dma_alloc_coherent(dev, size) -> (cpu_addr, dma_handle) or None = dma_alloc_attrs(dev, size, 0).

    Reference twin of dmaphys._core.dma_alloc_coherent; same returns and raises.
    """
    return dma_alloc_attrs(dev, size, 0)


def dma_free_coherent(dev, size, cpu_addr, dma_handle) -> None:
    """dma_free_coherent(dev, size, cpu_addr, dma_handle) = dma_free_attrs(..., 0).

    Reference twin of dmaphys._core.dma_free_coherent; same returns and raises.
    """
    dma_free_attrs(dev, size, cpu_addr, dma_handle, 0)
