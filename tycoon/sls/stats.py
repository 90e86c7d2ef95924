"""Price statistics of one series: moving-window moments and a dynamically ranged histogram.

This is the "price statistics" body served by the SLS, per host per resource::

    {"windows": {"minute"|"hour"|"day": {"count": int, "mean": float, "var": float,
                                         "skew": float, "kurt": float}},
     "histogram": {"edges": [float] * (bins + 1), "counts": [int] * bins}}

Agents read it back with :meth:`PriceStatistics.from_body` and build predictions from
the moments and from :meth:`ProbabilityDistribution.cdf` / ``quantile``.
The approximations are described in :mod:`tycoon.sls.tables` and ``docs/sls.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tycoon.errors import Rejected
from tycoon.sls.tables import DEFAULT_BINS, DEFAULT_BUCKETS, HistogramTable, MomentTable

MAX_BINS = 4096
_ONE = np.zeros(1, dtype=np.int64)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("malformed", f"{what} must be a finite number")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Rejected("malformed", f"{what} must be a non-negative integer")
    return value


@dataclass(frozen=True)
class Moments:
    """Population moments of the samples in one window (kurt = excess kurtosis)."""

    count: int
    mean: float
    var: float
    skew: float
    kurt: float

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def to_body(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "var": self.var,
            "skew": self.skew,
            "kurt": self.kurt,
        }

    @classmethod
    def from_body(cls, body: Any) -> Moments:
        """Read one window's moments; ``malformed`` if a field is missing or not finite."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "window moments must be a map")
        var = _finite(body.get("var"), "var")
        if var < 0:
            raise Rejected("malformed", "var must be >= 0")
        return cls(
            count=_count(body.get("count"), "count"),
            mean=_finite(body.get("mean"), "mean"),
            var=var,
            skew=_finite(body.get("skew"), "skew"),
            kurt=_finite(body.get("kurt"), "kurt"),
        )


