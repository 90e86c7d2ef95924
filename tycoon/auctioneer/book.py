"""The order book of one host as columns of numpy arrays, one slot per live bid.

The market keeps its accounts as objects (the truth, with int balances); the book
mirrors what the allocation needs — balance as a float, expiry, weight fractions and
min/max per resource — so that rates and shares for every bidder are computed in a
few vectorised operations. Slots are reused; a free slot has ``live = False``.
"""

from __future__ import annotations

import numpy as np

from tycoon.vmm.driver import RESOURCES

R = len(RESOURCES)
NS = 1_000_000_000


class Book:
    """Columns per slot: live, balance, expires_ns, charged_ns, carry; per resource rows."""

    def __init__(self, size: int = 16) -> None:
        self.slot: dict[str, int] = {}
        self.ids: list[str] = []
        self._free: list[int] = []
        self.live = np.zeros(size, dtype=bool)
        self.balance = np.zeros(size)
        self.expires = np.zeros(size, dtype=np.int64)
        self.charged = np.zeros(size, dtype=np.int64)
        self.carry = np.zeros(size)
        self.weight = np.zeros((R, size))
        self.lo = np.zeros((R, size))
        self.hi = np.zeros((R, size))

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def size(self) -> int:
        return self.live.shape[0]

    def _grow(self) -> None:
        old = self.size
        new = old * 2
        for name in ("live", "balance", "expires", "charged", "carry"):
            arr = getattr(self, name)
            grown = np.zeros(new, dtype=arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        for name in ("weight", "lo", "hi"):
            arr = getattr(self, name)
            grown = np.zeros((R, new))
            grown[:, :old] = arr
            setattr(self, name, grown)

    def put(
        self,
        account: str,
        *,
        balance: int,
        expires_ns: int,
        charged_ns: int,
        weights: tuple[float, ...],
        lo: tuple[float, ...],
        hi: tuple[float, ...],
    ) -> int:
        """Insert or replace the bid of ``account``; returns its slot."""
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
        self.live[index] = True
        self.balance[index] = float(balance)
        self.expires[index] = expires_ns
        self.charged[index] = charged_ns
        self.carry[index] = 0.0
        self.weight[:, index] = weights
        self.lo[:, index] = lo
        self.hi[:, index] = hi
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
        self.carry[index] = 0.0
        self.weight[:, index] = 0.0
        self.lo[:, index] = 0.0
        self.hi[:, index] = 0.0

    def set_balance(self, account: str, balance: int) -> None:
        index = self.slot.get(account)
        if index is not None:
            self.balance[index] = float(balance)

    def seconds_left(self, now_ns: int) -> np.ndarray:
        """Seconds until each slot's expiry (0 for dead or expired slots)."""
        left = (self.expires - now_ns).astype(np.float64) / NS
        return np.where(self.live & (left > 0), left, 0.0)

    def rates(self, now_ns: int) -> np.ndarray:
        """Bid rates per resource and slot in micro-credits/s: balance × weight / time left."""
        left = self.seconds_left(now_ns)
        spend = np.divide(self.balance, left, out=np.zeros_like(left), where=left > 0)
        return self.weight * spend

    def bounds(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Min and max per resource and slot; zero for slots that are not live now."""
        on = self.live & (self.expires > now_ns) & (self.balance > 0)
        return np.where(on, self.lo, 0.0), np.where(on, self.hi, 0.0)
