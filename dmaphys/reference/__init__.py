"""Pure-Python reference model of dmaphys: the executable specification and test oracle.

Same public names and semantics as the compiled core (dmaphys._core), written for clarity:
dicts for memory and page tables, plain lists for swiotlb slots, sorted lists for IOVA
ranges. It never imports dmaphys._core. One module per kernel file, mirroring
dmaphys/_kernel/*.pxi.
"""

from . import (
    batch,
    debug,
    direct,
    dma_iommu,
    generic_pt,
    io_pgtable,
    io_pgtable_arm,
    iommu,
    iotlb,
    iova,
    machine,
    mapping,
    p2pdma,
    scatterlist,
    swiotlb,
    trace,
    trace_parse,
)

__all__: list[str] = []
for _mod in (machine, scatterlist, swiotlb, direct, iova, io_pgtable, generic_pt, io_pgtable_arm, iotlb,
             iommu, dma_iommu, p2pdma, debug, trace, trace_parse, mapping, batch):
    __all__ += _mod.__all__
    globals().update({_n: getattr(_mod, _n) for _n in _mod.__all__})
del _mod


def replay(source, machine=None, **kwargs):
    """dmaphys.trace_replay.replay() on the reference model (see dmaphys.replay).

    Simulator-only. Returns and raises what dmaphys.replay() does.
    """
    import sys

    from ..trace_replay import replay as _replay
    return _replay(source, machine, dma=sys.modules[__name__], **kwargs)
