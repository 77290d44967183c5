"""The Data page through `streamlit.testing.v1.AppTest` (the real app script): the selected
run's data report, and a folder or CSV read before training by the code training uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_folder_dataset
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgclf import runs
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.formats import is_image_name
from imgclf.ui import catalog

APP = str(Path(__file__).resolve().parents[1] / "app.py")
FOLDER = "A folder or CSV (before training)"


def _data_page(monkeypatch, root: Path, run: Path | None = None) -> AppTest:
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    at = AppTest.from_file(APP, default_timeout=180).run()
    if run is not None:
        at.sidebar.selectbox(key="run").set_value(str(run)).run()
    at.sidebar.radio(key="page").set_value("Data").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Data"
    return at


def _read_folder(at: AppTest, path: Path | str) -> AppTest:
    at.radio(key="data_source").set_value(FOLDER).run()
    at.text_input(key="data_path").input(str(path)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _walk(node):
    """Every element of an AppTest tree (`at.get` only sees the top level)."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _table_in(at: AppTest, key: str):
    """The DataFrame shown inside the page's container `key` (data-skipped, data-sizes, ...)."""
    (block,) = [n for n in _walk(at.main) if str(getattr(n, "proto", "")).find(f'-{key}"') > 0]
    (table,) = [n for n in _walk(block) if getattr(n, "type", "") == "dataframe"]
    return table.value


def _image_alts(at: AppTest) -> list[str]:
    """The alt text of every picture on the page."""
    return [
        img.alt for n in _walk(at.main) if getattr(n, "type", "") == "image" for img in n.proto.imgs
    ]


def _assert_table_is_report(table, report: dict) -> None:
    """The counts table holds exactly the report's counts, per class and split, and its totals."""
    assert list(table.index) == [*report["classes"], "all classes"]
    assert list(table.columns) == ["train", "val", "test", "total"]
    for split, per_class in report["counts"].items():
        for name in report["classes"]:
            assert table.loc[name, split] == per_class[name], (name, split)
        assert table.loc["all classes", split] == report["totals"][split]
    for name in report["classes"]:
        assert table.loc[name, "total"] == sum(report["counts"][s][name] for s in report["counts"])


def _files_on_disk(root: Path) -> dict[str, int]:
    return {d.name: sum(is_image_name(f) for f in d.iterdir()) for d in root.iterdir()}


def _training_report(overrides: list[str]) -> dict:
    """What a training run with the default config writes as its data report."""
    return load_data(load_config(None, overrides)).report


def test_counts_table_equals_the_runs_data_report(monkeypatch, app_runs: Path):
    entries = catalog.list_runs(app_runs)
    for entry in entries:
        at = _data_page(monkeypatch, app_runs, entry.path)
        report = runs.read_json(entry.path / runs.DATA_REPORT)
        _assert_table_is_report(at.table[0].value, report)
        (chart,) = [n for n in _walk(at.main) if getattr(n, "type", "") == "vega_lite_chart"]
        spec = json.loads(chart.proto.spec)
        assert spec["encoding"]["color"]["field"] == "split"
        assert spec["encoding"]["color"]["scale"] == {"scheme": "category10"}
        markdown = [m.value for m in at.markdown]
        assert "**Skipped:** none." in markdown and "**Ignored:** none." in markdown
        sizes = _table_in(at, "data-sizes")
        assert list(sizes["class"]) == [*report["classes"], "all classes"]
        assert sizes["files opened"].iloc[-1] == sum(report["totals"].values())
        alts = _image_alts(at)
        for name in report["classes"]:
            assert f"{name} sample 1" in alts, (name, alts)
        # A run trained without augmentation: the page says so and offers no preview.
        augmented = runs.read_config(entry.path)["augment"]["rotation"] > 0
        assert any("Augmentation is off" in i.value for i in at.info) is not augmented
        assert bool([b for b in at.button if b.label == "Preview augmentation"]) is augmented
    assert {runs.read_config(e.path)["augment"]["rotation"] > 0 for e in entries} == {True, False}


