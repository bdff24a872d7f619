"""Losses: BCE for the heads and the label-overlap-weighted contrastive loss of Sun (2024).

Contrastive loss (the paper's Eq. 2), for a batch of pooled embeddings x and label vectors y:

    w_ij   = y_i . y_j / (sum_k y_i . y_k + eps)
    loss_i = -log( sum_j w_ij exp(sim(x_i, x_j) / tau) / sum_j exp(sim(x_i, x_j) / tau) )

with cosine similarity. Our decisions where the equation is silent:
- self-pairs (j = i, k = i) are left out of every sum, as in supervised contrastive learning:
  otherwise each anchor's own label overlap dominates its weights and sim(x_i, x_i) = 1
  dominates the denominator, and the loss rewards nothing;
- an anchor with no label, or with no other argument in the batch sharing a label, has all
  weights 0 and an undefined loss (log 0): it is left out of the mean, yet still serves as a
  negative for the other anchors (it appears in their denominators);
- a batch with no valid anchor contributes 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05,
                     eps: float = 1e-8) -> torch.Tensor:
    """Mean of loss_i over the anchors that have at least one label-sharing partner."""
    z = F.normalize(embeddings, dim=-1)
    logits = z @ z.T / temperature
    n = logits.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
    y = labels.to(z.dtype)
    overlap = (y @ y.T).masked_fill(self_mask, 0.0)
    weights = overlap / (overlap.sum(dim=1, keepdim=True) + eps)
    log_prob = logits.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    # log sum_j w_ij p_ij, computed in log space; terms with w_ij = 0 drop out.
    valid = overlap.sum(dim=1) > 0
    log_w = torch.where(weights > 0, weights.log(), torch.full_like(weights, float("-inf")))
    # Rows without partners get harmless finite weights: they are dropped from the mean below,
    # and an all -inf row would send NaN gradients back through logsumexp.
    log_w = log_w.masked_fill(~valid[:, None] & ~self_mask, 0.0)
    per_anchor = -(torch.logsumexp(log_w + log_prob.masked_fill(self_mask, 0.0), dim=1))
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return per_anchor[valid].mean()


def positive_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """BCE pos_weight per category from training label frequencies (rare categories count more)."""
    if mode == "none":
        return None
    positives = labels.sum(0).clamp(min=1.0)
    negatives = (labels.shape[0] - labels.sum(0)).clamp(min=1.0)
    ratio = negatives / positives
    if mode == "balanced":
        return ratio
    if mode == "sqrt":
        return ratio.sqrt()
    raise ValueError(f"pos_weight must be none, sqrt or balanced, not {mode!r}")
