"""Thresholds re-chosen on a labelled sample of another domain (issue 15, item 4): the cross-fit
guard keeps them only where they help; ``ValueDetector.retune`` and ``valuedetect retune``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.test_cli import assert_user_error, invoke

import valuedetect as vd
from valuedetect.data import write_arguments, write_labels
from valuedetect.detectors import make_detector
from valuedetect.errors import InputError
from valuedetect.metrics import official_f1
from valuedetect.thresholds import Thresholds, retune


def shifted(n: int, seed: int, cut: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose positives sit above ``cut`` and negatives below: 0.5 thresholds miss them."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 20)) < 0.3).astype(np.int8)
    scores = np.where(labels == 1, rng.uniform(cut, 1.0, (n, 20)), rng.uniform(0.0, cut - 0.02, (n, 20)))
    return scores, labels


def test_retune_replaces_thresholds_that_no_longer_fit():
    scores, labels = shifted(200, 0)
    current = Thresholds.constant(0.3, 20)  # far below where the classes now separate
    chosen = retune(scores, labels, current)
    assert chosen.mode == "retuned" and chosen.report["kept"] == "retuned"
    assert chosen.report["crossfit_f1_retuned"] > chosen.report["sample_f1_current"]
    fresh_scores, fresh_labels = shifted(400, 1)
    before = official_f1(fresh_labels, current.apply(fresh_scores))
    after = official_f1(fresh_labels, chosen.apply(fresh_scores))
    assert after > before + 0.1


def test_retune_keeps_thresholds_that_already_fit():
    scores, labels = shifted(60, 2)
    current = Thresholds(values=[0.69] * 20, mode="per_category", global_value=0.69, report={"tuned_f1": 1.0})
    chosen = retune(scores, labels, current)
    assert chosen.report["retune"]["kept"] == "current"
    assert chosen.values == current.values and chosen.mode == "per_category"
    assert chosen.report["tuned_f1"] == 1.0  # the detector's own record stays beside the retune check


@pytest.fixture(scope="module")
def saved(tmp_path_factory, training) -> Path:
    detector = make_detector("tfidf", {"min_df": 1})
    detector.fit(training.subset(range(300)), training.subset(range(300, 400)))
    return detector.save(tmp_path_factory.mktemp("model") / "tfidf")


def test_value_detector_retune_records_the_sample_and_round_trips(saved, validation, tmp_path):
    det = vd.load(saved)
    sample = validation.subset(range(80))
    chosen = det.retune(sample.arguments, sample.labels, source="sample.tsv")
    assert det.detector.info["retuned"]["arguments"] == 80
    assert det.detector.info["retuned"]["source"] == "sample.tsv"
    assert det.detector.info["retuned"]["kept"] in ("retuned", "current")
    again = vd.load(det.save(tmp_path / "retuned"))
    assert list(again.thresholds) == chosen.values
    texts = [a.premise for a in validation.arguments[100:110]]
    assert (again.predict(texts).to_numpy() == det.predict(texts).to_numpy()).all()


def test_value_detector_retune_matches_frames_by_index_and_refuses_bad_labels(saved, validation):
    import pandas as pd

    det = vd.load(saved)
    sample = validation.subset(range(40))
    frame = pd.DataFrame(sample.labels, index=sample.ids, columns=list(vd.CATEGORY_NAMES))
    by_frame = det.retune(sample.arguments, frame.iloc[::-1]).values  # order must not matter
    det = vd.load(saved)
    by_array = det.retune(sample.arguments, sample.labels).values
    assert by_frame == by_array
    with pytest.raises(InputError, match="shape"):
        det.retune(sample.arguments, sample.labels[:, :5])
    with pytest.raises(InputError, match="no row for"):
        det.retune(sample.arguments, frame.iloc[1:])
    with pytest.raises(InputError, match="too few"):
        det.retune(sample.arguments[:5], sample.labels[:5])


def test_cli_retune_writes_a_new_detector_and_refuses_to_overwrite(saved, validation, tmp_path):
    sample = validation.subset(range(60))
    arguments, labels = tmp_path / "sample.tsv", tmp_path / "sample-labels.tsv"
    write_arguments(arguments, sample.arguments)
    write_labels(labels, sample.ids, sample.labels)
    out = tmp_path / "retuned"
    result = invoke("retune", "--model", saved, "--input", arguments, "--labels", labels, "--output", out)
    assert result.exit_code == 0, result.output
    assert "cross-fit" in result.output and "in-sample" in result.output
    meta = json.loads((out / "detector.json").read_text())
    assert meta["info"]["retuned"]["arguments"] == 60
    before = (out / "detector.json").read_bytes()
    again = invoke("retune", "--model", saved, "--input", arguments, "--labels", labels, "--output", out)
    assert_user_error(again, "not an empty folder")
    assert (out / "detector.json").read_bytes() == before  # nothing already written is destroyed
    missing = invoke("retune", "--model", saved, "--input", arguments, "--labels", tmp_path / "nope.tsv",
                     "--output", tmp_path / "other")
    assert_user_error(missing, "nope.tsv")
    assert not (tmp_path / "other").exists()
