"""Prompt tuning on tiny random LMs (no downloads): the LM stays bit-identical, only the soft
prompt trains, the training loss falls, budgets stop training, negatives are subsampled as stated,
and a saved detector scores identically after loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.tiny_lm import tiny_language_models

from valuedetect.data import Argument, Split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.errors import ValueDetectError
from valuedetect.prompt_tuning import argument_batches, constant_loss, sample_pairs
from valuedetect.taxonomy import NUM_CATEGORIES, categories
from valuedetect.templates import PROMPT_TEMPLATES, VERBALIZERS


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_language_models(tmp_path_factory.mktemp("tuning-lms"))


# 8 free-text arguments; an argument mentioning children is positive for the first 10 categories.
PREMISES = ["We should ban fast food for children.", "Fast food is cheap.", "Children need free schools.",
            "Taxes are too high.", "Protect children from harm.", "The army needs money.",
            "Children deserve healthy food.", "Cars should be electric."]
SPLIT = Split("train", [Argument(str(i), p) for i, p in enumerate(PREMISES)],
              np.array([[1] * 10 + [0] * 10 if "hildren" in p else [0] * NUM_CATEGORIES for p in PREMISES],
                       dtype=np.float32))
HIDDEN = 32
FEW = SPLIT.arguments[:2]
# A short template keeps the tiny runs fast; the built-in ones are used in the first test.
SHORT = {"short": {"text": "{premise} Is it {value_label}? The answer is",
                   "verbalizer": {"positive": ["Yes"], "negative": ["No"]}}}


def detector(models, lm_type="causal", template="short", **settings):
    config = {"model": str(models[lm_type]), "template": template, "templates": SHORT, "batch_size": 16,
              "max_length": 512,
              "soft_prompt_tokens": 4, "epochs": 1, "lr": 0.1, "thresholds": "fixed", **settings}
    return make_detector("prompt", config)


def loss(found):
    p = np.clip(found.predict_proba(SPLIT.arguments), 1e-7, 1 - 1e-7)
    return float(-np.mean(SPLIT.labels * np.log(p) + (1 - SPLIT.labels) * np.log(1 - p)))


@pytest.mark.parametrize(("lm_type", "template", "placement"), [
    ("causal", "bca", "after"), ("seq2seq", "bca", "after"), ("masked", "mbc", "after"),
    ("causal", "bca", "end"), ("seq2seq", "bca", "end"), ("masked", "mbc", "end")])
def test_lm_frozen_prompt_trained_and_counted(models, lm_type, template, placement):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    auto = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM, "masked": AutoModelForMaskedLM}
    found = detector(models, lm_type, template, max_steps=3, batch_size=4, soft_prompt_placement=placement)
    initial = found.lm().soft_prompt.state()
    found.fit(SPLIT)
    trained = found.lm().soft_prompt.state()
    assert list(trained) == list(initial)
    assert not all(torch.equal(trained[k], initial[k]) for k in trained)
    original = auto[lm_type].from_pretrained(models[lm_type]).state_dict()
    after = found.lm().model.state_dict()
    assert set(after) == set(original)
    assert all(torch.equal(after[k], original[k]) for k in original)
    assert found.info["parameters_trainable"] == 4 * HIDDEN
    assert found.info["parameters_total"] == 4 * HIDDEN + sum(v.numel() for v in auto[lm_type].from_pretrained(
        models[lm_type]).parameters())
    assert found.info["lm_type"] == lm_type


@pytest.mark.parametrize(("placement", "prompts"), [("after", "shared"), ("before", "shared"), ("end", "shared"),
                                                   ("after", "per-category")])
def test_training_lowers_the_loss(models, placement, prompts):
    found = detector(models, epochs=5, negative_ratio=10.0, lr=0.03, soft_prompt_tokens=8,
                     soft_prompt_placement=placement, soft_prompts=prompts)
    before = loss(found)
    found.fit(SPLIT)
    after = loss(found)
    assert after < before - 0.02, (before, after)
    history = found.info["history"]
    assert len(history) == 5 and history[-1]["loss"] < history[0]["loss"]
    assert found.info["budget"]["stopped_by"] is None and found.info["budget"]["epochs_completed"] == 5
    # Every epoch states the constant-answer loss of its pairs beside its own.
    assert all(0 < h["constant_loss"] <= np.log(2) for h in history)
    bank = found.lm().soft_prompt.weight
    assert tuple(bank.shape) == ((NUM_CATEGORIES if prompts == "per-category" else 1), 8, HIDDEN)
    assert found.info["parameters_trainable"] == bank.numel()
    if placement in ("after", "end"):  # each argument's states computed once, then reused every epoch
        states = history[-1]["argument_states"]
        assert states["misses"] == len(PREMISES) and states["hits"] > 0


def test_max_steps_stops_and_is_recorded(models):
    found = detector(models, epochs=50, max_steps=5, batch_size=4).fit(SPLIT)
    budget = found.info["budget"]
    assert budget["steps"] == 5 and budget["stopped_by"] == "max_steps" and budget["max_steps"] == 5
    # the protocol reads this: a prompt cut by its budget inside the first epoch is under-trained
    from valuedetect.protocol import under_trained

    training = found.info["training"]
    assert training["stopped_by"] == "budget" and 0 < training["epochs_completed"] < 1
    assert "stopped by its budget" in under_trained(training)
    assert budget["epochs_completed"] < 50
    assert "negative" in found.info["negative_sampling"]


def test_negative_subsampling_keeps_positives_and_ratio():
    labels = SPLIT.labels
    positives = set(np.flatnonzero(labels.reshape(-1) > 0.5))
    for ratio in (0.5, 1.0, 2.0):
        pairs = sample_pairs(labels, ratio, seed=3, epoch=0)
        chosen = set(pairs.tolist())
        assert positives <= chosen
        assert len(chosen - positives) == round(ratio * len(positives))
        assert len(pairs) == len(chosen)
    assert np.array_equal(sample_pairs(labels, 1.0, 3, 1), sample_pairs(labels, 1.0, 3, 1))
    assert not np.array_equal(sample_pairs(labels, 1.0, 3, 0), sample_pairs(labels, 1.0, 3, 1))
    assert len(sample_pairs(labels, 100.0, 3, 0)) == labels.size  # capped at every negative


@pytest.mark.parametrize("lm_type", ["causal", "seq2seq"])
def test_save_load_round_trip(models, tmp_path, lm_type):
    found = detector(models, lm_type, max_steps=4, prompt_init="random").fit(SPLIT)
    before = found.predict_proba(FEW)
    folder = found.save(tmp_path / "tuned")
    assert sorted(p.name for p in folder.iterdir()) == ["detector.json", "soft_prompt.safetensors"]
    assert (folder / "soft_prompt.safetensors").stat().st_size < 4 * HIDDEN * 4 + 1000  # the prompt, not the LM
    loaded = load_detector(folder)
    assert loaded.config == found.config
    np.testing.assert_array_equal(loaded.predict_proba(FEW), before)
    # Saving a loaded detector again (before it scored anything) keeps the prompt.
    again = load_detector(loaded.save(tmp_path / "again"))
    np.testing.assert_array_equal(again.predict_proba(FEW), before)


def test_zero_shot_unchanged_without_soft_prompt(models, tmp_path):
    found = detector(models, soft_prompt_tokens=0)
    before = found.predict_proba(FEW)
    found.fit(SPLIT)
    assert found.lm().soft_prompt is None and found.info["parameters_trainable"] == 0
    assert found.info["parameters_total"] == sum(p.numel() for p in found.lm().model.parameters())
    np.testing.assert_array_equal(found.predict_proba(FEW), before)
    folder = found.save(tmp_path / "zero")
    assert sorted(p.name for p in folder.iterdir()) == ["detector.json"]


def test_config_errors(models):
    with pytest.raises((ValueError, ValueDetectError), match="cannot be prompt-tuned"):
        detector(models, template="oa", templates={}, oa_mode="generate")
    with pytest.raises((ValueError, ValueDetectError), match="prompt_init"):
        detector(models, prompt_init="words")


def test_oa_synonym_verbalizer_is_tuned_on_own_synonyms_against_the_rest(models):
    """OA prompt tuning: the loss is the cross-entropy of synonym_probability (own synonyms
    against all others). With one category always present and the others never, training must
    move the answer's mass towards that category's synonyms."""
    labels = np.zeros((len(PREMISES), NUM_CATEGORIES), dtype=np.float32)
    labels[:, 0] = 1
    split = Split("train", SPLIT.arguments, labels)

    def gap(found):  # how much more the asked category 0 scores than the others
        p = found.predict_proba(split.arguments)
        return float(p[:, 0].mean() - p[:, 1:].mean())

    # In front (the paper's placement): every position of the random LM's pass sees the prompt.
    found = detector(models, template="oa", templates={}, epochs=4, negative_ratio=10.0, lr=0.3,
                     soft_prompt_tokens=8, soft_prompt_placement="before")
    before = gap(found)
    found.fit(split)
    # A random 32-wide LM's answer distribution is nearly flat and a soft prompt moves it little,
    # so the margin is small (measured +0.003), but the direction is what the loss must produce.
    assert gap(found) > before + 0.001, (before, gap(found))


def test_verbalizer_classes_are_what_training_and_scoring_read():
    yes_no = VERBALIZERS["yes_no"]
    assert yes_no.words() == ("Yes", "No") and yes_no.classes(categories()[0]) == ([0], [1])
    synonyms = PROMPT_TEMPLATES["oa"].verbalizer
    words = synonyms.words()
    assert len(words) == len(set(words)) and set(categories()[4].synonyms) <= set(words)
    positive, negative = synonyms.classes(categories()[4])
    assert {words[k] for k in positive} == set(categories()[4].synonyms)
    assert sorted(positive + negative) == list(range(len(words)))
    # P(category) is the asked category's share of the mass over all synonyms.
    logprobs = {w: -1.0 for w in words}
    share = len(positive) / len(words)
    assert synonyms.probability(logprobs, categories()[4]) == pytest.approx(share)


def test_batches_hold_whole_arguments_and_constant_loss():
    pairs = sample_pairs(SPLIT.labels, 1.0, seed=3, epoch=0)
    batches = argument_batches(pairs, NUM_CATEGORIES, 4, seed=3, epoch=0)
    assert sorted(p for b in batches for p in b) == sorted(pairs.tolist())
    arguments = [{p // NUM_CATEGORIES for p in b} for b in batches]
    assert all(not (a & b) for i, a in enumerate(arguments) for b in arguments[i + 1 :])  # never split
    assert all(len(b) >= 4 for b in batches[:-1])
    assert batches == argument_batches(pairs, NUM_CATEGORIES, 4, seed=3, epoch=0)
    assert constant_loss(np.array([1, 0])) == pytest.approx(np.log(2))
    assert constant_loss(np.array([1, 1])) == 0.0


def test_interrupted_prompt_tuning_resumes_to_the_same_prompt(models, tmp_path):
    """Killed mid-epoch (here: an exception from the progress callback after 5 steps), the run
    continues from its checkpoint and ends with the prompt an uninterrupted run has."""
    from valuedetect.prompt_tuning import CHECKPOINT_FILE

    settings = {"epochs": 2, "batch_size": 4, "negative_ratio": 2.0, "prompt_init": "random", "checkpoint_every": 2}
    whole = detector(models, **settings).fit(SPLIT)
    expected = whole.lm().soft_prompt.state()

    class Killed(Exception):
        pass

    def kill_after_five(stage, done, total):
        kill_after_five.calls += 1
        if kill_after_five.calls == 5:
            raise Killed

    kill_after_five.calls = 0
    first = detector(models, **settings)
    first.checkpoint_dir = tmp_path / "checkpoint"
    first.progress = kill_after_five
    with pytest.raises(Killed):
        first.fit(SPLIT)
    assert (tmp_path / "checkpoint" / CHECKPOINT_FILE).exists()

    second = detector(models, **settings)
    second.checkpoint_dir, second.resume = tmp_path / "checkpoint", True
    lines = []
    second.log = lines.append
    second.fit(SPLIT)
    assert any("resumed at epoch 1" in line for line in lines), lines
    resumed = second.lm().soft_prompt.state()
    assert all(torch.allclose(resumed[k], expected[k], atol=1e-6) for k in expected)
    assert second.info["budget"]["steps"] == whole.info["budget"]["steps"]

    other = detector(models, **{**settings, "lr": 0.5})
    other.checkpoint_dir, other.resume = tmp_path / "checkpoint", True
    with pytest.raises(ValueDetectError, match="other settings"):
        other.fit(SPLIT)


def test_bfloat16_scores_near_float32_and_its_prompt_trains(models):
    """dtype = bfloat16 loads the frozen model in bf16 (the CPU's bf16 units); its scores differ
    from float32's by rounding only, and the soft prompt (kept in float32) still learns."""
    full = detector(models, soft_prompt_tokens=0)
    half = detector(models, soft_prompt_tokens=0, dtype="bfloat16")
    difference = np.abs(half.predict_proba(SPLIT.arguments) - full.predict_proba(SPLIT.arguments))
    assert next(half.lm().model.parameters()).dtype == torch.bfloat16
    assert next(full.lm().model.parameters()).dtype == torch.float32
    assert 0 < difference.max() < 0.05
    tuned = detector(models, epochs=5, negative_ratio=10.0, lr=0.03, soft_prompt_tokens=8,
                     soft_prompt_placement="end", dtype="bfloat16")
    before = loss(tuned)
    tuned.fit(SPLIT)
    assert tuned.lm().soft_prompt.weight.dtype == torch.float32
    assert loss(tuned) < before - 0.02


def test_unknown_dtype_is_refused(models):
    with pytest.raises((ValueError, ValueDetectError), match="dtype must be one of float32, bfloat16"):
        detector(models, dtype="int4")


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_warns_only_on_a_cpu_that_would_emulate_it(models, monkeypatch, native):
    # Emulated bf16 matrix products ran ~34x slower than float32 on an AVX2-only CPU: a user who
    # copied dtype = "bfloat16" from the paper grid must hear why a run crawls.
    import warnings

    from valuedetect.lm import hf

    monkeypatch.setattr(hf, "native_bfloat16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector(models, soft_prompt_tokens=0, dtype="bfloat16").lm().load()
    said = [str(w.message) for w in caught if "bfloat16 instructions" in str(w.message)]
    assert bool(said) is not native, said
    if said:
        assert "float32" in said[0]
