"""Every bad input is one line and exit 2 (or 1), never a traceback, and writes nothing.

Hypothesis drives every sub-command with generated bad arguments: a valid, cheap command
line with one thing wrong in it (a value out of range, NaN, a misspelt choice or flag, a
path that is a file, absurd network sizes, ...), through the CLI's `main` in-process.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepreshape.cli.main import command_names, main

TINY = "resnet18-m4-d1,1,1,1"
SMALL = ["--epochs", "1", "--batch-size", "32", "--limit", "64", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")

# Values no numeric option takes, and values each kind of option refuses.
NOT_A_NUMBER = ["abc", "", "1e", "0x10", "--", "1,5"]
BAD_COUNT = ["0", "-1", "-100", "nan", "inf", *NOT_A_NUMBER]  # positive integer options
BAD_RATE = ["nan", "inf", "-inf", "-0.1", "-5", *NOT_A_NUMBER]  # options that are >= 0 numbers
BAD_LISTS = ["0,0,0,0", "-1,2,2,2", "2,2,-3,2", "100000000,1,1,1", "a,b", "1.5,2,2,2", ","]
BAD_NAMES = ["resnet99", "resnet18-m0", "resnet18-m99999999999999999999", "hrn-99999999x2x2x",
             "hrn-0x2x2x", "resnet18-d0,2,2,2", "resnet18-w-16,32,64,128", "wrn23x8", "",
             "resnet18-d100000000,1,1,1", "regnetx-999mf", "resnet18--", "resnet18-s9"]


def _flag_with(values: list[str], flag: str) -> st.SearchStrategy[list[str]]:
    """`flag VALUE` for a bad VALUE (as `--flag=VALUE`, so '-1' stays a value)."""
    return st.sampled_from(values).map(lambda v: [f"{flag}={v}"])


def _one_of(*options: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.one_of(*options)


UNKNOWN_FLAG = st.sampled_from(["--frobnicate", "--epoch-s=3", "--jsn", "-z"]).map(lambda f: [f])


def _recipe_mutations() -> st.SearchStrategy[list[str]]:
    return _one_of(
        _flag_with(BAD_COUNT, "--epochs"), _flag_with(BAD_COUNT, "--batch-size"),
        _flag_with([*BAD_RATE, "0"], "--lr"), _flag_with(BAD_RATE + ["1", "2"], "--momentum"),
        _flag_with(BAD_RATE, "--weight-decay"), _flag_with(["-2", "nan", "5", "abc"],
                                                           "--warmup-epochs"),
        _flag_with(["-0.5", "1.5", "nan"], "--kd-weight"), _flag_with(["0", "-4", "nan"],
                                                                      "--kd-temperature"),
        _flag_with(["0", "-5", "abc"], "--limit"), _flag_with(["-1", "abc", str(2**70)], "--seed"),
        _flag_with(["tpu", "cuda:x", "gpu"], "--device"), _flag_with(["cifar", "nope", ""],
                                                                     "--dataset"),
        st.just(["--batch-size=100000"]), UNKNOWN_FLAG)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A working folder with a trained tiny run, a plain file and a read-only folder."""
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    assert main(["train", TINY, *SMALL, "--out", str(run)]) == 0
    (root / "afile").write_text("not a folder\n")
    ro = root / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    (root / "noconfig").mkdir()
    return {"root": root, "run": run, "file": root / "afile", "ro": ro,
            "noconfig": root / "noconfig"}


def _paths(w: dict[str, Path]) -> list[str]:
    """Run directories that are not: missing, a file, a path under a file, no config."""
    return [str(w["root"] / "missing"), str(w["file"]), str(w["file"] / "sub"), str(w["noconfig"])]


def _outs(w: dict[str, Path]) -> list[str]:
    """--out values nothing can be written to (a read-only folder stops all but root)."""
    return [str(w["file"]), str(w["file"] / "sub")] + ([str(w["ro"] / "sub")] if os.geteuid() else [])


