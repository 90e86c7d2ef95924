"""Reservations are paid for: a minimum is admitted only if its rate sustains it at the
host's current price and above the floor, and is charged whether used or not."""

from __future__ import annotations

import pytest
from test_market import NS, T0, USERS, check_allocation, greedy, market, receipt, snapshot

from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.market import Market
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import RESOURCES, Usage

LOCK = "100y cpu:1,1.0,1.0 memory:1,1.0,1.0 disk:1,1.0,1.0 net:1,1.0,1.0"


def rate(m: Market, account: str, resource: str = "cpu") -> float:
    return float(m.rates[RESOURCES.index(resource), m.book.slot[account]])


def refused(m: Market, account: str, text: str, now: int = T0) -> Rejected:
    m.take_changes()
    before = snapshot(m)
    with pytest.raises(Rejected) as info:
        m.place_bid(account, parse_bid(text), now)
    assert snapshot(m) == before and not m.take_changes()
    return info.value


def test_a_one_microcredit_lock_of_the_whole_host_is_refused() -> None:
    """Issue 17: 1 µcredit for a century of every resource took the host from everyone."""
    m = market()
    m.fund(receipt(USERS[0], 300 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 100 * MICRO, "b"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1 memory:1 disk:1 net:1"), T0)
    m.place_bid(USERS[1], parse_bid("1h cpu:1 memory:1 disk:1 net:1,0.1"), T0)
    m.fund(receipt(USERS[2], 1, "lock"), T0)
    error = refused(m, USERS[2], LOCK)
    assert error.code == "not_admitted" and "credits/s" in error.message
    # the others keep their proportional shares (3:1), the minimum of the second stands
    shares = m.shares_map()
    assert shares[USERS[0]].cpu == pytest.approx(0.75)
    assert shares[USERS[1]].cpu == pytest.approx(0.25)
    assert USERS[2] not in shares
    # the second bidder can still reserve (the lock took nothing)
    m.place_bid(USERS[1], parse_bid("1h cpu:1,0.2"), T0)
    check_allocation(m)


def test_a_lock_of_an_empty_host_must_pay_the_floor() -> None:
    m = market()
    m.fund(receipt(USERS[0], 1, "lock"), T0)
    error = refused(m, USERS[0], LOCK)
    assert error.code == "not_admitted"
    assert f"floor {m.floor_price / 1e6:.6g} credits/s" in error.message
    # paying the floor for a day of the whole host: admitted (the operator's reserve price)
    day = 86_400
    m.fund(receipt(USERS[0], int(4 * m.floor_price * day) + 4, "day"), T0)
    m.place_bid(USERS[0], parse_bid("1d " + LOCK.split(" ", 1)[1]), T0)
    assert m.shares_map()[USERS[0]].cpu == pytest.approx(1.0)


def test_a_minimum_needs_the_rate_that_buys_it_at_the_current_price() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3600 * MICRO, "a"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)  # 1 credit/s
    others = rate(m, USERS[0])
    # lo = 0.5 needs a rate of 0.5/(1-0.5) × 1 credit/s = 1 credit/s: 3599 credits is short
    m.fund(receipt(USERS[1], 3599 * MICRO, "b"), T0)
    error = refused(m, USERS[1], "1h cpu:1,0.5")
    assert error.code == "not_admitted"
    assert f"at least {others / 1e6:.6g} credits/s" in error.message
    # the same budget over a shorter time, or a smaller minimum, is admitted
    m.place_bid(USERS[1], parse_bid("3590s cpu:1,0.5"), T0)
    assert m.shares_map()[USERS[1]].cpu >= 0.5 - 1e-9
    m.place_bid(USERS[1], parse_bid("1h cpu:1,0.49"), T0)
    check_allocation(m)


def test_the_whole_of_a_resource_cannot_be_reserved_against_other_bidders() -> None:
    m = market()
    for i in range(2):
        m.fund(receipt(USERS[i], 10**6 * MICRO, f"t{i}"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1"), T0)
    error = refused(m, USERS[1], "1s cpu:1,1.0")  # a huge rate, still not the whole
    assert "cannot be reserved while others bid" in error.message


def test_a_reservation_is_charged_whether_used_or_not() -> None:
    m = market()
    m.fund(receipt(USERS[0], 3600 * MICRO, "a"), T0)
    m.fund(receipt(USERS[1], 3600 * MICRO, "b"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1,0.3"), T0)
    m.place_bid(USERS[1], parse_bid("1h cpu:1"), T0)
    share = m.shares_map()[USERS[0]].cpu
    assert share == pytest.approx(0.5)
    full = rate(m, USERS[0])
    m.tick(T0 + 10 * NS, {})  # both idle
    # the reserved 0.3 of its 0.5 share is charged; the idle one without a minimum pays 0
    first = m.accounts[USERS[0]].spent
    assert first == pytest.approx(10 * full * 0.3 / share, abs=1)
    assert m.accounts[USERS[1]].spent == 0
    # using more than the reservation pays what is used
    now_rate, now_share = rate(m, USERS[0]), m.shares_map()[USERS[0]].cpu
    m.tick(T0 + 20 * NS, {USERS[0]: Usage(cpu=0.4)})
    second = m.accounts[USERS[0]].spent - first
    assert second == pytest.approx(10 * now_rate * 0.4 / now_share, abs=1)
    assert m.conserved()


def test_a_reservation_outbid_later_pays_the_market_price_while_it_binds() -> None:
    """Admitted at the price of its time, a reservation holds until its bid ends; while
    the others' bids make it bind, it pays lo/(1 − lo) × Σ others (what holding lo by
    proportional share costs), until its balance runs out and the bid ends."""
    m = market()
    m.fund(receipt(USERS[0], 3600 * MICRO, "a"), T0)
    m.place_bid(USERS[0], parse_bid("1h cpu:1,0.4"), T0)
    m.fund(receipt(USERS[1], 10**6 * MICRO, "b"), T0)
    m.place_bid(USERS[1], parse_bid("1h cpu:1"), T0)  # ~280× the rate
    assert m.shares_map()[USERS[0]].cpu == pytest.approx(0.4)
    assert m.shares_map()[USERS[1]].cpu == pytest.approx(0.6)
    price = 0.4 / 0.6 * rate(m, USERS[1])  # 185 credits/s, not its 1 credit/s
    error = refused(m, USERS[0], "0 cpu:1,0.4", T0)  # a re-bid pays today's price
    assert error.code == "not_admitted"
    m.tick(T0 + NS, greedy(m))
    assert m.accounts[USERS[0]].spent == pytest.approx(price, rel=1e-6)
    ended = 0
    for s in range(2, 40):
        m.tick(T0 + s * NS, greedy(m))
        if USERS[0] not in m.shares_map():
            ended = s
            break
    assert 15 <= ended <= 25  # 3600 credits at ~185 credits/s
    assert m.accounts[USERS[0]].balance <= 1 and m.conserved()
    assert m.shares_map()[USERS[1]].cpu == pytest.approx(1.0)


def test_ports_and_addresses_are_not_sold_below_the_floor() -> None:
    m = market()
    floor = m.floor_price
    m.fund(receipt(USERS[0], int(floor * 3600 / 2), "a"), T0)  # half the floor for port 80
    m.place_bid(USERS[0], parse_bid("1h tcpv4port,80:1"), T0)
    assert m.shares_map()[USERS[0]].ports == ()
    m.fund(receipt(USERS[1], int(floor * 3600 * 4), "b"), T0)  # 4× the floor
    m.place_bid(USERS[1], parse_bid("1h tcpv4port,80:1"), T0)
    assert m.shares_map()[USERS[1]].ports == (80,)
    m.tick(T0 + 10 * NS, {})
    # unopposed above the floor: it pays the floor (the other bid is below it)
    assert m.accounts[USERS[1]].spent == pytest.approx(10 * floor, abs=1)
    assert m.accounts[USERS[0]].spent == 0
    assert m.conserved()


def test_the_floor_is_configurable() -> None:
    m = Market(host_key=market().host_key, bank_key=market().bank_key,
               capacity=market().capacity, floor_price=0.0)  # fmt: skip
    m.fund(receipt(USERS[0], 1, "lock"), T0)
    m.place_bid(USERS[0], parse_bid(LOCK), T0)  # no floor, no rival: the operator's choice
    with pytest.raises(ValueError):
        Market(host_key=m.host_key, bank_key=m.bank_key, capacity=m.capacity, floor_price=-1)
