"""Cost of ``Recorder.record()`` per job, next to prometheus_client doing the least it can.

    .venv/bin/python benchmarks/hot_path.py                     # 9 rounds of 100,000 jobs
    .venv/bin/python benchmarks/hot_path.py --jobs 200000 --rounds 15
    .venv/bin/python benchmarks/hot_path.py --profile           # where record() spends its time

Every variant runs in the same process, interleaved round by round, over the same pre-built
job outcomes (50 series, lognormal durations, 5% failures with an exception):

* ``bare call``: a Python function that does nothing -- the floor of any per-job hook;
* ``prometheus, pre-resolved``: ``Histogram.observe(duration)`` + ``Counter.inc()`` on
  children whose ``.labels(...)`` was resolved before timing (the cheapest possible use);
* ``prometheus, labels per call``: the same, resolving ``.labels(queue, job[, status])`` for
  each job, as a hook that does not cache children has to;
* ``prometheus, full payload``: everything the recorder keeps, as prometheus metrics on
  pre-resolved children (histograms of duration, wait and CPU, summaries of memory peak and
  increase, the attempt counter and an exception counter) -- the like-for-like comparison;
* ``record(), duration only``: outcomes carrying just status and duration (what the
  prometheus pair gets);
* ``record(), full outcome``: duration, wait, CPU, memory and exception -- what the
  integrations send.

The recorder writes to a SQLite file in a temporary directory with a flush interval of one
hour, so no flush runs inside a timed loop (the flusher thread sleeps). The garbage collector
is paused while a loop is timed, as ``timeit`` does. Figures are medians in ns per job,
loop overhead included (the bare call shows how much that is).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

from queuelens.model import JobOutcome, JobStatus
from queuelens.recorder import Recorder
from queuelens.storage import open_storage

TARGET_RATIO = 2.0

Loop = Callable[[], None]


def make_outcomes(n: int, *, full: bool, seed: int = 1) -> list[JobOutcome]:
    """``n`` outcomes over 5 queues x 10 jobs; ``full`` adds wait, CPU, memory, exceptions."""
    rng = random.Random(seed)
    series = [(f"queue{q}", f"app.tasks.job{j}") for q in range(5) for j in range(10)]
    outcomes = []
    for _ in range(n):
        queue, job = rng.choice(series)
        failed = rng.random() < 0.05
        duration_s = rng.lognormvariate(-3.0, 1.2)
        outcome = JobOutcome(
            queue, job, JobStatus.failed if failed else JobStatus.succeeded, duration_s
        )
        if full:
            outcome.wait_s = rng.expovariate(5.0)
            outcome.cpu_s = duration_s * rng.random()
            outcome.memory_peak_mb = 80.0 + rng.random() * 40.0
            outcome.memory_delta_mb = rng.random() * 2.0
            if failed:
                outcome.exception_type = "ConnectionError"
                outcome.exception_message = "smtp.example.net:587 refused the connection"
        outcomes.append(outcome)
    return outcomes


def make_loops(recorder: Recorder, n: int) -> dict[str, Loop]:
    """One closure per variant, each running over ``n`` outcomes when called."""
    full = make_outcomes(n, full=True)
    lean = make_outcomes(n, full=False)
    registry = CollectorRegistry()
    duration = Histogram(
        "job_duration_seconds", "Job execution time", ["queue", "job"], registry=registry
    )
    jobs = Counter("jobs", "Job attempts", ["queue", "job", "status"], registry=registry)
    children = [
        (duration.labels(o.queue, o.job), jobs.labels(o.queue, o.job, o.status)) for o in full
    ]
    # The same measurements the recorder keeps, as prometheus metrics (memory as summaries,
    # which in prometheus_client keep only count and sum).
    wait = Histogram("job_wait_seconds", "Wait", ["queue", "job"], registry=registry)
    cpu = Histogram("job_cpu_seconds", "CPU", ["queue", "job"], registry=registry)
    peak = Summary("job_memory_peak_mb", "Peak RSS", ["queue", "job"], registry=registry)
    delta = Summary("job_memory_delta_mb", "RSS increase", ["queue", "job"], registry=registry)
    errors = Counter("job_errors", "Exceptions", ["queue", "job", "type"], registry=registry)
    full_children = [
        (
            *pair,
            wait.labels(o.queue, o.job),
            cpu.labels(o.queue, o.job),
            peak.labels(o.queue, o.job),
            delta.labels(o.queue, o.job),
            errors.labels(o.queue, o.job, o.exception_type) if o.exception_type else None,
        )
        for o, pair in zip(full, children, strict=True)
    ]

    def do_nothing(outcome: JobOutcome) -> None:
        return None

    def bare_call() -> None:
        for outcome in full:
            do_nothing(outcome)

    def prometheus_pre_resolved() -> None:
        for outcome, (histogram, counter) in zip(full, children, strict=True):
            histogram.observe(outcome.duration_s)  # type: ignore[arg-type]  # always set here
            counter.inc()

    def prometheus_full_payload() -> None:
        for o, (h_dur, c_jobs, h_wait, h_cpu, s_peak, s_delta, c_err) in zip(
            full, full_children, strict=True
        ):
            h_dur.observe(o.duration_s)  # type: ignore[arg-type]
            c_jobs.inc()
            h_wait.observe(o.wait_s)  # type: ignore[arg-type]
            h_cpu.observe(o.cpu_s)  # type: ignore[arg-type]
            s_peak.observe(o.memory_peak_mb)  # type: ignore[arg-type]
            s_delta.observe(o.memory_delta_mb)  # type: ignore[arg-type]
            if c_err is not None:
                c_err.inc()

    def prometheus_labels_per_call() -> None:
        for outcome in full:
            histogram = duration.labels(outcome.queue, outcome.job)
            histogram.observe(outcome.duration_s)  # type: ignore[arg-type]
            jobs.labels(outcome.queue, outcome.job, outcome.status).inc()

    record = recorder.record

    def record_duration_only() -> None:
        for outcome in lean:
            record(outcome)

    def record_full() -> None:
        for outcome in full:
            record(outcome)

    return {
        "bare call (floor)": bare_call,
        "prometheus, pre-resolved labels": prometheus_pre_resolved,
        "prometheus, labels per call": prometheus_labels_per_call,
        "prometheus, full payload, pre-res.": prometheus_full_payload,
        "record(), duration only": record_duration_only,
        "record(), full outcome": record_full,
    }


def time_loop(loop: Loop, n: int) -> float:
    """ns per job of one run of ``loop``, with the garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        loop()
        return (time.perf_counter_ns() - started) / n
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per round (100000)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per variant (9)")
    parser.add_argument("--profile", action="store_true", help="cProfile one round of record()")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'hot_path.db'}")
        recorder = Recorder(storage, app="bench", flush_interval_s=3600.0)
        try:
            loops = make_loops(recorder, args.jobs)
            for loop in loops.values():  # warm up: first aggregates, label children, caches
                loop()
            samples: dict[str, list[float]] = {name: [] for name in loops}
            names = list(loops)
            for round_no in range(args.rounds):
                # rotate the order so no variant always runs right after another one
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    samples[name].append(time_loop(loops[name], args.jobs))
            stats = recorder.stats()
            if args.profile:
                profile(loops["record(), full outcome"])
        finally:
            recorder.close()
            storage.close()

    medians = {name: statistics.median(values) for name, values in samples.items()}
    print_table(medians, samples, args.jobs, args.rounds)
    print(
        f"\nrecorder: {stats.recorded:,} outcomes recorded, {stats.flushes} flushes during timing"
    )
    return 0


