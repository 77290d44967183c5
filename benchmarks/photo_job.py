"""The job users come for, end to end, against a bare Keras script doing the same: the photo
transfer recipe (`configs/photos_transfer.yaml`) on folders of 640×480 JPEG photos.

Arms, each a fresh process, measured from outside (wall time; CPU time of the process from
`wait4`'s rusage; peak anonymous memory, `RssAnon` of /proc/PID/status polled every 0.05 s:
the heap and tensors, not the page cache nor shared libraries) and from inside (per stage:
imgclf's `metrics.json` `resources`, the bare script's own report, both `training.progress.Meter`):

  imgclf   python -m imgclf.train --config configs/photos_transfer.yaml data.path=FOLDER
           (+ the epochs of the section), every default as shipped: decoded cache on disk,
           calibration, OOD detector, diagnostics auto, SavedModel with its parity checks; a
           fresh IMGCLF_CACHE, so the first run decodes and converts the weights
  imgclf, again   the same command on the same folder: the decoded cache is re-used
  bare     benchmarks/bare_keras_photos.py: image_dataset_from_directory + .cache(), the same
           model from imgclf's builder, fit (frozen, then fine-tuned), evaluate, model.export

Sections (`--only`; all by default, in this order, back to back):
  small     1,000 photos, 3 head + 2 fine-tune epochs: imgclf, bare, imgclf again
  shipped   2,000 photos, the recipe as shipped (15 + 10 epochs, early stopping): imgclf, bare
  memory    imgclf alone at 1,000 and 10,000 photos, 1 + 1 epochs: the memory curve
  rerun     time to the first epoch of a first and a second run (default settings) at 1,000,
            2,000 and 10,000 photos
  predict   imgclf-predict on the 1,000- and 2,000-photo folders with the `small` run, against
            benchmarks/bare_keras_predict.py (a tf.data decode loop + the same model.keras)
  accuracy  both arms on Fashion-MNIST (real photos of clothes, Debian's dataset-fashion-mnist)
            upscaled to 224×224 RGB JPEGs, 100 training and 20 validation photos per class and
            100 test photos per class from the official test set, as train/ val/ test/ folders
            (both arms test on the same 1,000 photos), 3 + 2 epochs
  recipe    (not in the default set) imgclf alone, the recipe as shipped, on 1,000 photos: the
            figures of the recipe's header
  views     (not in the default set) the head phase alone on that Fashion-MNIST folder, 15
            epochs as the recipe ships them: through the backbone every epoch with fresh
            augmentation (the exact path) against cached features of K augmented views
            (transfer.augmented_views = 2, 4, 8) and against no augmentation (cached features)

    python benchmarks/photo_job.py --work /tmp/photo-job                 # everything (~1.5 h)
    python benchmarks/photo_job.py --work /tmp/photo-job --only small    # one section
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import make_folder  # noqa: E402  (the scale benchmark's photo generator)

RECIPE = ROOT / "configs" / "photos_transfer.yaml"
SECTIONS = ("small", "shipped", "memory", "rerun", "predict", "accuracy", "views", "recipe")
POLL_S = 0.05


def _anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc's children lists)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return found


def measured(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict:
    """Run `command`: wall s, CPU s (user + system, the process and its waited-for children),
    peak anonymous MB of the process tree, and its stdout lines with the second they came."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    lines: list[tuple[float, str]] = []
    errors: list[str] = []

    def read(stream, into, stamp) -> None:
        for line in stream:
            into.append((time.perf_counter() - start, line.rstrip("\n")) if stamp else line)

    readers = [
        threading.Thread(target=read, args=(proc.stdout, lines, True), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, errors, False), daemon=True),
    ]
    for t in readers:
        t.start()
    peak = 0
    while True:
        peak = max(peak, sum(_anon_kb(p) for p in _tree(proc.pid)))
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({proc.returncode}): {''.join(errors)[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "peak_anon_mb": peak / 1024, "lines": lines}


def starts_training(line: str) -> bool:
    """The first line of training: a transfer phase's start (`phase head: ...`, printed before
    it caches features) or Keras' first epoch."""
    return line.startswith(("phase ", "Epoch 1/"))


def first_epoch_s(folder: Path, cache: Path) -> float:
    """Seconds from starting imgclf-train with the recipe (every default) on `folder` to the
    start of training (`starts_training`); the process is then stopped (SIGTERM: the run is left
    interrupted, and is not used)."""
    import signal
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="first-epoch-", dir=cache.parent)) / "run"
    cmd = [sys.executable, "-m", "imgclf.train", "--config", str(RECIPE),
           f"data.path={folder}", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=environment(cache), cwd=ROOT,
    )  # fmt: skip
    seconds = float("nan")
    for line in proc.stdout:
        if starts_training(line):
            seconds = time.perf_counter() - start
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return seconds


