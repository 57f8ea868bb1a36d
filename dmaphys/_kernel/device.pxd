# The C face of _kernel/device.pxi: struct device's DMA fields (include/linux/device.h, dma-direct.h) and the device's bus access.

cdef struct bus_dma_region:                    # include/linux/dma-direct.h
    u64 cpu_start                              # cpu_start
    u64 dma_start                              # dma_start
    u64 size                                   # size


cdef class Device:
    cdef readonly Machine machine              # (simulator) the Machine it sits in
    cdef readonly str name                     # dev_name(dev)
    # --- struct device ---
    cdef bint has_dma_mask                     # dev->dma_mask != NULL
    cdef u64 _dma_mask                         # *dev->dma_mask
    cdef public u64 coherent_dma_mask          # dev->coherent_dma_mask
    cdef public u64 bus_dma_limit              # dev->bus_dma_limit
    cdef vector[bus_dma_region] range_map      # dev->dma_range_map (empty = none)
    cdef readonly bint coherent                # dev_is_dma_coherent()
    cdef public bint force_bounce              # is_swiotlb_force_bounce(dev)
    cdef public u64 min_align_mask             # dma_get_min_align_mask()
    cdef public u64 max_segment_size           # dma_get_max_seg_size()
    cdef public u64 seg_boundary_mask          # dma_get_seg_boundary()
    cdef public bint dma_skip_sync             # dev->dma_skip_sync
    cdef public bint dma_uses_io_tlb           # dev->dma_uses_io_tlb
    cdef public IoTlbMem dma_io_tlb_mem        # IoTlbMem or None (typed: no refcounting on the hot path)
    cdef readonly bint pci                     # dev_is_pci(dev)
    cdef readonly bint removed                 # (simulator) Machine.remove_device() ran: every access faults, C ABI capsules refuse it
    cdef public bint untrusted                 # pdev->untrusted (external-facing port)
    # --- IOMMU (set by Iommu.attach_device) ---
    cdef readonly object domain                # IommuDomain or None
    cdef public bint dma_iommu                 # use_dma_iommu(dev)
    # --- P2PDMA (set by P2PTopology) ---
    cdef readonly object p2p_node              # position in the PCI topology
    # --- statistics ---
    cdef public u64 arch_sync_for_device       # arch_sync_dma_for_device() calls (non-coherent)
    cdef public u64 arch_sync_for_cpu          # arch_sync_dma_for_cpu() calls
    cdef public u64 dma_reads                  # (simulator) device reads made
    cdef public u64 dma_writes                 # (simulator) device writes made
    cdef public u64 faults                     # (simulator) faulted device accesses
# the device's bus read/write: nogil (takes the GIL itself for faults, P2P routing, dma-debug)
cdef int device_access(Device dev, u64 addr, u8 *buf, u64 n, bint write) except -1 nogil
cdef int bus_access_phys(Device dev, u64 phys, u8 *buf, u64 n, bint write) except -1 nogil
