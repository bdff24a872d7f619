"""Label-word scoring on tiny random masked, seq2seq and causal LMs (no downloads), checked
against a direct computation from each model's logits; the prompt detector end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.tiny_lm import tiny_language_models

from valuedetect.data import Argument, load_split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.lm.registry import make_lm
from valuedetect.taxonomy import NUM_CATEGORIES, categories
from valuedetect.templates import PROMPT_TEMPLATES


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_language_models(tmp_path_factory.mktemp("prompt-lms"))


ARGUMENTS = [*load_split("validation").arguments[:3], Argument("F", "Fast food harms the health of children.")]


def detector(models, lm_type, template, **settings):
    return make_detector("prompt", {"model": str(models[lm_type]), "template": template, "batch_size": 7,
                                    "max_length": 512, **settings})


def direct_logprobs(models, lm_type, text):
    """Log-softmax at the answer position, one unpadded prompt, straight from the model."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models[lm_type])
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        if lm_type == "masked":
            logits = AutoModelForMaskedLM.from_pretrained(models[lm_type])(input_ids=ids).logits[0]
            logits = logits[(ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]]
        elif lm_type == "seq2seq":
            model = AutoModelForSeq2SeqLM.from_pretrained(models[lm_type])
            logits = model(input_ids=ids, decoder_input_ids=torch.tensor([[0]])).logits[0, 0]
        else:
            logits = AutoModelForCausalLM.from_pretrained(models[lm_type])(input_ids=ids).logits[0, -1]
    return tokenizer, torch.log_softmax(logits, -1)


@pytest.mark.parametrize(("lm_type", "template"), [("masked", "mbc"), ("seq2seq", "bca"), ("causal", "bca")])
def test_p_yes_matches_direct_computation(models, lm_type, template):
    scores = detector(models, lm_type, template).predict_proba(ARGUMENTS)
    assert scores.shape == (len(ARGUMENTS), NUM_CATEGORIES)
    assert np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0
    c = categories()[7]
    mask = {"masked": "[MASK]"}.get(lm_type, "")
    tokenizer, logprobs = direct_logprobs(models, lm_type, PROMPT_TEMPLATES[template].render_prompt(ARGUMENTS[1], c,
                                                                                                    mask))
    # The label words' first tokens, by hand for each tokenizer family.
    if lm_type == "masked":  # WordPiece, lower-cased: "yes" and " yes" -> "y" "##e" "##s"
        yes, no = tokenizer.convert_tokens_to_ids(["y"]), tokenizer.convert_tokens_to_ids(["n"])
    elif lm_type == "seq2seq":  # ByT5: " Yes" -> b" " (whitespace, skipped), so "Yes" -> b"Y"
        yes, no = [ord("Y") + 3], [ord("N") + 3]
    else:  # byte-level BPE: both spellings, " Yes" and "Yes", are distinct tokens
        yes = [tokenizer(" Yes")["input_ids"][0], tokenizer("Yes")["input_ids"][0]]
        no = [tokenizer(" No")["input_ids"][0], tokenizer("No")["input_ids"][0]]
        assert len(set(yes)) == 2 and len(set(no)) == 2
    classes = torch.stack([torch.logsumexp(logprobs[yes], 0), torch.logsumexp(logprobs[no], 0)])
    expected = torch.softmax(classes, -1)[0].item()
    assert scores[1, 7] == pytest.approx(expected, abs=1e-5)


def test_oa_synonym_mass_matches_direct_computation(models):
    found = detector(models, "causal", "oa")
    scores = found.predict_proba(ARGUMENTS[:2])
    assert scores.shape == (2, NUM_CATEGORIES) and np.all((scores > 0) & (scores < 1))
    c = categories()[3]
    tokenizer, logprobs = direct_logprobs(models, "causal", PROMPT_TEMPLATES["oa"].render_prompt(ARGUMENTS[0], c))

    def word(w):  # the word's probability: its spellings' distinct first tokens (lm.tokens)
        ids = {tokenizer(v)["input_ids"][0] for v in (w, " " + w)}
        return sum(logprobs[i].exp() for i in ids if tokenizer.decode([i]).strip())

    every = {w for d in categories() for w in d.synonyms}  # each distinct word once
    own = set(c.synonyms)
    expected = sum(word(w) for w in own) / sum(word(w) for w in every)
    assert scores[0, 3] == pytest.approx(float(expected), abs=1e-5)


def test_auto_type_masked_appends_mask_and_left_truncation(models):
    assert make_lm("transformers", str(models["masked"]), max_length=24).kind == "masked"
    assert make_lm("transformers", str(models["seq2seq"])).kind == "seq2seq"
    assert make_lm("transformers", str(models["causal"])).kind == "causal"
    # BCA has no {mask}: a masked LM gets one appended; a long premise is cut from the left.
    found = detector(models, "masked", "bca", max_length=24)
    scores = found.predict_proba(ARGUMENTS[:2])
    assert scores.shape == (2, NUM_CATEGORIES) and found.info["lm_type"] == "masked"


def test_custom_template_and_verbalizer(models):
    templates = {"mine": {"text": "{premise} Is it about {value_label}? {mask}",
                          "verbalizer": {"positive": ["yes", "sure"], "negative": ["no"]}}}
    scores = detector(models, "masked", "mine", templates=templates).predict_proba(ARGUMENTS[:2])
    assert scores.shape == (2, NUM_CATEGORIES) and np.all((scores >= 0) & (scores <= 1))


def test_causal_alias_goes_through_lm_models(models, monkeypatch):
    import valuedetect.lm.gguf as lm_models

    monkeypatch.setattr(lm_models, "gguf_file", lambda name: models["causal"] if name == "tiny-alias" else None)
    monkeypatch.setattr(lm_models, "causal_lm_path", lambda name: str(models["causal"]))
    lm = make_lm("transformers", "tiny-alias").load()
    assert lm.kind == "causal" and lm.model is not None


def test_save_load_round_trip(models, tmp_path):
    validation = load_split("validation").subset(range(8))
    found = detector(models, "causal", "bca").fit(validation, validation)
    assert found.thresholds is not None
    before = found.predict_proba(validation.arguments)
    loaded = load_detector(found.save(tmp_path / "prompt"))
    assert type(loaded).__name__ == "PromptDetector" and loaded.config == found.config
    np.testing.assert_allclose(loaded.predict_proba(validation.arguments), before, atol=1e-6)
    assert np.array_equal(loaded.predict(validation.arguments), found.predict(validation.arguments))
