# Models drivers/pci/p2pdma.c and include/linux/pci-p2pdma.h: the PCI hierarchy as P2PDMA
# sees it (host bridges, root ports, switch upstream/downstream ports, ACS redirect), P2P
# providers (pcim_p2pdma_init's per-BAR bus_offset, pci_p2pdma_add_resource's pagemaps), the
# map-type calculation calc_map_type_and_dist() with its per-client cache in the provider's
# struct pci_p2pdma, pci_p2pdma_distance_many(), pci_p2pdma_state() and
# pci_p2pdma_bus_addr_map(). It also routes device bus accesses that a PCIe switch delivers
# to a peer's BAR without going upstream (p2p_bus_to_phys).
#
# Topology model (what pci_upstream_bridge() walks): a device attached to a host bridge sits
# below its own Root Port on the root bus; a switch is an Upstream Port (below a Root Port or
# below a parent switch's Downstream Port) with one Downstream Port per child. acs_redirect
# on a switch sets ACS RR/CR on all its Downstream Ports (pci_bridge_has_acs_redir()).
# Each host bridge is its own PCI domain with root bus 0; bus numbers are handed out in
# order of creation, so every node has a real-looking pci_name ("0000:03:00.0") and the map
# cache is indexed like the kernel's map_types_idx().
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, p2pdma.pxd.

import logging as _p2p_logging
import random as _p2p_random

from dmaphys.constants import PciP2PdmaMapType as _PciP2PdmaMapType

_p2p_log = _p2p_logging.getLogger("dmaphys")


_PCI_NODE_KIND_NAMES = {PCI_NODE_ROOT_PORT: "root-port", PCI_NODE_UPSTREAM_PORT: "upstream-port",
                        PCI_NODE_DOWNSTREAM_PORT: "downstream-port", PCI_NODE_ENDPOINT: "endpoint"}

# The device IDs of the host bridge's devfn 00.0 device, which __host_bridge_whitelist()
# matches against pci_p2pdma_whitelist[]: Skylake-E 8086:2020 (listed, no flags), Xeon E5
# 8086:3c00 (listed, REQ_SAME_HOST_BRIDGE), i440FX 8086:1237 (not listed).
_HB_ID_ALLOWLISTED = (0x8086, 0x2020)
_HB_ID_REQ_SAME = (0x8086, 0x3C00)
_HB_ID_NOT_LISTED = (0x8086, 0x1237)


cdef class PciHostBridge:
    """struct pci_host_bridge with its root bus: ``m.add_host_bridge(name, p2p_allowlisted=False)``.

    ``p2p_allowlisted``: the host bridge's 00.0 device is in pci_p2pdma_whitelist[];
    ``req_same_host_bridge``: its entry has REQ_SAME_HOST_BRIDGE (P2P only between devices below
    this one host bridge). ``vendor``/``device`` are the IDs the whitelist check reports.

    Mirrors struct pci_host_bridge (include/linux/pci.h) as drivers/pci/p2pdma.c's host-bridge
    checks see it. Raises TypeError when constructed from Python (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "use Machine.add_host_bridge()")

    cdef void _setup(self, P2PTopology topology, str name, int domain, bint allowlisted, bint req_same):
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
        self.children = []
        self.next_bus = 1
        self.next_root_slot = 1                # 00:00.0 is the host bridge device itself

    @property
    def pci_name(self):
        """pci_name() of the host bridge's devfn 00.0 device (what the whitelist matches).

        Read-only.
        """
        return f"{self.domain:04x}:00:00.0"

    def __repr__(self):
        return (f"<dmaphys.PciHostBridge {self.name!r} domain={self.domain:04x} "
                f"allowlisted={bool(self.p2p_allowlisted)}>")


cdef class PciSwitch:
    """A PCIe switch: ``m.add_switch(name, parent=hb_or_switch, acs_redirect=False)``.

    Its Upstream Port sits below a Root Port of the host bridge (or a Downstream Port of the
    parent switch); every child gets its own Downstream Port. ``acs_redirect`` sets ACS
    Request/Completion Redirect on all Downstream Ports: peer traffic is sent up to the host.

    Simulator-only grouping of the struct pci_dev ports of one switch (an Upstream Port and its
    Downstream Ports). Raises TypeError when constructed from Python (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "use Machine.add_switch()")

    def __repr__(self):
        return f"<dmaphys.PciSwitch {self.name!r} usp={self.upstream_port.pci_name} acs_redirect={bool(self.acs_redirect)}>"


cdef class PciDev:
    """A struct pci_dev in the hierarchy: a Root Port, switch port or endpoint (``dev.p2p_node``).

    Mirrors struct pci_dev (include/linux/pci.h), the fields drivers/pci/p2pdma.c walks. Raises
    TypeError when constructed from Python (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "PciDev objects are made by the topology")

    @property
    def kind_name(self):
        """pci_pcie_type() as a name: "root-port", "upstream-port", "downstream-port" or "endpoint"."""
        return _PCI_NODE_KIND_NAMES[self.kind]

    @property
    def domain(self):
        """pci_domain_nr(): the PCI domain (segment) number of its host bridge."""
        return self.host_bridge.domain

    @property
    def pci_name(self):
        """pci_name(): "DDDD:BB:SS.F".

        Read-only.
        """
        return f"{self.host_bridge.domain:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"

    @property
    def map_types_idx(self):
        """map_types_idx(): (pci_domain_nr << 16) | pci_dev_id — this client's cache index.

        Read-only.
        """
        return self.idx

    def __repr__(self):
        name = f" {self.device.name!r}" if self.device is not None else ""
        return f"<dmaphys.PciDev {self.pci_name} {self.kind_name}{name}>"


cdef PciDev _new_pci_dev(int kind, PciDev upstream, PciHostBridge hb, int bus, int devfn, bint acs,
                         object device, object switch):
    cdef PciDev n = PciDev.__new__(PciDev, _INTERNAL)
    n.kind = kind
    n.upstream = upstream
    n.host_bridge = hb
    n.bus = bus
    n.devfn = devfn
    n.acs_redir = acs
    n.device = device
    n.switch = switch
    n.secondary_bus = -1
    n.p2pdma = None
    n.idx = ((<u64>hb.domain) << 16) | ((<u64>bus) << 8) | <u64>devfn
    return n


cdef class PciP2Pdma:
    """struct pci_p2pdma (pdev->p2pdma): the per-BAR providers and the map-type cache.

    ``map_types`` is the xarray cache: client map_types_idx() -> the PCI_P2PDMA_MAP_* type
    that calc_map_type_and_dist() computed (any type, from any caller).

    Mirrors struct pci_p2pdma (drivers/pci/p2pdma.c). Raises TypeError when constructed from Python
    (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "made by Machine.add_p2pmem()")

    @property
    def size(self):
        """gen_pool_size() of the p2pmem pool (sysfs p2pmem/size).

        Read-only, in bytes.
        """
        return sum(c[2] for c in self._chunks)

    @property
    def available(self):
        """gen_pool_avail() of the p2pmem pool (sysfs p2pmem/available).

        Read-only, in bytes.
        """
        return sum(c[3] for c in self._chunks)

    @property
    def map_types(self):
        """The cache as {map_types_idx(client): PciP2PdmaMapType}.

        Read-only (a copy).
        """
        cdef dict out = {}
        cdef unordered_map[u64, int].iterator it = self._map_types.begin()
        while it != self._map_types.end():
            out[deref(it).first] = _PciP2PdmaMapType(deref(it).second)
            inc(it)
        return out

    def __repr__(self):
        return f"<dmaphys.PciP2Pdma {self.pdev.pci_name} bars={len(self.providers)} cached={self._map_types.size()}>"


