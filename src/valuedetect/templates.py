"""Input templates: how an argument becomes model text. The one place templates live.

A template is a format string over the fields ``premise``, ``conclusion``, ``stance`` (the
dataset's wording, "in favor of" / "against"), ``stance_verb`` ("supporting" / "against", as
the paper's CLS prompt renders it) and, for per-value templates, ``value`` fields. Free text
(no conclusion, no stance) is rendered by ``free_text`` so no template prints empty slots.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from valuedetect.data import Argument
from valuedetect.errors import ConfigError

_STANCE_VERBS = {"in favor of": "supporting", "against": "against"}


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

_FIELDS = {"premise", "conclusion", "stance", "stance_verb"}


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
