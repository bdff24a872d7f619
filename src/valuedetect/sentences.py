"""Documents labelled sentence by sentence, then summed up per document.

Speeches and news articles carry many values, each in a few sentences; labelled whole, a long
text is cut at the encoder's 128 tokens and its values blur. Sentence mode splits each document
with sentencex (Wikimedia's rule-based segmenter: abbreviations, decimals and quotes handled, some
300 languages, no model to download), labels every sentence, and gives per document and category:

- ``mean``: the mean probability over its sentences;
- ``max``: the highest probability of any sentence;
- ``share``: the share of its sentences in which the category is detected;
- ``detected``: 1 when at least one sentence has it (``share > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from valuedetect.data import Argument

AGGREGATES = ("mean", "max", "share")


def split_sentences(text: str, language: str = "en") -> list[str]:
    """The sentences of ``text`` (the whole text when it has no sentence boundary)."""
    from sentencex import segment

    sentences = [s.strip() for s in segment(language, text)]
    sentences = [s for s in sentences if s]
    return sentences or [text.strip()]


def expand(documents: Sequence[Argument], language: str = "en") -> tuple[list[Argument], np.ndarray]:
    """Each document's sentences as arguments (IDs ``DOC:1``, ``DOC:2``, ...; a conclusion and
    stance stay with every sentence), and for each sentence the index of its document."""
    sentences: list[Argument] = []
    owners: list[int] = []
    for d, document in enumerate(documents):
        for k, text in enumerate(split_sentences(document.premise, language), start=1):
            sentences.append(Argument(id=f"{document.id}:{k}", premise=text, conclusion=document.conclusion,
                                      stance=document.stance))
            owners.append(d)
    return sentences, np.asarray(owners, dtype=np.int64)


@dataclass
class DocumentScores:
    """Per document: how many sentences, and the three aggregates of each category, [n, 20]."""

    sentences: np.ndarray  # [n]
    mean: np.ndarray
    max: np.ndarray
    share: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        return (self.share > 0).astype(np.int8)


def aggregate(scores: np.ndarray, decisions: np.ndarray, owners: np.ndarray, documents: int) -> DocumentScores:
    """Sentence scores and decisions summed up per document (see the module's docstring)."""
    counts = np.bincount(owners, minlength=documents).astype(np.int64)
    categories = scores.shape[1]
    totals = np.zeros((documents, categories))
    np.add.at(totals, owners, scores)
    detected = np.zeros((documents, categories))
    np.add.at(detected, owners, decisions.astype(np.float64))
    highest = np.full((documents, categories), -np.inf)
    np.maximum.at(highest, owners, scores)
    denominator = np.maximum(counts, 1)[:, None]
    return DocumentScores(counts, totals / denominator, highest, detected / denominator)


__all__ = ["AGGREGATES", "DocumentScores", "aggregate", "expand", "split_sentences"]
