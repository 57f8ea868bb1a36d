"""Build examples/embed (the C and the Cython dmaring engine) against the dmaphys that
``import dmaphys`` finds and run them behind an IOMMU and on dma-direct (numpy's
test_extending does the same with its examples). Every byte and completion is checked by
examples/embed/run.py; a descriptor pointing at an unreachable address must fault.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

import dmaphys as dma

EMBED = Path(__file__).resolve().parent.parent / "examples" / "embed"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_embed_{name}", EMBED / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


build = _load("build")
run = _load("run")


@pytest.fixture(scope="module", params=["dmaring", "dmaring_cy"])
def engine(request, tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.fail("a C compiler is needed to build the embedding examples")
    return build.build(request.param, tmp_path_factory.mktemp(request.param))


def test_shipped_files():
    inc = Path(dma.get_include())
    assert (inc / "dmaphys.h").is_file()
    assert (Path(dma.__file__).parent / "capi.pxd").is_file()


@pytest.mark.parametrize("behind_iommu", [True, False], ids=["iommu", "direct"])
def test_ring_engine(engine, behind_iommu):
    m, dev, guest = run.make_machine(behind_iommu)
    assert engine.abi_version == 1
    done, fault = run.run_ring(engine, m, dev, guest, [64, 4096, 10000, 1, 300], xor=0x5A)
    assert (done, fault) == (5, None)
    done, fault = run.run_ring(engine, m, dev, guest, [256, 512, 128], fault_at=1)
    if behind_iommu:
        assert (fault["type"], fault["reason"]) == ("IommuFault", "not-present")
        assert fault["addr"] == 0xDEAD0040 and fault["device"] == "dmaring0"
        assert m.iommus[0].faults[-1]["iova"] == 0xDEAD0040        # recorded like any device fault
    else:
        assert fault["type"] == "DmaFault" and fault["addr"] == run.HOLE + 0x40
        assert "no RAM or MMIO" in fault["reason"]
    assert dev.faults == 1


def test_ring_engine_bad_capsule(engine):
    m, dev, _ = run.make_machine(False)
    if getattr(engine, "TAKES_DEVICE", False):
        with pytest.raises(TypeError):
            engine.ring_run(dev.capsule, 0, 1, 0)
        return
    with pytest.raises(ValueError, match="not a dmaphys.device capsule"):
        engine.ring_run(object(), 0, 1, 0)
    cap = dev.capsule
    m.remove_device(dev)
    with pytest.raises(ValueError, match="removed"):
        engine.ring_run(cap, 0, 1, 0)
