"""The C ABI table (include/dmaphys.h, dmaphys/_kernel/capi.pxi), called through ctypes.

ctypes calls the table's function pointers like a C simulator would (CFUNCTYPE releases the
GIL around the call, so these tests also cover "the entry takes the GIL itself"). Each entry
is checked against the Python API on a twin machine: same addresses, return values, bytes.
The compiled examples (tests/test_embed.py) cover building against the header.
"""

import ctypes as C
import warnings

import pytest

import dmaphys as dma
from dmaphys import _core

E_BADARG, E_NODEV, E_FAULT, E_BUG, E_PYTHON, E_NOTSUPP = -4097, -4098, -4099, -4100, -4101, -4102
ERR_NONE, ERR_BADARG, ERR_NODEV, ERR_DMA_FAULT, ERR_IOMMU_FAULT, ERR_PHYS, ERR_BUG, ERR_PYTHON = range(8)
MAPPING_ERROR = (1 << 64) - 1


class Error(C.Structure):
    _fields_ = [("kind", C.c_int32), ("access", C.c_int32), ("addr", C.c_uint64), ("size", C.c_uint64),
                ("completed", C.c_int32), ("_pad", C.c_int32), ("result", C.c_uint64),
                ("type", C.c_char * 48), ("device", C.c_char * 64), ("reason", C.c_char * 192)]


class Sg(C.Structure):
    _fields_ = [("page_phys", C.c_uint64), ("offset", C.c_uint32), ("length", C.c_uint32),
                ("dma_address", C.c_uint64), ("dma_length", C.c_uint32), ("dma_flags", C.c_uint32)]


class IovaState(C.Structure):
    _fields_ = [("addr", C.c_uint64), ("size", C.c_uint64)]


class TlbEntry(C.Structure):
    _fields_ = [("iova", C.c_uint64), ("translated_addr", C.c_uint64), ("addr_mask", C.c_uint64),
                ("perm", C.c_int32), ("_pad", C.c_int32)]


P, U64, INT, UL = C.c_void_p, C.c_uint64, C.c_int, C.c_ulong
PE = C.POINTER(Error)
ENTRIES = [
    ("dma_map_phys", U64, [P, U64, U64, INT, UL, PE]),
    ("dma_unmap_phys", INT, [P, U64, U64, INT, UL, PE]),
    ("dma_map_resource", U64, [P, U64, U64, INT, UL, PE]),
    ("dma_unmap_resource", INT, [P, U64, U64, INT, UL, PE]),
    ("dma_mapping_error", INT, [P, U64, PE]),
    ("dma_map_sg_attrs", INT, [P, C.POINTER(Sg), INT, INT, UL, PE]),
    ("dma_unmap_sg_attrs", INT, [P, C.POINTER(Sg), INT, INT, UL, PE]),
    ("dma_sync_single_for_cpu", INT, [P, U64, U64, INT, PE]),
    ("dma_sync_single_for_device", INT, [P, U64, U64, INT, PE]),
    ("dma_sync_sg_for_cpu", INT, [P, C.POINTER(Sg), INT, INT, PE]),
    ("dma_sync_sg_for_device", INT, [P, C.POINTER(Sg), INT, INT, PE]),
    ("dma_iova_try_alloc", INT, [P, C.POINTER(IovaState), U64, U64, PE]),
    ("dma_iova_link", INT, [P, C.POINTER(IovaState), U64, U64, U64, INT, UL, PE]),
    ("dma_iova_sync", INT, [P, C.POINTER(IovaState), U64, U64, PE]),
    ("dma_iova_unlink", INT, [P, C.POINTER(IovaState), U64, U64, INT, UL, PE]),
    ("dma_iova_destroy", INT, [P, C.POINTER(IovaState), U64, INT, UL, PE]),
    ("dma_iova_free", INT, [P, C.POINTER(IovaState), PE]),
    ("dma_read", INT, [P, U64, P, U64, PE]),
    ("dma_write", INT, [P, U64, P, U64, PE]),
    ("iova_to_phys", U64, [P, U64, PE]),
    ("translate", INT, [P, U64, INT, C.POINTER(TlbEntry), PE]),
    ("register_notifier", INT, [P, P, P, PE]),
    ("unregister_notifier", INT, [P, P, P, PE]),
    ("domain_id", INT, [P, C.POINTER(C.c_uint32), PE]),
    ("raise_error", P, [PE]),          # (called through PYFUNCTYPE below: it sets an exception)
    ("device_check", INT, [P, PE]),
    ("machine_enter", INT, [P, PE]),   # ABI 1.1
    ("machine_exit", INT, [P, PE]),
    ("set_dirty_tracking", INT, [P, INT, PE]),                     # ABI 1.2
    ("read_and_clear_dirty", INT, [P, C.c_uint32, U64, U64, U64, P, PE]),
]


