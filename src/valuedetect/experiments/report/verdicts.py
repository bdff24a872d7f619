"""A verdict on each of the paper's claims, by a rule stated beside it, so the reader can check
how the runs' paired tests led to "supported", "not supported" or "inconclusive"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from valuedetect.detectors.encoder import EncoderConfig
from valuedetect.experiments.records import RunRecord
from valuedetect.experiments.report.formatting import DASH, count, f3, p_is, pair_text
from valuedetect.experiments.report.render import Block, Bullets, Heading, Paragraph, Table
from valuedetect.experiments.report.scoring import ALPHA, Context, Pair, ScoredConfig, best_run
from valuedetect.experiments.report.sections import SECTION_TITLES

ENCODER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(EncoderConfig) if f.default is not MISSING}

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
    matched: str | None = None  # the verdict at matched compute, for the claims judged that way too
    reason: str | None = None  # why an inconclusive verdict is one, where a rule names it (under-training)

    @property
    def shown(self) -> str:
        """The verdict as the report prints it: an under-trained side says so in the verdict itself."""
        return self.reason if self.outcome == INCONCLUSIVE and self.reason else self.outcome


UNDER_TRAINED = "inconclusive (under-trained: "


def under_trained_reason(outcome: str, notes: Sequence[str]) -> str | None:
    """The note of ``under_trained_note`` behind an inconclusive outcome, if that is why it is one."""
    if outcome != INCONCLUSIVE:
        return None
    return next((n for n in notes if n.startswith(UNDER_TRAINED)), None)


def shown(outcome: str, notes: Sequence[str]) -> str:
    """An outcome as printed: with its under-training reason where that is why it is inconclusive."""
    return under_trained_reason(outcome, notes) or outcome


def is_full_data(record: RunRecord) -> bool:
    fraction = record.spec.get("training_fraction")
    return (record.spec.get("training_per_category") is None and (fraction is None or fraction >= 1)
            and record.spec.get("cross_fit_folds") is None)  # a cross-fitting fold trains on less


def setting(run: ScoredConfig, key: str, default: Any) -> Any:
    """A detector setting of the run; an ensemble's are its members'."""
    config = run.record.detector_config
    if run.record.method == "ensemble":
        config = config.get("member") or {}
    value = config.get(key, default)
    return default if value is None else value


def is_composite(record: RunRecord) -> bool:
    """An ensemble, a distilled student or a run scored by its refit: more than one training run
    stands behind its number (the members', the teacher's, the fit that chose for the refit), and
    its dev F1 is not that of the detector scored; the paper's claims compare single models, so
    these stay out of them."""
    refit_scored = bool(record.spec.get("refit")) and record.spec.get("refit_data") == "training"
    return record.method == "ensemble" or bool(record.detector_config.get("distill_from")) or refit_scored


def is_plain(run: ScoredConfig) -> bool:
    """No contrastive learning: neither as an extra loss nor as a pre-training stage."""
    weight = float(setting(run, "contrastive_weight", 0.0))
    return weight == 0 and int(setting(run, "contrastive_pretrain_epochs", 0)) == 0


def differ_only_in_heads(a: ScoredConfig, b: ScoredConfig) -> bool:
    """Whether two configurations are the same recipe but for their heads (the seed aside): the
    claim-2 comparison then measures heads, not a learning rate or a depth that came with them.
    (Claim 2 reads full-data runs only, so the training size is the same already.)"""
    keys = (set(a.record.detector_config) | set(b.record.detector_config)) - {"heads", "head_hidden", "seed"}

    def recipe(run: ScoredConfig) -> dict[str, Any]:
        # A setting added after a record was written is absent from it: that record ran its default
        # (claim 2 compares encoder runs, so the defaults are the encoder's).
        return {k: run.record.detector_config.get(k, ENCODER_DEFAULTS.get(k)) for k in keys}
    return recipe(a) == recipe(b)


def best_twins(heads: Sequence[ScoredConfig],
               singles: Sequence[ScoredConfig]) -> tuple[ScoredConfig, ScoredConfig] | None:
    """The pair (multiple heads, single head) of configurations that differ only in their heads with
    the highest mean dev F1 of the two (chosen on dev, like ``best_run``); None if no such pair."""
    pairs = [(h, s) for h in heads for s in singles if differ_only_in_heads(h, s)]
    if not pairs:
        return None
    with_dev = [(h, s) for h, s in pairs if h.dev_f1 is not None and s.dev_f1 is not None]
    if with_dev:
        return max(with_dev, key=lambda hs: (hs[0].dev_f1 or 0.0) + (hs[1].dev_f1 or 0.0))
    return pairs[0]


def linear_heads(run: ScoredConfig) -> bool:
    """Heads without a hidden layer: a single head and 20 linear binary heads are then one function class."""
    return int(setting(run, "head_hidden", 0)) == 0


def select(ctx: Context, family: str, test: Callable[[ScoredConfig], bool] = lambda run: True) -> list[ScoredConfig]:
    return [run for run in ctx.runs if run.record.family == family and not is_composite(run.record) and test(run)]


def by_model(runs: Sequence[ScoredConfig], heads: bool = False) -> dict[str, list[ScoredConfig]]:
    """Runs grouped by model and input template (and, with ``heads``, by head capacity), so that a
    heads or loss comparison is never also a template or capacity comparison."""
    out: dict[str, list[ScoredConfig]] = {}
    for run in runs:
        template = str(setting(run, "template", "plain"))
        label = run.record.model or DASH
        label = label if template == "plain" else f"{label} with template {template}"
        if heads:
            hidden = int(setting(run, "head_hidden", 0))
            label += ", linear heads" if hidden == 0 else f", heads with {hidden} hidden units"
        out.setdefault(label, []).append(run)
    return out


LEAD_RULE = (" A significant lead counts only if the leading configuration is itself significantly better than "
             "predicting every category (all-ones) on the same arguments.")
STANDARD_RULE = (" A comparison counts only if both sides trained to the same standard: a run stopped by its budget "
                 "before one full epoch, or whose final training loss is not below the constant-answer loss, makes "
                 "the verdict inconclusive (under-trained).")
MATCHED_RULE = (" Also judged at matched compute: the same comparison against the best fine-tuning configuration "
                "that trained to the standard and whose CPU-seconds (training + scoring validation, mean per seed) "
                "do not exceed the other side's; where the other side then wins while it spent more than that "
                "fine-tuning run, its best configuration within the fine-tuning run's CPU-seconds is compared "
                "instead (inconclusive if it has none), so that neither side wins by spending more.")


def above_all_ones(ctx: Context, run: ScoredConfig, ids: Sequence[str]) -> tuple[bool, str]:
    """Whether a configuration beats predicting every category on these arguments, and the evidence
    in a sentence. A lead held at the all-ones level is the trivial predictor beating a worse one."""
    pair = ctx.against_all_ones(run, ids)
    beats = pair.significant and pair.difference > 0
    text = (f"{run.name} against predicting every category (all-ones) on the same {len(ids)} arguments: "
            f"F1 {f3(pair.result.f1_a)} vs {f3(pair.result.f1_b)}, corrected p {p_is(pair.p)}")
    return beats, text


def under_trained_note(*runs: ScoredConfig) -> str | None:
    reasons = [reason for run in runs for reason in run.under_trained]
    if not reasons:
        return None
    return UNDER_TRAINED + "; ".join(reasons) + ")"


def two_sided(ctx: Context, pair: Pair) -> tuple[str, list[str]]:
    """supported if a is significantly better, not supported if b is, else inconclusive. A lead
    counts only when the leader itself beats all-ones, and only between runs trained to the same
    standard. The all-ones check is made whatever the outcome, so every report holds the same
    family of comparisons for the Holm correction."""
    assert pair.b is not None
    leader = pair.a if pair.difference >= 0 else pair.b
    beats, text = above_all_ones(ctx, leader, pair.shared_ids)
    short = under_trained_note(pair.a, pair.b)
    if short:
        return INCONCLUSIVE, [short]
    if not pair.significant or pair.difference == 0:
        return INCONCLUSIVE, []
    if not beats:
        return INCONCLUSIVE, [f"{text}: the leader is at the all-ones level, so its lead does not count"]
    return (SUPPORTED if pair.difference > 0 else NOT_SUPPORTED), []


def within(runs: Sequence[ScoredConfig], budget: float) -> ScoredConfig | None:
    """The best configuration (by dev) that cost at most ``budget`` CPU-seconds and trained to the
    protocol's standard: a cheap run that stopped on its budget does not stand for its family."""
    return best_run([r for r in runs if r.compute_seconds is not None and r.compute_seconds <= budget
                     and not r.under_trained])


