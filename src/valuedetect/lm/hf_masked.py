"""A masked LM (BERT, RoBERTa, DeBERTa, ...) through transformers: the answer is the model's
distribution at a mask token the backend appends after the prompt (before the trailing SEP),
OpenPrompt-style. It scores label words; it cannot generate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from valuedetect.errors import ValueDetectError
from valuedetect.lm.api import LoglikelihoodRequest
from valuedetect.lm.hf import HFLM, length_batches


class MaskedLM(HFLM):
    name: ClassVar[str] = "transformers-masked"
    kind = "masked"
    can_generate: ClassVar[bool] = False
    auto_class: ClassVar[str] = "AutoModelForMaskedLM"

    def _setup(self) -> None:
        super()._setup()
        if self.tokenizer.mask_token_id is None:
            raise ValueDetectError(f"the tokenizer of {self.model_name or 'the model'!r} has no mask token")

    def _extra_tokens(self) -> int:
        return 1

    def _answer_segments(self) -> list[tuple[str, Any]]:
        return [("ids", (self.tokenizer.mask_token_id,))]

    def column_logprobs(self, requests: Sequence[LoglikelihoodRequest], columns: Sequence[int],
                        states: Any = None) -> Any:
        import torch

        self.load()
        rows = [self.segments(self.pieces(r, i)) for i, r in enumerate(requests)]
        embedded = [self.embed(r) for r in rows]
        # The mask sits right before the trailing specials.
        answer = [e.shape[0] - 1 - len(r[-1][1]) for e, r in zip(embedded, rows, strict=True)]
        out: list[Any] = [None] * len(requests)
        for batch in length_batches([e.shape[0] for e in embedded], self.batch_size, self.max_batch_tokens):
            inputs, attention = self.padded([embedded[i] for i in batch])
            logits = self.model(inputs_embeds=inputs, attention_mask=attention).logits
            picked = logits[torch.arange(len(batch)), torch.tensor([answer[i] for i in batch])]
            for b, value in zip(batch, self.logits_to_logprobs(picked, columns), strict=True):
                out[b] = value
        tokens = sum(e.shape[0] for e in embedded)
        self.usage.add(processed_tokens=tokens, prompt_tokens=tokens)
        return torch.stack(out)


__all__ = ["MaskedLM"]
