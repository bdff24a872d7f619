"""Value detection by prompting a frozen language model with a hard template (the paper's Exp-II,
zero-shot reference point).

Each (argument, category) pair is rendered with a prompt template (``templates.PROMPT_TEMPLATES``:
mbc, bca, oa, or a custom one from the config's ``templates`` table) and scored by label-word
log-probabilities at the answer position (``prompting.scoring``): P(yes) for Yes/No verbalizers,
the synonym mass for OA's knowledgeable verbalizer. fit() trains nothing: it only tunes the
thresholds on validation (base class).

Not in this slice: soft prompts / P-tuning with ``peft`` (training on the verbalizer words), the
CLS template's trainable heads, few-shot sampling, OA by generation + synonym matching, and
sharing the argument prefix's key/value cache across the 20 questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.prompting.scoring import LM_TYPES, LabelWordScorer, synonym_probability, yes_probability
from valuedetect.taxonomy import NUM_CATEGORIES, categories
from valuedetect.templates import PromptTemplate, Verbalizer, prompt_template, verbalizer_from_config


@dataclass
class PromptConfig(DetectorConfig):
    """Which model, which template and verbalizer, and how to batch."""

    model: str = "smollm2"  # a Hub name, a folder, or a causal alias (smollm2, gemma3-270m, qwen2.5-0.5b)
    lm_type: str = "auto"  # auto | masked | seq2seq | causal
    template: str = "bca"  # mbc | bca | oa | the name of a table in `templates`
    templates: dict[str, Any] = field(default_factory=dict)  # custom templates: name -> {text, free_text, verbalizer}
    verbalizer: str | dict[str, Any] = "auto"  # auto (the template's) | yes_no | synonyms | {positive, negative}
    max_length: int = 256
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("model must not be empty")
        if self.lm_type not in LM_TYPES:
            raise ValueError(f"lm_type must be one of {', '.join(LM_TYPES)}, not {self.lm_type!r}")
        for name in ("max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        self.prompt_template()  # raises ConfigError naming the field

    def prompt_template(self) -> PromptTemplate:
        template = prompt_template(self.template, self.templates, "prompt detector: 'templates'")
        if self.verbalizer != "auto":
            verbalizer = verbalizer_from_config(self.verbalizer, "prompt detector: 'verbalizer'")
            template = PromptTemplate(template.name, template.argument, template.free_text, verbalizer=verbalizer)
        return template


class PromptDetector(Detector):
    type_name = "prompt"
    config_class = PromptConfig
    config: PromptConfig

    def __init__(self, config: PromptConfig | None = None):
        super().__init__(config)
        # A scorer set by the caller (e.g. tests) is used instead of one built from the config.
        self.scorer: LabelWordScorer | None = None

    def _fit(self, train: Split, validation: Split | None) -> None:
        """Zero-shot: nothing to learn; the base class tunes thresholds on validation."""

    def _scorer(self) -> LabelWordScorer:
        if self.scorer is None:
            c = self.config
            self.scorer = LabelWordScorer(c.model, c.lm_type, max_length=c.max_length, batch_size=c.batch_size)
        return self.scorer.load()

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        scorer = self._scorer()
        template = self.config.prompt_template()
        if scorer.lm_type == "masked" and not template.has_mask:
            template = PromptTemplate(template.name, template.argument + " {mask}", template.free_text + " {mask}",
                                      verbalizer=template.verbalizer)
        mask = scorer.mask_token
        texts = [template.render_prompt(a, c, mask) for a in arguments for c in categories()]
        asked = [c.index for _ in arguments for c in categories()]
        scores = np.zeros(len(texts))
        step = max(self.config.batch_size * 4, NUM_CATEGORIES)
        for start in range(0, len(texts), step):
            part = slice(start, start + step)
            scores[part] = self._score(scorer, template.verbalizer, texts[part], asked[part])
            if self.progress:
                self.progress("prompt", min(start + step, len(texts)) // NUM_CATEGORIES, len(arguments))
        self.info["lm_type"] = scorer.lm_type
        self.info["template"] = template.name
        return scores.reshape(len(arguments), NUM_CATEGORIES)

    def _score(self, scorer: LabelWordScorer, verbalizer: Verbalizer, texts: list[str], asked: list[int]) -> np.ndarray:
        if verbalizer.kind == "synonyms":
            columns: list[int] = []
            own: list[list[int]] = []
            for c in categories():
                ids = scorer.token_ids(verbalizer.synonyms(c))
                own.append([])
                for token in ids:
                    if token not in columns:
                        columns.append(token)
                    if columns.index(token) not in own[-1]:
                        own[-1].append(columns.index(token))
            return synonym_probability(scorer.logprobs(texts, columns), own, asked)
        ids = scorer.token_ids([*verbalizer.positive, *verbalizer.negative])
        return yes_probability(scorer.logprobs(texts, ids), len(verbalizer.positive))


__all__ = ["PromptConfig", "PromptDetector"]
