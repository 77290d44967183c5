"""`imgclf-export RUN [--format saved_model|tflite|onnx|all ...]`: the command line of the export
package (argument parsing and the report; the work is in the format modules)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.export import benchmark, mediapipe, onnx, openvino, parity, tflite, web
from imgclf.export.onnx import require_onnx
from imgclf.export.parity import ExportError
from imgclf.export.saved_model import export_run
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import UserError, check_address_space, resource_problem

# The order they are written in (openvino checks the ONNX file, so it comes after onnx).
FORMATS = ("saved_model", "tflite", "onnx", "mediapipe", "web", "openvino")
ALL = FORMATS[:3]  # `all`: the formats of the core install and the [onnx] extra


def _report(what: str, record: dict[str, Any], path: Path) -> None:
    """Print an export's parity line and its path."""
    p = record["parity"]
    acc = f", test accuracy {record['test_accuracy']:.4f}" if "test_accuracy" in record else ""
    print(
        f"{what}: max |Δp| {p['max_abs_diff']:.2e}, top-1 agreement {p['top1_agreement']:.2%} "
        f"on {p['n_images']} test images{acc}"
    )
    ood = record.get("ood_parity")
    if ood:  # the run's out-of-distribution detector, exported with the model
        print(
            f"{what}: ood_score max |Δ| {ood['max_rel_score_diff']:.1e} of the threshold, "
            f"{ood['flag_disagreements']} ood flags differ"
        )
    print(path)


def _checked_formats(run_dir: Path, formats: tuple[str, ...], quantize: str | None) -> None:
    """Write (or, for openvino, check) each of the formats after the SavedModel, in order."""
    # The model and its answers on the test images, loaded once for TFLite and ONNX.
    loaded = None
    if sum(f in formats for f in ("tflite", "onnx", "mediapipe", "openvino")) > 1:
        loaded = parity.load_for_export(run_dir)
    if "tflite" in formats:
        record = tflite.export_run(run_dir, quantize, loaded)
        _report(f"tflite{' int8' if quantize else ''}", record, run_dir / record["path"])
    if "onnx" in formats:
        record = onnx.export_run(run_dir, loaded)
        _report("onnx", record, run_dir / record["path"])
    if "mediapipe" in formats:
        record = mediapipe.export_run(run_dir, loaded, quantize)
        _report(f"mediapipe{' int8' if quantize else ''}", record, run_dir / record["path"])
        own = record.get("own_resize") or {}
        if "n_images" in own:
            print(
                f"mediapipe, photos resized by MediaPipe itself: top-1 agreement "
                f"{own['top1_agreement']:.2%} on {own['n_images']}, max |Δp| "
                f"{own['max_abs_diff']:.1e} (reported, not required)"
            )
        kinds = record.get("formats") or {}
        if kinds:
            read = [k for k, row in kinds.items() if row["refused"] is None]
            differ = [k for k in read if (kinds[k]["top1_agreement"] or 0) < 1]
            print(
                f"mediapipe, the format corpus through MediaPipe's decoder: reads {len(read)} of "
                f"{len(kinds)} kinds; top-1 differs from imgclf on: {', '.join(differ) or 'none'} "
                "(reported, not required)"
            )
    if "web" in formats:
        record = web.export_run(run_dir)
        print(
            f"web: {len(record['files'])} files, {record['size_bytes'] / 2**20:.1f} MB; serve it "
            f"with: python -m http.server -d {run_dir / record['path']}"
        )
        print(run_dir / record["path"])
    if "openvino" in formats:
        record = openvino.export_run(run_dir, loaded)
        _report("openvino", record, run_dir / record["path"])
        usual = record["default_precision"]
        print(
            f"openvino at its default precision ({usual['precision']}): max |Δp| "
            f"{usual['parity']['max_abs_diff']:.2e}, top-1 agreement "
            f"{usual['parity']['top1_agreement']:.2%} (reported, not required)"
        )


