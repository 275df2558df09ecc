"""The package's layers: a module imports (at module level) only from its own layer or
lower ones, so the bottom (spec, counting) never pulls in training, SPU or plotting."""

from __future__ import annotations

import ast
from pathlib import Path

import deepreshape

SRC = Path(deepreshape.__file__).resolve().parent

# Lowest first; a module belongs to the longest prefix that names it. docs/extending.md
# draws the same table.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "fileio", "registry", "options", "lazy")),
    ("spec", ("spec", "zoo", "slotkinds", "datasets", "count", "rundir", "rundir.schema", "pi",
              "pi.protocols", "pi.linkprofile")),
    ("models", ("build", "design", "pi.costs", "rundir.run", "data", "resources")),
    ("training", ("train", "training", "evaluate")),
    ("methods' code", ("optimize", "pi.calibration", "pi.channel", "pi.engine", "pi.export",
                       "pi.link", "pi.measure", "pi.measurement", "pi.party", "pi.processes",
                       "pi.profile", "pi.program", "pi.records", "pi.shares")),
    ("methods registry", ("methods",)),
    ("reports", ("reports",)),
    ("sweeps", ("sweep",)),
    ("front", ("", "demo", "cli")),
]


def layer_of(module: str) -> int:
    """The layer index of a dotted module name inside deepreshape."""
    name = module.removeprefix("deepreshape").removeprefix(".")
    best = (-1, -1)
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or (p and name.startswith(p + "."))) and len(p) > best[1]:
                best = (i, len(p))
    if best[0] < 0:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS (and docs/extending.md)")
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(path: Path) -> list[str]:
    """Module-level imports of `path` that reach a higher layer."""
    me = module_name(path)
    mine = layer_of(me)
    bad = []
    for node in ast.parse(path.read_text()).body:
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "deepreshape":
                targets = [f"deepreshape.{a.name}" for a in node.names]
            elif node.module.startswith("deepreshape."):
                targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("deepreshape.")]
        for t in targets:
            if layer_of(t) > mine:
                bad.append(f"{me} ({LAYERS[mine][0]}) imports {t} ({LAYERS[layer_of(t)][0]})")
    return bad


def test_lower_layers_never_import_higher_ones() -> None:
    bad = [b for p in sorted(SRC.rglob("*.py")) for b in upward_imports(p)]
    assert bad == [], "\n".join(bad)


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    fake = SRC / "count.py"  # a bottom-layer module, read from a copy with a bad import
    copy = tmp_path / "count.py"
    copy.write_text(fake.read_text() + "\nfrom deepreshape.reports import pareto\n")
    monkeypatch.setattr(Path, "relative_to", lambda self, other: Path("deepreshape/count.py"))
    assert upward_imports(copy) == ["deepreshape.count (spec) imports deepreshape.reports (reports)"]


def test_every_module_has_a_layer() -> None:
    for p in SRC.rglob("*.py"):
        layer_of(module_name(p))