class Api(C.Structure):
    _fields_ = [("abi_version", C.c_uint32), ("struct_size", C.c_uint32)] + [(n, P) for n, _, _ in ENTRIES]


def _table():
    get = C.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
    return C.cast(get(_core._C_API, b"dmaphys._core._C_API"), C.POINTER(Api)).contents


API = _table()
FN = {n: C.CFUNCTYPE(res, *args)(getattr(API, n)) for n, res, args in ENTRIES if n != "raise_error"}
RAISE = C.PYFUNCTYPE(C.py_object, PE)(API.raise_error)


class Dev:
    """A device capsule as the C side holds it: the PyObject * of dev.capsule (valid while
    this object lives: never pass ``Dev(x).p`` of a temporary)."""

    def __init__(self, dev):
        self.cap = dev.capsule
        self.p = id(self.cap)


def call(name, *args):
    err = Error()
    err.kind = 99                      # every entry must overwrite it
    return FN[name](*args, C.byref(err)), err


def twin(iommu, **kw):
    """(machine, device) for the C side and for the Python side, configured alike."""
    out = []
    for _ in range(2):
        m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=kw.get("swiotlb", 0), cpus=1)
        if iommu:
            mmu = m.add_iommu("vtd-ss", strict=kw.get("strict", True))
            d = m.add_device("nic0", iommu=mmu)
        else:
            d = m.add_device("nic0", dma_mask=kw.get("mask", dma.DMA_BIT_MASK(64)))
        out.append((m, d))
    return out


def test_table_header():
    assert API.abi_version == 1
    assert API.struct_size == C.sizeof(Api) == 8 + 8 * len(ENTRIES)
    assert dma.get_include().endswith("include")
    with open(dma.get_include() + "/dmaphys.h") as f:
        text = f.read()
    assert '#define DMAPHYS_CAPI_NAME "dmaphys._core._C_API"' in text
    for name, _, _ in ENTRIES:
        assert f"(*{name})(" in text, name


