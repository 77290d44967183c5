"""Train page, "Build a dataset": make classes by name and add images to each by upload (many
files), camera, or a zip of class folders, in the manner of Teachable Machine; every image is
saved at once into a normal folder dataset (`imgclf.data.builder`), so the form below, or the
command line, trains on it. What each addition did (added, duplicate, refused and why) is
listed; the counts say when a class is still too small for the stratified split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from imgclf.data.builder import Added, DatasetBuilder, sanitise
from imgclf.data.roots import data_root
from imgclf.data.split import minimum_per_class
from imgclf.formats import UPLOAD_TYPES
from imgclf.infra.errors import UserError
from imgclf.ui.state import uploads
from imgclf.ui.text import plain

LOG = "_builder_log"  # the last additions' outcomes, shown until the next
USE = "_builder_path"  # the dataset the form below trains on (set by "Use this dataset")
PENDING = "_builder_pending"  # uploads received and not saved yet (`save_pending`)
SEVERAL = "builder_several"  # the toggle: a photo may belong to several classes (multi-label)


def _builder(name: str) -> DatasetBuilder:
    """One builder (and its hash index) per dataset folder and session."""
    path = data_root() / sanitise(name, "dataset name")
    cached = st.session_state.get("_builder")
    if cached is None or cached.root != path:
        cached = st.session_state["_builder"] = DatasetBuilder(path)
    cached.several = bool(st.session_state.get(SEVERAL))
    return cached


def _record(results: list[Added]) -> None:
    st.session_state[LOG] = results


def _builder_at(root: Path) -> DatasetBuilder:
    """The session's builder when it is the one of `root` (its hash index is up to date)."""
    cached = st.session_state.get("_builder")
    return cached if cached is not None and cached.root == root else DatasetBuilder(root)


def _queue(builder: DatasetBuilder, kind: str, source: str, payload: Any, cls: str = "") -> None:
    """Keep what an uploader received for `save_pending`. Its callback only takes the bytes:
    nothing a callback draws is shown before the run that follows it, so saving (with a
    progress bar) happens in that run."""
    if not st.session_state.get(PENDING):
        _record([])  # a new batch of additions: the old outcomes go
    st.session_state.setdefault(PENDING, []).append(
        {
            "root": str(builder.root),
            "kind": kind,
            "source": source,
            "cls": cls,
            "payload": payload,
            "several": builder.several,
            "done": 0,
            "results": [],
        }
    )


def _add_files(builder: DatasetBuilder, cls: str, key: str, nonce: str) -> None:
    """on_change of the uploader and the camera: take what they hold, then re-key them."""
    items = uploads(st.session_state.get(key))  # a removed file (DeletedFile) has no bytes
    if items:
        files = [(item.name, item.getvalue()) for item in items]
        _queue(builder, "files", f"{len(files)} upload(s)", files, cls)
    st.session_state[nonce] = st.session_state.get(nonce, 0) + 1


def _add_zip(builder: DatasetBuilder, key: str, nonce: str) -> None:
    upload = next(iter(uploads(st.session_state.get(key))), None)
    if upload is not None:
        _queue(builder, "zip", upload.name, upload.getvalue())
    st.session_state[nonce] = st.session_state.get(nonce, 0) + 1


def _steps(builder: DatasetBuilder, item: dict) -> Iterator[tuple[int, int, Added]]:
    """(done, total, what became of it) for each image of a pending upload, after the
    item["done"] already saved."""
    if item["kind"] == "zip":
        yield from builder.iter_zip(item["payload"], item["source"], start=item["done"])
        return
    files = item["payload"]
    for done, (name, data) in enumerate(files[item["done"] :], item["done"] + 1):
        try:
            yield done, len(files), builder.add(item["cls"], name, data)
        except UserError as exc:  # a bad class name: every file would fail the same way
            yield len(files), len(files), Added(item["cls"], "refused", reason=str(exc))
            return


