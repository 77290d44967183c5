"""The bare arm of `distributed.py`: what a practitioner writes without imgclf to train the same
model on the same images, on one process or on the workers TF_CONFIG names, following the
TensorFlow tutorials ("Custom training loop with Keras and MultiWorkerMirroredStrategy").

    one process (no TF_CONFIG): model.compile(Adam) + model.fit, validation every epoch
    TF_CONFIG set: MultiWorkerMirroredStrategy, the model and optimiser made in its scope,
        experimental_distribute_dataset over the global batches, a tf.function step running
        strategy.run (GradientTape, compute_average_loss, apply_gradients) and summing the
        loss over the workers; validation on every worker every epoch

The images (imgclf's split of the recipe's data) and the network (imgclf's builder) are the
same as imgclf's, so only the training around them differs. No batch-norm synchronisation, no
chief's logs, no watchdog, no backups, no run directory: that is the point of comparing. The
last line printed is JSON: the seconds of every epoch, the wall time from the start of this
script, and the test accuracy (worker 0's).

    python benchmarks/bare_keras_distributed.py --config configs/default.yaml --epochs 3 [k=v ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BEGAN = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ else None
    import keras
    import numpy as np

    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.models import build_model

    config = load_config(args.config, args.overrides)
    splits = load_data(config)
    n = len(splits.class_names)
    data = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        data[name] = (np.asarray(split.x, np.float32), np.eye(n, dtype=np.float32)[split.y])
    batch, rate = config.train.batch_size, config.train.learning_rate
    keras.utils.set_random_seed(config.seed)
    seconds: list[float] = []
    if strategy is None:
        model = build_model(config, n, splits.train.x)
        model.compile(keras.optimizers.Adam(rate), "categorical_crossentropy", metrics=["accuracy"])

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(time.perf_counter() - self.start)

        train = tf.data.Dataset.from_tensor_slices(data["train"]).shuffle(4096, seed=0)
        val = tf.data.Dataset.from_tensor_slices(data["val"]).batch(batch)
        model.fit(
            train.batch(batch), validation_data=val, epochs=args.epochs, verbose=0,
            callbacks=[Clock()],
        )  # fmt: skip
    else:
        model = _fit_multiworker(strategy, config, splits, data, args.epochs, seconds)
    x, y = data["test"]
    probs = model.predict(x, batch_size=256, verbose=0)
    accuracy = float(np.mean(probs.argmax(-1) == y.argmax(-1)))
    wall = time.perf_counter() - BEGAN
    print(json.dumps({"epoch_seconds": seconds, "wall": wall, "test_accuracy": accuracy}))


def _fit_multiworker(strategy, config, splits, data, epochs, seconds):
    """The tutorial's custom loop under MultiWorkerMirroredStrategy."""
    import keras
    import tensorflow as tf

    from imgclf.models import build_model

    n = len(splits.class_names)
    with strategy.scope():
        model = build_model(config, n, splits.train.x)
        optimizer = keras.optimizers.Adam(config.train.learning_rate)
    loss_fn = keras.losses.CategoricalCrossentropy(reduction="none")
    train = tf.data.Dataset.from_tensor_slices(data["train"]).shuffle(4096, seed=0)
    dist = strategy.experimental_distribute_dataset(train.batch(config.train.batch_size))
    val = tf.data.Dataset.from_tensor_slices(data["val"]).batch(config.train.batch_size)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)))
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(x, y):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(x, y)), axis=None)

    @tf.function
    def val_step(x, y):
        return tf.reduce_sum(loss_fn(y, model(x, training=False)))

    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in dist:
            train_step(x, y)
        for x, y in val:
            val_step(x, y)
        seconds.append(time.perf_counter() - start)
    return model


if __name__ == "__main__":
    main()
