"""Grad-CAM (Selvaraju et al., 2017): which parts of an image drove a class score.

For a target feature map A [N, h, w, K] (by default the last convolutional one) and a class c,
Grad-CAM weights each channel k by the spatial mean of d(score_c)/dA_k and keeps the positive
part of the weighted sum: relu(sum_k w_k A_k), [N, h, w]. The map is upsampled (bilinear) to the
input size and divided by its maximum, so every heatmap spans 0..1 (an all-zero map stays zero).
score_c is the class's logit, the pre-softmax output, as in the paper: softmax probabilities
saturate at 1.0 for confident images and their gradients vanish.

    layer = find_target_layer(model)              # e.g. "conv2_2_act", "stage2_block1_out_act"
    heatmaps = gradcam(model, images)             # raw pixels [N, H, W, C] -> [N, H, W] in 0..1
    rgb = overlay(images[0], heatmaps[0])         # uint8 [H, W, 3]: image blended with "jet"
    paths = explain_files(model, ["cat.jpg"], "out/")   # out/cat_gradcam.png

The target layer is found from the output backwards: the last layer with a 4-D output that is a
convolution, an activation / normalisation / merge layer after one, or a nested keras.Model (a
pretrained `backbone`, whose output is its last feature map). `layer="backbone/<name>"` (or the
bare inner name) targets a layer inside a nested model. Grad-CAM needs the TensorFlow backend
(`tf.GradientTape`); Keras and TensorFlow are imported on first use, not with this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.forward import activation_sizes
from imgclf.infra.errors import UserError

if TYPE_CHECKING:
    import keras

BATCH_SIZE = 64  # images per forward/backward pass at most (fewer for big activations)
# A gradient tape keeps every activation of its batch: at most this many bytes of them.
TAPE_BUDGET = 512 << 20
_NAMES_SHOWN = 8  # valid layer names listed in an unknown-layer error


def _require_tensorflow() -> None:
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UserError(
            f"Grad-CAM needs KERAS_BACKEND=tensorflow (it uses tf.GradientTape); the active "
            f"Keras backend is {backend!r}"
        )


def _rank4(tensor: Any) -> bool:
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) == 4


def _layer_kinds() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(convolutions, layers that may follow a convolution and still be its feature map)."""
    from keras import layers

    from imgclf.models.layers import Abs, Maxout

    convs = (
        layers.Conv2D,
        layers.DepthwiseConv2D,
        layers.SeparableConv2D,
        layers.Conv2DTranspose,
    )
    followers = (
        layers.ReLU,
        layers.LeakyReLU,
        layers.PReLU,
        layers.ELU,
        layers.Activation,
        Abs,
        Maxout,
        layers.BatchNormalization,
        layers.LayerNormalization,
        layers.GroupNormalization,
        layers.Add,
        layers.Concatenate,
        layers.Multiply,
    )
    return convs, followers


def _outer_output(layer: keras.Layer) -> Any:
    """The symbolic tensor `layer` produced in the graph of the model that holds it."""
    import keras

    if not isinstance(layer, keras.Model):
        return layer.output
    # A nested functional model's `.output` is its *inner* graph's output; the tensor it produced
    # in the outer graph is only recorded on the node of that call (Keras 3 has no public
    # accessor). Models built by imgclf call their backbone exactly once.
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise UserError(
            f"nested model {layer.name!r} is called {len(nodes)} times; Grad-CAM needs a nested "
            f"model that is called once"
        )
    return nodes[0].output_tensors[0]


def _candidates(model: keras.Model) -> list[str]:
    """Names of the top-level layers Grad-CAM can target, from the output backwards."""
    import keras

    convs, followers = _layer_kinds()
    found = []
    seen_conv = False  # in topological order: has a convolution (or backbone) come yet?
    for layer in model.layers:
        nested = isinstance(layer, keras.Model)
        is_conv = nested or isinstance(layer, convs)
        seen_conv = seen_conv or is_conv
        if not (is_conv or (seen_conv and isinstance(layer, followers))):
            continue
        if _rank4(_outer_output(layer) if nested else layer.output):
            found.append(layer.name)
        elif nested:
            # A re-used run's backbone (models/reuse.py) ends in dense features: its last
            # feature map is inside it, addressed as "<nested>/<inner>".
            found += [f"{layer.name}/{name}" for name in reversed(_candidates(layer))]
    return found[::-1]


def _inner_names(model: keras.Model) -> list[str]:
    """`<nested>/<layer>` for the 4-D layers inside nested models (listed in error messages)."""
    import keras

    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += [f"{layer.name}/{name}" for name in _candidates(layer)[:_NAMES_SHOWN]]
    return names


def find_target_layer(model: keras.Model) -> str:
    """The name of the last convolutional feature map of `model`, Grad-CAM's default target.

    Walks the layers from the output backwards and takes the first whose output is 4-D
    [N, H, W, C] and that is a Conv2D, an activation, normalisation or merge layer (Add, ...)
    after a convolution, or a nested keras.Model (a `backbone`). Pooling and dropout after the
    last convolution are passed over: the activation before them is the map itself. Raises
    UserError for a model without one (an `mlp`).
    """
    found = _candidates(model)
    if not found:
        raise UserError(
            f"Grad-CAM needs a convolutional model; {model.name} has no convolutional feature map"
        )
    return found[0]


