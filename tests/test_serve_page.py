"""The web page end to end: headless Debian Chromium (through Playwright) against a real server.

Skipped only where /usr/bin/chromium is missing and CI is not set; in CI a missing browser fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from tests.serve_helpers import fake_served_model, running_server, shipped_model

from valuedetect.data import read_labels, shipped_data_dir
from valuedetect.serve.app import create_app
from valuedetect.serve.settings import ServeSettings
from valuedetect.taxonomy import CATEGORY_NAMES

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's 'chromium' package for the page tests")
        pytest.skip(f"{CHROMIUM} is missing (install Debian's 'chromium' package to run the page tests)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(create_app(ServeSettings(api_key=None), shipped_model())) as base:
        yield base


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def argument(server, validation) -> dict:
    """A validation argument in which the detector finds at least two categories."""
    with httpx.Client(base_url=server, timeout=60) as http:
        for a in validation.arguments[:40]:
            body = {"premise": a.premise, "conclusion": a.conclusion, "stance": a.stance}
            (result,) = http.post("/v1/predict", json={"arguments": [body]}).json()["results"]
            if len(result["detected"]) >= 2:
                return {"id": a.id, **body, "detected": result["detected"]}
    raise AssertionError("no validation argument among the first 40 has two detected categories")


def record_requests(page) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def assert_only_loopback(urls: list[str]) -> None:
    assert urls, "no requests were recorded"
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            continue
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1", f"request left the server: {url}"


def detect(page, base: str, argument: dict) -> None:
    page.goto(f"{base}/")
    page.wait_for_function("document.getElementById('model-line').textContent.length > 0")
    page.fill("#premise", argument["premise"])
    page.fill("#conclusion", argument.get("conclusion", ""))
    if argument.get("stance"):
        page.select_option("#stance", argument["stance"])
    page.get_by_role("button", name="Detect values").click()
    page.wait_for_selector('#chart[data-ready="1"]')


def shown(page) -> tuple[list[str], list[str]]:
    listed = page.eval_on_selector_all("#detected li[data-category]", "els => els.map(e => e.dataset.category)")
    bars = page.eval_on_selector_all('#chart rect.bar[data-detected="1"]', "els => els.map(e => e.dataset.category)")
    return listed, bars


def explained_words(base: str, argument: dict, category: str) -> list[str]:
    body = {"argument": {k: argument[k] for k in ("premise", "conclusion", "stance")}, "categories": [category],
            "top_k": 5}
    response = httpx.post(f"{base}/v1/explain", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [w["word"] for w in response.json()["explanations"][0]["words"]]


def test_page_shows_what_the_api_detects(page, server, argument):
    urls = record_requests(page)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    detect(page, server, argument)

    assert not page.is_visible("#key-row")  # this server needs no key: the page must not ask for one
    assert not page.is_visible("#level1")  # the shipped detector predicts no level-1 values
    listed, bars = shown(page)
    assert listed == argument["detected"]  # same categories, same (official) order
    assert sorted(bars) == sorted(argument["detected"])
    all_bars = page.eval_on_selector_all("#chart rect.bar", "els => els.map(e => e.dataset.category)")
    assert sorted(all_bars) == sorted(CATEGORY_NAMES)  # one bar per category

    # The explanation arrives after the chart: the first detected category's words are marked.
    page.wait_for_function("document.getElementById('status').textContent.includes('categories detected')")
    first = argument["detected"][0]
    assert first in page.inner_text("#why-category")
    page.wait_for_selector("#highlighted mark")
    marks = page.eval_on_selector_all("#highlighted mark", "els => els.map(e => e.textContent)")
    assert sorted(marks) == sorted(explained_words(server, argument, first))
    highlighted = page.inner_text("#highlighted")
    assert argument["premise"][:40] in highlighted and argument["conclusion"] in highlighted

    # Choosing another detected category explains that one instead.
    second = argument["detected"][1]
    page.click(f'#detected li[data-category="{second}"]')
    page.wait_for_function(f"document.getElementById('why-category').textContent.includes({second!r})")
    page.wait_for_function(
        f"document.querySelector('#detected li.selected')?.dataset.category === {second!r}")
    expected = explained_words(server, argument, second)
    if expected:
        page.wait_for_function(f"document.querySelectorAll('#highlighted mark').length === {len(expected)}")
    marks = page.eval_on_selector_all("#highlighted mark", "els => els.map(e => e.textContent)")
    assert sorted(marks) == sorted(expected)
    assert page.eval_on_selector(f'#chart rect.bar[data-category="{second}"]', "e => e.classList.contains('selected')")

    assert_only_loopback(urls)
    assert any(urlsplit(u).path == "/v1/explain" for u in urls)
    assert errors == []


def test_page_lists_level1_values_under_their_category(page, validation):
    from tests.serve_helpers import Level1Detector

    from valuedetect.taxonomy import LEVEL1_NAMES, LEVEL1_TO_CATEGORY
    from valuedetect.thresholds import Thresholds

    detector = Level1Detector()
    detector.level1_thresholds = Thresholds(values=list(np.linspace(0.05, 0.6, len(LEVEL1_NAMES))),
                                            mode="per_category", global_value=0.3)
    with running_server(create_app(ServeSettings(api_key=None), fake_served_model(detector))) as base:
        a = validation.arguments[0]
        argument = {"premise": a.premise, "conclusion": a.conclusion, "stance": a.stance}
        with httpx.Client(base_url=base, timeout=60) as http:
            (result,) = http.post("/v1/predict", json={"arguments": [argument]}).json()["results"]
        assert result["level1_detected"], "the fake detector should detect some level-1 value here"
        detect(page, base, argument)
        page.wait_for_selector("#level1", state="visible")
        values = page.eval_on_selector_all("#level1-list dd[data-value]", "els => els.map(e => e.dataset.value)")
        headings = page.eval_on_selector_all("#level1-list dt", "els => els.map(e => e.textContent)")
    assert sorted(values) == sorted(result["level1_detected"])
    assert headings == list(dict.fromkeys(  # each value's category, once, in the official order
        c for c in CATEGORY_NAMES for v in result["level1_detected"] if LEVEL1_TO_CATEGORY[v] == c))


def test_plain_text_through_the_page(page, server):
    text = "Everyone should be free to choose their own religion and way of life."
    with httpx.Client(base_url=server, timeout=60) as http:
        (result,) = http.post("/v1/predict", json={"arguments": [{"text": text}]}).json()["results"]
    detect(page, server, {"premise": text})
    listed, bars = shown(page)
    assert listed == result["detected"]
    assert sorted(bars) == sorted(result["detected"])
    if not result["detected"]:
        assert page.inner_text("#detected") == "none above threshold"


def test_file_upload_through_the_page(page, server, tmp_path):
    urls = record_requests(page)
    rows = (shipped_data_dir() / "arguments-validation.tsv").read_text(encoding="utf-8").splitlines()[:5]
    page.goto(f"{server}/")
    page.set_input_files("#file", files=[{"name": "few.tsv", "mimeType": "text/tab-separated-values",
                                          "buffer": ("\n".join(rows) + "\n").encode()}])
    page.get_by_role("button", name="Label file").click()
    page.wait_for_function("document.querySelectorAll('#downloads a[data-format]').length === 3")
    formats = page.eval_on_selector_all("#downloads a[data-format]", "els => els.map(e => e.dataset.format)")
    assert sorted(formats) == ["csv", "jsonl", "tsv"]
    assert "done: 4 arguments" in page.inner_text("#job-status")
    with page.expect_download() as download_info:
        page.click('#downloads a[data-format="tsv"]')
    download = download_info.value
    assert download.suggested_filename == "few-values.tsv"
    path = tmp_path / "few-values.tsv"
    download.save_as(path)
    ids, matrix = read_labels(path, level=2)
    assert ids == [r.split("\t")[0] for r in rows[1:]]
    assert matrix.shape == (4, len(CATEGORY_NAMES))
    assert_only_loopback(urls)


def test_page_asks_for_the_api_key(page):
    with running_server(create_app(ServeSettings(api_key="s3cret"), fake_served_model())) as base:
        text = "We must protect nature and the environment for our children."
        headers = {"Authorization": "Bearer s3cret"}
        (result,) = httpx.post(f"{base}/v1/predict", json={"arguments": [{"text": text}]}, headers=headers,
                               timeout=60).json()["results"]
        page.goto(f"{base}/")
        page.wait_for_selector("#key-row:not([hidden])")  # the model info was refused: ask for the key
        assert page.is_visible("#api-key")
        page.fill("#premise", text)
        page.fill("#api-key", "wrong")
        page.get_by_role("button", name="Detect values").click()
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert "API key" in page.inner_text("#status")
        page.fill("#api-key", "s3cret")
        page.get_by_role("button", name="Detect values").click()
        page.wait_for_selector('#chart[data-ready="1"]')
        listed, bars = shown(page)
        assert listed == result["detected"]
        assert sorted(bars) == sorted(result["detected"])


def test_file_counts_chart_through_the_page(page, server, tmp_path):
    """After an upload the page charts the server's counts, per group on request, and offers the
    chart as PNG and the counts as CSV."""
    urls = record_requests(page)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    rows = (shipped_data_dir() / "arguments-validation.tsv").read_text(encoding="utf-8").splitlines()[:9]
    page.goto(f"{server}/")
    page.set_input_files("#file", files=[{"name": "eight.tsv", "mimeType": "text/tab-separated-values",
                                          "buffer": ("\n".join(rows) + "\n").encode()}])
    page.get_by_role("button", name="Label file").click()
    page.wait_for_selector('#corpus-chart[data-ready="1"]')
    job_id = page.eval_on_selector("#corpus-chart", "e => e.dataset.job")
    job = httpx.get(f"{server}/v1/jobs/{job_id}", timeout=60).json()
    assert "Stance" in job["group_columns"]  # 8 arguments: some stance repeats

    def bars() -> dict[tuple[str, str], int]:
        found = page.eval_on_selector_all(
            "#corpus-chart rect.cbar", "els => els.map(e => [e.dataset.category, e.dataset.series, e.dataset.count])")
        return {(c, s): int(n) for c, s, n in found}

    def expected(group: str | None) -> dict[tuple[str, str], int]:
        counts = httpx.get(f"{server}/v1/jobs/{job_id}/counts", params={"group": group} if group else {},
                           timeout=60).json()
        return {(c, s["name"]): s["detected"][j] for s in counts["series"] for j, c in enumerate(counts["categories"])}

    whole = bars()
    assert whole == expected(None) and len(whole) == len(CATEGORY_NAMES)

    page.select_option("#group-column", "Stance")
    page.wait_for_function("document.getElementById('corpus-chart').dataset.ready === '1' && "
                           "document.getElementById('corpus-chart').dataset.series === '2'")
    by_stance = bars()
    assert by_stance == expected("Stance") and len(by_stance) == 2 * len(CATEGORY_NAMES)

    with page.expect_download() as download_info:
        page.click("#corpus-csv")
    download = download_info.value
    assert download.suggested_filename == "eight-counts-by-Stance.csv"
    download.save_as(tmp_path / "counts.csv")
    served = httpx.get(f"{server}/v1/jobs/{job_id}/counts.csv", params={"group": "Stance"}, timeout=60).text
    assert (tmp_path / "counts.csv").read_text(encoding="utf-8") == served

    with page.expect_download() as download_info:
        page.click("#corpus-png")
    download = download_info.value
    assert download.suggested_filename == "eight-counts-by-Stance.png"
    download.save_as(tmp_path / "chart.png")
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000  # a drawn chart, not an empty canvas

    assert_only_loopback(urls)
    assert errors == []
