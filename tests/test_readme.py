"""The README's Python examples run as shown (one shared namespace, in order)."""

import re
import warnings
from pathlib import Path

import pytest

import dmaphys as dma

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    ns = {"dma": dma}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dma.KernelWarning)
        for block in blocks:
            lines = block.splitlines()
            faulting = [i for i, line in enumerate(lines) if "# IommuFault" in line]
            if faulting:                      # the example ends on a deliberate fault
                exec("\n".join(lines[:faulting[0]]), ns)
                with pytest.raises(dma.IommuFault):
                    exec(lines[faulting[0]], ns)
                continue
            exec(block, ns)
    assert ns["m"].mem_read(ns["cmb"].cpu_phys + 0x1000, 12) == b"peer-to-peer"
