"""The one trainer: KD loss, resume, DDP equality, NaN handling, run directories."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepreshape import fileio
from deepreshape.cli.main import main
from deepreshape.errors import CheckpointError, RunFailure, UsageError
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.training import Recipe, kd_loss, train

TINY = "resnet18-m4-d1,1,1,1"
FAST = Recipe(epochs=2, batch_size=64, lr=0.05)


def test_kd_loss_matches_hand_computation() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[0.5, 1.5, 0.0]])
    y = torch.tensor([1])
    T, w = 4.0, 0.9
    ps = [math.exp(v / T) for v in (2.0, 0.0, -1.0)]
    pt = [math.exp(v / T) for v in (0.5, 1.5, 0.0)]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    e = [math.exp(v) for v in (2.0, 0.0, -1.0)]
    ce = -math.log(e[1] / sum(e))
    expected = (1 - w) * ce + w * T * T * kl
    assert kd_loss(s, y, t, T, w).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(s, y, None).item() == pytest.approx(ce, rel=1e-6)


def test_run_directory_files(tmp_path: Path) -> None:
    res = train(TINY, "digits", recipe=FAST, out=tmp_path / "r", options=RunOptions(quiet=True))
    run = load_run(tmp_path / "r")
    assert run.spec.name == TINY and run.dataset == "digits"
    cfg = run.config
    assert cfg["recipe"]["lr"] == 0.05 and cfg["seed"] == 0 and "torch" in cfg["versions"]
    assert len(run.metrics) == 2 and {"loss", "train_acc", "test_acc", "lr", "seconds",
                                      "images_per_s"} <= set(run.metrics[0])
    r = run.results
    assert r["final_acc"] == pytest.approx(res.final_acc)
    # stem 4x16x16, stage1 2 slots 4x16x16, stage2 2 x 8x8x8, stage3 2 x 16x4x4, stage4 2 x 32x2x2
    assert r["relus"] == 1024 + 2048 + 1024 + 512 + 256
    ckpt = run.load_checkpoint()
    assert ckpt["epoch"] == 2 and {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)
    assert not list(tmp_path.glob("r/.*.tmp"))


def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path: Path) -> None:
    recipe = Recipe(epochs=3, batch_size=64, lr=0.05)
    full = train(TINY, "digits", recipe=recipe, out=tmp_path / "full", options=RunOptions(quiet=True))
    # Interrupt after the second epoch, then resume the same run.
    train(TINY, "digits", recipe=recipe, out=tmp_path / "cut", on_epoch_end=lambda e, m: e == 1,
          options=RunOptions(quiet=True))
    assert load_run(tmp_path / "cut").load_checkpoint()["epoch"] == 2
    resumed = train(TINY, "digits", recipe=recipe, out=tmp_path / "cut",
                    options=RunOptions(resume=True, quiet=True))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(load_run(tmp_path / "cut").metrics) == 3


def test_train_resume_run_continues_that_run(tmp_path: Path, capsys) -> None:
    """`train --resume RUN` reads the run's config (arch, data set and limit, recipe, seed):
    it was "unknown architecture 'RUN'"; the result equals the uninterrupted run."""
    recipe, opts = Recipe(epochs=2, batch_size=64, lr=0.05), RunOptions(quiet=True, limit=200, seed=3)
    full = train(TINY, "digits", recipe=recipe, out=tmp_path / "full", options=opts)
    cut = tmp_path / "cut"
    train(TINY, "digits", recipe=recipe, out=cut, on_epoch_end=lambda e, m: e == 0, options=opts)
    assert main(["train", str(cut)]) == 2  # a run directory is never read as an architecture
    assert main(["train", "--resume", str(cut), "--lr", "0.2"]) == 2  # only --epochs may change
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--resume" in err[0] and "--lr 0.05" in err[1], err
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    assert f"-> {cut}" in capsys.readouterr().out
    a, b = full.model.state_dict(), load_run(cut).model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(load_run(cut).metrics) == 2


def test_existing_run_dir_is_protected(tmp_path: Path) -> None:
    train(TINY, "digits", recipe=FAST, out=tmp_path / "r", options=RunOptions(quiet=True))
    with pytest.raises(UsageError, match="--resume"):
        train(TINY, "digits", recipe=FAST, out=tmp_path / "r", options=RunOptions(quiet=True))
    with pytest.raises(UsageError, match="different recipe"):
        train(TINY, "digits", recipe=Recipe(epochs=2, batch_size=64, lr=0.2), out=tmp_path / "r",
              options=RunOptions(quiet=True))
    res = train(TINY, "digits", recipe=Recipe(epochs=1, batch_size=64), out=tmp_path / "r",
                options=RunOptions(force=True, quiet=True))
    assert res.epochs_run == 1 and len(load_run(tmp_path / "r").metrics) == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}
    steps = 1437 // 64  # digits train split, drop_last

    def poison(model):
        calls["n"] += 1
        return torch.tensor(float("nan")) if calls["n"] > steps else torch.zeros(())

    with pytest.raises(RunFailure, match="NaN") as e:
        train(TINY, "digits", recipe=Recipe(epochs=3, batch_size=64), out=tmp_path / "r", extra_loss=poison,
              options=RunOptions(quiet=True))
    assert "\n" not in str(e.value)
    assert load_run(tmp_path / "r").load_checkpoint()["epoch"] == 1


def test_broken_and_mismatched_checkpoints(tmp_path: Path) -> None:
    train(TINY, "digits", recipe=FAST, out=tmp_path / "a", options=RunOptions(quiet=True))
    train("resnet18-m4-d1,1,1,2", "digits", recipe=FAST, out=tmp_path / "b", options=RunOptions(quiet=True))
    (tmp_path / "b" / "checkpoint.pt").write_bytes((tmp_path / "a" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint is for"):
        load_run(tmp_path / "b").model()
    (tmp_path / "a" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken checkpoint"):
        load_run(tmp_path / "a").model()
    (tmp_path / "a" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="broken config.json"):
        load_run(tmp_path / "a")


def test_atomic_write_survives_an_exception_mid_save(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    fileio.write_json(target, {"ok": 1})

    def half(p: Path) -> None:
        p.write_text('{"half":')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.atomic_write(target, half)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert target.stat().st_mode & 0o044  # readable by others (umask permitting), not 0600
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["train", "resnet99", "--out", str(tmp_path / "x")]) == 2
    assert main(["train", TINY, "--dataset", "imagenet22k", "--out", str(tmp_path / "x")]) == 2
    assert main(["train", TINY, "--epochs", "1", "--lr", "1e30", "--batch-size", "64", "--quiet",
                 "--out", str(tmp_path / "nan")]) == 1
    assert main(["eval", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("deepreshape: error:") for line in err)
    assert "valid" in err[1] and "digits" in err[1]


def test_kd_from_a_teacher_run(tmp_path: Path) -> None:
    train(TINY, "digits", recipe=FAST, out=tmp_path / "teacher", options=RunOptions(quiet=True))
    res = train("resnet18-m4-d1,1,1,1", "digits", recipe=FAST, teacher=tmp_path / "teacher",
                out=tmp_path / "student", options=RunOptions(quiet=True))
    assert load_run(tmp_path / "student").config["teacher"] == str(tmp_path / "teacher")
    assert 0 <= res.final_acc <= 100


@pytest.mark.slow
def test_short_run_on_digits_reaches_high_accuracy(tmp_path: Path) -> None:
    res = train("resnet18-m8", "digits", recipe=Recipe(epochs=8, batch_size=64, lr=0.05), out=tmp_path / "r",
                options=RunOptions(quiet=True))
    assert res.final_acc > 90.0


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    # Few steps: SGD on a tiny BN network amplifies float rounding (thread counts alone move
    # weights by 1e-3 after ~16 steps), so equality is checked where rounding has not grown.
    args = ["train", TINY, "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--quiet",
            "--limit", "256"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "deepreshape.cli.main", *args, "--out",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "deepreshape.cli.main", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_run(tmp_path / "one").load_checkpoint()["model"]
    b = load_run(tmp_path / "two").load_checkpoint()["model"]
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5)
    assert load_run(tmp_path / "two").config["world_size"] == 2
