"""A fixed-bucket latency histogram: a few integer adds per observation, no locks.

Services count into it on the event loop; a Prometheus collector reads it at scrape time
(on the same loop), so the hot path carries no ``prometheus_client`` objects.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds): a bank commit takes a few ms, a refund through the bank ~100 ms."""


@dataclass
class Histogram:
    """Counts of observations at or below each of :data:`BUCKETS_S` (not cumulative), the
    ones above the last bound, and their sum."""

    bounds: tuple[float, ...] = BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Count and sum (seconds), for ``$SRV.STATS``."""
        return {"count": self.count, "sum_s": round(self.total, 6)}
