# The C face of _kernel/iommu.pxi: drivers/iommu/iommu.c: struct iommu_device, struct iommu_domain, iommu_map/unmap.

cdef enum:                                      # include/linux/iommu.h domain type bits
    __IOMMU_DOMAIN_PAGING = 1 << 0
    __IOMMU_DOMAIN_DMA_API = 1 << 1
    __IOMMU_DOMAIN_PT = 1 << 2
    __IOMMU_DOMAIN_DMA_FQ = 1 << 3
    IOMMU_DOMAIN_BLOCKED = 0
    IOMMU_DOMAIN_IDENTITY = __IOMMU_DOMAIN_PT
    IOMMU_DOMAIN_UNMANAGED = __IOMMU_DOMAIN_PAGING
    IOMMU_DOMAIN_DMA = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API
    IOMMU_DOMAIN_DMA_FQ = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API | __IOMMU_DOMAIN_DMA_FQ

cdef enum:
    IOMMU_ENODEV = 19


# Invalidation notifiers (iommu.pxi iommu_notify): C hooks get (opaque, domain id or 0 for every
# domain, iova, size or U64_MAX for "to the end"); called with the GIL held, inside the
# invalidating call; they must not call into dmaphys.
ctypedef void (*iommu_notifier_fn)(void *opaque, u32 domain_id, u64 iova, u64 size) noexcept nogil

cdef struct iommu_c_notifier:
    iommu_notifier_fn fn                       # (simulator) the hook
    void *opaque                               # (simulator) the registrant's context, passed back unchanged

cdef struct iommu_tlb_entry:                   # QEMU's IOMMUTLBEntry (include/exec/memory.h)
    u64 iova                                   # first address of the translated page
    u64 translated_addr                        # physical address of that page
    u64 addr_mask                              # page size - 1 (the leaf's size)
    int perm                                   # IOMMU_NONE / IOMMU_RO / IOMMU_WO / IOMMU_RW


cdef class IommuDomain:
    cdef readonly Iommu iommu                  # the owning iommu_device (domain->owner)
    cdef readonly str type                     # "dma", "dma-fq", "identity", "blocked", "unmanaged"
    cdef readonly IoPgtable pgtable            # None for identity / blocked
    cdef readonly bint translates              # device accesses go through iommu_device_access
    cdef readonly u64 pgsize_bitmap            # domain->pgsize_bitmap
    cdef readonly u64 aperture_start           # domain->geometry.aperture_start
    cdef readonly u64 aperture_end             # domain->geometry.aperture_end
    cdef readonly object iova_cookie           # IommuDmaCookie (dma_iommu.pxi) for DMA domains
    cdef readonly list devices                 # the group's attached devices
    cdef readonly u32 id                       # domain id (VT-d DID / SMMU ASID) tagging IOTLB entries
    cdef readonly bint is_default              # a group's default domain (freed with its last device)
    cdef readonly bint freed                   # iommu_domain_free() has run
    cdef int ktype                             # domain->type (IOMMU_DOMAIN_* bits)
    cdef readonly bint dirty_ops               # domain->dirty_ops != NULL (allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    cdef readonly bint dirty_tracking          # the IOMMU updates dirty bits (VT-d SSADE, AMD DTE HAD, SMMUv3 CD HD)
    cdef int leaf_shifts[64]                   # leaf sizes (lg2) of pgsize_bitmap, ascending (amdv1: 35)
    cdef int nshifts                           # entries used in leaf_shifts
    # counters
    cdef readonly u64 stale_hits               # device requests served by a stale IOTLB entry
    cdef readonly u64 faults                   # translation faults in this domain
    cdef readonly u64 iotlb_syncs              # iommu_iotlb_sync_range calls (strict unmaps)
    cdef readonly u64 iotlb_flushes            # iommu_flush_iotlb_all calls (flush queue)

