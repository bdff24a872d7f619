"""One thread owns the model; concurrent requests are merged into shared forward passes.

Torch already spreads one forward pass over every core, so running two at once only makes
both slower; what pays is fewer, larger passes. Requests wait at most ``wait_ms`` for others
to join their batch, and a batch never exceeds ``max_arguments`` (a single larger request is
still served whole). Uploads and explanations go through the same thread, so the model is
never used by two threads at once. Interactive work (predictions, explanations) goes ahead of
the batches of background jobs waiting for that thread, so a large upload delays a request by
at most the one job batch already running.

A merged batch that fails is run again request by request, so a request the detector cannot
handle fails alone instead of taking the requests that shared its batch with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from valuedetect.data import Argument

T = TypeVar("T")
INTERACTIVE, BULK = 0, 1  # priorities on the model thread: lower runs first


class ModelStopped(RuntimeError):
    """Work was handed to a model thread that has stopped (the server is shutting down)."""


class ModelThread:
    """One thread that runs every model call, interactive work before bulk work (FIFO within
    a priority). A ThreadPoolExecutor with one worker would serve them strictly in order."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="valuedetect-model")
        self._thread.start()

    def submit(self, priority: int, function: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise ModelStopped("the model thread has stopped")
            self._queue.put((priority, next(self._order), (future, function, args)))
        return future

    def shutdown(self) -> None:
        """Cancel the work still waiting, let the running call finish, stop the thread."""
        with self._lock:
            self._closed = True
            self._queue.put((-1, next(self._order), None))  # ahead of everything still queued
        self._thread.join()
        while True:
            try:
                _, _, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()

    def _loop(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
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
    busy_seconds: float = field(default=0.0)


class ModelRunner:
    def __init__(
        self,
        predict_proba: Callable[[Sequence[Argument]], np.ndarray],
        batching: bool = True,
        max_arguments: int = 64,
        wait_ms: float = 5.0,
    ):
        self._predict = predict_proba
        self.batching = batching
        self.max_arguments = max_arguments
        self.wait_seconds = wait_ms / 1000
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

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function`` on the model thread (for work that is not a plain prediction)."""
        return await asyncio.wrap_future(self._thread.submit(INTERACTIVE, function, *args))

    def run_blocking(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function`` on the model thread from a worker thread that is not on the event
        loop (background jobs), behind any interactive work."""
        return self._thread.submit(BULK, function, *args).result()

    # ------------------------------------------------------------------ internals
    def _timed_predict(self, arguments: Sequence[Argument]) -> np.ndarray:
        start = time.perf_counter()
        scores = self._predict(arguments)
        self.stats.busy_seconds += time.perf_counter() - start
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
