"""The report of an experiment: a results folder -> report.md, report.html and PNG figures.

Every score is recomputed from the runs' files and the labels instead of being read back from the
records, so that intervals, subsets and significance tests are made the same way for every run,
however and whenever it was produced. Runs may score different subsets of validation (slow LLM
runs score a seeded sample): every comparison is made on the argument IDs both sides scored, and
every number says how many arguments it rests on.

The report is built as a list of blocks (headings, paragraphs, tables, figures) and rendered twice:
as Markdown that refers to the PNG files, and as a self-contained HTML page with the PNGs embedded.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import atomic_write_text, ensure_folder, load_split, read_labels
from valuedetect.errors import InputError
from valuedetect.experiments.records import EXPERIMENT_FILE, FAMILIES, RECORD_FILE, RunRecord, read_records
from valuedetect.metrics import Comparison, Scores, compare, official_f1, score
from valuedetect.taxonomy import CATEGORY_NAMES

SECTION_TITLES: tuple[str, ...] = (
    "1. Experiment",
    "2. Main results (validation)",
    "3. Per-category F1",
    "4. F1 against model size",
    "5. F1 against training data size",
    "6. Significance against the best run",
    "7. Test split",
    "8. Verdicts on the paper's claims",
    "9. NLI side task",
)
HEATMAP_FILE = "per-category-f1.png"
PARAMETERS_FILE = "f1-vs-parameters.png"
DATA_SIZE_FILE = "f1-vs-training-size.png"

METRIC_SENTENCE = (
    "The measure is the official Touche23-ValueEval F1: over the value categories with at least one "
    "true positive, P is the mean of per-category precision, R the mean of per-category recall, and "
    "F1 = 2PR/(P+R) (not the mean of per-category F1, which is shown beside it and labelled as such)."
)
NO_TEST_LABELS = (
    "Test labels were not available (the test split is blind); pass --test-labels FILE to score "
    "test-run.tsv files."
)
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
ALPHA = 0.05
SMALL_MODEL = 500e6
COMPETITIVE_MARGIN = 0.03
LINE_FAMILIES = ("fine-tuning", "prompt-tuning", "prompt-zero-shot", "llm-prompting")
DATA_SIZE_FAMILIES = ("fine-tuning", "prompt-tuning")
FAMILY_COLORS = {
    "baseline": "#7f7f7f",
    "fine-tuning": "#1f77b4",
    "prompt-zero-shot": "#2ca02c",
    "prompt-tuning": "#ff7f0e",
    "llm-prompting": "#d62728",
}
DASH = "—"


# ----------------------------------------------------------------------------- blocks


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    lead: str = ""  # shown in bold before the text


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    file: str
    caption: str
    png: bytes


Block = Heading | Paragraph | Bullets | Table | Image


# ----------------------------------------------------------------------------- scored runs


@dataclass(eq=False)
class ScoredRun:
    """One run's predictions aligned with the labels of the arguments it scored."""

    record: RunRecord
    ids: list[str]
    truth: np.ndarray
    pred: np.ndarray
    scores: Scores
    ignored: int = 0  # argument IDs of the run file that have no labels
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {arg_id: i for i, arg_id in enumerate(self.ids)}

    @property
    def name(self) -> str:
        return self.record.name

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and predictions of the given arguments, in that order."""
        take = [self.index[i] for i in ids]
        return self.truth[take], self.pred[take]

    def f1_on(self, ids: Sequence[str]) -> float:
        truth, pred = self.rows(ids)
        return official_f1(truth, pred)


@dataclass
class Unscored:
    record: RunRecord
    reason: str


@dataclass
class Pair:
    """A paired test of run a against run b on the arguments both scored."""

    a: ScoredRun
    b: ScoredRun
    n: int
    result: Comparison

    @property
    def difference(self) -> float:
        return self.result.difference

    @property
    def significant(self) -> bool:
        return self.result.p_value < ALPHA


@dataclass
class Context:
    """Everything the sections read: records, scored runs and cached paired tests."""

    name: str
    records: list[RunRecord]
    pending: list[str]
    runs: list[ScoredRun]
    unscored: list[Unscored]
    common: list[str]
    resamples: int
    seed: int
    test: dict[str, ScoredRun | str] | None = None
    _pairs: dict[tuple[str, str], Pair | None] = field(default_factory=dict)

    def pair(self, a: ScoredRun, b: ScoredRun) -> Pair | None:
        """Paired test of a against b on their shared IDs (None when they share none)."""
        key = (a.name, b.name)
        if key not in self._pairs:
            self._pairs[key] = paired_test(a, b, self.resamples, self.seed)
        return self._pairs[key]

    @property
    def same_validation(self) -> bool:
        return all(len(r.ids) == len(self.common) for r in self.runs)


def paired_test(a: ScoredRun, b: ScoredRun, resamples: int, seed: int) -> Pair | None:
    """metrics.compare on the intersection of two runs' argument IDs."""
    shared = [i for i in a.ids if i in b.index]
    if not shared:
        return None
    truth, pred_a = a.rows(shared)
    _, pred_b = b.rows(shared)
    return Pair(a, b, len(shared), compare(truth, pred_a, pred_b, resamples=resamples, seed=seed))


