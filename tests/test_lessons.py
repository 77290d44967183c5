"""The lessons of configs/lessons/ (`imgclf.lessons`), the job queue that trains them one at a
time (`TrainingJob.enqueue`), and the app's Lessons page through AppTest."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from imgclf import lessons, runs
from imgclf.config import load_config
from imgclf.ui import catalog
from imgclf.ui.jobs import TrainingJob

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_every_recipe_belongs_to_a_lesson_with_its_header():
    found = lessons.lessons()
    stems = sorted(r.stem for lesson in found for r in lesson.recipes)
    assert stems == sorted(p.stem for p in lessons.LESSONS_DIR.glob("*.yaml"))  # none left out
    for lesson in found:
        assert len(lesson.recipes) >= 2, lesson.key
        for recipe in lesson.recipes:
            assert recipe.explanation and not recipe.explanation.startswith("Lesson")
            assert recipe.expected.startswith("test accuracy"), recipe.stem
            assert recipe.run_name == load_config(recipe.path).name
    init = next(lesson for lesson in found if lesson.key == "init")
    assert [r.stem for r in init.recipes] == ["init_he", "init_normal_small", "init_zeros"]


def test_header_parsing_keeps_the_paragraph_and_the_fields():
    text = (
        "# Lesson: one line\n# and a second.\n#\n#   run:      python x\n"
        "#   expected: test accuracy 0.5\n#   time:     3 s\nname: x\n# not the header\n"
    )
    explanation, fields = lessons.parse_header(text)
    assert explanation == "one line and a second."
    assert fields == {"run": "python x", "expected": "test accuracy 0.5", "time": "3 s"}


def _diag(first: float, last: float, dead: list[float]) -> dict:
    acts = {f"a{i}": {"mean": 0.0, "std": 1.0, "dead_fraction": d} for i, d in enumerate(dead)}
    return {
        "layers": ["h1", "h2", "h3", "probabilities"],
        "activation_kinds": {**{k: "relu" for k in acts}, "sig": "sigmoid"},
        "epochs": [
            {"epoch": 0, "grad_norm": {"h1": first, "h2": 1.0, "h3": last, "probabilities": 9.0}},
            {"epoch": 1, "grad_norm": {"h1": 1.0, "h3": 1.0}, "activation": {
                **acts, "sig": {"mean": 0.5, "std": 0.1, "dead_fraction": 0.9}}},
        ],
    }  # fmt: skip


def test_gradient_ratio_and_dead_units_read_the_right_records():
    diag = _diag(first=0.001, last=2.0, dead=[0.5, 0.0])
    assert lessons.gradient_ratio(diag) == pytest.approx(2000.0)  # last hidden / first, init
    assert lessons.gradient_ratio(diag, epoch=1) == pytest.approx(1.0)
    assert lessons.dead_fraction(diag) == pytest.approx(0.25)  # ReLU layers only, last record
    assert lessons.gradient_profile(diag) == [("h1", 0.001), ("h2", 1.0), ("h3", 2.0),
                                              ("probabilities", 9.0)]  # fmt: skip
    assert lessons.gradient_ratio(_diag(first=0.0, last=1.0, dead=[])) == float("inf")
    assert lessons.dead_fraction(_diag(1.0, 1.0, dead=[])) is None


@pytest.mark.slow
def test_queued_jobs_train_one_at_a_time_in_order(tmp_path: Path, folder_dataset: Path):
    """The queue's logic, on a stub trainer: queued configs start one at a time, in order, each
    after the one before has ended, and the server's queue thread stops once the queue is
    empty. (Real children through TrainingJob: test_app.py's Train page test, one run, and
    test_browser.py's Lessons test, a queued pair trained to complete runs.)"""
    import stub_trainer
    from conftest import tiny_overrides

    job = TrainingJob(tmp_path / "runs", command=stub_trainer.command)
    configs = [
        load_config(None, [*tiny_overrides(folder_dataset), f"name=q{n}", "train.epochs=3"])
        for n in range(3)
    ]
    job.enqueue(configs)
    first = job.snapshot()
    assert first.status == "running" and first.name == "q0" and job.queued() == ["q1", "q2"]
    assert job.enqueue(configs[1:]) == ["q1", "q2"]  # pressed twice: queued once
    done = job._drainer
    done.join(timeout=600)  # the server's queue thread starts q1 when q0 ends, then stops
    assert not done.is_alive()
    last = job.snapshot()
    assert last.status == "done" and last.name == "q2" and job.queued() == []
    made = sorted((tmp_path / "runs").glob("q*"), key=lambda p: p.name)
    assert [runs.read_config(p)["name"] for p in made] == ["q0", "q1", "q2"]
    assert all(len(runs.read_history(p / runs.HISTORY)) == 3 for p in made)
    # One at a time: each child wrote its config after the one before wrote its last row.
    for before, after in itertools.pairwise(made):
        assert (before / runs.HISTORY).stat().st_mtime <= (after / runs.CONFIG).stat().st_mtime


def test_the_lessons_page_lists_missing_runs_and_offers_to_train(monkeypatch, app_runs: Path):
    monkeypatch.setenv(catalog.RUNS_ENV, str(app_runs))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.radio(key="page").set_value("Lessons").run()
    assert not at.exception and at.title[0].value == "Lessons"
    first = lessons.lessons()[0]
    assert at.selectbox[0].value == first.title
    assert "Not trained" in at.info[0].value
    for recipe in first.recipes:
        assert recipe.stem in at.info[0].value
    assert at.button(key="train_lesson").label.startswith("Train the missing runs (2")
    table = at.table[0].value
    assert list(table.index) == [r.stem for r in first.recipes]
    assert list(table["measured"]) == [r.expected for r in first.recipes]


def test_a_broken_queue_file_is_ignored_and_never_deletes_outside_jobs(tmp_path: Path):
    from imgclf.ui.job_queue import QUEUE_FILE
    from imgclf.ui.jobs import JOBS

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    job = TrainingJob(tmp_path / "runs")
    queue = tmp_path / "runs" / JOBS / QUEUE_FILE
    queue.parent.mkdir(parents=True)
    outside = json.dumps([{"name": "x", "config": str(victim)}])
    for content in ("null", "5", "{", outside, '[{"name": 3}]'):
        queue.write_text(content)
        assert job.queued() == [] and job.advance() is None
        assert job.cancel().status == "idle"
    assert victim.read_text() == "keep me"


def test_unreadable_recipes_are_left_out_of_the_lessons(tmp_path: Path):
    import shutil

    for path in lessons.LESSONS_DIR.glob("activations_*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "skip_on.yaml").write_text("model: [unclosed\n")  # broken YAML
    (tmp_path / "skip_off.yaml").write_text("- a list\n")  # not a mapping
    found = lessons.lessons(tmp_path)
    assert [lesson.key for lesson in found] == ["activations"]
    assert lessons.lessons(tmp_path / "missing") == []


def test_lesson_recipes_skip_the_savedmodel():
    """A lesson is about training: its recipes set train.export false (docs/lessons.md)."""
    recipes = [r for lesson in lessons.lessons() for r in lesson.recipes]
    assert len(recipes) >= 16
    assert all(load_config(r.path).train.export is False for r in recipes)
