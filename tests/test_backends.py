"""Backends: the same models train under KERAS_BACKEND=jax from in-memory NumPy data, with no
TensorFlow; under TensorFlow (the default) training keeps its tf.data pipelines.

The JAX runs happen in subprocesses (a process has one Keras backend) that block `import
tensorflow`, as on machines with JAX but no TensorFlow, and print one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclf.config import load_config
from imgclf.data import Split, Splits

ROOT = Path(__file__).resolve().parents[1]
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed (pip install 'jax[cpu]')")

# Makes `import tensorflow` fail in the subprocess, as if it were not installed.
BLOCK_TENSORFLOW = """
import importlib.abc, sys

class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTensorFlow())
"""

# Mimics imgclf.train.train on the backend-neutral path: data, model, compile, fit one epoch
# with augmentation (and diagnostics), evaluate.
JAX_FIT_SCRIPT = """
import json, sys
import keras
import numpy as np
from imgclf.training.augment import build_augmenter
from imgclf.training.backend import backend_name, make_training_data, set_deterministic
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.training.diagnostics import fixed_batch, make_diagnostics
from imgclf.evaluate import evaluate
from imgclf.models import build_model
from imgclf.training.optim import class_weights, compile_model, resolve_batch_size, steps_per_epoch

out = {"backend": backend_name()}
for name, overrides in json.loads(sys.argv[1]).items():
    config = load_config(None, overrides)
    set_deterministic(config.seed)
    splits = load_data(config)
    n_classes = len(splits.class_names)
    model = build_model(config, n_classes, splits.train.x)
    batch_size = resolve_batch_size(config.train, len(splits.train))
    compile_model(model, config.train, steps_per_epoch(len(splits.train), batch_size))
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    train_data, val_data = make_training_data(splits, config, batch_size, augmenter)
    diag_x, diag_y = fixed_batch(splits.train.x, splits.train.y, n=16, seed=config.seed)
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.train.epochs,
        callbacks=[make_diagnostics(sys.argv[2] + "/" + name, diag_x, diag_y)],
        shuffle=False,
        verbose=0,
        class_weight=class_weights(splits.train.y, n_classes, config.train.class_weight),
    )
    metrics, probs = evaluate(model, splits.test.x, splits.test.y, splits.class_names, k=2)
    out[name] = {
        "pipeline": type(train_data).__name__,
        "augmented": augmenter is not None,
        "epochs": len(history.history["loss"]),
        "loss": history.history["loss"][-1],
        "val_loss": history.history["val_loss"][-1],
        "test": metrics["test"],
        "prob_sum_error": float(np.abs(probs.sum(axis=1) - 1).max()),
    }
from imgclf.training.backend import check_backend
from imgclf.config import TrainConfig
from imgclf.infra.errors import ConfigError

if "distribute" in TrainConfig.model_fields:  # tf.distribute is refused with a clear error
    try:
        check_backend(load_config(None, ["train.distribute=mirrored"]))
        out["distribute_error"] = None
    except ConfigError as exc:
        out["distribute_error"] = str(exc)
out["tensorflow_imported"] = "tensorflow" in sys.modules
print("RESULT " + json.dumps(out))
"""

# Appended to JAX_FIT_SCRIPT (one JAX process for both tests): the real `train()`.
TRAIN_SCRIPT = """
from imgclf.train import train

