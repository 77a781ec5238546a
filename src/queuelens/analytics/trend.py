"""Straight-line trend of a metric over time, with a significance test and a forecast.

    trend = fit_trend([(t, 120.0), (t + 60, 131.0), (t + 120, 139.0), (t + 180, 152.0)])
    trend.direction, trend.slope_per_hour          # Direction.rising, 624.0 (per hour)
    fit_trend(points, horizon_s=3600).forecast     # ForecastPoint(at_s=..., low=..., high=...)

The line is fitted by ordinary least squares over ``(unix_time_s, value)`` points. Time is
measured from the earliest point (``t0_s``), so ``intercept`` is the fitted value at ``t0_s``
and large Unix times do not cost precision. Points whose time or value is NaN or infinite
are dropped before fitting; ``n`` counts the points used.

``direction`` comes from a two-sided t test of "slope = 0" with ``n - 2`` degrees of
freedom: rising or falling when ``p_value < alpha``, flat otherwise. A line through fewer
than three points, or through points that all share one time, cannot be tested: it is flat
with ``p_value`` 1 and ``r_squared`` None (no points at all also gives a NaN intercept). A
perfect fit of a sloped line has ``p_value`` 0; a constant series is flat with ``p_value`` 1
and ``r_squared`` None (there is no variance to explain).

The Student t CDF and quantile are computed here (regularized incomplete beta by continued
fraction, quantile by bisection), so nothing beyond the standard library is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from queuelens.analytics.forecast import ForecastPoint

__all__ = ["Direction", "Trend", "fit_trend", "student_t_cdf", "student_t_quantile"]

_SECONDS_PER_HOUR = 3600.0
_TINY = 1e-300  # keeps Lentz's method away from division by zero
_FRACTION_TOLERANCE = 1e-15
_FRACTION_MAX_TERMS = 10_000
_QUANTILE_RELATIVE_TOLERANCE = 1e-13


class Direction(StrEnum):
    """Where a metric is heading, by a two-sided test of its slope."""

    #: the slope is significantly above zero
    rising = "rising"
    #: the slope is significantly below zero
    falling = "falling"
    #: no significant slope, or too few points to tell
    flat = "flat"


@dataclass(frozen=True, slots=True)
class Trend:
    """A least-squares line through ``(unix_time_s, value)`` points; see the module docstring.

    trend = fit_trend(depth_points)
    trend.value_at(time.time() + 600)     # the line's value ten minutes from now
    """

    #: finite points used in the fit
    n: int
    #: time of the earliest point (NaN when there are none); the line is relative to it
    t0_s: float
    #: the fitted value at ``t0_s``
    intercept: float
    slope_per_s: float
    #: share of the variance the line explains; None when undefined (see module docstring)
    r_squared: float | None
    #: two-sided p-value of the test "slope = 0"; 1 when it cannot be tested
    p_value: float
    direction: Direction
    #: the test's significance level
    alpha: float
    #: standard deviation of the residuals (n - 2 degrees of freedom); None below 3 points
    residual_sd: float | None
    #: the line ``horizon_s`` after the latest point, with a ``1 - alpha`` prediction interval
    forecast: ForecastPoint | None = None

    @property
    def slope_per_hour(self) -> float:
        return self.slope_per_s * _SECONDS_PER_HOUR

    def value_at(self, t_s: float) -> float:
        """The line's value at Unix time ``t_s``."""
        return self.intercept + self.slope_per_s * (t_s - self.t0_s)


