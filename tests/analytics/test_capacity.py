from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from queuelens.analytics.capacity import (
    DEFAULT_DRAIN_WITHIN_S,
    advise,
    erlang_c,
    littles_law_check,
    mean_wait_s,
    predict_wait,
    wait_exceeds_probability,
    wait_quantile_s,
    workers_for_wait,
)


def erlang_c_by_factorials(offered_load: float, workers: int) -> float:
    """The textbook formula, term by term; fine for small c."""
    queued = offered_load**workers / math.factorial(workers) * workers / (workers - offered_load)
    idle = sum(offered_load**k / math.factorial(k) for k in range(workers))
    return queued / (idle + queued)


def erlang_c_in_logs(offered_load: float, workers: int) -> float:
    """The same formula in log space (lgamma, log-sum-exp): exact for hundreds of workers."""
    log_terms = [k * math.log(offered_load) - math.lgamma(k + 1) for k in range(workers)]
    log_queued = (
        workers * math.log(offered_load)
        - math.lgamma(workers + 1)
        + math.log(workers / (workers - offered_load))
    )
    top = max([*log_terms, log_queued])
    idle = sum(math.exp(t - top) for t in log_terms)
    queued = math.exp(log_queued - top)
    return queued / (idle + queued)


def simulate_fcfs_waits(
    arrival_per_s: float, service_time_s: float, workers: int, jobs: int, seed: int
) -> list[float]:
    """Waits of a seeded M/M/c first-come-first-served queue, after a warm-up."""
    rng = random.Random(seed)
    free_at = [0.0] * workers
    now = 0.0
    waits: list[float] = []
    for _ in range(jobs):
        now += rng.expovariate(arrival_per_s)
        start = max(now, heapq.heappop(free_at))
        heapq.heappush(free_at, start + rng.expovariate(1.0 / service_time_s))
        waits.append(start - now)
    return waits[jobs // 10 :]


# --- Erlang C -------------------------------------------------------------------------------


def test_erlang_c_textbook_value() -> None:
    # λ = 2/s, mean service 1 s, 3 workers: P(wait) = 4/9
    assert erlang_c(2.0, 1.0, 3) == pytest.approx(4 / 9, rel=1e-12)


@pytest.mark.parametrize(
    ("offered_load", "workers", "expected"),
    [(10.0, 11, 0.6821), (10.0, 12, 0.4494), (10.0, 13, 0.2853)],
)
def test_erlang_c_table_values(offered_load: float, workers: int, expected: float) -> None:
    # the 10-erlang row of the usual call-centre tables; λ = 10/s with 1 s service
    assert erlang_c(offered_load, 1.0, workers) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("utilisation", [0.1, 0.5, 0.9, 0.99])
def test_erlang_c_closed_forms_for_one_and_two_workers(utilisation: float) -> None:
    assert erlang_c(utilisation, 1.0, 1) == pytest.approx(utilisation)
    two = 2 * utilisation**2 / (1 + utilisation)
    assert erlang_c(2 * utilisation / 3.0, 3.0, 2) == pytest.approx(two)


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8, 13, 21])
@pytest.mark.parametrize("utilisation", [0.05, 0.3, 0.7, 0.95])
def test_erlang_c_matches_factorial_formula(workers: int, utilisation: float) -> None:
    service_time_s = 0.25
    arrival_per_s = utilisation * workers / service_time_s
    expected = erlang_c_by_factorials(utilisation * workers, workers)
    assert erlang_c(arrival_per_s, service_time_s, workers) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("offered_load", "workers"), [(480.0, 500), (990.0, 1000), (5.0, 500)])
def test_erlang_c_is_stable_for_hundreds_of_workers(offered_load: float, workers: int) -> None:
    # a**c / c! overflows a float long before c = 500; the recursion must not
    value = erlang_c(offered_load, 1.0, workers)
    assert 0.0 <= value < 1.0
    if offered_load > 100:
        assert value > 0.0
        assert value == pytest.approx(erlang_c_in_logs(offered_load, workers), rel=1e-9)


def test_erlang_c_with_absurdly_many_workers_is_zero_and_quick() -> None:
    assert erlang_c(1.0, 1.0, 10**9) == 0.0


def test_erlang_c_decreases_with_workers() -> None:
    values = [erlang_c(48.0, 10.0, workers) for workers in range(481, 560)]
    assert all(later < earlier for earlier, later in pairwise(values))


