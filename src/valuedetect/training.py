"""A training run from a config: data in, detector, run files and scores out.

Everything a reported number depends on (task, split, method, model, seed, thresholds, time,
versions) is written next to it in ``results.json``. Both tasks (``valuedetect.tasks``: the
value categories and the NLI side task) run through here, under the same protocol.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect import __version__, scoring_state
from valuedetect.compute import LEDGER, ComputeLedger, machine_description, usable_cores
from valuedetect.config import TrainConfig, stable_settings, to_dict
from valuedetect.data import Split, atomic_write_json, ensure_folder, load_split, write_labels
from valuedetect.detectors import make_detector
from valuedetect.detectors.base import Detector
from valuedetect.errors import ConfigError, InputError
from valuedetect.tasks import get_task


@dataclass
class TrainingResult:
    """What a run produced; the scores are the task's (``metrics.Scores``, ``nli.NLIScores``)."""

    detector: Detector
    validation_scores: Any
    validation_ids: list[str]
    description: str
    written: list[str] = field(default_factory=list)
    dev_scores: Any = None
    protocol: dict[str, Any] = field(default_factory=dict)
    level1: dict[str, Any] | None = None  # level-1 scores on validation, for detectors trained on them


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"valuedetect": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _wait_for_everyone() -> None:
    """Under ``accelerate launch``, hold every process here until all arrive: every process checks
    the output folder before the main one writes into it."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return  # not launched as several processes: nothing to wait for (and no state to set up)
    import torch
    from accelerate import PartialState

    # The same device choice as the trainer's Accelerator: the shared state is set up once.
    PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


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
    elif config.cross_fit_folds is not None and config.cross_fit_fold is not None:
        from valuedetect.protocol import cross_fit_held_out

        held_out = cross_fit_held_out(train, config.cross_fit_folds, config.cross_fit_fold, config.subset_seed)
        keep = np.ones(n, dtype=bool)
        keep[held_out] = False
        indices = np.flatnonzero(keep).tolist()
        note = (f"cross-fitting fold {config.cross_fit_fold} of {config.cross_fit_folds} left out: {len(indices)} of "
                f"{n} training arguments (seed {config.subset_seed})")
    elif config.training_fraction is not None and round(config.training_fraction * n) < n:
        size = max(1, round(config.training_fraction * n))
        indices = sorted(rng.choice(n, size=size, replace=False).tolist())
        note = f"seeded {config.training_fraction:.0%}: {size} of {n} training arguments (seed {config.subset_seed})"
    else:
        return train, None
    return train.subset(indices, name=f"{train.name} ({note})"), note


FINISHED_FILE = "results.json"  # written last: a folder holding it is a finished run
LEVEL1_RUN_FILES = {"validation": "validation-level1-run.tsv", "test": "test-level1-run.tsv"}


def _write_level1(detector: Any, output: Path, validation: Split, scores: np.ndarray | None,
                  written: list[str]) -> dict[str, Any] | None:
    """A detector trained on the 54 level-1 values: its validation level-1 run file (the official
    level-1 format) and the official measure over the 54 values, held out as the categories' is."""
    if scores is None:
        return None
    from valuedetect.metrics import score

    decisions = detector.decide_level1(scores)
    path = output / LEVEL1_RUN_FILES["validation"]
    write_labels(path, validation.ids, decisions, level=1)
    written.append(str(path))
    if validation.level1_labels is None:
        return {"validation": None, "note": "no level1-labels-validation.tsv: the level-1 run file is not scored"}
    result = score(validation.level1_labels, decisions, bootstrap=1000, seed=detector.config.seed)
    return {"validation": result.to_dict(),
            "thresholds": detector.level1_thresholds.to_dict() if detector.level1_thresholds else None,
            "note": "the official measure over the 54 level-1 values; thresholds chosen on dev as the categories' are"}


