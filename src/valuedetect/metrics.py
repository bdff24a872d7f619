"""The official ValueEval metric, its per-category table, intervals and significance tests.

Official F1 (as the SemEval-2023 Task 4 evaluator computes it): over the categories with at
least one true positive, P = mean of per-category precision (0 where nothing is predicted),
R = mean of per-category recall, and F1 = 2PR / (P + R). This is *not* the mean of
per-category F1; that variant, which several papers reported, is computed too and labelled
``mean_f1`` (not official).

Everything works on count vectors, so bootstrap resamples and permutations become matrix
products instead of Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES


@dataclass
class Scores:
    """Official scores of one run, plus the per-category breakdown."""

    f1: float
    precision: float
    recall: float
    mean_f1: float
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    ci95: tuple[float, float] | None = None
    n: int = 0

    def to_dict(self) -> dict:
        return {
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
            "mean_f1": self.mean_f1,
            "mean_f1_note": "mean of per-category F1, not the official measure",
            "per_category": self.per_category,
            "ci95": list(self.ci95) if self.ci95 is not None else None,
            "n": self.n,
        }


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} must be equal 2-D shapes")
    return (y_true > 0).astype(np.float64), (y_pred > 0).astype(np.float64)


def _from_counts(tp: np.ndarray, predicted: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, ...]:
    """Official P, R, F1 and mean-F1 from counts with a leading batch axis [..., categories]."""
    used = relevant > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        p_c = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        r_c = np.where(used, tp / np.where(used, relevant, 1), 0.0)
        f_c = np.where(p_c + r_c > 0, 2 * p_c * r_c / np.where(p_c + r_c > 0, p_c + r_c, 1), 0.0)
    n_used = used.sum(axis=-1)
    safe_n = np.maximum(n_used, 1)
    p = (p_c * used).sum(axis=-1) / safe_n
    r = (r_c * used).sum(axis=-1) / safe_n
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    mean_f1 = (f_c * used).sum(axis=-1) / safe_n
    return f1, p, r, mean_f1, p_c, r_c, f_c, used


def official_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Official F1 only: the fast path used by threshold search."""
    t, p = _check(y_true, y_pred)
    return float(_from_counts((t * p).sum(0), p.sum(0), t.sum(0))[0])


def score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: Sequence[str] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> Scores:
    """Official scores, per-category P/R/F1 and, if ``bootstrap`` > 0, a 95% interval.

    Categories without a true positive are skipped, as in the official evaluator; they are
    listed in ``per_category`` with ``support`` 0 and no scores.
    """
    t, p = _check(y_true, y_pred)
    if names is None:
        names = CATEGORY_NAMES if t.shape[1] == len(CATEGORY_NAMES) else LEVEL1_NAMES
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} names for {t.shape[1]} columns")
    tp, predicted, relevant = (t * p).sum(0), p.sum(0), t.sum(0)
    f1, prec, rec, mean_f1, p_c, r_c, f_c, used = _from_counts(tp, predicted, relevant)
    per_category: dict[str, dict[str, float]] = {}
    for j, name in enumerate(names):
        entry: dict[str, float] = {"support": int(relevant[j]), "predicted": int(predicted[j])}
        if used[j]:
            entry.update(precision=float(p_c[j]), recall=float(r_c[j]), f1=float(f_c[j]))
        per_category[name] = entry
    result = Scores(
        f1=float(f1), precision=float(prec), recall=float(rec), mean_f1=float(mean_f1),
        per_category=per_category, n=int(t.shape[0]),
    )
    if bootstrap > 0:
        result.ci95 = bootstrap_interval(t, p, resamples=bootstrap, seed=seed)
    return result


