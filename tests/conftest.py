"""Tiny data made on the fly: 3 classes of 32×32 images that a small model can tell apart."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converted pretrained weights go to a cache of this test session, never the user's ~/.cache.
os.environ.setdefault("IMGCLF_CACHE", tempfile.mkdtemp(prefix="imgclf-test-cache-"))

import numpy as np
import pytest
from PIL import Image


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before anything runs: the two system packages the suite needs are there, or one line
    says how to install them (instead of failures 10 minutes in)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller checks once
    from imgclf.data.builtin import FASHION_MNIST_DEBIAN

    missing = []
    if not (os.environ.get("IMGCLF_CHROMIUM") or shutil.which("chromium")):
        missing.append("chromium")
    if not (FASHION_MNIST_DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file():
        missing.append("dataset-fashion-mnist")
    if missing:
        pytest.exit(
            f"the test suite needs Debian's {' and '.join(missing)}: "
            f"sudo apt-get install {' '.join(missing)} (or set IMGCLF_CHROMIUM to a Chromium)",
            returncode=2,
        )


CLASSES = ("circle", "hstripes", "vstripes")
SIZE = 32


def make_image(cls: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One RGB uint8 image of class `cls`: a bright disc, or horizontal / vertical stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    if cls == "circle":
        cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
        base = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2).astype(np.float32)
    elif cls == "hstripes":
        base = ((yy + rng.integers(0, 4)) // 4 % 2).astype(np.float32)
    else:
        base = ((xx + rng.integers(0, 4)) // 4 % 2).astype(np.float32)
    noise = rng.normal(0, 0.1, size=(size, size, 3))
    pixels = np.clip(base[..., None] * 200 + 30 + noise * 255, 0, 255)
    return pixels.astype(np.uint8)


def write_folder_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """root/<class>/img_XX.(png|jpg): a folder-per-class dataset with mixed formats."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = ".png" if i % 2 == 0 else ".JPG"  # upper-case extension on purpose
            Image.fromarray(make_image(cls, rng)).save(folder / f"img_{i:02d}{ext}")
    return root


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(path)` once per test session, whichever pytest-xdist worker asks first: the
    folder lives beside the workers' own temporary folders, a file lock makes the other workers
    wait and then reuse it (the tests only read it). A build that failed is tried again."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this session
    root = base / "built-once"
    root.mkdir(exist_ok=True)
    target = root / name
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            (root / f"{name}.done").touch()
    return target


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean 3-class folder dataset (12 images per class), shared by every worker."""
    return built_once(tmp_path_factory, "shapes", write_folder_dataset)


def tiny_overrides(data_path: Path) -> list[str]:
    """Overrides that make any recipe tiny: folder data, 32×32 RGB, small widths, 2 epochs."""
    return [
        "name=tiny",
        "data.source=folder",
        f"data.path={data_path}",
        "data.image_size=[32,32]",
        "data.channels=3",
        "data.val_fraction=0.2",
        "data.test_fraction=0.25",
        "model.filters=[4,8]",
        "model.hidden=[16]",
        "augment.rotation=0",
        "augment.zoom=0",
        "augment.translate=0",
        "train.epochs=2",
        "train.batch_size=8",
        "train.learning_rate=0.01",
        # Off for speed (a second or two per run): tiny_run, app_runs and the fault tests switch
        # it back on, so the diagnostics, their plots and the app's pages are still exercised.
        "train.diagnostics=false",
        # Off for speed too (the SavedModel and its format check, ~3 s per run): tiny_run,
        # app_runs and every export test train with it on.
        "train.export=false",
        # Off for speed (0.25 CPU-s of scikit-learn fits per load, ~150 loads in the suite):
        # tiny_run switches it back on; test_review.py and test_audit.py prove the checks.
        "data.audit=off",
    ]


@pytest.fixture(scope="session")
def tiny_run(folder_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training run on the tiny dataset, shared by export/predict tests (read-only)."""
    from imgclf.config import load_config
    from imgclf.train import train

    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), "train.diagnostics=auto", "train.export=true",
         "data.audit=pixels"],
    )  # fmt: skip
    return built_once(tmp_path_factory, "tiny", lambda out: train(config, out=out, verbose=0))


@pytest.fixture(scope="session")
def exported_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny run with every export: `imgclf-export --format all`
    (SavedModel, TFLite float32, ONNX; what it printed is `export-all.out` beside the run), then
    `--format tflite --quantize int8`. Built once for both workers; the tests only read it."""

    def build(run: Path) -> None:
        shutil.copytree(tiny_run, run)
        done = run_command("imgclf-export", run, "--format", "all")
        assert done.returncode == 0, done.stderr
        (run.parent / "export-all.out").write_text(done.stdout)
        int8 = run_command("imgclf-export", run, "--format", "tflite", "--quantize", "int8")
        assert int8.returncode == 0, int8.stderr

    return built_once(tmp_path_factory, "exported", build)


@pytest.fixture(scope="session")
def app_runs(tiny_run: Path, folder_dataset: Path, tmp_path_factory) -> Path:
    """A runs root with two real runs: a copy of the session's tiny cnn run (no augmentation),
    and a tiny mlp trained here with augmentation on (flip and rotation: the Data page's
    augmentation preview), the newest, so the app selects it first. (A run trained through
    the app's TrainingJob child process, from the Train page's form to the selected run, is
    test_app.py's test_train_page_starts_a_job_and_the_new_run_is_selected.)"""
    from imgclf.config import load_config
    from imgclf.train import train

    def build(root: Path) -> None:
        root.mkdir()
        shutil.copytree(tiny_run, root / "tiny-cnn")
        config = load_config(
            None,
            [
                *tiny_overrides(folder_dataset),
                "name=tiny-mlp",
                "model.name=mlp",
                "augment.flip=horizontal",
                "augment.rotation=0.1",
                "train.diagnostics=auto",
                "train.export=true",
            ],
        )
        train(config, out=root / "tiny-mlp-20260101-000000", verbose=0)

    return built_once(tmp_path_factory, "app-runs", build)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive (in memory) holding `members`: name inside the zip -> bytes."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def refuse_to_read(monkeypatch, folder: Path) -> None:
    """Make `folder` unreadable as a permission error would (the suite may run as root, for
    whom chmod 000 does not stop a read), leaving every other folder alone."""
    for name in ("scandir", "listdir"):  # Path.iterdir reads through one or the other
        real = getattr(os, name)

        def refused(path=".", _real=real):
            if Path(path).resolve() == folder.resolve():
                raise PermissionError(13, "Permission denied", str(path))
            return _real(path)

        monkeypatch.setattr(os, name, refused)


@dataclass
class Done:
    """What a command did: its exit code and what it printed (as subprocess.CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def run_command(command: str, *args: object) -> Done:
    """An installed console script (`imgclf-train`, `imgclf-predict`, ...) run in this process
    through its entry point, with what it printed. An exception that escapes it fails the test,
    which is stronger than checking a child's stderr for "Traceback". Tests whose point is a
    fresh process (a kill, a signal, "never imports imgclf") spawn one instead."""
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="console_scripts", name=command)
    out, err = io.StringIO(), io.StringIO()
    sigterm = signal.getsignal(signal.SIGTERM)  # imgclf-train installs its own handler
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry.load()([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    return Done(int(code or 0), out.getvalue(), err.getvalue())


@pytest.fixture
def copied_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "copy"
    shutil.copytree(tiny_run, run)
    return run


# Test files in the order of their measured cost (most first; `--durations`, 2026-12-06), the
# rest after them in their usual order. The long end-to-end tests then start while both workers
# are fresh instead of ending the run on one worker; a file's tests stay together, so its
# module fixtures are built once.
COSTLY_FIRST = (
    "test_faults.py", "test_efficientnet_lite.py", "test_browser.py", "test_distribute.py",
    "test_backends.py", "test_app.py", "test_labs.py", "test_formats.py", "test_export.py",
    "test_transfer.py", "test_models.py", "test_configs.py", "test_data_page.py",
    "test_confidence.py", "test_data.py", "test_train.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(COSTLY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


@pytest.fixture(scope="session")
def exported(exported_run: Path, folder_dataset: Path, tmp_path_factory) -> dict[str, Path]:
    """An RGB run (the session's tiny run with every export) and a grey one trained here with
    `normalize: standardize` (what ONNX export used to crash on). Training wrote and checked
    each one's SavedModel; `imgclf-export` adds TFLite and ONNX. Built once per test session
    and shared by the pytest-xdist workers (the tests only read them)."""
    from imgclf.config import load_config
    from imgclf.train import train

    def build(grey: Path) -> None:
        overrides = ["data.channels=1", "data.normalize=standardize", "train.export=true"]
        config = load_config(None, [*tiny_overrides(folder_dataset), *overrides])
        train(config, out=grey, verbose=0)
        done = run_command("imgclf-export", grey, "--format", "tflite", "onnx")
        assert done.returncode == 0, done.stderr

    return {"rgb": exported_run, "grey": built_once(tmp_path_factory, "grey-exported", build)}
