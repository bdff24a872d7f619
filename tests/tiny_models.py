"""Tiny randomly initialised encoders saved as local model folders: milliseconds, no downloads."""

from __future__ import annotations

from pathlib import Path

import torch

_WORDS = [
    "we",
    "should",
    "ban",
    "fast",
    "food",
    "because",
    "it",
    "is",
    "bad",
    "for",
    "health",
    "and",
    "costly",
    "the",
    "people",
    "freedom",
    "of",
    "choice",
    "children",
    "must",
    "be",
    "protected",
    "nature",
    "environment",
    "law",
    "rules",
    "tradition",
    "religion",
    "money",
    "wealth",
    "power",
    "safety",
    "security",
    "family",
    "love",
    "honest",
    "fair",
    "equal",
    "justice",
    "peace",
    "tolerance",
    "logic",
    "fun",
    "pleasure",
    "in",
    "favor",
    "against",
    "of",
    "a",
    "to",
    ".",
    ",",
    ":",
    "!",
    "?",
]


def tiny_vocab() -> dict[str, int]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(_WORDS))]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in vocab]
    vocab += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    return {token: i for i, token in enumerate(vocab)}


def tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, dropout: float = 0.1, seed: int = 0) -> Path:
    """A 2-layer BERT with a WordPiece tokenizer, saved to ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=tiny_vocab(), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def tiny_mpnet_backbone(layers: int = 2, hidden: int = 32) -> torch.nn.Module:
    """A tiny MPNet (relative position bias inside the encoder): tests the layer split."""
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=130,
    )
    return MPNetModel(config)
