"""The NLI side task on tiny random models (no downloads): labels from the stance, the metric, and
training through the one training run: the held-out protocol (dev from training, grouped by
conclusion, chooses; validation is scored once), the encoder and prompt detectors with their
trainers, checkpoints and resume, the templates and the configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tiny_lm import tiny_causal_lm
from tests.tiny_models import small_data_dir, tiny_bert

from valuedetect import nli
from valuedetect.config import TrainConfig, from_dict
from valuedetect.data import Argument, load_split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.detectors.encoder import EncoderDetector
from valuedetect.encoder.trainer import Interrupted
from valuedetect.errors import ConfigError, InputError
from valuedetect.nli import accuracy_interval, best_accuracy, nli_labels, nli_scores, tune_accuracy
from valuedetect.protocol import ids_digest
from valuedetect.templates import NLI_TEMPLATES, prompt_template
from valuedetect.training import run_training

HIDDEN = 32
VALIDATION = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nli")


@pytest.fixture(scope="module")
def data(root: Path) -> Path:
    return small_data_dir(root / "data", training=60, validation=VALIDATION, test=6)


@pytest.fixture(scope="module")
def bert(root: Path) -> str:
    return str(tiny_bert(root / "bert", dropout=0.1))


@pytest.fixture(scope="module")
def llama(root: Path) -> str:
    return str(tiny_causal_lm(root / "llama", chat=False))


def encoder_settings(bert: str, **extra: object) -> dict:
    return {"model": bert, "epochs": 3, "batch_size": 8, "lr": 2e-3, "head_lr": 2e-3, "trainable_layers": -1,
            "patience": 0, **extra}


def nli_config(data: Path, output: Path, method: str, detector: dict, **extra: object) -> TrainConfig:
    return TrainConfig(method=method, task="nli", data_dir=str(data), output=str(output), detector=detector,
                       **extra)


def read_predictions(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Argument ID\tgold\tpredicted\tp_support"
    return [line.split("\t") for line in lines[1:]]


def check_predictions(path: Path, split_name: str, data: Path, threshold: float) -> list[str]:
    """Gold from the stance; predicted from p and the kept threshold; the IDs, in order."""
    stance = {a.id: a.stance for name in ("training", "validation") for a in load_split(name, data).arguments}
    rows = read_predictions(path)
    for arg_id, gold, predicted, p in rows:
        assert gold == ("support" if stance[arg_id] == "in favor of" else "attack"), (split_name, arg_id)
        assert 0.0 <= float(p) <= 1.0
        assert predicted == ("support" if float(p) >= threshold else "attack")
    return [r[0] for r in rows]


def accuracy_of(path: Path) -> float:
    rows = read_predictions(path)
    return sum(gold == predicted for _, gold, predicted, _ in rows) / len(rows)


# ----------------------------------------------------------------------------- labels and metric


def test_labels_come_from_the_stance() -> None:
    arguments = [Argument("a", " Fast food harms. ", "We should ban fast food", "in favor of"),
                 Argument("b", "People choose freely.", "We should ban fast food", "against")]
    assert nli_labels(arguments).tolist() == [[1], [0]]
    assert nli.LABELS[1] == "support" and nli.LABELS[0] == "attack"
    with pytest.raises(InputError, match="'free' has no conclusion or stance"):
        nli_labels([Argument("free", "Just some text.")])


def test_scores_and_interval() -> None:
    gold = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    predicted = [1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    scores = nli_scores(gold, predicted, seed=3)
    assert scores.accuracy == pytest.approx(0.7) and scores.n == 10
    # support: P 4/6, R 4/5 -> F1 8/11; attack: P 3/4, R 3/5 -> F1 2/3
    assert scores.macro_f1 == pytest.approx((8 / 11 + 2 / 3) / 2)
    low, high = scores.ci95
    assert low <= 0.7 <= high and low < high
    assert nli_scores(gold, predicted, seed=3).ci95 == (low, high)  # seeded
    assert nli_scores(gold, predicted, bootstrap=0).ci95 is None
    assert set(scores.to_dict()) == {"accuracy", "ci95", "macro_f1", "n"}
    assert accuracy_interval(np.ones(5)) == (1.0, 1.0)


def test_the_threshold_maximises_accuracy_and_ties_stay_near_one_half() -> None:
    scores = np.array([[0.9], [0.8], [0.7], [0.65], [0.6]])
    labels = np.array([[1], [1], [1], [0], [0]])
    threshold, accuracy = best_accuracy(scores, labels)
    assert accuracy == 1.0 and 0.65 < threshold <= 0.7
    # every threshold in (0.2, 0.8] separates these: the one nearest 0.5 is kept
    assert best_accuracy(np.array([[0.2], [0.8]]), np.array([[0], [1]]))[0] == pytest.approx(0.5)
    kept = tune_accuracy(scores, labels)
    assert kept.values == [threshold] and kept.report["tuned_accuracy"] == 1.0
    fixed = tune_accuracy(scores, labels, mode="fixed")
    assert fixed.values == [0.5] and fixed.report["tuned_accuracy"] == pytest.approx(0.6)


# ----------------------------------------------------------------------------- templates


def test_the_nli_prompt_asks_one_question_after_the_argument() -> None:
    template = NLI_TEMPLATES["nli"]
    argument = Argument("a", "Fast food harms children.", "We should ban fast food", "in favor of")
    context, suffix = template.render_parts(argument)
    assert context == ("Question: Given the premise: Fast food harms children. Does it support the conclusion: "
                       "We should ban fast food?")
    assert suffix == " The answer is" and template.has_question and not template.has_mask
    masked = prompt_template("mine", {"mine": {"task": "nli", "text": "{premise} Then {conclusion}? {mask}"}})
    assert masked.task == "nli" and masked.has_mask and not masked.has_question
    assert masked.render_parts(argument) == ("Fast food harms children. Then We should ban fast food?", "")
    for table, message in (({"task": "nli", "text": "{premise} {stance} {conclusion}?"}, "shows the stance"),
                           ({"task": "nli", "text": "{premise} holds?"}, "must contain {conclusion}"),
                           ({"task": "nli", "text": "{premise} {conclusion}", "free_text": "x"}, "'text' and"),
                           ({"task": "nli", "text": "{premise} {conclusion}", "verbalizer": "synonyms"},
                            "label words")):
        with pytest.raises(ConfigError, match=message):
            prompt_template("mine", {"mine": table})


@pytest.mark.parametrize(("method", "detector", "message"), [
    ("encoder", {"template": "plain"}, "shows the stance"),
    ("encoder", {"template": "{premise}"}, "does not show the conclusion"),
    ("prompt", {"template": "bca"}, "'bca' is a values template; the nli task"),
    ("prompt", {"templates": {"q": {"task": "nli", "text": "{premise} {conclusion}"}}, "template": "q",
                "soft_prompt_tokens": 2}, "soft_prompt_placement = 'after'"),
])
def test_a_detector_setting_that_cannot_serve_nli_is_refused(method: str, detector: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_detector(method, detector, "test", task="nli")


def test_the_value_task_refuses_an_nli_template() -> None:
    with pytest.raises(ConfigError, match="'nli' is a nli template; the values task"):
        make_detector("prompt", {"template": "nli"}, "test")
    placed_before = make_detector("prompt", {"templates": {"q": {"task": "nli", "text": "{premise} {conclusion}"}},
                                             "template": "q", "soft_prompt_tokens": 2,
                                             "soft_prompt_placement": "before"}, "test", task="nli")
    assert placed_before.task.name == "nli"


@pytest.mark.parametrize(("settings", "message"), [
    ({"method": "llm", "task": "nli"}, "method 'llm' does not learn the nli task; methods for it: encoder, prompt"),
    ({"method": "encoder", "task": "stance"}, "unknown task 'stance'"),
    ({"method": "encoder", "task": "nli", "training_per_category": 5}, "takes training_fraction"),
])
def test_train_config_errors_name_the_problem(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, settings, "test")


def test_the_task_fills_its_template_into_the_saved_config() -> None:
    assert make_detector("encoder", {}, task="nli").config.template == "pair"
    assert make_detector("prompt", {}, task="nli").config.template == "nli"
    assert make_detector("encoder", {}).config.template == "plain"


# ----------------------------------------------------------------------------- the protocol


def test_encoder_nli_chooses_on_dev_and_scores_validation_once(bert: str, data: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The run fits on training minus dev, chooses epochs and the threshold on dev (which shares no
    conclusion with what is fitted), encodes validation once, after every choice, and says so."""
    encoded: list[list[str]] = []
    original = EncoderDetector._encode

    def spy(self, arguments):
        encoded.append([a.id for a in arguments])
        return original(self, arguments)

    monkeypatch.setattr(EncoderDetector, "_encode", spy)
    out = tmp_path / "run"
    result = run_training(nli_config(data, out, "encoder", encoder_settings(bert)))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    validation = load_split("validation", data)
    training = {a.id: a for a in load_split("training", data).arguments}
    fit_ids, dev_ids = encoded[0], encoded[1]
    assert set(fit_ids) | set(dev_ids) == set(training) and not set(fit_ids) & set(dev_ids)
    assert {training[i].conclusion for i in fit_ids}.isdisjoint(training[i].conclusion for i in dev_ids)
    # validation: encoded exactly once, after training and the threshold's choice; then test (whose
    # arguments small_data_dir cuts from validation's)
    before_test, test_ids = encoded[:-1], encoded[-1]
    assert [ids for ids in before_test if set(ids) & set(validation.ids)] == [validation.ids] == before_test[-1:]
    assert all(set(ids) <= set(training) for ids in before_test[:-1]) and len(test_ids) == 6

    assert results["task"] == "nli" and results["protocol"]["name"] == "heldout"
    assert results["validation_held_out"] is True and results["split"] == "validation"
    assert results["protocol"]["dev_ids_sha256"] == ids_digest(dev_ids)
    assert results["protocol"]["fit_arguments"] == len(fit_ids) == results["training_arguments"]
    assert set(results["validation"]) == {"accuracy", "ci95", "macro_f1", "n"}
    assert results["validation"]["n"] == VALIDATION and results["dev"]["n"] == len(dev_ids)
    low, high = results["validation"]["ci95"]
    assert low <= results["validation"]["accuracy"] <= high
    assert results["dev"]["ci95"] is None  # dev chose: no interval is claimed for it
    assert {"train_cpu_seconds", "validation_cpu_seconds", "cores"} <= set(results["compute"])
    training_standard = results["training"]
    assert training_standard["epochs_completed"] == 3.0 and training_standard["stopped_by"] == "epochs"
    assert training_standard["final_loss"] > 0 and training_standard["constant_loss"] > 0
    history = results["info"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and all("dev_accuracy" in h for h in history)
    best = max(history, key=lambda h: h["dev_accuracy"])
    assert results["info"]["best_epoch"] == best["epoch"]

    threshold = results["thresholds"]["values"][0]
    assert len(results["thresholds"]["values"]) == 1
    assert check_predictions(out / "dev-predictions.tsv", "dev", data, threshold) == dev_ids
    assert check_predictions(out / "validation-predictions.tsv", "validation", data, threshold) == validation.ids
    # the threshold was chosen for dev's accuracy, and the scores are what the files say
    assert results["thresholds"]["report"]["tuned_accuracy"] == pytest.approx(accuracy_of(out / "dev-predictions.tsv"))
    assert results["dev"]["accuracy"] == pytest.approx(accuracy_of(out / "dev-predictions.tsv"))
    assert results["validation"]["accuracy"] == pytest.approx(accuracy_of(out / "validation-predictions.tsv"))
    assert result.validation_scores.accuracy == results["validation"]["accuracy"]
    assert len(read_predictions(out / "test-predictions.tsv")) == 6 and "test_accuracy" not in results["info"]
    assert np.load(out / "validation-scores.npy").shape == (VALIDATION, 1)
    assert not (out / "checkpoint").exists()

    # the saved detector is an NLI detector: it loads as one, and predict/serve refuse it
    loaded = load_detector(out)
    assert loaded.task.name == "nli" and loaded.config.template == "pair"
    assert np.allclose(loaded.predict_proba(validation.arguments), np.load(out / "validation-scores.npy"), atol=1e-3)
    import valuedetect as vd

    with pytest.raises(InputError, match="nli task; predict and serve label value categories"):
        vd.load(out)  # the path `valuedetect predict` takes


def test_the_paper_protocol_is_stated_as_optimistic(bert: str, data: Path, tmp_path: Path) -> None:
    run_training(nli_config(data, tmp_path / "run", "encoder", encoder_settings(bert, epochs=1), protocol="paper",
                            predict_test=False))
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["validation_held_out"] is False and results["protocol"]["optimistic"] is True
    assert results["dev"]["n"] == results["validation"]["n"] == VALIDATION


def test_subsets_are_seeded_and_stated(bert: str, data: Path, tmp_path: Path) -> None:
    config = nli_config(data, tmp_path / "run", "encoder", encoder_settings(bert, epochs=1), validation_limit=5,
                        training_fraction=0.5, subset_seed=7, predict_test=False)
    run_training(config)
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["validation_subset"] == "seeded sample of 5 of 16 arguments (seed 7)"
    assert results["training_subset"].startswith("seeded 50%")
    chosen = sorted(np.random.default_rng(7).choice(VALIDATION, size=5, replace=False).tolist())
    expected = [load_split("validation", data).ids[i] for i in chosen]
    assert [r[0] for r in read_predictions(tmp_path / "run" / "validation-predictions.tsv")] == expected


# ----------------------------------------------------------------------------- resume


def test_an_interrupted_encoder_run_resumes_to_the_uninterrupted_result(bert: str, data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = encoder_settings(bert, checkpoint_every=2)
    reference = run_training(nli_config(data, tmp_path / "reference", "encoder", settings, predict_test=False))

    def stop(state) -> None:  # 7 steps an epoch: stop inside the second epoch
        if state.epoch == 1 and state.step_in_epoch == 3:
            raise Interrupted

    out = tmp_path / "run"
    config = nli_config(data, out, "encoder", settings, predict_test=False)
    monkeypatch.setattr(EncoderDetector, "on_step", staticmethod(stop), raising=False)
    with pytest.raises(Interrupted):
        run_training(config)
    monkeypatch.delattr(EncoderDetector, "on_step")
    assert (out / "checkpoint" / "checkpoint.pt").exists() and not (out / "results.json").exists()
    with pytest.raises(InputError, match="unfinished run; pass --resume"):
        run_training(config)
    with pytest.raises(InputError, match=r"task: 'nli' -> 'values'"):
        run_training(TrainConfig(method="encoder", data_dir=str(data), output=str(out), predict_test=False,
                                 detector={**settings, "template": "pair"}), resume=True)
    lines: list[str] = []
    resumed = run_training(config, resume=True, log=lines.append)
    assert any("resuming from" in line for line in lines), lines
    assert np.allclose(np.load(out / "validation-scores.npy"),
                       np.load(tmp_path / "reference" / "validation-scores.npy"), atol=1e-6)
    assert resumed.detector.info["history"] == reference.detector.info["history"]
    assert resumed.validation_scores == reference.validation_scores


def test_interrupted_prompt_tuning_resumes_to_the_same_prompt(llama: str, data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    settings = {"model": llama, "batch_size": 4, "soft_prompt_tokens": 2, "epochs": 2, "prompt_init": "random",
                "checkpoint_every": 3}
    run_training(nli_config(data, tmp_path / "reference", "prompt", settings, predict_test=False))

    class Killed(Exception):
        pass

    calls = []

    def kill_on_the_fifth_step(stage: str, done: int, total: int) -> None:
        if stage.startswith("prompt tuning"):
            calls.append(done)
            if len(calls) == 5:
                raise Killed

    out = tmp_path / "run"
    config = nli_config(data, out, "prompt", settings, predict_test=False)
    with pytest.raises(Killed):
        run_training(config, progress=kill_on_the_fifth_step)
    lines: list[str] = []
    run_training(config, resume=True, log=lines.append)
    assert any("prompt tuning resumed at epoch 1" in line for line in lines), lines
    expected = load_file(str(tmp_path / "reference" / "soft_prompt.safetensors"))
    got = load_file(str(out / "soft_prompt.safetensors"))
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    assert np.allclose(np.load(out / "validation-scores.npy"),
                       np.load(tmp_path / "reference" / "validation-scores.npy"), atol=1e-6)


# ----------------------------------------------------------------------------- prompting


def test_zero_shot_prompting_trains_nothing_and_chooses_its_threshold_on_dev(llama: str, data: Path,
                                                                             tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    run_training(nli_config(data, out, "prompt", {"model": llama, "batch_size": 8}, predict_test=False))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["detector_config"]["template"] == "nli" and results["training"] is None
    assert results["info"]["parameters_trainable"] == 0
    lm = AutoModelForCausalLM.from_pretrained(llama)
    assert results["info"]["parameters_total"] == sum(p.numel() for p in lm.parameters())
    threshold = results["thresholds"]["values"][0]
    check_predictions(out / "validation-predictions.tsv", "validation", data, threshold)
    assert results["thresholds"]["report"]["tuned_accuracy"] == pytest.approx(accuracy_of(out / "dev-predictions.tsv"))


@pytest.mark.parametrize("placement", ["after", "before"])
def test_prompt_tuning_trains_the_soft_prompt_only(llama: str, data: Path, tmp_path: Path, placement: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from valuedetect import prompt_tuning as tuning

    seen: dict = {}
    original = tuning.train_soft_prompt

    def spy(lm, task, *args, **kwargs):
        seen["lm"], seen["before"], seen["labels"] = lm, lm.soft_prompt.state(), task.labels
        return original(lm, task, *args, **kwargs)

    monkeypatch.setattr(tuning, "train_soft_prompt", spy)
    out = tmp_path / "run"
    settings = {"model": llama, "batch_size": 4, "soft_prompt_tokens": 2, "epochs": 1,
                "soft_prompt_placement": placement}
    run_training(nli_config(data, out, "prompt", settings, predict_test=False))
    lm = seen["lm"]
    after = lm.soft_prompt.state()
    assert not all(torch.equal(after[k], seen["before"][k]) for k in after)  # the prompt trained
    original_lm = AutoModelForCausalLM.from_pretrained(llama).state_dict()
    base = lm.model.state_dict()
    assert set(base) == set(original_lm) and all(torch.equal(base[k], original_lm[k]) for k in original_lm)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    # trained on the stance labels of the fitted arguments: one column, support = 1
    assert seen["labels"].shape == (results["training_arguments"], 1)
    assert results["info"]["parameters_trainable"] == 2 * HIDDEN
    assert results["info"]["soft_prompt_placement"] == placement
    assert results["training"]["epochs_completed"] == 1.0 and results["training"]["constant_loss"] > 0
    assert len(read_predictions(out / "validation-predictions.tsv")) == VALIDATION


# ----------------------------------------------------------------------------- command line


def test_the_train_command_runs_the_nli_task(bert: str, data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from valuedetect.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--task", "nli", "--method", "encoder", "--set", f"model={bert}",
                                      "--set", "epochs=1", "--set", "trainable_layers=1", "--data-dir", str(data),
                                      "--output", str(out), "--no-predict-test"])
    assert result.exit_code == 0, result.output
    assert "accuracy [95% CI]" in result.output and "threshold on P(support)" in result.output
    assert "held-out validation accuracy" in result.output
    assert (out / "validation-predictions.tsv").exists() and not (out / "validation-run.tsv").exists()
    refused = CliRunner().invoke(app, ["train", "--task", "nli", "--method", "tfidf", "--output", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "does not learn the nli task" in refused.output
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- experiments


def _experiment(tmp_path: Path, data: Path, runs: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(f'name = "nli"\nresults = "{tmp_path / "results"}"\n[defaults]\ndata_dir = "{data}"\n'
                    f"predict_test = false\n{runs}", encoding="utf-8")
    return path


def test_an_nli_run_of_an_experiment_is_a_training_run_with_a_record_and_a_report(bert: str, data: Path,
                                                                                  tmp_path: Path) -> None:
    from valuedetect.experiments.config import load_experiment
    from valuedetect.experiments.records import RunRecord
    from valuedetect.experiments.report import write_report
    from valuedetect.experiments.runner import RunState, _prepare_folder
    from valuedetect.experiments.worker import run_one

    grid = _experiment(tmp_path, data, f'''
[[run]]
name = "nli-ft"
task = "nli"
method = "encoder"
seeds = [5]
detector = {{ model = "{bert}", epochs = 1, trainable_layers = 1 }}
''')
    experiment = load_experiment(grid)
    (spec,) = experiment.runs
    assert spec.task == "nli" and spec.family == "fine-tuning" and spec.model == bert
    assert spec.settings["task"] == "nli" and spec.settings["detector"]["seed"] == 5
    assert spec.settings["predict_test"] is False  # [defaults] apply to NLI runs as to any run
    record = run_one(_prepare_folder(experiment, RunState(spec, "pending")))
    assert record.done, record.error
    saved = RunRecord.load(tmp_path / "results" / "nli-ft-s5")
    assert saved.task == "nli" and saved.seed == 5 and saved.protocol["name"] == "heldout"
    assert set(saved.validation) == {"accuracy", "ci95", "macro_f1", "n"} and saved.dev["n"] > 0
    assert saved.outputs["validation_predictions"] == "run/validation-predictions.tsv"
    assert saved.outputs["dev_predictions"] == "run/dev-predictions.tsv" and saved.outputs["test_predictions"] is None
    assert saved.training is not None and saved.parameters_trainable < saved.parameters_total
    written = write_report(tmp_path / "results", data_dir=data, resamples=100)
    report = next(p for p in written if p.name == "report.md").read_text(encoding="utf-8")
    section = report[report.index("9. NLI side task"):]
    assert "| nli-ft-s5 | fine-tuning |" in section and "Dev accuracy" in section and "held-out" in section


def test_old_nli_run_keys_are_refused_naming_where_they_went(tmp_path: Path, data: Path) -> None:
    from valuedetect.experiments.config import load_experiment

    grid = _experiment(tmp_path, data, '''
[[run]]
name = "nli-ft"
task = "nli"
method = "encoder"
model = "minilm"
training_limit = 500
''')
    with pytest.raises(ConfigError, match=r"model -> detector.model; training_limit -> training_fraction"):
        load_experiment(grid)


def test_the_shipped_quick_grid_runs_nli_through_training_configs() -> None:
    from valuedetect.experiments.config import load_experiment

    runs = {r.name: r for r in load_experiment(Path(__file__).parents[1] / "configs" / "quick.toml").runs}
    encoder, prompt = runs["nli-ft-minilm"], runs["nli-bca-zero-smollm2"]
    assert (encoder.task, encoder.family, encoder.model) == ("nli", "fine-tuning", "minilm")
    assert (prompt.task, prompt.family, prompt.model) == ("nli", "prompt-zero-shot", "smollm2")
    assert from_dict(TrainConfig, {**encoder.settings, "output": None}).task == "nli"


def test_the_task_key_leaves_value_runs_hashes_and_fingerprints_as_they_were(data: Path) -> None:
    """Records and checkpoints made before TrainConfig had ``task`` must still match (the paper
    grid's finished runs are not rerun, a killed run still resumes)."""
    from valuedetect.config import stable_settings, to_dict
    from valuedetect.experiments.config import RunSpec
    from valuedetect.experiments.records import spec_hash
    from valuedetect.fingerprint import changed_parts, run_fingerprint

    values = to_dict(TrainConfig(method="tfidf"))
    later = ("task", "refit", "refit_data", "cross_fit_folds", "cross_fit_fold")
    before = {k: v for k, v in values.items() if k not in later}  # recorded before the keys
    assert RunSpec("r", "values", "baseline", values).hash == spec_hash({"task": "values", "settings": before})
    assert RunSpec("r", "nli", "fine-tuning", {**values, "method": "encoder", "task": "nli"}).hash != \
        RunSpec("r", "values", "fine-tuning", {**values, "method": "encoder"}).hash
    split = load_split("training", data)
    assert "task" not in run_fingerprint(stable_settings(values), {}, None, split, split)["run settings"]
    old = run_fingerprint(before, {}, None, split, split)
    nli_print = run_fingerprint(stable_settings({**values, "task": "nli"}), {}, None, split, split)
    assert changed_parts(old, json.loads(json.dumps(nli_print))) == ["run settings (task: 'values' -> 'nli')"]
