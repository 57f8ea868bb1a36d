# The C face of _kernel/p2pdma.pxi: drivers/pci/p2pdma.c: the PCI hierarchy, struct pci_p2pdma, p2pdma_provider.

cdef enum:
    PCI_STD_NUM_BARS = 6

cdef enum:                                     # PciDev.kind
    PCI_NODE_ROOT_PORT = 1
    PCI_NODE_UPSTREAM_PORT = 2
    PCI_NODE_DOWNSTREAM_PORT = 3
    PCI_NODE_ENDPOINT = 4


cdef class PciHostBridge:
    cdef readonly P2PTopology topology         # (simulator) the P2PTopology
    cdef readonly str name                     # (simulator) name
    cdef readonly int domain                   # pci_domain_nr()
    cdef readonly bint p2p_allowlisted         # in pci_p2pdma_whitelist[]
    cdef readonly bint req_same_host_bridge    # pci_p2pdma_whitelist_entry.flags REQ_SAME_HOST_BRIDGE
    cdef readonly int vendor                   # host bridge root device vendor id
    cdef readonly int device                   # host bridge root device device id
    cdef readonly list children                # PciDev root ports
    cdef int next_bus                          # (simulator) next bus number
    cdef int next_root_slot                    # (simulator) next root port slot
    cdef void _setup(self, P2PTopology topology, str name, int domain, bint allowlisted, bint req_same)

cdef class PciSwitch:
    cdef readonly P2PTopology topology         # (simulator) the P2PTopology
    cdef readonly str name                     # (simulator) name
    cdef readonly object parent                # PciHostBridge or PciSwitch
    cdef readonly bint acs_redirect            # ACS P2P redirect enabled on its ports
    cdef readonly PciHostBridge host_bridge    # pci_find_host_bridge()
    cdef readonly PciDev upstream_port         # the switch's Upstream Port (struct pci_dev)
    cdef readonly list children                # PciDev downstream ports
    cdef int internal_bus                      # its internal bus number
    cdef int next_dsp_slot                     # (simulator) next Downstream Port slot

cdef class PciDev:
    cdef readonly int kind                     # PCI_NODE_* (pci_pcie_type())
    cdef readonly PciDev upstream              # pci_upstream_bridge(); None above a Root Port
    cdef readonly PciHostBridge host_bridge    # pci_find_host_bridge()
    cdef readonly int bus                      # pdev->bus->number
    cdef readonly int devfn                    # pdev->devfn
    cdef readonly bint acs_redir               # pci_bridge_has_acs_redir()
    cdef readonly object device                # the Device of an endpoint
    cdef readonly object switch                # the PciSwitch a port belongs to
    cdef readonly int secondary_bus            # bridges: the bus below them
    cdef readonly PciP2Pdma p2pdma             # pdev->p2pdma (NULL until pcim_p2pdma_init)
    cdef u64 idx                               # map_types_idx() of this device as a client

cdef class PciP2Pdma:
    cdef readonly PciDev pdev                  # the struct pci_dev it belongs to
    cdef readonly list providers               # P2PdmaProvider per BAR (PCI_STD_NUM_BARS max)
    cdef readonly list pagemaps                # PciP2PdmaPagemap, one per add_p2pmem
    cdef public bint p2pmem_published          # pci_p2pmem_publish()
    cdef list _chunks                          # gen_pool chunks, newest first: [start, bus, size, avail, bits]
    cdef unordered_map[u64, int] _map_types    # map_types xarray: client idx -> map type + dist

cdef class P2PdmaProvider:
    cdef readonly object owner                 # the provider Device
    cdef readonly u64 bus_offset               # struct p2pdma_provider.bus_offset
    cdef readonly int bar                      # the BAR index
    cdef readonly u64 bar_start                # pci_resource_start(pdev, bar)
    cdef readonly u64 bar_size                 # pci_resource_len(pdev, bar)
    cdef readonly PciP2Pdma p2pdma             # pdev->p2pdma

cdef class PciP2PdmaPagemap:
    cdef readonly P2PdmaProvider mem           # struct pci_p2pdma_pagemap.mem (the provider)
    cdef readonly u64 cpu_phys                 # pgmap range start
    cdef readonly u64 size                     # pgmap range length

cdef struct p2p_range:
    u64 start                                  # first address
    u64 size                                   # length
    u64 offset                                 # bus_offset (added to CPU addresses)
    int domain                                 # pci_domain_nr()
    int index                                  # into P2PTopology._pgmaps / _bars


cdef class P2PTopology:
    cdef readonly Machine machine              # (simulator) the Machine
    cdef readonly dict host_bridges            # name -> PciHostBridge
    cdef readonly dict switches                # name -> PciSwitch
    cdef readonly PciHostBridge default_host_bridge # (simulator) host bridge of plain devices
    cdef public bint cpu_supports_p2pdma       # cpu_supports_p2pdma()
    cdef public object rng                     # random.Random(0): get_random_u32_below() stand-in
    cdef dict _parents                         # non-PCI Device -> its parent Device (dev->parent)
    cdef list _bar_list                        # P2PdmaProvider per BAR, index = p2p_range.index
    cdef list _pgmap_list                      # PciP2PdmaPagemap, index = p2p_range.index
    cdef vector[p2p_range] _pgmaps             # CPU ranges of P2P pages (is_pci_p2pdma_page)
    cdef vector[p2p_range] _windows            # bus windows of the BARs, start = bus address
    cdef int _check_new_name(self, name) except -1
    cdef PciHostBridge _new_host_bridge(self, str name, bint allowlisted, bint req_same)
    cdef PciHostBridge _get_default_host_bridge(self)
    cdef object _resolve_parent(self, object parent)
    cdef int _check_ports(self, object parent) except -1
    cdef PciDev _new_port(self, object parent)
    cdef void _rebuild_ranges(self)
    cdef inline int find_pgmap(self, u64 phys) noexcept

cdef class PciP2PdmaMapState:
    cdef public object mem                     # struct pci_p2pdma_map_state.mem
    cdef public int map                        # struct pci_p2pdma_map_state.map
    cdef public object pgmap                   # the pgmap looked up last
