"""One thread owns the model; concurrent requests are merged into shared forward passes.

Torch already spreads one forward pass over every core, so running two at once only makes
both slower; what pays is fewer, larger passes. Requests wait at most ``wait_ms`` for others
to join their batch, and a batch never exceeds ``max_arguments`` (a single larger request is
still served whole). Explanations and uploads go through the same thread, so the model is
never used by two threads at once.

What runs next on that thread is chosen by kind of work, so that interactive predictions are
never stuck behind long work:

- predictions first;
- explanations are cut into slices of occluded variants, one slice queued at a time per
  explanation; when a prediction and a slice both wait they take turns, so a prediction waits
  for at most the one slice already running, and explanations still advance under a steady
  stream of predictions;
- background job batches (file uploads) only when no prediction or slice waits, cut into
  slices the same way, so a large upload delays a request by at most one slice.

A slice holds at most ``explain_slice`` arguments; while predictions are arriving it is cut
shorter, to about as long as a recent prediction batch took (measured, per kind of work), so
that "one slice" costs a waiting prediction no more than one batch. With no prediction in the
last ``IDLE_SECONDS`` slices are full size.

A merged batch that fails is run again request by request, so a request the detector cannot
handle fails alone instead of taking the requests that shared its batch with it; a failing
explanation slice fails only its own explanation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from valuedetect.data import Argument

T = TypeVar("T")
PREDICT, EXPLAIN, BULK = 0, 1, 2  # kinds of work on the model thread, in order of precedence
INTERACTIVE = PREDICT  # the name older callers use
IDLE_SECONDS = 2.0  # no prediction for this long: slices need not fit between predictions
SMOOTHING = 0.3  # weight of the newest measurement in the running averages of durations


class ModelStopped(RuntimeError):
    """Work was handed to a model thread that has stopped (the server is shutting down)."""


class ModelThread:
    """One thread that runs every model call (FIFO within a kind of work). Predictions go
    first, except that a waiting explanation slice takes its turn after each prediction;
    bulk work runs when nothing interactive waits. A ThreadPoolExecutor with one worker would
    serve them strictly in order."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple]]] = {
            kind: deque() for kind in (PREDICT, EXPLAIN, BULK)}
        self._condition = threading.Condition()
        self._closed = False
        self._last: int | None = None
        self.ran: dict[int, int] = {kind: 0 for kind in self._queues}  # calls run, per kind
        self._thread = threading.Thread(target=self._loop, daemon=True, name="valuedetect-model")
        self._thread.start()

    def submit(self, priority: int, function: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        if priority not in self._queues:
            raise ValueError(f"unknown kind of work {priority!r}")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._condition:
            if self._closed:
                raise ModelStopped("the model thread has stopped")
            self._queues[priority].append((future, function, args))
            self._condition.notify()
        return future

    def shutdown(self) -> None:
        """Cancel the work still waiting, let the running call finish, stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()
        for waiting in self._queues.values():
            while waiting:
                waiting.popleft()[0].cancel()

    def _next_kind(self) -> int | None:
        """Which queue runs next (lock held); None when all are empty."""
        predict, explain = self._queues[PREDICT], self._queues[EXPLAIN]
        if predict and not (explain and self._last == PREDICT):
            return PREDICT
        if explain:
            return EXPLAIN
        return BULK if self._queues[BULK] else None

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._closed and (kind := self._next_kind()) is None:
                    self._condition.wait()
                if self._closed:
                    return
                assert kind is not None
                future, function, args = self._queues[kind].popleft()
                self._last = kind
            if not future.set_running_or_notify_cancel():
                continue
            self.ran[kind] += 1
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the caller, who reports it
                future.set_exception(error)


@dataclass
class _Pending:
    arguments: Sequence[Argument]
    future: asyncio.Future[np.ndarray]


@dataclass
class RunnerStats:
    requests: int = 0
    forward_passes: int = 0
    arguments: int = 0
    largest_batch: int = 0
    busy_seconds: float = field(default=0.0)  # predictions only (the job store's time estimate reads it)
    explanations: int = 0
    explain_slices: int = 0
    explain_seconds: float = 0.0
    bulk_slices: int = 0


class ModelRunner:
    def __init__(
        self,
        predict_proba: Callable[[Sequence[Argument]], np.ndarray],
        batching: bool = True,
        max_arguments: int = 64,
        wait_ms: float = 5.0,
        explain_slice: int = 8,
    ):
        if explain_slice < 1:
            raise ValueError("explain_slice must be at least 1")
        self._predict = predict_proba
        self.batching = batching
        self.max_arguments = max_arguments
        self.wait_seconds = wait_ms / 1000
        self.explain_slice = explain_slice
        # Running averages, written on the model thread: seconds per prediction batch, and
        # seconds per argument of explanation slices and of upload slices.
        self._batch_seconds: float | None = None
        self._seconds_per_argument: dict[int, float] = {}
        self._last_prediction = -float("inf")
        self.stats = RunnerStats()
        self._thread = ModelThread()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        # A stopped runner can start again (an app's lifespan may run more than once, e.g. under
        # successive test clients); its old thread is stopped for good, so take a new one.
        if self._stopped:
            self._thread, self._stopped = ModelThread(), False
        if self.batching and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._batch_loop(), name="valuedetect-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._thread.shutdown)
        self._stopped = True

    # ------------------------------------------------------------------ entry points
    async def predict(self, arguments: Sequence[Argument]) -> np.ndarray:
        """Scores [n, 20] for ``arguments``, sharing a forward pass with concurrent callers."""
        self.stats.requests += 1
        if not self.batching or self._queue is None:
            return await self.run(self._timed_predict, arguments)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(arguments, future))
        return await future

    async def explain(
        self, argument: Argument, categories: Sequence[str], top_k: int = 5, max_words: int = 200,
    ) -> tuple[np.ndarray, list[Any]]:
        """Leave-one-word-out occlusion of ``argument`` (``valuedetect.explain``), its variants
        scored in slices of ``explain_slice`` so that predictions go in between."""
        from valuedetect.explain import occlusion_variants, weigh

        spans, variants = occlusion_variants(argument, categories, max_words)
        self.stats.explanations += 1
        parts: list[np.ndarray] = []
        done = 0
        while done < len(variants):
            # One slice queued at a time: the next is asked for only when this one is done, so
            # concurrent explanations take turns, and a caller that gives up stops its slices.
            piece = variants[done : done + self.slice_size(EXPLAIN)]
            parts.append(await asyncio.wrap_future(self._thread.submit(EXPLAIN, self._timed_slice, EXPLAIN, piece)))
            done += len(piece)
        return weigh(np.concatenate(parts), spans, categories, top_k)

    def predict_bulk(self, arguments: Sequence[Argument]) -> np.ndarray:
        """Scores for background work (an upload's batch), from a thread that is not the event
        loop: in slices behind all interactive work, so a prediction waits for one slice at most."""
        parts: list[np.ndarray] = []
        done = 0
        while done < len(arguments):
            piece = arguments[done : done + self.slice_size(BULK, len(arguments))]
            parts.append(self._thread.submit(BULK, self._timed_slice, BULK, piece).result())
            done += len(piece)
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def slice_size(self, kind: int, largest: int | None = None) -> int:
        """Arguments in the next slice of ``kind``: at most ``largest`` (``explain_slice`` for
        explanations); while predictions arrive, about as many as run in one prediction batch's time."""
        largest = largest or self.explain_slice
        per_argument = self._seconds_per_argument.get(kind)
        batch = self._batch_seconds
        if batch is None or per_argument is None or time.perf_counter() - self._last_prediction > IDLE_SECONDS:
            return largest
        return max(1, min(largest, int(batch / max(per_argument, 1e-9))))

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function`` on the model thread with a prediction's precedence (for short work
        that is not a plain prediction; long work belongs in slices, as ``explain`` does)."""
        return await asyncio.wrap_future(self._thread.submit(PREDICT, function, *args))

    def run_blocking(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function`` on the model thread from a worker thread that is not on the event
        loop (background jobs), behind any interactive work. The runner's own ``predict_proba``
        on a list of arguments is cut into slices (``predict_bulk``)."""
        if function == self._predict and len(args) == 1 and isinstance(args[0], Sequence):
            return self.predict_bulk(args[0])  # type: ignore[return-value]
        return self._thread.submit(BULK, function, *args).result()

    # ------------------------------------------------------------------ internals
    def _timed_slice(self, kind: int, arguments: Sequence[Argument]) -> np.ndarray:
        start = time.perf_counter()
        scores = np.asarray(self._predict(arguments), dtype=np.float64)
        seconds = time.perf_counter() - start
        self._seconds_per_argument[kind] = _smooth(self._seconds_per_argument.get(kind), seconds / len(arguments))
        if kind == EXPLAIN:
            self.stats.explain_seconds += seconds
            self.stats.explain_slices += 1
        else:
            self.stats.bulk_slices += 1
        return scores

    def _timed_predict(self, arguments: Sequence[Argument]) -> np.ndarray:
        start = time.perf_counter()
        scores = self._predict(arguments)
        seconds = time.perf_counter() - start
        self.stats.busy_seconds += seconds
        self._batch_seconds = _smooth(self._batch_seconds, seconds)
        self._last_prediction = time.perf_counter()
        self.stats.forward_passes += 1
        self.stats.arguments += len(arguments)
        self.stats.largest_batch = max(self.stats.largest_batch, len(arguments))
        return scores

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        carried: _Pending | None = None  # taken from the queue but too large for the last batch
        while True:
            batch = [carried if carried is not None else await self._queue.get()]
            carried = None
            size = len(batch[0].arguments)
            deadline = asyncio.get_running_loop().time() + self.wait_seconds
            while size < self.max_arguments:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(
                        self._queue.get(), remaining)
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(item.arguments) > self.max_arguments:
                    carried = item  # it starts the next batch instead
                    break
                batch.append(item)
                size += len(item.arguments)
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                continue
            merged = [a for p in live for a in p.arguments]
            try:
                scores = await self.run(self._timed_predict, merged)
            except Exception as error:
                if len(live) == 1:
                    if not live[0].future.done():
                        live[0].future.set_exception(error)
                    continue
                # Which request broke the batch? Each runs alone, so only that one fails.
                for p in live:
                    if p.future.done():
                        continue
                    try:
                        own = await self.run(self._timed_predict, p.arguments)
                    except Exception as own_error:
                        if not p.future.done():
                            p.future.set_exception(own_error)
                    else:
                        if not p.future.done():
                            p.future.set_result(own)
                continue
            offset = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(scores[offset : offset + len(p.arguments)])
                offset += len(p.arguments)


def _smooth(average: float | None, value: float) -> float:
    return value if average is None else (1 - SMOOTHING) * average + SMOOTHING * value
