"""Any strategy runs on any backend that can serve it, and an impossible pairing is refused before
any work with a message that says what would work: the prompt detector's templates on a
non-transformers backend, the llm strategies on a masked LM."""

from __future__ import annotations

import numpy as np
import pytest
from tests.fake_lm import FakeLM
from tests.tiny_lm import tiny_language_models

from valuedetect.data import load_split
from valuedetect.detectors import make_detector
from valuedetect.errors import ConfigError
from valuedetect.lm.registry import make_lm
from valuedetect.taxonomy import NUM_CATEGORIES

ARGUMENTS = load_split("validation").arguments[:2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_language_models(tmp_path_factory.mktemp("pairing-lms"))


def test_prompt_templates_zero_shot_on_any_scoring_backend():
    found = make_detector("prompt", {"template": "bca"})
    found.language_model = backend = FakeLM(yes=lambda text: 0.9 if "pleasure" in text else 0.2)
    scores = found.predict_proba(ARGUMENTS)
    assert scores.shape == (2, NUM_CATEGORIES) and scores[:, 3] == pytest.approx(0.9)  # Hedonism
    request = backend.score_calls[0]
    assert request.suffix.startswith(" Is it based on") and ARGUMENTS[0].premise in request.context


def test_prompt_tuning_needs_a_transformers_backend():
    found = make_detector("prompt", {"template": "bca", "soft_prompt_tokens": 4})
    found.language_model = FakeLM()
    with pytest.raises(ConfigError, match="only the transformers backends"):
        found.fit(load_split("validation").subset(range(4)))


def test_llm_strategies_on_a_masked_lm(models, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    per_value = make_detector("llm", {"strategy": "per-value", "backend": "transformers", "cache": cache,
                                      "model": str(models["masked"])})
    scores = per_value.predict_proba(ARGUMENTS)
    assert scores.shape == (2, NUM_CATEGORIES) and np.all((scores > 0) & (scores < 1))
    cot = make_detector("llm", {"strategy": "cot", "backend": "transformers", "cache": cache,
                                "model": str(models["masked"])})
    with pytest.raises(ConfigError, match="the cot strategy needs a language model that generates"):
        cot.predict_proba(ARGUMENTS)
    with pytest.raises(ConfigError, match="cannot generate text"):
        make_lm("transformers-masked", str(models["masked"])).generate_until([])
