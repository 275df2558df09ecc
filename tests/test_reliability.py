"""Trust: checkpoints cannot run code, a run directory has one writer, resumes leave no
trace, and broken run files are named for what they are."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepreshape import fileio
from deepreshape.cli.main import main
from deepreshape.errors import CheckpointError, RunFailure, UnsafeFileError, UsageError
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.training import Recipe, train

TINY = "resnet18-m4-d1,1,1,1"
SMALL = ["--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--limit", "128", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """What a hostile checkpoint holds: unpickling it calls open(marker, "w")."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "base"
    assert main(["train", TINY, *SMALL, "--out", str(out)]) == 0
    return out


def _plant(path: Path, marker: Path) -> None:
    torch.save({"arch": "x", "model": {"w": torch.zeros(1)}, "rng": _Payload(marker)}, path)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Loading the planted file the unsafe way does create the marker (the tests below can fail)."""
    marker = tmp_path / "ran"
    _plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def _refused(argv: list[str], marker: Path, capsys) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("deepreshape: error:") and "refused" in err[0], err
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "pi", "train --resume", "train --teacher",
                                     "criticality", "reduce", "snl"])
def test_planted_checkpoint_is_refused_and_never_runs(base: Path, tmp_path: Path, capsys,
                                                      command: str) -> None:
    evil, marker = tmp_path / "evil", tmp_path / "ran"
    shutil.copytree(base, evil)
    _plant(evil / "checkpoint.pt", marker)
    argv = {
        "eval": ["eval", str(evil)],
        "pi": ["pi", str(evil), "--samples", "1"],
        "train --resume": ["train", TINY, *SMALL, "--epochs", "2", "--out", str(evil), "--resume"],
        "train --teacher": ["train", TINY, *SMALL, "--teacher", str(evil),
                            "--out", str(tmp_path / "student")],
        "criticality": ["criticality", str(evil), *SMALL, "--out", str(tmp_path / "c")],
        "reduce": ["reduce", str(evil), *SMALL, "--out", str(tmp_path / "r")],
        "snl": ["snl", str(evil), "--budget", "1000", *SMALL, "--out", str(tmp_path / "s")],
    }[command]
    if command == "pi" and importlib.util.find_spec("jax") is None:  # no `pi` extra here:
        with pytest.raises(UnsafeFileError, match="refused"):  # the load `pi RUN` does first
            load_run(evil).model()
        assert not marker.exists()
        return
    _refused(argv, marker, capsys)


def test_planted_snl_mask_phase_is_refused_on_resume(base: Path, tmp_path: Path, capsys) -> None:
    out, marker = tmp_path / "snl", tmp_path / "ran"
    out.mkdir()
    _plant(out / "mask_phase.pt", marker)
    _refused(["snl", str(base), "--budget", "1000", *SMALL, "--out", str(out), "--resume"],
             marker, capsys)


def test_planted_plain_pickle_is_refused(base: Path, tmp_path: Path) -> None:
    """A file in the old (non-zip) torch format, or a bare pickle, is held to the same rule."""
    evil, marker = tmp_path / "evil", tmp_path / "ran"
    shutil.copytree(base, evil)
    (evil / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="broken checkpoint"):  # not even read as data
        load_run(evil).model()
    torch.save({"model": _Payload(marker)}, evil / "checkpoint.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match="refused"):
        load_run(evil).model()
    assert not marker.exists()


def test_new_checkpoints_need_no_allowed_globals(base: Path) -> None:
    assert torch.serialization.get_unsafe_globals_in_checkpoint(base / "checkpoint.pt") == []
    torch.load(base / "checkpoint.pt", weights_only=True)  # torch's own rule, no allowance


def _to_legacy(rng: dict) -> dict:
    """The RNG states as checkpoints before this change stored them (pickled NumPy/Python)."""
    n, p = rng["numpy"], rng["python"]
    return {**rng, "numpy": (n["bit_generator"], n["key"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["cached_gaussian"]),
            "python": (p["version"], tuple(p["state"]), p["gauss_next"])}


def test_checkpoints_written_before_the_change_still_resume_exactly(tmp_path: Path) -> None:
    recipe = Recipe(epochs=3, batch_size=64, lr=0.05)
    full = train(TINY, "digits", recipe=recipe, out=tmp_path / "full", options=RunOptions(quiet=True))
    train(TINY, "digits", recipe=recipe, out=tmp_path / "cut", on_epoch_end=lambda e, m: e == 1,
          options=RunOptions(quiet=True))
    ckpt_path = tmp_path / "cut" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    legacy = {**ckpt, "rng": _to_legacy(ckpt["rng"])}
    fileio.save_torch(ckpt_path, legacy)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt_path)  # really the old form
    np.random.seed(123)  # resume must restore these, not keep them
    random.seed(123)
    resumed = train(TINY, "digits", recipe=recipe, out=tmp_path / "cut",
                    options=RunOptions(resume=True, quiet=True))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- one writer


def _lock_is_free(run_dir: Path) -> bool:
    """Whether the writer lock of `run_dir` can be taken now (a new open file conflicts with
    any holder, this process included)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_second_writer_is_refused_at_once(base: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from deepreshape.rundir.run import writer_lock\n"
         f"with writer_lock({str(run)!r}):\n print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        code = main(["train", TINY, *SMALL, "--epochs", "2", "--out", str(run), "--resume"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, err
        assert "being written by another deepreshape process" in err[0]
        assert f"pid {holder.pid}" in err[0]
        assert time.monotonic() - t0 < 30  # refused at once, not after training
        assert len(load_run(run).metrics) == 1  # nothing of the refused run was written
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert _lock_is_free(run)  # a killed holder's lock is gone with it


def test_the_lock_is_released_on_every_exit_path(tmp_path: Path) -> None:
    run = tmp_path / "r"

    def fail(epoch: int, metrics: dict) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(TINY, "digits", recipe=Recipe(epochs=1, batch_size=64), out=run, on_epoch_end=fail,
              options=RunOptions(quiet=True))
    assert _lock_is_free(run)
    train(TINY, "digits", recipe=Recipe(epochs=1, batch_size=64), out=run,
          options=RunOptions(quiet=True, force=True))
    assert _lock_is_free(run)


def test_a_failed_start_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="batch size"):
        train(TINY, "digits", recipe=Recipe(epochs=1, batch_size=100_000), out=tmp_path / "a" / "b",
              options=RunOptions(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_resume_after_a_kill_between_metrics_and_checkpoint(tmp_path: Path) -> None:
    """Killed after epoch 3's metrics line but before its checkpoint, with a torn temporary
    checkpoint left over: the resume drops the extra line and the temporary file, and ends
    with the uninterrupted run's weights and metrics epochs."""
    recipe = Recipe(epochs=4, batch_size=64, lr=0.05)
    full = train(TINY, "digits", recipe=recipe, out=tmp_path / "full", options=RunOptions(quiet=True))
    cut = tmp_path / "cut"
    train(TINY, "digits", recipe=recipe, out=cut, on_epoch_end=lambda e, m: e == 1,
          options=RunOptions(quiet=True))
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("\n".join([*lines, lines[-1].replace('"epoch": 2', '"epoch": 3')])
                                      + "\n")
    (cut / ".checkpoint.pt.x1y2.tmp").write_bytes(b"torn")
    resumed = train(TINY, "digits", recipe=recipe, out=cut, options=RunOptions(resume=True, quiet=True))
    assert [m["epoch"] for m in load_run(cut).metrics] == [1, 2, 3, 4]
    assert not list(cut.glob(".*.tmp"))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["test_acc"] for m in load_run(cut).metrics] == \
        [m["test_acc"] for m in load_run(tmp_path / "full").metrics]


# --------------------------------------------------------------------------- bad run directories


def _edit_config(run: Path, change) -> None:
    cfg = json.loads((run / "config.json").read_text())
    change(cfg)
    (run / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("field, value, message", [
    ("num_classes", 100, "predicts 100 classes"), ("input_size", 32, "takes 3x32x32 inputs")])
def test_a_teacher_for_other_data_is_refused(base: Path, tmp_path: Path, capsys, field: str,
                                             value: int, message: str) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(base, teacher)
    _edit_config(teacher, lambda c: c["spec"].update({field: value}))
    code = main(["train", TINY, *SMALL, "--teacher", str(teacher), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "s").exists()


def test_run_directory_problems_are_named(base: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    _edit_config(run, lambda c: c.pop("data"))
    assert main(["eval", str(run)]) == 2
    assert "no 'data' section" in capsys.readouterr().err

    shutil.copytree(base, run, dirs_exist_ok=True)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "model": [1, 2, 3]}, run / "checkpoint.pt")
    assert main(["eval", str(run)]) == 2
    assert "'model' is not a state dict" in capsys.readouterr().err

    torch.save({"arch": ckpt["arch"], "model": ckpt["model"]}, run / "checkpoint.pt")  # weights only
    assert main(["train", TINY, *SMALL, "--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume" in err[0] and "optimizer" in err[0], err


def test_a_config_from_a_newer_version(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    _edit_config(run, lambda c: c.update(versions={**c["versions"], "deepreshape": "99.0"},
                                          quantization={"bits": 4}))
    with pytest.warns(UserWarning, match="newer than this.*ignoring the fields it added: quantization"):
        load_run(run)
    _edit_config(run, lambda c: c["spec"].update(activation="gelu"))  # changes the network
    with pytest.raises(CheckpointError, match="activation.*newer deepreshape"), \
            pytest.warns(UserWarning, match="newer than this"):
        load_run(run)


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, capsys, monkeypatch) -> None:
    real = Path.write_bytes

    def full(self: Path, data) -> int:
        if self.name.startswith(".checkpoint.pt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "r"
    assert main(["train", TINY, *SMALL, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepreshape: error: {out / 'checkpoint.pt'}: No space left on device "
                   "(the disk is full; files completed before this one are kept)"]
    assert not list(out.glob(".*.tmp"))


def test_pi_keeps_a_measurement_it_cannot_write(tmp_path: Path) -> None:
    from deepreshape.pi.records import write_result

    (tmp_path / "afile").write_text("")
    with pytest.raises(RunFailure, match="saved in") as e:
        write_result(tmp_path / "afile", {"protocol": "cheetah", "latency_s": 1.5})
    spare = Path(str(e.value).rsplit(" ", 1)[-1])
    assert json.loads(spare.read_text()) == {"protocol": "cheetah", "latency_s": 1.5, "link": "loopback"}
    spare.unlink()


def test_argparse_errors_are_one_line_with_the_closest_form(capsys) -> None:
    for argv, hint in ((["count", "resnet18", "--jsn"], "did you mean --json?"),
                       (["pi", "--estimate", "resnet18", "--protocol", "cheeta"],
                        "did you mean cheetah?"),
                       (["snl", "runs/x"], "required: --budget"),
                       (["count", "resnet18", "--depths", "a,b"], "comma-separated integers"),
                       # abbreviations are refused (they change meaning when flags are added)
                       (["count", "resnet18", "--input-siz", "32"], "did you mean --input-size?"),
                       (["design", "--order", "3,2,4,1", "--rel", "180k"],
                        "did you mean --relus?")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deepreshape: error: ") and hint in err[0], err
        assert "usage:" not in err[0]


# --------------------------------------------------------------------------- corrupt files


def test_a_broken_tiny_imagenet_cache_is_rebuilt(tmp_path: Path) -> None:
    from deepreshape.data import load_dataset
    from test_data import write_tiny

    base = write_tiny(tmp_path)
    good = load_dataset("tinyimagenet", tmp_path)
    cache = base / ".deepreshape-cache-v1.npz"
    whole = cache.read_bytes()
    mid = len(whole) // 2  # inside the train images

    def relabel(p: Path) -> None:
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["train_y"] = arrays["train_y"] + 500
        np.savez(p, **arrays)

    breakages = {"truncated": lambda p: p.write_bytes(whole[: len(whole) // 2]),
                 "bit-flipped": lambda p: p.write_bytes(
                     whole[:mid] + bytes([whole[mid] ^ 0x10]) + whole[mid + 1:]),
                 "labels out of range": relabel}
    for name, breakage in breakages.items():
        breakage(cache)
        again = load_dataset("tinyimagenet", tmp_path)
        assert torch.equal(again.train_y, good.train_y), name
        assert torch.equal(again.train_x, good.train_x), name
        assert cache.read_bytes() == whole, name  # rewritten whole


def test_report_names_a_corrupt_result_file(base: Path, tmp_path: Path) -> None:
    from deepreshape.reports import report

    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / "pi.json").write_text("[1, 2]")
    (run / "criticality.json").write_text("{broken")
    res = report(run, out=tmp_path / "rep")
    notes = " ".join(res.notes)
    assert "pi.json: present but not a deepreshape pi result" in notes
    assert "criticality.json: unreadable (JSONDecodeError)" in notes
    assert "no pi.json" not in notes
