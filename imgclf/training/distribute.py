"""`train.distribute`: data-parallel training with tf.distribute.

- `none`: the default device (a GPU if TensorFlow sees one, else the CPU).
- `mirrored`: MirroredStrategy over every visible GPU, or over the logical CPU devices when there
  is no GPU (split the CPU with `tf.config.set_logical_device_configuration` to try it on a laptop).
- `multiworker`: MultiWorkerMirroredStrategy, the cluster and this process's role from the
  `TF_CONFIG` environment variable. Every worker runs the same program. Keras 3's `fit` fails
  under this strategy (keras-team/keras#20585), so `fit_multiworker` is imgclf's own loop. Only
  the chief (worker 0) keeps its run directory; the others write to a temporary folder that is
  deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from imgclf.infra import faults
from imgclf.infra.errors import ConfigError, UserError
from imgclf.training.cluster import describe, tf_config
from imgclf.training.cluster_sync import all_sum, broadcast_arrays, sync_fit_start
from imgclf.training.watchdog import WATCHDOG, Watchdog

# One strategy per process and kind: TensorFlow configures a process's collective ops once, and
# a second MultiWorkerMirroredStrategy in the same process (a second `train()` in a notebook or
# script) breaks the cluster ("Enabling collective ops after program startup", then the other
# worker reports this task unhealthy); two MirroredStrategy objects share collective keys.
_STRATEGIES: dict[Any, Any] = {}


def make_strategy(mode: str, timeout: float | None = None) -> Any:
    """The tf.distribute strategy for `mode`, or None for `none`. Every call of a process gets
    the same strategy object for the same mode (and, for `mirrored`, the same devices): see
    above. `multiworker` waits for every worker TF_CONFIG names (`form_cluster`), at most
    `timeout` seconds. Raises ConfigError (`multiworker` without TF_CONFIG, or with a wrong
    one) or ValueError (unknown mode)."""
    if mode == "none":
        return None
    import tensorflow as tf

    if mode == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        key = ("mirrored", *devices)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(devices=devices)
        return _STRATEGIES[key]
    if mode == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "train.distribute=multiworker needs the TF_CONFIG environment variable (cluster "
                'and task), e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        if mode not in _STRATEGIES:
            _STRATEGIES[mode] = form_cluster(timeout)
        return _STRATEGIES[mode]
    raise ValueError(f"train.distribute: unknown mode {mode!r}")


def form_cluster(timeout: float | None) -> Any:
    """MultiWorkerMirroredStrategy, once every worker of TF_CONFIG has joined.

    TensorFlow waits for them inside C++ holding Python's lock, so no Python thread (the
    watchdog, the stderr filter) and no Python signal handler runs meanwhile (measured: a
    ticking thread stopped for the whole wait). So: a line on the real stderr says what it
    waits for and what happens next; Ctrl+C and SIGTERM end the process at once (their default
    action; nothing is written yet); and after `timeout` seconds (train.collective_timeout)
    `faulthandler`'s own C thread writes every stack to a file and ends the process (exit 1).
    Raises ConfigError for a wrong TF_CONFIG or a port this worker cannot listen on."""
    import faulthandler
    import signal
    import tempfile
    import threading

    import tensorflow as tf

    from imgclf.infra.console import terminal_fd

    cluster = tf_config()  # checked: a typo is one line, not TensorFlow's traceback
    members = sum(len(group) for group in cluster["cluster"].values())
    stacks = Path(tempfile.gettempdir()) / f"imgclf-cluster-{os.getpid()}.txt"
    then = f"at most {timeout:g} s (train.collective_timeout), then exit 1 with the stacks in " \
        f"{stacks}; " if timeout else ""  # fmt: skip
    line = f"cluster: {describe()}: waiting for all {members} to start ({then}Ctrl+C stops it)\n"
    os.write(terminal_fd(), line.encode())
    main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    before = [signal.signal(s, signal.SIG_DFL) for s in signals] if main else []
    try:
        with open(stacks, "w", encoding="utf-8") as fh:
            fh.write(f"{describe()}: the cluster did not form: a worker of TF_CONFIG was not "
                     "started, or its address or port is wrong or blocked\n")  # fmt: skip
            fh.flush()
            if timeout:
                faulthandler.dump_traceback_later(timeout, exit=True, file=fh)
            try:
                return tf.distribute.MultiWorkerMirroredStrategy()
            finally:
                faulthandler.cancel_dump_traceback_later()
    except (tf.errors.UnknownError, tf.errors.InvalidArgumentError) as exc:
        raise ConfigError(
            f"cannot start {describe()}: {_first(exc)} (another process on that port, or two "
            "workers given the same index?)"
        ) from None
    finally:
        stacks.unlink(missing_ok=True)  # formed, or refused: nothing to look at
        for sig, handler in zip(signals if main else (), before, strict=True):
            signal.signal(sig, handler)


def _loss_fn(model: Any, class_weight: dict[int, float] | None) -> Any:
    """Per-example loss of the compiled loss object (label smoothing / MSE as configured),
    weighted by `class_weight`: (one-hot y [N, K], probabilities [N, K]) -> [N]."""
    import keras
    import tensorflow as tf

    loss_obj = model.loss
    weights = None
    if class_weight:
        weights = tf.constant([class_weight[c] for c in sorted(class_weight)], tf.float32)

    def per_example_loss(y: Any, probs: Any) -> Any:
        if isinstance(loss_obj, keras.losses.MeanSquaredError):
            losses = keras.losses.mean_squared_error(y, probs)
        else:
            smoothing = getattr(loss_obj, "label_smoothing", 0.0)
            losses = keras.losses.categorical_crossentropy(y, probs, label_smoothing=smoothing)
        if weights is not None:
            losses = losses * tf.gather(weights, tf.argmax(y, axis=-1))
        return losses

    return per_example_loss


def _steps(model: Any, strategy: Any, per_example_loss: Any) -> tuple[Any, Any]:
    """(train_step, val_step): each returns (summed loss, correct, images) of a global batch."""
    import tensorflow as tf

    def replica_step(x: Any, y: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            losses = per_example_loss(y, probs)
            # Mean over the *global* batch; the optimiser sums gradients over replicas.
            loss = tf.nn.compute_average_loss(losses)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32)
        count = tf.cast(tf.shape(y)[0], tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(correct), count

    @tf.function
    def train_step(x: Any, y: Any) -> list[Any]:
        per_replica = strategy.run(replica_step, args=(x, y))
        return [strategy.reduce("SUM", value, axis=None) for value in per_replica]

    @tf.function
    def val_step(x: Any, y: Any) -> tuple[Any, Any, Any]:
        probs = model(x, training=False)
        correct = tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32)
        n = tf.cast(tf.shape(y)[0], tf.float32)
        return tf.reduce_sum(per_example_loss(y, probs)), tf.reduce_sum(correct), n

    return train_step, val_step


def _batch_norm_statistics(model: Any) -> list[Any]:
    """The moving mean and variance of every trainable BatchNormalization layer of `model`
    (nested models included)."""
    import keras

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        # A frozen layer (transfer) runs in inference mode: its statistics never move.
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found += [layer.moving_mean, layer.moving_variance]
    return found


def synchronise_statistics(model: Any, strategy: Any) -> Any:
    """A function that makes every worker's batch-norm moving statistics the mean over all
    replicas (one all-reduce per statistic), or None when the model has none.

    Why: the trainable weights stay identical on every worker (their gradients are
    all-reduced), but Keras updates a BatchNormalization layer's moving mean and variance in
    each replica from that replica's own share of the batch, with no all-reduce, so they drift
    apart (measured: 2 workers, a BN CNN on the digits, 3 epochs: weights equal to the last bit,
    moving variances up to 0.82 apart, validation accuracy 0.7398 against 0.7509). Inference
    reads them, so validation, early stopping and best-weight restore would differ per worker.
    The mean of the replicas' moving averages is the moving average of their batch means (the
    update is linear); the variance misses the spread between the replicas' shares, as
    non-synchronised batch norm does on one device with smaller batches."""
    import tensorflow as tf

    statistics = _batch_norm_statistics(model)
    if not statistics:
        return None

    @tf.function
    def synchronise() -> None:
        for variable in statistics:
            local = strategy.run(lambda v=variable: tf.identity(v.value))
            variable.assign(strategy.reduce("MEAN", local, axis=None))

    return synchronise


def chief_logs(strategy: Any, logs: dict[str, float]) -> dict[str, float]:
    """`logs` as the chief computed them, on every worker (one all-reduce): every callback's
    decision (early stopping, best-weight restore, learning-rate schedules on a plateau) is the
    chief's, whatever round-off or data a worker saw differently."""
    import numpy as np

    keys = sorted(logs)
    (values,) = broadcast_arrays(strategy, [np.array([logs[k] for k in keys], np.float64)])
    return dict(zip(keys, (float(v) for v in values), strict=True))


