"""A GGUF model run in-process by llama.cpp (``llama-cpp-python``): the fast path on a CPU.

Scoring evaluates the prompt and reads the next-token logits; llama.cpp keeps the key/value
cache of the last prompt, so a prompt that shares a prefix with the previous one (the 20
per-value questions about one argument) only evaluates its new tokens. Label words are read by
the one token rule (``lm.tokens``). No soft prompts: prompt tuning needs a transformers backend. Generation goes through
``create_chat_completion`` / ``create_completion``, with a grammar built from the JSON schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from valuedetect.errors import ValueDetectError
from valuedetect.lm.api import (
    LM,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    Prompt,
    ResultCallback,
    check_prompt,
    check_request,
    render_plain,
)
from valuedetect.lm.prefix import common_prefix_length
from valuedetect.lm.tokens import TokenRule

INSTALL_HINT = (
    "the llamacpp backend needs llama-cpp-python: pip install llama-cpp-python "
    "(it builds llama.cpp from source, about 15 minutes on 2 cores; pip caches the wheel)"
)


class LlamaCppLM(LM):
    """A GGUF file (or an alias from ``valuedetect.lm.gguf``) in llama.cpp."""

    name = "llamacpp"

    def __init__(self, model: str, *, n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512,
                 seed: int = 0, use_chat_template: bool = True):
        super().__init__()
        self.model_name = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.seed = seed
        self.use_chat_template = use_chat_template
        self._llm: Any = None
        self._formatter: Any = None
        self._rule: TokenRule | None = None

    @property
    def cache_key(self) -> dict[str, Any]:
        from valuedetect.fingerprint import model_identity

        # The file's content, not its name: a re-quantised or replaced GGUF at the same path (or
        # alias) must not answer from the old one's cache entries.
        return {"backend": self.name, "model": self.model_name, "weights": model_identity(self.model_name)["weights"],
                "chat_template": self.use_chat_template}

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        try:
            import llama_cpp
        except ImportError:
            raise ValueDetectError(INSTALL_HINT) from None
        from valuedetect.lm.gguf import LM_ALIASES, gguf_file

        path = gguf_file(self.model_name)
        if path is None:
            raise ValueDetectError(f"the llamacpp backend runs GGUF files: give a .gguf path or an alias "
                                   f"({', '.join(LM_ALIASES)}), not {self.model_name!r}")
        try:
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=self.n_ctx, n_batch=self.n_batch,
                                        n_threads=self.n_threads or max(1, (os.cpu_count() or 2)),
                                        seed=self.seed, logits_all=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as error:
            raise ValueDetectError(f"llama.cpp cannot load {path}: {error}") from None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template and self.use_chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def token_text(token: int) -> str:
                return self._llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=token_text(self._llm.token_eos()),
                                                  bos_token=token_text(self._llm.token_bos()))
        return self._llm

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, the GGUF's chat template applied (assistant turn opened)."""
        llm = self._load()
        if not isinstance(prompt, str) and self._formatter is not None:
            text = self._formatter(messages=[dict(m) for m in prompt]).prompt
            return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return llm.tokenize(render_plain(prompt).encode("utf-8"), add_bos=True, special=False)

    @property
    def rule(self) -> TokenRule:
        if self._rule is None:
            llm = self._load()
            self._rule = TokenRule(lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
                                   lambda ids: llm.detokenize(list(ids)).decode("utf-8", "replace"), self.model_name)
        return self._rule

    def token_ids(self, word: str) -> list[int]:
        return self.rule(word)

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        llm = self._load()  # first: it explains how to install llama-cpp-python if it is missing
        import llama_cpp

        results = []
        n_vocab = llm.n_vocab()
        for i, request in enumerate(requests):
            check_request(request, f"loglikelihood request {i}")
            tokens = self.encode(request.context)
            if request.suffix:
                tokens += llm.tokenize(request.suffix.encode("utf-8"), add_bos=False, special=False)
            if len(tokens) >= llm.n_ctx():
                raise ValueDetectError(f"loglikelihood request {i}: the prompt has {len(tokens)} tokens, more than "
                                       f"the context of {llm.n_ctx()} (raise n_ctx)")
            self.reserve_request()
            # Keep the cached prefix shared with the previous prompt; evaluate at least one token.
            keep = min(common_prefix_length(llm.input_ids[: llm.n_tokens].tolist(), tokens), len(tokens) - 1)
            llm.n_tokens = keep
            llm.eval(tokens[keep:])
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            logits = logits.astype(np.float64)
            logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
            result = {}
            for word in request.continuations:
                values = logprobs[self.rule(word)]
                result[word] = float(values.max() + np.log(np.exp(values - values.max()).sum()))
            self.usage.add(prompt_tokens=len(tokens), processed_tokens=len(tokens) - keep)
            results.append(result)
            if on_result:
                on_result(i, result)
        return results

    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        llm = self._load()
        results = []
        for i, request in enumerate(requests):
            check_prompt(request.context, f"generate request {i}")
            self.reserve_request()
            common: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                      "stop": list(request.stop) or None, "seed": self.seed}
            try:
                if isinstance(request.context, str) or self._formatter is None:
                    grammar = None
                    if request.json_schema is not None:
                        from llama_cpp import LlamaGrammar

                        grammar = LlamaGrammar.from_json_schema(json.dumps(dict(request.json_schema)), verbose=False)
                    response = llm.create_completion(render_plain(request.context), grammar=grammar, **common)
                    text = response["choices"][0]["text"]
                else:
                    fmt = ({"type": "json_object", "schema": dict(request.json_schema)}
                           if request.json_schema is not None else None)
                    response = llm.create_chat_completion([dict(m) for m in request.context], response_format=fmt,
                                                          **common)
                    text = response["choices"][0]["message"]["content"] or ""
            except ValueError as error:  # e.g. the prompt does not fit the context
                raise ValueDetectError(f"generate request {i}: llama.cpp refused it: {error}") from None
            usage = response.get("usage") or {}
            generation = Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                    completion_tokens=int(usage.get("completion_tokens", 0)),
                                    finish_reason=response["choices"][0].get("finish_reason"))
            self.usage.add(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens,
                           processed_tokens=generation.prompt_tokens + generation.completion_tokens)
            results.append(generation)
            if on_result:
                on_result(i, generation)
        return results

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
