"""Seed ensembles: members train with seeds seed + 1000k, their probabilities are averaged,
thresholds are chosen on the averaged dev scores; a saved ensemble loads back; an interrupted
ensemble resumes from its finished members; bad settings are refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.tiny_models import small_data_dir, tiny_bert

from valuedetect.config import TrainConfig
from valuedetect.data import load_split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.errors import ConfigError, InputError
from valuedetect.training import run_training


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def _member(model_dir: str, **extra: object) -> dict:
    return {"model": model_dir, "epochs": 1, "batch_size": 8, "trainable_layers": 1, "lr": 1e-3,
            "head_lr": 1e-2, "patience": 0, "thresholds": "global"} | extra


def test_an_ensemble_averages_members_that_differ_by_seed(tiny_model_dir, tmp_path) -> None:
    train = load_split("training", level1=True).subset(range(48))
    dev = load_split("validation", level1=True).subset(range(30))
    ensemble = make_detector("ensemble", {"member": _member(tiny_model_dir), "members": 2, "seed": 5,
                                          "thresholds": "global"}).fit(train, dev)
    assert [m.config.seed for m in ensemble.members] == [5, 1005]
    first, second = (m.predict_proba(dev.arguments) for m in ensemble.members)
    assert not np.allclose(first, second)  # the seeds made different models
    averaged = ensemble.predict_proba(dev.arguments)
    assert np.allclose(averaged, (first + second) / 2)
    # member 0 is the single detector of the ensemble's seed
    single = make_detector("encoder", _member(tiny_model_dir, seed=5)).fit(train, dev)
    assert np.allclose(single.predict_proba(dev.arguments), first, atol=1e-6)
    # thresholds are chosen on the averaged dev scores, not taken from a member
    assert ensemble.thresholds is not None and np.allclose(ensemble.dev_scores, averaged)
    assert ensemble.info["parameters_trainable"] == 2 * ensemble.members[0].info["parameters_trainable"]
    assert ensemble.base_model == tiny_model_dir
    ensemble.save(tmp_path / "ens")
    assert sorted(p.name for p in (tmp_path / "ens").iterdir() if p.is_dir()) == ["member-1", "member-2"]
    loaded = load_detector(tmp_path / "ens")
    assert np.allclose(loaded.predict_proba(dev.arguments), averaged, atol=1e-6)
    assert np.array_equal(loaded.predict(dev.arguments), ensemble.predict(dev.arguments))
    import valuedetect as vd

    labelled = vd.load(tmp_path / "ens").predict(["We should protect the forests for our children."])
    assert labelled.shape == (1, 20) and set(np.unique(labelled.to_numpy())) <= {0, 1}


def test_an_ensemble_of_level1_members_averages_both_levels(tiny_model_dir) -> None:
    train = load_split("training", level1=True).subset(range(40))
    dev = load_split("validation", level1=True).subset(range(24))
    ensemble = make_detector("ensemble", {"member": _member(tiny_model_dir, level1=True), "members": 2}).fit(train, dev)
    assert ensemble.predicts_level1 and ensemble.level1_thresholds is not None
    level1 = ensemble.predict_level1_proba(dev.arguments)
    assert np.allclose(level1, np.mean([m.predict_level1_proba(dev.arguments) for m in ensemble.members], axis=0))


def test_an_interrupted_ensemble_resumes_from_its_finished_members(tiny_model_dir, tmp_path) -> None:
    data = small_data_dir(tmp_path / "data", training=80, validation=30)
    detector = {"member": _member(tiny_model_dir), "members": 2, "seed": 7}
    config = TrainConfig(method="ensemble", detector=detector, data_dir=str(data), output=str(tmp_path / "run"),
                         predict_test=False)
    messages: list[str] = []
    import valuedetect.detectors.ensemble as ensemble_module

    real = ensemble_module.EnsembleDetector._member

    def stop_at_second(self, index, where=""):
        if index == 1:
            raise KeyboardInterrupt  # killed while member 2 starts
        return real(self, index, where)

    ensemble_module.EnsembleDetector._member = stop_at_second  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(config, check_int8=False)
    finally:
        ensemble_module.EnsembleDetector._member = real  # type: ignore[method-assign]
    assert (tmp_path / "run" / "checkpoint" / "member-1" / "detector.json").exists()
    result = run_training(config, resume=True, log=messages.append, check_int8=False)
    assert any("member 1/2: trained before the interruption" in m for m in messages)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["method"] == "ensemble" and [m["seed"] for m in record["info"]["members"]] == [7, 1007]
    assert record["training"]["epochs_completed"] == 1.0
    # the resumed run scores what a fresh one would, score for score
    fresh = run_training(TrainConfig(method="ensemble", detector=detector, data_dir=str(data),
                                     output=str(tmp_path / "fresh"), predict_test=False), check_int8=False)
    assert result.validation_scores.f1 == pytest.approx(fresh.validation_scores.f1, abs=1e-9)
    resumed_scores = np.load(tmp_path / "run" / "validation-scores.npy")
    assert np.allclose(resumed_scores, np.load(tmp_path / "fresh" / "validation-scores.npy"), atol=1e-6)
    assert result.detector.thresholds.values == fresh.detector.thresholds.values


def test_a_refit_ensemble_trains_each_member_to_the_epochs_dev_chose(tiny_model_dir, tmp_path) -> None:
    data = small_data_dir(tmp_path / "data", training=80, validation=30)
    detector = {"member": _member(tiny_model_dir, epochs=3, patience=1), "members": 2, "seed": 7}
    config = TrainConfig(method="ensemble", detector=detector, data_dir=str(data), output=str(tmp_path / "run"),
                         predict_test=False, refit=True)
    result = run_training(config, check_int8=False)
    chosen = [m.info["best_epoch"] for m in result.detector.members]
    record = json.loads((tmp_path / "run" / "refit" / "refit.json").read_text())
    assert record["fixed_on_dev"] == {"member_epochs": chosen}
    refitted = load_detector(tmp_path / "run" / "refit")
    assert [m.config.epochs for m in refitted.members] == chosen
    assert all(m.config.patience == 0 for m in refitted.members)
    with pytest.raises(ConfigError, match="one value per member"):
        make_detector("ensemble", {"members": 2, "member_epochs": [1]})


@pytest.mark.parametrize(("settings", "message"), [
    ({"method": "llm"}, "method must be one of"),
    ({"members": 0}, "members must be at least 1"),
    ({"member": {"seed": 3}}, "must not hold a seed"),
    ({"member": {"epochz": 3}}, "member settings: .*unknown key 'epochz'"),
])
def test_bad_ensemble_settings_are_refused_before_training(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make_detector("ensemble", settings)


def test_a_saved_ensemble_missing_a_member_is_refused(tiny_model_dir, tmp_path) -> None:
    train = load_split("training").subset(range(32))
    ensemble = make_detector("ensemble", {"member": _member(tiny_model_dir), "members": 2}).fit(train)
    ensemble.save(tmp_path / "ens")
    import shutil

    shutil.rmtree(tmp_path / "ens" / "member-2")
    with pytest.raises(InputError, match="lacks member-2"):
        load_detector(tmp_path / "ens")


def test_an_ensemble_is_held_to_its_weakest_member() -> None:
    from valuedetect.detectors.ensemble import weakest_standard

    good = {"epochs_completed": 3.0, "final_loss": 0.30, "constant_loss": 0.45, "stopped_by": "epochs"}
    bad = {"epochs_completed": 3.0, "final_loss": 0.50, "constant_loss": 0.45, "stopped_by": "epochs"}
    assert weakest_standard([good, bad]) is bad
    short = {"epochs_completed": 1.0, "final_loss": 0.40, "constant_loss": 0.45, "stopped_by": "epochs"}
    assert weakest_standard([good, short]) is short



def test_an_ensemble_belongs_to_its_members_family() -> None:
    from valuedetect.experiments.config import family_of

    assert family_of("ensemble", {"method": "encoder", "member": {}}) == "fine-tuning"
    assert family_of("ensemble", {"method": "prompt", "member": {"soft_prompt_tokens": 8}}) == "prompt-tuning"


def test_ensembles_and_distilled_students_stay_out_of_the_papers_claims() -> None:
    from valuedetect.experiments.records import RunRecord
    from valuedetect.experiments.report.verdicts import is_composite

    assert is_composite(RunRecord(name="e", status="done", method="ensemble", detector_config={"member": {}}))
    assert is_composite(RunRecord(name="d", status="done", method="encoder", detector_config={"distill_from": "t.tsv"}))
    assert not is_composite(RunRecord(name="p", status="done", method="encoder", detector_config={"distill_from": ""}))
