"""The transformers causal backend on a tiny random Llama, with chat prompts: valid
log-probabilities, shared-prefix reuse that changes nothing but the work done, and honest token
counts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tests.tiny_lm import tiny_causal_lm

from valuedetect import templates as prompts
from valuedetect.data import Argument
from valuedetect.errors import ValueDetectError
from valuedetect.lm.api import BudgetExhausted, GenerateRequest, LoglikelihoodRequest
from valuedetect.lm.api import LoglikelihoodRequest as Request
from valuedetect.lm.hf import length_batches
from valuedetect.lm.hf_causal import CausalLM as TransformersLM
from valuedetect.lm.prefix import prefix_groups
from valuedetect.lm.registry import make_lm
from valuedetect.taxonomy import categories

ARGUMENTS = [
    Argument("A1", "fast food harms children's health", "We should ban fast food", "in favor of"),
    Argument("A2", "people must be free to choose what they eat", "We should ban fast food", "against"),
    Argument("T1", "Tradition and religion keep families together."),
]


def encode(lm: TransformersLM, request: LoglikelihoodRequest) -> list[int]:
    """A request's whole token sequence, as the backend builds it."""
    pieces = lm.pieces(request)
    return list(pieces.lead + pieces.context + pieces.suffix)


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="module")
def requests() -> list[Request]:
    return [LoglikelihoodRequest(prompts.per_value_prompt(a, c)) for a in ARGUMENTS for c in categories()]


def test_scores_are_valid_log_probabilities(tiny_lm_dir: Path, requests: list[Request]) -> None:
    lm = TransformersLM(str(tiny_lm_dir))
    for scores in lm.loglikelihood(requests):
        assert set(scores) == {"Yes", "No"}
        assert all(v <= 0 for v in scores.values())
        assert math.exp(scores["Yes"]) + math.exp(scores["No"]) <= 1 + 1e-6


def test_prefix_reuse_gives_the_same_scores_as_full_prompts(tiny_lm_dir: Path, requests: list[Request]) -> None:
    shared = TransformersLM(str(tiny_lm_dir), batch_size=7)  # groups of 20 split over 3 batches
    reused = shared.loglikelihood(requests)
    alone = TransformersLM(str(tiny_lm_dir))
    separate = [alone.loglikelihood([r])[0] for r in requests]
    for a, b in zip(reused, separate, strict=True):
        for choice in ("Yes", "No"):
            assert a[choice] == pytest.approx(b[choice], abs=1e-4)
    assert alone.usage.processed_tokens == alone.usage.prompt_tokens  # nothing shared one at a time


def test_scores_match_the_models_own_forward_pass(tiny_lm_dir: Path, requests: list[Request]) -> None:
    import torch

    lm = TransformersLM(str(tiny_lm_dir), max_batch_tokens=64)  # many small length-sorted batches
    scores = lm.loglikelihood(requests[:20])
    yes_ids, no_ids = lm.token_ids("Yes"), lm.token_ids("No")
    for request, got in zip(requests[:20], scores, strict=True):
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([encode(lm, request)])).logits[0, -1]
        logprobs = torch.log_softmax(logits, dim=-1)
        assert got["Yes"] == pytest.approx(float(torch.logsumexp(logprobs[yes_ids], 0)), abs=1e-4)
        assert got["No"] == pytest.approx(float(torch.logsumexp(logprobs[no_ids], 0)), abs=1e-4)


def test_batches_are_sorted_by_length_and_bounded() -> None:
    members = [10, 11, 12, 13, 14]
    batches = [[members[k] for k in b] for b in length_batches([9, 2, 3, 2, 8], 3, 20)]
    assert batches == [[11, 13, 12], [14, 10]]  # 3 rows at most; 2 rows x 9 tokens <= 20


def test_token_accounting_counts_the_prefix_once_per_argument(tiny_lm_dir: Path, requests: list[Request]) -> None:
    lm = TransformersLM(str(tiny_lm_dir))
    lm.loglikelihood(requests)
    encoded = [encode(lm, r) for r in requests]
    assert lm.usage.prompt_tokens == sum(len(e) for e in encoded)
    expected = 0
    for start in range(0, len(encoded), 20):
        block = encoded[start : start + 20]
        common = min(next((k for k, column in enumerate(zip(*block, strict=False)) if len(set(column)) > 1),
                          min(map(len, block))), min(map(len, block)) - 1)
        expected += common + sum(len(e) - common for e in block)
    assert lm.usage.processed_tokens == expected
    assert lm.usage.processed_tokens < 0.5 * lm.usage.prompt_tokens
    assert lm.usage.requests == len(requests)


