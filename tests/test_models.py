"""Models: every registered family builds, takes raw pixels, and learns on tiny data; every
model.* knob (activation, initializer, dropout, regularisation, batch-norm, resnet shortcuts)
demonstrably changes the built model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import CLASSES, make_image

from imgclf.config import ACTIVATIONS, load_config
from imgclf.infra.errors import ConfigError
from imgclf.models import available_models, build_model
from imgclf.models.registry import is_pretrainable

# Families trained from scratch, with every model.* knob; the pretrained backbones ignore most
# knobs (their architecture is fixed) and are tested in test_transfer.py.
MODELS = [name for name in available_models() if not is_pretrainable(name)]


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


def _tiny(name: str, *extra: str, size: int = 16):
    """The smallest sensible model of family `name`: 16×16 RGB, 2 blocks/stages of 4 and 8."""
    import keras

    keras.utils.set_random_seed(0)
    config = load_config(
        None,
        [
            f"model.name={name}",
            f"data.image_size=[{size},{size}]",
            "data.channels=3",
            "model.filters=[4,8]",
            "model.convs_per_block=1",
            "model.blocks_per_stage=1",
            "model.hidden=[8]",
            *extra,
        ],
    )
    return build_model(config, len(CLASSES))


def _batch(n: int = 8, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    x, y = _tiny_data(n_per_class=3, size=size)
    idx = np.random.default_rng(1).permutation(len(x))[:n]
    return x[idx], y[idx]


def _weighted(model) -> list:
    """The model's Dense and Conv2D layers (hidden ones and the output layer)."""
    import keras

    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D)
    ]


def _hidden(model) -> list:
    """Hidden Dense/Conv2D layers: everything with a kernel but the output layer."""
    return [layer for layer in _weighted(model) if layer.name != "probabilities"]


def _sources(model) -> dict[str, list[str]]:
    """layer name -> names of the layers feeding it (from the functional config)."""

    def history(node) -> list[str]:
        if isinstance(node, dict):
            if "keras_history" in node.get("config", {}):
                return [node["config"]["keras_history"][0]]
            return [h for v in node.values() for h in history(v)]
        if isinstance(node, list | tuple):
            return [h for v in node for h in history(v)]
        return []

    return {lay["name"]: history(lay["inbound_nodes"]) for lay in model.get_config()["layers"]}


def _train_step(model, x: np.ndarray, y: np.ndarray) -> float:
    import keras

    # Eager: tracing a train function per tiny model would cost more than the whole step.
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    return float(np.asarray(model.train_on_batch(x, y)))


def test_registry_lists_the_families():
    assert {"mlp", "cnn", "resnet"} <= set(MODELS)


