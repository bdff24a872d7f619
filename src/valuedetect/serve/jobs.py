"""Uploaded files labelled in the background, with progress the page can poll.

The file is parsed before the upload request returns, so a malformed line is reported at
once (with its number); only the labelling runs in the background, in batches through the
model thread, so interactive requests interleave with a large upload instead of waiting.

The store is bounded: at most ``max_running`` jobs label at once and ``max_queued`` more wait
their turn; beyond that an upload is refused (``JobsFull``, with an estimate of when to retry)
instead of piling up hours of work. Finished jobs beyond ``max_kept`` are forgotten, oldest
first, and a later look-up of one says that it was removed rather than that it never existed.
"""

from __future__ import annotations

import concurrent.futures
import math
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from valuedetect.data import Argument, read_inputs
from valuedetect.errors import InputError
from valuedetect.outputs import write_predictions
from valuedetect.serve.runner import ModelStopped

RESULT_FORMATS = {"tsv": "results.tsv", "csv": "results.csv", "jsonl": "results.jsonl"}
BATCH = 32  # arguments per model call of a job: an interactive request waits for at most one
EVICTED_REMEMBERED = 10_000  # IDs of removed jobs kept, to answer "removed" instead of "unknown"


class JobsFull(Exception):
    """Every running and queued slot is taken; ``retry_after`` estimates when one frees up."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Job:
    id: str
    filename: str
    total: int
    folder: Path
    done: int = 0
    status: str = "queued"
    error: str | None = None
    queue_position: int | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    arguments: list[Argument] = field(default_factory=list, repr=False)
    # columns that can group the file (serve.counts), each with one value per argument
    groups: dict[str, list[str]] = field(default_factory=dict, repr=False)
    decisions: np.ndarray | None = field(default=None, repr=False)  # 0/1 per argument and category, once done
    work: tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]] | None = field(default=None, repr=False)


def parse_upload(data: bytes, filename: str, text_column: str = "text") -> list[Argument]:
    """Arguments from an uploaded file, read exactly as ``valuedetect predict`` reads files."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (".tsv", ".csv", ".jsonl", ".txt"):
        raise InputError(f"unsupported file type {suffix or '(none)'!r}; upload .tsv, .csv, .jsonl or .txt")
    with tempfile.TemporaryDirectory(prefix="valuedetect-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_inputs(path, text_column=text_column)
        except InputError as error:
            # Name the file as the user knows it, not our temporary copy.
            raise InputError(error.problem, filename, error.line) from None


class JobStore:
    def __init__(self, max_kept: int, max_running: int = 1, max_queued: int = 4,
                 seconds_per_argument: Callable[[], float] | None = None):
        self.max_kept = max_kept
        self.max_running = max_running
        self.max_queued = max_queued
        self._seconds_per_argument = seconds_per_argument or (lambda: 0.01)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._evicted: OrderedDict[str, str] = OrderedDict()  # id -> why it is gone
        self._lock = threading.Lock()
        self._root = Path(tempfile.mkdtemp(prefix="valuedetect-jobs-"))

    def check_capacity(self) -> None:
        """Raise ``JobsFull`` now if a new job could not be taken (before reading an upload)."""
        with self._lock:
            self._check_capacity()

    def start(
        self,
        filename: str,
        arguments: Sequence[Argument],
        predict_proba: Callable[[Sequence[Argument]], np.ndarray],
        decide: Callable[[np.ndarray], np.ndarray],
        groups: dict[str, list[str]] | None = None,
    ) -> Job:
        job_id = uuid.uuid4().hex[:16]
        job = Job(id=job_id, filename=Path(filename).name, total=len(arguments), folder=self._root / job_id,
                  arguments=list(arguments), work=(predict_proba, decide), groups=groups or {})
        with self._lock:
            self._check_capacity()
            self._jobs[job_id] = job
            self._queue.append(job)
            self._launch()
            self._evict()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == "queued":
                job.queue_position = self._queue.index(job) if job in self._queue else 0
            return job

    def why_gone(self, job_id: str) -> str | None:
        """Why a job that existed is no longer here (None if it never did)."""
        with self._lock:
            return self._evicted.get(job_id)

    def result_path(self, job: Job, fmt: str) -> Path:
        return job.folder / RESULT_FORMATS[fmt]

    def close(self) -> None:
        """Forget every job and delete its files (the store stays usable)."""
        with self._lock:
            for job in self._queue:
                job.status, job.error = "failed", "the server stopped before this job started"
            self._queue.clear()
            self._jobs.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    # ------------------------------------------------------------------ internals (lock held)
    def _check_capacity(self) -> None:
        running = sum(j.status == "running" for j in self._jobs.values())
        if running + len(self._queue) < self.max_running + self.max_queued:
            return
        # A slot frees when the running job closest to its end finishes (running jobs share the
        # one model thread), at the speed measured so far.
        left = min((j.total - j.done for j in self._jobs.values() if j.status == "running"), default=0)
        seconds = left * self._seconds_per_argument() * max(1, running)
        retry_after = int(min(3600, max(1, math.ceil(seconds))))
        raise JobsFull(f"{running} jobs running and {len(self._queue)} queued, the most this server takes "
                       f"({self.max_running} running, {self.max_queued} queued); retry in about {retry_after} s",
                       retry_after)

    def _launch(self) -> None:
        """Start queued jobs while a running slot is free."""
        while self._queue and sum(j.status == "running" for j in self._jobs.values()) < self.max_running:
            job = self._queue.popleft()
            job.status, job.queue_position = "running", None
            job.thread = threading.Thread(target=self._work, args=(job,), daemon=True, name=f"job-{job.id}")
            job.thread.start()
        for position, job in enumerate(self._queue):
            job.queue_position = position

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond ``max_kept`` (running and queued ones are kept)."""
        finished = [j for j in self._jobs.values() if j.status in ("done", "failed")]
        while len(self._jobs) > self.max_kept and finished:
            old = finished.pop(0)
            self._jobs.pop(old.id, None)
            shutil.rmtree(old.folder, ignore_errors=True)
            self._evicted[old.id] = (f"job {old.id} ({old.filename}) was {old.status} and has been removed to make "
                                     f"room for newer jobs: the server keeps the last {self.max_kept} jobs; "
                                     "upload the file again")
            while len(self._evicted) > EVICTED_REMEMBERED:
                self._evicted.popitem(last=False)

    def _work(self, job: Job) -> None:
        assert job.work is not None
        predict_proba, decide = job.work
        arguments = job.arguments
        try:
            job.folder.mkdir(parents=True)  # the root again too, should the store have been closed before
            parts = []
            for start in range(0, len(arguments), BATCH):
                parts.append(predict_proba(arguments[start : start + BATCH]))
                job.done = min(start + BATCH, len(arguments))
            scores = np.concatenate(parts)
            decisions = decide(scores)
            for name in RESULT_FORMATS.values():  # the suffix picks run file, CSV table or JSON lines
                write_predictions(job.folder / name, arguments, scores, decisions)
            job.decisions = np.asarray(decisions, dtype=np.int8)  # for the counts the page charts
            job.status = "done"
        except (concurrent.futures.CancelledError, ModelStopped):  # the model thread stopped with the server
            job.status, job.error = "failed", "the server stopped before this job finished"
        except Exception as error:  # reported to the page; the server itself carries on
            job.status = "failed"
            job.error = f"{type(error).__name__}: {error}"
        finally:
            job.arguments, job.work = [], None  # the memory goes now, not when the job is evicted
            with self._lock:
                self._launch()
                self._evict()
