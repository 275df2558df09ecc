"""DeepReDuce (Jha et al. 2021) and the seed paper's Algorithm 2 (ReLU-reuse), as spec edits.

Steps, each a pure function NetSpec -> NetSpec with exact counts from `count(spec)`:

- `cull(spec, stages)`: every slot of the stages -> identity (culling stage 1 takes the
  stem with it, since the stem belongs to stage 1; DeepReDuce's released models have no
  stem ReLU).
- `thin(spec, drop)`: in every stage that still has ReLUs, list the stage's slots in
  forward order and linearize every other one. ``drop="relu2"`` (the default) linearizes
  positions 1, 3, 5, ...: in a basic block the ReLU after the residual add goes and the
  one between the convolutions stays, as in DeepReDuce's released models
  (``isThinned=[False, True]``). ``drop="relu1"`` linearizes positions 0, 2, 4, ... (in a
  basic block the mid-block ReLU). Both leave the same counts in basic blocks, not the same
  network. Bottlenecks and pre-activation blocks alternate by the same positions. The stem
  is a single layer before the stages and is not thinned.
- Reshapes, which compose (``channel+fmap``, ``depth+channel+fmap``):
  `scale_channels(spec, 0.5)` every width x factor (the stem too);
  `scale_feature_maps(spec)` stem stride 2 (a 4x smaller area);
  `scale_depths(spec, (2, 1, 1, 1))` fewer blocks per stage (the first ones kept).
  All three keep the slot kinds by address.
- `reuse(spec, N)`: ReLU-reuse `reuse:N` on the remaining `relu` slots of the stages (the
  stem, like in thinning, is left as it is).

Pipelines (`plan`), with C the stages from least to most critical:

- "deepreduce": D-1 iterations; iteration i culls C[1..i] (cumulatively), then thins,
  then reshapes the thinned net (each requested reshape, e.g. channels x0.5, feature
  maps /2, or both together).
- "hrn" (Algorithm 2): one iteration; cull C[1] only if it holds the largest share of
  ReLUs (ties count as largest), thin, channel-scale the thinned net by 0.5 and apply
  ReLU-reuse at 4, 8, 16 to the thinned net. Reuse goes where thinning left ReLUs (so
  after the default thinning, on relu1 of basic blocks): Algorithm 2 and Appendix E apply
  it to "the remaining layers" of the thinned network.

Every produced network is trained with KD from the baseline, starting from the baseline's
weights wherever name and shape fit (`init_from`); the unchanged baseline is not retrained.
`plan` needs no weights: `deepreduce(..., dry_run=True)` takes a network name as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepreshape.count import count
from deepreshape.errors import UsageError
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run, load_run
from deepreshape.spec import DEFAULT_DATASET, NetSpec, relu_slots
from deepreshape.training.preemption import preemptible
from deepreshape.training.recipe import Recipe
from deepreshape.zoo import parse

PIPELINES = ("deepreduce", "hrn")
STEPS = ("cull", "thin", "reshape", "reuse")
RESHAPES = ("depth", "channel", "fmap")  # also the order in which a composed reshape applies
THINNING = ("relu2", "relu1")  # the slot a basic block loses; relu2 = DeepReDuce's models
DEFAULTS = {
    "deepreduce": {"steps": ("cull", "thin", "reshape"), "reshape": ("channel", "fmap")},
    "hrn": {"steps": ("cull", "thin", "reshape", "reuse"), "reshape": ("channel",)},
}


# --------------------------------------------------------------------------- spec steps


def _stage_slots(spec: NetSpec, k: int) -> list[str]:
    """Stage k's slot addresses in forward order, stem excluded."""
    return [s.address for s in relu_slots(spec) if s.stage == k and not s.address.startswith("stem.")]


def _set(spec: NetSpec, changes: dict[str, str]) -> NetSpec:
    return spec.with_slots(changes) if changes else spec


def cull(spec: NetSpec, stages: Iterable[int]) -> NetSpec:
    """Linearize every slot of the given (1-based) stages; stage 1 includes the stem."""
    ks = set(stages)
    bad = sorted(k for k in ks if not 1 <= k <= len(spec.stages))
    if bad:
        raise UsageError(f"cannot cull stage{bad[0]}: {spec.name} has stages 1..{len(spec.stages)}")
    return _set(spec, {s.address: "identity" for s in relu_slots(spec) if s.stage in ks})


