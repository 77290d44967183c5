"""Input formats, measured.

python benchmarks/formats.py mpo
    Decoding a 12 MP camera photo to 28×28: the MPO file (what many cameras and phones
    write) against the same picture saved as a plain JPEG; median of 15 decodes each, and
    the largest pixel difference.

python benchmarks/formats.py paths RUN [--saved-model DIR]
    The format × path table: every kind of the format corpus (made from two of RUN's test
    samples) through load_image, the app's thumbnail, Predictor on the run, the SavedModel's
    serve_bytes (one file per call, so a SavedModel that fails whole requests can be
    measured too: give an older export with --saved-model), TFLite and ONNX when the run
    has them. A path's cell is "=" when its top-1 equals Predictor's on the run, "≠" when
    it differs, else the refusal or error.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgclf.images import load_image


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like picture: smooth gradients with fine noise (JPEG-compressible like a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200
    noise = rng.normal(0, 8, (height // 4, width // 4, 3)).repeat(4, 0).repeat(4, 1)
    return Image.fromarray(np.clip(base + noise + 20, 0, 255).astype(np.uint8))


def mpo() -> None:
    photo = _photo(4000, 3000)
    plain, camera = io.BytesIO(), io.BytesIO()
    photo.save(plain, "JPEG", quality=90)
    photo.save(camera, "MPO", quality=90, save_all=True, append_images=[photo.resize((640, 480))])
    files = {"plain JPEG": plain.getvalue(), "MPO": camera.getvalue()}
    assert Image.open(io.BytesIO(files["MPO"])).format == "MPO"
    times, pixels = {}, {}
    for name, data in files.items():
        load_image(data, (28, 28))  # warm-up
        runs = []
        for _ in range(15):
            start = time.perf_counter()
            pixels[name] = load_image(data, (28, 28))
            runs.append((time.perf_counter() - start) * 1000)
        times[name] = statistics.median(runs)
    diff = int(np.abs(pixels["MPO"].astype(int) - pixels["plain JPEG"]).max())
    print("| file (4000×3000, quality 90) | size | decode to 28×28, median of 15 |")
    print("|---|---|---|")
    for name, data in files.items():
        print(f"| {name} | {len(data) / 1e6:.2f} MB | {times[name]:.1f} ms |")
    ratio = times["MPO"] / times["plain JPEG"]
    print(f"\nMPO / plain JPEG time: {ratio:.2f}×; largest pixel difference: {diff} levels")


def paths(run: Path, saved_model: Path | None) -> None:
    import tensorflow as tf

    from imgclf import runs as run_files
    from imgclf.config import load_config
    from imgclf.export import corpus
    from imgclf.images import ImageError, thumbnail
    from imgclf.predict.predictor import Predictor

    cfg = load_config(run / run_files.CONFIG)
    size, channels = tuple(cfg.data.image_size), cfg.data.channels
    samples_dir = sorted((run / run_files.SAMPLES).glob("*.png"))[:2]
    samples = corpus.build([load_image(f, size, channels) for f in samples_dir])
    reference = Predictor.from_path(run)
    served = tf.saved_model.load(str(saved_model or run / run_files.SAVED_MODEL))
    serve_bytes = served.signatures["serve_bytes"]
    artifacts = {
        name: Predictor.from_path(run / path)
        for name, path in (("TFLite", run_files.TFLITE), ("ONNX", run_files.ONNX))
        if (run / path).is_file()
    }
    rows: dict[str, list[list[str]]] = {}
    for sample in samples:
        cells = []
        try:
            pixels = load_image(sample.data, size, channels)
            want = reference.top_k(reference.predict_arrays(pixels[None]), ["x"], 1)[0].label
            cells.append("ok")
        except ImageError as exc:
            want = None
            cells.append(exc.reason)
        try:
            thumbnail(sample.data, 140)
            cells.append("ok")
        except ImageError as exc:
            cells.append(exc.reason)
        try:
            out = serve_bytes(images=tf.constant([sample.data]))
            status = out["status"].numpy()[0].decode() if "status" in out else "ok"
            label = out["label"].numpy()[0].decode()
            cells.append(
                ("=" if label == want else "≠") if status == "ok" else f"refused: {status}"
            )
        except tf.errors.OpError as exc:
            cells.append(f"request failed ({type(exc).__name__})")
        for predictor in artifacts.values():
            got = predictor.top_k(predictor.predict_arrays(pixels[None]), ["x"], 1)[0].label
            cells.append("=" if got == want else "≠")
        rows.setdefault(sample.kind, []).append(cells)
    head = ["kind", "load_image", "app thumbnail", "serve_bytes", *artifacts]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kind, per_sample in rows.items():
        merged = [" / ".join(dict.fromkeys(column)) for column in zip(*per_sample, strict=True)]
        print(f"| {kind} | " + " | ".join(c[:70] for c in merged) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("mpo")
    table = sub.add_parser("paths")
    table.add_argument("run", type=Path)
    table.add_argument("--saved-model", type=Path)
    args = parser.parse_args()
    if args.what == "mpo":
        mpo()
    else:
        paths(args.run, args.saved_model)


if __name__ == "__main__":
    main()
