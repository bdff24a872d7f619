"""One record (a CSV or TSV row, a JSON object, a Parquet or DataFrame row) -> one Argument.

Every input format goes through ``record_argument``, so a spreadsheet, a JSON lines file, a
Parquet file and a DataFrame are read by the same rules and refused with the same messages
(file, line or row, column, problem).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valuedetect.data import Argument, check_text, excerpt
from valuedetect.errors import InputError

# The columns read when no name is given, first match wins (the official data's spelling first).
DEFAULT_ID_COLUMNS = ("Argument ID", "id")
DEFAULT_PREMISE_COLUMNS = ("Premise", "premise")
DEFAULT_CONCLUSION_COLUMNS = ("Conclusion", "conclusion")
DEFAULT_STANCE_COLUMNS = ("Stance", "stance")
STANCE_ALIASES = {"in favor of": "in favor of", "in favour of": "in favor of", "against": "against"}


@dataclass(frozen=True)
class Columns:
    """Which input columns hold what. People's spreadsheets name their columns their own way,
    so every name can be given; ``None`` means the usual names (see the DEFAULT_* tuples)."""

    text_column: str = "text"
    id_column: str | None = None
    premise_column: str | None = None
    conclusion_column: str | None = None
    stance_column: str | None = None
    keep_columns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_columns", tuple(self.keep_columns))
        if self.id_column is not None and self.id_column in self.keep_columns:
            raise InputError(f"column {self.id_column!r} is the id column; it is kept anyway, do not list it in "
                             "keep_columns")
        if len(set(self.keep_columns)) != len(self.keep_columns):
            raise InputError("keep_columns names a column twice")


DEFAULT_COLUMNS = Columns()


def is_missing(value: object) -> bool:
    """None, or a missing value as pandas and Parquet write it (NaN, NaT, pd.NA)."""
    if value is None:
        return True
    if isinstance(value, str):
        return False
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' missing values, without importing pandas


def _pick(record: Mapping[str, object], given: str | None, defaults: tuple[str, ...], noun: str,
          path: Path | None, line: int | None) -> str | None:
    """The key of ``record`` to read: the given column (which must exist) or the first default present."""
    if given is not None:
        if given not in record:
            raise InputError(f"no {noun} {given!r}{suggest(given, record)}", path, line)
        return given
    return next((name for name in defaults if name in record), None)


def suggest(name: str, options: object) -> str:
    """' (did you mean ...?)' for a near miss among ``options``, else ''."""
    names = [str(o) for o in options if len(str(o)) <= 200]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(name[:200], names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _text(value: object, noun: str, name: str, path: Path | None, line: int | None) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, dict | list):
        raise InputError(f"{noun} {name!r} holds a JSON {type(value).__name__}, expected text", path, line)
    return check_text(str(value), f"{noun} {name!r}", path, line)


def record_id(record: Mapping[str, object], columns: Columns, noun: str = "field", path: Path | None = None,
              line: int | None = None) -> str | None:
    """The record's ID as given in the input, or None when it has none (the caller numbers it)."""
    key = _pick(record, columns.id_column, DEFAULT_ID_COLUMNS, noun, path, line)
    if key is None:
        return None
    value = record[key]
    if is_missing(value) or not str(value).strip():
        if columns.id_column is None:
            return None  # a blank optional id: numbered like a row without one
        raise InputError(f"empty id in {noun} {key!r}", path, line)
    text = str(value)
    if any(c in text for c in "\t\r\n"):
        raise InputError(f"id {excerpt(text)} holds a tab or line break, which no run file can hold", path, line)
    check_text(text, "the id", path, line)
    return text.strip() if key == "Argument ID" else text


def record_argument(record: Mapping[str, object], default_id: str, columns: Columns = DEFAULT_COLUMNS,
                    noun: str = "field", path: str | Path | None = None, line: int | None = None) -> Argument:
    """The argument a record holds: premise (+ conclusion, stance) when it has a premise column,
    else free text from the text column. ``noun`` is how the format calls a column ("field" in
    JSON, "column" in a table); ``path`` and ``line`` (or row) go into every error."""
    where = path if path is None or isinstance(path, Path) else Path(path)
    key = _pick(record, columns.premise_column, DEFAULT_PREMISE_COLUMNS, noun, where, line)
    if key is not None:
        text = _text(record[key], noun, key, where, line)
        stance_key = _pick(record, columns.stance_column, DEFAULT_STANCE_COLUMNS, noun, where, line)
        stance = None
        stance_raw = record[stance_key] if stance_key is not None else None
        if not is_missing(stance_raw) and str(stance_raw).strip():
            stance = STANCE_ALIASES.get(str(stance_raw).strip().lower())
            if stance is None:
                raise InputError(f"unknown stance {excerpt(str(stance_raw))} in {noun} {stance_key!r}; expected "
                                 "'in favor of' or 'against'", where, line)
        conclusion_key = _pick(record, columns.conclusion_column, DEFAULT_CONCLUSION_COLUMNS, noun, where, line)
        conclusion = "" if conclusion_key is None else _text(record[conclusion_key], noun, conclusion_key, where,
                                                             line)
    else:
        if columns.text_column not in record:
            raise InputError(
                f"no {excerpt(columns.text_column)} {noun}{suggest(columns.text_column, record)} (and no 'premise'); "
                "name the text column with --text-column (text_column= in Python)", where, line)
        key = columns.text_column
        text, conclusion, stance = _text(record[key], noun, key, where, line), "", None
    if not text.strip():
        raise InputError(f"empty text ({noun} {key!r})", where, line)
    given = record_id(record, columns, noun, where, line)
    return Argument(id=given if given is not None else default_id, premise=text, conclusion=conclusion,
                    stance=stance)


def kept_values(record: Mapping[str, object], columns: Columns, noun: str = "field", path: str | Path | None = None,
                line: int | None = None) -> list[object]:
    """The values of the columns to copy to the output, in the order they were named."""
    out = []
    for name in columns.keep_columns:
        if name not in record:
            raise InputError(f"no {noun} {name!r} to keep{suggest(name, record)}", path, line)
        out.append(record[name])
    return out


def as_cell(value: object) -> str:
    """A kept value as table text: strings as they are, missing as empty, anything else as JSON."""
    if is_missing(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def as_json_value(value: object) -> Any:
    """A kept value as JSON can hold it (a date becomes its ISO text, a missing value null)."""
    if is_missing(value):
        return None
    if isinstance(value, str | bool | int | float | dict | list):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


__all__ = ["DEFAULT_COLUMNS", "Columns", "as_cell", "as_json_value", "is_missing", "kept_values", "record_argument",
           "record_id"]
