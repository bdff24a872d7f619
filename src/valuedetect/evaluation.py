"""Scoring runs against labels, as the official evaluator does: run files, or the same in memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from valuedetect.data import read_labels
from valuedetect.errors import InputError
from valuedetect.metrics import Comparison, Scores, compare, score


def align_run(run_ids: Sequence[str], predicted: np.ndarray, label_ids: Sequence[str], truth: np.ndarray,
              run_ids_only: bool = False, where: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Truth and predictions aligned on the labels' IDs.

    Like the official evaluator, an argument missing from the run counts as predicted with no
    value; an ID in the run that the labels lack is an error here (the evaluator skips it
    silently, which hides mistakes such as scoring a run against the wrong split).
    ``run_ids_only`` scores just the arguments the run covers (a run on a seeded subset).
    """
    known = set(label_ids)
    unknown = [i for i in run_ids if i not in known]
    if unknown:
        raise InputError(f"{len(unknown)} Argument IDs are not in the labels, e.g. {unknown[0]!r}", where)
    if predicted.shape[1] != truth.shape[1]:
        raise InputError(f"the run has {predicted.shape[1]} value columns, the labels {truth.shape[1]}", where)
    position = {arg_id: i for i, arg_id in enumerate(run_ids)}
    aligned = np.zeros_like(truth)
    rows = [i for i, arg_id in enumerate(label_ids) if arg_id in position]
    aligned[rows] = predicted[[position[label_ids[i]] for i in rows]]
    if run_ids_only:
        return truth[rows], aligned[rows]
    return truth, aligned


def _read_run_and_labels(run: str | Path, labels: str | Path, run_ids_only: bool) -> tuple[np.ndarray, np.ndarray]:
    label_ids, truth = read_labels(labels)
    run_ids, predicted = read_labels(run, level=1 if truth.shape[1] != 20 else 2)
    try:
        return align_run(run_ids, predicted, label_ids, truth, run_ids_only, run)
    except InputError as error:
        raise InputError(error.problem.replace("the labels", str(labels)), run) from None


def score_run_file(run: str | Path, labels: str | Path, bootstrap: int = 1000, seed: int = 0,
                   run_ids_only: bool = False) -> Scores:
    truth, predicted = _read_run_and_labels(run, labels, run_ids_only)
    return score(truth, predicted, bootstrap=bootstrap, seed=seed)


def compare_run_files(
    run_a: str | Path, run_b: str | Path, labels: str | Path, resamples: int = 2000, seed: int = 0
) -> Comparison:
    truth, a = _read_run_and_labels(run_a, labels, False)
    _, b = _read_run_and_labels(run_b, labels, False)
    return compare(truth, a, b, resamples=resamples, seed=seed)


__all__ = ["align_run", "compare_run_files", "score_run_file"]
