"""The value taxonomy of Touche23-ValueEval: the one source every other module reads.

The 20 level-2 categories, the 54 level-1 values and their example effects come from the
dataset's own ``value-categories.json`` (shipped in the package), so the official order can
never drift from the data. The short descriptions, synonyms and Schwartz higher-order groups
are ours; prompt templates and verbalizers read them from here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

TAXONOMY_VERSION = "touche23-valueeval-2023-08-15"

HIGHER_ORDER_GROUPS: tuple[str, ...] = (
    "Openness to change",
    "Self-enhancement",
    "Conservation",
    "Self-transcendence",
)


@dataclass(frozen=True)
class Category:
    """A level-2 value category with everything templates and reports need about it."""

    name: str
    index: int
    level1: tuple[str, ...]
    examples: dict[str, tuple[str, ...]]
    description: str
    synonyms: tuple[str, ...]
    group: str

    @property
    def short_label(self) -> str:
        """Lower-case label for running text, e.g. 'security: personal'."""
        return self.name.lower()


# Our own wording, kept close to the level-1 values and examples in value-categories.json.
# Hedonism, Face and Humility sit on the border of two of Schwartz's groups; they are filed
# under the group the ValueEval circle places them first.
_DESCRIPTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Self-direction: thought": (
        "Openness to change",
        "freedom to cultivate one's own ideas and abilities: creativity, curiosity and free thought",
        ("creativity", "curiosity", "free thought", "originality", "imagination",
         "open-mindedness", "intellectual freedom", "inquisitive"),
    ),
    "Self-direction: action": (
        "Openness to change",
        "freedom to determine one's own actions: independence, choosing one's own goals, privacy",
        ("independence", "autonomy", "freedom of choice", "self-determination", "privacy",
         "liberty", "self-reliance", "free will"),
    ),
    "Stimulation": (
        "Openness to change",
        "excitement, novelty and change: an exciting and varied life, daring",
        ("excitement", "novelty", "adventure", "variety", "daring", "thrill", "challenge",
         "risk-taking"),
    ),
    "Hedonism": (
        "Openness to change",
        "pleasure and sensuous gratification for oneself",
        ("pleasure", "enjoyment", "fun", "gratification", "indulgence", "delight",
         "happiness", "leisure"),
    ),
    "Achievement": (
        "Self-enhancement",
        "personal success through demonstrating competence by social standards: ambition, "
        "capability, intellect, courage",
        ("success", "ambition", "competence", "accomplishment", "capability", "excellence",
         "courage", "intelligence"),
    ),
    "Power: dominance": (
        "Self-enhancement",
        "power through exercising control over people: influence and the right to command",
        ("dominance", "control", "authority", "influence", "command", "power over others",
         "leadership", "supremacy"),
    ),
    "Power: resources": (
        "Self-enhancement",
        "power through control of material and social resources: wealth",
        ("wealth", "money", "riches", "property", "prosperity", "affluence",
         "material resources", "economic power"),
    ),
    "Face": (
        "Self-enhancement",
        "security and power through maintaining one's public image and avoiding humiliation: "
        "social recognition and a good reputation",
        ("reputation", "public image", "social recognition", "prestige", "dignity", "honor",
         "status", "respectability"),
    ),
    "Security: personal": (
        "Conservation",
        "safety in one's immediate environment: health, belonging, no debts, tidiness, a "
        "comfortable life",
        ("personal safety", "health", "well-being", "comfort", "belonging", "financial security",
         "stability", "protection"),
    ),
    "Security: societal": (
        "Conservation",
        "safety and stability in the wider society: a safe country and a stable society",
        ("national security", "public safety", "social stability", "law and order", "defense",
         "social order", "safe country", "protection of society"),
    ),
    "Tradition": (
        "Conservation",
        "maintaining and preserving cultural, family or religious traditions and faith",
        ("tradition", "custom", "heritage", "religion", "faith", "ritual", "culture",
         "religious belief"),
    ),
    "Conformity: rules": (
        "Conservation",
        "compliance with rules, laws and formal obligations: being compliant, self-disciplined "
        "and behaving properly",
        ("obedience", "compliance", "rules", "law-abiding", "self-discipline", "duty",
         "propriety", "regulation"),
    ),
    "Conformity: interpersonal": (
        "Conservation",
        "avoiding upsetting or harming other people: politeness and honoring elders",
        ("politeness", "courtesy", "respect for elders", "tact", "deference", "good manners",
         "consideration", "harmony with others"),
    ),
    "Humility": (
        "Conservation",
        "recognising one's insignificance in the larger scheme of things: modesty and "
        "accepting life as it is",
        ("humility", "modesty", "humbleness", "acceptance", "contentment", "unpretentiousness",
         "simplicity", "self-effacement"),
    ),
    "Benevolence: caring": (
        "Self-transcendence",
        "devotion to the welfare of those close to one: helpfulness, honesty, forgiveness, "
        "love and a secure family",
        ("caring", "helpfulness", "kindness", "compassion", "love", "honesty", "forgiveness",
         "family"),
    ),
    "Benevolence: dependability": (
        "Self-transcendence",
        "being a reliable and trustworthy member of one's group: responsibility and loyalty",
        ("dependability", "reliability", "responsibility", "loyalty", "trustworthiness",
         "faithfulness", "accountability", "commitment"),
    ),
    "Universalism: concern": (
        "Self-transcendence",
        "commitment to equality, justice and protection for all people: a world at peace",
        ("equality", "justice", "fairness", "human rights", "peace", "social justice",
         "protection of the weak", "equal opportunity"),
    ),
    "Universalism: nature": (
        "Self-transcendence",
        "preservation of the natural environment: protecting nature, harmony with it, a world "
        "of beauty",
        ("environment", "nature", "ecology", "sustainability", "conservation", "climate",
         "animal welfare", "beauty of nature"),
    ),
    "Universalism: tolerance": (
        "Self-transcendence",
        "acceptance and understanding of those who are different from oneself: "
        "broadmindedness and the wisdom to accept others",
        ("tolerance", "acceptance", "broadmindedness", "diversity", "inclusion",
         "understanding", "open to others", "pluralism"),
    ),
    "Universalism: objectivity": (
        "Self-transcendence",
        "being logical and forming an objective view based on evidence and reason",
        ("objectivity", "logic", "reason", "rationality", "evidence", "facts",
         "impartiality", "critical thinking"),
    ),
}


@cache
def _value_categories_json() -> dict[str, dict[str, list[str]]]:
    path = resources.files("valuedetect") / "datasets" / "touche23-valueeval" / "value-categories.json"
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def categories() -> tuple[Category, ...]:
    """All 20 categories in the official order (the key order of value-categories.json)."""
    raw = _value_categories_json()
    if set(raw) != set(_DESCRIPTIONS):
        raise RuntimeError("value-categories.json and taxonomy descriptions disagree")
    result = []
    for index, (name, values) in enumerate(raw.items()):
        group, description, synonyms = _DESCRIPTIONS[name]
        result.append(
            Category(
                name=name,
                index=index,
                level1=tuple(values),
                examples={value: tuple(effects) for value, effects in values.items()},
                description=description,
                synonyms=synonyms,
                group=group,
            )
        )
    return tuple(result)


CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in categories())
LEVEL1_NAMES: tuple[str, ...] = tuple(v for c in categories() for v in c.level1)
LEVEL1_TO_CATEGORY: dict[str, str] = {v: c.name for c in categories() for v in c.level1}
NUM_CATEGORIES = len(CATEGORY_NAMES)
NUM_LEVEL1 = len(LEVEL1_NAMES)


def category(name: str) -> Category:
    """Look a category up by its exact official name."""
    for c in categories():
        if c.name == name:
            return c
    raise KeyError(f"unknown value category {name!r}; known: {', '.join(CATEGORY_NAMES)}")


def level1_to_level2_matrix() -> list[list[int]]:
    """A 54 x 20 0/1 matrix: row v has a 1 in the column of the category value v belongs to.

    A level-2 label is the OR of its level-1 labels, i.e. ``(level1 @ M) > 0``.
    """
    return [
        [1 if LEVEL1_TO_CATEGORY[v] == c else 0 for c in CATEGORY_NAMES] for v in LEVEL1_NAMES
    ]
