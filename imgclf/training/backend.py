"""The Keras backend a run trains on, and the few places where it matters.

Model building, training, diagnostics and evaluation use Keras 3 public APIs only, so any backend
(`KERAS_BACKEND=tensorflow`, the default, or `jax`) trains the same models from the in-memory
NumPy splits. TensorFlow is needed only for tf.data pipelines and SavedModel/TFLite export: under
another backend training feeds `fit` with a `keras.utils.PyDataset` and imports no TensorFlow
(Keras' own `set_random_seed` still imports it when it is installed, to seed tf.data).

    check_backend(config)
    set_deterministic(config.seed)
    train_data, val_data = make_training_data(splits, config, batch_size, augmenter)
    if not can_export_saved_model():
        print(export_skipped_message(run_dir))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from imgclf import data
from imgclf.infra.errors import ConfigError

if TYPE_CHECKING:
    from imgclf.data import Splits
    from imgclf.schema import Config

TENSORFLOW = "tensorflow"
Pipeline = Literal["auto", "tf.data", "pydataset"]
EXPORT_SKIPPED = (
    "SavedModel export needs the TensorFlow backend; run `imgclf-export {run}` with "
    "KERAS_BACKEND=tensorflow"
)


def backend_name() -> str:
    """The active Keras backend: "tensorflow", "jax", "torch" or "numpy"."""
    import keras

    return keras.backend.backend()


def uses_tensorflow() -> bool:
    """True under the TensorFlow backend (tf.data pipelines, op determinism, SavedModel export)."""
    return backend_name() == TENSORFLOW


def can_export_saved_model() -> bool:
    """A SavedModel is traced from the live model by TensorFlow: only the TF backend can write it.
    (model.keras is backend-neutral: `imgclf-export` re-loads it under TensorFlow.)"""
    return uses_tensorflow()


def export_skipped_message(run_dir: Any = "RUN") -> str:
    """The one line train() prints when it skips the SavedModel export."""
    return EXPORT_SKIPPED.format(run=run_dir)


def check_backend(config: Config) -> None:
    """Raise ConfigError (before any work) for settings the active backend cannot run.

    Everything trains on every backend except `train.distribute` (tf.distribute strategies).
    """

    distribute = config.train.distribute
    if distribute != "none" and not uses_tensorflow():
        raise ConfigError(
            f"train.distribute={distribute} uses tf.distribute and needs the TensorFlow backend; "
            f"the active Keras backend is {backend_name()!r}: set KERAS_BACKEND=tensorflow or "
            f"train.distribute=none"
        )


def set_deterministic(seed: int) -> None:
    """Seed Python, NumPy and Keras (`keras.utils.set_random_seed`); on the TF backend also switch
    TensorFlow to deterministic kernels (they cost little on CPU and make runs repeatable).

    JAX is deterministic on CPU without a switch; on GPU some reductions may still differ in the
    last bits between runs (XLA_FLAGS=--xla_gpu_deterministic_ops=true makes them repeatable).
    """
    import keras

    keras.utils.set_random_seed(int(seed))
    if uses_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def resolve_pipeline(pipeline: Pipeline = "auto") -> Literal["tf.data", "pydataset"]:
    """ "auto" picks tf.data on the TensorFlow backend and a PyDataset on any other."""
    if pipeline == "auto":
        return "tf.data" if uses_tensorflow() else "pydataset"
    if pipeline not in ("tf.data", "pydataset"):
        raise ValueError(f"pipeline must be 'auto', 'tf.data' or 'pydataset'; got {pipeline!r}")
    return pipeline


def make_training_data(
    splits: Splits,
    config: Config,
    batch_size: int,
    augmenter: Any = None,
    *,
    pipeline: Pipeline = "auto",
) -> tuple[Any, Any]:
    """(train_data, val_data) for `model.fit(train_data, validation_data=val_data, shuffle=False)`.

    Training batches are shuffled with `config.seed` (a new order every epoch) and go through
    `augmenter`; validation batches are neither. Both yield raw float32 pixels 0..255 and one-hot
    float32 labels. On the TensorFlow backend they are tf.data pipelines (`data.make_dataset`);
    on any other backend, or with pipeline="pydataset", `keras.utils.PyDataset`s of NumPy
    batches (`data.make_pydataset`) that need no TensorFlow. pipeline="tf.data" forces tf.data
    (Keras' JAX and torch trainers accept it too, if TensorFlow is installed).
    """

    make = data.make_dataset if resolve_pipeline(pipeline) == "tf.data" else data.make_pydataset
    num_classes = len(splits.class_names)
    options = {"shuffle": True, "seed": config.seed, "augment": augmenter}
    if config.train.distribute == "multiworker" and splits.train.streamed:
        import tensorflow as tf

        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # set_epoch sets it per epoch

        def per_worker(context: Any) -> Any:
            # Each worker reads only its own shard of the files, in per-replica batches
            # (`tf.distribute.Strategy.distribute_datasets_from_function`).
            shard = (context.num_input_pipelines, context.input_pipeline_id)
            per_replica = context.get_per_replica_batch_size(batch_size)
            return data.make_dataset(
                splits.train, per_replica, num_classes, shard=shard, epoch=epoch, **options
            )

        per_worker.imgclf_epoch = epoch  # type: ignore[attr-defined]
        return per_worker, make(splits.val, batch_size, num_classes)
    train_data = make(splits.train, batch_size, num_classes, **options)
    val_data = make(splits.val, batch_size, num_classes)
    return train_data, val_data
