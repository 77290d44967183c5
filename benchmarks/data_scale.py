"""Data at any size: memory, speed and cache re-use of imgclf's file datasets, next to Keras' own
streaming loader, on synthetic colour JPEG folders (640×480 photos, 10 classes).

For each N it measures, each in a fresh process:
  imgclf-train (data.cache=disk, a tiny CNN at 224×224, 2 epochs), twice:
      the first run builds the decoded cache, the second re-uses it
      -> time to the first training step (the `run:` line), images/s in epoch 1 and 2, peak RSS
  keras.utils.image_dataset_from_directory on the same folder, one pass -> images/s, peak RSS
  imgclf-predict on the folder -> peak RSS (and on a 1,000-file folder, for comparison)
  with --baseline DIR: imgclf-train of another checkout (e.g. the code before the decoded cache,
      which held every image in memory) on the same folder, once -> the "before" row
and once: decode CPU per image at 224×224 (imgclf's decoder vs TensorFlow's decode_jpeg +
resize), the pixel difference of the reduced-scale JPEG decode to a full decode, and later-epoch
speed from the disk cache vs the in-memory path (N = 2,000).

    python benchmarks/data_scale.py --sizes 2000 10000 30000 --work /tmp/imgclf-scale
    python benchmarks/data_scale.py --sizes 500 --work /tmp/s          # a quick look
    python benchmarks/data_scale.py --baseline /path/to/old/checkout ...  # + before rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 10
SIDE = 224
TRAIN = [
    "data.source=folder", f"data.image_size=[{SIDE},{SIDE}]", "data.channels=3",
    "model.name=cnn", "model.filters=[4,8]", "model.hidden=[16]", "model.dropout=0",
    "augment.rotation=0", "augment.zoom=0", "augment.translate=0", "train.epochs=2",
    "train.batch_size=64", "train.diagnostics=false", "train.early_stopping.patience=0",
]  # fmt: skip


def make_photo(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A 480×640 RGB image: a smooth colour gradient plus a class-specific blob pattern."""
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    base = np.stack(
        [
            120 + 80 * np.sin(xx / (40 + 7 * cls) + rng.uniform(0, 6)),
            120 + 80 * np.cos(yy / (35 + 5 * cls) + rng.uniform(0, 6)),
            np.full_like(xx, 60 + 18 * cls),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 12, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """root/class_k/img_XXXXX.jpg: n JPEGs (quality 90) split evenly over CLASSES classes;
    re-used when already complete."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == str(n):
        return root

    def write(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        cls = i % CLASSES
        folder = root / f"class_{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_photo(rng, cls)).save(folder / f"img_{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(write, range(n)))
    done.write_text(str(n))
    return root


def measured(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, object]:
    """Run `command`; (wall s, peak RSS MB of the process tree's largest, stdout lines with the
    seconds they appeared at)."""
    start = time.perf_counter()
    wrapped = ["/usr/bin/time", "-f", "MAXRSS_KB %M", *command]
    proc = subprocess.Popen(
        wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    rss = [int(x.split()[1]) for x in stderr.splitlines() if x.startswith("MAXRSS_KB")]
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({proc.returncode}): {stderr[-1500:]}")
    return {"wall": time.perf_counter() - start, "rss_mb": rss[-1] / 1024, "lines": lines}


def train_once(
    folder: Path, out: Path, cache: str | None, env: dict[str, str], code: Path | None = None
) -> dict[str, float]:
    """imgclf-train on `folder` (of the checkout `code`, default this one): time to the start of
    training (its `run:` line), images/s per epoch, peak RSS."""
    cmd = [sys.executable, "-m", "imgclf.train", *TRAIN, f"data.path={folder}",
           "--out", str(out)]  # fmt: skip
    if cache is not None:
        cmd.append(f"data.cache={cache}")
    result = measured(cmd, env, cwd=code)
    first_step = next(t for t, line in result["lines"] if line.startswith("run:"))
    report = json.loads((out / "data_report.json").read_text())
    n_train = report["totals"]["train"]
    with (out / "history.csv").open() as fh:
        rows = list(__import__("csv").DictReader(fh))
    speeds = [n_train / float(r["seconds"]) for r in rows]
    return {
        "first_step_s": first_step,
        "epoch1_img_s": speeds[0],
        "epoch2_img_s": speeds[-1],
        "rss_mb": result["rss_mb"],
        "wall_s": result["wall"],
        "cache": report.get("cache", {}).get("mode"),
        "reused": report.get("cache", {}).get("reused"),
    }


KERAS_PASS = """
import sys, time, keras
ds = keras.utils.image_dataset_from_directory(sys.argv[1], image_size=({side}, {side}),
                                              batch_size=64, shuffle=True, seed=0)
start, n = time.perf_counter(), 0
for x, y in ds:
    n += int(x.shape[0])
print("IMG_S", n / (time.perf_counter() - start))
"""


def keras_pass(folder: Path, env: dict[str, str]) -> dict[str, float]:
    code = KERAS_PASS.format(side=SIDE)
    result = measured([sys.executable, "-c", code, str(folder)], env)
    speed = next(float(line.split()[1]) for _, line in result["lines"] if line.startswith("IMG_S"))
    return {"img_s": speed, "rss_mb": result["rss_mb"]}


def predict_rss(run: Path, folder: Path, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "imgclf.predict", str(run), str(folder), "--format", "csv"]
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB %M", *cmd],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    kb = [int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("MAXRSS_KB")]
    return kb[-1] / 1024


DECODE_CPU = """
import sys, time, glob, numpy as np
files = sorted(glob.glob(sys.argv[1] + "/*/*.jpg"))[:int(sys.argv[2])]
from imgclf.images import load_image
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
datas = [open(f, "rb").read() for f in files]
def tf_decode(d):
    img = tf.io.decode_jpeg(d, channels=3)
    return tf.cast(tf.image.resize(img, ({side}, {side}), antialias=True), tf.uint8).numpy()
for fn in (lambda d: load_image(d, ({side}, {side}), 3), tf_decode):
    fn(datas[0])
t = time.process_time(); ours = [load_image(d, ({side}, {side}), 3) for d in datas]
ours_cpu = (time.process_time() - t) / len(datas)
t = time.process_time(); theirs = [tf_decode(d) for d in datas]
tf_cpu = (time.process_time() - t) / len(datas)
import imgclf.images as im
im._draft = lambda img, target: None  # a full-resolution decode, then the same resize
full = [load_image(d, ({side}, {side}), 3) for d in datas]
diff = np.abs(np.stack(ours).astype(int) - np.stack(full).astype(int))
print("DECODE", ours_cpu * 1000, tf_cpu * 1000, diff.max(), diff.mean())
"""


def decode_cpu(folder: Path, n: int, env: dict[str, str]) -> dict[str, float]:
    code = DECODE_CPU.format(side=SIDE)
    result = measured([sys.executable, "-c", code, str(folder), str(n)], env)
    line = next(line for _, line in result["lines"] if line.startswith("DECODE"))
    ours, tf_ms, dmax, dmean = map(float, line.split()[1:])
    return {"imgclf_ms": ours, "tf_ms": tf_ms, "ratio": ours / tf_ms, "max": dmax, "mean": dmean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 30000])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgclf-scale")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, help="another checkout: its train is 'before'")
    parser.add_argument(
        "--baseline-max", type=int, default=30000, help="largest N to run the baseline at"
    )
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "IMGCLF_CACHE": str(args.work / "cache")}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    results: dict[str, object] = {}
    for n in args.sizes:
        start = time.perf_counter()
        folder = make_folder(args.work / f"photos_{n}", n)
        print(f"N={n}: folder ready ({time.perf_counter() - start:.0f} s)", flush=True)
        runs_dir = args.work / f"runs_{n}"
        subprocess.run(["rm", "-rf", str(runs_dir), str(args.work / "cache")], check=True)
        first = train_once(folder, runs_dir / "first", "disk", env)
        second = train_once(folder, runs_dir / "second", "disk", env)
        keras_row = keras_pass(folder, env)
        pred = predict_rss(runs_dir / "first", folder, env)
        results[str(n)] = {"first": first, "second": second, "keras": keras_row, "predict": pred}
        if args.baseline is not None and n <= args.baseline_max:
            before = train_once(folder, runs_dir / "before", None, env, args.baseline)
            results[str(n)]["before"] = before
        print(json.dumps(results[str(n)]), flush=True)
    small = args.work / f"photos_{min(args.sizes)}"
    thousand = make_folder(args.work / "photos_1000", 1000)
    results["predict_1000"] = predict_rss(
        args.work / f"runs_{min(args.sizes)}" / "first", thousand, env
    )
    results["decode"] = decode_cpu(small, 300, env)
    mem = train_once(small, args.work / "runs_mem", "memory", env)
    results["memory_path"] = mem
    summarise(results, args.sizes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def summarise(results: dict, sizes: list[int]) -> None:
    print(
        f"\n{'N':>6} {'run':>6} {'cache':>9} {'1st step s':>10} {'ep1 img/s':>9} "
        f"{'ep2 img/s':>9} {'RSS MB':>7} | {'keras img/s':>11} {'keras RSS':>9} | "
        f"{'predict RSS':>11}"
    )
    for n in sizes:
        r = results[str(n)]
        for name in ("before", "first", "second"):
            if name not in r:
                continue
            t = r[name]
            cache = f"{t['cache'] or 'memory'}{' reused' if t['reused'] else ''}"
            k = r["keras"]
            tail = (
                f"{k['img_s']:>11.0f} {k['rss_mb']:>9.0f} | {r['predict']:>11.0f}"
                if name == "first"
                else f"{'':>11} {'':>9} | {'':>11}"
            )
            print(
                f"{n:>6} {name:>6} {cache:>9} {t['first_step_s']:>10.1f} {t['epoch1_img_s']:>9.0f} "
                f"{t['epoch2_img_s']:>9.0f} {t['rss_mb']:>7.0f} | {tail}"
            )
    print(f"predict on 1,000 files: peak RSS {results['predict_1000']:.0f} MB")
    d = results["decode"]
    print(
        f"\ndecode at {SIDE}×{SIDE}, one core: imgclf {d['imgclf_ms']:.2f} ms/image, TensorFlow "
        f"{d['tf_ms']:.2f} ms/image (ratio {d['ratio']:.2f}); reduced-scale vs full decode: max "
        f"|Δ| {d['max']:.0f} levels, mean {d['mean']:.2f}"
    )
    m, small = results["memory_path"], results[str(min(sizes))]["second"]
    ratio = m["epoch2_img_s"] / small["epoch2_img_s"]
    print(
        f"later epochs, N={min(sizes)}: in memory {m['epoch2_img_s']:.0f} img/s, from the disk "
        f"cache {small['epoch2_img_s']:.0f} img/s (memory / disk {ratio:.2f})"
    )


if __name__ == "__main__":
    main()
