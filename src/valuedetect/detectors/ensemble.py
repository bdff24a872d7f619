"""An ensemble of one method trained with several seeds, averaging probabilities.

The SemEval-2023 record system gained about 0.01 F1 from averaging its members' probabilities
(its best single model scored 0.55, the ensemble 0.56). Here the members differ only by seed
(initialisation of the heads, dropout, batch order), which is the cheapest kind of ensemble on a
CPU: with the frozen-state cache (``VALUEDETECT_FROZEN_CACHE``) the frozen layers are computed
once for all members. Thresholds are chosen on the members' averaged dev scores, the same rule a
single detector follows, so the ensemble is judged as one detector.

Member ``k`` (0-based) trains with seed ``seed + 1000 * k``: member 0 is exactly the single run
with the ensemble's seed, so an ensemble's gain over one model is read against that run.
A saved ensemble is a folder with ``detector.json`` and one saved detector per member
(``member-1/`` ...). Training resumes member by member: a finished member is saved under the
run's checkpoint folder and loaded instead of retrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.errors import InputError

SEED_STRIDE = 1000
MEMBER_METHODS = ("encoder", "tfidf", "prompt")


@dataclass
class EnsembleConfig(DetectorConfig):
    """``method`` and ``member`` (that method's settings) describe every member; ``members`` says
    how many. Each member's ``seed`` is set by the ensemble; the ensemble's own thresholds are
    chosen on the averaged dev scores (the members' are not used). ``member_epochs``, when given,
    fixes each member's epochs without early stopping: what a refit repeats of the epochs dev chose."""

    method: str = "encoder"
    member: dict[str, Any] = field(default_factory=dict)
    members: int = 3
    member_epochs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in MEMBER_METHODS:
            raise ValueError(f"method must be one of {', '.join(MEMBER_METHODS)}, not {self.method!r}")
        if self.members < 1:
            raise ValueError("members must be at least 1")
        if "seed" in self.member:
            raise ValueError("member settings must not hold a seed: member k trains with seed + 1000 * k")
        if self.member_epochs and len(self.member_epochs) != self.members:
            raise ValueError(f"member_epochs needs one value per member ({self.members}), not {self.member_epochs}")


def member_seed(seed: int, index: int) -> int:
    return seed + SEED_STRIDE * index


class EnsembleDetector(Detector):
    type_name = "ensemble"
    config_class = EnsembleConfig
    config: EnsembleConfig
    has_members = True

    def check_task(self, where: str) -> None:
        self._member(0, f"{where}: member settings")

    def _member(self, index: int, where: str = "") -> Detector:
        from valuedetect.detectors import make_detector

        c = self.config
        settings = {**c.member, "seed": member_seed(c.seed, index)}
        if c.member_epochs:
            settings.update(epochs=c.member_epochs[index], patience=0)
        return make_detector(c.method, settings, task=self.task.name,
                             where=where or f"ensemble member {index + 1} ({c.method})")

    def refit_settings(self) -> dict[str, Any]:
        """Each member's chosen epochs (a refit trains every member to its own)."""
        chosen = [m.refit_settings().get("epochs") for m in getattr(self, "members", [])]
        return {"member_epochs": chosen} if chosen and all(e is not None for e in chosen) else {}

    @property
    def base_model(self) -> str | None:
        members = getattr(self, "members", None)
        return (members[0] if members else self._member(0)).base_model

    @property
    def teacher(self) -> str | None:
        return self._member(0).teacher

    def _dev_scores(self, dev: Split) -> tuple[np.ndarray, np.ndarray | None]:
        """The average of the dev scores each member chose its own thresholds on (a member loaded
        after an interruption kept none, and scores dev again): dev is scored once per member."""
        both = []
        for member in self.members:
            kept = member.dev_scores
            if kept is not None and len(kept) == len(dev) and (member.dev_level1_scores is not None
                                                              or not member.predicts_level1):
                both.append((kept, member.dev_level1_scores))
            else:
                both.append(member.predict_proba_levels(dev.arguments))
        level2 = np.mean([b[0] for b in both], axis=0)
        level1 = None if any(b[1] is None for b in both) else np.mean([b[1] for b in both], axis=0)
        return level2, level1

    @property
    def predicts_level1(self) -> bool:
        members = getattr(self, "members", None)
        if members:
            return all(m.predicts_level1 for m in members)
        return bool(self.config.member.get("level1", False))

    def _fit(self, train: Split, dev: Split | None) -> None:
        from valuedetect.detectors import load_detector

        self.members: list[Detector] = []
        for index in range(self.config.members):
            label = f"member {index + 1}/{self.config.members}"
            done = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / f"member-{index + 1}"
            if self.resume and done is not None and (done / "detector.json").exists():
                if self.log:
                    self.log(f"{label}: trained before the interruption; loaded from {done}")
                self.members.append(load_detector(done))
                continue
            member = self._member(index)
            member.log = None if self.log is None else (lambda m, label=label: self.log(f"{label}: {m}"))  # type: ignore[misc]
            member.progress = None if self.progress is None else (
                lambda what, i, n, label=label: self.progress(f"{label} {what}", i, n))  # type: ignore[misc]
            member.checkpoint_dir = None if self.checkpoint_dir is None else \
                Path(self.checkpoint_dir) / f"member-{index + 1}-checkpoint"
            member.resume = self.resume
            member.fit(train, dev)  # each member early-stops on dev by itself
            if done is not None:
                _save_on_main_process(member, done)
            self.members.append(member)
        self._record_members()

    def _record_members(self) -> None:
        infos = [m.info for m in self.members]
        self.info.update(
            members=[{"seed": m.config.seed, "best_epoch": i.get("best_epoch"),
                      "thresholds_dev": (m.thresholds.to_dict() if m.thresholds else None)}
                     for m, i in zip(self.members, infos, strict=True)],
            parameters_total=_sum(i.get("parameters_total") for i in infos),
            parameters_trainable=_sum(i.get("parameters_trainable") for i in infos),
        )
        standards = [i.get("training") for i in infos if i.get("training")]
        if standards:
            self.info["training"] = weakest_standard(standards)

    def _predict_both(self, arguments: Sequence[Argument]) -> tuple[np.ndarray, np.ndarray | None]:
        if not getattr(self, "members", None):
            raise InputError("the ensemble detector must be fitted or loaded before predicting")
        both = [m.predict_proba_levels(arguments) for m in self.members]
        level2 = np.mean([b[0] for b in both], axis=0)
        level1 = None if any(b[1] is None for b in both) else np.mean([b[1] for b in both], axis=0)
        return level2, level1

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        return self._predict_both(arguments)[0]

    def _save_weights(self, directory: Path) -> None:
        for index, member in enumerate(self.members):
            member.save(directory / f"member-{index + 1}")

    def _load_weights(self, directory: Path) -> None:
        from valuedetect.detectors import load_detector

        folders = [directory / f"member-{k + 1}" for k in range(self.config.members)]
        missing = [f.name for f in folders if not (f / "detector.json").exists()]
        if missing:
            raise InputError(f"ensemble of {self.config.members} members lacks {', '.join(missing)}", directory)
        self.members = [load_detector(f, base_model=getattr(self, "base_model_override", None)) for f in folders]


def _save_on_main_process(member: Detector, folder: Path) -> None:
    """Under ``accelerate launch`` every process trains the member; one writes it, the others wait."""
    from valuedetect.training import _is_main_process, _wait_for_everyone

    if _is_main_process():
        member.save(folder)
    _wait_for_everyone()


def weakest_standard(standards: list[dict[str, Any]]) -> dict[str, Any]:
    """The training standard an ensemble is held to: its least-trained member's (fewest epochs,
    highest final loss), so the protocol's "trained to the same standard" rule cannot be met by an
    ensemble whose one good member hides under-trained ones."""
    from valuedetect.protocol import under_trained

    failing = [s for s in standards if under_trained(s)]
    if failing:
        return failing[0]
    return min(standards, key=lambda s: (s.get("epochs_completed") or 0.0, -(s.get("final_loss") or 0.0)))


def _sum(values: Any) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else int(sum(values))
