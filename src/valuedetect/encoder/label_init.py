"""Heads that start from the value descriptions (issue 15: descriptions as label embeddings).

A randomly initialised head starts every category at the same place, so a rare category
(Humility: 0.4% of the training labels are its) has to find its direction from a few dozen
positives. Here each linear head starts as the similarity of the argument to its category's
description, both embedded by the pretrained encoder, standardised over training arguments and
offset by the category's log prior odds: at step 0 the head already ranks arguments by how close
they read to the description, and answers with the base rate on average. Training then moves it
like any other head.

Why this form: the descriptions' mean is removed first (every description is "a human value",
and that shared direction says nothing about which one), and the scale comes from the training
arguments' own projections, so the initial logits have unit spread whatever the encoder's
embedding norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from valuedetect.encoder.batching import BucketBatchSampler, EncodedArguments, collate
from valuedetect.errors import ConfigError

SAMPLE = 2000  # training arguments whose projections set each head's offset and scale


@torch.no_grad()
def pooled_embeddings(model: nn.Module, data: EncodedArguments, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """The model's pooled embedding of each item of ``data`` (in its order), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out: list[torch.Tensor | None] = [None] * len(data)
        for indices in BucketBatchSampler(data.lengths(), batch_size, shuffle=False):
            batch = collate([data[i] for i in indices], pad_id)
            pooled = model.encode(batch["attention_mask"], input_ids=batch.get("input_ids"),
                                  hidden=batch.get("hidden"))
            for row, i in enumerate(indices):
                out[i] = pooled[row].float()
        return torch.stack(out)  # type: ignore[arg-type]
    finally:
        model.train(was_training)


def linear_layers(head: nn.Module, width: int) -> list[tuple[nn.Linear, int]]:
    """(layer, row) for each output column: one ``Linear`` for a single head, one per binary
    head for linear multiple heads. Heads with a hidden layer have no row that reads the
    embedding directly, so they are refused."""
    if hasattr(head, "linear"):
        return [(head.linear, j) for j in range(width)]
    heads = getattr(head, "heads", None)
    if heads is not None:
        if any(sum(isinstance(m, nn.Linear) for m in h.net) > 1 for h in heads):
            raise ConfigError("head_init = 'descriptions' needs linear heads (head_hidden = 0)")
        return [(h.net[-1], 0) for h in heads]
    raise ConfigError(f"head_init = 'descriptions' does not know the head {type(head).__name__}")


@torch.no_grad()
def init_from_descriptions(model: nn.Module, label_ids: Sequence[Sequence[int]], arguments: EncodedArguments,
                           targets: np.ndarray, pad_id: int, seed: int) -> dict[str, float]:
    """Set each output column's weights and bias as the module docstring says; returns what the
    record keeps about it (the spread of the description similarities at step 0)."""
    width = len(label_ids)
    if targets.shape[1] != width:
        raise ConfigError(f"head_init = 'descriptions': {width} label texts for {targets.shape[1]} outputs")
    labels = pooled_embeddings(model, EncodedArguments(label_ids), pad_id)
    directions = labels - labels.mean(0, keepdim=True)
    directions = directions / directions.norm(dim=1, keepdim=True).clamp(min=1e-6)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(arguments), size=min(SAMPLE, len(arguments)), replace=False))
    sample = EncodedArguments([arguments.input_ids[i] for i in rows], None,
                              None if arguments.hidden is None else [arguments.hidden[i] for i in rows])
    projections = pooled_embeddings(model, sample, pad_id) @ directions.T  # [sample, width]
    centre, spread = projections.mean(0), projections.std(0).clamp(min=1e-6)
    positives = np.asarray(targets, dtype=np.float64).mean(0).clip(1e-4, 1 - 1e-4)
    prior = torch.as_tensor(np.log(positives / (1 - positives)), dtype=torch.float32)
    for j, (layer, row) in enumerate(linear_layers(model.head, width)):
        layer.weight[row] = (directions[j] / spread[j]).to(layer.weight.dtype)
        layer.bias[row] = (prior[j] - centre[j] / spread[j]).to(layer.bias.dtype)
    similarity = (labels / labels.norm(dim=1, keepdim=True)) @ (labels / labels.norm(dim=1, keepdim=True)).T
    off_diagonal = similarity[~torch.eye(width, dtype=torch.bool)]
    return {"label_texts": width, "arguments_sampled": len(rows),
            "description_cosine_mean": round(float(off_diagonal.mean()), 4)}
