"""`deepreshape demo --fast`: the whole path end to end, and a rerun that reuses it."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.demo import FAST, STEPS, _Steps
from deepreshape.options import RunOptions


@pytest.mark.slow
def test_demo_fast_runs_everything_and_reuses_finished_steps(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--fast", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"summary: {out / 'summary.md'}"  # the last line names summary.md
    state = json.loads((out / "demo.json").read_text())
    assert list(state["steps"]) == list(STEPS)
    assert state["steps"]["count"]["resnet18"]["relus"] == 557_056
    # Criticality is measured first, and the HRN is designed for the order it measured.
    crit, design = state["steps"]["criticality"], state["steps"]["design"]
    assert sorted(map(int, crit["order"].split(","))) == [1, 2, 3, 4]
    assert design["order"] == crit["order"] and design["chosen"].startswith("hrn-")
    assert crit["matches_paper"] == (crit["order"] == "3,2,4,1")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) >= 5 and all(0 <= r["acc"] <= 100 for r in summary)
    methods = {r["method"].split(" ")[0] for r in summary}
    assert {"baseline", "SNL", "DeepReDuce", "criticality"} <= methods
    budgets = {int(b): v for b, v in state["steps"]["snl"].items()}
    assert all(v["relus"] <= b for b, v in budgets.items())
    # Each warning is accounted for: SNL's when a budget was not reached by training,
    # criticality's when its order is within test-set noise (likely after 1 epoch).
    said = [str(w.message) for w in caught]
    assert sum("binarizing to the budget anyway" in m for m in said) == sum(
        not v["budget_reached"] for v in budgets.values())
    assert sum("within run-to-run noise" in m for m in said) == (not crit["resolved"])
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Secure inference and a report for the baseline, the HRN and an SNL network.
    pi = state["steps"]["pi"]
    main_runs = [str(out / "runs/baseline"), str(out / "runs/hrn")]
    assert list(pi)[:2] == main_runs and "/snl/" in list(pi)[2] and len(pi) == 3
    assert all(v["latency_s"] > 0 and v["bytes"] > 0 for v in pi.values())
    assert [v["estimated"] for v in pi.values()] == [False, True, True]  # --fast measures one
    assert all(Path(d, "report", "report.md").is_file() for d in pi)
    md = (out / "summary.md").read_text()
    first = md.split("\n\n")[1]  # the paragraph under the title: what was done
    assert first.startswith("What was done:") and "digits" in first and "epochs" in first
    assert "CPU cores" in first and " s in all" in first
    assert "| run | method | network |" in md
    assert "final epoch's top-1 accuracy on the test split" in md
    assert all(t["wall_s"] >= 0 and t["cpu_s"] >= 0 for t in state["times"].values())
    t0 = time.perf_counter()
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert err.count("reused") == len(STEPS)


def test_skipped_steps_say_skipped(tmp_path: Path, capsys) -> None:
    steps = _Steps(tmp_path, FAST, quiet=False)
    steps.run("count", "a step with nothing to do", lambda: {"skipped": "no SPU here"})
    steps.run("baseline", "a step that works", lambda: {"x": 1})
    err = capsys.readouterr().err
    assert "a step with nothing to do: skipped (no SPU here)" in err
    assert "0.0 s" not in err.split("a step that works")[0]
    saved = json.loads((tmp_path / "demo.json").read_text())["times"]
    assert saved["count"]["skipped"] is True and saved["baseline"]["skipped"] is False


@pytest.mark.slow
@pytest.mark.parametrize("blocked", ["spu"])
def test_demo_falls_back_to_the_cost_model_without_spu(tmp_path: Path, monkeypatch, blocked: str
                                                       ) -> None:
    from deepreshape.demo import _private_inference
    from deepreshape.training import Recipe, train

    train("resnet18-m4-d1,1,1,1", "digits", recipe=Recipe(epochs=1, batch_size=64), out=tmp_path / "r",
          options=RunOptions(quiet=True))
    monkeypatch.setitem(__import__("sys").modules, blocked, None)  # import spu -> ImportError
    said: list[str] = []
    res = _private_inference([str(tmp_path / "r")], 1, said.append)
    est = res[str(tmp_path / "r")]
    assert est["estimated"] is True and est["latency_s"] > 0 and est["bytes"] > 0
    assert "SPU not installed" in said[0] and "estimate" in said[0]
