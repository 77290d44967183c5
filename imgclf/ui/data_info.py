"""What the Data page works out and draws, without Streamlit: a dataset's files per class
(listed by the code training uses), the data report training would write for them (`load_data`
with no decoded cache: every header checked, no pixel decoded), header-only size and mode
figures of a sample, sample pictures per class, the tables and the chart of the counts, and the
config the augmentation preview runs with.

Nothing here imports TensorFlow: the listing, the split and the header checks are Pillow and
NumPy only (built-in `keras:*` sources excepted, which Keras itself loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import altair as alt
import numpy as np
import pandas as pd

from imgclf.config import build_config
from imgclf.data import load_data, load_pool
from imgclf.data.folder import check_root, confined, list_csv, list_folder
from imgclf.images import ImageError, thumbnail
from imgclf.ui.charts import CATEGORICAL

if TYPE_CHECKING:
    from imgclf.schema import Config

FILE_SOURCES = ("folder", "csv")
HEADERS_PER_CLASS = 200  # files opened (header only) per class for the size and mode figures
HEADERS_IN_ALL = 4000  # ... and in all (many classes: fewer per class)
PREVIEW_ROWS = 10  # most training images in the augmentation preview


@dataclass(frozen=True)
class Listing:
    """A folder's or CSV's image files per class, as training lists them (nothing opened)."""

    kind: str  # "folder" or "csv"
    root: Path  # the files are relative to it
    files: dict[str, list[str]]  # class -> its files, in listing order (empty classes too)
    # What the listing itself left out, with reasons (the data report has them too, but the
    # page must show them also when training would stop before writing a report):
    skipped: list[dict[str, str]] = field(default_factory=list)  # CSV rows refused
    ignored: list[dict[str, str]] = field(default_factory=list)  # not images, unreadable folders


def source_kind(path: str | Path) -> str:
    """`csv` for a file (a CSV list of path,label rows), else `folder`."""
    return "csv" if Path(path).is_file() or str(path).lower().endswith(".csv") else "folder"


def list_source(path: str | Path) -> Listing:
    """The files per class of a folder (one sub-folder per class, or train/val/test folders of
    class sub-folders) or of a CSV, listed by `list_folder` / `list_csv`. DataError (one line)
    for a missing folder, a missing or malformed CSV, or a bad layout."""
    kind = source_kind(path)
    skipped: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    if kind == "csv":
        entries, skipped, _, root = list_csv(Path(path))
        entries = confined(Path(path), entries, skipped, root)  # IMGCLF_DATA_ROOTS, as training
        classes = sorted({label for _, label, _ in entries})
    else:
        root = check_root(path)
        entries, classes, ignored, _ = list_folder(root)
        entries = confined(root, entries, ignored)
    files: dict[str, list[str]] = {name: [] for name in classes}
    for file, label, _ in entries:
        files[label].append(file)
    return Listing(kind, root, files, skipped, ignored)


def training_config(path: str | Path, kind: str, base: dict[str, Any] | None = None) -> Config:
    """`base` (default: the built-in default config) reading `path` as a `kind` source, with no
    decoded cache: loading it checks every file's header and decodes no pixel."""

    values = dict(base or {})
    data = {**(values.get("data") or {}), "source": kind, "path": str(path), "cache": "none"}
    return build_config({**values, "data": data})


def training_report(config: Config) -> dict[str, Any]:
    """The data report `load_data` builds for `config`: classes, counts per split and class (the
    configured split: stratified with the config's fractions and seed, or the source's own),
    skipped and ignored files. Raises DataError where training would stop. Without the
    per-image checks (the Review section audits on request)."""

    data = config.data.model_copy(update={"audit": "off"})
    return load_data(config.model_copy(update={"data": data})).report


