"""Records and run files of a results folder -> scored runs and the paired tests between them.

Every score is recomputed from the runs' files and the labels instead of being read back from the
records, so that intervals, subsets and significance tests are made the same way for every run,
however and whenever it was produced. Runs may score different subsets of validation (slow LLM
runs score a seeded sample): every comparison is made on the argument IDs both sides scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import load_split, read_labels
from valuedetect.errors import InputError
from valuedetect.experiments.records import EXPERIMENT_FILE, FAMILIES, RECORD_FILE, RunRecord, read_records
from valuedetect.metrics import Comparison, Scores, compare, official_f1, score

ALPHA = 0.05


@dataclass(eq=False)
class ScoredRun:
    """One run's predictions aligned with the labels of the arguments it scored."""

    record: RunRecord
    ids: list[str]
    truth: np.ndarray
    pred: np.ndarray
    scores: Scores
    ignored: int = 0  # argument IDs of the run file that have no labels
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {arg_id: i for i, arg_id in enumerate(self.ids)}

    @property
    def name(self) -> str:
        return self.record.name

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and predictions of the given arguments, in that order."""
        take = [self.index[i] for i in ids]
        return self.truth[take], self.pred[take]

    def f1_on(self, ids: Sequence[str]) -> float:
        truth, pred = self.rows(ids)
        return official_f1(truth, pred)


@dataclass
class Unscored:
    record: RunRecord
    reason: str


@dataclass
class Pair:
    """A paired test of run a against run b on the arguments both scored."""

    a: ScoredRun
    b: ScoredRun
    n: int
    result: Comparison

    @property
    def difference(self) -> float:
        return self.result.difference

    @property
    def shared_ids(self) -> list[str]:
        return shared_ids(self.a, self.b)

    @property
    def significant(self) -> bool:
        return self.result.p_value < ALPHA


@dataclass
class Context:
    """Everything the sections read: records, scored runs and cached paired tests."""

    name: str
    records: list[RunRecord]
    pending: list[str]
    runs: list[ScoredRun]
    unscored: list[Unscored]
    common: list[str]
    resamples: int
    seed: int
    test: dict[str, ScoredRun | str] | None = None
    _pairs: dict[tuple[str, str], Pair | None] = field(default_factory=dict)

    def pair(self, a: ScoredRun, b: ScoredRun) -> Pair | None:
        """Paired test of a against b on their shared IDs (None when they share none)."""
        key = (a.name, b.name)
        if key not in self._pairs:
            self._pairs[key] = paired_test(a, b, self.resamples, self.seed)
        return self._pairs[key]

    @property
    def same_validation(self) -> bool:
        return all(len(r.ids) == len(self.common) for r in self.runs)


def shared_ids(a: ScoredRun, b: ScoredRun) -> list[str]:
    """The argument IDs both runs scored, in a's order."""
    return [i for i in a.ids if i in b.index]


def paired_test(a: ScoredRun, b: ScoredRun, resamples: int, seed: int) -> Pair | None:
    """metrics.compare on the intersection of two runs' argument IDs."""
    shared = shared_ids(a, b)
    if not shared:
        return None
    truth, pred_a = a.rows(shared)
    _, pred_b = b.rows(shared)
    return Pair(a, b, len(shared), compare(truth, pred_a, pred_b, resamples=resamples, seed=seed))


def score_run_file(
    record: RunRecord, path: Path, label_index: dict[str, int], labels: np.ndarray, resamples: int, seed: int
) -> ScoredRun | Unscored:
    """Score a run file against the labels of the IDs it shares with them, with a bootstrap interval."""
    if not path.is_file():
        return Unscored(record, f"run file not found: {path}")
    try:
        run_ids, pred = read_labels(path, level=2)
    except InputError as error:
        return Unscored(record, str(error))
    keep = [k for k, arg_id in enumerate(run_ids) if arg_id in label_index]
    if not keep:
        return Unscored(record, f"no argument ID of {path} has a label")
    ids = [run_ids[k] for k in keep]
    truth = labels[[label_index[i] for i in ids]]
    predictions = pred[keep]
    scores = score(truth, predictions, bootstrap=resamples, seed=seed)
    return ScoredRun(record, ids, truth, predictions, scores, ignored=len(run_ids) - len(keep))


