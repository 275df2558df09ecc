"""Sweep files: TOML with shared settings and experiments whose axes expand to points.

A point is one method applied once: a training (`train`), or a method on a trained
point (`criticality`, `reduce`, `snl` at one budget, `pi`, `eval`). Points that start
from a trained network depend on its train point, so a sweep is a dependency graph.
Each point's identity (`Point.id`) is derived from its settings alone, so the same file
always maps to the same run directories under the sweep root.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepreshape.datasets import DATASETS
from deepreshape.errors import UsageError

RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer",
               "warmup_epochs", "kd_temperature", "kd_weight", "augment")
TOP_KEYS = {"name", "description", "dataset", "data_dir", "limit", "seed", "seeds", "recipe",
            "recipe_for", "experiment", "scale", "paper"}
BASE_EXPERIMENT_KEYS = ("name", "description", "arch", "seed", "seeds", "recipe", "teacher", "paper")
"""An experiment's own keys; every registered method's name is a key too (its table)."""


def experiment_keys() -> list[str]:
    """Every key an ``[[experiment]]`` takes: its own and one table per registered method."""
    from deepreshape.methods import METHODS

    return [*BASE_EXPERIMENT_KEYS, *METHODS.names()]


class SweepError(UsageError):
    """A malformed sweep file: the message names the file, the experiment and the key."""


class SweepTooLarge(SweepError):
    """A sweep of more points than `max_points` allows; `size` is its point count."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


DEFAULT_MAX_POINTS = 10_000
"""Sweeps larger than this are refused unless the limit is raised (``--max-points``): a
typo in a pattern (``{1..400}`` for ``{1..40}``) must not start building millions of points."""


@dataclass(frozen=True)
class Point:
    """One unit of work: `method` on `arch` with `settings`, after the points in `deps`.

    `run` is the run directory (relative to the sweep root) the method writes, or for
    `pi` / `eval` the run it measures.
    """

    id: str
    method: str
    experiment: str
    arch: str
    seed: int
    settings: dict[str, Any]
    deps: tuple[str, ...]
    run: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as stored in sweep.json)."""
        return {**dataclasses.asdict(self), "deps": list(self.deps)}


@dataclass
class Sweep:
    """A parsed sweep: its name, shared settings and expanded points (dependencies first)."""

    name: str
    source: str
    dataset: str
    data_dir: str | None
    limit: int | None
    points: list[Point] = field(default_factory=list)
    paper: dict[str, Any] = field(default_factory=dict)

    def by_id(self) -> dict[str, Point]:
        """The points keyed by id."""
        return {p.id: p for p in self.points}


# --------------------------------------------------------------------------- patterns

_BRACE = re.compile(r"\{([^{}]*)\}")


def _pattern_choices(text: str) -> list[Any]:
    """The pattern's parts, in order: literal text (a str) or a brace's choices (a `range`
    of integers or a list of strings). Ranges stay ranges, so a pattern of any size is
    sized (`pattern_size`) and walked (`iter_pattern`) without building its names."""
    parts = _BRACE.split(text)
    out: list[Any] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
        elif m := re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            step = 1 if hi >= lo else -1
            out.append(range(lo, hi + step, step))
        elif "," in part:
            out.append([v.strip() for v in part.split(",")])
        else:
            raise ValueError(f"bad pattern {{{part}}} in {text!r}: use {{A..B}} or {{a,b,c}}")
    return out


def pattern_size(text: str) -> int:
    """How many names `expand_pattern(text)` gives, computed without building them."""
    return math.prod(len(c) for c in _pattern_choices(text) if not isinstance(c, str))


def iter_pattern(text: str) -> Iterator[str]:
    """`expand_pattern`'s names one at a time (the same order)."""
    choices = [[c] if isinstance(c, str) else [str(v) for v in c] if isinstance(c, range) else c
               for c in _pattern_choices(text)]
    for combo in itertools.product(*choices):
        yield "".join(combo)


def first_of_pattern(text: str) -> str:
    """The first name `iter_pattern(text)` gives, without walking any range."""
    return "".join(c if isinstance(c, str) else str(c[0]) for c in _pattern_choices(text))


