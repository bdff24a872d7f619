"""Careless and hostile input to the command line (issue 17): text that is not valid Unicode,
an output that is the input, an output that cannot be written, runaway lines, Ctrl-C, and the
temporary files a killed writer leaves behind."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from tests.test_cli import assert_user_error, invoke

from valuedetect import data as data_module
from valuedetect.data import MAX_TEXT_CHARS, _create_temp, atomic_write_text, clean_stale_temps
from valuedetect.detectors.baselines import AllOnesDetector


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """The cheapest saved detector: predicting costs nothing, so only the plumbing is tested."""
    return AllOnesDetector().save(tmp_path_factory.mktemp("model") / "all-ones")


# ---------------------------------------------------------------------------- item 1
def test_a_lone_surrogate_in_jsonl_exits_2_naming_file_and_line(detector, tmp_path):
    source = tmp_path / "s.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "\\ud800 x"}\n', encoding="utf-8")
    output = tmp_path / "o.jsonl"
    assert_user_error(invoke("predict", "--model", detector, "--input", source, "--output", output),
                      f"{source}, line 2", "field 'text'", "surrogate")
    assert not output.exists()
    source.write_text('{"text": "fine", "id": "\\udc80"}\n', encoding="utf-8")
    assert_user_error(invoke("predict", "--model", detector, "--input", source), f"{source}, line 1", "id")


def test_a_lone_surrogate_on_the_command_line_exits_2(detector):
    assert_user_error(invoke("predict", "--model", detector, "fine", "bad \udcff bytes"), "text-2", "surrogate")


def test_an_undecodable_file_name_is_reported_not_a_traceback(detector, tmp_path):
    missing = tmp_path / "caf\udce9.txt"  # the bytes b"caf\xe9.txt" of a Latin-1 name, as Python sees them
    assert_user_error(invoke("predict", "--model", detector, "--input", missing), "no such file", "\\udce9")


# ---------------------------------------------------------------------------- item 6
def test_predict_refuses_to_write_over_its_input(detector, tmp_path):
    source = tmp_path / "a.tsv"
    source.write_text("text\nProtect the forests.\n", encoding="utf-8")
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.tsv").symlink_to(source)
    os.link(source, tmp_path / "hard.tsv")
    for output in (source, tmp_path / "sub" / ".." / "a.tsv", tmp_path / "link.tsv", tmp_path / "hard.tsv",
                   Path(os.path.relpath(source))):
        assert_user_error(invoke("predict", "--model", detector, "--input", source, "--output", output),
                          "is also the input")
        assert source.read_bytes() == before
    # The other way round: the input reached through the link.
    assert_user_error(invoke("predict", "--model", detector, "--input", tmp_path / "link.tsv", "--output", source),
                      "is also the input")
    assert source.read_bytes() == before


# ---------------------------------------------------------------------------- item 7
def test_an_output_no_file_can_be_created_in_is_refused_before_the_work(detector, tmp_path, monkeypatch):
    def never(self, arguments):
        raise AssertionError("predicted although the output cannot be written")

    monkeypatch.setattr(AllOnesDetector, "_predict_proba", never)
    source = tmp_path / "t.txt"
    source.write_text("a text\n", encoding="utf-8")
    assert_user_error(invoke("predict", "--model", detector, "--input", source, "--output", "/proc/o.jsonl"),
                      "/proc/o.jsonl", "cannot write")


def test_a_full_disk_at_the_end_keeps_the_predictions_for_resume(detector, tmp_path, monkeypatch):
    source = tmp_path / "t.txt"
    source.write_text("one text\nanother text\n", encoding="utf-8")
    output = tmp_path / "out" / "o.jsonl"
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst) == output:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(data_module.os, "replace", full_disk)
    line = assert_user_error(invoke("predict", "--model", detector, "--input", source, "--output", output),
                             str(output), "No space left on device", "kept in", "--resume", after_progress=True)
    assert ".o.jsonl.parts" in line
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    monkeypatch.setattr(data_module.os, "replace", real_replace)  # room again
    result = invoke("predict", "--model", detector, "--input", source, "--output", output, "--resume")
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["text-1", "text-2"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["o.jsonl"]  # the parts are gone


# ---------------------------------------------------------------------------- item 8
def long_text() -> str:
    return "word " * (MAX_TEXT_CHARS // 5 + 1)  # just over the limit, and over csv's own 128 KiB cell limit


@pytest.mark.parametrize(("name", "content", "line"), [
    ("t.txt", lambda: f"short\n{long_text()}\n", 2),
    ("t.jsonl", lambda: '{"text": "short"}\n' + json.dumps({"text": long_text()}) + "\n", 2),
    ("t.csv", lambda: f'text\nshort\n"{long_text()}"\n', 3),
    ("t.tsv", lambda: f"Argument ID\tConclusion\tStance\tPremise\nA1\tc\tagainst\t{long_text()}\n", 2),
])
def test_one_limit_per_text_in_every_format_with_a_short_message(detector, tmp_path, name, content, line):
    source = tmp_path / name
    source.write_text(content(), encoding="utf-8")
    message = assert_user_error(invoke("predict", "--model", detector, "--input", source),
                                f"{source}, line {line}", f"at most {MAX_TEXT_CHARS:,} per text")
    assert len(message) < 300 + len(str(source))


def test_a_huge_header_is_quoted_as_a_short_excerpt(tmp_path, data_dir):
    run = tmp_path / "huge.tsv"
    run.write_text("x" * 2_000_000 + "\n0\n", encoding="utf-8")
    message = assert_user_error(invoke("evaluate", "--run", run, "--labels", data_dir / "labels-validation.tsv"),
                                str(run), "missing column 'Argument ID'", "2,000,000 characters")
    assert len(message) < 400


def test_ctrl_c_in_predict_says_how_to_resume_and_keeps_the_output(detector, tmp_path, monkeypatch):
    calls = []

    def interrupted(self, arguments):
        calls.append(len(arguments))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.ones((len(arguments), 20))

    monkeypatch.setattr(AllOnesDetector, "_predict_proba", interrupted)
    source = tmp_path / "t.txt"
    source.write_text("".join(f"text {i}\n" for i in range(5)), encoding="utf-8")
    output = tmp_path / "o.tsv"
    output.write_text("precious\n", encoding="utf-8")
    result = invoke("predict", "--model", detector, "--input", source, "--output", output, "--chunk-size", "2")
    assert result.exit_code == 130
    message = " ".join(result.stderr.split())
    assert "interrupted" in message and "2 of 5 texts are labelled" in message
    assert "--resume" in message and "valuedetect predict" in message and "train" not in message
    assert output.read_text(encoding="utf-8") == "precious\n"


def test_ctrl_c_before_any_file_is_written_says_so(detector, tmp_path, monkeypatch):
    def interrupted(self, arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(AllOnesDetector, "_predict_proba", interrupted)
    output = tmp_path / "o.tsv"
    output.write_text("precious\n", encoding="utf-8")
    result = invoke("predict", "--model", detector, "a text", "--output", output)
    assert result.exit_code == 130
    assert "nothing was written" in result.stderr and "train" not in result.stderr
    assert output.read_text(encoding="utf-8") == "precious\n"


def test_stale_temporary_files_of_our_pattern_are_cleaned(tmp_path):
    target = tmp_path / "o.jsonl"
    old = time.time() - 3600
    stale = tmp_path / ".o.jsonl.0123456789ab.tmp"  # what a kill -9 while writing leaves
    stale.write_text("half", encoding="utf-8")
    os.utime(stale, (old, old))
    fresh = tmp_path / ".o.jsonl.ba9876543210.tmp"  # another writer, just started
    fresh.write_text("", encoding="utf-8")
    foreign = [tmp_path / ".o.jsonl.notours.tmp", tmp_path / ".other.jsonl.0123456789ab.tmp",
               tmp_path / "o.jsonl.0123456789ab.tmp"]
    for path in foreign:
        path.write_text("keep", encoding="utf-8")
        os.utime(path, (old, old))
    # An old temporary file whose writer is still alive (it holds the lock) is kept too.
    fd, live = _create_temp(target)
    os.utime(live, (old, old))
    try:
        atomic_write_text(target, "new\n")
        assert target.read_text(encoding="utf-8") == "new\n"
        assert not stale.exists()
        assert fresh.exists() and live.exists() and all(p.exists() for p in foreign)
    finally:
        os.close(fd)
    assert clean_stale_temps(target) == [live]  # its writer is gone now


# ---------------------------------------------------------------------------- item 12, as users start it
def test_valuedetect_serve_checks_host_and_origin(detector):
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("VALUEDETECT_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "valuedetect.cli", "serve", "--model", str(detector),
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the server stopped"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        body = {"arguments": [{"text": "x"}]}
        assert httpx.post(base + "/v1/predict", json=body).status_code == 200
        assert httpx.post(base + "/v1/predict", json=body, headers={"Origin": base}).status_code == 200
        assert httpx.get(f"http://localhost:{port}/v1/model").status_code == 200
        refused = httpx.post(base + "/v1/jobs", files={"file": ("a.txt", b"x\n")}, headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
        rebound = httpx.get(base + "/v1/model", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_serve_without_its_extra_names_the_install_command(detector, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert_user_error(invoke("serve", "--model", detector), "needs fastapi", "pip install 'valuedetect[serve]'")
