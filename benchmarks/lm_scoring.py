"""Zero-shot per-value scoring of validation arguments (the prompt detector's BCA template):
token positions computed per argument and arguments per second, for one model, in one run:

- ``separate``: 20 full prompts per argument (``sharing = "none"``), what a user of a plain
  transformers loop runs;
- ``kv-cache``: the argument once, its key/value cache repeated for the 20 questions (the
  project's previous prefix cache);
- ``packed``: the argument and its 20 questions in one sequence (4D mask, per-suffix positions);
- ``llamacpp`` (``--llamacpp``): the same prompts in llama.cpp, which reuses the previous prompt's
  prefix.

Each mode scores the same arguments and must give the same scores (the largest difference is
printed); ratios are against ``separate``. ``--templates bca,bca_name`` also measures the
shorter question (the value's name instead of its description); ``--dtypes float32,bfloat16``
the bf16 matrix units (rows ``MODE-bfloat16``). With ``--arguments 1896`` and
``--modes packed`` it is the full-validation target run (SmolLM2 <= 15 min, Qwen-0.5B <= 45 min,
Qwen-1.5B <= 2.5 h on 2 cores).

    python benchmarks/lm_scoring.py --model smollm2 --arguments 40
    python benchmarks/lm_scoring.py --model qwen2.5-0.5b --arguments 40 --llamacpp
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def score(model: str, template: str, arguments: list, sharing: str | None, batch_size: int,
          dtype: str = "float32") -> dict:
    from valuedetect.detectors import make_detector

    settings = {"model": model, "template": template, "batch_size": batch_size, "thresholds": "fixed",
                "dtype": dtype}
    if sharing is None:
        settings["backend"] = "llamacpp"
    elif sharing == "none":
        settings["share_prefix"] = False
    else:
        settings["sharing"] = sharing
    detector = make_detector("prompt", settings)
    detector.lm()  # load outside the clock
    if hasattr(detector.language_model, "load"):
        detector.language_model.load()
    detector.predict_proba(arguments[:1])  # warm up
    started = time.perf_counter()
    scores = detector.predict_proba(arguments)
    seconds = time.perf_counter() - started
    info = detector.info
    detector.close()
    return {"scores": scores, "seconds": round(seconds, 2), "arguments_per_second": round(len(arguments) / seconds, 3),
            "processed_tokens_per_argument": round(info["processed_tokens"] / len(arguments), 1),
            "prompt_tokens_per_argument": round(info["prompt_tokens"] / len(arguments), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--arguments", type=int, default=40, help="first N validation arguments")
    parser.add_argument("--templates", default="bca", help="comma-separated, e.g. bca,bca_name")
    parser.add_argument("--modes", default="separate,kv-cache,packed")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated transformers dtypes, e.g. float32,bfloat16 (rows MODE-DTYPE)")
    parser.add_argument("--llamacpp", action="store_true", help="also llama.cpp in-process")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/lm_scoring.json"))
    args = parser.parse_args()

    from valuedetect.data import load_split
    from valuedetect.metrics import score as official

    validation = load_split("validation").subset(range(args.arguments))
    modes = {"separate": "none", "kv-cache": "kv-cache", "packed": "packed"}
    wanted = [m for m in args.modes.split(",") if m]
    results: dict = {"model": args.model, "arguments": args.arguments, "machine": platform.processor() or "cpu",
                     "templates": {}}
    for template in args.templates.split(","):
        rows = {}
        for mode in wanted:
            for dtype in args.dtypes.split(","):
                name = mode if dtype == "float32" else f"{mode}-{dtype}"
                rows[name] = score(args.model, template, validation.arguments, modes[mode], args.batch_size, dtype)
                print(template, name, {k: v for k, v in rows[name].items() if k != "scores"}, flush=True)
        if args.llamacpp:
            rows["llamacpp"] = score(args.model, template, validation.arguments, None, args.batch_size)
            print(template, "llamacpp", {k: v for k, v in rows["llamacpp"].items() if k != "scores"}, flush=True)
        scores = {mode: row.pop("scores") for mode, row in rows.items()}
        first = next(iter(rows))
        out = {}
        for mode, row in rows.items():
            best = max(official(validation.labels, (scores[mode] >= t).astype(int)).f1
                       for t in np.linspace(0.02, 0.98, 49))
            out[mode] = {**row, f"speedup_vs_{first}": round(rows[first]["seconds"] / row["seconds"], 2),
                         f"max_abs_score_difference_vs_{first}": float(np.abs(scores[mode] - scores[first]).max()),
                         "f1_best_global_threshold_in_sample": round(best, 4)}
        results["templates"][template] = out
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
