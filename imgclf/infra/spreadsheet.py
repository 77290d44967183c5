"""CSV that a spreadsheet opens as data, never as formulas.

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`, `-` or `@` (and one
that starts with a tab or carriage return, which they strip first) as a formula, so a class name
or a file name such as `=HYPERLINK(...)` in a predictions CSV would run when the file is opened
("CSV injection", OWASP). Every CSV imgclf writes goes through `writer`, which prefixes such a
text cell with `'` (OWASP's advice: the apostrophe shows the text as typed). Numbers imgclf
formats itself are written as they are, so a negative value stays a number.
"""

from __future__ import annotations

import csv
from typing import Any, TextIO

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value`, with `'` in front when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(_TRIGGERS):
        return "'" + value
    return value


class writer:
    """`csv.writer(out, **options)` whose rows have their text cells made safe."""

    def __init__(self, out: TextIO, **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Any) -> Any:
        return self._writer.writerow([safe_cell(cell) for cell in row])

    def writerows(self, rows: Any) -> None:
        for row in rows:
            self.writerow(row)
