"""Diagnostics: the Montúfar bound, gradient norms that show vanishing gradients, dead ReLUs,
and a real fit that writes diagnostics.json and its plots into the run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from imgclf.training.diagnostics import (
    DiagnosticsCallback,
    fixed_batch,
    linear_regions_bound,
    make_diagnostics,
)
from imgclf.training.diagnostics_cost import plan

DEEP = "[32,32,32,32,32,32,32,32,32,32]"


def _strict_json(path: Path) -> dict:
    """Parse like a strict JSON reader would: NaN / Infinity are errors."""

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8×8 digits as raw pixels 0..255, [N, 8, 8, 1] float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images * 255.0 / 16.0).astype("float32")[..., None]
    return images, data.target.astype("int64")


def _build(overrides: list[str], images: np.ndarray, seed: int = 0):
    import keras

    from imgclf.config import load_config
    from imgclf.models import build_model

    keras.utils.set_random_seed(seed)
    config = load_config(None, ["data.source=digits", "data.image_size=[8,8]", *overrides])
    return build_model(config, 10, images)


def _mlp(hidden: str, activation: str, initializer: str, images: np.ndarray, **extra: str):
    overrides = [
        "model.name=mlp",
        f"model.hidden={hidden}",
        f"model.activation={activation}",
        f"model.initializer={initializer}",
        "model.batch_norm=false",
        "model.dropout=0",
        *(f"model.{k}={v}" for k, v in extra.items()),
    ]
    return _build(overrides, images)


# -- Montúfar et al. (2014) ------------------------------------------------------------------


def test_linear_regions_course_examples() -> None:
    assert linear_regions_bound([40], 2) == 821  # 1 + 40 + C(40, 2)
    assert linear_regions_bound([10, 10, 10, 10], 2) == 875_000  # (10//2)^(2·3) · 56


def test_linear_regions_general_widths() -> None:
    # floor(4/2)^2 · floor(6/2)^2 · (C(3,0) + C(3,1) + C(3,2)) = 4 · 9 · 7
    assert linear_regions_bound([4, 6, 3], 2) == 252
    # Only the last layer's width enters the sum; one layer on D inputs needs no width >= D.
    assert linear_regions_bound([3], 5) == 2**3
    assert linear_regions_bound([], 7) == 1  # no hidden layer: one linear map, one region
    assert linear_regions_bound([1, 40], 2) == 0  # width < D: the floor is 0, bound says nothing
    # Exact integers, far beyond float precision: 2^64 folds × 2^64 regions.
    assert linear_regions_bound([128, 64], 64) == 2**128
    with pytest.raises(ValueError, match="n_inputs"):
        linear_regions_bound([4], 0)


# -- vanishing gradients (the acceptance test) ----------------------------------------


def _first_last_ratio(model, images: np.ndarray, labels: np.ndarray, run_dir: Path) -> float:
    """(last hidden layer's) / (first hidden layer's) gradient norm at epoch 0."""
    cb = make_diagnostics(run_dir, images, labels)
    cb.set_model(model)
    entry = cb.record()
    grads = entry["grad_norm"]
    assert grads is not None
    assert set(grads) == {*(f"dense{i}" for i in range(1, 11)), "probabilities"}
    first, last = grads["dense1"], grads["dense10"]
    return math.inf if first == 0 else last / first


def test_sigmoid_small_init_vanishes_relu_he_does_not(digits, tmp_path: Path) -> None:
    """A 10-layer sigmoid MLP with N(0, 0.01²) weights: the first hidden layer's gradient norm is
    over 100× below the last hidden layer's (dense10; the output layer is excluded because its
    width and initialiser differ). ReLU with He-normal keeps the ratio under 100."""
    images, labels = digits[0][:64], digits[1][:64]
    sigmoid = _mlp(DEEP, "sigmoid", "normal_small", images)
    relu = _mlp(DEEP, "relu", "he_normal", images)
    assert _first_last_ratio(sigmoid, images, labels, tmp_path / "sigmoid") >= 100
    assert _first_last_ratio(relu, images, labels, tmp_path / "relu") < 100


def test_batch_norm_restores_the_gradient_and_recording_leaves_the_model_alone(
    digits, tmp_path: Path
) -> None:
    """Batch-norm's effect is visible (gradients are taken in training mode, with batch
    statistics), and taking them does not move batch-norm's moving statistics."""
    images, labels = digits[0][:64], digits[1][:64]
    plain = _mlp(DEEP, "sigmoid", "glorot_uniform", images)
    with_bn = _mlp(DEEP, "sigmoid", "glorot_uniform", images, batch_norm="true")
    before = [np.array(v) for v in with_bn.non_trainable_variables]
    ratio_plain = _first_last_ratio(plain, images, labels, tmp_path / "plain")
    ratio_bn = _first_last_ratio(with_bn, images, labels, tmp_path / "bn")
    assert ratio_bn * 100 < ratio_plain
    for old, var in zip(before, with_bn.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(old, np.array(var))


# -- dead units -------------------------------------------------------------------------------


def test_dead_relu_unit_is_counted(digits, tmp_path: Path) -> None:
    """dense1: unit 0 always negative before the ReLU (dead), unit 1 positive on some images
    only (alive); dense2: every pre-activation >= 1 (none dead)."""
    images, labels = digits[0][:64], digits[1][:64]
    model = _mlp("[8,8]", "relu", "he_normal", images)
    dense1, dense2 = model.get_layer("dense1"), model.get_layer("dense2")
    kernel, bias = (np.array(w) for w in dense1.get_weights())
    kernel[:, 0], bias[0] = 0.0, -1.0
    pixel = 36  # a central pixel: bright on some digits, dark on others
    scaled = images.reshape(64, -1)[:, pixel] / 255.0
    assert (scaled > 0.5).any() and (scaled <= 0.5).any()
    kernel[:, 1], bias[1] = 0.0, -0.5
    kernel[pixel, 1] = 1.0
    dense1.set_weights([kernel, bias])
    kernel2, bias2 = (np.array(w) for w in dense2.get_weights())
    dense2.set_weights([np.abs(kernel2), np.ones_like(bias2)])

    cb = make_diagnostics(tmp_path, images, labels)
    cb.set_model(model)
    stats = cb.record()["activation"]
    assert stats["dense1_act"]["dead_fraction"] == pytest.approx(1 / 8)
    assert stats["dense2_act"]["dead_fraction"] == 0.0
    assert stats["dense2_act"]["mean"] >= 1.0


def test_dead_conv_channel_counts_every_position(digits, tmp_path: Path) -> None:
    """A conv channel is dead only if it is 0 for every image *and* every spatial position."""
    images, labels = digits[0][:32], digits[1][:32]
    overrides = [
        "model.name=cnn",
        "model.filters=[4]",
        "model.convs_per_block=1",
        "model.hidden=[8]",
        "model.batch_norm=false",
        "model.dropout=0",
    ]
    model = _build(overrides, images)
    conv = model.get_layer("conv1")
    kernel, bias = (np.array(w) for w in conv.get_weights())
    kernel[..., 0], bias[0] = 0.0, -1.0  # channel 0: dead everywhere
    kernel[..., 1], bias[1] = 0.0, 1.0  # channel 1: 1 everywhere
    conv.set_weights([kernel, bias])
    cb = make_diagnostics(tmp_path, images, labels)
    cb.set_model(model)
    entry = cb.record()
    assert entry["activation"]["conv1_act"]["dead_fraction"] == pytest.approx(1 / 4)
    assert cb.as_dict()["linear_regions_bound"] is None  # not an MLP


def test_leaky_relu_units_are_never_dead(digits, tmp_path: Path) -> None:
    images, labels = digits[0][:16], digits[1][:16]
    model = _mlp("[8]", "leaky_relu", "he_normal", images)
    cb = make_diagnostics(tmp_path, images, labels)
    cb.set_model(model)
    stats = cb.record()["activation"]["dense1_act"]
    assert stats["dead_fraction"] is None
    assert cb.as_dict()["activation_kinds"] == {"dense1_act": "leaky_relu"}


# -- a real fit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("mlp", ["model.hidden=[16,16]", "model.dropout=0.2"]),
        (
            "cnn",
            ["model.filters=[4]", "model.convs_per_block=1", "model.hidden=[8]"],
        ),
    ],
)
def test_fit_writes_diagnostics_and_plots(digits, tmp_path: Path, family, overrides) -> None:
    images, labels = digits[0][:192], digits[1][:192]
    model = _build([f"model.name={family}", *overrides], images)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = make_diagnostics(tmp_path, images[:64], labels[:64])
    assert isinstance(cb, DiagnosticsCallback)
    model.fit(images, labels, epochs=2, batch_size=32, callbacks=[cb], verbose=0)

    diag = _strict_json(tmp_path / "diagnostics.json")
    kernel_layers = [x.name for x in model.layers if hasattr(x, "kernel")]
    act_layers = [x.name for x in model.layers if x.name.endswith("_act")]
    assert diag["layers"] == kernel_layers and kernel_layers[-1] == "probabilities"
    assert diag["activation_layers"] == act_layers and act_layers
    assert [e["epoch"] for e in diag["epochs"]] == [0, 1, 2]
    for entry in diag["epochs"]:
        assert entry["phase"] == "train"
        assert set(entry["grad_norm"]) == set(kernel_layers)
        assert all(v is not None and v > 0 for v in entry["grad_norm"].values())
        assert set(entry["weight_norm"]) == set(kernel_layers)
        assert set(entry["activation"]) == set(act_layers)
        for stats in entry["activation"].values():
            assert stats["std"] >= 0 and 0.0 <= stats["dead_fraction"] <= 1.0
    first, last = diag["epochs"][0]["weight_norm"], diag["epochs"][-1]["weight_norm"]
    assert all(first[name] != last[name] for name in kernel_layers)  # training moved them

    bound = diag["linear_regions_bound"]
    if family == "mlp":
        assert bound["hidden_units"] == [16, 16] and bound["n_inputs"] == 64
        assert bound["bound"] == linear_regions_bound([16, 16], 64)
        assert bound["applicable"] is False  # 16 < 64 inputs
    else:
        assert bound is None
    for name in ("gradients.png", "activations.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes left no temporaries


def test_reused_callback_keeps_counting_across_phases(digits, tmp_path: Path) -> None:
    images, labels = digits[0][:64], digits[1][:64]
    model = _mlp("[8]", "relu", "he_normal", images)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cb = make_diagnostics(tmp_path, images, labels, phase="head")
    model.fit(images, labels, epochs=1, batch_size=32, callbacks=[cb], verbose=0)
    model.get_layer("dense1").trainable = False
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cb.phase = "fine_tune"
    model.fit(images, labels, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
    diag = _strict_json(tmp_path / "diagnostics.json")
    assert [(e["epoch"], e["phase"]) for e in diag["epochs"]] == [
        (0, "head"),
        (1, "head"),
        (2, "fine_tune"),
        (3, "fine_tune"),
    ]
    assert diag["epochs"][-1]["grad_norm"]["dense1"] is None  # frozen: no gradient trains it
    assert diag["epochs"][-1]["weight_norm"]["dense1"] == diag["epochs"][1]["weight_norm"]["dense1"]


def test_custom_loss_fn_is_used(digits, tmp_path: Path) -> None:
    import keras

    images, labels = digits[0][:16], digits[1][:16]
    model = _mlp("[8]", "relu", "he_normal", images)
    base = make_diagnostics(tmp_path / "a", images, labels)
    base.set_model(model)

    def doubled_loss(y, p):
        return 2.0 * keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, p))

    doubled = make_diagnostics(tmp_path / "b", images, labels, loss_fn=doubled_loss)
    doubled.set_model(model)
    g1, g2 = base.record()["grad_norm"], doubled.record()["grad_norm"]
    assert g2["dense1"] == pytest.approx(2 * g1["dense1"], rel=1e-4)


