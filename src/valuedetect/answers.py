"""Reading model answers: the all-in-one JSON list of values.

Models write JSON loosely (code fences, prose around it, "Security - personal", a level-1 value
such as "Have privacy"), so the parser is lenient about form and strict about meaning: a name
maps to a category only by exact, case- and punctuation-insensitive, or level-1 match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_TO_CATEGORY


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_NORM: dict[str, str] = {_norm(n): n for n in CATEGORY_NAMES}
_BY_NORM.update({_norm(v): c for v, c in LEVEL1_TO_CATEGORY.items() if _norm(v) not in _BY_NORM})


@dataclass
class ParsedValues:
    """Categories found in an answer, and names that matched none (for the report)."""

    values: list[str]
    unknown: list[str] = field(default_factory=list)


def _json_candidates(text: str) -> list[str]:
    text = re.sub(r"```(?:json)?", "", text)
    candidates = []
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    return candidates


def parse_values(text: str) -> ParsedValues | None:
    """The categories an all-in-one answer names, or None if it holds no usable JSON."""
    for candidate in _json_candidates(text or ""):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            data = data.get("values")
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            continue
        found: list[str] = []
        unknown: list[str] = []
        for name in data:
            category = _BY_NORM.get(_norm(name))
            if category is None:
                unknown.append(name)
            elif category not in found:
                found.append(category)
        return ParsedValues(found, unknown)
    return None
