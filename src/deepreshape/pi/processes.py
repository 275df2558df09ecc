"""Parties as spawned processes: start-up, deadline, death, cleanup; and both on loopback.

`spawn` runs each party's session (`party.run_session`) in its own process and waits for
them against one deadline: a failure, a death or the deadline kills all of them and
raises. Every wait is bounded (process start, start-up data, reports, join), a run
stopped by SIGTERM or SIGHUP still cleans up, and the parties die with their parent.
`run_two_party` is the local deployment: compile once, spawn server and client on
127.0.0.1 (optionally through an emulated link), compare with plain JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import queue as queue_mod
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepreshape.errors import RunFailure, UsageError
from deepreshape.pi.channel import free_ports
from deepreshape.pi.link import Relay
from deepreshape.pi.linkprofile import LinkProfile
from deepreshape.pi.measurement import SecureResult
from deepreshape.pi.party import check_queries, run_session, split_queries
from deepreshape.pi.program import Program, as_f32, compile_program, plain_logits
from deepreshape.pi.protocols import check_run_args, checked_protocol, default_weights


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, because ru_maxrss survives exec, so a spawned
    child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _party_entry(role: str, job_path: str, log_path: str, results: Any) -> None:
    """Body of a spawned party process: run it and report (result or error) on the queue.

    The job (program, own input, addresses, settings) comes in a file the parent wrote
    into its private temporary folder, not through the start-up pipe: the parent writes
    that pipe before the child reads it, and a child that dies first would leave the
    parent blocked on a full pipe (tens of kB fill it; the weights are megabytes).
    """
    _die_with_parent()
    try:
        program, own, parties, protocol, samples, timeout_s, cfg = _read_job(Path(job_path), role)
        params, x = (own, None) if role == "server" else (None, own)
        del own
        res = run_session(role, program, params, x, parties, protocol, samples, timeout_s,
                          log_path=log_path, **cfg)
        results.put(("ok", role, res, peak_rss_mb()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        kind = "UsageError" if isinstance(e, UsageError) else "RunFailure"
        results.put(("error", role, kind, f"{type(e).__name__}: {e}", peak_rss_mb()))


def _write_job(base: Path, role: str, job: tuple) -> Path:
    """Write a party's job as data only (JSON, raw executable bytes, an .npz of arrays), so
    reading it back runs nothing, whoever could touch the file. Returns the JSON's path."""
    import jax

    program, own, parties, protocol, samples, timeout_s, cfg = job
    leaves = jax.tree_util.tree_leaves(own) if role == "server" else [own]  # program's order
    base.with_suffix(".exe").write_bytes(program.executable)
    with open(base.with_suffix(".npz"), "wb") as f:
        np.savez(f, *[np.asarray(a) for a in leaves])
    meta = {"param_spec": program.param_spec, "x_shape": list(program.x_shape),
            "out_shape": list(program.out_shape), "parties": list(parties),
            "protocol": protocol, "samples": samples, "timeout_s": timeout_s, "cfg": cfg}
    path = base.with_suffix(".json")
    path.write_text(json.dumps(meta))
    return path


def _read_job(path: Path, role: str) -> tuple:
    """`_write_job`'s job back: params as the list of leaves the program takes, x as one array."""
    meta = json.loads(path.read_text())
    program = Program(path.with_suffix(".exe").read_bytes(), meta["param_spec"],
                      tuple(meta["x_shape"]), tuple(meta["out_shape"]))
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    own = leaves if role == "server" else leaves[0]
    return (program, own, meta["parties"], meta["protocol"], meta["samples"],
            meta["timeout_s"], meta["cfg"])


