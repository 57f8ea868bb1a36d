"""IOMMU dirty tracking through the C ABI (ABI 1.2: set_dirty_tracking, read_and_clear_dirty),
called through ctypes like tests/test_capi.py, against the Python API on a twin machine.

read_and_clear_dirty is iommufd's IOMMU_HWPT_GET_DIRTY_BITMAP (the checks of
iommufd_check_iova_range() and the bits iova_bitmap_set() sets, as merged for v6.7) over the
domain's read_and_clear_dirty (tests/test_dirty.py): the bitmap must hold exactly the pages the
Python call's records cover, kept to the requested range, and both machines must end alike.
"""

import ctypes as C
import pathlib
import sys
import warnings

import pytest

import dmaphys as dma

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_capi import E_BADARG, E_PYTHON, ERR_BADARG, ERR_NONE, ERR_PYTHON, Dev, call  # noqa: E402

R, W = 1, 2
EINVAL, EOVERFLOW, EOPNOTSUPP = 22, 75, 95
IOVA = 0x4000_0000
NO_CLEAR = 1
FMTS = ["vtd-ss", "amdv1", "arm-lpae-s1-4k"]
GUARD = 0x5A5A5A5A5A5A5A5A


def twin(fmt, dirty_tracking=True):
    out = []
    for _ in range(2):
        m = dma.Machine(ram=[(0, 1 << 32)], swiotlb=0, dma_debug=False)
        mmu = m.add_iommu(fmt=fmt, dirty_tracking=dirty_tracking)
        dev = m.add_device("nic", iommu=mmu)
        d = mmu.domain_alloc()
        dma.iommu_attach_device(d, dev)
        out.append((m, mmu, dev, d))
    return out


def mapped(rigs, npages):
    """npages separate 4 KiB leaves at IOVA, alike on both."""
    for m, _, _, d in rigs:
        for i in range(npages):
            assert dma.iommu_map(d, IOVA + i * 4096, m.alloc_pages(1), 4096, R | W) == 0


