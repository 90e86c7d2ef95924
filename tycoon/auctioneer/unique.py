"""Unique resources (TCP ports, IP addresses): all-or-nothing, second-price.

For every port or address, the live bid with the highest rate for it holds it; the
others get none. The holder pays the second-highest rate for it, but never less than
the operator's floor price, per second held; a bid whose rate for it is below the floor
gets nothing. Ties go to the earlier bid, then the smaller account id.
"""

from __future__ import annotations

import numpy as np

from tycoon.auctioneer.book import Book

Key = tuple[str, str]  # (kind, key): ("port", "8080") or ("ip", "10.0.0.5")


class UniqueBook:
    """Who bids on which port or address, and who holds each at what price."""

    def __init__(self, floor: float = 0.0) -> None:
        self.floor = floor
        """The least price per second of a port or address (micro-credits/s)."""
        self.bids: dict[Key, dict[str, tuple[float, int, int]]] = {}
        self.by_account: dict[str, list[Key]] = {}
        self.holders: dict[Key, tuple[str, float]] = {}

    def put(
        self, account: str, unique: tuple[tuple[str, str, float, int], ...], placed_ns: int
    ) -> None:
        """Replace the unique bids of ``account`` (weight fractions of its budget)."""
        self.drop(account)
        if not unique:
            return
        keys = []
        for kind, key, weight, target in unique:
            self.bids.setdefault((kind, key), {})[account] = (weight, placed_ns, target)
            keys.append((kind, key))
        self.by_account[account] = keys

    def drop(self, account: str) -> None:
        for key in self.by_account.pop(account, []):
            bidders = self.bids.get(key)
            if bidders is not None:
                bidders.pop(account, None)
                if not bidders:
                    del self.bids[key]

    def recompute(self, book: Book, now_ns: int) -> bool:
        """Re-run every auction; True if any holder changed."""
        if not self.bids and not self.holders:
            return False
        left = book.seconds_left(now_ns)
        spend = np.divide(book.balance, left, out=np.zeros_like(left), where=left > 0)
        holders: dict[Key, tuple[str, float]] = {}
        for key, bidders in self.bids.items():
            ranked = []
            for account, (weight, placed, _target) in bidders.items():
                index = book.slot.get(account)
                rate = float(spend[index]) * weight if index is not None else 0.0
                if rate > 0 and rate >= self.floor:
                    ranked.append((-rate, placed, account))
            if ranked:
                ranked.sort()
                price = max(-ranked[1][0] if len(ranked) > 1 else 0.0, self.floor)
                holders[key] = (ranked[0][2], price)
        changed = {k: v[0] for k, v in holders.items()} != {
            k: v[0] for k, v in self.holders.items()
        }
        self.holders = holders
        return changed

    def charges(self, book: Book) -> np.ndarray:
        """Per slot, what holding its ports and addresses costs per second."""
        out = np.zeros(book.size)
        for account, price in self.holders.values():
            index = book.slot.get(account)
            if index is not None:
                out[index] += price
        return out

    def ports_of(self) -> dict[str, tuple[int, ...]]:
        """The host ports each account holds."""
        ports: dict[str, list[int]] = {}
        for (kind, key), (account, _price) in self.holders.items():
            if kind == "port":
                ports.setdefault(account, []).append(int(key))
        return {a: tuple(sorted(p)) for a, p in ports.items()}

    def holders_of(self, kind: str) -> dict[str, str]:
        """``{port or address: holding account}`` for one kind."""
        return {key: v[0] for (k, key), v in sorted(self.holders.items()) if k == kind}

