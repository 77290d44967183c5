"""The format check of every export: the corpus (`corpus.build`: each supported format × mode
× EXIF orientation, made from a test image) through an artifact, against what `Predictor` on
the run answers for the same file (`load_image`'s pixels through the run's model). A different
top-1 on any kind stops the export; near ties of the reference, and for `serve_bytes` the graph
decoder's documented 1-level rounding (`decoder_rounding`), count as agreeing and are counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclf.export import corpus
from imgclf.export.batch_decode import STATUS_OK, batch_decoder
from imgclf.export.parity import ExportError, Reference, batched
from imgclf.forward import Forward
from imgclf.images import ImageError, load_image

NEAR_TIE = 0.01  # a reference top-1 this close to its runner-up may flip on a 1-level difference
CORPUS_IMAGES = 1  # test images each made into every format × mode × orientation


def reference_corpus(
    model: Any, images: np.ndarray, batch_size: int | str = "auto", tta: str = "none"
) -> tuple[list[Any], np.ndarray, np.ndarray, list[str | None]]:
    """(corpus samples, their pixels as `load_image` decodes them at the model's input, the
    Keras model's probabilities (behind the run's test-time augmentation `tta`), per sample the
    decoder's refusal or None): what `Predictor` on the run answers for each file of the format
    corpus made from the first test `images`."""
    from imgclf.models.tta import tta_model

    _, height, width, channels = model.input_shape
    samples = corpus.build(images[:CORPUS_IMAGES])
    pixels = np.zeros((len(samples), height, width, channels), np.uint8)
    refused: list[str | None] = []
    for i, sample in enumerate(samples):
        try:
            pixels[i] = load_image(sample.data, (height, width), channels)
            refused.append(None)
        except ImageError as exc:
            refused.append(exc.reason)
    reference = np.asarray(Forward(tta_model(model, tta), batch_size)(pixels), np.float64)
    return samples, pixels, reference, refused


def format_parity(
    samples: list[Any],
    reference: np.ndarray,
    exported: np.ndarray,
    status: list[str | None],
    rounding: list[bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per corpus kind ("PNG RGBA", "JPEG EXIF 6", ...): `n`, `top1_agreement` (near ties of
    the reference, within NEAR_TIE, count as agreeing and are counted in `near_ties`; so do
    the samples `rounding` marks, counted in `rounding`: see `decoder_rounding`),
    `max_abs_diff`, and `refused` (the artifact's reason for not answering, or None)."""
    table: dict[str, dict[str, Any]] = {}
    for i, sample in enumerate(samples):
        row = table.setdefault(
            sample.kind,
            {"n": 0, "agree": 0, "near_ties": 0, "rounding": 0, "max_abs_diff": 0.0,
             "refused": None},
        )  # fmt: skip
        row["n"] += 1
        if status[i] is not None:
            row["refused"] = status[i]
            continue
        top2 = np.sort(reference[i])[-2:]
        same = exported[i].argmax() == reference[i].argmax()
        tie = bool(top2[1] - top2[0] < NEAR_TIE)
        rounded = bool(rounding and rounding[i]) and not (same or tie)
        row["agree"] += int(same or tie or rounded)
        row["near_ties"] += int(tie and not same)
        row["rounding"] += int(rounded)
        diff = float(np.abs(exported[i] - reference[i]).max())
        row["max_abs_diff"] = max(row["max_abs_diff"], diff)
    for row in table.values():
        answered = row["n"] if row["refused"] is None else 0
        row["top1_agreement"] = row.pop("agree") / answered if answered else None
    return table


