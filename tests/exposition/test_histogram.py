"""Cumulative ``le`` buckets from sketches: exact away from a bound, within accuracy at it."""

from __future__ import annotations

import math
import random

import pytest

from queuelens.exposition._histogram import DEFAULT_BUCKETS, check_buckets, cumulative_counts
from queuelens.sketch import Sketch


def exact(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    return [sum(1 for v in values if v <= b) for b in bounds] + [len(values)]


def away_from(bounds: tuple[float, ...], rng: random.Random, n: int, margin: float) -> list[float]:
    """``n`` log-uniform values from 1 ms to 1 h, none within ``margin`` (relative) of a bound."""
    out: list[float] = []
    while len(out) < n:
        value = math.exp(rng.uniform(math.log(1e-3), math.log(3600.0)))
        if all(abs(value / b - 1.0) > margin for b in bounds):
            out.append(value)
    return out


@pytest.mark.parametrize("accuracy", [0.01, 0.02, 0.005])
def test_counts_are_exact_for_values_away_from_bounds(accuracy: float) -> None:
    rng = random.Random(7)
    values = away_from(DEFAULT_BUCKETS, rng, 5000, margin=3 * accuracy)
    values += [0.0] * 17  # zeros are below every bound
    sketch = Sketch(accuracy)
    for value in values:
        sketch.add(value)
    assert cumulative_counts(sketch, DEFAULT_BUCKETS) == exact(values, DEFAULT_BUCKETS)


def test_values_at_a_bound_are_off_by_at_most_those_within_gamma_of_it() -> None:
    accuracy = 0.01
    gamma = (1 + accuracy) / (1 - accuracy)
    bounds = (0.1, 1.0, 10.0)
    rng = random.Random(3)
    values = [b * rng.uniform(1 / gamma, gamma) for b in bounds for _ in range(200)]
    values += away_from(bounds, rng, 300, margin=0.05)
    sketch = Sketch(accuracy)
    for value in values:
        sketch.add(value)
    counts = cumulative_counts(sketch, bounds)
    for bound, got, want in zip(bounds, counts, exact(values, bounds), strict=False):
        near = sum(1 for v in values if 1 / gamma <= v / bound <= gamma)
        assert abs(got - want) <= near
    assert counts[-1] == len(values)


def test_a_value_equal_to_a_bound_counts_in_its_bucket() -> None:
    sketch = Sketch(0.01)
    for bound in DEFAULT_BUCKETS:
        sketch.add(bound)
    counts = cumulative_counts(sketch, DEFAULT_BUCKETS)
    # Each bound's bin holds the bound only; whether the bin counts depends on where the
    # bound lies in it, so allow the one value at each bound to go either way.
    for i, count in enumerate(counts[:-1]):
        assert i <= count <= i + 1


def test_counts_never_decrease_as_values_are_added() -> None:
    rng = random.Random(11)
    sketch = Sketch(0.01)
    previous = cumulative_counts(sketch, DEFAULT_BUCKETS)
    assert previous == [0] * (len(DEFAULT_BUCKETS) + 1)
    for _ in range(50):
        batch = Sketch(0.01)
        for _ in range(20):
            batch.add(math.exp(rng.uniform(math.log(1e-4), math.log(7200.0))))
        sketch.merge(batch)
        counts = cumulative_counts(sketch, DEFAULT_BUCKETS)
        assert all(now >= before for now, before in zip(counts, previous, strict=True))
        assert counts == sorted(counts)  # cumulative
        previous = counts


def test_check_buckets_accepts_increasing_positive_bounds() -> None:
    assert check_buckets([1, 2.5, 10]) == (1.0, 2.5, 10.0)
    assert check_buckets(DEFAULT_BUCKETS) == DEFAULT_BUCKETS


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ([], "metrics_buckets is empty"),
        ([1.0, "x"], "is not a list of numbers"),
        ([0.0, 1.0], "bound 0.0 must be a finite number"),
        ([1.0, math.inf], "bound inf must be a finite number"),
        ([1.0, math.nan], "bound nan must be a finite number"),
        ([1.0, 0.5], "bounds must increase strictly, but 0.5 follows 1"),
        ([1.0, 1.0], "bounds must increase strictly, but 1 follows 1"),
    ],
)
def test_check_buckets_names_what_is_wrong(bounds: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_buckets(bounds)  # type: ignore[arg-type]