def matched_view(ctx: Context, other: ScoredConfig, fine_tuning: Sequence[ScoredConfig],
                 others: Sequence[ScoredConfig], other_first: bool, labels: tuple[str, str]) -> tuple[str, str]:
    """The verdict and evidence of a claim at matched compute: fine-tuning held to ``other``'s
    CPU-seconds; and where the other family then wins while it spent more than that fine-tuning
    run, the other family held to the fine-tuning run's CPU-seconds in turn, so that neither side
    wins by spending more."""
    if other.compute_seconds is None:
        return INCONCLUSIVE, f"at matched compute: {other.name} has no CPU-seconds recorded"
    ft = within(fine_tuning, other.compute_seconds)
    if ft is None:
        return INCONCLUSIVE, (f"at matched compute: no fine-tuning configuration that trained to the standard cost at "
                              f"most {other.name}'s {other.compute_seconds:.0f} CPU-seconds")
    def judged(ft: ScoredConfig, rival: ScoredConfig) -> tuple[str, list[str], Pair | None]:
        pair = ctx.pair(rival, ft) if other_first else ctx.pair(ft, rival)
        if pair is None:
            return INCONCLUSIVE, [], None
        outcome, notes = two_sided(ctx, pair)
        return outcome, notes, pair
    outcome, notes, pair = judged(ft, other)
    rival_wins = outcome == (SUPPORTED if other_first else NOT_SUPPORTED)  # a lead that counts, not just p
    assert ft.compute_seconds is not None
    if rival_wins and other.compute_seconds > ft.compute_seconds:
        cheaper = within(others, ft.compute_seconds)
        if cheaper is None:
            return INCONCLUSIVE, (f"at matched compute: {other.name} wins only with more CPU-seconds "
                                  f"({other.compute_seconds:.0f}) than {ft.name} ({ft.compute_seconds:.0f}), and no "
                                  f"configuration of its kind that trained to the standard cost at most that")
        other = cheaper
        outcome, notes, pair = judged(ft, other)
    if pair is None:
        return INCONCLUSIVE, f"at matched compute: {ft.name} and {other.name} share no validation argument"
    cost = (f" ({ft.name}: {ft.compute_seconds:.0f} CPU-s, {other.name}: {other.compute_seconds:.0f} CPU-s)")
    return shown(outcome, notes), (f"at matched compute{cost}: {pair_text(pair, *labels)}"
                                   + (f"; {notes[0]}" if notes else ""))


