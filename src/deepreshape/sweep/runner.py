"""The sweep driver: walks the dependency graph, hands ready points to a backend, and
records every change in sweep.json.

Nothing is lost or done twice: finished points are skipped, interrupted ones resume from
their checkpoints (every method runs with resume on), failed ones rerun only when asked,
and a failure marks its dependents skipped instead of stopping the sweep.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from deepreshape.rundir import schema
from deepreshape.sweep.state import SweepState, now
from deepreshape.sweep.sweepfile import Sweep


def shared_settings(sweep: Sweep) -> dict[str, Any]:
    """What every point of `sweep` shares (sent to each worker)."""
    return {"dataset": sweep.dataset, "data_dir": sweep.data_dir, "limit": sweep.limit}


def run_sweep(sweep: Sweep, root: str | Path, backend: str = "local", *, retry_failed: bool = False,
              quiet: bool = False, stream: TextIO | None = None, poll_s: float = 0.5,
              **backend_kw: Any) -> SweepState:
    """Run every point of `sweep` under `root` on `backend` (see `backends.make_backend`
    for its keywords); returns the final state (also in ROOT/sweep.json)."""
    from deepreshape.sweep.backends import make_backend

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stale = []
    if schema.SWEEP_STATE.exists(root):
        stale = SweepState.read(root).with_state("running")
    state = SweepState.start(root, sweep, backend, retry_failed)
    points = sweep.by_id()
    engine = make_backend(backend, root, shared_settings(sweep), **backend_kw)
    engine.cancel_stale(stale)
    progress = Progress(state, quiet=quiet, stream=stream)
    running: set[str] = set()
    interrupted = True
    try:
        while True:
            _skip_dependents(state)
            ready = [r["id"] for r in state.with_state("pending")
                     if all(state.records[d]["state"] == "done" for d in r["deps"])]
            for pid in ready[:max(0, engine.slots - len(running))]:
                where = engine.submit(points[pid])
                running.add(pid)
                state.mark(pid, "running", started=now(), where=where, error=None,
                           attempts=(state.records[pid].get("attempts") or 0) + 1)
            progress.show()
            if not running:
                break
            for pid, outcome in engine.wait(poll_s):
                running.discard(pid)
                where = {**(state.records[pid].get("where") or {}), **(outcome.get("where") or {})}
                fields = {"finished": now(), "seconds": outcome.get("seconds"), "where": where}
                if outcome.get("ok"):
                    state.mark(pid, "done", result=outcome.get("result"), **fields)
                else:
                    state.mark(pid, "failed", error=outcome.get("error") or "unknown failure",
                               lost=bool(outcome.get("lost")), **fields)
        interrupted = False
    finally:
        engine.close(interrupted=interrupted)
        state.info["finished"] = None if interrupted else now()
        state.write()
        progress.end()
    return state


def _skip_dependents(state: SweepState) -> None:
    """Pending points that need a failed or skipped point are skipped, with the reason
    (records are in dependency order, so one pass reaches every descendant)."""
    for r in state.records.values():
        if r["state"] != "pending":
            continue
        bad = [d for d in r["deps"] if state.records[d]["state"] in ("failed", "skipped")]
        if bad:
            state.mark(r["id"], "skipped",
                       error=f"needs {bad[0]}, which {state.records[bad[0]]['state']}")


# --------------------------------------------------------------------------- progress


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def summary_line(state: SweepState, elapsed_s: float | None = None) -> str:
    """`name: 3/8 done, 2 running, 1 failed, 2 skipped, 0 pending | 1m20s elapsed, ~2m05s left`."""
    c = state.counts()
    total = len(state.records)
    done_s = [r["seconds"] for r in state.records.values() if r["state"] == "done" and r["seconds"]]
    left = c["pending"] + c["running"]
    eta = None
    if done_s and left:
        par = max(1, c["running"])
        eta = sum(done_s) / len(done_s) * left / par
    text = (f"{state.info.get('name')}: {c['done']}/{total} done, {c['running']} running, "
            f"{c['failed']} failed, {c['skipped']} skipped, {c['pending']} pending")
    if elapsed_s is not None:
        text += f" | {_dur(elapsed_s)} elapsed"
    if left:
        text += f", ~{_dur(eta)} left" if eta is not None else ", time left unknown yet"
    return text


class Progress:
    """One live line on a terminal (rewritten in place); a line per change otherwise."""

    def __init__(self, state: SweepState, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.state, self.quiet = state, quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = None

    def show(self) -> None:
        """Print the summary if it changed (always refresh the clock on a terminal)."""
        if self.quiet:
            return
        counts = tuple(self.state.counts().values())
        if self.tty:
            self.stream.write("\r\033[K" + summary_line(self.state, time.monotonic() - self.t0))
            self.stream.flush()
        elif counts != self.last:
            print(summary_line(self.state, time.monotonic() - self.t0), file=self.stream, flush=True)
        self.last = counts

    def end(self) -> None:
        """Finish the live line."""
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()
