"""The run-directory schema: one module names every run file, and owns its reader and writer."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from deepreshape.errors import CheckpointError
from deepreshape.rundir import schema

SRC = Path(__file__).resolve().parents[1] / "src" / "deepreshape"
SCHEMA = SRC / "rundir" / "schema.py"

# Every name the schema owns, as a pattern that finds it inside any string.
NAMES = [f.name for f in (*schema.RUN_FILES, *schema.SWEEP_FILES)]
SPELLED = re.compile("|".join([*(rf"(?<![\w-]){re.escape(n)}(?![\w])" for n in NAMES),
                               r"(?<![\w#-])pi-(?=[{<*]|$|[a-z0-9]+-[a-z0-9.-]+\.json)"]))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose may name a file)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def spelled_names(path: Path) -> list[str]:
    """'file:line: text' for each string literal in code (not a docstring or comment) that
    spells a run-file name."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            m = SPELLED.search(node.value)
            if m:
                hits.append((node.lineno, f"{path.relative_to(SRC)}:{node.lineno}: {m.group(0)!r}"))
    return [h for _, h in sorted(hits)]


def test_no_module_but_the_schema_spells_a_run_file_name() -> None:
    hits = [h for p in sorted(SRC.rglob("*.py")) if p != SCHEMA for h in spelled_names(p)]
    assert hits == [], "run-file names spelled outside rundir/schema.py:\n" + "\n".join(hits)


def test_the_check_finds_a_spelled_name(tmp_path: Path) -> None:
    # the guard above would pass vacuously if it could not see a name: show that it does
    f = tmp_path / "m.py"
    f.write_text('"""Docstrings may say results.json."""\n'
                 'A = "results.json"\nB = f"{x}/pi-{p}-{l}.json"\n# metrics.jsonl in a comment\n'
                 'C = "sweep.json"\nD = "my-results.json"\n')
    old = SRC
    try:
        globals()["SRC"] = tmp_path
        hits = spelled_names(f)
    finally:
        globals()["SRC"] = old
    assert [h.split(": ", 1)[1] for h in hits] == ["'results.json'", "'pi-'", "'sweep.json'"]


def test_json_files_read_write_and_refuse_what_is_not_theirs(tmp_path: Path) -> None:
    assert schema.RESULTS.read_if_present(tmp_path) is None
    with pytest.raises(CheckpointError, match="no results.json here"):
        schema.RESULTS.read(tmp_path)
    schema.RESULTS.write(tmp_path, {"final_acc": 50.0})
    assert schema.RESULTS.read(tmp_path) == {"final_acc": 50.0}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"broken results.json \(a list, not the dict"):
        schema.RESULTS.read(tmp_path)
    data, note = schema.RESULTS.read_optional(tmp_path)
    assert data is None and "left out" in note
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="broken results.json"):
        schema.RESULTS.read(tmp_path)


def test_metrics_append_read_and_keep_epochs(tmp_path: Path) -> None:
    assert schema.METRICS.read(tmp_path) == []
    for e in (1, 2, 3):
        schema.METRICS.append(tmp_path, {"epoch": e, "loss": 1.0 / e})
    with open(schema.METRICS.path(tmp_path), "a") as f:
        f.write('{"epoch": 4, "lo')  # a torn last line, as a kill leaves it
    schema.METRICS.keep_epochs(tmp_path, 2)
    assert [r["epoch"] for r in schema.METRICS.read(tmp_path)] == [1, 2]


def test_pi_results_one_file_per_protocol_and_link(tmp_path: Path) -> None:
    a = schema.PI.write(tmp_path, "cheetah", "loopback", {"latency_s": 1.0})
    b = schema.PI.write(tmp_path, "semi2k", "100mbit-10ms", {"latency_s": 2.0})
    assert (a.name, b.name) == ("pi-cheetah-loopback.json", "pi-semi2k-100mbit-10ms.json")
    assert schema.PI.key_of(b.name) == ("semi2k", "100mbit-10ms")
    assert schema.PI.key_of("pi-cheetah.json") is None
    assert schema.PI.exists(tmp_path, "cheetah", "loopback")
    assert not schema.PI.exists(tmp_path, "cheetah", "100mbit-10ms")
    (tmp_path / "pi-cheetah-lan.json").write_text("[]")
    schema.PI.legacy.write(tmp_path, {"latency_s": 3.0})
    got = {p.name: (d, n) for p, d, n in schema.PI.read_all(tmp_path)}
    assert list(got) == ["pi-cheetah-lan.json", "pi-cheetah-loopback.json",
                         "pi-semi2k-100mbit-10ms.json", "pi.json"]
    assert got["pi-cheetah-lan.json"][0] is None and "not a deepreshape pi result" in got[
        "pi-cheetah-lan.json"][1]
    assert json.loads(a.read_text()) == {"latency_s": 1.0}


def test_every_file_has_one_name() -> None:
    assert len(set(NAMES)) == len(NAMES) - 1  # results.json: a run's and a sweep root's
    assert {f.name for f in schema.RUN_FILES} >= {
        "config.json", "checkpoint.pt", "metrics.jsonl", "results.json", "criticality.json",
        "reduce.json", "snl.json", "mask_phase.pt", ".lock"}
