"""One driver per sweep root: a second driver is refused at once with one line naming the
holder and changes nothing; a point's state comes from what is on disk; the driver writes
sweep.json in batches; the benchmark's core runs at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepreshape.errors import RunFailure
from deepreshape.methods import METHODS, Method
from deepreshape.rundir import schema
from deepreshape.rundir.lock import exclusive_lock
from deepreshape.sweep import Point, Sweep, run_sweep
from deepreshape.sweep.state import SweepState

ROOT = Path(__file__).resolve().parents[1]

GATE = '''"""A test method plugin: its point waits (at most 120 s) until a file appears."""
import time
from pathlib import Path

from deepreshape.methods import Method


class Gate(Method):
    name = "gatetest"
    keys = {"file": "the file to wait for"}

    def run(self, point, root, options):
        end = time.monotonic() + 120
        while not Path(point.settings["file"]).exists() and time.monotonic() < end:
            time.sleep(0.05)
        return {}


METHOD = Gate()
'''


def _site(tmp_path: Path) -> Path:
    """A site directory holding the `gatetest` plugin (module and entry point)."""
    site = tmp_path / "site"
    info = site / "deepreshape_gatetest-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "deepreshape_gatetest.py").write_text(GATE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deepreshape-gatetest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[deepreshape.methods]\ngatetest = deepreshape_gatetest:METHOD\n")
    return site


def _driver(sweep_file: Path, root: Path, site: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    return subprocess.Popen(
        [sys.executable, "-m", "deepreshape.cli.main", "sweep", str(sweep_file), "--backend", "local",
         "--out", str(root), "--quiet", "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow  # two drivers, each starting torch: ~10 s idle, ~30 s on a loaded machine
def test_a_second_driver_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """The issue's fault: two drivers a few seconds apart on one root both ran, and the
    second recorded a point the first finished as failed. The first driver's second point
    waits for a file, so the second driver surely starts while the first runs."""
    gate = tmp_path / "go"
    path = tmp_path / "two.toml"
    path.write_text(f'''name = "two"
dataset = "digits"
limit = 100
[recipe]
epochs = 1
batch_size = 50
[[experiment]]
name = "nets"
arch = "resnet18-m2-d1,1,1,1"
gatetest = {{ file = "{gate}" }}
''')
    root, site = tmp_path / "root", _site(tmp_path)
    first = _driver(path, root, site)
    try:
        deadline = time.monotonic() + 120
        while True:  # until the first driver's gate point runs
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first driver did not reach its gate in 120 s"
            if schema.SWEEP_STATE.exists(root) and SweepState.read(root).counts()["running"]:
                break
            time.sleep(0.1)
        before = schema.SWEEP_STATE.path(root).read_bytes()
        second = _driver(path, root, site)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and out == "", (out, err)
        assert lines[0].startswith(f"deepreshape: error: sweep root {root} is driven by another "
                                   f"deepreshape process (pid {first.pid} on host ")
        assert "since 20" in lines[0] and f"deepreshape sweep status {root}" in lines[0]
        assert schema.SWEEP_STATE.path(root).read_bytes() == before  # untouched by the second
        gate.touch()
        assert first.wait(timeout=120) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    state = SweepState.read(root)
    assert state.counts()["done"] == 2
    assert all(r["attempts"] == 1 for r in state.records.values())  # nothing ran twice


class Slow(Method):
    """A test method: its run writes a result file, then says whatever `outcome` holds."""

    name = "slowtest"
    result_file = schema.RESULTS
    outcome: dict = {}

    def run(self, point, root, options):
        if self.outcome.get("finish_elsewhere"):  # another process finished it meanwhile
            schema.RESULTS.write(root / point.run, {"final_acc": 1.0})
        if self.outcome.get("raise"):
            raise RunFailure(self.outcome["raise"])
        return {"final_acc": 1.0}


@pytest.fixture
def slow():
    m = METHODS.register(Slow(), replace=True)
    m.outcome = {}
    yield m
    METHODS.unregister(m.name)


def _sweep(n: int, method: str = "slowtest", chain: bool = False) -> Sweep:
    pts = [Point(f"p{i:04d}", method, "e", "resnet18-m2-d1,1,1,1", 0, {"i": i},
                 (f"p{i - 1:04d}",) if chain and i else (), f"p{i:04d}") for i in range(n)]
    return Sweep("s", "test", "digits", None, None, pts)


def test_a_held_root_refuses_before_touching_sweep_json(tmp_path: Path, slow) -> None:
    run_sweep(_sweep(2), tmp_path, "local", quiet=True)
    before = schema.SWEEP_STATE.path(tmp_path).read_bytes()
    with exclusive_lock(schema.SWEEP_LOCK.path(tmp_path), "x"):
        t0 = time.monotonic()
        with pytest.raises(RunFailure, match=f"is driven by .*pid {os.getpid()} on host"):
            run_sweep(_sweep(3), tmp_path, "local", quiet=True, retry_failed=True)
        assert time.monotonic() - t0 < 5
        from deepreshape.cli.main import main

        # status and report only read sweep.json: they work while a driver holds the root
        assert main(["sweep", "status", str(tmp_path)]) == 0
        assert main(["sweep", "report", str(tmp_path)]) == 0
        assert schema.SWEEP_TABLE.exists(tmp_path)
    assert schema.SWEEP_STATE.path(tmp_path).read_bytes() == before
    assert run_sweep(_sweep(3), tmp_path, "local", quiet=True).counts()["done"] == 3  # released


def test_a_failed_attempt_whose_output_is_complete_is_done(tmp_path: Path, slow) -> None:
    slow.outcome = {"finish_elsewhere": True,
                    "raise": f"{tmp_path} is being written by another deepreshape process (pid 1)"}
    state = run_sweep(_sweep(3, chain=True), tmp_path, "local", quiet=True)
    assert state.counts()["done"] == 3 and state.counts()["failed"] == 0
    rec = state.records["p0000"]
    assert "finished by another process" in rec["note"] and rec["error"] is None
    slow.outcome = {"raise": "boom"}  # no output: failed, and its dependents skipped
    state = run_sweep(_sweep(3, chain=True), tmp_path / "b", "local", quiet=True)
    assert [r["state"] for r in state.records.values()] == ["failed", "skipped", "skipped"]
    assert state.records["p0002"]["error"] == "needs p0001, which skipped"


def test_eval_points_are_not_judged_from_disk(tmp_path: Path) -> None:
    from deepreshape.sweep.state import output_complete

    p = Point("a#eval", "eval", "e", "resnet18-m2-d1,1,1,1", 0, {}, ("a",), "a")
    assert not output_complete(tmp_path, p)  # `eval` has no output of its own


def test_sweep_json_is_written_in_batches(tmp_path: Path, slow, monkeypatch) -> None:
    writes = []
    real = SweepState.write
    monkeypatch.setattr(SweepState, "write", lambda self: (writes.append(1), real(self)))
    monkeypatch.setattr("deepreshape.sweep.runner.WRITE_SHARE", 1e-9)  # a write per ~forever
    state = run_sweep(_sweep(50), tmp_path, "local", quiet=True)
    assert state.counts()["done"] == 50
    assert len(writes) <= 3  # start, one batch, the end (not one per change)
    on_disk = SweepState.read(tmp_path)
    assert on_disk.counts()["done"] == 50 and on_disk.info["finished"]


def test_the_sweep_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--points", "50",
                          "--backend", "local", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["points"] == 50 and res["done"] == 50
    assert {"overhead_ms_per_point", "driver_peak_mb", "status_s"} <= set(res)


def test_status_of_a_large_sweep_shows_what_needs_attention_first(tmp_path: Path, slow,
                                                                   capsys) -> None:
    from deepreshape.cli.main import main
    from deepreshape.cli.sweep import STATUS_ROWS

    slow.outcome = {"raise": "boom"}
    state = run_sweep(_sweep(STATUS_ROWS + 20, chain=True), tmp_path, "local", quiet=True)
    assert state.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 1,
                              "skipped": STATUS_ROWS + 19}
    assert main(["sweep", "status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + STATUS_ROWS + 2 and " failed " in out[2]  # header, rule, rows, 2 lines
    assert out[-2].startswith("... 20 more points not shown")
    assert main(["sweep", "status", str(tmp_path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["points"]) == STATUS_ROWS + 20