def score_run_file(
    record: RunRecord, path: Path, label_index: dict[str, int], labels: np.ndarray, resamples: int, seed: int
) -> ScoredRun | Unscored:
    """Score a run file against the labels of the IDs it shares with them, with a bootstrap interval."""
    if not path.is_file():
        return Unscored(record, f"run file not found: {path}")
    try:
        run_ids, pred = read_labels(path, level=2)
    except InputError as error:
        return Unscored(record, str(error))
    keep = [k for k, arg_id in enumerate(run_ids) if arg_id in label_index]
    if not keep:
        return Unscored(record, f"no argument ID of {path} has a label")
    ids = [run_ids[k] for k in keep]
    truth = labels[[label_index[i] for i in ids]]
    predictions = pred[keep]
    scores = score(truth, predictions, bootstrap=resamples, seed=seed)
    return ScoredRun(record, ids, truth, predictions, scores, ignored=len(run_ids) - len(keep))


def run_file(results: Path, record: RunRecord, key: str) -> Path | None:
    """Where a record's output lies: relative paths are relative to the run's folder."""
    relative = record.outputs.get(key)
    if not relative:
        return None
    return results / record.name / relative


def score_records(
    results: Path, records: Sequence[RunRecord], key: str, label_ids: Sequence[str], labels: np.ndarray,
    resamples: int, seed: int,
) -> list[ScoredRun | Unscored]:
    """Score one output (validation_run or test_run) of each record."""
    label_index = {arg_id: i for i, arg_id in enumerate(label_ids)}
    out: list[ScoredRun | Unscored] = []
    for record in records:
        path = run_file(results, record, key)
        if path is None:
            out.append(Unscored(record, f"the record names no {key} file"))
        else:
            out.append(score_run_file(record, path, label_index, labels, resamples, seed))
    return out


def common_ids(runs: Sequence[ScoredRun]) -> list[str]:
    """The argument IDs every run scored, in the first run's order."""
    if not runs:
        return []
    shared = set(runs[0].ids)
    for run in runs[1:]:
        shared &= set(run.ids)
    return [i for i in runs[0].ids if i in shared]


def best_run(runs: Sequence[ScoredRun]) -> ScoredRun | None:
    """The run with the highest F1 on the arguments all of them scored (own F1 if they share none)."""
    if not runs:
        return None
    shared = common_ids(runs)
    if shared:
        return max(runs, key=lambda r: r.f1_on(shared))
    return max(runs, key=lambda r: r.scores.f1)


# ----------------------------------------------------------------------------- reading


def family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def read_experiment(results: Path) -> dict[str, Any]:
    """experiment.json, or {} when the folder has none; a broken one is a clear error."""
    path = results / EXPERIMENT_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path)
    return data


def load_records(results: Path) -> list[RunRecord]:
    """The folder's records; a missing folder or one without records is a clear error."""
    if not results.exists():
        raise InputError("no such results folder", results)
    if not results.is_dir():
        raise InputError("is not a folder; expected the results folder of an experiment", results)
    records = read_records(results)
    if not records:
        raise InputError(
            f"no run records (<run>/{RECORD_FILE}) in this results folder: no run of the experiment has "
            "finished yet, or this is not a results folder",
            results,
        )
    return records


def validation_labels(data_dir: str | Path | None) -> tuple[list[str], np.ndarray]:
    split = load_split("validation", data_dir)
    if split.labels is None:
        raise InputError("the validation split has no labels-validation.tsv", data_dir)
    return split.ids, split.labels


def build_context(
    results: Path, test_labels: str | Path | None, data_dir: str | Path | None, resamples: int, seed: int
) -> Context:
    """Read records and labels and score every done values-task run."""
    meta = read_experiment(results)
    records = load_records(results)
    have = {r.name for r in records}
    pending = [name for name in meta.get("runs", []) if name not in have]
    values = sorted((r for r in records if r.done and r.task == "values"), key=lambda r: family_rank(r.family))
    runs: list[ScoredRun] = []
    unscored: list[Unscored] = []
    if values:
        ids, labels = validation_labels(data_dir)
        for item in score_records(results, values, "validation_run", ids, labels, resamples, seed):
            (runs if isinstance(item, ScoredRun) else unscored).append(item)
    context = Context(
        name=str(meta.get("name") or results.resolve().name), records=records, pending=pending, runs=runs,
        unscored=unscored, common=common_ids(runs), resamples=resamples, seed=seed,
    )
    if test_labels is not None:
        test_ids, test_matrix = read_labels(test_labels, level=2)
        scored = score_records(results, [r.record for r in runs], "test_run", test_ids, test_matrix, resamples, seed)
        context.test = {item.record.name: item if isinstance(item, ScoredRun) else item.reason for item in scored}
    return context


# ----------------------------------------------------------------------------- formatting


def f3(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.3f}"


def interval(ci: Sequence[float] | None, signed: bool = False) -> str:
    if not ci:
        return DASH
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def count(value: int | None) -> str:
    """A parameter count, compactly: 22.7M, 1.10B."""
    if value is None:
        return DASH
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def inference_time(record: RunRecord) -> str:
    """The runner records inference time per argument (and says so in the notes); older records in total."""
    if record.inference_seconds is None:
        return DASH
    if any("per argument" in note for note in record.notes):
        return f"{record.inference_seconds * 1000:.3f} ms/argument"
    return f"{record.inference_seconds:.1f} s"


def compact(mapping: dict[str, Any]) -> str:
    items = [f"{k}={v}" for k, v in mapping.items() if v not in (None, "", [], {})]
    return ", ".join(items) or DASH