def _resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each argument is drawn in each bootstrap resample: [resamples, n]."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_interval(
    y_true: np.ndarray, y_pred: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the official F1, resampling arguments."""
    t, p = _check(y_true, y_pred)
    rng = np.random.default_rng(seed)
    scores = []
    for start in range(0, resamples, 250):
        w = _resample_weights(len(t), min(250, resamples - start), rng)
        scores.append(_from_counts(w @ (t * p), w @ p, w @ t)[0])
    all_scores = np.concatenate(scores)
    alpha = (1 - level) / 2
    return float(np.quantile(all_scores, alpha)), float(np.quantile(all_scores, 1 - alpha))


@dataclass
class Comparison:
    """Whether run A's official F1 differs from run B's on the same arguments."""

    f1_a: float
    f1_b: float
    difference: float
    p_value: float
    ci95: tuple[float, float]
    method: str = "paired approximate randomization (two-sided) + paired bootstrap interval"

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_dict(self) -> dict:
        return {
            "f1_a": self.f1_a, "f1_b": self.f1_b, "difference": self.difference,
            "p_value": self.p_value, "ci95_difference": list(self.ci95),
            "significant_at_0.05": self.significant, "method": self.method,
        }


def compare(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> Comparison:
    """Paired significance test of F1(A) - F1(B).

    The p-value comes from approximate randomization: each argument's pair of predictions is
    swapped between A and B at random, and we count how often the absolute difference is at
    least the observed one. The interval is a paired bootstrap of the difference.
    """
    t, a = _check(y_true, pred_a)
    _, b = _check(y_true, pred_b)
    rng = np.random.default_rng(seed)
    relevant = t.sum(0)
    ta, tb = t * a, t * b
    f_a = _from_counts(ta.sum(0), a.sum(0), relevant)[0]
    f_b = _from_counts(tb.sum(0), b.sum(0), relevant)[0]
    observed = float(f_a - f_b)
    extreme = 0
    done = 0
    while done < resamples:
        m = min(500, resamples - done)
        swap = rng.integers(0, 2, size=(m, len(t))).astype(np.float64)
        keep = 1.0 - swap
        fa = _from_counts(keep @ ta + swap @ tb, keep @ a + swap @ b, relevant)[0]
        fb = _from_counts(keep @ tb + swap @ ta, keep @ b + swap @ a, relevant)[0]
        extreme += int((np.abs(fa - fb) >= abs(observed) - 1e-12).sum())
        done += m
    p_value = (extreme + 1) / (resamples + 1)
    diffs = []
    done = 0
    while done < resamples:
        m = min(250, resamples - done)
        w = _resample_weights(len(t), m, rng)
        rel = w @ t
        diffs.append(_from_counts(w @ ta, w @ a, rel)[0] - _from_counts(w @ tb, w @ b, rel)[0])
        done += m
    d = np.concatenate(diffs)
    return Comparison(
        f1_a=float(f_a), f1_b=float(f_b), difference=observed, p_value=float(p_value),
        ci95=(float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))),
    )


SEED_TEST_METHOD = ("seed-aware test: variance of the seed-averaged F1 difference = paired bootstrap over "
                    "arguments + between-seed variance of each side / its number of seeds; p and interval from a "
                    "t distribution with Welch-Satterthwaite degrees of freedom (two-sided)")


def _weighted_f1(weights: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Official F1 of one prediction matrix under each row of argument weights: [resamples]."""
    return _from_counts(weights @ (t * p), weights @ p, weights @ t)[0]


@dataclass
class SeedSide:
    """One configuration's runs on shared arguments: each seed's F1 and their mean."""

    f1: np.ndarray  # [seeds]

    @property
    def mean(self) -> float:
        return float(self.f1.mean())

    @property
    def seed_variance_of_mean(self) -> float:
        """Between-seed variance of the mean over seeds (0 with one seed: not estimable)."""
        k = len(self.f1)
        return float(self.f1.var(ddof=1) / k) if k > 1 else 0.0


def _seed_test(observed: float, argument_variance: float, sides: Sequence[SeedSide], n: int) -> tuple[float, float,
                                                                                                       float]:
    """p-value, half-width of the 95% interval and degrees of freedom of the seed-aware t test."""
    from scipy import stats

    seed_terms = [side.seed_variance_of_mean for side in sides]
    variance = argument_variance + sum(seed_terms)
    if not variance > 0:
        # No spread at all (one shared argument, or identical resamples): the data cannot tell the
        # two sides apart, whatever their difference, so this is no evidence (p = 1), not proof.
        return 1.0, 0.0, float("inf")
    # Welch-Satterthwaite: each seed term has k-1 degrees of freedom, the argument term n-1.
    denominator = argument_variance ** 2 / max(n - 1, 1) + sum(
        term ** 2 / (len(side.f1) - 1) for term, side in zip(seed_terms, sides, strict=True) if len(side.f1) > 1)
    df = variance ** 2 / denominator if denominator > 0 else float("inf")
    scale = float(np.sqrt(variance))
    p_value = float(2 * stats.t.sf(abs(observed) / scale, df))
    return p_value, float(stats.t.ppf(0.975, df) * scale), float(df)


