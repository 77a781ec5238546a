"""End-to-end recording throughput and the cost of one flush, for every storage driver.

    .venv/bin/python benchmarks/flush.py                          # every driver whose server is up
    .venv/bin/python benchmarks/flush.py --drivers sqlite,redis --jobs 100000

For each driver:

(a) **end to end**: one process records ``--jobs`` outcomes (default 500,000) across
    ``--series`` job series (50) with realistic values -- lognormal durations, exponential
    waits, CPU, memory, 5% failures with an exception -- through ``Recorder.record()``, then
    flushes once; jobs/s = jobs / (record time + flush time). The stored total is read back
    and must equal the jobs recorded.
(b) **one flush of 1,000 series**: each of ``--flushes`` rounds records 5 outcomes into
    each of 1,000 series and times ``Recorder.flush()`` alone (a fresh batch each time,
    minute + hour + day buckets, so 3,000 buckets per batch). Each round's outcomes finish
    ``--interval-s`` (1 s, the recorder's default flush interval) after the previous
    round's, as in production, so minutes roll over as they would. Untimed flushes warm up
    first (schema, prepared statements, Lua scripts): one, or for Redis ``compact_every``
    of them, so that the timed flushes find the series' logs in their steady state (each
    flush folds the logs of ``1 / compact_every`` of the series into their buckets; see
    ``docs/storage.md``). For Redis every socket send is counted: one send, one reply = one
    round trip.

Servers are the local ones on their standard ports (PostgreSQL 5432 as ``postgres``, MariaDB
3306 as ``root``, Redis 6379). SQL benchmarks run in a temporary database created and dropped
here; Redis ones under a key prefix of their own, deleted with SCAN afterwards. Redis Cluster
is started on free ports by ``tests/storage/redis_cluster.py``. A driver whose server is down
is skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuelens.model import JobOutcome, JobStatus, Resolution, bucket_start
from queuelens.recorder import Recorder
from queuelens.storage import Storage, open_storage

REPO = Path(__file__).resolve().parent.parent
DRIVERS = ("sqlite", "postgresql", "mysql", "redis", "redis-cluster")
TARGET_JOBS_PER_S = 100_000
TARGET_REDIS_FLUSH_MS = 50.0


class Skip(Exception):
    """This driver cannot run here; the message says why and how to fix it."""


@dataclass(slots=True)
class Result:
    driver: str
    jobs: int
    record_s: float
    flush_s: float
    stored: int
    flush_ms: list[float]
    round_trips: list[int] | None
    #: Redis connections the flushes used: 1 for Redis, one per master for a cluster
    nodes: int

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / (self.record_s + self.flush_s)


# -- workload --------------------------------------------------------------------------------


def outcomes_for(
    series: list[tuple[str, str]], n: int, seed: int, finished_at: float | None = None
) -> list[JobOutcome]:
    """``n`` realistic outcomes spread over ``series``, finished at ``finished_at`` (by
    default the recorder stamps the time)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        queue, job = series[i % len(series)]
        failed = rng.random() < 0.05
        duration_s = rng.lognormvariate(-3.0, 1.2)
        out.append(
            JobOutcome(
                queue=queue,
                job=job,
                status=JobStatus.failed if failed else JobStatus.succeeded,
                duration_s=duration_s,
                wait_s=rng.expovariate(5.0),
                cpu_s=duration_s * rng.random(),
                memory_peak_mb=80.0 + rng.random() * 40.0,
                memory_delta_mb=rng.random() * 2.0,
                exception_type="TimeoutError" if failed else None,
                exception_message="upstream did not answer in 30 s" if failed else None,
                finished_at=finished_at,
            )
        )
    return out


def series_names(n: int) -> list[tuple[str, str]]:
    return [(f"queue{i % 10}", f"app.tasks.job{i}") for i in range(n)]


# -- measurements ----------------------------------------------------------------------------


