"""The optimisation recipe: every switch changes what is trained, checked on real objects/runs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from imgclf.config import load_config
from imgclf.infra.errors import ConfigError
from imgclf.train import train
from imgclf.training.optim import (
    class_weights,
    compile_model,
    epoch_learning_rate,
    make_loss,
    make_optimizer,
    resolve_batch_size,
    schedule_callbacks,
)


def _train_cfg(*overrides: str):
    return load_config(None, list(overrides)).train


@pytest.mark.parametrize(
    ("name", "cls", "attrs"),
    [
        ("sgd", "SGD", {"momentum": 0.0, "nesterov": False}),
        ("momentum", "SGD", {"momentum": 0.8, "nesterov": False}),
        ("nesterov", "SGD", {"momentum": 0.8, "nesterov": True}),
        ("rmsprop", "RMSprop", {}),
        ("adam", "Adam", {}),
        ("adamw", "AdamW", {"weight_decay": 0.01}),
        ("adagrad", "Adagrad", {}),
        ("adadelta", "Adadelta", {}),
    ],
)
def test_optimizers(name: str, cls: str, attrs: dict):
    cfg = _train_cfg(
        f"train.optimizer={name}", "train.momentum=0.8", "train.weight_decay=0.01",
        "train.schedule=constant", "train.learning_rate=0.05", "train.clipnorm=1.5",
    )  # fmt: skip
    opt = make_optimizer(cfg, steps_per_epoch=10)
    assert type(opt).__name__ == cls
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(0.05)
    assert opt.clipnorm == 1.5
    for key, value in attrs.items():
        assert getattr(opt, key) == pytest.approx(value), key
    clipped = make_optimizer(_train_cfg("train.clipvalue=0.5"), 10)
    assert clipped.clipvalue == 0.5 and clipped.clipnorm is None


def test_epoch_schedules_follow_their_definitions():
    step = _train_cfg("train.schedule=step", "train.step_epochs=2", "train.decay_rate=0.1")
    assert [epoch_learning_rate(step, e) for e in range(5)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]
    )
    expo = _train_cfg("train.schedule=exponential", "train.decay_rate=0.5")
    assert [epoch_learning_rate(expo, e) for e in range(3)] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    warm = _train_cfg("train.schedule=constant", "train.warmup_epochs=3")
    assert [epoch_learning_rate(warm, e) for e in range(5)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]
    )
    plateau = _train_cfg("train.schedule=reduce_on_plateau")
    names = [type(c).__name__ for c in schedule_callbacks(plateau)]
    assert "ReduceLROnPlateau" in names
    assert schedule_callbacks(_train_cfg("train.schedule=cosine")) == []


def _lr_column(run: Path) -> list[float]:
    with (run / "history.csv").open() as fh:
        return [float(r["learning_rate"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_schedules_drive_the_learning_rate_of_a_real_run(tmp_path: Path, folder_dataset: Path):
    base = [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=4",
            "train.learning_rate=0.01", "train.early_stopping.patience=0"]  # fmt: skip
    step_cfg = load_config(
        None, [*base, "train.schedule=step", "train.step_epochs=1", "train.decay_rate=0.5"]
    )
    step = train(step_cfg, out=tmp_path / "s", verbose=0)
    assert _lr_column(step) == pytest.approx([0.01, 0.005, 0.0025, 0.00125], rel=1e-4)
    cosine = train(load_config(None, [*base, "train.schedule=cosine", "train.warmup_epochs=2"]),
                   out=tmp_path / "c", verbose=0)  # fmt: skip
    lrs = _lr_column(cosine)
    assert lrs[0] < lrs[1] and lrs[1] > lrs[3]  # warm-up rises, then cosine decays


def test_losses_label_smoothing_and_mse():
    y = np.array([[0.0, 1.0, 0.0]], dtype="float32")
    perfect = np.array([[1e-7, 1.0 - 2e-7, 1e-7]], dtype="float32")
    plain = float(make_loss(_train_cfg())(y, perfect))
    smooth = float(make_loss(_train_cfg("train.label_smoothing=0.2"))(y, perfect))
    assert plain < 1e-3 and smooth > 0.1  # smoothing penalises full confidence
    mse = make_loss(_train_cfg("train.loss=mse"))
    assert type(mse).__name__ == "MeanSquaredError"
    assert float(mse(y, np.array([[0.5, 0.5, 0.0]], "float32"))) == pytest.approx(0.5 / 3)
    with pytest.raises(ConfigError, match="label_smoothing applies to loss=crossentropy"):
        load_config(None, ["train.loss=mse", "train.label_smoothing=0.1"])


def test_class_weights_balance_the_classes():
    weights = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    assert class_weights(np.array([0, 1]), 2, "none") is None


def test_batch_size_regimes():
    assert resolve_batch_size(_train_cfg("train.batch_size=full"), 1234) == 1234
    assert resolve_batch_size(_train_cfg("train.batch_size=1"), 1234) == 1
    with pytest.raises(ConfigError, match=r"train.batch_size=64 is larger than the 10 training"):
        resolve_batch_size(_train_cfg("train.batch_size=64"), 10)


def test_compile_switches_reach_the_model():
    import keras

    from imgclf.models import build_model

    config = load_config(
        None,
        ["model.name=mlp", "data.image_size=[8,8]", "model.hidden=[8]",
         "train.steps_per_execution=3", "train.jit_compile=false"],
    )  # fmt: skip
    model = build_model(config, 3)
    compile_model(model, config.train, steps_per_epoch=5)
    assert model.steps_per_execution == 3
    assert model.jit_compile is False
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)


def test_mixed_precision_run_keeps_a_float32_output(tmp_path: Path, folder_dataset: Path):
    import keras

    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=1",
         "train.mixed_precision=mixed_bfloat16"],
    )  # fmt: skip
    run = train(config, out=tmp_path / "mp", verbose=0)
    assert keras.config.dtype_policy().name == "float32"  # global policy restored
    model = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert "mixed_bfloat16" in policies.values()
    assert policies["probabilities"] == "float32"
