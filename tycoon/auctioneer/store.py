"""The auctioneer's SQLite store: accounts, balances, bids, earnings, redeemed receipts, refunds.

Every change the market records (:meth:`Market.take_changes`) is written in ONE
transaction before the adapter replies, so a redemption and the credit it causes
land together or not at all: a SIGKILL at any point loses no balance and allows no
second redemption. WAL journal; ``durability="full"`` (the default) is durable across
a power loss too, ``"normal"`` survives a process kill only.

A commit with ``sync=False`` (the charging tick's, and a bid's) skips the fsync: it is
consistent and survives a process kill, and the next synced commit's fsync covers it,
because the WAL is written in order. A power loss can therefore undo only the charges of
the last few ticks — balances and earnings roll back together, so funded = earnings +
balances + refunded still holds — and the bids placed since the last synced commit: a
bid is a standing order, not money, and its owner sees it gone (its allocation reports
no rate, its account no bid) and bids again. Changes that redeem a receipt or create or
pay a refund are always synced, so nothing a receipt or a refund reported is undone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tycoon.auctioneer.bidparse import BidSpec, parse_resources
from tycoon.auctioneer.events import Account, Bid, Changes, Event, Refund
from tycoon.auctioneer.market import Market

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    funded INTEGER NOT NULL,
    spent INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    refunds INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    bid_text TEXT,
    bid_duration_ns INTEGER,
    bid_placed_ns INTEGER,
    bid_expires_ns INTEGER
);
CREATE TABLE IF NOT EXISTS redeemed (
    transfer_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    redeemed_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    receipt BLOB
);
"""
SCHEMA_VERSION = "1"


