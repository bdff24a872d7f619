"""The HTTP API of ``valuedetect serve`` through FastAPI's test client (lifespan included).

Realistic tests use the shipped detector (loaded once per process); the runner, calibration,
explanation, limit, key and job-lifecycle tests use cheap fakes where the model adds nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.serve_helpers import (
    FAKE_THRESHOLDS,
    CallbackDetector,
    fake_served_model,
    shipped_model,
)

from valuedetect.data import Argument, read_labels, shipped_data_dir
from valuedetect.explain import explain, word_spans
from valuedetect.serve.app import create_app
from valuedetect.serve.runner import ModelRunner
from valuedetect.serve.settings import API_KEY_ENV, ServeSettings
from valuedetect.taxonomy import CATEGORY_NAMES, NUM_CATEGORIES
from valuedetect.value_systems import REFINED, VALUE_SYSTEMS, calibrate

slow = pytest.mark.slow  # uses the shipped detector
VALIDATION_TSV = shipped_data_dir() / "arguments-validation.tsv"
LIMITS = {"max_body_bytes": 4000, "max_arguments": 3, "max_chars": 200, "max_upload_bytes": 3000,
          "max_upload_arguments": 4}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    return shipped_model()


@pytest.fixture(scope="module")
def client(model) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(api_key=None), model)) as c:
        yield c


@pytest.fixture(scope="module")
def unbatched(model) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(api_key=None, batching=False), model)) as c:
        yield c


@pytest.fixture(scope="module")
def limited() -> Iterator[TestClient]:
    """Small limits around the fake detector: refusals never reach a model anyway."""
    with TestClient(create_app(ServeSettings(api_key=None, **LIMITS), fake_served_model())) as c:
        yield c


@pytest.fixture(scope="module")
def validation_rows() -> list[str]:
    """Header and the first data lines of the shipped validation arguments file."""
    return VALIDATION_TSV.read_text(encoding="utf-8").splitlines()[:7]


@pytest.fixture(scope="module")
def sample(validation) -> list[Argument]:
    return validation.arguments[:12]


def as_json(argument: Argument, with_id: bool = True) -> dict:
    body = {"premise": argument.premise, "conclusion": argument.conclusion, "stance": argument.stance}
    if with_id:
        body["id"] = argument.id
    return body


def predict(client: TestClient, arguments: list[dict]) -> list[dict]:
    response = client.post("/v1/predict", json={"arguments": arguments})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def probabilities(result: dict) -> np.ndarray:
    assert list(result["probabilities"]) == list(CATEGORY_NAMES)  # official order
    return np.array([result["probabilities"][c] for c in CATEGORY_NAMES])


def assert_error(response, status: int, code: str | None = None, limit: str | None = None,
                 field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if limit is not None:
        assert error["limit"] == limit
    if field is not None:
        fields = [f["field"] for f in error["fields"]]
        assert field in fields, fields
    return error


def assert_alive(client: TestClient) -> None:
    """The server still answers a good request after a bad one."""
    response = client.post("/v1/predict", json={"arguments": [{"text": "we must protect nature"}]})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1


def wait_for_job(client: TestClient, job_id: str, timeout: float = 60.0, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] != "running":
            return job
        assert time.monotonic() < deadline, f"job {job_id} still running after {timeout} s: {job}"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- service
@slow
def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "minilm-default"}


@slow
def test_model_info(client, model):
    response = client.get("/v1/model")
    assert response.status_code == 200
    info = response.json()
    assert info["name"] == "minilm-default"
    assert info["type"] == "encoder"
    assert info["validation_f1"] == pytest.approx(0.4860, abs=5e-4)
    assert info["threshold_mode"] == "per_category"
    assert info["taxonomy_version"]
    assert [c["name"] for c in info["categories"]] == list(CATEGORY_NAMES)
    thresholds = [c["threshold"] for c in info["categories"]]
    assert thresholds == pytest.approx(list(model.detector.thresholds.values), abs=1e-12)
    assert all(0 < t < 1 for t in thresholds)
    assert len({c["group"] for c in info["categories"]}) >= 4
    assert info["limits"] == {"max_body_bytes": 1_000_000, "max_arguments": 256, "max_chars": 5_000,
                              "max_upload_bytes": 20_000_000, "max_upload_arguments": 100_000}


def test_model_info_reports_configured_limits(limited):
    info = limited.get("/v1/model").json()
    assert info["limits"] == LIMITS
    assert [c["threshold"] for c in info["categories"]] == pytest.approx(FAKE_THRESHOLDS)


# ---------------------------------------------------------------------------- /v1/predict
@slow
def test_predict_premise_conclusion_stance(client, model, sample):
    argument = sample[0]
    (result,) = predict(client, [as_json(argument)])
    assert result["id"] == argument.id
    p = probabilities(result)
    assert np.all((p >= 0) & (p <= 1))
    direct = model.detector.predict_proba([argument])[0]
    np.testing.assert_allclose(p, direct, atol=1e-5)
    thresholds = np.array([c["threshold"] for c in client.get("/v1/model").json()["categories"]])
    assert result["detected"] == [c for c, x, t in zip(CATEGORY_NAMES, p, thresholds, strict=True) if x >= t]
    assert result["level1"] is None


@slow
def test_stance_changes_the_input(client, sample):
    argument = sample[1]
    favor, against = predict(client, [as_json(argument) | {"stance": "in favour of"},
                                      as_json(argument) | {"stance": "against"}])
    assert not np.allclose(probabilities(favor), probabilities(against), atol=1e-6)


@slow
def test_predict_plain_text(client, model):
    text = "Everyone deserves to be treated equally, whatever their religion."
    (result,) = predict(client, [{"text": text}])
    assert result["id"] == "1"
    direct = model.detector.predict_proba([Argument(id="x", premise=text)])[0]
    np.testing.assert_allclose(probabilities(result), direct, atol=1e-5)


@slow
def test_predict_many_in_order_with_ids(client, model, sample):
    thresholds = np.asarray(model.detector.thresholds.values)
    bodies = [as_json(a, with_id=i % 3 != 1) for i, a in enumerate(sample)]
    results = predict(client, bodies)
    assert [r["id"] for r in results] == [a.id if i % 3 != 1 else str(i + 1) for i, a in enumerate(sample)]
    scores = np.stack([probabilities(r) for r in results])
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, model.detector.predict_proba(sample), atol=1e-5)
    for result, row in zip(results, scores, strict=True):
        assert result["detected"] == [c for c, x, t in zip(CATEGORY_NAMES, row, thresholds, strict=True) if x >= t]
    assert any(r["detected"] for r in results)


@slow
def test_batched_equals_unbatched(client, unbatched, sample):
    bodies = [as_json(a) for a in sample]
    batched = np.stack([probabilities(r) for r in predict(client, bodies)])
    singles = np.stack([probabilities(predict(unbatched, [b])[0]) for b in bodies[:4]])
    together = np.stack([probabilities(r) for r in predict(unbatched, bodies)])
    np.testing.assert_allclose(batched, together, atol=1e-5)
    np.testing.assert_allclose(batched[:4], singles, atol=1e-5)
    runner = unbatched.app.state.runner
    assert runner.stats.requests == runner.stats.forward_passes  # one pass per request


@slow
def test_concurrent_requests_share_forward_passes(client, unbatched, sample):
    arguments = (sample * 2)[:16]
    bodies = [as_json(a) | {"id": f"c{i}"} for i, a in enumerate(arguments)]
    expected = {b["id"]: probabilities(predict(unbatched, [b])[0]) for b in bodies[: len(sample)]}
    for b in bodies[len(sample):]:
        expected[b["id"]] = expected[f"c{int(b['id'][1:]) - len(sample)}"]
    runner = client.app.state.runner
    requests_before, passes_before = runner.stats.requests, runner.stats.forward_passes
    barrier = threading.Barrier(len(bodies))
    answers: dict[str, object] = {}

    def post(body: dict) -> None:
        barrier.wait(timeout=30)
        try:
            answers[body["id"]] = client.post("/v1/predict", json={"arguments": [body]})
        except Exception as error:  # reported below, not lost in the thread
            answers[body["id"]] = error

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for body in bodies:
        response = answers[body["id"]]
        assert not isinstance(response, Exception), response
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["id"] == body["id"]
        np.testing.assert_allclose(probabilities(result), expected[body["id"]], atol=1e-5)
    requests = runner.stats.requests - requests_before
    passes = runner.stats.forward_passes - passes_before
    assert requests == len(bodies)
    assert passes < requests, f"{requests} requests took {passes} forward passes"
    assert runner.stats.largest_batch > 1


# ---------------------------------------------------------------------------- /v1/explain
@slow
def test_explain_words_lie_in_the_text(client, model, sample):
    argument = next(a for a in sample if predict(client, [as_json(a)])[0]["detected"])
    response = client.post("/v1/explain", json={"argument": as_json(argument), "top_k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = predict(client, [as_json(argument)])
    assert body["id"] == argument.id
    assert body["detected"] == result["detected"]
    assert [e["category"] for e in body["explanations"]] == body["detected"]
    assert "occlusion" in body["method"]
    fields = {"premise": argument.premise, "conclusion": argument.conclusion}
    assert any(e["words"] for e in body["explanations"])
    for entry in body["explanations"]:
        assert entry["detected"] is True
        assert entry["probability"] >= entry["threshold"]
        assert entry["probability"] == pytest.approx(result["probabilities"][entry["category"]], abs=1e-5)
        words = entry["words"]
        assert len(words) <= 4
        for w in words:
            assert fields[w["field"]][w["start"] : w["end"]] == w["word"]
            assert w["weight"] > 0
        assert [w["weight"] for w in words] == sorted((w["weight"] for w in words), reverse=True)
    # The weight is what the detector loses without the word: check the top one directly.
    entry = next(e for e in body["explanations"] if e["words"])
    top = entry["words"][0]
    text = fields[top["field"]]
    shortened = " ".join((text[: top["start"]] + text[top["end"] :]).split())
    without = Argument(argument.id, **({**fields, top["field"]: shortened}), stance=argument.stance)
    column = CATEGORY_NAMES.index(entry["category"])
    lost = entry["probability"] - model.detector.predict_proba([without])[0][column]
    assert lost == pytest.approx(top["weight"], abs=1e-3)


@slow
def test_explain_requested_categories(client, sample):
    wanted = ["Hedonism", "Achievement", "Hedonism"]
    response = client.post("/v1/explain", json={"argument": {"text": sample[2].premise}, "categories": wanted})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "1"
    assert [e["category"] for e in body["explanations"]] == ["Hedonism", "Achievement"]
    for entry in body["explanations"]:
        assert entry["detected"] == (entry["category"] in body["detected"])
        assert entry["detected"] == (entry["probability"] >= entry["threshold"])
        assert all(w["field"] == "premise" for w in entry["words"])


def test_explain_unknown_category(limited):
    response = limited.post("/v1/explain", json={"argument": {"text": "x y"}, "categories": ["Wealth"]})
    assert_error(response, 422, "invalid_request", field="categories.0")
    response = limited.post("/v1/explain", json={"argument": {"text": "x y"}, "top_k": 0})
    assert_error(response, 422, "invalid_request", field="top_k")
    assert_alive(limited)


# ---------------------------------------------------------------------------- limits
def chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_body_too_large(limited):
    body = json.dumps({"arguments": [{"text": "word " * 1000}]})
    error = assert_error(limited.post("/v1/predict", content=body, headers={"content-type": "application/json"}),
                         413, "body_too_large", "max_body_bytes")
    assert "4000" in error["message"]
    assert_alive(limited)


def test_chunked_body_too_large(limited):
    body = json.dumps({"arguments": [{"text": "word " * 1000}]}).encode()
    response = limited.post("/v1/predict", content=chunks(body), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers  # sent chunked, no declared length
    assert_error(response, 413, "body_too_large", "max_body_bytes")
    assert_alive(limited)
    # A streamed body under the limit still gets through whole.
    small = json.dumps({"arguments": [{"text": "freedom " * 20}]}).encode()
    response = limited.post("/v1/predict", content=chunks(small, 7), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_too_many_arguments(limited):
    response = limited.post("/v1/predict", json={"arguments": [{"text": f"text {i}"} for i in range(4)]})
    assert_error(response, 413, "too_many_arguments", "max_arguments")
    assert len(predict(limited, [{"text": f"text {i}"} for i in range(3)])) == 3
    assert_alive(limited)


@pytest.mark.parametrize("argument", [
    {"text": "x" * 201},
    {"premise": "p" * 150, "conclusion": "c" * 51, "stance": "against"},  # premise and conclusion count together
])
def test_argument_too_long(limited, argument):
    assert_error(limited.post("/v1/predict", json={"arguments": [argument]}), 413, "argument_too_long", "max_chars")
    assert_error(limited.post("/v1/explain", json={"argument": argument}), 413, "argument_too_long", "max_chars")
    assert_alive(limited)
    assert predict(limited, [{"text": "x" * 200}])


def test_pyvalues_limits(limited):
    assert_error(limited.post("/pyvalues/refined", json={"segments": ["a"] * 4}), 413, "too_many_arguments",
                 "max_arguments")
    assert_error(limited.post("/pyvalues/original", json={"segments": ["a" * 201]}), 413, "argument_too_long",
                 "max_chars")
    assert_alive(limited)


def test_upload_limits(limited):
    response = limited.post("/v1/jobs", files={"file": ("big.txt", b"word " * 700, "text/plain")})
    assert_error(response, 413, "body_too_large", "max_upload_bytes")
    response = limited.post("/v1/jobs", files={"file": ("rows.txt", b"a\nb\nc\nd\ne\n", "text/plain")})
    assert_error(response, 413, "too_many_rows", "max_upload_arguments")
    response = limited.post("/v1/jobs", files={"file": ("long.txt", b"short\n" + b"y" * 201 + b"\n", "text/plain")})
    assert_error(response, 413, "argument_too_long", "max_chars")
    assert_alive(limited)


# ---------------------------------------------------------------------------- invalid requests
@pytest.mark.parametrize(("body", "field", "problem"), [
    (b'{"arguments": [', "body", "malformed JSON"),
    (b'\xff{"arguments": []}', "body", "malformed request body"),  # not UTF-8: FastAPI's bare 400 before
    (b"null", "body", None),
    (b"{}", "arguments", None),
    (b'{"arguments": []}', "arguments", None),
    (b'{"arguments": "a text"}', "arguments", None),
    (b'{"arguments": [{"premise": 5}]}', "arguments.0.premise", None),
    (b'{"arguments": [{"text": "fine"}, {"text": ["a", "b"]}]}', "arguments.1.text", None),
    (b'{"arguments": [{"text": "x", "colour": "red"}]}', "arguments.0.colour", None),
    (b'{"arguments": [{"text": "x"}], "model": "other"}', "model", None),
    (b'{"arguments": [{"text": "   "}]}', "arguments.0", "empty"),
    (b'{"arguments": [{"premise": "p", "conclusion": "c", "stance": "maybe"}]}', "arguments.0.stance", "stance"),
    (b'{"arguments": [{"premise": "p", "stance": "against"}]}', "arguments.0", "conclusion"),
    (b'{"arguments": [{"premise": "p", "text": "t"}]}', "arguments.0", "either"),
    (b'{"arguments": [{"text": "t", "conclusion": "c"}]}', "arguments.0", "premise"),
    (b'{"arguments": [{"id": 7, "text": "t"}]}', "arguments.0.id", None),
])
def test_invalid_requests_name_the_field(limited, body, field, problem):
    response = limited.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    error = assert_error(response, 422, "invalid_request", field=field)
    if problem is not None:
        assert any(problem in f["problem"] for f in error["fields"]), error
        assert problem in error["message"]
    assert_alive(limited)


def test_unknown_paths_and_methods_answer_json(limited):
    assert_error(limited.get("/v1/nothing"), 404, "not_found")
    assert_error(limited.get("/v1/predict"), 405, "method_not_allowed")
    assert_alive(limited)


# ---------------------------------------------------------------------------- API key
def test_api_key():
    with TestClient(create_app(ServeSettings(api_key="s3cret"), fake_served_model())) as c:
        body = {"arguments": [{"text": "a fair and equal society"}]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}, {"Authorization": "Bearer s3cret2"}):
            response = c.post("/v1/predict", json=body, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/predict", json=body, headers=good).status_code == 200
        assert c.post("/v1/predict", json=body, headers={"authorization": "bearer s3cret"}).status_code == 200
        for method, path, kwargs in (
            ("get", "/v1/model", {}),
            ("post", "/v1/explain", {"json": {"argument": {"text": "x"}}}),
            ("post", "/pyvalues/refined", {"json": {"segments": ["x"]}}),
            ("post", "/v1/jobs", {"files": {"file": ("a.txt", b"text\n", "text/plain")}}),
            ("get", "/v1/jobs/0123456789abcdef", {}),
            ("get", "/v1/jobs/0123456789abcdef/results.tsv", {}),
        ):
            assert_error(getattr(c, method)(path, **kwargs), 401, "unauthorized")
            assert getattr(c, method)(path, headers=good, **kwargs).status_code in (200, 202, 404)
        # The health check, the page and its assets stay open (the page asks for the key).
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServeSettings().api_key == "from-env"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert ServeSettings().api_key is None


# ---------------------------------------------------------------------------- file jobs
def upload(client: TestClient, name: str, data: bytes, **form: str) -> dict:
    response = client.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")}, data=form)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["filename"] == name
    return job


def check_downloads(client: TestClient, job: dict, expected: list[dict], tmp_path: Path) -> None:
    """Every result format agrees with /v1/predict's answers for the same arguments."""
    assert job["status"] == "done", job
    assert job["done"] == job["total"] == len(expected)
    assert sorted(job["downloads"]) == ["csv", "jsonl", "tsv"]
    stem = Path(job["filename"]).stem
    ids = [r["id"] for r in expected]
    decisions = np.array([[int(c in r["detected"]) for c in CATEGORY_NAMES] for r in expected])
    scores = np.stack([probabilities(r) for r in expected])

    response = client.get(job["downloads"]["tsv"])
    assert response.status_code == 200
    assert f"{stem}-values.tsv" in response.headers["content-disposition"]
    header = response.text.splitlines()[0].split("\t")
    assert header == ["Argument ID", *CATEGORY_NAMES]
    run = tmp_path / f"{stem}-run.tsv"
    run.write_bytes(response.content)
    run_ids, matrix = read_labels(run, level=2)
    assert run_ids == ids
    np.testing.assert_array_equal(matrix, decisions)

    response = client.get(job["downloads"]["csv"])
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["Argument ID", *CATEGORY_NAMES, *(f"p({c})" for c in CATEGORY_NAMES)]
    assert [r[0] for r in rows[1:]] == ids
    np.testing.assert_array_equal(np.array([[int(x) for x in r[1:21]] for r in rows[1:]]), decisions)
    np.testing.assert_allclose(np.array([[float(x) for x in r[21:]] for r in rows[1:]]), scores, atol=1e-5)

    response = client.get(job["downloads"]["jsonl"])
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [x["id"] for x in lines] == ids
    assert [x["detected"] for x in lines] == [r["detected"] for r in expected]
    np.testing.assert_allclose(np.array([[x["probabilities"][c] for c in CATEGORY_NAMES] for x in lines]), scores,
                               atol=1e-5)


