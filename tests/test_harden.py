"""Hardening (issue 9): no crash on any Python input, no state left behind by a failed call,
no device access after removal, checked frees. Each test failed on main before the fix."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import dmaphys
import dmaphys.reference as reference
from dmaphys import DMA_BIT_MASK, DMA_TO_DEVICE, DmaFault, PhysAddrError

HOLE = 80 << 30                                   # beyond the default machine's RAM (ends at 17 GiB)


# child processes import the dmaphys this test imported (installed, or an in-place build), from a
# directory that holds no other dmaphys (a source checkout's own package may have no compiled core)
PKG_PARENT = str(Path(dmaphys.__file__).resolve().parent.parent)
CHILD = {"env": dict(os.environ, PYTHONPATH=PKG_PARENT), "cwd": tempfile.gettempdir()}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **CHILD)


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
    r = _run("import dmaphys as d\n"                # Iotlb.probe on it was a SIGFPE (0 sets)
             "m = d.Machine(ram=[(0, 1 << 30)], swiotlb=0)\n"
             "dom = m.add_iommu(fmt='x86-64').domain_alloc()\n"
             "assert d.Iotlb.__new__(d.Iotlb).probe(dom, 0) is None\n")
    assert r.returncode == 0, r.stderr[-500:]


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


# ---- the CLI validates before it starts, Ctrl-C reports, a closed pipe is quiet -----------------
@pytest.mark.parametrize("argv", [
    ["stress", "--duration", "nan"], ["stress", "--duration", "0"], ["stress", "--duration", "-1"],
    ["stress", "--duration", "inf"], ["stress", "--ops", "10", "--duration", "1"], ["stress", "--seed", "-1"],
    ["stress", "--plot", "/"], ["stress", "--plot", "/nonexistent-dir/x.png"],
    ["bench", "--cpus", "0"], ["bench", "--iommu", "strict", "--fmt", "arm-lpae-s1-64k"],
    ["info", "--cpus", "0"]])
def test_cli_rejects_before_running(argv, capsys):
    from dmaphys.cli import main

    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def _cli(args, **kw):
    kw = {**CHILD, **kw}
    return subprocess.Popen([sys.executable, "-m", "dmaphys", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_ctrl_c_prints_the_report_so_far():
    import signal
    import time

    p = _cli(["stress", "--ops", "100000000", "--no-progress"])
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "interrupted, the report so far" in out and "integrity errors:" in out
    assert "Traceback" not in err


def test_cli_closed_pipe_and_no_terminal_are_quiet():
    r = subprocess.run(f"{sys.executable} -m dmaphys stress --ops 3000 | head -1", shell=True, **CHILD,
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.startswith("dmaphys stress:") and r.stderr == ""     # no traceback, no progress bar


def test_cli_plot_writes_the_named_file(tmp_path):
    pytest.importorskip("matplotlib")
    from dmaphys.cli import main

    path = tmp_path / "occupancy"                      # no suffix: written as given, not occupancy.png
    assert main(["stress", "--ops", "3000", "--no-progress", "--plot", str(path)]) == 0
    assert path.stat().st_size > 10_000 and not (tmp_path / "occupancy.png").exists()


def test_stress_iova_high_water_is_not_below_in_use():
    from dmaphys import stress

    for seed in (1, 2, 3):
        r = stress.run(ops=7000, seed=seed, progress=False)
        assert r["iova"]["high_water_pages"] >= r["iova"]["pages_in_use"]


def test_source_tree_without_core_explains(tmp_path):
    import shutil

    shutil.copytree(Path(dmaphys.__file__).parent, tmp_path / "dmaphys",
                    ignore=shutil.ignore_patterns("*.so", "*.cpp", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "dmaphys", "info"], capture_output=True, text=True,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode != 0 and "not built" in r.stderr and "circular" not in r.stderr


# ---- bounded logs, one print per report ----------------------------------------------------------
def test_logs_keep_the_first_records_and_count_the_rest(impl, monkeypatch):
    import warnings

    limit = 10000
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    d = m.add_device("d")
    m.dma_debug.all_errors = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(limit + 5):
            impl.dma_unmap_phys(d, 0x1000, 4096, DMA_TO_DEVICE)      # never mapped: a report each
    assert len(m.dma_debug.errors) == limit and m.dma_debug.errors_dropped == 5
    assert m.dma_debug.error_count == limit + 5                    # the kernel's counter keeps counting
    assert len(m.warnings_log) == limit and m.warnings_dropped == 5


def test_a_report_prints_once_at_the_callers_line(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import dmaphys as dma\nm = dma.Machine(ram=[(0, 1 << 30)], swiotlb=0)\n"
                      "d = m.add_device('d')\n"
                      "dma.dma_unmap_phys(d, 0x1000, 4096, dma.DMA_TO_DEVICE)\n")
    for backend in ("0", "1"):
        env = dict(CHILD["env"], DMAPHYS_PUREPYTHON=backend)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("device driver tries to free DMA memory it has not allocated") == 1, r.stderr
        assert f"{script}:4: DmaDebugWarning" in r.stderr, r.stderr


# ---- two-step IOVA API misuse: the kernel's behaviour plus a report, never a map of unallocated IOVA ----
def _two_step(impl):
    m = impl.Machine()
    iommu = m.add_iommu(fmt="x86-64")
    return m, m.add_device("a", iommu=iommu), m.add_device("b", iommu=iommu), m.alloc_pages(4)


def _ranges(dev):
    """The IOVA allocator's ranges and the page table (without its statistics)."""
    pt = {k: v for k, v in dev.domain.pgtable.get_state().items() if k not in ("walk_reads", "leaf_writes")}
    return dev.domain.iova_cookie.iovad.get_state()["ranges"], pt


