"""Length-bucketed batches with dynamic padding: on a CPU, padding tokens are most of the
cost of a naive batch (arguments average ~36 tokens, a fixed max length is 128)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EncodedArguments(Dataset):
    """Token ids per argument, optionally with cached hidden states of the frozen bottom."""

    def __init__(self, input_ids: Sequence[Sequence[int]], labels: np.ndarray | None = None,
                 hidden: Sequence[torch.Tensor] | None = None):
        self.input_ids = [list(ids) for ids in input_ids]
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        self.hidden = hidden

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, i: int) -> dict[str, object]:
        item: dict[str, object] = {"input_ids": self.input_ids[i], "index": i}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.hidden is not None:
            item["hidden"] = self.hidden[i]
        return item


def collate(items: list[dict[str, object]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest item of this batch, not to a global maximum."""
    width = max(len(it["input_ids"]) for it in items)  # type: ignore[arg-type]
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for r, it in enumerate(items):
        seq = it["input_ids"]
        ids[r, : len(seq)] = torch.as_tensor(seq)  # type: ignore[arg-type]
        mask[r, : len(seq)] = 1  # type: ignore[arg-type]
    batch = {"input_ids": ids, "attention_mask": mask,
             "index": torch.as_tensor([it["index"] for it in items])}
    if "labels" in items[0]:
        batch["labels"] = torch.stack([it["labels"] for it in items])  # type: ignore[misc]
    if "hidden" in items[0]:
        dim = items[0]["hidden"].shape[-1]  # type: ignore[union-attr]
        hidden = torch.zeros((len(items), width, dim), dtype=items[0]["hidden"].dtype)  # type: ignore[union-attr]
        for r, it in enumerate(items):
            h = it["hidden"]
            hidden[r, : h.shape[0]] = h  # type: ignore[union-attr]
        batch["hidden"] = hidden
        del batch["input_ids"]
    return batch


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, the same for a given (seed, epoch).

    Arguments are shuffled, cut into pools of ``pool`` batches, sorted by length inside each
    pool and cut into batches; the batch order is shuffled again. Determinism per epoch is what
    lets an interrupted run skip the batches it already did and continue identically.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, shard: int = 0, num_shards: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool
        self.epoch = 0
        self.skip = 0
        self.shard = shard
        self.num_shards = num_shards

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's batch order, optionally skipping batches already trained on."""
        self.epoch = epoch
        self.skip = skip

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, n, size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _usable(self) -> list[list[int]]:
        """Batches every process gets part of: with N processes a batch of fewer than N
        arguments is dropped (before skipping, so resumed epochs count batches the same way)."""
        return [b for b in self._batches() if len(b) >= self.num_shards]

    def __iter__(self) -> Iterator[list[int]]:
        """This process's part of each batch: with several processes (``accelerate launch``)
        every batch is split in near-equal contiguous parts, so the effective batch size stays
        the same."""
        for batch in self._usable()[self.skip :]:
            if self.num_shards == 1:
                yield batch
            else:
                yield np.array_split(np.asarray(batch), self.num_shards)[self.shard].tolist()

    def __len__(self) -> int:
        if self.num_shards == 1:
            return (len(self.lengths) + self.batch_size - 1) // self.batch_size
        return len(self._usable())
