# The C face of _kernel/machine.pxi: the platform: Machine (CPUs, virtual clock, warnings queue, devices, IOMMUs).

from cpython.pythread cimport PyThread_type_lock


cdef class Machine:
    cdef readonly PhysMem mem                  # (simulator) physical memory: RAM/MMIO stores + page allocator
    cdef readonly int cpus                     # num_possible_cpus()
    cdef int _cpu                              # smp_processor_id() of the running code
    cdef readonly u64 clock_ns                 # (simulator) virtual clock (jiffies source)
    cdef readonly IoTlbMem swiotlb                     # None when disabled (io_tlb_default_mem)
    cdef readonly dict devices                         # name -> Device
    cdef readonly list iommus                  # (simulator) the Iommu instances
    cdef readonly DmaDebug dma_debug                   # DmaDebug (kernel/dma/debug.c)
    cdef readonly DmaTrace trace                       # DmaTrace (include/trace/events/dma.h)
    cdef readonly P2PTopology p2pdma                   # P2P topology (drivers/pci/p2pdma.c)
    cdef readonly list warnings_log                    # the first LOG_RECORDS_MAX kernel warnings: (category, text)
    cdef readonly u64 warnings_dropped                 # (simulator) warnings emitted past that, counted only
    cdef readonly dict ratelimit_states                # call site -> RatelimitState (dev_warn_ratelimited)
    cdef list _warn_queue                      # (simulator) warnings queued by kwarn()
    cdef set _warned_once                      # (simulator) WARN_ONCE keys already fired
    cdef object _deferred_exc                  # (simulator) first exception of an embedder callback, raised at flush
    cdef list _timers                                  # heap of (deadline_ns, seq, callback)
    cdef u64 _timer_seq                        # (simulator) timer tie-break sequence
    cdef dict _user_pages                      # (simulator) phys -> npages handed out by alloc_pages()
    # thread safety (see machine.pxi, "Threads"): a GIL-free batch loop holds _lock for the whole
    # call and sets _busy_thread; per-call entry points wait while another thread has it
    cdef PyThread_type_lock _lock                  # (simulator) the machine lock
    cdef unsigned long _busy_thread                # (simulator) thread running a GIL-free batch (0: none)
    cdef u64 _batch_fast                           # (simulator) batch elements done by the GIL-free fast paths
    cdef void kwarn(self, object category, str text, object once_key=*)
    cdef int defer_exception(self, object exc) except -1

cdef enum:
    IO_TLB_DEFAULT_SIZE_C = 64 << 20

# Threads: batch loops (batch.pxi) take the machine for their whole call; the per-call entry
# points call machine_guard(), which waits (without the GIL) while another thread has it.
cdef int machine_enter(Machine m) except -1
cdef void machine_exit(Machine m) noexcept
cdef int machine_wait(Machine m) except -1
cdef inline int machine_guard(Machine m) except -1:
    # one load and compare when no batch runs (the common case)
    if m._busy_thread != 0:
        machine_wait(m)
    return 0
