"""Reference model of drivers/pci/p2pdma.c and include/linux/pci-p2pdma.h (mirrors _kernel/p2pdma.pxi).

The PCI hierarchy as P2PDMA walks it (host bridges, Root Ports, switch Upstream/Downstream
Ports with ACS redirect), P2P providers (per-BAR bus_offset, pagemaps), the map-type
calculation calc_map_type_and_dist() with its per-client cache, pci_p2pdma_distance_many(),
pci_p2pdma_state(), pci_p2pdma_bus_addr_map(), and the switch routing of device accesses to
a peer BAR (p2p_bus_to_phys).
"""

from __future__ import annotations

import logging
import random

from ..constants import PciP2PdmaMapType
from ..errors import KernelBug, KernelWarning
from ._util import U64_MAX, typed, u64
from .memory import PAGE_SHIFT, PAGE_SIZE, REGION_MMIO
from .scatterlist import ScatterList

__all__ = ["P2PTopology", "PciHostBridge", "PciSwitch", "PciDev", "PciP2Pdma", "P2PdmaProvider",
           "PciP2PdmaPagemap", "PciP2PdmaMapState", "pci_p2pdma_map_type", "pci_p2pdma_state",
           "pci_p2pdma_bus_addr_map", "pci_p2pdma_distance", "pci_p2pdma_distance_many",
           "pci_alloc_p2pmem", "pci_free_p2pmem", "pci_p2pmem_virt_to_bus", "pci_p2pmem_publish",
           "pci_p2pmem_find", "pci_p2pmem_find_many", "pci_p2pmem_alloc_sgl", "pci_p2pmem_free_sgl"]

_log = logging.getLogger("dmaphys")

PCI_P2PDMA_MAP_UNKNOWN = 0
PCI_P2PDMA_MAP_NONE = 1
PCI_P2PDMA_MAP_NOT_SUPPORTED = 2
PCI_P2PDMA_MAP_BUS_ADDR = 3
PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 4
PCI_STD_NUM_BARS = 6

ROOT_PORT, UPSTREAM_PORT, DOWNSTREAM_PORT, ENDPOINT = 1, 2, 3, 4
_KIND_NAMES = {ROOT_PORT: "root-port", UPSTREAM_PORT: "upstream-port",
               DOWNSTREAM_PORT: "downstream-port", ENDPOINT: "endpoint"}

# IDs of the host bridge's 00.0 device as __host_bridge_whitelist() sees them.
_HB_ID_ALLOWLISTED = (0x8086, 0x2020)      # Skylake-E: listed, no flags
_HB_ID_REQ_SAME = (0x8086, 0x3C00)         # Xeon E5: listed, REQ_SAME_HOST_BRIDGE
_HB_ID_NOT_LISTED = (0x8086, 0x1237)       # i440FX: not listed


def _device_cls():
    from .machine import Device
    return Device


class PciHostBridge:
    """struct pci_host_bridge with its root bus (see the core's docstring).

    Reference twin of dmaphys._core.PciHostBridge: same returns and raises.
    """

    def __init__(self, topology: P2PTopology, name: str, domain: int, allowlisted: bool, req_same: bool):
        self.topology = topology
        self.name = name
        self.domain = domain
        self.p2p_allowlisted = allowlisted
        self.req_same_host_bridge = req_same and allowlisted
        if not allowlisted:
            self.vendor, self.device = _HB_ID_NOT_LISTED
        elif req_same:
            self.vendor, self.device = _HB_ID_REQ_SAME
        else:
            self.vendor, self.device = _HB_ID_ALLOWLISTED
        self.children: list[PciDev] = []
        self.next_bus = 1
        self.next_root_slot = 1

    @property
    def pci_name(self) -> str:
        """Reference twin of dmaphys._core.PciHostBridge.pci_name."""
        return f"{self.domain:04x}:00:00.0"

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.PciHostBridge {self.name!r} domain={self.domain:04x} "
                f"allowlisted={self.p2p_allowlisted}>")


class PciSwitch:
    """A PCIe switch: Upstream Port + one Downstream Port per child; ACS redirect on the DSPs.

    Reference twin of dmaphys._core.PciSwitch: same returns and raises.
    """

    def __init__(self, topology, name, parent, acs_redirect, host_bridge, upstream_port, internal_bus):
        self.topology = topology
        self.name = name
        self.parent = parent
        self.acs_redirect = acs_redirect
        self.host_bridge = host_bridge
        self.upstream_port = upstream_port
        self.children: list[PciDev] = []
        self.internal_bus = internal_bus
        self.next_dsp_slot = 0

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.PciSwitch {self.name!r} usp={self.upstream_port.pci_name} "
                f"acs_redirect={self.acs_redirect}>")


