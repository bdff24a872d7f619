"""Greedy (or sampled) generation for the causal and seq2seq transformers backends.

Requests with the same settings go in batches of ``generate_batch_size``: causal prompts left-
padded (generation appends on the right, so every row's answer starts at the same column), a
seq2seq encoder input right-padded. An answer ends at the end-of-sequence token or at the first
stop string. ``GenerateRequest.score_words`` asks also for those words' log-probabilities at
the first answer step (which equal ``loglikelihood`` at the same prompt): OA's generate mode
reads both. A JSON schema is not enforced here (transformers has no grammar); prompts ask for
JSON. Generation under a soft prompt is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from valuedetect.errors import ValueDetectError
from valuedetect.lm.api import GenerateRequest, Generation, ResultCallback, check_prompt


def generate_until(lm: Any, requests: Sequence[GenerateRequest], on_result: ResultCallback | None,
                   batch_size: int) -> list[Generation]:
    lm.load()
    if lm.soft_prompt is not None:
        raise ValueDetectError("generation under a soft prompt (prompt tuning) is not supported")
    encoded = []
    for i, request in enumerate(requests):
        check_prompt(request.context, f"generate request {i}")
        lead, context = lm.encode_context(request.context)
        ids = list(lead + context) + (list(lm._trail) if lm.kind == "seq2seq" and lead == lm._lead else [])
        limit = getattr(lm.model.config, "max_position_embeddings", None)
        if lm.max_length and len(ids) > lm.max_length:
            ids = ids[:len(lead)] + ids[len(ids) - lm.max_length + len(lead):]
        elif limit and lm.kind == "causal" and len(ids) > limit:
            raise ValueDetectError(f"request {i}: the prompt has {len(ids)} tokens, more than the {limit} that "
                                   f"{lm.model_name or 'the model'!r} accepts")
        encoded.append(ids)
    results: list[Generation | None] = [None] * len(requests)
    start = 0
    while start < len(requests):
        key = _settings(requests[start])
        batch = [start]
        while len(batch) < batch_size and batch[-1] + 1 < len(requests) and _settings(requests[batch[-1] + 1]) == key:
            batch.append(batch[-1] + 1)
        for _ in batch:
            lm.reserve_request()
        for i, generation in zip(batch, _generate_batch(lm, [encoded[i] for i in batch], requests[start]),
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


def _settings(request: GenerateRequest) -> tuple[Any, ...]:
    return (request.max_tokens, request.temperature, request.score_words)


def _generate_batch(lm: Any, prompts: list[list[int]], settings: GenerateRequest) -> list[Generation]:
    import torch

    width = max(len(p) for p in prompts)
    left = lm.kind == "causal"
    pad = lm.pad_id
    ids = [[pad] * (width - len(p)) + p if left else p + [pad] * (width - len(p)) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) if left else [1] * len(p) + [0] * (width - len(p)) for p in prompts]
    sample = settings.temperature > 0
    words = list(settings.score_words)
    columns, per_word = lm.rule.columns(words) if words else ([], [])
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=torch.tensor(ids, device=lm.device), attention_mask=torch.tensor(mask, device=lm.device),
            max_new_tokens=settings.max_tokens, do_sample=sample, temperature=settings.temperature if sample else None,
            top_p=None, top_k=None, pad_token_id=pad, output_logits=bool(words), return_dict_in_generate=True,
        )
    sequences = output.sequences
    first = lm.logits_to_logprobs(output.logits[0], columns).double().cpu().numpy() if words else None
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    stops = {*(eos if isinstance(eos, list) else [eos]), lm.tokenizer.eos_token_id} - {None}
    generations = []
    for row, prompt in enumerate(prompts):
        new = sequences[row, width if left else 1 :].tolist()
        end = next((k for k, token in enumerate(new) if token in stops), None)
        kept = new if end is None else new[: end + 1]
        text = lm.tokenizer.decode(kept, skip_special_tokens=True)
        scores = None
        if first is not None:
            scores = {w: float(np.logaddexp.reduce(first[row][per_word[k]])) for k, w in enumerate(words)}
        lm.usage.add(prompt_tokens=len(prompt), processed_tokens=len(prompt) + len(kept), completion_tokens=len(kept))
        finish = "stop" if end is not None else "length"
        generations.append(Generation(text=text, prompt_tokens=len(prompt), completion_tokens=len(kept),
                                      finish_reason=finish, first_logprobs=scores))
    return generations


__all__ = ["generate_until"]
