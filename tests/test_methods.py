"""The methods registry: every built-in listed once, in order, light to list; its names are
the CLI's commands and the sweep's tables; a run's label comes from its config tag through
the registry (so the demo's DeepReShape HRN is "DeepReShape", not "baseline"); a method
registered at run time is a sweep table at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepreshape.cli.main import build_parser, command_names, main
from deepreshape.methods import METHODS, Method, method_of_tag, styles
from deepreshape.reports.figures import method_style

BUILTINS = ["train", "criticality", "reduce", "snl", "pi", "eval"]


def test_builtins_are_listed_once_in_order_and_are_commands() -> None:
    assert METHODS.names()[:6] == BUILTINS
    assert set(BUILTINS) <= set(command_names())
    sub = build_parser()._subparsers._group_actions[0].choices  # every method has its command
    for m in METHODS:
        assert isinstance(m, Method) and m.name in sub, m
        module, _, function = m.entry.partition(":")
        assert module.startswith("deepreshape.") and function
        assert m.implicit == (m.name == "train")


def test_listing_methods_imports_no_torch() -> None:
    """Names, keys and styles are what the CLI, sweep validation and legends read."""
    code = ("import sys\nfrom deepreshape.methods import METHODS, styles\n"
            "print([(m.name, sorted(m.keys), m.tag_names()) for m in METHODS], styles())\n"
            "from deepreshape.sweep.sweepfile import experiment_keys\nexperiment_keys()\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_runs_label_comes_from_its_tag_through_the_registry() -> None:
    assert method_of_tag(None).name == "train" and method_of_tag({"name": "baseline"}).name == "train"
    assert method_of_tag({"name": "deepreshape", "order": "3,2,4,1"}).name == "train"
    assert method_of_tag({"name": "deepreduce"}).name == "reduce"
    assert method_of_tag({"name": "snl"}).name == "snl"
    assert method_of_tag({"name": "someone-elses"}) is None
    assert list(styles())[:2] == ["baseline", "DeepReShape"]
    assert {"criticality probe", "DeepReDuce", "ReLU-reuse", "SNL"} <= set(styles())
    assert method_style("DeepReShape") != method_style("baseline")
    assert len({styles()[k] for k in styles()}) == len(styles())  # one look per label


def test_the_deepreshape_design_shows_as_deepreshape(tmp_path: Path, capsys, one_thread) -> None:
    """The demo's vocabulary bug: its HRN, designed by DeepReShape, was drawn as a baseline."""
    from deepreshape.demo import DEEPRESHAPE_TAG, method_of
    from deepreshape.options import RunOptions
    from deepreshape.reports.readers import method_kind
    from deepreshape.rundir.run import load_run
    from deepreshape.training import Recipe, train

    recipe = Recipe(epochs=1, batch_size=50)
    opts = RunOptions(limit=100, quiet=True)
    train("resnet18-m2-d1,1,1,1", "digits", recipe=recipe, out=tmp_path / "base", options=opts)
    train("hrn-2x2x2x-m2-d1,1,1,1", "digits", recipe=recipe, out=tmp_path / "hrn", options=opts,
          tag=DEEPRESHAPE_TAG | {"order": "3,2,4,1"})
    assert method_of(load_run(tmp_path / "hrn").config) == "DeepReShape HRN (order 3,2,4,1)"
    assert main(["pareto", str(tmp_path), "--out", str(tmp_path / "p.png"), "--json"]) == 0
    rows = {Path(r["run"]).name: r["method"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows == {"base": "baseline", "hrn": "DeepReShape"}
    assert method_kind(load_run(tmp_path / "hrn")) == "DeepReShape"  # what `report` shows


class Twice(Method):
    """A method registered at run time (a script, no packaging): evaluates a run twice."""

    name = "twice"
    display = "twice"
    keys = {"times": "how often"}
    measures = True

    def check(self, table, ctx):
        if not isinstance(table.get("times", 2), int):
            raise ctx.fail("twice.times", "must be an integer")

    def expand(self, table, ctx):
        ctx.add(self.name, dict(table), (ctx.train_id,), ctx.train_id, id=f"{ctx.train_id}#twice")


@pytest.fixture
def twice():
    METHODS.register(Twice())
    yield
    METHODS.unregister("twice")


def test_a_method_registered_at_run_time_is_a_sweep_table(twice, tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.toml"
    path.write_text("dataset = 'digits'\n[[experiment]]\nname = 'e'\narch = 'resnet18-m2-d1,1,1,1'\n"
                    "twice = { times = 3 }\n")
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [p["method"] for p in points] == ["train", "twice"]
    assert points[1]["relus"] == points[0]["relus"]  # it measures the trained network
    path.write_text(path.read_text().replace("times = 3", "times = 'x'"))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert "'twice.times': must be an integer" in capsys.readouterr().err
