"""The per-key token bucket (pure): never more than burst + rate·t in any window, bounded
memory, O(1) per call."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.bus.ratelimit import (
    NS,
    Bucket,
    KeyedLimiter,
    RateLimit,
    parse_rate_limit,
    retry_text,
)


def test_a_fresh_key_gets_its_burst_then_waits_one_interval() -> None:
    limiter = KeyedLimiter(rate=10, burst=3)
    assert [limiter.take("a", 0) for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a", 0)
    assert wait == NS // 10  # the next token comes in 0.1 s
    assert limiter.take("b", 0) == 0  # another key is not affected
    assert limiter.take("a", wait - 1) > 0
    assert limiter.take("a", wait) == 0


def test_available_and_retry_after_agree_with_take() -> None:
    limiter = KeyedLimiter(rate=4, burst=5)
    assert limiter.available("k", 100) == 5
    limiter.take("k", 100)
    limiter.take("k", 100)
    assert limiter.available("k", 100) == 3
    for _ in range(3):
        assert limiter.take("k", 100) == 0
    assert limiter.available("k", 100) == 0
    wait = limiter.retry_after("k", 100)
    assert wait > 0 and limiter.take("k", 100) == wait
    assert limiter.available("k", 100 + wait) == 1


def test_refusals_take_nothing() -> None:
    limiter = KeyedLimiter(rate=1, burst=1)
    assert limiter.take("k", 0) == 0
    for t in range(0, NS, NS // 100):  # hammering while empty does not push the wait out
        assert limiter.take("k", t) > 0
    assert limiter.take("k", NS) == 0


def test_idle_keys_are_evicted_and_the_table_is_capped() -> None:
    limiter = KeyedLimiter(rate=100, burst=2, max_keys=1000)
    for i in range(500):
        limiter.take(i, 0)
    assert len(limiter) == 500
    later = NS  # every bucket is full again: each call drops up to two idle keys
    for i in range(500, 800):
        limiter.take(i, later)
    assert len(limiter) <= 500
    for i in range(10_000):  # a flood of distinct keys at one instant
        limiter.take(("flood", i), later)
    assert len(limiter) == 1000


def test_a_global_bucket() -> None:
    bucket = Bucket(rate=2, burst=2)
    assert bucket.take(0) == 0 and bucket.take(0) == 0
    assert bucket.take(0) == NS // 2
    assert bucket.available(NS) == 2


def test_limits_are_validated() -> None:
    for bad in ({"rate": 0}, {"rate": math.inf}, {"rate": math.nan}, {"burst": 0},
                {"max_pending": 0}):
        with pytest.raises(ValueError):
            RateLimit(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        KeyedLimiter(rate=-1, burst=1)
    assert KeyedLimiter(rate=0.5, burst=1).interval == 2 * NS  # rounded up: never above rate
    assert retry_text(1) == "retry in 0.001 s"


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1e5, allow_nan=False),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, NS // 5)), min_size=1,
                  max_size=400),
)
def test_never_more_than_burst_plus_rate_t_in_any_window(
    rate: float, burst: int, gaps: list[tuple[int, int]]
) -> None:
    """For every key and every window [a, b] of its admissions: count <= burst + rate·(b−a)."""
    limiter = KeyedLimiter(rate, burst, max_keys=10)
    now = 0
    admitted: dict[int, list[int]] = {}
    for key, gap in gaps:
        now += gap
        if limiter.take(key, now) == 0:
            admitted.setdefault(key, []).append(now)
    for times in admitted.values():
        for i in range(len(times)):
            for j in range(i, len(times)):
                window_s = (times[j] - times[i]) / NS
                assert j - i + 1 <= burst + rate * window_s + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=1, max_value=1000, allow_nan=False),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.integers(0, NS // 20), min_size=1, max_size=300),
)
def test_a_steady_sender_at_the_rate_is_never_refused(
    rate: float, burst: int, gaps: list[int]
) -> None:
    """A key that waits at least one interval between requests is always admitted."""
    limiter = KeyedLimiter(rate, burst)
    now = 0
    for gap in gaps:
        now += max(gap, limiter.interval)
        assert limiter.take("honest", now) == 0


def test_a_command_line_rate_limit() -> None:
    base = RateLimit(rate=20, burst=20, max_pending=8, parallel=1)
    assert parse_rate_limit("off", base) is None
    assert parse_rate_limit("5", base) == RateLimit(rate=5, burst=20, max_pending=8, parallel=1)
    assert parse_rate_limit(" 2.5/40 ", base) == RateLimit(rate=2.5, burst=40, max_pending=8,
                                                           parallel=1)
    for bad in ("fast", "0", "1/0", "-1/2", "nan", "1/x"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad, base)
