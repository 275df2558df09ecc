"""`deepreshape demo --fast`: the whole path end to end, and a rerun that reuses it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deepreshape.cli.main import main

pytestmark = pytest.mark.slow


def test_demo_fast_runs_everything_and_reuses_finished_steps(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--quiet", "--out", str(out)]) == 0
    state = json.loads((out / "demo.json").read_text())
    assert set(state["steps"]) == {"count", "design", "train", "criticality", "reduce", "snl",
                                   "pi", "pareto"}
    assert state["steps"]["count"]["resnet18"]["relus"] == 557_056
    assert state["steps"]["design"]["chosen"].startswith("hrn-")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) >= 5 and all(0 <= r["acc"] <= 100 for r in summary)
    budgets = {int(b): v for b, v in state["steps"]["snl"].items()}
    assert all(v["relus"] <= b for b, v in budgets.items())
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pi = state["steps"]["pi"]
    assert pi and all(v["latency_s"] > 0 and v["bytes"] > 0 for v in pi.values())
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert err.count("reused") == 8


@pytest.mark.parametrize("blocked", ["spu"])
def test_demo_falls_back_to_the_cost_model_without_spu(tmp_path: Path, monkeypatch, blocked: str
                                                       ) -> None:
    from deepreshape.demo import _private_inference
    from deepreshape.train import Recipe, train

    train("resnet18-m4-d1,1,1,1", "digits", recipe=Recipe(epochs=1, batch_size=64),
          out=tmp_path / "r", quiet=True)
    monkeypatch.setitem(__import__("sys").modules, blocked, None)  # import spu -> ImportError
    said: list[str] = []
    res = _private_inference([str(tmp_path / "r")], 1, said.append)
    est = res[str(tmp_path / "r")]
    assert est["estimated"] is True and est["latency_s"] > 0 and est["bytes"] > 0
    assert "SPU not installed" in said[0] and "estimate" in said[0]
