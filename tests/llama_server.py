"""Start llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) for a test, and
stop it by its process id afterwards, also when the test fails.

    with llama_server(gguf_path) as server:
        backend = OpenAICompatibleLM(server.model, base_url=server.base_url)

``restart()`` kills the process and starts a new one on a new free port (for resume tests).
Skips the test when llama-cpp-python or its server extras are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One server process serving one GGUF file on a loopback port."""

    def __init__(self, gguf: Path, n_ctx: int = 2048, startup_timeout: float = 180.0, extra: tuple[str, ...] = ()):
        self.gguf = Path(gguf)
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.extra = extra
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, closed by llama_server()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model id the server lists (the path it was given)."""
        return str(self.gguf)

    def start(self) -> LlamaServer:
        self.port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_ctx", str(self.n_ctx), *self.extra]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if json.load(response).get("data"):
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer on {self.base_url} within {self.startup_timeout} s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Kill the process by its id and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, 9)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> LlamaServer:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 3000) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-chars:]


@contextlib.contextmanager
def llama_server(gguf: Path, n_ctx: int = 2048, **options) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install llama-cpp-python)")
    pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server]")
    pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")
    pytest.importorskip("starlette_context", reason="needs llama-cpp-python[server]")
    server = LlamaServer(gguf, n_ctx=n_ctx, **options)
    try:
        yield server.start()
    finally:
        server.stop()
        server._log.close()