class MarketStore:
    """One host's market on disk; one writer (the auctioneer process)."""

    def __init__(self, path: str | Path, *, durability: str = "full") -> None:
        if durability not in ("full", "normal"):
            raise ValueError("durability is 'full' or 'normal'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.durability = durability.upper()
        self.db.execute(f"PRAGMA synchronous={self.durability}")
        self.db.executescript(SCHEMA)
        self._totals: dict[str, str] = {}
        """The market's totals as last written (only changed ones are written again)."""
        self._stored: set[str] = set()
        """Accounts with a row (updated in place; a REPLACE rewrites row and index)."""

    def close(self) -> None:
        self.db.close()

    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def bind(self, host_key: str, bank_key: str) -> None:
        """Tie the store to one host and bank key; refuse a store of another host or bank."""
        meta = self._meta()
        for key, value in (("host_key", host_key), ("bank_key", bank_key)):
            if key in meta and meta[key] != value:
                raise ValueError(f"store {self.path} belongs to another {key[:-4]} ({meta[key]})")
        with self._tx():
            for key, value in (
                ("host_key", host_key), ("bank_key", bank_key), ("schema", SCHEMA_VERSION)
            ):  # fmt: skip
                self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    def load(self, market: Market, now_ns: int) -> list[Event]:
        """Restore ``market`` from disk; returns the events of its first recompute."""
        self.bind(market.host_key, market.bank_key)
        meta = self._meta()
        accounts = []
        rows = self.db.execute(
            "SELECT account, balance, funded, spent, refunded, refunds, created_ns, bid_text,"
            " bid_duration_ns, bid_placed_ns, bid_expires_ns FROM accounts"
        ).fetchall()
        self._stored = {row[0] for row in rows}
        for row in rows:
            account = Account(*row[:7])
            if row[7] is not None:
                prefs, unique = parse_resources(row[7])
                spec = BidSpec(int(row[8]), prefs, unique)
                account.bid = Bid(spec, int(row[9]), int(row[10]), (), (), ())
            accounts.append(account)
        redeemed = [r[0] for r in self.db.execute("SELECT transfer_id FROM redeemed")]
        pending = [
            Refund(*row)
            for row in self.db.execute(
                "SELECT refund_id, account, amount, created_ns FROM refunds WHERE receipt IS NULL"
            )
        ]
        returns = [  # paid returns of refused receipts: a retried fund gets the receipt
            Refund(*row[:4], bytes(row[4]))
            for row in self.db.execute(
                "SELECT refund_id, account, amount, created_ns, receipt FROM refunds"
                " WHERE receipt IS NOT NULL AND refund_id LIKE 'return-%'"
            )
        ]
        return market.load(
            returns=returns,
            accounts=accounts,
            redeemed=redeemed,
            pending=pending,
            earnings=int(meta.get("earnings", 0)),
            funded=int(meta.get("funded", 0)),
            refunded=int(meta.get("refunded", 0)),
            seq=int(meta.get("seq", 0)),
            now_ns=now_ns,
        )

    def commit(self, market: Market, changes: Changes, *, sync: bool = True) -> None:
        """Write one batch of changes and the market's totals in a single transaction.

        ``sync=False`` skips the fsync for changes that only move balances to earnings
        (see the module docstring); redemptions and refunds are synced regardless.
        """
        if not changes:
            return
        if sync or changes.redeemed or changes.refunds or self.durability == "NORMAL":
            self._write(market, changes)
            return
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._write(market, changes)
        finally:
            self.db.execute(f"PRAGMA synchronous={self.durability}")

    def _write(self, market: Market, changes: Changes) -> None:
        new, old = [], []
        for name in changes.accounts:
            a = market.accounts.get(name)
            if a is None:  # removed since (closed below)
                continue
            bid = a.bid
            (old if name in self._stored else new).append((
                a.balance, a.funded, a.spent, a.refunded, a.refunds, a.created_ns,
                bid.text if bid else None, bid.spec.duration_ns if bid else None,
                bid.placed_ns if bid else None, bid.expires_ns if bid else None, a.account,
            ))  # fmt: skip
        with self._tx():
            if old:
                self.db.executemany(
                    "UPDATE accounts SET balance = ?, funded = ?, spent = ?, refunded = ?,"
                    " refunds = ?, created_ns = ?, bid_text = ?, bid_duration_ns = ?,"
                    " bid_placed_ns = ?, bid_expires_ns = ? WHERE account = ?", old)
            if new:
                self.db.executemany(
                    "INSERT OR REPLACE INTO accounts (balance, funded, spent, refunded, refunds,"
                    " created_ns, bid_text, bid_duration_ns, bid_placed_ns, bid_expires_ns,"
                    " account) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", new)
            if changes.closed:
                self.db.executemany("DELETE FROM accounts WHERE account = ?",
                                    [(a,) for a in changes.closed])
            if changes.redeemed:
                self.db.executemany("INSERT INTO redeemed VALUES (?, ?, ?, ?)", changes.redeemed)
            if changes.refunds:
                self.db.executemany(
                    "INSERT OR REPLACE INTO refunds VALUES (?, ?, ?, ?, ?)",
                    [
                        (r.refund_id, r.account, r.amount, r.created_ns, r.receipt or None)
                        for r in changes.refunds.values()
                    ],
                )
            totals = {"earnings": str(market.earnings), "funded": str(market.funded),
                      "refunded": str(market.refunded), "seq": str(market.seq)}
            changed = [(k, v) for k, v in totals.items() if self._totals.get(k) != v]
            if changed:
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", changed)
        self._totals = totals
        self._stored.update(row[-1] for row in new)
        self._stored -= changes.closed

    def audit(self) -> dict[str, int]:
        """Totals on disk: funded, earnings, refunded, Σ balances (funded = the other three)."""
        meta = self._meta()
        (balances,) = self.db.execute("SELECT COALESCE(SUM(balance), 0) FROM accounts").fetchone()
        (redeemed,) = self.db.execute("SELECT COALESCE(SUM(amount), 0) FROM redeemed").fetchone()
        (refunds,) = self.db.execute("SELECT COALESCE(SUM(amount), 0) FROM refunds").fetchone()
        return {
            "funded": int(meta.get("funded", 0)),
            "earnings": int(meta.get("earnings", 0)),
            "refunded": int(meta.get("refunded", 0)),
            "balances": int(balances),
            "redeemed": int(redeemed),
            "refunds": int(refunds),
        }


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
