"""A causal LM through transformers, scoring close to the FLOP floor.

Consecutive requests that share their context (the 20 value questions about one argument) are
scored together, in one of three ways (``sharing``):

- ``packed`` (Llama, Qwen2, Gemma 3): one row holds the shared part once and then every
  question's own part, each attending to the shared part and to itself only (a 4D attention
  mask and per-suffix position ids, ``lm.packing``). One forward pass, no key/value copies.
- ``kv-cache`` (any architecture): the shared part runs once, and its key/value cache is
  repeated for a right-padded batch of the own parts.
- ``none``: every prompt in full.
``auto`` packs where the architecture is known to take a custom 4D mask and falls back to the
key/value cache elsewhere. Requests with a ``suffix`` share exactly their context; requests
without one (chats) share the longest common token prefix of their group (``lm.prefix``).

Only the answer positions are projected onto the vocabulary (a 262k-word head costs Gemma 3
more than its layers). ``usage.processed_tokens`` counts the positions computed,
``usage.prompt_tokens`` what separate full prompts would compute (soft tokens in both).

Prompt tuning (``column_logprobs`` with gradients) runs the same code. With the soft prompt
placed after the context and a ``PrefixStates`` store, the frozen model's key/values of each
argument are computed once (without gradients) and reused by its questions in every epoch.
Placed at the end (after each question), the questions also run without gradients, and only
the soft tokens go through the backward pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from valuedetect.errors import ConfigError
from valuedetect.lm import packing
from valuedetect.lm.api import GenerateRequest, Generation, LoglikelihoodRequest, ResultCallback
from valuedetect.lm.hf import HFLM, Pieces
from valuedetect.lm.prefix import prefix_groups, shared_length

SHARING = ("auto", "packed", "kv-cache", "none")
# Architectures whose attention takes a custom 4D mask and position ids (tested on tiny models).
PACKED_MODEL_TYPES = frozenset({"llama", "qwen2", "gemma3_text", "gemma3"})

Segments = tuple[tuple[str, Any], ...]


@dataclass
class _Unit:
    """One request split into the part it shares with its neighbours and the part of its own."""

    shared: Segments
    own: Segments
    length: int  # the whole prompt's tokens, soft ones included


class CausalLM(HFLM):
    name: ClassVar[str] = "transformers-causal"
    kind = "causal"
    keep_trail: ClassVar[bool] = False

    def __init__(self, model: str = "", *, sharing: str = "auto", generate_batch_size: int = 8, **options: Any):
        if sharing not in SHARING:
            raise ConfigError(f"sharing must be one of {', '.join(SHARING)}, not {sharing!r}")
        self.sharing = sharing
        self.generate_batch_size = generate_batch_size
        super().__init__(model, **options)

    def _setup(self) -> None:
        super()._setup()
        config = self.model.config
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        self._head = self.model.get_output_embeddings()
        rescaled = any(getattr(config, n, None) not in (None, 1, 1.0) for n in ("logit_scale", "logits_scaling"))
        self._decoder = None if decoder is None or decoder is self.model or self._head is None or rescaled else decoder
        supported = self._decoder is not None and getattr(config, "model_type", "") in PACKED_MODEL_TYPES
        if self.sharing == "packed" and not supported:
            raise ConfigError(f"sharing = 'packed' is not available for {getattr(config, 'model_type', '?')!r} "
                              "models; use 'kv-cache' or 'auto'")
        self.mode = {"auto": "packed" if supported else "kv-cache"}.get(self.sharing, self.sharing)
        layer_types = getattr(config, "layer_types", None) or []
        self._window = getattr(config, "sliding_window", None) if "sliding_attention" in layer_types else None
        target = self._decoder or self.model
        parameters = inspect.signature(target.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"

    @property
    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key, "backend": self.name}

    # -- requests to units -----------------------------------------------------------------
    def _units(self, requests: Sequence[LoglikelihoodRequest]) -> list[_Unit]:
        pieces = [self.pieces(r, i) for i, r in enumerate(requests)]
        ids = [p.lead + p.context + p.suffix for p in pieces]
        split = [len(p.lead) + len(p.context) if p.suffix else len(i) - 1 for p, i in zip(pieces, ids, strict=True)]
        run: list[int] = []
        for k in [*range(len(pieces)), None]:  # runs of requests without a suffix: shared token prefixes
            if k is not None and not pieces[k].suffix:
                run.append(k)
                continue
            for group in prefix_groups([ids[i] for i in run]):
                members = [run[g] for g in group]
                shared = shared_length([ids[i] for i in members], range(len(members)))
                if len(members) > 1 and shared > 0:
                    for i in members:
                        split[i] = shared
            run = []
        return [self._unit(p, i, s) for p, i, s in zip(pieces, ids, split, strict=True)]

    def _unit(self, pieces: Pieces, ids: tuple[int, ...], split: int) -> _Unit:
        soft = pieces.soft
        length = len(ids) + self.soft_tokens
        if self.mode == "none":
            return _Unit((), tuple(self.segments(pieces)), length)
        if soft >= 0 and self.soft_prompt.placement == "before":
            return _Unit((("soft", soft), ("ids", ids[:split])), (("ids", ids[split:]),), length)
        if soft >= 0 and self.soft_prompt.placement == "end":
            return _Unit((("ids", ids[:split]),), (("ids", ids[split:]), ("soft", soft)), length)
        if soft >= 0:
            return _Unit((("ids", ids[:split]),), (("soft", soft), ("ids", ids[split:])), length)
        return _Unit((("ids", ids[:split]),), (("ids", ids[split:]),), length)

    def _groups(self, units: list[_Unit]) -> list[list[int]]:
        groups: list[list[int]] = []
        for k, unit in enumerate(units):
            if groups and unit.shared and units[groups[-1][0]].shared == unit.shared:
                groups[-1].append(k)
            else:
                groups.append([k])
        return groups

    def _length(self, segments: Segments) -> int:
        return sum(self.soft_tokens if kind == "soft" else len(value) for kind, value in segments)

    # -- scoring ---------------------------------------------------------------------------
    def column_logprobs(self, requests: Sequence[LoglikelihoodRequest], columns: Sequence[int],
                        states: Any = None) -> Any:
        import torch

        self.load()
        units = self._units(requests)
        out: list[Any] = [None] * len(requests)
        groups = self._groups(units)
        use_states = (states is not None and self.mode == "packed" and self.soft_prompt is not None
                      and self.soft_prompt.placement in ("after", "end"))
        if use_states and self.soft_prompt.placement == "end":
            self._score_at_end(units, [(group, self._argument_states(units, group, states)) for group in groups],
                               columns, out)
        elif use_states:
            for group in groups:
                self._score_on_states(units, group, columns, states, out)
        elif self.mode == "packed":
            self._score_packed(units, groups, columns, out)
        else:
            for group in groups:
                self._score_kv(units, group, columns, out)
        self.usage.add(prompt_tokens=sum(u.length for u in units))
        return torch.stack(out)

    def _chunks(self, units: list[_Unit], group: list[int]) -> list[list[int]]:
        """A group's members cut into rows of at most ``batch_size`` suffixes and
        ``max_batch_tokens`` tokens (the shared part repeated in each)."""
        shared = self._length(units[group[0]].shared)
        rows: list[list[int]] = []
        current: list[int] = []
        width = shared
        for k in group:
            own = self._length(units[k].own)
            if current and (len(current) >= self.batch_size or width + own > self.max_batch_tokens):
                rows.append(current)
                current, width = [], shared
            current.append(k)
            width += own
        rows.append(current)
        return rows

    def _score_packed(self, units: list[_Unit], groups: list[list[int]], columns: Sequence[int],
                      out: list[Any]) -> None:
        rows = [row for group in groups for row in self._chunks(units, group)]
        batch: list[list[int]] = []
        widest = 0
        for row in rows:
            width = self._length(units[row[0]].shared) + sum(self._length(units[k].own) for k in row)
            if batch and (len(batch) + 1) * max(widest, width) > self.max_batch_tokens:
                self._packed_batch(units, batch, columns, out)
                batch, widest = [], 0
            batch.append(row)
            widest = max(widest, width)
        if batch:
            self._packed_batch(units, batch, columns, out)

    def _packed_batch(self, units: list[_Unit], rows: list[list[int]], columns: Sequence[int],
                      out: list[Any]) -> None:
        import torch

        embedded, layouts = [], []
        for row in rows:
            shared = units[row[0]].shared
            parts = [self.embed(shared)] if shared else []
            parts += [self.embed(units[k].own) for k in row]
            embedded.append(torch.cat(parts))
            layouts.append(packing.layout(self._length(shared), [self._length(units[k].own) for k in row]))
        width = max(e.shape[0] for e in embedded)
        inputs = torch.zeros((len(rows), width, embedded[0].shape[1]), dtype=embedded[0].dtype, device=self.device)
        for r, e in enumerate(embedded):
            inputs[r, : e.shape[0]] = e
        hidden = self._hidden(inputs, layouts, width, past=0, cache=None)
        index_rows = [r for r, layout in enumerate(layouts) for _ in layout.last]
        index_cols = [last for layout in layouts for last in layout.last]
        logprobs = self._logprobs(hidden[torch.tensor(index_rows), torch.tensor(index_cols)], columns)
        for value, k in zip(logprobs, [k for row in rows for k in row], strict=True):
            out[k] = value
        self.usage.add(processed_tokens=sum(layout.width for layout in layouts))

    def _hidden(self, inputs: Any, layouts: list[packing.Layout], width: int, past: int, cache: Any,
                past_layout: packing.Layout | None = None) -> Any:
        """The decoder's last hidden states of a packed batch (optionally continuing ``cache``;
        ``past_layout``: the cache holds an argument and then its questions, laid out so)."""
        where: dict[str, Any] = {}
        if past_layout is not None:
            where = {"past_segments": past_layout.segments, "past_positions": past_layout.positions}
        mask = packing.attention_mask(layouts, width, past, inputs.dtype, **where).to(self.device)
        if self._window is not None:
            window = packing.attention_mask(layouts, width, past, inputs.dtype, self._window, **where)
            mask = {"full_attention": mask, "sliding_attention": window.to(self.device)}
        positions = packing.position_ids(layouts, width).to(self.device)
        extra = {self._cache_arg: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        return self._decoder(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                             **extra).last_hidden_state

    def _logprobs(self, hidden: Any, columns: Sequence[int]) -> Any:
        import torch

        logits = self._head(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return self.logits_to_logprobs(logits, columns)

    def _forward_last(self, inputs: Any, last: list[int], cache: Any, columns: Sequence[int]) -> Any:
        """Right-padded rows (plain causal attention), optionally continuing ``cache``:
        log-probs at each row's ``last`` position."""
        import torch

        rows = torch.arange(inputs.shape[0])
        extra = {self._cache_arg: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        if self._decoder is not None:
            hidden = self._decoder(inputs_embeds=inputs, **extra).last_hidden_state
            return self._logprobs(hidden[rows, torch.tensor(last)], columns)
        logits = self.model(inputs_embeds=inputs, **extra).logits
        return self.logits_to_logprobs(logits[rows, torch.tensor(last)], columns)

    def _score_kv(self, units: list[_Unit], group: list[int], columns: Sequence[int], out: list[Any]) -> None:
        """The fallback: the shared part once, its cache repeated for batches of own parts."""
        import torch

        from valuedetect.lm.prefix import expand_cache

        shared = units[group[0]].shared
        prefix_cache = None
        if shared:
            target = self._decoder or self.model
            output = target(inputs_embeds=self.embed(shared)[None], use_cache=True)
            prefix_cache = output_cache(output)
            self.usage.add(processed_tokens=self._length(shared))
        for row in self._chunks(units, group):
            embedded = [self.embed(units[k].own) for k in row]
            width = max(e.shape[0] for e in embedded)
            inputs = torch.zeros((len(row), width, embedded[0].shape[1]), dtype=embedded[0].dtype, device=self.device)
            for r, e in enumerate(embedded):
                inputs[r, : e.shape[0]] = e
            cache = expand_cache(prefix_cache, len(row)) if prefix_cache is not None else None
            values = self._forward_last(inputs, [e.shape[0] - 1 for e in embedded], cache, columns)
            for value, k in zip(values, row, strict=True):
                out[k] = value
            self.usage.add(processed_tokens=sum(e.shape[0] for e in embedded))

    def _argument_states(self, units: list[_Unit], group: list[int], states: Any) -> list[tuple[Any, Any]]:
        """A group's shared part (the argument) as per-layer key/values: read from ``states``, or
        computed without gradients and stored there."""
        import torch

        shared = units[group[0]].shared
        tensors = states.get(shared)
        if tensors is None:
            # A cache without the config keeps every position in every layer (a sliding-window
            # layer's own cache would drop old ones); the packed mask applies the window.
            cache = self._cache_from([])
            with torch.no_grad():
                self._decoder(inputs_embeds=self.embed(shared)[None], use_cache=True, **{self._cache_arg: cache})
            tensors = cache_tensors(cache)
            states.put(shared, tensors)
            self.usage.add(processed_tokens=self._length(shared))
        return tensors

    def _score_on_states(self, units: list[_Unit], group: list[int], columns: Sequence[int], states: Any,
                         out: list[Any]) -> None:
        """Prompt tuning with the soft prompt after the argument: the argument's key/values from
        ``states`` (computed without gradients the first time), then its questions packed."""
        import torch

        tensors = self._argument_states(units, group, states)
        past = int(tensors[0][0].shape[-2])
        for row in self._chunks(units, group):
            layout = packing.layout(0, [self._length(units[k].own) for k in row], past=past)
            inputs = torch.cat([self.embed(units[k].own) for k in row])[None]
            hidden = self._hidden(inputs, [layout], layout.width, past, self._cache_from(tensors))
            values = self._logprobs(hidden[0, torch.tensor(list(layout.last))], columns)
            for value, k in zip(values, row, strict=True):
                out[k] = value
            self.usage.add(processed_tokens=layout.width)

    def _score_at_end(self, units: list[_Unit], batch: list[tuple[list[int], list[tuple[Any, Any]]]],
                      columns: Sequence[int], out: list[Any]) -> None:
        """Soft prompts at the end of each question, for every argument of a training step at once.

        The arguments' stored key/values are laid side by side in one cache; all their questions
        then run as one packed row without gradients (each attending to its own argument and to
        itself), and all soft tokens as a second row (each block continuing its own question),
        so the backward pass covers the soft positions only. One wide row instead of one narrow
        pass per argument: a step's matrix products then have hundreds of rows, not tens, which
        is what a CPU needs to run near its peak.
        """
        import torch

        pasts = [int(tensors[0][0].shape[-2]) for _, tensors in batch]
        if len(batch) == 1:
            joined = batch[0][1]
        else:
            joined = [tuple(torch.cat([t[layer][i] for _, t in batch], dim=-2) for i in (0, 1))
                      for layer in range(len(batch[0][1]))]
        cache = self._cache_from(joined)
        # every token as (group: its argument, segment: -1 for the argument, j for pair j, position id)
        held = packing.Tokens.join([packing.Tokens.shared(g, n) for g, n in enumerate(pasts)])
        rows = [(g, k) for g, (members, _) in enumerate(batch) for k in members]
        questions = [units[k].own[:-1] for _, k in rows]
        lengths = [self._length(q) for q in questions]
        if min(lengths) < 1:
            raise ValueError("every packed suffix needs at least one token")
        asked = packing.Tokens.join([packing.Tokens.suffix(g, j, pasts[g], n)
                                     for j, ((g, _), n) in enumerate(zip(rows, lengths, strict=True))])
        with torch.no_grad():
            inputs = torch.cat([self.embed(q) for q in questions])[None]
            self._grouped_hidden(inputs, held, asked, cache)
        soft = packing.Tokens.join([packing.Tokens.suffix(g, j, pasts[g] + n, self.soft_tokens)
                                    for j, ((g, _), n) in enumerate(zip(rows, lengths, strict=True))])
        inputs = torch.cat([self.embed(units[k].own[-1:]) for _, k in rows])[None]
        hidden = self._grouped_hidden(inputs, packing.Tokens.join([held, asked]), soft, cache)
        last = torch.arange(1, len(rows) + 1) * self.soft_tokens - 1
        values = self._logprobs(hidden[0, last], columns)
        for value, (_, k) in zip(values, rows, strict=True):
            out[k] = value
        self.usage.add(processed_tokens=asked.width + soft.width)

    def _grouped_hidden(self, inputs: Any, past: packing.Tokens, row: packing.Tokens, cache: Any) -> Any:
        """Last hidden states of one row continuing ``cache`` (laid out as ``past``), each token
        attending only to its own argument and its own segment (``packing.grouped_mask``)."""
        import torch

        mask = packing.grouped_mask(past, row, inputs.dtype).to(self.device)
        if self._window is not None:
            window = packing.grouped_mask(past, row, inputs.dtype, self._window).to(self.device)
            mask = {"full_attention": mask, "sliding_attention": window}
        positions = torch.tensor([row.positions], dtype=torch.long, device=self.device)
        return self._decoder(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                             **{self._cache_arg: cache, "use_cache": True}).last_hidden_state

    def _cache_from(self, tensors: list[tuple[Any, Any]]) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer, (keys, values) in enumerate(tensors):
            cache.update(keys, values, layer)
        return cache

    # -- generation ------------------------------------------------------------------------
    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        from valuedetect.lm.hf_generate import generate_until

        return generate_until(self, requests, on_result, self.generate_batch_size)


def output_cache(output: Any) -> Any:
    """The key/value cache a forward pass returned (transformers 5: ``cache``; 4.x: ``past_key_values``)."""
    cache = output.get("cache")
    return output.get("past_key_values") if cache is None else cache


def cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    """Per layer (keys, values) of a transformers key/value cache (4.x and 5.x layouts)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


__all__ = ["PACKED_MODEL_TYPES", "SHARING", "CausalLM", "cache_tensors"]
