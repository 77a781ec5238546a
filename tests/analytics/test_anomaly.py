"""Anomaly and step-change detection against known answers."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
from typing import Literal

import pytest

from queuelens.analytics.anomaly import (
    Anomaly,
    change_point_anomalies,
    detect_anomalies,
    detect_change_points,
)
from tests.analytics.test_baseline import (
    HOUR_S,
    MONDAY_S,
    PEAK_HOUR_OF_WEEK,
    WEEK_S,
    noise_series,
    weekly_series,
)

SCOPE = {"app": "billing", "queue": "emails", "job": "send_invoice"}
MINUTE_S = 60.0
#: Wednesday 03:00 of the fourth week: a quiet hour, where +60 is far outside normal
SPIKE_S = MONDAY_S + 3 * WEEK_S + 2 * 24 * HOUR_S + 3 * HOUR_S
SPIKE_SIZE = 60.0


def seasonal_case(seed: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Three weeks of history, then a fourth week with one spike at :data:`SPIKE_S`."""
    points = weekly_series(seed, weeks=4)
    recent = [(t, v + SPIKE_SIZE if t == SPIKE_S else v) for t, v in points[3 * 168 :]]
    return points[: 3 * 168], recent


def normal_history(n: int = 400) -> list[tuple[float, float]]:
    """Mean 100, sigma 10, from evenly spaced normal quantiles: no sampling luck involved."""
    quantiles = statistics.NormalDist(100, 10).inv_cdf
    values = [quantiles((i + 0.5) / n) for i in range(n)]
    random.Random(0).shuffle(values)
    return [(MONDAY_S + i * MINUTE_S, v) for i, v in enumerate(values)]


def after(history: list[tuple[float, float]], values: list[float]) -> list[tuple[float, float]]:
    start = history[-1][0] + MINUTE_S
    return [(start + i * MINUTE_S, v) for i, v in enumerate(values)]


