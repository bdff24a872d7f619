"""The store of arguments' key/value states that prompt tuning reuses across epochs: bounded in
memory (least recently used out first) and on disk (oldest files out first); a torn file is
recomputed, not trusted."""

from __future__ import annotations

from pathlib import Path

import torch

from valuedetect.lm.states import PrefixStates


def states(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 2, n, 4), float(n)), torch.full((1, 2, n, 4), -float(n))) for _ in range(2)]


def test_memory_is_bounded_and_least_recently_used_goes_first() -> None:
    one = sum(k.numel() * 4 + v.numel() * 4 for k, v in states(3))
    store = PrefixStates(max_bytes=2 * one)
    store.put("a", states(3))
    store.put("b", states(3))
    assert store.get("a") is not None  # a is now the most recent
    store.put("c", states(3))
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    assert store.stats()["bytes_in_memory"] <= 2 * one
    assert store.stats()["hits"] == 3 and store.stats()["misses"] == 1


def test_disk_spill_is_bounded_and_survives_a_new_store(tmp_path: Path) -> None:
    store = PrefixStates(max_bytes=0, directory=tmp_path, max_disk_bytes=1 << 30)
    store.put(("ids", (1, 2)), states(5))
    again = PrefixStates(max_bytes=0, directory=tmp_path, max_disk_bytes=1 << 30)
    loaded = again.get(("ids", (1, 2)))
    assert loaded is not None and torch.equal(loaded[1][0], states(5)[1][0])
    small = PrefixStates(max_bytes=0, directory=tmp_path / "small", max_disk_bytes=1)
    small.put("x", states(2))
    small.put("y", states(2))
    assert len(list((tmp_path / "small").glob("*.pt"))) <= 1
    (next(tmp_path.glob("*.pt"))).write_bytes(b"torn")
    assert PrefixStates(directory=tmp_path, max_disk_bytes=1 << 30).get(("ids", (1, 2))) is None
