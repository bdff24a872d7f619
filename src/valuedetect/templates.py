"""Input templates: how an argument becomes model text. The one place templates live.

A template is a format string over the fields ``premise``, ``conclusion``, ``stance`` (the
dataset's wording, "in favor of" / "against"), ``stance_verb`` ("supporting" / "against", as
the paper's CLS prompt renders it), ``stance_attitude`` ("support" / "oppose", for templates
that speak as the arguer) and, for per-value templates, ``value`` fields. Free text
(no conclusion, no stance) is rendered by ``free_text`` so no template prints empty slots.

Prompt templates (MBC, BCA, OA) and their verbalizers live here too, below; users add their own
in a config table (``prompt_template_from_config``), no code needed. ``match_synonym`` reads a
generated answer with the synonym verbalizer (OA by generation).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from valuedetect.data import Argument
from valuedetect.errors import ConfigError
from valuedetect.taxonomy import Category

_STANCE_VERBS = {"in favor of": "supporting", "against": "against"}
# The stance as a first-person verb, for templates that speak as the arguer ("because I support ...").
_STANCE_ATTITUDES = {"in favor of": "support", "against": "oppose"}


@dataclass(frozen=True)
class InputTemplate:
    """A named rendering of an argument into one string."""

    name: str
    argument: str
    free_text: str = "{premise}"

    def render(self, argument: Argument, **extra: str) -> str:
        if argument.is_free_text:
            return self.free_text.format(premise=argument.premise.strip(), **extra)
        stance = argument.stance or "in favor of"
        return self.argument.format(
            premise=argument.premise.strip(),
            conclusion=argument.conclusion.strip(),
            stance=stance,
            stance_verb=_STANCE_VERBS.get(stance, stance),
            stance_attitude=_STANCE_ATTITUDES.get(stance, stance),
            **extra,
        )


INPUT_TEMPLATES: dict[str, InputTemplate] = {
    t.name: t
    for t in (
        # The order a reader meets an argument: the claim, the stance towards it, the reason.
        InputTemplate("plain", "{conclusion}. {stance}: {premise}"),
        # The paper's CLS hard prompt (Sun 2024), stance as "supporting" / "against".
        InputTemplate(
            "cls",
            "Human Values are indicated in the premise: {premise} and the conclusion: "
            "{conclusion} {stance_verb} it.",
            "Human Values are indicated in the text: {premise}",
        ),
        # Premise first: with truncation the premise, which carries most value cues, survives.
        InputTemplate("premise_first", "{premise} [{stance}] {conclusion}"),
    )
}

_FIELDS = {"premise", "conclusion", "stance", "stance_verb", "stance_attitude"}


def input_template(spec: str) -> InputTemplate:
    """A template by name, or a custom format string using the fields above."""
    if spec in INPUT_TEMPLATES:
        return INPUT_TEMPLATES[spec]
    fields = {name for _, name, _, _ in string.Formatter().parse(spec) if name}
    unknown = fields - _FIELDS
    if "premise" not in fields or unknown:
        raise ConfigError(
            f"input template {spec!r} is neither a known name ({', '.join(INPUT_TEMPLATES)}) nor a "
            "format string with {premise}"
            + (f"; unknown fields: {', '.join(sorted(unknown))}" if unknown else "")
        )
    return InputTemplate("custom", spec)


# -- prompt templates and verbalizers (the paper's Exp-II) -------------------------------------
#
# A prompt template asks about one value category at a time: besides the argument fields above
# it may use ``value_name`` (the official name), ``value_label`` (the same, for running text),
# ``value_description`` (the taxonomy's description) and ``mask`` (where the answer goes; it
# must end the text: masked LMs predict it, causal and seq2seq LMs continue after it).

VALUE_FIELDS = frozenset({"value_name", "value_label", "value_description"})
PROMPT_FIELDS = frozenset(_FIELDS | VALUE_FIELDS | {"mask"})
_ARGUMENT_ONLY = frozenset({"conclusion", "stance", "stance_verb", "stance_attitude"})
VERBALIZER_KINDS = ("label_words", "synonyms")


@dataclass(frozen=True)
class Verbalizer:
    """Maps the model's answer-position distribution to a score for one category.

    ``label_words``: P(yes) is the softmax over two classes, each the log-sum-exp of its
    words' log-probabilities (``positive`` vs. ``negative``). ``synonyms`` (the paper's
    knowledgeable verbalizer for OA): the words of category c are c's synonyms in the taxonomy.
    """

    name: str
    kind: str = "label_words"
    positive: tuple[str, ...] = ("Yes",)
    negative: tuple[str, ...] = ("No",)

    def synonyms(self, category: Category) -> tuple[str, ...]:
        return category.synonyms


@lru_cache(maxsize=512)
def _synonym_pattern(synonym: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s-]+", synonym.strip().lower()) if w]
    last = words[-1]
    if last.endswith("e"):  # love: loves, loved, loving
        forms = f"{last}(?:s|d)?|{last[:-1]}ing"
    elif last.endswith("y"):  # family: families; carry: carried, carrying
        forms = f"{last}(?:s|ing)?|{last[:-1]}(?:ies|ied)"
    else:  # reason: reasons, reasoned, reasoning; box: boxes
        forms = f"{last}(?:s|es|ed|ing)?"
    body = r"[\s-]+".join([*words[:-1], f"(?:{forms})"])
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def match_synonym(answer: str, synonyms: Sequence[str]) -> str | None:
    """The first of ``synonyms`` that a generated answer contains, or None.

    Case-insensitive, whole synonyms only, on word boundaries: a listed phrase must appear entire
    ("free will" needs both words, so "freedom" does not match it, and a listed "free" would not
    match inside "freedom" either), with spaces and hyphens alike ("open minded" = "open-minded").
    The last word may carry a regular inflection: +s, +es, +ed, +ing; after a final e: +s, +d,
    e -> ing ("love": loves, loved, loving); after a final y: +s, +ing, y -> ies / ied ("family":
    families). Nothing is stripped ("rules" does not match "rule"), and irregular forms and
    derivations ("freely", "curious" for "curiosity") do not match: a miss only falls back to
    the graded score, while a loose rule would call unrelated words positive.
    """
    for synonym in synonyms:
        if synonym.strip() and _synonym_pattern(synonym).search(answer):
            return synonym
    return None


VERBALIZERS: dict[str, Verbalizer] = {
    "yes_no": Verbalizer("yes_no"),
    "synonyms": Verbalizer("synonyms", kind="synonyms", positive=(), negative=()),
}


@dataclass(frozen=True)
class PromptTemplate(InputTemplate):
    """An input template that asks about one category, with the verbalizer that reads the answer."""

    verbalizer: Verbalizer = VERBALIZERS["yes_no"]

    def render_prompt(self, argument: Argument, category: Category, mask: str = "") -> str:
        """The prompt for (argument, category); ``mask`` is the masked LM's mask token, or ""."""
        text = self.render(
            argument, value_name=category.name, value_label=category.name,
            value_description=category.description, mask=mask,
        )
        return text.rstrip() if not mask else text

    @property
    def has_mask(self) -> bool:
        return "mask" in _fields(self.argument)


PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        # Masked LM, binary choice: the model fills [MASK] with Yes or No.
        PromptTemplate(
            "mbc",
            "Given the premise: {premise} and the conclusion: {conclusion} {stance_verb} it. "
            "Is it based on the {value_description}? {mask}",
            "Given the text: {premise} Is it based on the {value_description}? {mask}",
        ),
        # Generative (seq2seq or causal), binary choice: the next word is Yes or No.
        PromptTemplate(
            "bca",
            "Question: Given the premise: {premise} and the conclusion: {conclusion} {stance_verb} it. "
            "Is it based on the {value_description}? The answer is",
            "Question: Given the text: {premise} Is it based on the {value_description}? The answer is",
        ),
        # Open answer: the next word describes the person; read by the category's synonyms.
        PromptTemplate(
            "oa",
            "I claim that {conclusion} because I {stance_attitude} the {premise}. In the aspect of {value_label}, "
            "use some words to describe what kind of person am I?",
            "I claim that {premise}. In the aspect of {value_label}, use some words to describe what kind of "
            "person am I?",
            verbalizer=VERBALIZERS["synonyms"],
        ),
    )
}


def _fields(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def _check_prompt_text(text: Any, key: str, where: str, allowed: frozenset[str]) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    try:
        names = _fields(text)
    except ValueError as error:
        raise ConfigError(f"{where}: {key!r} is not a valid format string ({error})") from None
    if "" in names or any(not n.isidentifier() for n in names):
        raise ConfigError(f"{where}: {key!r} has an unnamed or malformed placeholder; use e.g. {{premise}}")
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: {key!r} has unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"allowed: {', '.join('{' + n + '}' for n in sorted(allowed))}"
        )
    if "premise" not in names:
        raise ConfigError(f"{where}: {key!r} must contain {{premise}}")
    if not VALUE_FIELDS & set(names):
        raise ConfigError(f"{where}: {key!r} must name the value asked about: one of "
                          + ", ".join("{" + n + "}" for n in sorted(VALUE_FIELDS)))
    if names.count("mask") > 1 or ("mask" in names and not text.rstrip().endswith("{mask}")):
        raise ConfigError(f"{where}: {key!r} may hold {{mask}} only once, at the end")
    return text


