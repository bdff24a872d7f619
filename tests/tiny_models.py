"""Tiny randomly initialised encoders saved as local model folders, and small data folders cut
from the shipped dataset: milliseconds, no downloads."""

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


def small_data_dir(folder: Path, training: int, validation: int, test: int = 0, level1: bool = False) -> Path:
    """A dataset folder with the first arguments of each split (test ones, unlabelled, are cut
    from validation, since the shipped test split has no labels anyway); ``level1`` adds the
    level-1 label files of training and validation."""
    from valuedetect.data import load_split, write_arguments, write_labels

    folder.mkdir(parents=True)
    for name, n in (("training", training), ("validation", validation), ("test", test)):
        if n == 0:
            continue
        split = load_split("validation" if name == "test" else name, level1=level1).subset(range(n))
        write_arguments(folder / f"arguments-{name}.tsv", split.arguments)
        if name != "test":
            write_labels(folder / f"labels-{name}.tsv", split.ids, split.labels)
            if level1:
                write_labels(folder / f"level1-labels-{name}.tsv", split.ids, split.level1_labels, level=1)
    return folder
