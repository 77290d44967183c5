"""Re-use your own backbone: `model.weights: runs/<run>` takes the model a run trained (any
registered family) up to its features — everything but the final classification layer and the
dropout before it — and puts a new softmax head on it for the new label set.

    pixels -> backbone (the earlier model's layers, preprocessing included, a nested model named
    "backbone", called with training=False) -> features -> [head_dropout] -> probabilities

This is how a user pre-trains on one dataset and transfers to another, and how imgclf shows
transfer learning offline (configs/pretrain_mnist_0to4.yaml -> transfer_mnist_5to9_few_shot.yaml).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf import runs
from imgclf.infra.errors import ConfigError
from imgclf.models import names
from imgclf.models.saving import load_run_model

if TYPE_CHECKING:
    import keras

    from imgclf.schema import Config


def resolve_run(reference: str | Path) -> Path:
    """The run directory `model.weights` names: the directory itself, or, when it does not
    exist, the newest run in its parent folder whose name is `<name>-<timestamp>` (so a recipe
    can say `runs/pretrain_mnist_0to4` and find the latest run of that config)."""
    path = Path(reference).expanduser()
    if runs.is_run_dir(path):
        return path
    if path.parent.is_dir():
        named = sorted(
            (
                p
                for p in path.parent.glob(f"{path.name}-*")
                if runs.is_run_dir(p) and runs.read_state(p).complete
            ),
            key=lambda p: p.stat().st_mtime,
        )
        if named:
            return named[-1]
    raise ConfigError(
        f"model.weights: {reference} is not a run directory (with {runs.MODEL}) and no run "
        f"named {path.name}-<time> is in {path.parent}; train that run first, or give "
        "imagenet, a .h5 weights file, or null"
    )


def feature_tensor(model: keras.Model) -> keras.KerasTensor:
    """The tensor a model's head reads: the `features` layer's output, or else the input of
    its head (head_dropout, or probabilities when there is no dropout)."""
    layer_names = {layer.name for layer in model.layers}
    if names.FEATURES in layer_names:
        return model.get_layer(names.FEATURES).output
    for name in names.HEAD:
        if name in layer_names:
            return model.get_layer(name).input
    raise ConfigError(
        f"model.weights: the model {model.name!r} has no `probabilities` layer; only models "
        "trained by imgclf can be re-used as a backbone"
    )


def cut_tensor(model: keras.Model, layer: str | None) -> keras.KerasTensor:
    """The output of `layer` (transfer.backbone_layer), or the old head's input when None."""
    if layer is None:
        return feature_tensor(model)
    layer_names = [x.name for x in model.layers]
    if layer not in layer_names or layer in names.HEAD:
        close = difflib.get_close_matches(layer, layer_names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"transfer.backbone_layer: the re-used model has no layer {layer!r} below its head"
            f"{hint} (its layers: {', '.join(n for n in layer_names if n not in names.HEAD)})"
        )
    return model.get_layer(layer).output


def build_from_run(config: Config, num_classes: int) -> keras.Model:
    """The backbone of the run `config.model.weights` under a new head for `num_classes`."""
    import keras

    from imgclf.models.blocks import softmax_head

    run_dir = resolve_run(config.model.weights or "")
    source = runs.read_config(run_dir) if (run_dir / runs.CONFIG).is_file() else {}
    family = source.get("model", {}).get("name")
    if family and family != config.model.name:
        raise ConfigError(
            f"model.weights: {run_dir} holds a `{family}` model but model.name is "
            f"`{config.model.name}`; set model.name={family}"
        )
    old = load_run_model(run_dir)
    shape = tuple(old.input_shape[1:])
    wanted = (*config.data.image_size, config.data.channels)
    if shape != wanted:
        raise ConfigError(
            f"model.weights: {run_dir} was trained on {shape[0]}×{shape[1]}×{shape[2]} images "
            f"but data.image_size/channels give {wanted[0]}×{wanted[1]}×{wanted[2]}; set "
            f"data.image_size=[{shape[0]},{shape[1]}] and data.channels={shape[2]}"
        )
    backbone = keras.Model(
        old.inputs, cut_tensor(old, config.transfer.backbone_layer), name=names.BACKBONE
    )
    inputs = keras.Input(shape=shape, name=names.INPUT)
    # training=False: the earlier model's batch-norm statistics and dropout stay as trained.
    x = backbone(inputs, training=False)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten_features")(x)
    x = keras.layers.Identity(name=names.FEATURES)(x)
    outputs = softmax_head(x, config.model, num_classes)
    return keras.Model(inputs, outputs, name=f"{config.model.name}_transfer")
