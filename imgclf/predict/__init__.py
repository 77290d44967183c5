"""Prediction: images in, classes (and confidence, and the out-of-distribution flag) out.

    predictor.py  `Predictor`: a run directory, an export (SavedModel, TFLite, ONNX) or the
                  pretrained ImageNet classifier behind one interface; `classify_named`, the
                  app's helper for uploaded files
    files.py      the command line's side: finding the image files, decoding the next chunk
                  while the model runs, writing table/JSON/JSONL/CSV as results arrive
    cli.py        `imgclf-predict` (`python -m imgclf.predict`)

Nothing here imports TensorFlow until a model is loaded.
"""
