"""The compute ledger: a run's cost over every process that worked on it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from valuedetect.compute import ComputeLedger


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_resumed_process_adds_to_what_earlier_ones_spent(tmp_path: Path) -> None:
    path = tmp_path / "compute.json"
    with ComputeLedger(path, fresh=True) as first:
        _burn(0.2)
    recorded = json.loads(path.read_text())
    assert recorded["processes"] == 1 and recorded["cpu_seconds"] >= 0.2
    with ComputeLedger(path, fresh=False) as second:
        _burn(0.1)
    assert second.processes == 2
    assert second.cpu_seconds >= first.cpu_seconds + 0.1 - 0.01  # the ledger keeps 2 decimals
    assert second.wall_seconds >= first.wall_seconds
    assert json.loads(path.read_text())["processes"] == 2


def test_a_fresh_run_forgets_an_old_ledger_and_a_torn_one_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "compute.json"
    path.write_text(json.dumps({"cpu_seconds": 1000.0, "wall_seconds": 1000.0, "processes": 7}))
    with ComputeLedger(path, fresh=True) as ledger:
        pass
    assert ledger.processes == 1 and ledger.cpu_seconds < 1000
    path.write_text('{"cpu_seconds": 12')  # a crash mid-write (the ledger itself writes atomically)
    with ComputeLedger(path, fresh=False) as ledger:
        pass
    assert ledger.processes == 1 and ledger.cpu_seconds < 1000


def test_a_killed_process_has_written_its_time_within_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "compute.json"
    ledger = ComputeLedger(path, fresh=True, interval=0.05)
    ledger.__enter__()  # never left: as if the process were killed inside the block
    _burn(0.3)
    time.sleep(0.2)
    assert json.loads(path.read_text())["cpu_seconds"] >= 0.25
    ledger._stop.set()


def test_without_a_path_it_measures_and_writes_nothing(tmp_path: Path) -> None:
    with ComputeLedger(None, fresh=True) as ledger:
        _burn(0.05)
    assert ledger.cpu_seconds >= 0.05
    assert list(tmp_path.iterdir()) == []


def test_the_machine_description_names_the_cpu_and_its_vector_instructions(monkeypatch) -> None:
    # CPU-seconds from an AVX2-only CPU and from one with AVX-512 are not the same work; a record
    # that names only the kernel hides which it was.
    from valuedetect import compute

    monkeypatch.setattr(compute, "Path", lambda _: _FakeFile("processor\t: 0\nmodel name\t: Test CPU 9000\n"))
    described = compute.machine_description()
    assert described["processor"] == "Test CPU 9000"
    assert described["cpus"] >= 1
    assert isinstance(described["cpu_capability"], str) and described["cpu_capability"]  # e.g. AVX2, AVX512


def test_without_cpuinfo_the_processor_falls_back_to_platform(monkeypatch) -> None:
    from valuedetect import compute

    monkeypatch.setattr(compute, "Path", lambda _: _FakeFile(None))
    monkeypatch.setattr(compute.platform, "processor", lambda: "fallback-arch")
    assert compute.cpu_model() == "fallback-arch"


class _FakeFile:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def read_text(self, **_: object) -> str:
        if self.text is None:
            raise OSError("no /proc here")
        return self.text


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    ("flags\t\t: fpu sse2 avx2 fma\n", False),
    ("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n", True),
    ("Features\t: fp asimd bf16 sve\n", True),
    ("processor\t: 0\n", None),
])
def test_native_bfloat16_reads_the_cpu_flags(monkeypatch, cpuinfo, expected) -> None:
    from valuedetect import compute

    monkeypatch.setattr(compute, "Path", lambda _: _FakeFile(cpuinfo))
    assert compute.native_bfloat16() is expected