def test_capsule_twin(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dev = m.add_device("d0")
    if impl is dma:
        cap = dev.capsule
        assert type(cap).__name__ == "PyCapsule" and "dmaphys.device" in repr(cap)
        assert FN["device_check"](id(cap), None) == 0
    else:
        with pytest.raises(TypeError, match="compiled core"):
            _ = dev.capsule


@pytest.mark.parametrize("iommu", [True, False])
def test_map_read_write_unmap_match_python(iommu):
    (mc, dc), (mp, dp) = twin(iommu)
    h = Dev(dc)
    for m in (mc, mp):
        m.mem_write(0x10000, bytes(range(256)) * 32)
    a, err = call("dma_map_phys", h.p, 0x10000 + 5, 5000, dma.DMA_BIDIRECTIONAL, 0)
    assert err.kind == ERR_NONE
    assert a == dma.dma_map_phys(dp, 0x10000 + 5, 5000, dma.DMA_BIDIRECTIONAL, 0)
    assert call("dma_mapping_error", h.p, a)[0] == dma.dma_mapping_error(dp, a) == 0
    assert call("dma_mapping_error", h.p, MAPPING_ERROR)[0] == -12          # -ENOMEM
    assert call("iova_to_phys", h.p, a + 100)[0] == (0x10000 + 105)
    buf = C.create_string_buffer(300)
    rc, err = call("dma_read", h.p, a + 10, C.addressof(buf), 300)
    assert (rc, err.kind) == (0, ERR_NONE)
    assert buf.raw == dp.dma_read(a + 10, 300)
    data = bytes(range(255, 0, -1))
    src = C.create_string_buffer(data, len(data))
    assert call("dma_write", h.p, a + 4000, C.addressof(src), len(data))[0] == 0
    dp.dma_write(a + 4000, data)
    assert mc.mem_read(0x10000, 8192) == mp.mem_read(0x10000, 8192)
    assert (dc.dma_reads, dc.dma_writes) == (dp.dma_reads, dp.dma_writes) == (1, 1)
    assert call("dma_sync_single_for_cpu", h.p, a, 5000, dma.DMA_BIDIRECTIONAL)[0] == 0
    assert call("dma_sync_single_for_device", h.p, a, 5000, dma.DMA_BIDIRECTIONAL)[0] == 0
    assert call("dma_unmap_phys", h.p, a, 5000, dma.DMA_BIDIRECTIONAL, 0)[0] == 0
    dma.dma_unmap_phys(dp, a, 5000, dma.DMA_BIDIRECTIONAL, 0)
    # after the unmap: behind the IOMMU a fault record, dma-direct still reaches RAM
    rc, err = call("dma_read", h.p, a, C.addressof(buf), 64)
    if iommu:
        assert (rc, err.kind, err.type) == (E_FAULT, ERR_IOMMU_FAULT, b"IommuFault")
        assert (err.addr, err.access) == (a, 0)
        assert err.reason == b"not-present" and err.device == b"nic0"
        with pytest.raises(dma.IommuFault):
            dp.dma_read(a, 64)
        assert call("iova_to_phys", h.p, a)[0] == 0
    else:
        assert (rc, err.kind) == (0, ERR_NONE)


def test_resource_and_sg_match_python():
    (mc, dc), (mp, dp) = twin(True)
    h = Dev(dc)
    for m in (mc, mp):
        m.add_mmio(0xF000_0000, 0x10000, "bar0")
    a, err = call("dma_map_resource", h.p, 0xF000_0000, 4096, dma.DMA_TO_DEVICE, 0)
    assert a == dma.dma_map_resource(dp, 0xF000_0000, 4096, dma.DMA_TO_DEVICE, 0) != MAPPING_ERROR
    assert call("dma_mapping_error", h.p, a)[0] == dma.dma_mapping_error(dp, a) == 0
    assert call("dma_unmap_resource", h.p, a, 4096, dma.DMA_TO_DEVICE, 0)[0] == 0
    dma.dma_unmap_resource(dp, a, 4096, dma.DMA_TO_DEVICE, 0)
    ents = [(0x20000 + 100, 3000), (0x40000, 4096), (0x80000 + 8, 100)]
    sgs = (Sg * 3)()
    for i, (p, n) in enumerate(ents):
        sgs[i].page_phys, sgs[i].offset, sgs[i].length = p & ~4095, p & 4095, n
    sl = dma.ScatterList(ents)
    rc, err = call("dma_map_sg_attrs", h.p, sgs, 3, dma.DMA_FROM_DEVICE, 0)
    assert rc == dma.dma_map_sg_attrs(dp, sl, 3, dma.DMA_FROM_DEVICE, 0) > 0
    assert [(s.dma_address, s.dma_length) for s in sgs[:rc]] == sl.dma_segments()[:rc]
    assert call("dma_sync_sg_for_cpu", h.p, sgs, 3, dma.DMA_FROM_DEVICE)[0] == 0
    assert call("dma_sync_sg_for_device", h.p, sgs, 3, dma.DMA_FROM_DEVICE)[0] == 0
    assert call("dma_unmap_sg_attrs", h.p, sgs, 3, dma.DMA_FROM_DEVICE, 0)[0] == 0
    dma.dma_unmap_sg_attrs(dp, sl, 3, dma.DMA_FROM_DEVICE, 0)
    assert call("dma_map_sg_attrs", h.p, None, 3, 0, 0)[0] == E_BADARG
    assert call("dma_map_sg_attrs", h.p, sgs, 0, 0, 0)[0] == E_BADARG
    sgs[1].length = 0
    rc, err = call("dma_map_sg_attrs", h.p, sgs, 3, 0, 0)
    assert (rc, err.kind) == (E_BADARG, ERR_BADARG) and b"sg[1]" in err.reason


@pytest.mark.parametrize("strict", [True, False])
def test_iova_two_step_matches_python(strict):
    (mc, dc), (mp, dp) = twin(True, strict=strict)
    h = Dev(dc)
    st = IovaState()
    ps = dma.DmaIovaState()
    rc, err = call("dma_iova_try_alloc", h.p, C.byref(st), 0x30000 + 64, 3 * 4096)
    assert rc == 1 and dma.dma_iova_try_alloc(dp, ps, 0x30000 + 64, 3 * 4096)
    assert (st.addr, st.size) == (ps.addr, ps.size)
    for off, n in ((0, 4096 - 64), (4096 - 64, 2 * 4096 + 64)):      # granule-aligned phys after the first
        phys = 0x30000 + 64 + off
        rc, err = call("dma_iova_link", h.p, C.byref(st), phys, off, n, dma.DMA_BIDIRECTIONAL, 0)
        assert (rc, err.kind) == (dma.dma_iova_link(dp, ps, phys, off, n, dma.DMA_BIDIRECTIONAL, 0), ERR_NONE)
    assert call("dma_iova_sync", h.p, C.byref(st), 0, 3 * 4096)[0] == dma.dma_iova_sync(dp, ps, 0, 3 * 4096)
    assert call("iova_to_phys", h.p, st.addr + 5000)[0] == 0x30000 + 64 + 5000
    assert call("dma_iova_unlink", h.p, C.byref(st), 0, 3 * 4096, dma.DMA_BIDIRECTIONAL, 0)[0] == 0
    dma.dma_iova_unlink(dp, ps, 0, 3 * 4096, dma.DMA_BIDIRECTIONAL, 0)
    assert call("dma_iova_free", h.p, C.byref(st))[0] == 0
    dma.dma_iova_free(dp, ps)
    st2, ps2 = IovaState(), dma.DmaIovaState()
    assert call("dma_iova_try_alloc", h.p, C.byref(st2), 0x50000, 8192)[0] == 1
    assert dma.dma_iova_try_alloc(dp, ps2, 0x50000, 8192)
    assert (st2.addr, st2.size) == (ps2.addr, ps2.size)
    assert call("dma_iova_link", h.p, C.byref(st2), 0x50000, 0, 8192, dma.DMA_TO_DEVICE, 0)[0] == 0
    assert dma.dma_iova_link(dp, ps2, 0x50000, 0, 8192, dma.DMA_TO_DEVICE, 0) == 0
    assert call("dma_iova_destroy", h.p, C.byref(st2), 8192, dma.DMA_TO_DEVICE, 0)[0] == 0
    dma.dma_iova_destroy(dp, ps2, 8192, dma.DMA_TO_DEVICE, 0)
    assert mc.iommus[0].get_state() == mp.iommus[0].get_state()
    # misuse is caught as from Python: a state dma_iova_try_alloc never filled, one whose
    # addr the caller changed (dma-debug reports it; link refuses with -EINVAL)
    st3, ps3 = IovaState(), dma.DmaIovaState()
    assert call("dma_iova_try_alloc", h.p, C.byref(st3), 0x60000, 8192)[0] == 1
    assert dma.dma_iova_try_alloc(dp, ps3, 0x60000, 8192)
    st3.addr += 4096
    ps3.addr += 4096
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dma.DmaDebugWarning)
        rc, err = call("dma_iova_link", h.p, C.byref(st3), 0x60000, 0, 4096, 0, 0)
        assert (rc, err.kind) == (dma.dma_iova_link(dp, ps3, 0x60000, 0, 4096, 0, 0), ERR_NONE) == (-22, 0)
        rc, err = call("dma_iova_link", h.p, C.byref(IovaState()), 0x60000, 0, 4096, 0, 0)
        assert (rc, err.kind) == (dma.dma_iova_link(dp, dma.DmaIovaState(), 0x60000, 0, 4096, 0, 0), ERR_NONE)
    assert len(mc.dma_debug.errors) == len(mp.dma_debug.errors) > 0
    # a dma-direct device: try_alloc is false; link is what the kernel BUG()s on
    (_, dd), _ = twin(False)
    hd = Dev(dd)
    st3 = IovaState()
    assert call("dma_iova_try_alloc", hd.p, C.byref(st3), 0x50000, 4096)[0] == 0
    rc, err = call("dma_iova_link", hd.p, C.byref(st3), 0x50000, 0, 4096, 0, 0)
    assert (rc, err.kind, err.type) == (E_BUG, ERR_BUG, b"KernelBug") and b"NULL pointer" in err.reason
    assert call("dma_iova_link", h.p, None, 0, 0, 4096, 0, 0)[0] == E_BADARG


