"""The organisers' ``pyvalues`` package as a real client of a real server (uvicorn on loopback).

pyvalues' remote classifiers POST ``{id, language, segments}`` and validate the ``values`` they
get back into their own value classes; here those must equal the calibrated scores derived from
our own ``/v1/predict``, and binarising at pyvalues' default 0.5 must give the detector's decisions.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from pyvalues import Document, OriginalValues, RefinedCoarseValues, RefinedValues
from pyvalues.remote_classifier import (
    OriginalValuesRemoteClassifier,
    RefinedCoarseValuesRemoteClassifier,
    RefinedValuesRemoteClassifier,
)
from tests.serve_helpers import running_server, shipped_model

from valuedetect.serve.app import create_app
from valuedetect.serve.settings import ServeSettings
from valuedetect.taxonomy import CATEGORY_NAMES
from valuedetect.value_systems import REFINED, calibrate

pytestmark = pytest.mark.slow  # the shipped detector behind a real server
KEY = "s3cret"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(create_app(ServeSettings(api_key=None), shipped_model())) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    with running_server(create_app(ServeSettings(api_key=KEY), shipped_model())) as base:
        yield base


@pytest.fixture(scope="module")
def segments(validation) -> list[str]:
    return [a.premise for a in validation.arguments[:8]]


def expected(base: str, segments: list[str], headers: dict | None = None) -> tuple[list[dict], list[list[str]]]:
    """Calibrated refined scores and the detected categories, from /v1/model and /v1/predict."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        info = http.get("/v1/model").json()
        response = http.post("/v1/predict", json={"arguments": [{"text": s} for s in segments]})
    assert response.status_code == 200, response.text
    thresholds = np.array([c["threshold"] for c in info["categories"]])
    results = response.json()["results"]
    raw = np.array([[r["probabilities"][c] for c in CATEGORY_NAMES] for r in results])
    calibrated = calibrate(raw, thresholds)
    rows = [{c: float(row[i]) for i, c in enumerate(CATEGORY_NAMES) if c in REFINED} for row in calibrated]
    return rows, [r["detected"] for r in results]


def as_dict(values) -> dict[str, float]:
    return dict(zip(values.names(), values.to_list(), strict=True))


# pyvalues 0.11.1's RefinedValues.from_list (which binarize() uses) reads its list with the two
# Self-direction values in the opposite order to names()/to_list(), so binarize() swaps them.
_SWAPPED = ("Self-direction: thought", "Self-direction: action")
PYVALUES_BINARIZE_SWAPS_SELF_DIRECTION = as_dict(RefinedValues(self_direction_action=1.0).binarize(0.5)) == {
    n: float(n == _SWAPPED[0]) for n in RefinedValues.names()}


def binarized(values: RefinedValues) -> set[str]:
    """The values pyvalues' binarize(0.5) marks, corrected for the swap above where present."""
    marked = {n for n, x in as_dict(values.binarize(0.5)).items() if x == 1.0}
    if PYVALUES_BINARIZE_SWAPS_SELF_DIRECTION:
        swap = {_SWAPPED[0]: _SWAPPED[1], _SWAPPED[1]: _SWAPPED[0]}
        marked = {swap.get(n, n) for n in marked}
    return marked


def test_binarize_helper_recognises_pyvalues_behaviour():
    for name in RefinedValues.names():
        values = RefinedValues.model_validate({n: float(n == name) for n in RefinedValues.names()})
        assert as_dict(values) == {n: float(n == name) for n in RefinedValues.names()}
        assert binarized(values) == {name}


def check_refined(got: list[RefinedValues], rows: list[dict], detected: list[list[str]]) -> None:
    assert len(got) == len(rows)
    for values, row, found in zip(got, rows, detected, strict=True):
        assert isinstance(values, RefinedValues)
        scores = as_dict(values)
        assert set(scores) == set(REFINED)  # 19: no Universalism: objectivity
        for name in REFINED:
            assert scores[name] == pytest.approx(row[name], abs=1e-6), name
        assert binarized(values) == {c for c in found if c in REFINED}
        assert {n for n, x in scores.items() if x >= 0.5} == {c for c in found if c in REFINED}


def test_refined_values_through_pyvalues(server, segments):
    rows, detected = expected(server, segments)
    classifier = RefinedValuesRemoteClassifier(url=f"{server}/pyvalues/refined")
    got = list(classifier.classify_segments_for_refined_values(segments))
    check_refined(got, rows, detected)
    assert any(found for found in detected), "no segment had any value detected: pick other segments"
    # One segment, and a whole document, through pyvalues' other entry points.
    single = classifier.classify_for_refined_values(segments[0])
    # (alone or in a smaller batch, padding moves scores by ~1e-7)
    assert as_dict(single) == pytest.approx(as_dict(got[0]), abs=1e-5)
    annotated = classifier.classify_document_for_refined_values(Document(id="doc-1", segments=segments[:3]))
    assert annotated.id == "doc-1"
    assert [as_dict(v) for v in annotated.values] == [pytest.approx(as_dict(v), abs=1e-5) for v in got[:3]]


def test_coarse_systems_match_pyvalues_own_merging(server, segments):
    refined = list(RefinedValuesRemoteClassifier(url=f"{server}/pyvalues/refined")
                   .classify_segments_for_refined_values(segments))
    coarse = list(RefinedCoarseValuesRemoteClassifier(url=f"{server}/pyvalues/refined-coarse")
                  .classify_segments_for_refined_coarse_values(segments))
    original = list(OriginalValuesRemoteClassifier(url=f"{server}/pyvalues/original")
                    .classify_segments_for_original_values(segments))
    assert len(coarse) == len(original) == len(segments)
    for r, c, o in zip(refined, coarse, original, strict=True):
        assert isinstance(c, RefinedCoarseValues) and isinstance(o, OriginalValues)
        assert len(c.names()) == 12 and len(o.names()) == 10
        # Our server's merge must agree with what pyvalues computes from the refined scores.
        assert as_dict(c) == pytest.approx(as_dict(r.coarse_values()), abs=1e-9)
        assert as_dict(o) == pytest.approx(as_dict(r.original_values()), abs=1e-9)
        assert as_dict(c.binarize(0.5)) == as_dict(r.binarize(0.5).coarse_values())


def test_api_key_through_pyvalues(keyed_server, segments, capsys):
    rows, detected = expected(keyed_server, segments[:3], headers={"Authorization": f"Bearer {KEY}"})
    url = f"{keyed_server}/pyvalues/refined"
    got = list(RefinedValuesRemoteClassifier(url=url, authorization_token=KEY)
               .classify_segments_for_refined_values(segments[:3]))
    check_refined(got, rows, detected)
    capsys.readouterr()
    # pyvalues prints an HTTP error and yields nothing: no scores leak without the right key.
    for token in (None, "wrong"):
        refused = list(RefinedValuesRemoteClassifier(url=url, authorization_token=token)
                       .classify_segments_for_refined_values(segments[:3]))
        assert refused == []
        assert "Status: 401" in capsys.readouterr().out
    # Access to the health check needs no key.
    assert httpx.get(f"{keyed_server}/health", timeout=10).status_code == 200


def test_unsupported_language_through_pyvalues(server, segments, capsys):
    classifier = OriginalValuesRemoteClassifier(url=f"{server}/pyvalues/original")
    assert list(classifier.classify_segments_for_original_values(segments[:2], "de")) == []
    out = capsys.readouterr().out
    assert "Status: 422" in out and "unsupported_language" in out
    # The server carries on.
    assert len(list(classifier.classify_segments_for_original_values(segments[:2], "en"))) == 2
