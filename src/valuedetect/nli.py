"""The paper's NLI side task (Sun et al. 2024, Table 5): does an argument's premise support its
conclusion? The label comes from the stance ("in favor of" -> support, "against" -> attack), so
the task needs no annotation beyond the arguments files.

It is a task (``tasks.Task``) like the value task, with one column, P(support): it trains and is
scored by the same run (``valuedetect train --task nli``, ``task = "nli"`` in a config), under the
same protocol (a dev slice of training, grouped by conclusion, chooses epochs and the threshold;
validation is scored once), by the same detectors (``encoder`` on the premise-conclusion pair,
``prompt`` on ``templates.NLI_TEMPLATE``, zero-shot or prompt-tuned). What is NLI's own lives
here: the labels, the metric (accuracy with a bootstrap interval, and macro F1 over the two
classes), the accuracy-maximising threshold and the predictions file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from valuedetect.data import STANCES, Argument, Split, atomic_write_text
from valuedetect.errors import ConfigError, InputError
from valuedetect.tasks import Task

LABELS = ("attack", "support")  # index = class id; 1 is the positive class of the verbalizer
SUPPORT = 1
BOOTSTRAP_RESAMPLES = 1000
PREDICTIONS_HEADER = "Argument ID\tgold\tpredicted\tp_support"


# ----------------------------------------------------------------------------- labels


def nli_labels(arguments: Sequence[Argument]) -> np.ndarray:
    """[n, 1]: 1 where the premise supports the conclusion. The stance is the label, so an
    argument without one (free text) has none."""
    labels = np.zeros((len(arguments), 1), dtype=np.int8)
    for row, a in enumerate(arguments):
        if a.stance not in STANCES or not a.conclusion.strip():
            raise InputError(f"argument {a.id!r} has no conclusion or stance, so it has no NLI label")
        labels[row, 0] = int(a.stance == "in favor of")
    return labels


def nli_split(split: Split) -> Split:
    """The split with NLI labels in place of the value labels."""
    return Split(split.name, list(split.arguments), nli_labels(split.arguments))


# ----------------------------------------------------------------------------- scores


def accuracy_interval(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy, resampling arguments (as ``metrics`` does for F1)."""
    correct = np.asarray(correct, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(correct), size=(resamples, len(correct)))
    means = correct[draws].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class NLIScores:
    """Accuracy, its 95% interval (when bootstrapped), macro F1 over both classes, n."""

    accuracy: float
    macro_f1: float
    n: int
    ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "ci95": list(self.ci95) if self.ci95 is not None else None,
                "macro_f1": self.macro_f1, "n": self.n}


