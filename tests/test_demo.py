"""The demo runs a real workload, and what storage returns equals what the workload counted."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from queuelens.config import Settings
from queuelens.demo import JOBS, QUEUES, print_summary, run_demo, run_workload
from queuelens.model import JobStatus


def test_stored_counts_equal_the_workloads_own_counts(tmp_path: Path) -> None:
    out = io.StringIO()
    url = f"sqlite:///{tmp_path / 'demo.db'}"

    result = run_workload(url, seconds=2.0, out=out, seed=7)

    counted_total = sum(sum(by_status.values()) for by_status in result.counted.values())
    assert counted_total > 50, "the workload should run well over 50 jobs in 2 s"
    assert result.stored_counts() == result.counted
    assert result.matches
    assert result.recorder.recorded == counted_total
    assert result.recorder.dropped == 0
    assert result.recorder.internal_errors == 0
    assert set(result.stored) <= {(spec.queue, spec.name) for spec in JOBS}
    for aggregate in result.stored.values():
        # every attempt carries a duration and a wait, so the sketches count every attempt
        assert aggregate.duration.count == aggregate.total
        assert aggregate.wait.count == aggregate.total
        failures = aggregate.count(JobStatus.failed) + aggregate.count(JobStatus.retried)
        assert sum(stat.count for stat in aggregate.exceptions.values()) == failures
    progress = out.getvalue()
    assert "done" in progress
    assert "in queue:" in progress
    assert not [t for t in threading.enumerate() if t.name.startswith("demo-")]


def test_run_demo_prints_the_table_and_both_tallies(tmp_path: Path) -> None:
    out = io.StringIO()

    code = run_demo(f"sqlite:///{tmp_path / 'demo.db'}", seconds=1.5, out=out)

    text = out.getvalue()
    assert code == 0, text
    header = next(line for line in text.splitlines() if line.startswith("queue "))
    for column in ("job", "processed", "failed", "dur p50", "p95", "p99", "wait p50"):
        assert column in header
    rows = [line for line in text.splitlines() if line.split(" ", 1)[0] in QUEUES]
    assert rows, text
    stored = next(line for line in text.splitlines() if line.startswith("storage holds:"))
    counted = next(line for line in text.splitlines() if line.startswith("workload counted:"))
    assert stored.split(":", 1)[1].strip() == counted.split(":", 1)[1].strip()
    assert "stored == counted:   yes, exactly" in text
    assert "make demo" in text
    health = text.split("queue health", 1)[1].split("storage holds:", 1)[0]
    health_rows = [
        line.split() for line in health.splitlines() if line.startswith("  ") and "/100" in line
    ]
    assert sorted(row[0] for row in health_rows) == sorted(QUEUES)
    assert all(row[1] in ("healthy", "warning", "critical") for row in health_rows)


def test_summary_reports_a_mismatch(tmp_path: Path) -> None:
    result = run_workload(f"sqlite:///{tmp_path / 'demo.db'}", seconds=0.5, out=io.StringIO())
    key = next(iter(result.counted))
    result.counted[key][JobStatus.succeeded] = result.counted[key].get(JobStatus.succeeded, 0) + 1
    out = io.StringIO()

    print_summary(result, out)

    assert not result.matches
    assert "stored == counted:   NO" in out.getvalue()


def test_unknown_storage_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo("nosuchdb://x", seconds=0.5, out=io.StringIO()) == 2
    assert "unknown scheme" in capsys.readouterr().err


def test_run_demo_serves_the_data_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The serve step hands the demo's storage to ``queuelens.api.serve`` after printing the
    URL to open; no server is started here."""
    import queuelens.api

    calls: list[tuple[str, str, int]] = []

    def serve(settings: Settings, *, host: str, port: int, toml_path: object) -> None:
        calls.append((settings.storage_url, host, port))

    monkeypatch.setattr(queuelens.api, "serve", serve, raising=False)
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out = io.StringIO()

    code = run_demo(url, seconds=0.5, out=out, serve_on=("127.0.0.1", 8123))

    assert code == 0, out.getvalue()
    assert calls == [(url, "127.0.0.1", 8123)]
    text = out.getvalue()
    assert text.index("stored == counted") < text.index("open http://127.0.0.1:8123/docs")
