"""The allocator's books: what it needs of a host, what it holds there, what a run did."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol


class HostClient(Protocol):
    """What the allocator needs from one auctioneer (``AuctioneerClient`` fits)."""

    async def account(self) -> dict[str, Any]: ...
    async def fund(self, receipt: bytes) -> dict[str, Any]: ...
    async def bid(self, spec: str, duration: str) -> dict[str, Any]: ...
    async def refund(self) -> dict[str, Any]: ...
    async def status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Holding:
    """Our account at one host as last reported: ``balance`` at time ``at``, spent evenly
    until ``expires`` (0: no live bid, nothing is being spent)."""

    balance: int
    expires: float
    at: float

    def left(self, now: float) -> int:
        """The balance expected at ``now``."""
        if self.expires <= self.at:
            return self.balance
        if now >= self.expires:
            return 0
        return self.balance - math.floor(self.balance * (now - self.at) / (self.expires - self.at))

    def rate(self, now: float) -> float:
        """What the live bid spends per second (0 without one)."""
        return self.left(now) / (self.expires - now) if self.expires > now else 0.0


@dataclass
class Outcome:
    """What one execution did."""

    funded: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    bids: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    placed_at: float | None = None
    """The allocator's timer when a retarget's plan bids were all placed (before parks)."""
