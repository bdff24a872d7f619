"""The response cache: a second run sends nothing; every answer is on disk as soon as it
arrives, so a killed run keeps what it received."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.fake_lm import FakeLM

from valuedetect.errors import InputError
from valuedetect.lm.api import BudgetExhausted, GenerateRequest, LoglikelihoodRequest
from valuedetect.lm.cache import CachingLM, ResponseCache, request_key


def _requests(n: int) -> list[LoglikelihoodRequest]:
    return [LoglikelihoodRequest([{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def test_second_run_makes_no_backend_calls(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    first = CachingLM(FakeLM(yes=lambda t: 0.8), ResponseCache(path))
    answers = first.loglikelihood(_requests(5))
    assert first.misses == 5 and first.hits == 0 and len(first.backend.score_calls) == 5
    first.close()

    backend = FakeLM(yes=lambda t: 0.1)  # would answer differently: proves the cache answered
    second = CachingLM(backend, ResponseCache(path))
    assert second.loglikelihood(_requests(5)) == answers
    assert backend.score_calls == [] and second.hits == 5 and second.misses == 0
    assert second.usage.requests == 0 and second.usage.cache_hits == 5


def test_generations_round_trip_and_duplicates_are_sent_once(tmp_path: Path) -> None:
    lm = CachingLM(FakeLM(answer=lambda t: f"echo {t}"), ResponseCache(tmp_path / "c.sqlite"))
    requests = [GenerateRequest("a"), GenerateRequest("b"), GenerateRequest("a")]
    out = lm.generate_until(requests)
    assert [g.text for g in out] == ["echo a", "echo b", "echo a"]
    assert len(lm.backend.generate_calls) == 2 and lm.hits == 1
    again = lm.generate_until(requests)
    assert again == out and len(lm.backend.generate_calls) == 2


def test_key_depends_on_model_kind_and_decoding() -> None:
    base = request_key({"backend": "x", "model": "m"}, "generate", GenerateRequest("p"))
    assert base != request_key({"backend": "x", "model": "other"}, "generate", GenerateRequest("p"))
    assert base != request_key({"backend": "x", "model": "m"}, "score", GenerateRequest("p"))
    assert base != request_key({"backend": "x", "model": "m"}, "generate", GenerateRequest("p", max_tokens=5))
    assert base == request_key({"model": "m", "backend": "x"}, "generate", GenerateRequest("p"))


def test_each_answer_is_committed_as_it_arrives(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    seen = []

    def count_rows(i: int, result: object) -> None:  # another connection, as another process would see it
        with sqlite3.connect(path) as db:
            seen.append(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    CachingLM(FakeLM(), ResponseCache(path)).loglikelihood(_requests(4), on_result=count_rows)
    assert seen == [1, 2, 3, 4]


def test_budget_stop_keeps_answers_and_resume_sends_only_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    backend = FakeLM()
    backend.budget.max_requests = 3
    with pytest.raises(BudgetExhausted, match="max_requests=3"):
        CachingLM(backend, ResponseCache(path)).loglikelihood(_requests(5))
    assert len(ResponseCache(path)) == 3
    resumed = CachingLM(FakeLM(), ResponseCache(path))
    resumed.loglikelihood(_requests(5))
    assert resumed.hits == 3 and len(resumed.backend.score_calls) == 2


_KILLED_RUN = """
import sys
sys.path.insert(0, {root!r})
from tests.fake_lm import FakeLM
from valuedetect.lm.api import LoglikelihoodRequest
from valuedetect.lm.cache import CachingLM, ResponseCache
lm = CachingLM(FakeLM(delay=0.05), ResponseCache({path!r}))
lm.loglikelihood([LoglikelihoodRequest([{{"role": "user", "content": f"question {{i}}"}}]) for i in range(200)])
"""


def test_sigkill_mid_run_loses_nothing_received(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    code = _KILLED_RUN.format(root=str(Path(__file__).parent.parent), path=str(path))
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        deadline = time.monotonic() + 60
        rows = 0
        while rows < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists():
                try:
                    with sqlite3.connect(path, timeout=5) as db:
                        rows = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    rows = 0
        assert rows >= 5, "the child run did not write answers in time"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    kept = len(ResponseCache(path))
    assert 5 <= kept < 200
    resumed = CachingLM(FakeLM(), ResponseCache(path))
    resumed.loglikelihood(_requests(200))
    assert resumed.hits == kept and len(resumed.backend.score_calls) == 200 - kept


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_text("not sqlite " * 100)
    with pytest.raises(InputError, match=r"cache\.sqlite: not a usable response cache"):
        ResponseCache(path)
