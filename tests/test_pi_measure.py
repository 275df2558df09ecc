"""`deepreshape pi RUN`: pi-<protocol>-<link>.json from secure two-party inference of a trained run."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("spu")
pytest.importorskip("jax")

from deepreshape.cli.main import main  # noqa: E402
from deepreshape.errors import UsageError  # noqa: E402
from deepreshape.options import RunOptions
from deepreshape.pi import (
    channel,  # noqa: E402
    engine,  # noqa: E402
)
from deepreshape.pi import measure as M  # noqa: E402
from deepreshape.pi.export import export_model  # noqa: E402
from deepreshape.pi.linkprofile import LinkProfile  # noqa: E402
from deepreshape.rundir.run import load_run  # noqa: E402
from deepreshape.spec import relu_slots  # noqa: E402
from deepreshape.zoo import parse  # noqa: E402

pytestmark = pytest.mark.pi

ARCH = "resnet18-m4-d1,1,1,1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny network trained one epoch on the embedded digits (16x16)."""
    from deepreshape.training import Recipe, train

    out = tmp_path_factory.mktemp("pi") / "run"
    train(ARCH, "digits", recipe=Recipe(epochs=1, batch_size=64), out=out, options=RunOptions(quiet=True))
    return out


def _result(**kw) -> engine.SecureResult:
    base = dict(logits=np.zeros((1, 10)), protocol="semi2k", latency_s=0.2, cold_latency_s=1.0,
                setup_s=0.8, bytes_sent=600, bytes_recv=400, setup_bytes=5000, rounds=None,
                per_op={"pphlo.less": {"time_s": 0.1, "count": 2, "bytes": 300},
                        "pphlo.convolution": {"time_s": 0.3, "count": 3, "bytes": 600},
                        "pphlo.add": {"time_s": 0.1, "count": 4, "bytes": 100}},
                samples=3, warm_latencies_s=[0.3, 0.1, 0.2], messages_sent=7, messages_recv=8)
    return engine.SecureResult(**{**base, **kw})


# --------------------------------------------------------------------------- fast


def test_cost_record_has_the_schema_and_shares():
    rec = M.cost_record(_result())
    assert rec["latency_s"] == 0.2 and rec["latency_mean_s"] == 0.2
    assert rec["total_bytes"] == 1000 and rec["messages"] == {"sent": 7, "recv": 8}
    assert "not secure, for debugging" in rec["security"]
    kinds = rec["per_kind"]
    assert list(kinds) == ["relu", "conv", "other"]
    assert kinds["relu"]["bytes"] == 300 and kinds["conv"]["time_share"] == pytest.approx(0.6)
    assert sum(k["bytes_share"] for k in kinds.values()) == pytest.approx(1)
    json.dumps(rec)


def test_agreement_counts_argmax_and_error():
    plain = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    secure = plain + np.array([[0.0, 1e-4], [0.0, 0.0], [5.0, 0.0]])
    a = M._agreement(secure, plain, np.array([1, 0, 0]))
    assert a["images"] == 3 and a["argmax_agree_count"] == 2
    assert a["argmax_agree"] == pytest.approx(2 / 3) and a["max_abs_err"] == 5.0
    assert a["secure_correct"] == 3 and a["plain_correct"] == 2


@pytest.mark.parametrize("kw, match", [
    ({"protocol": "aby3"}, "unknown protocol"),
    ({"samples": 0}, "samples"),
    ({"repeats": 1.5}, "repeats"),
    ({"parties": ["a:1", "b:2"]}, "go together"),
    ({"parties": ["a:1", "b:2"], "role": "dealer"}, "role"),
    ({"parties": ["a:1", "b:2"], "role": "client", "link": LinkProfile(None, 0.01)},
     "network is the real one"),
])
def test_bad_arguments_are_usage_errors(kw, match):
    with pytest.raises(UsageError, match=match):
        M.measure_run("/nonexistent", **kw)


