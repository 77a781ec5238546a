"""Forecasts of a queue metric (depth, arrival rate) with prediction intervals.

    fc = forecast(depth_points, horizon_s=900, step_s=60)   # [(unix_time_s, depth), ...]
    fc.points[-1]                   # ForecastPoint(at_s=..., value=..., low=..., high=...)
    time_to_threshold(fc, 10_000)   # seconds until depth is expected to reach 10k, or None

Points are first put on a regular grid of ``step_s`` seconds (by default the median spacing
of the points) that ends at the latest point. Each slot takes the latest point at most half
a step after it, so a gap repeats the last value seen and points denser than the step are
thinned. At most :data:`MAX_STEPS` of the most recent slots are used.

Methods:

- ``"holt"``: Holt's linear method, ETS(A,A,N), in pure Python. The smoothing weights
  minimise the one-step-ahead squared error (a coarse grid, then a pattern search). In the
  error-correction form ``level += slope + alpha·e``, ``slope += beta·e`` (``beta`` is
  ``alpha·beta*`` for the textbook ``beta*``), the h-step forecast error is
  ``e(T+h) + Σ_{j<h} (alpha + j·beta)·e(T+h-j)``, whose variance is
  ``σ²·[1 + (h-1)(alpha² + alpha·beta·h + beta²·h(2h-1)/6)]``, as in Hyndman and
  Athanasopoulos, *Forecasting: Principles and Practice*. Intervals are normal.
- ``"ets"``: statsmodels' ``ETSModel`` (additive error and trend, plus additive seasonality
  with ``season_length``), from the ``forecast`` extra. If statsmodels is missing or fails,
  Holt is used instead and ``note`` says why.
- ``"auto"``: ETS when statsmodels is installed and there are at least
  :data:`MIN_ETS_STEPS` steps (two seasons for a seasonal model); Holt otherwise.

Values, low and high are floored at 0 unless ``non_negative=False``. Everything imports
only the standard library; statsmodels is imported when an ETS forecast is made.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_STEPS",
    "MIN_ETS_STEPS",
    "Forecast",
    "ForecastPoint",
    "forecast",
    "time_to_drain",
    "time_to_reach",
    "time_to_threshold",
]

#: the longest history (most recent slots) and horizon, in steps, a forecast will use
MAX_STEPS = 10_000
#: "auto" picks statsmodels' ETS from this many steps of history (non-seasonal)
MIN_ETS_STEPS = 10

_METHODS = ("auto", "holt", "ets")
_INSTALL_HINT = "pip install 'queuelens[forecast]'"
_INITIAL_SLOPE_STEPS = 4  # the starting slope is the mean change over the first few steps
_ALPHA_GRID = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
_BETA_STAR_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
_ALPHA_MIN = 0.01
_SEARCH_FIRST_STEP = 0.05
_SEARCH_LAST_STEP = 0.002
_SEARCH_MAX_EVALUATIONS = 300


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One forecast step: the expected value at ``at_s`` and its prediction interval."""

    #: Unix time the value is forecast for
    at_s: float
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Forecast:
    """What :func:`forecast` returns; see the module docstring.

    fc = forecast(rate_points, horizon_s=600, level=0.9, method="ets")
    fc.method, fc.note              # "holt", "statsmodels is not installed (...); used Holt"
    [(p.at_s, p.low, p.high) for p in fc.points]
    """

    #: the method that produced the points
    method: Literal["holt", "ets"]
    step_s: float
    #: the coverage each interval aims for, e.g. 0.95
    level: float
    #: time and value of the latest observation; the forecast starts there
    last_at_s: float
    last_value: float
    #: one point per step after ``last_at_s``, covering the horizon
    points: tuple[ForecastPoint, ...]
    #: caveats, e.g. why the method differs from the one asked for; None when there are none
    note: str | None = None