@slow
def test_job_arguments_tsv(client, validation_rows, tmp_path):
    data = ("\n".join(validation_rows) + "\n").encode()
    job = wait_for_job(client, upload(client, "arguments.tsv", data)["id"])
    bodies = []
    for line in validation_rows[1:]:
        arg_id, conclusion, stance, premise = line.split("\t")
        bodies.append({"id": arg_id, "premise": premise, "conclusion": conclusion, "stance": stance})
    check_downloads(client, job, predict(client, bodies), tmp_path)


@slow
def test_job_csv_jsonl_txt(client, sample, tmp_path):
    texts = [a.premise for a in sample[:5]]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["id", "sentence", "note"])
    for i, t in enumerate(texts):
        writer.writerow([f"r{i}", t, "has, a comma"])
    expected = predict(client, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)])
    job = wait_for_job(client, upload(client, "table.csv", table.getvalue().encode(), text_column="sentence")["id"])
    check_downloads(client, job, expected, tmp_path)

    jsonl = "\n".join(json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)) + "\n"
    job = wait_for_job(client, upload(client, "lines.jsonl", jsonl.encode())["id"])
    check_downloads(client, job, expected, tmp_path)

    arguments = [as_json(a) for a in sample[:3]]
    jsonl = "\n".join(json.dumps(a) for a in arguments) + "\n"
    job = wait_for_job(client, upload(client, "arguments.jsonl", jsonl.encode())["id"])
    check_downloads(client, job, predict(client, arguments), tmp_path)

    txt = ("\n\n".join(texts) + "\n").encode()
    expected = predict(client, [{"id": f"text-{i + 1}", "text": t} for i, t in enumerate(texts)])
    job = wait_for_job(client, upload(client, "notes.txt", txt)["id"])
    check_downloads(client, job, expected, tmp_path)


