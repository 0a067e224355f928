"""Latencies in fixed memory: a log-linear histogram, as HdrHistogram keeps them."""

from __future__ import annotations

import math

# Each power of two from 128 µs up is split into 64 buckets, so a bucket is
# at most 1/64 (1.6%) of its values wide; below 128 µs a bucket is 1 µs.
_SUB_BUCKETS = 64
_LINEAR_UP_TO = 2 * _SUB_BUCKETS
# Values are clamped to 2^40 µs (about 12.7 days): the table never grows.
_MAX_MICROSECONDS = 2**40 - 1
_BUCKETS = (_MAX_MICROSECONDS.bit_length() - 7) * _SUB_BUCKETS + _LINEAR_UP_TO


def _index(microseconds: int) -> int:
    shift = max(0, microseconds.bit_length() - 7)
    return shift * _SUB_BUCKETS + (microseconds >> shift)


def _bucket_middle(index: int) -> float:
    """The middle of bucket ``index``, in µs."""
    shift = max(0, (index >> 6) - 1)
    low = (index - shift * _SUB_BUCKETS) << shift
    return low + ((1 << shift) - 1) / 2


class LatencyHistogram:
    """Counts of latencies in ~2,200 buckets: the same memory for ten values or 10^8.

    Percentiles are exact to the bucket (1 µs below 128 µs, 1.6% above);
    the count, minimum, maximum and mean are exact.
    """

    __slots__ = ("_counts", "count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def record(self, seconds: float) -> None:
        """Count one latency, in seconds (negative ones count as 0)."""
        microseconds = min(max(int(seconds * 1e6), 0), _MAX_MICROSECONDS)
        self._counts[_index(microseconds)] += 1
        self.count += 1
        self.total += seconds
        self.minimum = min(self.minimum, seconds)
        self.maximum = max(self.maximum, seconds)

    def percentile(self, fraction: float) -> float:
        """The latency (seconds) below which ``fraction`` of them fall; NaN if none."""
        if not self.count:
            return math.nan
        rank = min(self.count - 1, int(fraction * self.count))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen > rank:
                middle = _bucket_middle(index) / 1e6
                return min(max(middle, self.minimum), self.maximum)
        return self.maximum  # not reached: the counts add up to count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan
