"""The run's ONNX export in Intel's OpenVINO runtime: the fourth runtime of the parity check
(after TensorFlow, the TFLite interpreter and ONNX Runtime; MediaPipe is the fifth).

OpenVINO reads ONNX natively (`openvino.Core().read_model`), so no new file is written: the
check compiles `model.onnx` for the CPU at float32 inference precision, runs the run's test
images through it, compares its probabilities with model.keras' as every export's are
(`parity.require_parity`), and records it in exports.json under `openvino` (with the OpenVINO
version). OpenVINO's CPU default is bf16 where the processor has it (AVX-512 BF16, AMX): that
differed by 2.4e-3 on the tiny test run, so it is measured and reported beside the check
(`default_precision`), not required. A server that deploys with
OpenVINO then runs a file whose answers were checked in OpenVINO itself. The `[openvino]` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.export import parity
from imgclf.export.saved_model import OUTPUT_NAME
from imgclf.infra.errors import UserError, require_packages

INSTALL = "pip install 'imgclf[openvino]'"


def require_openvino() -> None:
    """UserError naming the install command when the `openvino` package is missing."""
    require_packages("--format openvino", INSTALL, "openvino")


def load_function(path: str | Path, precision: str | None = "f32") -> Any:
    """fn: pixels float32 [N, H, W, C] -> probabilities [N, K], `path` (an imgclf ONNX file)
    compiled by OpenVINO for the CPU at the inference `precision` ("f32"; None: the CPU
    plugin's default, bf16 on a CPU with AVX-512 BF16 or AMX, which then differs by about 1e-3;
    docs/predict-and-export.md)."""
    require_openvino()
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    output = next(o for o in compiled.outputs if OUTPUT_NAME in o.get_names())

    def fn(batch: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(np.asarray(batch, np.float32))[output])

    return fn


def export_run(
    run_dir: str | Path, loaded: tuple[Any, parity.Reference] | None = None
) -> dict[str, Any]:
    """`imgclf-export RUN --format openvino`: run the run's model.onnx (checked against the
    manifest) in OpenVINO on the test images and record the parity in exports.json. Raises
    UserError (no model.onnx, no openvino) or ExportError (OpenVINO's answers disagree)."""
    require_openvino()
    import openvino as ov

    run_dir = Path(run_dir)
    onnx_path = run_dir / runs.ONNX
    if not onnx_path.is_file():
        raise UserError(f"{run_dir} has no {runs.ONNX}; run imgclf-export {run_dir} --format onnx")
    runs.check_run(run_dir, runs.ONNX)
    _, reference = loaded or parity.load_for_export(run_dir)

    def run(precision: str | None) -> dict[str, Any]:
        fn = load_function(onnx_path, precision)
        probabilities = parity.batched(fn, reference.images, reference.batch_size, np.float32)
        return parity.compare(probabilities, reference.probabilities, reference.labels)

    record = {"path": runs.ONNX, "runtime": f"openvino {ov.__version__} (CPU, f32)", **run("f32")}
    # What a server gets with OpenVINO's defaults (bf16 where the CPU has it): reported only.
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    name = default.get_type_name() if hasattr(default, "get_type_name") else str(default)
    record["default_precision"] = {"precision": name, **run(None)}
    parity.require_parity(
        "OpenVINO", record["parity"], f"{runs.ONNX} is not recorded as checked in OpenVINO"
    )
    parity.record_export(run_dir, "openvino", record)
    return record
