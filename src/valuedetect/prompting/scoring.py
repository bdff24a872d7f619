"""Zero-shot scoring of prompts by label-word log-probabilities, for three kinds of language model.

One interface, ``LabelWordScorer.logprobs(texts, token_ids)``: the log-softmax over the whole
vocabulary at the answer position, read at ``token_ids``:

- masked LM (``AutoModelForMaskedLM``): the logits at the (single) mask token;
- seq2seq (``AutoModelForSeq2SeqLM``, T5): the logits of the first decoder token (the decoder
  gets only its start token; the prompt, without a mask, is the encoder input);
- causal (``AutoModelForCausalLM``): the logits of the next token after the prompt.

Label words are scored by their FIRST token only ("Yes" -> "Yes", "free thought" -> "free"): a
single forward pass then scores every word, and it is exact for one-token words, which Yes/No are
in every tokenizer we know. The spelling tried first is the one with a leading space (" Yes": the
word after "The answer is" in GPT/Llama BPE), then the bare word; a first token that decodes to
whitespace only (SentencePiece's lone "▁", a byte-level " ") is skipped.

Long prompts are cut from the LEFT (``truncation_side="left"``), so the question and the answer
position survive; prompts are sorted by length and batched (right padding, with the answer
position read per row), so padding never changes a score.

Causal LMs share prefixes (``share_prefix``, on by default): consecutive prompts that start with
the same tokens (the 20 value questions about one argument) form a group
(``prefix_cache.prefix_groups``); the group's common prefix runs once, its key/value cache is
repeated for the group's suffixes, and only the suffixes run (right-padded, in batches of at most
``batch_size``, the answer read at each row's last real token; the vocabulary projection only
at those positions). Under a peft soft prompt the prefix runs through the peft model, which puts
the virtual tokens first, and the suffixes through the bare LM continuing that cache, so every
position is what the unshared pass would give it. Prompts in no group (nothing shared) take the
unshared path. ``processed_tokens`` / ``prompt_tokens`` count the token positions run vs. what
separate full prompts would run (soft prompt tokens included in both). Left truncation of a long
argument shifts its prefix per question, so truncated prompts mostly share nothing. Masked and
seq2seq LMs always take the unshared path; ``answer_logprobs`` (training, with gradients) too.

``generate`` answers prompts greedily (causal: left-padded batches; seq2seq: the encoder batch
padded, decoding from the start token), also returning the first step's log-probs, which equal
the answer-position log-probs above: the OA template's generate mode reads both.

Causal aliases (smollm2, gemma3-270m, qwen2.5-0.5b) and ``.gguf`` files go through
``lm_models.causal_lm_path`` (converted once to a cached checkpoint); any other name is given to
``from_pretrained`` unchanged. Not done: sharing the prefix during generation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuedetect.errors import ValueDetectError
from valuedetect.prefix_cache import expand_cache, prefix_groups, shared_length

LM_TYPES = ("auto", "masked", "seq2seq", "causal")
_MASKED_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra", "albert",
                       "mpnet", "camembert", "modernbert", "ernie"}


@dataclass
class Answers:
    """Generated answers, and the log-probs of the asked tokens at their first step."""

    texts: list[str]
    first_logprobs: np.ndarray


def detect_lm_type(config: Any) -> str:
    """masked, seq2seq or causal from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return "masked"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal"
    return "masked" if getattr(config, "model_type", "") in _MASKED_MODEL_TYPES else "causal"


