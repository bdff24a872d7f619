"""``ValueClassifier``: any valuedetect method as a scikit-learn estimator.

So that ``clone``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work on value
detection: texts (or Arguments, or a DataFrame) in, a ``[n, 20]`` 0/1 matrix out, and ``score``
is the official F1. Settings are plain constructor parameters and ``fit`` does all the work,
as scikit-learn's contract asks. Thresholds are chosen on a label-stratified dev slice of what
``fit`` is given (``dev_fraction``), as under the project's held-out protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from valuedetect.data import Split
from valuedetect.errors import InputError
from valuedetect.taxonomy import CATEGORY_NAMES, NUM_CATEGORIES


def _labels(y: Any, n: int) -> np.ndarray:
    """``y`` as an [n, 20] 0/1 matrix (a DataFrame's category columns are taken by name)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(y, pd.DataFrame) and all(c in y.columns for c in CATEGORY_NAMES):
        y = y[list(CATEGORY_NAMES)]
    matrix = np.asarray(y)
    if matrix.ndim != 2 or matrix.shape != (n, NUM_CATEGORIES):
        raise ValueError(f"y must be a 0/1 matrix of shape ({n}, {NUM_CATEGORIES}), one column per value category; "
                         f"got shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError("y must hold only 0 and 1")
    return matrix.astype(np.int8)


def _arguments(X: Any) -> list[Any]:
    from valuedetect.frames import to_arguments

    try:
        return to_arguments(X)[0]
    except InputError as error:
        raise ValueError(str(error)) from None


class ValueClassifier(ClassifierMixin, BaseEstimator):
    """A valuedetect method (``tfidf``, ``encoder``, ...) with scikit-learn's estimator API.

    Parameters: ``method``, its ``settings`` (a dict, as a config's ``[detector]`` table),
    ``dev_fraction`` of the training rows held out to choose thresholds (0: no dev, the fixed
    threshold), and ``dev_seed``.
    """

    def __init__(self, method: str = "tfidf", settings: dict[str, Any] | None = None, dev_fraction: float = 0.15,
                 dev_seed: int = 0):
        self.method = method
        self.settings = settings
        self.dev_fraction = dev_fraction
        self.dev_seed = dev_seed

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        tags.classifier_tags.multi_label = True
        return tags

    def fit(self, X: Any, y: Any) -> ValueClassifier:
        from valuedetect.detectors import make_detector
        from valuedetect.protocol import dev_indices

        arguments = _arguments(X)
        labels = _labels(y, len(arguments))
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must lie in [0, 1), not {self.dev_fraction}")
        whole = Split("fit", arguments, labels)
        dev = None
        if self.dev_fraction > 0 and len(arguments) >= 2:
            topics = [a.conclusion.strip().lower() or a.id for a in arguments]
            rows = dev_indices(labels, topics, self.dev_fraction, self.dev_seed)
            if 0 < len(rows) < len(arguments):
                keep = np.setdiff1d(np.arange(len(arguments)), rows)
                whole, dev = whole.subset(keep), whole.subset(rows, name="dev")
        detector = make_detector(self.method, self.settings or {})
        self.detector_ = detector.fit(whole, dev)
        self.classes_ = np.array(CATEGORY_NAMES)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Each category's probability, shape [n, 20]."""
        check_is_fitted(self, "detector_")
        return self.detector_.predict_proba(_arguments(X))

    def predict(self, X: Any) -> np.ndarray:
        """0/1 per category under the thresholds chosen on dev, shape [n, 20]."""
        check_is_fitted(self, "detector_")
        return self.detector_.decide(self.predict_proba(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The official F1 (2PR/(P+R) of the macro precision and recall), not accuracy."""
        from valuedetect.metrics import score

        if sample_weight is not None:
            raise ValueError("the official F1 takes no sample weights")
        predicted = self.predict(X)
        return score(_labels(y, len(predicted)), predicted).f1


__all__ = ["ValueClassifier"]
