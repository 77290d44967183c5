"""Lessons page: pick a lesson of `configs/lessons/` (`imgclf.lessons`), read what it shows and
the figures measured for it, and see its runs side by side: validation curves overlaid, the
gradient norm per layer at initialisation, and a table with the gradient ratio and dead ReLU
units. Missing runs are trained from here, queued one at a time through the Train page's job
runner (`TrainingJob.enqueue`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from imgclf import lessons, runs
from imgclf.config import load_config
from imgclf.infra.errors import UserError
from imgclf.labs import cli, folder
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry
from imgclf.ui.pages.train import live_progress
from imgclf.ui.state import training_job


def lesson_runs(lesson: lessons.Lesson, entries: list[RunEntry]) -> dict[str, RunEntry | None]:
    """Recipe stem -> the newest complete run trained from it (its config's `name`)."""
    by_name: dict[str, RunEntry] = {}
    for entry in entries:  # newest first: the first seen wins
        try:
            name = str(runs.read_config(entry.path).get("name"))
        except (OSError, ValueError):
            continue
        by_name.setdefault(name, entry)
    return {r.stem: by_name.get(r.run_name) for r in lesson.recipes}


def _measured(lesson: lessons.Lesson) -> None:
    rows = [
        {"recipe": r.stem, "measured": r.expected, "time": r.time, "how": r.measured}
        for r in lesson.recipes
    ]
    st.table(pd.DataFrame(rows).set_index("recipe"))


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _row(stem: str, run: runs.Run) -> dict[str, object]:
    history = run.history
    test = (run.metrics or {}).get("test") or {}
    diag = run.diagnostics or {}
    ratio = lessons.gradient_ratio(diag)
    dead = lessons.dead_fraction(diag)
    vals = [r.get("val_accuracy") for r in history if r.get("val_accuracy") is not None]
    return {
        "recipe": stem,
        "run": run.path.name,
        "epochs": len(history),
        "test accuracy": _fmt(test.get("accuracy")),
        "best val accuracy": _fmt(max(vals, default=None)),
        "final train accuracy": _fmt(history[-1].get("accuracy") if history else None),
        "grad ratio last/first hidden (init)": "—" if ratio is None else f"{ratio:,.3g}×",
        "dead ReLU units (end)": "—" if dead is None else f"{dead:.1%}",
    }


def _side_by_side(found: dict[str, RunEntry]) -> None:
    """The lesson's runs overlaid: curves, gradient profile, the diagnostics table."""
    loaded = {stem: runs.Run(entry.path) for stem, entry in found.items()}
    curves = {stem: run.history for stem, run in loaded.items()}
    left, right = st.columns(2)
    left.altair_chart(charts.overlay_chart(curves, "val_accuracy"), width="stretch")
    right.altair_chart(charts.overlay_chart(curves, "accuracy"), width="stretch")
    profiles = {s: lessons.gradient_profile(r.diagnostics or {}) for s, r in loaded.items()}
    if any(profiles.values()):
        st.altair_chart(charts.gradient_profile_chart(profiles), width="stretch")
    # A plain table (not the canvas grid): a few rows, read in full, found by the browser test.
    st.table(pd.DataFrame([_row(s, r) for s, r in loaded.items()]).set_index("recipe"))


def _train(lesson: lessons.Lesson, missing: list[lessons.Recipe], root: Path) -> None:
    """The button that queues the lesson's missing (or all) recipes."""
    job = training_job(root)
    recipes = missing or lesson.recipes
    try:
        default = max(load_config(r.path).train.epochs for r in recipes)
    except UserError as exc:  # a recipe edited into an invalid one
        st.error(str(exc))
        return
    epochs = st.number_input(
        "Epochs", 1, 1000, default, key=f"lesson_epochs::{lesson.key}",
        help="The recipes' own number gives the measured figures; fewer is a quick look (the "
        "gradient ratio is measured at initialisation, so it shows at once).",
    )  # fmt: skip
    what = "Train the missing runs" if missing else "Train the lesson again"
    busy = job.running or bool(job.queued())  # one lesson at a time: no double queue
    label = f"{what} ({len(recipes)}, one at a time)"
    if st.button(label, key="train_lesson", type="primary", disabled=busy):
        try:
            configs = [load_config(r.path, [f"train.epochs={int(epochs)}"]) for r in recipes]
            job.enqueue(configs)
        except (UserError, OSError) as exc:
            st.error(str(exc))
        else:
            st.rerun()


def _labs() -> None:
    """The newest folder of each `imgclf-lab` experiment: its table, picture and settings."""

    st.header("Labs")
    found = {}
    for path in folder.list_labs():  # newest first
        try:
            name = str(runs.read_json(path / folder.LAB_JSON)["lab"])
        except (OSError, ValueError, KeyError, TypeError):
            name = path.name.split("-2", 1)[0]  # `<lab>-<date>`: read_lab below names the problem
        found.setdefault(name, path)
    st.caption(
        f"The course's experiments, run with `imgclf-lab NAME` into `{folder.labs_root()}` "
        f"(`$IMGCLF_LABS`): {', '.join(sorted(cli.LABS))}."
    )
    for name in sorted(cli.LABS):
        path = found.get(name)
        st.subheader(name)
        if path is None:
            st.info(f"Not run yet: `imgclf-lab {name}` (add `--quick` for a short look).")
            continue
        try:
            lab = folder.read_lab(path)  # every file checked against the manifest
        except (UserError, OSError, ValueError) as exc:
            st.error(f"`{path.name}` cannot be shown: {exc}")
            continue
        mode = "quick" if lab.get("quick") else "full"
        st.caption(f"`{path.name}`: {mode} mode, {lab.get('finished')}, {lab.get('machine')}, "
                   f"{lab.get('seconds')} s")  # fmt: skip
        # st.table reads cells as Markdown: "+ ReLU" would become a bullet.
        table = pd.DataFrame(lab["rows"]).astype(str)
        st.table(table.map(lambda v: "\\" + v if v.startswith(("+", "-", "*")) else v))
        for picture in lab.get("pictures", []):
            st.image(str(path / picture), caption=picture)


def render(entry: RunEntry | None, entries: list[RunEntry], root: Path) -> None:
    """The Lessons page (also reachable before any run exists)."""
    all_lessons = lessons.lessons()
    if not all_lessons:
        st.info(
            f"No lessons in `{lessons.LESSONS_DIR}`: they ship with the source checkout "
            "(configs/lessons/); run the app from a clone of the repository."
        )
        _labs()
        return
    titles = [lesson.title for lesson in all_lessons]
    chosen = st.session_state.get("_lesson", titles[0])  # kept across page switches
    title = st.selectbox("Lesson", titles, index=titles.index(chosen) if chosen in titles else 0)
    st.session_state["_lesson"] = title
    lesson = all_lessons[titles.index(title)]
    for recipe in lesson.recipes:
        st.markdown(f"**`{recipe.stem}`**: {recipe.explanation}")
    st.caption(
        "What each recipe showed when measured (its header; `python benchmarks/lessons.py`, "
        "seed 0, 2-core CPU; docs/lessons.md)"
    )
    _measured(lesson)
    found = lesson_runs(lesson, entries)
    missing = [r for r in lesson.recipes if found[r.stem] is None]
    st.subheader("Your runs")
    if missing:
        names = ", ".join(f"`{r.stem}`" for r in missing)
        st.info(f"Not trained in `{root}` yet: {names}.")
    _train(lesson, missing, root)
    live_progress(root)
    present = {stem: e for stem, e in found.items() if e is not None}
    if len(present) >= 2:
        _side_by_side(present)
    _labs()