def test_bad_handles_never_crash():
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dev = m.add_device("d0")
    h = Dev(dev)
    buf = C.create_string_buffer(64)
    not_dev = [None, id(_core._C_API), id(3), id("dmaphys.device")]
    import datetime
    if hasattr(datetime, "datetime_CAPI"):
        not_dev.append(id(datetime.datetime_CAPI))
    for p in not_dev:
        for name, args in [("dma_read", (0, C.addressof(buf), 64)), ("dma_map_phys", (0, 64, 0, 0)),
                           ("dma_unmap_phys", (0, 64, 0, 0)), ("device_check", ()),
                           ("iova_to_phys", (0,)), ("dma_mapping_error", (0,))]:
            rc, err = call(name, p, *args)
            assert err.kind == ERR_BADARG, (name, p)
            expect = {"dma_map_phys": MAPPING_ERROR, "iova_to_phys": 0}.get(name, E_BADARG)
            assert rc == expect
    # NULL buffer with a size; zero size is a no-op
    assert call("dma_read", h.p, 0, None, 64)[0] == E_BADARG
    assert call("dma_write", h.p, 0, None, 0)[0] == 0
    # an access that wraps the address space / lies past the mask: a fault record
    rc, err = call("dma_read", h.p, MAPPING_ERROR - 10, C.addressof(buf), 64)
    assert (rc, err.kind, err.reason) == (E_FAULT, ERR_DMA_FAULT, b"address wraps")
    # an invalid direction: KernelBug as E_BUG, state untouched
    a, err = call("dma_map_phys", h.p, 0x1000, 64, 7, 0)
    assert (a, err.kind) == (MAPPING_ERROR, ERR_BUG) and b"valid_dma_direction" in err.reason
    # a removed device
    m.remove_device(dev)
    rc, err = call("dma_read", h.p, 0, C.addressof(buf), 64)
    assert (rc, err.kind) == (E_NODEV, ERR_NODEV) and b"removed" in err.reason
    assert call("device_check", h.p)[0] == E_NODEV
    # NULL error records are allowed everywhere
    assert FN["dma_read"](h.p, 0, C.addressof(buf), 64, None) == E_NODEV
    assert FN["dma_read"](None, 0, C.addressof(buf), 64, None) == E_BADARG


