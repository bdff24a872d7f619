"""One thread owns the model; concurrent requests are merged into shared forward passes.

Torch already spreads one forward pass over every core, so running two at once only makes
both slower; what pays is fewer, larger passes. Requests wait at most ``wait_ms`` for others
to join their batch, and a batch never exceeds ``max_arguments`` (a single larger request is
still served whole). Uploads and explanations go through the same thread, so the model is
never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from valuedetect.data import Argument

T = TypeVar("T")


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
        self._executor = self._new_executor()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="valuedetect-model")

    async def start(self) -> None:
        # A stopped runner can start again (an app's lifespan may run more than once, e.g. under
        # successive test clients); its old executor is shut down for good, so take a new one.
        if self._stopped:
            self._executor, self._stopped = self._new_executor(), False
        if self.batching and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._batch_loop(), name="valuedetect-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True, cancel_futures=True)
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
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def run_blocking(self, function: Callable[..., T], *args: object) -> T:
        """The same, from a worker thread that is not on the event loop (background jobs)."""
        return self._executor.submit(function, *args).result()

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
            except Exception as error:  # every waiting caller learns of the failure
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            offset = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(scores[offset : offset + len(p.arguments)])
                offset += len(p.arguments)
