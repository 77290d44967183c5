"""`imgclf-tune` (imgclf.tuning): the space file is checked up front, a search killed in the
middle of a trial resumes to its number of trials, and its best.yaml trains the best trial again
with the same validation figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from imgclf import runs
from imgclf.config import load_config
from imgclf.infra.errors import ConfigError
from imgclf.train import train
from imgclf.tuning import cli
from imgclf.tuning.space import check_space, dimension, read_space

SPACE = """\
train.learning_rate: {log: [1.0e-3, 1.0e-1]}
model.dropout: {range: [0.0, 0.5]}
model.hidden: [[8], [16]]
"""


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"log": [1e-4, 1e-2]}, "float"),
        ({"range": [1, 4]}, "int"),
        ([[96, 96], [128, 128]], "choice"),
    ],
)
def test_space_entries(spec, kind) -> None:
    dim = dimension("k", spec)
    assert dim.kind == kind
    if kind == "choice":
        assert dim.values == ("[96, 96]", "[128, 128]")  # YAML text an override parses back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.learning_rate: {log: [0, 1]}", "log needs bounds above 0"),
        ("model.dropout: {range: [0.5, 0.1]}", "low < high"),
        ("model.dropout: 0.3", "expected a list of choices"),
        ("data.val_fraction: [0.1, 0.2]", "changes the validation split"),
        ("model.name: [cnn, cnn]", "listed twice"),
        ("model.dropout: {range: [0.0, 0.5], step: 0}", "step must be above 0"),
        ("model.dropout: {range: [0.0, 0.5], step: 0.7}", "at most 0.5"),
    ],
)
def test_malformed_spaces_are_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_space(tmp_path / "s.yaml")


def test_a_value_the_config_refuses_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("model.dropout: {range: [0.0, 1.5]}\nmodel.name: [cnn, vgg]")
    dims = read_space(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match=r"space: model.dropout=1.5: .*dropout"):
        check_space(dims, None, [])


def test_log_ranges_of_ints_and_bounds_written_1e_5_make_an_oracle(tmp_path: Path) -> None:
    from imgclf.tuning.search import make_oracle

    (tmp_path / "s.yaml").write_text(
        "train.batch_size: {log: [16, 256]}\ntrain.learning_rate: {log: [1e-5, 1e-1]}"
    )
    dims = read_space(tmp_path / "s.yaml")
    assert [d.kind for d in dims] == ["int", "float"] and dims[1].low == pytest.approx(1e-5)
    oracle = make_oracle("random", dims, "val_accuracy", 2, load_config(None, []))
    oracle._set_project_dir(str(tmp_path), "p")
    values = oracle.create_trial("t").hyperparameters.values
    assert isinstance(values["train.batch_size"], int) and 16 <= values["train.batch_size"] <= 256


def test_an_int_key_given_a_float_range_is_refused_before_searching(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("train.batch_size: {range: [16.0, 256.0]}")
    with pytest.raises(ConfigError, match=r"space: train\.batch_size="):
        check_space(read_space(tmp_path / "s.yaml"), None, [])


def test_a_search_folder_of_another_search_is_refused(folder_dataset: Path, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SPACE)
    (tmp_path / "tiny-search").mkdir()
    (tmp_path / "tiny-search" / "search.json").write_text('{"fingerprint": "other", "trials": []}')
    argv = ["--space", str(tmp_path / "s.yaml"), "--runs-root", str(tmp_path)]
    assert cli.main([*argv, *tiny_overrides(folder_dataset)]) == 2
    assert "holds a search of another space" in capsys.readouterr().err


def test_without_keras_tuner_the_error_names_the_install(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    (tmp_path / "s.yaml").write_text(SPACE)
    assert cli.main(["--space", str(tmp_path / "s.yaml"), "--runs-root", str(tmp_path)]) == 2
    assert "pip install 'imgclf[tune]'" in capsys.readouterr().err


def _tune(folder_dataset: Path, root: Path, space: Path, fault: str | None = None):
    env = {**os.environ, "IMGCLF_FAULT": fault} if fault else None
    command = [
        sys.executable, "-m", "imgclf.tuning", "--space", str(space), "--trials", "3",
        "--runs-root", str(root), *tiny_overrides(folder_dataset), "train.epochs=2",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_a_killed_search_resumes_and_its_best_config_trains_the_same_model(
    folder_dataset: Path, tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    root = tmp_path / "runs"
    # SIGKILL after the third epoch: in the second trial (2 epochs each), mid-search
    killed = _tune(folder_dataset, root, space, fault="epoch:3")
    assert killed.returncode == -9, killed.stderr
    search = root / "tiny-search"
    assert len(runs.read_json(search / "search.json")["trials"]) == 1
    done = _tune(folder_dataset, root, space)
    assert done.returncode == 0, done.stderr
    trials = runs.read_json(search / "search.json")["trials"]
    assert sorted(t["trial"] for t in trials) == ["0", "1", "2"]
    for t in trials:  # every trial is a complete run with the values it records
        config = load_config(Path(t["run"]) / runs.CONFIG)
        assert runs.read_state(t["run"]).complete
        assert config.train.learning_rate == pytest.approx(t["values"]["train.learning_rate"])
    best = max(trials, key=lambda t: (t["val_accuracy"], -int(t["trial"])))
    assert f"trial {best['trial']}" in done.stdout
    again = train(load_config(search / "best.yaml"), out=tmp_path / "again", verbose=0)
    figures = json.loads((again / runs.METRICS).read_text())["validation"]
    assert figures["accuracy"] == best["val_accuracy"]
    assert figures["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
