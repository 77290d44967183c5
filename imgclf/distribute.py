"""`train.distribute`: data-parallel training with tf.distribute.

- `none`: the default device (a GPU if TensorFlow sees one, else the CPU).
- `mirrored`: MirroredStrategy over every visible GPU, or over the logical CPU devices when there
  is no GPU (split the CPU with `tf.config.set_logical_device_configuration` to try it on a laptop).
- `multiworker`: MultiWorkerMirroredStrategy, the cluster and this process's role from the
  `TF_CONFIG` environment variable. NOT AVAILABLE YET: Keras 3's `fit` fails under this strategy
  (keras-team/keras#20585), so `make_strategy` refuses it with a clear error. The chief/worker
  handling below (only worker 0 keeps its run directory; the others write to a temporary folder
  that is deleted, since saving is collective) is what train() already does for it.
"""

from __future__ import annotations

import json
import os
from typing import Any


def make_strategy(mode: str) -> Any:
    """The tf.distribute strategy for `mode`, or None for `none`."""
    if mode == "none":
        return None
    import tensorflow as tf

    if mode == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if mode == "multiworker":
        from imgclf.errors import ConfigError

        # Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585:
        # it averages a distributed input batch while building, then mis-reduces metrics).
        # Until imgclf has its own multi-worker loop, say so instead of crashing mid-run.
        raise ConfigError(
            "train.distribute=multiworker is not supported yet: Keras 3's fit() does not run "
            "under MultiWorkerMirroredStrategy (keras-team/keras#20585); use mirrored (one "
            "machine, several devices) or none"
        )
    raise ValueError(f"train.distribute: unknown mode {mode!r}")


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a worker other than worker 0 (or a non-chief)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0)