def expand_pattern(text: str) -> list[str]:
    """``hrn-{2..4}x5x2x`` -> hrn-2x5x2x, hrn-3x5x2x, hrn-4x5x2x; ``m{16,32}`` -> m16, m32.

    Several braces expand as a product, in order; text without braces is itself.
    """
    return list(iter_pattern(text))


# --------------------------------------------------------------------------- loading


def load_sweep(path: str | Path, *, dataset: str | None = None, scale: str | None = None,
               data_dir: str | None = None, source: str | None = None,
               max_points: int | None = DEFAULT_MAX_POINTS) -> Sweep:
    """Read and expand a sweep file; `dataset`, `scale` and `data_dir` override the file's.
    A file of more than `max_points` points (None: no limit) is refused before any point
    is made (`SweepTooLarge`)."""
    path = Path(path)
    where = source or str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{where}: no such sweep file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{where}: not valid TOML ({e})") from None
    return expand(raw, where, dataset=dataset, scale=scale, data_dir=data_dir,
                  default_name=path.stem, max_points=max_points)


def _fail(where: str, exp: str | None, key: str, why: str) -> SweepError:
    at = f"experiment {exp!r}: " if exp is not None else ""
    return SweepError(f"{where}: {at}key {key!r}: {why}")


def apply_scale(raw: dict, scale: str, where: str) -> dict:
    """The file with its ``[scale.NAME]`` patch applied: top-level keys replace the file's,
    `recipe` merges, and each ``[[scale.NAME.experiment]]`` merges into the experiment of
    the same name (a method table replaces the file's)."""
    scales = raw.get("scale", {})
    if scale not in scales:
        have = ", ".join(scales) or "none"
        raise _fail(where, None, "scale", f"no scale {scale!r} in this file (has: {have})")
    patch = copy.deepcopy(scales[scale])
    out = copy.deepcopy(raw)
    exps = {e.get("name"): e for e in out.get("experiment", [])}
    for pe in patch.pop("experiment", []):
        name = pe.get("name")
        if name not in exps:
            raise _fail(where, name, "scale", f"scale {scale!r} patches an experiment not in the file")
        target = exps[name]
        for k, v in pe.items():
            if k == "recipe":
                target["recipe"] = {**target.get("recipe", {}), **v}
            else:
                target[k] = v
    recipe = patch.pop("recipe", None)
    if recipe is not None:
        out["recipe"] = {**out.get("recipe", {}), **recipe}
    out.update(patch)
    return out


def expand(raw: dict, where: str, *, dataset: str | None = None, scale: str | None = None,
           data_dir: str | None = None, default_name: str = "sweep",
           max_points: int | None = DEFAULT_MAX_POINTS) -> Sweep:
    """Expand a parsed sweep file into its points (see the module docstring).

    The sweep's size is computed first, from the sizes of its axes (`_experiment_size`), and a
    sweep over `max_points` (None: no limit) raises `SweepTooLarge` before any point or
    network name is made, so a huge grid costs neither time nor memory."""
    if max_points is not None and (not isinstance(max_points, int) or max_points < 1):
        raise UsageError(f"max_points must be a positive integer or None, got {max_points!r}")
    if scale is not None:
        raw = apply_scale(raw, scale, where)
    for k in raw:
        if k not in TOP_KEYS:
            raise _fail(where, None, k, f"unknown key; valid: {', '.join(sorted(TOP_KEYS))}")
    ds = (dataset or raw.get("dataset") or "digits")
    if not isinstance(ds, str) or ds.lower() not in DATASETS:
        raise _fail(where, None, "dataset", DATASETS.unknown(ds))
    ds = ds.lower()
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise _fail(where, None, "limit", f"must be a positive integer, got {limit!r}")
    shared_recipe = _recipe_table(raw.get("recipe", {}), where, None, "recipe")
    per_dataset = raw.get("recipe_for", {})
    if not isinstance(per_dataset, dict) or not set(per_dataset) <= set(DATASETS.names()):
        raise _fail(where, None, "recipe_for", f"must be tables named after data sets "
                    f"({', '.join(DATASETS.names())})")
    shared_recipe.update(_recipe_table(per_dataset.get(ds, {}), where, None, f"recipe_for.{ds}"))
    shared_seeds = _seeds(raw, where, None, [0])
    exps = raw.get("experiment")
    if not isinstance(exps, list) or not exps:
        raise _fail(where, None, "experiment", "a sweep needs at least one [[experiment]]")
    sweep = Sweep(str(raw.get("name") or default_name), where, ds,
                  data_dir if data_dir is not None else raw.get("data_dir"), limit,
                  paper=raw.get("paper", {}))
    points: dict[str, Point] = {}
    trained: dict[tuple[str, int], str] = {}  # (arch, seed) -> first train point id
    pending_teachers: list[tuple[dict, str]] = []
    named = _experiment_names(exps, where)
    if max_points is not None:
        sizes = [(name, _experiment_size(exp, name, where, sweep, shared_recipe, shared_seeds))
                 for exp, name in named]
        total = sum(s.points for _, s in sizes)
        if total > max_points:
            name, big = max(sizes, key=lambda ns: ns[1].points)
            raise SweepTooLarge(
                f"{where}: {total:,} points, over the limit of {max_points:,} (the largest, "
                f"experiment {name!r}: {big.describe()}); narrow the grid, or raise the limit "
                f"with --max-points {total} (Python: max_points={total})", total)
    for exp, name in named:
        _expand_experiment(exp, name, where, sweep, shared_recipe, shared_seeds, points, trained,
                           pending_teachers)
    sweep.points = list(points.values())
    return sweep


