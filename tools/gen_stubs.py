"""Generate dmaphys/_core.pyi from the compiled module.

The extension is built with binding=True, so inspect.signature() sees every parameter. Types
come from the kernel naming conventions the API follows (a ``dev`` is a Device, ``phys`` /
``size`` / ``addr`` are ints, ``state`` is a DmaIovaState, ...); return types from the
kernel's return conventions. tests/test_stubs.py checks the stub stays in sync with
``_core.__all__`` and the signatures.

    python tools/gen_stubs.py            # rewrite dmaphys/_core.pyi
    python tools/gen_stubs.py --check    # exit 1 if it would change
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

PARAM_TYPES = {
    "dev": "Device", "client": "Device", "provider": "Device", "provider_dev": "Device",
    "client_dev": "Device", "m": "Machine", "machine": "Machine",
    "state": "DmaIovaState", "sg": "ScatterList", "sgt": "ScatterList", "sgl": "ScatterList",
    "domain": "IommuDomain", "iommu": "Iommu", "st": "PciP2PdmaMapState",
    "data": "Buffer", "buffer": "Buffer", "name": "str", "fmt": "str", "entries": "Iterable[tuple[int, int]]",
    "phys": "int", "sizes": "ArrayLike | int", "dma_addrs": "ArrayLike", "iovas": "ArrayLike",
    "addrs": "ArrayLike", "callback": "Callable[[], object]",
    # P2PDMA (p2pdma.pxi)
    "pdev": "Device", "clients": "Iterable[Device]",
    "parent": "PciHostBridge | PciSwitch | Device | str | None",
}
# per-function overrides where a parameter name means something else than in PARAM_TYPES
FUNC_PARAM_TYPES = {
    "dma_map_phys_batch": {"phys": "ArrayLike"},
    "pci_p2pdma_state": {"state": "PciP2PdmaMapState", "phys": "int"},
    "pci_p2pdma_map_type": {"provider": "P2PdmaProvider | PciP2PdmaPagemap | Device"},
    "pci_p2pdma_bus_addr_map": {"provider": "P2PdmaProvider | PciP2PdmaPagemap | PciP2PdmaMapState",
                                "phys": "int"},
    "pgmap_of": {"phys": "int"},
    "dma_iova_alloc_link_sync_batch": {"states": "Iterable[DmaIovaState]", "phys": "ArrayLike",
                                       "counts": "ArrayLike"},
    "dma_iova_destroy_batch": {"states": "Iterable[DmaIovaState]", "mapped_lens": "ArrayLike"},
    "sg_dma_is_bus_address": {"sg": "ScatterlistEntry"}, "sg_dma_is_swiotlb": {"sg": "ScatterlistEntry"},
    "register_notifier": {"callback": "Callable[[IommuDomain | None, int, int], object]"},
    "unregister_notifier": {"callback": "Callable[[IommuDomain | None, int, int], object]"},
    "pci_p2pdma_distance": {"provider": "Device | P2PdmaProvider | PciP2PdmaPagemap"},
    "pci_p2pdma_distance_many": {"provider": "Device | P2PdmaProvider | PciP2PdmaPagemap"},
}
# constructor parameters whose type the name and default do not tell
INIT_PARAM_TYPES = {
    ("Machine", "ram"): "Iterable[tuple[int, int]] | None",
    ("Machine", "swiotlb"): "int | str | bool | None",
    ("Machine", "swiotlb_nareas"): "int | None",
    ("Iommu", "iotlb"): "Iotlb | dict[str, Any] | str | bool | None",
    ("Iommu", "reserved_regions"): "Iterable[tuple[int, int, str | int]] | None",
    ("Iommu", "ias"): "int | None", ("Iommu", "oas"): "int | None", ("Iommu", "name"): "str | None",
    ("IoPgtable", "ias"): "int | None", ("IoPgtable", "oas"): "int | None",
    ("Iotlb", "entries"): "int",
    ("Device", "dma_mask"): "int | None", ("Device", "coherent_dma_mask"): "int | None",
    ("Device", "dma_range_map"): "Iterable[tuple[int, int, int]] | None",
    ("IovaDomain", "ncpus"): "int | None", ("IovaDomain", "machine"): "Machine | None",
}
BOOL_PARAMS = {"coherent", "force_bounce", "pci", "untrusted", "strict", "flush_rcache", "size_aligned",
               "enabled", "verbose", "p2p_allowlisted", "acs_redirect", "swiotlb_force", "dma_debug",
               "pages", "publish", "req_same_host_bridge", "allocatable", "write"}
BATCH_FUNCS = {"dma_map_phys_batch", "dma_mapping_error_batch", "iova_to_phys_batch", "dma_read_batch",
               "iommu_iova_to_phys_batch"}

RETURNS = {
    "flush_queues": "list[IovaFq]", "pci_32bit_workaround": "bool",
    "dma_iova_try_alloc": "bool", "dma_use_iova": "bool", "dma_need_sync": "bool",
    "dma_addressing_limited": "bool", "dma_need_unmap": "bool", "dma_supported": "bool",
    "is_swiotlb_active": "bool", "is_swiotlb_buffer": "bool", "is_swiotlb_force_bounce": "bool",
    "sg_dma_is_bus_address": "bool", "sg_dma_is_swiotlb": "bool",
    "dma_alloc_coherent": "tuple[int, int]", "mem_read": "bytes", "dma_read": "bytes",
    "get_state": "dict[str, Any]", "dump": "list[str]", "to_ftrace": "list[str]",
    "to_numpy": "np.ndarray", "ranges": "list[tuple[int, int]]",
    "regions_list": "list[tuple[int, int, str, str]]",
    "ext_ram_list": "list[tuple[int, int, str, bool]]", "Device.translate": "IOMMUTLBEntry",
    "find_iova": "tuple[int, int] | None", "reserve_iova": "tuple[int, int] | None",
    "pci_p2pmem_find": "Device | None", "pci_p2pmem_find_many": "Device | None",
    "pci_p2pmem_alloc_sgl": "ScatterList | None", "pgmap_of": "PciP2PdmaPagemap | None",
    "parent_of": "Any", "add_device": "Any",
    "pci_p2pdma_map_type": "PciP2PdmaMapType", "dma_segments": "list[tuple[int, int]]",
    "entries": "list[dict[str, Any]]", "ops_map_pages": "tuple[int, int]",
    "entries_list": "list[tuple[int, int, int, int]]",
    "dma_iova_alloc_link_sync_batch": "tuple[np.ndarray, np.ndarray]",
    "ScatterList.__getitem__": "ScatterlistEntry", "ScatterList.__iter__": "Iterator[ScatterlistEntry]",
}
# attributes whose sample value does not show the whole type (None in other states)
ATTR_TYPES = {
    ("Machine", "swiotlb"): "IoTlbMem | None", ("Device", "domain"): "IommuDomain | None",
    ("Device", "dma_io_tlb_mem"): "IoTlbMem | None", ("Device", "p2p_node"): "PciDev | None",
    ("Device", "dma_mask"): "int | None", ("Iommu", "iotlb"): "Iotlb | None",
    ("IommuDomain", "pgtable"): "IoPgtable | None", ("IommuDomain", "iova_cookie"): "IommuDmaCookie | None",
    ("IommuDmaCookie", "iovad"): "IovaDomain | None",
}
NONE_PREFIXES = ("dma_unmap_", "dma_sync_", "dma_iova_unlink", "dma_iova_destroy", "dma_iova_free",
                 "dma_free_", "swiotlb_sync_", "swiotlb_tbl_unmap", "mem_write", "dma_write", "free_",
                 "advance", "add_timer", "add_mmio", "add_ram", "remove_ram", "remove_device",
                 "register_notifier", "unregister_notifier",
                 "flush_warnings", "clear",
                 "put_iova_domain", "detach_device", "attach_device", "reset_", "pci_free_p2pmem",
                 "pci_p2pmem_publish", "pci_p2pmem_free_sgl", "check_parent")


def param_type(name: str, default) -> str:
    if name in PARAM_TYPES:
        return PARAM_TYPES[name]
    if name in BOOL_PARAMS:
        return "bool"
    if name.endswith("_map") or name in ("ram",):
        return "Any"
    if default is not inspect.Parameter.empty and isinstance(default, str):
        return "str"
    return "int"


def return_type(name: str, owner: str = "") -> str:
    if f"{owner}.{name}" in RETURNS:                # a method whose name means something else elsewhere
        return RETURNS[f"{owner}.{name}"]
    if name in RETURNS:
        return RETURNS[name]
    if name.startswith(NONE_PREFIXES):          # before the batch rule: dma_unmap_phys_batch, dma_write_batch
        return "None"
    if name in BATCH_FUNCS or name.endswith("_batch"):
        return "np.ndarray"
    return "Any" if name.startswith(("add_", "domain_alloc", "iommu_domain_alloc")) else "int"


def fmt_sig(name: str, fn, method: bool, owner: str = "") -> str:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return f"def {name}(*args: Any, **kwargs: Any) -> Any: ..."
    parts = []
    star_done = False
    for i, p in enumerate(sig.parameters.values()):
        if method and i == 0:
            parts.append("self")
            continue
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}: Any")
            star_done = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}: Any")
            continue
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        t = FUNC_PARAM_TYPES.get(name, {}).get(p.name) or param_type(p.name, p.default)
        if p.default is inspect.Parameter.empty:
            parts.append(f"{p.name}: {t}")
        else:
            if p.default is None and "None" not in t:
                t = f"{t} | None"
            parts.append(f"{p.name}: {t} = ...")
    return f"def {name}({', '.join(parts)}) -> {return_type(name, owner)}: ..."


def sample_instances(core) -> dict:
    """Live objects of each public class, to read attribute types from."""
    m = core.Machine(cpus=2)
    iommu = m.add_iommu(fmt="x86-64", strict=False)
    dev = m.add_device("d", iommu=iommu)
    hb = m.add_host_bridge("hb", p2p_allowlisted=True)
    sw = m.add_switch("sw", parent=hb)
    gpu = m.add_device("gpu", parent=sw)
    pg = m.add_p2pmem(gpu, 0x38_0000_0000, 1 << 20)
    sgl = core.ScatterList([(0x1000, 512)])
    out = {"Machine": m, "Device": dev, "IoTlbMem": m.swiotlb, "Iommu": iommu, "IommuDomain": dev.domain,
           "IoPgtable": dev.domain.pgtable, "Iotlb": iommu.iotlb, "DmaDebug": m.dma_debug,
           "DmaTrace": m.trace, "PhysMem": m.mem, "ScatterList": sgl, "ScatterlistEntry": sgl[0],
           "DmaIovaState": core.DmaIovaState(), "PciP2PdmaMapState": core.PciP2PdmaMapState(),
           "P2PTopology": m.p2pdma, "IommuDmaCookie": dev.domain.iova_cookie,
           "PciHostBridge": hb, "PciSwitch": sw, "P2PdmaProvider": pg,
           "IOMMUTLBEntry": core.IOMMUTLBEntry(0x1000, 0x1000, 0xFFF, 3)}
    cookie = dev.domain.iova_cookie
    for attr in ("iovad",):
        if hasattr(cookie, attr):
            out["IovaDomain"] = getattr(cookie, attr)
    return out


def type_name(v) -> str:
    if v is None:
        return "Any | None"
    t = type(v)
    if t in (bool, int, str, float, bytes):
        return t.__name__
    if t in (list, tuple, dict, set):
        return f"{t.__name__}[Any]" if t is not dict else "dict[str, Any]"
    mod = getattr(t, "__module__", "")
    if mod.startswith("dmaphys"):
        return t.__name__
    if mod == "numpy":
        return "np.ndarray"
    return "Any"


KERNEL_DIR = Path(__file__).resolve().parent.parent / "dmaphys" / "_kernel"


def cinit_args(cls_name: str) -> str | None:
    """The parameters of ``def __cinit__(self, ...)`` in the class body of the .pxi sources.

    Classes initialised in __cinit__ (so ``T.__new__(T)`` is never half-made) have no
    embedded __init__ signature; their constructor signature is the __cinit__ one.
    """
    for path in sorted(KERNEL_DIR.glob("*.pxi")):
        src = path.read_text()
        m = re.search(rf"^cdef class {cls_name}\b.*?:\n(.*?)(?=^\S)", src, re.M | re.S)
        if not m:
            continue
        c = re.search(r"def __cinit__\(self,?(.*?)\):", m.group(1), re.S)
        if c is None:
            return None
        args = " ".join(c.group(1).split())
        return None if args.startswith("*args") else re.sub(r"\s+not None", "", args)
    return None


def init_stub(cls) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    m = re.match(rf"{cls.__name__}\((.*)\)$", doc[0].strip()) if doc else None
    args = m.group(1) if m else cinit_args(cls.__name__)
    if not args or args in ("*args, **kwargs", ""):
        return "    def __init__(self, *args: Any, **kwargs: Any) -> None: ..."
    parts = ["self"]
    for raw in args.split(","):
        raw = raw.strip()
        if raw in ("*", "/") or raw.startswith("*"):
            parts.append(raw if raw in ("*", "/") else f"{raw}: Any")
            continue
        name, has_default, default = raw.partition("=")
        default = default.strip()
        bits = name.split()
        pname = bits[-1]
        ctype = bits[0] if len(bits) == 2 else None
        if ctype in ("Py_ssize_t", "int", "long", "u64", "bint"):
            ctype = "bool" if ctype == "bint" else "int"
        if (cls.__name__, pname) in INIT_PARAM_TYPES:
            t = INIT_PARAM_TYPES[cls.__name__, pname]
        elif ctype and (ctype[0].isupper() or ctype in ("int", "bool", "str")):
            t = ctype
        elif pname in PARAM_TYPES or pname in BOOL_PARAMS:
            t = param_type(pname, inspect.Parameter.empty)
        elif default in ("True", "False"):
            t = "bool"
        elif default and default[0] in "\"'":
            t = "str"
        elif default == "None":
            t = "Any"
        else:                                    # digits or a constant's name
            t = "int"
        if default == "None" and "None" not in t and t != "Any":
            t = f"{t} | None"
        parts.append(f"{pname}: {t}" + (" = ..." if has_default else ""))
    return f"    def __init__({', '.join(parts)}) -> None: ..."


def class_stub(cls, inst) -> list[str]:
    lines = [f"class {cls.__name__}:"]
    doc = [d for d in (cls.__doc__ or "").strip().splitlines() if d.strip()]
    if len(doc) > 1 and doc[0].startswith(cls.__name__ + "("):
        doc = doc[1:]
    if doc:
        lines.append(f'    """{doc[0].strip().replace(chr(34) * 3, "")}"""')
    lines.append(init_stub(cls))
    for attr, val in sorted(vars(cls).items()):
        if attr.startswith("_") and attr not in ("__len__", "__getitem__", "__iter__"):
            continue
        kind = type(val).__name__
        if kind in ("getset_descriptor", "member_descriptor", "property"):
            t = ATTR_TYPES.get((cls.__name__, attr), "Any")
            if inst is not None and (cls.__name__, attr) not in ATTR_TYPES:
                try:
                    t = type_name(getattr(inst, attr))
                except Exception:
                    t = "Any"
            lines.append(f"    {attr}: {t}")
        elif callable(val) and not isinstance(val, (staticmethod, classmethod)):
            lines.append("    " + fmt_sig(attr, val, method=True, owner=cls.__name__))
    return lines


def generate() -> str:
    import dmaphys._core as core

    out = ['"""Type stubs for dmaphys._core (generated by tools/gen_stubs.py; see docs/ARCHITECTURE.md)."""',
           "", "from collections.abc import Buffer, Callable, Iterable, Iterator  # noqa: F401",
           "from typing import Any", "",
           "import numpy as np", "from numpy.typing import ArrayLike", "",
           "from .constants import PciP2PdmaMapType  # noqa: F401", "", "__all__: list[str]", ""]
    samples = sample_instances(core)
    classes = []
    funcs = []
    for name in sorted(core.__all__):
        obj = getattr(core, name)
        if inspect.isclass(obj):
            classes.append(obj)
        elif callable(obj):
            funcs.append((name, obj))
        else:
            out.append(f"{name}: {type_name(obj)}")
    out.append("")
    for cls in classes:
        out += class_stub(cls, samples.get(cls.__name__))
        out.append("")
    for name, fn in funcs:
        out.append(fmt_sig(name, fn, method=False))
    text = "\n".join(out).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def generate_init() -> str:
    """dmaphys/__init__.pyi: the package namespace as type checkers must see it.

    __init__.py fills its namespace from the selected backend at run time (globals().update), which
    no type checker follows; the stub re-exports every name explicitly (``import X as X``)."""
    import dmaphys._core as core
    from dmaphys import constants, errors

    out = ['"""Type stub of the dmaphys package namespace (generated by tools/gen_stubs.py)."""', "",
           "from ._version import __version__ as __version__"]
    modules = ((".constants", constants.__all__), (".errors", errors.__all__), ("._core", core.__all__))
    for mod, names in modules:
        for name in sorted(names):
            out.append(f"from {mod} import {name} as {name}")
    out.append("from .trace_replay import replay as replay")
    out += ["", "BACKEND: str", "__all__: list[str]", "", "def get_include() -> str: ...", ""]
    return "\n".join(out)


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "dmaphys"
    files = {root / "_core.pyi": generate(), root / "__init__.pyi": generate_init()}
    if "--check" in sys.argv:
        return 0 if all(p.exists() and p.read_text() == t for p, t in files.items()) else 1
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
