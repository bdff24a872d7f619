"""Scoring run files against labels files, as the official evaluator does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from valuedetect.data import read_labels
from valuedetect.errors import InputError
from valuedetect.metrics import Comparison, Scores, compare, score


def _run_against_labels(run: str | Path, labels: str | Path, run_ids_only: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """Truth and predictions aligned on the labels' IDs.

    Like the official evaluator, an argument missing from the run counts as predicted with no
    value; an ID in the run that the labels lack is an error here (the evaluator skips it
    silently, which hides mistakes such as scoring a run against the wrong split).
    ``run_ids_only`` scores just the arguments the run covers (a run on a seeded subset).
    """
    label_ids, truth = read_labels(labels)
    run_ids, predicted = read_labels(run, level=1 if truth.shape[1] != 20 else 2)
    known = set(label_ids)
    unknown = [i for i in run_ids if i not in known]
    if unknown:
        raise InputError(f"{len(unknown)} Argument IDs are not in {labels}, e.g. {unknown[0]!r}", run)
    position = {arg_id: i for i, arg_id in enumerate(run_ids)}
    aligned = np.zeros_like(truth)
    rows = [i for i, arg_id in enumerate(label_ids) if arg_id in position]
    aligned[rows] = predicted[[position[label_ids[i]] for i in rows]]
    if run_ids_only:
        return truth[rows], aligned[rows], 0
    return truth, aligned, len(label_ids) - len(rows)


def score_run_file(run: str | Path, labels: str | Path, bootstrap: int = 1000, seed: int = 0,
                   run_ids_only: bool = False) -> Scores:
    truth, predicted, _ = _run_against_labels(run, labels, run_ids_only)
    return score(truth, predicted, bootstrap=bootstrap, seed=seed)


def compare_run_files(
    run_a: str | Path, run_b: str | Path, labels: str | Path, resamples: int = 2000, seed: int = 0
) -> Comparison:
    truth, a, _ = _run_against_labels(run_a, labels)
    _, b, _ = _run_against_labels(run_b, labels)
    return compare(truth, a, b, resamples=resamples, seed=seed)


__all__ = ["compare_run_files", "score_run_file"]
