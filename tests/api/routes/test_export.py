"""Exports stream the workload's rows as CSV or JSON, with a file name to save them under."""

from __future__ import annotations

import csv
import io

import pytest

from queuelens.api.routes import export as export_route
from queuelens.export import COLUMNS
from queuelens.model import bucket_start
from tests.api.conftest import AT, TOTAL, WORKLOAD, Client


def test_csv_has_a_row_per_series_and_step(client: Client) -> None:
    answer = client.get("/api/v1/export", params={"format": "csv", "window": "1h", "step": "1m"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="queuelens-1h-')
    assert disposition.endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == COLUMNS
    assert {(r["app"], r["queue"], r["job"]): int(r["processed"]) for r in rows} == {
        key: ok + bad for key, (ok, bad) in WORKLOAD.items()
    }
    assert {int(r["at"]) for r in rows} == {bucket_start(AT, 60)}
    assert sum(int(r["failed"]) for r in rows) == 10


def test_json_of_one_queue(client: Client) -> None:
    answer = client.get(
        "/api/v1/export", params={"format": "json", "queue": "a:b/c", "window": "6h"}
    )
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-disposition"].endswith('.json"')
    (row,) = answer.json()
    assert (row["app"], row["queue"], row["job"], row["processed"]) == (
        "billing",
        "a:b/c",
        "größe",
        7,
    )
    assert row["duration_ms_max"] is not None


def test_everything_and_nothing(client: Client) -> None:
    rows = client.get("/api/v1/export", params={"format": "json", "window": "30d"}).json()
    assert sum(r["processed"] for r in rows) == TOTAL
    assert client.get("/api/v1/export", params={"format": "json", "app": "none"}).json() == []
    empty = client.get("/api/v1/export", params={"app": "none"})
    assert empty.text.strip() == ",".join(COLUMNS)


def test_small_chunks_make_the_same_file(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = client.get("/api/v1/export", params={"format": "json"}).content
    monkeypatch.setattr(export_route, "CHUNK_BYTES", 16)  # a chunk per row or less
    assert client.get("/api/v1/export", params={"format": "json"}).content == whole
