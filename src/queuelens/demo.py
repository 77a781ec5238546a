"""``make demo``: a real workload in this process, recorded into SQLite, read back, served.

    from queuelens.demo import run_demo
    run_demo()                                    # ~8 s; writes ./queuelens-demo.db
    run_demo("sqlite:////tmp/demo.db", seconds=2)  # 0 when stored counts equal counted ones
    run_demo(serve_on=("127.0.0.1", 8000))        # then `queuelens serve` on it until Ctrl-C

Nothing is simulated: worker threads pull jobs from in-process :class:`queue.Queue` objects
and run real functions (hashing, lognormal sleeps, allocations, exceptions at known rates).
Each attempt is measured the way an integration measures it -- wait from the timestamp taken
at enqueue, duration with ``perf_counter`` around the call only, CPU with ``thread_time``,
memory from the process RSS -- and handed to :meth:`Recorder.record`. The summary is read
back from storage, and the workload's own counts are printed next to it.
"""

from __future__ import annotations

import hashlib
import io
import math
import queue
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psutil

from queuelens.model import Aggregate, JobOutcome, JobStatus, Resolution, bucket_start
from queuelens.recorder import Recorder, RecorderStats
from queuelens.storage import StorageError, open_storage

__all__ = ["DemoResult", "run_demo", "run_workload", "serve_demo"]

DEFAULT_DB = "queuelens-demo.db"
#: (queue, job) -> count per status
Counts = dict[tuple[str, str], dict[JobStatus, int]]

_ARRIVALS_PER_S = 120.0
_BURST = 60  # send_digest jobs enqueued at once
_MAX_ATTEMPTS = 3
_PASSWORD = b"correct horse battery staple"
_BLOCK = bytes(range(256)) * 256  # 64 KiB: hashlib releases the GIL on buffers this large


# -- the jobs: real work, failing at known rates -----------------------------------------------


def send_welcome_email(rng: random.Random) -> None:
    """Network-bound: a lognormal SMTP round trip (median 12 ms); 5% connection resets."""
    time.sleep(min(rng.lognormvariate(math.log(0.012), 0.6), 0.3))
    if rng.random() < 0.05:
        raise ConnectionResetError("smtp.example.net:587 reset the connection")


def send_digest(rng: random.Random) -> None:
    """Template rendering plus a send; 2% of users have no digest template."""
    body = "\n".join(f"{i:>4} {hashlib.md5(str(i).encode()).hexdigest()}" for i in range(200))
    time.sleep(min(rng.lognormvariate(math.log(0.020), 0.4), 0.3))
    if rng.random() < 0.02:
        raise KeyError(f"template 'digest_v2' is missing ({len(body)} characters rendered)")


def render_invoice_pdf(rng: random.Random) -> None:
    """CPU-bound: hash 100-600 blocks of 64 KiB; 3% of invoices are empty."""
    digest = hashlib.sha256()
    for _ in range(rng.randint(100, 600)):
        digest.update(_BLOCK)
    if rng.random() < 0.03:
        raise ValueError("invoice has no line items")


def export_csv(rng: random.Random) -> None:
    """Memory-heavy: builds a CSV of 20k-60k rows in memory before 'uploading' it."""
    out = io.StringIO()
    for i in range(rng.randint(20_000, 60_000)):
        out.write(f"{i},{i * 7 % 1000},row-{i}\n")
    time.sleep(0.005)


def hash_password(rng: random.Random) -> None:
    """CPU-bound key derivation (PBKDF2, 20k-80k rounds); never fails."""
    hashlib.pbkdf2_hmac("sha256", _PASSWORD, rng.randbytes(16), rng.randint(20_000, 80_000))


def cleanup_tmp(rng: random.Random) -> None:
    """Tiny and frequent; 10% find their file already gone."""
    time.sleep(rng.expovariate(1 / 0.001))
    if rng.random() < 0.10:
        raise FileNotFoundError(f"/tmp/upload-{rng.randint(1, 10**6)} vanished")


@dataclass(frozen=True, slots=True)
class JobSpec:
    queue: str
    name: str
    run: Callable[[random.Random], None]
    #: share of arrivals
    weight: float


JOBS = (
    JobSpec("emails", "send_welcome_email", send_welcome_email, 0.30),
    JobSpec("emails", "send_digest", send_digest, 0.15),
    JobSpec("reports.high", "render_invoice_pdf", render_invoice_pdf, 0.10),
    JobSpec("reports.high", "export_csv", export_csv, 0.05),
    JobSpec("default", "hash_password", hash_password, 0.15),
    JobSpec("default", "cleanup_tmp", cleanup_tmp, 0.25),
)
QUEUES = ("emails", "reports.high", "default")
#: each worker thread polls its queues in this priority order, as Celery/RQ workers do
WORKERS = (("emails",), ("emails",), ("reports.high", "default"), ("default", "emails"))


