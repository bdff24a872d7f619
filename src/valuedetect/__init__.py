"""valuedetect: find the human values behind arguments (Touche23-ValueEval, SemEval-2023 Task 4).

    import valuedetect as vd
    det = vd.load()                                  # the shipped detector
    det.predict(["We should ban fast food because it harms children's health."])

Names are imported on first use, so ``import valuedetect`` stays light (no torch, no pandas).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "valuedetect.api",
    "train": "valuedetect.api",
    "evaluate": "valuedetect.api",
    "predict_dataset": "valuedetect.api",
    "ValueDetector": "valuedetect.predictor",
    "ValueClassifier": "valuedetect.estimator",
    "Argument": "valuedetect.data",
    "Split": "valuedetect.data",
    "load_split": "valuedetect.data",
    "Columns": "valuedetect.records",
    "TrainConfig": "valuedetect.config",
    "CATEGORY_NAMES": "valuedetect.taxonomy",
    "LEVEL1_NAMES": "valuedetect.taxonomy",
    "ValueDetectError": "valuedetect.errors",
    "InputError": "valuedetect.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'valuedetect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