@pytest.mark.parametrize(("name", "data", "where"), [
    ("bad.csv", b"id,text\n1,hello\n2,a,b\n", "line 3"),
    ("bad.jsonl", b'{"text": "fine"}\n{not json}\n', "line 2"),
    ("bad.jsonl", b'{"text": "fine"}\n["a list"]\n', "line 2"),
    ("bad.tsv", b"Argument ID\tConclusion\tStance\tPremise\nA1\tc\tmaybe\tp\n", "line 2"),
    ("latin.txt", "caf\u00e9\n".encode() + b"\xff\xfe\n", "line 2"),
    ("nocolumn.csv", b"sentence\nhello\n", "line 2"),
    ("empty.txt", b"  \n\n", None),
])
def test_malformed_upload_names_file_and_line(limited, name, data, where):
    error = assert_error(limited.post("/v1/jobs", files={"file": (name, data, "text/plain")}), 422, "invalid_file")
    assert error["message"].startswith(name)
    assert "valuedetect-upload" not in error["message"]  # not our temporary copy
    if where is not None:
        assert where in error["message"]
    assert_alive(limited)


@pytest.mark.parametrize("name", ["table.xlsx", "noextension", "archive.tsv.gz"])
def test_unsupported_upload(limited, name):
    error = assert_error(limited.post("/v1/jobs", files={"file": (name, b"text\n", "text/plain")}), 422,
                         "invalid_file")
    assert "unsupported file type" in error["message"]
    assert_alive(limited)


