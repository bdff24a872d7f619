"""How often each category was detected across an uploaded file, overall or per group (a
column such as speaker or party): what the page charts, computed here so it is tested in Python
and the page only draws.

A column can group the file when it holds between 2 and ``MAX_GROUPS`` distinct values and some
value twice (an ID column, or free text, holds one per row and groups nothing); its values are kept with the job
as text, as the CSV output writes them (a missing value is the empty group ``""``).
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from valuedetect.records import as_cell
from valuedetect.taxonomy import CATEGORY_NAMES

MAX_GROUPS = 50
WHOLE_FILE = "all texts"  # the one series without a group column
# Columns that hold what is labelled, not a group.
TEXT_COLUMNS = {"Premise", "premise", "text"}


def group_columns(data: bytes, filename: str, count: int, text_column: str = "text") -> dict[str, list[str]]:
    """The columns of an upload that can group it, each with one value per record, in order.

    ``count`` is the number of texts the upload was parsed into: a file whose records do not
    match it one to one (there should be none) offers no groups rather than wrong ones."""
    from valuedetect.corpus import iter_records

    suffix = Path(filename).suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        return {}
    with tempfile.TemporaryDirectory(prefix="valuedetect-groups-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        values: dict[str, list[str]] = {}
        distinct: dict[str, set[str]] = {}
        rows = 0
        for _, record, _ in iter_records(path):
            for name, value in record.items():
                if name in TEXT_COLUMNS or name == text_column:
                    continue
                seen = distinct.setdefault(name, set())
                if len(seen) > MAX_GROUPS:
                    continue  # too many already: stop keeping its values
                cell = as_cell(value)
                seen.add(cell)
                values.setdefault(name, [""] * rows).append(cell)
            rows += 1
            for column in values.values():  # a JSON line without the field: the empty group
                if len(column) < rows:
                    column.append("")
    if rows != count:
        return {}
    # A column with a value per row (an ID) puts each text in a group of its own: no grouping either.
    return {name: column for name, column in values.items() if 2 <= len(distinct[name]) <= min(MAX_GROUPS, rows - 1)}


@dataclass
class Series:
    name: str
    texts: int
    detected: list[int]  # texts in which each category was detected, in the official order


def category_counts(decisions: np.ndarray, groups: list[str] | None = None) -> list[Series]:
    """One series for the whole file, or one per group (largest first, then by name)."""
    decisions = np.asarray(decisions, dtype=np.int64).reshape(-1, len(CATEGORY_NAMES))
    if groups is None:
        return [Series(WHOLE_FILE, len(decisions), decisions.sum(axis=0).tolist())]
    labels = np.asarray(groups, dtype=object)
    if len(labels) != len(decisions):
        raise ValueError(f"{len(labels)} group values for {len(decisions)} texts")
    series = [Series(str(name), int((labels == name).sum()), decisions[labels == name].sum(axis=0).tolist())
              for name in dict.fromkeys(groups)]
    return sorted(series, key=lambda s: (-s.texts, s.name))


def counts_csv(series: list[Series], group: str | None) -> str:
    """A tidy table: one row per group and category, with the count and the share of the group's texts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([group or "group", "texts", "category", "detected", "share"])
    for s in series:
        for category, detected in zip(CATEGORY_NAMES, s.detected, strict=True):
            writer.writerow([s.name, s.texts, category, detected, f"{detected / s.texts:.5f}" if s.texts else "0"])
    return buffer.getvalue()


__all__ = ["MAX_GROUPS", "WHOLE_FILE", "Series", "category_counts", "counts_csv", "group_columns"]
