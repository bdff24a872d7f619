"""What a deployment may tune: limits, batching and access. Defaults suit one laptop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

API_KEY_ENV = "VALUEDETECT_API_KEY"


@dataclass
class ServeSettings:
    model_dir: Path | None = None  # None: the detector shipped with the package
    max_body_bytes: int = 1_000_000
    max_arguments: int = 256  # per /v1/predict request (or pyvalues segments per document)
    max_chars: int = 5_000  # per argument: premise + conclusion
    max_upload_bytes: int = 20_000_000
    max_upload_arguments: int = 100_000
    explain_max_words: int = 200
    batching: bool = True  # False: one forward pass per request (the benchmark's baseline)
    batch_max_arguments: int = 64
    batch_wait_ms: float = 5.0
    max_jobs_kept: int = 16
    # Read from the environment, never from the command line (where `ps` would show it).
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_arguments", "max_chars", "max_upload_bytes",
                     "max_upload_arguments", "explain_max_words", "batch_max_arguments", "max_jobs_kept"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must not be negative")
