"""The per-call pair's C prologue (issue 10 item 2): dma_map_phys / dma_unmap_phys first try the
common case in C (plain int arguments, a machine nobody else owns, the single-element fast paths)
and run the full checks for anything else. Every argument the prologue declines must behave as
before, on both backends: the same addresses, return values, exceptions (type and text) and
warnings. (The streams of tests/test_batch_fastpath.py compare the per-call API, which takes the
prologue for their plain ints, with the batch calls; tests/test_differential.py compares the
per-call API of both backends.)
"""

import enum
import warnings

import numpy as np
import pytest

import dmaphys as dma

GiB = 1 << 30
TO, FROM, BIDI = dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL
ERR = dma.DMA_MAPPING_ERROR


class Dir(enum.IntEnum):
    TO = dma.DMA_TO_DEVICE


class MyInt(int):
    pass


def rigs(impl):
    m = impl.Machine(ram=[(0, GiB), (4 * GiB, GiB)], swiotlb=1 << 20, dma_debug=False)
    iommu = m.add_iommu(strict=True)
    lazy = m.add_iommu(strict=False)
    return m, {"direct": m.add_device("d"), "dev32": m.add_device("d32", dma_mask=(1 << 32) - 1),
               "strict": m.add_device("s", iommu=iommu), "lazy": m.add_device("l", iommu=lazy)}


def outcome(fn, *args, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            r = fn(*args, **kw)
        except Exception as e:          # noqa: BLE001  (the type and text are compared)
            return ("raise", type(e).__name__, str(e), [str(x.message) for x in w])
    assert r is None or type(r) is int, type(r)
    return ("ok", r, [str(x.message) for x in w])


# (phys, size, dir, attrs) as passed to dma_map_phys; the unmap gets the address back (or 0x1000)
ARGS = [
    (0x5000, 4096, TO, 0),                       # the fast path
    (0x5000, 4096, BIDI, dma.DMA_ATTR_SKIP_CPU_SYNC),
    (4 * GiB + 0x3000, 64, FROM, 0),             # a two-digit int, above 4 GiB (dev32 bounces)
    (np.uint64(0x6000), np.uint64(4096), np.int32(1), np.uint64(0)),   # numpy scalars
    (MyInt(0x7000), MyInt(4096), MyInt(1), MyInt(0)),                  # int subclasses
    (0x8000, 4096, Dir.TO, 0),                   # an IntEnum direction
    (0x9000, 4096, True, 0),                     # bool: TypeError
    (0x9000, 4096, 1.0, 0),                      # float: TypeError
    ("0x9000", 4096, TO, 0),                     # str: TypeError
    (-0x1000, 4096, TO, 0),                      # negative: ValueError
    (1 << 64, 4096, TO, 0),                      # too large: ValueError
    ((1 << 63) + 0x1000, 4096, TO, 0),           # three digits, no RAM there
    ((1 << 64) - 0x1000, 0x2000, TO, 0),         # phys + size wraps: ValueError
    (0x9000, 0, TO, 0),                          # size 0
    (0x9000, 4096, dma.DMA_NONE, 0),             # DMA_NONE: KernelBug
    (0x9000, 4096, 7, 0),                        # no direction: KernelBug
    (0x9000, 4096, 1 << 40, 0),                  # a direction no int holds: KernelBug
    (0x9000, 4096, -1, 0),                       # negative direction: KernelBug
    (0x9000, 4096, TO, 1),                       # attrs bit no DMA_ATTR_* defines: ValueError
    (0x9000, 4096, TO, -1),                      # negative attrs: ValueError
    (0x9000, 4096, TO, dma.DMA_ATTR_MMIO),       # MMIO attribute on RAM
    (0x9000, 3 * 4096, TO, 0),                   # more than one granule: the full path
    (0x9123, 4096, TO, 0),                       # unaligned, across a page
]


@pytest.mark.parametrize("kind", ["direct", "dev32", "strict", "lazy"])
def test_argument_kinds_agree_with_the_reference(kind):
    results = []
    for impl in (dma, dma.reference):
        m, devs = rigs(impl)
        dev = devs[kind]
        got = []
        for phys, size, d, attrs in ARGS:
            r = outcome(impl.dma_map_phys, dev, phys, size, d, attrs)
            got.append(r)
            addr = r[1] if r[0] == "ok" and r[1] != ERR else 0x1000
            got.append(outcome(impl.dma_unmap_phys, dev, addr, size, d, attrs))
        got.append(m.warnings_log)
        results.append(got)
    assert results[0] == results[1]


def test_keywords_and_default_attrs(impl):
    m, devs = rigs(impl)
    for dev in devs.values():
        a = impl.dma_map_phys(dev=dev, phys=0x5000, size=4096, dir=TO, attrs=0)
        b = impl.dma_map_phys(dev, 0x6000, 4096, TO)
        assert impl.dma_mapping_error(dev, a) == 0 and impl.dma_mapping_error(dev, b) == 0
        impl.dma_unmap_phys(dev=dev, addr=a, size=4096, dir=TO, attrs=0)
        impl.dma_unmap_phys(dev, b, 4096, TO)
    with pytest.raises(TypeError):
        impl.dma_map_phys(devs["direct"], 0x5000, 4096)
    with pytest.raises(TypeError):
        impl.dma_map_phys(None, 0x5000, 4096, TO, 0)


def test_removed_device_is_refused(impl):
    m, devs = rigs(impl)
    for dev in devs.values():
        a = impl.dma_map_phys(dev, 0x5000, 4096, TO, 0)
        m.remove_device(dev)
        with pytest.raises(ValueError, match="removed"):
            impl.dma_map_phys(dev, 0x5000, 4096, TO, 0)
        with pytest.raises(ValueError, match="removed"):
            impl.dma_unmap_phys(dev, a, 4096, TO, 0)


def test_trace_and_debug_take_the_full_path(impl):
    """With tracing or dma-debug on, the pair records exactly what the full path records."""
    m = impl.Machine(ram=[(0, GiB)], dma_debug=True)
    m.trace.enabled = True
    dev = m.add_device("d", iommu=m.add_iommu(strict=True))
    a = impl.dma_map_phys(dev, 0x5000, 4096, TO, 0)
    assert impl.dma_mapping_error(dev, a) == 0
    impl.dma_unmap_phys(dev, a, 4096, TO, 0)
    lines = m.trace.to_ftrace()
    assert len(lines) == 2 and "dma_map_phys:" in lines[0] and "dma_unmap_phys:" in lines[1]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        impl.dma_unmap_phys(dev, a, 4096, TO, 0)          # unmapped twice: dma-debug reports it
    assert {type(x.message) for x in w} == {dma.DmaDebugWarning, dma.KernelWarning}
    assert len(m.trace.to_ftrace()) == 3


def test_the_direct_identity_returns_an_equal_int():
    """dma-direct's identity map hands back the caller's int object (an equal int either way)."""
    m, devs = rigs(dma)
    p = 0x12345000
    a = dma.dma_map_phys(devs["direct"], p, 4096, TO, 0)
    assert a == p and type(a) is int
    a = dma.dma_map_phys(devs["strict"], p, 4096, TO, 0)
    assert a != p and type(a) is int


@pytest.mark.skipif(dma.BACKEND != "core", reason="the compiled core's C entry")
def test_the_c_entry_is_installed():
    """Both functions' vectorcall slots hold the C entry (a Cython or CPython change that moves
    the slot would only cost speed: this says so)."""
    assert dma._core._PERCALL_C_ENTRY is True
