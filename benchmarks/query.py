"""Read-side latency: the overview and one job's time series, for every storage driver.

    .venv/bin/python benchmarks/query.py                         # every driver whose server is up
    .venv/bin/python benchmarks/query.py --drivers postgresql,redis --series 200 --runs 10

For each driver, in a private database (or Redis key prefix) removed afterwards:

**Dataset.** ``--series`` job series (1,000: 50 queues x 20 jobs, one app) written through
``storage.write`` as flush batches, the way recorders write them, by ``--processes``
processes (each writes the series of some queues; SQLite takes one writer at a time, so one):

* every minute from the start of the hour 24 hours ago to the current minute holds a minute
  aggregate per series, one batch per hour of minutes; storage rolls them up into hour and
  day buckets as for any flush;
* the 30 days before that hold one aggregate per series and hour, one batch per day, each
  placed at the start of its hour: storage writes it to that hour's bucket (and the day's)
  and to the minute bucket at the hour's start, which is past minute retention for all but
  the first of those days and goes with ``storage.prune()`` (Redis expires it on write). So
  24 to 48 hours ago also hold one minute bucket per hour; no measured query reads them.

Then minutes written since the build began are topped up, and the database is settled as a
long-running one is: ``VACUUM ANALYZE`` on PostgreSQL, ``ANALYZE TABLE`` on MariaDB,
``ANALYZE`` on SQLite (right after a bulk load every bucket row has dozens of dead versions
and the planner has no statistics; autovacuum and auto-analyze see to that in a real one).

Aggregates are realistic: each series follows one of eight job profiles (2-30 attempts per
minute, lognormal durations with medians of 50 ms to 3 s, exponential waits, CPU, memory,
1-6% failures and retries with two or three exception types and messages, rare time-outs),
drawn from a pool of pre-built minute and hour aggregates, so building costs storage time,
not random numbers. Each queue has a depth sample, a worker serves every two queues and three
servers report resources, so the overview's health has all its inputs.

**Queries**, p50, p95 and max after ``--warmup`` untimed runs:

* ``overview 1h`` / ``overview 24h``: ``Analytics.overview(window)`` then
  ``Analytics.job_summaries(window)``: every queue with health, every job, the totals;
* ``job series 24h``: ``JobReader.timeseries`` of one job over 24 hours at 1-minute steps.

Each in three modes:

* *cold* (``--cold-runs``): ``Analytics(storage, cache=False)``, every window read whole,
  as a one-shot CLI call does;
* *warm* (``--runs``): one long-lived ``Analytics`` (a server): a named window's figures
  come from its cache, which asks storage on every query whether anything changed;
* *live N* (``--runs``, after all static runs): the same, each run preceded by a flush that
  adds one attempt to the current minute of ``--live-series`` series (all by default), as
  recorders do every flush interval; each answer is checked to count every attempt written,
  so this is the cost of staying current, not of answering the same question twice.

A storage without ``WindowReads`` (Redis today) has no cache: only *cold* is measured.

**Baseline**, in the same run: ``read buckets``, the bare ``storage.read_buckets`` calls that
the query's window needs once for every series (the spans of ``cover(window)``; one series
at minute resolution for the time series), with no merging and no figures. The ratio column
is query p50 / baseline p50.

Target (issue 4): overview p95 under 10 ms on Redis and PostgreSQL; every driver reported.
Servers are the local ones on their standard ports, as for ``flush.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import multiprocessing
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flush import DRIVERS as FLUSH_DRIVERS
from flush import Skip, driver_url
from queuelens.analytics.overview import Analytics
from queuelens.analytics.window import Window, cover
from queuelens.model import (
    Aggregate,
    ExceptionStat,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.storage import Storage, open_storage

DRIVERS = tuple(d for d in FLUSH_DRIVERS if d != "redis-cluster")
TARGET_P95_MS = 10.0
TARGET_DRIVERS = ("postgresql", "redis")
APP = "shop"
JOBS_PER_QUEUE = 20
MINUTE, HOUR, DAY = 60, 3600, 86400


# -- dataset ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """How one kind of job behaves."""

    name: str
    per_minute: float
    duration_median_s: float
    failure_rate: float
    retry_rate: float
    timeout_rate: float
    errors: tuple[tuple[str, str], ...]


PROFILES = (
    Profile("mail", 12, 0.25, 0.02, 0.02, 0.0,
            (("SMTPServerDisconnected", "Connection unexpectedly closed"),
             ("ConnectionRefusedError", "[Errno 111] Connection refused"))),
    Profile("webhook", 20, 0.4, 0.05, 0.04, 0.005,
            (("HTTPError", "502 Server Error: Bad Gateway for url"),
             ("ReadTimeout", "HTTPSConnectionPool: Read timed out. (read timeout=10)"),
             ("ConnectionError", "Max retries exceeded with url"))),
    Profile("thumbnail", 6, 1.2, 0.01, 0.0, 0.0,
            (("OSError", "cannot identify image file"),)),
    Profile("sync", 30, 0.05, 0.01, 0.01, 0.0,
            (("IntegrityError", "duplicate key value violates unique constraint"),)),
    Profile("cleanup", 2, 3.0, 0.01, 0.0, 0.01,
            (("OperationalError", "canceling statement due to statement timeout"),)),
    Profile("index", 8, 0.8, 0.02, 0.02, 0.0,
            (("TransportError", "N/A: connection reset by peer"),
             ("KeyError", "'document_id'"))),
    Profile("billing", 4, 0.6, 0.03, 0.03, 0.01,
            (("CardError", "Your card was declined."),
             ("APIConnectionError", "Could not connect to the payment API"))),
    Profile("export", 3, 2.0, 0.06, 0.02, 0.02,
            (("MemoryError", ""), ("ValueError", "unsupported format 'xlsx2'"))),
)  # fmt: skip
VARIANTS = 24


def poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; the means here are small
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def minute_aggregate(profile: Profile, rng: random.Random) -> Aggregate:
    """One minute of ``profile``: at least one attempt. Exception times are offsets."""
    aggregate = Aggregate()
    for _ in range(1 + poisson(rng, profile.per_minute - 1)):
        roll = rng.random()
        status = JobStatus.succeeded
        if roll < profile.timeout_rate:
            status = JobStatus.timed_out
        elif roll < profile.timeout_rate + profile.failure_rate:
            status = JobStatus.failed
        elif roll < profile.timeout_rate + profile.failure_rate + profile.retry_rate:
            status = JobStatus.retried
        duration_s = rng.lognormvariate(math.log(profile.duration_median_s), 0.8)
        error = rng.choice(profile.errors) if status is not JobStatus.succeeded else None
        outcome = JobOutcome(
            queue="",
            job="",
            status=status,
            duration_s=duration_s,
            wait_s=rng.expovariate(2.0),
            cpu_s=duration_s * rng.uniform(0.1, 0.9),
            memory_peak_mb=rng.uniform(60.0, 180.0),
            memory_delta_mb=rng.uniform(0.0, 4.0),
            exception_type=error[0] if error else None,
            exception_message=error[1] if error else None,
        )
        aggregate.add(outcome, finished_at=rng.uniform(0.0, MINUTE - 1))
    return aggregate


def hour_aggregate(minutes: list[Aggregate], rng: random.Random) -> Aggregate:
    hour = Aggregate()
    for i in range(60):
        one = placed(rng.choice(minutes), i * MINUTE)
        hour.merge(one)
    return hour


def placed(template: Aggregate, start: int) -> Aggregate:
    """``template`` with its exceptions' last-seen offsets moved to ``start``; the rest is
    shared (storage never changes what it is given)."""
    if not template.exceptions:
        return template
    out = Aggregate(template.relative_accuracy)
    out.counts = template.counts
    out.duration, out.wait, out.cpu = template.duration, template.wait, template.cpu
    out.memory_peak, out.memory_delta = template.memory_peak, template.memory_delta
    out.exceptions = {
        name: ExceptionStat(stat.count, stat.last_message, start + stat.last_seen)
        for name, stat in template.exceptions.items()
    }
    return out


def series_keys(n: int) -> list[SeriesKey]:
    return [
        SeriesKey(APP, f"queue{i // JOBS_PER_QUEUE:02d}", f"app.tasks.job{i:04d}") for i in range(n)
    ]


@dataclass(slots=True)
class Dataset:
    series: list[SeriesKey]
    #: the newest minute written
    last_minute: int = 0
    batches: int = 0
    aggregates: int = 0
    build_s: float = 0.0


class Builder:
    """Writes (part of) the dataset described in the module docstring through
    ``storage.write``: ``series[first:last]`` of ``n_series``."""

    def __init__(self, storage: Storage, n_series: int, first: int = 0, last: int | None = None):
        self.storage = storage
        self.data = Dataset(series_keys(n_series))
        self.first, self.last = first, n_series if last is None else last
        rng = random.Random(1)  # the same pool in every process
        self.minutes = [[minute_aggregate(p, rng) for _ in range(VARIANTS)] for p in PROFILES]
        self.hours = [[hour_aggregate(m, rng) for _ in range(8)] for m in self.minutes]
        # only the queues of this part: a queue row is locked by the batch that writes it
        self.frameworks = {(s.app, s.queue): "celery" for _, s in self.mine()}
        self.writer = f"bench-builder-{uuid.uuid4().hex[:8]}"
        self.sequence = 0

    def write(self, aggregates: dict[tuple[SeriesKey, int], Aggregate]) -> None:
        self.sequence += 1
        batch = FlushBatch(self.writer, self.sequence, time.time(), aggregates, self.frameworks)
        if not self.storage.write(batch):
            raise RuntimeError(f"batch {batch.batch_id} was not applied")
        self.data.batches += 1
        self.data.aggregates += len(aggregates)

    def mine(self) -> list[tuple[int, SeriesKey]]:
        return list(enumerate(self.data.series))[self.first : self.last]

    def write_hours(self, first_minute_hour: int) -> None:
        """The 30 days before ``first_minute_hour``: one aggregate per series and hour,
        one batch per day."""
        oldest_hour = first_minute_hour - 30 * DAY
        for day_start in range(oldest_hour, first_minute_hour, DAY):
            hours = range(day_start, min(day_start + DAY, first_minute_hour), HOUR)
            self.write(
                {
                    (key, hour): placed(self._template(i, hour, self.hours), hour)
                    for i, key in self.mine()
                    for hour in hours
                }
            )

    def write_minutes(self, first: int, last: int) -> None:
        """Every minute from ``first`` through ``last``, one batch per hour of minutes."""
        while first <= last:
            until = min(last, bucket_start(first, HOUR) + HOUR - MINUTE)
            self.write(
                {
                    (key, minute): placed(self._template(i, minute, self.minutes), minute)
                    for i, key in self.mine()
                    for minute in range(first, until + MINUTE, MINUTE)
                }
            )
            self.data.last_minute = until
            first = until + MINUTE

    def top_up(self) -> None:
        """Write every minute since the last one written, through the current one."""
        self.write_minutes(self.data.last_minute + MINUTE, bucket_start(time.time(), MINUTE))

    def _template(self, i: int, at: int, pool: list[list[Aggregate]]) -> Aggregate:
        variants = pool[i % len(PROFILES)]
        return variants[(i * 7919 + at // MINUTE) % len(variants)]

    def write_state(self) -> None:
        """Queue depths, workers and servers, sampled now."""
        now = time.time()
        queues = sorted({s.queue for s in self.data.series})
        rng = random.Random(2)
        samples = [
            GaugeSample(
                "queue",
                APP,
                queue,
                {
                    "pending": float(rng.randint(0, 400)),
                    "scheduled": float(rng.randint(0, 20)),
                    "reserved": float(rng.randint(0, 8)),
                    "failed": float(rng.randint(0, 3)),
                    "oldest_pending_age_s": rng.uniform(0.0, 900.0),
                },
                now,
            )
            for queue in queues
        ]
        hosts = [f"worker-{n}.internal" for n in range(3)]
        samples += [
            GaugeSample(
                "server",
                APP,
                host,
                {
                    "cpu_percent": rng.uniform(10, 95),
                    "cpu_count": 8.0,
                    "memory_total_mb": 32768.0,
                    "memory_used_mb": rng.uniform(4000, 30000),
                    "memory_percent": rng.uniform(10, 95),
                    "disk:/:percent": rng.uniform(20, 92),
                },
                now,
            )
            for host in hosts
        ]
        self.storage.write_gauges(samples)
        for n in range(0, len(queues), 2):
            self.storage.heartbeat(
                WorkerHeartbeat(
                    worker_id=f"w{n}",
                    app=APP,
                    framework="celery",
                    hostname=hosts[n % len(hosts)],
                    pid=1000 + n,
                    name=f"celery@{hosts[n % len(hosts)]}",
                    queues=queues[n : n + 2],
                    concurrency=4,
                    busy_slots=rng.randint(0, 4),
                    state=WorkerState.busy,
                    started_at=now - 86400,
                    sent_at=now,
                    heartbeat_interval_s=3600.0,  # stays alive through the whole run
                    processed=rng.randint(1000, 100000),
                    busy_s=rng.uniform(1000, 80000),
                    idle_s=rng.uniform(1000, 80000),
                )
            )


def _build_part(url: str, n_series: int, first: int, last: int, hour: int, until: int) -> Dataset:
    storage = open_storage(url)
    try:
        builder = Builder(storage, n_series, first, last)
        builder.write_hours(hour)
        builder.write_minutes(hour, until)
        return builder.data
    finally:
        storage.close()


def build(url: str, n_series: int, processes: int) -> Dataset:
    """The whole dataset at ``url`` (migrated already), written by ``processes`` processes
    (each writes the series of some queues), then topped up, pruned and given its state."""
    t0 = time.perf_counter()
    now = time.time()
    hour = bucket_start(now - DAY, HOUR)
    until = bucket_start(now, MINUTE)
    queues = -(-n_series // JOBS_PER_QUEUE)
    cuts = [min(n_series, JOBS_PER_QUEUE * (queues * k // processes)) for k in range(processes + 1)]
    data = Dataset(series_keys(n_series), last_minute=until)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        parts = [
            pool.submit(_build_part, url, n_series, lo, hi, hour, until)
            for lo, hi in itertools.pairwise(cuts)
            if lo < hi
        ]
        for part in parts:
            done = part.result()
            data.batches += done.batches
            data.aggregates += done.aggregates
    storage = open_storage(url)
    try:
        builder = Builder(storage, n_series)
        builder.data = data
        builder.top_up()
        storage.prune(time.time())
        builder.write_state()
    finally:
        storage.close()
    settle(url)
    data.build_s = time.perf_counter() - t0
    return data


def settle(url: str) -> None:
    """What a database that has run for a month has had done: dead row versions vacuumed
    and statistics gathered. Right after a bulk load the planner knows nothing of the
    tables and every bucket row has dozens of dead versions, which no real server has for
    long (autovacuum and auto-analyze run on their own)."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("VACUUM ANALYZE")
    elif url.startswith("mysql"):
        import pymysql

        name = url.rsplit("/", 1)[1]
        my = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=name)
        try:
            with my.cursor() as cur:
                cur.execute("SHOW TABLES")
                tables = ", ".join(f"`{table}`" for (table,) in cur.fetchall())
                cur.execute(f"ANALYZE TABLE {tables}")
                cur.fetchall()
        finally:
            my.close()
    elif url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            lite.execute("ANALYZE")


