"""Fixing what the audit found (`imgclf.data.review`): relabel, remove to quarantine and keep,
atomic moves, an undo that restores exactly, and nothing ever deleted; the per-image checks
(`imgclf.data.suspects`: label errors, outliers) at training time."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command, write_folder_dataset

from imgclf.config import load_config
from imgclf.data import review, suspects
from imgclf.data.split import load_data, load_pool
from imgclf.infra.errors import UserError


def _files(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included, the review log left out) -> SHA-256."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (review.LOG, review.LOCK)
    }


def test_relabel_remove_and_undo_move_files_atomically_and_never_delete(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=3)
    before = _files(data)
    desk = review.Review(data)

    moved = desk.relabel("circle/img_01.JPG", "Diagonal stripes")  # a new, sanitised class
    assert moved["to"] == "Diagonal_stripes/img_01.JPG"
    assert not (data / "circle/img_01.JPG").exists()
    assert _files(data)["Diagonal_stripes/img_01.JPG"] == before["circle/img_01.JPG"]
    removed = desk.remove("vstripes/img_01.JPG")
    assert removed["to"] == f"{review.QUARANTINE}/vstripes/img_01.JPG"
    taken = desk.relabel("vstripes/img_02.png", "hstripes")  # the name is taken there
    assert taken["to"] == "hstripes/img_02-2.png"
    # Nothing deleted: the same bytes, each under one name.
    assert sorted(_files(data).values()) == sorted(before.values())

    # The log says what happened, and a fresh reader sees it.
    logged = json.loads((data / review.LOG).read_text())["actions"]
    assert [a["action"] for a in logged] == ["relabel", "remove", "relabel"]
    assert all("pending" not in a for a in logged)

    fresh = review.Review(data)
    for expected in ("relabel", "remove", "relabel"):  # last first
        assert fresh.undo()["action"] == expected
    assert fresh.undo() is None
    assert _files(data) == before  # every path and every byte as it was


def test_the_folder_listing_no_longer_sees_a_quarantined_image(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=5)
    review.Review(data).remove("circle/img_03.JPG")
    report = json.loads(run_command("imgclf-audit", data, "--format", "json").stdout)
    assert report["classes"]["circle"] == 4 and report["images"] == 14


def test_a_move_never_replaces_a_file(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=2)
    with pytest.raises(FileExistsError):
        review.move(data / "circle/img_00.png", data / "circle/img_01.JPG")
    assert (data / "circle/img_00.png").exists()
    # Relabelling into a class that has a file of the same name keeps both.
    action = review.Review(data).relabel("circle/img_00.png", "hstripes")
    assert action["to"] == "hstripes/img_00-2.png"
    assert (data / "hstripes/img_00.png").exists()


def test_undo_refuses_a_file_changed_since_and_paths_outside_are_refused(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=2)
    desk = review.Review(data)
    moved = data / desk.relabel("circle/img_00.png", "hstripes")["to"]
    moved.write_bytes(b"edited since")
    with pytest.raises(UserError, match="no longer the file that was moved"):
        desk.undo()
    assert moved.read_bytes() == b"edited since"  # left alone
    with pytest.raises(UserError, match="outside the dataset"):
        desk.remove("../elsewhere.png")
    with pytest.raises(UserError, match="not in"):
        desk.remove("circle/gone.png")


def test_an_interrupted_action_is_settled_by_where_its_file_is(tmp_path: Path):
    """The log is written with the action pending before the move: on the next read a pending
    move whose file is still in place is dropped, one whose file arrived is complete."""
    data = write_folder_dataset(tmp_path / "data", per_class=2)
    desk = review.Review(data)
    desk.remove("circle/img_00.png")
    log = json.loads((data / review.LOG).read_text())
    log["actions"][0]["pending"] = True  # interrupted after the move
    never = dict(log["actions"][0], id=2, file="circle/img_01.JPG", pending=True)
    never["to"] = f"{review.QUARANTINE}/circle/img_01.JPG"  # interrupted before its move
    log["actions"].append(never)
    (data / review.LOG).write_text(json.dumps(log))

    settled = review.Review(data).actions
    assert [(a["file"], "pending" in a) for a in settled] == [("circle/img_00.png", False)]
    assert (data / "circle/img_01.JPG").exists()


def test_a_kept_finding_is_not_reported_again_until_undone(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=20)
    wrong = []
    for path in sorted((data / "circle").iterdir())[:3]:
        path.rename(data / "vstripes" / f"wrong-{path.name}")
        wrong.append(f"vstripes/wrong-{path.name}")

    def flagged() -> set[str]:
        report = json.loads(run_command("imgclf-audit", data, "--format", "json").stdout)
        return {row["file"] for row in report["label_issues"]["examples"]}

    assert set(wrong) <= flagged()
    desk = review.Review(data)
    desk.keep(wrong[0], "label_issues")
    os.rename(data / wrong[0], data / "vstripes" / "renamed.png")  # kept by content, not name
    assert not ({"vstripes/renamed.png", wrong[0]} & flagged())
    assert set(wrong[1:]) <= flagged()
    desk.undo()
    assert "vstripes/renamed.png" in flagged()


def test_outliers_are_blank_frames_and_images_of_another_kind():
    """On real digits (scikit-learn's, built in): 8 inverted digits and 2 blank frames planted
    among 1,797 are flagged, and few others are."""
    pool = load_pool(load_config(None, ["data.source=digits"]).data)
    rng = np.random.default_rng(0)
    planted = rng.permutation(len(pool.labels))[:10]
    pool.images[planted[:8]] = 255 - pool.images[planted[:8]]
    pool.images[planted[8:]] = 0
    found = suspects.check(pool)["outliers"]
    suspects_found = {int(row["file"].split()[-1]): row["why"] for row in found["examples"]}
    assert found["near_constant"] == 2
    assert all(suspects_found.get(int(i)) == "near-constant" for i in planted[8:])
    assert sum(suspects_found.get(int(i)) == "unlike its class" for i in planted[:8]) >= 7
    assert found["flagged"] <= 20, found


def test_training_reports_label_errors_of_the_training_split(monkeypatch):
    """The per-image checks run on the training split before fitting (data_report.json): 30
    flipped labels among scikit-learn's 1,797 real digits are mostly what it names;
    `data.audit=off` turns the checks off (and `false`, as YAML writes a switch)."""
    from imgclf.data import split

    real = split.load_pool
    flipped = np.random.default_rng(0).permutation(1797)[:30]

    def noisy(cfg):
        pool = real(cfg)
        pool.labels[flipped] = (pool.labels[flipped] + 3) % 10
        return pool

    monkeypatch.setattr(split, "load_pool", noisy)
    splits = load_data(load_config(None, ["data.source=digits", "data.image_size=[8,8]"]))
    named = {int(row["file"].split()[-1]) for row in splits.report["label_issues"]["examples"]}
    report = splits.report["label_issues"]
    assert report["flagged"] >= 10 and len(named) == min(report["flagged"], 20)
    assert len(named & set(flipped.tolist())) >= 0.8 * len(named), report
    assert "flagged" in splits.report["outliers"]
    line = suspects.describe(splits.report, "\ndata: ")  # the start-up line, the model card
    assert f"Likely label errors: {report['flagged']} training image(s)" in line
    for off in ("off", "false"):
        report = load_data(load_config(None, ["data.source=digits", f"data.audit={off}"])).report
        assert "label_issues" not in report and "outliers" not in report


def test_a_log_that_names_a_path_outside_the_dataset_is_refused(tmp_path: Path):
    """A dataset may come with its own review log: one whose undo would move a file from or to
    outside the dataset is refused whole, and nothing moves."""
    data = write_folder_dataset(tmp_path / "data", per_class=2)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"mine")
    entry = {"id": 1, "action": "remove", "file": "../outside.png", "to": "circle/img_00.png",
             "finding": None, "sha256": review.sha256(data / "circle/img_00.png"),
             "at": "", "undone": False}  # fmt: skip
    (data / review.LOG).write_text(json.dumps({"version": 1, "actions": [entry]}))
    with pytest.raises(UserError, match="outside the dataset"):
        review.Review(data).undo()
    assert outside.read_bytes() == b"mine" and (data / "circle/img_00.png").exists()
    assert review.kept_in(data) is None  # the audit then keeps nothing, and still runs


def test_a_move_stopped_between_its_link_and_its_unlink_is_finished(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=2)
    desk = review.Review(data)
    desk.remove("circle/img_00.png")
    log = json.loads((data / review.LOG).read_text())
    log["actions"][0]["pending"] = True
    (data / review.LOG).write_text(json.dumps(log))
    os.link(data / review.QUARANTINE / "circle/img_00.png", data / "circle/img_00.png")
    (settled,) = review.Review(data).actions
    assert settled["action"] == "remove" and not (data / "circle/img_00.png").exists()


def test_relabel_keeps_the_split_and_sub_folder_and_undo_restores_an_emptied_class(tmp_path):
    data = tmp_path / "data"
    for part, n in (("train", 3), ("test", 2)):
        write_folder_dataset(data / part, per_class=n, seed=len(part))
    (data / "train/circle/sub").mkdir()
    os.rename(data / "train/circle/img_02.png", data / "train/circle/sub/x.png")
    desk = review.Review(data)
    assert desk.relabel("train/circle/sub/x.png", "vstripes")["to"] == "train/vstripes/sub/x.png"
    assert desk.relabel("test/circle/img_00.png", "hstripes")["to"] == "test/hstripes/img_00-2.png"
    desk.relabel("test/circle/img_01.JPG", "hstripes")
    assert not (data / "test/circle").exists()  # emptied: an empty class would stop the listing
    for _ in range(3):
        desk.undo()
    assert (data / "test/circle/img_01.JPG").is_file() and (
        data / "train/circle/sub/x.png"
    ).exists()
    assert not (data / "train/vstripes/sub").exists()


def test_a_symbolic_link_is_refused_and_two_reviewers_both_land_in_the_log(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=3)
    (data / "circle/link.png").symlink_to(data / "hstripes/img_00.png")
    with pytest.raises(UserError, match="symbolic link"):
        review.Review(data).relabel("circle/link.png", "vstripes")
    first, second = review.Review(data), review.Review(data)  # two browser tabs
    first.remove("circle/img_00.png")
    second.remove("circle/img_01.JPG")
    assert [a["file"] for a in review.Review(data).actions] == [
        "circle/img_00.png", "circle/img_01.JPG",
    ]  # fmt: skip
