"""`imgclf-audit` (`imgclf.audit`): a dataset's problems before training, without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_command, write_folder_dataset


def test_audit_reports_copies_conflicts_small_classes_and_case_twins(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=6)
    shutil.copyfile(data / "circle" / "img_00.png", data / "circle" / "again.png")
    shutil.copyfile(data / "circle" / "img_02.png", data / "hstripes" / "odd.png")
    (data / "Vstripes").mkdir()
    shutil.copyfile(data / "vstripes" / "img_01.JPG", data / "Vstripes" / "one.jpg")
    (data / "circle" / "broken.png").write_bytes(b"not an image")

    done = run_command("imgclf-audit", data, "--format", "json")
    assert done.returncode == 1, done.stderr  # something was found
    report = json.loads(done.stdout)
    assert report["classes"] == {"Vstripes": 0, "circle": 5, "hstripes": 6, "vstripes": 5}
    assert report["too_small"] == {"classes": ["Vstripes"], "need": 4}
    assert report["unreadable"] == [{"file": "circle/broken.png", "reason": "not an image"}]
    found = report["duplicates"]
    assert (found["groups"], found["copies_left_out"], found["conflicting_groups"]) == (3, 1, 2)
    assert report["similar_class_names"] == [["Vstripes", "vstripes"]]

    table = run_command("imgclf-audit", data)
    assert table.returncode == 1
    assert "  circle/again.png = circle/img_00.png  (circle)" in table.stdout
    assert table.stdout.rstrip().endswith("6 finding(s)")


def test_audit_of_a_clean_dataset_exits_0_and_of_a_missing_one_2(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=4)
    clean = run_command("imgclf-audit", data)
    assert clean.returncode == 0 and clean.stdout.rstrip().endswith("nothing found")
    missing = run_command("imgclf-audit", tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith(f"error: data.path: {tmp_path / 'nowhere'} not found")


def test_audit_never_imports_tensorflow(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=4)
    code = (
        "import sys; from imgclf.audit import main; code = main([sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_audit_takes_overrides_alone_and_a_folder_whose_name_holds_an_equals_sign(tmp_path):
    data = write_folder_dataset(tmp_path / "a=b", per_class=4)
    assert run_command("imgclf-audit", data).returncode == 0
    alone = run_command("imgclf-audit", "data.source=folder", f"data.path={data}")
    assert alone.returncode == 0 and alone.stdout.rstrip().endswith("nothing found")


@pytest.mark.parametrize("features", ["pixels", "imagenet"])
def test_planted_label_errors_are_flagged_first(tmp_path: Path, features: str):
    """Three circles filed under vstripes: confident learning on out-of-fold probabilities
    (imgclf.data.label_issues) flags them, most suspect first, suggesting circle; from 16×16
    pixels, and from frozen ImageNet features of Lite0 (`--features imagenet`)."""
    data = write_folder_dataset(tmp_path / "data", per_class=20)
    moved = []
    for path in sorted((data / "circle").iterdir())[:3]:
        target = data / "vstripes" / f"wrong-{path.name}"
        path.rename(target)
        moved.append(target.relative_to(data).as_posix())
    done = run_command("imgclf-audit", data, "--format", "json", "--features", features)
    report = json.loads(done.stdout)
    assert ("ImageNet" in report["label_issues"]["method"]) == (features == "imagenet")
    suspects = report["label_issues"]
    top = suspects["examples"][: len(moved)]
    assert {row["file"] for row in top} == set(moved), suspects
    assert {row["suggested"] for row in top} == {"circle"}
    assert suspects["flagged"] <= 6  # the 57 others are not called wrong wholesale
