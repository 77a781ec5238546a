"""Per-job measurements against work whose cost is known."""

from __future__ import annotations

import hashlib
import sys
import time

import pytest

from queuelens.measure import JobMeasurement, current_rss_mb


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    data = b"x" * 1024
    while time.process_time() < end:
        data = hashlib.sha256(data).digest() * 32


def test_duration_and_cpu_of_a_cpu_bound_job() -> None:
    measurement = JobMeasurement.start()
    burn_cpu(0.3)
    m = measurement.finish()
    assert m.cpu_s is not None
    assert 0.29 <= m.cpu_s <= 0.45
    assert m.duration_s >= m.cpu_s * 0.9


def test_sleeping_job_uses_little_cpu() -> None:
    measurement = JobMeasurement.start()
    time.sleep(0.2)
    m = measurement.finish()
    assert m.duration_s >= 0.2
    assert m.cpu_s is not None
    assert m.cpu_s < 0.05


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS reset is Linux-only")
def test_peak_memory_increment_of_a_job_that_frees_its_memory() -> None:
    measurement = JobMeasurement.start()
    block = bytearray(60 * 1024 * 1024)  # touched: bytearray zero-fills
    del block  # freed before the job ends: only the peak remembers it
    m = measurement.finish()
    assert m.memory_delta_mb is not None
    assert m.memory_peak_mb is not None
    assert m.memory_delta_mb >= 55
    assert m.memory_peak_mb >= m.memory_delta_mb


def test_overlapping_jobs_do_not_get_each_others_process_cpu() -> None:
    first = JobMeasurement.start()
    second = JobMeasurement.start()
    burn_cpu(0.05)
    assert second.finish().cpu_s is None
    assert first.finish().cpu_s is None
    alone = JobMeasurement.start()
    assert alone.finish().cpu_s is not None


def test_thread_cpu_is_per_thread() -> None:
    first = JobMeasurement.start(cpu="thread")
    other = JobMeasurement.start(cpu="thread")
    burn_cpu(0.05)
    m = first.finish()
    assert m.cpu_s is not None
    assert m.cpu_s >= 0.04
    assert other.finish().cpu_s is not None


def test_memory_can_be_skipped() -> None:
    m = JobMeasurement.start(memory=False).finish()
    assert m.memory_peak_mb is None
    assert m.memory_delta_mb is None


def test_current_rss() -> None:
    rss = current_rss_mb()
    assert rss is not None
    assert rss > 5


def test_an_abandoned_measurement_does_not_make_the_process_look_busy_forever() -> None:
    JobMeasurement.start()  # never finished: the job was lost
    alone = JobMeasurement.start()
    assert alone.finish().cpu_s is not None
