"""Every Python API call the docs show keeps working: the names they import exist, each
call binds to its function's signature (a keyword the API dropped fails here), and the
cheap part of docs/api.md runs for real.

The documented trainings, SNL runs and secure measurements run in their own tests
(test_train, test_snl, test_pi_measure, test_docs_commands); here they are checked for
what can change under a refactor: names and signatures.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[str, str]]:
    """(doc name, code) of every ```python block of README.md and docs/*.md."""
    return [(d.name, m.group(1)) for d in DOCS for m in BLOCK.finditer(d.read_text())]


def _bindings(tree: ast.AST) -> dict[str, Any]:
    """Names the block binds by importing from deepreshape (anywhere in it), resolved."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "deepreshape":
                    mod = importlib.import_module(a.name)
                    names[a.asname or a.name] = mod if a.asname else importlib.import_module("deepreshape")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepreshape"):
            mod = importlib.import_module(node.module)
            for a in node.names:
                assert hasattr(mod, a.name), f"{node.module} has no {a.name}"
                names[a.asname or a.name] = getattr(mod, a.name)
    return names


def _callee(func: ast.expr, names: dict[str, Any]) -> Any:
    """The object a call's function expression names (Name or module.attr), or None."""
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = names.get(func.value.id)
        if inspect.ismodule(owner):
            assert hasattr(owner, func.attr), f"{owner.__name__} has no {func.attr}"
            return getattr(owner, func.attr)
    return None


def check_calls(code: str) -> list[str]:
    """Each documented call of a deepreshape function, checked against its signature."""
    tree = ast.parse(code)
    names = _bindings(tree)
    checked = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = _callee(node.func, names)
        if fn is None or not callable(fn):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue  # *args / **kwargs: nothing to check statically
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        args = [None] * len(node.args)
        kwargs = {k.arg: None for k in node.keywords}
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise AssertionError(f"line {node.lineno}: {ast.unparse(node)[:80]}: {e}") from None
        checked.append(ast.unparse(node.func))
    return checked


@pytest.mark.parametrize("doc,code", python_blocks(), ids=lambda v: v if len(v) < 30 else "")
def test_documented_calls_bind_to_the_api(doc: str, code: str) -> None:
    check_calls(code)


def test_api_md_shows_calls_that_are_checked() -> None:
    api = dict(python_blocks())["api.md"]
    checked = set(check_calls(api))
    # the guard sees the calls: the main entry points of each section are among them
    assert {"dr.parse", "dr.count", "dr.build", "dr.design", "train", "criticality", "deepreduce",
            "snl", "evaluate_run", "measure_run", "pareto", "report", "run_sweep"} <= checked


def test_a_dropped_keyword_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="unexpected keyword argument 'seed'"):
        check_calls("from deepreshape.training import train\ntrain('resnet18', seed=1)\n")
    with pytest.raises(AssertionError, match="has no nothing_here"):
        check_calls("from deepreshape.training import nothing_here\n")


def test_the_cheap_part_of_api_md_runs() -> None:
    """Sections 1-3 (spec, counts, modules, slots, the solver, priced designs) run as shown."""
    api = dict(python_blocks())["api.md"]
    cheap = api.split("# 4.")[0]
    namespace: dict[str, Any] = {}
    exec(compile(cheap, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["c"].relus > 0 and namespace["res"].priced
    assert "identity" in namespace["thin"].describe()


def test_public_functions_survive_their_submodules_import() -> None:
    import deepreshape as dr
    import deepreshape.design.solver
    import deepreshape.optimize.snl  # noqa: F401
    import deepreshape.reports.paretoplot  # noqa: F401
    from deepreshape.optimize import snl
    from deepreshape.reports import pareto

    assert inspect.isfunction(dr.design) and inspect.isfunction(dr.build)
    assert inspect.isfunction(snl) and inspect.isfunction(pareto)
