"""What is normal for a metric series: a robust centre and spread, by hour of week if it can.

    baseline = fit_baseline(history, step_s=3600)     # history: [(unix_time_s, value), ...]
    band = baseline.expected(at=1_735_000_000)        # ExpectedRange, or None for no history
    band.low <= observed <= band.high, band.seasonal  # inside the normal range? by slot?

Centre is the median and spread the MAD scaled by 1.4826, so ``spread`` estimates the
standard deviation of normal data and ``(x - center) / spread`` is the robust z-score
``0.6745·(x - median)/MAD``. Where the MAD is 0 (over half the values identical),
:func:`robust_spread` falls back to IQR/1.349, then to the mean absolute deviation *
√(π/2); every spread is then floored at ``min_relative_spread·|center|`` and ``min_spread``,
so a constant series has a small non-zero spread and a clear outlier still scores high.

Seasonality: when the points span ``min_seasonal_weeks`` weeks at a step of an hour or less,
each UTC hour-of-week slot (168, Monday 00:00 first) with ``min_slot_samples`` points gets
its own median. Its spread is the MAD of leave-one-out residuals (each point against the
median of the slot's other points, so a slot of three samples is not judged by itself),
shrunk towards the pooled residual spread with the weight of 30 samples. The seasonal model
is kept only when that pooled spread is below the global spread, i.e. when it explains
something. Slots lacking samples fall back to the global values (``seasonal=False``).

``confidence`` is ``n / (n + 30)``: 0.5 at 30 samples, 0.9 at 270, 0.97 at 1,000; for a
seasonal slot ``n`` is the slot's samples, which for hourly data grows by one a week.
Points with a NaN or infinite time or value are dropped; no points at all give ``n == 0``
and ``expected()`` returning None, because there is nothing to expect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CONFIDENCE_HALF_N",
    "HOURS_PER_WEEK",
    "MAD_TO_SIGMA",
    "Baseline",
    "ExpectedRange",
    "SlotStats",
    "confidence_for",
    "finite_points",
    "fit_baseline",
    "hour_of_week",
    "robust_spread",
]

#: sample size at which confidence is 0.5 (0.9 at 270 samples)
CONFIDENCE_HALF_N = 30
#: UTC hour-of-week slots; slot 0 is Monday 00:00-00:59
HOURS_PER_WEEK = 168
#: scales a MAD to a standard deviation for normal data (1 / Φ⁻¹(0.75))
MAD_TO_SIGMA = 1.4826
_WEEK_S = 7 * 24 * 3600
_HOUR_S = 3600
#: the Unix epoch was a Thursday, 72 hours after Monday 00:00 UTC
_EPOCH_HOUR_OF_WEEK = 72
#: a slot's own spread counts against the pooled spread as if the pool had this many samples
_SLOT_SPREAD_PRIOR_N = 30
#: IQR / 1.349 and mean absolute deviation * √(π/2) both estimate sigma for normal data
_IQR_TO_SIGMA = 1 / 1.349
_MEAN_AD_TO_SIGMA = math.sqrt(math.pi / 2)

#: the smallest spread allowed around a given centre
_Floor = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class ExpectedRange:
    """The normal range of a metric at one time: ``center ± band_k·spread``."""

    center: float
    low: float
    high: float
    #: sigma-equivalent spread the band was built from
    spread: float
    #: 0..1, from the number of samples behind ``center``
    confidence: float
    #: True when the hour-of-week slot of the time supplied the values
    seasonal: bool


@dataclass(frozen=True, slots=True)
class SlotStats:
    """One hour-of-week slot of a seasonal baseline."""

    center: float
    spread: float
    n: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """A fitted baseline; build it with :func:`fit_baseline`, read it with :meth:`expected`."""

    #: finite points fitted
    n: int
    step_s: float
    band_k: float
    #: global median (NaN when ``n == 0``)
    center: float
    #: global sigma-equivalent spread, floored (NaN when ``n == 0``)
    spread: float
    confidence: float
    #: exponentially weighted level at the last point, for a smooth "current" value
    ewma_level: float
    ewma_half_life_s: float
    seasonal: bool
    #: 168 entries (None for slots without enough samples) when seasonal, else empty
    slots: tuple[SlotStats | None, ...]
    #: pooled leave-one-out residual spread, NaN when seasonality was not tried
    seasonal_spread: float
    #: quartiles of the fitted points' own robust z-scores, for Tukey fences in z units
    z_q1: float
    z_q3: float
    first_s: float
    last_s: float

    def expected(self, at: float) -> ExpectedRange | None:
        """The normal range at unix time ``at``; None when the baseline saw no points."""
        if not math.isfinite(at):
            raise ValueError(f"at={at!r} is not a finite unix time in seconds")
        if self.n == 0:
            return None
        slot = self.slots[hour_of_week(at)] if self.seasonal else None
        if slot is None:
            center, spread, confidence = self.center, self.spread, self.confidence
        else:
            center, spread, confidence = slot.center, slot.spread, slot.confidence
        half_width = self.band_k * spread
        return ExpectedRange(
            center=center,
            low=center - half_width,
            high=center + half_width,
            spread=spread,
            confidence=confidence,
            seasonal=slot is not None,
        )

    def z_score(self, value: float, at: float) -> float:
        """Robust z-score of ``value`` observed at ``at``; NaN when the baseline is empty."""
        expected = self.expected(at)
        if expected is None:
            return math.nan
        return (value - expected.center) / expected.spread


def hour_of_week(unix_time_s: float) -> int:
    """UTC hour-of-week slot of a time: 0 for Monday 00:00-00:59, 167 for Sunday 23:00."""
    return (math.floor(unix_time_s / _HOUR_S) + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


def confidence_for(n: int) -> float:
    """``n / (n + 30)``: 0 for no samples, rising monotonically towards (never reaching) 1."""
    return n / (n + CONFIDENCE_HALF_N) if n > 0 else 0.0


def finite_points(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points whose time and value are both finite, sorted by time."""
    kept = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    kept.sort(key=lambda point: point[0])
    return kept


