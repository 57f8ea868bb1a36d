# The C face of _kernel/iotlb.pxi: the IOTLB model (VT-d IOTLB / SMMU TLB; QEMU's intel-iommu IOTLB).

cdef struct iotlb_entry:
    u64 page                                   # iova >> shift (the leaf's page number)
    u64 phys                                   # output address of the leaf (size-aligned)
    u64 stamp                                  # LRU: last use; FIFO: fill time
    u64 gen                                    # page-table generation when filled/verified
    u32 domid                                  # domain id tag (VT-d DID / SMMU ASID)
    u32 sid                                    # requester id (qemu mode); 0 in set-assoc mode
    int shift                                  # leaf size lg2
    int prot                                   # IOMMU_READ | IOMMU_WRITE
    bint valid                                 # entry holds a translation
    bint dirty                                 # (simulator) the leaf's write-dirty state as cached (dirty tracking)

ctypedef pair[u64, u64] iotlb_qkey

cdef enum:
    IOTLB_LRU = 0
    IOTLB_FIFO = 1
    IOTLB_RANDOM = 2

cdef enum:
    VTD_IOTLB_MAX_SIZE = 1024                  # hw/i386/intel_iommu_internal.h


cdef class Iotlb:
    cdef readonly str mode                     # "set-assoc" or "qemu"
    cdef readonly str policy                   # replacement policy name ("lru", "fifo", "random")
    cdef readonly u64 entries                  # capacity (sets * ways)
    cdef readonly u64 ways                     # associativity
    cdef readonly u64 sets                     # number of sets
    cdef readonly u64 seed                     # random policy seed
    cdef readonly u64 max_size                 # qemu mode: VTD_IOTLB_MAX_SIZE
    cdef readonly u64 hits                     # lookups served
    cdef readonly u64 misses                   # lookups that walked
    cdef readonly u64 fills                    # entries installed
    cdef readonly u64 evictions                # valid entries replaced
    cdef readonly u64 invalidations            # invalidation commands
    cdef readonly u64 invalidated              # entries dropped by invalidations
    cdef readonly u64 stale_hits               # hits on an entry the page table no longer holds
    cdef readonly u64 cap_resets               # qemu mode: whole-table resets at max_size
    cdef readonly object owner                 # the Iommu using it (one IOTLB per IOMMU)
    cdef bint qemu                             # mode == qemu
    cdef int pol                               # IOTLB_LRU/FIFO/RANDOM
    cdef u64 tick                              # LRU/FIFO clock
    cdef u64 rng                               # splitmix64 state (random policy)
    cdef vector[iotlb_entry] ents              # set-assoc: sets * ways, set-major
    cdef u64 nvalid[64]                        # set-assoc: valid entries per leaf size (lg2);
    cdef u64 nvalid_all                        # set-assoc: valid entries (sum of nvalid)
    cdef cppmap[iotlb_qkey, iotlb_entry] qmap  # qemu mode
    cdef iotlb_entry *find(self, u32 domid, u32 sid, u64 iova, const int *shifts, int nshifts) noexcept nogil
    cdef iotlb_entry *fill(self, u32 domid, u32 sid, u64 iova, int shift, u64 phys, int prot,
                           u64 gen) noexcept nogil
    cdef inline u64 inv_range(self, u32 domid, u64 iova, u64 size, const int *shifts,
                              int nshifts) noexcept nogil
    cdef u64 _inv_range_sets(self, u32 domid, u64 iova, u64 size, const int *shifts,
                             int nshifts) noexcept nogil
    cdef u64 _scan_range(self, u32 domid, u64 iova, u64 last) noexcept nogil
    cdef u64 inv_domain(self, u32 domid) noexcept nogil
    cdef u64 inv_all(self) noexcept
    cdef int _notify(self, object domain, u32 domid, bint all_domains, u64 iova, u64 size) except -1
