"""Reference points every other method must beat: the official all-ones baseline, a random
guesser that matches the training label frequencies, and TF-IDF + logistic regression."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split, atomic_write_json
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


ALLOW_PICKLE_ENV = "VALUEDETECT_ALLOW_PICKLE"
TFIDF_VOCABULARY = "tfidf-vocabulary.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
LEGACY_PICKLE = "pipeline.joblib"


class TfidfDetector(Detector):
    """Word 1-2-gram TF-IDF and one logistic regression per category (scikit-learn).

    Saved as data, never as a pickle (a pickle runs any code it holds when loaded, and saved
    detectors get shared): the vocabulary as JSON, the IDF weights and the 20 regressions'
    coefficients as safetensors. Scores are computed from exactly those arrays, fitted or
    loaded, so a loaded detector scores bit for bit like the one that was saved.
    """

    type_name = "tfidf"
    config_class = TfidfConfig
    config: TfidfConfig

    def _texts(self, arguments: Sequence[Argument]) -> list[str]:
        template = input_template(self.config.template)
        return [template.render(a) for a in arguments]

    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.config
        return TfidfVectorizer(ngram_range=(1, c.ngram_max), min_df=c.min_df, max_features=c.max_features,
                               sublinear_tf=c.sublinear_tf, strip_accents="unicode")

    def _fit(self, train: Split, dev: Split | None) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline

        assert train.labels is not None
        c = self.config
        pipeline = make_pipeline(
            self._vectorizer(),
            OneVsRestClassifier(
                LogisticRegression(C=c.C, class_weight=c.class_weight, max_iter=2000, solver="liblinear")
            ),
        )
        pipeline.fit(self._texts(train.arguments), train.labels)
        self._take_pipeline(pipeline)

    def _take_pipeline(self, pipeline: Any) -> None:
        """Keep the fitted vectorizer and the regressions as plain arrays."""
        vectorizer, classifier = pipeline[0], pipeline[-1]
        coef, intercept = [], []
        for estimator in classifier.estimators_:
            if hasattr(estimator, "coef_"):
                coef.append(np.asarray(estimator.coef_, dtype=np.float64).ravel())
                intercept.append(float(np.asarray(estimator.intercept_).ravel()[0]))
            else:  # a category that was constant in training: sklearn's constant predictor
                coef.append(np.zeros(len(vectorizer.vocabulary_)))
                intercept.append(np.inf if float(np.ravel(estimator.y_)[0]) > 0.5 else -np.inf)
        self.vectorizer = vectorizer
        self.coef = np.stack(coef)
        self.intercept = np.asarray(intercept, dtype=np.float64)

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        if not hasattr(self, "coef"):
            raise InputError("the tfidf detector must be fitted before predicting")
        from scipy.special import expit

        features = self.vectorizer.transform(self._texts(arguments))
        return expit(np.asarray(features @ self.coef.T) + self.intercept)

    def _save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        vocabulary = {term: int(index) for term, index in self.vectorizer.vocabulary_.items()}
        atomic_write_json(directory / TFIDF_VOCABULARY, {"format": 1, "vocabulary": vocabulary})
        tmp = directory / f".{TFIDF_WEIGHTS}.{os.getpid()}.partial"
        save_file({"idf": np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float64),
                   "coef": np.ascontiguousarray(self.coef), "intercept": self.intercept}, str(tmp))
        os.replace(tmp, directory / TFIDF_WEIGHTS)
        (directory / LEGACY_PICKLE).unlink(missing_ok=True)  # a re-saved legacy folder is safe now

    def _load_weights(self, directory: Path) -> None:
        if not (directory / TFIDF_WEIGHTS).exists() and (directory / LEGACY_PICKLE).exists():
            self._load_pickle(directory / LEGACY_PICKLE)
            return
        for name in (TFIDF_VOCABULARY, TFIDF_WEIGHTS):
            if not (directory / name).exists():
                raise InputError(f"missing {name}", directory)
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            meta = json.loads((directory / TFIDF_VOCABULARY).read_text(encoding="utf-8"))
            vocabulary = {str(k): int(v) for k, v in meta["vocabulary"].items()}
            arrays = load_file(str(directory / TFIDF_WEIGHTS))
            idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as error:
            raise InputError(f"unreadable TF-IDF weights ({type(error).__name__}: {error})", directory) from None
        size = len(vocabulary)
        if (sorted(vocabulary.values()) != list(range(size)) or idf.shape != (size,)
                or coef.shape != (NUM_CATEGORIES, size) or intercept.shape != (NUM_CATEGORIES,)):
            raise InputError(f"inconsistent TF-IDF weights: {size} terms, idf {idf.shape}, coef {coef.shape}, "
                             f"intercept {intercept.shape}", directory)
        vectorizer = self._vectorizer()
        vectorizer.vocabulary_ = vocabulary
        vectorizer.idf_ = idf
        self.vectorizer, self.coef, self.intercept = vectorizer, coef, intercept

    def _load_pickle(self, path: Path) -> None:
        """A folder saved by an older version: loaded only if the user says it is trusted."""
        if os.environ.get(ALLOW_PICKLE_ENV) != "1":
            raise InputError(
                f"holds a pickle ({LEGACY_PICKLE}, saved by an older valuedetect), and loading a pickle runs any "
                f"code it contains; if you trust where this folder came from, set {ALLOW_PICKLE_ENV}=1 to load it "
                "(saving the detector again then writes the safe format)", path.parent)
        import joblib

        self._take_pipeline(joblib.load(path))
