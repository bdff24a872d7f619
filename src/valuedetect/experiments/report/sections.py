"""The report's numbered sections (all but the verdicts), each a function of the scored context
returning its blocks, so a section can be read, and changed, on its own."""

from __future__ import annotations

import json
from collections.abc import Sequence

from valuedetect.experiments.records import RunRecord
from valuedetect.experiments.report.figures import (
    DATA_SIZE_FILE,
    HEATMAP_FILE,
    LINE_FAMILIES,
    PARAMETERS_FILE,
    data_size_png,
    heatmap_png,
    parameters_png,
)
from valuedetect.experiments.report.formatting import (
    DASH,
    compact,
    count,
    f3,
    inference_time,
    interval,
    pvalue,
    seconds,
    size_setting,
    with_ci,
)
from valuedetect.experiments.report.render import Block, Bullets, Heading, Image, Paragraph, Table
from valuedetect.experiments.report.scoring import ALPHA, Context, ScoredRun, best_run
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

METRIC_SENTENCE = (
    "The measure is the official Touche23-ValueEval F1: over the value categories with at least one "
    "true positive, P is the mean of per-category precision, R the mean of per-category recall, and "
    "F1 = 2PR/(P+R) (not the mean of per-category F1, which is shown beside it and labelled as such)."
)
NO_TEST_LABELS = (
    "Test labels were not available (the test split is blind); pass --test-labels FILE to score "
    "test-run.tsv files."
)

DATA_SIZE_FAMILIES = ("fine-tuning", "prompt-tuning")


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
    # Full training data only: runs on less data belong to the data-size curve (section 5).
    points = [(r, f1_of(r)) for r in known if r.record.family in LINE_FAMILIES and size_setting(r.record) == "full"]
    baselines = [(r, f1_of(r)) for r in ctx.runs if r.record.family == "baseline"]
    rows = [[r.name, r.record.family, r.record.model or DASH, size_setting(r.record),
             count(r.record.parameters_total), f3(f1_of(r)), str(n_of(r))] for r in ctx.runs]
    if use_common:
        which = (f"F1 on the {len(ctx.common)} validation arguments every run scored (the runs' validation sets "
                 "differ)")
    elif ctx.same_validation:
        which = f"F1 on the {len(ctx.common)} validation arguments (every run scored the same ones)"
    else:
        which = "each run's F1 on its own validation arguments (the runs share no argument, so n differs)"
    if points:
        caption = (f"Official F1 against total parameter count (log scale): every full-data run as a point, one "
                   f"line per family "
                   f"through its best run of each model, baselines as dashed horizontal lines; y: {which}.")
        ylabel = (f"official F1 (n={len(ctx.common)})" if use_common or ctx.same_validation
                  else "official F1 (own validation arguments)")
        blocks.append(Image(PARAMETERS_FILE, caption, parameters_png(points, baselines, ylabel)))
    else:
        blocks.append(Paragraph("No run of a model family has a recorded parameter count: no figure."))
    missing = [r.name for r in ctx.runs if r not in known and r.record.family != "baseline"]
    if missing:
        blocks.append(Paragraph(f"Not plotted (no parameter count recorded): {', '.join(missing)}."))
    blocks.append(Paragraph(f"The points; F1 is {which}:"))
    blocks.append(Table(["Run", "Family", "Model", "Training data", "Total parameters", "F1", "n"], rows))
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
