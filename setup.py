"""Build the compiled core, dmaphys._core, from dmaphys/_core.pyx and its _kernel/*.pxi files.

Directives live here and only here. Environment switches:
  DMAPHYS_DEBUG=1     -O0 -g, bounds/initialised checks on (a debug build for bug hunting)
  DMAPHYS_ANNOTATE=1  write dmaphys/_core.html (read it for yellow lines in hot loops)
  DMAPHYS_COVERAGE=1  line tracing for coverage of .pyx/.pxi code
  DMAPHYS_OPT=-O1     override the optimisation level (e.g. -O0 for quick development builds)
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "0") not in ("", "0")


DEBUG, COVERAGE, ANNOTATE = flag("DMAPHYS_DEBUG"), flag("DMAPHYS_COVERAGE"), flag("DMAPHYS_ANNOTATE")
directives = {
    "language_level": 3,
    "binding": True,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "initializedcheck": DEBUG,
    "wraparound": False,
    "nonecheck": False,
    "cdivision": True,
    "overflowcheck": False,
    "profile": False,
    "linetrace": COVERAGE,
}
macros = [("CYTHON_TRACE_NOGIL", "1")] if COVERAGE else []
macros += [("DMAPHYS_DEBUG", "1")] if DEBUG else []
macros += [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
opt = os.environ.get("DMAPHYS_OPT") or ("-O0" if DEBUG else "-O2")
cflags = [opt, "-std=c++17", "-Wno-unused-function", "-Wno-unreachable-code"]
if DEBUG:
    cflags.append("-g")

ext = Extension(
    "dmaphys._core",
    ["dmaphys/_core.pyx"],
    language="c++",
    # dmaphys.h: the C ABI (capi.pxi); numpy's headers: its C API (batch.pxi)
    include_dirs=["dmaphys/include", numpy.get_include()],
    define_macros=macros,
    extra_compile_args=cflags,
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives=directives,
        annotate=ANNOTATE,
        force=DEBUG or COVERAGE,
        include_path=["dmaphys"],
    ),
)
