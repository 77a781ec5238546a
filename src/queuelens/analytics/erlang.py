"""The M/M/c (Erlang C) queueing model behind capacity advice.

    erlang_c(2.0, 1.0, 3)                        # 0.444...: P(a job waits) at λ=2/s, S=1 s, c=3
    wait_quantile_s(0.95, 2.0, 1.0, 3)           # p95 wait in seconds
    workers_for_wait(3.2, 2.9, 5.0, backlog=4_000).workers

Poisson arrivals at ``λ`` jobs/s, exponential service with mean ``S`` seconds, ``c``
identical workers (slots). Offered load ``a = λ·S`` erlangs, utilisation ``a / c``. Erlang C
is the probability a job waits at all; waits beyond zero are exponential, so
``P(W > t) = C·exp(-(c/S - λ)·t)`` and every wait quantile is closed-form. Erlang C comes
from the Erlang B recursion, which never overflows, even for thousands of workers.

Unbounded waits (utilisation ≥ 1) are ``math.inf``; inputs the model cannot use raise
ValueError naming the parameter. Pure, standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

__all__ = [
    "DEFAULT_DRAIN_WITHIN_S",
    "LITTLES_LAW_TOLERANCE",
    "LittlesLawCheck",
    "WaitPrediction",
    "WorkerRequirement",
    "erlang_c",
    "littles_law_check",
    "mean_wait_s",
    "predict_wait",
    "wait_exceeds_probability",
    "wait_quantile_s",
    "workers_for_wait",
]

#: a backlog is to be drained within max(target wait, this) unless told otherwise
DEFAULT_DRAIN_WITHIN_S = 600.0
#: Little's law is "consistent" when observed and expected depth differ by at most this factor
LITTLES_LAW_TOLERANCE = 2.0


def check_argument(name: str, value: float, *, positive: bool = False, unit: str = "") -> None:
    """Reject NaN, infinities and negative (or, with ``positive``, zero) values."""
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}{unit}, got {value!r}")


def check_model(arrival_per_s: float, service_time_s: float, workers: int) -> None:
    check_argument("arrival_per_s", arrival_per_s, unit=" jobs/s")
    check_argument("service_time_s", service_time_s, positive=True, unit=" seconds")
    check_argument("workers", workers)


def check_quantile(quantile: float) -> None:
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), e.g. 0.95 for p95; got {quantile!r}")


def _erlang_b_series(offered_load: float) -> Iterator[float]:
    """Erlang B for c = 1, 2, ...; the recursion never forms a factorial, so it cannot overflow."""
    b = 1.0
    k = 0
    while True:
        k += 1
        b = offered_load * b / (k + offered_load * b)
        yield b


def _erlang_c_from_b(workers: int, offered_load: float, erlang_b: float) -> float:
    return workers * erlang_b / (workers - offered_load * (1.0 - erlang_b))


def _quantile_from_c(
    wait_probability: float, quantile: float, workers: int, offered_load: float, service_s: float
) -> float:
    tail = 1.0 - quantile
    if wait_probability <= tail:
        return 0.0
    return math.log(wait_probability / tail) * service_s / (workers - offered_load)


def erlang_c(arrival_per_s: float, service_time_s: float, workers: int) -> float:
    """P(a job waits at all) in M/M/c; 1.0 when utilisation ≥ 1, 0.0 with no arrivals.

    ``erlang_c(2.0, 1.0, 3)`` is 4/9: two jobs a second, one-second jobs, three workers.
    """
    check_model(arrival_per_s, service_time_s, workers)
    if arrival_per_s == 0:
        return 0.0
    offered_load = arrival_per_s * service_time_s
    if offered_load >= workers:
        return 1.0
    erlang_b = 1.0
    for erlang_b in islice(_erlang_b_series(offered_load), workers):
        if erlang_b == 0.0:
            break  # underflowed: far more workers than load, and it stays 0 from here on
    return _erlang_c_from_b(workers, offered_load, erlang_b)


def wait_exceeds_probability(
    arrival_per_s: float, service_time_s: float, workers: int, wait_s: float
) -> float:
    """P(W > wait_s) = C·exp(-(c/S - λ)·wait_s); 1.0 when utilisation ≥ 1 and λ > 0."""
    check_argument("wait_s", wait_s, unit=" seconds")
    c = erlang_c(arrival_per_s, service_time_s, workers)
    if arrival_per_s == 0 or arrival_per_s * service_time_s >= workers:
        return c  # 0.0 with no arrivals, 1.0 when every job waits forever
    return c * math.exp(-(workers / service_time_s - arrival_per_s) * wait_s)


def mean_wait_s(arrival_per_s: float, service_time_s: float, workers: int) -> float:
    """Mean time in queue, C·S/(c - λS); ``math.inf`` when utilisation ≥ 1 and λ > 0."""
    c = erlang_c(arrival_per_s, service_time_s, workers)
    offered_load = arrival_per_s * service_time_s
    if arrival_per_s == 0 or offered_load >= workers:
        return 0.0 if arrival_per_s == 0 else math.inf
    return c * service_time_s / (workers - offered_load)


def wait_quantile_s(
    quantile: float, arrival_per_s: float, service_time_s: float, workers: int
) -> float:
    """The wait that ``quantile`` of jobs stay under: ``wait_quantile_s(0.95, ...)`` is p95.

    0 when C ≤ 1 - q (that share of jobs never waits), else ln(C/(1 - q))/(c/S - λ);
    ``math.inf`` when utilisation ≥ 1 and λ > 0.
    """
    check_quantile(quantile)
    c = erlang_c(arrival_per_s, service_time_s, workers)
    offered_load = arrival_per_s * service_time_s
    if arrival_per_s == 0 or offered_load >= workers:
        return 0.0 if arrival_per_s == 0 else math.inf
    return _quantile_from_c(c, quantile, workers, offered_load, service_time_s)


@dataclass(frozen=True, slots=True)
class WaitPrediction:
    """What the model predicts for one worker count: ``predict_wait(3.2, 2.9, 12)``."""

    workers: int
    #: λ·S/c; ``math.inf`` with no workers and some arrivals
    utilisation: float
    #: Erlang C, P(a job waits at all)
    wait_probability: float
    wait_mean_s: float
    #: the wait at ``quantile`` (p95 by default); ``math.inf`` when unstable
    wait_quantile_s: float
    quantile: float

    @property
    def stable(self) -> bool:
        """False when the queue grows without bound at this worker count."""
        return math.isfinite(self.wait_mean_s)


def predict_wait(
    arrival_per_s: float, service_time_s: float, workers: int, quantile: float = 0.95
) -> WaitPrediction:
    """Utilisation, P(wait), mean wait and a wait quantile for ``workers`` (0 allowed)."""
    check_model(arrival_per_s, service_time_s, workers)
    if workers:
        utilisation = arrival_per_s * service_time_s / workers
    else:
        utilisation = math.inf if arrival_per_s else 0.0
    return WaitPrediction(
        workers=workers,
        utilisation=utilisation,
        wait_probability=erlang_c(arrival_per_s, service_time_s, workers),
        wait_mean_s=mean_wait_s(arrival_per_s, service_time_s, workers),
        wait_quantile_s=wait_quantile_s(quantile, arrival_per_s, service_time_s, workers),
        quantile=quantile,
    )


@dataclass(frozen=True, slots=True)
class WorkerRequirement:
    """The worker count a target needs, and which term set it.

    ``workers`` is None when no count up to ``max_workers`` meets both terms.
    """

    workers: int | None
    #: the smallest count whose wait quantile meets the target (None: above max_workers)
    wait_workers: int | None
    #: the smallest count that drains the backlog in time while keeping up (0: no backlog)
    drain_workers: int
    drain_within_s: float
    max_workers: int

    @property
    def achievable(self) -> bool:
        return self.workers is not None


def _ceil(value: float) -> int:
    # 2.0000000000000004 from float arithmetic means 2 workers, not 3
    return math.ceil(value - 1e-9 * max(1.0, value))


def workers_for_wait(
    arrival_per_s: float,
    service_time_s: float,
    target_wait_s: float,
    quantile: float = 0.95,
    backlog: int = 0,
    drain_within_s: float | None = None,
    max_workers: int = 10_000,
) -> WorkerRequirement:
    """The fewest workers that keep the ``quantile`` wait ≤ ``target_wait_s`` and drain a backlog.

    ``workers_for_wait(3.2, 2.9, 5.0).workers`` sizes for a p95 wait of 5 s. A ``backlog`` of
    jobs already queued must clear within ``drain_within_s`` (default: max(target wait,
    :data:`DEFAULT_DRAIN_WITHIN_S`)) while new work keeps arriving, so
    (c/S - λ)·T ≥ backlog, i.e. c ≥ (λ + backlog/T)·S. The answer is the larger of the two
    terms. With no arrivals the wait term is 0 workers (nothing arrives, nothing waits).
    """
    check_model(arrival_per_s, service_time_s, 0)
    check_argument("target_wait_s", target_wait_s, unit=" seconds")
    check_quantile(quantile)
    check_argument("backlog", backlog, unit=" jobs")
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
    if drain_within_s is None:
        drain_within_s = max(target_wait_s, DEFAULT_DRAIN_WITHIN_S)
    check_argument("drain_within_s", drain_within_s, positive=True, unit=" seconds")

    offered_load = arrival_per_s * service_time_s
    drain_workers = (
        _ceil(offered_load + backlog * service_time_s / drain_within_s) if backlog else 0
    )

    wait_workers: int | None = None
    if arrival_per_s == 0:
        wait_workers = 0
    elif offered_load < max_workers:
        # B(c) is built once for c = 1, 2, ..., so the scan costs O(max_workers) in total
        for workers, erlang_b in zip(
            range(1, max_workers + 1), _erlang_b_series(offered_load), strict=False
        ):
            if workers <= offered_load:
                continue
            c = _erlang_c_from_b(workers, offered_load, erlang_b)
            wait_s = _quantile_from_c(c, quantile, workers, offered_load, service_time_s)
            if wait_s <= target_wait_s:
                wait_workers = workers
                break

    workers_needed = None
    if wait_workers is not None and drain_workers <= max_workers:
        workers_needed = max(wait_workers, drain_workers)
    return WorkerRequirement(
        workers_needed, wait_workers, drain_workers, drain_within_s, max_workers
    )


@dataclass(frozen=True, slots=True)
class LittlesLawCheck:
    """L = λ·W: the depth the measured average wait implies, against the depth observed.

    ``littles_law_check(3.2, 2.0, 40)`` expects 6.4 jobs waiting, sees 40: inconsistent.
    """

    wait_avg_s: float
    expected_depth: float
    observed_depth: float
    #: observed / expected; None when no jobs are expected to wait
    ratio: float | None
    consistent: bool


def littles_law_check(
    arrival_per_s: float,
    wait_avg_s: float,
    observed_depth: float,
    tolerance: float = LITTLES_LAW_TOLERANCE,
) -> LittlesLawCheck:
    """Compare λ·(average wait) with the observed queue depth.

    Consistent within a factor of ``tolerance``, or within one job: a depth is a whole
    number, so 0 queued against 0.4 expected is agreement, not an infinite ratio. A mismatch
    usually means bursty arrivals or measurements taken over different windows.
    """
    check_argument("arrival_per_s", arrival_per_s, unit=" jobs/s")
    check_argument("wait_avg_s", wait_avg_s, unit=" seconds")
    check_argument("observed_depth", observed_depth, unit=" jobs")
    if not (math.isfinite(tolerance) and tolerance >= 1.0):
        raise ValueError(f"tolerance must be a finite factor >= 1, e.g. 2.0; got {tolerance!r}")
    expected = arrival_per_s * wait_avg_s
    ratio = observed_depth / expected if expected > 0 else None
    within_factor = ratio is not None and 1.0 / tolerance <= ratio <= tolerance
    consistent = abs(observed_depth - expected) <= 1.0 or within_factor
    return LittlesLawCheck(wait_avg_s, expected, observed_depth, ratio, consistent)