def validate(model: keras.Model, layer: str | None = None) -> str:
    """Check that Grad-CAM can run on `model` (TensorFlow backend, a feature map to target) and
    return the target layer's name: `layer` if it names one, else `find_target_layer(model)`.

    `layer` may name a top-level layer, `"<nested>/<inner>"` for a layer inside a nested model
    (e.g. "backbone/conv4_block6_out") or a bare inner name found in exactly one nested model.
    Raises UserError with a few valid names when it names none.
    """
    _require_tensorflow()
    if layer is None:
        return find_target_layer(model)
    _resolve(model, layer)
    return layer


def _resolve(model: keras.Model, name: str) -> tuple[keras.Layer, keras.Layer | None]:
    """(the layer named `name`, the nested model holding it or None for a top-level layer)."""
    import keras

    top = {layer.name: layer for layer in model.layers}
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    found: list[tuple[keras.Layer, keras.Layer | None]] = []
    if name in top:
        found = [(top[name], None)]
    elif "/" in name:
        outer, inner = name.split("/", 1)
        if outer in top and isinstance(top[outer], keras.Model):
            found = [(lay, top[outer]) for lay in top[outer].layers if lay.name == inner]
    else:
        found = [(lay, host) for host in nested for lay in host.layers if lay.name == name]
    if len(found) > 1:
        hosts = ", ".join(f"{host.name}/{name}" for _, host in found if host is not None)
        raise UserError(f"layer {name!r} is in more than one nested model; name one of: {hosts}")
    target, host = found[0] if found else (None, None)
    out = None
    if target is not None:
        out = target.output if host is not None else _outer_output(target)
    if target is None or not _rank4(out) or isinstance(target, keras.layers.InputLayer):
        valid = _candidates(model)[:_NAMES_SHOWN] + _inner_names(model)
        what = "has no layer" if target is None else "has no 4-D feature map at"
        raise UserError(
            f"{model.name} {what} {name!r}; Grad-CAM layers (last first): "
            f"{', '.join(valid) if valid else 'none (not a convolutional model)'}"
        )
    return target, host


def _output_layer(model: keras.Model) -> keras.Layer | None:
    """The top-level layer that produces the model's (first) output, if it is a plain layer."""
    import keras

    for layer in reversed(model.layers):
        if not isinstance(layer, keras.Model) and layer.output is model.outputs[0]:
            return layer
    return None


def _cut(inputs: list[Any], cut: Any, output: Any) -> tuple[Any, Callable[[Any, Any], Any]]:
    """Split the graph inputs -> output at the tensor `cut`: (inputs -> cut, (x, cut) -> output).

    The second part starts at `cut`, so a tape that watches the feature map records only the ops
    after it: no gradients flow into earlier layers (whose filter gradients TensorFlow would
    compute for nothing). Where a later layer also reads an earlier tensor (a shortcut across
    `cut`), that part takes the images too and recomputes the earlier path, unrecorded.
    """
    import keras

    before = keras.Model(inputs, cut)
    try:
        after = keras.Model(cut, output)
    except ValueError:  # "graph disconnected": something after `cut` also reads the inputs
        both = keras.Model([*inputs, cut], output)
        return before, lambda x, feats: both([x, feats], training=False)
    return before, lambda x, feats: after(feats, training=False)


def _split(model: keras.Model, name: str) -> tuple[Any, Callable[[Any, Any], Any]]:
    """(images -> target feature map, (images, feature map) -> input of the output layer).

    The output layer's input is where `_scores` starts; for a model whose output layer is not a
    softmax Dense it is the model's output itself.
    """
    import keras

    final = _output_layer(model)
    head_in = final.input if _is_softmax_dense(final) else model.outputs[0]
    target, host = _resolve(model, name)
    if host is None:
        return _cut(model.inputs, _outer_output(target), head_in)
    # A layer inside a nested model (backbone) is no tensor of the outer graph: split the outer
    # graph around the nested model's call and the nested graph around the layer.
    _outer_output(host)  # raises for a nested model called more than once
    node = host._inbound_nodes[0]
    to_host = keras.Model(model.inputs, node.input_tensors[0])
    inner_before, inner_after = _cut(host.inputs, target.output, host.outputs[0])
    _, outer_after = _cut(model.inputs, node.output_tensors[0], head_in)

    def features(x: Any) -> Any:
        return inner_before(to_host(x, training=False), training=False)

    def rest(x: Any, feats: Any) -> Any:
        return outer_after(x, inner_after(to_host(x, training=False), feats))

    return features, rest


def _is_softmax_dense(layer: keras.Layer | None) -> bool:
    import keras

    return (
        isinstance(layer, keras.layers.Dense)
        and getattr(layer.activation, "__name__", "") == "softmax"
    )


