"""The chain-of-thought strategy (a reply of up to ``--max-new-tokens`` tokens, then 20 Yes/No
questions that quote it) on the same validation arguments through two engines, in one run:

- ``llamacpp``: llama.cpp in-process, one reply at a time, the 20 questions reusing the previous
  prompt's prefix (what the grid's chain-of-thought rows ran on first);
- ``transformers-bfloat16``: transformers in bfloat16, the replies generated in batches of
  ``--chunk`` arguments (left-padded; a decoding step costs about the same for 8 rows as for 1 on
  a CPU, where it is bound by reading the weights), the questions scored packed.

Both read the same GGUF file (transformers dequantises it), so they differ by arithmetic only;
greedy replies still part ways after the first token that differs, so the scores are compared by
their mean absolute difference and their correlation, not to a tolerance. The response cache is
off: every reply is generated.

    python benchmarks/cot_strategy.py --model qwen2.5-0.5b --arguments 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def run(engine: str, model: str, warm_up: list, arguments: list, max_new_tokens: int, chunk: int) -> dict:
    from valuedetect.detectors import make_detector

    settings = {"model": model, "strategy": "cot", "max_new_tokens": max_new_tokens, "use_cache": False,
                "thresholds": "fixed", "chunk_size": chunk}
    if engine == "llamacpp":
        settings["backend"] = "llamacpp"
    else:
        settings.update(backend="transformers", dtype="bfloat16")  # generates in batches of up to 8
    detector = make_detector("llm", settings)
    detector.predict_proba(warm_up)  # load and warm up outside the clock
    usage = detector.info["usage"]
    before = usage["completion_tokens"], usage["processed_tokens"]
    started, cpu = time.perf_counter(), time.process_time()
    scores = detector.predict_proba(arguments)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    usage = detector.info["usage"]
    detector.close()
    n = len(arguments)
    return {"scores": scores, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 1),
            "arguments_per_second": round(n / seconds, 4),
            "completion_tokens_per_argument": round((usage["completion_tokens"] - before[0]) / n, 1),
            "processed_tokens_per_argument": round((usage["processed_tokens"] - before[1]) / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--arguments", type=int, default=16, help="first N validation arguments")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="the grid's chain-of-thought setting")
    parser.add_argument("--chunk", type=int, default=8, help="arguments per generation batch (transformers)")
    parser.add_argument("--engines", default="llamacpp,transformers-bfloat16")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from valuedetect.data import load_split

    validation = load_split("validation").arguments
    warm_up, arguments = list(validation[:1]), list(validation[1 : args.arguments + 1])
    rows = {}
    for engine in args.engines.split(","):
        rows[engine] = run(engine, args.model, warm_up, arguments, args.max_new_tokens, args.chunk)
        print(engine, {k: v for k, v in rows[engine].items() if k != "scores"}, flush=True)
    engines = list(rows)
    result = {
        "benchmark": "cot_strategy", "model": args.model, "arguments": args.arguments,
        "max_new_tokens": args.max_new_tokens, "chunk": args.chunk, "cores": os.cpu_count(),
        "platform": platform.platform(), "split": "validation (first arguments after the warm-up one)",
        "rows": {e: {k: v for k, v in r.items() if k != "scores"} for e, r in rows.items()},
    }
    if len(engines) == 2:
        a, b = (rows[e]["scores"] for e in engines)
        speeds = [rows[e]["arguments_per_second"] for e in engines]
        result["ratio"] = {f"{engines[1]} / {engines[0]} arguments per second": round(speeds[1] / speeds[0], 2)}
        result["agreement"] = {"mean_abs_difference": round(float(np.abs(a - b).mean()), 4),
                               "correlation": round(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), 3)}
        print(result["ratio"], result["agreement"])
    output = args.output or Path(f"benchmarks/results/cot_strategy-{args.model}.json")
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
