"""Compare runs: what differs in their configs, a results table, and overlaid training curves.

Reads run directories only (config.yaml, history.csv, metrics.json) and never imports
TensorFlow, so comparing is instant. A run interrupted before evaluation (no metrics.json) is
still shown, with no test figures.

    python -m imgclf.compare runs/sigmoid-run runs/relu-run --out runs/compare
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.config import read_yaml
from imgclf.infra import spreadsheet
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.errors import UserError

FORMATS = ("table", "markdown", "csv", "json")
RESULT_COLUMNS = ("best_val_accuracy", "test_accuracy", "test_loss", "epochs", "seconds", "state")
CURVES = ("val_accuracy", "val_loss", "accuracy", "loss")
IGNORED_KEYS = frozenset({"name"})  # the run's label, not a setting that changes the result
MISSING = "—"
_ABSENT = object()  # a key one run's config lacks (an older schema), unlike an explicit null


@dataclass
class RunSummary:
    """What one run directory says about itself, read without loading the model."""

    name: str
    path: Path
    config: dict[str, Any]
    flat_config: dict[str, Any]
    history: list[runs.HistoryRow]
    test: dict[str, Any] | None
    best_val_accuracy: float | None
    best_val_loss: float | None
    epochs: int
    seconds: float | None
    state: str = "complete"  # runs.RunState: complete, running, interrupted or failed


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"hidden": [16]}}` -> `{"model.hidden": [16]}` (lists stay lists), in order."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _column(history: list[runs.HistoryRow], key: str) -> list[float]:
    return [r.get(key) for r in history if r.get(key) is not None]


def load_run(path: str | Path) -> RunSummary:
    """Read one run directory; raises `UserError` if `path` is not a run directory at all."""
    run = runs.Run(path)
    if not run.path.is_dir() or not (run.has(runs.CONFIG) or run.has(runs.HISTORY)):
        raise UserError(f"{path} is not a run directory (no {runs.CONFIG} or {runs.HISTORY})")
    try:
        config = read_yaml(run.file(runs.CONFIG)) if run.has(runs.CONFIG) else {}
        history = run.history
        metrics = run.metrics
    except (OSError, ValueError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read run files: {exc}") from None
    metrics = metrics if isinstance(metrics, dict) else {}
    test = metrics.get("test")
    val_acc, val_loss = _column(history, "val_accuracy"), _column(history, "val_loss")
    seconds = _column(history, "seconds")
    # history.csv is rewritten every epoch, so it counts epochs even for an interrupted run.
    epochs = len(history) if history else int(metrics.get("epochs_run", 0) or 0)
    return RunSummary(
        name=run.name,
        path=run.path,
        config=config,
        flat_config=flatten(config),
        history=history,
        test=test if isinstance(test, dict) else None,
        best_val_accuracy=max(val_acc) if val_acc else None,
        best_val_loss=min(val_loss) if val_loss else None,
        epochs=epochs,
        seconds=round(sum(seconds), 2) if seconds else None,  # history keeps 2 decimals
        state=runs.read_state(run.path).state,
    )


def config_differences(runs_: list[RunSummary]) -> list[str]:
    """Dotted config keys whose values differ between the runs (not `name`), in config order."""
    keys: dict[str, None] = {}  # an ordered set over all runs' keys
    for run in runs_:
        keys.update(dict.fromkeys(run.flat_config))
    return [
        key
        for key in keys
        if key not in IGNORED_KEYS
        and any(
            r.flat_config.get(key, _ABSENT) != runs_[0].flat_config.get(key, _ABSENT) for r in runs_
        )
    ]


def _comparison(runs_: list[RunSummary]) -> dict[str, Any]:
    differences = config_differences(runs_)
    rows = []
    for run in runs_:
        test = run.test or {}
        row: dict[str, Any] = {"run": run.name}
        row.update({key: run.flat_config.get(key) for key in differences})
        row.update(
            best_val_accuracy=run.best_val_accuracy,
            test_accuracy=test.get("accuracy"),
            test_loss=test.get("loss"),
            epochs=run.epochs,
            seconds=run.seconds,
            state=run.state,
        )
        rows.append(row)
    summaries = [
        {k: v for k, v in asdict(r).items() if k not in ("flat_config", "history")} for r in runs_
    ]
    for summary in summaries:
        summary["path"] = str(summary["path"])
    return {"runs": summaries, "differences": differences, "rows": rows}


def compare(paths: list[str | Path]) -> dict[str, Any]:
    """Compare run directories: `{"runs": [...], "differences": [...], "rows": [...]}`.

    Each row holds `run`, one entry per differing config key, `best_val_accuracy`,
    `test_accuracy`, `test_loss` (None without metrics.json), `epochs` and `seconds`.
    """
    return _comparison([load_run(p) for p in paths])


def _cell(key: str, value: Any) -> str:
    """A value as the tables show it: config values YAML-like, results rounded."""
    if value is None:
        return MISSING if key in RESULT_COLUMNS else "null"
    if isinstance(value, bool):
        return str(value).lower()
    if key == "seconds":
        return f"{value:.1f}"
    if key in RESULT_COLUMNS and key != "epochs" and isinstance(value, (int, float)):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell("", v) for v in value) + "]"
    return str(value)


def _columns(result: dict[str, Any]) -> list[str]:
    return ["run", *result["differences"], *RESULT_COLUMNS]


def format_table(result: dict[str, Any]) -> str:
    """An aligned plain-text table; numbers right-aligned."""
    cols = _columns(result)
    cells = [cols] + [[_cell(c, row[c]) for c in cols] for row in result["rows"]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            v.rjust(w) if c in RESULT_COLUMNS else v.ljust(w)
            for c, v, w in zip(cols, line, widths, strict=True)
        ).rstrip()
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def format_markdown(result: dict[str, Any]) -> str:
    """A GitHub-flavoured Markdown table."""
    cols = _columns(result)
    align = ["---:" if c in RESULT_COLUMNS else "---" for c in cols]
    lines = [cols, align] + [
        [_cell(c, row[c]).replace("|", "\\|") for c in cols] for row in result["rows"]
    ]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def format_csv(result: dict[str, Any]) -> str:
    """CSV with full-precision numbers; missing results are empty cells."""
    cols = _columns(result)
    buffer = io.StringIO()
    writer = spreadsheet.writer(buffer, lineterminator="\n")  # run names: never formulas
    writer.writerow(cols)
    for row in result["rows"]:
        # csv writes None as an empty cell.
        writer.writerow([row[c] if c in RESULT_COLUMNS else _cell(c, row[c]) for c in cols])
    return buffer.getvalue()


def _label(run: RunSummary, differences: list[str]) -> str:
    settings = ", ".join(f"{k}={_cell(k, run.flat_config.get(k))}" for k in differences)
    return f"{run.name} ({settings})" if settings else run.name


def plot_comparison(runs_: list[RunSummary], path: str | Path) -> None:
    """Overlaid curves (val_accuracy, val_loss, accuracy, loss per epoch), one colour per run,
    labelled with the run name and its differing config values; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from imgclf.plots import _save

    differences = config_differences(runs_)
    colours = plt.get_cmap("tab10" if len(runs_) <= 10 else "tab20").colors
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, metric in zip(axes.flat, CURVES, strict=True):
        plotted = False
        for i, run in enumerate(runs_):
            # x is the row number, not the epoch column: a later phase may restart its count.
            points = [
                (n, r.get(metric))
                for n, r in enumerate(run.history, 1)
                if r.get(metric) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, "-o", markersize=3, color=colours[i % len(colours)])
                plotted = True
        if not plotted:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=colours[i % len(colours)], marker="o") for i in range(len(runs_))
    ]
    labels = [_label(run, differences) for run in runs_]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(runs_), 2), frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(runs_) + 1) // 2), 1, 1))
    _save(fig, path)


