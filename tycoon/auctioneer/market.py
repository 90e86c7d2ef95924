"""The market of one host: accounts, bids, shares, charging, refunds — sans-IO.

Deterministic given a clock: every call takes ``now_ns``. Calls return events (see
:mod:`tycoon.auctioneer.events`) that the adapter acts on (create sandboxes, apply
shares, publish prices, pay refunds), and record what changed for the store
(:meth:`Market.take_changes`). Money is int micro-credits; the invariant
``funded == earnings + Σ balances + refunded`` holds after every call. Every call that
changes the market first settles the time since the previous one at the terms then in
force (:mod:`tycoon.auctioneer.charging`): a charge never depends on when ticks fall.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from tycoon.auctioneer import charging, lifecycle
from tycoon.auctioneer.admission import FLOOR_PRICE, admit, resolve
from tycoon.auctioneer.allocation import water_fill
from tycoon.auctioneer.bidparse import BidSpec
from tycoon.auctioneer.book import Book
from tycoon.auctioneer.events import (
    Account,
    AccountOpened,
    BidEnded,
    BidPlaced,
    Changes,
    Charged,
    Event,
    Funded,
    PricesChanged,
    Refund,
    RefundDue,
    Returned,
    SharesChanged,
)
from tycoon.auctioneer.lifecycle import DEPOSIT, IDLE_S
from tycoon.auctioneer.unique import UniqueBook
from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus.keys import is_public_key, subject_id
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT
from tycoon.resources import RESOURCES, Capacity, Shares, Usage
from tycoon.units import NS

ALLOC_EPS = 1e-4
"""A recompute on the tick publishes the allocation only if a share moved by more than this."""
PRICE_EPS = 0.01
"""... and the prices only if one moved by more than this fraction."""
ALLOC_MAX = 1000
"""At most this many accounts (the largest shares) are listed in an allocation message."""
# Views of the market (price, alloc, status bodies) live in tycoon.auctioneer.views.
__all__ = ["DEPOSIT", "FLOOR_PRICE", "IDLE_S", "Market", "refund_id"]


def refund_id(host_key: str, account: str, counter: int) -> str:
    """The bank transfer id of an account's ``counter``-th refund (deterministic, so a
    retry after a restart cannot pay twice). Anyone can compute it, and need not be kept
    from it: the host pays it, and a transfer id is unique per payer, so nobody else can
    claim it at the bank (docs/security.md, "Refund-id squatting")."""
    digest = hashlib.sha256(f"{host_key}\x00{account}\x00{counter}".encode()).hexdigest()
    return "refund-" + digest[:40]


def return_id(host_key: str, receipt_key: str) -> str:
    """The bank transfer id paying back a receipt this host refused to credit (derived
    from the receipt's key: a retry, even after a crash, pays it once)."""
    digest = hashlib.sha256(f"{host_key}\x00return\x00{receipt_key}".encode()).hexdigest()
    return "return-" + digest[:40]


class Market(charging.Ledger):
    """One host's proportional-share market."""

    def __init__(
        self, *, host_key: str, bank_key: str, capacity: Capacity, name: str = "",
        driver_name: str = "", floor_price: float = FLOOR_PRICE, deposit: int = DEPOSIT,
        idle_s: float = IDLE_S, tick_s: float = 1.0,
    ) -> None:  # fmt: skip
        """``tick_s``: the longest time between the adapter's usage readings (its tick)."""
        if not (math.isfinite(floor_price) and floor_price >= 0) or deposit < 1 or idle_s < 0:
            raise ValueError("floor price ≥ 0, deposit ≥ 1 µcredit, idle time ≥ 0")
        self.host_key, self.bank_key = host_key, bank_key
        self.host_id = subject_id(host_key)
        self.capacity = capacity
        self.name, self.driver_name = name or self.host_id, driver_name
        self.floor_price, self.deposit = float(floor_price), int(deposit)
        self.idle_ns = int(idle_s * NS)
        self.accounts = {}
        self.redeemed: set[str] = set()
        self.pending: dict[str, Refund] = {}
        self.returns: dict[str, Refund] = {}
        """Paid returns of refused receipts, by return id (a retried fund gets the receipt)."""
        self.earnings = self.funded = self.refunded = self.seq = self.refund_floor = 0
        self.book = Book(grace_s=tick_s)
        self.unique = UniqueBook(self.floor_price)
        self.utilization = np.zeros(len(RESOURCES))
        self.caps = np.array([capacity.of(r) for r in RESOURCES], dtype=np.float64)
        self.shares = np.zeros((len(RESOURCES), self.book.size))
        self.rates = np.zeros_like(self.shares)
        self.lows = np.zeros_like(self.shares)
        self.costs = np.zeros_like(self.shares)  # what each bid pays per second (≥ rate)
        self._unique_prices = np.zeros(self.book.size)
        self._use: dict[str, np.ndarray] = {}  # an account's last use ratio, across its bids
        self._ended = {}
        self._accrued_to: int | None = None  # the time up to which every bid has accrued
        self._read: int | None = None  # the time of the last usage reading
        self._swept = 0
        self._published = self.shares.copy()
        self._structure = True
        self._last_prices = np.zeros(len(RESOURCES))
        self._last_bidders = np.zeros(len(RESOURCES), dtype=np.int64)
        self._changes = Changes()

    # ------------------------------------------------------------------ accounts, money

    def _open(self, owner: str, now_ns: int) -> list[Event]:
        """Create the host account of ``owner`` (only ever on a first funding).

        Refund counters start at creation, past removed accounts' (``refund_floor``): unique.
        """
        if not is_public_key(owner):
            raise Rejected("malformed", "a host account id is the owner's public key")
        if owner in self.accounts:
            return []
        start = max(now_ns, self.refund_floor)
        self.accounts[owner] = Account(owner, created_ns=now_ns, refunds=start)
        self._changes.accounts.add(owner)
        self._changes.closed.discard(owner)  # removed and opened again before a commit
        return [AccountOpened(owner)]

    def fund(self, raw: bytes, now_ns: int) -> list[Event]:
        """Redeem a bank receipt payable to this host into the payer's host account."""
        receipt = verify_receipt(raw, self.bank_key)
        if receipt.payee != self.host_key:
            raise Rejected("wrong_host", f"the receipt pays {receipt.payee[:12]}…, not this host")
        # a transfer id is unique per payer: a receipt is known by (payer, id); a bare id is
        # a redemption stored before ids were scoped (then unique at the bank)
        rid = return_id(self.host_key, receipt.key)
        if rid in self.pending or rid in self.returns:  # refused and paid back: same answer
            return [Returned(self.pending.get(rid) or self.returns[rid], "bad_amount")]
        if receipt.key in self.redeemed or receipt.transfer_id in self.redeemed:
            raise Rejected("already_redeemed", f"transfer {receipt.transfer_id} was redeemed")
        existing = self.accounts.get(receipt.payer)
        if existing is not None and existing.balance + receipt.amount > MAX_AMOUNT:
            return self._return(receipt, rid, now_ns)  # "bad_amount": over the largest amount
        if existing is None and receipt.amount < self.deposit:
            return self._return(receipt, rid, now_ns)  # "bad_amount": below the deposit
        self._accrue(now_ns)
        events = self._open(receipt.payer, now_ns)
        account = self.accounts[receipt.payer]
        account.balance += receipt.amount
        account.funded += receipt.amount
        self.funded += receipt.amount
        self.redeemed.add(receipt.key)
        self._changes.redeemed.append(
            (receipt.key, account.account, receipt.amount, now_ns)
        )
        self._changes.accounts.add(account.account)
        self.book.set_balance(account.account, account.balance)
        events.append(Funded(account.account, receipt.transfer_id, receipt.amount, account.balance))
        return events + self.recompute(now_ns, force=True)

    def _return(self, receipt: Receipt, rid: str, now_ns: int) -> list[Event]:
        """Consume a receipt this host refuses to credit and owe its amount back to the
        payer (a pending refund with id ``rid``): money paid to a host always comes home."""
        refund = Refund(rid, receipt.payer, receipt.amount, now_ns)
        self.redeemed.add(receipt.key)
        self._changes.redeemed.append((receipt.key, receipt.payer, receipt.amount, now_ns))
        self.funded += receipt.amount  # in and out again: the totals stay conserved
        self.refunded += receipt.amount
        self.pending[rid] = refund
        self._changes.refunds[rid] = refund
        return [Returned(refund, "bad_amount")]

    def refund(self, owner: str, now_ns: int) -> list[Event]:
        """Move the whole unspent balance to a refund; return every pending refund due."""
        account = self.account(owner)
        due = [r for r in self.pending.values() if r.account == owner]
        if account.balance <= 0 and account.bid is None and not due:
            raise Rejected("no_funds", "the host account holds nothing to refund")
        self._accrue(now_ns)
        events = self._end_bid(account, "refund")  # pays for the time since the last tick
        self._pay_ended(owner, None)  # an ended bid's time since then too
        created = account.balance > 0
        if created:
            refund = Refund(
                refund_id(self.host_key, owner, account.refunds), owner, account.balance, now_ns
            )
            account.refunds += 1
            account.refunded += refund.amount
            self.refunded += refund.amount
            account.balance = 0
            self.pending[refund.refund_id] = refund
            self._changes.refunds[refund.refund_id] = refund
            self._changes.accounts.add(owner)
            due.append(refund)
        if events or created:
            events += self.recompute(now_ns, force=True)
        return events + [RefundDue(r) for r in due]

    def refund_paid(self, refund_id_: str, raw: bytes) -> Refund | None:
        """Record the bank receipt that paid a pending refund (checked); None if not pending."""
        refund = self.pending.get(refund_id_)
        if refund is None:
            return None
        receipt = verify_receipt(raw, self.bank_key)
        if (receipt.transfer_id, receipt.payer, receipt.payee, receipt.amount) != (
            refund.refund_id, self.host_key, refund.account, refund.amount
        ):
            raise Rejected("bad_receipt", "the receipt does not pay this refund")
        paid = replace(refund, receipt=bytes(raw))
        del self.pending[refund_id_]
        if refund_id_.startswith("return-"):
            self.returns[refund_id_] = paid
        self._changes.refunds[refund_id_] = paid
        return paid

    def conserved(self) -> bool:
        """funded == earnings + Σ balances + refunded (paid or pending)."""
        balances = sum(a.balance for a in self.accounts.values())
        return self.funded == self.earnings + balances + self.refunded

    # ------------------------------------------------------------------ bids

    def place_bid(self, owner: str, spec: BidSpec, now_ns: int) -> list[Event]:
        """Admit ``spec`` as the account's bid (replacing any) or raise why not.

        The time before the bid is settled at the old bid's terms first; a reservation
        (minimum) is admitted only if the bid's rate pays for it (:mod:`.admission`).
        """
        account = self.account(owner)
        if account.balance <= 0:
            raise Rejected("no_funds", "fund the host account before bidding")
        old = account.bid if owner in self.book.slot else None
        if old is not None and old.expires_ns <= now_ns:
            old = None  # expired, not yet swept: the new bid starts afresh
        if spec.duration_ns == 0:
            if old is None:
                raise Rejected("bad_bid", "duration 0 keeps the current expiry: no live bid")
            expires = old.expires_ns
        else:
            expires = now_ns + spec.duration_ns
        bid = resolve(spec, self.capacity, now_ns, expires)
        self._accrue(now_ns)
        own = self.book.slot.get(owner)
        paying = self.rates * self.book.use[:, : self.rates.shape[1]]  # as a minimum is charged
        admit(bid, self.book, paying, own, float(account.balance), now_ns, self.floor_price)
        events: list[Event] = []
        if old is None and own is not None:
            events += self._end_bid(account, "expired")  # charged up to its expiry
        account.bid = bid
        self._put(account)
        stashed = self._ended.pop(owner, None)
        if stashed is not None:  # the next reading measures the ended bid and this one
            charging.unstash(self.book, self.book.slot[owner], stashed)
            self.book.set_balance(owner, account.balance)
        self._changes.accounts.add(owner)
        return [*events, BidPlaced(owner, expires), *self.recompute(now_ns, force=True)]

    def _put(self, account: Account) -> None:
        bid = account.bid
        assert bid is not None
        self.book.put(
            account.account, balance=self._spendable(account), expires_ns=bid.expires_ns,
            weights=bid.weights, lo=bid.lo, hi=bid.hi,
        )  # fmt: skip
        if (use := self._use.pop(account.account, None)) is not None:  # read before: last use
            index = self.book.slot[account.account]
            self.book.use[:, index], self.book.fresh[index] = use, False
        self.unique.put(account.account, bid.unique, bid.placed_ns)
        self._structure = True

    def _end_bid(self, account: Account, reason: str) -> list[Event]:
        """End a bid. On a refund, what it accrued since the last reading is charged as
        fully used; an expired or empty bid's accruals wait for the next reading."""
        if account.bid is None:
            return []
        owner = account.account
        index = self.book.slot.get(owner)
        if index is not None:
            if not self.book.fresh[index]:  # only a use measured by a reading is kept
                self._use[owner] = self.book.use[:, index].copy()
            row = charging.stash(self.book, index)
            held = self._ended.pop(owner, None)
            self._ended[owner] = row if held is None else held + row
        if reason == "refund":
            self._pay_ended(owner, None)
        account.bid = None
        self.book.drop(owner)
        self.unique.drop(owner)
        self._structure = True
        self._changes.accounts.add(owner)
        return [BidEnded(owner, reason)]

    def _accrue(self, now_ns: int) -> None:
        """Accrue the time since the last accrual at the terms in force during it."""
        if self._accrued_to is None:
            self._accrued_to = self._read = now_ns
        elif now_ns > self._accrued_to:
            charging.accrue(self.book, self.costs, self.shares, self.lows,
                            self._unique_prices, self._accrued_to, now_ns)  # fmt: skip
            self._accrued_to = now_ns

    def account(self, owner: str) -> Account:
        account = self.accounts.get(owner)
        if account is None:
            raise Rejected("unknown_account", "no host account for this key on this host")
        return account

    # ------------------------------------------------------------------ allocation

    def recompute(self, now_ns: int, *, force: bool = False) -> list[Event]:
        """End expired and empty bids, recompute rates, shares and port holders."""
        self._accrue(now_ns)
        events: list[Event] = []
        book = self.book
        ended = np.nonzero(book.live & ((book.expires <= now_ns) | (book.balance <= 0)))[0]
        for index in ended.tolist():
            account = self.accounts[book.ids[index]]
            expired = book.expires[index] <= now_ns
            events += self._end_bid(account, "expired" if expired else "empty")
        rates = book.rates(now_ns)
        lo, hi = book.bounds(now_ns)
        others = charging.others_paying(rates, book.use)
        lo = charging.affordable(lo, rates, book, self.floor_price, others)
        shares = water_fill(rates, lo, hi, validate=False)
        holders_changed = self.unique.recompute(book, now_ns)
        self._unique_prices = self.unique.charges(book)
        self.costs = charging.cost_rates(rates, lo, self.floor_price, others)
        self.lows = charging.charged_lows(lo, shares, self.costs, rates, book.fresh)
        published = self._published
        moved = (
            self._structure
            or holders_changed
            or published.shape != shares.shape
            or bool(np.abs(shares - published).max(initial=0.0) > ALLOC_EPS)
        )
        self.shares, self.rates = shares, rates
        if moved:
            self._published = shares.copy()
            self._structure = False
            events.append(SharesChanged(len(book)))
        prices = rates.sum(axis=1)
        bidders = (rates > 0).sum(axis=1)
        drift = np.abs(prices - self._last_prices) > PRICE_EPS * np.maximum(self._last_prices, 1e-9)
        if force or moved or drift.any() or (bidders != self._last_bidders).any():
            self._last_prices, self._last_bidders = prices, bidders
            events.append(PricesChanged())
        return events

    def tick(self, now_ns: int, usage: Mapping[str, Usage]) -> list[Event]:
        """A usage reading: charge every live bid for what it accrued since the previous
        reading at the share it used (at least the share it reserved), then recompute and
        remove accounts empty and idle for ``idle_s``."""
        book = self.book
        self._accrue(now_ns)
        assert self._read is not None
        span = max(now_ns - self._read, 0) / NS
        self._read = max(self._read, now_ns)
        self.utilization = np.clip(
            np.array([sum(u.of(r) for u in usage.values()) for r in RESOURCES]), 0.0, 1.0
        )
        measured = charging.used(book, usage) * span
        ratio = charging.use_ratio(book, measured)
        # what each bid read used of what it held (held nothing: used nothing; not its charge)
        use = np.minimum(np.divide(measured, book.held, out=np.zeros_like(ratio),
                                   where=book.held > 0), 1.0)  # fmt: skip
        read = book.live & (book.owed.sum(axis=0) > 0)
        book.use, book.fresh = np.where(read, use, book.use), book.fresh & ~read
        owed = charging.due(book, ratio)
        total, count = self._charge_live(owed)
        for owner in list(self._ended):
            u = usage.get(owner)
            vector = np.array([u.cpu, u.memory, u.disk, u.net]) if u else np.zeros(len(RESOURCES))
            whole = self._pay_ended(owner, vector * span)
            total, count = total + whole, count + (whole > 0)
        events: list[Event] = [Charged(total, count), *self.recompute(now_ns)]
        return events + self.sweep(now_ns)

    def sweep(self, now_ns: int) -> list[Event]:
        """Remove accounts empty and idle for ``idle_s`` (see :func:`lifecycle.sweep`)."""
        return lifecycle.sweep(self, now_ns)

    # ------------------------------------------------------------------ views

    def shares_map(self) -> dict[str, Shares]:
        """The shares of every live account, for the driver (absent accounts get nothing)."""
        return lifecycle.shares_map(self)

    def next_seq(self, now_ns: int) -> int:
        """A strictly increasing sequence number that also survives a lost store (µs clock)."""
        self.seq = max(self.seq + 1, now_ns // 1000)
        return self.seq

    # ------------------------------------------------------------------ persistence

    def take_changes(self) -> Changes:
        """What changed since the previous call (the store persists it in one transaction)."""
        changes, self._changes = self._changes, Changes()
        return changes

    def untake_changes(self, changes: Changes) -> None:
        """Put back changes whose commit failed, so that the next commit writes them."""
        self._changes.accounts |= changes.accounts
        self._changes.redeemed[:0] = changes.redeemed
        self._changes.refunds = {**changes.refunds, **self._changes.refunds}
        self._changes.closed |= {a for a in changes.closed if a not in self.accounts}

    def load(
        self, *, accounts: Iterable[Account], redeemed: Iterable[str], pending: Iterable[Refund],
        earnings: int, funded: int, refunded: int, seq: int, now_ns: int,
        returns: Iterable[Refund] = (),
    ) -> list[Event]:  # fmt: skip
        """Restore a stored state and recompute (see :func:`lifecycle.restore`)."""
        self.accounts = {a.account: a for a in accounts}
        self.returns = {r.refund_id: r for r in returns}
        self.redeemed = set(redeemed)
        self.pending = {r.refund_id: r for r in pending}
        self.earnings, self.funded, self.refunded, self.seq = earnings, funded, refunded, seq
        return lifecycle.restore(self, now_ns)
