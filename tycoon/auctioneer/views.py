"""Read-only views of a market: the bodies of price, alloc and status messages.

What is public (``price``, ``alloc``) is what a market needs: prices, totals, and each
account's shares and rates. An account's balance and expiry are its owner's alone (they
reveal its budget and its plans); the owner reads them in its own replies and status.
"""

from __future__ import annotations

from typing import Any

from tycoon.auctioneer.events import Account
from tycoon.auctioneer.market import ALLOC_MAX, Market
from tycoon.messages.market import Alloc, HostStatusReply
from tycoon.messages.price import Offer, PriceUpdate
from tycoon.money import format_amount
from tycoon.resources import RESOURCES


def price_update(market: Market, seq: int, heartbeat_s: float) -> PriceUpdate:
    """The ``price`` message of the market now (see docs/auctioneer.md)."""
    totals = prices(market)
    bidders = (market.rates > 0).sum(axis=1).tolist()
    caps, utilization = market.caps.tolist(), market.utilization.tolist()
    offers = {r: Offer(int(caps[i]), totals[r], float(utilization[i]), int(bidders[i]))
              for i, r in enumerate(RESOURCES)}
    return PriceUpdate(market.host_id, seq, float(heartbeat_s), market.name, market.driver_name,
                       offers)


def price_body(market: Market, seq: int, heartbeat_s: float) -> dict[str, Any]:
    """The body of a ``price`` message."""
    return price_update(market, seq, heartbeat_s).to_body()


def prices(market: Market) -> dict[str, float]:
    """Each resource's price now (Σ of every bid rate, micro-credits/s), as in ``price``."""
    totals = market.rates.sum(axis=1).tolist()
    return dict(zip(RESOURCES, totals, strict=True))


def public_view(market: Market, account: str) -> dict[str, Any]:
    """Shares and rates of one account (zeros without a live bid): what ``alloc`` shows."""
    index = market.book.slot.get(account)
    if index is not None and index >= market.shares.shape[1]:
        index = None
    view: dict[str, Any] = {}
    for i, r in enumerate(RESOURCES):
        view[r] = float(market.shares[i, index]) if index is not None else 0.0
    view["rate"] = {
        r: float(market.rates[i, index]) if index is not None else 0.0
        for i, r in enumerate(RESOURCES)
    }
    return view


def account_view(market: Market, account: str) -> dict[str, Any]:
    """:func:`public_view` plus the balance and expiry, for the account's owner only."""
    acc = market.accounts.get(account) or Account(account)
    view = public_view(market, account)
    view["balance"] = acc.balance
    view["expires_ns"] = acc.bid.expires_ns if acc.bid is not None else 0
    return view


def alloc_body(market: Market, seq: int) -> dict[str, Any]:
    """The body of an ``alloc`` message: at most :data:`ALLOC_MAX` accounts, largest first."""
    slots = market.book.slot
    order = sorted(slots, key=lambda a: -float(market.shares[:, slots[a]].sum()))
    listed = order[:ALLOC_MAX]
    return Alloc(market.host_id, seq, {a: public_view(market, a) for a in listed},
                 market.unique.holders_of("port"), market.unique.holders_of("ip"),
                 len(order) - len(listed) if len(order) > len(listed) else None).to_body()


def status(market: Market, account: str | None = None) -> dict[str, Any]:
    """The host's market summary, and one account's details if given."""
    return HostStatusReply(
        host=market.host_id,
        name=market.name,
        driver=market.driver_name,
        resources=price_body(market, market.seq, 0.0)["resources"],
        accounts=len(market.accounts),
        bids=len(market.book),
        funded=market.funded,
        earnings=market.earnings,
        refunded=market.refunded,
        balances=sum(a.balance for a in market.accounts.values()),
        pending_refunds=len(market.pending),
        floor_price=market.floor_price,
        deposit=market.deposit,
        idle_s=market.idle_ns / 1e9,
        account=None if account is None else account_detail(market, account),
    ).to_body()


def account_detail(market: Market, account: str) -> dict[str, Any]:
    """Everything about one host account, for its owner (``open`` is False, and all zero,
    for a key with no account here: asking creates nothing)."""
    acc = market.accounts.get(account) or Account(account)
    bid = acc.bid
    return {
        "account": account,
        "open": account in market.accounts,
        "balance": acc.balance,
        "funded": acc.funded,
        "spent": acc.spent,
        "refunded": acc.refunded,
        "balance_text": format_amount(acc.balance),
        "bid": None if bid is None else {
            "resources": bid.text, "placed_ns": bid.placed_ns, "expires_ns": bid.expires_ns,
        },
        "allocation": account_view(market, account),
        "ports": list(market.unique.ports_of().get(account, ())),
        "pending_refunds": [
            {"refund_id": r.refund_id, "amount": r.amount}
            for r in market.pending.values() if r.account == account
        ],
    }  # fmt: skip
