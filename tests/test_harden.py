"""Hardening (issue 9): no crash on any Python input, no state left behind by a failed call,
no device access after removal, checked frees. Each test failed on main before the fix."""

import subprocess
import sys

import numpy as np
import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import DMA_BIT_MASK, DMA_TO_DEVICE, DmaFault, PhysAddrError

HOLE = 80 << 30                                   # beyond the default machine's RAM (ends at 17 GiB)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


# ---- crashes of the compiled core ----------------------------------------------------------------
def test_scatterlist_entry_index_is_checked():
    sg = dmaphys.ScatterList([(0x1000, 4096), (0x3000, 4096)])
    for bad in (2, 10**6, -3, -5):
        with pytest.raises(IndexError):
            dmaphys.ScatterlistEntry(sg, bad)
    assert dmaphys.ScatterlistEntry(sg, -1).phys == 0x3000
    with pytest.raises(TypeError):
        dmaphys.ScatterlistEntry(None, 0)


UNINIT_PROBE = r"""
import dmaphys._core as c
T = getattr(c, {name!r})
try:
    o = T.__new__(T)
except TypeError:
    raise SystemExit(0)
m = c.Machine()
for n in dir(o):
    if n.startswith("__") and n not in ("__repr__", "__len__", "__iter__"):
        continue
    try:
        a = getattr(o, n)
    except Exception:
        continue
    if callable(a):
        for args in ((), (0,), (0, 0), (0, 0, 0), (4096, 4096, 0)):
            try:
                a(*args)
            except Exception:
                pass
for fn in c.__all__:
    f = getattr(c, fn)
    if isinstance(f, type) or not callable(f):
        continue
    for args in ((o,), (o, 0), (o, 0, 0), (o, 0, 4096, 0), (o, 0, 4096, 0, 0), (m, o, 0, 0)):
        try:
            f(*args)
        except Exception:
            pass
"""


@pytest.mark.parametrize("name", ["Machine", "Device", "ScatterlistEntry", "IommuDomain", "PciP2PdmaPagemap",
                                  "Iotlb", "P2PTopology", "PciDev", "PciHostBridge", "IommuDmaCookie",
                                  "IovaFq"])
def test_uninitialised_objects_do_not_crash(name):
    """``T.__new__(T)`` either raises TypeError or gives a usable object (__cinit__ initialises)."""
    r = _run(UNINIT_PROBE.format(name=name))
    assert r.returncode == 0, (name, r.returncode, r.stderr[-500:])


def test_iotlb_new_is_a_default_iotlb():
    t = dmaphys.Iotlb.__new__(dmaphys.Iotlb)
    assert (t.entries, t.ways) == (512, 8)


@pytest.mark.parametrize("fn", ["sg_dma_is_bus_address", "sg_dma_is_swiotlb"])
def test_none_scatterlist_entry_is_a_type_error(impl, fn):
    with pytest.raises(TypeError):
        getattr(impl, fn)(None)