def rerun_table(folders: list[Path], work: Path, stamp: str) -> None:
    """Time to the first epoch of a first run (fresh cache folder: the photos are decoded and
    the weights converted) and of a second run on the same folder (default settings)."""
    print("\n### A second run on the same folder: time to the start of training\n")
    print("| photos | first run s | second run s | second sooner by |")
    print("|---|---|---|---|")
    for folder in folders:
        cache = work / f"cache-rerun-{folder.name}-{stamp}"
        first, second = first_epoch_s(folder, cache), first_epoch_s(folder, cache)
        n = sum(1 for _ in folder.rglob("*.jpg"))
        print(f"| {n:,} | {first:.1f} | {second:.1f} | {first / second:.2f}× |")
        sys.stdout.flush()


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ, IMGCLF_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT)
    return env


def imgclf_arm(
    folder: Path, out: Path, cache: Path, epochs: tuple[int, int] | None, *extra: str
) -> dict:
    """imgclf-train with the recipe (its own epochs when `epochs` is None; `extra` overrides)."""
    over = [] if epochs is None else [
        f"transfer.head_epochs={epochs[0]}", f"transfer.fine_tune_epochs={epochs[1]}"
    ]  # fmt: skip
    over += list(extra)
    cmd = [sys.executable, "-m", "imgclf.train", "--config", str(RECIPE),
           f"data.path={folder}", *over, "--out", str(out)]  # fmt: skip
    result = measured(cmd, environment(cache))
    metrics = json.loads((out / "metrics.json").read_text())
    first = next((t for t, line in result["lines"] if starts_training(line)), None)
    exports = json.loads((out / "exports.json").read_text())
    return {
        **result,
        "first_step_s": first,
        "stages": metrics["resources"]["stages"],
        "test_accuracy": metrics["test"]["accuracy"],
        "n_test": metrics["test"]["n"],
        "epochs_run": metrics["epochs_run"],
        "parity": exports["saved_model"]["parity"]["max_abs_diff"],
        "cache": json.loads((out / "data_report.json").read_text()).get("cache", {}),
    }


def bare_arm(folder: Path, out: Path, cache: Path, epochs: tuple[int, int] | None) -> dict:
    """The bare Keras script on the same folder."""
    over = [] if epochs is None else [
        "--head-epochs", str(epochs[0]), "--fine-tune-epochs", str(epochs[1])
    ]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_keras_photos.py"), str(folder),
           str(out), *over]  # fmt: skip
    result = measured(cmd, environment(cache))
    report = json.loads(result["lines"][-1][1])
    first = next((t for t, line in result["lines"] if line.startswith("Epoch 1/")), None)
    return {
        **result,
        "first_step_s": first,
        "stages": report["stages"],
        "test_accuracy": report["test_accuracy"],
        "n_test": report["n_test"],
    }


def row(name: str, r: dict) -> str:
    acc = f"{r['test_accuracy']:.3f}" if "test_accuracy" in r else "-"
    first = f"{r['first_step_s']:.1f}" if r.get("first_step_s") is not None else "-"
    return (
        f"| {name} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_anon_mb']:,.0f} | {first} "
        f"| {acc} |"
    )


def stage_rows(name: str, r: dict) -> list[str]:
    return [
        f"| {name} | {stage} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | "
        f"{s['peak_anon_mb'] if s['peak_anon_mb'] is not None else '-':,} |"
        for stage, s in r["stages"].items()
    ]