cdef class Iommu:
    cdef readonly Machine machine              # (simulator) the Machine
    cdef readonly str fmt                      # the page-table format of its domains
    cdef readonly bint strict                  # iommu_dma_strict (false: lazy, DMA_FQ domains)
    cdef readonly Iotlb iotlb                  # None: no translation caching
    cdef readonly list faults                  # fault records (dicts)
    cdef str _fault_mode                       # (simulator) 'raise' / 'record'
    cdef bint record_faults                    # (simulator) append fault records
    cdef readonly list domains                 # live domains (static ones first)
    cdef readonly list reserved_regions        # [(start, length, type_name)]
    cdef readonly bint shadow_on_flush         # ops->shadow_on_flush / IOMMU_CAP_DEFERRED_FLUSH
    cdef readonly bint forcedac                # iommu_dma_forcedac
    cdef readonly bint caching_mode            # VT-d cap CM (caching mode)
    cdef readonly bint dirty_tracking          # IOMMU_CAP_DIRTY_TRACKING (VT-d SSADS, AMD HDSup, SMMUv3 HTTU HD)
    cdef readonly object ias                   # input address size (bits)
    cdef readonly object oas                   # output address size (bits)
    cdef readonly bint coherent_walk           # io_pgtable_cfg.coherent_walk (ARM_SMMU_FEAT_COHERENCY)
    cdef readonly Device iommu_dev             # the IOMMU's own device (cfg->iommu_dev) when not coherent_walk, else None
    cdef readonly str name                     # iommu->dev name
    cdef readonly object fq_size               # (simulator) None or a flush-queue size override
    cdef readonly object fq_timeout            # (simulator) None or a flush-queue timeout override (ms)
    cdef readonly IommuDomain identity_domain  # ops->identity_domain (static)
    cdef readonly IommuDomain blocked_domain   # ops->blocked_domain (static)
    cdef u32 next_domid                        # (simulator) next domain id
    cdef u32 next_sid                          # (simulator) next requester id
    cdef dict sids                             # Device -> requester id
    cdef dict default_domains                  # Device -> default domain while an unmanaged one is attached
    cdef list notifiers                        # (simulator) Python invalidation callbacks: callback(domain, iova, size)
    cdef vector[iommu_c_notifier] c_notifiers  # (simulator) C invalidation hooks (register_c_notifier)
    cdef bint has_notifiers                    # (simulator) either of the two is non-empty (call-site test)
    cdef int _free_domain(self, IommuDomain d) except -1
    cdef int _attach(self, Device dev, IommuDomain d) except -1
    cdef int _switch(self, Device dev, IommuDomain old, IommuDomain new) except -1
    cdef int _detach_device(self, Device dev) except -1
    cdef u32 sid_of(self, Device dev)
    cdef int register_c_notifier(self, iommu_notifier_fn fn, void *opaque) except -1
    cdef int unregister_c_notifier(self, iommu_notifier_fn fn, void *opaque) noexcept
cdef int iommu_map_nosync_c(IommuDomain d, u64 iova, u64 paddr, u64 size, int prot) except? -9999
cdef int iommu_sync_map_c(IommuDomain d, u64 iova, u64 size) except? -9999
cdef int iommu_map_c(IommuDomain d, u64 iova, u64 paddr, u64 size, int prot) except? -9999
cdef u64 iommu_unmap_fast_c(IommuDomain d, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF
cdef u64 iommu_unmap_c(IommuDomain d, u64 iova, u64 size) except? 0xFFFFFFFFFFFFFFFF
cdef int iommu_iotlb_sync_range(IommuDomain d, u64 iova, u64 size) except -1
cdef int iommu_flush_iotlb_all(IommuDomain d) except -1
cdef int iommu_read_and_clear_dirty_c(IommuDomain d, u64 iova, u64 size, u64 flags, list rec) except? -9999
cdef u64 iommu_iova_to_phys_c(IommuDomain d, u64 iova) noexcept
# nogil: takes the GIL itself for faults, stale-IOTLB reports, qemu-mode requester ids, dma-debug
cdef int iommu_device_access(Device dev, u64 iova, u8 *buf, u64 n, bint write) except -1 nogil
cdef int iommu_notify(Iommu mmu, IommuDomain d, u64 iova, u64 size) except -1
cdef int device_translate(Device dev, u64 addr, bint write, iommu_tlb_entry *out) except -1 nogil
