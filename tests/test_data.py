"""Readers against tiny files in the real formats, the digits split, and the batch loader."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from deepreshape.data import (
    DATASETS,
    BatchLoader,
    Dataset,
    load_dataset,
    resolve_data_dir,
)
from deepreshape.errors import DataError, UsageError

# --------------------------------------------------------------------------- fixtures

CIFAR10 = ("cifar-10-batches-py", "cifar-10-python.tar.gz", "labels", 10)
CIFAR100 = ("cifar-100-python", "cifar-100-python.tar.gz", "fine_labels", 100)


def _batch(n: int, num_classes: int, label_key: str, seed: int) -> dict:
    """A pickle dict exactly as the official release has it: bytes keys, data uint8 [N,3072]."""
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key.encode(): rng.integers(0, num_classes, n).tolist(),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == "fine_labels":
        d[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    return d


def _cifar_files(name: str) -> dict[str, dict]:
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        return {n: _batch(3, 10, "labels", s) for s, n in enumerate(names)}
    return {"train": _batch(5, 100, "fine_labels", 1), "test": _batch(4, 100, "fine_labels", 2)}


def _meta(name: str) -> tuple[str, dict]:
    if name == "cifar10":
        return "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]}
    return "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)]}


def write_cifar(root: Path, name: str, form: str) -> dict[str, dict]:
    """Write a small release as the extracted folder or as the .tar.gz; return its batches."""
    folder, archive, _, _ = CIFAR10 if name == "cifar10" else CIFAR100
    files = _cifar_files(name)
    meta_name, meta = _meta(name)
    blobs = {n: pickle.dumps(d, protocol=2) for n, d in {**files, meta_name: meta}.items()}
    if form == "folder":
        (root / folder).mkdir(parents=True)
        for n, b in blobs.items():
            (root / folder / n).write_bytes(b)
    else:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / archive, "w:gz") as tar:
            for n, b in blobs.items():
                info = tarfile.TarInfo(f"{folder}/{n}")
                info.size = len(b)
                tar.addfile(info, io.BytesIO(b))
    return files


def _expected(name: str, files: dict[str, dict]) -> tuple[np.ndarray, ...]:
    key = b"labels" if name == "cifar10" else b"fine_labels"
    test_name = "test_batch" if name == "cifar10" else "test"
    train = [d for n, d in files.items() if n != test_name]
    return (
        np.concatenate([d[b"data"] for d in train]),
        np.concatenate([d[key] for d in train]),
        files[test_name][b"data"],
        np.asarray(files[test_name][key]),
    )


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trip(tmp_path: Path, name: str, form: str) -> None:
    files = write_cifar(tmp_path, name, form)
    ds = load_dataset(name, tmp_path)
    train_data, train_y, test_data, test_y = _expected(name, files)
    assert isinstance(ds, Dataset)
    assert (ds.num_classes, ds.input_size) == (DATASETS.get(name).num_classes, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (len(train_data), 3, 32, 32)
    assert ds.train_y.dtype == torch.int64 and ds.test_x.shape == (len(test_data), 3, 32, 32)
    for i in range(len(train_data)):  # planes are R, G, B, each row-major 32x32
        red = train_data[i, :1024].reshape(32, 32)
        blue = train_data[i, 2048:].reshape(32, 32)
        assert np.array_equal(ds.train_x[i, 0].numpy(), red)
        assert np.array_equal(ds.train_x[i, 2].numpy(), blue)
    assert np.array_equal(ds.train_y.numpy(), train_y)
    assert np.array_equal(ds.test_x.reshape(len(test_data), -1).numpy(), test_data)
    assert np.array_equal(ds.test_y.numpy(), test_y)
    assert len(ds.mean) == len(ds.std) == 3


def test_cifar_data_dir_from_env_resize_and_limit(tmp_path: Path, monkeypatch) -> None:
    write_cifar(tmp_path, "cifar10", "folder")
    monkeypatch.setenv("DEEPRESHAPE_DATA", str(tmp_path))
    ds = load_dataset("CIFAR10", input_size=20, limit=4)
    assert ds.input_size == 20
    assert ds.train_x.shape == (4, 3, 20, 20) and ds.test_x.shape == (3, 3, 20, 20)
    assert ds.train_y.shape == (4,)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["cifar-10-batches-py/", "cifar-10-python.tar.gz", "kriz/cifar-10-python"]),
        ("cifar100", ["cifar-100-python/", "cifar-100-python.tar.gz", "kriz/cifar-100-python"]),
        ("tinyimagenet", ["tiny-imagenet-200/", "cs231n.stanford.edu/tiny-imagenet-200.zip"]),
    ],
)
def test_missing_data_set_says_what_and_where(tmp_path: Path, name: str, expected) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "never downloads" in msg
    assert "--data-dir" in msg and "DEEPRESHAPE_DATA" in msg
    for part in expected:
        assert part in msg


def test_missing_batch_file_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", "folder")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        load_dataset("cifar10", tmp_path)


def _corrupt_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:500])


def _rewrite(path: Path, change) -> None:
    d = pickle.loads(path.read_bytes(), encoding="bytes")
    change(d)
    path.write_bytes(pickle.dumps(d, protocol=2))


CORRUPTIONS = {
    "truncated": (_corrupt_truncated, "not a readable"),
    "label out of range": (
        lambda p: _rewrite(p, lambda d: d[b"labels"].__setitem__(0, 10)),
        "0..9",
    ),
    "wrong shape": (
        lambda p: _rewrite(p, lambda d: d.__setitem__(b"data", d[b"data"][:, :3000].copy())),
        "3072",
    ),
    "wrong dtype": (
        lambda p: _rewrite(p, lambda d: d.__setitem__(b"data", d[b"data"].astype(np.float32))),
        "uint8",
    ),
    "label count": (lambda p: _rewrite(p, lambda d: d[b"labels"].pop()), "labels"),
    "wrong keys": (lambda p: _rewrite(p, lambda d: d.pop(b"data")), "b'data'"),
    "not a dict": (lambda p: p.write_bytes(pickle.dumps([1, 2])), "dict"),
    "foreign global": (lambda p: p.write_bytes(pickle.dumps(Path("x"))), "not a readable"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_cifar_names_the_file(tmp_path: Path, case: str) -> None:
    write_cifar(tmp_path, "cifar10", "folder")
    corrupt, words = CORRUPTIONS[case]
    corrupt(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert "data_batch_3" in msg and words in msg and "\n" not in msg


def test_cifar100_fine_label_out_of_range(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar100", "folder")
    _rewrite(
        tmp_path / "cifar-100-python" / "test",
        lambda d: d[b"fine_labels"].__setitem__(1, 100),
    )
    with pytest.raises(DataError, match=r"cifar-100-python/test: labels must be in 0\.\.99"):
        load_dataset("cifar100", tmp_path)


def test_truncated_archive_names_the_archive(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", "archive")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-300])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_member_in_archive_names_member(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_cifar(root, "cifar10", "folder")
    _corrupt_truncated(root / "cifar-10-batches-py" / "test_batch")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match=r"tar\.gz:cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- Tiny ImageNet

WNIDS = ["n01443537", "n01629819"]
COLORS = {"n01443537": (200, 30, 40), "n01629819": (20, 160, 220)}


def _jpeg(path: Path, color, mode: str = "RGB", size: int = 64) -> None:
    img = Image.new("RGB", (size, size), color)
    img.paste((color[2], color[0], color[1]), (16, 16, 48, 48))  # some structure
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert(mode).save(path, "JPEG", quality=95)


def write_tiny(root: Path) -> Path:
    """2 classes, 3 train JPEGs each (one grayscale, one 32x32), 2 val JPEGs."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("".join(w + "\n" for w in WNIDS))
    (base / "words.txt").write_text("n01443537\tgoldfish\nn01629819\tsalamander\n")
    for w in WNIDS:
        for i in range(3):
            mode, size = ("L", 64) if i == 1 else ("RGB", 32 if i == 2 else 64)
            _jpeg(base / "train" / w / "images" / f"{w}_{i}.JPEG", COLORS[w], mode, size)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    val = [("val_0.JPEG", WNIDS[1]), ("val_1.JPEG", WNIDS[0])]
    for fname, w in val:
        _jpeg(base / "val" / "images" / fname, COLORS[w])
    lines = "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in val)
    (base / "val" / "val_annotations.txt").write_text(lines)
    return base


