# The C face of _kernel/mapping.pxi: kernel/dma/mapping.c: the c_dma_* entry points (the public C API).
#
# GIL: the c_* functions below need the GIL (they may raise, warn, record, trace), except the two
# *_nogil ones, which run the common dma-direct / dma-iommu paths in C and take the GIL themselves
# for anything else. Callers running without the GIL own the machine first (machine.pxd:
# machine_enter / machine_exit). Every caller flushes queued warnings when its operation is
# complete: Machine.flush_warnings() (with the GIL).

cdef u64 c_dma_map_phys(Device dev, u64 phys, u64 size, int dir, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF
cdef int c_dma_unmap_phys(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1
# the same without the GIL: the common paths in C, the rest takes the GIL itself (mapping.pxi)
cdef u64 c_dma_map_phys_nogil(Device dev, u64 phys, u64 size, int dir,
                              unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF nogil
cdef int c_dma_unmap_phys_nogil(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1 nogil
cdef u64 c_dma_map_page_attrs(Device dev, u64 pfn, u64 offset, u64 size, int dir,
                              unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF
cdef int c_dma_unmap_page_attrs(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1
cdef u64 c_dma_map_single_attrs(Device dev, u64 ptr, u64 size, int dir,
                                unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF
cdef u64 c_dma_map_resource(Device dev, u64 phys_addr, u64 size, int dir,
                            unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF
cdef int c_dma_unmap_resource(Device dev, u64 addr, u64 size, int dir, unsigned long attrs) except -1
cdef int c_dma_mapping_error(Device dev, u64 dma_addr) except? -9999
cdef int c_dma_map_sg_attrs(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except? -9999
cdef int c_dma_unmap_sg_attrs(Device dev, ScatterList sg, int nents, int dir, unsigned long attrs) except -1
cdef int c_dma_map_sgtable(Device dev, ScatterList sgt, int dir, unsigned long attrs) except? -9999
cdef int c_dma_sync_single_for_cpu(Device dev, u64 addr, u64 size, int dir) except -1
cdef int c_dma_sync_single_for_device(Device dev, u64 addr, u64 size, int dir) except -1
cdef int c_dma_sync_sg_for_cpu(Device dev, ScatterList sg, int nelems, int dir) except -1
cdef int c_dma_sync_sg_for_device(Device dev, ScatterList sg, int nelems, int dir) except -1
cdef bint c_dma_supported(Device dev, u64 mask) noexcept
cdef int c_dma_set_mask(Device dev, u64 mask) noexcept
cdef int c_dma_set_coherent_mask(Device dev, u64 mask) noexcept
cdef u64 c_dma_get_required_mask(Device dev) noexcept
cdef u64 c_dma_max_mapping_size(Device dev) except? 0
cdef u64 c_dma_opt_mapping_size(Device dev) except? 0
cdef bint c_dma_need_sync(Device dev, u64 dma_addr) noexcept
cdef bint c_dma_need_unmap(Device dev) noexcept
cdef u64 c_dma_alloc_attrs(Device dev, u64 size, u64 *dma_handle, unsigned long attrs) except? 0xFFFFFFFFFFFFFFFF
cdef int c_dma_free_attrs(Device dev, u64 size, u64 phys, u64 dma_handle, unsigned long attrs) except -1
