"""The `serve_bytes` signature's decoding: a batch of encoded image files -> pixels and a status
per file, with `graph_decode` inside `tf.data` so that one file the decoder rejects is reported
instead of failing the whole batch. Imports TensorFlow only when called."""

from __future__ import annotations

from typing import Any

STATUS_OK = "ok"
UNDECODABLE = "truncated or corrupt image (TensorFlow's decoder failed)"


_DECODERS: dict[tuple[int, int, int], Any] = {}


def batch_decoder(height: int, width: int, channels: int) -> Any:
    """`decode_batch` as a tf.function with a fixed signature, one per input shape and process:
    the graph decoder is most of an export's time, and it does not depend on the model, so it
    is traced once (the export traces serve_bytes twice; the tests export dozens of runs)."""
    import tensorflow as tf

    key = (height, width, channels)
    if key not in _DECODERS:
        _DECODERS[key] = tf.function(
            lambda images: decode_batch(images, height, width, channels),
            input_signature=[tf.TensorSpec([None], tf.string)],
            autograph=False,
        )
    return _DECODERS[key]


def decode_batch(images: Any, height: int, width: int, channels: int) -> tuple[Any, Any]:
    """(pixels float32 [N, height, width, channels], status string [N]) for encoded files
    string [N]: each decoded by `graph_decode`, inside `tf.data` so that a file the decoder
    rejects is dropped by `ignore_errors` and reported, instead of failing the whole batch."""
    import tensorflow as tf

    from imgclf.export import graph_decode

    n = tf.shape(images)[0]
    zeros = tf.zeros([height, width, channels])

    def one(index: tf.Tensor, data: tf.Tensor):
        fmt, reason, facts = graph_decode.inspect(data, max(height, width))
        pixels = tf.cond(
            tf.equal(reason, ""),
            lambda: graph_decode.decode(fmt, facts, height, width, channels),
            lambda: zeros,
        )
        return index, pixels, reason

    slices = tf.data.Dataset.from_tensor_slices((tf.range(n), images))
    one = tf.autograph.experimental.do_not_convert(one)  # plain graph code: no conversion
    decoded = slices.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    decoded = decoded.ignore_errors()
    # One sentinel element, so the batch below exists even when every file failed.
    sentinel = tf.data.Dataset.from_tensors((tf.constant(-1), zeros, tf.constant("")))
    everything = decoded.concatenate(sentinel).batch(tf.cast(n, tf.int64) + 1)
    index, pixels, reasons = everything.get_single_element()
    keep = index >= 0
    where = tf.boolean_mask(index, keep)[:, None]
    pixels = tf.scatter_nd(where, tf.boolean_mask(pixels, keep), [n, height, width, channels])
    reasons = tf.boolean_mask(reasons, keep)
    reasons = tf.where(tf.equal(reasons, ""), STATUS_OK, reasons)
    status = tf.tensor_scatter_nd_update(tf.fill([n], UNDECODABLE), where, reasons)
    return pixels, status