config = load_config(None, json.loads(sys.argv[3]))
run_dir = train(config, out=sys.argv[4], verbose=0)
out["train"] = {"run_dir": str(run_dir), "tf": "tensorflow" in sys.modules}
"""
RESULT_LINE = 'print("RESULT " + json.dumps(out))'


def run_jax(script: str, *args: str, timeout: int = 120) -> tuple[dict, str]:
    """Run `script` under KERAS_BACKEND=jax without TensorFlow; (its RESULT JSON, its stderr)."""
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TENSORFLOW + script, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, f"no RESULT line\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT ")), proc.stderr


def folder_overrides(data_path: Path) -> list[str]:
    """Tiny folder data (the conftest shapes, decoded once into memory) at 16×16 RGB."""
    return [
        "data.source=folder",
        f"data.path={data_path}",
        "data.image_size=[16,16]",
        "data.channels=3",
        "data.val_fraction=0.2",
        "data.test_fraction=0.25",
        "train.epochs=1",
        "train.batch_size=8",
        "train.learning_rate=0.01",
    ]


# --------------------------------------------------------------------------------------------
# JAX


@pytest.fixture
def jax_result(folder_dataset: Path, tmp_path_factory) -> tuple[dict, str, Path]:
    """(RESULT, stderr, its folder) of one JAX process that fits a recipe on the
    backend-neutral path, then runs the real `train()` on another."""
    tmp_path = tmp_path_factory.mktemp("jax")
    recipes = {
        # A built-in source: the 8×8 digits, standardised inputs, balanced class weights.
        "mlp": [
            "data.source=digits",
            "data.image_size=[8,8]",
            "model.name=mlp",
            "model.hidden=[32]",
            "data.normalize=standardize",
            "train.class_weight=balanced",
            "train.epochs=1",
            "train.batch_size=32",
            "train.learning_rate=0.01",
            "augment.rotation=0",
            "augment.zoom=0",
            "augment.translate=0.1",
        ],
    }
    # Folder data through the real `train()`: a CNN with batch-norm, augmentation that blends
    # labels (MixUp). One batch per epoch: under JAX each new batch shape (a last, partial
    # batch) compiles the train step again, 4-5 s of CPU here.
    overrides = [
        "name=tiny-jax",
        *folder_overrides(folder_dataset),
        "model.name=cnn",
        "model.filters=[4,8]",
        "model.convs_per_block=1",
        "model.hidden=[16]",
        "augment.rotation=0",
        "augment.zoom=0",
        "augment.translate=0.1",
        "augment.flip=horizontal",
        "augment.contrast=0.2",
        "augment.mixup=0.2",
        "train.batch_size=full",
    ]
    script = JAX_FIT_SCRIPT.replace(RESULT_LINE, TRAIN_SCRIPT + RESULT_LINE)
    args = json.dumps(recipes), str(tmp_path), json.dumps(overrides), str(tmp_path / "run")
    result, stderr = run_jax(script, *args, timeout=600)
    return result, stderr, tmp_path


@needs_jax
@pytest.mark.slow
def test_jax_trains_without_tensorflow_and_train_runs_end_to_end(jax_result) -> None:
    """One JAX process (its start-up and compiles are the cost): the backend-neutral fit of the
    digits MLP, then the real `train()` of a CNN on folder data, with every artifact but the
    SavedModel (which needs TensorFlow)."""
    result, stderr, tmp_path = jax_result
    assert result["backend"] == "jax"
    assert result["tensorflow_imported"] is False
    for name in ("mlp",):
        r = result[name]
        assert r["pipeline"] == "ArrayDataset" and r["augmented"] and r["epochs"] == 1, r
        assert np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]), r
        assert np.isfinite(r["test"]["loss"]) and 0.0 <= r["test"]["accuracy"] <= 1.0, r
        assert r["test"]["n"] > 0 and r["prob_sum_error"] < 1e-4, r
        assert (tmp_path / name / "diagnostics.json").is_file()
    assert result["mlp"]["test"]["accuracy"] > 0.5  # digits: one epoch is plenty for this
    if "distribute_error" in result:
        assert "needs the TensorFlow backend" in result["distribute_error"]

    # The real `train()` under JAX.
    from imgclf import runs

    result = result["train"]
    run_dir = Path(result["run_dir"])
    assert result["tf"] is False
    for name in (
        runs.MODEL,
        runs.METRICS,
        runs.HISTORY,
        runs.CONFIG,
        runs.LABELS,
        runs.DIAGNOSTICS,
    ):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / runs.SAVED_MODEL).exists()
    exports = run_dir / runs.EXPORTS
    assert not exports.exists() or "saved_model" not in runs.read_json(exports)
    assert "SavedModel export needs the TensorFlow backend" in stderr
    card = (run_dir / runs.MODEL_CARD).read_text("utf-8")
    assert "skipped" in card and "imgclf-export" in card
    metrics = runs.read_json(run_dir / runs.METRICS)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and np.isfinite(metrics["test"]["loss"])

    # model.keras is backend-neutral: exporting it under TensorFlow (this process) works.
    from imgclf.export.saved_model import export_run

    export_run(run_dir)
    assert "saved_model" in runs.read_json(exports)


# --------------------------------------------------------------------------------------------
# TensorFlow (this process) and the pipelines themselves


def tiny_splits(n_train: int = 23, n_val: int = 7, classes: int = 3, size: int = 8) -> Splits:
    """Splits whose image i has every pixel equal to i (0..254): batches show their sample ids."""

    def split(start: int, n: int) -> Split:
        ids = np.arange(start, start + n)
        x = np.broadcast_to(ids[:, None, None, None], (n, size, size, 1)).astype(np.uint8)
        return Split(np.ascontiguousarray(x), ids.astype(np.int64) % classes)

    names = [f"c{i}" for i in range(classes)]
    return Splits(split(0, n_train), split(100, n_val), split(200, 6), names, {})


def tiny_config(seed: int = 0, *overrides: str):
    return load_config(None, [f"seed={seed}", "data.image_size=[8,8]", *overrides])


def epoch_ids(dataset) -> tuple[list[int], list[np.ndarray]]:
    """One epoch of a PyDataset as Keras' fit walks it: the sample ids in order, the labels."""
    ids, labels = [], []
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert x.dtype == np.float32 and y.dtype == np.float32
        ids += [int(v) for v in x[:, 0, 0, 0]]
        labels.append(y)
    dataset.on_epoch_end()
    return ids, labels


