"""Freshness and replay protection for live traffic.

A message is fresh when its timestamp is within ``window_ns`` of the receiver's
clock, and new when its (sender, nonce) pair has not been seen. Seen pairs are
kept only while their message could still pass the freshness check; if the cache
reaches ``max_entries`` the oldest are evicted and the freshness floor rises with
them, so an evicted pair can never be replayed.
"""

from __future__ import annotations

import heapq
import time

from tycoon.bus.envelope import Message
from tycoon.errors import Rejected
from tycoon.units import NS

DEFAULT_WINDOW_NS = 60 * NS


class ReplayGuard:
    """Rejects stale, future and repeated messages; memory bounded by ``max_entries``."""

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS, max_entries: int = 1_000_000) -> None:
        if window_ns <= 0 or max_entries <= 0:
            raise ValueError("window and capacity must be positive")
        self.window_ns = window_ns
        self.max_entries = max_entries
        self._seen: set[tuple[str, bytes]] = set()
        self._by_time: list[tuple[int, str, bytes]] = []
        self._floor_ns = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, msg: Message, now_ns: int | None = None) -> None:
        """Accept ``msg`` once, or raise ``stale`` / ``replayed``."""
        self.admit(msg.sender, msg.nonce, msg.ts_ns, now_ns)

    def admit(self, sender: str, nonce: bytes, ts_ns: int, now_ns: int | None = None) -> None:
        """:meth:`check` of a message's (sender, nonce, timestamp), for callers that
        keep only those fields of a verified message."""
        now = time.time_ns() if now_ns is None else now_ns
        self._evict(now)
        if ts_ns < now - self.window_ns or ts_ns <= self._floor_ns:
            raise Rejected("stale", "timestamp is older than the freshness window")
        if ts_ns > now + self.window_ns:
            raise Rejected("stale", "timestamp is in the future beyond the freshness window")
        key = (sender, nonce)
        if key in self._seen:
            raise Rejected("replayed", "this (sender, nonce) was already accepted")
        self._seen.add(key)
        heapq.heappush(self._by_time, (ts_ns, sender, nonce))
        if len(self._seen) > self.max_entries:
            ts, sender, nonce = heapq.heappop(self._by_time)
            self._seen.discard((sender, nonce))
            self._floor_ns = max(self._floor_ns, ts)

    def _evict(self, now: int) -> None:
        horizon = now - self.window_ns
        heap = self._by_time
        while heap and heap[0][0] < horizon:
            _, sender, nonce = heapq.heappop(heap)
            self._seen.discard((sender, nonce))
