"""Configs from TOML: errors name the file and the key, and suggest the key that was meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from valuedetect.config import TrainConfig, from_dict, load_train_config, read_toml, to_dict
from valuedetect.detectors import METHODS, make_detector
from valuedetect.detectors.baselines import TfidfConfig
from valuedetect.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def toml(tmp_path: Path, text: str, name: str = "train.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("name", ["all-ones", "random-prior", "tfidf"])
def test_shipped_configs_load(name):
    config = load_train_config(CONFIGS / f"{name}.toml")
    assert config.method == name
    assert config.output == f"runs/{name}"


def test_a_full_config_is_read_with_its_types(tmp_path):
    path = toml(tmp_path, 'method = "tfidf"\noutput = "out"\npredict_test = false\n\n'
                          "[detector]\nC = 2\nngram_max = 1\nthresholds = \"global\"\n")
    config = load_train_config(path)
    assert config == TrainConfig(method="tfidf", detector={"C": 2, "ngram_max": 1, "thresholds": "global"},
                                 output="out", predict_test=False)
    detector = make_detector(config.method, config.detector, str(path))
    assert detector.config.C == 2.0 and isinstance(detector.config.C, float)
    assert detector.config.ngram_max == 1 and detector.config.thresholds == "global"
    assert to_dict(config)["detector"] == {"C": 2, "ngram_max": 1, "thresholds": "global"}


def test_unknown_key_names_the_key_and_suggests_the_close_one(tmp_path):
    path = toml(tmp_path, 'methd = "tfidf"\n')
    config_error(path, "unknown key 'methd'", "did you mean 'method'")


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path):
    path = toml(tmp_path, 'method = "tfidf"\ncolour = "blue"\n')
    message = config_error(path, "unknown key 'colour'")
    assert "known keys" in message and "predict_test" in message


def test_unknown_detector_key_names_the_table_and_suggests(tmp_path):
    path = toml(tmp_path, 'method = "tfidf"\n[detector]\nngram_maxx = 3\n')
    config_error(path, "[detector]", "unknown key 'ngram_maxx'", "did you mean 'ngram_max'")


@pytest.mark.parametrize(
    "text, key",
    [
        ('method = "tfidf"\npredict_test = "yes"\n', "predict_test"),
        ("method = 3\n", "method"),
        ('method = "tfidf"\noutput = 5\n', "output"),
        ('method = "tfidf"\ndetector = [1, 2]\n', "detector"),
        ('method = "tfidf"\n[detector]\nC = "big"\n', "C"),
        ('method = "tfidf"\n[detector]\nngram_max = 2.5\n', "ngram_max"),
        ('method = "tfidf"\n[detector]\nmin_df = true\n', "min_df"),
        ('method = "tfidf"\n[detector]\nseed = "13"\n', "seed"),
        ('method = "random-prior"\n[detector]\nseed = 1.5\n', "seed"),
    ],
)
def test_wrong_type_names_the_key(tmp_path, text, key):
    path = toml(tmp_path, text)
    config_error(path, f"key {key!r}", "expected")


@pytest.mark.parametrize(
    "setting, fragment",
    [("thresholds = \"best\"", "thresholds"), ("threshold_shrink = 1.5", "threshold_shrink")],
)
def test_invalid_values_are_config_errors(tmp_path, setting, fragment):
    path = toml(tmp_path, f'method = "tfidf"\n[detector]\n{setting}\n')
    config_error(path, fragment)


def test_missing_method(tmp_path):
    path = toml(tmp_path, 'output = "x"\n')
    config_error(path, "method")


def test_unknown_method_lists_the_available_ones(tmp_path):
    path = toml(tmp_path, 'method = "tfidff"\n')
    message = config_error(path, "unknown method 'tfidff'")
    for method in METHODS:
        assert method in message
    with pytest.raises(ConfigError, match="unknown method 'bert'"):
        make_detector("bert")


def test_invalid_toml(tmp_path):
    path = toml(tmp_path, 'method = "tfidf\n[detector\n')
    config_error(path, "invalid TOML")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('method = "na\u00efve"\n'.encode("latin-1"))
    config_error(path, "UTF-8")


def test_missing_file_and_directory(tmp_path):
    config_error(tmp_path / "nope.toml", "no such config file")
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    config_error(folder, "directory")
    with pytest.raises(ConfigError, match="no such config file"):
        read_toml(tmp_path / "nope.toml")


def test_from_dict_coerces_and_rejects():
    config = from_dict(TfidfConfig, {"C": 1, "class_weight": None, "ngram_max": 3})
    assert config.C == 1.0 and config.class_weight is None and config.ngram_max == 3
    with pytest.raises(ConfigError, match="expected a table"):
        from_dict(TfidfConfig, ["not", "a", "table"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="key 'class_weight'"):
        from_dict(TfidfConfig, {"class_weight": 1})
