"""Near duplicates: the same photo re-encoded, resized, lightly cropped or re-exposed, which an
exact hash (`data.duplicates`) cannot see.

Method: the perceptual hash of each image (`imagehash.phash`, the `ImageHash` package: a 64-bit
hash of the low frequencies of the image's discrete cosine transform, on a 32×32 grey copy),
and every pair of images whose hashes differ in at most `MAX_DISTANCE` bits (Hamming distance,
counted with numpy's `bitwise_count`) is one group (pairs chain: union-find).

Reported, not acted on: unlike exact copies, a near-duplicate group may join two different
photos that look alike (two products photographed the same way, two handwritten 1s), and
chained pairs can grow a group across a whole class, so the split does not keep these groups
together. What the report says is how many groups the split put in both training and test:
each is a test image the model may have seen. Checked for folder and CSV sources whose decoded
pixels are cached (`data.cache` memory or disk); the built-in datasets are not checked (their
look-alike digits would flood the report).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from imgclf.data.pool import Pool, pixel_chunks

MAX_DISTANCE = 2  # of 64 bits: benchmarks/audit.py, docs/data.md (recall against false groups)
METHOD = "perceptual hash (imagehash.phash, 64 bits), at most {} bits apart"
SHOWN = 20  # groups listed in the data report (the counts cover all)
CHUNK = 1024  # rows of the pairwise comparison at a time (CHUNK × N uint64s in memory)
MAX_PAIRS = 5_000_000  # look-alike pairs beyond which the check gives up (see near_groups)


def phashes(images: Any) -> np.ndarray:
    """uint64 [N]: the perceptual hash of each uint8 image [N, H, W(, C)]."""
    import imagehash
    from PIL import Image

    out = np.empty(len(images), dtype=np.uint64)
    for i, pixels in enumerate(images):
        pixels = np.asarray(pixels)
        grey = pixels.ndim == 3 and pixels.shape[-1] == 1
        pil = Image.fromarray(pixels[..., 0] if grey else pixels)
        bits = imagehash.phash(pil).hash.reshape(-1)  # 64 booleans
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def near_groups(hashes: np.ndarray, max_distance: int | None = None) -> list[np.ndarray] | None:
    """Groups (sorted int64 index arrays, 2 or more each, by first index) of hashes at most
    `max_distance` bits apart (default MAX_DISTANCE), pairs chained (the connected components
    of the pairs, `scipy.sparse.csgraph`). None when there are more than MAX_PAIRS such pairs:
    images that much alike (near-blank pages, one product shot the same way) are beyond what a
    perceptual hash can tell apart, and their pairs would not fit in memory."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    max_distance = MAX_DISTANCE if max_distance is None else max_distance
    n = len(hashes)
    rows, cols, pairs = [], [], 0
    for start in range(0, n, CHUNK):
        block = hashes[start : start + CHUNK]
        close = _popcount(block[:, None] ^ hashes[None, start:]) <= max_distance
        r, c = np.nonzero(close)
        keep = r < c + 0  # the block against itself and the later images: each pair once
        r, c = r[keep] + start, c[keep] + start
        different = r != c
        rows.append(r[different])
        cols.append(c[different])
        pairs += int(different.sum())
        if pairs > MAX_PAIRS:
            return None
    if n == 0 or pairs == 0:
        return []
    graph = coo_matrix(
        (np.ones(pairs, dtype=np.int8), (np.concatenate(rows), np.concatenate(cols))), (n, n)
    )
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    bounds = np.flatnonzero(np.diff(label[order])) + 1
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return sorted((np.sort(g).astype(np.int64) for g in groups), key=lambda g: int(g[0]))


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy 2
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def report(
    pool: Pool,
    train: np.ndarray,
    test: np.ndarray,
    exact: list[np.ndarray],
    kept: Callable[[str, str], bool] | None = None,
) -> dict:
    """The data report's `near_duplicates`: the groups among the usable images of a cached file
    source that are not exact copies, and how many of them the split put in both training
    and test; or why the check was skipped. A group whose every file the review keeps
    (`kept("near_duplicates", file)`, `data.review.kept_in`) is left out."""
    store = pool.store
    if store is None or store.mode not in ("memory", "disk"):
        why = "built-in dataset" if store is None else "data.cache none (no decoded pixels kept)"
        return {"method": METHOD.format(MAX_DISTANCE), "skipped": why}
    read, hashes = [], []
    for chunk, pixels in pixel_chunks(pool):  # a chunk at a time: the disk cache stays on disk
        read.append(chunk)
        hashes.append(phashes(pixels))
    usable = np.concatenate(read) if read else np.empty(0, np.int64)
    same = {int(i): int(g[0]) for g in exact for i in g}  # exact copies count as one image
    found = near_groups(np.concatenate(hashes) if hashes else np.empty(0, np.uint64))
    if found is None:
        why = f"more than {MAX_PAIRS:,} look-alike pairs: too alike for a perceptual hash"
        return {"method": METHOD.format(MAX_DISTANCE), "skipped": why}
    groups = []
    for group in found:
        members = usable[group]
        if len({same.get(int(i), int(i)) for i in members}) > 1 and not (
            kept and pool.files and all(kept("near_duplicates", pool.files[i]) for i in members)
        ):
            groups.append(members)
    where = np.full(len(pool.labels), -1)
    where[train], where[test] = 0, 2
    across = [g for g in groups if {0, 2} <= set(where[g].tolist())]
    name = (lambda i: pool.files[i]) if pool.files is not None else str
    return {
        "method": METHOD.format(MAX_DISTANCE),
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "across_train_and_test": len(across),
        "examples": [
            {
                "files": [name(int(i)) for i in g],
                "classes": sorted({pool.class_names[c] for c in pool.labels[g]}),
            }
            for g in (across + [g for g in groups if not any(g is a for a in across)])[:SHOWN]
        ],
    }


def describe(near: dict[str, Any] | None, prefix: str) -> str:
    """The report's near duplicates as a line starting with `prefix` ("" when none were found
    or the check was skipped): the model card and the run's start-up lines."""
    if not near or not near.get("groups"):
        return ""
    text = f"{prefix}Near duplicates: {near['groups']} group(s) of look-alike images"
    if near["across_train_and_test"]:
        text += (
            f"; {near['across_train_and_test']} of them in both training and test, so the test "
            "accuracy may count images the model has as good as seen (the data report lists "
            "them)"
        )
    return text