def test_fixed_batch_is_seeded_and_float(digits) -> None:
    images, labels = digits
    x, y = fixed_batch(images.astype("uint8"), labels, n=64, seed=3)
    x2, y2 = fixed_batch(images.astype("uint8"), labels, n=64, seed=3)
    assert x.shape == (64, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert len(np.unique(y)) > 5  # a sample, not the first 64 of one class
    assert fixed_batch(images[:10], labels[:10], n=64)[0].shape[0] == 10


# -- plan (auto by activation memory) ---------------------------------------------------------


def test_plan_follows_activations_not_parameters() -> None:
    import keras

    from imgclf.training.diagnostics_cost import MIN_PROBE_IMAGES, PROBE_BUDGET, PROBE_IMAGES

    # Many parameters, tiny activations: recorded on the full probe.
    wide = keras.Sequential([keras.Input((2500,)), keras.layers.Dense(2001)])
    assert wide.count_params() > 5_000_000
    auto = plan(wide, "auto")
    assert auto.enabled and auto.probe_images == PROBE_IMAGES
    assert auto.estimated_bytes == PROBE_IMAGES * 2 * 4 * 2001
    # Few parameters, big activations (one conv at 224 px: 3.2 M outputs per image).
    big = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.Conv2D(64, 3, padding="same")])
    assert big.count_params() < 2_000
    off = plan(big, "auto")
    assert not off.enabled and "MB of activations" in off.reason
    assert off.estimated_bytes > PROBE_BUDGET
    forced = plan(big, True)
    assert forced.enabled and forced.probe_images == MIN_PROBE_IMAGES
    # In between: the probe shrinks until it fits.
    mid = keras.Sequential([keras.Input((128, 128, 3)), keras.layers.Conv2D(64, 3, padding="same")])
    fitted = plan(mid, "auto")
    assert fitted.enabled and MIN_PROBE_IMAGES <= fitted.probe_images < PROBE_IMAGES
    assert fitted.estimated_bytes <= PROBE_BUDGET
    assert not plan(wide, False).enabled
    with pytest.raises(ValueError, match="auto"):
        plan(wide, "sometimes")