def argv_for(command: str, w: dict[str, Path]) -> st.SearchStrategy[list[str]]:
    """Command lines of `command` with one thing wrong."""
    run, paths, outs = str(w["run"]), _paths(w), _outs(w)
    out = str(w["root"] / "fresh")
    bad_run = st.sampled_from(paths)
    if command == "list":
        return UNKNOWN_FLAG.map(lambda m: ["list", *m])
    if command == "count":
        return _one_of(
            st.sampled_from(BAD_NAMES).map(lambda n: ["count", n]),
            _flag_with(BAD_LISTS, "--depths").map(lambda m: ["count", "resnet18", *m]),
            _flag_with(BAD_LISTS, "--widths").map(lambda m: ["count", "resnet18", *m]),
            _flag_with(["0", "-3", "99999999", "abc"], "--input-size").map(
                lambda m: ["count", "resnet18", *m]),
            _flag_with(["0", "-1", "abc"], "--num-classes").map(lambda m: ["count", "resnet18", *m]),
            UNKNOWN_FLAG.map(lambda m: ["count", "resnet18", *m]))
    if command == "design":
        return _one_of(
            _flag_with(["3,2,2,1", "0,1,2,3", "a,b", "", "1,2,3,4,5,6,7,8,9"], "--order").map(
                lambda m: ["design", *m]),
            _flag_with(["nope", "widths"], "--vary").map(lambda m: ["design", "--order", "3,2,4,1", *m]),
            _flag_with(["0", "-2"], "--mult-max").map(lambda m: ["design", "--order", "3,2,4,1", *m]),
            st.just(["design"]))
    if command == "train":
        base = ["train", TINY, *SMALL, "--out", out]
        return _one_of(
            _recipe_mutations().map(lambda m: [*base, *m]),
            st.sampled_from(BAD_NAMES).map(lambda n: ["train", n, *SMALL, "--out", out]),
            _flag_with(BAD_LISTS, "--depths").map(lambda m: [*base, *m]),
            _flag_with(BAD_LISTS, "--widths").map(lambda m: [*base, *m]),
            st.sampled_from(outs).map(lambda o: ["train", TINY, *SMALL, "--out", o]),
            st.sampled_from(paths).map(lambda t: [*base, "--teacher", t]),
            st.just(["train", TINY, *SMALL, "--out", run]))  # exists: needs --resume/--force
    if command == "eval":
        return _one_of(bad_run.map(lambda r: ["eval", r]),
                       st.sampled_from(["tpu", "cuda:x"]).map(lambda d: ["eval", run, "--device", d]),
                       UNKNOWN_FLAG.map(lambda m: ["eval", run, *m]))
    if command in ("criticality", "reduce", "snl"):
        extra = {"criticality": [], "reduce": [], "snl": ["--budget", "1000"]}[command]
        base = [command, run, *extra, *SMALL, "--out", out]
        own = {
            "criticality": _flag_with(["0", "-1", "abc", "nan"], "--jobs"),
            "reduce": _one_of(_flag_with(["0", "-1", "nan", "abc", "inf"], "--scale"),
                              _flag_with(["0", "-4", "a", "4,,x"], "--reuse"),
                              _flag_with(["foo"], "--pipeline"),
                              _flag_with(["3,2,2,1", "x"], "--order")),
            "snl": _one_of(_flag_with(["0", "-5", "abc", "1.5", "99999999"], "--budget"),
                           _flag_with(["voxel"], "--granularity"),
                           _flag_with(["0", "-1"], "--mask-epochs"),
                           _flag_with(["0", "-1", "nan"], "--mask-lr"),
                           _flag_with(["0", "-1", "nan"], "--lambda"),
                           _flag_with(["0.5", "nan"], "--lambda-factor")),
        }[command]
        return _one_of(_recipe_mutations().map(lambda m: [*base, *m]), own.map(lambda m: [*base, *m]),
                       bad_run.map(lambda r: [command, r, *extra, *SMALL, "--out", out]),
                       st.just([*base, "--dataset", "cifar10"]))
    if command == "pi":
        return _one_of(
            bad_run.map(lambda r: ["pi", r]),
            st.sampled_from(BAD_NAMES).map(lambda n: ["pi", "--estimate", n]),
            _flag_with(["spdz", ""], "--protocol").map(lambda m: ["pi", "--estimate", "resnet18", *m]),
            _flag_with(["0", "-1", "abc"], "--samples").map(lambda m: ["pi", run, *m]),
            _flag_with(["0", "-5", "nan"], "--timeout").map(lambda m: ["pi", run, *m]),
            _flag_with(["moon", "0:0", "-1:5"], "--link").map(lambda m: ["pi", run, *m]),
            st.just(["pi"]), st.just(["pi", run, "--estimate", "resnet18"]))
    if command == "pareto":  # (a file stands for its folder there, as RUN/results.json does)
        bad_run = st.sampled_from([p for p in paths if p != str(w["file"])])
        return _one_of(bad_run.map(lambda r: ["pareto", r, "--out", str(w["root"] / "p.png")]),
                       _flag_with(["moon", ""], "--x").map(
                           lambda m: ["pareto", run, "--out", str(w["root"] / "p.png"), *m]),
                       st.sampled_from(outs).map(lambda o: ["pareto", run, "--out", o]))
    if command == "report":
        return _one_of(bad_run.map(lambda r: ["report", r]),
                       st.sampled_from(outs).map(lambda o: ["report", run, "--out", o]))
    if command == "demo":
        return _one_of(st.sampled_from(outs).map(lambda o: ["demo", "--fast", "--out", o]),
                       UNKNOWN_FLAG.map(lambda m: ["demo", *m]))
    return UNKNOWN_FLAG.map(lambda m: [command, *m])


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_dir()}


@pytest.mark.parametrize("command", command_names())
def test_bad_arguments_are_one_line_and_write_nothing(world: dict[str, Path], command: str) -> None:
    root = world["root"]

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(argv_for(command, world))
    def check(argv: list[str]) -> None:
        before = _snapshot(root)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(root)  # default outputs (runs/NAME, pareto.png, ...) would land here
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(list(argv))
        finally:
            os.chdir(cwd)
        lines = err.getvalue().strip().splitlines()
        assert code in (1, 2), (argv, code, lines)
        assert len(lines) == 1 and lines[0].startswith("deepreshape: error: "), (argv, lines)
        assert "Traceback" not in err.getvalue()
        assert _snapshot(root) == before, (argv, set(_snapshot(root)) ^ set(before))

    check()
