"""A training run from a config: data in, detector, run files and scores out.

Everything a reported number depends on (split, method, model, seed, thresholds, time,
versions) is written next to it in ``results.json``.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from valuedetect import __version__
from valuedetect.config import TrainConfig, to_dict
from valuedetect.data import Split, atomic_write_json, ensure_folder, load_split, write_run
from valuedetect.detectors import make_detector
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError
from valuedetect.metrics import Scores, score


@dataclass
class TrainingResult:
    detector: Detector
    validation_scores: Scores
    validation_ids: list[str]
    description: str
    written: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"valuedetect": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _is_main_process() -> bool:
    try:
        from accelerate import PartialState
    except ImportError:
        return True
    return bool(PartialState().is_main_process)


def validation_subset(validation: Split, config: TrainConfig) -> tuple[Split, str | None]:
    """The seeded subset of validation a config asks for, and a sentence saying which it is."""
    n = len(validation)
    if config.validation_limit is not None:
        k = min(config.validation_limit, n)
    elif config.validation_sample is not None:
        k = max(1, round(config.validation_sample * n))
    else:
        return validation, None
    if k == n:
        return validation, None
    rng = np.random.default_rng(config.subset_seed)
    indices = sorted(rng.choice(n, size=k, replace=False).tolist())
    note = f"seeded sample of {k} of {n} arguments (seed {config.subset_seed})"
    return validation.subset(indices, name=f"{validation.name} ({note})"), note


def training_subset(train: Split, config: TrainConfig) -> tuple[Split, str | None]:
    """The smaller training set a config asks for, and a sentence saying which it is.

    ``training_per_category = k``: for each category in turn, k of its positive arguments not
    yet chosen are added (seeded), so every category has at least k examples where the data
    allows; arguments chosen for one category also count for the others they carry.
    """
    n = len(train)
    rng = np.random.default_rng(config.subset_seed)
    if config.training_per_category is not None:
        if train.labels is None:
            raise InputError("the training split has no labels to pick examples per category from")
        k = config.training_per_category
        chosen: set[int] = set()
        for column in range(train.labels.shape[1]):
            have = sum(1 for i in chosen if train.labels[i, column])
            candidates = [i for i in np.flatnonzero(train.labels[:, column]) if i not in chosen]
            take = max(0, min(k - have, len(candidates)))
            if take:
                chosen.update(int(i) for i in rng.choice(candidates, size=take, replace=False))
        indices = sorted(chosen)
        note = f"{k} per category: {len(indices)} of {n} training arguments (seed {config.subset_seed})"
    elif config.training_fraction is not None and round(config.training_fraction * n) < n:
        size = max(1, round(config.training_fraction * n))
        indices = sorted(rng.choice(n, size=size, replace=False).tolist())
        note = f"seeded {config.training_fraction:.0%}: {size} of {n} training arguments (seed {config.subset_seed})"
    else:
        return train, None
    return train.subset(indices, name=f"{train.name} ({note})"), note


def run_training(
    config: TrainConfig,
    source: str = "config",
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainingResult:
    output = Path(config.output or f"runs/{config.method}")
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder", output)
    finished = (output / "detector.json").exists()
    if finished and not resume:
        raise InputError("already holds a trained detector; pass another --output, or --resume to "
                         "continue an interrupted run there", output)
    if finished and resume and not (output / "checkpoint").exists():
        raise InputError("holds a finished run: there is nothing to resume", output)
    detector = make_detector(config.method, config.detector, source)  # a bad config fails before any write
    ensure_folder(output)
    detector.progress = progress
    detector.checkpoint_dir = output / "checkpoint"
    detector.resume = resume
    detector.log = log

    train = load_split("training", config.data_dir)
    validation = load_split("validation", config.data_dir)
    if validation.labels is None:
        raise InputError("the validation split has no labels-validation.tsv", config.data_dir)
    validation, subset_note = validation_subset(validation, config)
    if subset_note and log:
        log(f"validation: {subset_note}")
    train, training_note = training_subset(train, config)
    if training_note and log:
        log(f"training: {training_note}")
    started = time.time()
    detector.fit(train, validation)
    fit_seconds = time.time() - started
    if not _is_main_process():
        # Under `accelerate launch`, every process trains; one writes the outputs.
        assert detector.validation_scores is not None
        return TrainingResult(detector, score(validation.labels, detector.decide(detector.validation_scores)),
                              validation.ids, "worker process", [])

    val_scores_raw = detector.validation_scores
    if val_scores_raw is None:
        val_scores_raw = detector.predict_proba(validation.arguments)
    val_pred = detector.decide(val_scores_raw)
    assert validation.labels is not None
    val_scores = score(validation.labels, val_pred, bootstrap=1000, seed=detector.config.seed)
    detector.info.update(
        validation_f1=val_scores.f1, validation_precision=val_scores.precision,
        validation_recall=val_scores.recall, train_seconds=round(fit_seconds, 1),
    )
    detector.save(output)
    written = [f"{output}/ (detector)"]
    write_run(output / "validation-run.tsv", validation.ids, val_pred)
    np.save(output / "validation-scores.npy", val_scores_raw.astype(np.float32))
    written.append(f"{output / 'validation-run.tsv'}")

    test_written = None
    if config.predict_test:
        try:
            test = load_split("test", config.data_dir)
        except InputError:
            test = None
        if test is not None:
            test_pred = detector.predict(test.arguments)
            write_run(output / "test-run.tsv", test.ids, test_pred)
            test_written = str(output / "test-run.tsv")
            written.append(test_written)
            if test.labels is not None:
                detector.info["test_f1"] = score(test.labels, test_pred).f1
    model = getattr(detector.config, "model", None)
    description = f"method {config.method}" + (f", model {model}" if model else "") + \
        f", seed {detector.config.seed}, thresholds {detector.thresholds.mode if detector.thresholds else '-'}" + \
        (f", {subset_note}" if subset_note else "") + (f", training {training_note}" if training_note else "")
    atomic_write_json(output / "results.json", {
        "method": config.method,
        "config": to_dict(config),
        "detector_config": to_dict(detector.config),
        "split": "validation",
        "validation_subset": subset_note,
        "training_subset": training_note,
        "training_arguments": len(train),
        "validation": val_scores.to_dict(),
        "thresholds": detector.thresholds.to_dict() if detector.thresholds else None,
        "train_seconds": round(fit_seconds, 1),
        "info": detector.info,
        "test_run": test_written,
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    })
    written.append(str(output / "results.json"))
    # A finished run needs no checkpoint (optimizer state is several times the weights).
    checkpoint = getattr(detector, "checkpoint_dir", None)
    if checkpoint is not None and Path(checkpoint).is_dir():
        shutil.rmtree(checkpoint)
    return TrainingResult(detector, val_scores, validation.ids, description, written)
