"""The reference detectors: all-ones (the official baseline), random-prior and TF-IDF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from valuedetect.data import Argument
from valuedetect.detectors import load_detector, make_detector
from valuedetect.detectors.baselines import AllOnesDetector, RandomPriorDetector, TfidfDetector
from valuedetect.errors import InputError
from valuedetect.metrics import score


def test_all_ones_reproduces_the_test_vector(training, validation):
    detector = make_detector("all-ones").fit(training.subset(range(50)), validation)
    assert detector.thresholds is not None and detector.thresholds.mode == "fixed"
    predictions = detector.predict(validation.arguments)
    assert predictions.shape == (1896, 20) and predictions.min() == 1
    s = score(validation.labels, predictions)
    assert (round(s.f1, 5), round(s.precision, 5), round(s.recall, 5)) == (0.28722, 0.16770, 1.0)


def test_all_ones_on_free_text_and_empty_input():
    detector = AllOnesDetector()
    assert detector.predict([Argument(id="t", premise="anything")]).tolist() == [[1] * 20]
    assert detector.predict_proba([]).shape == (0, 20)


def test_random_prior_is_deterministic_per_argument_id(training, validation):
    detector = make_detector("random-prior").fit(training)
    args = validation.arguments[:300]
    first = detector.predict_proba(args)
    again = detector.predict_proba(args)
    reversed_order = detector.predict_proba(args[::-1])[::-1]
    one_at_a_time = np.concatenate([detector.predict_proba([a]) for a in args[:20]])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, reversed_order)
    np.testing.assert_array_equal(first[:20], one_at_a_time)
    # The draw depends on the ID, not the text; another seed draws differently.
    renamed = [Argument(id=a.id, premise="other text", conclusion="c", stance="against") for a in args]
    np.testing.assert_array_equal(first, detector.predict_proba(renamed))
    other_seed = make_detector("random-prior", {"seed": 99}).fit(training)
    assert not np.array_equal(first, other_seed.predict_proba(args))
    assert set(np.unique(first)) <= {0.0, 1.0}


def test_random_prior_matches_the_training_frequencies(training):
    detector = make_detector("random-prior").fit(training)
    prior = training.labels.mean(axis=0)
    np.testing.assert_allclose(detector.info["prior"], prior)
    predicted = detector.predict(training.arguments).mean(axis=0)
    # 5393 draws per category: the standard error is at most 0.007.
    np.testing.assert_allclose(predicted, prior, atol=0.03)
    assert np.corrcoef(predicted, prior)[0, 1] > 0.95


def test_random_prior_save_load_and_unfitted(tmp_path, training, validation):
    detector = make_detector("random-prior").fit(training.subset(range(500)))
    detector.save(tmp_path / "rp")
    loaded = load_detector(tmp_path / "rp")
    assert isinstance(loaded, RandomPriorDetector)
    np.testing.assert_array_equal(loaded.predict(validation.arguments[:100]),
                                  detector.predict(validation.arguments[:100]))
    with pytest.raises(InputError, match="fitted"):
        RandomPriorDetector().predict_proba(validation.arguments[:2])


def test_tfidf_save_load_gives_identical_scores(tmp_path, training, validation):
    train = training.subset(range(400))
    val = validation.subset(range(200))
    detector = make_detector("tfidf", {"seed": 3}).fit(train, val)
    assert detector.thresholds is not None and detector.thresholds.mode in ("global", "per_category")
    scores = detector.predict_proba(validation.arguments[200:400])
    assert scores.shape == (200, 20) and scores.min() >= 0.0 and scores.max() <= 1.0
    assert scores.std() > 0.01  # it learned something argument-specific
    folder = detector.save(tmp_path / "model")
    assert (folder / "detector.json").exists() and (folder / "tfidf.safetensors").exists()
    assert (folder / "tfidf-vocabulary.json").exists() and not (folder / "pipeline.joblib").exists()  # no pickle
    meta = json.loads((folder / "detector.json").read_text(encoding="utf-8"))
    assert meta["type"] == "tfidf" and meta["config"]["seed"] == 3
    for loaded in (load_detector(folder), TfidfDetector.load(folder)):
        assert isinstance(loaded, TfidfDetector)
        assert loaded.config == detector.config
        assert loaded.thresholds == detector.thresholds
        np.testing.assert_array_equal(loaded.predict_proba(validation.arguments[200:400]), scores)
        np.testing.assert_array_equal(loaded.predict(validation.arguments[200:400]),
                                      detector.predict(validation.arguments[200:400]))
    free_text = [Argument(id="t1", premise="We must protect the environment for future generations.")]
    assert load_detector(folder).predict_proba(free_text).shape == (1, 20)


def test_tfidf_scores_are_those_of_the_sklearn_pipeline(training, validation):
    """The arrays the detector keeps compute what the fitted scikit-learn pipeline computes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    train = training.subset(range(400))
    detector = make_detector("tfidf").fit(train)
    c = detector.config
    pipeline = make_pipeline(detector._vectorizer(), OneVsRestClassifier(
        LogisticRegression(C=c.C, class_weight=c.class_weight, max_iter=2000, solver="liblinear")))
    pipeline.fit(detector._texts(train.arguments), train.labels)
    arguments = validation.arguments[:100]
    np.testing.assert_allclose(detector.predict_proba(arguments), pipeline.predict_proba(detector._texts(arguments)),
                               rtol=1e-9, atol=1e-12)