@pytest.mark.parametrize("case", ["unfilled", "other_device", "past_the_end", "freed"])
def test_iova_link_refuses_unallocated_space(impl, case):
    import warnings

    m, a, b, buf = _two_step(impl)
    state = impl.DmaIovaState()
    if case != "unfilled":
        assert impl.dma_iova_try_alloc(a, state, buf, 2 * 4096)
    if case == "freed":
        impl.dma_iova_free(a, state)
    dev, offset = (b, 0) if case == "other_device" else (a, 2 * 4096 if case == "past_the_end" else 0)
    before = (_ranges(a), _ranges(b))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert impl.dma_iova_link(dev, state, buf, offset, 4096, DMA_TO_DEVICE, 0) == -dmaphys.EINVAL
        assert impl.dma_iova_sync(dev, state, offset, 4096) == -dmaphys.EINVAL
    assert (_ranges(a), _ranges(b)) == before                        # nothing mapped
    assert [r.kind for r in m.dma_debug.errors].count("iova_state") == 2
    assert any("refused" in str(x.message) for x in w)


def test_iova_double_free_and_destroy_are_reported_not_done(impl):
    import warnings

    m, a, _, buf = _two_step(impl)
    state = impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(a, state, buf, 4096)
    impl.dma_iova_free(a, state)
    after_first = _ranges(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        impl.dma_iova_free(a, state)                                  # the kernel frees it twice
        impl.dma_iova_destroy(a, state, 0, DMA_TO_DEVICE, 0)
    assert _ranges(a) == after_first
    assert [r.kind for r in m.dma_debug.errors] == ["iova_state", "iova_state"]
    s1, s2 = impl.DmaIovaState(), impl.DmaIovaState()
    assert impl.dma_iova_try_alloc(a, s1, buf, 4096) and impl.dma_iova_try_alloc(a, s2, buf, 4096)
    assert s1.addr != s2.addr                                        # no shared IOVA afterwards


def test_iova_to_phys_on_a_freed_domain_raises(impl):
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dom = m.add_iommu(fmt="x86-64").domain_alloc()
    assert impl.iommu_map(dom, 0x10000, 0x20000, 4096, dmaphys.IOMMU_READ) == 0
    impl.iommu_unmap(dom, 0x10000, 4096)
    impl.iommu_domain_free(dom)
    with pytest.raises(ValueError, match="freed"):
        impl.iommu_iova_to_phys(dom, 0x10000)
    with pytest.raises(ValueError, match="freed"):
        impl.iommu_iova_to_phys_batch(dom, np.array([0x10000], dtype=np.uint64))


@pytest.mark.parametrize("strict", [True, False])
def test_unmap_size_zero_is_the_same_in_both_modes(impl, strict):
    import warnings

    m = impl.Machine()
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64", strict=strict))
    buf = m.alloc_pages(1)
    addr = impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE)
    impl.dma_mapping_error(d, addr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        impl.dma_unmap_phys(d, addr, 0, DMA_TO_DEVICE)               # no exception in either mode
        m.advance(10**9)                                           # the flush queue has nothing bad
    assert [r.kind for r in m.dma_debug.errors] == ["size_mismatch"]
    assert impl.iommu_iova_to_phys(d.domain, addr) == buf            # unmapped nothing (leaked)
    again = impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE)
    assert again != addr and not impl.dma_mapping_error(d, again)   # the IOVA was not handed out twice


