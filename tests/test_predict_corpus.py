"""valuedetect predict at corpus scale: IDs and kept columns in every format, Parquet in and out,
resume after Ctrl-C or kill -9 equal to an uninterrupted run, and clear errors for bad rows.

A TF-IDF detector trained on 300 arguments (a second) gives real, varied scores; the memory and
kill tests use the all-ones baseline, whose predictions cost nothing, so only the plumbing counts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.test_cli import assert_user_error, invoke

import valuedetect as vd
from valuedetect.detectors import make_detector
from valuedetect.detectors.baselines import AllOnesDetector, TfidfDetector
from valuedetect.predicting import parts_dir
from valuedetect.taxonomy import CATEGORY_NAMES

FORMATS = ("tsv", "csv", "jsonl", "parquet")


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory, training) -> Path:
    detector = make_detector("tfidf", {"min_df": 1})
    detector.fit(training.subset(range(300)), training.subset(range(300, 400)))
    return detector.save(tmp_path_factory.mktemp("model") / "tfidf")


@pytest.fixture(scope="module")
def all_ones(tmp_path_factory) -> Path:
    return AllOnesDetector().save(tmp_path_factory.mktemp("model") / "all-ones")


def posts(n: int = 7) -> pd.DataFrame:
    """A user's table: their own IDs, a text column named body, and other columns."""
    texts = ["We must protect forests and rivers.", "Taxes on the rich are fair, say the poor.",
             "Tradition and religion hold families together.", "Freedom of choice matters most.",
             "Money, wealth and power rule the world.", "Children must be safe from harm.",
             "Laws and rules keep the peace."]
    return pd.DataFrame({"post_id": [f"p{i:03d}" for i in range(n)], "body": [texts[i % 7] for i in range(n)],
                         "author": [f"user {i % 3}" for i in range(n)], "likes": list(range(n))})


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":  # the detected categories as 0/1 columns, as in the tables
        frame = pd.read_json(path, lines=True, dtype=False)
        for c in CATEGORY_NAMES:
            frame[c] = [int(c in detected) for detected in frame["detected"]]
        return frame
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                       quoting=csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL)


# ----------------------------------------------------------------------------- IDs and kept columns


@pytest.mark.parametrize("source_format", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("output_format", FORMATS)
def test_ids_survive_every_input_and_output_format(tfidf, tmp_path, source_format, output_format):
    frame = posts()
    source = write_input(frame, tmp_path / f"in.{source_format}")
    output = tmp_path / f"out.{output_format}"
    result = invoke("predict", "--model", tfidf, "--input", source, "--output", output, "--text-column", "body",
                    "--id-column", "post_id")
    assert result.exit_code == 0, (result.output, result.exception)
    got = read_output(output)
    id_name = "Argument ID" if output_format == "tsv" else "post_id"
    assert got[id_name].astype(str).tolist() == frame["post_id"].tolist()
    # The same decisions as the Python API gives for the same table.
    expected = vd.load(tfidf).predict(frame, text_column="body", id_column="post_id")
    decisions = got[list(CATEGORY_NAMES)].astype(int).to_numpy()
    np.testing.assert_array_equal(decisions, expected.to_numpy())


@pytest.mark.parametrize("output_format", ["csv", "jsonl", "parquet"])
def test_keep_columns_are_copied_in_order(tfidf, tmp_path, output_format):
    frame = posts()
    source = write_input(frame, tmp_path / "in.parquet")
    output = tmp_path / f"out.{output_format}"
    result = invoke("predict", "--model", tfidf, "--input", source, "--output", output, "--text-column", "body",
                    "--id-column", "post_id", "--keep-columns", "likes,author")
    assert result.exit_code == 0, (result.output, result.exception)
    got = read_output(output)
    assert list(got.columns[:3]) == ["post_id", "likes", "author"]
    assert got["author"].tolist() == frame["author"].tolist()
    assert got["likes"].astype(int).tolist() == frame["likes"].tolist()
    if output_format == "parquet":  # a Parquet input's column keeps its type
        import pyarrow.parquet as pq

        assert str(pq.read_schema(output).field("likes").type) == "int64"


def test_keep_columns_into_a_run_file_is_refused_before_any_work(tfidf, tmp_path):
    source = write_input(posts(), tmp_path / "in.csv")
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.tsv",
                             "--text-column", "body", "--keep-columns", "author"),
                      "official run file", ".csv, .jsonl or .parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_missing_kept_column_is_named(tfidf, tmp_path):
    source = write_input(posts(), tmp_path / "in.csv")
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.csv",
                             "--text-column", "body", "--keep-columns", "autor"),
                      f"{source}, line 2", "no column 'autor' to keep", "did you mean 'author'")


