"""Value detection by prompting a frozen language model with a hard template (the paper's Exp-II,
zero-shot reference point).

Each (argument, category) pair is rendered with a prompt template (``templates.PROMPT_TEMPLATES``:
mbc, bca, oa, or a custom one from the config's ``templates`` table) and scored by label-word
log-probabilities at the answer position (``prompting.scoring``): P(yes) for Yes/No verbalizers,
the synonym mass for OA's knowledgeable verbalizer. With ``soft_prompt_tokens = 0`` (the default)
fit() trains nothing: it only tunes the thresholds on validation (base class). With
``soft_prompt_tokens > 0`` fit() trains a soft prompt shared by all categories on the frozen LM
(``prompting.tuning``: peft prompt tuning, cross-entropy on the verbalizer's two classes: Yes/No
words, or the asked category's synonyms against all others for OA); only the
prompt is saved (``soft_prompt.safetensors``), never the LM's weights.

With a causal LM the 20 questions about one argument share the argument's key/value cache
(``share_prefix = true``, the default; ``prompting.scoring``): the argument prefix runs once per
argument, so scoring costs about one argument plus 20 short questions, not 20 arguments.
``info`` records ``processed_tokens`` (token positions run) and ``prompt_tokens`` (what 20
separate prompts per argument would run) for the last ``predict_proba``.

OA (the synonym verbalizer) is read two ways (``oa_mode``): ``label-words`` scores the synonyms'
first tokens at the answer position (``synonym_probability``); ``generate`` lets the LM answer
greedily (``max_new_tokens``) and calls the pair positive, score 1.0, when the answer contains a
synonym of the asked category (``templates.match_synonym``), as the paper did. A pair whose
answer names no synonym scores half its label-word synonym probability (read from the same
generation's first step, no extra pass): the paper's rule alone gives only 0/1 scores, which
leave the validation-tuned thresholds nothing to rank and every unmatched pair tied; halving
keeps each unmatched pair (<= 0.5) below each matched one (1.0) and orders the unmatched ones by
the model's own preference for the asked category. ``info["oa_examples"]`` keeps the first five
answers.

The CLS template with trainable heads is the encoder detector with ``template = "cls"``; few-shot
training sets come from the run config (``training_per_category``). Not done: one soft prompt per
category (one shared prompt is trained; the template's value description says which value is
asked), and sharing the argument prefix while generating (generate mode runs each full prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.errors import ConfigError
from valuedetect.prompting.scoring import LM_TYPES, LabelWordScorer, synonym_probability, yes_probability
from valuedetect.prompting.tuning import (
    PROMPT_INITS,
    TuneSettings,
    attach_soft_prompt,
    init_text,
    parameter_counts,
    soft_prompt_state,
    train_soft_prompt,
)
from valuedetect.taxonomy import NUM_CATEGORIES, categories
from valuedetect.templates import (
    PromptTemplate,
    Verbalizer,
    match_synonym,
    prompt_template,
    verbalizer_from_config,
)

SOFT_PROMPT_FILE = "soft_prompt.safetensors"
OA_MODES = ("label-words", "generate")
# Generate mode: an answer without a synonym scores this times its synonym probability, so it
# stays below every answer with one (1.0) and still ranks (see the module docstring).
UNMATCHED_WEIGHT = 0.5
OA_EXAMPLES = 5


@dataclass
class PromptConfig(DetectorConfig):
    """Which model, which template and verbalizer, and how to batch."""

    model: str = "smollm2"  # a Hub name, a folder, or a causal alias (smollm2, gemma3-270m, qwen2.5-0.5b)
    lm_type: str = "auto"  # auto | masked | seq2seq | causal
    template: str = "bca"  # mbc | bca | oa | the name of a table in `templates`
    templates: dict[str, Any] = field(default_factory=dict)  # custom templates: name -> {text, free_text, verbalizer}
    verbalizer: str | dict[str, Any] = "auto"  # auto (the template's) | yes_no | synonyms | {positive, negative}
    max_length: int = 256
    batch_size: int = 16  # scoring and prompt-tuning batches
    # Causal LMs: run each argument's prefix once for its 20 questions (key/value cache shared);
    # false runs every prompt in full (same scores, slower).
    share_prefix: bool = True
    # Synonym verbalizer (OA): label-words (synonym probability at the answer position) |
    # generate (greedy answer of at most max_new_tokens, positive if it names a synonym; causal
    # or seq2seq LMs only).
    oa_mode: str = "label-words"
    max_new_tokens: int = 12
    # Prompt tuning (0 tokens: zero-shot with the hard template alone).
    soft_prompt_tokens: int = 0
    prompt_init: str = "text"  # text (the template's first words) | random
    epochs: int = 3
    lr: float = 0.03
    negative_ratio: float = 1.0  # negative pairs kept per positive pair, drawn afresh each epoch
    max_steps: int = 0  # 0: no limit
    max_seconds: float = 0.0  # 0: no limit
    checkpoint_every: int = 25  # prompt-tuning steps between checkpoints (a run resumes from the last)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("model must not be empty")
        if self.lm_type not in LM_TYPES:
            raise ValueError(f"lm_type must be one of {', '.join(LM_TYPES)}, not {self.lm_type!r}")
        for name in ("max_length", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must not be negative (0: only at the end of each epoch)")
        if self.soft_prompt_tokens < 0 or self.epochs < 0 or self.max_steps < 0 or self.max_seconds < 0:
            raise ValueError("soft_prompt_tokens, epochs, max_steps and max_seconds must not be negative")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, not {self.prompt_init!r}")
        if self.lr <= 0 or self.negative_ratio <= 0:
            raise ValueError("lr and negative_ratio must be positive")
        template = self.prompt_template()  # raises ConfigError naming the field
        if self.soft_prompt_tokens and self.oa_mode == "generate":
            raise ValueError("oa_mode = 'generate' reads free answers and cannot be prompt-tuned; use "
                             "oa_mode = 'label-words' with soft_prompt_tokens > 0")
        if self.oa_mode not in OA_MODES:
            raise ValueError(f"oa_mode must be one of {', '.join(OA_MODES)}, not {self.oa_mode!r}")
        if self.oa_mode == "generate":
            if template.verbalizer.kind != "synonyms":
                raise ValueError(f"oa_mode = 'generate' needs the synonym verbalizer (template 'oa'); template "
                                 f"{template.name!r} has the {template.verbalizer.name!r} verbalizer")
            if self.lm_type == "masked":
                raise ValueError("oa_mode = 'generate' needs a causal or seq2seq language model, not a masked one")

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
        self.soft_prompt: Any = None  # the peft model wrapping the scorer's LM, once attached
        self._soft_state: dict[str, Any] | None = None  # a loaded soft prompt, attached on first use

    def _fit(self, train: Split, validation: Split | None) -> None:
        """Zero-shot: nothing to learn (the base class tunes thresholds on validation); with
        soft prompt tokens, train the soft prompt on the training split first."""
        c = self.config
        if not c.soft_prompt_tokens:
            _, total = parameter_counts(self._scorer().model)  # the LM is frozen: nothing trains
            self.info.update(parameters_trainable=0, parameters_total=total, base_model=c.model)
            return
        if self.soft_prompt is not None:  # fit again: start from a fresh prompt on the bare LM
            self.scorer.model, self.soft_prompt, self._soft_state = self.soft_prompt.get_base_model(), None, None
        scorer = self._scorer()
        template = self._template(scorer)
        mask = scorer.mask_token
        asked = categories()
        verbalizer = template.verbalizer
        settings = TuneSettings(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, negative_ratio=c.negative_ratio,
                                max_steps=c.max_steps, max_seconds=c.max_seconds, seed=c.seed)
        if verbalizer.kind == "synonyms":
            columns, own = synonym_columns(scorer, verbalizer)
            positive: int | np.ndarray = np.zeros((NUM_CATEGORIES, len(columns)), dtype=bool)
            for k, mine in enumerate(own):
                positive[k, mine] = True
        else:
            columns, positive = scorer.token_ids([*verbalizer.positive, *verbalizer.negative]), len(verbalizer.positive)
        result = train_soft_prompt(
            scorer, lambda i, k: template.render_prompt(train.arguments[i], asked[k], mask),
            np.asarray(train.labels), positive, columns, settings, progress=self.progress, log=self.log,
            checkpoint_dir=self.checkpoint_dir, resume=self.resume, checkpoint_every=c.checkpoint_every,
        )
        trainable, total = parameter_counts(self.soft_prompt)
        self.info.update(
            parameters_trainable=trainable, parameters_total=total, base_model=c.model, lm_type=scorer.lm_type,
            soft_prompt_tokens=c.soft_prompt_tokens, prompt_init=c.prompt_init, history=result.history,
            budget={"max_steps": c.max_steps, "max_seconds": c.max_seconds, "epochs": c.epochs,
                    "steps": result.steps, "seconds": round(result.seconds, 3),
                    "epochs_completed": result.epochs_completed, "stopped_by": result.stopped_by},
            negative_sampling=f"all positive pairs and {c.negative_ratio:g} negative pair(s) per positive, "
                              f"drawn afresh each epoch (seed {c.seed})",
        )

    def _scorer(self) -> LabelWordScorer:
        c = self.config
        if self.scorer is None:
            self.scorer = LabelWordScorer(c.model, c.lm_type, max_length=c.max_length, batch_size=c.batch_size,
                                          share_prefix=c.share_prefix)
        scorer = self.scorer.load()
        scorer.share_prefix = c.share_prefix
        if c.oa_mode == "generate" and scorer.lm_type not in ("causal", "seq2seq"):
            raise ConfigError(f"prompt detector: oa_mode = 'generate' needs a causal or seq2seq language model; "
                              f"{c.model!r} is a {scorer.lm_type} one (use oa_mode = 'label-words')")
        if c.soft_prompt_tokens and self.soft_prompt is None:
            self.soft_prompt = attach_soft_prompt(scorer, c.soft_prompt_tokens, c.prompt_init,
                                                  init_text(c.prompt_template().argument), c.seed, self._soft_state)
        return scorer

    def _template(self, scorer: LabelWordScorer) -> PromptTemplate:
        template = self.config.prompt_template()
        if scorer.lm_type == "masked" and not template.has_mask:
            template = PromptTemplate(template.name, template.argument + " {mask}", template.free_text + " {mask}",
                                      verbalizer=template.verbalizer)
        return template

    def _save_weights(self, directory: Path) -> None:
        """Only the soft prompt (a few thousand numbers), never the frozen LM."""
        state = soft_prompt_state(self.soft_prompt) if self.soft_prompt is not None else self._soft_state
        if self.config.soft_prompt_tokens and state is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(directory / SOFT_PROMPT_FILE))

    def _load_weights(self, directory: Path) -> None:
        path = directory / SOFT_PROMPT_FILE
        if self.config.soft_prompt_tokens and path.exists():
            from safetensors.torch import load_file

            self._soft_state = load_file(str(path))

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        scorer = self._scorer()
        template = self._template(scorer)
        mask = scorer.mask_token
        texts = [template.render_prompt(a, c, mask) for a in arguments for c in categories()]
        asked = [c.index for _ in arguments for c in categories()]
        generate = self.config.oa_mode == "generate"
        examples: list[dict[str, Any]] = []
        processed, prompt = scorer.processed_tokens, scorer.prompt_tokens
        scores = np.zeros(len(texts))
        # Whole arguments per chunk, so no argument's questions are split from their shared prefix.
        step = NUM_CATEGORIES * max(1, -(-self.config.batch_size * 4 // NUM_CATEGORIES))
        for start in range(0, len(texts), step):
            part = slice(start, start + step)
            if generate:
                scores[part] = self._generate(scorer, template.verbalizer, texts[part], asked[part], examples)
            else:
                scores[part] = self._score(scorer, template.verbalizer, texts[part], asked[part])
            if self.progress:
                self.progress("prompt", min(start + step, len(texts)) // NUM_CATEGORIES, len(arguments))
        self.info.update(lm_type=scorer.lm_type, template=template.name,
                         share_prefix=scorer.share_prefix and scorer.lm_type == "causal" and not generate,
                         processed_tokens=scorer.processed_tokens - processed,
                         prompt_tokens=scorer.prompt_tokens - prompt)
        if template.verbalizer.kind == "synonyms":
            self.info["oa_mode"] = self.config.oa_mode
        if generate:
            self.info["oa_examples"] = [
                {"argument": arguments[k // NUM_CATEGORIES].id, **example} for k, example in enumerate(examples)
            ][:OA_EXAMPLES]
        return scores.reshape(len(arguments), NUM_CATEGORIES)

    def _score(self, scorer: LabelWordScorer, verbalizer: Verbalizer, texts: list[str], asked: list[int]) -> np.ndarray:
        if verbalizer.kind == "synonyms":
            columns, own = synonym_columns(scorer, verbalizer)
            return synonym_probability(scorer.logprobs(texts, columns), own, asked)
        ids = scorer.token_ids([*verbalizer.positive, *verbalizer.negative])
        return yes_probability(scorer.logprobs(texts, ids), len(verbalizer.positive))

    def _generate(self, scorer: LabelWordScorer, verbalizer: Verbalizer, texts: list[str], asked: list[int],
                  examples: list[dict[str, Any]]) -> np.ndarray:
        """OA by generation: 1.0 where the answer names a synonym of the asked category, else
        ``UNMATCHED_WEIGHT`` times the synonym probability at the answer's first step."""
        columns, own = synonym_columns(scorer, verbalizer)
        answers = scorer.generate(texts, self.config.max_new_tokens, columns)
        fallback = synonym_probability(answers.first_logprobs, own, asked)
        scores = np.zeros(len(texts))
        for k, (text, c) in enumerate(zip(answers.texts, asked, strict=True)):
            matched = match_synonym(text, verbalizer.synonyms(categories()[c]))
            scores[k] = 1.0 if matched is not None else UNMATCHED_WEIGHT * fallback[k]
            if len(examples) < OA_EXAMPLES:
                examples.append({"category": categories()[c].name, "answer": text, "matched": matched})
        return scores


def synonym_columns(scorer: LabelWordScorer, verbalizer: Verbalizer) -> tuple[list[int], list[list[int]]]:
    """The distinct first tokens of all 20 categories' synonyms (the columns to read), and for
    each category the indices of its own among them (``synonym_probability``'s ``own``)."""
    columns: list[int] = []
    own: list[list[int]] = []
    for c in categories():
        own.append([])
        for token in scorer.token_ids(verbalizer.synonyms(c)):
            if token not in columns:
                columns.append(token)
            if columns.index(token) not in own[-1]:
                own[-1].append(columns.index(token))
    return columns, own


__all__ = ["OA_MODES", "PromptConfig", "PromptDetector", "synonym_columns"]
