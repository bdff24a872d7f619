"""What the three transformers backends (causal, masked, seq2seq) share: loading, the token
layout of a request, the soft prompt, and reading label words off answer-position log-probs.

A request becomes pieces: ``lead`` (the tokenizer's leading special tokens, e.g. BOS or CLS),
``context`` (the shared text, or a whole chat under its chat template), ``suffix`` (the request's
own text), ``trail`` (trailing specials, e.g. SEP or </s>; dropped for causal LMs, whose answer
follows the last token). Context and suffix are tokenised apart, so the shared part is the same
ids in every request. A soft prompt goes in front of everything (``before``) or between context
and suffix (``after``). A prompt longer than ``max_length`` loses context tokens from the left,
so the question and the answer position survive; without ``max_length`` a prompt beyond the
model's positions is an error.

Aliases of GGUF models (smollm2, gemma3-270m, qwen2.5-0.5b, qwen2.5-1.5b) and ``.gguf`` files
are converted once to a checkpoint (``lm.gguf.causal_lm_path``); any other name goes to
``from_pretrained`` unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from valuedetect.compute import native_bfloat16
from valuedetect.errors import ConfigError, ValueDetectError
from valuedetect.lm.api import (
    LM,
    PLACEMENTS,
    PROMPT_INITS,
    LoglikelihoodRequest,
    Prompt,
    ResultCallback,
    check_request,
    render_plain,
)
from valuedetect.lm.tokens import TokenRule

_MASKED_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra", "albert",
                       "mpnet", "camembert", "modernbert", "ernie"}


def detect_kind(config: Any) -> str:
    """causal, masked or seq2seq from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return "masked"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal"
    return "masked" if getattr(config, "model_type", "") in _MASKED_MODEL_TYPES else "causal"


@dataclass(frozen=True)
class Pieces:
    """A request's token ids, in order; see the module docstring."""

    lead: tuple[int, ...]
    context: tuple[int, ...]
    suffix: tuple[int, ...]
    trail: tuple[int, ...]
    soft: int  # the soft prompt row, or -1 when the backend has none

    def length(self, soft_tokens: int) -> int:
        return len(self.lead) + len(self.context) + len(self.suffix) + len(self.trail) + soft_tokens


