"""``dmaphys sweep``: spec validation, point runs on both backends, and sweeps on real Dask clusters
(a LocalCluster, and a `dask scheduler` with `dask worker` processes started here on 127.0.0.1)."""

import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import dmaphys
from dmaphys import stress, sweep

pytest.importorskip("dask.distributed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(dmaphys.__file__)))   # where dmaphys is imported from
# Child processes start in an empty directory: `python -m`/`-c` put their working directory first on
# sys.path, and from the source root that would import the uncompiled in-tree package, not the one
# under test.
RUN_DIR = tempfile.mkdtemp(prefix="dmaphys-sweep-")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
       "PYTHONWARNINGS": "ignore"}

SPEC24 = """
[base]
scenarios = ["nic"]
ops = 1000

[axes]
iotlb_capacity = [16, 64, 256]
iommu = ["strict", "lazy"]
seed = [1, 2, 3, 4]
"""


def _sweep(*args, cwd, timeout=180):
    return subprocess.run([sys.executable, "-m", "dmaphys", "sweep", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- the spec -------------------------------------------------------------------------------

def test_grid_order_and_columns():
    spec = sweep.parse_spec({"base": {"ops": 100, "iommu": "lazy"},
                             "axes": {"iotlb_capacity": [64, 256], "iommu": ["strict", "lazy"],
                                      "seed": [1, 2]}})
    assert len(spec) == 8
    pts = spec.points()
    assert [(p["iotlb_capacity"], p["iommu"], p["seed"]) for p in pts[:3]] == [
        (64, "strict", 1), (64, "strict", 2), (64, "lazy", 1)]
    assert all(p["ops"] == 100 and p["scenarios"] == "nic" for p in pts)
    cols = spec.columns
    assert cols[:5] == ["point", "kind", "iotlb_capacity", "iommu", "seed"]
    for c in ("iotlb_lookups_per_page", "iotlb_misses_per_page", "iotlb_invalidations_per_page",
              "iotlb_stale_hits", "integrity_errors", "status", "fq_size", "swiotlb_size", "map_size"):
        assert c in cols
    assert sweep.SCENARIOS == stress.SCENARIOS


def test_values_normalised():
    spec = sweep.parse_spec({"base": {"swiotlb_size": "8MiB", "scenarios": "nic,nvme"},
                             "axes": {"map_size": ["4k", 8192], "scenarios": [["nic"], "all"]}})
    assert spec.base["swiotlb_size"] == 8 << 20
    assert spec.axes["map_size"] == [4096, 8192]
    assert spec.axes["scenarios"] == ["nic", ",".join(stress.SCENARIOS)]


@pytest.mark.parametrize("text, msg", [
    ("[axes]\niotlb_size = [1, 2]\n", "unknown parameter 'iotlb_size'"),
    ("[axes]\niommu = ['strict', 'sloppy']\n", "'sloppy' is not one of off, strict, lazy"),
    ("[axes]\nseed = []\n", "axis seed is empty"),
    ("[base]\nops = 10\n", "[axes] is missing or empty"),
    ("[axes]\nfq_size = [100]\n", "power of two"),
    ("[axes]\nops = [0]\n", "out of range"),
    ("[base]\nkind = 'bench'\n[axes]\nseed = [1]\n", "kind = 'bench'"),
    ("[base]\nkind = 'dmabuf'\n[axes]\nscenarios = ['nic']\n", "for kind 'dmabuf'"),
    ("[axes]\nseed = 3\n", "give a list"),
    ("[axes\nseed = [1]\n", "not valid TOML"),
    ("[axes]\nscenarios = ['nic', 'disk']\n", "unknown or repeated scenario"),
    ("[base]\nkind = 'dmabuf'\n[axes]\nrange_size = ['6k']\n", "multiple of 4096"),
])
def test_invalid_spec_exits_2_before_running(tmp_path, capsys, text, msg):
    from dmaphys import cli

    (tmp_path / "bad.toml").write_text(text)
    out = tmp_path / "out.csv"
    assert cli.main(["sweep", str(tmp_path / "bad.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not out.exists()


def test_missing_spec_file(tmp_path, capsys):
    from dmaphys import cli

    assert cli.main(["sweep", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_base_package_does_not_import_dask():
    code = ("import sys, dmaphys, dmaphys.cli; dmaphys.cli.build_parser(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'pandas')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=RUN_DIR, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- one point, both backends --------------------------------------------------------------

@pytest.mark.parametrize("kind, params", [
    ("stress", {"scenarios": "nic,nvme,swiotlb", "ops": 1500, "iommu": "strict", "iotlb_capacity": 64,
                "fq_size": 16, "map_size": 6000, "swiotlb_size": 1 << 20}),
    ("stress", {"scenarios": "nvme,p2p,direct", "ops": 1500, "iommu": "off"}),
    ("dmabuf", {"ranges": 5, "range_size": 8192, "rounds": 4, "method": "two-step", "iommu": "strict"}),
    ("dmabuf", {"ranges": 5, "range_size": 8192, "rounds": 4, "method": "per-range", "iommu": "lazy",
                "fq_timeout": 1}),
])
def test_point_same_row_on_both_backends(kind, params):
    p = {**sweep.PARAMS[kind], **params}
    core = sweep.run_point(3, kind, p, "core")
    ref = sweep.run_point(3, kind, p, "reference")
    assert core["status"] == "ok", core["status"]
    assert core == ref
    assert core["pages_mapped"] > 0 and core["integrity_errors"] == 0
    if p["iommu"] == "off":
        assert core["iotlb_lookups_per_page"] == 0.0
    else:
        assert core["iotlb_misses_per_page"] > 0


def test_dmabuf_two_step_syncs_once_per_buffer():
    base = {**sweep.DMABUF_PARAMS, "ranges": 8, "range_size": 4096, "rounds": 3, "iommu": "strict"}
    two = sweep.run_point(0, "dmabuf", {**base, "method": "two-step"})
    per = sweep.run_point(1, "dmabuf", {**base, "method": "per-range"})
    assert two["pages_mapped"] == per["pages_mapped"] == 8 * 3
    assert two["iotlb_invalidations"] == 3                # one dma_iova_destroy sync per buffer
    assert per["iotlb_invalidations"] == 8 * 3            # one per dma_unmap_phys
    off = sweep.run_point(2, "dmabuf", {**base, "method": "two-step", "iommu": "off"})
    assert off["status"].startswith("error: RuntimeError: dma_iova_try_alloc failed")


def test_bad_combination_is_a_failed_row():
    row = sweep.run_point(0, "stress", {**sweep.STRESS_PARAMS, "ops": 100, "iotlb_capacity": 12})
    assert row["status"].startswith("error: ValueError: IOTLB entries (12) must be a positive multiple")


def test_fq_options(impl):
    m = impl.Machine()
    iommu = m.add_iommu(fmt="x86-64", strict=False, fq_size=8, fq_timeout=3)
    dev = m.add_device("d", iommu=iommu)
    cookie = dev.domain.iova_cookie
    assert (cookie.fq_size, cookie.fq_timeout) == (8, 3)
    dflt = m.add_iommu(fmt="x86-64", strict=False)
    assert dflt.fq_size is None
    d2 = m.add_device("e", iommu=dflt)
    assert (d2.domain.iova_cookie.fq_size, d2.domain.iova_cookie.fq_timeout) == (
        dmaphys.IOVA_DEFAULT_FQ_SIZE, dmaphys.IOVA_DEFAULT_FQ_TIMEOUT)
    for bad in ({"fq_size": 6}, {"fq_size": 1}, {"fq_timeout": 0}):
        with pytest.raises(ValueError):
            m.add_iommu(**bad)
    with pytest.raises(TypeError):
        m.add_iommu(fq_size="8")


def test_fq_size_changes_lazy_flushes():
    small = stress.run(ops=3000, seed=1, scenarios=["nic"], progress=False, iommu="lazy", fq_size=8)
    big = stress.run(ops=3000, seed=1, scenarios=["nic"], progress=False, iommu="lazy")
    assert small["iommus"][0]["iotlb_flushes"] > big["iommus"][0]["iotlb_flushes"]


def test_stress_kwargs_default_unchanged():
    a = stress.run(ops=2000, seed=5, progress=False)
    b = stress.run(ops=2000, seed=5, progress=False, iommu="lazy", fmt="x86-64", iotlb_capacity=512,
                   iotlb_ways=8, iotlb_policy="lru")
    for k in ("operations", "pages_mapped", "iommus", "iova", "integrity_errors"):
        assert a[k] == b[k]


# ---- sweeps on Dask --------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(addr):
    return subprocess.Popen([sys.executable, "-m", "dask", "worker", addr, "--nthreads", "1",
                             "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard",
                             "--memory-limit", "0"],
                            env=ENV, cwd=RUN_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_workers(addr, n, timeout=90):
    code = ("import sys; from dask.distributed import Client; "
            f"c = Client({addr!r}, timeout='30s'); c.wait_for_workers({n}, timeout={timeout}); "
            "print(len(c.scheduler_info()['workers'])); c.close()")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=RUN_DIR, capture_output=True, text=True,
                       timeout=timeout + 30)
    assert r.returncode == 0, r.stderr[-2000:]


def _stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster():
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1 (stopped at the end)."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              env=ENV, cwd=RUN_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, start_new_session=True)]
    try:
        procs += [_start_worker(addr), _start_worker(addr)]
        _wait_workers(addr, 2)
        yield addr, procs
    finally:
        for p in reversed(procs):
            _stop(p)


def test_24_points_same_rows_local_and_external_cluster(tmp_path, cluster):
    addr, _ = cluster
    (tmp_path / "s.toml").write_text(SPEC24)
    a = _sweep("s.toml", "--out", "local.csv", "--workers", "2", "--quiet", cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-3000:]
    b = _sweep("s.toml", "--out", "ext.csv", "--scheduler", addr, "--quiet", cwd=tmp_path)
    assert b.returncode == 0, b.stderr[-3000:]
    ra, rb = _rows(tmp_path / "local.csv"), _rows(tmp_path / "ext.csv")
    assert len(ra) == 24 and [int(r["point"]) for r in ra] == list(range(24))
    assert ra == rb
    assert (tmp_path / "local.csv").read_text() == (tmp_path / "ext.csv").read_text()
    assert all(r["status"] == "ok" for r in ra)
    strict = [r for r in ra if r["iommu"] == "strict"]
    lazy = [r for r in ra if r["iommu"] == "lazy"]
    assert min(float(r["iotlb_invalidations_per_page"]) for r in strict) > \
        max(float(r["iotlb_invalidations_per_page"]) for r in lazy)
    # parquet: a resume of a complete results file runs nothing (no cluster needed), keeps the
    # rows, and plots them
    import pandas as pd
    pd.read_csv(tmp_path / "local.csv").to_parquet(tmp_path / "r.parquet", index=False)
    c = _sweep("s.toml", "--out", "r.parquet", "--resume", "--quiet", "--plot", "plots",
               "--scheduler", "tcp://127.0.0.1:9", cwd=tmp_path)
    assert c.returncode == 0, c.stderr[-3000:]
    rp = sweep.read_rows(str(tmp_path / "r.parquet"))
    assert len(rp) == 24 and rp[5]["iotlb_misses_per_page"] == ra[5]["iotlb_misses_per_page"]
    assert (tmp_path / "plots" / "overview.png").stat().st_size > 10_000
    assert not (tmp_path / "r.parquet.partial.csv").exists()
    # an existing --out is not overwritten by accident
    d = _sweep("s.toml", "--out", "ext.csv", "--scheduler", addr, cwd=tmp_path)
    assert d.returncode == 2 and "--resume" in d.stderr


def test_killed_worker_loses_no_point_and_resume(tmp_path, cluster):
    addr, procs = cluster
    victim = _start_worker(addr)
    try:
        _wait_workers(addr, 3)
        (tmp_path / "s.toml").write_text(
            "[base]\nscenarios = ['nic', 'nvme']\nops = 4000\n[axes]\nseed = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n")
        p = subprocess.Popen([sys.executable, "-m", "dmaphys", "sweep", "s.toml", "--out", "r.csv",
                              "--scheduler", addr, "--quiet"], cwd=tmp_path, env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if (tmp_path / "r.csv").exists() and len(_rows(tmp_path / "r.csv")) >= 2:
                break
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)             # the worker and its nanny, mid-sweep
        out, err = p.communicate(timeout=180)
        assert p.returncode in (0, 1), err[-3000:]
    finally:
        _stop(victim)
    rows = _rows(tmp_path / "r.csv")
    assert [int(r["point"]) for r in rows] == list(range(9))
    assert all(r["status"] == "ok" or r["status"].startswith("lost") for r in rows)
    # a resume recomputes only the lost and missing points: mark a kept row and drop another
    rows[0]["iotlb_lookups"] = "123456789"
    rows[3]["status"] = "lost: KilledWorker: simulated"
    del rows[7]
    with open(tmp_path / "r.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = _sweep("s.toml", "--out", "r.csv", "--scheduler", addr, "--resume", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    done = _rows(tmp_path / "r.csv")
    assert [int(x["point"]) for x in done] == list(range(9))
    assert all(x["status"] == "ok" for x in done)
    assert done[0]["iotlb_lookups"] == "123456789"         # kept, not recomputed
    assert done[3]["iotlb_lookups"] != "" and done[7]["iotlb_lookups"] != ""
    # a results file of another spec is refused before anything runs
    (tmp_path / "other.toml").write_text("[base]\nops = 4000\n[axes]\nseed = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n")
    bad = _sweep("other.toml", "--out", "r.csv", "--resume", "--scheduler", addr, cwd=tmp_path)
    assert bad.returncode == 2 and "different spec" in bad.stderr


def test_example_specs_parse():
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    assert len(sweep.load_spec(os.path.join(examples, "sweep_nic_iotlb.toml"))) == 30
    spec = sweep.load_spec(os.path.join(examples, "sweep_dmabuf.toml"))
    assert spec.kind == "dmabuf" and len(spec) == 20


def test_plot_refuses_other_files(tmp_path, capsys):
    from dmaphys import cli

    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert cli.main(["plot", str(tmp_path / "x.csv"), str(tmp_path / "p")]) == 2
    assert "no sweep rows" in capsys.readouterr().err
