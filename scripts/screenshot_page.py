"""Screenshot the ``valuedetect serve`` page in headless Chromium, with a realistic argument.

Starts the server on a free loopback port (the shipped detector unless --model is given), fills
the form with an argument from the validation split, waits for the chart and the highlighted
explaining words, and saves a full-page PNG.

    python scripts/screenshot_page.py --output docs/serve-page.png
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import httpx

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pick_argument(base: str, argument_id: str | None) -> dict:
    """The given validation argument, or the first readable one with several detected values."""
    from valuedetect.data import load_split

    arguments = load_split("validation").arguments
    if argument_id is not None:
        chosen = [a for a in arguments if a.id == argument_id]
        if not chosen:
            raise SystemExit(f"no validation argument {argument_id!r}")
    else:
        chosen = [a for a in arguments if 150 <= len(a.premise) <= 320]
    with httpx.Client(base_url=base, timeout=120) as http:
        for a in chosen[:100]:
            body = {"premise": a.premise, "conclusion": a.conclusion, "stance": a.stance}
            (result,) = http.post("/v1/predict", json={"arguments": [body]}).json()["results"]
            if argument_id is not None or 3 <= len(result["detected"]) <= 6:
                return {"id": a.id, **body}
    raise SystemExit("no suitable validation argument found; pass --argument-id")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/serve-page.png"))
    parser.add_argument("--model", type=Path, default=None, help="detector folder (default: the shipped one)")
    parser.add_argument("--argument-id", default=None, help="validation Argument ID (default: chosen automatically)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from valuedetect.serve.app import create_app
    from valuedetect.serve.settings import ServeSettings

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(model_dir=args.model, api_key=None)),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        argument = pick_argument(base, args.argument_id)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": args.width, "height": 900}, device_scale_factor=1)
                page.set_default_timeout(120_000)
                page.goto(f"{base}/")
                page.wait_for_function("document.getElementById('model-line').textContent.length > 0")
                page.fill("#premise", argument["premise"])
                page.fill("#conclusion", argument["conclusion"])
                page.select_option("#stance", argument["stance"])
                page.get_by_role("button", name="Detect values").click()
                page.wait_for_selector('#chart[data-ready="1"]')
                page.wait_for_function("document.getElementById('status').textContent.includes('detected')")
                page.wait_for_selector("#highlighted mark")
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    print(f"{args.output}: argument {argument['id']} ({base} stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