class PciDev:
    """struct pci_dev in the hierarchy (Root Port, switch port or endpoint).

    Reference twin of dmaphys._core.PciDev: same returns and raises.
    """

    def __init__(self, kind, upstream, host_bridge, bus, devfn, acs_redir, device, switch):
        self.kind = kind
        self.upstream = upstream                  # pci_upstream_bridge()
        self.host_bridge = host_bridge
        self.bus = bus
        self.devfn = devfn
        self.acs_redir = acs_redir                # pci_bridge_has_acs_redir()
        self.device = device
        self.switch = switch
        self.secondary_bus = -1
        self.p2pdma: PciP2Pdma | None = None      # pdev->p2pdma
        self.map_types_idx = (host_bridge.domain << 16) | (bus << 8) | devfn

    @property
    def kind_name(self) -> str:
        """Reference twin of dmaphys._core.PciDev.kind_name."""
        return _KIND_NAMES[self.kind]

    @property
    def domain(self) -> int:
        """Reference twin of dmaphys._core.PciDev.domain."""
        return self.host_bridge.domain

    @property
    def pci_name(self) -> str:
        """Reference twin of dmaphys._core.PciDev.pci_name."""
        return f"{self.host_bridge.domain:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"

    def __repr__(self) -> str:
        name = f" {self.device.name!r}" if self.device is not None else ""
        return f"<dmaphys.reference.PciDev {self.pci_name} {self.kind_name}{name}>"


class PciP2Pdma:
    """struct pci_p2pdma: per-BAR providers, pagemaps and the map-type cache (xarray).

    Reference twin of dmaphys._core.PciP2Pdma: same returns and raises.
    """

    def __init__(self, pdev: PciDev) -> None:
        self.pdev = pdev
        self.providers: list[P2PdmaProvider] = []
        self.pagemaps: list[PciP2PdmaPagemap] = []
        self.p2pmem_published = False
        self._chunks: list[list] = []             # gen_pool chunks, newest first
        self._map_types: dict[int, int] = {}

    @property
    def size(self) -> int:
        """Reference twin of dmaphys._core.PciP2Pdma.size."""
        return sum(c[2] for c in self._chunks)

    @property
    def available(self) -> int:
        """Reference twin of dmaphys._core.PciP2Pdma.available."""
        return sum(c[3] for c in self._chunks)

    @property
    def map_types(self) -> dict:
        """Reference twin of dmaphys._core.PciP2Pdma.map_types."""
        return {k: PciP2PdmaMapType(v) for k, v in self._map_types.items()}

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.PciP2Pdma {self.pdev.pci_name} bars={len(self.providers)} "
                f"cached={len(self._map_types)}>")


class P2PdmaProvider:
    """struct p2pdma_provider: one BAR (owner, bus_offset) and its CPU range.

    Reference twin of dmaphys._core.P2PdmaProvider: same returns and raises.
    """

    def __init__(self, owner, bus_offset, bar, bar_start, bar_size, p2pdma) -> None:
        self.owner = owner
        self.bus_offset = bus_offset
        self.bar = bar
        self.bar_start = bar_start
        self.bar_size = bar_size
        self.p2pdma = p2pdma

    @property
    def bus_start(self) -> int:
        """Reference twin of dmaphys._core.P2PdmaProvider.bus_start."""
        return (self.bar_start + self.bus_offset) & U64_MAX

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.P2PdmaProvider {self.owner.name!r} bar{self.bar} "
                f"{self.bar_start:#x}+{self.bar_size:#x} bus_offset={self.bus_offset:#x}>")


class PciP2PdmaPagemap:
    """struct pci_p2pdma_pagemap: published P2P memory (pgmap range + mem).

    Reference twin of dmaphys._core.PciP2PdmaPagemap: same returns and raises.
    """

    def __init__(self, mem: P2PdmaProvider, cpu_phys: int, size: int) -> None:
        self.mem = mem
        self.cpu_phys = cpu_phys
        self.size = size

    @property
    def provider(self):
        """Reference twin of dmaphys._core.PciP2PdmaPagemap.provider."""
        return self.mem.owner

    @property
    def bus_offset(self) -> int:
        """Reference twin of dmaphys._core.PciP2PdmaPagemap.bus_offset."""
        return self.mem.bus_offset

    @property
    def bus_addr(self) -> int:
        """Reference twin of dmaphys._core.PciP2PdmaPagemap.bus_addr."""
        return (self.cpu_phys + self.mem.bus_offset) & U64_MAX

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.PciP2PdmaPagemap {self.mem.owner.name!r} {self.cpu_phys:#x}+"
                f"{self.size:#x} bus_offset={self.mem.bus_offset:#x}>")


