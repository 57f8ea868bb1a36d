# The C face of _kernel/trace_parse.pxi: the reader of the dma:* trace text
# (/sys/kernel/tracing/trace and `trace-cmd report` lines of include/trace/events/dma.h and
# swiotlb:swiotlb_bounced); the grammar is in dmaphys/_trace_text.py.

cdef extern from *:
    """
    static const char *const dmaphys_tp_names[] = {
        "dma_map_phys", "dma_map_page", "dma_unmap_phys", "dma_unmap_page", "dma_map_resource",
        "dma_unmap_resource", "dma_sync_single_for_cpu", "dma_sync_single_for_device",
        "swiotlb_bounced", "dma_alloc", "dma_free", "dma_alloc_pages", "dma_free_pages",
        "dma_alloc_sgt", "dma_alloc_sgt_err", "dma_free_sgt", "dma_map_sg", "dma_map_sg_err",
        "dma_unmap_sg", "dma_sync_sg_for_cpu", "dma_sync_sg_for_device"};
    static const int dmaphys_tp_ids[] = {0, 0, 1, 1, 12, 13, 7, 8, 11, 2, 3, 14, 15, 16, 17, 18, 4, 5, 6, 9, 10};
    static const int dmaphys_tp_lens[] = {12, 12, 14, 14, 16, 18, 23, 26, 15, 9, 8, 15, 14, 13, 17, 12, 10, 14, 12, 19, 22};
    #define DMAPHYS_TP_NNAMES 21
    #define DMAPHYS_TP_NFAST 9
    static const char *const dmaphys_tp_dirs[] = {"BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE", "NONE"};
    static const int dmaphys_tp_dir_lens[] = {13, 9, 11, 4};
    static const char *const dmaphys_tp_attrs[] = {"WEAK_ORDERING", "WRITE_COMBINE", "NO_KERNEL_MAPPING",
        "SKIP_CPU_SYNC", "FORCE_CONTIGUOUS", "ALLOC_SINGLE_PAGES", "NO_WARN", "PRIVILEGED", "MMIO",
        "CACHELINES_OVERLAP", "REQUIRE_COHERENT", "CC_SHARED", "ALLOC_CC_SHARED"};
    static const int dmaphys_tp_attr_bits[] = {1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    #define DMAPHYS_TP_NATTRS 13
    #define DMAPHYS_TP_NDEVCACHE 8
    """
    const char *const *tp_names "dmaphys_tp_names"
    const int *tp_ids "dmaphys_tp_ids"
    const int *tp_lens "dmaphys_tp_lens"
    const char *const *tp_dirs "dmaphys_tp_dirs"
    const int *tp_dir_lens "dmaphys_tp_dir_lens"
    const char *const *tp_attrs "dmaphys_tp_attrs"
    const int *tp_attr_bits "dmaphys_tp_attr_bits"
    const int TP_NATTRS "DMAPHYS_TP_NATTRS"
    const int TP_NDEVCACHE "DMAPHYS_TP_NDEVCACHE"
    const int TP_NNAMES "DMAPHYS_TP_NNAMES"
    const int TP_NFAST "DMAPHYS_TP_NFAST"

cdef enum:
    TP_EV_MAP = 0
    TP_EV_UNMAP = 1
    TP_EV_SYNC_CPU = 7
    TP_EV_SYNC_DEV = 8
    TP_EV_BOUNCED = 11
    TP_EV_MAP_RES = 12
    TP_EV_UNMAP_RES = 13
    DMA_ATTR_MMIO_C = 1 << 10
    SIM_ATTRS_C = 0x7F6                        # DMA_ATTR_ALL

cdef struct tp_cur:                            # a cursor over one line (simulator)
    const char *p                              # the next byte (simulator)
    const char *end                            # the end of the line (simulator)

cdef class TraceParser:
    cdef public long long bare_unit_ns         # unit of a bare-integer timestamp (simulator)
    cdef public long long lineno               # lines read (simulator)
    cdef public long long skipped              # lines of other events (simulator)
    cdef public long long headers              # comment / header lines (simulator)
    cdef public long long unrecognised         # lines that are neither (simulator)
    cdef public long long cpus                 # "cpus=N" / "#P:N" (0: not given) (simulator)
    cdef public long long lost_events          # "CPU:N [LOST M EVENTS]" (simulator)
    cdef dict _slow_counts                     # events counted by the slow path (simulator)
    cdef long long _fast_counts[32]            # events counted by the fast path, per name (simulator)
    cdef bytes _tail                           # a partial last line (simulator)
    cdef object _line_body                     # dmaphys._trace_text.line_body: the slow path (simulator)
    cdef object _binary_error                  # dmaphys._trace_text.TraceBinaryError (simulator)
    cdef list _count_keys                      # str of each name in tp_names (simulator)
    cdef list _devs                            # recent device names: [(bytes, str)], newest first (simulator)

    cdef int _line(self, const char *s, Py_ssize_t n, list out) except -1
    cdef bint _fast(self, const char *s, Py_ssize_t n, list out) except -1
