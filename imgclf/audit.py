"""`imgclf-audit`: what is wrong with a dataset before a model is trained on it, without
TensorFlow (so it answers in seconds).

    imgclf-audit datasets/pets                  # a folder (one sub-folder per class)
    imgclf-audit labels.csv --format json       # a CSV list
    imgclf-audit --config configs/photos_transfer.yaml data.path=datasets/pets

It loads the data exactly as training does (`data.load_pool`: the same listing, decoder and
class names), then reports: images per class, and classes too small for the split; files that
do not decode or are not images; exact duplicates and the same image under two classes
(`data.duplicates`); near duplicates of folders and CSV lists (`imgclf.data.near_duplicates`); class
names that differ only in upper/lower case; likely label errors (`imgclf.data.label_issues`,
confident learning on a fast model's out-of-fold probabilities); outliers and near-blank
images (`imgclf.data.outliers`). Findings the app's review kept (`imgclf.data.review`) are not
reported again. What it does not find: cropped copies (a perceptual hash misses them).

Exit status: 0 when nothing was found, 1 when something was (so a script can stop on it), 2
when the data cannot be read at all (one line on stderr). Overrides alone work too
(`imgclf-audit data.source=digits`); a folder whose name holds `=` is taken as a folder when it
exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.config import load_config
from imgclf.data import duplicates, near_duplicates, review, suspects
from imgclf.data.multilabel import label_sets
from imgclf.data.split import load_pool, minimum_per_class, similar_names
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.errors import UserError

FORMATS = ("table", "json")


def audit(overrides: list[str], config_path: str | None = None) -> dict[str, Any]:
    """The findings on the data of the config (`config_path` and dotted `overrides`), as a
    JSON-ready dict. Raises UserError (ConfigError, DataError) when it cannot be read."""
    config = load_config(config_path, overrides)
    cfg = config.data
    pool = load_pool(cfg)
    groups = duplicates.exact_groups(pool)
    several = []
    if config.task == "multilabel":  # one photo under several label folders is its label set
        several = [g for g in groups if _label_set(pool, g)]
        groups = [g for g in groups if not _label_set(pool, g)]
    found = duplicates.resolve(pool, groups, cfg.duplicates, cfg.conflicting_labels)
    found.pop("left_out")
    if config.task == "multilabel":
        found["several_labels"] = len(several)  # not conflicts: see imgclf.data.multilabel
    nothing = np.array([], dtype=np.int64)  # no split here: groups only
    kept = review.kept_in(cfg.path if cfg.source == "folder" else None)
    every = groups + several
    near = near_duplicates.report(pool, nothing, nothing, every, kept) if pool.store else None
    features = "pixels" if cfg.audit == "off" else cfg.audit  # the audit always looks
    per_image = suspects.check(pool, kept=kept, seed=config.seed, features=features)
    if config.task == "multilabel" and "label_issues" in per_image:
        per_image["label_issues"] = {
            "method": per_image["label_issues"].get("method"),
            "skipped": "confident learning assumes one label per image (task=multilabel)",
        }
    usable = ~pool.failed if pool.failed is not None else np.ones(len(pool.labels), bool)
    names = pool.class_names
    counts = np.bincount(pool.labels[usable], minlength=len(names))
    if config.task == "multilabel":  # images per label, not per label set (a|b)
        names, hot = label_sets(pool.class_names)
        counts = hot[pool.labels[usable]].sum(0).astype(int)
    need = minimum_per_class(cfg.val_fraction, cfg.test_fraction)
    small = [name for name, n in zip(names, counts, strict=True) if n < need]
    unreadable = [s for s in pool.skipped if not _is_duplicate(s["reason"])]
    return {
        "source": cfg.source,
        "path": cfg.path,
        "images": len(pool.labels),
        "classes": {name: int(n) for name, n in zip(names, counts, strict=True)},
        "too_small": {"classes": small, "need": need},
        "unreadable": unreadable,
        "ignored": pool.ignored,
        "duplicates": found,
        "near_duplicates": near,
        **per_image,
        "similar_class_names": similar_names(pool.class_names),
    }


def _label_set(pool: Any, group: np.ndarray) -> bool:
    """True when a group of byte-identical files is one multi-label photo: each copy under
    another label, all in one part of the source's own split. Copies under one label, or in
    two of train/val/test, stay findings (duplicates, leakage)."""
    labels = pool.labels[group].tolist()
    one_part = pool.assigned is None or len(set(pool.assigned[group].tolist())) == 1
    return len(set(labels)) == len(labels) and one_part


def _is_duplicate(reason: str) -> bool:
    return reason.startswith(("an exact copy of", "the same image is filed under"))


def findings(report: dict[str, Any]) -> int:
    """How many things the report asks the user to look at."""
    return (
        len(report["too_small"]["classes"])
        + len(report["unreadable"])
        + report["duplicates"]["groups"]
        + ((report["near_duplicates"] or {}).get("groups") or 0)
        + (report["label_issues"].get("flagged") or 0)
        + (report["outliers"].get("flagged") or 0)
        + len(report["similar_class_names"])
    )


def format_table(report: dict[str, Any]) -> str:
    """The report as lines for a terminal."""
    lines = [f"{report['images']} images in {len(report['classes'])} classes ({report['path']})"]
    width = max(len(name) for name in report["classes"]) if report["classes"] else 0
    lines += [f"  {name:<{width}}  {n:>7,}" for name, n in report["classes"].items()]
    small = report["too_small"]
    if small["classes"]:
        lines.append(
            f"too small for a validation and a test image (fewer than {small['need']}): "
            + ", ".join(small["classes"])
        )
    for entry in report["unreadable"]:
        lines.append(f"unreadable: {entry['file']}: {entry['reason']}")
    found = report["duplicates"]
    if found["groups"]:
        lines.append(duplicates.describe(found, "\n").strip())
        for group in found["examples"]:
            lines.append(f"  {' = '.join(group['files'])}  ({', '.join(group['classes'])})")
        if found["groups"] > len(found["examples"]):
            lines.append(f"  ... {found['groups'] - len(found['examples'])} more (--format json)")
    near = report["near_duplicates"] or {}
    if near.get("groups"):
        lines.append(near_duplicates.describe(near, "\n").strip())
        for group in near["examples"]:
            lines.append(f"  {' ~ '.join(group['files'])}  ({', '.join(group['classes'])})")
    issues = report["label_issues"]
    if issues.get("flagged"):
        lines.append(
            f"likely label errors: {issues['flagged']} ({issues['method']}), most suspect first:"
        )
        for row in issues["examples"]:
            lines.append(
                f"  {row['file']}: labelled {row['given']}, looks like {row['suggested']} "
                f"(p(given) {row['p_given']:.3f})"
            )
    odd = report["outliers"]
    if odd.get("flagged"):
        lines.append(f"outliers: {odd['flagged']} ({odd['method']}), most unusual first:")
        for row in odd["examples"]:
            lines.append(f"  {row['file']} ({row['class']}): {row['why']}")
    for group in report["similar_class_names"]:
        lines.append(f"classes that differ only in case: {', '.join(group)}")
    n = findings(report)
    lines.append(f"{n} finding(s)" if n else "nothing found")
    return "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="imgclf-audit",
        description="Check a dataset before training: class sizes, unreadable files, exact "
        "and near duplicates, the same image under two classes, names that differ only in case.",
    )
    parser.add_argument("data", nargs="?", help="a folder (one sub-folder per class) or a CSV")
    parser.add_argument("--config", help="a recipe whose data section to check")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, as training")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--features",
        choices=("pixels", "imagenet"),
        help="what the label check learns from: 16×16 pixels (the default, no TensorFlow) or "
        "frozen ImageNet features of EfficientNet-Lite0 (the [pretrained] extra; far better "
        "on photos; loads TensorFlow)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `imgclf-audit` (`python -m imgclf.audit`); returns the exit code."""
    args = build_parser().parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.data and "=" in args.data and not Path(args.data).exists():  # an override
        overrides.insert(0, args.data)
        args.data = None
    if args.data:
        kind = "csv" if Path(args.data).suffix.lower() == ".csv" else "folder"
        overrides = [f"data.source={kind}", f"data.path={args.data}", *overrides]
    elif not args.config and not any(o.startswith("data.") for o in overrides):
        print(
            "error: give a folder, a CSV file, --config RECIPE or data.* overrides", file=sys.stderr
        )
        return 2
    if args.features:
        overrides.append(f"data.audit={args.features}")
    try:
        report = audit(overrides, args.config)
    except (UserError, OSError, MemoryError) as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a file no check foresaw: one line, and not the "found" code
        print(f"error: {type(exc).__name__}: {clip(exc)}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(format_table(report))
    return 1 if findings(report) else 0


if __name__ == "__main__":
    sys.exit(main())
