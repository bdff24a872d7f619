"""Prompt tuning with the language model frozen: train a soft-prompt bank (``lm.soft_prompt``)
through a transformers backend's ``column_logprobs``, so training reads the same answer position,
the same label-word tokens (``lm.tokens``) and the same verbalizer classes as scoring.

The loss is the two-class cross-entropy of the verbalizer (``templates.Verbalizer``): each
class's logit is the log-sum-exp of its words' log-probabilities. Each epoch keeps every positive
(argument, category) pair and ``negative_ratio`` negatives per positive, drawn without
replacement, seeded by (seed, epoch). Batches hold whole arguments (shuffled, seeded by (seed,
epoch)) until they reach ``batch_size`` pairs, so an argument's questions run together: packed
into one sequence, and with the soft prompt after the argument on key/values computed once per
argument and kept (``lm.states.PrefixStates``) for every later epoch. Each epoch records its mean
loss and the constant-answer loss of the same pairs (the best a model answering the positive
rate everywhere can do), so "the prompt learned something" is a number.

Checkpoints (prompt, optimizer, position in the data) are written every ``checkpoint_every``
steps and at each epoch's end, atomically; ``resume`` continues from the last, so an interrupted
run ends with the prompt an uninterrupted one has. A checkpoint from other settings is refused.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.budget import budget_stop
from valuedetect.errors import InputError

CHECKPOINT_FILE = "soft_prompt_checkpoint.pt"


def init_text(template_text: str) -> str:
    """The template's words without its placeholders: what a "text" initialisation spells."""
    return " ".join(re.sub(r"\{[^}]*\}", " ", template_text).split())


def sample_pairs(labels: np.ndarray, negative_ratio: float, seed: int, epoch: int) -> np.ndarray:
    """Row-major indices into ``labels`` [n, k] of one epoch's training pairs: every positive, and
    ``round(negative_ratio * positives)`` negatives (at least one, at most all) drawn without
    replacement, seeded by (seed, epoch); sorted."""
    flat = np.asarray(labels).reshape(-1) > 0.5
    positives = np.flatnonzero(flat)
    negatives = np.flatnonzero(~flat)
    keep = min(len(negatives), max(1, round(negative_ratio * len(positives))))
    chosen = np.random.default_rng([seed, epoch]).choice(negatives, size=keep, replace=False)
    return np.sort(np.concatenate([positives, chosen]))


