"""Single-image latency and batch throughput of `Predictor` per artifact, against
`keras.Model.predict` on the same model: the figures of the README's Predict section.

Single-image latency is one PNG file through decode + preprocess + forward
(`Predictor.predict_files`), median of many calls after a warm-up; `model.predict` gets the
already-decoded image (so its figure is the forward pass plus Keras' per-call set-up only).
Throughput: 1,000 images as decoded arrays through `Predictor.predict_arrays`. Every export
present in the run is measured (saved_model/, model.tflite, model_int8.tflite, model.onnx: run
`imgclf-export RUN --format all` first). Last, the decode of a synthetic 12 MP JPEG photo to the
model's size, with JPEG draft (reduced-scale) decoding as `load_image` does it and without.

    python benchmarks/predict_latency.py runs/latest
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from imgclf import runs
from imgclf.models.saving import load_run_model
from imgclf.predict.predictor import Predictor


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    model = load_run_model(args.run_dir)
    _, height, width, channels = model.input_shape
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    batch = rng.uniform(0, 255, (1000, height, width, channels)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "one.png"
        Image.fromarray(image[..., 0] if channels == 1 else image).save(png)
        one = image[None].astype("float32")
        keras_ms = _median_ms(lambda: model.predict(one, verbose=0), max(20, args.repeats // 10))
        print(f"keras.Model.predict, 1 decoded image:      {keras_ms:8.2f} ms")
        artifacts = [("run directory (model.keras)", args.run_dir)]
        for name in (runs.SAVED_MODEL, "model.tflite", "model_int8.tflite", "model.onnx"):
            if (args.run_dir / name).exists():
                artifacts.append((name, args.run_dir / name))
        for name, path in artifacts:
            start = time.perf_counter()
            predictor = Predictor.from_path(path)
            load_s = time.perf_counter() - start
            ms = _median_ms(lambda p=predictor: p.predict_files([png]), args.repeats)
            predictor.predict_arrays(batch[:64])  # warm-up
            start = time.perf_counter()
            predictor.predict_arrays(batch)
            per_s = len(batch) / (time.perf_counter() - start)
            print(
                f"Predictor, {name}: load {load_s:.1f} s; 1 PNG file {ms:.2f} ms "
                f"({keras_ms / ms:.0f}× faster than predict); {per_s:,.0f} images/s "
                f"over 1,000"
            )
    _photo_decode(height, width, channels)


def _photo_decode(height: int, width: int, channels: int) -> None:
    """A 4000×3000 JPEG (gradients and edges, quality 90) decoded to the model's size."""
    import io

    from imgclf.images import _REDUCING_GAP, _RESAMPLE, load_image

    yy, xx = np.mgrid[0:3000, 0:4000]
    photo = np.stack([xx * 255 // 4000, yy * 255 // 3000, (xx + yy) * 255 // 7000], -1)
    photo[1000:2000, 1800:2200] = 0
    buffer = io.BytesIO()
    Image.fromarray(photo.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    mode = "L" if channels == 1 else "RGB"

    def full() -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert(mode)
            small = img.resize((width, height), _RESAMPLE, reducing_gap=_REDUCING_GAP)
        return np.asarray(small)

    draft_ms = _median_ms(lambda: load_image(data, (height, width), channels), 20)
    full_ms = _median_ms(full, 20)
    a = load_image(data, (height, width), channels).astype(int).squeeze()
    diff = np.abs(a - full().astype(int))
    print(
        f"12 MP JPEG -> {height}×{width}: load_image (draft) {draft_ms:.1f} ms, full decode "
        f"{full_ms:.1f} ms ({full_ms / draft_ms:.1f}× faster); pixels differ by max "
        f"{diff.max()}, mean {diff.mean():.2f} levels"
    )


if __name__ == "__main__":
    main()