def forecast(
    points: Sequence[tuple[float, float]],
    *,
    horizon_s: float,
    step_s: float | None = None,
    level: float = 0.95,
    method: Literal["auto", "holt", "ets"] = "auto",
    season_length: int | None = None,
    non_negative: bool = True,
) -> Forecast:
    """Forecast ``(unix_time_s, value)`` points ``horizon_s`` seconds past the latest one.

    Points with a NaN or infinite time or value are dropped; at least two must remain, at
    distinct times. ``season_length`` is in steps (e.g. 24 for daily cycles of hourly steps).
    Bad arguments raise ValueError naming the parameter.
    """
    _check_positive("horizon_s", horizon_s)
    if step_s is not None:
        _check_positive("step_s", step_s)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95 for 95% intervals; got {level!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    if season_length is not None and season_length < 2:
        raise ValueError(f"season_length must be at least 2 steps or None; got {season_length!r}")
    observed = sorted(
        ((t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)), key=lambda p: p[0]
    )
    if len(observed) < 2:
        raise ValueError(
            f"points must hold at least 2 (time, value) pairs with finite numbers; "
            f"got {len(observed)}"
        )
    if step_s is None:
        step_s = _median_step(observed)
    steps = max(1, math.ceil(horizon_s / step_s - 1e-9))
    if steps > MAX_STEPS:
        raise ValueError(
            f"horizon_s / step_s is {steps} steps, more than {MAX_STEPS}; "
            f"shorten horizon_s or lengthen step_s"
        )
    values, notes = _regular_series(observed, step_s)
    chosen, choice_notes = _choose_method(method, len(values), season_length)
    notes += choice_notes

    rows: list[tuple[float, float, float]] | None = None
    if chosen == "ets":
        try:
            rows, ets_notes = _ets_rows(values, steps, level, season_length)
            notes += ets_notes
        except Exception as error:  # whatever statsmodels raises, Holt still gives an answer
            notes.append(f"statsmodels ETS failed ({type(error).__name__}: {error}); used Holt")
            chosen = "holt"
    if rows is None:
        rows = _holt_rows(values, steps, level)

    def floor(x: float) -> float:
        return max(0.0, x) if non_negative else x

    last_at_s, last_value = observed[-1]
    return Forecast(
        method=chosen,
        step_s=step_s,
        level=level,
        last_at_s=last_at_s,
        last_value=last_value,
        points=tuple(
            ForecastPoint(last_at_s + h * step_s, floor(mean), floor(low), floor(high))
            for h, (mean, low, high) in enumerate(rows, start=1)
        ),
        note="; ".join(notes) or None,
    )


def time_to_threshold(forecast: Forecast, threshold: float, *, rising: bool = True) -> float | None:
    """Seconds from the latest observation until the point forecast reaches ``threshold``.

    ``rising`` asks when the value will be at or above the threshold; ``rising=False`` asks
    when it will be at or below it (a queue draining to 0). The path runs from the latest
    observation through the forecast points, interpolated linearly between them. 0 when the
    latest observation is already there; None when the horizon ends first.
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")

    def reached(value: float) -> bool:
        return value >= threshold if rising else value <= threshold

    if reached(forecast.last_value):
        return 0.0
    before_s, before = forecast.last_at_s, forecast.last_value
    for point in forecast.points:
        if reached(point.value):
            fraction = (threshold - before) / (point.value - before)
            return before_s + fraction * (point.at_s - before_s) - forecast.last_at_s
        before_s, before = point.at_s, point.value
    return None


def time_to_drain(depth: float, arrival_per_s: float, service_per_s: float) -> float | None:
    """Seconds until a backlog of ``depth`` jobs is gone: ``time_to_drain(100, 1, 2)`` is 100.

    0 for an empty queue; None (never) when jobs arrive at least as fast as they are served.
    """
    for name, value in (
        ("depth", depth),
        ("arrival_per_s", arrival_per_s),
        ("service_per_s", service_per_s),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if depth == 0:
        return 0.0
    if service_per_s <= arrival_per_s:
        return None
    return depth / (service_per_s - arrival_per_s)


def time_to_reach(
    value: float, slope_per_s: float, threshold: float, *, rising: bool = True
) -> float | None:
    """Seconds until ``value`` changing at ``slope_per_s`` reaches ``threshold``.

    ``time_to_reach(400, 2.0, 1000)`` is 300. ``rising`` asks for "at or above", and
    ``rising=False`` for "at or below"; 0 when already there, None when heading away.
    """
    for name, number in (("value", value), ("slope_per_s", slope_per_s), ("threshold", threshold)):
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, got {number!r}")
    gap = threshold - value if rising else value - threshold
    speed = slope_per_s if rising else -slope_per_s
    if gap <= 0:
        return 0.0
    if speed <= 0:
        return None
    return gap / speed


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")


def _median_step(observed: Sequence[tuple[float, float]]) -> float:
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(observed) if b[0] > a[0]]
    if not gaps:
        raise ValueError("points all share one time; they need at least 2 distinct times")
    return statistics.median(gaps)


def _regular_series(
    observed: Sequence[tuple[float, float]], step_s: float
) -> tuple[list[float], list[str]]:
    """Values at ``last - k·step_s``, oldest first; see the module docstring."""
    first_s, last_s = observed[0][0], observed[-1][0]
    slots = round((last_s - first_s) / step_s) + 1
    if slots < 2:
        raise ValueError(
            f"points span {last_s - first_s:g} s, less than one step_s ({step_s:g} s); "
            f"a forecast needs at least 2 steps of history"
        )
    notes = []
    if slots > MAX_STEPS:
        slots = MAX_STEPS
        notes.append(f"only the most recent {MAX_STEPS} steps were used")
    start_s = last_s - (slots - 1) * step_s
    values = []
    current = observed[0][1]
    index = 0
    for slot in range(slots):
        edge_s = start_s + slot * step_s + step_s / 2
        while index < len(observed) and observed[index][0] <= edge_s:
            current = observed[index][1]
            index += 1
        values.append(current)
    return values, notes


def _statsmodels_available() -> bool:
    return importlib.util.find_spec("statsmodels") is not None


def _choose_method(
    method: str, steps: int, season_length: int | None
) -> tuple[Literal["holt", "ets"], list[str]]:
    """The method to run and, when it is not what was asked for, why."""
    if method == "holt":
        return "holt", ["season_length is ignored by Holt's method"] if season_length else []
    needed = 2 * season_length if season_length else MIN_ETS_STEPS
    if not _statsmodels_available():
        reason = f"statsmodels is not installed ({_INSTALL_HINT})"
    elif season_length and steps < needed:
        reason = f"a seasonal model needs {needed} steps (2 seasons), got {steps}"
    elif method == "ets" or steps >= needed:
        return "ets", []
    else:  # "auto" with too short a history for ETS to beat Holt
        return "holt", []
    if method == "ets":
        return "holt", [f"{reason}; used Holt"]
    return "holt", [f"seasonality ignored: {reason}"] if season_length else []


def _ets_rows(
    values: list[float], steps: int, level: float, season_length: int | None
) -> tuple[list[tuple[float, float, float]], list[str]]:
    """(mean, low, high) per step from statsmodels' ETSModel, and any warnings it gave."""
    # Warnings are recorded, not raised: they become part of the note. (Not thread-safe,
    # like every use of warnings.catch_warnings.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pandas as pd
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        model = ETSModel(
            pd.Series(values, dtype=float),
            error="add",
            trend="add",
            seasonal="add" if season_length else None,
            seasonal_periods=season_length,
        )
        fitted = model.fit(disp=False)
        prediction = fitted.get_prediction(start=len(values), end=len(values) + steps - 1)
        frame = prediction.summary_frame(alpha=1.0 - level)
    rows = [
        (float(mean), float(low), float(high))
        for mean, low, high in zip(frame["mean"], frame["pi_lower"], frame["pi_upper"], strict=True)
    ]
    if len(rows) != steps or not all(
        math.isfinite(low) and math.isfinite(high) and low <= mean <= high
        for mean, low, high in rows
    ):
        raise ArithmeticError("statsmodels gave a missing, non-finite or inverted interval")
    notes = sorted({f"statsmodels warned: {warning.message}" for warning in caught})
    return rows, notes


def _holt_rows(values: list[float], steps: int, level: float) -> list[tuple[float, float, float]]:
    """(mean, low, high) per step from Holt's linear method; see the module docstring."""
    alpha, beta, smoothed, slope, sse = _fit_holt(values)
    errors = len(values) - 1
    variance = sse / (errors - 2 if errors > 2 else errors)  # 2 smoothing weights were fitted
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
    rows = []
    for h in range(1, steps + 1):
        mean = smoothed + h * slope
        growth = alpha**2 + alpha * beta * h + beta**2 * h * (2 * h - 1) / 6.0
        half_width = z * math.sqrt(variance * (1.0 + (h - 1) * growth))
        rows.append((mean, mean - half_width, mean + half_width))
    return rows


def _holt_pass(
    values: list[float], alpha: float, beta: float, start: tuple[float, float]
) -> tuple[float, float, float]:
    """Run Holt's recursions; return the one-step squared error sum and the final state."""
    smoothed, slope = start
    sse = 0.0
    for value in values[1:]:
        error = value - smoothed - slope
        sse += error * error
        smoothed += slope + alpha * error
        slope += beta * error
    return sse, smoothed, slope


def _fit_holt(values: list[float]) -> tuple[float, float, float, float, float]:
    """(alpha, beta, level, slope, sse) with the weights that minimise the squared error."""
    span = min(len(values) - 1, _INITIAL_SLOPE_STEPS)
    start = (values[0], (values[span] - values[0]) / span)

    def sse(alpha: float, beta_star: float) -> float:
        return _holt_pass(values, alpha, alpha * beta_star, start)[0]

    best, alpha, beta_star = min((sse(a, b), a, b) for a in _ALPHA_GRID for b in _BETA_STAR_GRID)
    best, alpha, beta_star = _pattern_search(sse, best, alpha, beta_star)
    beta = alpha * beta_star
    final_sse, smoothed, slope = _holt_pass(values, alpha, beta, start)
    return alpha, beta, smoothed, slope, final_sse


def _pattern_search(
    objective: Callable[[float, float], float], best: float, alpha: float, beta_star: float
) -> tuple[float, float, float]:
    """Refine a grid minimum: step along each axis while that helps, then halve the step."""
    step = _SEARCH_FIRST_STEP
    evaluations = 0
    while step >= _SEARCH_LAST_STEP and evaluations < _SEARCH_MAX_EVALUATIONS:
        moved = False
        for d_alpha, d_beta in ((step, 0.0), (-step, 0.0), (0.0, step), (0.0, -step)):
            a = min(1.0, max(_ALPHA_MIN, alpha + d_alpha))
            b = min(1.0, max(0.0, beta_star + d_beta))
            candidate = objective(a, b)
            evaluations += 1
            if candidate < best:
                best, alpha, beta_star, moved = candidate, a, b, True
        if not moved:
            step /= 2.0
    return best, alpha, beta_star
