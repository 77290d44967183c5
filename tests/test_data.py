"""Data: sources, the stratified seeded split, the folder source's handling of bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, tiny_overrides, write_folder_dataset

from imgclf.config import load_config
from imgclf.data import conform, load_data, load_pool, make_dataset, split_indices
from imgclf.errors import DataError
from imgclf.images import load_image


def test_split_is_stratified_disjoint_complete_and_repeatable():
    labels = np.repeat(np.arange(4), [40, 20, 100, 60])
    train, val, test = split_indices(labels, 0.15, 0.2, seed=7)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted([*train, *val, *test]) == list(range(len(labels)))
    for cls, n in zip(range(4), [40, 20, 100, 60], strict=True):
        assert (labels[test] == cls).sum() == round(n * 0.2)
        assert (labels[val] == cls).sum() == round(n * 0.15)
    again = split_indices(labels, 0.15, 0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = split_indices(labels, 0.15, 0.2, seed=8)
    assert not np.array_equal(test, other[2])


def test_tiny_class_keeps_a_training_image():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    train, _, test = split_indices(labels, 0.3, 0.3, seed=0)
    assert (labels[train] == 1).sum() >= 1
    assert len(test) > 0


def test_digits_and_mnist5k_are_real_and_balanced():
    digits = load_pool(load_config(None, ["data.source=digits", "data.image_size=[8,8]"]).data)
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and len(digits.class_names) == 10
    mnist = load_pool(load_config(None).data)
    assert mnist.images.shape == (5000, 28, 28, 1)
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    assert mnist.images.max() == 255 and mnist.images.min() == 0


def test_conform_resizes_and_converts_channels_like_the_decoder(tmp_path: Path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 20, 30, 3), dtype=np.uint8)
    out = conform(rgb, (10, 12), 1)
    assert out.shape == (2, 10, 12, 1)
    Image.fromarray(rgb[0]).save(tmp_path / "a.png")
    assert np.array_equal(out[0], load_image(tmp_path / "a.png", (10, 12), 1))
    grey = conform(rgb[:, :, :, :1], (20, 30), 3)
    assert grey.shape == (2, 20, 30, 3) and np.array_equal(grey[..., 0], grey[..., 2])


def _folder_config(path: Path, *extra: str):
    return load_config(None, [*tiny_overrides(path), *extra])


def test_folder_source_skips_exactly_the_unreadable_files(tmp_path: Path):
    root = write_folder_dataset(tmp_path / "ds", per_class=8)
    (root / "circle" / "empty.png").write_bytes(b"")
    (root / "hstripes" / "notes.png").write_text("this is text, not a PNG")
    good = (root / "vstripes" / "img_00.png").read_bytes()
    (root / "vstripes" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "vstripes" / "README.txt").write_text("not an image extension")
    (root / "circle" / ".hidden.png").write_bytes(b"junk")
    (root / ".DS_Store").write_bytes(b"junk")
    splits = load_data(_folder_config(root))
    skipped = {item["file"]: item["reason"] for item in splits.report["skipped"]}
    assert set(skipped) == {"circle/empty.png", "hstripes/notes.png", "vstripes/cut.png"}
    assert "empty" in skipped["circle/empty.png"]
    assert "not an image" in skipped["hstripes/notes.png"]
    assert "truncated" in skipped["vstripes/cut.png"]
    assert [i["file"] for i in splits.report["ignored"]] == ["vstripes/README.txt"]
    assert splits.class_names == list(CLASSES)
    assert sum(splits.report["totals"].values()) == 3 * 8  # upper-case .JPG files count too
    used = set(splits.train.files + splits.val.files + splits.test.files)
    assert not used & set(skipped)


def test_folder_errors_are_clear(tmp_path: Path):
    with pytest.raises(DataError, match="not found; expected a folder with one sub-folder"):
        load_data(_folder_config(tmp_path / "nope"))
    one = write_folder_dataset(tmp_path / "one", per_class=4)
    shutil.rmtree(one / "hstripes")
    shutil.rmtree(one / "vstripes")
    with pytest.raises(DataError, match="needs at least 2"):
        load_data(_folder_config(one))
    bad = write_folder_dataset(tmp_path / "bad", per_class=4)
    for f in (bad / "circle").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"'circle'.*no readable image"):
        load_data(_folder_config(bad))


def test_dataset_pipeline_batches_raw_pixels(folder_dataset: Path):
    splits = load_data(_folder_config(folder_dataset))
    batches = list(make_dataset(splits.train, batch_size=5, num_classes=3, shuffle=True, seed=1))
    x, y = batches[0]
    assert y.shape == (5, 3) and float(y.numpy().sum()) == 5.0  # one-hot
    assert x.dtype.name == "float32" and x.shape[1:] == (32, 32, 3)
    assert float(x.numpy().max()) > 1.0  # raw 0..255, the model preprocesses
    assert sum(len(b[1]) for b in batches) == len(splits.train)


def test_keras_source_reads_the_keras_cache_format(tmp_path: Path, monkeypatch):
    """keras:mnist through Keras' own loader, fed a local file in the cache's format."""
    import keras.src.datasets.mnist as keras_mnist

    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": np.arange(30) % 10,
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    monkeypatch.setattr(keras_mnist, "get_file", lambda *a, **k: str(tmp_path / "mnist.npz"))
    pool = load_pool(load_config(None, ["data.source=keras:mnist"]).data)
    assert pool.images.shape == (40, 28, 28, 1)  # train and test pooled, then re-split
    assert pool.class_names == [str(i) for i in range(10)]
    assert np.array_equal(pool.images[:30, ..., 0], arrays["x_train"])


def test_keras_source_offline_says_where_to_put_the_file(tmp_path: Path, monkeypatch):
    import keras.src.datasets.mnist as keras_mnist

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(keras_mnist, "get_file", offline)
    with pytest.raises(DataError) as err:
        load_pool(load_config(None, ["data.source=keras:mnist"]).data)
    msg = str(err.value)
    assert "could not load Keras dataset 'mnist'" in msg
    assert str(tmp_path / "keras-home" / "datasets") in msg and "\n" not in msg