def test_erlang_c_at_or_over_capacity_is_one() -> None:
    assert erlang_c(3.0, 1.0, 3) == 1.0
    assert erlang_c(30.0, 1.0, 3) == 1.0
    assert erlang_c(1.0, 1.0, 0) == 1.0


def test_no_arrivals_never_wait() -> None:
    assert erlang_c(0.0, 1.0, 0) == 0.0
    assert erlang_c(0.0, 1.0, 4) == 0.0
    assert mean_wait_s(0.0, 1.0, 4) == 0.0
    assert wait_quantile_s(0.95, 0.0, 1.0, 4) == 0.0


# --- wait distribution ----------------------------------------------------------------------


def test_wait_distribution_textbook_case() -> None:
    # C = 4/9 and c/S - λ = 1/s
    assert mean_wait_s(2.0, 1.0, 3) == pytest.approx(4 / 9)
    p95_s = wait_quantile_s(0.95, 2.0, 1.0, 3)
    assert p95_s == pytest.approx(math.log((4 / 9) / 0.05))
    assert wait_exceeds_probability(2.0, 1.0, 3, p95_s) == pytest.approx(0.05)
    assert wait_exceeds_probability(2.0, 1.0, 3, 0.0) == pytest.approx(4 / 9)
    assert wait_exceeds_probability(2.0, 1.0, 3, 1.0) == pytest.approx(4 / 9 / math.e)


def test_quantile_is_zero_when_most_jobs_never_wait() -> None:
    # C = 4/9, so more than half the jobs start at once: the median wait is 0
    assert wait_quantile_s(0.5, 2.0, 1.0, 3) == 0.0
    assert wait_quantile_s(0.6, 2.0, 1.0, 3) > 0.0


def test_unstable_queue_waits_without_bound() -> None:
    assert mean_wait_s(3.0, 1.0, 3) == math.inf
    assert wait_quantile_s(0.95, 3.0, 1.0, 3) == math.inf
    assert wait_exceeds_probability(3.0, 1.0, 3, 1e6) == 1.0
    prediction = predict_wait(3.0, 1.0, 2)
    assert not prediction.stable
    assert prediction.utilisation == pytest.approx(1.5)
    assert predict_wait(3.0, 1.0, 0).utilisation == math.inf


def test_simulated_mmc_queue_matches_the_model() -> None:
    waits = simulate_fcfs_waits(2.0, 1.0, 3, jobs=40_000, seed=20240601)
    waited = sum(1 for wait in waits if wait > 0) / len(waits)
    assert waited == pytest.approx(erlang_c(2.0, 1.0, 3), abs=0.03)
    assert sum(waits) / len(waits) == pytest.approx(mean_wait_s(2.0, 1.0, 3), rel=0.15)
    p95_s = sorted(waits)[int(0.95 * len(waits))]
    assert p95_s == pytest.approx(wait_quantile_s(0.95, 2.0, 1.0, 3), rel=0.15)


# --- workers_for_wait -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrival_per_s", "service_time_s", "target_wait_s", "quantile"),
    [
        (2.0, 1.0, 1.0, 0.95),
        (3.2, 2.9, 5.0, 0.95),
        (0.5, 30.0, 60.0, 0.99),
        (480.0, 1.0, 0.05, 0.95),
        (100.0, 0.2, 0.0, 0.9),
    ],
)
def test_workers_for_wait_is_minimal(
    arrival_per_s: float, service_time_s: float, target_wait_s: float, quantile: float
) -> None:
    requirement = workers_for_wait(arrival_per_s, service_time_s, target_wait_s, quantile)
    workers = requirement.workers
    assert workers is not None
    assert requirement.achievable
    assert workers == requirement.wait_workers
    assert wait_quantile_s(quantile, arrival_per_s, service_time_s, workers) <= target_wait_s
    fewer = wait_quantile_s(quantile, arrival_per_s, service_time_s, workers - 1)
    assert fewer > target_wait_s


def test_workers_for_wait_textbook_case() -> None:
    # 3 workers give p95 ≈ 2.18 s and 4 give ≈ 0.5 s
    assert workers_for_wait(2.0, 1.0, 2.5).workers == 3
    assert workers_for_wait(2.0, 1.0, 1.0).workers == 4


def test_backlog_term_dominates_when_big() -> None:
    requirement = workers_for_wait(1.0, 1.0, 10.0, backlog=10_000, drain_within_s=600.0)
    # (λ + backlog / T) · S = 1 + 10000 / 600 = 17.67
    assert requirement.drain_workers == 18
    assert requirement.wait_workers is not None
    assert requirement.wait_workers < 18
    assert requirement.workers == 18


