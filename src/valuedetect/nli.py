"""The paper's NLI side task (Sun et al. 2024, Table 5): does an argument's premise support its
conclusion? The label comes from the stance ("in favor of" -> support, "against" -> attack), so
the task needs no annotation beyond the arguments files.

Two methods, the paper's two families:

- ``encoder``: fine-tune an ``AutoModelForSequenceClassification`` (2 labels, every layer
  trainable) on the tokenizer's pair encoding of (premise, conclusion); AdamW, linear schedule.
- ``prompt``: a frozen language model read through the one LM layer (``lm``: any transformers
  backend) on a BCA-style question (``templates.NLI_TEMPLATE``), with a yes/no verbalizer;
  zero-shot, or with soft prompt tokens (placed in front, as the paper did) trained by
  ``prompt_tuning.train_soft_prompt`` (the task is one class whose positive label is support).

A run writes ``validation-predictions.tsv`` and ``results.json`` to its output folder and returns
what ``results.json`` holds (an ``experiments.records`` NLI record is built from it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.budget import budget_stop
from valuedetect.data import STANCES, Argument, atomic_write_json, atomic_write_text, ensure_writable, load_split
from valuedetect.errors import ConfigError, InputError, ValueDetectError
from valuedetect.models import quiet_transformers
from valuedetect.templates import NLI_TEMPLATE, check_nli_template, render_nli

METHODS = ("encoder", "prompt")
LABELS = ("attack", "support")  # index = class id; 1 is the positive class of the verbalizer
SUPPORT = 1
DEFAULT_TEMPLATE = NLI_TEMPLATE
PREDICTIONS_FILE = "validation-predictions.tsv"
RESULTS_FILE = "results.json"
BOOTSTRAP_RESAMPLES = 1000
# Method-dependent defaults, filled into the config so results.json states what was used.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {"model": "minilm", "epochs": 2, "batch_size": 32, "lr": 5e-5, "max_length": 128},
    "prompt": {"model": "smollm2", "epochs": 3, "batch_size": 16, "lr": 0.03, "max_length": 256},
}

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class NLIPair:
    id: str
    premise: str
    conclusion: str
    label: int  # 1 support, 0 attack


def nli_pairs(arguments: Sequence[Argument]) -> list[NLIPair]:
    """One pair per argument; the stance is the label, so an argument without one has no pair."""
    pairs = []
    for a in arguments:
        if a.stance not in STANCES or not a.conclusion.strip():
            raise InputError(f"argument {a.id!r} has no conclusion or stance, so it has no NLI label")
        pairs.append(NLIPair(a.id, a.premise.strip(), a.conclusion.strip(), int(a.stance == "in favor of")))
    return pairs


def seeded_subset(pairs: Sequence[NLIPair], limit: int | None, seed: int,
                  what: str) -> tuple[list[NLIPair], str | None]:
    """At most ``limit`` pairs, drawn as ``training.validation_subset`` draws arguments (so the same
    limit and seed pick the same validation arguments for both tasks), and a note saying which."""
    n = len(pairs)
    if limit is None or limit >= n:
        return list(pairs), None
    indices = sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())
    return [pairs[i] for i in indices], f"seeded sample of {limit} of {n} {what} arguments (seed {seed})"


# ----------------------------------------------------------------------------- config


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(f"nli config: {name!r} {problem}")


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _number(name: str, value: Any, positive: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise _fail(name, f"must be a {'positive' if positive else 'non-negative'} number, got {value!r}")
    return float(value)


@dataclass
class NLIConfig:
    """One NLI run. ``None`` fields take the method's default (see ``_DEFAULTS``) when the config is
    made, so a saved config is the one that ran."""

    method: str = "encoder"  # encoder | prompt
    model: str | None = None  # encoder alias/path, or causal alias/path/Hub name for prompt
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_length: int | None = None
    warmup: float = 0.1  # encoder: fraction of steps of linear warm-up before the linear decay
    seed: int = 13
    max_steps: int = 0  # 0: no limit
    max_seconds: float = 0.0  # 0: no limit
    template: str = DEFAULT_TEMPLATE  # prompt: {premise}, {conclusion}, optionally {mask} at the end
    verbalizer: str | dict[str, Any] = "yes_no"  # a name or {positive = [...], negative = [...]}
    soft_prompt_tokens: int = 0  # prompt: 0 = zero-shot
    prompt_init: str = "text"  # text (the template's words) | random
    validation_limit: int | None = None  # None: all validation arguments
    training_limit: int | None = None  # None: all training arguments
    subset_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise _fail("method", f"must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name, value in _DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not isinstance(self.model, str) or not self.model.strip():
            raise _fail("model", f"must be a model alias, folder or Hub name, got {self.model!r}")
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        self.lr = _number("lr", self.lr, positive=True)
        _int("max_length", self.max_length, 8)
        self.warmup = _number("warmup", self.warmup, positive=False)
        if self.warmup >= 1:
            raise _fail("warmup", f"must be below 1 (a fraction of the steps), got {self.warmup!r}")
        _int("seed", self.seed, 0)
        _int("max_steps", self.max_steps, 0)
        self.max_seconds = _number("max_seconds", self.max_seconds, positive=False)
        check_nli_template(self.template)
        _verbalizer_words(self.verbalizer)
        _int("soft_prompt_tokens", self.soft_prompt_tokens, 0)
        from valuedetect.lm.api import PROMPT_INITS

        if self.prompt_init not in PROMPT_INITS:
            raise _fail("prompt_init", f"must be one of {', '.join(PROMPT_INITS)}, not {self.prompt_init!r}")
        if self.method == "encoder" and self.soft_prompt_tokens:
            raise _fail("soft_prompt_tokens", "applies to method 'prompt' only")
        for name in ("validation_limit", "training_limit"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), 1)
        _int("subset_seed", self.subset_seed, 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def label_words(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(positive, negative) verbalizer words: support is the positive class."""
        return _verbalizer_words(self.verbalizer)


