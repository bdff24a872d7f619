"""The report's PNG figures, drawn on matplotlib's Agg canvas without pyplot, so writing a report
needs no display and leaves no global figure state behind; matplotlib is imported on first use."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from valuedetect.experiments.report.scoring import ScoredConfig
from valuedetect.taxonomy import CATEGORY_NAMES

HEATMAP_FILE = "per-category-f1.png"
PARAMETERS_FILE = "f1-vs-parameters.png"
DATA_SIZE_FILE = "f1-vs-training-size.png"
COMPUTE_FILE = "f1-vs-compute.png"

LINE_FAMILIES = ("fine-tuning", "prompt-tuning", "prompt-zero-shot", "llm-prompting")
FAMILY_COLORS = {
    "baseline": "#7f7f7f",
    "fine-tuning": "#1f77b4",
    "prompt-zero-shot": "#2ca02c",
    "prompt-tuning": "#ff7f0e",
    "llm-prompting": "#d62728",
}


def new_figure(width: float, height: float) -> Any:
    """A matplotlib figure on the Agg canvas, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def log_x_png(figure: Any, ax: Any, xlabel: str, ylabel: str, title: str) -> bytes:
    """Finish a line figure with a log x axis, grid, legend and title, and render it."""
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    return png_bytes(figure)


def heatmap_png(runs: Sequence[ScoredConfig]) -> bytes:
    """Runs x categories, per-category F1; categories a run's arguments lack are grey."""
    matrix = np.array([[r.scores.per_category[c].get("f1", np.nan) for c in CATEGORY_NAMES] for r in runs])
    figure = new_figure(max(9.0, 0.55 * len(CATEGORY_NAMES) + 3), max(3.5, 0.45 * len(runs) + 2.8))
    ax = figure.subplots()
    cmap = _colormap("viridis").with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(CATEGORY_NAMES)), CATEGORY_NAMES, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(runs)), [r.name for r in runs], fontsize=8)
    if matrix.size <= 600:
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                label = ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                                color="black" if value > 0.6 else "white")
                label.set_in_layout(False)  # inside the axes anyway; spares the layout a bbox per cell
    figure.colorbar(image, ax=ax, label="F1 of the category", shrink=0.9)
    ax.set_title("Per-category F1 on validation (grey: no true positive among the run's arguments)", fontsize=10)
    return png_bytes(figure)


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def parameters_png(points: Sequence[tuple[ScoredConfig, float]], baselines: Sequence[tuple[ScoredConfig, float]],
                   ylabel: str) -> bytes:
    """F1 against total parameters, log-x, a line per family, baselines as horizontal lines."""
    figure = new_figure(8.5, 5.5)
    ax = figure.subplots()
    for family in LINE_FAMILIES:
        members = [(r, f) for r, f in points if r.record.family == family]
        if not members:
            continue
        color = FAMILY_COLORS.get(family)
        # One point of the line per base model, at its best run: extra heads add a few parameters,
        # and a line through exact counts would zigzag between variants of one model.
        best: dict[str, tuple[float, int]] = {}
        for run, f1 in members:
            if run.record.method == "ensemble":  # several models' parameters: not a point of the size line
                continue
            total = run.record.parameters_total or 0
            model = run.record.model or run.name
            if f1 > best.get(model, (-1.0, 0))[0]:
                best[model] = (f1, total)
            ax.annotate(run.name, (total, f1), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.scatter([r.record.parameters_total for r, _ in members], [f for _, f in members], color=color, s=22,
                   alpha=0.6, zorder=3)
        line = sorted((total, f1) for f1, total in best.values())
        ax.plot([x for x, _ in line], [y for _, y in line], marker="o", color=color,
                label=f"{family} (line: best run per model)", zorder=4)
    for run, f1 in baselines:
        ax.axhline(f1, color=FAMILY_COLORS["baseline"], linestyle="--", linewidth=1)
        ax.annotate(f"{run.name} (baseline)", (0.01, f1), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 3), fontsize=7, color=FAMILY_COLORS["baseline"])
    return log_x_png(figure, ax, "total parameters (log scale)", ylabel, "Official F1 against model size")


def data_size_png(lines: Sequence[tuple[str, str, list[ScoredConfig]]]) -> bytes:
    """F1 against training arguments, log-x, a line per (family, model, method, detector config)."""
    figure = new_figure(8.5, 5.5)
    ax = figure.subplots()
    styles = ("-", "--", ":", "-.")
    for number, (label, family, members) in enumerate(lines):
        xs = [r.record.training_arguments for r in members]
        ys = [r.scores.f1 for r in members]
        ax.plot(xs, ys, marker="o" if family == "fine-tuning" else "s", linestyle=styles[number % len(styles)],
                color=FAMILY_COLORS.get(family), label=label)
        for run, x, y in zip(members, xs, ys, strict=True):
            ax.annotate(run.name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    return log_x_png(figure, ax, "training arguments (log scale)", "official F1 on validation",
                     "Official F1 against training data size: fine-tuning vs prompt tuning")


def compute_png(points: Sequence[tuple[ScoredConfig, float]], ylabel: str) -> bytes:
    """F1 against CPU-seconds (training + scoring validation, log-x), one line per family through the
    configurations no cheaper one of the family beats: what each family buys at each cost."""
    figure = new_figure(8.5, 5.5)
    ax = figure.subplots()
    for family in ("baseline", *LINE_FAMILIES):
        members = sorted(((r.compute_seconds or 0.0, f1, r) for r, f1 in points if r.record.family == family),
                         key=lambda item: item[0])
        if not members:
            continue
        color = FAMILY_COLORS.get(family)
        ax.scatter([max(x, 1e-1) for x, _, _ in members], [y for _, y, _ in members], color=color, s=22, alpha=0.6,
                   zorder=3)
        for x, y, run in members:
            ax.annotate(run.name, (max(x, 1e-1), y), textcoords="offset points", xytext=(5, 3), fontsize=7)
        frontier, best = [], -1.0
        for x, y, _ in members:
            if y > best:
                frontier.append((max(x, 1e-1), y))
                best = y
        ax.plot([x for x, _ in frontier], [y for _, y in frontier], marker="o", color=color,
                label=f"{family} (line: best F1 at each cost)", zorder=4)
    return log_x_png(figure, ax, "CPU-seconds per seed: training + scoring validation (log scale)", ylabel,
                     "Official F1 against compute")
