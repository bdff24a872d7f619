"""Python inputs to arguments, and scores back to DataFrames: what lets ``det.predict`` take a
string, a list, Arguments, a Split or a DataFrame, and answer with the input's own index.

Records (DataFrame rows, dicts) are read by ``records.record_argument``, the rule every file
format uses, so a DataFrame and the CSV it came from are read alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from valuedetect.data import ID_COLUMN, Argument, Split, check_text
from valuedetect.errors import InputError
from valuedetect.records import DEFAULT_COLUMNS, Columns, record_argument
from valuedetect.taxonomy import CATEGORY_NAMES

if TYPE_CHECKING:
    import pandas as pd


def _text_argument(text: str, position: int) -> Argument:
    name = f"text-{position + 1}"
    check_text(text, name)
    if not text.strip():
        raise InputError(f"{name} is empty")
    return Argument(id=name, premise=text)


def _frame_arguments(frame: pd.DataFrame, columns: Columns) -> tuple[list[Argument], pd.Index]:
    import pandas as pd

    if columns.id_column is not None and columns.id_column not in frame.columns:
        raise InputError(f"the DataFrame has no column {columns.id_column!r} (id_column)")
    arguments = []
    labels = frame.index
    for position, (label, record) in enumerate(zip(labels, frame.to_dict("records"), strict=True)):
        try:
            arguments.append(record_argument(record, str(label), columns, "column"))
        except InputError as error:
            raise InputError(f"DataFrame row {position} (index {label!r}): {error.problem}") from None
    if columns.id_column is not None:
        index = pd.Index(frame[columns.id_column].to_numpy(), name=columns.id_column)
        arguments = [Argument(id=str(i), premise=a.premise, conclusion=a.conclusion, stance=a.stance)
                     for i, a in zip(index, arguments, strict=True)]
    else:
        index = frame.index
    if not index.is_unique:
        duplicated = index[index.duplicated()][0]
        raise InputError(f"the DataFrame's ids are not unique: {duplicated!r} appears twice")
    return arguments, index


def to_arguments(x: Any, columns: Columns = DEFAULT_COLUMNS) -> tuple[list[Argument], pd.Index]:
    """The arguments ``x`` holds and the index its results get.

    - a string: one free text (index 0);
    - an Argument, or a Split: indexed by Argument ID;
    - a DataFrame: its rows (a ``text`` column, or ``premise``/``conclusion``/``stance``; names in
      ``columns``), indexed as the DataFrame is, or by ``columns.id_column``;
    - a Series or 1-D array of texts: indexed as the Series (or 0, 1, ...);
    - a list of strings, Arguments or dicts (records): indexed by Argument ID when every item is
      an Argument, else 0, 1, ...
    """
    import pandas as pd

    if isinstance(x, str):
        return [_text_argument(x, 0)], pd.RangeIndex(1)
    if isinstance(x, Argument):
        x = [x]
    if isinstance(x, Split):
        x = x.arguments
    if isinstance(x, pd.DataFrame):
        return _frame_arguments(x, columns)
    if isinstance(x, pd.Series):
        arguments = [_text_argument(str(v), i) if isinstance(v, str) else _item(v, i, columns)
                     for i, v in enumerate(x.tolist())]
        return arguments, x.index
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise InputError(f"expected texts (a 1-D array), got an array of shape {x.shape}")
        x = x.tolist()
    if isinstance(x, Mapping):
        x = [x]
    if not isinstance(x, Iterable):
        raise InputError(f"expected a text, texts, Arguments or a DataFrame, got {type(x).__name__}")
    items = list(x)
    arguments = [_item(item, i, columns) for i, item in enumerate(items)]
    if items and all(isinstance(item, Argument) for item in items):
        ids = [a.id for a in arguments]
        if len(set(ids)) != len(ids):
            raise InputError("two Arguments share an id; ids must be unique")
        return arguments, pd.Index(ids, name=ID_COLUMN)
    return arguments, pd.RangeIndex(len(arguments))


def _item(item: object, position: int, columns: Columns) -> Argument:
    if isinstance(item, Argument):
        return item
    if isinstance(item, str):
        return _text_argument(item, position)
    if isinstance(item, Mapping):
        try:
            return record_argument(item, f"text-{position + 1}", columns, "key")
        except InputError as error:
            raise InputError(f"item {position}: {error.problem}") from None
    raise InputError(f"item {position} is a {type(item).__name__}; expected a text, an Argument or a dict")


def score_frame(values: np.ndarray, index: pd.Index, dtype: Any = np.float64,
                columns: Sequence[str] = CATEGORY_NAMES) -> pd.DataFrame:
    """``[n, 20]`` values as a DataFrame: one column per category (or per level-1 value), the
    input's index."""
    import pandas as pd

    return pd.DataFrame(np.asarray(values, dtype=dtype), index=index, columns=list(columns))


def label_matrix(frame: Any, what: str) -> tuple[list[str], np.ndarray]:
    """IDs and a 0/1 matrix from a DataFrame with the 20 category columns (a ``predict`` result,
    or labels), so runs and labels in memory are scored like run files."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"the {what} must be a DataFrame or a file, not {type(frame).__name__}")
    missing = [c for c in CATEGORY_NAMES if c not in frame.columns]
    if missing:
        raise InputError(f"the {what} has no column {missing[0]!r} (it needs the 20 category columns)")
    values = frame[list(CATEGORY_NAMES)].to_numpy()
    if not np.isin(values, (0, 1)).all():
        raise InputError(f"the {what} holds values other than 0 and 1 (probabilities? use predict, not "
                         "predict_proba)")
    ids = [str(i) for i in frame.index]
    if len(set(ids)) != len(ids):
        raise InputError(f"the {what}'s ids (its index) are not unique")
    return ids, values.astype(np.int8)


__all__ = ["label_matrix", "score_frame", "to_arguments"]
