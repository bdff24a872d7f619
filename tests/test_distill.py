"""Distillation: a held-out teacher's probabilities on the training arguments become soft targets
of an encoder student, from the teacher's folder or a teacher-scores file; teachers that saw the
student's dev or validation arguments are refused, as are damaged scores files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import small_data_dir, tiny_bert

from valuedetect.config import TrainConfig
from valuedetect.data import load_split
from valuedetect.distill import read_teacher_scores, sidecar, write_teacher_scores
from valuedetect.errors import ConfigError, InputError
from valuedetect.protocol import constant_answer_loss
from valuedetect.training import run_training


def _encoder(model_dir: str, **extra: object) -> dict:
    return {"model": model_dir, "epochs": 2, "batch_size": 8, "trainable_layers": 1, "lr": 1e-3,
            "head_lr": 1e-2, "patience": 0, "thresholds": "global", "seed": 3} | extra


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model, a small dataset, and a held-out teacher trained on it."""
    root = tmp_path_factory.mktemp("distill")
    model = str(tiny_bert(root / "tiny-bert"))
    data = small_data_dir(root / "data", training=90, validation=30)
    teacher = root / "teacher"
    run_training(TrainConfig(method="encoder", detector=_encoder(model, seed=11), data_dir=str(data),
                             output=str(teacher), predict_test=False), check_int8=False)
    return {"root": root, "model": model, "data": data, "teacher": teacher}


def _student(setup: dict, output: Path, source: str, weight: float = 0.5, **config: object):
    detector = _encoder(setup["model"], distill_from=source, distill_weight=weight)
    return run_training(TrainConfig(method="encoder", detector=detector, data_dir=str(setup["data"]),
                                    output=str(output), predict_test=False, **config), check_int8=False)


def test_a_student_learns_from_the_teachers_folder_and_from_its_scores_file(setup, tmp_path) -> None:
    from_folder = _student(setup, tmp_path / "a", str(setup["teacher"]))
    note = from_folder.detector.info["distillation"]
    assert note["teacher_type"] == "encoder" and note["weight"] == 0.5
    training = load_split("training", setup["data"])
    meta = write_teacher_scores(setup["teacher"], training, tmp_path / "teacher.tsv")
    assert meta["arguments"] == len(training) and meta["protocol"]["name"] == "heldout"
    ids, scores = read_teacher_scores(tmp_path / "teacher.tsv")
    from valuedetect.detectors import load_detector

    expected = load_detector(setup["teacher"]).predict_proba(training.arguments)
    assert ids == training.ids and np.allclose(scores, expected, atol=6e-5)  # 4 decimals
    from_file = _student(setup, tmp_path / "b", str(tmp_path / "teacher.tsv"))
    assert from_file.detector.info["distillation"]["teacher_scores_sha256"] == meta["sha256"]
    # the same targets up to the file's rounding: the same student
    a = from_folder.detector.predict_proba(training.arguments[:20])
    b = from_file.detector.predict_proba(training.arguments[:20])
    assert np.allclose(a, b, atol=2e-3)


def test_the_teacher_moves_the_student_and_weight_zero_is_plain_training(setup, tmp_path) -> None:
    plain = run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"]), data_dir=str(setup["data"]),
                                     output=str(tmp_path / "plain"), predict_test=False), check_int8=False)
    zero = _student(setup, tmp_path / "zero", str(setup["teacher"]), weight=0.0)
    full = _student(setup, tmp_path / "full", str(setup["teacher"]), weight=1.0)
    arguments = load_split("validation", setup["data"]).arguments
    assert np.allclose(plain.detector.predict_proba(arguments), zero.detector.predict_proba(arguments), atol=1e-6)
    assert not np.allclose(plain.detector.predict_proba(arguments), full.detector.predict_proba(arguments), atol=1e-3)
    # the training standard is measured against the soft targets' own constant answer
    standard = full.detector.info["training"]
    assert standard["constant_loss"] != plain.detector.info["training"]["constant_loss"]


def test_a_teacher_that_chose_on_another_dev_slice_is_refused(setup, tmp_path) -> None:
    with pytest.raises(InputError, match="another dev slice"):
        _student(setup, tmp_path / "s", str(setup["teacher"]), dev_seed=1)
    assert not (tmp_path / "s" / "results.json").exists()


def test_a_teacher_trained_on_other_arguments_is_refused(setup, tmp_path) -> None:
    with pytest.raises(InputError, match="trained on other arguments"):
        _student(setup, tmp_path / "s", str(setup["teacher"]), training_fraction=0.5)