def with_ci(value: float | None, ci: Sequence[float] | None) -> str:
    return f"{f3(value)} {interval(ci)}"


def pvalue(p: float) -> str:
    return f"{p:.3f}"


def size_setting(record: RunRecord) -> str:
    k, fraction = record.spec.get("training_per_category"), record.spec.get("training_fraction")
    if k is not None:
        return f"{k} per category"
    if fraction is not None and fraction < 1:
        return f"{fraction:.0%} of training"
    return "full"


def pair_text(pair: Pair, label_a: str, label_b: str) -> str:
    """The evidence of one paired test in a sentence."""
    r = pair.result
    verdict = "significant" if pair.significant else "not significant"
    return (
        f"{pair.a.name} ({label_a}, F1 {f3(r.f1_a)}) vs {pair.b.name} ({label_b}, F1 {f3(r.f1_b)}) on their "
        f"{pair.n} shared validation arguments: difference {r.difference:+.3f}, 95% CI "
        f"{interval(r.ci95, signed=True)}, p = {pvalue(r.p_value)} ({verdict} at {ALPHA})"
    )


# ----------------------------------------------------------------------------- figures


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


def heatmap_png(runs: Sequence[ScoredRun]) -> bytes:
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


def parameters_png(points: Sequence[tuple[ScoredRun, float]], baselines: Sequence[tuple[ScoredRun, float]],
                   ylabel: str) -> bytes:
    """F1 against total parameters, log-x, a line per family, baselines as horizontal lines."""
    figure = new_figure(8.5, 5.5)
    ax = figure.subplots()
    for family in LINE_FAMILIES:
        members = [(r, f) for r, f in points if r.record.family == family]
        if not members:
            continue
        color = FAMILY_COLORS.get(family)
        best: dict[int, float] = {}
        for run, f1 in members:
            total = run.record.parameters_total or 0
            best[total] = max(best.get(total, -1.0), f1)
            ax.annotate(run.name, (total, f1), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.scatter([r.record.parameters_total for r, _ in members], [f for _, f in members], color=color, s=22,
                   alpha=0.6, zorder=3)
        sizes = sorted(best)
        ax.plot(sizes, [best[x] for x in sizes], marker="o", color=color, label=f"{family} (line: best per size)",
                zorder=4)
    for run, f1 in baselines:
        ax.axhline(f1, color=FAMILY_COLORS["baseline"], linestyle="--", linewidth=1)
        ax.annotate(f"{run.name} (baseline)", (0.01, f1), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 3), fontsize=7, color=FAMILY_COLORS["baseline"])
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel("total parameters (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Official F1 against model size", fontsize=10)
    return png_bytes(figure)


def data_size_png(lines: Sequence[tuple[str, str, list[ScoredRun]]]) -> bytes:
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
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel("training arguments (log scale)")
    ax.set_ylabel("official F1 on validation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Official F1 against training data size: fine-tuning vs prompt tuning", fontsize=10)
    return png_bytes(figure)


# ----------------------------------------------------------------------------- sections


def header_section(ctx: Context) -> list[Block]:
    """Name, run counts, machines and versions, the metric and the split."""
    done = [r for r in ctx.records if r.done]
    failed = [r for r in ctx.records if r.status == "failed"]
    blocks: list[Block] = [
        Heading(SECTION_TITLES[0]),
        Paragraph(f"Experiment {ctx.name}: {len(done)} runs done, {len(failed)} failed, {len(ctx.pending)} pending"
                  + (f" ({', '.join(ctx.pending)})." if ctx.pending else ".")),
        Paragraph(METRIC_SENTENCE),
        Paragraph("Split: validation (the official validation split, or the subset of it a run scored, as noted); "
                  "for the test split see section 7."),
    ]
    for title, key in (("Machines", "machine"), ("Package versions", "versions")):
        blocks.append(Paragraph(f"{title} (from the records):"))
        blocks.append(Bullets(distinct_settings(ctx.records, key) or ["not recorded"]))
    return blocks


def distinct_settings(records: Sequence[RunRecord], key: str) -> list[str]:
    """Each distinct machine (or versions) dict with the runs that recorded it."""
    groups: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for record in records:
        value = getattr(record, key) or {}
        if not value:
            continue
        text = json.dumps(value, sort_keys=True)
        groups.setdefault(text, []).append(record.name)
        shown[text] = compact(value)
    if len(groups) == 1:
        (text,) = groups
        return [f"{shown[text]} (every run that recorded it)"]
    return [f"{shown[t]} (runs: {', '.join(names)})" for t, names in groups.items()]


def main_section(ctx: Context) -> list[Block]:
    """The main table (Sun et al. 2024, Tables 3-4), then failed and unscored runs."""
    blocks: list[Block] = [Heading(SECTION_TITLES[1])]
    if not ctx.runs:
        blocks.append(Paragraph("No values-task run is done and scored in this experiment."))
    else:
        n_common = len(ctx.common)
        header = ["Family", "Run", "Model", "F1 [95% CI]", "P", "R",
                  "Mean of per-category F1 (not the official measure)", "n (validation)",
                  f"F1 on common subset (n={n_common})", "Trainable / total parameters",
                  "Train time (s)", "Inference time", "Wall time (s)", "Budget"]
        blocks.append(Table(header, [main_row(ctx, run) for run in ctx.runs]))
        common = (f"The common subset is the {n_common} validation arguments scored by every run in this table."
                  if n_common else "The runs share no validation argument, so there is no common subset.")
        blocks.append(Paragraph(
            f"F1, P, R and the interval (percentile bootstrap, {ctx.resamples} resamples of the arguments, seed "
            f"{ctx.seed}) are recomputed from each run's validation-run.tsv. {common}"))
        notes = [f"{run.name}: {run.record.validation_subset}" for run in ctx.runs if run.record.validation_subset]
        notes += [f"{run.name}: {run.ignored} argument IDs of the run file have no validation label and were ignored"
                  for run in ctx.runs if run.ignored]
        notes += [note for note in map(stale_note, ctx.runs) if note]
        if notes:
            blocks += [Paragraph("Notes on the validation arguments:"), Bullets(notes)]
    blocks += failed_blocks(ctx)
    return blocks


