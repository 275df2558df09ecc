"""The sweep driver: walks the dependency graph, hands ready points to a backend, and
records every change in sweep.json.

Nothing is lost or done twice: finished points are skipped, interrupted ones resume from
their checkpoints (every method runs with resume on), failed ones rerun only when asked,
and a failure marks its dependents skipped instead of stopping the sweep.
"""

from __future__ import annotations

import heapq
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from deepreshape.rundir import schema
from deepreshape.rundir.lock import exclusive_lock
from deepreshape.sweep.state import SweepState, now, output_complete
from deepreshape.sweep.sweepfile import Point, Sweep


def shared_settings(sweep: Sweep) -> dict[str, Any]:
    """What every point of `sweep` shares (sent to each worker)."""
    return {"dataset": sweep.dataset, "data_dir": sweep.data_dir, "limit": sweep.limit}


WRITE_SHARE = 0.1
"""At most this share of the driver's time goes to rewriting the sweep state
(`schema.SWEEP_STATE`): after a write that took d seconds, the next waits at least
d / WRITE_SHARE (a write is the whole file, so writing after every change would cost
O(points) each, O(points^2) in all)."""


def run_sweep(sweep: Sweep, root: str | Path, backend: str = "local", *, retry_failed: bool = False,
              quiet: bool = False, stream: TextIO | None = None, poll_s: float = 0.5,
              **backend_kw: Any) -> SweepState:
    """Run every point of `sweep` under `root` on `backend` (see `backends.make_backend`
    for its keywords); returns the final state (also in ROOT/sweep.json).

    The driver holds the root's lock (`schema.SWEEP_LOCK`) for its whole life: a second
    driver on the same root is refused at once (RunFailure naming the holder) before it
    reads or writes anything else, so only the driver that runs a point records it.
    `sweep status` and `sweep report` only read sweep.json and work while it runs.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(schema.SWEEP_LOCK.path(root), f"sweep root {root}", busy="is driven by",
                        advice=f"wait for it to finish (`deepreshape sweep status {root}` "
                        "shows its progress)"):
        return _drive(sweep, root, backend, retry_failed, quiet, stream, poll_s, backend_kw)


def _drive(sweep: Sweep, root: Path, backend: str, retry_failed: bool, quiet: bool,
           stream: TextIO | None, poll_s: float, backend_kw: dict[str, Any]) -> SweepState:
    """The driver proper, under the root's lock."""
    from deepreshape.sweep.backends import make_backend

    stale = []
    if schema.SWEEP_STATE.exists(root):
        stale = SweepState.read(root).with_state("running")
    state = SweepState.start(root, sweep, backend, retry_failed)
    points = sweep.by_id()
    graph = Graph(state)
    engine = make_backend(backend, root, shared_settings(sweep), **backend_kw)
    engine.cancel_stale(stale)
    progress = Progress(state, quiet=quiet, stream=stream)
    writer = Writer(state)
    running: set[str] = set()
    interrupted = True
    try:
        while True:
            graph.skip_dependents()
            for pid in graph.take_ready(max(0, engine.slots - len(running))):
                where = engine.submit(points[pid])
                running.add(pid)
                state.set(pid, "running", started=now(), where=where, error=None,
                          attempts=(state.records[pid].get("attempts") or 0) + 1)
            writer.maybe()
            progress.show()
            if not running:
                break
            for pid, outcome in engine.wait(poll_s):
                running.discard(pid)
                _record(state, points[pid], outcome)
                graph.finished(pid)
        interrupted = False
    finally:
        engine.close(interrupted=interrupted)
        state.info["finished"] = None if interrupted else now()
        state.write()
        progress.end()
    return state


def _record(state: SweepState, point: Point, outcome: dict) -> None:
    """Record a point's outcome; a failed attempt whose output another process completed
    (the run directory's lock refused it, say) is done: what is on disk decides."""
    pid = point.id
    where = {**(state.records[pid].get("where") or {}), **(outcome.get("where") or {})}
    fields = {"finished": now(), "seconds": outcome.get("seconds"), "where": where}
    if outcome.get("ok"):
        state.set(pid, "done", result=outcome.get("result"), **fields)
    elif output_complete(state.root, point):
        state.set(pid, "done", result=None, note="finished by another process: "
                  + (outcome.get("error") or "unknown failure"), **fields)
    else:
        state.set(pid, "failed", error=outcome.get("error") or "unknown failure",
                  lost=bool(outcome.get("lost")), **fields)


class Writer:
    """Writes sweep.json when it changed, spaced by `WRITE_SHARE` (see there)."""

    def __init__(self, state: SweepState) -> None:
        self.state = state
        self.next = 0.0
        self.written = state.changes

    def maybe(self) -> None:
        """Write now if the state changed and the last write is far enough behind."""
        t0 = time.monotonic()
        if self.state.changes == self.written or t0 < self.next:
            return
        self.state.write()
        self.written = self.state.changes
        self.next = t0 + (time.monotonic() - t0) / WRITE_SHARE


class Graph:
    """The dependency graph as counts: each pending point's unmet dependencies, and who
    waits on whom, so the driver finds ready points without a pass over all of them."""

    def __init__(self, state: SweepState) -> None:
        self.state = state
        self.order = {pid: i for i, pid in enumerate(state.records)}
        self.waiters: dict[str, list[str]] = {}
        self.unmet: dict[str, int] = {}
        self.ready: list[tuple[int, str]] = []  # a heap, in file order
        self.bad: list[str] = []  # failed or skipped points whose waiters are still to skip
        for pid, r in state.records.items():
            for d in r["deps"]:
                self.waiters.setdefault(d, []).append(pid)
            if r["state"] in ("failed", "skipped"):
                self.bad.append(pid)
            if r["state"] != "pending":
                continue
            self.unmet[pid] = sum(state.records[d]["state"] != "done" for d in r["deps"])
            if not self.unmet[pid]:
                heapq.heappush(self.ready, (self.order[pid], pid))

    def take_ready(self, n: int) -> list[str]:
        """Up to `n` pending points whose dependencies are all done, in file order."""
        out = []
        while self.ready and len(out) < n:
            _, pid = heapq.heappop(self.ready)
            if self.state.records[pid]["state"] == "pending":
                out.append(pid)
        return out

    def finished(self, pid: str) -> None:
        """`pid` ended: its waiters lose an unmet dependency (done) or are to be skipped."""
        if self.state.records[pid]["state"] != "done":
            self.bad.append(pid)
            return
        for w in self.waiters.get(pid, ()):
            if w in self.unmet:
                self.unmet[w] -= 1
                if not self.unmet[w]:
                    heapq.heappush(self.ready, (self.order[w], w))

    def skip_dependents(self) -> None:
        """Pending points that need a failed or skipped point are skipped, with the reason,
        and so on down the graph."""
        while self.bad:
            bad = self.bad.pop()
            why = self.state.records[bad]["state"]
            for w in self.waiters.get(bad, ()):
                if self.state.records[w]["state"] == "pending":
                    self.state.set(w, "skipped", error=f"needs {bad}, which {why}")
                    self.unmet.pop(w, None)
                    self.bad.append(w)


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
    mean = state.mean_done_seconds()
    left = c["pending"] + c["running"]
    eta = None
    if mean is not None and left:
        par = max(1, c["running"])
        eta = mean * left / par
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
