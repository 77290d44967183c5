"""Grad-CAM: the heatmap peaks on the region that decides the class; the target layer of every
family (nested backbones included) is found, checked against the closed form CAM = Grad-CAM on a
GAP + Dense head; overlays and the files they go to."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgclf.explain import explain_files, find_target_layer, gradcam, overlay
from imgclf.infra.errors import UserError

SEED = 0
SIZE = 32
SQUARE = 6  # the class-1 cue: a bright 6×6 square
BAR = 18  # distractors in both classes: bright 1×18 bars, as bright as the square
BRIGHT = 230.0
MIN_EPOCHS = 5  # fewer: at 97% a cnn may still lean on bar features (measured over 10 seeds)


def _place(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> tuple[int, int] | None:
    """Paint a bright h×w block at a random place at least 2 px clear of the bright ones already
    there (bars never cross or lie side by side as a square-like blob); its corner, or None when
    50 tries found no room."""
    bright = img[..., 0] == BRIGHT
    for _ in range(50):
        r, c = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
        if not bright[max(r - 2, 0) : r + h + 2, max(c - 2, 0) : c + w + 2].any():
            img[r : r + h, c : c + w] = BRIGHT
            return r, c
    return None


def _scenes(rng: np.random.Generator, n: int, square: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 32, 32, 1]: noise 0..80 with 1-4 bright bars; `square` adds a bright square.
    Returns the images and the square's top-left corners [n, 2] (-1 without a square).

    The bars are in both classes and their count varies, so neither bars nor total brightness
    tell the classes apart: only the square does.
    """
    images = rng.uniform(0, 80, size=(n, SIZE, SIZE, 1)).astype(np.float32)
    corners = np.full((n, 2), -1)
    for img, corner in zip(images, corners, strict=True):
        if square:  # first, so that it always finds room
            corner[:] = _place(rng, img, SQUARE, SQUARE)
        for _ in range(rng.integers(1, 5)):
            _place(rng, img, *((1, BAR) if rng.random() < 0.5 else (BAR, 1)))
    return images, corners


def _config(*overrides: str, channels: int = 1, size: int = SIZE):
    from imgclf.config import load_config

    return load_config(
        None, [f"data.image_size=[{size},{size}]", f"data.channels={channels}", *overrides]
    )


def train_square_model(seed: int = SEED):
    """A registry `cnn` trained until it tells "square" (1) from "bars only" (0) on held-out
    images in inference mode (a few seconds)."""
    import keras

    from imgclf.models import build_model
    from imgclf.training.backend import set_deterministic

    set_deterministic(seed)
    rng = np.random.default_rng(seed)
    per_class, val_per_class = 512, 64
    x = np.concatenate([_scenes(rng, per_class, False)[0], _scenes(rng, per_class, True)[0]])
    y = np.repeat([0, 1], per_class)
    val_x = np.concatenate([_scenes(rng, val_per_class, s)[0] for s in (False, True)])
    val_y = np.repeat([0, 1], val_per_class)
    config = _config(
        "model.name=cnn", "model.filters=[8,16]", "model.convs_per_block=1", "model.hidden=[16]",
        "model.dropout=0", "model.l2=0",
    )  # fmt: skip
    model = build_model(config, num_classes=2)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    for epoch in range(1, 16):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        accuracy = model.evaluate(val_x, val_y, batch_size=128, verbose=0)[1]
        if epoch >= MIN_EPOCHS and accuracy >= 0.97:
            break
    assert accuracy >= 0.97, f"the cnn did not learn the square (val accuracy {accuracy:.2f})"
    return model


@pytest.fixture(scope="module")
def square_model():
    return train_square_model()


@pytest.mark.slow  # trains the square model (fixture)
def test_heatmap_peaks_on_the_square_that_decides_the_class(square_model):
    images, corners = _scenes(np.random.default_rng(SEED + 1), 16, square=True)
    heat = gradcam(square_model, images, class_index=1)
    assert heat.shape == (16, SIZE, SIZE) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    for i, (h, (r, c)) in enumerate(zip(heat, corners, strict=True)):
        peak_r, peak_c = np.unravel_index(np.argmax(h), h.shape)
        # Inside the square or within one pixel of its edge, never on a bar or the noise.
        assert r - 1 <= peak_r <= r + SQUARE and c - 1 <= peak_c <= c + SQUARE, (
            f"image {i}: peak at {(int(peak_r), int(peak_c))}, square at {(int(r), int(c))}"
        )
    # class_index=None explains each image's predicted class (1 for nearly all).
    square = square_model.predict(images, verbose=0).argmax(axis=1) == 1
    assert square.mean() >= 0.9
    np.testing.assert_allclose(gradcam(square_model, images)[square], heat[square], atol=1e-6)


