"""One full epoch of prompt tuning on the whole training split, and whether it learned anything:
the epoch's mean training loss against the constant-answer loss of the same pairs (the loss of
answering the pairs' positive rate everywhere). Runs ``valuedetect train`` (resumable with
``--resume``) and reads its ``results.json``.

    python benchmarks/prompt_tuning_epoch.py --model smollm2 --placement after
    python benchmarks/prompt_tuning_epoch.py --model smollm2 --placement before   # the paper's

Writes ``benchmarks/results/prompt_tuning_epoch-<model>-<placement>.json`` (loss, constant loss,
steps, seconds, training tokens computed, the argument-state store's hits and misses).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--template", default="BCA")
    parser.add_argument("--placement", default="after", choices=["after", "end", "before"])
    parser.add_argument("--soft-prompts", default="shared", choices=["shared", "per-category"])
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--negative-ratio", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=200, help="validation arguments scored afterwards")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    name = f"{args.model}-{args.placement}-{args.soft_prompts}"
    output = Path("runs") / f"prompt-tuning-epoch-{name}"
    command = [sys.executable, "-m", "valuedetect.cli", "train", "--method", "prompt", "--model", args.model,
               "--template", args.template, "--output", str(output), "--limit", str(args.limit),
               "--no-predict-test",
               "--set", f"soft_prompt_tokens={args.tokens}", "--set", f"soft_prompt_placement={args.placement}",
               "--set", f"soft_prompts={args.soft_prompts}", "--set", f"negative_ratio={args.negative_ratio}",
               "--set", "epochs=1"]
    if args.resume:
        command.append("--resume")
    started = time.monotonic()
    subprocess.run(command, check=True)
    wall = time.monotonic() - started
    results = json.loads((output / "results.json").read_text())
    info = results.get("info", {})
    history = info.get("history", [{}])
    epoch = history[-1]
    summary = {
        "command": " ".join(command[1:]), "wall_seconds": round(wall, 1), "budget": info.get("budget"),
        "training_loss": epoch.get("loss"), "constant_answer_loss": epoch.get("constant_loss"),
        "learned": epoch.get("loss") is not None and epoch["loss"] < epoch.get("constant_loss", 0),
        "pairs": {"positives": epoch.get("positives"), "negatives": epoch.get("negatives")},
        "training_processed_tokens": info.get("training_processed_tokens"),
        "argument_states": epoch.get("argument_states"),
        "parameters": [info.get("parameters_trainable"), info.get("parameters_total")],
    }
    target = Path("benchmarks/results") / f"prompt_tuning_epoch-{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
