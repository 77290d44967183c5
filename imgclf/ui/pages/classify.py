"""Classify page: upload images (or take a photo) and see each one's top-k, latency and,
for conv models, a Grad-CAM overlay; a results table with a CSV download; a folder or zip
classified in one go (ui/pages/batch.py).

The uploads are kept per run in the session (a plain key, not the uploader's own state, which
Streamlit drops while another page is shown) until **Clear images**: each upload is moved into
the kept list and the uploader is given a fresh key, so it always reads "add images". The page
paints its title, controls and uploader before the model loads (TensorFlow's import alone takes
seconds on a first visit) and says that it is loading."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from imgclf import explain, runs
from imgclf.formats import FORMATS, UPLOAD_TYPES
from imgclf.images import ImageError, thumbnail
from imgclf.infra import spreadsheet
from imgclf.infra.errors import UserError
from imgclf.predict.predictor import Classified, classify_named
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry
from imgclf.ui.pages import builder as builder_view
from imgclf.ui.state import predictor_for, uploads

LOW_CONFIDENCE = 0.5  # top-1 probability under this gets a warning
MAX_KEPT = 100  # images kept per run; more belong in "Classify a whole folder or a zip"
MAX_KEPT_BYTES = 200 * 2**20
OOD_BADGE = "Doesn't look like the training data"


def _gradcam_layer(predictor) -> tuple[str | None, str | None]:
    """(target layer, None) when Grad-CAM can run on this model, else (None, why not)."""

    if predictor.model is None:
        return None, "Grad-CAM needs the run's Keras model"
    try:
        return explain.validate(predictor.model), None
    except UserError as exc:
        return None, str(exc)


def _unique_names(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The uploads with repeated names suffixed " (2)", " (3)", ... in upload order."""
    seen: dict[str, int] = {}
    out = []
    for name, data in files:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name} ({seen[name]})", data))
    return out


def _kept_key(run: Path) -> str:
    return f"_kept::{run}"


def kept_images(run: Path) -> list[tuple[str, bytes]]:
    """The images uploaded for `run` in this session, in upload order (kept across pages)."""
    return st.session_state.setdefault(_kept_key(run), [])


def _take(run: Path, key: str, nonce_key: str, name: str | None = None) -> None:
    """on_change of the uploader or camera: move what it holds into the kept list and give it
    a fresh key (an empty widget), so a page switch cannot lose it."""
    items = uploads(st.session_state.get(key))  # a removed file (DeletedFile) has no bytes
    kept = kept_images(run)
    held = sum(len(data) for _, data in kept)
    left_out = 0
    for item in items:
        data = item.getvalue()
        if len(kept) >= MAX_KEPT or held + len(data) > MAX_KEPT_BYTES:
            left_out += 1
            continue
        kept.append((name or item.name, data))
        held += len(data)
    st.session_state[f"_left_out::{run}"] = left_out
    st.session_state[nonce_key] = st.session_state.get(nonce_key, 0) + 1


def _clear(run: Path) -> None:
    st.session_state[_kept_key(run)] = []
    st.session_state.pop(f"_left_out::{run}", None)


def _classify(run: Path, predictor, files: list[tuple[str, bytes]], k: int, invert: bool):
    """`classify_named` of the kept images, each classified once per model, k and invert
    (every widget change reruns the page; the kept images need not be classified again)."""

    memo = st.session_state.setdefault(f"_classified::{run}", {})
    results, failures = [], []
    for name, data in files:
        key = (id(predictor), name, hashlib.sha256(data).hexdigest(), k, invert)
        if key not in memo:
            done, failed = classify_named(predictor, [(name, data)], k, invert)
            memo[key] = done[0] if done else failed[0]
        outcome = memo[key]
        (results if isinstance(outcome, Classified) else failures).append(outcome)
    if len(memo) > 4 * MAX_KEPT:  # old settings' entries
        st.session_state[f"_classified::{run}"] = {}
    return results, failures