# ---- IOVA double frees: dma-debug reports and refuses what the kernel would cache twice ----------
def test_free_iova_fast_twice_is_reported_not_done(impl):
    from dmaphys import DmaDebugWarning

    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64"))
    iovad = d.domain.iova_cookie.iovad
    lim = (1 << 20) - 1
    p = iovad.alloc_iova_fast(1, lim)
    iovad.free_iova_fast(p, 1)
    before = iovad.get_state()
    with pytest.warns(DmaDebugWarning, match="freed twice"):
        iovad.free_iova_fast(p, 1)                                   # the kernel caches it again
        m.flush_warnings()                                           # (queued for the entry point)
    with pytest.warns(DmaDebugWarning, match="does not start an allocated IOVA range"):
        iovad.free_iova_fast(0x1234, 1)                              # never allocated
        m.flush_warnings()
    assert iovad.get_state() == before                               # neither was done
    assert [(r.kind, r.device) for r in m.dma_debug.errors] == [("iova_free", "d")] * 2
    assert m.dma_debug.errors[0].address == p << 12
    a, b = iovad.alloc_iova_fast(1, lim), iovad.alloc_iova_fast(1, lim)
    assert a == p and b != p                                         # no PFN handed out twice
    m.dma_debug.enabled = False                                      # without dma-debug: the kernel
    iovad.free_iova_fast(a, 1)
    iovad.free_iova_fast(a, 1)
    assert iovad.alloc_iova_fast(1, lim) == iovad.alloc_iova_fast(1, lim) == a


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("how", ["sg", "resource", "coherent"])
def test_double_unmap_does_not_hand_an_iova_out_twice(impl, strict, how):
    """The unmaps that skip iommu_dma_unmap_phys()'s WARN_ON(!phys) free the IOVA twice in the
    kernel; the second free is reported and refused, so the next two maps get distinct IOVAs."""
    import warnings

    m = impl.Machine()
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64", strict=strict))
    buf = m.alloc_pages(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "sg":
            sg = impl.ScatterList([(buf, 4096)])
            impl.dma_map_sg(d, sg, 1, DMA_TO_DEVICE)
            for _ in range(2):
                impl.dma_unmap_sg(d, sg, 1, DMA_TO_DEVICE)
        elif how == "resource":
            a = impl.dma_map_resource(d, 0xFE000000, 4096, DMA_TO_DEVICE, 0)
            for _ in range(2):
                impl.dma_unmap_resource(d, a, 4096, DMA_TO_DEVICE, 0)
        else:
            cpu, a = impl.dma_alloc_coherent(d, 4096)
            for _ in range(2):
                impl.dma_free_coherent(d, 4096, cpu, a)
        m.advance(10**9)                                             # lazy: the flush queue frees
    assert "iova_free" in [r.kind for r in m.dma_debug.errors]
    x = impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE)
    y = impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE)
    assert x != y and not impl.dma_mapping_error(d, x) and not impl.dma_mapping_error(d, y)


