"""Our 20 categories expressed in the value systems of the organisers' ``pyvalues`` library.

pyvalues knows three systems without attainment:
- ``refined`` (19 values): Schwartz's refined circle. These are our categories minus
  *Universalism: objectivity*, which ValueEval added and Schwartz's theory lacks: it is dropped.
- ``refined-coarse`` (12): the refined values with each family merged (Self-direction, Power,
  Security, Conformity, Benevolence, Universalism), keeping Face and Humility.
- ``original`` (10): the coarse values without Face and Humility (Schwartz 1992).

Merging takes the maximum, as pyvalues' own ``RefinedValues.coarse_values`` does, so a merged
value is detected when any of its members is. What is lost: objectivity in every system; the
sub-value distinction in the coarse ones; Face and Humility in the original one.

Scores are *calibrated* so that each category's tuned threshold maps to 0.5: pyvalues
binarises at 0.5 by default, and this way its decisions equal the detector's own. The map is
piecewise linear and monotone, so rankings within a category are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valuedetect.taxonomy import CATEGORY_NAMES

REFINED: tuple[str, ...] = tuple(c for c in CATEGORY_NAMES if c != "Universalism: objectivity")

_FAMILIES: dict[str, tuple[str, ...]] = {
    "Self-direction": ("Self-direction: thought", "Self-direction: action"),
    "Stimulation": ("Stimulation",),
    "Hedonism": ("Hedonism",),
    "Achievement": ("Achievement",),
    "Power": ("Power: dominance", "Power: resources"),
    "Face": ("Face",),
    "Security": ("Security: personal", "Security: societal"),
    "Tradition": ("Tradition",),
    "Conformity": ("Conformity: rules", "Conformity: interpersonal"),
    "Humility": ("Humility",),
    "Benevolence": ("Benevolence: caring", "Benevolence: dependability"),
    "Universalism": ("Universalism: concern", "Universalism: nature", "Universalism: tolerance"),
}

VALUE_SYSTEMS: dict[str, dict[str, tuple[str, ...]]] = {
    "refined": {name: (name,) for name in REFINED},
    "refined-coarse": dict(_FAMILIES),
    "original": {k: v for k, v in _FAMILIES.items() if k not in ("Face", "Humility")},
}


def calibrate(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Map each column so its threshold lands on 0.5 (p >= t exactly when result >= 0.5)."""
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1 - 1e-6)
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    below = 0.5 * scores / t
    above = 0.5 + 0.5 * (scores - t) / (1 - t)
    return np.where(scores >= t, above, below)


def to_system(scores: np.ndarray, system: str) -> list[dict[str, float]]:
    """Rows of 20 category scores as pyvalues value dictionaries of ``system``."""
    if system not in VALUE_SYSTEMS:
        raise KeyError(f"unknown value system {system!r}; known: {', '.join(VALUE_SYSTEMS)}")
    columns = {name: [CATEGORY_NAMES.index(m) for m in members] for name, members in VALUE_SYSTEMS[system].items()}
    return [
        {name: float(row[idx].max()) for name, idx in columns.items()}
        for row in np.asarray(scores, dtype=np.float64)
    ]
