"""Never pay twice, never lose work: every request and its answer in an SQLite file.

A response is keyed by a hash of what determines it: the backend's identity (backend, the model
as loaded: a hash of its weights for local backends, the endpoint and the model the server reports
for remote ones; how answers are read; decoding settings), the kind of call (loglikelihood /
generate_until) and the request (prompt, choices, max_tokens, temperature, schema). Each answer
is committed as it arrives (autocommit, WAL), so a
run that is killed keeps every answer it received, and the next run sends only what is missing.
Requests are stored too (zlib-compressed JSON), so the file doubles as an audit log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from valuedetect.errors import InputError
from valuedetect.lm.api import (
    LM,
    Budget,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    ResultCallback,
    Usage,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    request BLOB NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""
# What a remote backend learnt about an endpoint (e.g. that it gives no log-probabilities), kept
# so that the next run reads answers the same way and so keys them the same way.
_CAPABILITIES = """
CREATE TABLE IF NOT EXISTS capabilities (
    scope TEXT PRIMARY KEY,
    learnt TEXT NOT NULL,
    updated REAL NOT NULL
)
"""


def _plain(value: Any) -> Any:
    """Dataclasses, mappings and tuples as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_key(identity: Mapping[str, Any], kind: str, request: Any) -> str:
    """The cache key: a SHA-256 over identity, kind and request, in canonical JSON."""
    text = canonical_json({"identity": identity, "kind": kind, "request": request})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """An SQLite file of responses, safe to share between threads (one connection, a lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise InputError("is a folder, expected an SQLite cache file", self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.execute(_CAPABILITIES)
        except sqlite3.DatabaseError as error:
            raise InputError(f"not a usable response cache ({error})", self.path) from None
        except OSError as error:
            raise InputError(f"cannot create the response cache ({error})", self.path) from None
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The cached responses among ``keys``, decoded from JSON."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk)
                found.update((key, json.loads(response)) for key, response in rows)
        return found

    def put(self, key: str, kind: str, identity: Mapping[str, Any], request: Any, response: Any) -> None:
        """Store one response, committed before this returns."""
        blob = zlib.compress(canonical_json(request).encode("utf-8"))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, kind, str(identity.get("backend", "")), str(identity.get("model", "")), blob,
                 json.dumps(_plain(response)), time.time()),
            )

    def capabilities(self, scope: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT learnt FROM capabilities WHERE scope = ?", (scope,)).fetchone()
        return json.loads(row[0]) if row else {}

    def put_capabilities(self, scope: str, learnt: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO capabilities VALUES (?, ?, ?)",
                             (scope, canonical_json(learnt), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachingLM(LM):
    """Answers from the cache where it can and forwards only the misses to ``backend``: a
    wrapper outside every backend, as lm-evaluation-harness's ``CachingLM``.

    Identical requests within one call are forwarded once. ``hits`` and ``misses`` count
    requests answered from the cache and requests sent on (hits also go to ``usage.cache_hits``).
    A backend carrying a soft prompt is never cached (its answers change as the prompt trains).
    """

    def __init__(self, backend: LM, cache: ResponseCache):  # no super(): usage is the backend's
        self.backend = backend
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self.name = f"cached-{backend.name}"  # type: ignore[misc]

    @property
    def usage(self) -> Usage:  # type: ignore[override]
        return self.backend.usage

    @property
    def budget(self) -> Budget:  # type: ignore[override]
        return self.backend.budget

    @property
    def cache_key(self) -> dict[str, Any]:
        return self.backend.cache_key

    @property
    def kind(self) -> str | None:  # type: ignore[override]
        return self.backend.kind

    @property
    def can_generate(self) -> bool:  # type: ignore[override]
        return self.backend.can_generate

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_result: ResultCallback | None = None
    ) -> list[dict[str, float]]:
        return self._run("loglikelihood", requests, self.backend.loglikelihood, lambda r: dict(r),
                         lambda d: {k: float(v) for k, v in d.items()}, on_result)

    def generate_until(
        self, requests: Sequence[GenerateRequest], on_result: ResultCallback | None = None
    ) -> list[Generation]:
        return self._run("generate_until", requests, self.backend.generate_until, lambda g: g.to_dict(),
                         Generation.from_dict, on_result)

    def _scope(self) -> str:
        """The capabilities' row: the backend's identity without what it learnt."""
        return canonical_json({k: v for k, v in self.backend.cache_key.items() if k != "read"})

    def _run(self, kind: str, requests: Sequence[Any], forward: Callable[..., list[Any]],
             encode: Callable[[Any], Any], decode: Callable[[Any], Any], on_result: ResultCallback | None) -> list[Any]:
        learnt = self.cache.capabilities(self._scope())
        if learnt:
            self.backend.restore_capabilities(learnt)
        identity = self.backend.cache_key
        keys = [request_key(identity, kind, r) for r in requests]
        found = self.cache.get_many(keys)
        results: list[Any] = [None] * len(requests)
        waiting: dict[str, list[int]] = {}
        if getattr(self.backend, "soft_prompt", None) is not None:
            return forward(requests, on_result=on_result)
        for i, key in enumerate(keys):
            if key in found:
                results[i] = decode(found[key])
                self.hits += 1
                self.usage.add(cache_hits=1)
                if on_result:
                    on_result(i, results[i])
            else:
                waiting.setdefault(key, []).append(i)
        if not waiting:
            return results
        order = list(waiting)
        self.misses += len(order)
        self.hits += sum(len(v) - 1 for v in waiting.values())
        self.usage.add(cache_hits=sum(len(v) - 1 for v in waiting.values()))
        stored = [False] * len(order)

        def store(j: int, result: Any) -> None:
            key = order[j]
            first = waiting[key][0]
            # Keyed by the identity the answer was read under: a backend that learnt mid-call that
            # its endpoint takes another form (no log-probabilities) reads, and keys, differently.
            nonlocal identity
            now = self.backend.cache_key
            if now != identity:
                self.cache.put_capabilities(self._scope(), self.backend.capabilities())
                identity = now
            self.cache.put(request_key(now, kind, requests[first]), kind, now, requests[first], encode(result))
            stored[j] = True
            for i in waiting[key]:
                results[i] = result
                if on_result:
                    on_result(i, result)

        returned = forward([requests[waiting[key][0]] for key in order], on_result=store)
        for j, result in enumerate(returned):
            if not stored[j]:
                store(j, result)
        return results

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