def live_stages(spec: NetSpec) -> list[int]:
    """Stages with at least one slot that is not identity (stages not culled)."""
    return [k for k in range(1, len(spec.stages) + 1)
            if any(str(spec.slot_kind(a)) != "identity" for a in _stage_slots(spec, k))]


def alternate_slots(spec: NetSpec, drop: str = "relu2") -> list[str]:
    """Every other slot of each stage still having ReLUs: positions 1, 3, ... for
    ``drop="relu2"`` (a basic block's post-addition ReLU), 0, 2, ... for ``"relu1"``.
    The "alternate layers" of thinning and of the paper's Table 9."""
    start = 1 if _thinning(drop) == "relu2" else 0
    return [a for k in live_stages(spec) for a in _stage_slots(spec, k)[start::2]]


def _thinning(drop: str) -> str:
    if drop not in THINNING:
        raise UsageError(f"unknown thinning {drop!r}; valid: {', '.join(THINNING)} "
                         "(the ReLU a basic block loses; relu2 is DeepReDuce's)")
    return drop


def thin(spec: NetSpec, drop: str = "relu2") -> NetSpec:
    """Linearize the alternate slots (`alternate_slots`) of each stage still having ReLUs."""
    return _set(spec, {a: "identity" for a in alternate_slots(spec, drop)})


def reuse(spec: NetSpec, factor: int) -> NetSpec:
    """ReLU-reuse (`reuse:N`) on every remaining plain `relu` slot of the stages."""
    return _set(spec, {a: f"reuse:{factor}" for k in range(1, len(spec.stages) + 1)
                       for a in _stage_slots(spec, k) if str(spec.slot_kind(a)) == "relu"})


def _reparsed(spec: NetSpec, **overrides) -> NetSpec:
    """`spec` re-parsed with name overrides (widths, depths, stem stride), keeping input,
    classes, stem stride and the kinds of the slots that still exist."""
    kw = {"stem_stride": spec.stem.stride, **overrides}
    new = parse(spec.name, input_size=spec.input_size, num_classes=spec.num_classes, **kw)
    new = dataclasses.replace(new, in_channels=spec.in_channels)
    exists = {s.address for s in relu_slots(new)}
    return _set(new, {a: k for a, k in spec.slots if a in exists})


