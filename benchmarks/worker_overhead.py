"""What queuelens costs a real worker: throughput of no-op jobs, and worker memory.

    .venv/bin/python benchmarks/worker_overhead.py                  # Celery and RQ
    .venv/bin/python benchmarks/worker_overhead.py --frameworks rq --jobs 1000 --rounds 3
    BENCH_STORAGE=redis://127.0.0.1:6379/6 .venv/bin/python benchmarks/worker_overhead.py

For each framework the same no-op jobs run (a) uninstrumented, (b) with queuelens and, for
Celery, (c) with task events on (``-E``, which Flower and celery-exporter need). Runs are
interleaved: every round runs each variant once, in an order that reverses from one round
to the next, so drift in the machine's speed falls on all variants alike. Throughput is
jobs / (last job end - first job start), so worker start-up is excluded. The cost of a
variant is ``1 - its jobs/s / uninstrumented jobs/s`` within a round; its median over the
rounds is reported with the lowest and highest. So is the CPU time the worker's processes
spend per job, which other load on the machine disturbs far less than throughput.

Memory is read once per run, when half the jobs are done, for the worker's main process and
each pool process (Celery prefork; RQ's work horses live one job each and are not counted):
RSS, and USS / PSS from ``/proc/<pid>/smaps``. RSS counts pages a pool process shares with
its parent in full, in each process; USS is what the process alone holds (what stopping it
would free) and PSS splits shared pages between their sharers.

The storage (default: a new SQLite file; or ``BENCH_STORAGE``) is migrated here first, as a
deployment would, so workers do not pay for a one-off migration. Targets (issue 3):
queuelens costs at most 3% of throughput and less than events do; it adds at most 10 MB per
worker process. Needs Redis on 127.0.0.1:6379 (db 5 is the broker; ``BENCH_BROKER`` picks
another, e.g. a Redis server of its own, which nothing else on the machine slows down).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from queuelens.storage import open_storage, redact_url

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/5")
#: RSS, USS and PSS in MB
Memory = tuple[float, float, float]


@dataclass
class Run:
    """One run of one variant."""

    jobs_per_s: float
    #: CPU time of the worker's processes per job (ms), from 10% to 100% of the jobs done
    cpu_ms_per_job: float
    main: Memory
    #: one entry per pool process (Celery prefork); empty for RQ
    pool: list[Memory] = field(default_factory=list)


@dataclass(frozen=True)
class Variant:
    label: str
    run: Callable[[int, str], Run]


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


def _memory_mb(process: psutil.Process) -> Memory:
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20, info.pss / 2**20


def _sample(root_pid: int, pool_children: bool) -> tuple[Memory, list[Memory]]:
    root = psutil.Process(root_pid)
    if pool_children:
        return _memory_mb(root), [_memory_mb(child) for child in root.children()]
    # An RQ worker: read it between two horses, whose pages would otherwise look shared.
    for _ in range(1000):
        if not root.children():
            memory = _memory_mb(root)
            if not root.children():
                return memory, []
        time.sleep(0.001)
    return _memory_mb(root), []


def _tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of a worker: its own, its reaped children's (RQ horses) and its live
    children's (pool processes)."""
    root = psutil.Process(root_pid)
    own = root.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in root.children():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def _wait_done(
    client: redis.Redis, prefix: str, jobs: int, timeout_s: float, worker_pid: int, pool: bool
) -> Run:
    """Throughput and CPU per job once all jobs ran; memory read when half of them had.

    CPU per job counts from the moment 10% of the jobs are done, so that start-up (imports,
    forking the pool) is left out; unlike throughput, other load on the machine barely
    changes it.
    """
    deadline = time.monotonic() + timeout_s
    memory: tuple[Memory, list[Memory]] | None = None
    cpu_start: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        done = _number(client, f"{prefix}:done")
        if cpu_start is None and done >= jobs / 10:
            cpu_start = (_tree_cpu_s(worker_pid), _number(client, f"{prefix}:done"))
        if memory is None and done >= jobs / 2:
            memory = _sample(worker_pid, pool)
        if done >= jobs:
            cpu_end = _tree_cpu_s(worker_pid)
            first = _number(client, f"{prefix}:first")
            last = _number(client, f"{prefix}:last")
            main, children = memory or _sample(worker_pid, pool)
            cpu_s, counted = cpu_start or (0.0, 0.0)
            cpu_ms = 1000 * (cpu_end - cpu_s) / max(jobs - counted, 1)
            return Run(jobs / max(last - first, 1e-9), cpu_ms, main, children)
        time.sleep(0.02)
    raise SystemExit(f"timed out: {client.get(prefix + ':done')} of {jobs} jobs done")