def save_pending(slot: Any) -> None:
    """Save the uploads the builder received, one image at a time under a progress bar. The
    app calls it first on every page, so leaving the Train page at once loses nothing; each
    image counts as done as soon as it is written, so a click that interrupts this run (the
    rerun stops it at the bar) goes on with the next image in the next run. `slot`: an
    `st.empty()` the app makes on every run, at the top of the page."""
    pending = st.session_state.get(PENDING)
    if not pending:
        return
    count = sum(len(p["payload"]) if p["kind"] == "files" else 1 for p in pending)
    with slot.container(), st.status(f"Saving {count} upload(s) to the dataset…") as status:
        bar = st.progress(0.0)
        while pending:
            item = pending[0]
            try:
                builder = _builder_at(Path(item["root"]))
                builder.several = bool(item.get("several"))
                for done, total, added in _steps(builder, item):
                    item["results"].append(added)
                    item["done"] = done
                    bar.progress(done / total, text=f"{plain(item['source'])}: {done} of {total}")
            except UserError as exc:  # the zip cannot be read, or is too large
                item["results"].append(Added(item["source"], "refused", reason=str(exc)))
            except Exception as exc:  # a folder or disk fault: this upload only, never the app
                reason = f"not saved ({type(exc).__name__}: {exc})"
                item["results"].append(Added(item["source"], "refused", reason=reason))
            pending.pop(0)
            st.session_state.setdefault(LOG, []).extend(item["results"])
        status.update(label="Saved to the dataset", state="complete")


def _add_class(builder: DatasetBuilder) -> None:
    try:
        st.session_state["_builder_class"] = builder.add_class(st.session_state["builder_new"])
        st.session_state["builder_new"] = ""
    except UserError as exc:
        _record([Added(st.session_state["builder_new"], "refused", reason=str(exc))])


def _log() -> None:
    results = st.session_state.get(LOG) or []
    added = [r for r in results if r.status == "added"]
    if added:
        st.success(f"Added {len(added)} image(s).")
    for r in results:
        if r.status == "duplicate":
            st.warning(
                f"{plain(r.source)}: skipped, the same image is already saved as {plain(r.path)}"
            )
        elif r.status == "refused":
            st.error(f"{plain(r.source)}: {plain(r.reason)}")


def _inputs(builder: DatasetBuilder, cls: str) -> None:
    """Uploader, camera and zip for the chosen class (each re-keyed after it is read)."""
    tag = f"{builder.root}::{cls}"
    nonce = f"_builder_nonce::{tag}"
    key = f"builder_files::{tag}::{st.session_state.get(nonce, 0)}"
    st.file_uploader(f"Images for `{cls}`", type=UPLOAD_TYPES, accept_multiple_files=True,
                     key=key, on_change=_add_files, args=(builder, cls, key, nonce))  # fmt: skip
    if st.toggle("Use the camera", key="builder_camera"):
        cam = f"builder_cam::{tag}::{st.session_state.get(nonce, 0)}"
        st.camera_input(f"Photo for `{cls}`", key=cam, on_change=_add_files,
                        args=(builder, cls, cam, nonce))  # fmt: skip


def _zip_input(builder: DatasetBuilder) -> None:
    znonce = f"_builder_znonce::{builder.root}"
    zkey = f"builder_zip::{builder.root}::{st.session_state.get(znonce, 0)}"
    st.file_uploader("Or add a zip of class folders (cat/1.jpg, dog/2.jpg, ...)", type=["zip"],
                     key=zkey, on_change=_add_zip, args=(builder, zkey, znonce))  # fmt: skip


