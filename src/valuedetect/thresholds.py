"""Decision thresholds chosen on the dev split to maximise the official F1.

The official F1 is not a sum over categories, so thresholds are searched against the whole
measure: one global threshold by grid search, per-category thresholds by coordinate ascent
from the global one. Per-category thresholds overfit an ~800-argument dev slice easily
(some categories have a few dozen positives), so they are shrunk towards the global value,
and a two-fold cross-fit estimates how each choice does on arguments it was not tuned on.
``mode="auto"`` keeps per-category thresholds only when the cross-fit says they help.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from valuedetect.metrics import _from_counts

MODES = ("global", "per_category", "auto", "fixed")


@dataclass
class Thresholds:
    """Per-category decision thresholds and how they were chosen."""

    values: list[float]
    mode: str
    global_value: float
    report: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"values": self.values, "mode": self.mode, "global": self.global_value, "report": self.report}

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(values=[float(v) for v in data["values"]], mode=data["mode"],
                   global_value=float(data["global"]), report=dict(data.get("report", {})))

    @classmethod
    def constant(cls, value: float, n: int) -> Thresholds:
        return cls(values=[value] * n, mode="fixed", global_value=value)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return (np.asarray(probabilities) >= np.asarray(self.values)[None, :]).astype(np.int8)


def _candidates(probabilities: np.ndarray) -> np.ndarray:
    """A fixed grid plus quantiles of the scores, so uncalibrated scores are covered too."""
    grid = np.linspace(0.01, 0.99, 99)
    quantiles = np.quantile(probabilities, np.linspace(0.0, 1.0, 101))
    return np.unique(np.concatenate([grid, quantiles]))


def best_global(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The single threshold with the highest official F1, and that F1."""
    t = (labels > 0).astype(np.float64)
    candidates = _candidates(probabilities)
    relevant = t.sum(0)
    best = (0.5, -1.0)
    for start in range(0, len(candidates), 64):
        chunk = candidates[start : start + 64]
        pred = (probabilities[None, :, :] >= chunk[:, None, None]).astype(np.float64)
        f1 = _from_counts((pred * t[None]).sum(1), pred.sum(1), relevant[None].repeat(len(chunk), 0))[0]
        i = int(np.argmax(f1))
        if f1[i] > best[1] + 1e-12:
            best = (float(chunk[i]), float(f1[i]))
    return best


def best_per_category(
    probabilities: np.ndarray, labels: np.ndarray, start: float, rounds: int = 2
) -> np.ndarray:
    """Coordinate ascent on the official F1, one category at a time, from ``start``."""
    t = (labels > 0).astype(np.float64)
    n_cat = t.shape[1]
    values = np.full(n_cat, start)
    relevant = t.sum(0)
    pred = (probabilities >= values[None]).astype(np.float64)
    tp, predicted = (pred * t).sum(0), pred.sum(0)
    for _ in range(rounds):
        for c in range(n_cat):
            cands = _candidates(probabilities[:, c])
            col = (probabilities[:, c][None, :] >= cands[:, None]).astype(np.float64)
            tp_k = np.repeat(tp[None], len(cands), 0)
            pr_k = np.repeat(predicted[None], len(cands), 0)
            tp_k[:, c] = col @ t[:, c]
            pr_k[:, c] = col.sum(1)
            f1 = _from_counts(tp_k, pr_k, np.repeat(relevant[None], len(cands), 0))[0]
            best = int(np.argmax(f1))
            # Prefer the current value on ties, so a category without positives stays put.
            current = _from_counts(tp, predicted, relevant)[0]
            if f1[best] > current + 1e-12:
                values[c] = cands[best]
                tp[c], predicted[c] = tp_k[best, c], pr_k[best, c]
    return values


def _fit(probabilities: np.ndarray, labels: np.ndarray, shrink: float) -> tuple[float, np.ndarray]:
    g, _ = best_global(probabilities, labels)
    raw = best_per_category(probabilities, labels, g)
    return g, g + shrink * (raw - g)


