"""Where points run: in this process (local), as Ray tasks, or as Slurm jobs (submitit).

The driver owns the dependency graph and sweep.json; a backend only starts a point
(`submit`) and reports finished ones (`wait`), each as the outcome dict of
`execute.run_point`. Ray and submitit do the scheduling; nothing here is a scheduler.

Backends are a registry, `BACKENDS` (entry-point group ``deepreshape.backends``): each
member is a `BackendFactory` whose `create(root, settings, **kw)` returns a `Backend`
(the typed interface below). ``deepreshape sweep --backend`` and `run_sweep` read it, so a
backend added there (a plugin, or `BACKENDS.register` at run time) runs sweeps with no
other edit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from deepreshape.errors import RunFailure, UsageError
from deepreshape.registry import Registry
from deepreshape.rundir import schema
from deepreshape.sweep.execute import one_line, run_point
from deepreshape.sweep.sweepfile import Point

WORKER_RETRIES = 2  # Ray reruns a task whose worker died this many times
CONNECT_TIMEOUT_S = 30.0  # how long joining a cluster at --address may take (--connect-timeout)


@runtime_checkable
class Backend(Protocol):
    """What the sweep driver (`runner.run_sweep`) asks of a backend.

    The driver submits at most `slots` points at once, then calls `wait` until they come
    back. Each point runs `execute.run_point(point, str(root), settings, threads, device,
    procs)` somewhere and its outcome dict comes back from `wait` unchanged (a worker that
    died: ``{"ok": False, "lost": True, "error": ...}``).
    """

    name: str
    slots: int
    """How many points may run at once."""

    def submit(self, point: Point) -> dict:
        """Start (or queue) `point`; returns where it runs, as JSON (kept in sweep.json)."""
        ...

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """(point id, outcome) of the points that finished within `timeout` seconds."""
        ...

    def cancel_stale(self, records: list[dict]) -> None:
        """Cancel what a killed driver left running (`records`: sweep.json's running
        points, with the `where` that `submit` returned), so a point never runs twice."""
        ...

    def close(self, interrupted: bool = False) -> None:
        """Release the backend; on an interrupt, cancel the points still running."""
        ...


@dataclass(frozen=True)
class BackendFactory:
    """A member of `BACKENDS`: `create(root, settings, **kw)` makes the `Backend`.

    `kw` are the run options of `run_sweep` (`make_backend` fills the defaults):
    ``cpus_per_run``, ``gpus_per_run``, ``procs_per_run``, ``device``, ``max_parallel``,
    ``address`` and ``connect_timeout`` (Ray; seconds, default `CONNECT_TIMEOUT_S`),
    ``partition`` and ``time_min`` (Slurm); a backend takes the ones
    it needs and ignores the rest. `description` is its ``--backend`` help.
    """

    name: str
    create: Callable[..., Backend]
    description: str = ""


def default_backend() -> str:
    """ray when the `cluster` extra is installed, else local."""
    return "ray" if importlib.util.find_spec("ray") is not None else "local"


class LocalBackend:
    """One point after another, in this process; needs no extra."""

    name = "local"

    def __init__(self, root: Path, settings: dict, cpus_per_run: int = 1, device: str | None = None,
                 procs_per_run: int = 1) -> None:
        self.root, self.settings, self.threads, self.device = root, settings, cpus_per_run, device
        self.procs = procs_per_run
        self.slots = 1
        self.queue: deque[Point] = deque()

    def submit(self, point: Point) -> dict:
        """Queue `point`; returns where it will run."""
        self.queue.append(point)
        return {"backend": self.name}

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """Run the next queued point to its end."""
        if not self.queue:
            return []
        p = self.queue.popleft()
        return [(p.id, run_point(p, str(self.root), self.settings, self.threads, self.device,
                                 self.procs))]

    def cancel_stale(self, records: list[dict]) -> None:
        """Nothing outlives this process."""

    def close(self, interrupted: bool = False) -> None:
        """Nothing to release."""


class RayBackend:
    """Each point a Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs; a local Ray
    is started unless `address` (or RAY_ADDRESS) names a running cluster, and one already
    started in this process (`ray.init` by the caller) is reused and left running.

    Joining a cluster is bounded by `connect_timeout` seconds (a RunFailure naming the
    address and what to check, instead of Ray retrying for minutes), and Ray's own log
    lines go to ROOT/.ray-driver.log (`schema.SWEEP_RAY_LOG`), never the terminal."""

    name = "ray"

    def __init__(self, root: Path, settings: dict, *, address: str | None = None,
                 cpus_per_run: int = 1, gpus_per_run: float | None = None,
                 max_parallel: int | None = None, device: str | None = None,
                 procs_per_run: int = 1, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        ray = _need("ray")
        self.ray = ray
        self.own = not ray.is_initialized()
        self.log = schema.SWEEP_RAY_LOG.path(root)
        self.logger: _RayLogger | None = None
        if self.own:
            self.logger = _RayLogger(self.log)
            try:
                _connect(ray, address or os.environ.get("RAY_ADDRESS"), connect_timeout, self.log)
            except BaseException:
                self.logger.close()
                raise
        res = ray.cluster_resources()
        gpus = gpus_per_run if gpus_per_run is not None else (1 if res.get("GPU", 0) >= 1 else 0)
        if gpus > res.get("GPU", 0):
            raise UsageError(f"--gpus-per-run {gpus}, but the Ray cluster has {res.get('GPU', 0):g} GPUs")
        fit = int(res.get("CPU", 1) // max(cpus_per_run, 1e-9))
        if gpus:
            fit = min(fit, int(res.get("GPU", 0) // gpus))
        self.slots = max(1, min(fit, max_parallel or fit))
        self.device = device or ("cpu" if not gpus else None)
        self.root, self.settings, self.threads, self.procs = root, settings, cpus_per_run, procs_per_run
        # A dead worker (killed, out of memory) is retried by Ray and resumes from the
        # point's checkpoint; a point's own error is returned, never retried.
        self.task = ray.remote(run_point).options(num_cpus=cpus_per_run, num_gpus=gpus,
                                                  max_retries=WORKER_RETRIES)
        self.refs: dict[Any, str] = {}

    def submit(self, point: Point) -> dict:
        """Start `point` as a Ray task."""
        ref = self.task.remote(point, str(self.root), self.settings, self.threads, self.device,
                               self.procs)
        self.refs[ref] = point.id
        return {"backend": self.name, "task": ref.hex()}

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """The tasks that finished within `timeout` seconds."""
        if not self.refs:
            return []
        ready, rest = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready and rest:  # and any others already finished, without waiting
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = []
        for ref in ready:
            pid = self.refs.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as e:  # the worker died (killed, out of memory) twice
                outcome = {"ok": False, "lost": True, "error": f"ray task lost: {one_line(e)}"}
            out.append((pid, outcome))
        return out

    def cancel_stale(self, records: list[dict]) -> None:
        """Tasks of a killed driver died with its Ray job; nothing to cancel."""

    def close(self, interrupted: bool = False) -> None:
        """Cancel unfinished tasks; stop the Ray this backend started."""
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)
        if self.own:
            with _stderr_to(self.log):
                self.ray.shutdown()
        if self.logger is not None:
            self.logger.close()
            self.logger = None


class PointJob:
    """`execute.run_point` as a submitit job that is requeued when preempted.

    A `submitit.helpers.Checkpointable` by duck typing (submitit asks only for
    `checkpoint`, and this module must import without submitit): on the preemption or
    time-limit signal (USR2, which submitit asks Slurm to send) submitit calls
    `checkpoint`, which hands back the same call, and requeues the job; the requeued
    point resumes from its run directory's checkpoint, since every method runs with
    resume on. The job keeps its id, so the driver just keeps waiting for it."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return run_point(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same point again (submitit's DelayedSubmission)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class SubmititBackend:
    """One Slurm job per point through submitit (`cluster="slurm"`), or submitit's local
    executor (`cluster="local"`: a process per point, for testing without Slurm). The job
    folder is ROOT/.submitit; job ids are recorded in sweep.json. A preempted job is
    requeued by submitit and resumes (`PointJob`); a submission that Slurm refuses is a
    one-line RunFailure naming the point and what to check."""

    name = "slurm"

    def __init__(self, root: Path, settings: dict, *, cluster: str = "slurm",
                 partition: str | None = None, time_min: int = 24 * 60, cpus_per_run: int = 1,
                 gpus_per_run: float | None = None, max_parallel: int | None = None,
                 device: str | None = None, procs_per_run: int = 1) -> None:
        submitit = _need("submitit")
        self.folder = root / ".submitit"
        gpus = int(gpus_per_run if gpus_per_run is not None else (1 if cluster == "slurm" else 0))
        params: dict[str, Any] = {"timeout_min": time_min, "cpus_per_task": cpus_per_run,
                                  "gpus_per_node": gpus, "name": "deepreshape-sweep"}
        if partition:
            params["slurm_partition"] = partition
        self.where = f"Slurm{f' partition {partition}' if partition else ''}"
        try:  # no srun here, an unknown parameter: one line, not submitit's traceback
            self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
            self.executor.update_parameters(**params)
        except Exception as e:
            raise RunFailure(f"could not set up {self.where} jobs through submitit: {one_line(e)}; "
                             "run the driver where `sbatch` and `srun` work (a login node)") from None
        self.cluster = cluster
        self.slots = max_parallel or (2 if cluster == "local" else 256)
        self.device = device or ("cpu" if not gpus else None)
        self.root, self.settings, self.threads, self.procs = root, settings, cpus_per_run, procs_per_run
        self.jobs: dict[Any, str] = {}

    def submit(self, point: Point) -> dict:
        """Submit `point` as one job."""
        try:  # submitit prints sbatch's complaint before raising it: keep it to the one line
            with contextlib.redirect_stderr(io.StringIO()):
                job = self.executor.submit(PointJob(), point, str(self.root), self.settings,
                                           self.threads, self.device, self.procs)
        except Exception as e:  # sbatch refused it (bad partition, limits) or is missing
            raise RunFailure(f"could not submit point {point.id} to {self.where}: {one_line(e)}; "
                             "check the partition (`sinfo`), --time and --gpus-per-run against its "
                             f"limits; submitit's files: {self.folder}") from None
        self.jobs[job] = point.id
        return {"backend": self.name, "cluster": self.cluster, "job_id": str(job.job_id)}

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """The jobs that finished within `timeout` seconds (polled)."""
        end = time.monotonic() + timeout
        while True:
            done = [j for j in self.jobs if j.done()]
            if done or time.monotonic() >= end or not self.jobs:
                break
            time.sleep(0.2)
        out = []
        for job in done:
            pid = self.jobs.pop(job)
            try:
                outcome = job.result()
            except Exception as e:  # the job died (killed, out of memory, time limit)
                outcome = {"ok": False, "lost": True, "error": f"job {job.job_id} lost: {one_line(e)}"}
            out.append((pid, outcome))
        return out

    def cancel_stale(self, records: list[dict]) -> None:
        """Cancel jobs a killed driver left running, so a point never runs twice at once."""
        for r in records:
            job_id = (r.get("where") or {}).get("job_id")
            if job_id:
                with contextlib.suppress(Exception):  # already gone
                    self.executor._executor.job_class(self.folder, job_id).cancel(check=False)

    def close(self, interrupted: bool = False) -> None:
        """On an interrupt, cancel the jobs still running (a rerun resumes them)."""
        if interrupted:
            for job in list(self.jobs):
                job.cancel(check=False)