class P2PTopology:
    """The PCI hierarchy and P2PDMA providers of a Machine (``m.p2pdma``).

    Reference twin of dmaphys._core.P2PTopology: same returns and raises.
    """

    def __init__(self, machine) -> None:
        self.machine = machine
        self.host_bridges: dict[str, PciHostBridge] = {}
        self.switches: dict[str, PciSwitch] = {}
        self.default_host_bridge: PciHostBridge | None = None
        self.cpu_supports_p2pdma = False
        self.rng = random.Random(0)
        self._parents: dict = {}                  # non-PCI Device -> parent Device
        self._bar_list: list[P2PdmaProvider] = []
        self._pgmap_list: list[PciP2PdmaPagemap] = []

    @property
    def pagemaps(self) -> list:
        """Reference twin of dmaphys._core.P2PTopology.pagemaps."""
        return list(self._pgmap_list)

    @property
    def providers(self) -> list:
        """Reference twin of dmaphys._core.P2PTopology.providers."""
        return list(self._bar_list)

    def __repr__(self) -> str:
        return (f"<dmaphys.reference.P2PTopology host_bridges={len(self.host_bridges)} "
                f"switches={len(self.switches)} pagemaps={len(self._pgmap_list)}>")

    # ---- hierarchy -----------------------------------------------------------------------
    def _check_new_name(self, name) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a host bridge or switch name must be a non-empty str, not {name!r}")
        if name in self.host_bridges or name in self.switches:
            raise ValueError(f"a host bridge or switch named {name!r} exists already")

    def _new_host_bridge(self, name, allowlisted, req_same) -> PciHostBridge:
        domain = len(self.host_bridges)
        if domain > 0xFFFF:
            raise ValueError("no free PCI domain number")
        hb = PciHostBridge(self, name, domain, allowlisted, req_same)
        self.host_bridges[name] = hb
        return hb

    def add_host_bridge(self, name, p2p_allowlisted=False, *, req_same_host_bridge=False):
        """Reference twin of dmaphys._core.P2PTopology.add_host_bridge: same returns and raises."""
        self._check_new_name(name)
        return self._new_host_bridge(name, bool(p2p_allowlisted), bool(req_same_host_bridge))

    def _get_default_host_bridge(self) -> PciHostBridge:
        if self.default_host_bridge is None:
            name = f"pci{len(self.host_bridges):04x}:00"
            while name in self.host_bridges or name in self.switches:
                name += "'"
            self.default_host_bridge = self._new_host_bridge(name, False, False)
        return self.default_host_bridge

    def _resolve_parent(self, parent):
        Device = _device_cls()
        if isinstance(parent, str):
            if parent in self.host_bridges:
                return self.host_bridges[parent]
            if parent in self.switches:
                return self.switches[parent]
            if parent in self.machine.devices:
                return self.machine.devices[parent]
            raise ValueError(f"unknown parent {parent!r}: no host bridge, switch or device of that name")
        if isinstance(parent, (PciHostBridge, PciSwitch)):
            if parent.topology is not self:
                raise ValueError(f"parent {parent.name!r} belongs to another machine")
            return parent
        if isinstance(parent, Device):
            if parent.machine is not self.machine or self.machine.devices.get(parent.name) is not parent:
                raise ValueError(f"parent device {parent.name!r} is not a device of this machine")
            return parent
        raise TypeError("parent must be a PciHostBridge, PciSwitch, Device or name, "
                        f"not {type(parent).__name__}")

    def _check_ports(self, parent) -> None:
        if isinstance(parent, PciHostBridge):
            if parent.next_root_slot > 31:
                raise ValueError(f"host bridge {parent.name!r}: no free Root Port slot on its root bus")
            if parent.next_bus > 255:
                raise ValueError(f"host bridge {parent.name!r}: no free bus number")
        elif isinstance(parent, PciSwitch):
            if parent.next_dsp_slot > 31:
                raise ValueError(f"switch {parent.name!r}: no free Downstream Port (32 used)")
            if parent.host_bridge.next_bus > 255:
                raise ValueError(f"host bridge {parent.host_bridge.name!r}: no free bus number")

    def _new_port(self, parent) -> PciDev:
        if isinstance(parent, PciHostBridge):
            hb = parent
            port = PciDev(ROOT_PORT, None, hb, 0, hb.next_root_slot << 3, False, None, None)
            hb.next_root_slot += 1
            hb.children.append(port)
        else:
            hb = parent.host_bridge
            port = PciDev(DOWNSTREAM_PORT, parent.upstream_port, hb, parent.internal_bus,
                          parent.next_dsp_slot << 3, parent.acs_redirect, None, parent)
            parent.next_dsp_slot += 1
            parent.children.append(port)
        port.secondary_bus = hb.next_bus
        hb.next_bus += 1
        return port

    def add_switch(self, name, parent=None, acs_redirect=False):
        """Reference twin of dmaphys._core.P2PTopology.add_switch: same returns and raises."""
        self._check_new_name(name)
        if parent is not None:
            parent = self._resolve_parent(parent)
            if not isinstance(parent, (PciHostBridge, PciSwitch)):
                raise ValueError("a switch's parent must be a host bridge or a switch")
        self._check_ports(parent if parent is not None else self.default_host_bridge)
        if parent is None:
            parent = self._get_default_host_bridge()
        hb = parent if isinstance(parent, PciHostBridge) else parent.host_bridge
        if hb.next_bus + 1 > 255:
            raise ValueError(f"host bridge {hb.name!r}: no free bus number")
        port = self._new_port(parent)
        usp = PciDev(UPSTREAM_PORT, port, hb, port.secondary_bus, 0, False, None, None)
        sw = PciSwitch(self, name, parent, bool(acs_redirect), hb, usp, hb.next_bus)
        usp.switch = sw
        usp.secondary_bus = sw.internal_bus
        hb.next_bus += 1
        self.switches[name] = sw
        return sw

    def check_parent(self, parent, pci) -> None:
        """Reference twin of dmaphys._core.P2PTopology.check_parent: same returns and raises."""
        Device = _device_cls()
        if parent is None:
            if pci:
                self._check_ports(self.default_host_bridge)
            return
        parent = self._resolve_parent(parent)
        if isinstance(parent, Device):
            if pci:
                raise ValueError("a PCI device's parent must be a host bridge or a switch "
                                 "(its upstream bridge), not a device")
        elif not pci:
            raise ValueError("a non-PCI device is not on a PCI bus: its parent can only be a device")
        else:
            self._check_ports(parent)

    def add_device(self, dev, parent):
        """Reference twin of dmaphys._core.P2PTopology.add_device: same returns and raises."""
        typed(dev, _device_cls(), "dev")
        self.check_parent(parent, dev.pci)
        if parent is not None:
            parent = self._resolve_parent(parent)
        if not dev.pci:
            dev.p2p_node = None
            if parent is not None:
                self._parents[dev] = parent
            return None
        if parent is None:
            parent = self._get_default_host_bridge()
        port = self._new_port(parent)
        dev.p2p_node = PciDev(ENDPOINT, port, port.host_bridge, port.secondary_bus, 0, False, dev, None)
        return dev.p2p_node

    def parent_of(self, dev):
        """Reference twin of dmaphys._core.P2PTopology.parent_of: same returns and raises."""
        typed(dev, _device_cls(), "dev")
        if dev.p2p_node is not None:
            return dev.p2p_node.upstream
        return self._parents.get(dev)

    def remove_device(self, dev) -> None:
        """pci_p2pdma_release() for a provider; see the core's docstring.

        Reference twin of dmaphys._core.P2PTopology.remove_device: same returns and raises.
        """
        typed(dev, _device_cls(), "dev")
        for child, parent in self._parents.items():
            if parent is dev:
                raise ValueError(f"{dev.name!r} still has the child device {child.name!r}: remove it first")
        self._parents.pop(dev, None)
        node = dev.p2p_node
        if node is None or node.p2pdma is None:
            return
        self._bar_list = [b for b in self._bar_list if b.owner is not dev]
        self._pgmap_list = [g for g in self._pgmap_list if g.mem.owner is not dev]
        node.p2pdma = None

    # ---- providers -----------------------------------------------------------------------
    def add_p2pmem(self, provider, cpu_phys, size, bus_addr=None, *, pages=True):
        """Reference twin of dmaphys._core.P2PTopology.add_p2pmem: same returns and raises."""
        Device = _device_cls()
        if not isinstance(provider, Device):
            raise TypeError(f"provider must be a Device, not {type(provider).__name__}")
        d = provider
        if d.machine is not self.machine or self.machine.devices.get(d.name) is not d:
            raise ValueError(f"provider {d.name!r} is not a device of this machine")
        if not d.pci or d.p2p_node is None:
            raise ValueError(f"provider {d.name!r} is not a PCI device: it has no BARs to publish")
        node = d.p2p_node
        pm = self.machine.mem
        cpu = u64(cpu_phys, "cpu_phys")
        n = u64(size, "size")
        bus = cpu if bus_addr is None else u64(bus_addr, "bus_addr")
        if n == 0 or cpu % PAGE_SIZE or n % PAGE_SIZE or bus % PAGE_SIZE:
            raise ValueError(f"p2pmem {cpu:#x}+{n:#x} (bus {bus:#x}): addresses and size must be "
                             "page aligned and the size non-zero")
        if cpu + n > U64_MAX or bus + n > U64_MAX:
            raise ValueError(f"p2pmem {cpu:#x}+{n:#x} (bus {bus:#x}) wraps the address space")
        off = (bus - cpu) & U64_MAX              # pcim_p2pdma_init()'s u64 subtraction
        for pg in self._pgmap_list if pages else ():
            if cpu < pg.cpu_phys + pg.size and pg.cpu_phys < cpu + n:
                raise ValueError(f"p2pmem {cpu:#x}+{n:#x} overlaps the P2P memory {pg.cpu_phys:#x}+"
                                 f"{pg.size:#x} of {pg.mem.owner.name!r}")
        mem = None
        ri = pm.find_region(cpu, n)
        if ri >= 0:
            start, end, kind, _ = pm.regions[ri]
            if kind != REGION_MMIO:
                raise ValueError(f"p2pmem {cpu:#x}+{n:#x} is RAM, not a BAR: P2P memory is MMIO")
            bar_start, bar_size = start, end - start
            for other in self._bar_list:
                if other.bar_start == bar_start:
                    if other.owner is not d:
                        raise ValueError(f"{bar_start:#x}+{bar_size:#x} is a BAR of {other.owner.name!r}, "
                                         f"not of {d.name!r}")
                    if other.bus_offset != off:
                        raise ValueError(f"BAR{other.bar} of {d.name!r} has bus_offset "
                                         f"{other.bus_offset:#x}; bus_addr {bus:#x} would make it {off:#x}")
                    mem = other
                    break
        else:
            for start, end, _, rname in pm.regions:
                if cpu < end and start < cpu + n:
                    raise ValueError(f"p2pmem {cpu:#x}+{n:#x} straddles region {rname!r}: "
                                     "it must lie in one BAR")
            bar_start, bar_size = cpu, n
        p2p = node.p2pdma
        if mem is None:
            if p2p is not None and len(p2p.providers) >= PCI_STD_NUM_BARS:
                raise ValueError(f"{d.name!r} has all {PCI_STD_NUM_BARS} BARs in use already")
            w_start = (bar_start + off) & U64_MAX
            if w_start + bar_size > U64_MAX:
                raise ValueError(f"the bus window of BAR {bar_start:#x}+{bar_size:#x} wraps the "
                                 "address space")
            for other in self._bar_list:
                o_start = other.bus_start
                if other.owner.p2p_node.host_bridge.domain == node.host_bridge.domain and \
                        w_start < o_start + other.bar_size and o_start < w_start + bar_size:
                    raise ValueError(f"bus window {w_start:#x}+{bar_size:#x} overlaps the bus window of "
                                     f"BAR{other.bar} of {other.owner.name!r} in PCI domain "
                                     f"{node.host_bridge.domain:04x}")
        # all checks done
        if ri < 0:
            nbar = 0 if p2p is None else len(p2p.providers)
            pm.add_region(bar_start, bar_size, REGION_MMIO, f"{d.name} BAR{nbar}")
        if p2p is None:                          # pcim_p2pdma_init()
            p2p = node.p2pdma = PciP2Pdma(node)
        if mem is None:
            mem = P2PdmaProvider(d, off, len(p2p.providers), bar_start, bar_size, p2p)
            p2p.providers.append(mem)
            self._bar_list.append(mem)
        if not pages:                            # pcim_p2pdma_provider(): no pagemap, no pool
            return mem
        pg = PciP2PdmaPagemap(mem, cpu, n)
        p2p.pagemaps.append(pg)
        p2p._chunks.insert(0, [cpu, (cpu + off) & U64_MAX, n, n, bytearray(n >> PAGE_SHIFT)])
        self._pgmap_list.append(pg)
        _log.info("%s %s: added peer-to-peer DMA memory %#x-%#x", d.name, node.pci_name, cpu, cpu + n - 1)
        return pg

    def find_pgmap(self, phys: int):
        """is_pci_p2pdma_page(): the pagemap holding phys, or None.

        Models include/linux/memremap.h:is_pci_p2pdma_page() without argument checks. Returns
        the PciP2PdmaPagemap or None. Raises nothing.
        """
        for pg in self._pgmap_list:
            if pg.cpu_phys <= phys < pg.cpu_phys + pg.size:
                return pg
        return None

    def pgmap_of(self, phys):
        """Reference twin of dmaphys._core.P2PTopology.pgmap_of: same returns and raises."""
        return self.find_pgmap(u64(phys, "phys"))


