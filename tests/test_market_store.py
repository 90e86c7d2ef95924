"""The auctioneer's SQLite store: round trips, one transaction per change, bound to one host."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_market import BANK, CAP, HOST, NS, T0, USERS, greedy, market, receipt

from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.events import RefundDue
from tycoon.auctioneer.market import Market
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.receipt import make_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import Usage


def state(m: Market) -> tuple[object, ...]:
    accounts = {
        a.account: (a.balance, a.funded, a.spent, a.refunded, a.refunds,
                    a.bid.text if a.bid else None, a.bid.expires_ns if a.bid else None)
        for a in m.accounts.values()
    }  # fmt: skip
    return (accounts, set(m.redeemed), set(m.pending), m.earnings, m.funded, m.refunded)


def refund_receipts(store: MarketStore, account: str) -> list[tuple[str, int, bytes]]:
    """The paid refunds of one account on disk: (refund id, amount, bank receipt)."""
    return [(r[0], int(r[1]), bytes(r[2])) for r in store.db.execute(
        "SELECT refund_id, amount, receipt FROM refunds"
        " WHERE account = ? AND receipt IS NOT NULL ORDER BY created_ns", (account,))]


def run(m: Market, store: MarketStore) -> None:
    """A little history: fund, bid, charge, refund (one paid, one pending)."""
    for i in range(4):
        m.fund(receipt(USERS[i], (i + 1) * 100 * MICRO, f"f{i}"), T0)
        store.commit(m, m.take_changes())
    m.place_bid(USERS[0], parse_bid("1h cpu:2,0.1 memory:1,256MB,1GB tcpv4port,22:1"), T0)
    m.place_bid(USERS[1], parse_bid("30m cpu:1 net:1,10Mbps"), T0)
    m.place_bid(USERS[3], parse_bid("10s disk:1"), T0)
    store.commit(m, m.take_changes())
    for s in range(1, 21):
        m.tick(T0 + s * NS, greedy(m))
        store.commit(m, m.take_changes())
    for user, pay in ((USERS[2], True), (USERS[1], False)):
        for event in m.refund(user, T0 + 21 * NS):
            if isinstance(event, RefundDue) and pay:
                r = event.refund
                raw = make_receipt(BANK, transfer_id=r.refund_id, payer=HOST.public_key,
                                   payee=r.account, amount=r.amount, memo="", seq=5,
                                   settled_ns=T0)  # fmt: skip
                m.refund_paid(r.refund_id, raw)
        store.commit(m, m.take_changes())


def test_round_trip(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db")
    m = market()
    store.load(m, T0)
    run(m, store)
    store.close()
    again = market()
    store = MarketStore(tmp_path / "m.db")
    store.load(again, T0 + 21 * NS)
    assert state(again) == state(m)
    assert again.conserved()
    assert set(again.book.slot) == {USERS[0]}  # USERS[3]'s 10 s bid expired, USERS[1] refunded
    audit = store.audit()
    assert audit["funded"] == audit["redeemed"] == m.funded
    assert audit["funded"] == audit["earnings"] + audit["balances"] + audit["refunded"]
    assert audit["refunds"] == audit["refunded"]
    assert len(refund_receipts(store, USERS[2])) == 1 and refund_receipts(store, USERS[1]) == []
    # the reloaded market refuses the receipts it redeemed before
    with pytest.raises(Rejected, match="already_redeemed"):
        again.fund(receipt(USERS[0], 100 * MICRO, "f0"), T0 + 22 * NS)
    # and it keeps charging from where it stands, writing the rows it loaded in place
    again.tick(T0 + 23 * NS, greedy(again))
    assert again.conserved()
    store.commit(again, again.take_changes())
    store.close()
    third = market()
    store = MarketStore(tmp_path / "m.db")
    store.load(third, T0 + 23 * NS)
    assert state(third) == state(again)
    store.close()


def test_uncommitted_changes_are_lost_whole(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db", durability="normal")
    m = market()
    store.load(m, T0)
    run(m, store)
    committed = state(m)
    m.fund(receipt(USERS[4], 77, "late"), T0 + 30 * NS)  # "killed" before the commit
    m.tick(T0 + 31 * NS, {a: Usage(cpu=1.0) for a in m.accounts})
    store.close()
    again = market()
    MarketStore(tmp_path / "m.db").load(again, T0 + 40 * NS)
    assert state(again)[1:] == committed[1:]
    assert "late" not in again.redeemed and again.conserved()


def test_store_belongs_to_one_host(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db")
    store.load(market(), T0)
    other = Market(host_key=Identity.generate().public_key, bank_key=BANK.public_key,
                   capacity=CAP)  # fmt: skip
    with pytest.raises(ValueError, match="another host"):
        store.load(other, T0)
    with pytest.raises(ValueError):
        MarketStore(tmp_path / "x.db", durability="sometimes")


def test_a_failed_commit_is_retried_with_the_next(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db")
    m = market()
    store.load(m, T0)
    m.fund(receipt(USERS[0], 50, "x"), T0)
    changes = m.take_changes()
    m.untake_changes(changes)  # as the service does when the commit raised
    m.fund(receipt(USERS[1], 60, "y"), T0)
    store.commit(m, m.take_changes())
    again = market()
    store.load(again, T0)
    assert again.redeemed == {f"{USERS[0]}:x", f"{USERS[1]}:y"}
    assert again.funded == 110 and again.conserved()


def test_tick_commits_skip_the_fsync_but_not_the_write(tmp_path: Path) -> None:
    """Charges committed with sync=False are on disk for the next process (a kill loses
    nothing); the connection is back to FULL for the next commit; a change that redeems
    a receipt is synced whatever the caller asked."""
    store = MarketStore(tmp_path / "m.db")
    m = market()
    store.load(m, T0)
    modes: list[int] = []
    store.db.set_trace_callback(
        lambda sql: modes.append(sql) if sql.startswith("PRAGMA synchronous") else None)
    m.fund(receipt(USERS[0], 100 * MICRO, "f0"), T0)
    store.commit(m, m.take_changes(), sync=False)
    assert modes == []  # a redemption: synced (the connection stays FULL)
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    store.commit(m, m.take_changes())
    for s in range(1, 6):
        m.tick(T0 + s * NS, greedy(m))
        store.commit(m, m.take_changes(), sync=False)
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    assert modes.count("PRAGMA synchronous=NORMAL") == 5
    before = state(m)
    assert m.accounts[USERS[0]].spent > 0
    store.close()
    again = market()
    store = MarketStore(tmp_path / "m.db")
    store.load(again, T0 + 5 * NS)
    assert state(again) == before
    store.close()