def _totals(step: Any, batches: Any, watchdog: Watchdog, cb: Any = None) -> list[float]:
    """(summed loss, correct, images) of `step` over `batches`; with `cb` (training), the
    callbacks' batch hooks around every step (resume backups every N steps, the estimate)."""
    totals = [0.0, 0.0, 0.0]
    for batch, (x, y) in enumerate(batches):
        if cb is not None:
            cb.on_train_batch_begin(batch)
        totals = [t + float(v) for t, v in zip(totals, step(x, y), strict=True)]
        watchdog.beat()
        if cb is not None:
            faults.point("step")
            cb.on_train_batch_end(batch)
    return totals


def fit_multiworker(
    model: Any,
    strategy: Any,
    train_ds: Any,
    val_ds: Any,
    epochs: int,
    callbacks: list[Any],
    class_weight: dict[int, float] | None = None,
    verbose: int = 0,
) -> None:
    """Train `model` (built and compiled under `strategy`) with imgclf's own loop.

    Keras 3's `fit()` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    so this loop does what it would: one distributed step per global batch (the optimiser
    all-reduces the gradients), training loss and accuracy summed over all workers, the
    batch-norm moving statistics averaged over the replicas at the end of every epoch
    (`synchronise_statistics`), validation on the full validation split, and the usual Keras
    callbacks (history, early stopping, schedules) driven on every worker with the chief's
    logs (`chief_logs`), so every worker takes the same decisions. A step that does not
    complete within the watchdog's deadline (`WATCHDOG`, `train.collective_timeout`) ends the
    process (`Watchdog`); a peer that is gone raises WorkerLost.
    """
    with lost_peers(), Watchdog(**WATCHDOG) as watchdog:
        _loop(
            model, strategy, train_ds, val_ds, epochs, callbacks, class_weight, verbose, watchdog
        )  # fmt: skip