def test_a_teacher_under_the_paper_protocol_is_refused(setup, tmp_path) -> None:
    paper = tmp_path / "paper-teacher"
    run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"], epochs=1), data_dir=str(setup["data"]),
                             output=str(paper), predict_test=False, protocol="paper"), check_int8=False)
    with pytest.raises(InputError, match="not trained under the held-out protocol"):
        _student(setup, tmp_path / "s", str(paper))
    with pytest.raises(InputError, match="not trained under the held-out protocol"):
        write_teacher_scores(paper, load_split("training", setup["data"]), tmp_path / "t.tsv")


def test_a_refitted_teacher_and_a_distilled_refit_are_refused(setup, tmp_path) -> None:
    teacher = tmp_path / "teacher"
    run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"], epochs=1, seed=11),
                             data_dir=str(setup["data"]), output=str(teacher), predict_test=False, refit=True),
                 check_int8=False)
    with pytest.raises(InputError, match="is a refit"):
        _student(setup, tmp_path / "s", str(teacher / "refit"))
    with pytest.raises(ConfigError, match="refit = true with distill_from"):
        _student(setup, tmp_path / "r", str(setup["teacher"]), refit=True)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_teacher_scores_are_written_for_training_only(setup, tmp_path) -> None:
    with pytest.raises(InputError, match="training split only"):
        write_teacher_scores(setup["teacher"], load_split("validation", setup["data"]), tmp_path / "t.tsv")
    with pytest.raises(InputError, match=r"must not end in \.json"):
        write_teacher_scores(setup["teacher"], load_split("training", setup["data"]), tmp_path / "t.json")


def test_damaged_teacher_scores_files_are_refused_naming_the_problem(setup, tmp_path) -> None:
    path = tmp_path / "teacher.tsv"
    write_teacher_scores(setup["teacher"], load_split("training", setup["data"]), path)
    lines = path.read_text().splitlines()
    fields = lines[3].split("\t")
    fields[5] = "1.7"
    path.write_text("\n".join([*lines[:3], "\t".join(fields), *lines[4:]]) + "\n")
    with pytest.raises(InputError, match="changed after it was written"):
        _student(setup, tmp_path / "s1", str(path))
    with pytest.raises(InputError, match=r"line 4.*not a probability|not a probability.*line 4"):
        read_teacher_scores(path)
    sidecar(path).unlink()
    with pytest.raises(InputError, match="needs its sidecar"):
        _student(setup, tmp_path / "s2", str(path))
    with pytest.raises(InputError, match="no such teacher"):
        _student(setup, tmp_path / "s3", str(tmp_path / "nowhere"))


def test_a_scores_file_missing_training_arguments_is_refused(setup, tmp_path) -> None:
    path = tmp_path / "teacher.tsv"
    write_teacher_scores(setup["teacher"], load_split("training", setup["data"]), path)
    meta = json.loads(sidecar(path).read_text())
    lines = path.read_text().splitlines()
    text = "\n".join(lines[:-5]) + "\n"
    path.write_text(text)
    import hashlib

    meta["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    sidecar(path).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no teacher scores for"):
        _student(setup, tmp_path / "s", str(path))


def test_the_constant_answer_of_soft_targets_is_their_mean() -> None:
    soft = np.array([[0.2, 1.0], [0.6, 0.0], [0.4, 0.5]])
    q = soft.mean(axis=0)
    expected = np.mean(-(q * np.log(q) + (1 - q) * np.log(1 - q)))
    assert constant_answer_loss(soft) == pytest.approx(expected)
    # 0/1 labels give what they always gave
    hard = np.array([[1, 0], [0, 0], [1, 1], [0, 0]])
    assert constant_answer_loss(hard) == pytest.approx(np.log(2) * 0.5 + 0.5 * -(0.25 * np.log(0.25)
                                                                                  + 0.75 * np.log(0.75)))


def test_the_teacher_scores_command_writes_the_file_and_names_a_bad_teacher(setup, tmp_path) -> None:
    from typer.testing import CliRunner

    from valuedetect.cli import app

    out = tmp_path / "t.tsv"
    result = CliRunner().invoke(app, ["teacher-scores", str(setup["teacher"]), "--output", str(out),
                                      "--data-dir", str(setup["data"])])
    assert result.exit_code == 0, result.output
    assert out.exists() and sidecar(out).exists()
    bad = CliRunner().invoke(app, ["teacher-scores", str(tmp_path / "nowhere"), "--output", str(tmp_path / "u.tsv")])
    assert bad.exit_code == 2 and "nowhere" in bad.output and "Traceback" not in bad.output


@pytest.fixture(scope="module")
def cross_fit(setup: dict) -> dict:
    """Two cross-fitted teachers: each trained on the fit split minus one of two folds."""
    folders = []
    for fold in (0, 1):
        folder = setup["root"] / f"cross-fit-{fold}"
        run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"], seed=11),
                                 data_dir=str(setup["data"]), output=str(folder), predict_test=False,
                                 cross_fit_folds=2, cross_fit_fold=fold),
                     check_int8=False)
        folders.append(folder)
    return {"folders": folders}


