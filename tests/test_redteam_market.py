"""Red-team attacks on the market core (pure, no server): strategies a user with an
ordinary key could play against the charging, reservation and account rules."""

from __future__ import annotations

import pytest
from test_market import NS, T0, USERS, market, receipt

from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.market import Market
from tycoon.money import MICRO
from tycoon.vmm.driver import Usage


def reserved_victim() -> tuple[Market, str, str, float]:
    """A victim holding a 0.4 CPU reservation, and a rich attacker account."""
    m = market()
    victim, attacker = USERS[0], USERS[1]
    m.fund(receipt(victim, 3600 * MICRO, "v"), T0)
    m.place_bid(victim, parse_bid("1h cpu:1,0.4"), T0)
    m.fund(receipt(attacker, 10**6 * MICRO, "a"), T0)
    return m, victim, attacker, float(m.rates[0, m.book.slot[victim]])


@pytest.mark.parametrize("rebid", [False, True], ids=["one-bid", "rebid-each-tick"])
def test_an_idle_outbidder_cannot_drain_a_reservation_for_free(rebid: bool) -> None:
    """The attacker bids ~280x the victim's rate on the CPU and uses none of its share:
    an idle share costs it nothing (a share is charged at its use), yet its rate made the
    victim's minimum bind at lo/(1 − lo) × that rate — 185 credits/s, the victim's 3,600
    credits gone in 20 s, the attacker's million refunded whole. Re-bidding each tick
    (a fresh bid after each expiry) must not restore the price either."""
    m, victim, attacker, victim_rate = reserved_victim()
    m.place_bid(attacker, parse_bid("1s cpu:1" if rebid else "1h cpu:1"), T0)
    # before its first reading a bid's use is unknown: it prices the minimum as used, and
    # pays for its share as used — raising a reservation's price is not free
    m.tick(T0 + NS, {victim: Usage(cpu=0.4)})
    first, paid = m.accounts[victim].spent, m.accounts[attacker].spent
    assert paid >= 0.8 * first and m.conserved()
    for s in range(2, 12):  # the victim uses its reservation, the attacker nothing
        if rebid and m.accounts[attacker].balance > 0:
            m.place_bid(attacker, parse_bid("1s cpu:1"), T0 + (s - 1) * NS + 1)
        m.tick(T0 + s * NS, {victim: Usage(cpu=0.4)})
        assert m.conserved()
    assert m.accounts[attacker].spent - paid <= 10
    later = m.accounts[victim].spent - first
    # what the victim's own bid pays for 10 s (within a µcredit per reading), not 1,850
    assert later <= 10 * victim_rate + 10, (later, victim_rate)
    if not rebid:  # a 1 s bid of a million credits outprices the victim's whole balance
        assert m.shares_map()[victim].cpu >= 0.4 - 1e-9  # (and cost the attacker all of it)


def test_an_outbidder_that_uses_its_share_still_sets_the_price() -> None:
    """The fix must not let reservations hold cheaply against rivals that use their
    share: once the rival is read using all of it, the minimum pays the market price."""
    m, victim, attacker, victim_rate = reserved_victim()
    m.place_bid(attacker, parse_bid("1h cpu:1"), T0)
    price = 0.4 / 0.6 * float(m.rates[0, m.book.slot[attacker]])
    m.tick(T0 + NS, {victim: Usage(cpu=0.4), attacker: Usage(cpu=0.6)})
    first = m.accounts[victim].spent
    m.tick(T0 + 2 * NS, {victim: Usage(cpu=0.4), attacker: Usage(cpu=0.6)})
    assert m.accounts[victim].spent - first == pytest.approx(price, rel=1e-6)
    assert price > 100 * victim_rate


def test_an_idle_bidder_does_not_keep_reservations_out_for_free() -> None:
    """A rich bid left idle (read using nothing) made every reservation `not_admitted` at
    no cost to its owner. Admission prices a minimum as its charge does: against the
    rates of the others at the share they use."""
    m = market()
    victim, attacker = USERS[0], USERS[1]
    m.fund(receipt(attacker, 10**6 * MICRO, "a"), T0)
    m.place_bid(attacker, parse_bid("1h cpu:1"), T0)
    m.tick(T0 + NS, {})  # read: it uses nothing
    m.fund(receipt(victim, 3600 * MICRO, "v"), T0 + NS)
    m.place_bid(victim, parse_bid("1h cpu:1,0.4"), T0 + NS)
    assert m.shares_map()[victim].cpu >= 0.4 - 1e-9
    assert m.accounts[attacker].spent == 0 and m.conserved()
