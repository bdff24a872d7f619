"""Labelling a corpus on a Ray cluster: Ray Data reads the input, a pool of actors (each loads
the detector once) labels it batch by batch, and the results are written as the local path
writes them, or by Ray Data's own writers into a folder.

Why this shape: a million texts take hours on one CPU process; Ray Data is the standard engine
for batch inference with PyTorch models, streams blocks through the pool (memory stays bounded)
and runs the same code on a laptop (a local cluster started for the run) or on many machines
(``address="auto"`` after ``ray start --head``, or ``ray://HOST:10001``).

Two kinds of output:

- a file (``run.tsv``, ``out.csv``, ``out.jsonl``, ``out.parquet``): the labelled batches come
  back to the driver in input order and are written with the local path's writers
  (``valuedetect.outputs``), so the file equals the one ``valuedetect predict`` writes, texts
  numbered ``text-1, ...`` where the input has no ID, duplicate IDs refused;
- a folder (a path ending in ``/``, an existing folder, or a URI such as ``s3://bucket/out``):
  the workers write their blocks themselves with Ray Data's ``write_parquet`` / ``write_csv``
  / ``write_json``, nothing passes through the driver. Each file holds the columns of the CSV
  table (ID, kept columns, 0/1 per category, ``p(category)``); JSON lines are flat records
  (not the local ``detected`` / ``probabilities`` layout), CSV is written by pyarrow (every
  field quoted where pyarrow quotes, probabilities unrounded), and the rows are in no
  particular order across files, so every row needs an ID from the input.

What the local path does and this one does not: ``--resume`` (a stopped Ray run starts again),
``--unit sentence``, line numbers in errors (a worker sees records, not lines: an error names
the problem, the column and the ID), and the check of the whole input before any work (a bad
record stops the run when its block is reached; nothing is written to the output until then).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.corpus import IdRegistry, input_format
from valuedetect.data import atomic_file, check_output
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError
from valuedetect.outputs import DESCRIPTIONS, Layout, arrow_table, encode_rows
from valuedetect.records import DEFAULT_COLUMNS, Columns, as_json_value, kept_values, record_argument, record_id
from valuedetect.taxonomy import CATEGORY_NAMES

EXTRA = "pip install 'valuedetect[ray]'"
URI_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hdfs://", "local://")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to run. ``address``: None starts a local cluster for the run (all
    this machine's CPUs), ``"auto"`` joins the one ``ray start --head`` started here, or
    ``HOST:PORT`` / ``ray://HOST:10001``. ``actors``: how many detector copies label at once
    (default: the cluster's CPUs divided by ``cpus_per_actor``, less one CPU left for reading
    and writing, at least 1). ``batch_size``: texts per call of an actor."""

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise InputError(f"the Ray engine needs at least 1 actor, not {self.actors}")
        if self.cpus_per_actor <= 0:
            raise InputError(f"cpus per actor must be above 0, not {self.cpus_per_actor}")
        if self.batch_size < 1:
            raise InputError(f"the Ray batch size must be at least 1, not {self.batch_size}")


@dataclass
class RaySummary:
    output: Path | str
    texts: int | None  # None for a folder output: the workers wrote them, the driver did not count
    description: str
    actors: int


