"""The data audit's duplicate finders on planted copies: recall per kind of copy, false groups
among distinct images, and the cost of the audit at 10,000 images (issue 28, parts b and c).

    python benchmarks/audit.py --work /tmp/audit-bench

Data: Fashion-MNIST test images (Debian's dataset-fashion-mnist; 28×28 grey, enlarged to
112×112 so that "resized to 50%" and "cropped to 90%" keep some detail), written as PNG files in
a folder per class. 2,000 distinct images, then 200 planted copies of distinct originals per
kind: exact (the same bytes), JPEG at quality 60, resized to 50%, cropped to the central 90%
(then saved at that size), brightness +20%. The audit is `imgclf-audit`'s own path
(`imgclf.audit.audit`: the folder listing, the decoder, the memory cache, `data.duplicates`
and `data.near_duplicates`) at the default 28×28 training size and at 112×112.

Recall of a kind: the share of its 200 copies found in one group with their original (an exact
group for `exact`, a near-duplicate group for the others). False groups: distinct images (no
copy planted of either) put in one near-duplicate group; Fashion-MNIST has look-alike products
(plain T-shirts, sandals), and the pairs found are printed so one can see what they are.

Part (a), likely label errors (`imgclf.data.label_issues`): 2,000 training images of mnist5k
and of Fashion-MNIST with 5% and 10% of their labels flipped to another class at random (the
same flips for both kinds of features: 16×16 pixels, and frozen ImageNet features of
EfficientNet-Lite0, `data.audit: imagenet`); precision and recall of the flagged list against
the flipped images, beside the baseline a user has today: the same number of images with the
lowest self-confidence (the probability of the given label) from a logistic regression fitted
on everything (no folds) on the same features. When `cleanlab` is installed
(`pip install cleanlab`; AGPL-3.0, never a dependency of imgclf), how many of its
`find_label_issues` on the same probabilities are flagged here too.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from imgclf.audit import audit
from imgclf.data import duplicates, near_duplicates
from imgclf.data.builtin import FASHION_MNIST_DEBIAN, read_idx

KINDS = ("exact", "jpeg60", "half", "crop90", "bright20")


def _fashion(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(FASHION_MNIST_DEBIAN / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(FASHION_MNIST_DEBIAN / "t10k-labels-idx1-ubyte.gz", 1)
    keep = np.random.default_rng(seed).permutation(len(labels))[:n]
    return images[keep], labels[keep]


def _copy(photo: Image.Image, kind: str, path: Path) -> Path:
    if kind == "jpeg60":
        path = path.with_suffix(".jpg")
        photo.save(path, quality=60)
    elif kind == "half":
        photo.resize((photo.width // 2, photo.height // 2), Image.BILINEAR).save(path)
    elif kind == "crop90":
        w, h = photo.size
        dx, dy = round(w * 0.05), round(h * 0.05)
        photo.crop((dx, dy, w - dx, h - dy)).save(path)
    elif kind == "bright20":
        ImageEnhance.Brightness(photo).enhance(1.2).save(path)
    return path


def write_dataset(root: Path, n: int, pairs: int, seed: int = 0) -> dict[str, list]:
    """`n` distinct images and `pairs` copies per kind; returns kind -> [(original, copy)]
    (relative paths)."""
    shutil.rmtree(root, ignore_errors=True)
    images, labels = _fashion(n, seed)
    names = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        photo = Image.fromarray(pixels).resize((112, 112), Image.BICUBIC)
        photo.save(folder / f"img{i:05d}.png")
        names.append(f"class{label}/img{i:05d}.png")
    rng = np.random.default_rng(seed + 1)
    originals = rng.permutation(n)[: pairs * len(KINDS)].reshape(len(KINDS), pairs)
    planted: dict[str, list] = {}
    for kind, chosen in zip(KINDS, originals, strict=True):
        planted[kind] = []
        for i in chosen:
            source = root / names[i]
            target = source.with_name(f"{kind}-{source.name}")
            if kind == "exact":
                shutil.copyfile(source, target)
            else:
                target = _copy(Image.open(source), kind, target)
            planted[kind].append((names[i], target.relative_to(root).as_posix()))
    return planted


def _groups(report: dict) -> tuple[list[set], list[set]]:
    exact = [set(g["files"]) for g in report["duplicates"]["examples"]]
    near = [set(g["files"]) for g in (report["near_duplicates"] or {}).get("examples", [])]
    return exact, near


def measure(root: Path, planted: dict[str, list], size: int) -> None:
    overrides = [
        "data.source=folder", f"data.path={root}", f"data.image_size=[{size},{size}]",
        "data.cache=memory", "data.duplicates=keep",
    ]  # fmt: skip
    duplicates.SHOWN = near_duplicates.SHOWN = 10**9  # every group, not the first 20
    start = time.perf_counter()
    report = audit(overrides)
    seconds = time.perf_counter() - start
    exact, near = _groups(report)
    print(f"\n{size}×{size}: audit of {report['images']} images in {seconds:.1f} s")
    for kind, pairs in planted.items():
        found = exact if kind == "exact" else near
        hits = sum(any({a, b} <= g for g in found) for a, b in pairs)
        print(f"  {kind:9s} recall {hits / len(pairs):.3f} ({hits}/{len(pairs)})")
    origin = {b: a for pairs in planted.values() for a, b in pairs}  # copy -> its original
    false = [g for g in near if len({origin.get(f, f) for f in g}) > 1]
    wrongly = set().union(*({origin.get(f, f) for f in g} for g in false)) if false else set()
    distinct = report["images"] - len(origin)
    print(f"  false groups: {len(false)}, joining {len(wrongly)} of {distinct} distinct images "
          f"({len(wrongly) / distinct:.2%})")  # fmt: skip
    for g in false[:5]:
        print("   ", " ~ ".join(sorted(g)))


def label_errors(seed: int = 0) -> None:

    from imgclf.config import load_config
    from imgclf.data import embeddings, label_issues
    from imgclf.data.split import load_pool

    print("\n(a) likely label errors, 2,000 training images")
    net = embeddings.model()
    for source in ("mnist5k", "fashion_mnist"):
        pool = load_pool(load_config(None, [f"data.source={source}"]).data)
        pick = np.random.default_rng(seed).permutation(len(pool.labels))[:2000]
        start = time.perf_counter()
        features = {
            "pixels": label_issues.features(pool.images[pick]),
            "imagenet": embeddings.features(pool.images[pick], net),
        }
        print(f"  {source}: ImageNet features of 2,000 images in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        clean, k = pool.labels[pick], len(pool.class_names)
        for kind, x in features.items():
            rng = np.random.default_rng(seed)  # the same flips for both kinds of features
            for rate in (0.05, 0.10):
                noisy = clean.copy()
                flip = rng.permutation(len(noisy))[: int(rate * len(noisy))]
                noisy[flip] = (noisy[flip] + rng.integers(1, k, len(flip))) % k
                _one(kind, source, rate, x, noisy, set(flip.tolist()), seed)


def _one(kind: str, source: str, rate: float, x, noisy, truth: set, seed: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from imgclf.data import label_issues

    start = time.perf_counter()
    probs = label_issues.out_of_fold(x, noisy, seed, embedded=kind == "imagenet")
    found = [i for i, _, _ in label_issues.find(noisy, probs)]
    seconds = time.perf_counter() - start
    # The baseline: a model fitted on everything (no folds), on the same features.
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.01))
    own = model.fit(x, noisy).predict_proba(x)[np.arange(len(noisy)), noisy]
    baseline = np.argsort(own)[: len(found)].tolist()
    line = f"  {source:13s} {kind:8s} {rate:.0%} flipped: flagged {len(found):4d}"
    for name, chosen in (("confident learning", found), ("lowest self-confidence", baseline)):
        hit = len(set(chosen) & truth)
        precision, recall = hit / max(len(chosen), 1), hit / len(truth)
        line += f" | {name} precision {precision:.3f} recall {recall:.3f}"
    print(line + f" | {seconds:.1f} s")
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return
    theirs = set(np.flatnonzero(find_label_issues(noisy, probs)).tolist())
    both = len(theirs & set(found))
    print(f"    cleanlab flagged {len(theirs)}, {both} of them flagged here too")


def outliers_planted(seed: int = 0) -> None:
    """(d) Outliers (`imgclf.data.outliers`): 3,500 images of mnist5k and of Fashion-MNIST with
    20 inverted images (another kind of picture) and 5 blank frames planted among them."""
    from imgclf.config import load_config
    from imgclf.data import label_issues, outliers
    from imgclf.data.split import load_pool

    print("\n(d) outliers, 3,500 images, 20 inverted and 5 blank planted")
    for source in ("mnist5k", "fashion_mnist"):
        pool = load_pool(load_config(None, [f"data.source={source}"]).data)
        pick = np.random.default_rng(seed).permutation(len(pool.labels))[:3500]
        images = pool.images[pick].copy()
        images[:20] = 255 - images[:20]
        images[20:25] = 0
        x = label_issues.features(images)
        outliers.SHOWN = 10**9  # every flagged image, not the first 20
        start = time.perf_counter()
        # The images are named by pool index ("image 123"): `pick` are their pool indices.
        found = outliers.report(type(pool)(images, pool.labels, pool.class_names), pick, x)
        seconds = time.perf_counter() - start
        flagged = {int(row["file"].split()[-1]): row["why"] for row in found["examples"]}
        inverted = sum(flagged.get(int(i)) == "unlike its class" for i in pick[:20])
        blank = sum(flagged.get(int(i)) == "near-constant" for i in pick[20:25])
        print(f"  {source:13s} flagged {found['flagged']:3d}: inverted found {inverted}/20, "
              f"blank found {blank}/5, others {found['flagged'] - inverted - blank} "
              f"({seconds:.1f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit-bench"))
    parser.add_argument("--distinct", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--scale", type=int, default=10000, help="images for the timing (c)")
    parser.add_argument("--distances", type=int, nargs="+", default=[near_duplicates.MAX_DISTANCE])
    parser.add_argument("--parts", default="abcd", help="which parts to run (a, b, c, d)")
    args = parser.parse_args()
    if "a" in args.parts:
        label_errors()
    if "d" in args.parts:
        outliers_planted()
    if not {"b", "c"} & set(args.parts):
        return
    planted = write_dataset(args.work / "planted", args.distinct, args.pairs)
    for distance in args.distances:
        near_duplicates.MAX_DISTANCE = distance
        print(f"\n== at most {distance} of 64 bits apart")
        for size in (28, 112):
            measure(args.work / "planted", planted, size)
    write_dataset(args.work / "scale", args.scale, 0)
    for attempt in (1, 2):
        start = time.perf_counter()
        report = audit(["data.source=folder", f"data.path={args.work / 'scale'}",
                        "data.cache=disk", "data.image_size=[112,112]"])  # fmt: skip
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(c) {report['images']} images at 112×112, run {attempt} (disk cache "
              f"{'cold' if attempt == 1 else 'warm'}): {time.perf_counter() - start:.1f} s, "
              f"peak RSS so far {peak:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
