"""Sharing an argument's computation between its questions in the prompt detector (causal LMs)
and OA by generation, on tiny random LMs (no downloads): the shared paths give the unshared
path's log-probs, with and without a soft prompt, and say how many tokens they saved; generated
answers are read by whole-synonym matching. Packing on Llama, Qwen2 and Gemma 3 is tested in
test_lm_packing.py."""

from __future__ import annotations

import numpy as np
import pytest
from tests.tiny_lm import tiny_language_models

from valuedetect.data import Argument, load_split
from valuedetect.detectors import make_detector
from valuedetect.errors import ConfigError, ValueDetectError
from valuedetect.lm.api import GenerateRequest, LoglikelihoodRequest
from valuedetect.lm.hf_causal import CausalLM
from valuedetect.lm.registry import make_lm
from valuedetect.taxonomy import NUM_CATEGORIES, categories, category
from valuedetect.templates import PROMPT_TEMPLATES, match_synonym


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_language_models(tmp_path_factory.mktemp("prefix-lms"))


ARGUMENTS = load_split("validation").arguments[:2]
WORDS = ("Yes", "No", "creativity", "wealth")
BCA = [LoglikelihoodRequest(*PROMPT_TEMPLATES["bca"].render_parts(a, c)[:1], WORDS,
                            PROMPT_TEMPLATES["bca"].render_parts(a, c)[1]) for a in ARGUMENTS for c in categories()]


def scores(lm: CausalLM, requests: list[LoglikelihoodRequest]) -> np.ndarray:
    return np.array([[r[w] for w in WORDS] for r in lm.loglikelihood(requests)])


def both_paths(models, requests, sharing="auto", batch_size=7, soft=None):
    """(shared, unshared) log-probs of WORDS, and the shared pass's (processed, prompt) tokens."""
    shared_lm = CausalLM(str(models["causal"]), max_length=512, batch_size=batch_size, sharing=sharing)
    unshared_lm = CausalLM(str(models["causal"]), max_length=512, batch_size=batch_size, sharing="none")
    if soft:
        for lm in (shared_lm, unshared_lm):
            lm.attach_soft_prompt(4, placement=soft, init="random", seed=1)
    shared = scores(shared_lm, requests)
    unshared = scores(unshared_lm, requests)
    counts = (shared_lm.usage.processed_tokens, shared_lm.usage.prompt_tokens)
    # Same prompts, nothing saved.
    assert unshared_lm.usage.processed_tokens == unshared_lm.usage.prompt_tokens == counts[1]
    return shared, unshared, counts


@pytest.mark.parametrize("sharing", ["packed", "kv-cache"])
@pytest.mark.parametrize("batch_size", [7, 16, 1])
def test_shared_prefix_equals_unshared(models, batch_size, sharing):
    shared, unshared, (processed, prompt) = both_paths(models, BCA, sharing, batch_size)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert shared.shape == (2 * NUM_CATEGORIES, len(WORDS)) and shared.std() > 0
    lm = CausalLM(str(models["causal"]), max_length=512)
    assert prompt == sum(len(lm.pieces(r).context) + len(lm.pieces(r).suffix) for r in BCA)
    if batch_size > 1:
        assert processed < 0.5 * prompt  # each argument's text runs once (or twice), not 20 times


@pytest.mark.parametrize("placement", ["after", "before"])
def test_shared_prefix_under_a_soft_prompt(models, placement):
    bare = scores(CausalLM(str(models["causal"]), max_length=512), BCA)
    shared, unshared, (processed, prompt) = both_paths(models, BCA, soft=placement)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    # The soft prompt is really there.
    assert np.abs(shared - bare).max() > 1e-3
    lm = CausalLM(str(models["causal"]), max_length=512)
    assert prompt == sum(4 + len(lm.pieces(r).context) + len(lm.pieces(r).suffix) for r in BCA)
    assert processed < 0.5 * prompt


def test_prompts_sharing_nothing_or_little(models):
    disjoint = [LoglikelihoodRequest(t, WORDS) for t in ("Yes we should ban fast food.", "No taxes are too high.",
                                                         "Children need free schools.", "Protect the army budget.")]
    shared, unshared, (processed, prompt) = both_paths(models, disjoint, batch_size=3)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert processed == prompt
    # Mixed: a group, a prompt that is a prefix of another (its suffix keeps one token), loners.
    base = "We should ban fast food because it harms children."
    mixed = [*disjoint[:2], *(LoglikelihoodRequest(t, WORDS) for t in (
        base, base + " Is it about health?", base + " Is it about money? The answer is")), *disjoint[2:]]
    shared, unshared, (processed, prompt) = both_paths(models, mixed, batch_size=3)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    assert processed < prompt


def test_rows_hold_at_most_batch_size_questions(models):
    lm = CausalLM(str(models["causal"]), max_length=512, batch_size=7).load()
    units = lm._units(BCA)
    groups = lm._groups(units)
    assert [len(g) for g in groups] == [NUM_CATEGORIES, NUM_CATEGORIES]  # one group per argument
    assert [len(r) for r in lm._chunks(units, groups[0])] == [7, 7, 6]
    assert [k for row in lm._chunks(units, groups[1]) for k in row] == groups[1]


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
    original = CausalLM.generate_until

    def generate(self, requests, on_result=None):
        answers = original(self, requests, on_result)
        answers[14].text = "A caring, kind person."  # argument 0, Benevolence: caring
        answers[3].text = "A person who enjoys hedonism"  # Hedonism: no synonym named
        return answers

    found = make_detector("prompt", {"model": str(models["causal"]), "template": "oa", "oa_mode": "generate",
                                     "max_new_tokens": 5, "batch_size": 7, "max_length": 512})
    monkeypatch.setattr(CausalLM, "generate_until", generate)
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
    lm = CausalLM(str(models["causal"]), max_length=512, generate_batch_size=4)
    parts = [PROMPT_TEMPLATES["oa"].render_parts(ARGUMENTS[0], c) for c in categories()[:3]]
    parts.append(PROMPT_TEMPLATES["oa"].render_parts(Argument("F", "Fast food harms children."), categories()[5]))
    words = ("creativity", "wealth")
    requests = [GenerateRequest("".join(p), max_tokens=6, score_words=words) for p in parts]
    batched = lm.generate_until(requests)
    for k, request in enumerate(requests):
        (alone,) = lm.generate_until([request])
        assert alone.text == batched[k].text
        for w in words:
            assert alone.first_logprobs[w] == pytest.approx(batched[k].first_logprobs[w], abs=1e-5)
    # The first generation step's log-probs are loglikelihood's (the prompt as one text).
    scored = lm.loglikelihood([LoglikelihoodRequest("".join(p), words) for p in parts])
    for got, expected in zip(batched, scored, strict=True):
        for w in words:
            assert got.first_logprobs[w] == pytest.approx(expected[w], abs=1e-5)


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
        make_lm("transformers", str(models["masked"])).generate_until([GenerateRequest("Is it?", 3)])
