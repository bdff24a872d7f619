"""A training run killed with SIGKILL mid-way and continued with --resume ends exactly where an
uninterrupted run ends: the command line, a real process, a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file
from tests.tiny_models import small_data_dir, tiny_bert


def _cmd(config: Path, output: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "valuedetect.cli", "train", "--config", str(config), "--output", str(output),
            "--data-dir", str(data), *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "model")
    data = small_data_dir(tmp_path / "data", training=400, validation=64)
    config = tmp_path / "tiny.toml"
    config.write_text(
        'method = "encoder"\npredict_test = false\n[detector]\n'
        f'model = "{model}"\nepochs = 3\nbatch_size = 8\ntrainable_layers = 1\ndropout = 0.1\n'
        'lr = 1e-3\nhead_lr = 1e-2\npatience = 0\nsave_dtype = "float32"\ncheckpoint_every = 5\n'
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    reference = subprocess.run(_cmd(config, tmp_path / "ref", data), capture_output=True, text=True, env=env,
                               timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "run"
    checkpoint = out / "checkpoint" / "checkpoint.pt"
    process = subprocess.Popen(_cmd(config, out, data), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let it train past the first checkpoint, so some work is lost and redone
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "detector.json").exists()

    resumed = subprocess.run(_cmd(config, out, data, "--resume"), capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    expected = load_file(str(tmp_path / "ref" / "trained-weights.safetensors"))
    got = load_file(str(out / "trained-weights.safetensors"))
    for key, value in expected.items():
        assert (got[key] - value).abs().max().item() < 1e-6, key
    assert (out / "validation-run.tsv").read_text() == (tmp_path / "ref" / "validation-run.tsv").read_text()
    # Its cost counts both processes that trained it, not only the one that finished.
    compute = json.loads((out / "results.json").read_text())["compute"]
    assert compute["train_processes"] == 2
    assert json.loads((tmp_path / "ref" / "results.json").read_text())["compute"]["train_processes"] == 1