def table(title: str, arms: dict[str, dict]) -> None:
    print(f"\n### {title}\n")
    print("| arm | wall s | CPU s | peak anon MB | to training s | test acc |")
    print("|---|---|---|---|---|---|")
    for name, r in arms.items():
        print(row(name, r))
    print("\n| arm | stage | wall s | CPU s | peak anon MB |")
    print("|---|---|---|---|---|")
    for name, r in arms.items():
        for line in stage_rows(name, r):
            print(line)
    if "imgclf" in arms and "bare" in arms:
        a, b = arms["imgclf"], arms["bare"]
        print(
            f"\nimgclf / bare: wall {a['wall_s'] / b['wall_s']:.2f}×, CPU "
            f"{a['cpu_s'] / b['cpu_s']:.2f}×, peak anon memory "
            f"{a['peak_anon_mb'] / b['peak_anon_mb']:.2f}×"
        )
    again = arms.get("imgclf, again")
    if again and arms.get("imgclf", {}).get("first_step_s") and again.get("first_step_s"):
        first = arms["imgclf"]["first_step_s"]
        print(
            f"to the start of training: first run {first:.1f} s, second run "
            f"{again['first_step_s']:.1f} s ({first / again['first_step_s']:.2f}× sooner)"
        )
    sys.stdout.flush()


def fashion_folder(root: Path, per_class: int = 100, val_per_class: int = 20) -> Path:
    """Fashion-MNIST as 224×224 RGB JPEGs in train/ val/ test/ class folders (re-used)."""
    from PIL import Image

    from imgclf.data.builtin import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_FILES,
        fashion_mnist_dirs,
        read_idx,
    )

    done = root / ".complete"
    if done.is_file():
        return root
    folder = next(d for d in fashion_mnist_dirs() if (d / "t10k-labels-idx1-ubyte.gz").is_file())
    rng = np.random.default_rng(0)
    parts = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        parts[split] = (read_idx(folder / images, 3), read_idx(folder / labels, 1))
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        train_x, train_y = parts["train"]
        test_x, test_y = parts["test"]
        pool = rng.permutation(np.flatnonzero(train_y == c))
        chosen = {
            "train": (train_x, pool[:per_class]),
            "val": (train_x, pool[per_class : per_class + val_per_class]),
            "test": (test_x, rng.permutation(np.flatnonzero(test_y == c))[:per_class]),
        }
        for part, (x, indices) in chosen.items():
            out = root / part / name.replace("/", "-")
            out.mkdir(parents=True, exist_ok=True)
            for i in indices:
                img = Image.fromarray(x[i]).resize((224, 224), Image.Resampling.BICUBIC)
                img.convert("RGB").save(out / f"{i:05d}.jpg", quality=95)
    done.write_text("ok")
    return root


def predict_arms(run: Path, folders: list[Path], work: Path) -> None:
    print("\n### imgclf-predict on a folder against a tf.data loop (the same model.keras)\n")
    print("| arm | files | wall s | CPU s | peak anon MB |")
    print("|---|---|---|---|---|")
    env = environment(work / "cache-predict")
    for folder in folders:
        n = sum(1 for _ in folder.rglob("*.jpg"))
        ours = measured(
            [sys.executable, "-m", "imgclf.predict", str(run), str(folder), "--format", "csv"], env
        )
        bare = measured(
            [sys.executable, str(ROOT / "benchmarks" / "bare_keras_predict.py"), str(run),
             str(folder)], env,
        )  # fmt: skip
        for name, r in (("imgclf-predict", ours), ("tf.data loop", bare)):
            print(f"| {name} | {n:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['peak_anon_mb']:,.0f} |")  # fmt: skip
        print(f"| ratio | | {ours['wall_s'] / bare['wall_s']:.2f}× | "
              f"{ours['cpu_s'] / bare['cpu_s']:.2f}× | |")  # fmt: skip
        sys.stdout.flush()