def main_row(ctx: Context, run: ScoredRun) -> list[str]:
    r, s = run.record, run.scores
    n = f"{s.n}" + (" (subset, see below)" if r.validation_subset else "")
    return [
        r.family, r.name, r.model or DASH, with_ci(s.f1, s.ci95), f3(s.precision), f3(s.recall), f3(s.mean_f1), n,
        f3(run.f1_on(ctx.common)) if ctx.common else DASH,
        f"{count(r.parameters_trainable)} / {count(r.parameters_total)}",
        seconds(r.train_seconds), inference_time(r), seconds(r.wall_seconds), compact(r.budget),
    ]


def stale_note(run: ScoredRun) -> str | None:
    """Flag a run file that no longer gives the F1 its record states (on as many arguments)."""
    recorded, n = run.record.validation.get("f1"), run.record.validation.get("n")
    if recorded is None or n != run.scores.n or abs(recorded - run.scores.f1) < 5e-4:
        return None
    return (f"{run.name}: the record states F1 {f3(recorded)} on {n} arguments, the run file gives "
            f"{f3(run.scores.f1)} (the table shows the latter)")


def failed_blocks(ctx: Context) -> list[Block]:
    failed = [r for r in ctx.records if r.status == "failed"]
    blocks: list[Block] = []
    if failed:
        blocks.append(Paragraph("Failed runs:"))
        blocks.append(Table(["Run", "Task", "Family", "Model", "Error"],
                            [[r.name, r.task, r.family, r.model or DASH, short_error(r.error)] for r in failed]))
    else:
        blocks.append(Paragraph("No run failed."))
    if ctx.unscored:
        blocks.append(Paragraph("Done runs that could not be scored (left out of every table):"))
        blocks.append(Bullets([f"{u.record.name}: {u.reason}" for u in ctx.unscored]))
    return blocks


def short_error(error: str | None) -> str:
    """The last line of an error (a traceback ends with the message), at most 300 characters."""
    if not error:
        return "no error recorded"
    lines = [line for line in error.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else error
    return last if len(last) <= 300 else last[:297] + "..."


def per_category_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[2])]
    if not ctx.runs:
        return [*blocks, Paragraph("No values-task run to break down by category in this experiment.")]
    rows = [[run.name, str(run.scores.n)] + [f3(run.scores.per_category[c].get("f1")) for c in CATEGORY_NAMES]
            for run in ctx.runs]
    blocks.append(Table(["Run", "n", *CATEGORY_NAMES], rows))
    blocks.append(Image(HEATMAP_FILE, "Per-category F1 of each run on the validation arguments it scored (n in the "
                        "table); a dash or grey cell: no true positive of that category among them.",
                        heatmap_png(ctx.runs)))
    return blocks


def parameters_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[3])]
    if not ctx.runs:
        return [*blocks, Paragraph("No values-task run to plot in this experiment.")]
    use_common = not ctx.same_validation and bool(ctx.common)
    def f1_of(run: ScoredRun) -> float:
        return run.f1_on(ctx.common) if use_common else run.scores.f1
    def n_of(run: ScoredRun) -> int:
        return len(ctx.common) if use_common else run.scores.n
    known = [r for r in ctx.runs if (r.record.parameters_total or 0) > 0]
    points = [(r, f1_of(r)) for r in known if r.record.family in LINE_FAMILIES]
    baselines = [(r, f1_of(r)) for r in ctx.runs if r.record.family == "baseline"]
    rows = [[r.name, r.record.family, r.record.model or DASH, count(r.record.parameters_total), f3(f1_of(r)),
             str(n_of(r))] for r in ctx.runs]
    if use_common:
        which = (f"F1 on the {len(ctx.common)} validation arguments every run scored (the runs' validation sets "
                 "differ)")
    elif ctx.same_validation:
        which = f"F1 on the {len(ctx.common)} validation arguments (every run scored the same ones)"
    else:
        which = "each run's F1 on its own validation arguments (the runs share no argument, so n differs)"
    if points:
        caption = (f"Official F1 against total parameter count (log scale): every run as a point, one line per family "
                   f"through its best run at each size, baselines as dashed horizontal lines; y: {which}.")
        ylabel = (f"official F1 (n={len(ctx.common)})" if use_common or ctx.same_validation
                  else "official F1 (own validation arguments)")
        blocks.append(Image(PARAMETERS_FILE, caption, parameters_png(points, baselines, ylabel)))
    else:
        blocks.append(Paragraph("No run of a model family has a recorded parameter count: no figure."))
    missing = [r.name for r in ctx.runs if r not in known and r.record.family != "baseline"]
    if missing:
        blocks.append(Paragraph(f"Not plotted (no parameter count recorded): {', '.join(missing)}."))
    blocks.append(Paragraph(f"The points; F1 is {which}:"))
    blocks.append(Table(["Run", "Family", "Model", "Total parameters", "F1", "n"], rows))
    return blocks


