"""`eval` fails fast on a path that is not a run (before torch loads); a KD `train` names
its teacher in its summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deepreshape.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_eval_of_a_missing_run_fails_before_importing_torch(tmp_path: Path) -> None:
    code = ("import sys; from deepreshape.cli.main import main; rc = main(['eval', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules)")
    for target in (tmp_path / "nothing", tmp_path):  # no folder; a folder without config.json
        proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                              text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
                              timeout=60)
        assert proc.stdout.split() == ["2", "False"], proc.stderr
        assert proc.stderr.startswith("deepreshape: error:") and proc.stderr.count("\n") == 1


def test_eval_without_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and err.count("\n") == 1


@pytest.mark.usefixtures("one_thread")
def test_kd_train_summary_names_its_teacher(tmp_path: Path, capsys) -> None:
    tiny = ["resnet18-m2-d1,1,1,1", "--epochs", "1", "--limit", "64", "--batch-size", "32",
            "--quiet"]
    assert main(["train", *tiny, "--out", str(tmp_path / "t")]) == 0
    assert "KD from" not in capsys.readouterr().out
    assert main(["train", *tiny, "--teacher", str(tmp_path / "t"), "--out",
                 str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert f"KD from {tmp_path / 't'} -> {tmp_path / 's'}" in out
