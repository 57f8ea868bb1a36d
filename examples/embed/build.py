"""Build the embedding examples against the dmaphys that ``import dmaphys`` finds.

    python examples/embed/build.py [OUTDIR]        # builds dmaring (C) and dmaring_cy (Cython)

``build(name, outdir)`` compiles one example with setuptools into ``outdir`` (include path:
``dmaphys.get_include()``; Cython cimports resolve against the installed ``dmaphys/*.pxd``)
and returns the imported module. tests/test_embed.py and benchmarks/bench_embed.py use it,
the way numpy's test_extending builds its examples.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
from pathlib import Path

import dmaphys

HERE = Path(__file__).resolve().parent
SOURCES = {"dmaring": "dmaring.c", "dmaring_cy": "dmaring_cy.pyx"}


def build(name: str, outdir: str | os.PathLike, opt: str = "-O0", quiet: bool = True,
          source: str | os.PathLike | None = None):
    """Compile example ``name`` in ``outdir`` and import it (a fresh module object).
    ``source``: another C / .pyx file to build as module ``name`` (tests use it)."""
    from setuptools import Distribution, Extension  # type: ignore[import-untyped,unused-ignore]

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    source = Path(source) if source is not None else HERE / SOURCES[name]
    src = outdir / source.name
    shutil.copy(source, src)
    cython = src.suffix == ".pyx"
    # dmaphys's .pxd faces use C++ containers: a module that cimports them is compiled as C++
    flags = [opt] + (["-std=c++17", "-Wno-unused-function"] if cython else ["-Wall"])
    ext = Extension(name, [str(src)], include_dirs=[dmaphys.get_include()],
                    language="c++" if cython else "c", extra_compile_args=flags)
    if cython:
        from Cython.Build import cythonize
        # the .pxd files are found next to the dmaphys package that is imported
        ext = cythonize([ext], compiler_directives={"language_level": 3}, quiet=True,
                        include_path=[str(Path(dmaphys.__file__).parent.parent)])[0]
    dist = Distribution({"name": name, "ext_modules": [ext]})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(outdir)
    cmd.build_temp = str(outdir / "tmp")
    cmd.ensure_finalized()
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        cmd.run()
    path = cmd.get_ext_fullpath(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the built extension {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "build-embed"
    for n in SOURCES:
        m = build(n, target, quiet=False)
        print(f"built {m.__file__}")
