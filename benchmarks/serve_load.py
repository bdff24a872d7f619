"""Load on `valuedetect serve` against the model's own batched throughput, in one run.

Parts (all by default, ``--parts`` picks some):

- ``model``: the shipped detector's ``predict_proba`` in this process, no server: validation
  arguments in random batches of ``--clients`` (the most a server can merge when each of that
  many clients has one argument in flight) and in large calls (``--model-batch``, which the
  detector cuts into length-sorted batches of 64). This is the ceiling the server is held to.
- ``batched``: ``valuedetect serve`` as users start it; N concurrent clients, each posting one
  validation argument per request and waiting for the answer before sending the next.
- ``unbatched``: the same with ``--no-batching`` (one forward pass per request).
- ``mixed``: one batched server; first the predict clients alone, then the same clients with one
  client explaining a 250-word text over and over and one file upload labelling in the
  background: predict p50/p95/p99 with and without that load, explanations done, the upload's
  progress.

The servers run one after the other, and the model part before them, so no two measurements
share the CPU; the clients do share it with the server (loopback, one machine), as stated in
the output. The ratio ``batched / model`` is the server's share of the model's throughput.

    python benchmarks/serve_load.py --clients 16 --seconds 30          # ~5 min
    python benchmarks/serve_load.py --seconds 5 --parts model,batched,mixed --output /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's valuedetect, in the server as here

from valuedetect.data import load_split  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
PARTS = ("model", "batched", "unbatched", "mixed")
EXPLAIN_WORDS = 250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    """The server's high-water resident memory (VmHWM), read from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(port: int, batching: bool, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "valuedetect.cli", "serve", "--port", str(port), *extra]
    command.append("--batching" if batching else "--no-batching")
    env = dict(os.environ, VALUEDETECT_API_KEY="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("the server did not start within 180 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def summary(latencies: list[float], arguments: int, errors: int, wall: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 1),
        "arguments_per_second": round(arguments / wall, 1),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 1) if len(ms) else None
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
    }


