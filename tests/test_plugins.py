"""A third-party method, installed as a plugin distribution: the example of
docs/extending.md (its module, its .dist-info with a ``deepreshape.methods`` entry point and
its sweep file are read from the doc) is written into a temporary site directory, with no
pip and no network, and then works from the CLI, in a sweep (a rerun skips it), in
`report` and in `pareto`, with no file of the package edited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepreshape.cli.main import command_names, main
from deepreshape.methods import METHODS
from deepreshape.sweep.state import SweepState

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
SRC = Path(__file__).resolve().parents[1] / "src"
ARCH = "resnet18-m2-d1,1,1,1"


def doc_files() -> dict[str, str]:
    """Every ``<!-- file: NAME -->`` block of docs/extending.md, by NAME."""
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", DOC.read_text(), re.S))


def doc_commands() -> list[list[str]]:
    """The commands of the doc's ``<!-- commands -->`` block, as argument lists."""
    block = re.search(r"<!-- commands -->\n```console\n(.*?)```", DOC.read_text(), re.S).group(1)
    return [line.removeprefix("$ deepreshape ").split() for line in block.splitlines()
            if line.startswith("$ deepreshape ")]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin distribution of the doc in a temporary site directory."""
    site = tmp_path_factory.mktemp("site")
    files = doc_files()
    assert {"deepreshape_halve.py", "halve.toml"} <= set(files)
    for name, text in files.items():
        if name.endswith(".toml"):
            continue
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return site


@pytest.fixture
def plugin(site: Path):
    """The site directory on sys.path (as an install would put it), the registry told to
    read the entry points again; removed afterwards."""
    sys.path.insert(0, str(site))
    METHODS.reload_plugins()
    yield site
    sys.path.remove(str(site))
    METHODS.unregister("halve")
    sys.modules.pop("deepreshape_halve", None)
    METHODS.reload_plugins()


def test_the_plugin_is_a_method_a_command_and_a_sweep_key(plugin: Path, tmp_path: Path,
                                                         capsys) -> None:
    assert "halve" in METHODS.names() and METHODS.get("halve").display == "half epochs"
    assert "halve" in command_names()
    sweep = tmp_path / "halve.toml"
    sweep.write_text(doc_files()["halve.toml"])
    assert main(["sweep", str(sweep), "--dry-run", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [p["method"] for p in points] == ["train", "halve", "eval", "eval"]
    bad = tmp_path / "bad.toml"
    bad.write_text(doc_files()["halve.toml"].replace("halve = true", "halve = { epochs = 1 }"))
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'halve.epochs'" in err and "valid: none" in err


def test_the_plugin_works_from_the_cli_sweep_report_and_pareto(plugin: Path, tmp_path: Path,
                                                               capsys, monkeypatch, one_thread) -> None:
    """The doc's commands, in its order: the plugin's own command runs in a fresh process
    that only has the site directory on PYTHONPATH."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "halve.toml").write_text(doc_files()["halve.toml"])
    commands = doc_commands()
    assert [c[0] for c in commands] == ["train", "halve", "report", "pareto", "sweep"]
    assert main(commands[0]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(SRC)]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "deepreshape.cli.main", *commands[1]],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "after 1 epochs -> runs/half" in proc.stdout
    config = json.loads((tmp_path / "runs/half/config.json").read_text())
    assert config["method"] == {"name": "halve"} and config["recipe"]["epochs"] == 1
    # report and pareto label it with its display name
    assert main([*commands[2], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["method"] == "half epochs"
    assert main([*commands[3], "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["method"] for r in rows) == ["baseline", "half epochs"]
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # a sweep with a table for it runs it; its rerun skips it
    assert main(commands[4]) == 0
    root = tmp_path / "sweeps/halve"
    state = SweepState.read(root)
    assert state.counts()["done"] == 4
    half = next(r for r in state.records.values() if r["method"] == "halve")
    assert half["result"]["epochs"] == 1
    table = json.loads((root / "results.json").read_text())["rows"]
    assert [r["method"] for r in table] == ["train", "halve"] and table[1]["accuracy"] is not None
    assert "halve" in (root / "results.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")}
    assert main([*commands[4], "--no-report"]) == 0
    again = SweepState.read(root).records
    assert {k: (r["state"], r["attempts"], r["finished"]) for k, r in again.items()} == \
        {k: (r["state"], r["attempts"], r["finished"]) for k, r in state.records.items()}
    assert {p: p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")} == mtimes


def test_without_the_plugin_its_key_is_an_error_naming_the_registry(tmp_path: Path, capsys) -> None:
    """The vocabulary comes from the registry: an unknown method table is one line, exit 2,
    naming every registered method (and the closest)."""
    assert "halve" not in METHODS.names()
    path = tmp_path / "s.toml"
    path.write_text("[[experiment]]\nname = 'e'\narch = 'resnet18'\nsnll = { budgets = [10] }\n")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "experiment 'e'" in err and "'snll'" in err
    assert f"the methods {', '.join(METHODS.names())}" in err and "did you mean snl?" in err