def test_without_an_id_column_the_texts_are_numbered(tfidf, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one text\n\nanother text\n", encoding="utf-8")
    output = tmp_path / "o.parquet"
    assert invoke("predict", "--model", tfidf, "--input", source, "--output", output).exit_code == 0
    assert pd.read_parquet(output)["Argument ID"].tolist() == ["text-1", "text-2"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("name", "content", "where", "fragments"), [
    ("in.csv", "post_id,body\np1,fine\np2,\n", "line 3", ("empty text", "column 'body'")),
    ("in.csv", "post_id,body\np1,fine\n,lost\n", "line 3", ("empty id", "column 'post_id'")),
    ("in.csv", "post_id,body\np1,fine\np1,again\n", "line 3", ("duplicate id 'p1'", "first seen on line 2")),
    ("in.jsonl", '{"post_id": "p1", "body": "fine"}\n{"post_id": "p2", "bdy": "typo"}\n', "line 2",
     ("no 'body' field", "'bdy'")),
])
def test_a_bad_row_is_named_by_file_line_and_column_before_any_work(tfidf, tmp_path, name, content, where,
                                                                      fragments):
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    output = tmp_path / "o.csv"
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", output,
                             "--text-column", "body", "--id-column", "post_id"),
                      f"{source}, {where}", *fragments)
    assert not output.exists() and not parts_dir(output).exists()


def test_a_bad_parquet_row_is_named_by_its_row(tfidf, tmp_path):
    frame = posts()
    frame.loc[4, "body"] = None
    source = write_input(frame, tmp_path / "in.parquet")
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.csv",
                             "--text-column", "body"), f"{source}, line 5", "empty text", "column 'body'")


def test_a_parquet_file_without_the_text_column_names_its_columns(tfidf, tmp_path):
    source = write_input(posts(), tmp_path / "in.parquet")
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.csv"),
                      str(source), "no 'text' column", "'body'", "--text-column")


def test_a_file_that_is_not_parquet_is_refused(tfidf, tmp_path):
    source = tmp_path / "in.parquet"
    source.write_text("text\nnot parquet\n", encoding="utf-8")
    for keep in ((), ("--keep-columns", "author")):
        assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.csv",
                                 *keep), str(source), "not a readable Parquet file")


# ----------------------------------------------------------------------------- resume


def interrupt_at(cls: type, at: int):
    """A ``_predict_proba`` that raises KeyboardInterrupt at its ``at``-th call (Ctrl-C mid-way)."""
    original, calls = cls._predict_proba, []

    def predict(detector, arguments):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return original(detector, arguments)

    return predict


@pytest.mark.parametrize("output_format", FORMATS)
def test_resume_after_ctrl_c_gives_the_same_bytes(tfidf, tmp_path, monkeypatch, output_format):
    frame = posts(23)
    source = write_input(frame, tmp_path / "in.csv")
    args = ["--model", tfidf, "--input", source, "--text-column", "body", "--id-column", "post_id",
            "--chunk-size", "5"] + ([] if output_format == "tsv" else ["--keep-columns", "author"])
    reference = tmp_path / f"reference.{output_format}"
    assert invoke("predict", *args, "--output", reference).exit_code == 0

    output = tmp_path / f"out.{output_format}"
    output.write_bytes(b"an older result")
    monkeypatch.setattr(TfidfDetector, "_predict_proba", interrupt_at(TfidfDetector, at=3))
    result = invoke("predict", *args, "--output", output)
    assert result.exit_code == 130
    assert "10 of 23 texts are labelled" in " ".join(result.stderr.split())
    assert output.read_bytes() == b"an older result"  # untouched until the end
    assert len(list(parts_dir(output).glob("part-*"))) == 2
    monkeypatch.undo()

    assert_user_error(invoke("predict", *args, "--output", output), "unfinished prediction", "--resume")
    result = invoke("predict", *args, "--output", output, "--resume")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "10 of them labelled before" in " ".join(result.stdout.split())
    assert output.read_bytes() == reference.read_bytes()
    assert not parts_dir(output).exists()


def test_resume_refuses_a_changed_input_or_chunk_size(tfidf, tmp_path, monkeypatch):
    source = write_input(posts(12), tmp_path / "in.csv")
    output = tmp_path / "out.csv"
    args = ["--model", tfidf, "--input", source, "--output", output, "--text-column", "body"]
    monkeypatch.setattr(TfidfDetector, "_predict_proba", interrupt_at(TfidfDetector, at=2))
    assert invoke("predict", *args, "--chunk-size", "5").exit_code == 130
    monkeypatch.undo()
    assert_user_error(invoke("predict", *args, "--chunk-size", "4", "--resume"), "cannot resume", "settings")
    write_input(posts(13), source)
    assert_user_error(invoke("predict", *args, "--chunk-size", "5", "--resume"), "cannot resume", "input")


