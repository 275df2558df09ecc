"""Running sweeps: the same digits sweep (train -> criticality, snl, eval) under the local
backend, Ray (one local Ray for the module) and submitit's local executor gives the same
numbers; a killed driver resumes; a failing point is isolated; a second run does nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.sweep import load_sweep, run_sweep, sweep_report
from deepreshape.sweep.state import SweepState

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def _study() -> str:
    """The example sweep file of docs/sweeps.md (8 points: 2 trainings, each with a
    criticality, an SNL and an eval point depending on it)."""
    return re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S).group(1)


SWEEP = _study()


def _numbers(root: Path) -> dict[str, object]:
    """What each point computed, comparable across backends (no timings, no paths)."""
    out = {}
    for r in SweepState.read(root).records.values():
        res = r["result"] or {}
        if r["method"] == "criticality":
            out[r["id"]] = [(s["kd_acc"], s["relus"]) for s in res["stages"]]
        else:
            out[r["id"]] = {k: v for k, v in res.items() if k != "run"}
    return out


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweepfile") / "study.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def reference(sweep_file: Path, tmp_path_factory) -> Path:
    """The sweep run once, uninterrupted, by the local backend."""
    root = tmp_path_factory.mktemp("local") / "study"
    assert main(["sweep", str(sweep_file), "--backend", "local", "--out", str(root), "--quiet"]) == 0
    return root


def test_local_sweep_runs_every_point_after_its_dependencies(reference: Path) -> None:
    state = SweepState.read(reference)
    recs = list(state.records.values())
    assert len(recs) == 8 and state.counts()["done"] == 8
    for r in recs:
        for d in r["deps"]:  # a point started only after what it needs finished
            assert state.records[d]["finished"] <= r["started"]
    trains = [r for r in recs if r["method"] == "train"]
    for t in trains:  # an ordinary run directory, usable by every other command
        res = json.loads((reference / t["run"] / "results.json").read_text())
        assert res["final_acc"] == t["result"]["final_acc"] and res["epochs"] == 2
    snl = [r for r in recs if r["method"] == "snl"]
    assert all(r["result"]["relus"] == 400 for r in snl)
    rows = json.loads((reference / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"train", "snl", "criticality"}
    assert (reference / "results.csv").read_text().count("\n") == len(rows) + 1
    assert (reference / "pareto-relus.png").exists() and (reference / "pareto-macs.png").exists()


def test_second_run_does_no_work(reference: Path, sweep_file: Path, capsys) -> None:
    before = SweepState.read(reference).records
    ckpts = {p: p.stat().st_mtime_ns for p in reference.rglob("checkpoint.pt")}
    t0 = time.monotonic()
    assert main(["sweep", str(sweep_file), "--backend", "local", "--out", str(reference),
                 "--quiet", "--no-report"]) == 0
    after = SweepState.read(reference).records
    for pid, r in after.items():
        assert (r["state"], r["finished"], r["attempts"]) == ("done", before[pid]["finished"], 1)
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("checkpoint.pt")} == ckpts
    assert time.monotonic() - t0 < 30
    assert main(["sweep", "status", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "study: 8/8 done, 0 running, 0 failed, 0 skipped, 0 pending" in out
    # the documented table: criticality points show their order, eval equals training
    recs = SweepState.read(reference).records.values()
    for r in recs:
        if r["method"] == "eval":
            train = SweepState.read(reference).records[r["deps"][0]]
            assert r["result"]["test_acc"] == train["result"]["final_acc"]
        if r["method"] == "criticality":
            assert f"order {','.join(map(str, r['result']['order']))}" in out
    assert main(["sweep", "report", str(reference)]) == 0
    assert "12 result rows; wrote" in capsys.readouterr().out  # 2 train, 2 snl, 2 x 4 stages


def test_failing_point_is_isolated_and_dependents_skipped(tmp_path: Path, capsys) -> None:
    path = tmp_path / "f.toml"
    text = re.sub(r"(?m)^arch = .*$", 'arch = "resnet18-m2-d1,1,1,1"\nrecipe = { lr = [0.05, 1e9] }',
                  SWEEP)
    path.write_text(re.sub(r"(?m)^criticality = .*\n", "", text))
    root = tmp_path / "root"
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    doc_line = next(ln for ln in DOCS.read_text().splitlines() if "points failed" in ln)
    assert err[-1] == doc_line.replace("ROOT", str(root))  # the line docs/sweeps.md shows
    state = SweepState.read(root)
    failed = state.with_state("failed")
    assert len(failed) == 1 and failed[0]["settings"]["recipe"]["lr"] == 1e9
    assert "NaN" in failed[0]["error"] and "\n" not in failed[0]["error"]
    skipped = state.with_state("skipped")
    assert {r["method"] for r in skipped} == {"snl", "eval"}
    assert all(failed[0]["id"] in r["error"] for r in skipped)
    assert len(state.with_state("done")) == 3  # the good lr: train, snl, eval
    # a rerun leaves the failure alone; --retry-failed runs it (and fails) again
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report"]) == 1
    assert SweepState.read(root).records[failed[0]["id"]]["attempts"] == 1
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report", "--retry-failed"]) == 1
    assert SweepState.read(root).records[failed[0]["id"]]["attempts"] == 2


@pytest.mark.slow
def test_killed_driver_resumes_to_the_same_results(reference: Path, sweep_file: Path,
                                                   tmp_path: Path) -> None:
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "deepreshape.cli.main", "sweep", str(sweep_file), "--backend",
           "local", "--out", str(root), "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # kill once a point is done and another running
            if (root / "sweep.json").exists():
                c = SweepState.read(root).counts()
                if c["done"] >= 2 and c["running"] == 1:
                    break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the sweep made no progress in 300 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed = SweepState.read(root)
    assert killed.counts()["running"] == 1 and killed.counts()["done"] < 8
    done_before = {r["id"]: r["finished"] for r in killed.with_state("done")}
    assert main(["sweep", str(sweep_file), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report"]) == 0
    state = SweepState.read(root)
    assert state.counts()["done"] == 8
    for pid, finished in done_before.items():  # finished points were not redone
        assert state.records[pid]["finished"] == finished
    assert _numbers(root) == _numbers(reference)


def _children(pid: int) -> list[int]:
    """Child processes of `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _kill_first_worker(root: Path, killed: list[int], deadline_s: float = 300) -> None:
    """SIGKILL the worker process of the first train point that runs as a submitit job (as
    the out-of-memory killer would), once it has started."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not killed:
        try:
            recs = SweepState.read(root).records.values()
        except Exception:  # not written yet, or being replaced
            recs = []
        for r in recs:
            job = (r.get("where") or {}).get("job_id")
            if r["method"] == "train" and r["state"] == "running" and job:
                children = _children(int(job))
                if children:
                    for c in children:
                        os.kill(c, signal.SIGKILL)
                    killed.append(int(job))
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_results(reference: Path, sweep_file: Path,
                                                        tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    import threading

    root = tmp_path / "study-slurm"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_worker, args=(root, killed), daemon=True)
    killer.start()
    # a worker killed mid-point: the point is lost (not failed), its dependents skipped
    assert main(["sweep", str(sweep_file), "--backend", "slurm-local", "--max-parallel", "2",
                 "--out", str(root), "--quiet", "--no-report"]) == 1
    killer.join(timeout=60)
    assert killed, "no worker was running to be killed"
    state = SweepState.read(root)
    lost = state.with_state("failed")
    assert len(lost) == 1 and lost[0]["lost"] and "lost" in lost[0]["error"]
    assert {r["method"] for r in state.with_state("skipped")} == {"criticality", "snl", "eval"}
    done_before = {r["id"]: r["finished"] for r in state.with_state("done")}
    # the documented command again: the lost point and its dependents run, nothing else
    assert main(["sweep", str(sweep_file), "--backend", "slurm-local", "--max-parallel", "2",
                 "--out", str(root), "--quiet", "--no-report"]) == 0
    state = SweepState.read(root)
    assert state.counts()["done"] == 8
    assert all(state.records[pid]["finished"] == f for pid, f in done_before.items())
    jobs = {r["where"]["job_id"] for r in state.records.values()}
    assert len(jobs) == 8  # one job per point
    assert _numbers(root) == _numbers(reference)


@pytest.fixture(scope="module")
def local_ray(start_local_ray):
    """One local Ray for the module (starting one takes seconds); the backend reuses it."""
    ray = start_local_ray(2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_gives_the_same_results(local_ray, reference: Path, sweep_file: Path,
                                            tmp_path: Path) -> None:
    root = tmp_path / "study-ray"
    assert main(["sweep", str(sweep_file), "--backend", "ray", "--max-parallel", "2",
                 "--out", str(root), "--quiet", "--no-report"]) == 0
    state = SweepState.read(root)
    assert state.counts()["done"] == 8
    assert all(r["where"]["backend"] == "ray" and r["where"]["pid"] != os.getpid()
               for r in state.records.values())
    assert _numbers(root) == _numbers(reference)
    assert local_ray.is_initialized()  # a Ray the caller started is left running
    # the Python API of docs/sweeps.md on the same file
    state = run_sweep(load_sweep(sweep_file), root, backend="local")
    assert state.counts()["done"] == 8
    rep = sweep_report(root)
    assert len(rep.rows) == 12 and (root / "results.csv") in rep.files


@pytest.mark.slow
def test_a_point_with_two_processes_trains_with_ddp(tmp_path: Path) -> None:
    # The trainer's DDP (as under torchrun; gloo on CPU) inside one point: the same weights
    # as one process, to the tolerance the trainer's own DDP test uses.
    import torch

    from deepreshape.rundir.run import load_run

    path = tmp_path / "ddp.toml"
    path.write_text('dataset = "digits"\nlimit = 256\n[recipe]\nepochs = 2\nbatch_size = 64\n'
                    'lr = 0.05\n[[experiment]]\nname = "d"\narch = "resnet18-m4-d1,1,1,1"\n')
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["sweep", str(path), "--backend", "local", "--out", str(one), "--quiet",
                 "--no-report"]) == 0
    assert main(["sweep", str(path), "--backend", "local", "--procs-per-run", "2", "--out",
                 str(two), "--quiet", "--no-report"]) == 0
    rec = next(iter(SweepState.read(two).records.values()))
    assert rec["where"]["ddp_processes"] == 2
    a = load_run(one / rec["run"]).load_checkpoint()["model"]
    b = load_run(two / rec["run"]).load_checkpoint()["model"]
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5)
    assert load_run(two / rec["run"]).config["world_size"] == 2
