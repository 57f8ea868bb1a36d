"""Pure-Python reference model of dmaphys: the executable specification and test oracle.

Same public names and semantics as the compiled core (dmaphys._core), written for clarity:
dicts for memory and page tables, plain lists for swiotlb slots, sorted lists for IOVA
ranges. It never imports dmaphys._core. One module per kernel file, mirroring
dmaphys/_kernel/*.pxi.
"""

from . import machine as _machine
from . import scatterlist as _scatterlist

__all__: list[str] = []
for _mod in (_machine, _scatterlist):
    __all__ += _mod.__all__
    globals().update({_n: getattr(_mod, _n) for _n in _mod.__all__})
