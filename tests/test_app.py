"""The Streamlit app through `streamlit.testing.v1.AppTest` (the real app script, real runs made
by tiny trainings in this session), and the training job it starts."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import zip_bytes
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgclf import runs
from imgclf.config import load_config
from imgclf.ui import catalog
from imgclf.ui.jobs import JobBusy, TrainingJob, estimate_text

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = (
    "Classify",
    "Data",
    "Training curves",
    "Evaluation",
    "Compare",
    "Lessons",
    "Model",
    "Train",
)


def _app(monkeypatch, root: Path) -> AppTest:
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    return AppTest.from_file(APP, default_timeout=120).run()


def _walk(node):
    """Every element of an AppTest tree (`at.get` only sees the top level)."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _start_button(at: AppTest):
    """The Train form's submit button (the dataset builder's buttons come first)."""
    return next(b for b in at.button if b.label == "Start training")


def _png(run: Path) -> bytes:
    return sorted((run / runs.SAMPLES).glob("*.png"))[0].read_bytes()


@pytest.mark.slow  # every page of every run
def test_every_page_renders_for_every_run(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    listed = at.sidebar.selectbox(key="run").options
    builtin = [str(e.path) for e in catalog.builtin_entries()]
    assert len(listed) == 2 + len(builtin)  # + the ImageNet classifiers
    # The built-in classifiers share one code path: the first (Lite0) stands for the others.
    for run in [o for o in listed if o not in builtin[1:]]:
        at.sidebar.selectbox(key="run").set_value(run).run()
        for page in PAGES:
            at.sidebar.radio(key="page").set_value(page).run()
            assert not at.exception, (page, run, [e.value for e in at.exception])
            assert at.title[0].value.startswith(page.split()[0])


def test_switching_runs_changes_the_shown_metrics(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    at.sidebar.radio(key="page").set_value("Evaluation").run()
    shown = {}
    for entry in catalog.list_runs(app_runs):
        at.sidebar.selectbox(key="run").set_value(str(entry.path)).run()
        metrics = runs.read_json(entry.path / runs.METRICS)["test"]
        values = {m.label: m.value for m in at.metric}
        assert values["Test accuracy"] == f"{metrics['accuracy']:.4f}"
        # 3 classes, k = 3: top-3 accuracy is always 1, so it is not shown.
        assert metrics["k"] == 3 and not [label for label in values if label.startswith("Top-")]
        assert values["Cross-entropy"] == f"{metrics['loss']:.4f}"
        shown[entry.name] = values["Cross-entropy"]
    assert len(set(shown.values())) == 2, shown  # two runs, two different figures


def test_runs_are_listed_newest_first_with_family_and_accuracy(app_runs: Path):
    entries = catalog.list_runs(app_runs)
    assert [e.created for e in entries] == sorted((e.created for e in entries), reverse=True)
    assert {e.family for e in entries} == {"cnn", "mlp"}
    for e in entries:
        acc = runs.read_json(e.path / runs.METRICS)["test"]["accuracy"]
        assert e.test_accuracy == acc and f"acc {acc:.3f}" in e.label


def test_uploads_are_classified_and_a_bad_one_is_named(monkeypatch, app_runs: Path):
    from imgclf.predict.predictor import Predictor

    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    labels = runs.read_labels(run)
    good = _png(run)
    at.file_uploader[0].set_value(
        [("good.png", good, "image/png"), ("garbage.png", b"not an image at all", "image/png")]
    ).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["garbage.png: not an image"]
    (shown,) = [m.value for m in at.markdown if m.value.startswith("**")]
    label = shown.split("**")[1]
    assert label in labels
    expected, _ = Predictor.from_path(run).predict_files([good])
    assert label == expected[0].label
    table = at.dataframe[0].value
    assert list(table["image"]) == ["good.png"] and table["latency_ms"].iloc[0] > 0


def test_invert_switch_classifies_the_negative(monkeypatch, app_runs: Path):
    from imgclf.predict.predictor import Predictor

    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    pixels = np.asarray(Image.open(io.BytesIO(_png(run))).convert("RGB"))
    negative = io.BytesIO()
    Image.fromarray(255 - pixels).save(negative, "PNG")
    at.toggle(key="invert").set_value(True).run()
    at.file_uploader[0].set_value([("neg.png", negative.getvalue(), "image/png")]).run()
    table = at.dataframe[0].value
    expected, _ = Predictor.from_path(run).predict_files([_png(run)])
    assert table["label"].iloc[0] == expected[0].label  # inverted back: the original's label


def test_gradcam_overlay_renders_for_a_conv_model(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    cnn = next(e for e in catalog.list_runs(app_runs) if e.family == "cnn")
    at.sidebar.selectbox(key="run").set_value(str(cnn.path)).run()
    at.toggle(key="gradcam").set_value(True).run()
    at.file_uploader[0].set_value([("a.png", _png(cnn.path), "image/png")]).run()
    assert not at.exception
    captions = [str(n.proto) for n in _walk(at.main) if getattr(n, "type", "") == "image"]
    assert any('caption: "Grad-CAM (' in c for c in captions), captions


def test_empty_runs_root_offers_to_train_the_default(monkeypatch, tmp_path: Path):
    at = _app(monkeypatch, tmp_path / "nothing-here")
    assert not at.exception
    assert "No trained runs" in at.info[0].value
    assert at.button(key="train_default").label == "Train the default model"


def test_compare_shows_both_runs_and_what_differs(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    at.sidebar.radio(key="page").set_value("Compare").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted(e.name for e in catalog.list_runs(app_runs))
    assert "model.name" in table.columns
    charts = [n for n in _walk(at.main) if getattr(n, "type", "") == "vega_lite_chart"]
    assert len(charts) == 2


def test_train_form_config_error_is_one_line(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    at.sidebar.radio(key="page").set_value("Train").run()
    next(t for t in at.text_input if t.label == "Run name").set_value("bad name with spaces")
    _start_button(at).click().run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("name")


def _run_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []


def test_a_failing_job_reports_one_line(tmp_path: Path):
    # A data error in the child `imgclf-train` ends the job with its message, not a traceback.
    config = load_config(None, ["data.source=folder", f"data.path={tmp_path / 'missing'}"])
    job = TrainingJob(tmp_path / "runs")
    job.start(config)
    state = job.wait()
    assert state.status == "failed" and "missing" in state.error and "\n" not in state.error
    assert _run_dirs(tmp_path / "runs") == []


def test_a_job_runs_in_a_child_process_and_cancel_stops_it(tmp_path: Path, monkeypatch):
    """On a stub trainer (the job's logic, not training's): a second job is refused, even from
    another server on the same folder; the child (not this process) writes rows and its
    time-left estimate, which reach the page; Cancel ends the child's process group, keeps the
    run directory as it is, and the job's end is kept on disk. (A real SIGTERM'd run is left
    interrupted and resumable: test_faults.py's test_sigterm_leaves_an_interrupted_run...)"""
    import stub_trainer

    monkeypatch.setenv(stub_trainer.SECONDS_ENV, "0.1")
    config = load_config(None, ["train.epochs=10000"])  # still running when Cancel comes
    job = TrainingJob(tmp_path / "runs", command=stub_trainer.command)
    state = job.start(config)
    assert state.pid != os.getpid()
    with pytest.raises(JobBusy, match="already running"):
        TrainingJob(tmp_path / "runs", command=stub_trainer.command).start(config)
    while not job.snapshot().rows:  # the child has finished its first epoch
        assert job.snapshot().status == "running", job.snapshot().error
        job.wait(timeout=1)
    progress = job.snapshot().progress
    assert progress and progress["remaining_s"] > 0 and progress["stage"] == "training"
    assert "left (ends around" in estimate_text(progress)
    state = job.cancel()
    assert state.status == "cancelled" and not state.alive
    with pytest.raises(ProcessLookupError):
        os.killpg(state.pid, 0)  # the whole process group is gone
    run = Path(state.run_dir)
    assert (run / runs.HISTORY).is_file() and not (run / runs.MANIFEST).exists()
    assert TrainingJob(tmp_path / "runs").snapshot().status == "cancelled"  # kept on disk


@pytest.mark.slow
def test_cancel_leaves_a_real_run_interrupted_and_resumable(tmp_path: Path, folder_dataset):
    """Cancel's SIGTERM to the real trainer's process group is handled within the grace
    period: the run is left interrupted (resumable, the signal named), not killed half-way."""
    from conftest import tiny_overrides

    # 500 epochs and no early stop: still training when Cancel comes.
    overrides = ["train.epochs=500", "train.early_stopping.patience=0"]
    job = TrainingJob(tmp_path / "runs")
    job.start(load_config(None, [*tiny_overrides(folder_dataset), *overrides]))
    while not job.snapshot().rows:  # the child has finished its first epoch
        assert job.snapshot().status == "running", job.snapshot().error
        job.wait(timeout=1)
    state = job.cancel()
    assert state.status == "cancelled"
    left = runs.read_state(Path(state.run_dir))
    assert left.state == runs.INTERRUPTED and "SIGTERM" in left.reason


def test_the_train_page_finds_the_shipped_recipes_from_any_folder():
    from imgclf.ui.pages.train import SHIPPED

    assert (SHIPPED / "default.yaml").is_file() and (SHIPPED / "photos_transfer.yaml").is_file()


def test_a_camera_photo_is_classified(monkeypatch, app_runs: Path):
    from imgclf.predict.predictor import Predictor

    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    photo = io.BytesIO()
    Image.open(io.BytesIO(_png(run))).convert("RGB").save(photo, "JPEG", quality=95)
    at.toggle(key="use_camera").set_value(True).run()
    at.camera_input[0].set_value(("photo.jpg", photo.getvalue(), "image/jpeg")).run()
    assert not at.exception
    table = at.dataframe[0].value
    expected, _ = Predictor.from_path(run).predict_files([photo.getvalue()])
    assert list(table["image"]) == ["camera.jpg"]
    assert table["label"].iloc[0] == expected[0].label


@pytest.mark.slow
def test_train_page_starts_a_job_and_the_new_run_is_selected(monkeypatch, tmp_path: Path):
    """The form's values (augmentation switched off included) become a real training run in
    the background, on a dataset the dataset builder wrote (as the Train page's builder and
    tests/test_browser.py's builder in a real browser make them); once it ends, the app lists
    and selects it."""
    from conftest import make_image
    from tensorflow.python.framework.config import is_op_determinism_enabled

    from imgclf.data.builder import DatasetBuilder
    from imgclf.ui.state import training_job

    rng = np.random.default_rng(0)
    built = DatasetBuilder(tmp_path / "data" / "web_shapes")
    for cls in ("circle", "vstripes"):
        for i in range(10):
            buffer = io.BytesIO()
            Image.fromarray(make_image(cls, rng)).save(buffer, "PNG")
            built.add(cls, f"{cls} {i}.png", buffer.getvalue())
    determinism = is_op_determinism_enabled()  # process-wide, and cannot be switched back
    root = tmp_path / "runs"
    at = _app(monkeypatch, root)
    at.sidebar.radio(key="page").set_value("Train").run()

    def field(widgets, label):
        (widget,) = [w for w in widgets if w.label == label]
        return widget

    field(at.text_input, "Run name").set_value("form-run")
    field(at.selectbox, "Data source").set_value("folder")
    field(at.text_input, "Folder (for source folder)").set_value(str(built.root))
    field(at.selectbox, "Model").set_value("mlp")
    field(at.number_input, "Epochs").set_value(1)
    field(at.number_input, "Batch size").set_value(4)  # the form's 64 exceeds 20 images
    field(at.checkbox, "Augmentation").uncheck()  # off: every transform set to 0
    field(at.checkbox, "Export a SavedModel").uncheck()
    _start_button(at).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.button(key="cancel_job")  # shown while the child trains
    assert all(b.disabled for b in at.button if b.label in ("Start training",))
    state = training_job(root).wait()
    assert state.status == "done", state.error
    # The page followed the child to its end: every epoch's row, then the last stage.
    assert len(state.rows) == state.max_epochs == 1
    assert state.stage == "evaluating and exporting"
    run = Path(state.run_dir)
    assert run.parent == root and runs.read_state(run).complete
    assert is_op_determinism_enabled() == determinism  # trained in the child, not here
    config = runs.read_config(run)
    assert config["name"] == "form-run" and config["model"]["name"] == "mlp"
    assert config["train"]["epochs"] == 1 and config["augment"]["rotation"] == 0.0
    assert config["train"]["export"] is False and not (run / runs.SAVED_MODEL).exists()
    report = runs.read_json(run / runs.DATA_REPORT)
    assert report["classes"] == ["circle", "vstripes"] and report["path"] == str(built.root)
    assert sum(report["totals"].values()) == 20 and not report["skipped"]
    at.run()
    assert at.sidebar.selectbox(key="run").value == str(run)


def test_the_builtin_imagenet_classifier_names_a_real_photo(monkeypatch, tmp_path: Path):
    from skimage import data

    builtin = catalog.builtin_entries()
    # the dev extras install the three wheels; Lite0, the smallest, first
    assert [e.family for e in builtin] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]
    at = _app(monkeypatch, tmp_path / "no-runs-yet")
    at.button(key=f"try-{builtin[0].path}").click().run()  # offered even before any run
    assert at.sidebar.selectbox(key="run").value == str(builtin[0].path)
    photo = io.BytesIO()
    Image.fromarray(data.coffee()).save(photo, "JPEG")
    at.file_uploader[0].set_value([("coffee.jpg", photo.getvalue(), "image/jpeg")])
    at.run()
    assert not at.exception
    assert at.dataframe[0].value["label"].iloc[0] == "espresso"
    # No OOD column for ImageNet (its training features are not shipped): the page says so.
    assert any("ImageNet's training features are not shipped" in c.value for c in at.caption)
    at.sidebar.radio(key="page").set_value("Evaluation").run()
    assert not at.exception and "built in" in at.info[0].value


def test_uploads_are_kept_per_run_across_pages_until_cleared(monkeypatch, app_runs: Path):
    at = _app(monkeypatch, app_runs)
    first, second = (str(e.path) for e in catalog.list_runs(app_runs)[:2])
    at.sidebar.selectbox(key="run").set_value(first).run()
    at.file_uploader[0].set_value([("one.png", _png(Path(first)), "image/png")]).run()
    at.file_uploader[0].set_value([("two.png", _png(Path(first)), "image/png")]).run()
    assert list(at.dataframe[0].value["image"]) == ["one.png", "two.png"]  # added, not replaced
    at.sidebar.radio(key="page").set_value("Model").run()
    at.sidebar.radio(key="page").set_value("Classify").run()
    assert list(at.dataframe[0].value["image"]) == ["one.png", "two.png"]  # still there
    at.sidebar.selectbox(key="run").set_value(second).run()  # another run: its own uploads
    assert not at.dataframe and "Upload one or more images" in at.info[0].value
    at.sidebar.selectbox(key="run").set_value(first).run()
    assert len(at.dataframe[0].value) == 2
    at.button(key="clear_images").click().run()
    assert not at.dataframe and not at.exception


def test_a_zip_is_classified_in_one_go_like_the_command_line(monkeypatch, app_runs: Path):
    from imgclf.predict.predictor import Predictor
    from imgclf.ui.pages import batch as batch_view

    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    samples = sorted((run / runs.SAMPLES).glob("*.png"))
    members = {f"set/{p.name}": p.read_bytes() for p in samples}
    members |= {"set/bad.png": b"not an image", "readme.txt": b"hi", "__MACOSX/._x.png": b"x"}
    at.file_uploader[1].set_value([("batch.zip", zip_bytes(members), "application/zip")]).run()
    at.button(key="batch_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value  # the only table: no uploads
    expected, _ = Predictor.from_path(run).predict_files(samples, k=3)
    assert list(table["image"]) == [f"set/{p.name}" for p in samples]
    assert list(table["label"]) == [p.label for p in expected]
    assert [e.value for e in at.error] == ["set/bad.png: not an image"]
    summary = next(m.value for m in at.markdown if "images classified" in m.value)
    assert f"**{len(samples)}**" in summary and "2 file(s) left out" in summary
    result = at.session_state[f"_batch::{run}"]
    csv_text = batch_view._download(result, "csv", ood=True).splitlines()
    assert csv_text[0] == "image,rank,label,probability,ood_score,ood"
    assert len(csv_text) == 1 + len(samples) * 3  # one row per rank, as imgclf-predict writes


def test_a_folder_that_does_not_exist_is_one_line(monkeypatch, app_runs: Path, tmp_path: Path):
    from imgclf.ui.pages import batch as batch_view

    at = _app(monkeypatch, app_runs)
    at.radio(key="batch_from").set_value(batch_view.FOLDER).run()
    at.text_input(key="batch_folder").set_value(str(tmp_path / "nope")).run()
    at.button(key="batch_go").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"{tmp_path / 'nope'}: no such folder on this machine (the app's server)"
    ]


def test_batch_names_stay_apart_and_an_empty_folder_field_is_refused(monkeypatch, app_runs: Path):
    from imgclf.ui.pages import batch as batch_view

    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    data = _png(run)
    at.file_uploader[1].set_value(
        [("d.zip", zip_bytes({"/a.png": data, "a.png": data}), "x")]
    ).run()
    at.button(key="batch_go").click().run()
    assert list(at.dataframe[0].value["image"]) == ["a.png", "a.png (2)"]
    at.radio(key="batch_from").set_value(batch_view.FOLDER).run()
    at.text_input(key="batch_folder").set_value("   ").run()
    at.button(key="batch_go").click().run()
    assert [e.value for e in at.error] == [
        "(empty): no such folder on this machine (the app's server)"
    ]
    assert not at.dataframe  # the old result is not shown under the new error


def test_kept_uploads_are_capped_and_an_unsure_one_is_added_to_a_dataset(
    monkeypatch, app_runs: Path, tmp_path: Path
):
    """Uploads past MAX_KEPT are left out with a line saying so. Classify → dataset: under an
    image the model is unsure of (every image, with the bar raised), "Add to a dataset" saves
    the upload's bytes in a builder dataset under the class typed; the same bytes again are a
    duplicate. (One page for both: loading the model is most of each test's time.)"""
    from imgclf.data.roots import DATA_ENV
    from imgclf.ui.pages import classify

    monkeypatch.setattr(classify, "MAX_KEPT", 2)
    monkeypatch.setattr(classify, "LOW_CONFIDENCE", 1.01)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "datasets"))
    at = _app(monkeypatch, app_runs)
    run = Path(at.sidebar.selectbox(key="run").value)
    photo = _png(run)
    files = [(f"{n}.png", photo, "image/png") for n in range(3)]
    at.file_uploader[0].set_value(files).run()
    assert list(at.dataframe[0].value["image"]) == ["0.png", "1.png"]
    assert at.warning[0].value.startswith("1 image(s) not added: the page keeps at most 2")

    offers = [t.key[: -len("-dataset")] for t in at.text_input if t.key.endswith("-dataset")]
    key = offers[0]
    assert len(offers) == 2 and key.startswith("grow-0-")  # one per image
    at.text_input(key=f"{key}-dataset").set_value("grown").run()
    at.text_input(key=f"{key}-class").set_value("new kind").run()
    at.button(key=f"{key}-add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (saved,) = (tmp_path / "datasets" / "grown" / "new_kind").iterdir()
    assert saved.read_bytes() == photo
    assert any(f"Added as new\\_kind/{saved.name}" in s.value for s in at.success)
    at.button(key=f"{key}-add").click().run()
    assert any("Already in the dataset" in i.value for i in at.info)


def test_diagnostics_of_a_deep_network_are_grouped_into_readable_lines():
    """A 50-layer backbone's diagnostics: one line per block (the gradient norm of the whole
    block), or the first and last layers, instead of 50 lines in one chart."""
    import pandas as pd

    from imgclf.ui import charts

    layers = [f"block{b}{s}_{kind}" for b in range(1, 6) for s in "ab" for kind in ("a", "b")]
    layers += ["top_conv", "probabilities"]
    frame = pd.DataFrame(
        [{"epoch": e, "layer": name, "value": float(i + 1)} for e in (0, 1)
         for i, name in enumerate(layers)]
    )  # fmt: skip
    assert frame.layer.nunique() > charts.MAX_LINES
    blocks = charts.group_layers(frame, "blocks", layers, "norm")
    assert blocks.layer.nunique() == 12  # 10 blocks, top_conv, probabilities
    first = blocks[(blocks.epoch == 0) & (blocks.layer == "block1a")].value.item()
    assert first == pytest.approx(np.sqrt(1**2 + 2**2))  # the norm of both layers' gradients
    means = charts.group_layers(frame, "blocks", layers, "fraction")
    assert means[(means.epoch == 1) & (means.layer == "block1a")].value.item() == 1.5
    ends = charts.group_layers(frame, "ends", layers, "norm")
    kept = list(dict.fromkeys(ends.layer))
    assert kept == layers[:6] + layers[-6:]
    assert charts.group_layers(frame, "all", layers, "norm").equals(frame)


def test_the_app_shows_a_broken_run_in_one_line_and_keeps_the_others(
    monkeypatch, app_runs: Path, tmp_path: Path
):
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    root = tmp_path / "runs"
    shutil.copytree(app_runs, root, ignore=shutil.ignore_patterns(".jobs"))
    good, broken = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    (broken / runs.MANIFEST).unlink()  # complete, but unverifiable
    cut = root / "cut"
    shutil.copytree(good, cut)
    runs.set_state(cut, runs.RUNNING)  # and its trainer is long gone: interrupted
    state = json.loads((cut / runs.STATE).read_text())
    state["pid"] = 2**22 + 1
    (cut / runs.STATE).write_text(json.dumps(state))
    from imgclf.ui.text import plain

    hostile = _hostile_runs(good, root)
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    at = AppTest.from_file(str(Path(__file__).parents[1] / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="run").value != str(cut)  # never selected by default
    at.sidebar.selectbox(key="run").set_value(str(broken)).run()
    assert not at.exception and "manifest.json missing" in at.error[0].value
    at.sidebar.selectbox(key="run").set_value(str(cut)).run()
    assert "interrupted" in at.warning[0].value and "--resume" in at.warning[0].value
    # Run folders received from someone else: each is listed with its one-line reason, and
    # every page keeps working with it selected (the refusal) and with the good run.
    entries = {e.path.name: e for e in catalog.list_runs(root)}
    for name, why in hostile.items():
        assert not entries[name].complete and why in entries[name].reason, (name, entries[name])
        assert len(entries[name].label) < 200
        at.sidebar.selectbox(key="run").set_value(str(root / name)).run()
        assert not at.exception and plain(why) in at.warning[0].value, name
    for page in PAGES:  # the pages that list every run (Compare, Lessons) too
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    at.sidebar.selectbox(key="run").set_value(str(good)).run()
    for page in ("Compare", "Lessons", "Classify"):  # the pages that read the other runs too
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception and not at.error, page


def _hostile_runs(good: Path, root: Path) -> dict[str, str]:
    """Copies of `good`, each with one file made hostile; name -> what its reason must say."""
    deep_json = "[" * 100_000 + "]" * 100_000
    bomb = "".join(
        f"{x}: &{x} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
        for p, x in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
    )
    made = {
        "deep-metrics": (runs.METRICS, '{"test": ' + deep_json + "}", "nested more than"),
        "deep-state": (runs.STATE, deep_json, "nested more than"),
        "deep-config": (runs.CONFIG, deep_json, "nested more than"),
        "nan-string": (runs.METRICS, '{"test": {"accuracy": "NaN"}}', "test.accuracy"),
        "link-reason": (
            runs.STATE,
            json.dumps({"state": "failed", "reason": "[x](http://e)"}),
            "[x](http://e)",
        ),  # shown as text (escaped), not as a link
        "fifo-state": (runs.STATE, None, "not a regular file"),  # a FIFO would block a read
        "yaml-bomb": (runs.CONFIG, bomb, "aliases expand"),
    }
    for name, (file, text, _) in made.items():
        shutil.copytree(good, root / name)
        if text is None:
            (root / name / file).unlink()
            os.mkfifo(root / name / file)
        else:
            (root / name / file).write_text(text)
    return {name: why for name, (_, _, why) in made.items()}


def test_a_rerun_resets_keras_without_a_full_garbage_collection(monkeypatch, tmp_path: Path):
    """Streamlit's clean-up after each rerun still resets Keras' global state (layer names
    start again) and closes matplotlib's figures, but no longer runs `gc.collect()`."""
    import gc

    import keras
    import matplotlib.pyplot as plt
    from streamlit.runtime.scriptrunner import script_runner

    at = _app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    keras.layers.Dense(1)
    assert keras.layers.Dense(1).name != "dense"  # Keras counts the names it has given
    plt.figure()
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(a) or 0)
    script_runner._clean_problem_modules()  # what Streamlit calls after every rerun
    assert collections == []
    assert keras.layers.Dense(1).name == "dense"
    assert plt.get_fignums() == []


def test_upload_callbacks_skip_files_streamlit_has_deleted():
    """An uploader's value in session state may hold Streamlit's DeletedFile (a file removed
    with its × or dropped from storage): it has no bytes, and reading it was an AttributeError
    in place of the page. The callbacks read uploads through `uploads`, which skips them."""
    from streamlit.runtime.uploaded_file_manager import DeletedFile, UploadedFile, UploadedFileRec

    from imgclf.ui.state import uploads

    real = UploadedFile(UploadedFileRec("a", "good.png", "image/png", b"\x89PNG"), None)
    assert uploads([DeletedFile("gone"), real]) == [real]
    assert uploads(DeletedFile("gone")) == [] and uploads(None) == [] and uploads(real) == [real]


def test_the_learning_rate_chart_shows_a_fine_tune_rate_and_marks_the_phase():
    """A fine-tune rate of 1e-5 after 1e-3, ending at 0 (cosine), drew as 0 on a linear axis
    with no mark where fine-tuning began: now a symmetric log scale (its linear part ends at
    the smallest positive rate) and the dashed phase rule of the other curves."""
    from imgclf.ui import charts

    rows = [runs.HistoryRow(e, "head", 1.0, 0.5, 1.0, 0.5, 1e-3, 1.0) for e in (1, 2)]
    rows += [runs.HistoryRow(e, "fine_tune", 1.0, 0.5, 1.0, 0.5, lr, 1.0)
             for e, lr in ((3, 1e-5), (4, 5e-6), (5, 0.0))]  # fmt: skip
    spec = charts.learning_rate_chart(rows).to_dict()
    (line,) = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "line"]
    assert line["encoding"]["y"]["scale"] == {"type": "symlog", "constant": 5e-6}
    rules = [layer for layer in spec["layer"] if "layer" in layer]  # the phase rule and label
    assert rules and "fine_tune starts" in json.dumps(spec["datasets"])
    flat = [runs.HistoryRow(e, "train", 1.0, 0.5, 1.0, 0.5, 1e-3 * e, 1.0) for e in (1, 2)]
    assert charts.learning_rate_scale([r.learning_rate for r in flat]).type == "linear"
