"""Trainable soft prompts: a bank of ``prompts`` x ``tokens`` vectors in the model's input
embedding space, inserted into the input at a placement.

- ``before``: in front of everything, as the paper (and OpenPrompt's soft template, peft's
  prompt tuning) placed it. The argument's states then depend on the prompt, so nothing about
  an argument can be reused while the prompt trains.
- ``after``: between the shared context (the argument) and the request's own suffix (the value
  question). The frozen model's states for the argument no longer depend on the prompt: they are
  computed once per argument and reused by all its questions and, while training, every epoch.
- ``end``: after the request's own suffix, right before the answer is read. The argument's and
  the question's states are both independent of the prompt, so while training only the soft
  tokens carry gradients (a backward pass through 8 positions per question instead of ~30).

Row 0 is the shared prompt; a bank with one prompt per category holds 20 rows and a request
names its row (``LoglikelihoodRequest.soft_prompt``). peft is not used because it can only
prepend one prompt; this module is what peft's ``PromptEmbedding`` is, plus the placement.
"""

from __future__ import annotations

from typing import Any

import torch

from valuedetect.lm.api import PLACEMENTS, PROMPT_INITS

STATE_KEY = "prompt_embeddings"


class SoftPrompt(torch.nn.Module):
    """``weight`` [prompts, tokens, hidden]; the only trainable parameters of a tuned LM."""

    def __init__(self, prompts: int, tokens: int, hidden: int, placement: str = "after"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"soft_prompt_placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
        if prompts < 1 or tokens < 1:
            raise ValueError("a soft prompt needs at least one prompt of at least one token")
        self.placement = placement
        self.weight = torch.nn.Parameter(torch.zeros(prompts, tokens, hidden))

    @property
    def tokens(self) -> int:
        return int(self.weight.shape[1])

    @property
    def prompts(self) -> int:
        return int(self.weight.shape[0])

    def initialise(self, embeddings: Any, ids: list[int] | None, seed: int) -> None:
        """From the embeddings of ``ids`` (cycled to the prompt's length; every row alike), or
        random with the scale of the embedding matrix when ``ids`` is None."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            matrix = embeddings.weight
            if ids:
                picked = [ids[i % len(ids)] for i in range(self.tokens)]
                rows = embeddings(torch.tensor(picked, device=matrix.device)).detach().to(self.weight.dtype).cpu()
                self.weight.copy_(rows[None].expand_as(self.weight))
            else:
                scale = float(matrix.detach().float().std())
                self.weight.copy_(torch.randn(self.weight.shape, generator=generator) * scale)

    def state(self) -> dict[str, Any]:
        return {STATE_KEY: self.weight.detach().cpu().clone()}

    def load(self, state: dict[str, Any]) -> None:
        weight = state.get(STATE_KEY)
        if weight is None or tuple(weight.shape) != tuple(self.weight.shape):
            shape = None if weight is None else tuple(weight.shape)
            raise ValueError(f"a saved soft prompt of shape {shape} does not fit {tuple(self.weight.shape)}")
        with torch.no_grad():
            self.weight.copy_(weight.to(self.weight.dtype))


__all__ = ["PLACEMENTS", "PROMPT_INITS", "STATE_KEY", "SoftPrompt"]