def views_section(work: Path, runs: Path, stamp: str, fresh) -> None:
    """The head phase alone (15 epochs) on the Fashion-MNIST folder: exact, K views, no
    augmentation."""
    fashion = fashion_folder(work / "fashion-224")
    variants = {
        "exact (backbone every epoch)": [],
        "2 cached views": ["transfer.augmented_views=2"],
        "4 cached views": ["transfer.augmented_views=4"],
        "8 cached views": ["transfer.augmented_views=8"],
        "no augmentation (cached)": ["augment.flip=none", "augment.zoom=0",
                                     "augment.translate=0", "augment.contrast=0"],
    }  # fmt: skip
    print("\n### The head phase (15 epochs) with augmentation: exact against cached views\n")
    print("| variant | head phase s | head CPU s | whole run s | test acc | val loss (best) |")
    print("|---|---|---|---|---|---|")
    for i, (name, extra) in enumerate(variants.items()):
        out = runs / f"views{i}-{stamp}"
        r = imgclf_arm(fashion, out, fresh(f"v{i}"), (15, 0), *extra)
        head = r["stages"]["head"]
        best = json.loads((out / "metrics.json").read_text())["phases"][0].get("best_val_loss")
        print(
            f"| {name} | {head['wall_s']:.0f} | {head['cpu_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['test_accuracy']:.3f} | {best:.4f} |"
        )
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgclf-photo-job"))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS[:-2]))
    parser.add_argument("--small", type=int, default=1000, help="photos of the small section")
    parser.add_argument("--shipped", type=int, default=2000, help="photos of the shipped one")
    parser.add_argument("--big", type=int, default=10_000, help="photos of the memory curve")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M')}; load average "
        f"{load[0]:.2f} at the start"
    )
    runs = work / "runs"
    stamp = time.strftime("%H%M%S")

    def fresh(name: str) -> Path:
        return work / f"cache-{name}-{stamp}"

    small = tuple((3, 2))
    if "small" in args.only or ("predict" in args.only and not list(runs.glob("small-[0-9]*"))):
        p1k = make_folder(work / f"photos-{args.small}", args.small)
        cache = fresh("small")
        arms = {"imgclf": imgclf_arm(p1k, runs / f"small-{stamp}", cache, small)}
        arms["bare"] = bare_arm(p1k, runs / f"small-bare-{stamp}", fresh("bare"), small)
        arms["imgclf, again"] = imgclf_arm(p1k, runs / f"small-again-{stamp}", cache, small)
        table(f"{args.small:,} photos, 3 + 2 epochs", arms)
    if "shipped" in args.only:
        p2k = make_folder(work / f"photos-{args.shipped}", args.shipped)
        arms = {"imgclf": imgclf_arm(p2k, runs / f"shipped-{stamp}", fresh("shipped"), None)}
        arms["bare"] = bare_arm(p2k, runs / f"shipped-bare-{stamp}", fresh("sbare"), None)
        table(f"{args.shipped:,} photos, the recipe as shipped", arms)
    if "memory" in args.only:
        arms = {}
        for n in (1000, args.big):
            folder = make_folder(work / f"photos-{n}", n)
            arms[f"imgclf {n:,}"] = imgclf_arm(folder, runs / f"mem{n}-{stamp}", fresh(f"m{n}"),
                                               (1, 1))  # fmt: skip
        table(f"memory curve: imgclf at 1,000 and {args.big:,} photos, 1 + 1 epochs", arms)
        a, b = arms["imgclf 1,000"], arms[f"imgclf {args.big:,}"]
        grew = b["peak_anon_mb"] - a["peak_anon_mb"]
        print(f"\npeak anon at {args.big:,} minus at 1,000: {grew:+,.0f} MB")
    if "rerun" in args.only:
        sizes = (args.small, args.shipped, args.big)
        rerun_table([make_folder(work / f"photos-{n}", n) for n in sizes], work, stamp)
    if "predict" in args.only:
        folders = [
            make_folder(work / f"photos-{args.small}", args.small),
            make_folder(work / f"photos-{args.shipped}", args.shipped),
        ]
        small_runs = sorted(runs.glob("small-[0-9]*"), key=lambda p: p.stat().st_mtime)
        predict_arms(small_runs[-1], folders, work)
    if "accuracy" in args.only:
        fashion = fashion_folder(work / "fashion-224")
        arms = {
            "imgclf": imgclf_arm(fashion, runs / f"fashion-{stamp}", fresh("fashion"), small),
            "bare": bare_arm(fashion, runs / f"fashion-bare-{stamp}", fresh("fbare"), small),
        }
        table("Fashion-MNIST at 224 px, 100 photos per class, 3 + 2 epochs", arms)
    if "recipe" in args.only:
        folder = make_folder(work / f"photos-{args.small}", args.small)
        arms = {"imgclf": imgclf_arm(folder, runs / f"recipe-{stamp}", fresh("recipe"), None)}
        table(f"{args.small:,} photos, the recipe as shipped (imgclf alone)", arms)
    if "views" in args.only:
        views_section(work, runs, stamp, fresh)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")


if __name__ == "__main__":
    main()
