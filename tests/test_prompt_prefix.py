"""Prefix sharing in label-word scoring (causal LMs) and OA by generation, on tiny random LMs (no
downloads): the shared path gives the unshared path's log-probs, with and without a soft prompt,
and says how many tokens it saved; generated answers are read by whole-synonym matching."""

from __future__ import annotations

import numpy as np
import pytest
from tests.tiny_lm import tiny_language_models

from valuedetect.data import Argument, load_split
from valuedetect.detectors import make_detector
from valuedetect.errors import ConfigError, ValueDetectError
from valuedetect.prompting.scoring import LabelWordScorer, _balanced_batches
from valuedetect.prompting.tuning import attach_soft_prompt
from valuedetect.taxonomy import NUM_CATEGORIES, categories, category
from valuedetect.templates import PROMPT_TEMPLATES, match_synonym


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_language_models(tmp_path_factory.mktemp("prefix-lms"))


ARGUMENTS = load_split("validation").arguments[:2]
BCA = [PROMPT_TEMPLATES["bca"].render_prompt(a, c) for a in ARGUMENTS for c in categories()]
WORDS = ["Yes", "No", "creativity", "wealth"]


def both_paths(scorer: LabelWordScorer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(shared, unshared) log-probs of WORDS, and the shared pass's (processed, prompt) tokens."""
    ids = scorer.token_ids(WORDS)
    scorer.share_prefix, scorer.processed_tokens, scorer.prompt_tokens = True, 0, 0
    shared = scorer.logprobs(texts, ids)
    counts = (scorer.processed_tokens, scorer.prompt_tokens)
    scorer.share_prefix, scorer.processed_tokens, scorer.prompt_tokens = False, 0, 0
    unshared = scorer.logprobs(texts, ids)
    assert scorer.processed_tokens == scorer.prompt_tokens == counts[1]  # same prompts, nothing saved
    return shared, unshared, counts


@pytest.mark.parametrize("batch_size", [7, 16, 1])
def test_shared_prefix_equals_unshared(models, batch_size):
    scorer = LabelWordScorer(str(models["causal"]), max_length=512, batch_size=batch_size)
    shared, unshared, (processed, prompt) = both_paths(scorer, BCA)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert shared.shape == (2 * NUM_CATEGORIES, len(WORDS)) and shared.std() > 0
    assert prompt == sum(len(scorer.encode(t)) for t in BCA)
    assert processed < 0.5 * prompt  # each argument's text runs once, not 20 times


def test_shared_prefix_under_a_soft_prompt(models):
    scorer = LabelWordScorer(str(models["causal"]), max_length=512, batch_size=7)
    bare = scorer.logprobs(BCA, scorer.token_ids(WORDS))
    attach_soft_prompt(scorer, 4, init="random", seed=1)
    assert scorer.prefix_tokens == 4
    shared, unshared, (processed, prompt) = both_paths(scorer, BCA)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    # The soft prompt is really there (the virtual tokens come first in the shared cache).
    assert np.abs(shared - bare).max() > 1e-3
    assert prompt == sum(4 + len(scorer.encode(t)) for t in BCA)
    assert processed < 0.5 * prompt


def test_prompts_sharing_nothing_or_little(models):
    scorer = LabelWordScorer(str(models["causal"]), max_length=512, batch_size=3)
    disjoint = ["Yes we should ban fast food.", "No taxes are too high.", "Children need free schools.",
                "Protect the army budget."]
    shared, unshared, (processed, prompt) = both_paths(scorer, disjoint)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert processed == prompt
    # Mixed: a group, a prompt that is a prefix of another (its suffix keeps one token), loners.
    base = "We should ban fast food because it harms children."
    mixed = [*disjoint[:2], base, base + " Is it about health?", base + " Is it about money? The answer is",
             *disjoint[2:]]
    shared, unshared, (processed, prompt) = both_paths(scorer, mixed)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert processed < prompt


def test_balanced_batches():
    assert [len(b) for b in _balanced_batches(list(range(20)), 16)] == [10, 10]
    assert [len(b) for b in _balanced_batches(list(range(20)), 7)] == [7, 6, 7]
    assert _balanced_batches([4, 5], 16) == [[4, 5]]
    assert [b for batch in _balanced_batches(list(range(9)), 1) for b in batch] == list(range(9))


def detector(models, lm_type="causal", **settings):
    return make_detector("prompt", {"model": str(models[lm_type]), "template": "bca", "batch_size": 7,
                                    "max_length": 512, **settings})


def test_detector_share_prefix_switch(models):
    on = detector(models, share_prefix=True)
    off = detector(models, share_prefix=False)
    np.testing.assert_allclose(on.predict_proba(ARGUMENTS), off.predict_proba(ARGUMENTS), atol=1e-4)
    assert on.info["share_prefix"] is True and off.info["share_prefix"] is False
    assert on.info["prompt_tokens"] == off.info["prompt_tokens"] == off.info["processed_tokens"]
    assert on.info["processed_tokens"] < 0.5 * on.info["prompt_tokens"]
    # Counts are per predict_proba call, not cumulative.
    on.predict_proba(ARGUMENTS[:1])
    assert on.info["prompt_tokens"] < off.info["prompt_tokens"]


# -- OA by generation --------------------------------------------------------------------------


def test_match_synonym_positives_negatives_and_inflections():
    caring = category("Benevolence: caring").synonyms
    assert match_synonym("A caring and kind person.", caring) == "caring"
    assert match_synonym("KINDNESS, mostly", caring) == "kindness"
    assert match_synonym("I am loving", caring) == "love"  # e -> ing
    assert match_synonym("someone who loves and is loved", ["love"]) == "love"
    assert match_synonym("He values families", caring) == "family"  # y -> ies
    assert match_synonym("I reasoned it out", ["reason"]) == "reason"
    assert match_synonym("she reasons; he is reasoning", ["reason"]) == "reason"
    assert match_synonym("two boxes", ["box"]) == "box"
    assert match_synonym("a rule-follower", category("Conformity: rules").synonyms) is None  # nothing stripped
    # Word boundaries: no match inside a longer word.
    assert match_synonym("a funny person", ["fun"]) is None
    assert match_synonym("a reasonable person", ["reason"]) is None
    assert match_synonym("wearing a glove", ["love"]) is None
    # Whole synonyms only: "freedom" is neither "free will" nor "free thought", and "free" is not
    # "intellectual freedom"; the whole phrase matches, hyphen or space alike.
    action, thought = category("Self-direction: action").synonyms, category("Self-direction: thought").synonyms
    assert match_synonym("I love freedom", action) is None
    assert match_synonym("I am free", thought) is None
    assert match_synonym("a believer in Free-Will", action) == "free will"
    assert match_synonym("open minded and curious", thought) is None  # derivations do not match
    assert match_synonym("full of open mindedness", thought) == "open-mindedness"
    assert match_synonym("", thought) is None


def test_generate_mode_end_to_end(models, monkeypatch):
    original = LabelWordScorer.generate

    def generate(self, texts, max_new_tokens, token_ids):
        answers = original(self, texts, max_new_tokens, token_ids)
        answers.texts[14] = "A caring, kind person."  # argument 0, Benevolence: caring
        answers.texts[3] = "A person who enjoys hedonism"  # Hedonism: no synonym named
        return answers

    found = make_detector("prompt", {"model": str(models["causal"]), "template": "oa", "oa_mode": "generate",
                                     "max_new_tokens": 5, "batch_size": 7, "max_length": 512})
    monkeypatch.setattr(LabelWordScorer, "generate", generate)
    scores = found.predict_proba(ARGUMENTS)
    monkeypatch.undo()
    assert scores.shape == (2, NUM_CATEGORIES) and np.all((scores >= 0) & (scores <= 1))
    assert scores[0, 14] == 1.0
    examples = found.info["oa_examples"]
    assert len(examples) == 5 and examples[3]["answer"] == "A person who enjoys hedonism"
    assert examples[0]["argument"] == ARGUMENTS[0].id and examples[0]["category"] == categories()[0].name
    assert examples[3]["matched"] is None and found.info["oa_mode"] == "generate"
    # Unmatched pairs score half the label-word synonym probability (the same first-step
    # distribution, read from the left-padded generation).
    words = make_detector("prompt", {"model": str(models["causal"]), "template": "oa", "batch_size": 7,
                                     "max_length": 512}).predict_proba(ARGUMENTS)
    unmatched = scores < 1.0
    assert unmatched.sum() >= NUM_CATEGORIES
    np.testing.assert_allclose(scores[unmatched], 0.5 * words[unmatched], atol=1e-5)


def test_generation_batched_equals_one_by_one(models):
    scorer = LabelWordScorer(str(models["causal"]), max_length=512, batch_size=4)
    texts = [PROMPT_TEMPLATES["oa"].render_prompt(ARGUMENTS[0], c) for c in categories()[:3]]
    texts.append(PROMPT_TEMPLATES["oa"].render_prompt(Argument("F", "Fast food harms children."), categories()[5]))
    ids = scorer.token_ids(["creativity", "wealth"])
    batched = scorer.generate(texts, 6, ids)
    for k, text in enumerate(texts):
        alone = scorer.generate([text], 6, ids)
        assert alone.texts[0] == batched.texts[k]
        np.testing.assert_allclose(alone.first_logprobs[0], batched.first_logprobs[k], atol=1e-5)
    np.testing.assert_allclose(batched.first_logprobs, scorer.logprobs(texts, ids), atol=1e-5)


def test_generate_mode_on_seq2seq(models):
    found = make_detector("prompt", {"model": str(models["seq2seq"]), "template": "oa", "oa_mode": "generate",
                                     "max_new_tokens": 4, "batch_size": 8, "max_length": 512})
    scores = found.predict_proba(ARGUMENTS[:1])
    assert scores.shape == (1, NUM_CATEGORIES) and np.all((scores >= 0) & (scores <= 1))
    assert found.info["lm_type"] == "seq2seq" and len(found.info["oa_examples"]) == 5


def test_generate_mode_config_errors(models):
    with pytest.raises(ConfigError, match="synonym verbalizer"):
        detector(models, oa_mode="generate")  # bca: Yes/No verbalizer
    with pytest.raises(ConfigError, match="causal or seq2seq"):
        make_detector("prompt", {"model": str(models["masked"]), "template": "oa", "oa_mode": "generate",
                                 "lm_type": "masked"})
    with pytest.raises(ConfigError, match="oa_mode"):
        detector(models, template="oa", oa_mode="generation")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        detector(models, template="oa", oa_mode="generate", max_new_tokens=0)
    # A model detected as masked only once loaded: a clear error before any scoring.
    masked = detector(models, "masked", template="oa", oa_mode="generate")
    with pytest.raises(ConfigError, match="masked"):
        masked.predict_proba(ARGUMENTS[:1])
    with pytest.raises(ValueDetectError, match="causal or seq2seq"):
        LabelWordScorer(str(models["masked"])).generate(["[MASK]"], 3, [1])
