"""Stagewise ReLU criticality (DeepReDuce, Jha et al. 2021; seed paper, App. A).

Which stage's ReLUs matter most? For each stage k the baseline's spec keeps *only* stage
k's slots (every other slot linearized; the stem belongs to stage 1) and is trained from
scratch, with and without KD from the baseline. With A_k the KD accuracy (%) and R_k the
stage's exact ReLU count,

    C_k = (A_k - min_j A_j) * (R_k / 1000) ** -0.07

so a stage scores by how much accuracy its ReLUs buy, mildly discounted by how many it
needs. The *criticality order* lists stages from most to least critical ("3,2,4,1", the
form `deepreshape design --order` and `deepreshape reduce --order` take); equal scores keep
stage order.

Reproduction. All 37 printed rows of Tables 5 and 6 (36 distinct networks: Table 6 lists
R18(m=16)-2x2x2x twice) reproduce to two decimals from the printed KD accuracies and the
*exact* stage counts of the named networks (HRN-5x7x2x: 81,920 / 81,920 / 143,360 /
71,680 -> C = 0.00 / 14.13 / 16.83 / 12.60). The tables' "81.92K"-style counts are those
exact counts rounded; scoring with the rounded values instead moves one C_k across a
rounding edge (HRN-2x7x2x stage3: 12.3750 with 57.34K, 12.3749 with 57,344; printed 12.37),
so score with exact counts. No printed C_k disagrees with the formula.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from deepreshape.count import count
from deepreshape.errors import Preempted, UsageError
from deepreshape.options import RunOptions, takes_run_options
from deepreshape.rundir import schema
from deepreshape.rundir.run import Run
from deepreshape.spec import NetSpec, relu_slots
from deepreshape.training.preemption import preemptible
from deepreshape.training.recipe import Recipe

EXPONENT = -0.07
METRIC = "C_k = (A_k - min_j A_j) * (R_k/1000)^-0.07, A_k = KD accuracy (%), R_k = stage ReLUs"


@dataclass(frozen=True)
class StageResult:
    """One stage's test: its ReLUs, accuracies with/without KD and criticality C_k."""

    name: str
    relus: int
    acc: float | None  # without KD (None with --no-plain)
    kd_acc: float
    criticality: float = 0.0
    run: str | None = None
    kd_run: str | None = None


@dataclass(frozen=True)
class Criticality:
    """Per-stage results and the criticality order they give (written as criticality.json)."""

    stages: tuple[StageResult, ...]
    order: tuple[int, ...]  # 1-based stage numbers, most to least critical
    info: dict = field(default_factory=dict)  # baseline, arch, dataset, recipe

    @property
    def order_text(self) -> str:
        """The order as '3,2,4,1', as `deepreshape design --order` takes it."""
        return ",".join(map(str, self.order))

    @property
    def least_to_most(self) -> tuple[int, ...]:
        """Stages from least to most critical, the order ReLU reduction considers them in."""
        return tuple(reversed(self.order))

    def to_dict(self) -> dict:
        """A JSON-ready dict: info, metric, stage results and the order."""
        return {**self.info, "metric": METRIC,
                "stages": [dict(vars(s)) for s in self.stages],
                "order": list(self.order), "order_text": self.order_text}


# --------------------------------------------------------------------------- the metric


def criticality_metric(kd_accs: Sequence[float], relus: Sequence[int]) -> list[float]:
    """C_k for every stage (Jha et al. 2021), from KD accuracies (%) and exact ReLUs."""
    low = min(kd_accs)
    return [(a - low) * (r / 1000) ** EXPONENT for a, r in zip(kd_accs, relus, strict=True)]


def criticality_order(scores: Sequence[float]) -> tuple[int, ...]:
    """1-based stages from most to least critical; ties keep stage order."""
    return tuple(k + 1 for k in sorted(range(len(scores)), key=lambda k: (-scores[k], k)))


