"""Packed scoring on tiny random Llama, Qwen2 and Gemma 3 models built from configs (no files):
an argument and its 20 value questions in one sequence give the scores of 20 separate prompts,
with and without a soft prompt (after the argument, at the end of the question, in front, one per
category), as does the
key/value-cache fallback; prompt tuning's stored argument states give the same scores and carry
gradients to the prompt only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.tiny_lm import ARCHITECTURES, tiny_causal_model, tiny_tokenizer

from valuedetect.errors import ConfigError
from valuedetect.lm.api import LoglikelihoodRequest
from valuedetect.lm.hf_causal import CausalLM
from valuedetect.lm.states import PrefixStates
from valuedetect.taxonomy import NUM_CATEGORIES, categories

ARGUMENT = "Question: Given the premise: fast food harms children's health and the conclusion: We should ban it."


def questions(argument: str = ARGUMENT, per_category: bool = False) -> list[LoglikelihoodRequest]:
    return [LoglikelihoodRequest(argument, ("Yes", "No"), f" Is it based on {c.description}? The answer is",
                                 c.index if per_category else 0) for c in categories()]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(chat=False)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request, tokenizer):
    return tiny_causal_model(request.param, len(tokenizer))


def backend(model, tokenizer, sharing: str, soft: str | None = None, prompts: int = 1, **options) -> CausalLM:
    lm = CausalLM("tiny", model_object=model, tokenizer_object=tokenizer, sharing=sharing, **options)
    if soft:
        lm.attach_soft_prompt(4, prompts, soft, init="random", seed=3)
    return lm


def matrix(results: list[dict[str, float]]) -> np.ndarray:
    return np.array([[r["Yes"], r["No"]] for r in results])


@pytest.mark.parametrize(("soft", "prompts"), [(None, 1), ("after", 1), ("before", 1), ("end", 1),
                                               ("after", NUM_CATEGORIES), ("end", NUM_CATEGORIES)])
def test_packed_equals_twenty_separate_prompts(model, tokenizer, soft, prompts):
    requests = questions(per_category=prompts > 1) + questions(ARGUMENT + " It costs money.", prompts > 1)[:5]
    alone = backend(model, tokenizer, "none", soft, prompts)
    separate = matrix([alone.loglikelihood([r])[0] for r in requests])
    for sharing in ("packed", "kv-cache"):
        lm = backend(model, tokenizer, sharing, soft, prompts, batch_size=NUM_CATEGORIES)
        assert lm.load().mode == sharing
        together = matrix(lm.loglikelihood(requests))
        np.testing.assert_allclose(together, separate, atol=1e-4)
        # The argument's positions were computed once per argument, not 20 times.
        assert lm.usage.prompt_tokens == alone.usage.prompt_tokens == alone.usage.processed_tokens
        assert lm.usage.processed_tokens < 0.6 * lm.usage.prompt_tokens
    if soft:  # the prompt changes the scores
        bare = matrix(backend(model, tokenizer, "packed").loglikelihood(requests))
        assert np.abs(bare - separate).max() > 1e-4


def test_packed_rows_and_batches_split_anywhere(model, tokenizer):
    requests = questions() + questions(ARGUMENT[:40])
    expected = matrix(backend(model, tokenizer, "none").loglikelihood(requests))
    for batch_size, tokens in ((1, 2048), (7, 2048), (20, 120)):
        lm = backend(model, tokenizer, "packed", batch_size=batch_size, max_batch_tokens=tokens)
        np.testing.assert_allclose(matrix(lm.loglikelihood(requests)), expected, atol=1e-4)


@pytest.mark.parametrize("placement", ["after", "end"])
def test_stored_argument_states_give_the_same_scores_and_train_the_prompt(model, tokenizer, placement):
    lm = backend(model, tokenizer, "packed", placement, NUM_CATEGORIES, batch_size=8)
    requests = questions(per_category=True)[:6] + questions(ARGUMENT + " Twice.", True)[:3]
    columns = lm.rule.columns(["Yes", "No"])[0]
    with torch.no_grad():
        fresh = lm.column_logprobs(requests, columns)
    states = PrefixStates()
    lm.soft_prompt.weight.requires_grad_(True)
    for _ in range(2):  # the second pass reads both arguments' states back
        stored = lm.column_logprobs(requests, columns, states=states)
        torch.testing.assert_close(stored, fresh, atol=1e-5, rtol=0)
    assert states.stats()["misses"] == 2 and states.stats()["hits"] == 2
    stored.sum().backward()
    grad = lm.soft_prompt.weight.grad
    assert grad is not None and grad[:6].abs().sum() > 0 and grad[6:].abs().sum() == 0  # used rows only
    assert all(p.grad is None for p in model.parameters())  # the LM stays frozen


def test_other_architectures_fall_back_to_the_key_value_cache(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2)).eval()
    lm = backend(gpt2, tokenizer, "auto")
    assert lm.mode == "kv-cache"
    expected = matrix(backend(gpt2, tokenizer, "none").loglikelihood(questions()))
    np.testing.assert_allclose(matrix(lm.loglikelihood(questions())), expected, atol=1e-4)
    with pytest.raises(ConfigError, match="not available for 'gpt2'"):
        backend(gpt2, tokenizer, "packed")


def test_importing_the_layer_imports_no_backend_library():
    import subprocess
    import sys

    code = ("import sys, valuedetect.lm, valuedetect.detectors.prompt, valuedetect.detectors.llm, valuedetect.nli;"
            "print(sorted(m for m in ('torch', 'transformers', 'llama_cpp', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_equal_untied_embeddings_are_shared_and_counted_once(tokenizer):
    """A transformers copy of a tied GGUF model holds two equal embedding matrices: the backend
    shares them (counted once, held once), and an untied model with its own head stays untied."""
    from tests.tiny_lm import tiny_causal_model

    untied = tiny_causal_model("llama", len(tokenizer))  # its own, different head
    copied = tiny_causal_model("llama", len(tokenizer))
    with torch.no_grad():
        copied.lm_head.weight.copy_(copied.model.embed_tokens.weight)
    separate = sum(p.numel() for p in copied.parameters())
    with torch.no_grad():  # the scores of the untied copy, read before any backend ties it
        ids = torch.tensor([tokenizer("Fast food harms children. Is it good? The answer is")["input_ids"]])
        expected = copied(ids).logits[0, -1]
    lm = backend(copied, tokenizer, "packed").load()
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    assert lm.parameter_counts()[1] == separate - copied.lm_head.weight.numel()
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits[0, -1], expected, atol=1e-6, rtol=0)
    own = backend(untied, tokenizer, "packed").load()
    assert own.model.lm_head.weight is not own.model.model.embed_tokens.weight
    assert own.parameter_counts()[1] == sum(p.numel() for p in untied.parameters())


def test_an_alias_counts_its_published_parameters(model, tokenizer, monkeypatch):
    from valuedetect.lm import gguf

    monkeypatch.setitem(gguf.PARAMETERS, "tiny", 1234)
    lm = backend(model, tokenizer, "packed", "end")
    assert lm.parameter_counts() == (4 * 32, 1234 + 4 * 32)


def test_grouped_mask_keeps_each_pair_to_its_own_argument_and_segment():
    from valuedetect.lm import packing

    past = packing.Tokens.join([packing.Tokens.shared(0, 2), packing.Tokens.shared(1, 3)])
    row = packing.Tokens.join([packing.Tokens.suffix(0, 0, 2, 2), packing.Tokens.suffix(1, 1, 3, 1)])
    allowed = packing.grouped_mask(past, row, torch.float32)[0, 0] == 0
    # keys: argument 0 (2), argument 1 (3), then the row: pair 0 (2 tokens of argument 0), pair 1 (1 of argument 1)
    expected = torch.tensor([
        [1, 1, 0, 0, 0, 1, 0, 0],  # pair 0, first token: its argument and itself
        [1, 1, 0, 0, 0, 1, 1, 0],  # pair 0, second token: also its earlier token
        [0, 0, 1, 1, 1, 0, 0, 1],  # pair 1: argument 1 only, never pair 0
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    windowed = packing.grouped_mask(past, row, torch.float32, window=2)[0, 0] == 0
    assert not windowed[2, 2] and windowed[2, 4]  # position 3 sees position 2, not position 0
