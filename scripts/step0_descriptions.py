"""What the description-initialised heads know before any training (a diagnostic, not a result).

Builds an encoder detector, starts its heads from the value descriptions
(valuedetect.encoder.label_init) and scores the dev slice of the held-out protocol with them and
with PyTorch's random heads: ranking AUC, and official F1 at the global threshold best on dev
itself (in-sample on dev, so an upper bound for the untrained head; validation is not touched).

    python scripts/step0_descriptions.py [minilm|mpnet]
"""

from __future__ import annotations

import sys

import torch

from valuedetect.data import load_split
from valuedetect.detectors import make_detector
from valuedetect.encoder.batching import EncodedArguments
from valuedetect.encoder.label_init import init_from_descriptions, pooled_embeddings
from valuedetect.metrics import ranking_auc
from valuedetect.protocol import make_splits
from valuedetect.templates import label_texts
from valuedetect.thresholds import best_global


def main(model: str) -> None:
    splits = make_splits(load_split("training"), load_split("validation"))
    detector = make_detector("encoder", {"model": model})
    detector._build()  # the untrained model, as fit() builds it
    net = detector.model.eval()
    fit_args = EncodedArguments(detector._encode(splits.fit.arguments))
    dev_args = EncodedArguments(detector._encode(splits.dev.arguments))
    with torch.no_grad():
        random_heads = torch.sigmoid(net.head(pooled_embeddings(net, dev_args, detector.pad_id))).numpy()
        label_ids = detector.tokenizer(label_texts(), truncation=True, max_length=128)["input_ids"]
        init_from_descriptions(net, label_ids, fit_args, splits.fit.labels, detector.pad_id, seed=13)
        described = torch.sigmoid(net.head(pooled_embeddings(net, dev_args, detector.pad_id))).numpy()
    for name, scores in (("random heads", random_heads), ("description heads", described)):
        auc = ranking_auc(splits.dev.labels, scores)
        f1 = best_global(scores, splits.dev.labels)[1]
        print(f"{model}, {name}, untrained: dev ranking AUC {auc:.3f}, dev F1 at its best global threshold {f1:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm")