def _scores(model: keras.Model, head_in: Any) -> Any:
    """Class scores [N, classes], float32: logits when the output layer is a softmax Dense
    (imgclf's `probabilities`): its matmul is redone without the softmax, leaving the model
    untouched (the app shares one loaded model). Otherwise the model's outputs."""
    from keras import ops

    final = _output_layer(model)
    if not _is_softmax_dense(final):
        return ops.cast(head_in, "float32")
    z = ops.matmul(ops.cast(head_in, final.kernel.dtype), final.kernel)
    return ops.cast(z + final.bias if final.use_bias else z, "float32")


def _class_indices(class_index: int | Sequence[int] | None, n: int, classes: int) -> np.ndarray:
    """Per-image class indices [n] (-1 = the predicted class), checked against `classes`."""
    if class_index is None:
        return np.full(n, -1, dtype=np.int64)
    idx = np.asarray(class_index)
    if idx.dtype.kind not in "iu" or idx.ndim > 1:
        raise ValueError(f"class_index must be an int or a sequence of ints, got {class_index!r}")
    if idx.ndim == 1 and len(idx) != n:
        raise ValueError(f"class_index has {len(idx)} entries for {n} images")
    idx = np.broadcast_to(idx, (n,)).astype(np.int64)
    bad = idx[(idx < 0) | (idx >= classes)]
    if bad.size:
        raise ValueError(f"class_index {int(bad[0])} is out of range for {classes} classes")
    return idx


def tape_batch_size(model: keras.Model) -> int:
    """Images per Grad-CAM pass: BATCH_SIZE, fewer when the tape's activations (2 × 4 bytes ×
    every layer's output per image, `forward.activation_sizes`) would pass TAPE_BUDGET
    (EfficientNet-Lite0 at 224 px: 3 images)."""

    per_image = 8 * activation_sizes(model)[1]
    return int(max(1, min(BATCH_SIZE, TAPE_BUDGET // per_image if per_image else BATCH_SIZE)))


def _checked_images(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """`images` as float32 [N, H, W, C]; ValueError unless they match the model's input shape."""
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or any(
        want is not None and got != want
        for got, want in zip(images.shape[1:], expected, strict=False)
    ):
        raise ValueError(f"images must be [N, {', '.join(map(str, expected))}], got {images.shape}")
    return images


def _normalised(maps: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """The batches' raw maps joined and scaled per image to 0..1: float32 [N, H, W]."""
    if not maps:
        return np.zeros((0, height, width), dtype=np.float32)
    cam = np.nan_to_num(np.concatenate(maps), nan=0.0, posinf=0.0, neginf=0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    # No positive evidence anywhere: leave the map at zero instead of dividing by zero.
    scaled = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    class_index: int | Sequence[int] | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps [N, H, W] (float32, 0..1) of raw images [N, H, W, C] (0..255).

    Images are at the model's input size; the model does its own preprocessing. `class_index`
    is None (each image's predicted class), one class for all images, or one per image. `layer`
    overrides `find_target_layer` (see `validate` for the names it takes). Each map is the ReLU
    of the gradient-weighted feature map, upsampled bilinearly to H×W and divided by its maximum;
    a map with no positive evidence is all zeros. Needs the TensorFlow backend.
    """
    name = validate(model, layer)  # first: under another backend, a clear error
    import tensorflow as tf

    images = _checked_images(model, images)
    features, rest = _split(model, name)
    n, height, width = images.shape[:3]
    classes = int(model.outputs[0].shape[-1])
    wanted = _class_indices(class_index, n, classes)
    spec = (
        tf.TensorSpec([None, *images.shape[1:]], tf.float32),
        tf.TensorSpec([None], tf.int32),
    )

    # One traced function, not eager ops: in a graph TensorFlow prunes the gradients nobody asked
    # for, where eager Conv2D backprop always computes its filter gradient too (and this oneDNN
    # build corrupts the heap on some: 1×1 stride-2 convs with few input channels).
    @tf.function(input_signature=spec)
    def heat(batch: tf.Tensor, wanted: tf.Tensor) -> tf.Tensor:
        feats = features(batch)  # [B, h, w, K], computed outside the tape
        # Only what follows the feature map is recorded: no variable is watched.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(feats)
            scores = _scores(model, rest(batch, feats))  # [B, classes]
            predicted = tf.argmax(scores, axis=1, output_type=tf.int32)
            chosen = tf.where(wanted < 0, predicted, wanted)
            score = tf.gather(scores, chosen, axis=1, batch_dims=1)  # [B]
        # Each image's score depends on its own features only (inference mode), so the gradient
        # of the batch's sum is every image's own gradient.
        grads = tape.gradient(score, feats)
        if grads is None:
            raise UserError(f"the class scores of {model.name} do not depend on layer {name!r}")
        weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(feats, tf.float32), axis=-1))
        return tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]

    size = tape_batch_size(model)
    maps = [
        heat(images[i : i + size], wanted[i : i + size].astype(np.int32)).numpy()
        for i in range(0, n, size)
    ]  # [B, H, W] each
    return _normalised(maps, height, width)
