"""The openai backend against a small OpenAI-compatible server written here with the standard
library (http.server in a thread): retries, budget, fallbacks and error messages."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from valuedetect.errors import ConfigError, ValueDetectError
from valuedetect.lm.api import BudgetExhausted, GenerateRequest, LoglikelihoodRequest, probability_of
from valuedetect.lm.cache import CachingLM, ResponseCache
from valuedetect.lm.openai_http import OpenAICompatibleLM
from valuedetect.lm.registry import make_lm

CHAT = [{"role": "user", "content": "Is it about health? Answer Yes or No."}]


class FakeServer:
    """Scripted behaviour: ``failures`` is a list of HTTP statuses to answer before succeeding;
    ``reject`` lists request fields answered with 400/422; every request is recorded."""

    def __init__(self) -> None:
        self.models = ["tiny-model"]
        self.failures: list[int] = []
        self.reject: dict[str, int] = {}
        self.logprobs = True
        self.content = '{"values": ["Achievement"]}'
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}") if method == "POST" else {}
        with self.lock:
            self.requests.append((handler.path, body, {k.lower(): v for k, v in handler.headers.items()}))
            status = self.failures.pop(0) if self.failures and method == "POST" else 200
        if status != 200:
            return self.send(handler, status, {"error": {"message": f"scripted {status}"}}, {"retry-after-ms": "5"})
        for field, code in self.reject.items():
            value = body.get(field)
            if value is not None and (field != "response_format" or value.get("type") == "json_schema"):
                return self.send(handler, code, {"error": {"message": f"{field} not supported"}})
        if handler.path == "/v1/models":
            return self.send(handler, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.models]})
        usage = {"prompt_tokens": 12, "completion_tokens": 1 if body.get("max_tokens") == 1 else 7, "total_tokens": 0}
        if handler.path == "/v1/chat/completions":
            scoring = body.get("max_tokens") == 1
            text = "Yes" if scoring else self.content
            logprobs = None
            if scoring and body.get("logprobs") and self.logprobs:
                top = [{"token": t, "logprob": p, "bytes": None}
                       for t, p in (("Yes", -0.4), (" yes", -2.0), ("No", -1.2), (" No", -3.0))]
                logprobs = {"content": [{"token": "Yes", "logprob": -0.4, "bytes": None, "top_logprobs": top}]}
            choice = {"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                      "message": {"role": "assistant", "content": text}}
            return self.send(handler, 200, {"id": "x", "object": "chat.completion", "created": 0,
                                            "model": body.get("model"), "choices": [choice], "usage": usage})
        if handler.path == "/v1/completions":
            logprobs = None
            if body.get("logprobs"):
                logprobs = {"tokens": [" No"], "token_logprobs": [-0.3], "text_offset": [0],
                            "top_logprobs": [{" No": -0.3, " Yes": -1.5}]}
            choice = {"index": 0, "finish_reason": "stop", "text": " No", "logprobs": logprobs}
            return self.send(handler, 200, {"id": "x", "object": "text_completion", "created": 0,
                                            "model": body.get("model"), "choices": [choice], "usage": usage})
        return self.send(handler, 404, {"error": {"message": "no such route"}})

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _ in self.requests if p == path]


@pytest.fixture
def server() -> Iterator[tuple[FakeServer, str]]:
    with _serve() as running:
        yield running


@contextlib.contextmanager
def _serve() -> Iterator[tuple[FakeServer, str]]:
    fake = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.handle(self, "GET")

        def do_POST(self) -> None:
            fake.handle(self, "POST")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _backend(url: str, **options: Any) -> OpenAICompatibleLM:
    options = {"concurrency": 2, "max_retries": 3, "connect_retries": 1, "retry_delay": 0.01, "timeout": 10, **options}
    return OpenAICompatibleLM("tiny-model", base_url=url, **options)


def test_scores_from_chat_logprobs(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    (scores,) = _backend(url).loglikelihood([LoglikelihoodRequest(CHAT)])
    assert scores["No"] == pytest.approx(math.log(math.exp(-1.2) + math.exp(-3.0)))  # "No" and " No"
    assert probability_of(scores) > 0.6
    body = fake.posts("/v1/chat/completions")[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1


def test_plain_prompts_use_the_completions_endpoint(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    (scores,) = _backend(url).loglikelihood([LoglikelihoodRequest("Is it about health? Answer:")])
    assert scores == {"Yes": -1.5, "No": -0.3}
    assert fake.posts("/v1/completions")[0]["logprobs"] == 20


def test_without_logprobs_the_answer_text_decides(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.reject = {"logprobs": 400}
    lm = _backend(url)
    (scores,) = lm.loglikelihood([LoglikelihoodRequest(CHAT)])
    assert probability_of(scores) == 1.0
    assert "logprobs" not in fake.posts("/v1/chat/completions")[-1]
    lm.loglikelihood([LoglikelihoodRequest([*CHAT, {"role": "user", "content": "again"}])])
    assert len(fake.posts("/v1/chat/completions")) == 3  # learnt: no second try with logprobs


def test_retries_on_429_and_500(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.failures = [429, 500, 503]
    lm = _backend(url, concurrency=1)
    (scores,) = lm.loglikelihood([LoglikelihoodRequest(CHAT)])
    assert probability_of(scores) > 0.6
    assert lm.usage.retries == 3 and lm.usage.requests == 1 and lm.usage.failures == 0
    assert len(fake.posts("/v1/chat/completions")) == 4


def test_persistent_server_errors_give_up_clearly(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.failures = [500] * 10
    with pytest.raises(ValueDetectError, match=r"kept answering 500 .* after 2 retries: scripted 500"):
        _backend(url, max_retries=2, concurrency=1).loglikelihood([LoglikelihoodRequest(CHAT)])


def test_budget_exhaustion_stops_cleanly_and_keeps_answers(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    fake, url = server
    requests = [LoglikelihoodRequest([{"role": "user", "content": f"question {i}"}]) for i in range(6)]
    backend = _backend(url, concurrency=1)
    backend.budget.max_requests = 4
    with pytest.raises(BudgetExhausted, match="max_requests=4"):
        CachingLM(backend, ResponseCache(tmp_path / "c.sqlite")).loglikelihood(requests)
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 4 and len(fake.posts("/v1/chat/completions")) == 4
    tokens = _backend(url, concurrency=1)
    tokens.budget.max_tokens = 20  # 13 tokens per request: the third is refused
    with pytest.raises(BudgetExhausted, match="max_tokens=20"):
        tokens.loglikelihood(requests[:3])
    assert tokens.usage.requests == 2
    resumed = CachingLM(_backend(url), ResponseCache(tmp_path / "c.sqlite"))
    resumed.loglikelihood(requests)
    assert resumed.hits == 4 and resumed.misses == 2


def test_unreachable_endpoint_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ValueDetectError, match=rf"the endpoint {url} is unreachable .*is the server running"):
        _backend(url, max_retries=0).loglikelihood([LoglikelihoodRequest(CHAT)])


def test_wrong_model_lists_what_the_server_offers(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.models = ["tiny-model", "/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
    with pytest.raises(ConfigError, match=r"does not serve the model 'gpt-9'; it offers: tiny-model, /models/SmolLM2"):
        OpenAICompatibleLM("gpt-9", base_url=url).loglikelihood([LoglikelihoodRequest(CHAT)])
    assert fake.posts("/v1/chat/completions") == []
    # A GGUF path the server lists may be named by its file name.
    OpenAICompatibleLM("SmolLM2-135M-Instruct.Q4_1", base_url=url).loglikelihood([LoglikelihoodRequest(CHAT)])


def test_api_key_comes_from_the_named_variable_and_is_never_shown(
    server: tuple[FakeServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = server
    monkeypatch.setenv("VD_TEST_KEY", "sk-secret-123")
    lm = make_lm("openai", "nope", base_url=url, api_key_env="VD_TEST_KEY", batch_size=3)
    with pytest.raises(ConfigError) as error:
        lm.loglikelihood([LoglikelihoodRequest(CHAT)])
    assert "sk-secret-123" not in str(error.value)
    assert fake.requests[0][2]["authorization"] == "Bearer sk-secret-123"
    served = make_lm("openai", "tiny-model", base_url=url, api_key_env="VD_TEST_KEY")
    assert "sk-secret" not in json.dumps(served.cache_key)  # the key names the endpoint, never the secret
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable OPENAI_API_KEY"):
        OpenAICompatibleLM("gpt-4o-mini").loglikelihood([LoglikelihoodRequest(CHAT)])
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        OpenAICompatibleLM("m", api_key_env="sk-abc def")


@pytest.mark.parametrize("status", [422, 500])  # llama.cpp's server answers type json_schema with a 500
def test_json_schema_falls_back_to_what_the_server_accepts(server: tuple[FakeServer, str], status: int) -> None:
    fake, url = server
    fake.reject = {"response_format": status}
    lm = _backend(url, concurrency=1)
    schema = {"type": "object", "properties": {"values": {"type": "array"}}}
    out = lm.generate_until([GenerateRequest(CHAT, max_tokens=50, json_schema=schema)] * 2)
    assert [g.text for g in out] == ['{"values": ["Achievement"]}'] * 2
    assert out[0].prompt_tokens == 12 and out[0].completion_tokens == 7
    formats = [b["response_format"]["type"] for b in fake.posts("/v1/chat/completions")]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert lm.usage.prompt_tokens == 24 and lm.usage.completion_tokens == 14


def test_concurrent_requests_keep_their_order(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.content = "same answer"
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
    seen: list[int] = []
    lm = _backend(url, concurrency=4)
    out = lm.generate_until([GenerateRequest(p) for p in prompts], on_result=lambda i, r: seen.append(i))
    assert len(out) == 12 and sorted(seen) == list(range(12))


def test_a_server_that_dies_mid_run_is_resumed_from_the_cache_on_another_port(tmp_path: Path) -> None:
    """Answers are keyed by the endpoint: a server restarted on another port is another endpoint,
    unless the run names one ``cache_namespace`` for both."""
    requests = [LoglikelihoodRequest([{"role": "user", "content": f"question {i}"}]) for i in range(6)]
    cache = tmp_path / "c.sqlite"
    with _serve() as (fake, url):
        backend = _backend(url, concurrency=1, max_retries=0, cache_namespace="my-deployment")
        CachingLM(backend, ResponseCache(cache)).loglikelihood(requests[:3])
    # The server is gone: our own retries (after the endpoint was reached once), then a clear error.
    with pytest.raises(ValueDetectError, match=rf"the endpoint {url} is unreachable"):
        CachingLM(backend, ResponseCache(cache)).loglikelihood(requests)
    assert backend.usage.retries == 1  # connect_retries=1
    with _serve() as (fake, new_url):  # restarted elsewhere, under the same namespace
        assert new_url != url
        resumed = CachingLM(_backend(new_url, cache_namespace="my-deployment"), ResponseCache(cache))
        resumed.loglikelihood(requests)
        assert resumed.hits == 3 and len(fake.posts("/v1/chat/completions")) == 3
        elsewhere = CachingLM(_backend(new_url), ResponseCache(cache))  # no namespace: keyed by this URL
        elsewhere.loglikelihood(requests[:3])
        assert elsewhere.hits == 0 and elsewhere.misses == 3


def test_two_servers_under_one_model_name_never_share_answers(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    request = [LoglikelihoodRequest(CHAT)]
    with _serve() as (_first, url_a), _serve() as (second, url_b):
        CachingLM(_backend(url_a), ResponseCache(cache)).loglikelihood(request)
        other = CachingLM(_backend(url_b), ResponseCache(cache))
        other.loglikelihood(request)
        assert other.hits == 0 and len(second.posts("/v1/chat/completions")) == 1
        again = CachingLM(_backend(url_a + "/"), ResponseCache(cache))
        again.loglikelihood(request)  # the same endpoint spelt with a trailing slash
        assert again.hits == 1


def test_the_key_names_the_model_the_server_serves(server: tuple[FakeServer, str]) -> None:
    from valuedetect.lm.openai_http import LlamaCppServerLM, normalise_url

    fake, url = server
    fake.models = ["/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
    key = LlamaCppServerLM("anything", base_url=url, max_retries=0).cache_key
    assert key["served_model"] == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"  # the quantisation it loaded
    fake.models = ["/models/SmolLM2-135M-Instruct.Q8_0.gguf"]
    assert LlamaCppServerLM("anything", base_url=url, max_retries=0).cache_key != key
    assert normalise_url("HTTP://Example.COM:80/v1/") == "http://example.com/v1"
    assert normalise_url("https://api.example.com:8443/v1") == "https://api.example.com:8443/v1"


def test_a_text_read_answer_and_a_log_probability_answer_do_not_share_a_key(tmp_path: Path) -> None:
    """An endpoint that refuses log-probabilities is read from its answer text; that is learnt and
    kept with the cache, so the next run reads (and finds) its answers the same way, while an
    endpoint that gives log-probabilities never reuses them."""
    cache = tmp_path / "c.sqlite"
    request = [LoglikelihoodRequest(CHAT)]
    with _serve() as (fake, url):
        fake.reject = {"logprobs": 400}
        text_read = CachingLM(_backend(url, cache_namespace="shared"), ResponseCache(cache))
        (by_text,) = text_read.loglikelihood(request)
        assert probability_of(by_text) == 1.0 and text_read.backend.cache_key["read"]["chat_logprobs"] is False
        posts = len(fake.posts("/v1/chat/completions"))
        later = CachingLM(_backend(url, cache_namespace="shared"), ResponseCache(cache))  # a new run
        later.loglikelihood(request)
        assert later.hits == 1 and len(fake.posts("/v1/chat/completions")) == posts
    with _serve() as (fake, url):  # the same namespace, now an endpoint that gives log-probabilities
        fresh = CachingLM(_backend(url, cache_namespace="shared"), ResponseCache(tmp_path / "other.sqlite"))
        (by_logprobs,) = fresh.loglikelihood(request)
        assert 0.5 < probability_of(by_logprobs) < 1.0
        assert fresh.backend.cache_key["read"] != text_read.backend.cache_key["read"]


def test_one_retry_layer_counts_every_attempt_and_keeps_a_deadline(server: tuple[FakeServer, str]) -> None:
    import time

    fake, url = server
    fake.failures = [500, 503]
    lm = _backend(url, concurrency=1, max_retries=5)
    lm.loglikelihood([LoglikelihoodRequest(CHAT)])
    posts = len(fake.posts("/v1/chat/completions"))
    assert posts == 3  # no client retries stacked on ours
    assert lm.usage.retries == 2 and lm.usage.attempts == 1 + posts  # the GET /models probe is an attempt too
    fake.failures = [500] * 1000
    slow = _backend(url, concurrency=1, max_retries=1000, retry_delay=0.2, request_deadline=0.5)
    started = time.monotonic()
    with pytest.raises(ValueDetectError, match=r"gave up after \d+ attempts, at the 0.5 s deadline"):
        slow.loglikelihood([LoglikelihoodRequest(CHAT)])
    # the server's Retry-After (5 ms) sets the pace; the deadline, not max_retries, ends it
    assert time.monotonic() - started < 2
    assert slow.usage.attempts == slow.usage.retries + 2  # + the first attempt and the GET /models probe