def test_tinyimagenet_reads_and_caches(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    ds = load_dataset("tinyimagenet", tmp_path)
    assert ds.num_classes == 200 and ds.input_size == 64
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.test_x.shape == (2, 3, 64, 64)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.tolist() == [1, 0]
    corner = ds.train_x[:, :, 2, 2].int()  # outside the pasted square: the class colour
    for i in (0, 3):
        want = torch.tensor(COLORS[WNIDS[ds.train_y[i]]])
        assert (corner[i] - want).abs().max() <= 4
    gray = ds.train_x[1].int()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    want_val = torch.tensor(COLORS[WNIDS[1]])
    assert (ds.test_x[0, :, 5, 5].int() - want_val).abs().max() <= 4
    cache = base / ".deepreshape-cache-v1.npz"
    assert cache.is_file()

    # A broken JPEG is not decoded again: the second load comes from the cache.
    broken = base / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG"
    broken.write_bytes(b"not a jpeg")
    again = load_dataset("tinyimagenet", tmp_path)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)

    # Removing an image changes the key: the cache is rebuilt, which now decodes the broken file.
    (base / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG").unlink()
    with pytest.raises(DataError, match=f"{WNIDS[0]}_0.JPEG"):
        load_dataset("tinyimagenet", tmp_path)


def test_tinyimagenet_cache_follows_wnids(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    assert load_dataset("tinyimagenet", tmp_path).train_y.tolist() == [0, 0, 0, 1, 1, 1]
    (base / "wnids.txt").write_text(f"{WNIDS[1]}\n{WNIDS[0]}\n")
    ds = load_dataset("tinyimagenet", tmp_path, input_size=32, limit=4)
    assert ds.train_y.tolist() == [0, 0, 0, 1] and ds.train_x.shape == (4, 3, 32, 32)


def test_tinyimagenet_unreadable_jpeg(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    (base / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="val_1.JPEG"):
        load_dataset("tinyimagenet", tmp_path)
    assert not (base / ".deepreshape-cache-v1.npz").exists()


def test_tinyimagenet_unknown_wnid(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_2.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt:3: unknown wnid 'n99999999'"):
        load_dataset("tinyimagenet", tmp_path)


def test_tinyimagenet_missing_class_folder_and_zip_hint(tmp_path: Path) -> None:
    base = write_tiny(tmp_path / "a")
    (base / "wnids.txt").write_text("n01443537\nn01629819\nn02000000\n")
    with pytest.raises(DataError, match="n02000000"):
        load_dataset("tinyimagenet", tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tiny-imagenet-200.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="extract"):
        load_dataset("tinyimagenet", tmp_path / "b")


# --------------------------------------------------------------------------- digits, registry


def test_digits_split_is_stratified_and_fixed() -> None:
    ds = load_dataset("digits")
    assert ds.num_classes == 10 and ds.input_size == 16
    assert len(ds.train_x) + len(ds.test_x) == 1797
    assert ds.train_x.shape[1:] == (3, 16, 16) and ds.train_x.dtype == torch.uint8
    assert set(ds.test_y.tolist()) == set(range(10)) == set(ds.train_y.tolist())
    assert len(ds.test_x) == 360
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])
    assert int(ds.train_x.max()) == 255
    again = load_dataset("digits")
    assert torch.equal(again.test_x, ds.test_x) and torch.equal(again.test_y, ds.test_y)
    pixels = ds.train_x.double() / 255
    assert ds.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-6)
    assert ds.std[1] == pytest.approx(float(pixels.std()), rel=1e-4)


def test_digits_custom_size_and_limit() -> None:
    ds = load_dataset("digits", input_size=28, limit=50)
    assert ds.train_x.shape == (50, 3, 28, 28) and ds.test_x.shape == (50, 3, 28, 28)
    assert ds.input_size == 28


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match="cifar10, cifar100, tinyimagenet, digits"):
        load_dataset("mnist")