def test_a_legacy_pickle_is_refused_unless_the_user_opts_in(tmp_path, training, validation, monkeypatch):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    train = training.subset(range(300))
    detector = make_detector("tfidf").fit(train)
    folder = detector.save(tmp_path / "old")
    # What older versions wrote: the fitted pipeline as a joblib pickle, and nothing else.
    c = detector.config
    pipeline = make_pipeline(detector._vectorizer(), OneVsRestClassifier(
        LogisticRegression(C=c.C, class_weight=c.class_weight, max_iter=2000, solver="liblinear")))
    pipeline.fit(detector._texts(train.arguments), train.labels)
    (folder / "tfidf.safetensors").unlink()
    (folder / "tfidf-vocabulary.json").unlink()
    joblib.dump(pipeline, folder / "pipeline.joblib")
    monkeypatch.delenv("VALUEDETECT_ALLOW_PICKLE", raising=False)
    with pytest.raises(InputError, match=r"pickle.*VALUEDETECT_ALLOW_PICKLE=1"):
        load_detector(folder)
    monkeypatch.setenv("VALUEDETECT_ALLOW_PICKLE", "1")
    loaded = load_detector(folder)
    arguments = validation.arguments[:50]
    np.testing.assert_allclose(loaded.predict_proba(arguments), pipeline.predict_proba(detector._texts(arguments)),
                               rtol=1e-9, atol=1e-12)
    loaded.save(folder)  # converted: the pickle is gone and the folder loads without the opt-in
    assert not (folder / "pipeline.joblib").exists()
    monkeypatch.delenv("VALUEDETECT_ALLOW_PICKLE")
    np.testing.assert_array_equal(load_detector(folder).predict_proba(arguments), loaded.predict_proba(arguments))


def test_damaged_tfidf_weights_are_an_input_error(tmp_path, training):
    folder = make_detector("tfidf").fit(training.subset(range(300))).save(tmp_path / "m")
    (folder / "tfidf.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="unreadable TF-IDF weights"):
        load_detector(folder)


def test_tfidf_unfitted_and_broken_folders(tmp_path, validation):
    with pytest.raises(InputError, match="fitted"):
        TfidfDetector().predict_proba(validation.arguments[:2])
    with pytest.raises(InputError, match="no such detector folder"):
        load_detector(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no detector\.json"):
        load_detector(tmp_path / "empty")
    AllOnesDetector().save(tmp_path / "ones")
    with pytest.raises(InputError, match="not 'tfidf'"):
        TfidfDetector.load(tmp_path / "ones")


def test_tfidf_on_the_full_training_set_beats_the_baseline(training, validation):
    detector = make_detector("tfidf").fit(training, validation)
    s = score(validation.labels, detector.predict(validation.arguments))
    assert s.f1 > 0.35
    assert s.f1 > 0.28722 + 0.05
    assert detector.thresholds.report["tuned_f1"] == pytest.approx(s.f1)