def _inputs(run: Path, use_camera: bool) -> None:
    """The uploader (and the camera); what they receive goes to the kept list."""
    nonce_key = f"_uploads_nonce::{run}"
    key = f"uploads::{run}::{st.session_state.get(nonce_key, 0)}"
    st.file_uploader(
        f"Images ({', '.join(f.name for f in FORMATS)})",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=key,
        on_change=_take,
        args=(run, key, nonce_key),
    )
    if use_camera:
        camera_nonce = f"_camera_nonce::{run}"
        camera = f"camera::{run}::{st.session_state.get(camera_nonce, 0)}"
        st.camera_input("Take a photo", key=camera, on_change=_take,
                        args=(run, camera, camera_nonce, "camera.jpg"))  # fmt: skip


def _row(result: Classified) -> dict[str, object]:
    p = result.prediction
    pairs = zip(p.labels, p.probabilities, strict=True)
    row: dict[str, object] = {
        "image": p.source,
        "label": p.label,
        "probability": round(p.probabilities[0], 4),
    }
    if p.present is not None:  # multi-label: every label present, with its probability
        row["labels"] = ", ".join(f"{lab} {prob:.3f}" for lab, prob in p.present)
        del row["probability"]
    if p.ood_score is not None:
        row["ood_score"] = round(p.ood_score, 2)
        row["unlike_training_data"] = p.ood
    row["latency_ms"] = round(result.latency_ms, 2)
    row["top_k"] = ", ".join(f"{lab} {prob:.3f}" for lab, prob in pairs)
    return row


def _ood_badge(p, threshold: float | None, where) -> None:
    """The out-of-distribution warning next to the label, whatever its probability."""
    if not p.ood:
        return
    where.badge(OOD_BADGE, icon=":material/warning:", color="red")
    limit = f" > threshold {threshold:.1f}" if threshold is not None else ""
    where.caption(
        f"OOD score {p.ood_score:.1f}{limit}: this image is far from every class of the "
        "training images in the model's feature space, so its label (and its probability) "
        "is probably meaningless."
    )


def chip_markdown(present: list[tuple[str, float]]) -> str:
    """Streamlit markdown of one badge ("chip") per label present, with its probability."""
    from imgclf.ui.text import plain

    return " ".join(f":blue-badge[{plain(name)} · {prob:.2f}]" for name, prob in present)


def _chips(p, predictor, latency_ms: float, where) -> None:
    """A multi-label answer: a chip per label over its threshold (or none), then the rule."""
    if p.present:
        where.markdown(chip_markdown(p.present) + f" · {latency_ms:.1f} ms")
    else:
        where.markdown(f"**no label** reaches its threshold · {latency_ms:.1f} ms")
    where.caption(
        "Multi-label: every label whose probability reaches its own threshold (chosen on the "
        "validation split; the Evaluation page lists them). The bars are each label's "
        "independent probability: they need not sum to 1."
    )


def _show(n: int, result: Classified, original: bytes, predictor, cam_layer, invert: bool) -> None:
    """One classified image: the decoded picture (never the raw upload: a browser cannot show
    TIFF, 16-bit PNG or HEIC, and Streamlit cannot re-encode them), what the model saw (or
    Grad-CAM), top-k bars."""
    p = result.prediction
    with st.container(border=True):
        left, mid, right = st.columns([1, 1, 3])
        try:
            left.image(thumbnail(original, 280), caption=p.source, width=140)
        except ImageError as exc:  # decoded a moment ago; only a change under our feet gets here
            left.warning(f"{p.source}: {exc.reason}")
        if cam_layer is not None:
            heat = explain.gradcam(predictor.model, result.pixels[None], layer=cam_layer)[0]
            overlay = explain.overlay(result.pixels, heat)
            mid.image(overlay, caption=f"Grad-CAM ({cam_layer})", width=140)
        else:
            seen = result.pixels[..., 0] if result.pixels.shape[-1] == 1 else result.pixels
            mid.image(seen, caption="as the model sees it", width=140)
        if p.present is not None:
            _chips(p, predictor, result.latency_ms, right)
        else:
            right.markdown(
                f"**{p.label}** · p = {p.probabilities[0]:.3f} · {result.latency_ms:.1f} ms"
            )
        _ood_badge(p, predictor.ood_threshold, right)
        chart = charts.topk_chart(p.labels, p.probabilities)
        right.altair_chart(chart, width="stretch", key=f"topk-{n}")
        if p.present is None and p.probabilities[0] < LOW_CONFIDENCE and not p.ood:
            right.warning(
                f"Low confidence ({p.probabilities[0]:.2f}): the image may not look like the "
                f"training data" + ("" if invert else ", or need inverting") + "."
            )
        unsure = bool(p.ood or (p.present is None and p.probabilities[0] < LOW_CONFIDENCE))
        # Keyed by the image and its answer, not only its place: the class typed for one image
        # must not stay in the box when another image (or another answer) takes that place.
        ident = hashlib.sha1(original + p.label.encode()).hexdigest()[:10]
        several = p.present is not None  # multi-label: the labels present, joined by |
        typed = "|".join(name for name, _ in p.present) if several else p.label
        builder_view.add_from_classify(
            right, f"grow-{n}-{ident}", p.source, original, typed, unsure, several
        )


