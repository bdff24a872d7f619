"""The one label-word token rule (``lm.tokens``), per tokenizer family, built in memory: byte-level
BPE (Llama 3 / SmolLM2, Qwen2, GPT-2), SentencePiece-style Metaspace (Gemma, T5, Llama 2),
WordPiece (BERT) and ByT5 bytes; and the check that refuses indistinguishable label words."""

from __future__ import annotations

import pytest
from tests.tiny_lm import tiny_tokenizer
from tests.tiny_models import tiny_vocab

from valuedetect.errors import ValueDetectError
from valuedetect.lm.tokens import TokenRule, distinct_classes, word_token_ids


def rule_for(tokenizer) -> TokenRule:
    return TokenRule(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
                     lambda ids: tokenizer.decode(list(ids)))


def metaspace_tokenizer():
    """A SentencePiece-like unigram tokenizer: words carry a leading "▁"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    raw.train_from_iterator(["Yes No yes no The answer is Yes. The answer is No. free will free thought"] * 20,
                            trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")


def test_byte_level_bpe_reads_both_spellings():
    tokenizer = tiny_tokenizer(chat=False)
    ids = rule_for(tokenizer)("Yes")
    assert ids == [tokenizer("Yes")["input_ids"][0], tokenizer(" Yes")["input_ids"][0]]
    assert len(set(ids)) == 2  # "ĠYes" after "The answer is", "Yes" after a chat template's newline
    assert tokenizer.convert_ids_to_tokens(ids[1]).startswith("Ġ")


def test_metaspace_gives_one_token_for_both_spellings():
    tokenizer = metaspace_tokenizer()
    ids = rule_for(tokenizer)("Yes")
    assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]).lstrip("▁").startswith("Y")
    # A multi-word label is read by its first piece.
    assert rule_for(tokenizer)("free will") == rule_for(tokenizer)("free")


def test_wordpiece_lower_cases_and_takes_the_first_piece():
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab=tiny_vocab(), do_lower_case=True)
    assert rule_for(tokenizer)("Yes") == tokenizer.convert_tokens_to_ids(["y"])  # "yes" -> "y" "##e" "##s"
    assert rule_for(tokenizer)("freedom") == tokenizer.convert_tokens_to_ids(["freedom"])


def test_byt5_skips_the_whitespace_byte():
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    assert rule_for(tokenizer)("Yes") == [ord("Y") + 3]  # " Yes" starts with b" ": skipped


def test_words_that_cannot_be_spelt_or_told_apart_are_refused():
    with pytest.raises(ValueDetectError, match="cannot spell the label word"):
        word_token_ids("Yes", lambda text: [], lambda ids: "")
    tokenizer = tiny_tokenizer(chat=False)
    rule = rule_for(tokenizer)
    distinct_classes(["Yes"], ["No"], rule)
    with pytest.raises(ValueDetectError, match="start with the same token"):
        distinct_classes(["Yes", "Sure"], ["Yes please"], rule)
    columns, per_word = rule.columns(["Yes", "Yes please", "No"])
    assert per_word[0] == per_word[1] and len(columns) == len(set(columns)) == 4
