"""Reading an encoded image file's header inside a TensorFlow graph, for `graph_decode`.

`inspect` sniffs the format from the first bytes and walks the file's structure (JPEG segments,
PNG chunks, RIFF chunks of WebP, GIF blocks) with bounded `tf.while_loop`s to find what decoding
needs and what decides a refusal: size, bit depth, colour type, transparency, EXIF orientation,
animation. Every read is bounds-checked (`FileBytes`), so no input makes it raise.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from imgclf.images import MAX_PIXELS

# Format codes (the order of the decoder switch in `graph_decode.decode`).
JPEG, PNG, GIF, BMP, WEBP = 0, 1, 2, 3, 4


class FileBytes:
    """Bounds-checked reads of a file's bytes (uint8 [n] as int32): past either end reads 0.
    Kept to few ops per read: the graph is traced at every export."""

    def __init__(self, data: Any) -> None:
        self.data = data
        buf = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
        self.n = tf.shape(buf)[0]
        self.padded = tf.concat([buf, [0]], 0)  # index n reads 0

    def u8(self, i: Any) -> Any:
        i = tf.convert_to_tensor(i, tf.int32)
        return tf.gather(self.padded, tf.where((i >= 0) & (i < self.n), i, self.n))

    def _word(self, i: Any, width: int, big: bool) -> Any:
        i = tf.convert_to_tensor(i, tf.int32)
        digits = self.u8(i[..., None] + tf.range(width))
        weights = [256**k for k in range(width)]
        return tf.reduce_sum(digits * tf.constant(weights[::-1] if big else weights), -1)

    def be(self, i: Any, width: int) -> Any:
        return self._word(i, width, big=True)

    def le(self, i: Any, width: int) -> Any:
        return self._word(i, width, big=False)

    def tag(self, i: Any, text: bytes) -> Any:
        """Whether the bytes at `i` are `text`."""
        i = tf.convert_to_tensor(i, tf.int32)
        inside = (i >= 0) & (i <= self.n - len(text))  # (not i + len: it may wrap around)
        at = tf.where(inside, i, 0)
        return inside & tf.equal(tf.strings.substr(self.data, at, len(text)), text)


def _advance(b: FileBytes, pos: Any, header: int, length: Any) -> Any:
    """The position after a chunk of `length` bytes behind a `header` at `pos`, or the end of
    the file when the length cannot be right (negative, or longer than the file): a hostile
    length never wraps the int32 position around."""
    sane = (length >= 0) & (length <= b.n)
    return tf.where(sane, tf.minimum(pos + header + tf.where(sane, length, 0), b.n), b.n)


def _loop(cond: Any, body: Any, state: tuple, limit: int) -> tuple:
    """tf.while_loop with an iteration cap (a hostile file cannot loop for long)."""
    out = tf.while_loop(
        lambda it, *s: (it < limit) & cond(*s),
        lambda it, *s: (it + 1, *body(*s)),
        (tf.constant(0), *state),
    )
    return tuple(out[1:])


def _orientation(b: FileBytes, tiff: Any) -> Any:
    """The EXIF orientation (1..8; 1 when absent or invalid) of the TIFF structure at `tiff`
    (-1: no EXIF)."""
    little = b.tag(tiff, b"II*\x00")
    big = b.tag(tiff, b"MM\x00*")

    def read(i: Any, width: int) -> Any:
        return tf.where(little, b.le(i, width), b.be(i, width))

    ifd = tiff + read(tiff + 4, 4)
    count = read(ifd, 2)
    index = tf.range(64)  # IFD0 holds a handful of entries; 64 is plenty
    entry = ifd + 2 + 12 * index
    hit = tf.equal(read(entry, 2), 0x0112) & (index < count)
    value = tf.reduce_max(tf.where(hit, read(entry + 8, 2), 0))
    valid = (tiff >= 0) & (little | big) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def _jpeg_header(b: FileBytes) -> tuple[Any, Any, Any, Any, Any]:
    """(height, width, components, precision, EXIF TIFF offset or -1) from the JPEG's segments
    up to its frame header (SOF); height 0 when there is none."""
    sof_markers = tf.constant([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB])
    sof_markers = tf.concat([sof_markers, [0xCD, 0xCE, 0xCF]], 0)

    def body(pos, sof, exif):
        marker = b.u8(pos + 1)
        is_sof = tf.reduce_any(tf.equal(sof_markers, marker))
        is_exif = tf.equal(marker, 0xE1) & b.tag(pos + 4, b"Exif\x00\x00") & (exif < 0)
        standalone = (marker == 0xFF) | (marker == 0x01) | ((marker >= 0xD0) & (marker <= 0xD9))
        step = tf.where(marker == 0xFF, 1, tf.where(standalone, 2, 2 + b.be(pos + 2, 2)))
        return (
            pos + tf.maximum(step, 1),
            tf.where(is_sof & (sof < 0), pos, sof),
            tf.where(is_exif, pos + 10, exif),
        )

    def cond(pos, sof, exif):
        return (pos < b.n) & (sof < 0) & (b.u8(pos) == 0xFF) & (b.u8(pos + 1) != 0xDA)

    _, sof, exif = _loop(cond, body, (tf.constant(2), tf.constant(-1), tf.constant(-1)), 512)
    found = sof >= 0
    height = tf.where(found, b.be(sof + 5, 2), 0)
    width = tf.where(found, b.be(sof + 7, 2), 0)
    components = tf.where(found, b.u8(sof + 9), 0)
    precision = tf.where(found, b.u8(sof + 4), 8)
    return height, width, components, precision, exif


def _png_header(b: FileBytes) -> tuple[Any, ...]:
    """(height, width, bit depth, colour type, tRNS offset, tRNS length, EXIF TIFF offset) from
    the chunks up to IEND (-1 offsets when absent): Pillow also reads an `eXIf` chunk that
    comes after the image data."""

    def body(pos, trns, trns_len, exif):
        length = b.be(pos, 4)
        is_trns = b.tag(pos + 4, b"tRNS")
        is_exif = b.tag(pos + 4, b"eXIf")
        return (
            _advance(b, pos, 12, length),
            tf.where(is_trns, pos + 8, trns),
            tf.where(is_trns, length, trns_len),
            tf.where(is_exif, pos + 8, exif),
        )

    def cond(pos, *_):
        return (pos <= b.n - 8) & ~b.tag(pos + 4, b"IEND")

    start = (tf.constant(8), tf.constant(-1), tf.constant(0), tf.constant(-1))
    # Big PNGs have hundreds of IDAT chunks; each step reads 12 bytes.
    _, trns, trns_len, exif = _loop(cond, body, start, 8192)
    return b.be(20, 4), b.be(16, 4), b.u8(24), b.u8(25), trns, trns_len, exif


def _webp_header(b: FileBytes) -> tuple[Any, Any, Any, Any]:
    """(height, width, animated, EXIF TIFF offset or -1) from the RIFF chunks."""

    def body(pos, h, w, animated, exif):
        size = b.le(pos + 4, 4)
        data = pos + 8
        vp8x = b.tag(pos, b"VP8X")
        vp8 = b.tag(pos, b"VP8 ")
        vp8l = b.tag(pos, b"VP8L")
        h = tf.where(vp8x, 1 + b.le(data + 7, 3), h)
        w = tf.where(vp8x, 1 + b.le(data + 4, 3), w)
        h = tf.where(vp8 & (h == 0), b.le(data + 8, 2) % 16384, h)
        w = tf.where(vp8 & (w == 0), b.le(data + 6, 2) % 16384, w)
        bits = b.le(data + 1, 4)
        h = tf.where(vp8l & (h == 0), 1 + (bits // 16384) % 16384, h)
        w = tf.where(vp8l & (w == 0), 1 + bits % 16384, w)
        flagged = vp8x & tf.not_equal(tf.bitwise.bitwise_and(b.u8(data), 0x02), 0)
        animated = animated | flagged | b.tag(pos, b"ANIM") | b.tag(pos, b"ANMF")
        is_exif = b.tag(pos, b"EXIF") & (exif < 0)
        skip = tf.where(b.tag(data, b"Exif\x00\x00"), 6, 0)
        exif = tf.where(is_exif, data + skip, exif)
        return _advance(b, pos, 8, size + size % 2), h, w, animated, exif

    def cond(pos, *_):
        return pos <= b.n - 8

    zero = tf.constant(0)
    start = (tf.constant(12), zero, zero, tf.constant(False), tf.constant(-1))
    _, h, w, animated, exif = _loop(cond, body, start, 64)
    return h, w, animated, exif


def _gif_header(b: FileBytes) -> dict[str, Any]:
    """The first frame of a GIF: canvas `height`/`width`; `entry`, the offset of the
    transparent colour's palette entry (-1: none, or an index past the colour table);
    `flags_at`, the offset of the graphic control extension's flags (-1: not transparent);
    `end`, where the first frame's image data ends; `covers`, whether that frame fills the
    canvas; `has_table`, whether a colour table applies to it."""

    def table_size(packed):
        return tf.bitwise.left_shift(2, packed % 8)  # entries: 2^(n+1)

    packed = b.u8(10)
    has_global = tf.bitwise.bitwise_and(packed, 0x80) > 0

    def skip_sub_blocks(pos):
        out = _loop(
            lambda p: (p < b.n) & (b.u8(p) != 0), lambda p: (p + 1 + b.u8(p),), (pos,), 65536
        )
        return out[0] + 1

    def body(pos, flags_at, index):
        is_gce = b.u8(pos + 1) == 0xF9
        transparent = is_gce & (tf.bitwise.bitwise_and(b.u8(pos + 3), 1) > 0)
        flags_at = tf.where(transparent, pos + 3, flags_at)
        index = tf.where(transparent, b.u8(pos + 6), index)
        # The loop runs only while pos is at an extension (0x21): skip its sub-blocks.
        return skip_sub_blocks(pos + 2), flags_at, index

    def cond(pos, *_):
        return (pos < b.n) & (b.u8(pos) == 0x21)

    first = 13 + tf.where(has_global, 3 * table_size(packed), 0)
    pos, flags_at, index = _loop(cond, body, (first, tf.constant(-1), tf.constant(0)), 256)
    # The loop stops at the image descriptor (0x2C): its own colour table wins over the global.
    descriptor = b.u8(pos) == 0x2C
    local_packed = b.u8(pos + 9)
    local = descriptor & (tf.bitwise.bitwise_and(local_packed, 0x80) > 0)
    table = tf.where(local, pos + 10, tf.where(has_global, 13, -1))
    entries = tf.where(local, table_size(local_packed), table_size(packed))
    local_bytes = tf.where(local, 3 * table_size(local_packed), 0)
    end = skip_sub_blocks(pos + 11 + local_bytes)  # past the LZW code size and the data
    height, width = b.le(8, 2), b.le(6, 2)
    covers = (
        descriptor
        & (b.le(pos + 1, 2) == 0)
        & (b.le(pos + 3, 2) == 0)
        & (b.le(pos + 5, 2) == width)
        & (b.le(pos + 7, 2) == height)
    )
    usable = (flags_at >= 0) & (table >= 0) & (index < entries)
    return {
        "height": height,
        "width": width,
        "entry": tf.where(usable, table + 3 * index, -1),
        "flags_at": flags_at,
        "end": tf.minimum(end, b.n),
        "covers": covers,
        "has_table": table >= 0,
    }


def inspect(data: Any, side: int) -> tuple[Any, Any, dict[str, Any]]:
    """(format code or -1, refusal reason ("" when the graph can decode it), header facts) for
    one encoded file (a scalar string tensor). Never raises on any input."""
    b = FileBytes(data)
    is_jpeg = b.tag(0, b"\xff\xd8\xff")
    is_png = b.tag(0, b"\x89PNG\r\n\x1a\n")
    is_gif = b.tag(0, b"GIF87a") | b.tag(0, b"GIF89a")
    is_bmp = b.tag(0, b"BM")
    is_webp = b.tag(0, b"RIFF") & b.tag(8, b"WEBP")
    fmt = tf.where(is_jpeg, JPEG, tf.where(is_png, PNG, tf.where(is_gif, GIF, -1)))
    fmt = tf.where(is_bmp, BMP, tf.where(is_webp, WEBP, fmt))
    jh, jw, components, precision, jexif = _jpeg_header(b)
    ph, pw, depth, colour, trns, trns_len, pexif = _png_header(b)
    wh, ww, animated, wexif = _webp_header(b)
    gif = _gif_header(b)
    bh, bw = tf.abs(b.le(22, 4)), b.le(18, 4)
    bmp_depth, bmp_compression = b.le(28, 2), b.le(30, 4)
    pick = lambda *v: tf.gather(tf.stack(v), tf.maximum(fmt, 0))  # noqa: E731
    height, width = pick(jh, ph, gif["height"], bh, wh), pick(jw, pw, gif["width"], bw, ww)
    exif = pick(jexif, pexif, tf.constant(-1), tf.constant(-1), wexif)
    is_tiff = b.tag(0, b"II*\x00") | b.tag(0, b"MM\x00*")
    is_heif = b.tag(4, b"ftyp")
    reasons = [
        (~is_tiff & ~is_heif & (fmt < 0), "not an image TensorFlow can decode"),
        (is_tiff, "TIFF: TensorFlow has no TIFF decoder; use the pixels signature"),
        (is_heif, "HEIC/HEIF/AVIF: TensorFlow has no decoder for it; use the pixels signature"),
        (is_jpeg & (components == 4), "CMYK JPEG: TensorFlow decodes its colours wrongly"),
        (is_jpeg & ~tf.reduce_any(tf.equal(components, [1, 3])), "JPEG with no frame header"),
        (is_jpeg & (precision != 8), "JPEG with 12-bit samples: not decodable by TensorFlow"),
        (is_png & (depth == 16) & (trns >= 0) & (colour == 2), "16-bit PNG with a colour key"),
        (is_bmp & ~tf.reduce_any(tf.equal(bmp_depth, [8, 24, 32])), "BMP with 1/4/16-bit pixels"),
        (is_bmp & (bmp_compression != 0), "compressed BMP: TensorFlow reads uncompressed only"),
        (is_webp & animated, "animated WebP: TensorFlow's decoder cannot read it safely"),
        (is_gif & ~gif["has_table"], "GIF without a colour table"),
        (is_gif & ~gif["covers"], "GIF whose first frame does not fill its canvas"),
        ((fmt >= 0) & ((height < 1) | (width < 1)), "truncated or corrupt image"),
        (
            (fmt >= 0) & (tf.cast(height, tf.int64) * tf.cast(width, tf.int64) > MAX_PIXELS),
            f"too large (limit {MAX_PIXELS:,} pixels)",
        ),
    ]
    reason = tf.constant("")
    for hit, text in reversed(reasons):  # the first listed wins
        reason = tf.where(hit, tf.constant(text), reason)
    facts = {
        "bytes": b,
        "height": height,
        "width": width,
        "orientation": _orientation(b, exif),
        "depth": depth,
        "colour": colour,
        "trns": trns,
        "trns_len": trns_len,
        "gif_entry": gif["entry"],
        "gif_flags_at": gif["flags_at"],
        "gif_end": gif["end"],
        "side": side,
    }
    return fmt, reason, facts
