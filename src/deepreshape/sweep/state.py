"""sweep.json: every point of a sweep, its settings, state, timings and where it ran.

Only the driver writes it (atomically; the driver holds the root's lock, see
`runner.run_sweep`), so it is always a complete picture that `deepreshape sweep status`
can read while the sweep runs. The driver batches changes: one write per poll at most,
spaced so that writing takes a small share of its time (`runner`), since each write is
the whole file. States:
pending, running, done, failed (with the one-line error) and skipped (with the reason).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from deepreshape import fileio
from deepreshape.errors import UsageError
from deepreshape.rundir import schema
from deepreshape.sweep.sweepfile import Point, Sweep

SWEEP_JSON = schema.SWEEP_STATE.name  # for messages
STATES = ("pending", "running", "done", "failed", "skipped")


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def output_exists(root: Path, p: Point) -> bool:
    """Whether the point's finished output is on disk (a done point whose files were
    deleted runs again): its method's `finished` check."""
    from deepreshape.methods import METHODS

    return METHODS.get(p.method).finished(root, p)


def output_complete(root: Path, p: Point) -> bool:
    """Whether the point's output is on disk and complete, for a method that has output to
    check (`Method.result_file`, or its own `finished`): a point that another process
    finished is done whatever its own attempt said (refused by the run directory's lock,
    say). A method with nothing on disk (`eval`) is never judged from disk."""
    from deepreshape.methods import METHODS, Method

    try:
        m = METHODS.get(p.method)
    except UsageError:  # not registered in this process: nothing to judge from
        return False
    checks = m.result_file is not None or type(m).finished is not Method.finished
    return checks and m.finished(root, p)


class SweepState:
    """The records of sweep.json, keyed by point id, with the sweep's own info."""

    def __init__(self, root: Path, info: dict[str, Any], records: dict[str, dict]) -> None:
        self.root = root
        self.info = info
        self.records = records
        self._counts = dict.fromkeys(STATES, 0)
        self._done_s = [0.0, 0]  # seconds of the done points that have them, and how many
        self.changes = 0  # how many `set` calls so far (the driver writes when it moved)
        for r in records.values():
            self._tally(r, +1)

    # ----------------------------------------------------------------- files

    @classmethod
    def read(cls, root: str | Path) -> SweepState:
        """sweep.json of `root`; UsageError if there is none or it is broken."""
        root = Path(root)
        path = schema.SWEEP_STATE.path(root)
        try:
            data = json.loads(path.read_text())
            return cls(root, data["sweep"], {r["id"]: r for r in data["points"]})
        except FileNotFoundError:
            raise UsageError(f"{root}: no {SWEEP_JSON} here (is this a sweep root?)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UsageError(f"{path}: broken {SWEEP_JSON} ({e.__class__.__name__})") from None

    @classmethod
    def start(cls, root: Path, sweep: Sweep, backend: str, retry_failed: bool) -> SweepState:
        """The state to run `sweep` with: earlier records of the same points are kept
        (done stays done while its output exists; failed stays failed unless
        `retry_failed`); running (a killed driver) and skipped become pending again."""
        old = cls.read(root).records if schema.SWEEP_STATE.exists(root) else {}
        records: dict[str, dict] = {}
        for p in sweep.points:
            rec = {**p.to_dict(), "state": "pending", "error": None, "started": None,
                   "finished": None, "seconds": None, "where": None, "result": None, "attempts": 0}
            prev = old.get(p.id)
            if prev is not None:
                keep = {k: prev.get(k) for k in ("state", "error", "started", "finished", "seconds",
                                                 "where", "result", "attempts")}
                state = prev.get("state")
                finished = state == "done" and output_exists(root, p)
                # a point whose worker or job died did not fail: it resumes like a running one
                failed = state == "failed" and not prev.get("lost")
                if finished or (failed and not retry_failed):
                    rec.update(keep)
                else:
                    rec["attempts"] = prev.get("attempts") or 0
                    if state == "running" or prev.get("lost"):
                        rec["resumed"] = True
            records[p.id] = rec
        info = {"name": sweep.name, "file": sweep.source, "dataset": sweep.dataset,
                "data_dir": sweep.data_dir, "limit": sweep.limit, "backend": backend,
                "started": now(), "finished": None, "points": len(records), "paper": sweep.paper}
        state = cls(root, info, records)
        state.write()
        return state

    def write(self) -> None:
        """Write sweep.json atomically, one point a line: compact JSON goes through the C
        encoder (indented JSON does not, and is ~10x slower: seconds at 100,000 points),
        and a line per point stays readable and greppable."""
        self.info["updated"] = now()
        enc = json.JSONEncoder(separators=(",", ":")).encode
        text = "".join(['{"sweep":', enc(self.info), ',"points":[\n',
                        ",\n".join(map(enc, self.records.values())), "\n]}\n"])
        fileio.write_text(schema.SWEEP_STATE.path(self.root), text)

    # ----------------------------------------------------------------- changes

    def set(self, pid: str, state: str, **fields: Any) -> None:
        """Set a point's state and other fields in memory (`write` saves them)."""
        assert state in STATES
        rec = self.records[pid]
        self._tally(rec, -1)
        rec.update(state=state, **fields)
        self._tally(rec, +1)
        self.changes += 1

    def mark(self, pid: str, state: str, **fields: Any) -> None:
        """Set a point's state and other fields, and write."""
        self.set(pid, state, **fields)
        self.write()

    def _tally(self, rec: dict, sign: int) -> None:
        self._counts[rec["state"]] += sign
        if rec["state"] == "done" and rec.get("seconds"):
            self._done_s[0] += sign * rec["seconds"]
            self._done_s[1] += sign

    def counts(self) -> dict[str, int]:
        """Points per state (kept as states change: no pass over the records)."""
        return dict(self._counts)

    def mean_done_seconds(self) -> float | None:
        """The mean seconds of the done points, or None before the first."""
        total, n = self._done_s
        return total / n if n else None

    def with_state(self, state: str) -> list[dict]:
        """The records in `state`, in file order."""
        return [r for r in self.records.values() if r["state"] == state]
