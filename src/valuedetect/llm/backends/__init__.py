"""Backends by name, imported only when asked for (each pulls in a heavy library)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from valuedetect.errors import ConfigError
from valuedetect.llm.backends.base import (
    Budget,
    BudgetExhausted,
    GenerateRequest,
    Generation,
    LanguageModel,
    ScoreRequest,
    Usage,
)

_REGISTRY: dict[str, str] = {
    "transformers": "valuedetect.llm.backends.transformers_backend:TransformersLM",
    "llamacpp": "valuedetect.llm.backends.llamacpp_backend:LlamaCppLM",
    "openai": "valuedetect.llm.backends.openai_backend:OpenAICompatibleLM",
}

BACKENDS = tuple(_REGISTRY)


def backend_class(name: str) -> type[LanguageModel]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown LLM backend {name!r}; available: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, model: str, **options: Any) -> LanguageModel:
    """A backend for ``model``; options a backend does not take are dropped, so one config
    can carry settings for several backends (``base_url`` means nothing to transformers)."""
    cls = backend_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(model, **{k: v for k, v in options.items() if k in accepted and v is not None})


__all__ = [
    "BACKENDS",
    "Budget",
    "BudgetExhausted",
    "GenerateRequest",
    "Generation",
    "LanguageModel",
    "ScoreRequest",
    "Usage",
    "backend_class",
    "make_backend",
]
