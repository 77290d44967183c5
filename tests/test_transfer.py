"""Transfer learning: pretrained backbones (ResNet50 at 32×32, weights written by the test), the
two-phase schedule (what freezes, what unfreezes, batch-norm untouched), layer-wise learning
rates, the cached-feature fast path, and re-using a run's own backbone end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from imgclf.config import load_config
from imgclf.infra.errors import ConfigError
from imgclf.models import available_models, build_model
from imgclf.models.backbones import APPLICATIONS
from imgclf.models.registry import is_pretrainable

RESNET = ["model.name=resnet50", "data.image_size=[32,32]", "data.channels=3"]


def _batch(n: int = 8, size: int = 32, channels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, channels)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(n) % 3]
    return x, y


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet50 (no top, 32×32) weights file, as an air-gapped user would copy one in."""
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(load_config(None, RESNET), 3)
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    model.get_layer("backbone").save_weights(str(path))
    return path


def _pretrained(weights: Path, *extra: str):
    return build_model(load_config(None, [*RESNET, f"model.weights={weights}", *extra]), 3)


def _bn_stats(model) -> list[np.ndarray]:
    import keras

    from imgclf.training.transfer import backbone_of, leaf_layers

    return [
        np.array(v)
        for layer in leaf_layers(backbone_of(model))
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def test_backbones_are_registered_and_pretrainable():
    names = set(available_models())
    assert {
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50v2",
        "resnet101v2",
        "resnet152v2",
    } <= names
    assert all(is_pretrainable(n) for n in APPLICATIONS)
    assert not is_pretrainable("cnn")


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_every_backbone_takes_raw_grey_pixels_at_32(name: str):
    config = load_config(None, [f"model.name={name}", "data.image_size=[32,32]", "data.channels=1"])
    model = build_model(config, 4)
    x, _ = _batch(2, channels=1)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("backbone").input_shape == (None, 32, 32, 3)  # grey became RGB


@pytest.mark.parametrize(
    ("mode", "module"), [("caffe", "resnet"), ("tf", "resnet_v2"), ("tf", "mobilenet_v2")]
)
def test_preprocessing_inside_the_model_matches_keras_preprocess_input(mode: str, module: str):
    import keras

    from imgclf.models.layers import BackbonePreprocess

    x, _ = _batch(3)
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    got = np.asarray(BackbonePreprocess(mode)(x))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    grey = x[..., :1]
    np.testing.assert_allclose(
        np.asarray(BackbonePreprocess(mode)(grey)),
        getattr(keras.applications, module).preprocess_input(np.repeat(grey, 3, axis=-1)),
        atol=1e-4,
    )


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="at least 32"):
        build_model(load_config(None, ["model.name=resnet50", "data.image_size=[28,28]"]), 3)


def test_weights_file_loads_identical_backbone_weights(resnet_weights: Path):
    import keras

    model = _pretrained(resnet_weights)
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    reference.load_weights(str(resnet_weights))
    got = model.get_layer("backbone").get_weights()
    want = reference.get_weights()
    assert len(got) == len(want) == 318
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_missing_or_wrong_weights_file_names_file_and_architecture(tmp_path: Path):
    import keras

    with pytest.raises(ConfigError, match=r"missing\.weights\.h5 does not exist.*resnet50"):
        _pretrained(tmp_path / "missing.weights.h5")
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    wrong = tmp_path / "dense.weights.h5"
    small.save_weights(str(wrong))
    with pytest.raises(ConfigError, match=r"dense\.weights\.h5 does not fit resnet50"):
        _pretrained(wrong)


def test_imagenet_or_file_weights_need_a_backbone_family():
    with pytest.raises(ConfigError, match="needs a pretrained backbone family"):
        load_config(None, ["model.name=cnn", "model.weights=imagenet"])


def test_freeze_leaves_exactly_the_head_trainable(resnet_weights: Path):
    from imgclf.training.transfer import freeze_backbone

    model = _pretrained(resnet_weights)
    freeze_backbone(model)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable == {"probabilities/kernel", "probabilities/bias"}


def test_unfreeze_top_n_and_by_name_and_never_batch_norm(resnet_weights: Path):
    import keras

    from imgclf.training.transfer import backbone_of, freeze_backbone, leaf_layers, unfreeze_top

    model = _pretrained(resnet_weights)
    leaves = leaf_layers(backbone_of(model))

    def is_bn(layer) -> bool:
        return isinstance(layer, keras.layers.BatchNormalization)

    for spec, first in ((10, len(leaves) - 10), ("conv5_block1_1_conv", None), ("all", 0)):
        freeze_backbone(model)
        names = unfreeze_top(model, spec)
        start = first if first is not None else [x.name for x in leaves].index(spec)
        want = {x.name for x in leaves[start:] if not is_bn(x)}
        assert {x.name for x in leaves if x.trainable} == want
        assert not any(x.trainable for x in leaves if is_bn(x))
        assert set(names) == {x.name for x in leaves[start:] if x.weights and not is_bn(x)}
        assert model.get_layer("probabilities").trainable  # the head keeps training
    with pytest.raises(ConfigError, match="did you mean conv5_block3_3_conv"):
        unfreeze_top(model, "conv5_block3_3_con")