@pytest.mark.parametrize(
    ("family", "overrides", "expected"),
    [
        ("cnn", [], "conv2_2_act"),
        # Not conv2_pool or conv2_dropout after it: the activation is the feature map.
        ("cnn", ["model.convs_per_block=1", "model.hidden_dropout=0.2"], "conv2_act"),
        ("resnet", ["model.blocks_per_stage=1"], "stage2_block1_out_act"),
        ("resnet", ["model.blocks_per_stage=1", "model.activation=maxout"], "stage2_block1_add"),
    ],
)
def test_target_layer_is_the_last_convolutional_feature_map(family, overrides, expected):
    from imgclf.models import build_model

    overrides = [f"model.name={family}", "model.filters=[4,8]", "model.hidden=[8]", *overrides]
    model = build_model(_config(*overrides, channels=3, size=16), num_classes=3)
    assert find_target_layer(model) == expected


def test_a_model_without_feature_maps_is_a_clear_error():
    from imgclf.models import build_model

    mlp = build_model(_config("model.name=mlp", "model.hidden=[8]", size=8), num_classes=2)
    message = "Grad-CAM needs a convolutional model; mlp has no convolutional feature map"
    with pytest.raises(UserError, match=message):
        find_target_layer(mlp)
    with pytest.raises(UserError, match=message):
        gradcam(mlp, np.zeros((1, 8, 8, 1), np.float32))


def _nested_model(zero_features: bool = False):
    """Pixels -> rescale -> backbone (a nested keras.Model, training=False) -> GAP -> features ->
    head_dropout -> probabilities: the shape of imgclf's pretrained-backbone models, tiny."""
    import keras
    from keras import layers

    inner = keras.Input((16, 16, 3))
    y = layers.ReLU(name="relu_a")(layers.Conv2D(4, 3, padding="same", name="conv_a")(inner))
    init = "zeros" if zero_features else "glorot_uniform"
    y = layers.Conv2D(6, 3, padding="same", kernel_initializer=init, name="conv_b")(y)
    backbone = keras.Model(inner, layers.ReLU(name="relu_b")(y), name="backbone")
    pixels = keras.Input((16, 16, 3), name="pixels")
    x = backbone(layers.Rescaling(1 / 255, name="rescale")(pixels), training=False)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="head_dropout")(layers.Identity(name="features")(x))
    outputs = layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(pixels, outputs, name="nested")