def step_series(seed: int, at_index: int, n: int = 300) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [
        (MONDAY_S + i * MINUTE_S, (100 if i < at_index else 200) + rng.gauss(0, 10))
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_seasonal_history_flags_exactly_the_injected_spike(seed: int) -> None:
    history, recent = seasonal_case(seed)
    found = detect_anomalies(history, recent, metric="duration_p95_s", scope=SCOPE)
    assert len(found) == 1  # not the Monday 10:00 peak, not any ordinary hour
    (spike,) = found
    assert (spike.start, spike.end) == (SPIKE_S, SPIKE_S)
    assert spike.observed == dict(recent)[SPIKE_S]
    assert spike.method == "robust_z"
    assert spike.score > 3.5
    assert spike.expected_low < spike.expected < spike.expected_high < spike.observed
    assert (spike.metric, spike.scope) == ("duration_p95_s", SCOPE)


def test_a_global_baseline_would_flag_the_normal_peak_and_miss_the_spike() -> None:
    history, recent = seasonal_case(seed=0)
    found = detect_anomalies(history, recent, metric="m", scope=SCOPE, min_seasonal_weeks=4)
    starts = {anomaly.start for anomaly in found}
    assert MONDAY_S + 3 * WEEK_S + PEAK_HOUR_OF_WEEK * HOUR_S in starts  # a false alarm
    assert SPIKE_S not in starts  # +60 at night is inside the all-hours range


@pytest.mark.parametrize("combine", ["both", "either"])
def test_stationary_noise_rarely_raises_false_alarms(combine: Literal["both", "either"]) -> None:
    flagged = checked = 0
    for seed in range(40):
        points = noise_series(seed, 700)
        found = detect_anomalies(points[:500], points[500:], metric="m", scope={}, combine=combine)
        flagged += len(found)
        checked += 200
    if combine == "both":
        # a Gaussian point passes |z| > 3.5 with probability 0.05%; allow twice that
        assert flagged <= 0.001 * checked
    else:
        # Tukey's 1.5·IQR fences alone pass 0.7% of Gaussian points
        assert flagged <= 0.01 * checked


def test_consecutive_points_merge_and_report_the_most_extreme() -> None:
    history = normal_history()
    recent = after(history, [100, 160, 190, 170, 100, 100, 40, 100])
    found = detect_anomalies(history, recent, metric="m", scope=SCOPE)
    assert [(a.start, a.end, a.observed) for a in found] == [
        (recent[1][0], recent[3][0], 190),
        (recent[6][0], recent[6][0], 40),
    ]
    assert found[0].score == pytest.approx(9, abs=0.5)
    assert found[1].score == pytest.approx(-6, abs=0.5)


def test_a_change_of_direction_or_a_gap_starts_a_new_anomaly() -> None:
    history = normal_history()
    flip = after(history, [190, 10])
    assert len(detect_anomalies(history, flip, metric="m", scope=SCOPE)) == 2
    gap = [(t, 190.0) for t, _ in after(history, [0, 0, 0, 0])[::3]]  # every third bucket
    assert len(detect_anomalies(history, gap, metric="m", scope=SCOPE, step_s=60)) == 2


def test_iqr_fence_confirms_in_both_mode_and_flags_alone_in_either_mode() -> None:
    history = normal_history()
    recent = after(history, [130.0, 100.0, 160.0])  # z of about 3, then 6
    both = detect_anomalies(history, recent, metric="m", scope=SCOPE)
    assert [(a.observed, a.method) for a in both] == [(160.0, "robust_z")]
    either = detect_anomalies(history, recent, metric="m", scope=SCOPE, combine="either")
    assert [(a.observed, a.method) for a in either] == [(130.0, "iqr"), (160.0, "robust_z")]
    iqr_only = either[0]
    assert iqr_only.expected_high < iqr_only.observed  # the band is the decision band
    assert iqr_only.expected + 3.5 * 10 > iqr_only.observed  # which z alone would not cross


def test_too_little_history_flags_nothing() -> None:
    history = normal_history(59)
    recent = after(history, [10_000.0])
    assert detect_anomalies(history, recent, metric="m", scope=SCOPE) == []
    assert detect_anomalies([], recent, metric="m", scope=SCOPE) == []
    assert len(detect_anomalies(history, recent, metric="m", scope=SCOPE, min_history=20)) == 1
    assert detect_anomalies(normal_history(), [], metric="m", scope=SCOPE) == []


def test_nan_points_are_skipped() -> None:
    history = normal_history()
    dirty_history = [*history[:100], (MONDAY_S, math.nan), *history[100:], (math.nan, 5.0)]
    recent = after(history, [100.0, math.nan, 190.0, math.inf])
    found = detect_anomalies(dirty_history, recent, metric="m", scope=SCOPE)
    assert [(a.start, a.observed) for a in found] == [(recent[2][0], 190.0)]


def test_a_constant_history_does_not_divide_by_zero_and_flags_an_outlier() -> None:
    history = [(MONDAY_S + i * MINUTE_S, 5.0) for i in range(100)]
    recent = after(history, [5.0, 5.01, 9.0, 5.0])
    found = detect_anomalies(history, recent, metric="m", scope=SCOPE)
    assert [(a.start, a.observed) for a in found] == [(recent[2][0], 9.0)]
    assert found[0].score == pytest.approx(80.0)  # (9 - 5) over a 1% floor spread
    zeros = [(t, 0.0) for t, _ in history]
    (failure,) = detect_anomalies(zeros, after(zeros, [0.0, 0.25]), metric="m", scope=SCOPE)
    assert failure.observed == 0.25
    assert math.isfinite(failure.score)


def test_anomalies_are_json_friendly_and_hashable() -> None:
    history = normal_history()
    (anomaly,) = detect_anomalies(history, after(history, [190.0]), metric="m", scope=SCOPE)
    record = json.loads(json.dumps(dataclasses.asdict(anomaly)))
    assert record["scope"] == SCOPE
    assert record["end"] == anomaly.start
    assert anomaly.scope is not SCOPE  # copied, so later edits to SCOPE do not leak in
    assert hash(anomaly) == hash(dataclasses.replace(anomaly))


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="combine='any'"):
        detect_anomalies([], [], metric="m", scope={}, combine="any")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="z_threshold=0"):
        detect_anomalies([], [], metric="m", scope={}, z_threshold=0)
    with pytest.raises(ValueError, match="penalty=-1"):
        detect_change_points([], penalty=-1)


@pytest.mark.parametrize("seed", range(10))
def test_a_step_change_is_located_within_one_bucket(seed: int) -> None:
    points = step_series(seed, at_index=137)
    (change,) = detect_change_points(points)
    assert abs(change.at - points[137][0]) <= MINUTE_S
    assert change.before == pytest.approx(100, abs=5)
    assert change.after == pytest.approx(200, abs=5)
    assert change.ratio == pytest.approx(2, abs=0.1)
    assert change.score > 10


