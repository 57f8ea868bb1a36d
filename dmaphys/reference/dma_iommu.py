"""Reference model of drivers/iommu/dma-iommu.c and the two-step IOVA API (mirrors dma_iommu.pxi).

The DMA-API to IOMMU-API glue: the IOVA cookie and its flush queue(s), iommu_dma_init_domain,
the IOVA allocation policy (32-bit first for PCI devices), iommu_dma_map_phys / unmap_phys /
syncs / sg / alloc, and dma_iova_try_alloc / link / sync / unlink / destroy.

Target: v6.18 (after "dma-mapping: migrate to physical address-based API") with the upstream
fix 6ec91df8aff7 ("iommu/dma: Do not try to iommu_map a 0 length region in swiotlb").
Simulator choices: dev_use_swiotlb() is "the device is untrusted"; every domain has
force_aperture and supports deferred flush; the flush-queue timer frees on the CPU that
armed it.
"""

from __future__ import annotations

import logging

from ..errors import KernelBug, KernelWarning
from . import iommu as _iommu
from . import iova as _iova
from . import machine as _machine
from . import mapping as _mapping
from . import p2pdma as _p2p
from . import swiotlb as _swiotlb
from . import trace as _trace
from ._util import U64_MAX, min_not_zero, typed, u64

__all__ = ["IommuDmaCookie", "IovaFq", "DmaIovaState", "dma_iova_try_alloc", "dma_iova_free",
           "dma_iova_link", "dma_iova_sync", "dma_iova_unlink", "dma_iova_destroy", "dma_use_iova",
           "dma_iova_size"]

_log = logging.getLogger("dmaphys")

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
DMA_MAPPING_ERROR = U64_MAX
DMA_IOVA_USE_SWIOTLB = 1 << 63
DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE = 0, 1, 2
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
DMA_ATTR_PRIVILEGED = 1 << 9
DMA_ATTR_MMIO = 1 << 10
DMA_ATTR_ALL = 0x7F6
IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV = 1, 2, 4, 8, 16, 32
PCI_P2PDMA_MAP_NONE, PCI_P2PDMA_MAP_BUS_ADDR, PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 1, 3, 4
SG_DMA_BUS_ADDRESS = 1 << 0
SG_DMA_SWIOTLB = 1 << 1
EPERM, EIO, ENOMEM, EFAULT, EINVAL, EREMOTEIO = 1, 5, 12, 14, 22, 121

IOVA_DEFAULT_FQ_SIZE = 256
IOVA_SINGLE_FQ_SIZE = 32768
IOVA_DEFAULT_FQ_TIMEOUT = 10       # ms
IOVA_SINGLE_FQ_TIMEOUT = 1000      # ms
IOVA_RCACHE_RANGE = PAGE_SIZE << 5

_RESV_TYPES = {"direct": "DIRECT", "direct_relaxable": "DIRECT_RELAXABLE", "reserved": "RESERVED",
               "msi": "MSI", "sw_msi": "SW_MSI"}
_RESV_BY_VALUE = ["DIRECT", "DIRECT_RELAXABLE", "RESERVED", "MSI", "SW_MSI"]   # enum iommu_resv_type


def _iova_offset(granule: int, addr: int) -> int:
    return addr & (granule - 1)


def _iova_align(granule: int, size: int) -> int:
    return ((size + granule - 1) & ~(granule - 1)) & U64_MAX


def _fls64(x: int) -> int:
    return x.bit_length()


def _warn_on(m, func: str, cond: str, once_key=None) -> None:
    m.kwarn(KernelWarning, f"WARNING: CPU: {m.cpu} at drivers/iommu/dma-iommu.c {func}(): {cond}", once_key)


# ---- flush queue ----------------------------------------------------------------------------------
class _FqEntry:
    __slots__ = ("iova_pfn", "pages", "counter", "freelist")

    def __init__(self, iova_pfn: int, pages: int, counter: int, freelist: list[int]) -> None:
        self.iova_pfn = iova_pfn
        self.pages = pages
        self.counter = counter
        self.freelist = freelist


class IovaFq:
    """struct iova_fq: a ring of fq_size slots of which fq_size - 1 can hold entries.

    Reference twin of dmaphys._core.IovaFq: same returns and raises.
    """

    def __init__(self, fq_size: int) -> None:
        self.entries: list[_FqEntry | None] = [None] * fq_size
        self.head = 0
        self.tail = 0
        self.mod_mask = fq_size - 1

    def __len__(self) -> int:
        return (self.tail - self.head) & self.mod_mask

    def full(self) -> bool:
        """Models drivers/iommu/dma-iommu.c:fq_full(). Returns True when no slot is free. Raises
        nothing.
        """
        return ((self.tail + 1) & self.mod_mask) == self.head

    def live(self):
        """Models fq_ring_for_each() (drivers/iommu/dma-iommu.c). Returns a generator of the queued
        entries, oldest first. Raises nothing.
        """
        i = self.head
        while i != self.tail:
            yield self.entries[i]
            i = (i + 1) & self.mod_mask

    def entries_list(self) -> list[tuple[int, int, int, int]]:
        """Reference twin of dmaphys._core.IovaFq.entries_list: same returns and raises."""
        return [(e.iova_pfn, e.pages, e.counter, len(e.freelist)) for e in self.live()]

    def __repr__(self) -> str:
        return f"<dmaphys.reference.IovaFq {len(self)}/{self.mod_mask} queued>"


