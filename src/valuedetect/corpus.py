"""Reading texts to label as a stream of chunks, so a file of any size fits in bounded memory.

Formats, chosen by the file name: ``.parquet`` (pyarrow, read by row groups), ``.jsonl`` (one
JSON object per line), ``.csv`` (quoted as spreadsheets write it), ``.tsv`` (no quoting, as the
official data; an arguments file when it has Argument ID, Conclusion, Stance and Premise) and
anything else as one text per non-empty line. Every record becomes an Argument through
``records.record_argument``; a malformed one stops the reading with its file, line (a Parquet
file: row) and column.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from valuedetect.data import ARGUMENT_COLUMNS, Argument, check_text, excerpt
from valuedetect.errors import InputError
from valuedetect.records import DEFAULT_COLUMNS, Columns, kept_values, record_argument, suggest

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Chunk:
    """Consecutive records of the input: their arguments and the values of the kept columns."""

    index: int  # 0, 1, ... in input order
    start: int  # number of records before this chunk
    arguments: list[Argument] = field(default_factory=list)
    kept: list[list[object]] = field(default_factory=list)  # one list of values per argument

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.arguments]


def input_format(path: str | Path) -> str:
    """parquet | jsonl | csv | tsv | lines, from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(suffix, "lines")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) of a UTF-8 file, one at a time; a BOM is
    dropped and a line that is not UTF-8 is refused with its number."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"not valid UTF-8 ({error.reason})", path, number) from None
            yield number, text.rstrip("\n").removesuffix("\r")


class IdRegistry:
    """The IDs seen so far, to refuse a duplicate with the line it was first seen on.

    Kept in a temporary SQLite file, not a Python set, so a million IDs cost no memory."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="valuedetect-ids-")
        self._db = sqlite3.connect(Path(self._folder.name) / "ids.sqlite")
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    def add(self, ids: list[tuple[str, int | None]], path: Path, what: str = "id") -> None:
        """Record a chunk's (id, line) pairs; the first duplicate raises, naming both lines."""
        seen: dict[str, int | None] = {}
        for arg_id, line in ids:
            if arg_id in seen:
                self._duplicate(arg_id, line, seen[arg_id], path, what)
            seen[arg_id] = line
        found = self._db.execute(
            f"SELECT id, line FROM ids WHERE id IN ({','.join('?' * len(seen))})", list(seen)).fetchall() \
            if seen else []
        if found:
            arg_id, first = found[0]
            self._duplicate(arg_id, seen[arg_id], first, path, what)
        self._db.executemany("INSERT INTO ids VALUES (?, ?)", seen.items())

    @staticmethod
    def _duplicate(arg_id: str, line: int | None, first: int | None, path: Path, what: str) -> None:
        where = f" (first seen on line {first})" if first is not None else ""
        raise InputError(f"duplicate {what} {excerpt(arg_id)}{where}", path, line)

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, record) of a CSV (quoted, excel dialect) or TSV (no quoting) file. A quoted CSV
    field may hold line breaks; a record is numbered by the line it starts on."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # texts are checked against our own limit
    lines = (text + "\n" for _, text in _lines(path))
    if delimiter == ",":
        reader = csv.reader(lines, dialect="excel", strict=True)
        kind = "CSV"
    else:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        kind = "TSV"
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            if header is None:
                header = fields
                if not any(h.strip() for h in header):
                    header = None  # blank lines before the header
                else:
                    seen = set()
                    for name in header:
                        if name in seen:
                            raise InputError(f"column {excerpt(name)} appears twice in the header", path, start)
                        seen.add(name)
            elif any(f.strip() for f in fields):
                if len(fields) != len(header):
                    raise InputError(f"expected {len(header)} fields as in the header, found {len(fields)}",
                                     path, start)
                yield start, dict(zip(header, fields, strict=True))
            start = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"malformed {kind} ({error})", path, reader.line_num) from None
    if header is None:
        raise InputError("the file is empty", path)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    empty = True
    for number, line in _lines(path):
        if not line.strip():
            continue
        empty = False
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON ({error.msg})", path, number) from None
        if not isinstance(record, dict):
            raise InputError("expected a JSON object per line", path, number)
        yield number, record
    if empty:
        raise InputError("the file is empty", path)