def test_backlog_drain_is_exact_on_whole_numbers() -> None:
    # 2 + 600 / 600 = 3 workers exactly, not 4 from rounding noise
    assert workers_for_wait(2.0, 1.0, 100.0, backlog=600, drain_within_s=600.0).drain_workers == 3


def test_default_drain_window() -> None:
    assert workers_for_wait(1.0, 1.0, 5.0, backlog=10).drain_within_s == DEFAULT_DRAIN_WITHIN_S
    assert workers_for_wait(1.0, 1.0, 3600.0, backlog=10).drain_within_s == 3600.0


def test_no_arrivals_need_workers_only_for_the_backlog() -> None:
    assert workers_for_wait(0.0, 1.0, 5.0).workers == 0
    requirement = workers_for_wait(0.0, 1.0, 5.0, backlog=5)
    assert requirement.wait_workers == 0
    assert requirement.workers == 1


def test_unachievable_targets_are_flagged_not_searched_forever() -> None:
    over = workers_for_wait(100.0, 1.0, 1.0, max_workers=50)
    assert over.workers is None
    assert not over.achievable
    assert over.wait_workers is None
    # stable from 11 workers, but a zero p99.9 wait needs many more than 12
    assert workers_for_wait(10.0, 1.0, 0.0, quantile=0.999, max_workers=12).workers is None
    backlog = workers_for_wait(1.0, 1.0, 10.0, backlog=10**9, max_workers=1000)
    assert backlog.wait_workers is not None
    assert backlog.drain_workers > 1000
    assert backlog.workers is None


def test_workers_for_wait_scales_to_thousands_of_workers() -> None:
    requirement = workers_for_wait(5000.0, 1.9, 0.1)
    assert requirement.workers is not None
    assert 9500 < requirement.workers < 10_000


# --- Little's law ---------------------------------------------------------------------------


def test_littles_law_consistent() -> None:
    check = littles_law_check(2.0, 3.0, 7)
    assert check.expected_depth == pytest.approx(6.0)
    assert check.ratio == pytest.approx(7 / 6)
    assert check.consistent


def test_littles_law_inconsistent() -> None:
    check = littles_law_check(3.2, 2.0, 40)
    assert check.expected_depth == pytest.approx(6.4)
    assert check.ratio == pytest.approx(40 / 6.4)
    assert not check.consistent
    assert not littles_law_check(10.0, 2.0, 5).consistent


def test_littles_law_small_numbers_and_empty_queues() -> None:
    # one job queued against 0.4 expected is agreement, whatever the ratio
    assert littles_law_check(0.2, 2.0, 1).consistent
    assert littles_law_check(0.0, 2.0, 0).consistent
    empty = littles_law_check(0.0, 2.0, 5)
    assert empty.ratio is None
    assert not empty.consistent


# --- advise ---------------------------------------------------------------------------------


def test_advise_the_issue_example() -> None:
    advice = advise(
        arrival_per_s=3.2, service_time_s=2.9, current_workers=8, target_wait_s=5.0,
        backlog=4_000, drain_within_s=600.0,
    )  # fmt: skip
    assert advice.offered_load_erlangs == pytest.approx(9.28)
    assert advice.utilisation == pytest.approx(9.28 / 8)
    assert advice.requirement is not None
    wait_workers = advice.requirement.wait_workers
    assert wait_workers == workers_for_wait(3.2, 2.9, 5.0).workers
    # (3.2 + 4000 / 600) · 2.9 = 28.61
    assert advice.recommended_workers == 29
    assert advice.workers_delta == 21
    assert advice.current is not None
    assert not advice.current.stable
    assert advice.recommended is not None
    assert advice.recommended.wait_quantile_s <= 5.0
    text = "\n".join(advice.reasons)
    assert f"{wait_workers} workers keep the p95 wait under 5 s at 3.2 jobs/s" in text
    assert "mean service 2.9 s" in text
    assert "Draining the backlog of 4,000 jobs within 10 min needs 29 workers" in text
    assert "grows without bound" in text
    assert "Add 21 workers" in text


