"""Sentence mode (issue 16, item 2): documents split into sentences by a real segmenter, each
sentence labelled, and the mean, max and share of its sentences per document."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.test_cli import assert_user_error, invoke

import valuedetect as vd
from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.detectors.baselines import TfidfDetector
from valuedetect.predicting import parts_dir
from valuedetect.sentences import split_sentences
from valuedetect.taxonomy import CATEGORY_NAMES

NATURE = CATEGORY_NAMES.index("Universalism: nature")
SPEECH = "We must protect the forest. Taxes are far too high, said Dr. Smith. The forest is our home."


class KeywordDetector(Detector):
    """Nature 0.9 for a sentence about the forest, else 0.1; every other category 0.2."""

    type_name = "keywords"
    config_class = DetectorConfig

    def _fit(self, train: Split, dev: Split | None) -> None:
        pass

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        scores = np.full((len(arguments), 20), 0.2)
        scores[:, NATURE] = [0.9 if "forest" in a.premise else 0.1 for a in arguments]
        return scores


def test_the_segmenter_keeps_abbreviations_and_decimals_inside_sentences():
    text = 'Dr. Smith went to Washington. He said: "We must act!" Prices rose 3.5% in the U.S. last year. Fair?'
    assert split_sentences(text) == ["Dr. Smith went to Washington.", 'He said: "We must act!"',
                                     "Prices rose 3.5% in the U.S. last year.", "Fair?"]
    assert split_sentences("no boundary here") == ["no boundary here"]


def test_a_fixed_document_is_summed_up_by_mean_max_and_share():
    det = vd.ValueDetector(KeywordDetector(DetectorConfig(thresholds="fixed", fixed_threshold=0.5)))
    found = det.predict_documents(pd.Series([SPEECH, "Nothing about trees."], index=["speech", "note"]))
    assert found.sentences["text"].tolist() == ["We must protect the forest.",
                                                "Taxes are far too high, said Dr. Smith.",
                                                "The forest is our home.", "Nothing about trees."]
    assert found.sentences.index.tolist() == [("speech", 1), ("speech", 2), ("speech", 3), ("note", 1)]
    assert found.counts.tolist() == [3, 1]
    nature = "Universalism: nature"
    assert found.mean.loc["speech", nature] == pytest.approx((0.9 + 0.1 + 0.9) / 3)
    assert found.max.loc["speech", nature] == pytest.approx(0.9)
    assert found.share.loc["speech", nature] == pytest.approx(2 / 3)
    assert found.detected.loc["speech", nature] == 1 and found.detected.loc["note", nature] == 0
    assert found.detected.drop(columns=nature).to_numpy().sum() == 0
    wide = found.to_pandas()
    assert wide.loc["speech", ("share", nature)] == pytest.approx(2 / 3)
    assert wide.loc["speech", ("sentences", "")] == 3


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory, training) -> Path:
    detector = TfidfDetector(TfidfDetector.config_class(min_df=1))
    detector.fit(training.subset(range(300)), training.subset(range(300, 400)))
    return detector.save(tmp_path_factory.mktemp("model") / "tfidf")


def speeches(n: int) -> pd.DataFrame:
    texts = [SPEECH, "Freedom matters. So does safety for our children.", "Tradition! Religion. Family.",
             "One long sentence about money, power and wealth in the world of today"]
    return pd.DataFrame({"speaker": [f"s{i}" for i in range(n)], "speech": [texts[i % 4] for i in range(n)],
                         "party": [f"party {i % 2}" for i in range(n)]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_sentence_mode_writes_both_levels_and_they_agree(tfidf, tmp_path, suffix):
    source = tmp_path / "speeches.csv"
    speeches(6).to_csv(source, index=False)
    output = tmp_path / f"docs{suffix}"
    result = invoke("predict", "--model", tfidf, "--input", source, "--output", output, "--unit", "sentence",
                    "--text-column", "speech", "--id-column", "speaker", "--keep-columns", "party")
    assert result.exit_code == 0, (result.output, result.exception)
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    documents, sentences = read(output), read(tmp_path / f"docs.sentences{suffix}")
    assert documents["speaker"].tolist() == [f"s{i}" for i in range(6)]
    assert documents["party"].tolist() == speeches(6)["party"].tolist()
    assert documents["sentences"].tolist() == [3, 2, 3, 1, 3, 2]
    assert sentences["sentence_id"].tolist()[:4] == ["s0:1", "s0:2", "s0:3", "s1:1"]
    assert sentences["text"].tolist()[:3] == split_sentences(SPEECH)
    by_speaker = sentences.groupby("speaker", sort=False)
    for category in CATEGORY_NAMES[:5]:
        np.testing.assert_allclose(documents[f"mean({category})"], by_speaker[f"p({category})"].mean(), atol=1e-5)
        np.testing.assert_allclose(documents[f"max({category})"], by_speaker[f"p({category})"].max(), atol=1e-5)
        np.testing.assert_allclose(documents[f"share({category})"], by_speaker[category].mean(), atol=1e-5)
        assert (documents[category] == by_speaker[category].max().to_numpy()).all()
    # The same as the Python API's predict_documents.
    found = vd.load(tfidf).predict_documents(speeches(6), text_column="speech", id_column="speaker")
    np.testing.assert_allclose(documents[[f"share({c})" for c in CATEGORY_NAMES]].to_numpy(),
                               found.share.to_numpy(), atol=1e-5)


def test_sentence_mode_resumes_to_the_same_bytes(tfidf, tmp_path, monkeypatch):
    source = tmp_path / "speeches.csv"
    speeches(9).to_csv(source, index=False)
    args = ["predict", "--model", tfidf, "--input", source, "--unit", "sentence", "--text-column", "speech",
            "--chunk-size", "2"]
    assert invoke(*args, "--output", tmp_path / "ref.jsonl").exit_code == 0
    original, calls = TfidfDetector._predict_proba, []

    def interrupted(self, arguments):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, arguments)

    monkeypatch.setattr(TfidfDetector, "_predict_proba", interrupted)
    output = tmp_path / "out.jsonl"
    assert invoke(*args, "--output", output).exit_code == 130
    assert not output.exists() and not (tmp_path / "out.sentences.jsonl").exists()
    monkeypatch.undo()
    assert invoke(*args, "--output", output, "--resume").exit_code == 0
    assert output.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    assert (tmp_path / "out.sentences.jsonl").read_bytes() == (tmp_path / "ref.sentences.jsonl").read_bytes()
    assert not parts_dir(output).exists()


def test_sentence_options_without_a_file_are_refused(tfidf, tmp_path):
    assert_user_error(invoke("predict", "--model", tfidf, "a text. another.", "--unit", "sentence"), "--input")
    source = tmp_path / "s.csv"
    speeches(2).to_csv(source, index=False)
    assert_user_error(invoke("predict", "--model", tfidf, "--input", source, "--output", tmp_path / "o.csv",
                             "--unit", "paragraph", "--text-column", "speech"), "unit must be one of")
