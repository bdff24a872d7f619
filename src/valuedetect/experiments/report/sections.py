"""The report's numbered sections (all but the verdicts), each a function of the scored context
returning its blocks, so a section can be read, and changed, on its own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from valuedetect.experiments.records import RunRecord
from valuedetect.experiments.report.figures import (
    COMPUTE_FILE,
    DATA_SIZE_FILE,
    HEATMAP_FILE,
    LINE_FAMILIES,
    PARAMETERS_FILE,
    compute_png,
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
from valuedetect.experiments.report.scoring import ALPHA, Context, ScoredConfig, best_run, chosen_on
from valuedetect.protocol import under_trained
from valuedetect.taxonomy import CATEGORY_NAMES

SECTION_TITLES: tuple[str, ...] = (
    "1. Experiment",
    "2. Main results (validation)",
    "3. Per-category F1",
    "4. F1 against model size and compute",
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
        Paragraph(protocol_sentence(ctx)),
    ]
    for title, key in (("Machines", "machine"), ("Package versions", "versions")):
        blocks.append(Paragraph(f"{title} (from the records):"))
        blocks.append(Bullets(distinct_settings(ctx.records, key) or ["not recorded"]))
    return blocks


def protocol_sentence(ctx: Context) -> str:
    """What chose and what was scored, from the records: the held-out protocol or the paper's."""
    protocols = {json.dumps({k: v for k, v in r.protocol.items() if k in ("name", "dev_seed", "dev_fraction",
                                                                          "dev_ids_sha256")}, sort_keys=True)
                 for r in ctx.records if r.done and r.task == "values"}
    optimistic = [c.name for c in ctx.runs if c.optimistic]
    text = ("Protocol: held-out. Each run trains on training minus a dev slice (stratified by category, no "
            "conclusion shared with the rest), chooses its epochs and thresholds on dev, and is scored once on "
            "validation; the best configuration of a kind is chosen by its dev F1. Validation chooses nothing.")
    if len(protocols) > 1:
        text += f" The records hold {len(protocols)} different protocol settings (dev slices): see each record."
    if optimistic:
        text += (" Optimistic (chosen and scored on validation, the paper's protocol or a record from before the "
                 f"held-out protocol): {', '.join(optimistic)}; their validation F1 is not a held-out figure.")
    return text


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
    """The main table (Sun et al. 2024, Tables 3-4), one row per configuration, then failed and unscored runs."""
    blocks: list[Block] = [Heading(SECTION_TITLES[1])]
    if not ctx.runs:
        blocks.append(Paragraph("No values-task run is done and scored in this experiment."))
    else:
        n_common = len(ctx.common)
        header = ["Family", "Run", "Model", "F1 [95% CI]", "SD over seeds", "F1 per seed", "Dev F1", "P", "R",
                  "Mean of per-category F1 (not the official measure)", "n (validation)",
                  f"F1 on common subset (n={n_common})", "Trainable / total parameters",
                  "Ranking AUC (not official)", "Train CPU-s", "Validation CPU-s", "Inference time",
                  "Wall time (s)", "Budget"]
        blocks.append(Table(header, [main_row(ctx, run) for run in ctx.runs]))
        common = (f"The common subset is the {n_common} validation arguments scored by every run in this table."
                  if n_common else "The runs share no validation argument, so there is no common subset.")
        blocks.append(Paragraph(
            "One row per configuration: F1, P and R are means over its seeds (each seed's F1 beside them), "
            "recomputed from each run's validation-run.tsv; the interval carries argument and seed variance "
            f"({ctx.resamples} bootstrap resamples of the arguments, seed {ctx.seed}). Dev F1: the mean F1 on the "
            "dev arguments that chose epochs and thresholds (in-sample for those choices; it chooses the best "
            f"configuration of a kind). Ranking AUC: the mean over categories of validation ROC AUC of the "
            "scores before thresholds, as the run recorded it (a dash where it did not): near 0.5, the scores "
            "carry no signal; well above it with F1 at the all-ones level, the thresholds failed. CPU-seconds "
            f"are per seed, as recorded by the run. {common}"))
        notes = [f"{run.name}: {run.record.validation_subset}" for run in ctx.runs if run.record.validation_subset]
        notes += [f"{m.name}: {m.ignored} argument IDs of the run file have no validation label and were ignored"
                  for m in ctx.seed_runs if m.ignored]
        notes += [note for note in map(stale_note, ctx.seed_runs) if note]
        notes += [f"{run.name}: under-trained ({'; '.join(run.under_trained)})" for run in ctx.runs
                  if run.under_trained]
        notes += [f"{run.name}: one seed, so its interval and tests leave training variance out"
                  for run in ctx.runs if len(run.members) == 1 and run.record.training]
        if notes:
            blocks += [Paragraph("Notes on the runs:"), Bullets(notes)]
    blocks += failed_blocks(ctx)
    return blocks


