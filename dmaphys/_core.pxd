# The C face of dmaphys._core: every component's declarations (cdef classes with their C
# fields, C types and constants, the cdef entry points other Cython code may call), one
# _kernel/<component>.pxd per _kernel/<component>.pxi body. One compiled module: the bodies
# are included into _core.pyx, the faces into this file, so the C compiler still sees the whole
# DMA path in one translation unit.
#
# Other Cython code:  from dmaphys._core cimport Machine, Device, c_dma_map_phys
#                     (or `cimport dmaphys` / `from dmaphys cimport ...`: dmaphys/__init__.pxd)

include "_kernel/types.pxd"
include "_kernel/memory.pxd"
include "_kernel/machine.pxd"
include "_kernel/device.pxd"
include "_kernel/scatterlist.pxd"
include "_kernel/swiotlb.pxd"
include "_kernel/direct.pxd"
include "_kernel/iova.pxd"
include "_kernel/io_pgtable.pxd"
include "_kernel/generic_pt.pxd"
include "_kernel/io_pgtable_arm.pxd"
include "_kernel/iotlb.pxd"
include "_kernel/iommu.pxd"
include "_kernel/dma_iommu.pxd"
include "_kernel/p2pdma.pxd"
include "_kernel/debug.pxd"
include "_kernel/trace.pxd"
include "_kernel/trace_parse.pxd"
include "_kernel/mapping.pxd"
include "_kernel/batch.pxd"
include "_kernel/capi.pxd"
