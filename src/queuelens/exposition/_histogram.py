"""Prometheus cumulative ``le`` buckets read off a :class:`~queuelens.sketch.Sketch`.

    bounds = check_buckets([0.1, 0.5, 1, 5])       # ValueError naming what is wrong
    cumulative_counts(aggregate.duration, bounds)  # [n <= 0.1, n <= 0.5, n <= 1, n <= 5, count]

A sketch bin ``(gamma**(i-1), gamma**i]`` lies wholly on one side of a bound, except the one
bin that holds the bound. That bin is counted as if all its values sat at its representative
value, as the sketch's quantiles do, so only a value within a factor ``gamma`` of the bound
(about twice the relative accuracy: 2% at the default 1%) can be counted on the wrong side of
it. Every other count is exact, the rule depends on the bin alone (so counts never go down
as values are added), and the ``+Inf`` bucket is the exact count.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Iterable, Sequence

from queuelens.sketch import MIN_INDEXABLE, Sketch

__all__ = ["DEFAULT_BUCKETS", "check_buckets", "cumulative_counts"]

#: upper bounds in seconds of the duration and wait histograms, from 5 ms to 30 min
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)


def check_buckets(bounds: Iterable[float], name: str = "metrics_buckets") -> tuple[float, ...]:
    """``bounds`` as floats, or ValueError: they must be finite, above 1 ns and increasing."""
    example = ", ".join(f"{b:g}" for b in DEFAULT_BUCKETS[:4])
    try:
        values = tuple(float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} = {bounds!r} is not a list of numbers; give upper bounds in seconds, "
            f"e.g. [{example}, ...]"
        ) from None
    if not values:
        raise ValueError(f"{name} is empty; give upper bounds in seconds, e.g. [{example}, ...]")
    for bound in values:
        if not math.isfinite(bound) or bound <= MIN_INDEXABLE:
            raise ValueError(
                f"{name}: bound {bound!r} must be a finite number of seconds above 1e-09 "
                "(+Inf is added by itself)"
            )
    for low, high in itertools.pairwise(values):
        if high <= low:
            raise ValueError(f"{name}: bounds must increase strictly, but {high:g} follows {low:g}")
    return values


def cumulative_counts(sketch: Sketch, bounds: Sequence[float]) -> list[int]:
    """How many values are at or below each of ``bounds`` (checked, increasing), then the
    total for ``+Inf``."""
    last_bins = _last_bins(sketch.relative_accuracy, tuple(bounds))
    # per[k]: values first counted under bound k (k = len(bounds): only under +Inf)
    per = [0] * (len(bounds) + 1)
    per[0] = sketch.zero_count  # zeros are below every bound (bounds are above MIN_INDEXABLE)
    for index, n in sketch.bins.items():
        per[bisect.bisect_left(last_bins, index)] += n
    counts = list(itertools.accumulate(per))
    counts[-1] = sketch.count
    return counts


@functools.lru_cache(maxsize=64)
def _last_bins(relative_accuracy: float, bounds: tuple[float, ...]) -> list[int]:
    """Per bound, the index of the last sketch bin counted at or below it."""
    # The same arithmetic as Sketch.add, so a bound's bin is the bin a value equal to it gets.
    gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
    ln_gamma = math.log(gamma)
    inv_ln_gamma = 1.0 / ln_gamma
    last = []
    for bound in bounds:
        edge = math.ceil(math.log(bound) * inv_ln_gamma)  # the bin that holds the bound
        representative = 2.0 * math.exp(edge * ln_gamma) / (gamma + 1.0)
        last.append(edge if representative <= bound else edge - 1)
    return last
