"""Least-squares trends: exact lines, noise, the t distribution and the edge cases."""

from __future__ import annotations

import math
import random

import pytest

from queuelens.analytics.trend import (
    Direction,
    fit_trend,
    student_t_cdf,
    student_t_quantile,
)

T0 = 1_700_000_000.0  # realistic Unix times, to show they cost no precision


def ramp(
    slope_per_s: float, n: int = 20, *, start: float = 5.0, step_s: float = 10.0
) -> list[tuple[float, float]]:
    return [(T0 + step_s * i, start + slope_per_s * step_s * i) for i in range(n)]


def test_a_rising_ramp_gives_its_exact_slope_and_a_perfect_fit() -> None:
    trend = fit_trend(ramp(0.2))
    assert trend.n == 20
    assert trend.slope_per_s == pytest.approx(0.2, rel=1e-12)
    assert trend.slope_per_hour == pytest.approx(720.0, rel=1e-12)
    assert trend.t0_s == T0
    assert trend.intercept == pytest.approx(5.0, rel=1e-12)
    assert trend.value_at(T0 + 100.0) == pytest.approx(25.0, rel=1e-12)
    assert trend.r_squared == pytest.approx(1.0, abs=1e-12)
    assert trend.p_value < 1e-12
    assert trend.direction is Direction.rising


def test_a_falling_ramp_is_falling() -> None:
    trend = fit_trend(ramp(-0.5, start=1000.0))
    assert trend.slope_per_s == pytest.approx(-0.5, rel=1e-12)
    assert trend.direction is Direction.falling
    assert trend.direction == "falling"


def test_the_forecast_of_a_perfect_line_continues_it_with_no_width() -> None:
    trend = fit_trend(ramp(0.2), horizon_s=600.0)
    assert trend.forecast is not None
    assert trend.forecast.at_s == T0 + 190.0 + 600.0
    assert trend.forecast.value == pytest.approx(5.0 + 0.2 * 790.0, rel=1e-12)
    assert trend.forecast.high - trend.forecast.low == pytest.approx(0.0, abs=1e-9)


def test_points_in_any_order_give_the_same_line() -> None:
    points = ramp(0.3, n=10)
    shuffled = points[::-1]
    assert fit_trend(shuffled).slope_per_s == pytest.approx(fit_trend(points).slope_per_s)
    assert fit_trend(shuffled).intercept == pytest.approx(5.0)


def test_the_p_value_matches_the_cauchy_distribution_at_one_degree_of_freedom() -> None:
    # x = 0, 1, 2 and y = 0, 1, 3: slope 1.5, SSE 1/6, Sxx 2, so t = 1.5 / sqrt(1/12).
    trend = fit_trend([(0.0, 0.0), (1.0, 1.0), (2.0, 3.0)])
    t = 1.5 / math.sqrt(1.0 / 12.0)
    assert trend.slope_per_s == pytest.approx(1.5)
    assert trend.p_value == pytest.approx(1.0 - 2.0 * math.atan(t) / math.pi, rel=1e-10)
    assert trend.r_squared == pytest.approx(1.0 - (1.0 / 6.0) / (14.0 / 3.0))
    assert trend.residual_sd == pytest.approx(math.sqrt(1.0 / 6.0))
    assert trend.direction is Direction.flat  # p ≈ 0.12: three points do not prove a trend


def test_pure_noise_is_rarely_called_a_trend() -> None:
    # At alpha 0.05 about 5 of 100 noise series are flagged by chance; 10 would be a bug.
    flagged = 0
    for seed in range(100):
        rng = random.Random(seed)
        points = [(T0 + 15.0 * i, rng.gauss(50.0, 4.0)) for i in range(30)]
        flagged += fit_trend(points).direction is not Direction.flat
    assert flagged <= 10


def test_a_modest_real_slope_is_found_despite_noise() -> None:
    found = 0
    for seed in range(100):
        rng = random.Random(seed)
        points = [(T0 + 60.0 * i, 10.0 + 0.003 * 60.0 * i + rng.gauss(0.0, 2.0)) for i in range(30)]
        found += fit_trend(points).direction is Direction.rising
    assert found >= 90


def test_the_prediction_interval_covers_a_new_observation_about_95_percent_of_the_time() -> None:
    covered = 0
    for seed in range(100):
        rng = random.Random(seed)
        points = [(T0 + 10.0 * i, 3.0 + 0.01 * 10.0 * i + rng.gauss(0.0, 1.0)) for i in range(20)]
        trend = fit_trend(points, horizon_s=50.0)
        assert trend.forecast is not None
        actual = 3.0 + 0.01 * (190.0 + 50.0) + rng.gauss(0.0, 1.0)
        covered += trend.forecast.low <= actual <= trend.forecast.high
    assert covered >= 88


