"""Classify page, "a whole folder or a zip": every image of a folder on this machine (searched
recursively, as `imgclf-predict FOLDER` does) or of an uploaded zip, classified in chunks under a
progress bar, with the command line's CSV and JSON (`predictions.PredictionWriter`) to download.
The result is kept per run in the session, so a download or a page switch does not lose it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from imgclf import archives
from imgclf.data.roots import OUTSIDE, inside
from imgclf.infra.errors import UserError
from imgclf.models.names import PROBABILITIES
from imgclf.predict.files import PredictionWriter, as_record, expand_inputs
from imgclf.ui.catalog import RunEntry
from imgclf.ui.exposure import allowed_roots, server_path

CHUNK = 64  # images decoded and classified per step of the progress bar
CHUNK_BYTES = 256 * 2**20  # and at most this much of a zip decompressed at a time
SHOWN_FAILURES = 20  # listed one per line; the rest are counted (all are in the downloads' note)
ZIP, FOLDER = "A zip of images", "A folder on this machine"


@dataclass
class BatchResult:
    """One batch: where the images came from, their predictions, what could not be read, and
    how many files were left out as not images."""

    source: str
    predictions: list[Any] = field(default_factory=list)  # predict.Prediction
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


def _sources(kind: str, value: Any) -> tuple[str, list[tuple[str, Any]], BatchResult]:
    """(label, [(shown name, path | bytes-reader)], result with the listing's failures)."""

    if kind == FOLDER:
        text = str(value).strip()
        folder = server_path(text) if text else Path()  # resolved, where this app may read
        if not text or not folder.is_dir():
            raise UserError(
                f"{text or '(empty)'}: no such folder on this machine (the app's server)"
            )
        files, missing, notes = expand_inputs([str(folder)])
        roots = allowed_roots()  # a link inside the folder may point out of the allowed ones
        if roots is not None:
            missing += [(str(p), OUTSIDE) for p in files if not inside(p, roots)]
            files = [p for p in files if inside(p, roots)]
        if len(files) > archives.MAX_MEMBERS:
            raise UserError(
                f"{folder}: {len(files)} images, more than {archives.MAX_MEMBERS} at a time; "
                f"pick a sub-folder, or use `imgclf-predict {folder}` (no limit)"
            )
        result = BatchResult(str(folder), failures=list(missing))
        result.skipped = sum(int(text.split()[0]) for _, text in notes)
        return str(folder), [(str(p.relative_to(folder)), p) for p in files], result
    archive = archives.open_zip(value.getvalue(), value.name)
    listing = archives.list_images(archive, value.name)
    result = BatchResult(value.name, failures=list(listing.failures), skipped=listing.skipped)
    shown = _unique([archives.member_name(m, archive) for m in listing.images])
    return (
        value.name,
        [(name, (archive, m)) for name, m in zip(shown, listing.images, strict=True)],
        result,
    )


def _unique(names: list[str]) -> list[str]:
    """Names made unique with " (2)", " (3)", ... (`/a.png` and `a.png` both show as a.png)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _chunks(items: list[tuple[str, Any]]) -> Iterator[tuple[list[str], list[Any], list]]:
    """(names, sources for decode_files, failures) per CHUNK; zip members are read here."""

    names, sources, failures, held = [], [], [], 0
    for name, src in items:
        if isinstance(src, tuple):
            src = archives.read_member(*src)
            if isinstance(src, str):
                failures.append((name, src))
                continue
            held += len(src)
        names.append(name)
        sources.append(src)
        if len(names) + len(failures) >= CHUNK or held >= CHUNK_BYTES:
            yield names, sources, failures
            names, sources, failures, held = [], [], [], 0
    if names or failures:
        yield names, sources, failures


def classify_all(predictor: Any, kind: str, value: Any, k: int, invert: bool) -> BatchResult:
    """Classify every image of the folder or zip, updating a progress bar; UserError when the
    folder or zip itself cannot be read."""
    label, items, result = _sources(kind, value)
    if not items:
        if result.failures:  # say why (an encrypted member, an unreadable folder)
            name, reason = result.failures[0]
            more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
            raise UserError(f"{label}: nothing could be classified: {name}: {reason}{more}")
        raise UserError(f"{label}: no image files found (extensions: see docs/formats.md)")
    bar = st.progress(0.0, text=f"Classifying {len(items)} images from {label}…")
    done = 0
    for names, sources, failures in _chunks(items):
        result.failures += failures
        shown, images, unreadable = predictor.decode_files(sources, names)
        result.failures += unreadable
        if len(shown):
            if invert:
                images = 255 - images
            outputs = predictor.predict_outputs(images)
            result.predictions += predictor.top_k(outputs[PROBABILITIES], shown, k, outputs)
        done += len(names) + len(failures)
        bar.progress(done / len(items), text=f"Classified {done} of {len(items)} images")
    bar.empty()
    return result


def _download(result: BatchResult, fmt: str, ood: bool) -> str:
    out = io.StringIO()
    writer = PredictionWriter(out, fmt, ood=ood)
    writer.write(result.predictions)
    writer.close()
    return out.getvalue()


def _show(result: BatchResult, entry: RunEntry, ood: bool) -> None:
    import pandas as pd

    flagged = sum(bool(p.ood) for p in result.predictions)
    parts = [f"**{len(result.predictions)}** images classified from `{result.source}`"]
    if result.failures:
        parts.append(f"{len(result.failures)} could not be read")
    if result.skipped:
        parts.append(f"{result.skipped} file(s) left out: not images")
    if ood:
        parts.append(f"{flagged} unlike the training data")
    st.markdown("; ".join(parts) + ".")
    for name, reason in result.failures[:SHOWN_FAILURES]:
        st.error(f"{name}: {reason}")
    if len(result.failures) > SHOWN_FAILURES:
        st.caption(f"… and {len(result.failures) - SHOWN_FAILURES} more not listed here")
    if not result.predictions:
        return
    rows = []
    for p in result.predictions:
        record = as_record(p)
        row = {"image": p.source, "label": p.label, "probability": round(p.probabilities[0], 4)}
        if ood:
            row["ood_score"], row["unlike_training_data"] = record["ood_score"], record["ood"]
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    stem = f"{entry.name}-batch-predictions"
    c1, c2 = st.columns(2)
    # Callables: the files are written when a button is pressed, not on every rerun; no rerun
    # on the click (a rerun while the browser fetches a deferred file can replace it first).
    c1.download_button(
        "Download CSV (one row per rank)", lambda: _download(result, "csv", ood),
        file_name=f"{stem}.csv", mime="text/csv", key="batch_csv", on_click="ignore",
    )  # fmt: skip
    c2.download_button(
        "Download JSON", lambda: _download(result, "json", ood),
        file_name=f"{stem}.json", mime="application/json", key="batch_json", on_click="ignore",
    )  # fmt: skip


def render(entry: RunEntry, predictor: Any, k: int, invert: bool) -> None:
    """The batch section of the Classify page (inside an expander)."""
    kept = f"_batch::{entry.path}"
    title = "Classify a whole folder or a zip of images"
    with st.expander(title, expanded=kept in st.session_state):
        kind = st.radio("From", [ZIP, FOLDER], horizontal=True, key="batch_from")
        if kind == ZIP:
            value = st.file_uploader("Zip of images (sub-folders allowed)", type=["zip"],
                                     key=f"batch_zip::{entry.path}")  # fmt: skip
        else:
            value = st.text_input(
                "Folder (searched recursively; a path on the machine the app runs on)",
                key="batch_folder",
            )
        if st.button("Classify all", key="batch_go", disabled=not value, type="primary"):
            st.session_state.pop(kept, None)  # never an old result under a new error
            try:
                st.session_state[kept] = classify_all(predictor, kind, value, k, invert)
            except UserError as exc:
                st.error(str(exc))
        result = st.session_state.get(kept)
        if result is not None:
            _show(result, entry, predictor.has_ood)
