"""Resolving a bid against a host and admitting it — reservations are paid for.

A bid's minimum ``lo`` of a resource is a reservation. It is admitted only if

1. it fits: ``lo ≤ 1 − Σ lo of the other live bids``; and
2. its rate sustains it at the host's current price: the proportional share the rate buys
   now is at least ``lo``, i.e. ``rate ≥ lo / (1 − lo) × Σ other rates``, and the rate is
   at least ``lo × floor`` (the operator's floor price per second for a whole resource).

A reserved share is charged whether used or not (see :mod:`tycoon.auctioneer.charging`).
Pure functions of the book; no I/O.
"""

from __future__ import annotations

import numpy as np

from tycoon.auctioneer.allocation import TOLERANCE
from tycoon.auctioneer.bidparse import BidSpec
from tycoon.auctioneer.book import Book
from tycoon.auctioneer.events import Bid
from tycoon.errors import Rejected
from tycoon.resources import RESOURCES, Capacity
from tycoon.units import NS

FLOOR_PRICE = 100.0
"""Default floor price: micro-credits per second for a whole resource (share 1.0) or one
port or address. A reservation pays at least ``lo × floor``; a port or address at least
the floor. (100 µcredits/s: a whole host's four resources cost 34.6 credits a day.)"""


def resolve(spec: BidSpec, capacity: Capacity, now_ns: int, expires_ns: int) -> Bid:
    """``spec`` as fractions of ``capacity`` (weights as fractions of the total weight)."""
    total = spec.total_weight
    prefs = {p.resource: p for p in spec.preferences}
    weights, lows, highs = [], [], []
    for resource in RESOURCES:
        pref = prefs.get(resource)
        if pref is None:
            weights.append(0.0), lows.append(0.0), highs.append(0.0)
            continue
        cap = capacity.of(resource)
        low = pref.min.fraction(cap)
        high = min(1.0, pref.max.fraction(cap))
        if low > 1.0 + TOLERANCE:
            raise Rejected("not_admitted", f"{resource}: the minimum exceeds the capacity")
        if low > high:
            raise Rejected("bad_bid", f"{resource}: the minimum is above the maximum")
        weights.append(pref.weight / total)
        lows.append(min(low, 1.0))
        highs.append(high)
    unique = tuple((u.kind, u.key, u.weight / total, u.target) for u in spec.unique)
    return Bid(spec, now_ns, expires_ns, tuple(weights), tuple(lows), tuple(highs), unique)


def needed_rate(lo: float, others: float, floor: float) -> float:
    """The least rate (micro-credits/s) that sustains a reserved share ``lo`` against
    ``others`` (Σ of the other bids' rates) and the floor price; inf if none can."""
    if lo <= 0:
        return 0.0
    if lo >= 1.0 - TOLERANCE:
        return float("inf") if others > 0 else lo * floor
    return max(lo / (1.0 - lo) * others, lo * floor)


def admit(bid: Bid, book: Book, rates: np.ndarray, own: int | None, balance: float,
          now_ns: int, floor: float) -> None:  # fmt: skip
    """Raise ``not_admitted`` unless every minimum of ``bid`` fits and is paid for.

    ``rates`` are the book's rates now; ``own`` the slot of the account's current bid (not
    counted against it), ``balance`` its balance (less what that bid owes meanwhile).
    """
    live = book.live & (book.expires > now_ns) & (book.balance > 0)
    lo = np.where(live, book.lo, 0.0)
    rates = rates[:, : book.size]
    reserved, others = lo.sum(axis=1), rates.sum(axis=1)
    if own is not None:
        reserved -= lo[:, own]
        if own < rates.shape[1]:
            others -= rates[:, own]
        balance = float(book.balance[own])
    check(bid, spendable=balance, now_ns=now_ns, reserved=reserved,
          others=np.maximum(others, 0.0), floor=floor)  # fmt: skip


def check(
    bid: Bid, *, spendable: float, now_ns: int, reserved: np.ndarray, others: np.ndarray,
    floor: float,
) -> None:  # fmt: skip
    """Raise ``not_admitted`` unless every minimum of ``bid`` fits and is paid for.

    ``spendable`` is what the account may spend over the bid (micro-credits),
    ``reserved`` and ``others`` the other live bids' Σ lo and Σ rate per resource.
    """
    seconds = max(bid.expires_ns - now_ns, 1) / NS
    for i, resource in enumerate(RESOURCES):
        lo = bid.lo[i]
        if lo <= 0:
            continue
        free = 1.0 - reserved[i]
        if lo > free + TOLERANCE:
            raise Rejected(
                "not_admitted",
                f"{resource}: minimum {lo:.4f} of capacity but only {max(free, 0):.4f}"
                f" is free (other bids reserve {reserved[i]:.4f})",
            )
        rate = spendable * bid.weights[i] / seconds
        need = needed_rate(lo, float(others[i]), floor)
        if rate < need * (1.0 - TOLERANCE):
            if need == float("inf"):
                why = "the whole capacity cannot be reserved while others bid on it"
            else:
                why = (f"it needs a rate of at least {need / 1e6:.6g} credits/s at the current"
                       f" price ({others[i] / 1e6:.6g} credits/s from other bids, floor"
                       f" {floor / 1e6:.6g} credits/s for the whole resource)")
            raise Rejected(
                "not_admitted",
                f"{resource}: minimum {lo:.4f} of capacity is a reservation and {why};"
                f" this bid's rate is {rate / 1e6:.6g} credits/s (fund more, weight it more"
                " or bid for less time)",
            )
