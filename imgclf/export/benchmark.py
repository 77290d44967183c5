"""`imgclf-export RUN --benchmark`: one table across every artifact the run has, measured in
one process: file size, load time, latency per image at batch 1 and throughput at batch 32
(the median of REPEATS timed runs after one warm-up), and top-1 agreement and max |Δp| against
model.keras on the run's test images (the same images every export is checked on).

Rows, where the file exists (and its runtime is installed): Keras (`model.keras`), the
SavedModel (`serving_default`, pixels), TFLite float32 and int8 (the TFLite interpreter), ONNX
(onnxruntime), ONNX in OpenVINO (f32), and the MediaPipe classifiers (MediaPipe's
`ImageClassifier`, one image per call: it has no batch, so its batch-32 column is 32 calls).
Times are wall-clock `time.perf_counter`; the machine and its load change them, so compare
rows of one table, not tables of two machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.export import mediapipe, openvino, parity, saved_model, tflite
from imgclf.export import onnx as onnx_export
from imgclf.infra.errors import UserError

REPEATS = 5
BATCH = 32


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _loaders(run_dir: Path) -> Iterator[tuple[str, Path, Callable[[], Any], bool]]:
    """(row name, file, loader returning fn(batch) -> probabilities, takes uint8 RGB)."""

    def keras_fn() -> Any:
        from imgclf.models.saving import load_run_model

        loaded = load_run_model(run_dir)  # timed like the others (the check's copy is warm)
        return lambda batch: np.asarray(loaded(np.asarray(batch, np.float32), training=False))

    def saved_fn() -> Any:
        fn, _, _ = saved_model.load(run_dir / runs.SAVED_MODEL)
        return lambda batch: np.asarray(fn(np.asarray(batch, np.float32))["probabilities"])

    def tflite_fn(name: str) -> Callable[[], Any]:
        return lambda: tflite.load_function(run_dir / name)[0]

    def onnx_fn() -> Any:
        return onnx_export.load_function(run_dir / runs.ONNX)[0]

    def mediapipe_fn(name: str) -> Callable[[], Any]:
        return lambda: mediapipe.Classifier((run_dir / name).read_bytes())

    yield "Keras (model.keras)", run_dir / runs.MODEL, keras_fn, False
    yield "SavedModel, pixels", run_dir / runs.SAVED_MODEL, saved_fn, False
    yield "TFLite float32", run_dir / runs.TFLITE, tflite_fn(runs.TFLITE), False
    yield (
        "TFLite int8 (dynamic range)",
        run_dir / runs.TFLITE_INT8,
        tflite_fn(runs.TFLITE_INT8),
        False,
    )
    yield "ONNX Runtime", run_dir / runs.ONNX, onnx_fn, False
    yield (
        "OpenVINO (ONNX, f32)", run_dir / runs.ONNX,
        lambda: openvino.load_function(run_dir / runs.ONNX), False,
    )  # fmt: skip
    yield "MediaPipe float32", run_dir / runs.MEDIAPIPE, mediapipe_fn(runs.MEDIAPIPE), True
    yield "MediaPipe int8", run_dir / runs.MEDIAPIPE_INT8, mediapipe_fn(runs.MEDIAPIPE_INT8), True


def _median_seconds(fn: Callable[[], Any]) -> float:
    fn()  # warm-up: the first call builds kernels and caches
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per artifact of the run (see the module's docstring). Raises UserError when the
    run cannot be loaded; a runtime that is not installed leaves its row out with the reason."""
    run_dir = Path(run_dir)
    _, reference = parity.load_for_export(run_dir)
    images = reference.images
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    rows = []
    for name, path, loader, takes_rgb in _loaders(run_dir):
        if not path.exists():
            continue
        rel = path.relative_to(run_dir).as_posix()
        try:
            runs.verify_manifest(run_dir, rel)  # only what the run vouches for is measured
        except UserError as exc:
            rows.append({"artifact": name, "skipped": str(exc)})
            continue
        start = time.perf_counter()
        try:
            fn = loader()
        except (UserError, RuntimeError, ValueError, StopIteration) as exc:  # no extra, or a
            rows.append({"artifact": name, "skipped": str(exc)[:200]})  # runtime that refuses
            continue
        load_s = time.perf_counter() - start
        try:
            rows.append(_row(name, rel, path, fn, load_s, takes_rgb, images, rgb, reference))
        finally:
            if hasattr(fn, "close"):  # MediaPipe's task: closed here, not at interpreter exit
                fn.close()
    return rows


def _row(name, rel, path, fn, load_s, takes_rgb, images, rgb, reference) -> dict[str, Any]:
    """One artifact's measurements (see the module's docstring)."""
    batch = np.resize(images, (BATCH, *images.shape[1:]))
    batch_rgb = np.resize(rgb, (BATCH, *rgb.shape[1:]))
    pixels, many = (rgb, batch_rgb) if takes_rgb else (images, batch)
    one = pixels[:1]
    probabilities = parity.batched(fn, pixels, 1 if takes_rgb else reference.batch_size)
    compared = parity.compare(probabilities, reference.probabilities, reference.labels)
    return {
        "artifact": name,
        "file": rel,
        "size_mb": round(_size(path) / 2**20, 2),
        "load_s": round(load_s, 3),
        "latency_ms": round(1000 * _median_seconds(lambda: fn(one)), 2),
        "throughput_ips": round(BATCH / _median_seconds(lambda: fn(many)), 1),
        "top1_agreement": compared["parity"]["top1_agreement"],
        "max_abs_diff": compared["parity"]["max_abs_diff"],
        "n_images": compared["parity"]["n_images"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (a skipped row says why)."""
    lines = [
        "| artifact | file | size (MB) | load (s) | latency, batch 1 (ms) | throughput, batch "
        f"{BATCH} (images/s) | top-1 agreement | max abs Δp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['artifact']} | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {r['artifact']} | {r['file']} | {r['size_mb']} | {r['load_s']} | "
            f"{r['latency_ms']} | {r['throughput_ips']} | {r['top1_agreement']:.2%} | "
            f"{r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"
