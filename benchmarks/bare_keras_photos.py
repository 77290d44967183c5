"""The bare-Keras arm of `photo_job.py`: what a practitioner writes without imgclf for the same job,
following the Keras and TensorFlow tutorials, with the same model.

    keras.utils.image_dataset_from_directory (70% train, then validation and test halves of
        the other 30%; or a folder's own train/ val/ test/), .cache() (decoded float32
        images in memory), .shuffle(1000), the same augmentation layers as the recipe in a map
        after the cache, prefetch
    imgclf's builder for the model (EfficientNet-Lite0 with ImageNet weights, raw pixels in,
        the same head): the same network, so only the job around it differs
    phase 1: backbone frozen, Adam at the recipe's rate, early stopping (restore best weights)
    phase 2: backbone trainable (batch-norm stays in inference mode: the backbone is called
        with training=False), recompiled at rate × fine_tune_lr_factor
    model.evaluate on the test half, then model.export (a SavedModel)

No calibration, no OOD detector, no parity check, no decoded cache on disk, no run directory:
that is the point of comparing. Each stage is measured in this process with imgclf's own meter
(`training.progress.Meter`, a sampling thread; nothing else of imgclf runs), and the last line
printed is a JSON object: stages, test accuracy, images per split.

    python benchmarks/bare_keras_photos.py FOLDER OUT_DIR --head-epochs 3 --fine-tune-epochs 2
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--config", default="configs/photos_transfer.yaml")
    parser.add_argument("--head-epochs", type=int, default=None)
    parser.add_argument("--fine-tune-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from imgclf.training.progress import Meter

    meter = Meter()
    with meter.stage("prepare"):
        import keras
        import tensorflow as tf

        from imgclf.config import load_config
        from imgclf.models import build_model

        config = load_config(args.config, [f"data.path={args.folder}"])
        head_epochs = args.head_epochs or config.transfer.head_epochs
        fine_epochs = (
            config.transfer.fine_tune_epochs
            if args.fine_tune_epochs is None
            else args.fine_tune_epochs
        )
        keras.utils.set_random_seed(args.seed)
        size = tuple(config.data.image_size)
        batch = config.train.batch_size
        read = {"image_size": size, "batch_size": batch, "seed": args.seed}
        if all(os.path.isdir(os.path.join(args.folder, s)) for s in ("train", "val", "test")):
            # A folder already split (train/ val/ test/): the same test images as imgclf's.
            train_ds, val_ds, test_ds = (
                keras.utils.image_dataset_from_directory(
                    os.path.join(args.folder, part), shuffle=part == "train", **read
                )
                for part in ("train", "val", "test")
            )
        else:
            train_ds, rest = keras.utils.image_dataset_from_directory(
                args.folder, validation_split=0.3, subset="both", **read
            )
            half = int(rest.cardinality()) // 2
            val_ds, test_ds = rest.take(half), rest.skip(half)
        class_names = train_ds.class_names
        a = config.augment
        augment = keras.Sequential(
            [
                keras.layers.RandomFlip(a.flip if a.flip != "none" else "horizontal"),
                keras.layers.RandomZoom(a.zoom),
                keras.layers.RandomTranslation(a.translate, a.translate),
                keras.layers.RandomContrast(a.contrast),
            ]
        )
        autotune = tf.data.AUTOTUNE
        train_ds = (
            train_ds.cache()
            .shuffle(1000, seed=args.seed)
            .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=autotune)
            .prefetch(autotune)
        )
        val_ds = val_ds.cache().prefetch(autotune)
        test_ds = test_ds.prefetch(autotune)
        model = build_model(config, len(class_names))
        backbone = model.get_layer("backbone")
        stop = config.train.early_stopping.patience

    with meter.stage("head"):
        backbone.trainable = False
        model.compile(
            optimizer=keras.optimizers.Adam(config.train.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        early = keras.callbacks.EarlyStopping(patience=stop, restore_best_weights=True)
        model.fit(
            train_ds, validation_data=val_ds, epochs=head_epochs, callbacks=[early], verbose=2
        )

    if fine_epochs:
        with meter.stage("fine_tune"):
            backbone.trainable = True
            for layer in backbone.layers:  # batch-norm stays frozen, as the Keras guide does
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
            rate = config.train.learning_rate * config.transfer.fine_tune_lr_factor
            model.compile(
                optimizer=keras.optimizers.Adam(rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            early = keras.callbacks.EarlyStopping(patience=stop, restore_best_weights=True)
            model.fit(
                train_ds, validation_data=val_ds, epochs=fine_epochs, callbacks=[early], verbose=2
            )

    with meter.stage("evaluation"):
        _, accuracy = model.evaluate(test_ds, verbose=0)
        n_test = sum(int(y.shape[0]) for _, y in test_ds)

    with meter.stage("export"):
        model.export(os.path.join(args.out, "saved_model"), verbose=False)

    report = meter.report()
    meter.close()
    print(json.dumps({**report, "test_accuracy": float(accuracy), "n_test": n_test}))


if __name__ == "__main__":
    main()
