"""dmaphys/_core.pyi stays in sync with the compiled module (tools/gen_stubs.py writes it)."""

import ast
import inspect
from pathlib import Path

import dmaphys._core as core

PYI = Path(core.__file__).with_name("_core.pyi")


def _stub_tree():
    return ast.parse(PYI.read_text())


def test_every_export_has_a_stub():
    names = set()
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    assert set(core.__all__) <= names, sorted(set(core.__all__) - names)


def test_function_parameters_match():
    stubs = {n.name: n for n in _stub_tree().body if isinstance(n, ast.FunctionDef)}
    for name in core.__all__:
        obj = getattr(core, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        params = list(inspect.signature(obj).parameters)
        stub = stubs[name].args
        assert [a.arg for a in stub.posonlyargs + stub.args + stub.kwonlyargs] == [
            p for p in params if inspect.signature(obj).parameters[p].kind not in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)], name
