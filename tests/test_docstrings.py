"""Docstrings of the public API say what a call returns and what it raises (issue 9).

COVERED lists the callables whose docstrings were brought up to that standard so far: the
kernel-mirroring functions of mapping.pxi, batch.pxi, the two-step dma_iova_* API, the iommu_*
functions of iommu.pxi and the pci_* functions of p2pdma.pxi, and the public methods of Machine
and Device. Extend it as more are documented; the test for "every public name has a docstring"
covers all of dmaphys.__all__.
"""
import inspect
import re

import pytest

import dmaphys
from dmaphys import _core as core
from dmaphys import reference as ref

# every kernel-named entry point of mapping.c, then the rest of the covered set
COVERED_FUNCTIONS = [
    *ref.mapping.__all__, "dma_map_phys_batch", "dma_mapping_error_batch", "dma_unmap_phys_batch",
    "dma_read_batch", "dma_write_batch", "iommu_iova_to_phys_batch", "dma_iova_try_alloc",
    "dma_iova_free", "dma_iova_link", "dma_iova_sync", "dma_iova_unlink", "dma_iova_destroy",
    "dma_use_iova", "dma_iova_size", "iommu_map", "iommu_unmap", "iommu_unmap_fast",
    "iommu_iotlb_sync", "iommu_iova_to_phys", "iommu_domain_free", "iommu_attach_device",
    "iommu_detach_device", "pci_p2pdma_map_type", "pci_p2pdma_state", "pci_p2pdma_bus_addr_map",
    "pci_p2pdma_distance", "pci_p2pdma_distance_many", "pci_alloc_p2pmem", "pci_free_p2pmem",
    "pci_p2pmem_virt_to_bus", "pci_p2pmem_publish", "pci_p2pmem_find", "pci_p2pmem_find_many",
    "pci_p2pmem_alloc_sgl", "pci_p2pmem_free_sgl",
]
COVERED_METHODS = [
    "Machine.advance", "Machine.add_timer", "Machine.mem_write", "Machine.mem_read",
    "Machine.add_mmio", "Machine.add_ram", "Machine.remove_ram", "Machine.add_ram_range",
    "Machine.max_phys_ram", "Machine.add_device", "Machine.remove_device",
    "Machine.add_host_bridge", "Machine.add_switch", "Machine.add_p2pmem", "Machine.add_iommu",
    "Machine.flush_warnings", "Device.dma_read", "Device.dma_write", "Device.translate",
    "Device.dma_read_batch", "Device.dma_write_batch",
]
RETURNS = re.compile(r"\breturn|\bNone\b", re.I)
RAISES = re.compile(r"\braise", re.I)


def _get(mod, dotted):
    obj = mod
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_public_callable_has_a_docstring():
    missing = []
    for mod in (core, ref):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if (inspect.isclass(obj) or callable(obj)) and not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{mod.__name__}.{name}")
    for name in dmaphys.__all__:
        obj = getattr(dmaphys, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (inspect.getdoc(obj) or "").strip():
            missing.append(f"dmaphys.{name}")
    assert not missing


@pytest.mark.parametrize("name", COVERED_FUNCTIONS + COVERED_METHODS)
def test_core_docstring_says_returns_and_raises(name):
    doc = inspect.getdoc(_get(core, name)) or ""
    assert RETURNS.search(doc), f"{name}: the docstring does not say what it returns"
    assert RAISES.search(doc), f"{name}: the docstring does not say what it raises"


@pytest.mark.parametrize("name", COVERED_FUNCTIONS)
def test_kernel_mirroring_docstring_names_the_kernel_call(name):
    doc = inspect.getdoc(_get(core, name)) or ""
    assert re.search(r"Models |Mirrors |Same as |dma_\w+\(dev", doc), name


@pytest.mark.parametrize("name", COVERED_FUNCTIONS + COVERED_METHODS)
def test_reference_docstring_says_returns_and_raises(name):
    doc = inspect.getdoc(_get(ref, name)) or ""
    twin = f"Reference twin of dmaphys._core.{name}" in doc
    assert twin or (RETURNS.search(doc) and RAISES.search(doc)), name


def test_covered_names_are_public():
    for name in COVERED_FUNCTIONS:
        assert name in core.__all__ and name in ref.__all__ and name in dmaphys.__all__
    for name in COVERED_METHODS:
        assert name.split(".")[0] in core.__all__
