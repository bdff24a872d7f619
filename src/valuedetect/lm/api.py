"""The one language-model interface, shaped like lm-evaluation-harness's ``LM``.

Two batch operations, a list of typed requests in and an aligned list out:

- ``loglikelihood(requests)``: per request, the log-probability of each continuation (a label
  word: "Yes", "No", a synonym) as the next word after the request's context. A word is read by
  ``lm.tokens``' one rule (its first token, over its bare and leading-space spellings), so one
  forward pass scores every word.
- ``generate_until(requests)``: free or JSON-constrained text until a stop string or
  ``max_tokens``.

A context is plain text or a chat (a list of ``{"role", "content"}`` messages); backends whose
model has a chat template apply it, the others render the chat as plain text. A text request
may carry a ``suffix``: the context is then the part shared by many requests (an argument) and
the suffix the part of its own (a value question). Backends tokenise the two apart, so the
shared part is provably the same tokens in every request and a soft prompt can sit between them.

Backends report each result through an optional ``on_result(index, result)`` callback as soon
as it is ready, so a cache can commit it before the next request is sent. They count what they
did in ``usage`` and refuse to send more than ``budget`` allows. Nothing here imports torch.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeAlias

from valuedetect.errors import ConfigError, InputError, ValueDetectError

Message: TypeAlias = Mapping[str, str]
Prompt: TypeAlias = str | Sequence[Message]
ResultCallback: TypeAlias = Callable[[int, Any], None]

ROLES = ("system", "user", "assistant")
LM_KINDS = ("causal", "masked", "seq2seq")
# Where a soft prompt sits (lm.soft_prompt) and how it starts; here so configs need no torch.
PLACEMENTS = ("after", "before", "end")
PROMPT_INITS = ("text", "random")


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Which of ``continuations`` comes next after ``context`` + ``suffix``?

    ``soft_prompt`` picks a row of a backend's soft-prompt bank (0: the shared one; with one
    prompt per category, the category asked about); backends without soft prompts ignore it.
    """

    context: Prompt
    continuations: tuple[str, ...] = ("Yes", "No")
    suffix: str = ""
    soft_prompt: int = 0


@dataclass(frozen=True)
class GenerateRequest:
    """Continue ``context``; ``json_schema`` constrains the answer where the backend can."""

    context: Prompt
    max_tokens: int = 256
    temperature: float = 0.0
    json_schema: Mapping[str, Any] | None = None
    stop: tuple[str, ...] = ()
    # Also return these words' log-probabilities at the first answer step (transformers only).
    score_words: tuple[str, ...] = ()


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # Log-probabilities of the requested words at the first answer step (transformers only; the
    # OA template's generate mode reads both the text and these).
    first_logprobs: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        names = ("text", "prompt_tokens", "completion_tokens", "finish_reason", "first_logprobs")
        return cls(**{k: data[k] for k in names if k in data})


class BudgetExhausted(ValueDetectError):
    """The run's request or token budget is spent; answers received so far are kept."""


