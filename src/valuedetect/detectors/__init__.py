"""Every method is a Detector; this registry finds one by its type name without importing
the heavy ones (torch, transformers) until they are asked for."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.errors import ConfigError, InputError

_REGISTRY: dict[str, str] = {
    "all-ones": "valuedetect.detectors.baselines:AllOnesDetector",
    "random-prior": "valuedetect.detectors.baselines:RandomPriorDetector",
    "tfidf": "valuedetect.detectors.baselines:TfidfDetector",
    "encoder": "valuedetect.detectors.encoder:EncoderDetector",
    "llm": "valuedetect.detectors.llm:LLMDetector",
    "prompt": "valuedetect.detectors.prompt:PromptDetector",
    "ensemble": "valuedetect.detectors.ensemble:EnsembleDetector",
}

METHODS = tuple(_REGISTRY)


def detector_class(name: str, source: str = "") -> type[Detector]:
    if name not in _REGISTRY:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_detector(name: str, settings: dict | None = None, source: str = "", task: str = "values",
                  where: str | None = None) -> Detector:
    """A fresh, unfitted detector of method ``name`` for ``task`` with validated settings; the
    task's defaults for the method (``Task.detector_defaults``, e.g. its template) fill what the
    settings leave out, so the saved config is the one that ran. Errors name ``where`` (by
    default the source's detector table)."""
    from valuedetect.config import from_dict
    from valuedetect.tasks import get_task

    the_task = get_task(task, source)
    the_task.check_method(name, source)
    cls = detector_class(name, source)
    where = where or (f"{source} [detector]" if source else f"settings of {name}")
    merged = {**the_task.detector_defaults.get(name, {}), **(settings or {})}
    detector = cls(from_dict(cls.config_class, merged, where), task=the_task.name)
    detector.check_task(where)
    return detector


def load_detector(directory: str | Path, base_model: str | None = None) -> Detector:
    """Load a saved detector folder, whatever its method (``base_model``: see ``Detector.load``)."""
    directory = Path(directory)
    meta_path = directory / "detector.json"
    if not directory.is_dir():
        raise InputError("no such detector folder", directory)
    if not meta_path.exists():
        raise InputError("not a saved detector (no detector.json)", directory)
    meta = read_detector_meta(meta_path)
    return detector_class(meta["type"], str(meta_path)).load(directory, base_model=base_model)


def require_values_task(detector: Detector, directory: str | Path) -> Detector:
    """Refuse a detector of another task where value categories are expected (predict, serve)."""
    if detector.task.name != "values":
        raise InputError(f"holds a detector of the {detector.task.name} task; predict and serve label value "
                         "categories (its run folder has its predictions)", directory)
    return detector


def read_detector_meta(meta_path: Path) -> dict:
    """detector.json, checked for the keys every loader relies on."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"unreadable detector.json ({error})", meta_path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("type"), str) or not isinstance(meta.get("config"), dict):
        raise InputError("detector.json must be an object with a 'type' string and a 'config' table", meta_path)
    if not isinstance(meta.get("task", "values"), str):
        raise InputError("detector.json: 'task' must be a task name", meta_path)
    thresholds = meta.get("thresholds")
    if thresholds is not None and (not isinstance(thresholds, dict) or not isinstance(thresholds.get("values"), list)):
        raise InputError("detector.json: 'thresholds' must hold a 'values' list", meta_path)
    return meta


__all__ = ["METHODS", "Detector", "DetectorConfig", "detector_class", "load_detector", "make_detector",
           "require_values_task"]
