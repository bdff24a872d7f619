"""Shared-prefix helpers for causal LMs: the 20 per-value questions about one argument start with
the same tokens, so that prefix can run once and its key/value cache serve every question.

Used by the causal transformers backend (``lm.hf_causal``: grouping chat requests, which carry no
explicit suffix, and its key/value-cache fallback) and by the llama.cpp backend (``lm.llamacpp``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    """Split consecutive sequences into groups that share one prefix, computed once per group.

    A sequence joins the group if that keeps the shared prefix, or shrinks it by less than it
    saves (the shrinkage is paid again by every member). It does not join if it shares more
    with the sequence after it than with the group: then it starts the next group. So the 20
    questions about one argument form one group (whatever the value names have in common, such
    as "Security: "), and a lone leftover question does not pull the next argument's questions
    into a group whose shared part is only the system prompt.
    """
    groups: list[list[int]] = []
    i = 0
    while i < len(sequences):
        group = [i]
        shared = len(sequences[i])
        j = i + 1
        while j < len(sequences):
            common = common_prefix_length(sequences[i][:shared], sequences[j])
            if common == 0:
                break
            if common < shared:
                ahead = common_prefix_length(sequences[j], sequences[j + 1]) if j + 1 < len(sequences) else 0
                if ahead > common or (len(group) > 1 and (shared - common) * len(group) >= common):
                    break
                shared = common
            group.append(j)
            j += 1
        groups.append(group)
        i = j
    return groups


def shared_length(sequences: Sequence[Sequence[int]], group: Sequence[int]) -> int:
    """How many leading tokens every member of ``group`` shares, leaving each at least one
    token of its own (the suffix run must produce a position to read)."""
    first = sequences[group[0]]
    shared = len(first)
    for i in group[1:]:
        shared = min(shared, common_prefix_length(first, sequences[i]))
    return max(0, min(shared, min(len(sequences[i]) for i in group) - 1))


def expand_cache(cache: Any, rows: int, *, copy_first: bool = True) -> Any:
    """A batch-1 key/value cache repeated to ``rows`` rows; a copy unless ``copy_first`` is
    false (the last user may consume the original: a forward pass appends to its cache)."""
    expanded = copy.deepcopy(cache) if copy_first else cache
    expanded.batch_repeat_interleave(rows)
    return expanded


__all__ = ["common_prefix_length", "expand_cache", "prefix_groups", "shared_length"]