# ---- calc_map_type_and_dist() ------------------------------------------------------------------

def _dev_prefix(n: PciDev) -> str:
    if n.device is not None:
        return f"{n.device.name} {n.pci_name}: "
    return f"pcieport {n.pci_name}: "


def _pci_walk_common(provider: PciDev, client: PciDev, acs_list: list | None):
    """The walk of calc_map_type_and_dist(): (common, dist, acs_cnt)."""
    acs_cnt = 0
    dist_a = dist_b = 0
    a = provider
    found = False
    while a is not None:
        dist_b = 0
        if a.acs_redir:
            if acs_list is not None:
                acs_list.append(a.pci_name)
            acs_cnt += 1
        bb = client
        while bb is not None:
            if a is bb:
                found = True
                break
            bb = bb.upstream
            dist_b += 1
        if found:
            break
        a = a.upstream
        dist_a += 1
    dist = dist_a + dist_b
    if not found:
        return False, dist, acs_cnt
    bb = client                                  # check_b_path_acs
    while bb is not None and bb is not a:
        if bb.acs_redir:
            if acs_list is not None:
                acs_list.append(bb.pci_name)
            acs_cnt += 1
        bb = bb.upstream
    return True, dist, acs_cnt


def _host_bridge_allowed(m, host: PciHostBridge, same: bool, warn: bool) -> bool:
    """__host_bridge_whitelist()."""
    if host.p2p_allowlisted:
        return not (host.req_same_host_bridge and not same)
    if warn:
        m.kwarn(KernelWarning, f"pci {host.pci_name}: Host bridge not in P2PDMA whitelist: "
                               f"{host.vendor:04x}:{host.device:04x}")
    return False


