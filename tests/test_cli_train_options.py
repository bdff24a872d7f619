"""`valuedetect train` options that override a method's settings from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tiny_models import small_data_dir
from typer.testing import CliRunner

from valuedetect.cli import _detector_overrides, app
from valuedetect.errors import InputError

runner = CliRunner()


def test_set_values_are_read_as_toml_else_text() -> None:
    assert _detector_overrides(["few_shot_k=5", "use_cache=false", "model=smollm2", "timeout=2.5"]) == {
        "few_shot_k": 5, "use_cache": False, "model": "smollm2", "timeout": 2.5}
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        _detector_overrides(["few_shot_k"])


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--method", "tfidf", "--set", "bogus=1", "--output", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "command line: unknown key 'bogus'" in result.output
    assert not (tmp_path / "r").exists()


def test_bad_llm_strategy_is_refused_before_any_work(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--method", "llm", "--strategy", "telepathy",
                                 "--output", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "strategy must be one of per-value, all-in-one, few-shot, cot" in result.output


def test_limit_scores_a_stated_subset(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=30, validation=80)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--method", "all-ones", "--data-dir", str(data), "--output", str(out),
                                 "--limit", "25", "--subset-seed", "7", "--no-predict-test"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["validation_subset"] == "seeded sample of 25 of 80 arguments (seed 7)"
    assert len((out / "validation-run.tsv").read_text().splitlines()) == 1 + 25
    assert not (out / "test-run.tsv").exists()
    assert "seeded sample of 25 of 80" in result.output


def test_template_option_takes_the_papers_spelling_and_reaches_the_detector(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--method", "prompt", "--template", "BCA", "--set", "max_length=0",
                                 "--output", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "max_length must be at least 1" in result.output  # template 'bca' was accepted first
    result = runner.invoke(app, ["train", "--method", "prompt", "--template", "XYZ", "--output", str(tmp_path / "r")])
    assert result.exit_code == 2 and "XYZ" in result.output
    assert not (tmp_path / "r").exists()


def test_refit_writes_a_second_detector_said_to_have_no_held_out_score(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=120, validation=40)
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", "--method", "tfidf", "--data-dir", str(data), "--output", str(out),
                                 "--no-predict-test", "--refit"])
    assert result.exit_code == 0, result.output
    assert (out / "refit" / "detector.json").exists()
    assert "refit on training + validation: no held-out score" in " ".join(result.output.split())
    assert json.loads((out / "refit" / "refit.json").read_text())["training_arguments"] == 160


def test_refit_data_training_refits_on_training_and_prints_its_held_out_score(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=120, validation=40)
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", "--method", "tfidf", "--data-dir", str(data), "--output", str(out),
                                 "--no-predict-test", "--refit-data", "training"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "refit on training, validation held out: F1" in said
    record = json.loads((out / "refit" / "refit.json").read_text())
    assert record["training_arguments"] == 120 and record["held_out"]["validation"]["f1"] >= 0
    assert 0 <= record["held_out"]["validation"]["ranking_auc"] <= 1
    assert 0 <= json.loads((out / "results.json").read_text())["validation"]["ranking_auc"] <= 1
    result = runner.invoke(app, ["train", "--method", "tfidf", "--data-dir", str(data), "--output", str(tmp_path / "x"),
                                 "--refit-data", "everything"])
    assert result.exit_code != 0 and "refit_data must be one of" in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


def test_cross_fit_options_leave_one_fold_out_and_are_recorded(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=120, validation=30)
    out = tmp_path / "fold"
    result = runner.invoke(app, ["train", "--method", "tfidf", "--data-dir", str(data), "--output", str(out),
                                 "--cross-fit-folds", "3", "--cross-fit-fold", "1", "--no-predict-test"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "detector.json").read_text())["info"]
    plan = info["protocol"]["cross_fit"]
    fit = info["protocol"]["fit_arguments"]
    assert plan["folds"] == 3 and plan["fold"] == 1 and 0 < plan["held_out_arguments"] < fit
    record = json.loads((out / "results.json").read_text())
    assert record["training_arguments"] == fit - plan["held_out_arguments"]
    assert record["training_subset"].startswith("cross-fitting fold 1 of 3 left out")
    result = runner.invoke(app, ["train", "--method", "tfidf", "--data-dir", str(data),
                                 "--output", str(tmp_path / "x"), "--cross-fit-folds", "3"])
    assert result.exit_code == 2 and "together" in result.output
    assert not (tmp_path / "x").exists()