def run_file(results: Path, record: RunRecord, key: str) -> Path | None:
    """Where a record's output lies: relative paths are relative to the run's folder."""
    relative = record.outputs.get(key)
    if not relative:
        return None
    return results / record.name / relative


def score_records(
    results: Path, records: Sequence[RunRecord], key: str, label_ids: Sequence[str], labels: np.ndarray,
    resamples: int, seed: int,
) -> list[ScoredRun | Unscored]:
    """Score one output (validation_run or test_run) of each record."""
    label_index = {arg_id: i for i, arg_id in enumerate(label_ids)}
    out: list[ScoredRun | Unscored] = []
    for record in records:
        path = run_file(results, record, key)
        if path is None:
            out.append(Unscored(record, f"the record names no {key} file"))
        else:
            out.append(score_run_file(record, path, label_index, labels, resamples, seed))
    return out


def common_ids(runs: Sequence[ScoredRun]) -> list[str]:
    """The argument IDs every run scored, in the first run's order."""
    if not runs:
        return []
    shared = set(runs[0].ids)
    for run in runs[1:]:
        shared &= set(run.ids)
    return [i for i in runs[0].ids if i in shared]


def best_run(runs: Sequence[ScoredRun]) -> ScoredRun | None:
    """The run with the highest F1 on the arguments all of them scored (own F1 if they share none)."""
    if not runs:
        return None
    shared = common_ids(runs)
    if shared:
        return max(runs, key=lambda r: r.f1_on(shared))
    return max(runs, key=lambda r: r.scores.f1)


def family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def read_experiment(results: Path) -> dict[str, Any]:
    """experiment.json, or {} when the folder has none; a broken one is a clear error."""
    path = results / EXPERIMENT_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path)
    return data


def load_records(results: Path) -> list[RunRecord]:
    """The folder's records; a missing folder or one without records is a clear error."""
    if not results.exists():
        raise InputError("no such results folder", results)
    if not results.is_dir():
        raise InputError("is not a folder; expected the results folder of an experiment", results)
    records = read_records(results)
    if not records:
        raise InputError(
            f"no run records (<run>/{RECORD_FILE}) in this results folder: no run of the experiment has "
            "finished yet, or this is not a results folder",
            results,
        )
    return records


def validation_labels(data_dir: str | Path | None) -> tuple[list[str], np.ndarray]:
    split = load_split("validation", data_dir)
    if split.labels is None:
        raise InputError("the validation split has no labels-validation.tsv", data_dir)
    return split.ids, split.labels


def build_context(
    results: Path, test_labels: str | Path | None, data_dir: str | Path | None, resamples: int, seed: int
) -> Context:
    """Read records and labels and score every done values-task run."""
    meta = read_experiment(results)
    records = load_records(results)
    have = {r.name for r in records}
    pending = [name for name in meta.get("runs", []) if name not in have]
    values = sorted((r for r in records if r.done and r.task == "values"), key=lambda r: family_rank(r.family))
    runs: list[ScoredRun] = []
    unscored: list[Unscored] = []
    if values:
        ids, labels = validation_labels(data_dir)
        for item in score_records(results, values, "validation_run", ids, labels, resamples, seed):
            (runs if isinstance(item, ScoredRun) else unscored).append(item)
    context = Context(
        name=str(meta.get("name") or results.resolve().name), records=records, pending=pending, runs=runs,
        unscored=unscored, common=common_ids(runs), resamples=resamples, seed=seed,
    )
    if test_labels is not None:
        test_ids, test_matrix = read_labels(test_labels, level=2)
        scored = score_records(results, [r.record for r in runs], "test_run", test_ids, test_matrix, resamples, seed)
        context.test = {item.record.name: item if isinstance(item, ScoredRun) else item.reason for item in scored}
    return context
