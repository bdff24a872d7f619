"""The NLI side task on tiny random models (no downloads): pairs and labels from the stance, encoder
fine-tuning, zero-shot and tuned prompts with the LM frozen, scores, subsets and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tiny_lm import tiny_causal_lm
from tests.tiny_models import small_data_dir, tiny_bert

from valuedetect import nli
from valuedetect.data import Argument, load_split
from valuedetect.errors import ConfigError, InputError
from valuedetect.nli import NLIConfig, accuracy_interval, nli_config_from_dict, nli_pairs, nli_scores, run_nli

HIDDEN = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nli")


@pytest.fixture(scope="module")
def data(root: Path) -> Path:
    return small_data_dir(root / "data", training=24, validation=16)


@pytest.fixture(scope="module")
def bert(root: Path) -> str:
    return str(tiny_bert(root / "bert", dropout=0.0))


@pytest.fixture(scope="module")
def llama(root: Path) -> str:
    return str(tiny_causal_lm(root / "llama", chat=False))


def read_predictions(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Argument ID\tgold\tpredicted\tp_support"
    return [line.split("\t") for line in lines[1:]]


def check_predictions(output: Path, data: Path, ids: list[str] | None = None) -> None:
    """One row per validation argument in split order; gold from the stance; predicted from p."""
    validation = load_split("validation", data)
    stance = {a.id: a.stance for a in validation.arguments}
    rows = read_predictions(output / "validation-predictions.tsv")
    assert [r[0] for r in rows] == (ids if ids is not None else validation.ids)
    for arg_id, gold, predicted, p in rows:
        assert gold == ("support" if stance[arg_id] == "in favor of" else "attack")
        assert 0.0 <= float(p) <= 1.0
        assert predicted == ("support" if float(p) >= 0.5 else "attack")


def check_results(result: dict, output: Path, n: int) -> None:
    assert json.loads((output / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(result))
    assert result["task"] == "nli"
    for key in ("parameters_trainable", "parameters_total", "train_seconds", "inference_seconds",
                "training_arguments", "validation_subset", "budget"):
        assert key in result
    v = result["validation"]
    assert set(v) == {"accuracy", "ci95", "macro_f1", "n"} and v["n"] == n
    assert v["ci95"][0] <= v["accuracy"] <= v["ci95"][1]


def test_pairs_take_their_label_from_the_stance() -> None:
    arguments = [Argument("a", " Fast food harms. ", "We should ban fast food", "in favor of"),
                 Argument("b", "People choose freely.", "We should ban fast food", "against")]
    pairs = nli_pairs(arguments)
    assert [(p.id, p.premise, p.conclusion, p.label) for p in pairs] == [
        ("a", "Fast food harms.", "We should ban fast food", 1), ("b", "People choose freely.",
                                                                  "We should ban fast food", 0)]
    assert nli.LABELS[pairs[0].label] == "support" and nli.LABELS[pairs[1].label] == "attack"
    with pytest.raises(InputError, match="'free' has no conclusion or stance"):
        nli_pairs([Argument("free", "Just some text.")])


def test_scores_and_interval() -> None:
    gold = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    predicted = [1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    scores = nli_scores(gold, predicted, seed=3)
    assert scores["accuracy"] == pytest.approx(0.7) and scores["n"] == 10
    # support: P 4/6, R 4/5 -> F1 8/11; attack: P 3/4, R 3/5 -> F1 2/3
    assert scores["macro_f1"] == pytest.approx((8 / 11 + 2 / 3) / 2)
    low, high = scores["ci95"]
    assert low <= 0.7 <= high and low < high
    assert nli_scores(gold, predicted, seed=3)["ci95"] == [low, high]  # seeded
    assert accuracy_interval(np.ones(5)) == (1.0, 1.0)


def test_validation_subsets_are_seeded_and_stated(data: Path) -> None:
    pairs = nli_pairs(load_split("validation", data).arguments)
    first, note = nli.seeded_subset(pairs, 5, seed=7, what="validation")
    again, _ = nli.seeded_subset(pairs, 5, seed=7, what="validation")
    other, _ = nli.seeded_subset(pairs, 5, seed=8, what="validation")
    assert first == again and len(first) == 5 and first != other
    assert note == "seeded sample of 5 of 16 validation arguments (seed 7)"
    # The same arguments as the values task's validation subset for the same limit and seed.
    chosen = sorted(np.random.default_rng(7).choice(16, size=5, replace=False).tolist())
    assert [p.id for p in first] == [pairs[i].id for i in chosen]
    assert nli.seeded_subset(pairs, 16, seed=7, what="validation") == (pairs, None)


def test_encoder_training_lowers_the_loss_and_writes_predictions(bert: str, data: Path, tmp_path: Path) -> None:
    # 20 epochs of 6 steps: enough for a tiny random BERT to fit 24 pairs (about 1 s).
    config = NLIConfig(method="encoder", model=bert, epochs=20, batch_size=4, lr=2e-3, warmup=0.0)
    logged: list[str] = []
    result = run_nli(config, tmp_path, data_dir=data, log=logged.append)
    history = result["history"]
    assert len(history) == 20 and history[-1]["loss"] < history[0]["loss"] - 0.2, history
    check_predictions(tmp_path, data)
    check_results(result, tmp_path, n=16)
    assert result["parameters_trainable"] == result["parameters_total"] > 0
    assert result["training_arguments"] == 24 and result["validation_subset"] is None
    assert result["budget"] == {"max_steps": 0, "max_seconds": 0.0, "steps": 120, "epochs_completed": 20,
                                "stopped_by": None}
    assert result["config"]["max_length"] == 128 and any("accuracy" in line for line in logged)


def test_encoder_budget_and_limits_are_stated(bert: str, data: Path, tmp_path: Path) -> None:
    config = NLIConfig(model=bert, epochs=3, batch_size=4, max_steps=2, validation_limit=5, training_limit=10,
                       subset_seed=7)
    result = run_nli(config, tmp_path, data_dir=data)
    assert result["budget"]["steps"] == 2 and result["budget"]["stopped_by"] == "max_steps"
    assert result["validation_subset"] == "seeded sample of 5 of 16 validation arguments (seed 7)"
    assert result["training_subset"] == "seeded sample of 10 of 24 training arguments (seed 7)"
    assert result["training_arguments"] == 10
    pairs = nli_pairs(load_split("validation", data).arguments)
    expected = [p.id for p in nli.seeded_subset(pairs, 5, 7, "validation")[0]]
    check_predictions(tmp_path, data, ids=expected)
    check_results(result, tmp_path, n=5)


def test_prompt_zero_shot(llama: str, data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    result = run_nli(NLIConfig(method="prompt", model=llama, batch_size=8), tmp_path, data_dir=data)
    check_predictions(tmp_path, data)
    check_results(result, tmp_path, n=16)
    assert result["parameters_trainable"] == 0 and result["training_arguments"] == 0
    lm = AutoModelForCausalLM.from_pretrained(llama)
    assert result["parameters_total"] == sum(p.numel() for p in lm.parameters())
    assert result["family"] == "prompt-zero-shot" and result["budget"]["steps"] == 0


def test_prompt_tuning_trains_the_soft_prompt_only(llama: str, data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from valuedetect import prompt_tuning as tuning

    seen: dict = {}
    original = tuning.train_soft_prompt

    def spy(lm, *args, **kwargs):
        seen["lm"], seen["before"] = lm, lm.soft_prompt.state()
        return original(lm, *args, **kwargs)

    monkeypatch.setattr(tuning, "train_soft_prompt", spy)
    config = NLIConfig(method="prompt", model=llama, soft_prompt_tokens=2, batch_size=4, max_steps=3,
                       validation_limit=8)
    result = run_nli(config, tmp_path, data_dir=data)
    lm = seen["lm"]
    after = lm.soft_prompt.state()
    assert not all(torch.equal(after[k], seen["before"][k]) for k in after)  # the prompt trained
    original_lm = AutoModelForCausalLM.from_pretrained(llama).state_dict()
    base = lm.model.state_dict()
    assert set(base) == set(original_lm) and all(torch.equal(base[k], original_lm[k]) for k in original_lm)
    assert result["parameters_trainable"] == 2 * HIDDEN
    assert result["parameters_total"] == 2 * HIDDEN + sum(v.numel() for v in original_lm.values())
    assert result["budget"]["steps"] == 3 and result["budget"]["stopped_by"] == "max_steps"
    assert result["family"] == "prompt-tuning" and result["training_arguments"] == 24
    check_results(result, tmp_path, n=8)
    assert len(read_predictions(tmp_path / "validation-predictions.tsv")) == 8


@pytest.mark.parametrize(("settings", "field"), [
    ({"method": "nli"}, "method"),
    ({"model": ""}, "model"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"max_steps": True}, "max_steps"),
    ({"max_seconds": float("nan")}, "max_seconds"),
    ({"warmup": 1.0}, "warmup"),
    ({"method": "prompt", "template": "{premise} Does it hold? The answer is"}, "template"),
    ({"method": "prompt", "template": "{premise} {conclusion} {value_name}?"}, "template"),
    ({"method": "prompt", "template": "{premise} {mask} {conclusion}"}, "template"),
    ({"method": "prompt", "verbalizer": "synonyms"}, "verbalizer"),
    ({"method": "prompt", "verbalizer": {"positive": ["Yes"]}}, "verbalizer"),
    ({"method": "prompt", "prompt_init": "zeros"}, "prompt_init"),
    ({"soft_prompt_tokens": 4}, "soft_prompt_tokens"),
    ({"validation_limit": 0}, "validation_limit"),
    ({"training_limit": "all"}, "training_limit"),
])
def test_config_errors_name_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        NLIConfig(**settings)


def test_config_defaults_depend_on_the_method() -> None:
    encoder, prompt = NLIConfig(), nli_config_from_dict({"method": "prompt"})
    assert (encoder.model, encoder.epochs, encoder.batch_size, encoder.lr, encoder.max_length) == (
        "minilm", 2, 32, 5e-5, 128)
    assert (prompt.model, prompt.lr, prompt.soft_prompt_tokens) == ("smollm2", 0.03, 0)
    assert prompt.label_words == (("Yes",), ("No",))
    assert "{premise}" in prompt.template and "{conclusion}" in prompt.template
    with pytest.raises(ConfigError, match="unknown key 'epoch' \\(did you mean 'epochs'\\?\\)"):
        nli_config_from_dict({"epoch": 3})


def test_bad_inputs_fail_with_a_clear_error(bert: str, data: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data folder not found"):
        run_nli(NLIConfig(model=bert), tmp_path / "out", data_dir=tmp_path / "missing")
    with pytest.raises(ConfigError, match="'model' names a folder that does not exist"):
        run_nli(NLIConfig(model=str(tmp_path / "no-model")), tmp_path / "out", data_dir=data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="'model' cannot be loaded as an encoder"):
        run_nli(NLIConfig(model=str(tmp_path / "empty")), tmp_path / "out", data_dir=data)
    with pytest.raises(ConfigError, match="'model' cannot be used for prompting"):
        run_nli(NLIConfig(method="prompt", model=str(tmp_path / "empty")), tmp_path / "out", data_dir=data)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        run_nli(NLIConfig(model=bert), tmp_path / "file", data_dir=data)
