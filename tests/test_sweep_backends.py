"""Backends on a real cluster: a Ray address that does not answer fails within
--connect-timeout in one line (Ray's own log lines go to ROOT/.ray-driver.log), a Slurm
set-up or submission that fails is one line, a preempted point is lost (resumed), not
failed; a preempted submitit job is requeued and a Ray worker killed mid-point is retried,
both ending done."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.errors import Preempted, RunFailure
from deepreshape.rundir import schema
from deepreshape.sweep.state import SweepState

LOG = schema.SWEEP_RAY_LOG.name

LONG = """
name = "long"
dataset = "digits"
limit = 200
[recipe]
epochs = 8
batch_size = 64
[[experiment]]
name = "one"
arch = "resnet18-m2-d1,1,1,1"
"""


def _dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep_cli(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deepreshape.cli.main", "sweep", *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def _assert_one_line_connect_error(proc: subprocess.CompletedProcess, address: str,
                                   root: Path) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # none of Ray's log lines on the terminal
    line = lines[0]
    assert line.startswith("deepreshape: error: could not join the Ray cluster at " + address)
    assert "within 3 s" in line and "ray status" in line and "firewalls" in line
    assert str(schema.SWEEP_RAY_LOG.path(root)) in line
    assert schema.SWEEP_RAY_LOG.exists(root)


def test_dead_ray_address_fails_within_the_bound_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    address, root = f"127.0.0.1:{_dead_port()}", tmp_path / "r"
    # before: Ray retried for minutes, printing its connection warnings, and never returned
    proc, took = _sweep_cli("paper:table6", "--scale", "tiny", "--backend", "ray",
                            "--address", address, "--connect-timeout", "3", "--out", str(root))
    _assert_one_line_connect_error(proc, address, root)
    assert "connection refused" in proc.stderr
    assert took < 60  # the bound plus starting Python under load


@pytest.mark.slow
def test_a_port_that_accepts_but_is_not_ray_fails_within_the_bound(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with socket.socket() as srv:  # accepts connections, never says a word
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        address, root = f"127.0.0.1:{srv.getsockname()[1]}", tmp_path / "r"
        proc, took = _sweep_cli("paper:table6", "--scale", "tiny", "--backend", "ray",
                                "--address", address, "--connect-timeout", "3", "--out", str(root))
    _assert_one_line_connect_error(proc, address, root)
    assert "the port answers but Ray did not" in proc.stderr
    assert took < 60


def test_connect_timeout_must_be_positive(tmp_path: Path, capsys) -> None:
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    assert main(["sweep", str(f), "--backend", "ray", "--connect-timeout", "0",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--connect-timeout must be a positive number of seconds, got 0" in capsys.readouterr().err


def test_slurm_without_slurm_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no srun, no sbatch
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    assert main(["sweep", str(f), "--backend", "slurm", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not set up Slurm jobs through submitit" in err[0]
    assert "srun" in err[0] and "login node" in err[0]


def test_slurm_submission_refused_is_one_line_naming_the_point(tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: "
                                 "nope' >&2\nexit 1\n")
    for exe in bin_.iterdir():
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    root = tmp_path / "r"
    assert main(["sweep", str(f), "--backend", "slurm", "--partition", "nope", "--out", str(root),
                 "--quiet", "--no-report"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    pid = SweepState.read(root).with_state("pending")[0]["id"]
    assert f"could not submit point {pid} to Slurm partition nope" in err[0]
    assert "invalid partition specified" in err[0] and "sinfo" in err[0]
    assert all(r["state"] == "pending" for r in SweepState.read(root).records.values())


def test_a_preempted_point_is_lost_not_failed(tmp_path: Path, monkeypatch) -> None:
    from deepreshape.methods import METHODS
    from deepreshape.sweep import load_sweep
    from deepreshape.sweep.execute import run_point

    class Stops:
        ddp = False

        def run(self, point, root, options):
            raise Preempted("stopped at epoch 3 on SIGTERM; checkpoint written")

    f = tmp_path / "long.toml"
    f.write_text(LONG)
    point = load_sweep(f).points[0]
    monkeypatch.setattr(METHODS, "get", lambda name: Stops())
    out = run_point(point, str(tmp_path), {})
    assert out["ok"] is False and out["preempted"] is True and out["lost"] is True
    assert out["error"].startswith("preempted: stopped at epoch 3")
    assert Preempted.exit_code == 143 and issubclass(Preempted, RunFailure)


# --------------------------------------------------------------------------- workers dying


def _holder_of(lock: Path) -> int | None:
    """The process (other than this one) that has `lock` open: the worker running the point."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):
            continue
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == str(lock):
                    return int(fd_dir.parent.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def _signal_worker_after_first_checkpoint(root: Path, sig: int, sent: list[int],
                                          deadline_s: float = 240) -> None:
    """Once the point's first checkpoint is on disk, send `sig` to the worker training it."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for ckpt in root.glob(f"*/{schema.CHECKPOINT.name}"):
            pid = _holder_of(schema.LOCK.path(ckpt.parent))
            if pid:
                os.kill(pid, sig)
                sent.append(pid)
                return
        time.sleep(0.05)


def _run_with_signal(args: list[str], root: Path, sig: int) -> list[int]:
    sent: list[int] = []
    th = threading.Thread(target=_signal_worker_after_first_checkpoint, args=(root, sig, sent),
                          daemon=True)
    th.start()
    assert main(args) == 0
    th.join(timeout=10)
    return sent


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_finishes(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    root = tmp_path / "r"
    # USR2 is the signal submitit has Slurm send on preemption / before the time limit
    sent = _run_with_signal(["sweep", str(f), "--backend", "slurm-local", "--out", str(root),
                             "--quiet", "--no-report"], root, signal.SIGUSR2)
    assert sent, "the point finished before it could be preempted"
    (rec,) = SweepState.read(root).records.values()
    assert rec["state"] == "done" and rec["attempts"] == 1 and rec["where"]["pid"] != sent[0]
    logs = "".join(p.read_text() for p in (root / ".submitit").glob("*_log.*"))
    assert "this job is preempted" in logs and "Calling checkpoint method" in logs
    assert "Requeued job" in logs
    assert len(list((root / ".submitit").glob("*_submitted.pkl"))) == 1  # the same job, requeued
    assert schema.RESULTS.exists(root / rec["run"])


@pytest.fixture(scope="module")
def one_cpu_ray(start_local_ray):
    ray = start_local_ray(1)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_killed_ray_worker_has_its_point_retried_to_the_end(one_cpu_ray, tmp_path: Path) -> None:
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    root = tmp_path / "r"
    sent = _run_with_signal(["sweep", str(f), "--backend", "ray", "--out", str(root), "--quiet",
                             "--no-report"], root, signal.SIGKILL)
    assert sent, "the point finished before its worker could be killed"
    (rec,) = SweepState.read(root).records.values()
    assert rec["state"] == "done" and rec["where"]["pid"] != sent[0]
    assert schema.RESULTS.exists(root / rec["run"])


@pytest.mark.slow
def test_join_check_passes_on_a_live_cluster(one_cpu_ray, tmp_path: Path) -> None:
    from deepreshape.sweep.backends import _join_check

    address = one_cpu_ray.get_runtime_context().gcs_address
    assert _join_check(address, 60, tmp_path / LOG) is None
