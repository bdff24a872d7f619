"""What a deployment may tune: limits, batching and access. Defaults suit one laptop."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

API_KEY_ENV = "VALUEDETECT_API_KEY"

# Limits that depend on what one argument costs. An encoder labels an argument in milliseconds;
# a language-model detector asks 20 questions per argument (20 paid API calls for a remote LLM),
# and an explanation asks them again for every word left out. A setting left at None takes the
# value of the detector's profile; /v1/model reports the profile and the values in force.
LIMIT_PROFILES: dict[str, dict[str, int]] = {
    "encoder": {"max_arguments": 256, "max_upload_arguments": 100_000, "explain_max_words": 200},
    "language-model": {"max_arguments": 8, "max_upload_arguments": 1_000, "explain_max_words": 20},
}
LANGUAGE_MODEL_TYPES = frozenset({"llm", "prompt"})


def limits_profile(detector_type: str) -> str:
    return "language-model" if detector_type in LANGUAGE_MODEL_TYPES else "encoder"


@dataclass
class ServeSettings:
    model_dir: Path | None = None  # None: the detector shipped with the package
    max_body_bytes: int = 1_000_000
    max_arguments: int | None = None  # per /v1/predict request (or pyvalues segments); None: the profile's
    max_chars: int = 5_000  # per argument: premise + conclusion
    max_upload_bytes: int = 20_000_000
    max_upload_arguments: int | None = None  # None: the profile's
    explain_max_words: int | None = None  # None: the profile's
    batching: bool = True  # False: one forward pass per request (the benchmark's baseline)
    batch_max_arguments: int = 64
    batch_wait_ms: float = 5.0
    explain_slice: int = 8  # occluded variants per model call of an explanation; predictions go between
    max_jobs_kept: int = 16
    max_jobs_running: int = 1  # file jobs labelling at once
    max_jobs_queued: int = 4  # file jobs waiting; beyond, uploads get 429 with Retry-After
    # Host names the server answers to (None: any; `valuedetect serve` sets the loopback names
    # and its --host) and sites other than the server's own page that may POST to it.
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] = ()
    # Read from the environment, never from the command line (where `ps` would show it).
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_arguments", "max_chars", "max_upload_bytes",
                     "max_upload_arguments", "explain_max_words", "batch_max_arguments", "explain_slice",
                     "max_jobs_kept", "max_jobs_running"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_jobs_queued < 0:
            raise ValueError("max_jobs_queued must not be negative")
        if self.batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must not be negative")

    def for_profile(self, profile: str) -> ServeSettings:
        """A copy with every limit left at None set from ``profile``."""
        defaults = LIMIT_PROFILES[profile]
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
