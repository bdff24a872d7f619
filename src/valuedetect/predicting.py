"""Applying a saved detector to many arguments, and writing what it found."""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from valuedetect.data import Argument, atomic_write_text, format_run
from valuedetect.detectors.base import Detector
from valuedetect.errors import InputError
from valuedetect.taxonomy import CATEGORY_NAMES

SHIPPED_MODEL = "minilm-default"


def shipped_model_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("valuedetect") / "pretrained" / SHIPPED_MODEL))


def default_model_dir() -> Path:
    """The detector shipped with the package, used when no --model is given."""
    path = shipped_model_dir()
    if not (path / "detector.json").exists():
        raise InputError("no shipped detector in this installation; train one and pass --model DIR", path)
    return path


def predict_batched(
    detector: Detector,
    arguments: Sequence[Argument],
    batch_size: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> np.ndarray:
    """Scores [n, 20], computed in batches so long inputs show progress."""
    parts = []
    for start in range(0, len(arguments), batch_size):
        parts.append(detector.predict_proba(arguments[start : start + batch_size]))
        if progress:
            progress("predicting", min(start + batch_size, len(arguments)), len(arguments))
    return np.concatenate(parts) if parts else np.zeros((0, len(CATEGORY_NAMES)))


def write_predictions(path: str | Path, arguments: Sequence[Argument], scores: np.ndarray,
                      decisions: np.ndarray) -> str:
    """Write decisions in the format the file name asks for; returns a word for what it wrote.

    ``.jsonl``: one object per argument with probabilities and detected categories;
    ``.csv``: ID, then per category the probability; anything else: an official run file.
    """
    path = Path(path)
    ids = [a.id for a in arguments]
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        lines = []
        for a, s, d in zip(arguments, scores, decisions, strict=True):
            lines.append(json.dumps({
                "id": a.id,
                "detected": [c for c, x in zip(CATEGORY_NAMES, d, strict=True) if x],
                "probabilities": {c: round(float(p), 5) for c, p in zip(CATEGORY_NAMES, s, strict=True)},
            }, ensure_ascii=False))
        atomic_write_text(path, "\n".join(lines) + "\n")
        return "JSON lines"
    if suffix == ".csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["Argument ID", *CATEGORY_NAMES, *(f"p({c})" for c in CATEGORY_NAMES)])
        for i, s, d in zip(ids, scores, decisions, strict=True):
            writer.writerow([i, *(int(x) for x in d), *(f"{p:.5f}" for p in s)])
        atomic_write_text(path, buffer.getvalue())
        return "a CSV table"
    atomic_write_text(path, format_run(ids, decisions))
    return "a run file"


def write_predictions_safely(path: str | Path, arguments: Sequence[Argument], scores: np.ndarray,
                             decisions: np.ndarray) -> str:
    """``write_predictions``, but predictions that cannot be written to ``path`` (a full disk,
    a folder gone read-only since the start) are never lost: they are written to the temporary
    folder (or the current one) instead, and the error names that file."""
    path = Path(path)
    try:
        return write_predictions(path, arguments, scores, decisions)
    except InputError as error:  # the folder became unwritable while predicting
        reason = error.problem
    except OSError as error:
        reason = error.strerror or str(error)
    for folder in (Path(tempfile.gettempdir()), Path.cwd()):
        rescue = folder / f"valuedetect-{path.stem}-{secrets.token_hex(4)}{path.suffix}"
        try:
            write_predictions(rescue, arguments, scores, decisions)
        except (OSError, InputError):
            continue
        raise InputError(f"cannot write the predictions here ({reason}); they were saved to {rescue} instead", path)
    raise InputError(f"cannot write the predictions here ({reason}), nor in {tempfile.gettempdir()} or the "
                     "current folder", path)
