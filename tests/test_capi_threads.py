"""The C ABI's GIL-free entries called from threads that do not hold the GIL.

tests/capi_threads.c (built here against the header, like tests/test_embed.py builds the
examples) starts a pthread Python has never seen, which owns the machine (machine_enter) or
not, reads / writes / translates / maps through the table while the calling Python thread
holds the GIL the whole time (so those entries cannot have taken it), then takes a fault on
an unmapped address and tries bad input once the GIL is free. Behind an IOMMU and on
dma-direct; every byte is checked, and the fault is in Python-visible state afterwards.
ctypes calls (which release the GIL around the call) cover a Python thread that owns the
machine. No timing is asserted.
"""

import ctypes as C
import importlib.util
import shutil
import sys
import threading
from pathlib import Path

import pytest

import dmaphys as dma
from dmaphys import _core

TESTS = Path(__file__).resolve().parent
E_BADARG, E_NODEV, E_FAULT = -4097, -4098, -4099
ERR_BADARG, ERR_NODEV, ERR_DMA_FAULT, ERR_IOMMU_FAULT = 1, 2, 3, 4
HOLE = 0x8000_0000                               # no RAM there: dma-direct faults
UNMAPPED = 0xDEAD_0000                           # no IOVA mapping there: IOMMU fault


def _load_build():
    path = TESTS.parent / "examples" / "embed" / "build.py"
    spec = importlib.util.spec_from_file_location("_embed_build_thr", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def thr(tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.fail("a C compiler is needed to build tests/capi_threads.c")
    return _load_build().build("capi_threads", tmp_path_factory.mktemp("capi_threads"),
                               source=TESTS / "capi_threads.c")


def _setup(behind_iommu):
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0, cpus=1, dma_debug=False)
    if behind_iommu:
        dev = m.add_device("nic0", iommu=m.add_iommu("vtd-ss", strict=True))
    else:
        dev = m.add_device("nic0")
    buf, other = m.alloc_pages(1), m.alloc_pages(1)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(4096))
    m.mem_write(buf, pattern)
    m.mem_write(other, pattern[::-1])
    addr = dma.dma_map_phys(dev, buf, 4096, dma.DMA_BIDIRECTIONAL, 0)
    assert not dma.dma_mapping_error(dev, addr)
    if behind_iommu:
        dma.dma_map_phys(dev, other, 4096, dma.DMA_BIDIRECTIONAL, 0)     # primes the rcache ...
        dma.dma_unmap_phys(dev, dma.dma_map_phys(dev, other, 4096, dma.DMA_BIDIRECTIONAL, 0),
                           4096, dma.DMA_BIDIRECTIONAL, 0)               # ... for the C side's map
    return m, dev, buf, other, addr, pattern


