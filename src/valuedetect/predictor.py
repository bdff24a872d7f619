"""``ValueDetector``: a trained detector as people use it from Python.

The methods' own ``Detector`` works on lists of Arguments and numpy arrays (what training and
scoring need); this wraps one with the obvious surface: texts, Arguments or DataFrames in, a
DataFrame with one column per value category out, the input's index kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valuedetect.detectors.base import Detector
from valuedetect.frames import score_frame, to_arguments
from valuedetect.records import Columns
from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES
from valuedetect.thresholds import Thresholds

if TYPE_CHECKING:
    import pandas as pd

    from valuedetect.predicting import PredictSummary
    from valuedetect.raydata import RaySummary
    from valuedetect.training import TrainingResult

Progress = Callable[[str, int, int], None]
BATCH = 1000  # arguments per call of the detector: memory stays bounded for a large DataFrame
MIN_RETUNE_ARGUMENTS = 20  # a two-fold cross-fit on fewer leaves halves of under ten arguments


def _labels_for(labels: Any, index: pd.Index) -> np.ndarray:
    """A 0/1 matrix aligned with the rows ``index`` names: a DataFrame by its index, an array by order."""
    import pandas as pd

    from valuedetect.errors import InputError
    from valuedetect.frames import label_matrix

    if isinstance(labels, pd.DataFrame):
        ids, matrix = label_matrix(labels, "labels")
        row = {i: k for k, i in enumerate(ids)}
        missing = [str(i) for i in index if str(i) not in row]
        if missing:
            raise InputError(f"the labels have no row for {len(missing)} of the {len(index)} texts "
                             f"(first: {missing[0]!r}); their index must hold the texts' IDs")
        return matrix[[row[str(i)] for i in index]]
    matrix = np.asarray(labels)
    if matrix.ndim != 2 or matrix.shape != (len(index), len(CATEGORY_NAMES)):
        raise InputError(f"labels of shape {matrix.shape}, expected ({len(index)}, {len(CATEGORY_NAMES)}): "
                         "one row of 20 0/1 values per text")
    if not np.isin(matrix, (0, 1)).all():
        raise InputError("the labels hold values other than 0 and 1")
    return matrix.astype(np.int8)


def set_inference(detector: Detector, inference: str) -> None:
    """Choose the prediction path: auto (int8 where the detector's check allows it), int8 or fp32."""
    from valuedetect.errors import InputError

    if inference not in ("auto", "int8", "fp32"):
        raise InputError(f"inference must be auto, int8 or fp32, not {inference!r}")
    if detector.has_members:  # an ensemble: each member takes the path
        for member in getattr(detector, "members", []):
            set_inference(member, inference)
        return
    if hasattr(detector.config, "inference"):
        detector.config.inference = inference  # type: ignore[attr-defined]
    elif inference == "int8":
        raise InputError(f"a {detector.type_name!r} detector has no int8 path (the encoder detector has)")


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
    def from_pretrained(cls, name_or_path: str | Path | None = None, base_model: str | None = None,
                        inference: str | None = None) -> ValueDetector:
        """The shipped detector (no argument), a shipped one by name, or a saved folder.
        ``inference``: auto | int8 | fp32 over the saved setting (encoder detectors)."""
        from valuedetect.detectors import load_detector, require_values_task
        from valuedetect.locate import detector_dir

        folder = detector_dir(name_or_path)
        detector = require_values_task(load_detector(folder, base_model=base_model), folder)
        if inference is not None:
            set_inference(detector, inference)
        return cls(detector, folder)

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
        model = self.detector.base_model
        where = f", folder={str(self.folder)!r}" if self.folder else ""
        return f"ValueDetector(method={self.method!r}" + (f", model={model!r}" if model else "") + where + ")"

    # -- predicting ---------------------------------------------------------------------------
    def _scores(self, x: Any, columns: dict[str, Any], progress: Progress | None = None,
                score: Callable[[Any], np.ndarray] | None = None, width: int = len(CATEGORY_NAMES)
                ) -> tuple[np.ndarray, pd.Index]:
        """``score`` (default: the categories' ``predict_proba``) over ``x`` in batches."""
        score = score or self.detector.predict_proba
        arguments, index = to_arguments(x, Columns(**columns))
        parts = []
        for start in range(0, len(arguments), BATCH):
            parts.append(score(arguments[start:start + BATCH]))
            if progress:
                progress("predicting", min(start + BATCH, len(arguments)), len(arguments))
        scores = np.concatenate(parts) if parts else np.zeros((0, width))
        return scores, index

    def predict_proba(self, x: Any, progress: Progress | None = None, **columns: Any) -> pd.DataFrame:
        """Each category's probability (0..1) for each text or argument of ``x``. ``progress``
        is called with ("predicting", done, total) after each batch."""
        scores, index = self._scores(x, columns, progress)
        return score_frame(scores, index)

    def predict(self, x: Any, threshold: float | None = None, progress: Progress | None = None,
                **columns: Any) -> pd.DataFrame:
        """0/1 per category under the detector's thresholds (or one ``threshold`` for all)."""
        scores, index = self._scores(x, columns, progress)
        return score_frame(self.detector.decide(scores, threshold), index, dtype=np.int8)

    # -- adapting to another domain ----------------------------------------------------------
    def retune(self, x: Any, labels: Any, seed: int = 0, source: str | None = None,
               **columns: Any) -> Thresholds:
        """Re-choose the category thresholds on a labelled sample of the texts you will label
        (another domain than the training arguments); they replace the detector's own only where a
        two-fold cross-fit on the sample says they do better (``thresholds.retune``). ``labels``:
        a DataFrame with the 20 category columns (rows matched to ``x`` by index) or a 0/1 array
        with one row per item of ``x``. Save the result with ``save``; the weights are unchanged.
        ``source`` names the sample in the record (a file, say). The sample is then in-sample for
        these thresholds: score the detector on other texts of the domain."""
        from valuedetect.errors import InputError
        from valuedetect.protocol import ids_digest
        from valuedetect.thresholds import retune

        scores, index = self._scores(x, columns)
        truth = _labels_for(labels, index)
        if len(truth) < MIN_RETUNE_ARGUMENTS:
            raise InputError(f"{len(truth)} labelled arguments are too few to choose thresholds on (at least "
                             f"{MIN_RETUNE_ARGUMENTS}; 50 or more do better)")
        if self.detector.thresholds is None:
            current = Thresholds.constant(self.detector.config.fixed_threshold, len(CATEGORY_NAMES))
        else:
            current = self.detector.thresholds
        chosen = retune(scores, truth, current, seed=seed)
        self.detector.thresholds = chosen
        kept = chosen.report.get("kept", chosen.report.get("retune", {}).get("kept"))
        self.detector.info = {**self.detector.info, "retuned": {
            "arguments": len(truth), "ids_digest": ids_digest([str(i) for i in index]),
            "source": source, "seed": seed, "kept": kept,
            "note": "thresholds chosen on this sample: scores on it are in-sample"}}
        return chosen

    @property
    def predicts_level1(self) -> bool:
        """Whether the detector was trained on the 54 level-1 values too (``level1 = true``)."""
        return self.detector.predicts_level1

    def _level1_scores(self, x: Any, columns: dict[str, Any]) -> tuple[np.ndarray, pd.Index]:
        return self._scores(x, columns, score=self.detector.predict_level1_proba, width=len(LEVEL1_NAMES))

    def predict_level1_proba(self, x: Any, **columns: Any) -> pd.DataFrame:
        """Each level-1 value's probability (54 columns, ``vd.LEVEL1_NAMES`` order); a detector
        not trained on them says so."""
        scores, index = self._level1_scores(x, columns)
        return score_frame(scores, index, columns=LEVEL1_NAMES)

    def predict_level1(self, x: Any, **columns: Any) -> pd.DataFrame:
        """0/1 per level-1 value under the level-1 thresholds chosen on dev."""
        scores, index = self._level1_scores(x, columns)
        return score_frame(self.detector.decide_level1(scores), index, dtype=np.int8, columns=LEVEL1_NAMES)

    def predict_file(self, source: str | Path, output: str | Path, *, resume: bool = False,
                     chunk_size: int | None = None, unit: str = "argument", language: str = "en",
                     sentence_output: str | Path | None = None,
                     progress: Progress | None = None, log: Callable[[str], None] | None = None,
                     **columns: Any) -> PredictSummary:
        """Label a file of any size into ``output`` (.tsv run file, .csv, .jsonl or .parquet),
        in chunks, resumable: see ``valuedetect.predicting``. ``keep_columns`` copies columns
        of the input to the output; ``unit="sentence"`` labels sentences and sums them up per
        document (see ``predict_documents``)."""
        from valuedetect.predicting import DEFAULT_CHUNK_SIZE, PredictSettings, predict_file

        settings = PredictSettings(Columns(**columns), chunk_size or DEFAULT_CHUNK_SIZE, unit, language,
                                   Path(sentence_output) if sentence_output is not None else None)
        return predict_file(self.detector, source, output, settings, resume=resume, progress=progress,
                            detector_folder=self.folder, log=log)

    def predict_dataset(self, source: str | Path, output: str | Path, *, address: str | None = None,
                        actors: int | None = None, cpus_per_actor: float = 1.0, batch_size: int = 256,
                        output_format: str | None = None, chunk_size: int | None = None,
                        progress: Progress | None = None, **columns: Any) -> RaySummary:
        """Label a file (or a folder or URI of files) on Ray Data: a pool of ``actors``, each
        with this detector loaded once, labels batches of ``batch_size`` texts; ``address``:
        None starts a local cluster for the run, ``"auto"`` joins the one ``ray start --head``
        started. A file ``output`` equals the one ``predict_file`` writes; a folder (ending in
        ``/``, or a URI) gets Ray Data's files (``output_format``: parquet, csv or jsonl). See
        ``valuedetect.raydata``; needs ``pip install 'valuedetect[ray]'``."""
        from valuedetect.predicting import DEFAULT_CHUNK_SIZE
        from valuedetect.raydata import RaySettings, predict_dataset

        return predict_dataset(self.detector, source, output, Columns(**columns),
                               RaySettings(address, actors, cpus_per_actor, batch_size),
                               detector_folder=self.folder, output_format=output_format,
                               chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, progress=progress)

    def predict_documents(self, x: Any, language: str = "en", **columns: Any) -> Documents:
        """Label each document of ``x`` sentence by sentence: the sentences' probabilities and,
        per document, the ``mean``, ``max`` and ``share`` of its sentences and ``detected``
        (in at least one sentence), each a DataFrame with the input's index."""
        import pandas as pd

        from valuedetect.sentences import aggregate, expand

        documents, index = to_arguments(x, Columns(**columns))
        sentences, owners = expand(documents, language)
        scores, _ = self._scores(sentences, {})
        decisions = self.detector.decide(scores)
        summary = aggregate(scores, decisions, owners, len(documents))
        numbers = [int(a.id.rsplit(":", 1)[1]) for a in sentences]
        sentence_index = pd.MultiIndex.from_arrays([index[owners], numbers], names=[index.name, "sentence"])
        frame = score_frame(scores, sentence_index)
        frame.insert(0, "text", [a.premise for a in sentences])
        return Documents(
            sentences=frame, counts=pd.Series(summary.sentences, index=index, name="sentences"),
            mean=score_frame(summary.mean, index), max=score_frame(summary.max, index),
            share=score_frame(summary.share, index), detected=score_frame(summary.detected, index, dtype=np.int8))


@dataclass
class Documents:
    """What ``predict_documents`` finds: the sentence level and the document level."""

    sentences: pd.DataFrame  # index (document, sentence number); the text, then each category's probability
    counts: pd.Series  # sentences per document
    mean: pd.DataFrame
    max: pd.DataFrame
    share: pd.DataFrame
    detected: pd.DataFrame

    def to_pandas(self) -> pd.DataFrame:
        """The document level as one DataFrame, columns (aggregate, category) and ``sentences``."""
        import pandas as pd

        wide = pd.concat({"detected": self.detected, "mean": self.mean, "max": self.max, "share": self.share},
                         axis=1)
        wide[("sentences", "")] = self.counts
        return wide


__all__ = ["Documents", "ValueDetector"]