def mean_compute(run: ScoredConfig, key: str) -> float | None:
    values = [m.record.compute.get(key) for m in run.members]
    return None if any(v is None for v in values) else float(sum(values) / len(values))


def mean_ranking_auc(run: ScoredConfig) -> float | None:
    values = [m.record.validation.get("ranking_auc") for m in run.members]
    return None if any(v is None for v in values) else float(sum(values) / len(values))


def main_row(ctx: Context, run: ScoredConfig) -> list[str]:
    r, s = run.record, run.scores
    n = f"{s.n}" + (" (subset, see below)" if r.validation_subset else "")
    sd = DASH if run.f1_sd is None else f"{run.f1_sd:.3f}"
    per_seed = ", ".join(f"{f1:.3f} (s{seed})" if seed is not None else f"{f1:.3f}"
                         for f1, seed in zip(run.seed_f1, run.seeds, strict=True))
    return [
        r.family, run.name, r.model or DASH, with_ci(s.f1, s.ci95), sd, per_seed, f3(run.dev_f1), f3(s.precision),
        f3(s.recall), f3(s.mean_f1), n, f3(run.f1_on(ctx.common)) if ctx.common else DASH,
        f"{count(r.parameters_trainable)} / {count(r.parameters_total)}", f3(mean_ranking_auc(run)),
        seconds(mean_compute(run, "train_cpu_seconds")), seconds(mean_compute(run, "validation_cpu_seconds")),
        inference_time(r), seconds(r.wall_seconds), compact(r.budget),
    ]


def stale_note(run: Any) -> str | None:
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
    def f1_of(run: ScoredConfig) -> float:
        return run.f1_on(ctx.common) if use_common else run.scores.f1
    def n_of(run: ScoredConfig) -> int:
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
    costed = [(r, f1_of(r)) for r in ctx.runs if r.compute_seconds is not None and size_setting(r.record) == "full"]
    if costed:
        caption = (f"Official F1 against CPU-seconds per seed (training + scoring validation; the cores are in each "
                   f"record's machine), full-data configurations, one line per family through the configurations "
                   f"no cheaper one of the family beats; y: {which}.")
        blocks.append(Image(COMPUTE_FILE, caption, compute_png(costed, "official F1")))
        blocks.append(Table(["Run", "Family", "CPU-seconds per seed", "F1"],
                            [[r.name, r.record.family, f"{r.compute_seconds:.0f}", f3(f1)] for r, f1 in costed]))
    else:
        blocks.append(Paragraph("No configuration recorded its CPU-seconds: no compute figure."))
    return blocks