class IommuDmaCookie:
    """struct iommu_dma_cookie of a DMA / DMA-FQ domain (reference twin).

    Reference twin of dmaphys._core.IommuDmaCookie: same returns and raises.
    """

    def __init__(self, domain, machine) -> None:
        self.domain = domain
        self.machine = machine
        self.iovad = None
        self.msi_page_list: list[tuple[int, int]] = []
        self.qt = "per-cpu"
        self.fq_size = 0
        self.fq_timeout = 0
        self.single_fq: IovaFq | None = None
        self.percpu_fq: list[IovaFq] = []
        self.fq_flush_start_cnt = 0
        self.fq_flush_finish_cnt = 0
        self.fq_timer_on = False
        self.fq_timer_cpu = 0
        self.fq_on = False
        self.fq_gen = 0
        self.pci_32bit: dict = {}

    @property
    def fq_domain(self):
        """Reference twin of dmaphys._core.IommuDmaCookie.fq_domain."""
        return self.domain if self.fq_on else None

    @property
    def granule(self) -> int:
        """Reference twin of dmaphys._core.IommuDmaCookie.granule."""
        return self.iovad.granule if self.iovad is not None else 0

    def pci_32bit_workaround(self, dev) -> bool:
        """Reference twin of dmaphys._core.IommuDmaCookie.pci_32bit_workaround: same returns and raises."""
        typed(dev, _machine.Device, "dev")
        return bool(self.pci_32bit.get(dev, False))

    def flush_queues(self) -> list[IovaFq]:
        """Reference twin of dmaphys._core.IommuDmaCookie.flush_queues: same returns and raises."""
        if not self.fq_on:
            return []
        return [self.single_fq] if self.qt == "single" else list(self.percpu_fq)

    def get_state(self) -> dict:
        """Reference twin of dmaphys._core.IommuDmaCookie.get_state: same returns and raises."""
        return {
            "granule": self.granule,
            "start_pfn": self.iovad.start_pfn if self.iovad is not None else 0,
            "lazy": self.fq_on,
            "qt": self.qt,
            "fq_size": self.fq_size, "fq_timeout": self.fq_timeout,
            "fq_flush_start_cnt": self.fq_flush_start_cnt,
            "fq_flush_finish_cnt": self.fq_flush_finish_cnt,
            "fq_timer_on": self.fq_timer_on,
            "fq": [fq.entries_list() for fq in self.flush_queues()],
            "msi_page_list": list(self.msi_page_list),
            "pci_32bit_workaround": {d.name: bool(v) for d, v in self.pci_32bit.items()},
        }

    def __repr__(self) -> str:
        mode = "lazy" if self.fq_on else "strict"
        return f"<dmaphys.reference.IommuDmaCookie granule={self.granule:#x} {mode}>"


def _cookie_of(dev) -> IommuDmaCookie:
    return dev.domain.iova_cookie


def iommu_put_pages_list(domain, freelist: list[int]) -> None:
    """Free page-table pages once the flush that covers their users has finished."""
    if not freelist:
        return
    pt = domain.pgtable
    pt.pending_free.extend(freelist)
    freelist.clear()
    pt.release_pending()


def fq_ring_free_locked(cookie: IommuDmaCookie, fq: IovaFq, cpu: int) -> None:
    counter = cookie.fq_flush_finish_cnt
    while fq.head != fq.tail:
        e = fq.entries[fq.head]
        if e.counter >= counter:
            break
        iommu_put_pages_list(cookie.domain, e.freelist)
        cookie.iovad.free_iova_fast(e.iova_pfn, e.pages, cpu)
        fq.entries[fq.head] = None
        fq.head = (fq.head + 1) & fq.mod_mask


def fq_flush_iotlb(cookie: IommuDmaCookie) -> None:
    cookie.fq_flush_start_cnt += 1
    _iommu.iommu_flush_iotlb_all(cookie.domain)
    cookie.fq_flush_finish_cnt += 1


def fq_flush_timeout(cookie: IommuDmaCookie) -> None:
    cookie.fq_timer_on = False
    fq_flush_iotlb(cookie)
    for fq in cookie.flush_queues():
        fq_ring_free_locked(cookie, fq, cookie.fq_timer_cpu)


def queue_iova(cookie: IommuDmaCookie, pfn: int, pages: int, freelist: list[int]) -> None:
    m = cookie.machine
    cpu = m.cpu
    fq = cookie.single_fq if cookie.qt == "single" else cookie.percpu_fq[cpu]
    fq_ring_free_locked(cookie, fq, cpu)
    if fq.full():
        fq_flush_iotlb(cookie)
        fq_ring_free_locked(cookie, fq, cpu)
    fq.entries[fq.tail] = _FqEntry(pfn, pages, cookie.fq_flush_start_cnt, list(freelist))
    freelist.clear()
    fq.tail = (fq.tail + 1) & fq.mod_mask
    if not cookie.fq_timer_on:
        cookie.fq_timer_on = True
        cookie.fq_timer_cpu = cpu
        gen = cookie.fq_gen

        def _timer() -> None:
            if cookie.fq_gen == gen and cookie.fq_on:
                fq_flush_timeout(cookie)

        m.add_timer(cookie.fq_timeout * 1_000_000, _timer)


def iommu_dma_init_fq(domain) -> int:
    cookie = domain.iova_cookie
    if cookie.fq_on:
        return 0
    cookie.fq_flush_start_cnt = 0
    cookie.fq_flush_finish_cnt = 0
    if cookie.qt == "single":
        cookie.single_fq = IovaFq(cookie.fq_size)
    else:
        cookie.percpu_fq = [IovaFq(cookie.fq_size) for _ in range(cookie.machine.cpus)]
    cookie.fq_timer_on = False
    cookie.fq_on = True
    return 0


def iommu_dma_free_fq(cookie: IommuDmaCookie) -> None:
    if not cookie.fq_on:
        return
    cookie.fq_gen += 1
    for fq in cookie.flush_queues():
        for e in fq.live():
            iommu_put_pages_list(cookie.domain, e.freelist)
    cookie.fq_on = False
    cookie.fq_timer_on = False
    cookie.single_fq = None
    cookie.percpu_fq = []


def iommu_put_dma_cookie(domain) -> int:
    cookie = domain.iova_cookie
    if cookie is None:
        return 0
    if cookie.iovad is not None:
        iommu_dma_free_fq(cookie)
        cookie.iovad._put_iova_domain()                # also cancels the rcache depot work
    cookie.msi_page_list = []
    domain.iova_cookie = None
    return 0


# ---- domain initialisation --------------------------------------------------------------------------
def iommu_dma_init_options(cookie: IommuDmaCookie, iommu) -> None:
    if getattr(iommu, "shadow_on_flush", False):
        cookie.qt, cookie.fq_size, cookie.fq_timeout = "single", IOVA_SINGLE_FQ_SIZE, IOVA_SINGLE_FQ_TIMEOUT
    else:
        cookie.qt, cookie.fq_size = "per-cpu", IOVA_DEFAULT_FQ_SIZE
        cookie.fq_timeout = IOVA_DEFAULT_FQ_TIMEOUT
    # simulator knobs (Iommu(fq_size=, fq_timeout=)): not in the kernel, which fixes these
    if getattr(iommu, "fq_size", None) is not None:
        cookie.fq_size = iommu.fq_size
    if getattr(iommu, "fq_timeout", None) is not None:
        cookie.fq_timeout = iommu.fq_timeout


