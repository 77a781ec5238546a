"""The ``storage_url`` fixture: one fresh, real storage per test, for every driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.storage import Storage, open_storage
from tests.conftest import require_service, unique_name

DRIVERS = ["sqlite", "postgresql", "mysql", "redis", "redis_cluster"]


@pytest.fixture(scope="session")
def redis_cluster_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster started for this test session, stopped afterwards."""
    require_service("redis")  # the same binaries; fail/skip the same way
    from tests.storage.redis_cluster import redis_cluster

    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as url:
        yield url


@pytest.fixture
def redis_cluster_url(redis_cluster_base: str) -> str:
    base = redis_cluster_base.split("?prefix=")[0]
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}prefix={unique_name('qltest')}"


@pytest.fixture(params=DRIVERS)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    driver: str = request.param
    if driver == "sqlite":
        return f"sqlite:///{tmp_path / 'queuelens.db'}"
    fixture = {"postgresql": "postgres_url"}.get(driver, f"{driver}_url")
    url: str = request.getfixturevalue(fixture)
    if driver in ("postgresql", "mysql"):
        open_storage(url, migrate=True).close()
    return url


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    opened = open_storage(storage_url)
    try:
        yield opened
    finally:
        opened.close()