def test_job_missing_file_field(limited):
    assert_error(limited.post("/v1/jobs", data={"text_column": "text"}), 422, "invalid_request", field="file")
    assert_alive(limited)


def test_broken_multipart_is_a_malformed_body(limited):
    boundary = "4bea7452f2ee0b8418ae8c1020a88206"
    response = limited.post("/v1/jobs", content=f"--{boundary}\r\n--{boundary}--\r\n".encode(),
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    error = assert_error(response, 422, "invalid_request", field="body")
    assert "multipart" in error["message"]
    assert_alive(limited)


def test_app_serves_again_after_its_lifespan_ended():
    """A second lifespan (a new test client, a restarted server) gets a working model thread."""
    app = create_app(ServeSettings(api_key=None), fake_served_model())
    with TestClient(app) as c:
        assert_alive(c)
        old = wait_for_job(c, upload(c, "first.txt", b"one\ntwo\n")["id"])
        assert old["status"] == "done"
    with TestClient(app) as c:
        assert_alive(c)
        assert c.post("/v1/explain", json={"argument": {"text": "fun and success"}}).status_code == 200
        assert_error(c.get(f"/v1/jobs/{old['id']}/results.tsv"), 404, "unknown_job")  # its files are gone
        job = wait_for_job(c, upload(c, "second.txt", b"three\n")["id"])
        assert job["status"] == "done"
        assert c.get(job["downloads"]["csv"]).status_code == 200


def test_job_lifecycle_with_a_slow_detector(tmp_path):
    """Results are refused (409) while a job runs; 404 for unknown jobs; done after release."""
    release = threading.Event()
    started = threading.Event()

    def hold(arguments: Sequence[Argument]) -> None:
        if any(a.premise.startswith("HOLD") for a in arguments):
            started.set()
            assert release.wait(timeout=60), "the test never released the detector"

    with TestClient(create_app(ServeSettings(api_key=None), fake_served_model(CallbackDetector(hold)))) as c:
        try:
            job = upload(c, "held.txt", b"HOLD one\ntwo\n")
            assert started.wait(timeout=30)
            status = c.get(f"/v1/jobs/{job['id']}").json()
            assert status["status"] == "running"
            assert status["downloads"] == {}
            assert status["total"] == 2
            for fmt in ("tsv", "csv", "jsonl"):
                assert_error(c.get(f"/v1/jobs/{job['id']}/results.{fmt}"), 409, "job_not_done")
        finally:
            release.set()
        done = wait_for_job(c, job["id"])
        assert done["status"] == "done" and done["done"] == 2
        assert c.get(done["downloads"]["tsv"]).status_code == 200
        assert_error(c.get("/v1/jobs/ffffffffffffffff"), 404, "unknown_job")
        assert_error(c.get("/v1/jobs/ffffffffffffffff/results.tsv"), 404, "unknown_job")
        assert c.get(f"/v1/jobs/{job['id']}/results.xml").status_code in (404, 422)
        assert_alive(c)


def test_failed_job_is_reported_and_server_carries_on():
    def fail(arguments: Sequence[Argument]) -> None:
        if any("BOOM" in a.premise for a in arguments):
            raise RuntimeError("the detector broke")

    with TestClient(create_app(ServeSettings(api_key=None), fake_served_model(CallbackDetector(fail)))) as c:
        job = wait_for_job(c, upload(c, "boom.txt", b"fine\nBOOM\n")["id"])
        assert job["status"] == "failed"
        assert "the detector broke" in job["error"]
        assert job["downloads"] == {}
        assert_error(c.get(f"/v1/jobs/{job['id']}/results.tsv"), 409, "job_not_done")
        assert_alive(c)


# ---------------------------------------------------------------------------- pyvalues endpoints
@slow
def test_pyvalues_systems(client, model, sample):
    segments = [a.premise for a in sample[:6]]
    results = predict(client, [{"text": s} for s in segments])
    raw = np.stack([probabilities(r) for r in results])
    thresholds = np.asarray(model.detector.thresholds.values)
    answers = {}
    for system, size in (("refined", 19), ("refined-coarse", 12), ("original", 10)):
        response = client.post(f"/pyvalues/{system}", json={"id": "doc", "language": "en", "segments": segments})
        assert response.status_code == 200, response.text
        values = response.json()["values"]
        assert len(values) == len(segments)
        assert all(list(v) == list(VALUE_SYSTEMS[system]) and len(v) == size for v in values)
        assert all(0 <= x <= 1 for v in values for x in v.values())
        answers[system] = values
    assert "Universalism: objectivity" not in answers["refined"][0]
    assert list(answers["refined"][0]) == list(REFINED)
    for i, result in enumerate(results):
        refined = answers["refined"][i]
        for name in REFINED:  # calibrated >= 0.5 exactly where the detector detects
            assert (refined[name] >= 0.5) == (name in result["detected"]), (i, name)
            column = CATEGORY_NAMES.index(name)
            assert refined[name] == pytest.approx(calibrate(raw[i : i + 1], thresholds)[0, column], abs=1e-6)
        for system in ("refined-coarse", "original"):
            for name, members in VALUE_SYSTEMS[system].items():
                assert answers[system][i][name] == pytest.approx(max(refined[m] for m in members), abs=1e-12)
    assert any(v >= 0.5 for row in answers["refined"] for v in row.values())

    probability = client.post("/pyvalues/refined?scores=probability", json={"segments": segments}).json()["values"]
    decision = client.post("/pyvalues/refined?scores=decision", json={"segments": segments}).json()["values"]
    for i, result in enumerate(results):
        for name in REFINED:
            assert probability[i][name] == pytest.approx(result["probabilities"][name], abs=1e-5)
            assert decision[i][name] == (1.0 if name in result["detected"] else 0.0)


def test_pyvalues_errors(limited):
    error = assert_error(limited.post("/pyvalues/refined", json={"language": "de", "segments": ["Freiheit"]}), 422,
                         "unsupported_language")
    assert "'de'" in error["message"]
    assert_error(limited.post("/pyvalues/refined", json={"segments": ["fine", "  "]}), 422, "empty_text")
    assert_error(limited.post("/pyvalues/refined", json={"segments": "one string"}), 422, "invalid_request",
                 field="segments")
    assert_error(limited.post("/pyvalues/refined", json={"segments": ["x"]}, params={"scores": "raw"}), 422,
                 "invalid_request", field="query.scores")
    assert_error(limited.post("/pyvalues/refined-fine", json={"segments": ["x"]}), 422, "invalid_request",
                 field="path.system")
    for body in ({}, {"id": "d", "segments": None}, {"segments": []}, {"language": "EN", "segments": []}):
        response = limited.post("/pyvalues/original", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"values": []}
    assert_alive(limited)


# ---------------------------------------------------------------------------- the runner (fakes)
def fake_arguments(*ids: int) -> list[Argument]:
    return [Argument(id=str(i), premise=f"text {i}") for i in ids]


class RecordingPredict:
    """Rows whose every entry is the argument's numeric id / 1000; records each call."""

    def __init__(self, fail: bool = False):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, arguments: Sequence[Argument]) -> np.ndarray:
        self.calls.append([a.id for a in arguments])
        if self.fail:
            raise ValueError("model exploded")
        return np.array([[int(a.id) / 1000] * NUM_CATEGORIES for a in arguments])


