"""Training speed of the encoder detector against what a practitioner would otherwise run, with
baselines that are checked to have learned something.

Rows, in one run, on the same data, model, epochs, batch size and max length, each training in
its own process (so its peak memory and CPU time are its own):

- ``ours``: the encoder detector with the shipped settings of ``configs/default.toml`` (top 2
  of MiniLM's 6 blocks trainable, the frozen bottom computed once and cached).
- ``hf-full``: the Hugging Face ``Trainer`` with ``AutoModelForSequenceClassification``
  (``problem_type="multi_label_classification"``: BCE with logits), every layer trainable:
  what a practitioner runs.
- ``hf-frozen``: the same ``Trainer`` with the same blocks frozen as ours (embeddings and the
  bottom 4 blocks) and our learning rates (3e-4 for the trainable blocks, 3e-3 for the head):
  like for like, minus our cache of the frozen bottom.
- ``setfit``: SetFit (``setfit`` package) on the same MiniLM, multi-label one-vs-rest logistic
  regression head; its contrastive body training sees each argument ``epochs`` times on average
  (``epochs * |fit| / 2`` sentence pairs), as the other rows do.

The Trainer recipe (what a practitioner would use, stated in the JSON): AdamW, learning rate
5e-5 for the encoder and 1e-3 for the freshly initialised pooler and classifier, weight decay
0.01 (none on biases and LayerNorm), linear schedule with 10% warm-up, the same epochs and batch
size as ours, dynamic padding. The learning rates are options (``--hf-lr``, ``--hf-head-lr``;
``--frozen-lr``, ``--frozen-head-lr`` for ``hf-frozen``, which default to ``configs/default.toml``'s
``lr`` and ``head_lr``: at 5e-5 / 1e-3 two trainable blocks learned too little, validation F1
0.319 against all-ones 0.286 on a 1000-argument, 3-epoch check, where ``hf-full`` reached 0.336;
with our rates ``hf-frozen`` reached 0.337 there).

Protocol (``valuedetect.protocol``): every row trains on training minus the dev slice (seeded,
label-stratified, no conclusion shared), for exactly ``--epochs`` epochs (no early stopping:
the last epoch's weights), then one global decision threshold is chosen on dev for the official
F1 and validation is scored once with it. Nothing is chosen on validation, and every number
names its split.

The benchmark fails (exit status 1, reasons printed) when any row does not beat the all-ones
baseline's validation F1 by ``--margin`` (official F1): a row that learned nothing makes every
ratio meaningless. Results are then written to ``<output>.failed.json`` instead of ``<output>``.

    python benchmarks/train_speed.py                                  # full: ~75 min on 2 free cores
    python benchmarks/train_speed.py --limit 200 --epochs 1 --margin -1 --output /tmp/smoke.json

Inference speed is measured by ``benchmarks/inference_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's valuedetect, in the parent as in the rows
ROWS = ("ours", "hf-full", "hf-frozen", "setfit")
OPTIONAL = {"setfit": "setfit"}  # row -> the package it needs; a missing package skips the row
DEFAULTS = tomllib.loads((ROOT / "configs" / "default.toml").read_text())["detector"]
LIMIT_SEED = 13


# ---------------------------------------------------------------------- shared by every row
def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def splits(limit: int | None) -> Any:
    """The held-out protocol's fit, dev and validation splits; with ``limit``, a seeded subset of
    at most ``limit`` arguments of each (smoke tests only: the figures then mean nothing)."""
    from valuedetect.data import load_split
    from valuedetect.protocol import make_splits

    parts = make_splits(load_split("training"), load_split("validation"))
    if limit:
        rng = np.random.default_rng(LIMIT_SEED)
        for role in ("fit", "dev", "validation"):
            split = getattr(parts, role)
            if len(split) > limit:
                setattr(parts, role, split.subset(np.sort(rng.choice(len(split), limit, replace=False))))
    return parts


def texts(split: Any) -> list[str]:
    from valuedetect.templates import input_template

    template = input_template(DEFAULTS["template"])
    return [template.render(a) for a in split.arguments]


def judge(dev_scores: np.ndarray, validation_scores: np.ndarray, parts: Any) -> dict:
    """The one threshold rule for every row: a global threshold chosen on dev for the official
    F1, then validation scored once with it."""
    from valuedetect.metrics import score
    from valuedetect.thresholds import best_global

    threshold, dev_f1 = best_global(dev_scores, parts.dev.labels)
    scores = score(parts.validation.labels, validation_scores >= threshold)
    return {"threshold_chosen_on_dev": threshold, "dev_f1": dev_f1, "validation_f1": scores.f1,
            "validation_precision": scores.precision, "validation_recall": scores.recall,
            "validation_mean_of_category_f1": scores.mean_f1}


class Clock:
    """Wall and CPU seconds (every thread of this process) of the block it times."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


