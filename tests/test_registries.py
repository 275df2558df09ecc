"""The registries of PI protocols, data sets and sweep backends: a member registered at run
time works everywhere its kind is named (CLI choices, specs, training, sweep files, sweeps,
`deepreshape pi`), with no file of the package edited."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from deepreshape.cli.main import main
from deepreshape.datasets import DATASETS, DatasetInfo
from deepreshape.errors import UsageError
from deepreshape.pi.protocols import PROTOCOLS, Engine, Protocol
from deepreshape.sweep.backends import BACKENDS, Backend, BackendFactory, make_backend
from deepreshape.sweep.execute import run_point
from deepreshape.zoo import parse

ARCH = "resnet18-m2-d1,1,1,1"

# --------------------------------------------------------------------------- a data set


def read_blobs(info: DatasetInfo, root: Path, size: int):
    """A synthetic data set: each class a brighter square, at 12x12, never on disk."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % info.num_classes
        x = rng.integers(0, 60, (n, info.channels, 12, 12)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, :, 2:10, 2:10] += np.uint8(60 * label)
        return x, y

    return (*split(info.train_size), *split(info.test_size))


BLOBS = DatasetInfo("blobs", input_size=12, num_classes=3, channels=3, train_size=48,
                    test_size=12, mean=(0.3, 0.3, 0.3), std=(0.3, 0.3, 0.3),
                    description="synthetic squares (a test's data set)",
                    reader=f"{__name__}:read_blobs")


# --------------------------------------------------------------------------- a protocol


class PlainEngine(Engine):
    """A protocol outside SPU: computes in the clear, in this process (the seam's test)."""

    name = "plain"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run_local(self, protocol, fn, params, x, *, repeats, timeout_s, link=None, queries=1,
                  **cfg):
        from deepreshape.pi.measurement import SecureResult
        from deepreshape.pi.program import plain_logits

        self.calls.append((len(x), queries, repeats))
        t0 = time.perf_counter()
        logits = plain_logits(fn, params, x)
        dt = time.perf_counter() - t0
        return SecureResult(logits=logits, protocol=protocol.name, latency_s=dt,
                            cold_latency_s=dt, setup_s=0.0, bytes_sent=0, bytes_recv=0,
                            setup_bytes=0, rounds=0, per_op={}, warm_latencies_s=[dt] * repeats,
                            weights=cfg["weights"])


PLAIN = Protocol("plain", secure=False, security="not secure: both inputs in the clear",
                 summary="in the clear (a test's protocol)", engine=PlainEngine())


# --------------------------------------------------------------------------- a backend


class SerialBackend:
    """An in-process backend registered at run time: points one by one, newest first."""

    name = "serial"
    slots = 1
    made: list[SerialBackend] = []

    def __init__(self, root: Path, settings: dict, **kw) -> None:
        self.root, self.settings, self.kw = root, settings, kw
        self.queue: deque = deque()
        self.ran: list[str] = []
        self.closed = None
        SerialBackend.made.append(self)

    def submit(self, point) -> dict:
        self.queue.append(point)
        return {"backend": self.name}

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        if not self.queue:
            return []
        p = self.queue.pop()
        self.ran.append(p.id)
        return [(p.id, run_point(p, str(self.root), self.settings, 1, "cpu", 1))]

    def cancel_stale(self, records: list[dict]) -> None:
        """Nothing of an earlier driver runs outside this process."""

    def close(self, interrupted: bool = False) -> None:
        self.closed = interrupted


SERIAL = BackendFactory("serial", SerialBackend, "in this process (a test's backend)")


@pytest.fixture(scope="module")
def registered():
    """The three test members, registered for this module only."""
    DATASETS.register(BLOBS)
    PROTOCOLS.register(PLAIN)
    BACKENDS.register(SERIAL)
    yield
    DATASETS.unregister("blobs")
    PROTOCOLS.unregister("plain")
    BACKENDS.unregister("serial")


@pytest.fixture(scope="module")
def blobs_run(registered, tmp_path_factory, one_thread):
    """A tiny network trained one epoch on the registered data set, with `limit`."""
    from deepreshape.options import RunOptions
    from deepreshape.training import Recipe, train

    out = tmp_path_factory.mktemp("blobs") / "run"
    train(ARCH, "blobs", recipe=Recipe(epochs=1, batch_size=16), out=out,
          options=RunOptions(limit=32, quiet=True))
    return out


# --------------------------------------------------------------------------- built-ins


