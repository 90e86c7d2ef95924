"""Per-key request rate limits: token buckets kept as one integer per key (GCRA).

Pure: no I/O, time is passed in (integer nanoseconds). A bucket of ``burst`` tokens refills
at ``rate`` tokens a second; a request takes one token or is refused with the time after
which it would be admitted. It is stored the way the generic cell rate algorithm does: the
*theoretical arrival time* ``tat``, the moment the bucket would be full again. A key whose
``tat`` has passed has a full bucket and needs no entry, so idle keys are evicted and the
table holds only keys that were admitted lately (capped at ``max_keys``). Each call is O(1):
one dict look-up and at most two evictions.

In any window of ``t`` seconds one key is admitted at most ``burst + rate * t`` times
(``tests/test_ratelimit.py`` checks it with hypothesis).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from tycoon.units import NS


@dataclass(frozen=True)
class RateLimit:
    """One service's limit for each signer key: ``rate`` requests/s, ``burst`` at once.

    ``max_pending`` caps a key's requests received but not yet answered (queued or being
    handled): beyond it a request is refused before its signature is checked, so one key
    can never hold more than that many of the service's handler slots. ``parallel`` of
    them are handled at once, the others wait in line: another key's request then waits
    for at most ``parallel`` requests of a flooding key, not for its whole backlog.
    """

    rate: float = 50.0
    burst: int = 100
    max_pending: int = 32
    parallel: int = 4
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError("rate must be a positive finite number of requests per second")
        if min(self.burst, self.max_pending, self.parallel, self.max_keys) < 1:
            raise ValueError("burst, max_pending, parallel and max_keys must be at least 1")

    def describe(self) -> str:
        return f"{self.rate:g} requests/s per key (burst {self.burst})"


DEFAULT = RateLimit()
"""Any service built on :class:`tycoon.bus.service.Service` (brokers, tools)."""
AUCTIONEER = RateLimit(rate=20.0, burst=20, max_pending=8, parallel=1)
"""Per host: an agent sends one to three requests per re-bid (fund, bid, refund) and
re-bids a host at most a few times a second; the handlers are short and serial. The burst
is small because each admitted bid costs the host ~1 ms (benchmarks/flood.py)."""
SLS = RateLimit(rate=50.0, burst=100, max_pending=16, parallel=1)
"""An agent asks the SLS once per plan; queries are answered from memory."""
BANK = RateLimit(rate=400.0, burst=2000, max_pending=1024, parallel=1024)
"""An agent acquiring 100 hosts sends ~200 transfers at once, which the bank must commit
together (group commit), so one key's requests run in parallel there; one client sending
transfers back to back manages 250-400/s (benchmarks/bank.py), which must pass."""


class KeyedLimiter:
    """A token bucket per key; keys are any hashables (services use the raw 32-byte key)."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if not (math.isfinite(rate) and rate > 0) or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1")
        self.interval = max(1, math.ceil(NS / rate))  # rounded up: the rate is never exceeded
        self.tolerance = (burst - 1) * self.interval
        self.max_keys = max_keys
        self._tat: OrderedDict[Hashable, int] = OrderedDict()  # least recently admitted first

    def __len__(self) -> int:
        return len(self._tat)

    def take(self, key: Hashable, now_ns: int) -> int:
        """Take one token of ``key``: 0 if admitted, else nanoseconds until it would be."""
        self._evict(now_ns)
        tat = self._tat.get(key, now_ns)
        if tat < now_ns:
            tat = now_ns
        wait = tat - now_ns - self.tolerance
        if wait > 0:
            return wait
        self._tat[key] = tat + self.interval
        self._tat.move_to_end(key)
        if len(self._tat) > self.max_keys:  # only under a flood of distinct keys
            self._tat.popitem(last=False)
        return 0

    def available(self, key: Hashable, now_ns: int) -> int:
        """How many requests of ``key`` would be admitted at ``now_ns`` (without taking any)."""
        tat = self._tat.get(key, now_ns)
        if tat < now_ns:
            tat = now_ns
        slack = self.tolerance - (tat - now_ns)
        return slack // self.interval + 1 if slack >= 0 else 0

    def retry_after(self, key: Hashable, now_ns: int) -> int:
        """Nanoseconds until ``key`` is admitted again (0: it would be now)."""
        tat = self._tat.get(key, now_ns)
        return max(0, tat - now_ns - self.tolerance)

    def _evict(self, now_ns: int) -> None:
        """Drop up to two idle keys (a full bucket needs no entry): amortised O(1)."""
        table = self._tat
        for _ in range(2):
            if not table:
                return
            key = next(iter(table))
            if table[key] > now_ns:
                return
            del table[key]


class Bucket:
    """One token bucket, not keyed (a global budget such as the bank's account openings)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._limiter = KeyedLimiter(rate, burst, max_keys=1)

    def take(self, now_ns: int) -> int:
        """0 if a token was taken, else nanoseconds until one is available."""
        return self._limiter.take(None, now_ns)

    def available(self, now_ns: int) -> int:
        return self._limiter.available(None, now_ns)


def parse_rate_limit(text: str, base: RateLimit) -> RateLimit | None:
    """A command line's ``RATE[/BURST]`` (requests/s per key, e.g. ``20/40``) over ``base``,
    or None for ``off``; raises ValueError otherwise."""
    text = text.strip().lower()
    if text == "off":
        return None
    rate, _, burst = text.partition("/")
    try:
        return dataclasses.replace(base, rate=float(rate),
                                   burst=int(burst) if burst else base.burst)
    except ValueError as exc:
        raise ValueError(f"a rate limit is RATE[/BURST] or 'off', not {text!r}") from exc


def rate_limit_arg(base: RateLimit) -> Callable[[str], RateLimit | None]:
    """An argparse ``type=`` for ``--rate-limit RATE[/BURST]|off`` over ``base``."""
    def parse(text: str) -> RateLimit | None:
        try:
            return parse_rate_limit(text, base)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return parse


def retry_text(wait_ns: int) -> str:
    """'retry in 0.125 s' (rounded up to the millisecond)."""
    return f"retry in {math.ceil(wait_ns / 1_000_000) / 1000:.3f} s"
