# dmaphys._core: the compiled engine. One extension, assembled from one include file per
# kernel source file (dmaphys/_kernel/*.pxi), so the C compiler sees the whole DMA path
# (mapping -> direct/dma-iommu -> swiotlb/iova/page tables) in one translation unit.
# Compiler directives are set in setup.py only.

from dmaphys.constants import DMA_BIT_MASK
from dmaphys.errors import (KernelBug, KernelWarning, SwiotlbFullWarning, DmaDebugWarning,
                            DmaDebugError, PhysAddrError, DmaFault, IommuFault)

__all__ = ["Machine", "Device", "PhysMem"]

include "_kernel/types.pxi"
include "_kernel/memory.pxi"
include "_kernel/machine.pxi"
include "_kernel/device.pxi"
include "_kernel/scatterlist.pxi"
include "_kernel/swiotlb.pxi"
include "_kernel/direct.pxi"
include "_kernel/iova.pxi"
include "_kernel/io_pgtable.pxi"
include "_kernel/generic_pt.pxi"
include "_kernel/io_pgtable_arm.pxi"
include "_kernel/iotlb.pxi"
include "_kernel/iommu.pxi"
include "_kernel/dma_iommu.pxi"
include "_kernel/p2pdma.pxi"
include "_kernel/debug.pxi"
include "_kernel/trace.pxi"
include "_kernel/trace_parse.pxi"
include "_kernel/mapping.pxi"
include "_kernel/batch.pxi"
include "_kernel/capi.pxi"
