"""The market core: funding, bids, allocation, charging, expiry, refunds, unique resources."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tycoon.auctioneer import views
from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.events import (
    AccountOpened,
    BidEnded,
    Funded,
    PricesChanged,
    RefundDue,
    SharesChanged,
)
from tycoon.auctioneer.market import Market, refund_id
from tycoon.bank.receipt import make_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import RESOURCES, Capacity, Usage
from tycoon.units import NS

T0 = 1_750_000_000 * NS
BANK = Identity.generate()
HOST = Identity.generate()
USERS = [Identity.generate().public_key for _ in range(6)]
CAP = Capacity(cpu=2000, memory=2 * 10**9, disk=50 * 10**9, net=10**8, cores=2)


def receipt(payer: str, amount: int, tid: str, *, payee: str | None = None,
            bank: Identity = BANK, seq: int = 1) -> bytes:  # fmt: skip
    return make_receipt(
        bank, transfer_id=tid, payer=payer, payee=payee or HOST.public_key, amount=amount,
        memo="", seq=seq, settled_ns=T0,
    )  # fmt: skip


def market() -> Market:
    return Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP, name="h")


def snapshot(m: Market) -> Any:
    return (
        copy.deepcopy(m.accounts), set(m.redeemed), dict(m.pending), m.earnings, m.funded,
        m.refunded, dict(m.book.slot),
    )  # fmt: skip


def greedy(m: Market) -> dict[str, Usage]:
    """Every sandbox uses exactly its share."""
    return {a: Usage(s.cpu, s.memory, s.disk, s.net) for a, s in m.shares_map().items()}


def check_allocation(m: Market) -> None:
    shares = m.shares
    assert np.all(shares.sum(axis=1) <= 1 + 1e-9)
    for account, index in m.book.slot.items():
        bid = m.accounts[account].bid
        assert bid is not None
        for i in range(len(RESOURCES)):
            # a minimum holds as far as the balance pays its market price (m.lows ≤ lo)
            assert m.lows[i, index] <= bid.lo[i] + 1e-12
            assert m.lows[i, index] - 1e-9 <= shares[i, index] <= bid.hi[i] + 1e-9


# ---------------------------------------------------------------- funding


def test_funding_credits_the_payer_once() -> None:
    m = market()
    events = m.fund(receipt(USERS[0], 5 * MICRO, "t1"), T0)
    assert isinstance(events[0], AccountOpened)
    assert Funded(USERS[0], "t1", 5 * MICRO, 5 * MICRO) in events
    assert PricesChanged() in events
    assert m.accounts[USERS[0]].balance == 5 * MICRO and m.conserved()
    changes = m.take_changes()
    assert changes.redeemed == [(f"{USERS[0]}:t1", USERS[0], 5 * MICRO, T0)]
    assert USERS[0] in changes.accounts


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: receipt(USERS[0], 10, "t1"), "already_redeemed"),
        (lambda: receipt(USERS[0], 10, "t2", payee=USERS[1]), "wrong_host"),
        (lambda: receipt(USERS[0], 10, "t3", bank=Identity.generate()), "bad_receipt"),
        # a flipped bit of the signature (setting its last byte to 0 changed nothing one
        # time in ~16: an Ed25519 signature's last byte is below 0x20)
        (lambda: (lambda r: r[:-1] + bytes([r[-1] ^ 1]))(receipt(USERS[0], 10, "t4")),
         "bad_receipt"),
        (lambda: b"not a receipt", "bad_receipt"),
        # over the largest amount: consumed and paid back instead (tests/test_fund_return.py)
    ],
)
def test_bad_funding_is_refused_and_changes_nothing(make: Any, code: str) -> None:
    m = market()
    m.fund(receipt(USERS[0], 10, "t1"), T0)
    m.take_changes()
    before = snapshot(m)
    with pytest.raises(Rejected) as info:
        m.fund(make(), T0 + NS)
    assert info.value.code == code
    assert snapshot(m) == before
    assert not m.take_changes()


# ---------------------------------------------------------------- bids and allocation


def test_shares_follow_rates_and_bounds() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3000 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 1000 * MICRO, "b"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1 memory:1,0.1,0.5"), T0)
    events = m.place_bid(USERS[1], parse_bid("1h cpu:1 memory:1"), T0)
    assert SharesChanged(2) in events
    shares = m.shares_map()
    assert shares[USERS[0]].cpu == pytest.approx(0.75)
    assert shares[USERS[1]].cpu == pytest.approx(0.25)
    assert shares[USERS[0]].memory == pytest.approx(0.5)  # clipped at its max
    assert shares[USERS[1]].memory == pytest.approx(0.5)  # the excess flows to the other
    assert shares[USERS[0]].disk == 0.0  # no preference, nothing
    price = views.price_body(m, 1, 5.0)["resources"]["cpu"]
    rate_a = 3000 * MICRO * 0.5 / 3600
    rate_b = 1000 * MICRO * 0.5 / 3600
    assert price["price"] == pytest.approx(rate_a + rate_b)
    assert price["unit_price"] == pytest.approx((rate_a + rate_b) / CAP.cpu)
    assert price["bidders"] == 2 and price["capacity"] == CAP.cpu
    check_allocation(m)


def test_absolute_amounts_and_admission() -> None:
    m = market()
    for i in range(3):
        m.fund(receipt(USERS[i], 100 * MICRO, f"t{i}"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1,1GHz,2GHz"), T0)  # half of 2000 MHz
    assert m.accounts[USERS[0]].bid.lo[0] == pytest.approx(0.5)  # type: ignore[union-attr]
    m.place_bid(USERS[1], parse_bid("1h cpu:1,0.5"), T0)
    m.take_changes()
    before = snapshot(m)
    with pytest.raises(Rejected) as info:
        m.place_bid(USERS[2], parse_bid("1h cpu:1,0.01"), T0)
    assert info.value.code == "not_admitted" and "cpu" in info.value.message
    with pytest.raises(Rejected) as info:
        m.place_bid(USERS[2], parse_bid("1h memory:1,3GB"), T0)  # above capacity
    assert info.value.code == "not_admitted"
    with pytest.raises(Rejected) as info:
        m.place_bid(USERS[2], parse_bid("1h cpu:1,0.3,100MHz"), T0)  # min above max
    assert info.value.code == "bad_bid"
    assert snapshot(m) == before and not m.take_changes()
    # replacing one's own bid does not count one's old reservation
    m.place_bid(USERS[1], parse_bid("1h cpu:1,0.5,0.5"), T0)
    check_allocation(m)


def test_bid_refusals() -> None:
    m = market()
    with pytest.raises(Rejected, match="unknown_account"):
        m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    m.fund(receipt(USERS[0], 100, "t0"), T0)
    m.refund(USERS[0], T0)  # the account stays, empty
    with pytest.raises(Rejected, match="no_funds"):
        m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    m.fund(receipt(USERS[0], 100, "t"), T0)
    with pytest.raises(Rejected, match="bad_bid"):
        m.place_bid(USERS[0], parse_bid("0 cpu:1"), T0)  # keep expiry, but no bid
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    m.place_bid(USERS[0], parse_bid("0 cpu:1 memory:1"), T0 + NS)
    assert m.accounts[USERS[0]].bid.expires_ns == T0 + 3600 * NS  # type: ignore[union-attr]


# ---------------------------------------------------------------- charging and expiry


def test_full_use_spends_the_balance_evenly_until_expiry() -> None:
    m = market()
    m.fund(receipt(USERS[0], 600 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 600 * MICRO, "b"), T0)
    m.place_bid(USERS[0], parse_bid("60s cpu:1 net:1"), T0)
    m.place_bid(USERS[1], parse_bid("2m cpu:1"), T0)
    for second in range(1, 31):
        m.tick(T0 + second * NS, greedy(m))
        assert m.conserved()
    # half the time has passed: half the balance is spent, evenly
    assert m.accounts[USERS[0]].balance == pytest.approx(300 * MICRO, abs=2)
    assert m.accounts[USERS[1]].balance == pytest.approx(450 * MICRO, abs=2)
    events = []
    for second in range(31, 62):
        events += m.tick(T0 + second * NS, greedy(m))
    assert BidEnded(USERS[0], "expired") in events
    assert m.accounts[USERS[0]].balance <= 1  # all spent, up to the carried remainder
    assert USERS[0] not in m.shares_map()
    assert m.shares_map()[USERS[1]].cpu == pytest.approx(1.0)  # the rest goes to the other
    balance = m.accounts[USERS[0]].balance
    m.tick(T0 + 70 * NS, greedy(m))
    assert m.accounts[USERS[0]].balance == balance  # nothing charged after expiry
    assert m.conserved()


def test_charged_only_for_the_share_used() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3600 * MICRO, "a"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    m.tick(T0 + NS, {USERS[0]: Usage(cpu=0.0)})
    assert m.accounts[USERS[0]].balance == 3600 * MICRO  # idle: free
    m.tick(T0 + 2 * NS, {USERS[0]: Usage(cpu=0.25)})
    # a quarter of its rate: 3600 credits over the 3599 s left
    assert m.earnings == round(0.25 * 3600 * MICRO / 3599)
    m.tick(T0 + 3 * NS, {USERS[0]: Usage(cpu=1.0)})
    assert m.earnings == pytest.approx(1.25 * MICRO, rel=1e-3)
    assert m.conserved()


def test_remainders_are_carried_not_lost() -> None:
    m = market()
    m.fund(receipt(USERS[0], 7, "a"), T0)  # 7 micro-credits over 10 s: 0.7 per second
    m.place_bid(USERS[0], parse_bid("10s cpu:1"), T0)
    paid = []
    for second in range(1, 11):
        before = m.accounts[USERS[0]].balance
        m.tick(T0 + second * NS, greedy(m))
        paid.append(before - m.accounts[USERS[0]].balance)
        assert m.conserved()
    assert all(p in (0, 1) for p in paid)
    assert sum(paid) == 7 and m.earnings == 7


def test_empty_account_gets_nothing() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3, "a"), T0)
    m.fund(receipt(USERS[1], 10**12, "b"), T0)
    m.place_bid(USERS[0], parse_bid("3s cpu:1"), T0)
    m.place_bid(USERS[1], parse_bid("1h cpu:1"), T0)
    events = []
    for second in range(1, 5):
        events += m.tick(T0 + second * NS, greedy(m))
    assert any(isinstance(e, BidEnded) and e.account == USERS[0] for e in events)
    assert USERS[0] not in m.shares_map()
    assert m.conserved()


# ---------------------------------------------------------------- unique resources


def test_ports_go_to_the_highest_rate_at_the_second_price() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3600 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 1200 * MICRO, "b"), T0)
    m.fund(receipt(USERS[2], 360 * MICRO, "c"), T0)
    m.place_bid(USERS[0], parse_bid("1h tcpv4port,80:1 ipv4address,10.0.0.9:1"), T0)
    m.place_bid(USERS[1], parse_bid("1h tcpv4port,80:1"), T0)
    m.place_bid(USERS[2], parse_bid("1h tcpv4port,443:1"), T0)
    body = views.alloc_body(m, 7)
    assert body["ports"] == {"80": USERS[0], "443": USERS[2]}
    assert body["ips"] == {"10.0.0.9": USERS[0]}
    assert m.shares_map()[USERS[0]].ports == (80,)
    assert m.shares_map()[USERS[1]].ports == ()
    m.tick(T0 + 10 * NS, {})
    # USERS[0] (0.5 credit/s for port 80) pays the second-highest rate, USERS[1]'s 1/3
    # credit/s, and the floor price for the unopposed address; USERS[2] holds 443
    # unopposed: it pays the floor price
    floor = 10 * m.floor_price
    assert m.accounts[USERS[0]].spent == pytest.approx(10 * MICRO / 3 + floor, abs=1)
    assert m.accounts[USERS[1]].spent == 0
    assert m.accounts[USERS[2]].spent == pytest.approx(floor, abs=1)
    # outbid: the holder changes
    m.fund(receipt(USERS[1], 36000 * MICRO, "b2"), T0 + 10 * NS)
    assert views.alloc_body(m, 8)["ports"]["80"] == USERS[1]
    assert m.conserved()


# ---------------------------------------------------------------- refunds


def test_refund_is_idempotent_and_conserves() -> None:
    m = market()
    m.fund(receipt(USERS[0], 100 * MICRO, "a"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    m.tick(T0 + 10 * NS, greedy(m))
    left = m.accounts[USERS[0]].balance
    events = m.refund(USERS[0], T0 + 10 * NS)  # (later, it would pay for the time since)
    due = [e.refund for e in events if isinstance(e, RefundDue)]
    assert BidEnded(USERS[0], "refund") in events
    assert [r.amount for r in due] == [left]
    # the refund counter starts at the account's creation time (ids never repeat, even
    # for an account removed when idle and opened again)
    assert due[0].refund_id == refund_id(HOST.public_key, USERS[0], T0)
    assert m.accounts[USERS[0]].balance == 0 and m.conserved()
    # asking again returns the same pending refund, no new one
    again = [e.refund for e in m.refund(USERS[0], T0 + 12 * NS) if isinstance(e, RefundDue)]
    assert again == due
    # a receipt for something else does not settle it
    wrong = make_receipt(BANK, transfer_id=due[0].refund_id, payer=HOST.public_key,
                         payee=USERS[1], amount=left, memo="", seq=9, settled_ns=T0)  # fmt: skip
    with pytest.raises(Rejected, match="bad_receipt"):
        m.refund_paid(due[0].refund_id, wrong)
    good = make_receipt(BANK, transfer_id=due[0].refund_id, payer=HOST.public_key,
                        payee=USERS[0], amount=left, memo="", seq=9, settled_ns=T0)  # fmt: skip
    paid = m.refund_paid(due[0].refund_id, good)
    assert paid is not None and paid.paid
    assert m.refund_paid(due[0].refund_id, good) is None  # already settled
    with pytest.raises(Rejected, match="no_funds"):
        m.refund(USERS[0], T0 + 13 * NS)
    # fund again: the next refund has a new id
    m.fund(receipt(USERS[0], 5, "a2"), T0 + 14 * NS)
    (next_due,) = [e.refund for e in m.refund(USERS[0], T0 + 15 * NS) if isinstance(e, RefundDue)]
    assert next_due.refund_id == refund_id(HOST.public_key, USERS[0], T0 + 1)
    assert m.conserved()


def test_sequence_numbers_increase_and_follow_the_clock() -> None:
    m = market()
    first = m.next_seq(T0)
    assert m.next_seq(T0) == first + 1
    assert m.next_seq(T0 - 10**12) == first + 2  # a clock going back does not go back
    assert m.next_seq(T0 + 10**12) > first + 2


# ---------------------------------------------------------------- properties


op = st.one_of(
    st.tuples(st.just("fund"), st.integers(0, 5), st.integers(1, 10**9)),
    st.tuples(
        st.just("bid"), st.integers(0, 5),
        st.tuples(st.integers(1, 7200), st.lists(st.tuples(
            st.sampled_from(RESOURCES), st.integers(1, 5), st.floats(0, 0.5), st.floats(0, 1)
        ), min_size=1, max_size=4), st.booleans()),
    ),
    st.tuples(st.just("tick"), st.integers(1, 600), st.floats(0, 1.5)),
    st.tuples(st.just("refund"), st.integers(0, 5), st.booleans()),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40))
def test_money_is_conserved_and_shares_are_valid(ops: list[tuple[Any, ...]]) -> None:
    m = market()
    now = T0
    tid = 0
    for kind, *args in ops:
        before = snapshot(m)
        try:
            if kind == "fund":
                tid += 1
                m.fund(receipt(USERS[args[0]], args[1], f"t{tid}"), now)
            elif kind == "bid":
                seconds, prefs, port = args[1]
                text = " ".join(
                    f"{r}:{w},{lo:.4f},{max(lo, hi):.4f}" for r, w, lo, hi in prefs
                ) + (" tcpv4port,80:1" if port else "")
                m.place_bid(USERS[args[0]], parse_bid(f"{seconds}s {text}"), now)
            elif kind == "tick":
                now += args[0] * NS
                usage = {a: Usage(*(min(1.0, args[1] * s.of(r)) for r in RESOURCES))
                         for a, s in m.shares_map().items()}  # fmt: skip
                m.tick(now, usage)
            elif kind == "refund":
                for event in m.refund(USERS[args[0]], now):
                    if isinstance(event, RefundDue) and args[1]:
                        r = event.refund
                        raw = make_receipt(BANK, transfer_id=r.refund_id, payer=HOST.public_key,
                                           payee=r.account, amount=r.amount, memo="", seq=1,
                                           settled_ns=now)  # fmt: skip
                        m.refund_paid(r.refund_id, raw)
        except Rejected:
            assert snapshot(m) == before  # a refusal changes nothing
        assert m.conserved()
        for account in m.accounts.values():
            assert isinstance(account.balance, int) and account.balance >= 0
        check_allocation(m)


def test_deterministic_given_the_clock() -> None:
    def history() -> Any:
        m = market()
        for i in range(3):
            m.fund(receipt(USERS[i], (i + 1) * 1000 * MICRO, f"d{i}"), T0)
            m.place_bid(USERS[i], parse_bid(f"{i + 1}h cpu:{i + 1},0.1 memory:1,0,0.5"), T0)
        for s in range(1, 30):
            m.tick(T0 + s * NS, {a: Usage(cpu=0.3, memory=0.2) for a in USERS[:3]})
        return snapshot(m), m.shares.tolist(), views.price_body(m, 1, 5.0)

    assert history() == history()


def test_a_bid_after_expiry_starts_afresh() -> None:
    m = market()
    m.fund(receipt(USERS[0], 100 * MICRO, "a"), T0)
    m.place_bid(USERS[0], parse_bid("10s cpu:1"), T0)
    m.tick(T0 + 10 * NS, greedy(m))  # used all of it
    m.fund(receipt(USERS[0], 100 * MICRO, "a2"), T0 + 15 * NS)
    with pytest.raises(Rejected, match="bad_bid"):
        m.place_bid(USERS[0], parse_bid("0 cpu:1"), T0 + 20 * NS)  # nothing live to keep
    m.place_bid(USERS[0], parse_bid("10s cpu:1"), T0 + 20 * NS)
    m.tick(T0 + 21 * NS, {USERS[0]: Usage(cpu=1 / 11)})  # the mean since the last reading
    assert m.accounts[USERS[0]].spent == pytest.approx(110 * MICRO, abs=2)
    assert m.accounts[USERS[0]].balance == pytest.approx(90 * MICRO, abs=2)  # 1 s of 10 s
