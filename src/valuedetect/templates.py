"""Input templates: how an argument becomes model text. The one place templates live.

A template is a format string over the fields ``premise``, ``conclusion``, ``stance`` (the
dataset's wording, "in favor of" / "against"), ``stance_verb`` ("supporting" / "against", as
the paper's CLS prompt renders it), ``stance_attitude`` ("support" / "oppose", for templates
that speak as the arguer) and, for per-value templates, ``value`` fields. Free text
(no conclusion, no stance) is rendered by ``free_text`` so no template prints empty slots.

Prompt templates (MBC, BCA, OA) and their verbalizers live here too, below; users add their own
in a config table (``prompt_template_from_config``), no code needed. ``match_synonym`` reads a
generated answer with the synonym verbalizer (OA by generation). So do the chat prompts of the
``llm`` strategies (per-value, few-shot, all-in-one, chain of thought) and the NLI side task's
templates (``NLITemplate``; a prompt template of task "nli"), with one copy of the stance words.

A prompt template renders in two parts (``render_parts``): the context, which depends on the
argument only, and the suffix, which asks about the value. The split falls at the last sentence
end before the first value field (or right after the field before it), so the 20 questions about
one argument share the context token for token, and a soft prompt can sit between the two.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from valuedetect.data import Argument
from valuedetect.errors import ConfigError
from valuedetect.lm.api import Message
from valuedetect.taxonomy import CATEGORY_NAMES, Category, categories

STANCE_VERBS = {"in favor of": "supporting", "against": "against"}
# The stance as a first-person verb, for templates that speak as the arguer ("because I support ...").
_STANCE_ATTITUDES = {"in favor of": "support", "against": "oppose"}


@dataclass(frozen=True)
class InputTemplate:
    """A named rendering of an argument into one string, or into a pair of strings (``pair``: the
    second segment, which an encoder reads as its tokenizer's sentence pair)."""

    name: str
    argument: str
    free_text: str = "{premise}"
    pair: str | None = None

    def render(self, argument: Argument, **extra: str) -> str:
        if argument.is_free_text:
            return self.free_text.format(premise=argument.premise.strip(), **extra)
        return self.argument.format(**_argument_fields(argument), **extra)

    def render_pair(self, argument: Argument) -> tuple[str, str | None]:
        """(first segment, second segment or None): what an encoder tokenises."""
        if self.pair is None or argument.is_free_text:
            return self.render(argument), None
        return self.render(argument), self.pair.format(**_argument_fields(argument))

    def fields(self) -> set[str]:
        """Every field the template's texts use."""
        return {name for text in (self.argument, self.free_text, self.pair or "") for name in _fields(text)}


def _argument_fields(argument: Argument) -> dict[str, str]:
    stance = argument.stance or "in favor of"
    return {"premise": argument.premise.strip(), "conclusion": argument.conclusion.strip(), "stance": stance,
            "stance_verb": STANCE_VERBS.get(stance, stance), "stance_attitude": _STANCE_ATTITUDES.get(stance, stance)}


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
        # Premise and conclusion as the tokenizer's sentence pair, no stance: the NLI side task's
        # input (the stance is its label).
        InputTemplate("pair", "{premise}", pair="{conclusion}"),
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
    """Maps the log-probabilities of label words at the answer position to P(category).

    Each class's score is the log-sum-exp of its words' log-probabilities and P is the softmax
    over the two classes. ``label_words``: the classes are ``positive`` vs. ``negative`` words,
    the same for every category. ``synonyms`` (the paper's knowledgeable verbalizer for OA):
    the words are all 20 categories' synonyms, the positive class the asked category's own and
    the negative class every other word, so P is the asked category's share of the mass over all
    synonyms. Scoring (``probability``) and prompt tuning (``classes``) read the same index lists.
    """

    name: str
    kind: str = "label_words"
    positive: tuple[str, ...] = ("Yes",)
    negative: tuple[str, ...] = ("No",)

    def synonyms(self, category: Category) -> tuple[str, ...]:
        return category.synonyms

    def words(self) -> tuple[str, ...]:
        """Every word a request for this verbalizer asks about (the same for each category)."""
        if self.kind == "synonyms":
            return tuple(dict.fromkeys(w for c in categories() for w in self.synonyms(c)))
        return (*self.positive, *self.negative)

    def classes(self, category: Category | None = None) -> tuple[list[int], list[int]]:
        """Indices into ``words()`` of the positive and the negative class for ``category``
        (label words need none)."""
        words = self.words()
        if self.kind == "synonyms":
            if category is None:
                raise ValueError("the synonyms verbalizer needs the category asked about")
            own = set(self.synonyms(category))
            return [k for k, w in enumerate(words) if w in own], [k for k, w in enumerate(words) if w not in own]
        return list(range(len(self.positive))), list(range(len(self.positive), len(words)))

    def probability(self, logprobs: Mapping[str, float], category: Category | None = None) -> float:
        """P(category) from ``{word: log-probability}`` (an ``LM.loglikelihood`` result)."""
        words = self.words()
        positive, negative = self.classes(category)
        yes = _logsumexp([logprobs[words[k]] for k in positive])
        no = _logsumexp([logprobs[words[k]] for k in negative])
        if yes == no == -math.inf:
            return 0.5
        return 1.0 / (1.0 + math.exp(min(700.0, no - yes)))


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


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
    task: ClassVar[str] = "values"

    def render_parts(self, argument: Argument, category: Category) -> tuple[str, str]:
        """(context, suffix): the argument's part and the value question (see the module
        docstring); together they are the prompt. ``{mask}`` renders empty: a masked LM's
        backend puts its mask token where the answer goes."""
        text = self.free_text if argument.is_free_text else self.argument
        cut = split_point(text)
        values = {"value_name": category.name, "value_label": category.name,
                  "value_description": category.description, "mask": ""}
        context = InputTemplate(self.name, text[:cut], text[:cut]).render(argument, **values) if cut else ""
        suffix = InputTemplate(self.name, text[cut:], text[cut:]).render(argument, **values)
        return context, suffix.rstrip()

    def render_prompt(self, argument: Argument, category: Category, mask: str = "") -> str:
        """The whole prompt as one text; ``mask`` is a masked LM's mask token, or ""."""
        context, suffix = self.render_parts(argument, category)
        return context + suffix + (" " + mask if mask else "")

    @property
    def has_mask(self) -> bool:
        return "mask" in _fields(self.argument)

    @property
    def has_question(self) -> bool:
        """Whether text follows the argument part (where a soft prompt placed "after" goes)."""
        return bool(self.argument[split_point(self.argument):].replace("{mask}", "").strip())


_SENTENCE_END = re.compile(r"[.?!:](?=\s)")


def split_point(text: str) -> int:
    """Where a prompt template's argument part ends: in the literal text between the first value
    field and the field before it, after its last sentence end (". ", "? ", ...), else at that
    literal's start; 0 when no argument field comes before the value."""
    offset = 0
    previous_end = 0
    for literal, name, spec, conversion in string.Formatter().parse(text):
        literal_start = offset
        offset += len(literal)
        if name is None:
            break
        placeholder = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name in VALUE_FIELDS:
            ends = [m.end() for m in _SENTENCE_END.finditer(literal)]
            if ends:
                return literal_start + ends[-1]
            return previous_end if previous_end else 0
        offset += len(placeholder)
        previous_end = offset
    return 0


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
        # BCA asking by the value's name only: a shorter question (fewer tokens per value).
        PromptTemplate(
            "bca_name",
            "Question: Given the premise: {premise} and the conclusion: {conclusion} {stance_verb} it. "
            "Is it based on {value_name}? The answer is",
            "Question: Given the text: {premise} Is it based on {value_name}? The answer is",
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


_TEMPLATE_KEYS = ("text", "free_text", "verbalizer", "task")


def prompt_template_from_config(name: str, table: Any, where: str = "template") -> PromptTemplate:
    """A prompt template from a config table (no code needed), e.g. in TOML::

        [detector.templates.mine]
        text = "{conclusion}? {premise} Does this appeal to {value_label}? {mask}"
        free_text = "{premise} Does this appeal to {value_label}? {mask}"   # optional
        verbalizer = { positive = ["Yes", "Sure"], negative = ["No"] }      # or "yes_no" / "synonyms"

    ``free_text`` (for arguments without conclusion and stance) may not use {conclusion},
    {stance} or {stance_verb}; it defaults to ``text`` when ``text`` uses none of them.
    ``task = "nli"`` makes an NLI template instead (``NLITemplate``: ``text`` and ``verbalizer`` only).
    """
    where = f"{where} {name!r}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table with {', '.join(_TEMPLATE_KEYS)}, got {table!r}")
    unknown = sorted(set(table) - set(_TEMPLATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(_TEMPLATE_KEYS)}")
    task = table.get("task", "values")
    if task == "nli":
        return nli_template_from_config(name, table, where)
    if task != "values":
        raise ConfigError(f"{where}: 'task' must be 'values' or 'nli', not {task!r}")
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


def prompt_template(name: str, custom: dict[str, Any] | None = None,
                    where: str = "template") -> PromptTemplate | NLITemplate:
    """A built-in prompt template (mbc, bca, bca_name, oa; nli for the NLI task) or one of the
    ``custom`` tables by name."""
    custom = custom or {}
    if name in custom:
        return prompt_template_from_config(name, custom[name], where)
    if name in PROMPT_TEMPLATES:
        return PROMPT_TEMPLATES[name]
    if name in NLI_TEMPLATES:
        return NLI_TEMPLATES[name]
    known = [*PROMPT_TEMPLATES, *NLI_TEMPLATES, *custom]
    raise ConfigError(f"{where}: unknown prompt template {name!r}; known: {', '.join(known)}")


# -- chat prompts of the llm strategies (the paper's Exp-III) -----------------------------------
#
# Every prompt is a chat (a list of messages). Each is laid out so that what is shared comes
# first: per-value questions put the argument before the value, so the 20 questions about one
# argument share a prefix that backends compute once; the all-in-one prompt puts the list of
# values before the argument, so every argument shares it. Free text (no conclusion, no stance)
# is called "the text" and shown as such, so no prompt prints empty slots.

SYSTEM = (
    "You are an expert in Schwartz's theory of basic human values. You read arguments and say "
    "which human values they draw on. Answer exactly in the requested format."
)

# The instruction comes before the question, so that all 20 questions about an argument share
# it; only the value's name and description differ, and only they are computed 20 times.
PER_VALUE_QUESTION = (
    'Answer with Yes or No. Does the {subject} draw on the human value "{value}", that is, {description}?'
)

ALL_IN_ONE_INSTRUCTION = (
    "Which of the following human values does the {subject} below draw on?\n\n{value_list}\n\n"
    'Answer only with JSON of the form {{"values": ["<value name>", ...]}}, using the value names '
    "exactly as listed, and an empty list if none applies."
)

FEW_SHOT_INTRO = "Examples of arguments and the human values they draw on:"

# The paper's chain of thought (Sun 2024): an open question, then one Yes/No question per value
# about the model's own reply.
COT_TURN1 = (
    "What kind of human values are indicated in the premise: {premise} and the conclusion: {conclusion} {stance} it?"
)
COT_TURN1_FREE_TEXT = "What kind of human values are indicated in the text: {premise}?"
COT_TURN2 = "Do you think {reply} is aligned with {value}, which can also be called {synonyms}? Answer Yes or No."

RETRY_JSON = (
    'That answer was not valid. Reply with only the JSON object {{"values": [...]}}, listing value '
    "names exactly as given{example}."
)

_COT_REPLY_CHARS = 1200


@dataclass(frozen=True)
class Example:
    """A labelled training argument shown to the model in a few-shot prompt."""

    argument: Argument
    values: tuple[str, ...]


def subject(argument: Argument) -> str:
    """What a chat prompt calls the input: an argument, or free text."""
    return "text" if argument.is_free_text else "argument"


def argument_block(argument: Argument) -> str:
    """The argument as the model reads it: conclusion, stance, premise (or just the text)."""
    if argument.is_free_text:
        return f"Text: {argument.premise.strip()}"
    return (
        f"Conclusion: {argument.conclusion.strip()}\n"
        f"Stance: {argument.stance or 'in favor of'}\n"
        f"Premise: {argument.premise.strip()}"
    )


def value_list() -> str:
    return "\n".join(f"- {c.name}: {c.description}" for c in categories())


def label_texts(level1: bool = False) -> list[str]:
    """One text per output column (the 20 categories, then the 54 level-1 values if asked):
    what a label-embedding head encodes. A category is its name and description; a level-1
    value, which has no description of its own, is its name and its example effects."""
    texts = [f"{c.name}: {c.description}" for c in categories()]
    if level1:
        texts += [f"{value}: {', '.join(effects)}" for c in categories() for value, effects in c.examples.items()]
    return texts


def few_shot_block(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    blocks = [FEW_SHOT_INTRO]
    for number, example in enumerate(examples, start=1):
        values = ", ".join(example.values) if example.values else "none"
        blocks.append(f"Example {number}:\n{argument_block(example.argument)}\nValues: {values}")
    return "\n\n".join(blocks) + "\n\n"


def per_value_prompt(argument: Argument, category: Category, examples: Sequence[Example] = ()) -> list[Message]:
    """Does the argument draw on ``category``? (Yes/No). Examples, then argument, then value."""
    lead = "Now the argument to judge:\n" if examples and not argument.is_free_text else ""
    lead = "Now the text to judge:\n" if examples and argument.is_free_text else lead
    question = PER_VALUE_QUESTION.format(subject=subject(argument), value=category.name,
                                         description=category.description)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{few_shot_block(examples)}{lead}{argument_block(argument)}\n\n{question}"},
    ]


def all_in_one_prompt(argument: Argument, examples: Sequence[Example] = ()) -> list[Message]:
    """All values in one call, answered as JSON; examples become earlier turns of the chat."""
    instruction = ALL_IN_ONE_INSTRUCTION.format(subject=subject(argument), value_list=value_list())
    messages: list[Message] = [{"role": "system", "content": SYSTEM}]
    for example in examples:
        messages.append({"role": "user", "content": f"{instruction}\n\n{argument_block(example.argument)}"})
        messages.append({"role": "assistant", "content": json.dumps({"values": list(example.values)})})
    messages.append({"role": "user", "content": f"{instruction}\n\n{argument_block(argument)}"})
    return messages


def retry_json_prompt(original: Sequence[Message], answer: str) -> list[Message]:
    """The same chat with the unparsable answer and a request to answer in the format."""
    example = f', for example {json.dumps({"values": [CATEGORY_NAMES[0]]})}'
    return [*original, {"role": "assistant", "content": answer},
            {"role": "user", "content": RETRY_JSON.format(example=example)}]


MAX_VALUES = 10  # no training argument has more than 9 categories


def values_schema() -> dict:
    """JSON schema of the all-in-one answer: a list of official category names. The bound on
    its length makes a grammar close the list: small models otherwise repeat a name until
    they run out of tokens, leaving JSON that never ends."""
    items = {"type": "string", "enum": list(CATEGORY_NAMES)}
    return {
        "type": "object",
        "properties": {"values": {"type": "array", "items": items, "maxItems": MAX_VALUES}},
        "required": ["values"],
        "additionalProperties": False,
    }


def cot_question(argument: Argument) -> list[Message]:
    """Turn 1 of the chain of thought: the paper's open question."""
    if argument.is_free_text:
        text = COT_TURN1_FREE_TEXT.format(premise=argument.premise.strip())
    else:
        stance = argument.stance or "in favor of"
        text = COT_TURN1.format(premise=argument.premise.strip(), conclusion=argument.conclusion.strip(),
                                stance=STANCE_VERBS.get(stance, stance))
    return [{"role": "user", "content": text}]


def cot_reply_text(reply: str) -> str:
    """The turn-1 reply as it is quoted in turn 2: one line, bounded length."""
    text = re.sub(r"\s+", " ", reply).strip()
    if len(text) > _COT_REPLY_CHARS:
        text = text[:_COT_REPLY_CHARS].rsplit(" ", 1)[0] + " ..."
    return f'"{text}"' if text else '"(no reply)"'


def cot_value_prompt(argument: Argument, reply: str, category: Category) -> list[Message]:
    """Turn 2 for one value: the conversation so far, then the paper's Yes/No question."""
    question = COT_TURN2.format(reply=cot_reply_text(reply), value=category.name,
                                synonyms=", ".join(category.synonyms))
    return [*cot_question(argument), {"role": "assistant", "content": reply.strip() or "(no reply)"},
            {"role": "user", "content": question}]


# -- the NLI side task ------------------------------------------------------------------------
#
# Does the premise support the conclusion? One yes/no question per argument over {premise} and
# {conclusion} (optionally {mask} at the end), read by a label-word verbalizer whose positive class
# is support. The stance fields are refused: the stance is the task's label.

NLI_TEMPLATE = "Question: Given the premise: {premise} Does it support the conclusion: {conclusion}? The answer is"
NLI_FIELDS = frozenset({"premise", "conclusion", "mask"})
STANCE_FIELDS = frozenset({"stance", "stance_verb", "stance_attitude"})


@dataclass(frozen=True)
class NLITemplate:
    """The NLI side task's prompt, rendered like a value prompt in two parts (``render_parts``):
    the argument (up to the first sentence end after its last field) and the question after it,
    so a soft prompt placed "after" sits between them and the argument's states are reused."""

    name: str
    text: str
    verbalizer: Verbalizer = VERBALIZERS["yes_no"]
    task: ClassVar[str] = "nli"

    def __post_init__(self) -> None:
        check_nli_text(self.text, f"NLI template {self.name!r}")
        if self.verbalizer.kind != "label_words":
            raise ConfigError(f"NLI template {self.name!r}: the verbalizer must be label words (e.g. 'yes_no'); "
                              "support is the positive class of a yes/no question")

    @property
    def argument(self) -> str:
        """The template's text (what a soft prompt's "text" initialisation reads)."""
        return self.text

    @property
    def has_mask(self) -> bool:
        return "mask" in _fields(self.text)

    @property
    def has_question(self) -> bool:
        """Whether text follows the argument part (where a soft prompt placed "after" goes)."""
        return bool(self.text[nli_split_point(self.text):].replace("{mask}", "").strip())

    def render_parts(self, argument: Argument, column: Any = None) -> tuple[str, str]:
        """(context, suffix); ``{mask}`` renders empty (a masked LM's backend adds its mask)."""
        cut = nli_split_point(self.text)
        values = {"premise": argument.premise.strip(), "conclusion": argument.conclusion.strip(), "mask": ""}
        return self.text[:cut].format(**values), self.text[cut:].format(**values).rstrip()


def check_nli_text(text: Any, where: str) -> str:
    """The NLI template text, or a ConfigError that names what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: 'text' must be a non-empty string, got {text!r}")
    try:
        names = _fields(text)
    except ValueError as error:
        raise ConfigError(f"{where}: 'text' is not a valid format string ({error})") from None
    leaks = sorted(set(names) & STANCE_FIELDS)
    if leaks:
        raise ConfigError(f"{where}: 'text' shows the stance ({', '.join('{' + n + '}' for n in leaks)}), which is "
                          "the NLI label")
    unknown = sorted(set(names) - NLI_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: 'text' has unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                          "allowed: {premise}, {conclusion}, {mask}")
    for needed in ("premise", "conclusion"):
        if needed not in names:
            raise ConfigError(f"{where}: 'text' must contain {{{needed}}}")
    if names.count("mask") > 1 or ("mask" in names and not text.rstrip().endswith("{mask}")):
        raise ConfigError(f"{where}: 'text' may hold {{mask}} only once, at the end")
    return text


def nli_split_point(text: str) -> int:
    """Where an NLI template's argument part ends: after the first sentence end (". ", "? ", ...)
    in the literal that follows its last premise or conclusion field, else right after that field."""
    offset, cut = 0, 0
    pieces = list(string.Formatter().parse(text))
    for k, (literal, name, spec, conversion) in enumerate(pieces):
        offset += len(literal)
        if name is None:
            break
        offset += len("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
        if name in ("premise", "conclusion"):
            cut = offset
            following = pieces[k + 1][0] if k + 1 < len(pieces) else ""
            end = _SENTENCE_END.search(following)
            if end is not None:
                cut += end.end()
    return cut


def nli_template_from_config(name: str, table: dict[str, Any], where: str) -> NLITemplate:
    """An NLI template from a config table ``{task = "nli", text = "...", verbalizer = ...}``."""
    extra = sorted(set(table) - {"task", "text", "verbalizer"})
    if extra:
        raise ConfigError(f"{where}: an NLI template takes 'text' and 'verbalizer' only, not "
                          f"{', '.join(map(repr, extra))}")
    if "text" not in table:
        raise ConfigError(f"{where}: missing 'text' (a format string with {{premise}} and {{conclusion}})")
    verbalizer = verbalizer_from_config(table.get("verbalizer", "yes_no"), f"{where}: 'verbalizer'", name)
    return NLITemplate(name, check_nli_text(table["text"], where), verbalizer)


NLI_TEMPLATES: dict[str, NLITemplate] = {"nli": NLITemplate("nli", NLI_TEMPLATE)}
