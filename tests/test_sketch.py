"""The sketch's promise: any quantile of any merge is within the relative accuracy."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuelens.sketch import MIN_INDEXABLE, Sketch, SketchError

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
DAY_S = 86400.0

# Durations from exactly zero, through sub-microsecond, to weeks (in seconds).
values = st.one_of(
    st.just(0.0),
    st.floats(min_value=2 * MIN_INDEXABLE, max_value=1e-6),
    st.floats(min_value=1e-6, max_value=1.0),
    st.floats(min_value=1.0, max_value=30 * DAY_S),
)


def exact_quantile(data: list[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within(sketch: Sketch, data: list[float], accuracy: float) -> None:
    for q in QUANTILES:
        expected = exact_quantile(data, q)
        got = sketch.quantile(q)
        assert got is not None
        if expected <= MIN_INDEXABLE:
            assert got <= MIN_INDEXABLE, (q, expected, got)
        else:
            # A hair of float slack for values that sit exactly on a bucket boundary.
            assert abs(got - expected) <= accuracy * expected * (1 + 1e-9), (q, expected, got)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=300), st.sampled_from([0.01, 0.02, 0.005]))
def test_quantiles_within_relative_accuracy(data: list[float], accuracy: float) -> None:
    sketch = Sketch(accuracy)
    for v in data:
        sketch.add(v)
    assert sketch.count == len(data)
    assert sketch.min == min(data)
    assert sketch.max == max(data)
    assert math.isclose(sketch.sum, math.fsum(data), rel_tol=1e-9, abs_tol=1e-12)
    assert_within(sketch, data, accuracy)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(values, max_size=60), min_size=1, max_size=25))
def test_merge_of_many_sketches_is_within_accuracy(parts: list[list[float]]) -> None:
    merged = Sketch()
    for part in parts:
        sketch = Sketch()
        for v in part:
            sketch.add(v)
        merged.merge(sketch)
    everything = [v for part in parts for v in part]
    assert merged.count == len(everything)
    if everything:
        assert_within(merged, everything, 0.01)
    else:
        assert merged.quantile(0.5) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=50), st.lists(values, max_size=50), st.lists(values, max_size=50))
def test_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    def build(data: list[float]) -> Sketch:
        sketch = Sketch()
        for v in data:
            sketch.add(v)
        return sketch

    left = build(a)
    left.merge(build(b))
    left.merge(build(c))  # (a + b) + c
    bc = build(b)
    bc.merge(build(c))
    right = build(a)
    right.merge(bc)  # a + (b + c)
    swapped = build(c)
    swapped.merge(build(a))
    swapped.merge(build(b))  # c + a + b
    assert left == right == swapped
    assert left.bins == right.bins == swapped.bins


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=200))
def test_serialisation_round_trips(data: list[float]) -> None:
    sketch = Sketch(0.02)
    for v in data:
        sketch.add(v)
    restored = Sketch.from_bytes(sketch.to_bytes())
    assert restored == sketch
    assert restored.quantiles(QUANTILES) == sketch.quantiles(QUANTILES)


def test_serialisation_is_compact() -> None:
    rng = random.Random(7)
    sketch = Sketch()
    for _ in range(100_000):
        sketch.add(rng.lognormvariate(-3, 1))
    # 100k values in a few hundred buckets: a few hundred bytes, not 800 kB of floats.
    assert len(sketch.to_bytes()) < 2_000
    assert len(sketch.bins) < 600


def test_large_known_workload() -> None:
    rng = random.Random(42)
    data = [rng.expovariate(1 / 0.2) for _ in range(50_000)] + [0.0] * 100
    sketch = Sketch()
    for v in data:
        sketch.add(v)
    assert_within(sketch, data, 0.01)
    assert sketch.zero_count == 100


def test_bad_inputs_are_refused_with_clear_errors() -> None:
    with pytest.raises(SketchError, match="outside"):
        Sketch(0.0)
    with pytest.raises(SketchError, match="outside"):
        Sketch(1.5)
    sketch = Sketch()
    with pytest.raises(SketchError, match="non-negative"):
        sketch.add(-1.0)
    with pytest.raises(SketchError, match="quantile"):
        sketch.quantile(1.5)
    with pytest.raises(SketchError, match="merge"):
        sketch.merge(Sketch(0.02))
    with pytest.raises(SketchError, match="too short"):
        Sketch.from_bytes(b"\x01")
    good = Sketch()
    good.add(1.0)
    data = good.to_bytes()
    with pytest.raises(SketchError, match="version"):
        Sketch.from_bytes(b"\x09" + data[1:])
    with pytest.raises(SketchError, match="truncated"):
        Sketch.from_bytes(data[:-1])
    with pytest.raises(SketchError, match="trailing"):
        Sketch.from_bytes(data + b"\x00")


def test_empty_sketch() -> None:
    sketch = Sketch()
    assert sketch.quantile(0.5) is None
    assert sketch.avg is None
    assert Sketch.from_bytes(sketch.to_bytes()) == sketch
    assert sketch.copy() == sketch
    assert "count=0" in repr(sketch)


def test_from_bins_rebuilds_a_sketch() -> None:
    sketch = Sketch()
    for v in (0.0, 0.5, 0.5, 3.0):
        sketch.add(v)
    twin = Sketch.from_bins(
        0.01, dict(sketch.bins), sketch.zero_count, sketch.sum, sketch.min, sketch.max
    )
    assert twin == sketch
    assert twin.avg == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(values, max_size=200),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8),
)
def test_quantiles_in_one_pass_equal_quantile_one_at_a_time(
    data: list[float], qs: list[float]
) -> None:
    sketch = Sketch()
    for v in data:
        sketch.add(v)
    assert sketch.quantiles(qs) == [sketch.quantile(q) for q in qs]


def test_quantiles_rejects_out_of_range() -> None:
    with pytest.raises(SketchError, match="outside"):
        Sketch().quantiles([0.5, 1.5])
