"""The experiment runner: configs expand and validate up front, each run leaves a record, a
failed run does not stop the grid, and a killed experiment resumes without repeating a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.tiny_models import small_data_dir

from valuedetect.errors import ConfigError
from valuedetect.experiments.config import load_experiment
from valuedetect.experiments.records import RunRecord, read_records
from valuedetect.experiments.runner import run_experiment, run_states


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data_dir(tmp_path_factory.mktemp("experiment-data") / "data", training=80, validation=40)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _grid(tmp_path: Path, data_dir: Path, extra: str = "") -> Path:
    return _write(tmp_path / "grid.toml", f"""
name = "tiny"
results = "{tmp_path / 'results'}"

[defaults]
data_dir = "{data_dir}"
predict_test = false

[[run]]
name = "ones"
method = "all-ones"

[[run]]
name = "tfidf-{{training_per_category}}"
method = "tfidf"
[run.grid]
training_per_category = [3, 10]

[[run]]
name = "prior"
method = "random-prior"
{extra}
""")


def test_grid_expands_in_order_with_names_families_and_merged_settings(tmp_path: Path, data_dir: Path) -> None:
    experiment = load_experiment(_grid(tmp_path, data_dir))
    assert [r.name for r in experiment.runs] == ["ones", "tfidf-3", "tfidf-10", "prior"]
    assert [r.family for r in experiment.runs] == ["baseline"] * 4
    tfidf = experiment.runs[1]
    assert tfidf.settings["training_per_category"] == 3
    assert tfidf.settings["data_dir"] == str(data_dir)
    assert tfidf.settings["predict_test"] is False
    assert experiment.runs[1].hash != experiment.runs[2].hash
    # refit only adds a folder beside a run's figures: off, it is left out of the hash, so the
    # records made before the setting existed are not stale
    from valuedetect.config import stable_settings
    from valuedetect.experiments.records import spec_hash

    ones = experiment.runs[0]
    assert ones.settings["refit"] is False
    before = {k: v for k, v in ones.settings.items()
              if k not in ("refit", "refit_data", "task", "cross_fit_folds", "cross_fit_fold")}
    assert ones.hash == spec_hash({"task": "values", "settings": before})
    fold = {**ones.settings, "cross_fit_folds": 5, "cross_fit_fold": 0}  # set, a later key does count
    assert spec_hash({"task": "values", "settings": stable_settings(fold)}) != ones.hash


def test_base_config_file_and_dotted_grid_keys(tmp_path: Path) -> None:
    _write(tmp_path / "base.toml", 'method = "prompt"\n[detector]\ntemplate = "bca"\nbatch_size = 4\n')
    path = _write(tmp_path / "exp.toml", f"""