def data_size_groups(runs: Sequence[ScoredRun]) -> list[tuple[str, str, list[ScoredRun]]]:
    """Runs alike in everything but training size: (label, family, runs by size) with >= 2 sizes."""
    groups: dict[tuple[str, str, str, str], list[ScoredRun]] = {}
    for run in runs:
        r = run.record
        if r.family not in DATA_SIZE_FAMILIES or r.training_arguments is None:
            continue
        key = (r.family, r.model or "", r.method or str(r.spec.get("method", "")),
               json.dumps(r.spec.get("detector", {}), sort_keys=True, default=str))
        groups.setdefault(key, []).append(run)
    lines = []
    seen: dict[tuple[str, str], int] = {}
    for (family, model, method, _), members in groups.items():
        if len({m.record.training_arguments for m in members}) < 2:
            continue
        seen[(family, model)] = seen.get((family, model), 0) + 1
        suffix = f" #{seen[(family, model)]}" if seen[(family, model)] > 1 else ""
        label = f"{family}: {model or method}{suffix}"
        lines.append((label, family, sorted(members, key=lambda m: m.record.training_arguments or 0)))
    return lines


def data_size_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[4])]
    lines = data_size_groups(ctx.runs)
    if not lines:
        return [*blocks, Paragraph("No data-size curve in this experiment: no fine-tuning or prompt-tuning setting "
                                   "was run at two or more training sizes.")]
    blocks.append(Image(DATA_SIZE_FILE, "Official F1 on validation against the number of training arguments (log "
                        "scale); one line per family, model, method and detector settings (runs alike except the "
                        "training size); n per point in the table.", data_size_png(lines)))
    rows = [[label, run.name, str(run.record.training_arguments), size_setting(run.record),
             with_ci(run.scores.f1, run.scores.ci95), str(run.scores.n)]
            for label, _, members in lines for run in members]
    blocks.append(Table(["Line", "Run", "Training arguments", "Training data", "F1 [95% CI]", "n"], rows))
    return blocks


def significance_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[5])]
    if len(ctx.runs) < 2:
        return [*blocks, Paragraph("Fewer than two scored values-task runs: nothing to compare in this experiment.")]
    best = best_run(ctx.runs)
    assert best is not None
    basis = (f"the highest F1 on the {len(ctx.common)} arguments every run scored" if ctx.common
             else "the highest F1 on its own validation arguments, as the runs share no argument")
    blocks.append(Paragraph(
        f"Best run: {best.name}, chosen by {basis}. Each run is compared with it by a paired test (approximate "
        f"randomization for p, paired bootstrap for the interval, {ctx.resamples} resamples) on the validation "
        f"arguments both scored; significant means p < {ALPHA}."))
    rows = []
    for run in ctx.runs:
        if run is best:
            rows.append([run.name, f3(run.scores.f1), f3(run.scores.f1), "reference", DASH, DASH, DASH,
                         str(run.scores.n)])
            continue
        pair = ctx.pair(run, best)
        if pair is None:
            rows.append([run.name, DASH, DASH, "no shared arguments", DASH, DASH, DASH, "0"])
            continue
        r = pair.result
        rows.append([run.name, f3(r.f1_a), f3(r.f1_b), f"{r.difference:+.3f}", interval(r.ci95, signed=True),
                     pvalue(r.p_value), "yes" if pair.significant else "no", str(pair.n)])
    header = ["Run", "F1 of run (shared)", f"F1 of {best.name} (shared)", "Difference (run - best)",
              "95% CI of difference", "p", f"Significant at {ALPHA}", "n (shared)"]
    blocks.append(Table(header, rows))
    return blocks


def test_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[6])]
    if ctx.test is None:
        return [*blocks, Paragraph(NO_TEST_LABELS)]
    if not ctx.runs:
        return [*blocks, Paragraph("No scored values-task run to score on test in this experiment.")]
    rows = []
    for run in ctx.runs:
        item = ctx.test.get(run.name)
        if isinstance(item, ScoredRun):
            test_cells = [with_ci(item.scores.f1, item.scores.ci95), f3(item.scores.precision),
                          f3(item.scores.recall), str(item.scores.n)]
        else:
            test_cells = [item or "not scored", DASH, DASH, "0"]
        rows.append([run.name, with_ci(run.scores.f1, run.scores.ci95), str(run.scores.n), *test_cells])
    blocks.append(Paragraph("Each run's test-run.tsv scored against the given test labels (IDs in both), beside its "
                            "validation score; intervals as in section 2."))
    blocks.append(Table(["Run", "Validation F1 [95% CI]", "n (validation)", "Test F1 [95% CI]", "Test P", "Test R",
                         "n (test)"], rows))
    return blocks