def test_advise_predictions_for_current_and_recommended() -> None:
    advice = advise(arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=1.0)
    assert advice.current is not None
    assert advice.current.wait_probability == pytest.approx(4 / 9)
    assert advice.current.wait_mean_s == pytest.approx(4 / 9)
    assert advice.current.wait_quantile_s == pytest.approx(math.log((4 / 9) / 0.05))
    assert advice.recommended_workers == 4
    assert advice.workers_delta == 1
    assert advice.recommended is not None
    assert advice.recommended.workers == 4
    assert advice.recommended.wait_quantile_s <= 1.0


def test_advise_fewer_workers_and_efficiency() -> None:
    advice = advise(arrival_per_s=3.2, service_time_s=2.9, current_workers=20, target_wait_s=5.0)
    assert advice.workers_delta is not None
    assert advice.workers_delta < 0
    assert advice.jobs_per_worker_second == pytest.approx(3.2 / 20)
    assert advice.capacity_jobs_per_worker_second == pytest.approx(1 / 2.9)
    assert advice.busy_ratio == pytest.approx(9.28 / 20)
    assert any("could be removed" in reason for reason in advice.reasons)


def test_advise_efficiency_when_overloaded_is_capped_at_capacity() -> None:
    advice = advise(arrival_per_s=10.0, service_time_s=1.0, current_workers=4, target_wait_s=5.0)
    assert advice.utilisation == pytest.approx(2.5)
    assert advice.busy_ratio == 1.0
    assert advice.jobs_per_worker_second == pytest.approx(1.0)


def test_advise_without_service_time() -> None:
    advice = advise(
        arrival_per_s=1.0, service_time_s=None, current_workers=3, target_wait_s=5.0,
        observed_wait_avg_s=2.0, observed_depth=2, cpu_s_per_job=0.5, price_per_cpu_hour=0.1,
    )  # fmt: skip
    assert advice.recommended_workers is None
    assert advice.utilisation is None
    assert advice.current is None
    assert advice.requirement is None
    assert "service time" in advice.reasons[0]
    # what does not need a service time is still reported
    assert advice.littles_law is not None
    assert advice.cost_per_hour == pytest.approx(0.05)


def test_advise_without_arrivals() -> None:
    idle = advise(arrival_per_s=0.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0)
    assert idle.recommended_workers == 0
    assert idle.workers_delta == -3
    assert "No jobs arrived" in idle.reasons[0]
    backlog = advise(
        arrival_per_s=0.0, service_time_s=1.0, current_workers=0, target_wait_s=5.0, backlog=50
    )
    assert backlog.recommended_workers == 1


def test_advise_with_no_current_workers() -> None:
    advice = advise(arrival_per_s=1.0, service_time_s=1.0, current_workers=0, target_wait_s=5.0)
    assert advice.utilisation == math.inf
    assert advice.jobs_per_worker_second is None
    assert advice.recommended_workers is not None
    assert advice.workers_delta == advice.recommended_workers
    assert any("grows without bound" in reason for reason in advice.reasons)


def test_advise_unachievable() -> None:
    advice = advise(
        arrival_per_s=100.0, service_time_s=1.0, current_workers=10, target_wait_s=1.0,
        max_workers=50,
    )  # fmt: skip
    assert advice.recommended_workers is None
    assert advice.workers_delta is None
    assert advice.recommended is None
    assert "No count up to 50 workers" in advice.reasons[0]


def test_advise_littles_law() -> None:
    consistent = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        observed_wait_avg_s=0.5, observed_depth=1,
    )  # fmt: skip
    assert consistent.littles_law is not None
    assert consistent.littles_law.consistent
    assert not any("Little" in reason for reason in consistent.reasons)
    bursty = advise(
        arrival_per_s=3.2, service_time_s=2.9, current_workers=12, target_wait_s=5.0,
        observed_wait_avg_s=2.0, observed_depth=40,
    )  # fmt: skip
    assert bursty.littles_law is not None
    assert not bursty.littles_law.consistent
    assert bursty.littles_law.ratio == pytest.approx(40 / 6.4)
    reason = next(reason for reason in bursty.reasons if "Little" in reason)
    assert "6.4 jobs" in reason
    assert "bursty" in reason


def test_advise_observed_p95_far_above_model() -> None:
    advice = advise(
        arrival_per_s=3.2, service_time_s=2.9, current_workers=12, target_wait_s=5.0,
        observed_wait_p95_s=40.0,
    )  # fmt: skip
    assert any("well above the model" in reason for reason in advice.reasons)
    close = advise(
        arrival_per_s=3.2, service_time_s=2.9, current_workers=12, target_wait_s=5.0,
        observed_wait_p95_s=2.5,
    )  # fmt: skip
    assert not any("well above the model" in reason for reason in close.reasons)


