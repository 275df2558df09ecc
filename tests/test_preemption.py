"""Preemption (issue 21): SIGTERM / SIGUSR1 stop training after the current step with an
exact checkpoint, one line and exit 143; a resumed run ends with exactly the weights (and
metrics) of an uninterrupted one, for `train` and for a method (criticality)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from deepreshape.errors import Preempted, RunFailure
from deepreshape.options import RunOptions
from deepreshape.rundir import schema
from deepreshape.training import Recipe, preemption, train

pytestmark = [pytest.mark.filterwarnings("ignore:criticality order"),  # tiny runs: noisy,
              pytest.mark.filterwarnings("ignore:SNL. the mask phase ended")]  # and short

ARCH = "resnet18-m2-d1,1,1,1"
LIMIT = 200  # digits: 200 train images, batch 16 -> 12 steps an epoch
RECIPE = Recipe(epochs=3, batch_size=16)
TIMING = ("seconds", "images_per_s")


def _zero(_model: torch.nn.Module) -> torch.Tensor:
    return torch.zeros(())


def _signal_at(call: int, signum: int):
    """An `extra_loss` that adds nothing and sends this process `signum` at its `call`-th
    use (inside that training step): a preemption at a known step."""
    calls = {"n": 0}

    def extra(_model: torch.nn.Module) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return torch.zeros(())

    return extra


def _train(out: Path, extra, resume: bool = False, recipe: Recipe = RECIPE):
    return train(ARCH, "digits", recipe=recipe, out=out, extra_loss=extra,
                 options=RunOptions(limit=LIMIT, quiet=True, resume=resume))


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in schema.METRICS.read(run)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run every preempted one must end equal to."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = _train(out, _zero)
    return res.model.state_dict(), _metrics(out), out


@pytest.mark.parametrize(("signum", "call", "where"), [
    (signal.SIGTERM, 17, "in epoch 2/3 after step 5 of 12"),  # mid-epoch
    (signal.SIGUSR1, 17, "in epoch 2/3 after step 5 of 12"),  # Slurm's --signal=USR1@T
    (signal.SIGTERM, 12, "at the end of epoch 1/3"),  # during the last step of an epoch
])
def test_preempted_run_resumes_to_the_same_weights(tmp_path, reference, signum, call, where):
    out = tmp_path / "run"
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with pytest.raises(Preempted) as e:
        _train(out, _signal_at(call, signum))
    assert isinstance(e.value, RunFailure) and e.value.exit_code == 143
    name = signal.Signals(signum).name
    assert str(e.value) == (f"preempted ({name}) {where}; checkpoint saved to "
                            f"{schema.CHECKPOINT.path(out)}; run the same command with "
                            "--resume to continue")
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before  # restored
    assert preemption.pending() is None
    ckpt = schema.CHECKPOINT.load(out)
    assert (ckpt["epoch"], ckpt["step"]) == ((1, 5) if call == 17 else (1, 0))
    assert not schema.RESULTS.exists(out)

    res = _train(out, _zero, resume=True)
    weights, metrics, _ = reference
    _same_weights(res.model.state_dict(), weights)
    assert _metrics(out) == metrics  # the interrupted epoch's loss and accuracy too


def test_signal_in_the_last_step_stops_after_the_results(tmp_path, reference):
    """Caught after the last check: the run finishes (results written), then stops; a
    resume only evaluates."""
    out = tmp_path / "run"
    with pytest.raises(Preempted, match=r"preempted \(SIGTERM\) after the training finished"):
        _train(out, _signal_at(36, signal.SIGTERM))  # 3 epochs x 12 steps: the very last
    assert schema.RESULTS.exists(out)
    res = _train(out, _zero, resume=True)
    _same_weights(res.model.state_dict(), reference[0])


def test_signal_outside_a_training_step_stops_at_once():
    """Under `watch()` but outside the loop (a method between two trainings) the signal
    raises `Preempted` where the process is; outside `watch()` nothing is installed."""
    old = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=r"preempted \(SIGTERM\) between training steps"), \
            preemption.watch():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) == old

    seen = []
    t = threading.Thread(target=lambda: seen.append(preemption.watch().__enter__()))
    t.start()
    t.join(5)
    assert seen == [None] and signal.getsignal(signal.SIGTERM) == old  # no-op off the main thread


@pytest.mark.slow  # one `deepreshape` process start (~8 s idle, ~20 s on a loaded machine)
def test_cli_sigterm_exits_143_with_one_line_and_resumes(tmp_path, one_thread):
    """`deepreshape train` under SIGTERM after its first epoch: exit 143, one line naming
    the checkpoint; `train NAME --out RUN --resume` then ends with the uninterrupted weights."""
    epochs = 8  # long enough that the signal lands before the end on a slow machine
    out = tmp_path / "run"
    args = [sys.executable, "-m", "deepreshape.cli.main", "train", ARCH, "--dataset", "digits",
            "--limit", str(LIMIT), "--epochs", str(epochs), "--batch-size", "16",
            "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not (schema.METRICS.exists(out) and schema.METRICS.read(out)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("deepreshape: preempted (SIGTERM) ")
    assert f"checkpoint saved to {schema.CHECKPOINT.path(out)}; run the same command with " \
           "--resume to continue" in lines[0]

    from deepreshape.cli.main import main

    assert main([*args[3:], "--resume"]) == 0  # the resume in this process: one start is enough
    ref = train(ARCH, "digits", recipe=Recipe(epochs=epochs, batch_size=16),
                out=tmp_path / "ref", options=RunOptions(limit=LIMIT, quiet=True))
    _same_weights(schema.CHECKPOINT.load(out)["model"], ref.model.state_dict())
    assert _metrics(out) == _metrics(tmp_path / "ref")


def test_criticality_preempted_and_resumed(tmp_path, monkeypatch, one_thread):
    """A method: criticality stopped inside its second stage training, then resumed with
    --resume, scores and trains exactly as an uninterrupted one."""
    from deepreshape.optimize.criticality import criticality
    from deepreshape.training import loop

    base = tmp_path / "base"
    train(ARCH, "digits", recipe=Recipe(epochs=1, batch_size=16), out=base,
          options=RunOptions(limit=LIMIT, quiet=True))
    recipe = Recipe(epochs=2, batch_size=16)
    opts = RunOptions(limit=LIMIT, quiet=True)
    ref = criticality(base, recipe=recipe, plain=False, out=tmp_path / "ref", options=opts)

    calls = {"n": 0}
    kd_loss = loop.kd_loss

    def signalling_kd_loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == 24 + 5:  # stage 2 (after stage 1's 2 x 12 steps), step 5
            os.kill(os.getpid(), signal.SIGTERM)
        return kd_loss(*a, **k)

    monkeypatch.setattr(loop, "kd_loss", signalling_kd_loss)
    with pytest.raises(Preempted, match=r"criticality 2/4: stage2 only .*: preempted "
                                        r"\(SIGTERM\) in epoch 1/2 after step 5 of 12"):
        criticality(base, recipe=recipe, plain=False, out=tmp_path / "crit", options=opts)
    monkeypatch.setattr(loop, "kd_loss", kd_loss)
    assert schema.RESULTS.exists(tmp_path / "crit" / "stage1-kd")
    assert schema.CHECKPOINT.load(tmp_path / "crit" / "stage2-kd")["step"] == 5

    res = criticality(base, recipe=recipe, plain=False, out=tmp_path / "crit",
                      options=opts.replace(resume=True))
    assert [s.kd_acc for s in res.stages] == [s.kd_acc for s in ref.stages]
    assert res.order == ref.order
    for k in range(1, 5):
        _same_weights(schema.CHECKPOINT.load(tmp_path / "crit" / f"stage{k}-kd")["model"],
                      schema.CHECKPOINT.load(tmp_path / "ref" / f"stage{k}-kd")["model"])


def test_snl_preempted_in_both_phases_ends_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                    reference, one_thread):
    """SNL stopped in its mask phase (no checkpoint: redone on resume), then in its
    fine-tune (mid-epoch checkpoint), then resumed: the uninterrupted network, exactly."""
    from deepreshape.optimize.snl import SNLSettings, snl
    from deepreshape.training import loop

    base = reference[2]
    settings = SNLSettings(mask_recipe=Recipe(epochs=2, batch_size=16, lr=1e-3,
                                              optimizer="adam", weight_decay=0.0),
                           finetune=Recipe(epochs=2, batch_size=16, lr=1e-3))
    opts = RunOptions(limit=LIMIT, quiet=True)
    ref = snl(base, 1_200, settings=settings, out=tmp_path / "ref", options=opts)
    kd_loss = loop.kd_loss

    def signal_at(call: int):
        calls = {"n": 0}

        def signalling_kd_loss(*a, **k):
            calls["n"] += 1
            if calls["n"] == call:
                os.kill(os.getpid(), signal.SIGTERM)
            return kd_loss(*a, **k)

        return signalling_kd_loss

    out = tmp_path / "snl"
    monkeypatch.setattr(loop, "kd_loss", signal_at(5))
    with pytest.raises(Preempted, match=r"SNL mask phase .*: preempted \(SIGTERM\) in epoch 1/2 "
                                        r"after step 5 of 12; nothing saved"):
        snl(base, 1_200, settings=settings, out=out, options=opts)
    monkeypatch.setattr(loop, "kd_loss", signal_at(24 + 5))  # the mask phase again, then 5 steps
    with pytest.raises(Preempted, match=r"SNL fine-tune .*: preempted \(SIGTERM\) in epoch 1/2 "
                                        r"after step 5 of 12; checkpoint saved"):
        snl(base, 1_200, settings=settings, out=out, options=opts.replace(resume=True))
    monkeypatch.setattr(loop, "kd_loss", kd_loss)
    res = snl(base, 1_200, settings=settings, out=out, options=opts.replace(resume=True))
    assert res.relus == ref.relus == 1_200
    _same_weights(res.model.state_dict(), ref.model.state_dict())


@pytest.mark.slow  # two worker processes start (~10 s each idle)
def test_criticality_jobs_passes_the_signal_to_its_workers(tmp_path, reference, one_thread):
    """criticality --jobs 2 signalled while its workers train: each worker saves its
    checkpoint, one line for the whole run, and a resume ends with the sequential run's
    accuracies and weights."""
    from deepreshape.optimize.criticality import criticality

    base = reference[2]
    recipe = Recipe(epochs=4, batch_size=16)
    opts = RunOptions(limit=LIMIT, quiet=True)
    ref = criticality(base, recipe=recipe, plain=False, out=tmp_path / "ref", options=opts)
    out = tmp_path / "crit"

    def signal_once_training() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if any(schema.METRICS.exists(d) and schema.METRICS.read(d)
                   for d in out.glob("stage*")):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    t = threading.Thread(target=signal_once_training, daemon=True)
    t.start()
    with pytest.raises(Preempted, match=r"^criticality: preempted \(SIGTERM\); \d of 4 stage "
                                        r"trainings finished"):
        criticality(base, recipe=recipe, plain=False, out=out, jobs=2, options=opts)
    t.join(5)
    stopped = [d for d in out.glob("stage*") if not schema.RESULTS.exists(d)]
    assert any(schema.CHECKPOINT.exists(d) for d in stopped)  # a worker saved mid-run

    res = criticality(base, recipe=recipe, plain=False, out=out, jobs=2,
                      options=opts.replace(resume=True))
    assert [s.kd_acc for s in res.stages] == [s.kd_acc for s in ref.stages]
    for k in range(1, 5):
        _same_weights(schema.CHECKPOINT.load(out / f"stage{k}-kd")["model"],
                      schema.CHECKPOINT.load(tmp_path / "ref" / f"stage{k}-kd")["model"])
