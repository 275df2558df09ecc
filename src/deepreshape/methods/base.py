"""The `Method` interface: what one ReLU-optimization method (or a step such as training,
evaluation, secure inference) tells the rest of deepreshape about itself.

Everything that used to retype a method's name reads it from its `Method`: the CLI command
(`register_cli`), the sweep table and its keys (`keys`, `check`), how a sweep table expands
into points (`expand`), how one point runs (`run`), when it is finished (`finished`), its
rows in a sweep's results (`rows`), how many trainings it costs (`trainings`) and how its
runs are labelled and drawn in reports and Pareto plots (`styles`, `label`).

This module is light: it imports neither torch nor the method's code; a method's `run`
imports its entry function when a point runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepreshape.errors import UsageError
from deepreshape.rundir import schema

if TYPE_CHECKING:  # only for annotations: sweeps sit above methods
    import argparse

    from deepreshape.options import RunOptions
    from deepreshape.rundir.schema import JsonFile
    from deepreshape.spec import NetSpec
    from deepreshape.sweep.sweepfile import Point

OTHER_STYLE = ("#9467bd", "P")
"""Colour and marker of a run whose method no registered method claims."""


@dataclass(frozen=True)
class Style:
    """How runs of one kind are drawn: legend `label`, `colour` (matplotlib) and `marker`."""

    label: str
    colour: str
    marker: str


@dataclass
class ExpandContext:
    """What a method's `expand` sees of one network of one experiment: one (arch, seed,
    recipe) combination. The sweep file fills it; `add` creates a point."""

    where: str  # the sweep file, for messages
    experiment: str
    arch: str
    seed: int
    dataset: str
    limit: int | None
    recipe: dict  # the experiment's training recipe for this network
    teacher: str | None  # the teacher's train point id, if any
    tables: dict[str, dict | None]  # every method's table of this experiment (None: absent)
    add_point: Callable[[Point], str]
    fail: Callable[[str, str], UsageError]  # fail(key, why) -> the one-line error
    recipe_table: Callable[[Any, str], dict]  # recipe_table(value, key) -> checked recipe values
    check_recipe: Callable[[dict, str], None]  # check_recipe(recipe, key): the trainer's checks
    digest: Callable[[Any], str]  # a short stable hash of settings (run-directory names)
    train_id: str = ""  # the network's train point (set once `train` expanded)
    produced: dict[str, list[str]] = field(default_factory=dict)  # method -> its point ids

    def add(self, method: str, settings: dict, deps: tuple[str, ...], run: str,
            id: str | None = None) -> str:
        """Add a point of `method` (id = `run` unless given) and return its id; a point that
        is already there (same id) is kept."""
        from deepreshape.sweep.sweepfile import Point

        pid = self.add_point(Point(id or run, method, self.experiment, self.arch, self.seed,
                                   settings, deps, run))
        self.produced.setdefault(method, []).append(pid)
        return pid


class Method:
    """One method: subclass it, set the class attributes, override what differs, and
    register an instance (a built-in in `deepreshape.methods.METHODS`, a plugin through the
    ``deepreshape.methods`` entry-point group). See docs/extending.md.

    Class attributes:

    - `name`: the sweep table key, the CLI command and the registry name.
    - `display`, `colour`, `marker`: legend label and style of its runs (`styles` may give
      several, e.g. DeepReDuce and ReLU-reuse).
    - `entry`: ``"module:function"``, its Python API (`entry_function`).
    - `cli`: a module with ``register(subparsers)`` adding its command, or None when the
      method overrides `register_cli` (a plugin) or has no command.
    - `keys`: its sweep table keys and what each means (validated before anything runs).
    - `tags`: the ``method`` tag names its runs carry in their config (default: `name`).
    - `implicit`: runs for every network of every experiment without a table (`train`).
    - `makes_run`: its points are run directories that `pi` and `eval` can measure
      (``of = ["train", "NAME"]``) and that give one results row each.
    - `measures`: its points read other methods' runs (`pi`, `eval`): a sweep expands it
      after every method that makes runs, so ``of`` can name a plugin's method.
    - `result_file`: the schema file whose presence in the point's run means "finished".
    - `ddp`: a sweep may run its points as several DDP processes.
    """

    name: str = ""
    display: str = ""
    colour: str = OTHER_STYLE[0]
    marker: str = OTHER_STYLE[1]
    entry: str = ""
    cli: str | None = None
    keys: Mapping[str, str] = {}
    tags: tuple[str, ...] = ()
    implicit: bool = False
    makes_run: bool = False
    measures: bool = False
    result_file: JsonFile | None = None
    ddp: bool = False

    # ----------------------------------------------------------------- names and styles

    def tag_names(self) -> tuple[str, ...]:
        """The config ``method`` tag names that mean "made by this method"."""
        return self.tags or (self.name,)

    def styles(self) -> list[Style]:
        """Every label its runs can have, with colour and marker (legend order)."""
        return [Style(self.display or self.name, self.colour, self.marker)]

    def label(self, tag: Mapping[str, Any], spec: NetSpec) -> str:
        """The label of a run with config method `tag` and network `spec`."""
        return self.styles()[0].label if self.styles() else self.name

    def entry_function(self) -> Callable[..., Any]:
        """The Python function behind the method (imported now)."""
        module, _, attr = self.entry.partition(":")
        return getattr(importlib.import_module(module), attr)

    # ----------------------------------------------------------------- sweeps

    def check(self, table: dict, ctx: ExpandContext) -> None:
        """Validate the method's table beyond its key names (called once per experiment,
        before any point is made); raise ``ctx.fail(key, why)``."""

    def expand(self, table: dict, ctx: ExpandContext) -> None:
        """Add the method's points for one network (``ctx.add``). The default: one point on
        the trained network, in ``TRAIN/NAME-<digest>``, with the table as settings."""
        settings = dict(table)
        ctx.add(self.name, settings, (ctx.train_id,), f"{ctx.train_id}/{self.name}-{ctx.digest(settings)}")

    def run(self, point: Point, root: Path, options: RunOptions) -> dict:
        """Run one point under the sweep `root` (resume is on in `options`: an interrupted
        point continues, a finished one is reused); returns the result stored in sweep.json."""
        raise NotImplementedError(f"method {self.name!r} cannot run in a sweep")

    def finished(self, root: Path, point: Point) -> bool:
        """Whether the point's output is on disk (a done point whose files were deleted
        runs again)."""
        return self.result_file is None or self.result_file.exists(root / point.run)

    def rows(self, root: Path, record: dict, base: dict) -> list[dict]:
        """The point's rows in the sweep's results (`base` holds point, experiment, method,
        seed, state). A method that makes a run gives one network row."""
        if not self.makes_run:
            return []
        return [network_row(root, record, base)]

    def trainings(self, point: Point, spec: NetSpec) -> float:
        """Full training passes over the data (epochs x networks) the point costs, for
        `deepreshape sweep --list`'s rough GPU-hours."""
        return 0.0

    def networks(self, point: Point, spec: NetSpec) -> int:
        """How many networks the point trains (the dry run's "trainings" column)."""
        return 0

    def relus(self, point: Point) -> int | None:
        """The ReLUs of the point's network when it is not the architecture's (SNL: its
        budget); None: count the architecture."""
        return None

    # ----------------------------------------------------------------- the command line

    def register_cli(self, sub: argparse._SubParsersAction) -> None:
        """Add the method's `deepreshape NAME` command (`cli`'s ``register``)."""
        if self.cli is None:
            return
        module = importlib.import_module(self.cli)
        module.register(sub)

    def __repr__(self) -> str:
        return f"<method {self.name}>"


