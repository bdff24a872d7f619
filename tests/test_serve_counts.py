"""The counts behind the page's corpus chart: how often each category was detected across an
uploaded file, overall and per group column, as JSON and as a CSV download.

The fake word-hash detector answers in milliseconds; the counts are checked against the job's
own results table, so they hold for any detector.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.serve_helpers import fake_served_model
from tests.test_serve_api import assert_error, upload, wait_for_job

from valuedetect.serve.app import create_app
from valuedetect.serve.counts import MAX_GROUPS, WHOLE_FILE, category_counts, counts_csv
from valuedetect.serve.settings import ServeSettings
from valuedetect.taxonomy import CATEGORY_NAMES

WORDS = ["nature", "family", "freedom", "money", "safety", "tradition", "rules", "power", "fair", "care"]
PARTIES = ["green", "blue", "red"]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(api_key=None), fake_served_model())) as c:
        yield c


def speeches(n: int = 60) -> tuple[bytes, list[dict[str, str]]]:
    rows = [{"id": f"s{i}", "text": " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 5)),
             "party": PARTIES[i % 3] if i % 10 else "", "speaker": f"speaker {i % 7}", "session": "2024",
             "note": f"note {i}"} for i in range(n)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode(), rows


def decisions_of(client: TestClient, job: dict) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(client.get(job["downloads"]["csv"]).text)))[1:]
    return [r[0] for r in rows], np.array([[int(x) for x in r[1:21]] for r in rows])


def test_counts_overall_and_per_group(client):
    data, rows = speeches()
    job = wait_for_job(client, upload(client, "speeches.csv", data)["id"])
    # id and note hold 60 distinct values (more than MAX_GROUPS), session one: neither groups anything.
    assert job["group_columns"] == ["party", "speaker"]
    ids, decisions = decisions_of(client, job)
    assert ids == [r["id"] for r in rows]

    whole = client.get(f"/v1/jobs/{job['id']}/counts").json()
    assert whole["texts"] == 60 and whole["group"] is None and whole["categories"] == list(CATEGORY_NAMES)
    assert whole["series"] == [{"name": WHOLE_FILE, "texts": 60, "detected": decisions.sum(axis=0).tolist()}]
    assert 0 < decisions.sum() < decisions.size  # the fake detector finds some categories, not all

    by_party = client.get(f"/v1/jobs/{job['id']}/counts", params={"group": "party"}).json()
    assert by_party["group"] == "party"
    parties = np.array([r["party"] for r in rows])
    expected = sorted(({"name": p, "texts": int((parties == p).sum()),
                        "detected": decisions[parties == p].sum(axis=0).tolist()} for p in set(parties)),
                      key=lambda s: (-s["texts"], s["name"]))
    assert by_party["series"] == expected
    assert [s["name"] for s in by_party["series"]] == ["blue", "green", "red", ""]  # 18, 18, 18, then 6 blank
    assert np.sum([s["detected"] for s in by_party["series"]], axis=0).tolist() == whole["series"][0]["detected"]

    response = client.get(f"/v1/jobs/{job['id']}/counts.csv", params={"group": "party"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="speeches-counts-by-party.csv"' in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == ["party", "texts", "category", "detected", "share"]
    assert len(table) == 4 * len(CATEGORY_NAMES)
    for row in table:
        series = next(s for s in expected if s["name"] == row["party"])
        j = CATEGORY_NAMES.index(row["category"])
        assert int(row["detected"]) == series["detected"][j] and int(row["texts"]) == series["texts"]
        assert float(row["share"]) == pytest.approx(series["detected"][j] / series["texts"], abs=1e-5)

    whole_csv = client.get(f"/v1/jobs/{job['id']}/counts.csv")
    assert 'filename="speeches-counts.csv"' in whole_csv.headers["content-disposition"]
    assert whole_csv.text.splitlines()[0] == "group,texts,category,detected,share"

    error = assert_error(client.get(f"/v1/jobs/{job['id']}/counts", params={"group": "note"}), 422, "unknown_group")
    assert "'party', 'speaker'" in error["message"]
    assert_error(client.get("/v1/jobs/0123456789abcdef/counts"), 404, "unknown_job")


def test_argument_files_group_by_stance_and_text_files_by_nothing(client):
    data = (b"Argument ID\tConclusion\tStance\tPremise\n"
            b"A1\tWe should ban fast food\tin favor of\tit harms children's health\n"
            b"A2\tWe should ban fast food\tagainst\tpeople must be free to choose\n"
            b"A3\tWe should subsidize farms\tin favor of\tfarmers keep traditions alive\n")
    job = wait_for_job(client, upload(client, "arguments.tsv", data)["id"])
    assert job["group_columns"] == ["Conclusion", "Stance"]
    stance = client.get(f"/v1/jobs/{job['id']}/counts", params={"group": "Stance"}).json()
    assert [(s["name"], s["texts"]) for s in stance["series"]] == [("in favor of", 2), ("against", 1)]

    job = wait_for_job(client, upload(client, "notes.txt", b"protect nature\nlower taxes\n")["id"])
    assert job["group_columns"] == []
    assert client.get(f"/v1/jobs/{job['id']}/counts").json()["series"][0]["texts"] == 2


def test_jsonl_missing_fields_are_the_empty_group(client):
    data = b'{"text": "nature care", "party": "green"}\n{"text": "money power"}\n{"text": "rules", "party": "blue"}\n'
    job = wait_for_job(client, upload(client, "posts.jsonl", data)["id"])
    counts = client.get(f"/v1/jobs/{job['id']}/counts", params={"group": "party"}).json()
    assert sorted((s["name"], s["texts"]) for s in counts["series"]) == [("", 1), ("blue", 1), ("green", 1)]


def test_category_counts_by_hand():
    decisions = np.zeros((4, len(CATEGORY_NAMES)), dtype=np.int8)
    decisions[0, 0] = decisions[1, 0] = decisions[3, 5] = 1
    (whole,) = category_counts(decisions)
    assert whole.texts == 4 and whole.detected[0] == 2 and whole.detected[5] == 1 and sum(whole.detected) == 3
    groups = category_counts(decisions, ["a", "b", "a", "a"])
    assert [(s.name, s.texts, s.detected[0], s.detected[5]) for s in groups] == [("a", 3, 1, 1), ("b", 1, 1, 0)]
    lines = counts_csv(groups, "speaker").splitlines()
    assert lines[0] == "speaker,texts,category,detected,share"
    assert lines[1] == f"a,3,{CATEGORY_NAMES[0]},1,0.33333"
    assert MAX_GROUPS == 50
