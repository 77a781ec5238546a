"""Exports stream every job of the window exactly once, in CSV and JSON alike."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from pathlib import Path

import pytest

from queuelens import export
from queuelens.analytics.overview import Analytics
from queuelens.export import COLUMNS, chunk_count, iter_csv, iter_json, iter_rows
from queuelens.model import Aggregate, FlushBatch, JobOutcome, JobStatus, SeriesKey, bucket_start
from queuelens.storage import open_storage

NOW = (time.time() // 60) * 60 - 30.0


def seed(url: str) -> list[tuple[SeriesKey, float]]:
    rng = random.Random(5)
    keys = [
        SeriesKey("billing", q, j) for q in ("emails", "a:b/c") for j in ("send", "größe", "x y")
    ]
    done: list[tuple[SeriesKey, float]] = []
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    for _ in range(2000):
        key, at = rng.choice(keys), NOW - rng.uniform(0, 30 * 3600)
        status = JobStatus.failed if rng.random() < 0.1 else JobStatus.succeeded
        outcome = JobOutcome(
            key.queue, key.job, status, duration_s=rng.uniform(0.01, 1), wait_s=0.1
        )
        aggregates.setdefault((key, bucket_start(at, 60)), Aggregate()).add(outcome, at)
        done.append((key, at))
    storage = open_storage(url)
    try:
        storage.write(FlushBatch("w", 1, NOW, aggregates))
    finally:
        storage.close()
    return done


def test_rows_count_every_job_once_across_chunks_and_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    done = seed(url)
    monkeypatch.setattr(export, "SERIES_BATCH", 4)  # 6 series: two batches per chunk
    storage = open_storage(url)
    try:
        analytics = Analytics(storage, clock=lambda: NOW)
        window = analytics.window("24h")
        chunks: list[int] = []
        rows = list(
            iter_rows(analytics, window, step_s=600, chunk_s=3 * 3600, on_chunk=chunks.append)
        )
        assert chunks == list(range(1, chunk_count(window, step_s=600, chunk_s=3 * 3600) + 1))
        assert len(chunks) > 1
        first = bucket_start(window.start, 600)  # the window widens to whole steps
        expected = [(k, at) for k, at in done if first <= at < window.end]
        assert sum(r["processed"] for r in rows) == len(expected)
        for row in rows[:50]:
            inside = [
                1
                for k, at in expected
                if (k.app, k.queue, k.job) == (row["app"], row["queue"], row["job"])
                and row["at"] <= at < row["at"] + 600
            ]
            assert row["processed"] == len(inside)
        assert {r["step_s"] for r in rows} == {600}
        assert len({(r["app"], r["queue"], r["job"], r["at"]) for r in rows}) == len(rows)

        parsed = list(csv.DictReader(io.StringIO("".join(iter_csv(rows)))))
        assert tuple(parsed[0]) == COLUMNS
        assert [int(r["processed"]) for r in parsed] == [r["processed"] for r in rows]
        assert parsed[0]["job"] == rows[0]["job"]
        assert json.loads("".join(iter_json(rows))) == rows
        assert json.loads("".join(iter_json([]))) == []
        only = list(iter_rows(analytics, window, step_s=3600, queue="a:b/c", job="größe"))
        assert {(r["queue"], r["job"]) for r in only} == {("a:b/c", "größe")}
        assert only[0]["time"].endswith("Z")
    finally:
        storage.close()
