"""The secure-inference cost model: features, NNLS fit, prediction, JSON, CLI --estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from deepreshape.cli.main import main  # noqa: E402
from deepreshape.count import count  # noqa: E402
from deepreshape.errors import UsageError  # noqa: E402
from deepreshape.pi import calibration as K  # noqa: E402
from deepreshape.pi.costs import costmodel as C  # noqa: E402
from deepreshape.pi.costs import he  # noqa: E402
from deepreshape.pi.linkprofile import LinkProfile  # noqa: E402
from deepreshape.zoo import parse  # noqa: E402

TRUE = {  # plausible Cheetah-like costs, to be recovered from synthetic measurements
    "latency_s": {"relus": 1.2e-5, "relu_layers": 0.01, "he_sent": 0.01, "he_response": 0.02,
                  "he_automorphisms": 5e-4, "fixed": 0.05},
    "bytes": {"relus": 82.0, "relu_layers": 2e3, "he_sent": 1.8e5, "he_response": 2.2e5,
              "he_automorphisms": 0.0, "fixed": 3e4},
}


PARTS = {"relu": ("relus", "relu_layers"), "conv": ("he_sent", "he_response", "he_automorphisms"),
         "rest": ("fixed",)}


def _synthetic(spec, protocol):
    """A fake measurement: TRUE costs split into profile parts as SPU reports them."""
    f = C.features(spec)
    kinds = {}
    for kind, cols in PARTS.items():
        if kind != "rest":
            kinds[kind] = {t: sum(TRUE[target][c] * f[c] for c in cols)
                           for t, target in (("time_s", "latency_s"), ("bytes", "bytes"))}
    return {"latency_s": C.apply(TRUE["latency_s"], f), "total_bytes": C.apply(TRUE["bytes"], f),
            "per_kind": {**kinds, "other": {"time_s": 0.0, "bytes": 0}}}


def _model() -> C.CostModel:
    return C.CostModel({"cheetah": TRUE}, {"machine_summary": "synthetic"})


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("name", ["resnet18-m8", "hrn-2x5x2x-m4", "wrn16x2", "resnet50-m8"])
def test_stage_features_add_up_to_the_analytic_counts(name):
    spec = parse(name, dataset="cifar10")
    c = count(spec)
    feats = C.stage_features(spec)
    assert list(feats) == [s.name for s in c.stages] + ["head"]
    for s in c.stages:
        assert feats[s.name]["relus"] == s.relus and feats[s.name]["macs"] == s.macs
    total = C.features(spec)
    assert total["relus"] == c.relus and total["macs"] == c.macs and total["fixed"] == 1
    head = feats["head"]
    assert (head["relus"], head["macs"], head["relu_layers"], head["linear_layers"]) == (
        0, c.head.macs, 0, 1)
    assert head["params"] == c.head.params
    assert head["activations"] == spec.num_classes and head["masked_relus"] == 0
    # the classifier is one 1 x C x classes product per direction: its few logits come
    # back in one packed ciphertext each way
    assert head["he_response"] == 2 and head["he_sent"] >= 2


def test_he_counts_are_summed_per_stage_and_ignore_culling():
    base = parse("resnet18-m16-d1,1,1,1", input_size=32, num_classes=10)
    stages = C.stage_features(base)
    rows = [r for r in count(base, layers=True).layers if r.stage == "stage2"]
    want = dict.fromkeys(HE, 0)
    for r in rows:
        for k, v in he.layer_counts(r).items():
            want[k] += v
    assert {k: stages["stage2"][k] for k in HE} == want and want["he_muls"] > 0
    culled = C.features(base.with_slots({"stage2.*": "identity"}))
    assert all(culled[k] == C.features(base)[k] for k in HE)  # culling leaves the HE work


HE = ("he_sent", "he_outputs", "he_response", "he_automorphisms", "he_muls")


def test_culled_slots_are_not_relu_layers_but_masked_slots_are():
    spec = parse("resnet18-m4-d1,1,1,1", dataset="digits")
    base = C.features(spec)
    assert (base["relu_layers"], base["linear_layers"]) == (9, 13)  # stem + 4x2; 12 convs + fc
    culled = C.features(spec.with_slots({"stage2.*": "identity"}))
    assert culled["relu_layers"] == 7 and culled["linear_layers"] == 13
    assert culled["macs"] == base["macs"] and culled["relus"] < base["relus"]
    masked = C.features(spec.with_slots({"stage2.*": "mask:pixel:3"}))
    assert masked["relu_layers"] == 9 and masked["relus"] == culled["relus"] + 6
    assert masked["masked_relus"] == 6 and base["masked_relus"] == 0
    none = C.features(spec.with_slots({"stage2.*": "mask:pixel:0"}))
    assert none["relu_layers"] == 7 and none["masked_relus"] == 0
    numel = 8 * 8 * 8  # stage2 of m4 on 16x16: 8 channels at 8x8
    full = C.features(spec.with_slots({"stage2.*": f"mask:pixel:{numel}"}))
    assert full["relus"] == base["relus"] and full["masked_relus"] == 0  # exported as a plain ReLU


# --------------------------------------------------------------------------- fit


def test_nnls_recovers_known_coefficients_from_the_calibration_set():
    specs = [n.spec() for n in K.CALIBRATION]
    rows = [C.features(s) for s in specs]
    for target, true in TRUE.items():
        y = [C.apply(true, r) for r in rows]
        got = C.fit_nnls(rows, y)
        for k, v in true.items():
            assert got[k] == pytest.approx(v, rel=1e-5), (target, k)
        assert max(abs(e) for e in C.errors(got, rows, y)) < 1e-8


def test_selection_keeps_the_smallest_exact_set_and_grows_when_needed():
    rows = [C.features(n.spec()) for n in K.CALIBRATION]
    conv = {"macs": 0.3, "linear_layers": 1.0e6}
    y = [C.apply(conv, r) for r in rows]
    coef, how = C.select_and_fit(rows, y, C.COMPONENTS["conv"])
    assert how["columns"] == list(C.COMPONENTS["conv"][0]) and how["loo_mean_abs"] < 1e-6
    assert coef["params"] == coef["activations"] == 0
    semi2k_like = {**conv, "params": 20.0, "activations": 90.0}  # Beaver openings
    y = [C.apply(semi2k_like, r) for r in rows]
    coef, how = C.select_and_fit(rows, y, C.COMPONENTS["conv"])
    assert how["columns"] == ["macs", "linear_layers", "params", "activations"]
    assert coef["params"] == pytest.approx(20.0, rel=1e-4)
    assert [c["columns"] for c in how["candidates"]] == [list(c) for c in C.COMPONENTS["conv"]]


def test_each_protocol_fits_its_convolutions_on_its_own_kind_of_features():
    he = set(C.FEATURES) - {"macs", "params"}
    assert all(set(cols) <= he and "he_sent" in cols for cols in C.candidates_for("cheetah")["conv"])
    assert all("macs" in cols for cols in C.candidates_for("semi2k")["conv"])
    assert C.candidates_for("aby3") == C.COMPONENTS
    assert C.candidates_for("cheetah")["relu"] == C.COMPONENTS["relu"]


def test_fit_records_sums_the_parts_of_the_profile():
    recs = []
    for n in K.CALIBRATION:
        spec = n.spec()
        recs.append({**_synthetic(spec, "cheetah"), "features": C.features(spec)})
    coefs, how = C.fit_records(recs, "cheetah")
    for t in C.TARGETS:
        for k, v in TRUE[t].items():
            assert coefs[t][k] == pytest.approx(v, rel=1e-5, abs=1e-9), (t, k)
        assert set(how[t]) == set(C.COMPONENTS)
        assert how[t]["conv"]["columns"][:2] == ["he_sent", "he_response"]
        assert how[t]["relu"]["coefficients"].keys() <= {"relus", "relu_layers"}


def test_nnls_keeps_costs_non_negative_and_fits_noisy_data():
    rng = np.random.default_rng(0)
    rows = [C.features(n.spec()) for n in K.CALIBRATION]
    neg = {**TRUE["latency_s"], "relu_layers": -0.02}
    coef = C.fit_nnls(rows, [max(1e-3, C.apply(neg, r)) for r in rows])
    assert all(v >= 0 for v in coef.values())
    noisy = [C.apply(TRUE["latency_s"], r) * (1 + rng.normal(0, 0.02)) for r in rows]
    errs = C.errors(C.fit_nnls(rows, noisy), rows, noisy)
    assert C.error_summary(errs)["max_abs"] < 0.06


@pytest.mark.parametrize("bad", [([], []), ([{"relus": 1}], [0.0]), ([{"relus": 1}], [1.0, 2.0])])
def test_fit_rejects_bad_input(bad):
    rows, y = bad
    rows = [{**dict.fromkeys(C.FEATURES, 0.0), **r} for r in rows]
    with pytest.raises(UsageError):
        C.fit_nnls(rows, y)


def test_calibrate_with_a_fake_measurement_fits_and_reports_heldout_errors():
    seen = []

    def measure(spec, protocol):
        seen.append((spec.describe(), protocol))
        return _synthetic(spec, protocol)

    model = K.calibrate(["cheetah"], measure=measure)
    assert len(seen) == len(K.CALIBRATION) + len(K.HELDOUT)
    rep = model.meta["report"]["cheetah"]
    assert len(model.meta["measurements"]["cheetah"]) == len(seen)
    again = C.refit(model)
    assert again.coefficients == model.coefficients
    assert rep["heldout_error"]["latency_s"]["max_abs"] < 1e-6
    assert rep["heldout_error"]["bytes"]["max_abs"] < 1e-6
    assert len(rep["heldout"]) == len(K.HELDOUT)
    spec = parse("resnet18-m16", dataset="cifar100")
    assert model.predict(spec)["latency_s"] == pytest.approx(
        C.apply(TRUE["latency_s"], C.features(spec)), rel=1e-6)


def test_calibrate_resumes_from_its_cache_and_rejects_a_broken_one(tmp_path):
    cache = tmp_path / "cm.measurements.jsonl"
    nets, held = K.CALIBRATION[:8], K.HELDOUT[:2]
    calls = []
    stop_at = [5]

    def measure(spec, protocol):
        calls.append(spec.describe())
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt  # the user stops a long calibration half-way
        return _synthetic(spec, protocol)

    with pytest.raises(KeyboardInterrupt):
        K.calibrate(["cheetah"], nets, held, measure=measure, cache=cache)
    assert len(cache.read_text().splitlines()) == 4  # what completed is kept
    calls.clear()
    stop_at[0] = 0
    said = []
    model = K.calibrate(["cheetah"], nets, held, measure=measure, cache=cache, progress=said.append)
    assert len(calls) == len(nets) + len(held) - 4  # only the rest is measured
    assert sum("(cached)" in m for m in said) == 4
    assert [r["part"] for r in model.meta["measurements"]["cheetah"]] == (
        ["calibration"] * len(nets) + ["heldout"] * len(held))
    fresh = K.calibrate(["cheetah"], nets, held, measure=lambda s, p: _synthetic(s, p))
    assert fresh.coefficients == model.coefficients
    calls.clear()
    K.calibrate(["cheetah"], nets, held, measure=measure, cache=cache, repeats=5)
    assert len(calls) == len(nets) + len(held)  # other settings measure again
    calls.clear()
    wan = K.calibrate(["cheetah"], nets, held, measure=measure, cache=cache,
                      link=LinkProfile(400e6, 0.04))
    assert len(calls) == len(nets) + len(held)  # and so does another link
    assert wan.meta["link"]["rtt_s"] == 0.04 and "emulated link" in wan.meta["machine_summary"]
    cache.write_text(cache.read_text() + "{not json\n")
    with pytest.raises(UsageError, match="not a calibration cache line"):
        K.calibrate(["cheetah"], nets, held, measure=measure, cache=cache)


def test_merge_replaces_the_recalibrated_setting_and_keeps_the_others():
    nets, held = K.CALIBRATION[:6], K.HELDOUT[:2]
    base = K.calibrate(["cheetah", "semi2k"], nets, held, measure=_synthetic)
    base.meta["date"] = "2026-01-01T00:00:00+00:00"

    def measure(spec, protocol):  # every time doubled, bytes the same
        rec = _synthetic(spec, protocol)
        kinds = {k: {**v, "time_s": 2 * v["time_s"]} for k, v in rec["per_kind"].items()}
        return {**rec, "latency_s": 2 * rec["latency_s"], "per_kind": kinds}

    update = K.calibrate(["cheetah"], nets, held, measure=measure)
    update.meta["date"] = "2026-02-02T00:00:00+00:00"
    merged = C.merge(base, update)
    assert merged.coefficients["semi2k"] == base.coefficients["semi2k"]
    assert merged.coefficients["cheetah"] == update.coefficients["cheetah"]
    assert merged.meta["report"]["semi2k"] == base.meta["report"]["semi2k"]
    assert merged.meta["measurements"]["cheetah"] == update.meta["measurements"]["cheetah"]
    assert C.provenance(merged, "semi2k")["date"].startswith("2026-01-01")
    assert C.provenance(merged, "cheetah")["date"].startswith("2026-02-02")
    spec = parse("resnet18-m8", dataset="cifar100")
    assert merged.predict(spec)["latency_s"] == pytest.approx(
        2 * base.predict(spec)["latency_s"], rel=1e-3)
    again = C.refit(C.CostModel.from_dict(json.loads(json.dumps(merged.to_dict()))))
    assert again.coefficients == merged.coefficients  # each setting refits from its own
    assert C.provenance(again, "semi2k")["date"].startswith("2026-01-01")
    wan = K.calibrate(["cheetah"], nets, held, measure=measure, link=LinkProfile(400e6, 0.04))
    with pytest.raises(UsageError, match="different links"):
        C.merge(base, wan)


def test_calibration_and_heldout_sets_are_disjoint_and_separable():
    cal = {(n.spec().describe(), n.input_size) for n in K.CALIBRATION}
    held = {(n.spec().describe(), n.input_size) for n in K.HELDOUT}
    assert not cal & held and len(cal) == len(K.CALIBRATION)
    x = np.array([[C.features(n.spec())[k] for k in C.FEATURES] for n in K.CALIBRATION])
    assert np.linalg.matrix_rank(x / np.linalg.norm(x, axis=0)) == len(C.FEATURES)
    for n in K.CALIBRATION:
        assert C.Network.from_dict(json.loads(json.dumps(n.to_dict()))) == n


# --------------------------------------------------------------------------- predict and JSON


@pytest.mark.parametrize("name", ["resnet18-m16", "hrn-5x7x2x", "wrn16x2"])
def test_per_stage_predictions_sum_to_the_total(name):
    pred = _model().predict(parse(name, dataset="cifar100"), "cheetah")
    rows = pred["per_stage"]
    assert [r["stage"] for r in rows][-2:] == ["head", "fixed"]
    for t in C.TARGETS:
        assert sum(r[t] for r in rows) == pytest.approx(pred[t])
        for r in rows:
            assert r[t] == pytest.approx(r[f"relu_{t}"] + r[f"linear_{t}"] + (
                TRUE[t]["fixed"] if r["stage"] == "fixed" else 0.0))
        fixed_share = TRUE[t]["fixed"] / pred[t]
        assert pred[f"relu_share_{t}"] + pred[f"linear_share_{t}"] + fixed_share == pytest.approx(1)
    assert sum(r["relus"] for r in rows) == pred["relus"] == count(parse(name)).relus


def test_json_round_trip_and_bad_files(tmp_path):
    model = _model()
    path = model.save(tmp_path / "cm.json")
    back = C.load(path)
    assert back.coefficients == model.coefficients and back.meta == model.meta
    spec = parse("resnet18-m16")
    assert back.predict(spec) == model.predict(spec)
    with pytest.raises(UsageError, match="no coefficients for 'semi2k'"):
        back.predict(spec, "semi2k")
    for text in ["{", json.dumps({"format": 99}),
                 json.dumps({"format": 1, "coefficients": {"cheetah": {"latency_s": {"x": 1},
                                                                         "bytes": {}}}})]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(UsageError):
            C.load(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="no such"):
        C.load(tmp_path / "missing.json")


def test_the_shipped_model_covers_both_protocols_and_documents_itself():
    model = C.load()
    assert model.has("cheetah") and model.has("cheetah", "shared") and model.has("semi2k")
    for key in ("date", "machine", "method", "calibration_set", "heldout_set", "report",
                "measurements"):
        assert key in model.meta
    held = {json.dumps(n, sort_keys=True) for n in model.meta["heldout_set"]}
    cal = {json.dumps(n, sort_keys=True) for n in model.meta["calibration_set"]}
    assert held and cal and not held & cal
    spec = parse("resnet18-m16", dataset="cifar100")
    for key in model.coefficients:
        pred = model.predict(spec, *C.split_setting(key))
        assert pred["latency_s"] > 0 and pred["bytes"] > 0
        assert all(v >= 0 for c in model.coefficients[key].values() for v in c.values())
    cheetah = model.coefficients["cheetah/shared-weights"]
    assert 5e-6 < cheetah["latency_s"]["relus"] < 5e-5  # about 12 us per ReLU here
    assert 50 < cheetah["bytes"]["relus"] < 200  # about 100 B per ReLU
    # an FM64 ciphertext (N = 8192, 2-3 primes of about 50 bits) is 100-300 KB
    assert 1e5 < cheetah["bytes"]["he_sent"] + cheetah["bytes"]["he_response"] < 6e5
    report = model.meta["report"]["cheetah/shared-weights"]["heldout_error"]  # fitted
    assert report["latency_s"]["mean_abs"] <= C.TARGET_REL_ERR
    assert report["bytes"]["mean_abs"] <= C.TARGET_REL_ERR
    owned = model.meta["report"]["cheetah"]  # the default, a calibration of its own
    assert "derived_from" not in owned and owned["heldout_error"]["latency_s"]["n"] == 7
    assert owned["heldout_error"]["latency_s"]["mean_abs"] <= C.TARGET_REL_ERR
    assert owned["heldout_error"]["bytes"]["mean_abs"] <= 0.03
    for key in model.coefficients:  # each setting says when, where and how it was measured
        where = C.provenance(model, key)
        assert where["date"] and where["method"]
        assert where["machine_summary"] in model.predict(spec, *C.split_setting(key))["source"]
    # owned weights: half the HE work, fewer bytes predicted than shared
    assert model.predict(spec)["bytes"] < 0.8 * model.predict(spec, "cheetah", "shared")["bytes"]


def test_literature_model_reproduces_its_resnet18_constants():
    lit = C.literature(parse("resnet18", dataset="cifar100"))
    assert lit["online_latency_s"] == pytest.approx(10.17 + 0.43, rel=1e-3)
    assert lit["offline_latency_s"] == pytest.approx(16.99 + 286.0, rel=1e-3)
    assert lit["online_bytes"] == pytest.approx(557_056 * 3200)
    assert "not measured here" in lit["source"]


# --------------------------------------------------------------------------- CLI


def test_cli_estimate_prints_a_stage_table_and_json(capsys, tmp_path):
    path = _model().save(tmp_path / "cm.json")
    assert main(["pi", "--estimate", "resnet18-m16", "--dataset", "cifar10",
                 "--cost-model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "resnet18-m16 at 32x32, cheetah" in out
    for word in ("stage1", "stage4", "head", "fixed", "total", "literature"):
        assert word in out
    assert main(["pi", "--estimate", "hrn-2x5x2x", "--json", "--cost-model", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["predicted"]["protocol"] == "cheetah" and d["predicted"]["input_size"] == 32
    assert "literature" in d and d["literature"]["online_bytes"] > 0


def test_cli_estimate_with_the_shipped_model(capsys):
    assert main(["pi", "--estimate", "resnet18-m16", "--protocol", "semi2k"]) == 0
    captured = capsys.readouterr()
    assert "semi2k" in captured.out and "NOT SECURE" in captured.err


def test_cli_estimate_for_each_weights_mode(capsys):
    got = {}
    for mode in ("owned", "shared"):
        assert main(["pi", "--estimate", "resnet18-m16", "--dataset", "cifar100", "--weights", mode,
                     "--json"]) == 0
        got[mode] = json.loads(capsys.readouterr().out)["predicted"]
        assert got[mode]["weights"] == mode
    assert got["owned"]["bytes"] < 0.8 * got["shared"]["bytes"]
    assert main(["pi", "--estimate", "resnet18-m16", "--weights", "shared"]) == 0
    out = capsys.readouterr().out
    assert "cheetah with shared weights (cost model calibrated over loopback): predicted" in out
    assert main(["pi", "--estimate", "resnet18-m16", "--protocol", "semi2k", "--weights",
                 "owned"]) == 2
    assert "no coefficients for 'semi2k/owned-weights'" in capsys.readouterr().err


def test_cli_calibrate_keeps_the_other_settings_of_an_existing_model(tmp_path, monkeypatch,
                                                                      capsys):
    measured = []

    def fake(spec, protocol, **kw):
        measured.append((protocol, kw["weights"]))
        return _synthetic(spec, protocol)

    monkeypatch.setattr(K, "measure_spec", fake)
    out = tmp_path / "cm.json"
    out.write_text("{broken")
    assert main(["pi", "--calibrate", "--protocol", "semi2k", "--out", str(out)]) == 2
    assert "broken cost model file" in capsys.readouterr().err and not measured
    out.write_text(json.dumps(C.load().to_dict()))  # the shipped model, all three settings
    assert main(["pi", "--calibrate", "--protocol", "semi2k", "--out", str(out)]) == 0
    assert set(measured) == {("semi2k", "shared")}
    assert "are kept, the measured ones replaced" in capsys.readouterr().err
    merged, shipped = C.load(out), C.load()
    assert set(merged.coefficients) == set(shipped.coefficients)
    assert merged.coefficients["cheetah"] == shipped.coefficients["cheetah"]
    assert merged.coefficients["semi2k"] != shipped.coefficients["semi2k"]
    assert (C.provenance(merged, "cheetah/shared-weights")
            == C.provenance(shipped, "cheetah/shared-weights"))


def test_cli_estimate_over_a_link_adds_rounds_and_wire_time(capsys):
    from deepreshape.pi.costs import linkcost

    spec = parse("resnet18-m16", dataset="cifar100")
    f = C.features(spec)
    extras = {}
    for weights in ("owned", "shared"):
        assert main(["pi", "--estimate", "resnet18-m16", "--weights", weights, "--json"]) == 0
        loop = json.loads(capsys.readouterr().out)["predicted"]
        assert main(["pi", "--estimate", "resnet18-m16", "--weights", weights, "--link", "wan",
                     "--json"]) == 0
        wan = json.loads(capsys.readouterr().out)["predicted"]
        # 40 ms per round (10 per ReLU layer, 2 per conv/linear layer), half the bytes at 400 Mbit/s
        extra = extras[weights] = ((10 * f["relu_layers"] + 2 * f["linear_layers"]) * 0.04
                                   + loop["bytes"] / 2 * 8 / 400e6)
        assert wan["link_s"] == pytest.approx(extra) and wan["bytes"] == loop["bytes"]
        assert wan["latency_s"] == pytest.approx(loop["latency_s"] + extra)
        assert wan["weights"] == weights
    assert linkcost.predict(spec, None)["latency_s"] == pytest.approx(C.predict(spec)["latency_s"])
    assert main(["pi", "--estimate", "resnet18-m16", "--link", "wan"]) == 0
    out = capsys.readouterr().out
    assert "over wan (400 Mbit/s, 40 ms RTT) about" in out
    link_row = next(line for line in out.splitlines() if line.startswith("link "))
    assert float(link_row.split()[1]) == pytest.approx(extras["owned"], abs=1e-3)


@pytest.mark.parametrize("argv, match", [
    (["pi", "--estimate", "resnet19"], "unknown architecture"),
    (["pi"], "exactly one of"),
    (["pi", "some_run", "--estimate", "resnet18"], "exactly one of"),
    (["pi", "--estimate", "resnet18", "--role", "client"], "--parties and --role"),
    (["pi", "--estimate", "resnet18", "--link", "fast"], "expected lan, wan or RATE:RTT"),
    (["pi", "--calibrate", "--link", "fast"], "expected lan, wan or RATE:RTT"),
    (["pi", "--estimate", "resnet18", "--cost-model", "/nonexistent/cm.json"], "no such"),
])
def test_cli_errors_are_one_line_with_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deepreshape: error:") and match in err


def test_the_documented_heldout_table_is_the_shipped_models():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/pi-costs.md").read_text()
    section = text[text.index("Held-out errors of the shipped model"):]
    section = section[:section.index("\nSummary")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| setting")]
    model = C.load()
    assert {r[0] for r in rows} == set(model.coefficients)
    for key in model.coefficients:
        documented = [r for r in rows if r[0] == key]
        report = model.meta["report"][key]["heldout"]
        assert len(documented) == len(report)
        for doc, rep in zip(documented, report, strict=True):
            arch, size = doc[1].rsplit(" @", 1)
            assert rep["arch"].startswith(arch.removesuffix("...")) and int(size) == rep["input_size"]
            assert doc[2:10] == [f"{rep['relus']:,}", f"{rep['macs'] / 1e6:.1f}M",
                                 f"{rep['latency_s_measured']:.2f}",
                                 f"{rep['latency_s_predicted']:.2f}",
                                 f"{100 * rep['latency_s_rel_err']:+.0f}%",
                                 f"{rep['bytes_measured'] / 1e6:.1f}",
                                 f"{rep['bytes_predicted'] / 1e6:.1f}",
                                 f"{100 * rep['bytes_rel_err']:+.0f}%"]
        h = model.meta["report"][key]["heldout_error"]
        if key == "cheetah":  # the summary quotes the default's errors
            assert (f"bytes {100 * h['bytes']['mean_abs']:.1f}% / {100 * h['bytes']['max_abs']:.1f}%, "
                    f"latency {100 * h['latency_s']['mean_abs']:.1f}% / "
                    f"{100 * h['latency_s']['max_abs']:.1f}%") in " ".join(text.split())
