"""Preemption: SIGTERM and SIGUSR1 stop a run cleanly, with a checkpoint and exit 143.

Slurm (and most schedulers) send SIGTERM, then SIGKILL after a grace period; Slurm can
also send SIGUSR1 before the time limit (`--signal=USR1@120`). While `watch()` is active
either signal is caught:

* inside a `deferred()` section (the trainer's epoch loop) the handler only records the
  signal; the loop looks at `pending()` after every optimizer step, finishes that step,
  writes its checkpoint atomically and raises `Preempted`. Stopping between steps, never
  inside one, is what makes the checkpoint exact;
* anywhere else (a method between two trainings, loading data) the handler raises
  `Preempted` at once: run files are written atomically, so what is on disk stays
  consistent, and what was finished is reused by `--resume`.

A signal is never swallowed: one still pending when a `deferred()` section ends raises
`Preempted` there. Handlers are installed only in the main thread (Python delivers
signals there); elsewhere, and on platforms without these signals, `watch()` does nothing.
Nested `watch()` calls share one installation; the outermost restores the old handlers.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from deepreshape.errors import Preempted

F = TypeVar("F", bound=Callable)

SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))


class _State:
    """The one installation of this process (signals are per process)."""

    def __init__(self) -> None:
        self.depth = 0  # nested watch() calls
        self.deferring = 0  # nested deferred() sections
        self.received: int | None = None  # the signal caught (kept until watch() ends)
        self.old: dict = {}  # the handlers to restore, per signal
        self.held: contextlib.AbstractContextManager | None = None  # hold_for_process()


_state = _State()


def signal_name(signum: int | None) -> str:
    """'SIGTERM' for 15 (and so on)."""
    try:
        return signal.Signals(signum).name
    except (TypeError, ValueError):
        return f"signal {signum}"


def _handler(signum: int, _frame: object) -> None:
    first = _state.received is None
    _state.received = signum
    if _state.deferring == 0 and first:
        raise Preempted(f"preempted ({signal_name(signum)}) between training steps; the run "
                        "files written so far are kept; run the same command with --resume "
                        "to continue")


@contextlib.contextmanager
def watch() -> Iterator[None]:
    """Catch SIGTERM and SIGUSR1 while the block runs (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread() or not SIGNALS:
        yield
        return
    if _state.depth == 0:
        try:
            _state.old = {s: signal.signal(s, _handler) for s in SIGNALS}
        except (ValueError, OSError):  # an embedding interpreter that refuses handlers
            yield
            return
        _state.received = None
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for s, old in _state.old.items():
                signal.signal(s, old)
            _state.old, _state.received = {}, None


def preemptible(fn: F) -> F:
    """Run `fn` under `watch()`: a method that trains several networks one after another
    (criticality, DeepReDuce, SNL) is then stopped cleanly between two of them as well."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN202
        with watch():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section that stops only where it checks `pending()`; a signal still pending when
    it ends (normally) raises `Preempted` there."""
    if _state.received is not None and _state.deferring == 0:
        raise Preempted(f"preempted ({signal_name(_state.received)}) before training began; "
                        "run the same command with --resume to continue")
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if _state.received is not None and _state.deferring == 0:
        raise Preempted(f"preempted ({signal_name(_state.received)}) after the training "
                        "finished; its files are complete; run the same command with "
                        "--resume to continue")


def pending() -> str | None:
    """The name of a caught signal not yet acted on ('SIGTERM'), or None."""
    return None if _state.received is None else signal_name(_state.received)


def hold_for_process() -> None:
    """For a worker process that runs one training after another (criticality's
    `--jobs`): catch the signals for the whole life of the process and only record them,
    so that one arriving between two trainings stops the next one after its first step
    (with its checkpoint) instead of killing the worker outside any training."""
    if threading.current_thread() is not threading.main_thread() or not SIGNALS:
        return
    if _state.held is None:
        _state.held = watch()  # kept referenced: never left, the process ends with it
        _state.held.__enter__()
        _state.deferring += 1