def _resv_type(type_name) -> str:
    if isinstance(type_name, int) and not isinstance(type_name, bool):
        if 0 <= type_name < len(_RESV_BY_VALUE):
            return _RESV_BY_VALUE[type_name]
        raise ValueError(f"unknown IOMMU reserved-region type {type_name!r}")
    t = str(type_name).lower().replace("-", "_")
    if t.startswith("iommu_resv_"):
        t = t[len("iommu_resv_"):]
    if t not in _RESV_TYPES:
        raise ValueError(f"unknown IOMMU reserved-region type {type_name!r}")
    return _RESV_TYPES[t]


def cookie_init_hw_msi_region(cookie: IommuDmaCookie, start: int, end: int) -> int:
    granule = cookie.iovad.granule
    start -= _iova_offset(granule, start)
    num_pages = _iova_align(granule, end - start) >> cookie.iovad.iova_shift()
    for _ in range(num_pages):
        cookie.msi_page_list.insert(0, (start, start))
        start += granule
    return 0


def iova_reserve_pci_windows(dev, iovad) -> int:
    shift = iovad.iova_shift()
    ranges = sorted(((d, d + s - 1) for _c, d, s in dev.range_map), key=lambda r: r[0])
    start = 0
    for i, (lo, hi) in enumerate(ranges):
        end = lo
        while True:
            if end > start:
                iovad.reserve_iova(start >> shift, end >> shift)
            elif end < start:
                dev.machine.kwarn(KernelWarning,
                                  f"{dev.name}: Failed to reserve IOVA [{start:#018x}-{end:#018x}]")
                return -EINVAL
            start = (hi + 1) & U64_MAX
            if i == len(ranges) - 1 and end != U64_MAX:
                end = U64_MAX
                continue
            break
    return 0


def iova_reserve_iommu_regions(dev, domain) -> int:
    cookie = domain.iova_cookie
    iovad = cookie.iovad
    shift = iovad.iova_shift()
    ret = 0
    if dev.pci:
        ret = iova_reserve_pci_windows(dev, iovad)
        if ret:
            return ret
    for region in getattr(domain.iommu, "reserved_regions", None) or ():
        # struct iommu_resv_region (start, length, prot, type) or (start, length, type_name)
        if hasattr(region, "type"):
            start, length = u64(region.start, "start"), u64(region.length, "length")
            t = _resv_type(region.type)
        else:
            start, length, t = u64(region[0], "start"), u64(region[1], "length"), _resv_type(region[2])
        if t == "SW_MSI" or length == 0:
            continue
        iovad.reserve_iova(start >> shift, (start + length - 1) >> shift)
        if t == "MSI":
            ret = cookie_init_hw_msi_region(cookie, start, start + length)
        if ret:
            break
    return ret


def iommu_dma_init_domain(domain, dev) -> int:
    """iommu_dma_init_domain() (+ iommu_get_dma_cookie and iommu_setup_dma_ops' 32-bit flag)."""
    m = dev.machine
    if domain.iova_cookie is None:
        domain.iova_cookie = IommuDmaCookie(domain, m)
    cookie = domain.iova_cookie
    cookie.pci_32bit[dev] = bool(dev.pci) and not bool(getattr(domain.iommu, "forcedac", False))
    if domain.pgsize_bitmap == 0:
        return -EINVAL
    order = (domain.pgsize_bitmap & -domain.pgsize_bitmap).bit_length() - 1
    base_pfn = 1
    if dev.range_map:
        lo = min(d for _c, d, _s in dev.range_map)
        hi = max(d + s - 1 for _c, d, s in dev.range_map)
        if lo > domain.aperture_end or hi < domain.aperture_start:
            m.kwarn(KernelWarning, "specified DMA range outside IOMMU capability")
            return -EFAULT
    base_pfn = max(base_pfn, domain.aperture_start >> order)
    if cookie.iovad is not None:
        if (1 << order) != cookie.iovad.granule or base_pfn != cookie.iovad.start_pfn:
            m.kwarn(KernelWarning, "Incompatible range for DMA domain")
            return -EFAULT
        return 0
    cookie.iovad = _iova.IovaDomain(1 << order, base_pfn, ncpus=m.cpus, machine=m)
    iommu_dma_init_options(cookie, domain.iommu)
    if domain.pgtable is not None:
        domain.pgtable.defer_free = True
    if domain.type == "dma-fq":
        iommu_dma_init_fq(domain)
    return iova_reserve_iommu_regions(dev, domain)


# ---- protection bits and IOVA policy ----------------------------------------------------------------
def dma_info_to_prot(dir: int, coherent: bool, attrs: int) -> int:
    prot = IOMMU_MMIO if attrs & DMA_ATTR_MMIO else (IOMMU_CACHE if coherent else 0)
    if attrs & DMA_ATTR_PRIVILEGED:
        prot |= IOMMU_PRIV
    if dir == DMA_BIDIRECTIONAL:
        return prot | IOMMU_READ | IOMMU_WRITE
    if dir == DMA_TO_DEVICE:
        return prot | IOMMU_READ
    if dir == DMA_FROM_DEVICE:
        return prot | IOMMU_WRITE
    return 0


def iommu_dma_alloc_iova(domain, size: int, dma_limit: int, dev) -> int:
    cookie = domain.iova_cookie
    iovad = cookie.iovad
    shift = iovad.iova_shift()
    iova_len = size >> shift
    cpu = dev.machine.cpu
    dma_limit = min(min_not_zero(dma_limit, dev.bus_dma_limit), domain.aperture_end)
    if dma_limit > 0xFFFFFFFF and cookie.pci_32bit.get(dev, False):
        iova = iovad.alloc_iova_fast(iova_len, 0xFFFFFFFF >> shift, False, cpu)
        if iova:
            return iova << shift
        cookie.pci_32bit[dev] = False
        _log.info("%s: Using %d-bit DMA addresses", dev.name, _fls64(dma_limit))
    return iovad.alloc_iova_fast(iova_len, dma_limit >> shift, True, cpu) << shift


def iommu_dma_free_iova(cookie: IommuDmaCookie, iova: int, size: int, queued_freelist) -> None:
    shift = cookie.iovad.iova_shift()
    if queued_freelist is not None:
        queue_iova(cookie, iova >> shift, size >> shift, queued_freelist)
    else:
        cookie.iovad.free_iova_fast(iova >> shift, size >> shift, cookie.machine.cpu)


def _take_gather_freelist(domain) -> list[int]:
    pt = domain.pgtable
    fl = list(pt.pending_free)
    pt.pending_free.clear()
    return fl


