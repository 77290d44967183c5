"""Export a trained run, one module per format, each with its *write* and its *load* side by
side, all checked by `parity` against model.keras before anything is moved into place:

    parity.py       comparison, thresholds, the images to check on, exports.json records
    format_check.py the format corpus through each artifact (and the decoder's rounding)
    saved_model.py  TensorFlow SavedModel (serving_default: pixels; serve_bytes: image files)
    tflite.py       TensorFlow Lite (float32, or int8 dynamic range), from the SavedModel
    onnx.py         ONNX (via Keras' model.export and tf2onnx), run in onnxruntime
    mediapipe.py    a one-output TFLite with MediaPipe metadata, run in MediaPipe's classifier
    openvino.py     the ONNX file run in OpenVINO's runtime (a parity record, no new file)
    web.py          RUN/web/: a page that classifies offline in a browser (MediaPipe for the web)
    benchmark.py    --benchmark: one table across every artifact, each in its own runtime
    batch_decode.py serve_bytes' decoding: encoded files -> pixels and a status per file
    destinations.py where a SavedModel may go besides its run (--out, --serving-dir)
    cli.py          `imgclf-export`

A new format is one new module with `export_run(run_dir)` and `load(path)`, a line in `FORMATS`
below, in cli.py and in `Predictor.from_path`. Nothing here imports TensorFlow until an export or
a load runs (each format module imports it inside its functions).
"""

from imgclf.export import onnx, saved_model, tflite
from imgclf.export.parity import ExportError

# Format name (as in exports.json and `Predictor.kind`) -> its module: the one table of formats.
FORMATS = {"saved_model": saved_model, "tflite": tflite, "onnx": onnx}

__all__ = ["FORMATS", "ExportError"]