# ---- a device read of any size: the same fault on both backends ---------------------------------
@pytest.mark.parametrize("n", [1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1])
def test_huge_device_read_faults_like_the_reference(n):
    """A read beyond the mapping faults where the device's requests do, whatever n (the core used
    to fail allocating n bytes first: MemoryError / OverflowError)."""
    import warnings

    out = []
    for impl in (dmaphys, reference):
        m = impl.Machine()
        iommu = m.add_iommu(fmt="x86-64")
        direct, translated = m.add_device("d"), m.add_device("t", iommu=iommu)
        buf = m.alloc_pages(1)
        iova = impl.dma_map_phys(translated, buf, 4096, DMA_TO_DEVICE)
        impl.dma_mapping_error(translated, iova)
        got = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for dev, addr in ((direct, buf), (translated, iova)):
                with pytest.raises((dmaphys.DmaFault, dmaphys.IommuFault)) as ei:
                    dev.dma_read(addr, n)
                got.append((type(ei.value).__name__, dev.faults))
        out.append((got, len(iommu.faults), iommu.iotlb.hits, iommu.iotlb.misses))
    assert out[0] == out[1]


# ---- remove_device: complete, or nothing ---------------------------------------------------------
def test_remove_device_completes_when_its_report_raises(impl):
    """A report turned into an exception (warnings as errors here) used to fire from the detach's
    flush, leaving the device detached from its IOMMU but not removed: untranslated access to RAM."""
    from dmaphys import DmaDebugWarning

    m = impl.Machine()
    d = m.add_device("d", iommu=m.add_iommu(fmt="x86-64"))
    buf = m.alloc_pages(1)
    m.mem_write(buf, b"secret")
    impl.dma_mapping_error(d, impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE))    # leaked
    with pytest.raises(DmaDebugWarning, match="pending DMA allocations"):
        m.remove_device(d)
    assert d.removed and "d" not in m.devices and d.domain is None
    with pytest.raises(DmaFault, match="removed"):
        d.dma_read(buf, 6)
    parent = m.add_device("parent", iommu=m.iommus[0])
    m.add_device("child", parent=parent, pci=False)
    with pytest.raises(ValueError, match="child"):
        m.remove_device(parent)                                      # refused before any change
    assert not parent.removed and "parent" in m.devices


# ---- the stress plot and the README's claims (issue 9's "CLI and API surface" list) -------------
def test_stress_plot_log_axes_and_separate_occupancy_axes(monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from dmaphys import stress

    figs = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self))
    r = {"latencies": {"nic": [900, 2_000, 150_000], "nvme": [40_000, 9_000_000]},
         "occupancy": [(0, 10, 0), (500, 5_000, 3), (1000, 4_000, 0)], "seed": 1, "operations": 1000}
    stress.plot_report(r, "unused.png")
    lat, occ, *twin = figs[0].axes
    assert (lat.get_xscale(), lat.get_yscale()) == ("log", "log")         # decades of latency
    assert len(twin) == 1 and len(occ.get_lines()) == len(twin[0].get_lines()) == 1
    assert occ.get_lines()[0].get_label() == "IOVA pages in use"          # its own axis, not one
    assert twin[0].get_lines()[0].get_label() == "swiotlb slots in use"   # linear axis for both


README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_iotlb_keys_are_the_accepted_ones(impl):
    import re

    text = README.read_text()
    assert '"capacity"' not in text
    keys = re.search(r'iotlb=\{("entries".*?)\}', text).group(1)
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    m.add_iommu(fmt="x86-64", iotlb=dict(entries=256, ways=4, policy="fifo"))      # the keys it names
    assert all(k in keys for k in ('"entries"', '"ways"', '"policy"'))
    with pytest.raises(TypeError):
        m.add_iommu(fmt="x86-64", iotlb={"capacity": 256})


