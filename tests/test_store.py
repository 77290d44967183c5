"""File datasets at any size: the decoded cache (memory, disk, none), streamed splits through the
training pipeline, pre-split train/val/test folders and the CSV source."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, make_image, tiny_overrides, write_folder_dataset
from PIL import Image

from imgclf.config import load_config
from imgclf.data import load_data, make_dataset
from imgclf.infra.errors import DataError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMGCLF_CACHE", str(folder))
    return folder


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "shapes", per_class=10)


def _load(root: Path, *extra: str):
    return load_data(load_config(None, [*tiny_overrides(root), *extra]))


def _batches(split, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = make_dataset(split, batch_size=4, num_classes=3, shuffle=True, seed=seed)
    return [(x.numpy(), y.numpy()) for x, y in ds]


@pytest.mark.parametrize("mode", ["disk", "none"])
def test_streamed_batches_are_exactly_the_in_memory_ones(photos: Path, cache: Path, mode: str):
    memory, streamed = _load(photos, "data.cache=memory"), _load(photos, f"data.cache={mode}")
    assert not memory.train.streamed and streamed.train.streamed
    assert streamed.report["cache"]["mode"] == mode
    for part in ("train", "val", "test"):
        a, b = getattr(memory, part), getattr(streamed, part)
        assert a.files == b.files and np.array_equal(a.y, b.y)
        assert np.array_equal(a.x, np.asarray(b.x))
    got, want = _batches(streamed.train), _batches(memory.train)
    assert len(got) == len(want)
    for (x1, y1), (x2, y2) in zip(got, want, strict=True):  # same order, same pixels, same labels
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_disk_cache_is_reused_and_rebuilt_when_a_file_changes(photos: Path, cache: Path):
    first = _load(photos, "data.cache=disk")
    assert first.report["cache"]["mode"] == "disk" and first.report["cache"]["reused"] is False
    entries = sorted((cache / "decoded").glob("*.u8"))
    assert len(entries) == 1 and not list((cache / "decoded").glob(".*"))  # no debris
    assert first.report["cache"]["bytes"] == entries[0].stat().st_size
    again = _load(photos, "data.cache=disk")
    assert again.report["cache"]["mode"] == "disk" and again.report["cache"]["reused"] is True
    assert Path(again.report["cache"]["file"]) == entries[0]
    assert np.array_equal(np.asarray(first.test.x), np.asarray(again.test.x))

    changed = photos / first.test.files[0]  # a test image changes its content
    Image.fromarray(255 - np.asarray(first.test.x[0])).save(changed)
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    rebuilt = _load(photos, "data.cache=disk")
    assert rebuilt.report["cache"]["mode"] == "disk" and not rebuilt.report["cache"]["reused"]
    assert np.array_equal(np.asarray(rebuilt.test.x[0]), 255 - np.asarray(first.test.x[0]))
    assert len(list((cache / "decoded").glob("*.u8"))) == 2  # a new entry beside the old


def test_a_file_replaced_with_its_size_and_time_kept_is_decoded_again(
    photos: Path, cache: Path, tmp_path: Path
):
    """`cp -p`, `rsync -t`, `tar` and `unzip` keep a file's modification time: a replacement
    of the same size used to be served from the cache with the old pixels. The key holds the
    inode and the change time too; both ways of replacing a file make it miss. (Bytes after
    the end of a PNG or JPEG are ignored by decoders: they make the sizes equal here.)"""
    first = _load(photos, "data.cache=memory")
    target = photos / first.test.files[0]
    size = 8192
    target.write_bytes(target.read_bytes().ljust(size, b"\0"))
    old = np.asarray(first.test.x[0])
    for n, in_place in enumerate((False, True)):
        assert _load(photos, "data.cache=disk").test.x is not None  # the cache holds it now
        donor = tmp_path / f"donor{n}{target.suffix}"
        Image.fromarray(255 - old if n == 0 else old // 2).save(donor)
        donor.write_bytes(donor.read_bytes().ljust(size, b"\0"))
        stat = target.stat()
        if in_place:  # the same inode rewritten (cp -p onto an existing file)
            target.write_bytes(donor.read_bytes())
        else:  # a new file renamed over it (rsync, unzip)
            donor.replace(target)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old time back
        assert (target.stat().st_size, target.stat().st_mtime_ns) == (size, stat.st_mtime_ns)
        again = _load(photos, "data.cache=disk")
        assert again.report["cache"]["reused"] is False, in_place
        fresh = _load(photos, "data.cache=memory").test.x[0]
        assert np.array_equal(np.asarray(again.test.x[0]), fresh) and not np.array_equal(fresh, old)


def test_the_cache_keeps_the_three_latest_entries_of_a_folder(photos: Path, cache: Path):
    for size in (8, 10, 12, 14):  # four image sizes of one folder: four entries made
        _load(photos, "data.cache=disk", f"data.image_size=[{size},{size}]")
    metas = [json.loads(p.read_text()) for p in (cache / "decoded").glob("*.json")]
    assert sorted(m["image_size"][0] for m in metas) == [10, 12, 14]  # the oldest went
    assert len(list((cache / "decoded").glob("*.u8"))) == 3


def test_a_cache_that_cannot_be_written_is_one_clear_error(
    photos: Path, tmp_path: Path, monkeypatch
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("IMGCLF_CACHE", str(blocker))  # the cache folder cannot be made
    with pytest.raises(DataError, match="cannot write the decoded-image cache") as info:
        _load(photos, "data.cache=disk")
    assert "data.cache=memory" in str(info.value) and "IMGCLF_CACHE" in str(info.value)
    assert _load(photos, "data.cache=memory").report["cache"]["mode"] == "memory"
    # The default (auto) never stops a run for its cache: it decodes into memory, and says why.
    fallback = _load(photos).report["cache"]
    assert fallback["mode"] == "memory"
    assert "cannot write the decoded-image cache" in fallback["note"]


def test_the_default_caches_on_disk_so_a_second_run_decodes_nothing(photos: Path, cache: Path):
    first = _load(photos).report["cache"]  # data.cache: auto, a disk with room
    assert first["mode"] == "disk" and not first["reused"]
    second = _load(photos).report["cache"]
    assert second["mode"] == "disk" and second["reused"] and second["file"] == first["file"]


def _broken_jpeg(path: Path) -> None:
    """A JPEG whose header is fine and whose body is cut short: found only when decoded."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])


def test_a_file_that_fails_while_streaming_is_reported_and_training_goes_on(
    photos: Path, cache: Path, tmp_path: Path
):
    from imgclf.images import check_header
    from imgclf.train import train

    bad = photos / "circle" / "zz_broken.jpg"
    _broken_jpeg(bad)
    assert check_header(bad) is None  # the header scan cannot see it
    config = load_config(None, [*tiny_overrides(photos), "data.cache=none", "train.epochs=1"])
    run = train(config, out=tmp_path / "run", verbose=0)
    report = json.loads((run / "data_report.json").read_text())
    assert {"file": "circle/zz_broken.jpg", "reason": "truncated or corrupt image"} in report[
        "skipped"
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] >= report["totals"]["test"] - 1 and (run / "manifest.json").exists()


def test_disk_cache_records_an_unreadable_file_once(photos: Path, cache: Path):
    _broken_jpeg(photos / "vstripes" / "zz_broken.jpg")
    first = _load(photos, "data.cache=disk")
    again = _load(photos, "data.cache=disk")
    for splits in (first, again):
        assert {"file": "vstripes/zz_broken.jpg", "reason": "truncated or corrupt image"} in (
            splits.report["skipped"]
        )
        listed = splits.train.files + splits.val.files + splits.test.files
        assert "vstripes/zz_broken.jpg" not in listed
    assert again.report["cache"]["reused"]


