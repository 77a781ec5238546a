"""The clock of a storage server, to compare with this host's (``queuelens doctor``).

    reading = server_time("postgresql://ql@db/queuelens")
    reading.skew_s, reading.uncertainty_s      # +0.004, 0.001: the storage is 4 ms ahead

The Storage protocol has no clock, so this opens a connection of its own: SQLite
``julianday('now')``, PostgreSQL ``clock_timestamp()``, MySQL ``NOW(6)``, Redis ``TIME``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queuelens.storage import scheme_of

__all__ = ["ClockReading", "server_time"]


@dataclass(frozen=True, slots=True)
class ClockReading:
    #: the storage server's clock, unix seconds
    storage_s: float
    #: this host's clock halfway through the round trip that read it
    local_s: float
    round_trip_s: float

    @property
    def skew_s(self) -> float:
        """Positive: the storage's clock is ahead of this host's."""
        return self.storage_s - self.local_s

    @property
    def uncertainty_s(self) -> float:
        # the reply was made somewhere within the round trip; clocks tick in microseconds
        return self.round_trip_s / 2.0 + 0.001


def server_time(url: str) -> ClockReading:
    """Read the clock of the storage at ``url`` (SQL ``now()``, Redis ``TIME``).

    The Storage protocol has no clock of its own, so this connects separately; StorageError
    if it cannot.
    """
    if scheme_of(url).startswith("redis"):
        return _redis_time(url)
    return _sql_time(url)


def _timed(read: Callable[[], Any]) -> ClockReading:
    read()  # connect first, so the round trip below is one query
    before = time.time()
    value = float(read())
    after = time.time()
    return ClockReading(value, (before + after) / 2.0, after - before)


def _sql_time(url: str) -> ClockReading:
    from sqlalchemy import text

    from queuelens.storage.sql_engine import Database

    db = Database.open(url)
    if db.is_sqlite:
        query = text("SELECT (julianday('now') - 2440587.5) * 86400.0")
    elif db.is_mysql:
        query = text("SELECT UNIX_TIMESTAMP(NOW(6))")
    else:
        query = text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
    try:
        return _timed(
            lambda: db.run(
                lambda conn: conn.execute(query).scalar(),
                write=False,
                action="reading the server clock",
            )
        )
    finally:
        db.dispose()


def _redis_time(url: str) -> ClockReading:
    from queuelens.storage._redis_client import RedisConnection
    from queuelens.storage._redis_url import parse_url, redact

    shown = redact(url)
    client_url, _, cluster = parse_url(url, shown)
    connection = RedisConnection(client_url, cluster=cluster, url=shown)

    def read() -> float:
        reply: Any = connection.client().time()
        seconds, micros = reply
        return int(seconds) + int(micros) / 1e6

    try:
        with connection.translate("reading the server clock"):
            return _timed(read)
    finally:
        connection.close()