def test_readme_large_granule_formats_serve_unmanaged_domains_only(impl):
    assert "16K/64K formats serve unmanaged domains" in " ".join(README.read_text().split())
    m = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    iommu = m.add_iommu(fmt="arm-lpae-s1-64k")
    dom = iommu.domain_alloc()                                       # unmanaged: fine
    assert impl.iommu_map(dom, 0x10000, 0x20000, 0x10000, dmaphys.IOMMU_READ) == 0
    with pytest.raises(dmaphys.KernelBug):
        m.add_device("d", iommu=iommu)                               # DMA API: init_iova_domain's BUG


def test_readme_error_count_counts_the_kernels_reports_only(impl):
    import warnings

    text = " ".join(README.read_text().split())
    assert "error_count counts the kernel's reports only" in text or "not counted in `error_count`" in text
    m = impl.Machine()
    iommu = m.add_iommu(fmt="x86-64", strict=False)
    d = m.add_device("d", iommu=iommu)
    buf = m.alloc_pages(1)
    iova = impl.dma_map_phys(d, buf, 4096, DMA_TO_DEVICE)
    impl.dma_mapping_error(d, iova)
    d.dma_read(iova, 1)
    impl.dma_unmap_phys(d, iova, 4096, DMA_TO_DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d.dma_read(iova, 1)                                          # a stale IOTLB hit: reported
    assert [r.kind for r in m.dma_debug.errors] == ["stale_iotlb"] and m.dma_debug.error_count == 0


def test_readme_quick_start_builds_once_and_says_how_long():
    text = README.read_text()
    quick = text[text.index("## Quick start"):text.index("## ", text.index("## Quick start") + 3)]
    cmds = re.findall(r"pip install [^\n&]*", quick)
    assert cmds and all(".[test]" in c for c in cmds)                # one build, with the test extras
    assert "minutes" in quick


def test_iova_to_phys_batch_never_sees_a_domain_freed_mid_walk():
    """The batch walks without the GIL; a domain freed by another thread meanwhile used to give
    translations that were never mapped (0 for the rest of the walk). Now the batch owns the
    machine: the free waits, so the walk sees the domain whole (or, freed first, raises)."""
    import threading

    m = dmaphys.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    dom = m.add_iommu(fmt="x86-64").domain_alloc()
    assert dmaphys.iommu_map(dom, 0x10000, 0x20000, 4096, dmaphys.IOMMU_READ) == 0
    probe = np.full(1 << 22, 0x10123, dtype=np.uint64)
    out: dict = {}

    def walk():
        try:
            out["r"] = dmaphys.iommu_iova_to_phys_batch(dom, probe)
        except ValueError as e:
            out["e"] = e

    t = threading.Thread(target=walk)
    t.start()
    dmaphys.iommu_domain_free(dom)
    t.join()
    assert "e" in out or (out["r"] == 0x20123).all()


@pytest.mark.parametrize("call", ["map_phys", "map_page", "alloc_coherent", "map_sg"])
def test_map_on_a_dma_domain_whose_table_was_freed_leaves_no_trace(impl, call):
    # found by the slow fuzz run (seeds 3, 4): IoPgtable.free_tables() on a DMA domain's table,
    # then a map allocated IOVA (and pages) before iommu_map raised
    m = impl.Machine(ram=[(0, 64 << 20), (1 << 32, 64 << 20)], swiotlb=1 << 20)
    mmu = m.add_iommu(fmt="x86-64", strict=False)
    nic = m.add_device("nic", iommu=mmu)
    buf = m.alloc_pages(2)
    nic.domain.pgtable.free_tables()

    def state():
        return (m.mem.allocated_pages, nic.domain.iova_cookie.iovad.get_state()["ranges"],
                m.swiotlb.get_state()["total_used"], len(m.dma_debug))

    before = state()
    with pytest.raises(ValueError, match="page table was freed"):
        if call == "map_phys":
            impl.dma_map_phys(nic, buf, 4096, 0, 0)
        elif call == "map_page":
            impl.dma_map_page(nic, 2, 4096, buf, 0)
        elif call == "alloc_coherent":
            impl.dma_alloc_coherent(nic, 4097)
        else:
            sg = impl.ScatterList([(buf, 4096), (buf + 4096, 100)])
            impl.dma_map_sg(nic, sg, sg.nents, 0)
    assert state() == before