def test_resume_without_anything_to_resume_starts_from_the_beginning(tfidf, tmp_path):
    source = write_input(posts(3), tmp_path / "in.csv")
    output = tmp_path / "out.csv"
    result = invoke("predict", "--model", tfidf, "--input", source, "--output", output, "--text-column", "body",
                    "--resume")
    assert result.exit_code == 0 and "nothing to resume" in result.stderr
    assert len(read_output(output)) == 3


KILLABLE = """
import sys, time
from valuedetect.detectors.baselines import AllOnesDetector
original = AllOnesDetector._predict_proba
def slow(self, arguments):
    time.sleep(0.02)  # slow enough to be killed mid-way, the plumbing is real
    return original(self, arguments)
AllOnesDetector._predict_proba = slow
from valuedetect.cli import main
sys.argv = ["valuedetect", *sys.argv[1:]]
main()
"""


def test_kill_9_then_resume_matches_an_uninterrupted_run(all_ones, tmp_path):
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(3000)], "text": [f"text number {i}" for i in range(3000)]})
    source = write_input(frame, tmp_path / "in.jsonl")
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def command(output: Path, *extra: str) -> list[str]:
        return [sys.executable, str(script), "predict", "--model", str(all_ones), "--input", str(source),
                "--output", str(output), "--chunk-size", "50", *extra]

    reference = tmp_path / "reference.csv"
    subprocess.run(command(reference), check=True, env=env, capture_output=True, timeout=300)
    output = tmp_path / "out.csv"
    process = subprocess.Popen(command(output), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = parts_dir(output)
    deadline = time.time() + 120
    while len(list(parts.glob("part-*"))) < 5 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(parts.glob("part-*")))
    assert 5 <= done < 60 and not output.exists()
    resumed = subprocess.run(command(output, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming:" in resumed.stderr
    assert output.read_bytes() == reference.read_bytes()
    assert not parts.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl", "killable.py", "out.csv", "reference.csv"]


# ----------------------------------------------------------------------------- bounded memory


MEASURE = """
import resource, sys
from pathlib import Path
from valuedetect.detectors.baselines import AllOnesDetector
from valuedetect.predicting import PredictSettings, predict_file
from valuedetect.records import Columns
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict_file(AllOnesDetector(), Path(sys.argv[1]), Path(sys.argv[2]),
             PredictSettings(Columns(id_column="id", keep_columns=("group",)), chunk_size=500))
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(source: Path, output: Path) -> tuple[int, int]:
    """Peak resident memory (KiB) of a fresh process before and after labelling ``source``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(source), str(output)], env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    before, after = done.stdout.split()
    return int(before), int(after)


def test_peak_memory_stays_flat_from_10k_to_100k_rows(tmp_path):
    peaks = {}
    for n in (10_000, 100_000):
        source = tmp_path / f"in-{n}.csv"
        with open(source, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "group"])
            for i in range(n):
                writer.writerow([f"doc-{i}", f"short text number {i} about freedom and safety", f"g{i % 10}"])
        output = tmp_path / f"out-{n}.jsonl"
        peaks[n] = _peak_kib(source, output)
        assert output.read_bytes().count(b"\n") == n
    growth = {n: after - before for n, (before, after) in peaks.items()}
    # Reading, labelling and writing everything at once grew the peak by 45 MB for 10k rows and
    # 460 MB for 100k (measured, all-ones detector); streaming grows it by ~2.5 MB for both.
    assert growth[100_000] < growth[10_000] + 4 * 1024, peaks


def test_predict_file_of_the_python_api_writes_parquet(tfidf, tmp_path):
    source = write_input(posts(), tmp_path / "in.csv")
    summary = vd.load(tfidf).predict_file(source, tmp_path / "o.parquet", text_column="body", id_column="post_id")
    assert summary.texts == 7 and summary.description == "a Parquet table"
    got = pd.read_parquet(tmp_path / "o.parquet")
    assert got["post_id"].tolist() == posts()["post_id"].tolist()
    assert got[[f"p({c})" for c in CATEGORY_NAMES]].to_numpy().max() <= 1.0
    assert json.dumps(got.dtypes.astype(str).to_dict())  # typed columns, not all text
    assert str(got["Achievement"].dtype) == "int8"
