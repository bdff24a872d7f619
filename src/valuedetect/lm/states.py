"""The frozen model's key/value states of shared contexts (arguments), kept for reuse.

With the soft prompt after the argument, an argument's states do not change while the prompt
trains, so prompt tuning computes them once and reads them back for every question and epoch.
They are large (SmolLM2-135M: about 46 kB per token, ~3.5 MB per argument), so the store is
bounded: the most recently used within ``max_bytes`` of memory, and optionally spilled to a
folder bounded by ``max_disk_bytes`` (oldest files removed first). A miss only costs the
argument's forward pass again.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any


def _nbytes(tensors: list[tuple[Any, Any]]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in tensors)


class PrefixStates:
    """A bounded store of per-layer (keys, values) by shared-segments key."""

    def __init__(self, max_bytes: int = 2 << 30, directory: str | Path | None = None, max_disk_bytes: int = 0):
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory else None
        self.max_disk_bytes = max_disk_bytes
        self._memory: OrderedDict[str, list[tuple[Any, Any]]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _name(key: Any) -> str:
        return hashlib.sha256(repr(key).encode()).hexdigest()[:32]

    def get(self, key: Any) -> list[tuple[Any, Any]] | None:
        name = self._name(key)
        if name in self._memory:
            self._memory.move_to_end(name)
            self.hits += 1
            return self._memory[name]
        if self.directory is not None:
            path = self.directory / f"{name}.pt"
            if path.exists():
                import torch

                try:
                    tensors = [(k, v) for k, v in torch.load(path, map_location="cpu", weights_only=True)]
                except Exception:  # a torn file from a killed run: recompute
                    path.unlink(missing_ok=True)
                else:
                    self.hits += 1
                    self._remember(name, tensors)
                    return tensors
        self.misses += 1
        return None

    def put(self, key: Any, tensors: list[tuple[Any, Any]]) -> None:
        tensors = [(k.detach(), v.detach()) for k, v in tensors]
        name = self._name(key)
        self._remember(name, tensors)
        if self.directory is not None and self.max_disk_bytes > 0:
            self._spill(name, tensors)

    def _remember(self, name: str, tensors: list[tuple[Any, Any]]) -> None:
        size = _nbytes(tensors)
        if size > self.max_bytes:
            return
        if name in self._memory:
            self._bytes -= _nbytes(self._memory.pop(name))
        self._memory[name] = tensors
        self._bytes += size
        while self._bytes > self.max_bytes and self._memory:
            _, old = self._memory.popitem(last=False)
            self._bytes -= _nbytes(old)

    def _spill(self, name: str, tensors: list[tuple[Any, Any]]) -> None:
        import torch

        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.pt"
        if path.exists():
            return
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save([(k.cpu(), v.cpu()) for k, v in tensors], temporary)
        os.replace(temporary, path)
        files = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files:
            if total <= self.max_disk_bytes:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "bytes_in_memory": self._bytes,
                "arguments_in_memory": len(self._memory)}


__all__ = ["PrefixStates"]
