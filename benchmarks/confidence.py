"""Measure trustworthy confidence (issue #16): calibration before/after temperature scaling, and
how well the OOD score separates in-distribution test images from images unlike the training
data. Prints one table per model; figures in docs/confidence.md come from here.

    python benchmarks/confidence.py                       # trains both models (about 6 min)
    python benchmarks/confidence.py --mnist RUN --fashion RUN   # re-use finished runs

Models (seed 0): the embedded default (CNN on mnist5k, 28x28 grey, 20 epochs) and
configs/fashion_cnn.yaml on a subset (500 training photos per class, 10 epochs; validation and
the official 10,000 test photos untouched). Out-of-distribution sets, each decoded through
`images.load_image` to the model's input like any user image:
    other     the other dataset's test images (MNIST <-> Fashion-MNIST), up to 2,000
    noise     1,000 images of uniform noise (0..255 per pixel), seeded
    photos    the 8 colour photos in scikit-image's wheel, whole and as 20 seeded random crops each
    faces     scikit-image's lfw_subset (200 grey face crops)
    inverted  the model's own test images as negatives (dark on light, like ink on paper)
and a third model, configs/pretrain_mnist_0to4.yaml (digits 0-4 only), against the test images
of the digits 5-9: near out-of-distribution, the hard case.
AUROC (`sklearn.metrics.roc_auc_score`) of the OOD score, in-distribution test images as
negatives; for contrast the same for 1 - max softmax probability (the baseline of Hendrycks &
Gimpel, 2017). "flagged" is the share of each set above the run's threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

MNIST_OVERRIDES = ["name=bench-mnist", "train.export=false"]
FASHION_OVERRIDES = [
    "name=bench-fashion",
    "data.max_per_class=500",
    "train.epochs=10",
    "train.export=false",
]
# The colour photos inside the scikit-image wheel (the others need a download).
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                 "hubble_deep_field", "retina", "stereo_motorcycle")  # fmt: skip
CROPS = 20
OTHER_MAX = 2000


def train_run(config: str | None, overrides: list[str], out: Path) -> Path:
    from imgclf.config import load_config
    from imgclf.train import train

    start = time.perf_counter()
    run = train(load_config(config, overrides), out=out, verbose=0)
    print(f"trained {run.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def test_images(run: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The run's own test split (re-made from its config.yaml), uint8 [N, H, W, C]."""
    from imgclf import runs
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.data.pool import readable_sample

    test = load_data(load_config(run / runs.CONFIG)).test
    return readable_sample(test, limit or len(test))


def unseen_digits() -> np.ndarray:
    """mnist5k's test images of the digits 5-9 (the near-OOD set of the 0-4 model)."""
    from imgclf.config import load_config
    from imgclf.data import load_data

    config = load_config(None, ['data.classes=["5","6","7","8","9"]'])
    return np.asarray(load_data(config).test.x)


def encoded(images: list[np.ndarray]) -> list[bytes]:
    from imgclf.images import png_bytes

    return [png_bytes(np.ascontiguousarray(a)) for a in images]


def photo_files(seed: int = 0) -> list[bytes]:
    """skimage's colour photos, whole and as random crops (a quarter to a half of each side)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    out = []
    for name in COLOUR_PHOTOS:
        img = getattr(skimage.data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)[..., :3]  # a stereo pair
        out.append(img)
        h, w = img.shape[:2]
        for _ in range(CROPS):
            ch, cw = int(h * rng.uniform(0.25, 0.5)), int(w * rng.uniform(0.25, 0.5))
            y, x = rng.integers(0, h - ch), rng.integers(0, w - cw)
            out.append(img[y : y + ch, x : x + cw])
    return encoded(out)


def face_files() -> list[bytes]:
    import skimage.data

    faces = skimage.data.lfw_subset()  # float 0..1, [200, 25, 25]
    return encoded([(f * 255).round().astype(np.uint8) for f in faces])


def decode_all(predictor, files: list[bytes]) -> np.ndarray:
    _, pixels, failures = predictor.decode_files(files)
    assert not failures, failures[:3]
    return pixels


def scores(predictor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(OOD score, flag, 1 - max probability) per image."""
    out = predictor.predict_outputs(images)
    return out["ood_score"], out["ood"], 1.0 - out["probabilities"].max(axis=1)


