"""Any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, Ollama, llama.cpp's server, ...) through
the official ``openai`` client.

Scoring asks for one token with the top alternatives' log-probabilities (chat: ``logprobs`` /
``top_logprobs``; plain text: the completions endpoint's ``logprobs``) and reads "Yes"/"No"
off them; where an endpoint gives no log-probabilities it reads the answer text. Requests run in
a bounded thread pool. There is one retry layer, ours (the client's own is switched off, so the
two never multiply): timeouts, 429 and 5xx are retried with exponential backoff, honouring
Retry-After, up to ``max_retries`` times and within ``request_deadline`` seconds for the whole
request; every attempt is counted. Connection failures get a few slower retries, which ride out
a server restart. The API key comes from an environment variable whose name is configurable and
is never printed or stored. The response cache is keyed by the normalised endpoint URL (or an
explicit ``cache_namespace``), the model the server reports serving, and how answers are read
(log-probabilities, their fallbacks, the JSON-schema form), so two servers answering under one
model name, or a text-read and a log-probability answer, never share an entry.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import PurePath
from typing import Any

from valuedetect.errors import ConfigError, ValueDetectError
from valuedetect.lm.api import (
    LM,
    BudgetExhausted,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    ResultCallback,
    check_prompt,
    check_request,
    logsumexp,
)

OPENAI_URL = "https://api.openai.com/v1"


class OpenAICompatibleLM(LM):
    """A model behind an OpenAI-compatible API."""

    name = "openai"
    kind = None  # unknown behind an API; it answers as a causal (chat) model

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, timeout: float = 120.0, max_retries: int = 4, connect_retries: int = 3,
                 retry_delay: float = 2.0, top_logprobs: int = 20, check_model: bool = True,
                 request_deadline: float = 600.0, cache_namespace: str | None = None):
        super().__init__()
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if not api_key_env or not api_key_env.replace("_", "").isalnum():
            raise ConfigError(f"api_key_env must be the NAME of an environment variable, got {api_key_env!r}")
        self.model = model
        self.base_url = (base_url or OPENAI_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.connect_retries = connect_retries
        self.retry_delay = retry_delay
        self.top_logprobs = top_logprobs
        self.check_model = check_model
        self.request_deadline = request_deadline
        self.cache_namespace = cache_namespace
        self._client: Any = None
        self._lock = threading.Lock()
        self._checked = False
        self._served: str | None = None  # the id under which the endpoint lists our model
        # What this endpoint turned out not to support, learnt from its 400/422 answers.
        self._no_chat_logprobs = False
        self._completion_logprobs = top_logprobs
        self._schema_modes = ["json_schema", "json_object", "none"]
        self._schema_ok: set[str] = set()
        self._chat_logprobs_ok = False

    @property
    def cache_key(self) -> dict[str, Any]:
        """Endpoint, model as served, and how answers are read. Without a ``cache_namespace`` this
        asks the endpoint once which model it serves (an explicit namespace vouches for it, so a
        fully cached run can be re-scored with the server down)."""
        if self.cache_namespace is not None:
            endpoint, served = self.cache_namespace, None  # the namespace vouches for what is served
        else:
            self.check()
            endpoint, served = normalise_url(self.base_url), self._served
        return {"backend": self.name, "endpoint": endpoint, "model": self.model, "served_model": served,
                "read": self.capabilities(), "top_logprobs": self.top_logprobs}

    def capabilities(self) -> dict[str, Any]:
        """What this endpoint turned out not to take, as it decides how answers are read."""
        return {"completion_logprobs": self._completion_logprobs, "chat_logprobs": not self._no_chat_logprobs,
                "schema_modes": list(self._schema_modes)}

    def restore_capabilities(self, learnt: Mapping[str, Any]) -> None:
        with self._lock:
            if "completion_logprobs" in learnt:
                self._completion_logprobs = int(learnt["completion_logprobs"])
            if "chat_logprobs" in learnt:
                self._no_chat_logprobs = not bool(learnt["chat_logprobs"])
            modes = [m for m in learnt.get("schema_modes", []) if m in ("json_schema", "json_object", "none")]
            if modes:
                self._schema_modes = modes

    # -- the client ------------------------------------------------------------------------
    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.base_url == OPENAI_URL:
            raise ConfigError(f"the openai backend needs an API key: set the environment variable {self.api_key_env}")
        return "no-key"  # local servers (llama.cpp, vLLM, Ollama) accept any key

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError:
                    raise ValueDetectError("the openai backend needs the openai package: "
                                           'pip install "valuedetect[llm]" (or pip install openai)') from None
                # The client's own retries are off: ours are the only layer (see _send).
                self._client = openai.OpenAI(api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout,
                                             max_retries=0)
        return self._client

    def _send(self, what: str, fn: Callable[[], Any], raw: tuple[type[BaseException], ...] = (),
              retries: int | None = None) -> Any:
        """One logical call, with the only retry layer: 429 and 5xx up to ``max_retries`` times,
        connection failures (and timeouts) up to ``connect_retries`` times once the endpoint was
        reached in this run (a wrong URL is reported at once), all within ``request_deadline``.
        400/422 answers, and errors of the types in ``raw``, pass through unchanged: callers fall
        back to a simpler request."""
        import openai

        deadline = time.monotonic() + self.request_deadline
        status_retries = self.max_retries if retries is None else retries
        connect_retries = self.connect_retries if self._checked else 0
        status_failures = connect_failures = 0
        while True:
            self.usage.add(attempts=1)
            try:
                return fn()
            except raw:
                raise
            except openai.APIConnectionError as error:  # includes timeouts
                connect_failures += 1
                wait_for = self.retry_delay * 2 ** (connect_failures - 1)
                if connect_failures > connect_retries or time.monotonic() + wait_for > deadline:
                    kind = "timed out" if isinstance(error, openai.APITimeoutError) else "is unreachable"
                    raise ValueDetectError(
                        f"the endpoint {self.base_url} {kind} ({what}, {status_failures + connect_failures} "
                        f"attempts): {error.__cause__ or error}; is the server running?"
                    ) from None
            except openai.AuthenticationError:
                raise ConfigError(f"{self.base_url} rejected the API key from ${self.api_key_env} (401)") from None
            except openai.PermissionDeniedError as error:
                raise ConfigError(f"{self.base_url} refused {what} (403): {_message(error)}") from None
            except openai.NotFoundError as error:
                raise self._not_found(what, error) from None
            except (openai.RateLimitError, openai.InternalServerError) as error:
                status_failures += 1
                wait_for = _retry_after(error, self.retry_delay * 2 ** (status_failures - 1))
                if status_failures > status_retries:
                    raise ValueDetectError(f"{self.base_url} kept answering {error.status_code} to {what} after "
                                           f"{status_retries} retries: {_message(error)}") from None
                if time.monotonic() + wait_for > deadline:
                    raise ValueDetectError(
                        f"{self.base_url} kept answering {error.status_code} to {what}: gave up after "
                        f"{status_failures + connect_failures} attempts, at the {self.request_deadline:g} s deadline "
                        f"of one request: {_message(error)}") from None
            self.usage.add(retries=1)
            time.sleep(wait_for)

    def _models(self) -> list[str] | None:
        """The model ids the endpoint lists, or None where it lists none. Quick: one retry and
        a short timeout, since this is also the first contact with a URL that may be wrong."""
        import openai

        client = self.client().with_options(timeout=min(self.timeout, 15.0))
        try:
            return [m.id for m in client.models.list()]
        except (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError):
            return None

    def _not_found(self, what: str, error: Exception) -> ValueDetectError:
        try:
            models = self._models()
        except Exception:
            models = None
        if models is not None and not self._serves(models):
            return ConfigError(f"{self.base_url} does not serve the model {self.model!r}; it offers: "
                               f"{', '.join(models) or '(none)'}")
        return ValueDetectError(f"{self.base_url} answered 404 to {what} for model {self.model!r}: {_message(error)}")

    def _serves(self, models: Sequence[str]) -> bool:
        for model_id in models:
            if self.model == model_id or model_id.startswith(self.model + ":"):
                return True
            if PurePath(model_id).name == self.model or PurePath(model_id).stem == self.model:
                return True
        return False

    def check(self) -> None:
        """Once: is the endpoint reachable, and does it list our model? (llama.cpp's server
        answers for any model name with the one it loaded, so this is the only check there.)"""
        if self._checked:
            return
        models = self._send("GET /models", self._models, retries=1)
        if self.check_model and models and not self._serves(models):
            raise ConfigError(
                f"{self.base_url} does not serve the model {self.model!r}; it offers: {', '.join(models)}"
            )
        self._served = self._served_id(models or [])
        self._checked = True

    def _served_id(self, models: Sequence[str]) -> str | None:
        """The id the endpoint lists for our model; a server that serves one model under any name
        (llama.cpp's) is identified by the one it lists, e.g. the GGUF file it loaded."""
        matching = [m for m in models if self.model == m or m.startswith(self.model + ":")
                    or PurePath(m).name == self.model or PurePath(m).stem == self.model]
        if matching:
            return matching[0]
        return models[0] if len(models) == 1 else None

    # -- running many requests -------------------------------------------------------------
    def _run_all(
        self, requests: Sequence[Any], one: Callable[[Any], Any], on_result: ResultCallback | None
    ) -> list[Any]:
        """Run ``one`` over ``requests`` with bounded concurrency; stop sending at the first
        error (budget, unreachable server), let the requests in flight finish, then raise it."""
        self.check()
        results: list[Any] = [None] * len(requests)
        first_error: BaseException | None = None
        stop = threading.Event()

        def task(index: int, request: Any) -> Any:
            import openai

            if stop.is_set():
                raise _Skipped
            try:
                self.reserve_request()
            except BudgetExhausted:
                stop.set()
                raise
            try:
                return one(request)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
                stop.set()
                raise ValueDetectError(f"{self.base_url} rejected request {index} of this batch "
                                       f"({error.status_code}): {_message(error)}") from None
            except BaseException:
                stop.set()  # queued requests are not sent; those in flight finish
                raise

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="valuedetect-llm") as pool:
            futures: dict[Future, int] = {pool.submit(task, i, r): i for i, r in enumerate(requests)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in sorted(done, key=futures.__getitem__):
                    if future.cancelled():
                        continue
                    error = future.exception()
                    if error is None:
                        i = futures[future]
                        results[i] = future.result()
                        if on_result:
                            on_result(i, results[i])
                    elif not isinstance(error, _Skipped):
                        if not isinstance(error, BudgetExhausted):
                            self.usage.add(failures=1)
                        first_error = first_error or error
                        stop.set()
                if stop.is_set():
                    for future in pending:
                        future.cancel()
        if first_error is not None:
            raise first_error
        return results

    # -- scoring ---------------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        for i, request in enumerate(requests):
            check_request(request, f"loglikelihood request {i}")
        return self._run_all(requests, self._score_one, on_result)

    def _score_one(self, request: LoglikelihoodRequest) -> dict[str, float]:
        import openai

        client = self.client()
        prompt = request.context + request.suffix if isinstance(request.context, str) else request.context
        if isinstance(prompt, str):
            while True:
                n = self._completion_logprobs
                try:
                    response = self._send("POST /completions", lambda n=n: client.completions.create(
                        model=self.model, prompt=prompt, max_tokens=1, temperature=0, logprobs=n or None))
                    break
                except (openai.BadRequestError, openai.UnprocessableEntityError):
                    if not n:
                        raise
                    self._completion_logprobs = 5 if n > 5 else 0  # OpenAI allows at most 5; then none
            self._count_tokens(response)
            choice = response.choices[0]
            top = {}
            if getattr(choice, "logprobs", None) and choice.logprobs.top_logprobs:
                top = dict(choice.logprobs.top_logprobs[0] or {})
            scores = choice_logprobs_from_top(top, request.continuations)
            return scores if scores is not None else choice_from_text(choice.text or "", request.continuations)

        messages = [dict(m) for m in prompt]
        may_probe = True
        while True:
            with_logprobs = not self._no_chat_logprobs
            extra = {"logprobs": True, "top_logprobs": self.top_logprobs} if with_logprobs else {}
            probing = may_probe and with_logprobs and not self._chat_logprobs_ok
            try:
                response = self._chat(messages, {"max_tokens": 1, "temperature": 0, **extra}, probing)
                self._chat_logprobs_ok = self._chat_logprobs_ok or with_logprobs
                break
            except openai.APIStatusError as error:
                if not probing:
                    raise
                if _rejects(error, "logprobs"):
                    self._no_chat_logprobs = True
                else:  # a passing failure (429, 503): send again, with the client's retries
                    self.usage.add(retries=1)
                    may_probe = False
        self._count_tokens(response)
        choice = response.choices[0]
        top: dict[str, float] = {}
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if content:
            top = {alt.token: alt.logprob for alt in (content[0].top_logprobs or [])}
            top.setdefault(content[0].token, content[0].logprob)
        scores = choice_logprobs_from_top(top, request.continuations)
        return scores if scores is not None else choice_from_text(choice.message.content or "", request.continuations)

    # -- generation ------------------------------------------------------------------------
    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        for i, request in enumerate(requests):
            check_prompt(request.context, f"generate request {i}")
        return self._run_all(requests, self._generate_one, on_result)

    def _response_format(self, mode: str, schema: Any) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "answer", "schema": dict(schema), "strict": True}}
        if mode == "json_object":  # llama.cpp's server and others: the schema beside the type
            return {"type": "json_object", "schema": dict(schema)}
        return None

    def _generate_one(self, request: GenerateRequest) -> Generation:
        import openai

        client = self.client()
        common: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
        if request.stop:
            common["stop"] = list(request.stop)
        if isinstance(request.context, str):
            response = self._send("POST /completions",
                                  lambda: client.completions.create(model=self.model, prompt=request.context, **common))
            self._count_tokens(response)
            choice = response.choices[0]
            return self._generation(response, choice.text or "", choice.finish_reason)
        messages = [dict(m) for m in request.context]
        may_probe = True
        while True:
            mode = self._schema_modes[0] if request.json_schema is not None else "none"
            response_format = self._response_format(mode, request.json_schema)
            extra = {"response_format": response_format} if response_format else {}
            probing = may_probe and mode != "none" and mode not in self._schema_ok
            try:
                response = self._chat(messages, {**common, **extra}, probing)
                self._schema_ok.add(mode)
                break
            except openai.APIStatusError as error:
                if not probing:
                    raise
                if _rejects(error, "response_format"):
                    with self._lock:  # this endpoint does not take that form: try the next
                        if self._schema_modes[0] == mode:
                            self._schema_modes.pop(0)
                else:
                    self.usage.add(retries=1)
                    may_probe = False
        self._count_tokens(response)
        choice = response.choices[0]
        return self._generation(response, choice.message.content or "", choice.finish_reason)

    def _chat(self, messages: list[dict[str, Any]], options: dict[str, Any], probing: bool) -> Any:
        """POST /chat/completions. A probe (the first request in a form the endpoint may not
        know: logprobs, a response_format) goes without retries, and its error comes back raw,
        since llama.cpp's server answers an unknown form with a 500 that retrying cannot fix."""
        import openai

        return self._send("POST /chat/completions",
                          lambda: self.client().chat.completions.create(model=self.model, messages=messages,
                                                                        **options),
                          raw=(openai.APIStatusError,) if probing else ())

    def _generation(self, response: Any, text: str, finish: str | None) -> Generation:
        usage = getattr(response, "usage", None)
        return Generation(text=text, prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0), finish_reason=finish)

    def _count_tokens(self, response: Any) -> None:
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        self.usage.add(prompt_tokens=prompt, completion_tokens=completion, processed_tokens=prompt)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class LlamaCppServerLM(OpenAICompatibleLM):
    """llama.cpp's own server (``python -m llama_cpp.server``): the OpenAI-compatible backend
    with its defaults. It answers for any model name with the one it loaded, so the name is
    not checked against ``/v1/models``."""

    name = "llamacpp-server"

    def __init__(self, model: str, *, base_url: str | None = "http://127.0.0.1:8000/v1", check_model: bool = False,
                 **options: Any):
        super().__init__(model, base_url=base_url, check_model=check_model, **options)