def nli_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[8])]
    nli = [r for r in ctx.records if r.task == "nli" and r.done]
    if not nli:
        return [*blocks, Paragraph("The experiment has no NLI runs.")]
    rows = []
    for r in nli:
        v = r.validation
        rows.append([r.name, r.family, r.model or DASH, with_ci(v.get("accuracy"), v.get("ci95")),
                     f3(v.get("macro_f1")), str(v.get("n", DASH)),
                     f"{count(r.parameters_trainable)} / {count(r.parameters_total)}", seconds(r.train_seconds)])
    blocks.append(Paragraph("Accuracy and macro F1 as the runs recorded them, on their NLI validation pairs."))
    blocks.append(Table(["Run", "Family", "Model", "Accuracy [95% CI]", "Macro F1", "n",
                         "Trainable / total parameters", "Train time (s)"], rows))
    return blocks


# ----------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    number: int
    claim: str
    outcome: str
    rule: str
    evidence: list[str]


def is_full_data(record: RunRecord) -> bool:
    fraction = record.spec.get("training_fraction")
    return record.spec.get("training_per_category") is None and (fraction is None or fraction >= 1)


def setting(run: ScoredRun, key: str, default: Any) -> Any:
    value = run.record.detector_config.get(key, default)
    return default if value is None else value


def is_plain(run: ScoredRun) -> bool:
    """No contrastive learning: neither as an extra loss nor as a pre-training stage."""
    weight = float(setting(run, "contrastive_weight", 0.0))
    return weight == 0 and int(setting(run, "contrastive_pretrain_epochs", 0)) == 0


def select(ctx: Context, family: str, test: Callable[[ScoredRun], bool] = lambda run: True) -> list[ScoredRun]:
    return [run for run in ctx.runs if run.record.family == family and test(run)]


def by_model(runs: Sequence[ScoredRun]) -> dict[str, list[ScoredRun]]:
    out: dict[str, list[ScoredRun]] = {}
    for run in runs:
        out.setdefault(run.record.model or DASH, []).append(run)
    return out


def two_sided(pair: Pair) -> str:
    """supported if a is significantly better, not supported if b is, else inconclusive."""
    if pair.significant and pair.difference > 0:
        return SUPPORTED
    if pair.significant and pair.difference < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def claim_small_models(ctx: Context) -> Verdict:
    claim = "Below ~500M parameters, fine-tuning beats prompt tuning."
    rule = ("Best full-data fine-tuning run vs best full-data prompt-tuning run, both with fewer than 500M "
            "parameters in total (best: highest F1 on the arguments all candidates scored), paired test on their "
            "shared IDs: supported if fine-tuning is better and p < 0.05, not supported if prompt tuning is better "
            "and p < 0.05, otherwise inconclusive.")
    def small(run: ScoredRun) -> bool:
        total = run.record.parameters_total
        return is_full_data(run.record) and total is not None and total < SMALL_MODEL
    ft, pt = best_run(select(ctx, "fine-tuning", small)), best_run(select(ctx, "prompt-tuning", small))
    missing = [f"no runs of full-data {name} with fewer than 500M parameters" for name, best in
               (("fine-tuning", ft), ("prompt-tuning", pt)) if best is None]
    if ft is None or pt is None:
        large = [f"{run.name} ({count(run.record.parameters_total)})" for family in ("fine-tuning", "prompt-tuning")
                 for run in select(ctx, family, lambda run: is_full_data(run.record) and not small(run))]
        if large:
            missing.append(f"left out (500M parameters or more, or no count recorded): {', '.join(large)}")
        return Verdict(1, claim, INCONCLUSIVE, rule, missing)
    pair = ctx.pair(ft, pt)
    if pair is None:
        return Verdict(1, claim, INCONCLUSIVE, rule, [f"{ft.name} and {pt.name} share no validation argument"])
    return Verdict(1, claim, two_sided(pair), rule, [pair_text(pair, "fine-tuning", "prompt tuning")])


def claim_multiple_heads(ctx: Context) -> Verdict:
    claim = "Multiple heads beat a single head."
    rule = ("For each model: best full-data fine-tuning run with multiple heads vs best with a single head, both "
            "without contrastive learning (contrastive_weight 0, contrastive_pretrain_epochs 0), paired test on "
            "shared IDs. Not supported if a single head is significantly better (p < 0.05) for any model; supported "
            "if multiple heads are significantly better for at least one model; otherwise inconclusive.")
    plain = select(ctx, "fine-tuning", lambda run: is_full_data(run.record) and is_plain(run))
    pairs = []
    for model, runs in by_model(plain).items():
        multi = best_run([r for r in runs if setting(r, "heads", "single") == "multiple"])
        single = best_run([r for r in runs if setting(r, "heads", "single") == "single"])
        pair = ctx.pair(multi, single) if multi and single else None
        if pair is not None:
            pairs.append((model, pair))
    if not pairs:
        return Verdict(2, claim, INCONCLUSIVE, rule, [
            "no runs of the same model with both single and multiple heads (full data, no contrastive learning)"])
    outcomes = [two_sided(pair) for _, pair in pairs]
    outcome = (NOT_SUPPORTED if NOT_SUPPORTED in outcomes else SUPPORTED if SUPPORTED in outcomes else INCONCLUSIVE)
    evidence = [f"model {model}: {pair_text(pair, 'multiple heads', 'single head')}" for model, pair in pairs]
    return Verdict(2, claim, outcome, rule, evidence)