@pytest.mark.slow
def test_batch_norm_statistics_do_not_change_in_either_phase(resnet_weights: Path):
    from imgclf.training.transfer import freeze_backbone, unfreeze_top

    model = _pretrained(resnet_weights)
    x, y = _batch()
    before = _bn_stats(model)
    freeze_backbone(model)
    # Eager steps: the same layers and flags as a compiled fit, without tracing ResNet50.
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    kernel = np.array(model.get_layer("backbone").get_layer("conv5_block3_3_conv").kernel)
    unfreeze_top(model, "all")
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    # ...while the unfrozen convolutions did train (so the test is not vacuous).
    after = np.array(model.get_layer("backbone").get_layer("conv5_block3_3_conv").kernel)
    assert not np.array_equal(kernel, after)


def test_block_names_group_backbone_layers():
    from imgclf.training.transfer import block_of

    assert block_of("conv4_block3_2_conv") == "conv4_block3"
    assert block_of("conv1_conv") == "conv1"
    assert block_of("block_16_expand") == "block_16"
    assert block_of("block6a_se_reduce") == "block6a"
    assert block_of("conv2_1_bn") == "conv2"


def test_layer_lr_decay_scales_each_block_update(tiny_run: Path):
    import keras

    from imgclf.training.transfer import (
        freeze_backbone,
        layerwise_rates,
        unfreeze_top,
        with_layer_rates,
    )

    config = load_config(None, [*tiny_overrides(Path("unused")), f"model.weights={tiny_run}"])
    model = build_model(config, 3)
    freeze_backbone(model)
    unfreeze_top(model, "all")
    factors = layerwise_rates(model, 0.5)
    by_name = {v.path: factors.get(id(v), 1.0) for v in model.trainable_variables}
    # cnn backbone blocks from the top: fc1, conv2, conv1 -> 0.5, 0.25, 0.125; head 1.
    assert by_name["probabilities/kernel"] == 1.0
    assert {k.split("/")[-2]: f for k, f in by_name.items() if k.endswith("kernel")} == {
        "fc1": 0.5, "conv2_2": 0.25, "conv2_1": 0.25, "conv1_2": 0.125, "conv1_1": 0.125,
        "probabilities": 1.0,
    }  # fmt: skip
    optimizer = with_layer_rates(keras.optimizers.SGD(0.1), model, factors)
    variables = model.trainable_variables
    before = [np.array(v) for v in variables]
    grads = [np.ones(v.shape, dtype="float32") for v in variables]
    optimizer.apply(grads, variables)
    for v, old in zip(variables, before, strict=True):
        np.testing.assert_allclose(old - np.array(v), 0.1 * by_name[v.path], rtol=1e-5)
    assert type(optimizer).__name__ == "SGD"  # saved as a plain SGD in model.keras


def test_reuse_loads_the_backbone_of_a_run(tiny_run: Path):
    from imgclf.models.saving import load_run_model
    from imgclf.training.transfer import backbone_of

    config = load_config(None, [*tiny_overrides(Path("unused")), f"model.weights={tiny_run}"])
    model = build_model(config, 5)
    source = load_run_model(tiny_run)
    backbone = backbone_of(model)
    shared = [layer.name for layer in backbone.layers if layer.weights]
    assert "conv1_1" in shared and "fc1" in shared and "probabilities" not in shared
    for name in shared:
        for a, b in zip(
            backbone.get_layer(name).get_weights(),
            source.get_layer(name).get_weights(),
            strict=True,
        ):
            assert np.array_equal(a, b)
    assert model.output_shape == (None, 5)  # a new head for the new label set


def test_reuse_refuses_a_missing_run_and_a_wrong_family_or_size(tiny_run: Path, tmp_path: Path):
    base = tiny_overrides(Path("unused"))
    with pytest.raises(ConfigError, match="is not a run directory"):
        build_model(load_config(None, [*base, f"model.weights={tmp_path / 'nope'}"]), 3)
    with pytest.raises(ConfigError, match=r"set model\.name=cnn"):
        build_model(load_config(None, [*base, f"model.weights={tiny_run}", "model.name=resnet"]), 3)
    with pytest.raises(ConfigError, match=r"data.image_size=\[32,32\]"):
        build_model(
            load_config(None, [*base, f"model.weights={tiny_run}", "data.image_size=[28,28]"]), 3
        )


