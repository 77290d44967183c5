"""Data page: "did it read my folder right?". For the selected run (its data report and config)
or for a folder or CSV before training (listed and split by the code training uses, nothing
trained, TensorFlow not imported): images per class and split, skipped and ignored files with
their reasons, image sizes and modes, sample pictures per class, and the configured
augmentation on real training images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from imgclf import runs
from imgclf.config import build_config
from imgclf.data import near_duplicates, suspects
from imgclf.data.duplicates import describe
from imgclf.infra.errors import UserError
from imgclf.schema import AugmentConfig
from imgclf.training.augment import preview_grid
from imgclf.ui import data_info
from imgclf.ui.catalog import RunEntry
from imgclf.ui.exposure import server_path
from imgclf.ui.pages import review as review_view
from imgclf.ui.text import plain

SOURCES = ("The selected run", "A folder or CSV (before training)")
SAMPLES_PER_CLASS = 8
MAX_SAMPLE_CLASSES = 20  # sample rows shown (a 100-class source would fill many screens)
MAX_GROUPS = 10  # duplicate groups shown with their pictures


@st.cache_data(ttl=300, max_entries=8, show_spinner="Listing the files…")
def _scan(path: str) -> tuple[data_info.Listing, list[dict[str, Any]]]:
    # Cached for a while (re-read with the button): the header pass opens thousands of files.
    listing = data_info.list_source(path)
    return listing, data_info.header_rows(listing)


@st.cache_data(ttl=300, max_entries=8, show_spinner="Checking every file's header…")
def _would_report(path: str, kind: str) -> dict[str, Any] | str:
    """Training's data report for the default config on `path`, or why training would stop."""
    try:
        return data_info.training_report(data_info.training_config(path, kind))
    except UserError as exc:
        return str(exc)


@st.cache_data(max_entries=64, show_spinner=False)
def _thumbnails(root: str, files: tuple[str, ...], k: int) -> list[Any]:
    return data_info.file_samples(Path(root), list(files), k)


@st.cache_data(max_entries=4, show_spinner="Loading the built-in images…")
def _builtin(data_json: str, k: int) -> tuple[dict[str, Any], tuple[int, ...]]:
    return data_info.builtin_samples(build_config({"data": json.loads(data_json)}), k)


def _run_config(run: runs.Run) -> Any:
    """The run's config.yaml validated, or None with one warning line (an older run)."""

    try:
        return build_config(run.config)
    except UserError as exc:
        st.warning(f"`{runs.CONFIG}` of `{run.name}` no longer validates: {exc}")
        return None


def _counts(report: dict[str, Any]) -> None:
    st.subheader("Images per class and split")
    left, right = st.columns([2, 3])
    left.table(data_info.counts_frame(report))
    right.altair_chart(
        data_info.split_counts_chart(report["counts"], report["classes"]), width="stretch"
    )
    if report.get("train_before_cap"):
        before = sum(report["train_before_cap"].values())
        st.caption(
            f"Training was capped at {report.get('max_per_class')} images per class "
            f"(data.max_per_class): {before} training images before the cap."
        )


def _file_table(title: str, rows: list[dict[str, str]], what: str) -> None:
    with st.container(key=f"data-{title.lower()}"):
        if not rows:
            st.markdown(f"**{title}:** none.")
            return
        st.markdown(f"**{title}:** {len(rows)}, {what}.")
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def _problems(report: dict[str, Any]) -> None:
    for group in report.get("similar_class_names") or []:
        st.warning(
            f"Classes {plain(', '.join(group))} differ only in upper/lower case: one class "
            "under two names? Rename one folder (or label) to merge them."
        )
    st.subheader("Skipped and ignored files")
    _file_table("Skipped", report.get("skipped") or [], "unreadable: left out of every split")
    _file_table(
        "Ignored",
        report.get("ignored") or [],
        "never opened (not images, or in a folder that cannot be read)",
    )


def _duplicate_groups(report: dict[str, Any], root: Path | None) -> None:
    """The exact and near duplicates the report found, each group's files side by side (the
    first MAX_GROUPS groups; data_report.json has the first 20, the counts cover all)."""
    sections = (
        ("Exact duplicates", "dup", report.get("duplicates"), describe),
        ("Near duplicates", "near", report.get("near_duplicates"), near_duplicates.describe),
    )
    for title, key, found, line in sections:
        if not found or not found.get("examples"):
            continue
        st.subheader(title)
        st.caption(line(found, "").strip() + f". Method: {found['method']}.")
        for i, group in enumerate(found["examples"][:MAX_GROUPS]):
            with st.container(key=f"data-{key}-{i}"):
                st.markdown(
                    f"{plain(' · '.join(group['files']))} ({plain(', '.join(group['classes']))})"
                )
                files = tuple(group["files"])
                pictures = _thumbnails(str(root), files, len(files)) if root else []
                if pictures:
                    st.image(pictures, width=96, output_format="PNG", alt=list(files))