def _counts(builder: DatasetBuilder, classes: dict[str, int], base: Any) -> None:
    st.table(
        pd.DataFrame({"class": list(classes), "images": list(classes.values())}).set_index("class")
    )
    need = minimum_per_class(base.data.val_fraction, base.data.test_fraction)
    small = [c for c, n in classes.items() if n < need]
    if len(classes) < 2:
        st.info("Add at least two classes to train a classifier.")
    elif small:
        st.warning(
            f"Fewer than {need} images in {plain(', '.join(small))}: the stratified split needs at "
            "least that many per class (one each for validation and test); add more."
        )
    elif st.button("Use this dataset in the form below", key="builder_use"):
        st.session_state[USE] = str(builder.root)


def render(base: Any) -> None:
    """The builder, inside an expander of the Train page; `base` is the chosen recipe."""
    with st.expander("Build a dataset in the browser", expanded=USE not in st.session_state):
        name = st.text_input("Dataset name", "my-dataset", key="builder_name")
        try:
            builder = _builder(name)
        except UserError as exc:
            st.error(plain(exc))
            return
        st.caption(
            f"Saved in `{builder.root}/<class>/<image>` as you add images (the data root is "
            "`$IMGCLF_DATA`, else `datasets/`); the command line trains on it with "
            f"`data.source=folder data.path={builder.root}`."
        )
        st.toggle(
            "A photo may belong to several classes (multi-label)", key=SEVERAL,
            help="Adding a photo already in one class to another files it under both (a hard "
            "link), instead of skipping it as a duplicate; train it with Task: multilabel.",
        )  # fmt: skip
        builder.several = bool(st.session_state.get(SEVERAL))
        c1, c2 = st.columns([3, 1])
        c1.text_input("New class", key="builder_new", placeholder="e.g. cat")
        c2.button("Add class", key="builder_add", on_click=_add_class, args=(builder,))
        classes = builder.classes()
        for folder, reason in builder.unreadable:
            st.warning(
                f"{plain(folder)}: {plain(reason)}; its images are not counted (training lists "
                "it too)"
            )
        if classes:
            names = list(classes)
            chosen = st.session_state.get("_builder_class")
            cls = st.selectbox("Add images to", names,
                               index=names.index(chosen) if chosen in names else 0)  # fmt: skip
            st.session_state["_builder_class"] = cls
            _inputs(builder, cls)
        _zip_input(builder)
        _log()
        if classes:
            _counts(builder, builder.classes(), base)


def add_from_classify(
    where: Any, key: str, name: str, data: bytes, label: str, unsure: bool, several: bool = False
) -> None:
    """On the Classify page, under each image: add it to a builder dataset under a class the
    user types (the predicted `label` is only the starting text), so the dataset grows where
    the model is weakest; for an image the model was `unsure` of (low confidence, or unlike
    the training data) the offer is open and says why."""
    title = "Add to a dataset" + (": the model is unsure of this one" if unsure else "")
    with where.expander(title, expanded=unsure):
        dataset = st.text_input("Dataset", st.session_state.get("builder_name", "my-dataset"),
                                key=f"{key}-dataset")  # fmt: skip
        hint = "Classes, separated by | (beach|people)" if several else "Class (existing or new)"
        cls = st.text_input(hint, label, key=f"{key}-class")
        if not st.button("Add", key=f"{key}-add"):
            return
        # A multi-label model's answer names several classes: the image goes to each.
        classes = [c.strip() for c in cls.split("|") if c.strip()] if several else [cls]
        try:
            builder = _builder(dataset)
            builder.several = builder.several or several
            outcomes = [builder.add(c, name, data) for c in classes]
        except UserError as exc:
            st.error(plain(exc))
            return
        for added in outcomes:
            _say(added, name, dataset)


def _say(added: Added, name: str, dataset: str) -> None:
    """What became of an image added from the Classify page, in one line."""
    if added.status == "refused":
        st.error(f"{plain(name)}: {plain(added.reason)}")
    elif added.status == "duplicate":
        st.info(f"Already in the dataset as {plain(added.path)}.")
    else:
        st.success(f"Added as {plain(added.path)} in {plain(_builder(dataset).root)}.")