def worker_share(strategy: Any) -> Any:
    """This worker's `feature_cache.Share`: its index among the cluster's workers (a chief
    first), their count, and `all_sum` over the cluster, guarded as a training step is: a lost
    peer is WorkerLost, and the watchdog (`train.collective_timeout`) bounds every block."""
    from imgclf.training.cluster import cluster_size, worker_index
    from imgclf.training.feature_cache import Share

    dogs: list[Watchdog] = []

    @contextlib.contextmanager
    def guard() -> Any:
        with lost_peers(), Watchdog(**WATCHDOG) as dog:
            dogs.append(dog)
            yield

    def combine(*arrays: Any) -> list[Any]:
        summed = all_sum(strategy, list(arrays))
        for dog in dogs:
            dog.beat()
        return summed

    return Share(cluster_size(), worker_index(), combine, guard)


@contextlib.contextmanager
def lost_peers() -> Any:
    """Turn the errors TensorFlow raises in a collective whose peer is gone into WorkerLost,
    one line naming the lost tasks."""
    import tensorflow as tf

    try:
        yield
    except _peer_errors() as exc:
        text = str(exc)
        if not isinstance(exc, tf.errors.UnavailableError) and not LOST.search(text):
            raise  # e.g. two workers running different collectives: a bug, not a lost peer
        task = (tf_config() or {}).get("task", {})  # the one reader of TF_CONFIG
        me = f"/job:{task.get('type', 'worker')}/replica:0/task:{task.get('index', 0)}"
        found = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", text)))
        peers = [p for p in found if p != me] or found  # not this process itself
        who = ", ".join(peers) if peers else _first(exc)
        raise WorkerLost(
            f"a worker of the cluster was lost ({who}); the run cannot go on without it"
        ) from None


# What TensorFlow's messages say when a peer is gone (its coordination service's heartbeat,
# gRPC's view of a closed connection).
LOST = re.compile(r"unhealthy|heartbeat|Socket closed|Connection reset|connect to all addresses")


def _peer_errors() -> tuple[type[BaseException], ...]:
    """What TensorFlow raises in a collective whose peer is gone: UnavailableError (its health
    check), and Cancelled, Aborted or Internal ("Collective ops is aborted by: ...") when the
    collective executor is torn down while a step waits on it."""
    import tensorflow as tf

    e = tf.errors
    return (e.UnavailableError, e.CancelledError, e.AbortedError, e.InternalError)


class WorkerLost(UserError):
    """A multi-worker peer crashed or was killed (TensorFlow's collective health check)."""


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _loop(
    model: Any, strategy: Any, train_ds: Any, val_ds: Any, epochs: int, callbacks: list[Any],
    class_weight: dict[int, float] | None, verbose: int, watchdog: Watchdog,
) -> None:  # fmt: skip
    """The loop of `fit_multiworker`."""
    import keras

    train_step, val_step = _steps(model, strategy, _loss_fn(model, class_weight))
    synchronise = synchronise_statistics(model, strategy)
    # A function: a per-worker pipeline (streamed files, each worker its own shard); else one
    # dataset that the strategy splits between the workers.
    distributed = (
        strategy.distribute_datasets_from_function(train_ds)
        if callable(train_ds)
        else strategy.experimental_distribute_dataset(train_ds)
    )
    cb = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, verbose=0)
    model.stop_training = False
    model._initial_epoch = None  # set by the chief's resume backup when it restores one
    if model.optimizer is not None and not model.optimizer.built:
        # Now, on every worker: creating a mirrored variable is a collective (its initial
        # value is broadcast), and the chief's resume backup would otherwise create the
        # optimiser's variables alone, before restoring them.
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    cb.on_train_begin()
    # Resuming: where the chief's backup ends, its weights and early stopping's state, on
    # every worker (the others never saw the backup).
    start = sync_fit_start(model, strategy, callbacks)
    model._initial_epoch = None
    for epoch in range(start, epochs):
        cb.on_epoch_begin(epoch)
        train = _totals(train_step, distributed, watchdog, cb)
        if synchronise is not None:  # before validating: the same model on every worker
            synchronise()
        val = _totals(val_step, val_ds, watchdog)
        logs = {
            "loss": train[0] / train[2],
            "accuracy": train[1] / train[2],
            "val_loss": val[0] / val[2],
            "val_accuracy": val[1] / val[2],
        }
        logs = chief_logs(strategy, logs)  # every decision below is the chief's
        watchdog.beat()
        if verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {shown}", flush=True)
        cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cb.on_train_end()