def test_advise_cost_arithmetic() -> None:
    advice = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        cpu_s_per_job=1.5, price_per_cpu_hour=0.04,
    )  # fmt: skip
    # 1.5 CPU-s x 2 jobs/s = 3 CPU-s per second = 3 CPU-hours an hour
    assert advice.cpu_seconds_per_hour == pytest.approx(10_800)
    assert advice.cost_per_hour == pytest.approx(0.12)
    assert advice.cost_per_30d == pytest.approx(0.12 * 24 * 30)
    assert any("0.12 an hour" in reason for reason in advice.reasons)
    unpriced = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        cpu_s_per_job=1.5,
    )  # fmt: skip
    assert unpriced.cpu_seconds_per_hour == pytest.approx(10_800)
    assert unpriced.cost_per_hour is None
    assert unpriced.cost_per_30d is None
    no_cpu = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        price_per_cpu_hour=0.04,
    )  # fmt: skip
    assert no_cpu.cost_per_hour is None
    assert any("no cost estimate" in reason for reason in no_cpu.reasons)


def test_advise_warns_on_few_jobs() -> None:
    few = advise(
        arrival_per_s=0.01, service_time_s=1.0, current_workers=1, target_wait_s=5.0,
        window_s=600.0,
    )  # fmt: skip
    assert any("Only about 6 jobs" in reason for reason in few.reasons)
    many = advise(
        arrival_per_s=1.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        window_s=600.0,
    )  # fmt: skip
    assert not any("rough" in reason for reason in many.reasons)


def test_advise_other_quantiles_are_labelled() -> None:
    advice = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=5.0,
        quantile=0.999,
    )  # fmt: skip
    assert "p99.9 wait" in advice.reasons[0]
    hours = advise(
        arrival_per_s=2.0, service_time_s=1.0, current_workers=3, target_wait_s=7200.0,
        backlog=10,
    )  # fmt: skip
    assert "wait under 2 h" in hours.reasons[0]


# --- bad inputs -----------------------------------------------------------------------------

_ADVISE: dict[str, Any] = {
    "arrival_per_s": 1.0,
    "service_time_s": 1.0,
    "current_workers": 2,
    "target_wait_s": 5.0,
}


def _advise_with(**changes: Any) -> Callable[[], object]:
    return lambda: advise(**{**_ADVISE, **changes})


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: erlang_c(-1.0, 1.0, 3), "arrival_per_s"),
        (lambda: erlang_c(math.nan, 1.0, 3), "arrival_per_s"),
        (lambda: erlang_c(1.0, 0.0, 3), "service_time_s"),
        (lambda: erlang_c(1.0, math.inf, 3), "service_time_s"),
        (lambda: erlang_c(1.0, 1.0, -1), "workers"),
        (lambda: wait_exceeds_probability(1.0, 1.0, 3, -1.0), "wait_s"),
        (lambda: wait_quantile_s(1.0, 1.0, 1.0, 3), "quantile"),
        (lambda: wait_quantile_s(0.0, 1.0, 1.0, 3), "quantile"),
        (lambda: workers_for_wait(1.0, 1.0, -5.0), "target_wait_s"),
        (lambda: workers_for_wait(1.0, 1.0, 5.0, backlog=-1), "backlog"),
        (lambda: workers_for_wait(1.0, 1.0, 5.0, drain_within_s=0.0), "drain_within_s"),
        (lambda: workers_for_wait(1.0, 1.0, 5.0, max_workers=0), "max_workers"),
        (lambda: littles_law_check(1.0, -2.0, 3), "wait_avg_s"),
        (lambda: littles_law_check(1.0, 2.0, -3), "observed_depth"),
        (lambda: littles_law_check(1.0, 2.0, 3, tolerance=0.5), "tolerance"),
        (_advise_with(current_workers=-1), "current_workers"),
        (_advise_with(service_time_s=-2.0), "service_time_s"),
        (_advise_with(quantile=95), "quantile"),
        (_advise_with(cpu_s_per_job=-0.1), "cpu_s_per_job"),
        (_advise_with(price_per_cpu_hour=math.nan), "price_per_cpu_hour"),
        (_advise_with(observed_wait_p95_s=-1.0), "observed_wait_p95_s"),
        (_advise_with(window_s=0.0), "window_s"),
    ],
)
def test_bad_inputs_name_the_parameter(call: Callable[[], object], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        call()
