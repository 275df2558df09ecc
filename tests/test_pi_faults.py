"""Secure inference never hangs: dead, killed and misconfigured parties end in one line.

Each fault ends with exit status 1 and one line on stderr within the timeout plus a few
seconds, and leaves no temporary folder behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("spu")
pytest.importorskip("jax")

from deepreshape.errors import RunFailure  # noqa: E402
from deepreshape.options import RunOptions
from deepreshape.pi import channel, party, processes  # noqa: E402

pytestmark = pytest.mark.pi

ARCH = "resnet18-m4-d1,1,1,1"
START_S = 150  # start-up before the engine's deadline: torch, jax, compiling (slow on a busy 2-core box)
SLACK_S = 15  # "a few seconds" past the timeout: reaping the parties, printing the line
EXIT_S = 60  # then the interpreter's teardown of torch/JAX/XLA: seconds idle, tens when busy


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny network trained one epoch on the embedded digits (16x16)."""
    from deepreshape.training import Recipe, train

    out = tmp_path_factory.mktemp("faults") / "run"
    train(ARCH, "digits", recipe=Recipe(epochs=1, batch_size=64), out=out, options=RunOptions(quiet=True))
    return out


def _cli(args: list[str], tmpdir: Path, script: Path | None = None) -> subprocess.Popen:
    """`deepreshape ARGS` in its own process, with its own temporary folder."""
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    cmd = [sys.executable, str(script)] if script else [sys.executable, "-m",
                                                         "deepreshape.cli.main"]
    return subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, within_s: float) -> tuple[int, list[str], float]:
    """Exit code, stderr lines and seconds taken; fails if it runs past `within_s` (plus
    the interpreter's teardown)."""
    t0 = time.monotonic()
    within_s += EXIT_S
    try:
        _, err = proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running after {within_s:g} s: a hang")
    return proc.returncode, err.strip().splitlines(), time.monotonic() - t0


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _party_pids(pid: int) -> list[int]:
    """The spawned party processes of a `deepreshape pi` process (not its resource tracker)."""
    out = []
    for c in _children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            out.append(c)
    return out


def _wait_for(cond, within_s: float):
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    return None


def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


# --------------------------------------------------------------------------- fast


def test_a_port_in_use_is_named_as_such():
    holder, busy = _busy_port()
    free = channel.free_ports(1)[0]
    with holder, pytest.raises(RunFailure, match=f"port {busy} .* already in use"):
        channel.connect([f"127.0.0.1:{free}", f"127.0.0.1:{busy}"], 1, 5)


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"deepreshape-spu-{dead.pid}-abc"
    live = tmp_path / f"deepreshape-spu-{os.getpid()}-def"
    other = tmp_path / "deepreshape-spu-notapid"
    for d in (stale, live, other):
        d.mkdir()
        (d / "server.log").write_text("x")
    mine = processes.temp_dir()
    assert mine.name.startswith(f"deepreshape-spu-{os.getpid()}-") and mine.is_dir()
    assert not stale.exists() and live.exists() and other.exists()


def test_a_settings_mismatch_is_described_from_either_side():
    hello = {"role": "server", "protocol": "cheetah", "weights": "owned", "samples": 1,
             "settings": {"images": 2, "repeats": 1}, "config": "c"}
    peer = {**hello, "role": "client", "settings": {"images": 1, "repeats": 1}}
    assert party._mismatch(hello, peer, "client") == "the client uses images 1, this party 2"
    assert party._mismatch(hello, {**peer, "settings": hello["settings"]}, "client") is None
    assert "weights mode" in party._mismatch(hello, {**peer, "settings": hello["settings"],
                                                 "weights": "shared"}, "client")
    assert "expected the client" in party._mismatch(hello, hello, "client")


# --------------------------------------------------------------------------- slow: real processes


