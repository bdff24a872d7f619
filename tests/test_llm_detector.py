"""The llm detector: each strategy end to end on a tiny random LM or a scripted one, the
config's validation, saving and loading, seeded subsets, and the JSON-answer retry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.fake_lm import FakeLM
from tests.tiny_lm import tiny_causal_lm
from tests.tiny_models import tiny_bert

from valuedetect.data import Argument, Split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.detectors.llm import LLMDetector
from valuedetect.errors import ConfigError, InputError
from valuedetect.taxonomy import CATEGORY_NAMES


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="module")
def small(training: Split, validation: Split) -> tuple[Split, Split]:
    return training.subset(range(40)), validation.subset(range(6))


def _detector(tmp_path: Path, **settings: object) -> LLMDetector:
    return make_detector("llm", {"cache": str(tmp_path / "cache.sqlite"), **settings})  # type: ignore[return-value]


@pytest.mark.parametrize("strategy", ["per-value", "cot", "few-shot"])
def test_strategies_end_to_end_on_a_tiny_lm(strategy: str, tiny_lm_dir: Path, small: tuple[Split, Split],
                                            tmp_path: Path) -> None:
    train, validation = small
    detector = _detector(tmp_path, model=str(tiny_lm_dir), strategy=strategy, few_shot_k=2, max_new_tokens=8,
                         few_shot_encoder="tfidf")
    progress: list[tuple[str, int, int]] = []
    detector.progress = lambda task, done, total: progress.append((task, done, total))
    detector.fit(train, validation)
    assert detector.thresholds is not None
    scores = detector.dev_scores
    assert scores.shape == (6, 20) and np.all((scores > 0) & (scores < 1))
    assert progress[-1] == (f"llm {strategy}", 6, 6)
    usage = detector.info["usage"]
    assert usage["arguments"] == 6 and usage["cache_misses"] == usage["requests"] > 0
    assert usage["processed_tokens"] < usage["prompt_tokens"]  # the shared prefixes were reused

    saved = detector.save(tmp_path / "saved")
    loaded = load_detector(saved)
    assert isinstance(loaded, LLMDetector) and loaded.config == detector.config
    again = loaded.predict_proba(validation.arguments)  # every answer from the cache
    np.testing.assert_allclose(again, scores)
    assert loaded.info["usage"]["requests"] == usage["requests"]  # nothing new was sent
    assert loaded.predict(validation.arguments).shape == (6, 20)


def test_all_in_one_garbled_answer_is_retried_once_then_counted(small: tuple[Split, Split], tmp_path: Path) -> None:
    _, validation = small
    replies = {"first": 0, "retry": 0}

    def answer(text: str) -> str:
        if text.startswith("That answer was not valid"):
            replies["retry"] += 1
            return "still no JSON, sorry" if "Premise" not in text else '{"values": ["Tradition"]}'
        replies["first"] += 1
        return 'Sure: {"values": ["Achievement", "Benevolence: caring"]}' if replies["first"] % 2 else "I think Power."

    detector = _detector(tmp_path, strategy="all-in-one")
    detector.language_model = FakeLM(answer=answer)
    scores = detector.predict_proba(validation.arguments)
    assert replies == {"first": 6, "retry": 3}
    assert detector.info["usage"]["json_retries"] == 3 and detector.info["usage"]["unparsable_answers"] == 3
    assert scores[0, CATEGORY_NAMES.index("Achievement")] == 1.0 and scores[0].sum() == 2
    assert scores[1].sum() == 0  # unparsable twice: no values, no crash
    generate = detector.language_model.generate_calls
    assert generate[0].json_schema["properties"]["values"]["items"]["enum"] == list(CATEGORY_NAMES)
    assert generate[-1].context[-2] == {"role": "assistant", "content": "I think Power."}


def test_few_shot_selection_random_is_seeded_and_similar_picks_the_closest_last(
    small: tuple[Split, Split], tmp_path: Path
) -> None:
    train, validation = small
    bert = str(tiny_bert(tmp_path / "bert"))
    for selection, encoder in (("random", "minilm"), ("similar", "tfidf"), ("similar", bert)):
        detector = _detector(tmp_path, strategy="few-shot", few_shot_k=3, few_shot_selection=selection,
                             few_shot_encoder=encoder, few_shot_pool=25)
        detector._fit(train, None)
        assert len(detector._pool) == 25
        picks = detector._examples(validation.arguments[:2])
        assert [len(p) for p in picks] == [3, 3]
        assert detector._examples(validation.arguments[:2]) == picks  # the same every time
        if selection == "similar":  # a copy of a pool argument under another ID: that one comes last
            original = detector._pool[7].argument
            copy = Argument("copy", original.premise, original.conclusion, original.stance)
            assert detector._examples([copy])[0][-1].argument.id == original.id
        # An argument is never its own example.
        own = detector._pool[0].argument
        assert own.id not in [e.argument.id for e in detector._examples([own])[0]]


def test_config_is_validated_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy must be one of per-value, all-in-one, few-shot, cot"):
        make_detector("llm", {"strategy": "zero-shot"})
    with pytest.raises(ConfigError, match=r"backend must be one of transformers, transformers-causal, .*llamacpp, "
                                          r"openai"):
        make_detector("llm", {"backend": "vllm"})
    with pytest.raises(ConfigError, match="few_shot_k must be at least 1"):
        make_detector("llm", {"few_shot_k": 0})
    with pytest.raises(ConfigError, match="unknown key 'stratgy'"):
        make_detector("llm", {"stratgy": "cot"})
    with pytest.raises(InputError, match="must be fitted"):
        _detector(tmp_path, strategy="few-shot").predict_proba([Argument("x", "a premise")])


def test_thresholds_are_tuned_on_validation(small: tuple[Split, Split], tmp_path: Path) -> None:
    train, validation = small
    detector = _detector(tmp_path, strategy="per-value", thresholds="global")
    detector.language_model = FakeLM(yes=lambda text: 0.9 if "Security" in text else 0.1)
    detector.fit(train, validation)
    assert detector.thresholds is not None and detector.thresholds.mode == "global"
    assert detector.dev_scores.shape == (6, 20)
    security = [i for i, name in enumerate(CATEGORY_NAMES) if name.startswith("Security")]
    assert np.all(detector.dev_scores[:, security] == pytest.approx(0.9))


def test_budget_stops_the_run_and_a_rerun_resumes_from_the_cache(small: tuple[Split, Split], tmp_path: Path) -> None:
    from valuedetect.lm.api import BudgetExhausted

    _, validation = small
    detector = _detector(tmp_path, max_requests=50)
    detector.language_model = FakeLM()
    with pytest.raises(BudgetExhausted):
        detector.predict_proba(validation.arguments)
    assert detector.info["usage"]["requests"] == 50
    resumed = _detector(tmp_path)
    resumed.language_model = backend = FakeLM()
    resumed.predict_proba(validation.arguments)
    assert len(backend.score_calls) == 6 * 20 - 50 and resumed.info["usage"]["cache_hits"] == 50