def _results_table(rows: list[dict[str, object]], name: str) -> None:
    st.subheader("Results")
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True)
    buffer = io.StringIO()
    table.map(spreadsheet.safe_cell).to_csv(buffer, index=False)  # file names, labels
    st.download_button(
        "Download CSV", buffer.getvalue(), file_name=f"{name}-predictions.csv", mime="text/csv"
    )


def _classes(entry: RunEntry) -> int | None:
    """The run's number of classes from labels.json, without loading the model."""
    if entry.builtin:
        return None
    try:
        return len(runs.read_labels(entry.path))
    except (OSError, ValueError):
        return None


def _unfamiliar_note(entry: RunEntry, predictor: Any) -> str:
    """Why there is no "doesn't look like the training data" column, when there is none."""
    if predictor.has_ood:
        return ""
    if entry.builtin:
        why = "ImageNet's training features are not shipped, so there is nothing to fit one on."
    else:
        why = "this run was trained without one (train.ood) or could not fit one."
    return f' No "doesn\'t look like the training data" check: {why}'


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Classify page for the selected run (the caller has drawn the title)."""
    classes = _classes(entry)
    c1, c2, c3, c4 = st.columns(4)
    k = c1.number_input("Top-k", 1, min(10, classes or 10), min(3, classes or 10), key="topk")
    invert = c2.toggle(
        "Invert colours",
        key="invert",
        help="For models trained on light-on-dark digits (MNIST): photos of dark ink on white "
        "paper need inverting.",
    )
    cam_slot = c3.empty()
    _inputs(entry.path, c4.toggle("Use the camera", key="use_camera"))
    files = _unique_names(kept_images(entry.path))  # two "IMG_0001.jpg" stay apart
    with st.spinner("Loading the model… (on a first visit TensorFlow starts: several seconds)"):
        predictor = predictor_for(entry.path)
    h, w = predictor.image_size
    st.caption(
        f"`{entry.name}`: {len(predictor.class_names)} classes, input {h}×{w}, "
        f"{'grey' if predictor.channels == 1 else 'RGB'}; images are stretched to that size."
        + _unfamiliar_note(entry, predictor)
    )
    layer, no_cam = _gradcam_layer(predictor)
    cam = cam_slot.toggle("Grad-CAM overlay", key="gradcam", disabled=layer is None, help=no_cam)
    from imgclf.ui.pages import batch as batch_view

    batch_view.render(entry, predictor, int(k), invert)
    if not files:
        st.info("Upload one or more images to classify them.")
        return
    st.button(
        f"Clear images ({len(files)})", key="clear_images", on_click=_clear, args=(entry.path,)
    )
    left_out = st.session_state.get(f"_left_out::{entry.path}", 0)
    if left_out:
        st.warning(
            f"{left_out} image(s) not added: the page keeps at most {MAX_KEPT} images "
            f'({MAX_KEPT_BYTES // 2**20} MB); classify more at once with "Classify a whole '
            'folder or a zip" above, or clear these first.'
        )
    results, failures = _classify(entry.path, predictor, files, int(k), invert)
    for name, reason in failures:
        st.error(f"{name}: {reason}")
    if not results:
        return
    by_name = dict(files)
    for n, result in enumerate(results):
        source = result.prediction.source
        try:
            _show(n, result, by_name[source], predictor, layer if cam else None, invert)
        except Exception as exc:  # one image's display (e.g. Grad-CAM) never hides the others
            st.error(f"{source}: could not be shown ({type(exc).__name__}: {exc})")
    _results_table([_row(r) for r in results], entry.name)
