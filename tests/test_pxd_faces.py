"""The C face: every _kernel component has a .pxd next to its .pxi, _core.pxd includes them in
the order _core.pyx includes the bodies, and the .pxd files are package data (they ship)."""

import pathlib
import re
import tomllib

PKG = pathlib.Path(__file__).resolve().parent.parent / "dmaphys"


def _includes(path):
    return re.findall(r'^include "_kernel/(\w+)\.px[di]"', path.read_text(), re.M)


def test_every_component_has_a_face():
    bodies = sorted(p.stem for p in (PKG / "_kernel").glob("*.pxi"))
    faces = sorted(p.stem for p in (PKG / "_kernel").glob("*.pxd"))
    assert bodies == faces


def test_core_pxd_includes_every_face_in_pyx_order():
    assert _includes(PKG / "_core.pxd") == _includes(PKG / "_core.pyx")
    assert sorted(_includes(PKG / "_core.pyx")) == sorted(p.stem for p in (PKG / "_kernel").glob("*.pxi"))


def test_package_cimport_and_package_data():
    assert "from dmaphys._core cimport *" in (PKG / "__init__.pxd").read_text()
    cfg = tomllib.loads((PKG.parent / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]
    assert "*.pxd" in data["dmaphys"] and "*.pxd" in data["dmaphys._kernel"]


def test_faces_declare_the_public_entry_points():
    faces = "".join(p.read_text() for p in (PKG / "_kernel").glob("*.pxd"))
    for name in ["c_dma_map_phys", "c_dma_unmap_phys", "c_dma_map_resource", "c_dma_unmap_resource",
                 "c_dma_map_sg_attrs", "c_dma_unmap_sg_attrs", "c_dma_sync_single_for_cpu",
                 "c_dma_sync_single_for_device", "c_dma_sync_sg_for_cpu", "c_dma_sync_sg_for_device",
                 "c_dma_iova_try_alloc", "c_dma_iova_link", "c_dma_iova_sync", "c_dma_iova_unlink",
                 "c_dma_iova_destroy", "c_dma_iova_free", "c_dma_mapping_error", "device_access",
                 "iommu_iova_to_phys_c"]:
        assert re.search(rf"^cdef \w[\w ]* {name}\(", faces, re.M), name


def test_every_c_field_is_commented():
    # a field of a cdef class or struct in a face says which kernel member it mirrors
    missing = []
    for p in (PKG / "_kernel").glob("*.pxd"):
        cls = None
        for line in p.read_text().splitlines():
            m = re.match(r"(?:cdef class|cdef struct) (\w+)", line)
            if m:
                cls = m.group(1)
            elif not line.startswith(" "):
                cls = None
            elif cls and "(" not in line and "#" not in line \
                    and re.match(r"    (cdef )?(public |readonly )?[\w\[\], *]+$", line.rstrip()):
                missing.append(f"{p.name}: {cls}: {line.strip()}")
    assert not missing, missing
