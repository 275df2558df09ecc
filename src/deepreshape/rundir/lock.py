"""Exclusive locks on files (`flock`), refused at once with one line naming the holder.

Two locks use it: a run directory's writer lock (`rundir.run.writer_lock`, one writer per
run directory) and a sweep root's driver lock (`sweep.runner.run_sweep`, one driver per
root). The kernel drops a flock with its process, so a killed holder never leaves a stale
lock; the holder writes its pid, host and start time into the file so that a refused
process can say who holds it. Light on purpose (no torch): the sweep driver takes it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from deepreshape.errors import RunFailure


def holder(fd: int) -> str:
    """Who holds the lock open on `fd`, as written by `exclusive_lock` (or a bare pid, as
    older versions wrote): ``pid 123 on host node1 since 2026-01-01T00:00:00+00:00``."""
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if text.isdigit():
        return f"pid {text}"
    try:
        info = json.loads(text)
        return f"pid {int(info['pid'])} on host {info['host']} since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def exclusive_lock(lock: str | Path, what: str, *, busy: str = "is in use by",
                   advice: str = "wait for it to finish") -> Iterator[Path]:
    """Hold an exclusive `flock` on the file `lock` (created if missing) for the block.

    A second holder, in another process (or through another open file in this one), gets
    RunFailure at once: ``{what} {busy} another deepreshape process (pid P on host H since
    T); {advice}``. Released on every exit path, a kill included.
    """
    lock = Path(lock)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = holder(fd)
        os.close(fd)
        raise RunFailure(f"{what} {busy} another deepreshape process ({who}); {advice}") from None
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield lock
    finally:
        os.close(fd)