def _words(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value or not all(isinstance(w, str) and w.strip() for w in value):
        raise ConfigError(f"{where}: verbalizer {key!r} must be a non-empty list of words, got {value!r}")
    return tuple(w.strip() for w in value)


def verbalizer_from_config(spec: Any, where: str = "verbalizer", name: str = "custom") -> Verbalizer:
    """A verbalizer by name (yes_no, synonyms) or from a table ``{positive = [...], negative = [...]}``
    or ``{kind = "synonyms"}``."""
    if isinstance(spec, str):
        if spec not in VERBALIZERS:
            raise ConfigError(f"{where}: unknown verbalizer {spec!r}; known: {', '.join(VERBALIZERS)}, or a table")
        return VERBALIZERS[spec]
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: verbalizer must be a name or a table, got {spec!r}")
    unknown = sorted(set(spec) - {"kind", "positive", "negative"})
    if unknown:
        raise ConfigError(f"{where}: unknown verbalizer key(s) {', '.join(map(repr, unknown))}; "
                          "known: 'kind', 'positive', 'negative'")
    kind = spec.get("kind", "label_words")
    if kind not in VERBALIZER_KINDS:
        raise ConfigError(f"{where}: verbalizer 'kind' must be one of {', '.join(VERBALIZER_KINDS)}, not {kind!r}")
    if kind == "synonyms":
        if "positive" in spec or "negative" in spec:
            raise ConfigError(f"{where}: a synonyms verbalizer takes its words from the taxonomy; "
                              "drop 'positive' and 'negative'")
        return Verbalizer(name, kind="synonyms", positive=(), negative=())
    for key in ("positive", "negative"):
        if key not in spec:
            raise ConfigError(f"{where}: verbalizer needs {key!r} (a list of label words)")
    positive = _words(spec["positive"], "positive", where)
    negative = _words(spec["negative"], "negative", where)
    if set(positive) & set(negative):
        raise ConfigError(f"{where}: verbalizer words {sorted(set(positive) & set(negative))} are both positive "
                          "and negative")
    return Verbalizer(name, positive=positive, negative=negative)


_TEMPLATE_KEYS = ("text", "free_text", "verbalizer")


def prompt_template_from_config(name: str, table: Any, where: str = "template") -> PromptTemplate:
    """A prompt template from a config table (no code needed), e.g. in TOML::

        [detector.templates.mine]
        text = "{conclusion}? {premise} Does this appeal to {value_label}? {mask}"
        free_text = "{premise} Does this appeal to {value_label}? {mask}"   # optional
        verbalizer = { positive = ["Yes", "Sure"], negative = ["No"] }      # or "yes_no" / "synonyms"

    ``free_text`` (for arguments without conclusion and stance) may not use {conclusion},
    {stance} or {stance_verb}; it defaults to ``text`` when ``text`` uses none of them.
    """
    where = f"{where} {name!r}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table with {', '.join(_TEMPLATE_KEYS)}, got {table!r}")
    unknown = sorted(set(table) - set(_TEMPLATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(_TEMPLATE_KEYS)}")
    if "text" not in table:
        raise ConfigError(f"{where}: missing 'text' (the prompt, a format string with {{premise}})")
    text = _check_prompt_text(table["text"], "text", where, PROMPT_FIELDS)
    if "free_text" in table:
        free = _check_prompt_text(table["free_text"], "free_text", where, PROMPT_FIELDS - _ARGUMENT_ONLY)
    elif _ARGUMENT_ONLY & set(_fields(text)):
        raise ConfigError(f"{where}: 'free_text' is required because 'text' uses conclusion or stance fields")
    else:
        free = text
    if ("mask" in _fields(text)) != ("mask" in _fields(free)):
        raise ConfigError(f"{where}: 'text' and 'free_text' must both end in {{mask}} or both not")
    verbalizer = verbalizer_from_config(table.get("verbalizer", "yes_no"), f"{where}: 'verbalizer'", name)
    return PromptTemplate(name, text, free, verbalizer=verbalizer)


def prompt_template(name: str, custom: dict[str, Any] | None = None, where: str = "template") -> PromptTemplate:
    """A built-in prompt template (mbc, bca, oa) or one of the ``custom`` tables by name."""
    custom = custom or {}
    if name in custom:
        return prompt_template_from_config(name, custom[name], where)
    if name in PROMPT_TEMPLATES:
        return PROMPT_TEMPLATES[name]
    known = [*PROMPT_TEMPLATES, *custom]
    raise ConfigError(f"{where}: unknown prompt template {name!r}; known: {', '.join(known)}")