def test_a_step_down_has_a_negative_score() -> None:
    points = [(t, 300 - v) for t, v in step_series(0, at_index=200)]
    (change,) = detect_change_points(points)
    assert change.at == points[200][0]
    assert change.ratio == pytest.approx(0.5, abs=0.05)
    assert change.score < -10


def test_two_steps_are_both_found() -> None:
    rng = random.Random(7)
    levels = [100] * 100 + [200] * 80 + [100] * 120
    points = [(MONDAY_S + i * MINUTE_S, v + rng.gauss(0, 10)) for i, v in enumerate(levels)]
    changes = detect_change_points(points)
    assert [round((c.at - MONDAY_S) / MINUTE_S) for c in changes] == [100, 180]


def test_durations_twice_as_slow_on_a_log_scale() -> None:
    rng = random.Random(8)
    points = [
        (MONDAY_S + i * MINUTE_S, (0.2 if i < 250 else 0.4) * math.exp(rng.gauss(0, 0.1)))
        for i in range(400)
    ]
    (change,) = detect_change_points(points, log_scale=True)
    assert abs(change.at - points[250][0]) <= MINUTE_S
    assert change.ratio == pytest.approx(2, rel=0.05)
    with pytest.raises(ValueError, match=r"log_scale needs positive values, got 0\.0"):
        detect_change_points([*points, (points[-1][0] + MINUTE_S, 0.0)], log_scale=True)


def test_stationary_noise_has_no_change_points() -> None:
    found = sum(len(detect_change_points(noise_series(seed, 400))) for seed in range(50))
    assert found <= 1


def test_isolated_spikes_are_not_steps() -> None:
    points = noise_series(9, 300, step_s=MINUTE_S)
    for index in (2, 150, 151, 297):
        points[index] = (points[index][0], 5_000.0)
    assert detect_change_points(points) == []


def test_small_relative_changes_are_not_reported() -> None:
    rng = random.Random(10)
    points = [
        (MONDAY_S + i * 60, (100 if i < 150 else 105) + rng.gauss(0, 0.5)) for i in range(300)
    ]
    assert detect_change_points(points) == []  # significant, but only 5%
    (change,) = detect_change_points(points, min_relative_change=0.01)
    assert change.at == points[150][0]


def test_a_noiseless_step_is_found_without_dividing_by_zero() -> None:
    points = [(MONDAY_S + i * 60, 1.0 if i < 40 else 3.0) for i in range(100)]
    (change,) = detect_change_points(points)
    assert (change.at, change.before, change.after) == (points[40][0], 1.0, 3.0)
    assert math.isfinite(change.score)
    assert detect_change_points([(t, 1.0) for t, _ in points]) == []


def test_short_empty_and_nan_input() -> None:
    assert detect_change_points([]) == []
    assert detect_change_points(step_series(0, at_index=8, n=15)) == []  # under 2 segments
    points = step_series(1, at_index=137)
    dirty = [*points[:50], (points[50][0] + 1, math.nan), *points[50:]]
    assert detect_change_points(dirty) == detect_change_points(points)
    with pytest.raises(ValueError, match="min_segment=1"):
        detect_change_points(points, min_segment=1)


def test_change_points_as_anomalies() -> None:
    points = step_series(2, at_index=137)
    (anomaly,) = change_point_anomalies(points, metric="duration_p95_s", scope=SCOPE)
    (change,) = detect_change_points(points)
    assert anomaly == Anomaly(
        metric="duration_p95_s",
        scope=SCOPE,
        expected_low=anomaly.expected_low,
        expected_high=anomaly.expected_high,
        expected=change.before,
        observed=change.after,
        score=change.score,
        method="change_point",
        start=change.at,
        end=None,
    )
    # the band is three noise sigmas (10) either side of the old level
    assert anomaly.expected_low == pytest.approx(change.before - 30, abs=5)
    assert anomaly.expected_high == pytest.approx(change.before + 30, abs=5)
    (logged,) = change_point_anomalies(points, metric="m", scope={}, log_scale=True)
    assert logged.expected_low < logged.expected < logged.expected_high < logged.observed


def test_ten_thousand_points_are_fast() -> None:
    rng = random.Random(11)
    points = [
        (MONDAY_S + i * 60, (100 if i < 9000 else 150) + rng.gauss(0, 5)) for i in range(10_000)
    ]
    history, recent = points[:9000], points[9000:]
    (shift,) = detect_anomalies(history, recent, metric="m", scope={})  # one long stretch
    assert (shift.start, shift.end) == (recent[0][0], recent[-1][0])
    (change,) = detect_change_points(points)
    assert change.at == points[9000][0]