def accuracy_noise(acc: float, test_size: int) -> float:
    """The binomial standard deviation (percentage points) of a test accuracy `acc` (%)
    measured on `test_size` images: what run-to-run noise alone moves it by."""
    p = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(max(p * (1 - p), 1.0 / test_size) / test_size)


def unresolved_pairs(result: Criticality, test_size: int, sigmas: float = 2.0
                     ) -> list[tuple[int, int, float, float]]:
    """Neighbours in the order whose C_k gap is under `sigmas` standard deviations of the
    gap that binomial test-set noise alone would give: (stage, next stage, gap, noise)."""
    out = []
    for a, b in itertools.pairwise(result.order):
        sa, sb = result.stages[a - 1], result.stages[b - 1]
        fa, fb = (sa.relus / 1000) ** EXPONENT, (sb.relus / 1000) ** EXPONENT
        noise = math.hypot(fa * accuracy_noise(sa.kd_acc, test_size),
                           fb * accuracy_noise(sb.kd_acc, test_size))
        gap = sa.criticality - sb.criticality
        if gap < sigmas * noise:
            out.append((a, b, gap, noise))
    return out


def noise_warning(result: Criticality, test_size: int) -> str | None:
    """One line saying which order positions are within test-set noise, or None."""
    pairs = unresolved_pairs(result, test_size)
    if not pairs:
        return None
    which = ", ".join(f"stage{a} vs stage{b} (gap {gap:.2f}, noise +-{n:.2f})"
                      for a, b, gap, n in pairs)
    return (f"criticality order {result.order_text} is not resolved: {which}; C_k gaps under "
            f"2 standard deviations of the binomial noise of a {test_size:,}-image test set "
            "are within run-to-run noise (train longer, or on more data, before designing "
            "for this order)")