def __iommu_dma_unmap(dev, dma_addr: int, size: int) -> None:
    domain = dev.domain
    cookie = domain.iova_cookie
    granule = cookie.iovad.granule
    iova_off = _iova_offset(granule, dma_addr)
    dma_addr -= iova_off
    size = _iova_align(granule, size + iova_off)
    if size == 0:
        # Not the kernel: a zero-size unmap unmaps nothing, and the kernel would then hand
        # free_iova_fast() a zero-size range (cached as one granule while the rbtree node and the
        # PTEs stay: the next 1-granule allocation collides). The mapping stays (leaked), in strict
        # and lazy mode alike; dma-debug reports the size mismatch.
        return
    unmapped = _iommu._unmap_fast(domain, dma_addr, size)
    if unmapped != size:
        _warn_on(dev.machine, "__iommu_dma_unmap", f"WARN_ON(unmapped != size) ({unmapped:#x} != {size:#x})")
    if not cookie.fq_on:
        _iommu.iommu_iotlb_sync_range(domain, dma_addr, size)
        iommu_dma_free_iova(cookie, dma_addr, size, None)
    else:
        iommu_dma_free_iova(cookie, dma_addr, size, _take_gather_freelist(domain))


def __iommu_dma_map(dev, phys: int, size: int, prot: int, dma_mask: int) -> int:
    domain = dev.domain
    cookie = domain.iova_cookie
    granule = cookie.iovad.granule
    iova_off = _iova_offset(granule, phys)
    if dev.min_align_mask > granule - 1:
        dev.machine.kwarn(KernelWarning, f"{dev.name}: Unsupported alignment constraint",
                          "dma-iommu:__iommu_dma_map:min_align_mask")
        return DMA_MAPPING_ERROR
    size = _iova_align(granule, size + iova_off)
    iova = iommu_dma_alloc_iova(domain, size, dma_mask, dev)
    if iova == 0:
        return DMA_MAPPING_ERROR
    if _iommu._map(domain, iova, phys - iova_off, size, prot):
        iommu_dma_free_iova(cookie, iova, size, None)
        return DMA_MAPPING_ERROR
    return iova + iova_off


# ---- swiotlb bouncing ----------------------------------------------------------------------------
def dev_use_swiotlb(dev, size: int, dir: int) -> bool:
    return dev.untrusted


def _swiotlb_unmap_if_bounced(dev, phys: int, size: int, dir: int, attrs: int) -> None:
    if _swiotlb.c_is_swiotlb_buffer(dev, phys):
        _swiotlb.c_swiotlb_tbl_unmap_single(dev, phys, size, dir, attrs)


def iommu_dma_map_swiotlb(dev, phys: int, size: int, dir: int, attrs: int) -> int:
    granule = _cookie_of(dev).iovad.granule
    if not _swiotlb.c_is_swiotlb_active(dev):
        text = f"{dev.name}: DMA bounce buffers are inactive, unable to map unaligned transaction."
        dev.machine.kwarn(KernelWarning, text, "dma-iommu:iommu_dma_map_swiotlb:inactive")
        return DMA_MAPPING_ERROR
    _trace.trace_swiotlb_bounced(dev, phys, size)
    phys = _swiotlb.c_swiotlb_tbl_map_single(dev, phys, size, granule - 1, dir, attrs)
    if phys != DMA_MAPPING_ERROR and dev.untrusted:
        mem = dev.machine.mem
        start = phys & ~(granule - 1)
        if phys > start:
            mem.fill(start, 0, phys - start)
        start = phys + size
        if _iova_align(granule, start) > start:
            mem.fill(start, 0, _iova_align(granule, start) - start)
    return phys


# ---- streaming map / unmap / sync ---------------------------------------------------------------
def _dma_pgtable_live(dev) -> None:
    # mirrors dma_iommu.pxi _dma_pgtable_live(): a freed DMA-domain page table maps nothing,
    # ValueError before any allocation
    pt = dev.domain.pgtable
    if pt is not None and pt.pgtable_root == 0:
        pt._check_live()


def iommu_dma_map_phys(dev, phys: int, size: int, dir: int, attrs: int) -> int:
    _dma_pgtable_live(dev)
    coherent = dev.coherent
    prot = dma_info_to_prot(dir, coherent, attrs)
    granule = _cookie_of(dev).iovad.granule
    dma_mask = _machine.dma_get_mask(dev)
    if dev_use_swiotlb(dev, size, dir) and _iova_offset(granule, phys | size):
        if attrs & DMA_ATTR_MMIO:
            return DMA_MAPPING_ERROR
        phys = iommu_dma_map_swiotlb(dev, phys, size, dir, attrs)
        if phys == DMA_MAPPING_ERROR:
            return DMA_MAPPING_ERROR
    if not coherent and not attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO):
        _machine.arch_sync_dma_for_device(dev, phys, size, dir)
    iova = __iommu_dma_map(dev, phys, size, prot, dma_mask)
    if iova == DMA_MAPPING_ERROR and not attrs & DMA_ATTR_MMIO:
        _swiotlb_unmap_if_bounced(dev, phys, size, dir, attrs)
    return iova


def iommu_dma_unmap_phys(dev, dma_handle: int, size: int, dir: int, attrs: int) -> None:
    if attrs & DMA_ATTR_MMIO:
        __iommu_dma_unmap(dev, dma_handle, size)
        return
    phys = _iommu._iova_to_phys(dev.domain, dma_handle)
    if phys == 0:
        _warn_on(dev.machine, "iommu_dma_unmap_phys", f"WARN_ON(!phys) (dma_handle {dma_handle:#x})")
        return
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC and not dev.coherent:
        _machine.arch_sync_dma_for_cpu(dev, phys, size, dir)
    __iommu_dma_unmap(dev, dma_handle, size)
    _swiotlb_unmap_if_bounced(dev, phys, size, dir, attrs)


def iommu_dma_sync_single_for_cpu(dev, dma_handle: int, size: int, dir: int) -> None:
    if dev.coherent and not dev_use_swiotlb(dev, size, dir):
        return
    phys = _iommu._iova_to_phys(dev.domain, dma_handle)
    if not dev.coherent:
        _machine.arch_sync_dma_for_cpu(dev, phys, size, dir)
    if _swiotlb.c_is_swiotlb_buffer(dev, phys):
        _swiotlb.c_swiotlb_sync_single_for_cpu(dev, phys, size, dir)


def iommu_dma_sync_single_for_device(dev, dma_handle: int, size: int, dir: int) -> None:
    if dev.coherent and not dev_use_swiotlb(dev, size, dir):
        return
    phys = _iommu._iova_to_phys(dev.domain, dma_handle)
    if _swiotlb.c_is_swiotlb_buffer(dev, phys):
        _swiotlb.c_swiotlb_sync_single_for_device(dev, phys, size, dir)
    if not dev.coherent:
        _machine.arch_sync_dma_for_device(dev, phys, size, dir)


