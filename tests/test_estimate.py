"""The time-left estimate (training.estimate): its arithmetic is the documented model, it only
falls as measured epochs replace guesses, and it reaches progress.json."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from imgclf import runs
from imgclf.training.estimate import EXPORT_S, FINE_TUNE_COST, Estimate, JobShape, PhaseShape


def _shape() -> JobShape:
    phases = [PhaseShape("head", 3, 1.0), PhaseShape("fine_tune", 2, FINE_TUNE_COST)]
    return JobShape(phases, n_train=100, n_val=20, n_test=20, steps=4, n_fit=100, n_parity=20)


def test_the_estimate_follows_its_documented_model(tmp_path: Path):
    estimate = Estimate(tmp_path, _shape(), time.perf_counter(), verbose=0)
    estimate.phase = "head"
    assert estimate.remaining() is None  # nothing measured: no figure at all
    estimate.observe_forward(20, 2.0)  # 0.1 s per image in inference mode
    head_epoch = 0.1 * (1.0 * 100 + 20)
    fine_tune = 2 * 0.1 * (FINE_TUNE_COST * 100 + 20)
    finish = 0.1 * (100 + 20 + 20 + 2 * 20) + EXPORT_S
    assert estimate.remaining() == pytest.approx(3 * head_epoch + fine_tune + finish)
    # A measured epoch replaces the guess, and one epoch fewer is left.
    estimate.shape.phases[0].done, estimate.shape.phases[0].epoch_s = 1, [10.0]
    assert estimate.remaining() == pytest.approx(2 * 10.0 + fine_tune + finish)
    # In the last phase only its own epochs and the end of the run are left.
    estimate.phase = "fine_tune"
    estimate.shape.phases[1].done, estimate.shape.phases[1].epoch_s = 1, [30.0]
    assert estimate.remaining() == pytest.approx(30.0 + finish)
    estimate.report("training", estimate.remaining())
    progress = runs.read_json(tmp_path / runs.PROGRESS)
    assert progress["remaining_s"] == pytest.approx(30.0 + finish, abs=0.1)
    assert progress["epochs_done"] == {"head": 1, "fine_tune": 1}
    assert progress["ends_at"] > time.time()


def test_a_cached_head_phase_counts_no_backbone_pass_per_epoch(tmp_path: Path):
    """On cached features (plain or augmented views) an epoch of the head phase is the head's
    steps alone: no validation forward pass through the backbone is added per epoch."""
    phases = [PhaseShape("head", 15, 0.0, once=4), PhaseShape("fine_tune", 2, FINE_TUNE_COST)]
    shape = JobShape(phases, n_train=100, n_val=20, n_test=20, steps=4, n_fit=0, n_parity=0)
    estimate = Estimate(tmp_path, shape, time.perf_counter(), verbose=0)
    estimate.phase = "head"
    estimate.observe_forward(400, 40.0)  # the 4 views: 0.1 s per image
    estimate.batch_s = 0.01  # a step of the head alone
    fine_tune = 2 * 0.1 * (FINE_TUNE_COST * 100 + 20)
    assert estimate.remaining() == pytest.approx(15 * 0.01 * 4 + fine_tune + 0.1 * 40)
