"""The order book of one host as columns of numpy arrays, one slot per live bid.

The market keeps its accounts as objects (the truth, with int balances); the book
mirrors what the allocation needs — the balance less what is owed but not yet charged
(a float), expiry, weight fractions and min/max per resource — so that rates and shares
for every bidder are computed in a few vectorised operations. It also accrues, per slot
and resource, what the terms in force since the last usage reading amount to (see
:mod:`tycoon.auctioneer.charging`). Slots are reused; a free slot has ``live = False``.
"""

from __future__ import annotations

import numpy as np

from tycoon.resources import RESOURCES
from tycoon.units import NS

R = len(RESOURCES)


class Book:
    """Columns per slot: live, balance, expires_ns, carry, owed_unique; per resource rows:
    weight, lo, hi and the accruals ``owed`` (∫ rate dt), ``held`` (∫ share dt) and
    ``reserved`` (∫ lo dt) since the slot's last usage reading."""

    def __init__(self, size: int = 16, grace_s: float = 0.0) -> None:
        self.grace_s = grace_s
        self.slot: dict[str, int] = {}
        self.ids: list[str] = []
        self._free: list[int] = []
        self.live = np.zeros(size, dtype=bool)
        self.balance = np.zeros(size)
        self.funds = np.zeros(size)
        self.expires = np.zeros(size, dtype=np.int64)
        self.carry = np.zeros(size)
        self.owed_unique = np.zeros(size)
        self.weight = np.zeros((R, size))
        self.lo = np.zeros((R, size))
        self.hi = np.zeros((R, size))
        self.owed = np.zeros((R, size))
        self.held = np.zeros((R, size))
        self.reserved = np.zeros((R, size))
        self.use = np.ones((R, size))
        """Per slot and resource, the share of what it held that it used at its last
        reading (1 until read): what its rate counts for in the price of a minimum."""
        self.fresh = np.ones(size, dtype=bool)
        """Slots of accounts never read yet (their use is not known)."""

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def size(self) -> int:
        return self.live.shape[0]

    def _grow(self) -> None:
        old = self.size
        new = old * 2
        for name in ("live", "balance", "funds", "expires", "carry", "owed_unique", "fresh"):
            arr = getattr(self, name)
            grown = np.full(new, name == "fresh", dtype=arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        for name in ("weight", "lo", "hi", "owed", "held", "reserved", "use"):
            arr = getattr(self, name)
            grown = np.ones((R, new)) if name == "use" else np.zeros((R, new))
            grown[:, :old] = arr
            setattr(self, name, grown)

    def put(
        self,
        account: str,
        *,
        balance: int,
        expires_ns: int,
        weights: tuple[float, ...],
        lo: tuple[float, ...],
        hi: tuple[float, ...],
    ) -> int:
        """Insert or replace the bid of ``account``; returns its slot.

        A replaced bid keeps its slot's accruals and carry (they are the account's, owed
        for the time before the replacement); a new slot starts with none."""
        index = self.slot.get(account)
        if index is None:
            if not self._free:
                start = len(self.ids)
                if start >= self.size:
                    self._grow()
                self.ids.append("")
                self._free.append(start)
            index = self._free.pop()
            self.slot[account] = index
            self.ids[index] = account
            self.clear(index)
        self.live[index] = True
        self.expires[index] = expires_ns
        self.weight[:, index] = weights
        self.lo[:, index] = lo
        self.hi[:, index] = hi
        self.set_balance(account, balance)
        return index

    def drop(self, account: str) -> None:
        """Remove the bid of ``account`` (its slot is freed)."""
        index = self.slot.pop(account, None)
        if index is None:
            return
        self.ids[index] = ""
        self._free.append(index)
        self.live[index] = False
        self.balance[index] = 0.0
        self.funds[index] = 0.0
        self.carry[index] = 0.0
        self.weight[:, index] = 0.0
        self.lo[:, index] = 0.0
        self.hi[:, index] = 0.0
        self.use[:, index] = 1.0
        self.fresh[index] = True
        self.clear(index)

    def clear(self, index: int | np.ndarray) -> None:
        """Forget the accruals of slots (after they were charged)."""
        self.owed[:, index] = 0.0
        self.held[:, index] = 0.0
        self.reserved[:, index] = 0.0
        self.owed_unique[index] = 0.0

    def pending(self) -> np.ndarray:
        """Per slot, what the accruals would charge at full use (an upper bound)."""
        return self.owed.sum(axis=0) + self.owed_unique

    def set_balance(self, account: str, balance: int) -> None:
        """Mirror an account's int balance (``funds``) and what it may still spend: the
        balance less what it owes but was not charged yet (``balance``, rates use it)."""
        index = self.slot.get(account)
        if index is not None:
            self.funds[index] = float(balance)
            owed = float(self.owed[:, index].sum() + self.owed_unique[index])
            self.balance[index] = max(float(balance) - owed, 0.0)

    def refresh(self) -> None:
        """Recompute every slot's spendable balance after accruing."""
        self.balance = np.where(self.live, np.maximum(self.funds - self.pending(), 0.0), 0.0)

    def seconds_left(self, now_ns: int) -> np.ndarray:
        """Seconds until each slot's expiry, but at least ``grace_s`` (0 for dead or expired
        slots): a share stays in force until the next recompute, at most ``grace_s`` away,
        so a balance is spread over at least that long (a bid for 0.02 s held its share,
        paid for 0.02 s, until the next tick)."""
        left = (self.expires - now_ns).astype(np.float64) / NS
        return np.where(self.live & (left > 0), np.maximum(left, self.grace_s), 0.0)

    def rates(self, now_ns: int) -> np.ndarray:
        """Bid rates per resource and slot in micro-credits/s: balance × weight / time left."""
        left = self.seconds_left(now_ns)
        spend = np.divide(self.balance, left, out=np.zeros_like(left), where=left > 0)
        return self.weight * spend

    def bounds(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Min and max per resource and slot; zero for slots that are not live now."""
        on = self.live & (self.expires > now_ns) & (self.balance > 0)
        return np.where(on, self.lo, 0.0), np.where(on, self.hi, 0.0)