def expected_rows(arguments: Sequence[Argument]) -> np.ndarray:
    return np.array([[int(a.id) / 1000] * NUM_CATEGORIES for a in arguments])


def test_runner_merges_concurrent_callers():
    fake = RecordingPredict()

    async def main() -> list[np.ndarray]:
        runner = ModelRunner(fake, batching=True, max_arguments=64, wait_ms=200)
        await runner.start()
        try:
            groups = [fake_arguments(1), fake_arguments(2, 3), fake_arguments(4, 5, 6)]
            out = await asyncio.gather(*(runner.predict(g) for g in groups))
            assert runner.stats.requests == 3
            assert runner.stats.forward_passes == 1
            assert runner.stats.largest_batch == 6
            return out
        finally:
            await runner.stop()

    out = asyncio.run(main())
    assert fake.calls == [["1", "2", "3", "4", "5", "6"]]
    for rows, ids in zip(out, ((1,), (2, 3), (4, 5, 6)), strict=True):
        np.testing.assert_array_equal(rows, expected_rows(fake_arguments(*ids)))


def test_runner_batches_never_exceed_max_arguments():
    fake = RecordingPredict()

    async def main() -> None:
        runner = ModelRunner(fake, batching=True, max_arguments=4, wait_ms=100)
        await runner.start()
        try:
            groups = [fake_arguments(1, 2, 3), fake_arguments(4, 5), fake_arguments(6), fake_arguments(*range(7, 13))]
            out = await asyncio.gather(*(runner.predict(g) for g in groups))
            for rows, group in zip(out, groups, strict=True):
                np.testing.assert_array_equal(rows, expected_rows(group))
        finally:
            await runner.stop()

    asyncio.run(main())
    assert sorted(int(i) for call in fake.calls for i in call) == list(range(1, 13))
    # A lone request larger than the cap is served whole; merged batches stay within it.
    assert all(len(call) <= 4 or call == [str(i) for i in range(7, 13)] for call in fake.calls), fake.calls


