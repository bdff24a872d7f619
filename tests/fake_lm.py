"""A scripted LM for tests: answers come from functions of the prompt, and every request it
receives is recorded, so tests can count what reached the 'model'."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from valuedetect.lm.api import LM, GenerateRequest, Generation, LoglikelihoodRequest


def _last_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


class FakeLM(LM):
    name = "fake"

    def __init__(self, answer: Callable[[str], str] | None = None, yes: Callable[[str], float] | None = None,
                 delay: float = 0.0, model: str = "fake-model"):
        super().__init__()
        self.answer = answer or (lambda text: '{"values": []}')
        self.yes = yes or (lambda text: 0.5)
        self.delay = delay
        self.model = model
        self.score_calls: list[LoglikelihoodRequest] = []
        self.generate_calls: list[GenerateRequest] = []

    @property
    def cache_key(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], on_result=None) -> list[dict[str, float]]:
        results = []
        for i, request in enumerate(requests):
            self.reserve_request()
            time.sleep(self.delay)
            self.score_calls.append(request)
            p = min(max(self.yes(_last_text(request.context) + request.suffix), 1e-6), 1 - 1e-6)
            result = {request.continuations[0]: math.log(p), request.continuations[1]: math.log(1 - p)}
            self.usage.add(prompt_tokens=10, processed_tokens=10)
            results.append(result)
            if on_result:
                on_result(i, result)
        return results

    def generate_until(self, requests: Sequence[GenerateRequest], on_result=None) -> list[Generation]:
        results = []
        for i, request in enumerate(requests):
            self.reserve_request()
            time.sleep(self.delay)
            self.generate_calls.append(request)
            generation = Generation(self.answer(_last_text(request.context)), 10, 5, "stop")
            self.usage.add(prompt_tokens=10, completion_tokens=5, processed_tokens=10)
            results.append(generation)
            if on_result:
                on_result(i, generation)
        return results
