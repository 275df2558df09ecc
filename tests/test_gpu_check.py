"""`benchmarks/gpu_check.py`, the one prepared GPU check: run in full on CPU, its `--skip`,
its targets judged on made-up CUDA figures, and the GPU-hours it prints for the docs.
(Its own file, so a test worker runs it beside the compile tests, not after them.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"


def _gpu_check_module():
    import importlib.util
    import sys

    sys.path.insert(0, str(GPU_CHECK.parent))
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_gpu_check(*args: str, timeout: int = 1500):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _check_common(report: dict) -> None:
    assert report["meta"]["device"] == "cpu" and report["ok"] is True
    rows = report["steps"]["throughput"]["rows"]
    for arch in {r["arch"] for r in rows}:
        mine = [r for r in rows if r["arch"] == arch]
        ref = next(r for r in mine if r["path"] == "reference")
        assert ref["dtype"] == "fp32" and ref["images_per_s"] > 0
        for r in mine:
            if r["path"] == "project":
                assert r["ratio_vs_reference"] == pytest.approx(
                    r["images_per_s"] / ref["images_per_s"])
                assert r["peak_mb"] > 0 and r["dtype"] == r["config"]
                assert r["epoch_s_estimate"] == pytest.approx(50_000 / r["images_per_s"])
    tr = report["steps"]["training"]
    assert len(tr["losses"]) == 2 and tr["losses"][1] < tr["losses"][0]
    assert [r["mode"] for r in report["steps"]["snl_kd"]["rows"]] == ["plain", "plain+kd",
                                                                      "snl-mask"]
    cuda_only = [t for t in report["targets"] if "10 s" in t["target"] or "3x" in t["target"]]
    assert cuda_only and all(t["ok"] is None for t in cuda_only)


def test_gpu_check_skips_what_it_is_told_and_still_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    res = _run_gpu_check("--device", "cpu", "--out", str(out), "--skip", "throughput",
                         "training", "snl_kd", "ddp")
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    assert report["meta"]["skipped"] == ["ddp", "snl_kd", "throughput", "training"]
    assert all(step == {"skipped_by_user": True} for step in report["steps"].values())
    assert len(report["steps"]) == 4
    # nothing ran, so no target can fail, and none is judged on figures that do not exist
    assert report["ok"] is True and all(t["ok"] is not False for t in report["targets"])


@pytest.mark.slow
def test_gpu_check_cpu_run_of_every_step_with_ddp(tmp_path: Path) -> None:
    # One network and no torch.compile row: compiling on CPU alone takes most of a minute,
    # and the trainer's compiled path is held to eager in test_train_precision.
    out = tmp_path / "check.json"
    res = _run_gpu_check("--device", "cpu", "--out", str(out), "--arch", "resnet18-m8",
                         "--skip", "compile")
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    _check_common(report)
    assert report["meta"]["skipped"] == ["compile"]
    rows = report["steps"]["throughput"]["rows"]
    assert [(r["arch"], r["config"]) for r in rows] == [
        ("resnet18-m8", "reference fp32"), ("resnet18-m8", "fp32"),
        ("resnet18-m8", "bf16+channels_last")]
    ddp = report["steps"]["ddp"]
    assert ddp["ranks"] == ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    assert all(v == v for v in ddp["losses"])  # finite, not NaN


def test_gpu_check_targets_pass_and_fail_on_cuda_figures() -> None:
    gc = _gpu_check_module()
    rows = [{"arch": "resnet18", "path": "reference", "images_per_s": 1000.0},
            {"arch": "resnet18", "path": "project", "config": "fp32", "images_per_s": 2500.0,
             "ratio_vs_reference": 2.5},
            {"arch": "resnet18", "path": "project", "config": "bf16+channels_last",
             "images_per_s": 3500.0, "ratio_vs_reference": 3.5}]
    report = {"steps": {"throughput": {"rows": rows}, "training": {
        "arch": "resnet18", "losses": [4.6, 4.1], "epoch_s_per_50k": 12.5},
        "snl_kd": {"error": "RuntimeError: boom"}, "ddp": {"skipped_by_user": True}},
        "wall_s": 300.0}
    got = {t["target"]: t["ok"] for t in gc.targets(report, "cuda")}
    assert got["resnet18: trainer (bf16+channels_last) >= 3x reference img/s"] is True
    assert got["resnet18: CIFAR-100 epoch (50,000 images) < 10 s"] is False  # 12.5 s
    assert got["training: loss falls over 2 epochs and stays finite"] is True
    assert got["snl_kd step ran"] is False and got["whole check < 8 min"] is True
    assert "ddp step ran" not in got
    on_cpu = {t["target"]: t["ok"] for t in gc.targets(report, "cpu")}
    assert on_cpu["resnet18: CIFAR-100 epoch (50,000 images) < 10 s"] is None
    assert on_cpu["snl_kd step ran"] is False
    assert gc.ddp_ranks("cuda", 1) == 1 and gc.ddp_ranks("cuda", 4) == 4
    assert gc.ddp_ranks("cpu", 0) == 2


def test_gpu_check_needs_a_gpu_for_cuda_and_says_so() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda runs instead of being refused; "
                    "the other tests here cover the script")
    res = _run_gpu_check("--device", "cuda", "--out", "/nonexistent/x.json", timeout=300)
    assert res.returncode == 2 and "--device cpu" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_documented_gpu_hours_are_what_the_script_prints() -> None:
    gc = _gpu_check_module()
    table = gc.gpu_hours_table()
    res = _run_gpu_check("--estimate", timeout=300)
    assert res.returncode == 0 and res.stdout == table + "\n"
    doc = (ROOT / "docs" / "reproducing.md").read_text()
    assert "python benchmarks/gpu_check.py --estimate" in doc
    for line in table.splitlines():
        assert line in doc, line
    # By hand: 200 epochs x (50,000 + 10,000/3) images at 5,000 images/s = 0.59 h.
    assert "| baseline, 200 epochs | resnet18 | 200 | 0.59 |" in table
    # Criticality: 4 x (200 plain + 200 x 1.43 KD) epochs of hrn-5x7x2x at 5,000 x 10.7/14.6.
    h = 4 * (200 + 286) * (50_000 + 10_000 / 3) / (5_000 * 10.7 / 14.6) / 3600
    assert f"| 1,944 | {h:.2f} |" in table
