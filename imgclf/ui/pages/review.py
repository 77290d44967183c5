"""Data page, "Review": what the audit found in a folder dataset, each finding with its
pictures side by side and buttons that fix it without losing a photo (`imgclf.data.review`):
relabel (move to another class folder), remove (move to the dataset's quarantine folder, never
delete) and keep (remembered: not reported again). Every action is logged and can be undone.

The audit is `imgclf-audit`'s own (`imgclf.audit.audit`: every usable image, not only the
training split), run on request because it decodes every image. What was acted on leaves the
list at once; "Audit again" looks at the folder as it is now.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from imgclf.audit import audit
from imgclf.data import review
from imgclf.infra.errors import UserError
from imgclf.ui import data_info
from imgclf.ui.text import plain

SHOWN = 8  # findings of each kind shown at a time (the next come up as these are settled)
REPORT = "_review_report"  # (folder, the audit's report or why it failed)
NOTE = "_review_note"  # what the last action did, shown once


def _findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's findings as one list: kind, files, what is wrong, a suggested class."""
    out = []
    for group in report["duplicates"].get("examples", []):
        what = ("the same image filed under " + ", ".join(group["classes"])
                if len(group["classes"]) > 1 else "identical files")  # fmt: skip
        out.append({"kind": "duplicates", "files": group["files"], "what": what})
    for group in (report.get("near_duplicates") or {}).get("examples", []):
        out.append({"kind": "near_duplicates", "files": group["files"], "what": "look alike"})
    for row in report["label_issues"].get("examples", []):
        what = f"labelled {row['given']}, looks like {row['suggested']}"
        out.append({"kind": "label_issues", "files": [row["file"]], "what": what,
                    "suggested": row["suggested"]})  # fmt: skip
    for row in report["outliers"].get("examples", []):
        out.append({"kind": "outliers", "files": [row["file"]], "what": row["why"]})
    return out


TITLES = {
    "duplicates": "Exact duplicates",
    "near_duplicates": "Near duplicates",
    "label_issues": "Likely label errors",
    "outliers": "Outliers",
}


def _act(desk: review.Review, do: Any, *args: str) -> None:
    """Run one review action (a button's callback) and leave what it did for the next run."""
    try:
        action = do(*args)
    except UserError as exc:
        st.session_state[NOTE] = ("error", str(exc))
        return
    where = f" → {action['to']}" if action.get("to") else ""
    st.session_state[NOTE] = ("success", f"{action['action']}: {action['file']}{where}")


def _undo(desk: review.Review) -> None:
    try:
        action = desk.undo()
    except UserError as exc:
        st.session_state[NOTE] = ("error", str(exc))
        return
    text = f"undone: {action['action']} {action['file']}" if action else "nothing to undo"
    st.session_state[NOTE] = ("success", text)


def _finding(desk: review.Review, item: dict[str, Any], key: str, classes: list[str]) -> None:
    with st.container(key=key, border=True):
        st.markdown(f"{plain(' · '.join(item['files']))}: {plain(item['what'])}")
        pictures = data_info.file_samples(desk.root, item["files"], len(item["files"]))
        if pictures:
            st.image(pictures, width=96, output_format="PNG", alt=list(item["files"]))
        # A choice is keyed by the finding itself, not its place in the list: Streamlit keeps a
        # widget's value by key, and the list shifts as findings are settled.
        ident = hashlib.sha1("\0".join([item["kind"], *item["files"]]).encode()).hexdigest()[:12]
        for n, file in enumerate(item["files"]):
            try:
                here = desk.class_of(file)[1]
            except UserError:
                here = ""
            cols = st.columns([3, 2, 1, 1])
            cols[0].caption(plain(file))
            others = [c for c in classes if c != here]
            start = others.index(item["suggested"]) if item.get("suggested") in others else 0
            new = cols[1].selectbox("Class", others, index=start, key=f"review-to-{ident}-{n}",
                                    label_visibility="collapsed") if others else None  # fmt: skip
            cols[2].button("Relabel", key=f"{key}-relabel-{n}", disabled=not new,
                           on_click=_act, args=(desk, desk.relabel, file, new))  # fmt: skip
            cols[3].button("Remove", key=f"{key}-remove-{n}",
                           on_click=_act, args=(desk, desk.remove, file))  # fmt: skip
        if item["kind"] in review.KINDS:
            st.button("Keep (not reported again)", key=f"{key}-keep",
                      on_click=_keep_all, args=(desk, item))  # fmt: skip


def _keep_all(desk: review.Review, item: dict[str, Any]) -> None:
    for file in item["files"]:
        _act(desk, desk.keep, file, item["kind"])


def _log(desk: review.Review) -> None:
    if not desk.actions:
        return
    with st.expander(f"Review log ({len(desk.actions)} actions, {review.LOG})"):
        rows = [{k: a.get(k) for k in ("id", "at", "action", "file", "to", "finding", "undone")}
                for a in desk.actions]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def render(root: Path) -> None:
    """The Review section for the folder dataset at `root`."""
    st.subheader("Review")
    try:
        desk = review.Review(root)
    except UserError as exc:
        st.error(plain(exc))
        return
    st.caption(
        "Relabel moves a file to another class folder; Remove moves it to "
        f"`{review.QUARANTINE}/` inside the dataset (never deleted; training skips it); Keep "
        f"remembers it is fine. Every action is logged in `{review.LOG}` and can be undone."
    )
    note = st.session_state.pop(NOTE, None)
    if note:
        (st.error if note[0] == "error" else st.success)(plain(note[1]))
    left, right = st.columns(2)
    if left.button("Audit this folder" if REPORT not in st.session_state else "Audit again",
                   key="review-audit"):  # fmt: skip
        with st.spinner("Auditing every image (decodes them all)…"):
            try:
                # data.cache as training has it (auto: the disk cache when there is room, so a
                # second audit, or the training run after it, decodes nothing again).
                found: Any = audit(["data.source=folder", f"data.path={json.dumps(str(root))}"])
            except UserError as exc:
                found = str(exc)
            since = max((a["id"] for a in desk.actions), default=0)
            st.session_state[REPORT] = (str(root), found, since)
    live = [a for a in desk.actions if not a["undone"]]
    right.button(f"Undo: {live[-1]['action']} {live[-1]['file']}" if live else "Undo",
                 key="review-undo", disabled=not live, on_click=_undo, args=(desk,))  # fmt: skip
    _show(desk, st.session_state.get(REPORT))
    _log(desk)


def _show(desk: review.Review, saved: tuple[str, Any, int] | None) -> None:
    if not saved or saved[0] != str(desk.root):
        st.caption("Audit the folder to list duplicates, likely label errors and outliers.")
        return
    if isinstance(saved[1], str):
        st.error(plain(saved[1]))
        return
    # Settled since this audit (a file added later under an old name is a new finding).
    done = {a["file"] for a in desk.actions if not a["undone"] and a["id"] > saved[2]}
    classes = list(saved[1]["classes"])
    findings = [f for f in _findings(saved[1]) if not done & set(f["files"])]
    if not findings:
        st.success("Nothing left to review in this audit.")
    for kind, title in TITLES.items():
        mine = [f for f in findings if f["kind"] == kind]
        if mine:
            st.markdown(f"**{title}**: {len(mine)}")
        for i, item in enumerate(mine[:SHOWN]):
            _finding(desk, item, f"review-{kind}-{i}", classes)
