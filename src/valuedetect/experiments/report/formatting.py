"""How numbers and paired tests read in the report, shared by the sections and the verdicts so
the same value is written the same way everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from valuedetect.experiments.records import RunRecord
from valuedetect.experiments.report.scoring import ALPHA, Pair

DASH = "—"


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
    """Three decimals; below 0.001 as "< 0.001" (a t tail that small is beyond what the bootstrap's
    variance estimate can vouch for, and "0.000" would read as certainty)."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """The p-value after its name in a sentence: "= 0.012" or "< 0.001"."""
    text = pvalue(p)
    return text if text.startswith("<") else f"= {text}"


def size_setting(record: RunRecord) -> str:
    k, fraction = record.spec.get("training_per_category"), record.spec.get("training_fraction")
    if k is not None:
        return f"{k} per category"
    if fraction is not None and fraction < 1:
        return f"{fraction:.0%} of training"
    folds = record.spec.get("cross_fit_folds")
    if folds is not None:
        return f"fit minus cross-fitting fold {record.spec.get('cross_fit_fold')} of {folds}"
    return "full"


def pair_text(pair: Pair, label_a: str, label_b: str) -> str:
    """The evidence of one paired test in a sentence (p corrected by Holm once the report applies it)."""
    r = pair.result
    verdict = "significant" if pair.significant else "not significant"
    b_name = pair.b.name if pair.b is not None else "all-ones"
    p_label = "corrected p" if pair.p_holm is not None else "p"
    seeds = f"{len(pair.a.members)} vs {len(pair.b.members) if pair.b is not None else 1} seeds"
    return (
        f"{pair.a.name} ({label_a}, F1 {f3(r.f1_a)}) vs {b_name} ({label_b}, F1 {f3(r.f1_b)}) on their "
        f"{pair.n} shared validation arguments ({seeds}): difference {r.difference:+.3f}, 95% CI "
        f"{interval(r.ci95, signed=True)}, {p_label} {p_is(pair.p)} ({verdict} at {ALPHA})"
    )
