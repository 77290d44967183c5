"""Check that `imgclf-predict` gives the same top-1 label from a run directory (model.keras) and
from its exported SavedModel for every test image of the run, going through files and the CLI.

    python benchmarks/predict_agreement.py runs/latest
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from PIL import Image

from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.predict.cli import main as predict_main


def _predict(model: Path, folder: Path) -> dict[str, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = predict_main([str(model), str(folder), "--format", "json", "--top-k", "1"])
    assert code == 0, f"imgclf-predict exited {code}"
    return {Path(r["image"]).name: r["label"] for r in json.loads(out.getvalue())}


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/latest")
    splits = load_data(load_config(run / "config.yaml"))
    test = splits.test
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (pixels, label) in enumerate(zip(test.x, test.y, strict=True)):
            img = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            Image.fromarray(img).save(folder / f"{i:05d}_{label}.png")
        from_run = _predict(run, folder)
        from_saved = _predict(run / "saved_model", folder)
    agree = sum(from_run[k] == from_saved[k] for k in from_run)
    correct = sum(from_run[k] == splits.class_names[int(k.split("_")[1][:-4])] for k in from_run)
    print(
        f"{len(from_run)} test images: top-1 agreement run vs saved_model {agree}/{len(from_run)}"
        f"; accuracy from files {correct / len(from_run):.4f}"
    )


if __name__ == "__main__":
    main()