@pytest.mark.slow
def test_a_party_that_exits_at_start_up_ends_the_run(run_dir, tmp_path):
    """The parties start from this script, which exits when a spawned child imports it:
    each party dies before it reads its start-up data. (With the job in the start-up
    pipe the parent used to block forever writing it.)"""
    script = tmp_path / "exits_in_children.py"
    script.write_text("import sys\n"
                      "if __name__ != '__main__':\n"
                      "    sys.exit(3)  # a party that exits at start-up\n"
                      "from deepreshape.cli.main import main\n"
                      "sys.exit(main(sys.argv[1:]))\n")
    tmp = tmp_path / "tmp"
    proc = _cli(["pi", str(run_dir), "--samples", "1", "--timeout", "20"], tmp, script)
    code, err, _ = _finish(proc, START_S + 20 + SLACK_S)  # before: blocked forever
    assert code == 1 and len(err) == 1, err
    assert "process died (exit code 3)" in err[0]
    assert not list(tmp.iterdir())


@pytest.mark.slow
def test_a_party_killed_at_once_after_it_starts_ends_the_run(run_dir, tmp_path):
    tmp = tmp_path / "tmp"
    proc = _cli(["pi", str(run_dir), "--samples", "1", "--timeout", "30"], tmp)
    parties = _wait_for(lambda: _party_pids(proc.pid), START_S)
    assert parties, "no party process appeared"
    os.kill(parties[0], signal.SIGKILL)
    code, err, _ = _finish(proc, 30 + SLACK_S)
    assert code == 1 and len(err) == 1, err
    assert "died (killed by SIGKILL)" in err[0]
    assert not list(tmp.iterdir())


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_stops_its_parties_and_leaves_no_temporary_folder(
        run_dir, tmp_path):
    tmp = tmp_path / "tmp"
    proc = _cli(["pi", str(run_dir), "--samples", "1", "--timeout", "300"], tmp)
    parties = _wait_for(lambda: _party_pids(proc.pid), START_S)
    assert parties and list(tmp.iterdir())
    proc.send_signal(signal.SIGTERM)
    code, err, _ = _finish(proc, SLACK_S)
    assert code == 1 and len(err) == 1 and "stopped by SIGTERM" in err[0], err
    assert not list(tmp.iterdir())
    assert _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in parties), 10)


@pytest.mark.slow
def test_a_party_whose_port_is_in_use_says_so(run_dir, tmp_path):
    holder, busy = _busy_port()
    free = channel.free_ports(1)[0]
    with holder:
        proc = _cli(["pi", str(run_dir), "--samples", "1", "--role", "client", "--parties",
                     f"127.0.0.1:{free},127.0.0.1:{busy}", "--timeout", "60"], tmp_path / "tmp")
        code, err, _ = _finish(proc, START_S + 60 + SLACK_S)
    assert code == 1 and len(err) == 1, err
    assert f"port {busy}" in err[0] and "already in use" in err[0]


@pytest.mark.slow
def test_mismatched_samples_are_refused_by_both_hosts_at_the_handshake(run_dir, tmp_path):
    parties = ",".join(f"127.0.0.1:{p}" for p in channel.free_ports(2))
    timeout = 600  # far above the handshake: both must end long before it
    common = [str(run_dir), "--parties", parties, "--timeout", str(timeout)]
    server = _cli(["pi", *common, "--role", "server", "--samples", "2"], tmp_path / "s")
    client = _cli(["pi", *common, "--role", "client", "--samples", "1"], tmp_path / "c")
    s_code, s_err, took = _finish(server, START_S + timeout + SLACK_S)
    c_code, c_err, _ = _finish(client, SLACK_S)
    assert took < START_S + SLACK_S + EXIT_S  # at the handshake, not at the timeout
    assert s_code == c_code == 1 and len(s_err) == len(c_err) == 1, (s_err, c_err)
    assert "refused" in s_err[0] and "images" in s_err[0]
    assert "refused" in c_err[0] and "images" in c_err[0]
    assert "timeout" not in s_err[0] + c_err[0]