def _seeds(table: dict, where: str, exp: str | None, default: list[int]) -> list[int]:
    if "seeds" in table and "seed" in table:
        raise _fail(where, exp, "seeds", "give seed or seeds, not both")
    v = table.get("seeds", [table["seed"]] if "seed" in table else default)
    if not isinstance(v, list) or not v or not all(isinstance(s, int) and not isinstance(s, bool)
                                                   for s in v):
        raise _fail(where, exp, "seeds", f"must be a list of integers, got {v!r}")
    return list(v)


def _recipe_table(t: Any, where: str, exp: str | None, key: str) -> dict:
    if not isinstance(t, dict):
        raise _fail(where, exp, key, "must be a table of recipe values")
    for k in t:
        if k not in RECIPE_KEYS:
            raise _fail(where, exp, f"{key}.{k}", f"unknown recipe value; valid: {', '.join(RECIPE_KEYS)}")
    return dict(t)


def _recipe_axes(recipe: dict, first_only: bool = False) -> list[dict]:
    """Recipe values given as lists are axes: one recipe per combination (`first_only`:
    only the first)."""
    keys = [k for k, v in recipe.items() if isinstance(v, list)]
    combos = itertools.product(*(recipe[k] for k in keys))
    if first_only:
        combos = itertools.islice(combos, 1)
    return [{**recipe, **dict(zip(keys, c, strict=True))} for c in combos]


def check_recipe(recipe: dict, where: str, exp: str | None, key: str) -> None:
    """A UsageError naming the key if the trainer would refuse this recipe."""
    from deepreshape.training import Recipe

    try:
        Recipe(**recipe).validate()
    except TypeError as e:
        raise _fail(where, exp, key, str(e)) from None
    except UsageError as e:
        raise _fail(where, exp, key, str(e)) from None


def digest(obj: Any, n: int = 6) -> str:
    """A short stable hash of JSON-able settings, for run-directory names."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def _arch_patterns(exp: dict, name: str, where: str) -> list[str]:
    """The experiment's `arch` as a list of patterns (checked for shape, not expanded)."""
    arch = exp.get("arch")
    if isinstance(arch, str):
        arch = [arch]
    if not isinstance(arch, list) or not arch or not all(isinstance(a, str) for a in arch):
        raise _fail(where, name, "arch", "must be a name or a list of names (patterns allowed)")
    for pattern in arch:
        try:
            _pattern_choices(pattern)
        except ValueError as e:
            raise _fail(where, name, "arch", str(e)) from None
    return arch


def _arch_names(exp: dict, name: str, where: str, dataset: str) -> list[str]:
    """The experiment's distinct network names as `zoo.parse` names them, in order; a name
    parse refuses is the one-line error naming it."""
    from deepreshape.zoo import parse

    out: dict[str, None] = {}  # ordered and O(1) membership: grids have many names
    for pattern in _arch_patterns(exp, name, where):
        names = list(iter_pattern(pattern))
        valid = _valid_family_names(names, dataset) if len(names) > 1 else set()
        for a in names:
            if a in valid:
                out.setdefault(a)
                continue
            try:
                spec = parse(a, dataset=dataset)
            except UsageError as e:
                raise _fail(where, name, "arch", str(e)) from None
            out.setdefault(spec.name)
    return list(out)


