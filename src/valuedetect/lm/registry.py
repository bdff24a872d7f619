"""Backends by name, declared once, imported only when asked for (each pulls in a heavy library:
torch, llama_cpp, openai), so importing ``valuedetect.lm`` never imports any of them.

``transformers`` reads the model's config and picks the causal, masked or seq2seq backend;
the three can also be named directly. ``llamacpp-server`` is the OpenAI-compatible backend
with llama.cpp's server defaults.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from valuedetect.errors import ConfigError
from valuedetect.lm.api import LM

REGISTRY: dict[str, str] = {
    "transformers": "valuedetect.lm.registry:auto_transformers",
    "transformers-causal": "valuedetect.lm.hf_causal:CausalLM",
    "transformers-masked": "valuedetect.lm.hf_masked:MaskedLM",
    "transformers-seq2seq": "valuedetect.lm.hf_seq2seq:Seq2SeqLM",
    "llamacpp": "valuedetect.lm.llamacpp:LlamaCppLM",
    "openai": "valuedetect.lm.openai_http:OpenAICompatibleLM",
    "llamacpp-server": "valuedetect.lm.openai_http:LlamaCppServerLM",
}
BACKENDS = tuple(REGISTRY)
_KIND_BACKENDS = {"causal": "transformers-causal", "masked": "transformers-masked", "seq2seq": "transformers-seq2seq"}


def backend_factory(name: str) -> Any:
    if name not in REGISTRY:
        raise ConfigError(f"unknown language-model backend {name!r}; available: {', '.join(REGISTRY)}")
    module, attribute = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def make_lm(name: str, model: str, **options: Any) -> LM:
    """A backend for ``model``; options a backend does not take are dropped (and ``None``
    values), so one config can carry settings for several backends."""
    factory = backend_factory(name)
    accepted = _accepted(factory)
    return factory(model, **{k: v for k, v in options.items()
                             if v is not None and (accepted is None or k in accepted)})


def _accepted(factory: Any) -> set[str] | None:
    """The keyword options ``factory`` takes (a class: its and its bases' constructors'); None
    for a function that passes ``**options`` on (it filters them itself)."""
    if not inspect.isclass(factory):
        parameters = inspect.signature(factory).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters}
    names: set[str] = set()
    for base in factory.__mro__:
        if "__init__" in vars(base) and base is not object:
            names |= {p.name for p in inspect.signature(base.__init__).parameters.values()
                      if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return names


def transformers_kind(model: str, kind: str = "auto", model_object: Any = None) -> str:
    """causal / masked / seq2seq: given, read off a model object, or from the model's config
    (a GGUF alias or file is causal)."""
    if kind != "auto":
        return kind
    from valuedetect.lm.gguf import gguf_file
    from valuedetect.lm.hf import detect_kind

    if model_object is not None:
        return detect_kind(model_object.config)
    if gguf_file(model) is not None:
        return "causal"
    from transformers import AutoConfig

    try:
        return detect_kind(AutoConfig.from_pretrained(model))
    except (OSError, ValueError) as error:
        from valuedetect.errors import ValueDetectError
        from valuedetect.lm.gguf import LM_ALIASES

        raise ValueDetectError(f"cannot load the language model {model!r} ({error}); use a local checkpoint folder, "
                               f"a .gguf file, an alias ({', '.join(LM_ALIASES)}), or a Hub name where the Hub is "
                               "reachable") from None


def auto_transformers(model: str, *, lm_type: str = "auto", **options: Any) -> LM:
    """The transformers backend that fits the model's kind."""
    kind = transformers_kind(model, lm_type, options.get("model_object"))
    return make_lm(_KIND_BACKENDS[kind], model, **options)


__all__ = ["BACKENDS", "REGISTRY", "auto_transformers", "backend_factory", "make_lm", "transformers_kind"]
