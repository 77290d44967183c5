"""ONNX export of a run, checked against model.keras in ONNX Runtime.

`model.onnx` takes `pixels` (float32 [N, H, W, C], raw 0..255 at the model's size: the
preprocessing is inside the graph, as in every imgclf model) and returns `probabilities`
(float32 [N, classes]); the class names travel in the file's metadata (`labels`, a JSON list),
so a client needs nothing else. It is converted from model.keras by tf2onnx (constants baked in,
see `convert`), then run on the first 256 test images (`parity.PARITY_MAX_IMAGES`) in
onnxruntime and compared with model.keras; an export outside the thresholds is not written.

Needs the `[onnx]` extra (tf2onnx, onnx, onnxruntime) and the TensorFlow backend.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.confidence.graph import serving_model
from imgclf.confidence.ood import FLAG_NAME, SCORE_NAME, load_run_stats
from imgclf.export import format_check, parity
from imgclf.export.saved_model import INPUT_NAME, OUTPUT_NAME
from imgclf.infra.errors import UserError, require_packages

LABELS_KEY = "labels"  # metadata_props key holding the class names
INSTALL = "pip install 'imgclf[onnx]'"


def require_onnx() -> None:
    """Raise UserError naming the extra to install if the ONNX packages are missing."""

    require_packages("ONNX export", INSTALL, "tf2onnx", "onnx", "onnxruntime")


def load_function(
    path: str | Path, outputs: bool = False
) -> tuple[Any, tuple[int, int, int], list[str] | None]:
    """(fn: pixels float32 [N, H, W, C] -> probabilities [N, classes], (H, W, C), the class
    names from the file's metadata or None) for an ONNX model, run by onnxruntime on the CPU.
    With `outputs`, fn returns the dict of every output by name (`probabilities`, and
    `ood_score` and `ood` when the run has an OOD detector)."""
    require_onnx()  # before the import, so a missing extra gets the install line
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise UserError(f"{path}: not a loadable ONNX model ({exc})") from exc
    (inp,) = session.get_inputs()
    shape = tuple(int(d) for d in inp.shape[1:])
    names = [o.name for o in session.get_outputs()]
    meta = session.get_modelmeta().custom_metadata_map
    labels = json.loads(meta[LABELS_KEY]) if LABELS_KEY in meta else None

    def fn(batch: np.ndarray) -> Any:
        values = session.run(names, {inp.name: np.asarray(batch, np.float32)})
        return dict(zip(names, values, strict=True)) if outputs else values[0]

    return fn, shape, labels  # type: ignore[return-value]


def _traced(model: Any, ood_stats: Any, tta: str = "none") -> tuple[Any, list[str]]:
    """(tf.function of pixels -> the outputs as a tuple, the outputs' names in that order):
    the probabilities (averaged over the test-time augmentation views of `tta`), and with
    `ood_stats` the detector's score and flag."""
    import tensorflow as tf

    scored = serving_model(model, ood_stats, tta)
    if ood_stats is None:
        return tf.function(lambda pixels: scored(pixels, training=False)), [OUTPUT_NAME]

    names = [OUTPUT_NAME, SCORE_NAME, FLAG_NAME]  # tf2onnx keeps the tuple's order

    def outputs(pixels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        out = scored(pixels, training=False)
        return tuple(out[name] for name in names)

    return tf.function(outputs), names


def _captured_constants(concrete: Any) -> dict[str, Any]:
    """Placeholder name in the traced graph -> the tensor it captures (constants, variables)."""
    return dict(
        zip(
            (t.name for t in concrete.graph.internal_captures),
            concrete.captured_inputs,
            strict=True,
        )
    )


def _rename_outputs(graph: Any, output_names: list[str]) -> None:
    """Rename an ONNX graph's outputs to `output_names`, in place, in every node that uses them."""
    # tf2onnx names the output tensors after TF ops; clients look them up by imgclf's names.
    renames = {out.name: new for out, new in zip(graph.output, output_names, strict=True)}
    for node in graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in graph.output:
        out.name = renames[out.name]


def convert(
    model: Any, class_names: list[str], path: str | Path, ood_stats: Any = None, tta: str = "none"
) -> None:
    """Write `model` as ONNX to `path`: input `pixels`, output `probabilities` (and, given
    `ood_stats`, `ood_score` and `ood`: the run's detector, `imgclf.confidence.ood`), class names in
    the metadata. The model is traced as a tf.function and converted by tf2onnx
    (`convert.from_function`); constants the model holds as plain tensors rather than variables
    (the adapted mean and variance of `normalize: standardize`) come out of tf2onnx as extra
    graph inputs, and are baked back in here as initializers.

    Raises UserError (one line) when tf2onnx cannot convert the model."""

    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    if keras.backend.backend() != "tensorflow":
        raise UserError("ONNX export needs the TensorFlow backend: set KERAS_BACKEND=tensorflow")
    _, height, width, channels = model.input_shape
    spec = [tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)]
    function, output_names = _traced(model, ood_stats, tta)
    concrete = function.get_concrete_function(*spec)
    captured = _captured_constants(concrete)
    try:
        # tf2onnx prints its progress and warnings on stdout; imgclf's stdout is its report.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph_model, _ = tf2onnx.convert.from_function(function, input_signature=spec)
    except Exception as exc:  # tf2onnx raises assorted errors for ops it cannot map
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(
            f"ONNX: tf2onnx cannot convert this model ({type(exc).__name__}: {first}); the "
            "SavedModel and TFLite exports do not depend on it"
        ) from exc
    graph = graph_model.graph
    used = {name for node in graph.node for name in node.input}
    for extra in [i for i in graph.input if i.name != INPUT_NAME]:
        if extra.name not in used:  # an input tf2onnx left behind unconnected
            graph.input.remove(extra)
            continue
        value = captured.get(extra.name)
        if value is None or value.dtype == tf.resource:
            raise UserError(f"ONNX: the converted graph needs an input {extra.name!r} besides "
                            f"{INPUT_NAME!r}; this model cannot be exported to ONNX")  # fmt: skip
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), extra.name))
        graph.input.remove(extra)
    _rename_outputs(graph, output_names)
    entry = graph_model.metadata_props.add()
    entry.key, entry.value = LABELS_KEY, json.dumps(list(class_names))
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