def expected_bits(records, iova, length, page_size):
    nbits = -(-length // page_size)
    bits = set()
    for r, n in records:
        lo, hi = max(r, iova), min(r + n, iova + length)
        if lo < hi:
            bits.update(range((lo - iova) // page_size, (hi - 1 - iova) // page_size + 1))
    assert all(b < nbits for b in bits)
    return bits


def c_read(dev, flags, iova, length, page_size, nwords=64):
    """read_and_clear_dirty through the table into a bitmap with a guard word after it:
    (rc, err, set bits)."""
    buf = (C.c_uint64 * (nwords + 1))()
    buf[nwords] = GUARD
    h = Dev(dev)
    rc, err = call("read_and_clear_dirty", h.p, flags, iova, length, page_size, C.addressof(buf))
    assert buf[nwords] == GUARD
    return rc, err, {w * 64 + b for w in range(nwords) for b in range(64) if buf[w] >> b & 1}


def state(m, mmu, d):
    """The leaf entries over the test's IOVA window, the IOTLB's counters and the domain's syncs."""
    leaves = []
    for i in range(0, 0x40_0000, 0x1000):
        w = d.pgtable.walk(IOVA + i)["levels"]
        leaves.append(w[-1]["pte"] if w else None)
    return leaves, dict(mmu.iotlb.stats) if mmu.iotlb else None, d.iotlb_syncs, d.dirty_tracking


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("page_size", [4096, 8192, 1 << 16])
def test_bitmap_is_the_python_records(fmt, page_size):
    (mc, mmuc, dc, domc), (mp, mmup, dp, domp) = rigs = twin(fmt)
    h = Dev(dc)
    assert call("set_dirty_tracking", h.p, 1)[0] == domp.set_dirty_tracking(True) == 0
    mapped(rigs, 32)
    length = 32 * 4096
    # a clean start (arm-lpae leaves are born writable-dirty): the same clearing read on both
    ret, rec = domp.read_and_clear_dirty(IOVA, length)
    rc, err, bits = c_read(dc, 0, IOVA, length, page_size)
    assert rc == ret == 0 and bits == expected_bits(rec, IOVA, length, page_size)
    for want in ((), (0, 3, 4, 17, 31), (1, 2, 30)):
        for i in want:
            dc.dma_write(IOVA + i * 4096 + 8, b"x")
            dp.dma_write(IOVA + i * 4096 + 8, b"x")
        for flags in (NO_CLEAR, 0):
            ret, rec = domp.read_and_clear_dirty(IOVA, length, flags)
            rc, err, bits = c_read(dc, flags, IOVA, length, page_size)
            assert (rc, err.kind) == (ret, ERR_NONE) == (0, ERR_NONE)
            assert bits == expected_bits(rec, IOVA, length, page_size)
            assert sorted({i * 4096 // page_size for i in want}) == sorted(bits)
            assert state(mc, mmuc, domc) == state(mp, mmup, domp)
    assert c_read(dc, 0, IOVA, length, page_size)[2] == set()


@pytest.mark.parametrize("fmt", FMTS)
def test_a_block_leaf_past_the_range_sets_only_bits_inside_it(fmt):
    (mc, mmuc, dc, domc), (mp, mmup, dp, domp) = rigs = twin(fmt)
    for m, _, _, d in rigs:
        d.set_dirty_tracking(True)
        pa = m.alloc_pages(1024)
        pa = (pa + 0x1F_FFFF) & ~0x1F_FFFF
        assert dma.iommu_map(d, IOVA, pa, 0x20_0000, R | W) == 0
    for dev in (dc, dp):
        dev.dma_write(IOVA + 0x1000, b"x")
    # the leaf covers 2 MiB; ask for 64 KiB in its middle: 16 bits, not one more
    ret, rec = domp.read_and_clear_dirty(IOVA + 0x10000, 0x10000, NO_CLEAR)
    rc, err, bits = c_read(dc, NO_CLEAR, IOVA + 0x10000, 0x10000, 4096, nwords=1)
    assert rc == ret == 0 and rec
    assert bits == expected_bits(rec, IOVA + 0x10000, 0x10000, 4096) == set(range(16))
    ret, rec = domp.read_and_clear_dirty(IOVA, 0x20_0000)
    rc, err, bits = c_read(dc, 0, IOVA, 0x20_0000, 0x20_0000, nwords=1)
    assert (rc, bits) == (ret, {0}) == (0, {0})
    assert state(mc, mmuc, domc) == state(mp, mmup, domp)


@pytest.mark.parametrize("fmt", FMTS)
def test_range_checks_are_iommufds_and_leave_no_trace(fmt):
    (mc, mmuc, dc, domc), (mp, mmup, dp, domp) = rigs = twin(fmt)
    for _, _, _, d in rigs:
        d.set_dirty_tracking(True)
    mapped(rigs, 4)
    for _, _, _, d in rigs:
        d.read_and_clear_dirty(IOVA, 0x4000)               # a clean start
    dc.dma_write(IOVA, b"x")
    dp.dma_write(IOVA, b"x")
    before = state(mc, mmuc, domc)
    for flags, iova, length, page_size, want in [
        (2, IOVA, 0x4000, 4096, -EOPNOTSUPP),             # unknown flag
        (0, IOVA, 0x4000, 0, -EINVAL),                    # page_size 0
        (0, IOVA + 0x800, 0x4000, 4096, -EINVAL),         # iova not page aligned
        (0, IOVA, 0x4800, 4096, -EINVAL),                 # end not page aligned
        (0, IOVA, 0x4000, 0x8000, -EINVAL),               # iova fine, end not page_size aligned
        (0, IOVA + 0x1000, 0x2000, 0x2000, -EINVAL),      # iova not page_size aligned
        (0, 1 << 63, 1 << 63 + 1, 4096, -EOVERFLOW),      # iova + length - 1 wraps
        (0, 0x1000, 0, 4096, -EOVERFLOW),                 # length 0 elsewhere than 0 wraps too
        (0, 0, 0, 4096, 0),                               # length 0 at 0: nothing to walk
    ]:
        rc, err, bits = c_read(dc, flags, iova, length, page_size)
        assert (rc, err.kind, bits) == (want, ERR_NONE, set()), (flags, iova, length, page_size)
        assert state(mc, mmuc, domc) == before
    h = Dev(dc)
    rc, err = call("read_and_clear_dirty", h.p, 0, IOVA, 0x4000, 4096, None)
    assert (rc, err.kind) == (E_BADARG, ERR_BADARG) and b"bitmap" in err.reason
    assert state(mc, mmuc, domc) == before
    # the dirty bit is still there for the real call
    assert domp.read_and_clear_dirty(IOVA, 0x4000) == (0, [(IOVA, 0x1000)])
    rc, err, bits = c_read(dc, 0, IOVA, 0x4000, 4096)
    assert (rc, err.kind, bits) == (0, ERR_NONE, {0})
    assert state(mc, mmuc, domc) == state(mp, mmup, domp)


def test_domains_without_dirty_ops_and_devices_without_a_domain():
    (mc, mmuc, dc, domc), (mp, mmup, dp, domp) = twin("vtd-ss", dirty_tracking=False)
    h = Dev(dc)
    assert call("set_dirty_tracking", h.p, 1)[0] == domp.set_dirty_tracking(True) == -EOPNOTSUPP
    assert c_read(dc, 0, IOVA, 0x1000, 4096)[0] == domp.read_and_clear_dirty(IOVA, 0x1000)[0] == -EOPNOTSUPP
    (_, _, dx, domx), _ = twin("x86-64")                  # a format with no dirty bit
    hx = Dev(dx)                                         # (held: its .p must outlive the call)
    assert call("set_dirty_tracking", hx.p, 1)[0] == -EOPNOTSUPP
    assert c_read(dx, 0, IOVA, 0x1000, 4096)[0] == -EOPNOTSUPP
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    direct = m.add_device("direct0")
    hd = Dev(direct)
    rc, err = call("set_dirty_tracking", hd.p, 1)
    assert (rc, err.kind) == (E_BADARG, ERR_BADARG) and b"not behind an IOMMU" in err.reason
    rc, err, _ = c_read(direct, 0, IOVA, 0x1000, 4096)
    assert (rc, err.kind) == (E_BADARG, ERR_BADARG)
    for name, args in (("set_dirty_tracking", (1,)), ("read_and_clear_dirty", (0, IOVA, 0x1000, 4096, None))):
        rc, err = call(name, None, *args)
        assert (rc, err.kind) == (E_BADARG, ERR_BADARG)
        rc, err = call(name, id(m), *args)               # not a capsule
        assert (rc, err.kind) == (E_BADARG, ERR_BADARG)


def test_a_format_warning_is_a_python_warning_or_a_completed_record():
    # arm-lpae WARNs when the range runs past its input address size (-EINVAL): the entry emits it
    # as a Python warning, and with warnings as errors returns the result in the record
    # (completed = 1), as every entry does
    (mc, _, dc, domc), _ = twin("arm-lpae-s1-4k")
    domc.set_dirty_tracking(True)
    top = 1 << domc.pgtable.ias
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        rc, err, bits = c_read(dc, 0, top, 0x1000, 4096)
    assert (rc, err.kind, bits) == (-EINVAL, ERR_NONE, set())
    assert len(got) == 1 and "arm_lpae_read_and_clear_dirty" in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc, err, bits = c_read(dc, 0, top, 0x1000, 4096)
    assert (rc, err.kind, err.completed, bits) == (E_PYTHON, ERR_PYTHON, 1, set())
    assert err.result == -EINVAL & (2**64 - 1) and err.type == got[0].category.__name__.encode()