def test_python_exception_becomes_a_record():
    """A warning turned into an error after the map completed: E_PYTHON, completed + result."""
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dev = m.add_device("d0", dma_mask=None)          # WARN_ON_ONCE(!dev->dma_mask)
    h = Dev(dev)
    a, err = call("dma_map_phys", h.p, 0x1000, 64, 0, 0)   # pytest: filterwarnings = error
    assert (a, err.kind, err.type, err.completed) == (MAPPING_ERROR, ERR_PYTHON, b"KernelWarning", 1)
    assert err.result == MAPPING_ERROR and b"dma_mask" in err.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a2, err2 = call("dma_map_phys", h.p, 0x1000, 64, 0, 0)
    assert (a2, err2.kind) == (MAPPING_ERROR, ERR_NONE)
    # raise_error turns records back into the matching Python exceptions
    with pytest.raises(dma.KernelWarning, match="dma_mask"):
        RAISE(C.byref(err))
    bug = Error(kind=ERR_BUG, reason=b"kernel BUG at x")
    with pytest.raises(dma.KernelBug, match="kernel BUG at x"):
        RAISE(C.byref(bug))
    fault = Error(kind=ERR_IOMMU_FAULT, addr=0x1000, size=4, access=1, device=b"d0", reason=b"not-present")
    with pytest.raises(dma.IommuFault) as ei:
        RAISE(C.byref(fault))
    assert (ei.value.iova, ei.value.access, ei.value.reason) == (0x1000, "write", "not-present")
    with pytest.raises(SystemError):
        RAISE(None)


NOTIFIER = C.CFUNCTYPE(None, C.c_void_p, C.c_uint32, C.c_uint64, C.c_uint64)


