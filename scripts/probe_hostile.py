"""Replay the probes of issue 17 (hostile and careless input) and print what each one got.

    PYTHONPATH=src python scripts/probe_hostile.py [--quick]

Server probes run against a real uvicorn on a free loopback port, serving the shipped detector
with the settings `valuedetect serve` uses; CLI probes run `python -m valuedetect.cli` in
subprocesses. Prints a Markdown table (probe, what it got, expected, ok) and exits 1 if any
probe did not get what it should. `--quick` leaves out the slowest probes (the 8 x 100,000-line
uploads and Ctrl-C during a real prediction). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROWS: list[tuple[str, str, str, bool]] = []


def record(probe: str, got: str, expected: str, ok: bool) -> None:
    ROWS.append((probe, got, expected, ok))
    print(f"{'ok ' if ok else 'BAD'} {probe}: {got}", file=sys.stderr, flush=True)


def probe(name: str, expected: str) -> Callable[[Callable[[], tuple[str, bool]]], None]:
    """Run the decorated function now; it returns (what it got, whether that is right)."""

    def run(function: Callable[[], tuple[str, bool]]) -> None:
        try:
            got, ok = function()
        except Exception as error:  # a probe that crashes is a failed probe, and the others go on
            got, ok = f"probe crashed: {type(error).__name__}: {error}"[:200], False
        record(name, got, expected, ok)

    return run


# ---------------------------------------------------------------------------- a real server
@contextlib.contextmanager
def serving(app: object) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def summary(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return f"{response.status_code} {response.headers.get('content-type', '')} (not JSON)"
    if not error:
        return str(response.status_code)
    fields = ",".join(f["field"] for f in error.get("fields") or [])[:60]
    return f"{response.status_code} {error.get('code')}" + (f" [{fields}]" if fields else "")


def server_probes(quick: bool) -> None:
    from valuedetect.serve import default_allowed_hosts
    from valuedetect.serve.app import ServedModel, create_app, load_served_model
    from valuedetect.serve.settings import ServeSettings

    model = load_served_model(None)
    settings = ServeSettings(api_key=None, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    json_headers = {"content-type": "application/json"}
    with serving(create_app(settings, model)) as base:
        for path, body, field in (
            ("/v1/predict", '{"arguments":[{"text":"\\ud800 hi"}]}', "arguments.0.text"),
            ("/v1/predict", '{"arguments":[{"premise":"\\ud800 p","conclusion":"c"}]}', "arguments.0.premise"),
            ("/v1/predict", '{"arguments":[{"premise":"p","conclusion":"\\udfff"}]}', "arguments.0.conclusion"),
            ("/v1/explain", '{"argument":{"text":"\\ud800 hi"}}', "argument.text"),
            ("/pyvalues/refined", '{"segments":["\\ud800 hi"]}', "segments.0"),
        ):
            @probe(f"1 lone surrogate in {field} ({path})", f"422 invalid_request [{field}]")
            def _(path: str = path, body: str = body, field: str = field) -> tuple[str, bool]:
                response = httpx.post(base + path, content=body.encode(), headers=json_headers, timeout=60)
                fields = [f["field"] for f in response.json().get("error", {}).get("fields", [])]
                return summary(response), response.status_code == 422 and field in fields

        @probe("1 lone surrogate in an uploaded .jsonl", "422 invalid_file naming s.jsonl, line 1")
        def _() -> tuple[str, bool]:
            response = httpx.post(base + "/v1/jobs", files={"file": ("s.jsonl", b'{"text": "\\ud800 x"}\n')})
            message = response.json()["error"]["message"]
            return f"{summary(response)}: {message[:70]}", response.status_code == 422 and "line 1" in message

        @probe("1 surrogate request sent with 7 normal ones", "1 x 422, 7 x 200")
        def _() -> tuple[str, bool]:
            bodies = [json.dumps({"arguments": [{"text": f"we must protect nature {i}"}]}) for i in range(7)]
            bodies.insert(3, '{"arguments":[{"text":"\\ud800 hi"}]}')
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda b: httpx.post(base + "/v1/predict", content=b.encode(),
                                                           headers=json_headers, timeout=60).status_code, bodies))
            return f"{sorted(codes)}", sorted(codes) == [200] * 7 + [422]

        @probe("2 990 KB body of 495,000 x `1`", "413 too_many_arguments, < 2 KB, < 1 s; /health < 0.5 s")
        def _() -> tuple[str, bool]:
            body = json.dumps({"arguments": [1] * 495_000}, separators=(",", ":")).encode()
            latencies: list[float] = []

            def health() -> None:
                for _ in range(5):
                    start = time.perf_counter()
                    httpx.get(base + "/health", timeout=60)
                    latencies.append(time.perf_counter() - start)

            poller = threading.Thread(target=health)
            poller.start()
            start = time.perf_counter()
            response = httpx.post(base + "/v1/predict", content=body, headers=json_headers, timeout=60)
            took = time.perf_counter() - start
            poller.join()
            got = (f"{summary(response)}, {len(response.content)} B in {took:.2f} s; /health max "
                   f"{max(latencies):.2f} s")
            return got, (response.status_code == 413 and len(response.content) < 2000 and took < 1
                         and max(latencies) < 0.5)

        @probe("2 256 invalid arguments", "422 with 20 fields listed, fields_total 256, < 10 KB")
        def _() -> tuple[str, bool]:
            response = httpx.post(base + "/v1/predict", json={"arguments": [1] * 256}, timeout=60)
            error = response.json()["error"]
            got = f"{response.status_code}, {len(error['fields'])} listed of {error['fields_total']}, " \
                  f"{len(response.content)} B"
            return got, response.status_code == 422 and len(error["fields"]) == 20 and len(response.content) < 10_000

        if not quick:
            @probe("3 8 concurrent uploads of 100,000 lines", "5 x 202 (1 running, 4 queued), 3 x 429 + Retry-After")
            def _() -> tuple[str, bool]:
                data = "".join(f"people deserve a fair chance number {i}\n" for i in range(100_000)).encode()

                def upload(i: int) -> httpx.Response:
                    return httpx.post(base + "/v1/jobs", files={"file": (f"big{i}.txt", data)}, timeout=120)

                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    responses = list(pool.map(upload, range(8)))
                codes = sorted(r.status_code for r in responses)
                retry = [r.headers.get("retry-after") for r in responses if r.status_code == 429]
                statuses = sorted(r.json()["status"] for r in responses if r.status_code == 202)
                return (f"{codes}, Retry-After {retry}, {statuses}",
                        codes == [202] * 5 + [429] * 3 and all(retry) and statuses.count("queued") == 4)

            @probe("3 /v1/predict latency while a 100,000-line job runs", "< 1 s (interactive ahead of bulk)")
            def _() -> tuple[str, bool]:
                latencies = []
                for i in range(5):
                    start = time.perf_counter()
                    response = httpx.post(base + "/v1/predict", json={"arguments": [{"text": f"fair {i}"}]},
                                          timeout=60)
                    latencies.append(time.perf_counter() - start)
                    assert response.status_code == 200
                return f"max {max(latencies):.2f} s over 5", max(latencies) < 1.0

        @probe("12 cross-site form POST to /v1/jobs (Origin: http://evil.example)", "403 origin_not_allowed")
        def _() -> tuple[str, bool]:
            response = httpx.post(base + "/v1/jobs", files={"file": ("a.txt", b"a text\n")},
                                  headers={"Origin": "http://evil.example"})
            return summary(response), response.status_code == 403

        @probe("12 the page's own POST (Origin = the server)", "200")
        def _() -> tuple[str, bool]:
            response = httpx.post(base + "/v1/predict", json={"arguments": [{"text": "x"}]}, headers={"Origin": base})
            return summary(response), response.status_code == 200

        @probe("12 request with Host: evil.example (DNS rebinding)", "403 host_not_allowed")
        def _() -> tuple[str, bool]:
            response = httpx.get(base + "/v1/model", headers={"Host": "evil.example"})
            return summary(response), response.status_code == 403

        @probe("13 /v1/model of the shipped encoder", "limits_profile encoder, max_arguments 256")
        def _() -> tuple[str, bool]:
            info = httpx.get(base + "/v1/model").json()
            return (f"{info['limits_profile']}, max_arguments {info['limits']['max_arguments']}",
                    info["limits_profile"] == "encoder" and info["limits"]["max_arguments"] == 256)

    # Eviction, with a store that keeps one finished job.
    with serving(create_app(ServeSettings(api_key=None, max_jobs_kept=1), model)) as base:
        @probe("3 an evicted job", "410 job_removed saying so")
        def _() -> tuple[str, bool]:
            ids = []
            for name in ("first.txt", "second.txt"):
                job = httpx.post(base + "/v1/jobs", files={"file": (name, b"a text\n")}).json()
                while httpx.get(f"{base}/v1/jobs/{job['id']}").json()["status"] != "done":
                    time.sleep(0.05)
                ids.append(job["id"])
            response = httpx.get(f"{base}/v1/jobs/{ids[0]}")
            return f"{summary(response)}: {response.json()['error']['message'][:60]}", response.status_code == 410

    # A language-model detector (a stand-in with the llm type: no LLM is called by this probe).
    from valuedetect.detectors.baselines import AllOnesDetector

    class StandInLLM(AllOnesDetector):
        type_name = "llm"

    with serving(create_app(ServeSettings(api_key=None), ServedModel(StandInLLM(), "llm-stand-in"))) as base:
        @probe("13 /v1/model and 9 arguments for an llm detector", "language-model, max_arguments 8; 413")
        def _() -> tuple[str, bool]:
            info = httpx.get(base + "/v1/model").json()
            response = httpx.post(base + "/v1/predict", json={"arguments": [{"text": f"t {i}"} for i in range(9)]})
            got = f"{info['limits_profile']}, max_arguments {info['limits']['max_arguments']}; {summary(response)}"
            return got, info["limits"]["max_arguments"] == 8 and response.status_code == 413


# ---------------------------------------------------------------------------- the command line
@dataclass
class Ran:
    code: int
    stderr: str
    seconds: float
    max_rss_mb: float


# Runs the CLI and reports its peak memory (VmHWM: this process image's own high-water mark; the
# rusage of a child would also count the pages of the forked parent, which holds a model).
_CLI = """
import atexit, re, runpy, sys
def peak():
    status = open("/proc/self/status").read()
    sys.stderr.write("\\npeak-memory-kb " + re.search(r"VmHWM:\\s+(\\d+)", status).group(1) + "\\n")