def test_folder_source_shows_what_training_would_see(monkeypatch, app_runs, folder_dataset):
    at = _read_folder(_data_page(monkeypatch, app_runs), folder_dataset)
    assert not at.error and not at.warning
    table = at.table[0].value
    on_disk = _files_on_disk(folder_dataset)
    assert {name: table.loc[name, "total"] for name in on_disk} == on_disk
    assert table.loc["all classes", "total"] == sum(on_disk.values())
    # The split is the one training makes with the default config (its fractions and seed).
    report = _training_report(["data.source=folder", f"data.path={folder_dataset}"])
    _assert_table_is_report(table, report)
    assert set(_image_alts(at)) >= {f"{name} sample 1" for name in on_disk}


def test_csv_source_reads_the_rows(monkeypatch, app_runs, folder_dataset, tmp_path):
    files = sorted(p for p in folder_dataset.rglob("*") if p.is_file())
    csv = tmp_path / "labels.csv"
    rows = [f"{p},{p.parent.name}" for p in files] + ["missing.png,circle"]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    at = _read_folder(_data_page(monkeypatch, app_runs), csv)
    assert not at.error
    report = _training_report(["data.source=csv", f"data.path={csv}"])
    _assert_table_is_report(at.table[0].value, report)
    skipped = _table_in(at, "data-skipped")
    assert list(skipped["reason"]) == ["file not found"]
    assert skipped["file"].iloc[0].endswith("missing.png")


def test_missing_folder_or_bad_csv_is_one_error_line(monkeypatch, app_runs, tmp_path):
    at = _read_folder(_data_page(monkeypatch, app_runs), tmp_path / "nowhere")
    assert [e.value for e in at.error] == [
        f"data.path: {tmp_path / 'nowhere'} not found; expected a folder with one sub-folder "
        "of images per class"
    ]
    assert not at.table and not at.dataframe
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,cat\n")
    at.text_input(key="data_path").input(str(bad)).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"{bad}: unknown column 'file'")
    assert not at.table


def test_a_corrupt_image_is_listed_as_skipped_with_its_reason(
    monkeypatch, app_runs, folder_dataset, tmp_path
):
    data = shutil.copytree(folder_dataset, tmp_path / "shapes")
    (data / "circle" / "broken.png").write_bytes(b"this is not a png at all")
    (data / "circle" / "notes.txt").write_text("not a picture")
    at = _read_folder(_data_page(monkeypatch, app_runs), data)
    skipped = _table_in(at, "data-skipped").to_dict("records")
    assert skipped == [{"file": "circle/broken.png", "reason": "not an image"}]
    ignored = _table_in(at, "data-ignored").to_dict("records")
    assert ignored == [{"file": "circle/notes.txt", "reason": "not an image file extension"}]
    # Training (which decodes every file) reports the same, and counts without the broken file.
    report = _training_report(["data.source=folder", f"data.path={data}"])
    assert report["skipped"] == skipped and report["ignored"] == ignored
    _assert_table_is_report(at.table[0].value, report)
    assert at.table[0].value.loc["circle", "total"] == 12
    sizes = _table_in(at, "data-sizes").set_index("class")
    assert sizes.loc["circle", "unreadable"] == 1 and sizes.loc["circle", "files opened"] == 13
    assert sizes.loc["circle", "modes"] == "RGB 12"


def test_preview_augmentation_shows_the_runs_augmentation(monkeypatch, app_runs: Path):
    (augmented,) = [
        e.path
        for e in catalog.list_runs(app_runs)
        if runs.read_config(e.path)["augment"]["flip"] != "none"
    ]
    at = _data_page(monkeypatch, app_runs, augmented)
    captions = [c.value for c in at.caption]
    assert any(
        c.startswith("Configured: augment.flip=horizontal, augment.rotation=0.1; images at 32×32")
        for c in captions
    ), captions
    assert "augmentation preview" not in _image_alts(at)
    (button,) = [b for b in at.button if b.label == "Preview augmentation"]
    button.click().run()
    assert not at.exception and not at.error
    assert "augmentation preview" in _image_alts(at)


