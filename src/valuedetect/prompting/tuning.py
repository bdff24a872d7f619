"""Prompt tuning with the language model frozen: trainable soft prompt tokens (``peft`` prompt
tuning) prepended to the hard template, trained with cross-entropy on the verbalizer words.

The scorer (``prompting.scoring.LabelWordScorer``) does the forward pass, so training reads the
same answer position and the same label-word token ids as zero-shot scoring. The loss is the
two-class cross-entropy of ``yes_probability``: each class's logit is the log-sum-exp of its
words' log-probabilities (log-softmax over the whole vocabulary). One soft prompt is shared by
all 20 categories; the template's value description says which value is asked.

peft task types: causal -> CAUSAL_LM, seq2seq -> SEQ_2_SEQ_LM (one prompt, encoder side only:
``num_transformer_submodules=1``), masked -> FEATURE_EXTRACTION (peft prepends the prompt to
the input embeddings and returns the masked LM's logits unchanged otherwise).

Negative (argument, category) pairs are subsampled per epoch (``negative_ratio`` negatives per
positive, seeded by (seed, epoch)); every positive pair is kept. Batches are drawn by length with
the encoder trainer's ``BucketBatchSampler``. The synonym (OA) verbalizer trains the same way,
its positive class being the asked category's own synonyms (``positive_columns``). Training
checkpoints every few steps and resumes where it stopped (``checkpoint_dir``, ``resume``). Not
done: several processes (accelerate is used for the device and the backward pass only), one
prompt per category.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.budget import budget_stop
from valuedetect.errors import ConfigError, InputError

PROMPT_INITS = ("text", "random")


def peft_config(lm_type: str, tokens: int) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    task = {"causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM,
            "masked": TaskType.FEATURE_EXTRACTION}.get(lm_type)
    if task is None:
        raise ConfigError(f"prompt tuning does not support language models of type {lm_type!r}")
    return PromptTuningConfig(task_type=task, num_virtual_tokens=tokens, prompt_tuning_init=PromptTuningInit.RANDOM,
                              num_transformer_submodules=1)


def init_text(template_text: str) -> str:
    """The template's words without its placeholders: what a "text" initialisation spells."""
    return " ".join(re.sub(r"\{[^}]*\}", " ", template_text).split())


def attach_soft_prompt(scorer: Any, tokens: int, init: str = "random", text: str = "", seed: int = 0,
                       state: dict[str, Any] | None = None) -> Any:
    """Wrap the scorer's (loaded) model in a peft prompt-tuning model with ``tokens`` virtual
    tokens; the LM's own weights are frozen. ``init="text"`` copies the word embeddings of
    ``text``'s first tokens (cycled when it is shorter); ``state`` restores a saved prompt."""
    import torch
    from peft import get_peft_model, set_peft_model_state_dict

    scorer.load()
    if init not in PROMPT_INITS:
        raise ConfigError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, not {init!r}")
    torch.manual_seed(seed)
    model = get_peft_model(scorer.model, peft_config(scorer.lm_type, tokens))
    embedding = model.prompt_encoder["default"].embedding
    if state is not None:
        set_peft_model_state_dict(model, state)
    elif init == "text":
        ids = scorer.tokenizer(text, add_special_tokens=False)["input_ids"] or [scorer._pad_id]
        ids = [ids[i % len(ids)] for i in range(tokens)]
        with torch.no_grad():
            words = model.word_embeddings(torch.tensor(ids, device=embedding.weight.device))
            embedding.weight.copy_(words.to(embedding.weight.dtype))
    scorer.model = model
    scorer.prefix_tokens = 0 if scorer.lm_type == "seq2seq" else tokens
    model.to(scorer.device).eval()
    return model


def soft_prompt_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total): the soft prompt, and the soft prompt plus the frozen LM."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def sample_pairs(labels: np.ndarray, negative_ratio: float, seed: int, epoch: int) -> np.ndarray:
    """Row-major indices into ``labels`` [n, 20] of one epoch's training pairs: every positive, and
    ``round(negative_ratio * positives)`` negatives (at least one, at most all) drawn without
    replacement, seeded by (seed, epoch); sorted."""
    flat = np.asarray(labels).reshape(-1) > 0.5
    positives = np.flatnonzero(flat)
    negatives = np.flatnonzero(~flat)
    keep = min(len(negatives), max(1, round(negative_ratio * len(positives))))
    chosen = np.random.default_rng([seed, epoch]).choice(negatives, size=keep, replace=False)
    return np.sort(np.concatenate([positives, chosen]))


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


