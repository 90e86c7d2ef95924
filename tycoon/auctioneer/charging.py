"""Charging as a function of an account's history, not of when usage readings fall.

Every change to the market (fund, bid, refund, expiry, a usage reading) first *accrues*
the time since the previous change at the terms then in force, per slot and resource:
``owed`` = ∫ rate dt, ``held`` = ∫ share dt, ``reserved`` = ∫ lo dt (and, for ports and
addresses held, ∫ price dt). A usage reading — the driver's mean use ``u`` of each
resource over the ``T`` seconds since the previous reading — then turns the accruals into
money at the *use ratio* ``min(1, max(u·T, reserved) / held)``: the share used, but never
less than the share reserved. A bid that expires or runs empty keeps its accruals
(:func:`stash`) for the next reading. A refund charges them at ratio 1: the use since the
last reading is not known yet, and a lower guess would pay a bidder to use hard and
leave just before the reading (the adapter takes a reading right before a refund, at most
a tenth of a tick old, so that interval is short). Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from tycoon.auctioneer.book import Book
from tycoon.auctioneer.events import Account, Changes
from tycoon.resources import Usage
from tycoon.units import NS


def others_paying(rates: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Per slot, Σ of the *other* slots' rates weighted by the share of what they hold that
    they used at the last reading (``use``; 1 for an account never read): a bid that
    leaves its share idle pays nothing for it, so it must not set the price a minimum
    pays (docs/auctioneer.md, "An idle outbidder")."""
    paying = rates * use[:, : rates.shape[1]]
    return np.maximum(paying.sum(axis=1, keepdims=True) - paying, 0.0)