[[run]]
name = "p"
config = "{tmp_path / 'base.toml'}"
[run.detector]
soft_prompt_tokens = 4
[run.grid]
"detector.model" = ["smollm2", "qwen2.5-0.5b"]
""")
    runs = load_experiment(path).runs
    assert [r.name for r in runs] == ["p-smollm2", "p-qwen2.5-0.5b"]
    assert runs[1].settings["detector"] == {"template": "bca", "batch_size": 4, "soft_prompt_tokens": 4,
                                            "model": "qwen2.5-0.5b"}
    assert runs[0].family == "prompt-tuning"
    assert runs[1].model == "qwen2.5-0.5b"


@pytest.mark.parametrize(("body", "message"), [
    ('[[run]]\nname = "a"\nmethod = "tfidf"\nepochs = 3\n', "unknown key 'epochs'"),
    ('[[run]]\nname = "a"\nmethod = "tfidf"\n[run.detector]\nmax_featurs = 3\n',
     r"run 'a' \[detector\]: unknown key 'max_featurs'"),
    ('[[run]]\nname = "a"\nmethod = "nope"\n', "unknown method 'nope'"),
    ('[[run]]\nname = "a"\nmethod = "tfidf"\n[[run]]\nname = "a"\nmethod = "all-ones"\n', "two runs have this name"),
    ('[[run]]\nname = "a b"\nmethod = "tfidf"\n', "letters, digits"),
    ('[[run]]\nname = "a"\nmethod = "tfidf"\n[run.grid]\nsubset_seed = []\n', "non-empty list"),
    ('[[run]]\nname = "a"\nmethod = "tfidf"\nfamily = "magic"\n', "family must be one of"),
    ('nme = "x"\n[[run]]\nname = "a"\nmethod = "tfidf"\n', "unknown key 'nme'"),
    ('name = "x"\n', "no runs"),
    ('[[run]]\nmethod = "tfidf"\n', "needs a name"),
])
def test_bad_configs_are_refused_before_anything_runs(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path / "bad.toml", body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_experiment(path)
    assert str(path) in str(caught.value)


def test_runs_record_everything_and_a_second_run_does_nothing(tmp_path: Path, data_dir: Path) -> None:
    experiment = load_experiment(_grid(tmp_path, data_dir))
    lines: list[str] = []
    made = run_experiment(experiment, show=lines.append)
    assert [r.name for r in made] == ["ones", "tfidf-3", "tfidf-10", "prior"]
    assert all(r.done for r in made), [r.error for r in made]
    records = read_records(experiment.results)
    assert [r.name for r in records] == ["ones", "tfidf-3", "tfidf-10", "prior"]
    tfidf = records[1]
    assert tfidf.validation["n"] == 40 and 0 <= tfidf.validation["f1"] <= 1
    assert tfidf.validation["ci95"][0] <= tfidf.validation["f1"] <= tfidf.validation["ci95"][1]
    assert tfidf.training_arguments is not None and tfidf.training_arguments < 80
    assert "3 per category" in tfidf.training_subset
    assert tfidf.budget["training_per_category"] == 3
    assert tfidf.peak_rss_mib and tfidf.peak_rss_mib > 10
    assert tfidf.wall_seconds > 0 and tfidf.inference_seconds is not None
    assert tfidf.versions["valuedetect"] and tfidf.machine["cpus"] >= 1
    assert (experiment.results / "tfidf-3" / tfidf.outputs["validation_run"]).exists()
    assert (experiment.results / "tfidf-3" / "log.txt").exists()
    assert any("[2/4] tfidf-3" in line for line in lines)
    again = run_experiment(load_experiment(_grid(tmp_path, data_dir)), show=lines.append)
    assert again == []


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path: Path, data_dir: Path) -> None:
    extra = '\n[[run]]\nname = "broken"\nmethod = "prompt"\n[run.detector]\nmodel = "/no/such/model"\n' \
            '\n[[run]]\nname = "after"\nmethod = "all-ones"\n'
    experiment = load_experiment(_grid(tmp_path, data_dir, extra))
    made = run_experiment(experiment, only=["broken", "after"], show=lambda line: None)
    assert [(r.name, r.status) for r in made] == [("broken", "failed"), ("after", "done")]
    assert "/no/such/model" in made[0].error
    states = {s.spec.name: s.state for s in run_states(experiment)}
    assert states == {"ones": "pending", "tfidf-3": "pending", "tfidf-10": "pending", "prior": "pending",
                      "broken": "failed", "after": "done"}


def test_a_changed_run_is_stale_and_rerun_keeping_the_old_results(tmp_path: Path, data_dir: Path) -> None:
    experiment = load_experiment(_grid(tmp_path, data_dir))
    run_experiment(experiment, only=["prior"], show=lambda line: None)
    changed = _grid(tmp_path, data_dir).read_text().replace('method = "random-prior"',
                                                            'method = "random-prior"\n[run.detector]\nseed = 7')
    experiment = load_experiment(_write(tmp_path / "grid.toml", changed))
    assert {s.spec.name: s.state for s in run_states(experiment)}["prior"] == "stale"
    made = run_experiment(experiment, only=["prior"], show=lambda line: None)
    assert made[0].done and made[0].detector_config["seed"] == 7
    (aside,) = experiment.results.glob("prior.old-*")
    assert (aside / "record.json").exists()
    assert [r.name for r in read_records(experiment.results)].count("prior") == 1  # the aside copy is not read


def test_unknown_only_name_is_an_error(tmp_path: Path, data_dir: Path) -> None:
    from valuedetect.errors import InputError

    with pytest.raises(InputError, match="no run named 'nope'"):
        run_experiment(load_experiment(_grid(tmp_path, data_dir)), only=["nope"])


def test_killed_experiment_resumes_without_repeating_a_finished_run(tmp_path: Path, data_dir: Path) -> None:
    config = _grid(tmp_path, data_dir)
    results = tmp_path / "results"
    command = [sys.executable, "-m", "valuedetect.cli", "experiment", "run", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (results / "ones" / "record.json").exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "rerun the same command to resume" in output
    first = json.loads((results / "ones" / "record.json").read_text())
    done_before = {r.name for r in read_records(results)}
    assert "ones" in done_before and len(done_before) < 4

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert RunRecord.load(results / "ones").started == first["started"]  # not run again
    assert f"{4 - len(done_before)} runs done now" in rerun.stdout
    assert all(r.done for r in read_records(results))
    status = subprocess.run([*command[:4], "status", str(config), "--json"], capture_output=True, text=True)
    assert [row["state"] for row in json.loads(status.stdout)] == ["done"] * 4
    report = subprocess.run([*command[:3], "report", str(results), "--resamples", "200"], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (results / "report" / "report.md").exists() and (results / "report" / "report.html").exists()


def test_table_grid_values_merge_into_the_detector_and_names_read_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "exp.toml", """
[[run]]
name = "enc-{detector.model}-{detector.epochs}"
method = "encoder"
[run.detector]
epochs = 4
heads = "multiple"
[run.grid]
detector = [{ model = "minilm" }, { model = "mpnet", epochs = 2 }]
""")
    runs = load_experiment(path).runs
    assert [r.name for r in runs] == ["enc-minilm-4", "enc-mpnet-2"]
    assert runs[1].settings["detector"] == {"epochs": 2, "heads": "multiple", "model": "mpnet"}
    bad = _write(tmp_path / "bad.toml", '[[run]]\nname = "x-{detector.nope}"\nmethod = "tfidf"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: run 'x-\{detector.nope\}'.*no setting 'detector.nope'"):
        load_experiment(bad)


def test_a_run_killed_after_training_gets_its_record_without_training_again(tmp_path: Path, data_dir: Path) -> None:
    experiment = load_experiment(_grid(tmp_path, data_dir))
    (first,) = run_experiment(experiment, only=["tfidf-3"], show=lambda line: None)
    folder = experiment.results / "tfidf-3"
    trained_at = (folder / "run" / "detector.json").stat().st_mtime_ns
    (folder / "record.json").unlink()  # as if killed while timing inference
    lines: list[str] = []
    (again,) = run_experiment(experiment, only=["tfidf-3"], show=lines.append)
    assert again.done and again.validation["f1"] == first.validation["f1"]
    assert (folder / "run" / "detector.json").stat().st_mtime_ns == trained_at
    assert any("training had finished" in line for line in lines)


def test_a_killed_run_whose_settings_changed_is_stale_not_resumed(tmp_path: Path, data_dir: Path) -> None:
    experiment = load_experiment(_grid(tmp_path, data_dir))
    folder = experiment.results / "prior"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"hash": "0123456789abcdef"}))
    assert {s.spec.name: s.state for s in run_states(experiment)}["prior"] == "stale"


def test_two_runners_cannot_share_a_results_folder(tmp_path: Path, data_dir: Path) -> None:
    import fcntl

    from valuedetect.errors import InputError

    experiment = load_experiment(_grid(tmp_path, data_dir))
    experiment.results.mkdir(parents=True)
    with open(experiment.results / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another `valuedetect experiment run`"):
            run_experiment(experiment, show=lambda line: None)


def test_encoder_runs_of_one_grid_share_their_frozen_states(tmp_path: Path, data_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tiny_models import tiny_bert

    from valuedetect.encoder.state_cache import ENVIRONMENT_VARIABLE

    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    model = tiny_bert(tmp_path / "tiny-bert")
    grid = _write(tmp_path / "grid.toml", f"""