def _suspects(report: dict[str, Any]) -> None:
    """The training split's likely label errors and outliers (data_report.json), as tables."""
    line = suspects.describe(report, "\n").strip()
    if not line:
        return
    st.subheader("Likely label errors and outliers (training split)")
    st.caption(plain(line.replace("\n", "; ")))
    for key, title in (("label_issues", "Likely label errors"), ("outliers", "Outliers")):
        rows = (report.get(key) or {}).get("examples")
        if rows:
            with st.container(key=f"data-{key}"):
                st.markdown(f"**{title}** ({report[key]['method']})")
                st.dataframe(pd.DataFrame(rows), hide_index=True)


def _file_sizes(rows: list[dict[str, Any]]) -> None:
    st.subheader("Image sizes and modes")
    if not rows:
        st.caption("No image file to open.")
        return
    st.container(key="data-sizes").dataframe(data_info.size_table(rows), hide_index=True)
    st.caption(
        f"From the headers of {len(rows)} files (Pillow's Image.open without decoding; up to "
        f"{data_info.HEADERS_PER_CLASS} per class, spread through it); sizes as stored, before "
        "EXIF rotation, as min / median / max pixels. Training stretches every image to the "
        "configured size and converts it to the configured channels."
    )


def _sample_rows(samples: dict[str, list[Any]], totals: dict[str, int], unit: str) -> None:
    """A row of pictures per class (the first MAX_SAMPLE_CLASSES classes of `totals`), each
    class named with its number of `unit` (images, or image files as listed)."""
    st.subheader("Samples")
    if len(totals) > len(samples):
        st.caption(f"The first {len(samples)} of {len(totals)} classes.")
    for i, (name, images) in enumerate(samples.items()):
        with st.container(key=f"data-sample-{i}"):
            st.markdown(f"**{name}** · {totals.get(name, 0)} {unit}")
            if len(images):
                alts = [f"{name} sample {n + 1}" for n in range(len(images))]
                st.image(list(images), width=72, output_format="PNG", alt=alts)
            else:
                st.caption("No image of this class decodes.")


def _file_samples(listing: data_info.Listing, classes: list[str]) -> None:
    root = str(listing.root)
    samples = {
        name: _thumbnails(root, tuple(listing.files.get(name, [])), SAMPLES_PER_CLASS)
        for name in classes[:MAX_SAMPLE_CLASSES]
    }
    totals = {name: len(listing.files.get(name, [])) for name in classes}
    _sample_rows(samples, totals, "image files")
    st.caption("Decoded by imgclf's own decoder (images.thumbnail), as training reads them.")


def _builtin_data(config: Any, report: dict[str, Any]) -> None:
    """A built-in source: its fixed size, and samples loaded the way training loads them."""
    st.subheader("Image sizes and modes")
    try:
        samples, shape = _builtin(config.data.model_dump_json(), SAMPLES_PER_CLASS)
    except UserError as exc:
        st.warning(f"The {report['source']} images cannot be loaded here: {exc}")
        return
    height, width, channels = shape
    size = "×".join(str(s) for s in report["image_size"])
    st.write(
        f"Every {report['source']} image is {height}×{width} pixels with {channels} "
        f"channel(s); the run used them at {size} with {report['channels']} channel(s)."
    )
    counts = report["counts"]
    totals = {c: sum(counts[s].get(c, 0) for s in counts) for c in report["classes"]}
    _sample_rows(dict(list(samples.items())[:MAX_SAMPLE_CLASSES]), totals, "images")


def _augmentation(config: Any, n_classes: int, key: str) -> None:
    """The configured augmentation on real training images (augment.preview), on request."""

    st.subheader("Augmentation")
    if config is None:
        return
    if not config.augment.enabled:
        st.info("Augmentation is off in this config (every augment.* transform is off).")
        return
    off = AugmentConfig().model_dump()
    active = {k: v for k, v in config.augment.model_dump().items() if v != off[k]}
    height, width = config.data.image_size
    st.caption(
        f"Configured: {', '.join(f'augment.{k}={v}' for k, v in active.items())}; images at "
        f"{height}×{width}, {config.data.channels} channel(s) (data.image_size, data.channels)."
    )
    if not st.button("Preview augmentation", key=f"data-preview-{key}"):
        return
    try:
        with st.spinner("Augmenting training images (loads Keras)…"):
            mosaic, titles = _preview_mosaic(config, n_classes)
    except UserError as exc:
        st.error(str(exc))
        return
    st.image(
        mosaic,
        caption="Each row: a training image, then five augmented versions. Rows: "
        + ", ".join(titles),
        alt="augmentation preview",
    )


