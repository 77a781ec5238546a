"""What queuelens costs a real worker: throughput of no-op jobs, and worker memory.

    .venv/bin/python benchmarks/worker_overhead.py                 # Celery and RQ, 5,000 jobs
    .venv/bin/python benchmarks/worker_overhead.py --jobs 1000 --frameworks rq

For each framework the same no-op jobs run (a) uninstrumented, (b) with queuelens and,
for Celery, (c) with task events on (``-E``, which Flower and celery-exporter need).
Throughput is jobs / (last job end - first job start), so worker start-up is excluded.
Worker RSS (the worker process and its pool children) is read just before it stops.
Targets: queuelens costs at most 3% of throughput and less than events do; it adds at
most 10 MB of RSS per worker process. Needs Redis on 127.0.0.1:6379 (db 5 is used).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BROKER = "redis://127.0.0.1:6379/5"


@dataclass
class Run:
    label: str
    jobs_per_s: float
    rss_mb: float
    processes: int


def _env(mode: str, storage: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{HERE}{os.pathsep}{env.get('PYTHONPATH', '')}",
        BENCH_MODE=mode,
        BENCH_BROKER=BROKER,
        BENCH_PREFIX=prefix,
        QUEUELENS_STORAGE_URL=storage,
        QUEUELENS_APP="bench",
    )
    return env


def _number(client: redis.Redis, key: str) -> float:
    raw: Any = client.get(key)
    return float(raw or 0)


def _wait_done(client: redis.Redis, prefix: str, jobs: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _number(client, f"{prefix}:done") >= jobs:
            first = _number(client, f"{prefix}:first")
            last = _number(client, f"{prefix}:last")
            return jobs / max(last - first, 1e-9)
        time.sleep(0.05)
    raise SystemExit(f"timed out: {client.get(prefix + ':done')} of {jobs} jobs done")


def _tree_rss_mb(pid: int) -> tuple[float, int]:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes) / 2**20, len(processes)
    except psutil.Error:
        return float("nan"), 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def run_celery(mode: str, jobs: int, storage: str, events: bool) -> Run:
    prefix = f"qlbench:celery:{mode}:{events}:{time.time_ns()}"
    client = redis.Redis.from_url(BROKER)
    queue = prefix.replace(":", "-")
    env = _env(mode, storage, prefix)
    sender = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from worker_bench_apps import celery_app, celery_noop\n"
            f"for _ in range({jobs}): celery_noop.apply_async(queue={queue!r})",
        ],
        env=env,
        check=True,
    )
    del sender
    command = [
        str(BIN / "celery"),
        "-A",
        "worker_bench_apps:celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "-Q",
        queue,
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if events:
        command.append("-E")
    worker = subprocess.Popen(command, env=env, cwd=HERE)
    try:
        rate = _wait_done(client, prefix, jobs, 600)
        rss, count = _tree_rss_mb(worker.pid)
    finally:
        _stop(worker)
        client.delete(f"{prefix}:done", f"{prefix}:first", f"{prefix}:last", queue)
    label = {"plain": "celery, uninstrumented", "queuelens": "celery + queuelens"}[mode]
    return Run(label + (" + events (-E)" if events else ""), rate, rss, count)


def run_rq(mode: str, jobs: int, storage: str) -> Run:
    prefix = f"qlbench:rq:{mode}:{time.time_ns()}"
    client = redis.Redis.from_url(BROKER)
    queue = prefix.replace(":", "-")
    env = _env(mode, storage, prefix)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import redis; from rq import Queue\n"
            f"q = Queue({queue!r}, connection=redis.Redis.from_url({BROKER!r}))\n"
            f"for _ in range({jobs}): q.enqueue('worker_bench_apps.noop')",
        ],
        env=env,
        check=True,
    )
    worker_class = "rq.worker.Worker" if mode == "plain" else "queuelens.integrations.rq.Worker"
    worker = subprocess.Popen(
        [
            str(BIN / "rq"),
            "worker",
            "--url",
            BROKER,
            "-w",
            worker_class,
            "--burst",
            "--logging_level",
            "WARNING",
            queue,
        ],
        env=env,
        cwd=HERE,
    )
    try:
        rate = _wait_done(client, prefix, jobs, 1200)
        rss, count = _tree_rss_mb(worker.pid)
    finally:
        _stop(worker)
        for key in client.scan_iter(match=f"rq:*{queue}*", count=1000):
            client.delete(key)
        client.delete(f"{prefix}:done", f"{prefix}:first", f"{prefix}:last")
    label = {"plain": "rq, uninstrumented", "queuelens": "rq + queuelens"}[mode]
    return Run(label, rate, rss, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run (5000)")
    parser.add_argument("--frameworks", default="celery,rq", help="celery,rq (default both)")
    args = parser.parse_args()
    frameworks = {f.strip() for f in args.frameworks.split(",")}
    results: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = os.environ.get("BENCH_STORAGE") or f"sqlite:///{Path(tmp) / 'bench.db'}"
        if "celery" in frameworks:
            plain = run_celery("plain", args.jobs, storage, events=False)
            instrumented = run_celery("queuelens", args.jobs, storage, events=False)
            events = run_celery("plain", args.jobs, storage, events=True)
            results += [plain, instrumented, events]
            _report("celery", plain, instrumented, events)
        if "rq" in frameworks:
            plain = run_rq("plain", args.jobs, storage)
            instrumented = run_rq("queuelens", args.jobs, storage)
            results += [plain, instrumented]
            _report("rq", plain, instrumented, None)
    print(f"\n{'run':<40} {'jobs/s':>10} {'RSS MB':>10} {'processes':>10}")
    for run in results:
        print(f"{run.label:<40} {run.jobs_per_s:>10.1f} {run.rss_mb:>10.1f} {run.processes:>10}")


def _report(name: str, plain: Run, instrumented: Run, events: Run | None) -> None:
    cost = 1 - instrumented.jobs_per_s / plain.jobs_per_s
    added = (instrumented.rss_mb - plain.rss_mb) / max(plain.processes, 1)
    verdict = "meets" if cost <= 0.03 else "MISSES"
    print(
        f"{name}: queuelens costs {cost:+.1%} of throughput ({verdict} <= 3%); "
        f"adds {added:.1f} MB RSS per worker process "
        f"({'meets' if added <= 10 else 'MISSES'} <= 10 MB)"
    )
    if events is not None:
        events_cost = 1 - events.jobs_per_s / plain.jobs_per_s
        print(
            f"{name}: events (-E) cost {events_cost:+.1%}; queuelens "
            f"{'costs less' if cost < events_cost else 'DOES NOT cost less'} than events"
        )


if __name__ == "__main__":
    main()
