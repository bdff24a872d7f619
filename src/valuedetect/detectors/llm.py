"""Value detection by prompting a language model, no training (the paper's Exp-III).

Strategies:
- ``per-value``: 20 Yes/No questions per argument, one per category with its description;
  the score is P(Yes) renormalised over Yes and No.
- ``few-shot``: the same questions with k labelled training arguments (and their values) in
  the prompt, chosen at random or by similarity.
- ``all-in-one``: one call per argument; the model answers JSON ``{"values": [...]}``
  (schema-constrained where the backend can); scores are 1/0. An unparsable answer is asked
  again once, then counted and read as "no values".
- ``cot``: the paper's chain of thought: an open question about the argument's values, then
  one Yes/No question per category about the reply.

Each strategy is a composition of the chat prompts in ``templates`` and one backend from the
registry (``lm.registry``): per-value and few-shot only score answers (``LM.loglikelihood``),
so they run on any backend, a masked LM included; all-in-one and cot generate
(``LM.generate_until``) and are refused on a backend that cannot.

fit() picks the few-shot pool from its training split and tunes thresholds on its second split
(the split to choose on). Every request goes through the SQLite response cache (``lm.cache``, a
wrapper outside the backend), so an interrupted run resumes without repeating a request, and
re-scoring a finished run is free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect import templates as prompts
from valuedetect.answers import parse_values
from valuedetect.data import Argument, Split, atomic_write_json
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.detectors.lm_backend import BackendSettings, build_backend, require
from valuedetect.errors import InputError
from valuedetect.fewshot import SELECTIONS, ExampleSelector, draw_pool, pool_from_json, pool_to_json
from valuedetect.lm.api import LM, GenerateRequest, LoglikelihoodRequest, probability_of
from valuedetect.lm.cache import CachingLM, ResponseCache
from valuedetect.taxonomy import CATEGORY_NAMES, NUM_CATEGORIES, categories

STRATEGIES = ("per-value", "all-in-one", "few-shot", "cot")
POOL_FILE = "few-shot-pool.json"


@dataclass
class LLMConfig(DetectorConfig, BackendSettings):
    """Which model, how to ask it, and how much a run may spend."""

    strategy: str = "per-value"
    few_shot_k: int = 5
    few_shot_selection: str = "similar"  # similar (MiniLM neighbours) | random
    few_shot_pool: int = 1000  # training arguments kept to choose examples from
    few_shot_encoder: str = "minilm"  # for "similar": an encoder alias/path, or "tfidf"
    cache: str | None = None  # SQLite response cache; default ~/.cache/valuedetect/llm-responses.sqlite
    use_cache: bool = True
    max_requests: int | None = None  # budget per run: requests sent to the backend (cache hits are free)
    max_tokens: int | None = None  # budget per run: prompt + completion tokens
    max_new_tokens: int = 160  # length of the CoT reply and of the JSON answer
    chunk_size: int = 4  # arguments per batch of requests (and per progress step)
    batch_size: int = 20  # transformers: suffixes per forward pass

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_backend()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.few_shot_selection not in SELECTIONS:
            raise ValueError(
                f"few_shot_selection must be one of {', '.join(SELECTIONS)}, not {self.few_shot_selection!r}"
            )
        for name in ("few_shot_k", "few_shot_pool", "max_new_tokens", "chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("max_requests", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


_SUMMARY_KEYS = ("arguments", "requests", "cache_hits", "cache_misses", "retries", "failures", "unparsable_answers",
                 "json_retries", "prompt_tokens", "completion_tokens", "processed_tokens", "wall_seconds")


class LLMDetector(Detector):
    type_name = "llm"
    resumable_chunk = 32
    config_class = LLMConfig
    config: LLMConfig

    def __init__(self, config: LLMConfig | None = None, task: str = "values"):
        super().__init__(config, task)
        # A backend set here by the caller (e.g. tests) is used instead of one built from the config.
        self.language_model: LM | None = None
        self._lm: LM | None = None
        self._pool: list[prompts.Example] = []
        self._selector: ExampleSelector | None = None

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self, train: Split, dev: Split | None) -> None:
        if self.config.strategy == "few-shot":
            self._pool = draw_pool(train, self.config.few_shot_pool, self.config.seed)
            self._selector = None

    # -- the model -------------------------------------------------------------------------
    def _model(self) -> LM:
        if self._lm is None:
            c = self.config
            backend = self.language_model or build_backend(c, batch_size=c.batch_size, seed=c.seed)
            require(backend, generate=c.strategy in ("cot", "all-in-one"), what=f"the {c.strategy} strategy")
            backend.budget.max_requests = c.max_requests
            backend.budget.max_tokens = c.max_tokens
            if c.use_cache:
                from valuedetect.models import cache_dir

                path = Path(c.cache) if c.cache else cache_dir() / "llm-responses.sqlite"
                backend = CachingLM(backend, ResponseCache(path))
            self._lm = backend
        return self._lm

    def _examples(self, arguments: Sequence[Argument]) -> list[list[prompts.Example]]:
        if self.config.strategy != "few-shot":
            return [[] for _ in arguments]
        if not self._pool:
            raise InputError("the few-shot llm detector must be fitted (or loaded) before predicting")
        if self._selector is None:
            c = self.config
            self._selector = ExampleSelector(self._pool, c.few_shot_k, c.few_shot_selection, c.seed,
                                             c.few_shot_encoder)
        return self._selector.select(arguments)

    # -- predicting ------------------------------------------------------------------------
    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        lm = self._model()
        started = time.perf_counter()
        usage_before = lm.usage.as_dict()
        hits_before, misses_before = getattr(lm, "hits", 0), getattr(lm, "misses", 0)
        counts = {"unparsable_answers": 0, "json_retries": 0}
        scores = np.zeros((len(arguments), NUM_CATEGORIES))
        task = f"llm {self.config.strategy}"
        # One call per argument (all-in-one): enough arguments per batch to fill the concurrency.
        chunk = self.config.chunk_size
        if self.config.strategy == "all-in-one":
            chunk = max(chunk, self.config.concurrency)
        done = 0
        try:
            for start in range(0, len(arguments), chunk):
                part = list(arguments[start : start + chunk])
                scores[start : start + len(part)] = self._score(lm, part, counts)
                done = start + len(part)
                if self.progress:
                    self.progress(task, done, len(arguments))
        finally:
            usage = lm.usage.as_dict()
            delta = {k: usage[k] - usage_before.get(k, 0) for k in usage}
            self._add_summary({
                "arguments": done, "cache_hits": getattr(lm, "hits", 0) - hits_before,
                "cache_misses": getattr(lm, "misses", 0) - misses_before,
                "wall_seconds": round(time.perf_counter() - started, 3), **counts, **delta,
            })
        return scores

    def _score(self, lm: LM, part: list[Argument], counts: dict[str, int]) -> np.ndarray:
        strategy = self.config.strategy
        if strategy == "all-in-one":
            return self._all_in_one(lm, part, counts)
        if strategy == "cot":
            replies = lm.generate_until([GenerateRequest(prompts.cot_question(a),
                                                         max_tokens=self.config.max_new_tokens) for a in part])
            requests = [LoglikelihoodRequest(prompts.cot_value_prompt(a, reply.text, c))
                        for a, reply in zip(part, replies, strict=True) for c in categories()]
        else:
            requests = [LoglikelihoodRequest(prompts.per_value_prompt(a, c, examples))
                        for a, examples in zip(part, self._examples(part), strict=True) for c in categories()]
        answers = lm.loglikelihood(requests)
        return np.array([probability_of(s, "Yes") for s in answers]).reshape(len(part), NUM_CATEGORIES)

    def _all_in_one(self, lm: LM, part: list[Argument], counts: dict[str, int]) -> np.ndarray:
        schema = prompts.values_schema()
        first = [prompts.all_in_one_prompt(a) for a in part]
        answers = lm.generate_until([GenerateRequest(p, max_tokens=self.config.max_new_tokens, json_schema=schema)
                               for p in first])
        parsed = [parse_values(g.text) for g in answers]
        again = [i for i, p in enumerate(parsed) if p is None]
        if again:
            counts["json_retries"] += len(again)
            retried = lm.generate_until([GenerateRequest(prompts.retry_json_prompt(first[i], answers[i].text),
                                                   max_tokens=self.config.max_new_tokens, json_schema=schema)
                                   for i in again])
            for i, generation in zip(again, retried, strict=True):
                parsed[i] = parse_values(generation.text)
        scores = np.zeros((len(part), NUM_CATEGORIES))
        for row, result in enumerate(parsed):
            if result is None:
                counts["unparsable_answers"] += 1
                continue
            for name in result.values:
                scores[row, CATEGORY_NAMES.index(name)] = 1.0
        return scores

    def _add_summary(self, delta: dict[str, Any]) -> None:
        """Accumulate what the model calls cost in ``info["usage"]`` (all calls since fit/load)."""
        total = self.info.setdefault("usage", {k: 0 for k in _SUMMARY_KEYS})
        for key in _SUMMARY_KEYS:
            total[key] = round(total.get(key, 0) + delta.get(key, 0), 3)
        if total["arguments"]:
            total["processed_tokens_per_argument"] = round(total["processed_tokens"] / total["arguments"], 1)
            total["prompt_tokens_per_argument"] = round(total["prompt_tokens"] / total["arguments"], 1)
        if self.log:
            self.log("llm: " + ", ".join(f"{k} {delta.get(k, 0)}" for k in _SUMMARY_KEYS if delta.get(k)))

    def close(self) -> None:
        if self._lm is not None:
            self._lm.close()
            self._lm = None

    # -- saving ----------------------------------------------------------------------------
    def _save_weights(self, directory: Path) -> None:
        if self._pool:
            atomic_write_json(directory / POOL_FILE, pool_to_json(self._pool))

    def _load_weights(self, directory: Path) -> None:
        import json

        path = directory / POOL_FILE
        if path.exists():
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InputError(f"unreadable few-shot pool ({error})", path) from None
            self._pool = pool_from_json(rows, str(path))
        elif self.config.strategy == "few-shot":
            raise InputError(f"a few-shot llm detector needs {POOL_FILE} beside detector.json", directory)


__all__ = ["STRATEGIES", "LLMConfig", "LLMDetector"]