def moments_body(values: Any, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """A ``windows`` body from (windows, 5) values: count, mean, var, skew, kurt."""
    rows = values.tolist() if isinstance(values, np.ndarray) else values
    return {
        name: {"count": int(n), "mean": mean, "var": var, "skew": skew, "kurt": kurt}
        for name, (n, mean, var, skew, kurt) in zip(names, rows, strict=True)
    }


class WindowStatistics:
    """Count, mean, variance, skewness and excess kurtosis over moving time windows.

    O(1) per sample: each window is a ring of ``buckets`` sub-window buckets of power
    sums, so a window slides one bucket (window / buckets) at a time.
    """

    def __init__(self, windows: dict[str, int] | None = None, buckets: int = DEFAULT_BUCKETS):
        self._table = MomentTable(1, windows, buckets)
        self._last_ns = 0

    @property
    def names(self) -> tuple[str, ...]:
        return self._table.names

    def add(self, t_ns: int, x: float) -> None:
        """Add the sample ``x`` observed at ``t_ns`` (times should not go backwards)."""
        x = _finite(x, "sample")
        self._last_ns = max(self._last_ns, t_ns)
        self._table.add(_ONE, np.array([t_ns], dtype=np.int64), np.array([x]))

    def moments(self, now_ns: int | None = None) -> dict[str, Moments]:
        """The moments of every window at ``now_ns`` (default: the latest sample time)."""
        return {k: Moments(**v) for k, v in self.to_body(now_ns).items()}

    def to_body(self, now_ns: int | None = None) -> dict[str, dict[str, Any]]:
        """The ``windows`` part of the price statistics body."""
        at = np.array([self._last_ns if now_ns is None else now_ns], dtype=np.int64)
        return moments_body(self._table.read(_ONE, at)[0], self.names)

    @staticmethod
    def from_body(body: Any) -> dict[str, Moments]:
        """Read a ``windows`` body back (window name -> :class:`Moments`)."""
        if not isinstance(body, dict) or len(body) > 16:
            raise Rejected("malformed", "windows must be a map of at most 16 windows")
        return {str(name): Moments.from_body(value) for name, value in body.items()}


class ProbabilityDistribution:
    """A histogram with a fixed number of equal-width bins whose range follows the data.

    A value outside the range widens it by a power of two, merging neighbouring bins
    whole, so counts stay exact and the range is at most about twice what the data needs.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if not 2 <= bins <= MAX_BINS:
            raise ValueError(f"bins must be in [2, {MAX_BINS}]")
        self.bins = bins
        self._table = HistogramTable(1, bins)
        self._counts = self._table.counts[0]

    @property
    def lo(self) -> float:
        return float(self._table.lo[0])

    @property
    def width(self) -> float:
        return float(self._table.width[0])

    @property
    def counts(self) -> list[int]:
        return self._counts.tolist()

    @property
    def total(self) -> int:
        return int(self._counts.sum())

    @property
    def edges(self) -> list[float]:
        return self._table.edges(0)

    def add(self, x: float) -> None:
        """Count one value, widening the range if it falls outside."""
        self.extend([x])

    def extend(self, values: Any) -> None:
        """Count many values, in order."""
        x = np.array([_finite(v, "value") for v in values], dtype=np.float64)
        self._table.add(np.zeros(x.size, dtype=np.int64), x)
        self._counts = self._table.counts[0]

    def cdf(self, x: float) -> float:
        """P(X <= x), linear inside a bin."""
        total = self.total
        if total == 0:
            raise ValueError("the distribution is empty")
        if x < self.lo:
            return 0.0
        i = int((x - self.lo) // self.width) if self.width > 0 else self.bins
        if i >= self.bins:
            return 1.0
        below = int(self._counts[:i].sum())
        frac = (x - self.lo - i * self.width) / self.width
        return min(1.0, float(below + self._counts[i] * frac) / total)

    def quantile(self, q: float | Any) -> Any:
        """The value below which a fraction ``q`` of the mass lies (scalar or array of q)."""
        qs = np.asarray(q, dtype=np.float64)
        if np.any((qs < 0) | (qs > 1)) or not np.all(np.isfinite(qs)):
            raise ValueError("q must be in [0, 1]")
        total = self.total
        if total == 0:
            raise ValueError("the distribution is empty")
        cum = np.cumsum(self._counts)
        target = qs * total
        first = int(np.flatnonzero(self._counts)[0])
        i = np.maximum(np.searchsorted(cum, target, side="left"), first)
        i = np.minimum(i, self.bins - 1)
        before = np.where(i > 0, cum[np.maximum(i - 1, 0)], 0)
        frac = np.clip((target - before) / self._counts[i], 0.0, 1.0)
        result = self.lo + self.width * (i + frac)
        return float(result) if result.ndim == 0 else result

    def mean(self) -> float:
        """The mean of the binned data (bin midpoints)."""
        total = self.total
        if total == 0:
            raise ValueError("the distribution is empty")
        mids = self.lo + self.width * (np.arange(self.bins) + 0.5)
        return float((mids * self._counts).sum() / total)

    def to_body(self) -> dict[str, list[Any]]:
        """The ``histogram`` part of the price statistics body."""
        return {"edges": self.edges, "counts": self.counts}

    @classmethod
    def from_body(cls, body: Any) -> ProbabilityDistribution:
        """Read a ``histogram`` body back; edges must be equally spaced."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "histogram must be a map")
        edges, counts = body.get("edges"), body.get("counts")
        if not isinstance(edges, list) or not isinstance(counts, list):
            raise Rejected("malformed", "histogram needs lists 'edges' and 'counts'")
        if not 2 <= len(counts) <= MAX_BINS or len(edges) != len(counts) + 1:
            raise Rejected("malformed", "histogram needs bins+1 edges for 2..4096 bins")
        bins = len(counts)
        if not all(e.__class__ is float or e.__class__ is int for e in edges):
            raise Rejected("malformed", "histogram edges must be numbers")
        if not all(c.__class__ is int for c in counts):
            raise Rejected("malformed", "histogram counts must be integers")
        e = np.array(edges, dtype=np.float64)
        try:
            c = np.array(counts, dtype=np.int64)
        except OverflowError as exc:
            raise Rejected("malformed", "histogram count out of range") from exc
        lo, width = float(e[0]), float(e[-1] - e[0]) / bins
        if not np.isfinite(e).all() or (c < 0).any():
            raise Rejected("malformed", "histogram edges must be finite, counts >= 0")
        if np.abs(e - (lo + width * np.arange(bins + 1))).max() > 1e-6 * abs(width) * bins:
            raise Rejected("malformed", "histogram edges must be equally spaced")
        if width < 0 or (width == 0 and c.any()):
            raise Rejected("malformed", "histogram edges must increase (when it has counts)")
        dist = cls(bins)
        dist._counts[:] = c
        dist._table.lo[0], dist._table.width[0] = lo, width
        return dist


@dataclass(frozen=True)
class PriceStatistics:
    """The statistics of one host's price of one resource, as served by the SLS."""

    windows: dict[str, Moments]
    histogram: ProbabilityDistribution

    def to_body(self) -> dict[str, Any]:
        return {
            "windows": {k: m.to_body() for k, m in self.windows.items()},
            "histogram": self.histogram.to_body(),
        }

    @classmethod
    def from_body(cls, body: Any) -> PriceStatistics:
        """Read a price statistics body (``malformed`` if it is not one)."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "statistics must be a map")
        return cls(
            windows=WindowStatistics.from_body(body.get("windows")),
            histogram=ProbabilityDistribution.from_body(body.get("histogram")),
        )