def host_bridge_whitelist(m, a: PciDev, b: PciDev, warn: bool) -> bool:
    if a.host_bridge is b.host_bridge:
        return _host_bridge_allowed(m, a.host_bridge, True, warn)
    return (_host_bridge_allowed(m, a.host_bridge, False, warn) and
            _host_bridge_allowed(m, b.host_bridge, False, warn))


def calc_map_type_and_dist(provider: PciDev, client: PciDev, verbose: bool):
    """calc_map_type_and_dist() -> (map_type, dist); stores the type in the provider's cache."""
    topo = provider.host_bridge.topology
    m = topo.machine
    map_type = PCI_P2PDMA_MAP_THRU_HOST_BRIDGE
    acs_list: list | None = [] if verbose else None
    common, dist, acs_cnt = _pci_walk_common(provider, client, acs_list)
    if common and acs_cnt == 0:
        map_type = PCI_P2PDMA_MAP_BUS_ADDR
    else:
        if common and verbose:
            m.kwarn(KernelWarning, f"{_dev_prefix(client)}ACS redirect is set between the client and "
                                   f"provider ({provider.pci_name})")
            m.kwarn(KernelWarning, f"{_dev_prefix(client)}to disable ACS redirect for this path, add the "
                                   f"kernel parameter: pci=disable_acs_redir={';'.join(acs_list)}")
        if not topo.cpu_supports_p2pdma and not host_bridge_whitelist(m, provider, client, verbose):
            if verbose:
                m.kwarn(KernelWarning, f"{_dev_prefix(client)}cannot be used for peer-to-peer DMA as the "
                                       f"client and provider ({provider.pci_name}) do not share an upstream "
                                       f"bridge or whitelisted host bridge")
            map_type = PCI_P2PDMA_MAP_NOT_SUPPORTED
    if provider.p2pdma is not None:
        provider.p2pdma._map_types[client.map_types_idx] = map_type
    return map_type, dist


