"""Scores of a trained detector on dev and validation, kept while they are made, so that a run
killed while scoring (hours for a language model on 2 cores) goes on from the last saved chunk.

Why a file beside the run rather than in the detector: the scores are outputs, not weights, and a
zero-shot language-model run has no weights at all, so its folder's committed files (the detector's
JSON, its fingerprint and this state) are enough to finish it on another machine. The state names
the detector it belongs to by a digest of its saved files: a run retrained since does not reuse
another detector's scores.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Split, atomic_write_json, read_json_object

STATE_FILE = "scoring-state.json"
SAVE_EVERY_SECONDS = 30.0  # how much scoring a kill may cost at most, roughly


def detector_digest(folder: Path) -> str:
    """sha256 over the saved detector's JSON and weight files (checkpoints left out)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or relative.parts[0] == "checkpoint":
            continue
        if path.name == "detector.json" or path.suffix == ".safetensors":
            digest.update(str(relative).encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _read(folder: Path, digest: str, say: Callable[[str], None]) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.exists():
        return {"detector": digest}
    state = read_json_object(path)
    if state.get("detector") != digest:
        say(f"{path} holds scores of another detector (saved files changed): scoring again")
        return {"detector": digest}
    return state


def save_dev_scores(folder: Path, split: Split, scores: np.ndarray, level1: np.ndarray | None) -> None:
    """Keep the dev scores the thresholds were chosen on, beside the detector just saved."""
    state = {"detector": detector_digest(folder),
             "dev": {"ids": split.ids, "scores": np.asarray(scores).tolist(),
                     "level1": None if level1 is None else np.asarray(level1).tolist()}}
    atomic_write_json(folder / STATE_FILE, state)


def dev_scores(folder: Path, split: Split, say: Callable[[str], None]
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The kept dev scores of this detector on exactly these arguments, or (None, None)."""
    entry = _read(folder, detector_digest(folder), say).get("dev")
    if not entry or entry.get("ids") != split.ids:
        return None, None
    level1 = entry.get("level1")
    return np.asarray(entry["scores"], dtype=np.float64), None if level1 is None else np.asarray(level1)


def score_resumably(detector: Any, split: Split, folder: Path, say: Callable[[str], None]
                    ) -> tuple[np.ndarray, np.ndarray | None, float, float]:
    """(scores, level-1 scores or None, wall seconds, CPU-seconds) of ``detector`` on ``split``,
    scored in the detector's ``resumable_chunk``s (0: all at once) and saved every
    ``SAVE_EVERY_SECONDS``; the seconds include those of earlier processes that scored part of it."""
    chunk = int(getattr(detector, "resumable_chunk", 0) or 0)
    if chunk <= 0:
        started, cpu = time.time(), time.process_time()
        scores, level1 = detector.predict_proba_levels(split.arguments)
        return scores, level1, time.time() - started, time.process_time() - cpu
    digest = detector_digest(folder)
    state = _read(folder, digest, say)
    kept = state.get("validation") or {}
    ids = split.ids
    done = int(kept.get("done", 0))
    if done and kept.get("ids") != ids:
        say("the kept validation scores are for other arguments: scoring again")
        done = 0
    scores: list[list[float]] = list(kept.get("scores", []))[:done] if done else []
    level1: list[list[float]] | None = list(kept["level1"])[:done] if done and kept.get("level1") else None
    wall_before, cpu_before = (float(kept.get("wall_seconds", 0.0)), float(kept.get("cpu_seconds", 0.0))) \
        if done else (0.0, 0.0)
    if done:
        say(f"resuming validation scoring at {done} of {len(ids)} arguments")
    started, cpu = time.time(), time.process_time()
    last_save = time.time()
    outer = detector.progress
    try:
        for start in range(done, len(ids), chunk):
            part = split.arguments[start:start + chunk]
            if outer is not None:
                detector.progress = lambda what, i, n, s=start: outer(what, s + i, len(ids))
            s, l1 = detector.predict_proba_levels(part)
            scores.extend(np.asarray(s).tolist())
            if l1 is not None:
                level1 = level1 if level1 is not None else []
                level1.extend(np.asarray(l1).tolist())
            finished = start + len(part) >= len(ids)
            if finished or time.time() - last_save >= SAVE_EVERY_SECONDS:
                state["validation"] = {
                    "ids": ids, "done": len(scores), "scores": scores, "level1": level1,
                    "wall_seconds": wall_before + time.time() - started,
                    "cpu_seconds": cpu_before + time.process_time() - cpu}
                atomic_write_json(folder / STATE_FILE, state)
                last_save = time.time()
    finally:
        detector.progress = outer
    wall, cpu_seconds = wall_before + time.time() - started, cpu_before + time.process_time() - cpu
    return (np.asarray(scores, dtype=np.float64), None if level1 is None else np.asarray(level1, dtype=np.float64),
            wall, cpu_seconds)


def clear(folder: Path) -> None:
    """A finished run keeps its scores in its run files: the state has done its job."""
    (folder / STATE_FILE).unlink(missing_ok=True)