def test_cross_fitted_teachers_score_each_fit_argument_out_of_fold(setup, cross_fit, tmp_path) -> None:
    from valuedetect.detectors import load_detector
    from valuedetect.protocol import cross_fit_held_out, ids_digest, make_splits

    training = load_split("training", setup["data"])
    fit = make_splits(training, training).fit
    path = tmp_path / "oof.tsv"
    meta = write_teacher_scores(list(reversed(cross_fit["folders"])), training, path)  # any order
    ids, scores = read_teacher_scores(path)
    assert ids == fit.ids and meta["arguments"] == len(fit) < len(training)  # fit only: never dev
    assert meta["protocol"]["fit_ids_sha256"] == ids_digest(fit.ids) and meta["protocol"]["cross_fit"]["folds"] == 2
    for fold, folder in enumerate(cross_fit["folders"]):
        rows = cross_fit_held_out(fit, 2, fold, 0)
        teacher = load_detector(folder)
        # the teacher left exactly these arguments out, and they carry its scores, not the other's
        assert teacher.info["protocol"]["cross_fit"]["held_out_arguments"] == len(rows)
        assert teacher.info["protocol"]["fit_arguments"] == len(fit)
        expected = teacher.predict_proba([fit.arguments[i] for i in rows])
        assert np.allclose(scores[rows], expected, atol=6e-5)
        other = load_detector(cross_fit["folders"][1 - fold]).predict_proba([fit.arguments[i] for i in rows])
        assert not np.allclose(scores[rows], other, atol=1e-3)
    student = _student(setup, tmp_path / "student", str(path))
    assert student.detector.info["distillation"]["teacher_scores_sha256"] == meta["sha256"]


def test_a_cross_fitting_fold_trains_on_the_fit_split_minus_that_fold(setup, cross_fit, tmp_path) -> None:
    for folder in cross_fit["folders"]:
        record = json.loads((folder / "results.json").read_text())
        protocol = record["protocol"]
        assert record["training_arguments"] == protocol["fit_arguments"] - protocol["cross_fit"]["held_out_arguments"]
    # one fold alone would teach most of the fit split in-sample, and a fold is no distilled student
    with pytest.raises(InputError, match="one cross-fitting fold"):
        _student(setup, tmp_path / "s", str(cross_fit["folders"][0]))
    with pytest.raises(ConfigError, match="cross-fitting fold with distill_from"):
        _student(setup, tmp_path / "f", str(setup["teacher"]), cross_fit_folds=2, cross_fit_fold=0)
    assert not (tmp_path / "f").exists()


def test_out_of_fold_scores_need_every_fold_once_from_matching_teachers(setup, cross_fit, tmp_path) -> None:
    training = load_split("training", setup["data"])
    first, second = cross_fit["folders"]
    with pytest.raises(InputError, match="fold 1 missing"):
        write_teacher_scores([first], training, tmp_path / "a.tsv")
    with pytest.raises(InputError, match="fold 1 missing; fold 0 given twice"):
        write_teacher_scores([first, first], training, tmp_path / "b.tsv")
    with pytest.raises(InputError, match="was not"):
        write_teacher_scores([first, setup["teacher"]], training, tmp_path / "c.tsv")
    other_seed = tmp_path / "other-seed"
    run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"], epochs=1), data_dir=str(setup["data"]),
                             output=str(other_seed), predict_test=False, cross_fit_folds=2, cross_fit_fold=1,
                             subset_seed=5), check_int8=False)
    with pytest.raises(InputError, match="disagree on the fold seed"):
        write_teacher_scores([first, other_seed], training, tmp_path / "d.tsv")
    other_recipe = tmp_path / "other-recipe"  # fold 1, but trained for one epoch instead of two
    run_training(TrainConfig(method="encoder", detector=_encoder(setup["model"], epochs=1), data_dir=str(setup["data"]),
                             output=str(other_recipe), predict_test=False, cross_fit_folds=2, cross_fit_fold=1),
                 check_int8=False)
    with pytest.raises(InputError, match="disagree on the recipe"):
        write_teacher_scores([first, other_recipe], training, tmp_path / "f.tsv")
    # a teacher record whose fold is not the one recomputed here is refused, not trusted
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(second, tampered)
    info = json.loads((tampered / "detector.json").read_text())
    info["info"]["protocol"]["cross_fit"]["held_out_ids_sha256"] = "0" * 16
    (tampered / "detector.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="not the fold this teacher left out"):
        write_teacher_scores([first, tampered], training, tmp_path / "e.tsv")
    assert not any((tmp_path / f"{n}.tsv").exists() for n in "abcdef")
