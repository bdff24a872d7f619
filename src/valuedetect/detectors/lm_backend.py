"""What the two language-model detectors (``prompt``, ``llm``) share: the backend settings, building
a backend from them through the one registry (``lm.registry``), and refusing a pairing of
strategy and backend that cannot work, with a message that says what would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from valuedetect.errors import ConfigError
from valuedetect.lm.api import LM
from valuedetect.lm.registry import BACKENDS, make_lm

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class BackendSettings:
    """Backend fields of a detector config (mixed into its dataclass)."""

    backend: str = "transformers"  # transformers | transformers-{causal,masked,seq2seq} | llamacpp | openai | ...
    model: str = "smollm2"  # an alias, a .gguf file, a checkpoint folder, a Hub or API model name
    base_url: str | None = None  # openai / llamacpp-server: the endpoint, e.g. http://127.0.0.1:8080/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: the NAME of the variable holding the key
    concurrency: int = 4  # openai: requests in flight
    timeout: float = 120.0  # openai: seconds per HTTP attempt
    request_deadline: float = 600.0  # openai: seconds for one request, all its retries included
    max_retries: int = 4  # openai: attempts after the first (timeouts, 429, 5xx), within the deadline
    # openai: names the endpoint in the response cache instead of its URL (a server moved to
    # another port, or several replicas of one deployment, then share answers)
    cache_namespace: str | None = None
    n_ctx: int = 4096  # llamacpp: context length
    # transformers: the weights' and activations' type. bfloat16 runs the matrix products on the
    # CPU's bf16 instructions where it has them (AVX512-BF16: packed scoring 2.3x on SmolLM2,
    # benchmarks/results/lm_scoring-smollm2-bf16.json); scores move by rounding, so thresholds
    # must be chosen with the dtype that scores.
    dtype: str = "float32"

    def check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if not self.model:
            raise ValueError("model must not be empty")
        if self.concurrency < 1 or self.n_ctx < 1:
            raise ValueError("concurrency and n_ctx must be at least 1")
        if self.timeout <= 0 or self.request_deadline <= 0:
            raise ValueError("timeout and request_deadline must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


def build_backend(settings: BackendSettings, **options: Any) -> LM:
    s = settings
    return make_lm(s.backend, s.model, base_url=s.base_url, api_key_env=s.api_key_env, concurrency=s.concurrency,
                   timeout=s.timeout, request_deadline=s.request_deadline, max_retries=s.max_retries,
                   cache_namespace=s.cache_namespace, n_ctx=s.n_ctx, dtype=s.dtype, **options)


def require(lm: LM, *, generate: bool = False, train: bool = False, what: str = "") -> None:
    """Refuse a strategy the backend cannot serve, before any work."""
    if generate and not lm.can_generate:
        raise ConfigError(f"{what} needs a language model that generates text (causal or seq2seq); the "
                          f"{lm.name} backend serves a {lm.kind} one")
    if train and not lm.can_train:
        raise ConfigError(f"{what} trains a soft prompt inside the model, which only the transformers backends "
                          f"can; the {lm.name} backend cannot (use backend = \"transformers\", or "
                          "soft_prompt_tokens = 0 for zero-shot)")


__all__ = ["BackendSettings", "build_backend", "require"]
