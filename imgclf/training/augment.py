"""Data augmentation built from `config.augment`: Keras 3 random layers applied to training
batches only, plus a preview CLI that shows what they do.

Augmentation runs in the batch pipeline of the training split (tf.data on the TensorFlow backend,
a NumPy PyDataset on the others; the layers run on the active backend), so evaluation, export and
prediction never see it and the exported model contains none of it.

    python -m imgclf.training.augment --config configs/folder_example.yaml --out grid.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.data.pool import readable_sample
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import UserError

if TYPE_CHECKING:
    from imgclf.schema import AugmentConfig, Config

VALUE_RANGE = (0, 255)  # augmentation sees raw pixels; the model rescales afterwards


class Augmenter:
    """Callable on a batch `(images, one_hot_labels) -> (images, labels)`.

    Image transforms come first; MixUp / CutMix then blend images *and* labels, which is why
    the training labels are one-hot.
    """

    def __init__(self, cfg: AugmentConfig, image_size: tuple[int, int], seed: int = 0) -> None:
        import keras
        from keras import layers

        height, width = image_size
        steps: list[Any] = []
        if cfg.flip != "none":
            steps.append(layers.RandomFlip(cfg.flip, seed=seed))
        if cfg.crop > 0:
            # A random (1-crop) window, stretched back to the input size: "random resized crop".
            size = (max(1, round(height * (1 - cfg.crop))), max(1, round(width * (1 - cfg.crop))))
            steps += [layers.RandomCrop(*size, seed=seed + 1), layers.Resizing(height, width)]
        if cfg.rotation > 0:
            steps.append(layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 2))
        if cfg.zoom > 0:
            steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 3))
        if cfg.translate > 0:
            steps.append(
                layers.RandomTranslation(
                    cfg.translate, cfg.translate, fill_mode="constant", seed=seed + 4
                )
            )
        if cfg.contrast > 0:
            steps.append(
                layers.RandomContrast(cfg.contrast, value_range=VALUE_RANGE, seed=seed + 5)
            )
        if cfg.brightness > 0:
            steps.append(
                layers.RandomBrightness(cfg.brightness, value_range=VALUE_RANGE, seed=seed + 6)
            )
        if cfg.hue > 0:
            steps.append(layers.RandomHue(cfg.hue, value_range=VALUE_RANGE, seed=seed + 7))
        if cfg.saturation > 0:
            steps.append(
                layers.RandomSaturation(cfg.saturation, value_range=VALUE_RANGE, seed=seed + 8)
            )
        if cfg.randaugment > 0:
            steps.append(
                layers.RandAugment(
                    value_range=VALUE_RANGE,
                    num_ops=cfg.randaugment,
                    factor=cfg.randaugment_magnitude,
                    seed=seed + 9,
                )
            )
        self.images = keras.Sequential(steps, name="augment") if steps else None
        self.mix: Any = None
        if cfg.mixup > 0:
            self.mix = layers.MixUp(alpha=cfg.mixup, seed=seed + 10)
        elif cfg.cutmix > 0:
            self.mix = layers.CutMix(factor=cfg.cutmix, seed=seed + 11)

    def __call__(self, images: Any, labels: Any) -> tuple[Any, Any]:
        if self.images is not None:
            images = self.images(images, training=True)
        if self.mix is not None:
            out = self.mix({"images": images, "labels": labels}, training=True)
            images, labels = out["images"], out["labels"]
        return images, labels


def build_augmenter(
    cfg: AugmentConfig, image_size: tuple[int, int], seed: int = 0
) -> Augmenter | None:
    """The training-time augmentation of `cfg`, or None when every transform is off."""
    return Augmenter(cfg, image_size, seed) if cfg.enabled else None


def preview_grid(
    config: Config, n_images: int = 8, n_variants: int = 5
) -> tuple[np.ndarray, list[str]]:
    """(grid float32 [rows, 1 + n_variants, H, W, C] in 0..255, class name per row): training
    images of `config`, each followed by `n_variants` augmented versions (no matplotlib: the
    app shows it as it is)."""
    import keras

    data = config.data.model_copy(update={"audit": "off"})  # a preview: no findings needed
    splits = load_data(config.model_copy(update={"data": data}))
    pixels, labels = readable_sample(splits.train, n_images)  # a corrupt file is skipped
    x = pixels.astype("float32")
    y = np.eye(len(splits.class_names), dtype="float32")[labels]
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    columns = [x]
    for _ in range(n_variants):
        if augmenter is None:
            columns.append(x)
        else:
            columns.append(keras.ops.convert_to_numpy(augmenter(x, y)[0]))
    grid = np.stack(columns, axis=1)  # [rows, 1 + variants, H, W, C]
    return grid, [splits.class_names[c] for c in labels]


def preview(config: Config, out: str | Path, n_images: int = 8, n_variants: int = 5) -> Path:
    """Write a PNG grid: each row one training image, then `n_variants` augmented versions."""
    from imgclf.plots import plot_image_grid

    grid, titles = preview_grid(config, n_images, n_variants)
    plot_image_grid(grid, titles, out, column_titles=["original"] + ["augmented"] * n_variants)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.training.augment [--config C] [key=value ...] --out grid.png`."""
    parser = ArgumentParser(
        prog="imgclf-augment",
        description="Preview the augmentation of a config on its training images.",
    )
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--out", default="augment_preview.png", help="PNG to write")
    parser.add_argument("--images", type=int, default=8, help="training images (rows)")
    parser.add_argument("--variants", type=int, default=5, help="augmented versions per image")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own start-up log lines"
    )
    args = parser.parse_intermixed_args(argv)  # key=value before or after options

    quiet_tensorflow(args.verbose)

    try:
        config = load_config(args.config, args.overrides)
        path = preview(config, args.out, args.images, args.variants)
    except UserError as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
