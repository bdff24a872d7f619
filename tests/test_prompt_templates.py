"""Prompt templates (MBC, BCA, OA) and verbalizers as data; custom ones from a config table."""

from __future__ import annotations

import re
import tomllib

import pytest

from valuedetect.data import Argument
from valuedetect.errors import ConfigError
from valuedetect.taxonomy import categories, category
from valuedetect.templates import (
    PROMPT_TEMPLATES,
    VERBALIZERS,
    prompt_template,
    prompt_template_from_config,
    verbalizer_from_config,
)

ARGUMENT = Argument("A1", "it harms children's health", "We should ban fast food", "in favor of")
FREE = Argument("F1", "Fast food harms children's health")


def test_each_template_renders_exactly_as_specified():
    security = category("Security: personal")
    desc = security.description
    assert PROMPT_TEMPLATES["mbc"].render_prompt(ARGUMENT, security, "[MASK]") == (
        "Given the premise: it harms children's health and the conclusion: We should ban fast food supporting it. "
        f"Is it based on the {desc}? [MASK]"
    )
    assert PROMPT_TEMPLATES["bca"].render_prompt(ARGUMENT, security) == (
        "Question: Given the premise: it harms children's health and the conclusion: We should ban fast food "
        f"supporting it. Is it based on the {desc}? The answer is"
    )
    assert PROMPT_TEMPLATES["oa"].render_prompt(ARGUMENT, security) == (
        "I claim that We should ban fast food because I support the it harms children's health. In the aspect "
        "of Security: personal, use some words to describe what kind of person am I?"
    )
    against = Argument("A2", "people may choose", "We should ban fast food", "against")
    assert "We should ban fast food against it." in PROMPT_TEMPLATES["bca"].render_prompt(against, security)


@pytest.mark.parametrize("name", list(PROMPT_TEMPLATES))
@pytest.mark.parametrize("argument", [ARGUMENT, FREE], ids=["argument", "free-text"])
def test_every_category_renders_without_placeholders(name, argument):
    template = PROMPT_TEMPLATES[name]
    for c in categories():
        text = template.render_prompt(argument, c, "[MASK]")
        assert not re.search(r"\{\w*\}", text), text
        assert argument.premise in text
        assert (c.name in text) if name in ("oa", "bca_name") else (c.description in text)
        if name == "mbc":
            assert text.endswith("[MASK]")


def test_verbalizers():
    assert VERBALIZERS["yes_no"].positive == ("Yes",) and VERBALIZERS["yes_no"].negative == ("No",)
    assert PROMPT_TEMPLATES["oa"].verbalizer.kind == "synonyms"
    c = category("Universalism: nature")
    assert PROMPT_TEMPLATES["oa"].verbalizer.synonyms(c) == c.synonyms


CUSTOM = """
[detector.templates.mine]
text = "{conclusion} ({stance}): {premise} Does this appeal to {value_label}? {mask}"
free_text = "{premise} Does this appeal to {value_label}? {mask}"
verbalizer = { positive = ["Yes", "Sure"], negative = ["No"] }
"""


