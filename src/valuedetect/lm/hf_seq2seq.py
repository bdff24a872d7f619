"""A sequence-to-sequence LM (T5, BART, ...) through transformers: the prompt is the encoder
input and the answer the first decoder token (the decoder gets only its start token). A soft
prompt goes into the encoder input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from valuedetect.lm.api import GenerateRequest, Generation, LoglikelihoodRequest, ResultCallback
from valuedetect.lm.hf import HFLM, length_batches


class Seq2SeqLM(HFLM):
    name: ClassVar[str] = "transformers-seq2seq"
    kind = "seq2seq"
    auto_class: ClassVar[str] = "AutoModelForSeq2SeqLM"

    def __init__(self, model: str = "", *, generate_batch_size: int = 8, **options: Any):
        super().__init__(model, **options)
        self.generate_batch_size = generate_batch_size

    def column_logprobs(self, requests: Sequence[LoglikelihoodRequest], columns: Sequence[int],
                        states: Any = None) -> Any:
        import torch

        self.load()
        embedded = [self.embed(self.segments(self.pieces(r, i))) for i, r in enumerate(requests)]
        start = self.model.config.decoder_start_token_id
        start = self.pad_id if start is None else start
        out: list[Any] = [None] * len(requests)
        for batch in length_batches([e.shape[0] for e in embedded], self.batch_size, self.max_batch_tokens):
            inputs, attention = self.padded([embedded[i] for i in batch])
            decoder = torch.full((len(batch), 1), start, dtype=torch.long, device=self.device)
            logits = self.model(inputs_embeds=inputs, attention_mask=attention, decoder_input_ids=decoder).logits[:, 0]
            for b, value in zip(batch, self.logits_to_logprobs(logits, columns), strict=True):
                out[b] = value
        tokens = sum(e.shape[0] for e in embedded)
        self.usage.add(processed_tokens=tokens, prompt_tokens=tokens)
        return torch.stack(out)

    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        from valuedetect.lm.hf_generate import generate_until

        return generate_until(self, requests, on_result, self.generate_batch_size)


__all__ = ["Seq2SeqLM"]