def test_backend_helpers_under_tensorflow() -> None:
    from imgclf.training import backend

    assert backend.backend_name() == "tensorflow"
    assert backend.uses_tensorflow() and backend.can_export_saved_model()
    assert backend.resolve_pipeline("auto") == "tf.data"
    assert backend.resolve_pipeline("pydataset") == "pydataset"
    with pytest.raises(ValueError, match="pipeline"):
        backend.resolve_pipeline("torch")  # type: ignore[arg-type]
    message = backend.export_skipped_message("runs/x")
    assert message == (
        "SavedModel export needs the TensorFlow backend; run `imgclf-export runs/x` with "
        "KERAS_BACKEND=tensorflow"
    )


def test_check_backend_accepts_every_setting_under_tensorflow() -> None:
    from imgclf.config import TrainConfig
    from imgclf.training.backend import check_backend

    check_backend(tiny_config())
    if "distribute" in TrainConfig.model_fields:
        check_backend(tiny_config(0, "train.distribute=mirrored"))


def test_set_deterministic_repeats_draws() -> None:
    import keras

    from imgclf.training.backend import set_deterministic

    def draws() -> tuple:
        layer = keras.layers.Dense(3, kernel_initializer="glorot_uniform")
        layer.build((None, 4))
        return np.random.rand(), keras.ops.convert_to_numpy(layer.kernel)

    set_deterministic(7)
    a = draws()
    set_deterministic(7)
    b = draws()
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_make_training_data_is_tf_data_on_tensorflow() -> None:
    import tensorflow as tf

    from imgclf.training.backend import make_training_data

    splits = tiny_splits()
    train_ds, val_ds = make_training_data(splits, tiny_config(), 8, None)
    assert isinstance(train_ds, tf.data.Dataset) and isinstance(val_ds, tf.data.Dataset)
    assert sum(int(x.shape[0]) for x, _ in train_ds) == len(splits.train)


def test_pydataset_epochs_match_tf_data_and_reshuffle_deterministically() -> None:
    import keras

    from imgclf.training.backend import make_training_data

    splits = tiny_splits()
    n = len(splits.train)
    train, val = make_training_data(splits, tiny_config(seed=3), 8, None, pipeline="pydataset")
    assert isinstance(train, keras.utils.PyDataset) and isinstance(val, keras.utils.PyDataset)
    assert len(train) == 3  # ceil(23 / 8): the last batch is smaller, as with tf.data
    epochs = [epoch_ids(train) for _ in range(3)]
    for ids, labels in epochs:
        # Every training image exactly once per epoch, with its one-hot label.
        assert sorted(ids) == list(range(n))
        onehot = np.concatenate(labels)
        assert onehot.shape == (n, 3) and set(np.unique(onehot)) == {0.0, 1.0}
        assert np.array_equal(onehot.argmax(axis=1), np.asarray(ids) % 3)
    orders = [ids for ids, _ in epochs]
    assert orders[0] != orders[1] != orders[2] and orders[0] != list(range(n))

    # Same seed: the same sequence of epochs; another seed: another one.
    again, _ = make_training_data(splits, tiny_config(seed=3), 8, None, pipeline="pydataset")
    assert [epoch_ids(again)[0] for _ in range(3)] == orders
    other, _ = make_training_data(splits, tiny_config(seed=4), 8, None, pipeline="pydataset")
    assert epoch_ids(other)[0] != orders[0]

    # Validation: in order, never shuffled, never augmented.
    assert epoch_ids(val)[0] == list(range(100, 107)) == epoch_ids(val)[0]

    # Same samples per epoch as the tf.data pipeline.
    tf_train, _ = make_training_data(splits, tiny_config(seed=3), 8, None)
    tf_ids = [int(v) for x, _ in tf_train for v in x.numpy()[:, 0, 0, 0]]
    assert sorted(tf_ids) == sorted(orders[0])


def test_pydataset_applies_the_augmenter_and_returns_numpy() -> None:
    from imgclf.training.augment import build_augmenter
    from imgclf.training.backend import make_training_data

    config = tiny_config(0, "augment.rotation=0", "augment.zoom=0", "augment.mixup=0.4")
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    splits = tiny_splits()
    train, val = make_training_data(splits, config, 8, augmenter, pipeline="pydataset")
    x, y = train[0]
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    assert x.shape == (8, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.float32
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-6)
    assert not set(np.unique(y)) <= {0.0, 1.0}  # MixUp blended the labels
    _, vy = val[0]
    assert set(np.unique(vy)) == {0.0, 1.0}  # validation is not augmented


def test_tensorflow_fit_accepts_the_pydataset() -> None:
    """The forced PyDataset path trains under TensorFlow too (class weights included)."""
    from imgclf.models import build_model
    from imgclf.training.backend import make_training_data
    from imgclf.training.optim import class_weights, compile_model

    config = tiny_config(0, "model.name=mlp", "model.hidden=[8]", "data.channels=1")
    splits = tiny_splits()
    model = build_model(config, 3, splits.train.x)
    compile_model(model, config.train, 3)
    train, val = make_training_data(splits, config, 8, None, pipeline="pydataset")
    history = model.fit(
        train,
        validation_data=val,
        epochs=2,
        shuffle=False,
        verbose=0,
        class_weight=class_weights(splits.train.y, 3, "balanced"),
    )
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history["val_loss"]))