def nli_scores(gold: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
               bootstrap: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> NLIScores:
    """Scores of 0/1 decisions (attack/support) against the gold labels."""
    from sklearn.metrics import f1_score

    gold, predicted = np.asarray(gold).reshape(-1), np.asarray(predicted).reshape(-1)
    if gold.shape != predicted.shape:
        raise ValueError(f"{len(gold)} gold labels and {len(predicted)} predictions")
    correct = gold == predicted
    return NLIScores(
        accuracy=float(correct.mean()) if len(gold) else 0.0,
        macro_f1=float(f1_score(gold, predicted, labels=[0, 1], average="macro", zero_division=0)),
        n=len(gold),
        ci95=accuracy_interval(correct, bootstrap, seed) if bootstrap > 0 and len(gold) else None,
    )


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold on P(support) with the highest accuracy, and that accuracy; ties go to the
    threshold closest to 0.5 (uncalibrated scores move it, a tie should not)."""
    p, gold = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(labels).reshape(-1) > 0
    candidates = np.unique(np.concatenate([np.linspace(0.01, 0.99, 99), p]))
    accuracy = ((p[None, :] >= candidates[:, None]) == gold[None, :]).mean(axis=1)
    best = np.flatnonzero(accuracy >= accuracy.max() - 1e-12)
    choice = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[choice]), float(accuracy[choice])


def tune_accuracy(scores: np.ndarray, labels: np.ndarray, mode: str = "auto", fixed: float = 0.5) -> Any:
    """One threshold on P(support): the accuracy-maximising one on the scores given (dev), or
    ``fixed`` for ``mode = "fixed"``. The report holds the accuracy it reaches there."""
    from valuedetect.thresholds import Thresholds

    if mode == "fixed":
        th = Thresholds.constant(fixed, 1)
        decided = np.asarray(scores).reshape(-1) >= fixed
        th.report = {"tuned_accuracy": float((decided == (np.asarray(labels).reshape(-1) > 0)).mean())}
        return th
    value, accuracy = best_accuracy(scores, labels)
    return Thresholds(values=[value], mode="global", global_value=value, report={"tuned_accuracy": accuracy})


def format_predictions(arguments: Sequence[Argument], labels: np.ndarray, p_support: np.ndarray,
                       decisions: np.ndarray) -> str:
    lines = [PREDICTIONS_HEADER]
    for a, gold, p, d in zip(arguments, np.asarray(labels).reshape(-1), np.asarray(p_support).reshape(-1),
                             np.asarray(decisions).reshape(-1), strict=True):
        lines.append(f"{a.id}\t{LABELS[int(gold)]}\t{LABELS[int(d)]}\t{p:.6f}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the task


class NLITask(Task):
    """Premise supports / attacks conclusion: one column, accuracy, a threshold chosen on dev."""

    name = "nli"
    columns = ("support",)
    methods = ("encoder", "prompt")
    headline = "accuracy"
    headline_label = "accuracy"
    labels_note = ("support = stance 'in favor of', attack = stance 'against'; predicted support where p_support "
                   "reaches the threshold chosen on dev (see thresholds)")
    # Test predictions are written, not scored: a run reports validation only, as the value task
    # does while test labels are held back (NLI's gold is the stance printed in the test file).
    scores_test = False
    detector_defaults: ClassVar[dict[str, dict[str, Any]]] = {"encoder": {"template": "pair"},
                                                              "prompt": {"template": "nli"}}

    def split(self, split: Split) -> Split:
        return nli_split(split)

    def score(self, labels: np.ndarray, decisions: np.ndarray, bootstrap: int = 0, seed: int = 0) -> NLIScores:
        return nli_scores(labels, decisions, bootstrap=bootstrap, seed=seed)

    def choose(self, scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        return best_accuracy(scores, labels)

    def tune(self, scores: np.ndarray, labels: np.ndarray, config: Any) -> Any:
        mode = "fixed" if config.thresholds == "fixed" else "global"
        return tune_accuracy(scores, labels, mode, config.fixed_threshold)

    def prompt_columns(self) -> Sequence[Any]:
        return (None,)

    def check_input_template(self, template: Any, where: str) -> None:
        from valuedetect.templates import STANCE_FIELDS

        leaks = sorted(template.fields() & STANCE_FIELDS)
        if leaks:
            raise ConfigError(f"{where}: template {template.name!r} shows the stance "
                              f"({', '.join('{' + n + '}' for n in leaks)}), which is the NLI label; use 'pair' "
                              "(premise and conclusion as a sentence pair) or a template without it")
        if "conclusion" not in template.fields():
            raise ConfigError(f"{where}: template {template.name!r} does not show the conclusion, which the NLI "
                              "task asks about; use 'pair'")

    def write_run(self, path: Path, split: Split, scores: np.ndarray, decisions: np.ndarray) -> None:
        atomic_write_text(path, format_predictions(split.arguments, nli_labels(split.arguments), scores,
                                                   decisions))

    def run_file(self, role: str) -> str:
        return f"{role}-predictions.tsv"

    def output_key(self, role: str) -> str:
        return f"{role}_predictions"

    def summary(self, role: str, scores: Any) -> dict[str, float]:
        if role == "dev":
            return {"dev_accuracy": scores.accuracy}
        return {f"{role}_accuracy": scores.accuracy, f"{role}_macro_f1": scores.macro_f1}


__all__ = ["LABELS", "NLIScores", "NLITask", "accuracy_interval", "best_accuracy", "format_predictions",
           "nli_labels", "nli_scores", "nli_split", "tune_accuracy"]
