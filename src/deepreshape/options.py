"""`RunOptions`: how to run a method (seed, device, data, run control), given once.

Every method entry point (`train`, `criticality`, `deepreduce`, `snl`, `evaluate_run`,
`measure_run`) accepts ``options=RunOptions(...)`` in place of the keywords each of them
would otherwise repeat, so a caller that runs many methods (the CLI, a sweep) builds one
value and passes it everywhere. The individual keywords keep working.
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

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions))


def with_run_options(fn: F) -> F:
    """Let `fn` take ``options=RunOptions(...)`` for the keywords of the same names it has.

    Fields `fn` does not take are ignored (evaluation has no seed); a None field leaves
    `fn`'s default. Giving a keyword explicitly that `options` sets otherwise is a
    UsageError (two answers to one question).
    """
    sig = inspect.signature(fn)
    taken = [f for f in FIELDS if f in sig.parameters]

    @functools.wraps(fn)
    def wrapper(*args: Any, options: RunOptions | None = None, **kwargs: Any) -> Any:
        if options is None:
            return fn(*args, **kwargs)
        if not isinstance(options, RunOptions):
            raise UsageError(f"options must be a RunOptions, got {type(options).__name__}")
        given = sig.bind_partial(*args, **kwargs).arguments
        default = RunOptions()
        for name in taken:
            value = getattr(options, name)
            if name in given:
                if given[name] != value and value != getattr(default, name):
                    raise UsageError(f"{fn.__name__}: {name} given twice ({given[name]!r} as a "
                                     f"keyword, {value!r} in options); give it once")
                continue
            if value is not None:
                kwargs[name] = value
        return fn(*args, **kwargs)

    params = list(sig.parameters.values())
    extra = inspect.Parameter("options", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation="RunOptions | None")
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    wrapper.__signature__ = sig.replace(parameters=[*params[:at], extra, *params[at:]])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
