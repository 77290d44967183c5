"""What the app keeps across reruns and sessions: the cached Predictor per run and the training
job of the runs folder (`st.cache_resource`; the job itself lives on disk, see ui/jobs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from imgclf import runs
from imgclf.images import png_bytes
from imgclf.predict.predictor import Predictor, classify_named
from imgclf.ui.catalog import runs_root
from imgclf.ui.jobs import TrainingJob


def uploads(value: object) -> list:
    """The files an uploader or camera widget holds (one, a list, or None), read from session
    state in an `on_change` callback: Streamlit leaves a `DeletedFile` there for a file removed
    with its × or dropped on a page switch (it has no bytes), and those are skipped."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    return [item for item in items if hasattr(item, "getvalue")]


@st.cache_resource(max_entries=4, show_spinner=False)  # the page shows its own
def _predictor(path: str, stamp: float) -> Predictor:
    # `stamp` (the manifest's time) makes a re-exported or re-trained run load afresh.
    predictor = Predictor.from_path(path)  # traced and warmed up once, here
    # One image through the whole path (decode, forward) so the user's first is not slower.
    blank = np.zeros((*predictor.image_size, predictor.channels), np.uint8)
    classify_named(predictor, [("warm-up", png_bytes(blank))])
    return predictor


def predictor_for(run_dir: Path) -> Predictor:
    """The run's Predictor (model.keras), loaded once per server and run."""
    manifest = run_dir / runs.MANIFEST
    stamp = manifest.stat().st_mtime if manifest.is_file() else 0.0
    return _predictor(str(run_dir), stamp)


@st.cache_resource
def _job(root: str) -> TrainingJob:
    return TrainingJob(root)


def training_job(root: str | Path | None = None) -> TrainingJob:
    """The training job of the runs folder `root` (default: the app's runs root), shared by
    every browser session of this server."""

    return _job(str(Path(root) if root is not None else runs_root()))
