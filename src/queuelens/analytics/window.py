"""Time windows and the bucket ranges that cover them exactly.

    window = parse_window("1h")                          # the last hour, ending now
    window = parse_window(since="2026-11-28T09:00Z", until="2026-11-28T10:00Z")
    for span in cover(window, retention):                # coarsest buckets first
        storage.read_buckets(series, span.resolution, span.start, span.end)

A window is rounded outward to whole minutes (the finest bucket there is): ``1h`` at 10:42:30
reads the minutes from 09:42 through 10:42, the last one still filling. Where the window
reaches back past the retention of minute buckets, its start is rounded to the hour (or the
day), because finer data no longer exists there; :attr:`Window.start` says where it began.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from queuelens.model import Resolution, bucket_start
from queuelens.storage.base import Retention

__all__ = [
    "WINDOWS",
    "Span",
    "Window",
    "WindowError",
    "cover",
    "parse_step",
    "parse_time",
    "parse_window",
    "resolution_for_step",
]

#: the named windows every surface accepts, in seconds
WINDOWS: dict[str, int] = {
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class WindowError(ValueError):
    """A window, time or step is not understood; the message names it and what is accepted."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)`` in unix seconds; ``start`` is on a bucket boundary."""

    start: float
    end: float
    #: the name asked for (``1h``) or ``custom`` for since/until
    label: str

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def minutes(self) -> float:
        """Length in minutes: the denominator of every per-minute rate."""
        return self.duration_s / 60.0


@dataclass(frozen=True, slots=True)
class Span:
    """A run of buckets of one resolution: bucket starts in ``[start, end)``."""

    resolution: Resolution
    start: int
    end: int


def parse_time(value: str | float, parameter: str = "since") -> float:
    """Unix seconds from a number or an ISO 8601 time (``2026-11-28T09:00:00Z``; naive = UTC)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise WindowError(
                    parameter,
                    f"{value!r} is not a time; use unix seconds or ISO 8601, "
                    "e.g. 2026-11-28T09:00:00Z",
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise WindowError(parameter, f"{value!r} is not a time after 1970")
    return seconds


def _duration(text: str, parameter: str) -> float:
    text = text.strip().lower()
    unit = text[-1:] if text[-1:] in _UNITS else "s"
    number = text[:-1] if text[-1:] in _UNITS else text
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise WindowError(
            parameter, f"{text!r} is not a duration; e.g. 60s, 5m, 1h or 1d"
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise WindowError(parameter, f"{text!r} must be positive")
    return seconds


def parse_window(
    window: str | None = "1h",
    *,
    since: str | float | None = None,
    until: str | float | None = None,
    now: float | None = None,
    retention: Retention | None = None,
) -> Window:
    """The window named ``window`` ending now, or ``[since, until)`` when ``since`` is given.

    Raises :class:`WindowError` naming the parameter and the accepted values.
    """
    now = time.time() if now is None else now
    if since is not None:
        start = parse_time(since, "since")
        end = now if until is None else parse_time(until, "until")
        if end <= start:
            raise WindowError("until", "must be later than since")
        label = "custom"
    else:
        if until is not None:
            raise WindowError("until", "needs since; or use window=1h alone")
        name = (window or "1h").strip()
        if name not in WINDOWS:
            raise WindowError("window", f"{name!r} is not a window; accepted: {', '.join(WINDOWS)}")
        start, end, label = now - WINDOWS[name], now, name
    resolution = finest_available(start, now, retention or Retention())
    start = bucket_start(start, resolution)
    # An end inside a bucket includes that bucket; a bucket is the finest thing we can read.
    end_bucket = bucket_start(end, Resolution.minute)
    if end_bucket < end:
        end = end_bucket + int(Resolution.minute)
    return Window(float(start), float(end), label)


def finest_available(at: float, now: float, retention: Retention) -> Resolution:
    """The finest resolution whose buckets still exist at time ``at``."""
    for resolution in Resolution:
        if at >= now - retention.for_resolution(resolution):
            return resolution
    return Resolution.day


def cover(window: Window) -> Iterator[Span]:
    """Spans of the coarsest buckets that lie wholly inside ``window``, then finer edges.

    Every instant of the window is in exactly one bucket of exactly one span, so merging the
    buckets of all spans counts every job once.
    """
    yield from _cover(int(window.start), int(window.end), len(Resolution) - 1)


def _cover(start: int, end: int, level: int) -> Iterator[Span]:
    resolutions = list(Resolution)
    resolution = resolutions[level]
    width = int(resolution)
    if level == 0:
        if start < end:
            yield Span(resolution, bucket_start(start, width), end)
        return
    inner_start = -(-start // width) * width
    inner_end = (end // width) * width
    if inner_start >= inner_end:
        yield from _cover(start, end, level - 1)
        return
    yield from _cover(start, inner_start, level - 1)
    yield Span(resolution, inner_start, inner_end)
    yield from _cover(inner_end, end, level - 1)


def parse_step(step: str | float | None, window: Window, points: int = 60) -> int:
    """A step in seconds: as given (rounded to whole minutes, hours or days), or one that
    splits ``window`` into about ``points`` points."""
    if step is None:
        raw = max(window.duration_s / points, 60.0)
    elif isinstance(step, str):
        raw = _duration(step, "step")
    else:
        raw = float(step)
        if not math.isfinite(raw) or raw <= 0:
            raise WindowError("step", f"{step!r} must be a positive number of seconds")
    resolution = resolution_for_step(raw)
    width = int(resolution)
    seconds = max(width, round(raw / width) * width)
    if window.duration_s / seconds > 10_000:
        raise WindowError("step", f"{step!r} gives more than 10,000 points; use a larger step")
    return seconds


def resolution_for_step(step_s: float) -> Resolution:
    """The coarsest resolution a step is a whole number of."""
    for resolution in reversed(Resolution):
        if step_s >= int(resolution) and step_s % int(resolution) == 0:
            return resolution
    return Resolution.minute