def test_listing_models_does_not_import_tensorflow():
    code = (
        "import sys; from imgclf.models import available_models; available_models(); "
        "from imgclf.config import load_config; load_config(None, ['model.name=resnet']); "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Both input normalisations on the MLP and the CNN; the residual net (the costliest to trace)
# with `standardize`: the normalising front end is the same layer for every family.
@pytest.mark.parametrize(
    "normalize, name",
    [
        *[(norm, n) for norm in ("unit", "standardize") for n in MODELS if n != "resnet"],
        pytest.param("standardize", "resnet", marks=pytest.mark.slow),
    ],
)
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


def _expected_activation(act: str):
    """(layer class, check) for the `_act` layers of `model.activation=act`."""
    import keras

    from imgclf.models.layers import Abs, Maxout

    classes = {
        "relu": keras.layers.ReLU,
        "leaky_relu": keras.layers.LeakyReLU,
        "prelu": keras.layers.PReLU,
        "abs": Abs,
        "maxout": Maxout,
    }
    if act in classes:
        return classes[act], lambda layer: True
    return keras.layers.Activation, lambda layer: layer.activation is keras.activations.get(act)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_with_every_activation_builds_and_trains(name: str, act: str):
    model = _tiny(name, f"model.activation={act}")
    x, y = _batch()
    assert model.output_shape == (None, len(CLASSES))
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (len(x), len(CLASSES)) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # One activation layer (named *_act, of the configured kind) per hidden Dense/Conv; resnet
    # projections are linear shortcuts and have none.
    acts = [layer for layer in model.layers if layer.name.endswith("_act")]
    linear = [layer for layer in _hidden(model) if not layer.name.endswith("_proj")]
    assert len(acts) == len(linear) > 0
    cls, check = _expected_activation(act)
    assert all(type(layer) is cls and check(layer) for layer in acts), [type(a) for a in acts]
    assert np.isfinite(_train_step(model, x, y))


# --- initializers --------------------------------------------------------------------------


def _kernels(model) -> list[np.ndarray]:
    return [np.asarray(layer.kernel) for layer in _hidden(model)]


@pytest.mark.parametrize("name", MODELS)
def test_zeros_and_constant_initialise_every_hidden_kernel(name: str):
    model = _tiny(name, "model.initializer=zeros")
    assert all((k == 0).all() for k in _kernels(model))
    # The output layer stays glorot_uniform whatever model.initializer says.
    assert np.asarray(model.get_layer("probabilities").kernel).std() > 0.1

    model = _tiny(name, "model.initializer=constant", "model.init_constant=0.07")
    assert all(np.allclose(k, 0.07) for k in _kernels(model))
    assert np.asarray(model.get_layer("probabilities").kernel).std() > 0.1


@pytest.mark.parametrize(
    ("initializer", "expected_std"),
    [
        ("normal_small", lambda fan_in: 0.01),
        ("normal_large", lambda fan_in: 1.0),
        ("he_normal", lambda fan_in: np.sqrt(2.0 / fan_in)),
        ("he_uniform", lambda fan_in: np.sqrt(2.0 / fan_in)),
        ("glorot_normal", None),
    ],
)
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_random_initializers_have_their_scale(name: str, initializer: str, expected_std):
    model = _tiny(
        name,
        f"model.initializer={initializer}",
        "model.hidden=[64,32]",
        "model.filters=[16,16]",
        "model.convs_per_block=2",
    )
    kernels = _kernels(model)
    if expected_std is None:  # glorot: std sqrt(2 / (fan_in + fan_out)), both × receptive field
        fans = [(np.prod(k.shape[:-1]), np.prod(k.shape[:-2]) * k.shape[-1]) for k in kernels]
        scaled = [k / np.sqrt(2.0 / (fi + fo)) for k, (fi, fo) in zip(kernels, fans, strict=True)]
    else:
        scaled = [k / expected_std(np.prod(k.shape[:-1])) for k in kernels]
    pooled = np.concatenate([s.ravel() for s in scaled])  # ~N(0, 1) when the scale is right
    assert pooled.size > 5000
    assert abs(pooled.std() - 1.0) < 0.05, pooled.std()
    assert abs(pooled.mean()) < 0.05
    if initializer == "he_uniform":
        assert max(np.abs(s).max() for s in scaled) <= np.sqrt(3.0) + 1e-6  # limit sqrt(6/fan_in)
    # Each layer draws its own values: same-shaped kernels are not copies of each other.
    if name == "cnn":
        first, second = (np.asarray(model.get_layer(n).kernel) for n in ("conv1_2", "conv2_1"))
        assert first.shape == second.shape == (3, 3, 16, 16)
        assert not np.allclose(first, second)


# --- activations ---------------------------------------------------------------------------


def test_leaky_relu_uses_the_configured_slope():
    import keras

    model = _tiny("cnn", "model.activation=leaky_relu", "model.leaky_slope=0.1")
    acts = [layer for layer in model.layers if layer.name.endswith("_act")]
    assert acts and all(isinstance(a, keras.layers.LeakyReLU) for a in acts)
    assert all(a.negative_slope == pytest.approx(0.1) for a in acts)
    out = np.asarray(acts[0](np.array([[-2.0, 3.0]], dtype="float32")))
    np.testing.assert_allclose(out, [[-0.2, 3.0]], rtol=1e-6)


def test_prelu_learns_one_slope_per_channel_on_conv_maps():
    model = _tiny("cnn", "model.activation=prelu")
    conv_act, dense_act = model.get_layer("conv1_act"), model.get_layer("fc1_act")
    assert tuple(conv_act.alpha.shape) == (1, 1, 4)  # one slope per channel, shared over H, W
    assert tuple(dense_act.alpha.shape) == (8,)  # one per unit
    trainable = {id(w) for w in model.trainable_weights}
    assert id(conv_act.alpha) in trainable and id(dense_act.alpha) in trainable
    before = np.asarray(conv_act.alpha).copy()
    x, y = _batch()
    _train_step(model, x, y)
    assert not np.allclose(np.asarray(conv_act.alpha), before)


def test_abs_is_absolute_value_rectification():
    from imgclf.models.layers import Abs

    x = np.array([[-2.0, -0.5, 0.0, 3.0]], dtype="float32")
    np.testing.assert_array_equal(np.asarray(Abs()(x)), np.abs(x))


def test_maxout_takes_the_max_of_its_pieces():
    from imgclf.models.layers import Maxout

    rng = np.random.default_rng(0)
    dense_out = rng.normal(size=(2, 12)).astype("float32")  # 4 units × 3 pieces
    np.testing.assert_array_equal(
        np.asarray(Maxout(3)(dense_out)), dense_out.reshape(2, 4, 3).max(axis=-1)
    )
    conv_out = rng.normal(size=(2, 5, 5, 6)).astype("float32")  # 3 channels × 2 pieces
    np.testing.assert_array_equal(
        np.asarray(Maxout(2)(conv_out)), conv_out.reshape(2, 5, 5, 3, 2).max(axis=-1)
    )
    assert Maxout(3).get_config()["pieces"] == 3
    with pytest.raises(ValueError, match="divisible by 4"):
        Maxout(4)(dense_out[:, :10])


@pytest.mark.parametrize("name", MODELS)
def test_maxout_layers_follow_layers_with_units_times_pieces_outputs(name: str):
    model = _tiny(name, "model.activation=maxout", "model.maxout_pieces=3")
    sources = _sources(model)
    for act in (layer for layer in model.layers if layer.name.endswith("_act")):
        units = act.output.shape[-1]
        feeding = model.get_layer(sources[act.name][0])  # the linear layer or its batch-norm
        assert feeding.output.shape[-1] == 3 * units, act.name
    first = "dense1" if name == "mlp" else "fc1"
    assert model.get_layer(first).kernel.shape[-1] == 24  # 8 units × 3 pieces
    assert model.get_layer(f"{first}_act").output.shape[-1] == 8


# --- dropout -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_dropout_acts_in_training_only(name: str):
    x, _ = _batch()
    model = _tiny(name, "model.dropout=0.5", "model.hidden_dropout=0")
    a, b = np.asarray(model(x, training=True)), np.asarray(model(x, training=True))
    assert not np.allclose(a, b)
    c, d = np.asarray(model(x, training=False)), np.asarray(model(x, training=False))
    np.testing.assert_array_equal(c, d)
    # The randomness comes from the option: without dropout, training calls agree too.
    model = _tiny(name, "model.dropout=0", "model.hidden_dropout=0")
    a, b = np.asarray(model(x, training=True)), np.asarray(model(x, training=True))
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_hidden_dropout_follows_hidden_layers_and_dropout_precedes_the_output(name: str):
    import keras

    def dropouts(model) -> dict[str, float]:
        return {
            layer.name: layer.rate
            for layer in model.layers
            if isinstance(layer, keras.layers.Dropout)
        }

    model = _tiny(name, "model.dropout=0.4", "model.hidden_dropout=0.3", "model.hidden=[8,8]")
    found, sources = dropouts(model), _sources(model)
    assert found.pop("head_dropout") == pytest.approx(0.4)
    assert sources["probabilities"] == ["head_dropout"]
    blocks = 0 if name == "mlp" else 2  # after each conv block / resnet stage
    assert len(found) == 2 + blocks and all(r == pytest.approx(0.3) for r in found.values())
    for layer_name in found:  # right after an activation (or a conv block's pooling)
        assert sources[layer_name][0].endswith(("_act", "_pool")), (layer_name, sources)

    model = _tiny(name, "model.dropout=0.4", "model.hidden_dropout=0", "model.hidden=[8,8]")
    assert dropouts(model) == {"head_dropout": pytest.approx(0.4)}
    model = _tiny(name, "model.dropout=0", "model.hidden_dropout=0")
    assert dropouts(model) == {}


# --- regularisation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_l1_l2_decay_kernels_only(name: str):
    import keras

    model = _tiny(name, "model.l1=0", "model.l2=0")
    assert model.losses == []

    model = _tiny(name, "model.l1=0", "model.l2=0.01", "model.batch_norm=false")
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            assert layer.bias_regularizer is None and layer.kernel_regularizer is not None
            layer.bias.assign(np.ones(layer.bias.shape))  # a decayed bias would now show
    losses = [float(np.asarray(v)) for v in model.losses]
    assert losses and all(v > 0 for v in losses)
    kernels = [np.asarray(layer.kernel) for layer in _weighted(model)]
    assert len(losses) == len(kernels)
    assert sum(losses) == pytest.approx(0.01 * sum((k**2).sum() for k in kernels), rel=1e-4)

    model = _tiny(name, "model.l1=0.001", "model.l2=0")
    kernels = [np.asarray(layer.kernel) for layer in _weighted(model)]
    total = sum(float(np.asarray(v)) for v in model.losses)
    assert total == pytest.approx(0.001 * sum(np.abs(k).sum() for k in kernels), rel=1e-4)
    for layer in model.layers:  # batch-norm parameters are not decayed either
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.gamma_regularizer is None and layer.beta_regularizer is None


# --- batch-norm ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_batch_norm_replaces_biases(name: str):
    import keras

    def bns(model) -> list:
        return [
            layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
        ]

    model = _tiny(name, "model.batch_norm=false")
    assert all(layer.use_bias and layer.bias is not None for layer in _weighted(model))
    assert bns(model) == []

    model = _tiny(name, "model.batch_norm=true", "model.bn_momentum=0.8")
    assert all(not layer.use_bias and layer.bias is None for layer in _hidden(model))
    assert model.get_layer("probabilities").use_bias
    names = {layer.name for layer in bns(model)}
    assert names == {f"{layer.name}_bn" for layer in _hidden(model)}  # one per hidden layer
    assert all(layer.momentum == pytest.approx(0.8) for layer in bns(model))


# --- resnet --------------------------------------------------------------------------------


def _resnet(*extra: str, size: int = 16):
    return _tiny("resnet", "model.filters=[4,8,8]", "model.blocks_per_stage=2", *extra, size=size)


def test_resnet_has_residual_adds_and_projections_where_the_shape_changes():
    import keras

    model = _resnet("model.skip_connections=true")
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 3 * 2  # one per block
    # Stage 1 keeps the stem's shape: identity; stages 2 and 3 halve H, W: a projection that
    # subsamples by 2 and applies a 1×1 conv (= a 1×1 stride-2 conv).
    projections = {layer.name: layer for layer in _hidden(model) if layer.name.endswith("_proj")}
    assert set(projections) == {"stage2_block1_proj", "stage3_block1_proj"}
    assert all(p.kernel_size == (1, 1) for p in projections.values())
    sources = _sources(model)
    for name in projections:
        assert sources[name] == [f"{name}_subsample"]
        assert model.get_layer(f"{name}_subsample").strides == (2, 2)
    assert sorted(sources["stage1_block1_add"]) == ["stage1_block1_conv2_bn", "stem_act"]
    assert sorted(sources["stage2_block1_add"]) == [
        "stage2_block1_conv2_bn",
        "stage2_block1_proj_bn",
    ]
    assert sorted(sources["stage2_block2_add"]) == [
        "stage2_block1_out_act",
        "stage2_block2_conv2_bn",
    ]
    assert model.get_layer("stage3_block2_out_act").output.shape[1:] == (4, 4, 8)
    x, y = _batch()
    assert np.isfinite(_train_step(model, x, y))


def test_resnet_without_skip_connections_is_the_same_net_without_adds():
    import keras

    with_skip = _resnet("model.skip_connections=true")
    plain = _resnet("model.skip_connections=false")
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Add)]
    convs = {layer.name for layer in _hidden(with_skip) if not layer.name.endswith("_proj")}
    assert {layer.name for layer in _hidden(plain)} == convs
    proj_params = sum(
        layer.count_params()
        for layer in with_skip.layers
        if layer.name.endswith(("_proj", "_proj_bn"))
    )
    assert plain.count_params() == with_skip.count_params() - proj_params > 0
    x, y = _batch()
    assert np.isfinite(_train_step(plain, x, y))


