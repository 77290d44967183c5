"""The command line's side of prediction: finding the image files to classify, and writing
predictions as they come, so classifying a folder of any size holds one batch at a time (an
aligned table, CSV with one row per rank, a streamed JSON array, or JSON lines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from imgclf import explain
from imgclf.formats import IMAGE_EXTENSIONS, is_image_name, walk
from imgclf.images import file_problem
from imgclf.infra import spreadsheet
from imgclf.models.names import PROBABILITIES

FORMATS = ("table", "json", "jsonl", "csv")
CHUNK = 256  # files decoded (in parallel) and classified at a time by the command line


def expand_inputs(
    paths: Sequence[str],
) -> tuple[list[Path], list[tuple[str, str]], list[tuple[str, str]]]:
    """(files, failures, notes): files as given; folders searched recursively for image files
    (`formats.IMAGE_EXTENSIONS`; hidden names skipped, symlinked folders followed). A failure
    is a path that cannot be classified; a note counts the files a folder holds that are not
    listed as images (so none is skipped silently)."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            unread: list[tuple[Path, str]] = []
            listed = sorted(walk(path, unread))  # hidden names skipped; symlinked folders followed
            missing += [(str(folder), reason) for folder, reason in unread]
            found = [p for p in listed if is_image_name(p)]
            others = len(listed) - len(found)
            if not found and not unread:
                missing.append((raw, "folder has no image files"))
            elif others:
                kinds = " ".join(sorted(IMAGE_EXTENSIONS))
                notes.append((raw, f"{others} file(s) skipped: not an image extension ({kinds})"))
            files.extend(found)
        else:
            problem = file_problem(path)
            if problem is None:
                files.append(path)
            else:  # a FIFO, a device, a symlink loop, ...: one line, and nothing blocks
                missing.append((raw, problem))
    return files, missing, notes


def as_record(p: Any) -> dict[str, object]:
    """One `predict.Prediction` as JSON: image, label, top_k [{label, probability}], and
    ood_score, ood when the model has an out-of-distribution detector."""
    pairs = zip(p.labels, p.probabilities, strict=True)
    record: dict[str, object] = {
        "image": p.source,
        "label": p.label,
        "top_k": [{"label": lab, "probability": round(prob, 6)} for lab, prob in pairs],
    }
    if p.present is not None:  # a multi-label model: every label over its threshold
        record["labels"] = [
            {"label": lab, "probability": round(prob, 6)} for lab, prob in p.present
        ]
    if p.ood_score is not None:
        record["ood_score"] = round(p.ood_score, 4)
        record["ood"] = p.ood
    return record


def ood_cell(p: Any) -> str:
    """The table's OOD column: the score, with `!` when above the threshold."""
    if p.ood_score is None:
        return "-"
    return f"{p.ood_score:.1f}{' !' if p.ood else ''}"