def warn_if_noisy(result: Criticality) -> None:
    """Record in `result.info` whether the order is resolved against test-set noise, and
    warn when it is not (needs `test_size` in the info)."""
    size = result.info.get("test_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return
    warning = noise_warning(result, size)
    result.info["order_resolved"] = warning is None
    if warning:
        warnings.warn(warning, stacklevel=3)


def score(stages: Sequence[Mapping[str, Any]], info: Mapping | None = None,
          where: str = "accuracies") -> Criticality:
    """Score given per-stage results ({"name", "relus", "acc", "kd_acc"}, in stage order)."""
    rows = _validate(stages, where)
    c = criticality_metric([r.kd_acc for r in rows], [r.relus for r in rows])
    rows = [replace(r, criticality=v) for r, v in zip(rows, c, strict=True)]
    return Criticality(tuple(rows), criticality_order(c), dict(info or {}))


def load_accuracies(path: str | Path) -> Criticality:
    """Score a JSON file {"stages": [{"name", "relus", "acc", "kd_acc"}, ...]} (a
    criticality.json written here is one); errors are one line naming the bad entry. With
    a "test_size" (images) the order is checked against test-set noise, as after training."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{p}: not valid JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(obj, dict) or "stages" not in obj:
        raise UsageError(f'{p}: expected an object {{"stages": [{{"name", "relus", "acc", '
                         '"kd_acc"}, ...]}')
    info = {"source": str(p), **({"test_size": obj["test_size"]} if "test_size" in obj else {})}
    result = score(obj["stages"], info, where=str(p))
    warn_if_noisy(result)
    return result


def _validate(stages: Any, where: str) -> list[StageResult]:
    if not isinstance(stages, list) or len(stages) < 2:
        raise UsageError(f"{where}: 'stages' must be a list of at least 2 stages")
    out = []
    for i, s in enumerate(stages):
        at = f"{where}: stages[{i}]"
        if not isinstance(s, dict):
            raise UsageError(f"{at} must be an object with name, relus, acc, kd_acc")
        missing = [k for k in ("name", "relus", "acc", "kd_acc") if k not in s]
        if missing:
            raise UsageError(f"{at} has no {', '.join(repr(k) for k in missing)} "
                             "(each stage needs name, relus, acc, kd_acc; acc may be null)")
        if not isinstance(s["name"], str) or not s["name"].strip():
            raise UsageError(f"{at}: name must be a non-empty string, got {s['name']!r}")
        relus = s["relus"]
        if isinstance(relus, bool) or not isinstance(relus, int) or relus < 1:
            raise UsageError(f"{at}: relus must be a positive integer (exact count), got {relus!r}")
        acc = None if s["acc"] is None else _percent(s["acc"], f"{at}: acc")
        out.append(StageResult(s["name"], relus, acc, _percent(s["kd_acc"], f"{at}: kd_acc"),
                               run=s.get("run"), kd_run=s.get("kd_run")))
    return out


def _percent(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not 0 <= v <= 100:
        raise UsageError(f"{what} must be an accuracy in percent (0..100), got {v!r}")
    return float(v)


# --------------------------------------------------------------------------- the networks


def stage_only(spec: NetSpec, k: int) -> NetSpec:
    """The spec with only stage k's slots kept (stem = stage 1); all others identity."""
    others = {s.address: "identity" for s in relu_slots(spec) if s.stage != k}
    return spec.with_slots(others) if others else spec


def stage_relus(spec: NetSpec) -> list[int]:
    """Exact ReLUs per stage of `spec` (stem in stage1)."""
    return [s.relus for s in count(spec).stages]


# --------------------------------------------------------------------------- running


@takes_run_options
@preemptible
def criticality(
    run: str | Path | Run,
    *,
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    plain: bool = True,
    jobs: int = 1,
    options: RunOptions | None = None,
) -> Criticality:
    """Train the stage-only networks of a baseline run and score them.

    Runs go to OUT/stageK and OUT/stageK-kd (OUT defaults to RUN/criticality); stages are
    independent, so `jobs` > 1 trains them in that many processes (one GPU each when
    several are visible). Writes RUN/criticality.json (and OUT/criticality.json).
    `options` (`RunOptions`) says how every stage network is trained.
    """
    from deepreshape.optimize import baseline_data, load_baseline

    opts = RunOptions.of(options)
    base = load_baseline(run)
    recipe = recipe or Recipe()
    recipe.validate()
    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {jobs!r}")
    data = baseline_data(base, opts.data_dir, opts.dataset, opts.limit)  # validates the data set up front
    root = Path(out) if out is not None else base.path / "criticality"
    relus = stage_relus(base.spec)
    empty = [k for k, r in enumerate(relus, 1) if r == 0]
    if empty:
        raise UsageError(f"{base.spec.describe()}: stage{empty[0]} has no ReLUs; criticality "
                         "needs ReLUs in every stage (score a network before culling it)")
    common = {"recipe": recipe, "options": opts,
              "data": (data.name, opts.data_dir, data.input_size, opts.limit),
              "baseline": str(base.path)}
    job_list = []
    for k in range(1, len(base.spec.stages) + 1):
        spec = stage_only(base.spec, k)
        for kd in ((False, True) if plain else (True,)):
            job_list.append({**common, "spec": spec.to_dict(), "stage": k, "kd": kd,
                             "out": str(root / f"stage{k}{'-kd' if kd else ''}"),
                             "teacher": str(base.path) if kd else None})
    for i, j in enumerate(job_list, 1):
        j["label"] = (f"criticality {i}/{len(job_list)}: stage{j['stage']} only "
                      f"({relus[j['stage'] - 1]:,} ReLUs), {'KD' if j['kd'] else 'no KD'}")
    accs = dict(zip([(j["stage"], j["kd"]) for j in job_list],
                    _run_jobs(job_list, jobs, opts.device, data), strict=True))
    stages = [{"name": f"stage{k}", "relus": r, "acc": accs.get((k, False)),
               "kd_acc": accs[(k, True)],
               "run": str(root / f"stage{k}") if plain else None, "kd_run": str(root / f"stage{k}-kd")}
              for k, r in enumerate(relus, 1)]
    info = {"baseline": str(base.path), "arch": base.spec.describe(), "dataset": data.name,
            "test_size": len(data.test_y), "recipe": vars(recipe).copy(), "seed": opts.seed,
            "runs": str(root)}
    result = score(stages, info, where=str(base.path))
    warn_if_noisy(result)
    schema.CRITICALITY.write(base.path, result.to_dict())
    if root.resolve() != (base.path / "criticality").resolve():
        schema.CRITICALITY.write(root, result.to_dict())
    return result


def load_criticality(run_dir: str | Path) -> Criticality | None:
    """RUN/criticality.json as a `Criticality`, or None when there is none."""
    p = schema.CRITICALITY.path(run_dir)
    return load_accuracies(p) if p.exists() else None


def _devices(device: str | None, jobs: int) -> list[str | None]:
    """One device per job slot: distinct GPUs when several are visible and none is named."""
    import torch

    n = torch.cuda.device_count() if device in (None, "auto", "cuda") else 0
    if jobs > 1 and n > 1:
        return [f"cuda:{i % n}" for i in range(jobs)]
    return [device] * jobs


def _run_jobs(jobs: list[dict], n: int, device: str | None, data: Any) -> list[float]:
    devices = _devices(device, max(n, 1))
    if n <= 1 or len(jobs) <= 1:
        return [_train_job(j, data) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from deepreshape.training import preemption

    threads = max(1, (os.cpu_count() or 1) // n)
    with preemption.watch(), ProcessPoolExecutor(
            n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(threads,)) as ex:
        futures: list = []
        try:
            for i, j in enumerate(jobs):
                opts = j["options"].replace(device=devices[i % n])
                futures.append(ex.submit(_train_job, {**j, "options": opts}))
            return [f.result() for f in futures]
        except Preempted:  # this process or a worker was signalled: stop them all
            raise _stop_workers(ex, futures) from None


def _stop_workers(ex: Any, futures: list) -> Preempted:
    """Pass the stop on to every worker (each saves its training's checkpoint), wait for
    them (bounded: the scheduler's SIGKILL follows its grace period anyway) and return
    one `Preempted` line for the whole criticality run."""
    import signal
    from concurrent.futures import wait

    from deepreshape.training import preemption

    for f in futures:
        f.cancel()
    procs = list((getattr(ex, "_processes", None) or {}).values())  # the pool's workers
    for proc in procs:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGTERM)
    wait(futures, timeout=STOP_WAIT_S)
    for proc in procs:  # one that did not stop in time: the pool's shutdown must not hang
        if proc.is_alive():
            proc.kill()
    done = sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)
    return Preempted(f"criticality: preempted ({preemption.pending() or 'SIGTERM'}); "
                     f"{done} of {len(futures)} stage trainings finished, the running ones "
                     "saved checkpoints; run the same command with --resume to continue")


STOP_WAIT_S = 120  # how long a preempted criticality run waits for its workers' checkpoints


def _init_worker(threads: int) -> None:
    import torch

    from deepreshape.training import preemption

    torch.set_num_threads(threads)
    preemption.hold_for_process()


@lru_cache(maxsize=2)
def _load(name: str, data_dir: str | None, input_size: int, limit: int | None) -> Any:
    from deepreshape.data import load_dataset

    return load_dataset(name, data_dir, input_size=input_size, limit=limit)


def _train_job(job: dict, data: Any = None) -> float:
    """Train one stage network (in this process or a worker); returns its final accuracy."""
    from deepreshape.training import train

    data = data if data is not None else _load(*job["data"])
    res = train(NetSpec.from_dict(job["spec"]), data, recipe=job["recipe"], out=job["out"],
                teacher=job["teacher"], options=job["options"], label=job.get("label", ""),
                tag={"name": "criticality", "stage": job["stage"], "kd": job["kd"],
                     "baseline": job["baseline"]})
    return float(res.final_acc)