@pytest.mark.parametrize("behind_iommu", [True, False], ids=["iommu", "direct"])
@pytest.mark.parametrize("own", [True, False], ids=["owner", "not-owner"])
def test_pthread_without_the_gil(thr, behind_iommu, own):
    m, dev, buf, other, addr, pattern = _setup(behind_iommu)
    gone = m.add_device("gone")
    gone_cap = gone.capsule
    m.remove_device(gone)
    bad = UNMAPPED if behind_iommu else HOLE
    n = 3000                                      # crosses a page boundary when addr + 1200
    reads0, faults0 = dev.dma_reads, dev.faults
    r = thr.run(dev.capsule, addr + 1000, n, other, bad, own, own,
                (_core._C_API, object(), gone_cap))
    assert r["gave_up"] == 0, "a GIL-free entry waited for the GIL the caller held"
    assert r["gil_at_start"] == 0
    rc = r["rc"]
    assert {k: rc[k] for k in ("enter", "read", "write", "read2", "translate", "mapping_error",
                               "read3", "unmap", "exit")} == dict.fromkeys(
        ("enter", "read", "write", "read2", "translate", "mapping_error", "read3", "unmap", "exit"), 0)
    # every byte, both ways
    assert r["read"] == pattern[1000:1000 + n]
    written = bytes(b ^ 0xA5 for b in pattern[1000:1000 + n])
    assert r["read2"] == written
    assert m.mem_read(buf + 1000, n) == written
    assert r["read3"] == pattern[::-1][:64]
    # the translation the Python API gives
    e = dev.translate(addr + 1000)
    assert r["translate"] == (e.iova, e.translated_addr, e.addr_mask, e.perm)
    assert r["translate"][1] == buf
    # the map the thread made and unmapped: the Python side agrees it is gone
    if behind_iommu:
        assert dma.iommu_iova_to_phys(dev.domain, r["mapped"]) == 0
    else:
        assert r["mapped"] == other
    # the fault: a record for the C caller, and recorded where Python sees device faults
    f = r["fault"]
    assert rc["fault"] == E_FAULT and f["device"] == "nic0" and f["size"] == 64
    if behind_iommu:
        assert (f["kind"], f["type"], f["addr"]) == (ERR_IOMMU_FAULT, "IommuFault", bad)
        assert f["reason"] == "not-present"
        assert m.iommus[0].faults[-1]["iova"] == bad and m.iommus[0].faults[-1]["device"] == "nic0"
    else:
        assert (f["kind"], f["type"]) == (ERR_DMA_FAULT, "DmaFault") and "no RAM or MMIO" in f["reason"]
    assert dev.faults == faults0 + 1
    assert dev.dma_reads == reads0 + 3
    # bad input from the thread: error codes
    assert rc["null"] == E_BADARG and r["null_err"]["kind"] == ERR_BADARG
    assert r["others"] == [(E_BADARG, ERR_BADARG), (E_BADARG, ERR_BADARG), (E_NODEV, ERR_NODEV)]
    assert rc["exit_again"] == E_BADARG
    # the machine is free again for Python
    assert dev.dma_read(addr, 16) == pattern[:16]


class Error(C.Structure):
    _fields_ = [("kind", C.c_int32), ("access", C.c_int32), ("addr", C.c_uint64), ("size", C.c_uint64),
                ("completed", C.c_int32), ("_pad", C.c_int32), ("result", C.c_uint64),
                ("type", C.c_char * 48), ("device", C.c_char * 64), ("reason", C.c_char * 192)]


NAMES = ["dma_map_phys", "dma_unmap_phys", "dma_map_resource", "dma_unmap_resource", "dma_mapping_error",
         "dma_map_sg_attrs", "dma_unmap_sg_attrs", "dma_sync_single_for_cpu", "dma_sync_single_for_device",
         "dma_sync_sg_for_cpu", "dma_sync_sg_for_device", "dma_iova_try_alloc", "dma_iova_link",
         "dma_iova_sync", "dma_iova_unlink", "dma_iova_destroy", "dma_iova_free", "dma_read", "dma_write",
         "iova_to_phys", "translate", "register_notifier", "unregister_notifier", "domain_id",
         "raise_error", "device_check", "machine_enter", "machine_exit"]     # the header's order, ABI 1.1


class Api(C.Structure):
    _fields_ = [("abi_version", C.c_uint32), ("struct_size", C.c_uint32)] + [(n, C.c_void_p) for n in NAMES]


def _fn(name, res, *args):
    get = C.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
    api = C.cast(get(_core._C_API, b"dmaphys._core._C_API"), C.POINTER(Api)).contents
    assert api.struct_size >= C.sizeof(Api)       # (a client of ABI 1.1 on a newer table: appended only)
    return C.CFUNCTYPE(res, *args)(getattr(api, name))