def claim_small_models(ctx: Context) -> Verdict:
    claim = "Below ~500M parameters, fine-tuning beats prompt tuning."
    rule = ("Best full-data fine-tuning configuration vs best full-data prompt-tuning configuration, both with "
            "fewer than 500M parameters in total (best: highest mean dev F1), seed-aware paired test on their "
            "shared validation arguments with Holm-corrected p: supported if fine-tuning is better and p < 0.05, "
            "not supported if prompt tuning is better and p < 0.05, otherwise inconclusive."
            + LEAD_RULE + STANDARD_RULE + MATCHED_RULE)
    def small(run: ScoredConfig) -> bool:
        total = run.record.parameters_total
        return is_full_data(run.record) and total is not None and total < SMALL_MODEL
    fine_tuning, prompt_tuning = select(ctx, "fine-tuning", small), select(ctx, "prompt-tuning", small)
    ft, pt = best_run(fine_tuning), best_run(prompt_tuning)
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
    matched, matched_text = matched_view(ctx, pt, fine_tuning, prompt_tuning, other_first=False,
                                         labels=("fine-tuning", "prompt tuning"))
    return Verdict(1, claim, outcome, rule, [pair_text(pair, "fine-tuning", "prompt tuning"), *notes, matched_text],
                   matched, reason=under_trained_reason(outcome, notes))


