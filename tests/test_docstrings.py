"""Docstrings of the public API say what each call mirrors, returns and raises (issue 9).

The set of public callables is derived by introspection, so a new one without a proper docstring
fails here: every name of ``dmaphys.__all__``, ``dmaphys._core.__all__`` and
``dmaphys.reference.__all__`` that is a function or a class, the public functions and classes
the tool modules (cli, stress, sweep, trace_replay, map_benchmark) define, and every public (no
leading underscore) method, staticmethod and property those classes define themselves. The
convention they follow is written down in docs/ARCHITECTURE.md ("Docstrings"):

- prose beyond the signature line Cython embeds;
- the kernel function / struct mirrored, named ("Models kernel/dma/mapping.c:dma_map_phys()",
  "Mirrors struct iova_domain ..."), or "Simulator-only" for what has no kernel counterpart;
- a sentence saying what it returns ("Returns ...") and one saying what it raises
  ("Raises ...", "Raises nothing." when it cannot);
- classes: the struct mirrored and what constructing one raises; exception and enum classes
  only the first two; properties: prose;
- a reference twin may instead say "Reference twin of dmaphys._core.<name>: same returns and
  raises." (the core's docstring then carries the detail).
"""
import enum
import inspect
import re
from pathlib import Path

import pytest

import dmaphys
from dmaphys import _core as core
from dmaphys import cli, map_benchmark, stress, sweep, trace_replay
from dmaphys import reference as ref

# What is not checked, and why (keep this short):
# - dunder and _private members (Python protocol methods and internals, not API);
# - members a class inherits (documented where they are defined) -- only vars(cls) is walked;
# - namedtuple field accessors (_tuplegetter): the fields are listed in the class docstring;
# - plain data attributes (Cython ``cdef public/readonly`` fields, read from the .pxd faces):
#   they cannot carry a docstring; the class docstring and the .pxd face comment them. Every
#   other getset descriptor of a core class is a Cython property and is checked.
EXCLUDED_KINDS = ("_tuplegetter", "member_descriptor")


def _c_fields():
    """{class name: names of its ``cdef public`` / ``cdef readonly`` fields} from the .pxd faces
    (and the .pxi bodies, for the few classes declared there)."""
    fields = {}
    kernel = Path(core.__file__).parent / "_kernel"
    for pxd in sorted([*kernel.glob("*.pxd"), *kernel.glob("*.pxi")]):
        cls = None
        for line in pxd.read_text().splitlines():
            m = re.match(r"cdef class (\w+)", line)
            if m:
                cls = m.group(1)
                continue
            if line[:1] not in ("", " ", "#"):
                cls = None
            m = re.match(r"\s+cdef (?:public|readonly) (.*)", line.split("#")[0])
            if cls and m:
                first, *rest = m.group(1).split(",")
                fields.setdefault(cls, set()).update([first.split()[-1], *(r.strip() for r in rest)])
    return fields


C_FIELDS = _c_fields()

SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
NAMES_KERNEL = re.compile(
    r"\b(Models|Mirrors|Simulator-only|simulator-only|Reference twin of)\b"
    r"|\b[a-z][a-z0-9_]*\(\)|\bstruct [a-z_0-9]+|\bBUG\b|\bWARN")
RETURNS = re.compile(r"\b[Rr]eturns\b")
# ... and what: an exception type, "nothing", or another call's behaviour ("as X does", "what X
# raises", "the same") -- within the sentence (a dot followed by a letter does not end it)
RAISES_WHAT = re.compile(r"\b[Rr]aises\b(?:[^.]|\.(?=\w))*?"
                         r"(\w(Error|Bug|Fault|Exit|Warning|Interrupt)\b|\b(nothing|what|as|same|only)\b)")


def _doc(obj):
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return (obj.__doc__ if isinstance(obj, property) or type(obj).__name__ == "getset_descriptor"
            else inspect.getdoc(obj)) or ""


def _prose(doc):
    lines = inspect.cleandoc(doc).splitlines()
    while lines and SIGNATURE_LINE.match(lines[0].strip()):
        lines.pop(0)
    return " ".join(lines).strip()