class HFLM(LM):
    """A transformers model in-process (CPU or GPU); subclasses read the answer position."""

    name: ClassVar[str] = "transformers"
    can_train: ClassVar[bool] = True
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    keep_trail: ClassVar[bool] = True

    def __init__(self, model: str = "", *, device: str = "cpu", dtype: str = "float32", max_length: int | None = None,
                 batch_size: int = 20, max_batch_tokens: int = 2048, use_chat_template: bool = True,
                 model_object: Any = None, tokenizer_object: Any = None):
        super().__init__()
        if batch_size < 1 or max_batch_tokens < 1:
            raise ConfigError(f"batch_size and max_batch_tokens must be at least 1, not {batch_size}, "
                              f"{max_batch_tokens}")
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.use_chat_template = use_chat_template
        self.model: Any = model_object
        self.tokenizer: Any = tokenizer_object
        self.soft_prompt: Any = None  # an lm.soft_prompt.SoftPrompt once attached
        self._rule: TokenRule | None = None
        if model_object is not None:
            self._setup()

    @property
    def cache_key(self) -> dict[str, Any]:
        from valuedetect.fingerprint import model_identity

        return {"backend": self.name, "model": self.model_name, "weights": model_identity(self.model_name)["weights"],
                "dtype": self.dtype, "chat_template": self.use_chat_template, "max_length": self.max_length}

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> Self:
        if self.model is not None:
            return self
        import torch
        import transformers

        from valuedetect.lm.gguf import LM_ALIASES, causal_lm_path, gguf_file
        from valuedetect.models import quiet_transformers

        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"unknown dtype {self.dtype!r} for the transformers backends (try float32 or bfloat16)")
        if dtype is torch.bfloat16 and str(self.device).startswith("cpu") and native_bfloat16() is False:
            warnings.warn(f"{self.model_name}: dtype bfloat16 on a CPU without bfloat16 instructions "
                          "(AVX512_BF16 or AMX); torch emulates them, and matrix products run about 30x "
                          "slower than in float32 here: set dtype = \"float32\"", stacklevel=2)
        path = self.model_name
        with quiet_transformers():
            try:
                if gguf_file(self.model_name) is not None:
                    if self.kind != "causal":
                        raise ConfigError(f"{self.model_name!r} is a causal language model, not a {self.kind} one")
                    path = causal_lm_path(self.model_name)
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                self.model = getattr(transformers, self.auto_class).from_pretrained(path, dtype=dtype)
            except (OSError, ValueError) as error:
                raise ValueDetectError(
                    f"cannot load the {self.kind} language model {self.model_name!r} ({error}); use a local checkpoint "
                    f"folder, a .gguf file, an alias ({', '.join(LM_ALIASES)}), or a Hub name where the Hub is "
                    "reachable") from None
        self._setup()
        return self

    def _setup(self) -> None:
        tie_equal_embeddings(self.model)
        self.model.to(self.device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._lead, self._trail = self._specials()
        self._rule = TokenRule(lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"],
                               lambda ids: self.tokenizer.decode(list(ids)), self.model_name or "the model")

    def _specials(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The special tokens the tokenizer puts before and after a text (BOS, CLS / SEP, </s>)."""
        probe = "hello world"
        plain = list(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
        full = list(self.tokenizer(probe)["input_ids"])
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                trail = tuple(full[start + len(plain) :]) if self.keep_trail else ()
                return tuple(full[:start]), trail
        return (), ()

    @property
    def rule(self) -> TokenRule:
        self.load()
        assert self._rule is not None
        return self._rule

    def token_ids(self, word: str) -> list[int]:
        """The label-word token rule (``lm.tokens``) for this tokenizer."""
        return self.rule(word)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total): the soft prompt, and it plus the frozen LM, tied weights once."""
        from valuedetect.lm.gguf import PARAMETERS

        self.load()
        params = {id(p): p for p in self.model.parameters()}
        # An alias counts as its architecture does (tied embeddings once): the Qwen2.5 GGUF files
        # store the tied matrix twice, quantised two ways, so their copy holds two unequal ones.
        total = PARAMETERS.get(self.model_name or "") or sum(p.numel() for p in params.values())
        trainable = self.soft_prompt.weight.numel() if self.soft_prompt is not None else 0
        return trainable, total + trainable

    # -- soft prompts ----------------------------------------------------------------------
    def attach_soft_prompt(self, tokens: int, prompts: int = 1, placement: str = "after", init: str = "random",
                           text: str = "", seed: int = 0, state: dict[str, Any] | None = None) -> Any:
        """A fresh soft-prompt bank of ``prompts`` x ``tokens`` vectors (``lm.soft_prompt``);
        ``init="text"`` copies the embeddings of ``text``'s first tokens, ``state`` restores one."""
        from valuedetect.lm.soft_prompt import SoftPrompt

        self.load()
        if init not in PROMPT_INITS:
            raise ConfigError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, not {init!r}")
        if placement not in PLACEMENTS:
            raise ConfigError(f"soft_prompt_placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
        embeddings = self.model.get_input_embeddings()
        prompt = SoftPrompt(prompts, tokens, embeddings.weight.shape[1], placement)
        if state is not None:
            prompt.load(state)
        else:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if init == "text" else None
            prompt.initialise(embeddings, (ids or [self.pad_id]) if init == "text" else None, seed)
        self.soft_prompt = prompt.to(self.device)
        return self.soft_prompt

    def detach_soft_prompt(self) -> None:
        self.soft_prompt = None

    @property
    def soft_tokens(self) -> int:
        return self.soft_prompt.tokens if self.soft_prompt is not None else 0

    # -- requests to ids -------------------------------------------------------------------
    def _has_chat_template(self) -> bool:
        return self.use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def encode_context(self, prompt: Prompt) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(lead specials, context ids): a chat under the chat template (assistant turn opened)."""
        if not isinstance(prompt, str) and self._has_chat_template():
            text = self.tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                      add_generation_prompt=True)
            return (), tuple(self._ids(text))
        return self._lead, tuple(self._ids(render_plain(prompt)))

    def pieces(self, request: LoglikelihoodRequest, index: int = 0) -> Pieces:
        self.load()
        lead, context = self.encode_context(request.context)
        suffix = tuple(self._ids(request.suffix))
        trail = self._trail if lead == self._lead else ()
        soft = -1
        if self.soft_prompt is not None:
            soft = request.soft_prompt
            if not 0 <= soft < self.soft_prompt.prompts:
                raise ValueDetectError(f"request {index} asks for soft prompt {soft}; the bank holds "
                                       f"{self.soft_prompt.prompts}")
            if self.soft_prompt.placement == "after" and not suffix:
                raise ValueDetectError(f"request {index}: a soft prompt placed after the context needs a suffix "
                                       "(the part of the prompt after it)")
        pieces = Pieces(lead, context, suffix, trail, soft)
        return self._fit_length(pieces, index)

    def _extra_tokens(self) -> int:
        """Tokens the backend adds beyond the pieces (a masked LM's mask)."""
        return 0

    def _fit_length(self, pieces: Pieces, index: int) -> Pieces:
        length = pieces.length(self.soft_tokens) + self._extra_tokens()
        limit = self.max_length or getattr(self.model.config, "max_position_embeddings", None)
        if not limit or length <= limit:
            return pieces
        excess = length - limit
        if self.max_length is None or excess >= len(pieces.context) + len(pieces.suffix):
            raise ValueDetectError(f"request {index}: the prompt has {length} tokens, more than the {limit} that "
                                   f"{self.model_name or 'the model'!r} accepts")
        # From the left: the argument first, then (a very short max_length) the question's start.
        cut_suffix = max(0, excess - len(pieces.context))
        return Pieces(pieces.lead, pieces.context[excess:], pieces.suffix[cut_suffix:], pieces.trail, pieces.soft)

    # -- embeddings ------------------------------------------------------------------------
    def padded(self, rows: Sequence[Any]) -> tuple[Any, Any]:
        """Embedded rows [length, hidden] right-padded into one batch, with its attention mask."""
        import torch

        width = max(row.shape[0] for row in rows)
        inputs = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=rows[0].dtype, device=self.device)
        attention = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for b, row in enumerate(rows):
            inputs[b, : row.shape[0]] = row
            attention[b, : row.shape[0]] = 1
        return inputs, attention

    def embed(self, segments: Sequence[tuple[str, Any]]) -> Any:
        """[tokens, hidden] input embeddings of ("ids", list) and ("soft", row) segments."""
        import torch

        embeddings = self.model.get_input_embeddings()
        parts = []
        for kind, value in segments:
            if kind == "soft":
                parts.append(self.soft_prompt.weight[value].to(embeddings.weight.dtype))
            elif value:
                parts.append(embeddings(torch.tensor(list(value), dtype=torch.long, device=self.device)))
        return torch.cat(parts, dim=0)

    def segments(self, pieces: Pieces) -> list[tuple[str, Any]]:
        """The whole prompt as segments, the soft prompt in its place."""
        soft = [("soft", pieces.soft)] if pieces.soft >= 0 else []
        placement = self.soft_prompt.placement if soft else None
        before, after, end = ([soft if placement == p else [] for p in ("before", "after", "end")])
        return [*before, ("ids", pieces.lead + pieces.context), *after, ("ids", pieces.suffix), *end,
                *self._answer_segments(), ("ids", pieces.trail)]

    def _answer_segments(self) -> list[tuple[str, Any]]:
        return []

    # -- scoring ---------------------------------------------------------------------------
    def column_logprobs(self, requests: Sequence[LoglikelihoodRequest], columns: Sequence[int],
                        states: Any = None) -> Any:
        """A tensor [len(requests), len(columns)] of log-softmax values at each request's answer
        position, read at vocabulary ``columns``; differentiable when gradients are on (prompt
        tuning trains through it). ``states`` (causal only) keeps shared parts' key/values."""
        raise NotImplementedError

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        import torch

        self.load()
        for i, request in enumerate(requests):
            check_request(request, f"loglikelihood request {i}")
        words = list(dict.fromkeys(w for r in requests for w in r.continuations))
        columns, per_word = self.rule.columns(words)
        for _ in requests:
            self.reserve_request()
        with torch.inference_mode():
            values = self.column_logprobs(requests, columns).double().cpu().numpy()
        position = {w: k for k, w in enumerate(words)}
        results = []
        for i, request in enumerate(requests):
            row = values[i]
            result = {w: float(np.logaddexp.reduce(row[per_word[position[w]]])) for w in request.continuations}
            results.append(result)
            if on_result:
                on_result(i, result)
        return results

    def logits_to_logprobs(self, logits: Any, columns: Sequence[int]) -> Any:
        import torch

        wanted = torch.tensor(list(columns), dtype=torch.long, device=logits.device)
        return torch.log_softmax(logits.float(), dim=-1)[:, wanted]

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        self.soft_prompt = None


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` rows and
    ``max_tokens`` padded tokens (at least one row each), so little is computed on padding."""
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    batches: list[list[int]] = []
    current: list[int] = []
    for k in order:
        rows = len(current) + 1
        if current and (rows > batch_size or rows * lengths[k] > max_tokens):
            batches.append(current)
            current = []
        current.append(k)
    if current:
        batches.append(current)
    return batches



def tie_equal_embeddings(model: Any) -> bool:
    """Share the output head with the input embeddings where they hold the same matrix: a
    transformers copy of a GGUF file (Qwen2.5, tied there) arrives with two equal copies, which
    would count the embeddings twice and hold them twice in memory."""
    import torch

    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    outputs = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if inputs is None or outputs is None or outputs.weight is inputs.weight:
        return False
    if outputs.weight.shape != inputs.weight.shape or getattr(outputs, "bias", None) is not None:
        return False
    if not torch.equal(outputs.weight, inputs.weight):
        return False
    outputs.weight = inputs.weight
    model.config.tie_word_embeddings = True
    return True

__all__ = ["HFLM", "Pieces", "detect_kind", "length_batches", "tie_equal_embeddings"]
