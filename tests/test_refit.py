"""The optional refit: after the held-out run, one more fit on training + validation with what dev
chose, into OUTPUT/refit, recorded as having no held-out score; resumable when killed inside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from tests.tiny_models import small_data_dir

from valuedetect.config import TrainConfig
from valuedetect.data import Split, load_split
from valuedetect.detectors import baselines, load_detector
from valuedetect.detectors.encoder import EncoderDetector
from valuedetect.training import run_training


class FitSpy(baselines.RandomPriorDetector):
    """Records what every fit saw."""

    fits: ClassVar[list[tuple[list[str], list[str]]]] = []

    def _fit(self, train: Split, dev: Split | None) -> None:
        FitSpy.fits.append((train.ids, dev.ids if dev is not None else []))
        super()._fit(train, dev)


@pytest.fixture
def spy(monkeypatch):
    from valuedetect import detectors

    monkeypatch.setitem(detectors._REGISTRY, "fitspy", f"{FitSpy.__module__}:FitSpy")
    FitSpy.fits = []
    return FitSpy


def test_refit_trains_on_training_and_validation_keeping_the_dev_thresholds(tmp_path: Path, spy) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=80)
    out = tmp_path / "out"
    result = run_training(TrainConfig(method="fitspy", data_dir=str(data), output=str(out), predict_test=False,
                                      refit=True))
    (held_out_fit, dev), (refit_fit, refit_dev) = spy.fits
    everything = set(load_split("training", data).ids) | set(load_split("validation", data).ids)
    assert set(refit_fit) == everything and len(refit_fit) == len(everything) and refit_dev == []
    assert not set(held_out_fit) & set(result.validation_ids) and set(dev) <= set(refit_fit)
    refitted = load_detector(out / "refit")
    assert refitted.thresholds is not None and result.detector.thresholds is not None
    assert np.allclose(refitted.thresholds.values, result.detector.thresholds.values)
    record = json.loads((out / "refit" / "refit.json").read_text())
    assert record["held_out"] is None and record["training_arguments"] == len(everything)
    assert "no held-out score" in record["note"]
    # the held-out run's own record is unchanged by the refit: it still reports its held-out F1
    results = json.loads((out / "results.json").read_text())
    assert results["validation_held_out"] is True and results["training_arguments"] == len(held_out_fit)


def test_a_run_killed_inside_its_refit_resumes_with_the_refit_only(tmp_path: Path, spy) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=80)
    out = tmp_path / "out"
    config = TrainConfig(method="fitspy", data_dir=str(data), output=str(out), predict_test=False, refit=True)
    first = run_training(config)
    (out / "refit" / "refit.json").unlink()  # killed before the refit's last write
    spy.fits = []
    again = run_training(config, resume=True)
    assert len(spy.fits) == 1 and spy.fits[0][1] == []  # the refit alone ran, without a dev split
    assert (out / "refit" / "refit.json").exists()
    assert again.validation_scores.f1 == pytest.approx(first.validation_scores.f1)


def test_an_encoder_refit_trains_to_the_epoch_dev_chose_without_early_stopping() -> None:
    detector = EncoderDetector()
    assert detector.refit_settings() == {}  # nothing chosen yet
    detector.info["best_epoch"] = 3
    assert detector.refit_settings() == {"epochs": 3, "patience": 0}


def test_a_refit_on_training_alone_is_scored_on_validation_held_out(tmp_path: Path, spy) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=80)
    out = tmp_path / "out"
    result = run_training(TrainConfig(method="fitspy", data_dir=str(data), output=str(out), predict_test=False,
                                      refit=True, refit_data="training"))
    (_, dev), (refit_fit, refit_dev) = spy.fits
    training, validation = load_split("training", data), load_split("validation", data)
    assert set(refit_fit) == set(training.ids) and refit_dev == [] and set(dev) <= set(refit_fit)
    assert not set(refit_fit) & set(validation.ids)  # validation stays out of the refit
    record = json.loads((out / "refit" / "refit.json").read_text())
    assert record["refit_data"] == "training" and record["training_arguments"] == len(training)
    held_out = record["held_out"]["validation"]
    from valuedetect.evaluation import score_run_file

    again = score_run_file(out / "refit" / "validation-run.tsv", data / "labels-validation.tsv")
    assert held_out["f1"] == pytest.approx(again.f1) and "held out" in record["note"]
    refitted = load_detector(out / "refit")  # scored with the thresholds dev chose, not its own
    assert np.allclose(refitted.thresholds.values, result.detector.thresholds.values)
    assert result.validation_scores.f1 == pytest.approx(
        json.loads((out / "results.json").read_text())["validation"]["f1"])  # the first fit's own figure stays


@pytest.mark.parametrize(("settings", "message"), [
    ({"refit": True, "refit_data": "validation"}, "refit_data must be one of"),
    ({"refit_data": "training"}, "read only with refit = true"),
    ({"refit": True, "refit_data": "training", "protocol": "paper"}, "under the paper protocol validation chose"),
    ({"refit": True, "refit_data": "training", "training_fraction": 0.5}, "does not combine with training_fraction"),
    ({"refit": True, "refit_data": "training", "validation_limit": 50}, "does not combine with validation_limit"),
])
def test_refit_data_settings_that_would_mislabel_a_figure_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(method="all-ones", **settings)


def test_a_refit_keeps_the_level1_thresholds_dev_chose(tmp_path: Path, spy, monkeypatch) -> None:
    from valuedetect.taxonomy import LEVEL1_NAMES
    from valuedetect.thresholds import Thresholds

    def fit_choosing_level1(self, train: Split, dev: Split | None) -> None:
        FitSpy.fits.append((train.ids, dev.ids if dev is not None else []))
        baselines.RandomPriorDetector._fit(self, train, dev)
        # only a fit with dev chooses; a refit must carry these over rather than fall back to the default
        self.level1_thresholds = Thresholds.constant(0.123, len(LEVEL1_NAMES)) if dev is not None else None

    monkeypatch.setattr(FitSpy, "_fit", fit_choosing_level1)
    data = small_data_dir(tmp_path / "data", training=300, validation=80)
    for scope in ("training", "training+validation"):
        out = tmp_path / scope
        run_training(TrainConfig(method="fitspy", data_dir=str(data), output=str(out), predict_test=False,
                                 refit=True, refit_data=scope))
        refitted = load_detector(out / "refit")
        assert refitted.level1_thresholds is not None and refitted.level1_thresholds.values[0] == 0.123


def test_a_refit_on_training_killed_inside_resumes_and_says_its_held_out_score(tmp_path: Path, spy) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=80)
    out = tmp_path / "out"
    config = TrainConfig(method="fitspy", data_dir=str(data), output=str(out), predict_test=False, refit=True,
                         refit_data="training")
    first = run_training(config)
    held_out = json.loads((out / "refit" / "refit.json").read_text())["held_out"]["validation"]["f1"]
    (out / "refit" / "refit.json").unlink()  # killed before the refit's last write
    said: list[str] = []
    again = run_training(config, resume=True, log=said.append)
    assert any(f"validation held out: F1 {held_out:.4f}" in line for line in said)
    assert again.dev_scores is not None and again.dev_scores.f1 == pytest.approx(first.dev_scores.f1)
    assert again.validation_scores.f1 == pytest.approx(first.validation_scores.f1)