def _verbalizer_words(spec: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from valuedetect.templates import verbalizer_from_config

    verbalizer = verbalizer_from_config(spec, where="nli config: 'verbalizer'")
    if verbalizer.kind != "label_words":
        raise _fail("verbalizer", "must be label words (e.g. 'yes_no'): support is a yes/no question")
    return verbalizer.positive, verbalizer.negative


def nli_config_from_dict(table: Mapping[str, Any]) -> NLIConfig:
    """An ``NLIConfig`` from a config table, naming any unknown key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"nli config: expected a table of settings, got {table!r}")
    known = [f.name for f in dataclasses.fields(NLIConfig)]
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"nli config: unknown key {key!r}{hint}; known: {', '.join(known)}")
    return NLIConfig(**dict(table))


# ----------------------------------------------------------------------------- scores


def accuracy_interval(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy, resampling arguments (as ``metrics`` does for F1)."""
    correct = np.asarray(correct, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(correct), size=(resamples, len(correct)))
    means = correct[draws].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def nli_scores(gold: Sequence[int], predicted: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """The record's validation block: accuracy, its 95% interval, macro F1 over both classes, n."""
    from sklearn.metrics import accuracy_score, f1_score

    gold, predicted = np.asarray(gold), np.asarray(predicted)
    low, high = accuracy_interval(gold == predicted, seed=seed)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "ci95": [low, high],
        "macro_f1": float(f1_score(gold, predicted, labels=[0, 1], average="macro", zero_division=0)),
        "n": len(gold),
    }


def format_predictions(pairs: Sequence[NLIPair], p_support: np.ndarray) -> str:
    lines = ["Argument ID\tgold\tpredicted\tp_support"]
    for pair, p in zip(pairs, p_support, strict=True):
        lines.append(f"{pair.id}\t{LABELS[pair.label]}\t{LABELS[int(p >= 0.5)]}\t{p:.6f}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- encoder




@dataclass
class _Fit:
    """What a training method reports besides the scores."""

    p_support: np.ndarray
    trainable: int
    total: int
    train_seconds: float
    inference_seconds: float
    steps: int = 0
    epochs_completed: int = 0
    stopped_by: str | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _check_model_path(name: str) -> None:
    """A missing local folder would otherwise be reported by the Hub client as a bad repo id."""
    path = Path(name).expanduser()
    if (path.is_absolute() or name.startswith(("./", "../", "~"))) and not path.exists():
        raise _fail("model", f"names a folder that does not exist: {path}")


def _load_encoder(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from valuedetect.models import resolve_model

    _check_model_path(name)
    try:
        source = resolve_model(name)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    except (OSError, ValueError, ValueDetectError) as error:
        raise _fail("model", f"cannot be loaded as an encoder ({name!r}: {error})") from None
    return tokenizer, model


def _encode_pairs(tokenizer: Any, pairs: Sequence[NLIPair], max_length: int) -> list[dict[str, Any]]:
    encoded = tokenizer([p.premise for p in pairs], [p.conclusion for p in pairs], truncation=True,
                        max_length=max_length)
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": p.label} for i, p in enumerate(pairs)]


def _predict_encoder(model: Any, collator: Any, items: list[dict[str, Any]], batch_size: int,
                     device: Any) -> np.ndarray:
    """P(support) per item, batched by length so padding stays small."""
    import torch

    order = np.argsort([len(it["input_ids"]) for it in items], kind="stable")
    result = np.zeros(len(items))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = collator([{k: v for k, v in items[i].items() if k != "labels"} for i in chosen])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            result[chosen] = torch.softmax(logits.float(), dim=-1)[:, SUPPORT].cpu().numpy()
    return result


def _run_encoder(c: NLIConfig, train: list[NLIPair], validation: list[NLIPair], progress: Progress | None,
                 log: Log | None) -> _Fit:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    from valuedetect.encoder.batching import BucketBatchSampler

    assert c.model and c.epochs and c.batch_size and c.lr and c.max_length
    set_seed(c.seed)
    tokenizer, model = _load_encoder(c.model)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model.to(accelerator.device)
    collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    items = _encode_pairs(tokenizer, train, c.max_length)
    sampler = BucketBatchSampler([len(it["input_ids"]) for it in items], c.batch_size, shuffle=True, seed=c.seed)
    loader = DataLoader(items, batch_sampler=sampler, collate_fn=collator)
    steps = c.epochs * len(sampler)
    steps = min(steps, c.max_steps) if c.max_steps else steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(c.warmup * steps), steps)
    size = sum(p.numel() for p in model.parameters())
    fit = _Fit(np.zeros(0), trainable=size, total=size, train_seconds=0.0, inference_seconds=0.0)
    started = time.monotonic()
    for epoch in range(c.epochs):
        sampler.set_epoch(epoch)
        model.train()
        total, done = 0.0, 0
        for done, batch in enumerate(loader, 1):
            loss = model(**{k: v.to(accelerator.device) for k, v in batch.items()}).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach())
            fit.steps += 1
            if progress:
                progress(f"nli fine-tuning epoch {epoch + 1}/{c.epochs}", done, len(sampler))
            fit.stopped_by = budget_stop(fit.steps, started, c.max_steps, c.max_seconds)
            if fit.stopped_by:
                break
        fit.history.append({"epoch": epoch + 1, "loss": total / max(done, 1), "steps": done})
        if log:
            log(f"nli epoch {epoch + 1}: loss {total / max(done, 1):.4f} over {done} steps")
        if fit.stopped_by:
            if log:
                log(f"nli training stopped by {fit.stopped_by} after {fit.steps} steps")
            break
        fit.epochs_completed = epoch + 1
    fit.train_seconds = time.monotonic() - started
    started = time.monotonic()
    fit.p_support = _predict_encoder(model, collator, _encode_pairs(tokenizer, validation, c.max_length),
                                     c.batch_size, accelerator.device)
    fit.inference_seconds = time.monotonic() - started
    return fit


# ----------------------------------------------------------------------------- prompt


def _run_prompt(c: NLIConfig, train: list[NLIPair], validation: list[NLIPair], progress: Progress | None,
                log: Log | None) -> _Fit:
    import torch

    from valuedetect.lm.api import LoglikelihoodRequest
    from valuedetect.lm.registry import make_lm
    from valuedetect.prompt_tuning import TuneSettings, TuneTask, init_text, train_soft_prompt

    assert c.model and c.epochs and c.batch_size and c.lr and c.max_length
    _check_model_path(c.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from valuedetect.templates import verbalizer_from_config

    verbalizer = verbalizer_from_config(c.verbalizer, where="nli config: 'verbalizer'")
    words = verbalizer.words()
    try:
        lm = make_lm("transformers", c.model, max_length=c.max_length, batch_size=c.batch_size, device=device)
        lm.load()  # type: ignore[attr-defined]
        for word in words:
            lm.token_ids(word)  # type: ignore[attr-defined]
    except ValueDetectError as error:
        raise _fail("model", f"cannot be used for prompting ({error})") from None

    def request(pair: NLIPair) -> LoglikelihoodRequest:
        return LoglikelihoodRequest(render_nli(c.template, pair.premise, pair.conclusion), words)

    classes = verbalizer.classes()
    fit = _Fit(np.zeros(0), trainable=0, total=lm.parameter_counts()[1],  # type: ignore[attr-defined]
               train_seconds=0.0, inference_seconds=0.0)
    if c.soft_prompt_tokens:
        lm.attach_soft_prompt(c.soft_prompt_tokens, 1, "before", c.prompt_init,  # type: ignore[attr-defined]
                              init_text(c.template), c.seed)
        labels = np.array([[p.label] for p in train], dtype=np.float32)
        task = TuneTask(lambda i, _k: request(train[i]), labels, words, [classes])
        # Keep every negative: the classes are near balanced, unlike value categories.
        settings = TuneSettings(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, negative_ratio=float(len(train)),
                                max_steps=c.max_steps, max_seconds=c.max_seconds, seed=c.seed)
        result = train_soft_prompt(lm, task, settings, progress=progress, log=log)
        fit.trainable, fit.total = lm.parameter_counts()  # type: ignore[attr-defined]
        fit.train_seconds, fit.steps, fit.stopped_by = result.seconds, result.steps, result.stopped_by
        fit.epochs_completed, fit.history = result.epochs_completed, result.history
    started = time.monotonic()
    answers = lm.loglikelihood([request(p) for p in validation])
    fit.p_support = np.array([verbalizer.probability(a) for a in answers])
    fit.inference_seconds = time.monotonic() - started
    return fit


# ----------------------------------------------------------------------------- the run


def _prepare_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder", output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder ({error.strerror})", output) from None
    for name in (PREDICTIONS_FILE, RESULTS_FILE):
        ensure_writable(output / name)


def _load_pairs(name: str, data_dir: str | Path | None) -> list[NLIPair]:
    pairs = nli_pairs(load_split(name, data_dir).arguments)
    if not pairs:
        raise InputError(f"the {name} split has no arguments", data_dir)
    return pairs


def run_nli(config: NLIConfig, output: Path, data_dir: str | Path | None = None, log: Log | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
    """Train (unless zero-shot), score validation, write the predictions and ``results.json``."""
    output = Path(output)
    _prepare_output(output)  # before any work, so a bad folder fails in a second
    validation, validation_note = seeded_subset(_load_pairs("validation", data_dir), config.validation_limit,
                                                config.subset_seed, "validation")
    zero_shot = config.method == "prompt" and not config.soft_prompt_tokens
    train: list[NLIPair] = []
    training_note = None
    if not zero_shot:
        train, training_note = seeded_subset(_load_pairs("training", data_dir), config.training_limit,
                                             config.subset_seed, "training")
    for note in (f"validation: {validation_note}" if validation_note else None,
                 f"training: {training_note}" if training_note else None):
        if note and log:
            log(note)
    run = _run_encoder if config.method == "encoder" else _run_prompt
    fit = run(config, train, validation, progress, log)
    predicted = (fit.p_support >= 0.5).astype(int)
    atomic_write_text(output / PREDICTIONS_FILE, format_predictions(validation, fit.p_support))
    results = {
        "task": "nli",
        "method": config.method,
        "family": "fine-tuning" if config.method == "encoder" else
                  ("prompt-tuning" if config.soft_prompt_tokens else "prompt-zero-shot"),
        "model": config.model,
        "labels": "support = stance 'in favor of', attack = stance 'against'; predicted support when p_support >= 0.5",
        "validation": nli_scores([p.label for p in validation], predicted, seed=config.seed),
        "parameters_trainable": fit.trainable,
        "parameters_total": fit.total,
        "train_seconds": round(fit.train_seconds, 2),
        "inference_seconds": round(fit.inference_seconds, 2),
        "training_arguments": len(train),
        "training_subset": training_note,
        "validation_subset": validation_note,
        "budget": {"max_steps": config.max_steps, "max_seconds": config.max_seconds, "steps": fit.steps,
                   "epochs_completed": fit.epochs_completed, "stopped_by": fit.stopped_by},
        "history": fit.history,
        "config": config.to_dict(),
        "outputs": {"validation_predictions": PREDICTIONS_FILE},
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }
    atomic_write_json(output / RESULTS_FILE, results)
    if log:
        v = results["validation"]
        log(f"nli validation accuracy {v['accuracy']:.3f} (95% CI {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}), "
            f"macro F1 {v['macro_f1']:.3f}, n {v['n']}")
    return results


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    from valuedetect import __version__

    out = {"valuedetect": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


__all__ = ["DEFAULT_TEMPLATE", "LABELS", "METHODS", "NLIConfig", "NLIPair", "accuracy_interval",
           "format_predictions", "nli_config_from_dict", "nli_pairs", "nli_scores", "run_nli", "seeded_subset"]