def test_every_cache_mode_gives_the_same_splits_around_a_broken_file(photos: Path, cache: Path):
    _broken_jpeg(photos / "circle" / "zz_broken.jpg")  # found up front (memory, disk) or late
    found = {}
    for mode in ("memory", "disk", "none"):
        splits = _load(photos, f"data.cache={mode}")
        # `none` still lists the file: reading it finds the failure and leaves it out then.
        found[mode] = [[f for f in getattr(splits, part).files if f != "circle/zz_broken.jpg"]
                       for part in ("train", "val", "test")]  # fmt: skip
    assert found["memory"] == found["disk"] == found["none"]


def _pre_split(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("valid", 3), ("test", 4)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(make_image(cls, rng)).save(folder / f"{split}_{i}.png")
    return root


def test_pre_split_folders_are_used_as_they_are(tmp_path: Path, cache: Path):
    root = _pre_split(tmp_path / "dataset")
    splits = _load(root)
    assert splits.report["split"] == "predefined" and splits.class_names == list(CLASSES)
    assert splits.report["totals"] == {"train": 24, "val": 9, "test": 12}
    assert all(f.startswith("test/") for f in splits.test.files)
    assert all(f.startswith("valid/") for f in splits.val.files)
    # Without a val folder, validation comes from train (val_fraction, stratified).
    shutil.rmtree(root / "valid")
    carved = _load(root)
    assert carved.report["totals"]["test"] == 12 and carved.report["totals"]["val"] > 0
    assert all(f.startswith("train/") for f in carved.val.files)
    pooled = _load(root, "data.split=stratified")
    assert pooled.report["split"] == "stratified"
    assert any(f.startswith("test/") for f in pooled.train.files)
    # An archive's __MACOSX folder is not a class; a file loose in train/ is listed as ignored.
    (root / "__MACOSX" / "train").mkdir(parents=True)
    (root / "train" / "notes.png").write_bytes(b"x")
    again = _load(root)
    assert again.report["split"] == "predefined" and again.class_names == list(CLASSES)
    assert {"file": "train/notes.png", "reason": "not inside a class sub-folder"} in (
        again.report["ignored"]
    )
    # train/ beside a folder that is not a split: refused, not guessed.
    (root / "unlabeled").mkdir()
    with pytest.raises(DataError, match=r"has a train/ folder beside other folders \(unlabeled\)"):
        _load(root)


def test_predefined_split_needs_a_layout_that_has_one(photos: Path, cache: Path):
    with pytest.raises(DataError, match="has no split of its own") as err:
        _load(photos, "data.split=predefined")
    assert "\n" not in str(err.value)


def _csv(root: Path, lines: list[str]) -> Path:
    path = root / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_source_with_split_column_and_bad_rows(photos: Path, cache: Path):
    files = {cls: sorted((photos / cls).iterdir()) for cls in CLASSES}
    lines = ["path,label,split"]
    for cls in CLASSES:
        for i, f in enumerate(files[cls]):
            split = "test" if i < 3 else "val" if i < 5 else "train"
            sep = "\\" if cls == "hstripes" else "/"  # a list made on Windows works too
            lines.append(f"{cls}{sep}{f.name},{cls},{split}")
    lines += ["", "circle/missing.png,circle,train", f"{files['circle'][0].relative_to(photos)},,"]
    lines.append(f"{files['circle'][1].relative_to(photos)},circle,tst")
    lines.append(f"{files['circle'][2].relative_to(photos)},circle,train,")  # a stray comma
    lines.append(lines[1])  # the first row again
    csv_path = _csv(photos, lines)
    splits = load_data(
        load_config(None, [*tiny_overrides(photos)[3:], "data.source=csv", f"data.path={csv_path}"])
    )
    assert splits.report["split"] == "predefined" and splits.class_names == list(CLASSES)
    assert splits.report["totals"] == {"train": 15, "val": 6, "test": 9}
    skipped = {s["file"]: s["reason"] for s in splits.report["skipped"]}
    # Physical line numbers: line 32 is blank.
    assert skipped["list.csv line 33: circle/missing.png"] == "file not found"
    assert skipped["list.csv line 34: circle/img_00.png"] == "empty label"
    assert skipped["list.csv line 35: circle/img_01.JPG"] == "split 'tst' is not train, val or test"
    assert skipped["list.csv line 36: circle/img_02.png"].startswith("1 field(s) more than")
    assert skipped[f"list.csv line 37: {lines[1].split(',')[0]}"] == "duplicate of line 2"


def test_a_csv_giving_one_image_two_labels_is_refused(photos: Path, cache: Path):
    files = sorted((photos / "circle").iterdir())
    lines = ["path,label"] + [
        f"{c}/{f.name},{c}" for c in CLASSES for f in sorted((photos / c).iterdir())
    ]
    lines.append(f"circle/{files[0].name},hstripes")
    csv_path = _csv(photos, lines)
    config = load_config(
        None, [*tiny_overrides(photos)[3:], "data.source=csv", f"data.path={csv_path}"]
    )
    with pytest.raises(DataError, match=r"line 32 labels circle/.* 'hstripes', line 2 labels it"):
        load_data(config)


@pytest.mark.parametrize(
    ("header", "message"),
    [("path,label,colour", "unknown column 'colour'"), ("label,split", "no column 'path'")],
)
def test_csv_with_a_bad_header_is_one_line(photos: Path, cache: Path, header: str, message: str):
    csv_path = _csv(photos, [header, "circle/img_00.png,circle,red"])
    with pytest.raises(DataError, match=message) as err:
        load_data(load_config(None, ["data.source=csv", f"data.path={csv_path}"]))
    assert "\n" not in str(err.value)


def test_predict_streams_a_folder_in_every_format(
    tiny_run: Path, photos: Path, capsys, monkeypatch
):
    from imgclf.predict import cli as predict
    from imgclf.predict import files as predictions

    monkeypatch.setattr(predictions, "CHUNK", 4)  # several chunks on a small folder
    for fmt in ("json", "jsonl", "csv", "table"):
        assert predict.main([str(tiny_run), str(photos), "--format", fmt, "--top-k", "2"]) == 0
        out = capsys.readouterr().out
        if fmt == "json":
            rows = json.loads(out)
        elif fmt == "jsonl":
            rows = [json.loads(line) for line in out.splitlines()]
        else:
            rows = out.splitlines()[1:]
        assert len(rows) == 30 * (2 if fmt == "csv" else 1), fmt


def test_a_disk_short_of_room_still_reuses_an_entry_it_holds(
    photos: Path, cache: Path, monkeypatch
):
    from imgclf.data import store

    built = _load(photos, "data.cache=disk").report["cache"]
    monkeypatch.setattr(store, "free_bytes", lambda folder: 0)  # no room for anything new
    again = _load(photos).report["cache"]  # auto
    assert again["mode"] == "disk" and again["reused"] and again["file"] == built["file"]
    other = _load(photos, "data.image_size=[12,12]").report["cache"]  # not cached: no room
    assert other["mode"] == "memory"


def test_the_whole_cache_is_capped_least_recently_used_first(
    photos: Path, cache: Path, monkeypatch
):
    from imgclf.data import cache_files

    first = _load(photos, "data.cache=disk", "data.image_size=[10,10]").report["cache"]
    one_entry = Path(first["file"]).stat().st_size
    monkeypatch.setattr(cache_files, "TOTAL_LIMIT_BYTES", one_entry + 1)
    second = _load(photos, "data.cache=disk", "data.image_size=[11,11]").report["cache"]
    left = sorted((cache / "decoded").glob("*.u8"))
    assert left == [Path(second["file"])]  # the older entry went: two did not fit the cap
