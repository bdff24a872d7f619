"""Inference speed of the shipped encoder detector against what a user would otherwise run, in
one process and one run, on the validation split (1896 arguments), each path scored with the
official F1 at the detector's own thresholds:

- ``ours_default``: ``predict_proba`` as predict, the server and ``vd.load().predict`` call it
  (``inference = "auto"``: the int8 ONNX Runtime path where the detector's check allows it);
- ``ours_fp32``: the same with ``inference = "fp32"`` (torch, length-bucketed);
- ``ours_torch_int8``: the older option ``quantize = true`` (torch dynamic int8 on the fp32 path);
- ``transformers_pipeline``: ``pipeline("text-classification", top_k=None,
  function_to_apply="sigmoid")`` over a transformers model that holds the detector's weights
  (the backbone, mean pooling and the 20-way head), batch size 32;
- ``transformers_loop``: a plain ``AutoModel`` loop over the same weights (tokenizer padding to
  the longest of each batch of 32 in the input's order, mean pooling, head, sigmoid).

Both baselines must give the fp32 probabilities (their largest difference to ``ours_fp32`` is
reported, and the run fails if it exceeds 1e-3): a baseline that does not compute the same model
is not a baseline. Rows are timed in interleaved rounds (A B C ... A B C ...) so that a change of
load on the machine falls on every row alike; ratios use the median of the rounds.

    PYTHONPATH=src python benchmarks/inference_speed.py --repeats 3

writes ``benchmarks/results/inference_speed.json``. Tokenisation is inside every timing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BASELINE_TOLERANCE = 1e-3  # the largest probability difference a baseline may show against our fp32


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu, "cores_usable": cores, "python": platform.python_version()}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def hf_model(detector: Any) -> tuple[Any, Any]:
    """A transformers ``PreTrainedModel`` with the detector's weights (its backbone, mean
    pooling, its head), built from the base model's own classes, and the tokenizer."""
    import copy

    import torch
    from transformers import AutoModel, AutoTokenizer, PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    from valuedetect.models import resolve_model

    source = resolve_model(detector.config.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    backbone = AutoModel.from_pretrained(source)  # the stock model, sdpa attention as a user gets it
    backbone.load_state_dict(detector.model.backbone.state_dict())
    head = copy.deepcopy(detector.model.head.linear)

    class MeanPooledClassifier(PreTrainedModel):
        config_class = type(backbone.config)
        base_model_prefix = "encoder"
        _supports_sdpa = True  # the backbone inside keeps its own (sdpa) attention

        def __init__(self, config: Any):
            super().__init__(config)
            self.encoder, self.classifier = backbone, head

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return SequenceClassifierOutput(logits=self.classifier(pooled))

    config = copy.deepcopy(backbone.config)
    config.num_labels = head.out_features
    config.problem_type = "multi_label_classification"
    model = MeanPooledClassifier(config).eval()
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="saved encoder detector folder (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds over all texts")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the two transformers baselines")
    parser.add_argument("--rows", default="ours_default,ours_fp32,ours_torch_int8,transformers_pipeline,"
                        "transformers_loop", help="comma-separated rows to run")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N validation arguments (a smoke test: its F1 is not the official figure)")
    parser.add_argument("--note", default=None, help="a remark kept with the figures (e.g. what else ran)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/inference_speed.json"))
    args = parser.parse_args()
    os.environ.pop("VALUEDETECT_INFERENCE", None)  # the default path is the saved setting's

    import torch
    from transformers import pipeline

    from valuedetect.data import load_split
    from valuedetect.detectors import load_detector
    from valuedetect.locate import shipped_model_dir
    from valuedetect.metrics import score
    from valuedetect.templates import input_template

    load_started = _load_average()
    folder = Path(args.model) if args.model else shipped_model_dir()
    validation = load_split("validation")
    if args.limit:
        validation = validation.subset(range(min(args.limit, len(validation))))
    arguments = validation.arguments

    def ours(inference: str | None = None, quantize: bool = False) -> Any:
        detector = load_detector(folder)
        if inference is not None:  # None: as saved (the default path)
            detector.config.inference, detector.config.quantize = inference, quantize
        return detector

    detectors = {"ours_default": ours(), "ours_fp32": ours("fp32"), "ours_torch_int8": ours("fp32", quantize=True)}
    reference = detectors["ours_fp32"]
    template = input_template(reference.config.template)
    if any(template.render_pair(a)[1] is not None for a in arguments):
        sys.exit("the baselines read one text per argument; this detector's template has two segments")
    texts = [template.render(a) for a in arguments]
    model, tokenizer = hf_model(reference)
    max_length = reference.config.max_length
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None,
                        function_to_apply="sigmoid", device=-1)
    label_order = [f"LABEL_{j}" for j in range(model.config.num_labels)]

    def run_pipeline(items: list[str]) -> np.ndarray:
        out = classify(items, batch_size=args.batch_size, truncation=True, max_length=max_length)
        return np.array([[{d["label"]: d["score"] for d in row}[name] for name in label_order] for row in out])

    def run_loop(items: list[str]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(items), args.batch_size):
                batch = tokenizer(items[start:start + args.batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                rows.append(torch.sigmoid(model(**batch).logits).numpy())
        return np.concatenate(rows)

    runners = {name: functools.partial(d.predict_proba, arguments) for name, d in detectors.items()}
    runners["transformers_pipeline"] = lambda: run_pipeline(texts)
    runners["transformers_loop"] = lambda: run_loop(texts)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - set(runners)
    if unknown or "ours_fp32" not in rows:
        sys.exit(f"unknown rows {sorted(unknown)}; ours_fp32 (the reference) must be among them")

    # Warm-up (not timed): the default path builds its int8 file here on first use.
    warmup_seconds = {}
    for name in rows:
        started = time.perf_counter()
        if name.startswith("ours"):
            detectors[name].predict_proba(arguments[:64])
        elif name == "transformers_pipeline":
            run_pipeline(texts[:64])
        else:
            run_loop(texts[:64])
        warmup_seconds[name] = round(time.perf_counter() - started, 2)
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    scores: dict[str, np.ndarray] = {}
    for round_ in range(args.repeats):
        for name in rows:
            started = time.perf_counter()
            result = runners[name]()
            seconds[name].append(time.perf_counter() - started)
            scores.setdefault(name, np.asarray(result, dtype=np.float64))
            print(f"round {round_ + 1}: {name} {len(arguments) / seconds[name][-1]:.1f} arguments/s", flush=True)

    results: dict[str, Any] = {}
    fp32 = scores["ours_fp32"]
    for name in rows:
        decisions = reference.decide(scores[name])
        median = statistics.median(seconds[name])
        results[name] = {
            "arguments_per_second": len(arguments) / median,
            "arguments_per_second_best": len(arguments) / min(seconds[name]),
            "seconds": [round(s, 3) for s in seconds[name]],
            "validation_f1": score(validation.labels, decisions).f1,
            "max_probability_difference_to_fp32": float(np.max(np.abs(scores[name] - fp32))),
            "warmup_seconds": warmup_seconds[name],
        }
    results["ours_default"]["path"] = list(detectors["ours_default"].inference) if "ours_default" in rows else None
    for name in ("transformers_pipeline", "transformers_loop"):
        if name in rows and results[name]["max_probability_difference_to_fp32"] > BASELINE_TOLERANCE:
            sys.exit(f"{name} does not compute the detector's probabilities (largest difference "
                     f"{results[name]['max_probability_difference_to_fp32']:.4f}): not a valid baseline")

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return results[a]["arguments_per_second"] / results[b]["arguments_per_second"]
        return None

    import onnxruntime
    import transformers

    summary = {
        "setting": {
            "detector": str(folder), "split": f"validation ({len(arguments)} arguments)", "note": args.note,
            "metric": "official F1 at the detector's own thresholds", "repeats": args.repeats,
            "baseline_batch_size": args.batch_size, "max_length": max_length,
            "machine": _machine(), "load_average_start": load_started, "load_average_end": _load_average(),
            "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "onnxruntime": onnxruntime.__version__},
        },
        "rows": results,
        "ratios": {
            "default_over_pipeline": ratio("ours_default", "transformers_pipeline"),
            "default_over_loop": ratio("ours_default", "transformers_loop"),
            "default_over_fp32": ratio("ours_default", "ours_fp32"),
            "fp32_over_pipeline": ratio("ours_fp32", "transformers_pipeline"),
            "torch_int8_over_fp32": ratio("ours_torch_int8", "ours_fp32"),
        },
        "f1_default_minus_fp32": (results["ours_default"]["validation_f1"] - results["ours_fp32"]["validation_f1"]
                                  if "ours_default" in results else None),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    for name in rows:
        r = results[name]
        print(f"{name:24s} {r['arguments_per_second']:7.1f} arguments/s  F1 {r['validation_f1']:.4f}  "
              f"max |p - fp32| {r['max_probability_difference_to_fp32']:.4f}")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary["ratios"].items() if v is not None))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
