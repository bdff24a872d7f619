"""Shared pieces of the serve tests: the shipped detector (loaded once per process), a cheap
fake detector whose scores depend on the words of an argument, and a real uvicorn server in a
background thread on a free loopback port."""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import httpx
import numpy as np

from valuedetect.data import Argument, Split
from valuedetect.detectors.base import Detector
from valuedetect.taxonomy import NUM_CATEGORIES
from valuedetect.thresholds import Thresholds

_WORD = re.compile(r"\w+")
# Varied thresholds, so code that mixes up categories or uses one threshold for all shows.
FAKE_THRESHOLDS = [round(0.2 + 0.02 * i, 2) for i in range(NUM_CATEGORIES)]


@functools.cache
def shipped_model():  # -> ServedModel; loading the encoder takes seconds, so once per process
    from valuedetect.serve.app import load_served_model

    return load_served_model(None)


class WordHashDetector(Detector):
    """Milliseconds per call: every word pushes the category its hash picks towards 1."""

    type_name = "word-hash-test"

    def _fit(self, train: Split, validation: Split | None) -> None:
        pass

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        rows = []
        for a in arguments:
            row = np.full(NUM_CATEGORIES, 0.1)
            for word in _WORD.findall(f"{a.premise} {a.conclusion}".lower()):
                row[zlib.crc32(word.encode()) % NUM_CATEGORIES] += 0.3
            rows.append(1.0 - np.exp(-row))
        return np.stack(rows)


class CallbackDetector(WordHashDetector):
    """The fake detector with a hook run before each prediction (to block or to fail)."""

    type_name = "callback-test"

    def __init__(self, before: Callable[[Sequence[Argument]], None]):
        super().__init__()
        self.before = before

    def _predict_proba(self, arguments: Sequence[Argument]) -> np.ndarray:
        self.before(arguments)
        return super()._predict_proba(arguments)


def fake_served_model(detector: Detector | None = None, name: str = "fake-words"):
    from valuedetect.serve.app import ServedModel

    detector = detector if detector is not None else WordHashDetector()
    detector.thresholds = Thresholds(values=list(FAKE_THRESHOLDS), mode="per_category", global_value=0.3)
    detector.info = {"validation_f1": 0.25, "base_model": "none"}
    return ServedModel(detector, name)


def free_port_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running_server(app, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL; always stops it."""
    import uvicorn

    sock = free_port_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn-test")
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it answered /health")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer /health within {startup_timeout} s")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("uvicorn did not stop within 30 s")


class Level1Detector(WordHashDetector):
    """The fake detector as if trained on the 54 level-1 values: value j of level 1 scores its
    category's probability times a fixed fraction, so a test can tell the columns apart."""

    type_name = "level1-test"

    @property
    def predicts_level1(self) -> bool:
        return True

    def _predict_both(self, arguments: Sequence[Argument]) -> tuple[np.ndarray, np.ndarray | None]:
        from valuedetect.taxonomy import CATEGORY_NAMES, LEVEL1_NAMES, LEVEL1_TO_CATEGORY

        level2 = self._predict_proba(arguments)
        column = [CATEGORY_NAMES.index(LEVEL1_TO_CATEGORY[v]) for v in LEVEL1_NAMES]
        fractions = np.linspace(0.5, 0.9, len(LEVEL1_NAMES))
        return level2, level2[:, column] * fractions[None, :]
