"""Optimisation settings of encoder fine-tuning: one definition, read by the training loop and
inherited by the detector's config (so defaults cannot drift apart). Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    """The defaults are the shipped detector's (configs/default.toml says why)."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-4  # the top trained block; each block below gets layer_decay times the one above
    head_lr: float = 3e-3
    layer_decay: float = 0.9
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps with a linear warm-up, then cosine decay
    max_grad_norm: float = 1.0
    patience: int = 2  # epochs without a better dev score (the task's) before stopping (0: never stop)
    contrastive_weight: float = 0.0  # lambda of the contrastive term added to BCE
    contrastive_temperature: float = 0.05
    contrastive_pretrain_epochs: int = 0  # > 0: a contrastive-only stage before the heads train
    contrastive_pretrain_lr: float = 5e-5
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: per epoch only)
    seed: int = 13
