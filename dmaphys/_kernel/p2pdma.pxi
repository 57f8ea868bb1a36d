# Models drivers/pci/p2pdma.c and include/linux/pci-p2pdma.h: the PCI topology (host bridges,
# switches, ACS), P2P providers (pci_p2pdma_add_resource, bus_offset), the map-type
# calculation and its per-pair cache, pci_p2pdma_state / pci_p2pdma_bus_addr_map.
# PLACEHOLDER (foundation skeleton): the P2PDMA issue replaces this file.

cdef class P2PTopology:
    cdef readonly Machine machine

    def __init__(self, Machine machine):
        self.machine = machine

    def add_device(self, dev, parent):
        if parent is not None:
            raise NotImplementedError("PCI topology (parent=) is not built yet")


cdef u64 p2p_bus_to_phys(Device dev, u64 bus_addr, u64 n) noexcept:
    """CPU physical address behind a peer BAR's bus window, or U64_MAX when addr is not one."""
    return U64_MAX


cdef int p2pdma_state_c(Device dev, u64 phys, u64 size, u64 *bus_addr) except -1:
    """pci_p2pdma_state() for the memory at phys as seen by client dev: a PCI_P2PDMA_MAP_* type.

    PCI_P2PDMA_MAP_NONE for ordinary RAM. For BUS_ADDR, *bus_addr receives
    pci_p2pdma_bus_addr_map() of phys (phys + bus_offset).
    """
    return PCI_P2PDMA_MAP_NONE