def _argument_variance(t: np.ndarray, a: Sequence[np.ndarray], b: Sequence[np.ndarray], resamples: int,
                       seed: int) -> float:
    """Variance, over paired bootstrap resamples of the arguments, of the mean F1 over ``a``'s seeds
    minus the mean over ``b``'s (or of ``a``'s mean alone when ``b`` is empty)."""
    rng = np.random.default_rng(seed)
    values = []
    done = 0
    while done < resamples:
        m = min(250, resamples - done)
        w = _resample_weights(len(t), m, rng)
        value = np.mean([_weighted_f1(w, t, p) for p in a], axis=0)
        if b:
            value = value - np.mean([_weighted_f1(w, t, p) for p in b], axis=0)
        values.append(value)
        done += m
    return float(np.concatenate(values).var(ddof=1))


def compare_seeds(
    y_true: np.ndarray, preds_a: Sequence[np.ndarray], preds_b: Sequence[np.ndarray],
    resamples: int = 2000, seed: int = 0,
) -> Comparison:
    """Is the seed-averaged official F1 of configuration A different from B's on the same arguments?

    Both sources of variance enter: the arguments (a paired bootstrap of the difference of the
    seed-averaged F1, the same draw for both sides) and training (the spread of each side's
    per-seed F1 over its seeds). With few seeds the seed terms have few degrees of freedom, so the
    t distribution's heavier tails keep the test honest where a bootstrap over three seeds is not.
    A difference that one lucky seed explains is then not significant, which a test over arguments
    alone calls significant. One seed per side leaves training variance out (not estimable).
    """
    if not preds_a or not preds_b:
        raise ValueError("each side needs at least one run")
    t = (np.asarray(y_true) > 0).astype(np.float64)
    a = [_check(y_true, p)[1] for p in preds_a]
    b = [_check(y_true, p)[1] for p in preds_b]
    ones = np.ones((1, len(t)))
    side_a = SeedSide(np.array([_weighted_f1(ones, t, p)[0] for p in a]))
    side_b = SeedSide(np.array([_weighted_f1(ones, t, p)[0] for p in b]))
    observed = side_a.mean - side_b.mean
    argument_variance = _argument_variance(t, a, b, resamples, seed)
    p_value, half, _ = _seed_test(observed, argument_variance, (side_a, side_b), len(t))
    return Comparison(f1_a=side_a.mean, f1_b=side_b.mean, difference=observed, p_value=p_value,
                      ci95=(observed - half, observed + half), method=SEED_TEST_METHOD)


def seed_interval(
    y_true: np.ndarray, preds: Sequence[np.ndarray], resamples: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """95% interval of a configuration's seed-averaged official F1, by the same variance model."""
    t = (np.asarray(y_true) > 0).astype(np.float64)
    ps = [_check(y_true, p)[1] for p in preds]
    side = SeedSide(np.array([_weighted_f1(np.ones((1, len(t))), t, p)[0] for p in ps]))
    _, half, _ = _seed_test(1.0, _argument_variance(t, ps, [], resamples, seed), (side,), len(t))
    return side.mean - half, side.mean + half


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control across a report's comparisons)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def ranking_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Mean over categories of ROC AUC: how well the scores rank each category's arguments, before
    any threshold. Not the official measure; it tells a detector whose F1 sits at the all-ones
    level because its scores carry no signal (AUC near 0.5) from one whose thresholds failed."""
    from sklearn.metrics import roc_auc_score

    t, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape:
        raise ValueError(f"labels {t.shape} and scores {s.shape} differ in shape")
    if not np.isfinite(s).all():  # a diverged model: no ranking to read (and F1 says the rest)
        return None
    aucs = [roc_auc_score(t[:, j], s[:, j]) for j in range(t.shape[1]) if 0 < t[:, j].sum() < len(t)]
    return float(np.mean(aucs)) if aucs else None
