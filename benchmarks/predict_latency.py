"""Single-image latency and batch throughput of `Predictor` per artifact, against
`keras.Model.predict` on the same model: the figures of the README's Predict section.

Single-image latency is one PNG file through decode + preprocess + forward
(`Predictor.predict_files`), median of many calls after a warm-up; `model.predict` gets the
already-decoded image (so its figure is the forward pass plus Keras' per-call set-up only).
Throughput: 1,000 images as decoded arrays through `Predictor.predict_arrays`.

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
from imgclf.models.registry import load_run_model
from imgclf.predict import Predictor


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
        if (args.run_dir / runs.SAVED_MODEL).is_dir():
            artifacts.append(("saved_model/", args.run_dir / runs.SAVED_MODEL))
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


if __name__ == "__main__":
    main()
