"""export: the workload's figures as CSV or JSON, on stdout or into a file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuelens.export import COLUMNS
from queuelens.storage import StorageError
from tests.cli.conftest import CLI, Workload


def test_csv_on_stdout(cli: CLI, workload: Workload) -> None:
    result = cli("export", "--storage", workload.url)

    assert result.code == 0, result.err
    assert result.err == ""  # no progress bar into a pipe
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert tuple(rows[0]) == COLUMNS
    processed: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["app"], row["queue"])
        processed[key] = processed.get(key, 0) + int(row["processed"])
    assert processed == {
        ("billing", "emails"): 100,
        ("billing", "reports"): 50,
        ("shop", "orders.v2:eu"): 20,
    }
    failed = sum(int(row["failed"]) for row in rows if row["queue"] == "emails")
    assert failed == 10


def test_json_into_a_file_with_filters(cli: CLI, workload: Workload, tmp_path: Path) -> None:
    target = tmp_path / "emails.json"

    result = cli(
        "export",
        "--format",
        "json",
        "--step",
        "1h",
        "--window",
        "24h",
        "--app",
        "billing",
        "--queue",
        "emails",
        "-o",
        str(target),
        "--storage",
        workload.url,
    )

    assert result.code == 0, result.err
    assert result.out == ""
    rows = json.loads(target.read_text(encoding="utf-8"))
    assert {(row["queue"], row["step_s"]) for row in rows} == {("emails", 3600)}
    assert sum(row["processed"] for row in rows) == 100
    assert "exported 1 rows to" in result.err
    assert "chunks" in result.err  # the progress bar, on stderr
    assert not list(tmp_path.glob("*.part"))


def test_an_unwritable_output_is_one_line(cli: CLI, workload: Workload, tmp_path: Path) -> None:
    result = cli(
        "export", "-o", str(tmp_path / "no" / "such" / "dir.csv"), "--storage", workload.url
    )

    assert result.code == 2
    assert result.err.startswith("queuelens: error: --output ")
    assert "check that the directory exists" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_failed_export_leaves_no_file(
    cli: CLI, workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> Iterator[dict[str, Any]]:
        yield {}
        raise StorageError("the storage went away")

    monkeypatch.setattr("queuelens.cli.export.iter_rows", broken)
    target = tmp_path / "out.csv"

    result = cli("export", "-o", str(target), "--storage", workload.url)

    assert result.code == 2
    assert "the storage went away" in result.err
    assert not target.exists()
    assert not list(tmp_path.glob("*.part"))
