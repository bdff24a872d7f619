"""Seeded validation subsets (for slow methods) are reproducible, stated, and scored honestly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import small_data_dir

from valuedetect.config import TrainConfig, from_dict
from valuedetect.data import Split, read_labels, write_run
from valuedetect.errors import ConfigError
from valuedetect.evaluation import score_run_file
from valuedetect.metrics import score
from valuedetect.training import run_training, validation_subset


def test_subset_is_seeded_and_sized(validation: Split) -> None:
    a, note_a = validation_subset(validation, TrainConfig(method="all-ones", validation_limit=50, subset_seed=3))
    b, _ = validation_subset(validation, TrainConfig(method="all-ones", validation_limit=50, subset_seed=3))
    c, _ = validation_subset(validation, TrainConfig(method="all-ones", validation_limit=50, subset_seed=4))
    assert len(a) == 50 and a.ids == b.ids and a.ids != c.ids
    assert note_a == f"seeded sample of 50 of {len(validation)} arguments (seed 3)"
    # Labels travel with their arguments.
    position = {i: k for k, i in enumerate(validation.ids)}
    assert np.array_equal(a.labels, validation.labels[[position[i] for i in a.ids]])
    sampled, note = validation_subset(validation, TrainConfig(method="all-ones", validation_sample=0.1))
    assert len(sampled) == round(0.1 * len(validation)) and "seeded sample" in note
    whole, none = validation_subset(validation, TrainConfig(method="all-ones", validation_limit=10**6))
    assert whole is validation and none is None


@pytest.mark.parametrize("raw, problem", [
    ({"validation_limit": 0}, "at least 1"),
    ({"validation_sample": 1.5}, "(0, 1]"),
    ({"validation_limit": 5, "validation_sample": 0.5}, "not both"),
])
def test_bad_subset_settings_are_config_errors(raw: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        from_dict(TrainConfig, {"method": "all-ones", **raw}, "run.toml")


def test_training_on_a_subset_records_it(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=40, validation=120)
    config = TrainConfig(method="all-ones", data_dir=str(data), output=str(tmp_path / "run"),
                         validation_limit=30, subset_seed=1, predict_test=False)
    result = run_training(config)
    assert len(result.validation_ids) == 30
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["validation_subset"] == "seeded sample of 30 of 120 arguments (seed 1)"
    ids, _ = read_labels(tmp_path / "run" / "validation-run.tsv")
    assert len(ids) == 30


def test_run_ids_only_scores_just_the_run(tmp_path: Path, validation: Split) -> None:
    sub = validation.subset(range(100))
    run = tmp_path / "run.tsv"
    predictions = np.ones_like(sub.labels)
    write_run(run, sub.ids, predictions)
    labels = Path(validation_labels_path())
    official = score_run_file(run, labels, bootstrap=0)
    only = score_run_file(run, labels, bootstrap=0, run_ids_only=True)
    assert only.f1 == pytest.approx(score(sub.labels, predictions).f1)
    assert official.f1 < only.f1  # the other 1796 arguments count as "no value predicted"


def validation_labels_path() -> Path:
    from valuedetect.data import shipped_data_dir

    return shipped_data_dir() / "labels-validation.tsv"


def test_k_per_category_gives_every_category_k_examples(training: Split) -> None:
    from valuedetect.training import training_subset

    few, note = training_subset(training, TrainConfig(method="all-ones", training_per_category=5, subset_seed=2))
    counts = few.labels.sum(axis=0)
    available = training.labels.sum(axis=0)
    assert np.all(counts >= np.minimum(5, available))
    assert len(few) <= 5 * 20 and note.startswith(f"5 per category: {len(few)} of {len(training)}")
    again, _ = training_subset(training, TrainConfig(method="all-ones", training_per_category=5, subset_seed=2))
    other, _ = training_subset(training, TrainConfig(method="all-ones", training_per_category=5, subset_seed=3))
    assert again.ids == few.ids and other.ids != few.ids
    quarter, note = training_subset(training, TrainConfig(method="all-ones", training_fraction=0.25))
    assert len(quarter) == round(0.25 * len(training)) and "seeded 25%" in note
    whole, none = training_subset(training, TrainConfig(method="all-ones"))
    assert whole is training and none is None


def test_training_on_k_per_category_is_recorded(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=40)
    config = TrainConfig(method="tfidf", data_dir=str(data), output=str(tmp_path / "run"),
                         training_per_category=3, predict_test=False)
    run_training(config)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["training_subset"].startswith("3 per category:")
    assert record["training_arguments"] < 300