def require_ray() -> Any:
    """``ray``, or an error that names the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"the Ray engine needs Ray Data, which is not installed: {EXTRA} "
                         "(or pip install 'ray[data]')") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` (or a local cluster); shut down afterwards only when this
    call started the connection (a caller's own ``ray.init`` is left as it was)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        where = "a running Ray cluster" if address == "auto" else f"the Ray cluster at {address!r}"
        raise InputError(f"cannot reach {where} ({str(error).strip().splitlines()[0][:300]}); start one with "
                         "`ray start --head` and pass --ray-address auto on that machine, or the head's "
                         "HOST:PORT (or ray://HOST:10001) elsewhere; without --ray-address a local cluster is "
                         "started for the run") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _unreachable(address: str, reason: str) -> InputError:
    return InputError(f"cannot reach the Ray cluster at {address!r} ({reason}); is `ray start --head` running "
                      "there? On the head machine itself pass --ray-address auto; without --ray-address a local "
                      "cluster is started for the run")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing listens on within seconds (``ray.init`` would retry for minutes)."""
    import socket

    host_port = address.removeprefix("ray://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"a Ray address is HOST:PORT, ray://HOST:PORT or auto, not {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise _unreachable(address, error.strerror or str(error)) from None


def _is_folder_output(output: str | Path) -> bool:
    text = str(output)
    return text.startswith(URI_SCHEMES) or text.endswith(("/", os.sep)) or Path(text).is_dir()


def _folder_format(output: str | Path, output_format: str | None) -> str:
    fmt = (output_format or "parquet").lower()
    if fmt not in ("parquet", "csv", "jsonl"):
        raise InputError(f"a folder output is written as parquet, csv or jsonl, not {fmt!r}", output)
    return fmt


# Reading is I/O, not model work: read tasks reserve no CPU, so a pool holding every CPU (or one a
# failed run in the same session has not yet released) can never starve the reads it waits for.
READ_TASKS = {"num_cpus": 0}

# ----------------------------------------------------------------------------- reading

def _csv_header(path: Path, delimiter: str) -> list[str]:
    import csv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        if delimiter == ",":
            reader = csv.reader(handle, dialect="excel")
        else:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for fields in reader:
            if any(f.strip() for f in fields):
                return fields
    raise InputError("the file is empty", path)


def read_dataset(source: str | Path, columns: Columns = DEFAULT_COLUMNS) -> tuple[Any, str]:
    """The input as a Ray Dataset, and its kind (parquet, csv, tsv, jsonl, lines).

    CSV and TSV fields are read as text, as the local reader does (a header is read here for
    a local file; a folder or URI of CSV files gets pyarrow's types); JSON lines and text
    lines are read as lines and parsed by the workers with the local rules."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    text = str(source)
    local = not text.startswith(URI_SCHEMES)
    path = Path(text)
    if local and not path.exists():
        raise InputError("no such file", path)
    kind = input_format(text.rstrip("/"))
    if local and path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))}
        kind = input_format(f"x{next(iter(suffixes))}") if len(suffixes) == 1 else kind
    if kind == "parquet":
        return ray.data.read_parquet(text, ray_remote_args=READ_TASKS), kind
    if kind in ("csv", "tsv"):
        delimiter = "," if kind == "csv" else "\t"
        parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=kind == "csv",
                                   quote_char='"' if kind == "csv" else False)
        convert = pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False)
        if local and path.is_file():
            convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in _csv_header(path, delimiter)},
                                           strings_can_be_null=False, quoted_strings_can_be_null=False)
        return ray.data.read_csv(text, parse_options=parse, convert_options=convert,
                                 ray_remote_args=READ_TASKS), kind
    return ray.data.read_text(text, encoding="utf-8", ray_remote_args=READ_TASKS), kind


def _records(kind: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The records of a block as the local reader makes them, and how the format calls a column."""
    if kind == "jsonl":
        records = []
        for row in rows:
            line = row["text"]
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"not valid JSON ({error.msg}): {line[:80]!r}") from None
            if not isinstance(record, dict):
                raise InputError(f"expected a JSON object per line: {line[:80]!r}")
            records.append(record)
        return records, "field"
    if kind == "lines":
        return [{"text": row["text"].strip()} for row in rows if row["text"].strip()], "line"
    return rows, "column"


# ----------------------------------------------------------------------------- the actors

