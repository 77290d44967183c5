"""Export a trained run, one module per format, each with its *write* and its *load* side by
side, all checked by `parity` against model.keras before anything is moved into place:

    parity.py       comparison, thresholds, the images to check on, exports.json records
    saved_model.py  TensorFlow SavedModel (serving_default: pixels; serve_bytes: image files)
    tflite.py       TensorFlow Lite (float32, or int8 dynamic range), from the SavedModel
    onnx.py         ONNX (via Keras' model.export and tf2onnx), run in onnxruntime
    cli.py          `imgclf-export`

A new format is one new module with `export_run(run_dir)` and `load(path)`, and a line in cli.py
and in `Predictor.from_path`. Nothing here imports TensorFlow until an export or a load runs.
"""

from imgclf.export.parity import ExportError

__all__ = ["ExportError"]