def build_parser() -> ArgumentParser:
    """The command line of `imgclf-export`."""
    parser = ArgumentParser(
        prog="imgclf-export",
        description="Export a trained run (SavedModel, TFLite, ONNX), each checked for parity "
        "against model.keras on the run's test split.",
    )
    parser.add_argument("run_dir", help="a run directory written by imgclf-train")
    parser.add_argument("--out", help="where to write the SavedModel (default RUN_DIR/saved_model)")
    parser.add_argument(
        "--serving-dir",
        help="a TF Serving model folder (e.g. models/digits): writes the next version DIR/<N>/",
    )
    parser.add_argument(
        "--format",
        nargs="+",
        choices=(*FORMATS, "all"),
        default=None,
        help="one or more of: saved_model (default): RUN_DIR/saved_model/; tflite: "
        "RUN_DIR/model.tflite from the SavedModel; onnx: RUN_DIR/model.onnx (needs the [onnx] "
        "extra); mediapipe: RUN_DIR/model_mediapipe.tflite, one output and MediaPipe metadata, "
        "checked in MediaPipe's ImageClassifier (needs the [mediapipe] extra); openvino: "
        "RUN_DIR/model.onnx checked in OpenVINO's runtime (needs the [openvino] extra); web: "
        "RUN_DIR/web/, a page that classifies offline in a browser (MediaPipe for the web); "
        "all: the "
        "first three. Several are written in that order, the run's model and test images loaded "
        "once",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="tflite: dynamic-range int8 (model_int8.tflite); mediapipe: full-integer int8 "
        "with uint8 input, calibrated on 200 training images (model_mediapipe_int8.tflite)",
    )
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="after any --format asked for: one table across every artifact the run has "
        "(size, load time, latency at batch 1, throughput at batch 32, top-1 agreement, max "
        "|Δp|), printed and kept in exports.json; alone, it exports nothing",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own start-up log lines"
    )
    return parser


def _refuse_multilabel(run_dir: Path, formats: tuple[str, ...]) -> None:
    """UserError for a MediaPipe or web export of a `task: multilabel` run: MediaPipe's image
    classifier answers a top-k of one softmax, not a set of labels over their thresholds."""
    metrics = run_dir / runs.METRICS
    if not ({"mediapipe", "web"} & set(formats)) or not metrics.is_file():
        return
    try:
        multilabel = runs.read_json(metrics).get("task") == "multilabel"
    except (OSError, ValueError):
        return  # the export's own checks name an unreadable run
    if multilabel:
        raise UserError(
            "a multi-label run has no MediaPipe or web export (MediaPipe's classifier answers a "
            "top-k, not labels over their thresholds); export --format saved_model, tflite or "
            "onnx, which answer every label's probability (thresholds: metrics.json)"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.export RUN_DIR [--format saved_model|tflite|onnx|all ...]
    [--quantize int8] [--out DIR | --serving-dir DIR]`; returns the exit code (0, 1 for an
    export that failed its parity check, 2 for a usage error)."""
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.format is None:
        args.format = [] if args.benchmark else ["saved_model"]
    wanted = {*args.format, *(ALL if "all" in args.format else ())}
    if "web" in wanted and not (run_dir / runs.MEDIAPIPE).is_file():
        wanted.add("mediapipe")  # the page runs the MediaPipe file: made first when missing
    formats = tuple(f for f in FORMATS if f in wanted)
    try:
        if formats != ("saved_model",) and (args.out or args.serving_dir):
            raise UserError("--out and --serving-dir apply to --format saved_model only")
        if args.quantize and "tflite" not in formats and "mediapipe" not in formats:
            raise UserError("--quantize int8 applies to --format tflite or mediapipe (or all)")
        if args.quantize and "web" in formats:
            raise UserError("--format web runs the float MediaPipe file: leave out --quantize")
        _refuse_multilabel(run_dir, formats)
        if "onnx" in formats:
            require_onnx()  # before minutes of other exports, not after
        if "mediapipe" in formats or "web" in formats:
            mediapipe.require_mediapipe()
        if "openvino" in formats:
            openvino.require_openvino()
        # Before minutes of work: a read-only or missing destination answers now, in one line.
        runs.check_writable(Path(args.serving_dir or args.out or run_dir))
        check_address_space()
        quiet_tensorflow(args.verbose)
        if "saved_model" in formats:
            path = export_run(run_dir, args.out, serving_dir=args.serving_dir)
            key = "tf_serving" if args.serving_dir else "saved_model"
            _report("saved_model", runs.read_json(run_dir / runs.EXPORTS)[key], path)
        _checked_formats(run_dir, formats, args.quantize)
        if args.benchmark:
            rows = benchmark.measure(run_dir)
            parity.record_export(run_dir, "benchmark", {"rows": rows, "cpus": os.cpu_count(),
                                 "measured": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
            print(benchmark.table(rows), end="")
    except (UserError, ExportError) as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    except (OSError, MemoryError) as exc:  # nothing half-written replaced a good file
        print(f"error: {clip(resource_problem(exc))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
