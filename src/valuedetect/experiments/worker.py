"""Runs one run of an experiment in its own process and writes its record.

A process per run keeps runs from sharing memory or threads, makes the peak memory of a run
its own (``ru_maxrss``), and lets the runner stop a run without losing the others' records.
Usage (by the runner): ``python -m valuedetect.experiments.worker RUN_FOLDER``, where
``RUN_FOLDER/spec.json`` holds the resolved ``RunSpec``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.compute import machine_description
from valuedetect.experiments.records import RUN_FOLDER, RunRecord

SPEC_FILE = "spec.json"
TIMING_ARGUMENTS = 32  # validation arguments timed for the per-argument inference time


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Progress:
    """Prints a progress line at most every few seconds: the runner shows and logs these."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every or done >= total:
            self.last = now
            _log(f"  {stage}: {done}/{total}")


def _budget(spec: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The limits a number was produced under: the detector's own account where it keeps one,
    else the settings that bound the work (epochs, steps, seconds, subsets)."""
    budget = dict(info.get("budget") or {})
    detector = spec.get("detector", {})
    if spec.get("method") == "ensemble":
        budget.setdefault("members", detector.get("members", 3))
        detector = {**(detector.get("member") or {}), **detector}
    for key in ("epochs", "max_steps", "max_seconds", "trainable_layers", "soft_prompt_tokens", "strategy"):
        if key in detector and key not in budget:
            budget[key] = detector[key]
    for key in ("validation_limit", "validation_sample", "training_per_category", "training_fraction",
                "cross_fit_folds", "cross_fit_fold"):
        if spec.get(key) is not None:
            budget[key] = spec[key]
    return budget


def _time_inference(detector: Any, method: str, data_dir: str | None, info: dict[str, Any]) -> float | None:
    """Seconds per argument to score validation arguments with the trained detector.

    LLM runs answer from their request cache here, so their own account of request time is
    used instead; a fresh timing would measure the cache.
    """
    if method == "llm":
        usage = info.get("usage") or {}
        seconds, arguments = usage.get("wall_seconds"), usage.get("arguments")
        if not usage.get("cache_misses"):
            return None  # every answer came from the cache: no timing to report
        return round(seconds / arguments, 6) if seconds and arguments else None
    from valuedetect.data import load_split

    arguments = load_split("validation", data_dir).arguments[:TIMING_ARGUMENTS]
    detector.predict_proba(arguments[:2])  # warm-up: first-call allocations are not per-argument cost
    started = time.perf_counter()
    detector.predict_proba(arguments)
    return round((time.perf_counter() - started) / len(arguments), 6)


def _training_run(record: RunRecord, settings: dict[str, Any], folder: Path) -> None:
    """Train (or finish, or resume) the run through ``training.run_training``, whatever its task."""
    from valuedetect.config import TrainConfig, from_dict
    from valuedetect.tasks import get_task
    from valuedetect.training import FINISHED_FILE, run_training

    output = folder / RUN_FOLDER
    config = from_dict(TrainConfig, {**settings, "output": str(output)}, f"run {record.name}")
    refit_pending = config.refit and not (output / "refit" / "refit.json").exists()
    if (output / FINISHED_FILE).exists() and not refit_pending:  # killed before its record: only that is missing
        from valuedetect.detectors import load_detector

        _log("  training had finished; writing its record")
        detector = load_detector(output)
    elif (output / "checkpoint").is_dir() or (output / "detector.json").exists():
        # killed mid-training (or while writing outputs): go on from what was saved
        detector = run_training(config, source=f"run {record.name}", resume=True, progress=_Progress(),
                                log=_log, check_int8=False).detector
    else:
        if output.exists():
            import shutil

            shutil.rmtree(output)  # nothing reusable: a run killed before its first checkpoint
        # a grid run is compared, not deployed: no int8 check (its export would cost ~20 s and 23 MB a run)
        detector = run_training(config, source=f"run {record.name}", progress=_Progress(), log=_log,
                                check_int8=False).detector
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    info = results.get("info", {})
    record.method = config.method
    record.model = detector.base_model or record.model
    record.seed = getattr(detector.config, "seed", None)
    record.detector_config = results.get("detector_config", {})
    record.train_seconds = results.get("train_seconds")
    record.parameters_trainable = info.get("parameters_trainable")
    record.parameters_total = info.get("parameters_total")
    if record.parameters_total is None and config.method == "llm":
        from valuedetect.lm.gguf import PARAMETERS

        record.parameters_total = PARAMETERS.get(str(getattr(detector.config, "model", "")))
        record.parameters_trainable = 0 if record.parameters_total else None
    record.training_arguments = results.get("training_arguments")
    record.training_subset = results.get("training_subset")
    record.validation_subset = results.get("validation_subset")
    record.validation = results.get("validation", {})
    record.protocol = results.get("protocol", {})
    record.dev = results.get("dev", {})
    record.compute = results.get("compute", {})
    record.training = results.get("training")
    record.budget = _budget(settings, info)
    record.versions = results.get("versions", {})
    task = get_task(config.task)
    dev_file, test_file = task.run_file("dev"), task.run_file("test")
    record.outputs = {
        task.output_key("dev"): f"{RUN_FOLDER}/{dev_file}" if (output / dev_file).exists() else None,
        task.output_key("validation"): f"{RUN_FOLDER}/{task.run_file('validation')}",
        "validation_scores": f"{RUN_FOLDER}/validation-scores.npy",
        task.output_key("test"): f"{RUN_FOLDER}/{test_file}" if (output / test_file).exists() else None,
        "results": f"{RUN_FOLDER}/results.json",
    }
    if config.refit and config.refit_data == "training":
        _score_the_refit(record, output)
    _log("  timing inference ...")
    try:
        record.inference_seconds = _time_inference(detector, config.method, config.data_dir, info)
    except Exception as error:  # a timing problem must not turn a finished run into a failed one
        record.notes.append(f"inference not timed: {type(error).__name__}: {error}")
    else:
        if record.inference_seconds is not None:
            record.notes.append("inference_seconds is per argument")


def _score_the_refit(record: RunRecord, output: Path) -> None:
    """A run refitted on training (validation held out) is measured by its refit: the record's
    validation score, run file and compute become the refit's; dev keeps the first fit's, which
    chose the epochs and thresholds the refit used."""
    refit = json.loads((output / "refit" / "refit.json").read_text(encoding="utf-8"))
    first_f1 = record.validation.get("f1")
    record.validation = (refit.get("held_out") or {}).get("validation", {})
    record.outputs["validation_run"] = f"{RUN_FOLDER}/refit/validation-run.tsv"
    record.outputs["validation_scores"] = f"{RUN_FOLDER}/refit/validation-scores.npy"
    if (output / "refit" / "test-run.tsv").exists():  # the detector the figures are of labels test too
        record.outputs["test_run"] = f"{RUN_FOLDER}/refit/test-run.tsv"
    first, spent = dict(record.compute), refit.get("compute", {})
    record.compute = {
        **first,
        "train_cpu_seconds": round(first.get("train_cpu_seconds", 0) + spent.get("train_cpu_seconds", 0), 1),
        "validation_cpu_seconds": refit.get("validation_cpu_seconds"),
        "validation_seconds": refit.get("validation_seconds"),
        "note": f"{first.get('note', '')}; training counts both fits: the held-out one that chose epochs and "
                "thresholds on dev, and the refit on all of training",
    }
    record.training_arguments = refit.get("training_arguments", record.training_arguments)
    record.train_seconds = round((record.train_seconds or 0) + spent.get("train_seconds", 0), 1)
    record.notes.append(f"validation scored by the refit on all of training ({record.training_arguments} arguments, "
                        "the dev slice included) with the epochs and thresholds dev chose" +
                        ("" if first_f1 is None else f"; the fit that chose them scored validation F1 {first_f1:.4f}"))


def run_one(folder: Path) -> RunRecord:
    """Execute the run described by ``folder/spec.json``; the record says done or failed."""
    spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    settings = spec["settings"]
    record = RunRecord(name=spec["name"], status="failed", group=spec.get("group") or spec["name"],
                       task=spec["task"], family=spec["family"],
                       method=settings.get("method", ""), model=spec.get("model"), spec=settings,
                       spec_hash=spec["hash"], started=_now(),
                       machine=machine_description())
    started = time.monotonic()
    try:
        _training_run(record, settings, folder)
        record.status = "done"
    except Exception as error:  # recorded, and the grid goes on
        from valuedetect.errors import ValueDetectError

        record.error = str(error) if isinstance(error, ValueDetectError) else f"{type(error).__name__}: {error}"
        (folder / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        _log(f"  FAILED: {record.error} (traceback in {folder / 'traceback.txt'})")
    record.wall_seconds = round(time.monotonic() - started, 1)
    record.finished = _now()
    record.peak_rss_mib = _peak_rss_mib()
    if not record.versions:
        from valuedetect.training import _versions

        record.versions = _versions()
    record.save(folder)
    return record


def hold_lock(folder: Path) -> Any:
    """Lock the run's folder for as long as this process lives, so that no second runner starts
    the same run beside it (the lock goes with the process, however it ends)."""
    import fcntl
    import os

    from valuedetect.experiments.runner import WORKER_LOCK

    handle = open(folder / WORKER_LOCK, "a+")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit(f"{folder}: another worker is running this run") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m valuedetect.experiments.worker RUN_FOLDER", file=sys.stderr)
        return 2
    np.seterr(all="ignore")
    lock = hold_lock(Path(args[0]))
    try:
        record = run_one(Path(args[0]))
    finally:
        lock.close()
    return 0 if record.done else 1


if __name__ == "__main__":
    sys.exit(main())