def spread(items: list[Any], k: int) -> list[Any]:
    """At most `k` of `items`, evenly spaced from first to last (all of them when fewer)."""
    n = len(items)
    return list(items) if n <= k else [items[i * n // k] for i in range(k)]


def _header(path: Path) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only: no pixel is decoded
            return {"width": img.width, "height": img.height, "mode": img.mode,
                    "format": img.format or "?"}  # fmt: skip
    except Exception as exc:  # any reason (a bomb, a garbled header): counted, not raised
        return {"width": None, "height": None, "mode": None, "format": None, "error": repr(exc)}


def header_rows(listing: Listing, per_class: int = HEADERS_PER_CLASS) -> list[dict[str, Any]]:
    """Size, mode and format of up to `per_class` files of each class (evenly spread through
    it; fewer per class when there are many classes, HEADERS_IN_ALL at most), from each file's
    header as stored (before EXIF rotation)."""
    per_class = min(per_class, max(10, HEADERS_IN_ALL // max(len(listing.files), 1)))
    return [
        {"class": name, **_header(listing.root / file)}
        for name, files in listing.files.items()
        for file in spread(files, per_class)
    ]


def file_samples(root: Path, files: list[str], k: int, side: int = 96) -> list[np.ndarray]:
    """Up to `k` pictures of `files` (spread through the list) as imgclf decodes them
    (`images.thumbnail`); a file that does not decode is passed over for the next one."""
    shown: list[np.ndarray] = []
    for file in spread(files, 3 * k):
        try:
            shown.append(thumbnail(root / file, max_side=side))
        except (ImageError, OSError):
            continue
        if len(shown) == k:
            break
    return shown


def builtin_samples(config: Config, k: int) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """({class: uint8 [<=k, h, w, c]}, the source's own image shape (h, w, c)) of a built-in
    source, loaded by `load_pool` exactly as training loads it (the run's classes kept)."""

    pool = load_pool(config.data)
    samples = {}
    for index, name in enumerate(pool.class_names):
        picks = spread(list(np.flatnonzero(pool.labels == index)), k)
        samples[name] = np.asarray(pool.images[picks])
    return samples, tuple(pool.images.shape[1:])


def preview_config(config: Config, n_classes: int) -> tuple[Config, int]:
    """(config, rows) for `augment.preview`: the same data and augmentation, no decoded cache,
    and the training split capped (`data.max_per_class`) so that its first rows cover the
    classes instead of all coming from the first one."""

    per_class = max(1, -(-6 // max(n_classes, 1)))  # ceil(6 / classes): about six rows
    per_class = min(config.data.max_per_class or per_class, per_class)
    values = config.model_dump(mode="json")
    values["data"].update(cache="none", max_per_class=per_class)
    return build_config(values), min(per_class * n_classes, PREVIEW_ROWS)


def counts_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Classes x splits (+ total) exactly as the report counts them, and an all-classes row."""
    counts, classes = report["counts"], report["classes"]
    frame = pd.DataFrame({split: [counts[split].get(c, 0) for c in classes] for split in counts})
    frame.index = pd.Index(classes, name="class")
    frame["total"] = frame.sum(axis=1)
    frame.loc["all classes"] = frame.sum(axis=0)
    return frame.astype(int)


def size_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per class (and all): files opened, unreadable headers, width and height min/median/max,
    modes, formats."""
    frame = pd.DataFrame(rows)
    groups = [(str(name), part) for name, part in frame.groupby("class", sort=False)]
    out = []
    for name, part in [*groups, ("all classes", frame)]:
        sized = part.dropna(subset=["width"])
        row: dict[str, Any] = {"class": name, "files opened": len(part)}
        row["unreadable"] = len(part) - len(sized)
        for side in ("width", "height"):
            values = sized[side].astype(int)
            row[side] = (
                f"{values.min()} / {int(values.median())} / {values.max()}" if len(values) else "–"
            )
        for key in ("mode", "format"):
            row[key + "s"] = ", ".join(f"{k} {n}" for k, n in part[key].value_counts().items())
        out.append(row)
    return pd.DataFrame(out)


SPLITS = ("train", "val", "test")


def split_counts_chart(counts: dict[str, dict[str, int]], classes: list[str]) -> alt.Chart:
    """Images per class as bars stacked by split (the report's `counts`: split -> class ->
    images), classes in the report's order, one categorical colour per split."""
    order = [s for s in SPLITS if s in counts] + [s for s in counts if s not in SPLITS]
    rows = [
        {"class": name, "split": split, "images": int(counts[split].get(name, 0)), "rank": i}
        for i, split in enumerate(order)
        for name in classes
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X(
                "class:N",
                sort=list(classes),
                title=None,
                axis=alt.Axis(labelLimit=120, labelAngle=0 if len(classes) <= 12 else -45),
            ),
            y=alt.Y("images:Q", stack="zero", title="images"),
            color=alt.Color(
                "split:N", sort=order, scale=CATEGORICAL, legend=alt.Legend(orient="bottom")
            ),
            order=alt.Order("rank:Q"),
            tooltip=["class", "split", "images"],
        )
        .properties(height=280, title="images per class and split")
    )