def scale_channels(spec: NetSpec, factor: float) -> NetSpec:
    """Every stage width x factor (half up, at least 1; the stem follows stage 1), same
    depths, stem stride and slots."""
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise UsageError(f"channel scale must be positive, got {factor}")
    widths = [max(1, int(w * factor + 0.5)) for w in spec.stage_widths]
    by_widths = _reparsed(spec, widths=widths)
    # the same network named by a base width (resnet18-m32, not resnet18-w32,64,128,256)
    for m in sorted({widths[0], spec.stem.width * widths[0] // spec.stage_widths[0]} - {0}):
        try:
            by_m = _reparsed(spec, base_width=m)
        except UsageError:
            continue
        if dataclasses.replace(by_m, name=by_widths.name) == by_widths:
            return by_m
    return by_widths


def scale_feature_maps(spec: NetSpec, stride: int = 2) -> NetSpec:
    """DeepReDuce's feature-map scaling: an early stride in the stem (area / stride^2)."""
    return _reparsed(spec, stem_stride=stride)


def scale_depths(spec: NetSpec, depths: Sequence[int]) -> NetSpec:
    """Fewer blocks per stage (DeepReDuce's lowest point: ResNet18 at [2,1,1,1]); the first
    blocks of each stage stay, with their slot kinds."""
    depths = tuple(depths)
    if len(depths) != len(spec.stages) or any(
            isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= cur
            for d, cur in zip(depths, spec.depths, strict=False)):
        raise UsageError(f"depths {','.join(map(str, depths))} do not fit {spec.name}: give "
                         f"{len(spec.stages)} depths, each 1..its stage's depth "
                         f"({','.join(map(str, spec.depths))})")
    return _reparsed(spec, depths=depths)


def apply_reshapes(spec: NetSpec, kinds: Iterable[str], *, scale: float = 0.5,
                   depths: Sequence[int] | None = None) -> NetSpec:
    """One network with all the reshapes `kinds` (depth, channel, fmap) applied, in the
    order given (`plan` passes them in `RESHAPES` order; counts do not depend on it)."""
    for kind in kinds:
        if kind == "depth":
            if depths is None:
                raise UsageError("the depth reshape needs target depths (--depths, e.g. 2,1,1,1)")
            spec = scale_depths(spec, depths)
        elif kind == "channel":
            spec = scale_channels(spec, scale)
        elif kind == "fmap":
            spec = scale_feature_maps(spec)
        else:
            raise UsageError(f"unknown reshape {kind!r}; valid: {', '.join(RESHAPES)}")
    return spec


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Planned:
    """One network of a reduction pipeline: its run label, the steps that made it and its spec."""

    label: str  # run directory name, e.g. "cull-s1-thin-ch0.5"
    steps: tuple[str, ...]  # e.g. ("cull stage1", "thin", "channels x0.5")
    spec: NetSpec
    baseline: bool = False  # the unchanged baseline (reported, not retrained)


def _fmt(x: float) -> str:
    return f"{x:g}"


def plan(
    spec: NetSpec,
    order: Sequence[int] | str,
    *,
    pipeline: str = "deepreduce",
    steps: Iterable[str] | None = None,
    reuse_factors: Sequence[int] = (4, 8, 16),
    scale: float = 0.5,
    reshape: Iterable[str] | None = None,
    depths: Sequence[int] | None = None,
    thinning: str = "relu2",
) -> list[Planned]:
    """Every network a pipeline produces from `spec`, with `order` most to least critical.

    `reshape` lists reshapes, each one kind or several joined by ``+`` to apply together
    (``["channel", "fmap", "channel+fmap", "depth+channel+fmap"]``); `depths` are the
    stage depths of the ``depth`` reshape; `thinning` is the slot a basic block loses
    (`THINNING`). The baseline comes first; duplicates (e.g. thinning a net whose stages
    have one slot) appear once.
    """
    from deepreshape.design.solver import validate_order

    if pipeline not in PIPELINES:
        raise UsageError(f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
    order = validate_order(order)
    if len(order) != len(spec.stages):
        raise UsageError(f"order {','.join(map(str, order))} has {len(order)} stages, "
                         f"{spec.name} has {len(spec.stages)}")
    steps = _choose(steps, STEPS, "step", DEFAULTS[pipeline]["steps"])
    reshapes = _reshapes(reshape, DEFAULTS[pipeline]["reshape"])
    uses_depth = "reshape" in steps and any("depth" in r for r in reshapes)
    if uses_depth and depths is None:
        raise UsageError("the depth reshape needs target depths (--depths, e.g. 2,1,1,1)")
    if depths is not None and not uses_depth:
        raise UsageError("depths are for the depth reshape; add it (e.g. --reshape "
                         "channel,depth+channel+fmap) or leave the depths out")
    _thinning(thinning)
    for n in reuse_factors:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise UsageError(f"ReLU-reuse factors must be integers >= 2, got {n!r}")
    dtext = ",".join(map(str, depths or ()))
    names = {"depth": (f"d{dtext.replace(',', '.')}", f"depths {dtext}"),  # label, step
             "channel": (f"ch{_fmt(scale)}", f"channels x{_fmt(scale)}"),
             "fmap": ("fm2", "feature maps /2")}
    least = list(reversed(order))
    if "cull" not in steps:
        culls: list[list[int]] = [[]]
    elif pipeline == "deepreduce":
        culls = [least[: i + 1] for i in range(len(least) - 1)]
    else:
        relus = [s.relus for s in count(spec).stages]
        culls = [[least[0]] if relus[least[0] - 1] >= max(relus) else []]

    out = [Planned(spec.name, ("baseline",), spec, baseline=True)]
    for culled in culls:
        net, label, done = spec, [], []
        if culled:
            net = cull(spec, culled)
            label.append("cull-" + "".join(f"s{k}" for k in culled))
            done.append("cull " + "+".join(f"stage{k}" for k in culled))
            out.append(Planned("-".join(label), tuple(done), net))
        if "thin" in steps:
            net = thin(net, thinning)
            label.append("thin" if thinning == "relu2" else f"thin-{thinning}")
            done.append("thin" if thinning == "relu2" else f"thin ({thinning})")
            out.append(Planned("-".join(label), tuple(done), net))
        if "reshape" in steps:
            for kinds in reshapes:
                out.append(Planned("-".join([*label, *(names[k][0] for k in kinds)]),
                                   (*done, *(names[k][1] for k in kinds)),
                                   apply_reshapes(net, kinds, scale=scale, depths=depths)))
        if "reuse" in steps:
            out += [Planned("-".join([*label, f"reuse{n}"]), (*done, f"ReLU-reuse x{n}"),
                            reuse(net, n)) for n in _fitting_factors(net, reuse_factors)]
    seen, unique = set(), []
    for p in out:
        key = json.dumps(p.spec.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _fitting_factors(spec: NetSpec, factors: Sequence[int]) -> list[int]:
    """The factors every remaining ReLU slot is wide enough for (C >= N); others are skipped
    with a warning instead of failing the whole pipeline on a narrow network."""
    widths = [s.channels for s in relu_slots(spec) if not s.address.startswith("stem.")
              and str(spec.slot_kind(s.address)) == "relu"]
    narrow = min(widths, default=0)
    fit = [n for n in factors if n <= narrow]
    for n in factors:
        if n > narrow:
            warnings.warn(f"ReLU-reuse x{n} skipped for {spec.name}: its narrowest ReLU layer has "
                          f"{narrow} channels (needs at least {n})", stacklevel=3)
    return fit


def _reshapes(values: Iterable[str] | None, default: Sequence[str]) -> list[tuple[str, ...]]:
    """Reshapes as tuples of kinds in `RESHAPES` order ('fmap+channel' = 'channel+fmap')."""
    out: list[tuple[str, ...]] = []
    for item in default if values is None else values:
        kinds = _choose(item.split("+"), RESHAPES, "reshape", ())
        if len(set(kinds)) != len(kinds):
            raise UsageError(f"reshape {item!r} names a kind twice")
        combo = tuple(k for k in RESHAPES if k in kinds)
        if combo not in out:
            out.append(combo)
    if not out:
        raise UsageError(f"no reshape given; valid: {', '.join(RESHAPES)}, joined by + to combine")
    return out


def _choose(values: Iterable[str] | None, valid: Sequence[str], what: str,
            default: Sequence[str]) -> tuple[str, ...]:
    if values is None:
        return tuple(default)
    vals = tuple(v.strip().lower() for v in values if v.strip())
    bad = [v for v in vals if v not in valid]
    if bad or not vals:
        raise UsageError(f"unknown {what} {bad[0] if bad else '(none)'!r}; valid: {', '.join(valid)}")
    return vals


# --------------------------------------------------------------------------- running


@dataclass
class Reduced:
    """What `deepreduce` produced: one row per network, plus run info (reduce.json)."""

    rows: list[dict]  # label, steps, arch, relus, macs, params, accuracy, run, baseline
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict: run info and the network rows."""
        return {**self.info, "networks": self.rows}


def resolve_order(base: Run | None, order: Sequence[int] | str | None
                  ) -> tuple[tuple[int, ...], str]:
    """--order when given, else RUN/criticality.json's; which one is said in the result."""
    from deepreshape.design.solver import validate_order
    from deepreshape.optimize.criticality import load_criticality

    if order is not None:
        return validate_order(order), "--order"
    if base is None:
        raise UsageError(f"a network name has no {schema.CRITICALITY.name}; pass --order "
                         "(e.g. --order 3,2,4,1)")
    crit = load_criticality(base.path)
    if crit is None:
        raise UsageError(f"{base.path} has no {schema.CRITICALITY.name}; run `deepreshape criticality "
                         f"{base.path}` first or pass --order (e.g. --order 3,2,4,1)")
    return validate_order(crit.order), str(schema.CRITICALITY.path(base.path))


def _plan_source(run: str | Path | Run, dataset: str | None) -> tuple[Run | None, NetSpec]:
    """What a dry run plans from: a run directory (its spec; no checkpoint needed) or a
    network name (at `dataset`'s input size)."""
    from deepreshape.optimize import check_dataset

    if isinstance(run, Run) or Path(run).is_dir():
        base = run if isinstance(run, Run) else load_run(run)
        check_dataset(base, dataset)
        return base, base.spec
    try:
        return None, parse(str(run), dataset=dataset)
    except UsageError as e:
        raise UsageError(f"{run}: neither a run directory nor a network name ({e})") from None


def _not_a_name(run: str | Path | Run) -> str | Path | Run:
    """`run` unchanged, unless it is a network name rather than a directory: training
    needs a trained baseline, so that gets a hint instead of 'no such run directory'."""
    if isinstance(run, Run) or Path(run).exists():
        return run
    try:
        parse(str(run))
    except UsageError:
        return run
    raise UsageError(f"{run} is a network name; reduce trains from a trained baseline run "
                     f"(deepreshape train {run} --out DIR), or plans it with --dry-run")


def _row(p: Planned, acc: float | None, run_dir: str | None) -> dict:
    c = count(p.spec)
    return {"label": p.label, "steps": list(p.steps), "arch": p.spec.describe(),
            "stem_stride": p.spec.stem.stride, "relus": c.relus, "macs": c.macs,
            "params": c.params, "stage_relus": [s.relus for s in c.stages],
            "accuracy": acc, "run": run_dir, "baseline": p.baseline}


@takes_run_options
@preemptible
def deepreduce(
    run: str | Path | Run,
    *,
    pipeline: str = "deepreduce",
    order: Sequence[int] | str | None = None,
    steps: Iterable[str] | None = None,
    reuse_factors: Sequence[int] = (4, 8, 16),
    scale: float = 0.5,
    reshape: Iterable[str] | None = None,
    depths: Sequence[int] | None = None,
    thinning: str = "relu2",
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    dry_run: bool = False,
    options: RunOptions | None = None,
) -> Reduced:
    """Run a pipeline on a trained baseline: one run directory per produced network under
    OUT (default RUN/reduce), and OUT/reduce.json with the summary. `dry_run` only plans
    (exact counts, nothing trained or written, no checkpoint read); it takes a network
    name (with `options.dataset` and `order`) as well as a run directory. `options`
    (`RunOptions`) says how every produced network is trained."""
    from deepreshape.optimize import baseline_data, load_baseline
    from deepreshape.training import train

    opts = RunOptions.of(options)
    dataset = opts.dataset
    if dry_run:
        base, spec = _plan_source(run, dataset)
    else:
        base = load_baseline(_not_a_name(run))
        spec = base.spec
    order, source = resolve_order(base, order)
    nets = plan(spec, order, pipeline=pipeline, steps=steps, reuse_factors=reuse_factors,
                scale=scale, reshape=reshape, depths=depths, thinning=thinning)
    recipe = recipe or Recipe()
    recipe.validate()
    root = Path(out) if out is not None else (base.path / "reduce" if base else None)
    info = {"baseline": str(base.path) if base else spec.name,
            "dataset": (base.config.get("data", {}).get("dataset") if base
                        else (dataset or DEFAULT_DATASET).strip().lower()),
            "pipeline": pipeline, "thinning": thinning, "order": list(order),
            "order_source": source, "recipe": vars(recipe).copy(), "seed": opts.seed,
            "runs": None if root is None else str(root)}
    if dry_run:
        return Reduced([_row(p, None, None) for p in nets], {**info, "dry_run": True})
    assert base is not None and root is not None
    data = baseline_data(base, opts.data_dir, dataset, opts.limit)
    init = base.load_checkpoint()["model"]
    rows = []
    for p in nets:
        if p.baseline:
            rows.append(_row(p, base.results.get("final_acc"), str(base.path)))
            continue
        res = train(p.spec, data, recipe=recipe, out=root / p.label, teacher=str(base.path),
                    init_from=init, options=opts,
                    label=f"DeepReDuce {p.label} ({count(p.spec).relus:,} ReLUs)",
                    tag={"name": "deepreduce", "pipeline": pipeline, "steps": list(p.steps),
                         "order": list(order), "baseline": str(base.path)})
        rows.append(_row(p, float(res.final_acc), str(root / p.label)))
        schema.REDUCE.write(root, Reduced(rows, info).to_dict())  # progress so far
    result = Reduced(rows, info)
    schema.REDUCE.write(root, result.to_dict())
    return result