name = "tiny-encoders"
results = "{tmp_path / 'results'}"
[defaults]
data_dir = "{data_dir}"
predict_test = false
[[run]]
name = "enc-{{detector.heads}}"
method = "encoder"
[run.detector]
model = "{model}"
epochs = 1
trainable_layers = 1
[run.grid]
"detector.heads" = ["single", "multiple"]
""")
    made = run_experiment(load_experiment(grid), show=lambda line: None)
    assert [r.name for r in made] == ["enc-single", "enc-multiple"] and all(r.done for r in made)
    results = tmp_path / "results"
    assert len(list((results / ".frozen-states").glob("*.pt"))) == 2
    first = (results / "enc-single" / "log.txt").read_text()
    second = (results / "enc-multiple" / "log.txt").read_text()
    assert "read from" not in first and second.count("read from") == 2
    assert [r.name for r in read_records(results)] == ["enc-single", "enc-multiple"]


def test_seeds_repeat_each_configuration_as_named_runs_of_one_group(tmp_path: Path, data_dir: Path) -> None:
    path = _grid(tmp_path, data_dir, extra="seeds = [7, 8]")
    runs = load_experiment(path).runs
    assert [r.name for r in runs] == ["ones", "tfidf-3", "tfidf-10", "prior-s7", "prior-s8"]
    seeded = runs[3:]
    assert {r.group for r in seeded} == {"prior"} and [r.seed for r in seeded] == [7, 8]
    assert [r.settings["detector"]["seed"] for r in seeded] == [7, 8]
    assert seeded[0].hash != seeded[1].hash
    text = path.read_text().replace("[defaults]\n", "[defaults]\nseeds = [1, 2, 3]\n").replace("seeds = [7, 8]", "")
    everywhere = load_experiment(_write(tmp_path / "all.toml", text)).runs
    assert len(everywhere) == 12 and everywhere[0].name == "ones-s1" and everywhere[0].group == "ones"
    for bad in ("seeds = 3", "seeds = []", "seeds = [1, 1]", 'seeds = ["a"]'):
        with pytest.raises(ConfigError, match="seeds"):
            load_experiment(_write(tmp_path / "bad.toml", path.read_text().replace("seeds = [7, 8]", bad)))


def test_a_worker_dies_with_its_runner_even_when_the_runner_is_killed(tmp_path: Path) -> None:
    """The runner starts workers in their own session (so that Ctrl-C reaches them only through
    the runner); a runner killed with SIGKILL must not leave its worker training on."""
    pid_file = tmp_path / "worker.pid"
    runner = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
from valuedetect.experiments.runner import _die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                         preexec_fn=_die_with_parent)
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(120)
"""])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its runner")