def _valid_family_names(names: list[str], dataset: str) -> set[str]:
    """The names that are BaseCh / StageCh / HRN networks in `zoo.parse`'s own form
    (`design.space.named_groups` reads them as arrays) and that parse would accept, found
    without parsing each: every limit `zoo.parse` checks (widths, multipliers, weights,
    activations) grows with the base width and each multiplier, so when the family's
    network with the largest base width and the largest multiplier at every stage parses,
    every member does. A family whose largest network does not is left to parse, name by
    name, for the exact error."""
    from deepreshape.design import space
    from deepreshape.spec import input_shape

    size, classes = input_shape(dataset, None, None)
    valid: set[str] = set()
    for fam, (rows, m, mult) in space.named_groups(names, size, classes).items():
        try:
            fam.spec(int(m.max()), [int(v) for v in mult.max(axis=0)])
        except UsageError:
            continue
        valid.update(names[i] for i in rows.tolist())
    return valid


def _experiment_names(exps: list, where: str) -> list[tuple[dict, str]]:
    """(table, name) of each experiment, after checking its keys and that names are unique."""
    out = []
    names = set()
    valid_keys = experiment_keys()
    for i, exp in enumerate(exps):
        if not isinstance(exp, dict):
            raise _fail(where, None, f"experiment[{i}]", "must be a table")
        name = str(exp.get("name") or f"experiment{i + 1}")
        if name in names:
            raise _fail(where, name, "name", "two experiments have this name")
        names.add(name)
        for k in exp:
            if k not in valid_keys:
                raise _fail(where, name, k, _unknown_key(k, valid_keys))
        out.append((exp, name))
    return out


@dataclass(frozen=True)
class ExperimentSize:
    """An experiment's size from its axes: networks (names its patterns give, before
    de-duplication) x seeds x recipes x points per network."""

    networks: int
    seeds: int
    recipes: int
    per_network: int

    @property
    def points(self) -> int:
        """At most this many points (de-duplication can only lower it)."""
        return self.networks * self.seeds * self.recipes * self.per_network

    def describe(self) -> str:
        """E.g. '27,000 networks x 2 seeds x 1 recipe x 3 points each'."""
        def n(v: int, what: str) -> str:
            return f"{v:,} {what}{'' if v == 1 else 's'}"

        return (f"{n(self.networks, 'network')} x {n(self.seeds, 'seed')} x "
                f"{n(self.recipes, 'recipe')} x {n(self.per_network, 'point')} each")


def _experiment_size(exp: dict, name: str, where: str, sweep: Sweep, shared_recipe: dict,
                     shared_seeds: list[int]) -> ExperimentSize:
    """The experiment's size, computed without building its grid: the patterns' sizes
    multiply, recipe axes multiply, and the points per network are counted by expanding
    every method on the first network alone (recipes are not checked here, so no trainer
    code is imported; the full expansion checks them)."""
    from deepreshape.methods import METHODS, ExpandContext

    patterns = _arch_patterns(exp, name, where)
    networks = sum(pattern_size(p) for p in patterns)
    seeds = _seeds(exp, where, name, shared_seeds)
    recipe = {**shared_recipe, **_recipe_table(exp.get("recipe", {}), where, name, "recipe")}
    recipes = math.prod(len(v) for v in recipe.values() if isinstance(v, list))
    if not networks or not recipes:
        return ExperimentSize(networks, len(seeds), recipes, 0)
    from deepreshape.zoo import parse

    first = first_of_pattern(patterns[0])
    try:
        arch = parse(first, dataset=sweep.dataset).name
    except UsageError as e:
        raise _fail(where, name, "arch", str(e)) from None
    methods = sorted(METHODS, key=lambda m: m.measures)
    tables = {m.name: _method_table(exp, m, name, where) for m in methods}
    made: dict[str, None] = {}
    ctx = ExpandContext(
        where=where, experiment=name, arch=arch, seed=seeds[0], dataset=sweep.dataset,
        limit=sweep.limit, recipe=_recipe_axes(recipe, first_only=True)[0],
        teacher="teacher" if exp.get("teacher") is not None else None, tables=tables,
        add_point=lambda p: made.setdefault(p.id) or p.id,
        fail=lambda key, why: _fail(where, name, key, why),
        recipe_table=lambda t, key: _recipe_table(t, where, name, key),
        check_recipe=lambda r, key: None, digest=digest)
    for m in methods:
        if tables[m.name] is not None:
            m.check(tables[m.name], ctx)
    for m in methods:
        if tables[m.name] is not None:
            m.expand(tables[m.name], ctx)
    return ExperimentSize(networks, len(seeds), recipes, len(made))