def claim_multiple_heads(ctx: Context) -> Verdict:
    claim = "Multiple heads beat a single head."
    rule = ("For each model and input template: best full-data fine-tuning configuration with 20 linear binary "
            "heads vs one linear 20-way head (the same function class, so the comparison is about heads, not "
            "capacity), both without contrastive learning and in otherwise the same settings (of such pairs, the one "
            "with the highest mean dev F1), seed-aware paired test on shared IDs with "
            "Holm-corrected p. Not supported if a single head is significantly better for any model; supported if "
            "multiple heads are significantly better for at least one model and worse for none; otherwise "
            "inconclusive. Heads with a hidden layer against the single head are shown as a separate capacity "
            "comparison, which does not enter the verdict." + LEAD_RULE + STANDARD_RULE)
    plain = select(ctx, "fine-tuning", lambda run: is_full_data(run.record) and is_plain(run))
    outcomes, evidence = [], []
    reasons: list[str] = []
    for model, runs in by_model(plain).items():
        singles = [r for r in runs if setting(r, "heads", "single") == "single"]
        linear = [r for r in runs if setting(r, "heads", "single") == "multiple" and linear_heads(r)]
        hidden = [r for r in runs if setting(r, "heads", "single") == "multiple" and not linear_heads(r)]
        twins = best_twins(linear, singles)
        if twins is None and linear and singles:
            evidence.append(f"model {model}: no single-head configuration with the same settings as "
                            f"{', '.join(r.name for r in linear)} but for the heads")
        pair = ctx.pair(*twins) if twins else None
        if pair is not None:
            pair_outcome, notes = two_sided(ctx, pair)
            outcomes.append(pair_outcome)
            reason = under_trained_reason(pair_outcome, notes)
            if reason:
                reasons.append(reason)
            evidence += [f"model {model}, equal capacity: {pair_text(pair, 'multiple linear heads', 'single head')}",
                         *notes]
        capacity_twins = best_twins(hidden, singles)
        capacity = ctx.pair(*capacity_twins) if capacity_twins else None
        if capacity is not None:
            capacity_outcome, notes = two_sided(ctx, capacity)
            evidence += [f"model {model}, capacity comparison (not the claim): "
                         f"{pair_text(capacity, 'multiple heads with a hidden layer', 'single head')} -> "
                         f"{shown(capacity_outcome, notes)}", *notes]
    if not outcomes:
        evidence.append("no runs of the same model with both one linear head and 20 linear heads, in otherwise the "
                        "same settings (full data, no contrastive learning)")
        return Verdict(2, claim, INCONCLUSIVE, rule, evidence)
    outcome = (NOT_SUPPORTED if NOT_SUPPORTED in outcomes else SUPPORTED if SUPPORTED in outcomes else INCONCLUSIVE)
    return Verdict(2, claim, outcome, rule, evidence, reason="; ".join(reasons) or None)


