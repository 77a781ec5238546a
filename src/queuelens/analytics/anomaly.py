"""Anomalies and step changes in a metric series, judged against a robust baseline.

    found = detect_anomalies(history, recent, metric="wait_p95_s", scope={"queue": "emails"})
    steps = detect_change_points(durations, log_scale=True)  # a deploy made a job 2x slower
    [dataclasses.asdict(anomaly) for anomaly in found]       # JSON-ready records

Point anomalies (:func:`detect_anomalies`): a baseline (:mod:`.baseline`, seasonal when the
history allows) is fitted on ``history`` and every point of ``recent`` gets a robust z-score
``z = (x - center) / spread`` against the expected range of its time. Two tests read z:

- robust z: ``|z| > z_threshold`` (3.5, Iglewicz and Hoaglin's cut-off);
- Tukey fences on the history's own z-scores: ``z < q1 - iqr_k*IQR`` or ``z > q3 + iqr_k*IQR``
  (the classic fences on raw values when the baseline is not seasonal), which follow skew.

With ``combine="both"`` (default) a point is anomalous only when both tests agree: z flags it
and the fence confirms it, so a long-tailed side needs a bigger excursion. ``"either"`` flags
what either test flags (more sensitive, more false alarms). ``expected_low``/``expected_high``
of an anomaly are the effective decision band at its most extreme point, so ``observed``
always lies outside them. Consecutive flagged points (no gap over 1.5 steps, same direction)
merge into one anomaly from the first to the last point, reporting the most extreme.
Fewer than ``min_history`` finite history points give no anomalies: no guessing.

Step changes (:func:`detect_change_points`): binary segmentation on the segment mean with
cumulative sums, on log values with ``log_scale`` (for durations, whose noise scales with
the level). Isolated spikes are first clipped to 3 sigma around a running median of 5, and
the noise sigma comes from the MAD of first differences, which a step barely moves. A split
is kept while its gain (the between-segment sum of squares over sigma squared, the square of
a two-sample t statistic) exceeds ``penalty``, by default ``3*ln(n)``, and reported when the
level moved by at least ``min_relative_change`` of the larger level. The series should be
stationary apart from steps: a daily cycle is a change of level too, so run it over windows
shorter than the cycle or over residuals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from queuelens.analytics.baseline import finite_points, fit_baseline, robust_spread

__all__ = [
    "Anomaly",
    "ChangePoint",
    "Combine",
    "change_point_anomalies",
    "detect_anomalies",
    "detect_change_points",
]

#: how the robust-z and IQR-fence tests combine: both must flag a point, or either may
Combine = Literal["both", "either"]

#: a later point further than this many steps away starts a new anomaly
_MAX_GAP_STEPS = 1.5
#: width of the running median that spikes are clipped around before segmentation
_SPIKE_WINDOW = 5
#: spikes are clipped to this many noise sigmas around the running median
_SPIKE_CLIP_SIGMAS = 3.0


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomalous stretch of a metric, ready for ``dataclasses.asdict`` and JSON."""

    metric: str
    #: where it happened, e.g. {"app": "billing", "queue": "emails", "job": "send"}
    scope: dict[str, str] = field(hash=False)
    expected_low: float
    expected_high: float
    #: the expected centre (the value before the step, for a change point)
    expected: float
    #: the most extreme value seen (the value after the step, for a change point)
    observed: float
    #: signed robust z-score (a two-sample t statistic for a change point)
    score: float
    #: "robust_z", "iqr" or "change_point"
    method: str
    #: unix time of the first anomalous point, or of the first point after a step
    start: float
    #: unix time of the last anomalous point; None for a change point (the new level stays)
    end: float | None


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A step change in level: ``before`` up to ``at``, ``after`` from ``at`` on."""

    #: unix time of the first point at the new level
    at: float
    #: segment means (geometric means with ``log_scale``) after spike clipping
    before: float
    after: float
    #: ``after / before``, ±inf when ``before`` is 0
    ratio: float
    #: signed two-sample t statistic of the level difference
    score: float


def detect_anomalies(
    history: Iterable[tuple[float, float]],
    recent: Iterable[tuple[float, float]],
    *,
    metric: str,
    scope: Mapping[str, str],
    step_s: float | None = None,
    z_threshold: float = 3.5,
    iqr_k: float = 1.5,
    combine: Combine = "both",
    min_history: int = 60,
    min_seasonal_weeks: int = 2,
) -> list[Anomaly]:
    """Anomalous stretches of ``recent`` against a baseline fitted on ``history``.

    ``step_s`` defaults to the median gap between history points.
    """
    if combine not in ("both", "either"):
        raise ValueError(f"combine={combine!r} is not a choice; expected 'both' or 'either'")
    if not (z_threshold > 0 and iqr_k >= 0):
        raise ValueError(f"z_threshold={z_threshold!r} must be positive, iqr_k={iqr_k!r} >= 0")
    past = finite_points(history)
    if len(past) < max(min_history, 1):
        return []
    step = _infer_step_s(past) if step_s is None else step_s
    baseline = fit_baseline(
        past, step_s=step, band_k=z_threshold, min_seasonal_weeks=min_seasonal_weeks
    )
    fence = iqr_k * (baseline.z_q3 - baseline.z_q1)
    fence_low_z, fence_high_z = baseline.z_q1 - fence, baseline.z_q3 + fence
    if combine == "both":
        low_z, high_z = min(-z_threshold, fence_low_z), max(z_threshold, fence_high_z)
    else:
        low_z, high_z = max(-z_threshold, fence_low_z), min(z_threshold, fence_high_z)

    found: list[Anomaly] = []
    run: list[tuple[float, float, float, float, float]] = []  # (t, x, z, center, spread)

    def close_run() -> None:
        if not run:
            return
        _, x, z, center, spread = max(run, key=lambda scored: abs(scored[2]))
        method = "robust_z" if abs(z) > z_threshold else "iqr"
        found.append(
            Anomaly(
                metric=metric,
                scope=dict(scope),
                expected_low=center + low_z * spread,
                expected_high=center + high_z * spread,
                expected=center,
                observed=x,
                score=z,
                method=method,
                start=run[0][0],
                end=run[-1][0],
            )
        )
        run.clear()

    for t, x in finite_points(recent):
        expected = baseline.expected(t)
        assert expected is not None  # the baseline has points
        z = (x - expected.center) / expected.spread
        if low_z <= z <= high_z:
            close_run()
            continue
        if run and (t - run[-1][0] > _MAX_GAP_STEPS * step or (z > 0) != (run[-1][2] > 0)):
            close_run()
        run.append((t, x, z, expected.center, expected.spread))
    close_run()
    return found


def detect_change_points(
    points: Iterable[tuple[float, float]],
    *,
    min_segment: int = 8,
    penalty: float | None = None,
    log_scale: bool = False,
    min_relative_change: float = 0.1,
) -> list[ChangePoint]:
    """Step changes in the level of ``(unix_time_s, value)`` points, oldest first.

    Each segment between changes has at least ``min_segment`` points; ``penalty`` defaults to
    ``3*ln(n)``. ``log_scale`` needs positive values.
    """
    return _segment(points, min_segment, penalty, log_scale, min_relative_change)[0]


def change_point_anomalies(
    points: Iterable[tuple[float, float]],
    *,
    metric: str,
    scope: Mapping[str, str],
    band_k: float = 3.0,
    min_segment: int = 8,
    penalty: float | None = None,
    log_scale: bool = False,
    min_relative_change: float = 0.1,
) -> list[Anomaly]:
    """:func:`detect_change_points` as anomalies: the band is ``before ± band_k`` noise sigmas."""
    changes, sigma = _segment(points, min_segment, penalty, log_scale, min_relative_change)
    found: list[Anomaly] = []
    for change in changes:
        if log_scale:
            low = change.before * math.exp(-band_k * sigma)
            high = change.before * math.exp(band_k * sigma)
        else:
            low, high = change.before - band_k * sigma, change.before + band_k * sigma
        found.append(
            Anomaly(
                metric=metric,
                scope=dict(scope),
                expected_low=low,
                expected_high=high,
                expected=change.before,
                observed=change.after,
                score=change.score,
                method="change_point",
                start=change.at,
                end=None,
            )
        )
    return found


def _segment(
    points: Iterable[tuple[float, float]],
    min_segment: int,
    penalty: float | None,
    log_scale: bool,
    min_relative_change: float,
) -> tuple[list[ChangePoint], float]:
    """Change points and the noise sigma (in log units with ``log_scale``; NaN if too short)."""
    if min_segment < 2:
        raise ValueError(f"min_segment={min_segment} must be at least 2 points")
    if penalty is not None and not penalty > 0:
        raise ValueError(f"penalty={penalty!r} must be positive; None picks 3*ln(n)")
    clean = finite_points(points)
    n = len(clean)
    if n < 2 * min_segment:
        return [], math.nan
    values = _working_values(clean, log_scale)
    level = sorted(values)[n // 2]
    # a step moves one first difference, so their spread is the noise alone
    sigma = robust_spread([b - a for a, b in itertools.pairwise(values)]) / math.sqrt(2)
    sigma = max(sigma, 1e-9 * max(1.0, abs(level)))  # piecewise-constant input has no noise
    clip = _SPIKE_CLIP_SIGMAS * sigma
    local = _running_median(values, _SPIKE_WINDOW)
    prefix = [0.0]
    for value, median in zip(values, local, strict=True):
        # centring on the median keeps the cumulative sums small and exact
        prefix.append(prefix[-1] + min(max(value, median - clip), median + clip) - level)

    threshold = 3 * math.log(n) if penalty is None else penalty
    splits: list[int] = []
    pending = [(0, n)]
    while pending:
        start, end = pending.pop()
        split, gain = _best_split(prefix, start, end, min_segment)
        if split is not None and gain / sigma**2 > threshold:
            splits.append(split)
            pending += [(start, split), (split, end)]
    splits.sort()

    bounds = [0, *splits, n]
    changes: list[ChangePoint] = []
    for i, split in enumerate(splits):
        start, end = bounds[i], bounds[i + 2]
        mean_before = (prefix[split] - prefix[start]) / (split - start) + level
        mean_after = (prefix[end] - prefix[split]) / (end - split) + level
        score = (mean_after - mean_before) / (
            sigma * math.sqrt(1 / (split - start) + 1 / (end - split))
        )
        before = math.exp(mean_before) if log_scale else mean_before
        after = math.exp(mean_after) if log_scale else mean_after
        moved = abs(after - before)
        if moved == 0 or moved < min_relative_change * max(abs(before), abs(after)):
            continue
        ratio = after / before if before != 0 else math.copysign(math.inf, after)
        changes.append(ChangePoint(clean[split][0], before, after, ratio, score))
    return changes, sigma


def _working_values(clean: Sequence[tuple[float, float]], log_scale: bool) -> list[float]:
    if not log_scale:
        return [value for _, value in clean]
    for t, value in clean:
        if value <= 0:
            raise ValueError(
                f"log_scale needs positive values, got {value!r} at t={t!r};"
                " drop non-positive points or pass log_scale=False"
            )
    return [math.log(value) for _, value in clean]


def _best_split(
    prefix: Sequence[float], start: int, end: int, min_segment: int
) -> tuple[int | None, float]:
    """The split of ``[start, end)`` that most reduces the squared error about segment means."""
    best, best_gain = None, 0.0
    for split in range(start + min_segment, end - min_segment + 1):
        n_before, n_after = split - start, end - split
        difference = (prefix[end] - prefix[split]) / n_after - (
            prefix[split] - prefix[start]
        ) / n_before
        gain = n_before * n_after / (end - start) * difference * difference
        if gain > best_gain:
            best, best_gain = split, gain
    return best, best_gain


def _running_median(values: Sequence[float], width: int) -> list[float]:
    """Median of each value's centred window, truncated at the ends."""
    half = width // 2
    medians = []
    for i in range(len(values)):
        window = sorted(values[max(0, i - half) : i + half + 1])
        middle = len(window) // 2
        medians.append(
            window[middle] if len(window) % 2 else (window[middle - 1] + window[middle]) / 2
        )
    return medians


def _infer_step_s(points: Sequence[tuple[float, float]]) -> float:
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(points) if b[0] > a[0])
    if not gaps:
        raise ValueError("cannot infer step_s: every history point has the same time; pass step_s")
    return gaps[len(gaps) // 2]
