"""Server resources: real readings of this host, one sampler per host by lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.storage import Storage, open_storage
from queuelens.system import ServerSampler, _NetRate, sample_server


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'sys.db'}")
    yield opened
    opened.close()


def test_sample_reads_this_host() -> None:
    net = _NetRate()
    sample_server("shop", "host-a", net)
    sample = sample_server("shop", "host-a", net)
    values = sample.values
    assert (sample.kind, sample.app, sample.key) == ("server", "shop", "host-a")
    assert 0.0 <= values["cpu_percent"] <= 100.0 * values["cpu_count"]
    assert values["memory_total_mb"] > values["memory_used_mb"] > 0
    assert 0 <= values["memory_percent"] <= 100
    assert values["load_1"] >= 0
    disks = [k for k in values if k.startswith("disk:") and k.endswith(":total_gb")]
    assert disks, "at least one real disk is mounted"
    assert values["net_in_bytes_per_s"] >= 0
    assert values["net_out_bytes_per_s"] >= 0


def test_one_sampler_per_host(storage: Storage) -> None:
    first = ServerSampler(storage, app="shop", interval_s=60, hostname="host-a")
    second = ServerSampler(storage, app="shop", interval_s=60, hostname="host-a")
    other_host = ServerSampler(storage, app="shop", interval_s=60, hostname="host-b")
    assert first.run_once() is True
    assert second.run_once() is False  # the lease is held by the first
    assert other_host.run_once() is True
    assert sorted(s.key for s in storage.latest_gauges("server")) == ["host-a", "host-b"]
    first.stop()  # releases the lease: the next sampler takes over at once
    assert second.run_once() is True
    second.stop()
    other_host.stop()


def test_sampler_thread_writes_and_storage_errors_are_counted(storage: Storage) -> None:
    sampler = ServerSampler(storage, interval_s=0.05, hostname="host-c")
    sampler.start()
    sampler.stop()
    assert sampler.samples_written >= 1
    broken = ServerSampler(
        lambda: open_storage("postgresql://x@127.0.0.1:1/none"), interval_s=1, hostname="host-d"
    )
    assert broken.run_once() is False
    assert broken.failures == 1
    broken.stop()