# ---- scatter-gather ------------------------------------------------------------------------------
def iommu_dma_sync_sg_for_cpu(dev, sg, nents: int, dir: int) -> None:
    ents = sg.sg[:nents]
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        for s in ents:
            iommu_dma_sync_single_for_cpu(dev, s.dma_address, s.length, dir)
    elif not dev.coherent:
        for s in ents:
            _machine.arch_sync_dma_for_cpu(dev, s.phys, s.length, dir)


def iommu_dma_sync_sg_for_device(dev, sg, nents: int, dir: int) -> None:
    ents = sg.sg[:nents]
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        for s in ents:
            iommu_dma_sync_single_for_device(dev, s.dma_address, s.length, dir)
    elif not dev.coherent:
        for s in ents:
            _machine.arch_sync_dma_for_device(dev, s.phys, s.length, dir)


def __finalise_sg(dev, sg, nents: int, dma_addr: int) -> int:
    """Restore each entry and merge granule-contiguous runs; unsigned int arithmetic as the kernel."""
    M32 = 0xFFFFFFFF
    seg_mask = dev.seg_boundary_mask
    max_len = dev.max_segment_size & M32
    cur_i, cur_len, count = 0, 0, 0
    for i in range(nents):
        s = sg.sg[i]
        cur = sg.sg[cur_i]
        s_dma_addr = s.dma_address
        s_iova_off = s.dma_address & M32
        s_length = s.dma_length & M32
        s_iova_len = s.length & M32
        s.dma_address = DMA_MAPPING_ERROR
        s.dma_length = 0
        if s.dma_flags & SG_DMA_BUS_ADDRESS:
            if i > 0:
                cur_i += 1
                cur = sg.sg[cur_i]
            s.dma_flags &= ~SG_DMA_BUS_ADDRESS
            cur.dma_address = s_dma_addr
            cur.dma_length = s_length
            cur.dma_flags |= SG_DMA_BUS_ADDRESS
            count += 1
            cur_len = 0
            continue
        s.offset += s_iova_off
        s.length = s_length
        if cur_len and not s_iova_off and (dma_addr & seg_mask) and ((max_len - cur_len) & M32) >= s_length:
            cur_len = (cur_len + s_length) & M32
        else:
            if i > 0:
                cur_i += 1
                cur = sg.sg[cur_i]
            cur_len = s_length
            count += 1
            cur.dma_address = (dma_addr + s_iova_off) & U64_MAX
        cur.dma_length = cur_len
        dma_addr = (dma_addr + s_iova_len) & U64_MAX
        if (s_length + s_iova_off) & M32 < s_iova_len:
            cur_len = 0
    return count


def __invalidate_sg(sg, nents: int) -> None:
    for s in sg.sg[:nents]:
        if s.dma_flags & SG_DMA_BUS_ADDRESS:
            s.dma_flags &= ~SG_DMA_BUS_ADDRESS
        else:
            if s.dma_address != DMA_MAPPING_ERROR:
                s.offset += s.dma_address
            if s.dma_length:
                s.length = s.dma_length
        s.dma_address = DMA_MAPPING_ERROR
        s.dma_length = 0


def iommu_dma_unmap_sg_swiotlb(dev, sg, nents: int, dir: int, attrs: int) -> None:
    for s in sg.sg[:nents]:
        iommu_dma_unmap_phys(dev, s.dma_address, s.dma_length, dir, attrs)


