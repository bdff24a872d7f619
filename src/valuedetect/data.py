"""Arguments, labels and run files: reading them strictly, writing them atomically.

Every reader names the file, the line and the problem when input is malformed, because the
people who feed it their own spreadsheets should not have to read a traceback. TSV files are
read with no quoting, as the official data and evaluator do.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from valuedetect.errors import InputError
from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES

ID_COLUMN = "Argument ID"
ARGUMENT_COLUMNS = (ID_COLUMN, "Conclusion", "Stance", "Premise")
STANCES = ("in favor of", "against")
_STANCE_ALIASES = {"in favor of": "in favor of", "in favour of": "in favor of", "against": "against"}
SPLITS = ("training", "validation", "test")
# The one limit on a text (a premise, a conclusion, a text field or line) in every input format.
# Encoders read 128-512 tokens; 100,000 characters is some 20,000 words, so nothing a detector
# reads is lost, while a runaway line (a whole file without line breaks) is refused at once
# instead of being tokenised into gigabytes.
MAX_TEXT_CHARS = 100_000
EXCERPT_CHARS = 40
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Argument:
    """One argument. Free text has only a premise: no conclusion and no stance."""

    id: str
    premise: str
    conclusion: str = ""
    stance: str | None = None

    @property
    def is_free_text(self) -> bool:
        return not self.conclusion and self.stance is None


@dataclass
class Split:
    """A named list of arguments with its level-2 (and maybe level-1) labels, if known."""

    name: str
    arguments: list[Argument]
    labels: np.ndarray | None = None
    level1_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arguments)

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.arguments]

    def subset(self, indices: Sequence[int], name: str | None = None) -> Split:
        idx = np.asarray(indices, dtype=int)
        return Split(
            name=name or self.name,
            arguments=[self.arguments[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            level1_labels=None if self.level1_labels is None else self.level1_labels[idx],
        )


# ----------------------------------------------------------------------------- low level


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``: error messages quote user input,
    and a 50 MB header must not become a 50 MB message."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def text_problem(text: str, max_chars: int | None = MAX_TEXT_CHARS) -> str | None:
    """Why ``text`` cannot be labelled (None if it can): too long, or not encodable as UTF-8.

    A lone surrogate (``"\\ud800"`` in JSON, undecodable bytes in a command-line argument) is
    valid in a Python string but not in UTF-8, so the tokenizer or the output file would fail
    on it later, after the work; it is refused here, where the file and line are known."""
    if max_chars is not None and len(text) > max_chars:
        return f"is {len(text):,} characters long; at most {max_chars:,} per text"
    bad = _SURROGATE.search(text)
    if bad is not None:
        return (f"holds a lone surrogate U+{ord(bad.group()):04X} at character {bad.start()}, "
                "which is not valid Unicode text (send it as UTF-8)")
    return None


def check_text(text: str, what: str, path: str | Path | None = None, line: int | None = None) -> str:
    """``text`` itself, or an InputError naming ``what``, the file and the line."""
    problem = text_problem(text)
    if problem is not None:
        raise InputError(f"{what} {problem}", path, line)
    return text


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, expected a file", path)


def _read_lines(path: str | Path) -> list[str]:
    """Read a text file as lines without line endings; UTF-8, a BOM tolerated."""
    path = Path(path)
    _check_file(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 ({error.reason})", path, line) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines or all(not line.strip() for line in lines):
        raise InputError("the file is empty", path)
    return lines


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name[:200], [o for o in options if len(o) <= 200], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_tsv(path: str | Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of a QUOTE_NONE TSV, checking shape and columns."""
    lines = _read_lines(path)
    header = lines[0].split("\t")
    for column in required:
        if column not in header:
            close = difflib.get_close_matches(column, header, n=1, cutoff=0.6)
            hint = f" (is {close[0]!r} a misspelling of it?)" if close else ""
            shown = ", ".join(excerpt(h) for h in header[:12])
            more = f" and {len(header) - 12} more" if len(header) > 12 else ""
            raise InputError(f"missing column {column!r}{hint}; the header has: {shown}{more}", path, 1)
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise InputError(f"column {excerpt(column)} appears twice in the header", path, 1)
        seen.add(column)
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise InputError(
                f"expected {len(header)} tab-separated fields as in the header, found {len(fields)}",
                path,
                number,
            )
        rows.append((number, fields))
    if not rows:
        raise InputError("the file has a header but no data rows", path)
    return header, rows