def test_resolve_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPRESHAPE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DEEPRESHAPE_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path / ".cache" / "deepreshape"


# --------------------------------------------------------------------------- loader

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def _images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def _loader(x: torch.Tensor, batch_size: int, **kw) -> BatchLoader:
    kw.setdefault("train", True)
    return BatchLoader(x, torch.arange(len(x)), batch_size, mean=MEAN, std=STD, **kw)


def _epoch(loader: BatchLoader, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_deterministic_per_seed_and_epoch() -> None:
    x = _images(40)
    a, b = _epoch(_loader(x, 8, seed=3)), _epoch(_loader(x, 8, seed=3))
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    order0 = torch.cat([y for _, y in a])
    order1 = torch.cat([y for _, y in _epoch(_loader(x, 8, seed=3), 1)])
    other = torch.cat([y for _, y in _epoch(_loader(x, 8, seed=4))])
    assert sorted(order0.tolist()) == list(range(40))
    assert not torch.equal(order0, order1) and not torch.equal(order0, other)


def test_loader_without_augmentation_is_normalized_input() -> None:
    x = _images(20)
    for xb, yb in _epoch(_loader(x, 6, augment=False, drop_last=False)):
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        torch.testing.assert_close(xb, _normalize(x[yb]))
    # pad=0: the crop is the identity, only flips remain.
    flipped = 0
    for xb, yb in _epoch(_loader(x, 20, pad=0)):
        ref = _normalize(x[yb])
        for i in range(len(yb)):
            same = torch.allclose(xb[i], ref[i], atol=1e-5)
            mirrored = torch.allclose(xb[i], ref[i].flip(-1), atol=1e-5)
            assert same or mirrored
            flipped += int(mirrored and not same)
    assert 0 < flipped < 20


def test_loader_test_split_keeps_order() -> None:
    x = _images(10)
    got = _epoch(_loader(x, 4, train=False))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.cat([y for _, y in got]).tolist() == list(range(10))
    torch.testing.assert_close(torch.cat([b for b, _ in got]), _normalize(x))


def test_augmentation_is_a_crop_of_the_padded_image() -> None:
    x, pad = _images(32, size=8), 2
    ((xb, yb),) = _epoch(_loader(x, 32, pad=pad))
    assert xb.shape == (32, 3, 8, 8)
    padded = F.pad(_normalize(x[yb]), (pad,) * 4, mode="reflect")
    offsets = set()
    for i in range(32):
        hits = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if torch.allclose(
                xb[i],
                padded[i, :, dy : dy + 8, dx : dx + 8].flip(-1)
                if flip
                else padded[i, :, dy : dy + 8, dx : dx + 8],
                atol=1e-5,
            )
        ]
        assert hits, f"sample {i} is not a crop of its padded image"
        offsets.update(hits)
    assert len(offsets) > 3  # offsets really vary per sample


