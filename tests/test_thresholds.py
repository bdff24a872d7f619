"""Threshold tuning for the official F1: global, per-category, auto and fixed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from valuedetect.metrics import official_f1
from valuedetect.thresholds import Thresholds, best_global, tune

REPORT_KEYS = {
    "tuned_f1_global", "tuned_f1_per_category", "crossfit_f1_global",
    "crossfit_f1_per_category", "tuned_f1", "shrink",
}


def separable(n: int = 400, k: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positives score in [0.6, 1.0], negatives in [0.0, 0.4): a threshold between is perfect."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.25).astype(np.int8)
    scores = np.where(labels == 1, rng.uniform(0.6, 1.0, (n, k)), rng.uniform(0.0, 0.4, (n, k)))
    return scores, labels


def noisy(n: int = 600, k: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping scores with per-category offsets, so per-category thresholds can help."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < rng.uniform(0.05, 0.4, k)).astype(np.int8)
    offsets = rng.uniform(-0.3, 0.3, k)
    scores = 1 / (1 + np.exp(-(2.0 * labels - 1 + offsets + rng.normal(0, 1.0, (n, k)))))
    return scores, labels


def test_global_threshold_on_separable_scores():
    scores, labels = separable()
    th = tune(scores, labels, mode="global")
    assert th.mode == "global"
    assert scores[labels == 0].max() < th.global_value <= scores[labels == 1].min()
    assert th.values == [th.global_value] * 20
    assert th.report["tuned_f1"] == pytest.approx(1.0)
    np.testing.assert_array_equal(th.apply(scores), labels)


def test_global_threshold_matches_brute_force_on_discrete_scores():
    # Scores take only the values 0.2, 0.5 and 0.8, so a threshold only matters through which
    # of the four cuts it makes. Labels are set so that cutting at 0.5 is the unique best.
    rng = np.random.default_rng(2)
    n, k = 300, 20
    level = rng.choice([0.2, 0.5, 0.8], size=(n, k))
    p_positive = np.select([level == 0.2, level == 0.5, level == 0.8], [0.02, 0.6, 0.9])
    labels = (rng.random((n, k)) < p_positive).astype(np.int8)
    cuts = {cut: official_f1(labels, level >= cut) for cut in (0.0, 0.35, 0.65, 0.95)}
    best_cut = max(cuts, key=cuts.get)
    assert best_cut == 0.35 and sorted(cuts.values())[-2] < cuts[0.35] - 0.01  # the design holds
    value, f1 = best_global(level, labels)
    assert 0.2 < value <= 0.5
    assert f1 == pytest.approx(cuts[0.35])
    th = tune(level, labels, mode="global")
    assert 0.2 < th.global_value <= 0.5
    assert th.report["tuned_f1"] == pytest.approx(cuts[0.35])


def test_global_threshold_is_at_least_as_good_as_any_grid_threshold():
    scores, labels = noisy()
    value, f1 = best_global(scores, labels)
    grid_best = max(official_f1(labels, scores >= t) for t in np.linspace(0.0, 1.0, 201))
    assert f1 >= grid_best - 1e-9
    assert f1 == pytest.approx(official_f1(labels, scores >= value))


def test_per_category_with_shrink_zero_equals_global():
    scores, labels = noisy()
    global_th = tune(scores, labels, mode="global")
    per_cat = tune(scores, labels, mode="per_category", shrink=0.0)
    assert per_cat.mode == "per_category"
    assert per_cat.values == global_th.values
    assert per_cat.global_value == global_th.global_value
    assert per_cat.report["tuned_f1"] == pytest.approx(global_th.report["tuned_f1"])
    np.testing.assert_array_equal(per_cat.apply(scores), global_th.apply(scores))


def test_per_category_thresholds_find_what_one_global_cannot():
    # Category 0 separates between 0.65 and 0.7, category 1 between 0.2 and 0.3: no single
    # threshold is perfect for both.
    rng = np.random.default_rng(3)
    n = 200
    labels = (rng.random((n, 2)) < 0.3).astype(np.int8)
    scores = np.empty((n, 2))
    scores[:, 0] = np.where(labels[:, 0] == 1, rng.uniform(0.7, 0.9, n), rng.uniform(0.5, 0.65, n))
    scores[:, 1] = np.where(labels[:, 1] == 1, rng.uniform(0.3, 0.4, n), rng.uniform(0.0, 0.2, n))
    global_th = tune(scores, labels, mode="global")
    assert global_th.report["tuned_f1"] < 0.95
    per_cat = tune(scores, labels, mode="per_category", shrink=1.0)
    assert per_cat.report["tuned_f1"] == pytest.approx(1.0)
    for c in (0, 1):
        negatives, positives = scores[labels[:, c] == 0, c], scores[labels[:, c] == 1, c]
        assert negatives.max() < per_cat.values[c] <= positives.min()
    half = tune(scores, labels, mode="per_category", shrink=0.5)
    for g, raw, shrunk in zip([per_cat.global_value] * 2, per_cat.values, half.values, strict=True):
        assert shrunk == pytest.approx(g + 0.5 * (raw - g))


def test_unshrunk_per_category_never_loses_to_global_in_sample():
    scores, labels = noisy(seed=4)
    th = tune(scores, labels, mode="per_category", shrink=1.0)
    assert th.report["tuned_f1_per_category"] >= th.report["tuned_f1_global"] - 1e-12


@pytest.mark.parametrize("mode", ["global", "per_category", "auto"])
def test_report_keys(mode):
    scores, labels = noisy(n=300)
    th = tune(scores, labels, mode=mode, shrink=0.5)
    assert set(th.report) >= REPORT_KEYS
    assert th.report["shrink"] == 0.5
    for key in REPORT_KEYS - {"shrink"}:
        assert 0.0 <= th.report[key] <= 1.0
    assert th.report["tuned_f1"] == pytest.approx(official_f1(labels, th.apply(scores)))
    assert len(th.values) == 20


def test_auto_picks_global_or_per_category_by_the_cross_fit():
    chosen = set()
    for seed in (1, 3, 5, 6):
        scores, labels = noisy(seed=seed)
        th = tune(scores, labels, mode="auto", seed=seed)
        assert th.mode in ("global", "per_category")
        r = th.report
        expected = "per_category" if r["crossfit_f1_per_category"] > r["crossfit_f1_global"] else "global"
        assert th.mode == expected
        assert r["tuned_f1"] == r[f"tuned_f1_{th.mode}"]
        chosen.add(th.mode)
    assert chosen == {"global", "per_category"}  # these seeds exercise both outcomes


def test_auto_prefers_global_on_a_tie():
    # Separable scores: both choices are perfect out of fold, so the simpler one is kept.
    scores, labels = separable(seed=7)
    th = tune(scores, labels, mode="auto")
    assert th.report["crossfit_f1_global"] == th.report["crossfit_f1_per_category"] == pytest.approx(1.0)
    assert th.mode == "global"
    assert th.report["tuned_f1"] == pytest.approx(1.0)


def test_fixed_mode_and_unknown_mode():
    scores, labels = noisy(n=200)
    th = tune(scores, labels, mode="fixed", fixed=0.3)
    assert th.mode == "fixed" and th.values == [0.3] * 20
    assert th.report["tuned_f1"] == pytest.approx(official_f1(labels, scores >= 0.3))
    with pytest.raises(ValueError, match="unknown threshold mode"):
        tune(scores, labels, mode="best")


def test_thresholds_round_trip_and_apply():
    th = Thresholds(values=[0.1 * (i % 10) for i in range(20)], mode="per_category", global_value=0.4,
                    report={"tuned_f1": 0.5})
    again = Thresholds.from_dict(th.to_dict())
    assert again == th
    scores = np.full((3, 20), 0.45)
    decided = th.apply(scores)
    assert decided.dtype == np.int8
    np.testing.assert_array_equal(decided[0], [1 if v <= 0.45 else 0 for v in th.values])
    constant = Thresholds.constant(0.5, 20)
    assert constant.mode == "fixed" and constant.apply(np.full((1, 20), 0.5)).sum() == 20


def test_tuning_is_deterministic():
    scores, labels = noisy()
    a = tune(scores, labels, mode="auto", seed=3)
    b = tune(scores, labels, mode="auto", seed=3)
    assert a == b


def test_a_category_without_positives_does_not_break_tuning():
    scores, labels = noisy(n=300)
    labels[:, 4] = 0
    for mode, shrink in itertools.product(("global", "per_category", "auto"), (0.0, 1.0)):
        th = tune(scores, labels, mode=mode, shrink=shrink)
        assert np.all(np.isfinite(th.values))
        assert 0.0 <= th.report["tuned_f1"] <= 1.0