def report(name: str, run: Path, other: np.ndarray, seed: int, other_name: str = "other") -> dict:
    from sklearn.metrics import roc_auc_score

    from imgclf import runs
    from imgclf.predict.predictor import Predictor

    metrics = runs.read_json(run / runs.METRICS)
    cal, ood = metrics["calibration"], metrics["ood"]
    print(f"\n== {name}: {run.name} (test accuracy {metrics['test']['accuracy']:.4f}) ==")
    print(f"temperature T = {cal['temperature']:.3f} (fitted on {cal['n_val']} validation "
          f"images); test split, {cal['n_test']} images, {cal['binning']}")  # fmt: skip
    print(f"{'':8} {'ECE':>8} {'NLL':>8} {'Brier':>8}")
    for key in ("before", "after"):
        f = cal[key]
        print(f"{key:8} {f['ece']:8.4f} {f['nll']:8.4f} {f['brier']:8.4f}")
    before, after = cal["before"]["ece"], cal["after"]["ece"]
    target = "ECE halved" if after <= 0.5 * before else (
        "already small (<= 0.01)" if after <= 0.01 else "NOT met")  # fmt: skip
    print(f"ECE after / before = {after / before:.2f}: {target}")

    predictor = Predictor.from_path(run)
    channels = predictor.channels
    size = predictor.image_size
    ind, _ = test_images(run)
    s_in, f_in, m_in = scores(predictor, ind)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (1000, *size, channels)).astype(np.uint8)
    sets = {
        other_name: other,
        "inverted": 255 - ind,  # its own test images as negatives: dark on light
        "noise": noise,
        "photos": decode_all(predictor, photo_files(seed)),
        "faces": decode_all(predictor, face_files()),
    }
    print(f"\nOOD: {ood['method']}; threshold {ood['threshold']:.2f} "
          f"({ood['quantile']:.0%} of validation scores)")  # fmt: skip
    print(f"false alarms on in-distribution test images: {f_in.mean():.2%} ({len(ind)} images)")
    print(f"{'OOD set':10} {'n':>6} {'AUROC':>7} {'flagged':>8} {'AUROC 1-maxp':>13}")
    rows = {}
    for key, images in sets.items():
        s_out, f_out, m_out = scores(predictor, images)
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        auroc = roc_auc_score(y, np.r_[s_in, s_out])
        base = roc_auc_score(y, np.r_[m_in, m_out])
        rows[key] = {"n": len(images), "auroc": auroc, "flagged": float(f_out.mean()),
                     "auroc_max_softmax": base}  # fmt: skip
        print(f"{key:10} {len(images):6d} {auroc:7.4f} {f_out.mean():8.2%} {base:13.4f}")
    return {"calibration": {k: cal[k] for k in ("temperature", "before", "after")},
            "false_alarm_rate": float(f_in.mean()), "ood": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", type=Path, help="a finished run of the default recipe")
    parser.add_argument("--fashion", type=Path, help="a finished Fashion-MNIST run")
    parser.add_argument("--near", type=Path, help="a finished run of pretrain_mnist_0to4.yaml")
    parser.add_argument("--keep", type=Path, help="train into this folder and keep the runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        mnist = args.mnist or train_run(None, MNIST_OVERRIDES, root / "mnist")
        fashion = args.fashion or train_run(
            "configs/fashion_cnn.yaml", FASHION_OVERRIDES, root / "fashion"
        )
        near = args.near or train_run(
            "configs/pretrain_mnist_0to4.yaml", ["train.export=false"], root / "near"
        )
        mnist_test, _ = test_images(mnist, OTHER_MAX)
        fashion_test, _ = test_images(fashion, OTHER_MAX)
        figures = {
            "mnist": report("MNIST (default recipe)", mnist, fashion_test, 0),
            "fashion": report("Fashion-MNIST (fashion_cnn subset)", fashion, mnist_test, 0),
            # Near out-of-distribution: digits of the classes the model never saw.
            "near": report("MNIST digits 0-4 only", near, unseen_digits(), 0, "digits 5-9"),
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
