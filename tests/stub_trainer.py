"""A stand-in for `python -m imgclf.train` in the job tests: it takes the same
`--config FILE --out RUN` arguments, writes the run's config, one history row and a
progress.json (the shape `training.estimate` writes) per epoch (no TensorFlow, so it starts in a
fraction of a second), and exits. The job's and the queue's logic is what those tests check; a
real child trained through `TrainingJob`, from the Train page's form to the selected run, is
test_app.py's test_train_page_starts_a_job_and_the_new_run_is_selected."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from imgclf import runs

SECONDS_ENV = "STUB_TRAINER_SECONDS"  # wall time per epoch


def command(config_file: Path, run_dir: Path) -> list[str]:
    """The argv `TrainingJob(root, command=...)` runs for one job."""
    return [sys.executable, __file__, "--config", str(config_file), "--out", str(run_dir)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    run = Path(args.out)
    run.mkdir(parents=True)
    shutil.copy(args.config, run / runs.CONFIG)
    epochs = yaml.safe_load(Path(args.config).read_text())["train"]["epochs"]
    rows = []
    seconds = float(os.environ.get(SECONDS_ENV, "0"))
    for epoch in range(1, epochs + 1):
        time.sleep(seconds)
        rows.append(runs.HistoryRow(epoch=epoch, phase="train", loss=1.0 / epoch))
        runs.write_history(run / runs.HISTORY, rows)
        left = (epochs - epoch) * seconds
        progress = {"stage": "training", "remaining_s": left, "ends_at": time.time() + left}
        runs.write_json(run / runs.PROGRESS, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