STALE_TEMP_SECONDS = 60  # a temporary file of ours this old, and unlocked, lost its writer


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path``. Unlike ``tempfile.mkstemp`` (mode 0600) it is created
    with mode 0666 less the umask, so the renamed result gets the permissions of any new file.
    It is locked while its writer lives, so a later run can tell an abandoned one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        _lock(fd, blocking=True)
        return fd, tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _lock(fd: int, blocking: bool) -> bool:
    """An exclusive advisory lock on ``fd`` (released when it is closed); False if another
    process holds one. Where there are no such locks (Windows), always True."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: age alone decides
        return True
    return True


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Delete our own ``.NAME.HEX.tmp`` files beside ``path`` that a killed writer left behind:
    older than a minute and locked by no one. Other files are never touched."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{12}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat().st_mtime < STALE_TEMP_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not _lock(fd, blocking=False):
                continue  # its writer is still at work
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def same_file(a: str | Path, b: str | Path) -> bool:
    """Do ``a`` and ``b`` name one file (through symlinks, hard links, ``..`` or case)?"""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(a.resolve()) == os.path.normcase(b.resolve())


def check_output(output: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Before any work: refuse an output that would overwrite an input, and make sure a file can
    really be created beside the output (a permission check alone passes for root, or in /proc)."""
    output = Path(output)
    for source in inputs:
        if same_file(output, source):
            raise InputError(f"is also the input {source}; writing the results there would destroy it "
                             "(choose another --output)", output)
    ensure_writable(output)
    try:
        fd, tmp = _create_temp(output)
    except OSError as error:
        raise InputError(f"cannot write a file here ({error.strerror or error})", output) from None
    os.close(fd)
    tmp.unlink(missing_ok=True)


def ensure_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and fail before any work if it cannot be written in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"exists and is not a folder (wanted as the {what})", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the {what} ({error.strerror})", path) from None
    if not os.access(path, os.W_OK):
        raise InputError(f"no permission to write in the {what}", path)
    return path


def ensure_writable(path: str | Path) -> None:
    """Fail before any work is done if ``path`` cannot be written (a folder, no permission)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, cannot write a file there", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the folder for it ({error.strerror})", path) from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError("no permission to write here", path)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write that appears at ``path`` only once the block ends without error:
    readers see the old content or the new one, never half of it.

    An existing file keeps its permissions; a new one gets those the umask gives new files."""
    path = Path(path)
    ensure_writable(path)
    clean_stale_temps(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.exists():
                with contextlib.suppress(OSError):
                    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see ``atomic_file``)."""
    with atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object; anything else is an error naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path)
    return data


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _new_id(raw: str, first_line: dict[str, int], path: str | Path, number: int) -> str:
    """A row's Argument ID, checked to be non-empty and not seen before in this file."""
    arg_id = raw.strip()
    if not arg_id:
        raise InputError("empty Argument ID", path, number)
    check_text(arg_id, "the Argument ID", path, number)
    if arg_id in first_line:
        raise InputError(f"duplicate Argument ID {excerpt(arg_id)} (first seen on line {first_line[arg_id]})",
                         path, number)
    first_line[arg_id] = number
    return arg_id


# ----------------------------------------------------------------------------- arguments


def read_arguments(path: str | Path) -> list[Argument]:
    """Read an arguments file (Argument ID, Conclusion, Stance, Premise)."""
    header, rows = _read_tsv(path, ARGUMENT_COLUMNS)
    col = {name: header.index(name) for name in ARGUMENT_COLUMNS}
    arguments: list[Argument] = []
    first_line: dict[str, int] = {}
    for number, fields in rows:
        arg_id = _new_id(fields[col[ID_COLUMN]], first_line, path, number)
        stance_raw = fields[col["Stance"]]
        stance = _STANCE_ALIASES.get(stance_raw.strip().lower())
        if stance is None:
            raise InputError(
                f"unknown stance {excerpt(stance_raw)}; expected 'in favor of' or 'against'", path, number
            )
        premise = check_text(fields[col["Premise"]], "the Premise", path, number)
        conclusion = check_text(fields[col["Conclusion"]], "the Conclusion", path, number)
        if not premise.strip():
            raise InputError(f"empty Premise for argument {arg_id!r}", path, number)
        if not conclusion.strip():
            raise InputError(f"empty Conclusion for argument {arg_id!r}", path, number)
        arguments.append(Argument(id=arg_id, premise=premise, conclusion=conclusion, stance=stance))
    return arguments


def write_arguments(path: str | Path, arguments: Sequence[Argument]) -> None:
    """Write an arguments file; refuses arguments that ``read_arguments`` could not read back."""
    lines = ["\t".join(ARGUMENT_COLUMNS)]
    for a in arguments:
        for field in (a.id, a.conclusion, a.premise):
            if "\t" in field or "\n" in field or "\r" in field:
                raise InputError(f"argument {a.id!r} has a tab or line break, which TSV cannot hold", path)
        if not (a.id.strip() and a.conclusion.strip() and a.premise.strip()) or a.stance not in STANCES:
            raise InputError(
                f"argument {a.id!r} lacks an ID, conclusion, premise or stance, which an arguments "
                "file needs (free text has no conclusion or stance)",
                path,
            )
        lines.append("\t".join((a.id, a.conclusion, a.stance, a.premise)))
    atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- labels and runs