# ---------------------------------------------------------------------- the rows
def row_ours(args: argparse.Namespace, parts: Any) -> dict:
    from valuedetect.detectors import make_detector

    settings = dict(DEFAULTS)
    settings.update({"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
                     "max_length": args.max_length, "patience": 0})
    detector = make_detector("encoder", settings)
    with Clock() as clock:
        detector.fit(parts.fit, None)  # no dev during fit: the last epoch's weights, as every row
    result = judge(detector.predict_proba(parts.dev.arguments), detector.predict_proba(parts.validation.arguments),
                   parts)
    result.update(train_wall_seconds=clock.wall, train_cpu_seconds=clock.cpu,
                  trainable_parameters=detector.info["parameters_trainable"],
                  recipe={k: settings[k] for k in ("trainable_layers", "lr", "head_lr", "layer_decay", "warmup",
                                                   "pooling", "heads")} | {"settings": "configs/default.toml"})
    return result


class _Encoded:
    def __init__(self, encodings: Any, labels: np.ndarray):
        self.encodings, self.labels = encodings, np.asarray(labels, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def row_hf(args: argparse.Namespace, parts: Any, frozen: bool) -> dict:
    import tempfile

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        get_linear_schedule_with_warmup,
    )

    from valuedetect.encoder.model import find_blocks
    from valuedetect.models import resolve_model

    source = resolve_model(args.model)
    torch.manual_seed(DEFAULTS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=20, problem_type="multi_label_classification")
    base = model.base_model
    frozen_blocks = 0
    if frozen:  # the same frozen bottom as ours: embeddings and all but the top trainable_layers blocks
        holder, name = find_blocks(base)
        blocks = getattr(holder, name)
        frozen_blocks = len(blocks) - DEFAULTS["trainable_layers"]
        for module in [base.embeddings, *blocks[:frozen_blocks]]:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
    # The pooler and classifier start from scratch (all-MiniLM-L6-v2 was trained with mean pooling),
    # so they get the head learning rate; the pretrained encoder the usual fine-tuning one.
    head_names = ("classifier", "pooler")
    no_decay = ("bias", "LayerNorm.weight", "layernorm", "layer_norm")
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (any(h in name for h in head_names), any(n in name for n in no_decay))
            groups.setdefault(key, []).append(parameter)
    encoder_lr, head_lr = (args.frozen_lr, args.frozen_head_lr) if frozen else (args.hf_lr, args.hf_head_lr)
    optimizer = torch.optim.AdamW([
        {"params": params, "lr": head_lr if head else encoder_lr, "weight_decay": 0.0 if nodecay else 0.01}
        for (head, nodecay), params in groups.items()])
    steps = math.ceil(len(parts.fit) / args.batch_size) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(0.1 * steps), steps)

    def encode(split: Any) -> _Encoded:
        return _Encoded(tokenizer(texts(split), truncation=True, max_length=args.max_length), split.labels)

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64, save_strategy="no", eval_strategy="no", logging_strategy="no",
            report_to=[], use_cpu=True, seed=DEFAULTS["seed"], dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=encode(parts.fit),
                          processing_class=tokenizer, optimizers=(optimizer, scheduler))
        with Clock() as clock:
            trainer.train()

        def scores(split: Any) -> np.ndarray:
            logits = trainer.predict(encode(split)).predictions
            return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))

        result = judge(scores(parts.dev), scores(parts.validation), parts)
    result.update(train_wall_seconds=clock.wall, train_cpu_seconds=clock.cpu,
                  trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  recipe={"model_class": type(model).__name__, "loss": "BCEWithLogits (multi_label_classification)",
                          "optimizer": "AdamW", "lr_encoder": encoder_lr, "lr_pooler_and_classifier": head_lr,
                          "weight_decay": 0.01, "schedule": "linear", "warmup_ratio": 0.1,
                          "frozen_blocks": frozen_blocks, "embeddings_frozen": frozen, "padding": "dynamic"})
    return result


