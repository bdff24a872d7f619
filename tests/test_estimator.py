"""ValueClassifier against scikit-learn's estimator contract: sklearn's own checks where they
apply to an estimator of texts with a [n, 20] label matrix, and the rest of the contract (fit
returns self, idempotent fit, clone, Pipeline, grid search, pickling) tested on texts here."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks

import valuedetect as vd
from valuedetect.metrics import score
from valuedetect.taxonomy import CATEGORY_NAMES

# sklearn's checks that need no data, or only call predict before fit: they apply as they are.
APPLICABLE = (
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_estimators_unfitted",
)
# The others cannot apply, for these reasons (each is covered on texts below where it matters):
NOT_APPLICABLE = {
    "numeric X": "sklearn's fitting checks generate a numeric 2-D X (make_blobs); the input here is texts",
    "1-D y": "they fit a class vector y; the target here is a [n, 20] 0/1 matrix of value categories",
    "sample_weight": "the official F1 and the detectors take no sample weights",
    "class_weight": "class weighting is a setting of one method (tfidf's class_weight), not of the adapter",
    "sparse, NaN, complex input": "they feed matrices; texts have no such values",
}


@pytest.fixture(scope="module")
def data(training):
    """400 training arguments as a DataFrame of texts and a label matrix."""
    subset = training.subset(range(400))
    X = pd.DataFrame({"premise": [a.premise for a in subset.arguments],
                      "conclusion": [a.conclusion for a in subset.arguments],
                      "stance": [a.stance for a in subset.arguments]})
    return X, subset.labels


def small() -> vd.ValueClassifier:
    return vd.ValueClassifier(method="tfidf", settings={"min_df": 1})


@pytest.mark.parametrize("name", APPLICABLE)
def test_sklearn_check_that_applies(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(estimator_checks, name)("ValueClassifier", small())


def test_sklearn_skips_its_fitting_checks_for_text_input_and_says_why():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = estimator_checks.check_estimator(small(), on_fail=None)
    assert all(r["status"] == "passed" for r in results)
    assert any("string=True" in str(w.message) for w in caught)


def test_fit_returns_self_keeps_parameters_and_predicts_a_label_matrix(data):
    X, y = data
    model = small()
    params = model.get_params()
    assert model.fit(X, y) is model
    assert model.get_params() == params  # fit does not change what the constructor stored
    predicted = model.predict(X.iloc[:50])
    assert predicted.shape == (50, 20) and set(np.unique(predicted)) <= {0, 1}
    assert model.predict_proba(X.iloc[:50]).shape == (50, 20)
    assert list(model.classes_) == list(CATEGORY_NAMES)
    assert model.score(X, y) == pytest.approx(score(y, model.predict(X)).f1)


def test_fit_is_idempotent_and_rows_are_scored_independently(data):
    X, y = data
    a = small().fit(X, y)
    b = small().fit(X, y).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    whole = a.predict_proba(X)
    np.testing.assert_array_equal(a.predict_proba(X.iloc[10:20]), whole[10:20])
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(a.predict_proba(X.iloc[order]), whole[order])


def test_clone_gives_an_unfitted_copy_with_the_same_parameters(data):
    X, y = data
    model = small().set_params(dev_fraction=0.2)
    copy = clone(model.fit(X, y))
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(X)


def test_works_in_a_pipeline_and_a_grid_search_over_its_settings(data):
    X, y = data
    texts = X["premise"].tolist()
    pipeline = Pipeline([("lower", FunctionTransformer(lambda t: [s.lower() for s in t])), ("values", small())])
    pipeline.fit(texts, y)
    assert pipeline.predict(texts[:5]).shape == (5, 20)
    search = GridSearchCV(pipeline, {"values__settings": [{"min_df": 1, "C": 0.5}, {"min_df": 1, "C": 4.0}]},
                          cv=KFold(2))
    search.fit(texts, y)
    assert search.best_params_["values__settings"]["C"] in (0.5, 4.0)
    assert 0.0 < search.best_score_ < 1.0  # the official F1 of held-out folds


def test_a_fitted_model_pickles(data):
    X, y = data
    model = small().fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X.iloc[:20]), model.predict_proba(X.iloc[:20]))


def test_bad_targets_raise_value_errors(data):
    X, y = data
    with pytest.raises(ValueError, match=r"shape \(400, 20\)"):
        small().fit(X, y[:, :5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        small().fit(X, y * 2)
    with pytest.raises(ValueError, match="dev_fraction"):
        vd.ValueClassifier(dev_fraction=1.5).fit(X, y)