def test_custom_template_from_toml():
    table = tomllib.loads(CUSTOM)["detector"]["templates"]
    template = prompt_template("mine", table)
    c = category("Hedonism")
    assert template.render_prompt(ARGUMENT, c, "<mask>") == (
        "We should ban fast food (in favor of): it harms children's health Does this appeal to Hedonism? <mask>"
    )
    assert template.render_prompt(FREE, c, "<mask>").startswith("Fast food harms")
    assert template.verbalizer.positive == ("Yes", "Sure") and template.has_mask
    synonyms = prompt_template_from_config("s", {"text": "{premise} {value_name}", "verbalizer": "synonyms"})
    assert synonyms.verbalizer.kind == "synonyms" and synonyms.free_text == synonyms.argument


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"free_text": "{premise} {value_label}"}, "missing 'text'"),
        ({"text": "{premise} {value_label}", "txt": "x"}, r"unknown key\(s\) 'txt'"),
        ({"text": "{premise} {value_lable}"}, r"'text' has unknown placeholder\(s\) \{value_lable\}"),
        ({"text": "{conclusion} {value_label}", "free_text": "{value_label}"}, "'text' must contain {premise}"),
        ({"text": "{premise} is it good?"}, "'text' must name the value"),
        ({"text": "{premise} {value_label} {"}, "'text' is not a valid format string"),
        ({"text": "{premise} {} {value_label}"}, "'text' has an unnamed"),
        ({"text": "{mask} {premise} {value_label}"}, r"\{mask\} only once, at the end"),
        ({"text": "{conclusion}: {premise} {value_label}"}, "'free_text' is required"),
        ({"text": "{conclusion}: {premise} {value_label}", "free_text": "{conclusion} {premise} {value_label}"},
         r"'free_text' has unknown placeholder\(s\) \{conclusion\}"),
        ({"text": "{premise} {value_label}", "verbalizer": "yesno"}, "unknown verbalizer 'yesno'"),
        ({"text": "{premise} {value_label}", "verbalizer": {"positive": ["Yes"]}}, "needs 'negative'"),
        ({"text": "{premise} {value_label}", "verbalizer": {"positive": [], "negative": ["No"]}},
         "'positive' must be a non-empty list"),
        ({"text": "{premise} {value_label}", "verbalizer": {"positive": ["Y"], "negative": ["Y"]}},
         "both positive and negative"),
        ({"text": "{premise} {value_label}", "verbalizer": {"kind": "maybe"}}, "'kind' must be one of"),
        ("just a string", "expected a table"),
    ],
)
def test_bad_custom_templates_name_the_field(table, message):
    with pytest.raises(ConfigError, match=message) as error:
        prompt_template_from_config("bad", table)
    assert "template 'bad'" in str(error.value)


def test_unknown_template_name_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown prompt template 'bcaa'; known: mbc, bca, bca_name, oa, nli, mine"):
        prompt_template("bcaa", {"mine": {"text": "{premise} {value_label}"}})
    with pytest.raises(ConfigError, match="must be a name or a table"):
        verbalizer_from_config(3)


def test_prompt_detector_config_validates_templates():
    from valuedetect.detectors import make_detector

    detector = make_detector("prompt", tomllib.loads(CUSTOM)["detector"] | {"template": "mine"})
    assert detector.config.prompt_template().verbalizer.negative == ("No",)
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \{oops\}"):
        make_detector("prompt", {"template": "x", "templates": {"x": {"text": "{premise} {oops}"}}})
    with pytest.raises(ConfigError, match="lm_type must be one of"):
        make_detector("prompt", {"lm_type": "encoder"})
    with pytest.raises(ConfigError, match="'verbalizer'"):
        make_detector("prompt", {"verbalizer": "nope"})


@pytest.mark.parametrize("name", list(PROMPT_TEMPLATES))
def test_context_is_the_argument_and_the_suffix_the_question(name):
    """The split that lets 20 questions share an argument's computation: the context does not
    depend on the category, the suffix holds the value, and together they are the prompt."""
    from valuedetect.templates import split_point

    template = PROMPT_TEMPLATES[name]
    for argument in (ARGUMENT, FREE):
        contexts = {template.render_parts(argument, c)[0] for c in categories()}
        assert len(contexts) == 1 and argument.premise in contexts.pop()
        for c in categories():
            context, suffix = template.render_parts(argument, c)
            assert (c.name if name in ("oa", "bca_name") else c.description) in suffix
            assert suffix.startswith(" ") and context + suffix == template.render_prompt(argument, c)
    assert split_point("{premise} Is it about {value_label}? {mask}") == len("{premise}")
    assert split_point("Does this appeal to {value_label}? {premise}") == 0
    assert split_point("{premise}. Really. Is it {value_name}?") == len("{premise}. Really.")
