"""Models: every registered family builds, takes raw pixels, and learns on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASSES, make_image

from imgclf.config import load_config
from imgclf.errors import ConfigError
from imgclf.models import available_models, build_model


def _tiny_data(n_per_class: int = 10, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.stack([make_image(c, rng, size) for c in CLASSES for _ in range(n_per_class)])
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    return x.astype(np.float32), y


def _config(name: str, *extra: str):
    return load_config(
        None,
        [
            f"model.name={name}",
            "data.image_size=[32,32]",
            "data.channels=3",
            "model.filters=[4,8]",
            "model.hidden=[16]",
            *extra,
        ],
    )


def test_registry_lists_the_families():
    assert {"mlp", "cnn"} <= set(available_models())


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("normalize", ["unit", "standardize"])
def test_every_model_builds_and_trains_on_raw_pixels(name: str, normalize: str):
    import keras

    keras.utils.set_random_seed(0)
    x, y = _tiny_data()
    model = build_model(_config(name, f"data.normalize={normalize}"), len(CLASSES), x)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, len(CLASSES))
    probs = np.asarray(model.predict_on_batch(x[:4]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, batch_size=10, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < before  # it learns from raw 0..255 pixels


def test_mlp_parameter_count_matches_the_architecture():
    config = load_config(
        None,
        ["model.name=mlp", "data.image_size=[8,8]", "model.hidden=[16]", "model.batch_norm=false"],
    )
    model = build_model(config, 10)
    # 64 inputs -> 16 hidden (+bias) -> 10 outputs (+bias)
    assert model.count_params() == 64 * 16 + 16 + 16 * 10 + 10


def test_standardize_adapts_on_training_pixels():
    x, _ = _tiny_data()
    model = build_model(_config("mlp", "data.normalize=standardize"), 3, x)
    layer = model.get_layer("standardize")
    np.testing.assert_allclose(np.asarray(layer.mean).ravel(), x.mean(axis=(0, 1, 2)), rtol=1e-4)


def test_unknown_model_and_too_small_images_are_config_errors():
    with pytest.raises(ConfigError, match="available: cnn, mlp"):
        load_config(None, ["model.name=resnet9000"])
    config = load_config(None, ["data.image_size=[4,4]", "model.filters=[4,4,4]"])
    with pytest.raises(ConfigError, match="too small"):
        build_model(config, 3)