def claim_contrastive(ctx: Context) -> Verdict:
    claim = "Contrastive learning helps, and as an extra loss more than as pre-training."
    rule = ("For each model, input template and head capacity, among full-data fine-tuning configurations with "
            "multiple heads: best plain one (contrastive weight 0, no contrastive pre-training) vs best extra-loss "
            "one (weight > 0, no pre-training) vs best pre-training one (contrastive_pretrain_epochs > 0), seed-aware "
            "paired tests on shared IDs with Holm-corrected p. A model supports the claim if extra loss beats plain "
            "significantly and also beats pre-training (any positive difference); it contradicts it if extra loss "
            "is significantly worse than plain. Overall: not supported if any model contradicts, supported if any "
            "model supports, otherwise inconclusive." + STANDARD_RULE)
    multi = select(ctx, "fine-tuning", lambda r: is_full_data(r.record) and setting(r, "heads", "single") == "multiple")
    evidence: list[str] = []
    outcomes: list[str] = []
    reasons: list[str] = []
    for model, runs in by_model(multi, heads=True).items():
        plain = best_run([r for r in runs if is_plain(r)])
        extra = best_run([r for r in runs if float(setting(r, "contrastive_weight", 0.0)) > 0
                          and int(setting(r, "contrastive_pretrain_epochs", 0)) == 0])
        pre = best_run([r for r in runs if int(setting(r, "contrastive_pretrain_epochs", 0)) > 0])
        if extra is None and pre is None:
            continue  # nothing contrastive to compare in this group
        outcome, lines = contrastive_for_model(ctx, plain, extra, pre)
        if outcome is not None:
            outcomes.append(outcome)
            reason = under_trained_reason(outcome, lines)
            if reason:
                reasons.append(reason)
        evidence += [f"model {model}: {line}" for line in lines]
    if not outcomes:
        evidence.append("no runs of one model with both a plain and an extra-loss contrastive multiple-heads run "
                        "(full data)")
        return Verdict(3, claim, INCONCLUSIVE, rule, evidence)
    outcome = (NOT_SUPPORTED if NOT_SUPPORTED in outcomes else SUPPORTED if SUPPORTED in outcomes else INCONCLUSIVE)
    return Verdict(3, claim, outcome, rule, evidence, reason="; ".join(reasons) or None)


def contrastive_for_model(
    ctx: Context, plain: ScoredConfig | None, extra: ScoredConfig | None, pre: ScoredConfig | None
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
    short = under_trained_note(*(run for run in (plain, extra, pre) if run is not None))
    if short:
        return INCONCLUSIVE, [*lines, short]
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
            "for both fine-tuning and prompt-tuning configurations: best prompt-tuning vs best fine-tuning (highest "
            "mean dev F1), seed-aware paired test on shared IDs with Holm-corrected p. Supported if prompt tuning is "
            "better with p < 0.05, not supported if fine-tuning is better with p < 0.05, otherwise inconclusive."
            + LEAD_RULE + STANDARD_RULE + MATCHED_RULE)
    def sizes(family: str) -> dict[tuple[str, float], list[ScoredConfig]]:
        out: dict[tuple[str, float], list[ScoredConfig]] = {}
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
    matched, matched_text = matched_view(ctx, best_pt, ft[key], pt[key], other_first=True,
                                         labels=("prompt tuning", "fine-tuning"))
    return Verdict(4, claim, outcome, rule, [f"at {label}: {pair_text(pair, 'prompt tuning', 'fine-tuning')}",
                                             *notes, f"at {label}, {matched_text}"], matched,
                   reason=under_trained_reason(outcome, notes))