cdef class P2PdmaProvider:
    """struct p2pdma_provider: one BAR of a provider — its owner and bus_offset.

    ``bus_offset`` = pci_bus_address(bar) - pci_resource_start(bar), modulo 2^64 as the kernel's
    u64 arithmetic gives it. ``bar_start``/``bar_size`` are the BAR's CPU physical range.

    Mirrors struct p2pdma_provider (include/linux/pci-p2pdma.h). Raises TypeError when constructed
    from Python (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "made by Machine.add_p2pmem()")

    @property
    def bus_start(self):
        """pci_bus_address(bar): the BAR's PCI bus address.

        Read-only.
        """
        return (self.bar_start + self.bus_offset) & U64_MAX

    def __repr__(self):
        return (f"<dmaphys.P2PdmaProvider {self.owner.name!r} bar{self.bar} {self.bar_start:#x}+{self.bar_size:#x} "
                f"bus_offset={self.bus_offset:#x}>")


cdef class PciP2PdmaPagemap:
    """struct pci_p2pdma_pagemap: P2P memory published by ``m.add_p2pmem(provider, cpu_phys, size)``.

    ``provider`` is the provider Device, ``mem`` its P2PdmaProvider (the BAR), ``cpu_phys`` /
    ``size`` the pagemap range (pgmap->range), ``bus_offset`` / ``bus_addr`` what a
    PCI_P2PDMA_MAP_BUS_ADDR client puts on the bus for ``cpu_phys``.

    Mirrors struct pci_p2pdma_pagemap (drivers/pci/p2pdma.c) with its struct dev_pagemap range.
    Raises TypeError when constructed from Python (only the core makes them).
    """

    def __cinit__(self, *args):
        _internal_only(args, "made by Machine.add_p2pmem()")

    @property
    def provider(self):
        """The provider Device (pgmap's p2p_provider owner)."""
        return self.mem.owner

    @property
    def bus_offset(self):
        """The BAR's bus_offset (struct p2pdma_provider bus_offset)."""
        return self.mem.bus_offset

    @property
    def bus_addr(self):
        """pci_bus_address(bar) + offset: the bus address of cpu_phys (pci_p2pmem_virt_to_bus).

        Read-only.
        """
        return (self.cpu_phys + self.mem.bus_offset) & U64_MAX

    def __repr__(self):
        return (f"<dmaphys.PciP2PdmaPagemap {self.mem.owner.name!r} {self.cpu_phys:#x}+{self.size:#x} "
                f"bus_offset={self.mem.bus_offset:#x}>")


cdef class P2PTopology:
    """The PCI hierarchy and P2PDMA providers of a Machine (``m.p2pdma``).

    ``cpu_supports_p2pdma`` models cpu_supports_p2pdma() (x86 AMD Zen or newer): when true,
    every host-bridge path is allowed without consulting the whitelist. ``rng`` breaks ties in
    pci_p2pmem_find_many() (seed it for another deterministic choice).

    Simulator-only: the PCI hierarchy the kernel learns by enumeration plus the P2PDMA state of
    drivers/pci/p2pdma.c. Made by the Machine; constructing one raises TypeError without a Machine.
    """

    def __cinit__(self, Machine machine not None):
        self.machine = machine
        self.host_bridges = {}
        self.switches = {}
        self.default_host_bridge = None
        self.cpu_supports_p2pdma = False
        self.rng = _p2p_random.Random(0)
        self._parents = {}
        self._bar_list = []
        self._pgmap_list = []

    @property
    def pagemaps(self):
        """Every published PciP2PdmaPagemap, in publication order (a copy)."""
        return list(self._pgmap_list)

    @property
    def providers(self):
        """Every P2PdmaProvider (BAR), in registration order (a copy)."""
        return list(self._bar_list)

    def __repr__(self):
        return (f"<dmaphys.P2PTopology host_bridges={len(self.host_bridges)} switches={len(self.switches)} "
                f"pagemaps={self._pgmaps.size()}>")

    # ---- building the hierarchy ------------------------------------------------------------
    cdef int _check_new_name(self, name) except -1:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a host bridge or switch name must be a non-empty str, not {name!r}")
        if name in self.host_bridges or name in self.switches:
            raise ValueError(f"a host bridge or switch named {name!r} exists already")
        return 0

    cdef PciHostBridge _new_host_bridge(self, str name, bint allowlisted, bint req_same):
        cdef int domain = len(self.host_bridges)
        cdef PciHostBridge hb
        if domain > 0xFFFF:
            raise ValueError("no free PCI domain number")
        hb = PciHostBridge.__new__(PciHostBridge, _INTERNAL)
        hb._setup(self, name, domain, allowlisted, req_same)
        self.host_bridges[name] = hb
        return hb

    def add_host_bridge(self, name, p2p_allowlisted=False, *, req_same_host_bridge=False):
        """A new host bridge (its own PCI domain); see PciHostBridge.

        Simulator-only (the kernel finds host bridges by enumeration); Machine.add_host_bridge()
        calls it. Returns the PciHostBridge. Raises TypeError for a name that is not a non-empty
        str, ValueError for a name in use or no free PCI domain.
        """
        self._check_new_name(name)
        return self._new_host_bridge(name, bool(p2p_allowlisted), bool(req_same_host_bridge))

    cdef PciHostBridge _get_default_host_bridge(self):
        if self.default_host_bridge is None:
            domain = len(self.host_bridges)
            name = f"pci{domain:04x}:00"
            while name in self.host_bridges or name in self.switches:
                name += "'"
            self.default_host_bridge = self._new_host_bridge(name, False, False)
        return self.default_host_bridge

    cdef object _resolve_parent(self, object parent):
        """A parent given by object or name: PciHostBridge, PciSwitch or Device of this machine."""
        if isinstance(parent, str):
            if parent in self.host_bridges:
                return self.host_bridges[parent]
            if parent in self.switches:
                return self.switches[parent]
            if parent in self.machine.devices:
                return self.machine.devices[parent]
            raise ValueError(f"unknown parent {parent!r}: no host bridge, switch or device of that name")
        if isinstance(parent, (PciHostBridge, PciSwitch)):
            if (<object>parent).topology is not self:
                raise ValueError(f"parent {parent.name!r} belongs to another machine")
            return parent
        if isinstance(parent, Device):
            if (<Device>parent).machine is not self.machine or \
                    self.machine.devices.get((<Device>parent).name) is not parent:
                raise ValueError(f"parent device {(<Device>parent).name!r} is not a device of this machine")
            return parent
        raise TypeError(f"parent must be a PciHostBridge, PciSwitch, Device or name, not {type(parent).__name__}")

    cdef int _check_ports(self, object parent) except -1:
        """Raise (before any change) if parent cannot take one more child."""
        if isinstance(parent, PciHostBridge):
            if (<PciHostBridge>parent).next_root_slot > 31:
                raise ValueError(f"host bridge {parent.name!r}: no free Root Port slot on its root bus")
            if (<PciHostBridge>parent).next_bus > 255:
                raise ValueError(f"host bridge {parent.name!r}: no free bus number")
        elif isinstance(parent, PciSwitch):
            if (<PciSwitch>parent).next_dsp_slot > 31:
                raise ValueError(f"switch {parent.name!r}: no free Downstream Port (32 used)")
            if (<PciSwitch>parent).host_bridge.next_bus > 255:
                raise ValueError(f"host bridge {(<PciSwitch>parent).host_bridge.name!r}: no free bus number")
        return 0

    cdef PciDev _new_port(self, object parent):
        """A Root Port (host bridge) or Downstream Port (switch) for one new child."""
        cdef PciHostBridge hb
        cdef PciSwitch sw
        cdef PciDev port
        if isinstance(parent, PciHostBridge):
            hb = <PciHostBridge>parent
            port = _new_pci_dev(PCI_NODE_ROOT_PORT, None, hb, 0, hb.next_root_slot << 3, False, None, None)
            hb.next_root_slot += 1
            hb.children.append(port)
        else:
            sw = <PciSwitch>parent
            hb = sw.host_bridge
            port = _new_pci_dev(PCI_NODE_DOWNSTREAM_PORT, sw.upstream_port, hb, sw.internal_bus,
                                sw.next_dsp_slot << 3, sw.acs_redirect, None, sw)
            sw.next_dsp_slot += 1
            sw.children.append(port)
        port.secondary_bus = hb.next_bus
        hb.next_bus += 1
        return port

    def add_switch(self, name, parent=None, acs_redirect=False):
        """A switch below ``parent`` (host bridge, switch, their name, or None: the default host bridge).

        Simulator-only; Machine.add_switch() calls it. Returns the PciSwitch. Raises TypeError for a
        bad name or parent type, ValueError for a name in use, an unknown parent or one of another
        machine, a device as parent, or no free port or bus number.
        """
        cdef PciSwitch sw
        cdef PciDev port
        cdef PciHostBridge hb
        self._check_new_name(name)
        if parent is not None:
            parent = self._resolve_parent(parent)
            if not isinstance(parent, (PciHostBridge, PciSwitch)):
                raise ValueError("a switch's parent must be a host bridge or a switch")
        self._check_ports(parent if parent is not None else self.default_host_bridge)
        if parent is None:
            parent = self._get_default_host_bridge()
        hb = parent if isinstance(parent, PciHostBridge) else (<PciSwitch>parent).host_bridge
        if hb.next_bus + 1 > 255:
            raise ValueError(f"host bridge {hb.name!r}: no free bus number")
        port = self._new_port(parent)
        sw = PciSwitch.__new__(PciSwitch, _INTERNAL)
        sw.topology = self
        sw.name = name
        sw.parent = parent
        sw.acs_redirect = bool(acs_redirect)
        sw.host_bridge = hb
        sw.children = []
        sw.upstream_port = _new_pci_dev(PCI_NODE_UPSTREAM_PORT, port, hb, port.secondary_bus, 0, False,
                                        None, sw)
        sw.internal_bus = hb.next_bus
        sw.upstream_port.secondary_bus = sw.internal_bus
        hb.next_bus += 1
        sw.next_dsp_slot = 0
        self.switches[name] = sw
        return sw

    def check_parent(self, parent, pci):
        """Validate add_device()'s parent before the device is made (raises, changes nothing).

        Simulator-only. Returns None. Raises TypeError for a parent of the wrong type, ValueError
        for an unknown parent or one of another machine, a device parent for a PCI device, a bridge
        parent for a non-PCI device, or no free port.
        """
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
        """Place a new Device: PCI devices below a new port of ``parent``; non-PCI ones under a parent device.

        Simulator-only (models enumeration placing a struct pci_dev; Machine.add_device() calls it).
        Returns the endpoint PciDev, or None for a non-PCI device. Raises what check_parent()
        raises, TypeError for a non-Device.
        """
        cdef Device d = _as_device(dev)
        cdef PciDev port
        self.check_parent(parent, d.pci)
        if parent is not None:
            parent = self._resolve_parent(parent)
        if not d.pci:
            d.p2p_node = None
            if parent is not None:
                self._parents[d] = parent
            return None
        if parent is None:
            parent = self._get_default_host_bridge()
        port = self._new_port(parent)
        d.p2p_node = _new_pci_dev(PCI_NODE_ENDPOINT, port, port.host_bridge, port.secondary_bus, 0, False,
                                  d, None)
        return d.p2p_node

    def parent_of(self, dev):
        """dev->parent: the upstream port of a PCI device, the parent Device of a non-PCI one.

        Mirrors struct device's parent pointer. Returns a PciDev, a Device or None. Raises TypeError
        for a non-Device.
        """
        cdef Device d = _as_device(dev)
        if d.p2p_node is not None:
            return (<PciDev>d.p2p_node).upstream
        return self._parents.get(d)

    def remove_device(self, dev):
        """The device goes away: a provider's P2P memory is released (pci_p2pdma_release()).

        Its pagemaps stop being P2P pages and its BARs stop decoding peer requests; its map-type
        cache goes with it. Entries other providers cached for it as a client stay, as in the
        kernel. Its port stays in the hierarchy (an empty slot; bus numbers are not reused).

        Models drivers/pci/p2pdma.c:pci_p2pdma_release(). Returns None. Raises TypeError for a
        non-Device, ValueError while a non-PCI device still has it as parent (nothing changed).
        Machine.remove_device() calls it.
        """
        cdef Device d = _as_device(dev)
        cdef PciDev node
        for child, parent in self._parents.items():
            if parent is d:
                raise ValueError(f"{d.name!r} still has the child device {child.name!r}: remove it first")
        self._parents.pop(d, None)
        if d.p2p_node is None:
            return
        node = <PciDev>d.p2p_node
        if node.p2pdma is None:
            return
        self._bar_list = [b for b in self._bar_list if b.owner is not d]
        self._pgmap_list = [g for g in self._pgmap_list if g.mem.owner is not d]
        node.p2pdma = None
        self._rebuild_ranges()

    cdef void _rebuild_ranges(self):
        cdef p2p_range r
        cdef P2PdmaProvider mem
        cdef PciP2PdmaPagemap pg
        cdef int i
        self._windows.clear()
        self._pgmaps.clear()
        for i, mem in enumerate(self._bar_list):
            r.start = mem.bar_start + mem.bus_offset
            r.size = mem.bar_size
            r.offset = mem.bus_offset
            r.domain = (<PciDev>mem.owner.p2p_node).host_bridge.domain
            r.index = i
            self._windows.push_back(r)
        for i, pg in enumerate(self._pgmap_list):
            r.start = pg.cpu_phys
            r.size = pg.size
            r.offset = pg.mem.bus_offset
            r.domain = (<PciDev>pg.mem.owner.p2p_node).host_bridge.domain
            r.index = i
            self._pgmaps.push_back(r)

    # ---- providers: pcim_p2pdma_init + pci_p2pdma_add_resource -----------------------------------
    def add_p2pmem(self, provider, cpu_phys, size, bus_addr=None, *, pages=True):
        """Publish [cpu_phys, cpu_phys+size) of a BAR of ``provider`` as P2P memory.

        The range must lie in one MMIO region that is (or becomes) a BAR of this provider; a
        range in no region becomes a new MMIO region "<provider> BAR<n>". ``bus_addr`` is the
        PCI bus address of cpu_phys (None: equal to it); the BAR's bus_offset is bus_addr -
        cpu_phys modulo 2^64 (pcim_p2pdma_init()). Returns the PciP2PdmaPagemap
        (pci_p2pdma_add_resource(): ZONE_DEVICE pages, pool memory).

        ``pages=False`` is the pcim_p2pdma_init() + pcim_p2pdma_provider() path of VFIO and
        other dma-buf exporters: the BAR becomes a provider (returned, a P2PdmaProvider) but gets
        no pages, so pci_p2pdma_state() sees ordinary memory there; callers ask
        pci_p2pdma_map_type(provider, dev) themselves.

        Models drivers/pci/p2pdma.c:pcim_p2pdma_init() + pci_p2pdma_add_resource() (+
        pcim_p2pdma_provider()). Raises TypeError for a non-Device provider or non-int numbers;
        ValueError (before any change) for a provider that is not a PCI device of this machine, an
        unaligned, empty or wrapping range, a range overlapping other P2P memory, RAM, another
        provider's BAR or a region it straddles, a bus_addr that changes a BAR's bus_offset, a
        seventh BAR, or a bus window overlapping another in the PCI domain.
        """
        cdef Device d
        cdef u64 cpu, n, bus, off, bar_start, bar_size, w_start
        cdef PciDev node
        cdef PciP2Pdma p2p
        cdef P2PdmaProvider mem = None, other
        cdef PciP2PdmaPagemap pg
        cdef PhysMem pm = self.machine.mem
        cdef int ri
        cdef size_t i
        cdef p2p_range r
        if not isinstance(provider, Device):
            raise TypeError(f"provider must be a Device, not {type(provider).__name__}")
        d = <Device>provider
        if d.machine is not self.machine or self.machine.devices.get(d.name) is not d:
            raise ValueError(f"provider {d.name!r} is not a device of this machine")
        if not d.pci or d.p2p_node is None:
            raise ValueError(f"provider {d.name!r} is not a PCI device: it has no BARs to publish")
        node = <PciDev>d.p2p_node
        cpu = _u64(cpu_phys, "cpu_phys")
        n = _u64(size, "size")
        bus = cpu if bus_addr is None else _u64(bus_addr, "bus_addr")
        if n == 0 or cpu & (PAGE_SIZE - 1) or n & (PAGE_SIZE - 1) or bus & (PAGE_SIZE - 1):
            raise ValueError(f"p2pmem {cpu:#x}+{n:#x} (bus {bus:#x}): addresses and size must be "
                             "page aligned and the size non-zero")
        if cpu + n < cpu or bus + n < bus:
            raise ValueError(f"p2pmem {cpu:#x}+{n:#x} (bus {bus:#x}) wraps the address space")
        off = bus - cpu                        # u64 arithmetic, as pcim_p2pdma_init computes it
        for i in range(self._pgmaps.size() if pages else 0):
            if cpu < self._pgmaps[i].start + self._pgmaps[i].size and self._pgmaps[i].start < cpu + n:
                pg = self._pgmap_list[self._pgmaps[i].index]
                raise ValueError(f"p2pmem {cpu:#x}+{n:#x} overlaps the P2P memory {pg.cpu_phys:#x}+"
                                 f"{pg.size:#x} of {pg.mem.owner.name!r}")
        # which BAR: an MMIO region wholly containing the range, or a new one
        ri = pm.find_region(cpu, n)
        if ri >= 0:
            if pm.regions[ri].kind != REGION_MMIO:
                raise ValueError(f"p2pmem {cpu:#x}+{n:#x} is RAM, not a BAR: P2P memory is MMIO")
            bar_start = pm.regions[ri].start
            bar_size = pm.regions[ri].end - pm.regions[ri].start
            for other in self._bar_list:
                if other.bar_start == bar_start:
                    if other.owner is not d:
                        raise ValueError(f"{bar_start:#x}+{bar_size:#x} is a BAR of {other.owner.name!r}, "
                                         f"not of {d.name!r}")
                    if other.bus_offset != off:
                        raise ValueError(f"BAR{other.bar} of {d.name!r} has bus_offset {other.bus_offset:#x}; "
                                         f"bus_addr {bus:#x} would make it {off:#x}")
                    mem = other
                    break
        else:
            for i in range(pm.regions.size()):
                if cpu < pm.regions[i].end and pm.regions[i].start < cpu + n:
                    raise ValueError(f"p2pmem {cpu:#x}+{n:#x} straddles region "
                                     f"{pm.region_names[pm.regions[i].index]!r}: it must lie in one BAR")
            bar_start = cpu
            bar_size = n
        p2p = node.p2pdma
        if mem is None:
            if p2p is not None and len(p2p.providers) >= PCI_STD_NUM_BARS:
                raise ValueError(f"{d.name!r} has all {PCI_STD_NUM_BARS} BARs in use already")
            w_start = bar_start + off
            if w_start + bar_size < w_start:
                raise ValueError(f"the bus window of BAR {bar_start:#x}+{bar_size:#x} wraps the address space")
            for i in range(self._windows.size()):
                if self._windows[i].domain == node.host_bridge.domain and \
                        w_start < self._windows[i].start + self._windows[i].size and \
                        self._windows[i].start < w_start + bar_size:
                    other = self._bar_list[self._windows[i].index]
                    raise ValueError(f"bus window {w_start:#x}+{bar_size:#x} overlaps the bus window of "
                                     f"BAR{other.bar} of {other.owner.name!r} in PCI domain "
                                     f"{node.host_bridge.domain:04x}")
        # --- all checks done: change state ---
        if ri < 0:
            nbar = 0 if p2p is None else len(p2p.providers)
            pm.add_region(bar_start, bar_size, REGION_MMIO, f"{d.name} BAR{nbar}")
        if p2p is None:                        # pcim_p2pdma_init()
            p2p = PciP2Pdma.__new__(PciP2Pdma, _INTERNAL)
            p2p.pdev = node
            p2p.providers = []
            p2p.pagemaps = []
            p2p.p2pmem_published = False
            p2p._chunks = []
            node.p2pdma = p2p
        if mem is None:
            mem = P2PdmaProvider.__new__(P2PdmaProvider, _INTERNAL)
            mem.owner = d
            mem.bus_offset = off
            mem.bar = len(p2p.providers)
            mem.bar_start = bar_start
            mem.bar_size = bar_size
            mem.p2pdma = p2p
            p2p.providers.append(mem)
            r.start = bar_start + off
            r.size = bar_size
            r.offset = off
            r.domain = node.host_bridge.domain
            r.index = len(self._bar_list)
            self._bar_list.append(mem)
            self._windows.push_back(r)
        if not pages:
            return mem
        pg = PciP2PdmaPagemap.__new__(PciP2PdmaPagemap, _INTERNAL)
        pg.mem = mem
        pg.cpu_phys = cpu
        pg.size = n
        p2p.pagemaps.append(pg)
        # gen_pool_add_owner(pool, virt, pci_bus_address(bar) + offset, ...): list_add at the head
        p2p._chunks.insert(0, [cpu, cpu + off, n, n, bytearray(n >> PAGE_SHIFT)])
        r.start = cpu
        r.size = n
        r.offset = off
        r.domain = node.host_bridge.domain
        r.index = len(self._pgmap_list)
        self._pgmap_list.append(pg)
        self._pgmaps.push_back(r)
        # pci_p2pdma_add_resource()'s pci_info
        _p2p_log.info("%s %s: added peer-to-peer DMA memory %#x-%#x", d.name, node.pci_name, cpu, cpu + n - 1)
        return pg

    cdef inline int find_pgmap(self, u64 phys) noexcept:
        """is_pci_p2pdma_page(): index into _pgmap_list of the pagemap holding phys, or -1."""
        cdef size_t i
        for i in range(self._pgmaps.size()):
            if phys >= self._pgmaps[i].start and phys - self._pgmaps[i].start < self._pgmaps[i].size:
                return self._pgmaps[i].index
        return -1

    def pgmap_of(self, phys):
        """The PciP2PdmaPagemap holding ``phys`` (is_pci_p2pdma_page of its page), or None.

        Models include/linux/memremap.h:is_pci_p2pdma_page() with page_pgmap(). Returns the pagemap
        or None. Raises TypeError / ValueError for a non-int or out-of-range ``phys``.
        """
        cdef int i = self.find_pgmap(_u64(phys, "phys"))
        return None if i < 0 else self._pgmap_list[i]


# ---- calc_map_type_and_dist() ------------------------------------------------------------------

cdef inline str _p2p_dev_prefix(PciDev n):
    """dev_warn()'s "<driver> <dev_name>: " prefix (the simulated Device's name as the driver)."""
    if n.device is not None:
        return f"{n.device.name} {n.pci_name}: "
    return f"pcieport {n.pci_name}: "


cdef bint _pci_walk_common(PciDev provider, PciDev client, int *dist, int *acs_cnt, list acs_list) noexcept:
    """The walk of calc_map_type_and_dist(): find the common upstream bridge.

    Returns true when provider and client meet below the host bridge; *dist is then
    dist_a + dist_b, otherwise the sum of both chain lengths. *acs_cnt counts the bridges with
    ACS redirect met on the way (provider chain up to and including the meeting point, client
    chain below it); their names go into acs_list when it is not None.
    """
    cdef PciDev a = provider, bb
    cdef int dist_a = 0, dist_b = 0
    acs_cnt[0] = 0
    while a is not None:
        dist_b = 0
        if a.acs_redir:
            if acs_list is not None:
                acs_list.append(a.pci_name)
            acs_cnt[0] += 1
        bb = client
        while bb is not None:
            if a is bb:
                break
            bb = bb.upstream
            dist_b += 1
        if bb is not None:
            break
        a = a.upstream
        dist_a += 1
    dist[0] = dist_a + dist_b
    if a is None:
        return False
    bb = client                                # check_b_path_acs
    while bb is not None and bb is not a:
        if bb.acs_redir:
            if acs_list is not None:
                acs_list.append(bb.pci_name)
            acs_cnt[0] += 1
        bb = bb.upstream
    return True


cdef bint _host_bridge_allowed(Machine m, PciHostBridge host, bint same, bint warn):
    """__host_bridge_whitelist(): is the host bridge's 00.0 device in pci_p2pdma_whitelist[]?"""
    if host.p2p_allowlisted:
        if host.req_same_host_bridge and not same:
            return False
        return True
    if warn:
        m.kwarn(KernelWarning, f"pci {host.pci_name}: Host bridge not in P2PDMA whitelist: "
                               f"{host.vendor:04x}:{host.device:04x}")
    return False


cdef bint host_bridge_whitelist(Machine m, PciDev a, PciDev b, bint warn):
    """host_bridge_whitelist(): both host bridges allow P2P (one bridge: with same=true)."""
    if a.host_bridge is b.host_bridge:
        return _host_bridge_allowed(m, a.host_bridge, True, warn)
    return (_host_bridge_allowed(m, a.host_bridge, False, warn) and
            _host_bridge_allowed(m, b.host_bridge, False, warn))


cdef int calc_map_type_and_dist(PciDev provider, PciDev client, int *dist, bint verbose) except -1:
    """calc_map_type_and_dist(): the map type (and distance) between two PCI devices; caches it."""
    cdef Machine m = <Machine>provider.host_bridge.topology.machine
    cdef int map_type = PCI_P2PDMA_MAP_THRU_HOST_BRIDGE
    cdef int acs_cnt = 0
    cdef list acs_list = [] if verbose else None
    cdef bint common = _pci_walk_common(provider, client, dist, &acs_cnt, acs_list)
    if common and acs_cnt == 0:
        map_type = PCI_P2PDMA_MAP_BUS_ADDR
    else:
        if common and verbose:
            m.kwarn(KernelWarning, f"{_p2p_dev_prefix(client)}ACS redirect is set between the client and "
                                   f"provider ({provider.pci_name})")
            m.kwarn(KernelWarning, f"{_p2p_dev_prefix(client)}to disable ACS redirect for this path, add the "
                                   f"kernel parameter: pci=disable_acs_redir={';'.join(acs_list)}")
        # map_through_host_bridge
        if not provider.host_bridge.topology.cpu_supports_p2pdma and \
                not host_bridge_whitelist(m, provider, client, verbose):
            if verbose:
                m.kwarn(KernelWarning, f"{_p2p_dev_prefix(client)}cannot be used for peer-to-peer DMA as the "
                                       f"client and provider ({provider.pci_name}) do not share an upstream "
                                       f"bridge or whitelisted host bridge")
            map_type = PCI_P2PDMA_MAP_NOT_SUPPORTED
    if provider.p2pdma is not None:            # xa_store(&p2pdma->map_types, ...)
        provider.p2pdma._map_types[client.idx] = map_type
    return map_type


cdef int pci_p2pdma_map_type_c(P2PdmaProvider mem, Device dev) except -1:
    """pci_p2pdma_map_type(): cached type for (provider, client); computed verbosely on a miss."""
    cdef PciDev pdev = <PciDev>mem.owner.p2p_node
    cdef PciDev client
    cdef unordered_map[u64, int].iterator it
    cdef int dist
    if pdev is None or pdev.p2pdma is None:
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    if not dev.pci or dev.p2p_node is None:  # !dev_is_pci(dev): no walk to a PCI parent here
        return PCI_P2PDMA_MAP_NOT_SUPPORTED
    client = <PciDev>dev.p2p_node
    it = pdev.p2pdma._map_types.find(client.idx)
    if it != pdev.p2pdma._map_types.end() and deref(it).second != PCI_P2PDMA_MAP_UNKNOWN:
        return deref(it).second
    return calc_map_type_and_dist(pdev, client, &dist, True)


# ---- the C hooks: the sg mapping code and the bus ------------------------------------------------

cdef int p2pdma_state_c(Device dev, u64 phys, u64 size, u64 *bus_addr) except -1:
    """pci_p2pdma_state() for the memory at phys as seen by client dev: a PCI_P2PDMA_MAP_* type.

    PCI_P2PDMA_MAP_NONE for ordinary RAM (and anything that is not P2P memory). For BUS_ADDR,
    *bus_addr receives pci_p2pdma_bus_addr_map() of phys (phys + bus_offset). Like the kernel
    helper it classifies by the first page only. May queue warnings (first computation).
    """
    cdef P2PTopology topo = dev.machine.p2pdma
    cdef int i, t
    cdef P2PdmaProvider mem
    if topo._pgmaps.empty():
        return PCI_P2PDMA_MAP_NONE
    i = topo.find_pgmap(phys)
    if i < 0:
        return PCI_P2PDMA_MAP_NONE
    mem = (<PciP2PdmaPagemap>topo._pgmap_list[i]).mem
    t = pci_p2pdma_map_type_c(mem, dev)
    if t == PCI_P2PDMA_MAP_BUS_ADDR:
        bus_addr[0] = phys + mem.bus_offset
    return t


cdef u64 p2p_bus_to_phys(Device dev, u64 bus_addr, u64 n) noexcept:
    """CPU physical address behind a peer BAR's bus window, or U64_MAX when addr is not one.

    A PCIe switch delivers a request below it to the peer whose BAR window decodes the address
    when no port on the way has ACS redirect (the BUS_ADDR condition of
    calc_map_type_and_dist(), evaluated on the hardware, not from the kernel's cache).
    Windows of other PCI domains are never reached this way.
    """
    cdef P2PTopology topo = dev.machine.p2pdma
    cdef PciDev client, prov
    cdef size_t i
    cdef int dist, acs_cnt
    if topo._windows.empty() or dev.p2p_node is None:
        return U64_MAX
    client = <PciDev>dev.p2p_node
    for i in range(topo._windows.size()):
        if topo._windows[i].domain != client.host_bridge.domain:
            continue
        if bus_addr - topo._windows[i].start < topo._windows[i].size:
            prov = <PciDev>(<P2PdmaProvider>topo._bar_list[topo._windows[i].index]).owner.p2p_node
            if _pci_walk_common(prov, client, &dist, &acs_cnt, None) and acs_cnt == 0:
                return bus_addr - topo._windows[i].offset
            return U64_MAX
    return U64_MAX


# ---- Python API (include/linux/pci-p2pdma.h) ---------------------------------------------------

cdef class PciP2PdmaMapState:
    """struct pci_p2pdma_map_state: ``mem`` (the P2PdmaProvider last seen) and ``map``.

    Zero-initialised like the kernel's: mem None, map PCI_P2PDMA_MAP_UNKNOWN. ``pgmap`` is the
    pagemap of the last P2P address looked up, ``provider`` the provider Device, ``bus_off``
    the provider's bus_offset (the 2021-2024 field).

    Mirrors struct pci_p2pdma_map_state (include/linux/pci-p2pdma.h). ``PciP2PdmaMapState()`` takes
    no arguments: it raises TypeError otherwise.
    """

    def __init__(self):
        self.mem = None
        self.map = PCI_P2PDMA_MAP_UNKNOWN
        self.pgmap = None

    @property
    def provider(self):
        """The provider Device of ``mem``, or None."""
        return None if self.mem is None else self.mem.owner

    @property
    def bus_off(self):
        """``mem``'s bus_offset, or 0 (the pre-2025 struct's bus_off field)."""
        return 0 if self.mem is None else self.mem.bus_offset

    def __repr__(self):
        return f"<dmaphys.PciP2PdmaMapState map={_PciP2PdmaMapType(self.map).name} mem={self.mem!r}>"


cdef P2PdmaProvider _p2p_as_provider(object provider):
    if isinstance(provider, P2PdmaProvider):
        return provider
    if isinstance(provider, PciP2PdmaPagemap):
        return (<PciP2PdmaPagemap>provider).mem
    raise TypeError(f"provider must be a P2PdmaProvider or PciP2PdmaPagemap, not {type(provider).__name__}")


def pci_p2pdma_map_type(provider, dev):
    """pci_p2pdma_map_type(provider, dev): how ``dev`` must map the provider's P2P memory.

    Mirrors drivers/pci/p2pdma.c:pci_p2pdma_map_type(). ``provider``: a P2PdmaProvider (kernel), its
    PciP2PdmaPagemap, or the provider Device (NOT_SUPPORTED when it has no P2P memory: pdev->p2pdma
    is NULL). Returns the PCI_P2PDMA_MAP_* type, cached per (provider device, client) in the
    provider's PciP2Pdma.map_types. Raises TypeError for arguments of the wrong type, ValueError for
    a provider and client of different machines. Warns KernelWarning for the kernel's reports.
    """
    cdef Device client = _as_device(dev)
    cdef int t
    if isinstance(provider, Device):
        if (<Device>provider).machine is not client.machine:
            raise ValueError("provider and client belong to different machines")
        node = (<Device>provider).p2p_node
        if node is None or (<PciDev>node).p2pdma is None or not (<PciDev>node).p2pdma.providers:
            return _PciP2PdmaMapType(PCI_P2PDMA_MAP_NOT_SUPPORTED)
        provider = (<PciDev>node).p2pdma.providers[0]
    mem = _p2p_as_provider(provider)
    if (<Device>mem.owner).machine is not client.machine:
        raise ValueError("provider and client belong to different machines")
    try:
        t = pci_p2pdma_map_type_c(mem, client)
    finally:
        client.machine.flush_warnings()
    return _PciP2PdmaMapType(t)


def pci_p2pdma_state(PciP2PdmaMapState state not None, dev, phys):
    """pci_p2pdma_state(state, dev, phys): NONE for ordinary memory, else the map type.

    Mirrors include/linux/pci-p2pdma.h:pci_p2pdma_state(); returns the PCI_P2PDMA_MAP_* type. For
    P2P memory the state is (re)computed only when the provider changes
    (__pci_p2pdma_update_state()), so a state must not be shared between devices. Raises TypeError /
    ValueError for bad arguments.
    """
    cdef Device d = _as_device(dev)
    cdef u64 p = _u64(phys, "phys")
    cdef P2PTopology topo = d.machine.p2pdma
    cdef int i = topo.find_pgmap(p)
    cdef PciP2PdmaPagemap pg
    if i < 0:
        return _PciP2PdmaMapType(PCI_P2PDMA_MAP_NONE)
    pg = topo._pgmap_list[i]
    state.pgmap = pg
    if state.mem is not pg.mem:
        state.mem = pg.mem
        try:
            state.map = pci_p2pdma_map_type_c(pg.mem, d)
        finally:
            d.machine.flush_warnings()
    return _PciP2PdmaMapType(state.map)


def pci_p2pdma_bus_addr_map(provider, phys):
    """pci_p2pdma_bus_addr_map(provider, paddr) = paddr + bus_offset (dma_addr_t, wraps mod 2^64).

    Mirrors include/linux/pci-p2pdma.h:pci_p2pdma_bus_addr_map(); returns that bus address.
    ``provider``: a P2PdmaProvider, a PciP2PdmaPagemap, or a PciP2PdmaMapState (its ``mem``). No
    map-type check, as in the kernel: call it for PCI_P2PDMA_MAP_BUS_ADDR only. Raises KernelBug for
    a state that never looked up P2P memory (state->mem NULL), TypeError / ValueError for bad
    arguments.
    """
    cdef u64 p = _u64(phys, "phys")
    if isinstance(provider, PciP2PdmaMapState):
        if (<PciP2PdmaMapState>provider).mem is None:
            raise KernelBug("pci_p2pdma_bus_addr_map: state->mem is NULL (no P2P address looked up)")
        provider = (<PciP2PdmaMapState>provider).mem
    return p + _p2p_as_provider(provider).bus_offset


cdef PciDev _p2p_provider_pdev(object provider):
    if isinstance(provider, (P2PdmaProvider, PciP2PdmaPagemap)):
        provider = _p2p_as_provider(provider).owner
    if not isinstance(provider, Device):
        raise TypeError(f"provider must be a PCI Device or P2PdmaProvider, not {type(provider).__name__}")
    if (<Device>provider).p2p_node is None:
        raise ValueError(f"provider {(<Device>provider).name!r} is not a PCI device")
    return <PciDev>(<Device>provider).p2p_node


cdef PciDev find_parent_pci_dev(Device dev):
    """find_parent_pci_dev(): the device itself if PCI, else its nearest PCI ancestor (None)."""
    cdef P2PTopology topo = dev.machine.p2pdma
    cdef object d = dev
    while d is not None:
        if (<Device>d).p2p_node is not None:
            return <PciDev>(<Device>d).p2p_node
        d = topo._parents.get(d)
    return None


def pci_p2pdma_distance_many(provider, clients, verbose=False):
    """pci_p2pdma_distance_many(): summed distance from the provider to every client, -1 if any fails.

    Mirrors drivers/pci/p2pdma.c:pci_p2pdma_distance_many(); returns that int. Non-PCI clients are
    replaced by their nearest PCI parent (none: -1). The map types computed here go into the
    provider's cache as well. Raises TypeError for a provider that is not a PCI Device /
    P2PdmaProvider, ValueError for a non-PCI provider or a client of another machine. With
    ``verbose`` warns KernelWarning for each reason.
    """
    cdef PciDev pdev = _p2p_provider_pdev(provider)
    cdef PciDev pc
    cdef Device c
    cdef Machine m = pdev.host_bridge.topology.machine
    cdef int total = 0, dist = 0, t
    cdef bint not_supported = False
    cdef bint v = bool(verbose)
    clients = list(clients)
    for c in clients:
        if c.machine is not m:
            raise ValueError(f"client {c.name!r} belongs to another machine")
    if not clients:
        return -1
    try:
        for c in clients:
            pc = find_parent_pci_dev(c)
            if pc is None:
                if v:
                    m.kwarn(KernelWarning, f"{c.name}: cannot be used for peer-to-peer DMA as it is not a PCI device")
                return -1
            t = calc_map_type_and_dist(pdev, pc, &dist, v)
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

    Mirrors include/linux/pci-p2pdma.h:pci_p2pdma_distance(); returns the distance or -1. Raises
    TypeError for a provider that is not a PCI Device / P2PdmaProvider, ValueError for a non-PCI
    provider or a client of another machine.
    """
    return pci_p2pdma_distance_many(provider, [client], verbose)


# ---- the p2pmem allocator (pci_alloc_p2pmem & co.; the pool is a gen_pool of PAGE_SIZE bits) ------
# The simulator has no kernel virtual addresses: the "kernel address" of P2P memory is its CPU
# physical address (what page_to_phys() of the ZONE_DEVICE page gives).

cdef PciP2Pdma _pdev_p2pdma(object pdev):
    if not isinstance(pdev, Device):
        raise TypeError(f"pdev must be a Device, not {type(pdev).__name__}")
    node = (<Device>pdev).p2p_node
    return None if node is None else (<PciDev>node).p2pdma


def pci_alloc_p2pmem(pdev, size):
    """pci_alloc_p2pmem(): first fit in the provider's pool (newest chunk first); 0 (NULL) on failure.

    Mirrors drivers/pci/p2pdma.c:pci_alloc_p2pmem(). Returns the CPU physical address of the
    allocation (size rounded up to pages), or 0. Raises TypeError / ValueError for bad arguments.
    """
    cdef PciP2Pdma p2p = _pdev_p2pdma(pdev)
    cdef u64 n = _u64(size, "size")
    cdef u64 nbits
    if p2p is None or n == 0:
        return 0
    nbits = (n + PAGE_SIZE - 1) >> PAGE_SHIFT
    for c in p2p._chunks:                      # gen_pool_alloc() with gen_pool_first_fit
        if n > c[3]:
            continue
        bit = c[4].find(bytes(nbits))
        if bit < 0:
            continue
        c[4][bit:bit + nbits] = b"\x01" * nbits
        c[3] -= nbits << PAGE_SHIFT
        return c[0] + (bit << PAGE_SHIFT)
    return 0


def pci_free_p2pmem(pdev, addr, size):
    """pci_free_p2pmem(): give an allocation back (gen_pool_free() BUG()s on a bad address).

    Mirrors drivers/pci/p2pdma.c:pci_free_p2pmem(); returns None. Raises KernelBug for a device
    without p2pdma or an address/size not wholly allocated from its pool (the kernel's BUG),
    TypeError / ValueError for bad arguments.
    """
    cdef PciP2Pdma p2p = _pdev_p2pdma(pdev)
    cdef u64 a = _u64(addr, "addr")
    cdef u64 n = _u64(size, "size")
    cdef u64 nbits = (n + PAGE_SIZE - 1) >> PAGE_SHIFT
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
            return None
    raise KernelBug(f"gen_pool_free: {a:#x} is not in the p2pmem pool of {pdev.name!r}")


def pci_p2pmem_virt_to_bus(pdev, addr):
    """pci_p2pmem_virt_to_bus(): the PCI bus address of pool memory.

    Mirrors drivers/pci/p2pdma.c:pci_p2pmem_virt_to_bus(); returns that address, 0 for NULL or a
    device without p2pdma, U64_MAX for an address outside the pool. Raises TypeError / ValueError
    for bad arguments.
    """
    cdef PciP2Pdma p2p = _pdev_p2pdma(pdev)
    cdef u64 a = _u64(addr, "addr")
    if a == 0 or p2p is None:
        return 0
    for c in p2p._chunks:                      # gen_pool_virt_to_phys(): the pool's "phys" is the bus address
        if c[0] <= a < c[0] + c[2]:
            return c[1] + (a - c[0])
    return U64_MAX


def pci_p2pmem_publish(pdev, publish):
    """pci_p2pmem_publish(): offer the pool to other drivers (pci_p2pmem_find).

    Mirrors drivers/pci/p2pdma.c:pci_p2pmem_publish(); returns None (a device without p2pdma is a
    no-op). Raises TypeError / ValueError for bad arguments.
    """
    cdef PciP2Pdma p2p = _pdev_p2pdma(pdev)
    if p2p is not None:
        p2p.p2pmem_published = bool(publish)


def pci_p2pmem_find_many(clients):
    """pci_p2pmem_find_many(): a published provider at the smallest total distance, or None.

    Mirrors drivers/pci/p2pdma.c:pci_p2pmem_find_many(); returns that provider Device or None. Ties
    are broken by ``m.p2pdma.rng`` (get_random_u32_below()), a random.Random seeded 0. Raises
    TypeError for a client that is not a Device, ValueError for clients of different machines.
    """
    cdef list cl = list(clients)
    cdef list closest = []
    cdef int closest_distance = 0x7FFFFFFF, dist
    cdef Device c
    cdef PciP2Pdma p2p
    if not cl:
        return None
    for c in cl:
        if c is None:
            raise TypeError("clients must be Devices, not None")
        if c.machine is not (<Device>cl[0]).machine:
            raise ValueError("clients belong to different machines")
    m = (<Device>cl[0]).machine
    for d in list(m.devices.values()):         # for_each_pci_dev()
        p2p = _pdev_p2pdma(d)
        if p2p is None or not p2p._chunks or not p2p.p2pmem_published:
            continue                           # !pci_has_p2pmem()
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

    Mirrors include/linux/pci-p2pdma.h:pci_p2pmem_find(); returns and raises as
    pci_p2pmem_find_many().
    """
    return pci_p2pmem_find_many([client])


def pci_p2pmem_alloc_sgl(pdev, length):
    """pci_p2pmem_alloc_sgl(): a one-entry ScatterList over new pool memory, or None.

    Mirrors drivers/pci/p2pdma.c:pci_p2pmem_alloc_sgl(); returns the ScatterList or None (no pool
    memory). Raises ValueError for a length outside 1..2^32-1, TypeError for bad arguments.
    """
    cdef u64 n = _u64(length, "length")
    if n == 0 or n > 0xFFFFFFFF:
        raise ValueError("length must be 1..2^32-1 (u32)")
    addr = pci_alloc_p2pmem(pdev, n)
    if not addr:
        return None
    return ScatterList([(addr, n)])


def pci_p2pmem_free_sgl(pdev, sgl):
    """pci_p2pmem_free_sgl(): free every entry of a list from pci_p2pmem_alloc_sgl().

    Mirrors drivers/pci/p2pdma.c:pci_p2pmem_free_sgl(); returns None. Raises KernelBug as
    pci_free_p2pmem() does for entries not from this pool, TypeError for bad arguments.
    """
    for sg in sgl:
        pci_free_p2pmem(pdev, sg.phys, sg.length)


__all__ += ["P2PTopology", "PciHostBridge", "PciSwitch", "PciDev", "PciP2Pdma", "P2PdmaProvider",
            "PciP2PdmaPagemap", "PciP2PdmaMapState", "pci_p2pdma_map_type", "pci_p2pdma_state",
            "pci_p2pdma_bus_addr_map", "pci_p2pdma_distance", "pci_p2pdma_distance_many",
            "pci_alloc_p2pmem", "pci_free_p2pmem", "pci_p2pmem_virt_to_bus", "pci_p2pmem_publish",
            "pci_p2pmem_find", "pci_p2pmem_find_many", "pci_p2pmem_alloc_sgl", "pci_p2pmem_free_sgl"]
