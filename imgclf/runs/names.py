"""Every file name of a run directory, in one place (the run directory's contract)."""

from pathlib import Path

CONFIG = "config.yaml"
LABELS = "labels.json"
DATA_REPORT = "data_report.json"
HISTORY = "history.csv"
MODEL = "model.keras"
METRICS = "metrics.json"
EXPORTS = "exports.json"
SAVED_MODEL = "saved_model"
MODEL_CARD = "model_card.md"
MANIFEST = "manifest.json"
DIAGNOSTICS = "diagnostics.json"
TFLITE = "model.tflite"
TFLITE_INT8 = "model_int8.tflite"
ONNX = "model.onnx"
MEDIAPIPE = "model_mediapipe.tflite"  # one output and MediaPipe metadata (export/mediapipe.py)
MEDIAPIPE_INT8 = "model_mediapipe_int8.tflite"  # the same, full-integer int8
WEB = "web"  # a page that classifies offline in a browser (export/web.py)
# task: multilabel: per-label thresholds beside an exported SavedModel's labels.json, so a copy
# of saved_model/ deployed without its run still decides as the run does
THRESHOLDS = "thresholds.json"
STACKS = "stacks.txt"  # multi-worker: every thread's stack when a collective timed out
OOD = "ood.npz"  # the out-of-distribution detector's statistics (imgclf/confidence/ood.py)
PLOTS = "plots"
CURVES_PLOT = f"{PLOTS}/curves.png"
CONFUSION_PLOT = f"{PLOTS}/confusion.png"
RELIABILITY_PLOT = f"{PLOTS}/reliability.png"  # calibration: before and after
GRADIENTS_PLOT = f"{PLOTS}/gradients.png"
ACTIVATIONS_PLOT = f"{PLOTS}/activations.png"
LR_FINDER = "lr_finder.json"  # the learning-rate range test per phase (training/lr_finder.py)
LR_FINDER_PLOT = f"{PLOTS}/lr_finder.png"
SAMPLES = "samples"
WORST = "worst"
DEFAULT_ROOT = Path("runs")
LATEST = "latest"
STATE = "state.json"  # running / complete / interrupted / failed (imgclf.runs.state)
PROGRESS = (
    "progress.json"  # while training: the time-left estimate (imgclf.training.estimate); removed
)
TENSORBOARD = "tensorboard"  # train.tensorboard: Keras' event files (imgclf.training.tracking)
TRACKING = "tracking.json"  # train.mlflow: the MLflow run id, experiment and store URI
RESUME = ".resume"  # what --resume needs, hidden: never an artifact, removed on completion


__all__ = [
    "ACTIVATIONS_PLOT",
    "CONFIG",
    "CONFUSION_PLOT",
    "CURVES_PLOT",
    "DATA_REPORT",
    "DEFAULT_ROOT",
    "DIAGNOSTICS",
    "EXPORTS",
    "GRADIENTS_PLOT",
    "HISTORY",
    "LABELS",
    "LATEST",
    "LR_FINDER",
    "LR_FINDER_PLOT",
    "MANIFEST",
    "MEDIAPIPE",
    "MEDIAPIPE_INT8",
    "METRICS",
    "MODEL",
    "MODEL_CARD",
    "ONNX",
    "OOD",
    "PLOTS",
    "PROGRESS",
    "RELIABILITY_PLOT",
    "RESUME",
    "SAMPLES",
    "SAVED_MODEL",
    "STACKS",
    "STATE",
    "TENSORBOARD",
    "TFLITE",
    "TFLITE_INT8",
    "THRESHOLDS",
    "TRACKING",
    "WEB",
    "WORST",
]
