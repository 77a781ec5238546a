"""A mergeable histogram with a guaranteed relative error (the DDSketch idea).

    sketch = Sketch(relative_accuracy=0.01)
    for seconds in (0.012, 0.250, 3.5):
        sketch.add(seconds)
    sketch.quantile(0.95)          # within 1% of the exact 95th percentile

Values fall into log-spaced buckets ``(gamma**(i-1), gamma**i]`` with
``gamma = (1 + a) / (1 - a)``; every bucket is reported by one representative value that is
within the relative accuracy ``a`` of anything inside it. Buckets are counts, so two sketches
of the same accuracy merge by adding counts: merging is exact, associative and commutative,
and any quantile of any merge stays within ``a`` of the exact quantile of the combined data.

Quantiles use the lower nearest-rank definition: ``quantile(q)`` estimates the element at
zero-based position ``floor(q * (n - 1))`` of the sorted data. Values below
:data:`MIN_INDEXABLE` (a nanosecond, for values in seconds) are counted in a zero bucket.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain
from math import ceil, log

__all__ = ["MIN_INDEXABLE", "Sketch", "SketchError"]

#: values at or below this are counted as zero (1 ns when values are seconds)
MIN_INDEXABLE = 1e-9

_FORMAT_VERSION = 1
_HEADER = struct.Struct("<Bdddd")  # version, accuracy, sum, min, max
#: one varint of the serialised form: continuation bytes, then a final byte below 0x80
_VARINT = re.compile(rb"[\x80-\xff]*[\x00-\x7f]")


class SketchError(ValueError):
    """A sketch was given a value, an accuracy or bytes it cannot accept."""


class Sketch:
    """A sparse log-bucket histogram of non-negative values; see the module docstring."""

    __slots__ = (
        "_inv_ln_gamma",
        "_ln_gamma",
        "bins",
        "count",
        "max",
        "min",
        "relative_accuracy",
        "sum",
        "zero_count",
    )

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise SketchError(
                f"relative accuracy {relative_accuracy!r} is outside (0, 1); e.g. 0.01 for 1%"
            )
        self.relative_accuracy = relative_accuracy
        gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._ln_gamma = math.log(gamma)
        self._inv_ln_gamma = 1.0 / self._ln_gamma
        #: bucket index -> number of values in ``(gamma**(i-1), gamma**i]``
        self.bins: dict[int, int] = {}
        #: number of values at or below :data:`MIN_INDEXABLE`
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    # -- writing ---------------------------------------------------------------------------

    def add(self, value: float) -> None:
        """Count one value (``>= 0``). This is on the job hot path, so it is kept minimal."""
        if value > MIN_INDEXABLE:
            bins = self.bins
            index = ceil(log(value) * self._inv_ln_gamma)
            bins[index] = bins.get(index, 0) + 1
        elif value >= 0.0:
            self.zero_count += 1
        else:
            raise SketchError(f"a sketch counts non-negative values, got {value!r}")
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Sketch) -> None:
        """Add every value counted by ``other`` into this sketch (same accuracy required)."""
        if other.relative_accuracy != self.relative_accuracy:
            raise SketchError(
                f"cannot merge sketches of accuracy {self.relative_accuracy} and "
                f"{other.relative_accuracy}; use one histogram accuracy for all writers"
            )
        if other.count == 0:
            return
        bins = self.bins
        if not bins:
            self.bins = dict(other.bins)
        else:
            get = bins.get
            for index, n in other.bins.items():
                bins[index] = get(index, 0) + n
        self.zero_count += other.zero_count
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def merge_bytes(self, data: bytes) -> None:
        """:meth:`merge` the sketch that :meth:`to_bytes` wrote as ``data``, without building
        it first (reads merge many stored sketches into one)."""
        accuracy, total, low, high, zero_count, indexes, counts = _parse(data)
        if accuracy != self.relative_accuracy:
            raise SketchError(
                f"cannot merge sketches of accuracy {self.relative_accuracy} and "
                f"{accuracy}; use one histogram accuracy for all writers"
            )
        count = zero_count + sum(counts)
        if count == 0:
            return
        bins = self.bins
        if not bins:
            self.bins = dict(zip(indexes, counts, strict=True))
        else:
            get = bins.get
            for index, n in zip(indexes, counts, strict=True):
                bins[index] = get(index, 0) + n
        self.zero_count += zero_count
        self.count += count
        self.sum += total
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    def copy(self) -> Sketch:
        twin = Sketch(self.relative_accuracy)
        twin.merge(self)
        return twin

    # -- reading ---------------------------------------------------------------------------

    @property
    def avg(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` in [0, 1], or None when the sketch is empty."""
        if not 0.0 <= q <= 1.0:
            raise SketchError(f"quantile {q!r} is outside [0, 1]; e.g. 0.95 for p95")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        seen = self.zero_count
        if seen > rank:
            return max(self.min, 0.0)
        estimate = self.max
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen > rank:
                estimate = self._representative(index)
                break
        # Clamping to the exact extremes keeps the error bound and makes p0/p100 exact.
        return min(max(estimate, self.min), self.max)

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Several quantiles in one pass over the bins (``qs`` in any order)."""
        wanted = list(qs)
        for q in wanted:
            if not 0.0 <= q <= 1.0:
                raise SketchError(f"quantile {q!r} is outside [0, 1]; e.g. 0.95 for p95")
        if self.count == 0:
            return [None] * len(wanted)
        order = sorted(range(len(wanted)), key=lambda i: wanted[i])
        out: list[float | None] = [None] * len(wanted)
        bins = iter(sorted(self.bins.items()))
        seen = self.zero_count
        index: int | None = None  # the bin reached; None: still in the zero bucket
        past_end = False
        for position in order:
            rank = math.floor(wanted[position] * (self.count - 1))
            while seen <= rank and not past_end:
                item = next(bins, None)
                if item is None:
                    past_end = True
                else:
                    index, n = item
                    seen += n
            # only the bins a quantile lands in are worth an exp()
            if past_end:
                estimate = self.max
            elif index is None:
                estimate = max(self.min, 0.0)
            else:
                estimate = self._representative(index)
            out[position] = min(max(estimate, self.min), self.max)
        return out

    def _representative(self, index: int) -> float:
        # Midpoint in the relative sense: 2 * gamma**i / (gamma + 1).
        return 2.0 * math.exp(index * self._ln_gamma) / (math.exp(self._ln_gamma) + 1.0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return (
            self.relative_accuracy == other.relative_accuracy
            and self.count == other.count
            and self.zero_count == other.zero_count
            and self.bins == other.bins
            and math.isclose(self.sum, other.sum, rel_tol=1e-9, abs_tol=1e-12)
            and (self.count == 0 or (self.min == other.min and self.max == other.max))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Sketch(relative_accuracy={self.relative_accuracy}, count={self.count}, "
            f"bins={len(self.bins)})"
        )

    # -- serialisation ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact form: a header, then zig-zag delta-coded bucket indexes and varint counts."""
        empty = self.count == 0
        out = bytearray(
            _HEADER.pack(
                _FORMAT_VERSION,
                self.relative_accuracy,
                self.sum,
                0.0 if empty else self.min,
                0.0 if empty else self.max,
            )
        )
        _put_varint(out, self.zero_count)
        _put_varint(out, len(self.bins))
        previous = 0
        for index in sorted(self.bins):
            _put_varint(out, _zigzag(index - previous))
            _put_varint(out, self.bins[index])
            previous = index
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        """Rebuild a sketch written by :meth:`to_bytes`; raise SketchError on damaged bytes."""
        accuracy, total, low, high, zero_count, indexes, counts = _parse(data)
        sketch = cls(accuracy)
        sketch.bins = dict(zip(indexes, counts, strict=True))
        sketch.zero_count = zero_count
        sketch.count = zero_count + sum(counts)
        sketch.sum = total
        if sketch.count:
            sketch.min, sketch.max = low, high
        return sketch

    @classmethod
    def from_bins(
        cls,
        relative_accuracy: float,
        bins: dict[int, int],
        zero_count: int,
        total: float,
        low: float,
        high: float,
    ) -> Sketch:
        """Rebuild a sketch from parts kept elsewhere (for example Redis hash fields)."""
        sketch = cls(relative_accuracy)
        sketch.bins = {i: n for i, n in bins.items() if n}
        sketch.zero_count = zero_count
        sketch.count = zero_count + sum(sketch.bins.values())
        sketch.sum = total
        if sketch.count:
            sketch.min, sketch.max = low, high
        return sketch


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


