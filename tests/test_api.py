"""The Python API (issue 16, item 1): ``import valuedetect as vd``; load, predict on every input
type with the index kept, train, evaluate, save_pretrained / from_pretrained.

A TF-IDF detector fitted on 300 training arguments stands in for a real model: its scores vary
by text, so a mix-up of rows or columns shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.test_cli import invoke

import valuedetect as vd
from valuedetect.detectors import make_detector
from valuedetect.errors import ConfigError, InputError
from valuedetect.taxonomy import CATEGORY_NAMES

TEXTS = ["We must protect forests and rivers from pollution.", "Tradition and religion hold families together."]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, training) -> Path:
    detector = make_detector("tfidf", {"min_df": 1})
    detector.fit(training.subset(range(300)), training.subset(range(300, 400)))
    return detector.save(tmp_path_factory.mktemp("model") / "tfidf")


@pytest.fixture(scope="module")
def det(saved) -> vd.ValueDetector:
    return vd.load(saved)


def test_importing_valuedetect_loads_neither_torch_nor_pandas():
    code = "import sys, valuedetect as vd; vd.__version__; print('torch' in sys.modules, 'pandas' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert {"load", "train", "evaluate", "ValueDetector", "ValueClassifier", "Argument"} <= set(dir(vd))


def test_predict_proba_has_the_category_columns_and_matches_the_detector(det):
    scores = det.predict_proba(TEXTS)
    assert list(scores.columns) == list(CATEGORY_NAMES)
    assert list(scores.index) == [0, 1]
    raw = det.detector.predict_proba([vd.Argument(id=f"text-{i + 1}", premise=t) for i, t in enumerate(TEXTS)])
    np.testing.assert_array_equal(scores.to_numpy(), raw)
    assert not np.allclose(scores.iloc[0], scores.iloc[1])  # two texts, two different rows


def test_predict_applies_the_detectors_thresholds(det):
    scores, decisions = det.predict_proba(TEXTS), det.predict(TEXTS)
    assert decisions.dtypes.unique().tolist() == [np.dtype("int8")]
    np.testing.assert_array_equal(decisions.to_numpy(), (scores.to_numpy() >= det.thresholds.to_numpy()))
    np.testing.assert_array_equal(det.predict(TEXTS, threshold=0.0).to_numpy(), 1)


def test_every_input_type_gives_the_same_scores_with_its_own_index(det):
    expected = det.predict_proba(TEXTS).to_numpy()
    frame = pd.DataFrame({"body": TEXTS, "doc": ["d1", "d2"]}, index=pd.Index([10, 20], name="row"))
    cases = {
        "list": (TEXTS, [0, 1]),
        "tuple": (tuple(TEXTS), [0, 1]),
        "array": (np.array(TEXTS, dtype=object), [0, 1]),
        "series": (pd.Series(TEXTS, index=["a", "b"]), ["a", "b"]),
        "dicts": ([{"text": t} for t in TEXTS], [0, 1]),
        "frame": (pd.DataFrame({"text": TEXTS}, index=[5, 7]), [5, 7]),
    }
    for name, (x, index) in cases.items():
        got = det.predict_proba(x)
        assert list(got.index) == index, name
        np.testing.assert_array_equal(got.to_numpy(), expected, err_msg=name)
    got = det.predict_proba(frame, text_column="body")
    assert list(got.index) == [10, 20] and got.index.name == "row"
    got = det.predict_proba(frame, text_column="body", id_column="doc")
    assert list(got.index) == ["d1", "d2"] and got.index.name == "doc"
    np.testing.assert_array_equal(got.to_numpy(), expected)
    one = det.predict_proba(TEXTS[0])
    assert one.shape == (1, 20)
    np.testing.assert_array_equal(one.to_numpy()[0], expected[0])


def test_arguments_splits_and_argument_columns(det, validation):
    arguments = validation.arguments[:4]
    by_arguments = det.predict_proba(arguments)
    assert list(by_arguments.index) == [a.id for a in arguments] and by_arguments.index.name == "Argument ID"
    by_split = det.predict_proba(validation.subset(range(4)))
    pd.testing.assert_frame_equal(by_split, by_arguments)
    frame = pd.DataFrame({"P": [a.premise for a in arguments], "C": [a.conclusion for a in arguments],
                          "S": [a.stance for a in arguments]}, index=[a.id for a in arguments])
    got = det.predict_proba(frame, premise_column="P", conclusion_column="C", stance_column="S")
    np.testing.assert_array_equal(got.to_numpy(), by_arguments.to_numpy())
    lower = frame.rename(columns={"P": "premise", "C": "conclusion", "S": "stance"})
    np.testing.assert_array_equal(det.predict_proba(lower).to_numpy(), by_arguments.to_numpy())
    # Free text of the same premises scores otherwise: the conclusion and stance were read.
    assert not np.allclose(det.predict_proba(frame["P"]).to_numpy(), by_arguments.to_numpy())


def test_bad_inputs_say_what_is_wrong(det):
    with pytest.raises(InputError, match=r"DataFrame row 1 \(index 'b'\): empty text \(column 'text'\)"):
        det.predict(pd.DataFrame({"text": ["fine", " "]}, index=["a", "b"]))
    with pytest.raises(InputError, match=r"no 'text' column \(did you mean 'txt'\?\)"):
        det.predict(pd.DataFrame({"txt": ["fine"]}))
    with pytest.raises(InputError, match="no column 'doc'"):
        det.predict(pd.DataFrame({"text": ["fine"]}), id_column="doc")
    with pytest.raises(InputError, match="not unique"):
        det.predict(pd.DataFrame({"text": ["a", "b"]}, index=[1, 1]))
    with pytest.raises(InputError, match="unknown stance 'maybe'"):
        det.predict([{"premise": "p", "conclusion": "c", "stance": "maybe"}])
    with pytest.raises(InputError, match="text-2 is empty"):
        det.predict(["fine", ""])
    with pytest.raises(InputError, match="item 0 is a int"):
        det.predict([3])
    with pytest.raises(InputError, match="1-D array"):
        det.predict(np.zeros((2, 3)))


def test_save_pretrained_and_from_pretrained_round_trip(det, tmp_path):
    folder = det.save_pretrained(tmp_path / "copy")
    again = vd.ValueDetector.from_pretrained(folder)
    pd.testing.assert_frame_equal(again.predict_proba(TEXTS), det.predict_proba(TEXTS))
    assert again.folder == folder and again.method == "tfidf"
    assert "tfidf" in repr(again)


def test_load_names_what_it_cannot_find(tmp_path):
    with pytest.raises(InputError, match="no shipped detector of that name"):
        vd.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="is a file"):
        vd.load(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no detector\.json"):
        vd.load(tmp_path / "empty")


def test_train_mirrors_the_command_line_and_evaluate_takes_frames_or_files(tmp_path):
    from tests.tiny_models import small_data_dir

    data = small_data_dir(tmp_path / "data", training=400, validation=60)
    trained = vd.train("tfidf", detector={"min_df": 1}, output=tmp_path / "run", data_dir=data, predict_test=False)
    assert trained.training is not None and trained.folder == tmp_path / "run"
    assert (tmp_path / "run" / "results.json").exists()
    validation = vd.load_split("validation", data)
    predicted = trained.predict(validation)
    in_memory = vd.evaluate(predicted, validation, bootstrap=0)
    assert in_memory.f1 == pytest.approx(trained.training.validation_scores.f1, abs=1e-12)
    from_files = vd.evaluate(tmp_path / "run" / "validation-run.tsv", data / "labels-validation.tsv", bootstrap=0)
    assert from_files.f1 == pytest.approx(in_memory.f1, abs=1e-12)
    labels = pd.DataFrame(validation.labels, index=validation.ids, columns=list(CATEGORY_NAMES))
    assert vd.evaluate(predicted, labels, bootstrap=0).f1 == pytest.approx(in_memory.f1, abs=1e-12)
    # The same run through the command line gives the same detector and the same F1.
    result = invoke("train", "--method", "tfidf", "--set", "min_df=1", "--output", tmp_path / "cli",
                    "--data-dir", data, "--no-predict-test")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "validation-run.tsv").read_bytes() == (
        tmp_path / "run" / "validation-run.tsv").read_bytes()


def test_train_and_evaluate_refuse_what_they_cannot_use(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'tfdif'"):
        vd.train("tfdif", output=tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        vd.train("tfidf", detector={"bogus": 1}, output=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    run = pd.DataFrame(np.full((1, 20), 0.3), index=["a"], columns=list(CATEGORY_NAMES))
    with pytest.raises(InputError, match="values other than 0 and 1"):
        vd.evaluate(run, run)


@pytest.mark.slow
def test_the_shipped_detector_loads_with_no_argument():
    det = vd.load()
    scores = det.predict_proba("We must stop burning coal because it destroys forests, rivers and the climate.")
    assert scores.columns[np.argmax(scores.to_numpy()[0])] == "Universalism: nature"
    assert det.method == "encoder" and det.folder.name == "minilm-default"
    assert vd.load("minilm-default").folder == det.folder
