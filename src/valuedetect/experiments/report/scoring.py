"""Records and run files of a results folder -> scored runs and the paired tests between them.

Every score is recomputed from the runs' files and the labels instead of being read back from the
records, so that intervals, subsets and significance tests are made the same way for every run,
however and whenever it was produced. Runs may score different subsets of validation (slow LLM
runs score a seeded sample): every comparison is made on the argument IDs both sides scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import load_split, read_json_object, read_labels
from valuedetect.errors import InputError
from valuedetect.experiments.records import EXPERIMENT_FILE, FAMILIES, RECORD_FILE, RunRecord, read_records
from valuedetect.metrics import Comparison, Scores, compare_seeds, holm, official_f1, score, seed_interval
from valuedetect.protocol import under_trained

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
    dev_f1: float | None = None  # official F1 on the dev arguments that chose its epochs and thresholds

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


@dataclass(eq=False)
class ScoredConfig:
    """A configuration: the runs of one group (its seeds), on the arguments every one of them scored.

    Its F1 is the mean over seeds; ``scores.ci95`` and every comparison carry both argument and
    seed variance (``metrics.compare_seeds``). With one seed, training variance is not estimated.
    """

    members: list[ScoredRun]
    resamples: int = 1000
    seed: int = 0
    ids: list[str] = field(default_factory=list)
    truth: np.ndarray = field(default_factory=lambda: np.zeros((0, 20)))
    scores: Scores = field(init=False)
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shared = set(self.members[0].ids)
        for member in self.members[1:]:
            shared &= set(member.ids)
        self.ids = [i for i in self.members[0].ids if i in shared]
        self.index = {arg_id: i for i, arg_id in enumerate(self.ids)}
        self.truth, _ = self.members[0].rows(self.ids)
        self.scores = self._mean_scores()

    def _mean_scores(self) -> Scores:
        member_scores = [score(*m.rows(self.ids)) for m in self.members]
        per_category: dict[str, dict[str, float]] = {}
        for name, first in member_scores[0].per_category.items():
            entry = dict(first)
            for key in ("precision", "recall", "f1"):
                if key in first:
                    entry[key] = float(np.mean([s.per_category[name][key] for s in member_scores]))
            per_category[name] = entry
        means = {key: float(np.mean([getattr(s, key) for s in member_scores]))
                 for key in ("f1", "precision", "recall", "mean_f1")}
        truth, preds = self.preds(self.ids)
        interval = seed_interval(truth, preds, resamples=self.resamples, seed=self.seed) if len(self.ids) else None
        return Scores(**means, per_category=per_category, ci95=interval, n=len(self.ids))

    @property
    def name(self) -> str:
        return self.members[0].record.group or self.members[0].name

    @property
    def record(self) -> RunRecord:
        """The first seed's record: what the runs of a configuration share (family, model, settings)."""
        return self.members[0].record

    @property
    def seeds(self) -> list[int | None]:
        return [m.record.seed for m in self.members]

    @property
    def seed_f1(self) -> list[float]:
        return [m.f1_on(self.ids) for m in self.members]

    @property
    def f1_sd(self) -> float | None:
        return float(np.std(self.seed_f1, ddof=1)) if len(self.members) > 1 else None

    @property
    def dev_f1(self) -> float | None:
        values = [m.dev_f1 for m in self.members]
        return None if any(v is None for v in values) else float(np.mean(values))

    @property
    def under_trained(self) -> list[str]:
        """Why runs of this configuration did not train to the protocol's standard (empty: they did)."""
        reasons = []
        for m in self.members:
            reason = under_trained(m.record.training)
            if reason:
                reasons.append(f"{m.name}: {reason}")
        return reasons

    @property
    def optimistic(self) -> bool:
        """A run chose on validation as well as scored it (the paper protocol, or a record from before
        the held-out protocol)."""
        return any(m.record.protocol.get("optimistic", True) for m in self.members)

    @property
    def compute_seconds(self) -> float | None:
        """Mean CPU-seconds per seed for training and scoring validation, or None when not recorded."""
        totals = []
        for m in self.members:
            c = m.record.compute
            if not c or c.get("train_cpu_seconds") is None:
                return None
            totals.append(float(c["train_cpu_seconds"]) + float(c.get("validation_cpu_seconds") or 0.0))
        return float(np.mean(totals))

    def preds(self, ids: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Labels and every seed's predictions of the given arguments, in that order."""
        preds = [m.rows(ids)[1] for m in self.members]
        return self.members[0].rows(ids)[0], preds

    def f1_on(self, ids: Sequence[str]) -> float:
        return float(np.mean([m.f1_on(ids) for m in self.members]))


@dataclass
class Unscored:
    record: RunRecord
    reason: str


@dataclass
class Pair:
    """A paired test of configuration a against b on the arguments both scored.

    ``p_holm`` is the p-value after Holm's correction across every comparison of the report;
    once set, significance reads it.
    """

    a: ScoredConfig
    b: ScoredConfig | None  # None: against predicting every category (all-ones)
    n: int
    result: Comparison
    ids: list[str] = field(default_factory=list)
    p_holm: float | None = None
    mirror_of: Pair | None = None  # the same test read the other way round: not a test of its own

    def reversed(self) -> Pair:
        """b against a: the same test (same resamples, same p), its difference and interval negated."""
        assert self.b is not None
        r = self.result
        flipped = Comparison(f1_a=r.f1_b, f1_b=r.f1_a, difference=-r.difference, p_value=r.p_value,
                             ci95=(-r.ci95[1], -r.ci95[0]), method=r.method)
        return Pair(self.b, self.a, self.n, flipped, list(self.ids), mirror_of=self)

    @property
    def difference(self) -> float:
        return self.result.difference

    @property
    def shared_ids(self) -> list[str]:
        return self.ids

    @property
    def p(self) -> float:
        return self.result.p_value if self.p_holm is None else self.p_holm

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


@dataclass
class Context:
    """Everything the sections read: records, scored runs and cached paired tests."""

    name: str
    records: list[RunRecord]
    pending: list[str]
    runs: list[ScoredConfig]  # one per configuration (its seeds together)
    unscored: list[Unscored]
    common: list[str]
    resamples: int
    seed: int
    test: dict[str, ScoredConfig | str] | None = None
    seed_runs: list[ScoredRun] = field(default_factory=list)
    reference: str | None = None  # the configuration section 6 compares with (else the best run)
    _pairs: dict[tuple[str, str, int], Pair | None] = field(default_factory=dict)
    holm_applied: bool = False

    def pair(self, a: ScoredConfig, b: ScoredConfig) -> Pair | None:
        """Seed-aware paired test of a against b on their shared IDs (None when they share none)."""
        key = (a.name, b.name, 0)
        if key not in self._pairs:
            mirror = self._pairs.get((b.name, a.name, 0))
            self._pairs[key] = (mirror.reversed() if mirror is not None
                                else paired_test(a, b, self.resamples, self.seed))
            self._adjust_if_final()
        return self._pairs[key]

    def against_all_ones(self, a: ScoredConfig, ids: Sequence[str]) -> Pair:
        """a against predicting every category on the given arguments (same test as every pair)."""
        key = (a.name, "(all-ones)", hash(tuple(ids)))
        if key not in self._pairs:
            truth, preds = a.preds(ids)
            result = compare_seeds(truth, preds, [np.ones_like(preds[0])], resamples=self.resamples, seed=self.seed)
            self._pairs[key] = Pair(a, None, len(ids), result, list(ids))
            self._adjust_if_final()
        pair = self._pairs[key]
        assert pair is not None
        return pair

    @property
    def pairs(self) -> list[Pair]:
        """The distinct tests made: a comparison read both ways round is one test, counted once."""
        return [p for p in self._pairs.values() if p is not None and p.mirror_of is None]

    def apply_holm(self) -> None:
        """Holm-correct every comparison made so far, as one family; later ones join it."""
        self.holm_applied = True
        self._adjust_if_final()

    def _adjust_if_final(self) -> None:
        if not self.holm_applied:
            return
        pairs = self.pairs
        for pair, adjusted in zip(pairs, holm([p.result.p_value for p in pairs]), strict=True):
            pair.p_holm = adjusted
        for view in self._pairs.values():
            if view is not None and view.mirror_of is not None:
                view.p_holm = view.mirror_of.p_holm

    @property
    def same_validation(self) -> bool:
        return all(len(r.ids) == len(self.common) for r in self.runs)


def shared_ids(a: ScoredRun | ScoredConfig, b: ScoredRun | ScoredConfig) -> list[str]:
    """The argument IDs both scored, in a's order."""
    return [i for i in a.ids if i in b.index]


def paired_test(a: ScoredConfig, b: ScoredConfig, resamples: int, seed: int) -> Pair | None:
    """metrics.compare_seeds on the intersection of two configurations' argument IDs."""
    shared = shared_ids(a, b)
    if not shared:
        return None
    truth, preds_a = a.preds(shared)
    _, preds_b = b.preds(shared)
    return Pair(a, b, len(shared), compare_seeds(truth, preds_a, preds_b, resamples=resamples, seed=seed), shared)


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


def common_ids(runs: Sequence[ScoredRun | ScoredConfig]) -> list[str]:
    """The argument IDs every run scored, in the first run's order."""
    if not runs:
        return []
    shared = set(runs[0].ids)
    for run in runs[1:]:
        shared &= set(run.ids)
    return [i for i in runs[0].ids if i in shared]


def best_run(runs: Sequence[ScoredConfig]) -> ScoredConfig | None:
    """The configuration chosen as the best of ``runs``: the highest mean dev F1 (the protocol chooses
    on dev). Candidates without a dev score are left out whenever any candidate has one, so that
    validation never chooses beside dev; only when none has one (records of the paper protocol) is
    it the highest validation F1 on the arguments all candidates scored, an optimistic choice that
    ``chosen_on`` names."""
    if not runs:
        return None
    with_dev = [r for r in runs if r.dev_f1 is not None]
    if with_dev:
        return max(with_dev, key=lambda r: r.dev_f1 or 0.0)
    shared = common_ids(runs)
    if shared:
        return max(runs, key=lambda r: r.f1_on(shared))
    return max(runs, key=lambda r: r.scores.f1)


def chosen_on(runs: Sequence[ScoredConfig]) -> str:
    """How ``best_run`` chose among these runs, in words."""
    without = [r.name for r in runs if r.dev_f1 is None]
    if not runs or not without:
        return "dev F1"
    if len(without) < len(runs):
        return f"dev F1 (left out, no dev score: {', '.join(without)})"
    return "validation F1 (optimistic: no dev score recorded)"


def family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def read_experiment(results: Path) -> dict[str, Any]:
    """experiment.json, or {} when the folder has none; a broken one is a clear error."""
    path = results / EXPERIMENT_FILE
    if not path.exists():
        return {}
    return read_json_object(path)


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
        add_dev_scores(results, runs, data_dir)
    configs = group_configs(runs, resamples, seed)
    context = Context(
        name=str(meta.get("name") or results.resolve().name), records=records, pending=pending, runs=configs,
        unscored=unscored, common=common_ids(configs), resamples=resamples, seed=seed, seed_runs=runs,
        reference=meta.get("reference") if isinstance(meta.get("reference"), str) else None,
    )
    if test_labels is not None:
        test_ids, test_matrix = read_labels(test_labels, level=2)
        scored = score_records(results, [r.record for r in runs], "test_run", test_ids, test_matrix, resamples, seed)
        by_group: dict[str, list[ScoredRun]] = {}
        failed: dict[str, str] = {}
        for item in scored:
            if isinstance(item, ScoredRun):
                by_group.setdefault(item.record.group, []).append(item)
            else:
                failed[item.record.group] = item.reason
        context.test = {name: ScoredConfig(members, resamples, seed) for name, members in by_group.items()
                        if name not in failed}
        context.test.update(failed)
    return context


def add_dev_scores(results: Path, runs: Sequence[ScoredRun], data_dir: str | Path | None) -> None:
    """Each run's official F1 on its dev-run.tsv (dev is a slice of training: scored with its labels)."""
    if not any(r.record.outputs.get("dev_run") for r in runs):
        return
    training = load_split("training", data_dir)
    if training.labels is None:
        return
    index = {arg_id: i for i, arg_id in enumerate(training.ids)}
    for run in runs:
        path = run_file(results, run.record, "dev_run")
        if path is None:
            continue
        item = score_run_file(run.record, path, index, training.labels, 0, 0)
        if isinstance(item, ScoredRun):
            run.dev_f1 = item.scores.f1


def group_configs(runs: Sequence[ScoredRun], resamples: int, seed: int) -> list[ScoredConfig]:
    """Runs grouped into configurations (by their record's group), in the order first seen."""
    groups: dict[str, list[ScoredRun]] = {}
    for run in runs:
        groups.setdefault(run.record.group or run.name, []).append(run)
    return [ScoredConfig(members, resamples, seed) for members in groups.values()]
