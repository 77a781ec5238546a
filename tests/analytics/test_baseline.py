"""Robust baselines: median/MAD, their fallbacks, confidence, EWMA and hour-of-week seasons."""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any

import pytest

from queuelens.analytics.baseline import (
    MAD_TO_SIGMA,
    confidence_for,
    finite_points,
    fit_baseline,
    hour_of_week,
    robust_spread,
)

#: 2024-01-01 00:00 UTC, a Monday: hour-of-week slot 0
MONDAY_S = 1_704_067_200.0
HOUR_S = 3600.0
WEEK_S = 168 * HOUR_S
#: Monday 10:00 UTC: a weekly batch makes this hour far busier than any other, every week
PEAK_HOUR_OF_WEEK = 10
#: the peak's normal level: base 100, + daily cycle, + business hours 80, + batch 250
PEAK_LEVEL = 100 + 30 * math.sin(2 * math.pi * 4 / 24) + 80 + 250


def weekly_level(unix_time_s: float) -> float:
    """A metric with a daily cycle, busier weekday office hours and a Monday 10:00 batch."""
    day, hour = divmod(hour_of_week(unix_time_s), 24)
    level = 100 + 30 * math.sin(2 * math.pi * (hour - 6) / 24)
    if day < 5 and 9 <= hour < 17:
        level += 80
    if day == 0 and hour == PEAK_HOUR_OF_WEEK:
        level += 250
    return level


def weekly_series(seed: int, weeks: int, noise: float = 3.0) -> list[tuple[float, float]]:
    """Hourly points from :data:`MONDAY_S`: :func:`weekly_level` plus seeded Gaussian noise."""
    rng = random.Random(seed)
    times = [MONDAY_S + i * HOUR_S for i in range(weeks * 168)]
    return [(t, weekly_level(t) + rng.gauss(0, noise)) for t in times]


def noise_series(seed: int, n: int, step_s: float = HOUR_S) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(MONDAY_S + i * step_s, 100 + rng.gauss(0, 5)) for i in range(n)]


def test_hour_of_week_counts_from_monday_midnight_utc() -> None:
    assert hour_of_week(MONDAY_S) == 0
    assert hour_of_week(MONDAY_S + HOUR_S - 1) == 0
    assert hour_of_week(MONDAY_S + 10 * HOUR_S + 59 * 60) == 10
    assert hour_of_week(MONDAY_S + WEEK_S - 1) == 167
    assert hour_of_week(MONDAY_S + 3 * WEEK_S) == 0
    assert hour_of_week(0.0) == 72  # the epoch was a Thursday


def test_centre_is_the_median_and_spread_the_scaled_mad() -> None:
    points = [(MONDAY_S + i * 60, v) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 100.0])]
    baseline = fit_baseline(points, step_s=60)
    assert baseline.center == 3.0
    assert baseline.spread == pytest.approx(MAD_TO_SIGMA)  # MAD is 1; the 100 changes nothing
    assert baseline.z_score(3.0 + 2 * MAD_TO_SIGMA, at=MONDAY_S) == pytest.approx(2.0)
    band = baseline.expected(MONDAY_S)
    assert band is not None
    assert (band.low, band.high) == pytest.approx((3 - 3 * MAD_TO_SIGMA, 3 + 3 * MAD_TO_SIGMA))
    assert not band.seasonal


def test_spread_falls_back_when_the_mad_is_zero() -> None:
    # over half the values equal the median: IQR / 1.349 takes over
    assert robust_spread([5, 5, 5, 5, 7, 9]) == pytest.approx(1.5 / 1.349)
    # the IQR is zero too: mean absolute deviation * sqrt(pi / 2)
    assert robust_spread([5] * 9 + [8]) == pytest.approx(0.3 * math.sqrt(math.pi / 2))
    assert robust_spread([5, 5, 5]) == 0.0
    assert math.isnan(robust_spread([]))


def test_a_constant_series_gets_a_floor_spread_and_still_scores_an_outlier() -> None:
    points = [(MONDAY_S + i * 60, 5.0) for i in range(100)]
    baseline = fit_baseline(points, step_s=60)
    assert baseline.spread == pytest.approx(0.05)  # 1% of the median
    assert baseline.z_score(6.0, at=MONDAY_S) == pytest.approx(20.0)
    zeros = fit_baseline([(t, 0.0) for t, _ in points], step_s=60)
    assert zeros.spread == 1e-9
    assert math.isfinite(zeros.z_score(1.0, at=MONDAY_S))


def test_confidence_rises_with_samples_and_never_reaches_one() -> None:
    levels = [confidence_for(n) for n in range(2000)]
    assert levels[0] == 0.0
    assert all(a < b < 1 for a, b in itertools.pairwise(levels))
    assert confidence_for(270) >= 0.9
    fitted = [fit_baseline(noise_series(0, n), step_s=HOUR_S).confidence for n in (1, 10, 100, 500)]
    assert fitted == sorted(fitted)
    assert fitted == [confidence_for(n) for n in (1, 10, 100, 500)]


