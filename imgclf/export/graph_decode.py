"""`images.load_image` rebuilt from TensorFlow graph ops, for the SavedModel's `serve_bytes`.

A served model gets encoded files and no Python: the graph must sniff the format, read what the
header says (size, bit depth, colour type, transparency, EXIF orientation), decode, and turn the
result into the pixels `load_image` gives, so that the deployed model answers like `Predictor`.
What it does, in `load_image`'s order:

- formats: JPEG (and MPO camera files: their first picture), PNG, GIF (first frame), BMP
  (8-bit palette, 24- and 32-bit uncompressed) and still WebP. TIFF, HEIC/HEIF, AVIF, CMYK or
  12-bit JPEG, 1/4/16-bit or compressed BMP and animated WebP are *refused per image* with a
  reason: TensorFlow has no decoder for them (its WebP decoder crashes the process on animated
  files, so they never reach it);
- JPEG decodes at 1/2, 1/4 or 1/8 scale exactly when Pillow's `draft` would (same libjpeg DCT
  scaling, `INTEGER_ACCURATE` like Pillow: bit-identical pixels);
- EXIF orientation is read from the JPEG APP1 segment, the PNG `eXIf` chunk or the WebP `EXIF`
  chunk (string and gather ops over the file's bytes) and applied before anything else;
- alpha (RGBA, grey+alpha, palette and grey/RGB `tRNS` transparency, GIF transparent colour) is
  composited over white; 16-bit grey PNG is scaled by 257 and rounded, 16-bit colour keeps its
  high byte, both as Pillow and `load_image` do;
- grey is ITU-R 601 luma in Pillow's 16-bit fixed point; resizing is Pillow's bilinear with
  `reducing_gap=3` (box-reduce by an integer factor, then a triangle filter scaled to the
  shrink, one axis at a time with rounding in between).

Measured against `load_image` on the generated corpus (tests/test_formats.py): the same pixels,
or within 1 grey level where Pillow rounds in fixed point.

Every read of the file's bytes is bounds-checked (an index past the end reads 0), so a garbled
header gives a refusal, never an error; a body that the decoder itself rejects is caught by the
caller (`serve_bytes` runs the decoder inside `tf.data` with `ignore_errors`).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from imgclf.export.graph_header import FileBytes, inspect

__all__ = ["decode", "inspect"]

_REDUCING_GAP = 3.0
_ALL_BYTES = bytes(range(256))


def _byte(value: Any) -> Any:
    """A one-byte string holding `value` (0..255)."""
    return tf.strings.substr(tf.constant(_ALL_BYTES), value, 1)


def _patch(data: Any, at: Any, replacement: Any, length: int) -> Any:
    rest = tf.strings.substr(data, at + length, tf.int32.max)
    return tf.strings.join([tf.strings.substr(data, 0, at), replacement, rest])


def _rgba(image: Any) -> Any:
    """uint8 [h, w, 1|2|3|4] -> uint8 [h, w, 4] (grey replicated, opaque alpha added). Plain
    tensor ops, no branches: every branch is a function to trace at every export."""
    c = tf.shape(image)[2]
    padded = tf.pad(image, [[0, 0], [0, 0], [0, tf.maximum(4 - c, 0)]])[..., :4]
    rgb = tf.where(c >= 3, padded[..., :3], tf.tile(padded[..., :1], [1, 1, 3]))
    opaque = tf.fill(tf.shape(padded[..., :1]), tf.constant(255, tf.uint8))
    alpha = tf.where(c == 2, padded[..., 1:2], tf.where(c == 4, padded[..., 3:4], opaque))
    return tf.concat([rgb, alpha], 2)


def _decode_jpeg(b: FileBytes, height: Any, width: Any, side: int) -> Any:
    """RGB decode at the DCT scale Pillow's `draft(mode, (side, side))` picks."""
    scale = tf.minimum(width // side, height // side)
    branch = tf.where(scale >= 8, 3, tf.where(scale >= 4, 2, tf.where(scale >= 2, 1, 0)))

    def at(ratio: int):
        return lambda: tf.io.decode_jpeg(
            b.data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    return _rgba(tf.switch_case(branch, [at(1), at(2), at(4), at(8)]))


def _decode_png(b: FileBytes, depth: Any, colour: Any, trns: Any, trns_len: Any) -> Any:
    def sixteen():
        wide = tf.cast(tf.io.decode_png(b.data, channels=0, dtype=tf.uint16), tf.int32)
        # Grey: scaled with rounding (images._to_l_or_rgb); colour: Pillow keeps the high byte.
        grey = tf.cast((wide + 128) // 257, tf.uint8)
        return _rgba(tf.where(colour == 0, grey, tf.cast(wide // 256, tf.uint8)))

    image = tf.cond(depth == 16, sixteen, lambda: _rgba(tf.io.decode_png(b.data, channels=0)))
    # A tRNS colour key on grey or RGB 8-bit data: those pixels are transparent.
    key_grey = b.be(trns, 2)
    key_rgb = tf.stack([b.be(trns + 2 * k, 2) for k in range(3)])
    rgb = tf.cast(image[..., :3], tf.int32)
    match = tf.where(
        colour == 0, tf.equal(rgb[..., 0], key_grey), tf.reduce_all(tf.equal(rgb, key_rgb), -1)
    )
    keyed = (trns >= 0) & (depth <= 8) & (((colour == 0) & (trns_len >= 2)) | (colour == 2))
    alpha = tf.where(keyed & match, tf.constant(0, tf.uint8), image[..., 3])
    return tf.concat([image[..., :3], alpha[..., None]], 2)


def _decode_gif(b: FileBytes, entry: Any, flags_at: Any, end: Any) -> Any:
    """The first frame only: the file is cut after that frame's data and closed with the GIF
    trailer (";"), so a long animation is never decoded whole (TensorFlow's decoder returns
    every frame). A transparent colour becomes white (the composite over white) by writing
    white into its palette entry and clearing the transparency flag before decoding; a
    transparent index past the colour table only loses its flag (no pixel can use it)."""
    first = tf.strings.join([tf.strings.substr(b.data, 0, end), ";"])
    white = _patch(first, tf.where(entry >= 0, entry, 0), tf.constant(b"\xff\xff\xff"), 3)
    white = tf.where(entry >= 0, white, first)
    flags = tf.bitwise.bitwise_and(b.u8(flags_at), 0xFE)
    cleared = _patch(white, tf.where(flags_at >= 0, flags_at, 0), _byte(flags), 1)
    data = tf.where(flags_at >= 0, cleared, white)
    return _rgba(tf.io.decode_gif(data)[0])


def _decode_bmp(b: FileBytes) -> Any:
    """8-bit BMPs hold palette indices (TensorFlow returns them raw): looked up here. 32-bit
    uncompressed BMPs are opaque RGB to Pillow (the fourth byte is padding): alpha dropped."""
    image = tf.io.decode_bmp(b.data, channels=0)
    depth = b.le(28, 2)
    table = 14 + b.le(14, 4)
    colours = tf.where(b.le(46, 4) > 0, b.le(46, 4), 256)
    index = tf.range(256)
    bgr = tf.stack([b.u8(table + 4 * index + k) for k in (2, 1, 0)], 1)
    bgr = tf.where((index < colours)[:, None], bgr, 0)
    paletted = tf.cast(tf.gather(bgr, tf.cast(image[..., 0], tf.int32)), tf.uint8)
    return tf.where(depth == 8, _rgba(paletted), _rgba(image[..., :3]))


def _transpose(image: Any, orientation: Any) -> Any:
    """Apply EXIF orientation 1..8 as PIL.ImageOps.exif_transpose does: 5..8 swap the axes
    (a transpose), then a left-right and/or up-down flip (2: LR, 3: both, 4: UD, 5: none,
    6: LR, 7: both, 8: UD)."""
    swap = orientation >= 5
    image = tf.transpose(image, tf.where(swap, [1, 0, 2], [0, 1, 2]))
    lr = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    ud = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.where(lr, tf.reverse(image, [1]), image)
    return tf.where(ud, tf.reverse(image, [0]), image)


def _flatten(rgba: Any, channels: int) -> Any:
    """uint8 RGBA -> int32 [h, w, channels]: alpha over white, then ITU-R 601 luma for grey."""
    pixels = tf.cast(rgba, tf.int32)
    alpha = pixels[..., 3:4]
    rgb = (pixels[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    if channels == 3:
        return rgb
    luma = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768
    return tf.bitwise.right_shift(luma, 16)[..., None]


def _resize(pixels: Any, height: int, width: int) -> Any:
    """Pillow's `resize((width, height), BILINEAR, reducing_gap=3)` on int pixels -> float32."""
    image = tf.cast(pixels, tf.float32)[None]
    h, w = tf.shape(pixels)[0], tf.shape(pixels)[1]
    fy = tf.maximum(tf.cast(tf.cast(h, tf.float32) / height / _REDUCING_GAP, tf.int32), 1)
    fx = tf.maximum(tf.cast(tf.cast(w, tf.float32) / width / _REDUCING_GAP, tf.int32), 1)

    def reduce():
        # Box average over fy×fx blocks; a partial block at the edge averages what it has.
        ph, pw = (-h) % fy, (-w) % fx
        pad = [[0, 0], [0, ph], [0, pw], [0, 0]]
        total = tf.pad(image, pad)
        count = tf.pad(tf.ones_like(image[..., :1]), pad)
        rows, cols = (h + ph) // fy, (w + pw) // fx

        def blocks(x):
            x = tf.reshape(x, [rows, fy, cols, fx, tf.shape(x)[3]])
            return tf.reduce_sum(x, [1, 3])[None]

        return tf.floor(blocks(total) / blocks(count) + 0.5)

    reduced = reduce()  # factor 1 × 1 is the identity
    box_h = tf.cast(h, tf.float32) / tf.cast(fy, tf.float32)
    box_w = tf.cast(w, tf.float32) / tf.cast(fx, tf.float32)
    rows = tf.shape(reduced)[1]

    def along(x, size, scale):
        out = tf.raw_ops.ScaleAndTranslate(
            images=x,
            size=size,
            scale=scale,
            translation=tf.zeros([2]),
            kernel_type="triangle",
            antialias=True,
        )
        return tf.clip_by_value(tf.floor(out + 0.5), 0.0, 255.0)

    # At scale 1 the triangle filter weighs only the pixel itself: an axis already at its
    # size passes through unchanged, so both passes always run (no branch to trace).
    across = along(reduced, tf.stack([rows, width]), tf.stack([1.0, width / box_w]))
    down = along(across, tf.constant([height, width]), tf.stack([height / box_h, 1.0]))
    return down[0]


def decode(fmt: Any, facts: dict[str, Any], height: int, width: int, channels: int) -> Any:
    """float32 [height, width, channels] pixels (whole levels 0..255) of a file `inspect`
    accepted. May raise (inside tf.data: dropped by ignore_errors) on a corrupt body."""
    b = facts["bytes"]
    rgba = tf.switch_case(
        fmt,
        [
            lambda: _decode_jpeg(b, facts["height"], facts["width"], facts["side"]),
            lambda: _decode_png(
                b, facts["depth"], facts["colour"], facts["trns"], facts["trns_len"]
            ),
            lambda: _decode_gif(b, *(facts[k] for k in ("gif_entry", "gif_flags_at", "gif_end"))),
            lambda: _decode_bmp(b),
            lambda: _rgba(tf.io.decode_webp(b.data, channels=0)[0]),
        ],
    )
    rgba = _transpose(rgba, facts["orientation"])
    return tf.ensure_shape(
        _resize(_flatten(rgba, channels), height, width), [height, width, channels]
    )