def claim_contrastive(ctx: Context) -> Verdict:
    claim = "Contrastive learning helps, and as an extra loss more than as pre-training."
    rule = ("For each model, among full-data fine-tuning runs with multiple heads: best plain run (contrastive weight "
            "0, no contrastive pre-training) vs best extra-loss run (weight > 0, no pre-training) vs best "
            "pre-training run (contrastive_pretrain_epochs > 0), paired tests on shared IDs. A model supports the "
            "claim if extra loss beats plain significantly (p < 0.05) and also beats pre-training (any positive "
            "difference); it contradicts it if extra loss is significantly worse than plain. Overall: not supported "
            "if any model contradicts, supported if any model supports, otherwise inconclusive.")
    multi = select(ctx, "fine-tuning", lambda r: is_full_data(r.record) and setting(r, "heads", "single") == "multiple")
    evidence: list[str] = []
    outcomes: list[str] = []
    for model, runs in by_model(multi).items():
        plain = best_run([r for r in runs if is_plain(r)])
        extra = best_run([r for r in runs if float(setting(r, "contrastive_weight", 0.0)) > 0
                          and int(setting(r, "contrastive_pretrain_epochs", 0)) == 0])
        pre = best_run([r for r in runs if int(setting(r, "contrastive_pretrain_epochs", 0)) > 0])
        outcome, lines = contrastive_for_model(ctx, plain, extra, pre)
        if outcome is not None:
            outcomes.append(outcome)
        evidence += [f"model {model}: {line}" for line in lines]
    if not outcomes:
        evidence.append("no runs of one model with both a plain and an extra-loss contrastive multiple-heads run "
                        "(full data)")
        return Verdict(3, claim, INCONCLUSIVE, rule, evidence)
    outcome = (NOT_SUPPORTED if NOT_SUPPORTED in outcomes else SUPPORTED if SUPPORTED in outcomes else INCONCLUSIVE)
    return Verdict(3, claim, outcome, rule, evidence)


def contrastive_for_model(
    ctx: Context, plain: ScoredRun | None, extra: ScoredRun | None, pre: ScoredRun | None
) -> tuple[str | None, list[str]]:
    """One model's verdict on claim 3 (None: it lacks the runs) and every comparison it has."""
    lines = []
    extra_vs_plain = ctx.pair(extra, plain) if extra and plain else None
    extra_vs_pre = ctx.pair(extra, pre) if extra and pre else None
    pre_vs_plain = ctx.pair(pre, plain) if pre and plain else None
    for pair, a, b in ((extra_vs_plain, "extra loss", "plain"), (extra_vs_pre, "extra loss", "pre-training"),
                       (pre_vs_plain, "pre-training", "plain")):
        if pair is not None:
            lines.append(pair_text(pair, a, b))
    absent = [name for name, run in (("plain", plain), ("extra loss", extra), ("pre-training", pre)) if run is None]
    if absent:
        lines.append(f"no runs of {', '.join(absent)}")
    if extra_vs_plain is None:
        return None, lines
    if extra_vs_plain.significant and extra_vs_plain.difference < 0:
        return NOT_SUPPORTED, lines
    if extra_vs_plain.significant and extra_vs_plain.difference > 0 and extra_vs_pre is not None \
            and extra_vs_pre.difference > 0:
        return SUPPORTED, lines
    return INCONCLUSIVE, lines


def size_key(record: RunRecord) -> tuple[str, float] | None:
    """A reduced training size as ("per category", k) or ("fraction", f); None for full data."""
    if record.spec.get("training_per_category") is not None:
        return ("per category", float(record.spec["training_per_category"]))
    fraction = record.spec.get("training_fraction")
    if fraction is not None and fraction < 1:
        return ("fraction", float(fraction))
    return None


def claim_few_shot(ctx: Context) -> Verdict:
    claim = "Prompt tuning wins in the few-shot regime."
    rule = ("At the smallest reduced training size (same training_per_category, or same training_fraction) present "
            "for both fine-tuning and prompt-tuning runs: best prompt-tuning run vs best fine-tuning run, paired test "
            "on shared IDs. Supported if prompt tuning is better with p < 0.05, not supported if fine-tuning is "
            "better with p < 0.05, otherwise inconclusive.")
    def sizes(family: str) -> dict[tuple[str, float], list[ScoredRun]]:
        out: dict[tuple[str, float], list[ScoredRun]] = {}
        for run in select(ctx, family):
            key = size_key(run.record)
            if key is not None:
                out.setdefault(key, []).append(run)
        return out
    ft, pt = sizes("fine-tuning"), sizes("prompt-tuning")
    shared = set(ft) & set(pt)
    if not shared:
        return Verdict(4, claim, INCONCLUSIVE, rule, [
            "no runs of fine-tuning and prompt-tuning at the same reduced training size (training_per_category "
            "or training_fraction)"])
    def smallness(key: tuple[str, float]) -> tuple[float, str, float]:
        arguments = [r.record.training_arguments for r in ft[key] + pt[key] if r.record.training_arguments]
        return (min(arguments) if arguments else math.inf, key[0], key[1])
    key = min(shared, key=smallness)
    best_pt, best_ft = best_run(pt[key]), best_run(ft[key])
    assert best_pt is not None and best_ft is not None
    pair = ctx.pair(best_pt, best_ft)
    label = f"{key[1]:g} per category" if key[0] == "per category" else f"fraction {key[1]:g}"
    if pair is None:
        return Verdict(4, claim, INCONCLUSIVE, rule, [f"at {label}: {best_pt.name} and {best_ft.name} share no "
                                                      "validation argument"])
    return Verdict(4, claim, two_sided(pair), rule, [f"at {label}: {pair_text(pair, 'prompt tuning', 'fine-tuning')}"])


