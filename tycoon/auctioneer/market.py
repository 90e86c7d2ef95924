"""The market of one host: accounts, bids, shares, charging, refunds — sans-IO.

Deterministic given a clock: every call takes ``now_ns``. Calls return events (see
:mod:`tycoon.auctioneer.events`) that the adapter acts on (create sandboxes, apply
shares, publish prices, pay refunds), and record what changed for the store
(:meth:`Market.take_changes`). Money is int micro-credits; the invariant
``funded == earnings + Σ balances + refunded`` holds after every call.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from tycoon.auctioneer.allocation import TOLERANCE, water_fill
from tycoon.auctioneer.bidparse import BidSpec
from tycoon.auctioneer.book import NS, Book
from tycoon.auctioneer.events import (
    Account,
    AccountOpened,
    Bid,
    BidEnded,
    BidPlaced,
    Changes,
    Charged,
    Event,
    Funded,
    PricesChanged,
    Refund,
    RefundDue,
    SharesChanged,
)
from tycoon.auctioneer.unique import UniqueBook
from tycoon.bank.receipt import verify_receipt
from tycoon.bus.keys import is_public_key, subject_id
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT
from tycoon.vmm.driver import RESOURCES, Capacity, Shares, Usage

ALLOC_EPS = 1e-4
"""A recompute on the tick publishes the allocation only if a share moved by more than this."""
PRICE_EPS = 0.01
"""... and the prices only if one moved by more than this fraction."""
ALLOC_MAX = 1000
"""At most this many accounts (the largest shares) are listed in an allocation message."""
# Views of the market (price, alloc, status bodies) live in tycoon.auctioneer.views.


def refund_id(host_key: str, account: str, counter: int) -> str:
    """The bank transfer id of an account's ``counter``-th refund (deterministic, so a
    retry after a restart cannot pay twice). Anyone can compute it, and need not be kept
    from it: the host pays it, and a transfer id is unique per payer, so nobody else can
    claim it at the bank (docs/security.md, "Refund-id squatting")."""
    digest = hashlib.sha256(f"{host_key}\x00{account}\x00{counter}".encode()).hexdigest()
    return "refund-" + digest[:40]


class Market:
    """One host's proportional-share market."""

    def __init__(
        self, *, host_key: str, bank_key: str, capacity: Capacity, name: str = "",
        driver: str = "",
    ) -> None:  # fmt: skip
        self.host_key = host_key
        self.bank_key = bank_key
        self.host_id = subject_id(host_key)
        self.capacity = capacity
        self.name = name or self.host_id
        self.driver = driver
        self.accounts: dict[str, Account] = {}
        self.redeemed: set[str] = set()
        self.pending: dict[str, Refund] = {}
        self.earnings = 0
        self.funded = 0
        self.refunded = 0
        self.seq = 0
        self.book = Book()
        self.unique = UniqueBook()
        self.utilization = np.zeros(len(RESOURCES))
        self.caps = np.array([capacity.of(r) for r in RESOURCES], dtype=np.float64)
        self.shares = np.zeros((len(RESOURCES), self.book.size))
        self.rates = np.zeros_like(self.shares)
        self._published = self.shares.copy()
        self._structure = True
        self._last_prices = np.zeros(len(RESOURCES))
        self._last_bidders = np.zeros(len(RESOURCES), dtype=np.int64)
        self._changes = Changes()

    # ------------------------------------------------------------------ accounts, money

    def open_account(self, owner: str, now_ns: int) -> list[Event]:
        """Create the host account of ``owner`` (a user public key); idempotent."""
        if not is_public_key(owner):
            raise Rejected("malformed", "a host account id is the owner's public key")
        if owner in self.accounts:
            return []
        self.accounts[owner] = Account(owner, created_ns=now_ns)
        self._changes.accounts.add(owner)
        return [AccountOpened(owner)]

    def fund(self, raw: bytes, now_ns: int) -> list[Event]:
        """Redeem a bank receipt payable to this host into the payer's host account."""
        receipt = verify_receipt(raw, self.bank_key)
        if receipt.payee != self.host_key:
            raise Rejected("wrong_host", f"the receipt pays {receipt.payee[:12]}…, not this host")
        # a transfer id is unique per payer: a receipt is known by (payer, id); a bare id is
        # a redemption stored before ids were scoped (then unique at the bank)
        if receipt.key in self.redeemed or receipt.transfer_id in self.redeemed:
            raise Rejected("already_redeemed", f"transfer {receipt.transfer_id} was redeemed")
        existing = self.accounts.get(receipt.payer)
        if existing is not None and existing.balance + receipt.amount > MAX_AMOUNT:
            raise Rejected("bad_amount", "the balance would exceed the largest amount")
        events = self.open_account(receipt.payer, now_ns)
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

    def refund(self, owner: str, now_ns: int) -> list[Event]:
        """Move the whole unspent balance to a refund; return every pending refund due."""
        account = self.account(owner)
        events: list[Event] = []
        if account.balance > 0:
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
            events += self._end_bid(account, "refund")
            events += self.recompute(now_ns, force=True)
        due = [r for r in self.pending.values() if r.account == owner]
        if not due:
            raise Rejected("no_funds", "the host account holds nothing to refund")
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
        self._changes.refunds[refund_id_] = paid
        return paid

    def conserved(self) -> bool:
        """funded == earnings + Σ balances + refunded (paid or pending)."""
        balances = sum(a.balance for a in self.accounts.values())
        return self.funded == self.earnings + balances + self.refunded

    # ------------------------------------------------------------------ bids

    def place_bid(self, owner: str, spec: BidSpec, now_ns: int) -> list[Event]:
        """Admit ``spec`` as the account's bid (replacing any) or raise why not."""
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
        bid = self._resolve(spec, now_ns, expires)
        self._admit(owner, bid, now_ns)
        charged = int(self.book.charged[self.book.slot[owner]]) if old is not None else now_ns
        account.bid = bid
        self._put(account, charged)
        self._changes.accounts.add(owner)
        return [BidPlaced(owner, expires), *self.recompute(now_ns, force=True)]

    def _resolve(self, spec: BidSpec, now_ns: int, expires_ns: int) -> Bid:
        total = spec.total_weight
        prefs = {p.resource: p for p in spec.preferences}
        weights, lows, highs = [], [], []
        for resource in RESOURCES:
            pref = prefs.get(resource)
            if pref is None:
                weights.append(0.0), lows.append(0.0), highs.append(0.0)
                continue
            cap = self.capacity.of(resource)
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

    def _admit(self, owner: str, bid: Bid, now_ns: int) -> None:
        lo, _ = self.book.bounds(now_ns)
        reserved = lo.sum(axis=1)
        own = self.book.slot.get(owner)
        if own is not None:
            reserved -= lo[:, own]
        for i, resource in enumerate(RESOURCES):
            free = 1.0 - reserved[i]
            if bid.lo[i] > 0 and bid.lo[i] > free + TOLERANCE:
                raise Rejected(
                    "not_admitted",
                    f"{resource}: minimum {bid.lo[i]:.4f} of capacity but only {max(free, 0):.4f}"
                    f" is free (other bids reserve {reserved[i]:.4f})",
                )

    def _put(self, account: Account, charged_ns: int) -> None:
        bid = account.bid
        assert bid is not None
        self.book.put(
            account.account, balance=account.balance, expires_ns=bid.expires_ns,
            charged_ns=charged_ns, weights=bid.weights, lo=bid.lo, hi=bid.hi,
        )  # fmt: skip
        self.unique.put(account.account, bid.unique, bid.placed_ns)
        self._structure = True

    def _end_bid(self, account: Account, reason: str) -> list[Event]:
        if account.bid is None:
            return []
        account.bid = None
        self.book.drop(account.account)
        self.unique.drop(account.account)
        self._structure = True
        self._changes.accounts.add(account.account)
        return [BidEnded(account.account, reason)]

    def account(self, owner: str) -> Account:
        account = self.accounts.get(owner)
        if account is None:
            raise Rejected("unknown_account", "no host account for this key on this host")
        return account

    # ------------------------------------------------------------------ allocation

    def recompute(self, now_ns: int, *, force: bool = False) -> list[Event]:
        """End expired and empty bids, recompute rates, shares and port holders."""
        events: list[Event] = []
        book = self.book
        ended = np.nonzero(book.live & ((book.expires <= now_ns) | (book.balance <= 0)))[0]
        for index in ended.tolist():
            account = self.accounts[book.ids[index]]
            expired = book.expires[index] <= now_ns
            events += self._end_bid(account, "expired" if expired else "empty")
        rates = book.rates(now_ns)
        lo, hi = book.bounds(now_ns)
        shares = water_fill(rates, lo, hi, validate=False)
        holders_changed = self.unique.recompute(book, now_ns)
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
        """Charge every live bid for the share it used since its last charge, then recompute."""
        book = self.book
        live = np.nonzero(book.live)[0]
        used = np.zeros_like(self.shares)
        for account, u in usage.items():
            index = book.slot.get(account)
            if index is not None and index < used.shape[1]:
                used[:, index] = (u.cpu, u.memory, u.disk, u.net)
        self.utilization = np.clip(
            np.array([sum(u.of(r) for u in usage.values()) for r in RESOURCES]), 0.0, 1.0
        )
        total, count = 0, 0
        if live.size:
            shares = self.shares
            frac = np.divide(used, shares, out=np.zeros_like(shares), where=shares > 0)
            frac = np.minimum(frac, 1.0)
            t0 = book.charged
            t1 = np.minimum(np.int64(now_ns), book.expires)
            dt = np.maximum(t1 - t0, 0).astype(np.float64)
            left = (book.expires - t0).astype(np.float64)
            spent = np.divide(book.balance * dt, left, out=np.zeros_like(dt), where=left > 0)
            charge = (book.weight * frac).sum(axis=0) * spent + self.unique.charges(book, dt / NS)
            owed = book.carry + charge
            for index in live.tolist():
                account = self.accounts[book.ids[index]]
                due = owed[index]
                whole = min(math.floor(due), account.balance) if due >= 1.0 else 0
                if whole > 0:
                    account.balance -= whole
                    account.spent += whole
                    total += whole
                    count += 1
                    self._changes.accounts.add(account.account)
                    book.balance[index] = float(account.balance)
                book.carry[index] = due - whole if account.balance > 0 else 0.0
            book.charged[live] = np.maximum(t0[live], t1[live])
            self.earnings += total
        return [Charged(total, count), *self.recompute(now_ns)]

    # ------------------------------------------------------------------ views

    def shares_map(self) -> dict[str, Shares]:
        """The shares of every live account, for the driver (absent accounts get nothing)."""
        ports = self.unique.ports_of()
        out: dict[str, Shares] = {}
        for account, index in self.book.slot.items():
            s = self.shares[:, index] if index < self.shares.shape[1] else np.zeros(4)
            out[account] = Shares(
                float(s[0]), float(s[1]), float(s[2]), float(s[3]), ports.get(account, ())
            )
        return out

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

    def load(
        self, *, accounts: Iterable[Account], redeemed: Iterable[str], pending: Iterable[Refund],
        earnings: int, funded: int, refunded: int, seq: int, now_ns: int,
    ) -> list[Event]:  # fmt: skip
        """Restore a stored state and recompute.

        Bids are re-resolved against the current capacity (without admission: they were
        admitted once); charging restarts at ``now_ns`` (the downtime is not billed).
        """
        self.accounts = {a.account: a for a in accounts}
        self.redeemed = set(redeemed)
        self.pending = {r.refund_id: r for r in pending}
        self.earnings, self.funded, self.refunded, self.seq = earnings, funded, refunded, seq
        for account in self.accounts.values():
            if account.bid is not None and account.balance > 0:
                bid = account.bid
                account.bid = self._resolve(bid.spec, bid.placed_ns, bid.expires_ns)
                self._put(account, now_ns)
            else:
                account.bid = None
        self._changes = Changes()
        return self.recompute(now_ns, force=True)
