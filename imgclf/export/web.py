"""`imgclf-export RUN --format web`: a self-contained folder, `RUN/web/`, in which a photo is
classified by the run's model in any modern browser, offline.

    web/index.html             the page: pick or drop photos, or snap the webcam; top-k bars
    web/model.tflite           the run's `model_mediapipe.tflite` (one output, metadata)
    web/vision_bundle.js       MediaPipe Tasks Vision for the web (npm @mediapipe/tasks-vision)
    web/wasm/vision_wasm_internal.{js,wasm}
    web/NOTICE.md              where those three files come from (Apache-2.0)

MediaPipe's JavaScript and WebAssembly are copied from `imgclf/export/web_assets/`, which holds
them unchanged from the npm package (its NOTICE.md says which version): no CDN, so the page
works from a file server on a laptop, a phone on the same network, or a static host, with the
network cut off. Browsers do not let a page fetch its model from `file://`, so serve the folder
(`python -m http.server -d RUN/web`). The page is checked in Chromium by the browser test
(tests/test_web_export.py): its top-1 on the run's sample images equals `Predictor`'s.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.export import parity
from imgclf.infra.errors import UserError

ASSETS = Path(__file__).resolve().parent / "web_assets"
FOLDER = runs.WEB
TOP_K = 3


def write_page(run_dir: Path, target: Path) -> list[str]:
    """Write the page's files into `target` (a new folder); returns their relative paths."""
    model = run_dir / runs.MEDIAPIPE
    classes = runs.read_labels(run_dir)
    height, width = (int(v) for v in runs.read_config(run_dir)["data"]["image_size"])
    shutil.copytree(ASSETS, target, ignore=shutil.ignore_patterns("index.html"))
    shutil.copyfile(model, target / "model.tflite")
    name = str(runs.read_config(run_dir).get("name") or run_dir.name)
    page = (ASSETS / "index.html").read_text(encoding="utf-8")
    for key, value in {
        "__TITLE__": html.escape(f"{name}: classify a photo"),
        "__CLASSES__": str(len(classes)),
        "__SIZE__": f"{height}×{width}",
        "__TOPK__": json.dumps(min(TOP_K, len(classes))),
    }.items():
        page = page.replace(key, value)
    (target / "index.html").write_text(page, encoding="utf-8")
    return sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())


def export_run(run_dir: str | Path) -> dict[str, Any]:
    """Write `RUN/web/` atomically (the previous folder is replaced only when the new one is
    complete) and record it in exports.json. Raises UserError when the run has no checked
    `model_mediapipe.tflite` (made by `--format mediapipe`, which `--format web` runs first when
    it is missing)."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.MEDIAPIPE).is_file():
        raise UserError(
            f"{run_dir} has no {runs.MEDIAPIPE}; run imgclf-export {run_dir} --format mediapipe web"
        )
    runs.require_complete(run_dir)
    runs.verify_all(run_dir, *parity.EXPORT_FILES)  # config.yaml, labels.json: as trained
    runs.verify_manifest(run_dir, runs.MEDIAPIPE)
    # The file the MediaPipe check passed, not one copied in since (the manifest is re-written
    # by every export, so it alone cannot tell).
    checked = (runs.read_json(run_dir / runs.EXPORTS) if (run_dir / runs.EXPORTS).is_file()
               else {}).get("mediapipe", {})  # fmt: skip
    digest = hashlib.sha256((run_dir / runs.MEDIAPIPE).read_bytes()).hexdigest()
    if checked.get("sha256") != digest:
        raise UserError(
            f"{runs.MEDIAPIPE} is not the file MediaPipe's check passed; run imgclf-export "
            f"{run_dir} --format mediapipe web"
        )
    with runs.atomic_path(run_dir / FOLDER) as tmp:
        files = write_page(run_dir, tmp)
    size = sum((run_dir / FOLDER / f).stat().st_size for f in files)
    record = {"path": FOLDER, "files": files, "size_bytes": size,
              "model": runs.MEDIAPIPE, "runtime": "MediaPipe Tasks for the web"}  # fmt: skip
    parity.record_export(run_dir, "web", record)
    return record