def export_onnx(run_dir: str | Path, model: Any, reference: parity.Reference) -> dict[str, Any]:
    """Write `model.onnx` into the run after checking it in onnxruntime against `reference`
    (the run's answers on its test images); returns its exports.json record."""
    require_onnx()
    import onnxruntime

    run_dir = Path(run_dir)
    class_names = runs.read_labels(run_dir)
    images, size = reference.images, reference.batch_size

    stats = load_run_stats(run_dir)
    with runs.atomic_path(run_dir / runs.ONNX) as tmp:
        convert(model, class_names, tmp, stats, reference.tta)
        fn, _, _ = load_function(tmp)
        record: dict[str, Any] = {
            "path": runs.ONNX,
            "quantized": False,
            "size_bytes": tmp.stat().st_size,
            "runtime": f"onnxruntime {onnxruntime.__version__}",
            **parity.compare(
                parity.batched(fn, images, size, np.float32),
                reference.probabilities,
                reference.labels,
            ),
        }
        record["formats"] = format_check.pixel_artifact_formats(fn, model, reference)
        record["tta"] = reference.tta  # the views are traced into the graph
        not_written = f"{runs.ONNX} was not written"
        parity.require_parity("ONNX model", record["parity"], not_written)
        format_check.require_pixel_formats("ONNX model", record["formats"], not_written)
        if stats is not None:
            every, _, _ = load_function(tmp, outputs=True)

            def columns(batch: np.ndarray) -> np.ndarray:
                out = every(batch)
                return np.stack([out[SCORE_NAME], out[FLAG_NAME]], axis=1)

            record["ood_parity"] = parity.ood_parity(
                parity.batched(columns, images, size, np.float32), reference
            )
            parity.require_ood_parity("ONNX model", record["ood_parity"], not_written)
    return record


def export_run(
    run_dir: str | Path, loaded: tuple[Any, parity.Reference] | None = None
) -> dict[str, Any]:
    """`imgclf-export RUN --format onnx`: convert, check on the run's test split, write the
    file, and record it in exports.json (and the manifest). `loaded`: what
    `parity.load_for_export(run_dir)` gave, when the caller exports another format too."""
    require_onnx()
    model, reference = loaded or parity.load_for_export(run_dir)
    record = export_onnx(run_dir, model, reference)
    parity.record_export(run_dir, "onnx", record)
    return record


def load(path: str | Path) -> tuple[Any, tuple[int, int, int], list[str]]:
    """(fn, (H, W, C), class names) for an .onnx file: checked against its run's manifest when
    it sits in a run directory; the class names from its metadata, else the run's labels.json.
    Raises UserError (no class names anywhere, not a loadable model) or IntegrityError."""
    path = Path(path)
    run_dir = path.parent
    if runs.in_run(run_dir):
        runs.check_run(run_dir, path.name)
    fn, shape, labels = load_function(path, outputs=True)
    if labels is None:
        if not (run_dir / runs.LABELS).is_file():
            raise UserError(f"{path}: no class names in its metadata and no {runs.LABELS}")
        labels = runs.read_labels(run_dir)
    return fn, shape, labels