def test_reuse_finds_the_newest_run_of_a_name(tiny_run: Path, tmp_path: Path):
    import shutil

    from imgclf.models.reuse import resolve_run

    shutil.copytree(tiny_run, tmp_path / "pre-20260101-000000")
    shutil.copytree(tiny_run, tmp_path / "pre-20260102-000000")
    assert resolve_run(tmp_path / "pre") == tmp_path / "pre-20260102-000000"


@pytest.mark.slow
def test_cached_features_train_the_same_head_as_the_slow_path(tiny_run: Path, folder_dataset):
    import keras

    from imgclf.data import load_data
    from imgclf.training.optim import compile_model, steps_per_epoch
    from imgclf.training.transfer import fit_head_on_features, freeze_backbone, plan_phases

    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), f"model.weights={tiny_run}", "transfer.head_epochs=3"],
    )
    splits = load_data(config)
    head = plan_phases(config)[0]
    assert head.name == "head"

    def fresh():
        keras.utils.set_random_seed(0)
        model = build_model(config, 3)
        freeze_backbone(model)
        return model

    fast = fresh()
    fit_head_on_features(fast, splits, config, head, 8, [], None, 0)
    slow = fresh()
    compile_model(slow, head.train, steps_per_epoch(len(splits.train), 8))
    from imgclf.data.pipeline import epoch_order_callback
    from imgclf.training.backend import make_training_data

    train_ds, val_ds = make_training_data(splits, config, 8)
    # As every fit in imgclf: each epoch its own shuffled order.
    order = epoch_order_callback(train_ds)
    slow.fit(
        train_ds, validation_data=val_ds, epochs=3, verbose=0, shuffle=False, callbacks=[order]
    )
    for a, b in zip(
        fast.get_layer("probabilities").get_weights(),
        slow.get_layer("probabilities").get_weights(),
        strict=True,
    ):
        assert not np.allclose(a, 0)
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_two_phase_run_end_to_end(tiny_run: Path, folder_dataset: Path, tmp_path: Path):
    """A transfer run from a run directory: history.csv holds both phases, the backbone's
    batch-norm statistics are the source run's, and the artifacts describe the phases."""
    from imgclf.models.saving import load_run_model
    from imgclf.train import train

    config = load_config(
        None,
        [
            *tiny_overrides(folder_dataset),
            f"model.weights={tiny_run}",
            "transfer.head_epochs=2",
            "transfer.fine_tune_epochs=2",
            "transfer.unfreeze=fc1",
            "train.early_stopping.patience=0",
        ],
    )
    run = train(config, out=tmp_path / "transfer", verbose=0)
    with (run / "history.csv").open() as fh:
        phases = [row["phase"] for row in csv.DictReader(fh)]
    assert phases == ["head", "head", "fine_tune", "fine_tune"]
    metrics = json.loads((run / "metrics.json").read_text())
    head, fine = metrics["phases"]
    assert head["cached_features"] is True and head["trainable_params"] == 16 * 3 + 3
    assert fine["unfrozen_layers"] == ["fc1"]
    assert fine["learning_rate"] == pytest.approx(0.01 * 0.1)
    model = load_run_model(run)
    source = load_run_model(tiny_run)
    backbone = model.get_layer("backbone")
    for name in ("conv1_1_bn", "conv2_2_bn"):
        for a, b in zip(
            backbone.get_layer(name).get_weights(),
            source.get_layer(name).get_weights(),
            strict=True,
        ):
            assert np.array_equal(a, b)  # frozen BN: gamma, beta and moving statistics
    card = (run / "model_card.md").read_text()
    assert "Phase `head`" in card and "Phase `fine_tune`" in card
    assert (run / "plots" / "curves.png").stat().st_size > 0


def test_transfer_config_errors_teach():
    with pytest.raises(ConfigError, match="both 0"):
        load_config(None, ["transfer.head_epochs=0", "transfer.fine_tune_epochs=0"])
    with pytest.raises(ConfigError, match="needs augmentation off"):
        load_config(None, ["transfer.cache_features=true"])
    with pytest.raises(ConfigError, match=r"transfer\.fine_tune_lr_factor"):
        load_config(None, ["transfer.fine_tune_lr_factor=2"])


def test_phase_starts_mark_fine_tuning():
    from imgclf.runs import phase_starts

    assert phase_starts(["head", "head", "fine_tune"]) == [(3, "fine_tune")]
    assert phase_starts(["train", "train"]) == []


