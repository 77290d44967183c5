"""One table across every export format, for the default recipe and the photo recipe (issue 29).

    python benchmarks/export_formats.py --work /tmp/export-bench
    python benchmarks/export_formats.py --default-run runs/latest     # re-use a trained run

For each run: `imgclf-export RUN --format tflite onnx mediapipe openvino`, then `--format tflite
mediapipe --quantize int8`, then `imgclf-export RUN --benchmark` (imgclf.export.benchmark: file
size, load time, latency at batch 1 and throughput at batch 32 in one process, top-1 agreement
and max |Δp| against model.keras on the run's test images, every artifact in its own runtime).

Runs: the default recipe (`imgclf-train`, no config: the mnist5k CNN, 20 epochs), and the photo
recipe (configs/photos_transfer.yaml: EfficientNet-Lite0 at 224×224 with ImageNet weights) on
300 synthetic 640×480 JPEG photos in 10 classes (benchmarks/data_scale.py's generator), 1 head
epoch and 1 fine-tune epoch: the exports, not the accuracy, are measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import make_folder

ROOT = Path(__file__).resolve().parent.parent


def _run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def train_photo_run(work: Path) -> Path:
    photos = make_folder(work / "photos", 300)
    out = work / "photo-run"
    if not (out / "model.keras").is_file():
        recipe = ["--config", "configs/photos_transfer.yaml", f"data.path={photos}"]
        short = ["transfer.head_epochs=1", "transfer.fine_tune_epochs=1"]
        _run("imgclf-train", *recipe, *short, "--out", str(out))
    return out


def table_for(run: Path) -> None:
    _run("imgclf-export", str(run), "--format", "tflite", "onnx", "mediapipe", "openvino")
    _run("imgclf-export", str(run), "--format", "tflite", "mediapipe", "--quantize", "int8")
    _run("imgclf-export", str(run), "--benchmark")
    exports = json.loads((run / "exports.json").read_text())
    for key in ("tflite_int8", "mediapipe_int8"):
        record = exports[key]
        print(f"{key}: top-1 agreement {record['parity']['top1_agreement']:.4f} on "
              f"{record['parity']['n_images']} test images, test accuracy "
              f"{record.get('test_accuracy')}, drop {record.get('accuracy_drop')}")  # fmt: skip
    usual = exports["openvino"]["default_precision"]
    print(f"openvino at {usual['precision']}: max |Δp| {usual['parity']['max_abs_diff']:.2e}, "
          f"top-1 agreement {usual['parity']['top1_agreement']:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/export-bench"))
    parser.add_argument("--default-run", type=Path, help="a trained default-recipe run")
    parser.add_argument("--photo-run", type=Path, help="a trained photo-recipe run")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    default = args.default_run
    if default is None:
        default = args.work / "default-run"
        if not (default / "model.keras").is_file():
            _run("imgclf-train", "--out", str(default))
    print("\n== the default recipe (mnist5k CNN)")
    table_for(default)
    print("\n== the photo recipe (Lite0, 224×224)")
    table_for(args.photo_run or train_photo_run(args.work))


if __name__ == "__main__":
    main()