def test_runner_error_reaches_every_waiting_caller():
    fake = RecordingPredict(fail=True)

    async def main() -> None:
        runner = ModelRunner(fake, batching=True, wait_ms=200)
        await runner.start()
        try:
            out = await asyncio.gather(*(runner.predict(fake_arguments(i)) for i in (1, 2, 3)),
                                       return_exceptions=True)
            assert [type(x) for x in out] == [ValueError] * 3
            assert all("model exploded" in str(x) for x in out)
            fake.fail = False  # the batch loop survived the failure
            np.testing.assert_array_equal(await runner.predict(fake_arguments(9)), expected_rows(fake_arguments(9)))
        finally:
            await runner.stop()

    asyncio.run(main())
    # The failed merged batch is run again request by request (so a bad request fails alone).
    assert fake.calls == [["1", "2", "3"], ["1"], ["2"], ["3"], ["9"]]


def test_runner_skips_callers_that_gave_up():
    fake = RecordingPredict()

    async def main() -> None:
        runner = ModelRunner(fake, batching=True, wait_ms=150)
        await runner.start()
        try:
            gone = asyncio.create_task(runner.predict(fake_arguments(1)))
            kept = asyncio.create_task(runner.predict(fake_arguments(2)))
            await asyncio.sleep(0.01)  # both are queued; the batcher waits for more
            gone.cancel()
            np.testing.assert_array_equal(await kept, expected_rows(fake_arguments(2)))
            with pytest.raises(asyncio.CancelledError):
                await gone
            # When every caller of a batch gave up, no forward pass runs at all.
            lone = asyncio.create_task(runner.predict(fake_arguments(3)))
            await asyncio.sleep(0.01)
            lone.cancel()
            await asyncio.sleep(0.3)
            np.testing.assert_array_equal(await runner.predict(fake_arguments(4)), expected_rows(fake_arguments(4)))
        finally:
            await runner.stop()

    asyncio.run(main())
    assert fake.calls == [["2"], ["4"]]