def decoder_rounding(
    model: Any,
    decode: Any,
    samples: list[Any],
    pixels: np.ndarray,
    answered: np.ndarray,
    batch_size: int | str = "auto",
) -> list[bool]:
    """Per corpus sample: True when the graph decoder's documented rounding explains the
    artifact's answer. `decode` (the SavedModel's own decoder, `batch_decode.batch_decoder`,
    traced in this process) gives pixels within 1 level of `load_image`'s (`pixels`), and the
    run's model, given the decoder's pixels, answers what the artifact answered (`answered`,
    probabilities [N, K]). A weak model can change its top-1 for a 1-level change (a 3-epoch
    EfficientNet-Lite0 at 32×32 moved 0.05 in probability): that is the model, not the export.
    """
    import tensorflow as tf

    rounding = []
    for start in range(0, len(samples), BATCH_CHECK):
        chunk = samples[start : start + BATCH_CHECK]
        graph_pixels, status = decode(tf.constant([sample.data for sample in chunk]))
        graph_pixels = np.asarray(graph_pixels, np.float32)
        answers = np.asarray(Forward(model, batch_size)(graph_pixels))
        for j, ok in enumerate(s.decode() == STATUS_OK for s in np.asarray(status)):
            near = np.abs(graph_pixels[j] - pixels[start + j].astype(np.float32)).max() <= 1
            same = answers[j].argmax() == answered[start + j].argmax()
            rounding.append(bool(ok and near and same))
    return rounding


BATCH_CHECK = 64  # corpus files decoded at a time by `decoder_rounding`


def require_format_parity(
    what: str, table: dict[str, dict[str, Any]], expected_refusals: set[str], not_written: str
) -> None:
    """Raise ExportError naming the kinds an artifact got wrong: a different top-1 on a kind it
    answered, or a refusal of a kind it is documented to read."""
    wrong = [
        f"{kind} (top-1 agreement {row['top1_agreement']:.0%})"
        for kind, row in table.items()
        if row["top1_agreement"] is not None and row["top1_agreement"] < 1.0
    ]
    wrong += [
        f"{kind} (refused: {row['refused']})"
        for kind, row in table.items()
        if row["refused"] is not None and kind not in expected_refusals
    ]
    if wrong:
        raise ExportError(
            f"{what} disagrees with the run on the format corpus: {'; '.join(wrong)}; {not_written}"
        )


def pixel_artifact_formats(fn: Any, model: Any, reference: Reference) -> dict[str, dict[str, Any]]:
    """The format table of an artifact that takes pixels (TFLite, ONNX): every corpus file
    (made from the reference's first image) decoded by `load_image` (as
    `Predictor.from_path(artifact)` does) and run through `fn`, against the run's model on the
    same file, `reference.batch_size` images at a time."""
    batch = reference.batch_size
    samples, pixels, expected, refused = reference_corpus(
        model, reference.images, batch, reference.tta
    )
    exported = batched(fn, pixels, batch, np.float32)
    return format_parity(samples, expected, exported, refused)


def require_pixel_formats(what: str, table: dict[str, dict[str, Any]], not_written: str) -> None:
    """ExportError when a pixel artifact's top-1 differs from the run's on a corpus kind."""
    unread = {kind for kind, row in table.items() if row["refused"] is not None}
    require_format_parity(what, table, unread, not_written)


def corpus_tables(
    model: Any, images: np.ndarray, size: int, via_files: Any, via_pixels: Any, k: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The format tables of a SavedModel on the corpus made from the first of `images`: its
    pixel signature (`via_pixels`, on `load_image`'s pixels) and its bytes signature
    (`via_files`: encoded files -> (probabilities, refusals)), the bytes table with the
    decoder's documented rounding marked where it explains a top-1 (`decoder_rounding`)."""
    samples, pixels, corpus_reference, refused = reference_corpus(model, images, size)
    status: list[str | None] = []

    def via_corpus(chunk: list[Any]) -> np.ndarray:
        probs, refused = via_files([sample.data for sample in chunk])
        status.extend(refused)
        return probs

    probs = batched(via_corpus, samples, size)  # bounded batches, like every other check
    corpus_pixels = batched(via_pixels, pixels, size, np.float32)[:, :k]
    by_bytes = format_parity(samples, corpus_reference, probs, status)
    if any(
        row["top1_agreement"] is not None and row["top1_agreement"] < 1.0
        for row in by_bytes.values()
    ):
        # Only then (it costs a pass of the corpus): is the decoder's rounding the cause?
        decode = batch_decoder(*model.input_shape[1:])  # the one serve_bytes holds
        rounding = decoder_rounding(model, decode, samples, pixels, probs, size)
        by_bytes = format_parity(samples, corpus_reference, probs, status, rounding)
    return format_parity(samples, corpus_reference, corpus_pixels, refused), by_bytes
