"""Forecasts: Holt's method against known answers, the statsmodels path, and time-to-X."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from queuelens.analytics import forecast as forecast_module
from queuelens.analytics.forecast import (
    MAX_STEPS,
    Forecast,
    ForecastPoint,
    forecast,
    time_to_drain,
    time_to_reach,
    time_to_threshold,
)

T0 = 1_700_000_000.0
STEP_S = 60.0


def series(values: list[float], *, step_s: float = STEP_S) -> list[tuple[float, float]]:
    return [(T0 + step_s * i, value) for i, value in enumerate(values)]


def line(n: int, *, start: float = 10.0, per_step: float = 2.0) -> list[tuple[float, float]]:
    return series([start + per_step * i for i in range(n)])


# Holt's linear method


def test_holt_continues_a_perfect_line_with_narrow_intervals() -> None:
    result = forecast(line(30), horizon_s=600.0, method="holt")
    assert result.method == "holt"
    assert result.step_s == STEP_S
    assert (result.last_at_s, result.last_value) == (T0 + 29 * STEP_S, 68.0)
    assert len(result.points) == 10
    for h, point in enumerate(result.points, start=1):
        expected = 68.0 + 2.0 * h
        assert point.at_s == T0 + (29 + h) * STEP_S
        assert point.value == pytest.approx(expected, rel=1e-6)
        assert point.high - point.low <= 1e-6 * expected
        assert point.low <= point.value <= point.high


def test_holt_keeps_a_constant_series_flat() -> None:
    result = forecast(series([7.0] * 20), horizon_s=300.0, method="holt")
    assert [p.value for p in result.points] == pytest.approx([7.0] * 5)
    assert all(p.low == pytest.approx(7.0) and p.high == pytest.approx(7.0) for p in result.points)
    assert result.note is None


def test_holt_intervals_cover_about_95_percent_of_future_values() -> None:
    covered = total = 0
    for seed in range(60):
        rng = random.Random(seed)
        values = [20.0 + 0.3 * i + rng.gauss(0.0, 2.0) for i in range(65)]
        result = forecast(series(values[:55]), horizon_s=600.0, method="holt", non_negative=False)
        for point, actual in zip(result.points, values[55:], strict=True):
            covered += point.low <= actual <= point.high
            total += 1
    assert covered / total >= 0.85


def test_holt_intervals_widen_with_the_horizon() -> None:
    rng = random.Random(7)
    values = [50.0 + rng.gauss(0.0, 5.0) for _ in range(40)]
    result = forecast(series(values), horizon_s=900.0, method="holt")
    widths = [p.high - p.low for p in result.points]
    assert widths == sorted(widths)
    assert widths[-1] > widths[0]


def test_a_lower_level_gives_narrower_intervals() -> None:
    rng = random.Random(3)
    points = series([50.0 + rng.gauss(0.0, 5.0) for _ in range(40)])
    wide = forecast(points, horizon_s=60.0, level=0.99, method="holt").points[0]
    narrow = forecast(points, horizon_s=60.0, level=0.5, method="holt").points[0]
    assert narrow.value == wide.value
    assert narrow.high - narrow.low < wide.high - wide.low


def test_forecasts_of_non_negative_quantities_are_floored_at_zero() -> None:
    falling = line(20, start=40.0, per_step=-2.0)  # reaches 2 at the last step
    floored = forecast(falling, horizon_s=600.0, method="holt")
    assert all(p.low >= 0 and p.value >= 0 and p.high >= 0 for p in floored.points)
    assert floored.points[-1].value == 0.0
    signed = forecast(falling, horizon_s=600.0, method="holt", non_negative=False)
    assert signed.points[-1].value == pytest.approx(2.0 - 2.0 * 10)


def test_the_step_is_the_median_spacing_and_gaps_carry_the_last_value() -> None:
    points = [*line(10), (T0 + 14 * STEP_S, 30.0)]  # four missing steps, then one more point
    result = forecast(points, horizon_s=120.0, method="holt")
    assert result.step_s == STEP_S
    assert (result.last_at_s, result.last_value) == (T0 + 14 * STEP_S, 30.0)
    assert [p.at_s for p in result.points] == [T0 + 15 * STEP_S, T0 + 16 * STEP_S]


def test_the_horizon_is_rounded_up_to_whole_steps() -> None:
    assert len(forecast(line(10), horizon_s=61.0, method="holt").points) == 2
    assert len(forecast(line(10), horizon_s=60.0, method="holt").points) == 1
    assert len(forecast(line(10), horizon_s=1.0, step_s=30.0, method="holt").points) == 1


def test_only_the_most_recent_max_steps_are_used() -> None:
    result = forecast(line(MAX_STEPS + 50), horizon_s=60.0, method="holt")
    assert result.note == f"only the most recent {MAX_STEPS} steps were used"
    assert result.points[0].value == pytest.approx(10.0 + 2.0 * (MAX_STEPS + 50), rel=1e-6)


def test_non_finite_points_are_dropped_and_order_does_not_matter() -> None:
    points = [*line(20)[::-1], (math.nan, 1.0), (T0 + 5.0, math.inf)]
    result = forecast(points, horizon_s=60.0, method="holt")
    assert result.points[0].value == pytest.approx(50.0, rel=1e-6)


# the statsmodels path


def test_ets_follows_a_noisy_trend() -> None:
    pytest.importorskip("statsmodels")
    rng = random.Random(11)
    points = series([100.0 + 1.5 * i + rng.gauss(0.0, 3.0) for i in range(80)])
    result = forecast(points, horizon_s=600.0, method="ets")
    assert result.method == "ets"
    for h, point in enumerate(result.points, start=1):
        assert point.value == pytest.approx(100.0 + 1.5 * (79 + h), abs=10.0)
        assert point.low < point.value < point.high


def test_auto_picks_ets_for_a_seasonal_series_and_it_beats_holt() -> None:
    pytest.importorskip("statsmodels")
    rng = random.Random(5)

    def truth(i: int) -> float:
        return 100.0 + 40.0 * math.sin(2 * math.pi * i / 24)

    points = series([truth(i) + rng.gauss(0.0, 2.0) for i in range(96)], step_s=3600.0)
    seasonal = forecast(points, horizon_s=24 * 3600.0, season_length=24)
    holt = forecast(points, horizon_s=24 * 3600.0, method="holt")
    assert (seasonal.method, seasonal.note) == ("ets", None)
    assert "season_length is ignored" not in (holt.note or "")

    def error(result: Forecast) -> float:
        return max(abs(p.value - truth(96 + h)) for h, p in enumerate(result.points))

    assert error(seasonal) < 6.0 < error(holt)


def test_statsmodels_warnings_become_part_of_the_note_not_errors() -> None:
    pytest.importorskip("statsmodels")
    result = forecast(line(30), horizon_s=300.0, method="ets")  # a perfect line: no likelihood
    assert result.points[0].value == pytest.approx(70.0, rel=1e-3)
    assert result.note is None or "statsmodels" in result.note


def test_a_statsmodels_failure_falls_back_to_holt(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("statsmodels")
    from statsmodels.tsa.exponential_smoothing import ets

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("singular matrix")

    monkeypatch.setattr(ets, "ETSModel", broken)
    result = forecast(line(30), horizon_s=120.0, method="ets")
    assert result.method == "holt"
    assert result.note == "statsmodels ETS failed (RuntimeError: singular matrix); used Holt"
    assert result.points[0].value == pytest.approx(70.0, rel=1e-6)


def test_without_statsmodels_ets_falls_back_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecast_module, "_statsmodels_available", lambda: False)
    asked_for_ets = forecast(line(30), horizon_s=60.0, method="ets")
    assert asked_for_ets.method == "holt"
    assert asked_for_ets.note is not None
    assert "statsmodels is not installed" in asked_for_ets.note
    assert "queuelens[forecast]" in asked_for_ets.note
    assert forecast(line(30), horizon_s=60.0).note is None  # "auto" needs no excuse
    seasonal = forecast(line(30), horizon_s=60.0, season_length=12)
    assert seasonal.note is not None
    assert seasonal.note.startswith("seasonality ignored: statsmodels is not installed")


def test_auto_uses_holt_for_short_histories_and_explains_a_dropped_season() -> None:
    assert forecast(line(9), horizon_s=60.0).method == "holt"
    result = forecast(line(30), horizon_s=60.0, season_length=24)
    assert result.method == "holt"
    assert result.note is not None
    assert "needs 48 steps (2 seasons), got 30" in result.note


def test_importing_the_module_does_not_import_numpy() -> None:
    code = (
        "import sys, queuelens.analytics.forecast, queuelens.analytics.trend; "
        "sys.exit('numpy' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon_s": 0.0}, "horizon_s must be"),
        ({"horizon_s": -60.0}, "horizon_s must be"),
        ({"horizon_s": math.nan}, "horizon_s must be"),
        ({"horizon_s": 60.0, "step_s": 0.0}, "step_s must be"),
        ({"horizon_s": 60.0, "level": 1.0}, "level must be in"),
        ({"horizon_s": 60.0, "level": 0.0}, "level must be in"),
        ({"horizon_s": 60.0, "method": "arima"}, "method must be one of"),
        ({"horizon_s": 60.0, "season_length": 1}, "season_length must be"),
        ({"horizon_s": 60.0 * (MAX_STEPS + 1)}, "horizon_s / step_s"),
    ],
)
def test_bad_arguments_are_rejected_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forecast(line(20), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "at least 2"),
        ([(T0, 1.0)], "at least 2"),
        ([(T0, 1.0), (T0 + 60.0, math.nan)], "at least 2"),
        ([(T0, 1.0), (T0, 2.0)], "one time"),
    ],
)
def test_too_few_points_are_rejected(points: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forecast(points, horizon_s=60.0)


def test_points_closer_than_half_a_step_are_rejected() -> None:
    with pytest.raises(ValueError, match="less than one step_s"):
        forecast([(T0, 1.0), (T0 + 10.0, 2.0)], horizon_s=60.0, step_s=60.0)


# time to a threshold, to drain, to reach


def test_time_to_threshold_on_a_ramp() -> None:
    result = forecast(line(30), horizon_s=1200.0, method="holt")  # 68 now, +2 a minute
    assert time_to_threshold(result, 100.0) == pytest.approx(960.0, rel=1e-6)
    assert time_to_threshold(result, 69.0) == pytest.approx(30.0, rel=1e-6)
    assert time_to_threshold(result, 68.0) == 0.0
    assert time_to_threshold(result, 500.0) is None  # beyond the horizon
    assert time_to_threshold(result, 10.0, rising=False) is None  # rising away from it


def test_time_to_threshold_for_a_draining_queue() -> None:
    result = forecast(line(20, start=80.0, per_step=-2.0), horizon_s=1800.0, method="holt")
    assert result.last_value == 42.0
    assert time_to_threshold(result, 0.0, rising=False) == pytest.approx(21 * STEP_S, rel=1e-6)
    assert time_to_threshold(result, 50.0, rising=False) == 0.0
    assert time_to_threshold(result, 50.0) is None


def test_time_to_threshold_interpolates_between_given_points() -> None:
    made_up = Forecast(
        method="holt",
        step_s=10.0,
        level=0.95,
        last_at_s=0.0,
        last_value=0.0,
        points=(ForecastPoint(10.0, 4.0, 0.0, 8.0), ForecastPoint(20.0, 12.0, 0.0, 24.0)),
    )
    assert time_to_threshold(made_up, 2.0) == pytest.approx(5.0)
    assert time_to_threshold(made_up, 8.0) == pytest.approx(15.0)
    assert time_to_threshold(made_up, 12.0) == pytest.approx(20.0)
    assert time_to_threshold(made_up, 12.5) is None
    with pytest.raises(ValueError, match="threshold"):
        time_to_threshold(made_up, math.nan)


def test_time_to_drain_textbook_values() -> None:
    assert time_to_drain(100.0, 1.0, 2.0) == 100.0
    assert time_to_drain(600.0, 0.0, 3.0) == 200.0
    assert time_to_drain(0.0, 5.0, 1.0) == 0.0
    assert time_to_drain(10.0, 2.0, 2.0) is None
    assert time_to_drain(10.0, 3.0, 2.0) is None
    for bad in ((-1.0, 1.0, 2.0), (1.0, -1.0, 2.0), (1.0, 1.0, math.inf)):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            time_to_drain(*bad)


def test_time_to_reach_a_threshold_along_a_line() -> None:
    assert time_to_reach(400.0, 2.0, 1000.0) == 300.0
    assert time_to_reach(1000.0, 2.0, 1000.0) == 0.0
    assert time_to_reach(1200.0, 2.0, 1000.0) == 0.0  # already past it
    assert time_to_reach(400.0, -2.0, 1000.0) is None
    assert time_to_reach(400.0, 0.0, 1000.0) is None
    assert time_to_reach(400.0, -2.0, 0.0, rising=False) == 200.0
    assert time_to_reach(400.0, 2.0, 0.0, rising=False) is None
    with pytest.raises(ValueError, match="slope_per_s"):
        time_to_reach(1.0, math.nan, 2.0)