async def predict_clients(url: str, bodies: list[dict], clients: int, stop_at: float) -> dict:
    latencies: list[float] = []
    errors = 0
    arguments = 0

    async def client(index: int) -> None:
        nonlocal errors, arguments
        rng = random.Random(index)
        async with httpx.AsyncClient(timeout=120) as http:
            while time.perf_counter() < stop_at:
                body = rng.choice(bodies)
                start = time.perf_counter()
                try:
                    response = await http.post(url, json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                    arguments += len(body["arguments"])
                else:
                    errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return summary(latencies, arguments, errors, time.perf_counter() - began)


async def run_clients(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    return await predict_clients(url, bodies, clients, time.perf_counter() + seconds)


async def mixed_load(base: str, bodies: list[dict], clients: int, seconds: float, explain_text: str,
                     upload: bytes) -> dict:
    """The predict clients, one client explaining ``explain_text`` in a loop, one upload."""
    stop_at = time.perf_counter() + seconds
    explained: list[float] = []
    explain_errors = 0

    async def explainer() -> None:
        nonlocal explain_errors
        async with httpx.AsyncClient(timeout=600) as http:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                response = await http.post(f"{base}/v1/explain", json={"argument": {"text": explain_text}})
                if response.status_code == 200:
                    explained.append(time.perf_counter() - start)
                else:
                    explain_errors += 1

    async with httpx.AsyncClient(timeout=120) as http:
        job = (await http.post(f"{base}/v1/jobs", files={"file": ("load.txt", upload, "text/plain")})).json()
        predict, _ = await asyncio.gather(predict_clients(f"{base}/v1/predict", bodies, clients, stop_at), explainer())
        status = (await http.get(f"{base}/v1/jobs/{job['id']}")).json()
    return {
        "predict": predict,
        "explain": {"requests": len(explained), "errors": explain_errors, "words": len(explain_text.split()),
                    "latency_s": [round(x, 2) for x in explained]},
        "upload": {"arguments": status["total"], "labelled_during_window": status["done"], "status": status["status"]},
    }


def measure_server(batching: bool, bodies: list[dict], clients: int, seconds: float, extra: list[str]) -> dict:
    port = free_port()
    server = start_server(port, batching, extra)
    try:
        url = f"http://127.0.0.1:{port}/v1/predict"
        asyncio.run(run_clients(url, bodies[:50], min(clients, 4), 3))  # warm-up, not counted
        result = asyncio.run(run_clients(url, bodies, clients, seconds))
        result["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
        return result
    finally:
        stop_server(server)


def measure_mixed(bodies: list[dict], clients: int, seconds: float, explain_text: str, upload: bytes,
                  extra: list[str]) -> dict:
    port = free_port()
    server = start_server(port, True, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(run_clients(f"{base}/v1/predict", bodies[:50], min(clients, 4), 3))  # warm-up
        alone = asyncio.run(run_clients(f"{base}/v1/predict", bodies, clients, seconds))
        loaded = asyncio.run(mixed_load(base, bodies, clients, seconds, explain_text, upload))
        a, b = alone["latency_ms"], loaded["predict"]["latency_ms"]
        return {
            "predict_alone": alone,
            "with_explain_and_upload": loaded,
            "predict_latency_added_ms": {q: round(b[q] - a[q], 1) for q in ("p50", "p95", "p99")
                                         if a[q] is not None and b[q] is not None},
            "server_peak_rss_mib": round(peak_rss_mib(server.pid), 1),
        }
    finally:
        stop_server(server)


def measure_model(arguments: list, clients: int, seconds: float, model_batch: int) -> dict:
    """The shipped detector's own throughput, without a server."""
    import torch

    from valuedetect.serve.app import load_served_model

    detector = load_served_model(None).detector
    detector.predict_proba(arguments[:64])  # warm-up
    rng = random.Random(0)
    shuffled = arguments[:]
    rng.shuffle(shuffled)

    def timed(batch: int) -> dict:
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds or done == 0:
            start = done % len(shuffled)
            chunk = shuffled[start : start + batch]
            detector.predict_proba(chunk)
            done += len(chunk)
        wall = time.perf_counter() - began
        return {"arguments": done, "wall_seconds": round(wall, 2), "arguments_per_second": round(done / wall, 1)}

    return {"batch_of_clients": {"batch": clients, **timed(clients)},
            "large_calls": {"batch": model_batch, **timed(model_batch)},
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--arguments-per-request", type=int, default=1)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--model-batch", type=int, default=512, help="arguments per call in the model's large calls")
    parser.add_argument("--upload-arguments", type=int, default=2000, help="lines of the mixed load's upload")
    parser.add_argument("--server-option", action="append", default=[],
                        help="extra `valuedetect serve` option (repeatable): --server-option=--batch-wait-ms=2")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        parser.error(f"--parts takes {', '.join(PARTS)}")
    validation = load_split("validation")
    per = args.arguments_per_request
    bodies = []
    for start in range(0, len(validation.arguments) - per + 1, per):
        chunk = validation.arguments[start : start + per]
        bodies.append({"arguments": [{"id": a.id, "premise": a.premise, "conclusion": a.conclusion,
                                      "stance": a.stance} for a in chunk]})
    words = " ".join(a.premise for a in validation.arguments[:40]).split()
    explain_text = " ".join(words[:EXPLAIN_WORDS])
    lines = [a.premise.replace("\n", " ") for a in validation.arguments]
    upload = "\n".join(lines[i % len(lines)] for i in range(args.upload_arguments)).encode() + b"\n"
    load_before = os.getloadavg()
    report: dict = {
        "what": f"{args.clients} concurrent clients for {args.seconds:.0f} s against `valuedetect serve` "
                f"(shipped MiniLM detector), {per} validation argument(s) per request, loopback, "
                "clients and server on the same machine; the model part is predict_proba in this process",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "server_options": args.server_option,
    }
    if "model" in parts:
        print("model alone ...", flush=True)
        report["model"] = measure_model(validation.arguments, args.clients, args.seconds, args.model_batch)
    for name, batching in (("batched", True), ("unbatched", False)):
        if name in parts:
            print(f"{name} server ...", flush=True)
            report[name] = measure_server(batching, bodies, args.clients, args.seconds, args.server_option)
    if "mixed" in parts:
        print("mixed load ...", flush=True)
        report["mixed"] = measure_mixed(bodies, args.clients, args.seconds, explain_text, upload, args.server_option)
    report["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    ratios = {}
    if "batched" in report and "unbatched" in report:
        ratios["batched/unbatched requests_per_second"] = round(
            report["batched"]["requests_per_second"] / max(report["unbatched"]["requests_per_second"], 1e-9), 3)
    if "batched" in report and "model" in report:
        served = report["batched"]["arguments_per_second"]
        for key in ("batch_of_clients", "large_calls"):
            ratios[f"batched server/model {key}"] = round(served / report["model"][key]["arguments_per_second"], 3)
    report["ratios"] = ratios
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    if "model" in report:
        m = report["model"]
        print(f"model alone: {m['batch_of_clients']['arguments_per_second']:.1f} args/s in batches of "
              f"{args.clients}, {m['large_calls']['arguments_per_second']:.1f} in calls of {args.model_batch}")
    print(f"{'':22} {'req/s':>7} {'args/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}")
    rows = [(n, report[n]) for n in ("batched", "unbatched") if n in report]
    if "mixed" in report:
        rows += [("mixed: predict alone", report["mixed"]["predict_alone"]),
                 ("mixed: +explain+upload", report["mixed"]["with_explain_and_upload"]["predict"])]
    for name, r in rows:
        lat = r["latency_ms"]
        print(f"{name:22} {r['requests_per_second']:7.1f} {r['arguments_per_second']:7.1f} {lat['p50'] or 0:7.1f} "
              f"{lat['p95'] or 0:7.1f} {lat['p99'] or 0:7.1f} {r['errors']:6d}")
    if "mixed" in report:
        loaded = report["mixed"]["with_explain_and_upload"]
        upload_done = f"{loaded['upload']['labelled_during_window']}/{loaded['upload']['arguments']}"
        print(f"mixed: {loaded['explain']['requests']} explanations of {EXPLAIN_WORDS} words "
              f"(latency s {loaded['explain']['latency_s']}), upload {upload_done} labelled; "
              f"predict latency added {report['mixed']['predict_latency_added_ms']}")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
