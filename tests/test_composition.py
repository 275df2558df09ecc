"""Methods compose through the registry: one sweep with a point of every registered method
fills the results with each one's rows, secure-inference latency and bytes per (protocol,
link) in results.csv / results.json and one latency Pareto plot per (protocol, link), and
running it again does no work: every method's "finished" check holds for its output (a
pi point's is the ``pi-<protocol>-<link>.json`` file its measurement writes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from deepreshape.cli.main import main
from deepreshape.methods import METHODS
from deepreshape.rundir import schema
from deepreshape.sweep.state import SweepState, output_exists
from deepreshape.sweep.sweepfile import load_sweep
from deepreshape.sweep.table import sweep_report

ARCH = "resnet18-m2-d1,1,1,1"
KEYS = ["cheetah-loopback", "semi2k-loopback", "cheetah-1gbit-1ms", "semi2k-1gbit-1ms"]

ONE_EPOCH = "{ epochs = 1, batch_size = 50 }"
EVERY_METHOD = f"""
name = "every"
dataset = "digits"
limit = 100
[recipe]
epochs = 1
batch_size = 50
[[experiment]]
name = "all"
arch = "{ARCH}"
criticality = {{ plain = false }}
reduce = {{ steps = ["cull"] }}
snl = {{ budgets = [400], mask_recipe = {ONE_EPOCH}, finetune = {ONE_EPOCH} }}
pi = {{ protocol = ["cheetah", "semi2k"], link = ["loopback", "1gbit:1ms"], samples = 1 }}
eval = {{ of = ["train", "snl"] }}
"""


def _state(root: Path) -> dict[str, tuple]:
    return {k: (r["state"], r["attempts"], r["finished"])
            for k, r in SweepState.read(root).records.items()}


def _mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
            and p.parent != root}  # every run file; the sweep root's own files are rewritten


def _check_results(root: Path, plots: bool = True, keys: tuple[str, ...] = KEYS) -> None:
    """latency and bytes per (protocol, link) in results.json and results.csv, a plot each."""
    rows = json.loads((root / "results.json").read_text())["rows"]
    train = next(r for r in rows if r["method"] == "train")
    assert sorted(train["pi"]) == sorted(keys)
    for key in keys:
        assert train["pi"][key]["latency_s"] > 0 and train["pi"][key]["bytes"] > 0
        assert not plots or (root / f"pareto-latency-{key}.png").read_bytes()[:4] == b"\x89PNG"
    assert train["latency_s"] == train["pi"]["cheetah-loopback"]["latency_s"]  # preferred
    assert train["bytes"] == train["pi"]["cheetah-loopback"]["bytes"]
    with open(root / "results.csv") as f:
        table = list(csv.DictReader(f))
    row = next(r for r in table if r["method"] == "train")
    for key in keys:
        assert float(row[f"latency_s[{key}]"]) == train["pi"][key]["latency_s"]
        assert int(row[f"bytes[{key}]"]) == train["pi"][key]["bytes"]
    assert float(row["latency_s"]) == train["latency_s"]


@pytest.fixture
def fake_measurement(monkeypatch):
    """`pi` points write what `deepreshape pi` writes, without SPU (seconds, not minutes):
    the file of the protocol and link key the real writer uses. Counts the calls."""
    from deepreshape.pi.records import link_key

    calls = []

    def measure_run(path, *, protocol, samples, repeats, link=None, options=None):
        key = link_key(link.to_dict() if link else None)
        rec = {"protocol": protocol, "link": key, "latency_s": 0.5 + len(calls) / 10,
               "total_bytes": 1000 * (len(calls) + 1), "run": str(path)}
        schema.PI.write(path, protocol, key, rec)
        calls.append((str(path), protocol, key))
        return rec

    monkeypatch.setattr(METHODS.get("pi"), "entry_function", lambda: measure_run)
    return calls


def test_a_sweep_of_every_method_fills_its_rows_and_reruns_as_a_no_op(
        tmp_path: Path, fake_measurement: list, one_thread) -> None:
    path = tmp_path / "every.toml"
    path.write_text(EVERY_METHOD)
    sweep = load_sweep(path)
    assert {p.method for p in sweep.points} == set(METHODS.names())  # every method is here
    root = tmp_path / "root"
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report"]) == 0
    sweep_report(root, plots=False)  # six Pareto plots take longer than the sweep: the slow test draws them
    state = SweepState.read(root)
    assert state.counts()["done"] == len(sweep.points)
    assert sorted(k for _, _, k in fake_measurement) == sorted(["loopback", "loopback", "1gbit-1ms",
                                                                 "1gbit-1ms"])
    for p in sweep.points:  # every method's own check says its output is there
        assert output_exists(root, p), p.id
    _check_results(root, plots=False)
    rows = json.loads((root / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"train", "criticality", "reduce", "snl"}
    before, files = _state(root), _mtimes(root)
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report"]) == 0
    assert _state(root) == before and _mtimes(root) == files
    assert len(fake_measurement) == 4  # nothing measured again
    # a deleted measurement is measured again, and only it
    schema.PI.file("semi2k", "1gbit-1ms").remove(root / state.with_state("done")[0]["run"])
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet",
                 "--no-report"]) == 0
    assert fake_measurement[4:] == [(str(root / sweep.points[0].run), "semi2k", "1gbit-1ms")]


def test_a_pi_point_is_finished_by_the_file_of_its_protocol_and_link(tmp_path: Path) -> None:
    """The bug of issue 20: the check waited for a file pi never writes."""
    path = tmp_path / "s.toml"
    path.write_text(f'dataset = "digits"\n[[experiment]]\narch = "{ARCH}"\n'
                    'pi = { protocol = "semi2k", link = "100mbit:10ms" }\n')
    pi = next(p for p in load_sweep(path).points if p.method == "pi")
    assert pi.id.endswith("#pi-semi2k-100mbit:10ms")  # ids as before: old roots resume
    assert not output_exists(tmp_path, pi)
    schema.PI.write(tmp_path / pi.run, "semi2k", "loopback", {})
    schema.PI.write(tmp_path / pi.run, "cheetah", "100mbit-10ms", {})
    assert not output_exists(tmp_path, pi)  # another protocol or link is not this point
    schema.PI.write(tmp_path / pi.run, "semi2k", "100mbit-10ms", {})
    assert output_exists(tmp_path, pi)


@pytest.mark.slow
@pytest.mark.pi
def test_real_secure_inference_over_two_protocols_and_two_links(tmp_path: Path, one_thread) -> None:
    """The same through SPU: Cheetah over loopback and SEMI2K over an emulated 1 Gbit/s,
    1 ms link (two experiments on one trained network), one query each; the fast test
    above covers the full protocol x link product."""
    pytest.importorskip("spu")
    path = tmp_path / "pi.toml"
    path.write_text(f"""
dataset = "digits"
limit = 100
[recipe]
epochs = 1
batch_size = 50
[[experiment]]
name = "loopback"
arch = "{ARCH}"
pi = {{ protocol = "cheetah", samples = 1 }}
[[experiment]]
name = "link"
arch = "{ARCH}"
pi = {{ protocol = "semi2k", link = "1gbit:1ms", samples = 1 }}
""")
    root = tmp_path / "root"
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet"]) == 0
    _check_results(root, keys=("cheetah-loopback", "semi2k-1gbit-1ms"))
    before, files = _state(root), _mtimes(root)
    assert main(["sweep", str(path), "--backend", "local", "--out", str(root), "--quiet"]) == 0
    assert _state(root) == before and _mtimes(root) == files
