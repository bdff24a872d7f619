"""A pretrained encoder with value-category heads, splittable at a layer so that the frozen
bottom can be computed once and its outputs reused across epochs.

The split works for any transformers encoder that keeps its embeddings in ``.embeddings`` and
its blocks in one ``nn.ModuleList`` (BERT, RoBERTa, MPNet, ELECTRA, DeBERTa, XLM-R, DistilBERT):
the top part runs the model's own ``forward`` with the embeddings swapped for a pass-through
and the block list cut to the top blocks, so masks and relative position biases are built by
the model itself rather than re-implemented here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from valuedetect.errors import ValueDetectError


class _PassThrough(nn.Module):
    """Stands in for the embeddings: hands the cached hidden states straight to the blocks."""

    def forward(self, *args: object, inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        if inputs_embeds is None:  # some models pass it positionally (DistilBERT)
            inputs_embeds = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() == 3), None)
        if inputs_embeds is None:
            raise ValueDetectError("the model did not hand cached hidden states to its embeddings")
        return inputs_embeds


def find_blocks(backbone: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the transformer blocks and the attribute name of the list."""
    for path in ("encoder", "transformer"):
        holder = getattr(backbone, path, None)
        if holder is None:
            continue
        for name in ("layer", "layers"):
            if isinstance(getattr(holder, name, None), nn.ModuleList):
                return holder, name
    raise ValueDetectError(
        f"cannot find the transformer blocks of {type(backbone).__name__}; set trainable_layers = -1 "
        "(train everything) to use it without splitting"
    )


class SingleHead(nn.Module):
    """One linear map from the pooled embedding to all 20 logits."""

    def __init__(self, hidden: int, n_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, n_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))


class BinaryHead(nn.Module):
    """One category's own classifier: optional hidden layer, one logit."""

    def __init__(self, hidden: int, head_hidden: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if head_hidden > 0:
            layers += [nn.Linear(hidden, head_hidden), nn.GELU(), nn.Dropout(dropout)]
            hidden = head_hidden
        layers.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class MultipleHeads(nn.Module):
    """Twenty separate binary classifiers; column j of the output is head j's logit."""

    def __init__(self, hidden: int, n_labels: int, head_hidden: int, dropout: float):
        super().__init__()
        self.heads = nn.ModuleList(BinaryHead(hidden, head_hidden, dropout) for _ in range(n_labels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(pooled) for head in self.heads], dim=1)


class EncoderClassifier(nn.Module):
    """Backbone + pooling + heads. ``frozen_layers`` bottom blocks (and the embeddings) are
    frozen when > 0; ``forward`` accepts either token ids or cached hidden states."""

    def __init__(self, backbone: nn.Module, n_labels: int, heads: str = "multiple", pooling: str = "mean",
                 head_hidden: int = 0, dropout: float = 0.1, frozen_layers: int = 0):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        if heads == "single":
            self.head: nn.Module = SingleHead(hidden, n_labels, dropout)
        elif heads == "multiple":
            self.head = MultipleHeads(hidden, n_labels, head_hidden, dropout)
        else:
            raise ValueDetectError(f"heads must be 'single' or 'multiple', not {heads!r}")
        if pooling not in ("mean", "cls"):
            raise ValueDetectError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.frozen_layers = frozen_layers
        if frozen_layers > 0:
            holder, name = find_blocks(backbone)
            blocks = getattr(holder, name)
            if frozen_layers > len(blocks):
                raise ValueDetectError(f"cannot freeze {frozen_layers} of {len(blocks)} layers")
            for p in backbone.parameters():
                p.requires_grad_(False)
            for block in blocks[frozen_layers:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if frozen_layers > 0:
            self._check_split()
        # A pooler (BERT's) is computed by the backbone but never used here: keep it out of
        # training, or distributed training would stall on its missing gradients.
        for pname, p in backbone.named_parameters():
            if pname.startswith("pooler."):
                p.requires_grad_(False)

    # -- splitting ---------------------------------------------------------------------------
    @contextmanager
    def _cut(self, keep: slice, skip_embeddings: bool) -> Iterator[None]:
        holder, name = find_blocks(self.backbone)
        blocks = getattr(holder, name)
        embeddings = self.backbone.embeddings
        # Bypass nn.Module.__setattr__ bookkeeping only for the swap's duration.
        holder._modules[name] = nn.ModuleList(list(blocks)[keep])
        if skip_embeddings:
            self.backbone._modules["embeddings"] = _PassThrough()
        try:
            yield
        finally:
            holder._modules[name] = blocks
            self.backbone._modules["embeddings"] = embeddings

    @torch.no_grad()
    def _check_split(self) -> None:
        """Frozen bottom + cached top must equal the full forward; some architectures apply
        extra steps between embeddings and blocks (ELECTRA's projection, DeBERTa's conv) that
        the split would repeat or skip. Refuse those rather than train on a wrong model."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            ids = (torch.arange(12).reshape(2, 6) % 7 + 5).long()
            mask = torch.ones_like(ids)
            mask[1, 4:] = 0
            full = self.encode(mask, input_ids=ids)
            split = self.encode(mask, hidden=self.bottom(ids, mask))
            ok = full.shape == split.shape and torch.allclose(full, split, atol=1e-4, rtol=1e-3)
        except (RuntimeError, ValueError, TypeError, AttributeError, ValueDetectError):
            ok = False
        finally:
            self.backbone.train(was_training)
        if not ok:
            raise ValueDetectError(
                f"{type(self.backbone).__name__} cannot be split into a cached frozen bottom and a trained top; "
                "set trainable_layers = -1 to fine-tune it whole"
            )

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen blocks (no gradients: they never train)."""
        was_training = self.backbone.training
        self.backbone.eval()  # frozen layers are a fixed feature map: no dropout
        try:
            with self._cut(slice(0, self.frozen_layers), skip_embeddings=False):
                return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self.backbone.train(was_training)

    def encode(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
               hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled embedding from token ids, or from cached hidden states of the frozen bottom."""
        if hidden is not None:
            with self._cut(slice(self.frozen_layers, None), skip_embeddings=True):
                states = self.backbone(inputs_embeds=hidden, attention_mask=attention_mask).last_hidden_state
        else:
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [batch, n_labels], pooled embeddings [batch, hidden])."""
        pooled = self.encode(attention_mask, input_ids=input_ids, hidden=hidden)
        return self.head(pooled), pooled

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: what a shipped detector needs beside the base model."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names or k.startswith("head.")}
