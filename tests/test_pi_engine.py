"""The SPU engine: simulator accuracy, real two-process runs, costs, and dead peers."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time

import numpy as np
import pytest

pytest.importorskip("spu")
jax = pytest.importorskip("jax")
jnp = jax.numpy

from deepreshape.errors import RunFailure, UsageError  # noqa: E402
from deepreshape.pi import channel, processes, shares  # noqa: E402
from deepreshape.pi import engine as E  # noqa: E402

pytestmark = pytest.mark.pi


# --------------------------------------------------------------------------- tiny CNNs


def _conv(x, w, b):
    dn = ("NCHW", "OIHW", "NCHW")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    return y + b[None, :, None, None]


def _head(p, y):
    y = jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4.0
    return y.reshape(y.shape[0], -1) @ p["dense"]["w"] + p["dense"]["b"]


def net_full(p, x):
    """conv -> ReLU on every channel -> avg pool -> dense."""
    return _head(p, jnp.maximum(_conv(x, p["conv"]["w"], p["conv"]["b"]), 0.0))


def net_half(p, x):
    """The same network with ReLU on half the channels: half the comparisons."""
    y = _conv(x, p["conv"]["w"], p["conv"]["b"])
    c = y.shape[1] // 2
    return _head(p, jnp.concatenate([jnp.maximum(y[:, :c], 0.0), y[:, c:]], axis=1))


def make(channels=8, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    p = {
        "conv": {"w": rng.normal(0, 0.3, (channels, 3, 3, 3)), "b": rng.normal(0, 0.1, channels)},
        "dense": {"w": rng.normal(0, 0.1, (channels * (hw // 2) ** 2, 10)),
                  "b": rng.normal(0, 0.1, 10)},
    }
    p = jax.tree_util.tree_map(lambda a: a.astype(np.float32), p)
    return p, rng.normal(size=(1, 3, hw, hw)).astype(np.float32)


def _parties():
    return [f"127.0.0.1:{port}" for port in channel.free_ports(2)]


# --------------------------------------------------------------------------- config and parsing


def test_runtime_config_is_fm64_with_fraction_bits():
    spu = pytest.importorskip("spu")
    cfg = E.runtime_config("cheetah", fxp_fraction_bits=20, profile=True)
    assert cfg.field == spu.libspu.FieldType.FM64
    assert cfg.protocol == spu.libspu.ProtocolKind.CHEETAH
    assert cfg.fxp_fraction_bits == 20 and cfg.enable_pphlo_profile
    assert E.runtime_config("semi2k").protocol == spu.libspu.ProtocolKind.SEMI2K
    assert E.PROTOCOLS.names() == ["cheetah", "semi2k"]
    assert "not secure, for debugging: party 0 is the trusted dealer" in E.security_note("semi2k")


@pytest.mark.parametrize("kwargs", [
    {"protocol": "aby3"}, {"fxp_fraction_bits": 40}, {"fxp_fraction_bits": 2.5},
    {"no_such_option": 1},
])
def test_runtime_config_rejects_bad_options(kwargs):
    with pytest.raises(UsageError):
        E.runtime_config(**kwargs)


def test_parse_profile_reads_ops_and_link_details():
    log = (
        "[info] [api.cc:220] HLO profiling: total time 0.5\n"
        "[info] [api.cc:223] - pphlo.less, executed 1 times, duration 0.25s,"
        " send bytes 100 recv bytes 50, send actions 3, recv actions 4\n"
        "[info] [api.cc:223] - pphlo.convolution, executed 2 times, duration 1e-1s,"
        " send bytes 7 recv bytes 8, send actions 1, recv actions 1\n"
        "[info] [api.cc:233] Link details: total send bytes 107, recv bytes 58,"
        " send actions 4, recv actions 5\n"
    )
    prof = E.parse_profile(log)
    assert prof.ops["pphlo.less"] == {
        "time_s": 0.25, "count": 1, "bytes_sent": 100, "bytes_recv": 50, "bytes": 150}
    assert prof.ops["pphlo.convolution"]["time_s"] == pytest.approx(0.1)
    assert (prof.bytes_sent, prof.bytes_recv) == (107, 58)
    assert (prof.messages_sent, prof.messages_recv) == (4, 5)
    assert E.parse_profile("nothing here").bytes_sent is None


def test_summarize_ops_groups_relu_conv_other():
    per_op = {
        "pphlo.less": {"time_s": 1.0, "count": 1, "bytes": 10},
        "pphlo.select": {"time_s": 0.5, "count": 2, "bytes": 5},
        "pphlo.convolution": {"time_s": 2.0, "count": 1, "bytes": 100},
        "pphlo.dot": {"time_s": 0.25, "count": 1, "bytes": 20},
        "pphlo.add": {"time_s": 0.125, "count": 3, "bytes": 0},
    }
    s = E.summarize_ops(per_op)
    assert s["relu"]["time_s"] == 1.5 and s["relu"]["bytes"] == 15 and s["relu"]["count"] == 3
    assert s["conv"]["bytes"] == 120 and s["conv"]["ops"] == ["pphlo.convolution", "pphlo.dot"]
    assert s["other"]["ops"] == ["pphlo.add"]
    assert "bytes" not in E.summarize_ops({"pphlo.less": {"time_s": 1.0, "count": 1}})["relu"]


def test_shares_survive_the_wire_format():
    spu = pytest.importorskip("spu")
    cfg = E.runtime_config("cheetah")
    io = spu.Io(2, cfg)
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    s0, s1 = io.make_shares(a, spu.libspu.Visibility.VIS_SECRET)
    (back,) = shares.unpack_shares(shares.pack_shares([s1]))
    np.testing.assert_allclose(io.reconstruct([s0, back]), a, atol=1e-4)


def test_compile_is_deterministic_and_needs_only_shapes():
    p, x = make()
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32), p)
    a = E.compile_program(net_full, p, x)
    b = E.compile_program(net_full, shapes, jax.ShapeDtypeStruct(x.shape, np.float32))
    assert a.fingerprint() == b.fingerprint()
    assert a.out_shape == (1, 10) and a.x_shape == x.shape
    assert E.compile_program(net_half, p, x).fingerprint() != a.fingerprint()


def test_bad_party_arguments_are_usage_errors():
    p, x = make()
    with pytest.raises(UsageError):
        E.run_party("dealer", net_full, p, x, _parties())
    with pytest.raises(UsageError):
        E.run_party("client", net_full, None, x, ["127.0.0.1"])
    with pytest.raises(UsageError):
        E.run_party("client", net_full, None, None, _parties())
    with pytest.raises(UsageError):  # isolate needs the peer's shapes or a Program
        E.run_party("client", net_full, None, x, _parties(), isolate=True)
    with pytest.raises(UsageError):
        E.run_two_party(net_full, p, x, protocol="aby3")


# --------------------------------------------------------------------------- simulator


@pytest.mark.parametrize("protocol", ["cheetah", "semi2k"])
def test_simulator_matches_plain_jax(protocol):
    p, x = make(channels=4)
    secure = E.run_simulated(net_full, p, x, protocol=protocol, fxp_fraction_bits=18)
    plain = E.plain_logits(net_full, p, x)
    assert secure.shape == plain.shape == (1, 10)
    assert np.max(np.abs(secure - plain)) < 1e-2
    assert np.argmax(secure) == np.argmax(plain)


# --------------------------------------------------------------------------- dead peers


def test_stopping_parties_that_never_started_is_harmless():
    ctx = multiprocessing.get_context("spawn")
    processes._stop({"server": ctx.Process(target=time.sleep, args=(0,))}, grace_s=0.0)


def test_absent_peer_is_a_run_failure_in_bounded_time():
    _, x = make()
    t0 = time.monotonic()
    with pytest.raises(RunFailure, match="could not connect to the server"):
        E.run_party("client", net_full, None, x, _parties(), timeout_s=5)
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_peer_dying_mid_session_is_a_run_failure_in_bounded_time(tmp_path):
    """SPU 0.9.5 segfaults a survivor that is sending, and one that is receiving waits out
    the link's receive timeout (timeout_s); isolate=True makes either a RunFailure."""
    p, x = make()
    program = E.compile_program(net_full, p, x)
    parties, log = _parties(), tmp_path / "server.log"
    ctx = multiprocessing.get_context("spawn")
    reports = ctx.Queue()  # must outlive the child's start
    job = tmp_path / "server.job"
    job.write_bytes(pickle.dumps((program, p, parties, "cheetah", 50, 15.0, {})))
    args = ("server", str(job), str(log), reports)
    server = ctx.Process(target=processes._party_entry, args=args, daemon=True)
    server.start()

    def kill_after_cold_run():
        end = time.monotonic() + 30
        while time.monotonic() < end and "Link details" not in (
                log.read_text(errors="replace") if log.exists() else ""):
            time.sleep(0.05)
        server.kill()

    threading.Thread(target=kill_after_cold_run, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(RunFailure):
            E.run_party("client", program, None, x, parties, samples=50, timeout_s=15, isolate=True)
        assert time.monotonic() - t0 < 30  # the 15 s bound, the child's start-up and its kill
    finally:
        server.kill()
        server.join(5)


def _fn_party(role, own, parties, reports):
    """A party given only `fn` and its own input: shapes come over the link."""
    params, x = (own, None) if role == "server" else (None, own)
    res = E.run_party(role, net_full, params, x, parties, protocol="semi2k", timeout_s=60)
    reports.put((role, None if res is None else res.logits))


@pytest.mark.slow
def test_parties_with_only_fn_exchange_shapes_and_agree():
    p, x = make()
    parties = _parties()
    ctx = multiprocessing.get_context("spawn")
    reports = ctx.Queue()
    procs = [ctx.Process(target=_fn_party, args=(role, own, parties, reports), daemon=True)
             for role, own in (("server", p), ("client", x))]
    for proc in procs:
        proc.start()
    try:
        got = dict(reports.get(timeout=90) for _ in procs)
    finally:
        for proc in procs:
            proc.join(10)
            proc.kill()
    assert got["server"] is None
    plain = E.plain_logits(net_full, p, x)
    assert np.max(np.abs(got["client"] - plain)) < 1e-2


# --------------------------------------------------------------------------- real two-party runs


@pytest.fixture(scope="module")
def full_run():
    p, x = make()
    return E.run_two_party(net_full, p, x, protocol="cheetah", samples=1, timeout_s=120)


@pytest.fixture(scope="module")
def half_run():
    p, x = make()
    return E.run_two_party(net_half, p, x, protocol="cheetah", samples=1, timeout_s=120)


@pytest.mark.slow
def test_two_party_cheetah_matches_plain_and_measures(full_run):
    p, x = make()
    r = full_run
    plain = E.plain_logits(net_full, p, x)
    assert r.logits.shape == plain.shape
    assert r.max_abs_err is not None and r.max_abs_err < 1e-2
    assert np.argmax(r.logits) == np.argmax(plain)
    assert r.protocol == "cheetah" and r.samples == 1
    assert r.latency_s > 0 and r.cold_latency_s > r.latency_s and r.setup_s > 0
    assert r.bytes_sent > 0 and r.bytes_recv > 0 and r.setup_bytes > 0
    assert r.total_bytes == r.bytes_sent + r.bytes_recv
    assert {"pphlo.convolution", "pphlo.less"} <= set(r.per_op)
    kinds = E.summarize_ops(r.per_op)
    assert kinds["relu"]["bytes"] > 0 and kinds["conv"]["bytes"] > 0
    assert set(r.peak_rss_mb) == {"server", "client"}
    assert r.to_dict()["total_bytes"] == r.total_bytes


@pytest.mark.slow
def test_queries_in_one_session_each_get_their_own_logits():
    """Three images as three one-image queries in one session (1 cold + 2 warm runs): each
    run computes its own image, and the client gets every image's logits, in order."""
    p, _ = make()
    xs = np.random.default_rng(5).normal(size=(3, 3, 8, 8)).astype(np.float32)
    r = E.run_two_party(net_full, p, xs, protocol="semi2k", samples=2, timeout_s=120, queries=3)
    plain = E.plain_logits(net_full, p, xs)
    assert r.logits.shape == plain.shape == (3, 10)
    np.testing.assert_allclose(r.logits, plain, atol=1e-2)
    assert len({tuple(np.argsort(row)) for row in plain}) > 1  # the images differ
    assert r.samples == 2 and len(r.warm_latencies_s) == 2 and r.max_abs_err < 1e-2
    assert r.bytes_sent > 0 and r.bytes_recv > 0


def test_queries_must_fit_the_runs_and_split_x():
    p, _ = make()
    xs = np.zeros((3, 3, 8, 8), np.float32)
    with pytest.raises(UsageError, match="3 queries need at least 3 runs"):
        E.run_two_party(net_full, p, xs, samples=1, queries=3)
    with pytest.raises(UsageError, match="does not split into 2 equal queries"):
        E.run_two_party(net_full, p, xs, samples=2, queries=2)
    with pytest.raises(UsageError, match="queries must be a positive integer"):
        E.run_party("client", net_full, None, xs, _parties(), samples=2, queries=0)


@pytest.mark.slow
def test_communication_grows_with_relus(full_run, half_run):
    relu_full = E.summarize_ops(full_run.per_op)["relu"]["bytes"]
    relu_half = E.summarize_ops(half_run.per_op)["relu"]["bytes"]
    assert 1.6 < relu_full / relu_half < 2.5
    assert full_run.total_bytes - half_run.total_bytes > 0.5 * (relu_full - relu_half)


@pytest.mark.slow
def test_an_emulated_link_adds_round_trips_but_not_bytes(full_run):
    """Through a 30 ms RTT relay the same program moves the same bytes, but each of its
    rounds now waits for the link: the latency grows by at least a few round trips."""
    from deepreshape.pi.linkprofile import LinkProfile

    p, x = make()
    slow = E.run_two_party(net_full, p, x, protocol="cheetah", samples=1, timeout_s=120,
                           link=LinkProfile(None, 0.03))
    np.testing.assert_allclose(slow.logits, full_run.logits, atol=1e-2)
    assert abs(slow.total_bytes - full_run.total_bytes) < 0.02 * full_run.total_bytes
    assert slow.latency_s > full_run.latency_s + 5 * 0.03