_WORD = re.compile(r"[A-Za-z]+")


def choice_logprobs_from_top(top: Mapping[str, float], choices: Sequence[str]) -> dict[str, float] | None:
    """Map an API's top-k alternatives (token -> log-probability) onto ``choices``: the API-side
    form of ``lm.tokens``' rule, as far as token texts allow.

    A token matches a word when it equals the word or its first word after stripping whitespace
    ("Yes", " Yes", "\nYes"; "free" for "free will"). A choice not among the top k gets the
    smallest listed log-probability, an upper bound on its own. None when no choice is listed at
    all (the caller falls back to the answer text).
    """
    if not top:
        return None
    found: dict[str, list[float]] = {c: [] for c in choices}
    for token, logprob in top.items():
        stripped = token.strip()
        for c in choices:
            if stripped and (stripped == c or stripped == c.split()[0]):
                found[c].append(float(logprob))
    if not any(found.values()):
        return None
    floor = min(float(v) for v in top.values())
    return {c: logsumexp(found[c]) if found[c] else floor for c in choices}


def choice_from_text(text: str, choices: Sequence[str]) -> dict[str, float]:
    """Log-probabilities read off an answer text: 0 for the choice the text starts with (case
    ignored), -inf for the others; all equal when the text names none of them."""
    match = _WORD.search(text or "")
    word = match.group(0).lower() if match else ""
    for choice in choices:
        if word == choice.lower():
            return {c: (0.0 if c == choice else -math.inf) for c in choices}
    return {c: math.log(1.0 / len(choices)) for c in choices}


def _rejects(error: Any, field: str) -> bool:
    """Does this error say the endpoint does not take ``field``? 400/422 do; a 5xx only if its
    message names the field (llama.cpp's server answers validation errors with a 500)."""
    status = getattr(error, "status_code", 0) or 0
    return status in (400, 422) or (status >= 500 and field in _message(error))


def normalise_url(url: str) -> str:
    """One spelling per endpoint: lower-case scheme and host, no default port, no trailing slash."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def _retry_after(error: Any, default: float) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After(-ms) where it says one."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return default


class _Skipped(Exception):
    """A queued request not sent because an earlier one failed."""


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(error, "message", error))