#: zig-zag decoding of every one-byte varint
_UNZIGZAG_BYTE = tuple(_unzigzag(n) for n in range(0x80))


def _parse(
    data: bytes,
) -> tuple[float, float, float, float, int, Iterator[int], Sequence[int]]:
    """Accuracy, sum, min, max, zero count, bin indexes and bin counts of :meth:`Sketch.to_bytes`
    output; SketchError if it is damaged.

    Reads decode thousands of sketches per query, so the bins are not decoded one varint at a
    time: past the first index (far from zero), a minute bucket's varints are all one byte
    (counts below 128, nearby indexes), and then the bytes are the numbers; otherwise a
    regular expression splits the body into varints.
    """
    if len(data) < _HEADER.size:
        raise SketchError(f"sketch bytes too short ({len(data)} bytes)")
    version, accuracy, total, low, high = _HEADER.unpack_from(data)
    if version != _FORMAT_VERSION:
        raise SketchError(f"unknown sketch format version {version}")
    body = bytes(data[_HEADER.size :])
    if not body or body[-1] >= 0x80:
        raise SketchError("sketch bytes are truncated")
    # zero count, number of bins and the first index, each possibly several bytes
    head: list[int] = []
    value = shift = pos = 0
    while len(head) < 3 and pos < len(body):
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            head.append(value)
            value = shift = 0
    if len(head) < 2 or (head[1] and len(head) < 3):
        raise SketchError("sketch bytes are truncated")
    zero_count, n_bins = head[0], head[1]
    if n_bins == 0:
        if pos != len(body):
            raise SketchError(f"{len(body) - pos} unexpected trailing bytes after a sketch")
        return accuracy, total, low, high, zero_count, iter(()), ()
    rest = body[pos:]  # count, then (delta, count) per further bin
    numbers: Sequence[int] = rest
    if not rest or max(rest) >= 0x80:
        numbers = [v[0] if len(v) == 1 else _varint(v) for v in _VARINT.findall(rest)]
    if len(numbers) != 2 * n_bins - 1:
        if len(numbers) < 2 * n_bins - 1:
            raise SketchError("sketch bytes are truncated")
        extra = len(numbers) - 2 * n_bins + 1
        raise SketchError(f"{extra} unexpected trailing varints after a sketch")
    unzigzag = _UNZIGZAG_BYTE.__getitem__ if numbers is rest else _unzigzag
    steps = chain((_unzigzag(head[2]),), map(unzigzag, numbers[1::2]))
    return accuracy, total, low, high, zero_count, accumulate(steps), numbers[0::2]


def _varint(encoded: bytes) -> int:
    value = 0
    for shift, byte in enumerate(encoded):
        value |= (byte & 0x7F) << (7 * shift)
    return value


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
