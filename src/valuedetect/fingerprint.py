"""What a resumed run must agree with: the whole resolved configuration, the model actually
loaded and the arguments it trains and chooses on.

A run folder keeps ``fingerprint.json`` from its start. ``--resume`` recomputes it and refuses
to go on when any part differs, naming the parts, so that a changed template, max length, data
folder or model file can never be mixed into a half-finished run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from valuedetect.config import LATER_KEYS
from valuedetect.data import Split, atomic_write_json
from valuedetect.errors import InputError

FINGERPRINT_FILE = "fingerprint.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx")
# Settings that change how a run is carried out, never what it computes. ``inference`` picks the
# prediction path after a run (a run's own scores are fp32 until a check is recorded).
NEUTRAL_KEYS = frozenset({"checkpoint_every", "output", "threads", "concurrency", "inference"})


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so large weights are hashed once."""
    from valuedetect.models import cache_dir

    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_dir() / "weight-hashes.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo, dict) and isinstance(memo.get(key), str):
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = value
    with contextlib.suppress(OSError, InputError):  # a read-only cache only costs a second hash next time
        atomic_write_json(memo_path, memo)
    return value


def _local_path(name: str) -> Path | None:
    """Where an alias or path points on this machine, or None for a Hub name."""
    from valuedetect.errors import ValueDetectError
    from valuedetect.models import resolve_model

    candidates: list[str] = []
    with contextlib.suppress(ValueDetectError):
        candidates.append(resolve_model(name))
    try:  # GGUF aliases of the language models
        from valuedetect.lm import gguf as lm_models

        gguf = lm_models.gguf_file(name)
        if gguf is not None:
            candidates.insert(0, str(gguf))
    except (ImportError, AttributeError, ValueDetectError):
        pass
    for candidate in candidates:
        path = Path(os.path.expanduser(candidate))
        if path.exists():
            return path
    return None


def model_identity(name: str | None) -> dict[str, Any]:
    """The model a run loads: the name it was given and, for local files, each weight file's sha256."""
    if not name:
        return {"name": None}
    path = _local_path(name)
    if path is None:
        return {"name": name, "weights": "not local (a Hub name or an API model): identified by name only"}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    # A single file is keyed by its content alone (the same GGUF under an alias or a path is one
    # model); a folder's files by their names within it.
    return {"name": name, "weights": {str(p.relative_to(path)) if p != path else "file": file_sha256(p)
                                      for p in files}}


def split_digest(split: Split) -> str:
    """A fingerprint of a split's IDs, texts and labels (a changed data folder changes it)."""
    digest = hashlib.sha256()
    for argument in split.arguments:
        digest.update("\t".join((argument.id, argument.conclusion, argument.stance or "", argument.premise,
                                 "\n")).encode("utf-8", "surrogatepass"))
    if split.labels is not None:
        digest.update(split.labels.astype("int8").tobytes())
    return digest.hexdigest()[:16]


def _without_neutral(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: (_without_neutral(v) if isinstance(v, dict) else v) for k, v in settings.items()
            if k not in NEUTRAL_KEYS}


def run_fingerprint(run_config: dict[str, Any], detector_config: dict[str, Any], model: str | None,
                    fit: Split, dev: Split) -> dict[str, Any]:
    """The parts a resumed run must agree with, each kept apart so a refusal can name it."""
    return {
        "run settings": _without_neutral(run_config),
        "detector settings": _without_neutral(detector_config),
        "model": model_identity(model),
        "training arguments": split_digest(fit),
        "dev arguments": split_digest(dev),
    }


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The parts (and, for settings, the keys) in which two fingerprints differ."""
    changes = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and part.endswith("settings"):
            # A key left out at its old value (config.LATER_KEYS) is named with that value.
            a, b = {**LATER_KEYS, **a}, {**LATER_KEYS, **b}
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changes.append(f"{part} ({', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in keys)})")
        else:
            changes.append(part)
    return changes


def check_or_write(folder: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """On a fresh start, keep the fingerprint; on resume, refuse when it changed."""
    path = folder / FINGERPRINT_FILE
    if resume and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"unreadable ({error}); cannot tell whether the run's settings changed", path) from None
        new = json.loads(json.dumps(fingerprint, default=str))
        changes = changed_parts(old, new)
        if changes:
            raise InputError("cannot resume: the run started with other " + "; ".join(changes)
                             + ". Resume with the same settings, or train into a new --output", folder)
        return
    atomic_write_json(path, fingerprint)


__all__ = ["FINGERPRINT_FILE", "changed_parts", "check_or_write", "file_sha256", "model_identity", "run_fingerprint",
           "split_digest"]