def test_cli_measure_errors_are_one_line(tmp_path, capsys):
    assert main(["pi", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["pi", str(tmp_path), "--parties", "127.0.0.1:1", "--role", "client"]) == 2
    assert "HOST:PORT,HOST:PORT" in capsys.readouterr().err
    assert main(["pi", str(tmp_path), "--link", "fast"]) == 2
    assert "expected lan, wan or RATE:RTT" in capsys.readouterr().err


def test_machine_info_names_the_machine():
    info = M.machine_info()
    assert info["cpu_count"] >= 1 and info["platform"] and info["spu"]


def test_simulated_secure_logits_agree_with_the_trained_torch_model(run_dir):
    run = load_run(run_dir)
    model = run.model()
    x, y = M.load_test_images(run, 4)
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and abs(float(x.mean())) < 2
    fn, params = export_model(model)
    secure = engine.run_simulated(fn, params, x, "cheetah")
    with torch.no_grad():
        plain = model(torch.from_numpy(x)).numpy()
    a = M._agreement(secure, plain, y)
    assert a["argmax_agree"] == 1.0 and a["max_abs_err"] < 1e-2


# --------------------------------------------------------------------------- slow: real runs


@pytest.mark.slow
def test_cli_pi_writes_its_result_with_agreement_and_costs(run_dir, capsys):
    assert main(["pi", str(run_dir), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "argmax agrees on 2/2" in out and "online latency" in out and "over loopback" in out
    assert "calibrated over loopback" in out
    rec = json.loads((run_dir / "pi-cheetah-loopback.json").read_text())
    assert rec["deployment"]["link"] is None and rec["link"] == "loopback"
    assert not (run_dir / "pi.json").exists()
    # A second link's result is a second file beside this one (test_composition, through a
    # sweep; the README tour's `--link wan`); the same bytes over any link
    # (test_pi_engine's emulated link).
    assert rec["protocol"] == "cheetah" and rec["field"] == "FM64" and rec["fxp_fraction_bits"] == 18
    assert rec["weights"] == "owned" and rec["weight_share_bytes"] < 64  # nothing sent
    assert rec["images"] == 2 and rec["argmax_agree"] == 1.0 and rec["max_abs_err"] < 1e-2
    assert rec["latency_s"] > 0 and rec["cold_latency_s"] > rec["latency_s"]
    assert rec["bytes_sent"] > 0 and rec["bytes_recv"] > 0 and rec["setup_bytes"] > 0
    assert rec["total_bytes"] == rec["bytes_sent"] + rec["bytes_recv"]
    assert set(rec["per_kind"]) == {"relu", "conv", "other"}
    assert rec["per_kind"]["relu"]["bytes"] > 0 and rec["per_kind"]["conv"]["time_s"] > 0
    assert "pphlo.convolution" in rec["per_op"]
    assert rec["relus"] == 4864 and rec["macs"] > 0 and rec["batch"] == 1
    assert rec["predicted"]["spu"]["latency_s"] > 0 and rec["predicted"]["literature"]
    assert rec["machine"]["cpu_count"] >= 1 and "check_session" not in rec
    # one session: image 0 in the cold run, image 1 in the warm run (samples - 1 >= repeats)
    assert rec["repeats"] == 1 and len(rec["warm_latencies_s"]) == 1


@pytest.mark.slow
def test_snl_masks_cut_relu_communication():
    """Half the kept positions of every slot cost well under 60% of the ReLU bytes."""
    spec = parse(ARCH, dataset="digits")
    full = {s.address: f"mask:pixel:{s.numel}" for s in relu_slots(spec)}
    half = {s.address: f"mask:pixel:{s.numel // 2}" for s in relu_slots(spec)}
    relu_bytes = {}
    for name, slots in (("full", full), ("half", half)):
        rec = M.measure_spec(spec.with_slots(slots), "cheetah", repeats=1, timeout_s=300)
        relu_bytes[name] = rec["per_kind"]["relu"]["bytes"]
    assert relu_bytes["half"] < 0.6 * relu_bytes["full"], relu_bytes


@pytest.mark.slow
def test_two_roles_on_loopback_and_an_absent_peer(run_dir, tmp_path):
    """--role/--parties as two hosts would run them; then a server that never comes."""
    parties = [f"127.0.0.1:{p}" for p in channel.free_ports(2)]
    errors = []

    def server():
        try:
            M.measure_run(run_dir, samples=1, parties=parties, role="server", timeout_s=120)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=server)
    t.start()
    rec = M.measure_run(run_dir, samples=1, parties=parties, role="client", timeout_s=120,
                        write=False)
    t.join(60)
    assert not errors and rec["deployment"]["role"] == "client"
    assert rec["argmax_agree"] == 1.0 and rec["total_bytes"] > 0

    t0 = time.monotonic()
    lonely = [f"127.0.0.1:{p}" for p in channel.free_ports(2)]
    code = main(["pi", str(run_dir), "--samples", "1", "--role", "client",
                 "--parties", ",".join(lonely), "--timeout", "4"])
    assert code == 1 and time.monotonic() - t0 < 60
