"""A lab's folder: `<labs root>/<lab>-<time>/` holding `table.csv`, `table.md`, the lab's
pictures and `lab.json` (the figures, the settings, the machine, the time it took), then
`manifest.json` (SHA-256 of every file, `runs.write_manifest`). The folder is written under a
temporary name and renamed into place when complete (`runs.atomic_path`), so a lab that fails
half-way leaves nothing that looks finished."""

from __future__ import annotations

import io
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.infra import spreadsheet
from imgclf.infra.errors import UserError

LABS_ENV = "IMGCLF_LABS"
TABLE_CSV, TABLE_MD, LAB_JSON = "table.csv", "table.md", "lab.json"


def labs_root() -> Path:
    """`$IMGCLF_LABS`, else `labs/` (relative to the working directory, like `runs/`)."""
    return Path(os.environ.get(LABS_ENV) or "labs")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (columns in the first row's order)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_lab(
    name: str,
    rows: list[dict[str, Any]],
    pictures: dict[str, Callable[[Path], None]],
    summary: dict[str, Any],
    out: str | Path | None = None,
) -> Path:
    """Write the lab folder (`out`, else `<labs root>/<name>-<time>`); `pictures` maps a file
    name to a function that draws it at the given path. Returns the folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out is not None else labs_root() / f"{name}-{stamp}"
    n = 1
    while out is None and target.exists():  # two labs finished in the same second
        n += 1
        target = labs_root() / f"{name}-{stamp}-{n}"
    if target.exists():
        raise UserError(f"{target} already exists: give --out a new folder (nothing is replaced)")
    with runs.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        buffer = io.StringIO()
        writer = spreadsheet.writer(buffer)  # recipe names: never formulas
        writer.writerow(list(rows[0]))
        writer.writerows([row.get(key) for key in rows[0]] for row in rows)
        (tmp / TABLE_CSV).write_text(buffer.getvalue(), encoding="utf-8")
        (tmp / TABLE_MD).write_text(markdown_table(rows), encoding="utf-8")
        for picture, draw in pictures.items():
            draw(tmp / picture)
        meta = {
            "lab": name,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
            "versions": _versions(),
            "pictures": list(pictures),
            **summary,
            "rows": rows,
        }
        runs.write_json(tmp / LAB_JSON, meta)
        runs.write_manifest(tmp)
    return target


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def list_labs(root: str | Path | None = None) -> list[Path]:
    """Complete lab folders under `root` (with lab.json and a manifest), newest first."""
    root = Path(root) if root is not None else labs_root()
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / LAB_JSON).is_file()
        and (p / runs.MANIFEST).is_file()
    ]  # fmt: skip
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def read_lab(path: str | Path) -> dict[str, Any]:
    """lab.json of a lab folder, after checking every file against its manifest (raises
    runs.IntegrityError naming the first changed file)."""
    path = Path(path)
    runs.verify_all(path)
    return runs.read_json(path / LAB_JSON)