def test_translate_matches_python():
    (mc, dc), (mp, dp) = twin(True)
    h = Dev(dc)
    a = dma.dma_map_phys(dc, 0x7000 + 0x10, 8192, dma.DMA_TO_DEVICE, 0)
    assert a == dma.dma_map_phys(dp, 0x7000 + 0x10, 8192, dma.DMA_TO_DEVICE, 0)
    for addr in (a, a + 4096 + 5):
        e = TlbEntry()
        rc, err = call("translate", h.p, addr, 0, C.byref(e))
        want = dp.translate(addr)
        assert (rc, err.kind) == (0, ERR_NONE)
        assert (e.iova, e.translated_addr, e.addr_mask, e.perm) == \
            (want.iova, want.translated_addr, want.addr_mask, want.perm)
    # a write through a read-only (TO_DEVICE) mapping faults like the device's write would
    rc, err = call("translate", h.p, a, 1, C.byref(TlbEntry()))
    with pytest.raises(dma.IommuFault):
        dp.translate(a, write=True)
    assert (rc, err.kind, err.reason, err.access) == (E_FAULT, ERR_IOMMU_FAULT, b"write-denied", 1)
    assert mc.iommus[0].iotlb.stats == mp.iommus[0].iotlb.stats
    assert call("translate", h.p, a, 0, None)[0] == E_BADARG
    # dma-direct: the bus-to-phys translation, read/write
    (_, dd), _ = twin(False)
    e = TlbEntry()
    hd = Dev(dd)                       # (keep the capsule alive while C holds its pointer)
    assert call("translate", hd.p, 0x12345, 0, C.byref(e))[0] == 0
    assert (e.iova, e.translated_addr, e.addr_mask, e.perm) == (0x12000, 0x12000, 0xFFF, 3)


@pytest.mark.parametrize("strict", [True, False])
def test_notifier_keeps_an_embedder_cache_exact(strict):
    """A C notifier drops an embedder's translation cache; a random map/unmap stream never
    finds a cached entry that a device access (translate) would not give now. In lazy mode
    the IOTLB itself keeps unmapped translations until the flush queue flushes, and so may
    the cache: the notification comes with the flush."""
    import random
    (m, dev), _ = twin(True, strict=strict)
    h = Dev(dev)
    did = C.c_uint32()
    assert call("domain_id", h.p, C.byref(did))[0] == 0
    cache, notes = {}, []

    def on_inval(opaque, domain_id, iova, size):
        notes.append((domain_id, iova, size))
        last = iova + size - 1 if size != (1 << 64) - 1 else (1 << 64) - 1
        for page in [p for p in cache if domain_id in (0, did.value) and iova <= p <= last]:
            del cache[page]

    cb = NOTIFIER(on_inval)
    assert call("register_notifier", h.p, cb, None)[0] == 0
    rng = random.Random(7)
    live = []
    with warnings.catch_warnings():
        # lazy mode: a device access through a stale IOTLB entry is what dma-debug reports
        warnings.simplefilter("ignore", dma.DmaDebugWarning)
        for step in range(300):
            if live and (len(live) > 20 or rng.random() < 0.4):
                a = live.pop(rng.randrange(len(live)))
                dma.dma_unmap_phys(dev, a, 4096, dma.DMA_BIDIRECTIONAL, 0)
            else:
                a = dma.dma_map_phys(dev, rng.randrange(1, 1 << 17) << 12, 4096, dma.DMA_BIDIRECTIONAL, 0)
                assert not dma.dma_mapping_error(dev, a)
                live.append(a)
            if live and rng.random() < 0.7:                       # the device caches a translation
                a = rng.choice(live)
                e = TlbEntry()
                assert call("translate", h.p, a, 0, C.byref(e))[0] == 0
                cache[e.iova] = e.translated_addr
            if not strict and rng.random() < 0.05:
                m.advance(20_000_000)                             # the flush queue's timeout
            for page, phys in cache.items():                      # every cached entry is still served
                e = TlbEntry()
                rc, err = call("translate", h.p, page, 0, C.byref(e))
                assert (rc, e.translated_addr) == (0, phys), (step, hex(page), err.reason)
    assert notes and all(n[0] == did.value for n in notes)
    if not strict:
        assert any(n[1:] == (0, (1 << 64) - 1) for n in notes)    # flush-queue flushes
    assert call("unregister_notifier", h.p, cb, None)[0] == 0
    assert call("unregister_notifier", h.p, cb, None)[0] == -2     # -ENOENT
    assert call("register_notifier", h.p, None, None)[0] == E_BADARG
    (_, dd), _ = twin(False)
    hd = Dev(dd)
    assert call("register_notifier", hd.p, cb, None)[0] == E_BADARG
    assert call("domain_id", hd.p, C.byref(did))[0] == E_BADARG
