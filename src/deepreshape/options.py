"""`RunOptions`: how to run a method (seed, device, data, run control), given once.

Every method entry point (`train`, `criticality`, `deepreduce`, `snl`, `evaluate_run`,
`measure_run`) takes these settings only as ``options=RunOptions(...)``, so a caller that
runs many methods (the CLI, a sweep) builds one value and passes it everywhere, and no
entry point repeats nine keywords. A method reads the fields that apply to it (evaluation
has no seed) and ignores the others.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from deepreshape.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

AMP_MODES = ("auto", "fp32", "bf16")
"""The trainer's --amp choices (`training.precision` resolves them). Here, apart from
torch, so the command line lists them without loading it."""


@dataclass(frozen=True)
class RunOptions:
    """Settings that say how (not what) to run; None means the method's own default.

    seed: RNG seed. device: cpu, cuda, cuda:N (None: CUDA if present). data_dir: data
    root. dataset: the data set (methods on a baseline take the baseline's; naming
    another is an error). limit: first N train and N test images (smoke runs).
    resume / force: continue / start over existing run directories. compile:
    torch.compile. quiet: no progress output.
    """

    seed: int = 0
    device: str | None = None
    data_dir: str | None = None
    dataset: str | None = None
    limit: int | None = None
    resume: bool = False
    force: bool = False
    compile: bool = False
    quiet: bool = False

    @staticmethod
    def of(options: RunOptions | None) -> RunOptions:
        """`options`, or the defaults for None; UsageError for anything else (a dict, say)."""
        if options is None:
            return RunOptions()
        if not isinstance(options, RunOptions):
            raise UsageError(f"options must be a RunOptions, got {type(options).__name__}")
        return options

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions))


def takes_run_options(fn: F) -> F:
    """Mark `fn` as taking run options only through ``options=``: a field of `RunOptions`
    given as a loose keyword that `fn` does not take (``seed=3``, the older API) is a
    TypeError that says how to pass it, instead of Python's bare "unexpected keyword".
    The signature is `fn`'s own."""
    params = inspect.signature(fn).parameters
    loose = frozenset(f for f in FIELDS if f not in params)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bad = [k for k in kwargs if k in loose]
        if bad:
            given = ", ".join(f"{k}={kwargs[k]!r}" for k in bad)
            raise TypeError(f"{fn.__name__}() takes run options only as "
                            f"options=RunOptions({given}), not as keywords")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
