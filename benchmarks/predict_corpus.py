"""Labelling a corpus of N short texts: the streaming `valuedetect predict` and its Ray engine,
against the same detector called in one process on the whole list.

Three runs, one after the other on the same machine and the same CSV (an `id` and a `text`
column; validation premises, cycled), each in a process of its own, timed from start to end
(loading the detector and, for Ray, starting the local cluster included):

- `one-process`: `detector.predict_proba(all texts)` after reading the CSV with pandas: what a
  user writes by hand; it holds every text and every score in memory at once;
- `local`: `valuedetect predict --input texts.csv --output out.parquet` (chunks of 1000, resumable);
- `ray`: the same command with `--engine ray` (a local Ray cluster started for the run, a pool of
  `--ray-actors` actors of `--ray-cpus-per-actor` CPUs each).

Peak memory is the largest sum of the resident memory of the process and all its descendants
(Ray's raylet, workers and actors included), sampled every 0.2 s from /proc (Linux).

    python benchmarks/predict_corpus.py                  # 100,000 texts, the shipped MiniLM detector
    python benchmarks/predict_corpus.py --rows 500       # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "predict_corpus.json"
PAGE = os.sysconf("SC_PAGE_SIZE")

ONE_PROCESS = """
import sys, pandas as pd, numpy as np
import valuedetect as vd
from valuedetect.data import Argument
det = vd.load(sys.argv[2] or None)
frame = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
arguments = [Argument(id=i, premise=t) for i, t in zip(frame["id"], frame["text"])]
scores = det.detector.predict_proba(arguments)
decisions = det.detector.decide(scores)
print(int(decisions.sum()), len(scores))
"""


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_rss_mib(root: int) -> float:
    tree, total, stack = children(), 0, [root]
    while stack:
        pid = stack.pop()
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        stack += tree.get(pid, [])
    return total / 2**20


def measure(name: str, command: list[str], texts: int, timeout: float) -> dict:
    env = dict(os.environ, RAY_DEDUP_LOGS="0")
    with tempfile.TemporaryFile() as log:  # not a pipe: a chatty process must not block on a full one
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mib(process.pid))
            if time.perf_counter() - start > timeout:
                process.kill()
                raise SystemExit(f"{name} ran past {timeout} s")
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{name} failed ({process.returncode}):\n{output[-3000:]}")
    result = {"seconds": round(seconds, 2), "texts_per_second": round(texts / seconds, 1),
              "peak_memory_mib": round(peak, 1), "command": " ".join(command)}
    print(f"{name:12s} {result['seconds']:8.1f} s  {result['texts_per_second']:8.1f} texts/s  "
          f"peak {result['peak_memory_mib']:7.1f} MiB", flush=True)
    return result


def write_texts(path: Path, rows: int) -> None:
    from valuedetect.data import load_split

    premises = [a.premise for a in load_split("validation").arguments]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([f"t{i}", premises[i % len(premises)]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="texts to label (default 100,000)")
    parser.add_argument("--model", default="", help="a saved detector folder or shipped name (default: shipped)")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--ray-cpus-per-actor", type=float, default=0.5,
                        help="CPUs per actor (2 actors of 0.5 leave a CPU's share for reading on 2 cores)")
    parser.add_argument("--runs", default="one-process,local,ray", help="which runs, comma-separated")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "valuedetect.cli", "predict"]
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="valuedetect-bench-") as tmp:
        source = Path(tmp) / "texts.csv"
        write_texts(source, args.rows)
        commands = {
            "one-process": [sys.executable, "-c", ONE_PROCESS, str(source), args.model],
            "local": [*cli, "--input", str(source), "--output", f"{tmp}/local.parquet", "--id-column", "id", *model],
            "ray": [*cli, "--input", str(source), "--output", f"{tmp}/ray.parquet", "--id-column", "id", *model,
                    "--engine", "ray", "--ray-actors", str(args.ray_actors),
                    "--ray-cpus-per-actor", str(args.ray_cpus_per_actor)],
        }
        runs = {name: measure(name, commands[name], args.rows, args.timeout) for name in args.runs.split(",")}
        if {"local", "ray"} <= set(runs):
            import pandas as pd

            from valuedetect.taxonomy import CATEGORY_NAMES

            local, ray = pd.read_parquet(f"{tmp}/local.parquet"), pd.read_parquet(f"{tmp}/ray.parquet")
            probabilities = [f"p({c})" for c in CATEGORY_NAMES]
            # An encoder's float32 sums differ in the last bits with the batch (padding) and thread count.
            agreement = {"same_ids_in_order": bool(local["id"].equals(ray["id"])),
                         "decisions_differing": int((local[list(CATEGORY_NAMES)] != ray[list(CATEGORY_NAMES)])
                                                    .to_numpy().sum()),
                         "max_probability_difference": float((local[probabilities] - ray[probabilities])
                                                             .abs().to_numpy().max())}
            print(f"ray against local: {agreement}")
            runs["ray"]["against_local"] = agreement
    baseline = runs.get("one-process", {}).get("texts_per_second")
    for run in runs.values():
        if baseline:
            run["speed_vs_one_process"] = round(run["texts_per_second"] / baseline, 2)
    load = os.getloadavg()
    report = {
        "benchmark": "predict_corpus", "texts": args.rows, "model": args.model or "shipped (minilm-default)",
        "input": "CSV, id and text columns, validation premises cycled", "runs": runs,
        "ray": {"actors": args.ray_actors, "cpus_per_actor": args.ray_cpus_per_actor},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": [round(x, 2) for x in load]},
        "timing": "wall seconds of each process, start to end (model load and Ray start included)",
        "memory": "peak of the summed resident memory of the process and its descendants, sampled every 0.2 s",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
