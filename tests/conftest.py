"""Shared fixtures: real services on their standard local ports, never stand-ins.

A test that needs a service FAILS when the service is down and ``CI`` is set; on a
developer's machine it is skipped with the command that starts the service.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

# statsmodels' BLAS would start a thread per core in every test; one is faster on small fits.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

START_COMMANDS = {
    "redis": "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
    "--appendonly no",
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mariadb": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "rabbitmq": "rabbitmq-server -detached",
}
PORTS = {"redis": 6379, "postgresql": 5432, "mariadb": 3306, "rabbitmq": 5672}


def _reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Fail (in CI) or skip (elsewhere) unless ``name`` listens on its standard port."""
    port = PORTS[name]
    if _reachable(port):
        return
    message = (
        f"{name} is not listening on 127.0.0.1:{port}; start it with: {START_COMMANDS[name]}"
        " (or run `bash .ci/run`, which starts it)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def unique_name(prefix: str = "ql") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_service("postgresql")
    import psycopg

    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    name = unique_name("ql_test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MariaDB/MySQL database for one test, dropped afterwards."""
    require_service("mariadb")
    import pymysql

    name = unique_name("ql_test")
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The local Redis with a key prefix of this test's own; its keys are deleted afterwards."""
    require_service("redis")
    import redis

    prefix = unique_name("qltest")
    yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