def fit_trend(
    points: Sequence[tuple[float, float]],
    *,
    horizon_s: float | None = None,
    alpha: float = 0.05,
) -> Trend:
    """Fit a line to ``(unix_time_s, value)`` points and test its slope at level ``alpha``.

    With ``horizon_s``, ``forecast`` is the line's value ``horizon_s`` seconds after the
    latest point, with the OLS prediction interval for one new observation at ``1 - alpha``.
    The interval is infinite when it cannot be estimated (fewer than 3 points, one time).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05 for a 95% test; got {alpha!r}")
    if horizon_s is not None and not (math.isfinite(horizon_s) and horizon_s >= 0):
        raise ValueError(f"horizon_s must be a finite number >= 0 seconds, got {horizon_s!r}")
    used = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    n = len(used)
    if n == 0:
        return Trend(0, math.nan, math.nan, 0.0, None, 1.0, Direction.flat, alpha, None)

    t0_s = min(t for t, _ in used)
    xs = [t - t0_s for t, _ in used]
    ys = [v for _, v in used]
    x_mean = math.fsum(xs) / n
    y_mean = math.fsum(ys) / n
    sxx = math.fsum((x - x_mean) ** 2 for x in xs)
    sxy = math.fsum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx > 0.0 else 0.0  # all at one time: flat through the mean
    intercept = y_mean - slope * x_mean

    r_squared: float | None = None
    p_value = 1.0
    residual_sd: float | None = None
    if n >= 3 and sxx > 0.0:
        degrees = n - 2
        sse = math.fsum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
        syy = math.fsum((y - y_mean) ** 2 for y in ys)
        residual_sd = math.sqrt(sse / degrees)
        r_squared = None if syy == 0.0 else min(1.0, max(0.0, 1.0 - sse / syy))
        if sse == 0.0:  # a perfect fit: any slope is infinitely significant
            p_value = 0.0 if slope != 0.0 else 1.0
        else:
            p_value = _two_sided_p(slope / (residual_sd / math.sqrt(sxx)), degrees)
    if p_value < alpha:
        direction = Direction.rising if slope > 0 else Direction.falling
    else:
        direction = Direction.flat

    point = None
    if horizon_s is not None:
        x = max(xs) + horizon_s
        value = intercept + slope * x
        half_width = math.inf
        if residual_sd is not None:
            quantile = student_t_quantile(1.0 - alpha / 2.0, n - 2)
            half_width = quantile * residual_sd * math.sqrt(1 + 1 / n + (x - x_mean) ** 2 / sxx)
        point = ForecastPoint(t0_s + x, value, value - half_width, value + half_width)
    return Trend(
        n, t0_s, intercept, slope, r_squared, p_value, direction, alpha, residual_sd, point
    )


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: ``student_t_cdf(2.228, 10)``
    is 0.975."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    tail = _upper_tail(abs(t), df)
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = ``p``: ``student_t_quantile(0.975, 10)`` is 2.228 (to 3 d.p.)."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be a probability in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    target = 1.0 - p  # the upper tail, which falls as t grows
    high = 1.0
    while _upper_tail(high, df) > target:
        high *= 2.0
        if math.isinf(high):  # pragma: no cover - p this close to 1 underflows first
            return math.inf
    low = 0.0 if high == 1.0 else high / 2.0
    while high - low > _QUANTILE_RELATIVE_TOLERANCE * high:
        middle = (low + high) / 2.0
        if _upper_tail(middle, df) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _check_df(df: float) -> None:
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"df (degrees of freedom) must be a finite number > 0, got {df!r}")


def _two_sided_p(t_statistic: float, df: float) -> float:
    """P(|T| >= |t|); computed as one incomplete beta, so tiny p-values keep their digits."""
    return _regularized_beta(df / (df + t_statistic * t_statistic), df / 2.0, 0.5)


def _upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0."""
    return 0.5 * _two_sided_p(t, df)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # the continued fraction converges fast only below this point; use I_x(a,b) = 1 - I_1-x(b,a)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """1 / (1 + d1 / (1 + d2 / (1 + ...))), the incomplete beta continued fraction.

    The terms are d(2m+1) = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)) and
    d(2m) = m(b-m)x / ((a+2m-1)(a+2m)); evaluated by the modified Lentz method.
    """
    value = 1.0  # the leading 1 of the denominator
    c = value
    d = 0.0
    for j in range(1, _FRACTION_MAX_TERMS + 1):
        m = j // 2
        if j % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + term / c
        c = c if abs(c) > _TINY else _TINY
        delta = c * d
        value *= delta
        if abs(delta - 1.0) < _FRACTION_TOLERANCE:
            return 1.0 / value
    raise ArithmeticError(  # pragma: no cover - needs astronomically many degrees of freedom
        f"incomplete beta did not converge for x={x!r}, a={a!r}, b={b!r}"
    )