def _stop(process: subprocess.Popen[bytes], exits_itself: bool = False) -> None:
    if exits_itself:
        try:
            process.wait(30)
            return
        except subprocess.TimeoutExpired:
            pass
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _forget(client: redis.Redis, prefix: str, queue: str) -> None:
    client.delete(f"{prefix}:done", f"{prefix}:first", f"{prefix}:last")
    for key in client.scan_iter(match=f"*{queue}*", count=1000):
        client.delete(key)


def run_celery(mode: str, events: bool, jobs: int, storage: str) -> Run:
    prefix = f"qlbench:celery:{mode}:{events}:{time.time_ns()}"
    client = redis.Redis.from_url(BROKER)
    queue = prefix.replace(":", "-")
    env = _env(mode, storage, prefix)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from worker_bench_apps import celery_noop\n"
            f"for _ in range({jobs}): celery_noop.apply_async(queue={queue!r})",
        ],
        env=env,
        check=True,
    )
    command = [
        str(BIN / "celery"),
        "--quiet",  # no banner
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
        return _wait_done(client, prefix, jobs, 600, worker.pid, pool=True)
    finally:
        _stop(worker)
        _forget(client, prefix, queue)


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
    command = [str(BIN / "rq"), "worker", "--url", BROKER, "-w", worker_class, "--burst"]
    worker = subprocess.Popen([*command, "--logging_level", "WARNING", queue], env=env, cwd=HERE)
    try:
        return _wait_done(client, prefix, jobs, 1800, worker.pid, pool=False)
    finally:
        _stop(worker, exits_itself=True)  # --burst: it leaves when the queue is empty
        _forget(client, prefix, queue)


def run_rounds(
    name: str, variants: Sequence[Variant], jobs: int, rounds: int, storage: str
) -> None:
    runs: dict[str, list[Run]] = {variant.label: [] for variant in variants}
    for number in range(rounds):
        order = variants if number % 2 == 0 else list(reversed(variants))
        for variant in order:
            runs[variant.label].append(variant.run(jobs, storage))
        rates = "  ".join(
            f"{v.label} {runs[v.label][-1].jobs_per_s:.1f} jobs/s "
            f"{runs[v.label][-1].cpu_ms_per_job:.3f} CPU ms/job"
            for v in variants
        )
        load = os.getloadavg()[0]  # other work on the machine shows here, and in the spread
        print(f"{name} round {number + 1}/{rounds} (load {load:.1f}): {rates}", flush=True)
    _report(name, variants, runs, jobs, storage)


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)} .. " + (
        f"{format(max(values), fmt)})"
    )


