"""Windows round outward to whole buckets and are covered exactly, each instant once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuelens.analytics.window import (
    WINDOWS,
    Window,
    WindowError,
    cover,
    parse_step,
    parse_time,
    parse_window,
    resolution_for_step,
)
from queuelens.model import Resolution
from queuelens.storage.base import Retention

NOW = datetime(2026, 11, 28, 10, 42, 30, tzinfo=UTC).timestamp()


def test_named_window_rounds_to_whole_minutes_and_includes_the_filling_one() -> None:
    window = parse_window("1h", now=NOW)
    assert window.start == datetime(2026, 11, 28, 9, 42, tzinfo=UTC).timestamp()
    assert window.end == datetime(2026, 11, 28, 10, 43, tzinfo=UTC).timestamp()
    assert window.label == "1h"
    assert window.minutes == 61


def test_every_named_window_parses() -> None:
    for name, seconds in WINDOWS.items():
        window = parse_window(name, now=NOW)
        assert seconds <= window.duration_s <= seconds + 86400 + 60


def test_window_past_minute_retention_starts_on_an_hour() -> None:
    window = parse_window("7d", now=NOW)
    assert window.start % 3600 == 0
    assert window.start <= NOW - 7 * 86400


def test_since_until_iso_and_unix() -> None:
    window = parse_window(since="2026-11-28T09:00:00Z", until="2026-11-28T10:00:00Z", now=NOW)
    assert window.duration_s == 3600
    assert window.label == "custom"
    naive = parse_time("2026-11-28T09:00:00")
    assert naive == parse_time("2026-11-28T09:00:00+00:00") == parse_time(str(naive))


@pytest.mark.parametrize(
    ("kwargs", "parameter", "text"),
    [
        ({"window": "2h"}, "window", "accepted: 5m, 15m, 1h"),
        ({"window": None, "since": "yesterday"}, "since", "ISO 8601"),
        ({"since": "2026-11-28T10:00:00Z", "until": "2026-11-28T09:00:00Z"}, "until", "later"),
        ({"until": "2026-11-28T09:00:00Z"}, "until", "needs since"),
        ({"since": -5}, "since", "after 1970"),
    ],
)
def test_bad_windows_name_the_parameter(
    kwargs: dict[str, object], parameter: str, text: str
) -> None:
    with pytest.raises(WindowError, match=text) as info:
        parse_window(now=NOW, **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}: ")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40 * 86400), st.integers(60, 40 * 86400))
def test_cover_counts_every_minute_exactly_once(offset_s: int, length_s: int) -> None:
    start = 1_700_000_000 - 1_700_000_000 % 60 + (offset_s // 60) * 60
    end = start + (length_s // 60) * 60
    window = Window(float(start), float(end), "custom")
    covered = 0
    previous_end = start
    for span in sorted(cover(window), key=lambda s: s.start):
        width = int(span.resolution)
        assert span.start % width == 0
        assert (span.end - span.start) % width == 0
        assert span.start == previous_end  # contiguous: nothing missing, nothing twice
        previous_end = span.end
        covered += span.end - span.start
    assert previous_end == end
    assert covered == end - start


def test_cover_uses_the_coarsest_buckets_inside() -> None:
    day = 1_700_006_400  # a UTC midnight
    assert day % 86400 == 0
    window = Window(float(day - 120), float(day + 86400 + 3600 + 180), "custom")
    spans = [(s.resolution, s.start, s.end) for s in cover(window)]
    assert spans == [
        (Resolution.minute, day - 120, day),
        (Resolution.day, day, day + 86400),
        (Resolution.hour, day + 86400, day + 86400 + 3600),
        (Resolution.minute, day + 86400 + 3600, day + 86400 + 3600 + 180),
    ]


def test_steps() -> None:
    window = parse_window("24h", now=NOW)
    assert parse_step(None, window) == 1440  # about 60 points, whole minutes
    assert parse_step("5m", window) == 300
    assert parse_step(90, window) == 120
    assert parse_step("1h", window) == 3600
    assert resolution_for_step(7200) is Resolution.hour
    assert resolution_for_step(86400 * 2) is Resolution.day
    with pytest.raises(WindowError, match="step: 'soon' is not a duration"):
        parse_step("soon", window)
    with pytest.raises(WindowError, match="must be positive"):
        parse_step("-5m", window)
    with pytest.raises(WindowError, match="10,000 points"):
        parse_step(60, parse_window("30d", now=NOW, retention=Retention(minute_s=40 * 86400)))
    with pytest.raises(WindowError, match="positive number"):
        parse_step(float("nan"), window)
