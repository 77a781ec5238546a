"""Capacity advice: how many workers a queue needs, from an M/M/c (Erlang C) model.

    advice = advise(arrival_per_s=3.2, service_time_s=2.9, current_workers=8,
                    target_wait_s=5.0, backlog=4_000)
    advice.recommended_workers, advice.workers_delta   # 29, +21: 11 for the wait, 29 to drain
    print("\\n".join(advice.reasons))                    # the why, in sentences

The model treats a queue as M/M/c: Poisson arrivals at ``λ`` jobs/s, exponential service
with mean ``S`` seconds, ``c`` identical workers (slots). Offered load ``a = λ·S`` erlangs,
utilisation ``a / c``. Erlang C is the probability a job waits at all; waits beyond zero are
exponential, so ``P(W > t) = C·exp(-(c/S - λ)·t)`` and every wait quantile is closed-form.
Real queues are burstier than Poisson, so treat the recommendation as a lower bound; the
Little's-law check and the observed-versus-predicted p95 in ``reasons`` say when it is.

Unbounded waits (utilisation ≥ 1) are ``math.inf``; inputs the model cannot use raise
ValueError naming the parameter. Everything here is pure and uses only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from queuelens.analytics.erlang import (
    DEFAULT_DRAIN_WITHIN_S,
    LITTLES_LAW_TOLERANCE,
    LittlesLawCheck,
    WaitPrediction,
    WorkerRequirement,
    check_argument,
    check_quantile,
    erlang_c,
    littles_law_check,
    mean_wait_s,
    predict_wait,
    wait_exceeds_probability,
    wait_quantile_s,
    workers_for_wait,
)

_FEW_JOBS = 30  # fewer arrivals than this in the window make every rate a rough guess

__all__ = [
    "DEFAULT_DRAIN_WITHIN_S",
    "LITTLES_LAW_TOLERANCE",
    "CapacityAdvice",
    "LittlesLawCheck",
    "WaitPrediction",
    "WorkerRequirement",
    "advise",
    "erlang_c",
    "littles_law_check",
    "mean_wait_s",
    "predict_wait",
    "wait_exceeds_probability",
    "wait_quantile_s",
    "workers_for_wait",
]


@dataclass(slots=True)
class CapacityAdvice:
    """The answer of :func:`advise`; fields that need a service time are None without one."""

    arrival_per_s: float
    service_time_s: float | None
    current_workers: int
    target_wait_s: float
    quantile: float
    backlog: int
    #: λ·S, the average number of busy workers the load needs
    offered_load_erlangs: float | None = None
    #: λ·S/c at the current worker count (may exceed 1; ``math.inf`` with no workers)
    utilisation: float | None = None
    recommended_workers: int | None = None
    #: recommended - current: positive means add workers
    workers_delta: int | None = None
    requirement: WorkerRequirement | None = None
    current: WaitPrediction | None = None
    recommended: WaitPrediction | None = None
    #: jobs each current worker completes per second: min(λ, c/S)/c
    jobs_per_worker_second: float | None = None
    #: what one worker could complete per second, 1/S
    capacity_jobs_per_worker_second: float | None = None
    #: share of time a current worker is busy, min(utilisation, 1)
    busy_ratio: float | None = None
    littles_law: LittlesLawCheck | None = None
    cpu_seconds_per_hour: float | None = None
    #: in the currency of ``price_per_cpu_hour``
    cost_per_hour: float | None = None
    cost_per_30d: float | None = None
    reasons: list[str] = field(default_factory=list)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _label(quantile: float) -> str:
    return f"p{quantile * 100:g}"


def _workers(count: int) -> str:
    return f"{count:,} worker" + ("" if count == 1 else "s")


def advise(
    *,
    arrival_per_s: float,
    service_time_s: float | None,
    current_workers: int,
    target_wait_s: float,
    quantile: float = 0.95,
    backlog: int = 0,
    drain_within_s: float | None = None,
    max_workers: int = 10_000,
    observed_wait_p95_s: float | None = None,
    observed_wait_avg_s: float | None = None,
    observed_depth: float | None = None,
    cpu_s_per_job: float | None = None,
    price_per_cpu_hour: float | None = None,
    window_s: float | None = None,
) -> CapacityAdvice:
    """Size a queue's workers (slots) for a wait target and explain the answer in ``reasons``.

    ``service_time_s=None`` (nothing finished yet) gives advice with the model fields None.
    ``window_s`` is how long the rates were measured over, only to warn when few jobs back
    them. Cost prices the CPU the jobs use (CPU-s per job x λ CPU-hours an hour), not idle
    workers. With no arrivals the recommendation is what the backlog needs, possibly 0.
    """
    check_argument("arrival_per_s", arrival_per_s, unit=" jobs/s")
    check_argument("current_workers", current_workers)
    check_argument("target_wait_s", target_wait_s, unit=" seconds")
    check_quantile(quantile)
    check_argument("backlog", backlog, unit=" jobs")
    optional = {
        "observed_wait_p95_s": observed_wait_p95_s,
        "observed_wait_avg_s": observed_wait_avg_s,
        "observed_depth": observed_depth,
        "cpu_s_per_job": cpu_s_per_job,
        "price_per_cpu_hour": price_per_cpu_hour,
    }
    for name, value in optional.items():
        if value is not None:
            check_argument(name, value)
    if window_s is not None:
        check_argument("window_s", window_s, positive=True, unit=" seconds")

    advice = CapacityAdvice(
        arrival_per_s, service_time_s, current_workers, target_wait_s, quantile, backlog
    )
    if observed_wait_avg_s is not None and observed_depth is not None:
        advice.littles_law = littles_law_check(arrival_per_s, observed_wait_avg_s, observed_depth)
    if cpu_s_per_job is not None:
        advice.cpu_seconds_per_hour = cpu_s_per_job * arrival_per_s * 3600
        if price_per_cpu_hour is not None:
            advice.cost_per_hour = advice.cpu_seconds_per_hour / 3600 * price_per_cpu_hour
            advice.cost_per_30d = advice.cost_per_hour * 24 * 30
    if service_time_s is not None:
        requirement = workers_for_wait(
            arrival_per_s, service_time_s, target_wait_s, quantile, backlog, drain_within_s,
            max_workers,
        )  # fmt: skip
        current = predict_wait(arrival_per_s, service_time_s, current_workers, quantile)
        advice.requirement, advice.current = requirement, current
        advice.offered_load_erlangs = arrival_per_s * service_time_s
        advice.utilisation = current.utilisation
        advice.capacity_jobs_per_worker_second = 1.0 / service_time_s
        if current_workers:
            done_per_s = min(arrival_per_s, current_workers / service_time_s)
            advice.jobs_per_worker_second = done_per_s / current_workers
            advice.busy_ratio = min(current.utilisation, 1.0)
        if requirement.workers is not None:
            advice.recommended_workers = requirement.workers
            advice.workers_delta = requirement.workers - current_workers
            advice.recommended = predict_wait(
                arrival_per_s, service_time_s, requirement.workers, quantile
            )
    advice.reasons = _explain(
        advice, observed_wait_p95_s, window_s, cpu_s_per_job, price_per_cpu_hour
    )
    return advice


def _explain(
    advice: CapacityAdvice,
    observed_wait_p95_s: float | None,
    window_s: float | None,
    cpu_s_per_job: float | None,
    price_per_cpu_hour: float | None,
) -> list[str]:
    arrival_per_s, service_s = advice.arrival_per_s, advice.service_time_s
    rate = f"{arrival_per_s:.3g} jobs/s"
    label, target = _label(advice.quantile), _duration(advice.target_wait_s)
    requirement, current, delta = advice.requirement, advice.current, advice.workers_delta
    reasons: list[str] = []
    if service_s is None or requirement is None or current is None:
        reasons.append(
            "No mean service time is known (did any job finish in the window?), so the"
            " worker count cannot be sized."
        )
    else:
        at = f"at {rate} with mean service {_duration(service_s)}"
        if arrival_per_s == 0:
            reasons.append("No jobs arrived, so new work needs no workers.")
        elif requirement.wait_workers is None:
            reasons.append(
                f"No count up to {_workers(requirement.max_workers)} keeps the {label} wait"
                f" under {target} {at}."
            )
        else:
            count = requirement.wait_workers
            reasons.append(
                f"{_workers(count)} {'keeps' if count == 1 else 'keep'} the {label} wait under"
                f" {target} {at} (offered load {arrival_per_s * service_s:.3g} erlangs)."
            )
        if advice.backlog:
            over = requirement.drain_workers > requirement.max_workers
            reasons.append(
                f"Draining the backlog of {advice.backlog:,} jobs within"
                f" {_duration(requirement.drain_within_s)} needs"
                f" {_workers(requirement.drain_workers)}"
                + (f", more than max_workers={requirement.max_workers:,}." if over else ".")
            )
        now = f"With the current {_workers(advice.current_workers)}"
        if not current.stable:
            load = f" utilisation is {current.utilisation:.0%}:" if advice.current_workers else ""
            reasons.append(
                f"{now}{load} work arrives faster than it is done"
                " and the queue grows without bound."
            )
        elif advice.current_workers:
            reasons.append(
                f"{now} utilisation is {current.utilisation:.0%} and the predicted {label} wait"
                f" is {_duration(current.wait_quantile_s)}."
            )
        if delta is not None and delta > 0:
            reasons.append(f"Add {_workers(delta)} (to {advice.recommended_workers:,}).")
        elif delta is not None and delta < 0:
            reasons.append(
                f"{_workers(-delta)} could be removed (down to {advice.recommended_workers:,})"
                " and the target still met."
            )
        elif delta == 0:
            reasons.append("The current worker count is right for the target.")
        if observed_wait_p95_s is not None and current.stable and arrival_per_s > 0:
            predicted_s = wait_quantile_s(0.95, arrival_per_s, service_s, advice.current_workers)
            if observed_wait_p95_s > max(LITTLES_LAW_TOLERANCE * predicted_s, predicted_s + 1.0):
                reasons.append(
                    f"The observed p95 wait of {_duration(observed_wait_p95_s)} is well above"
                    f" the model's {_duration(predicted_s)}: arrivals are burstier or service"
                    " times more variable than M/M/c assumes, so treat the advice as a floor."
                )
    if window_s is not None and arrival_per_s * window_s < _FEW_JOBS:
        reasons.append(
            f"Only about {arrival_per_s * window_s:.0f} jobs arrived in the"
            f" {_duration(window_s)} window, so these rates are rough."
        )
    check = advice.littles_law
    if check is not None and not check.consistent:
        reasons.append(
            f"Little's law does not hold: {rate} waiting {_duration(check.wait_avg_s)}"
            f" on average implies about {check.expected_depth:.3g} jobs queued, but"
            f" {check.observed_depth:g} are; arrivals are probably bursty or the"
            " measurements come from different windows."
        )
    if advice.cost_per_hour is not None and advice.cost_per_30d is not None:
        reasons.append(
            f"The jobs' CPU costs about {advice.cost_per_hour:,.2f} an hour"
            f" ({advice.cost_per_30d:,.2f} per 30 days) at {cpu_s_per_job:.3g} CPU-s per job"
            f" and {price_per_cpu_hour:g} per CPU-hour."
        )
    elif price_per_cpu_hour is not None and cpu_s_per_job is None:
        reasons.append("No CPU time per job was measured, so there is no cost estimate.")
    return reasons