def test_ctypes_owner_thread_and_waiting_python_thread():
    """A Python thread owns the machine through ctypes (GIL released around every call); a
    second Python thread's dev.dma_read() waits for machine_exit and then sees the writes."""
    P, U64, PE = C.c_void_p, C.c_uint64, C.POINTER(Error)
    enter = _fn("machine_enter", C.c_int, P, PE)
    leave = _fn("machine_exit", C.c_int, P, PE)
    read = _fn("dma_read", C.c_int, P, U64, P, U64, PE)
    write = _fn("dma_write", C.c_int, P, U64, P, U64, PE)
    m, dev, buf, _, addr, pattern = _setup(True)
    cap = dev.capsule
    out = {}

    def owner():
        err = Error()
        b = C.create_string_buffer(256)
        out["enter"] = enter(id(cap), C.byref(err))
        out["again"] = (enter(id(cap), C.byref(err)), err.kind)       # owning twice: refused
        out["read"] = (read(id(cap), addr, C.addressof(b), 256, C.byref(err)), b.raw)
        w = C.create_string_buffer(bytes(range(256)), 256)
        started.set()
        out["write"] = write(id(cap), addr, C.addressof(w), 256, C.byref(err))
        out["fault"] = (read(id(cap), UNMAPPED, C.addressof(b), 8, C.byref(err)), err.kind, err.addr)
        release.wait()
        out["exit"] = leave(id(cap), C.byref(err))

    def python_reader():
        started.wait()
        out["py"] = dev.dma_read(addr, 256)          # waits in machine_guard until machine_exit

    started, release = threading.Event(), threading.Event()
    t1, t2 = threading.Thread(target=owner), threading.Thread(target=python_reader)
    t1.start()
    t2.start()
    started.wait()
    release.set()
    t1.join()
    t2.join()
    assert out["enter"] == 0 and out["again"] == (E_BADARG, ERR_BADARG) and out["exit"] == 0
    assert out["read"] == (0, pattern[:256])
    assert out["write"] == 0
    assert out["fault"] == (E_FAULT, ERR_IOMMU_FAULT, UNMAPPED)
    assert m.iommus[0].faults[-1]["iova"] == UNMAPPED
    assert out["py"] == bytes(range(256))


def test_owner_slow_paths_and_bad_input():
    """While a thread owns the machine its slow paths (dma-debug on, a removed device) still
    work from it; machine_enter / machine_exit refuse bad capsules and non-owners."""
    P, U64, PE = C.c_void_p, C.c_uint64, C.POINTER(Error)
    enter = _fn("machine_enter", C.c_int, P, PE)
    leave = _fn("machine_exit", C.c_int, P, PE)
    read = _fn("dma_read", C.c_int, P, U64, P, U64, PE)
    m = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0, cpus=1, dma_debug=True)
    dev = m.add_device("nic0", iommu=m.add_iommu("vtd-ss", strict=True))
    phys = m.alloc_pages(1)
    m.mem_write(phys, b"\x5a" * 64)
    addr = dma.dma_map_phys(dev, phys, 4096, dma.DMA_BIDIRECTIONAL, 0)
    assert not dma.dma_mapping_error(dev, addr)
    cap, err, b = dev.capsule, Error(), C.create_string_buffer(64)
    for p in (None, id(_core._C_API), id(object())):
        assert enter(p, C.byref(err)) == E_BADARG and err.kind == ERR_BADARG
        assert leave(p, C.byref(err)) == E_BADARG and err.kind == ERR_BADARG
    assert leave(id(cap), C.byref(err)) == E_BADARG and b"does not own" in err.reason
    assert enter(id(cap), C.byref(err)) == 0
    assert read(id(cap), addr, C.addressof(b), 64, C.byref(err)) == 0 and b.raw == b"\x5a" * 64
    assert dev.dma_read(addr, 4) == b"\x5a" * 4            # the owner's own Python calls go ahead
    assert read(id(cap), UNMAPPED, C.addressof(b), 8, C.byref(err)) == E_FAULT
    assert err.kind == ERR_IOMMU_FAULT and m.iommus[0].faults[-1]["iova"] == UNMAPPED
    dma.dma_unmap_phys(dev, addr, 4096, dma.DMA_BIDIRECTIONAL, 0)
    m.remove_device(dev)
    assert read(id(cap), addr, C.addressof(b), 8, C.byref(err)) == E_NODEV
    assert leave(id(cap), C.byref(err)) == 0                # the machine is given back all the same
    other = m.add_device("nic1")
    assert other.dma_read(phys, 4) == b"\x5a" * 4