def _preview_mosaic(config: Any, n_classes: int) -> tuple[np.ndarray, list[str]]:
    """`augment.preview_grid` as one uint8 picture: tiles at least 96 px (nearest-neighbour,
    so the pixels the model gets stay visible), 4 px white between them."""

    preview_cfg, rows = data_info.preview_config(config, n_classes)
    grid, titles = preview_grid(preview_cfg, n_images=rows)
    tiles = np.clip(grid, 0, 255).astype(np.uint8)
    scale = max(1, -(-96 // tiles.shape[2]))
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)
    n_rows, n_cols, h, w, c = tiles.shape
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(n_rows * h, n_cols * w, c)
    return (mosaic[..., 0] if c == 1 else mosaic), titles


def _run_files(report: dict[str, Any]) -> None:
    """Sizes, modes and samples of a run's folder or CSV, listed again as it is now."""
    try:
        listing, rows = _scan(str(report["path"]))
    except UserError as exc:
        st.warning(f"The run's data cannot be listed now, so no sizes or samples: {exc}")
        return
    kept = set(report["classes"])
    _file_sizes([r for r in rows if r["class"] in kept])
    _file_samples(listing, report["classes"])


def _files_root(report: dict[str, Any]) -> Path | None:
    """The folder a run's file paths are relative to (a CSV's own folder), if it is still there
    and this app may read it."""
    path = report.get("path")
    if not path or report.get("source") not in data_info.FILE_SOURCES:
        return None
    try:
        root = server_path(str(Path(path).parent if report["source"] == "csv" else path))
    except UserError:
        return None
    return root if root.is_dir() else None


def _selected_run(entry: RunEntry) -> None:
    run = runs.Run(entry.path)
    report = run.data_report
    if not report or "counts" not in report:
        st.warning(f"`{entry.name}` has no data report ({runs.DATA_REPORT}); re-train it.")
        return
    where = f" `{report['path']}`" if report.get("path") else ""
    st.caption(
        f"From `{entry.name}`'s {runs.DATA_REPORT} and {runs.CONFIG}: source "
        f"{report['source']}{where}, {len(report['classes'])} classes, {report['split']} split "
        f"(seed {report.get('seed')})."
    )
    config = _run_config(run)
    _counts(report)
    _problems(report)
    _duplicate_groups(report, _files_root(report))
    _suspects(report)
    if report["source"] == "folder" and _files_root(report):
        review_view.render(_files_root(report))
    if report["source"] in data_info.FILE_SOURCES:
        _run_files(report)
    elif config is not None:
        _builtin_data(config, report)
    _augmentation(config, len(report["classes"]), entry.name)


def _before_training() -> None:
    path = st.text_input(
        "Folder or CSV file on the server",
        key="data_path",
        placeholder="/data/photos (one sub-folder per class) or /data/labels.csv",
    ).strip()
    if not path:
        st.info("Enter the path of a folder (one sub-folder of images per class) or a CSV.")
        return
    if st.button("Read again", key="data-reread"):
        _scan.clear()
        _would_report.clear()
    try:
        path = str(server_path(path))  # resolved, and only where this app may read
        listing, rows = _scan(path)
    except UserError as exc:
        st.error(str(exc))
        return
    config = data_info.training_config(path, listing.kind)
    report = _would_report(path, listing.kind)
    _what_training_sees(listing, report, config)
    # When training would stop there is no report: the listing's own reasons are shown instead
    # (a CSV whose every row is refused must say why each row was).
    _problems(report if isinstance(report, dict) else vars(listing))
    if isinstance(report, dict):
        _duplicate_groups(report, Path(listing.root))
    if listing.kind == "folder":
        review_view.render(Path(listing.root))
    _file_sizes(rows)
    _file_samples(listing, list(listing.files))
    _augmentation(config, len(listing.files), "path")


def _what_training_sees(listing: data_info.Listing, report: Any, config: Any) -> None:
    data = config.data
    how = report["split"] if isinstance(report, dict) else data.split
    st.caption(
        f"{listing.kind} `{listing.root}`: {len(listing.files)} classes, "
        f"{sum(map(len, listing.files.values()))} image files, listed as `imgclf-train "
        f"data.source={listing.kind} data.path=…` lists them; {how} split with the default "
        f"config (val_fraction {data.val_fraction}, test_fraction {data.test_fraction}, seed "
        f"{config.seed}). Every header is checked, no pixel decoded: a file cut short inside "
        "is found only when training decodes it."
    )
    if isinstance(report, dict):
        _counts(report)
        return
    st.warning(f"Training would stop here: {report}")
    files = pd.DataFrame({"image files": {k: len(v) for k, v in listing.files.items()}})
    st.table(files.rename_axis("class"))


def render(entry: RunEntry | None, entries: list[RunEntry], root: Path) -> None:
    """The Data page: the selected run's data, or a folder or CSV before training (also
    reachable with no complete run selected: `entry` None)."""
    source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
    if source == SOURCES[0]:
        if entry is None:
            st.info("No complete trained run is selected: choose the folder or CSV source.")
            return
        _selected_run(entry)
    else:
        _before_training()