def test_nan_and_infinite_points_are_dropped() -> None:
    points = [*ramp(0.2, n=10), (math.nan, 1.0), (T0 + 5.0, math.inf), (T0 + 7.0, math.nan)]
    trend = fit_trend(points)
    assert trend.n == 10
    assert trend.slope_per_s == pytest.approx(0.2)


def test_no_points_is_flat_with_an_undefined_line() -> None:
    trend = fit_trend([], horizon_s=60.0)
    assert (trend.n, trend.slope_per_s, trend.p_value) == (0, 0.0, 1.0)
    assert trend.direction is Direction.flat
    assert math.isnan(trend.intercept)
    assert trend.r_squared is None
    assert trend.forecast is None


def test_one_point_is_flat_through_it_with_an_unbounded_forecast() -> None:
    trend = fit_trend([(T0, 7.0)], horizon_s=60.0)
    assert (trend.n, trend.intercept, trend.slope_per_s, trend.p_value) == (1, 7.0, 0.0, 1.0)
    assert trend.direction is Direction.flat
    assert trend.forecast is not None
    assert (trend.forecast.at_s, trend.forecast.value) == (T0 + 60.0, 7.0)
    assert (trend.forecast.low, trend.forecast.high) == (-math.inf, math.inf)


def test_two_points_give_their_line_but_no_test() -> None:
    trend = fit_trend([(T0, 1.0), (T0 + 10.0, 3.0)], horizon_s=10.0)
    assert trend.slope_per_s == pytest.approx(0.2)
    assert (trend.p_value, trend.r_squared, trend.residual_sd) == (1.0, None, None)
    assert trend.direction is Direction.flat
    assert trend.forecast is not None
    assert trend.forecast.value == pytest.approx(5.0)
    assert math.isinf(trend.forecast.high)


def test_points_at_one_time_are_flat_through_their_mean() -> None:
    trend = fit_trend([(T0, 1.0), (T0, 2.0), (T0, 6.0)])
    assert (trend.slope_per_s, trend.intercept, trend.p_value) == (0.0, 3.0, 1.0)
    assert trend.r_squared is None
    assert trend.direction is Direction.flat


def test_a_constant_series_is_flat_without_dividing_by_zero() -> None:
    trend = fit_trend([(T0 + 60.0 * i, 4.0) for i in range(10)], horizon_s=60.0)
    assert (trend.slope_per_s, trend.intercept, trend.p_value) == (0.0, 4.0, 1.0)
    assert trend.r_squared is None
    assert trend.direction is Direction.flat
    assert trend.forecast is not None
    assert (trend.forecast.low, trend.forecast.value, trend.forecast.high) == (4.0, 4.0, 4.0)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, math.nan])
def test_an_alpha_outside_zero_one_is_rejected(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        fit_trend(ramp(1.0), alpha=alpha)


@pytest.mark.parametrize("horizon_s", [-1.0, math.inf, math.nan])
def test_a_bad_horizon_is_rejected(horizon_s: float) -> None:
    with pytest.raises(ValueError, match="horizon_s"):
        fit_trend(ramp(1.0), horizon_s=horizon_s)


@pytest.mark.parametrize(
    ("p", "df", "table_value"),
    [
        (0.975, 10, 2.228),
        (0.975, 1, 12.706),
        (0.95, 5, 2.015),
        (0.995, 30, 2.750),
        (0.9995, 1, 636.619),
        (0.975, 1_000_000, 1.960),
    ],
)
def test_t_quantiles_match_the_printed_table(p: float, df: float, table_value: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(table_value, abs=5e-4)
    assert student_t_quantile(1.0 - p, df) == pytest.approx(-table_value, abs=5e-4)
    assert student_t_cdf(table_value, df) == pytest.approx(p, abs=1e-4)


def test_t_quantile_is_exact_where_the_cdf_has_a_closed_form() -> None:
    # one degree of freedom is Cauchy: the quantile is tan(pi (p - 1/2))
    assert student_t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert student_t_quantile(0.5, 7) == 0.0


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 40.0])
def test_t_cdf_matches_closed_forms_and_is_symmetric(t: float) -> None:
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)
    for df in (1.0, 3.5, 12.0, 200.0):
        assert student_t_cdf(-t, df) == pytest.approx(1.0 - student_t_cdf(t, df), abs=1e-14)


@pytest.mark.parametrize("df", [0.5, 1.0, 4.0, 25.0, 10_000.0])
def test_t_quantile_inverts_the_cdf(df: float) -> None:
    for p in (1e-6, 0.01, 0.2, 0.5, 0.8, 0.99, 1 - 1e-6):
        assert student_t_cdf(student_t_quantile(p, df), df) == pytest.approx(p, rel=1e-9)


def test_t_functions_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="df"):
        student_t_cdf(1.0, 0.0)
    with pytest.raises(ValueError, match="df"):
        student_t_quantile(0.5, math.inf)
    with pytest.raises(ValueError, match="p must"):
        student_t_quantile(1.0, 3.0)
    with pytest.raises(ValueError, match="t must"):
        student_t_cdf(math.nan, 3.0)
