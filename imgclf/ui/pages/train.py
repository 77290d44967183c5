"""Train page: pick a recipe from configs/, change the common fields, start training as a child
process (one job per runs folder), watch it live or cancel it; the finished run joins the run
list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from imgclf.config import SOURCES, Config, augment_overrides, load_config
from imgclf.data.builder import DatasetBuilder
from imgclf.infra.errors import UserError
from imgclf.models.registry import available_models
from imgclf.ui.catalog import RunEntry
from imgclf.ui.exposure import server_path
from imgclf.ui.jobs import JobBusy, estimate_text
from imgclf.ui.pages.curves import show_history
from imgclf.ui.state import training_job

# The recipes shipped with imgclf (the repository's configs/, whatever the working directory),
# then any configs/ folder of the working directory.
SHIPPED = Path(__file__).resolve().parents[3] / "configs"  # imgclf/ui/pages/ -> repository
DEFAULT = "(built-in default)"


def _start(config: Config, root: Path) -> None:
    try:
        training_job(root).start(config)
    except (JobBusy, OSError) as exc:
        st.warning(str(exc))
        return
    st.rerun()  # at once: the Start buttons render disabled and the progress shows


def _cancel(root: Path) -> None:
    training_job(root).cancel()


@st.fragment(run_every=1.0)
def live_progress(root: Path) -> None:
    """The current job's progress bar, curves and Cancel button, refreshed every second while it
    runs; when it ends, the whole app re-runs once so the new run is listed and selected."""
    job = training_job(root)
    job.advance()  # a queue left by a restarted server
    state, queued = job.snapshot(), job.queued()
    if state.status == "idle":
        return
    if state.status == "running":
        epochs = f"epoch {len(state.rows)}/{state.max_epochs}" if state.max_epochs else ""
        left = estimate_text(state.progress)
        st.progress(
            state.fraction,
            text=f"Training `{state.name}`: {state.stage} {epochs}" + (f"; {left}" if left else ""),
        )
        if queued:
            st.caption("Queued next: " + ", ".join(f"`{name}`" for name in queued))
        label = f"Cancel (and the {len(queued)} queued)" if queued else "Cancel"
        st.button(label, key="cancel_job", on_click=_cancel, args=(root,))
        if state.rows:
            show_history(state.rows, "live")
        return
    if st.session_state.get("shown_job") != state.finished:
        st.session_state["shown_job"] = state.finished
        st.rerun(scope="app")  # list and select the new run
    if state.status == "failed":
        st.error(f"Training `{state.name}` failed: {state.error}")
    elif state.status == "cancelled":
        st.warning(
            f"Training `{state.name}` was cancelled; {state.run_dir} is left as an interrupted run "
            "(no manifest)."
        )
    else:
        took = state.finished - state.started
        st.success(f"Trained `{state.name}` in {took:.0f} s: {state.run_dir}")


def default_offer(root: Path) -> None:
    """The first-start button: train the built-in default config into `root`."""
    running = training_job(root).running
    if st.button("Train the default model", type="primary", disabled=running, key="train_default"):
        _start(load_config(None), root)
    live_progress(root)


def recipes() -> dict[str, Path | None]:
    """Recipe label (`configs/x.yaml`) -> file; the built-in default first (None)."""
    found: dict[str, Path | None] = {DEFAULT: None}
    for folder in (SHIPPED, Path.cwd() / "configs"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(f"configs/{path.name}", path)
    return found


def _batch_size(base: Config, built: str | None) -> int:
    """The recipe's batch size; for a dataset built in the browser, at most its training images
    (a handful of photos per class would otherwise be refused by training)."""
    size = base.train.batch_size if isinstance(base.train.batch_size, int) else 64
    if not built:
        return size

    total = sum(DatasetBuilder(built).classes().values())
    train_share = 1.0 - base.data.val_fraction - base.data.test_fraction
    return max(1, min(size, int(total * train_share)))


TASKS = ["single", "multilabel"]


def _task(where: Any, base: Config, built: str | None) -> str:
    """The Task field: multilabel first when the builder's dataset lets a photo have several
    classes."""
    several = bool(st.session_state.get("builder_several")) and bool(built)
    return where.selectbox(
        "Task", TASKS, index=TASKS.index("multilabel" if several else base.task),
        help="multilabel: any number of labels per image (independent sigmoids, a threshold "
        "per label); reads multimnist, a CSV of label sets or a folder whose photos are in "
        "each of their labels' folders",
    )  # fmt: skip


def _train_form(base: Config, built: str | None, root: Path) -> list[str] | None:
    """Render the training form; its fields as config overrides once Start is pressed, else None."""
    with st.form("train_form"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Run name", Path(built).name if built else base.name)
        data_source = "folder" if built else base.data.source
        source = c2.selectbox("Data source", SOURCES, index=SOURCES.index(data_source))
        path = c3.text_input(
            "Folder (for source folder)", built or base.data.path or "",
            help="one sub-folder per class",
        )  # fmt: skip
        models = available_models()
        model = c1.selectbox("Model", models, index=models.index(base.model.name))
        epochs = c2.number_input("Epochs", 1, 1000, base.train.epochs)
        auto = base.train.learning_rate == "auto"
        lr = c3.number_input(
            "Learning rate", 1e-6, 10.0, 1e-3 if auto else float(base.train.learning_rate),
            format="%.5f",
        )  # fmt: skip
        batch = c1.number_input("Batch size", 1, 4096, _batch_size(base, built))
        task = _task(c2, base, built)
        find = c3.checkbox(
            "Find the learning rate", auto,
            help="the learning-rate range test picks the rate at the start of every phase "
            "(train.learning_rate=auto; its curve is on the Curves page)",
        )  # fmt: skip
        augment = c2.checkbox("Augmentation", base.augment.enabled)
        export = c3.checkbox(
            "Export a SavedModel", base.train.export,
            help="off: about 5 s less per run; imgclf-export RUN writes it later",
        )  # fmt: skip
        st.caption("Transfer phases (used when the model starts from trained weights)")
        t1, t2, _ = st.columns(3)
        head = t1.number_input("Head epochs (backbone frozen)", 0, 1000, base.transfer.head_epochs)
        fine = t2.number_input("Fine-tune epochs", 0, 1000, base.transfer.fine_tune_epochs)
        submitted = st.form_submit_button(
            "Start training", type="primary", disabled=training_job(root).running
        )
    if not submitted:
        return None
    overrides = [
        f"name={name}",
        f"task={task}",
        f"data.source={source}",
        f"model.name={model}",
        f"train.epochs={int(epochs)}",
        f"train.learning_rate={'auto' if find else lr}",
        f"train.batch_size={int(batch)}",
        f"train.export={str(bool(export)).lower()}",
        f"transfer.head_epochs={int(head)}",
        f"transfer.fine_tune_epochs={int(fine)}",
    ]
    overrides += augment_overrides(augment, base)
    if path.strip():
        overrides.append(f"data.path={path.strip()}")
    return overrides


def render(entry: RunEntry | None, entries: list[RunEntry], root: Path) -> None:
    """The Train page (also reachable before any run exists)."""
    files = recipes()
    labels = list(files)
    # Kept under a plain key: a widget's own state is dropped while its page is not shown.
    chosen = st.session_state.get("_recipe", DEFAULT)
    recipe = st.selectbox("Recipe", labels, index=labels.index(chosen) if chosen in labels else 0)
    st.session_state["_recipe"] = recipe
    try:
        base = load_config(files[recipe])
    except UserError as exc:
        st.error(f"{recipe}: {exc}")
        return
    from imgclf.ui.pages import builder as builder_view

    builder_view.render(base)
    built = st.session_state.get(builder_view.USE)  # "Use this dataset": the form's data
    overrides = _train_form(base, built, root)
    if overrides is not None:
        try:
            config = load_config(files[recipe], overrides)
            if config.data.path is not None:  # a folder or CSV of the server: allowed here?
                server_path(config.data.path)
        except UserError as exc:
            st.error(str(exc))
        else:
            _start(config, root)
    live_progress(root)
