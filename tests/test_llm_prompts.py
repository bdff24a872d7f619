"""Prompt texts built from the taxonomy, and reading the all-in-one JSON answer."""

from __future__ import annotations

import json
import re

import pytest

from valuedetect import templates as prompts
from valuedetect.answers import parse_values
from valuedetect.data import Argument
from valuedetect.taxonomy import CATEGORY_NAMES, categories

ARGUMENT = Argument("A1", "fast food harms children's health", "We should ban fast food", "in favor of")
FREE = Argument("T1", "I just want to be left alone with my own choices.")
PLACEHOLDER = re.compile(r"\{[a-z_]+\}|\[[A-Z][a-z]+\]")


def _text(messages: list) -> str:
    return "\n".join(m["content"] for m in messages)


def _all_prompts(argument: Argument) -> list[list]:
    example = prompts.Example(ARGUMENT, ("Security: personal",))
    built = [prompts.all_in_one_prompt(argument), prompts.all_in_one_prompt(argument, [example]),
             prompts.cot_question(argument)]
    for c in categories():
        built += [prompts.per_value_prompt(argument, c), prompts.per_value_prompt(argument, c, [example]),
                  prompts.cot_value_prompt(argument, "Health and safety.", c)]
    return built


@pytest.mark.parametrize("argument", [ARGUMENT, FREE], ids=["argument", "free-text"])
def test_no_prompt_has_leftover_placeholders(argument: Argument) -> None:
    for messages in _all_prompts(argument):
        for message in messages:
            assert message["role"] in ("system", "user", "assistant")
            assert not PLACEHOLDER.search(message["content"]), message["content"]


def test_every_category_appears_with_its_description() -> None:
    listing = _text(prompts.all_in_one_prompt(ARGUMENT))
    for c in categories():
        assert f"{c.name}: {c.description}" in listing
        question = _text(prompts.per_value_prompt(ARGUMENT, c))
        assert c.name in question and c.description in question
        cot = _text(prompts.cot_value_prompt(ARGUMENT, "reply", c))
        assert c.name in cot and ", ".join(c.synonyms) in cot


def test_per_value_questions_share_the_argument_prefix() -> None:
    texts = [_text(prompts.per_value_prompt(ARGUMENT, c)) for c in categories()]
    common = texts[0]
    for text in texts[1:]:
        while not text.startswith(common):
            common = common[:-1]
    assert "Premise: fast food harms children's health" in common


def test_argument_and_free_text_wordings() -> None:
    text = _text(prompts.per_value_prompt(ARGUMENT, categories()[0]))
    assert "Conclusion: We should ban fast food\nStance: in favor of\nPremise: fast food harms" in text
    assert "Does the argument draw on" in text
    free = _text(prompts.per_value_prompt(FREE, categories()[0]))
    assert "Text: I just want" in free and "Does the text draw on" in free
    assert "Conclusion" not in free and "Stance" not in free
    assert _text(prompts.cot_question(ARGUMENT)) == (
        "What kind of human values are indicated in the premise: fast food harms children's health and the "
        "conclusion: We should ban fast food supporting it?"
    )
    assert _text(prompts.cot_question(FREE)).startswith("What kind of human values are indicated in the text: I just")


def test_cot_turn_two_quotes_the_reply_as_the_paper_does() -> None:
    c = categories()[8]
    messages = prompts.cot_value_prompt(ARGUMENT, "It values\n  health.", c)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"].startswith(f'Do you think "It values health." is aligned with {c.name}, '
                                              f"which can also be called {c.synonyms[0]}")


def test_few_shot_block_lists_examples_and_their_values() -> None:
    examples = [prompts.Example(FREE, ()), prompts.Example(ARGUMENT, ("Security: personal", "Benevolence: caring"))]
    text = _text(prompts.per_value_prompt(ARGUMENT, categories()[0], examples))
    assert "Example 1:\nText: I just want" in text and "Values: none" in text
    assert "Values: Security: personal, Benevolence: caring" in text
    assert text.index("Example 2") < text.index("Now the argument to judge")


def test_schema_enumerates_the_official_names() -> None:
    schema = prompts.values_schema()
    assert schema["properties"]["values"]["items"]["enum"] == list(CATEGORY_NAMES)
    json.dumps(schema)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"values": ["Achievement", "Security: personal"]}', ["Achievement", "Security: personal"]),
        ('Sure!\n```json\n{"values": ["achievement"]}\n```', ["Achievement"]),
        ('{"values": ["Security - personal", "SECURITY: PERSONAL"]}', ["Security: personal"]),
        ('{"values": ["Have privacy"]}', ["Self-direction: action"]),  # a level-1 value
        ('["Tradition"]', ["Tradition"]),
        ('{"values": []}', []),
    ],
)
def test_parse_values_is_lenient_about_form(answer: str, expected: list[str]) -> None:
    parsed = parse_values(answer)
    assert parsed is not None and parsed.values == expected


def test_parse_values_reports_unknown_names_and_rejects_garbage() -> None:
    parsed = parse_values('{"values": ["Achievement", "Wisdom of the ages"]}')
    assert parsed is not None and parsed.values == ["Achievement"] and parsed.unknown == ["Wisdom of the ages"]
    for garbage in ["", "Achievement and Tradition", '{"values": "Achievement"}', '{"values": [1, 2]}',
                    '{"values": ["Achievement"', "null"]:
        assert parse_values(garbage) is None, garbage