def _text_lines(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    empty = True
    for number, line in _lines(path):
        if line.strip():
            empty = False
            yield number, {"text": line.strip()}
    if empty:
        raise InputError("the file is empty", path)


def _parquet_records(path: Path, columns: Columns, batch_rows: int) -> Iterator[tuple[int, dict[str, object]]]:
    """(row, record) of a Parquet file, read batch by batch, only the columns that are used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"not a readable Parquet file ({error})", path) from None
    names = handle.schema_arrow.names
    wanted_text = columns.premise_column or columns.text_column
    candidates = [columns.premise_column] if columns.premise_column else ["Premise", "premise", columns.text_column]
    if not any(name in names for name in candidates):  # said once, with the file's columns
        shown = ", ".join(repr(n) for n in names[:20])
        raise InputError(f"no {wanted_text!r} column{suggest(wanted_text, names)}; the file has: {shown}; "
                         "name the text column with --text-column (text_column= in Python)", path)
    wanted = {columns.text_column, columns.id_column, columns.premise_column, columns.conclusion_column,
              columns.stance_column, *columns.keep_columns, "Argument ID", "id", "Premise", "premise",
              "Conclusion", "conclusion", "Stance", "stance"}
    read = [n for n in names if n in wanted]
    row = 0
    for batch in handle.iter_batches(batch_size=batch_rows, columns=read or None):
        values = batch.to_pydict()
        for i in range(batch.num_rows):
            row += 1
            yield row, {name: values[name][i] for name in read}
    if row == 0:
        raise InputError("the file has no rows", path)


def _is_arguments_tsv(path: Path) -> bool:
    for _, line in _lines(path):
        if line.strip():
            return all(c in line.split("\t") for c in ARGUMENT_COLUMNS)
    return False


def iter_records(path: str | Path, columns: Columns = DEFAULT_COLUMNS, batch_rows: int = 1000
                 ) -> Iterator[tuple[int, dict[str, object], str]]:
    """(line or row, record, how the format calls a column) for every record of the file."""
    path = Path(path)
    _check_file(path)
    kind = input_format(path)
    if kind == "parquet":
        for row, record in _parquet_records(path, columns, batch_rows):
            yield row, record, "column"
    elif kind == "jsonl":
        for line, record in _jsonl_records(path):
            yield line, record, "field"
    elif kind in ("csv", "tsv"):
        for line, record in _csv_records(path, "," if kind == "csv" else "\t"):
            yield line, record, "column"
    else:
        for line, record in _text_lines(path):
            yield line, record, "line"


def _arguments_row(record: dict[str, object], path: Path, line: int) -> Argument:
    """A row of an arguments file, held to that file's rules: every field there, a known stance."""
    arg_id = str(record["Argument ID"]).strip()
    if not arg_id:
        raise InputError("empty Argument ID", path, line)
    check_text(arg_id, "the Argument ID", path, line)
    stance_raw = str(record["Stance"])
    if stance_raw.strip().lower() not in ("in favor of", "in favour of", "against"):
        raise InputError(f"unknown stance {excerpt(stance_raw)}; expected 'in favor of' or 'against'", path, line)
    premise = check_text(str(record["Premise"]), "the Premise", path, line)
    conclusion = check_text(str(record["Conclusion"]), "the Conclusion", path, line)
    if not premise.strip():
        raise InputError(f"empty Premise for argument {arg_id!r}", path, line)
    if not conclusion.strip():
        raise InputError(f"empty Conclusion for argument {arg_id!r}", path, line)
    stance = "in favor of" if stance_raw.strip().lower() != "against" else "against"
    return Argument(id=arg_id, premise=premise, conclusion=conclusion, stance=stance)


def iter_chunks(path: str | Path, columns: Columns = DEFAULT_COLUMNS, chunk_size: int = 1000,
                check_ids: bool = True) -> Iterator[Chunk]:
    """The file's arguments in chunks of ``chunk_size``, checked as they are read: a bad record
    raises when its chunk is reached, and (``check_ids``) no ID may appear twice in the file."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    path = Path(path)
    strict_arguments = input_format(path) == "tsv" and path.is_file() and _is_arguments_tsv(path)
    registry = IdRegistry() if check_ids else None
    try:
        chunk = Chunk(index=0, start=0)
        lines: list[tuple[str, int | None]] = []
        count = 0
        for line, record, noun in iter_records(path, columns, batch_rows=chunk_size):
            default = f"text-{count + 1}"
            if strict_arguments and columns.id_column is None:
                argument = _arguments_row(record, path, line)
            else:
                argument = record_argument(record, default, columns, noun, path, line)
            chunk.arguments.append(argument)
            chunk.kept.append(kept_values(record, columns, noun, path, line))
            lines.append((argument.id, line))
            count += 1
            if len(chunk.arguments) == chunk_size:
                if registry is not None:
                    registry.add(lines, path, "Argument ID" if strict_arguments else "id")
                yield chunk
                chunk, lines = Chunk(index=chunk.index + 1, start=count), []
        if chunk.arguments:
            if registry is not None:
                registry.add(lines, path, "Argument ID" if strict_arguments else "id")
            yield chunk
        if count == 0:
            raise InputError("no texts found", path)
    finally:
        if registry is not None:
            registry.close()


def read_all(path: str | Path, columns: Columns = DEFAULT_COLUMNS) -> list[Argument]:
    """Every argument of a file at once: for the inputs that fit in memory (uploads, tests)."""
    return [a for chunk in iter_chunks(path, columns, chunk_size=10_000) for a in chunk.arguments]


__all__ = ["Chunk", "IdRegistry", "input_format", "iter_chunks", "iter_records", "read_all"]
