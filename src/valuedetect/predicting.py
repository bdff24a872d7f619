"""Labelling a file of any size: read, predict and write in chunks, resumable after any stop.

Why this shape: a million texts take hours on one machine, so memory must not grow with the
input and an interruption (Ctrl-C, a kill, a full disk) must not lose what was done.

1. The whole input is read once without predicting, so a malformed line at the end of the
   file is refused before any work, and the number of texts is known for the progress bar.
2. Each chunk's predictions go to a numbered part file in ``.OUTPUT.parts/`` beside the
   output, written atomically: a part that exists is complete.
3. Once every chunk is done the parts are joined into the output, atomically, and the folder
   is removed. Until then the output (if it existed) is left as it was.

``resume=True`` continues from the first missing part, after checking that the input, the
detector and the settings are those the parts were made with (``job.json``); the output is then
byte for byte the one an uninterrupted run writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from valuedetect.corpus import Chunk, input_format, iter_chunks
from valuedetect.data import atomic_write_json, check_output
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError
from valuedetect.fingerprint import changed_parts
from valuedetect.outputs import DESCRIPTIONS, Layout, assemble, write_part
from valuedetect.records import DEFAULT_COLUMNS, Columns

JOB_FILE = "job.json"
DEFAULT_CHUNK_SIZE = 1000
Progress = Callable[[str, int, int], None]


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``predict_file``: what was done is kept, and ``hint`` says how to go on."""

    def __init__(self, done: int, total: int, parts: Path):
        self.done, self.total, self.parts = done, total, parts
        super().__init__(self.hint)

    @property
    def hint(self) -> str:
        return (f"{self.done} of {self.total} texts are labelled and kept in {self.parts}; run the same "
                "`valuedetect predict` command with --resume to continue from there (the output is written "
                "once every text is labelled; an existing output is left as it was)")


@dataclass
class PredictSummary:
    output: Path
    texts: int
    resumed_from: int  # texts already labelled when this run started
    description: str  # "a run file", "a CSV table", ...


def parts_dir(output: Path) -> Path:
    """Where the parts of an unfinished prediction into ``output`` are kept."""
    return output.parent / f".{output.name}.parts"


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


def detector_identity(detector: Detector, folder: Path | None = None) -> dict[str, Any]:
    """What the predictions depend on: the saved folder's files (by sha256) when known, else the
    detector's type, settings and thresholds."""
    if folder is not None:
        from valuedetect.fingerprint import file_sha256

        return {"folder": str(folder.resolve()),
                "files": {str(p.relative_to(folder)): file_sha256(p)
                          for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".json", ".safetensors")}}
    from valuedetect.config import to_dict

    described = json.dumps({"type": detector.type_name, "config": to_dict(detector.config),
                            "thresholds": detector.thresholds.values if detector.thresholds else None},
                           sort_keys=True, default=str)
    return {"type": detector.type_name, "settings_sha256": hashlib.sha256(described.encode()).hexdigest()}


def _parquet_kept_types(source: Path, columns: Columns) -> list[Any] | None:
    """The pyarrow types of a Parquet input's kept columns, so the output keeps them."""
    if input_format(source) != "parquet" or not columns.keep_columns:
        return None
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(source).schema_arrow
    missing = [c for c in columns.keep_columns if c not in schema.names]
    if missing:
        raise InputError(f"no column {missing[0]!r} to keep; the file has: {', '.join(schema.names[:20])}", source)
    return [schema.field(c).type for c in columns.keep_columns]


def _count(source: Path, columns: Columns, chunk_size: int) -> int:
    """Read the whole input once, checking every record and ID, before any prediction."""
    return sum(len(chunk.arguments) for chunk in iter_chunks(source, columns, chunk_size))


def _done_parts(folder: Path, layout: Layout, chunks: int) -> int:
    done = 0
    while done < chunks and (folder / f"part-{done:06d}{layout.part_suffix}").exists():
        done += 1
    return done


@contextlib.contextmanager
def _writing(output: Path, folder: Path) -> Iterator[None]:
    """A write that fails (a full disk, a folder gone read-only) names the output and says that
    what was done is kept and how to go on."""
    try:
        yield
    except (OSError, InputError) as error:
        reason = error.problem if isinstance(error, InputError) else (error.strerror or str(error))
        raise InputError(f"cannot write the output ({reason}); the predictions made so far are kept in {folder}: "
                         "make room and run the same command with --resume to go on", output) from None


def predict_file(
    detector: Detector,
    source: str | Path,
    output: str | Path,
    columns: Columns = DEFAULT_COLUMNS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = False,
    progress: Progress | None = None,
    detector_folder: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Label every text of ``source`` into ``output`` (format by its suffix), chunk by chunk.

    An unfinished earlier run into the same output is refused unless ``resume`` is set; with
    it, the run continues where that one stopped.
    """
    source, output = Path(source), Path(output)
    say = log or (lambda _message: None)
    if chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, not {chunk_size}")
    check_output(output, [source])
    layout = Layout.for_output(output, columns.id_column, columns.keep_columns,
                               _parquet_kept_types(source, columns) if source.is_file() else None)
    folder = parts_dir(output)
    if folder.exists() and not resume:
        raise InputError(f"an unfinished prediction into it is kept in {folder}; pass --resume to continue it, "
                         "or delete that folder to start again", output)
    total = _count(source, columns, chunk_size)
    job = {
        "input": _file_identity(source),
        "detector": detector_identity(detector, detector_folder),
        "settings": {**asdict(columns), "chunk_size": chunk_size, "format": layout.format},
    }
    job = json.loads(json.dumps(job, default=str))
    if folder.exists():
        try:
            old = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # killed before job.json was written: no part can exist yet
        if old is not None:
            changes = changed_parts(old, job)
            if changes:
                raise InputError("cannot resume: the unfinished prediction was made with another "
                                 + "; ".join(changes) + f"; delete {folder} to start again", output)
    elif resume:
        say("nothing to resume: starting from the first text")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / JOB_FILE, job)
    chunks = -(-total // chunk_size)
    done = _done_parts(folder, layout, chunks)
    if done:
        say(f"resuming: {min(done * chunk_size, total)} of {total} texts were labelled before")
    labelled = min(done * chunk_size, total)
    try:
        if progress:
            progress("predicting", labelled, total)
        chunk: Chunk
        for chunk in iter_chunks(source, columns, chunk_size, check_ids=False):
            if chunk.index < done:
                continue
            scores = detector.predict_proba(chunk.arguments)
            decisions = detector.decide(scores)
            with _writing(output, folder):
                write_part(folder / f"part-{chunk.index:06d}{layout.part_suffix}", layout, chunk.ids, chunk.kept,
                           scores, decisions)
            labelled = chunk.start + len(chunk.arguments)
            if progress:
                progress("predicting", labelled, total)
        with _writing(output, folder):
            assemble([folder / f"part-{i:06d}{layout.part_suffix}" for i in range(chunks)], output, layout)
    except KeyboardInterrupt:
        raise PredictionInterrupted(labelled, total, folder) from None
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
    return PredictSummary(output, total, min(done * chunk_size, total), DESCRIPTIONS[layout.format])


__all__ = ["DEFAULT_CHUNK_SIZE", "PredictSummary", "PredictionInterrupted", "detector_identity", "parts_dir",
           "predict_file"]
