"""Value detection by reading a frozen language model through a prompt template (the paper's
Exp-II): template x verbalizer x strategy x backend.

- template (``templates.PROMPT_TEMPLATES``: mbc, bca, bca_name, oa, or a custom table) renders each
  (argument, category) pair in two parts: the argument's context and the value's question;
- verbalizer (``templates.Verbalizer``) turns label-word log-probabilities into P(category):
  Yes/No words, or OA's knowledgeable verbalizer over all categories' synonyms;
- strategy: ``label-words`` scores the words at the answer position (``LM.loglikelihood``);
  ``generate`` (OA only) lets the model answer (``LM.generate_until``) and calls the pair
  positive, score 1.0, when the answer names a synonym of the asked category
  (``templates.match_synonym``), as the paper did; an answer naming none scores half its
  label-word probability from the same generation's first step, so the thresholds still have
  an order to work with;
- backend: any in ``lm.registry`` that can serve the strategy: transformers (causal, masked,
  seq2seq), llama.cpp, an OpenAI-compatible endpoint. An impossible pairing (a soft prompt on
  llama.cpp, generation on a masked LM) is refused before any work.

With ``soft_prompt_tokens > 0`` fit() trains a soft prompt on the frozen LM (``prompt_tuning``):
shared by all categories, or one per category (``soft_prompts = "per-category"``), placed after
the argument (``soft_prompt_placement = "after"``: the argument's key/values are computed once
and reused by its 20 questions and every epoch), after the question, right before the answer
("end": the question's states are reusable too, so only the soft tokens carry gradients), or in
front, as the paper did ("before"). Only
the prompt is saved (``soft_prompt.safetensors``), never the LM's weights. fit()'s second split
chooses the thresholds (base class); nothing here reads it otherwise.

For the NLI task (``valuedetect.nli``) the template is an NLI one (``templates.NLITemplate``,
``template = "nli"`` by default): one question per argument, whether its premise supports its
conclusion, read by label words; scoring, prompt tuning and its checkpoints are the same code.

``info`` records ``processed_tokens`` (token positions run) and ``prompt_tokens`` (what separate
prompts would run) for the last ``predict_proba``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector, DetectorConfig
from valuedetect.detectors.lm_backend import BackendSettings, build_backend, require
from valuedetect.errors import ConfigError, InputError
from valuedetect.lm.api import LM, PLACEMENTS, PROMPT_INITS, GenerateRequest, LoglikelihoodRequest
from valuedetect.taxonomy import NUM_CATEGORIES, categories
from valuedetect.templates import (
    NLITemplate,
    PromptTemplate,
    match_synonym,
    prompt_template,
    verbalizer_from_config,
)

SOFT_PROMPT_FILE = "soft_prompt.safetensors"
OA_MODES = ("label-words", "generate")
SOFT_PROMPTS = ("shared", "per-category")
LM_TYPES = ("auto", "masked", "seq2seq", "causal")
# Generate mode: an answer without a synonym scores this times its synonym probability, so it
# stays below every answer with one (1.0) and still ranks (see the module docstring).
UNMATCHED_WEIGHT = 0.5
OA_EXAMPLES = 5


@dataclass
class PromptConfig(DetectorConfig, BackendSettings):
    """Which model and backend, which template and verbalizer, and how to batch and train."""

    lm_type: str = "auto"  # transformers: auto | masked | seq2seq | causal
    template: str = "bca"  # mbc | bca | bca_name | oa | nli (the nli task) | the name of a table in `templates`
    templates: dict[str, Any] = field(default_factory=dict)  # custom templates: name -> {text, free_text, verbalizer}
    verbalizer: str | dict[str, Any] = "auto"  # auto (the template's) | yes_no | synonyms | {positive, negative}
    max_length: int = 256  # transformers: longer prompts lose argument tokens from the left
    batch_size: int = 16  # questions per packed row, and training pairs per step
    max_batch_tokens: int = 2048  # transformers: tokens per forward pass
    # Causal LMs: an argument's 20 questions share its computation (packed where the architecture
    # allows, else a shared key/value cache); false runs every prompt in full (same scores, slower).
    share_prefix: bool = True
    sharing: str = "auto"  # with share_prefix: auto | packed | kv-cache
    oa_mode: str = "label-words"  # label-words | generate (synonym verbalizer only)
    max_new_tokens: int = 12
    # Prompt tuning (0 tokens: zero-shot with the hard template alone).
    soft_prompt_tokens: int = 0
    # after (the argument; reusable states) | end (after the question, before the answer) | before (the paper's)
    soft_prompt_placement: str = "after"
    soft_prompts: str = "shared"  # shared | per-category (one prompt per category)
    prompt_init: str = "text"  # text (the template's first words) | random
    epochs: int = 3
    lr: float = 0.03
    negative_ratio: float = 1.0  # negative pairs kept per positive pair, drawn afresh each epoch
    max_steps: int = 0  # 0: no limit
    max_seconds: float = 0.0  # 0: no limit
    checkpoint_every: int = 25  # prompt-tuning steps between checkpoints (a run resumes from the last)
    argument_states_mb: int = 2048  # memory for arguments' key/value states kept across epochs
    argument_states_dir: str | None = None  # also keep them on disk here, bounded by argument_states_disk_mb
    argument_states_disk_mb: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_backend()
        if self.lm_type not in LM_TYPES:
            raise ValueError(f"lm_type must be one of {', '.join(LM_TYPES)}, not {self.lm_type!r}")
        for name in ("max_length", "batch_size", "max_new_tokens", "max_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must not be negative (0: only at the end of each epoch)")
        if self.soft_prompt_tokens < 0 or self.epochs < 0 or self.max_steps < 0 or self.max_seconds < 0:
            raise ValueError("soft_prompt_tokens, epochs, max_steps and max_seconds must not be negative")
        if self.argument_states_mb < 0 or self.argument_states_disk_mb < 0:
            raise ValueError("argument_states_mb and argument_states_disk_mb must not be negative")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, not {self.prompt_init!r}")
        if self.soft_prompt_placement not in PLACEMENTS:
            raise ValueError(f"soft_prompt_placement must be one of {', '.join(PLACEMENTS)}, "
                             f"not {self.soft_prompt_placement!r}")
        if self.soft_prompts not in SOFT_PROMPTS:
            raise ValueError(f"soft_prompts must be one of {', '.join(SOFT_PROMPTS)}, not {self.soft_prompts!r}")
        if self.sharing not in ("auto", "packed", "kv-cache"):
            raise ValueError(f"sharing must be one of auto, packed, kv-cache, not {self.sharing!r}")
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
            if self.lm_type == "masked" or self.backend == "transformers-masked":
                raise ValueError("oa_mode = 'generate' needs a causal or seq2seq language model, not a masked one")

    def prompt_template(self) -> PromptTemplate | NLITemplate:
        """The template named by ``template`` (a value template, or an NLI one for the nli task),
        with the ``verbalizer`` setting in place of its own unless that is "auto"."""
        template = prompt_template(self.template, self.templates, "prompt detector: 'templates'")
        if self.verbalizer != "auto":
            verbalizer = verbalizer_from_config(self.verbalizer, "prompt detector: 'verbalizer'")
            template = dataclasses.replace(template, verbalizer=verbalizer)
        return template


class PromptDetector(Detector):
    type_name = "prompt"
    resumable_chunk = 32
    config_class = PromptConfig
    config: PromptConfig

    def __init__(self, config: PromptConfig | None = None, task: str = "values"):
        super().__init__(config, task)
        # A backend set by the caller (e.g. tests) is used instead of one built from the config.
        self.language_model: LM | None = None
        self._soft_state: dict[str, Any] | None = None  # a loaded soft prompt, attached on first use
        self._trained = False

    # -- the backend -----------------------------------------------------------------------
    def lm(self) -> LM:
        """The backend, with the soft prompt attached where the config asks for one."""
        c = self.config
        if self.language_model is None:
            sharing = c.sharing if c.share_prefix else "none"
            self.language_model = build_backend(c, lm_type=c.lm_type, max_length=c.max_length,
                                                batch_size=c.batch_size, max_batch_tokens=c.max_batch_tokens,
                                                sharing=sharing, seed=c.seed)
        lm = self.language_model
        require(lm, generate=c.oa_mode == "generate", train=bool(c.soft_prompt_tokens),
                what="prompt detector: " + ("oa_mode = 'generate'" if c.oa_mode == "generate"
                                            else "soft_prompt_tokens > 0"))
        if c.soft_prompt_tokens and lm.soft_prompt is None:  # type: ignore[attr-defined]
            prompts = self.task.width if c.soft_prompts == "per-category" else 1
            from valuedetect.prompt_tuning import init_text

            lm.attach_soft_prompt(c.soft_prompt_tokens, prompts, c.soft_prompt_placement,  # type: ignore[attr-defined]
                                  c.prompt_init, init_text(c.prompt_template().argument), c.seed, self._soft_state)
        return lm

    def check_task(self, where: str) -> None:
        """The template must be the task's; a soft prompt placed "after" needs a question after the argument."""
        c = self.config
        template = c.prompt_template()
        self.task.check_prompt_template(template, where)
        if c.soft_prompt_tokens and c.soft_prompt_placement == "after" and not template.has_question:
            raise ConfigError(f"{where}: soft_prompt_placement = 'after' puts the soft prompt between the argument and "
                              f"the question after it, and template {template.name!r} asks nothing after its last "
                              "field; add a question there, or set soft_prompt_placement = 'before'")

    def _check_words(self, lm: LM, template: PromptTemplate | NLITemplate) -> None:
        token_ids = getattr(lm, "token_ids", None)
        verbalizer = template.verbalizer
        if token_ids is not None and verbalizer.kind == "label_words":
            from valuedetect.lm.tokens import distinct_classes

            distinct_classes(verbalizer.positive, verbalizer.negative, token_ids)

    def request(self, template: PromptTemplate | NLITemplate, argument: Argument, k: int) -> LoglikelihoodRequest:
        """The question of column ``k`` (a category; NLI's one question) about ``argument``."""
        context, suffix = template.render_parts(argument, self.task.prompt_columns()[k])
        soft = k if self.config.soft_prompt_tokens and self.config.soft_prompts == "per-category" else 0
        return LoglikelihoodRequest(context, template.verbalizer.words(), suffix, soft)

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self, train: Split, dev: Split | None) -> None:
        """Zero-shot: nothing to learn (the base class tunes thresholds on ``dev``, the
        split to choose on); with soft prompt tokens, train the soft prompt on ``train`` first."""
        c = self.config
        lm = self.lm()
        if not c.soft_prompt_tokens:
            if self.log:  # epochs, lr and the placement only matter for a soft prompt: say why nothing trains
                self.log("zero-shot: soft_prompt_tokens = 0, so nothing is trained "
                         "(--set soft_prompt_tokens=8 tunes a soft prompt)")
            self.info.update(parameters_trainable=0, parameters_total=_total_parameters(lm, c.model),
                             base_model=c.model, backend=lm.name)
            return
        from valuedetect.lm.states import PrefixStates
        from valuedetect.prompt_tuning import TuneSettings, TuneTask, train_soft_prompt

        if self._soft_state is not None or self._trained:  # fit again: a fresh prompt
            lm.detach_soft_prompt()  # type: ignore[attr-defined]
            self._soft_state = None
            lm = self.lm()
        template = self.config.prompt_template()
        self._check_words(lm, template)
        verbalizer = template.verbalizer
        task = TuneTask(lambda i, k: self.request(template, train.arguments[i], k), np.asarray(train.labels),
                        verbalizer.words(), [verbalizer.classes(column) for column in self.task.prompt_columns()])
        states = None
        if c.soft_prompt_placement in ("after", "end") and lm.kind == "causal":
            states = PrefixStates(c.argument_states_mb << 20, c.argument_states_dir, c.argument_states_disk_mb << 20)
        settings = TuneSettings(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, negative_ratio=c.negative_ratio,
                                max_steps=c.max_steps, max_seconds=c.max_seconds, seed=c.seed)
        before = lm.usage.processed_tokens
        result = train_soft_prompt(lm, task, settings, states=states, progress=self.progress, log=self.log,
                                   checkpoint_dir=self.checkpoint_dir, resume=self.resume,
                                   checkpoint_every=c.checkpoint_every)
        self._trained = True
        trainable, total = lm.parameter_counts()  # type: ignore[attr-defined]
        self.info.update(
            parameters_trainable=trainable, parameters_total=total, base_model=c.model, lm_type=lm.kind,
            backend=lm.name, soft_prompt_tokens=c.soft_prompt_tokens, soft_prompts=c.soft_prompts,
            soft_prompt_placement=c.soft_prompt_placement, prompt_init=c.prompt_init, history=result.history,
            training_processed_tokens=lm.usage.processed_tokens - before,
            budget={"max_steps": c.max_steps, "max_seconds": c.max_seconds, "epochs": c.epochs,
                    "steps": result.steps, "seconds": round(result.seconds, 3),
                    "epochs_completed": result.epochs_completed, "stopped_by": result.stopped_by},
            negative_sampling=f"all positive pairs and {c.negative_ratio:g} negative pair(s) per positive, "
                              f"drawn afresh each epoch (seed {c.seed})",
            training=self._training_standard(result).to_dict(),
        )

    @staticmethod
    def _training_standard(result: Any) -> Any:
        """How far the soft prompt trained, for the protocol's "same standard" rule: epochs done
        (a budget-cut epoch counts by its share of batches) and the last epoch's loss against the
        constant answer's on the same pairs."""
        from valuedetect.protocol import TrainingStandard

        last = result.history[-1] if result.history else None
        epochs = float(result.epochs_completed)
        if result.stopped_by and last is not None and last.get("batches"):
            epochs += last["steps"] / last["batches"]
        return TrainingStandard(
            epochs_completed=round(epochs, 4), final_loss=None if last is None else float(last["loss"]),
            constant_loss=None if last is None else float(last["constant_loss"]),
            stopped_by="budget" if result.stopped_by else "epochs",
        )

    # -- saving ----------------------------------------------------------------------------
    def _save_weights(self, directory: Path) -> None:
        """Only the soft prompt (a few thousand numbers), never the frozen LM."""
        lm = self.language_model
        prompt = getattr(lm, "soft_prompt", None)
        state = prompt.state() if prompt is not None else self._soft_state
        if self.config.soft_prompt_tokens and state is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(directory / SOFT_PROMPT_FILE))

    def _load_weights(self, directory: Path) -> None:
        path = directory / SOFT_PROMPT_FILE
        if self.config.soft_prompt_tokens:
            if not path.exists():  # without it the detector would score with an untrained prompt
                raise InputError(f"has no {SOFT_PROMPT_FILE}, the trained soft prompt this detector needs", directory)
            from safetensors.torch import load_file

            self._soft_state = load_file(str(path))

    # -- predicting ------------------------------------------------------------------------
    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        lm = self.lm()
        template = self.config.prompt_template()
        self._check_words(lm, template)
        generate = self.config.oa_mode == "generate"
        examples: list[dict[str, Any]] = []
        processed, prompt = lm.usage.processed_tokens, lm.usage.prompt_tokens
        width, columns = self.task.width, self.task.prompt_columns()
        scores = np.zeros((len(arguments), width))
        # Whole arguments per chunk, so no argument's questions are split from their shared part.
        step = max(1, self.config.batch_size * 4 // width)
        for start in range(0, len(arguments), step):
            part = list(arguments[start : start + step])
            if generate:
                scores[start : start + len(part)] = self._generate(lm, template, part, examples)
            else:
                requests = [self.request(template, a, k) for a in part for k in range(width)]
                answers = lm.loglikelihood(requests)
                flat = [template.verbalizer.probability(answer, columns[n % width]) for n, answer in enumerate(answers)]
                scores[start : start + len(part)] = np.array(flat).reshape(len(part), width)
            if self.progress:
                self.progress("prompt", min(start + step, len(arguments)), len(arguments))
        self.info.update(lm_type=lm.kind, backend=lm.name, template=template.name,
                         share_prefix=self.config.share_prefix and lm.kind == "causal" and not generate,
                         processed_tokens=lm.usage.processed_tokens - processed,
                         prompt_tokens=lm.usage.prompt_tokens - prompt)
        if getattr(lm, "mode", None):
            self.info["sharing"] = lm.mode  # type: ignore[attr-defined]
        if template.verbalizer.kind == "synonyms":
            self.info["oa_mode"] = self.config.oa_mode
        if generate:
            self.info["oa_examples"] = examples[:OA_EXAMPLES]
        return scores

    def _generate(self, lm: LM, template: PromptTemplate | NLITemplate, part: list[Argument],
                  examples: list[dict[str, Any]]) -> np.ndarray:
        """OA by generation: 1.0 where the answer names a synonym of the asked category, else
        ``UNMATCHED_WEIGHT`` times the synonym probability at the answer's first step."""
        verbalizer = template.verbalizer
        words = verbalizer.words()
        requests = [GenerateRequest("".join(template.render_parts(a, c)), max_tokens=self.config.max_new_tokens,
                                    score_words=words) for a in part for c in categories()]
        answers = lm.generate_until(requests)
        scores = np.zeros(len(requests))
        for n, answer in enumerate(answers):
            c = categories()[n % NUM_CATEGORIES]
            matched = match_synonym(answer.text, verbalizer.synonyms(c))
            fallback = verbalizer.probability(answer.first_logprobs, c) if answer.first_logprobs else 0.5
            scores[n] = 1.0 if matched is not None else UNMATCHED_WEIGHT * fallback
            if len(examples) < OA_EXAMPLES:
                examples.append({"argument": part[n // NUM_CATEGORIES].id, "category": c.name, "answer": answer.text,
                                 "matched": matched})
        return scores.reshape(len(part), NUM_CATEGORIES)

    def close(self) -> None:
        if self.language_model is not None:
            self.language_model.close()
            self.language_model = None


def _total_parameters(lm: LM, model: str) -> int | None:
    """Every parameter of the frozen model, tied weights once: counted where the backend holds
    the model, else the published count of an alias (``lm.gguf.PARAMETERS``)."""
    counts = getattr(lm, "parameter_counts", None)
    if counts is not None:
        return int(counts()[1])
    from valuedetect.lm.gguf import PARAMETERS

    return PARAMETERS.get(model)


__all__ = ["OA_MODES", "SOFT_PROMPTS", "PromptConfig", "PromptDetector"]
