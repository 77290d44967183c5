"""Every recipe shipped under configs/ (lessons included) trains end to end and completes.

Each recipe runs as written (its model, optimizer, schedule, augmentation, diagnostics,
transfer schedule) with a few things made small so the whole set fits the suite: one epoch per
phase, batches of at most 16, ImageNet backbones at 32×32 (their least side), a few images per
class of the recipe's own source (`_few_per_class`, applied to the source's pool before the
split, so the split, the cap and the decoder all run as usual), and no export (the exporters are
proven by test_export.py and test_efficientnet_lite.py). Each trains in a forked child
(`train_recipe`). A recipe that trains into degenerate features
(configs/lessons/init_zeros.yaml) must still complete, with the detector it could not fit
skipped and its reason given (it ended in a LinAlgError after all the training before).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import forked
import numpy as np
import pytest

from imgclf import runs
from imgclf.config import load_config
from imgclf.data import split as data_split

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The few-shot transfer recipe re-uses the pre-training run: one test trains the pair.
PAIR = ("pretrain_mnist_0to4.yaml", "transfer_mnist_5to9_few_shot.yaml")
RECIPES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml") if p.name not in PAIR)
SMALL = ["train.epochs=1", "transfer.head_epochs=1", "transfer.fine_tune_epochs=1"]
SMALL += ["train.export=false"]
PER_CLASS = 8  # images per class and per part of the source's own split


def _few_per_class(pool: data_split.Pool, cfg) -> data_split.Pool:
    """The first PER_CLASS images of each class in each part of the source's own split, or as
    many as the recipe's split fractions need to give each class a validation and a test image
    (a folder source is the suite's 36-image dataset already and is kept whole)."""
    if pool.store is not None:
        return pool
    parts = pool.assigned if pool.assigned is not None else np.zeros(len(pool.labels), np.int8)
    need = max(PER_CLASS, data_split.minimum_per_class(cfg.val_fraction, cfg.test_fraction))
    keep = np.sort(
        np.concatenate(
            [
                np.flatnonzero((parts == part) & (pool.labels == cls))[
                    : PER_CLASS if part == data_split.TEST else need
                ]
                for part in np.unique(parts)
                for cls in np.unique(pool.labels)
            ]
        )
    )
    return dataclasses.replace(
        pool,
        images=pool.images[keep],
        labels=pool.labels[keep],
        files=None if pool.files is None else [pool.files[i] for i in keep],
        assigned=None if pool.assigned is None else pool.assigned[keep],
        failed=None if pool.failed is None else pool.failed[keep],
    )


def train_recipe(recipe: str, out: str, *overrides: str) -> None:
    """Train `recipe` small (SMALL, `_few_per_class`), in the forked child of `_train`. One
    TensorFlow thread and eager execution: the child is one of two running side by side on two
    cores, and tracing each recipe's graph costs more than its few steps (each model family is
    trained in graph mode by test_models.py and the end-to-end tests)."""
    import tensorflow as tf

    from imgclf.train import train

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.run_functions_eagerly(True)
    real = data_split.load_pool
    data_split.load_pool = lambda cfg: _few_per_class(real(cfg), cfg)
    # the multi-label set (not a pool of classes): its first 300 pictures
    from imgclf.data import multilabel

    pictures = multilabel.multimnist_arrays
    multilabel.multimnist_arrays = lambda: tuple(part[:300] for part in pictures())
    config = load_config(CONFIGS / recipe, [*SMALL, *overrides])
    smaller = []
    if config.train.batch_size == "full" or config.train.batch_size > 16:  # few images
        smaller.append("train.batch_size=16")
    if config.model.name.startswith("efficientnet"):  # ImageNet backbones: their least side
        smaller.append("data.image_size=[32,32]")
    if smaller:
        config = load_config(CONFIGS / recipe, [*SMALL, *overrides, *smaller])
    train(config, out=out, verbose=0)


def _train(recipe: str, out: Path, *overrides: str) -> dict:
    done = forked.run(
        "import sys, test_configs; test_configs.train_recipe(*sys.argv[1:])",
        recipe,
        out,
        *overrides,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    state = runs.read_state(out)
    assert state.complete, (recipe, state)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_recipe_trains_to_a_complete_run(
    recipe: str, folder_dataset: Path, tmp_path: Path
):
    folder = (
        [f"data.path={folder_dataset}"]
        if "source: folder" in (CONFIGS / recipe).read_text()
        else []
    )
    metrics = _train(recipe, tmp_path / "run", *folder)
    if recipe == "lessons/init_zeros.yaml":
        # Every unit computes the same feature: the detector cannot be fitted and says why.
        assert metrics["ood"]["skipped"]


@pytest.mark.slow
def test_the_few_shot_transfer_recipe_trains_on_its_pre_training_run(tmp_path: Path):
    _train(PAIR[0], tmp_path / "pretrain")
    _train(PAIR[1], tmp_path / "transfer", f"model.weights={tmp_path / 'pretrain'}")
