"""The one small interface every language-model backend implements.

Two operations cover every strategy: ``score`` (log-probabilities of a few one-word answers,
"Yes"/"No", at the position right after a prompt) and ``generate`` (free or JSON-constrained
text). A prompt is plain text or a chat (a list of ``{"role", "content"}`` messages); backends
whose model has a chat template apply it, the others render the chat as plain text.

Backends report results through an optional ``on_result(index, result)`` callback as soon as
each one is ready, so a cache can commit it before the next request is sent: a killed run loses
at most the requests in flight. They count what they did in ``usage`` and refuse to send more
than ``budget`` allows.
"""

from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeAlias

from valuedetect.errors import InputError, ValueDetectError

Message: TypeAlias = Mapping[str, str]
Prompt: TypeAlias = str | Sequence[Message]
ResultCallback: TypeAlias = Callable[[int, Any], None]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ScoreRequest:
    """Which of ``choices`` comes next after ``prompt``? Each choice is one word."""

    prompt: Prompt
    choices: tuple[str, ...] = ("Yes", "No")


@dataclass(frozen=True)
class GenerateRequest:
    """Continue ``prompt``; ``json_schema`` constrains the answer where the backend can."""

    prompt: Prompt
    max_tokens: int = 256
    temperature: float = 0.0
    json_schema: Mapping[str, Any] | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        return cls(**{k: data[k] for k in ("text", "prompt_tokens", "completion_tokens", "finish_reason") if k in data})


class BudgetExhausted(ValueDetectError):
    """The run's request or token budget is spent; answers received so far are kept."""


@dataclass
class Usage:
    """What a backend actually did. ``prompt_tokens`` is what the prompts hold (what a provider
    bills); ``processed_tokens`` is what the model computed, less where a prefix was reused."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    processed_tokens: int = 0
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


class LanguageModel(ABC):
    """A backend: ``score`` and ``generate`` over lists of requests, in order."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.usage = Usage()
        self.budget = Budget()
        self._budget_lock = threading.Lock()

    @property
    @abstractmethod
    def cache_key(self) -> dict[str, Any]:
        """What determines an answer besides the request: backend, model, decoding settings."""

    @abstractmethod
    def score(
        self, requests: Sequence[ScoreRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        """Per request, ``{choice: log-probability}`` of each choice as the next word."""

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        """Per request, the generated text and token counts."""

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


def choice_variants(choice: str) -> tuple[str, str]:
    """How a one-word answer can appear as the next token: bare ("Yes", after a chat
    template's "assistant\\n") or with a leading space (" Yes", after "Answer:")."""
    return (choice, " " + choice)


def choice_token_ids(choices: Sequence[str], encode: Callable[[str], Sequence[int]],
                     decode: Callable[[Sequence[int]], str], model_name: str) -> list[list[int]]:
    """Per choice, the first token of each spelling (bare, leading space), for any tokenizer.

    Whitespace-only first tokens are skipped (sentencepiece splits " Yes" into "▁" + "Yes").
    """
    per_choice = []
    for choice in choices:
        ids: list[int] = []
        for variant in choice_variants(choice):
            tokens = list(encode(variant))
            if tokens and decode(tokens[:1]).strip() and tokens[0] not in ids:
                ids.append(tokens[0])
        if not ids:
            raise ValueDetectError(f"the tokenizer of {model_name!r} cannot spell the answer {choice!r}")
        per_choice.append(ids)
    return per_choice


def logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def choice_logprobs_from_top(top: Mapping[str, float], choices: Sequence[str]) -> dict[str, float] | None:
    """Map an API's top-k alternatives (token -> log-probability) onto ``choices``.

    Tokens match a choice after stripping whitespace ("Yes", " Yes", "\\nYes"). A choice not
    among the top k gets the smallest listed log-probability, an upper bound on its own.
    None when no choice is listed at all (the caller falls back to the answer text).
    """
    if not top:
        return None
    found: dict[str, list[float]] = {c: [] for c in choices}
    for token, logprob in top.items():
        stripped = token.strip()
        if stripped in found:
            found[stripped].append(float(logprob))
    if not any(found.values()):
        return None
    floor = min(float(v) for v in top.values())
    return {c: logsumexp(found[c]) if found[c] else floor for c in choices}


_WORD = re.compile(r"[A-Za-z]+")


def choice_from_text(text: str, choices: Sequence[str]) -> dict[str, float]:
    """Log-probabilities read off an answer text: 0 for the choice the text starts with (case
    ignored), -inf for the others; all equal when the text names none of them."""
    match = _WORD.search(text or "")
    word = match.group(0).lower() if match else ""
    for choice in choices:
        if word == choice.lower():
            return {c: (0.0 if c == choice else -math.inf) for c in choices}
    return {c: math.log(1.0 / len(choices)) for c in choices}


def probability_of(scores: Mapping[str, float], choice: str = "Yes") -> float:
    """P(choice) renormalised over the scored choices (softmax of their log-probabilities)."""
    values = {c: float(v) for c, v in scores.items()}
    top = max(values.values())
    if top == -math.inf:
        return 1.0 / len(values)
    total = sum(math.exp(v - top) for v in values.values())
    return math.exp(values[choice] - top) / total
