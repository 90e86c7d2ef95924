"""Accounts coming and going: the idle sweep and restoring a stored market (no I/O).

An account exists once funded with at least the deposit (:meth:`Market.fund`). One with no
bid, no balance, no pending refund and nothing left to charge is *idle*; idle for the
market's ``idle_s``, it is removed (``AccountClosed``: the adapter destroys its sandbox,
the store deletes its row). Its history stays in the store's ``redeemed`` and ``refunds``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tycoon.auctioneer.admission import resolve
from tycoon.auctioneer.events import AccountClosed, Changes, Event
from tycoon.resources import Shares

if TYPE_CHECKING:
    from tycoon.auctioneer.market import Market

DEPOSIT = 1
"""Default least first funding that opens a host account (micro-credits)."""
IDLE_S = 3600
"""Default time after which an empty, idle account is removed with its sandbox."""


def sweep(market: Market, now_ns: int) -> list[Event]:
    """Remove accounts idle since ``idle_s`` (checked at most every ``idle_s / 4``)."""
    if now_ns - market._swept < market.idle_ns // 4:
        return []
    market._swept = now_ns
    busy = {r.account for r in market.pending.values()} | set(market._ended)
    events: list[Event] = []
    for account in list(market.accounts.values()):
        owner = account.account
        if account.bid is not None or account.balance > 0 or owner in busy:
            account.idle_since_ns = 0
        elif not account.idle_since_ns:
            account.idle_since_ns = now_ns
        elif now_ns - account.idle_since_ns >= market.idle_ns:
            del market.accounts[owner]
            market.refund_floor = max(market.refund_floor, account.refunds)
            market._use.pop(owner, None)
            market._changes.accounts.discard(owner)
            market._changes.closed.add(owner)
            events.append(AccountClosed(owner))
    return events


def restore(market: Market, now_ns: int) -> list[Event]:
    """Re-admit the loaded accounts' bids and recompute.

    Bids are re-resolved against the current capacity (without admission: they were
    admitted once); charging restarts at ``now_ns`` (the downtime is not billed), and
    idle times restart too (they are not stored).
    """
    market._ended = {}
    # counters of accounts removed before the restart: at most the µs clock of the last seq
    market.refund_floor = max([market.seq * 1000, *(a.refunds for a in market.accounts.values())])
    for account in market.accounts.values():
        if account.bid is not None and account.balance > 0:
            bid = account.bid
            account.bid = resolve(bid.spec, market.capacity, bid.placed_ns, bid.expires_ns)
            market._put(account)
        else:
            account.bid = None
    market._changes = Changes()
    market._accrued_to = market._read = None
    return market.recompute(now_ns, force=True)


def shares_map(market: Market) -> dict[str, Shares]:
    """The shares of every live account, for the driver (absent accounts get nothing)."""
    ports = market.unique.ports_of()
    out: dict[str, Shares] = {}
    for account, index in market.book.slot.items():
        s = market.shares[:, index] if index < market.shares.shape[1] else np.zeros(4)
        out[account] = Shares(
            float(s[0]), float(s[1]), float(s[2]), float(s[3]), ports.get(account, ())
        )
    return out
