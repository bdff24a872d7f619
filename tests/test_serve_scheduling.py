"""What runs next on the server's model thread: predictions before explanation slices before
upload batches, explanations cut into slices with predictions answered in between, and a
failing explanation that fails only itself. Fakes throughout; the order of model calls is
asserted, never a timing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.serve_helpers import CallbackDetector, fake_served_model

from valuedetect.data import Argument
from valuedetect.explain import explain, word_spans
from valuedetect.serve.app import create_app
from valuedetect.serve.runner import BULK, EXPLAIN, IDLE_SECONDS, PREDICT, ModelRunner, ModelThread
from valuedetect.serve.settings import ServeSettings
from valuedetect.taxonomy import CATEGORY_NAMES, NUM_CATEGORIES

LONG = Argument(id="long", premise=" ".join(f"word{i}" for i in range(30)), conclusion="We should explain this")


class Recorder:
    """Scores from the argument's text (so slices can be checked against one call); records
    each call's kind ("explain" for the argument ``LONG`` and its variants) and size, and can
    hold the first explanation slice until released, or fail on arguments that say 'poison'."""

    def __init__(self, hold_first_slice: bool = False):
        self.calls: list[tuple[str, int]] = []
        self.slice_started = threading.Event()
        self.release = threading.Event()
        if not hold_first_slice:
            self.release.set()

    def __call__(self, arguments: Sequence[Argument]) -> np.ndarray:
        kind = "explain" if arguments[0].id in ("long", "poison") else "predict"
        self.calls.append((kind, len(arguments)))
        if kind == "explain" and not self.slice_started.is_set():
            self.slice_started.set()
            assert self.release.wait(10), "the test never released the first slice"
        if any("poison" in a.premise for a in arguments):
            raise ValueError("this argument breaks the model")
        out = np.zeros((len(arguments), NUM_CATEGORIES))
        for row, argument in zip(out, arguments, strict=True):
            row[:] = (len(argument.premise) % 97) / 100 + np.arange(NUM_CATEGORIES) / 1000
        return out


def test_model_thread_alternates_predictions_with_explain_slices_and_runs_bulk_last():
    thread = ModelThread()
    order: list[str] = []
    gate = threading.Event()
    try:
        blocker = thread.submit(BULK, gate.wait, 10)  # holds the thread while the queues fill
        futures = [thread.submit(kind, order.append, name) for kind, name in (
            (BULK, "b1"), (EXPLAIN, "e1"), (EXPLAIN, "e2"), (PREDICT, "p1"), (PREDICT, "p2"), (PREDICT, "p3"),
            (EXPLAIN, "e3"), (BULK, "b2"))]
        gate.set()
        for future in [blocker, *futures]:
            future.result(timeout=10)
    finally:
        thread.shutdown()
    # A prediction first; while both wait they take turns, so no prediction waits for more than
    # one slice; upload batches when nothing interactive waits.
    assert order == ["p1", "e1", "p2", "e2", "p3", "e3", "b1", "b2"]
    assert thread.ran == {PREDICT: 3, EXPLAIN: 3, BULK: 3}


def test_explain_is_sliced_and_a_prediction_submitted_during_it_goes_first():
    fake = Recorder(hold_first_slice=True)
    variants = 1 + len(word_spans(LONG, 200))

    async def main() -> None:
        runner = ModelRunner(fake, batching=True, wait_ms=0, explain_slice=4)
        await runner.start()
        try:
            explanation = asyncio.create_task(runner.explain(LONG, ["Achievement"], top_k=3))
            await asyncio.to_thread(fake.slice_started.wait, 10)  # the first slice is on the model
            prediction = asyncio.create_task(runner.predict([Argument(id="1", premise="a short one")]))
            while not runner._thread._queues[PREDICT]:  # the prediction waits behind the slice
                await asyncio.sleep(0.001)
            fake.release.set()
            scores = await prediction
            assert scores.shape == (1, NUM_CATEGORIES)
            await explanation
        finally:
            await runner.stop()
        assert runner.stats.explain_slices == sum(kind == "explain" for kind, _ in fake.calls)

    asyncio.run(main())
    kinds = [kind for kind, _ in fake.calls]
    # The prediction ran right after the slice that was running, long before the last slice.
    assert kinds[:2] == ["explain", "predict"]
    assert kinds.count("explain") >= -(-variants // 4) and kinds[-1] == "explain"
    assert all(size <= 4 for kind, size in fake.calls if kind == "explain")
    assert sum(size for kind, size in fake.calls if kind == "explain") == variants


def test_sliced_explanation_equals_one_call():
    fake = Recorder()

    async def sliced() -> tuple[np.ndarray, list]:
        runner = ModelRunner(fake, explain_slice=3)
        await runner.start()
        try:
            return await runner.explain(LONG, CATEGORY_NAMES, top_k=4, max_words=11)
        finally:
            await runner.stop()

    full, explanations = asyncio.run(sliced())
    assert [size for _, size in fake.calls] == [3, 3, 3, 3]  # 12 arguments: the text and 11 variants
    one_full, one_explanations = explain(Recorder(), LONG, CATEGORY_NAMES, top_k=4, max_words=11)
    np.testing.assert_array_equal(full, one_full)
    assert explanations == one_explanations


def test_failing_explain_fails_alone():
    fake = Recorder()
    poison = Argument(id="poison", premise="poison words in a long text", conclusion="c")

    async def main() -> None:
        runner = ModelRunner(fake, batching=True, wait_ms=20, explain_slice=2)
        await runner.start()
        try:
            results = await asyncio.gather(
                runner.explain(poison, ["Achievement"]),
                runner.predict([Argument(id="1", premise="fine")]),
                runner.predict([Argument(id="2", premise="also fine")]),
                runner.explain(LONG, ["Achievement"]),
                return_exceptions=True)
            assert isinstance(results[0], ValueError)
            assert [r.shape for r in results[1:3]] == [(1, NUM_CATEGORIES)] * 2
            assert not isinstance(results[3], BaseException)
            with pytest.raises(KeyError, match="Wealth"):  # refused before any model work
                await runner.explain(LONG, ["Wealth"])
        finally:
            await runner.stop()

    asyncio.run(main())


def test_failing_explain_over_http_leaves_other_requests_alone():
    def before(arguments: Sequence[Argument]) -> None:
        if any("poison" in a.premise for a in arguments):
            raise ValueError("this argument breaks the model")

    settings = ServeSettings(api_key=None, explain_slice=2)
    app = create_app(settings, fake_served_model(CallbackDetector(before)))
    with TestClient(app, raise_server_exceptions=False) as client:
        broken = client.post("/v1/explain", json={"argument": {"text": "poison in some words here"}})
        assert broken.status_code == 500
        assert broken.json()["error"]["code"] == "internal_error"
        fine = client.post("/v1/predict", json={"arguments": [{"text": "a fair trial for everyone"}]})
        assert fine.status_code == 200 and len(fine.json()["results"]) == 1
        explained = client.post("/v1/explain", json={"argument": {"text": "a fair trial for everyone"}})
        assert explained.status_code == 200
        assert client.app.state.runner.stats.explain_slices >= 3  # 5 words and the text, 2 per slice


def test_slices_shrink_to_one_prediction_batch_while_predictions_arrive():
    runner = ModelRunner(Recorder(), explain_slice=8)
    assert runner.slice_size(EXPLAIN) == 8 and runner.slice_size(BULK, 32) == 32  # nothing measured yet
    runner._batch_seconds, runner._seconds_per_argument = 0.1, {EXPLAIN: 0.04, BULK: 0.02}
    runner._last_prediction = time.perf_counter()
    assert runner.slice_size(EXPLAIN) == 2  # two long variants take about one prediction batch
    assert runner.slice_size(BULK, 32) == 5
    runner._last_prediction = time.perf_counter() - IDLE_SECONDS - 1  # nobody to keep waiting
    assert runner.slice_size(EXPLAIN) == 8 and runner.slice_size(BULK, 32) == 32


def test_upload_batches_run_in_slices_behind_predictions():
    fake = Recorder()
    arguments = [Argument(id=str(i), premise="x" * i) for i in range(10)]

    async def main() -> np.ndarray:
        runner = ModelRunner(fake, explain_slice=8)
        await runner.start()
        try:
            runner._batch_seconds, runner._seconds_per_argument = 1.0, {BULK: 0.25}
            runner._last_prediction = time.perf_counter()  # predictions are arriving: slices of 4
            return await asyncio.to_thread(runner.run_blocking, fake, arguments)  # as the job store calls it
        finally:
            await runner.stop()

    scores = asyncio.run(main())
    np.testing.assert_array_equal(scores, Recorder()(arguments))
    assert len(fake.calls) > 1 and fake.calls[0] == ("predict", 4)