atexit.register(peak)
sys.argv = ["valuedetect", *sys.argv[1:]]
runpy.run_module("valuedetect.cli", run_name="__main__")
"""


def cli(*args: object, timeout: float = 300) -> Ran:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CLI, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    lines = done.stderr.splitlines()
    peak = [int(line.split()[1]) for line in lines if line.startswith("peak-memory-kb ")]
    stderr = "\n".join(line for line in lines if not line.startswith("peak-memory-kb "))
    return Ran(done.returncode, stderr, time.perf_counter() - start, (peak[0] if peak else 0) / 1024)


def last_line(ran: Ran) -> str:
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_error_line(ran: Ran) -> bool:
    lines = [line for line in ran.stderr.splitlines() if line.strip() and not line.startswith("predicting")]
    return ran.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in ran.stderr


def cli_probes(quick: bool, folder: Path) -> None:
    from valuedetect.detectors.baselines import AllOnesDetector

    ones = AllOnesDetector().save(folder / "all-ones")

    @probe("1 predict a .jsonl with a lone surrogate", "exit 2, one line naming file and line")
    def _() -> tuple[str, bool]:
        source = folder / "s.jsonl"
        source.write_text('{"text": "\\ud800 x"}\n', encoding="utf-8")
        ran = cli("predict", "--model", ones, "--input", source, "--output", folder / "o.jsonl")
        return f"exit {ran.code}: {last_line(ran)[:90]}", one_error_line(ran) and "line 1" in ran.stderr

    for spelling in ("same path", "symlink", "x/../a.tsv"):
        @probe(f"6 predict --input a.tsv --output a.tsv ({spelling})", "exit 2 before any work, a.tsv intact")
        def _(spelling: str = spelling) -> tuple[str, bool]:
            source = folder / "a.tsv"
            source.write_text("text\nProtect the forests.\n", encoding="utf-8")
            (folder / "x").mkdir(exist_ok=True)
            output = {"same path": source, "symlink": folder / "link.tsv", "x/../a.tsv": folder / "x" / ".." / "a.tsv"}
            if spelling == "symlink" and not output["symlink"].exists():
                output["symlink"].symlink_to(source)
            ran = cli("predict", "--model", ones, "--input", source, "--output", output[spelling])
            intact = source.read_text(encoding="utf-8") == "text\nProtect the forests.\n"
            return (f"exit {ran.code}, intact {intact}: {last_line(ran)[:70]}",
                    one_error_line(ran) and intact and "is also the input" in ran.stderr)

    @probe("7 predict --output /proc/o.jsonl", "exit 2, one line, before predicting")
    def _() -> tuple[str, bool]:
        source = folder / "t.txt"
        source.write_text("a text\n", encoding="utf-8")
        ran = cli("predict", "--model", ones, "--input", source, "--output", "/proc/o.jsonl")
        return (f"exit {ran.code} in {ran.seconds:.1f} s: {last_line(ran)[:70]}",
                one_error_line(ran) and "predicting" not in ran.stderr)

    @probe("8 predict a .txt with one 50 MB line", "exit 2 naming the line and the limit, < 400 MB memory")
    def _() -> tuple[str, bool]:
        source = folder / "huge.txt"
        source.write_text("short\n" + "word " * 10_000_000 + "\n", encoding="utf-8")
        ran = cli("predict", "--model", ones, "--input", source)
        return (f"exit {ran.code} in {ran.seconds:.1f} s, max RSS {ran.max_rss_mb:.0f} MB: {last_line(ran)[-60:]}",
                one_error_line(ran) and "line 2" in ran.stderr and 0 < ran.max_rss_mb < 400)

    @probe("8 predict a .csv with a 200 KB cell", "the same per-text limit as .txt (not csv's 128 KiB)")
    def _() -> tuple[str, bool]:
        source = folder / "cell.csv"
        source.write_text('text\n"' + "word " * 40_000 + '"\n', encoding="utf-8")
        ran = cli("predict", "--model", ones, "--input", source)
        return f"exit {ran.code}: {last_line(ran)[-60:]}", one_error_line(ran) and "at most 100,000" in ran.stderr

    @probe("8 evaluate --run HUGE_LINE_FILE (52 MB header)", "exit 2, a one-line message under 400 characters")
    def _() -> tuple[str, bool]:
        from valuedetect.data import shipped_data_dir

        run = folder / "huge-run.tsv"
        run.write_text("x" * 52_000_000 + "\n0\n", encoding="utf-8")
        ran = cli("evaluate", "--run", run, "--labels", shipped_data_dir() / "labels-validation.tsv")
        return f"exit {ran.code}, message {len(last_line(ran))} characters", one_error_line(ran) and len(
            last_line(ran)) < 400

    if not quick:
        @probe("8 Ctrl-C during predict (shipped model, 1896 arguments)", "exit 130, no 'train --resume'")
        def _() -> tuple[str, bool]:
            from valuedetect.data import shipped_data_dir

            process = subprocess.Popen(
                [sys.executable, "-m", "valuedetect.cli", "predict", "--input",
                 shipped_data_dir() / "arguments-validation.tsv", "--output", folder / "v.tsv", "--batch-size", "32"],
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            time.sleep(12)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=120)
            lines = [line for line in stderr.splitlines() if "interrupted" in line]
            return (f"exit {process.returncode}: {(lines or [''])[0][:80]}",
                    process.returncode == 130 and "resume" not in stderr and not (folder / "v.tsv").exists())

    @probe("8 a stale .o.jsonl.HEX.tmp beside the output", "removed by the next run; others' files kept")
    def _() -> tuple[str, bool]:
        stale = folder / ".o2.jsonl.0123456789ab.tmp"
        stale.write_text("half", encoding="utf-8")
        old = time.time() - 3600
        os.utime(stale, (old, old))
        foreign = folder / ".o2.jsonl.notours.tmp"
        foreign.write_text("keep", encoding="utf-8")
        source = folder / "t.txt"
        ran = cli("predict", "--model", ones, "--input", source, "--output", folder / "o2.jsonl")
        return (f"exit {ran.code}, stale there: {stale.exists()}, foreign kept: {foreign.exists()}",
                ran.code == 0 and not stale.exists() and foreign.exists())

    @probe("11 a TF-IDF folder holding a pickle (pipeline.joblib)",
           "exit 2 refusing it (VALUEDETECT_ALLOW_PICKLE=1 opts in)")
    def _() -> tuple[str, bool]:
        import joblib

        from valuedetect.data import load_split
        from valuedetect.detectors import make_detector

        train = load_split("training").subset(range(300))
        detector = make_detector("tfidf").fit(train)
        saved = detector.save(folder / "tfidf-old")
        for name in ("tfidf.safetensors", "tfidf-vocabulary.json"):
            (saved / name).unlink()
        joblib.dump({"anything": np.arange(3)}, saved / "pipeline.joblib")  # never unpickled without the opt-in
        ran = cli("predict", "--model", saved, "a text")
        return f"exit {ran.code}: {last_line(ran)[:80]}", one_error_line(ran) and "pickle" in ran.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the slowest probes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="valuedetect-probe-") as tmp:
        server_probes(args.quick)
        cli_probes(args.quick, Path(tmp))
    print("| probe | got | expected | ok |")
    print("|---|---|---|---|")
    for name, got, expected, ok in ROWS:
        cells = [c.replace("|", "\\|") for c in (name, got, expected)]
        print(f"| {cells[0]} | {cells[1]} | {cells[2]} | {'yes' if ok else '**no**'} |")
    bad = sum(not ok for *_, ok in ROWS)
    print(f"\n{len(ROWS) - bad} of {len(ROWS)} probes got what they should.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