def print_table(
    medians: dict[str, float], samples: dict[str, list[float]], jobs: int, rounds: int
) -> None:
    print(f"Recorder.record() vs prometheus_client, {rounds} rounds x {jobs:,} jobs")
    print(f"python {sys.version.split()[0]}; medians in ns per job, loop overhead included\n")
    print(f"{'variant':<34}{'median ns':>11}{'min':>9}{'max':>9}")
    for name, median in medians.items():
        values = samples[name]
        print(f"{name:<34}{median:>11.0f}{min(values):>9.0f}{max(values):>9.0f}")
    record = medians["record(), full outcome"]
    lean = medians["record(), duration only"]
    print()
    for pair in ("prometheus, pre-resolved labels", "prometheus, labels per call"):
        ratio, lean_ratio = record / medians[pair], lean / medians[pair]
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(
            f"record() / {pair}: {ratio:.2f}x full, {lean_ratio:.2f}x duration only "
            f"-- {verdict} the <= {TARGET_RATIO:g}x target"
        )
    same = medians["prometheus, full payload, pre-res."]
    print(f"record(), full outcome / prometheus, full payload: {record / same:.2f}x")


def profile(loop: Loop) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(loop)
    print("\ncProfile of one round of record(), full outcome (top 12 by own time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    raise SystemExit(main())