def test_prefix_groups_keep_arguments_apart() -> None:
    a = [[1, 2, 3, 4, 5, k] for k in range(3)]
    b = [[1, 2, 9, 9, 9, k] for k in range(3)]
    assert prefix_groups(a + b) == [[0, 1, 2], [3, 4, 5]]
    # A lone leftover question of one argument does not pull in the next argument's questions.
    assert prefix_groups([a[2], *b]) == [[0], [1, 2, 3]]
    assert prefix_groups([[7], [8]]) == [[0], [1]]
    # Values that share a word ("Security: personal", "Security: societal") stay in the group.
    base = list(range(1, 11))
    c = [[*base, 50, 51, 7], [*base, 50, 51, 8], [*base, 60], [*base, 61]]
    assert prefix_groups(c) == [[0, 1, 2, 3]]
    assert prefix_groups([]) == []


def test_plain_text_prompts_and_leading_space_answers(tiny_lm_dir: Path) -> None:
    lm = TransformersLM(str(tiny_lm_dir))
    lm.load()
    scores = lm.loglikelihood([Request("Is fast food bad for health? Answer:"), Request("Answer:", ("yes", "no"))])
    assert all(v <= 0 for s in scores for v in s.values())
    ids = [lm.token_ids("Yes"), lm.token_ids("No")]
    tokens = [lm.tokenizer.convert_ids_to_tokens(i) for i in ids]
    assert any(t.startswith("Ġ") for t in tokens[0]), tokens  # " Yes" counted beside "Yes"
    assert not set(ids[0]) & set(ids[1])


def test_without_a_chat_template_a_chat_is_rendered_as_text(tmp_path: Path) -> None:
    folder = tiny_causal_lm(tmp_path / "plain", chat=False)
    lm = TransformersLM(str(folder))
    lm.load()
    text = lm.tokenizer.decode(encode(lm, Request(prompts.per_value_prompt(ARGUMENTS[0], categories()[0]))))
    assert text.startswith("You are an expert") and text.endswith("free thought?\n\nAssistant:")
    assert len(lm.loglikelihood([LoglikelihoodRequest(prompts.cot_question(ARGUMENTS[0]))])) == 1


def test_generate_counts_tokens_and_stops_at_max_tokens(tiny_lm_dir: Path) -> None:
    lm = make_lm("transformers", str(tiny_lm_dir), base_url="ignored")
    (out,) = lm.generate_until([GenerateRequest(prompts.cot_question(ARGUMENTS[0]), max_tokens=6)])
    assert isinstance(out.text, str) and 1 <= out.completion_tokens <= 6 and out.prompt_tokens > 10
    assert lm.usage.completion_tokens == out.completion_tokens


def test_budget_and_clear_errors(tiny_lm_dir: Path, tmp_path: Path, requests: list[Request]) -> None:
    lm = TransformersLM(str(tiny_lm_dir))
    lm.budget.max_requests = 25
    with pytest.raises(BudgetExhausted, match="max_requests=25"):
        lm.loglikelihood(requests)
    with pytest.raises(ValueDetectError, match="more than the 4096"):
        TransformersLM(str(tiny_lm_dir)).loglikelihood([LoglikelihoodRequest("word " * 5000)])
    with pytest.raises(ValueDetectError, match=r"cannot load the causal language model.*smollm2"):
        TransformersLM(str(tmp_path / "missing")).loglikelihood(requests[:1])
    with pytest.raises(ValueDetectError, match="message 0 has role 'robot'"):
        TransformersLM(str(tiny_lm_dir)).loglikelihood([LoglikelihoodRequest([{"role": "robot", "content": "hi"}])])


def test_batched_generation_matches_one_at_a_time(tiny_lm_dir: Path) -> None:
    requests = [GenerateRequest(prompts.cot_question(a), max_tokens=5) for a in ARGUMENTS]
    together = TransformersLM(str(tiny_lm_dir), generate_batch_size=3).generate_until(requests)
    alone = TransformersLM(str(tiny_lm_dir), generate_batch_size=1)
    separate = [alone.generate_until([r])[0] for r in requests]
    assert [g.text for g in together] == [g.text for g in separate]
    assert [g.completion_tokens for g in together] == [g.completion_tokens for g in separate]


def test_the_cache_key_holds_a_hash_of_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    key = make_lm("transformers-causal", str(tiny_causal_lm(tmp_path / "model"))).cache_key
    assert key["weights"] and all(len(digest) == 64 for digest in key["weights"].values())
    assert key == make_lm("transformers-causal", str(tmp_path / "model")).cache_key
    changed = make_lm("transformers-causal", str(tiny_causal_lm(tmp_path / "model", seed=1))).cache_key
    assert changed["weights"] != key["weights"]  # the same path, other weights