class Labeller:
    """One actor of the pool: loads the detector once, then labels block after block.

    ``detector`` is a saved folder (loaded on the worker: it must be there, as a shipped
    detector is wherever valuedetect is installed, or on a shared file system) or a Detector
    object (shipped to the workers through Ray's object store)."""

    def __init__(self, detector: str | Detector, kind: str, columns: Columns, layout: Layout, threads: int,
                 need_ids: bool = False):
        import torch

        torch.set_num_threads(max(1, threads))
        if isinstance(detector, str):
            from valuedetect.detectors import load_detector

            detector = load_detector(detector)
        self.detector, self.kind, self.columns, self.layout = detector, kind, columns, layout
        self.need_ids = need_ids

    def __call__(self, batch: Any) -> Any:
        records, noun = _records(self.kind, batch.to_pylist())
        columns, layout = self.columns, self.layout
        arguments, ids, kept = [], [], []
        for record in records:
            given = record_id(record, columns, noun)
            if given is None and self.need_ids:
                raise InputError("a record has no ID; to write into a folder the Ray engine needs an ID per row "
                                 "(--id-column; the workers cannot number rows across the file), or write a file")
            argument = record_argument(record, given or "?", columns, noun)
            arguments.append(argument)
            ids.append(given)
            values = kept_values(record, columns, noun)
            if layout.format == "jsonl":  # as JSON text, so the driver gets back exactly these values
                values = [json.dumps(as_json_value(v), ensure_ascii=False) for v in values]
            kept.append(values)
        if arguments:
            scores = self.detector.predict_proba(arguments)
            decisions = self.detector.decide(scores)
        else:
            scores = decisions = np.zeros((0, len(CATEGORY_NAMES)))
        return arrow_table(layout, ids, kept, scores, decisions)


def _cluster_cpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("CPU", 1))


