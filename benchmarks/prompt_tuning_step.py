"""Seconds per prompt-tuning step for each soft-prompt placement, on the same pairs, in one run:
``after`` (between the argument and the question), ``end`` (after the question: the question runs
without gradients) and the paper's ``before``. The arguments' key/values are stored first, so
``after`` and ``end`` time their steps alone (as in every epoch after the first state is made),
and each placement starts from the same text-initialised prompt.

    python benchmarks/prompt_tuning_step.py --model smollm2 --steps 6 --threads 1

Writes ``benchmarks/results/prompt_tuning_step-<model>.json``: wall and CPU seconds per step,
token positions per step, the loss over the timed steps, and each placement's CPU ratio to
``after``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--template", default="bca")
    parser.add_argument("--placements", default="after,end,before")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--arguments", type=int, default=120, help="first N training arguments")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", help="the frozen model's dtype (float32 | bfloat16)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from valuedetect.data import load_split
    from valuedetect.detectors.prompt import PromptConfig, PromptDetector
    from valuedetect.lm.states import PrefixStates
    from valuedetect.prompt_tuning import TuneSettings, TuneTask, train_soft_prompt
    from valuedetect.taxonomy import categories

    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_split("training")
    arguments, labels = train.arguments[: args.arguments], np.asarray(train.labels[: args.arguments])
    rows: dict[str, dict] = {}
    for placement in args.placements.split(","):
        detector = PromptDetector(PromptConfig(model=args.model, template=args.template, soft_prompt_tokens=8,
                                               soft_prompt_placement=placement, batch_size=args.batch_size,
                                               dtype=args.dtype))
        lm = detector.lm()
        template = detector.config.prompt_template()
        verbalizer = template.verbalizer
        task = TuneTask(lambda i, k, t=template, d=detector: d.request(t, arguments[i], k), labels,
                        verbalizer.words(), [verbalizer.classes(c) for c in categories()])
        settings = TuneSettings(epochs=1, lr=0.03, batch_size=args.batch_size, negative_ratio=1.0,
                                max_steps=args.steps, seed=13)
        states = PrefixStates(2048 << 20) if placement != "before" else None
        initial = lm.soft_prompt.state()
        train_soft_prompt(lm, task, settings, states=states)  # fills the argument-state store
        lm.soft_prompt.load(initial)
        tokens, cpu, wall = lm.usage.processed_tokens, time.process_time(), time.monotonic()
        result = train_soft_prompt(lm, task, settings, states=states)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        rows[placement] = {"wall_seconds_per_step": round(wall / args.steps, 3),
                           "cpu_seconds_per_step": round(cpu / args.steps, 3),
                           "token_positions_per_step": (lm.usage.processed_tokens - tokens) // args.steps,
                           "loss": round(result.history[-1]["loss"], 4)}
        print(placement, rows[placement], flush=True)
        detector.close()
    if "after" in rows:
        for row in rows.values():
            row["cpu_ratio_to_after"] = round(row["cpu_seconds_per_step"] / rows["after"]["cpu_seconds_per_step"], 3)
    summary = {"model": args.model, "template": args.template, "dtype": args.dtype, "steps": args.steps,
               "pairs_per_step": args.batch_size, "threads": torch.get_num_threads(), "placements": rows,
               "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0))},
               "measured": time.strftime("%Y-%m-%d")}
    suffix = ("" if args.template == "bca" else f"-{args.template}") + \
        ("" if args.dtype == "float32" else f"-{args.dtype}")
    target = Path("benchmarks/results") / f"prompt_tuning_step-{args.model}{suffix}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
