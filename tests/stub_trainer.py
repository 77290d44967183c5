"""A stand-in for `python -m imgclf.train` in the job-queue tests: it takes the same
`--config FILE --out RUN` arguments, writes the run's config and one history row per epoch (no
TensorFlow, so it starts in a fraction of a second), and exits. The queue's logic is what those
tests check; a real child trained through `TrainingJob` is the `app_runs` fixture."""

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
    for epoch in range(1, epochs + 1):
        time.sleep(float(os.environ.get(SECONDS_ENV, "0")))
        rows.append(runs.HistoryRow(epoch=epoch, phase="train", loss=1.0 / epoch))
        runs.write_history(run / runs.HISTORY, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