def test_the_data_page_and_its_helpers_import_no_tensorflow(folder_dataset: Path):
    code = f"""
import sys
from imgclf.ui import data_info
from imgclf.ui.pages import data as data_view
listing = data_info.list_source({str(folder_dataset)!r})
report = data_info.training_report(data_info.training_config({str(folder_dataset)!r}, "folder"))
rows = data_info.header_rows(listing)
pictures = data_info.file_samples(listing.root, listing.files["circle"], 3)
assert sum(report["totals"].values()) == len(rows) == 36 and len(pictures) == 3
heavy = [m for m in ("tensorflow", "keras", "matplotlib") if m in sys.modules]
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_a_builtin_source_shows_its_size_and_samples(monkeypatch, tmp_path):
    from imgclf.train import train

    config = load_config(
        None,
        ["name=digits-mlp", "data.source=digits", "data.image_size=[8,8]", "data.channels=1",
         "model.name=mlp", "model.hidden=[16]", "train.epochs=1", "train.export=false",
         "train.diagnostics=false"],
    )  # fmt: skip
    run = train(config, out=tmp_path / "runs" / "digits-mlp", verbose=0)
    at = _data_page(monkeypatch, tmp_path / "runs")
    report = runs.read_json(run / runs.DATA_REPORT)
    _assert_table_is_report(at.table[0].value, report)
    assert any("Every digits image is 8×8 pixels with 1 channel(s)" in m.value for m in at.markdown)
    alts = _image_alts(at)
    assert all(f"{name} sample 1" in alts for name in report["classes"]), alts


def test_a_csv_training_would_refuse_still_shows_why_each_row_was(monkeypatch, app_runs, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nmissing.png,circle\n,circle\nother.png,\n")
    at = _read_folder(_data_page(monkeypatch, app_runs), csv)
    assert not at.exception
    (warning,) = at.warning
    assert warning.value.startswith("Training would stop here:")
    skipped = _table_in(at, "data-skipped").to_dict("records")
    assert [r["reason"] for r in skipped] == ["file not found", "empty path", "empty label"]
    assert skipped[0]["file"] == "labels.csv line 2: missing.png"


def test_an_unreadable_folder_is_listed_with_its_reason(
    monkeypatch, app_runs, folder_dataset, tmp_path
):
    from conftest import refuse_to_read

    data = shutil.copytree(folder_dataset, tmp_path / "shapes")
    (data / "circle" / "from-phone").mkdir()
    shutil.copy(next((data / "circle").glob("*.png")), data / "circle" / "from-phone" / "a.png")
    at = _data_page(monkeypatch, app_runs)
    refuse_to_read(monkeypatch, data / "circle" / "from-phone")
    at = _read_folder(at, data)
    ignored = _table_in(at, "data-ignored").to_dict("records")
    assert ignored == [
        {"file": "circle/from-phone/", "reason": "folder cannot be read (Permission denied)"}
    ]
    refuse_to_read(monkeypatch, data)  # the data folder itself: one error line, no traceback
    at.button(key="data-reread").click().run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"data.path: {data} cannot be read (Permission denied)")


def test_served_beyond_this_machine_the_app_reads_only_the_allowed_folders(
    monkeypatch, folder_dataset: Path, tmp_path: Path
):
    """Served on 0.0.0.0 (every interface), a path typed into the Data page is refused unless
    IMGCLF_DATA_ROOTS names a folder holding it; a link out of an allowed folder is refused
    too (paths are resolved first). On 127.0.0.1 any folder is read."""
    from streamlit import config as st_config

    from imgclf.ui import exposure

    allowed = tmp_path / "allowed"
    shutil.copytree(folder_dataset, allowed / "shapes")
    (allowed / "escape").symlink_to(folder_dataset)
    previous = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        monkeypatch.delenv(exposure.ROOTS_ENV, raising=False)
        at = _read_folder(_data_page(monkeypatch, tmp_path / "runs"), folder_dataset)
        assert "switched off" in at.error[0].value and exposure.ROOTS_ENV in at.error[0].value
        monkeypatch.setenv(exposure.ROOTS_ENV, str(allowed))
        at = _read_folder(_data_page(monkeypatch, tmp_path / "runs"), allowed / "shapes")
        assert not at.error, [e.value for e in at.error]  # read: three classes listed
        assert "3 classes" in " ".join(c.value for c in at.caption)
        at = _read_folder(at, allowed / "escape")  # a link inside leading outside
        assert "outside the folders this app may read" in at.error[0].value
    finally:
        st_config.set_option("server.address", previous)
    assert exposure.is_loopback("127.0.0.1") and exposure.is_loopback("::1")
    assert not exposure.is_loopback("") and not exposure.is_loopback("0.0.0.0")
    monkeypatch.delenv(exposure.ROOTS_ENV)
    assert exposure.allowed_roots("127.0.0.1") is None and exposure.allowed_roots("0.0.0.0") == [
        Path(os.path.realpath(exposure.data_root()))
    ]  # served widely with no roots named: only the dataset builder's own folder


def test_duplicates_are_shown_side_by_side_before_training(monkeypatch, app_runs, tmp_path):
    """A copy of a photo in another class (a conflict) and another copy in its own class: the
    page shows both groups with their pictures, and their files in the skipped table."""
    data = write_folder_dataset(tmp_path / "shapes", per_class=6)
    shutil.copyfile(data / "circle" / "img_00.png", data / "circle" / "again.png")
    shutil.copyfile(data / "circle" / "img_02.png", data / "hstripes" / "odd.png")
    at = _read_folder(_data_page(monkeypatch, app_runs), data)
    assert "Exact duplicates" in [h.value for h in at.subheader]
    alts = _image_alts(at)
    assert {
        "circle/again.png",
        "circle/img_00.png",
        "circle/img_02.png",
        "hstripes/odd.png",
    } <= set(alts)
    skipped = {r["file"]: r["reason"] for r in _table_in(at, "data-skipped").to_dict("records")}
    assert skipped["circle/img_00.png"] == "an exact copy of circle/again.png"  # listed first
    assert skipped["hstripes/odd.png"] == "the same image is filed under circle, hstripes"


def test_the_review_relabels_removes_keeps_and_undoes_on_a_folder(monkeypatch, tmp_path: Path):
    """The Review section on a folder: the audit lists planted wrong labels and a blank frame;
    Relabel moves a file to the suggested class, Remove to the quarantine, Keep hides a finding
    from the next audit, Undo puts a file back byte for byte; nothing is deleted."""
    from imgclf.data import review

    data = write_folder_dataset(tmp_path / "data", per_class=20)
    wrong = []
    for path in sorted((data / "circle").iterdir())[:3]:
        path.rename(data / "vstripes" / f"wrong-{path.name}")
        wrong.append(f"vstripes/wrong-{path.name}")
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(data / "hstripes" / "blank.png")
    before = sorted(p.read_bytes() for p in data.rglob("*") if p.is_file())

    at = _read_folder(_data_page(monkeypatch, tmp_path / "runs"), data)
    at.button(key="review-audit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [m.value for m in at.markdown]
    assert any("labelled vstripes, looks like circle" in t for t in texts), texts
    assert any("hstripes/blank.png: near-constant" in t for t in texts), texts

    # Relabel a planted file to the suggested class (the default choice).
    listed = [r["file"] for r in at.session_state["_review_report"][1]["label_issues"]["examples"]]
    n = min(listed.index(w) for w in wrong)
    at.button(key=f"review-label_issues-{n}-relabel-0").click().run()
    first = review.Review(data).actions[-1]
    assert (first["action"], first["to"].split("/")[0]) == ("relabel", "circle")
    assert first["file"] in wrong and (data / first["to"]).is_file()
    # Undo: back where it was.
    at.button(key="review-undo").click().run()
    assert (data / first["file"]).is_file() and not (data / first["to"]).exists()
    # Remove the blank frame (near-constant images come first): into the quarantine.
    at.button(key="review-outliers-0-remove-0").click().run()
    removed = review.Review(data).actions[-1]
    assert (removed["action"], removed["file"]) == ("remove", "hstripes/blank.png")
    assert (data / review.QUARANTINE / "hstripes/blank.png").is_file()
    # Keep a likely label error: the next audit no longer lists it.
    at.button(key=f"review-label_issues-{n}-keep").click().run()
    kept = review.Review(data).actions[-1]
    assert kept["action"] == "keep" and kept["finding"] == "label_issues"
    at.button(key="review-audit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any(kept["file"] in m.value for m in at.markdown)
    assert sorted(p.read_bytes() for p in data.rglob("*") if p.is_file()
                  and p.name not in (review.LOG, review.LOCK)) == before  # fmt: skip