def pool_size(ray: Any, settings: RaySettings) -> int:
    """Actors to start: as asked, else the CPUs left after one for reading and writing (a pool
    that takes every CPU leaves none for the read tasks, and the run stalls)."""
    if settings.actors is not None:
        return settings.actors
    return max(1, int((_cluster_cpus(ray) - 1) // settings.cpus_per_actor))


def _labelled(ray: Any, detector: Detector, detector_folder: Path | None, source: str | Path, columns: Columns,
              layout: Layout, settings: RaySettings, need_ids: bool) -> tuple[Any, int]:
    dataset, kind = read_dataset(source, columns)
    actors = pool_size(ray, settings)
    if actors * settings.cpus_per_actor > _cluster_cpus(ray):
        raise InputError(f"{actors} actors of {settings.cpus_per_actor:g} CPUs do not fit on a cluster of "
                         f"{_cluster_cpus(ray):g} CPUs; ask for fewer actors or fewer CPUs per actor "
                         "(leave one CPU for reading and writing)")
    shipped: str | Detector = str(detector_folder.resolve()) if detector_folder is not None else detector
    threads = max(1, int(settings.cpus_per_actor))
    labelled = dataset.map_batches(
        Labeller, fn_constructor_args=(shipped, kind, columns, layout, threads, need_ids),
        batch_size=settings.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=settings.cpus_per_actor, zero_copy_batch=True)
    return labelled, actors


def _quiet(ray: Any) -> None:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the file output is in input order
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _user_error(error: BaseException) -> InputError | None:
    """The InputError a worker raised, found inside Ray's wrappers."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, InputError):
            return current
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    text = str(error)
    marker = "InputError: "
    if marker in text:  # a cause Ray could only pass on as text
        return InputError(text.split(marker, 1)[1].strip().splitlines()[0])
    return None


# ----------------------------------------------------------------------------- writing

def _from_table(table: Any, layout: Layout) -> tuple[list[str | None], list[list[object]], np.ndarray, np.ndarray]:
    ids = table.column(layout.id_name).to_pylist()
    kept_columns = [table.column(name).to_pylist() for name in layout.kept]
    kept = [list(values) for values in zip(*kept_columns, strict=True)] if kept_columns else [[] for _ in ids]
    if layout.format == "jsonl":
        kept = [[json.loads(v) for v in row] for row in kept]
    decisions = np.column_stack([table.column(c).to_numpy() for c in CATEGORY_NAMES]) if ids else \
        np.zeros((0, len(CATEGORY_NAMES)), dtype=np.int8)
    scores = np.column_stack([table.column(c).to_numpy() for c in layout.score_columns]) if ids else \
        np.zeros((0, len(CATEGORY_NAMES)))
    return ids, kept, scores, decisions


def _write_file(labelled: Any, output: Path, layout: Layout, chunk_size: int, source: str | Path,
                progress: Progress | None) -> int:
    """Stream the labelled blocks, in input order, into one file written as the local path writes it."""
    registry = IdRegistry()
    count = 0
    writer = None
    # Closed explicitly: an error raised here (a duplicate ID) would otherwise keep the generator,
    # and with it Ray's executor and its actors, alive for as long as the traceback is held; the
    # next dataset's pool then waits for CPUs that never come back.
    batches = iter(labelled.iter_batches(batch_size=chunk_size, batch_format="pyarrow"))
    try:
        with atomic_file(output) as handle:
            handle.write(layout.header())
            for table in batches:
                ids, kept, scores, decisions = _from_table(table, layout)
                ids = [i if i is not None else f"text-{count + k + 1}" for k, i in enumerate(ids)]
                registry.add([(i, None) for i in ids], Path(str(source)),
                             "Argument ID" if layout.id_name == "Argument ID" else "id")
                count += len(ids)
                if layout.format == "parquet":
                    import pyarrow.parquet as pq

                    part = arrow_table(layout, ids, kept, scores, decisions)
                    if writer is None:
                        writer = pq.ParquetWriter(handle, part.schema)
                    writer.write_table(part)
                else:
                    handle.write(encode_rows(layout, ids, kept, scores, decisions))
                if progress:
                    progress("predicting", count, count)
            if count == 0:
                raise InputError("no texts found", Path(str(source)))
            if writer is not None:
                writer.close()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        registry.close()
    return count


def _write_folder(labelled: Any, output: str, fmt: str) -> None:
    """Each worker writes its blocks (Ray Data's writers): nothing passes through the driver."""
    if fmt == "parquet":
        labelled.write_parquet(output)
    elif fmt == "csv":
        labelled.write_csv(output)
    else:
        labelled.write_json(output)


def predict_dataset(
    detector: Detector,
    source: str | Path,
    output: str | Path,
    columns: Columns = DEFAULT_COLUMNS,
    settings: RaySettings | None = None,
    *,
    detector_folder: Path | None = None,
    output_format: str | None = None,
    chunk_size: int = 1000,
    progress: Progress | None = None,
) -> RaySummary:
    """Label every text of ``source`` into ``output`` on Ray (see the module's notes)."""
    settings = settings or RaySettings()
    require_ray()
    folder = _is_folder_output(output)
    text = str(source)
    if not text.startswith(URI_SCHEMES):
        source = Path(text)
        if not source.exists():
            raise InputError("no such file", source)
    if folder:
        fmt = _folder_format(output, output_format)
        # the columns of the CSV table (typed as in a Parquet file), for every format
        layout = Layout.for_output("out.parquet" if fmt == "parquet" else "out.csv", columns.id_column,
                                   columns.keep_columns, _kept_types(source, columns) if fmt == "parquet" else None)
    else:
        output = Path(output)
        if output_format is not None and output_format.lower() != layout_format(output):
            raise InputError(f"the output's name asks for {layout_format(output)}, not {output_format}; name a "
                             "folder (ending in /) to have Ray Data write the files", output)
        if isinstance(source, Path):
            check_output(output, [source])
        else:
            check_output(output)
        layout = Layout.for_output(output, columns.id_column, columns.keep_columns, _kept_types(source, columns))
    with connected(settings.address) as ray:
        _quiet(ray)
        labelled, actors = _labelled(ray, detector, detector_folder, source, columns, layout, settings, folder)
        texts: int | None = None
        try:
            if folder:
                _write_folder(labelled, str(output), fmt)
            else:
                texts = _write_file(labelled, Path(output), layout, chunk_size, source, progress)
        except InputError:
            raise
        except Exception as error:
            found = _user_error(error)
            if found is not None:
                raise InputError(found.problem, source if found.path is None else found.path, found.line) from None
            raise
    description = DESCRIPTIONS[layout.format] if not folder else f"a folder of {fmt} files"
    return RaySummary(output, texts, description, actors)


def layout_format(output: Path) -> str:
    from valuedetect.outputs import output_format

    return output_format(output)


def _kept_types(source: str | Path, columns: Columns) -> list[Any] | None:
    if isinstance(source, Path) and source.is_file():
        from valuedetect.predicting import _parquet_kept_types

        return _parquet_kept_types(source, columns)
    return None


__all__ = ["Labeller", "RaySettings", "RaySummary", "connected", "predict_dataset", "read_dataset", "require_ray"]