def argument_batches(pairs: np.ndarray, width: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Pairs grouped by argument, arguments shuffled (seeded by (seed, epoch)) and gathered into
    batches of at least ``batch_size`` pairs (the last may hold fewer)."""
    by_argument: dict[int, list[int]] = {}
    for pair in pairs.tolist():
        by_argument.setdefault(pair // width, []).append(pair)
    order = list(by_argument)
    np.random.default_rng([seed, epoch, 1]).shuffle(order)
    batches: list[list[int]] = []
    current: list[int] = []
    for argument in order:
        current += by_argument[argument]
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def constant_loss(targets: np.ndarray) -> float:
    """Cross-entropy of answering the positive rate of ``targets`` (0/1) for every pair."""
    rate = float(np.mean(targets))
    if rate in (0.0, 1.0):
        return 0.0
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


@dataclass
class TuneSettings:
    epochs: int = 3
    lr: float = 0.03
    batch_size: int = 16
    negative_ratio: float = 1.0
    max_steps: int = 0  # 0: no limit
    max_seconds: float = 0.0  # 0: no limit
    seed: int = 13


@dataclass
class TuneResult:
    steps: int = 0
    seconds: float = 0.0
    epochs_completed: int = 0
    stopped_by: str | None = None  # max_steps | max_seconds | None (ran all epochs)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TuneTask:
    """What to train on: ``request(i, k)`` is the loglikelihood request for argument i and class
    k (a category), ``labels`` [n, k], and the verbalizer's words with, per class, the indices of
    its positive and negative words."""

    request: Callable[[int, int], Any]
    labels: np.ndarray
    words: Sequence[str]
    classes: Sequence[tuple[Sequence[int], Sequence[int]]]


def _fingerprint(s: TuneSettings, task: TuneTask, extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued: the settings and the data's shape."""
    return {"settings": asdict(s), "labels": list(task.labels.shape), "positives": int((task.labels > 0.5).sum()),
            "words": list(task.words), **extra}


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Written to a temporary file and renamed, so a kill mid-write leaves the previous one."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, folder / CHECKPOINT_FILE)


def _load_checkpoint(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    import torch

    path = folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, do not guess
        raise InputError(f"unreadable prompt-tuning checkpoint ({type(error).__name__}: {error})", path) from None
    if state.get("fingerprint") != fingerprint:
        raise InputError("this prompt-tuning checkpoint was written by a run with other settings or data; "
                         "delete it to start afresh", path)
    return state


def train_soft_prompt(lm: Any, task: TuneTask, s: TuneSettings, *, states: Any = None,
                      progress: Callable[[str, int, int], None] | None = None,
                      log: Callable[[str], None] | None = None, checkpoint_dir: Path | None = None,
                      resume: bool = False, checkpoint_every: int = 25) -> TuneResult:
    """Train ``lm.soft_prompt`` (attached beforehand) on ``task``; see the module docstring."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(s.seed)
    prompt = lm.soft_prompt
    prompt.weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([prompt.weight], lr=s.lr, weight_decay=0.0)
    columns, per_word = lm.rule.columns(list(task.words))
    width = task.labels.shape[1]
    flat_labels = task.labels.reshape(-1) > 0.5
    result = TuneResult()
    started = time.monotonic()
    extra = {"soft_prompt": list(prompt.weight.shape), "placement": prompt.placement}
    fingerprint = _fingerprint(s, task, extra)
    first_epoch, skip, total_before = 0, 0, 0.0
    saved = _load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None and resume else None
    if saved is not None:
        prompt.load(saved["prompt"])
        optimizer.load_state_dict(saved["optimizer"])
        first_epoch, skip, total_before = saved["epoch"], saved["batch"], saved["total"]
        result.steps, result.history = saved["steps"], list(saved["history"])
        result.epochs_completed = first_epoch
        started -= saved["seconds"]
        if log:
            log(f"prompt tuning resumed at epoch {first_epoch + 1}, batch {skip} ({result.steps} steps done)")

    def checkpoint(epoch: int, batch: int, total: float) -> None:
        if checkpoint_dir is not None:
            _save_checkpoint(checkpoint_dir, {
                "fingerprint": fingerprint, "prompt": prompt.state(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "batch": batch, "total": total, "steps": result.steps,
                "seconds": time.monotonic() - started, "history": result.history})

    # Per class: a [words] mask of its positive words, and of its negative ones.
    positive = torch.zeros((width, len(task.words)), dtype=torch.bool)
    negative = torch.zeros((width, len(task.words)), dtype=torch.bool)
    for k, (pos, neg) in enumerate(task.classes):
        positive[k, list(pos)] = True
        negative[k, list(neg)] = True
    for epoch in range(first_epoch, s.epochs):
        pairs = sample_pairs(task.labels, s.negative_ratio, s.seed, epoch)
        batches = argument_batches(pairs, width, s.batch_size, s.seed, epoch)
        start = skip if epoch == first_epoch else 0
        total, done = (total_before if start else 0.0), start
        for done, batch in enumerate(batches[start:], start + 1):
            requests = [task.request(p // width, p % width) for p in batch]
            logprobs = lm.column_logprobs(requests, columns, states=states)
            words = torch.stack([torch.logsumexp(logprobs[:, ids], dim=1) for ids in per_word], dim=1)
            rows = torch.tensor([p % width for p in batch])
            floor = torch.finfo(words.dtype).min
            classes = torch.stack([torch.logsumexp(words.masked_fill(~positive[rows], floor), dim=1),
                                   torch.logsumexp(words.masked_fill(~negative[rows], floor), dim=1)], dim=1)
            target = torch.tensor([0 if flat_labels[p] else 1 for p in batch])
            loss = F.cross_entropy(classes, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach())
            result.steps += 1
            if progress:
                progress(f"prompt tuning epoch {epoch + 1}/{s.epochs}", done, len(batches))
            result.stopped_by = budget_stop(result.steps, started, s.max_steps, s.max_seconds)
            if result.stopped_by:
                break
            if checkpoint_every and result.steps % checkpoint_every == 0 and done < len(batches):
                checkpoint(epoch, done, total)
        seen = np.concatenate([np.asarray(b) for b in batches[:done]]) if done else np.zeros(0, dtype=int)
        record = {"epoch": epoch + 1, "loss": total / max(done, 1), "steps": done, "batches": len(batches),
                  "constant_loss": constant_loss(flat_labels[seen]) if len(seen) else 0.0,
                  "positives": int(flat_labels[pairs].sum()), "negatives": int((~flat_labels[pairs]).sum())}
        if states is not None:
            record["argument_states"] = states.stats()
        result.history.append(record)
        if log:
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                         if not isinstance(v, dict)))
        if result.stopped_by:
            if log:
                log(f"prompt tuning stopped by {result.stopped_by} after {result.steps} steps")
            break
        result.epochs_completed = epoch + 1
        checkpoint(epoch + 1, 0, 0.0)
    result.seconds = time.monotonic() - started
    prompt.weight.requires_grad_(False)
    return result


__all__ = ["CHECKPOINT_FILE", "TuneResult", "TuneSettings", "TuneTask", "argument_batches", "constant_loss",
           "init_text", "sample_pairs", "train_soft_prompt"]