def write_outputs(runs_: list[RunSummary], out: str | Path) -> list[Path]:
    """Write `out/comparison.md`, `out/comparison.csv` and `out/curves.png` atomically."""
    out = Path(out)
    result = _comparison(runs_)
    diffs = ", ".join(f"`{k}`" for k in result["differences"]) or "none"
    sources = "".join(f"- `{r.name}`: `{r.path}`\n" for r in runs_)
    markdown = (
        f"# Run comparison\n\n{sources}\nConfig differences: {diffs}\n\n"
        f"{format_markdown(result)}\n![training curves](curves.png)\n"
    )
    paths = [out / "comparison.md", out / "comparison.csv", out / "curves.png"]
    runs.write_text(paths[0], markdown)
    runs.write_text(paths[1], format_csv(result))
    plot_comparison(runs_, paths[2])
    return paths


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf-compare` argument parser."""
    parser = ArgumentParser(
        prog="imgclf-compare",
        description="Compare training runs: config differences, results, overlaid curves.",
        epilog="example:\n  imgclf-compare runs/sigmoid-run runs/relu-run --out runs/compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", help="also write comparison.md, comparison.csv, curves.png here")
    parser.add_argument("--format", choices=FORMATS, default="table", help="stdout format")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m imgclf.compare` and `imgclf-compare`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        loaded = [load_run(p) for p in args.run_dirs]
        result = _comparison(loaded)
        written = write_outputs(loaded, args.out) if args.out else []
    except (UserError, OSError) as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        formatter = {"table": format_table, "markdown": format_markdown, "csv": format_csv}
        sys.stdout.write(formatter[args.format](result))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