def _kind(obj):
    if inspect.isclass(obj):
        if issubclass(obj, (BaseException, enum.Enum)):
            return "plain class"
        return "class"
    if isinstance(obj, property) or type(obj).__name__ == "getset_descriptor":
        return "property"
    return "callable"


def _members(mod, names):
    """(qualified name, object, kind) of every public callable reached from ``names``."""
    out = []
    for name in sorted(names):
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            out.append((name, obj, _kind(obj)))
            for attr, val in vars(obj).items():
                if attr.startswith("_") or type(val).__name__ in EXCLUDED_KINDS:
                    continue
                if isinstance(obj, enum.EnumMeta) and isinstance(val, obj):
                    continue                      # enum members are values
                if type(val).__name__ == "getset_descriptor" and attr in C_FIELDS.get(name, ()):
                    continue                      # a C field (see EXCLUDED_KINDS)
                if callable(val) or isinstance(val, (property, staticmethod, classmethod)) \
                        or type(val).__name__ == "getset_descriptor":
                    out.append((f"{name}.{attr}", val, _kind(val)))
        elif callable(obj):
            out.append((name, obj, "callable"))
    return out


def _problems(qual, obj, kind, module):
    doc = _doc(obj)
    prose = _prose(doc)
    if len(re.findall(r"[A-Za-z]{2,}", prose)) < 3:
        return [f"{module}.{qual}: no prose"]
    if kind == "property":
        return []
    bad = []
    if not NAMES_KERNEL.search(doc):
        bad.append(f"{module}.{qual}: names no kernel call (nor says Simulator-only)")
    if kind == "callable" and not RETURNS.search(doc):
        bad.append(f"{module}.{qual}: does not say what it returns")
    if kind in ("callable", "class") and not RAISES_WHAT.search(doc):
        bad.append(f"{module}.{qual}: does not say what it raises (an exception type, or nothing)")
    return bad


def _module_api(mod):
    """Public functions and classes a tool module defines itself (no ``__all__`` there)."""
    return [n for n, o in vars(mod).items() if not n.startswith("_")
            and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod.__name__]


TOOL_MODULES = (cli, map_benchmark, stress, sweep, trace_replay)
CORE = _members(core, core.__all__)
REFERENCE = _members(ref, ref.__all__)
PACKAGE = [m for m in _members(dmaphys, set(dmaphys.__all__) - set(core.__all__))]


def _report(members, module):
    problems = []
    for qual, obj, kind in members:
        problems += _problems(qual, obj, kind, module)
    return problems


def test_the_public_set_is_large():
    # a guard against the introspection silently finding nothing
    assert len(CORE) > 200 and len(REFERENCE) > 200 and len(PACKAGE) > 15


def test_core_docstrings():
    assert not _report(CORE, "dmaphys._core"), "\n".join(_report(CORE, "dmaphys._core"))


def test_package_level_docstrings():
    """dmaphys.__all__ beyond the backend: errors, constants' enums and helpers, get_include, replay."""
    assert not _report(PACKAGE, "dmaphys"), "\n".join(_report(PACKAGE, "dmaphys"))


@pytest.mark.parametrize("mod", TOOL_MODULES, ids=lambda m: m.__name__)
def test_tool_module_docstrings(mod):
    """The Python modules behind the CLI (stress, sweep, replay, bench): their public API too."""
    problems = _report(_members(mod, _module_api(mod)), mod.__name__)
    assert not problems, "\n".join(problems)


def test_reference_docstrings():
    problems = []
    for qual, obj, kind in REFERENCE:
        doc = _doc(obj)
        if f"Reference twin of dmaphys._core.{qual}" in doc:
            continue
        problems += _problems(qual, obj, kind, "dmaphys.reference")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["dma_map_phys", "Machine.add_device", "IovaDomain.alloc_iova_fast"])
def test_the_check_rejects_a_bare_docstring(name):
    # the checks are not vacuous: a docstring reduced to its first line fails them
    obj = core
    for part in name.split("."):
        obj = getattr(obj, part)

    class Fake:
        __doc__ = _doc(obj).split("\n\n")[0]
    assert _problems(name, Fake, "callable", "x")
