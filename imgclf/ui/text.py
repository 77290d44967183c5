"""User-supplied text (file, class and dataset names, reasons quoting them) shown as text.

Streamlit renders the strings of `st.error`, `st.warning`, `st.success` and `st.markdown` as
Markdown: a file named `[x](https://...)` or `**x**` would become a link or bold text. `plain`
escapes every character Markdown (and Streamlit's `$` maths and `:emoji:` codes) gives a
meaning, so the name shows as typed.
"""

from __future__ import annotations

import re

# Characters that format anywhere in a line (emphasis, code, links, HTML, maths, emoji codes,
# tables), and the ones that format only at its start (headings, lists, quotes).
_INLINE = re.compile(r"([\\`*_\[\]<>~$:|])")
_LEADING = re.compile(r"^(\s*)([#+\-!>])", re.MULTILINE)
_NUMBERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)  # "1. x": escape the dot


def plain(text: object) -> str:
    """`text` with a backslash before every character Markdown would format."""
    text = _INLINE.sub(r"\\\1", str(text))
    return _NUMBERED.sub(r"\1\\\2", _LEADING.sub(r"\1\\\2", text))
