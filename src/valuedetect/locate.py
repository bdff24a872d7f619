"""Where a detector named by the user lives: a shipped one by its name, or any saved folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from valuedetect.errors import InputError

SHIPPED_MODEL = "minilm-default"


def pretrained_root() -> Path:
    return Path(str(resources.files("valuedetect") / "pretrained"))


def shipped_names() -> list[str]:
    """The detectors that ship with the package, by name."""
    root = pretrained_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "detector.json").exists())


def shipped_model_dir(name: str = SHIPPED_MODEL) -> Path:
    return pretrained_root() / name


def detector_dir(name_or_path: str | Path | None = None) -> Path:
    """The folder of a saved detector: the shipped default for None, a shipped detector by name,
    or a folder that holds ``detector.json``."""
    if name_or_path is None:
        path = shipped_model_dir()
        if not (path / "detector.json").exists():
            raise InputError("no shipped detector in this installation; train one and pass its folder", path)
        return path
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and name_or_path in shipped_names():
        return shipped_model_dir(name_or_path)
    shipped = ", ".join(shipped_names()) or "none"
    if path.exists():
        raise InputError("is a file; a saved detector is a folder holding detector.json", path)
    raise InputError(f"no such detector folder, and no shipped detector of that name (shipped: {shipped})", path)


__all__ = ["SHIPPED_MODEL", "detector_dir", "shipped_model_dir", "shipped_names"]