def test_runner_without_batching_runs_one_pass_per_request():
    fake = RecordingPredict()

    async def main() -> None:
        runner = ModelRunner(fake, batching=False)
        await runner.start()
        try:
            await asyncio.gather(*(runner.predict(fake_arguments(i)) for i in (1, 2, 3)))
            assert runner.stats.forward_passes == runner.stats.requests == 3
            assert runner.stats.arguments == 3
        finally:
            await runner.stop()

    asyncio.run(main())
    assert sorted(fake.calls) == [["1"], ["2"], ["3"]]


# ---------------------------------------------------------------------------- calibration (pure)
def test_calibrate_maps_thresholds_to_one_half():
    thresholds = np.array([0.05, 0.1, 0.3, 0.5, 0.7, 0.95] + [0.4] * 14)
    grid = np.linspace(0, 1, 2001)
    scores = np.repeat(grid[:, None], NUM_CATEGORIES, axis=1)
    out = calibrate(scores, thresholds)
    assert out.shape == scores.shape
    np.testing.assert_array_equal(out[0], np.zeros(NUM_CATEGORIES))
    np.testing.assert_array_equal(out[-1], np.ones(NUM_CATEGORIES))
    assert np.all(np.diff(out, axis=0) >= 0)  # monotone
    assert np.all(np.diff(out, axis=0)[:, :6] > 0)  # strictly, so rankings are kept
    np.testing.assert_allclose(calibrate(thresholds[None, :], thresholds)[0], 0.5, atol=0)
    # At and right around each threshold: p >= t exactly when the calibrated score >= 0.5.
    near = np.stack([np.nextafter(thresholds, 0), thresholds, np.nextafter(thresholds, 1)])
    np.testing.assert_array_equal(calibrate(near, thresholds) >= 0.5, near >= thresholds)
    np.testing.assert_array_equal(out >= 0.5, scores >= thresholds)


def test_calibrate_with_shipped_like_thresholds_and_out_of_range_scores():
    rng = np.random.default_rng(0)
    thresholds = rng.uniform(0.1, 0.6, NUM_CATEGORIES)
    scores = rng.uniform(0, 1, (500, NUM_CATEGORIES))
    out = calibrate(scores, thresholds)
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_array_equal(out >= 0.5, scores >= thresholds)
    # Scores a sloppy detector puts slightly outside [0, 1] are clipped, not extrapolated.
    np.testing.assert_array_equal(calibrate(np.array([[-0.1] * 20, [1.2] * 20]), thresholds),
                                  [[0.0] * 20, [1.0] * 20])


# ---------------------------------------------------------------------------- explain (fake detector)
class KeywordPredict:
    """'success' drives Achievement, 'fun' (less) too; 'boring' lowers it; other columns are flat."""

    def __init__(self):
        self.calls: list[list[Argument]] = []

    def __call__(self, arguments: Sequence[Argument]) -> np.ndarray:
        self.calls.append(list(arguments))
        out = np.full((len(arguments), NUM_CATEGORIES), 0.3)
        column = CATEGORY_NAMES.index("Achievement")
        for row, a in zip(out, arguments, strict=True):
            words = set(re.findall(r"\w+", f"{a.premise} {a.conclusion}".lower()))
            row[column] = 0.2 + 0.5 * ("success" in words) + 0.1 * ("fun" in words) - 0.15 * ("boring" in words)
        return out


