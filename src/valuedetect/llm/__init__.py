"""Prompting language models for value detection: backends, prompts, the response cache.

Nothing here imports torch, transformers, openai or llama_cpp at import time; each backend
imports its library when it is first used, so ``--backend openai`` never loads torch.
"""
