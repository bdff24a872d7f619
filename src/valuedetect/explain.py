"""Why a detector sees a value in an argument: leave-one-word-out occlusion.

Occlusion needs nothing but ``predict_proba``, so it explains every detector the same way
(encoders, TF-IDF, prompt-based ones) and its weights mean something a reader can check: how
much the probability of a category falls when that word is removed. Gradient methods would
be cheaper per word but only work for differentiable detectors and give weights in no unit.
``explain`` scores all occluded variants of an argument in one call; the server scores the same
variants in slices so that predictions are answered in between (``serve.runner``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from valuedetect.data import Argument
from valuedetect.taxonomy import CATEGORY_NAMES

# A word is a run of letters/digits (with inner apostrophes or hyphens): punctuation alone
# carries no value and would only add forward passes.
_WORD = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)


@dataclass(frozen=True)
class WordSpan:
    field: str  # "premise" or "conclusion"
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class WordWeight:
    word: WordSpan
    weight: float  # probability with the word minus probability without it


@dataclass(frozen=True)
class CategoryExplanation:
    category: str
    probability: float
    words: tuple[WordWeight, ...]


def word_spans(argument: Argument, max_words: int) -> list[WordSpan]:
    """The words occlusion will try, premise first; at most ``max_words`` of them."""
    spans = []
    for field in ("premise", "conclusion"):
        text = getattr(argument, field)
        for match in _WORD.finditer(text):
            spans.append(WordSpan(field, match.start(), match.end(), match.group()))
    return spans[:max_words]


def _without(argument: Argument, span: WordSpan) -> Argument:
    text = getattr(argument, span.field)
    shortened = re.sub(r"\s{2,}", " ", text[: span.start] + text[span.end :]).strip()
    # An argument must keep a premise; a one-word premise is replaced by a neutral filler.
    if span.field == "premise" and not shortened:
        shortened = "..."
    return replace(argument, **{span.field: shortened})


def occlusion_variants(
    argument: Argument, categories: Sequence[str], max_words: int = 200,
) -> tuple[list[WordSpan], list[Argument]]:
    """The words occlusion tries and the arguments to score: ``argument`` itself, then one
    variant per word left out. Unknown categories are refused here, before any model work."""
    unknown = [c for c in categories if c not in CATEGORY_NAMES]
    if unknown:
        raise KeyError(f"unknown value categories: {', '.join(map(repr, unknown))}")
    spans = word_spans(argument, max_words)
    return spans, [argument, *(_without(argument, s) for s in spans)]


def weigh(
    scores: np.ndarray, spans: Sequence[WordSpan], categories: Sequence[str], top_k: int = 5,
) -> tuple[np.ndarray, list[CategoryExplanation]]:
    """Probabilities of the argument (row 0 of ``scores``) and, for each category, its
    ``top_k`` words from the scores of the occluded variants (the rows after it)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(spans) + 1:
        raise ValueError(f"{len(scores)} rows of scores for {len(spans)} words and the argument")
    full, occluded = scores[0], scores[1:]
    explanations = []
    for name in categories:
        column = CATEGORY_NAMES.index(name)
        weights = full[column] - occluded[:, column] if len(spans) else np.zeros(0)
        order = np.argsort(-weights, kind="stable")
        top = [WordWeight(spans[i], float(weights[i])) for i in order[:top_k] if weights[i] > 0]
        explanations.append(CategoryExplanation(name, float(full[column]), tuple(top)))
    return full, explanations


def explain(
    predict_proba: Callable[[Sequence[Argument]], np.ndarray],
    argument: Argument,
    categories: Sequence[str],
    top_k: int = 5,
    max_words: int = 200,
) -> tuple[np.ndarray, list[CategoryExplanation]]:
    """Probabilities of ``argument`` and, for each requested category, its ``top_k`` words.

    Words are ranked by how much removing them lowers the category's probability; words
    whose removal raises it are kept out of the top list (they argue against the category).
    All variants go through ``predict_proba`` in one call; the server scores them in slices
    instead (``ModelRunner.explain``), with the same two halves.
    """
    spans, variants = occlusion_variants(argument, categories, max_words)
    return weigh(predict_proba(variants), spans, categories, top_k)
