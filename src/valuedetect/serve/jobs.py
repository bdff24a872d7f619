"""Uploaded files labelled in the background, with progress the page can poll.

The file is parsed before the upload request returns, so a malformed line is reported at
once (with its number); only the labelling runs in the background, in batches through the
model thread, so interactive requests interleave with a large upload instead of waiting.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from valuedetect.data import Argument, read_inputs
from valuedetect.errors import InputError
from valuedetect.predicting import write_predictions

RESULT_FORMATS = {"tsv": "results.tsv", "csv": "results.csv", "jsonl": "results.jsonl"}
BATCH = 128


@dataclass
class Job:
    id: str
    filename: str
    total: int
    folder: Path
    done: int = 0
    status: str = "running"
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


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
    def __init__(self, max_kept: int):
        self.max_kept = max_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._root = Path(tempfile.mkdtemp(prefix="valuedetect-jobs-"))

    def start(
        self,
        filename: str,
        arguments: Sequence[Argument],
        predict_proba: Callable[[Sequence[Argument]], np.ndarray],
        decide: Callable[[np.ndarray], np.ndarray],
    ) -> Job:
        job_id = uuid.uuid4().hex[:16]
        folder = self._root / job_id
        folder.mkdir(parents=True)  # the root again too, should the store have been closed before
        job = Job(id=job_id, filename=Path(filename).name, total=len(arguments), folder=folder)
        job.thread = threading.Thread(
            target=self._work, args=(job, list(arguments), predict_proba, decide), daemon=True, name=f"job-{job_id}"
        )
        with self._lock:
            self._jobs[job_id] = job
            self._evict()
        job.thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def result_path(self, job: Job, fmt: str) -> Path:
        return job.folder / RESULT_FORMATS[fmt]

    def close(self) -> None:
        """Forget every job and delete its files (the store stays usable)."""
        with self._lock:
            self._jobs.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond ``max_kept`` (running ones are kept)."""
        finished = [j for j in self._jobs.values() if j.status != "running"]
        while len(self._jobs) > self.max_kept and finished:
            old = finished.pop(0)
            self._jobs.pop(old.id, None)
            shutil.rmtree(old.folder, ignore_errors=True)

    @staticmethod
    def _work(job: Job, arguments: list[Argument], predict_proba: Callable[[Sequence[Argument]], np.ndarray],
              decide: Callable[[np.ndarray], np.ndarray]) -> None:
        try:
            parts = []
            for start in range(0, len(arguments), BATCH):
                parts.append(predict_proba(arguments[start : start + BATCH]))
                job.done = min(start + BATCH, len(arguments))
            scores = np.concatenate(parts)
            decisions = decide(scores)
            for name in RESULT_FORMATS.values():  # the suffix picks run file, CSV table or JSON lines
                write_predictions(job.folder / name, arguments, scores, decisions)
            job.status = "done"
        except Exception as error:  # reported to the page; the server itself carries on
            job.status = "failed"
            job.error = f"{type(error).__name__}: {error}"
