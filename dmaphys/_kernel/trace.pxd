# The C face of _kernel/trace.pxi: include/trace/events/dma.h: the dma trace events' ring buffer.

from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF

cdef enum:
    EV_DMA_MAP_PHYS = 0
    EV_DMA_UNMAP_PHYS = 1
    EV_DMA_ALLOC = 2
    EV_DMA_FREE = 3
    EV_DMA_MAP_SG = 4
    EV_DMA_MAP_SG_ERR = 5
    EV_DMA_UNMAP_SG = 6
    EV_DMA_SYNC_SINGLE_FOR_CPU = 7
    EV_DMA_SYNC_SINGLE_FOR_DEVICE = 8
    EV_DMA_SYNC_SG_FOR_CPU = 9
    EV_DMA_SYNC_SG_FOR_DEVICE = 10
    EV_SWIOTLB_BOUNCED = 11
    TRACE_DEFAULT_CAPACITY = 1 << 16
    GFP_KERNEL_FLAGS = 0xcc0                   # __GFP_RECLAIM | __GFP_IO | __GFP_FS

cdef struct trace_entry:
    u64 ts                                     # ring buffer timestamp (virtual clock, ns)
    int cpu                                    # the CPU it was recorded on
    int id                                     # EV_* event id
    PyObject *dev                              # Device (reference held)
    PyObject *arrays                           # sg events: tuple of int tuples, else NULL
    u64 dma_addr                               # __field(u64, dma_addr)
    u64 phys_addr                              # __field(u64, phys_addr)
    u64 size                                   # __field(size_t, size)
    int dir                                    # __field(enum dma_data_direction, dir)
    unsigned long attrs                        # __field(unsigned long, attrs)
    int nents                                  # nents
    int ents                                   # ents
    int err                                    # err
    u64 dma_mask                               # swiotlb_bounced
    bint force                                 # swiotlb_bounced


cdef class DmaTrace:
    cdef readonly Machine machine              # (simulator) the Machine
    cdef public bint enabled                   # the dma events are enabled
    cdef public str comm                       # task shown in to_ftrace() lines
    cdef public int pid                        # pid shown in to_ftrace() lines
    cdef vector[trace_entry] buf               # ring buffer storage
    cdef size_t head                           # oldest event
    cdef size_t count                          # events held
    cdef size_t _capacity                      # ring buffer size (events)
    cdef readonly u64 overrun                  # events overwritten (ftrace "overrun")
    cdef void _release_all(self)
    cdef trace_entry *record(self, int id, Device dev)
    cdef void set_arrays(self, trace_entry *t, tuple arrays)
    cdef list _ordered(self)
