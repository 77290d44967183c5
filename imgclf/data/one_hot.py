"""CSV lists with one column per label (`path,beach,people,sunset[,split]`, 1/0 in each label
column: true/false and yes/no too, blank for 0), rewritten as the `path,label,split` rows the
list reader reads (`folder.list_csv`), the labels of a row joined by SEPARATOR (`beach|people`):
`task: multilabel` reads them as label sets (`imgclf.data.multilabel`). A single-label run reads
a row with several 1s as one class named by them all, so one-hot lists belong to multi-label runs.

Every row keeps its physical line (a blank row stays blank), so a skipped row is reported with its
own line number; a quoted value spanning lines is the exception (it is written on one line).
"""

from __future__ import annotations

import csv
import io

from imgclf.infra.errors import DataError

SEPARATOR = "|"  # between the labels of one image
ONE_HOT = {"1": True, "0": False, "": False, "true": True, "false": False, "yes": True,
           "no": False, "1.0": True, "0.0": False}  # fmt: skip


def one_hot_rows(text: str) -> str | None:
    """A CSV of one-hot columns (`path,beach,people[,split]`, 1/0 per label) rewritten as
    `path,label,split` rows with the labels joined by SEPARATOR; None for a CSV that has a
    `label` column (read as it is). A row with no label set keeps an empty label (the list
    reader skips it with its line). Raises DataError on a value that is not 1/0."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "label" in header or "path" not in header:
        return None
    labels = [i for i, c in enumerate(header) if c not in ("path", "split")]
    if len(labels) < 2:
        return None  # the reader's own error names what is missing
    for i in labels:
        if SEPARATOR in rows[0][i] or not rows[0][i].strip():
            raise DataError(
                f"one-hot column {rows[0][i]!r}: a label column needs a name without "
                f"{SEPARATOR!r}; rename it"
            )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "label", "split"])
    path_at, split_at = header.index("path"), header.index("split") if "split" in header else -1
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            writer.writerow([])  # kept, so every later row keeps its line number
            continue
        cells = row + [""] * (len(header) - len(row))
        on = []
        for i in labels:
            value = cells[i].strip().lower()
            if value not in ONE_HOT:
                raise DataError(
                    f"line {line}: column {rows[0][i].strip()!r} holds {cells[i]!r}; a CSV "
                    "without a `label` column has one column per label holding 1 or 0 "
                    "(true/false, yes/no, blank for 0); else name the label column `label`"
                )
            if ONE_HOT[value]:
                on.append(rows[0][i].strip())
        split = cells[split_at] if split_at >= 0 else ""
        writer.writerow([cells[path_at], SEPARATOR.join(on), split, *row[len(header) :]])
    return out.getvalue()