def dev_subset(dev: Split, config: TrainConfig) -> tuple[Split, str | None]:
    """The seeded part of the dev slice a config chooses on (``dev_limit``), and a sentence saying so."""
    if config.dev_limit is None or config.dev_limit >= len(dev):
        return dev, None
    rng = np.random.default_rng(config.subset_seed)
    indices = sorted(rng.choice(len(dev), size=config.dev_limit, replace=False).tolist())
    note = f"seeded sample of {config.dev_limit} of {len(dev)} dev arguments (seed {config.subset_seed})"
    return dev.subset(indices, name=f"dev ({note})"), note


def _folder_state(output: Path) -> str:
    """empty | unfinished | finished: what a training folder holds."""
    if (output / FINISHED_FILE).exists():
        return "finished"
    if output.is_dir() and any(output.iterdir()):
        return "unfinished"
    return "empty"


def _refit_note(config: TrainConfig) -> str:
    return ("refit on training, validation held out" if config.refit_data == "training" else
            "refit on training + validation: no held-out score")


def _refit_only(config: TrainConfig, output: Path, progress: Callable[[str, int, int], None] | None,
                log: Callable[[str], None] | None) -> TrainingResult:
    """Resume a run killed during its refit: the held-out run is finished; refit only."""
    import json

    from valuedetect.data import read_labels, shipped_data_dir
    from valuedetect.detectors import load_detector
    from valuedetect.evaluation import score_run_file
    from valuedetect.refit import REFIT_FOLDER, refit

    detector = load_detector(output)
    results = json.loads((output / FINISHED_FILE).read_text(encoding="utf-8"))
    record = refit(detector, config, output, resume=True, progress=progress, log=log)
    data = Path(config.data_dir or shipped_data_dir())
    scores = score_run_file(output / "validation-run.tsv", data / "labels-validation.tsv", seed=detector.config.seed,
                            run_ids_only=True)
    _say_refit_score(record, scores.f1, log or (lambda _message: None))
    dev_scores = score_run_file(output / "dev-run.tsv", data / "labels-training.tsv", bootstrap=0, run_ids_only=True) \
        if (output / "dev-run.tsv").exists() else None
    ids, _ = read_labels(output / "validation-run.tsv")
    return TrainingResult(detector, scores, ids, "held-out run finished before; refit completed now",
                          [f"{output / REFIT_FOLDER}/ ({_refit_note(config)})"], dev_scores=dev_scores,
                          protocol=results.get("protocol", {}), level1=results.get("level1"))


def _say_refit_score(record: dict[str, Any], first_f1: float, say: Callable[[str], None]) -> None:
    held_out = (record.get("held_out") or {}).get("validation")
    if held_out:
        say(f"refit on training, validation held out: F1 {held_out['f1']:.4f} (the run refitted from: "
            f"{first_f1:.4f})")


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (torch's and llama.cpp's) together."""
    return time.process_time()


def _check_int8(detector: Any, validation: Split, fp32_scores: np.ndarray, task: str,
                say: Callable[[str], None]) -> bool:
    """Record the int8 check of an encoder detector in its info (skipped, saying why, where
    it cannot run); nothing the run reports changes. True when a record was made."""
    if not hasattr(detector, "check_int8") or task != "values" or detector.inference_mode() != "auto":
        return False
    from valuedetect.encoder.int8 import runtime_missing
    from valuedetect.errors import ValueDetectError

    missing = runtime_missing()
    if missing:
        say(f"int8 check skipped: {missing}")
        return False
    try:
        record = detector.check_int8(validation, fp32_scores=fp32_scores)
    except ValueDetectError as error:
        say(f"int8 check skipped: {error}")
        return False
    verdict = "predictions use int8" if record["within_bound"] else "predictions stay fp32"
    say(f"int8 check on validation: F1 {record['int8']:.4f} against fp32 {record['fp32']:.4f} ({verdict})")
    return True


def _ranking_auc(task: str, labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The threshold-free diagnostic beside F1 (``metrics.ranking_auc``), for the values task."""
    from valuedetect.metrics import ranking_auc

    if task != "values" or np.shape(labels) != np.shape(scores):
        return None
    return ranking_auc(labels, scores)