def test_explain_ranks_the_deciding_word_first():
    fake = KeywordPredict()
    premise = "Hard work brings success and some fun, never boring."
    argument = Argument(id="a", premise=premise, conclusion="We should work hard for success", stance="in favor of")
    full, explanations = explain(fake, argument, ["Achievement", "Hedonism"], top_k=3)
    assert len(fake.calls) == 1  # all occluded variants in one batch
    assert len(fake.calls[0]) == 1 + len(word_spans(argument, 200))
    assert full[CATEGORY_NAMES.index("Achievement")] == pytest.approx(0.2 + 0.5 + 0.1 - 0.15)
    achievement, hedonism = explanations
    assert achievement.category == "Achievement"
    words = [(w.word.field, w.word.text) for w in achievement.words]
    # 'success' appears twice (premise and conclusion): removing one copy leaves the other, so
    # neither copy alone explains anything; 'fun' does, and 'boring' argues against.
    assert words == [("premise", "fun")]
    assert achievement.words[0].weight == pytest.approx(0.1)
    assert hedonism.words == ()  # flat column: no word matters
    for w in achievement.words:
        assert getattr(argument, w.word.field)[w.word.start : w.word.end] == w.word.text


def test_explain_single_occurrence_ranks_first_with_offsets():
    fake = KeywordPredict()
    argument = Argument(id="b", premise="Our team wants success and a little fun today")
    _, (entry,) = explain(fake, argument, ["Achievement"], top_k=5)
    assert [w.word.text for w in entry.words] == ["success", "fun"]
    assert [w.weight for w in entry.words] == pytest.approx([0.5, 0.1])
    top = entry.words[0].word
    assert (top.field, top.start, top.end) == ("premise", 15, 22)
    assert argument.premise[top.start : top.end] == "success"
    _, (entry,) = explain(fake, argument, ["Achievement"], top_k=1)
    assert [w.word.text for w in entry.words] == ["success"]


def test_explain_limits_words_and_keeps_a_premise():
    fake = KeywordPredict()
    argument = Argument(id="c", premise="success", conclusion="one two three four", stance="against")
    _, (entry,) = explain(fake, argument, ["Achievement"], top_k=5, max_words=3)
    variants = fake.calls[0]
    assert len(variants) == 4  # the argument and its first three words left out
    assert variants[1].premise == "..."  # a one-word premise is never emptied
    assert [v.conclusion for v in variants[2:]] == ["two three four", "one three four"]
    assert [w.word.text for w in entry.words] == ["success"]
    with pytest.raises(KeyError, match="Wealth"):
        explain(fake, argument, ["Wealth"])


def test_predict_fills_level1_for_a_detector_trained_on_it_and_leaves_it_null_otherwise(client) -> None:
    from tests.serve_helpers import Level1Detector

    from valuedetect.taxonomy import LEVEL1_NAMES

    body = {"arguments": [{"text": "Protect the forests and the rivers."}, {"text": "Lower taxes for families."}]}
    plain = client.post("/v1/predict", json=body).json()["results"]
    assert all(r["level1"] is None for r in plain)
    detector = Level1Detector()
    with TestClient(create_app(ServeSettings(api_key=None), fake_served_model(detector))) as level1_client:
        results = level1_client.post("/v1/predict", json=body).json()["results"]
    expected = detector.predict_level1_proba([Argument(id="a", premise=a["text"]) for a in body["arguments"]])
    for row, want in zip(results, expected, strict=True):
        assert list(row["level1"]) == list(LEVEL1_NAMES)
        assert np.allclose([row["level1"][v] for v in LEVEL1_NAMES], want)
        assert len(row["probabilities"]) == NUM_CATEGORIES  # the categories are not shifted by level 1


def test_level1_decisions_use_the_level1_thresholds_and_model_info_lists_them(client) -> None:
    from tests.serve_helpers import Level1Detector

    from valuedetect.taxonomy import LEVEL1_NAMES, LEVEL1_TO_CATEGORY
    from valuedetect.thresholds import Thresholds

    body = {"arguments": [{"text": "Protect the forests and the rivers."}, {"text": "Lower taxes for families."}]}
    plain = client.post("/v1/predict", json=body).json()["results"]
    assert all(r["level1_detected"] is None for r in plain)
    info = client.get("/v1/model").json()
    assert info["predicts_level1"] is False
    assert all(v["threshold"] is None for c in info["categories"] for v in c["level1"])

    detector = Level1Detector()
    cutoffs = np.linspace(0.05, 0.6, len(LEVEL1_NAMES))  # distinct per value: a shifted column would show
    detector.level1_thresholds = Thresholds(values=list(cutoffs), mode="per_category", global_value=0.3)
    with TestClient(create_app(ServeSettings(api_key=None), fake_served_model(detector))) as level1_client:
        results = level1_client.post("/v1/predict", json=body).json()["results"]
        info = level1_client.get("/v1/model").json()
    detected_somewhere = False
    for row in results:
        want = [v for v, cut in zip(LEVEL1_NAMES, cutoffs, strict=True) if row["level1"][v] >= cut]
        assert row["level1_detected"] == want
        detected_somewhere |= bool(want) and len(want) < len(LEVEL1_NAMES)
    assert detected_somewhere, "the thresholds should split the values, else the test shows nothing"
    assert info["predicts_level1"] is True
    listed = [(v["name"], c["name"], v["threshold"]) for c in info["categories"] for v in c["level1"]]
    assert sorted(name for name, _, _ in listed) == sorted(LEVEL1_NAMES)
    for name, category, threshold in listed:
        assert category == LEVEL1_TO_CATEGORY[name]
        assert threshold == pytest.approx(cutoffs[LEVEL1_NAMES.index(name)])