def claim_cot(ctx: Context) -> Verdict:
    claim = "LLM chain-of-thought prompting without training is competitive."
    rule = (f"Best llm-prompting run with strategy 'cot' vs best full-data fine-tuning run, paired test on their "
            f"shared IDs. Competitive = the CoT run is not significantly worse (p >= 0.05 or better), or is within "
            f"{COMPETITIVE_MARGIN} F1 of the fine-tuning run. Supported if competitive; not supported if it is "
            f"significantly worse by more than {COMPETITIVE_MARGIN}.")
    cot = best_run(select(ctx, "llm-prompting", lambda r: setting(r, "strategy", "") == "cot"))
    ft = best_run(select(ctx, "fine-tuning", lambda r: is_full_data(r.record)))
    missing = [f"no runs of {name}" for name, run in (("LLM prompting with strategy 'cot'", cot),
                                                      ("full-data fine-tuning", ft)) if run is None]
    if cot is None or ft is None:
        return Verdict(5, claim, INCONCLUSIVE, rule, missing)
    pair = ctx.pair(cot, ft)
    if pair is None:
        return Verdict(5, claim, INCONCLUSIVE, rule, [f"{cot.name} and {ft.name} share no validation argument"])
    worse = pair.significant and pair.difference < 0
    competitive = not worse or pair.difference >= -COMPETITIVE_MARGIN
    return Verdict(5, claim, SUPPORTED if competitive else NOT_SUPPORTED, rule,
                   [pair_text(pair, "chain-of-thought", "fine-tuning")])


def verdicts(ctx: Context) -> list[Verdict]:
    return [claim_small_models(ctx), claim_multiple_heads(ctx), claim_contrastive(ctx), claim_few_shot(ctx),
            claim_cot(ctx)]


def verdict_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [
        Heading(SECTION_TITLES[7]),
        Paragraph("Each claim of Sun (2024) gets a verdict by the rule stated with it, from paired tests "
                  f"(approximate randomization, {ctx.resamples} resamples) on the validation arguments both runs "
                  f"scored; significant means p < {ALPHA}. A run's kind comes from its record: family, model, "
                  "parameter count, detector settings and training size. The best run of a kind is the one with "
                  "the highest F1 on the arguments every run of that kind scored."),
    ]
    all_verdicts = verdicts(ctx)
    blocks.append(Table(["Claim", "Verdict"], [[f"({v.number}) {v.claim}", v.outcome] for v in all_verdicts]))
    for v in all_verdicts:
        blocks += [Heading(f"({v.number}) {v.claim}", level=3), Paragraph(f"{v.outcome}.", lead="Verdict:"),
                   Paragraph(v.rule, lead="Rule:"), Bullets(v.evidence)]
    return blocks


# ----------------------------------------------------------------------------- rendering


def md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown that refers to the figures by their file names (beside report.md)."""
    parts = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(f"**{block.lead}** {block.text}" if block.lead else block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(md_cell(h) for h in block.header) + " |",
                     "|" + "|".join("---" for _ in block.header) + "|"]
            lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 78rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.scroll { overflow-x: auto; margin: .8rem 0; }
table { border-collapse: collapse; font-size: .82rem; }
th, td { border: 1px solid #ccc; padding: .25rem .45rem; text-align: left; vertical-align: top; }
td { white-space: nowrap; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
"""


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A self-contained page: inline CSS, figures as data: URIs, nothing fetched from elsewhere."""
    e = html.escape
    parts = [f"<h1>{e(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            lead = f"<strong>{e(block.lead)}</strong> " if block.lead else ""
            parts.append(f"<p>{lead}{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            parts.append(f'<div class="scroll">{table}</div>')
        else:
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                         f"<figcaption>{e(block.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(title)}</title>\n'
            f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically (a reader sees the old figure or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def output_folder(results: Path, output: str | Path | None) -> Path:
    return ensure_folder(Path(output) if output is not None else results / "report", "report folder")


# ----------------------------------------------------------------------------- entry point


def build_blocks(ctx: Context) -> list[Block]:
    sections: list[Callable[[Context], list[Block]]] = [
        header_section, main_section, per_category_section, parameters_section, data_size_section,
        significance_section, test_section, verdict_section, nli_section,
    ]
    return [block for section in sections for block in section(ctx)]


def write_report(
    results: str | Path,
    output: str | Path | None = None,
    test_labels: str | Path | None = None,
    data_dir: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Path]:
    """Write report.md, report.html and the PNG figures of a results folder; return the paths written.

    Validation labels come from ``load_split("validation", data_dir)`` (the shipped copy when None);
    ``test_labels`` is a labels TSV to score the runs' test-run.tsv against (the shipped test split is blind).
    """
    results = Path(results)
    if resamples < 1:
        raise InputError(f"resamples must be at least 1, not {resamples}")
    ctx = build_context(results, test_labels, data_dir, resamples, seed)
    blocks = build_blocks(ctx)
    folder = output_folder(results, output)
    title = f"Experiment report: {ctx.name}"
    written = []
    for block in blocks:
        if isinstance(block, Image):
            write_bytes(folder / block.file, block.png)
            written.append(folder / block.file)
    atomic_write_text(folder / "report.md", render_markdown(title, blocks))
    atomic_write_text(folder / "report.html", render_html(title, blocks))
    return [folder / "report.md", folder / "report.html", *written]


__all__ = ["SECTION_TITLES", "write_report"]
