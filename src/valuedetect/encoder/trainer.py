"""The training loop: accelerate for devices and processes, our own checkpoints for resuming.

``accelerate`` prepares the model, optimiser and data loader, so ``accelerate launch`` runs the
same loop on several GPUs or processes (batches are split across processes, so the effective
batch size does not change). Checkpoints are written by us rather than by
``Accelerator.save_state`` because the optional contrastive pre-training stage uses its own
optimiser and schedule, and one small file with everything (trainable weights, optimiser,
scheduler, RNG states, stage, epoch, step, best weights so far, history) is easy to write
atomically and to reason about.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from valuedetect.encoder.batching import BucketBatchSampler, EncodedArguments, collate
from valuedetect.encoder.losses import contrastive_loss
from valuedetect.encoder.model import EncoderClassifier, find_blocks
from valuedetect.encoder.settings import TrainSettings
from valuedetect.errors import ValueDetectError
from valuedetect.thresholds import best_global


@dataclass
class TrainState:
    stage: str = "pretrain"
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_f1: float = -1.0  # the best dev score so far: the official F1 (values), accuracy (nli)
    best_epoch: int = -1
    bad_epochs: int = 0
    epoch_loss: float = 0.0  # running sum of this epoch's losses, so a resumed epoch reports the same
    epoch_bce: float = 0.0  # the same for the classification (BCE) term alone, without a contrastive term
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    processes: int = 1
    stopped_early: bool = False


def param_groups(model: EncoderClassifier, s: TrainSettings, lr: float) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay: the top block gets ``lr``, each block below it
    ``layer_decay`` times the one above, the embeddings the smallest; heads get ``head_lr``."""
    try:
        holder, name = find_blocks(model.backbone)
        blocks = list(getattr(holder, name))
    except Exception:
        blocks = []
    depth: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth[id(p)] = len(blocks) - 1 - i
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group_lr = s.head_lr if pname.startswith("head.") else lr * s.layer_decay ** depth.get(id(p), len(blocks))
        no_decay = p.ndim < 2 or "LayerNorm" in pname or "layer_norm" in pname
        key = (group_lr, 0.0 if no_decay else s.weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr_, "weight_decay": wd} for (lr_, wd), ps in groups.items()]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> Any:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, round(warmup * total), max(total, 1))


def _rng_state() -> dict[str, Any]:
    """Random states as tensors and plain values, so checkpoints load with ``weights_only=True``
    (a checkpoint is a file a user may have been handed: it must not be able to run code)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(model: EncoderClassifier, s: TrainSettings, processes: int) -> str:
    """What a checkpoint must agree with to be resumed: settings, trained weights, processes (the run
    as a whole is fingerprinted by ``valuedetect.fingerprint``: config, model file, data)."""
    import hashlib
    import json

    settings = {k: v for k, v in s.__dict__.items() if k != "checkpoint_every"}
    shapes = {k: list(v.shape) for k, v in model.trainable_state_dict().items()}
    blob = json.dumps({"settings": settings, "shapes": shapes, "processes": processes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_loader(data: EncodedArguments, sampler: BucketBatchSampler, pad_id: int) -> DataLoader:
    """A loader with its own generator: a plain DataLoader draws its base seed from the global
    torch RNG each time it is iterated, which would shift dropout masks after a resume."""
    return DataLoader(data, batch_sampler=sampler, collate_fn=lambda b: collate(b, pad_id),
                      generator=torch.Generator().manual_seed(0))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """Tensors and plain values only: a checkpoint that holds anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError, RuntimeError, EOFError for damaged files
        raise ValueDetectError(f"{path}: not a checkpoint this version can read safely ({error}); "
                               "train into a new --output") from None


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_checkpoint(path: Path | None, accelerator: Any, model: EncoderClassifier, state: TrainState,
                     best_weights: dict[str, torch.Tensor] | None, optimizer: Any, scheduler: Any,
                     fingerprint: str = "") -> None:
    """Everything needed to continue exactly here, in one atomically replaced file, so a kill
    at any moment leaves either the previous checkpoint or this one, never a mix. Other
    processes' random states go to files of their own, stamped with the step."""
    if path is None:
        return
    if accelerator.is_main_process:
        _atomic_torch_save({
            "weights": model.trainable_state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": dict(state.__dict__),
            "best_weights": best_weights,
            "fingerprint": fingerprint,
            "rng": _rng_state(),
        }, path)
    else:
        _atomic_torch_save({"step": state.global_step, "rng": _rng_state()},
                           path.with_name(f"rng-{accelerator.process_index}.pt"))
    accelerator.wait_for_everyone()