def _cam(features: np.ndarray, kernel: np.ndarray, classes: list[int]) -> np.ndarray:
    """Grad-CAM of a GAP -> Dense head in closed form: d logit_c / dA_k = W[k, c] / (h·w) at
    every position, so the map is relu(A · W[:, c]) up to a scale, which normalising removes."""
    cam = np.maximum(np.einsum("nhwk,kn->nhw", features, kernel[:, classes]), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def test_nested_backbone_is_the_target_and_gives_the_cam_of_its_feature_map(tmp_path):
    import keras

    model = _nested_model()
    images = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    classes = [0, 1, 2, 1]
    assert find_target_layer(model) == "backbone"
    backbone = model.get_layer("backbone")
    features = np.asarray(backbone(images / 255.0))  # [4, 16, 16, 6]
    kernel = np.asarray(model.get_layer("probabilities").kernel)
    expected = _cam(features, kernel, classes)
    np.testing.assert_allclose(gradcam(model, images, classes), expected, atol=1e-5)

    # A layer inside the backbone, by path or bare name, is what the same layer gives in a flat
    # copy of the model (same weights, no nesting).
    inner = gradcam(model, images, 2, layer="backbone/relu_a")
    np.testing.assert_array_equal(gradcam(model, images, 2, layer="relu_a"), inner)
    flat_in = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(flat_in)
    for name in ("conv_a", "relu_a", "conv_b", "relu_b"):
        layer = backbone.get_layer(name)
        x = layer.__class__.from_config(layer.get_config())(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    flat = keras.Model(flat_in, keras.layers.Dense(3, activation="softmax")(x))
    flat.set_weights(model.get_weights())
    assert find_target_layer(flat) == "relu_b"
    np.testing.assert_allclose(gradcam(flat, images, 2, layer="relu_a"), inner, atol=1e-5)

    # Saved and loaded (as predict loads model.keras), the nested call is still found.
    model.save(tmp_path / "nested.keras")
    loaded = keras.saving.load_model(tmp_path / "nested.keras", safe_mode=True)
    assert find_target_layer(loaded) == "backbone"
    np.testing.assert_allclose(gradcam(loaded, images, classes), expected, atol=1e-5)


def test_target_with_a_shortcut_across_it_and_an_all_zero_map():
    import keras
    from keras import layers

    # relu_a's successor (the add) also reads a 1×1 conv of the input: the graph after the
    # target cannot start at the target alone.
    pixels = keras.Input((12, 12, 1))
    x = layers.Rescaling(1 / 255)(pixels)
    a = layers.ReLU(name="relu_a")(layers.Conv2D(5, 3, padding="same", name="conv_a")(x))
    added = layers.Add(name="add")([a, layers.Conv2D(5, 1, name="skip")(x)])
    outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(added))
    model = keras.Model(pixels, outputs, name="shortcut")
    images = np.random.default_rng(2).uniform(0, 255, (3, 12, 12, 1)).astype(np.float32)
    kernel = np.asarray(model.layers[-1].kernel)
    assert find_target_layer(model) == "add"
    for name in ("add", "relu_a"):  # the add is linear: d logit / d relu_a = d logit / d add
        features = np.asarray(keras.Model(pixels, model.get_layer(name).output)(images))
        np.testing.assert_allclose(
            gradcam(model, images, 1, layer=name), _cam(features, kernel, [1, 1, 1]), atol=1e-5
        )

    # No positive evidence anywhere: the map stays zero (no 0/0).
    zero = gradcam(_nested_model(zero_features=True), np.full((2, 16, 16, 3), 99, np.float32))
    assert zero.shape == (2, 16, 16) and not np.isnan(zero).any() and (zero == 0).all()


def test_bad_layer_names_and_arguments_are_clear_errors():
    model = _nested_model()
    images = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(UserError, match=r"no layer 'nope'.*backbone, .*backbone/relu_b"):
        gradcam(model, images, layer="nope")
    with pytest.raises(UserError, match=r"no layer 'backbone/nope'"):
        gradcam(model, images, layer="backbone/nope")
    with pytest.raises(UserError, match=r"no 4-D feature map at 'gap'"):
        gradcam(model, images, layer="gap")
    with pytest.raises(ValueError, match=r"images must be \[N, 16, 16, 3\]"):
        gradcam(model, np.zeros((2, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="class_index 3 is out of range for 3 classes"):
        gradcam(model, images, class_index=3)
    with pytest.raises(ValueError, match="class_index has 3 entries for 2 images"):
        gradcam(model, images, class_index=[0, 1, 2])


def test_overlay_blends_the_image_with_the_colour_map():
    from matplotlib import colormaps

    grey = np.arange(48, dtype=np.uint8).reshape(6, 8, 1) * 5
    heat = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    out = overlay(grey, heat)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(grey, heat, alpha=0.0), np.repeat(grey, 3, axis=-1))
    jet = np.rint(colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay(grey, heat, alpha=1.0), jet)
    assert jet[0, 0, 2] > jet[0, 0, 0] and jet[-1, -1, 0] > jet[-1, -1, 2]  # cold blue, hot red
    rgb = np.zeros((12, 16, 3), np.uint8)
    assert overlay(rgb, heat).shape == (12, 16, 3)  # a smaller heatmap is resized to the image
    with pytest.raises(ValueError, match="alpha"):
        overlay(grey, heat, alpha=1.5)


def test_explain_files_writes_one_viewable_png_per_file(tmp_path):
    files = []
    for folder in ("a", "b"):  # the same file name in two folders
        (tmp_path / folder).mkdir()
        pixels = np.random.default_rng(len(files)).integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "photo.png")
        files.append(tmp_path / folder / "photo.png")
    paths = explain_files(_nested_model(), files, tmp_path / "out")
    assert [p.name for p in paths] == ["photo_gradcam.png", "photo-2_gradcam.png"]
    for path in paths:
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (224, 224)  # 16 px × 14, nearest