def positive_columns(n_positive: int | np.ndarray, width: int, n_columns: int) -> np.ndarray:
    """[width, n_columns] booleans: which verbalizer columns count as the positive class when
    category k is asked. Yes/No: the first ``n_positive`` columns for every category; the synonym
    verbalizer passes its own matrix (a category's own synonyms positive, all others negative),
    so its loss is the cross-entropy of ``synonym_probability``."""
    if isinstance(n_positive, np.ndarray):
        mask = n_positive.astype(bool)
        if mask.shape != (width, n_columns):
            raise ValueError(f"positive column mask must be {width} x {n_columns}, not {mask.shape}")
        return mask
    mask = np.zeros((width, n_columns), dtype=bool)
    mask[:, :n_positive] = True
    return mask


CHECKPOINT_FILE = "soft_prompt_checkpoint.pt"


def _fingerprint(s: TuneSettings, labels: np.ndarray, token_ids: Sequence[int]) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued: the settings and the data's shape."""
    return {"settings": asdict(s), "labels": list(labels.shape), "positives": int((labels > 0.5).sum()),
            "token_ids": [int(t) for t in token_ids]}


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


def train_soft_prompt(scorer: Any, render: Callable[[int, int], str], labels: np.ndarray,
                      n_positive: int | np.ndarray, token_ids: Sequence[int], s: TuneSettings,
                      progress: Callable[[str, int, int], None] | None = None,
                      log: Callable[[str], None] | None = None,
                      checkpoint_dir: Path | None = None, resume: bool = False,
                      checkpoint_every: int = 25) -> TuneResult:
    """Train the soft prompt of ``scorer.model`` (see ``attach_soft_prompt``). ``render(i, c)`` is
    the prompt for argument i and category c; ``labels`` [n, 20]; ``token_ids`` the verbalizer's
    first tokens, the first ``n_positive`` of them positive (or a ``positive_columns`` mask).

    With ``checkpoint_dir``, the prompt, the optimizer and the position in the data are saved every
    ``checkpoint_every`` steps and at each epoch's end; ``resume`` continues from there, so an
    interrupted run ends with the prompt an uninterrupted one would have (the LM runs in eval mode,
    so no dropout makes the steps differ)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from valuedetect.encoder.batching import BucketBatchSampler

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(s.seed)
    model = scorer.model
    scorer.device = str(accelerator.device)
    model.to(accelerator.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=s.lr, weight_decay=0.0)
    width = labels.shape[1]
    positive = torch.tensor(positive_columns(n_positive, width, len(token_ids)), device=accelerator.device)
    encoded: dict[int, list[int]] = {}
    result = TuneResult()
    started = time.monotonic()
    fingerprint = _fingerprint(s, labels, token_ids)
    first_epoch, skip, total_before = 0, 0, 0.0
    saved = _load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None and resume else None
    if saved is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, saved["prompt"])
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
                "fingerprint": fingerprint, "prompt": soft_prompt_state(model), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "batch": batch, "total": total, "steps": result.steps,
                "seconds": time.monotonic() - started, "history": result.history})

    for epoch in range(first_epoch, s.epochs):
        pairs = sample_pairs(labels, s.negative_ratio, s.seed, epoch)
        for pair in pairs:
            if int(pair) not in encoded:
                encoded[int(pair)] = scorer.encode(render(int(pair) // width, int(pair) % width))
        sampler = BucketBatchSampler([len(encoded[int(p)]) for p in pairs], s.batch_size, shuffle=True, seed=s.seed)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        start = skip if epoch == first_epoch else 0
        total, done = (total_before if start else 0.0), start
        for done, batch in enumerate(batches[start:], start + 1):
            chosen = [int(pairs[i]) for i in batch]
            logprobs = scorer.answer_logprobs([encoded[p] for p in chosen], token_ids)
            rows = positive[torch.tensor([p % width for p in chosen], device=positive.device)]
            floor = torch.finfo(logprobs.dtype).min
            classes = torch.stack([torch.logsumexp(logprobs.masked_fill(~rows, floor), dim=1),
                                   torch.logsumexp(logprobs.masked_fill(rows, floor), dim=1)], dim=1)
            target = torch.tensor([0 if labels.reshape(-1)[p] > 0.5 else 1 for p in chosen], device=classes.device)
            loss = F.cross_entropy(classes, target)
            accelerator.backward(loss)
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
        record = {"epoch": epoch + 1, "loss": total / max(done, 1), "steps": done,
                  "positives": int((labels.reshape(-1)[pairs] > 0.5).sum()),
                  "negatives": int((labels.reshape(-1)[pairs] <= 0.5).sum())}
        result.history.append(record)
        if log:
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if result.stopped_by:
            if log:
                log(f"prompt tuning stopped by {result.stopped_by} after {result.steps} steps")
            break
        result.epochs_completed = epoch + 1
        checkpoint(epoch + 1, 0, 0.0)
    result.seconds = time.monotonic() - started
    model.eval()
    return result


__all__ = ["CHECKPOINT_FILE", "PROMPT_INITS", "TuneResult", "TuneSettings", "attach_soft_prompt", "init_text",
           "parameter_counts", "peft_config", "positive_columns", "sample_pairs", "soft_prompt_state",
           "train_soft_prompt"]