@torch.no_grad()
def predict_scores(model: EncoderClassifier, data: EncodedArguments, batch_size: int, pad_id: int) -> np.ndarray:
    """Sigmoid scores in the data's original order (batches sorted by length for speed)."""
    was_training = model.training
    model.eval()
    sampler = BucketBatchSampler(data.lengths(), batch_size, shuffle=False)
    out = np.zeros((len(data), 0), dtype=np.float32)
    device = next(model.parameters()).device
    for batch in make_loader(data, sampler, pad_id):
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("attention_mask", "input_ids", "hidden")}
        logits, _ = model(inputs["attention_mask"], input_ids=inputs.get("input_ids"), hidden=inputs.get("hidden"))
        if out.shape[1] == 0:
            out = np.zeros((len(data), logits.shape[1]), dtype=np.float32)
        out[batch["index"].numpy()] = torch.sigmoid(logits).float().cpu().numpy()
    model.train(was_training)
    return out


class Interrupted(Exception):
    """Raised by a step callback to stop training at a step boundary (tests, time budgets)."""


def train(
    model: EncoderClassifier,
    train_data: EncodedArguments,
    dev_data: EncodedArguments | None,
    dev_labels: np.ndarray | None,
    s: TrainSettings,
    pad_id: int,
    pos_weight: torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    dev_measure: Callable[[np.ndarray, np.ndarray], tuple[float, float]] = best_global,
    measure_name: str = "f1",
) -> TrainState:
    """Contrastive pre-training (optional), then classifier training with early stopping on
    the dev split's ``dev_measure`` (the task's: best-threshold official F1 by default, NLI's
    accuracy), recorded per epoch as ``dev_<measure_name>``. Leaves the best epoch's weights in
    ``model``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    say = log if (log and accelerator.is_main_process) else (lambda _m: None)
    set_seed(s.seed)
    state = TrainState(stage="pretrain" if s.contrastive_pretrain_epochs > 0 else "classify",
                       processes=accelerator.num_processes)
    ckpt = checkpoint_dir / "checkpoint.pt" if checkpoint_dir else None
    fingerprint = _fingerprint(model, s, accelerator.num_processes)
    best_weights: dict[str, torch.Tensor] | None = None
    saved: dict[str, Any] | None = None
    if resume:
        if ckpt is None or not ckpt.exists():
            say(f"no checkpoint at {ckpt}; starting from the beginning")
        else:
            saved = _load_checkpoint(ckpt)
            if saved.get("fingerprint") != fingerprint:
                raise ValueDetectError(
                    f"{ckpt} was written by a run with other settings, model or process count; "
                    "resume with the same config, or train into a new --output")
            if not accelerator.is_main_process:
                rng_file = ckpt.with_name(f"rng-{accelerator.process_index}.pt")
                mine = _load_checkpoint(rng_file) if rng_file.exists() else None
                step_matches = mine is not None and mine["step"] == saved["state"]["global_step"]
                saved["rng"] = mine["rng"] if step_matches else None
            model.load_state_dict(saved["weights"], strict=False)
            state = TrainState(**saved["state"])
            best_weights = saved.get("best_weights")
            say(f"resuming from {ckpt}: stage {state.stage}, epoch {state.epoch + 1}, "
                f"step {state.step_in_epoch}")
    if state.done:
        if best_weights is not None:
            model.load_state_dict(best_weights, strict=False)
        return state

    # The loader is ours, not accelerate's: accelerate's wrapper re-seeds the sampler with its
    # own iteration count, which breaks resuming inside an epoch. Sharding is done here instead.
    sampler = BucketBatchSampler(train_data.lengths(), s.batch_size, shuffle=True, seed=s.seed,
                                 shard=accelerator.process_index, num_shards=accelerator.num_processes)
    loader = make_loader(train_data, sampler, pad_id)
    if pos_weight is not None:
        pos_weight = pos_weight.to(accelerator.device)

    stages = [("pretrain", s.contrastive_pretrain_epochs, s.contrastive_pretrain_lr), ("classify", s.epochs, s.lr)]
    for stage, epochs, lr in stages:
        if epochs <= 0 or (stage == "pretrain" and state.stage == "classify"):
            continue
        optimizer = torch.optim.AdamW(param_groups(model, s, lr))
        scheduler = cosine_with_warmup(optimizer, epochs * len(sampler), s.warmup)
        # The scheduler stays ours: accelerate's wrapper steps it once per process unless batches
        # are split by its own loader, which we do not use.
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        if saved is not None and saved["state"]["stage"] == stage:
            # A checkpoint taken between stages has no optimiser yet: start this stage's afresh.
            if saved["optimizer"] is not None:
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
            if saved["rng"] is not None:
                _set_rng_state(saved["rng"])
            saved = None
        else:
            state.stage, state.epoch, state.step_in_epoch = stage, 0, 0

        while state.epoch < epochs:
            sampler.set_epoch(state.epoch, skip=state.step_in_epoch)
            wrapped.train()
            for batch in loader:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                logits, pooled = wrapped(batch["attention_mask"], input_ids=batch.get("input_ids"),
                                         hidden=batch.get("hidden"))
                labels = batch["labels"]
                if stage == "pretrain":
                    # The zero term keeps the heads in the graph: distributed training expects a
                    # gradient for every trainable parameter in every step.
                    loss = contrastive_loss(pooled, labels, s.contrastive_temperature) + 0.0 * logits.sum()
                else:
                    loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
                    state.epoch_bce += float(loss.detach())
                    if s.contrastive_weight > 0:
                        loss = loss + s.contrastive_weight * contrastive_loss(pooled, labels, s.contrastive_temperature)
                accelerator.backward(loss)
                if s.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(wrapped.parameters(), s.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step_in_epoch += 1
                state.global_step += 1
                state.epoch_loss += float(loss.detach())
                if progress and accelerator.is_main_process:
                    progress(f"{stage} epoch {state.epoch + 1}/{epochs}", state.step_in_epoch, len(sampler))
                if s.checkpoint_every and state.step_in_epoch % s.checkpoint_every == 0 \
                        and state.step_in_epoch < len(sampler):
                    _save_checkpoint(ckpt, accelerator, accelerator.unwrap_model(wrapped), state, best_weights,
                                     optimizer, scheduler, fingerprint)
                if on_step:
                    on_step(state)
            record: dict[str, Any] = {"stage": stage, "epoch": state.epoch + 1,
                                      "loss": state.epoch_loss / max(state.step_in_epoch, 1)}
            if stage == "classify":  # what the constant-answer loss is compared with
                record["bce_loss"] = state.epoch_bce / max(state.step_in_epoch, 1)
            state.epoch += 1
            state.step_in_epoch = 0
            state.epoch_loss = state.epoch_bce = 0.0
            stop = False
            if stage == "classify" and dev_data is not None and dev_labels is not None:
                unwrapped = accelerator.unwrap_model(wrapped)
                scores = predict_scores(unwrapped, dev_data, s.batch_size * 4, pad_id)
                threshold, f1 = dev_measure(scores, dev_labels)
                record.update({f"dev_{measure_name}": f1, "threshold": threshold})
                if f1 > state.best_f1 + 1e-9:
                    state.best_f1, state.best_epoch, state.bad_epochs = f1, record["epoch"], 0
                    best_weights = {k: v.detach().clone() for k, v in unwrapped.trainable_state_dict().items()}
                else:
                    state.bad_epochs += 1
                    stop = state.bad_epochs >= s.patience > 0
            state.history.append(record)
            say(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if stop:
                state.stopped_early = True
                measure = "F1" if measure_name == "f1" else measure_name
                say(f"early stop: no better dev {measure} for {s.patience} epochs")
                break
            _save_checkpoint(ckpt, accelerator, accelerator.unwrap_model(wrapped), state, best_weights,
                             optimizer, scheduler, fingerprint)
        if stage == "pretrain":
            state.stage, state.epoch, state.step_in_epoch = "classify", 0, 0
            # Between stages: the next stage starts a fresh optimiser, so none is saved.
            _save_checkpoint(ckpt, accelerator, accelerator.unwrap_model(wrapped), state, best_weights, None, None,
                             fingerprint)
        model = accelerator.unwrap_model(wrapped)
        accelerator.free_memory()
    state.done = True
    if best_weights is not None:
        model.load_state_dict(best_weights, strict=False)
    _save_checkpoint(ckpt, accelerator, model, state, best_weights, None, None, fingerprint)
    if not math.isfinite(state.best_f1):
        state.best_f1 = -1.0
    return state