def pci_p2pdma_map_type_c(mem: P2PdmaProvider, dev) -> int:
    """pci_p2pdma_map_type() on a provider (no warning flush)."""
    pdev = mem.owner.p2p_node
    if pdev is None or pdev.p2pdma is None:
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    if not dev.pci or dev.p2p_node is None:
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    client = dev.p2p_node
    t = pdev.p2pdma._map_types.get(client.map_types_idx, PCI_P2PDMA_MAP_UNKNOWN)
    if t != PCI_P2PDMA_MAP_UNKNOWN:
        return t
    return calc_map_type_and_dist(pdev, client, True)[0]


# ---- hooks -------------------------------------------------------------------------------------

def p2pdma_state(dev, phys: int, size: int) -> tuple[int, int]:
    """Twin of the core's p2pdma_state_c: (map type, bus address or 0)."""
    pg = dev.machine.p2pdma.find_pgmap(phys)
    if pg is None:
        return PCI_P2PDMA_MAP_NONE, 0
    t = pci_p2pdma_map_type_c(pg.mem, dev)
    if t == PCI_P2PDMA_MAP_BUS_ADDR:
        return t, (phys + pg.mem.bus_offset) & U64_MAX
    return t, 0


def p2p_bus_to_phys(dev, bus_addr: int, n: int) -> int:
    """CPU physical address behind a peer BAR's bus window reachable through a switch, or U64_MAX."""
    topo = dev.machine.p2pdma
    if not topo._bar_list or dev.p2p_node is None:
        return U64_MAX
    client = dev.p2p_node
    for mem in topo._bar_list:
        prov = mem.owner.p2p_node
        if prov.host_bridge.domain != client.host_bridge.domain:
            continue
        if 0 <= bus_addr - mem.bus_start < mem.bar_size:
            common, _, acs_cnt = _pci_walk_common(prov, client, None)
            if common and acs_cnt == 0:
                return (bus_addr - mem.bus_offset) & U64_MAX
            return U64_MAX
    return U64_MAX


# ---- Python API ---------------------------------------------------------------------------------

class PciP2PdmaMapState:
    """struct pci_p2pdma_map_state (zeroed: mem None, map UNKNOWN).

    Reference twin of dmaphys._core.PciP2PdmaMapState: same returns and raises.
    """

    def __init__(self) -> None:
        self.mem: P2PdmaProvider | None = None
        self.map = PCI_P2PDMA_MAP_UNKNOWN
        self.pgmap: PciP2PdmaPagemap | None = None

    @property
    def provider(self):
        """Reference twin of dmaphys._core.PciP2PdmaMapState.provider."""
        return None if self.mem is None else self.mem.owner

    @property
    def bus_off(self) -> int:
        """Reference twin of dmaphys._core.PciP2PdmaMapState.bus_off."""
        return 0 if self.mem is None else self.mem.bus_offset

    def __repr__(self) -> str:
        return f"<dmaphys.reference.PciP2PdmaMapState map={PciP2PdmaMapType(self.map).name} mem={self.mem!r}>"


def _as_provider(provider) -> P2PdmaProvider:
    if isinstance(provider, P2PdmaProvider):
        return provider
    if isinstance(provider, PciP2PdmaPagemap):
        return provider.mem
    raise TypeError(f"provider must be a P2PdmaProvider or PciP2PdmaPagemap, not {type(provider).__name__}")


def _check_device(dev):
    Device = _device_cls()
    if not isinstance(dev, Device):
        raise TypeError(f"Argument 'dev' has incorrect type (expected Device, got {type(dev).__name__})")
    return dev