def cost_rates(rates: np.ndarray, lo: np.ndarray, floor: float,
               others: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """What each slot pays per second for each resource: its bid rate, but for a minimum
    ``lo`` at least what holds ``lo`` by proportional share against the others' rates,
    ``lo / (1 − lo) × Σ others``, and ``lo × floor``. A minimum that does not bind costs
    just the rate (its proportional share already exceeds it); one that binds because the
    others bid more since it was admitted pays the market price of what it holds, until
    its balance runs out and the bid ends (a whole resource held against others: at once).
    ``others``: Σ of the other rates per slot (default: every other rate; the market
    passes :func:`others_paying`).
    """
    if others is None:
        others = rates.sum(axis=1, keepdims=True) - rates
    scarce = np.maximum(1.0 - lo, 1e-12)
    need = np.where(lo > 0, np.maximum(lo / scarce * np.maximum(others, 0.0), lo * floor), 0.0)
    return np.maximum(rates, need)


def charged_lows(lo: np.ndarray, shares: np.ndarray, costs: np.ndarray, rates: np.ndarray,
                 fresh: np.ndarray) -> np.ndarray:  # fmt: skip
    """The share each slot pays for whether used or not: its minimum ``lo``, and — while
    some minimum of a resource binds (costs more than its rate) — the whole share of a
    slot never read yet, which the price of that minimum counts as used (use 1 in
    :func:`others_paying`). So a rate that makes a reservation pay is paid for itself:
    an idle newcomer cannot raise a minimum's price for free for a reading."""
    binds = ((lo > 0) & (costs > rates * (1.0 + 1e-9))).any(axis=1, keepdims=True)
    n = min(lo.shape[1], fresh.shape[0])
    mask = np.zeros(lo.shape, dtype=bool)
    mask[:, :n] = binds & fresh[:n] & (rates[:, :n] > 0)
    return np.where(mask, np.maximum(shares, lo), lo)


def affordable(lo: np.ndarray, rates: np.ndarray, book: Book, floor: float,
               others: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The minimums each balance can pay for until the next recompute (``book.grace_s``):
    ``min(lo, x / (x + Σ others), x / floor)`` with ``x = spendable × w / grace_s``.

    A share stays in force until the next call, so a minimum that binds (its cost outran
    its rate) is held only as far as its balance pays its market price for that long; as
    the balance drains, the minimum lapses toward the share the money buys. A minimum that
    does not bind is untouched (its proportional share already exceeds it).
    """
    x = book.balance * book.weight / max(book.grace_s, 1e-9)
    if others is None:
        others = rates.sum(axis=1, keepdims=True) - rates
    cap = np.divide(x, x + others, out=np.ones_like(x), where=(x + others) > 0)
    if floor > 0:
        cap = np.minimum(cap, x / floor)
    return np.minimum(lo, cap)


def accrue(
    book: Book, rates: np.ndarray, shares: np.ndarray, lo: np.ndarray, unique: np.ndarray,
    t0: int, t1: int,
) -> None:  # fmt: skip
    """Add the terms in force over ``[t0, t1]`` to the book: a bid holds its share, and
    pays for it, until the recompute that ends it (even past its expiry).

    ``rates`` (:func:`cost_rates`), ``shares``, ``lo`` (resources × slots) and ``unique``
    (price per second per slot) are those of the last recompute; slots added since have
    no column yet.
    """
    if t1 <= t0:
        return
    n = min(rates.shape[1], book.size)
    live = book.live[:n]
    if not live.any():
        return
    dt = np.where(live, (t1 - t0) / NS, 0.0)
    book.owed[:, :n] += rates[:, :n] * dt
    book.held[:, :n] += shares[:, :n] * dt
    book.reserved[:, :n] += lo[:, :n] * dt
    book.owed_unique[:n] += unique[:n] * dt
    book.refresh()


def used(book: Book, usage: Mapping[str, Usage]) -> np.ndarray:
    """A usage reading as a resources × slots matrix (0 for slots not in it)."""
    out = np.zeros((book.owed.shape[0], book.size))
    for account, u in usage.items():
        index = book.slot.get(account)
        if index is not None:
            out[:, index] = (u.cpu, u.memory, u.disk, u.net)
    return out


def use_ratio(book: Book, used: np.ndarray) -> np.ndarray:
    """Per resource and slot: ``min(1, max(used, reserved) / held)`` (0 where nothing was
    held); ``used`` is ∫ use dt over the reading (resource-seconds as fractions)."""
    held = book.held
    ratio = np.divide(np.maximum(used, book.reserved), held, out=np.zeros_like(held),
                      where=held > 0)  # fmt: skip
    return np.minimum(ratio, 1.0)


def due(book: Book, ratio: np.ndarray | float) -> np.ndarray:
    """Per slot, the charge (float micro-credits) of its accruals at ``ratio``."""
    return (book.owed * ratio).sum(axis=0) + book.owed_unique


def stash(book: Book, index: int) -> np.ndarray:
    """One slot's accruals and carry as a row: owed, held, reserved (R each), unique, carry."""
    return np.concatenate([book.owed[:, index], book.held[:, index], book.reserved[:, index],
                           [book.owed_unique[index], book.carry[index]]])  # fmt: skip


def unstash(book: Book, index: int, row: np.ndarray) -> None:
    """Add a stashed row back to a slot (a new bid of the same account, before a reading:
    that reading measures both)."""
    r = (row.size - 2) // 3
    book.owed[:, index] += row[:r]
    book.held[:, index] += row[r : 2 * r]
    book.reserved[:, index] += row[2 * r : 3 * r]
    book.owed_unique[index] += row[-2]
    book.carry[index] += row[-1]


def stash_due(row: np.ndarray, used: np.ndarray | None) -> float:
    """What a stashed row owes at the use ``used`` (∫ use dt per resource; None: full)."""
    r = (row.size - 2) // 3
    owed, held, reserved = row[:r], row[r : 2 * r], row[2 * r : 3 * r]
    if used is None:
        ratio = np.ones(r)
    else:
        ratio = np.divide(np.maximum(used, reserved), held, out=np.zeros(r), where=held > 0)
    return float((owed * np.minimum(ratio, 1.0)).sum() + row[-2] + row[-1])


class Ledger:
    """The money moves of a market's charging (a mixin of :class:`Market`): integer
    charges with the fraction carried, and the accruals of ended bids (``_ended``)."""

    accounts: dict[str, Account]
    book: Book
    earnings: int
    _ended: dict[str, np.ndarray]
    """Accruals of ended bids (expired, empty) not yet charged: the next reading does."""
    _changes: Changes

    def _pay_ended(self, owner: str, used: np.ndarray | None) -> int:
        """Charge an ended bid's accruals at the use of a reading (None: fully used)."""
        row = self._ended.pop(owner, None)
        account = self.accounts.get(owner)
        if row is None or account is None:
            return 0
        whole, _ = self._move(account, stash_due(row, used))
        return whole

    def _charge_live(self, owed: np.ndarray) -> tuple[int, int]:
        """Charge every live slot ``owed`` (plus its carry) and clear its accruals; only
        slots owing a whole micro-credit or more touch their account. Returns the total
        moved and how many accounts paid."""
        book = self.book
        live = book.live.copy()
        due = np.where(live, book.carry + owed, 0.0)
        book.carry = due.copy()
        total = count = 0
        for index in np.nonzero(live & (due >= 1.0))[0].tolist():
            account = self.accounts[book.ids[index]]
            whole, book.carry[index] = self._move(account, float(due[index]))
            book.funds[index] = float(account.balance)
            total, count = total + whole, count + (whole > 0)
        book.clear(np.nonzero(live)[0])
        book.refresh()
        return total, count

    def _move(self, account: Account, due: float) -> tuple[int, float]:
        """Move ``floor(due)`` (at most the balance) to earnings; return it and the rest."""
        whole = min(math.floor(due), account.balance) if due >= 1.0 else 0
        if whole > 0:
            account.balance -= whole
            account.spent += whole
            self.earnings += whole
            self._changes.accounts.add(account.account)
        return whole, (due - whole if account.balance > 0 else 0.0)

    def _spendable(self, account: Account) -> int:
        """The balance less what an ended bid still owes (charged at the next reading)."""
        row = self._ended.get(account.account)
        return account.balance if row is None else max(
            account.balance - math.ceil(stash_due(row, None)), 0)