def test_backbone_layer_cuts_the_reused_model_where_asked(tiny_run: Path):
    from imgclf.training.transfer import backbone_of

    base = [*tiny_overrides(Path("unused")), f"model.weights={tiny_run}"]
    model = build_model(load_config(None, [*base, "transfer.backbone_layer=conv2_pool"]), 3)
    assert backbone_of(model).output_shape == (None, 8, 8, 8)  # conv features, no fc1
    assert model.get_layer("features").output.shape == (None, 8 * 8 * 8)  # flattened
    assert "fc1" not in [layer.name for layer in backbone_of(model).layers]
    with pytest.raises(ConfigError, match="did you mean conv2_pool"):
        build_model(load_config(None, [*base, "transfer.backbone_layer=conv2_poll"]), 3)


def test_legacy_h5_weights_file_loads(resnet_weights: Path, tmp_path: Path):
    """Keras' cached *_notop.h5 files are in the legacy HDF5 layout; write one and load it."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    source = _pretrained(resnet_weights).get_layer("backbone")
    legacy = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy, "w") as fh:
        save_weights_to_hdf5_group(fh, source)
    loaded = _pretrained(legacy).get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, source.get_weights(), strict=True))


def test_gradcam_finds_the_feature_map_inside_a_reused_backbone(tiny_run: Path):
    from imgclf.explain import find_target_layer, gradcam

    config = load_config(None, [*tiny_overrides(Path("unused")), f"model.weights={tiny_run}"])
    model = build_model(config, 3)
    assert find_target_layer(model) == "backbone/conv2_2_act"
    heat = gradcam(model, _batch(2)[0])
    assert heat.shape == (2, 32, 32) and float(heat.max()) == pytest.approx(1.0)


def test_augmented_views_are_cached_once_each_and_epochs_take_turns(
    tiny_run: Path, folder_dataset: Path, tmp_path: Path
):
    """transfer.augmented_views: every cached view is the backbone's features of the training
    images as the augmentation changed them (here a random horizontal flip: each row is the
    image's own features or its mirror's), and epoch e reads view e mod K."""
    import keras

    from imgclf.data import load_data
    from imgclf.forward import Forward
    from imgclf.training.augment import build_augmenter
    from imgclf.training.feature_cache import augmented_views

    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), f"model.weights={tiny_run}", "augment.flip=horizontal",
         "transfer.augmented_views=3"],
    )  # fmt: skip
    splits = load_data(config)
    model = build_model(config, 3)
    extractor = Forward(keras.Model(model.inputs, model.get_layer("features").output), 4)
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    x = np.asarray(splits.train.x)
    plain, mirrored = extractor(x), extractor(x[:, :, ::-1])
    with open(tmp_path / "views.f32", "w+b") as store:
        views, kept = augmented_views(extractor, splits.train, augmenter, 3, 3, store)
        assert views.features.shape == (3, len(x), plain.shape[1])
        assert np.array_equal(kept, np.arange(len(x)))
        for view in np.asarray(views.features):
            as_is = np.isclose(view, plain, atol=1e-4).all(axis=1)
            flipped = np.isclose(view, mirrored, atol=1e-4).all(axis=1)
            assert (as_is | flipped).all()  # nothing but the configured augmentation
            assert flipped.any() and as_is.any()  # and it is random per image
        assert not np.allclose(views.features[0], views.features[1])
        for epoch in (0, 1, 2, 4):
            views.set_epoch(epoch)
            assert np.array_equal(views[np.arange(5)], views.features[epoch % 3][:5])


def test_augmented_views_run_end_to_end(tiny_run: Path, folder_dataset: Path, tmp_path: Path):
    from imgclf import runs
    from imgclf.train import train

    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), f"model.weights={tiny_run}", "augment.flip=horizontal",
         "transfer.augmented_views=2", "transfer.head_epochs=3", "transfer.fine_tune_epochs=1"],
    )  # fmt: skip
    run = train(config, out=tmp_path / "views", verbose=0)
    phases = runs.read_json(run / runs.METRICS)["phases"]
    assert phases[0]["phase"] == "head" and phases[0]["cached_features"] is True
    assert phases[0]["epochs_run"] == 3 and phases[1]["cached_features"] is False
    from imgclf.infra.cache import cache_dir

    assert not list(cache_dir().glob("imgclf-views-*"))  # the views' file went with the phase


def test_augmented_views_refuse_what_they_cannot_cache(folder_dataset: Path):
    base = [
        *tiny_overrides(folder_dataset),
        "augment.flip=horizontal",
        "transfer.augmented_views=2",
    ]
    with pytest.raises(ConfigError, match="MixUp or CutMix"):
        load_config(None, [*base, "augment.mixup=0.2"])
    with pytest.raises(ConfigError, match="cache_features=false"):
        load_config(None, [*base, "transfer.cache_features=false"])
