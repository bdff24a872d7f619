"""Step and time budgets of the CPU training loops (prompt tuning): one rule
for when a loop stops, so every record's ``stopped_by`` means the same thing."""

from __future__ import annotations

import time


def budget_stop(steps: int, started: float, max_steps: int, max_seconds: float) -> str | None:
    """``"max_steps"`` or ``"max_seconds"`` once that budget is spent (0 means none), else None.
    ``started`` is a ``time.monotonic()`` reading taken when training began."""
    if max_steps and steps >= max_steps:
        return "max_steps"
    if max_seconds and time.monotonic() - started >= max_seconds:
        return "max_seconds"
    return None