def row_setfit(args: argparse.Namespace, parts: Any) -> dict:
    import tempfile

    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from valuedetect.models import resolve_model

    torch.manual_seed(DEFAULTS["seed"])
    model = SetFitModel.from_pretrained(resolve_model(args.model), multi_target_strategy="one-vs-rest")
    # Each argument seen `epochs` times on average: a pair holds two arguments.
    steps = max(1, math.ceil(args.epochs * len(parts.fit) / (2 * args.batch_size)))
    training_args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="setfit-"), batch_size=args.batch_size,
                                      num_epochs=1, max_steps=steps, max_length=args.max_length,
                                      seed=DEFAULTS["seed"], report_to="none", logging_strategy="no",
                                      save_strategy="no", eval_strategy="no", show_progress_bar=False)
    data = Dataset.from_dict({"text": texts(parts.fit), "label": [list(map(int, r)) for r in parts.fit.labels]})
    trainer = Trainer(model=model, args=training_args, train_dataset=data)
    with Clock() as clock:
        trainer.train()

    def scores(split: Any) -> np.ndarray:
        proba = model.predict_proba(texts(split), as_numpy=True, show_progress_bar=False)
        if isinstance(proba, list):  # one [n, 2] array per category from some sklearn versions
            proba = np.stack([p[:, 1] for p in proba], axis=1)
        return np.asarray(proba, dtype=np.float64)

    result = judge(scores(parts.dev), scores(parts.validation), parts)
    result.update(train_wall_seconds=clock.wall, train_cpu_seconds=clock.cpu,
                  trainable_parameters=sum(p.numel() for p in model.model_body.parameters() if p.requires_grad),
                  recipe={"loss": "CosineSimilarityLoss on sentence pairs (SetFit default)",
                          "pairs": steps * args.batch_size, "body_lr": training_args.body_learning_rate[0],
                          "head": "one-vs-rest LogisticRegression", "layers_trainable": "all"})
    return result


def worker(args: argparse.Namespace) -> dict:
    import torch

    parts = splits(args.limit)
    if args.worker == "ours":
        result = row_ours(args, parts)
    elif args.worker == "setfit":
        result = row_setfit(args, parts)
    else:
        result = row_hf(args, parts, frozen=args.worker == "hf-frozen")
    result.update(torch_threads=torch.get_num_threads(), peak_rss_mib=_peak_mib())
    return result


