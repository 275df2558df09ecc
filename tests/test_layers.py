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


def test_commands_that_do_not_train_start_without_torch(tmp_path: Path) -> None:
    """Building every command's parser (`deepreshape --help`) and the commands that only
    count, design, predict or plan load neither torch nor SPU: about 3 s of start-up each
    on this machine, where these commands take a fraction of a second."""
    import subprocess
    import sys

    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\ndataset = "digits"\n[recipe]\nepochs = 2\n'
                     '[[experiment]]\nname = "e"\narch = "hrn-{2,3}x2x2x"\n'
                     'snl = { budgets = [3000] }\ncriticality = {}\n')
    code = f"""
import contextlib, io, sys
from deepreshape.cli.main import build_parser, main
build_parser()
for argv in (["count", "resnet18"], ["list"], ["design", "--order", "3,2,4,1"],
             ["pi", "--estimate", "resnet18-m16"], ["sweep", {str(sweep)!r}, "--dry-run"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
print(sorted(m for m in ("torch", "jax", "spu") if m in sys.modules))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", res.stdout
