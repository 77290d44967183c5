"""Bounded, compiled forward passes: how images go through a model outside `fit`.

Every forward pass after training (the confidence fit, evaluation, the parity checks of every
export, the format corpus) and the cached-feature head phase runs here: a compiled function
(on TensorFlow one `tf.function` with a `[None, H, W, C]` float32 signature, traced once for
any batch size; `predict_on_batch` on other backends), called on batches of at most
`batch_size` images, which are cast to float32 one batch at a time. Memory then follows the
batch, not the split: an eager call (`model(images)`) keeps every intermediate activation of
its batch alive until it returns (256 images at 224 px through EfficientNet-Lite0 passed
16 GB), and a float32 copy of a whole split is 4× its uint8 pixels.

The batch size comes from the model (`inference_batch_size`): the largest layer output per
image, times ACTIVATION_COPIES (a layer's input and output, a residual branch and the kernel's
workspace are alive at once), must fit ACTIVATION_BUDGET; `train.eval_batch_size` overrides it.
`Forward.largest` records the largest batch any pass of this process ran (the test suite reads
it to check that nothing after training runs an unbounded batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from imgclf.data.pool import batches

MAX_BATCH = 256
ACTIVATION_BUDGET = 512 << 20  # bytes of activations one inference batch may hold
ACTIVATION_COPIES = 4


def activation_sizes(model: Any) -> tuple[int, int]:
    """(largest, total): the largest output of any layer of `model` (nested models included)
    and the sum of every layer's output, in elements per image; (0, 0) when no layer has a
    known static shape."""
    import keras

    largest = total = 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
            continue  # its layers count, not their output a second time
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a layer used twice, or never called
            continue
        for tensor in keras.tree.flatten(outputs):
            dims = tuple(getattr(tensor, "shape", ())[1:])
            if dims and all(isinstance(d, int) for d in dims):
                size = int(np.prod(dims))
                largest, total = max(largest, size), total + size
    return largest, total


def inference_batch_size(model: Any, setting: int | str = "auto") -> int:
    """Images per inference batch: `setting` when it is an int, else the most (up to MAX_BATCH,
    a multiple of 8 from 8 up) whose activations fit ACTIVATION_BUDGET (float32)."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        return setting
    per_image = activation_sizes(model)[0] * 4 * ACTIVATION_COPIES
    if per_image <= 0:
        return MAX_BATCH
    fits = ACTIVATION_BUDGET // per_image
    if fits >= 8:
        fits -= fits % 8
    return int(max(1, min(MAX_BATCH, fits)))


def predict_batch_size(model: Any, shape: tuple[int, ...]) -> int:
    """Images per forward pass of a predictor: a Keras `model`'s `inference_batch_size`; for an
    exported artifact (`model` None), whose layers are not visible, 64 scaled down by its input
    `shape` (H, W, C) beyond 64×64×3, at least 8 (224×224×3 gives 8)."""
    if model is not None:
        return inference_batch_size(model)
    scale = (64 * 64 * 3) / float(np.prod(shape))
    return int(max(8, min(64, 64 * scale)))


def _numpy(out: Any) -> Any:
    """A model's output as NumPy: an array, or a dict of arrays (`graph.scored_model`)."""
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return [np.asarray(v) for v in out]
    return np.asarray(out)


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(first))]
    return np.concatenate(parts)


class Forward:
    """`model` in inference mode as a compiled function on bounded batches.

    `Forward(model)(images)` -> the model's outputs for uint8 or float images [N, H, W, C]
    (NumPy: an array, or a dict of arrays for a model with several named outputs), computed
    `batch_size` images at a time; `stream(x)` yields them batch by batch for an array or a
    streamed split's `ImageView` (unreadable files left out), so a split of any size is read,
    cast and run one batch at a time.
    """

    largest: ClassVar[int] = 0  # the largest batch any Forward of this process has run

    def __init__(self, model: Any, batch_size: int | str = "auto") -> None:
        self.model = model
        self.batch_size = inference_batch_size(model, batch_size)
        self._fn = self._compile(model)

    @staticmethod
    def _compile(model: Any) -> Callable[[np.ndarray], Any]:
        import keras

        if keras.backend.backend() != "tensorflow":
            return model.predict_on_batch  # compiled by Keras, per input shape
        import tensorflow as tf

        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)

        @tf.function(input_signature=[spec], autograph=False, reduce_retracing=True)
        def forward(batch: tf.Tensor) -> Any:
            return model(batch, training=False)

        return lambda batch: forward(tf.convert_to_tensor(batch))

    def run_batch(self, images: np.ndarray) -> Any:
        """Outputs of one batch (at most `batch_size` images; raises ValueError above)."""
        if len(images) > self.batch_size:
            raise ValueError(f"{len(images)} images in one batch; at most {self.batch_size}")
        Forward.largest = max(Forward.largest, len(images))
        return _numpy(self._fn(np.asarray(images, np.float32)))

    def __call__(self, images: np.ndarray) -> Any:
        """Outputs for every image of an in-memory array, `batch_size` at a time."""
        parts = [
            self.run_batch(images[start : start + self.batch_size])
            for start in range(0, len(images), self.batch_size)
        ]
        if not parts:
            raise ValueError("no images to run the model on")
        return _concat(parts)

    def stream(self, x: Any, only: np.ndarray | None = None) -> Iterator[tuple[Any, np.ndarray]]:
        """(outputs, positions) per batch of the readable images of `x` (an array or a streamed
        split's ImageView), or of the positions `only` (ascending), in order."""

        for pixels, positions in batches(x, self.batch_size, only):
            if len(positions):
                yield self.run_batch(pixels), positions
