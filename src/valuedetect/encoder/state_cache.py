"""A disk cache of the frozen bottom's hidden states, shared by runs that freeze the same encoder.

The hidden states after the frozen blocks depend only on the encoder's weights, the number of
frozen blocks and the token ids, so every run of a grid that varies heads, losses or epochs on
one encoder recomputes the same tensors; for MPNet on 2 cores that pass is most of a run. The
cache is off unless ``VALUEDETECT_FROZEN_CACHE`` names a folder; the experiment runner points it
at ``RESULTS/.frozen-states`` so it is deleted with the results.

The key hashes every backbone weight as well as the ids, so a changed or differently trained
encoder misses rather than reading stale states. Entries are written atomically, so an
interrupted run leaves either a whole entry or none.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

ENVIRONMENT_VARIABLE = "VALUEDETECT_FROZEN_CACHE"
FORMAT = 1  # bump when the way states are computed (batching, padding) changes


def cache_folder() -> Path | None:
    """The folder named by the environment, or None when caching is off."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return Path(value) if value else None


def state_key(backbone: Any, frozen_layers: int, input_ids: list[list[int]]) -> str:
    """A digest of everything the frozen states depend on."""
    import torch

    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"format={FORMAT};frozen={frozen_layers};torch={torch.__version__};".encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy())
    for ids in input_ids:
        digest.update(len(ids).to_bytes(4, "little"))
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def load_states(folder: Path, key: str) -> list[Any] | None:
    """The cached per-argument states, or None on a miss or an unreadable entry."""
    import torch

    path = folder / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, weights_only=True)
        flat, lengths = entry["states"], entry["lengths"].tolist()
    except Exception:  # a damaged entry is a miss, and the caller writes a good one over it
        return None
    return list(torch.split(flat, lengths))


def save_states(folder: Path, key: str, states: list[Any]) -> None:
    """Write one entry atomically; a failure to write only costs the next run the recomputation."""
    import torch

    temporary = folder / f".{key}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lengths = torch.tensor([len(s) for s in states], dtype=torch.long)
        torch.save({"states": torch.cat(states), "lengths": lengths}, temporary)
        os.replace(temporary, folder / f"{key}.pt")
    except OSError:
        temporary.unlink(missing_ok=True)