def test_empty_input_gives_an_empty_baseline() -> None:
    for points in ([], [(MONDAY_S, math.nan), (math.inf, 1.0)]):
        baseline = fit_baseline(points, step_s=60)
        assert baseline.n == 0
        assert baseline.confidence == 0.0
        assert math.isnan(baseline.center)
        assert math.isnan(baseline.ewma_level)
        assert baseline.expected(MONDAY_S) is None
        assert math.isnan(baseline.z_score(1.0, at=MONDAY_S))


def test_nan_and_infinite_points_are_dropped() -> None:
    clean = noise_series(1, 300)
    dirty = [*clean, (MONDAY_S, math.nan), (math.nan, 1.0), (MONDAY_S, -math.inf)]
    dirty.reverse()  # order does not matter either
    assert finite_points(dirty) == clean
    a, b = fit_baseline(clean, step_s=HOUR_S), fit_baseline(dirty, step_s=HOUR_S)
    for name in ("n", "center", "spread", "ewma_level", "z_q1", "z_q3", "first_s", "last_s"):
        assert getattr(a, name) == getattr(b, name), name


def test_ewma_level_moves_halfway_in_one_half_life() -> None:
    points = [(i * 60.0, 0.0) for i in range(100)] + [(i * 60.0, 1.0) for i in range(100, 112)]
    baseline = fit_baseline(points, step_s=60, ewma_half_life_s=12 * 60)
    assert baseline.ewma_level == pytest.approx(0.5)
    assert fit_baseline(points, step_s=60).ewma_half_life_s == 12 * 60  # default: 12 steps


def test_weekly_history_gives_a_seasonal_baseline() -> None:
    baseline = fit_baseline(weekly_series(seed=0, weeks=3), step_s=HOUR_S)
    assert baseline.seasonal
    assert len(baseline.slots) == 168
    # leave-one-out residuals of 3-sample slots: about noise * sqrt(1.5), far below the cycle
    assert 2.5 < baseline.seasonal_spread < 6 < baseline.spread
    peak_next_week = MONDAY_S + 3 * WEEK_S + PEAK_HOUR_OF_WEEK * HOUR_S
    band = baseline.expected(peak_next_week)
    assert band is not None
    assert band.seasonal
    assert band.low < PEAK_LEVEL < band.high
    assert band.confidence == confidence_for(3)  # three Mondays at 10:00
    night = baseline.expected(MONDAY_S + 3 * WEEK_S + 2 * 24 * HOUR_S + 3 * HOUR_S)
    assert night is not None
    assert night.high < 100  # a Wednesday 03:00 is quiet


def test_a_global_baseline_calls_the_weekly_peak_abnormal() -> None:
    history = weekly_series(seed=0, weeks=3)
    baseline = fit_baseline(history, step_s=HOUR_S, min_seasonal_weeks=4)
    assert not baseline.seasonal
    assert math.isnan(baseline.seasonal_spread)
    assert baseline.z_score(PEAK_LEVEL, at=MONDAY_S + PEAK_HOUR_OF_WEEK * HOUR_S) > 3.5


def test_seasonality_is_dropped_when_it_explains_nothing() -> None:
    baseline = fit_baseline(noise_series(2, 3 * 168), step_s=HOUR_S)
    assert not baseline.seasonal
    assert baseline.seasonal_spread > baseline.spread  # three samples a slot only add noise


def test_slots_without_samples_fall_back_to_the_global_values() -> None:
    history = [(t, v) for t, v in weekly_series(seed=3, weeks=3) if hour_of_week(t) != 50]
    baseline = fit_baseline(history, step_s=HOUR_S)
    assert baseline.seasonal
    assert baseline.slots[50] is None
    band = baseline.expected(MONDAY_S + 50 * HOUR_S)
    assert band is not None
    assert not band.seasonal
    assert (band.center, band.confidence) == (baseline.center, baseline.confidence)


def test_minute_data_groups_by_the_hour_of_each_point() -> None:
    rng = random.Random(4)
    points = [
        (t, weekly_level(t) + rng.gauss(0, 3))
        for t in (MONDAY_S + i * 60.0 for i in range(2 * 7 * 24 * 60))
    ]
    started = time.perf_counter()
    baseline = fit_baseline(points, step_s=60)
    assert time.perf_counter() - started < 0.5  # 20,160 points
    assert baseline.seasonal
    slot = baseline.slots[PEAK_HOUR_OF_WEEK]
    assert slot is not None
    assert slot.n == 120
    assert slot.confidence == confidence_for(120)
    assert slot.center == pytest.approx(PEAK_LEVEL, abs=2)


def test_coarser_than_hourly_steps_are_never_seasonal() -> None:
    rng = random.Random(5)
    daily = [(MONDAY_S + d * 86400.0, 100 + rng.gauss(0, 5)) for d in range(60)]
    assert not fit_baseline(daily, step_s=86400).seasonal


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_s": 0}, "step_s=0"),
        ({"step_s": math.nan}, "step_s=nan"),
        ({"step_s": 60, "band_k": -1}, "band_k=-1"),
        ({"step_s": 60, "min_slot_samples": 1}, "min_slot_samples=1"),
    ],
)
def test_invalid_arguments_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_baseline([(MONDAY_S, 1.0)], **kwargs)


def test_expected_needs_a_finite_time() -> None:
    baseline = fit_baseline(noise_series(0, 10), step_s=HOUR_S)
    with pytest.raises(ValueError, match="at=nan is not a finite unix time"):
        baseline.expected(math.nan)
