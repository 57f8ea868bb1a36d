# `cimport dmaphys` / `from dmaphys cimport Machine, Device, c_dma_map_phys, ...`: the C API of
# the compiled core for other Cython code. Everything is declared in dmaphys/_core.pxd (which
# includes one dmaphys/_kernel/<component>.pxd face per component); this re-exports it all.
# Build against it with include_dirs/include_path containing the directory above `dmaphys`
# (site-packages of the installed package). See docs/ARCHITECTURE.md, "The C face".

from dmaphys._core cimport *
