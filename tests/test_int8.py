"""The int8 ONNX Runtime path of the encoder detector on a tiny random BERT: close to fp32, the
order kept through length buckets, used by default only where a check recorded it within the F1
bound, fp32 otherwise (or when the runtime is missing), and a clear error for a damaged file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.tiny_models import tiny_bert

from valuedetect.data import load_split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.encoder import int8
from valuedetect.errors import InputError, ValueDetectError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("tiny-bert"), hidden=64, dropout=0.0))


@pytest.fixture(scope="module")
def split():
    return load_split("validation").subset(range(40))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VALUEDETECT_INFERENCE", raising=False)


def _detector(model_dir: str, **extra):
    """An untrained detector (random head) with thresholds: enough to compare the two paths."""
    from valuedetect.thresholds import Thresholds

    detector = make_detector("encoder", {"model": model_dir, "trainable_layers": 1, "seed": 3, **extra})
    detector._build()
    detector.model.eval()
    detector._round_trip_saved_dtype()  # what save writes, as after training
    detector.thresholds = Thresholds.constant(0.5, 20)
    return detector


def test_length_buckets_cover_every_row_once_within_the_limits() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 130, size=500).tolist()
    batches = int8.length_buckets(lengths, max_batch=16, max_tokens=600)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for rows in batches:
        width = max(lengths[i] for i in rows)
        assert len(rows) <= 16 and (len(rows) == 1 or len(rows) * width <= 600)
    assert [lengths[i] for i in flat] == sorted(lengths)  # sorted: little padding


def test_bucketed_scores_come_back_in_the_input_order() -> None:
    rng = np.random.default_rng(1)
    input_ids = [rng.integers(5, 90, size=rng.integers(1, 40)).tolist() for _ in range(101)]

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:  # a row's own length and sum, padding ignored
        return np.stack([mask.sum(1), (ids * mask).sum(1)], axis=1).astype(np.float32)

    out = int8.bucketed_scores(run, input_ids, pad_id=0, max_batch=8, max_tokens=100)
    expected = np.array([[len(x), sum(x)] for x in input_ids], dtype=np.float32)
    assert np.array_equal(out, expected)


def test_int8_scores_are_close_to_fp32_and_in_order(tiny_model_dir, split) -> None:
    detector = _detector(tiny_model_dir, inference="fp32")
    fp32 = detector.predict_proba(split.arguments)
    detector.config.inference = "int8"
    scores = detector.predict_proba(split.arguments)
    assert detector.inference[0] == "int8"
    assert scores.shape == fp32.shape
    assert np.abs(scores - fp32).max() < 0.05
    # an argument's score is its own: alone, or among others in any order, it is the same
    single = np.concatenate([detector.predict_proba([a]) for a in split.arguments[:8]])
    assert np.array_equal(single, scores[:8])
    reversed_scores = detector.predict_proba(list(reversed(split.arguments)))
    assert np.array_equal(reversed_scores[::-1], scores)


def test_auto_uses_int8_only_after_a_check_within_the_bound(tiny_model_dir, split, tmp_path) -> None:
    detector = _detector(tiny_model_dir)
    assert detector.inference[0] == "fp32" and "not checked" in detector.inference[1]
    record = detector.check_int8(split, bound=1.0)
    assert record["within_bound"] and record["split"] == split.name and record["recipe"] == int8.RECIPE
    assert detector.inference[0] == "int8"
    folder = detector.save(tmp_path / "det")
    saved = json.loads((folder / "detector.json").read_text())["info"]["int8"]
    assert saved["sha256"] == record["sha256"]
    loaded = load_detector(folder)
    assert loaded.inference[0] == "int8"
    assert np.allclose(loaded.predict_proba(split.arguments), detector.predict_proba(split.arguments), atol=1e-6)


def test_auto_falls_back_to_fp32_beyond_the_bound_or_when_forced(tiny_model_dir, split, monkeypatch) -> None:
    detector = _detector(tiny_model_dir)
    record = detector.check_int8(split, bound=-1.0)  # |int8 - fp32| <= -1: never met
    assert not record["within_bound"]
    assert detector.inference[0] == "fp32" and "beyond" in detector.inference[1]
    fp32 = detector.predict_proba(split.arguments)
    detector.config.inference = "fp32"
    assert np.array_equal(detector.predict_proba(split.arguments), fp32)

    checked = _detector(tiny_model_dir)
    checked.check_int8(split, bound=1.0)
    assert checked.inference[0] == "int8"
    monkeypatch.setenv("VALUEDETECT_INFERENCE", "fp32")  # the user's override, e.g. for the server
    assert checked.inference == ("fp32", "inference = fp32")
    assert np.array_equal(checked.predict_proba(split.arguments), fp32)


def test_changed_weights_invalidate_the_check(tiny_model_dir, split) -> None:
    import torch

    detector = _detector(tiny_model_dir)
    detector.check_int8(split, bound=1.0)
    with torch.no_grad():
        detector.model.head.linear.bias.add_(0.5)
    detector._int8_state = None
    assert detector.inference == ("fp32", "the int8 check was made on other weights")


def test_a_missing_runtime_means_fp32_or_a_clear_error_when_int8_is_forced(tiny_model_dir, split,
                                                                            monkeypatch) -> None:
    detector = _detector(tiny_model_dir)
    detector.check_int8(split, bound=1.0)
    monkeypatch.setattr(int8, "runtime_missing", lambda: "the int8 path needs onnxruntime (pip install onnxruntime)")
    detector._int8_state = None
    assert detector.inference[0] == "fp32" and "onnxruntime" in detector.inference[1]
    assert detector.predict_proba(split.arguments[:3]).shape == (3, 20)
    detector.config.inference = "int8"
    with pytest.raises(ValueDetectError, match="needs onnxruntime"):
        detector.predict_proba(split.arguments[:3])


def test_a_damaged_int8_file_gives_a_clear_error(tiny_model_dir, split, tmp_path) -> None:
    detector = _detector(tiny_model_dir)
    detector.check_int8(split, bound=1.0)
    folder = detector.save(tmp_path / "det")
    path = detector._int8_file()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(InputError, match="not the int8 model that was checked") as caught:
        load_detector(folder).predict_proba(split.arguments[:2])
    assert str(path) in str(caught.value)
    forced = load_detector(folder)
    forced.config.inference = "int8"  # forced: no check, but the file itself cannot be read
    with pytest.raises(InputError, match="damaged int8 model file"):
        forced.predict_proba(split.arguments[:2])
    path.unlink()  # deleted: built again, identical to the checked one
    rebuilt = load_detector(folder)
    assert rebuilt.inference[0] == "int8"


def test_the_python_api_uses_the_check_and_can_force_fp32(tiny_model_dir, split, tmp_path) -> None:
    import valuedetect as vd

    detector = _detector(tiny_model_dir)
    detector.check_int8(split, bound=1.0)
    folder = detector.save(tmp_path / "det")
    assert vd.load(folder).detector.inference[0] == "int8"
    assert vd.load(folder, inference="fp32").detector.inference == ("fp32", "inference = fp32")
    with pytest.raises(InputError, match="auto, int8 or fp32"):
        vd.load(folder, inference="int4")


def test_training_records_the_check_and_keeps_its_own_scores_fp32(tiny_model_dir, tmp_path) -> None:
    from tests.tiny_models import small_data_dir

    from valuedetect.config import TrainConfig
    from valuedetect.training import run_training

    data = small_data_dir(tmp_path / "data", training=80, validation=30)
    settings = {"model": tiny_model_dir, "epochs": 1, "batch_size": 16, "trainable_layers": 1, "thresholds": "global"}
    run_training(TrainConfig(method="encoder", data_dir=str(data), output=str(tmp_path / "out"),
                             predict_test=False, detector=settings))
    record = json.loads((tmp_path / "out" / "detector.json").read_text())["info"]["int8"]
    assert record["arguments"] == 30 and record["measure"] == "f1"
    stored = np.load(tmp_path / "out" / "validation-scores.npy")
    fp32 = load_detector(tmp_path / "out")
    fp32.config.inference = "fp32"
    assert np.allclose(stored, fp32.predict_proba(load_split("validation", data).arguments), atol=1e-6)
    assert load_detector(tmp_path / "out").inference[0] == ("int8" if record["within_bound"] else "fp32")
