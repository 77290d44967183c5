"""`imgclf-lab` in quick mode: each lab's table has its columns, every number is finite, its
picture is written, and the folder is complete (manifest) and refused when changed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf import runs
from imgclf.labs import cli, folder


def _finite(rows):
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)):
                assert math.isfinite(value), (key, row)


@pytest.mark.slow
def test_regions_quick_counts_regions_and_draws_them(tmp_path: Path, monkeypatch):
    from imgclf.training.diagnostics import linear_regions_bound

    out = tmp_path / "labs" / "regions"
    assert cli.main(["regions", "--quick", "--out", str(out)]) == 0
    lab = folder.read_lab(out)  # manifest checked
    rows = lab["rows"]
    assert [r["net"] for r in rows] == ["deep", "wide"]
    _finite(rows)
    for row, widths in zip(rows, ([10] * 4, [40]), strict=True):
        assert row["hidden units"] == 40
        assert row["Montúfar bound"] == linear_regions_bound(widths, 2)
        # A ReLU net with 40 units cuts the square into many pieces, and never more than the
        # grid has cells.
        assert 40 <= row["regions at init"] <= 200 * 200
        assert 40 <= row["regions trained"] <= 200 * 200
    # Zero biases at init: the wide net's 40 boundaries are lines through the origin, 80 wedges.
    assert rows[1]["regions at init"] == 80
    with Image.open(out / "regions.png") as img:
        assert img.size[0] > 500 and img.size[1] > 500
    table = (out / folder.TABLE_CSV).read_text().splitlines()
    assert table[0].startswith("net,hidden layers,hidden units") and len(table) == 3
    # The app's Lessons page lists it: its table and its picture.
    at = _lessons_page(monkeypatch, tmp_path)
    shown = at.table[-1].value
    assert list(shown["net"]) == ["deep", "wide"]
    assert list(shown["regions trained"]) == [str(r["regions trained"]) for r in rows]
    assert any("regions.png" in str(node.proto) for node in _images(at))
    (out / folder.TABLE_CSV).write_text("tampered\n")
    with pytest.raises(runs.IntegrityError):
        folder.read_lab(out)
    at = _lessons_page(monkeypatch, tmp_path)
    assert any(e.value.startswith("`regions` cannot be shown:") for e in at.error)


def _lessons_page(monkeypatch, tmp_path: Path):
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    monkeypatch.setenv(catalog.RUNS_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(folder.LABS_ENV, str(tmp_path / "labs"))
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.sidebar.radio(key="page").set_value("Lessons").run()
    assert not at.exception
    return at


def _images(at):
    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return [n for n in walk(at.main) if getattr(n, "type", "") == "image"]


def test_region_ids_count_the_activation_patterns_of_a_known_net():
    """One hidden layer of 2 units with boundaries x = 0 and y = 0: 4 quadrants, 4 regions."""
    import numpy as np

    from imgclf.labs import regions

    model = regions.build([2], seed=0)
    model.get_layer("hidden1").set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    ids = regions.region_ids(model, regions.grid(20))
    assert ids.max() + 1 == 4
    quadrant = ids.reshape(20, 20)
    assert len({quadrant[0, 0], quadrant[0, -1], quadrant[-1, 0], quadrant[-1, -1]}) == 4


@pytest.mark.slow
def test_double_descent_quick_writes_the_sweep(tmp_path: Path):
    from imgclf.labs import double_descent

    out = tmp_path / "dd"
    assert cli.main(["double-descent", "--quick", "--out", str(out)]) == 0
    lab = folder.read_lab(out)
    rows = lab["rows"]
    _finite(rows)
    assert [r["width"] for r in rows] == double_descent.QUICK_WIDTHS
    assert [r["parameters"] for r in rows] == [
        double_descent.parameters(w) for w in double_descent.QUICK_WIDTHS
    ]
    assert all(0 <= r["train error"] <= 1 and 0 <= r["test error"] <= 1 for r in rows)
    assert lab["interpolation_threshold_parameters"] == 500 * 10 and lab["label_noise"] == 0.1
    assert (out / "double_descent.png").stat().st_size > 10_000


def test_label_noise_changes_exactly_that_share_to_other_classes():
    import numpy as np

    from imgclf.labs import double_descent

    y = np.repeat(np.arange(10), 100)
    noisy = double_descent.with_label_noise(y, 0.2, seed=0)
    assert (noisy != y).sum() == 200 and noisy.min() >= 0 and noisy.max() <= 9


def test_an_existing_out_folder_is_refused_and_kept(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("x")
    assert cli.main(["regions", "--quick", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "keep.txt").read_text() == "x"


def _fake_keras_mnist(tmp_path: Path, monkeypatch, copies: np.ndarray) -> None:
    """Keras' MNIST loader fed a local file in its cache's format: 60 random digits plus
    `copies` (uint8 [N, 28, 28]), which stand for the mnist5k digits MNIST also holds."""
    import keras.src.datasets.mnist as keras_mnist

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), copies])
    y = np.arange(len(x)) % 10
    np.savez(tmp_path / "mnist.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    monkeypatch.setattr(keras_mnist, "get_file", lambda *a, **k: str(tmp_path / "mnist.npz"))


@pytest.mark.slow
def test_lecun1989_quick_has_one_row_per_cumulative_change_then_the_data_rows(
    tmp_path: Path, monkeypatch
):
    from imgclf.labs import lecun1989

    ours = lecun1989._pool("mnist5k").images[..., 0]  # MNIST holds every mnist5k digit
    _fake_keras_mnist(tmp_path, monkeypatch, ours)
    out = tmp_path / "lecun"
    assert cli.main(["lecun1989", "--quick", "--more-data", "--out", str(out)]) == 0
    lab = folder.read_lab(out)
    rows = lab["rows"]
    _finite(rows)
    ablation = [r.label for r in lecun1989.recipes(1, 2)]
    assert [r["recipe"] for r in rows] == [
        *ablation,
        "1989, half the training images",
        "all changes, half the training images",
        "1989 + MNIST's digits (more data)",
        "all changes + MNIST's digits (more data)",
    ]
    assert rows[0]["recipe"].startswith("1989") and len(rows) == 11
    assert all(0 <= r["test error %"] <= 100 and 0 <= r["train error %"] <= 100 for r in rows)
    n = rows[0]["training images"]
    assert {r["training images"] for r in rows[:7]} == {n}
    # Half of each class (rounded down, 10 classes): half of all, or up to 5 fewer.
    assert rows[7]["training images"] == rows[8]["training images"]
    assert n // 2 - 5 <= rows[7]["training images"] <= n // 2
    # 60 new digits added; the ones that are mnist5k's own are left out (no test image leaks).
    assert rows[9]["training images"] == rows[10]["training images"] == n + 60
    assert f"60 added, {len(ours)} left out as copies" in lab["more_data"]
    assert rows[9]["epochs"] == rows[0]["epochs"] and rows[10]["epochs"] == rows[6]["epochs"]
    assert "mnist5k resized to 16x16" in lab["data"] and lab["batch"] == lecun1989.BATCH
    assert (out / "lecun1989.png").stat().st_size > 10_000


def test_more_data_stops_when_mnist5k_cannot_be_found_in_mnist(tmp_path, monkeypatch, capsys):
    """Copies are recognised pixel for pixel; an MNIST that lacks some of mnist5k's digits
    could hide copies of test images, so the lab refuses it before any training."""
    from imgclf.labs import lecun1989

    ours = lecun1989._pool("mnist5k").images[:7, ..., 0]
    _fake_keras_mnist(tmp_path, monkeypatch, ours)
    out = tmp_path / "lecun"
    assert cli.main(["lecun1989", "--quick", "--more-data", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: only 7 of mnist5k's") and not out.exists()


def test_more_data_offline_is_one_line_before_any_training(tmp_path: Path, monkeypatch, capsys):
    import keras.src.datasets.mnist as keras_mnist

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras_mnist, "get_file", offline)
    out = tmp_path / "lecun"
    assert cli.main(["lecun1989", "--quick", "--more-data", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: could not load Keras dataset 'mnist'") and not out.exists()


def test_half_keeps_half_of_every_class_and_the_test_images():
    from imgclf.labs import lecun1989

    y = np.repeat(np.arange(10), 11)
    data = (np.arange(110.0), y, np.arange(5.0), np.arange(5))
    x2, y2, xt, yt = lecun1989.half(data, seed=0)
    assert np.bincount(y2, minlength=10).tolist() == [5] * 10
    assert set(x2) < set(data[0]) and xt is data[2] and yt is data[3]


def test_the_1989_net_has_the_papers_shapes():
    from imgclf.labs import lecun1989

    model = lecun1989.build(lecun1989.recipes()[0], seed=0)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["H1"] == (8, 8, 12) and shapes["H2"] == (4, 4, 12)
    assert shapes["H3"] == (30,) and shapes["out"] == (10,)
    x = lecun1989.digits16(seed=0, limit=100)[0]
    assert x.shape[1:] == (16, 16, 1) and x.min() >= -1.0 and x.max() <= 1.0
    params = {layer.name: layer.count_params() for layer in model.layers}
    assert (params["H1"], params["H2"], params["H3"], params["out"]) == (312, 3612, 5790, 310)
    h1 = model.get_layer("H1").get_weights()[0]
    assert abs(h1).max() <= 2.4 / 5  # uniform in +-2.4 / sqrt(fan-in 25)
    import keras

    scaled_tanh = lecun1989._activation("scaled_tanh")
    assert float(keras.ops.convert_to_numpy(scaled_tanh(keras.ops.ones(1)))[0]) == pytest.approx(
        1.0, abs=1e-4
    )  # LeCun's choice: f(1) = 1


def test_the_peak_is_a_bump_near_the_threshold_not_the_smallest_net():
    from imgclf.labs.double_descent import peak_near

    rows = [{"width": w, "parameters": p, "test error": e} for w, p, e in [
        (1, 805, 0.80), (10, 7960, 0.20), (40, 31810, 0.35), (60, 47710, 0.30),
        (200, 159010, 0.12), (800, 636010, 0.10)]]  # fmt: skip
    assert peak_near(rows, 40_000) == {"width": 40, "parameters": 31810, "test error": 0.35}
    flat = [dict(r, **{"test error": 0.9 - 0.1 * i}) for i, r in enumerate(rows)]
    assert peak_near(flat, 40_000) is None  # monotone: no peak reported


@pytest.mark.parametrize(
    "args",
    [["regions", "--seed", "-1"], ["regions", "--label-noise", "0.1"],
     ["double-descent", "--label-noise", "0.95"], ["regions", "--more-data"]],
)  # fmt: skip
def test_bad_arguments_are_one_line_before_any_training(args, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