def test_builtin_members_and_their_fields():
    assert PROTOCOLS.names()[:2] == ["cheetah", "semi2k"]
    cheetah, semi2k = PROTOCOLS.get("cheetah"), PROTOCOLS.get("semi2k")
    assert cheetah.secure and not semi2k.secure and "trusted dealer" in semi2k.security
    assert (cheetah.default_weights, semi2k.default_weights) == ("owned", "shared")
    assert (cheetah.cost_key, semi2k.cost_key) == ("he", "mac")
    assert (cheetah.spu_kind, semi2k.spu_kind) == ("CHEETAH", "SEMI2K")
    assert DATASETS.names()[:4] == ["cifar10", "cifar100", "tinyimagenet", "digits"]
    d = DATASETS.get("tinyimagenet")
    assert (d.input_size, d.num_classes, d.train_size, d.test_size) == (64, 200, 100_000, 10_000)
    assert DATASETS.get("digits").train_size + DATASETS.get("digits").test_size == 1797
    assert BACKENDS.names()[:4] == ["local", "ray", "slurm", "slurm-local"]


def test_registries_are_light():
    """Listing data sets and protocols (every CLI parser does) imports neither torch nor SPU."""
    import subprocess
    import sys

    code = ("import sys; from deepreshape.datasets import DATASETS; "
            "from deepreshape.pi.protocols import PROTOCOLS; import deepreshape.spec; "
            "[DATASETS.get(n) for n in DATASETS.names()]; [PROTOCOLS.get(n) for n in PROTOCOLS.names()]; "
            "print(sorted({'torch', 'spu', 'jax', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_backend_is_a_backend(tmp_path):
    b = make_backend("local", tmp_path, {})
    assert isinstance(b, Backend) and b.slots == 1
    with pytest.raises(UsageError, match=r"unknown backend 'lcoal'; valid: local, ray.*did you mean local"):
        make_backend("lcoal", tmp_path, {})


# --------------------------------------------------------------------------- data sets


def test_unknown_data_set_is_one_line_naming_the_registry(capsys):
    with pytest.raises(UsageError, match=r"unknown data set 'cifar1000'; valid: cifar10, cifar100, "
                       r"tinyimagenet, digits.*did you mean"):
        parse("resnet18", dataset="cifar1000")
    assert main(["train", ARCH, "--dataset", "nope", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown data set 'nope'; valid: cifar10" in err and len(err.splitlines()) == 1


def test_a_registered_data_set_fixes_specs_counts_and_loads(registered, capsys):
    from deepreshape.data import load_dataset

    spec = parse(ARCH, dataset="blobs")
    assert (spec.input_size, spec.num_classes) == (12, 3)
    assert main(["count", ARCH, "--dataset", "blobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == 12
    data = load_dataset("blobs", limit=5, input_size=16)
    assert tuple(data.train_x.shape) == (5, 3, 16, 16) and data.mean == BLOBS.mean
    assert len(data.test_y) == 5 and data.num_classes == 3


def test_a_registered_data_set_trains(blobs_run):
    from deepreshape.rundir.run import load_run

    run = load_run(blobs_run)
    assert run.dataset == "blobs" and (run.spec.input_size, run.spec.num_classes) == (12, 3)
    assert run.model() is not None


def _sweep_file(tmp_path: Path, dataset: str, pi: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\ndataset = "{dataset}"\nlimit = 16\n[recipe]\nepochs = 1\n'
                    f'batch_size = 8\n[[experiment]]\nname = "n"\narch = "{ARCH}"\n{pi}')
    return path


def test_sweep_files_validate_registered_data_sets_and_protocols(registered, tmp_path, capsys):
    from deepreshape.sweep import load_sweep

    assert load_sweep(_sweep_file(tmp_path, "blobs", 'pi = { protocol = "plain" }')).dataset == "blobs"
    with pytest.raises(UsageError, match="unknown data set 'nope'; valid: .*blobs"):
        load_sweep(_sweep_file(tmp_path, "nope"))
    with pytest.raises(UsageError, match="pi.protocol.*cheetah, semi2k, plain"):
        load_sweep(_sweep_file(tmp_path, "blobs", 'pi = { protocol = "nope" }'))
    # the dry run sizes training from the data set's train_size (was a hidden KeyError)
    assert main(["sweep", str(_sweep_file(tmp_path, "blobs")), "--dry-run", "--json"]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- backends


def test_a_registered_backend_runs_a_sweep(registered, tmp_path, one_thread):
    root = tmp_path / "root"
    argv = ["sweep", str(_sweep_file(tmp_path, "blobs")), "--backend", "serial", "--out",
            str(root), "--quiet", "--no-report"]
    assert main(argv) == 0
    b = SerialBackend.made[-1]
    assert b.ran and b.closed is False and isinstance(b, Backend)
    assert b.kw["procs_per_run"] == 1 and b.kw["cpus_per_run"] == 1
    state = json.loads((root / "sweep.json").read_text())
    assert {r["state"] for r in state["points"]} == {"done"}
    assert [r["where"]["backend"] for r in state["points"]] == ["serial"]
    assert state["points"][0]["result"]["final_acc"] >= 0


# --------------------------------------------------------------------------- protocols


def test_a_registered_protocol_is_a_choice_and_has_cost_defaults(registered):
    from deepreshape.cli.main import build_parser
    from deepreshape.pi.costs import costmodel
    from deepreshape.pi.protocols import default_weights, insecure_warning

    assert costmodel.candidates_for("plain") == costmodel.COMPONENTS  # cost_key "mac"
    assert default_weights("plain") == "shared"
    assert "NOT SECURE" in insecure_warning("plain") and insecure_warning("cheetah") is None
    parser = build_parser()
    args = parser.parse_args(["pi", "run", "--protocol", "plain"])
    assert args.protocol == "plain"
    assert parser.parse_args(["pareto", "runs", "--protocol", "plain"]).protocol == "plain"


def test_pi_dispatches_to_a_registered_protocols_engine(blobs_run, capsys):
    """`deepreshape pi RUN --protocol plain` runs the plugin's engine, not SPU, and writes
    its result under its name."""
    pytest.importorskip("jax")
    engine = PLAIN.engine
    engine.calls.clear()
    assert main(["pi", str(blobs_run), "--protocol", "plain", "--samples", "3", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: plain is NOT SECURE" in captured.err
    rec = json.loads((blobs_run / "pi-plain-loopback.json").read_text())
    assert engine.calls == [(3, 3, 2)]  # one session: 3 one-image queries, 1 cold + 2 warm runs
    assert rec["protocol"] == "plain" and rec["security"] == PLAIN.security
    assert rec["weights"] == "shared" and rec["total_bytes"] == 0
    assert rec["argmax_agree"] == 1.0 and rec["max_abs_err"] < 1e-4
    assert rec["predicted"]["spu"] is None  # no coefficients for this protocol
    assert json.loads(captured.out)["protocol"] == "plain"
    with pytest.raises(UsageError, match="cannot run one party per host"):
        from deepreshape.pi.measure import measure_run

        measure_run(blobs_run, protocol="plain", samples=1, parties=["127.0.0.1:1", "127.0.0.1:2"],
                    role="client", write=False)


# --------------------------------------------------------------------------- entry points

PLUGIN = '''
import numpy as np
from deepreshape.datasets import DatasetInfo
from deepreshape.pi.protocols import Protocol
from deepreshape.sweep.backends import BACKENDS, BackendFactory

def read(info, root, size):
    x = np.zeros((4, 3, 8, 8), np.uint8)
    y = np.arange(4, dtype=np.int64) % 2
    return x, y, x, y

SQUARES = DatasetInfo("squares", 8, 2, 3, 4, 4, (0.5,) * 3, (0.25,) * 3, "zeros", "plugsets:read")
PLAIN = Protocol("plugproto", secure=False, security="in the clear", summary="a plugin's")
SERIAL = BackendFactory("plugserial", lambda root, settings, **kw: BACKENDS.get("local").create(
    root, settings, **kw), "a plugin's")
'''


def test_plugins_register_through_entry_points(tmp_path):
    """A distribution in a site directory adds a data set, a protocol and a backend through
    the entry-point groups; the CLI offers them with no file of the package edited."""
    import os
    import subprocess
    import sys

    (tmp_path / "plugsets.py").write_text(PLUGIN)
    info = tmp_path / "plugsets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugsets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[deepreshape.datasets]\nsquares = plugsets:SQUARES\n\n"
        "[deepreshape.protocols]\nplugproto = plugsets:PLAIN\n\n"
        "[deepreshape.backends]\nplugserial = plugsets:SERIAL\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src])}

    def run(*argv: str) -> str:
        out = subprocess.run([sys.executable, "-m", "deepreshape.cli.main", *argv], env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert json.loads(run("count", ARCH, "--dataset", "squares", "--json"))["input_size"] == 8
    assert "plugproto" in run("pi", "--help") and "plugserial" in run("sweep", "--help")
