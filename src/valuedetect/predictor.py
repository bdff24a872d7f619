"""``ValueDetector``: a trained detector as people use it from Python.

The methods' own ``Detector`` works on lists of Arguments and numpy arrays (what training and
scoring need); this wraps one with the obvious surface: texts, Arguments or DataFrames in, a
DataFrame with one column per value category out, the input's index kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valuedetect.detectors.base import Detector
from valuedetect.frames import score_frame, to_arguments
from valuedetect.records import Columns
from valuedetect.taxonomy import CATEGORY_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from valuedetect.predicting import PredictSummary
    from valuedetect.training import TrainingResult

BATCH = 1000  # arguments per call of the detector: memory stays bounded for a large DataFrame


class ValueDetector:
    """A trained value detector: ``predict`` / ``predict_proba`` / ``predict_file`` / ``save``.

    Column names of DataFrame (or dict) inputs are keyword arguments of the predict methods:
    ``text_column`` (default ``text``), ``id_column``, ``premise_column``, ``conclusion_column``,
    ``stance_column``; without them ``premise``/``conclusion``/``stance`` are used when present.
    """

    def __init__(self, detector: Detector, folder: Path | None = None,
                 training: TrainingResult | None = None):
        self.detector = detector
        self.folder = folder
        self.training = training  # set by valuedetect.train: scores, protocol, files written

    # -- loading and saving ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, base_model: str | None = None
                        ) -> ValueDetector:
        """The shipped detector (no argument), a shipped one by name, or a saved folder."""
        from valuedetect.detectors import load_detector
        from valuedetect.locate import detector_dir

        folder = detector_dir(name_or_path)
        return cls(load_detector(folder, base_model=base_model), folder)

    def save(self, folder: str | Path) -> Path:
        """Write the detector to ``folder`` (JSON and safetensors, never a pickle)."""
        path = self.detector.save(folder)
        self.folder = path
        return path

    save_pretrained = save

    # -- what it is -------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.detector.type_name

    @property
    def categories(self) -> tuple[str, ...]:
        return CATEGORY_NAMES

    @property
    def thresholds(self) -> pd.Series:
        """The decision threshold of each category (chosen on dev when the detector was trained)."""
        import pandas as pd

        values = (self.detector.thresholds.values if self.detector.thresholds is not None
                  else [self.detector.config.fixed_threshold] * len(CATEGORY_NAMES))
        return pd.Series(values, index=list(CATEGORY_NAMES), name="threshold")

    def __repr__(self) -> str:
        model = getattr(self.detector.config, "model", None)
        where = f", folder={str(self.folder)!r}" if self.folder else ""
        return f"ValueDetector(method={self.method!r}" + (f", model={model!r}" if model else "") + where + ")"

    # -- predicting ---------------------------------------------------------------------------
    def _scores(self, x: Any, columns: dict[str, Any]) -> tuple[np.ndarray, pd.Index]:
        arguments, index = to_arguments(x, Columns(**columns))
        parts = [self.detector.predict_proba(arguments[i:i + BATCH]) for i in range(0, len(arguments), BATCH)]
        scores = np.concatenate(parts) if parts else np.zeros((0, len(CATEGORY_NAMES)))
        return scores, index

    def predict_proba(self, x: Any, **columns: Any) -> pd.DataFrame:
        """Each category's probability (0..1) for each text or argument of ``x``."""
        scores, index = self._scores(x, columns)
        return score_frame(scores, index)

    def predict(self, x: Any, threshold: float | None = None, **columns: Any) -> pd.DataFrame:
        """0/1 per category under the detector's thresholds (or one ``threshold`` for all)."""
        scores, index = self._scores(x, columns)
        return score_frame(self.detector.decide(scores, threshold), index, dtype=np.int8)

    def predict_file(self, source: str | Path, output: str | Path, *, resume: bool = False,
                     chunk_size: int | None = None, progress: Callable[[str, int, int], None] | None = None,
                     log: Callable[[str], None] | None = None, **columns: Any) -> PredictSummary:
        """Label a file of any size into ``output`` (.tsv run file, .csv, .jsonl or .parquet),
        in chunks, resumable: see ``valuedetect.predicting``. ``keep_columns`` copies columns
        of the input to the output."""
        from valuedetect.predicting import DEFAULT_CHUNK_SIZE, predict_file

        return predict_file(self.detector, source, output, Columns(**columns), chunk_size or DEFAULT_CHUNK_SIZE,
                            resume=resume, progress=progress, detector_folder=self.folder, log=log)


__all__ = ["ValueDetector"]
