"""End to end on the real MiniLM weights: the detector that ships with the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import small_data_dir
from typer.testing import CliRunner

from valuedetect.cli import app
from valuedetect.data import load_split
from valuedetect.detectors import load_detector
from valuedetect.encoder import int8
from valuedetect.locate import shipped_model_dir
from valuedetect.metrics import score
from valuedetect.taxonomy import CATEGORY_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped():
    return load_detector(shipped_model_dir())


def test_shipped_detector_is_small() -> None:
    total = sum(p.stat().st_size for p in shipped_model_dir().iterdir() if p.is_file())
    assert total < 10 * 1024 * 1024


def test_shipped_detector_reproduces_its_recorded_validation_f1(shipped) -> None:
    validation = load_split("validation")
    recorded = json.loads((shipped_model_dir() / "results.json").read_text())["validation"]["f1"]
    assert shipped.info["validation_f1"] == pytest.approx(recorded, abs=1e-9)
    fp32 = load_detector(shipped_model_dir())
    fp32.config.inference = "fp32"  # the recorded figure is the fp32 model's
    f1 = score(validation.labels, fp32.predict(validation.arguments)).f1
    assert f1 == pytest.approx(recorded, abs=5e-4)
    assert f1 > 0.45  # far above the TF-IDF baseline (0.39) and the all-ones baseline (0.29)


def test_shipped_detector_predicts_in_int8_by_default_within_the_f1_bound(shipped) -> None:
    pytest.importorskip("onnxruntime")
    validation = load_split("validation")
    record = shipped.info["int8"]
    assert record["split"] == "validation" and record["within_bound"]
    assert shipped.inference[0] == "int8", shipped.inference
    f1 = score(validation.labels, shipped.predict(validation.arguments)).f1
    assert int8.file_digest(shipped._int8_file()) == record["sha256"]  # the file checked is the file used
    # The same file scores differently on CPUs with other integer kernels (ONNX Runtime picks
    # VNNI, AVX512 or AVX2 code at run time): the recorded F1 reproduces exactly only on the kind
    # of CPU that recorded it (0.4837 there, 0.4849 on a 2-core machine of 2026-12-01), so what holds
    # everywhere is the bound against fp32.
    assert abs(f1 - record["fp32"]) <= int8.F1_BOUND
    assert f1 >= shipped.info["validation_f1"] - int8.F1_BOUND


def test_shipped_detector_finds_obvious_values(shipped) -> None:
    from valuedetect.data import Argument

    texts = {
        "Universalism: nature": "We must stop burning coal because it destroys forests, rivers and the climate.",
        "Security: personal": "Fast food should be banned because it ruins people's health.",
    }
    for category, text in texts.items():
        scores = shipped.predict_proba([Argument(id="x", premise=text)])[0]
        top3 = [CATEGORY_NAMES[j] for j in np.argsort(-scores)[:3]]
        assert category in top3, (category, top3)


def test_predict_cli_uses_the_shipped_detector_by_default(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "Animals and forests need protection from pollution."])
    assert result.exit_code == 0, result.output
    assert "Universalism: nature" in result.output
    inputs = tmp_path / "texts.txt"
    inputs.write_text("Taxes on the rich fund schools for everyone.\nReligion keeps our traditions alive.\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--input", str(inputs), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]["probabilities"]) == set(CATEGORY_NAMES)
    assert "Tradition" in rows[1]["detected"]


def test_main_job_config_trains_real_minilm_end_to_end(tmp_path) -> None:
    """The default config, cut to one epoch on a small data folder: what users run, quickly."""
    data = small_data_dir(tmp_path / "data", training=160, validation=96, test=32)
    config = tmp_path / "default-1-epoch.toml"
    source = (Path(__file__).resolve().parents[1] / "configs" / "default.toml").read_text()
    assert "epochs = 4" in source
    config.write_text(source.replace("epochs = 4", "epochs = 1"))
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--output", str(tmp_path / "out"),
                                      "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "official" in result.output
    for name in ("detector.json", "trained-weights.safetensors", "validation-run.tsv", "test-run.tsv",
                 "results.json"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "out" / "checkpoint").exists()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["split"] == "validation" and 0.0 < results["validation"]["f1"] <= 1.0
    assert results["info"]["base_model"] == "minilm"
