"""A local causal LM through transformers: any Hub name or checkpoint folder, or an alias /
GGUF file from ``valuedetect.lm_models`` (converted once to a checkpoint).

Scoring reuses shared prefixes: consecutive requests whose token ids start alike (the 20
per-value questions about one argument) form a group; the common prefix runs once, and its
key/value cache serves every suffix in the group, in batches (helpers in ``valuedetect.prefix_cache``,
shared with label-word scoring). ``usage.processed_tokens`` counts what was computed;
``usage.prompt_tokens`` what 20 separate full prompts would hold.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from valuedetect.errors import ValueDetectError
from valuedetect.llm.backends.base import (
    GenerateRequest,
    Generation,
    LanguageModel,
    Prompt,
    ResultCallback,
    ScoreRequest,
    check_prompt,
    choice_token_ids,
    render_plain,
)
from valuedetect.prefix_cache import common_prefix_length, expand_cache, prefix_groups, shared_length


class TransformersLM(LanguageModel):
    """A causal LM run in-process by transformers (CPU or GPU)."""

    name = "transformers"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 20,
                 max_batch_tokens: int = 640, generate_batch_size: int = 8, use_chat_template: bool = True):
        super().__init__()
        if batch_size < 1:
            raise ValueDetectError(f"batch_size must be at least 1, not {batch_size}")
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.generate_batch_size = generate_batch_size
        self.use_chat_template = use_chat_template
        self._model: Any = None
        self._tokenizer: Any = None
        self._choice_cache: dict[tuple[str, ...], list[list[int]]] = {}

    @property
    def cache_key(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "dtype": self.dtype,
                "chat_template": self.use_chat_template}

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from valuedetect.lm_models import LM_ALIASES, causal_lm_path

        path = causal_lm_path(self.model_name)
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueDetectError(f"unknown dtype {self.dtype!r} for the transformers backend "
                                   "(try float32 or bfloat16)")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise ValueDetectError(
                f"cannot load the causal language model {self.model_name!r} ({error}); use a local checkpoint "
                f"folder, a .gguf file, an alias ({', '.join(LM_ALIASES)}), or a Hub name where the Hub is reachable"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        # transformers 5 renamed past_key_values to cache; 4.x only knows the old name.
        parameters = inspect.signature(self._model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in parameters else None
        # Scoring needs the logits of one position per row: run the decoder, then the output
        # layer on those rows only. Projecting every suffix position onto the vocabulary would
        # add a quarter to SmolLM2's cost (49k tokens) and more than double Gemma 3's (262k).
        # Models that rescale logits in their own forward (Cohere, Granite) take the plain path.
        config = self._model.config
        self._decoder = self._model.get_decoder() if hasattr(self._model, "get_decoder") else None
        self._head = self._model.get_output_embeddings()
        rescaled = any(getattr(config, name, None) not in (None, 1, 1.0) for name in ("logit_scale", "logits_scaling"))
        if self._decoder is self._model or self._decoder is None or self._head is None or rescaled:
            self._decoder = None
        else:
            decoder_parameters = inspect.signature(self._decoder.forward).parameters
            self._decoder_cache_arg = "cache" if "cache" in decoder_parameters else "past_key_values"

    def _has_chat_template(self) -> bool:
        return self.use_chat_template and bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, the chat template applied (with the assistant turn opened)."""
        self._load()
        if not isinstance(prompt, str) and self._has_chat_template():
            text = self._tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                       add_generation_prompt=True)
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self._tokenizer(render_plain(prompt), add_special_tokens=True)["input_ids"])

    def _choice_ids(self, choices: Sequence[str]) -> list[list[int]]:
        """``choice_token_ids``, plus a check that no two answers share a first token."""
        key = tuple(choices)
        if key in self._choice_cache:
            return self._choice_cache[key]
        per_choice = choice_token_ids(
            choices, lambda text: self._tokenizer(text, add_special_tokens=False)["input_ids"],
            lambda ids: self._tokenizer.decode(list(ids)), self.model_name,
        )
        for a in range(len(choices)):
            for b in range(a + 1, len(choices)):
                if set(per_choice[a]) & set(per_choice[b]):
                    raise ValueDetectError(f"answers {choices[a]!r} and {choices[b]!r} start with the same token")
        self._choice_cache[key] = per_choice
        return per_choice

    def _check_length(self, ids: Sequence[int], index: int) -> None:
        limit = getattr(self._model.config, "max_position_embeddings", None)
        if limit and len(ids) > limit:
            raise ValueDetectError(f"request {index}: the prompt has {len(ids)} tokens, more than the "
                                   f"{limit} that {self.model_name!r} accepts")

    # -- scoring ---------------------------------------------------------------------------
    def score(
        self, requests: Sequence[ScoreRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        import torch

        self._load()
        for i, request in enumerate(requests):
            check_prompt(request.prompt, f"score request {i}")
        encoded = [self.encode(r.prompt) for r in requests]
        for i, ids in enumerate(encoded):
            self._check_length(ids, i)
        results: list[dict[str, float] | None] = [None] * len(requests)
        with torch.inference_mode():
            for group in prefix_groups(encoded):
                for _ in group:
                    self.reserve_request()
                self._score_group(group, encoded, requests, results, on_result)
        return results  # type: ignore[return-value]

    def _score_group(self, group: list[int], encoded: list[list[int]], requests: Sequence[ScoreRequest],
                     results: list[Any], on_result: ResultCallback | None) -> None:
        import torch

        shared = shared_length(encoded, group)  # every suffix keeps >= 1 token
        device = self._model.device
        prefix_cache = None
        if shared > 0 and len(group) > 1:
            prefix = torch.tensor([encoded[group[0]][:shared]], device=device)
            extra = {self._keep_arg: 1} if self._keep_arg else {}
            output = self._model(input_ids=prefix, use_cache=True, **extra)
            prefix_cache = output.get("cache")
            if prefix_cache is None:
                prefix_cache = output.get("past_key_values")
            self.usage.add(processed_tokens=shared)
        else:
            shared = 0
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        for members in self._batches(group, [len(encoded[i]) - shared for i in group]):
            suffixes = [encoded[i][shared:] for i in members]
            width = max(len(s) for s in suffixes)
            # Right padding: causal attention keeps pads from touching the real tokens before them.
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=device)
            cache = expand_cache(prefix_cache, len(members)) if prefix_cache is not None else None
            last = torch.tensor([len(s) - 1 for s in suffixes], device=device)
            logprobs = torch.log_softmax(self._next_token_logits(ids, last, cache).float(), dim=-1)
            self.usage.add(processed_tokens=sum(len(s) for s in suffixes),
                           prompt_tokens=sum(len(encoded[i]) for i in members))
            for row, i in enumerate(members):
                choice_ids = self._choice_ids(requests[i].choices)
                result = {
                    choice: float(torch.logsumexp(logprobs[row, ids_], dim=0))
                    for choice, ids_ in zip(requests[i].choices, choice_ids, strict=True)
                }
                results[i] = result
                if on_result:
                    on_result(i, result)

    def _batches(self, members: list[int], lengths: list[int]) -> list[list[int]]:
        """Members sorted by suffix length, cut into batches of at most ``batch_size`` rows and
        ``max_batch_tokens`` padded tokens, so that little is computed on padding."""
        order = sorted(range(len(members)), key=lambda k: lengths[k])
        batches: list[list[int]] = []
        current: list[int] = []
        for k in order:
            rows = len(current) + 1
            if current and (rows > self.batch_size or rows * lengths[k] > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(members[k])
        if current:
            batches.append(current)
        return batches

    def _next_token_logits(self, ids: Any, last: Any, cache: Any) -> Any:
        """Logits after position ``last[b]`` of row ``b`` of ``ids`` (continuing ``cache``)."""
        import torch

        rows = torch.arange(ids.shape[0], device=ids.device)
        if self._decoder is None:
            kwargs = {self._cache_arg: cache} if cache is not None else {}
            return self._model(input_ids=ids, use_cache=cache is not None, **kwargs).logits[rows, last]
        kwargs = {self._decoder_cache_arg: cache} if cache is not None else {}
        hidden = self._decoder(input_ids=ids, use_cache=cache is not None, **kwargs).last_hidden_state
        logits = self._head(hidden[rows, last])
        cap = getattr(self._model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # -- generation ------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        """Greedy (or sampled, temperature > 0) generation, up to ``generate_batch_size``
        requests with the same settings at a time (left-padded). A JSON schema is not enforced
        here (transformers has no grammar); the prompts ask for JSON."""
        self._load()
        encoded = []
        for i, request in enumerate(requests):
            check_prompt(request.prompt, f"generate request {i}")
            encoded.append(self.encode(request.prompt))
            self._check_length(encoded[-1], i)
        results: list[Generation | None] = [None] * len(requests)
        start = 0
        while start < len(requests):
            settings = (requests[start].max_tokens, requests[start].temperature)
            batch = [start]
            while (len(batch) < self.generate_batch_size and batch[-1] + 1 < len(requests)
                   and (requests[batch[-1] + 1].max_tokens, requests[batch[-1] + 1].temperature) == settings):
                batch.append(batch[-1] + 1)
            for _ in batch:
                self.reserve_request()
            for i, generation in zip(batch, self._generate_batch([encoded[i] for i in batch], requests[start]),
                                     strict=True):
                for stop in requests[i].stop:
                    if stop and stop in generation.text:
                        generation.text = generation.text[: generation.text.index(stop)]
                        generation.finish_reason = "stop"
                results[i] = generation
                if on_result:
                    on_result(i, generation)
            start = batch[-1] + 1
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], settings: GenerateRequest) -> list[Generation]:
        import torch

        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = self._tokenizer.eos_token_id if self._tokenizer.eos_token_id is not None else 0
        width = max(len(p) for p in prompts)
        device = self._model.device
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        sample = settings.temperature > 0
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=settings.max_tokens, do_sample=sample,
                temperature=settings.temperature if sample else None, top_p=None, top_k=None, pad_token_id=pad,
            )
        eos = self._model.generation_config.eos_token_id
        stops = {*(eos if isinstance(eos, list) else [eos]), self._tokenizer.eos_token_id} - {None}
        generations = []
        for row, prompt in enumerate(prompts):
            new = output[row, width:].tolist()
            end = next((k for k, token in enumerate(new) if token in stops), None)
            kept = new if end is None else new[: end + 1]
            text = self._tokenizer.decode(kept, skip_special_tokens=True)
            finish = "stop" if end is not None else "length"
            self.usage.add(prompt_tokens=len(prompt), processed_tokens=len(prompt) + len(kept),
                           completion_tokens=len(kept))
            generations.append(Generation(text=text, prompt_tokens=len(prompt), completion_tokens=len(kept),
                                          finish_reason=finish))
        return generations

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        self._choice_cache.clear()


__all__ = ["TransformersLM", "common_prefix_length", "prefix_groups"]