class LabelWordScorer:
    """Log-probabilities of label words at a prompt's answer position (see the module docstring).

    ``model`` and ``tokenizer`` may be given as objects (tests); otherwise they are loaded from
    ``name`` (a Hub name, a folder, or a causal alias) on first use.
    """

    def __init__(self, name: str = "", lm_type: str = "auto", *, max_length: int = 256, batch_size: int = 16,
                 model: Any = None, tokenizer: Any = None, device: str = "cpu", share_prefix: bool = True):
        if lm_type not in LM_TYPES:
            raise ValueDetectError(f"lm_type must be one of {', '.join(LM_TYPES)}, not {lm_type!r}")
        self.name = name
        self.lm_type = lm_type
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.model = model
        self.tokenizer = tokenizer
        self.prefix_tokens = 0  # soft prompt tokens the model prepends to every input (prompt tuning)
        self.share_prefix = share_prefix
        # Token positions run by ``logprobs`` vs. what separate full prompts would run (cumulative).
        self.processed_tokens = 0
        self.prompt_tokens = 0
        if model is not None:
            self._setup()

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> LabelWordScorer:
        if self.model is not None:
            return self
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForMaskedLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )
        from transformers.utils import logging as hf_logging

        from valuedetect.lm_models import LM_ALIASES, causal_lm_path, gguf_file

        path = self.name
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            if gguf_file(self.name) is not None:
                if self.lm_type not in ("auto", "causal"):
                    raise ValueDetectError(f"{self.name!r} is a causal language model, not {self.lm_type}")
                path, self.lm_type = causal_lm_path(self.name), "causal"
            if self.lm_type == "auto":
                self.lm_type = detect_lm_type(AutoConfig.from_pretrained(path))
            auto = {"masked": AutoModelForMaskedLM, "seq2seq": AutoModelForSeq2SeqLM,
                    "causal": AutoModelForCausalLM}[self.lm_type]
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = auto.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ValueDetectError(
                f"cannot load the {self.lm_type} language model {self.name!r} ({error}); use a local checkpoint "
                f"folder, a causal alias ({', '.join(LM_ALIASES)}), or a Hub name where the Hub is reachable"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        self._setup()
        return self

    def _setup(self) -> None:
        if self.lm_type == "auto":
            self.lm_type = detect_lm_type(self.model.config)
        self.model.to(self.device).eval()
        self.tokenizer.truncation_side = "left"
        if self.lm_type == "masked" and self.tokenizer.mask_token_id is None:
            raise ValueDetectError(f"the tokenizer of {self.name or 'the model'!r} has no mask token")
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0

    @property
    def mask_token(self) -> str:
        """What a template's {mask} becomes: the mask token for masked LMs, else nothing."""
        self.load()
        return self.tokenizer.mask_token if self.lm_type == "masked" else ""

    # -- label words -----------------------------------------------------------------------
    def first_token_id(self, word: str) -> int:
        """The id of the first token of ``word`` (leading-space spelling first, see above)."""
        self.load()
        for variant in (" " + word.strip(), word.strip()):
            ids = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            if ids and self.tokenizer.decode(ids[:1]).strip():
                return int(ids[0])
        raise ValueDetectError(f"the tokenizer of {self.name or 'the model'!r} cannot spell the label word {word!r}")

    def token_ids(self, words: Sequence[str]) -> list[int]:
        return [self.first_token_id(w) for w in words]

    # -- scoring ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        self.load()
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        if self.lm_type == "masked" and ids.count(self.tokenizer.mask_token_id) != 1:
            raise ValueDetectError("a masked-LM prompt needs exactly one mask token (end the template with {mask}); "
                                   f"got {ids.count(self.tokenizer.mask_token_id)} in {text[:80]!r}...")
        return list(ids)

    def logprobs(self, texts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        """[len(texts), len(token_ids)]: log P(token | prompt) at each prompt's answer position.
        Causal LMs share the prefixes of consecutive prompts (``share_prefix``), so pass the
        questions about one argument together."""
        import torch

        self.load()
        encoded = [self.encode(t) for t in texts]
        result = np.zeros((len(texts), len(token_ids)))
        with torch.inference_mode():
            if self.share_prefix and self.lm_type == "causal":
                self._shared_logprobs(encoded, token_ids, result)
            else:
                self._unshared_logprobs(encoded, list(range(len(encoded))), token_ids, result)
        return result

    def _unshared_logprobs(self, encoded: list[list[int]], rows: list[int], token_ids: Sequence[int],
                           result: np.ndarray) -> None:
        """Each prompt in full: sorted by length, ``batch_size`` at a time."""
        order = sorted(rows, key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            result[batch] = self.answer_logprobs([encoded[i] for i in batch], token_ids).cpu().numpy()
        tokens = sum(self.prefix_tokens + len(encoded[i]) for i in rows)
        self.processed_tokens += tokens
        self.prompt_tokens += tokens

    def _shared_logprobs(self, encoded: list[list[int]], token_ids: Sequence[int], result: np.ndarray) -> None:
        """Groups of consecutive prompts with a common prefix: the prefix once, then the suffixes."""
        alone: list[int] = []
        for group in prefix_groups(encoded):
            shared = shared_length(encoded, group)
            if len(group) < 2 or shared < 1:
                alone += group
                continue
            self._score_group(encoded, group, shared, token_ids, result)
        if alone:
            self._unshared_logprobs(encoded, alone, token_ids, result)

    def _score_group(self, encoded: list[list[int]], group: list[int], shared: int, token_ids: Sequence[int],
                     result: np.ndarray) -> None:
        import torch

        lm = self.model.get_base_model() if self.prefix_tokens else self.model
        cache_arg, keep_arg = _forward_args(lm)
        keep = {keep_arg: 1} if keep_arg else {}
        # Through the peft model (if any), so the soft prompt comes first in the cache.
        prefix = torch.tensor([encoded[group[0]][:shared]], device=self.device)
        output = self.model(input_ids=prefix, use_cache=True, **keep)
        prefix_cache = output.get("cache")
        if prefix_cache is None:
            prefix_cache = output.get("past_key_values")
        wanted = torch.tensor(list(token_ids), dtype=torch.long, device=self.device)
        batches = _balanced_batches(sorted(group, key=lambda i: len(encoded[i])), self.batch_size)
        for number, batch in enumerate(batches):
            suffixes = [encoded[i][shared:] for i in batch]
            width = max(len(s) for s in suffixes)
            # Right padding: causal attention keeps pads away from the real tokens before them.
            ids = torch.tensor([s + [self._pad_id] * (width - len(s)) for s in suffixes], device=self.device)
            last = [len(s) - 1 for s in suffixes]
            cache = expand_cache(prefix_cache, len(batch), copy_first=number < len(batches) - 1)
            kwargs: dict[str, Any] = {cache_arg: cache}
            if keep_arg:  # project onto the vocabulary only where an answer is read
                positions = sorted(set(last))
                kwargs[keep_arg] = torch.tensor(positions, device=self.device)
                last = [positions.index(k) for k in last]
            logits = lm(input_ids=ids, use_cache=True, **kwargs).logits[torch.arange(len(batch)), last]
            result[batch] = torch.log_softmax(logits.float(), dim=-1)[:, wanted].cpu().numpy()
        self.processed_tokens += self.prefix_tokens + shared + sum(len(encoded[i]) - shared for i in group)
        self.prompt_tokens += sum(self.prefix_tokens + len(encoded[i]) for i in group)

    def generate(self, texts: Sequence[str], max_new_tokens: int, token_ids: Sequence[int]) -> Answers:
        """Greedy answers of at most ``max_new_tokens`` tokens (cut at the end-of-sequence token),
        with the log-probs of ``token_ids`` at the first answer step. Causal LMs and seq2seq LMs
        only; prompts sorted by length and batched (causal: left padding, so every row's answer
        starts at the same column)."""
        import torch

        self.load()
        if self.lm_type not in ("causal", "seq2seq"):
            raise ValueDetectError(f"generation needs a causal or seq2seq language model, not a {self.lm_type} one")
        if hasattr(self.model, "peft_config"):
            raise ValueDetectError("generation under a soft prompt (prompt tuning) is not supported")
        encoded = [self.encode(t) for t in texts]
        self.processed_tokens += sum(len(e) for e in encoded)  # prompt positions; nothing shared here
        self.prompt_tokens += sum(len(e) for e in encoded)
        answers = Answers([""] * len(texts), np.zeros((len(texts), len(token_ids))))
        wanted = torch.tensor(list(token_ids), dtype=torch.long, device=self.device)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                ids, attention = self._generation_batch([encoded[i] for i in batch])
                output = self.model.generate(
                    input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=False,
                    temperature=None, top_p=None, top_k=None, pad_token_id=self._pad_id,
                    output_logits=True, return_dict_in_generate=True,
                )
                new = output.sequences[:, ids.shape[1] if self.lm_type == "causal" else 1 :]
                first = torch.log_softmax(output.logits[0].float(), dim=-1)[:, wanted].cpu().numpy()
                for row, i in enumerate(batch):
                    answers.texts[i] = self._decode_answer(new[row].tolist())
                    answers.first_logprobs[i] = first[row]
        return answers

    def _generation_batch(self, rows: list[list[int]]) -> tuple[Any, Any]:
        """input ids and attention mask: left-padded for causal LMs (generation appends on the
        right), right-padded for a seq2seq encoder."""
        import torch

        width = max(len(r) for r in rows)
        left = self.lm_type == "causal"
        ids = [[self._pad_id] * (width - len(r)) + r if left else r + [self._pad_id] * (width - len(r)) for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) if left else [1] * len(r) + [0] * (width - len(r))
                for r in rows]
        return (torch.tensor(ids, dtype=torch.long, device=self.device),
                torch.tensor(mask, dtype=torch.long, device=self.device))

    def _decode_answer(self, tokens: list[int]) -> str:
        """The answer text up to the first end-of-sequence token, special tokens dropped."""
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        stops = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}
        end = next((k for k, token in enumerate(tokens) if token in stops), len(tokens))
        return self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()

    def answer_logprobs(self, rows: list[list[int]], token_ids: Sequence[int]) -> Any:
        """A torch tensor [len(rows), len(token_ids)] of log-softmax values at the answer position of
        each encoded prompt (``encode``), one right-padded batch; differentiable when called with
        gradients enabled (prompt tuning trains through it)."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            attention[b, : len(r)] = 1
        logits = self._answer_logits(ids.to(self.device), attention.to(self.device), rows)
        wanted = torch.tensor(list(token_ids), dtype=torch.long, device=logits.device)
        return torch.log_softmax(logits.float(), dim=-1)[:, wanted]

    def _answer_logits(self, ids: Any, attention: Any, rows: list[list[int]]) -> Any:
        import torch

        index = torch.arange(len(rows))
        # Soft prompt tokens (peft prompt tuning) are prepended to the input, so for masked and
        # causal models every position of the output moves right by their number.
        shift = self.prefix_tokens
        if self.lm_type == "masked":
            position = torch.tensor([r.index(self.tokenizer.mask_token_id) + shift for r in rows])
            return self.model(input_ids=ids, attention_mask=attention).logits[index, position]
        if self.lm_type == "seq2seq":
            start = self.model.config.decoder_start_token_id
            start = self._pad_id if start is None else start
            decoder = torch.full((len(rows), 1), start, dtype=torch.long, device=ids.device)
            return self.model(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder).logits[:, 0]
        last = [len(r) - 1 + shift for r in rows]
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        _, keep_arg = _forward_args(base)
        if keep_arg is None:
            return self.model(input_ids=ids, attention_mask=attention).logits[index, torch.tensor(last)]
        # Project onto the vocabulary only at the answer positions: for a 262k-word vocabulary
        # (gemma-3) the projection at every position costs more than the transformer layers.
        positions = sorted(set(last))
        logits = self.model(input_ids=ids, attention_mask=attention,
                            **{keep_arg: torch.tensor(positions, device=ids.device)}).logits
        return logits[index, torch.tensor([positions.index(k) for k in last])]


def _forward_args(model: Any) -> tuple[str, str | None]:
    """The forward keyword for a key/value cache (transformers 5: ``cache``, 4.x:
    ``past_key_values``) and for keeping only some positions' logits (None if unknown)."""
    parameters = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in parameters else "past_key_values"
    return cache, "logits_to_keep" if "logits_to_keep" in parameters else None


def _balanced_batches(rows: list[int], batch_size: int) -> list[list[int]]:
    """``rows`` cut in order into the fewest batches of at most ``batch_size``, of near-equal
    size (20 questions at batch size 16: 10 + 10, not 16 + 4)."""
    count = -(-len(rows) // batch_size)
    bounds = [round(k * len(rows) / count) for k in range(count + 1)]
    return [rows[bounds[k] : bounds[k + 1]] for k in range(count)]


def yes_probability(logprobs: np.ndarray, n_positive: int) -> np.ndarray:
    """P(yes) per row: softmax over two classes, each the log-sum-exp of its words' log-probs
    (columns ``[:n_positive]`` positive, the rest negative)."""
    positive = np.logaddexp.reduce(logprobs[:, :n_positive], axis=1)
    negative = np.logaddexp.reduce(logprobs[:, n_positive:], axis=1)
    return 1.0 / (1.0 + np.exp(negative - positive))


def synonym_probability(logprobs: np.ndarray, own: Sequence[Sequence[int]], categories: Sequence[int]) -> np.ndarray:
    """OA's knowledgeable verbalizer: the probability mass of the asked category's synonym first
    tokens, normalised over the first tokens of ALL 20 categories' synonyms (``logprobs`` columns).

    Chosen over a fixed set of contrast words because it needs no extra word list and its
    contrast is exactly the alternatives the paper's verbalizer can answer; it stays in [0, 1]
    and is comparable across categories up to each category's prior, which the per-category
    thresholds absorb. ``own[c]`` lists the columns of category c; row i asks about
    ``categories[i]``.
    """
    probabilities = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    total = probabilities.sum(axis=1)
    mass = np.array([probabilities[i, own[c]].sum() for i, c in enumerate(categories)])
    return mass / total
