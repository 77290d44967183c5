"""What the workers of a multi-worker run take from the chief (worker 0), so that every worker
holds the same model and makes the same decisions.

Only the chief keeps the run directory, so only the chief can read a resumed run's backups
(`training.resume`); the other workers may be on machines that never saw them. At the start of
every phase and of every fit the chief's state is broadcast: whether the phase had finished,
where the fit starts, early stopping's state, and, when the chief restored a backup, every
model and optimiser variable. A broadcast is one all-reduce (a sum) in which every replica but
the chief's contributes zeros: MultiWorkerMirroredStrategy has no broadcast of host values, and
a sum with zeros is exact (x + 0 = x in IEEE arithmetic).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# One compiled broadcast per strategy and dtype (any length): run eagerly, a collective
# strategy warns of its overhead at every call.
_BROADCASTS: dict[tuple[int, str, bool], Any] = {}


def _from_chief(strategy: Any, flat: np.ndarray, everyone: bool = False) -> np.ndarray:
    """`flat` (1-D, float64 or int64) as the chief holds it, on every worker; with `everyone`,
    the sum of every worker's `flat` instead. Each value is sent by one replica (a worker may
    run several, one per GPU: only its first sends, the others send zeros)."""
    import tensorflow as tf

    from imgclf.training.cluster import cluster_size

    key = (id(strategy), flat.dtype.name, everyone)
    if key not in _BROADCASTS:
        # Replicas are numbered worker by worker: the first of each worker, or global 0 (the
        # chief's first).
        local = max(1, strategy.num_replicas_in_sync // cluster_size()) if everyone else 0

        def first_replica(mine: Any) -> Any:
            ctx = tf.distribute.get_replica_context()
            sends = (
                (ctx.replica_id_in_sync_group % local == 0)
                if local
                else (ctx.replica_id_in_sync_group == 0)
            )
            return tf.where(sends, mine, tf.zeros_like(mine))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.as_dtype(flat.dtype))])
        def broadcast(mine: Any) -> Any:
            return strategy.reduce("SUM", strategy.run(first_replica, args=(mine,)), axis=None)

        _BROADCASTS[key] = broadcast
    return _BROADCASTS[key](tf.constant(flat)).numpy()


def all_sum(strategy: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The sum over every worker of `arrays` (the same shapes and dtypes on every worker), as
    `broadcast_arrays` carries them. A worker that contributes zeros to an entry leaves the
    others' value there exactly (a feature row computed by one worker reaches all)."""
    return broadcast_arrays(strategy, arrays, everyone=True)


def broadcast_arrays(
    strategy: Any, arrays: list[np.ndarray], everyone: bool = False
) -> list[np.ndarray]:
    """The chief's `arrays` on every worker: each worker passes arrays of the same shapes and
    dtypes (its own values, or zeros) and gets the chief's back (`everyone`: the sum of all).
    Floating arrays travel as float64 and integer arrays as int64 (exact for float32/float16
    and for int32/int64), in at most two all-reduces. Every worker must call it with the same
    shapes, in the same order."""
    arrays = [np.asarray(a) for a in arrays]
    out: list[np.ndarray | None] = [None] * len(arrays)
    for integer, wide in ((False, np.float64), (True, np.int64)):
        # bool and integers as int64; every other kind (float16/32/64, bfloat16) as float64.
        picked = [i for i, a in enumerate(arrays) if (a.dtype.kind in "biu") == integer]
        if not picked:
            continue
        flat = np.concatenate([arrays[i].astype(wide).ravel() for i in picked])
        total, at = _from_chief(strategy, flat, everyone), 0
        for i in picked:
            size = arrays[i].size
            out[i] = total[at : at + size].reshape(arrays[i].shape).astype(arrays[i].dtype)
            at += size
    return out  # type: ignore[return-value]


def broadcast_json(strategy: Any, value: Any) -> Any:
    """The chief's `value` (anything `json` writes) on every worker: its length, then its
    bytes. The other workers' values only have to be JSON; they are replaced."""
    mine = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8).astype(np.int64)
    (size,) = broadcast_arrays(strategy, [np.array([mine.size], np.int64)])
    padded = np.zeros(int(size[0]), np.int64)
    padded[: min(mine.size, padded.size)] = mine[: padded.size]
    (data,) = broadcast_arrays(strategy, [padded])
    return json.loads(bytes(data.astype(np.uint8)).decode("utf-8"))


def broadcast_variables(strategy: Any, variables: list[Any]) -> None:
    """Set every worker's `variables` (mirrored, the same list on every worker) to the chief's
    values."""
    values = broadcast_arrays(strategy, [np.asarray(v.numpy()) for v in variables])
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def agree_done(strategy: Any, report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chief's answer to "had this phase finished before the run was interrupted?": its
    report of the phase, or None. Every worker passes its own (the others: None)."""
    return broadcast_json(strategy, report)


def sync_fit_start(model: Any, strategy: Any, callbacks: list[Any]) -> int:
    """After the callbacks' `on_train_begin`: the epoch the fit starts from, the chief's.

    When the chief restored a backup (its `training.resume` callback set `model._initial_epoch`),
    the other workers get its model and optimiser variables and the state of every
    EarlyStopping callback (patience count, best value and epoch, best weights), so that they
    continue the same training and stop at the same epoch. A fresh fit exchanges one small
    message (two all-reduces: its length, its bytes) and nothing else."""
    import keras

    early = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    mine = {
        "start": getattr(model, "_initial_epoch", None),
        "early": [
            {
                "wait": c.wait,
                "best": None if c.best is None else float(c.best),
                "best_epoch": c.best_epoch,
                "has_best": c.best_weights is not None,
            }
            for c in early
        ],
    }
    chief = broadcast_json(strategy, mine)
    if chief["start"] is None:
        return 0
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:  # its slots must exist to receive them
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    variables = list(model.variables) + (list(optimizer.variables) if optimizer else [])
    broadcast_variables(strategy, variables)
    for callback, state in zip(early, chief["early"], strict=True):
        callback.wait, callback.best_epoch = state["wait"], state["best_epoch"]
        callback.best = state["best"]
        if state["has_best"]:
            own = callback.best_weights or [np.zeros_like(w) for w in model.get_weights()]
            callback.best_weights = broadcast_arrays(strategy, own)
    return int(chief["start"])