def claim_cot(ctx: Context) -> Verdict:
    claim = "LLM chain-of-thought prompting without training is competitive."
    rule = (f"Best llm-prompting configuration with strategy 'cot' vs best full-data fine-tuning configuration "
            f"(highest mean dev F1), seed-aware paired test on their shared IDs with Holm-corrected p. Competitive "
            f"means within {COMPETITIVE_MARGIN} F1 of fine-tuning (or better): supported if the whole 95% interval of "
            f"the difference (CoT - fine-tuning) lies above -{COMPETITIVE_MARGIN}; not supported if CoT is "
            f"significantly worse (corrected p < {ALPHA}) and the whole interval lies below -{COMPETITIVE_MARGIN}; "
            "otherwise inconclusive (an interval too wide to tell is not evidence of competitiveness)."
            + STANDARD_RULE)
    cot = best_run(select(ctx, "llm-prompting", lambda r: setting(r, "strategy", "") == "cot"))
    ft = best_run(select(ctx, "fine-tuning", lambda r: is_full_data(r.record)))
    missing = [f"no runs of {name}" for name, run in (("LLM prompting with strategy 'cot'", cot),
                                                      ("full-data fine-tuning", ft)) if run is None]
    if cot is None or ft is None:
        return Verdict(5, claim, INCONCLUSIVE, rule, missing)
    pair = ctx.pair(cot, ft)
    if pair is None:
        return Verdict(5, claim, INCONCLUSIVE, rule, [f"{cot.name} and {ft.name} share no validation argument"])
    evidence = [pair_text(pair, "chain-of-thought", "fine-tuning")]
    short = under_trained_note(ft)
    if short:
        return Verdict(5, claim, INCONCLUSIVE, rule, [*evidence, short], reason=short)
    low, high = pair.result.ci95
    if low > -COMPETITIVE_MARGIN:
        return Verdict(5, claim, SUPPORTED, rule, evidence)
    if pair.significant and pair.difference < 0 and high < -COMPETITIVE_MARGIN:
        return Verdict(5, claim, NOT_SUPPORTED, rule, evidence)
    return Verdict(5, claim, INCONCLUSIVE, rule, [*evidence, f"the interval [{low:+.3f}, {high:+.3f}] and the "
                                                  f"corrected p do not settle it against the margin of "
                                                  f"-{COMPETITIVE_MARGIN}"])


def verdicts(ctx: Context) -> list[Verdict]:
    return [claim_small_models(ctx), claim_multiple_heads(ctx), claim_contrastive(ctx), claim_few_shot(ctx),
            claim_cot(ctx)]


METHOD_TEXT = (
    "How the verdicts are made. Selection: the best configuration of a kind is the one with the highest mean F1 on "
    "the dev slice of training (the protocol chooses on dev; validation only scores). Test: a configuration's "
    "F1 is the mean over its seeds; the variance of a difference between two configurations is the variance of the "
    "seed-averaged difference under a paired bootstrap of the shared validation arguments plus each side's "
    "between-seed variance divided by its number of seeds, and p and the interval come from a t distribution with "
    "Welch-Satterthwaite degrees of freedom. This accounts for both argument and training variance: a difference "
    "that one lucky seed explains is not significant (tested on synthetic data, where at a true difference of zero "
    "it rejects at most at the nominal rate while a test over arguments alone rejects most of the time). With one "
    "seed per side, training variance is not estimated and the test reduces to the argument bootstrap. "
    "Multiplicity: every p-value of the report (the verdicts' comparisons, their all-ones checks and the table "
    "against the best run) is corrected together by Holm's method, a comparison made both ways round counting "
    "as one test; the p-values quoted are the corrected ones."
)


def verdict_section(ctx: Context) -> list[Block]:
    blocks: list[Block] = [
        Heading(SECTION_TITLES[7]),
        Paragraph("Each claim of Sun (2024) gets a verdict by the rule stated with it, from seed-aware paired tests "
                  f"({ctx.resamples} bootstrap resamples) on the validation arguments both configurations scored; "
                  f"significant means a Holm-corrected p < {ALPHA}. A run's kind comes from its record: family, "
                  "model, parameter count, detector settings and training size."),
        Paragraph(METHOD_TEXT),
    ]
    all_verdicts = verdicts(ctx)
    blocks.append(Table(["Claim", "Verdict", "At matched compute"],
                        [[f"({v.number}) {v.claim}", v.shown, v.matched or DASH] for v in all_verdicts]))
    for v in all_verdicts:
        blocks += [Heading(f"({v.number}) {v.claim}", level=3), Paragraph(f"{v.shown}.", lead="Verdict:")]
        if v.matched:
            blocks.append(Paragraph(f"{v.matched}.", lead="Verdict at matched compute:"))
        blocks += [Paragraph(v.rule, lead="Rule:"), Bullets(v.evidence)]
    return blocks
