"""The command line end to end: train, evaluate, compare, data, predict, and bad input.

One TF-IDF detector is trained through the CLI for the whole module and every other command
runs against it. To keep the suite fast it trains on a copy of the shipped data whose training
split holds the first 1000 arguments (validation and test are complete): about 0.5 s instead of
3 s, and still clearly better than the all-ones baseline. The full training set is covered by
test_baselines.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from valuedetect.cli import app
from valuedetect.data import read_labels, write_run
from valuedetect.taxonomy import CATEGORY_NAMES

runner = CliRunner()
RUN_HEADER = "\t".join(("Argument ID", *CATEGORY_NAMES))


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str, after_progress: bool = False) -> str:
    """Exit code 2, one line on stderr naming what is wrong, no traceback anywhere.

    ``after_progress``: the error comes after a progress bar, whose line may precede it.
    """
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if after_progress:
        lines = [line for line in lines if not line.startswith("predicting ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# All of training: under the held-out protocol a 1000-argument cut leaves thresholds 150 dev arguments
TRAINING_ARGUMENTS = 5393


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, data_dir) -> Path:
    folder = tmp_path_factory.mktemp("data")
    for name in ("arguments-training.tsv", "labels-training.tsv"):
        lines = (data_dir / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / name).write_text("".join(lines[: TRAINING_ARGUMENTS + 1]), encoding="utf-8")
    for name in ("arguments-validation.tsv", "labels-validation.tsv", "arguments-test.tsv"):
        (folder / name).write_bytes((data_dir / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data) -> Path:
    output = tmp_path_factory.mktemp("cli") / "tfidf"
    result = invoke("train", "--method", "tfidf", "--output", output, "--data-dir", small_data)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "validation (1896 arguments, held-out)" in result.stdout
    assert "method tfidf" in result.stdout
    printed = " ".join(result.stdout.split())  # rich wraps long lines
    assert "protocol: held-out" in printed and "held-out validation F1" in printed
    return output


@pytest.fixture(scope="module")
def all_ones_run(tmp_path_factory, validation) -> Path:
    path = tmp_path_factory.mktemp("runs") / "all-ones.tsv"
    write_run(path, validation.ids, np.ones((len(validation), 20), dtype=np.int8))
    return path


# ----------------------------------------------------------------------------- train


def test_train_writes_the_detector_runs_and_results(trained, small_data, validation, test_split):
    for name in ("detector.json", "tfidf.safetensors", "tfidf-vocabulary.json", "validation-run.tsv",
                 "validation-scores.npy", "test-run.tsv", "results.json"):
        assert (trained / name).is_file(), name
    assert not (trained / "pipeline.joblib").exists()  # no pickle
    results = json.loads((trained / "results.json").read_text(encoding="utf-8"))
    assert results["method"] == "tfidf" and results["split"] == "validation"
    assert results["config"]["data_dir"] == str(small_data)
    assert results["validation"]["f1"] > 0.32
    assert {"versions", "train_seconds", "thresholds", "detector_config"} <= set(results)
    ids, _ = read_labels(trained / "validation-run.tsv")
    assert ids == validation.ids
    ids, _ = read_labels(trained / "test-run.tsv")
    assert ids == test_split.ids
    assert np.load(trained / "validation-scores.npy").shape == (1896, 20)
    # The protocol: a dev slice of training chose the thresholds; validation was only scored.
    protocol = results["protocol"]
    assert protocol["name"] == "heldout" and not protocol["optimistic"] and results["validation_held_out"]
    dev_ids, _ = read_labels(trained / "dev-run.tsv")
    training_ids = [line.split("\t")[0] for line in (small_data / "labels-training.tsv").read_text().splitlines()[1:]]
    assert set(dev_ids) < set(training_ids) and not set(dev_ids) & set(validation.ids)
    assert protocol["dev_arguments"] == len(dev_ids) == results["dev"]["n"]
    assert results["training_arguments"] + len(dev_ids) == len(training_ids)


def test_train_into_a_folder_holding_a_detector_exits_2_and_touches_nothing(trained):
    before = snapshot(trained)
    result = invoke("train", "--method", "tfidf", "--output", trained)
    assert_user_error(result, str(trained), "already holds a trained detector")
    assert snapshot(trained) == before
    result = invoke("train", "--method", "all-ones", "--output", trained)
    assert_user_error(result, str(trained))
    assert snapshot(trained) == before


def test_train_needs_exactly_one_of_config_and_method(tmp_path):
    assert_user_error(invoke("train", "--output", tmp_path / "x"), "--config", "--method")
    assert_user_error(invoke("train", "--method", "tfidf", "--config", tmp_path / "c.toml",
                             "--output", tmp_path / "x"), "--config")
    assert not (tmp_path / "x").exists()


def test_train_with_a_bad_config_exits_2(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('methd = "tfidf"\n', encoding="utf-8")
    assert_user_error(invoke("train", "--config", config, "--output", tmp_path / "x"),
                      str(config), "'methd'", "'method'")
    assert_user_error(invoke("train", "--method", "bert", "--output", tmp_path / "x"), "unknown method 'bert'")
    assert not (tmp_path / "x").exists()


def test_error_messages_keep_square_brackets(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('method = "tfidf"\n[detector]\nngram_maxx = 3\n', encoding="utf-8")
    assert_user_error(invoke("train", "--config", config, "--output", tmp_path / "x"),
                      "[detector]", "'ngram_maxx'", "'ngram_max'")
    folder = tmp_path / "results [old]"
    folder.mkdir()
    run = folder / "run.tsv"
    run.write_text("not a run\n", encoding="utf-8")
    assert_user_error(invoke("evaluate", "--run", run, "--labels", run), str(run))


# ----------------------------------------------------------------------------- evaluate and compare


def test_evaluate_json(trained, data_dir):
    result = invoke("evaluate", "--run", trained / "validation-run.tsv",
                    "--labels", data_dir / "labels-validation.tsv", "--json", "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"f1", "precision", "recall", "mean_f1", "per_category", "ci95"} <= set(scores)
    assert list(scores["per_category"]) == list(CATEGORY_NAMES)
    results = json.loads((trained / "results.json").read_text(encoding="utf-8"))
    assert scores["f1"] == pytest.approx(results["validation"]["f1"])
    assert scores["f1"] > 0.32
    low, high = scores["ci95"]
    assert low < scores["f1"] < high
    p, r = scores["precision"], scores["recall"]
    assert scores["f1"] == pytest.approx(2 * p * r / (p + r))


def test_evaluate_the_all_ones_run_gives_the_test_vector(all_ones_run, data_dir):
    result = invoke("evaluate", "--run", all_ones_run, "--labels", data_dir / "labels-validation.tsv",
                    "--json", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert (round(scores["f1"], 5), round(scores["precision"], 5), scores["recall"]) == (0.28722, 0.16770, 1.0)
    assert scores["ci95"] is None


def test_evaluate_prints_a_table(all_ones_run, data_dir):
    result = invoke("evaluate", "--run", all_ones_run, "--labels", data_dir / "labels-validation.tsv",
                    "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    assert "0.287" in result.stdout and "0.168" in result.stdout
    assert "not official" in result.stdout
    assert "Hedonism" in result.stdout


def test_compare(trained, all_ones_run, data_dir):
    labels = data_dir / "labels-validation.tsv"
    result = invoke("compare", trained / "validation-run.tsv", all_ones_run, "--labels", labels,
                    "--resamples", "300", "--json")
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    assert comparison["f1_b"] == pytest.approx(0.2872241920549244)
    assert comparison["difference"] > 0.05
    assert comparison["p_value"] < 0.01
    assert comparison["significant_at_0.05"] is True
    same = invoke("compare", all_ones_run, all_ones_run, "--labels", labels, "--resamples", "200")
    assert same.exit_code == 0, same.output
    text = " ".join(same.stdout.split())  # rich wraps long lines at 80 columns here
    assert "not significant" in text
    assert "p = 1.0000" in text


def test_evaluate_bad_run_file_exits_2(tmp_path, data_dir):
    run = tmp_path / "run.tsv"
    run.write_text(RUN_HEADER + "\nA01001\t" + "\t".join(["0"] * 19 + ["2"]) + "\n", encoding="utf-8")
    assert_user_error(invoke("evaluate", "--run", run, "--labels", data_dir / "labels-validation.tsv"),
                      str(run), "line 2", "not 0 or 1")
    assert_user_error(invoke("evaluate", "--run", tmp_path / "missing.tsv",
                             "--labels", data_dir / "labels-validation.tsv"), "missing.tsv", "no such file")
    # A run for another split: IDs the labels lack.
    assert_user_error(invoke("evaluate", "--run", data_dir / "labels-training.tsv",
                             "--labels", data_dir / "labels-validation.tsv"), "labels-training.tsv")


# ----------------------------------------------------------------------------- data


def test_data_shows_the_splits():
    result = invoke("data")
    assert result.exit_code == 0, result.output
    for text in ("training (5393)", "validation (1896)", "test (1576)", "no labels", "CC BY-SA 4.0"):
        assert text in result.stdout, text


def test_data_with_a_missing_folder_exits_2(tmp_path):
    assert_user_error(invoke("data", "--data-dir", tmp_path / "nowhere"), "nowhere")


# ----------------------------------------------------------------------------- predict


def test_predict_writes_an_official_run_file(trained, data_dir, test_split, tmp_path):
    output = tmp_path / "out" / "RUN.tsv"
    result = invoke("predict", "--model", trained, "--input", data_dir / "arguments-test.tsv", "--output", output)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines[0] == RUN_HEADER
    assert lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert len(rows) == 1576
    assert [r[0] for r in rows] == test_split.ids
    assert all(len(r) == 21 and set(r[1:]) <= {"0", "1"} for r in rows)
    assert any("1" in r[1:] for r in rows)
    # The same detector and thresholds as the test run written by train.
    assert output.read_bytes() == (trained / "test-run.tsv").read_bytes()


def test_predict_texts_on_the_command_line(trained):
    result = invoke("predict", "--model", trained, "We must stop polluting rivers because fish and people die.",
                    "Taxes on the rich are fair")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "text-1" in result.stdout and "text-2" in result.stdout
    assert "probability" in result.stdout


def test_predict_texts_with_square_brackets(trained):
    result = invoke("predict", "--model", trained, "a text with [/] in it", "see [red]this[/red]")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "[/]" in result.stdout and "[red]this[/red]" in result.stdout


def test_predict_free_text_to_jsonl(trained, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("Protect the forests.\n\nEveryone deserves equal rights.\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    result = invoke("predict", "--model", trained, "--input", source, "--output", output)
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["text-1", "text-2"]
    for r in records:
        assert list(r["probabilities"]) == list(CATEGORY_NAMES)
        assert set(r["detected"]) <= set(CATEGORY_NAMES)


def test_predict_bad_input_exits_2_with_one_line(trained, tmp_path):
    bad = tmp_path / "arguments.tsv"
    bad.write_text("Argument ID\tConclusion\tStance\tPremise\nA1\tWe should\tagainst\tbecause\n"
                   "A2\tWe should\tpro\tbecause\n", encoding="utf-8")
    output = tmp_path / "run.tsv"
    assert_user_error(invoke("predict", "--model", trained, "--input", bad, "--output", output),
                      str(bad), "line 3", "unknown stance 'pro'")
    assert not output.exists()
    broken = tmp_path / "texts.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    assert_user_error(invoke("predict", "--model", trained, "--input", broken), str(broken), "line 2")
    assert_user_error(invoke("predict", "--model", trained, "--input", tmp_path / "nope.tsv"), "nope.tsv")


def test_predict_keeps_an_existing_output_when_the_input_is_bad(trained, tmp_path):
    output = tmp_path / "run.tsv"
    output.write_text("precious\n", encoding="utf-8")
    bad = tmp_path / "in.csv"
    bad.write_text("text\n\"never closed\n", encoding="utf-8")
    assert_user_error(invoke("predict", "--model", trained, "--input", bad, "--output", output), str(bad))
    assert output.read_text(encoding="utf-8") == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "run.tsv"]


def test_predict_usage_errors_exit_2(trained, tmp_path, data_dir):
    assert_user_error(invoke("predict", "--model", tmp_path / "no-model", "text"), "no-model")
    assert_user_error(invoke("predict", "--model", trained, "--input", data_dir / "arguments-test.tsv", "text"))
    assert_user_error(invoke("predict", "--model", trained))
    assert_user_error(invoke("predict", "--model", trained, "   "), "empty")
    folder = tmp_path / "out.tsv"
    folder.mkdir()
    # The output is only checked after predicting (see the report): a progress line comes first.
    assert_user_error(invoke("predict", "--model", trained, "hello", "--output", folder), str(folder), "directory",
                      after_progress=True)
