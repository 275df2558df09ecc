"""The slot-kind registry: a new ReLU slot kind is one file, and parsing, counting, the
torch module, the JAX export and the cost model all follow from registering it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepreshape import UsageError, count, count_module, parse
from deepreshape.slotkinds import SLOT_KINDS, SlotKind, SlotKindDef, parse_slot_kind, valid_forms
from deepreshape.spec import NetSpec

SRC = Path(__file__).resolve().parents[1] / "src" / "deepreshape"

# The whole of a new slot kind, as a third party would write it: x*x (a degree-2
# polynomial activation, no ReLU), or x*x/K as ``square:K``.
KIND_FILE = textwrap.dedent('''
    """``square`` / ``square:K``: x*x (divided by K), a polynomial activation with no ReLU."""
    import re

    from torch import nn

    from deepreshape.slotkinds import SlotKind, SlotKindDef


    class Square(nn.Module):
        def __init__(self, scale: int = 1) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return x * x / self.scale


    class SquareKind(SlotKindDef):
        name = "square"
        syntax = "square, square:K"
        summary = "x*x/K, no ReLU"

        def parse(self, text):
            m = re.fullmatch(r"square(?::(\\d+))?", text)
            if not m or m.group(1) == "0":
                return None
            return SlotKind("square", params=(int(m.group(1)),) if m.group(1) else ())

        def relus(self, kind, info):
            return 0

        def module(self, kind, info):
            return Square(*kind.params)

        def module_types(self):
            return (Square,)

        def hook_relus(self, module, out):
            return 0

        def jax(self, kind, info, exporter):
            scale = kind.params[0] if kind.params else 1
            return lambda p, x: x * x / scale

        def cost_features(self, kind, info, relus):
            return {"square_muls": float(info.numel)}


    DEFINITION = SquareKind()
''')

# resnet18-m2 on 16x16 digits: widths 2,4,8,16 at 16,8,4,2 pixels; every slot of a stage
# has C*H*W = 512 (stem and stage1), 256, 128, 64 elements; 13 slots, 4,352 ReLUs.
NAME = "resnet18-m2[stage1=square,stage3.*.relu2=square:4]"
# stage1 (stem included, 5 slots) and stage3's two relu2 slots are squares:
# 4,352 - 5*512 - 2*128 = 1,536 ReLUs, left in stage2 (4 x 256), stage3's relu1 slots
# (2 x 128) and stage4 (4 x 64).
WANT_STAGES = [0, 4 * 256, 2 * 128, 4 * 64]


@pytest.fixture(scope="module")
def kind_module(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("kind")
    (root / "square_kind.py").write_text(KIND_FILE)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("square_kind")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("square_kind", None)


@pytest.fixture
def square(kind_module):
    SLOT_KINDS.register(kind_module.DEFINITION)
    try:
        yield kind_module
    finally:
        SLOT_KINDS.unregister("square")


def _spec() -> NetSpec:
    return parse(NAME, dataset="digits")


def test_a_registered_kind_parses_describes_and_round_trips(square) -> None:
    spec = _spec()
    assert spec.describe() == NAME
    assert parse(spec.describe(), dataset="digits") == spec
    assert NetSpec.from_dict(spec.to_dict()) == spec
    kind = spec.slot_kind("stage3.block2.relu2")
    assert kind == SlotKind("square", params=(4,)) and str(kind) == "square:4"
    assert str(spec.slot_kind("stem.relu")) == "square"
    assert "square, square:K" in valid_forms()
    with pytest.raises(UsageError, match="square:K"):
        parse("resnet18-m2[stage1=square:0]", dataset="digits")


def test_a_registered_kind_counts_exactly_by_spec_and_by_hooks(square) -> None:
    from deepreshape import build

    spec = _spec()
    c = count(spec)
    assert [s.relus for s in c.stages] == WANT_STAGES
    assert c.relus == 1_536 and c.stem_relus == 0
    assert count(parse("resnet18-m2", dataset="digits")).relus == 4_352
    model = build(spec)
    assert isinstance(model.get_submodule("stage1.block1.relu1"), square.Square)
    assert model.get_submodule("stage3.block1.relu2").scale == 4
    hooked = count_module(model, spec)
    assert [s.relus for s in hooked.stages] == WANT_STAGES
    assert (hooked.macs, hooked.params) == (c.macs, c.params)


def test_a_registered_kind_exports_to_jax_equal_to_torch(square) -> None:
    pytest.importorskip("jax")
    import numpy as np
    import torch

    from deepreshape import build
    from deepreshape.pi.export import export_model, plain_logits

    torch.manual_seed(0)  # fewer squares than NAME: x**(2**5) overflows float32
    spec = parse("resnet18-m2[stage2.block1.relu1=square,stage3.*.relu2=square:4]",
                 dataset="digits")
    model = build(spec).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x).numpy()
    fn, params = export_model(model)
    got = plain_logits(fn, params, x)
    assert np.isfinite(want).all() and np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_a_registered_kind_gives_the_cost_model_its_features(square) -> None:
    from deepreshape.pi.costs import costmodel

    f = costmodel.features(_spec())
    assert f["relus"] == 1_536
    assert f["relu_layers"] == 4 + 2 + 4  # stage2, stage3's relu1 slots, stage4
    assert f["square_muls"] == 5 * 512 + 2 * 128
    assert f["masked_relus"] == 0
    per_stage = costmodel.stage_features(_spec())
    assert per_stage["stage1"]["square_muls"] == 5 * 512 and per_stage["stage1"]["relus"] == 0


def test_an_unknown_kind_is_one_line_listing_the_registry(square) -> None:
    with pytest.raises(UsageError) as err:
        parse("resnet18-m2[stage1=cube]", dataset="digits")
    msg = str(err.value)
    assert "\n" not in msg and "'cube'" in msg
    for d in SLOT_KINDS:
        assert d.syntax in msg
    with pytest.raises(UsageError, match="did you mean square"):
        parse_slot_kind("squar")


def test_a_kind_without_a_jax_op_is_refused_by_export_in_one_line(kind_module) -> None:
    pytest.importorskip("jax")
    from deepreshape import build
    from deepreshape.pi.export import export_model

    class TorchOnly(type(kind_module.DEFINITION)):
        name = "torchonly"

        def parse(self, text):
            return SlotKind(self.name) if text == self.name else None

        jax = SlotKindDef.jax

    SLOT_KINDS.register(TorchOnly())
    try:
        model = build(parse("resnet18-m2[stem.relu=torchonly]", dataset="digits"))
        with pytest.raises(UsageError, match="stem.relu: cannot export ReLU slot kind 'torchonly'"):
            export_model(model)
    finally:
        SLOT_KINDS.unregister("torchonly")


def test_an_unregistered_kind_is_unknown_again(kind_module) -> None:
    SLOT_KINDS.register(kind_module.DEFINITION)
    SLOT_KINDS.unregister("square")
    with pytest.raises(UsageError) as err:
        parse_slot_kind("square")
    assert "square" not in str(err.value).split(";", 1)[1]


def test_the_builtin_kinds_are_the_registry_members() -> None:
    assert SLOT_KINDS.names() == ["relu", "identity", "reuse", "mask", "poly1", "poly2"]
    for d in SLOT_KINDS:
        assert isinstance(d, SlotKindDef)
        module = d.name.rstrip("0123456789")  # poly1 and poly2 are one module's two degrees
        assert type(d).__module__ == f"deepreshape.slotkinds.{module}"
        assert d.syntax and d.summary
    assert valid_forms() == ("relu, identity, reuse:N (N>=2), mask:pixel:K[:polyD], "
                             "mask:channel:K[:polyD], poly1, poly2")
    for text in ("relu", "identity", "reuse:2", "reuse:8", "mask:pixel:7", "mask:channel:3",
                 "poly1", "poly2", "mask:pixel:7:poly2", "mask:channel:3:poly1"):
        kind = parse_slot_kind(text.upper())
        assert str(kind) == text and kind.definition is SLOT_KINDS.get(kind.kind)
    for bad in ("reuse:1", "reuse", "mask:row:3", "relu:2", ""):
        with pytest.raises(UsageError, match="valid: relu, identity, reuse:N"):
            parse_slot_kind(bad)


def test_no_layer_below_the_registry_branches_on_a_kind_name() -> None:
    """Counting, building, export and the cost model ask the kind's definition; an
    if-chain on kind names there would be a second list of kinds."""
    names = set(SLOT_KINDS.names())
    files = ["spec.py", "count.py", "build.py", "pi/export.py", "pi/costs/costmodel.py"]
    found = []
    for rel in files:
        tree = ast.parse((SRC / rel).read_text())
        skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                and f.name == "change_tags" for n in ast.walk(f)}  # display tags, moving out
        for node in ast.walk(tree):
            if (isinstance(node, ast.Compare) and id(node) not in skip
                    and isinstance(node.left, ast.Attribute) and node.left.attr == "kind"
                    and any(isinstance(c, ast.Constant) and c.value in names - {"relu"}
                            for c in node.comparators)):
                found.append(f"{rel}:{node.lineno}")
    assert not found, found


def test_counting_slot_kinds_imports_neither_torch_nor_jax() -> None:
    code = ("import sys; from deepreshape.cli.main import main; "
            "rc = main(['count', 'resnet18-m4[stage1=mask:pixel:9,stage2=reuse:2,stage3=identity]']); "
            "print(rc, 'torch' in sys.modules, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False False"


def test_a_kind_from_an_installed_plugin_works(tmp_path: Path, monkeypatch) -> None:
    """A pip-installed package registers its kind through the ``deepreshape.slot_kinds``
    entry point group: no edit of deepreshape, no register() call."""
    (tmp_path / "square_plugin.py").write_text(KIND_FILE)
    info = tmp_path / "square_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: square-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[deepreshape.slot_kinds]\nsquare = square_plugin:DEFINITION\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    SLOT_KINDS.reload_plugins()
    try:
        assert "square" in SLOT_KINDS
        assert count(_spec()).relus == 1_536
    finally:
        SLOT_KINDS.unregister("square")
        sys.modules.pop("square_plugin", None)
        monkeypatch.undo()
        SLOT_KINDS.reload_plugins()
    assert "square" not in SLOT_KINDS
