"""Load on `valuedetect serve`: N concurrent clients for a fixed time, batched vs unbatched.

Both servers are started exactly as users start them (`valuedetect serve`, shipped detector),
one after the other on the same machine, and get the same clients: each client posts one
validation argument per request, as a chat bot or annotation tool would, and waits for the
answer before sending the next. The baseline is the same server with `--no-batching`, i.e.
one forward pass per request. Clients share the CPU with the server (loopback, one machine):
the figures are for that setting, stated in the output.

    python benchmarks/serve_load.py --clients 16 --seconds 30
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

from valuedetect.data import load_split

RESULTS = Path(__file__).parent / "results" / "serve_load.json"


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


def start_server(port: int, batching: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "valuedetect.cli", "serve", "--port", str(port)]
    command.append("--batching" if batching else "--no-batching")
    env = dict(os.environ, VALUEDETECT_API_KEY="")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("the server did not start within 120 s")


async def run_clients(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    arguments = 0
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors, arguments
        rng = random.Random(index)
        async with httpx.AsyncClient(timeout=60) as http:
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
    wall = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 1),
        "arguments_per_second": round(arguments / wall, 1),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 1) if len(ms) else None
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
    }


def measure(batching: bool, bodies: list[dict], clients: int, seconds: float) -> dict:
    port = free_port()
    server = start_server(port, batching)
    try:
        url = f"http://127.0.0.1:{port}/v1/predict"
        asyncio.run(run_clients(url, bodies[:50], min(clients, 4), 3))  # warm-up, not counted
        result = asyncio.run(run_clients(url, bodies, clients, seconds))
        result["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
        return result
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--arguments-per-request", type=int, default=1)
    args = parser.parse_args()
    validation = load_split("validation")
    per = args.arguments_per_request
    bodies = []
    for start in range(0, len(validation.arguments) - per + 1, per):
        chunk = validation.arguments[start : start + per]
        bodies.append({"arguments": [{"id": a.id, "premise": a.premise, "conclusion": a.conclusion,
                                      "stance": a.stance} for a in chunk]})
    report = {
        "what": f"{args.clients} concurrent clients for {args.seconds:.0f} s against `valuedetect serve` "
                f"(shipped MiniLM detector), {per} validation argument(s) per request, loopback, "
                "clients and server on the same machine",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "batched": measure(True, bodies, args.clients, args.seconds),
        "unbatched": measure(False, bodies, args.clients, args.seconds),
    }
    b, u = report["batched"], report["unbatched"]
    report["ratio_requests_per_second"] = round(b["requests_per_second"] / max(u["requests_per_second"], 1e-9), 2)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':10} {'req/s':>7} {'args/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'peak MiB':>8}")
    for name in ("batched", "unbatched"):
        r = report[name]
        lat = r["latency_ms"]
        print(f"{name:10} {r['requests_per_second']:7.1f} {r['arguments_per_second']:7.1f} {lat['p50']:7.1f} "
              f"{lat['p95']:7.1f} {lat['p99']:7.1f} {r['errors']:6d} {r['server_peak_rss_mib']:8.1f}")
    print(f"batched / unbatched requests per second: {report['ratio_requests_per_second']}x  -> {RESULTS}")


if __name__ == "__main__":
    main()
