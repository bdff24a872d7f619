"""The 54 level-1 values: an encoder trained on them as 54 more outputs predicts them with their
own dev-chosen thresholds, saves and loads them, and a training run writes and scores the
official level-1 run file; detectors not trained on them say so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import small_data_dir, tiny_bert

from valuedetect.config import TrainConfig
from valuedetect.data import load_split, read_labels
from valuedetect.detectors import load_detector, make_detector
from valuedetect.errors import InputError
from valuedetect.metrics import score
from valuedetect.taxonomy import LEVEL1_NAMES
from valuedetect.training import run_training


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def _settings(model_dir: str, **extra: object) -> dict:
    base = {"model": model_dir, "epochs": 2, "batch_size": 8, "trainable_layers": 1, "lr": 1e-3,
            "head_lr": 1e-2, "patience": 0, "thresholds": "global", "seed": 3}
    return base | extra


def test_an_encoder_trained_on_level1_predicts_both_levels_and_round_trips(tiny_model_dir, tmp_path) -> None:
    train = load_split("training", level1=True).subset(range(64))
    dev = load_split("validation", level1=True).subset(range(40))
    detector = make_detector("encoder", _settings(tiny_model_dir, level1=True)).fit(train, dev)
    level2, level1 = detector.predict_proba_levels(dev.arguments)
    assert level2.shape == (40, 20) and level1 is not None and level1.shape == (40, 54)
    assert np.allclose(detector.predict_proba(dev.arguments), level2)
    assert np.allclose(detector.predict_level1_proba(dev.arguments), level1)
    assert detector.level1_thresholds is not None and len(detector.level1_thresholds.values) == 54
    # the level-1 thresholds were chosen on dev's level-1 labels, as the categories' on theirs
    assert detector.level1_thresholds.mode == "global"
    detector.save(tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    assert loaded.predicts_level1
    assert np.allclose(loaded.predict_level1_proba(dev.arguments), level1, atol=1e-6)
    assert np.array_equal(loaded.predict_level1(dev.arguments), detector.predict_level1(dev.arguments))


def test_a_detector_not_trained_on_level1_says_so(tiny_model_dir) -> None:
    train = load_split("training").subset(range(32))
    detector = make_detector("encoder", _settings(tiny_model_dir, epochs=1)).fit(train)
    assert not detector.predicts_level1
    assert detector.predict_proba_levels(train.arguments[:3])[1] is None
    with pytest.raises(InputError, match="level-1"):
        detector.predict_level1_proba(train.arguments[:3])


def test_level1_training_without_level1_labels_names_the_missing_file(tiny_model_dir) -> None:
    train = load_split("training").subset(range(32))  # level-1 labels not loaded
    with pytest.raises(InputError, match=r"level1-labels-training\.tsv"):
        make_detector("encoder", _settings(tiny_model_dir, level1=True)).fit(train)


def test_level1_is_refused_for_the_nli_task(tiny_model_dir) -> None:
    from valuedetect.errors import ConfigError

    with pytest.raises(ConfigError, match="level1 = true needs the values task"):
        make_detector("encoder", _settings(tiny_model_dir, level1=True, template="pair"), task="nli")


def test_a_training_run_writes_and_scores_the_official_level1_run_file(tiny_model_dir, tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=120, validation=40, test=10, level1=True)
    out = tmp_path / "out"
    result = run_training(TrainConfig(method="encoder", data_dir=str(data), output=str(out),
                                      detector=_settings(tiny_model_dir, level1=True)))
    path = out / "validation-level1-run.tsv"
    assert path.read_text().split("\n")[0].split("\t")[1:] == list(LEVEL1_NAMES)
    ids, decisions = read_labels(path, level=1)
    validation = load_split("validation", data, level1=True)
    assert ids == validation.ids
    expected = score(validation.level1_labels, decisions).f1
    record = json.loads((out / "results.json").read_text())
    assert record["level1"]["validation"]["f1"] == pytest.approx(expected)
    assert result.level1 is not None and result.level1["validation"]["f1"] == pytest.approx(expected)
    assert len(read_labels(out / "test-level1-run.tsv", level=1)[0]) == 10
    # the official scorer reads the file as a level-1 run
    from valuedetect.evaluation import score_run_file

    assert score_run_file(path, data / "level1-labels-validation.tsv", bootstrap=0).f1 == pytest.approx(expected)


def test_the_cli_trains_level1_and_prints_its_held_out_measure(tiny_model_dir, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from valuedetect.cli import app

    data = small_data_dir(tmp_path / "data", training=80, validation=30, level1=True)
    result = CliRunner().invoke(app, [
        "train", "--method", "encoder", "--data-dir", str(data), "--output", str(tmp_path / "out"),
        "--set", f"model={tiny_model_dir!r}", "--set", "epochs=1", "--set", "trainable_layers=1",
        "--set", "level1=true"])
    assert result.exit_code == 0, result.output
    assert "level-1 values (54): validation F1" in result.output and "held-out" in result.output
    assert (tmp_path / "out" / "validation-level1-run.tsv").exists()