def pci_p2pdma_map_type(provider, dev):
    """pci_p2pdma_map_type(provider, dev): how ``dev`` must map the provider's P2P memory.

    Reference twin of dmaphys._core.pci_p2pdma_map_type; same returns and raises.
    """
    client = _check_device(dev)
    Device = _device_cls()
    if isinstance(provider, Device):
        if provider.machine is not client.machine:
            raise ValueError("provider and client belong to different machines")
        node = provider.p2p_node
        if node is None or node.p2pdma is None or not node.p2pdma.providers:
            return PciP2PdmaMapType(PCI_P2PDMA_MAP_NOT_SUPPORTED)
        provider = node.p2pdma.providers[0]
    mem = _as_provider(provider)
    if mem.owner.machine is not client.machine:
        raise ValueError("provider and client belong to different machines")
    try:
        t = pci_p2pdma_map_type_c(mem, client)
    finally:
        client.machine.flush_warnings()
    return PciP2PdmaMapType(t)


def pci_p2pdma_state(state, dev, phys):
    """pci_p2pdma_state(state, dev, phys): NONE for ordinary memory, else the map type.

    Reference twin of dmaphys._core.pci_p2pdma_state; same returns and raises.
    """
    if not isinstance(state, PciP2PdmaMapState):
        raise TypeError(f"Argument 'state' has incorrect type (expected PciP2PdmaMapState, "
                        f"got {type(state).__name__})")
    d = _check_device(dev)
    p = u64(phys, "phys")
    pg = d.machine.p2pdma.find_pgmap(p)
    if pg is None:
        return PciP2PdmaMapType(PCI_P2PDMA_MAP_NONE)
    state.pgmap = pg
    if state.mem is not pg.mem:                  # __pci_p2pdma_update_state()
        state.mem = pg.mem
        try:
            state.map = pci_p2pdma_map_type_c(pg.mem, d)
        finally:
            d.machine.flush_warnings()
    return PciP2PdmaMapType(state.map)


def pci_p2pdma_bus_addr_map(provider, phys):
    """pci_p2pdma_bus_addr_map(provider, paddr) = paddr + bus_offset (dma_addr_t, wraps mod 2^64).

    Reference twin of dmaphys._core.pci_p2pdma_bus_addr_map; same returns and raises.
    """
    p = u64(phys, "phys")
    if isinstance(provider, PciP2PdmaMapState):
        if provider.mem is None:
            raise KernelBug("pci_p2pdma_bus_addr_map: state->mem is NULL (no P2P address looked up)")
        provider = provider.mem
    return (p + _as_provider(provider).bus_offset) & U64_MAX


def _provider_pdev(provider) -> PciDev:
    Device = _device_cls()
    if isinstance(provider, (P2PdmaProvider, PciP2PdmaPagemap)):
        provider = _as_provider(provider).owner
    if not isinstance(provider, Device):
        raise TypeError(f"provider must be a PCI Device or P2PdmaProvider, not {type(provider).__name__}")
    if provider.p2p_node is None:
        raise ValueError(f"provider {provider.name!r} is not a PCI device")
    return provider.p2p_node


def find_parent_pci_dev(dev):
    topo = dev.machine.p2pdma
    d = dev
    while d is not None:
        if d.p2p_node is not None:
            return d.p2p_node
        d = topo._parents.get(d)
    return None


def pci_p2pdma_distance_many(provider, clients, verbose=False):
    """pci_p2pdma_distance_many(): summed distance from the provider to every client, -1 if any fails.

    Reference twin of dmaphys._core.pci_p2pdma_distance_many; same returns and raises.
    """
    pdev = _provider_pdev(provider)
    m = pdev.host_bridge.topology.machine
    v = bool(verbose)
    clients = list(clients)
    for c in clients:
        _check_device(c)
        if c.machine is not m:
            raise ValueError(f"client {c.name!r} belongs to another machine")
    if not clients:
        return -1
    total = 0
    not_supported = False
    try:
        for c in clients:
            pc = find_parent_pci_dev(c)
            if pc is None:
                if v:
                    m.kwarn(KernelWarning,
                            f"{c.name}: cannot be used for peer-to-peer DMA as it is not a PCI device")
                return -1
            t, dist = calc_map_type_and_dist(pdev, pc, v)
            if t == PCI_P2PDMA_MAP_NOT_SUPPORTED:
                not_supported = True
            if not_supported and not v:
                break
            total += dist
    finally:
        m.flush_warnings()
    return -1 if not_supported else total


def pci_p2pdma_distance(provider, client, verbose=False):
    """pci_p2pdma_distance(provider, client, verbose) = pci_p2pdma_distance_many(provider, [client]).

    Reference twin of dmaphys._core.pci_p2pdma_distance; same returns and raises.
    """
    return pci_p2pdma_distance_many(provider, [client], verbose)


# ---- the p2pmem allocator -------------------------------------------------------------------------

def _pdev_p2pdma(pdev):
    _check_device(pdev)
    return None if pdev.p2p_node is None else pdev.p2p_node.p2pdma


