"""The shapes of the run files imgclf reads back (state.json, metrics.json, exports.json),
validated with pydantic: a run folder may come from someone else, and a value of the wrong type
(`"accuracy": "NaN"`, a list where a number belongs) must be refused with the file's name when
it is read, never crash a page that formats it later.

Only what readers use is checked; anything else a file holds is kept as it is (`extra="allow"`),
so a run written by a newer imgclf still reads. A failed check raises pydantic's
ValidationError, a ValueError; `check` turns it into one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgclf.infra import bounded


class _Record(BaseModel):
    # Strict: "0.9" or "NaN" as a string is not a number; NaN and inf are refused as numbers.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class StateRecord(_Record):
    """state.json: the run's state, the one-line reason, and who wrote it."""

    state: Literal["running", "complete", "interrupted", "failed"]
    reason: str | None = None
    pid: int | None = Field(default=None, gt=0)  # 0 and -1 would name a process group
    host: str | None = None
    boot: str | None = None
    start: int | None = None
    updated: float | None = None


class TestFigures(_Record):
    """metrics.json's `test` section: what the run list, Compare and Evaluation show."""

    accuracy: float | None = Field(default=None, ge=0, le=1)
    loss: float | None = None
    top_k_accuracy: float | None = Field(default=None, ge=0, le=1)
    k: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=0)


class MetricsRecord(_Record):
    """metrics.json, the parts read back as numbers or sections."""

    test: TestFigures | None = None
    calibration: dict[str, Any] | None = None
    ood: dict[str, Any] | None = None
    phases: list[dict[str, Any]] | None = None


class Parity(_Record):
    """An export's agreement with the run's model on its test images."""

    max_abs_diff: float | None = Field(default=None, ge=0)
    top1_agreement: float | None = Field(default=None, ge=0, le=1)


class ExportRecord(_Record):
    """One entry of exports.json (`saved_model`, `tflite`, `onnx`, ...)."""

    path: str | None = None
    parity: Parity | None = None
    size_bytes: int | None = Field(default=None, ge=0)


def check(model: type[_Record], data: Any, path: str | Path) -> Any:
    """`data` (what a JSON file held) if it has `model`'s shape; else ValueError, one line
    naming the file, the field and what is wrong."""
    try:
        if model is ExportRecord:
            if not isinstance(data, dict):
                raise ValueError(f"{path}: must be a mapping of export records")
            for record in data.values():
                ExportRecord.model_validate(record)
        else:
            model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
        raise ValueError(bounded.clip(f"{path}: {where}: {first['msg']}")) from None
    return data
