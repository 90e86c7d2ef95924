"""Host accounts cost something and go away: one opens only on a first funding of at least
the deposit, and one empty and idle for ``idle_s`` is removed (with its sandbox)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_market import BANK, CAP, HOST, NS, T0, USERS, greedy, receipt, snapshot

from tycoon.auctioneer import views
from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.events import AccountClosed, AccountOpened, RefundDue, Returned
from tycoon.auctioneer.market import Market
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.receipt import make_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MICRO

IDLE = 60


def market(deposit: int = 1000) -> Market:
    return Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP,
                  deposit=deposit, idle_s=IDLE)  # fmt: skip


def pay_refunds(m: Market, events: list[object], now: int) -> None:
    for event in events:
        if isinstance(event, RefundDue):
            r = event.refund
            raw = make_receipt(BANK, transfer_id=r.refund_id, payer=HOST.public_key,
                               payee=r.account, amount=r.amount, memo="", seq=1,
                               settled_ns=now)  # fmt: skip
            m.refund_paid(r.refund_id, raw)


def test_twenty_thousand_unfunded_keys_leave_nothing_behind() -> None:
    """Issue 17: 20,000 host accounts from self-made keys stayed for good."""
    m = market()
    m.fund(receipt(USERS[0], 10 * MICRO, "a"), T0)
    m.take_changes()
    before = snapshot(m)
    for _ in range(20_000):
        key = Identity.generate().public_key
        detail = views.account_detail(m, key)  # what host.account answers
        assert detail["open"] is False and detail["balance"] == 0
        with pytest.raises(Rejected, match="unknown_account"):
            m.place_bid(key, parse_bid("1h cpu:1"), T0)
        with pytest.raises(Rejected, match="unknown_account"):
            m.refund(key, T0)
    assert snapshot(m) == before and len(m.accounts) == 1
    assert not m.take_changes()


def test_a_first_funding_below_the_deposit_opens_nothing() -> None:
    m = market(deposit=1000)
    small = receipt(USERS[0], 999, "small")
    (returned,) = m.fund(small, T0)  # refused: consumed and paid back (test_fund_return)
    assert isinstance(returned, Returned) and returned.code == "bad_amount"
    assert not m.accounts and returned.refund.amount == 999 and m.conserved()
    events = m.fund(receipt(USERS[0], 1000, "deposit"), T0)
    assert AccountOpened(USERS[0]) in events
    assert m.fund(small, T0) == [returned]  # never credited on top of its return
    assert m.accounts[USERS[0]].balance == 1000 and m.conserved()


def test_an_empty_idle_account_is_removed_and_can_open_again(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db")
    m = market()
    store.bind(m.host_key, m.bank_key)
    m.fund(receipt(USERS[0], 100 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 100 * MICRO, "b"), T0)
    m.place_bid(USERS[1], parse_bid("1h cpu:1"), T0)
    events = m.refund(USERS[0], T0)
    (first,) = [e.refund for e in events if isinstance(e, RefundDue)]
    store.commit(m, m.take_changes())
    closed: list[object] = []
    for s in range(1, 3 * IDLE):
        now = T0 + s * NS
        out = m.tick(now, greedy(m))
        if s == 5:
            pay_refunds(m, events, now)  # pending until paid: not idle before
        closed += [e for e in out if isinstance(e, AccountClosed)]
        store.commit(m, m.take_changes())
        assert m.conserved()
    assert closed == [AccountClosed(USERS[0])]
    assert USERS[0] not in m.accounts and USERS[1] in m.accounts  # the bidder stays
    assert store.db.execute("SELECT COUNT(*) FROM accounts").fetchone() == (1,)
    audit = store.audit()
    assert audit["funded"] == audit["earnings"] + audit["balances"] + audit["refunded"]
    # opening again: a new account whose refund ids never repeat the old one's
    now = T0 + 3 * IDLE * NS
    m.fund(receipt(USERS[0], 5 * MICRO, "again"), now)
    (second,) = [e.refund for e in m.refund(USERS[0], now) if isinstance(e, RefundDue)]
    assert second.refund_id != first.refund_id
    store.commit(m, m.take_changes())
    store.close()


def test_an_account_with_money_a_bid_or_a_pending_refund_is_kept() -> None:
    m = market()
    m.fund(receipt(USERS[0], 100 * MICRO, "a"), T0)  # money, no bid
    m.fund(receipt(USERS[1], 100 * MICRO, "b"), T0)
    m.refund(USERS[1], T0)  # a refund never paid
    for s in range(1, 4 * IDLE):
        assert not [e for e in m.tick(T0 + s * NS, {}) if isinstance(e, AccountClosed)]
    assert set(m.accounts) == {USERS[0], USERS[1]}


def test_removed_accounts_stay_removed_after_a_restart(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "m.db")
    m = market()
    store.bind(m.host_key, m.bank_key)
    m.fund(receipt(USERS[0], 100 * MICRO, "a"), T0)
    pay_refunds(m, m.refund(USERS[0], T0), T0)
    store.commit(m, m.take_changes())
    for s in range(1, 3 * IDLE):
        m.tick(T0 + s * NS, {})
        store.commit(m, m.take_changes())
    assert not m.accounts
    again = market()
    store.load(again, T0 + 4 * IDLE * NS)
    assert not again.accounts and again.conserved()
    store.close()


def test_the_allocation_feed_shows_no_balance() -> None:
    """Issue 17: tycoon.alloc.<host> showed every account's balance. It carries shares and
    rates (the market's public facts); balance and expiry are the owner's alone."""
    m = market()
    for i in range(3):
        m.fund(receipt(USERS[i], (i + 1) * 100 * MICRO, f"t{i}"), T0)
        m.place_bid(USERS[i], parse_bid(f"{i + 1}h cpu:1 tcpv4port,{8080 + i}:1"), T0)
    body = views.alloc_body(m, 1)
    assert set(body["accounts"]) == set(USERS[:3])
    for view in body["accounts"].values():
        assert set(view) == {"cpu", "memory", "disk", "net", "rate"}
    text = repr(body)
    for i in range(3):
        assert str(m.accounts[USERS[i]].balance) not in text
    # the owner still reads its own balance and expiry (status, bid reply)
    mine = views.account_detail(m, USERS[0])
    assert mine["balance"] == m.accounts[USERS[0]].balance and mine["open"] is True
    assert views.account_view(m, USERS[0])["expires_ns"] == T0 + 3600 * NS
