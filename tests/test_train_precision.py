"""The trainer's GPU path, exercised on CPU: bf16 autocast, channels_last, torch.compile,
and every CUDA-only branch (nccl, SyncBatchNorm, rank devices, CUDA RNG, synchronize)
reached with fakes, so that a typo cannot hide where no GPU runs."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from deepreshape.build import build
from deepreshape.cli.main import main
from deepreshape.data import BatchLoader, Dataset, load_dataset
from deepreshape.errors import UsageError
from deepreshape.optimize.snl import LambdaSchedule, LearnableMask, attach_masks, mask_l1, soft_relus
from deepreshape.options import RunOptions
from deepreshape.rundir.run import load_run
from deepreshape.training import Recipe, train
from deepreshape.training.checkpoints import rng_state, set_rng_state
from deepreshape.training.distributed import (
    Dist,
    GlobalBatchNorm2d,
    ddp_device_ids,
    dist_backend,
    init_distributed,
    rank_device,
    sync_batchnorm,
)
from deepreshape.training.evaluate import evaluate
from deepreshape.training.precision import (
    Precision,
    resolve_device,
    resolve_precision,
    synchronize,
    use_fast_kernels,
)
from deepreshape.zoo import parse

TINY = "resnet18-m4-d1,1,1,1"
SPEC = parse(TINY, dataset="digits")
# torch 2.13's oneDNN corrupts the heap in the fp32 weight gradient of a channels_last 1x1
# stride-2 convolution with fewer than 8 input channels (TINY's first projection has 4; the
# trainer refuses it), so channels_last and compiled training use a wider network.
WIDE = parse("resnet18-m16-d1,1,1,1", dataset="digits")
CPU = torch.device("cpu")
BF16 = Precision(torch.bfloat16)
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); through the
# ~10 layers of these networks the logits may move by a few of those steps.
LOGIT_TOL = 0.03  # max |bf16 - fp32| logit error, as a fraction of the largest |fp32| logit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _small(data: Dataset, n: int) -> Dataset:
    """The first n train and test images (fewer steps where only equality is checked)."""
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n],
                               test_x=data.test_x[:n], test_y=data.test_y[:n])


def _dtypes_of(model: nn.Module, kind: type) -> set[torch.dtype]:
    """Collects the output dtypes of every `kind` module while the model runs."""
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, kind):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, digits) -> Path:
    """A short bf16 baseline run (the teacher of the KD and SNL tests)."""
    out = tmp_path_factory.mktemp("bf16") / "base"
    train(SPEC, digits, recipe=Recipe(epochs=3, batch_size=64, lr=0.05), out=out, amp="bf16",
          options=RunOptions(quiet=True))
    return out


# --------------------------------------------------------------------------- bf16


def test_bf16_training_runs_in_bf16_and_lowers_the_loss(baseline: Path) -> None:
    run = load_run(baseline)
    losses = [m["loss"] for m in run.metrics]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.75 * losses[0], losses
    assert run.results["final_acc"] > 40.0  # 10 classes: chance is 10%
    assert run.config["precision"] == {"amp": "bf16", "channels_last": False, "compile": False}
    state = run.load_checkpoint()["model"]
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    model = run.model().eval()
    convs = _dtypes_of(model, nn.Conv2d)
    with BF16.autocast(CPU):
        model(torch.randn(2, 3, 16, 16))
    assert convs == {torch.bfloat16}


def test_bf16_logits_are_close_to_fp32_for_the_same_weights(baseline: Path, digits) -> None:
    model = load_run(baseline).model().eval()
    loader = BatchLoader(digits.test_x, digits.test_y, 256, mean=digits.mean, std=digits.std,
                         train=False)
    x, _ = next(iter(loader))
    with torch.no_grad():
        fp32 = model(x)
        with BF16.autocast(CPU):
            bf16 = model(x)
    assert bf16.dtype == torch.bfloat16
    err = float((bf16.float() - fp32).abs().max() / fp32.abs().max())
    assert 0 < err < LOGIT_TOL  # bf16 really ran (err > 0), and stayed within tolerance
    assert float((bf16.argmax(1) == fp32.argmax(1)).float().mean()) >= 0.95
    acc32 = evaluate(model, loader, CPU, precision=Precision())
    acc16 = evaluate(model, loader, CPU, precision=BF16)
    assert abs(acc32 - acc16) <= 2.0


def test_checkpoints_written_under_bf16_resume_exactly(tmp_path: Path, digits) -> None:
    data = _small(digits, 512)
    recipe = Recipe(epochs=3, batch_size=64, lr=0.05)
    full = train(SPEC, data, recipe=recipe, out=tmp_path / "full", amp="bf16", options=RunOptions(quiet=True))
    train(SPEC, data, recipe=recipe, out=tmp_path / "cut", amp="bf16", on_epoch_end=lambda e, m: e == 1,
          options=RunOptions(quiet=True))
    resumed = train(SPEC, data, recipe=recipe, out=tmp_path / "cut", amp="bf16",
                    options=RunOptions(resume=True, quiet=True))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.final_acc == full.final_acc


def test_kd_under_bf16_runs_the_teacher_in_bf16(tmp_path: Path, baseline: Path, digits) -> None:
    teacher = load_run(baseline).model()
    seen = _dtypes_of(teacher, nn.Conv2d)
    res = train(SPEC, _small(digits, 512), recipe=Recipe(epochs=4, batch_size=64, lr=0.05), teacher=teacher,
                out=tmp_path / "kd", amp="bf16", options=RunOptions(quiet=True))
    assert seen == {torch.bfloat16}
    losses = [m["loss"] for m in load_run(tmp_path / "kd").metrics]
    # it learns: the loss falls and accuracy is well above chance (10 classes); after 2
    # epochs it was 19% on an Intel Xeon and above 20% on an AMD EPYC, so 4 epochs
    assert losses[-1] < losses[0] and res.final_acc > 20.0


def test_snl_mask_phase_under_bf16_shrinks_the_masks(baseline: Path, digits) -> None:
    base = load_run(baseline)
    model = base.model()
    masks = attach_masks(model, base.spec, "pixel")
    seen = _dtypes_of(model, LearnableMask)
    total = soft_relus(masks)
    sched = LambdaSchedule(total // 2, lambda: soft_relus(masks), lam=1e-3, after=0)
    train(base.spec, _small(digits, 512), model=model, teacher=str(baseline), amp="bf16",
          recipe=Recipe(epochs=3, batch_size=64, lr=0.05, optimizer="adam", weight_decay=0.0),
          extra_loss=lambda _m: sched.lam * mask_l1(masks), on_epoch_end=sched,
          options=RunOptions(quiet=True))
    assert seen == {torch.bfloat16}
    assert all(m.alpha.dtype == torch.float32 for m in masks)  # the masks learn in fp32
    assert len(sched.history) == 3 and sched.history[-1]["relus"] <= total
    assert float(mask_l1(masks).detach()) < 0.8 * total  # the L1 term pulled the masks down


# --------------------------------------------------------------------------- channels_last


def test_channels_last_gives_the_outputs_of_contiguous() -> None:
    torch.manual_seed(0)
    model = build(WIDE)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16)
    for mode in (False, True):  # eval, then train (batch statistics)
        model.train(mode)
        cl.train(mode)
        out = model(x)
        out_cl = cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    out_cl.sum().backward()
    for (name, p), q in zip(model.named_parameters(), cl.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_training_equals_contiguous_training(tmp_path: Path, digits) -> None:
    # Two SGD steps: on this tiny BN network float rounding (which the two memory formats
    # order differently) grows about 10x per step (5e-5 after one, 5e-4 after two steps).
    data = _small(digits, 128)
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05)
    a = train(WIDE, data, recipe=recipe, out=tmp_path / "a", channels_last=False,
              options=RunOptions(quiet=True))
    b = train(WIDE, data, recipe=recipe, out=tmp_path / "b", channels_last=True,
              options=RunOptions(quiet=True))
    assert load_run(tmp_path / "b").config["precision"]["channels_last"] is True
    conv = next(m for m in b.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-3, atol=2e-3)


def test_cpu_layouts_that_crash_onednn_are_refused(tmp_path: Path, digits) -> None:
    for kw in ({"channels_last": True, "options": RunOptions(quiet=True)},
               {"options": RunOptions(quiet=True, compile=True)}):
        with pytest.raises(UsageError, match="stage2.block1.shortcut.conv .* oneDNN"):
            train(SPEC, _small(digits, 64), recipe=Recipe(epochs=1, batch_size=64), **kw)
    res = train(SPEC, _small(digits, 64), recipe=Recipe(epochs=1, batch_size=64), amp="bf16",
                channels_last=True, options=RunOptions(quiet=True))  # bf16 takes another oneDNN kernel: fine
    assert res.epochs_run == 1


def test_cli_precision_flags(tmp_path: Path) -> None:
    args = ["train", "resnet18-m16-d1,1,1,1", "--epochs", "1", "--batch-size", "64", "--limit",
            "128", "--quiet"]
    assert main([*args, "--amp", "bf16", "--channels-last", "--out", str(tmp_path / "r")]) == 0
    assert load_run(tmp_path / "r").config["precision"] == {
        "amp": "bf16", "channels_last": True, "compile": False}
    assert main([*args, "--out", str(tmp_path / "d")]) == 0  # CPU default: fp32, contiguous
    assert load_run(tmp_path / "d").config["precision"]["amp"] == "fp32"
    assert main([*args, "--amp", "fp16", "--out", str(tmp_path / "x")]) == 2  # one line, no usage
    assert not (tmp_path / "x").exists()


def test_resolve_precision_per_device() -> None:
    gpu = torch.device("cuda")
    assert resolve_precision(CPU) == Precision(None, False)
    assert resolve_precision(CPU, "bf16", True) == Precision(torch.bfloat16, True)
    assert resolve_precision(gpu, bf16_supported=True) == Precision(torch.bfloat16, True)
    assert resolve_precision(gpu, bf16_supported=False) == Precision(None, True)
    assert resolve_precision(gpu, "fp32", False, bf16_supported=True) == Precision(None, False)
    with pytest.raises(UsageError, match="no bfloat16"):
        resolve_precision(gpu, "bf16", bf16_supported=False)
    with pytest.raises(UsageError, match="valid: auto, fp32, bf16"):
        resolve_precision(CPU, "fp16")
    assert Precision(torch.bfloat16, True).to_dict() == {"amp": "bf16", "channels_last": True}


# --------------------------------------------------------------------------- CUDA-only branches


def test_cuda_precision_queries_the_gpu_and_autocasts_on_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    p = resolve_precision(torch.device("cuda"))
    assert p == Precision(torch.bfloat16, True)
    with warnings.catch_warnings():  # "CUDA is not available, disabling autocast" here
        warnings.simplefilter("ignore")
        ctx = p.autocast(torch.device("cuda"))
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)
    assert Precision().autocast(CPU)._enabled is False


def test_backend_rank_device_and_ddp_ids() -> None:
    assert dist_backend("cuda") == "nccl" and dist_backend("cpu") == "gloo"
    assert rank_device(torch.device("cuda"), 3) == torch.device("cuda", 3)
    assert rank_device(torch.device("cuda:1"), 3) == torch.device("cuda", 1)
    assert rank_device(CPU, 3) == CPU
    assert ddp_device_ids(torch.device("cuda", 2)) == [2] and ddp_device_ids(CPU) is None


@pytest.mark.parametrize("device,backend,gpu", [("cuda", "nccl", "cuda:1"), ("cpu", "gloo", None)])
def test_init_distributed_picks_backend_and_the_ranks_gpu(monkeypatch, device, backend, gpu) -> None:
    import torch.distributed as tdist

    calls: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group", lambda b: calls.setdefault("backend", b))
    monkeypatch.setattr(tdist, "get_rank", lambda: 1)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    dist, dev = init_distributed(torch.device(device))
    assert dist == Dist(1, 2, 1) and calls["backend"] == backend
    assert str(calls.get("set_device")) == str(gpu) if gpu else "set_device" not in calls
    assert dev == torch.device(gpu or "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed(torch.device(device)) == (Dist(), torch.device(device))


def test_sync_batchnorm_conversion_keeps_every_weight() -> None:
    spec = parse("hrn-2x2x2x-m8-d1,1,1,1", dataset="digits").with_slots(
        {"stage2.block1.relu1": "reuse:4"})  # ReLU-reuse brings BNs of its own
    model = build(spec)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bns = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    synced = sync_batchnorm(model, torch.device("cuda"))
    assert sum(type(m) is nn.SyncBatchNorm for m in synced.modules()) == bns > 0
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    after = synced.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    cpu = sync_batchnorm(build(spec), CPU)
    assert sum(type(m) is GlobalBatchNorm2d for m in cpu.modules()) == bns


def test_global_batchnorm_under_bf16_matches_batchnorm(tmp_path: Path) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = nn.BatchNorm2d(6).train()
        glob = copy.deepcopy(ref)
        glob.__class__ = GlobalBatchNorm2d
        x = (torch.randn(64, 6, 8, 8) * 3 + 5).bfloat16()  # a large mean: bf16 sums would drift
        out = glob(x)
        torch.testing.assert_close(out, ref(x.float()), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(glob.running_var, ref.running_var, rtol=1e-4, atol=1e-5)
    finally:
        tdist.destroy_process_group()


def test_cuda_rng_state_is_saved_and_restored(monkeypatch) -> None:
    got: list = []
    fake = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: fake)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", got.append)
    state = rng_state()
    assert state["cuda"] is fake
    set_rng_state(state)
    assert got == [fake]


def test_fast_cudnn_kernels_only_on_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    use_fast_kernels(CPU)
    assert torch.backends.cudnn.benchmark is False
    use_fast_kernels(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True


def test_resolve_device_and_synchronize_on_a_faked_gpu(monkeypatch) -> None:
    synced: list = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    synchronize(CPU)
    synchronize(torch.device("cuda", 1))
    assert synced == [torch.device("cuda", 1)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError, match="valid: cpu, cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == CPU
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_whole_split_lives_on_the_training_device(digits) -> None:
    # The meta device stands in for a GPU: the split is moved once, batches are built there.
    loader = BatchLoader(digits.train_x, digits.train_y, 64, mean=digits.mean, std=digits.std,
                         train=True, device="meta", channels_last=True)
    assert loader.x.device.type == loader.y.device.type == "meta"
    x, y = next(iter(loader))
    assert x.device.type == y.device.type == "meta" and x.shape == (64, 3, 16, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_training_equals_eager_and_changed_slots_compile(tmp_path: Path, digits) -> None:
    data = _small(digits, 256)
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05)
    eager = train(WIDE, data, recipe=recipe, out=tmp_path / "eager", options=RunOptions(quiet=True))
    comp = train(WIDE, data, recipe=recipe, out=tmp_path / "comp",
                 options=RunOptions(compile=True, quiet=True))
    assert load_run(tmp_path / "comp").config["precision"]["compile"] is True
    sa, sb = eager.model.state_dict(), comp.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-3, atol=1e-4, msg=k)
    # Networks whose slots changed: ReLU-reuse, a frozen SNL mask, and learnable SNL masks.
    spec = WIDE.with_slots({"stage1.block1.relu1": "reuse:4", "stage2.block1.relu1":
                            "mask:pixel:100", "stage3.block1.relu2": "identity"})
    torch.manual_seed(0)
    model = build(spec)
    attach_masks(model, spec, "channel")
    model.train()
    x = torch.randn(16, 3, 16, 16)
    ref = model(x)
    ref.square().mean().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    out = torch.compile(model)(x)
    out.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], rtol=1e-3, atol=1e-5, msg=k)
