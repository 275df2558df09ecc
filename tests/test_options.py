"""RunOptions: the one way to say how to run a method; the old loose keywords are refused."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from deepreshape.errors import UsageError
from deepreshape.optimize.criticality import criticality
from deepreshape.optimize.deepreduce import deepreduce
from deepreshape.optimize.snl import SNLSettings, snl
from deepreshape.options import FIELDS, RunOptions, takes_run_options
from deepreshape.pi.measure import measure_run
from deepreshape.rundir.run import load_run
from deepreshape.training import Recipe, train
from deepreshape.training.evaluate import evaluate_run

TINY = "resnet18-m4-d1,1,1,1"
FAST = Recipe(epochs=1, batch_size=64, lr=0.05)
METHODS = [train, criticality, deepreduce, snl, evaluate_run, measure_run]


@pytest.mark.parametrize("fn", METHODS, ids=lambda f: f.__name__)
def test_every_method_takes_options_and_no_loose_run_keyword(fn) -> None:
    params = inspect.signature(fn).parameters
    assert params["options"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["options"].default is None
    loose = [f for f in FIELDS if f in params and not (fn is train and f == "dataset")]
    assert loose == []  # train's `dataset` is what it trains on (a name or a loaded Dataset)


@pytest.mark.parametrize("fn, args", [(train, (TINY,)), (criticality, ("runs/x",)),
                                      (deepreduce, ("runs/x",)), (snl, ("runs/x", 100)),
                                      (evaluate_run, ("runs/x",)), (measure_run, ("runs/x",))],
                         ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("key, value", [("seed", 3), ("device", "cpu"), ("quiet", True),
                                        ("resume", True), ("data_dir", "/data")])
def test_old_loose_keywords_are_refused_with_a_pointer_to_run_options(fn, args, key, value) -> None:
    with pytest.raises(TypeError, match=rf"{fn.__name__}\(\) takes run options only as "
                                        rf"options=RunOptions\({key}="):
        fn(*args, **{key: value})


def test_options_must_be_a_run_options(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be a RunOptions, got dict"):
        train(TINY, recipe=FAST, options={"seed": 1})
    with pytest.raises(UsageError, match="must be a RunOptions"):
        RunOptions.of({"seed": 1})
    assert RunOptions.of(None) == RunOptions()
    opts = RunOptions(seed=2)
    assert RunOptions.of(opts) is opts and opts.replace(quiet=True).quiet
    assert set(opts.to_dict()) == set(FIELDS)


def test_takes_run_options_keeps_the_signature_and_passes_everything_else() -> None:
    @takes_run_options
    def method(x: int, *, dataset: str = "a", options: RunOptions | None = None) -> tuple:
        return x, dataset, RunOptions.of(options).seed

    assert list(inspect.signature(method).parameters) == ["x", "dataset", "options"]
    assert method(1, dataset="b", options=RunOptions(seed=4)) == (1, "b", 4)  # a real parameter
    with pytest.raises(TypeError, match=r"options=RunOptions\(limit=5\)"):
        method(1, limit=5)
    with pytest.raises(TypeError, match="unexpected keyword"):  # not a run option: Python's own
        method(1, epochs=5)


def test_train_data_set_given_twice_is_an_error() -> None:
    with pytest.raises(UsageError, match="data set given twice"):
        train(TINY, "digits", recipe=FAST, options=RunOptions(dataset="cifar10"))


def test_snl_settings_must_be_snl_settings(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be an SNLSettings"):
        snl(tmp_path, 100, settings={"granularity": "pixel"})
    assert SNLSettings().replace(granularity="channel").granularity == "channel"


def test_train_with_options(tmp_path: Path, one_thread) -> None:
    a = train(TINY, "digits", recipe=FAST, out=tmp_path / "a",
              options=RunOptions(seed=3, limit=300, quiet=True, device="cpu"))
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