def robust_spread(values: Sequence[float]) -> float:
    """sigma-equivalent spread: 1.4826·MAD, else IQR/1.349, else mean absolute deviation·√(π/2).

    Returns 0.0 only when all values are equal, and NaN when there are none.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    median = _quantile(ordered, 0.5)
    deviations = sorted(abs(value - median) for value in ordered)
    mad = _quantile(deviations, 0.5)
    if mad > 0:
        return MAD_TO_SIGMA * mad
    iqr = _quantile(ordered, 0.75) - _quantile(ordered, 0.25)
    if iqr > 0:
        return iqr * _IQR_TO_SIGMA
    return math.fsum(deviations) / len(deviations) * _MEAN_AD_TO_SIGMA


def fit_baseline(
    points: Iterable[tuple[float, float]],
    *,
    step_s: float,
    min_seasonal_weeks: int = 2,
    min_slot_samples: int = 2,
    band_k: float = 3.0,
    ewma_half_life_s: float | None = None,
    min_relative_spread: float = 0.01,
    min_spread: float = 1e-9,
) -> Baseline:
    """Fit a robust baseline to ``(unix_time_s, value)`` points taken every ``step_s`` seconds.

    ``ewma_half_life_s`` defaults to 12 steps. Spreads are floored at
    ``max(min_relative_spread·|center|, min_spread)``.
    """
    _check_positive("step_s", step_s)
    _check_positive("band_k", band_k)
    half_life_s = 12 * step_s if ewma_half_life_s is None else ewma_half_life_s
    _check_positive("ewma_half_life_s", half_life_s)
    if min_seasonal_weeks < 1 or min_slot_samples < 2:
        raise ValueError(
            f"min_seasonal_weeks={min_seasonal_weeks} and min_slot_samples={min_slot_samples}"
            " must be at least 1 and 2"
        )
    clean = finite_points(points)
    if not clean:
        return _empty_baseline(step_s, band_k, half_life_s)

    def floor(center: float) -> float:
        return max(min_relative_spread * abs(center), min_spread)

    values = [value for _, value in clean]
    center = _quantile(sorted(values), 0.5)
    raw_spread = robust_spread(values)
    spread = max(raw_spread, floor(center))
    z_scores = [(value - center) / spread for value in values]

    slots: tuple[SlotStats | None, ...] = ()
    seasonal_spread = math.nan
    span_s = clean[-1][0] - clean[0][0] + step_s
    if step_s <= _HOUR_S and span_s >= min_seasonal_weeks * _WEEK_S:
        fitted = _fit_slots(clean, min_slot_samples, floor)
        if fitted is not None:
            seasonal_spread = fitted[1]
            if seasonal_spread < raw_spread:
                slots, z_scores = fitted[0], fitted[2]

    z_ordered = sorted(z_scores)
    return Baseline(
        n=len(clean),
        step_s=step_s,
        band_k=band_k,
        center=center,
        spread=spread,
        confidence=confidence_for(len(clean)),
        ewma_level=_ewma(clean, half_life_s, step_s),
        ewma_half_life_s=half_life_s,
        seasonal=bool(slots),
        slots=slots,
        seasonal_spread=seasonal_spread,
        z_q1=_quantile(z_ordered, 0.25),
        z_q3=_quantile(z_ordered, 0.75),
        first_s=clean[0][0],
        last_s=clean[-1][0],
    )


def _empty_baseline(step_s: float, band_k: float, half_life_s: float) -> Baseline:
    nan = math.nan
    return Baseline(
        n=0,
        step_s=step_s,
        band_k=band_k,
        center=nan,
        spread=nan,
        confidence=0.0,
        ewma_level=nan,
        ewma_half_life_s=half_life_s,
        seasonal=False,
        slots=(),
        seasonal_spread=nan,
        z_q1=nan,
        z_q3=nan,
        first_s=nan,
        last_s=nan,
    )


def _fit_slots(
    clean: list[tuple[float, float]],
    min_slot_samples: int,
    floor: _Floor,
) -> tuple[tuple[SlotStats | None, ...], float, list[float]] | None:
    """Per-slot stats, the pooled residual spread and the residuals' z-scores (None if no slot)."""
    by_slot: list[list[float]] = [[] for _ in range(HOURS_PER_WEEK)]
    for t, value in clean:
        by_slot[hour_of_week(t)].append(value)
    residuals: list[list[float]] = [[] for _ in range(HOURS_PER_WEEK)]
    centers: list[float] = [math.nan] * HOURS_PER_WEEK
    for slot, slot_values in enumerate(by_slot):
        if len(slot_values) >= min_slot_samples:
            ordered = sorted(slot_values)
            centers[slot] = _quantile(ordered, 0.5)
            residuals[slot] = _leave_one_out_residuals(ordered)
    pooled = [residual for slot_residuals in residuals for residual in slot_residuals]
    if not pooled:
        return None
    pooled_spread = robust_spread(pooled)
    stats: list[SlotStats | None] = [None] * HOURS_PER_WEEK
    z_scores: list[float] = []
    for slot, slot_residuals in enumerate(residuals):
        n = len(slot_residuals)
        if n == 0:
            continue
        own = robust_spread(slot_residuals)
        shrunk = (n * own + _SLOT_SPREAD_PRIOR_N * pooled_spread) / (n + _SLOT_SPREAD_PRIOR_N)
        spread = max(shrunk, floor(centers[slot]))
        stats[slot] = SlotStats(centers[slot], spread, n, confidence_for(n))
        z_scores.extend(residual / spread for residual in slot_residuals)
    return tuple(stats), pooled_spread, z_scores


def _leave_one_out_residuals(ordered: list[float]) -> list[float]:
    """Each value minus the median of the others, in O(1) per value from the sorted list."""
    remaining = len(ordered) - 1
    mid = remaining // 2

    def without(i: int, j: int) -> float:
        return ordered[j] if j < i else ordered[j + 1]

    if remaining % 2:
        return [value - without(i, mid) for i, value in enumerate(ordered)]
    return [value - (without(i, mid - 1) + without(i, mid)) / 2 for i, value in enumerate(ordered)]


def _ewma(clean: list[tuple[float, float]], half_life_s: float, step_s: float) -> float:
    """Time-aware EWMA: a gap of ``dt`` seconds weighs the new point by 1 - 0.5^(dt/half-life)."""
    level = clean[0][1]
    previous_s = clean[0][0]
    for t, value in clean[1:]:
        dt_s = t - previous_s if t > previous_s else step_s
        level += (1 - 0.5 ** (dt_s / half_life_s)) * (value - level)
        previous_s = t
    return level


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linearly interpolated quantile of sorted values (NaN when empty)."""
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive, finite number")
