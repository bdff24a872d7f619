"""Reference points every other method must beat: the official all-ones baseline, a random
guesser that matches the training label frequencies, and TF-IDF + logistic regression."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.errors import InputError
from valuedetect.taxonomy import NUM_CATEGORIES
from valuedetect.templates import input_template


@dataclass
class AllOnesConfig(DetectorConfig):
    thresholds: str = "fixed"


class AllOnesDetector(Detector):
    """The official 1-baseline: every category for every argument."""

    type_name = "all-ones"
    config_class = AllOnesConfig

    def _fit(self, train: Split, dev: Split | None) -> None:
        pass

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        return np.ones((len(arguments), NUM_CATEGORIES))


@dataclass
class RandomPriorConfig(DetectorConfig):
    thresholds: str = "fixed"


class RandomPriorDetector(Detector):
    """Says yes to category c with the training frequency of c, at random.

    The draw depends only on the seed and the Argument ID, so the same argument gets the same
    answer in every run and in every order.
    """

    type_name = "random-prior"
    config_class = RandomPriorConfig

    def _fit(self, train: Split, dev: Split | None) -> None:
        assert train.labels is not None
        self.info["prior"] = train.labels.mean(axis=0).tolist()

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        if "prior" not in self.info:
            raise InputError("the random-prior detector must be fitted before predicting")
        prior = np.asarray(self.info["prior"])
        rows = []
        for a in arguments:
            digest = hashlib.sha256(f"{self.config.seed}:{a.id}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            rows.append((rng.random(NUM_CATEGORIES) < prior).astype(np.float64))
        return np.stack(rows)


@dataclass
class TfidfConfig(DetectorConfig):
    template: str = "plain"
    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 100_000
    sublinear_tf: bool = True
    C: float = 4.0
    class_weight: str | None = "balanced"


class TfidfDetector(Detector):
    """Word 1-2-gram TF-IDF and one logistic regression per category (scikit-learn)."""

    type_name = "tfidf"
    config_class = TfidfConfig
    config: TfidfConfig

    def _texts(self, arguments: Sequence[Argument]) -> list[str]:
        template = input_template(self.config.template)
        return [template.render(a) for a in arguments]

    def _fit(self, train: Split, dev: Split | None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline

        assert train.labels is not None
        c = self.config
        self.pipeline = make_pipeline(
            TfidfVectorizer(
                ngram_range=(1, c.ngram_max), min_df=c.min_df, max_features=c.max_features,
                sublinear_tf=c.sublinear_tf, strip_accents="unicode",
            ),
            OneVsRestClassifier(
                LogisticRegression(C=c.C, class_weight=c.class_weight, max_iter=2000, solver="liblinear")
            ),
        )
        self.pipeline.fit(self._texts(train.arguments), train.labels)

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        if not hasattr(self, "pipeline"):
            raise InputError("the tfidf detector must be fitted before predicting")
        return self.pipeline.predict_proba(self._texts(arguments))

    def _save_weights(self, directory: Path) -> None:
        joblib.dump(self.pipeline, directory / "pipeline.joblib")

    def _load_weights(self, directory: Path) -> None:
        path = directory / "pipeline.joblib"
        if not path.exists():
            raise InputError("missing pipeline.joblib", directory)
        self.pipeline = joblib.load(path)
