"""Augmentation: each switch changes training batches; nothing of it reaches the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, tiny_overrides
from PIL import Image

from imgclf.config import load_config
from imgclf.infra.errors import ConfigError
from imgclf.training.augment import build_augmenter
from imgclf.training.augment import main as augment_main


def _batch(n: int = 6):
    rng = np.random.default_rng(0)
    x = np.stack([make_image(c, rng) for c in ("circle", "hstripes", "vstripes") * (n // 3)])
    y = np.eye(3, dtype="float32")[np.arange(n) % 3]
    return x.astype("float32"), y


def _augment(*overrides: str):
    config = load_config(None, ["data.channels=3", "data.image_size=[32,32]", "augment.rotation=0",
                                "augment.zoom=0", "augment.translate=0", *overrides])  # fmt: skip
    return build_augmenter(config.augment, config.data.image_size, seed=3)


def test_no_augmentation_means_no_augmenter():
    assert _augment() is None


@pytest.mark.parametrize(
    "switch",
    ["augment.rotation=0.2", "augment.zoom=0.3", "augment.translate=0.2", "augment.crop=0.3",
     "augment.contrast=0.5", "augment.brightness=0.5", "augment.hue=0.5",
     "augment.saturation=0.5", "augment.randaugment=2", "augment.flip=horizontal"],
)  # fmt: skip
def test_each_image_transform_changes_the_batch(switch: str):
    x, y = _batch()
    augmented, labels = _augment(switch)(x, y)
    augmented = np.asarray(augmented)
    assert augmented.shape == x.shape
    assert not np.allclose(augmented, x), f"{switch} left the batch unchanged"
    np.testing.assert_array_equal(np.asarray(labels), y)  # image transforms keep labels


def test_flip_mirrors_whole_images():
    x, y = _batch(12)
    out = np.asarray(_augment("augment.flip=horizontal")(x, y)[0])
    mirrored = 0
    for original, flipped in zip(x, out, strict=True):
        assert not np.allclose(original, original[:, ::-1])  # a flip would show
        assert np.allclose(flipped, original) or np.allclose(flipped, original[:, ::-1])
        mirrored += bool(np.allclose(flipped, original[:, ::-1]))
    # Each image is mirrored with probability 1/2: some are, some are not (a seeded draw).
    assert 0 < mirrored < len(x)


@pytest.mark.parametrize("switch", ["augment.mixup=0.4", "augment.cutmix=1.0"])
def test_mixup_and_cutmix_blend_labels(switch: str):
    x, y = _batch()
    images, labels = _augment(switch)(x, y)
    labels = np.asarray(labels)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(labels, y)  # soft labels now
    assert not np.allclose(np.asarray(images), x)


def test_invalid_combinations_are_config_errors():
    with pytest.raises(ConfigError, match=r"augment\.hue needs colour images"):
        load_config(None, ["augment.hue=0.2"])  # the default data is grey
    with pytest.raises(ConfigError, match="choose one"):
        load_config(None, ["augment.mixup=0.2", "augment.cutmix=1.0"])


@pytest.mark.slow
def test_augmentation_never_reaches_the_trained_model(tmp_path: Path, folder_dataset: Path):
    import keras

    from imgclf.train import train

    config = load_config(None, [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=1",
                                "augment.flip=horizontal", "augment.rotation=0.2",
                                "augment.mixup=0.2"])  # fmt: skip
    run = train(config, out=tmp_path / "aug", verbose=0)
    model = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    names = [type(layer).__name__ for layer in model.layers]
    assert not [n for n in names if n.startswith("Random") or n in ("MixUp", "CutMix")]
    x = _batch()[0]
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(x))


def test_preview_cli_writes_a_grid(tmp_path: Path, folder_dataset: Path):
    out = tmp_path / "grid.png"
    code = augment_main([*tiny_overrides(folder_dataset), "augment.rotation=0.2", "--out",
                         str(out), "--images", "3", "--variants", "4"])  # fmt: skip
    assert code == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > img.height  # 5 columns, 3 rows