def run_training(
    config: TrainConfig,
    source: str = "config",
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    check_int8: bool = True,
) -> TrainingResult:
    """Train under the evaluation protocol, then score validation once and write every output.

    ``check_int8``: for an encoder detector (``inference = "auto"``, ONNX Runtime installed),
    also score validation through the int8 path and record whether its official F1 stays within
    0.005 of fp32 (``valuedetect.encoder.int8``); the run's own scores and files stay fp32.

    Held-out protocol: the detector learns from training minus a dev slice and chooses (epochs,
    thresholds) on dev; validation is scored once. The outputs are written detector first and
    ``results.json`` last, so a folder without ``results.json`` is an unfinished run that
    ``--resume`` completes.
    """
    from valuedetect import fingerprint
    from valuedetect.protocol import make_splits

    output = Path(config.output or f"runs/{config.method}")
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder", output)
    state = _folder_state(output)
    if state == "finished" and resume and config.refit and not (output / "refit" / "refit.json").exists():
        return _refit_only(config, output, progress, log)
    if state == "finished":
        raise InputError("holds a finished run: there is nothing to resume" if resume else
                         "already holds a trained detector; pass another --output", output)
    if state == "unfinished" and not resume:
        raise InputError("holds an unfinished run; pass --resume to continue it, or another --output", output)
    task = get_task(config.task)
    # A bad config fails before any write.
    detector = make_detector(config.method, config.detector, source, task=task.name)
    if config.refit and detector.teacher:
        raise ConfigError(f"{source}: refit = true with distill_from: a refit trains on arguments the teacher's "
                          "scores were not checked for (validation, or the dev slice the teacher chose on); refit "
                          "the teacher instead, or drop refit")
    if config.cross_fit_folds is not None and detector.teacher:
        raise ConfigError(f"{source}: a cross-fitting fold with distill_from: the fold trains on less than the fit "
                          "split its teacher was checked for; distil the student from the folds' out-of-fold "
                          "scores instead")
    _wait_for_everyone()
    ensure_folder(output)
    detector.progress = progress
    detector.checkpoint_dir = output / "checkpoint"
    detector.resume = resume
    detector.log = log

    say = log or (lambda _message: None)
    # level-1 labels ride along (a detector trained on them uses them; others ignore them)
    train = task.split(load_split("training", config.data_dir, level1=True))
    validation = task.split(load_split("validation", config.data_dir, level1=True))
    if validation.labels is None:
        raise InputError("the validation split has no labels-validation.tsv", config.data_dir)
    validation, subset_note = validation_subset(validation, config)
    splits = make_splits(train, validation, config.protocol, config.dev_fraction, config.dev_seed)
    fit, training_note = training_subset(splits.fit, config)
    # Under the paper protocol dev is the scored validation split itself: it is not cut down.
    dev, dev_note = (splits.dev, None) if splits.optimistic else dev_subset(splits.dev, config)
    if splits.optimistic:
        say("protocol: paper (choosing and scoring on validation: its F1 is optimistic, not a held-out figure)")
    else:
        say(f"protocol: held-out; dev = {len(splits.dev)} of {len(train)} training arguments (stratified, seed "
            f"{config.dev_seed}) chooses epochs and thresholds; validation ({len(validation)}) is scored once")
    for what, note in (("validation", subset_note), ("training", training_note), ("dev", dev_note)):
        if note:
            say(f"{what}: {note}")
    # refit only adds a folder after the held-out run: a run may be resumed with or without it
    run_settings = stable_settings({k: v for k, v in to_dict(config).items()
                                    if k not in ("detector", "output", "refit", "refit_data")})
    if _is_main_process():
        fingerprint.check_or_write(output, fingerprint.run_fingerprint(
            run_settings, to_dict(detector.config), detector.base_model, fit, dev), resume)

    trained_before = resume and (output / "detector.json").exists() and not (output / "checkpoint").exists()
    # Training time counts every process that worked on the run (a resumed one repeats some work).
    with ComputeLedger(output / LEDGER if _is_main_process() else None, fresh=not resume) as ledger:
        if trained_before:  # killed after saving the detector, before its scores: only score and write
            from valuedetect.detectors import load_detector

            try:
                saved = load_detector(output)
            except InputError as error:  # e.g. a folder committed without its weights
                say(f"the saved detector cannot be loaded ({error}): training again")
                trained_before = False
            else:
                say("the detector was saved before the interruption; scoring it and writing the remaining outputs")
                saved.progress, saved.log = detector.progress, log
                saved.dev_scores, saved.dev_level1_scores = scoring_state.dev_scores(output, dev, say)
                detector = saved
        if not trained_before:
            detector.fit(fit, dev)
            if _is_main_process() and getattr(detector, "resumable_chunk", 0):
                # Saved before validation is scored, so a kill while scoring (hours for a language
                # model) resumes from the kept scores instead of training again.
                checkpoint = getattr(detector, "checkpoint_dir", None)
                detector.save(output)
                if detector.dev_scores is not None:
                    scoring_state.save_dev_scores(output, dev, detector.dev_scores, detector.dev_level1_scores)
                if checkpoint is not None and Path(checkpoint).is_dir():
                    shutil.rmtree(checkpoint)  # the saved detector holds the trained weights now
    fit_seconds, fit_cpu = ledger.wall_seconds, ledger.cpu_seconds
    if trained_before and not ledger.processes_before:  # a run folder from before the ledger
        fit_seconds = max(fit_seconds, float(detector.info.get("train_seconds") or 0.0))
        fit_cpu = max(fit_cpu, float(detector.info.get("train_cpu_seconds") or 0.0))
    if not _is_main_process():
        # Under `accelerate launch`, every process trains; one writes the outputs.
        assert detector.dev_scores is not None and dev.labels is not None
        return TrainingResult(detector, task.score(dev.labels, detector.decide(detector.dev_scores)), dev.ids,
                              "worker process", [])

    assert dev.labels is not None and validation.labels is not None
    dev_raw = detector.dev_scores if detector.dev_scores is not None else detector.predict_proba(dev.arguments)
    dev_pred = detector.decide(dev_raw)
    dev_scores = task.score(dev.labels, dev_pred)
    # Under the paper protocol dev is validation itself: it is not scored a second time.
    if splits.optimistic:
        val_raw, val_level1, val_seconds, val_cpu = dev_raw, detector.dev_level1_scores, 0.0, 0.0
    else:
        val_raw, val_level1, val_seconds, val_cpu = scoring_state.score_resumably(detector, validation, output, say)
    val_pred = detector.decide(val_raw)
    val_scores = task.score(validation.labels, val_pred, bootstrap=1000, seed=detector.config.seed)
    ranking = _ranking_auc(task.name, validation.labels, val_raw)
    if ranking is not None:
        say(f"validation ranking AUC (mean over categories, before thresholds; not the official measure): "
            f"{ranking:.3f}")
    protocol = splits.describe()
    if config.cross_fit_folds is not None and config.cross_fit_fold is not None:
        from valuedetect.protocol import cross_fit_held_out, ids_digest

        rows = cross_fit_held_out(splits.fit, config.cross_fit_folds, config.cross_fit_fold, config.subset_seed)
        # what `valuedetect teacher-scores` checks before it lets this run score its fold
        protocol["cross_fit"] = {"folds": config.cross_fit_folds, "fold": config.cross_fit_fold,
                                 "seed": config.subset_seed, "held_out_arguments": len(rows),
                                 "held_out_ids_sha256": ids_digest([splits.fit.ids[i] for i in rows])}
    if dev_note:
        protocol["dev_arguments_used"] = len(dev)
        protocol["dev_subset"] = dev_note
    detector.info.update(
        protocol=protocol, **task.summary("dev", dev_scores), **task.summary("validation", val_scores),
        validation_held_out=not splits.optimistic, train_seconds=round(fit_seconds, 1),
        train_cpu_seconds=round(fit_cpu, 1), train_processes=ledger.processes,
    )
    detector.save(output)
    written = [f"{output}/ (detector)"]
    for role, split, raw, decided in (("dev", dev, dev_raw, dev_pred), ("validation", validation, val_raw, val_pred)):
        task.write_run(output / task.run_file(role), split, raw, decided)
        written.append(str(output / task.run_file(role)))
    np.save(output / "validation-scores.npy", val_raw.astype(np.float32))
    level1_scores = _write_level1(detector, output, validation, val_level1, written)

    test_written = None
    if config.predict_test:
        try:
            test = task.split(load_split("test", config.data_dir))
        except InputError:
            test = None
        if test is not None:
            test_raw, test_level1 = detector.predict_proba_levels(test.arguments)
            test_pred = detector.decide(test_raw)
            if test_level1 is not None:
                write_labels(output / LEVEL1_RUN_FILES["test"], test.ids, detector.decide_level1(test_level1), level=1)
                written.append(str(output / LEVEL1_RUN_FILES["test"]))
            task.write_run(output / task.run_file("test"), test, test_raw, test_pred)
            test_written = str(output / task.run_file("test"))
            written.append(test_written)
            if test.labels is not None and task.scores_test:
                detector.info[f"test_{task.headline}"] = getattr(task.score(test.labels, test_pred), task.headline)
    if check_int8 and _check_int8(detector, validation, val_raw, task.name, say):
        detector.save(output)  # detector.json now holds the check
    model = detector.base_model
    description = ("" if task.name == "values" else f"task {task.name}, ") + f"method {config.method}" + \
        (f", model {model}" if model else "") + \
        f", seed {detector.config.seed}, thresholds {detector.thresholds.mode if detector.thresholds else '-'}" + \
        f", protocol {config.protocol}" + (f", {subset_note}" if subset_note else "") + \
        (f", training {training_note}" if training_note else "")
    atomic_write_json(output / FINISHED_FILE, {
        "task": task.name,
        "task_labels": task.labels_note,
        "method": config.method,
        "config": to_dict(config),
        "detector_config": to_dict(detector.config),
        "protocol": protocol,
        "split": "validation",
        "validation_held_out": not splits.optimistic,
        "validation_subset": subset_note,
        "training_subset": training_note,
        "dev_subset": dev_note,
        "training_arguments": len(fit),
        "dev": dev_scores.to_dict(),
        "dev_note": f"{task.headline_label} on the dev arguments that chose epochs and thresholds: in-sample for "
                    "those choices",
        "validation": {**val_scores.to_dict(), **({"ranking_auc": ranking} if ranking is not None else {})},
        **({"level1": level1_scores} if level1_scores else {}),
        "thresholds": detector.thresholds.to_dict() if detector.thresholds else None,
        "train_seconds": round(fit_seconds, 1),
        "compute": {"train_cpu_seconds": round(fit_cpu, 1), "validation_cpu_seconds": round(val_cpu, 1),
                    "validation_seconds": round(val_seconds, 1), "cores": usable_cores(),
                    "train_processes": ledger.processes,
                    "note": "CPU-seconds of the processes that trained it (all their threads; a resumed "
                            "run's earlier processes included, work they repeated too); work done by a "
                            "remote server (an OpenAI-compatible backend) is not counted"},
        "training": detector.info.get("training"),
        "info": detector.info,
        "test_run": test_written,
        "versions": _versions(),
        "machine": machine_description(),
    })
    written.append(str(output / FINISHED_FILE))
    # A finished run needs no checkpoint (optimizer state is several times the weights).
    checkpoint = getattr(detector, "checkpoint_dir", None)
    if checkpoint is not None and Path(checkpoint).is_dir():
        shutil.rmtree(checkpoint)
    scoring_state.clear(output)
    if config.refit:
        from valuedetect.refit import REFIT_FOLDER, refit

        record = refit(detector, config, output, resume=resume, progress=progress, log=log)
        _say_refit_score(record, val_scores.f1, say)
        written.append(f"{output / REFIT_FOLDER}/ ({_refit_note(config)})")
    return TrainingResult(detector, val_scores, validation.ids, description, written, dev_scores=dev_scores,
                          protocol=protocol, level1=level1_scores)
