"""Test-time augmentation (TTA): classify several views of each image and average the
probabilities, as fastai's `tta` and timm's inference scripts do (Krizhevsky et al. 2012 averaged
ten crops and their mirror images; Simonyan & Zisserman 2015 mirror images and crops).

    none         the image itself (what every run did before; the default)
    flip         the image and its mirror image (left-right): 2 views
    flip+crops   those and the four corner crops of 90% of the height and width, each resized
                 back to the model's size (bilinear): 6 views

The views are Keras layers in front of the run's own serving model (`tta_model`; with the OOD
detector: `confidence.graph.serving_model`), so the
averaging happens inside one graph: Predictor runs it, the test evaluation reports it next to
the plain figure (metrics.json `test_tta`), and the SavedModel export carries it, checked for
parity against the same graph in Keras. The probabilities are the mean of the views'
(calibrated) probabilities; the out-of-distribution score and flag stay those of the image
itself. Every export carries it too: TFLite and MediaPipe are converted from that SavedModel,
ONNX traces the same graph, and each is checked against it (exports.json `tta`).

Use `flip` only where a mirror image keeps its class: photos of objects, animals, plants; not
digits, letters or anything with a handedness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgclf.infra.errors import UserError

if TYPE_CHECKING:
    import keras

MODES = ("none", "flip", "flip+crops")
CROP = 0.9  # the corner crops' share of the height and width
VIEWS = {"none": 1, "flip": 2, "flip+crops": 6}
MIN_SIDE = 10  # flip+crops: smaller images have no 90% crop to take


def check_mode(mode: str) -> str:
    """`mode` if it is one of MODES; UserError naming them otherwise."""
    if mode not in MODES:
        raise UserError(f"test-time augmentation {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def _mirror_layer() -> keras.layers.Layer:
    import keras

    class Mirror(keras.layers.Layer):
        """[N, H, W, C] -> the same images mirrored left-right."""

        def call(self, x: Any) -> Any:
            return keras.ops.flip(x, axis=2)

    return Mirror(name="tta_mirror")


def _views(inputs: Any, mode: str, height: int, width: int) -> list[Any]:
    """The views of `inputs` ([N, H, W, C] float32 raw pixels) for `mode`, the image first."""
    import keras

    views = [inputs]
    if mode in ("flip", "flip+crops"):
        views.append(_mirror_layer()(inputs))
    if mode == "flip+crops":
        # at least one pixel off each side (the config refuses flip+crops below MIN_SIDE)
        dh, dw = max(1, round(height * (1 - CROP))), max(1, round(width * (1 - CROP)))
        corners = {"tl": ((0, dh), (0, dw)), "tr": ((0, dh), (dw, 0)),
                   "bl": ((dh, 0), (0, dw)), "br": ((dh, 0), (dw, 0))}  # fmt: skip
        for name, cropping in corners.items():
            crop = keras.layers.Cropping2D(cropping, name=f"tta_crop_{name}")(inputs)
            resize = keras.layers.Resizing(height, width, "bilinear", name=f"tta_resize_{name}")
            views.append(resize(crop))
    return views


def tta_model(serving: keras.Model, mode: str, key: str = "probabilities") -> keras.Model:
    """`serving` (raw pixels -> probabilities [N, K], or a dict of outputs holding `key`, as
    `confidence.graph.scored_model` makes) behind the views of `mode`: the same outputs, with
    the probabilities averaged over the views and every other output taken from the image
    itself. `mode` none returns `serving` unchanged."""
    import keras

    if check_mode(mode) == "none":
        return serving
    _, height, width, channels = serving.input_shape
    inputs = keras.Input((height, width, channels), name="pixels")
    outputs = [serving(view, training=False) for view in _views(inputs, mode, height, width)]
    if isinstance(outputs[0], dict):
        mean = keras.layers.Average(name="tta_mean")([out[key] for out in outputs])
        result: Any = {**outputs[0], key: mean}
    else:
        result = keras.layers.Average(name="tta_mean")(outputs)
    return keras.Model(inputs, result, name=f"{serving.name}_tta")


def run_mode(run_dir: Any) -> str:
    """The run's `predict.tta` (config.yaml; "none" for a run from before the key)."""
    from imgclf import runs

    section = runs.read_config(run_dir).get("predict") or {}
    mode = section.get("tta", "none") if isinstance(section, dict) else "none"
    return mode if mode in MODES else "none"
