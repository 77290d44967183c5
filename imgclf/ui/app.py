"""The app's shell: the sidebar (runs root, run list, page choice), the first-start offer to
train the default model, and routing to the page modules."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from imgclf.ui import catalog, classify, compare_view, curves, evaluation, model_view, train_view
from imgclf.ui.state import training_job

PAGES = {
    "Classify": classify.render,
    "Training curves": curves.render,
    "Evaluation": evaluation.render,
    "Compare": compare_view.render,
    "Model": model_view.render,
    "Train": train_view.render,
}


def _select_finished_job(entries: list[catalog.RunEntry]) -> None:
    """Once per finished job, make its run the selected one (before the selectbox exists)."""
    state = training_job().snapshot()
    if state.status != "done" or not state.run_dir:
        return
    if st.session_state.get("selected_job") == state.finished:
        return
    st.session_state["selected_job"] = state.finished
    finished = str(Path(state.run_dir))
    if any(str(e.path) == finished for e in entries):
        st.session_state["run"] = finished


def _empty_state(root: Path) -> None:
    """No run yet: say so, and offer to train the default model from here."""
    st.title("imgclf")
    st.info(
        f"No trained runs in `{root}` yet. Train the default model (a small CNN on 5,000 real "
        "MNIST digits, about 1½ minutes on a 2-core CPU), or run `imgclf-train` in a terminal."
    )
    train_view.default_offer(root)


def main() -> None:
    """Render the app once (Streamlit re-runs this on every interaction)."""
    st.set_page_config(page_title="imgclf", page_icon="🔢", layout="wide")
    root = catalog.runs_root()
    entries = catalog.list_runs(root)
    _select_finished_job(entries)
    with st.sidebar:
        st.header("imgclf")
        page = st.radio("Page", list(PAGES), key="page")
        st.caption(f"Runs in `{root}`")
        if entries:
            paths = [str(e.path) for e in entries]
            if st.session_state.get("run") not in paths:
                st.session_state["run"] = paths[0]  # newest; also after a run was deleted
            labels = {str(e.path): e.label for e in entries}
            st.selectbox("Run", paths, format_func=labels.__getitem__, key="run")
            st.caption(f"{len(entries)} run(s), newest first")
    if not entries:
        if page == "Train":
            train_view.render(None, entries, root)
        else:
            _empty_state(root)
        return
    selected = next(e for e in entries if str(e.path) == st.session_state["run"])
    PAGES[page](selected, entries, root)