def _report(
    name: str, variants: Sequence[Variant], runs: dict[str, list[Run]], jobs: int, storage: str
) -> None:
    rounds = len(next(iter(runs.values())))
    print(f"\n== {name}: {rounds} rounds of {jobs:,} no-op jobs; storage {redact_url(storage)}")
    print(f"{'variant':<24} {'jobs/s: median (min .. max)':>36} {'CPU ms/job':>30}")
    for variant in variants:
        rates = [run.jobs_per_s for run in runs[variant.label]]
        cpu = [run.cpu_ms_per_job for run in runs[variant.label]]
        print(f"{variant.label:<24} {_spread(rates, '.1f'):>36} {_spread(cpu, '.3f'):>30}")
    base = runs[variants[0].label]
    costs: dict[str, list[float]] = {}
    for variant in variants[1:]:
        pairs = list(zip(runs[variant.label], base, strict=True))
        costs[variant.label] = [1 - run.jobs_per_s / plain.jobs_per_s for run, plain in pairs]
        cpu_costs = [run.cpu_ms_per_job / plain.cpu_ms_per_job - 1 for run, plain in pairs]
        print(
            f"cost of {variant.label:<16} {_spread(costs[variant.label], '+.1%'):>36} "
            f"{_spread(cpu_costs, '+.1%'):>30}"
        )
    cost = statistics.median(costs["queuelens"])
    print(f"{name}: queuelens costs {cost:+.1%} of throughput: {_verdict(cost <= 0.03)} <= 3%")
    if "events (-E)" in costs:
        events = statistics.median(costs["events (-E)"])
        cheaper = cost < events
        print(f"{name}: events cost {events:+.1%}: queuelens {_verdict(cheaper)} costing less")

    print(f"\nmemory per process, MB (median over rounds){'RSS':>14} {'USS':>8} {'PSS':>8}")
    roles: list[tuple[str, Callable[[Run], list[Memory]]]] = [("main process", _main)]
    if any(run.pool for run in base):
        roles.append(("pool process (mean)", _pool))
    medians: dict[tuple[str, str], Memory] = {}
    for role, pick in roles:
        for variant in variants:
            per_run = [_mean(pick(run)) for run in runs[variant.label] if pick(run)]
            memory = medians[role, variant.label] = _median_memory(per_run)
            label = f"{role}, {variant.label}"
            print(f"  {label:<52} {memory[0]:>8.1f} {memory[1]:>8.1f} {memory[2]:>8.1f}")
    for role, _ in roles:
        plain, instrumented = medians[role, variants[0].label], medians[role, "queuelens"]
        added = [b - a for a, b in zip(plain, instrumented, strict=True)]
        print(
            f"{name}, {role}: queuelens adds RSS {added[0]:+.1f} MB "
            f"({_verdict(added[0] <= 10)} <= 10 MB), USS {added[1]:+.1f} MB "
            f"({_verdict(added[1] <= 10)}), PSS {added[2]:+.1f} MB"
        )
    print()


def _main(run: Run) -> list[Memory]:
    return [run.main]


def _pool(run: Run) -> list[Memory]:
    return run.pool


def _mean(memories: Sequence[Memory]) -> Memory:
    rss, uss, pss = (statistics.fmean(values) for values in zip(*memories, strict=True))
    return rss, uss, pss


def _median_memory(memories: Sequence[Memory]) -> Memory:
    rss, uss, pss = (statistics.median(values) for values in zip(*memories, strict=True))
    return rss, uss, pss


def _verdict(met: bool) -> str:
    return "meets" if met else "MISSES"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run (5000)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant (5)")
    parser.add_argument("--frameworks", default="celery,rq", help="celery,rq (default both)")
    args = parser.parse_args()
    frameworks = {f.strip() for f in args.frameworks.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        storage = os.environ.get("BENCH_STORAGE") or f"sqlite:///{Path(tmp) / 'bench.db'}"
        open_storage(storage, migrate=True).close()
        if "celery" in frameworks:
            celery = [
                Variant("uninstrumented", lambda n, s: run_celery("plain", False, n, s)),
                Variant("queuelens", lambda n, s: run_celery("queuelens", False, n, s)),
                Variant("events (-E)", lambda n, s: run_celery("plain", True, n, s)),
            ]
            run_rounds("celery", celery, args.jobs, args.rounds, storage)
        if "rq" in frameworks:
            rq = [
                Variant("uninstrumented", lambda n, s: run_rq("plain", n, s)),
                Variant("queuelens", lambda n, s: run_rq("queuelens", n, s)),
            ]
            run_rounds("rq", rq, args.jobs, args.rounds, storage)


if __name__ == "__main__":
    main()
