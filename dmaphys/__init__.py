"""dmaphys: the Linux kernel's physical-address DMA-mapping layer, simulated byte for byte.

    import dmaphys as dma
    m = dma.Machine(ram=[(0, 3 << 30), (4 << 30, 13 << 30)], cpus=4)
    dev = m.add_device("nvme0", dma_mask=dma.DMA_BIT_MASK(64))
    addr = dma.dma_map_phys(dev, phys, 4096, dma.DMA_TO_DEVICE, 0)

The names, argument order, constants and return conventions are the kernel's. The compiled
core is :mod:`dmaphys._core`; :mod:`dmaphys.reference` is a pure-Python implementation of the
same API used as the test oracle (set ``DMAPHYS_PUREPYTHON=1`` to make ``import dmaphys``
use it instead, e.g. to step through an algorithm in a debugger).
"""

import os as _os

from ._version import __version__  # noqa: F401
from .constants import *  # noqa: F403
from .constants import __all__ as _const_all
from .errors import *  # noqa: F403
from .errors import __all__ as _err_all

if _os.environ.get("DMAPHYS_PUREPYTHON", "0") not in ("", "0"):
    from . import reference as _impl
    BACKEND = "reference"
else:
    try:
        from . import _core as _impl
    except ImportError:
        # e.g. `python -m dmaphys` in a source checkout that was never built: say what is missing
        # (Python's own message suggests an import cycle, which misleads)
        raise ImportError(
            f"dmaphys: the compiled core dmaphys._core is not built in {_os.path.dirname(__file__)}. "
            "Install the package (pip install .) and run it outside the source tree, build in place "
            "(python setup.py build_ext --inplace), or set DMAPHYS_PUREPYTHON=1 for the pure-Python "
            "reference model.") from None
    BACKEND = "core"

globals().update({_n: getattr(_impl, _n) for _n in _impl.__all__})


def get_include() -> str:
    """The directory holding dmaphys.h, the C ABI header (like numpy.get_include()).

    Build a C device model with ``-I`` this directory; see docs/EMBEDDING.md.

    Simulator-only. Returns the absolute path (str). Raises nothing.
    """
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


from .trace_replay import replay  # noqa: E402,F401 (dmaphys.replay(trace, machine=...): backend-generic)

__all__ = sorted(set(_const_all) | set(_err_all) | set(_impl.__all__)
                 | {"BACKEND", "__version__", "get_include", "replay"})
