"""The one interface every value-detection method implements.

Shaped like a scikit-learn estimator: settings in a plain dataclass, no work in ``__init__``,
``fit`` returns the detector. A saved detector is a folder: ``detector.json`` (type, settings,
thresholds, what it scored) and whatever weights the method writes beside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from valuedetect import __version__
from valuedetect.config import from_dict, to_dict
from valuedetect.data import Argument, Split, atomic_write_json
from valuedetect.errors import ConfigError, InputError
from valuedetect.taxonomy import NUM_LEVEL1, TAXONOMY_VERSION
from valuedetect.thresholds import Thresholds

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class DetectorConfig:
    """Settings shared by every method: seeding and how thresholds are chosen."""

    seed: int = 13
    thresholds: str = "auto"  # global | per_category | auto | fixed
    threshold_shrink: float = 0.5
    fixed_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.thresholds not in ("global", "per_category", "auto", "fixed"):
            raise ValueError(f"thresholds must be global, per_category, auto or fixed, not {self.thresholds!r}")
        if not 0.0 <= self.threshold_shrink <= 1.0:
            raise ValueError("threshold_shrink must lie in [0, 1]")


def _as_arguments(items: Sequence[Argument] | Sequence[str] | str) -> Sequence[Argument]:
    if isinstance(items, str):
        items = [items]
    if all(isinstance(item, Argument) for item in items):
        return items  # type: ignore[return-value]
    return [item if isinstance(item, Argument) else Argument(id=f"text-{i + 1}", premise=str(item))
            for i, item in enumerate(items)]


def _read_thresholds(meta: dict[str, Any], key: str, width: int, where: Path) -> Thresholds | None:
    """``meta[key]`` as Thresholds of ``width`` values (None when absent), or an error naming the file."""
    if not meta.get(key):
        return None
    try:
        thresholds = Thresholds.from_dict(meta[key])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"invalid {key} ({error})", where) from None
    if len(thresholds.values) != width:
        raise InputError(f"{len(thresholds.values)} values in {key}, expected {width}", where)
    return thresholds


class Detector(ABC):
    """fit(train, dev) -> self; predict_proba(arguments) -> [n, columns]; save/load.

    ``dev`` is the split everything is chosen on (early stopping, thresholds): under the
    held-out protocol a slice of training (see ``valuedetect.protocol``), never the split that
    is then scored. ``task`` (``valuedetect.tasks``) says what the columns are: the 20 value
    categories, or NLI's one P(support); it decides the metric thresholds are chosen for.
    """

    type_name: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig
    # Arguments per saved chunk when a run scores validation (``scoring_state``); 0: all at once.
    # Language models take hours there on a CPU, so a kill must not lose it all.
    resumable_chunk: ClassVar[int] = 0

    def __init__(self, config: DetectorConfig | None = None, task: str = "values"):
        from valuedetect.tasks import get_task

        self.config = config if config is not None else self.config_class()
        self.task = get_task(task)
        self.thresholds: Thresholds | None = None
        self.info: dict[str, Any] = {}
        # Set by the caller, not by the config: where to checkpoint, whether to resume, how
        # to report progress and messages.
        self.progress: ProgressCallback | None = None
        self.checkpoint_dir: Path | None = None
        self.resume: bool = False
        self.log: Callable[[str], None] | None = None
        self.dev_scores: np.ndarray | None = None
        # The 54 level-1 values, for detectors trained on them too (``predicts_level1``).
        self.level1_thresholds: Thresholds | None = None
        self.dev_level1_scores: np.ndarray | None = None

    # -- to implement --------------------------------------------------------------------
    @abstractmethod
    def _fit(self, train: Split, dev: Split | None) -> None:
        """Learn from training data, choosing on ``dev`` (e.g. early stopping)."""

    @abstractmethod
    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        """Scores in [0, 1], shape [n, task.width]: the official category order (values), P(support) (nli)."""

    def check_task(self, where: str) -> None:  # noqa: B027 - optional hook
        """Refuse settings that cannot serve ``self.task`` (e.g. a template of another task)."""

    @property
    def predicts_level1(self) -> bool:
        """Whether this detector also scores the 54 level-1 values (it was trained on them)."""
        return False

    has_members: ClassVar[bool] = False  # made of other saved detectors, which load base models themselves

    @property
    def base_model(self) -> str | None:
        """The pretrained model the detector builds on (a name or path), None for a method without one."""
        return getattr(self.config, "model", None)

    def _predict_both(self, arguments: Sequence[Argument]) -> tuple[np.ndarray, np.ndarray | None]:
        """Level-2 scores and, where the detector has them, level-1 scores, from one pass."""
        return self._predict_proba(arguments), None

    def _dev_scores(self, dev: Split) -> tuple[np.ndarray, np.ndarray | None]:
        """Both levels' scores on dev after fitting, which the thresholds are chosen on (a detector
        that scored dev while fitting may reuse those scores)."""
        return self.predict_proba_levels(dev.arguments)

    @property
    def teacher(self) -> str | None:
        """The teacher a distilled detector learned from (``valuedetect.distill``), else None."""
        return getattr(self.config, "distill_from", "") or None

    def refit_settings(self) -> dict[str, Any]:
        """Settings that fix what fitting chose on dev (e.g. the best epoch), so a refit on more
        data (``valuedetect.refit``) repeats the recipe without a dev split. Thresholds are
        carried over separately."""
        return {}

    def _save_weights(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Write the method's weights into ``directory``."""

    def _load_weights(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Read back what ``_save_weights`` wrote."""

    # -- the public interface --------------------------------------------------------------
    def fit(self, train: Split, dev: Split | None = None) -> Self:
        """Train on ``train``; choose epochs and thresholds on ``dev`` when it has labels."""
        if train.labels is None:
            raise InputError(f"the {train.name} split has no labels to train on")
        self._fit(train, dev)
        if dev is not None and dev.labels is not None:
            level2, level1 = self._dev_scores(dev)
            self.tune_thresholds(dev, level2)
            if self.predicts_level1 and dev.level1_labels is not None and level1 is not None:
                self.tune_level1_thresholds(dev, level1)
                self.dev_level1_scores = level1
        return self

    def predict_proba_levels(self, arguments: Sequence[Argument] | Sequence[str] | str
                             ) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores [n, 20], level-1 scores [n, 54] or None): both levels from one pass."""
        arguments = _as_arguments(arguments)
        if len(arguments) == 0:
            return np.zeros((0, self.task.width)), (np.zeros((0, NUM_LEVEL1)) if self.predicts_level1 else None)
        level2, level1 = self._predict_both(arguments)
        level2 = np.asarray(level2, dtype=np.float64)
        if level2.shape != (len(arguments), self.task.width):
            raise RuntimeError(f"{type(self).__name__} returned scores of shape {level2.shape}")
        if level1 is not None:
            level1 = np.asarray(level1, dtype=np.float64)
            if level1.shape != (len(arguments), NUM_LEVEL1):
                raise RuntimeError(f"{type(self).__name__} returned level-1 scores of shape {level1.shape}")
        return level2, level1

    def predict_level1_proba(self, arguments: Sequence[Argument] | Sequence[str] | str) -> np.ndarray:
        """Scores [n, 54] of the level-1 values (``taxonomy.LEVEL1_NAMES`` order)."""
        if not self.predicts_level1:
            raise InputError(f"this {self.type_name} detector was not trained on the level-1 values "
                             "(train an encoder with level1 = true)")
        level1 = self.predict_proba_levels(arguments)[1]
        assert level1 is not None
        return level1

    def level1_thresholds_in_use(self) -> Thresholds:
        """The level-1 thresholds chosen on dev, else the fixed one for all 54 values."""
        return self.level1_thresholds or Thresholds.constant(self.config.fixed_threshold, NUM_LEVEL1)

    def decide_level1(self, scores: np.ndarray) -> np.ndarray:
        """0/1 level-1 decisions by ``level1_thresholds_in_use``."""
        return self.level1_thresholds_in_use().apply(scores)

    def predict_level1(self, arguments: Sequence[Argument] | Sequence[str] | str) -> np.ndarray:
        return self.decide_level1(self.predict_level1_proba(arguments))

    def tune_level1_thresholds(self, dev: Split, scores: np.ndarray) -> Thresholds:
        """Level-1 thresholds maximising the official measure over the 54 values on ``dev``
        (the same rule as the categories'; the measure is the same formula over 54 columns)."""
        if dev.level1_labels is None:
            raise InputError(f"the {dev.name} split has no level-1 labels to tune thresholds on")
        self.level1_thresholds = self.task.tune(scores, dev.level1_labels, self.config)
        return self.level1_thresholds

    def predict_proba(self, arguments: Sequence[Argument] | Sequence[str] | str) -> np.ndarray:
        """Scores [n, 20]; plain strings are read as free text (``valuedetect.load`` gives the
        same with DataFrames in and out)."""
        arguments = _as_arguments(arguments)
        if len(arguments) == 0:
            return np.zeros((0, self.task.width))
        scores = np.asarray(self._predict_proba(arguments), dtype=np.float64)
        if scores.shape != (len(arguments), self.task.width):
            raise RuntimeError(f"{type(self).__name__} returned scores of shape {scores.shape}")
        return scores

    def predict(self, arguments: Sequence[Argument] | Sequence[str] | str,
                thresholds: Thresholds | float | None = None) -> np.ndarray:
        """0/1 decisions: the tuned thresholds unless others are given."""
        scores = self.predict_proba(arguments)
        return self.decide(scores, thresholds)

    def decide(self, scores: np.ndarray, thresholds: Thresholds | float | None = None) -> np.ndarray:
        if thresholds is None:
            thresholds = self.thresholds or Thresholds.constant(self.config.fixed_threshold, self.task.width)
        if isinstance(thresholds, int | float):
            thresholds = Thresholds.constant(float(thresholds), self.task.width)
        return thresholds.apply(scores)

    def tune_thresholds(self, dev: Split, scores: np.ndarray | None = None) -> Thresholds:
        """Choose and keep thresholds maximising the task's measure on ``dev`` (the official F1;
        NLI's accuracy)."""
        if dev.labels is None:
            raise InputError(f"the {dev.name} split has no labels to tune thresholds on")
        if scores is None:
            scores = self.predict_proba(dev.arguments)
        self.dev_scores = scores  # kept so callers need not score dev again
        self.thresholds = self.task.tune(scores, dev.labels, self.config)
        return self.thresholds

    def save(self, directory: str | Path) -> Path:
        """Write ``detector.json`` (type, settings, thresholds, the base model's identity) and
        the weights into ``directory``."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise InputError("exists and is not a folder", directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        from valuedetect.provenance import base_model_record

        atomic_write_json(
            directory / "detector.json",
            {
                "type": self.type_name,
                "task": self.task.name,
                "config": to_dict(self.config),
                "thresholds": self.thresholds.to_dict() if self.thresholds else None,
                **({"level1_thresholds": self.level1_thresholds.to_dict()} if self.level1_thresholds else {}),
                "info": self.info,
                "base_model": base_model_record(getattr(self.config, "model", None)),
                "valuedetect_version": __version__,
                "taxonomy_version": TAXONOMY_VERSION,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, base_model: str | None = None) -> Self:
        """Read a saved detector. ``base_model`` names where its base model is on this machine
        when the recorded one is not (it must have the recorded weights)."""
        directory = Path(directory)
        meta_path = directory / "detector.json"
        if not meta_path.exists():
            raise InputError("not a saved detector (no detector.json)", directory)
        from valuedetect.detectors import read_detector_meta

        meta = read_detector_meta(meta_path)
        if meta["type"] != cls.type_name:
            raise InputError(f"holds a {meta['type']!r} detector, not {cls.type_name!r}", meta_path)
        try:
            detector = cls(from_dict(cls.config_class, meta["config"], str(meta_path)), task=meta.get("task", "values"))
            detector.check_task(str(meta_path))
        except ConfigError as error:
            raise InputError(str(error), meta_path) from None
        width = detector.task.width
        detector.base_model_override = base_model  # for detectors made of saved detectors (ensembles)
        if base_model is not None and not hasattr(detector.config, "model") and not detector.has_members:
            raise InputError(f"a {cls.type_name!r} detector has no base model to replace", meta_path)
        from valuedetect.provenance import resolve_base_model

        resolved = None if detector.has_members else resolve_base_model(meta.get("base_model"), base_model, directory)
        if resolved is not None:
            detector.config.model = resolved  # type: ignore[attr-defined]
        detector.thresholds = _read_thresholds(meta, "thresholds", width, meta_path)
        detector.level1_thresholds = _read_thresholds(meta, "level1_thresholds", NUM_LEVEL1, meta_path)
        detector.info = meta.get("info", {})
        detector._load_weights(directory)
        return detector
