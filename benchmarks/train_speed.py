"""Training and inference speed of the encoder detector against what a user would otherwise
pick: the Hugging Face ``Trainer`` with ``AutoModelForSequenceClassification`` (multi-label),
and a transformers ``pipeline`` for inference. One run, same data, model, epochs, batch size
and max length; each training runs in its own process so peak memory is its own.

    python benchmarks/train_speed.py --epochs 2 --output benchmarks/results/train_speed.json

Both trainings are scored the same way: a global threshold tuned on validation for the official
F1 (the detector's per-category option is switched off so the comparison is like for like).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _texts(split) -> list[str]:
    from valuedetect.templates import input_template

    template = input_template("plain")
    return [template.render(a) for a in split.arguments]


def worker_ours(args: argparse.Namespace) -> dict:
    import tomllib

    import torch

    from valuedetect.data import load_split
    from valuedetect.detectors import make_detector
    from valuedetect.metrics import score

    train, validation = load_split("training"), load_split("validation")
    # The shipped default settings, with the benchmark's shared ones on top.
    settings = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "default.toml").read_text())["detector"]
    settings.update({"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
                     "max_length": args.max_length, "thresholds": "global", "patience": 0})
    detector = make_detector("encoder", settings)
    start = time.perf_counter()
    detector.fit(train, validation)
    train_seconds = time.perf_counter() - start
    result = {"train_seconds": train_seconds,
              "validation_f1": score(validation.labels, detector.predict(validation.arguments)).f1,
              "trainable_parameters": detector.info["parameters_trainable"]}
    for quantize in (False, True):
        detector.config.quantize = quantize
        detector.predict_proba(validation.arguments[:64])  # warm-up
        start = time.perf_counter()
        scores = detector.predict_proba(validation.arguments)
        seconds = time.perf_counter() - start
        key = "int8" if quantize else "fp32"
        result[f"inference_{key}_args_per_second"] = len(validation) / seconds
        result[f"validation_f1_{key}"] = score(validation.labels, detector.decide(scores)).f1
    result["torch_threads"] = torch.get_num_threads()
    result["peak_rss_mb"] = _peak_mb()
    return result


class _Encoded:
    def __init__(self, encodings: dict, labels: np.ndarray):
        self.encodings, self.labels = encodings, labels.astype(np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def worker_hf(args: argparse.Namespace) -> dict:
    import tempfile

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        pipeline,
    )

    from valuedetect.data import load_split
    from valuedetect.metrics import score
    from valuedetect.models import resolve_model
    from valuedetect.thresholds import best_global

    source = resolve_model(args.model)
    train, validation = load_split("training"), load_split("validation")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=20, problem_type="multi_label_classification")
    encode = lambda split: tokenizer(_texts(split), truncation=True, max_length=args.max_length)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64, learning_rate=5e-5, warmup_steps=0.1, lr_scheduler_type="cosine",
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True,
            seed=13, dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=_Encoded(encode(train), train.labels),
                          processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        logits = trainer.predict(_Encoded(encode(validation), validation.labels)).predictions
    scores = 1 / (1 + np.exp(-logits))
    threshold, _ = best_global(scores, validation.labels)
    f1 = score(validation.labels, scores >= threshold).f1
    model.eval()
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None,
                        function_to_apply="sigmoid", device=-1)
    texts = _texts(validation)
    classify(texts[:64], batch_size=64, truncation=True, max_length=args.max_length)
    start = time.perf_counter()
    classify(texts, batch_size=64, truncation=True, max_length=args.max_length)
    seconds = time.perf_counter() - start
    return {"train_seconds": train_seconds, "validation_f1": f1,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "inference_pipeline_args_per_second": len(texts) / seconds,
            "torch_threads": torch.get_num_threads(), "peak_rss_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/train_speed.json"))
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_ours(args) if args.worker == "ours" else worker_hf(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for worker in ("ours", "hf"):
        print(f"running {worker} ...", flush=True)
        cmd = [sys.executable, __file__, "--worker", worker, "--model", args.model, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{worker} failed:\n{done.stderr[-3000:]}")
        results[worker] = json.loads(lines[-1][len("RESULT "):])
        print(json.dumps(results[worker], indent=2), flush=True)
    ours, hf = results["ours"], results["hf"]
    summary = {
        "setting": {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
                    "max_length": args.max_length, "split": "validation (1896 arguments)",
                    "metric": "official F1, global threshold tuned on validation",
                    "machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")},
        "ours": ours, "hf_trainer": hf,
        "training_speedup": hf["train_seconds"] / ours["train_seconds"],
        "inference_speedup_fp32": ours["inference_fp32_args_per_second"] / hf["inference_pipeline_args_per_second"],
        "inference_speedup_int8": ours["inference_int8_args_per_second"] / hf["inference_pipeline_args_per_second"],
        "peak_memory_ratio": ours["peak_rss_mb"] / hf["peak_rss_mb"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"training: ours {ours['train_seconds']:.0f} s, F1 {ours['validation_f1']:.3f}; Trainer "
          f"{hf['train_seconds']:.0f} s, F1 {hf['validation_f1']:.3f}; speed-up {summary['training_speedup']:.2f}x")
    print(f"inference: ours fp32 {ours['inference_fp32_args_per_second']:.0f}/s, int8 "
          f"{ours['inference_int8_args_per_second']:.0f}/s (F1 {ours['validation_f1_int8']:.3f}); pipeline "
          f"{hf['inference_pipeline_args_per_second']:.0f}/s")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