def iommu_dma_map_sg_swiotlb(dev, sg, nents: int, dir: int, attrs: int) -> int:
    sg.sg[0].dma_flags |= SG_DMA_SWIOTLB
    for i in range(nents):
        s = sg.sg[i]
        try:
            s.dma_address = iommu_dma_map_phys(dev, s.phys, s.length, dir, attrs)
        except BaseException:                             # a call that raises leaves no trace
            iommu_dma_unmap_sg_swiotlb(dev, sg, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            raise
        if s.dma_address == DMA_MAPPING_ERROR:
            iommu_dma_unmap_sg_swiotlb(dev, sg, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC)
            return -EIO
        s.dma_length = s.length
    return nents


def iommu_map_sg(domain, iova: int, sg, nents: int, prot: int) -> int:
    """iommu_map_sg() (drivers/iommu/iommu.c): map physically contiguous runs, then one sync."""
    length = mapped = start = 0
    i = 0
    s = sg.sg[0]
    while i <= nents:
        s_phys = s.phys
        if length and s_phys != start + length:
            ret = _iommu.iommu_map_nosync(domain, iova + mapped, start, length, prot)
            if ret:
                _iommu._unmap(domain, iova, mapped)
                return ret
            mapped += length
            length = 0
        if not s.dma_flags & SG_DMA_BUS_ADDRESS:
            if length:
                length += s.length
            else:
                length = s.length
                start = s_phys
        i += 1
        if i < nents:
            s = sg.sg[i]
    ret = _iommu.iommu_sync_map(domain, iova, mapped)
    if ret:
        _iommu._unmap(domain, iova, mapped)
        return ret
    return mapped


def iommu_dma_map_sg(dev, sg, nents: int, dir: int, attrs: int) -> int:
    _dma_pgtable_live(dev)
    domain = dev.domain
    cookie = domain.iova_cookie
    granule = cookie.iovad.granule
    prot = dma_info_to_prot(dir, dev.coherent, attrs)
    mask = dev.seg_boundary_mask
    if dev_use_swiotlb(dev, 0, dir):
        return iommu_dma_map_sg_swiotlb(dev, sg, nents, dir, attrs)
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC:
        iommu_dma_sync_sg_for_device(dev, sg, nents, dir)
    iova_len = 0
    prev = None
    for i in range(nents):
        s = sg.sg[i]
        s_iova_off = _iova_offset(granule, s.offset)
        s_length = s.length
        pad_len = (mask - iova_len + 1) & mask
        p2p, bus_addr = _p2p.p2pdma_state(dev, s.phys, s.length)
        if p2p == PCI_P2PDMA_MAP_BUS_ADDR:
            s.dma_address = bus_addr
            s.dma_length = sg.sg[0].length
            s.dma_flags |= SG_DMA_BUS_ADDRESS
            continue
        if p2p not in (PCI_P2PDMA_MAP_NONE, PCI_P2PDMA_MAP_THRU_HOST_BRIDGE):
            __invalidate_sg(sg, nents)
            return -EREMOTEIO
        s.dma_address = s_iova_off
        s.dma_length = s_length
        s.offset -= s_iova_off
        s_length = _iova_align(granule, s_length + s_iova_off)
        s.length = s_length
        if pad_len and pad_len < s_length - 1:
            prev.length += pad_len
            iova_len += pad_len
        iova_len += s_length
        prev = s
    if iova_len == 0:
        return __finalise_sg(dev, sg, nents, 0)
    iova = iommu_dma_alloc_iova(domain, iova_len, _machine.dma_get_mask(dev), dev)
    if iova == 0:
        __invalidate_sg(sg, nents)
        return -ENOMEM
    ret = iommu_map_sg(domain, iova, sg, nents, prot)
    if ret < 0 or ret < iova_len:
        iommu_dma_free_iova(cookie, iova, iova_len, None)
        __invalidate_sg(sg, nents)
        return ret if ret in (-ENOMEM, -EREMOTEIO) else -EINVAL
    return __finalise_sg(dev, sg, nents, iova)


def iommu_dma_unmap_sg(dev, sg, nents: int, dir: int, attrs: int) -> None:
    if sg.sg[0].dma_flags & SG_DMA_SWIOTLB:
        iommu_dma_unmap_sg_swiotlb(dev, sg, nents, dir, attrs)
        return
    if not attrs & DMA_ATTR_SKIP_CPU_SYNC:
        iommu_dma_sync_sg_for_cpu(dev, sg, nents, dir)
    start = end = 0
    i = 0
    while i < nents:
        t = sg.sg[i]
        if t.dma_flags & SG_DMA_BUS_ADDRESS:
            t.dma_flags &= ~SG_DMA_BUS_ADDRESS
            i += 1
            continue
        if t.dma_length:
            start = t.dma_address
        break
    for t in sg.sg[i:nents]:
        if t.dma_flags & SG_DMA_BUS_ADDRESS:
            t.dma_flags &= ~SG_DMA_BUS_ADDRESS
            continue
        if t.dma_length == 0:
            break
        end = t.dma_address + t.dma_length
    if end:
        __iommu_dma_unmap(dev, start, end - start)


# ---- sizes and coherent allocations ----------------------------------------------------------------
def iommu_dma_max_mapping_size(dev) -> int:
    return _swiotlb.c_swiotlb_max_mapping_size(dev) if dev.untrusted else U64_MAX


def iommu_dma_opt_mapping_size() -> int:
    return IOVA_RCACHE_RANGE


def iommu_dma_get_merge_boundary(dev) -> int:
    b = dev.domain.pgsize_bitmap
    return (b & -b) - 1


def _get_order(size: int) -> int:
    return 0 if size <= PAGE_SIZE else ((size - 1) >> PAGE_SHIFT).bit_length()


def iommu_dma_alloc(dev, size: int, attrs: int) -> tuple[int, int]:
    """Contiguous iommu_dma_alloc(): (phys, dma_handle), or (U64_MAX, DMA_MAPPING_ERROR)."""
    _dma_pgtable_live(dev)
    ioprot = dma_info_to_prot(DMA_BIDIRECTIONAL, dev.coherent, attrs)
    alloc_size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    mem = dev.machine.mem
    if alloc_size == 0:
        return U64_MAX, DMA_MAPPING_ERROR
    npages = 1 << _get_order(alloc_size)
    phys = mem.alloc_pages(npages, U64_MAX, npages)
    if phys == U64_MAX:
        return U64_MAX, DMA_MAPPING_ERROR
    mem.fill(phys, 0, alloc_size)
    handle = __iommu_dma_map(dev, phys, size, ioprot, dev.coherent_dma_mask)
    if handle == DMA_MAPPING_ERROR:
        mem.free_pages(phys, npages)
        return U64_MAX, DMA_MAPPING_ERROR
    return phys, handle


def iommu_dma_free(dev, size: int, phys: int, dma_handle: int, attrs: int) -> None:
    alloc_size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    __iommu_dma_unmap(dev, dma_handle, size)
    dev.machine.mem.free_pages(phys, 1 << _get_order(alloc_size))


# ---- the two-step IOVA API ------------------------------------------------------------------------
class DmaIovaState:
    """struct dma_iova_state: ``addr`` and ``__size`` (bit 63 = DMA_IOVA_USE_SWIOTLB).

    Reference twin of dmaphys._core.DmaIovaState: same returns and raises.
    """

    def __init__(self, addr=0, size=0) -> None:
        self.addr = u64(addr, "addr")
        self.__dict__["__size"] = u64(size, "__size")
        # (simulator) the Device dma_iova_try_alloc() allocated for, and addr / size as allocated
        self.__dict__.update(_owner=None, _addr0=0, _size0=0)

    @property
    def size(self) -> int:
        """Reference twin of dmaphys._core.DmaIovaState.size."""
        return self.__dict__["__size"] & ~DMA_IOVA_USE_SWIOTLB

    def __setattr__(self, name, value) -> None:
        if name in ("addr", "__size"):
            value = u64(value, name)
        elif name == "size":
            raise AttributeError("property 'size' of 'DmaIovaState' object has no setter")
        self.__dict__[name] = value

    def __repr__(self) -> str:
        raw = self.__dict__["__size"]
        swiotlb = " USE_SWIOTLB" if raw & DMA_IOVA_USE_SWIOTLB else ""
        return f"<dmaphys.reference.DmaIovaState addr={self.addr:#x} size={self.size:#x}{swiotlb}>"


def _raw(state: DmaIovaState) -> int:
    return state.__dict__["__size"]


def _set_raw(state: DmaIovaState, v: int) -> None:
    state.__dict__["__size"] = v


def _check_types(dev, state) -> None:
    if not isinstance(dev, _machine.Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")
    if not isinstance(state, DmaIovaState):
        raise TypeError(f"state must be a DmaIovaState, not {type(state).__name__}")
    _machine.dev_live(dev)


def _iova_attrs(attrs) -> int:
    return _mapping._attrs(attrs)          # the DMA API's argument checks


def _int_dir(dir) -> int:
    return _mapping._dir(dir)


def _iova_check(dev, dir: int, func: str, check_dir: bool) -> None:
    if check_dir and dir not in (0, 1, 2):
        raise KernelBug(f"kernel BUG in {func}(): invalid DMA direction {dir}")
    if not dev.dma_iommu:
        raise KernelBug(f"BUG: kernel NULL pointer dereference in {func}(): {dev.name} has no DMA "
                        "IOMMU domain (dma_iova_try_alloc() returned false: use the regular DMA API)")


def _iova_state_ok(dev, state, offset: int, size: int, func: str) -> bool:
    """Not the kernel: see the core's _iova_state_ok (a dma-debug report and a refusal)."""
    owner, size0 = state.__dict__["_owner"], state.__dict__["_size0"]
    if owner is None:
        why = "holds no IOVA space (never allocated by dma_iova_try_alloc(), or already freed)"
    elif owner is not dev:
        why = f"holds IOVA space allocated for {owner.name}"
    elif state.addr != state.__dict__["_addr0"] or (_raw(state) & ~DMA_IOVA_USE_SWIOTLB) != size0:
        why = "was changed after dma_iova_try_alloc()"
    elif offset > size0 or size > size0 - offset:
        why = f"holds {size0:#x} bytes: [{offset:#x}, +{size:#x}) lies beyond them"
    else:
        return True
    if dev.machine.dma_debug.enabled:
        dev.machine.dma_debug.report_extra(dev, "iova_state", f"{func}: DMA IOVA state "
                                           f"[addr={state.addr:#x}] {why}; refused", state.addr, size)
    return False


def _dma_iova_try_alloc(dev, state, phys: int, size: int) -> bool:
    state.addr = 0
    _set_raw(state, 0)
    state.__dict__["_owner"] = None
    if not dev.dma_iommu:
        return False
    granule = _cookie_of(dev).iovad.granule
    iova_off = _iova_offset(granule, phys)
    if size == 0:
        _warn_on(dev.machine, "dma_iova_try_alloc", "WARN_ON_ONCE(!size)", "dma_iova_try_alloc:!size")
        return False
    if size & DMA_IOVA_USE_SWIOTLB:
        _warn_on(dev.machine, "dma_iova_try_alloc", "WARN_ON_ONCE(size & DMA_IOVA_USE_SWIOTLB)",
                 "dma_iova_try_alloc:USE_SWIOTLB")
        return False
    addr = iommu_dma_alloc_iova(dev.domain, _iova_align(granule, size + iova_off),
                                _machine.dma_get_mask(dev), dev)
    if addr == 0:
        return False
    state.addr = addr + iova_off
    _set_raw(state, size)
    state.__dict__.update(_owner=dev, _addr0=state.addr, _size0=size)
    return True


def _dma_iova_free(dev, state) -> None:
    cookie = _cookie_of(dev)
    granule = cookie.iovad.granule
    pad = _iova_offset(granule, state.addr)
    size = _raw(state) & ~DMA_IOVA_USE_SWIOTLB
    state.__dict__["_owner"] = None                   # freed: the state holds nothing now
    iommu_dma_free_iova(cookie, (state.addr - pad) & U64_MAX, _iova_align(granule, size + pad), None)


def __dma_iova_link(dev, addr: int, phys: int, size: int, dir: int, attrs: int) -> int:
    coherent = dev.coherent
    if not coherent and not attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO):
        _machine.arch_sync_dma_for_device(dev, phys, size, dir)
    return _iommu.iommu_map_nosync(dev.domain, addr & U64_MAX, phys & U64_MAX, size,
                                   dma_info_to_prot(dir, coherent, attrs))


def iommu_dma_iova_bounce_and_link(dev, addr, phys, bounce_len, dir, attrs, iova_start_pad) -> int:
    granule = _cookie_of(dev).iovad.granule
    bounce_phys = iommu_dma_map_swiotlb(dev, phys, bounce_len, dir, attrs)
    if bounce_phys == DMA_MAPPING_ERROR:
        return -ENOMEM
    error = __dma_iova_link(dev, addr - iova_start_pad, bounce_phys - iova_start_pad,
                            _iova_align(granule, bounce_len), dir, attrs)
    if error:
        _swiotlb.c_swiotlb_tbl_unmap_single(dev, bounce_phys, bounce_len, dir, attrs)
    return error


def iommu_dma_iova_link_swiotlb(dev, state, phys, offset, size, dir, attrs) -> int:
    granule = _cookie_of(dev).iovad.granule
    iova_start_pad = _iova_offset(granule, phys)
    iova_end_pad = _iova_offset(granule, phys + size)
    addr = (state.addr + offset) & U64_MAX
    mapped = 0
    if iova_start_pad:
        bounce_len = min(size, granule - iova_start_pad)
        error = iommu_dma_iova_bounce_and_link(dev, addr, phys, bounce_len, dir, attrs, iova_start_pad)
        if error:
            return error
        _set_raw(state, _raw(state) | DMA_IOVA_USE_SWIOTLB)
        mapped += bounce_len
        size -= bounce_len
        if not size:
            return 0
    size -= iova_end_pad
    if size:
        error = __dma_iova_link(dev, addr + mapped, phys + mapped, size, dir, attrs)
        if error:
            if mapped:
                __iommu_dma_iova_unlink(dev, state, offset, mapped, dir, attrs, False)
            return error
        mapped += size
    if iova_end_pad:
        error = iommu_dma_iova_bounce_and_link(dev, addr + mapped, phys + mapped, iova_end_pad, dir, attrs, 0)
        if error:
            if mapped:
                __iommu_dma_iova_unlink(dev, state, offset, mapped, dir, attrs, False)
            return error
        _set_raw(state, _raw(state) | DMA_IOVA_USE_SWIOTLB)
    return 0


def _dma_iova_link(dev, state, phys, offset, size, dir, attrs) -> int:
    granule = _cookie_of(dev).iovad.granule
    iova_start_pad = _iova_offset(granule, phys)
    if iova_start_pad and offset > 0:
        _warn_on(dev.machine, "dma_iova_link", "WARN_ON_ONCE(iova_start_pad && offset > 0)",
                 "dma_iova_link:start_pad")
        return -EIO
    if dev_use_swiotlb(dev, size, dir) and _iova_offset(granule, phys | size):
        if attrs & DMA_ATTR_MMIO:
            return -EPERM
        return iommu_dma_iova_link_swiotlb(dev, state, phys, offset, size, dir, attrs)
    return __dma_iova_link(dev, state.addr + offset - iova_start_pad, phys - iova_start_pad,
                           _iova_align(granule, size + iova_start_pad), dir, attrs)


def iommu_dma_iova_unlink_range_slow(dev, addr: int, size: int, dir: int, attrs: int) -> None:
    granule = _cookie_of(dev).iovad.granule
    iova_start_pad = _iova_offset(granule, addr)
    end = (addr + size) & U64_MAX
    while True:
        phys = _iommu._iova_to_phys(dev.domain, addr)
        if phys == 0:
            _warn_on(dev.machine, "iommu_dma_iova_unlink_range_slow", f"WARN_ON(!phys) (iova {addr:#x})")
            return
        length = min((end - addr) & U64_MAX, granule - iova_start_pad)
        if not dev.coherent and not attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO):
            _machine.arch_sync_dma_for_cpu(dev, phys, length, dir)
        _swiotlb_unmap_if_bounced(dev, phys, length, dir, attrs)
        addr = (addr + length) & U64_MAX
        iova_start_pad = 0
        if not addr < end:
            break


