"""What a run has cost in CPU and wall time, over every process that worked on it.

A run that is killed and resumed repeats the work done after its last checkpoint, so a figure that
counted only the process that finished would understate the run's cost (and make an interrupted
grid look cheaper than it was). The ledger keeps the time of earlier processes in the run folder,
rewritten by a daemon thread every ``interval`` seconds, so a ``kill -9`` loses at most that much.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from valuedetect.data import atomic_write_json

LEDGER = "compute.json"


class ComputeLedger:
    """CPU seconds (this process, all threads) and wall seconds spent inside a ``with`` block,
    added to what earlier processes of the same run recorded in ``path``.

    A fresh run removes the file first (``fresh=True``); a resumed one adds to it. With ``path``
    None (a process that does not own the run folder) it only measures."""

    def __init__(self, path: Path | None, fresh: bool, interval: float = 15.0) -> None:
        self.path = None if path is None else Path(path)
        self.fresh = fresh
        self.interval = interval
        self.cpu_before = 0.0
        self.wall_before = 0.0
        self.processes_before = 0
        self._cpu_started = self._wall_started = 0.0
        self._ended: tuple[float, float] | None = None  # (cpu, wall) when the block was left
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ComputeLedger:
        if self.path is not None and self.fresh:
            self.path.unlink(missing_ok=True)
        elif self.path is not None and self.path.exists():
            try:
                before = json.loads(self.path.read_text())
                self.cpu_before = float(before["cpu_seconds"])
                self.wall_before = float(before["wall_seconds"])
                self.processes_before = int(before["processes"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a ledger torn by a crash costs the figure its earlier part, not the run
        self._cpu_started, self._wall_started = time.process_time(), time.time()
        self._write()  # at once: a process killed before the first interval still counts as one
        self._thread = threading.Thread(target=self._keep_writing, name="compute-ledger", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._ended = (time.process_time(), time.time())
        self._write()

    @property
    def cpu_seconds(self) -> float:
        """So far inside the block, or in all of it once it is left; earlier processes included."""
        now = self._ended[0] if self._ended else time.process_time()
        return self.cpu_before + now - self._cpu_started

    @property
    def wall_seconds(self) -> float:
        now = self._ended[1] if self._ended else time.time()
        return self.wall_before + now - self._wall_started

    @property
    def processes(self) -> int:
        """How many processes have worked on the run, this one included."""
        return self.processes_before + 1

    def _keep_writing(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        # the figure is worth less than the run: a full disk must not stop training here
        with contextlib.suppress(OSError):
            atomic_write_json(self.path, {"cpu_seconds": round(self.cpu_seconds, 2),
                                          "wall_seconds": round(self.wall_seconds, 2),
                                          "processes": self.processes})


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpuinfo(field: str) -> str:
    """The first value of ``field`` in /proc/cpuinfo ("" where there is none, as off Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field and value.strip():
                return value.strip()
    return ""


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows (often empty)."""
    return _cpuinfo("model name") or platform.processor()


def native_bfloat16() -> bool | None:
    """Whether the CPU multiplies bfloat16 matrices in hardware (x86: AVX512_BF16 or AMX_BF16; Arm:
    BF16), None where /proc/cpuinfo does not say. Without it torch emulates them: on an AVX2-only
    AMD EPYC (2 cores, 2026-12-04) a 512x576x1536 product took 1246 ms in bfloat16 against 36 ms
    in float32."""
    flags = set((_cpuinfo("flags") or _cpuinfo("Features")).split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def machine_description() -> dict[str, Any]:
    """Where a run's CPU-seconds were spent. The same figure buys several times the work on a CPU
    with AVX-512 (and its bfloat16 instructions) as on one with AVX2 only, so the records name the
    CPU and the vector instructions torch uses, not only the kernel."""
    description: dict[str, Any] = {"platform": platform.platform(), "processor": cpu_model(),
                                   "cpus": usable_cores()}
    bfloat16 = native_bfloat16()
    if bfloat16 is not None:
        description["native_bfloat16"] = bfloat16
    with contextlib.suppress(ImportError):  # torch is optional for some runs (baselines)
        import torch

        description["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return description