def test_a_rerun_never_starts_beside_a_live_worker(tmp_path: Path, data_dir: Path) -> None:
    from valuedetect.errors import InputError
    from valuedetect.experiments.runner import WORKER_LOCK

    experiment = load_experiment(_grid(tmp_path, data_dir))
    folder = experiment.results / "ones"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, sys, time
handle = open({str(folder / WORKER_LOCK)!r}, "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write("4242"); handle.flush()
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=r"a worker \(pid 4242\) is still running this run"):
            run_experiment(experiment, only=["ones"], show=lambda line: None)
        assert not (folder / "record.json").exists()
    finally:
        holder.kill()
        holder.wait()
    (record,) = run_experiment(experiment, only=["ones"], show=lambda line: None)
    assert record.done


def test_a_run_refitted_on_training_is_recorded_with_the_refits_held_out_score(tmp_path: Path,
                                                                              data_dir: Path) -> None:
    extra = '\n[[run]]\nname = "refitted"\nmethod = "tfidf"\nrefit = true\nrefit_data = "training"\n'
    experiment = load_experiment(_grid(tmp_path, data_dir, extra))
    (record,) = run_experiment(experiment, only=["refitted"], show=lambda line: None)
    assert record.done and record.outputs["validation_run"] == "run/refit/validation-run.tsv"
    folder = experiment.results / "refitted"
    refit = json.loads((folder / "run" / "refit" / "refit.json").read_text())
    from valuedetect.evaluation import score_run_file

    rescored = score_run_file(folder / record.outputs["validation_run"], data_dir / "labels-validation.tsv")
    assert record.validation["f1"] == pytest.approx(rescored.f1)
    first_run = score_run_file(folder / "run" / "validation-run.tsv", data_dir / "labels-validation.tsv")
    assert any(note.endswith(f"scored validation F1 {first_run.f1:.4f}") for note in record.notes)
    assert record.training_arguments == 80  # all of training: the dev slice added back
    first = json.loads((folder / "run" / "results.json").read_text())
    assert record.compute["train_cpu_seconds"] == pytest.approx(
        first["compute"]["train_cpu_seconds"] + refit["compute"]["train_cpu_seconds"], abs=0.11)
    assert record.compute["validation_cpu_seconds"] == refit["validation_cpu_seconds"]
    assert any("refit on all of training" in note for note in record.notes)


def test_a_run_killed_inside_its_refit_finishes_the_refit_and_records_its_score(tmp_path: Path,
                                                                               data_dir: Path) -> None:
    extra = '\n[[run]]\nname = "refitted"\nmethod = "tfidf"\nrefit = true\nrefit_data = "training"\n'
    experiment = load_experiment(_grid(tmp_path, data_dir, extra))
    (first,) = run_experiment(experiment, only=["refitted"], show=lambda line: None)
    folder = experiment.results / "refitted"
    (folder / "record.json").unlink()  # killed inside the refit: no refit.json, no record
    (folder / "run" / "refit" / "refit.json").unlink()
    (again,) = run_experiment(experiment, only=["refitted"], show=lambda line: None)
    assert again.done and (folder / "run" / "refit" / "refit.json").exists()
    assert again.outputs["validation_run"] == "run/refit/validation-run.tsv"
    assert again.validation["f1"] == pytest.approx(first.validation["f1"])
