"""Runs an experiment's grid one run after another, each in its own worker process, and
resumes: a run with a finished record made from the same settings is never run again.

States of a run (``run_states``):
- done: a record with status done and the run's current settings;
- failed: a record with status failed (retried by the next ``experiment run``);
- stale: a record made from other settings (the config changed; rerun, old folder kept aside);
- pending: no record yet (a killed run is pending; it resumes from its checkpoint if it has one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from valuedetect.data import atomic_write_json
from valuedetect.encoder import state_cache
from valuedetect.errors import InputError
from valuedetect.experiments.config import Experiment, RunSpec
from valuedetect.experiments.records import EXPERIMENT_FILE, RECORD_FILE, RunRecord
from valuedetect.experiments.worker import SPEC_FILE

LOG_FILE = "log.txt"
WORKER_LOCK = ".worker.lock"  # held by a run's worker while it runs (see worker.hold_lock)
STATE_CACHE_FOLDER = ".frozen-states"


@dataclass
class RunState:
    spec: RunSpec
    state: str  # done | failed | stale | pending
    record: RunRecord | None = None


def run_states(experiment: Experiment) -> list[RunState]:
    states = []
    for spec in experiment.runs:
        folder = experiment.results / spec.name
        if not (folder / RECORD_FILE).exists():
            # A killed run left its folder: it resumes only if its settings are still the same.
            started_as = _spec_hash_in(folder)
            states.append(RunState(spec, "stale" if started_as not in (None, spec.hash) else "pending"))
            continue
        record = RunRecord.load(folder)
        if record.spec_hash != spec.hash:
            states.append(RunState(spec, "stale", record))
        else:
            states.append(RunState(spec, "done" if record.done else "failed", record))
    return states


def _spec_hash_in(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_experiment_file(experiment: Experiment) -> None:
    atomic_write_json(experiment.results / EXPERIMENT_FILE, {
        "name": experiment.name, "config": str(experiment.path), "description": experiment.description,
        "runs": [spec.name for spec in experiment.runs],
        **({"reference": experiment.reference} if experiment.reference else {}),
    })


def _prepare_folder(experiment: Experiment, state: RunState) -> Path:
    """The run's folder, with its spec; a stale run's old results are kept beside it."""
    folder = experiment.results / state.spec.name
    if state.state == "stale":
        aside = folder.with_name(f"{folder.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
    elif state.state == "failed":
        (folder / RECORD_FILE).unlink()
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**asdict(state.spec), "hash": state.spec.hash, "model": state.spec.model}
    atomic_write_json(folder / SPEC_FILE, spec)
    return folder


def _die_with_parent() -> None:
    """In the worker, before it runs: the kernel kills it when the runner dies, even by SIGKILL
    (the worker has its own session, so the runner's process group signals do not reach it)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker lock below still keeps reruns apart
        pass


def _check_no_live_worker(folder: Path) -> None:
    """Refuse to start a run whose folder a worker still holds (one left by a runner that died)."""
    path = folder / WORKER_LOCK
    if not path.exists():
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise InputError(f"a worker (pid {pid}) is still running this run; stop it or wait for it to end",
                             folder) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def _run_worker(folder: Path, show: Callable[[str], None]) -> int:
    """Run the worker, teeing its output to the run's log; returns its exit code. On Ctrl-C the
    worker is stopped and KeyboardInterrupt goes on up."""
    _check_no_live_worker(folder)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Runs that freeze the same encoder share its frozen states (see encoder.state_cache).
    env.setdefault(state_cache.ENVIRONMENT_VARIABLE, str(folder.parent / STATE_CACHE_FOLDER))
    with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"--- started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        process = subprocess.Popen(
            [sys.executable, "-m", "valuedetect.experiments.worker", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, encoding="utf-8",
            errors="replace", env=env, start_new_session=True, preexec_fn=_die_with_parent,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                show(line.rstrip("\n"))
            return process.wait()
        except KeyboardInterrupt:
            log.write("--- interrupted\n")
            raise
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End a worker still running (the runner was interrupted or failed): SIGINT first, so it
    stops like Ctrl-C, then SIGKILL; further Ctrl-Cs cannot cut this short and orphan it."""
    if process.poll() is not None:
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def run_experiment(
    experiment: Experiment,
    only: Sequence[str] = (),
    show: Callable[[str], None] = print,
    on_finished: Callable[[RunRecord, int, int], None] | None = None,
) -> list[RunRecord]:
    """Run every run that is not done (or only those named), in grid order; returns the records
    made now. A failed run is recorded with its error and the grid goes on."""
    unknown = sorted(set(only) - {spec.name for spec in experiment.runs})
    if unknown:
        raise InputError(f"no run named {unknown[0]!r} in this experiment", experiment.path)
    try:
        experiment.results.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the results folder ({error.strerror})", experiment.results) from None
    lock = open(experiment.results / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise InputError("another `valuedetect experiment run` is writing to this results folder",
                         experiment.results) from None
    try:
        return _run_todo(experiment, only, show, on_finished)
    finally:
        lock.close()


def _run_todo(experiment: Experiment, only: Sequence[str], show: Callable[[str], None],
              on_finished: Callable[[RunRecord, int, int], None] | None) -> list[RunRecord]:
    _write_experiment_file(experiment)
    todo = [s for s in run_states(experiment) if s.state != "done" and (not only or s.spec.name in only)]
    made: list[RunRecord] = []
    for number, state in enumerate(todo, 1):
        folder = _prepare_folder(experiment, state)
        show(f"[{number}/{len(todo)}] {state.spec.name} ({state.spec.family}, {state.spec.task})"
             + (": resuming from its checkpoint" if (folder / "run" / "checkpoint").is_dir() else ""))
        code = _run_worker(folder, show)
        if (folder / RECORD_FILE).exists():
            record = RunRecord.load(folder)
        else:  # the worker died without a word (killed, out of memory): record that
            record = RunRecord(name=state.spec.name, status="failed", group=state.spec.group, task=state.spec.task,
                               family=state.spec.family, spec=state.spec.settings, spec_hash=state.spec.hash,
                               error=f"the worker process {_exit_reason(code)} before writing its record "
                                     f"(killed for memory?); see {folder / LOG_FILE}")
            record.save(folder)
        made.append(record)
        if on_finished:
            on_finished(record, number, len(todo))
    return made


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"ended with exit code {code}"


def describe_states(states: Sequence[RunState]) -> list[dict[str, object]]:
    """Rows for ``experiment status``: name, state, F1 or accuracy, wall time, error."""
    rows = []
    for s in states:
        r = s.record
        score = None
        if r is not None and r.done:
            score = r.validation.get("accuracy") if r.task == "nli" else r.validation.get("f1")
        rows.append({"name": s.spec.name, "family": s.spec.family, "state": s.state,
                     "score": score, "wall_seconds": r.wall_seconds if r else None,
                     "error": r.error if r is not None and s.state == "failed" else None})
    return rows


def status_json(states: Sequence[RunState]) -> str:
    return json.dumps(describe_states(states), indent=2)


__all__ = ["LOG_FILE", "RunState", "describe_states", "run_experiment", "run_states", "status_json"]