def __iommu_dma_iova_unlink(dev, state, offset, size, dir, attrs, free_iova: bool) -> None:
    domain = dev.domain
    cookie = domain.iova_cookie
    granule = cookie.iovad.granule
    addr = (state.addr + offset) & U64_MAX
    iova_start_pad = _iova_offset(granule, addr)
    if _raw(state) & DMA_IOVA_USE_SWIOTLB or (
            not dev.coherent and not attrs & (DMA_ATTR_SKIP_CPU_SYNC | DMA_ATTR_MMIO)):
        iommu_dma_iova_unlink_range_slow(dev, addr, size, dir, attrs)
    queued = free_iova and cookie.fq_on
    size = _iova_align(granule, size + iova_start_pad)
    addr -= iova_start_pad
    unmapped = _iommu._unmap_fast(domain, addr, size)
    if unmapped != size:
        _warn_on(dev.machine, "__iommu_dma_iova_unlink",
                 f"WARN_ON(unmapped != size) ({unmapped:#x} != {size:#x})")
    if not queued:
        _iommu.iommu_iotlb_sync_range(domain, addr, size)
        if free_iova:
            iommu_dma_free_iova(cookie, addr, size, None)
    else:
        iommu_dma_free_iova(cookie, addr, size, _take_gather_freelist(domain))


