"""The one rule that turns a label word into token ids, for every backend with a tokenizer.

A word is read at the answer position by the FIRST token of each of its two spellings: bare
("Yes", after a chat template's "assistant\\n") and with a leading space (" Yes", after "The
answer is"). Its log-probability is the log-sum-exp over those distinct first tokens. Leading
tokens that decode to whitespace only (SentencePiece's lone "▁", ByT5's b" ") are skipped, so
the word's own first piece counts instead. One forward pass then scores every word, exactly for
one-token words (Yes/No in every tokenizer we know) and by its first piece for longer ones
("free thought" -> "free").

Tokenizer families (tested in tests/test_lm_tokens.py): byte-level BPE (Llama 3 / SmolLM2,
Qwen2, GPT-2) gives " Yes" and "Yes" two tokens; SentencePiece (Gemma, T5) gives "▁Yes" for
both spellings or a lone "▁" first; WordPiece (BERT, lower-cased) gives "yes" (or its first
piece) for both; ByT5 gives the byte "Y".

``distinct_classes`` refuses a verbalizer whose positive and negative words share a token:
their probabilities would be the same number counted on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from valuedetect.errors import ValueDetectError


def spellings(word: str) -> tuple[str, str]:
    return (word.strip(), " " + word.strip())


def word_token_ids(word: str, encode: Callable[[str], Sequence[int]], decode: Callable[[Sequence[int]], str],
                   model_name: str = "the model") -> list[int]:
    """The distinct first non-whitespace tokens of ``word``'s spellings."""
    ids: list[int] = []
    for variant in spellings(word):
        first = next((int(t) for t in encode(variant) if decode([t]).strip()), None)
        if first is not None and first not in ids:
            ids.append(first)
    if not ids:
        raise ValueDetectError(f"the tokenizer of {model_name!r} cannot spell the label word {word!r}")
    return ids


def distinct_classes(positive: Sequence[str], negative: Sequence[str], ids: Callable[[str], Sequence[int]]) -> None:
    """Raise if a positive and a negative word share a first token."""
    for a in positive:
        for b in negative:
            if set(ids(a)) & set(ids(b)):
                raise ValueDetectError(f"label words {a!r} and {b!r} start with the same token, so the model "
                                       "cannot tell them apart; choose other words")


class TokenRule:
    """``word_token_ids`` for one tokenizer, memoised."""

    def __init__(self, encode: Callable[[str], Sequence[int]], decode: Callable[[Sequence[int]], str],
                 model_name: str = "the model"):
        self._encode = encode
        self._decode = decode
        self._model_name = model_name
        self._memo: dict[str, list[int]] = {}

    def __call__(self, word: str) -> list[int]:
        if word not in self._memo:
            self._memo[word] = word_token_ids(word, self._encode, self._decode, self._model_name)
        return self._memo[word]

    def columns(self, words: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """The distinct token ids of ``words`` (the vocabulary columns to read) and, per word,
        the indices of its ids among them."""
        columns: list[int] = []
        per_word: list[list[int]] = []
        for word in words:
            mine = []
            for token in self(word):
                if token not in columns:
                    columns.append(token)
                mine.append(columns.index(token))
            per_word.append(mine)
        return columns, per_word


__all__ = ["TokenRule", "distinct_classes", "spellings", "word_token_ids"]
