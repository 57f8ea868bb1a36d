"""The main job: a short stress run in the suite, deterministic for a seed; CLI argument errors."""

import json

import pytest

from dmaphys import stress
from dmaphys.cli import main


def _stable(r):
    return {k: v for k, v in r.items()
            if k not in ("seconds", "ops_per_s", "latencies", "paths")} | {
        "paths": {n: {k: v for k, v in p.items() if k in ("ops", "rounds", "bytes", "map_failures")}
                  for n, p in r["paths"].items()}}


def test_short_stress_run_is_clean_and_deterministic():
    r1 = stress.run(ops=20_000, seed=7, progress=False)
    assert r1["integrity_errors"] == 0, r1["integrity_samples"]
    assert r1["operations"] >= 20_000
    assert all(p["ops"] > 0 for p in r1["paths"].values())
    r2 = stress.run(ops=20_000, seed=7, progress=False)
    assert _stable(r1) == _stable(r2)
    r3 = stress.run(ops=20_000, seed=8, progress=False)
    assert _stable(r3) != _stable(r1)


def test_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "stress.png"
    assert main(["stress", "--ops", "5000", "--seed", "3", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["integrity_errors"] == 0 and out["seed"] == 3
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("argv", [["--ops", "0"], ["--ops", "many"], ["--scenario", "bogus"],
                                  ["--seed", "x"]])
def test_cli_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["stress", *argv])
    assert ei.value.code == 2
    assert "dmaphys stress: error:" in capsys.readouterr().err


def test_scenario_subset(capsys):
    assert main(["stress", "--ops", "3000", "--scenario", "swiotlb,direct", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "swiotlb" in out and "integrity errors: 0" in out


@pytest.mark.slow
def test_default_stress_run():
    r = stress.run(progress=False)
    assert r["integrity_errors"] == 0