# --------------------------------------------------------------------------- joining Ray


class _RayLogger:
    """Ray's Python loggers (``ray`` and below) write to `path` instead of the terminal
    while the backend lives (their C++ core writes to fd 2: see `_stderr_to`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.logger = logging.getLogger("ray")
        self.handler = logging.FileHandler(path, delay=True)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.propagate = self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        self.handler.close()


@contextlib.contextmanager
def _stderr_to(path: Path):
    """File descriptor 2 on `path` inside the block: Ray's C++ core logs there (connection
    retries, warnings), below anything Python can redirect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _unreachable(address: str, timeout: float) -> str | None:
    """Why no TCP connection opens to `address` (HOST:PORT, or ray://HOST:PORT) within
    `timeout` seconds; None when one does, or when the address is not of that form
    ("auto"). A dead port answers at once, a dropped packet after the bound: either way
    no Ray client is started to retry for minutes."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except socket.gaierror:
        return f"unknown host {host!r}"
    except OSError as e:
        return one_line(e)


_JOIN_CHECK = """import sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.shutdown()
"""


def _connect(ray: Any, address: str | None, timeout: float, log: Path) -> None:
    """`ray.init` at `address` (a local Ray when None), bounded by `timeout` seconds when
    joining a cluster, with Ray's output in `log`; RunFailure in one line otherwise.

    A TCP probe answers the common cases (no head, wrong port, firewall) at once. A port
    that accepts but never speaks Ray would keep `ray.init` retrying for minutes, and a
    `ray.init` abandoned in a thread cannot be stopped (its C++ client can even crash the
    interpreter at exit), so a child process joins first, killed at the bound; only once
    it has joined does this process.
    """
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    hint = (f"check that its head is running (`ray status` there), the port "
            f"(`ray start --head --port`) and firewalls; Ray's log: {log}")
    if address and address != "local":
        what = f"could not join the Ray cluster at {address} within {timeout:g} s"
        why = _join_check(address, timeout, log)
        if why:
            raise RunFailure(f"{what}: {why}; {hint}")
    with _stderr_to(log):
        try:
            ray.init(address=address, **kw)
        except Exception as e:  # Ray raises plain Exceptions (timeouts, a raylet that did not start)
            if address and address != "local":
                raise RunFailure(f"could not join the Ray cluster at {address}: {one_line(e)}; "
                                 f"{hint}") from None
            raise RunFailure(f"could not start a local Ray: {one_line(e)}; Ray's log: {log}") from None


def _join_check(address: str, timeout: float, log: Path) -> str | None:
    """Why the Ray cluster at `address` cannot be joined within `timeout` seconds (the TCP
    probe, then a child process that joins and leaves, its output appended to `log`);
    None when it can."""
    import subprocess

    t0 = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    why = _unreachable(address, timeout)
    with open(log, "a") as out:
        if why:
            out.write(f"{address}: {why}\n")
            return why
        left = max(0.1, timeout - (time.monotonic() - t0))
        try:
            proc = subprocess.run([sys.executable, "-c", _JOIN_CHECK, address], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=out, timeout=left)
        except subprocess.TimeoutExpired:  # killed: nothing of it is left running
            out.write(f"\n{address}: no Ray answer within {timeout:g} s\n")
            return "the port answers but Ray did not (is it the head's GCS port?)"
    if proc.returncode:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        return f"Ray failed to connect ({lines[-1].strip()[:200] if lines else f'exit {proc.returncode}'})"
    return None


def _need(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"the {module} backend needs the `cluster` extra: "
                         "pip install 'deepreshape[cluster]' (or use --backend local)") from None


def make_backend(name: str, root: Path, settings: dict, **kw: Any) -> Backend:
    """The backend called `name` (a member of `BACKENDS`: local, ray, slurm, slurm-local
    (submitit's local executor), or a registered one), made with the run options `kw`."""
    factory = BACKENDS.get(name)
    gpus = kw.get("gpus_per_run")
    kw = {"cpus_per_run": 1, "device": None, "gpus_per_run": None, "max_parallel": None,
          "address": None, "partition": None, "time_min": None, "connect_timeout": None,
          **{k: v for k, v in kw.items() if v is not None},
          "procs_per_run": kw.get("procs_per_run") or (int(gpus) if gpus and gpus > 1 else 1)}
    return factory.create(root, settings, **kw)


def _local(root: Path, settings: dict, **kw: Any) -> Backend:
    return LocalBackend(root, settings, kw["cpus_per_run"], kw["device"], kw["procs_per_run"])


def _ray(root: Path, settings: dict, **kw: Any) -> Backend:
    return RayBackend(root, settings, address=kw["address"], cpus_per_run=kw["cpus_per_run"],
                      gpus_per_run=kw["gpus_per_run"], max_parallel=kw["max_parallel"],
                      device=kw["device"], procs_per_run=kw["procs_per_run"],
                      connect_timeout=kw["connect_timeout"] or CONNECT_TIMEOUT_S)


def _submitit(cluster: str) -> Callable[..., Backend]:
    def create(root: Path, settings: dict, **kw: Any) -> Backend:
        return SubmititBackend(root, settings, cluster=cluster, partition=kw["partition"],
                               time_min=kw["time_min"] or 24 * 60,
                               cpus_per_run=kw["cpus_per_run"], gpus_per_run=kw["gpus_per_run"],
                               max_parallel=kw["max_parallel"], device=kw["device"],
                               procs_per_run=kw["procs_per_run"])
    return create


LOCAL = BackendFactory("local", _local, "one point after another, in this process")
RAY = BackendFactory("ray", _ray, "Ray tasks on a local Ray or the cluster at --address")
SLURM = BackendFactory("slurm", _submitit("slurm"), "one Slurm job per point (submitit)")
SLURM_LOCAL = BackendFactory("slurm-local", _submitit("local"),
                             "submitit's local executor, a process per point (for testing)")

BACKENDS: Registry[BackendFactory] = Registry("backend", "deepreshape.backends", {
    "local": "deepreshape.sweep.backends:LOCAL",
    "ray": "deepreshape.sweep.backends:RAY",
    "slurm": "deepreshape.sweep.backends:SLURM",
    "slurm-local": "deepreshape.sweep.backends:SLURM_LOCAL",
})
"""Every sweep backend (`BackendFactory` members)."""