def pci_alloc_p2pmem(pdev, size) -> int:
    """pci_alloc_p2pmem(): first fit in the provider's pool (newest chunk first); 0 (NULL) on failure.

    Reference twin of dmaphys._core.pci_alloc_p2pmem; same returns and raises.
    """
    p2p = _pdev_p2pdma(pdev)
    n = u64(size, "size")
    if p2p is None or n == 0:
        return 0
    nbits = (n + PAGE_SIZE - 1) >> PAGE_SHIFT
    for c in p2p._chunks:                        # gen_pool_alloc(), first fit
        if n > c[3]:
            continue
        bit = c[4].find(bytes(nbits))
        if bit < 0:
            continue
        c[4][bit:bit + nbits] = b"\x01" * nbits
        c[3] -= nbits << PAGE_SHIFT
        return c[0] + (bit << PAGE_SHIFT)
    return 0


def pci_free_p2pmem(pdev, addr, size) -> None:
    """pci_free_p2pmem(): give an allocation back (gen_pool_free() BUG()s on a bad address).

    Reference twin of dmaphys._core.pci_free_p2pmem; same returns and raises.
    """
    p2p = _pdev_p2pdma(pdev)
    a = u64(addr, "addr")
    n = u64(size, "size")
    nbits = (n + PAGE_SIZE - 1) >> PAGE_SHIFT
    if p2p is None:
        raise KernelBug(f"pci_free_p2pmem: {pdev.name!r} has no p2pdma")
    for c in p2p._chunks:
        if c[0] <= a < c[0] + c[2]:
            if a + n > c[0] + c[2]:
                raise KernelBug(f"gen_pool_free: {a:#x}+{n:#x} runs past the end of its chunk")
            bit = (a - c[0]) >> PAGE_SHIFT
            if c[4].find(b"\0", bit, bit + nbits) >= 0:
                raise KernelBug(f"gen_pool_free: {a:#x}+{n:#x} is not (wholly) allocated")
            c[4][bit:bit + nbits] = bytes(nbits)
            c[3] += nbits << PAGE_SHIFT
            return
    raise KernelBug(f"gen_pool_free: {a:#x} is not in the p2pmem pool of {pdev.name!r}")


def pci_p2pmem_virt_to_bus(pdev, addr) -> int:
    """pci_p2pmem_virt_to_bus(): the PCI bus address of pool memory (0: NULL/no p2pdma, U64_MAX: foreign).

    Reference twin of dmaphys._core.pci_p2pmem_virt_to_bus; same returns and raises.
    """
    p2p = _pdev_p2pdma(pdev)
    a = u64(addr, "addr")
    if a == 0 or p2p is None:
        return 0
    for c in p2p._chunks:
        if c[0] <= a < c[0] + c[2]:
            return (c[1] + (a - c[0])) & U64_MAX
    return U64_MAX


def pci_p2pmem_publish(pdev, publish) -> None:
    """pci_p2pmem_publish(): offer the pool to other drivers (pci_p2pmem_find).

    Reference twin of dmaphys._core.pci_p2pmem_publish; same returns and raises.
    """
    p2p = _pdev_p2pdma(pdev)
    if p2p is not None:
        p2p.p2pmem_published = bool(publish)


def pci_p2pmem_find_many(clients):
    """pci_p2pmem_find_many(): a published provider at the smallest total distance, or None.

    Reference twin of dmaphys._core.pci_p2pmem_find_many; same returns and raises.
    """
    cl = [_check_device(c) for c in clients]
    if not cl:
        return None
    m = cl[0].machine
    if any(c.machine is not m for c in cl):
        raise ValueError("clients belong to different machines")
    closest: list = []
    closest_distance = 0x7FFFFFFF
    for d in list(m.devices.values()):           # for_each_pci_dev()
        p2p = _pdev_p2pdma(d)
        if p2p is None or not p2p._chunks or not p2p.p2pmem_published:
            continue
        dist = pci_p2pdma_distance_many(d, cl, False)
        if dist < 0 or dist > closest_distance:
            continue
        if dist == closest_distance and len(closest) >= PAGE_SIZE // 8:
            continue
        if dist < closest_distance:
            closest = []
            closest_distance = dist
        closest.append(d)
    if not closest:
        return None
    return closest[m.p2pdma.rng.randrange(len(closest))]


def pci_p2pmem_find(client):
    """pci_p2pmem_find(client) = pci_p2pmem_find_many([client]).

    Reference twin of dmaphys._core.pci_p2pmem_find; same returns and raises.
    """
    return pci_p2pmem_find_many([client])


def pci_p2pmem_alloc_sgl(pdev, length):
    """pci_p2pmem_alloc_sgl(): a one-entry ScatterList over new pool memory, or None.

    Reference twin of dmaphys._core.pci_p2pmem_alloc_sgl; same returns and raises.
    """
    n = u64(length, "length")
    if n == 0 or n > 0xFFFFFFFF:
        raise ValueError("length must be 1..2^32-1 (u32)")
    addr = pci_alloc_p2pmem(pdev, n)
    if not addr:
        return None
    return ScatterList([(addr, n)])


def pci_p2pmem_free_sgl(pdev, sgl) -> None:
    """pci_p2pmem_free_sgl(): free every entry of a list from pci_p2pmem_alloc_sgl().

    Reference twin of dmaphys._core.pci_p2pmem_free_sgl; same returns and raises.
    """
    for sg in sgl:
        pci_free_p2pmem(pdev, sg.phys, sg.length)