class PredictionWriter:
    """Writes batches of predictions to `out` in `fmt`; `close()` ends the output (the JSON
    array's bracket). `width` is the table's image column (the longest name to come). With
    `ood`, the table and CSV have the out-of-distribution score and flag as columns."""

    def __init__(
        self, out: TextIO, fmt: str, width: int = 5, ood: bool = False, multilabel: bool = False
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.out, self.fmt, self.width, self.count = out, fmt, max(width, len("image")), 0
        self.ood, self.multilabel = ood, multilabel
        if fmt == "csv":
            self._csv = spreadsheet.writer(out)  # labels and file names: never formulas
            extra = ["ood_score", "ood"] if ood else []
            extra += ["labels"] if multilabel else []  # the labels present, joined by |
            self._csv.writerow(["image", "rank", "label", "probability", *extra])
        elif fmt == "table":
            extra = f"{'ood':>8}  " if ood else ""
            label = "labels" if multilabel else "label"  # multi-label: those over threshold
            out.write(f"{'image':<{self.width}}  {label:<12} {'prob':>6}  {extra}top-k\n")
        elif fmt == "json":
            out.write("[")

    def write(self, predictions: Iterable[Any]) -> None:
        """Append `predictions` and flush (a reader of the output sees them at once)."""
        for p in predictions:
            if self.fmt == "csv":
                pairs = zip(p.labels, p.probabilities, strict=True)
                extra = [f"{p.ood_score:.4f}", str(p.ood).lower()] if self.ood else []
                extra += ["|".join(lab for lab, _ in p.present or [])] if self.multilabel else []
                for rank, (lab, prob) in enumerate(pairs, 1):
                    self._csv.writerow([p.source, rank, lab, f"{prob:.6f}", *extra])
            elif self.fmt == "table":
                rest = ", ".join(
                    f"{lab} {prob:.3f}"
                    for lab, prob in zip(p.labels[1:], p.probabilities[1:], strict=True)
                )
                extra = f"{ood_cell(p):>8}  " if self.ood else ""
                prob = f"{p.probabilities[0]:>6.3f}"
                if p.present is not None:
                    # Multi-label: the labels present; prob is the surest of them; then every
                    # label of the top-k with its own probability, present or not.
                    prob = f"{p.present[0][1]:>6.3f}" if p.present else f"{'-':>6}"
                    rest = ", ".join(
                        f"{lab} {pr:.3f}" for lab, pr in zip(p.labels, p.probabilities, strict=True)
                    )
                self.out.write(f"{p.source:<{self.width}}  {p.label:<12} {prob}  {extra}{rest}\n")
            else:
                text = json.dumps(as_record(p), ensure_ascii=False)
                if self.fmt == "json":
                    text = ("\n  " if self.count == 0 else ",\n  ") + text
                else:
                    text += "\n"
                self.out.write(text)
            self.count += 1
        self.out.flush()

    def close(self) -> None:
        """End the output (the JSON array's closing bracket)."""
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        self.out.flush()


def ood_warning(p: Any, threshold: float | None) -> str:
    """The one line that says an image (a `predict.Prediction`) does not look like the
    training data."""
    limit = f" > threshold {threshold:.2f}" if threshold is not None else ""
    return (
        f"warning: {p.source}: doesn't look like the training data (OOD score "
        f"{p.ood_score:.1f}{limit}); its label {p.label!r} (p = {p.probabilities[0]:.3f}) is "
        "probably meaningless"
    )


def _decoded_chunks(predictor: Any, files: list[Path]) -> Iterator[tuple[int, Any]]:
    """(start, `predictor.decode_files` of files[start : start + CHUNK]) per chunk, in order,
    the next chunk decoding in a background thread while the caller runs the model on this
    one: decoding and the forward pass overlap, and memory holds two chunks at most."""

    starts = list(range(0, len(files), CHUNK))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgclf-decode") as ahead:
        pending = ahead.submit(predictor.decode_files, files[:CHUNK]) if starts else None
        for n, start in enumerate(starts):
            decoded = pending.result()
            if n + 1 < len(starts):
                nxt = starts[n + 1]
                pending = ahead.submit(predictor.decode_files, files[nxt : nxt + CHUNK])
            yield start, decoded


def classify_stream(predictor: Any, files: list[Path], args: Any, layer: str | None) -> int:
    """`imgclf-predict`'s loop: classify `files` with a `predict.Predictor`, CHUNK at a time
    (decoded in parallel, the next chunk while the model runs on this one), writing each
    chunk's predictions at once: memory holds two chunks, whatever the number of files.
    Flagged images get an `ood_warning` line on stderr at the end. Returns the number of files
    that could not be decoded."""
    width = max((len(str(f)) for f in files), default=5)
    multilabel = predictor.thresholds is not None
    writer = PredictionWriter(sys.stdout, args.format, width, predictor.has_ood, multilabel)
    if predictor.has_ood and args.format == "table":  # stderr: stdout stays the table
        limit = predictor.ood_threshold
        above = f"above {limit:.2f} (marked !)" if limit is not None else "marked !"
        print(
            "note: ood = distance of the image to the nearest class of the training data in "
            f"the model's feature space; {above}: doesn't look like the training data",
            file=sys.stderr,
        )
    progress = sys.stderr.isatty() and len(files) > CHUNK
    failed = overlays = 0
    unfamiliar: list[Any] = []
    for start, (names, images, unreadable) in _decoded_chunks(predictor, files):
        for source, reason in unreadable:
            print(f"error: {source}: {reason}", file=sys.stderr)
        failed += len(unreadable)
        if names:
            outputs = predictor.predict_outputs(images)
            probs = outputs[PROBABILITIES]
            predictions = predictor.top_k(probs, names, args.top_k, outputs)
            writer.write(predictions)
            unfamiliar += [p for p in predictions if p.ood]
            if args.explain is not None:
                # The top-1 class, as printed (argmax takes the first of equal probabilities,
                # like top_k's stable sort).
                top1 = probs.argmax(axis=1)
                overlays += len(
                    explain.save_overlays(predictor.model, images, names, args.explain, top1, layer)
                )
        if progress:
            done = min(start + CHUNK, len(files))
            print(f"\r{done:,}/{len(files):,} images", end="", file=sys.stderr, flush=True)
    writer.close()
    if progress:
        print(file=sys.stderr)
    for p in unfamiliar:  # stderr: stdout stays exactly the table/json/csv
        print(ood_warning(p, predictor.ood_threshold), file=sys.stderr)
    if args.explain is not None:  # stderr: stdout stays exactly the table/json/csv
        print(f"Grad-CAM ({layer}): wrote {overlays} overlays to {args.explain}", file=sys.stderr)
    return failed