# --------------------------------------------------------------------------- shared helpers


def pi_fields(run: Path) -> dict[str, Any]:
    """The secure-inference results of `run` for a results row: ``pi`` (by
    ``<protocol>-<link>``: latency_s and bytes) and `latency_s` / `bytes` from the first
    (cheetah over loopback when measured)."""
    from deepreshape.reports.readers import pi_results

    found, _ = pi_results(run)
    pi = {k: {"latency_s": v.get("latency_s"), "bytes": v.get("bytes")} for k, v in found.items()}
    first = PREFERRED_PI if PREFERRED_PI in pi else next(iter(pi), None)
    main = pi.get(first, {}) if first else {}
    return {"pi": pi, "latency_s": main.get("latency_s"), "bytes": main.get("bytes")}


PREFERRED_PI = "cheetah-loopback"


def network_row(root: Path, record: dict, base: dict) -> dict:
    """One results row for a point that made a run directory: its results and its
    secure-inference measurements."""
    run = root / record["run"]
    res, _ = schema.RESULTS.read_optional(run)
    res = res or {}
    return {**base, "network": record["arch"], "relus": res.get("relus"), "macs": res.get("macs"),
            "params": res.get("params"), "accuracy": res.get("final_acc"),
            "budget": record["settings"].get("budget"), **pi_fields(run), "run": record["run"]}


def recipe_values(values: dict | None, **defaults: Any) -> Any:
    """A `Recipe` from a sweep table's recipe values over `defaults`."""
    from deepreshape.training import Recipe

    return Recipe(**{**defaults, **(values or {})})


def of_targets(table: dict, ctx: ExpandContext) -> list[str]:
    """The runs a measuring method (`pi`, `eval`) applies to: the trained network, plus the
    points of every run-making method its ``of`` names (``of = ["train", "snl"]``)."""
    targets = [ctx.train_id]
    for m in table.get("of", ["train"]):
        if m != "train":
            targets += ctx.produced.get(m, [])
    return targets


def check_of(table: dict, ctx: ExpandContext, key: str) -> None:
    """``of`` must list run-making methods (`Method.makes_run`) of the registry."""
    from deepreshape.methods import METHODS

    valid = [m.name for m in METHODS if m.makes_run]
    of = table.get("of", ["train"])
    if not isinstance(of, list) or not set(of) <= set(valid):
        raise ctx.fail(f"{key}.of", f"must be a list of {', '.join(valid)}; got {of!r}")
