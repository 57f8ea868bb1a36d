"""The package namespace and stubs as a type checker sees them: mypy passes on the README's Python
examples and the examples/ scripts, examples/embed/*.py included (issue 9: ``dma.Machine`` used to
be "Module has no attribute")."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_init_stub_is_generated():
    """dmaphys/__init__.pyi re-exports every public name (tools/gen_stubs.py writes it)."""
    import dmaphys

    text = (ROOT / "dmaphys" / "__init__.pyi").read_text()
    exported = set(re.findall(r"import (\w+) as \1$", text, re.M))
    exported |= set(re.findall(r"^def (\w+)\(", text, re.M))
    assert set(dmaphys.__all__) - {"BACKEND"} <= exported, sorted(set(dmaphys.__all__) - exported)


def test_mypy_on_readme_and_examples(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    readme = tmp_path / "readme_examples.py"
    readme.write_text("import dmaphys as dma\n\n" + "\n".join(blocks))
    scripts = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    embed = sorted(str(p) for p in (ROOT / "examples" / "embed").glob("*.py"))     # run.py imports build.py
    assert scripts and len(embed) >= 2
    scripts += embed
    cache = str(tmp_path / "cache")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", cache,
                        str(readme), *scripts], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, MYPYPATH=str(ROOT), PYTHONPATH=str(ROOT)), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_stub_types_issue_9_found_wrong():
    """The stub types issue 9 found wrong (swiotlb: str, map_type -> int, ScatterList getters -> int,
    DmaDebug.entries -> int, ops_map_pages -> int) say what the calls take and return."""
    text = (ROOT / "dmaphys" / "_core.pyi").read_text()
    for pattern in (r"swiotlb: int \| str \| bool \| None = \.\.\.", r"\n    swiotlb: IoTlbMem \| None\n",
                    r"def pci_p2pdma_map_type\(.*\) -> PciP2PdmaMapType:",
                    r"def __getitem__\(self, key: int\) -> ScatterlistEntry:",
                    r"def __iter__\(self\) -> Iterator\[ScatterlistEntry\]:",
                    r"def dma_segments\(self\) -> list\[tuple\[int, int\]\]:",
                    r"def entries\(self, dev: Device \| None = \.\.\.\) -> list\[dict\[str, Any\]\]:",
                    r"def ops_map_pages\(self, .*\) -> tuple\[int, int\]:"):
        assert re.search(pattern, text), pattern
