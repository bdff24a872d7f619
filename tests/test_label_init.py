"""Heads initialised from the value descriptions: each column starts along its description's
centred direction, with unit spread and the log prior odds as its mean over training arguments;
single and linear multiple heads start as the same function; heads with a hidden layer are
refused; a detector trained this way records it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.tiny_models import tiny_bert
from transformers import AutoModel, AutoTokenizer

from valuedetect.data import load_split
from valuedetect.detectors import make_detector
from valuedetect.encoder.batching import EncodedArguments
from valuedetect.encoder.label_init import init_from_descriptions, pooled_embeddings
from valuedetect.encoder.model import EncoderClassifier
from valuedetect.errors import ConfigError
from valuedetect.templates import label_texts


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def _classifier(model_dir: str, heads: str, head_hidden: int = 0) -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(AutoModel.from_pretrained(model_dir), 20, heads=heads, head_hidden=head_hidden,
                             dropout=0.0).eval()


def _inputs(model_dir: str, n: int = 80) -> tuple[list[list[int]], EncodedArguments, np.ndarray]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = load_split("training").subset(range(n))
    label_ids = tokenizer(label_texts(), truncation=True, max_length=64)["input_ids"]
    ids = tokenizer([a.premise for a in train.arguments], truncation=True, max_length=64)["input_ids"]
    assert train.labels is not None
    return label_ids, EncodedArguments(ids), train.labels


def test_label_texts_name_each_column_and_add_level1_values_on_request() -> None:
    categories = label_texts()
    both = label_texts(level1=True)
    assert len(categories) == 20 and len(both) == 74 and both[:20] == categories
    assert categories[0].startswith("Self-direction: thought: ") and both[20].startswith("Be creative: ")


def test_each_head_starts_along_its_description_with_unit_spread_and_the_prior(tiny_model_dir) -> None:
    model = _classifier(tiny_model_dir, "single")
    label_ids, arguments, labels = _inputs(tiny_model_dir)
    note = init_from_descriptions(model, label_ids, arguments, labels, pad_id=0, seed=0)
    assert note["label_texts"] == 20 and note["arguments_sampled"] == 80

    described = pooled_embeddings(model, EncodedArguments(label_ids), 0)
    centred = described - described.mean(0, keepdim=True)
    weight = model.head.linear.weight
    cosine = torch.nn.functional.cosine_similarity(weight, centred, dim=1)
    assert torch.all(cosine > 0.9999)  # column j reads description j's direction, nothing else

    logits = model.head(pooled_embeddings(model, arguments, 0)).detach().numpy()
    prior = labels.mean(0).clip(1e-4, 1 - 1e-4)
    assert np.allclose(logits.std(0, ddof=1), 1.0, atol=1e-3)
    assert np.allclose(logits.mean(0), np.log(prior / (1 - prior)), atol=1e-3)


def test_single_and_linear_multiple_heads_start_as_the_same_function(tiny_model_dir) -> None:
    label_ids, arguments, labels = _inputs(tiny_model_dir, n=40)
    single, multiple = _classifier(tiny_model_dir, "single"), _classifier(tiny_model_dir, "multiple")
    for model in (single, multiple):
        init_from_descriptions(model, label_ids, arguments, labels, pad_id=0, seed=0)
    pooled = pooled_embeddings(single, arguments, 0)
    assert torch.allclose(single.head(pooled), multiple.head(pooled), atol=1e-5)


def test_heads_with_a_hidden_layer_are_refused(tiny_model_dir) -> None:
    label_ids, arguments, labels = _inputs(tiny_model_dir, n=16)
    model = _classifier(tiny_model_dir, "multiple", head_hidden=8)
    with pytest.raises(ConfigError, match="linear heads"):
        init_from_descriptions(model, label_ids, arguments, labels, pad_id=0, seed=0)
    with pytest.raises(ConfigError, match="set head_hidden = 0"):
        make_detector("encoder", {"model": tiny_model_dir, "heads": "multiple", "head_hidden": 8,
                                  "head_init": "descriptions"})


def test_a_detector_trained_from_descriptions_records_it_and_starts_elsewhere(tiny_model_dir) -> None:
    train = load_split("training").subset(range(48))
    settings = {"model": tiny_model_dir, "epochs": 1, "batch_size": 8, "trainable_layers": 1,
                "patience": 0, "thresholds": "global", "seed": 3}
    described = make_detector("encoder", settings | {"head_init": "descriptions"}).fit(train)
    plain = make_detector("encoder", settings).fit(train)
    assert described.info["head_init"]["from"] == "descriptions"
    assert "head_init" not in plain.info
    scores = described.predict_proba(train.arguments[:8])
    assert scores.shape == (8, 20) and not np.allclose(scores, plain.predict_proba(train.arguments[:8]))