def _out_of_fold(probabilities: np.ndarray, labels: np.ndarray, shrink: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two-fold cross-fit: each half decided by the global and per-category thresholds fitted on
    the other half (an honest estimate of how each choice does on arguments it was not tuned on)."""
    fold = np.random.default_rng(seed).permutation(len(labels)) % 2
    oof_global = np.zeros_like(probabilities, dtype=np.int8)
    oof_per_cat = np.zeros_like(probabilities, dtype=np.int8)
    for k in (0, 1):
        tr, te = fold != k, fold == k
        g_k, pc_k = _fit(probabilities[tr], labels[tr], shrink)
        oof_global[te] = probabilities[te] >= g_k
        oof_per_cat[te] = probabilities[te] >= pc_k[None]
    return oof_global, oof_per_cat


def _decided_f1(decisions: np.ndarray, labels: np.ndarray) -> float:
    t = (labels > 0).astype(np.float64)
    p = decisions.astype(np.float64)
    return float(_from_counts((p * t).sum(0), p.sum(0), t.sum(0))[0])


def _f1(probabilities: np.ndarray, labels: np.ndarray, values: np.ndarray) -> float:
    t = (labels > 0).astype(np.float64)
    pred = (probabilities >= values[None]).astype(np.float64)
    return float(_from_counts((pred * t).sum(0), pred.sum(0), t.sum(0))[0])


def tune(
    probabilities: np.ndarray,
    labels: np.ndarray,
    mode: str = "auto",
    shrink: float = 0.5,
    seed: int = 0,
    fixed: float = 0.5,
) -> Thresholds:
    """Choose thresholds on the scores of the split they are tuned on (dev) for the official F1.

    ``shrink`` in [0, 1] scales each per-category deviation from the global threshold (0: all
    global, 1: raw coordinate-ascent values). The report holds the in-sample F1 (``tuned_f1*``) of
    both choices and their two-fold cross-fitted F1 (an honest estimate: each half is scored
    with thresholds tuned on the other half).
    """
    if mode not in MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; expected one of {MODES}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    n_cat = probabilities.shape[1]
    if mode == "fixed":
        th = Thresholds.constant(fixed, n_cat)
        th.report = {"tuned_f1": _f1(probabilities, labels, np.full(n_cat, fixed))}
        return th
    g, per_cat = _fit(probabilities, labels, shrink)
    report = {
        "tuned_f1_global": _f1(probabilities, labels, np.full(n_cat, g)),
        "tuned_f1_per_category": _f1(probabilities, labels, per_cat),
    }
    oof_global, oof_per_cat = _out_of_fold(probabilities, labels, shrink, seed)
    report["crossfit_f1_global"] = _decided_f1(oof_global, labels)
    report["crossfit_f1_per_category"] = _decided_f1(oof_per_cat, labels)
    if mode == "auto":
        mode = "per_category" if report["crossfit_f1_per_category"] > report["crossfit_f1_global"] else "global"
    values = per_cat if mode == "per_category" else np.full(n_cat, g)
    report["tuned_f1"] = report[f"tuned_f1_{mode}"]
    report["shrink"] = shrink
    return Thresholds(values=[float(v) for v in values], mode=mode, global_value=float(g), report=report)


def retune(probabilities: np.ndarray, labels: np.ndarray, current: Thresholds, seed: int = 0,
           shrink: float = 0.5) -> Thresholds:
    """Per-category thresholds re-chosen on a labelled sample of another domain, kept only where a
    two-fold cross-fit on that sample says they beat ``current``; otherwise ``current`` stays.

    Why: a detector's thresholds are chosen on its dev slice, whose base rates are the training
    domain's. Across the three labelled sources of Touche23-ValueEval (shipped MiniLM, validation),
    re-choosing on 25-50 arguments of the smallest source gained 0.03-0.06 F1 but lost 0.01-0.02 on
    the others; the cross-fit guard kept most of the gain and cut the losses to under 0.01
    (``scripts/domain_thresholds.py``). No label-free choice tried (one global threshold, Platt
    calibration, EM prior adaptation, dev's positive rates) beat dev's thresholds on all three
    sources; each lost on at least one (Platt 0.05 on one, EM 0.01-0.17 on all three).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    old = np.asarray(current.values)
    crossfit_new = _decided_f1(_out_of_fold(probabilities, labels, shrink, seed)[1], labels)
    current_f1 = _f1(probabilities, labels, old)
    report = {"sample_f1_current": current_f1, "crossfit_f1_retuned": crossfit_new, "shrink": shrink,
              "arguments": len(labels)}
    if crossfit_new > current_f1:
        g, per_cat = _fit(probabilities, labels, shrink)
        report["kept"] = "retuned"
        return Thresholds(values=[float(v) for v in per_cat], mode="retuned", global_value=float(g), report=report)
    report["kept"] = "current"
    return Thresholds(values=[float(v) for v in old], mode=current.mode, global_value=current.global_value,
                      report={**current.report, "retune": report})