# ---------------------------------------------------------------------- the run
def run_row(row: str, args: argparse.Namespace) -> dict:
    package = OPTIONAL.get(row)
    if package is not None:
        probe = subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True, text=True)
        if probe.returncode != 0:
            return {"skipped": f"the {package} package does not import: {probe.stderr.strip().splitlines()[-1:]}"}
    command = [sys.executable, __file__, "--worker", row, "--model", args.model, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--hf-lr", str(args.hf_lr), "--hf-head-lr", str(args.hf_head_lr),
               "--frozen-lr", str(args.frozen_lr), "--frozen-head-lr", str(args.frozen_head_lr)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    env = dict(os.environ)
    env.pop("VALUEDETECT_FROZEN_CACHE", None)  # ours computes its frozen bottom here, not from disk
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"FAILED: the {row} row exited with status {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def checks(rows: dict[str, dict], all_ones: float, margin: float) -> list[str]:
    """Why the run cannot stand (empty when it can): a row that does not beat all-ones."""
    problems = []
    for name, row in rows.items():
        if "skipped" in row:
            continue
        if not row["validation_f1"] >= all_ones + margin:
            problems.append(f"{name}: validation F1 {row['validation_f1']:.4f} does not beat all-ones "
                            f"({all_ones:.4f}) by {margin:+.3f}; it has not learned enough to compare speed with")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULTS["model"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--hf-lr", type=float, default=5e-5, help="Trainer rows: encoder learning rate")
    parser.add_argument("--hf-head-lr", type=float, default=1e-3,
                        help="Trainer rows: learning rate of the new pooler and classifier")
    parser.add_argument("--frozen-lr", type=float, default=DEFAULTS["lr"],
                        help="hf-frozen: learning rate of the trainable blocks (ours by default)")
    parser.add_argument("--frozen-head-lr", type=float, default=DEFAULTS["head_lr"],
                        help="hf-frozen: learning rate of the new pooler and classifier (ours by default)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many arguments of fit, dev and validation each (smoke tests)")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="each row must beat all-ones' validation F1 by this much (official F1)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "train_speed.json")
    parser.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown or not wanted:
        parser.error(f"--rows takes {', '.join(ROWS)}, not {', '.join(unknown) or 'nothing'}")

    from valuedetect.metrics import score

    parts = splits(args.limit)
    all_ones = score(parts.validation.labels, np.ones_like(parts.validation.labels)).f1
    load_before = os.getloadavg()
    began = time.perf_counter()
    rows: dict[str, dict] = {}
    for row in wanted:
        print(f"running {row} ...", flush=True)
        rows[row] = run_row(row, args)
        print(json.dumps(rows[row], indent=2), flush=True)
    ours = rows.get("ours")
    ratios: dict[str, dict] = {}
    if ours is not None:
        for name, row in rows.items():
            if name == "ours" or "skipped" in row:
                continue
            ratios[f"{name}/ours"] = {
                "train_wall_seconds": row["train_wall_seconds"] / ours["train_wall_seconds"],
                "train_cpu_seconds": row["train_cpu_seconds"] / ours["train_cpu_seconds"],
                "peak_rss_mib": row["peak_rss_mib"] / ours["peak_rss_mib"],
                "validation_f1_difference": row["validation_f1"] - ours["validation_f1"],
            }
    problems = checks(rows, all_ones, args.margin)
    summary = {
        "setting": {
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
            "smoke_test": bool(args.limit), "limit": args.limit,
            "protocol": parts.describe(),
            "trained_on": f"fit: training minus dev ({len(parts.fit)} arguments)",
            "threshold_rule": f"one global threshold chosen on dev ({len(parts.dev)} arguments) for the official F1",
            "scored_on": f"validation ({len(parts.validation)} arguments), scored once",
            "metric": "official F1 (2PR/(P+R) of category-averaged P and R)",
            "all_ones_validation_f1": all_ones, "margin_required": args.margin,
            "timing": "train_* covers fit() / Trainer.train() only: ours includes loading the encoder and "
                      "computing its frozen-bottom cache, the Trainer rows load theirs before the clock starts, "
                      "SetFit's includes pair sampling and fitting its head; train_cpu_seconds counts every thread "
                      "of the row's process; peak_rss_mib is that process's maximum resident set (load, train, "
                      "score)",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
            "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "date": time.strftime("%Y-%m-%d"), "wall_seconds_all_rows": round(time.perf_counter() - began, 1),
        },
        "rows": rows,
        "ratios": ratios,
        "failed_checks": problems,
    }
    output = args.output if not problems else args.output.with_suffix(".failed.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsplit: trained on fit ({len(parts.fit)}), threshold on dev ({len(parts.dev)}), "
          f"scored on validation ({len(parts.validation)}); all-ones validation F1 {all_ones:.4f}")
    print(f"{'row':10} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'dev F1':>7} {'val F1':>7}  wall/ours")
    for name, row in rows.items():
        if "skipped" in row:
            print(f"{name:10} skipped: {row['skipped']}")
            continue
        ratio = 1.0 if name == "ours" else ratios.get(f"{name}/ours", {}).get("train_wall_seconds")
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        print(f"{name:10} {row['train_wall_seconds']:8.1f} {row['train_cpu_seconds']:8.1f} {row['peak_rss_mib']:9.0f} "
              f"{row['dev_f1']:7.4f} {row['validation_f1']:7.4f}  {shown}")
    print(f"wrote {output}")
    if problems:
        print("\nFAILED: " + "\n        ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
