"""A verdict on each of the paper's claims, by a rule stated beside it, so the reader can check
how the runs' paired tests led to "supported", "not supported" or "inconclusive"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuedetect.experiments.records import RunRecord
from valuedetect.experiments.report.formatting import DASH, count, f3, pair_text, pvalue
from valuedetect.experiments.report.render import Block, Bullets, Heading, Paragraph, Table
from valuedetect.experiments.report.scoring import ALPHA, Context, Pair, ScoredRun, best_run
from valuedetect.experiments.report.sections import SECTION_TITLES
from valuedetect.metrics import compare

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
SMALL_MODEL = 500e6
COMPETITIVE_MARGIN = 0.03


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
    """Runs grouped by model and input template, so that a heads or loss comparison is never
    also a template comparison (the CLS template is a run of its own in the paper's grid)."""
    out: dict[str, list[ScoredRun]] = {}
    for run in runs:
        template = str(setting(run, "template", "plain"))
        label = run.record.model or DASH
        out.setdefault(label if template == "plain" else f"{label} with template {template}", []).append(run)
    return out


LEAD_RULE = (" A significant lead counts only if the leading run is itself significantly better than predicting "
             "every category (all-ones) on the same arguments.")


def above_all_ones(ctx: Context, run: ScoredRun, ids: Sequence[str]) -> tuple[bool, str]:
    """Whether a run beats predicting every category on these arguments (p < ALPHA), and the
    evidence in a sentence. A lead held by a run at the all-ones level is a lead of the trivial
    predictor over a worse one, not a method winning."""
    truth, pred = run.rows(ids)
    result = compare(truth, pred, np.ones_like(pred), resamples=ctx.resamples, seed=ctx.seed)
    beats = result.p_value < ALPHA and result.difference > 0
    text = (f"{run.name} against predicting every category (all-ones) on the same {len(ids)} arguments: "
            f"F1 {f3(result.f1_a)} vs {f3(result.f1_b)}, p = {pvalue(result.p_value)}")
    return beats, text


def two_sided(ctx: Context, pair: Pair) -> tuple[str, list[str]]:
    """supported if a is significantly better, not supported if b is, else inconclusive; a
    significant lead counts only when the leader itself beats all-ones on the shared arguments."""
    if not pair.significant or pair.difference == 0:
        return INCONCLUSIVE, []
    leader = pair.a if pair.difference > 0 else pair.b
    beats, text = above_all_ones(ctx, leader, pair.shared_ids)
    if not beats:
        return INCONCLUSIVE, [f"{text}: the leader is at the all-ones level, so its lead does not count"]
    return (SUPPORTED if pair.difference > 0 else NOT_SUPPORTED), []


def claim_small_models(ctx: Context) -> Verdict:
    claim = "Below ~500M parameters, fine-tuning beats prompt tuning."
    rule = ("Best full-data fine-tuning run vs best full-data prompt-tuning run, both with fewer than 500M "
            "parameters in total (best: highest F1 on the arguments all candidates scored), paired test on their "
            "shared IDs: supported if fine-tuning is better and p < 0.05, not supported if prompt tuning is better "
            "and p < 0.05, otherwise inconclusive." + LEAD_RULE)
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
    outcome, notes = two_sided(ctx, pair)
    return Verdict(1, claim, outcome, rule, [pair_text(pair, "fine-tuning", "prompt tuning"), *notes])


def claim_multiple_heads(ctx: Context) -> Verdict:
    claim = "Multiple heads beat a single head."
    rule = ("For each model and input template: best full-data fine-tuning run with multiple heads vs best with a"
            " single head, both without contrastive learning (contrastive_weight 0, contrastive_pretrain_epochs "
            "0), paired test on shared IDs. Not supported if a single head is significantly better (p < 0.05) for"
            " any model; supported if multiple heads are significantly better for at least one model; otherwise "
            "inconclusive." + LEAD_RULE)
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
    outcomes, evidence = [], []
    for model, pair in pairs:
        pair_outcome, notes = two_sided(ctx, pair)
        outcomes.append(pair_outcome)
        evidence += [f"model {model}: {pair_text(pair, 'multiple heads', 'single head')}", *notes]
    outcome = (NOT_SUPPORTED if NOT_SUPPORTED in outcomes else SUPPORTED if SUPPORTED in outcomes else INCONCLUSIVE)
    return Verdict(2, claim, outcome, rule, evidence)


def claim_contrastive(ctx: Context) -> Verdict:
    claim = "Contrastive learning helps, and as an extra loss more than as pre-training."
    rule = ("For each model and input template, among full-data fine-tuning runs with multiple heads: best plain "
            "run (contrastive weight 0, no contrastive pre-training) vs best extra-loss run (weight > 0, no pre-"
            "training) vs best pre-training run (contrastive_pretrain_epochs > 0), paired tests on shared IDs. A "
            "model supports the claim if extra loss beats plain significantly (p < 0.05) and also beats pre-"
            "training (any positive difference); it contradicts it if extra loss is significantly worse than "
            "plain. Overall: not supported if any model contradicts, supported if any model supports, otherwise "
            "inconclusive.")
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
            "better with p < 0.05, otherwise inconclusive." + LEAD_RULE)
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
    outcome, notes = two_sided(ctx, pair)
    return Verdict(4, claim, outcome, rule, [f"at {label}: {pair_text(pair, 'prompt tuning', 'fine-tuning')}",
                                             *notes])


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
