"""RunOptions: one value for how to run a method, equal to the keywords it replaces."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from deepreshape.errors import UsageError
from deepreshape.evaluate import evaluate_run
from deepreshape.optimize.criticality import criticality
from deepreshape.optimize.deepreduce import deepreduce
from deepreshape.optimize.snl import snl
from deepreshape.options import RunOptions, with_run_options
from deepreshape.rundir.run import load_run
from deepreshape.train import Recipe, train

TINY = "resnet18-m4-d1,1,1,1"
FAST = Recipe(epochs=1, batch_size=64, lr=0.05)


def test_options_fill_the_keywords_and_conflicts_are_errors() -> None:
    seen = {}

    @with_run_options
    def method(x: int, *, seed: int = 0, device: str | None = "cpu", quiet: bool = False) -> None:
        seen.update(x=x, seed=seed, device=device, quiet=quiet)

    method(1, options=RunOptions(seed=7, quiet=True))
    assert seen == {"x": 1, "seed": 7, "device": "cpu", "quiet": True}  # None keeps the default
    method(2, seed=7, options=RunOptions(seed=7))  # the same answer twice is fine
    assert seen["seed"] == 7
    method(3, seed=5, options=RunOptions())  # options at its defaults says nothing
    assert seen["seed"] == 5
    with pytest.raises(UsageError, match="seed given twice"):
        method(4, seed=5, options=RunOptions(seed=7))
    with pytest.raises(UsageError, match="must be a RunOptions"):
        method(5, options={"seed": 1})
    assert "options" in inspect.signature(method).parameters


@pytest.mark.parametrize("fn", [train, criticality, deepreduce, snl, evaluate_run])
def test_every_method_takes_options(fn) -> None:
    assert "options" in inspect.signature(fn).parameters


def test_train_with_options_equals_train_with_keywords(tmp_path: Path, one_thread) -> None:
    a = train(TINY, "digits", recipe=FAST, out=tmp_path / "a", seed=3, limit=300, quiet=True,
              device="cpu")
    b = train(TINY, recipe=FAST, out=tmp_path / "b",
              options=RunOptions(seed=3, dataset="digits", limit=300, quiet=True, device="cpu"))
    assert a.final_acc == b.final_acc
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    cfg = load_run(tmp_path / "b").config
    assert cfg["seed"] == 3 and cfg["data"]["train_size"] == 300
    # resume through options: the finished run is reused, not refused
    c = train(TINY, recipe=FAST, out=tmp_path / "b",
              options=RunOptions(seed=3, limit=300, quiet=True, resume=True))
    assert c.final_acc == b.final_acc
    r = evaluate_run(tmp_path / "b", options=RunOptions(device="cpu", seed=99))  # seed: not eval's
    assert r["relus"] == load_run(tmp_path / "b").results["relus"]
