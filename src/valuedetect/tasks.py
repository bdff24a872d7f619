"""What a detector learns to answer: the value task or the NLI side task.

Everything that differs between the two lives in one ``Task`` object, so both flow through the
same training run (``training.run_training``), protocol (``protocol.make_splits``), detectors,
trainers, templates and configs:

- ``values``: 20 columns, P(category) per argument; labels from ``labels-*.tsv``; the official F1;
  thresholds chosen for it (``thresholds.tune``); official run files.
- ``nli`` (``valuedetect.nli``): one column, P(the premise supports the conclusion); the label
  comes from the stance; accuracy with its bootstrap interval; one threshold chosen on dev for it.

A task is found by name (``get_task``); the registry imports a task's module on first use.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from valuedetect.data import Split
from valuedetect.errors import ConfigError
from valuedetect.taxonomy import CATEGORY_NAMES, categories

DEFAULT_TASK = "values"
_REGISTRY = {"values": "valuedetect.tasks:ValuesTask", "nli": "valuedetect.nli:NLITask"}
TASKS = tuple(_REGISTRY)


class Task(ABC):
    """One task: its columns, labels, metric, threshold choice and run files."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    methods: ClassVar[tuple[str, ...] | None]  # the detectors that can learn it (None: every one)
    headline: ClassVar[str]  # the score that chooses (early stopping) and that reports lead with
    headline_label: ClassVar[str]  # how a sentence names it
    labels_note: ClassVar[str]  # where the labels come from, as results.json states it
    scores_test: ClassVar[bool] = True  # whether a run scores test when its labels are at hand
    # Settings a method takes for this task unless the config gives them (e.g. its template).
    detector_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @property
    def width(self) -> int:
        return len(self.columns)

    def check_method(self, method: str, where: str = "") -> None:
        if self.methods is not None and method not in self.methods:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}method {method!r} does not learn the {self.name} task; "
                              f"methods for it: {', '.join(self.methods)}")

    @abstractmethod
    def split(self, split: Split) -> Split:
        """``split`` with this task's labels [n, width] (None where the split has none)."""

    @abstractmethod
    def score(self, labels: np.ndarray, decisions: np.ndarray, bootstrap: int = 0, seed: int = 0) -> Any:
        """The task's scores (an object with ``to_dict()`` and the ``headline`` attribute)."""

    @abstractmethod
    def choose(self, scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(best single threshold, the headline score there): what early stopping compares."""

    @abstractmethod
    def tune(self, scores: np.ndarray, labels: np.ndarray, config: Any) -> Any:
        """The ``thresholds.Thresholds`` a detector keeps, chosen on ``scores`` of dev."""

    @abstractmethod
    def write_run(self, path: Path, split: Split, scores: np.ndarray, decisions: np.ndarray) -> None:
        """One role's predictions (dev, validation, test) in the task's file format."""

    @abstractmethod
    def prompt_columns(self) -> Sequence[Any]:
        """What each column asks a language model about (a category; None for one plain question)."""

    def check_prompt_template(self, template: Any, where: str) -> None:
        """Refuse a prompt template written for another task."""
        if template.task != self.name:
            raise ConfigError(f"{where}: template {template.name!r} is a {template.task} template; the {self.name} "
                              f"task needs one of its own (see valuedetect.templates)")

    def check_input_template(self, template: Any, where: str) -> None:  # noqa: B027 - optional hook
        """Refuse an encoder input template that cannot serve this task."""

    def run_file(self, role: str) -> str:
        """The file name of a role's predictions in a run folder."""
        return f"{role}-run.tsv"

    def output_key(self, role: str) -> str:
        """The key of that file in an experiment record's ``outputs``."""
        return f"{role}_run"

    def summary(self, role: str, scores: Any) -> dict[str, float]:
        """The few numbers a detector's ``info`` keeps of a role's scores."""
        return {f"{role}_{self.headline}": float(getattr(scores, self.headline))}


class ValuesTask(Task):
    """The 20 value categories of Touche23-ValueEval, scored by the official F1."""

    name = "values"
    columns = tuple(CATEGORY_NAMES)
    methods = None
    headline = "f1"
    headline_label = "F1"
    labels_note = "the 20 value categories of labels-<split>.tsv, in the official order"

    def split(self, split: Split) -> Split:
        return split

    def score(self, labels: np.ndarray, decisions: np.ndarray, bootstrap: int = 0, seed: int = 0) -> Any:
        from valuedetect.metrics import score

        return score(labels, decisions, bootstrap=bootstrap, seed=seed)

    def choose(self, scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        from valuedetect.thresholds import best_global

        return best_global(scores, labels)

    def tune(self, scores: np.ndarray, labels: np.ndarray, config: Any) -> Any:
        from valuedetect.thresholds import tune

        return tune(scores, labels, mode=config.thresholds, shrink=config.threshold_shrink, seed=config.seed,
                    fixed=config.fixed_threshold)

    def prompt_columns(self) -> Sequence[Any]:
        return categories()

    def write_run(self, path: Path, split: Split, scores: np.ndarray, decisions: np.ndarray) -> None:
        from valuedetect.data import write_run

        write_run(path, split.ids, decisions)

    def summary(self, role: str, scores: Any) -> dict[str, float]:
        # The keys saved detectors have always carried (detector.json, results.json "info").
        if role == "dev":
            return {"dev_f1": scores.f1}
        return {f"{role}_f1": scores.f1, f"{role}_precision": scores.precision, f"{role}_recall": scores.recall}


_INSTANCES: dict[str, Task] = {}


def get_task(name: str | Task = DEFAULT_TASK, where: str = "") -> Task:
    """The task called ``name`` (a Task passes through)."""
    if isinstance(name, Task):
        return name
    if name not in _REGISTRY:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown task {name!r}; known: {', '.join(TASKS)}")
    if name not in _INSTANCES:
        module, cls = _REGISTRY[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "ValuesTask", "get_task"]
