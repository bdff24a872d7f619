"""`accelerate launch` with 2 CPU processes (gloo) trains the same model as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file
from tests.tiny_models import small_data_dir, tiny_bert


def _train(cmd_prefix: list[str], config: Path, output: Path, data: Path) -> tuple[dict, dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [*cmd_prefix, "train", "--config", str(config), "--output", str(output), "--data-dir", str(data)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(output / "trained-weights.safetensors")), json.loads((output / "results.json").read_text())


def test_two_processes_match_one(tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "model", dropout=0.0)
    data = small_data_dir(tmp_path / "data", training=64, validation=32)
    config = tmp_path / "tiny.toml"
    # Batches of 8 split 4 + 4 across the processes; dropout off so both runs see the same
    # computation; float32 weights so the comparison is not blurred by rounding.
    # protocol "paper" trains on all 64 arguments, so every batch splits evenly (the dev slice would
    # leave a last batch of 5, and DDP averages uneven shards differently from one process).
    config.write_text(
        'method = "encoder"\npredict_test = false\nprotocol = "paper"\n[detector]\n'
        f'model = "{model}"\nepochs = 2\nbatch_size = 8\ntrainable_layers = 1\ndropout = 0.0\n'
        'lr = 1e-3\nhead_lr = 1e-2\npatience = 0\nsave_dtype = "float32"\nthresholds = "global"\n'
    )
    single, single_results = _train([sys.executable, "-m", "valuedetect.cli"], config, tmp_path / "one", data)
    # --multi_gpu is accelerate's torchrun launcher; on a machine without GPUs our
    # Accelerator(cpu=True) makes it N CPU processes talking over gloo.
    # `python -m accelerate.commands.launch` is `accelerate launch` without relying on PATH.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "valuedetect.cli"]
    double, double_results = _train(launch, config, tmp_path / "two", data)
    assert single_results["info"]["processes"] == 1
    assert double_results["info"]["processes"] == 2
    assert single.keys() == double.keys()
    for key in single:
        diff = (single[key] - double[key]).abs().max().item()
        assert diff < 1e-4, f"{key} differs by {diff}"