class SendCounter:
    """Counts redis-py socket sends (one per command or per pipeline) while installed, and
    the distinct connections (so Redis Cluster nodes) they went to."""

    def __init__(self) -> None:
        self.sends = 0
        self.connections: set[int] = set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from redis.connection import AbstractConnection

        original: Callable[..., Any] = AbstractConnection.send_packed_command

        def counting(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            self.sends += 1
            self.connections.add(id(conn))
            original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def end_to_end(storage: Storage, jobs: int, n_series: int) -> tuple[float, float, int]:
    """(record seconds, flush seconds, outcomes read back) for ``jobs`` outcomes."""
    app = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    pool = outcomes_for(series_names(n_series), 10_000, seed=1)  # reused: building is not timed
    recorder = Recorder(storage, app=app, flush_interval_s=3600.0)
    started_at = time.time()
    try:
        record = recorder.record
        t0 = time.perf_counter()
        for outcome in itertools.islice(itertools.cycle(pool), jobs):
            record(outcome)
        t1 = time.perf_counter()
        done = recorder.flush()
        t2 = time.perf_counter()
    finally:
        recorder.close()
    if not done:
        raise RuntimeError(f"flush failed: {recorder.stats().last_error}")
    minute = Resolution.minute
    series = storage.list_jobs(app)
    buckets = storage.read_buckets(
        series, minute, bucket_start(started_at, minute), time.time() + 60
    )
    stored = sum(agg.total for per in buckets.values() for agg in per.values())
    return t1 - t0, t2 - t1, stored


def flush_1000(
    storage: Storage, n_series: int, rounds: int, count_sends: bool, interval_s: float
) -> tuple[list[float], list[int] | None, int]:
    """Milliseconds of each timed flush of ``n_series`` series, Redis sends per flush, and
    the number of Redis connections (nodes) the timed flushes sent to."""
    names = series_names(n_series)
    # a Redis storage folds each series' log on one flush in compact_every: warm up until
    # the logs are as long as they will stay
    warmup = max(1, int(getattr(storage, "compact_every", 1)))
    start = time.time()
    recorder = Recorder(storage, app=f"bench-flush-{uuid.uuid4().hex[:8]}", flush_interval_s=3600)
    counter = SendCounter()
    times_ms: list[float] = []
    sends: list[int] = []
    try:
        for round_no in range(warmup + rounds):
            finished_at = start + round_no * interval_s
            for outcome in outcomes_for(
                names, 5 * n_series, seed=round_no, finished_at=finished_at
            ):
                recorder.record(outcome)
            with counter.installed() if count_sends else contextlib.nullcontext():
                before = counter.sends
                counter.connections.clear()
                t0 = time.perf_counter()
                done = recorder.flush()
                elapsed_ms = (time.perf_counter() - t0) * 1000
            if not done:
                raise RuntimeError(f"flush failed: {recorder.stats().last_error}")
            if round_no >= warmup:
                times_ms.append(elapsed_ms)
                sends.append(counter.sends - before)
    finally:
        recorder.close()
    return times_ms, sends if count_sends else None, len(counter.connections)


# -- servers ---------------------------------------------------------------------------------


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


@contextlib.contextmanager
def driver_url(driver: str, workdir: Path) -> Iterator[str]:
    """A URL to an empty, private place for ``driver``; removed afterwards. Raises Skip."""
    name = f"qlbench_{uuid.uuid4().hex[:10]}"
    if driver == "sqlite":
        yield f"sqlite:///{workdir / 'flush.db'}"
    elif driver == "postgresql":
        if not listening(5432):
            raise Skip("PostgreSQL is not listening on 127.0.0.1:5432")
        import psycopg

        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    elif driver == "mysql":
        if not listening(3306):
            raise Skip("MariaDB/MySQL is not listening on 127.0.0.1:3306")
        import pymysql

        admin_conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        try:
            with admin_conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            yield f"mysql://root@127.0.0.1:3306/{name}"
        finally:
            with admin_conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            admin_conn.close()
    elif driver == "redis":
        if not listening(6379):
            raise Skip("Redis is not listening on 127.0.0.1:6379")
        try:
            yield f"redis://127.0.0.1:6379/0?prefix={name}"
        finally:
            delete_keys("redis://127.0.0.1:6379/0", name)
    elif driver == "redis-cluster":
        helper = REPO / "tests" / "storage" / "redis_cluster.py"
        if not helper.exists():
            raise Skip(f"{helper.relative_to(REPO)} does not exist")
        sys.path.insert(0, str(REPO))
        from tests.storage.redis_cluster import redis_cluster

        with redis_cluster(workdir / "cluster") as base:  # servers and their data go at exit
            yield f"{base}?prefix={name}"
    else:
        raise Skip(f"unknown driver {driver!r}; choose from {', '.join(DRIVERS)}")


def delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def run_driver(driver: str, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory() as tmp, driver_url(driver, Path(tmp)) as url:
        server_sql = driver in ("postgresql", "mysql")
        storage = open_storage(url, migrate=True) if server_sql else open_storage(url)
        try:
            record_s, flush_s, stored = end_to_end(storage, args.jobs, args.series)
            flush_ms, trips, nodes = flush_1000(
                storage,
                args.flush_series,
                args.flushes,
                count_sends=driver.startswith("redis"),
                interval_s=args.interval_s,
            )
        finally:
            storage.close()
    return Result(driver, args.jobs, record_s, flush_s, stored, flush_ms, trips, nodes)


# -- report ----------------------------------------------------------------------------------


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n(a) end to end: {args.jobs:,} jobs over {args.series} series, recorded then flushed"
        f"\n(b) one flush of {args.flush_series:,} series: median of {args.flushes} flushes\n"
    )
    header = (
        f"{'driver':<15}{'(a) jobs/s':>12}{'record s':>10}{'flush s':>9}{'stored':>10}"
        f"{'(b) flush ms':>14}{'min-max':>16}{'round trips':>13}"
    )
    print(header + "\n" + "-" * len(header))
    for r in results:
        trips = "-"
        if r.round_trips is not None:
            trips = f"{statistics.median(r.round_trips):g}" + (f"/{r.nodes} nodes" * (r.nodes > 1))
        spread = f"{min(r.flush_ms):.1f}-{max(r.flush_ms):.1f}"
        print(
            f"{r.driver:<15}{r.jobs_per_s:>12,.0f}{r.record_s:>10.2f}{r.flush_s:>9.3f}"
            f"{r.stored:>10,}{statistics.median(r.flush_ms):>14.1f}{spread:>16}{trips:>13}"
        )
    print(
        f"\ntargets: every driver > {TARGET_JOBS_PER_S:,} jobs/s end to end; Redis flush of "
        f"1,000 series < {TARGET_REDIS_FLUSH_MS:g} ms in one round trip (per node for a cluster)"
    )
    for r in results:
        verdicts = [f"{'ok' if r.jobs_per_s > TARGET_JOBS_PER_S else 'MISSED'} jobs/s"]
        if r.stored != r.jobs:
            verdicts.append(f"STORED {r.stored:,} OF {r.jobs:,}")
        if r.round_trips is not None:
            fast = statistics.median(r.flush_ms) < TARGET_REDIS_FLUSH_MS
            # a cluster pipeline needs one round trip per node it touches; that is the floor
            one_trip = max(r.round_trips) <= max(r.nodes, 1)
            verdicts.append(f"{'ok' if fast else 'MISSED'} flush time")
            per = " per node" if r.nodes > 1 else ""
            verdicts.append(f"{'ok' if one_trip else 'MISSED'} one round trip{per}")
        print(f"  {r.driver:<15}{', '.join(verdicts)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Targets: > 100,000 jobs/s end to end; Redis 1,000-series flush < 50 ms.",
    )
    parser.add_argument(
        "--drivers",
        default=",".join(DRIVERS),
        help=f"comma-separated, from {','.join(DRIVERS)} (default: all)",
    )
    parser.add_argument("--jobs", type=int, default=500_000, help="(a) outcomes (500000)")
    parser.add_argument("--series", type=int, default=50, help="(a) job series (50)")
    parser.add_argument(
        "--flush-series", type=int, default=1000, help="(b) series per flush (1000)"
    )
    parser.add_argument("--flushes", type=int, default=7, help="(b) timed flushes (7)")
    parser.add_argument(
        "--interval-s",
        type=float,
        default=1.0,
        help="(b) simulated time between flushes, for the outcomes' finish times (1.0)",
    )
    args = parser.parse_args(argv)
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if unknown := set(drivers) - set(DRIVERS):
        parser.error(f"unknown driver(s) {', '.join(sorted(unknown))}; choose from {DRIVERS}")
    results = []
    for driver in drivers:
        print(f"{driver}: running ...", flush=True)
        try:
            results.append(run_driver(driver, args))
        except Skip as exc:
            print(f"{driver}: skipped: {exc}")
    if results:
        print_table(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