def _unknown_key(key: str, valid: list[str]) -> str:
    """The message for an experiment key that is neither its own nor a method's table."""
    from deepreshape.methods import METHODS

    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return (f"unknown key; valid: {', '.join(sorted(BASE_EXPERIMENT_KEYS))} and the methods "
            f"{', '.join(METHODS.names())}" + (f"; did you mean {close[0]}?" if close else ""))


def _method_table(exp: dict, method: Any, name: str, where: str) -> dict | None:
    v = exp.get(method.name)
    if v is None or v is False:
        return {} if method.implicit else None
    if v is True:
        v = {}
    if not isinstance(v, dict):
        raise _fail(where, name, method.name, "must be a table (or true)")
    for k in v:
        if k not in method.keys:
            valid = ", ".join(sorted(method.keys)) or "none"
            raise _fail(where, name, f"{method.name}.{k}", f"unknown key; valid: {valid}")
    return v


def _expand_experiment(exp: dict, name: str, where: str, sweep: Sweep, shared_recipe: dict,
                       shared_seeds: list[int], points: dict[str, Point],
                       trained: dict[tuple[str, int], str], pending: list) -> None:
    """Expand one experiment: for every (arch, seed, recipe), each registered method with a
    table (and the implicit `train`) adds its points, in registry order (measuring methods
    last), so a method sees the points of the methods before it (`ExpandContext.produced`)."""
    from deepreshape.methods import METHODS, ExpandContext

    archs = _arch_names(exp, name, where, sweep.dataset)
    seeds = _seeds(exp, where, name, shared_seeds)
    recipe = {**shared_recipe, **_recipe_table(exp.get("recipe", {}), where, name, "recipe")}
    recipes = _recipe_axes(recipe)
    for r in recipes:
        check_recipe(r, where, name, "recipe")
    teacher = exp.get("teacher")
    if teacher is not None and not isinstance(teacher, str):
        raise _fail(where, name, "teacher", "must be an architecture name trained by this sweep")
    if teacher is not None:
        teacher = _arch_names({"arch": teacher}, name, where, sweep.dataset)[0]
    # registry order, except that methods measuring others' runs (pi, eval) come last
    methods = sorted(METHODS, key=lambda m: m.measures)
    tables = {m.name: _method_table(exp, m, name, where) for m in methods}

    def add(p: Point) -> str:
        points.setdefault(p.id, p)
        return p.id

    def context(arch: str, seed: int, rec: dict, teacher_run: str | None) -> ExpandContext:
        return ExpandContext(
            where=where, experiment=name, arch=arch, seed=seed, dataset=sweep.dataset,
            limit=sweep.limit, recipe=rec, teacher=teacher_run, tables=tables, add_point=add,
            fail=lambda key, why: _fail(where, name, key, why),
            recipe_table=lambda t, key: _recipe_table(t, where, name, key),
            check_recipe=lambda r, key: check_recipe(r, where, name, key), digest=digest)

    check_ctx = context(archs[0], seeds[0], recipes[0], None)
    for m in methods:
        if tables[m.name] is not None:
            m.check(tables[m.name], check_ctx)

    for arch, seed, rec in itertools.product(archs, seeds, recipes):
        teacher_run = None
        if teacher is not None:
            if (teacher, seed) not in trained:
                raise _fail(where, name, "teacher", f"{teacher} (seed {seed}) is not trained by an "
                            "earlier experiment of this sweep; add it there")
            teacher_run = trained[(teacher, seed)]
        ctx = context(arch, seed, rec, teacher_run)
        for m in methods:
            if tables[m.name] is not None:
                m.expand(tables[m.name], ctx)
        trained.setdefault((arch, seed), ctx.train_id)
