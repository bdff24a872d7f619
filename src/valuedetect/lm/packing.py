"""Packed sequences: one argument and its value questions in one row, each question attending to
the argument and to itself only.

A row is a shared part (the argument, ``shared`` positions) followed by the question suffixes
one after another. Suffix i gets position ids ``shared .. shared + len_i - 1``, as if it followed
the argument alone, and a 4D attention mask lets it see the shared part and its own earlier
tokens, never another suffix. So every suffix's logits equal those of its own separate prompt,
while the argument's positions are computed once. With ``past`` > 0 the shared part is already
in a key/value cache (prompt tuning reuses it across questions and epochs) and the row holds
only suffixes. A cache may also hold the questions themselves (``past_segments``): a soft prompt
placed at the end of each question then continues its own question only (``continuation``).

Pads (rows shorter than the batch's widest) attend to themselves only, so no softmax row is
empty. Models with sliding-window layers get a second mask that also hides keys more than
``window`` positions back, as their own mask would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Where each token of a packed row sits: its position id and its segment (-1 shared,
    i for suffix i), and the index of each suffix's last token (where its answer is read)."""

    positions: tuple[int, ...]
    segments: tuple[int, ...]
    last: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.positions)


def layout(shared: int, suffixes: Sequence[int], past: int = 0) -> Layout:
    """The layout of a row: ``shared`` tokens in the row (0 when they are in the cache, ``past``
    of them), then suffixes of the given lengths."""
    positions = list(range(past, past + shared))
    segments = [-1] * shared
    last = []
    for i, length in enumerate(suffixes):
        if length < 1:
            raise ValueError("every packed suffix needs at least one token")
        positions += range(past + shared, past + shared + length)
        segments += [i] * length
        last.append(len(positions) - 1)
    return Layout(tuple(positions), tuple(segments), tuple(last))


def continuation(starts: Sequence[int], lengths: Sequence[int]) -> Layout:
    """A row of suffixes that each continue their own cached segment: suffix i has ``lengths[i]``
    tokens at positions ``starts[i]`` onwards (segment i)."""
    positions: list[int] = []
    segments: list[int] = []
    last = []
    for i, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        if length < 1:
            raise ValueError("every packed suffix needs at least one token")
        positions += range(start, start + length)
        segments += [i] * length
        last.append(len(positions) - 1)
    return Layout(tuple(positions), tuple(segments), tuple(last))


def attention_mask(rows: Sequence[Layout], width: int, past: int, dtype: Any, window: int | None = None,
                   past_segments: Sequence[int] | None = None, past_positions: Sequence[int] | None = None) -> Any:
    """Additive float mask [rows, 1, width, past + width]: 0 where a query may attend, the
    dtype's minimum where not. ``past`` cached positions are visible to every real token, or,
    with ``past_segments``, those of segment -1 to all and those of segment i to suffix i only
    (``past_positions`` then gives their position ids, for the window)."""
    import torch

    n = len(rows)
    positions = torch.full((n, width), -1, dtype=torch.long)
    segments = torch.full((n, width), -2, dtype=torch.long)
    for r, row in enumerate(rows):
        positions[r, : row.width] = torch.tensor(row.positions)
        segments[r, : row.width] = torch.tensor(row.segments)
    real = segments > -2
    index = torch.arange(width)
    before = index[None, :, None] >= index[None, None, :]  # key not after query
    same = segments[:, :, None] == segments[:, None, :]
    shared_key = (segments == -1)[:, None, :]
    allowed = before & (same | shared_key) & real[:, :, None] & real[:, None, :]
    allowed = allowed | torch.eye(width, dtype=torch.bool)[None]  # pads see themselves
    if window is not None:
        allowed &= (positions[:, :, None] - positions[:, None, :]) < window
    cached = real[:, :, None].expand(n, width, past)
    if past_segments is not None:
        key_segments = torch.tensor(list(past_segments), dtype=torch.long)
        cached = cached & ((key_segments == -1)[None, None, :] | (segments[:, :, None] == key_segments[None, None, :]))
    if window is not None and past:
        key_pos = torch.arange(past) if past_positions is None else torch.tensor(list(past_positions))
        cached = cached & ((positions[:, :, None] - key_pos[None, None, :]) < window)
    full = torch.cat([cached, allowed], dim=2)
    mask = torch.zeros(full.shape, dtype=dtype)
    mask.masked_fill_(~full, torch.finfo(dtype).min)
    return mask[:, None]


@dataclass(frozen=True)
class Tokens:
    """Tokens of several arguments in one row (or one cache): for each token its group (which
    argument), its segment (-1: the argument itself; j: pair j's question or soft tokens) and its
    position id. Prompt tuning with the soft prompt at the end lays a whole training step out so."""

    groups: tuple[int, ...]
    segments: tuple[int, ...]
    positions: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.positions)

    @classmethod
    def shared(cls, group: int, length: int) -> Tokens:
        return cls((group,) * length, (-1,) * length, tuple(range(length)))

    @classmethod
    def suffix(cls, group: int, segment: int, start: int, length: int) -> Tokens:
        return cls((group,) * length, (segment,) * length, tuple(range(start, start + length)))

    @classmethod
    def join(cls, parts: Sequence[Tokens]) -> Tokens:
        return cls(tuple(g for p in parts for g in p.groups), tuple(s for p in parts for s in p.segments),
                   tuple(x for p in parts for x in p.positions))


def grouped_mask(past: Tokens, row: Tokens, dtype: Any, window: int | None = None) -> Any:
    """Additive float mask [1, 1, row, past + row] for a row continuing a cache: a token sees the
    keys of its own group that are its argument (segment -1) or its own segment, cached or earlier
    in the row (and, with ``window``, fewer than ``window`` positions back)."""
    import torch

    query_groups, query_segments = torch.tensor(row.groups), torch.tensor(row.segments)
    key_groups = torch.tensor(past.groups + row.groups, dtype=torch.long)
    key_segments = torch.tensor(past.segments + row.segments, dtype=torch.long)
    allowed = (query_groups[:, None] == key_groups[None, :]) & (
        (key_segments == -1)[None, :] | (query_segments[:, None] == key_segments[None, :]))
    width = row.width
    causal = torch.ones((width, past.width + width), dtype=torch.bool)
    causal[:, past.width:] = torch.ones((width, width), dtype=torch.bool).tril()
    allowed &= causal
    if window is not None:
        query_positions = torch.tensor(row.positions)
        key_positions = torch.tensor(past.positions + row.positions, dtype=torch.long)
        allowed &= (query_positions[:, None] - key_positions[None, :]) < window
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def position_ids(rows: Sequence[Layout], width: int) -> Any:
    """[rows, width] position ids; pads repeat the row's last position (they are never read)."""
    import torch

    out = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : row.width] = torch.tensor(row.positions)
        if row.width < width:
            out[r, row.width :] = row.positions[-1] if row.positions else 0
    return out


__all__ = ["Layout", "Tokens", "attention_mask", "continuation", "grouped_mask", "layout", "position_ids"]