def _die_with_parent() -> None:
    """Linux: have the kernel kill this party if its parent dies (even by SIGKILL), so no
    party outlives the run that started it. Best effort elsewhere."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(1)


_TEMP_PREFIX = "deepreshape-spu-"


def temp_dir() -> Path:
    """A private temporary folder named after this process; folders left by processes that
    no longer exist (killed with SIGKILL, which no cleanup survives) are removed first."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for d in root.glob(f"{_TEMP_PREFIX}*-*"):
            pid = d.name[len(_TEMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)) and d.stat().st_uid == os.getuid():
                shutil.rmtree(d, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def _terminations_raise() -> Any:
    """SIGTERM and SIGHUP raise `RunFailure` here (main thread only), so a run killed that
    way still stops its parties and removes its temporary folder on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise RunFailure(f"stopped by {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def spawn(jobs: dict[str, tuple], timeout_s: float,
           log_path: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Run each role's `_party_entry` in its own spawned process; wait at most `timeout_s`.

    Returns role -> (SecureResult or None, peak RSS in MiB). Any failure, death or the
    deadline kills all of them and raises. Every wait here is bounded: a process start
    writes only a few hundred bytes to the child (its job is a file), and the parties'
    reports are awaited against the deadline. The parties' jobs and SPU logs go to a
    temporary folder owned here (the log to `log_path` if given, one party), removed on
    every way out, SIGTERM included; the parties die with this process.
    """
    deadline = time.monotonic() + timeout_s
    ctx = multiprocessing.get_context("spawn")
    got = None
    with _terminations_raise():
        tmp = temp_dir()
        results = ctx.Queue()
        procs: dict[str, Any] = {}
        try:
            for role, job in jobs.items():
                job_path = _write_job(tmp / role, role, job)
                procs[role] = ctx.Process(
                    target=_party_entry, name=f"deepreshape-pi-{role}", daemon=True,
                    args=(role, str(job_path), str(log_path or tmp / f"{role}.log"), results))
            _start_quietly(procs.values(), tmp / "parties.stderr")
            got = _collect(procs, results, deadline, timeout_s)
        finally:
            _stop(procs, grace_s=min(10.0, timeout_s) if got is not None else 0.0)
            results.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return got


def _start_quietly(procs: Any, stderr_path: Path) -> None:
    """Start the parties with their stderr in a file of the temporary folder: a party stopped
    while it starts (SIGTERM, a failed peer) would print the interpreter's start-up traceback
    under the one-line error; the parties report their own errors on the queue."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(stderr_path, "ab") as f:
            os.dup2(f.fileno(), 2)
            for p in procs:
                p.start()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _death(role: str, code: int | None) -> RunFailure:
    try:
        how = (f"killed by {signal.Signals(-code).name}" if code and code < 0
               else f"exit code {code}")
    except ValueError:
        how = f"exit code {code}"
    return RunFailure(f"the {role} process died ({how}) without a result; SPU 0.9.5 crashes a "
                      "party whose peer disconnects mid-run, so the peer may be the cause")


def _stop(procs: dict[str, Any], grace_s: float) -> None:
    """Reap the party processes: give them `grace_s` to exit, then kill what still runs."""
    procs = {role: p for role, p in procs.items() if p.pid is not None}  # started ones only
    end = time.monotonic() + grace_s
    for p in procs.values():
        p.join(max(0.0, end - time.monotonic()))
    for p in procs.values():
        if p.is_alive():
            p.terminate()
    for p in procs.values():
        p.join(2)
        if p.is_alive():
            p.kill()
            p.join(2)


def _collect(procs: dict[str, Any], results: Any, deadline: float, timeout_s: float) -> dict:
    """Wait for every party's report; the first error, a death or the deadline ends it."""
    got: dict[str, tuple] = {}
    while len(got) < len(procs):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailure(f"the secure run did not finish within {timeout_s:g} s")
        try:
            msg = results.get(timeout=min(0.5, left))
        except queue_mod.Empty:
            dead = [r for r, p in procs.items() if r not in got and not p.is_alive()]
            if dead:
                try:  # its last report may still be in the pipe
                    msg = results.get(timeout=1.0)
                except queue_mod.Empty:
                    raise _death(dead[0], procs[dead[0]].exitcode) from None
            else:
                continue
        status, role, *rest = msg
        if status == "error":
            kind, text, _ = rest
            raise (UsageError if kind == "UsageError" else RunFailure)(f"{role}: {text}")
        got[role] = tuple(rest)
    return got


def run_two_party(
    fn: Callable,
    params: Any,
    x: Any,
    protocol: str = "cheetah",
    samples: int = 1,
    timeout_s: float = 300,
    base_port: int | None = None,
    link: LinkProfile | None = None,
    weights: str | None = None,
    queries: int = 1,
    **cfg: Any,
) -> SecureResult:
    """Secure inference with server and client as two real processes on 127.0.0.1.

    Compiles once here, spawns both parties (each runs `party.run_session` with the `Program`),
    and returns the client's `SecureResult` with `max_abs_err` against plain JAX and each
    party's peak RSS. `timeout_s` bounds the whole run (process start included): past it,
    or when a party fails or dies, both are killed and `RunFailure` is raised. Ports are
    `base_port` and `base_port + 1`, or free ones. With `link`, each party reaches the
    other through a `deepreshape.pi.link.Relay` that emulates that bandwidth and
    round-trip time. `protocol` "semi2k" is not secure, for debugging: party 0 is the
    trusted dealer. `weights`: "owned" or "shared" (`WEIGHTS`, default per protocol).
    `queries` > 1 splits `x` into that many equal queries run one after another in the
    session (`engine.run_party`); the logits are theirs in order.
    """
    import jax

    cfg = {**cfg, "weights": weights or default_weights(checked_protocol(protocol))}
    check_run_args(protocol, samples, timeout_s, cfg)
    if base_port is not None and not (isinstance(base_port, int) and 1024 <= base_port < 65535):
        raise UsageError(f"base_port must be in [1024, 65534], got {base_port!r}")
    deadline = time.monotonic() + float(timeout_s)
    params32 = jax.tree_util.tree_map(as_f32, params)
    x32 = as_f32(x)
    check_queries(queries, samples, x32)
    program = compile_program(fn, params32, split_queries(x32, queries)[0])
    ports = [base_port, base_port + 1] if base_port else free_ports(2)
    parties = [f"127.0.0.1:{p}" for p in ports]
    common = (protocol, samples, float(timeout_s), {**cfg, "queries": queries})
    with contextlib.ExitStack() as stack:
        views = {"server": parties, "client": parties}
        if link is not None:  # each party listens on its own port, reaches the peer's relay
            fronts = stack.enter_context(Relay(parties, link))
            views = {"server": [parties[0], fronts[1]], "client": [fronts[0], parties[1]]}
        got = spawn({"server": (program, params32, views["server"], *common),
                      "client": (program, x32, views["client"], *common)},
                     max(1.0, deadline - time.monotonic()))
    (res, client_rss), (_, server_rss) = got["client"], got["server"]
    plain = plain_logits(fn, params32, x32)
    err = float(np.max(np.abs(res.logits - plain))) if plain.shape == res.logits.shape else None
    return dataclasses.replace(res, max_abs_err=err,
                               peak_rss_mb={"server": server_rss, "client": client_rss})