@dataclass
class Usage:
    """What a backend did. ``prompt_tokens`` is what the prompts hold (what a provider bills,
    what separate prompts would compute); ``processed_tokens`` the token positions the model
    computed, less where a prefix was reused; ``cache_hits`` requests answered by the response
    cache (counted by ``CachingLM``); ``attempts`` every HTTP attempt a remote backend made (a
    provider may bill a failed attempt too), ``retries`` those beyond the first of a request."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    processed_tokens: int = 0
    cache_hits: int = 0
    attempts: int = 0  # HTTP attempts (remote backends): every one, retries included
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@dataclass
class Budget:
    """Upper bounds for one run: backend requests sent, and prompt + completion tokens."""

    max_requests: int | None = None
    max_tokens: int | None = None

    def check(self, usage: Usage) -> None:
        """Raise ``BudgetExhausted`` if one more request would break the budget."""
        if self.max_requests is not None and usage.requests >= self.max_requests:
            raise BudgetExhausted(
                f"request budget exhausted: {usage.requests} of max_requests={self.max_requests} sent; "
                "answers so far are cached, raise the budget and run again to continue"
            )
        spent = usage.prompt_tokens + usage.completion_tokens
        if self.max_tokens is not None and spent >= self.max_tokens:
            raise BudgetExhausted(
                f"token budget exhausted: {spent} of max_tokens={self.max_tokens} used; "
                "answers so far are cached, raise the budget and run again to continue"
            )


class LM(ABC):
    """A backend: ``loglikelihood`` and ``generate_until`` over lists of requests, in order.

    Class attributes say what it can serve, so a detector can refuse an impossible pairing
    before any work: ``kind`` (causal / masked / seq2seq; None where unknown, e.g. an API),
    ``can_generate``, ``can_train`` (carries a trainable soft prompt: transformers only).
    """

    name: ClassVar[str]
    kind: str | None = "causal"
    can_generate: ClassVar[bool] = True
    can_train: ClassVar[bool] = False

    def __init__(self) -> None:
        self.usage = Usage()
        self.budget = Budget()
        self._budget_lock = threading.Lock()

    def capabilities(self) -> dict[str, Any]:
        """What this backend learnt about its endpoint (which request forms it takes), so that a
        later run can start from it and key its answers the same way; {} for local backends."""
        return {}

    def restore_capabilities(self, learnt: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Start from what an earlier run learnt (see ``capabilities``)."""

    @property
    @abstractmethod
    def cache_key(self) -> dict[str, Any]:
        """What determines an answer besides the request: backend, model, decoding settings."""

    @abstractmethod
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        """Per request, ``{continuation: log-probability}`` of each as the next word."""

    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        """Per request, the generated text and token counts."""
        raise ConfigError(f"the {self.name} backend cannot generate text (a {self.kind} language model); "
                          "use a causal or seq2seq model, or a strategy that only scores answers")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connection."""

    def reserve_request(self) -> None:
        """Count one request against the budget, or raise ``BudgetExhausted``."""
        with self._budget_lock:
            self.budget.check(self.usage)
            self.usage.add(requests=1)


# ----------------------------------------------------------------------------- helpers


def check_prompt(prompt: Prompt, where: str = "request") -> None:
    """Reject malformed prompts with a message that says which request and what is wrong."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, Sequence) or not prompt:
        raise InputError(f"{where}: a prompt must be a string or a non-empty list of messages")
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise InputError(f"{where}: message {i} must be a mapping with a string 'content'")
        if message.get("role") not in ROLES:
            raise InputError(f"{where}: message {i} has role {message.get('role')!r}; expected one of {ROLES}")


def check_request(request: LoglikelihoodRequest, where: str) -> None:
    check_prompt(request.context, where)
    if request.suffix and not isinstance(request.context, str):
        raise InputError(f"{where}: a suffix continues a text context, not a chat")
    if not request.continuations:
        raise InputError(f"{where}: no continuations to score")


def render_plain(prompt: Prompt) -> str:
    """A chat as plain text, for models without a chat template: ends where the answer starts."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt:
        role = message["role"]
        if role == "system":
            parts.append(message["content"].strip())
        else:
            parts.append(f"{'User' if role == 'user' else 'Assistant'}: {message['content'].strip()}")
    return "\n\n".join(parts) + "\n\nAssistant:"


def full_text(request: LoglikelihoodRequest) -> str:
    """Context and suffix as one text, for backends that take text (llama.cpp, HTTP)."""
    return render_plain(request.context) + request.suffix


def logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def probability_of(scores: Mapping[str, float], choice: str = "Yes") -> float:
    """P(choice) renormalised over the scored choices (softmax of their log-probabilities)."""
    values = {c: float(v) for c, v in scores.items()}
    top = max(values.values())
    if top == -math.inf:
        return 1.0 / len(values)
    total = sum(math.exp(v - top) for v in values.values())
    return math.exp(values[choice] - top) / total


__all__ = ["LM", "LM_KINDS", "PLACEMENTS", "PROMPT_INITS", "Budget", "BudgetExhausted", "GenerateRequest",
           "Generation", "LoglikelihoodRequest", "Message", "Prompt", "ResultCallback", "Usage", "check_prompt",
           "check_request", "full_text", "logsumexp", "probability_of", "render_plain"]