# -- measurements ----------------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    query: str
    mode: str
    ms: list[float]
    baseline_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.ms, 0.5)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    @property
    def ratio(self) -> float:
        return self.p50 / percentile(self.baseline_ms, 0.5)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return (time.perf_counter() - t0) * 1000, result


class Live:
    """One recorder flush that adds one outcome to the current minute of some series."""

    def __init__(self, storage: Storage, series: list[SeriesKey]) -> None:
        self.storage, self.series = storage, series
        self.writer = f"bench-live-{uuid.uuid4().hex[:8]}"
        self.sequence = 0

    def flush(self) -> None:
        now = time.time()
        aggregate = Aggregate()
        outcome = JobOutcome("", "", JobStatus.succeeded, duration_s=0.2, wait_s=0.5, cpu_s=0.1)
        aggregate.add(outcome, now)
        self.sequence += 1
        minute = bucket_start(now, MINUTE)
        aggregates = {(key, minute): aggregate for key in self.series}
        if not self.storage.write(FlushBatch(self.writer, self.sequence, now, aggregates)):
            raise RuntimeError("a live flush was not applied")


#: a query run: the window it answered for and the attempts its answer counts
Run = Callable[[], tuple[Window, int]]


def measure_driver(storage: Storage, data: Dataset, args: argparse.Namespace) -> list[Timing]:
    series = data.series
    one = series[len(series) // 2]

    def overview(analytics: Analytics, name: str) -> Run:
        def run() -> tuple[Window, int]:
            window = analytics.window(name)
            summary = analytics.overview(window)
            analytics.job_summaries(window)
            return window, summary.totals.processed

        return run

    def job_series(analytics: Analytics) -> Run:
        def run() -> tuple[Window, int]:
            window = analytics.window("24h")
            points = analytics.jobs.timeseries(window, 60, one.app, one.queue, one.job)
            return window, sum(point.stats.processed for point in points)

        return run

    def read_cover(name: str) -> Callable[[], Any]:
        def run() -> Any:
            window = Analytics(storage).window(name)
            return [
                storage.read_buckets(series, span.resolution, span.start, span.end)
                for span in cover(window)
            ]

        return run

    def read_one() -> Any:
        window = Analytics(storage).window("24h")
        first = bucket_start(window.start, MINUTE)
        return storage.read_buckets([one], Resolution.minute, first, window.end)

    live = Live(storage, series[: args.live_series])
    queries: list[tuple[str, Callable[[Analytics], Run], Callable[[], Any], int]] = [
        ("overview 1h", lambda a: overview(a, "1h"), read_cover("1h"), len(live.series)),
        ("overview 24h", lambda a: overview(a, "24h"), read_cover("24h"), len(live.series)),
        ("job series 24h", job_series, read_one, int(one in live.series)),
    ]
    timings: list[Timing] = []
    runners: list[Run] = []
    for name, make, baseline, _ in queries:
        rounds = args.warmup + args.cold_runs
        base = [timed(baseline)[0] for _ in range(rounds)][args.warmup :]
        cold = [timed(make(Analytics(storage, cache=False)))[0] for _ in range(rounds)]
        timings.append(Timing(name, "cold", cold[args.warmup :], base))
        analytics = Analytics(storage)  # kept from here on, like a server's
        if analytics.cache is None:
            continue  # no WindowReads: every query reads its window whole, as cold
        run = make(analytics)
        warm = [timed(run)[0] for _ in range(args.warmup + args.runs)]
        timings.append(Timing(name, "warm", warm[args.warmup :], base))
        runners.append(run)
    if not live.series or not runners:
        return timings
    # after every static measurement: live flushes leave dead row versions behind them
    for (name, _, _, added), run, cold_timing in zip(queries, runners, timings[::2], strict=True):
        timing = Timing(name, f"live {len(live.series)}", [], cold_timing.baseline_ms)
        before = run()
        for i in range(args.warmup + args.runs):
            live.flush()
            elapsed, after = timed(run)
            if i >= args.warmup:
                timing.ms.append(elapsed)
            if after[0] == before[0] and after[1] != before[1] + added:
                raise RuntimeError(
                    f"{name}: after a flush adding {added} attempts the answer counts "
                    f"{after[1] - before[1]} more; it must see every write"
                )
            before = after
        timings.append(timing)
    order = [name for name, *_ in queries]
    return sorted(timings, key=lambda t: order.index(t.query))  # stable: cold, warm, live


# -- driving ---------------------------------------------------------------------------------


def run_driver(driver: str, args: argparse.Namespace) -> tuple[Dataset, list[Timing]]:
    with tempfile.TemporaryDirectory() as tmp, driver_url(driver, Path(tmp)) as url:
        open_storage(url, migrate=True).close()
        # SQLite takes one writer at a time: more processes would only wait
        data = build(url, args.series, 1 if driver == "sqlite" else args.processes)
        print(
            f"  {driver}: wrote {data.aggregates:,} aggregates in {data.batches} batches "
            f"in {data.build_s:.0f} s",
            flush=True,
        )
        storage = open_storage(url)
        try:
            return data, measure_driver(storage, data, args)
        finally:
            storage.close()


def print_table(driver: str, data: Dataset, timings: list[Timing]) -> None:
    print(f"\n{driver}: {len(data.series):,} series")
    header = (
        f"{'query':<16}{'mode':<10}{'runs':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
        f"{'read buckets ms':>17}{'ratio':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for t in timings:
        base = percentile(t.baseline_ms, 0.5)
        print(
            f"{t.query:<16}{t.mode:<10}{len(t.ms):>5}{t.p50:>9.1f}{t.p95:>9.1f}{max(t.ms):>9.1f}"
            f"{base:>17.1f}{t.ratio:>7.3f}x"
        )


def verdicts(results: dict[str, list[Timing]]) -> None:
    print(
        f"\ntarget: overview p95 < {TARGET_P95_MS:g} ms on {' and '.join(TARGET_DRIVERS)} "
        "(a server's repeated queries: warm)"
    )
    for driver, timings in results.items():
        for t in timings:
            if t.query.startswith("overview") and t.mode != "cold":
                ok = "ok" if t.p95 < TARGET_P95_MS else "MISSED"
                note = "" if driver in TARGET_DRIVERS else " (no target)"
                print(f"  {driver:<11}{t.query:<14}{t.mode:<10}p95 {t.p95:8.1f} ms  {ok}{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Modes: cold = Analytics(cache=False), every window read whole; warm = one\n"
            "long-lived Analytics whose cache checks storage on every query; live N = warm,\n"
            "each run after a flush to N series, answers checked to include it. Baseline:\n"
            "the bare read_buckets of the same window. Most of a run is writing the dataset\n"
            "(some 2.2 million buckets per driver at 1,000 series); --series 100 is quick.\n"
            "The module docstring describes the dataset in full.\n"
            f"Target: overview p95 < {TARGET_P95_MS:g} ms on PostgreSQL and Redis."
        ),
    )
    parser.add_argument(
        "--drivers",
        default=",".join(DRIVERS),
        help=f"comma-separated, from {','.join(DRIVERS)} (default: all)",
    )
    parser.add_argument(
        "--series",
        type=int,
        default=50 * JOBS_PER_QUEUE,
        help=f"job series, {JOBS_PER_QUEUE} per queue (1000; try 100 for a quick run)",
    )
    parser.add_argument(
        "--runs", type=int, default=20, help="timed warm and live runs per query (20)"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="processes writing the dataset (2)"
    )
    parser.add_argument(
        "--cold-runs", type=int, default=5, help="timed runs of the cold reads and baseline (5)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (2)")
    parser.add_argument(
        "--live-series",
        type=int,
        default=None,
        help="series a flush writes to before each live run (default: all; 0: no live runs)",
    )
    args = parser.parse_args(argv)
    if args.live_series is None:
        args.live_series = args.series
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if unknown := set(drivers) - set(DRIVERS):
        parser.error(f"unknown driver(s) {', '.join(sorted(unknown))}; choose from {DRIVERS}")
    results: dict[str, list[Timing]] = {}
    for driver in drivers:
        print(f"{driver}: building ...", flush=True)
        try:
            data, timings = run_driver(driver, args)
        except Skip as exc:
            print(f"{driver}: skipped: {exc}")
            continue
        results[driver] = timings
        print_table(driver, data, timings)
    if results:
        verdicts(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
