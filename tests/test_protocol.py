"""The evaluation protocol: dev chooses, validation is scored once, resume refuses changed runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from tests.tiny_models import small_data_dir

from valuedetect.config import TrainConfig
from valuedetect.data import Argument, Split
from valuedetect.detectors import baselines
from valuedetect.errors import InputError
from valuedetect.protocol import constant_answer_loss, cross_fit_held_out, dev_indices, make_splits, under_trained
from valuedetect.training import run_training


def _labels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.02, 0.4, 20)  # some rare categories, as in the data
    return (rng.random((n, 20)) < rates).astype(np.int8)


def test_dev_slice_is_seeded_about_the_asked_size_and_keeps_groups_whole() -> None:
    labels = _labels(2000)
    groups = [f"topic {i % 150}" for i in range(2000)]
    dev = dev_indices(labels, groups, 0.15, seed=0)
    assert abs(len(dev) - 300) <= 30
    assert np.array_equal(dev, dev_indices(labels, groups, 0.15, seed=0))
    assert not np.array_equal(dev, dev_indices(labels, groups, 0.15, seed=1))
    in_dev = {groups[i] for i in dev}
    rest = {groups[i] for i in set(range(2000)) - set(dev.tolist())}
    assert not in_dev & rest  # no topic on both sides


def _split_with_topics(sizes: list[int]) -> Split:
    """Arguments under conclusions of the given sizes, interleaved."""
    topics = [t for t, size in enumerate(sizes) for _ in range(size)]
    order = np.random.default_rng(0).permutation(len(topics))
    arguments = [Argument(f"A{i:05d}", f"premise {i}", f"topic {topics[j]}", "in favor of")
                 for i, j in enumerate(order)]
    return Split("training", arguments, _labels(len(arguments)))


def test_cross_fitting_folds_partition_the_fit_split_keep_topics_whole_and_are_seeded() -> None:
    sizes = [1 + (7 * t) % 60 for t in range(40)]  # uneven, as conclusions are (1 to 114 arguments)
    fit = _split_with_topics(sizes)
    folds = [cross_fit_held_out(fit, 4, k, seed=0) for k in range(4)]
    rows = np.concatenate(folds)
    assert sorted(rows.tolist()) == list(range(len(fit)))  # every row in exactly one fold
    lengths = [len(f) for f in folds]
    assert max(lengths) - min(lengths) <= max(sizes)  # balanced in arguments, not only in conclusions
    topics = [{fit.arguments[i].conclusion for i in f} for f in folds]
    assert all(not topics[a] & topics[b] for a in range(4) for b in range(a + 1, 4))
    assert np.array_equal(folds[0], cross_fit_held_out(fit, 4, 0, seed=0))
    assert not np.array_equal(folds[0], cross_fit_held_out(fit, 4, 0, seed=1))
    with pytest.raises(ValueError, match="fold must lie"):
        cross_fit_held_out(fit, 4, 4, seed=0)
    with pytest.raises(ValueError, match="at least 50 conclusions"):
        cross_fit_held_out(fit, 50, 0, seed=0)


@pytest.mark.parametrize("settings, fragment", [
    ({"cross_fit_folds": 3}, "together"),
    ({"cross_fit_folds": 1, "cross_fit_fold": 0}, "at least 2"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 3}, r"0\.\.2"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 0, "protocol": "paper"}, "held-out protocol"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 0, "training_fraction": 0.5}, "training_fraction"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 0, "refit": True}, "refit"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 0, "training_per_category": 5}, "training_per_category"),
    ({"cross_fit_folds": 3, "cross_fit_fold": 0, "task": "nli", "method": "encoder"}, "nli task"),
])
def test_cross_fitting_settings_that_cannot_work_are_refused(settings: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(**{"method": "tfidf", **settings})


def test_dev_slice_is_closer_to_each_categorys_share_than_random_group_slices() -> None:
    labels = _labels(3000, seed=3)
    groups = [f"t{i // 10}" for i in range(3000)]  # 300 topics of 10 arguments
    totals = labels.sum(axis=0)
    ours = np.abs(labels[dev_indices(labels, groups, 0.15, seed=0)].sum(axis=0) / totals - 0.15).max()
    rng = np.random.default_rng(0)
    random_errors = []
    for _ in range(20):
        chosen = rng.permutation(300)[:45]
        rows = np.flatnonzero(np.isin(np.arange(3000) // 10, chosen))
        random_errors.append(np.abs(labels[rows].sum(axis=0) / totals - 0.15).max())
    assert ours < 0.5 * float(np.mean(random_errors))


def _split(name: str, n: int, offset: int = 0) -> Split:
    arguments = [Argument(f"{name}{i}", f"premise {i}", f"conclusion {(i + offset) % 40}", "in favor of")
                 for i in range(n)]
    return Split(name, arguments, _labels(n, seed=offset))


def test_held_out_splits_never_mix_roles_and_the_paper_protocol_says_it_is_optimistic() -> None:
    train, validation = _split("T", 600), _split("V", 200, offset=7)
    held = make_splits(train, validation)
    assert set(held.fit.ids).isdisjoint(held.dev.ids)
    assert sorted(held.fit.ids + held.dev.ids) == sorted(train.ids)
    assert held.validation is validation and not held.optimistic
    assert held.describe()["dev_arguments"] == len(held.dev)
    paper = make_splits(train, validation, "paper")
    assert paper.dev is validation and paper.fit is train and paper.optimistic
    assert "optimistic" in paper.describe()["chosen"]
    with pytest.raises(ValueError, match="protocol"):
        make_splits(train, validation, "validation")


class SpyPrior(baselines.RandomPriorDetector):
    """Records which arguments it is fitted on, chooses on and scores."""

    seen: ClassVar[dict[str, list[str]]] = {}

    def _fit(self, train: Split, dev: Split | None) -> None:
        SpyPrior.seen["fit"] = train.ids
        SpyPrior.seen["dev"] = dev.ids if dev is not None else []
        super()._fit(train, dev)

    def _predict_proba(self, arguments):
        SpyPrior.seen.setdefault("scored", []).extend(a.id for a in arguments)
        return super()._predict_proba(arguments)


def test_training_fits_on_training_chooses_on_dev_and_scores_validation_once(tmp_path: Path, monkeypatch) -> None:
    from valuedetect import detectors

    monkeypatch.setitem(detectors._REGISTRY, "spy", f"{SpyPrior.__module__}:SpyPrior")
    SpyPrior.seen = {}
    data = small_data_dir(tmp_path / "data", training=500, validation=120)
    result = run_training(TrainConfig(method="spy", data_dir=str(data), output=str(tmp_path / "out"),
                                      predict_test=False))
    seen = SpyPrior.seen
    validation_ids = result.validation_ids
    assert not set(seen["fit"]) & set(validation_ids) and not set(seen["dev"]) & set(validation_ids)
    assert not set(seen["fit"]) & set(seen["dev"])
    # validation is scored exactly once, and only after the thresholds were chosen on dev
    assert sorted(seen["scored"]).count(validation_ids[0]) == 1
    assert seen["scored"][-len(validation_ids):] == validation_ids
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["protocol"]["name"] == "heldout" and results["validation_held_out"] is True
    assert results["dev"]["n"] == len(seen["dev"]) and results["validation"]["n"] == len(validation_ids)
    assert results["compute"]["train_cpu_seconds"] >= 0 and results["compute"]["cores"] >= 1


def test_resume_with_changed_settings_is_refused_naming_the_setting(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=60)
    out = tmp_path / "out"
    config = TrainConfig(method="tfidf", data_dir=str(data), output=str(out), predict_test=False)
    run_training(config)
    (out / "results.json").unlink()  # as if killed before the last write
    changed = TrainConfig(method="tfidf", data_dir=str(data), output=str(out), predict_test=False,
                          detector={"max_features": 500})
    with pytest.raises(InputError, match=r"max_features"):
        run_training(changed, resume=True)
    other_dev = TrainConfig(method="tfidf", data_dir=str(data), output=str(out), predict_test=False, dev_seed=5)
    with pytest.raises(InputError, match=r"dev_seed.*dev arguments|dev arguments"):
        run_training(other_dev, resume=True)


def test_a_run_killed_after_saving_its_detector_is_finished_by_resume(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=300, validation=60)
    out = tmp_path / "out"
    config = TrainConfig(method="tfidf", data_dir=str(data), output=str(out), predict_test=False)
    first = run_training(config)
    for name in ("results.json", "validation-run.tsv", "dev-run.tsv"):
        (out / name).unlink()  # killed right after detector.json appeared
    with pytest.raises(InputError, match="unfinished run; pass --resume"):
        run_training(config)
    again = run_training(config, resume=True)
    assert (out / "results.json").exists() and (out / "validation-run.tsv").exists()
    assert again.validation_scores.f1 == pytest.approx(first.validation_scores.f1)
    with pytest.raises(InputError, match="nothing to resume"):
        run_training(config, resume=True)


def test_constant_answer_loss_is_the_loss_of_predicting_each_prior() -> None:
    labels = _labels(500)
    q = labels.mean(axis=0)
    expected = np.mean(-(q * np.log(q) + (1 - q) * np.log(1 - q)))
    assert constant_answer_loss(labels) == pytest.approx(expected)
    # weighing positives moves the best constant and raises its loss
    assert constant_answer_loss(labels, np.full(20, 4.0)) > constant_answer_loss(labels)


def test_under_trained_names_a_short_budget_and_a_loss_at_the_constant_level() -> None:
    assert under_trained(None) is None  # trains nothing: exempt
    assert "unknown" in under_trained({"epochs_completed": 3, "stopped_by": "epochs"})  # no loss: not a pass
    assert under_trained({"epochs_completed": 3, "final_loss": 0.2, "constant_loss": 0.4, "stopped_by": "epochs"}) \
        is None
    assert "budget" in under_trained({"epochs_completed": 0.3, "final_loss": 0.2, "constant_loss": 0.4,
                                      "stopped_by": "budget"})
    assert "constant-answer" in under_trained({"epochs_completed": 2, "final_loss": 0.41, "constant_loss": 0.4,
                                               "stopped_by": "epochs"})


def test_the_model_identity_is_a_hash_of_the_weights_loaded(tmp_path: Path, monkeypatch) -> None:
    from valuedetect.fingerprint import changed_parts, model_identity

    monkeypatch.setenv("VALUEDETECT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights one")
    (model / "config.json").write_text("{}")
    first = model_identity(str(model))
    assert first == model_identity(str(model))  # and the second time from the remembered hash
    (model / "model.safetensors").write_bytes(b"weights two")
    second = model_identity(str(model))
    assert first != second
    assert changed_parts({"model": first}, {"model": second}) == ["model"]
    assert model_identity("org/some-hub-model")["name"] == "org/some-hub-model"


def test_the_paper_protocol_scores_all_it_chose_on_even_with_a_dev_limit(tmp_path: Path) -> None:
    data = small_data_dir(tmp_path / "data", training=200, validation=60)
    result = run_training(TrainConfig(method="tfidf", data_dir=str(data), output=str(tmp_path / "out"),
                                      predict_test=False, protocol="paper", dev_limit=10))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["protocol"]["optimistic"] and not results["validation_held_out"]
    assert results["dev"]["n"] == results["validation"]["n"] == len(result.validation_ids) == 60
    assert results["training_arguments"] == 200