def data_size_groups(runs: Sequence[ScoredConfig]) -> list[tuple[str, str, list[ScoredConfig]]]:
    """Runs alike in everything but training size: (label, family, runs by size) with >= 2 sizes."""
    groups: dict[tuple[str, str, str, str], list[ScoredConfig]] = {}
    for run in runs:
        r = run.record
        if r.family not in DATA_SIZE_FAMILIES or r.training_arguments is None:
            continue
        if r.spec.get("cross_fit_folds") is not None:  # a cross-fitting fold trains for its teacher scores
            continue
        # a run scored by its refit on all of training is another recipe, not a point of a size curve
        refit = str(r.spec.get("refit_data", "")) if r.spec.get("refit") else ""
        key = (r.family, r.model or "", r.method or str(r.spec.get("method", "")),
               json.dumps({k: v for k, v in r.spec.get("detector", {}).items() if k != "seed"}, sort_keys=True,
                          default=str) + refit)
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
    reference = next((run for run in ctx.runs if run.name == ctx.reference), None)
    if reference is not None:
        blocks = [Heading(SECTION_TITLES[5].replace("the best run", "the reference run"))]
        blocks.append(Paragraph(
            f"Reference: {reference.name}, named by the experiment (the recipe every other configuration changes one "
            f"thing of). Each configuration is compared with it by the seed-aware paired test ({ctx.resamples} "
            "bootstrap resamples of the arguments, with each side's between-seed variance added; see section 8) "
            f"on the validation arguments both scored; p is Holm-corrected across the report; significant means "
            f"corrected p < {ALPHA}. Which change to keep is read from the dev F1 (section 2), not from these "
            "validation differences."))
        return [*blocks, comparison_table(ctx, reference, "reference")]
    best = best_run(ctx.runs)
    assert best is not None
    basis = chosen_on(ctx.runs)
    if basis != "dev F1":
        basis = (f"the highest F1 on the {len(ctx.common)} arguments every run scored (optimistic: not every run "
                 "recorded a dev score)" if ctx.common
                 else "the highest F1 on its own validation arguments, as the runs share no argument")
    else:
        basis = "the highest mean dev F1"
    blocks.append(Paragraph(
        f"Best run: {best.name}, chosen by {basis}. Each configuration is compared with it by the seed-aware paired "
        f"test ({ctx.resamples} bootstrap resamples; see section 8) on the validation arguments both scored; p is "
        f"Holm-corrected across the report; significant means corrected p < {ALPHA}."))
    return [*blocks, comparison_table(ctx, best, "best")]


def comparison_table(ctx: Context, best: ScoredConfig, role: str) -> Table:
    """Every configuration against ``best`` (the best run or the experiment's reference)."""
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
                     pvalue(pair.p), "yes" if pair.significant else "no", str(pair.n)])
    header = ["Run", "F1 of run (shared)", f"F1 of {best.name} (shared)", f"Difference (run - {role})",
              "95% CI of difference", "Corrected p", f"Significant at {ALPHA}", "n (shared)"]
    return Table(header, rows)


def test_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [Heading(SECTION_TITLES[6])]
    if ctx.test is None:
        return [*blocks, Paragraph(NO_TEST_LABELS)]
    if not ctx.runs:
        return [*blocks, Paragraph("No scored values-task run to score on test in this experiment.")]
    rows = []
    for run in ctx.runs:
        item = ctx.test.get(run.name)
        if isinstance(item, ScoredConfig):
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
    """The NLI runs as they recorded them: held-out validation accuracy beside the dev accuracy that
    chose their epochs and threshold, and how far each trained."""
    blocks: list[Block] = [Heading(SECTION_TITLES[8])]
    nli = [r for r in ctx.records if r.task == "nli" and r.done]
    if not nli:
        return [*blocks, Paragraph("The experiment has no NLI runs.")]
    rows, notes = [], []
    for r in nli:
        v = r.validation
        protocol = "optimistic" if r.protocol.get("optimistic", True) else "held-out"
        rows.append([r.name, r.family, r.model or DASH, with_ci(v.get("accuracy"), v.get("ci95")),
                     f3(v.get("macro_f1")), str(v.get("n", DASH)), f3(r.dev.get("accuracy")), protocol,
                     f"{count(r.parameters_trainable)} / {count(r.parameters_total)}", seconds(r.train_seconds)])
        reason = under_trained(r.training)
        if reason:
            notes.append(f"{r.name}: under-trained ({reason})")
    blocks.append(Paragraph("Accuracy and macro F1 on the runs' NLI validation pairs (label: the stance), scored "
                            "once; epochs and the threshold on P(support) were chosen on dev (a slice of training "
                            "grouped by conclusion), whose accuracy is in-sample for those choices. Runs of the "
                            "paper protocol chose on validation itself (optimistic)."))
    blocks.append(Table(["Run", "Family", "Model", "Accuracy [95% CI]", "Macro F1", "n", "Dev accuracy", "Protocol",
                         "Trainable / total parameters", "Train time (s)"], rows))
    if notes:
        blocks.append(Paragraph("; ".join(notes) + "."))
    return blocks
