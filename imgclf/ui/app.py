"""The app's shell: the sidebar (runs root, run list, page choice), the first-start offer to
train the default model, and routing to the page modules.

The page's title is drawn first and the page modules are imported only when shown (pandas,
Altair and, through the model, TensorFlow take seconds to import), so a first visit paints at
once and each page says what it is loading."""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from typing import Any

import streamlit as st

from imgclf.infra.errors import UserError
from imgclf.ui import catalog, rerun_cleanup
from imgclf.ui.pages import builder as builder_view

# Page -> (module under imgclf.ui.pages with a `render(entry, entries, root)`, title)
PAGES = {
    "Classify": ("classify", "Classify"),
    "Data": ("data", "Data"),
    "Training curves": ("curves", "Training curves"),
    "Evaluation": ("evaluation", "Evaluation"),
    "Compare": ("compare", "Compare runs"),
    "Lessons": ("lessons", "Lessons"),
    "Model": ("model", "Model"),
    "Train": ("train", "Train"),
}


# Pages that work without a selected run: they make runs, or read data before training.
RUNLESS = ("Data", "Train", "Lessons")


def _page(name: str) -> Any:
    """The page's render function (its module imported on first use)."""
    return importlib.import_module(f"imgclf.ui.pages.{PAGES[name][0]}").render


def _train_view() -> Any:
    return importlib.import_module("imgclf.ui.pages.train")


def _select_finished_job(entries: list[catalog.RunEntry]) -> None:
    """Once per finished job, make its run the selected one (before the selectbox exists)."""
    from imgclf.ui.state import training_job

    state = training_job(catalog.runs_root()).snapshot()
    if state.status != "done" or not state.run_dir:
        return
    if st.session_state.get("selected_job") == state.finished:
        return
    st.session_state["selected_job"] = state.finished
    finished = str(Path(state.run_dir))
    if any(str(e.path) == finished for e in entries):
        st.session_state["run"] = finished


def _empty_state(
    root: Path, builtins: list[catalog.RunEntry], unfinished: list[catalog.RunEntry]
) -> None:
    """No complete run yet: say so (and what the unfinished ones need), offer to train the
    default model from here, and offer the built-in ImageNet classifier when it is installed."""
    st.info(
        f"No trained runs in `{root}` yet. Train the default model (a small CNN on 5,000 real "
        "MNIST digits, about 1½ minutes on a 2-core CPU), or run `imgclf-train` in a terminal."
    )
    for entry in unfinished:
        st.warning(entry.refusal())
    _train_view().default_offer(root)
    for entry in builtins:
        st.button(
            f"Try the built-in {entry.name} ({entry.family})",
            key=f"try-{entry.path}",
            on_click=_choose_builtin,  # before the next run creates the page and run widgets
            args=(str(entry.path),),
        )


def _choose_builtin(path: str) -> None:
    st.session_state["run"] = path
    st.session_state["page"] = "Classify"


def _builtin_page(entry: catalog.RunEntry, page: str) -> None:
    """A page other than Classify for a built-in classifier: nothing to show, say why."""
    st.info(
        f"{entry.name} ({entry.family}) is built in: it was trained on ImageNet elsewhere, so "
        "it has no training history, test metrics or run files here. Use the Classify page with "
        "it, or choose a trained run in the sidebar."
    )


def _first_line(exc: Exception) -> str:
    """The exception's first line; a traceback goes to the server's log unless it is a
    UserError (whose message is the whole story)."""

    if not isinstance(exc, UserError):
        traceback.print_exc()
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _run_problem(entry: catalog.RunEntry, exc: Exception) -> None:
    """One line naming the run and what is wrong with it (a tampered or unreadable file, a
    refused model); the other runs stay usable."""
    st.error(f"`{entry.name}` cannot be shown: {_first_line(exc)}")


def _page_problem(page: str, exc: Exception) -> None:
    """One line for a page that needs no run (Data, Train, Lessons) when it fails."""
    st.error(f"The {page} page failed: {_first_line(exc)}")


def main() -> None:
    """Render the app once (Streamlit re-runs this on every interaction)."""
    rerun_cleanup.install()  # each rerun ends without a full garbage collection
    st.set_page_config(page_title="imgclf", page_icon="🔢", layout="wide")
    if st.session_state.get("page") not in PAGES:
        st.session_state["page"] = next(iter(PAGES))
    st.title(PAGES[st.session_state["page"]][1])  # painted before anything slow
    # The builder's uploads, whichever page the user went to; in a slot that every run makes,
    # so the elements below keep their places (a status block that came and went shifted
    # them, and the Train page's fragment then showed a stale copy of its form).
    builder_view.save_pending(st.empty())
    root = catalog.runs_root()
    listed = catalog.list_runs(root)
    entries = [e for e in listed if e.complete]  # what pages may load and compare
    builtins = catalog.builtin_entries()
    choices = {str(e.path): e for e in entries + [e for e in listed if not e.complete] + builtins}
    _select_finished_job(entries)
    with st.sidebar:
        st.header("imgclf")
        page = st.radio("Page", list(PAGES), key="page")
        st.caption(f"Runs in `{root}`")
        chosen = st.session_state.get("run")
        if entries or chosen in choices:
            if chosen not in choices:
                # The newest complete run; also after a deletion. Never an unfinished one.
                st.session_state["run"] = str(entries[0].path)
            labels = {path: e.label for path, e in choices.items()}
            st.selectbox("Run", list(choices), format_func=labels.__getitem__, key="run")
            # The box cuts a long label off; the whole of it stays readable here.
            shown = choices.get(st.session_state.get("run", ""))
            if shown is not None:
                st.caption(f"Selected: {shown.label}")
            unfinished = len(listed) - len(entries)
            note = f"; {unfinished} not complete (⚠)" if unfinished else ""
            st.caption(f"{len(entries)} run(s), newest first{note}; built-in classifiers last")
    selected = choices.get(st.session_state.get("run", ""))
    if page in RUNLESS:  # given the selected run only if it is complete and not built in
        usable = selected if selected is not None and selected.complete else None
        usable = usable if usable is None or not usable.builtin else None
        try:
            _page(page)(usable, entries, root)
        except Exception as exc:
            _page_problem(page, exc)
        return
    if selected is not None and not selected.builtin and not selected.complete:
        st.warning(selected.refusal())
        return
    if selected is not None and selected.builtin:
        if page == "Classify":
            _page(page)(selected, entries, root)
        else:
            _builtin_page(selected, page)
        return
    if not entries:
        _empty_state(root, builtins, [e for e in listed if not e.complete])
        return
    try:
        _page(page)(selected, entries, root)
    except Exception as exc:
        _run_problem(selected, exc)