def test_default_pad_is_an_eighth() -> None:
    assert _loader(_images(4, 32), 2).pad == 4
    assert _loader(_images(4, 16), 2).pad == 2
    with pytest.raises(UsageError, match="pad"):
        _loader(_images(4, 8), 2, pad=8)


@pytest.mark.parametrize(
    ("n", "b", "w", "drop_last", "lengths"),
    [
        (10, 3, 1, True, [3]),
        (10, 3, 1, False, [4]),
        (10, 3, 2, True, [1, 1]),
        (10, 3, 2, False, [2, 2]),  # last global batch of 4 split 2 + 2
        (7, 3, 2, False, [2, 1]),  # last global batch of 1: only rank 0 gets a batch
    ],
)
def test_len_and_num_samples(n: int, b: int, w: int, drop_last: bool, lengths) -> None:
    x = _images(n, 4)
    for r in range(w):
        loader = _loader(x, b, rank=r, world_size=w, drop_last=drop_last, augment=False)
        got = _epoch(loader)
        assert len(loader) == len(got) == lengths[r]
        assert loader.num_samples == sum(len(y) for _, y in got)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 50),
    b=st.integers(1, 7),
    w=st.integers(1, 4),
    drop_last=st.booleans(),
    train=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_ranks_split_the_one_process_batches(n, b, w, drop_last, train, seed) -> None:
    """Step i of a 1-process run with batch W*B is the concatenation of step i on the W ranks."""
    x = _images(n, 4)

    def run(batch: int, rank: int, world: int) -> list[torch.Tensor]:
        return [
            y
            for _, y in _epoch(
                _loader(
                    x,
                    batch,
                    train=train,
                    seed=seed,
                    rank=rank,
                    world_size=world,
                    drop_last=drop_last,
                    augment=False,
                ),
                epoch=2,
            )
        ]

    whole = run(b * w, 0, 1)
    shards = [run(b, r, w) for r in range(w)]
    assert max(len(s) for s in shards) == len(whole)
    for i, batch in enumerate(whole):
        parts = [s[i] for s in shards if i < len(s)]
        assert torch.equal(torch.cat(parts), batch)
        if len(batch) == b * w:
            assert all(len(p) == b for p in parts)
    seen = torch.cat(whole).tolist() if whole else []
    assert len(set(seen)) == len(seen)
    assert len(seen) == (n // (b * w)) * b * w if drop_last else sorted(seen) == list(range(n))


def test_augmented_batches_do_not_depend_on_world_size() -> None:
    x = _images(24, 8)
    whole = _epoch(_loader(x, 8, seed=5), 1)
    shards = [_epoch(_loader(x, 4, seed=5, rank=r, world_size=2), 1) for r in range(2)]
    for i, (xb, yb) in enumerate(whole):
        assert torch.equal(torch.cat([shards[0][i][1], shards[1][i][1]]), yb)
        assert torch.equal(torch.cat([shards[0][i][0], shards[1][i][0]]), xb)


def test_channels_last_dtype_and_device() -> None:
    x = _images(6, 8)
    loader = _loader(x, 3, channels_last=True, dtype=torch.bfloat16, device="cpu")
    xb, yb = next(iter(loader))
    assert xb.dtype == torch.bfloat16 and xb.is_contiguous(memory_format=torch.channels_last)
    assert loader.x.device == torch.device("cpu") and yb.device == torch.device("cpu")


def test_loader_rejects_bad_arguments() -> None:
    x = _images(4, 8)
    with pytest.raises(UsageError, match="uint8"):
        BatchLoader(x.float(), torch.arange(4), 2, mean=MEAN, std=STD, train=True)
    with pytest.raises(UsageError, match="rank"):
        _loader(x, 2, rank=2, world_size=2)
    with pytest.raises(UsageError, match="labels"):
        BatchLoader(x, torch.arange(3), 2, mean=MEAN, std=STD, train=True)
