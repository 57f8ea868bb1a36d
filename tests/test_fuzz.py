"""The bad-input fuzz suite (issue 9): every probe of tests/fuzz_probes.py, on both backends, in
child processes so that a crash fails the test and names the probe.

Checks: no probe kills either backend; after every exception the state snapshot equals the one
before it (a call completes or leaves no trace); both backends end every probe the same way
(the same exception type, or both return).

The default run is bounded (DEFAULT_PROBES per backend, a few seconds of core time, most of it the
reference); ``-m slow`` runs LONG_PROBES over several seeds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_PROBES = 1500
LONG_PROBES = 20000
BATCH = 750


def _run(backend: str, seed: int, start: int, count: int) -> tuple[list, int, str]:
    import dmaphys

    # the dmaphys this test imported (installed, or an in-place build), not a source tree's own
    path = str(Path(dmaphys.__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, str(HERE / "fuzz_probes.py"), backend, str(seed), str(start),
                        str(count)], capture_output=True, text=True, timeout=1200,
                       env=dict(os.environ, PYTHONPATH=path))
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
    return lines, r.returncode, r.stderr


def _results(backend: str, seed: int, n: int) -> dict[int, tuple[str, bool]]:
    import fuzz_probes

    out: dict[int, tuple[str, bool]] = {}
    start = 0
    while start < n:
        count = min(BATCH, n - start)
        lines, rc, err = _run(backend, seed, start, count)
        out.update({i: (o, k) for i, o, k in lines})
        if rc != 0:
            culprit = start + len(lines)
            # name it: the same probe alone, on a fresh machine, to tell an order-dependent crash
            alone = _run(backend, seed, culprit, 1)[1]
            pytest.fail(f"{backend}: probe {culprit} {fuzz_probes.describe(seed, culprit)} killed the "
                        f"process (exit {rc}; alone: exit {alone})\n{err[-2000:]}")
        start += count
    return out


def _check(seed: int, n: int) -> None:
    sys.path.insert(0, str(HERE))
    import fuzz_probes

    core = _results("core", seed, n)
    ref = _results("reference", seed, n)
    problems = []
    for i in range(n):
        (co, ck), (ro, rk) = core[i], ref[i]
        call = fuzz_probes.describe(seed, i)
        if not ck:
            problems.append(f"core: {call} raised {co} and left state behind")
        if not rk:
            problems.append(f"reference: {call} raised {ro} and left state behind")
        if co != ro:
            problems.append(f"{call}: core {co}, reference {ro}")
    assert not problems, f"{len(problems)} problems (seed {seed}):\n" + "\n".join(problems[:40])


def test_fuzz_default():
    _check(seed=1, n=DEFAULT_PROBES)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_fuzz_long(seed):
    _check(seed=seed, n=LONG_PROBES)
