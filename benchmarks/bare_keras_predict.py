"""The tf.data arm of `photo_job.py`'s predict section: classify every JPEG of a folder with a run's
model.keras the way a Keras user would, without imgclf's decoder or command line.

    tf.data.Dataset.list_files -> read_file, decode_jpeg, resize (bilinear) in parallel
    -> batch(32) -> prefetch -> model.predict -> argmax, written as CSV lines

    python benchmarks/bare_keras_predict.py RUN_DIR FOLDER
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    run, folder = sys.argv[1], sys.argv[2]
    import keras
    import tensorflow as tf

    import imgclf.models.layers  # noqa: F401  (registers imgclf's layers for model.keras)

    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    _, height, width, channels = model.input_shape

    def decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=channels)
        return tf.image.resize(image, (height, width)), path

    files = tf.data.Dataset.list_files(os.path.join(folder, "*", "*.jpg"), shuffle=False)
    batches = files.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(32)
    out = sys.stdout
    for images, paths in batches.prefetch(tf.data.AUTOTUNE):
        probs = model.predict_on_batch(images)
        for path, p in zip(paths.numpy(), probs, strict=True):
            out.write(f"{path.decode()},{int(p.argmax())},{float(p.max()):.6f}\n")
    out.flush()


if __name__ == "__main__":
    main()