def test_p2pmem_find_none_client(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    with pytest.raises(TypeError):
        impl.pci_p2pmem_find(None)
    with pytest.raises(TypeError):
        impl.pci_p2pmem_find_many([m.add_device("a"), None])


@pytest.mark.parametrize("attr", ["domain", "p2p_node"])
def test_device_links_are_read_only(attr):
    m = dmaphys.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    d = m.add_device("d")
    with pytest.raises(AttributeError):
        setattr(d, attr, 5)


def test_domain_cookie_is_read_only():
    m = dmaphys.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64"))
    with pytest.raises(AttributeError):
        d.domain.iova_cookie = None


# ---- a call that raises leaves no trace ----------------------------------------------------------
def _swiotlb_resources(m):
    """The slots in use (not the statistics and search cursors a failed call may move too)."""
    if m.swiotlb is None:
        return None
    s = m.swiotlb.get_state()
    return s["total_used"], s["slots"], [used for used, _ in s["areas"]]


def _snapshot(m):
    return (_swiotlb_resources(m), len(m.dma_debug),
            m.mem.allocated_pages, [d.domain.iova_cookie.iovad.get_state()["ranges"]
                                    for d in m.devices.values()
                                    if d.domain is not None and d.domain.iova_cookie is not None])


def test_map_sg_raising_keeps_no_swiotlb_slot(impl):
    m = impl.Machine()
    d = m.add_device("d", dma_mask=DMA_BIT_MASK(32))
    hi = m.alloc_pages(1)                               # above 4 GiB: bounces
    before = _snapshot(m)
    sg = impl.ScatterList([(hi, 4096), (HOLE, 4096)])
    with pytest.raises(PhysAddrError):
        impl.dma_map_sg(d, sg, 2, DMA_TO_DEVICE)
    assert _snapshot(m) == before
    assert m.swiotlb.total_used == 0


def test_map_sg_swiotlb_iommu_raising_keeps_nothing(impl):
    m = impl.Machine()
    iommu = m.add_iommu(fmt="x86-64")
    d = m.add_device("d", iommu=iommu, untrusted=True)  # sub-granule entries bounce (dev_use_sg_swiotlb)
    hi = m.alloc_pages(1)
    before = _snapshot(m)
    sg = impl.ScatterList([(hi + 100, 300), (HOLE + 8, 100)])
    with pytest.raises(PhysAddrError):
        impl.dma_map_sg(d, sg, 2, DMA_TO_DEVICE)
    # the freed IOVA sits in the rcache and the page-table pages stay, as after any unmap
    assert _snapshot(m)[:2] == before[:2]
    assert m.swiotlb.total_used == 0


def test_map_batch_hands_back_what_it_mapped(impl):
    m = impl.Machine()
    d = m.add_device("d", dma_mask=DMA_BIT_MASK(32))
    pages = [m.alloc_pages(1) for _ in range(3)]
    before = _snapshot(m)
    with pytest.raises(PhysAddrError) as ei:
        impl.dma_map_phys_batch(d, np.array(pages[:2] + [HOLE] + pages[2:], dtype=np.uint64), 4096,
                                DMA_TO_DEVICE)
    e = ei.value
    assert e.batch_index == 2
    assert len(e.batch_result) == 2 and m.swiotlb.total_used > 0
    impl.dma_mapping_error_batch(d, e.batch_result)
    impl.dma_unmap_phys_batch(d, e.batch_result, 4096, DMA_TO_DEVICE)
    assert _snapshot(m) == before


# ---- isolation and lifetime --------------------------------------------------------------------
@pytest.mark.parametrize("behind_iommu", [False, True])
def test_removed_device_faults(impl, behind_iommu):
    m = impl.Machine()
    kw = {"iommu": m.add_iommu(fmt="x86-64")} if behind_iommu else {}
    d = m.add_device("d", **kw)
    buf = m.alloc_pages(1)
    m.mem_write(buf, b"secret")
    m.remove_device(d)
    assert d.removed
    with pytest.raises(DmaFault, match="removed"):
        d.dma_read(buf, 6)                               # no untranslated access to RAM
    with pytest.raises(DmaFault, match="removed"):
        d.dma_write(buf, b"x")
    with pytest.raises(DmaFault):
        d.dma_read_batch(np.array([buf], dtype=np.uint64), 6)
    assert m.mem_read(buf, 6) == b"secret"
    for call in (lambda: impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE),
                 lambda: impl.dma_map_phys_batch(d, [buf], 4096, DMA_TO_DEVICE),
                 lambda: impl.dma_alloc_coherent(d, 4096),
                 lambda: impl.swiotlb_map(d, buf, 4096, DMA_TO_DEVICE, 0),
                 lambda: impl.dma_iova_try_alloc(d, impl.DmaIovaState(), buf, 4096)):
        with pytest.raises(ValueError, match="removed"):
            call()


def test_free_pages_only_takes_what_alloc_pages_gave(impl):
    m = impl.Machine()
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64"))
    root = d.domain.pgtable_root
    before = m.mem.allocated_pages
    with pytest.raises(ValueError):
        m.free_pages(root, 1)                            # an IOMMU page-table page
    _, coherent = impl.dma_alloc_coherent(d, 4096)
    with pytest.raises(ValueError):
        m.free_pages(coherent, 1)                        # dma_alloc_coherent's pages
    assert m.mem.allocated_pages > before
    p = m.alloc_pages(2)
    with pytest.raises(ValueError):
        m.free_pages(p, 1)
    m.free_pages(p, 2)
    with pytest.raises(ValueError):
        m.free_pages(p, 2)                               # twice


def test_mem_read_checks_before_allocating(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    with pytest.raises(PhysAddrError):
        m.mem_read(0, 1 << 62)                           # would be 4 EiB of host memory


def test_reference_has_the_same_new_types():
    assert set(reference.__all__) == set(dmaphys._core.__all__)