def read_labels(path: str | Path, level: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read a labels or run file: IDs and a 0/1 matrix in the official column order.

    ``level`` 2 expects the 20 categories, 1 the 54 level-1 values, None decides from the
    header. Columns may come in any order; every expected column must be there.
    """
    header, rows = _read_tsv(path, (ID_COLUMN,))
    value_columns = [h for h in header if h != ID_COLUMN]
    if level is None:
        level = 1 if any(c in LEVEL1_NAMES for c in value_columns) else 2
    names = CATEGORY_NAMES if level == 2 else LEVEL1_NAMES
    kind = "value category" if level == 2 else "level-1 value"
    for column in value_columns:
        if column not in names:
            raise InputError(f"unknown {kind} column {excerpt(column)}{_suggest(column[:200], names)}", path, 1)
    for name in names:
        if name not in value_columns:
            raise InputError(f"missing {kind} column {name!r}", path, 1)
    order = [header.index(name) for name in names]
    id_col = header.index(ID_COLUMN)
    ids: list[str] = []
    first_line: dict[str, int] = {}
    matrix = np.zeros((len(rows), len(names)), dtype=np.int8)
    for r, (number, fields) in enumerate(rows):
        arg_id = _new_id(fields[id_col], first_line, path, number)
        ids.append(arg_id)
        for c, col in enumerate(order):
            value = fields[col].strip()
            if value == "1":
                matrix[r, c] = 1
            elif value != "0":
                raise InputError(
                    f"value {excerpt(fields[col])} in column {header[col]!r} is not 0 or 1", path, number
                )
    return ids, matrix


def align_labels(
    argument_ids: Sequence[str], label_ids: Sequence[str], labels: np.ndarray, path: str | Path
) -> np.ndarray:
    """Reorder labels to the arguments' order; every argument needs labels and vice versa."""
    position = {arg_id: i for i, arg_id in enumerate(label_ids)}
    known = set(argument_ids)
    extra = [i for i in label_ids if i not in known]
    if extra:
        raise InputError(
            f"{len(extra)} Argument IDs are not in the arguments file, e.g. {extra[0]!r}", path
        )
    missing = [i for i in argument_ids if i not in position]
    if missing:
        raise InputError(
            f"{len(missing)} arguments have no labels here, e.g. {missing[0]!r}", path
        )
    return labels[[position[i] for i in argument_ids]]


def format_run(ids: Sequence[str], predictions: np.ndarray, columns: Sequence[str] = CATEGORY_NAMES) -> str:
    predictions = np.asarray(predictions)
    if predictions.shape != (len(ids), len(columns)):
        raise ValueError(f"predictions have shape {predictions.shape}, expected {(len(ids), len(columns))}")
    lines = ["\t".join((ID_COLUMN, *columns))]
    for arg_id, row in zip(ids, predictions, strict=True):
        lines.append("\t".join((arg_id, *("1" if v else "0" for v in row))))
    return "\n".join(lines) + "\n"


def write_run(path: str | Path, ids: Sequence[str], predictions: np.ndarray) -> None:
    """Write an official-format run file: Argument ID then the 20 categories as 0/1."""
    atomic_write_text(path, format_run(ids, predictions))


def write_labels(path: str | Path, ids: Sequence[str], labels: np.ndarray, level: int = 2) -> None:
    columns = CATEGORY_NAMES if level == 2 else LEVEL1_NAMES
    atomic_write_text(path, format_run(ids, labels, columns))


# ----------------------------------------------------------------------------- free text


def read_inputs(path: str | Path, text_column: str = "text") -> list[Argument]:
    """Read arguments or free text to label, all at once (see ``valuedetect.corpus`` for the
    formats and for reading a large file in chunks)."""
    from valuedetect.corpus import read_all
    from valuedetect.records import Columns

    return read_all(path, Columns(text_column=text_column))


# ----------------------------------------------------------------------------- the dataset


def shipped_data_dir() -> Path:
    """The Touche23-ValueEval copy inside the package (CC BY-SA 4.0; see its README)."""
    return Path(str(resources.files("valuedetect") / "datasets" / "touche23-valueeval"))


def load_split(name: str, data_dir: str | Path | None = None, level1: bool = False) -> Split:
    """Load a split by name (training, validation, test) from the shipped data or a folder
    with the same layout. Labels are attached when the folder has them (the shipped test
    split has none: it is the blind set)."""
    if name not in SPLITS:
        raise InputError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    folder = Path(data_dir) if data_dir is not None else shipped_data_dir()
    if not folder.is_dir():
        raise InputError("data folder not found", folder)
    arguments = read_arguments(folder / f"arguments-{name}.tsv")
    ids = [a.id for a in arguments]
    labels = level1_labels = None
    labels_path = folder / f"labels-{name}.tsv"
    if labels_path.exists():
        label_ids, matrix = read_labels(labels_path, level=2)
        labels = align_labels(ids, label_ids, matrix, labels_path)
    level1_path = folder / f"level1-labels-{name}.tsv"
    if level1 and level1_path.exists():
        label_ids, matrix = read_labels(level1_path, level=1)
        level1_labels = align_labels(ids, label_ids, matrix, level1_path)
    return Split(name=name, arguments=arguments, labels=labels, level1_labels=level1_labels)


def load_labels_for(arguments: Sequence[Argument] | Sequence[str], path: str | Path) -> np.ndarray:
    """Read a labels file and align it with the given arguments (or IDs)."""
    ids = [a if isinstance(a, str) else a.id for a in arguments]
    label_ids, matrix = read_labels(path, level=2)
    return align_labels(ids, label_ids, matrix, path)
