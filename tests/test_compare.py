"""compare: two real tiny runs that differ in one option, an interrupted run, bad paths."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import built_once, tiny_overrides
from PIL import Image

from imgclf.compare import compare as compare_runs
from imgclf.compare import config_differences, load_run, main


@pytest.fixture(scope="session")
def two_runs(folder_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """sigmoid-run and relu-run: the same tiny MLP recipe, only model.activation differs
    (trained once for both workers)."""
    from imgclf.config import load_config
    from imgclf.train import train

    def build(root: Path) -> None:
        for act in ("sigmoid", "relu"):
            overrides = [
                *tiny_overrides(folder_dataset),
                "model.name=mlp",
                f"model.activation={act}",
            ]
            train(load_config(None, overrides), out=root / f"{act}-run", verbose=0)

    root = built_once(tmp_path_factory, "compare", build)
    return [root / "sigmoid-run", root / "relu-run"]


@pytest.mark.slow
def test_compare_real_runs_finds_the_one_difference(two_runs: list[Path]):
    result = compare_runs(two_runs)
    assert result["differences"] == ["model.activation"]
    assert [r["run"] for r in result["rows"]] == ["sigmoid-run", "relu-run"]
    assert [r["model.activation"] for r in result["rows"]] == ["sigmoid", "relu"]
    for path, row in zip(two_runs, result["rows"], strict=True):
        metrics = json.loads((path / "metrics.json").read_text())
        with (path / "history.csv").open() as fh:
            history = list(csv.DictReader(fh))
        assert row["test_accuracy"] == metrics["test"]["accuracy"]
        assert row["test_loss"] == metrics["test"]["loss"]
        assert row["epochs"] == len(history) == metrics["epochs_run"] == 2
        assert row["best_val_accuracy"] == max(float(h["val_accuracy"]) for h in history)
        assert row["seconds"] == pytest.approx(sum(float(h["seconds"]) for h in history))


@pytest.mark.slow
def test_load_run_summary(two_runs: list[Path]):
    run = load_run(two_runs[1])
    assert run.name == "relu-run" and run.config["model"]["activation"] == "relu"
    assert run.flat_config["model.hidden"] == [16]  # lists stay lists
    assert run.flat_config["train.early_stopping.monitor"] == "val_loss"
    assert run.test is not None and run.best_val_loss == min(r.val_loss for r in run.history)


@pytest.mark.slow
def test_cli_out_writes_markdown_csv_and_png(two_runs: list[Path], tmp_path: Path, capsys):
    out = tmp_path / "cmp"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for name in ("comparison.md", "comparison.csv", "curves.png"):
        assert (out / name).is_file() and str(out / name) in stdout
    assert "model.activation" in stdout.splitlines()[0] and "sigmoid" in stdout
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 500
    assert "| sigmoid-run | sigmoid |" in (out / "comparison.md").read_text()
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_cli_formats_parse(two_runs: list[Path], fmt: str, capsys):
    assert main([*map(str, two_runs), "--format", fmt]) == 0
    text = capsys.readouterr().out
    if fmt == "json":
        rows = json.loads(text)["rows"]
        assert [r["model.activation"] for r in rows] == ["sigmoid", "relu"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["model.activation"] for r in rows] == ["sigmoid", "relu"]
        assert float(rows[0]["test_accuracy"]) == compare_runs(two_runs)["rows"][0]["test_accuracy"]
    else:
        lines = text.splitlines()
        assert lines[0].startswith("| run | model.activation |") and len(lines) == 4
        assert all(line.count("|") == lines[0].count("|") for line in lines)


@pytest.mark.slow
def test_interrupted_run_without_metrics_still_shown(two_runs: list[Path], tmp_path: Path, capsys):
    broken = tmp_path / "interrupted"
    shutil.copytree(two_runs[0], broken)
    (broken / "metrics.json").unlink()
    (broken / "model.keras").unlink()
    result = compare_runs([two_runs[1], broken])
    row = result["rows"][1]
    assert row["run"] == "interrupted" and row["test_accuracy"] is None and row["epochs"] == 2
    assert main([str(two_runs[1]), str(broken)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("interrupted") and "—" in line


def test_tolerates_odd_history_columns(tmp_path: Path):
    """A future (or older) history.csv: extra columns, no val_accuracy, a ragged row."""
    run = tmp_path / "odd"
    run.mkdir()
    (run / "history.csv").write_text("epoch,loss,val_loss,grad_norm\n1,0.9,1.0,3\n2,0.5,0.7,2,9\n")
    summary = load_run(run)
    assert summary.config == {} and summary.epochs == 2 and summary.seconds is None
    assert summary.best_val_accuracy is None and summary.best_val_loss == 0.7
    # Typed rows: the unknown column is ignored, the known ones are read; no phase means train.
    assert (summary.history[1].loss, summary.history[1].phase) == (0.5, "train")
    assert not hasattr(summary.history[1], "grad_norm")


def test_config_differences_in_config_order(tmp_path: Path):
    configs = {
        "a": "name: a\nseed: 0\nmodel: {hidden: [16], dropout: 0.1, activation: relu}\n",
        "b": "name: b\nseed: 1\nmodel: {hidden: [16, 8], dropout: 0.1, activation: relu}\n",
        "c": "name: c\nseed: 0\nmodel: {hidden: [16], dropout: 0.1, activation: relu, l2: 0}\n",
    }
    loaded = []
    for name, text in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(text)
        loaded.append(load_run(tmp_path / name))
    assert config_differences(loaded) == ["seed", "model.hidden", "model.l2"]
    assert config_differences(loaded[:1]) == []


@pytest.mark.slow
def test_non_run_path_is_one_line_exit_2(two_runs: list[Path], tmp_path: Path, capsys):
    for bad in (tmp_path / "missing", tmp_path):
        assert main([str(two_runs[0]), str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err


def test_module_does_not_import_tensorflow():
    code = "import imgclf.compare, sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False False"