def test_resnet_fits_small_and_large_images_and_rejects_too_small_ones():
    model = _tiny("resnet", "model.filters=[2,2,2,2]", size=8)  # 8 -> 4 -> 2 -> 1
    assert model.get_layer("stage4_block1_out_act").output.shape[1:] == (1, 1, 2)
    assert np.isfinite(np.asarray(model(np.zeros((1, 8, 8, 3)), training=False))).all()
    model = _tiny("resnet", "model.filters=[2,2]", "model.hidden=[]", size=224)
    assert model.output_shape == (None, len(CLASSES))
    with pytest.raises(ConfigError, match=r"data.image_size \[8, 8\].*model.filters") as err:
        _tiny("resnet", "model.filters=[2,2,2,2,2]", size=8)
    assert "\n" not in str(err.value)


# --- saving --------------------------------------------------------------------------------


@pytest.mark.slow
def test_custom_layers_survive_a_safe_mode_round_trip(tmp_path):
    import keras

    x, _ = _batch()
    expected = {}
    for act in ("abs", "maxout", "prelu"):
        model = _tiny("cnn", f"model.activation={act}", "model.maxout_pieces=3")
        for layer in model.layers:  # non-trivial PReLU slopes (they start at 0)
            if isinstance(layer, keras.layers.PReLU):
                layer.alpha.assign(np.full(layer.alpha.shape, 0.3, dtype="float32"))
        path = tmp_path / f"{act}.keras"
        model.save(path)
        expected[act] = np.asarray(model(x, training=False))
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected[act])
    # A fresh process (nothing imported yet) loads them once register_custom_layers() ran.
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        from imgclf.models.saving import register_custom_layers
        register_custom_layers()
        x = np.load({str(tmp_path / "x.npy")!r})
        for act in ("abs", "maxout", "prelu"):
            model = keras.saving.load_model({str(tmp_path)!r} + f"/{{act}}.keras", safe_mode=True)
            np.save({str(tmp_path)!r} + f"/{{act}}.out.npy", np.asarray(model(x, training=False)))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    for act, want in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{act}.out.npy"), want)


# --- the older checks ----------------------------------------------------------------------


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
    with pytest.raises(ConfigError, match=r"available: cnn, .*mlp, .*resnet, .*resnet50"):
        load_config(None, ["model.name=resnet9000"])
    config = load_config(None, ["data.image_size=[4,4]", "model.filters=[4,4,4]"])
    with pytest.raises(ConfigError, match="too small"):
        build_model(config, 3)


def test_resnet_never_uses_a_strided_1x1_convolution():
    """TensorFlow 2.21's oneDNN weight gradient of a strided 1×1 conv aborts the process with few
    input channels (4 channels, batch 5 here): the projection subsamples first instead, which
    computes the same thing. Train exactly that case."""
    import keras

    model = _tiny("resnet", "model.filters=[4,8]", "model.skip_connections=true")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not [c.name for c in convs if c.kernel_size == (1, 1) and c.strides != (1, 1)]
    assert "stage2_block1_proj_subsample" in [layer.name for layer in model.layers]
    x, y = _tiny_data(n_per_class=2, size=16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:5], y[:5], batch_size=5, epochs=3, verbose=0)  # aborted before the fix
