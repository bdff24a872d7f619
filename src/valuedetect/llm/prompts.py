"""Prompt texts as data, built from the taxonomy (names, descriptions, synonyms).

Every prompt is a chat (a list of messages). Each is laid out so that what is shared comes
first: per-value questions put the argument before the value, so the 20 questions about one
argument share a prefix that backends compute once; the all-in-one prompt puts the list of
values before the argument, so every argument shares it. Free text (no conclusion, no stance)
is called "the text" and shown as such, so no prompt prints empty slots.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from valuedetect.data import Argument
from valuedetect.llm.backends.base import Message
from valuedetect.taxonomy import CATEGORY_NAMES, Category, categories

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

_STANCE_VERBS = {"in favor of": "supporting", "against": "against"}
_COT_REPLY_CHARS = 1200


@dataclass(frozen=True)
class Example:
    """A labelled training argument shown to the model in a few-shot prompt."""

    argument: Argument
    values: tuple[str, ...]


def subject(argument: Argument) -> str:
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
                                stance=_STANCE_VERBS.get(stance, stance))
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
