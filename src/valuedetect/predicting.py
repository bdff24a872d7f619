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
from valuedetect.data import atomic_write_json, check_output, same_file
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
    sentences: Path | None = None  # sentence mode: where the sentences went


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetFile(source).schema_arrow
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", source) from None
    missing = [c for c in columns.keep_columns if c not in schema.names]
    if missing:
        raise InputError(f"no column {missing[0]!r} to keep; the file has: {', '.join(schema.names[:20])}", source)
    return [schema.field(c).type for c in columns.keep_columns]


def _count(source: Path, columns: Columns, chunk_size: int) -> int:
    """Read the whole input once, checking every record and ID, before any prediction."""
    return sum(len(chunk.arguments) for chunk in iter_chunks(source, columns, chunk_size))


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


UNITS = ("argument", "sentence")


@dataclass(frozen=True)
class PredictSettings:
    """How a file is read and labelled. ``unit``: ``argument`` labels each record whole (an
    argument, or a free text); ``sentence`` splits each record's text into sentences, labels
    those and sums them up per document (``valuedetect.sentences``): the output then holds the
    documents and ``sentence_output`` (default: OUTPUT's name with ``.sentences`` before its
    suffix) the sentences."""

    columns: Columns = DEFAULT_COLUMNS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    unit: str = "argument"
    language: str = "en"
    sentence_output: Path | None = None

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise InputError(f"chunk size must be at least 1, not {self.chunk_size}")
        if self.unit not in UNITS:
            raise InputError(f"unit must be one of {', '.join(UNITS)}, not {self.unit!r}")

    def sentences_path(self, output: Path) -> Path:
        return self.sentence_output or output.with_name(f"{output.stem}.sentences{output.suffix}")


DEFAULT_SETTINGS = PredictSettings()


@dataclass
class _Outputs:
    """The files one job writes, each with its layout and its parts' name."""

    files: list[tuple[Path, Layout, str]]  # (output, layout, part prefix)

    def part(self, folder: Path, which: int, index: int) -> Path:
        _, layout, prefix = self.files[which]
        return folder / f"{prefix}-{index:06d}{layout.part_suffix}"

    def done(self, folder: Path, chunks: int) -> int:
        """Chunks whose every part exists (parts are atomic, the document part written last)."""
        done = 0
        while done < chunks and all(self.part(folder, w, done).exists() for w in range(len(self.files))):
            done += 1
        return done


def _layouts(source: Path, output: Path, settings: PredictSettings) -> _Outputs:
    columns = settings.columns
    layout = Layout.for_output(output, columns.id_column, columns.keep_columns,
                               _parquet_kept_types(source, columns) if source.is_file() else None)
    if settings.unit == "argument":
        return _Outputs([(output, layout, "part")])
    sentences = settings.sentences_path(output)
    return _Outputs([(sentences, layout.for_sentences(), "sentences"), (output, layout.for_documents(), "part")])


def _label_chunk(detector: Detector, chunk: Chunk, settings: PredictSettings, outputs: _Outputs, folder: Path,
                 where: Path) -> None:
    """Label one chunk and write its parts."""
    if settings.unit == "argument":
        scores = detector.predict_proba(chunk.arguments)
        with _writing(where, folder):
            write_part(outputs.part(folder, 0, chunk.index), outputs.files[0][1], chunk.ids, chunk.kept, scores,
                       detector.decide(scores))
        return
    from valuedetect.sentences import aggregate, expand

    sentences, owners = expand(chunk.arguments, settings.language)
    scores = detector.predict_proba(sentences)
    decisions = detector.decide(scores)
    documents = aggregate(scores, decisions, owners, len(chunk.arguments))
    numbers = [int(a.id.rsplit(":", 1)[1]) for a in sentences]
    sentence_kept = [[chunk.arguments[o].id, k, a.premise] for o, k, a in zip(owners, numbers, sentences, strict=True)]
    document_kept = [[*kept, int(n), *mean.tolist(), *share.tolist()] for kept, n, mean, share in
                     zip(chunk.kept, documents.sentences, documents.mean, documents.share, strict=True)]
    with _writing(where, folder):
        write_part(outputs.part(folder, 0, chunk.index), outputs.files[0][1], [a.id for a in sentences],
                   sentence_kept, scores, decisions)
        write_part(outputs.part(folder, 1, chunk.index), outputs.files[1][1], chunk.ids, document_kept,
                   documents.max, documents.detected)


def predict_file(
    detector: Detector,
    source: str | Path,
    output: str | Path,
    settings: PredictSettings = DEFAULT_SETTINGS,
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
    columns, chunk_size = settings.columns, settings.chunk_size
    outputs = _layouts(source, output, settings)
    for path, _, _ in outputs.files:
        check_output(path, [source])
    if settings.unit == "sentence" and same_file(outputs.files[0][0], output):
        raise InputError("the sentence output must be another file than the document output", output)
    folder = parts_dir(output)
    if folder.exists() and not resume:
        raise InputError(f"an unfinished prediction into it is kept in {folder}; pass --resume to continue it, "
                         "or delete that folder to start again", output)
    total = _count(source, columns, chunk_size)
    job = {
        "input": _file_identity(source),
        "detector": detector_identity(detector, detector_folder),
        "settings": {**asdict(columns), "chunk_size": chunk_size, "unit": settings.unit,
                     "language": settings.language, "outputs": [str(path) for path, _, _ in outputs.files],
                     "format": outputs.files[-1][1].format},
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
    done = outputs.done(folder, chunks)
    labelled = min(done * chunk_size, total)
    if done:
        say(f"resuming: {labelled} of {total} texts were labelled before")
    try:
        if progress:
            progress("predicting", labelled, total)
        for chunk in iter_chunks(source, columns, chunk_size, check_ids=False):
            if chunk.index < done:
                continue
            _label_chunk(detector, chunk, settings, outputs, folder, output)
            labelled = chunk.start + len(chunk.arguments)
            if progress:
                progress("predicting", labelled, total)
        for which, (path, layout, _) in enumerate(outputs.files):
            with _writing(path, folder):
                assemble([outputs.part(folder, which, i) for i in range(chunks)], path, layout)
    except KeyboardInterrupt:
        raise PredictionInterrupted(labelled, total, folder) from None
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
    return PredictSummary(output, total, min(done * chunk_size, total), DESCRIPTIONS[outputs.files[-1][1].format],
                          outputs.files[0][0] if settings.unit == "sentence" else None)


__all__ = ["DEFAULT_CHUNK_SIZE", "UNITS", "PredictSettings", "PredictSummary", "PredictionInterrupted",
           "detector_identity", "parts_dir", "predict_file"]
