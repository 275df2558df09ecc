"""Run one point: the function every backend calls, in this process or on a worker.

It calls the point's method (`deepreshape.methods.METHODS`: `Method.run`, which calls
the method's Python entry point) with one `RunOptions` (resume on, so an
interrupted point continues from its checkpoint and a finished one is reused), and
returns an outcome dict instead of raising, so a failing point (NaN loss, bad data,
out of memory) is one line in sweep.json and never stops the others. A point that was
preempted (`deepreshape.errors.Preempted`: it caught SIGTERM or SIGUSR1 and wrote its
checkpoint) comes back ``{"ok": False, "preempted": True, "lost": True, ...}``: lost, not
failed, so the driver resumes it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from deepreshape.options import RunOptions
from deepreshape.sweep.sweepfile import Point


def one_line(e: BaseException) -> str:
    """An exception as one short line (type for non-deepreshape errors)."""
    from deepreshape.errors import DeepReshapeError

    text = " ".join(str(e).split()) or e.__class__.__name__
    if not isinstance(e, DeepReshapeError):
        text = f"{e.__class__.__name__}: {text}"
    return text[:300]


def run_point(point: Point, root: str, sweep: dict[str, Any], threads: int = 1,
              device: str | None = None, procs: int = 1) -> dict[str, Any]:
    """Run `point` under the sweep `root`; returns {"ok", "result" | "error", "seconds", "where"}.

    `sweep` holds the shared settings (dataset, data_dir, limit). `threads` fixes torch's
    CPU threads, so every backend computes the same numbers for the same seed. `procs` > 1
    runs a training method as that many DDP processes (one per GPU; gloo on CPU), started
    the way `torchrun` starts them.
    """
    from deepreshape.errors import Preempted, UsageError
    from deepreshape.methods import METHODS

    try:
        method = METHODS.get(point.method)  # a plugin missing on this worker: this point fails
    except UsageError as e:
        return {"ok": False, "error": one_line(e), "seconds": 0.0,
                "where": {"host": socket.gethostname(), "pid": os.getpid()}}
    if procs > 1 and method.ddp:
        return _run_ddp(point, root, sweep, threads, device, procs)
    import torch

    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        opts = RunOptions(seed=point.seed, device=device, data_dir=sweep.get("data_dir"),
                          limit=sweep.get("limit"), resume=True, quiet=True)
        result = method.run(point, Path(root), opts)
        return {"ok": True, "result": result, "seconds": time.time() - t0, "where": where}
    except Preempted as e:  # stopped cleanly with its checkpoint written: not the point's fault
        return {"ok": False, "preempted": True, "lost": True, "error": f"preempted: {one_line(e)}",
                "seconds": time.time() - t0, "where": where}
    except Exception as e:  # isolated: reported as this point's failure
        return {"ok": False, "error": one_line(e), "seconds": time.time() - t0, "where": where}
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- DDP

DDP_TIMEOUT_S = 7 * 24 * 3600  # a bound on one point's processes (a week)


def _run_ddp(point: Point, root: str, sweep: dict[str, Any], threads: int, device: str | None,
             procs: int) -> dict[str, Any]:
    """Start `procs` ranks of this module through torch.distributed.run; rank 0 leaves the
    outcome in a file."""
    import json
    import subprocess
    import sys
    import tempfile

    t0 = time.time()
    where = {"host": socket.gethostname(), "pid": os.getpid(), "ddp_processes": procs}
    with tempfile.TemporaryDirectory(prefix="deepreshape-ddp-") as d:
        job = Path(d) / "point.json"
        job.write_text(json.dumps({"point": point.to_dict(), "root": root, "sweep": sweep,
                                   "threads": threads, "device": device}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), "-m", "deepreshape.sweep.execute", str(job)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"DDP run over {DDP_TIMEOUT_S} s", "where": where,
                    "seconds": time.time() - t0}
        out = Path(d) / "outcome.json"
        if out.exists():
            outcome = json.loads(out.read_text())
            return {**outcome, "where": where, "seconds": time.time() - t0}
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"DDP run failed (exit {proc.returncode}): {last[:200]}",
                "where": where, "seconds": time.time() - t0}


def _rank_main(job_file: str) -> int:
    """One DDP rank (started by torch.distributed.run): run the point; rank 0 writes the outcome."""
    import json

    from deepreshape import fileio

    job = json.loads(Path(job_file).read_text())
    device = job["device"]
    if device in (None, "cuda"):  # one GPU per rank, as torchrun users do by hand
        import torch

        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    p = job["point"]
    point = Point(**{**p, "deps": tuple(p["deps"])})
    outcome = run_point(point, job["root"], job["sweep"], job["threads"], device)
    if int(os.environ.get("RANK", "0")) == 0:
        fileio.write_json(Path(job_file).parent / "outcome.json", outcome)
    return 0 if outcome.get("ok") else 1


if __name__ == "__main__":
    import sys

    sys.exit(_rank_main(sys.argv[1]))
