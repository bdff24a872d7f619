"""How predictions are laid out in each output format, written a chunk at a time.

- ``.tsv`` (and any other name): an official run file, ``Argument ID`` then the 20 categories
  as 0/1 (so it holds no kept columns);
- ``.csv``: the ID, the kept columns, 0/1 per category, then each category's probability;
- ``.jsonl``: one object per text: the ID, the kept columns, the detected categories and all
  probabilities;
- ``.parquet``: the columns of the CSV table, typed (IDs as text, decisions as int8,
  probabilities as float64, kept columns with the type they had in a Parquet input).

A chunk is encoded on its own (``write_part``), and parts are joined into the output
(``assemble``); the header is written once, there. The same parts always join into the same
bytes, which is what lets an interrupted prediction resume to an identical file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from valuedetect.data import ID_COLUMN, Argument, atomic_file, format_run
from valuedetect.errors import InputError
from valuedetect.records import as_cell, as_json_value
from valuedetect.taxonomy import CATEGORY_NAMES

FORMATS = ("tsv", "csv", "jsonl", "parquet")
PROBABILITY_COLUMNS = tuple(f"p({c})" for c in CATEGORY_NAMES)
SENTENCE_COLUMNS = ("sentence", "text", "sentence_id")
DOCUMENT_COLUMNS = ("sentences",)
DESCRIPTIONS = {"tsv": "a run file", "csv": "a CSV table", "jsonl": "JSON lines", "parquet": "a Parquet table"}


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return {".csv": "csv", ".jsonl": "jsonl"}.get(suffix, "tsv")


@dataclass(frozen=True)
class Layout:
    """An output's format and columns: the ID column's name and the kept columns, in order."""

    format: str
    id_name: str
    kept: tuple[str, ...] = ()
    # pyarrow types of the kept columns (a Parquet input's own types; None: written as text)
    kept_types: tuple[Any, ...] | None = None
    score_name: str = "p"  # the score columns are p(category) ...
    scores_key: str = "probabilities"  # ... and JSON lines hold them under this key

    @classmethod
    def for_output(cls, path: str | Path, id_column: str | None = None, kept: Sequence[str] = (),
                   kept_types: Sequence[Any] | None = None) -> Layout:
        """The layout an output file asks for; the ID column keeps the input's name where the
        format allows (a run file's is always ``Argument ID``)."""
        fmt = output_format(path)
        if fmt == "tsv" and kept:
            raise InputError("a .tsv output is an official run file (Argument ID and the 20 categories) and holds "
                             "no other columns; write .csv, .jsonl or .parquet to keep columns", path)
        default = "id" if fmt == "jsonl" else ID_COLUMN
        id_name = ID_COLUMN if fmt == "tsv" else (id_column or default)
        reserved = {id_name, *CATEGORY_NAMES, *PROBABILITY_COLUMNS, "detected", "probabilities", "max",
                    *SENTENCE_COLUMNS, *DOCUMENT_COLUMNS}
        clash = [name for name in kept if name in reserved]
        if clash:
            raise InputError(f"kept column {clash[0]!r} has the name of an output column; rename it in the input",
                             path)
        return cls(fmt, id_name, tuple(kept), tuple(kept_types) if kept_types is not None else None)

    def for_documents(self) -> Layout:
        """The document level of sentence mode: the kept columns, the number of sentences, each
        category's mean and share over the sentences, 0/1 (in any sentence), and the max."""
        import pyarrow as pa

        if self.format == "tsv":
            return self
        extra = ("sentences", *(f"mean({c})" for c in CATEGORY_NAMES), *(f"share({c})" for c in CATEGORY_NAMES))
        types = (*(self.kept_types or (None,) * len(self.kept)), pa.int64(), *(pa.float64(),) * 40)
        return Layout(self.format, self.id_name, (*self.kept, *extra), types, score_name="max", scores_key="max")

    def for_sentences(self) -> Layout:
        """The sentence level of sentence mode: each sentence's ID (``DOC:1``, ``DOC:2``, ...), its
        document's ID (in the document output's ID column), its number and its text."""
        import pyarrow as pa

        if self.format == "tsv":
            return Layout("tsv", ID_COLUMN)
        return Layout(self.format, "sentence_id", (self.id_name, "sentence", "text"),
                      (pa.string(), pa.int64(), pa.string()))

    @property
    def score_columns(self) -> tuple[str, ...]:
        return tuple(f"{self.score_name}({c})" for c in CATEGORY_NAMES)

    @property
    def part_suffix(self) -> str:
        return ".parquet" if self.format == "parquet" else ".part"

    def header(self) -> bytes:
        if self.format == "tsv":
            return format_run([], np.zeros((0, len(CATEGORY_NAMES)))).encode("utf-8")
        if self.format == "csv":
            return _csv_line([self.id_name, *self.kept, *CATEGORY_NAMES, *self.score_columns])
        return b""


def _csv_line(cells: Sequence[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def encode_rows(layout: Layout, ids: Sequence[str], kept: Sequence[Sequence[object]], scores: np.ndarray,
                decisions: np.ndarray) -> bytes:
    """The rows of a text format (no header) for one chunk."""
    decision_rows = np.asarray(decisions, dtype=np.int8).tolist()  # Python ints and floats: fast to format
    score_rows = np.asarray(scores, dtype=np.float64).tolist()
    if layout.format == "tsv":
        return "".join(f"{i}\t" + "\t".join("1" if x else "0" for x in d) + "\n"
                       for i, d in zip(ids, decision_rows, strict=True)).encode("utf-8")
    if layout.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for i, values, s, d in zip(ids, kept, score_rows, decision_rows, strict=True):
            writer.writerow([i, *(as_cell(v) for v in values), *d, *(f"{p:.5f}" for p in s)])
        return buffer.getvalue().encode("utf-8")
    if layout.format == "jsonl":
        lines = []
        for i, values, s, d in zip(ids, kept, score_rows, decision_rows, strict=True):
            record: dict[str, object] = {layout.id_name: i}
            record.update((k, as_json_value(v)) for k, v in zip(layout.kept, values, strict=True))
            record["detected"] = [c for c, x in zip(CATEGORY_NAMES, d, strict=True) if x]
            record[layout.scores_key] = dict(zip(CATEGORY_NAMES, (round(p, 5) for p in s), strict=True))
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return "".join(lines).encode("utf-8")
    raise ValueError(f"{layout.format} is not a text format")


def arrow_table(layout: Layout, ids: Sequence[str], kept: Sequence[Sequence[object]], scores: np.ndarray,
                decisions: np.ndarray) -> Any:
    """One chunk as a pyarrow table with the layout's fixed schema."""
    import pyarrow as pa

    columns: dict[str, Any] = {layout.id_name: pa.array(list(ids), type=pa.string())}
    for k, name in enumerate(layout.kept):
        values = [row[k] for row in kept]
        if layout.kept_types is not None and layout.kept_types[k] is not None:
            columns[name] = pa.array(values, type=layout.kept_types[k])
        else:
            columns[name] = pa.array([None if v is None else as_cell(v) for v in values], type=pa.string())
    decisions = np.asarray(decisions, dtype=np.int8).reshape(len(ids), len(CATEGORY_NAMES))
    scores = np.asarray(scores, dtype=np.float64).reshape(len(ids), len(CATEGORY_NAMES))
    for j, name in enumerate(CATEGORY_NAMES):
        columns[name] = pa.array(decisions[:, j], type=pa.int8())
    for j, name in enumerate(layout.score_columns):
        columns[name] = pa.array(scores[:, j], type=pa.float64())
    return pa.table(columns)


def write_chunk(handle: BinaryIO, layout: Layout, ids: Sequence[str], kept: Sequence[Sequence[object]],
                scores: np.ndarray, decisions: np.ndarray) -> None:
    """One chunk as a part file: rows of a text format, or a Parquet file of its own."""
    if layout.format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(arrow_table(layout, ids, kept, scores, decisions), handle)
    else:
        handle.write(encode_rows(layout, ids, kept, scores, decisions))


def write_part(path: Path, layout: Layout, ids: Sequence[str], kept: Sequence[Sequence[object]],
               scores: np.ndarray, decisions: np.ndarray) -> None:
    """A part file, written atomically: a part that exists is complete."""
    with atomic_file(path) as handle:
        write_chunk(handle, layout, ids, kept, scores, decisions)


def assemble(parts: Sequence[Path], output: Path, layout: Layout) -> None:
    """Join the parts, in order, into ``output``, atomically, one part in memory at a time."""
    with atomic_file(output) as handle:
        if layout.format == "parquet":
            import pyarrow.parquet as pq

            writer = None
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table)
            if writer is None:  # no texts: an empty table with the layout's columns
                empty = arrow_table(layout, [], [], np.zeros((0, 20)), np.zeros((0, 20)))
                writer = pq.ParquetWriter(handle, empty.schema)
                writer.write_table(empty)
            writer.close()
            return
        handle.write(layout.header())
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)


def write_predictions(path: str | Path, arguments: Sequence[Argument], scores: np.ndarray,
                      decisions: np.ndarray) -> str:
    """Write predictions that are in memory in the format the file name asks for, atomically;
    returns a word for what it wrote."""
    layout = Layout.for_output(path)
    ids = [a.id for a in arguments]
    kept: list[list[object]] = [[] for _ in ids]
    with atomic_file(path) as handle:
        if layout.format == "parquet":
            write_chunk(handle, layout, ids, kept, scores, decisions)
        else:
            handle.write(layout.header())
            handle.write(encode_rows(layout, ids, kept, scores, decisions))
    return DESCRIPTIONS[layout.format]


__all__ = ["DESCRIPTIONS", "FORMATS", "PROBABILITY_COLUMNS", "Layout", "arrow_table", "assemble", "encode_rows",
           "output_format", "write_part", "write_predictions"]