def dma_iova_try_alloc(dev, state, phys, size) -> bool:
    """dma_iova_try_alloc(dev, state, phys, size) -> bool (see the core's docstring).

    Reference twin of dmaphys._core.dma_iova_try_alloc; same returns and raises.
    """
    _check_types(dev, state)
    p = u64(phys, "phys")
    sz = u64(size, "size")
    try:
        return _dma_iova_try_alloc(dev, state, p, sz)
    finally:
        dev.machine.flush_warnings()


def dma_iova_free(dev, state) -> None:
    """dma_iova_free(dev, state): immediate free_iova_fast of the whole IOVA space.

    Reference twin of dmaphys._core.dma_iova_free; same returns and raises.
    """
    _check_types(dev, state)
    _iova_check(dev, 0, "dma_iova_free", False)
    try:
        if _iova_state_ok(dev, state, 0, 0, "dma_iova_free"):
            _dma_iova_free(dev, state)
    finally:
        dev.machine.flush_warnings()


def dma_iova_link(dev, state, phys, offset, size, dir, attrs) -> int:
    """dma_iova_link(dev, state, phys, offset, size, dir, attrs) -> 0 or -errno (no IOTLB sync).

    Reference twin of dmaphys._core.dma_iova_link; same returns and raises.
    """
    _check_types(dev, state)
    p, off, sz = u64(phys, "phys"), u64(offset, "offset"), u64(size, "size")
    d = _int_dir(dir)
    a = _iova_attrs(attrs)
    _iova_check(dev, d, "dma_iova_link", True)
    try:
        if not _iova_state_ok(dev, state, off, sz, "dma_iova_link"):
            return -EINVAL
        return _dma_iova_link(dev, state, p, off, sz, d, a)
    finally:
        dev.machine.flush_warnings()


def dma_iova_sync(dev, state, offset, size) -> int:
    """dma_iova_sync(dev, state, offset, size) -> 0 or -errno: one IOTLB sync for the range.

    Reference twin of dmaphys._core.dma_iova_sync; same returns and raises.
    """
    _check_types(dev, state)
    off, sz = u64(offset, "offset"), u64(size, "size")
    _iova_check(dev, 0, "dma_iova_sync", False)
    try:
        if not _iova_state_ok(dev, state, off, sz, "dma_iova_sync"):
            return -EINVAL
        granule = _cookie_of(dev).iovad.granule
        addr = (state.addr + off) & U64_MAX
        pad = _iova_offset(granule, addr)
        return _iommu.iommu_sync_map(dev.domain, addr - pad, _iova_align(granule, sz + pad))
    finally:
        dev.machine.flush_warnings()


def dma_iova_unlink(dev, state, offset, size, dir, attrs) -> None:
    """dma_iova_unlink(dev, state, offset, size, dir, attrs): unmap and sync now; IOVA kept.

    Reference twin of dmaphys._core.dma_iova_unlink; same returns and raises.
    """
    _check_types(dev, state)
    off, sz = u64(offset, "offset"), u64(size, "size")
    d = _int_dir(dir)
    a = _iova_attrs(attrs)
    _iova_check(dev, d, "dma_iova_unlink", True)
    try:
        if _iova_state_ok(dev, state, off, sz, "dma_iova_unlink"):
            __iommu_dma_iova_unlink(dev, state, off, sz, d, a, False)
    finally:
        dev.machine.flush_warnings()


def dma_iova_destroy(dev, state, mapped_len, dir, attrs) -> None:
    """dma_iova_destroy(dev, state, mapped_len, dir, attrs): unlink [0, mapped_len) and free.

    Reference twin of dmaphys._core.dma_iova_destroy; same returns and raises.
    """
    _check_types(dev, state)
    ml = u64(mapped_len, "mapped_len")
    d = _int_dir(dir)
    a = _iova_attrs(attrs)
    _iova_check(dev, d, "dma_iova_destroy", True)
    try:
        if not _iova_state_ok(dev, state, 0, ml, "dma_iova_destroy"):
            return
        if ml:
            state.__dict__["_owner"] = None               # the unlink frees the IOVA space
            __iommu_dma_iova_unlink(dev, state, 0, ml, d, a, True)
        else:
            _dma_iova_free(dev, state)
    finally:
        dev.machine.flush_warnings()


def dma_use_iova(state) -> bool:
    """dma_use_iova(state): __size != 0.

    Reference twin of dmaphys._core.dma_use_iova; same returns and raises.
    """
    if not isinstance(state, DmaIovaState):
        raise TypeError(f"state must be a DmaIovaState, not {type(state).__name__}")
    return _raw(state) != 0


def dma_iova_size(state) -> int:
    """dma_iova_size(state): __size without DMA_IOVA_USE_SWIOTLB.

    Reference twin of dmaphys._core.dma_iova_size; same returns and raises.
    """
    if not isinstance(state, DmaIovaState):
        raise TypeError(f"state must be a DmaIovaState, not {type(state).__name__}")
    return _raw(state) & ~DMA_IOVA_USE_SWIOTLB