# -- the workload ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    spec: JobSpec
    #: time.monotonic() at enqueue: one clock for every thread, immune to wall-clock steps
    enqueued_at: float
    attempt: int = 1


class _Workload:
    """Producer, workers and the workload's own tally of what it ran."""

    def __init__(self, recorder: Recorder, seed: int) -> None:
        self.recorder = recorder
        self.seed = seed
        self.queues: dict[str, queue.Queue[_Job]] = {name: queue.Queue() for name in QUEUES}
        self.counted: Counts = {}
        self.per_status: Counter[JobStatus] = Counter()
        self.outstanding = 0  # enqueued and not yet finished, retries included
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.process = psutil.Process()

    def enqueue(self, job: _Job) -> None:
        with self.lock:
            self.outstanding += 1
        self.queues[job.spec.queue].put(job)

    def produce(self, seconds: float) -> None:
        """Poisson arrivals for ``seconds``, plus a newsletter burst every 3 s (from 1 s on),
        so that queues back up and wait times mean something."""
        rng = random.Random(self.seed)
        weights = [spec.weight for spec in JOBS]
        now = time.monotonic()
        deadline, next_burst = now + seconds, now + 1.0
        while not self.stop.wait(rng.expovariate(_ARRIVALS_PER_S)):
            now = time.monotonic()
            if now >= deadline:
                return
            self.enqueue(_Job(rng.choices(JOBS, weights)[0], now))
            if now >= next_burst:
                next_burst += 3.0
                for _ in range(_BURST):
                    self.enqueue(_Job(JOBS[1], now))

    def work(self, queue_names: tuple[str, ...], index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self.stop.is_set():
            for name in queue_names:
                try:
                    job = self.queues[name].get_nowait()
                except queue.Empty:
                    continue
                self.execute(job, rng)
                break
            else:
                self.stop.wait(0.002)  # idle: poll again soon, like a broker's short poll

    def execute(self, job: _Job, rng: random.Random) -> None:
        rss_before = self._rss_mb()
        # perf_counter last before the call and first after it: duration is the job alone
        started, cpu_started, t0 = time.monotonic(), time.thread_time(), time.perf_counter()
        error: Exception | None = None
        try:
            job.spec.run(rng)
        except Exception as exc:
            error = exc
        duration_s, cpu_s = time.perf_counter() - t0, time.thread_time() - cpu_started
        rss_after = self._rss_mb()
        status = JobStatus.succeeded if error is None else JobStatus.failed
        if isinstance(error, ConnectionError) and job.attempt < _MAX_ATTEMPTS:
            status = JobStatus.retried
        # RSS is per process, so with threads this is best effort: it includes whatever the
        # other threads allocated meanwhile.
        peak_mb = delta_mb = None
        if rss_before is not None and rss_after is not None:
            peak_mb, delta_mb = max(rss_before, rss_after), rss_after - rss_before
        self.recorder.record(
            JobOutcome(
                queue=job.spec.queue,
                job=job.spec.name,
                status=status,
                duration_s=duration_s,
                wait_s=started - job.enqueued_at,
                cpu_s=cpu_s,
                memory_peak_mb=peak_mb,
                memory_delta_mb=delta_mb,
                exception_type=type(error).__name__ if error else None,
                exception_message=str(error) if error else None,
                finished_at=time.time(),
            )
        )
        if status is JobStatus.retried:
            self.enqueue(_Job(job.spec, time.monotonic(), job.attempt + 1))
        with self.lock:
            by_status = self.counted.setdefault((job.spec.queue, job.spec.name), {})
            by_status[status] = by_status.get(status, 0) + 1
            self.per_status[status] += 1
            self.outstanding -= 1

    def _rss_mb(self) -> float | None:
        try:
            return self.process.memory_info().rss / 2**20
        except psutil.Error:
            return None

    def progress(self, elapsed_s: float) -> str:
        with self.lock:
            done = sum(self.per_status.values())
            failed, retried = self.per_status[JobStatus.failed], self.per_status[JobStatus.retried]
        depth = "  ".join(f"{name} {self.queues[name].qsize()}" for name in QUEUES)
        counts = f"done {done:6d}  failed {failed:4d}  retried {retried:4d}"
        return f"[{elapsed_s:5.1f}s] {counts}  in queue: {depth}"


# -- running and reading back ------------------------------------------------------------------


@dataclass(slots=True)
class DemoResult:
    """What one demo run counted itself and what storage returned for the same run."""

    storage_url: str
    app: str
    started_at: float
    ended_at: float
    counted: Counts
    #: (queue, job) -> the run's minute buckets read back from storage, merged
    stored: dict[tuple[str, str], Aggregate]
    recorder: RecorderStats

    def stored_counts(self) -> Counts:
        return {
            key: {status: n for status, n in aggregate.counts.items() if n}
            for key, aggregate in self.stored.items()
        }

    @property
    def matches(self) -> bool:
        """True when storage holds exactly the attempts the workload ran, per status."""
        return self.stored_counts() == self.counted


def run_workload(
    storage_url: str | None = None,
    *,
    seconds: float = 8.0,
    out: TextIO = sys.stdout,
    seed: int | None = None,
) -> DemoResult:
    """Run the workload for ``seconds`` (then drain), print progress, return both tallies.

    Every run records under an app of its own (``demo-<id>``), so runs that share a database
    and a minute never mix. Raises :class:`StorageError` when the storage cannot be opened.
    """
    url = storage_url or f"sqlite:///{Path(DEFAULT_DB).resolve()}"
    app = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    storage = open_storage(url)
    recorder = Recorder(storage, app=app, framework="demo", flush_interval_s=1.0)
    workload = _Workload(recorder, seed if seed is not None else random.randrange(2**32))
    print(
        f"queuelens demo: {len(WORKERS)} worker threads, {len(JOBS)} jobs on queues "
        f"{', '.join(QUEUES)}; ~{_ARRIVALS_PER_S:.0f} jobs/s for {seconds:g}s",
        file=out,
    )
    started_at, t0 = time.time(), time.monotonic()
    threads = [threading.Thread(target=workload.produce, args=(seconds,), name="demo-producer")]
    threads += [
        threading.Thread(target=workload.work, args=(names, i), name=f"demo-worker-{i}")
        for i, names in enumerate(WORKERS)
    ]
    try:
        for thread in threads:
            thread.start()
        drain_deadline = t0 + seconds + max(5.0, seconds)  # bounded even if workers fall behind
        next_tick = t0 + 1.0
        while threads[0].is_alive() or workload.outstanding > 0:
            now = time.monotonic()
            if now >= drain_deadline:
                print("  (drain time is up; jobs still queued are not run)", file=out)
                break
            if now >= next_tick:
                print("  " + workload.progress(now - t0), file=out, flush=True)
                next_tick += 1.0
            time.sleep(0.02)
    finally:
        workload.stop.set()
        for thread in threads:
            thread.join()
        recorder.close()
        storage.close()
    ended_at = time.time()
    print("  " + workload.progress(time.monotonic() - t0) + "  (finished)", file=out)
    return DemoResult(
        url, app, started_at, ended_at, workload.counted,
        _read_back(url, app, started_at, ended_at), recorder.stats(),
    )  # fmt: skip


def _read_back(url: str, app: str, start: float, end: float) -> dict[tuple[str, str], Aggregate]:
    """The run's minute buckets from a fresh connection, merged per series."""
    storage = open_storage(url)
    try:
        series = storage.list_jobs(app)
        minute = Resolution.minute
        buckets = storage.read_buckets(series, minute, bucket_start(start, minute), end + 60)
    finally:
        storage.close()
    merged: dict[tuple[str, str], Aggregate] = {}
    for key, per_minute in buckets.items():
        total = merged.setdefault((key.queue, key.job), Aggregate())
        for aggregate in per_minute.values():
            total.merge(aggregate)
    return merged


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _tally(counts: Counts) -> str:
    per_status: Counter[JobStatus] = Counter()
    for by_status in counts.values():
        per_status.update(by_status)
    parts = ", ".join(f"{per_status[s]} {s.value}" for s in JobStatus if per_status[s])
    return f"{sum(per_status.values())} attempts ({parts or 'none'})"


def print_summary(result: DemoResult, out: TextIO) -> None:
    """The table per queue and job, from storage, then both tallies side by side."""
    header = (
        f"{'queue':<13}{'job':<20}{'processed':>10}{'failed':>8}{'retried':>8}"
        f"{'dur p50':>10}{'p95':>8}{'p99':>8}{'wait p50':>10}{'p95':>8}"
    )
    print(f"\nread back from storage (minute buckets, merged), times in ms:\n{header}", file=out)
    print("-" * len(header), file=out)
    order = {(spec.queue, spec.name): i for i, spec in enumerate(JOBS)}
    for queue_name, job in sorted(result.stored, key=lambda k: order.get(k, len(order))):
        agg = result.stored[queue_name, job]
        dur, wait = agg.duration, agg.wait
        print(
            f"{queue_name:<13}{job:<20}{agg.total:>10}{agg.count(JobStatus.failed):>8}"
            f"{agg.count(JobStatus.retried):>8}{_ms(dur.quantile(0.5)):>10}"
            f"{_ms(dur.quantile(0.95)):>8}{_ms(dur.quantile(0.99)):>8}"
            f"{_ms(wait.quantile(0.5)):>10}{_ms(wait.quantile(0.95)):>8}",
            file=out,
        )
    _print_health(result, out)
    print(f"\nstorage holds:       {_tally(result.stored_counts())}", file=out)
    print(f"workload counted:    {_tally(result.counted)}", file=out)
    verdict = "yes, exactly" if result.matches else "NO -- see the recorder line below"
    print(f"stored == counted:   {verdict}", file=out)
    stats = result.recorder
    print(
        f"recorder:            {stats.recorded} recorded, {stats.dropped} dropped, "
        f"{stats.flushes} flushes, {stats.flush_failures} failed flushes"
        + (f" (last error: {stats.last_error})" if stats.last_error else ""),
        file=out,
    )
    print(
        f"\ndata: {result.storage_url} (app {result.app!r}); `make demo` serves it, as does "
        f"`queuelens serve --storage {result.storage_url}`.",
        file=out,
    )


def _print_health(result: DemoResult, out: TextIO) -> None:
    """Per queue, what ``queuelens.analytics`` makes of the run: the numbers every surface
    shows, and the health reasons behind each status."""
    from queuelens.analytics import Analytics

    storage = open_storage(result.storage_url)
    try:
        analytics = Analytics(storage)
        window = analytics.window(since=result.started_at, until=result.ended_at)
        summaries = analytics.queue_summaries(window, app=result.app)
    finally:
        storage.close()
    print("\nqueue health (queuelens.analytics, the numbers every surface shows):", file=out)
    for summary in summaries:
        stats, health = summary.stats, summary.health
        wait = stats.wait_ms.p95
        line = (
            f"  {summary.queue:<13}{health.status.value:<9}{health.score:>4}/100  "
            f"{stats.throughput_per_min:8.0f} jobs/min  failure rate {stats.failure_rate:6.1%}  "
            f"wait p95 {'-' if wait is None else f'{wait:.0f} ms'}"
        )
        print(line, file=out)
        for reason in health.reasons:
            print(f"      {reason.severity.value}: {reason.message}", file=out)


def run_demo(
    storage_url: str | None = None,
    *,
    seconds: float = 8.0,
    out: TextIO = sys.stdout,
    serve_on: tuple[str, int] | None = None,
    toml_path: str | Path | None = None,
) -> int:
    """Run the demo and print its summary; exit code 0, 1 if storage disagrees, 2 on error.

    With ``serve_on=(host, port)``, then serve the data (:func:`serve_demo`) until Ctrl-C.
    """
    try:
        result = run_workload(storage_url, seconds=seconds, out=out)
    except StorageError as exc:
        print(f"queuelens demo: error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, out)
    if serve_on is not None:
        serve_demo(result.storage_url, *serve_on, out=out, toml_path=toml_path)
    return 0 if result.matches else 1


def serve_demo(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    out: TextIO = sys.stdout,
    toml_path: str | Path | None = None,
) -> None:
    """Print the URL to open, then run ``queuelens serve`` on ``storage_url`` until Ctrl-C."""
    from queuelens.cli.serve import load_api_serve
    from queuelens.config import load_settings

    serve = load_api_serve()  # before printing a URL that would never answer
    settings = load_settings(toml_path, None, storage_url=storage_url)
    base = f"http://{host}:{port}"
    print(
        f"\nqueuelens serve: open {base}/docs to explore the API on this data "
        f"(overview: {base}/api/v1/overview?window=1h, metrics: {base}/metrics); "
        "Ctrl-C to stop",
        file=out,
        flush=True,
    )
    try:
        serve(settings, host=host, port=port, toml_path=toml_path)
    except KeyboardInterrupt:  # Ctrl-C is how the demo ends
        return


if __name__ == "__main__":
    raise SystemExit(run_demo())
