"""A language-model run killed while it scores validation resumes from the scores it kept
(``valuedetect.scoring_state``): it neither trains nor scores again what it had, ends with the same
run file as an uninterrupted run, and never reuses the scores of another detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tiny_lm import tiny_causal_lm
from tests.tiny_models import small_data_dir

from valuedetect import scoring_state
from valuedetect.config import TrainConfig
from valuedetect.data import load_split
from valuedetect.detectors import load_detector
from valuedetect.detectors.prompt import PromptDetector
from valuedetect.errors import InputError
from valuedetect.training import run_training

SHORT = {"short": {"text": "{premise} Is it {value_label}? The answer is",
                   "verbalizer": {"positive": ["Yes"], "negative": ["No"]}}}


class Killed(Exception):
    """Stands in for the SIGKILL: scoring stops half-way."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring-state")
    model = tiny_causal_lm(root / "lm")
    data = small_data_dir(root / "data", training=60, validation=70)
    return model, data


def config(setup, output: Path) -> TrainConfig:
    model, data = setup
    return TrainConfig(method="prompt", data_dir=str(data), output=str(output), predict_test=False,
                       detector={"model": str(model), "template": "short", "templates": SHORT, "max_length": 256})


def dying(setup, original):
    """predict_proba_levels that dies when asked for the second chunk of validation."""
    validation = set(load_split("validation", setup[1]).ids)
    chunks: list[str] = []

    def dies_on_the_second_chunk(self, arguments):
        if arguments and arguments[0].id in validation:
            chunks.append(arguments[0].id)
            if len(chunks) == 2:
                raise Killed
        return original(self, arguments)

    return dies_on_the_second_chunk


def kill_while_scoring(setup, train_config: TrainConfig, monkeypatch) -> None:
    """Run ``train_config`` until it dies on its second validation chunk, every chunk saved."""
    monkeypatch.setattr(scoring_state, "SAVE_EVERY_SECONDS", 0.0)
    original = PromptDetector.predict_proba_levels
    monkeypatch.setattr(PromptDetector, "predict_proba_levels", dying(setup, original))
    with pytest.raises(Killed):
        run_training(train_config)
    monkeypatch.setattr(PromptDetector, "predict_proba_levels", original)


def count_scored(monkeypatch) -> list[int]:
    """The sizes of the chunks scored from now on."""
    original = PromptDetector.predict_proba_levels
    scored: list[int] = []

    def counts(self, arguments):
        scored.append(len(arguments))
        return original(self, arguments)

    monkeypatch.setattr(PromptDetector, "predict_proba_levels", counts)
    return scored


def test_killed_while_scoring_resumes_where_it_stopped(setup, tmp_path, monkeypatch):
    run_training(config(setup, tmp_path / "reference"))
    reference = (tmp_path / "reference" / "validation-run.tsv").read_text()
    out = tmp_path / "run"
    kill_while_scoring(setup, config(setup, out), monkeypatch)
    assert (out / "detector.json").exists() and not (out / "results.json").exists()
    state = json.loads((out / scoring_state.STATE_FILE).read_text())
    assert state["validation"]["done"] == PromptDetector.resumable_chunk
    assert len(state["dev"]["ids"]) > 0

    def must_not_run(self, *args, **kwargs):
        raise AssertionError("a resumed run trained or scored dev again")

    scored = count_scored(monkeypatch)
    monkeypatch.setattr(PromptDetector, "fit", must_not_run)
    monkeypatch.setattr(PromptDetector, "predict_proba", must_not_run)
    run_training(config(setup, out), resume=True)
    assert sum(scored) == 70 - PromptDetector.resumable_chunk  # only what the killed run had not kept
    assert (out / "validation-run.tsv").read_text() == reference
    assert not (out / scoring_state.STATE_FILE).exists()  # a finished run keeps its scores in its run files
    compute = json.loads((out / "results.json").read_text())["compute"]
    assert compute["validation_cpu_seconds"] > 0


def test_scores_of_another_detector_are_not_reused(setup, tmp_path, monkeypatch):
    out = tmp_path / "run"
    kill_while_scoring(setup, config(setup, out), monkeypatch)
    meta = json.loads((out / "detector.json").read_text())
    meta["thresholds"]["values"] = [0.5] * 20  # the saved detector is no longer the one that scored
    (out / "detector.json").write_text(json.dumps(meta))
    scored = count_scored(monkeypatch)
    messages: list[str] = []
    run_training(config(setup, out), resume=True, log=messages.append)
    assert sum(scored) == 70
    assert any("another detector" in m for m in messages)


def test_a_folder_without_its_soft_prompt_trains_again_instead_of_scoring_untrained(setup, tmp_path, monkeypatch):
    tuned = config(setup, tmp_path / "run")
    tuned.detector.update(soft_prompt_tokens=4, max_steps=2, batch_size=4, soft_prompt_placement="end")
    kill_while_scoring(setup, tuned, monkeypatch)
    (tmp_path / "run" / "soft_prompt.safetensors").unlink()  # as in a clone: records, no weights
    with pytest.raises(InputError, match=r"soft_prompt\.safetensors"):
        load_detector(tmp_path / "run")
    messages: list[str] = []
    run_training(tuned, resume=True, log=messages.append)
    assert any("cannot be loaded" in m and "training again" in m for m in messages)
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "soft_prompt.safetensors").exists()
