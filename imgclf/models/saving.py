"""Loading what imgclf saved: a run's model.keras, checked against the run's manifest and loaded
in Keras' safe mode with imgclf's custom layers registered."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf import runs
from imgclf.infra.bounded import clip
from imgclf.infra.errors import UserError

if TYPE_CHECKING:
    import keras


def register_custom_layers() -> None:
    """Register imgclf's custom layers (Abs, Maxout, BackbonePreprocess) with Keras' serialisation.

    Call it before `keras.saving.load_model` of a model built here: safe-mode loading only finds
    registered classes, and registering imports Keras (so it is not done when this module is
    imported: listing models must stay TensorFlow-free). `build_model` calls it too.
    """
    importlib.import_module("imgclf.models.layers")


def load_run_model(run_dir: str | Path) -> keras.Model:
    """The trained model of a run directory: model.keras checked against the run's
    manifest.json (a modified file is refused), then loaded in Keras' safe mode with imgclf's
    custom layers registered. A model holding a Lambda layer (arbitrary Python code) is refused
    with a UserError; imgclf itself never writes one. So is one Keras cannot load, or whose
    outputs do not match labels.json's class names (an IndexError in every prediction)."""
    import keras

    path = Path(run_dir) / runs.MODEL
    # Complete, and model.keras and labels.json (every user of the model reads its labels too)
    # are what training wrote.
    runs.check_run(run_dir, runs.MODEL, runs.LABELS)
    register_custom_layers()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "Lambda" in str(exc) or "lambda" in str(exc):
            raise UserError(
                f"{path} contains a Lambda layer (arbitrary Python code), which imgclf refuses "
                "to load: models are loaded in Keras' safe mode. Rebuild it with registered "
                "layers"
            ) from None
        raise UserError(clip(f"{path} cannot be loaded in Keras' safe mode: {exc}")) from None
    except Exception as exc:  # a class Keras refuses (e.g. `os.system`), a broken archive
        raise UserError(
            clip(f"{path} cannot be loaded ({type(exc).__name__}: {exc}); re-train the run")
        ) from None
    outputs = int(model.output_shape[-1]) if len(model.output_shape) == 2 else None
    labels = runs.read_labels(run_dir)
    if outputs != len(labels):
        raise UserError(
            f"{Path(run_dir) / runs.LABELS} names {len(labels)} classes but the model has "
            f"{outputs} outputs; the run's files do not belong together: re-train it"
        )
    return model
